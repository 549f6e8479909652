//! What security costs, in one run:
//! - ingest over mTLS vs plaintext: an in-process collector fed by N agent
//!   streams of 1,000-process snapshots back to back (acked, so stored and
//!   matched); messages/s and CPU per message, of the collector's threads
//!   and of the whole process (agents included), with the ratio TLS /
//!   plaintext (goal: collector CPU at most 1.2x);
//! - query latency with token checks (`require_tokens`, a `read` token)
//!   vs without: ListHosts and FindPackage p50/p99, the two collectors
//!   queried in turn.
//!
//! The snapshot is this host's real inventory (a scan), its processes
//! repeated under other pids up to 1,000. Each mode runs on a fresh data
//! directory; plaintext and TLS alternate over `ROUNDS` rounds, and each
//! stream's first snapshot (new packages, matched once) is left out.
//!
//! usage: cargo bench -p patchgap-tests --bench security
//!   (PATCHGAP_BENCH_SECONDS per ingest phase, default 10;
//!    PATCHGAP_BENCH_STREAMS, default 8: enough to keep both cores busy;
//!    with fewer, each stream waits on its own transfers and TLS shows as
//!    lower messages/s at the same CPU per message)

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use patchgap_agent::tls::{ClientTls, endpoint};
use patchgap_collector::{CollectorConfig, SqliteStore, Store, TlsFiles};
use patchgap_proto::v1::{self, agent_message::Body, collector_message};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

const PROCESSES: usize = 1000;
const ROUNDS: usize = 2;
/// Threads of the collector's own runtime (workers and blocking pool).
const COLLECTOR_THREAD: &str = "pg-collector";

fn main() {
    let seconds: u64 = env("PATCHGAP_BENCH_SECONDS", 10);
    let streams: usize = env("PATCHGAP_BENCH_STREAMS", 8);
    let inv = inventory();
    println!(
        "security bench: {} processes per snapshot, {streams} streams, {ROUNDS} rounds of {} s per mode",
        inv.processes.len(),
        seconds as f64 / ROUNDS as f64
    );
    let pki = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki.path(), streams);
    // The agents' side: its own runtime, so its threads are not counted as
    // the collector's.
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let phase = Duration::from_secs_f64(seconds as f64 / ROUNDS as f64);
    let mut total = [Ingested::default(), Ingested::default()];
    for _ in 0..ROUNDS {
        for (i, tls) in [false, true].into_iter().enumerate() {
            let r = ingest_phase(&clients, &inv, &pki, tls, streams, phase);
            total[i].add(&r);
        }
    }
    let [plain, tls] = total;
    for (name, r) in [("plaintext", &plain), ("mTLS", &tls)] {
        println!(
            "{name:>9}: {:.1} messages/s ({} messages, {:.1} MB each); collector CPU {:.2} ms/message, process CPU {:.2} ms/message",
            r.rate(),
            r.messages,
            r.bytes as f64 / r.messages.max(1) as f64 / 1e6,
            r.collector_ms_per_msg(),
            r.process_ms_per_msg(),
        );
    }
    let cpu_ratio = tls.collector_ms_per_msg() / plain.collector_ms_per_msg();
    let process_ratio = tls.process_ms_per_msg() / plain.process_ms_per_msg();
    let rate_ratio = tls.rate() / plain.rate();
    println!(
        "TLS / plaintext: collector CPU per message {cpu_ratio:.2}x (goal <= 1.2x), process CPU {process_ratio:.2}x, messages/s {rate_ratio:.2}x"
    );

    let q = clients.block_on(query_phase(&inv, Duration::from_secs(seconds)));
    for (name, (off, on)) in [("ListHosts", q.list_hosts), ("FindPackage", q.find_package)] {
        println!(
            "{name:>11}: no token p50 {:.2} ms p99 {:.2} ms ({} queries); read token p50 {:.2} ms p99 {:.2} ms ({} queries); p50 ratio {:.2}x, p99 {:.2}x",
            off.0,
            off.1,
            off.2,
            on.0,
            on.1,
            on.2,
            on.0 / off.0,
            on.1 / off.1
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "security",
            "processes": inv.processes.len(),
            "streams": streams,
            "seconds": seconds,
            "ingest": {
                "plaintext": plain.json(),
                "tls": tls.json(),
                "collector_cpu_ratio": cpu_ratio,
                "process_cpu_ratio": process_ratio,
                "rate_ratio": rate_ratio,
                "goal_cpu_ratio": 1.2,
            },
            "query_ms": {
                "list_hosts": {"no_token": {"p50": q.list_hosts.0.0, "p99": q.list_hosts.0.1},
                               "token": {"p50": q.list_hosts.1.0, "p99": q.list_hosts.1.1}},
                "find_package": {"no_token": {"p50": q.find_package.0.0, "p99": q.find_package.0.1},
                                 "token": {"p50": q.find_package.1.0, "p99": q.find_package.1.1}},
            },
        })
    );
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This host's scan, its processes repeated under other pids up to 1,000.
fn inventory() -> patchgap_agent::model::Inventory {
    let mut inv = patchgap_agent::Scanner::new(Default::default()).scan();
    let real = inv.processes.clone();
    let mut pid = 4_000_000;
    while inv.processes.len() < PROCESSES {
        for p in &real {
            if inv.processes.len() == PROCESSES {
                break;
            }
            let mut p = p.clone();
            p.key.pid = pid;
            pid += 1;
            inv.processes.push(p);
        }
    }
    inv.processes.truncate(PROCESSES);
    inv
}

/// CPU time (utime + stime) in seconds: the whole process, and the
/// threads named `COLLECTOR_THREAD` (from /proc/self/task/*/stat).
fn cpu() -> (f64, f64) {
    fn ticks(stat: &str) -> Option<(String, u64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // Fields 14 and 15 of stat(5); index 0 here is field 3.
        Some((
            comm,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    }
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let process = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map(|t| t.1)
        .unwrap_or(0);
    let mut collector = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Some((comm, t)) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|s| ticks(&s))
            && comm.starts_with(COLLECTOR_THREAD)
        {
            collector += t;
        }
    }
    (process as f64 / hz, collector as f64 / hz)
}

#[derive(Default)]
struct Ingested {
    messages: u64,
    bytes: u64,
    seconds: f64,
    collector_cpu: f64,
    process_cpu: f64,
}

impl Ingested {
    fn add(&mut self, o: &Ingested) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.seconds += o.seconds;
        self.collector_cpu += o.collector_cpu;
        self.process_cpu += o.process_cpu;
    }
    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    fn collector_ms_per_msg(&self) -> f64 {
        self.collector_cpu * 1000.0 / self.messages.max(1) as f64
    }
    fn process_ms_per_msg(&self) -> f64 {
        self.process_cpu * 1000.0 / self.messages.max(1) as f64
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "messages": self.messages,
            "messages_per_s": self.rate(),
            "bytes_per_message": self.bytes / self.messages.max(1),
            "collector_cpu_ms_per_message": self.collector_ms_per_msg(),
            "process_cpu_ms_per_message": self.process_ms_per_msg(),
        })
    }
}

/// A CA, the collector's certificate and one agent certificate per stream.
struct Pki {
    ca: PathBuf,
    collector: (PathBuf, PathBuf),
    agents: Vec<(PathBuf, PathBuf)>,
}

impl Pki {
    fn new(dir: &Path, agents: usize) -> Pki {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, "ca");
        let ca = write("ca.crt", &params.self_signed(&key).unwrap().pem());
        let issuer = Issuer::new(params, key);
        let leaf = |stem: &str, uri: Option<String>| {
            let key = KeyPair::generate().unwrap();
            let server = uri.is_none();
            let names = if server {
                vec!["127.0.0.1".to_string(), "localhost".to_string()]
            } else {
                Vec::new()
            };
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, stem);
            if let Some(uri) = uri {
                params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
            }
            params.extended_key_usages = vec![if server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (
                write(&format!("{stem}.crt"), &cert.pem()),
                write(&format!("{stem}.key"), &key.serialize_pem()),
            )
        };
        Pki {
            ca: ca.clone(),
            collector: leaf("collector", None),
            agents: (0..agents)
                .map(|i| {
                    leaf(
                        &format!("agent-{i}"),
                        Some(format!("urn:patchgap:agent:{}", host_name(i))),
                    )
                })
                .collect(),
        }
    }
}

fn host_name(i: usize) -> String {
    format!("bench-{i}")
}

/// A collector in its own runtime (threads named `COLLECTOR_THREAD`).
struct Collector {
    runtime: Option<tokio::runtime::Runtime>,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    store: Arc<SqliteStore>,
    data: tempfile::TempDir,
}

impl Collector {
    fn start(tls: Option<TlsFiles>, require_tokens: bool) -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(COLLECTOR_THREAD)
            // Blocking threads (the store's writes) live through a phase,
            // so their CPU is still in /proc when it is read.
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(data.path()).unwrap());
        let config = CollectorConfig {
            data_dir: data.path().into(),
            tls,
            require_tokens,
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(patchgap_collector::serve(
                config,
                store.clone(),
                listener,
                async {
                    let _ = stopped.await;
                },
            ));
            (addr, server)
        });
        Collector {
            runtime: Some(runtime),
            addr,
            stop: Some(stop),
            server: Some(server),
            store,
            data,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let runtime = self.runtime.take().unwrap();
        let server = self.server.take().unwrap();
        let _ = runtime.block_on(server);
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

/// One ingest phase: `streams` agents send snapshots back to back for
/// `phase`, counted from when every stream had its first snapshot acked.
fn ingest_phase(
    clients: &tokio::runtime::Runtime,
    inv: &patchgap_agent::model::Inventory,
    pki: &Pki,
    tls: bool,
    streams: usize,
    phase: Duration,
) -> Ingested {
    let collector = Collector::start(
        tls.then(|| TlsFiles {
            cert: pki.collector.0.clone(),
            key: pki.collector.1.clone(),
            client_ca: pki.ca.clone(),
        }),
        false,
    );
    let url = if tls {
        format!("https://127.0.0.1:{}", collector.addr.port())
    } else {
        format!("http://{}", collector.addr)
    };
    let acked = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let (warm_tx, mut warm_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let mut tasks = Vec::new();
    for i in 0..streams {
        let client_tls = if tls {
            ClientTls {
                ca: Some(pki.ca.clone()),
                cert: Some(pki.agents[i].0.clone()),
                key: Some(pki.agents[i].1.clone()),
            }
        } else {
            ClientTls::default()
        };
        let mut inv = inv.clone();
        inv.host.hostname = host_name(i);
        inv.host.host_id = format!("{:032x}", i + 1);
        let (url, acked, bytes, sending, warm_tx) = (
            url.clone(),
            acked.clone(),
            bytes.clone(),
            sending.clone(),
            warm_tx.clone(),
        );
        tasks.push(clients.spawn(async move {
            stream(&url, &client_tls, &inv, &acked, &bytes, &sending, warm_tx).await
        }));
    }
    drop(warm_tx);
    let measured = clients.block_on(async {
        for _ in 0..streams {
            warm_rx
                .recv()
                .await
                .expect("a stream ended before its first ack");
        }
        let (m0, b0, c0, t0) = (
            acked.load(Ordering::SeqCst),
            bytes.load(Ordering::SeqCst),
            cpu(),
            Instant::now(),
        );
        tokio::time::sleep(phase).await;
        let (m1, b1, c1, t1) = (
            acked.load(Ordering::SeqCst),
            bytes.load(Ordering::SeqCst),
            cpu(),
            Instant::now(),
        );
        Ingested {
            messages: m1 - m0,
            bytes: b1 - b0,
            seconds: (t1 - t0).as_secs_f64(),
            process_cpu: c1.0 - c0.0,
            collector_cpu: c1.1 - c0.1,
        }
    });
    sending.store(false, Ordering::SeqCst);
    for t in tasks {
        clients.block_on(t).unwrap();
    }
    drop(collector);
    measured
}

/// One agent stream: a Hello, then snapshots back to back, a few in
/// flight; counts the acks (and the acked bytes) until `sending` clears.
async fn stream(
    url: &str,
    tls: &ClientTls,
    inv: &patchgap_agent::model::Inventory,
    acked: &AtomicU64,
    bytes: &AtomicU64,
    sending: &AtomicBool,
    warm: tokio::sync::mpsc::Sender<()>,
) {
    let channel = endpoint(url, tls).unwrap().connect().await.unwrap();
    let mut client = v1::ingest_client::IngestClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(patchgap_agent::wire::host(&inv.host)),
            agent_version: "bench".into(),
            capabilities: Some(Default::default()),
            session_id: format!("bench-{}", inv.host.hostname),
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match inbound.message().await.unwrap() {
        Some(v1::CollectorMessage {
            body: Some(collector_message::Body::Welcome(_)),
        }) => {}
        other => panic!("no welcome: {other:?}"),
    }
    // The sender: full snapshots, in parts under 4 MiB as the agent sends
    // them; the channel holds a few in flight.
    let sizes = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let sender = {
        let (inv, sizes) = (inv.clone(), sizes.clone());
        let sending = Arc::new(AtomicBool::new(true));
        let flag = sending.clone();
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut n = 0;
            while flag.load(Ordering::SeqCst) {
                n += 1;
                for part in patchgap_agent::wire::snapshot_parts(&inv, &format!("s{n}"), 4 << 20) {
                    seq += 1;
                    let msg = v1::AgentMessage {
                        seq,
                        body: Some(Body::Snapshot(part)),
                    };
                    sizes
                        .lock()
                        .unwrap()
                        .insert(seq, prost::Message::encoded_len(&msg) as u64);
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
            // Dropping `tx` ends the stream.
        });
        (sending, task)
    };
    let mut warm = Some(warm);
    while let Ok(Some(msg)) = inbound.message().await {
        if let Some(collector_message::Body::Ack(v1::Ack { seq })) = msg.body {
            let size = sizes.lock().unwrap().remove(&seq).unwrap_or(0);
            acked.fetch_add(1, Ordering::SeqCst);
            bytes.fetch_add(size, Ordering::SeqCst);
            if let Some(w) = warm.take() {
                let _ = w.send(()).await;
            }
        }
        if !sending.load(Ordering::SeqCst) {
            break;
        }
    }
    sender.0.store(false, Ordering::SeqCst);
    sender.1.abort();
    drop(inbound);
}

type Lat = (f64, f64, usize);

struct Queried {
    /// (no token, read token).
    list_hosts: (Lat, Lat),
    find_package: (Lat, Lat),
}

fn percentiles(mut v: Vec<f64>) -> Lat {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), v.len())
}

/// Two plaintext collectors with one host's snapshot each, one checking
/// tokens; the same queries alternate between them.
async fn query_phase(inv: &patchgap_agent::model::Inventory, phase: Duration) -> Queried {
    let (off, on) = tokio::task::spawn_blocking(|| {
        (Collector::start(None, false), Collector::start(None, true))
    })
    .await
    .unwrap();
    let now = inv.scanned_at_ms;
    for c in [&off, &on] {
        let session = c
            .store
            .hello(
                &v1::Hello {
                    host: Some(patchgap_agent::wire::host(&inv.host)),
                    agent_version: "bench".into(),
                    capabilities: Some(Default::default()),
                    session_id: "bench".into(),
                },
                now,
            )
            .unwrap();
        for (i, part) in patchgap_agent::wire::snapshot_parts(inv, "s1", 4 << 20)
            .into_iter()
            .enumerate()
        {
            let msg = v1::AgentMessage {
                seq: i as u64 + 1,
                body: Some(Body::Snapshot(part)),
            };
            c.store.apply(&session, &msg, now).unwrap();
        }
    }
    let (token, _) = patchgap_collector::auth::issue_local(
        on.data.path(),
        on.store.as_ref(),
        "bench",
        &[patchgap_collector::auth::Scope::Read],
        None,
        Default::default(),
    )
    .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let connect = async |addr: std::net::SocketAddr| {
        endpoint(&format!("http://{addr}"), &ClientTls::default())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut plain = v1::query_client::QueryClient::new(connect(off.addr).await)
        .max_decoding_message_size(1 << 30);
    let mut tokened = v1::query_client::QueryClient::with_interceptor(
        connect(on.addr).await,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    )
    .max_decoding_message_size(1 << 30);
    let find = v1::FindPackageRequest {
        name: "libc6".into(),
        ..Default::default()
    };
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    // Half the phase each: ListHosts (cheap, so the token check shows),
    // then FindPackage; each round queries both collectors in turn.
    let mut lat: [Vec<f64>; 4] = Default::default();
    let until = Instant::now() + phase / 2;
    while Instant::now() < until {
        let t = Instant::now();
        let r = plain.list_hosts(v1::ListHostsRequest {}).await.unwrap();
        lat[0].push(ms(t));
        assert_eq!(r.into_inner().hosts.len(), 1);
        let t = Instant::now();
        let r = tokened.list_hosts(v1::ListHostsRequest {}).await.unwrap();
        lat[1].push(ms(t));
        assert_eq!(r.into_inner().hosts.len(), 1);
    }
    let until = Instant::now() + phase / 2;
    while Instant::now() < until {
        let t = Instant::now();
        let r = plain.find_package(find.clone()).await.unwrap();
        lat[2].push(ms(t));
        assert!(!r.into_inner().matches.is_empty());
        let t = Instant::now();
        let r = tokened.find_package(find.clone()).await.unwrap();
        lat[3].push(ms(t));
        assert!(!r.into_inner().matches.is_empty());
    }
    drop((plain, tokened));
    tokio::task::spawn_blocking(move || drop((off, on)))
        .await
        .unwrap();
    let [a, b, c, d] = lat;
    Queried {
        list_hosts: (percentiles(a), percentiles(b)),
        find_package: (percentiles(c), percentiles(d)),
    }
}
