//! Verify's "Inconclusive" acceptance, live (issue 17): a second host
//! goes silent, and the incident stays open as `inconclusive`, naming it.
//!
//! The real `patchgap-collector` serves plaintext on 203.0.113.1, the
//! host end of a veth pair (documentation addresses; nothing leaves the
//! machine). Host "alpha" is this machine's own agent. Host "beta" is a
//! second real `patchgap-agent` in namespaces the test makes: a network
//! namespace behind the veth (it reaches the collector at 203.0.113.1
//! from 203.0.113.2), and its own pid, mount and UTS namespaces, so it
//! names a host of its own: its hostname, and a machine-id bind-mounted
//! over /etc/machine-id where it reads it (through PID 1's root). Without
//! its own machine-id, a second agent on this machine claims alpha's
//! identity (the collector keys hosts by machine-id, and reports the
//! conflict) and beta never enters any scope.
//!
//! A python in beta's pid namespace maps pip 23.0.1's native library
//! (a locally built stand-in distribution in a venv), which the real
//! PyPA record PYSEC-2023-228 affects; alpha sees the same process from
//! the host's pid namespace, so both hosts are in the incident's scope.
//! The fix (the process exits) turns the checks green; K is set out of
//! reach so the incident stays open. Then beta's agent is stopped
//! (SIGSTOP): past `--fresh-after`, each run is `inconclusive`, the
//! incident stays open, and its blockers name beta and since when; no
//! run is `successful` while it is silent. Resumed (SIGCONT), beta is
//! fresh again and the runs are green again.
//!
//! Root is assumed (CI runs as root). The processes, the namespaces and
//! the veth have guards that remove them, also when an assertion fails.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use patchgap_tests::{VethNamespace, built_bins, free_port, pids_of, py};
use serde_json::Value;

const HOST_IP: &str = "203.0.113.1";
const BETA_IP: &str = "203.0.113.2";
/// `--fresh-after`: longer than the agents' 10 s heartbeat, so a live
/// host with nothing new to say never counts as silent.
const FRESH_AFTER_S: u64 = 15;

/// A child killed (-9) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    bins: PathBuf,
    url: String,
}

impl World {
    fn patchgap(&self, args: &[&str]) -> Output {
        Command::new(self.bins.join("patchgap"))
            .args(args)
            .args(["--collector", &self.url])
            .env_remove("PATCHGAP_COLLECTOR")
            .env_remove("PATCHGAP_TOKEN")
            .output()
            .expect("run patchgap")
    }

    fn json(&self, args: &[&str]) -> Value {
        let o = self.patchgap(args);
        assert!(
            o.status.success(),
            "patchgap {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    }

    /// Polls `incident show` until `pred` holds (at most `within`);
    /// `logs` are printed when it never does.
    fn show_until(
        &self,
        id: &str,
        within: Duration,
        logs: &Path,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let shown = self.json(&["incident", "show", id, "-o", "json"]);
            if pred(&shown) {
                return shown;
            }
            if Instant::now() > deadline {
                panic!("incident never got there: {shown:#}\n{}", read_logs(logs));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The host `name` as `hosts -o json` lists it.
    fn host(&self, name: &str) -> Option<Value> {
        self.json(&["hosts", "-o", "json"])["hosts"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["host"] == name).cloned())
    }
}

fn read_logs(dir: &Path) -> String {
    ["collector.log", "alpha.log", "beta/agent.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {f} (last 30 lines)\n{}\n", tail.join("\n"))
        })
        .collect()
}

fn blockers(shown: &Value) -> Vec<String> {
    shown["verification"]["blockers"]
        .as_array()
        .map(|b| b.iter().map(|l| l.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The `checked` events: (at, verdict).
fn runs(shown: &Value) -> Vec<(String, String)> {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "checked")
        .map(|e| {
            (
                e["at"].as_str().unwrap().to_string(),
                e["run"]["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (through ip and unshare).
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_second_host_gone_silent_keeps_the_incident_open_as_inconclusive_and_names_it() {
    let bins = built_bins();
    let scratch = tempfile::tempdir().unwrap();
    let logs = scratch.path();
    let id = std::process::id();
    let port = free_port();
    let url = format!("http://{HOST_IP}:{port}");
    let net = VethNamespace::create(
        &format!("pgsilent-{id}"),
        &format!("pgs{}", id % 1_000_000),
        &format!("{HOST_IP}/24"),
        &format!("{BETA_IP}/24"),
    );
    let (python, site) = py::bare_venv(scratch.path());
    py::install_native_dist(&site, "pip", "23.0.1");

    let data = scratch.path().join("data");
    // The built-in policy written out, with a [verify] table.
    let policy = scratch.path().join("policy.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/policy.example.toml"),
    )
    .unwrap();
    std::fs::write(
        &policy,
        format!("{example}\n[verify]\nstreak = 7\nevidence = [\"loaded\"]\n"),
    )
    .unwrap();
    let _collector = Daemon(
        Command::new(bins.join("patchgap-collector"))
            .args([
                "--listen",
                &format!("{HOST_IP}:{port}"),
                "--insecure-plaintext",
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(["--fresh-after", &FRESH_AFTER_S.to_string()])
            // K out of reach: the green runs never close the incident
            // while the test watches. The flag wins over the policy
            // file's streak; its evidence levels apply.
            .args(["--verify-every", "1s", "--verify-streak", "1000"])
            .arg("--policy")
            .arg(&policy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join("collector.log")).unwrap())
            .spawn()
            .expect("start the collector"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect((HOST_IP, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the collector did not listen\n{}",
            read_logs(logs)
        );
        thread::sleep(Duration::from_millis(50));
    }
    let w = World {
        bins: bins.clone(),
        url: url.clone(),
    };
    let alpha = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let _alpha_agent = Daemon(
        Command::new(bins.join("patchgap-agent"))
            .args(["run", "--collector", &url, "--no-ebpf", "--no-contain"])
            .args(["--interval", "2"])
            .arg("--state-dir")
            .arg(scratch.path().join("alpha-state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join("alpha.log")).unwrap())
            .spawn()
            .expect("start alpha's agent"),
    );

    // Beta: PID 1 of its pid namespace is a shell that names the host,
    // starts the python (its stdin is the test's pipe: closing it is the
    // fix) and runs the agent in the foreground (the shell reaps the
    // python when it exits, so no zombie lingers in either scan).
    let beta = format!("pg-beta-{id}");
    let beta_dir = scratch.path().join("beta");
    std::fs::create_dir_all(&beta_dir).unwrap();
    std::fs::write(
        beta_dir.join("machine-id"),
        format!("{:032x}\n", 0xbe7a_u128 << 64 | u128::from(id)),
    )
    .unwrap();
    let script = format!(
        "import sys\n{}\nprint('ready', flush=True)\nsys.stdin.read()\n",
        py::load_native_dist("pip")
    );
    let shell = r#"set -e
hostname "$BETA"
# A machine without /etc/machine-id (a container image's root) names
# its hosts by hostname, which beta's own UTS namespace sets apart.
if [ -e /etc/machine-id ]; then mount --bind "$DIR/machine-id" /etc/machine-id; fi
exec 3<&0
"$PYTHON" -c "$SCRIPT" <&3 &
exec 3<&-
"$AGENT" run --collector "$URL" --no-ebpf --no-contain --interval 2 --state-dir "$DIR/state" </dev/null >"$DIR/agent.log" 2>&1
"#;
    let mut beta_ns = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &net.ns])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(["--mount", "--uts", "/bin/sh", "-c", shell])
            .env("BETA", &beta)
            .env("DIR", &beta_dir)
            .env("PYTHON", &python)
            .env("SCRIPT", &script)
            .env("AGENT", bins.join("patchgap-agent"))
            .env("URL", &url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start beta"),
    );
    let mut line = String::new();
    BufReader::new(beta_ns.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "beta's python did not start");
    let beta_state = beta_dir.join("state");
    let beta_agent = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match pids_of(&bins.join("patchgap-agent"), beta_state.to_str().unwrap())[..] {
                [pid] => break pid,
                _ => {
                    assert!(Instant::now() < deadline, "beta's agent did not start");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    };

    // Import the real record; once it matched the python on both hosts
    // (the matcher's verdicts are stored a moment after the import: the
    // answer's coverage names both hosts long before its matches do),
    // open.
    let advisory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/osv/pypa/vulns/pip/PYSEC-2023-228.yaml");
    w.json(&[
        "advisories",
        "import",
        advisory.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = w.json(&["query", "--advisory", "PYSEC-2023-228", "-o", "json"]);
        let hosts: Vec<&str> = answer["matches"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["package"].to_string().contains("23.0.1"))
            .filter_map(|m| m["host"].as_str())
            .collect();
        if hosts.contains(&alpha.as_str()) && hosts.contains(&beta.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both hosts never matched: {answer:#}\n{}",
            read_logs(logs)
        );
        thread::sleep(Duration::from_millis(500));
    }
    let opened = w.json(&[
        "incident",
        "open",
        "--advisory",
        "PYSEC-2023-228",
        "-o",
        "json",
    ]);
    let inc = opened["id"].as_str().unwrap().to_string();
    let hosts = opened["scope"]["hosts"].to_string();
    assert!(
        hosts.contains(&format!("\"{alpha}\"")) && hosts.contains(&format!("\"{beta}\"")),
        "{opened:#}"
    );

    // Tier 3 (the record's own low severity): nothing to contain on
    // hosts, so verification starts from the plan, and fails on both.
    let shown = w.show_until(&inc, Duration::from_secs(30), logs, |s| {
        s["verification"]["verdict"] == "failed"
    });
    // How verification runs, and where each setting came from.
    let v = &shown["policy"]["verify"];
    assert_eq!(
        (&v["every_ms"], &v["streak"], &v["evidence"]),
        (&1000.into(), &1000.into(), &serde_json::json!(["loaded"])),
        "{shown:#}"
    );
    assert_eq!(
        v["from"],
        serde_json::json!({"every": "flag", "streak": "flag", "evidence": "policy file"})
    );
    let b = blockers(&shown);
    for host in [&alpha, &beta] {
        assert!(
            b.iter()
                .any(|l| l.contains(&format!(" on {host} runs pkg:pypi/pip@23.0.1"))),
            "{host} not named: {b:#?}"
        );
    }

    // The fix: the process exits; both hosts report it, and the runs are
    // green (K out of reach: still verifying).
    drop(beta_ns.0.stdin.take());
    let shown = w.show_until(&inc, Duration::from_secs(30), logs, |s| {
        s["verification"]["verdict"] == "successful"
    });
    assert_eq!(shown["state"], "verifying", "{shown:#}");

    // Beta goes silent.
    signal(beta_agent, libc::SIGSTOP);
    let stopped = Instant::now();
    let shown = w.show_until(&inc, Duration::from_secs(FRESH_AFTER_S + 15), logs, |s| {
        s["verification"]["verdict"] == "inconclusive"
    });
    let took = stopped.elapsed();
    let last_seen = w.host(&beta).expect("beta listed")["last_seen"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(shown["state"], "verifying", "open: {shown:#}");
    assert_eq!(shown["verification"]["streak"], 0);
    let b = blockers(&shown);
    let want = format!("coverage (inconclusive): host {beta} silent since {last_seen} (");
    assert!(
        b.iter().any(|l| l.starts_with(&want)),
        "{want} not in {b:#?}"
    );
    assert!(
        !b.iter().any(|l| l.contains(&format!("host {alpha} "))),
        "alpha reports: {b:#?}"
    );
    // Every other check is green: silence alone keeps it open.
    for c in shown["verification"]["checks"].as_array().unwrap() {
        if c["check"] != "coverage" {
            assert_eq!(c["verdict"], "successful", "{c:#}");
        }
    }
    eprintln!(
        "beta stopped; inconclusive after {:.1} s (--fresh-after {FRESH_AFTER_S})",
        took.as_secs_f64()
    );
    assert!(
        took <= Duration::from_secs(FRESH_AFTER_S + 12),
        "inconclusive only after {took:?}"
    );

    // While it stays silent, no run is successful and nothing closes.
    thread::sleep(Duration::from_secs(4));
    let shown = w.json(&["incident", "show", &inc, "-o", "json"]);
    assert_eq!(shown["state"], "verifying", "{shown:#}");
    let first = runs(&shown)
        .iter()
        .position(|(_, v)| v == "inconclusive")
        .expect("an inconclusive run");
    let silent_runs = &runs(&shown)[first..];
    assert!(silent_runs.len() >= 3, "{silent_runs:?}");
    assert!(
        silent_runs.iter().all(|(_, v)| v == "inconclusive"),
        "{silent_runs:?}"
    );
    let kinds = shown["events"].to_string();
    assert!(
        !kinds.contains("\"to\":\"recovering\"") && !kinds.contains("\"to\":\"closed\""),
        "{kinds}"
    );

    // Resumed, beta is fresh again, and so are the runs.
    signal(beta_agent, libc::SIGCONT);
    let shown = w.show_until(&inc, Duration::from_secs(45), logs, |s| {
        s["verification"]["verdict"] == "successful"
    });
    assert!(
        !blockers(&shown).iter().any(|l| l.contains("silent")),
        "{shown:#}"
    );
}
