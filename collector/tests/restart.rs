//! The real collector binary is SIGKILLed while the real agent streams to it,
//! then restarted on the same port and data directory. The agent must
//! reconnect by itself, resend what was not acked, and nothing the collector
//! acknowledged may be lost.

use std::{
    collections::BTreeSet,
    fs::File,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use patchgap_agent::{AgentConfig, AgentHandle, AgentStatus};
use patchgap_proto::v1::{self, query_client::QueryClient};

/// Every wait gives up after this long.
const WAIT: Duration = Duration::from_secs(60);

/// A child process that is killed (SIGKILL) and reaped when dropped, so a
/// failing assertion leaks nothing. When the test is failing and the child
/// has a log, the log is printed.
struct Guard {
    child: Child,
    what: &'static str,
    log: Option<PathBuf>,
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap (so /proc/PID is gone, not a zombie).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn print_log(&self) {
        if let Some(log) = &self.log {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            eprintln!(
                "---- {} log ({}) ----\n{text}----",
                self.what,
                log.display()
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

/// Fails the test instead of hanging it, saying what it waited for.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Waits until the agent's status satisfies `pred`.
async fn wait_agent(
    agent: &AgentHandle,
    what: &str,
    pred: impl Fn(&AgentStatus) -> bool,
) -> AgentStatus {
    match tokio::time::timeout(WAIT, agent.wait_for(pred)).await {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out after {WAIT:?} waiting for the agent: {what}; status: {:?}",
            agent.status()
        ),
    }
}

/// A free loopback port: bind port 0 and let it go.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// Starts the collector binary and waits until it accepts connections.
async fn start_collector(addr: SocketAddr, data_dir: &Path, log: &Path) -> Guard {
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the collector log");
    let child = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn patchgap-collector");
    let mut guard = Guard {
        child,
        what: "collector",
        log: Some(log.to_path_buf()),
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = guard.child.try_wait() {
            panic!("the collector exited while starting: {status}");
        }
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            return guard;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for the collector to accept connections on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A python that imported ssl (so it maps Debian's libssl3) and sleeps.
async fn python_with_ssl() -> Guard {
    let child = Command::new("/usr/bin/python3")
        .args(["-c", "import ssl, time; time.sleep(120)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /usr/bin/python3");
    let guard = Guard {
        child,
        what: "python",
        log: None,
    };
    let maps = format!("/proc/{}/maps", guard.pid());
    within(&format!("{maps} to mention libssl.so"), async {
        while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("libssl.so")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    guard
}

/// The start time (clock ticks since boot) of a live process, from
/// /proc/PID/stat; None when there is no such process.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the fields after the ")" that ends comm start at field 3.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

type Client = QueryClient<tonic::transport::Channel>;

async fn client(addr: SocketAddr) -> Client {
    within(
        "a query connection to the collector",
        QueryClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect to the collector")
}

/// The collector's running processes, as (pid, start ticks).
async fn running(client: &mut Client) -> BTreeSet<(u32, u64)> {
    within(
        "list_processes",
        client.list_processes(v1::ListProcessesRequest::default()),
    )
    .await
    .expect("list_processes")
    .into_inner()
    .processes
    .iter()
    .map(|p| {
        let k = p.key.expect("a process has a key");
        (k.pid, k.start_ticks)
    })
    .collect()
}

/// The pids the collector says run libssl3.
async fn libssl_pids(client: &mut Client) -> BTreeSet<u32> {
    within(
        "find_package libssl3",
        client.find_package(v1::FindPackageRequest {
            name: "libssl3".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("find_package")
    .into_inner()
    .matches
    .iter()
    .map(|m| m.key.expect("a match has a key").pid)
    .collect()
}

/// The acked sequence number the database holds, read straight from the
/// file (read-only, so the crashed database is left as the collector left it).
fn stored_acked_seq(data_dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("patchgap.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the collector's database read-only");
    conn.query_row("SELECT max(acked_seq) FROM host", [], |r| r.get(0))
        .expect("read the stored ack")
}

/// A collector binary on a free port with its data and log in a temporary
/// directory, and the agent streaming to it.
struct Setup {
    addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    collector: Guard,
    agent: AgentHandle,
    _tmp: tempfile::TempDir,
}

impl Setup {
    /// Starts both and waits until the agent's first snapshot is acked.
    async fn start() -> Setup {
        // RUST_LOG=info shows the in-process agent's log in a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let log = tmp.path().join("collector.log");
        let addr = free_port();
        let collector = start_collector(addr, &data_dir, &log).await;
        let agent = patchgap_agent::spawn(AgentConfig {
            collector: format!("http://{addr}"),
            interval: Duration::from_secs(3600),
            backoff_max: Duration::from_millis(500),
            ..Default::default()
        });
        wait_agent(&agent, "the first snapshot to be acked", |s| {
            s.scans >= 1 && s.last_seq > 0 && s.acked_seq >= s.last_seq
        })
        .await;
        Setup {
            addr,
            data_dir,
            log,
            collector,
            agent,
            _tmp: tmp,
        }
    }

    /// SIGKILLs the collector and starts it again on the same port and data
    /// directory.
    async fn restart_collector_after(&mut self, between: impl FnOnce(&Self)) {
        self.collector.kill();
        between(self);
        self.collector = start_collector(self.addr, &self.data_dir, &self.log).await;
    }

    /// Scans now and waits until the collector acked the result.
    async fn sync(&self, what: &str) -> AgentStatus {
        within(what, self.agent.rescan_and_sync()).await
    }
}

/// The one host the collector knows.
async fn only_host(client: &mut Client) -> v1::HostSummary {
    let mut hosts = within("list_hosts", client.list_hosts(v1::ListHostsRequest {}))
        .await
        .expect("list_hosts")
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 1, "the host is listed once: {hosts:?}");
    hosts.remove(0)
}

/// Asserts that every ack the agent holds is durable in the killed
/// collector's database.
fn assert_acks_durable(data_dir: &Path, at_kill: &AgentStatus) {
    let stored = stored_acked_seq(data_dir);
    assert!(
        stored >= at_kill.acked_seq as i64,
        "the agent holds an ack for seq {} but the killed collector's database only has seq {stored}",
        at_kill.acked_seq
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_survives_collector_sigkill_and_restart() {
    // 1. Collector and agent; the first snapshot is stored.
    let mut t = Setup::start().await;

    // 2. A child that maps libssl, scanned and acked.
    let first = python_with_ssl().await;
    let synced = t.sync("a rescan naming the first child to be acked").await;
    assert!(synced.acked_seq >= 1, "{synced:?}");
    let mut query = client(t.addr).await;
    assert!(
        libssl_pids(&mut query).await.contains(&first.pid()),
        "before the kill, the collector lists the first child (pid {}) under libssl3",
        first.pid()
    );
    let full_scan_before = only_host(&mut query).await.last_full_scan_ms;

    // 3. A second child; ask for a scan and SIGKILL the collector at once, so
    // the delta naming it is most likely never acked by this collector.
    let second = python_with_ssl().await;
    let listed_before_kill = running(&mut query).await;
    assert!(
        listed_before_kill
            .iter()
            .any(|(pid, _)| *pid == first.pid())
    );
    drop(query);
    let scans_before = t.agent.status().scans;
    t.agent.rescan().await;
    let mut at_kill = AgentStatus::default();
    t.restart_collector_after(|t| {
        at_kill = t.agent.status();
        assert_acks_durable(&t.data_dir, &at_kill);
    })
    .await;

    // 4. The agent reconnects by itself to the restarted collector and
    // everything it queued, the scan that saw the second child included, is
    // acked.
    let resynced = wait_agent(
        &t.agent,
        "a reconnect and the ack of everything queued, including the scan requested at the kill",
        |s| s.connects >= 2 && s.scans > scans_before && s.acked_seq >= s.last_seq,
    )
    .await;
    assert!(resynced.acked_seq >= at_kill.acked_seq.max(synced.acked_seq));

    // 5. Both children are found, the host is listed once, and the agent
    // reconnected without help.
    let mut query = client(t.addr).await;
    let libssl = libssl_pids(&mut query).await;
    assert!(
        libssl.contains(&first.pid()),
        "the first child (pid {}, acked before the kill) is gone after the restart: {libssl:?}",
        first.pid()
    );
    assert!(
        libssl.contains(&second.pid()),
        "the second child (pid {}, sent around the kill) is missing after the restart: {libssl:?}",
        second.pid()
    );
    let host = only_host(&mut query).await;
    assert!(host.connected, "the agent's stream is open: {host:?}");
    assert!(resynced.connects >= 2, "{resynced:?}");
    // The restarted collector resumed the session from its database: the
    // agent did not have to resend a full snapshot.
    assert_eq!(
        host.last_full_scan_ms, full_scan_before,
        "the restart forced a full resync"
    );

    // 6. Nothing acknowledged was lost: every process the collector listed
    // before the kill that still runs (same pid and start time) is listed now.
    let listed_after = running(&mut query).await;
    let lost: Vec<(u32, u64)> = listed_before_kill
        .iter()
        .filter(|(pid, ticks)| start_ticks(*pid) == Some(*ticks))
        .filter(|key| !listed_after.contains(key))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "processes listed before the kill and still running are missing after the restart: {lost:?}"
    );
    for child in [&first, &second] {
        let key = (child.pid(), start_ticks(child.pid()).expect("child alive"));
        assert!(
            listed_after.contains(&key),
            "{} {key:?} is not in list_processes",
            child.what
        );
    }

    within("the agent to shut down", t.agent.shutdown()).await;
    drop((first, second, t.collector));
}

/// The deterministic variant of the kill: the collector is frozen (SIGSTOP)
/// before the scan, so the delta is certainly sent and certainly not
/// committed or acked when the collector is SIGKILLed. The agent must resend
/// it to the restarted collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_but_unacked_delta_is_resent_after_sigkill() {
    let mut t = Setup::start().await;
    let synced = t.sync("the baseline to be acked").await;
    let full_scan_before = only_host(&mut client(t.addr).await).await.last_full_scan_ms;

    let child = python_with_ssl().await;
    let pid = t.collector.pid() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own
    // child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
    let scans_before = t.agent.status().scans;
    t.agent.rescan().await;
    let scanned = wait_agent(&t.agent, "the scan that saw the child", |s| {
        s.scans > scans_before
    })
    .await;
    assert!(
        scanned.last_seq > synced.acked_seq,
        "the scan produced a delta: {scanned:?}"
    );
    // Let the connection hand the delta to the kernel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut at_kill = AgentStatus::default();
    t.restart_collector_after(|t| {
        at_kill = t.agent.status();
        assert!(
            at_kill.acked_seq < at_kill.last_seq,
            "a frozen collector acked something: {at_kill:?}"
        );
        assert_acks_durable(&t.data_dir, &at_kill);
        assert!(
            stored_acked_seq(&t.data_dir) < at_kill.last_seq as i64,
            "a frozen collector committed something"
        );
    })
    .await;

    wait_agent(&t.agent, "the unacked delta to be resent and acked", |s| {
        s.connects >= 2 && s.acked_seq >= at_kill.last_seq
    })
    .await;
    let mut query = client(t.addr).await;
    let libssl = libssl_pids(&mut query).await;
    assert!(
        libssl.contains(&child.pid()),
        "the child (pid {}) from the resent delta is missing: {libssl:?}",
        child.pid()
    );
    let host = only_host(&mut query).await;
    assert!(host.connected, "the agent's stream is open: {host:?}");
    assert_eq!(
        host.last_full_scan_ms, full_scan_before,
        "the restart forced a full resync instead of a resend"
    );

    within("the agent to shut down", t.agent.shutdown()).await;
    drop((child, t.collector));
}

/// Regression: a store error at start printed "database error" and lost
/// SQLite's cause ("matching stored packages: database error"). The
/// binary must name the cause, so an operator can act on it.
#[test]
fn a_failing_start_names_the_database_cause() {
    use patchgap_collector::{
        SqliteStore, Store,
        store::{DeclaredPackage, SbomRecord},
    };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // A package stored but never matched, and the advisory index gone:
        // the start-up matching pass must fail on it.
        let store = SqliteStore::open(dir.path()).expect("open");
        store
            .put_sbom(&SbomRecord {
                image: format!("sha256:{}", "2".repeat(64)),
                sha256: "x".into(),
                packages: vec![DeclaredPackage {
                    package: v1::Package {
                        ecosystem: "pypi".into(),
                        name: "requests".into(),
                        version: "2.0.0".into(),
                        purl: "pkg:pypi/requests@2.0.0".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                ..Default::default()
            })
            .expect("put_sbom");
    }
    rusqlite_drop_table(&dir.path().join("patchgap.db"), "advisory_package");
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run patchgap-collector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("matching stored packages"), "{stderr}");
    assert!(
        stderr.contains("no such table: advisory_package"),
        "the SQLite cause is printed: {stderr}"
    );
}

/// Drops a table with the sqlite3 library the collector links (through a
/// second connection, as an operator's mistake or a damaged file would).
fn rusqlite_drop_table(db: &Path, table: &str) {
    let conn = rusqlite::Connection::open(db).expect("open the db file");
    conn.execute_batch(&format!("DROP TABLE {table}"))
        .expect("drop table");
}
