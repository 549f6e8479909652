//! The fleet simulator against a real collector: a recorded inventory of
//! this host replayed under 20 identities over shared connections, every
//! first snapshot acked, and the upgrade wave it rolls through the fleet
//! answered by the collector on every simulated host.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use patchgap_proto::v1;
use patchgap_tests::Harness;

const HOSTS: usize = 20;

/// Kills the simulator however the test ends.
struct Sim(std::process::Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_fleet_is_ingested_and_its_upgrade_wave_answered() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("host.pb");
    let sim = env!("CARGO_BIN_EXE_fleet-sim");
    let out = Command::new(sim)
        .arg("--record")
        .arg(&recording)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&recording).unwrap().len() > 0);

    let mut child = Sim(Command::new(sim)
        .args(["--hosts", &HOSTS.to_string(), "--collector"])
        .arg(format!("http://{}", h.addr))
        .arg("--inventory")
        .arg(&recording)
        // Three connections for twenty streams; every host upgraded at
        // once, sent with its next delta.
        .args(["--hosts-per-connection", "7", "--delta-every", "1s"])
        .args(["--upgrade-hosts-per-min", "60000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut wave = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("fleet-sim: upgrade wave: ") {
                let (name, rest) = rest.split_once(" to ").unwrap();
                let version = rest.split(", ").next().unwrap();
                wave = Some((name.to_string(), version.to_string()));
            }
            if line.contains("every host's first snapshot acked") {
                return (wave, line);
            }
        }
        panic!("fleet-sim ended before every first snapshot was acked");
    });
    let (wave, acked) = tokio::time::timeout(Duration::from_secs(120), lines)
        .await
        .expect("every first snapshot acked within 120 s")
        .unwrap();
    let (name, version) = wave.expect("an upgrade wave");
    println!("{acked}; wave {name} to {version}");

    let hosts = h
        .client()
        .await
        .list_hosts(v1::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let simulated: BTreeSet<String> = hosts
        .iter()
        .filter_map(|h| h.identity.as_ref().map(|i| i.hostname.clone()))
        .filter(|n| n.starts_with("sim-"))
        .collect();
    assert_eq!(simulated.len(), HOSTS, "{simulated:?}");

    // The new version, on every simulated host, within a few deltas.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut upgraded = BTreeSet::new();
        let mut token = String::new();
        loop {
            let page = h
                .client()
                .await
                .find_package(v1::FindPackageRequest {
                    name: name.clone(),
                    constraint: version.clone(),
                    page_size: 10_000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            for m in &page.matches {
                assert_eq!(m.package.as_ref().unwrap().version, version);
                upgraded.insert(m.host.clone());
            }
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        if upgraded.len() == HOSTS {
            assert!(upgraded.iter().all(|h| h.starts_with("sim-")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {HOSTS} hosts answered at {name} {version}",
            upgraded.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(child);
    h.stop().await;
}
