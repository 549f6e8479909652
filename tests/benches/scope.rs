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
    sync::{Arc, Mutex},
    time::Instant,
};

use patchgap_collector::{CollectorConfig, SqliteStore, Store};
use patchgap_proto::v1::{self, agent_message::Body};

fn advisory_files() -> Vec<v1::AdvisoryFile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/osv");
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = [
        "ghsa",
        "golang-vulndb/data",
        "pypa/vulns",
        "rustsec/crates",
        "ubuntu",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "json" || e == "yaml") {
            out.push(v1::AdvisoryFile {
                name: p.display().to_string(),
                data: std::fs::read(&p).unwrap(),
            });
        }
    }
    out
}

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

    // The fleet: this inventory under `hosts` identities.
    let data = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(data.path()).unwrap();
    let ingest = Instant::now();
    let parts = patchgap_agent::wire::snapshot_parts(&inv, "bench", 4 << 20);
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
    let shared: patchgap_collector::SharedStore = Arc::new(Mutex::new(Box::new(store)));
    let server = tokio::spawn(patchgap_collector::serve(config, shared, listener, async {
        let _ = stopped.await;
    }));
    let mut client = v1::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(1 << 30);

    let files = advisory_files();
    let n_files = files.len();
    let t0 = Instant::now();
    let imported = client
        .import_advisories(v1::ImportAdvisoriesRequest { files })
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
    let per_host = findings.findings.len() as f64 / hosts as f64;
    println!(
        "time to scope, {hosts} hosts ({} processes each, ingested in {ingest_s:.1} s): import {n_files} files ({} advisories) {import_s:.2} s, findings {findings_s:.2} s ({} findings, {per_host:.1} per host, {} advisories evaluated), total {:.2} s",
        inv.processes.len(),
        imported.added,
        findings.findings.len(),
        findings.advisories,
        import_s + findings_s
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "time_to_scope", "hosts": hosts, "processes_per_host": inv.processes.len(),
            "advisories": imported.added, "import_s": import_s, "findings_s": findings_s,
            "total_s": import_s + findings_s, "findings": findings.findings.len(),
        })
    );
    let _ = stop.send(());
    let _ = server.await;
}
