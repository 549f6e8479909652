//! Overhead benchmark: `cargo bench -p patchgap-agent --bench overhead`.
//!
//! In one run, with the agent off (not running) and on (eBPF sensing, in
//! this process, streaming nowhere): an exec storm and a connect storm on
//! loopback at full speed, reported as the throughput ratio on/off; then a
//! fixed load of 100 exec/s and 1,000 connect/s, reported as the agent's
//! CPU (this process's CPU: the storms run in a child python process) as a
//! share of one core, its RSS, and the events it lost. The goal: under
//! 0.5 % of one core and 40 MB, with no lost events.
//! `PATCHGAP_BENCH_SECONDS` (default 10) sets each phase's length.

use std::{process::Command, time::Duration};

use patchgap_agent::{AgentConfig, AgentHandle};

fn storm(seconds: f64, exec_rate: f64, connect_rate: f64) -> (f64, f64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/storm.py");
    let out = Command::new("/usr/bin/python3")
        .args([
            script,
            &seconds.to_string(),
            &exec_rate.to_string(),
            &connect_rate.to_string(),
        ])
        .output()
        .expect("run storm.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("storm output");
    (
        v["execs"].as_f64().unwrap() / seconds,
        v["connects"].as_f64().unwrap() / seconds,
    )
}

/// This process's user+system CPU, in seconds.
fn cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

async fn start_agent() -> AgentHandle {
    let agent = patchgap_agent::spawn(AgentConfig {
        // Streaming is not what is measured: the collector is unreachable.
        collector: "http://127.0.0.1:1".into(),
        interval: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(1),
        ..Default::default()
    });
    agent.wait_for(|s| s.scans >= 1).await;
    agent
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: f64 = std::env::var("PATCHGAP_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);

    // Full-speed storms, agent off then on (each storm alone).
    let (exec_off, _) = tokio::task::spawn_blocking(move || storm(seconds, 0.0, -1.0))
        .await
        .unwrap();
    let (_, conn_off) = tokio::task::spawn_blocking(move || storm(seconds, -1.0, 0.0))
        .await
        .unwrap();
    let agent = start_agent().await;
    let status = agent.status();
    assert!(
        status.ebpf,
        "the overhead bench needs eBPF: {}",
        status.ebpf_reason
    );
    let (exec_on, _) = tokio::task::spawn_blocking(move || storm(seconds, 0.0, -1.0))
        .await
        .unwrap();
    let (_, conn_on) = tokio::task::spawn_blocking(move || storm(seconds, -1.0, 0.0))
        .await
        .unwrap();

    // The fixed load, with the agent on: its CPU and memory.
    let events0 = agent.status().events;
    let cpu0 = cpu_s();
    let (execs, conns) = tokio::task::spawn_blocking(move || storm(seconds, 100.0, 1000.0))
        .await
        .unwrap();
    // Let the agent drain what the storm left in its queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_s() - cpu0;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = agent.status();
    let (rss, hwm) = rss_mb();
    let cpu_pct = 100.0 * cpu / (seconds + 0.5);
    println!("overhead bench: {seconds} s per phase, 2 CPUs");
    println!(
        "exec storm, full speed:    off {exec_off:8.0}/s   on {exec_on:8.0}/s   ratio on/off {:.3}",
        exec_on / exec_off
    );
    println!(
        "connect storm, full speed: off {conn_off:8.0}/s   on {conn_on:8.0}/s   ratio on/off {:.3}",
        conn_on / conn_off
    );
    println!(
        "fixed load {execs:.0} exec/s + {conns:.0} connect/s: agent CPU {cpu_pct:.2} % of one core, RSS {rss:.1} MB (peak {hwm:.1} MB), events handled {}, lost {}",
        st.events - events0,
        st.lost_events
    );
    println!(
        "goal (< 0.5 % of a core, < 40 MB, no lost events): {}",
        if cpu_pct < 0.5 && hwm < 40.0 && st.lost_events == 0 {
            "met"
        } else {
            "NOT MET"
        }
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "overhead",
            "seconds": seconds,
            "exec_per_s": {"off": exec_off, "on": exec_on, "ratio": exec_on / exec_off},
            "connect_per_s": {"off": conn_off, "on": conn_on, "ratio": conn_on / conn_off},
            "fixed": {"exec_per_s": execs, "connect_per_s": conns, "agent_cpu_pct_of_core": cpu_pct,
                      "rss_mb": rss, "rss_peak_mb": hwm, "events": st.events - events0, "lost": st.lost_events},
        })
    );
    agent.shutdown().await;
}
