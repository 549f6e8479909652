//! A collector nobody can stall (issue 14): after a 1,000,000-process
//! snapshot and 30,000 advisories, `ps`, `query libc6` and `findings` are
//! read page by page over gRPC (as the CLI does) while an agent's stream
//! keeps sending deltas. Printed: each answer's pages, items, time and
//! slowest page; the process's resident memory before and at its peak
//! during each answer (collector and client share this process: the
//! client holds one page); and the agent's ack latency throughout.
//!
//! The processes are this host's real inventory (a scan) repeated under
//! other pids; one in ten also has one of 50 PyPI packages that each have
//! an advisory (the other 29,950 advisories name packages no one has).
//!
//! usage: cargo bench -p patchgap-tests --bench stalls
//!   (PATCHGAP_BENCH_PROCESSES, default 1000000)

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use patchgap_collector::{CollectorConfig, SqliteStore, Store};
use patchgap_proto::v1::{
    self, agent_message::Body, ingest_client::IngestClient, query_client::QueryClient,
};
use tonic::transport::Channel;

const ADVISORIES: usize = 30_000;
const VULNERABLE: usize = 50;

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

fn pypi(name: &str) -> v1::Package {
    v1::Package {
        ecosystem: "pypi".into(),
        name: name.into(),
        version: "1.0".into(),
        purl: format!("pkg:pypi/{name}@1.0"),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    let total: u32 = std::env::var("PATCHGAP_BENCH_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // The real processes, as the agent sends them.
    let inv = patchgap_agent::Scanner::new(Default::default()).scan();
    let parts = patchgap_agent::wire::snapshot_parts(&inv, "real", 64 << 20);
    let real: Vec<v1::Process> = parts.iter().flat_map(|p| p.processes.clone()).collect();
    let workloads: Vec<v1::Workload> = parts.iter().flat_map(|p| p.workloads.clone()).collect();
    println!(
        "stalls bench: {total} processes ({} real, repeated), {ADVISORIES} advisories",
        real.len()
    );

    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path()).unwrap());
    let host = patchgap_agent::wire::host(&inv.host);
    let session = store
        .hello(
            &v1::Hello {
                host: Some(host.clone()),
                agent_version: "bench".into(),
                capabilities: Some(Default::default()),
                session_id: "bench".into(),
            },
            inv.scanned_at_ms,
        )
        .unwrap();
    let started = Instant::now();
    const PART: u32 = 5000;
    let parts_n = total.div_ceil(PART);
    for part in 0..parts_n {
        let processes = (part * PART..((part + 1) * PART).min(total))
            .map(|i| {
                let mut p = real[i as usize % real.len()].clone();
                p.key = Some(v1::ProcessKey {
                    pid: 10_000_000 + i,
                    start_ticks: u64::from(i),
                });
                if i.is_multiple_of(10) {
                    p.artifacts.push(v1::Artifact {
                        path: format!("/venv/lib/bench_{}/__init__.py", (i / 10) % 50).into_bytes(),
                        kind: v1::ArtifactKind::Opened as i32,
                        package: Some(pypi(&format!("bench-lib-{}", (i / 10) % 50))),
                        ..Default::default()
                    });
                }
                p
            })
            .collect();
        let msg = v1::AgentMessage {
            seq: u64::from(part) + 1,
            body: Some(Body::Snapshot(v1::Snapshot {
                snapshot_id: "big".into(),
                part,
                last: part + 1 == parts_n,
                scanned_at_ms: inv.scanned_at_ms,
                workloads: if part == 0 {
                    workloads.clone()
                } else {
                    Vec::new()
                },
                processes,
                ..Default::default()
            })),
        };
        store.apply(&session, &msg, inv.scanned_at_ms).unwrap();
    }
    println!(
        "snapshot stored: {:.1} s; rss {:.0} MB",
        started.elapsed().as_secs_f64(),
        rss_mb()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patchgap_collector::serve(
        CollectorConfig {
            data_dir: data.path().to_path_buf(),
            ..Default::default()
        },
        store.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);

    // 30,000 advisories, imported in batches of 5,000 as the CLI does.
    let started = Instant::now();
    let mut matches = 0;
    for batch in (0..ADVISORIES).collect::<Vec<_>>().chunks(5000) {
        let files = batch
            .iter()
            .map(|&i| {
                let name = if i < VULNERABLE {
                    format!("bench-lib-{i}")
                } else {
                    format!("absent-{i}")
                };
                let doc = serde_json::json!({
                    "id": format!("PYSEC-9999-{i}"),
                    "modified": "2024-01-01T00:00:00Z",
                    "summary": "bench",
                    "affected": [{"package": {"ecosystem": "PyPI", "name": name}, "versions": ["1.0"]}],
                });
                v1::AdvisoryFile {
                    name: format!("PYSEC-9999-{i}.json"),
                    data: doc.to_string().into_bytes(),
                }
            })
            .collect();
        matches += client
            .import_advisories(v1::ImportAdvisoriesRequest {
                files,
                source: "bench".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .matches;
    }
    println!(
        "advisories imported: {:.1} s, {matches} matches; rss {:.0} MB",
        started.elapsed().as_secs_f64(),
        rss_mb()
    );

    // Resident memory, sampled.
    let peak = Arc::new(AtomicU64::new(0));
    {
        let peak = peak.clone();
        std::thread::spawn(move || {
            loop {
                peak.fetch_max((rss_mb() * 10.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    // An agent: a delta every 200 ms, each acked after its commit.
    let running = Arc::new(AtomicBool::new(true));
    let agent = tokio::spawn(agent(format!("http://{addr}"), running.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    for what in ["ps", "query libc6", "findings"] {
        let before = rss_mb();
        peak.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let (mut pages, mut items, mut slowest) = (0, 0usize, Duration::ZERO);
        let mut token = String::new();
        loop {
            let t = Instant::now();
            let next = match what {
                "ps" => {
                    let r = client
                        .list_processes(v1::ListProcessesRequest {
                            page_token: token,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    items += r.processes.len();
                    r.next_page_token
                }
                "query libc6" => {
                    let r = client
                        .find_package(v1::FindPackageRequest {
                            name: "libc6".into(),
                            page_token: token,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    items += r.matches.len();
                    r.next_page_token
                }
                _ => {
                    let r = client
                        .list_findings(v1::ListFindingsRequest {
                            page_token: token,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    items += r.findings.len();
                    r.next_page_token
                }
            };
            slowest = slowest.max(t.elapsed());
            pages += 1;
            if next.is_empty() {
                break;
            }
            token = next;
        }
        println!(
            "{what:>12}: {items} items in {pages} pages, {:.1} s, slowest page {:.0} ms; rss before {before:.0} MB, peak {:.0} MB",
            started.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1000.0,
            peak.load(Ordering::Relaxed) as f64 / 10.0
        );
    }
    running.store(false, Ordering::Relaxed);
    let mut lat = agent.await.unwrap();
    lat.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "agent acks during the answers: {} deltas, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        at(0.5),
        at(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    let _ = stop.send(());
    let _ = server.await;
}

/// Sends a delta every 200 ms until told to stop; the ack latency of each
/// (ms).
async fn agent(url: String, running: Arc<AtomicBool>) -> Vec<f64> {
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "bench-agent".into(),
                hostname: "bench-agent".into(),
                boot_id: "b".into(),
                ..Default::default()
            }),
            agent_version: "bench".into(),
            capabilities: Some(Default::default()),
            session_id: "agent".into(),
        })),
    })
    .await
    .unwrap();
    let mut inbound = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let _welcome = inbound.message().await.unwrap();
    // The host's desired containments come right after the Welcome.
    let _set = inbound.message().await.unwrap();
    let mut lat = Vec::new();
    let mut seq = 0;
    while running.load(Ordering::Relaxed) {
        seq += 1;
        let t = Instant::now();
        tx.send(v1::AgentMessage {
            seq,
            body: Some(Body::Delta(v1::Delta {
                scanned_at_ms: patchgap_proto::time::now_ms(),
                upserts: vec![v1::Process {
                    key: Some(v1::ProcessKey {
                        pid: 100 + seq as u32 % 50,
                        start_ticks: seq,
                    }),
                    cmdline: format!("short-lived {seq}"),
                    artifacts: vec![v1::Artifact {
                        path: b"/usr/bin/true".to_vec(),
                        kind: v1::ArtifactKind::Exe as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let ack = inbound.message().await.unwrap().unwrap();
        assert!(matches!(
            ack.body,
            Some(v1::collector_message::Body::Ack(_))
        ));
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lat
}
