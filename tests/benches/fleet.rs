//! The fleet benchmark (issue 19's acceptance figures):
//! `cargo bench -p patchgap-tests --bench fleet`.
//!
//! The real binaries end to end: a release `patchgap-collector` on a real
//! PostgreSQL 15 (the store's own test harness: initdb in a temporary
//! directory, a free loopback port), then on its default SQLite store;
//! `fleet-sim` replaying this host's recorded inventory under
//! `PATCHGAP_BENCH_HOSTS` identities (default 10,000), each on its own
//! ingest stream. Per backend it reports, with each goal and met / NOT met:
//!
//! - the time until every host's first snapshot is acked (goal < 60 s on
//!   PostgreSQL), as fleet-sim measures it from its start;
//! - churn, one delta per host every 30 s and a heartbeat every 10 s (the
//!   agent's default), for `PATCHGAP_BENCH_CHURN_SECS`
//!   (default 90): the acks per second against the rate sent, and the
//!   ingest lag (ack latency p50/p99/max, fleet-sim's report every 5 s);
//! - `FindPackage NAME@RANGE` matching at most 1,000 processes, p50/p99
//!   over `PATCHGAP_BENCH_RUNS` (default 100) whole answers (goal p99 <
//!   50 ms), and the real `patchgap query` CLI's wall time for the same;
//! - a query matching every process on every host (the most-mapped deb
//!   package, libc6 here), paged as the CLI pages it: the time to the
//!   first page and to the last;
//! - findings for one advisory (an OSV record built here for a Debian
//!   source package on every host): the first page p50/p99 over the runs
//!   (goal p99 < 200 ms), and the whole answer once;
//! - the advisory re-imported with a newer `modified`: the wall time until
//!   the import returns, which is after it is re-matched fleet-wide (goal
//!   < 1 s), and the collector's own time to scope.
//!
//! The churn keeps going while the queries are measured: they answer under
//! ingest, as they would in an incident.
//!
//! The rare package: fleet-sim gives host i inventory i mod k; the bench
//! writes k = ceil(hosts / 1,000) inventories, the last of which has one
//! process mapping a library of the package `patchgap-bench-rare` 1.0-1,
//! so the query matches about hosts / k <= 1,000 processes at any size.
//!
//! `PATCHGAP_BENCH_SQLITE_HOSTS` (default the same) sizes the SQLite phase
//! (0 skips it); `PATCHGAP_BENCH_INGEST_TIMEOUT_SECS` (default 900) bounds
//! the wait for the first snapshots: past it the figure is NOT met with the
//! count acked so far, and the queries are measured on what is stored.
//! `PATCHGAP_BENCH_BACKENDS=postgres` (or `sqlite`) runs one phase;
//! `PATCHGAP_BENCH_BINS=DIR` takes the collector and CLI from DIR instead
//! of building them.
//! Needs root (the recording scans every process) and PostgreSQL 15
//! (tests/deps.sh); without it the PostgreSQL phase is skipped with a line.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use patchgap_proto::v1::{self, query_client::QueryClient};
use patchgap_tests::{built_bins, free_port, postgres::Cluster};
use prost::Message;
use tonic::transport::Channel;

const RARE: &str = "patchgap-bench-rare";
const ADVISORY: &str = "PATCHGAP-BENCH-2026-0001";
const DELTA_EVERY_SECS: u64 = 30;
/// A heartbeat per host, as the agent sends by default.
const HEARTBEAT_EVERY_SECS: u64 = 10;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child killed and reaped however the bench ends.
struct Bin(Child);

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hosts = env_or("PATCHGAP_BENCH_HOSTS", 10_000);
    let sqlite_hosts = env_or("PATCHGAP_BENCH_SQLITE_HOSTS", hosts);
    let backends =
        std::env::var("PATCHGAP_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    // Building the three binaries together unifies other features than
    // the bench's own build: on a busy machine that is a second release
    // build. PATCHGAP_BENCH_BINS names a directory already holding fresh
    // `patchgap` and `patchgap-collector` (target/release after `cargo
    // build --release -p patchgap-collector -p cli`).
    let bins = std::env::var_os("PATCHGAP_BENCH_BINS").map_or_else(built_bins, PathBuf::from);
    let work = tempfile::tempdir().unwrap();
    let fleet = Fleet::record(work.path(), hosts.max(sqlite_hosts));
    println!(
        "fleet bench: {} processes per host; rare package on 1 host in {}; advisory on {} ({} processes per host); million query {}",
        fleet.processes_per_host,
        fleet.inventories.len(),
        fleet.advisory_source,
        fleet.advisory_processes,
        fleet.common
    );
    let mut figures = Vec::new();
    if backends.contains("postgres") {
        match Cluster::shared() {
            Some(cluster) => {
                let db = cluster.database();
                let f = phase(&bins, &fleet, hosts, Some(db.url()), work.path()).await;
                figures.push(("postgres", hosts, f));
            }
            None => println!("fleet bench: PostgreSQL 15 is not installed; its phase skipped"),
        }
    }
    if backends.contains("sqlite") && sqlite_hosts > 0 {
        let f = phase(&bins, &fleet, sqlite_hosts, None, work.path()).await;
        figures.push(("sqlite", sqlite_hosts, f));
    }
    println!(
        "\nfleet bench summary ({} processes per host):",
        fleet.processes_per_host
    );
    for (backend, n, f) in &figures {
        f.print(backend, *n);
    }
}

/// The inventories fleet-sim replays, and what the queries ask for.
struct Fleet {
    inventories: Vec<PathBuf>,
    processes_per_host: usize,
    /// The deb package mapped by the most processes: the million query.
    common: String,
    /// A Debian source package on every host, mapped by the fewest of its
    /// processes: the advisory's.
    advisory_source: String,
    advisory_processes: usize,
}

impl Fleet {
    /// Records this host's inventory with fleet-sim and writes the k
    /// inventories (k - 1 copies, then the one with the rare package).
    fn record(dir: &Path, hosts: usize) -> Fleet {
        let recording = dir.join("host.pb");
        let out = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
            .arg("--record")
            .arg(&recording)
            .output()
            .expect("run fleet-sim --record");
        assert!(
            out.status.success(),
            "fleet-sim --record: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&recording).unwrap();
        let mut buf = bytes.as_slice();
        let host = v1::HostIdentity::decode_length_delimited(&mut buf).unwrap();
        let mut parts = Vec::new();
        while !buf.is_empty() {
            let mut part = v1::Snapshot::decode_length_delimited(&mut buf).unwrap();
            // Inline, as the code below reads and edits them (fleet-sim
            // puts them back in their tables when it loads them).
            patchgap_proto::artifacts::inline(&mut part.artifacts, &mut part.processes);
            parts.push(part);
        }
        let processes: Vec<&v1::Process> = parts.iter().flat_map(|p| &p.processes).collect();
        // Per deb package and per Debian source: how many processes map it.
        let mut by_name: std::collections::HashMap<String, usize> = Default::default();
        let mut by_source: std::collections::HashMap<String, usize> = Default::default();
        for p in &processes {
            let mut names = std::collections::BTreeSet::new();
            let mut sources = std::collections::BTreeSet::new();
            for a in &p.artifacts {
                if let Some(pkg) = &a.package
                    && pkg.ecosystem == "deb"
                    && pkg.purl.starts_with("pkg:deb/debian/")
                {
                    names.insert(pkg.name.clone());
                    sources.insert(if pkg.source.is_empty() {
                        pkg.name.clone()
                    } else {
                        pkg.source.clone()
                    });
                }
            }
            for n in names {
                *by_name.entry(n).or_default() += 1;
            }
            for s in sources {
                *by_source.entry(s).or_default() += 1;
            }
        }
        let common = by_name
            .iter()
            .max_by_key(|(n, c)| (**c, std::cmp::Reverse((*n).clone())))
            .map(|(n, _)| n.clone())
            .expect("a deb package in this host's inventory");
        let (advisory_source, advisory_processes) = by_source
            .iter()
            .min_by_key(|(s, c)| (**c, (*s).clone()))
            .map(|(s, c)| (s.clone(), *c))
            .unwrap();

        // The rare variant: one process also maps a library of RARE.
        let mut rare_parts = parts.clone();
        let carrier = rare_parts
            .iter_mut()
            .flat_map(|p| p.processes.iter_mut())
            .find_map(|p| {
                let a = p
                    .artifacts
                    .iter()
                    .find(|a| {
                        a.package
                            .as_ref()
                            .is_some_and(|pkg| pkg.purl.starts_with("pkg:deb/debian/"))
                    })?
                    .clone();
                Some((p, a))
            });
        let (process, mut artifact) = carrier.expect("a process mapping a deb package");
        let pkg = artifact.package.as_mut().unwrap();
        let query = pkg.purl.split_once('?').map_or("", |(_, q)| q).to_string();
        pkg.name = RARE.into();
        pkg.source = RARE.into();
        pkg.version = "1.0-1".into();
        pkg.purl = format!("pkg:deb/debian/{RARE}@1.0-1?{query}");
        artifact.path = format!("/usr/lib/x86_64-linux-gnu/lib{RARE}.so.1").into_bytes();
        artifact.inode = 0x7061_7463_6867;
        artifact.content = None;
        process.artifacts.push(artifact);

        let k = hosts.div_ceil(1000).max(1);
        let write = |path: &Path, parts: &[v1::Snapshot]| {
            let mut out = Vec::new();
            host.encode_length_delimited(&mut out).unwrap();
            for p in parts {
                p.encode_length_delimited(&mut out).unwrap();
            }
            std::fs::write(path, out).unwrap();
        };
        let common_path = dir.join("common.pb");
        write(&common_path, &parts);
        let rare_path = dir.join("rare.pb");
        write(&rare_path, &rare_parts);
        let mut inventories = vec![common_path; k - 1];
        inventories.push(rare_path);
        Fleet {
            inventories,
            processes_per_host: processes.len(),
            common,
            advisory_source,
            advisory_processes,
        }
    }

    /// The OSV record: every version of the source package affected.
    fn advisory(&self, modified: &str) -> v1::AdvisoryFile {
        let doc = serde_json::json!({
            "schema_version": "1.6.0",
            "id": ADVISORY,
            "modified": modified,
            "published": "2026-12-01T00:00:00Z",
            "summary": "fleet bench: every version affected",
            "affected": [{
                "package": {"ecosystem": "Debian", "name": self.advisory_source},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999:0"}]}],
            }],
        });
        v1::AdvisoryFile {
            name: format!("{ADVISORY}.json"),
            data: doc.to_string().into_bytes(),
        }
    }
}

/// What fleet-sim has printed so far.
#[derive(Default)]
struct SimState {
    /// fleet-sim's own seconds to every first snapshot acked.
    all_acked_s: Option<f64>,
    /// (when read, first-acked, acks, ack ms p50, p99, max) per report.
    reports: Vec<(Instant, usize, u64, f64, f64, f64)>,
    ended: bool,
}

/// Reads fleet-sim's stdout on a thread of its own, echoing it.
fn watch(child: &mut Child, label: &'static str) -> Arc<Mutex<SimState>> {
    let state = Arc::new(Mutex::new(SimState::default()));
    let stdout = child.stdout.take().unwrap();
    let s = state.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut st = s.lock().unwrap();
            if line.contains("every host's first snapshot acked") {
                println!("[{label}] {line}");
                st.all_acked_s = line
                    .rsplit_once(" in ")
                    .and_then(|(_, t)| t.trim_end_matches(" s").parse().ok());
            } else if line.starts_with("fleet-sim: t=") {
                let field = |name: &str| -> Option<f64> {
                    let at = line.find(name)? + name.len();
                    line[at..].split_whitespace().next()?.parse().ok()
                };
                st.reports.push((
                    Instant::now(),
                    field(" first-acked ").unwrap_or(0.0) as usize,
                    field(" acks ").unwrap_or(0.0) as u64,
                    field(" p50 ").unwrap_or(0.0),
                    field(" p99 ").unwrap_or(0.0),
                    field(" max ").unwrap_or(0.0),
                ));
                // Every 30 s is enough to follow it.
                if st.reports.len() % 6 == 0 {
                    println!("[{label}] {line}");
                }
            } else {
                println!("[{label}] {line}");
            }
        }
        s.lock().unwrap().ended = true;
    });
    state
}

#[derive(Default)]
struct Figures {
    ingest_s: Option<f64>,
    first_acked: usize,
    churn_window_s: f64,
    acks_per_s: f64,
    sent_per_s: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    small_matches: usize,
    small: Vec<Duration>,
    small_cli: Vec<Duration>,
    million_matches: usize,
    million_pages: usize,
    million_first: Duration,
    million_last: Duration,
    import: Duration,
    import_matches: u32,
    findings_first: Vec<Duration>,
    findings_matches: usize,
    findings_pages: usize,
    findings_all: Duration,
    rematch: Vec<Duration>,
    rematch_collector_ms: Vec<i64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 in ms (nearest rank).
fn p50_p99(v: &[Duration]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_unstable();
    let at = |q: f64| {
        v.get((((v.len() as f64) * q).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| ms(*d))
    };
    (at(0.5), at(0.99))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

impl Figures {
    fn print(&self, backend: &str, hosts: usize) {
        println!("-- {backend}, {hosts} hosts");
        match self.ingest_s {
            Some(s) => println!(
                "  first snapshots of every host acked: {s:.1} s (goal < 60 s): {}",
                verdict(s < 60.0)
            ),
            None => println!(
                "  first snapshots: only {} of {hosts} hosts acked within the timeout (goal < 60 s): NOT met",
                self.first_acked
            ),
        }
        println!(
            "  churn over {:.0} s: {:.1} acks/s for {:.1} messages/s sent (per host a delta every {DELTA_EVERY_SECS} s and a heartbeat every {HEARTBEAT_EVERY_SECS} s): {}; ingest lag (ack latency) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.churn_window_s,
            self.acks_per_s,
            self.sent_per_s,
            verdict(self.acks_per_s >= 0.95 * self.sent_per_s),
            self.lag_p50_ms,
            self.lag_p99_ms,
            self.lag_max_ms
        );
        let (p50, p99) = p50_p99(&self.small);
        let (c50, c99) = p50_p99(&self.small_cli);
        println!(
            "  query {RARE}@<2 ({} matches, goal <= 1,000): p50 {p50:.1} ms, p99 {p99:.1} ms over {} (goal p99 < 50 ms): {}; the patchgap CLI, whole process: p50 {c50:.1} ms, p99 {c99:.1} ms over {}",
            self.small_matches,
            self.small.len(),
            verdict(p99 < 50.0 && self.small_matches <= 1000),
            self.small_cli.len()
        );
        println!(
            "  query matching every process: {} matches in {} pages, first page {:.1} ms, last page at {:.2} s",
            self.million_matches,
            self.million_pages,
            ms(self.million_first),
            self.million_last.as_secs_f64()
        );
        let (f50, f99) = p50_p99(&self.findings_first);
        println!(
            "  advisory imported and matched in {:.0} ms ({} package matches); its findings, first page: p50 {f50:.1} ms, p99 {f99:.1} ms over {} (goal p99 < 200 ms): {}; all {} in {} pages: {:.2} s",
            ms(self.import),
            self.import_matches,
            self.findings_first.len(),
            verdict(f99 < 200.0),
            self.findings_matches,
            self.findings_pages,
            self.findings_all.as_secs_f64()
        );
        let worst = self.rematch.iter().max().copied().unwrap_or_default();
        println!(
            "  re-imported advisory re-matched fleet-wide: max {:.0} ms over {} (collector's time to scope {:?} ms) (goal < 1 s): {}",
            ms(worst),
            self.rematch.len(),
            self.rematch_collector_ms,
            verdict(worst < Duration::from_secs(1))
        );
    }
}

/// One backend: a collector (on `store`, or its SQLite default), the
/// simulated fleet, and the figures.
async fn phase(
    bins: &Path,
    fleet: &Fleet,
    hosts: usize,
    store: Option<String>,
    work: &Path,
) -> Figures {
    let label: &'static str = if store.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let runs = env_or("PATCHGAP_BENCH_RUNS", 100);
    let churn_secs = env_or("PATCHGAP_BENCH_CHURN_SECS", 90) as u64;
    let ingest_timeout = env_or("PATCHGAP_BENCH_INGEST_TIMEOUT_SECS", 900) as u64;
    println!("\n== {label}: {hosts} hosts");
    let data = work.join(format!("data-{label}"));
    let log = work.join(format!("collector-{label}.log"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut collector = Command::new(bins.join("patchgap-collector"));
    collector
        .args(["--listen", &addr])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(url) = &store {
        collector.args(["--store", url]);
    }
    let _collector = Bin(collector.spawn().expect("start patchgap-collector"));
    let url = format!("http://{addr}");
    let mut client = connect(&url, &log).await;

    let mut sim = Command::new(env!("CARGO_BIN_EXE_fleet-sim"));
    sim.args(["--hosts", &hosts.to_string(), "--collector", &url])
        .args(["--delta-every", &format!("{DELTA_EVERY_SECS}s")])
        .args(["--heartbeat-every", &format!("{HEARTBEAT_EVERY_SECS}s")])
        .args(["--report-every", "5s"]);
    for inv in &fleet.inventories {
        sim.arg("--inventory").arg(inv);
    }
    let mut sim = Bin(sim
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start fleet-sim"));
    let state = watch(&mut sim.0, label);
    let mut f = Figures::default();

    // Every host's first snapshot.
    let started = Instant::now();
    loop {
        {
            let st = state.lock().unwrap();
            if let Some(s) = st.all_acked_s {
                f.ingest_s = Some(s);
                f.first_acked = hosts;
                break;
            }
            f.first_acked = st.reports.last().map_or(0, |r| r.1);
            assert!(!st.ended, "fleet-sim ended; collector log:\n{}", tail(&log));
        }
        if started.elapsed() > Duration::from_secs(ingest_timeout) {
            println!(
                "[{label}] timeout: {} of {hosts} first snapshots acked after {ingest_timeout} s",
                f.first_acked
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Churn: one delta per host every 30 s, from fleet-sim's reports. A
    // host's first delta comes up to 30 s after its snapshot (the hosts'
    // deltas are spread over the period): the window starts one period
    // after the first snapshots, when every host is sending.
    tokio::time::sleep(Duration::from_secs(DELTA_EVERY_SECS)).await;
    let from = state.lock().unwrap().reports.len();
    tokio::time::sleep(Duration::from_secs(churn_secs)).await;
    {
        let st = state.lock().unwrap();
        let window = &st.reports[from.min(st.reports.len())..];
        if let (Some(first), Some(last)) = (window.first(), window.last())
            && window.len() >= 2
        {
            let secs = last.0.duration_since(first.0).as_secs_f64();
            f.churn_window_s = secs;
            f.acks_per_s = (last.2 - first.2) as f64 / secs;
            // Each report's quantiles cover its 5 s: the worst of them.
            let rest = &window[1..];
            f.lag_p50_ms = rest.iter().map(|r| r.3).fold(0.0, f64::max);
            f.lag_p99_ms = rest.iter().map(|r| r.4).fold(0.0, f64::max);
            f.lag_max_ms = rest.iter().map(|r| r.5).fold(0.0, f64::max);
        }
        // Only the hosts past their first snapshot send deltas.
        f.sent_per_s = f.first_acked as f64 / DELTA_EVERY_SECS as f64
            + f.first_acked as f64 / HEARTBEAT_EVERY_SECS as f64;
    }

    // The query matching at most 1,000 processes, whole answers.
    let small = v1::FindPackageRequest {
        name: RARE.into(),
        constraint: "<2".into(),
        ..Default::default()
    };
    for _ in 0..runs {
        let t = Instant::now();
        let (n, _, _) = walk(&mut client, &small).await;
        f.small.push(t.elapsed());
        f.small_matches = n;
    }
    for _ in 0..runs.clamp(1, 20) {
        let t = Instant::now();
        let out = Command::new(bins.join("patchgap"))
            .args(["query", &format!("{RARE}@<2"), "--collector", &addr])
            .args(["-o", "json"])
            .env_remove("PATCHGAP_COLLECTOR")
            .env_remove("PATCHGAP_TOKEN")
            .stdout(Stdio::null())
            .output()
            .unwrap();
        f.small_cli.push(t.elapsed());
        assert!(
            out.status.success(),
            "patchgap query: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The query matching every process, paged as the CLI pages it.
    let million = v1::FindPackageRequest {
        name: fleet.common.clone(),
        ..Default::default()
    };
    let t = Instant::now();
    let (n, pages, first) = walk(&mut client, &million).await;
    (f.million_matches, f.million_pages) = (n, pages);
    f.million_first = first;
    f.million_last = t.elapsed();

    // The advisory on every host, then its findings.
    let t = Instant::now();
    let imported = client
        .import_advisories(v1::ImportAdvisoriesRequest {
            files: vec![fleet.advisory("2026-12-01T00:00:00Z")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    f.import = t.elapsed();
    assert_eq!(imported.added, 1, "{imported:?}");
    f.import_matches = imported.matches;
    let findings = v1::FindPackageRequest {
        advisory: ADVISORY.into(),
        ..Default::default()
    };
    for _ in 0..runs {
        let t = Instant::now();
        client.find_package(findings.clone()).await.unwrap();
        f.findings_first.push(t.elapsed());
    }
    let t = Instant::now();
    (f.findings_matches, f.findings_pages, _) = walk(&mut client, &findings).await;
    f.findings_all = t.elapsed();

    // Re-imported with a newer `modified`: the import returns once it is
    // re-matched against every package in the fleet.
    for i in 1..=5 {
        let t = Instant::now();
        let r = client
            .import_advisories(v1::ImportAdvisoriesRequest {
                files: vec![fleet.advisory(&format!("2026-12-02T00:00:{i:02}Z"))],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        f.rematch.push(t.elapsed());
        assert_eq!(r.updated, 1, "{r:?}");
        f.rematch_collector_ms.push(r.time_to_scope_ms);
    }
    drop(sim);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("panicked"),
        "the collector panicked:\n{}",
        tail(&log)
    );
    f.print(label, hosts);
    f
}

/// Every page of a FindPackage answer: (matches, pages, time to the first).
async fn walk(
    client: &mut QueryClient<Channel>,
    request: &v1::FindPackageRequest,
) -> (usize, usize, Duration) {
    let t = Instant::now();
    let (mut n, mut pages, mut first) = (0, 0, None);
    let mut token = String::new();
    loop {
        let page = client
            .find_package(v1::FindPackageRequest {
                page_token: token,
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        first.get_or_insert(t.elapsed());
        n += page.matches.len();
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            return (n, pages, first.unwrap());
        }
    }
}

async fn connect(url: &str, log: &Path) -> QueryClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match QueryClient::connect(url.to_string()).await {
            Ok(c) => return c.max_decoding_message_size(256 << 20),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the collector did not listen at {url}: {e}\n{}",
                    tail(log)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
