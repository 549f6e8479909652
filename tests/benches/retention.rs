//! Storage cost per host-day, and what retention gives back: one
//! simulated host (this host's real inventory) streams a day of churn
//! into a store, by the message timestamps, not wall time: every 30 s a
//! delta that starts `PATCHGAP_BENCH_EXECS` processes (copies of its
//! own, under new keys), ends the ones started before, and reports five
//! outbound connections; every 6 h an upgrade moves 50 processes to a
//! new version of one of their packages (their history intervals close).
//! Reported: the store after the first snapshot, the growth over the
//! day (bytes per host-day of history), then after one retention pass
//! keeping the last hour (`retention::enforce`, compaction and reclaim
//! included). SQLite on disk; PostgreSQL too when it is installed.
//!
//! usage: cargo bench -p patchgap-tests --bench retention
//!   (PATCHGAP_BENCH_HOURS, default 24; PATCHGAP_BENCH_EXECS, default 4)

use std::time::{Duration, Instant};

use patchgap_collector::{
    SqliteStore, Store,
    retention::{RetentionFlags, enforce},
};
use patchgap_proto::v1::{self, agent_message::Body};

const TICK_MS: i64 = 30_000;
const HOUR_MS: i64 = 3_600_000;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let hours = env("PATCHGAP_BENCH_HOURS", 24);
    let execs = env("PATCHGAP_BENCH_EXECS", 4) as usize;
    let inv = patchgap_agent::Scanner::new(Default::default()).scan();
    println!(
        "retention bench: {} processes in the inventory, {hours} h simulated, {execs} execs and exits per 30 s",
        inv.processes.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    report("sqlite", &sqlite, &inv, hours, execs);
    drop(sqlite);
    if let Some(cluster) = patchgap_tests::postgres::Cluster::shared() {
        let db = cluster.database();
        let target = patchgap_collector::store::postgres::PgTarget::new(&db.url()).unwrap();
        let pg = patchgap_collector::store::postgres::PgStore::connect(&target).unwrap();
        report("postgres", &pg, &inv, hours, execs);
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn report(
    name: &str,
    store: &dyn Store,
    inv: &patchgap_agent::model::Inventory,
    hours: i64,
    execs: usize,
) {
    let empty = store.storage_use().unwrap();
    let t0 = inv.scanned_at_ms;
    let session = store
        .hello(
            &v1::Hello {
                host: Some(patchgap_agent::wire::host(&inv.host)),
                agent_version: "bench".into(),
                capabilities: Some(Default::default()),
                session_id: "bench".into(),
            },
            t0,
        )
        .unwrap();
    let mut seq = 0;
    let mut send = |body: Body, at: i64| {
        seq += 1;
        store
            .apply(
                &session,
                &v1::AgentMessage {
                    seq,
                    body: Some(body),
                },
                at,
            )
            .unwrap();
    };
    for part in patchgap_agent::wire::snapshot_parts(inv, "day-0", 4 << 20) {
        send(Body::Snapshot(part), t0);
    }
    let inventory = store.storage_use().unwrap();
    let real: Vec<v1::Process> = inv
        .processes
        .iter()
        .map(patchgap_agent::wire::process)
        .collect();
    let started = Instant::now();
    let (mut pid, mut live, mut upgrades) = (5_000_000u32, Vec::<v1::ProcessKey>::new(), 0u32);
    let ticks = hours * HOUR_MS / TICK_MS;
    for tick in 1..=ticks {
        let at = t0 + tick * TICK_MS;
        let mut upserts = Vec::new();
        for i in 0..execs {
            let mut p = real[(tick as usize * 7 + i * 13) % real.len()].clone();
            pid += 1;
            p.key = Some(v1::ProcessKey {
                pid,
                start_ticks: u64::from(pid) * 100,
            });
            p.start_time_ms = at;
            upserts.push(p);
        }
        if tick % (6 * HOUR_MS / TICK_MS) == 0 {
            upgrades += 1;
            for p in real.iter().filter(|p| p.artifacts.len() > 1).take(50) {
                let mut p = p.clone();
                if let Some(pkg) = p.artifacts.iter_mut().find_map(|a| a.package.as_mut()) {
                    pkg.version = format!("{}+upgrade{upgrades}", pkg.version);
                }
                upserts.push(p);
            }
        }
        let exits = live
            .drain(..)
            .map(|key| v1::Exit {
                key: Some(key),
                exit_time_ms: at,
            })
            .collect();
        live.extend(upserts.iter().take(execs).filter_map(|p| p.key));
        let connections = real
            .iter()
            .cycle()
            .skip(tick as usize % real.len())
            .take(5)
            .enumerate()
            .map(|(i, p)| v1::Connection {
                key: p.key,
                protocol: "tcp".into(),
                remote_addr: format!("198.51.100.{}", (tick as usize + i) % 250 + 1),
                remote_port: 443,
                first_seen_ms: at,
                last_seen_ms: at,
                count: 1,
                last_result: 0,
                names: Vec::new(),
            })
            .collect();
        send(
            Body::Delta(v1::Delta {
                scanned_at_ms: at,
                upserts,
                exits,
                sockets: Vec::new(),
                workloads: Vec::new(),
                connections,
                stats: None,
                artifacts: Vec::new(),
            }),
            at,
        );
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let day = store.storage_use().unwrap();
    let end = t0 + ticks * TICK_MS;
    let flags = RetentionFlags {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    };
    let started = Instant::now();
    let mut passes = 0;
    let mut rows = 0;
    loop {
        passes += 1;
        let r = enforce(store, &flags, end).unwrap();
        rows += r.rows();
        if !r.unfinished {
            break;
        }
    }
    let retain_s = started.elapsed().as_secs_f64();
    let after = store.storage_use().unwrap();
    let per_day =
        (day.used_bytes.saturating_sub(inventory.used_bytes)) as f64 * 24.0 / hours as f64;
    println!(
        "{name:>8}: empty {:.2} MB; after the snapshot {:.2} MB used ({:.2} MB on disk); after {hours} h of churn {:.2} MB used ({:.2} MB on disk), ingested in {ingest_s:.1} s",
        mb(empty.used_bytes),
        mb(inventory.used_bytes),
        mb(inventory.file_bytes),
        mb(day.used_bytes),
        mb(day.file_bytes),
    );
    println!(
        "{name:>8}: history costs {:.2} MB per host-day; retention keeping 1 h deleted {rows} rows in {passes} pass(es), {retain_s:.2} s: {:.2} MB used, {:.2} MB on disk",
        per_day / 1e6,
        mb(after.used_bytes),
        mb(after.file_bytes),
    );
}
