//! Runtime truth under change (issue 11), live: short-lived processes keep
//! their command line, executable, times and connections; `opened` evidence
//! goes only to processes that loaded a library, not to readers of it, and
//! not across an exec. Real processes, the real eBPF sensor, a collector in
//! process.

use std::{
    io::Read,
    net::TcpListener,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use patchgap_proto::{time::now_ms, v1};
use patchgap_tests::*;

/// The library of issue 11's reader cases (package libgraphite2-3).
const GRAPHITE: &str = "/usr/lib/x86_64-linux-gnu/libgraphite2.so.3.2.1";

/// Every process of the host that had `package` in [since_ms, now],
/// exited ones included, with the evidence filter (e.g. "loaded").
async fn history(h: &Harness, package: &str, since_ms: i64, evidence: &str) -> Vec<v1::Match> {
    h.client()
        .await
        .find_package(v1::FindPackageRequest {
            name: package.into(),
            since_ms,
            evidence: evidence.into(),
            ..Default::default()
        })
        .await
        .expect("find_package")
        .into_inner()
        .matches
}

/// Lets the agent read what the kernel has queued (the ring is drained every
/// 50 ms, events are batched for 200 ms), then scans and waits until the
/// collector has stored everything.
async fn settle(h: &Harness) {
    tokio::time::sleep(Duration::from_millis(800)).await;
    h.sync().await;
}

/// The dpkg package that owns a file (under /usr or, usrmerge, not).
fn owner(path: &str) -> String {
    for p in [path, path.strip_prefix("/usr").unwrap_or(path)] {
        let out = Command::new("dpkg-query").args(["-S", p]).output().unwrap();
        let s = String::from_utf8(out.stdout).unwrap();
        let pkg = s.split(':').next().unwrap_or_default().trim().to_string();
        if !pkg.is_empty() {
            return pkg;
        }
    }
    panic!("dpkg owns no {path}");
}

fn ebpf_on(h: &Harness) -> bool {
    if !ebpf_wanted() {
        eprintln!("PATCHGAP_EBPF=off: this test needs the eBPF sensor; skipped");
        return false;
    }
    let s = h.agent.status();
    assert!(s.ebpf, "eBPF sensing is off: {}", s.ebpf_reason);
    true
}

/// One short process of the workload: what it was started with and the
/// wall-clock bounds of its life as the test saw them.
struct Short {
    pid: u32,
    marker: String,
    spawned_ms: i64,
    reaped_ms: i64,
}

/// Issue 11, defect 8: 100 python processes of ~100 ms, each with a
/// distinctive argv (and a secret in it), each connecting to a loopback
/// listener. The collector's history must have every one of them with its
/// redacted command line, its executable resolved to its package, a start
/// and an exit inside the window the test saw the process live in (exact,
/// for every one: spawn to reap, with 10 ms for /proc's clock ticks), a
/// lifetime whose median distance to that window is at most 25 ms (the
/// window also holds fork, exec and the reaper's wakeup, which a loaded host
/// stretches now and then: 5 to 11 of 100 were over 50 ms here), and its
/// connection.
///
/// The bound is all of them: at ~25 exec/s the 1 MiB ring and the 64k-event
/// channel are nowhere near full, and every loss the agent could still have
/// is counted (`lost_events`), so a missing row with no counted loss is a
/// defect; the assertion accepts exactly the counted losses, no more.
/// Before the fix, the cmdline came from /proc only (empty for processes
/// gone by the rescan), the exe was never resolved, starts were put up to a
/// second early by /proc/stat's whole-second btime, and a connect of an
/// unknown, gone process was dropped with no counter moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_processes_keep_cmdline_exe_times_and_connections() {
    const N: usize = 100;
    const PARALLEL: usize = 4;
    let h = Harness::start().await;
    if !ebpf_on(&h) {
        return h.stop().await;
    }
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let python = python.to_str().unwrap().to_string();
    let package = owner(&python);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    static DONE: AtomicBool = AtomicBool::new(false);
    let acceptor = std::thread::spawn(move || {
        while !DONE.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.read(&mut [0u8; 1]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });

    let nonce = format!("{:x}", now_ms());
    let since = now_ms();
    let script = format!(
        "import socket, time; s = socket.create_connection(('127.0.0.1', {port})); \
         time.sleep(0.1)"
    );
    // PARALLEL threads, each starting one process and reaping it at once,
    // so each one's window (spawn to reap) is its life plus the fork, the
    // exec and the wakeup of its own waiter, and nothing else.
    let threads: Vec<_> = (0..PARALLEL)
        .map(|t| {
            let (script, nonce) = (script.clone(), nonce.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in (t..N).step_by(PARALLEL) {
                    let marker = format!("pgshort-{nonce}-{i}");
                    let spawned_ms = now_ms();
                    // Through the symlink: the exe is the file it reaches.
                    let mut child = Command::new("/usr/bin/python3")
                        .args(["-c", &script, &marker, "--password", "hunter2"])
                        .stdin(Stdio::null())
                        .spawn()
                        .unwrap();
                    let pid = child.id();
                    assert!(child.wait().unwrap().success(), "{marker} failed");
                    out.push(Short {
                        pid,
                        marker,
                        spawned_ms,
                        reaped_ms: now_ms(),
                    });
                }
                out
            })
        })
        .collect();
    let runs: Vec<Short> = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
    .await
    .unwrap();
    DONE.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
    // The agent merges events as fast as the host lets it; on a loaded
    // host it may lag the workload by seconds. Ask again until the answer
    // is complete or 30 s have passed: this test is about what is
    // recorded, not how fast (the freshness bench measures that).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (problems, worst_life_error, off_by_more_than_50, mut life_errors) = loop {
        settle(&h).await;
        let matches = history(&h, &package, since, "").await;
        let connections = h
            .client()
            .await
            .list_connections(v1::ListConnectionsRequest {
                since_ms: since,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .connections;
        let mut problems = Vec::new();
        let mut worst_life_error = 0i64;
        let mut off_by_more_than_50 = 0usize;
        let mut life_errors = Vec::new();
        for r in &runs {
            let Some(m) = matches
                .iter()
                .find(|m| m.key.unwrap().pid == r.pid && m.cmdline.contains(&r.marker))
            else {
                let any = matches.iter().find(|m| m.key.unwrap().pid == r.pid);
                problems.push(format!(
                    "{}: no history row with its cmdline ({:?})",
                    r.marker,
                    any.map(|m| (&m.cmdline, String::from_utf8_lossy(&m.exe)))
                ));
                continue;
            };
            if m.cmdline.contains("hunter2") || !m.cmdline.contains("<redacted>") {
                problems.push(format!("{}: not redacted: {}", r.marker, m.cmdline));
            }
            if m.exe != python.as_bytes() || m.evidence != "exe" {
                problems.push(format!(
                    "{}: exe {:?} evidence {}",
                    r.marker,
                    String::from_utf8_lossy(&m.exe),
                    m.evidence
                ));
            }
            // The kernel's start is the fork, after `spawned_ms`; /proc's clock
            // ticks floor it by up to 10 ms. The exit is before the reap.
            let (start, exit) = (m.process_start_ms, m.exit_time_ms);
            let life = exit - start;
            let window = r.reaped_ms - r.spawned_ms;
            worst_life_error = worst_life_error.max((window - life).abs());
            if start < r.spawned_ms - 12 || start > r.reaped_ms {
                problems.push(format!(
                    "{}: start {} outside [{}, {}]",
                    r.marker, start, r.spawned_ms, r.reaped_ms
                ));
            }
            if exit < r.spawned_ms + 100 || exit > r.reaped_ms + 2 {
                problems.push(format!(
                    "{}: exit {} outside [{}, {}]",
                    r.marker,
                    exit,
                    r.spawned_ms + 100,
                    r.reaped_ms
                ));
            }
            if life < 100 {
                problems.push(format!("{}: lifetime {life} ms < 100 ms", r.marker));
            }
            if (window - life).abs() > 50 {
                off_by_more_than_50 += 1;
            }
            life_errors.push((window - life).abs());
            let key = m.key.unwrap();
            if !connections
                .iter()
                .any(|c| c.key == Some(key) && c.remote_port == u32::from(port))
            {
                problems.push(format!("{}: connection lost", r.marker));
            }
        }
        if problems.is_empty() || std::time::Instant::now() > deadline {
            break (problems, worst_life_error, off_by_more_than_50, life_errors);
        }
    };
    let status = h.agent.status();
    life_errors.sort_unstable();
    let median = life_errors.get(life_errors.len() / 2).copied().unwrap_or(0);
    eprintln!(
        "{} short processes: {} problems; |lifetime - observed window| median {median} ms, \
         worst {worst_life_error} ms, {off_by_more_than_50} over 50 ms; {status:?}\n{}",
        runs.len(),
        problems.len(),
        problems.join("\n")
    );
    assert!(
        problems.len() as u64 <= status.lost_events,
        "{} of {N} short processes wrong, {} events counted lost:\n{}",
        problems.len(),
        status.lost_events,
        problems.join("\n")
    );
    // The window the test observes also holds the fork, the exec and the
    // wakeup of the reaping thread, which on a loaded 2-core host (five
    // builds at once) now and then take 50-100 ms: the start and the exit
    // are checked exactly above (inside the window, every one), and the
    // lifetime against the window by its median, which stragglers of the
    // host's scheduler do not move.
    assert!(
        median <= 25,
        "median |lifetime - window| {median} ms ({off_by_more_than_50} of {N} over 50 ms)"
    );
    h.stop().await;
}

/// Issue 11, defect 2, readers: a process that only read(2) a library
/// (Python's `open().read()`, `sha256sum`) did not load it and is not
/// listed as loading it; a process that loads it with ctypes (open, then an
/// executable mmap) is, even when it lives for a few milliseconds. Before
/// the fix, any open of a library-like path gave `opened` evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_library_do_not_load_it() {
    let h = Harness::start().await;
    if !ebpf_on(&h) {
        return h.stop().await;
    }
    let package = owner(GRAPHITE);
    let since = now_ms();
    let reader = spawn_ready(Command::new("/usr/bin/python3").args([
        "-c",
        &format!(
            "import time; open('{GRAPHITE}', 'rb').read(); print('ready', flush=True); \
             time.sleep(60)"
        ),
    ]));
    let mut sha = Command::new("sha256sum")
        .arg(GRAPHITE)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sha_pid = sha.id();
    assert!(sha.wait().unwrap().success());
    // The positive control: loaded, and gone before any scan.
    let mut loader = Command::new("/usr/bin/python3")
        .args(["-c", &format!("import ctypes; ctypes.CDLL('{GRAPHITE}')")])
        .spawn()
        .unwrap();
    let loader_pid = loader.id();
    assert!(loader.wait().unwrap().success());
    settle(&h).await;

    let loaded = history(&h, &package, since, "loaded").await;
    let listed = |pid: u32| loaded.iter().find(|m| m.key.unwrap().pid == pid);
    assert!(
        listed(reader.pid()).is_none(),
        "a python that only read {GRAPHITE} is listed as loading it: {:?}",
        listed(reader.pid())
    );
    assert!(
        listed(sha_pid).is_none(),
        "sha256sum of {GRAPHITE} is listed as loading it: {:?}",
        listed(sha_pid)
    );
    let m = listed(loader_pid).unwrap_or_else(|| {
        panic!("the short-lived ctypes loader of {GRAPHITE} is missing: {loaded:?}")
    });
    assert_eq!(m.evidence, "opened", "{m:?}");
    assert!(m.exit_time_ms > 0, "{m:?}");
    reader.kill();
    h.stop().await;
}

/// Issue 11, defect 2, across exec: `bash -c 'exec python3 …'` is one
/// process (one pid, one start time) whose image changed. bash loaded
/// libtinfo6, python does not map it: after the exec the process must not
/// be listed as loading libtinfo6. Before the fix the exec event of a known
/// process was ignored and bash's opens were carried into every later
/// record of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_drops_what_the_old_image_opened() {
    let h = Harness::start().await;
    if !ebpf_on(&h) {
        return h.stop().await;
    }
    let tinfo = std::fs::canonicalize("/lib/x86_64-linux-gnu/libtinfo.so.6").unwrap();
    let package = owner(tinfo.to_str().unwrap());
    let proc = spawn_ready(Command::new("/bin/bash").args([
        "-c",
        "exec /usr/bin/python3 -c \"import time; print('ready', flush=True); time.sleep(60)\"",
    ]));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", proc.pid())).unwrap();
    assert!(!maps.contains("libtinfo"), "python maps libtinfo itself");
    settle(&h).await;

    let running = history(&h, &package, 0, "loaded").await;
    let m = running.iter().find(|m| m.key.unwrap().pid == proc.pid());
    assert!(
        m.is_none(),
        "python exec'd from bash is listed as loading bash's {package}: {m:?}"
    );
    // The process itself is known, as python.
    let ps = h
        .client()
        .await
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let p = ps
        .processes
        .iter()
        .find(|p| p.key.unwrap().pid == proc.pid())
        .expect("the process is listed");
    assert!(
        String::from_utf8_lossy(&p.exe).contains("python3"),
        "{:?}",
        String::from_utf8_lossy(&p.exe)
    );
    proc.kill();
    h.stop().await;
}

/// An npm project with lodash in its node_modules (npm's cache keeps the
/// second install offline).
fn npm_project_with_lodash() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name":"pg-require-test","version":"1.0.0","private":true}"#,
    )
    .unwrap();
    let out = Command::new("npm")
        .args([
            "install",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "lodash@4.17.21",
        ])
        .current_dir(dir.path())
        .output()
        .expect("npm");
    assert!(
        out.status.success(),
        "npm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Issue 11, defect 3: `require("lodash")` opens lodash's package.json and
/// lodash.js; the process loaded lodash and must be listed with `opened`
/// evidence, not only `installed` (which every package in its node_modules
/// is). A second node in the same project that does not require it stays at
/// `installed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_require_gives_opened_evidence() {
    let project = npm_project_with_lodash();
    let h = Harness::start().await;
    if !ebpf_on(&h) {
        return h.stop().await;
    }
    let node = |script: &str| {
        spawn_ready(
            Command::new("/usr/bin/node")
                .args(["-e", script])
                .current_dir(project.path()),
        )
    };
    let requirer = node("require('lodash'); console.log('ready'); setTimeout(() => {}, 60000)");
    let idle = node("console.log('ready'); setTimeout(() => {}, 60000)");
    settle(&h).await;

    let r = h.find("lodash", "").await;
    let evidence = |pid: u32| {
        r.matches
            .iter()
            .find(|m| m.key.unwrap().pid == pid)
            .map(|m| m.evidence.clone())
    };
    assert_eq!(
        evidence(requirer.pid()).as_deref(),
        Some("opened"),
        "{:?}",
        r.matches
    );
    assert_eq!(
        evidence(idle.pid()).as_deref(),
        Some("installed"),
        "{:?}",
        r.matches
    );
    requirer.kill();
    idle.kill();
    h.stop().await;
}

/// The process `pid` as `patchgap ps` gets it from the collector.
async fn ps_entry(h: &Harness, pid: u32) -> Option<v1::ProcessSummary> {
    h.client()
        .await
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .expect("list_processes")
        .into_inner()
        .processes
        .into_iter()
        .find(|p| p.key.is_some_and(|k| k.pid == pid))
}

/// Polls `ps` until `pid` shows a socket to `port` (and `also` holds),
/// for at most `within`. Returns how long that took, and the last entry.
async fn socket_shows(
    h: &Harness,
    pid: u32,
    port: u32,
    within: Duration,
    also: impl Fn(&v1::ProcessSummary) -> bool,
) -> (Option<Duration>, Option<v1::ProcessSummary>) {
    let t0 = std::time::Instant::now();
    loop {
        let entry = ps_entry(h, pid).await;
        if entry
            .as_ref()
            .is_some_and(|p| p.sockets.iter().any(|s| s.remote_port == port) && also(p))
        {
            return (Some(t0.elapsed()), entry);
        }
        if t0.elapsed() > within {
            return (None, entry);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Debian python that prints "ready", waits for a line on stdin, then
/// connects to 127.0.0.1:`port`, prints "connected" and holds the socket.
fn python_connecting_on_cue(
    port: u16,
) -> (
    Proc,
    std::process::ChildStdin,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let script = format!(
        "import socket, sys, time\n\
         print('ready', flush=True)\n\
         sys.stdin.readline()\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         print('connected', flush=True)\n\
         time.sleep(1e6)\n"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (Proc(child), stdin, stdout)
}

/// Issue 11, defect 9: a new outbound connection took 272 s to show in
/// `patchgap ps`, because the socket tables are read one scan in ten. With
/// eBPF on, the connect event puts the socket into the process's view at
/// once: it must show in `ps` within 2 s, with no rescan (the harness's
/// agent scans only when asked). With eBPF off (PATCHGAP_EBPF=off) it shows
/// only after a rescan, and the answer says when the tables were read.
/// Before the fix the socket never showed without a rescan, and no answer
/// said how old the socket view was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_shows_in_ps_within_two_seconds() {
    use std::io::{BufRead, Write};
    let h = Harness::start().await;
    let ebpf = ebpf_wanted();
    if ebpf {
        assert!(
            h.agent.status().ebpf,
            "eBPF is off: {}",
            h.agent.status().ebpf_reason
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepted connections are held open until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let (proc, mut stdin, mut stdout) = python_connecting_on_cue(port);
    let pid = proc.pid();
    // The process is known and its sockets read (none to the port yet).
    h.sync().await;
    let before = ps_entry(&h, pid).await.expect("the process is in ps");
    assert!(
        before
            .sockets
            .iter()
            .all(|s| u32::from(port) != s.remote_port)
    );

    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    let (latency, entry) =
        socket_shows(&h, pid, port.into(), Duration::from_secs(5), |_| true).await;
    eprintln!(
        "connect → visible in ps (eBPF {}): {latency:?}",
        if ebpf { "on" } else { "off" }
    );
    if ebpf {
        let latency =
            latency.expect("the connection never showed in ps within 5 s without a rescan");
        assert!(latency < Duration::from_secs(2), "took {latency:?}");
        let entry = entry.unwrap();
        let s = entry
            .sockets
            .iter()
            .find(|s| s.remote_port == u32::from(port))
            .unwrap();
        assert_eq!((s.remote_addr.as_str(), s.outbound), ("127.0.0.1", true));
        assert!(s.connect_ms > 0, "a socket from the connect says so: {s:?}");
        // The view is the tables' as of the last read, plus this connect.
        assert_eq!(entry.sockets_read_ms, before.sockets_read_ms);
    } else {
        assert!(latency.is_none(), "no eBPF: only a rescan reads sockets");
        assert_eq!(entry.unwrap().sockets_read_ms, before.sockets_read_ms);
    }
    // The answer says how old the socket view is.
    assert!(
        before.sockets_read_ms > 0 && before.sockets_read_ms <= now_ms(),
        "ps does not say when the socket tables were read: {}",
        before.sockets_read_ms
    );
    // A rescan reads the tables: the socket now comes from them, with its
    // local end, and the read time moves on.
    h.sync().await;
    let after = ps_entry(&h, pid).await.unwrap();
    let s = after
        .sockets
        .iter()
        .find(|s| s.remote_port == u32::from(port))
        .expect("the tables show the connection");
    assert_eq!((s.connect_ms, s.state.as_str()), (0, "ESTABLISHED"));
    assert!(s.local_port > 0 && s.inode > 0, "{s:?}");
    assert!(after.sockets_read_ms > before.sockets_read_ms);
    drop(proc);
    h.stop().await;
}

/// A network namespace made with `ip netns add`, deleted when dropped.
struct Netns(String);

impl Netns {
    fn add(name: &str) -> Netns {
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        // A leftover of a killed earlier run.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        let ns = Netns(name.into());
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.0))
            .unwrap()
            .ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Issue 11, defect 9: a connection inside a private network namespace
/// showed as `127.0.0.1:19090` with nothing saying which namespace. A
/// process in a namespace `ip netns add` made (its own loopback, nothing
/// leaves it) listens on 127.0.0.1:19090 and connects to itself: `ps` must
/// name the namespace (inode and name) and show the connection (within 2 s
/// with eBPF, from the connect event; after a rescan without), and the
/// connection list must name the namespace too. Before the fix, neither
/// answer named it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_a_private_netns_names_the_namespace() {
    use std::io::BufRead;
    let h = Harness::start().await;
    let ebpf = ebpf_wanted();
    let ns = Netns::add(&format!("pgtest-{}", std::process::id()));
    let script = "import socket, os, time\n\
                  l = socket.socket(); l.bind(('127.0.0.1', 19090)); l.listen()\n\
                  c = socket.create_connection(('127.0.0.1', 19090)); a, _ = l.accept()\n\
                  print('ready', os.getpid(), flush=True)\n\
                  time.sleep(1e6)\n";
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, "/usr/bin/python3", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ip netns exec");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let proc = Proc(child);
    let pid: u32 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("python did not start in the netns: {line:?}"));
    let t0 = std::time::Instant::now();
    let (latency, entry) = socket_shows(&h, pid, 19090, Duration::from_secs(4), |p| {
        !p.net_ns_name.is_empty()
    })
    .await;
    eprintln!(
        "netns connect → visible in ps (eBPF {}): {latency:?} after the process said ready",
        if ebpf { "on" } else { "off" }
    );
    if ebpf {
        assert!(
            latency.is_some_and(|l| l < Duration::from_secs(2)),
            "not in ps within 2 s without a rescan ({:?}): {entry:?}",
            t0.elapsed()
        );
    }
    let check = |p: &v1::ProcessSummary| {
        assert_eq!(
            (p.net_ns, p.net_ns_name.as_str(), p.host_net_ns),
            (ns.inode(), ns.0.as_str(), false),
            "ps names the process's network namespace"
        );
        assert!(
            p.sockets
                .iter()
                .any(|s| s.remote_addr == "127.0.0.1" && s.remote_port == 19090 && s.outbound),
            "{:?}",
            p.sockets
        );
    };
    if let Some(p) = entry.as_ref().filter(|_| ebpf) {
        check(p);
    }
    h.sync().await;
    check(&ps_entry(&h, pid).await.expect("the process is in ps"));
    if ebpf {
        let conns = h
            .client()
            .await
            .list_connections(v1::ListConnectionsRequest::default())
            .await
            .expect("list_connections")
            .into_inner()
            .connections;
        let c = conns
            .iter()
            .find(|c| c.key.is_some_and(|k| k.pid == pid) && c.remote_port == 19090)
            .expect("the connection is listed");
        assert_eq!(
            (c.net_ns, c.net_ns_name.as_str()),
            (ns.inode(), ns.0.as_str())
        );
    }
    drop(proc);
    drop(ns);
    h.stop().await;
}
