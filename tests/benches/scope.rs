//! Time to scope: import the advisory set, then compute the findings for a
//! simulated fleet of hosts, and report the seconds.
//!
//! The fleet is this host's real inventory (a scan with a system python3 and
//! a pyenv 3.11.7 interpreter running, so PyPI, Debian and Go packages are
//! all there) stored under N different host identities. The advisories are
//! the real OSV files in testdata/osv. Everything runs against a real
//! collector over gRPC, with its SQLite store on disk.
//!
//! usage: cargo bench -p patchgap-tests --bench scope   (PATCHGAP_BENCH_HOSTS, default 1000)

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::Instant,
};

use patchgap_collector::{CollectorConfig, SqliteStore, Store};
use patchgap_proto::v1::{self, agent_message::Body};

#[tokio::main]
async fn main() {
    let hosts: usize = std::env::var("PATCHGAP_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let sleeper = "import time; print('ready', flush=True); time.sleep(600)";
    let mut children = Vec::new();
    for python in [
        "/usr/bin/python3",
        "/root/.pyenv/versions/3.11.7/bin/python3.11",
    ] {
        let mut c = Command::new(python)
            .args(["-c", sleeper])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        children.push(c);
    }
    let inv = patchgap_agent::Scanner::new(Default::default()).scan();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }

    let baseline = scope(&inv, 1).await;
    let fleet = scope(&inv, hosts).await;
    println!(
        "time to scope, {hosts} hosts ({} processes each, ingested in {:.1} s): import {} files ({} advisories, {} package matches) {:.2} s, findings {:.2} s ({} findings, {:.1} per host), total {:.2} s",
        inv.processes.len(),
        fleet.ingest_s,
        fleet.files,
        fleet.advisories,
        fleet.matches,
        fleet.import_s,
        fleet.findings_s,
        fleet.findings,
        fleet.findings as f64 / hosts as f64,
        fleet.total_s()
    );
    println!(
        "baseline, 1 host: import {:.2} s, findings {:.3} s, total {:.2} s; {hosts} hosts / 1 host = {:.2}x",
        baseline.import_s,
        baseline.findings_s,
        baseline.total_s(),
        fleet.total_s() / baseline.total_s()
    );
    println!(
        "incremental: one advisory updated, re-imported and re-matched in {:.3} s (collector: {} ms) = {:.3} of the full import",
        fleet.update_s,
        fleet.update_collector_ms,
        fleet.update_s / fleet.import_s
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "time_to_scope", "hosts": hosts, "processes_per_host": inv.processes.len(),
            "advisories": fleet.advisories, "matches": fleet.matches, "import_s": fleet.import_s,
            "findings_s": fleet.findings_s, "total_s": fleet.total_s(), "findings": fleet.findings,
            "baseline_1_host_total_s": baseline.total_s(),
            "ratio_to_baseline": fleet.total_s() / baseline.total_s(),
            "update_one_advisory_s": fleet.update_s,
        })
    );
}

struct Scope {
    ingest_s: f64,
    files: usize,
    advisories: u32,
    matches: u32,
    import_s: f64,
    findings_s: f64,
    findings: usize,
    update_s: f64,
    update_collector_ms: i64,
}

impl Scope {
    fn total_s(&self) -> f64 {
        self.import_s + self.findings_s
    }
}

/// Ingests `inv` under `hosts` identities into a fresh on-disk store,
/// serves it, imports the advisories (which matches them against every
/// package) and lists the findings; then re-imports one advisory with a
/// newer `modified` (the incremental path).
async fn scope(inv: &patchgap_agent::model::Inventory, hosts: usize) -> Scope {
    // The fleet: this inventory under `hosts` identities.
    let data = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(data.path()).unwrap();
    let ingest = Instant::now();
    let parts = patchgap_agent::wire::snapshot_parts(inv, "bench", 4 << 20);
    let now = inv.scanned_at_ms;
    for i in 0..hosts {
        let mut host = patchgap_agent::wire::host(&inv.host);
        host.host_id = format!("bench-host-{i:05}");
        host.hostname = format!("node-{i:05}");
        let session = store
            .hello(
                &v1::Hello {
                    host: Some(host),
                    agent_version: "bench".into(),
                    capabilities: Some(Default::default()),
                    session_id: format!("session-{i}"),
                },
                now,
            )
            .unwrap();
        for (seq, part) in parts.iter().enumerate() {
            let msg = v1::AgentMessage {
                seq: seq as u64 + 1,
                body: Some(Body::Snapshot(part.clone())),
            };
            store.apply(&session, &msg, now).unwrap();
        }
    }
    let ingest_s = ingest.elapsed().as_secs_f64();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = CollectorConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    let shared: patchgap_collector::SharedStore = Arc::new(store);
    let server = tokio::spawn(patchgap_collector::serve(config, shared, listener, async {
        let _ = stopped.await;
    }));
    let mut client = v1::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(1 << 30);

    let files = patchgap_tests::osv_files(&[
        "ghsa",
        "golang-vulndb/data",
        "pypa/vulns",
        "rustsec/crates",
        "ubuntu",
    ]);
    let n_files = files.len();
    let t0 = Instant::now();
    let imported = client
        .import_advisories(v1::ImportAdvisoriesRequest {
            files,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let import_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let findings = client
        .list_findings(v1::ListFindingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let findings_s = t1.elapsed().as_secs_f64();
    // One advisory changes upstream (a newer `modified`): re-import it.
    let pip = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/osv/pypa-json-derived/vulns/pip/PYSEC-2023-228.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&pip).unwrap()).unwrap();
    doc["modified"] = serde_json::json!("2030-01-01T00:00:00Z");
    let t2 = Instant::now();
    let updated = client
        .import_advisories(v1::ImportAdvisoriesRequest {
            files: vec![v1::AdvisoryFile {
                name: "PYSEC-2023-228.json".into(),
                data: doc.to_string().into_bytes(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let update_s = t2.elapsed().as_secs_f64();
    assert_eq!(updated.updated, 1);
    let _ = stop.send(());
    let _ = server.await;
    Scope {
        ingest_s,
        files: n_files,
        advisories: imported.added,
        matches: imported.matches,
        import_s,
        findings_s,
        findings: findings.findings.len(),
        update_s,
        update_collector_ms: updated.time_to_scope_ms,
    }
}
