//! The one outbound HTTP call: a POST of a JSON body to a URL, over plain
//! TCP (loopback only, as the policy check enforces) or TLS with rustls
//! and the system's roots or the endpoint's CA. One connection per call,
//! HTTP/1.1, no redirects followed, bounded everywhere: the connect, the
//! whole exchange, and the answer read (only its status and a few
//! headers matter).

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;

use super::schedule::Answer;

/// Where the system's CA bundle is on Debian (and most distributions).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The most of an answer's body read (then dropped).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How long a call may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole exchange, connect included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(15),
        }
    }
}

/// POSTs `body` to `url` with `headers`. Never fails: no answer is
/// [`Answer::NoAnswer`] with why (the URL's credentials are never in it:
/// the policy refuses URLs that carry any).
pub async fn post(
    url: &http::Uri,
    headers: &[(&str, String)],
    body: Bytes,
    ca_file: Option<&Path>,
    timeouts: Timeouts,
) -> Answer {
    match tokio::time::timeout(
        timeouts.total,
        exchange(url, headers, body, ca_file, timeouts),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(why)) => Answer::NoAnswer(why),
        Err(_) => Answer::NoAnswer(format!(
            "no answer within {} s",
            timeouts.total.as_secs_f64()
        )),
    }
}

async fn exchange(
    url: &http::Uri,
    headers: &[(&str, String)],
    body: Bytes,
    ca_file: Option<&Path>,
    timeouts: Timeouts,
) -> Result<Answer, String> {
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or("the URL has no host")?;
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(timeouts.connect, TcpStream::connect((bare_host, port)))
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let authority = url
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("patchgap-collector/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))?;
    if https {
        let config = client_config(ca_file)?;
        let name = ServerName::try_from(bare_host.to_string())
            .map_err(|e| format!("{host} is not a server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<T>(io: T, req: http::Request<Full<Bytes>>) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection runs beside the request and ends with it.
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read (a bounded part of) the answer so the receiver sees the
        // exchange finish; its content does not matter.
        let _ = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        Ok(Answer::Status {
            status,
            retry_after,
        })
    }
    .await;
    driver.abort();
    result
}

/// A TLS client trusting `ca_file`, or the system's roots.
fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_ROOTS));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading CA certificates from {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("a CA certificate in {}: {e}", path.display()))?;
        // A bundle may hold certificates rustls cannot use; skip those.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("no usable CA certificate in {}", path.display()));
    }
    // ring, the workspace's one provider (see `tls::server_config`).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
