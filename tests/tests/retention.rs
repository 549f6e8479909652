//! History retention live (issue 19): the real `patchgap-collector` on a
//! SQLite data directory, a simulated fleet (fleet-sim, the agent's own
//! wire code) churning processes into it, then the same store reopened
//! with `--retain 2s`. The exited processes go, the file shrinks (a new
//! store is `auto_vacuum=incremental`, so freed pages are handed back),
//! and the real `patchgap query --since` says that history was dropped.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use patchgap_tests::{built_bins, free_port};
use serde_json::Value;

/// A child killed and reaped when dropped.
struct Bin(Child);

impl Bin {
    /// SIGINT, as ctrl-c: the collector shuts down and folds its WAL
    /// into the file.
    fn interrupt(mut self) {
        // The signal itself, not kill(1): a fresh machine need not have
        // procps, and a kill that could not run looked like a collector
        // that would not stop.
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) on our own child, which we have not reaped.
        let sent = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(sent, 0, "SIGINT: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the collector did not stop on SIGINT");
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn collector(bins: &Path, data: &Path, port: u16, extra: &[&str], log: &Path) -> Bin {
    let bin = Bin(Command::new(bins.join("patchgap-collector"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start patchgap-collector"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the collector never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    bin
}

fn query(bins: &Path, port: u16, args: &[&str]) -> Output {
    Command::new(bins.join("patchgap"))
        .args(args)
        .args(["--collector", &format!("127.0.0.1:{port}")])
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

/// Processes in `libc6`'s history over the last hour that have exited.
fn exited(v: &Value) -> usize {
    v["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter(|m| !m["exit_time"].is_null())
        .count()
}

/// The database file's size. The collector stopped cleanly, so its WAL
/// is folded into the file and truncated: the file alone is the store.
fn db_bytes(data: &Path) -> u64 {
    let wal = std::fs::metadata(data.join("patchgap.db-wal")).map_or(0, |m| m.len());
    assert_eq!(
        wal, 0,
        "a clean stop left {wal} bytes of WAL beside the file"
    );
    std::fs::metadata(data.join("patchgap.db")).unwrap().len()
}

#[test]
fn retention_drops_history_shrinks_the_file_and_says_so() {
    let bins = built_bins();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let log = work.path().join("collector.log");
    let port = free_port();

    // A fleet of three hosts, each starting and ending 20 processes every
    // 100 ms, for six seconds, kept whole.
    let c = collector(&bins, &data, port, &[], &log);
    let mut sim = Bin(Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args([
            "--hosts",
            "3",
            "--collector",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args(["--delta-every", "100ms", "--execs", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fleet-sim"));
    std::thread::sleep(Duration::from_secs(6));
    assert!(sim.0.try_wait().unwrap().is_none(), "fleet-sim ended early");
    drop(sim);
    let before = json(&query(
        &bins,
        port,
        &["query", "libc6", "--since", "1h", "-o", "json"],
    ));
    let exited_before = exited(&before);
    assert!(exited_before > 0, "the churn left no history");
    assert!(before["coverage"]["history_dropped_before"].is_null());
    c.interrupt();
    let bytes_before = db_bytes(&data);

    // The same store under --retain 2s: everything that exited is older.
    let c = collector(&bins, &data, port, &["--retain", "2s"], &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let v = json(&query(
            &bins,
            port,
            &["query", "libc6", "--since", "1h", "-o", "json"],
        ));
        if exited(&v) == 0 && !v["coverage"]["history_dropped_before"].is_null() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "history not dropped within 60 s: {} exited left; log: {}",
            exited(&v),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // What runs stays.
    assert!(
        !after["matches"].as_array().unwrap().is_empty(),
        "running processes went with the history"
    );
    // The human answer says so too.
    let human = query(&bins, port, &["query", "libc6", "--since", "1h"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("was dropped by retention"),
        "the human answer does not say history was dropped:\n{text}"
    );
    // A window within what is kept says nothing of it.
    let recent = json(&query(
        &bins,
        port,
        &["query", "libc6", "--since", "1s", "-o", "json"],
    ));
    assert!(
        recent["coverage"]["history_dropped_before"].is_null(),
        "{}",
        recent["coverage"]
    );
    // Let a pass hand the freed pages back, then stop.
    std::thread::sleep(Duration::from_secs(2));
    c.interrupt();
    let bytes_after = db_bytes(&data);
    println!(
        "retention: {exited_before} exited processes dropped; database {bytes_before} bytes before, {bytes_after} after"
    );
    assert!(
        bytes_after < bytes_before,
        "the file did not shrink: {bytes_before} -> {bytes_after}"
    );
}
