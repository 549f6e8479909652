//! Live sensing: a process that lives for 50 ms, loads a library, connects
//! to a loopback port and exits, with no /proc rescan in between. With eBPF
//! on, all four are recorded; with eBPF off (PATCHGAP_EBPF=off), the answers
//! say the host is scan-only.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use patchgap_tests::{Harness, ebpf_wanted};
use serde_json::Value;

fn patchgap(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .output()
        .expect("run patchgap");
    assert!(
        out.status.success(),
        "patchgap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_process_is_recorded_from_exec_to_exit() {
    let h = Harness::start().await;
    let status = h.agent.status();
    assert_eq!(status.ebpf, ebpf_wanted(), "ebpf: {}", status.ebpf_reason);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import ctypes, socket, time; ctypes.CDLL('libbz2.so.1.0'); socket.create_connection(('127.0.0.1', {port})); time.sleep(0.05)"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    drop(listener);
    let addr = h.addr.to_string();
    // "Since five minutes ago": the duration form of --since.
    let since = "5m".to_string();

    let (history, connections) = tokio::task::spawn_blocking(move || {
        let ask = || {
            let c = ["--collector", addr.as_str(), "-o", "json"];
            (
                patchgap(&[&["query", "libbz2-1.0", "--since", since.as_str()][..], &c].concat()),
                patchgap(&[&["connections", "--since", since.as_str()][..], &c].concat()),
            )
        };
        // No rescan runs: whatever arrives, arrives from the kernel's events.
        let deadline = Instant::now() + Duration::from_secs(if ebpf_wanted() { 10 } else { 2 });
        loop {
            let (history, connections) = ask();
            let exited = history["matches"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["pid"] == pid && !m["exit_time"].is_null());
            let connected = connections["connections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["pid"] == pid);
            if (exited && connected) || Instant::now() > deadline {
                return (history, connections);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();

    let hosts = history["coverage"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1);
    if ebpf_wanted() {
        assert_eq!(hosts[0]["ebpf"], true);
        assert_eq!(history["coverage"]["hosts_scan_only"], 0);
        // The exec and the library (mapped after the open, or opened).
        let m = history["matches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["pid"] == pid)
            .unwrap_or_else(|| {
                panic!("{pid} not in history: {history:#}");
            });
        assert!(
            ["mapped", "opened"].contains(&m["evidence"].as_str().unwrap()),
            "{m}"
        );
        assert!(
            m["paths"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["path"].as_str().unwrap().contains("libbz2.so"))
        );
        assert_eq!(m["package"]["name"], "libbz2-1.0");
        // The exit, with its time.
        assert!(!m["exit_time"].is_null(), "{m}");
        // The same fields as the foundation's query output.
        for field in [
            "host",
            "pid",
            "process_start",
            "exe",
            "workload",
            "package",
            "evidence",
            "stale",
            "paths",
        ] {
            assert!(!m[field].is_null(), "{field}");
        }
        // The connection.
        let c = connections["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["pid"] == pid)
            .unwrap_or_else(|| {
                panic!("{pid} made no recorded connection: {connections:#}");
            });
        assert_eq!(
            (c["remote_addr"].as_str(), c["remote_port"].as_u64()),
            (Some("127.0.0.1"), Some(u64::from(port)))
        );
        assert_eq!(c["protocol"], "tcp");
        assert_eq!(c["last_result"], 0);
        assert!(c["count"].as_u64().unwrap() >= 1);
        assert!(!c["exit_time"].is_null());
    } else {
        // Scan-only: the process came and went between rescans, and the
        // answer says the host is blind to such processes.
        assert_eq!(hosts[0]["ebpf"], false);
        assert_eq!(history["coverage"]["hosts_scan_only"], 1);
        assert!(
            !history["matches"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["pid"] == pid)
        );
    }
    h.stop().await;
}
