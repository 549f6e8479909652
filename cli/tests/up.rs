//! `patchgap up`'s own flags with the real binary: the collector's
//! --scope-map reaches the collector (and a bad one stops `up` before it
//! listens), and containment is off unless --contain, in which case the
//! agent pins under --contain-dir and says it can contain.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::{patchgap_at, stderr};

/// `patchgap up` on an ephemeral loopback port; killed when dropped.
struct Up {
    child: Child,
    addr: String,
    /// What it printed after "listening on".
    banner: Vec<String>,
    _stdout: BufReader<ChildStdout>,
}

impl Up {
    fn start(dir: &Path, extra: &[&str]) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_patchgap"))
            .args([
                "up",
                "--no-ebpf",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--interval",
                "1",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn patchgap up");
        // Kept open: a closed pipe would end `up` at its next line.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            banner.push(line);
        }
        let addr = banner[0]
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_string();
        Up {
            child,
            addr,
            banner,
            _stdout: stdout,
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let o = patchgap_at(&self.addr, "", &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The one host, once its agent has reported.
    fn host(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let hosts = self.json(&["hosts"]);
            if let Some(h) = hosts["hosts"].as_array().and_then(|h| h.first()) {
                return h.clone();
            }
            assert!(Instant::now() < deadline, "no host reported: {hosts}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bpffs directory of this test's own, removed when dropped (also when
/// the test fails): the agent pins there, nowhere else.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.contains(" /sys/fs/bpf ") && l.contains(" - bpf "))
    })
}

/// The first look contains nothing: the banner says so, and the agent
/// tells the collector (plans will say "cannot contain" from it). The
/// scope map given to `up` classifies the host's own workload.
#[test]
fn up_contains_nothing_unless_asked_and_passes_the_scope_map_on() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("scopes.txt");
    std::fs::write(
        &map,
        "# the host itself holds the secrets\nkind=host => sensitive\n",
    )
    .unwrap();
    let runtime_root = dir.path().join("runtime");
    std::fs::create_dir(&runtime_root).unwrap();
    let up = Up::start(
        dir.path(),
        &[
            "--scope-map",
            map.to_str().unwrap(),
            "--runtime-root",
            runtime_root.to_str().unwrap(),
        ],
    );
    assert_eq!(
        up.banner[1], "containment: off (--contain turns it on)\n",
        "{:?}",
        up.banner
    );
    let host = up.host();
    assert_eq!(host["contain"], false, "{host}");
    assert_eq!(
        host["contain_reason"], "disabled by configuration",
        "{host}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let scope = loop {
        let w = up.json(&["workloads"]);
        let host_workload = w["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["kind"] == "host")
            .cloned();
        if let Some(h) = host_workload {
            break h["scope"].clone();
        }
        assert!(Instant::now() < deadline, "no host workload: {w}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(scope["classification"], "sensitive", "{scope}");
    assert_eq!(scope["source"], "mapping:2", "{scope}");
}

/// A mapping the collector would refuse stops `up` before it listens,
/// naming the line; so does --contain-dir without --contain.
#[test]
fn up_refuses_a_bad_scope_map_and_a_contain_dir_alone() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("scopes.txt");
    std::fs::write(&map, "kind=host => sensitive\nthis is not a rule\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(["up", "--no-ebpf", "--listen", "127.0.0.1:0", "--scope-map"])
        .arg(&map)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(!out.contains("listening"), "{out}");
    assert!(
        err.contains(&format!(
            "error: scope mapping: {}: line 2: missing \"=>\"",
            map.display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing opened");

    let o = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(["up", "--contain-dir", "/sys/fs/bpf/never-made"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--contain"), "{}", stderr(&o));
    assert!(!Path::new("/sys/fs/bpf/never-made").exists());
}

/// With --contain (root, bpffs mounted) the agent can contain and pins
/// under --contain-dir; the directory goes with the test.
#[test]
fn up_with_contain_pins_under_its_directory() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !bpffs_mounted() {
        eprintln!("skipped: needs root and bpffs at /sys/fs/bpf");
        return;
    }
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/patchgap-up-test-{}",
        std::process::id()
    )));
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        dir.path(),
        &["--contain", "--contain-dir", pins.0.to_str().unwrap()],
    );
    assert_eq!(
        up.banner[1],
        format!(
            "containment: on; the agent carries out approved isolations, pinned under {}\n",
            pins.0.display()
        )
    );
    let host = up.host();
    assert_eq!(host["contain"], true, "{host}");
    assert_eq!(host["contain_reason"], "", "{host}");
    assert!(pins.0.is_dir(), "the agent made its bpffs directory");
}

/// `up --policy FILE` hands the file to its collector: the answers name
/// the file as the policy in force (not the built-in one), and a plan is
/// routed by the file's one tier (a name and an action the built-in tier
/// 1 does not have).
#[test]
fn up_puts_its_policy_file_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[tier]]\nnumber = 1\nname = \"from the up test\"\n[[tier.rule]]\n\
         [[tier.action]]\nkind = \"open_ticket_sev3\"\nmode = \"observe\"\napproval = \"auto\"\n",
    )
    .unwrap();
    let up = Up::start(dir.path(), &["--policy", policy.to_str().unwrap()]);
    let listed = up.json(&["incidents"]);
    assert_eq!(
        listed["policy"]["source"],
        policy.display().to_string(),
        "{listed}"
    );
    assert!(listed["policy"]["reload_error"].is_null(), "{listed}");

    // Every process on this host maps Debian's libc6: an incident for it
    // is planned by the file's tier once the agent's first scan is in.
    up.host();
    let opened = up.json(&["incident", "open", "--package", "libc6"]);
    let id = opened["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let plan = loop {
        let plan = up.json(&["incident", "plan", &id]);
        if !plan["tier"].is_null() {
            break plan;
        }
        assert!(Instant::now() < deadline, "never routed: {plan}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        (&plan["tier"], &plan["tier_name"]),
        (&Value::from(1), &Value::from("from the up test")),
        "{plan}"
    );
    assert_eq!(plan["actions"][0]["kind"], "open_ticket_sev3", "{plan}");
    assert_eq!(
        plan["policy"]["source"],
        policy.display().to_string(),
        "{plan}"
    );
}
