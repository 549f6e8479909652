//! Soak benchmark: `cargo bench -p patchgap-tests --bench soak`.
//!
//! The real `patchgap-agent` (release, eBPF on) streams to a collector in
//! this process for `PATCHGAP_SOAK_MINUTES` (default 30) on a realistic
//! process mix: a Python process with C extensions (ssl, sqlite3, ctypes)
//! hashing, a node HTTP server requesting itself, a JVM allocating, a few
//! hundred sleepers (`PATCHGAP_SOAK_SLEEPERS`, default 300), and a steady
//! 20 exec/s and 200 connect/s from `storm.py`. Every 10 s it samples the
//! agent's CPU (utime + stime), RSS and descriptor count, then reports the
//! mean CPU as a share of one core, the peak RSS, and the least-squares
//! slope of each per hour, over the whole run and with the first five
//! minutes (warm-up: caches filling) left out. Goal: under 0.5 % of one
//! core and 40 MB, and flat: what grows, grows without bound.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use host::{Agent, Workload, agent_binary, cpu_s, fds, rss_mb};
use patchgap_proto::v1;

#[path = "host/mod.rs"]
mod host;

/// One sample: seconds since the start, CPU seconds, RSS MB, descriptors.
#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    cpu: f64,
    rss: f64,
    fds: f64,
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// CPU per window (as % of one core), RSS and descriptors, each with its
/// slope per hour.
struct Summary {
    cpu_pct: f64,
    cpu_slope: f64,
    rss_peak: f64,
    rss_slope: f64,
    fds_max: f64,
    fds_slope: f64,
}

fn summarise(samples: &[Sample]) -> Summary {
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let windows: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| (w[1].t, 100.0 * (w[1].cpu - w[0].cpu) / (w[1].t - w[0].t)))
        .collect();
    let per_hour = |f: &dyn Fn(&Sample) -> f64| {
        slope(&samples.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>()) * 3600.0
    };
    Summary {
        cpu_pct: 100.0 * (last.cpu - first.cpu) / (last.t - first.t),
        cpu_slope: slope(&windows) * 3600.0,
        rss_peak: samples.iter().map(|s| s.rss).fold(0.0, f64::max),
        rss_slope: per_hour(&|s| s.rss),
        fds_max: samples.iter().map(|s| s.fds).fold(0.0, f64::max),
        fds_slope: per_hour(&|s| s.fds),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes: f64 = std::env::var("PATCHGAP_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let sleepers: usize = std::env::var("PATCHGAP_SOAK_SLEEPERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seconds = minutes * 60.0;
    let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap();
    let mut workload = tokio::task::block_in_place(Workload::start);
    workload.sleepers(sleepers);

    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = patchgap_collector::CollectorConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patchgap_collector::run(config, listener, async {
        let _ = stopped.await;
    }));
    let agent = Agent(
        Command::new(&binary)
            // Its own spool, not another run's.
            .args([
                "run",
                "--collector",
                &format!("http://{addr}"),
                "--state-dir",
                &state.path().to_string_lossy(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start patchgap-agent"),
    );
    let pid = agent.0.id();
    // Let it load eBPF, scan once and stream its snapshot.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/storm.py");
    let storm = tokio::process::Command::new("/usr/bin/python3")
        .args([script, &seconds.to_string(), "20", "200"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run storm.py");
    let started = Instant::now();
    let sample = || Sample {
        t: started.elapsed().as_secs_f64(),
        cpu: cpu_s(pid),
        rss: rss_mb(pid).0,
        fds: fds(pid) as f64,
    };
    let mut samples = vec![sample()];
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    while started.elapsed().as_secs_f64() < seconds {
        tick.tick().await;
        let s = sample();
        if samples.len() % 6 == 0 {
            eprintln!(
                "soak {:5.0} s: agent CPU {:.3} s, RSS {:.1} MB, {} descriptors",
                s.t, s.cpu, s.rss, s.fds
            );
        }
        samples.push(s);
    }
    let out = storm.wait_with_output().await.expect("storm.py");
    let load: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let (_, hwm) = rss_mb(pid);

    let mut client = v1::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let hosts = client
        .list_hosts(v1::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner();
    let cov = hosts.coverage.unwrap_or_default();
    let ebpf = cov.hosts.iter().all(|h| h.ebpf);
    let lost: u64 = cov.hosts.iter().map(|h| h.events_lost).sum();
    // With the agent's defaults the watchdog runs (5 % of a core, 200 MB):
    // a soak within budget never trips it, and one that did is not a soak
    // of the whole agent.
    let shedding: Vec<String> = cov
        .hosts
        .iter()
        .filter(|h| !h.shedding.is_empty())
        .map(|h| h.shedding.clone())
        .collect();
    let restarts: u64 = cov.hosts.iter().map(|h| h.scan_restarts).sum();

    let all = summarise(&samples);
    let warm = samples
        .iter()
        .position(|s| s.t >= 300.0)
        .filter(|&i| samples.len() - i >= 3)
        .map(|i| summarise(&samples[i..]));
    println!(
        "soak bench: {minutes} min, 2 CPUs, agent pid {pid}, ebpf {}, {}",
        if ebpf { "on" } else { "OFF" },
        workload.describe()
    );
    println!(
        "load: {} execs, {} connects ({:.1} exec/s, {:.1} connect/s)",
        load["execs"],
        load["connects"],
        load["execs"].as_f64().unwrap_or(0.0) / seconds,
        load["connects"].as_f64().unwrap_or(0.0) / seconds
    );
    for (name, s) in
        std::iter::once(("whole run", &all)).chain(warm.iter().map(|w| ("after 5 min", w)))
    {
        println!(
            "{name:>11}: CPU {:.3} % of one core (slope {:+.3} %/h), RSS peak {:.1} MB (slope {:+.2} MB/h), descriptors max {:.0} (slope {:+.1}/h)",
            s.cpu_pct, s.cpu_slope, s.rss_peak, s.rss_slope, s.fds_max, s.fds_slope
        );
    }
    let met = all.cpu_pct < 0.5 && hwm < 40.0 && shedding.is_empty();
    println!(
        "watchdog shedding at the end: {:?}; scan loop restarts: {restarts}",
        shedding
    );
    println!(
        "goal (< 0.5 % of a core, < 40 MB peak {hwm:.1} MB, lost events {lost}): {}",
        if met { "met" } else { "NOT MET" }
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "soak",
            "minutes": minutes,
            "sleepers": sleepers,
            "ebpf": ebpf,
            "lost": lost,
            "shedding": shedding,
            "scan_restarts": restarts,
            "rss_peak_mb": hwm,
            "cpu_pct_of_core": all.cpu_pct,
            "cpu_slope_pct_per_h": all.cpu_slope,
            "rss_slope_mb_per_h": all.rss_slope,
            "fds_max": all.fds_max,
            "fds_slope_per_h": all.fds_slope,
            "after_warmup": warm.as_ref().map(|w| serde_json::json!({
                "cpu_pct_of_core": w.cpu_pct, "rss_slope_mb_per_h": w.rss_slope,
                "fds_slope_per_h": w.fds_slope, "cpu_slope_pct_per_h": w.cpu_slope})),
            "samples": samples.iter().map(|s| [s.t, s.cpu, s.rss, s.fds]).collect::<Vec<_>>(),
        })
    );
    drop(agent);
    drop(workload);
    let _ = stop.send(());
    let _ = server.await;
}
