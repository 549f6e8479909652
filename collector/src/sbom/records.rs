//! SBOM push: a parsed CycloneDX or SPDX document becomes the store's
//! record of an image. Each component with a purl of an ecosystem patchgap
//! matches becomes a package (so advisories match it like any other) with
//! the chain through which it came in.

use std::collections::BTreeMap;

use patchgap_proto::{purl::Purl, v1};
use sha2::{Digest, Sha256};

use crate::{
    sbom::{Component, Sbom, SbomSyntax},
    store::{DeclaredPackage, SbomRecord},
};

/// "sha256:" and 64 lowercase hex digits, from what a person typed (an
/// uppercase or bare hex digest is accepted), or why not.
pub fn image_digest(input: &str) -> Result<String, String> {
    let s = input.trim();
    let hex = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{hex}"))
    } else {
        Err(format!(
            "{input:?} is not an image digest: give sha256: and 64 hex digits, as `docker inspect` or `crictl inspecti` show it"
        ))
    }
}

/// The package a component stands for, when its purl is one of the
/// ecosystems patchgap inventories; named as the agent names the same
/// package (npm scopes and Go paths in the name, Maven's groupId as the
/// source, a Debian source package from syft's `upstream` qualifier).
pub fn package(c: &Component) -> Option<v1::Package> {
    let purl = Purl::parse(c.purl.as_deref()?.trim()).ok()?;
    let ty = purl.ty();
    crate::ecosystem::Ecosystem::from_purl_type(ty)?;
    let version = purl
        .version()
        .map(str::to_string)
        .or_else(|| c.version.clone())?;
    let (name, source) = match (ty, purl.namespace()) {
        // syft splits a Go module path's tail into the purl's subpath
        // (pkg:golang/github.com/golang-jwt/jwt@v4.5.2#v4).
        ("golang", Some(ns)) => {
            let mut path = format!("{ns}/{}", purl.name());
            if let Some(sub) = purl.subpath() {
                path = format!("{path}/{sub}");
            }
            (path, String::new())
        }
        ("npm", Some(ns)) => (format!("{ns}/{}", purl.name()), String::new()),
        ("maven", Some(ns)) => (purl.name().to_string(), ns.to_string()),
        ("deb" | "rpm" | "apk", _) => {
            // trivy's SrcName property, or syft's `upstream` qualifier.
            let upstream = c.source.clone().or_else(|| {
                purl.qualifier("upstream")
                    .map(|u| u.split(['@', ' ']).next().unwrap_or(u).to_string())
            });
            (
                purl.name().to_string(),
                upstream.unwrap_or_else(|| purl.name().to_string()),
            )
        }
        _ => (purl.name().to_string(), String::new()),
    };
    Some(v1::Package {
        ecosystem: ty.to_string(),
        name,
        source,
        version,
        arch: purl.qualifier("arch").unwrap_or_default().to_string(),
        purl: purl.to_string(),
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    })
}

fn label(c: &Component) -> String {
    match &c.version {
        Some(v) if !v.is_empty() => format!("{}@{v}", c.name),
        _ => c.name.clone(),
    }
}

/// The store's record of `sbom`, pushed for `image` as the file `name`.
pub fn record(sbom: &Sbom, image: &str, name: &str, data: &[u8], now_ms: i64) -> SbomRecord {
    let graph = sbom.graph();
    let mut packages = Vec::new();
    for c in &sbom.components {
        let Some(package) = package(c) else {
            continue;
        };
        let reference = c.id.as_deref().unwrap_or_default().to_string();
        let pulled_in_by = if reference.is_empty() {
            Vec::new()
        } else {
            graph
                .pulled_in_by(&reference)
                .first()
                .map(|chain| {
                    chain
                        .iter()
                        .map(|id| {
                            graph
                                .component(id)
                                .map(label)
                                .unwrap_or_else(|| id.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        packages.push(DeclaredPackage {
            package,
            reference,
            pulled_in_by,
            advisories: Vec::new(),
        });
    }
    let sha256 = hex(&Sha256::digest(data));
    SbomRecord {
        image: image.to_string(),
        name: name.to_string(),
        // Who pushed it and from where: the caller's to fill in.
        provenance: crate::store::Provenance {
            imported_ms: now_ms,
            sha256: sha256.clone(),
            ..Default::default()
        },
        sha256,
        format: sbom.format.as_str().to_string(),
        syntax: match sbom.syntax {
            SbomSyntax::Json => "json",
            SbomSyntax::Xml => "xml",
            SbomSyntax::TagValue => "tag-value",
        }
        .to_string(),
        spec_version: sbom.spec_version.clone(),
        tools: sbom
            .tools
            .iter()
            .map(|t| match &t.version {
                Some(v) => format!("{} {v}", t.name),
                None => t.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        components: sbom.components.len() as u32,
        edges: sbom.edges.len() as u32,
        packages,
        pushed_ms: now_ms,
        data: data.to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The wire form of a stored SBOM.
pub fn summary(r: &SbomRecord) -> v1::SbomSummary {
    let mut ecosystems: BTreeMap<String, u32> = BTreeMap::new();
    for p in &r.packages {
        *ecosystems.entry(p.package.ecosystem.clone()).or_default() += 1;
    }
    v1::SbomSummary {
        image: r.image.clone(),
        name: r.name.clone(),
        sha256: r.sha256.clone(),
        format: r.format.clone(),
        syntax: r.syntax.clone(),
        spec_version: r.spec_version.clone(),
        tools: r
            .tools
            .split(", ")
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        components: r.components,
        edges: r.edges,
        packages: r.packages.len() as u32,
        ecosystems: ecosystems.into_iter().collect(),
        pushed_ms: r.pushed_ms,
        provenance: Some(crate::advisories::records::provenance(&r.provenance)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_normalised_or_refused() {
        let hex = "4f67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100";
        assert_eq!(image_digest(hex).unwrap(), format!("sha256:{hex}"));
        assert_eq!(
            image_digest(&format!("sha256:{}", hex.to_uppercase())).unwrap(),
            format!("sha256:{hex}")
        );
        for bad in [
            "",
            "sha256:",
            "sha256:abcd",
            "nginx:1.25",
            &format!("sha512:{hex}"),
        ] {
            assert!(image_digest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn components_become_packages_named_as_the_agent_names_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sbom");
        let os = Sbom::parse(
            &std::fs::read(dir.join("trivy_rootfs_os.cdx.json")).unwrap(),
            "os",
        )
        .unwrap();
        let r = record(&os, "sha256:00", "os", b"x", 0);
        let libc = r
            .packages
            .iter()
            .find(|p| p.package.name == "libc6")
            .expect("libc6");
        assert_eq!(libc.package.ecosystem, "deb");
        assert_eq!(libc.package.source, "glibc", "trivy's SrcName");
        assert_eq!(libc.package.arch, "amd64");
        assert!(!libc.package.version.is_empty());
        let tf = Sbom::parse(
            &std::fs::read(dir.join("small/syft_terraform_gobinary.cdx.json")).unwrap(),
            "tf",
        )
        .unwrap();
        let r = record(&tf, "sha256:00", "tf", b"x", 0);
        let stdlib = r
            .packages
            .iter()
            .find(|p| p.package.name == "stdlib")
            .unwrap();
        assert_eq!(stdlib.package.ecosystem, "golang");
        assert!(
            r.packages
                .iter()
                .any(|p| p.package.name.starts_with("github.com/hashicorp/"))
        );
        // A module path's tail in the purl's subpath is part of the name.
        let jwt = r
            .packages
            .iter()
            .find(|p| p.package.name.starts_with("github.com/golang-jwt/jwt"))
            .unwrap();
        assert_eq!(jwt.package.name, "github.com/golang-jwt/jwt/v4");
        assert_eq!(jwt.package.version, "v4.5.2");
        // Every package but the top-level ones came in through a chain that
        // ends at itself.
        let chained = r
            .packages
            .iter()
            .filter(|p| !p.pulled_in_by.is_empty())
            .count();
        assert!(chained > 200, "{chained}");
        for p in &r.packages {
            if let Some(last) = p.pulled_in_by.last() {
                assert!(last.starts_with(&p.package.name), "{last} {:?}", p.package);
            }
        }
    }
}
