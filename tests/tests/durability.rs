//! An agent that loses nothing and cannot go silent (issue 14), live.
//!
//! Outage: the real `patchgap-collector` is killed for two minutes while
//! 100 short processes start, load a library, connect to a loopback
//! listener and exit; the real `patchgap-agent` spools what it sees, and
//! once the collector is back the history has every process with its real
//! exec and exit times (±1 s) and its connection. The second run kills the
//! agent with SIGKILL halfway through the outage and starts it again on the
//! same state directory: what the first agent spooled still arrives, under
//! its session, with its times.
//!
//! Panic: a panic injected in the scanner (the `faults` test hook) is
//! followed by a restarted scan loop within seconds, and coverage says so;
//! while the loop keeps failing the host is not shown as connected.
//!
//! The outage lasts PATCHGAP_OUTAGE_SECS (default 120, the two
//! minutes). Needs root and eBPF (short processes are seen only by the
//! kernel sensor); skipped with a note otherwise.

use std::{
    io::Read,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use patchgap_proto::{time::now_ms, v1, v1::query_client::QueryClient};
use patchgap_tests::*;
use tonic::transport::Channel;

/// The library each short process loads with dlopen (package libbz2-1.0);
/// python3 does not link it, so its mapping is the process's own doing.
const LIBRARY: &str = "libbz2.so.1.0";
const PACKAGE: &str = "libbz2-1.0";
const N: usize = 100;

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("PATCHGAP_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    )
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ebpf_wanted() {
        eprintln!("needs root and eBPF (PATCHGAP_EBPF unset); skipped");
        return false;
    }
    true
}

/// A child killed (SIGKILL) and reaped when dropped.
struct Bin(Child);

impl Bin {
    fn kill9(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn collector(bins: &Path, port: u16, data: &Path) -> Bin {
    Bin(Command::new(bins.join("patchgap-collector"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start patchgap-collector"))
}

fn agent(bins: &Path, port: u16, state: &Path, log: &Path) -> Bin {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Bin(Command::new(bins.join("patchgap-agent"))
        .args(["run", "--collector", &format!("http://127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        // A debug build is several times slower than a release one: the
        // watchdog stays on, with room for that (and the test checks it
        // shed nothing).
        .args(["--max-cpu-percent", "50"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start patchgap-agent"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn client(port: u16) -> QueryClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match QueryClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "collector never answered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn hosts(port: u16) -> v1::ListHostsResponse {
    client(port)
        .await
        .list_hosts(v1::ListHostsRequest::default())
        .await
        .expect("list_hosts")
        .into_inner()
}

/// Bytes in the agent's spool segments.
fn spool_bytes(state: &Path) -> u64 {
    std::fs::read_dir(state.join("spool"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until a freshly started agent has made its first full scan (its
/// snapshot lands in the spool); its sensor was attached before that.
fn wait_agent_ready(state: &Path, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while spool_bytes(state) <= before {
        assert!(
            Instant::now() < deadline,
            "the agent never wrote its first scan"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its first snapshot may still be in parts; a moment for the rest.
    std::thread::sleep(Duration::from_secs(1));
}

/// One short process as the test saw it: from just before spawn to just
/// after its reap.
#[derive(Debug, Clone)]
struct Short {
    pid: u32,
    spawned_ms: i64,
    reaped_ms: i64,
}

/// Runs `n` short processes, one every `every`, each loading LIBRARY,
/// connecting to `port` and exiting after 300 ms.
fn run_shorts(n: usize, every: Duration, port: u16) -> Vec<Short> {
    let script = format!(
        "import ctypes, socket, time; ctypes.CDLL('{LIBRARY}'); \
         s = socket.create_connection(('127.0.0.1', {port})); time.sleep(0.3)"
    );
    let mut out = Vec::new();
    for _ in 0..n {
        let slot = Instant::now() + every;
        let spawned_ms = now_ms();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success(), "short process failed");
        out.push(Short {
            pid,
            spawned_ms,
            reaped_ms: now_ms(),
        });
        if let Some(rest) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
    }
    out
}

/// A listener that takes every connection and holds it until it closes.
struct Listener {
    port: u16,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let _ = s.read(&mut [0u8; 1]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener {
            port,
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the history says of each run: the problems found, and the worst
/// start and exit errors (ms).
async fn check_history(
    port: u16,
    listen: u16,
    since: i64,
    runs: &[Short],
) -> (Vec<String>, i64, i64) {
    let mut c = client(port).await;
    let matches = c
        .find_package(v1::FindPackageRequest {
            name: PACKAGE.into(),
            since_ms: since,
            ..Default::default()
        })
        .await
        .expect("find_package")
        .into_inner()
        .matches;
    let connections = c
        .list_connections(v1::ListConnectionsRequest {
            since_ms: since,
            ..Default::default()
        })
        .await
        .expect("list_connections")
        .into_inner()
        .connections;
    let (mut worst_start, mut worst_exit) = (0i64, 0i64);
    let mut problems = Vec::new();
    for r in runs {
        // The kernel's start is the fork, just after `spawned_ms`; the exit
        // is just before the reap.
        let Some(m) = matches.iter().find(|m| {
            m.key.unwrap().pid == r.pid && (m.process_start_ms - r.spawned_ms).abs() < 10_000
        }) else {
            problems.push(format!("pid {}: not in history with {PACKAGE}", r.pid));
            continue;
        };
        let start_err = (m.process_start_ms - r.spawned_ms).abs();
        let exit_err = if m.exit_time_ms == 0 {
            i64::MAX
        } else {
            (m.exit_time_ms - r.reaped_ms).abs()
        };
        worst_start = worst_start.max(start_err);
        worst_exit = worst_exit.max(exit_err);
        if start_err > 1_000 {
            problems.push(format!("pid {}: start off by {start_err} ms", r.pid));
        }
        if exit_err > 1_000 {
            problems.push(format!(
                "pid {}: exit {} vs reaped {} ({exit_err} ms)",
                r.pid, m.exit_time_ms, r.reaped_ms
            ));
        }
        let key = m.key.unwrap();
        if !connections
            .iter()
            .any(|c| c.key == Some(key) && c.remote_port == u32::from(listen))
        {
            problems.push(format!("pid {}: its connection is not in history", r.pid));
        }
    }
    (problems, worst_start, worst_exit)
}

async fn outage_run(kill_agent: bool) {
    let bins = built_bins();
    let dir = tempfile::tempdir().unwrap();
    let (data, state, log) = (
        dir.path().join("collector"),
        dir.path().join("agent"),
        dir.path().join("agent.log"),
    );
    let port = free_port();
    let listen = Listener::start();
    let mut coll = collector(&bins, port, &data);
    let mut agent1 = agent(&bins, port, &state, &log);
    // Up and synced: the host has reported a full scan.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = hosts(port).await;
        if h.hosts
            .iter()
            .any(|h| h.last_full_scan_ms > 0 && h.connected)
        {
            break;
        }
        assert!(Instant::now() < deadline, "agent never reported: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let since = now_ms();

    // The outage.
    coll.kill9();
    let down = Instant::now();
    let outage = outage();
    // The processes spread over the first 80 % of the outage.
    let every = outage.mul_f64(0.8) / N as u32;
    let lport = listen.port;
    let state2 = state.clone();
    let bins2 = bins.clone();
    let log2 = log.clone();
    let (runs, agent2) = tokio::task::spawn_blocking(move || {
        let mut runs = run_shorts(N / 2, every, lport);
        let agent2 = if kill_agent {
            // Events of the last process are batched for 200 ms and
            // spooled; a moment, then the kill.
            std::thread::sleep(Duration::from_secs(2));
            agent1.kill9();
            let before = spool_bytes(&state2);
            let restarted = agent(&bins2, port, &state2, &log2);
            wait_agent_ready(&state2, before);
            restarted
        } else {
            agent1
        };
        runs.extend(run_shorts(N - N / 2, every, lport));
        (runs, agent2)
    })
    .await
    .unwrap();
    let _agent = agent2;
    if let Some(rest) = outage.checked_sub(down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let outage_was = down.elapsed();
    let _coll = collector(&bins, port, &data);

    // Everything arrives: ask until the answer is complete or 90 s passed
    // (the agent's reconnect backoff is up to 30 s, then the backlog).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (problems, worst_start, worst_exit) = loop {
        let (problems, ws, we) = check_history(port, listen.port, since, &runs).await;
        if problems.is_empty() || Instant::now() > deadline {
            break (problems, ws, we);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let h = hosts(port).await;
    let health = h
        .hosts
        .first()
        .and_then(|h| h.health.clone())
        .unwrap_or_default();
    eprintln!(
        "outage (agent killed: {kill_agent}): {:.0} s down, {} of {N} processes complete; \
         worst start error {worst_start} ms, worst exit error {worst_exit} ms; health {health:?}",
        outage_was.as_secs_f64(),
        N - problems.len().min(N),
    );
    assert!(
        problems.is_empty(),
        "{} problem(s): {problems:#?}\nagent log:\n{}",
        problems.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // (The log is colored: drop the escape sequences.)
    let mut log_text = String::new();
    let mut in_escape = false;
    for c in std::fs::read_to_string(&log).unwrap_or_default().chars() {
        match c {
            '\u{1b}' => in_escape = true,
            'm' if in_escape => in_escape = false,
            _ if in_escape => {}
            _ => log_text.push(c),
        }
    }
    if kill_agent {
        // The restarted agent found its predecessor's unsent messages.
        let resumed: u64 = log_text
            .split("resumed=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        eprintln!("the restarted agent resumed {resumed} spooled message(s)");
        assert!(resumed > 0, "no spool resumed:\n{log_text}");
    }
    assert_eq!(health.spool_dropped, 0, "nothing was dropped: {health:?}");
    assert!(health.spool_on_disk, "{health:?}");
    assert_eq!(health.shedding, "", "the watchdog shed nothing: {health:?}");
    assert!(h.hosts[0].connected && h.hosts[0].fresh, "{:?}", h.hosts[0]);
}

/// The "Outage" acceptance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_loses_no_exec_exit_or_connection() {
    if !can_run() {
        return;
    }
    outage_run(false).await;
}

/// The same, with the agent killed with SIGKILL mid-outage and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_outage_resumes_from_its_spool() {
    if !can_run() {
        return;
    }
    outage_run(true).await;
}

/// The "Panic" acceptance, with an agent in process (the hook is
/// compiled only into test builds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_scanner_restarts_the_loop_and_coverage_says_so() {
    let data = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = patchgap_collector::SqliteStore::open(data.path()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patchgap_collector::serve(
        patchgap_collector::CollectorConfig {
            data_dir: data.path().to_path_buf(),
            ..Default::default()
        },
        Arc::new(store),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let faults = patchgap_agent::run::Faults::default();
    let agent = patchgap_agent::spawn(patchgap_agent::AgentConfig {
        collector: format!("http://127.0.0.1:{port}"),
        ebpf: ebpf_wanted(),
        interval: Duration::from_secs(3600),
        heartbeat: Duration::from_millis(500),
        backoff_max: Duration::from_secs(1),
        restart_backoff: Duration::from_millis(500),
        faults: faults.clone(),
        ..Default::default()
    });
    timeout(agent.wait_for(|s| s.scans >= 1 && s.acked_seq >= s.last_seq && s.last_seq > 0)).await;
    let before = agent.status();

    // One panic: the loop is back and has scanned within seconds.
    faults.panic_next_scans(1);
    let asked = Instant::now();
    agent.rescan().await;
    timeout(agent.wait_for(|s| s.scan_restarts == 1)).await;
    timeout(agent.wait_for(|s| s.scans > before.scans)).await;
    let back_after = asked.elapsed();
    // A new loop's first scan is a full snapshot, and it is stored.
    timeout(agent.wait_for(|s| s.acked_seq >= s.last_seq)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let coverage = loop {
        let h = hosts(port).await;
        let c = h.coverage.clone().unwrap_or_default();
        // A heartbeat sent during the restart's backoff says "restarted,
        // not scanning"; the next ones, "scanning again".
        if c.hosts
            .first()
            .is_some_and(|x| x.scan_restarts == 1 && x.scanning)
        {
            assert!(h.hosts[0].connected, "scanning again: {:?}", h.hosts[0]);
            assert!(c.hosts[0].fresh, "{c:?}");
            let health = h.hosts[0].health.clone().unwrap();
            assert!(
                health.last_panic.contains("injected scanner panic"),
                "{health:?}"
            );
            break c;
        }
        assert!(Instant::now() < deadline, "coverage never said so: {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // A loop that keeps panicking: the host is not shown as connected,
    // though its stream is open, and comes back once the fault is gone.
    faults.panic_next_scans(u32::MAX);
    agent.rescan().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = hosts(port).await;
        let c = h.coverage.clone().unwrap_or_default();
        if !h.hosts[0].connected && !c.hosts[0].scanning {
            assert!(!h.hosts[0].fresh && c.hosts_stale == 1, "{h:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still shown connected: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.status().connected, "the stream itself stayed up");
    faults.panic_next_scans(0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let h = hosts(port).await;
        if h.hosts[0].connected {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restarts = agent.status().scan_restarts;
    eprintln!(
        "panic: loop back and scanned {} ms after the injected panic; coverage {:?}; \
         {restarts} restarts in the sustained phase",
        back_after.as_millis(),
        coverage.hosts[0]
    );
    assert!(back_after < Duration::from_secs(20), "{back_after:?}");
    agent.shutdown().await;
    let _ = stop.send(());
    let _ = server.await;
}
