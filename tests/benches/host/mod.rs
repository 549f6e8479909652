//! What the overhead and soak benches share: the release agent binary, a
//! process's CPU, RSS and descriptors from /proc, and a realistic host's
//! processes.
//!
//! Each bench uses part of it.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The agent binary, built in release by this bench (cargo builds only the
/// bench's own package's binaries).
pub fn agent_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "patchgap-agent",
            "--bin",
            "patchgap-agent",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building patchgap-agent");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("release/patchgap-agent")
}

/// utime + stime of a process, in seconds.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent stat");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line are 12 and 13 after "pid (comm) ".
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

pub fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

pub struct Agent(pub Child);

/// The processes of a realistic host, killed when dropped.
pub struct Workload(Vec<Child>, Option<tempfile::TempDir>);

impl Workload {
    pub fn start() -> Workload {
        let dir = tempfile::tempdir().unwrap();
        let java = dir.path().join("Busy.java");
        std::fs::write(
            &java,
            "public class Busy { public static void main(String[] a) throws Exception {\n\
             while (true) { StringBuilder s = new StringBuilder();\n\
             for (int i = 0; i < 10000; i++) s.append(i); Thread.sleep(50); } } }\n",
        )
        .unwrap();
        let spawn = |cmd: &mut Command| {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start a workload process")
        };
        let children = vec![
            spawn(Command::new("/usr/bin/python3").args([
                "-c",
                "import ssl, sqlite3, ctypes, json, hashlib, time\n\
                 while True:\n    hashlib.sha256(b'x' * 65536).digest(); time.sleep(0.01)",
            ])),
            spawn(Command::new("node").args([
                "-e",
                "const http = require('http');\
                 http.createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1', function () {\
                 const port = this.address().port;\
                 setInterval(() => http.get({host: '127.0.0.1', port}, r => r.resume()), 100); });",
            ])),
            spawn(Command::new("java").arg(&java)),
        ];
        // The JVM compiles its source first: let everything settle.
        std::thread::sleep(Duration::from_secs(5));
        Workload(children, Some(dir))
    }

    /// Adds `n` sleeping processes (a host's idle daemons and shells).
    pub fn sleepers(&mut self, n: usize) {
        for _ in 0..n {
            let child = Command::new("sleep")
                .arg("1000000")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start a sleeper");
            self.0.push(child);
        }
    }

    pub fn describe(&self) -> String {
        let pids: Vec<String> = self.0.iter().take(3).map(|c| c.id().to_string()).collect();
        let sleepers = self.0.len().saturating_sub(3);
        format!(
            "python, node and a JVM running (pids {}){}",
            pids.join(", "),
            if sleepers > 0 {
                format!(" and {sleepers} sleepers")
            } else {
                String::new()
            }
        )
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.1.take();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many descriptors a process holds.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
