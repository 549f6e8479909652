//! Two patchgap agents on one host (a host agent next to `patchgap up`, a
//! DaemonSet during a rollout): each stats the files the other's processes
//! open, and must neither count the other's lookups as loads nor feed it
//! events without end.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use patchgap_proto::v1;
use patchgap_tests::{Harness, Proc, ebpf_wanted};

/// The pids FindPackage lists with `opened` among their paths.
async fn opened_by(h: &Harness, package: &str) -> Vec<u32> {
    let r = h
        .client()
        .await
        .find_package(v1::FindPackageRequest {
            name: package.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.matches
        .iter()
        .filter(|m| m.paths.iter().any(|p| p.evidence == "opened"))
        .filter_map(|m| m.key.map(|k| k.pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agents_lookups_are_not_loads() {
    if !ebpf_wanted() {
        eprintln!("PATCHGAP_EBPF=off: opens are seen by eBPF only; skipped");
        return;
    }
    let h = Harness::start().await;
    assert!(h.agent.status().ebpf, "{}", h.agent.status().ebpf_reason);
    // The second agent: `patchgap up` in its own process.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let other = Proc(
        Command::new(env!("CARGO_BIN_EXE_patchgap"))
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Up once it serves (its agent's sensor is loaded before).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "patchgap up never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A python that imports modules now: both agents resolve its opens, each
    // statting the .pyc files the other may see.
    let python = Proc(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import json, csv, decimal, fractions, statistics, time; time.sleep(600)",
            ])
            .spawn()
            .unwrap(),
    );
    let python_pid = python.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !opened_by(&h, "libpython3.11-stdlib")
        .await
        .contains(&python_pid)
    {
        assert!(
            Instant::now() < deadline,
            "python's imports never showed as opened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the other agent's lookups, and any echo of them, come through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.sync().await;
    let opened = opened_by(&h, "libpython3.11-stdlib").await;
    assert!(
        !opened.contains(&other.0.id()),
        "the other agent's lookups of python's modules were taken for its loads: {opened:?}"
    );
    let events = h.agent.status().events;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let echoed = h.agent.status().events - events;
    eprintln!("events in 3 s with two agents and nothing running: {echoed}");
    // Each agent's lookups were the other's events, and each answered with
    // more lookups: 139,776 events in these 3 s before O_PATH opens were
    // left out in the kernel, 0 after. The bound leaves room for whatever
    // else the host runs.
    assert!(
        echoed < 5_000,
        "{echoed} events in 3 s on an idle host: the two agents feed each other"
    );
    drop((python, other));
}
