//! mTLS between agents and the collector, with real certificates (rcgen)
//! and a real collector serving TLS on a loopback port: who may ingest for
//! which host, which certificates cannot connect, no plaintext against TLS,
//! and certificate files reloaded without dropping streams.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use patchgap_agent::{
    AgentConfig, ScanConfig,
    tls::{ClientTls, endpoint},
};
use patchgap_collector::{CollectorConfig, SqliteStore, Store, TlsFiles};
use patchgap_proto::v1::{
    self, agent_message::Body, ingest_client::IngestClient, query_client::QueryClient,
};
use patchgap_tests::timeout;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use time::OffsetDateTime;
use tokio::{net::TcpListener, sync::oneshot};

/// A CA in memory and the files it wrote.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: write(dir, &format!("{name}.crt"), &cert.pem()),
        issuer: Issuer::new(params, key),
    }
}

/// Issues a leaf like `patchgap pki issue` does; `uri` is the identity SAN
/// (agents: urn:patchgap:agent:HOST), `expired` puts not_after in the past.
fn leaf(
    dir: &Path,
    ca: &Ca,
    stem: &str,
    uri: Option<&str>,
    server: bool,
    expired: bool,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = if server {
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap()
    } else {
        CertificateParams::new(Vec::<String>::new()).unwrap()
    };
    params.distinguished_name.push(DnType::CommonName, stem);
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let now = OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - Duration::from_secs(30 * 86_400);
        params.not_after = now - Duration::from_secs(86_400);
    } else {
        params.not_before = now - Duration::from_secs(300);
        params.not_after = now + Duration::from_secs(30 * 86_400);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        write(dir, &format!("{stem}.crt"), &cert.pem()),
        write(dir, &format!("{stem}.key"), &key.serialize_pem()),
    )
}

struct Tls {
    dir: tempfile::TempDir,
    ca: Ca,
    addr: SocketAddr,
    client_ca: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
    store: Arc<SqliteStore>,
    /// A `read` token: under TLS every query needs one.
    token: String,
}

impl Tls {
    async fn start() -> Tls {
        Tls::start_with(false).await
    }

    /// `critical_needs_cert`: approve and admin calls also need a CLI
    /// client certificate.
    async fn start_with(critical_needs_cert: bool) -> Tls {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path(), "ca");
        let (cert, key) = leaf(dir.path(), &ca, "collector", None, true, false);
        // The client CA file is its own copy, so a test can rewrite it.
        let client_ca = dir.path().join("client-ca.crt");
        std::fs::copy(&ca.cert, &client_ca).unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = CollectorConfig {
            data_dir: data.path().into(),
            tls: Some(TlsFiles {
                cert,
                key,
                client_ca: client_ca.clone(),
            }),
            critical_needs_cert,
            ..Default::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(SqliteStore::open(data.path()).unwrap());
        let (token, _) = patchgap_collector::auth::issue_local(
            data.path(),
            store.as_ref(),
            "tls-test",
            &[patchgap_collector::auth::Scope::Read],
            None,
            Default::default(),
        )
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(patchgap_collector::serve(
            config,
            store.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        Tls {
            dir,
            ca,
            addr,
            client_ca,
            stop: Some(stop),
            server,
            _data: data,
            store,
            token,
        }
    }

    /// A query client over `channel` that sends the `read` token.
    fn query(
        &self,
        channel: tonic::transport::Channel,
    ) -> QueryClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl tonic::service::Interceptor,
        >,
    > {
        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", self.token).parse().unwrap();
        QueryClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        })
    }

    /// A valid agent certificate for `host` from this collector's CA.
    fn agent(&self, host: &str) -> (PathBuf, PathBuf) {
        let uri = format!("urn:patchgap:agent:{host}");
        let stem = format!("agent-{}", host.trim_start_matches("host-"));
        leaf(self.dir.path(), &self.ca, &stem, Some(&uri), false, false)
    }

    /// A valid CLI certificate for `name` from this collector's CA.
    fn cli(&self, name: &str) -> (PathBuf, PathBuf) {
        let uri = format!("urn:patchgap:cli:{name}");
        leaf(
            self.dir.path(),
            &self.ca,
            &format!("cli-{name}"),
            Some(&uri),
            false,
            false,
        )
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn client_tls(&self, pair: Option<(PathBuf, PathBuf)>) -> ClientTls {
        ClientTls {
            ca: Some(self.ca.cert.clone()),
            cert: pair.as_ref().map(|p| p.0.clone()),
            key: pair.map(|p| p.1),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.server.await;
    }
}

/// Refused below gRPC (the TLS handshake, or no TLS at all): the call
/// never reached a service, so no status of ours came back.
fn assert_transport_refused(e: &str) {
    assert!(
        e.starts_with("connect:")
            || e.starts_with("Unknown: transport error")
            || e.starts_with("Unavailable"),
        "{e}"
    );
}

fn hello(hostname: &str, host_id: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                hostname: hostname.into(),
                host_id: host_id.into(),
                ..Default::default()
            }),
            agent_version: "test".into(),
            capabilities: None,
            session_id: format!("s-{hostname}-{host_id}"),
        })),
    }
}

/// An open ingest stream: the sender for more messages and the replies.
struct Stream {
    tx: tokio::sync::mpsc::Sender<v1::AgentMessage>,
    rx: tonic::Streaming<v1::CollectorMessage>,
}

/// Connects with `tls` and sends a Hello; Ok once the Welcome came.
async fn ingest(url: &str, tls: &ClientTls, hello: v1::AgentMessage) -> Result<Stream, String> {
    let channel = endpoint(url, tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.unwrap();
    let mut inbound = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    match inbound.message().await {
        Ok(Some(v1::CollectorMessage {
            body: Some(v1::collector_message::Body::Welcome(_)),
        })) => {}
        Ok(other) => return Err(format!("no welcome: {other:?}")),
        Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
    }
    // Then the host's desired containments (none here).
    match inbound.message().await {
        Ok(Some(v1::CollectorMessage {
            body: Some(v1::collector_message::Body::Command(_)),
        })) => Ok(Stream { tx, rx: inbound }),
        Ok(other) => Err(format!("no containment set: {other:?}")),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// Sends a heartbeat on an open stream and waits for its ack.
async fn heartbeat(stream: &mut Stream, seq: u64) -> Result<(), String> {
    stream
        .tx
        .send(v1::AgentMessage {
            seq,
            body: Some(Body::Heartbeat(v1::Heartbeat::default())),
        })
        .await
        .map_err(|_| "stream closed".to_string())?;
    match stream.rx.message().await {
        Ok(Some(v1::CollectorMessage {
            body: Some(v1::collector_message::Body::Ack(a)),
        })) if a.seq == seq => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
async fn an_agent_certificate_speaks_only_for_its_own_host() {
    let t = Tls::start().await;
    let a = t.agent("host-a");
    let c = t.agent("host-c");
    let cli = t.cli("ops");

    // Its own host: welcomed, and its messages acked.
    let mut own = timeout(ingest(
        &t.url(),
        &t.client_tls(Some(a.clone())),
        hello("host-a", "id-a"),
    ))
    .await
    .expect("host-a with its own certificate");
    timeout(heartbeat(&mut own, 1)).await.unwrap();

    // Host A's certificate saying it is host B: PermissionDenied.
    let e = timeout(ingest(
        &t.url(),
        &t.client_tls(Some(a.clone())),
        hello("host-b", "id-b"),
    ))
    .await
    .err()
    .expect("impersonation refused");
    assert!(e.starts_with("PermissionDenied"), "{e}");
    assert!(e.contains("host-a") && e.contains("host-b"), "{e}");

    // Host C's certificate naming itself but claiming host A's machine-id.
    let e = timeout(ingest(
        &t.url(),
        &t.client_tls(Some(c)),
        hello("host-c", "id-a"),
    ))
    .await
    .err()
    .expect("machine-id takeover refused");
    assert!(e.starts_with("PermissionDenied"), "{e}");

    // A CLI certificate cannot ingest at all.
    let e = timeout(ingest(&t.url(), &t.client_tls(Some(cli)), hello("ops", "")))
        .await
        .err()
        .expect("a CLI certificate cannot ingest");
    assert!(e.starts_with("PermissionDenied"), "{e}");

    // The refusals did not disturb the genuine stream.
    timeout(heartbeat(&mut own, 2)).await.unwrap();

    // Each refusal is in the audit log, with the certificate's subject.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        use patchgap_collector::Store;
        let refused: Vec<_> = t
            .store
            .audit_entries(0, 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.method == "Ingest/Stream" && e.result.starts_with("refused"))
            .collect();
        if refused.len() >= 3 || std::time::Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(refused.len(), 3, "{refused:#?}");
    // And the genuine stream's opening, under its certificate's subject.
    use patchgap_collector::Store;
    let opened: Vec<_> = t
        .store
        .audit_entries(0, 0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.method == "Ingest/Stream" && e.result.starts_with("ok: stream open"))
        .collect();
    assert!(
        opened
            .iter()
            .any(|e| e.subject.contains("agent-a") && e.args.contains("host=host-a")),
        "{opened:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|e| e.subject.contains("agent-a") && e.result.contains("host-b")),
        "{refused:#?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn certificates_that_cannot_connect() {
    let t = Tls::start().await;
    // No client certificate: TLS gets through (a CLI may hold only a
    // token), the ingest stream does not.
    let e = timeout(ingest(&t.url(), &t.client_tls(None), hello("host-a", "")))
        .await
        .err()
        .expect("no certificate refused");
    assert!(e.starts_with("Unauthenticated"), "{e}");

    // Expired: the handshake fails.
    let expired = leaf(
        t.dir.path(),
        &t.ca,
        "expired",
        Some("urn:patchgap:agent:host-a"),
        false,
        true,
    );
    let e = timeout(ingest(
        &t.url(),
        &t.client_tls(Some(expired)),
        hello("host-a", ""),
    ))
    .await
    .err()
    .expect("expired certificate refused");
    assert_transport_refused(&e);

    // Another CA's certificate for the same host: the handshake fails.
    let other = ca(t.dir.path(), "other-ca");
    let foreign = leaf(
        t.dir.path(),
        &other,
        "foreign",
        Some("urn:patchgap:agent:host-a"),
        false,
        false,
    );
    let e = timeout(ingest(
        &t.url(),
        &t.client_tls(Some(foreign)),
        hello("host-a", ""),
    ))
    .await
    .err()
    .expect("another CA refused");
    assert_transport_refused(&e);

    // A plaintext client against the TLS port gets nothing.
    let plain = format!("http://{}", t.addr);
    let e = timeout(ingest(&plain, &ClientTls::default(), hello("host-a", "")))
        .await
        .err()
        .expect("plaintext refused");
    assert_transport_refused(&e);

    // https:// without a CA is an error before any connection, never plaintext.
    let e = endpoint(&t.url(), &ClientTls::default()).unwrap_err();
    assert!(e.to_string().contains("--ca"), "{e}");

    // None of them reached the service: host-a was never registered.
    let channel = endpoint(&t.url(), &t.client_tls(None))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let hosts = t
        .query(channel)
        .list_hosts(v1::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(hosts.hosts.is_empty(), "{:?}", hosts.hosts);
    t.stop().await;
}

/// A real agent (scanning this machine's /proc) streams over mTLS with a
/// certificate for this host's name; `hosts` shows its certificate's expiry.
#[tokio::test]
async fn a_real_agent_streams_over_mtls_and_hosts_shows_its_expiry() {
    let t = Tls::start().await;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let pair = leaf(
        t.dir.path(),
        &t.ca,
        "agent-self",
        Some(&format!("urn:patchgap:agent:{hostname}")),
        false,
        false,
    );
    let agent = patchgap_agent::spawn(AgentConfig {
        collector: t.url(),
        tls: t.client_tls(Some(pair)),
        scan: ScanConfig::default(),
        ebpf: false,
        interval: Duration::from_secs(3600),
        backoff_max: Duration::from_secs(1),
        ..Default::default()
    });
    timeout(agent.wait_for(|s| s.scans >= 1 && s.acked_seq >= s.last_seq && s.last_seq > 0)).await;

    let channel = endpoint(&t.url(), &t.client_tls(None))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let hosts = t
        .query(channel)
        .max_decoding_message_size(64 << 20)
        .list_hosts(v1::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner();
    let h = hosts
        .hosts
        .iter()
        .find(|h| h.identity.as_ref().is_some_and(|i| i.hostname == hostname))
        .expect("this host is listed");
    assert!(h.connected);
    let days = (h.cert_not_after_ms - patchgap_proto::time::now_ms()) / 86_400_000;
    assert!(
        (29..=30).contains(&days),
        "expiry {} is 30 days out",
        h.cert_not_after_ms
    );
    agent.shutdown().await;
    t.stop().await;
}

/// The client CA file is rewritten while a stream is open: a certificate
/// of the new CA connects within a couple of seconds, and the open stream
/// is still acked.
#[tokio::test]
async fn certificate_files_reload_without_dropping_streams() {
    let t = Tls::start().await;
    let a = t.agent("host-a");
    let mut open = timeout(ingest(
        &t.url(),
        &t.client_tls(Some(a)),
        hello("host-a", "id-a"),
    ))
    .await
    .unwrap();

    let next = ca(t.dir.path(), "next-ca");
    let b = leaf(
        t.dir.path(),
        &next,
        "agent-b",
        Some("urn:patchgap:agent:host-b"),
        false,
        false,
    );
    assert!(
        timeout(ingest(
            &t.url(),
            &t.client_tls(Some(b.clone())),
            hello("host-b", "id-b")
        ))
        .await
        .is_err(),
        "not trusted before the reload"
    );
    // Both CAs in the file: the rewrite is what an operator rotating does.
    let both = std::fs::read_to_string(&t.ca.cert).unwrap()
        + &std::fs::read_to_string(&next.cert).unwrap();
    let tmp = t.dir.path().join("client-ca.tmp");
    std::fs::write(&tmp, both).unwrap();
    std::fs::rename(&tmp, &t.client_ca).unwrap();

    let mut ok = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if timeout(ingest(
            &t.url(),
            &t.client_tls(Some(b.clone())),
            hello("host-b", "id-b"),
        ))
        .await
        .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "the new client CA was not picked up");
    timeout(heartbeat(&mut open, 1))
        .await
        .expect("the open stream survived the reload");
    t.stop().await;
}

/// `--critical-needs-cert`: an admin token alone cannot list tokens; the
/// same token over a connection with a CLI certificate can. An agent
/// certificate does not count, and reads still need only the token.
#[tokio::test(flavor = "multi_thread")]
async fn critical_paths_need_a_cli_certificate_as_well_as_the_token() {
    let t = Tls::start_with(true).await;
    let (admin, _) = patchgap_collector::auth::issue_local(
        t._data.path(),
        t.store.as_ref(),
        "alice",
        &[patchgap_collector::auth::Scope::Admin],
        None,
        Default::default(),
    )
    .unwrap();
    let cli = t.cli("ops");
    let agent = t.agent("host-a");
    let list_tokens = async |pair: Option<(PathBuf, PathBuf)>| {
        let channel = endpoint(&t.url(), &t.client_tls(pair))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {admin}").parse().unwrap();
        QueryClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        })
        .list_tokens(v1::ListTokensRequest {})
        .await
    };
    // The token alone: refused, naming the missing certificate.
    let e = timeout(list_tokens(None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("needs a CLI client certificate")
            && e.message().contains("presented none"),
        "{}",
        e.message()
    );
    // An agent's certificate is not a person's.
    let e = timeout(list_tokens(Some(agent))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("an agent certificate"),
        "{}",
        e.message()
    );
    // The CLI certificate and the token: accepted.
    let tokens = timeout(list_tokens(Some(cli.clone())))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens.iter().any(|k| k.subject == "alice"), "{tokens:?}");
    // The certificate does not stand in for the token.
    let channel = endpoint(&t.url(), &t.client_tls(Some(cli)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = timeout(QueryClient::new(channel.clone()).list_tokens(v1::ListTokensRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // Reads are not critical: the read token alone, no certificate.
    let channel = endpoint(&t.url(), &t.client_tls(None))
        .unwrap()
        .connect()
        .await
        .unwrap();
    timeout(t.query(channel).list_hosts(v1::ListHostsRequest {}))
        .await
        .unwrap();
    // The refusals are in the audit log, under the token's subject.
    let log = t.store.audit_entries(0, 0, 1000).unwrap();
    assert!(
        log.iter()
            .filter(|e| e.subject == "alice" && e.method.contains("ListTokens"))
            .count()
            >= 2,
        "{log:?}"
    );
    t.stop().await;
}

/// A collector told to require certificates on critical paths without TLS
/// does not start: there could be no certificate.
#[tokio::test]
async fn critical_needs_cert_without_tls_does_not_start() {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = CollectorConfig {
        data_dir: data.path().into(),
        critical_needs_cert: true,
        ..Default::default()
    };
    let e = timeout(patchgap_collector::serve(config, store, listener, async {}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs TLS"), "{e}");
}
