//! Egress classification throughput: connections per second that the
//! collector's egress stage (`egress::stage::Stage::on_connections`, the
//! function `Ingest` calls after each agent message commits) judges
//! against W stable baselines kept in a SQLite store on disk, on one
//! thread, against the DESIGN goal of 10,000 connections per second on
//! one core.
//!
//! Setup (not timed): one host with W pod workloads (`Deployment`s in
//! ten namespaces), two replicas each, each replica a process with P
//! packages (a Debian base shared by all, Python libraries spread over
//! the fleet); every workload learns D destinations (half by DNS name,
//! half by address, ports 443 and 5432) on both replicas through the
//! same function, then time moves past the stable period. Timed: C
//! connections in agent-message-sized batches of B, each a random
//! replica reaching one of its learned destinations, and one in a
//! thousand a new address (a new-destination alert, stored). The stage
//! reads each batch's process chains from the store and keeps baselines
//! in its cache, as in production.
//!
//! Reports connections per second by wall time and by the thread's CPU
//! time, and the CPU figure's ratio to 10,000/s.
//!
//! usage: cargo bench -p patchgap-tests --bench egress
//!   PATCHGAP_BENCH_WORKLOADS (default 1000), PATCHGAP_BENCH_CONNECTIONS
//!   (default 200000), PATCHGAP_BENCH_DESTINATIONS (default 20),
//!   PATCHGAP_BENCH_PACKAGES (default 60), PATCHGAP_BENCH_BATCH (default
//!   200). A quick check that it runs: PATCHGAP_BENCH_WORKLOADS=20
//!   PATCHGAP_BENCH_CONNECTIONS=2000.

use std::time::{Duration, Instant};

use patchgap_collector::{
    SqliteStore,
    egress::{
        baseline::Learning,
        stage::{EgressConfig, Stage},
    },
    store::Store,
};
use patchgap_proto::v1::{
    self, AgentMessage, Artifact, ArtifactKind, Hello, HostIdentity, Owner, Package, Process,
    ProcessKey, Snapshot, agent_message::Body,
};

/// The goal (DESIGN.md): connections per second on one core.
const GOAL: f64 = 10_000.0;

const T0: i64 = 1_800_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn workload(w: usize, replica: usize) -> v1::Workload {
    let uid = format!("{w:08x}-0000-4000-8000-{replica:012x}");
    let owner = format!("svc-{w}");
    v1::Workload {
        id: format!("pod/{uid}/c-{uid}"),
        kind: "pod".into(),
        namespace: format!("ns-{}", w % 10),
        pod: format!("{owner}-5d8c7b9f4-x2k{replica}p"),
        pod_uid: uid.clone(),
        container_name: "app".into(),
        owner: Some(Owner {
            kind: "Deployment".into(),
            name: owner,
            source: "label".into(),
        }),
        image_digest: format!("sha256:{w:064x}"),
        cgroup: format!("/kubepods/besteffort/pod{uid}/c-{uid}"),
        ..Default::default()
    }
}

fn pid_of(w: usize, replica: usize) -> u32 {
    1000 + (w * 2 + replica) as u32
}

fn key(pid: u32) -> ProcessKey {
    ProcessKey {
        pid,
        start_ticks: 7000 + u64::from(pid),
    }
}

fn package(ecosystem: &str, name: &str, version: &str) -> Package {
    Package {
        ecosystem: ecosystem.into(),
        name: name.into(),
        version: version.into(),
        purl: format!("pkg:{ecosystem}/{name}@{version}"),
        ..Default::default()
    }
}

/// Replica `replica` of workload `w`: a Python interpreter with a shared
/// Debian base and Python libraries spread over the fleet.
fn process(w: usize, replica: usize, packages: usize, wl: &v1::Workload) -> Process {
    let pid = pid_of(w, replica);
    let mut artifacts = vec![Artifact {
        path: b"/usr/bin/python3.11".to_vec(),
        inode: 10,
        kind: ArtifactKind::Exe as i32,
        package: Some(package("deb", "python3.11-minimal", "3.11.2-6")),
        ..Default::default()
    }];
    for j in 0..packages {
        let (path, pkg, kind) = if j < packages / 3 {
            (
                format!("/usr/lib/x86_64-linux-gnu/lib{j}.so.1"),
                package("deb", &format!("lib{j}"), "1.0-1"),
                ArtifactKind::Mapped,
            )
        } else {
            let lib = (w * 7 + j) % 400;
            (
                format!("/app/venv/lib/python3.11/site-packages/pylib{lib}/__init__.py"),
                package("pypi", &format!("pylib{lib}"), "2.1.0"),
                ArtifactKind::Installed,
            )
        };
        artifacts.push(Artifact {
            path: path.into_bytes(),
            inode: 100 + j as u64,
            kind: kind as i32,
            package: Some(pkg),
            ..Default::default()
        });
    }
    Process {
        key: Some(key(pid)),
        ppid: 1,
        exe: b"/usr/bin/python3.11".to_vec(),
        cmdline: "python3 serve.py --port 8080".into(),
        comm: "python3".into(),
        cgroup: wl.cgroup.clone(),
        start_time_ms: T0 - 60_000,
        workload: wl.id.clone(),
        root: b"/".to_vec(),
        artifacts,
        privilege: Some(v1::Privilege::default()),
        ..Default::default()
    }
}

/// Learned destination `d` of workload `w`: (address, names, port).
fn destination(w: usize, d: usize) -> (String, Vec<String>, u32) {
    let ip = format!("203.0.{}.{}", (w * 31 + d) % 250, (w + d * 7) % 250 + 1);
    if d.is_multiple_of(2) {
        (ip, vec![format!("api-{d}.svc-{w}.example.net")], 443)
    } else {
        (ip, Vec::new(), 5432)
    }
}

fn connection(pid: u32, ip: String, names: Vec<String>, port: u32, at: i64) -> v1::Connection {
    v1::Connection {
        key: Some(key(pid)),
        protocol: "tcp".into(),
        remote_addr: ip,
        remote_port: port,
        first_seen_ms: at,
        last_seen_ms: at,
        count: 1,
        last_result: 0,
        names,
    }
}

fn main() {
    let workloads = env("PATCHGAP_BENCH_WORKLOADS", 1000).max(1);
    let total = env("PATCHGAP_BENCH_CONNECTIONS", 200_000).max(1);
    let dests = env("PATCHGAP_BENCH_DESTINATIONS", 20).max(1);
    let packages = env("PATCHGAP_BENCH_PACKAGES", 60);
    let batch = env("PATCHGAP_BENCH_BATCH", 200).max(1);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let session = store
        .hello(
            &Hello {
                host: Some(HostIdentity {
                    host_id: "bench-host".into(),
                    hostname: "bench".into(),
                    boot_id: "boot".into(),
                    kernel: "6.18".into(),
                    labels: [("cluster".to_string(), "prod".to_string())].into(),
                }),
                agent_version: "bench".into(),
                capabilities: Some(v1::Capabilities::default()),
                session_id: "s1".into(),
            },
            T0,
        )
        .unwrap();
    let setup = Instant::now();
    let mut all_workloads = Vec::new();
    let mut processes = Vec::new();
    for w in 0..workloads {
        for r in 0..2 {
            let wl = workload(w, r);
            processes.push(process(w, r, packages, &wl));
            all_workloads.push(wl);
        }
    }
    store
        .apply(
            &session,
            &AgentMessage {
                seq: 1,
                body: Some(Body::Snapshot(Snapshot {
                    snapshot_id: "snap".into(),
                    part: 0,
                    last: true,
                    scanned_at_ms: T0,
                    stats: Some(v1::ScanStats::default()),
                    processes,
                    sockets: Vec::new(),
                    workloads: all_workloads,
                    artifacts: Vec::new(),
                })),
            },
            T0,
        )
        .unwrap();
    let learning = Learning {
        warmup: Duration::ZERO,
        stable: Duration::from_secs(60),
        max_learning: Duration::from_secs(3600),
        quarantine: Duration::from_secs(86_400),
        promote_replicas: 2,
        promote_after: Duration::from_secs(3600),
    };
    let stage = Stage::new(EgressConfig {
        learning,
        ..EgressConfig::default()
    });
    // Learning: every destination of every workload from both replicas.
    let mut learn = Vec::new();
    for w in 0..workloads {
        for d in 0..dests {
            for r in 0..2 {
                let (ip, names, port) = destination(w, d);
                learn.push(connection(pid_of(w, r), ip, names, port, T0 + 1_000));
            }
        }
    }
    for chunk in learn.chunks(batch) {
        let alerts = stage
            .on_connections(&store, &session, chunk, &[], T0 + 1_000)
            .unwrap();
        assert!(alerts.is_empty(), "learning raised {alerts:?}");
    }
    let baselines = store.egress_baselines().unwrap().len();
    assert_eq!(
        baselines, workloads,
        "one baseline per workload, shared by replicas"
    );
    eprintln!(
        "setup: {workloads} workloads x 2 replicas, {packages} packages each, {dests} destinations learned; {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // Timed: stable baselines, mostly known destinations.
    let now = T0 + 600_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stream = Vec::with_capacity(total);
    let mut novel = 0usize;
    for i in 0..total {
        let (w, r) = (rng.below(workloads), rng.below(2));
        let (ip, names, port) = if i % 1000 == 999 {
            novel += 1;
            (format!("198.51.100.{}", 1 + novel % 250), Vec::new(), 8443)
        } else {
            destination(w, rng.below(dests))
        };
        stream.push(connection(
            pid_of(w, r),
            ip,
            names,
            port,
            now + i as i64 / 100,
        ));
    }
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    let mut alerts = 0;
    for (i, chunk) in stream.chunks(batch).enumerate() {
        let at = now + (i * batch) as i64 / 100;
        alerts += stage
            .on_connections(&store, &session, chunk, &[], at)
            .unwrap()
            .len();
    }
    let (wall, cpu) = (wall0.elapsed(), thread_cpu() - cpu0);
    let by_wall = total as f64 / wall.as_secs_f64();
    let by_cpu = total as f64 / cpu.as_secs_f64();
    println!(
        "egress classification: {total} connections in batches of {batch} against {baselines} stable baselines \
         ({novel} to new destinations, {alerts} alert sightings)"
    );
    println!(
        "  wall {:.3} s: {by_wall:.0} connections/s; thread CPU {:.3} s: {by_cpu:.0} connections/s on one core",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    println!(
        "  ratio to the 10,000/s goal (CPU): {:.2}{}",
        by_cpu / GOAL,
        if by_cpu >= GOAL {
            " (met)"
        } else {
            " (NOT met)"
        }
    );
    assert!(
        alerts >= novel,
        "every new destination alerts ({alerts} < {novel})"
    );
}
