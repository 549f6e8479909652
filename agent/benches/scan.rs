//! Scan benchmark: `cargo bench -p patchgap-agent --bench scan`.
//!
//! One run measures, interleaved so that a noisy shared machine affects all
//! of them alike:
//!
//! 1. baseline: the CPU time to merely `std::fs::read` the files the scanner
//!    reads per pid (stat, status, cmdline, cgroup, maps) of the synthetic
//!    tree, the raw-I/O floor that the scans are reported against;
//! 2. a scan of this host's real /proc, cold (new `Scanner`) and warm (second
//!    scan on the same `Scanner`), after starting `PATCHGAP_BENCH_REAL_PROCS`
//!    (default 1000) real processes (one python importing ssl in ten, `sleep`
//!    for the rest), so the real host has about a thousand processes whose
//!    files the kernel generates on every read;
//! 3. a scan of a synthetic tree of `PATCHGAP_BENCH_PROCS` (default 1000)
//!    processes, cold and warm, whose maps are real maps of this host's
//!    processes, so that the mapped files resolve against the host's dpkg db;
//! 4. the scanner's phases, re-enacted one at a time with the crate's public
//!    API on the synthetic tree, to show where the time goes.
//!
//! Each measurement is repeated `PATCHGAP_BENCH_ITERS` (default 5) times;
//! min and median are printed as a table, followed by one line of JSON. The
//! table also has the same reads on the real /proc, whose files the kernel
//! generates on every read, for comparison. CPU is thread CPU
//! (`stats.cpu_micros` for scans) and process CPU (`CLOCK_PROCESS_CPUTIME_ID`
//! around the call). The warm synthetic scan is held against a budget of
//! 0.3 s CPU per 1000 processes (reported, not enforced: the machine may be
//! shared); the ratios to the baseline read are the numbers to compare
//! across machines.
//!
//! The bench panics if the synthetic scan does not find exactly the
//! processes of the tree, resolves no artifact to a package, or a warm scan
//! has no resolve cache hit.
//!
//! The whole `patchgap-agent scan` command, side by side with `lsof -nP`
//! and needrestart, is measured by the `oneshot` bench (`benches/oneshot.rs`).
//!
//! For a profile of one kind of scan alone, set `PATCHGAP_BENCH_PROFILE` to
//! `synthetic-warm`, `synthetic-cold`, `real-warm` or `real-cold` and run
//! the bench binary under `perf record`.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    hint::black_box,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use patchgap_agent::{
    fixture::{self, ProcTemplate, TreeSpec},
    model::ScanStats,
    parse,
    resolve::PackageDb,
    rootfs::{RootFs, in_root_path},
    scan::{ScanConfig, Scanner, primary_cgroup},
};

/// CPU budget of a warm scan of 1000 processes.
const BUDGET_CPU_S_PER_1000: f64 = 0.3;
/// The per-pid files the baseline reads: what the scanner reads with `read`.
const SCANNED_FILES: [&str; 5] = ["stat", "status", "cmdline", "cgroup", "maps"];
/// How many real processes besides this one lend their maps at most.
const MAX_OTHER_TEMPLATES: usize = 4;
/// A real process lends its maps only with at least this many maps lines of
/// files that the host's dpkg database owns, and only if they are at least
/// half of its file-backed lines: as on a Debian host's long-lived services.
const MIN_OWNED_MAPPINGS: usize = 10;
/// A real process lends its maps only if it has been running this long, so
/// that short-lived commands (compilers, shell pipelines) do not make the
/// tree depend on the moment the bench starts.
const MIN_AGE_S: f64 = 60.0;
const PYTHON: &str = "/usr/bin/python3";
const PYTHON_SCRIPT: &str = "import ssl, json, sqlite3, ctypes, lzma, bz2, decimal, hashlib, uuid, csv, socket, \
     xml.etree.ElementTree, sys, time; print('ready', flush=True); time.sleep(30)";

fn main() {
    let procs = env_u32("PATCHGAP_BENCH_PROCS", 1000);
    let iters = env_u32("PATCHGAP_BENCH_ITERS", 5);
    assert!(procs > 0, "PATCHGAP_BENCH_PROCS must be > 0");
    assert!(iters > 0, "PATCHGAP_BENCH_ITERS must be > 0");

    let templates = capture_templates();
    let tree = TempTree::new();
    let spec = TreeSpec::new(
        procs,
        templates.iter().map(|t| t.template.clone()).collect(),
    );
    let pids = fixture::write_proc_tree(&tree.0, &spec)
        .unwrap_or_else(|e| panic!("writing the synthetic tree {}: {e}", tree.0.display()));
    let files: Vec<PathBuf> = pids
        .iter()
        .flat_map(|pid| {
            let dir = tree.0.join(pid.to_string());
            SCANNED_FILES.map(|f| dir.join(f))
        })
        .collect();
    if let Ok(mode) = std::env::var("PATCHGAP_BENCH_PROFILE") {
        profile(&mode, &tree.0, iters);
        return;
    }
    let phases = Phases::prepare(&tree.0, &pids);
    // Real processes, so the "real /proc" rows also scan a crowded host whose
    // files the kernel generates on every read (the synthetic tree's are
    // plain files, which understates the kernel's share).
    let crowd_size = env_u32("PATCHGAP_BENCH_REAL_PROCS", 1000);
    let crowd = fixture::Crowd::spawn(crowd_size).expect("starting the real crowd");

    println!(
        "patchgap-agent scan bench: {procs} synthetic processes, {iters} iterations, {} CPUs, tree {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tree.0.display()
    );
    println!(
        "real crowd: {} processes started for the real /proc rows (1 in 10 python with ssl, the rest sleep; PATCHGAP_BENCH_REAL_PROCS)",
        crowd.len()
    );
    println!("maps templates (captured from real processes, rotated over the synthetic pids):");
    for t in &templates {
        println!(
            "  {:<22} {:>4} lines {:>4} file mappings {:>4} dpkg-owned  exe {}",
            t.source,
            t.template.mappings(),
            t.template.file_mappings(),
            t.owned,
            t.template.exe.display()
        );
    }

    let mut baseline = Vec::new();
    let mut real_baseline = Vec::new();
    let mut real_pids = 0;
    let mut synth = Series::default();
    let mut real = Series::default();
    let mut phase_samples: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for _ in 0..iters {
        baseline.push(read_all(&files));
        let (sample, n) = read_real(Path::new("/proc"));
        real_baseline.push(sample);
        real_pids = n;
        synth.run(&tree.0, Some(procs));
        real.run(Path::new("/proc"), None);
        for (name, us) in phases.run() {
            phase_samples.entry(name).or_default().push(us);
        }
    }

    let base = Summary::of(&baseline);
    let rbase = Summary::of(&real_baseline);
    let cold = Summary::of(&synth.cold);
    let warm = Summary::of(&synth.warm);
    let rcold = Summary::of(&real.cold);
    let rwarm = Summary::of(&real.warm);
    let (sc, sw, rc, rw) = (
        synth.cold_stats.expect("ran"),
        synth.warm_stats.expect("ran"),
        real.cold_stats.expect("ran"),
        real.warm_stats.expect("ran"),
    );

    println!();
    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>13} | {:>26} | {:>17} | {:>17}",
        "", "", "", "", "resolve cache", "thread CPU ms", "process CPU ms", "wall ms"
    );
    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>13} | {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>8} {:>8}",
        "measurement",
        "procs",
        "artifacts",
        "resolved",
        "hits/misses",
        "min",
        "median",
        "us/proc",
        "min",
        "median",
        "min",
        "median"
    );
    println!("{}", "-".repeat(135));
    row("baseline read (synth)", procs, None, &base);
    row(
        &format!("synthetic {procs} cold"),
        sc.processes,
        Some(&sc),
        &cold,
    );
    row(
        &format!("synthetic {procs} warm"),
        sw.processes,
        Some(&sw),
        &warm,
    );
    row("baseline read (/proc)", real_pids, None, &rbase);
    row("real /proc cold", rc.processes, Some(&rc), &rcold);
    row("real /proc warm", rw.processes, Some(&rw), &rwarm);

    let budget = BUDGET_CPU_S_PER_1000 * f64::from(procs) / 1000.0;
    let warm_s = warm.thread.median / 1e6;
    let within = warm_s <= budget;
    let ratio_warm = ratio(warm.thread.median, base.thread.median);
    let ratio_cold = ratio(cold.thread.median, base.thread.median);
    println!();
    println!(
        "budget: warm synthetic scan of {procs} processes: {warm_s:.4} s thread CPU median (min {:.4} s, process CPU median {:.4} s) vs {budget:.3} s (0.3 s per 1000): {} ({:.0}% of budget)",
        warm.thread.min / 1e6,
        warm.process.median / 1e6,
        if within {
            "within budget"
        } else {
            "OVER BUDGET"
        },
        100.0 * warm_s / budget
    );
    println!(
        "ratios to the baseline read (median thread CPU): warm {ratio_warm:.2}x, cold {ratio_cold:.2}x"
    );
    println!(
        "synthetic: {} artifacts/scan ({} resolved to packages, {} unresolved), {} sockets found",
        sw.artifacts,
        sw.artifacts - sw.unresolved_artifacts,
        sw.unresolved_artifacts,
        synth.sockets
    );
    println!(
        "real /proc: {} processes ({} vanished, {} denied), {} artifacts ({} unresolved)",
        rw.processes, rw.vanished, rw.denied, rw.artifacts, rw.unresolved_artifacts
    );

    println!();
    println!(
        "where the time goes (synthetic tree, each phase re-enacted alone, median thread CPU of {iters}):"
    );
    let phase_median: BTreeMap<&str, f64> = phase_samples
        .iter()
        .map(|(k, v)| (*k, median(v.iter().map(|&x| x as f64).collect())))
        .collect();
    let mut accounted = base.thread.median;
    println!(
        "  {:<44} {:>9.2} ms  {:>5.1}% of warm",
        "read the 5 per-pid files (= baseline)",
        base.thread.median / 1e3,
        100.0 * base.thread.median / warm.thread.median
    );
    for (name, _) in PHASES {
        let us = phase_median[name];
        if *name != PHASE_DPKG {
            accounted += us;
        }
        println!(
            "  {:<44} {:>9.2} ms  {:>5.1}% of warm",
            name,
            us / 1e3,
            100.0 * us / warm.thread.median
        );
    }
    println!(
        "  {:<44} {:>9.2} ms  {:>5.1}% of warm",
        "rest of warm (artifact bookkeeping, caches)",
        (warm.thread.median - accounted) / 1e3,
        100.0 * (warm.thread.median - accounted) / warm.thread.median
    );
    println!(
        "  {:<44} {:>9.2} ms  (dpkg load {:.2} ms)",
        "cold - warm",
        (cold.thread.median - warm.thread.median) / 1e3,
        phase_median[PHASE_DPKG] / 1e3
    );

    let summary = serde_json::json!({
        "bench": "patchgap-agent/scan",
        "procs": procs,
        "real_crowd": crowd.len(),
        "iters": iters,
        "templates": templates.iter().map(|t| t.source.clone()).collect::<Vec<_>>(),
        "baseline_read": base.json(None),
        "baseline_read_real": rbase.json(None),
        "baseline_read_real_pids": real_pids,
        "synthetic_cold": cold.json(Some(&sc)),
        "synthetic_warm": warm.json(Some(&sw)),
        "real_cold": rcold.json(Some(&rc)),
        "real_warm": rwarm.json(Some(&rw)),
        "budget_cpu_s": budget,
        "warm_cpu_s_median": warm_s,
        "within_budget": within,
        "ratio_warm_to_baseline": ratio_warm,
        "ratio_cold_to_baseline": ratio_cold,
        "phases_cpu_ms_median": phase_median
            .iter()
            .map(|(k, v)| ((*k).to_string(), v / 1e3))
            .collect::<BTreeMap<_, _>>(),
    });
    println!();
    println!("{summary}");
}

/// Reads a positive integer from the environment.
fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

fn clock_us(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn thread_cpu_us() -> u64 {
    clock_us(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu_us() -> u64 {
    clock_us(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    thread_us: u64,
    process_us: u64,
    wall_us: u64,
}

/// Times `f` in thread CPU, process CPU and wall time.
fn timed<T>(f: impl FnOnce() -> T) -> (Sample, T) {
    let (t0, p0, w0) = (thread_cpu_us(), process_cpu_us(), Instant::now());
    let out = f();
    let wall_us = w0.elapsed().as_micros() as u64;
    let sample = Sample {
        thread_us: thread_cpu_us() - t0,
        process_us: process_cpu_us() - p0,
        wall_us,
    };
    (sample, out)
}

/// The baseline: read every file the scanner reads, and nothing else.
fn read_all(files: &[PathBuf]) -> Sample {
    let (sample, bytes) = timed(|| {
        let mut bytes = 0usize;
        for f in files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            bytes += black_box(data).len();
        }
        bytes
    });
    assert!(bytes > 0, "the baseline read nothing");
    sample
}

/// The same reads on a real procfs root, whose files the kernel generates
/// on every read; files that vanish or refuse are skipped. Returns the
/// number of pids listed.
fn read_real(proc_root: &Path) -> (Sample, u32) {
    let files: Vec<PathBuf> = std::fs::read_dir(proc_root)
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(|pid| {
            let dir = proc_root.join(pid.to_string());
            SCANNED_FILES.map(|f| dir.join(f))
        })
        .collect();
    let (sample, _) = timed(|| {
        files
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|d| black_box(d).len())
            .sum::<usize>()
    });
    (sample, (files.len() / SCANNED_FILES.len()) as u32)
}

/// `PATCHGAP_BENCH_PROFILE=synthetic-warm` (or `synthetic-cold`,
/// `real-warm`, `real-cold`) runs only that scan, 20 × iterations times, and
/// no table: for `perf record`.
fn profile(mode: &str, tree: &Path, iters: u32) {
    let (root, warm) = match mode {
        "synthetic-warm" => (tree, true),
        "synthetic-cold" => (tree, false),
        "real-warm" => (Path::new("/proc"), true),
        "real-cold" => (Path::new("/proc"), false),
        other => panic!(
            "PATCHGAP_BENCH_PROFILE={other:?}: expected synthetic-warm, synthetic-cold, real-warm or real-cold"
        ),
    };
    let config = ScanConfig {
        proc_root: root.to_path_buf(),
        labels: BTreeMap::new(),
        ..ScanConfig::default()
    };
    let mut scanner = Scanner::new(config.clone());
    if warm {
        black_box(scanner.scan());
    }
    let n = iters * 20;
    let (s, ()) = timed(|| {
        for _ in 0..n {
            if warm {
                black_box(scanner.scan());
            } else {
                black_box(Scanner::new(config.clone()).scan());
            }
        }
    });
    println!(
        "profile {mode}: {n} scans, {:.2} ms thread CPU and {:.2} ms wall each",
        s.thread_us as f64 / f64::from(n) / 1e3,
        s.wall_us as f64 / f64::from(n) / 1e3
    );
}

/// Cold and warm scans of one procfs root.
#[derive(Default)]
struct Series {
    cold: Vec<Sample>,
    warm: Vec<Sample>,
    cold_stats: Option<ScanStats>,
    warm_stats: Option<ScanStats>,
    sockets: usize,
}

impl Series {
    /// A cold scan on a new Scanner, then a warm one on the same Scanner.
    /// With `expect`, the synthetic tree's sanity is asserted.
    fn run(&mut self, proc_root: &Path, expect: Option<u32>) {
        let mut scanner = Scanner::new(ScanConfig {
            proc_root: proc_root.to_path_buf(),
            labels: BTreeMap::new(),
            ..ScanConfig::default()
        });
        for warm in [false, true] {
            let (mut sample, inv) = timed(|| scanner.scan());
            // Thread CPU as the scanner itself counts it.
            sample.thread_us = inv.stats.cpu_micros;
            let s = inv.stats;
            let kind = if warm { "warm" } else { "cold" };
            if let Some(n) = expect {
                assert_eq!(
                    s.processes, n,
                    "{kind} synthetic scan found {} processes, expected exactly {n} (vanished {}, denied {})",
                    s.processes, s.vanished, s.denied
                );
                assert!(
                    s.artifacts > s.unresolved_artifacts,
                    "{kind} synthetic scan resolved no artifact to a package ({} artifacts, {} unresolved)",
                    s.artifacts,
                    s.unresolved_artifacts
                );
                if warm {
                    assert!(
                        s.resolve_cache_hits > 0,
                        "warm synthetic scan had no resolve cache hits ({} misses)",
                        s.resolve_cache_misses
                    );
                }
                self.sockets = inv.processes.iter().map(|p| p.sockets.len()).sum();
            }
            drop(inv);
            if warm {
                self.warm.push(sample);
                self.warm_stats = Some(s);
            } else {
                self.cold.push(sample);
                self.cold_stats = Some(s);
            }
        }
    }
}

/// Min and median of one quantity, in microseconds.
#[derive(Debug, Clone, Copy)]
struct MinMed {
    min: f64,
    median: f64,
}

impl MinMed {
    fn of(xs: impl Iterator<Item = u64>) -> MinMed {
        let v: Vec<f64> = xs.map(|x| x as f64).collect();
        MinMed {
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(v),
        }
    }
}

struct Summary {
    thread: MinMed,
    process: MinMed,
    wall: MinMed,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        Summary {
            thread: MinMed::of(samples.iter().map(|s| s.thread_us)),
            process: MinMed::of(samples.iter().map(|s| s.process_us)),
            wall: MinMed::of(samples.iter().map(|s| s.wall_us)),
        }
    }

    fn json(&self, stats: Option<&ScanStats>) -> serde_json::Value {
        let s = |x: f64| x / 1e6;
        let mut v = serde_json::json!({
            "thread_cpu_s_min": s(self.thread.min),
            "thread_cpu_s_median": s(self.thread.median),
            "process_cpu_s_min": s(self.process.min),
            "process_cpu_s_median": s(self.process.median),
            "wall_s_min": s(self.wall.min),
            "wall_s_median": s(self.wall.median),
        });
        if let Some(st) = stats {
            v["processes"] = st.processes.into();
            v["artifacts"] = st.artifacts.into();
            v["resolved"] = (st.artifacts - st.unresolved_artifacts).into();
            v["resolve_cache_hits"] = st.resolve_cache_hits.into();
            v["resolve_cache_misses"] = st.resolve_cache_misses.into();
        }
        v
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

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn row(name: &str, procs: u32, stats: Option<&ScanStats>, s: &Summary) {
    let (artifacts, resolved, cache) = match stats {
        Some(st) => (
            st.artifacts.to_string(),
            (st.artifacts - st.unresolved_artifacts).to_string(),
            format!("{}/{}", st.resolve_cache_hits, st.resolve_cache_misses),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let ms = |x: f64| x / 1e3;
    println!(
        "{name:<22} {procs:>6} {artifacts:>9} {resolved:>9} {cache:>13} | {:>8.2} {:>8.2} {:>8.1} | {:>8.2} {:>8.2} | {:>8.2} {:>8.2}",
        ms(s.thread.min),
        ms(s.thread.median),
        s.thread.median / f64::from(procs.max(1)),
        ms(s.process.min),
        ms(s.process.median),
        ms(s.wall.min),
        ms(s.wall.median)
    );
}

/// A process template and where it came from.
struct Source {
    source: String,
    /// File-backed maps lines whose file dpkg owns.
    owned: usize,
    template: ProcTemplate,
}

/// The maps templates: this process; up to [`MAX_OTHER_TEMPLATES`] other
/// real processes with distinct executables, those mapping the most
/// dpkg-owned files first; and, when fewer than three others qualify or none
/// has 80 maps lines, a python child that
/// imported ssl, json, sqlite3 and a few more C extensions, which maps about
/// 125 lines (killed once captured).
fn capture_templates() -> Vec<Source> {
    let proc_root = Path::new("/proc");
    let me = std::process::id();
    let db = RootFs::open(Path::new("/"))
        .and_then(|r| PackageDb::load(&r))
        .expect("load the host's dpkg database");
    let owned = |t: &ProcTemplate| {
        parse::maps::parse_maps(&t.maps)
            .0
            .iter()
            .filter(|m| db.owner(&m.path).is_some())
            .count()
    };
    let source = |what: &str, t: ProcTemplate| Source {
        source: what.to_string(),
        owned: owned(&t),
        template: t,
    };
    let mut out = Vec::new();
    match ProcTemplate::capture(proc_root, me) {
        Ok(Some(t)) => out.push(source("self (bench)", t)),
        other => panic!("cannot capture this process's own maps: {other:?}"),
    }
    let mut exes = HashSet::new();
    exes.insert(out[0].template.exe.clone());
    let mut candidates: Vec<(usize, ProcTemplate)> = std::fs::read_dir(proc_root)
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && age_s(proc_root, pid).is_some_and(|a| a >= MIN_AGE_S))
        .filter_map(|pid| ProcTemplate::capture(proc_root, pid).ok().flatten())
        .map(|t| (owned(&t), t))
        .filter(|(n, t)| *n >= MIN_OWNED_MAPPINGS && 2 * n >= t.file_mappings())
        .collect();
    candidates.sort_by_key(|(n, t)| (std::cmp::Reverse(*n), t.exe.clone()));
    let mut others = Vec::new();
    for (_, t) in candidates {
        if others.len() < MAX_OTHER_TEMPLATES && exes.insert(t.exe.clone()) {
            others.push(t);
        }
    }
    let want_python = others.len() < 3 || others.iter().all(|t| t.mappings() < 80);
    for t in others {
        out.push(source(&format!("pid of {}", t.comm), t));
    }
    if want_python {
        match spawn_python() {
            Ok(t) => out.push(source("python3 (spawned)", t)),
            Err(e) => eprintln!("warning: no python template: {e}"),
        }
    }
    out
}

/// How long ago a process started, in seconds.
fn age_s(proc_root: &Path, pid: u32) -> Option<f64> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let start_ticks = parse::stat::parse_stat(&stat).ok()?.start_ticks;
    let uptime = std::fs::read_to_string(proc_root.join("uptime")).ok()?;
    let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(uptime - start_ticks as f64 / if tck > 0 { tck as f64 } else { 100.0 })
}

/// Kills and reaps the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts python with ssl, json, sqlite3 and other C extensions imported,
/// captures its maps and kills it.
fn spawn_python() -> Result<ProcTemplate, String> {
    let child = Command::new(PYTHON)
        .args(["-c", PYTHON_SCRIPT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {PYTHON}: {e}"))?;
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("waiting for python: {e}"))?;
    if line.trim() != "ready" {
        return Err(format!("python did not start: {line:?}"));
    }
    let t = ProcTemplate::capture(Path::new("/proc"), guard.0.id())
        .map_err(|e| format!("capturing python's maps: {e}"))?
        .ok_or("python has no exe")?;
    drop(guard);
    Ok(t)
}

/// The synthetic tree's directory, removed when dropped (also on panic).
struct TempTree(PathBuf);

impl TempTree {
    fn new() -> TempTree {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "patchgap-bench-scan-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempTree(dir)
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: removing {}: {e}", self.0.display());
        }
    }
}

const PHASE_PARSE: &str = "parse stat/status/cmdline/cgroup/maps";
const PHASE_LINKS: &str = "ns, root, exe links + exe stat + open root";
const PHASE_FDS: &str = "list fd/ and read its links";
const PHASE_PATHS: &str = "stat each distinct mapped path in root";
const PHASE_DPKG: &str = "load the host dpkg db (cold only)";
/// A phase's name and what it runs.
type Phase = (&'static str, fn(&Phases) -> usize);
/// The phases in the order they are printed.
const PHASES: &[Phase] = &[
    (PHASE_PARSE, Phases::parse),
    (PHASE_LINKS, Phases::links),
    (PHASE_FDS, Phases::fds),
    (PHASE_PATHS, Phases::paths),
    (PHASE_DPKG, Phases::dpkg),
];

/// The scanner's steps, one at a time, over the whole synthetic tree.
struct Phases {
    dirs: Vec<PathBuf>,
    /// The five files of each pid, read once up front.
    contents: Vec<[Vec<u8>; 5]>,
    /// The distinct in-root paths of all mappings.
    paths: Vec<Vec<u8>>,
}

impl Phases {
    fn prepare(tree: &Path, pids: &[u32]) -> Phases {
        let dirs: Vec<PathBuf> = pids.iter().map(|p| tree.join(p.to_string())).collect();
        let contents: Vec<[Vec<u8>; 5]> = dirs
            .iter()
            .map(|d| SCANNED_FILES.map(|f| std::fs::read(d.join(f)).expect("read fixture")))
            .collect();
        let paths: BTreeSet<Vec<u8>> = contents
            .iter()
            .flat_map(|c| parse::maps::parse_maps(&c[4]).0)
            .map(|m| in_root_path(b"/", &m.path).to_vec())
            .collect();
        Phases {
            dirs,
            contents,
            paths: paths.into_iter().collect(),
        }
    }

    /// Each phase's thread CPU microseconds.
    fn run(&self) -> Vec<(&'static str, u64)> {
        PHASES
            .iter()
            .map(|(name, f)| {
                let (s, n) = timed(|| f(self));
                black_box(n);
                (*name, s.thread_us)
            })
            .collect()
    }

    fn parse(&self) -> usize {
        let mut n = 0;
        for [stat, status, cmdline, cgroup, maps] in &self.contents {
            n += parse::stat::parse_stat(stat).map_or(0, |s| s.comm.len());
            n += parse::status::parse_status(status).map_or(0, |s| s.uid[0] as usize);
            n += parse::cmdline::redact_cmdline(&parse::cmdline::parse_cmdline(cmdline)).len();
            n += primary_cgroup(&parse::cgroup::parse_cgroup(cgroup)).len();
            n += parse::maps::parse_maps(maps).0.len();
        }
        n
    }

    fn links(&self) -> usize {
        let mut n = 0;
        for d in &self.dirs {
            for l in ["ns/mnt", "ns/net", "root", "exe"] {
                n += std::fs::read_link(d.join(l)).map_or(0, |p| p.as_os_str().len());
            }
            n += std::fs::metadata(d.join("exe")).map_or(0, |m| m.len() as usize);
            n += RootFs::open(&d.join("root")).map_or(0, |r| r.id().ino as usize);
        }
        n
    }

    fn fds(&self) -> usize {
        let mut n = 0;
        for d in &self.dirs {
            for fd in std::fs::read_dir(d.join("fd")).expect("fd dir").flatten() {
                if let Ok(l) = std::fs::read_link(fd.path()) {
                    n += parse::cgroup::parse_socket_link(l.as_os_str().as_encoded_bytes())
                        .map_or(0, |i| i as usize);
                }
            }
        }
        n
    }

    fn paths(&self) -> usize {
        let root = RootFs::open(Path::new("/")).expect("open /");
        self.paths
            .iter()
            .filter(|p| root.metadata(p).is_ok())
            .count()
    }

    fn dpkg(&self) -> usize {
        let root = RootFs::open(Path::new("/")).expect("open /");
        PackageDb::load(&root).map_or(0, |db| db.package_count())
    }
}
