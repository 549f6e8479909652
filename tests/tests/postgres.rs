//! The collector on PostgreSQL, with the real binaries: a real PostgreSQL 15
//! started by the test (`patchgap_tests::postgres`), the real
//! `patchgap-collector --store postgres://…`, a real agent scanning this
//! host, and the real `patchgap` answering `hosts` and `query` from what
//! the agent stored there. The URL carries a password (the test server
//! trusts loopback, so any password connects), which must never reach the
//! collector's log.
//!
//! Needs root (the agent reads every process); skipped with a line
//! otherwise, and where PostgreSQL is not installed (unless
//! PATCHGAP_REQUIRE_POSTGRES is set, as in CI).

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use patchgap_tests::{built_bins, postgres::Cluster, python_with_ssl};
use serde_json::Value;

/// A child killed and reaped when dropped.
struct Bin(Child);

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn patchgap(bins: &Path, collector: &str, args: &[&str]) -> Output {
    Command::new(bins.join("patchgap"))
        .args(args)
        .args(["--collector", collector, "-o", "json"])
        .env_remove("PATCHGAP_COLLECTOR")
        .env_remove("PATCHGAP_TOKEN")
        .output()
        .expect("run patchgap")
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "patchgap failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

#[test]
fn a_real_agent_reports_to_a_collector_on_postgres() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("needs root (the agent reads every process); skipped");
        return;
    }
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let db = cluster.database();
    let secret = "pg-s3cret-never-logged";
    let url = db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{secret}@"),
        1,
    );
    let bins = built_bins();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let log_path = work.path().join("collector.log");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let python = python_with_ssl();

    let _collector = Bin(Command::new(bins.join("patchgap-collector"))
        .args(["--listen", &addr, "--store", &url])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start patchgap-collector"));
    let _agent = Bin(Command::new(bins.join("patchgap-agent"))
        .args(["run", "--collector", &format!("http://{addr}")])
        .arg("--state-dir")
        .arg(work.path().join("agent"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start patchgap-agent"));

    // The first full snapshot lands in PostgreSQL: the host is listed
    // with its running processes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let hosts = loop {
        let out = patchgap(&bins, &addr, &["hosts"]);
        if out.status.success() {
            let hosts = json(&out);
            if hosts["hosts"][0]["processes_running"].as_u64().unwrap_or(0) > 0 {
                break hosts;
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "no host with processes after 120 s; collector log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 1, "{hosts}");
    assert_eq!(hosts["hosts"][0]["fresh"], true, "{hosts}");

    // The exposure query walks the PostgreSQL store: the python that maps
    // libssl3 is found, with its path.
    let pid = python.0.id();
    let found = json(&patchgap(&bins, &addr, &["query", "libssl3"]));
    let matches = found["matches"].as_array().unwrap();
    let ours = matches
        .iter()
        .find(|m| m["pid"].as_u64() == Some(u64::from(pid)))
        .unwrap_or_else(|| panic!("pid {pid} not among {} matches: {found}", matches.len()));
    assert_eq!(ours["evidence"], "mapped", "{ours}");
    assert_eq!(found["coverage"]["hosts_fresh"], 1, "{found}");

    // Nothing went to SQLite, and the password never reached the log.
    assert!(
        !data.join("patchgap.db").exists(),
        "a SQLite store was made beside --store"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains(secret), "the password was logged:\n{log}");
    // A PostgreSQL client blocks: a store call made on an async worker
    // would panic ("Cannot start a runtime from within a runtime").
    assert!(
        !log.contains("panicked") && !log.contains("Cannot start a runtime"),
        "the collector panicked:\n{log}"
    );
    assert!(
        log.contains("postgres:***@127.0.0.1"),
        "the store is named, redacted:\n{log}"
    );
}
