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

/// A `patchgap-collector` on `addr` over the shared PostgreSQL at `url`,
/// logging to `log`.
fn collector_on(bins: &Path, addr: &str, url: &str, data: &Path, log: &Path) -> Bin {
    Bin(Command::new(bins.join("patchgap-collector"))
        .args(["--listen", addr, "--store", url])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start patchgap-collector"))
}

/// A python mapping libssl3 that outlives the test's waits.
fn long_python() -> patchgap_tests::Proc {
    patchgap_tests::spawn_mapping(
        Command::new("/usr/bin/python3").args(["-c", "import ssl, time; time.sleep(600)"]),
        "libssl.so",
    )
}

/// Polls `patchgap query libssl3` on `addr` until every pid in `pids` is
/// among the matches, for at most `secs`.
fn wait_for_pids(bins: &Path, addr: &str, pids: &[u32], secs: u64, log: &Path) -> Duration {
    let start = Instant::now();
    loop {
        let out = patchgap(bins, addr, &["query", "libssl3"]);
        let found: Vec<u64> = if out.status.success() {
            serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| {
                    v["matches"]
                        .as_array()
                        .map(|m| m.iter().filter_map(|m| m["pid"].as_u64()).collect())
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if pids.iter().all(|p| found.contains(&u64::from(*p))) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "pids {pids:?} not all answered by {addr} after {secs} s (found {} matches; last stderr: {}); log:\n{}",
            found.len(),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Two stateless collectors on one PostgreSQL, one agent given both
/// (`--collector A,B`). Collector A is killed with SIGKILL while the agent
/// streams: the agent moves to B, and nothing acked through A is lost (B
/// answers for the processes A stored, and for one started after the
/// move). A restarted A answers for both too: it reads the same database.
#[test]
fn an_agent_fails_over_between_two_collectors_on_one_postgres() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("needs root (the agent reads every process); skipped");
        return;
    }
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let bins = built_bins();
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (log_a, log_b) = (work.path().join("a.log"), work.path().join("b.log"));
    let mut collector_a = collector_on(&bins, &a, &url, &work.path().join("a"), &log_a);
    let _collector_b = collector_on(&bins, &b, &url, &work.path().join("b"), &log_b);
    let before = long_python();
    let agent_log = work.path().join("agent.log");
    let _agent = Bin(Command::new(bins.join("patchgap-agent"))
        .args(["run", "--collector", &format!("http://{a},http://{b}")])
        .args(["--interval", "5"])
        .arg("--state-dir")
        .arg(work.path().join("agent"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .expect("start patchgap-agent"));

    // The agent streams to A, the first in its list.
    wait_for_pids(&bins, &a, &[before.pid()], 120, &log_a);
    let agent = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        agent.contains(&format!("collector=http://{a}"))
            && agent.contains("connected to collector"),
        "the agent did not connect to A first:\n{agent}"
    );

    // SIGKILL: no goodbye, the stream just breaks.
    collector_a.0.kill().unwrap();
    collector_a.0.wait().unwrap();
    let killed = Instant::now();
    let after = long_python();

    // B answers for what A acked and for what came after the move.
    let took = wait_for_pids(&bins, &b, &[before.pid(), after.pid()], 60, &log_b);
    eprintln!(
        "failover: a process started after A's kill answered through B {} ms after the kill ({} ms of polling)",
        killed.elapsed().as_millis(),
        took.as_millis()
    );
    let agent = std::fs::read_to_string(&agent_log).unwrap();
    let moved = format!("collector=http://{b}");
    assert!(
        agent
            .lines()
            .any(|l| l.contains("connected to collector") && l.contains(&moved)),
        "the agent never connected to B:\n{agent}"
    );

    // A restarted on the same database answers the same.
    let _collector_a = collector_on(&bins, &a, &url, &work.path().join("a"), &log_a);
    wait_for_pids(&bins, &a, &[before.pid(), after.pid()], 60, &log_a);
    for log in [&log_a, &log_b] {
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("panicked"), "a collector panicked:\n{log}");
    }
}
