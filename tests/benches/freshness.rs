//! Freshness benchmark: `cargo bench -p patchgap-tests --bench freshness`.
//!
//! The time from the exec of a process that maps a known library to that
//! process being returned by FindPackage at the collector, with the agent
//! and collector in this process (eBPF on; PATCHGAP_EBPF=off measures the
//! scan-only path, bounded by the rescan interval). The agent's periodic
//! rescan is an hour, so only the exec event can make a process appear.
//! `PATCHGAP_BENCH_RUNS` (default 200) runs; p50, p90, p99 and max reported.
//!
//! The upgrade case (issue 11): apt installs the other version of a real
//! library package (libaom3, both versions cached as .deb files), then a
//! new process that loads the library is started; the time is from its
//! exec to the collector listing it at the version dpkg now reports. An
//! answer naming any other version is counted as wrong.
//! `PATCHGAP_BENCH_UPGRADE_RUNS` (default 20) upgrades and downgrades
//! alternate; the package is put back as it was.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use patchgap_proto::v1;
use patchgap_tests::{Harness, dpkg_version, ebpf_wanted, upgrade};

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
    let (p50, p90, p99, max) = percentiles(&mut latencies);
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
    upgrade_case(&h, status.ebpf).await;
    h.stop().await;
}

/// p50, p90, p99 and max in milliseconds.
fn percentiles(latencies: &mut [Duration]) -> (f64, f64, f64, f64) {
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    (pct(0.50), pct(0.90), pct(0.99), pct(1.0))
}

/// After each apt upgrade or downgrade, exec → listed at the new version.
async fn upgrade_case(h: &Harness, ebpf: bool) {
    use upgrade::PACKAGE;
    let runs: usize = std::env::var("PATCHGAP_BENCH_UPGRADE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let _restore = upgrade::Restore(patchgap_tests::installed_version(PACKAGE));
    let versions = upgrade::versions();
    for v in &versions {
        upgrade::deb(v);
    }
    let mut client = h.client().await;
    let (mut latencies, mut timeouts, mut wrong) = (Vec::with_capacity(runs), 0, 0);
    for _ in 0..runs {
        let installed = dpkg_version(PACKAGE);
        let next = versions
            .iter()
            .find(|v| **v != installed)
            .expect("two versions");
        upgrade::apt_install(&upgrade::deb(next));
        let expected = dpkg_version(PACKAGE);
        let started = Instant::now();
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                &format!(
                    "import ctypes,time;ctypes.CDLL('{}');time.sleep(30)",
                    upgrade::SONAME
                ),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let deadline = started + Duration::from_secs(if ebpf { 5 } else { 1 });
        let found = loop {
            let r = client
                .find_package(v1::FindPackageRequest {
                    name: PACKAGE.into(),
                    ..Default::default()
                })
                .await
                .expect("query")
                .into_inner();
            let mine: Vec<_> = r
                .matches
                .iter()
                .filter(|m| m.key.is_some_and(|k| k.pid == pid))
                .collect();
            if mine
                .iter()
                .any(|m| m.package.as_ref().is_none_or(|p| p.version != expected))
            {
                wrong += 1;
                break None;
            }
            if !mine.is_empty() {
                break Some(started.elapsed());
            }
            if Instant::now() > deadline {
                timeouts += 1;
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        if let Some(d) = found {
            latencies.push(d);
        }
    }
    let (p50, p90, p99, max) = percentiles(&mut latencies);
    println!(
        "after an apt upgrade/downgrade of {PACKAGE}: exec -> queryable at the new version, ms: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  max {max:.1}  (runs {runs}, timeouts {timeouts}, wrong version {wrong})"
    );
    println!(
        "goal: p99 under 1000 ms, never the old version: {}",
        if p99 < 1000.0 && timeouts == 0 && wrong == 0 {
            "met"
        } else {
            "NOT MET"
        }
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "freshness_after_upgrade",
            "runs": runs,
            "ebpf": ebpf,
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "timeouts": timeouts,
            "wrong_version": wrong,
        })
    );
}
