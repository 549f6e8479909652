//! The response policy with the real binary: a bad file stops the start
//! (naming file:line:column, before the port is bound), and SIGHUP reloads
//! the file, keeping the previous policy when the new one is bad.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const GOOD: &str = "[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"open_ticket_sev3\"\nmode = \"enforce\"\napproval = \"auto\"\n";

/// Kills the collector when the test ends, passed or failed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(data: &Path, policy: &Path) -> (Running, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--policy")
        .arg(policy)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patchgap-collector");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Running(child), rx)
}

/// The first line that contains `needle`, within 60 s.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with {needle:?} ({e}); saw:\n{}", seen.join("\n")),
        }
    }
}

fn hangup(child: &Running) {
    let pid = i32::try_from(child.0.id()).unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our child's,
    // which has not been waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

#[test]
fn sighup_reloads_and_a_bad_reload_keeps_the_previous_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let (mut child, rx) = spawn(&dir.path().join("data"), &policy);
    let line = wait_for(&rx, "response policy in force");
    assert!(
        line.contains("tiers=1") && line.contains("actions=1"),
        "{line}"
    );

    std::fs::write(&policy, GOOD.replace("\"enforce\"", "\"shadow\"")).unwrap();
    hangup(&child);
    let line = wait_for(&rx, "policy reload failed, previous in force");
    let place = format!(
        "{}:7:8: open_ticket_sev3 has no shadow mode",
        policy.display()
    );
    assert!(line.contains(&place), "{line}");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP must not end the collector"
    );

    std::fs::write(&policy, format!("{GOOD}[[tier.action]]\nkind = \"open_incident_sev2\"\nmode = \"observe\"\napproval = \"auto\"\n")).unwrap();
    hangup(&child);
    let line = wait_for(&rx, "policy reloaded");
    assert!(line.contains("actions=2"), "{line}");
    assert!(child.0.try_wait().unwrap().is_none());
}

#[test]
fn a_bad_policy_stops_the_start_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GOOD.replace("kind", "knd")).unwrap();
    let (mut child, rx) = spawn(&dir.path().join("data"), &policy);
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let lines: Vec<String> = rx.iter().collect();
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("{}:6:1: unknown field `knd`", policy.display())),
        "{text}"
    );
    assert!(!text.contains("listening"), "{text}");
    assert!(!dir.path().join("data").exists(), "nothing opened: {text}");
}
