//! Store hygiene with the real binary (issue 14): a corrupt store was
//! reported only after "listening", without naming the file, and a
//! zero-length file silently became a new, empty store. Now the start-up
//! check refuses before the port is bound, and `patchgap-collector check`
//! names every problem.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use patchgap_collector::{SqliteStore, Store};
use patchgap_proto::v1;

fn collector(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patchgap-collector");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "patchgap-collector {args:?} is still running after 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A store with a host and 2,000 processes.
fn filled(dir: &Path) {
    let store = SqliteStore::open(dir).expect("open");
    let hello = v1::Hello {
        host: Some(v1::HostIdentity {
            host_id: "m1".into(),
            hostname: "h1".into(),
            ..Default::default()
        }),
        session_id: "s".into(),
        ..Default::default()
    };
    let session = store.hello(&hello, 1).expect("hello");
    let processes = (0..2000)
        .map(|i| v1::Process {
            key: Some(v1::ProcessKey {
                pid: i,
                start_ticks: 1,
            }),
            cmdline: format!("/usr/bin/worker --id {i} {}", "x".repeat(200)),
            ..Default::default()
        })
        .collect();
    let msg = v1::AgentMessage {
        seq: 1,
        body: Some(v1::agent_message::Body::Snapshot(v1::Snapshot {
            snapshot_id: "snap".into(),
            processes,
            last: true,
            ..Default::default()
        })),
    };
    store.apply(&session, &msg, 2).expect("apply");
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Starting on this store fails before the port is bound, naming the file
/// and `says`; the file is left as it was.
fn refused_at_start(dir: &Path, says: &str) {
    let path = dir.join("patchgap.db");
    let before = std::fs::read(&path).expect("read the store");
    let port = free_port();
    let out = collector(&["--listen", &port, "--data-dir", &dir.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains(says),
        "the error names the file and says {says:?}: {stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "it said it was listening: {stderr}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the file was changed"
    );
}

fn check(dir: &Path) -> (bool, String) {
    let out = collector(&["check", "--data-dir", &dir.display().to_string()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn bad_stores_are_refused_before_listening_and_check_names_the_problems() {
    // A good store: check passes.
    let good = tempfile::tempdir().expect("tempdir");
    filled(good.path());
    let (ok, text) = check(good.path());
    assert!(ok, "{text}");
    assert!(text.ends_with("ok\n"), "{text}");

    // Truncated to half.
    let truncated = tempfile::tempdir().expect("tempdir");
    filled(truncated.path());
    let path = truncated.path().join("patchgap.db");
    let len = path.metadata().expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    refused_at_start(truncated.path(), "is corrupt");
    let (ok, text) = check(truncated.path());
    assert!(!ok, "{text}");
    assert!(text.contains("problem: "), "{text}");
    eprintln!("check of a truncated store:\n{text}");

    // Garbage over 16 KiB in the middle.
    let garbled = tempfile::tempdir().expect("tempdir");
    filled(garbled.path());
    let path = garbled.path().join("patchgap.db");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid..mid + 16384].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(&path, &bytes).expect("write");
    refused_at_start(garbled.path(), "is corrupt");
    let (ok, text) = check(garbled.path());
    assert!(!ok && text.contains("problem: integrity_check"), "{text}");
    eprintln!("check of a garbled store:\n{text}");

    // Zero-length: refused, not made into a new store.
    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(empty.path().join("patchgap.db"), b"").expect("write");
    refused_at_start(empty.path(), "zero-length");
    let (ok, text) = check(empty.path());
    assert!(!ok && text.contains("zero-length"), "{text}");

    // A text file and another application's SQLite database.
    let text_file = tempfile::tempdir().expect("tempdir");
    std::fs::write(text_file.path().join("patchgap.db"), "not a database\n").expect("write");
    refused_at_start(text_file.path(), "not an SQLite database");
    let other = tempfile::tempdir().expect("tempdir");
    rusqlite::Connection::open(other.path().join("patchgap.db"))
        .and_then(|c| c.execute_batch("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)"))
        .expect("another app's database");
    refused_at_start(other.path(), "other tables (moz_places)");
    let (ok, text) = check(other.path());
    assert!(!ok && text.contains("moz_places"), "{text}");
}
