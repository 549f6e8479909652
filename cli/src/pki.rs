//! `patchgap pki`: a private CA and the certificates mTLS needs, in two
//! commands (rcgen, ECDSA P-256 keys from ring).
//!
//! What each certificate says, which the collector relies on:
//! - the CA (`ca.crt`): CN "patchgap CA", a CA for end entities only
//!   (path length 0);
//! - the collector (`collector.crt`): CN = the first `--san`, one DNS or IP
//!   SAN per `--san` value, extended key usage serverAuth only;
//! - an agent (`agent-HOST.crt`): CN = HOST and the URI SAN
//!   `urn:patchgap:agent:HOST`; clientAuth only. The collector takes an
//!   agent's Hello only for that HOST;
//! - a CLI client (`cli-NAME.crt`): CN = NAME and the URI SAN
//!   `urn:patchgap:cli:NAME`; clientAuth only. It can query, never ingest.
//!
//! **Invariant:** keys are written 0600 in a 0700 directory, created with
//! `O_EXCL`, and an existing key is never replaced without `--force`.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use patchgap_collector::tls::{AGENT_URI_PREFIX, CLI_URI_PREFIX};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// What `pki issue` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// The collector's server certificate, for these DNS names and IPs.
    Collector { sans: Vec<String> },
    /// An agent's client certificate for one host name.
    Agent { host: String },
    /// A CLI client certificate.
    Cli { name: String },
}

/// The files one command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A host or client name: it goes into a file name and a URI, so only
/// letters, digits, `.`, `_` and `-`, not starting with `.` or `-`.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!("{what} {name:?} must be letters, digits, '.', '_' and '-' (not first)");
    }
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks slightly behind ours.
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

/// Makes `dir` (0700) if needed; refuses a directory others can read.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mode = fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
    }
    Ok(())
}

/// Writes a file with `mode`, refusing to replace one unless `force`.
fn write_new(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a key and its certificate: the key first, 0600, so a key never
/// sits readable even for a moment; both refused if either exists.
fn write_pair(
    dir: &Path,
    stem: &str,
    cert: &str,
    key: &KeyPair,
    force: bool,
) -> anyhow::Result<Written> {
    let written = Written {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    if !force {
        for p in [&written.key, &written.cert] {
            if p.exists() {
                bail!(
                    "{} exists; pass --force to replace it (the old key stops working)",
                    p.display()
                );
            }
        }
    }
    write_new(&written.key, &key.serialize_pem(), 0o600, force)?;
    write_new(&written.cert, cert, 0o644, force)?;
    Ok(written)
}

/// `patchgap pki init`: a new CA in `dir` (ca.crt, ca.key).
pub fn init(dir: &Path, days: u32, force: bool) -> anyhow::Result<Written> {
    private_dir(dir)?;
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "patchgap CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).context("signing the CA")?;
    write_pair(dir, "ca", &cert.pem(), &key, force)
}

/// `patchgap pki issue`: a key and a certificate signed by the CA in `dir`.
pub fn issue(dir: &Path, leaf: &Leaf, days: u32, force: bool) -> anyhow::Result<Written> {
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let read = |p: &Path| {
        fs::read_to_string(p).with_context(|| {
            format!(
                "reading {} (run `patchgap pki init --dir {}` first)",
                p.display(),
                dir.display()
            )
        })
    };
    let issuer_key = KeyPair::from_pem(&read(&ca_key)?)
        .with_context(|| format!("{} is not a private key", ca_key.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_cert)?, issuer_key)
        .with_context(|| format!("{} is not a CA certificate", ca_cert.display()))?;
    private_dir(dir)?;

    let (stem, mut params) = match leaf {
        Leaf::Collector { sans } => {
            if sans.is_empty() {
                bail!("--san needs at least one DNS name or IP address");
            }
            // rcgen makes an IP SAN of what parses as an address, a DNS
            // SAN of the rest.
            let mut params = CertificateParams::new(sans.clone())
                .context("--san values must be DNS names or IP addresses")?;
            params.distinguished_name.push(DnType::CommonName, &sans[0]);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            ("collector".to_string(), params)
        }
        Leaf::Agent { host } => {
            check_name("host", host)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, host);
            params.subject_alt_names = vec![SanType::URI(
                format!("{AGENT_URI_PREFIX}{host}").try_into()?,
            )];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            (format!("agent-{host}"), params)
        }
        Leaf::Cli { name } => {
            check_name("name", name)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.subject_alt_names =
                vec![SanType::URI(format!("{CLI_URI_PREFIX}{name}").try_into()?)];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            (format!("cli-{name}"), params)
        }
    };
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the certificate")?;
    write_pair(dir, &stem, &cert.pem(), &key, force)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{
        RootCertStore,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
        server::WebPkiClientVerifier,
    };

    use super::*;

    fn cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    fn roots(dir: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(cert(&dir.join("ca.crt"))).unwrap();
        Arc::new(roots)
    }

    #[allow(deprecated)]
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// The chains verify with the same rustls verifiers the collector and
    /// its clients use: the collector's as a server for its SANs, the
    /// agent's and CLI's as clients.
    #[test]
    fn chains_verify_with_rustls() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(&dir, 30, false).unwrap();
        let sans = vec!["collector.test".to_string(), "10.0.0.5".to_string()];
        let c = issue(&dir, &Leaf::Collector { sans }, 30, false).unwrap();
        let a = issue(
            &dir,
            &Leaf::Agent {
                host: "web-1".into(),
            },
            30,
            false,
        )
        .unwrap();
        let l = issue(&dir, &Leaf::Cli { name: "ops".into() }, 30, false).unwrap();

        let server = WebPkiServerVerifier::builder_with_provider(roots(&dir), provider())
            .build()
            .unwrap();
        for name in ["collector.test", "10.0.0.5"] {
            server
                .verify_server_cert(
                    &cert(&c.cert),
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            server
                .verify_server_cert(
                    &cert(&c.cert),
                    &[],
                    &ServerName::try_from("other.test").unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_err()
        );
        let client = WebPkiClientVerifier::builder_with_provider(roots(&dir), provider())
            .build()
            .unwrap();
        for p in [&a.cert, &l.cert] {
            client
                .verify_client_cert(&cert(p), &[], UnixTime::now())
                .unwrap();
        }
        // An agent certificate is no server certificate (clientAuth only).
        assert!(
            server
                .verify_server_cert(
                    &cert(&a.cert),
                    &[],
                    &ServerName::try_from("web-1").unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_err()
        );
        // Another CA's certificates do not verify.
        let other = tmp.path().join("other");
        init(&other, 30, false).unwrap();
        let client = WebPkiClientVerifier::builder_with_provider(roots(&other), provider())
            .build()
            .unwrap();
        assert!(
            client
                .verify_client_cert(&cert(&a.cert), &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn agent_certificate_names_its_host() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), 30, false).unwrap();
        let a = issue(
            tmp.path(),
            &Leaf::Agent {
                host: "db-7".into(),
            },
            30,
            false,
        )
        .unwrap();
        assert_eq!(a.cert, tmp.path().join("agent-db-7.crt"));
        let id = patchgap_collector::tls::peer_identity(&cert(&a.cert)).unwrap();
        assert_eq!(id.role, patchgap_collector::tls::Role::Agent("db-7".into()));
        assert!(id.subject.contains("CN=db-7"), "{}", id.subject);
        let l = issue(tmp.path(), &Leaf::Cli { name: "ops".into() }, 30, false).unwrap();
        assert_eq!(l.key, tmp.path().join("cli-ops.key"));
        let id = patchgap_collector::tls::peer_identity(&cert(&l.cert)).unwrap();
        assert_eq!(id.role, patchgap_collector::tls::Role::Cli("ops".into()));
        let days =
            (id.not_after_ms - OffsetDateTime::now_utc().unix_timestamp() * 1000) / 86_400_000;
        assert!((29..=30).contains(&days), "{days}");
    }

    #[test]
    fn modes_and_no_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let ca = init(&dir, 30, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&ca.cert), 0o644);
        let a = issue(&dir, &Leaf::Agent { host: "h".into() }, 30, false).unwrap();
        assert_eq!(mode(&a.key), 0o600);

        let before = fs::read(&a.key).unwrap();
        let e = issue(&dir, &Leaf::Agent { host: "h".into() }, 30, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(fs::read(&a.key).unwrap(), before);
        assert!(
            init(&dir, 30, false).is_err(),
            "a CA is never replaced silently"
        );

        issue(&dir, &Leaf::Agent { host: "h".into() }, 30, true).unwrap();
        assert_ne!(fs::read(&a.key).unwrap(), before);
        assert_eq!(mode(&a.key), 0o600);
    }

    #[test]
    fn names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), 30, false).unwrap();
        for bad in ["", "../x", "a/b", "-x", "a b"] {
            assert!(
                issue(tmp.path(), &Leaf::Agent { host: bad.into() }, 30, false).is_err(),
                "{bad:?}"
            );
        }
        assert!(issue(tmp.path(), &Leaf::Collector { sans: vec![] }, 30, false).is_err());
    }
}
