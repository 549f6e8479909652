//! Paged answers against a real collector (gRPC, SQLite on disk): pages
//! walked by their tokens are the unpaged answer, and under concurrent
//! ingest no process is listed twice and none present throughout is
//! missed; and an agent's message is acked while large queries keep every
//! store reader busy.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use patchgap_collector::{CollectorConfig, SqliteStore, Store, store::Session};
use patchgap_proto::v1::{
    self, agent_message::Body, collector_message, ingest_client::IngestClient,
    query_client::QueryClient,
};
use tonic::transport::Channel;

const T0: i64 = 1_700_000_000_000;

fn package(eco: &str, name: &str, version: &str) -> v1::Package {
    v1::Package {
        ecosystem: eco.into(),
        name: name.into(),
        version: version.into(),
        purl: format!("pkg:{eco}/{name}@{version}"),
        ..Default::default()
    }
}

/// A process mapping libc6 and, for some, a Python package with an
/// advisory.
fn process(pid: u32, flavour: u32) -> v1::Process {
    let mut artifacts = vec![
        v1::Artifact {
            path: b"/usr/lib/x86_64-linux-gnu/libc.so.6".to_vec(),
            kind: v1::ArtifactKind::Mapped as i32,
            package: Some(package("deb", "libc6", "2.36-9")),
            ..Default::default()
        },
        v1::Artifact {
            path: format!("/usr/bin/tool{}", flavour % 5).into_bytes(),
            kind: v1::ArtifactKind::Exe as i32,
            ..Default::default()
        },
    ];
    if flavour.is_multiple_of(3) {
        artifacts.push(v1::Artifact {
            path: b"/venv/lib/beta/__init__.py".to_vec(),
            kind: v1::ArtifactKind::Opened as i32,
            package: Some(package("pypi", "beta", "1.0")),
            ..Default::default()
        });
    }
    v1::Process {
        key: Some(v1::ProcessKey {
            pid,
            start_ticks: u64::from(pid) * 3 + 1,
        }),
        cmdline: format!("tool --n {pid}"),
        artifacts,
        ..Default::default()
    }
}

fn hello(host: &str) -> v1::Hello {
    v1::Hello {
        host: Some(v1::HostIdentity {
            host_id: format!("id-{host}"),
            hostname: host.into(),
            boot_id: "boot".into(),
            ..Default::default()
        }),
        agent_version: "test".into(),
        capabilities: Some(Default::default()),
        session_id: format!("s-{host}"),
    }
}

/// Stores a full snapshot of `pids` for `host` in parts of 500.
fn snapshot(store: &dyn Store, session: &Session, seq: &mut u64, pids: &[u32]) {
    let chunks: Vec<&[u32]> = pids.chunks(500).collect();
    let id = format!("snap-{seq}");
    for (i, chunk) in chunks.iter().enumerate() {
        *seq += 1;
        let msg = v1::AgentMessage {
            seq: *seq,
            body: Some(Body::Snapshot(v1::Snapshot {
                snapshot_id: id.clone(),
                part: i as u32,
                last: i + 1 == chunks.len(),
                scanned_at_ms: T0,
                processes: chunk.iter().map(|&p| process(p, p)).collect(),
                ..Default::default()
            })),
        };
        store.apply(session, &msg, T0).expect("apply");
    }
}

struct Collector {
    addr: std::net::SocketAddr,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Collector {
    /// A collector over a store already holding `hosts` × `per_host`
    /// processes (pids from 1000), with an advisory on beta 1.0.
    async fn start(hosts: &[&str], per_host: u32) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        for h in hosts {
            let session = store.hello(&hello(h), T0).unwrap();
            let pids: Vec<u32> = (1000..1000 + per_host).collect();
            snapshot(store.as_ref(), &session, &mut 0, &pids);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(patchgap_collector::serve(
            CollectorConfig {
                data_dir: dir.path().to_path_buf(),
                ..Default::default()
            },
            store.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let c = Collector {
            addr,
            store,
            _dir: dir,
            stop: Some(stop),
            server,
        };
        let doc = serde_json::json!({
            "id": "PYSEC-0000-9",
            "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "beta"}, "versions": ["1.0"]}],
        });
        let imported = c
            .client()
            .await
            .import_advisories(v1::ImportAdvisoriesRequest {
                files: vec![v1::AdvisoryFile {
                    name: "PYSEC-0000-9.json".into(),
                    data: doc.to_string().into_bytes(),
                }],
                ..Default::default()
            })
            .await
            .expect("import")
            .into_inner();
        assert!(imported.matches > 0, "the advisory matches beta 1.0");
        c
    }

    async fn client(&self) -> QueryClient<Channel> {
        QueryClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
            .max_decoding_message_size(256 << 20)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.server.await;
    }
}

/// (host, pid) of every item, page by page, following the tokens.
async fn ps_pages(client: &mut QueryClient<Channel>, size: i32) -> Vec<Vec<(String, u32)>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let r = client
            .list_processes(v1::ListProcessesRequest {
                page_size: size,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("ps page")
            .into_inner();
        assert_eq!(
            r.coverage.is_some(),
            pages.is_empty(),
            "coverage on the first page only"
        );
        assert!(r.processes.len() <= size as usize);
        pages.push(
            r.processes
                .iter()
                .map(|p| (p.host.clone(), p.key.unwrap().pid))
                .collect(),
        );
        if r.next_page_token.is_empty() {
            return pages;
        }
        token = r.next_page_token;
    }
}

async fn query_pages(client: &mut QueryClient<Channel>, size: i32) -> (Vec<v1::Match>, usize) {
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = client
            .find_package(v1::FindPackageRequest {
                name: "libc6".into(),
                page_size: size,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("query page")
            .into_inner();
        pages += 1;
        all.extend(r.matches);
        if r.next_page_token.is_empty() {
            return (all, pages);
        }
        token = r.next_page_token;
    }
}

async fn findings_pages(client: &mut QueryClient<Channel>, size: i32) -> Vec<v1::Match> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let r = client
            .list_findings(v1::ListFindingsRequest {
                page_size: size,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("findings page")
            .into_inner();
        all.extend(r.findings);
        if r.next_page_token.is_empty() {
            return all;
        }
        token = r.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_the_whole_answer() {
    let c = Collector::start(&["alpha", "beta", "gamma"], 700).await;
    let mut client = c.client().await;
    let whole: Vec<(String, u32)> = ps_pages(&mut client, 10_000).await.concat();
    assert_eq!(whole.len(), 2100);
    let mut sorted = whole.clone();
    sorted.sort();
    assert_eq!(whole, sorted, "by host, then pid");
    for size in [1, 97, 700, 2099] {
        if size == 1 {
            // 2,100 round trips in a debug build: check the first hundred.
            let mut token = String::new();
            for expected in &whole[..100] {
                let r = client
                    .list_processes(v1::ListProcessesRequest {
                        page_size: 1,
                        page_token: token,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.processes[0].key.unwrap().pid, expected.1);
                token = r.next_page_token;
            }
            continue;
        }
        let pages = ps_pages(&mut client, size).await;
        assert_eq!(pages.concat(), whole, "pages of {size}");
    }

    let (unpaged, pages) = query_pages(&mut client, 10_000).await;
    assert_eq!((unpaged.len(), pages), (2100, 1), "libc6 in every process");
    let (paged, pages) = query_pages(&mut client, 128).await;
    assert!(pages >= 17, "{pages} pages");
    assert_eq!(paged, unpaged, "query pages");

    let unpaged = findings_pages(&mut client, 10_000).await;
    assert_eq!(
        unpaged.len(),
        3 * (1000u32..1700).filter(|p| p.is_multiple_of(3)).count(),
        "beta in every third process"
    );
    assert!(unpaged.iter().all(|f| f.advisory == "PYSEC-0000-9"));
    assert_eq!(
        findings_pages(&mut client, 50).await,
        unpaged,
        "findings pages"
    );

    // A token is for its own request.
    let r = client
        .list_processes(v1::ListProcessesRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_processes(v1::ListProcessesRequest {
            host: "alpha".into(),
            page_size: 5,
            page_token: r.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    c.stop().await;
}

/// While pages are read, another session of a host adds and removes
/// processes and rewrites the stable ones: every stable process is listed
/// exactly once, and no process twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_hold_under_concurrent_ingest() {
    let c = Collector::start(&["alpha", "beta"], 600).await;
    let stable: BTreeSet<(String, u32)> = ["alpha", "beta"]
        .iter()
        .flat_map(|h| (1000..1600).map(move |p| (h.to_string(), p)))
        .collect();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let store = c.store.clone();
        let writing = writing.clone();
        std::thread::spawn(move || {
            let session = store.hello(&hello("beta"), T0).unwrap();
            let mut seq = 0;
            let mut round = 0u32;
            while writing.load(Ordering::Relaxed) {
                // The stable pids, plus a moving window of short-lived
                // ones below and above them.
                let mut pids: Vec<u32> = (1000..1600).collect();
                pids.extend((round % 900)..(round % 900) + 60);
                pids.extend((2000 + round % 900)..(2000 + round % 900) + 60);
                snapshot(store.as_ref(), &session, &mut seq, &pids);
                round += 37;
            }
            round
        })
    };
    let mut client = c.client().await;
    for size in [13, 101] {
        let listed: Vec<(String, u32)> = ps_pages(&mut client, size).await.concat();
        let mut counts: BTreeMap<&(String, u32), usize> = BTreeMap::new();
        for p in &listed {
            *counts.entry(p).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "listed twice (pages of {size}): {twice:?}"
        );
        let missing: Vec<_> = stable.iter().filter(|p| !counts.contains_key(p)).collect();
        assert!(missing.is_empty(), "missed (pages of {size}): {missing:?}");

        let (matches, _) = query_pages(&mut client, size).await;
        let keys: Vec<(String, u32)> = matches
            .iter()
            .map(|m| (m.host.clone(), m.key.unwrap().pid))
            .collect();
        let unique: BTreeSet<_> = keys.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "a process twice in query pages of {size}"
        );
        assert!(
            stable.is_subset(&unique),
            "query pages of {size} missed a stable process"
        );
    }
    writing.store(false, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 37, "the writer wrote while pages were read");
    c.stop().await;
}

/// An agent's messages are acked while large pages of ps, query and
/// findings keep every store reader busy: reads queue among themselves,
/// never in front of ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_acks_while_large_queries_run() {
    let c = Collector::start(&["alpha", "beta"], 5000).await;
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut queries = Vec::new();
    for i in 0..12 {
        let mut client = c.client().await;
        let in_flight = in_flight.clone();
        queries.push(tokio::spawn(async move {
            in_flight.fetch_add(1, Ordering::SeqCst);
            match i % 3 {
                0 => {
                    let _ = ps_pages(&mut client, 10_000).await;
                }
                1 => {
                    let _ = query_pages(&mut client, 10_000).await;
                }
                _ => {
                    let _ = findings_pages(&mut client, 10_000).await;
                }
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Instant::now()
        }));
    }
    while in_flight.load(Ordering::SeqCst) < 12 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // An agent's stream: Hello, then heartbeats, each acked after commit.
    let channel = Channel::from_shared(format!("http://{}", c.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(hello("agent-1"))),
    })
    .await
    .unwrap();
    let mut inbound = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let welcome = inbound.message().await.unwrap().unwrap();
    assert!(matches!(
        welcome.body,
        Some(collector_message::Body::Welcome(_))
    ));
    // Then the host's desired containments: none.
    let set = inbound.message().await.unwrap().unwrap();
    match set.body {
        Some(collector_message::Body::Command(v1::Command {
            body: Some(v1::command::Body::Containments(c)),
        })) => assert!(c.items.is_empty(), "{c:?}"),
        other => panic!("no containment set after the Welcome: {other:?}"),
    }
    let mut acked_at = Vec::new();
    for seq in 1..=3 {
        tx.send(v1::AgentMessage {
            seq,
            body: Some(Body::Heartbeat(v1::Heartbeat::default())),
        })
        .await
        .unwrap();
        let ack = inbound.message().await.unwrap().unwrap();
        assert_eq!(
            ack.body,
            Some(collector_message::Body::Ack(v1::Ack { seq })),
            "acked in order"
        );
        acked_at.push(Instant::now());
    }
    let last_ack = *acked_at.last().unwrap();
    let mut finished = Vec::new();
    for q in queries {
        finished.push(q.await.unwrap());
    }
    let still_running = finished.iter().filter(|t| **t > last_ack).count();
    assert!(
        still_running > 0,
        "every ack came after the queries ended: they proved nothing"
    );
    drop(tx);
    c.stop().await;
}
