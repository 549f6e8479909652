//! The agent's runtime: a scan loop that never waits on the network, and a
//! connection loop that streams what the scans produce to the collector.
//!
//! The two meet in the [`Spool`]: scans append sequenced messages (on disk,
//! under the state directory), the connection sends them and the spool
//! deletes them once the collector acks them. The collector acks only what
//! it has durably committed, and acks are cumulative, so after any
//! disconnect the agent resends everything after the collector's last ack
//! (the Welcome tells it where that is). The spool keeps the session id and
//! the sequence numbers across restarts, so an agent killed and started
//! again resends its predecessor's messages under the same session, and
//! the collector recognises what it already stored.
//!
//! The scan loop runs on a thread of its own (its own single-threaded
//! runtime, for its timers), so /proc reads, package database loads and
//! spool writes never run on the async workers. It is supervised: a panic
//! is caught, counted, reported with the next heartbeat, and the loop starts
//! again after a backoff with a full scan. Heartbeats come from the
//! connection loop and say whether the scan loop is alive.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use patchgap_proto::{
    encoded::{self, EncodedMessage},
    v1,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::{
    diff::Baseline,
    failover::Collectors,
    model::{Process, ProcessKey, Workload},
    respond::Responder,
    scan::{ExecInfo, ExecRecord, ScanConfig, Scanner, now_ms},
    sense::{Event, SenseConfig, Sensor},
    spool::{Spool, SpoolConfig},
    watchdog::{Shed, WatchdogConfig},
    wire,
};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The collector's URL, such as http://127.0.0.1:7373 or
    /// https://collector:7373 (which needs `tls.ca`), or several of them
    /// comma-separated: the agent moves to the next when one fails
    /// ([`crate::failover::Collectors`]).
    pub collector: String,
    /// TLS files, read again at each connect.
    pub tls: crate::tls::ClientTls,
    pub scan: ScanConfig,
    /// Time between full /proc rescans.
    pub interval: Duration,
    pub heartbeat: Duration,
    /// Target size of one snapshot part on the wire.
    pub part_bytes: usize,
    /// The unacked messages: where (the state directory; None keeps them in
    /// memory), how many bytes at most (past it the oldest go, counted, and
    /// the next scan is a full snapshot), how often they are synced.
    pub spool: SpoolConfig,
    /// Largest message the agent accepts from the collector.
    pub max_message_bytes: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Sense live with eBPF. Off, or failing to load, the agent works from
    /// /proc alone and says so in its capabilities.
    pub ebpf: bool,
    pub sense: SenseConfig,
    /// The time between two deltas of event-derived changes. A change
    /// after a quiet spell goes out at once; under a steady stream changes
    /// are batched into one delta about this often (each delta costs a
    /// spool write, a send and an ack: wakeups on every thread), sent with
    /// the event batch nearest the deadline: at most a ring drain period
    /// (200 ms) later than it.
    pub event_flush: Duration,
    /// After an exec, the process's maps are read again this much later,
    /// once the dynamic loader has mapped its libraries.
    pub exec_rescan_delay: Duration,
    /// The agent's own CPU and memory caps.
    pub watchdog: WatchdogConfig,
    /// First wait before a panicked scan loop starts again (doubling up to
    /// a minute; back to this after a minute without a panic).
    pub restart_backoff: Duration,
    /// Test-only fault injection; does nothing in release builds.
    pub faults: Faults,
    /// Where containments are pinned in bpffs (one directory per host:
    /// the agent makes what is there equal to the collector's set); None:
    /// this agent contains nothing, and says so in its capabilities.
    pub contain: Option<PathBuf>,
    /// How long and how many DNS answers are kept per workload (capture
    /// itself is `sense.dns`).
    pub dns: crate::dns::DnsConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            collector: "http://127.0.0.1:7373".into(),
            tls: Default::default(),
            scan: ScanConfig::default(),
            interval: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            part_bytes: 1 << 20,
            spool: SpoolConfig::default(),
            max_message_bytes: 16 << 20,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            ebpf: true,
            sense: SenseConfig::default(),
            event_flush: Duration::from_millis(400),
            exec_rescan_delay: Duration::from_millis(100),
            watchdog: WatchdogConfig::default(),
            restart_backoff: Duration::from_secs(1),
            faults: Faults::default(),
            contain: None,
            dns: crate::dns::DnsConfig::default(),
        }
    }
}

/// Faults a test can inject. The hooks exist only under `cfg(test)` or the
/// `faults` feature (which only the test crates turn on, through a
/// dev-dependency): a release build has no way to trigger them.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    #[cfg(any(test, feature = "faults"))]
    scan_panics: Arc<std::sync::atomic::AtomicU32>,
}

impl Faults {
    /// The next `n` full scans panic inside the scanner.
    #[cfg(any(test, feature = "faults"))]
    pub fn panic_next_scans(&self, n: u32) {
        self.scan_panics.store(n, Ordering::SeqCst);
    }

    fn scan(&self) {
        #[cfg(any(test, feature = "faults"))]
        if self
            .scan_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("injected scanner panic (test hook)");
        }
    }
}

/// What the agent reports about itself, for tests and for `patchgap up`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub session_id: String,
    pub scans: u64,
    /// Scans started so far; a scan's number is this count when it starts.
    pub scans_started: u64,
    /// The number of the last completed scan.
    pub last_scan: u64,
    /// The highest sequence number handed out.
    pub last_seq: u64,
    /// The highest sequence number the collector has acked.
    pub acked_seq: u64,
    pub connected: bool,
    /// Successful handshakes so far.
    pub connects: u64,
    /// Messages the spool dropped (full, oldest first), counted across
    /// restarts of the agent with the same state directory.
    pub spool_dropped: u64,
    /// Times the scan loop panicked and was restarted.
    pub scan_restarts: u64,
    /// Processes in the last scan.
    pub processes: u32,
    /// eBPF sensing is on.
    pub ebpf: bool,
    /// Why it is off, when it is.
    pub ebpf_reason: String,
    /// Kernel events handled.
    pub events: u64,
    /// Kernel events lost (ring buffer full, the agent's queue full, or no
    /// process to put them to), as of the last heartbeat.
    pub lost_events: u64,
    /// What the watchdog sheds now (0 nothing, 1 opens, 2 connects too).
    pub shed_level: u8,
    /// Why DNS answers are not captured ("" when they are, or when eBPF is
    /// off altogether).
    pub dns_reason: String,
    /// DNS capture's counters, as of the last heartbeat tick.
    pub dns: crate::dns::DnsStats,
}

struct Shared {
    spool: Mutex<Spool>,
    /// Wakes the connection loop when the spool grows.
    wake: Notify,
    /// The next scan must be a full snapshot.
    resync: AtomicBool,
    status: watch::Sender<AgentStatus>,
    rescan: mpsc::Sender<()>,
    /// The sensor's counters, refreshed by the scan loop.
    sense: Mutex<v1::SenseStats>,
    /// The last scan's numbers, for heartbeats.
    last_stats: Mutex<v1::ScanStats>,
    /// When the scan loop last made progress (ms), 0 while it waits to be
    /// restarted.
    scan_alive_ms: AtomicI64,
    scan_restarts: AtomicU64,
    last_panic: Mutex<String>,
    shed: Arc<Shed>,
    /// The host's containments (bpf(2) work: used on blocking threads).
    responder: Mutex<Responder>,
}

/// The scan loop is taken for dead when it made no progress for this long
/// (it ticks every heartbeat interval even when idle; a full scan of a
/// large host takes seconds).
const SCAN_STALL: Duration = Duration::from_secs(120);

impl Shared {
    /// The spool. A panic while it was held (the scan loop's, which the
    /// supervisor survives) leaves it consistent: every change to it is
    /// complete before the next fallible step, so the poison is ignored.
    fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self, stall: Duration) -> v1::AgentHealth {
        let alive = self.scan_alive_ms.load(Ordering::Relaxed);
        let spool = self.spool();
        v1::AgentHealth {
            scanning: alive > 0 && now_ms() - alive <= stall.as_millis() as i64,
            scan_alive_ms: alive,
            scan_restarts: self.scan_restarts.load(Ordering::Relaxed),
            last_panic: self.last_panic.lock().expect("panic lock").clone(),
            spool_dropped: spool.dropped(),
            spool_bytes: spool.bytes(),
            spool_unacked: spool.unacked(),
            spool_on_disk: spool.is_disk(),
            shedding: Shed::describe(self.shed.level()).into(),
            watchdog_trips: self.shed.trips(),
            cpu_permille: self.shed.cpu_permille(),
            rss_bytes: self.shed.rss_bytes(),
        }
    }

    /// The responder; like the spool, consistent after a panic.
    fn responder(&self) -> std::sync::MutexGuard<'_, Responder> {
        self.responder.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self) {
        self.scan_alive_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// A running agent. Dropping the handle does not stop it; call `shutdown`.
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
    rescan: mpsc::Sender<()>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    scan_thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl AgentHandle {
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// The health the next heartbeat reports.
    pub fn health(&self) -> v1::AgentHealth {
        self.shared.health(SCAN_STALL)
    }

    /// Asks for a scan now, as if the interval had elapsed.
    pub async fn rescan(&self) {
        let _ = self.rescan.send(()).await;
    }

    /// Waits until the status satisfies `pred`.
    pub async fn wait_for(&self, pred: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
        let mut rx = self.status.clone();
        rx.wait_for(|s| pred(s))
            .await
            .expect("agent status channel open")
            .clone()
    }

    /// Scans now and waits until the collector has acked the result.
    pub async fn rescan_and_sync(&self) -> AgentStatus {
        // A scan that is already running may have missed whatever the
        // caller just did: wait for one that starts after this call.
        let target = self.status().scans_started + 1;
        self.rescan().await;
        let s = self.wait_for(|s| s.last_scan >= target).await;
        self.wait_for(|x| x.acked_seq >= s.last_seq).await
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.shared.shed.stop();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(t) = self.scan_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // What the last batches wrote reaches the disk.
        let shared = self.shared;
        let _ = tokio::task::spawn_blocking(move || shared.spool().sync()).await;
    }
}

/// Starts the agent: the scan thread, the connection task on the current
/// runtime, and the watchdog's thread when it has caps.
pub fn spawn(config: AgentConfig) -> AgentHandle {
    let boot_id = std::fs::read_to_string(config.scan.proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // A spool that cannot be opened (a read-only or full disk, a bad
    // directory) must not stop the agent: it runs on a memory spool and
    // says so in its health (spool_on_disk false).
    let spool = match Spool::open(&config.spool, &boot_id) {
        Ok((spool, opened)) => {
            if opened.resumed > 0 || opened.truncated_bytes > 0 || opened.new_boot {
                info!(
                    resumed = opened.resumed,
                    truncated_bytes = opened.truncated_bytes,
                    new_boot = opened.new_boot,
                    next_seq = spool.next_seq(),
                    "spool opened"
                );
            }
            spool
        }
        Err(error) => {
            warn!(%error, dir = ?config.spool.dir, "spool: cannot open the state directory; keeping unacked messages in memory");
            let memory = SpoolConfig {
                dir: None,
                ..config.spool.clone()
            };
            Spool::open(&memory, &boot_id)
                .expect("a memory spool opens")
                .0
        }
    };
    let (status_tx, status_rx) = watch::channel(AgentStatus {
        session_id: spool.session_id().to_string(),
        last_seq: spool.next_seq() - 1,
        spool_dropped: spool.dropped(),
        ..Default::default()
    });
    let (rescan_tx, rescan_rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        spool: Mutex::new(spool),
        wake: Notify::new(),
        resync: AtomicBool::new(true),
        status: status_tx,
        rescan: rescan_tx.clone(),
        sense: Mutex::new(v1::SenseStats::default()),
        last_stats: Mutex::new(v1::ScanStats::default()),
        scan_alive_ms: AtomicI64::new(now_ms()),
        scan_restarts: AtomicU64::new(0),
        last_panic: Mutex::new(String::new()),
        shed: Arc::new(Shed::default()),
        responder: Mutex::new(Responder::new(
            config.contain.clone(),
            config.spool.dir.clone(),
            config.scan.proc_root.clone(),
            config.collector.clone(),
        )),
    });
    // Start sensing before the first scan, so nothing falls between them.
    // (Its reader task runs on this runtime; the sensor itself moves to the
    // scan thread.)
    let (sensor, events) = if config.ebpf {
        match Sensor::start(&config.sense) {
            Ok((sensor, events)) => (Some(sensor), Some(events)),
            Err(error) => {
                // Said once; the agent goes on from /proc alone.
                warn!(%error, "ebpf: off ({}); scanning /proc only", error.reason());
                shared
                    .status
                    .send_modify(|s| s.ebpf_reason = error.reason());
                (None, None)
            }
        }
    } else {
        shared
            .status
            .send_modify(|s| s.ebpf_reason = "disabled by configuration".into());
        (None, None)
    };
    shared.status.send_modify(|s| {
        s.ebpf = sensor.is_some();
        s.dns_reason = sensor
            .as_ref()
            .and_then(Sensor::dns_off)
            .unwrap_or_default()
            .to_owned();
    });
    if let Err(error) = crate::watchdog::start(config.watchdog.clone(), shared.shed.clone()) {
        warn!(%error, "watchdog: cannot start its thread; running without caps");
    }
    let hello_host = wire::host(&Scanner::new(config.scan.clone()).host_identity());
    let state = ScanState {
        rescan: rescan_rx,
        stop: stop_rx.clone(),
        sensor,
        events,
        baseline: None,
        pending: Pending::new(config.dns.clone()),
        reconciled_total: 0,
    };
    let scan_thread = {
        let (config, shared) = (config.clone(), shared.clone());
        std::thread::Builder::new()
            .name("patchgap-scan".into())
            .spawn(move || supervise(config, shared, state))
            .expect("spawn the scan thread")
    };
    let tasks = vec![tokio::spawn(connection_loop(
        config,
        hello_host,
        shared.clone(),
        stop_rx,
    ))];
    AgentHandle {
        status: status_rx,
        rescan: rescan_tx,
        stop: stop_tx,
        tasks,
        scan_thread: Some(scan_thread),
        shared,
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) {
    let handle = spawn(config);
    shutdown.await;
    handle.shutdown().await;
}

/// What the scan loop keeps across a restart: its channels, the sensor,
/// and what it merged (a panic must not lose merged events).
struct ScanState {
    rescan: mpsc::Receiver<()>,
    stop: watch::Receiver<bool>,
    sensor: Option<Sensor>,
    events: Option<mpsc::Receiver<Event>>,
    baseline: Option<Baseline>,
    pending: Pending,
    reconciled_total: u64,
}

/// Runs the scan loop on this thread and starts it again after a panic:
/// a new scanner (its caches may be half-updated), the pending batch sent,
/// and a full snapshot at the restarted loop's first scan (the baseline may
/// be half-updated too; the snapshot supersedes it). The wait doubles from
/// `restart_backoff` up to a minute, and starts over once the loop ran a
/// minute without a panic. While it waits the agent reports that it does
/// not scan.
fn supervise(config: AgentConfig, shared: Arc<Shared>, mut state: ScanState) {
    let mut backoff = config.restart_backoff;
    loop {
        // A runtime per run: a panic leaves nothing of the last one behind.
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(error) => {
                warn!(%error, "scan thread: no runtime; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let started = std::time::Instant::now();
        shared.alive();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(scan_loop(&config, &shared, &mut state))
        }));
        let payload = match run {
            Ok(()) => return,
            Err(payload) => payload,
        };
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let message: String = message.chars().take(200).collect();
        let restarts = shared.scan_restarts.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(panic = %message, restarts, backoff_ms = backoff.as_millis() as u64, "scan loop panicked; restarting it");
        *shared.last_panic.lock().expect("panic lock") = message;
        shared.scan_alive_ms.store(0, Ordering::Relaxed);
        shared.status.send_modify(|s| s.scan_restarts = restarts);
        if started.elapsed() >= Duration::from_secs(60) {
            backoff = config.restart_backoff;
        }
        // What was merged before the panic goes out; then a full snapshot.
        let flushed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            flush_pending(
                &shared,
                &mut state.pending,
                state.baseline.as_mut(),
                config.part_bytes,
            )
        }));
        if flushed.is_err() {
            // The names learnt stay: they are not news, and the answers
            // will not come again before their TTL.
            let names = std::mem::take(&mut state.pending.names);
            state.pending = Pending {
                names,
                ..Pending::default()
            };
        }
        shared.resync.store(true, Ordering::SeqCst);
        let stopped = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => false,
                r = state.stop.wait_for(|v| *v) => r.is_ok(),
            }
        });
        if stopped {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

fn capabilities(config: &AgentConfig, shared: &Shared) -> v1::Capabilities {
    let contain = shared.responder().capability();
    let status = shared.status.borrow();
    v1::Capabilities {
        ebpf: status.ebpf,
        ebpf_reason: if status.ebpf {
            String::new()
        } else {
            status.ebpf_reason.clone()
        },
        // SAFETY: geteuid has no preconditions.
        root: unsafe { libc::geteuid() } == 0,
        rescan_interval_secs: config.interval.as_secs() as u32,
        contain: contain.0,
        contain_reason: contain.1,
    }
}

/// Pending changes from kernel events, flushed as one delta.
/// With eBPF watching connects, full scans read sockets this rarely.
const SOCKET_SCANS_EVERY: u32 = 10;

/// Events handled per pass of the scan loop, at most.
const EVENT_BATCH: usize = 256;

/// Pending changes ride on the event batch nearest their deadline
/// (`event_flush` after the last delta): under a steady stream a batch
/// arrives every drain of the ring, so a delta goes this much early rather
/// than in a wakeup of its own. A timer of its own took about a quarter of
/// the scan thread's wakeups, half of them the timer wheel's cascades.
const FLUSH_EARLY: Duration = Duration::from_millis(50);

/// When no batch comes (the stream stopped), the timer sends the changes
/// this much after their deadline: late enough that a batch at the deadline
/// cancels it before the timer wheel wakes the thread to cascade it.
const FLUSH_LATE: Duration = crate::sense::DRAIN_EVERY;

#[derive(Default)]
struct Pending {
    delta: v1::Delta,
    /// (process, protocol, destination) → the aggregated connection. The
    /// address is formatted once per destination, not once per connect.
    connections: HashMap<(ProcessKey, &'static str, std::net::SocketAddr), v1::Connection>,
    /// Pids whose maps are read again when their time comes.
    rescans: BTreeMap<tokio::time::Instant, Vec<u32>>,
    /// Opens of shared objects not mapped yet: pid → descriptor → path.
    held: HashMap<u32, HashMap<i32, Vec<u8>>>,
    /// Paths in `held`.
    held_paths: usize,
    /// Events dropped because no process could be put to them (gone, and
    /// the event did not say enough to record it), since the start.
    dropped: u64,
    /// The names each workload (cgroup) was told for an address, from the
    /// DNS answers the kernel copied: what connections are named by.
    names: crate::dns::Names,
}

/// Held opens before they are all forgotten: opens that are never mapped
/// (readers) are dropped at their process's exit, so this bounds only a
/// host full of long-lived readers.
const HELD_LIMIT: usize = 65_536;

/// The most process records a new pending delta reserves room for.
const UPSERT_HINT: usize = 256;

impl Pending {
    fn new(dns: crate::dns::DnsConfig) -> Pending {
        Pending {
            names: crate::dns::Names::new(dns),
            ..Pending::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.connections.is_empty()
            && self.delta.upserts.is_empty()
            && self.delta.exits.is_empty()
            && self.delta.workloads.is_empty()
            && self.delta.sockets.is_empty()
    }

    /// Takes the batched delta, connections included.
    fn take(&mut self) -> Option<v1::Delta> {
        // (held, held_paths and dropped are state, not news.)
        if self.is_empty() {
            return None;
        }
        // The next delta starts with room for as many records as this one
        // had (at most UPSERT_HINT): growing a Vec of process records by
        // doubling, batch after batch, was 6 % of the agent's CPU at 100
        // exec/s (reallocations, and glibc consolidating the freed ones).
        // So do exits (3 % more at 100 exec/s: a short-lived process's
        // exit goes in every delta its upsert does).
        let hint = self.delta.upserts.len().min(UPSERT_HINT);
        let exits = self.delta.exits.len().min(UPSERT_HINT);
        let mut delta = std::mem::replace(
            &mut self.delta,
            v1::Delta {
                upserts: Vec::with_capacity(hint),
                exits: Vec::with_capacity(exits),
                ..Default::default()
            },
        );
        delta.scanned_at_ms = now_ms();
        delta.connections = self.connections.drain().map(|(_, c)| c).collect();
        Some(delta)
    }
}

/// Sends what events batched, split to fit the message size limit, with
/// the records of the baseline that changed since they last went out.
fn flush_pending(
    shared: &Shared,
    pending: &mut Pending,
    baseline: Option<&mut Baseline>,
    part_bytes: usize,
) {
    if let Some(base) = baseline {
        base.settle(&mut pending.delta);
    }
    if let Some(delta) = pending.take() {
        let bodies = wire::split_delta(delta, part_bytes)
            .into_iter()
            .map(v1::agent_message::Body::Delta)
            .collect();
        enqueue(shared, bodies);
    }
}

/// Runs `f` on the scanner. The scan loop has a thread of its own, so the
/// synchronous /proc reads happen right here. None when there is no
/// scanner (never, since the supervisor gives each run a new one; kept so
/// callers say what they would do without one).
async fn on_scanner<T>(slot: &mut Option<Scanner>, f: impl FnOnce(&mut Scanner) -> T) -> Option<T> {
    Some(f(slot.as_mut()?))
}

/// The scan loop: full scans on the interval (or when asked), kernel
/// events merged in batches, and the spool's housekeeping. Returns when the
/// agent stops; a panic anywhere in it goes to [`supervise`].
async fn scan_loop(config: &AgentConfig, shared: &Arc<Shared>, state: &mut ScanState) {
    let ScanState {
        rescan,
        stop,
        sensor,
        events,
        baseline,
        pending,
        reconciled_total,
    } = state;
    let mut scanner = Some(Scanner::new(config.scan.clone()));
    if sensor.is_some() && config.sense.connects {
        // eBPF sees every connect; the socket tables (a walk of the kernel's
        // whole socket hash per network namespace) are read every tenth scan.
        if let Some(s) = scanner.as_mut() {
            s.set_socket_scans_every(SOCKET_SCANS_EVERY);
        }
    }
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Counters, liveness and the watchdog's level, between scans.
    let mut tick = tokio::time::interval(config.heartbeat.min(Duration::from_secs(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // When the last delta of event changes went out: the next waits until
    // `event_flush` after it, and no timer runs while nothing is pending.
    let mut last_flush = tokio::time::Instant::now()
        .checked_sub(config.event_flush)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    loop {
        shared.alive();
        let next_rescan = pending.rescans.keys().next().copied();
        let news = !pending.is_empty() || baseline.as_ref().is_some_and(Baseline::has_unsent);
        let flush_due = news.then(|| last_flush + config.event_flush);
        if flush_due.is_some_and(|due| due <= tokio::time::Instant::now() + FLUSH_EARLY) {
            // Due already, or nearly (the batch just merged, or the first
            // change after a quiet spell): sent in this wakeup, not a
            // timer's.
            flush_pending(shared, pending, baseline.as_mut(), config.part_bytes);
            last_flush = tokio::time::Instant::now();
            continue;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            // A requested rescan (a responder's, or a test's) reads
            // everything, sockets included.
            Some(()) = rescan.recv() => {
                if let Some(s) = scanner.as_mut() {
                    s.read_sockets_next();
                }
            }
            _ = tick.tick() => {
                if let Some(sensor) = sensor.as_mut() {
                    let s = sensor.stats();
                    *shared.sense.lock().expect("sense lock") = v1::SenseStats {
                        events: s.events,
                        lost_kernel: s.lost_kernel,
                        lost_user: s.lost_user,
                        reconciled: *reconciled_total,
                        dropped: pending.dropped,
                    };
                    let dns = pending.names.stats();
                    shared.status.send_modify(|st| {
                        st.lost_events = s.lost_kernel + s.lost_user + pending.dropped;
                        st.dns = dns;
                    });
                    // The watchdog decides; the sensor's owner applies it.
                    sensor.shed(shared.shed.level());
                }
                // Kills in force kill again where processes appeared,
                // connected or not. A set being applied holds the lock
                // (and kills as it applies): skipped, not waited for.
                match shared.responder.try_lock() {
                    Ok(mut r) => r.tick(),
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().tick(),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                }
                let level = shared.shed.level();
                shared.status.send_if_modified(|s| {
                    let changed = s.shed_level != level;
                    s.shed_level = level;
                    changed
                });
                let dropped = {
                    let mut spool = shared.spool();
                    if let Err(error) = spool.collect() {
                        warn!(%error, "spool: housekeeping failed");
                    }
                    spool.dropped()
                };
                shared.status.send_if_modified(|s| {
                    let changed = s.spool_dropped != dropped;
                    s.spool_dropped = dropped;
                    changed
                });
                continue;
            }
            // Events wait in the channel until the first scan has made a
            // baseline to merge them into: none is dropped for want of one.
            n = async { Some(events.as_mut()?.recv_many(&mut batch, EVENT_BATCH).await) }, if events.is_some() && baseline.is_some() => {
                // recv_many returns 0 only when the channel is closed.
                let n = n.filter(|&n| n > 0);
                let Some(n) = n else {
                    // The sensor is gone: its channel closed.
                    *events = None;
                    continue;
                };
                // Events come in bursts (an exec brings its opens): one
                // pass of this loop per burst, not per event. Package
                // databases are checked against dpkg's files once per burst.
                if let Some(s) = scanner.as_mut() {
                    s.begin_batch();
                    s.note_exited(batch.iter().filter_map(|e| match e {
                        Event::Exit { pid, start_ticks, .. } => Some((*pid, *start_ticks)),
                        _ => None,
                    }));
                }
                let shed = shared.shed.level();
                for event in batch.drain(..) {
                    if let Some(base) = baseline.as_mut() {
                        handle_event(config, &mut scanner, base, pending, event, shed).await;
                    }
                }
                // A counter, not news: nobody needs waking for it.
                shared.status.send_if_modified(|s| {
                    s.events += n as u64;
                    false
                });
                continue;
            }
            _ = async { tokio::time::sleep_until(next_rescan.expect("guarded")).await }, if next_rescan.is_some() => {
                let due = pending.rescans.pop_first().map(|(_, pids)| pids).unwrap_or_default();
                if let Some(s) = scanner.as_mut() {
                    s.begin_batch();
                }
                for pid in due {
                    let found = on_scanner(&mut scanner, move |s| s.scan_pid(pid)).await.flatten();
                    if let (Some((p, w)), Some(base)) = (found, baseline.as_mut()) {
                        base.record(p, w, &mut pending.delta);
                    }
                }
                continue;
            }
            // Only when no batch came near the deadline: the stream stopped.
            _ = async { tokio::time::sleep_until(flush_due.expect("guarded") + FLUSH_LATE).await }, if flush_due.is_some() => {
                flush_pending(shared, pending, baseline.as_mut(), config.part_bytes);
                last_flush = tokio::time::Instant::now();
                continue;
            }
            _ = stop.changed() => {
                // What events batched is not lost at a clean stop.
                flush_pending(shared, pending, baseline.as_mut(), config.part_bytes);
                return;
            }
        }
        // A full scan. The events already queued are merged first: a
        // process whose exit waits in the queue would otherwise be found
        // missing from /proc and closed at the scan's time, not its own.
        merge_queued(config, &mut scanner, events, baseline, pending, shared).await;
        // What events batched goes first, so the scan's delta is computed
        // against a baseline the collector has been sent.
        flush_pending(shared, pending, baseline.as_mut(), config.part_bytes);
        let mut scan_number = 0;
        shared.status.send_modify(|s| {
            s.scans_started += 1;
            scan_number = s.scans_started;
        });
        let scan_started = std::time::Instant::now();
        let faults = &config.faults;
        // Before the scan reads anything: a change after this is counted
        // for the next one.
        let cgroup_changes = sensor.as_ref().and_then(Sensor::cgroup_changes);
        let Some(inv) = on_scanner(&mut scanner, |s| {
            faults.scan();
            s.cgroup_changes_before_scan(cgroup_changes);
            s.scan()
        })
        .await
        else {
            return;
        };
        // And what the kernel sent while the scan read /proc: an exit
        // before the scan reached its pid is closed by its own event and
        // time, not found missing (see Baseline::advance).
        if let Some(sensor) = sensor.as_ref()
            && baseline.is_some()
        {
            sensor.flush().await;
            merge_queued(config, &mut scanner, events, baseline, pending, shared).await;
            flush_pending(shared, pending, baseline.as_mut(), config.part_bytes);
        }
        let mut inv = inv;
        debug!(
            processes = inv.stats.processes,
            reused = inv.stats.reused,
            cgroups_reused = inv.stats.cgroups_reused,
            cpu_ms = inv.stats.cpu_micros / 1000,
            wall_ms = inv.stats.wall_micros / 1000,
            "full scan"
        );
        *shared.last_stats.lock().expect("stats lock") = wire::stats(&inv.stats);
        // Always consume the flag: the first scan's snapshot answers the
        // initial request, and a second full snapshot would be wasted.
        let resync = shared.resync.swap(false, Ordering::SeqCst);
        let full = baseline.is_none() || resync;
        let bodies: Vec<v1::agent_message::Body> = if full {
            // A resync starts over from /proc, which cannot see what
            // processes opened: carry that over from the old baseline.
            if let Some(old) = baseline.as_ref() {
                old.carry_opened(&mut inv);
            }
            *baseline = Some(Baseline::new(&inv));
            let id = format!(
                "{}-{}",
                shared.status.borrow().session_id,
                inv.scanned_at_ms
            );
            wire::snapshot_parts(&inv, &id, config.part_bytes)
                .into_iter()
                .map(v1::agent_message::Body::Snapshot)
                .collect()
        } else {
            let base = baseline
                .as_mut()
                .expect("baseline set after the first scan");
            let delta = base.advance(&inv, sensor.is_some(), scan_started);
            *reconciled_total += u64::from(base.last_reconciled());
            delta
                .map(|d| wire::split_delta(d, config.part_bytes))
                .unwrap_or_default()
                .into_iter()
                .map(v1::agent_message::Body::Delta)
                .collect()
        };
        enqueue(shared, bodies);
        shared.status.send_modify(|s| {
            s.scans += 1;
            s.last_scan = scan_number;
            s.processes = inv.stats.processes;
        });
    }
}

/// Whether an open of this path is a load only when a mapping follows: a
/// shared object (`.so`, `.so.N`) or a native Node addon (`.node`), which
/// the dynamic loader maps executable. Reading such a file (sha256sum, a
/// Python `open().read()`, another agent resolving it) is not loading it.
/// Language modules (`.py`, `.pyc`, `.jar`, `package.json`) are loaded by
/// reading, so their opens count as they are.
fn needs_mapping(path: &[u8]) -> bool {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    base.ends_with(b".so")
        || base.ends_with(b".node")
        || base
            .windows(5)
            .any(|w| &w[..4] == b".so." && w[4].is_ascii_digit())
}

/// The workload record of a process known only from an event: its
/// parent's, or the host's. None when the baseline has it already.
fn parent_workload(base: &Baseline, process: &mut Process) -> Option<Workload> {
    let parent = base
        .by_pid(process.ppid)
        .map(|p| p.workload.as_str())
        .unwrap_or("host");
    process.workload = parent.to_owned();
    // (The baseline's own copy would only be compared with itself.)
    base.workload(parent).is_none().then(|| Workload {
        id: parent.to_owned(),
        kind: "host".into(),
        ..Default::default()
    })
}

/// Merges the events queued now (only those: on a busy host events keep
/// coming, and a scan must not wait for a lull).
async fn merge_queued(
    config: &AgentConfig,
    scanner: &mut Option<Scanner>,
    events: &mut Option<mpsc::Receiver<Event>>,
    baseline: &mut Option<Baseline>,
    pending: &mut Pending,
    shared: &Shared,
) {
    let (Some(rx), Some(base)) = (events.as_mut(), baseline.as_mut()) else {
        return;
    };
    let shed = shared.shed.level();
    let queued = rx.len();
    let mut handled = 0u64;
    while handled < queued as u64
        && let Ok(event) = rx.try_recv()
    {
        handled += 1;
        handle_event(config, scanner, base, pending, event, shed).await;
    }
    shared.status.send_if_modified(|s| {
        s.events += handled;
        false
    });
}

/// Merges one kernel event into the baseline and the pending delta. With
/// the watchdog shedding (`shed` 1: opens, 2: connects too), those events
/// still in the queue are dropped here as well. None when there is no
/// scanner.
async fn handle_event(
    config: &AgentConfig,
    scanner: &mut Option<Scanner>,
    base: &mut Baseline,
    pending: &mut Pending,
    event: Event,
    shed: u8,
) -> Option<()> {
    match &event {
        Event::Open { .. } | Event::Map { .. } if shed >= 1 => return Some(()),
        Event::Connect { .. } if shed >= 2 => return Some(()),
        _ => {}
    }
    match event {
        Event::Exec {
            pid,
            ppid,
            uid,
            comm,
            filename,
            args,
            args_truncated,
            start_ticks,
            exe,
            ..
        } => {
            // A light record now, from the event (argv, the exe resolved in
            // the process's root, the kernel's start time) and a small /proc
            // read, so that even a process that lived for a millisecond is
            // recorded whole; the full scan shortly, once the loader has
            // mapped its libraries, if it still runs.
            let info = ExecInfo {
                pid,
                ppid,
                uid,
                comm: &comm,
                filename: &filename,
                args: &args,
                args_truncated,
                start_ticks,
                exe: crate::scan::kernel_file(&exe),
            };
            let ExecRecord {
                mut process,
                workload,
                alive,
            } = scanner.as_mut()?.exec_record(info);
            let workload = match workload {
                Some(w) => Some(w),
                // Gone already: a child shares its parent's cgroup.
                None => parent_workload(base, &mut process),
            };
            // A new image: what the old one opened is not this one's.
            pending.held.remove(&pid);
            base.record_exec(process, workload, &mut pending.delta);
            if alive {
                let due = tokio::time::Instant::now() + config.exec_rescan_delay;
                pending.rescans.entry(due).or_default().push(pid);
            }
        }
        Event::Exit {
            pid,
            start_ticks,
            at_ms,
            ..
        } => {
            pending.held.remove(&pid);
            base.exit(pid, start_ticks, at_ms, &mut pending.delta);
            for pids in pending.rescans.values_mut() {
                pids.retain(|p| *p != pid);
            }
            pending.rescans.retain(|_, pids| !pids.is_empty());
        }
        Event::Open {
            pid,
            path,
            fd,
            file,
            ..
        } => {
            if needs_mapping(&path) {
                // Held until its descriptor is mapped executable (a Map
                // event), or forgotten at exec and exit.
                if pending.held_paths >= HELD_LIMIT {
                    pending.held.clear();
                    pending.held_paths = 0;
                }
                if pending
                    .held
                    .entry(pid)
                    .or_default()
                    .insert(fd, path)
                    .is_none()
                {
                    pending.held_paths += 1;
                }
                return Some(());
            }
            opened(scanner, base, pending, pid, path, file).await?;
        }
        Event::Map { pid, fd, file, .. } => {
            let path = pending.held.get_mut(&pid).and_then(|fds| fds.remove(&fd));
            if let Some(path) = path {
                pending.held_paths = pending.held_paths.saturating_sub(1);
                opened(scanner, base, pending, pid, path, file).await?;
            }
        }
        Event::Dns {
            cgroup_id,
            tcp,
            payload,
            at_ms,
            ..
        } => {
            // What is no usable answer (a query from port 53, a TCP
            // continuation, garbage) is counted in the names' stats.
            let _ = pending.names.learn_packet(cgroup_id, &payload, tcp, at_ms);
        }
        Event::Connect {
            pid,
            ppid,
            start_ticks,
            uid,
            cgroup_id,
            comm,
            addr,
            protocol,
            ret,
            repeats,
            at_ms,
        } => {
            let known = base.by_pid(pid).map(|p| p.key);
            let want = ProcessKey { pid, start_ticks };
            // A late connect of a process already closed: the collector
            // knows it by its key, and a new record would reopen it.
            let closed = start_ticks > 0 && known.is_none() && base.closed(pid) == Some(want);
            if !closed && ((start_ticks > 0 && known != Some(want)) || known.is_none()) {
                // Not seen yet (it forked without exec'ing, or it came
                // before the agent): scan it, or when it is gone already,
                // record what the event says, so the connection is kept.
                match on_scanner(scanner, move |s| s.scan_pid(pid)).await? {
                    Some((p, w)) if start_ticks == 0 || p.key == want => {
                        base.record(p, w, &mut pending.delta)
                    }
                    _ if start_ticks > 0 => {
                        let mut p =
                            scanner
                                .as_mut()?
                                .event_record(pid, ppid, uid, &comm, start_ticks);
                        if let Some(w) = parent_workload(base, &mut p) {
                            base.learn_workload(w, &mut pending.delta);
                        }
                        base.record_process(p, &mut pending.delta);
                    }
                    _ => {}
                }
            }
            let Some(key) = base.by_pid(pid).map(|p| p.key).or(closed.then_some(want)) else {
                pending.dropped += 1;
                return Some(());
            };
            let names = &pending.names;
            let c = pending
                .connections
                .entry((key, protocol, addr))
                .or_insert_with(|| v1::Connection {
                    key: Some(wire::key(&key)),
                    protocol: protocol.into(),
                    remote_addr: addr.ip().to_string(),
                    remote_port: addr.port().into(),
                    first_seen_ms: at_ms,
                    last_seen_ms: at_ms,
                    count: 0,
                    last_result: ret,
                    // The names this workload (the connecting process's
                    // cgroup, as the answer's socket's) was told for the
                    // address, still within their TTL at the connect.
                    names: names.names(cgroup_id, addr.ip(), at_ms),
                });
            c.first_seen_ms = c.first_seen_ms.min(at_ms);
            c.last_seen_ms = c.last_seen_ms.max(at_ms);
            c.count += 1 + u64::from(repeats);
            c.last_result = ret;
            // The process's current socket view gets the new socket now,
            // not at the next read of the socket tables (one scan in ten).
            if base.by_pid(pid).is_some_and(|p| p.key == key)
                && let Some(state) = connect_state(protocol, ret)
            {
                let socket = crate::model::Socket {
                    protocol,
                    local_addr: String::new(),
                    local_port: 0,
                    remote_addr: c.remote_addr.clone(),
                    remote_port: addr.port(),
                    state,
                    inode: 0,
                    outbound: true,
                    connect_ms: at_ms,
                };
                base.add_connect(pid, socket, &mut pending.delta);
            }
        }
    }
    Some(())
}

/// The state a socket is in after connect(2) returned `ret`, as the socket
/// tables name it; None when the connect failed (no connection to show).
fn connect_state(protocol: &str, ret: i32) -> Option<&'static str> {
    match ret {
        0 => Some("ESTABLISHED"),
        r if r == -libc::EINPROGRESS && !protocol.starts_with("udp") => Some("SYN_SENT"),
        _ => None,
    }
}

/// Adds what a process opened (a module it read, or a library it mapped)
/// as `opened` artifacts. None when the scanner was lost.
async fn opened(
    scanner: &mut Option<Scanner>,
    base: &mut Baseline,
    pending: &mut Pending,
    pid: u32,
    path: Vec<u8>,
    file: patchgap_ebpf::FileIdentity,
) -> Option<()> {
    if base.by_pid(pid).is_none()
        && base.closed(pid).is_none()
        && let Some((p, w)) = on_scanner(scanner, move |s| s.scan_pid(pid)).await?
    {
        base.record(p, w, &mut pending.delta);
    }
    // (An open read after its process was closed is counted, not put to a
    // new record that would reopen it.)
    if base.by_pid(pid).is_none() {
        pending.dropped += 1;
        return Some(());
    }
    // A handful of syscalls: done in place, a thread hop would cost more.
    let (key, ppid) = base.by_pid(pid).map(|p| (p.key, p.ppid))?;
    let artifacts =
        scanner
            .as_mut()?
            .opened_artifacts(key, Some(ppid), &path, crate::scan::kernel_file(&file));
    if !artifacts.is_empty() {
        base.add_opened(pid, artifacts);
    }
    Some(())
}

/// Appends messages to the spool. It writes a file: called on the scan
/// thread, or from the connection loop through spawn_blocking.
fn enqueue(shared: &Shared, bodies: Vec<v1::agent_message::Body>) {
    if bodies.is_empty() {
        return;
    }
    let mut lost = 0;
    let mut last = None;
    let mut failed = None;
    let dropped = {
        let mut spool = shared.spool();
        for body in bodies {
            match spool.push(body) {
                Ok((seq, l)) => {
                    last = Some(seq);
                    lost += l;
                }
                Err(error) => {
                    failed = Some(error);
                    lost += 1;
                }
            }
        }
        spool.dropped()
    };
    if lost > 0 {
        // What survived goes out as it is; a full snapshot after it
        // restores what the dropped messages would have said about now.
        shared.resync.store(true, Ordering::SeqCst);
        match failed {
            Some(error) => {
                warn!(%error, lost, "spool: cannot write; messages lost, resyncing with a full snapshot")
            }
            None => warn!(
                lost,
                "spool full: dropped the oldest unacked messages; resyncing with a full snapshot"
            ),
        }
    }
    shared.status.send_modify(|s| {
        if let Some(seq) = last {
            s.last_seq = seq;
        }
        s.spool_dropped = dropped;
    });
    shared.wake.notify_one();
}

async fn connection_loop(
    config: AgentConfig,
    host: v1::HostIdentity,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = config.backoff_min;
    let mut logged_down = false;
    let mut collectors = match Collectors::parse(&config.collector, |u| u.to_string()) {
        Ok(c) => c,
        Err(error) => {
            warn!(%error, "no collector to stream to; the agent scans and spools only");
            return;
        }
    };
    loop {
        let connects = shared.status.borrow().connects;
        let collector = collectors.current().to_string();
        let result = tokio::select! {
            r = stream_once(&config, &collector, &host, &shared) => r,
            _ = stop.changed() => return,
        };
        shared.status.send_modify(|s| s.connected = false);
        if shared.status.borrow().connects > connects {
            // This attempt got through the handshake: start the backoff over.
            backoff = config.backoff_min;
            logged_down = false;
        }
        // Jitter keeps a fleet from reconnecting in lockstep.
        let jitter = (now_ms().rem_euclid(1000)) as f64 / 1000.0;
        // A collector too busy to take a message says when to send it
        // again: that collector's slot (with a twentieth of jitter), not
        // our backoff, which a connect that got through has just reset.
        let pushback = result.as_ref().err().and_then(crate::failover::pushback);
        if let Some(pushback) = pushback {
            collectors.hold(std::time::Instant::now() + pushback + pushback.mul_f64(jitter / 20.0));
        }
        // Whatever ended this stream, the next attempt goes to the next
        // collector in the list (the same one when there is one): what was
        // not acked is still in the spool, and the next collector's
        // Welcome says where the shared database stands. It waits for our
        // backoff, or for as long as that collector said it was busy.
        let next = collectors.fail_over().to_string();
        let wait = backoff
            .mul_f64(0.5 + jitter / 2.0)
            .max(collectors.held_for(std::time::Instant::now()));
        match result {
            Ok(()) => {
                info!(%collector, %next, "collector closed the stream; reconnecting")
            }
            Err(_) if let Some(pushback) = pushback => {
                info!(%collector, %next, retry_ms = pushback.as_millis() as u64, wait_ms = wait.as_millis() as u64, "collector busy; sending again when it said");
            }
            // One line when the collector goes away, not one per attempt.
            Err(error) if !logged_down => {
                warn!(%error, %collector, %next, "collector unreachable; retrying with backoff");
                logged_down = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Spool reads per hop to the blocking pool, in bytes.
const READ_BATCH: usize = 4 << 20;

async fn stream_once(
    config: &AgentConfig,
    collector: &str,
    host: &v1::HostIdentity,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let channel = crate::tls::endpoint(collector, &config.tls)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?;
    // Messages go out as the spool encoded them (see `encoded`).
    let (tx, rx) = mpsc::channel::<EncodedMessage>(16);
    let hello = v1::Hello {
        host: Some(host.clone()),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        capabilities: Some(capabilities(config, shared)),
        session_id: shared.status.borrow().session_id.clone(),
    };
    tx.send(EncodedMessage::encode(&v1::AgentMessage {
        seq: 0,
        body: Some(v1::agent_message::Body::Hello(hello)),
    }))
    .await?;
    let mut inbound = encoded::stream(channel, config.max_message_bytes, ReceiverStream::new(rx))
        .await?
        .into_inner();
    let welcome = match inbound.message().await?.and_then(|m| m.body) {
        Some(v1::collector_message::Body::Welcome(w)) => w,
        other => anyhow::bail!("collector did not answer Hello with Welcome: {other:?}"),
    };
    let sent = welcome.acked_seq;
    // Until something was acked in this run, the spool still holds this
    // run's first full snapshot, and a collector that does not know the
    // session needs nothing else.
    let ever_acked = shared.status.borrow().acked_seq > 0;
    let resync = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let mut spool = shared.spool();
            if welcome.acked_seq >= spool.next_seq() {
                // The collector has more of this session than the spool
                // (an older copy of the state directory): number on after
                // it, or it would take new messages for resends.
                spool.skip_to(welcome.acked_seq + 1)?;
                return Ok(true);
            }
            spool.ack(welcome.acked_seq);
            // A collector that lost this session gets what is spooled (the
            // history in it is still true) and then a full snapshot.
            Ok(welcome.resync && ever_acked)
        })
        .await??
    };
    if resync {
        shared.resync.store(true, Ordering::SeqCst);
        let _ = shared.rescan.try_send(());
    }
    shared.status.send_modify(|s| {
        s.connected = true;
        s.connects += 1;
        s.acked_seq = s.acked_seq.max(welcome.acked_seq);
    });
    info!(%collector, resume_after = welcome.acked_seq, "connected to collector");
    let mut sent = sent;
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = shared.wake.notified();
        loop {
            let from = sent;
            // What the scan thread just wrote is taken from memory, in
            // place (the lock is only ever held for a write and, at most
            // once a second, an fdatasync: a busy lock sends us to the
            // blocking pool); the rest is read back from disk there.
            let live = match shared.spool.try_lock() {
                Ok(mut spool) => spool.take_live(from, READ_BATCH),
                Err(_) => None,
            };
            let batch = match live {
                Some(batch) => batch,
                None => {
                    let reader = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut spool = reader.spool();
                        match spool.take_live(from, READ_BATCH) {
                            Some(batch) => Ok(batch),
                            None => spool.read_after(from, READ_BATCH),
                        }
                    })
                    .await??
                }
            };
            if batch.is_empty() {
                break;
            }
            for msg in batch {
                sent = msg.seq;
                // A collector from before artifact tables reads only
                // inline artifacts.
                let msg = if welcome.artifact_refs {
                    msg
                } else {
                    msg.inlined()
                };
                tx.send(msg).await?;
            }
        }
        tokio::select! {
            _ = notified => {}
            // Heartbeats say "alive" and how the agent is; queuing them
            // while disconnected would only replay stale news. They come
            // from here, not from the scan loop, so a scan loop that died
            // is reported, not silent.
            _ = heartbeat.tick() => {
                let mut beat = v1::Heartbeat {
                    sent_at_ms: now_ms(),
                    last_scan: Some(*shared.last_stats.lock().expect("stats lock")),
                    capabilities: Some(capabilities(config, shared)),
                    sense: Some(*shared.sense.lock().expect("sense lock")),
                    health: Some(shared.health(SCAN_STALL)),
                    ..Default::default()
                };
                let writer = shared.clone();
                tokio::task::spawn_blocking(move || {
                    // The containments' counters: a bpf(2) read each.
                    (beat.containments_generation, beat.containments) =
                        writer.responder().statuses();
                    let body = v1::agent_message::Body::Heartbeat(beat);
                    enqueue(&writer, vec![body])
                })
                .await?;
            }
            msg = inbound.message() => match msg?.map(|m| m.body) {
                Some(Some(v1::collector_message::Body::Ack(ack))) => {
                    shared.spool().ack(ack.seq);
                    shared.status.send_modify(|s| s.acked_seq = s.acked_seq.max(ack.seq));
                }
                Some(Some(v1::collector_message::Body::Command(cmd))) => match cmd.body {
                    Some(v1::command::Body::Rescan(_)) => {
                        let _ = shared.rescan.try_send(());
                    }
                    // Applied in the order sent (awaited here): a later
                    // set must never be overtaken by an earlier one.
                    Some(v1::command::Body::Containments(set)) => {
                        let responder = shared.clone();
                        tokio::task::spawn_blocking(move || responder.responder().apply(&set))
                            .await?;
                        // Said at once, not at the next heartbeat.
                        heartbeat.reset_immediately();
                    }
                    None => {}
                },
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_injected_panic_fires_only_as_often_as_asked() {
        let faults = Faults::default();
        faults.scan();
        faults.panic_next_scans(2);
        for _ in 0..2 {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| faults.scan()));
            assert!(r.is_err());
        }
        faults.scan();
    }
}
