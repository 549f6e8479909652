//! The package ecosystems patchgap inventories, defined once: each one's
//! purl type, the OSV ecosystems whose advisories name its packages, its
//! version order, whether it is an operating system's, and how a package
//! name is compared. The CLI's `--ecosystem` values come from here too.

use crate::advisories::version::Order;

/// An ecosystem whose packages the agent finds and the store keeps, named
/// by its purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum Ecosystem {
    /// Debian and Ubuntu packages (dpkg).
    Deb,
    /// RPM packages (Red Hat, SUSE and the other RPM distributions).
    Rpm,
    /// Alpine packages (apk).
    Apk,
    /// Python distributions.
    Pypi,
    /// npm packages.
    Npm,
    /// Maven artifacts (`group:artifact`).
    Maven,
    /// Go modules (and the toolchain, as `stdlib`).
    Golang,
    /// Rust crates.
    Cargo,
}

/// OSV ecosystem names (the text before the first ':'), the version order
/// each one's ranges use, the ecosystem of the packages it names if
/// patchgap inventories them, and for an operating system the os-release
/// `ID`s its packages' purls carry as their namespace (the agent names a
/// distro package `pkg:rpm/<ID>/…`). An entry with an order but no
/// ecosystem is parsed and compared but names nothing the agent can find.
#[rustfmt::skip]
const OSV: &[(&str, Order, Option<Ecosystem>, &[&str])] = &[
    ("AlmaLinux", Order::Rpm, Some(Ecosystem::Rpm), &["almalinux"]),
    ("Alpine", Order::Apk, Some(Ecosystem::Apk), &["alpine"]),
    ("Azure Linux", Order::Rpm, Some(Ecosystem::Rpm), &["azurelinux", "mariner"]),
    ("Bitnami", Order::SemVer, None, &[]),
    ("Chainguard", Order::Apk, Some(Ecosystem::Apk), &["chainguard"]),
    ("crates.io", Order::SemVer, Some(Ecosystem::Cargo), &[]),
    ("Debian", Order::Dpkg, Some(Ecosystem::Deb), &["debian"]),
    ("Go", Order::SemVer, Some(Ecosystem::Golang), &[]),
    ("Hex", Order::SemVer, None, &[]),
    ("Mageia", Order::Rpm, Some(Ecosystem::Rpm), &["mageia"]),
    ("Maven", Order::Maven, Some(Ecosystem::Maven), &[]),
    ("MinimOS", Order::Apk, Some(Ecosystem::Apk), &["minimos"]),
    ("npm", Order::SemVer, Some(Ecosystem::Npm), &[]),
    ("openEuler", Order::Rpm, Some(Ecosystem::Rpm), &["openeuler"]),
    ("openSUSE", Order::Rpm, Some(Ecosystem::Rpm), &["opensuse", "opensuse-leap", "opensuse-tumbleweed"]),
    ("Photon OS", Order::Rpm, Some(Ecosystem::Rpm), &["photon"]),
    ("PyPI", Order::Pep440, Some(Ecosystem::Pypi), &[]),
    ("Red Hat", Order::Rpm, Some(Ecosystem::Rpm), &["rhel", "redhat"]),
    ("Rocky Linux", Order::Rpm, Some(Ecosystem::Rpm), &["rocky"]),
    ("SUSE", Order::Rpm, Some(Ecosystem::Rpm), &["sles", "sled", "sles_sap", "suse"]),
    ("SwiftURL", Order::SemVer, None, &[]),
    ("Ubuntu", Order::Dpkg, Some(Ecosystem::Deb), &["ubuntu"]),
    ("Wolfi", Order::Apk, Some(Ecosystem::Apk), &["wolfi"]),
];

/// The text of an OSV ecosystem before the first ':' (`Debian:12` is
/// `Debian`, `Red Hat:enterprise_linux:9::appstream` is `Red Hat`).
pub fn osv_base(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

impl Ecosystem {
    /// Every ecosystem, in the order errors and help list them.
    pub const ALL: [Ecosystem; 8] = [
        Ecosystem::Deb,
        Ecosystem::Rpm,
        Ecosystem::Apk,
        Ecosystem::Pypi,
        Ecosystem::Npm,
        Ecosystem::Maven,
        Ecosystem::Golang,
        Ecosystem::Cargo,
    ];

    /// The purl type, which is also how packages carry their ecosystem on
    /// the wire and in the store.
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Rpm => "rpm",
            Ecosystem::Apk => "apk",
            Ecosystem::Pypi => "pypi",
            Ecosystem::Npm => "npm",
            Ecosystem::Maven => "maven",
            Ecosystem::Golang => "golang",
            Ecosystem::Cargo => "cargo",
        }
    }

    /// The ecosystem of a purl type, or None for one patchgap does not
    /// inventory.
    pub fn from_purl_type(ty: &str) -> Option<Ecosystem> {
        Ecosystem::ALL.into_iter().find(|e| e.purl_type() == ty)
    }

    /// The ecosystem of the packages an OSV ecosystem (`PyPI`, `Debian:12`,
    /// `Red Hat:enterprise_linux:9::appstream`) names, or None when
    /// patchgap does not inventory them (NuGet, Hex, ...). OSV's spelling is
    /// case-sensitive.
    pub fn from_osv(name: &str) -> Option<Ecosystem> {
        let base = osv_base(name);
        OSV.iter().find(|e| e.0 == base).and_then(|e| e.2)
    }

    /// Packages of an operating system's package manager: their advisories
    /// name source packages and distribution releases.
    pub fn is_os(self) -> bool {
        matches!(self, Ecosystem::Deb | Ecosystem::Rpm | Ecosystem::Apk)
    }

    /// How versions of this ecosystem's packages compare.
    pub fn order(self) -> Order {
        match self {
            Ecosystem::Deb => Order::Dpkg,
            Ecosystem::Rpm => Order::Rpm,
            Ecosystem::Apk => Order::Apk,
            Ecosystem::Pypi => Order::Pep440,
            Ecosystem::Maven => Order::Maven,
            Ecosystem::Npm | Ecosystem::Golang | Ecosystem::Cargo => Order::SemVer,
        }
    }

    /// The name as queries and the matcher compare it: PyPI's by PEP 503
    /// (runs of `-`, `_` and `.` are one `-`, lowercase), every other
    /// lowercased (Go module paths too: a responder types them in any case,
    /// and two modules that differ only in case do not occur in practice).
    pub fn key(self, name: &str) -> String {
        match self {
            Ecosystem::Pypi => patchgap_proto::purl::pep503(name),
            _ => name.to_lowercase(),
        }
    }

    /// "deb, rpm, ...", for error messages.
    pub fn list() -> String {
        Ecosystem::ALL.map(Ecosystem::purl_type).join(", ")
    }
}

impl std::fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.purl_type())
    }
}

/// The version order of an OSV ecosystem, or None for one without an order
/// here (NuGet, RubyGems, Packagist).
pub fn osv_order(name: &str) -> Option<Order> {
    let base = osv_base(name);
    OSV.iter().find(|e| e.0 == base).map(|e| e.1)
}

/// The purl namespaces (os-release `ID`s) of an OSV operating-system
/// ecosystem's packages; empty for a language ecosystem or an unknown one.
pub fn osv_namespaces(name: &str) -> &'static [&'static str] {
    let base = osv_base(name);
    OSV.iter().find(|e| e.0 == base).map_or(&[], |e| e.3)
}

/// The version order of a package's ecosystem (a purl type); an unknown
/// type compares as dpkg does.
pub fn purl_order(ty: &str) -> Order {
    Ecosystem::from_purl_type(ty).map_or(Order::Dpkg, Ecosystem::order)
}

/// The comparison key of a package name in an ecosystem given as a purl
/// type; an unknown type is lowercased.
pub fn package_key(purl_type: &str, name: &str) -> String {
    match Ecosystem::from_purl_type(purl_type) {
        Some(e) => e.key(name),
        None => name.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: Azure Linux, Photon OS and MinimOS had a version order
    /// but no purl type, so their advisories matched nothing.
    #[test]
    fn every_osv_ecosystem_with_an_os_order_names_an_os_ecosystem() {
        for (name, order, eco, namespaces) in OSV {
            if matches!(order, Order::Dpkg | Order::Rpm | Order::Apk) {
                let eco = eco.unwrap_or_else(|| panic!("{name} has no ecosystem"));
                assert!(eco.is_os(), "{name}");
                assert_eq!(eco.order(), *order, "{name}");
                assert!(!namespaces.is_empty(), "{name} names no os-release ID");
            }
        }
        assert_eq!(Ecosystem::from_osv("Azure Linux:3"), Some(Ecosystem::Rpm));
        assert_eq!(Ecosystem::from_osv("Photon OS:5.0"), Some(Ecosystem::Rpm));
        assert_eq!(Ecosystem::from_osv("MinimOS"), Some(Ecosystem::Apk));
    }

    #[test]
    fn an_inventoried_ecosystem_uses_its_own_order_in_osv() {
        for (name, order, eco, _) in OSV {
            if let Some(eco) = eco {
                assert_eq!(eco.order(), *order, "{name}");
            }
        }
    }

    #[test]
    fn purl_types_round_trip() {
        for e in Ecosystem::ALL {
            assert_eq!(Ecosystem::from_purl_type(e.purl_type()), Some(e));
            assert_eq!(e.to_string(), e.purl_type());
            // The CLI's value is the purl type.
            let v = clap::ValueEnum::to_possible_value(&e).unwrap();
            assert_eq!(v.get_name(), e.purl_type());
        }
        assert_eq!(Ecosystem::from_purl_type("nuget"), None);
        assert_eq!(
            Ecosystem::list(),
            "deb, rpm, apk, pypi, npm, maven, golang, cargo"
        );
    }

    #[test]
    fn keys() {
        assert_eq!(package_key("pypi", "Flask_CORS"), "flask-cors");
        assert_eq!(package_key("pypi", "zope.interface"), "zope-interface");
        assert_eq!(
            package_key("golang", "github.com/BurntSushi/toml"),
            "github.com/burntsushi/toml"
        );
        assert_eq!(
            package_key("maven", "com.google.guava:Guava"),
            "com.google.guava:guava"
        );
        assert_eq!(package_key("deb", "OpenSSL"), "openssl");
    }
}
