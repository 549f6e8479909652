//! One-shot scan against lsof and needrestart:
//! `cargo bench -p patchgap-agent --bench oneshot`.
//!
//! A responder who runs `patchgap-agent scan` on a host compares it with
//! what they would have run instead: `lsof -nP` (every process's open and
//! mapped files) and `needrestart -b -r l` (which processes run deleted
//! libraries). This bench runs the three as the responder would, as whole
//! commands (the agent is this crate's binary, built with the bench
//! profile, which is release), on a host crowded to
//! `PATCHGAP_BENCH_HOST_PROCS` (default 1000) processes: it starts as many
//! real processes as are missing (one python importing ssl in ten, `sleep`
//! for the rest), all killed when the bench ends, also when it panics.
//!
//! Each of `PATCHGAP_BENCH_ROUNDS` (default 7) rounds runs every command
//! once, in turn, so that a noisy shared machine weighs on all of them
//! alike. A command's CPU is its user + system time as `wait4` reports it
//! for the child, so other work on the machine changes its wall time but
//! hardly its CPU time. Output goes to /dev/null for all of them. The
//! report is the median over the rounds of each command's CPU seconds,
//! and of its ratio to lsof's in the same round; the goal is a ratio of at
//! most 1.0 for the agent.
//!
//! `PATCHGAP_BENCH_BASELINE_AGENT=/path/to/patchgap-agent` adds another
//! agent binary to the same rounds (a build of the main branch, say), so a
//! before/after comparison comes out of one run. needrestart is measured
//! when it is installed; otherwise the report says it was skipped.
//!
//! The bench panics if lsof is missing, if a command fails, or if the
//! agent's inventory misses a process of the crowd it started.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use patchgap_agent::fixture::Crowd;

const LSOF: &str = "/usr/bin/lsof";
const NEEDRESTART: &str = "/usr/sbin/needrestart";

fn main() {
    let host_procs = env_u32("PATCHGAP_BENCH_HOST_PROCS", 1000);
    let rounds = env_u32("PATCHGAP_BENCH_ROUNDS", 7);
    assert!(rounds > 0, "PATCHGAP_BENCH_ROUNDS must be > 0");
    assert!(
        Path::new(LSOF).exists(),
        "{LSOF} is not installed: it is the baseline of this bench (apt-get install lsof)"
    );

    let agent = PathBuf::from(env!("CARGO_BIN_EXE_patchgap-agent"));
    let mut commands = vec![Cmd::new("patchgap-agent scan", &agent, &["scan"])];
    if let Ok(base) = std::env::var("PATCHGAP_BENCH_BASELINE_AGENT") {
        let base = PathBuf::from(base);
        assert!(
            base.exists(),
            "PATCHGAP_BENCH_BASELINE_AGENT={} does not exist",
            base.display()
        );
        commands.push(Cmd::new("baseline agent scan", &base, &["scan"]));
    }
    commands.push(Cmd::new("lsof -nP", Path::new(LSOF), &["-nP"]));
    let needrestart = Path::new(NEEDRESTART).exists();
    if needrestart {
        commands.push(Cmd::new(
            "needrestart -b -r l",
            Path::new(NEEDRESTART),
            &["-b", "-r", "l"],
        ));
    }

    let missing = host_procs.saturating_sub(count_pids());
    let crowd = Crowd::spawn(missing).expect("starting the crowd");
    let on_host = count_pids();
    // The agent must see the crowd: a scan that skipped it would be cheap
    // for the wrong reason.
    let seen = agent_pids(&agent);
    let missed = crowd.pids().filter(|p| !seen.contains(p)).count();
    assert_eq!(
        missed,
        0,
        "the agent's inventory misses {missed} of the {} processes the bench started",
        crowd.len()
    );
    let seen = seen.len();

    println!(
        "patchgap-agent one-shot scan vs lsof: {on_host} pids on the host, {seen} of them user processes in the agent's inventory ({} started by the bench: 1 in 10 python with ssl, the rest sleep), {rounds} rounds, {} CPUs",
        crowd.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("agent: {}", agent.display());
    if !needrestart {
        println!("needrestart not installed ({NEEDRESTART}), skipped");
    }

    for _ in 0..rounds {
        for c in &mut commands {
            let usage = c.run();
            c.samples.push(usage);
        }
    }

    let lsof = commands
        .iter()
        .position(|c| c.name == "lsof -nP")
        .expect("lsof is measured");
    let lsof_cpu: Vec<f64> = commands[lsof].samples.iter().map(Usage::cpu_s).collect();
    println!();
    println!(
        "{:<22} | {:>8} {:>8} {:>8} {:>8} | {:>13} | {:>8}",
        "command", "user s", "sys s", "CPU s", "CPU min", "ratio to lsof", "wall s"
    );
    println!(
        "{:<22} | {:>35} | {:>13} | {:>8}",
        "", "median over rounds", "median", "median"
    );
    println!("{}", "-".repeat(84));
    let mut json = serde_json::Map::new();
    for c in &commands {
        let cpu: Vec<f64> = c.samples.iter().map(Usage::cpu_s).collect();
        let ratios: Vec<f64> = cpu
            .iter()
            .zip(&lsof_cpu)
            .map(|(a, b)| if *b > 0.0 { a / b } else { f64::NAN })
            .collect();
        let user = median(c.samples.iter().map(|u| u.user_s).collect());
        let sys = median(c.samples.iter().map(|u| u.sys_s).collect());
        let wall = median(c.samples.iter().map(|u| u.wall_s).collect());
        let cpu_min = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let cpu_med = median(cpu.clone());
        let ratio = median(ratios.clone());
        println!(
            "{:<22} | {user:>8.3} {sys:>8.3} {cpu_med:>8.3} {cpu_min:>8.3} | {ratio:>12.2}x | {wall:>8.3}",
            c.name
        );
        json.insert(
            c.name.to_string(),
            serde_json::json!({
                "user_s_median": user,
                "sys_s_median": sys,
                "cpu_s_median": cpu_med,
                "cpu_s_min": cpu_min,
                "cpu_s": cpu,
                "ratio_to_lsof_median": ratio,
                "ratio_to_lsof": ratios,
                "wall_s_median": wall,
            }),
        );
    }
    let agent_ratio = json["patchgap-agent scan"]["ratio_to_lsof_median"]
        .as_f64()
        .unwrap_or(f64::NAN);
    println!();
    println!(
        "goal: patchgap-agent scan at most 1.0x lsof's CPU: {agent_ratio:.2}x, {}",
        if agent_ratio <= 1.0 { "met" } else { "NOT MET" }
    );
    let summary = serde_json::json!({
        "bench": "patchgap-agent/oneshot",
        "host_processes": on_host,
        "started": crowd.len(),
        "agent_processes_seen": seen,
        "rounds": rounds,
        "needrestart": needrestart,
        "commands": json,
        "goal_met": agent_ratio <= 1.0,
    });
    println!();
    println!("{summary}");
    drop(crowd);
}

/// One measured command and its samples.
struct Cmd {
    name: &'static str,
    program: PathBuf,
    args: Vec<&'static str>,
    samples: Vec<Usage>,
}

impl Cmd {
    fn new(name: &'static str, program: &Path, args: &[&'static str]) -> Cmd {
        Cmd {
            name,
            program: program.to_path_buf(),
            args: args.to_vec(),
            samples: Vec::new(),
        }
    }

    /// Runs the command once, output to /dev/null, and returns its
    /// resource usage. Panics if it fails.
    // The child is reaped by `wait4`, which std's `wait` cannot replace:
    // it does not give the child's rusage.
    #[allow(clippy::zombie_processes)]
    fn run(&self) -> Usage {
        // A file, not a pipe: nothing reads stderr while the child runs.
        let mut stderr = tempfile::tempfile().expect("a temporary file for stderr");
        let wall = Instant::now();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().expect("dup the stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let (status, usage) = wait4(&child);
        let wall_s = wall.elapsed().as_secs_f64();
        if !status.success() {
            let mut err = String::new();
            let _ = std::io::Seek::rewind(&mut stderr);
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            panic!("{} failed ({status}): {err}", self.name);
        }
        Usage { wall_s, ..usage }
    }
}

/// A child's CPU, from `wait4`. (Not its peak RSS: a child's `ru_maxrss`
/// counts the bench's own pages from before the exec.)
#[derive(Debug, Clone, Copy)]
struct Usage {
    user_s: f64,
    sys_s: f64,
    wall_s: f64,
}

impl Usage {
    fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Waits for the child and takes its rusage (its own, not that of other
/// children of the bench).
fn wait4(child: &Child) -> (std::process::ExitStatus, Usage) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our unwaited child; status and ru are writable.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}): {e}"
        );
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        std::process::ExitStatus::from_raw(status),
        Usage {
            user_s: tv(ru.ru_utime),
            sys_s: tv(ru.ru_stime),
            wall_s: 0.0,
        },
    )
}

/// The pids in the agent's inventory (one untimed run).
fn agent_pids(agent: &Path) -> std::collections::HashSet<u32> {
    let out = Command::new(agent)
        .arg("scan")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", agent.display()));
    assert!(out.status.success(), "patchgap-agent scan: {}", out.status);
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the scan is JSON");
    inv["processes"]
        .as_array()
        .expect("the inventory has processes")
        .iter()
        .filter_map(|p| Some(p["pid"].as_u64()? as u32))
        .collect()
}

/// The pids in /proc now.
fn count_pids() -> u32 {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        })
        .count() as u32
}

/// Reads a non-negative integer from the environment.
fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
