//! A collector nobody can stall, with the real binaries: `patchgap up`
//! (a collector and its agent) under a 1,024-descriptor limit keeps
//! serving its agent and the CLI through 2,000 idle connections, logs the
//! refusals and closes the idle ones; and the CLI gives up on a stopped
//! collector within its --timeout, naming it.

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    os::unix::process::CommandExt,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// `patchgap up` on an ephemeral loopback port; killed when dropped.
struct Up {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start(nofile: Option<u64>) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("up.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchgap"));
        cmd.args([
            "up",
            "--no-ebpf",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--interval",
            "2",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe and touches only the
            // child's own limits.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn patchgap up");
        let mut line = String::new();
        // Kept open: `up` prints more, and a closed pipe would end it.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Up {
            child,
            addr,
            log,
            _stdout: stdout,
            _dir: dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: signals to our own child.
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- patchgap up log ----\n{}----", self.log());
        }
    }
}

fn patchgap(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .env_remove("PATCHGAP_COLLECTOR")
        .env_remove("PATCHGAP_CA")
        .output()
        .expect("run patchgap");
    (out, started.elapsed())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The host's `last_seen` (RFC 3339) as `patchgap hosts` says it.
fn hosts(addr: &str) -> serde_json::Value {
    let (o, _) = patchgap(&[
        "hosts",
        "--collector",
        addr,
        "-o",
        "json",
        "--timeout",
        "20",
    ]);
    assert!(o.status.success(), "hosts: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_thousand_idle_connections_under_1024_descriptors() {
    // Our side holds 2,000 sockets: raise our own soft limit.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get and set our own limits with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_max < 4096 {
            eprintln!(
                "skipped: the hard descriptor limit ({}) is below 4096",
                rl.rlim_max
            );
            return;
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    let up = Up::start(Some(1024));
    let addr = up.addr.clone();
    // The agent's first snapshot is in.
    wait_until("the agent's first snapshot", || {
        hosts(&addr)["hosts"][0]["processes_running"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    let before = hosts(&addr)["hosts"][0]["last_seen"]
        .as_str()
        .unwrap()
        .to_string();

    let mut idle = Vec::new();
    let mut peak = 0;
    for i in 0..2000 {
        // The kernel completes a connection into the backlog whatever the
        // collector does with it; refused ones are closed at once.
        if let Ok(s) = TcpStream::connect(&addr) {
            idle.push(s);
        }
        if i % 100 == 0 {
            peak = peak.max(up.descriptors());
        }
    }
    assert!(idle.len() >= 1900, "only {} connections opened", idle.len());
    // While they are held: the CLI is served.
    let (o, took) = patchgap(&["ps", "--collector", &addr, "-o", "json", "--timeout", "20"]);
    assert!(
        o.status.success(),
        "ps during the flood ({took:?}): {}",
        text(&o)
    );
    let ps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!ps["processes"].as_array().unwrap().is_empty());
    peak = peak.max(up.descriptors());
    // And the agent's messages are still stored: its host is seen again.
    wait_until("the agent reports through the flood", || {
        peak = peak.max(up.descriptors());
        hosts(&addr)["hosts"][0]["last_seen"].as_str().unwrap() > before.as_str()
    });
    assert!(
        hosts(&addr)["hosts"][0]["connected"].as_bool() == Some(true),
        "the agent's stream stays up"
    );
    assert!(peak < 1024, "{peak} descriptors in use, the limit is 1024");
    // The refusals (and the room made) are logged, rate-limited.
    let log = up.log();
    assert!(
        log.contains("refusing connection from 127.0.0.1:")
            || log.contains("closing idle connection from 127.0.0.1:"),
        "no refusal logged:\n{log}"
    );
    let refusals = log.matches("refusing connection from").count()
        + log.matches("closing idle connection from").count();
    eprintln!(
        "{} connections held, peak {peak} of 1024 descriptors, ps took {took:?}, {refusals} refusal lines",
        idle.len()
    );
    assert!(refusals < 200, "{refusals} refusal lines: not rate-limited");
    assert!(log.contains("of 1024 descriptors in use"), "{log}");
    // Connections that never send a request are closed (10 s), though we
    // still hold them open.
    wait_until("idle connections closed", || up.descriptors() < 100);
    drop(idle);
    let (o, _) = patchgap(&["ps", "--collector", &addr, "--timeout", "20"]);
    assert!(o.status.success(), "ps after the flood: {}", text(&o));
}

#[test]
fn a_stopped_collector_times_out_naming_it() {
    let up = Up::start(None);
    let addr = up.addr.clone();
    wait_until("the collector answers", || {
        patchgap(&["hosts", "--collector", &addr, "--timeout", "10"])
            .0
            .status
            .success()
    });
    // SAFETY: a signal to our own child (continued in Drop).
    unsafe { libc::kill(up.pid(), libc::SIGSTOP) };
    for args in [
        &["ps", "--collector", &addr, "--timeout", "3"][..],
        &["query", "libc6", "--collector", &addr, "--timeout", "3s"][..],
    ] {
        let (o, took) = patchgap(args);
        assert!(
            !o.status.success(),
            "{args:?} succeeded against a stopped collector"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("http://{addr}")) && err.contains("did not answer within 3 s"),
            "{args:?}: {err}"
        );
        // 3 s, and generous room for a loaded machine.
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
        assert!(
            took >= Duration::from_secs(2),
            "{args:?} gave up early: {took:?}"
        );
    }
    // The default is 30 s; a bad value is refused before anything is sent.
    let (o, _) = patchgap(&["ps", "--collector", &addr, "--timeout", "0"]);
    assert!(
        !o.status.success() && text(&o).contains("at least 1s"),
        "{}",
        text(&o)
    );
}
