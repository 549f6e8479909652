//! The README's "Secure it" setup across two network namespaces, with the
//! real binaries: a veth pair with documentation addresses, the collector
//! in one namespace serving TLS on 192.0.2.1, a real agent in the other
//! connecting over mTLS, and the CLI there with a `read` token listing the
//! agent's host (and its certificate expiry); with `--critical-needs-cert`,
//! `token list` needs the CLI certificate besides an admin token. No traffic leaves the
//! namespaces this test makes; they go in a drop guard.
//!
//! Needs root and `ip`; skipped (with a line saying so) otherwise.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const COLLECTOR_IP: &str = "192.0.2.1";
const AGENT_IP: &str = "192.0.2.2";

/// Two namespaces joined by a veth pair; deleted on drop.
struct Netns {
    collector: String,
    agent: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id();
        let ns = Netns {
            collector: format!("pg2h-c-{id}"),
            agent: format!("pg2h-a-{id}"),
        };
        let (vc, va) = (format!("pg2h{id}c"), format!("pg2h{id}a"));
        ip(&["netns", "add", &ns.collector]);
        ip(&["netns", "add", &ns.agent]);
        ip(&[
            "link",
            "add",
            &vc,
            "netns",
            &ns.collector,
            "type",
            "veth",
            "peer",
            "name",
            &va,
            "netns",
            &ns.agent,
        ]);
        for (n, dev, addr) in [
            (&ns.collector, &vc, COLLECTOR_IP),
            (&ns.agent, &va, AGENT_IP),
        ] {
            ip(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace takes its end of the veth pair, and the pair.
        for n in [&self.collector, &self.agent] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace's binaries, built for this profile if they are stale.
fn bins() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build.args([
        "build",
        "--quiet",
        "-p",
        "cli",
        "-p",
        "patchgap-collector",
        "-p",
        "patchgap-agent",
        "--bins",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "cargo build --bins");
    dir
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn in_ns(ns: &str, bin: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(bin);
    c
}

#[test]
fn secure_it_across_two_network_namespaces() {
    if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: needs root and ip(8) for network namespaces");
        return;
    }
    let bin = bins();
    let (patchgap, collector, agent) = (
        bin.join("patchgap"),
        bin.join("patchgap-collector"),
        bin.join("patchgap-agent"),
    );
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    let data = work.path().join("data");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    // The PKI, as the README makes it.
    let pki_s = pki.to_str().unwrap();
    run(Command::new(&patchgap).args(["pki", "init", "--dir", pki_s]));
    run(Command::new(&patchgap).args([
        "pki",
        "issue",
        "collector",
        "--dir",
        pki_s,
        "--san",
        COLLECTOR_IP,
    ]));
    run(Command::new(&patchgap).args(["pki", "issue", "agent", "--dir", pki_s, "--host", &host]));
    run(Command::new(&patchgap).args(["pki", "issue", "cli", "--dir", pki_s, "--name", "ops"]));

    let ns = Netns::new();
    let listen = format!("{COLLECTOR_IP}:7373");
    let url = format!("https://{listen}");
    // Without TLS, a non-loopback address is refused at start.
    let plain = run_fail(
        in_ns(&ns.collector, &collector)
            .args(["--listen", &listen, "--data-dir"])
            .arg(&data),
    );
    assert!(plain.contains("pki init"), "{plain}");
    let _collector = Proc(
        in_ns(&ns.collector, &collector)
            .args(["--listen", &listen, "--data-dir"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(pki.join("collector.crt"))
            .arg("--tls-key")
            .arg(pki.join("collector.key"))
            .arg("--client-ca")
            .arg(pki.join("ca.crt"))
            .arg("--critical-needs-cert")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("collector.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let _agent = Proc(
        in_ns(&ns.agent, &agent)
            .args(["run", "--collector", &url, "--no-ebpf", "--ca"])
            .arg(pki.join("ca.crt"))
            // Its own spool: the default directory may hold another run's.
            .arg("--state-dir")
            .arg(work.path().join("agent-state"))
            .arg("--cert")
            .arg(pki.join(format!("agent-{host}.crt")))
            .arg("--key")
            .arg(pki.join(format!("agent-{host}.key")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // The CLI, on the agent's side of the link.
    let hosts = |token: Option<&str>| {
        let mut c = in_ns(&ns.agent, &patchgap);
        c.args(["hosts", "-o", "json", "--collector", &url])
            .env("PATCHGAP_CA", pki.join("ca.crt"))
            .env_remove("PATCHGAP_TOKEN");
        if let Some(t) = token {
            c.env("PATCHGAP_TOKEN", t);
        }
        c.output().unwrap()
    };
    // Serving (its store open) once a call without a token is refused for
    // want of one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = hosts(None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        if err.contains("token") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never served: {err}\ncollector: {}",
            std::fs::read_to_string(work.path().join("collector.log")).unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The first token, minted on the collector's host from its data dir
    // once the collector serves, in the README's order.
    let out = run(Command::new(&collector)
        .args(["token", "issue", "--data-dir"])
        .arg(&data)
        .args(["--subject", "ops", "--scope", "read"]));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // With the token: the agent's host, its certificate expiry with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out = hosts(Some(&token));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        // Listed and connected: a host stays listed after its stream ends,
        // and only a live stream carries a certificate.
        let connected = serde_json::from_str::<serde_json::Value>(&stdout).is_ok_and(|j| {
            j["hosts"].as_array().is_some_and(|hs| {
                hs.iter()
                    .any(|h| h["host"] == host.as_str() && h["connected"] == true)
            })
        });
        if out.status.success() && connected {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's host never listed as connected: {stdout}{}\ncollector: {}\nagent: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(work.path().join("collector.log")).unwrap_or_default(),
            std::fs::read_to_string(work.path().join("agent.log")).unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let text = json.to_string();
    assert!(
        text.contains("\"cert_expires\":\"20"),
        "no certificate expiry: {text}"
    );
    // --critical-needs-cert: an admin token alone cannot list tokens; with
    // the CLI certificate it can.
    let out = run(Command::new(&collector)
        .args(["token", "issue", "--data-dir"])
        .arg(&data)
        .args(["--subject", "alice", "--scope", "admin"]));
    let admin = work.path().join("admin.token");
    std::fs::write(&admin, out.stdout).unwrap();
    let token_list = |cert: bool| {
        let mut c = in_ns(&ns.agent, &patchgap);
        c.args(["token", "list", "-o", "json", "--collector", &url])
            .arg("--token-file")
            .arg(&admin)
            .env("PATCHGAP_CA", pki.join("ca.crt"))
            .env_remove("PATCHGAP_TOKEN");
        if cert {
            c.arg("--cert")
                .arg(pki.join("cli-ops.crt"))
                .arg("--key")
                .arg(pki.join("cli-ops.key"));
        }
        c.output().unwrap()
    };
    let out = token_list(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs a CLI client certificate"),
        "{err}"
    );
    let out = token_list(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
}

/// Runs `cmd`, which must fail within 30 s; its stderr and stdout.
fn run_fail(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{cmd:?} started");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}
