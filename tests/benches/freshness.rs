//! Freshness benchmark: `cargo bench -p patchgap-tests --bench freshness`.
//!
//! The time from the exec of a process that maps a known library to that
//! process being returned by FindPackage at the collector, with the agent
//! and collector in this process (eBPF on; PATCHGAP_EBPF=off measures the
//! scan-only path, bounded by the rescan interval). The agent's periodic
//! rescan is an hour, so only the exec event can make a process appear.
//! `PATCHGAP_BENCH_RUNS` (default 200) runs; p50, p90, p99 and max reported.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use patchgap_proto::v1;
use patchgap_tests::{Harness, ebpf_wanted};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("PATCHGAP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let h = Harness::start().await;
    let status = h.agent.status();
    println!(
        "freshness bench: {runs} runs, ebpf {} {}",
        if status.ebpf { "on" } else { "off" },
        status.ebpf_reason
    );
    assert_eq!(status.ebpf, ebpf_wanted(), "ebpf: {}", status.ebpf_reason);
    let mut client = h.client().await;
    let mut latencies = Vec::with_capacity(runs);
    let mut timeouts = 0;
    for _ in 0..runs {
        let started = Instant::now();
        // sleep maps libc6; the query asks for exactly that.
        let mut child = Command::new("/usr/bin/sleep")
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let deadline = started + Duration::from_secs(if status.ebpf { 5 } else { 1 });
        let found = loop {
            let r = client
                .find_package(v1::FindPackageRequest {
                    name: "libc6".into(),
                    ..Default::default()
                })
                .await
                .expect("query")
                .into_inner();
            if r.matches
                .iter()
                .any(|m| m.key.is_some_and(|k| k.pid == pid))
            {
                break Some(started.elapsed());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        match found {
            Some(d) => latencies.push(d),
            None => timeouts += 1,
        }
    }
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let (p50, p90, p99, max) = (pct(0.50), pct(0.90), pct(0.99), pct(1.0));
    println!(
        "exec -> queryable at the collector, ms: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  max {max:.1}  (timeouts {timeouts})"
    );
    println!(
        "goal: p99 under 1000 ms: {}",
        if p99 < 1000.0 && timeouts == 0 {
            "met"
        } else {
            "NOT MET"
        }
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "freshness",
            "runs": runs,
            "ebpf": status.ebpf,
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "timeouts": timeouts,
        })
    );
    h.stop().await;
}
