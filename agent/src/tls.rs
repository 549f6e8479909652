//! The client side of TLS to the collector, shared by the agent and the
//! `patchgap` CLI: a URL's scheme is honoured (`https://` is TLS or an
//! error, never plaintext; `http://` is plaintext), and the CA and client
//! identity are read from disk at each connect, so renewed files are picked
//! up at the next reconnect.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The CA the collector's certificate must chain to, and optionally this
/// client's certificate and key (an agent needs them; a CLI may).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error(
        "{url} is https:// but no CA certificate was given: pass --ca (or PATCHGAP_CA) with the CA that signed the collector's certificate (`patchgap pki init` made it as DIR/ca.crt); patchgap never falls back to plaintext"
    )]
    NoCa { url: String },
    #[error(
        "{url} is plaintext http:// but TLS files were given: use https:// (or drop --ca, --cert and --key)"
    )]
    PlaintextWithTls { url: String },
    #[error("--cert and --key go together")]
    HalfIdentity,
    #[error("{url:?} is not a collector URL such as https://collector.example:7373")]
    BadUrl { url: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
}

impl ClientTls {
    /// Whether any TLS file was given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// The URL for an address: a bare `HOST:PORT` is https:// when TLS files
/// were given and http:// otherwise; a URL keeps its scheme.
pub fn collector_url(addr: &str, tls: &ClientTls) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls.any() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientTlsError> {
    std::fs::read(path).map_err(|source| ClientTlsError::Read {
        path: path.into(),
        source,
    })
}

/// An endpoint for `url`: TLS with the given CA (and client identity) for
/// https://, plaintext for http://; anything else is an error.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, ClientTlsError> {
    let bad = || ClientTlsError::BadUrl { url: url.into() };
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|_| bad())?;
    match endpoint.uri().scheme_str() {
        Some("http") if tls.any() => Err(ClientTlsError::PlaintextWithTls { url: url.into() }),
        Some("http") => Ok(endpoint),
        Some("https") => {
            let ca = tls
                .ca
                .as_deref()
                .ok_or_else(|| ClientTlsError::NoCa { url: url.into() })?;
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => return Err(ClientTlsError::HalfIdentity),
            }
            endpoint.tls_config(config).map_err(ClientTlsError::Tls)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_without_a_ca_is_an_error_never_plaintext() {
        let e = endpoint("https://127.0.0.1:7373", &ClientTls::default()).unwrap_err();
        assert!(matches!(e, ClientTlsError::NoCa { .. }), "{e}");
        assert!(e.to_string().contains("--ca"), "{e}");
    }

    #[test]
    fn http_is_plaintext_and_refuses_tls_files() {
        assert!(endpoint("http://127.0.0.1:7373", &ClientTls::default()).is_ok());
        let tls = ClientTls {
            ca: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let e = endpoint("http://127.0.0.1:7373", &tls).unwrap_err();
        assert!(matches!(e, ClientTlsError::PlaintextWithTls { .. }), "{e}");
    }

    #[test]
    fn a_bare_address_follows_the_tls_files() {
        let none = ClientTls::default();
        let ca = ClientTls {
            ca: Some("ca.crt".into()),
            ..Default::default()
        };
        assert_eq!(collector_url("h:1", &none), "http://h:1");
        assert_eq!(collector_url("h:1", &ca), "https://h:1");
        assert_eq!(collector_url("http://h:1", &ca), "http://h:1");
    }
}
