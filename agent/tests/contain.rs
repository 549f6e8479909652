//! Live tests of the host isolation executor (`patchgap_agent::contain`):
//! real programs of contain.bpf.o on real cgroup v2 directories, a network
//! namespace behind a veth pair (198.51.100.1/24 on the host, .2/24 inside),
//! and real processes that connect. Root is assumed (CI runs as root).
//!
//! The tests share the veth addresses, so they take one lock and run one at
//! a time; each namespace also holds the machine-wide [`InternetLock`]
//! while it lives, so another test binary's namespace on the same
//! addresses cannot take their connects. Every cgroup, namespace, veth, process and bpffs directory is
//! owned by a guard whose Drop removes it, also when an assertion fails.
//! Drop order matters: a client process is killed before its namespace
//! goes (declared after it), so no connect to 198.51.100.2 can ever follow
//! the default route off the host.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use patchgap_agent::contain::{
    Applied, ContainError, Executor, Isolation, Mode, Prefix, Protected,
};

const UNIFIED: &str = "/sys/fs/cgroup/unified";
const NS_IP: &str = "198.51.100.2";
/// connect(2)'s errno when a cgroup/connect program says no.
const EPERM: &str = "err1";

// The lock is defined once, in the end-to-end tests' harness crate (which
// depends on this one, so this test includes the std-only file instead).
#[path = "../../tests/src/internet.rs"]
#[allow(dead_code)]
mod internet;
use internet::InternetLock;

static LIVE: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

fn live() -> MutexGuard<'static, ()> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A name unique to this process and call.
fn unique(tag: &str) -> String {
    format!(
        "pgct-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---- Guards ----

/// A cgroup v2 directory; Drop moves what is left in it to the root and
/// removes it.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new(parent: &Path, name: &str) -> Cgroup {
        let path = parent.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup { path }
    }

    fn add(&self, pid: u32) {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A frozen cgroup (a freeze test that failed) is thawed first; its
        // processes would also thaw on the move to the root.
        let _ = fs::write(self.path.join("cgroup.freeze"), "0");
        if let Ok(procs) = fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(Path::new(UNIFIED).join("cgroup.procs"), pid);
            }
        }
        for _ in 0..100 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove cgroup {}", self.path.display());
    }
}

/// A network namespace with a veth pair: 198.51.100.1/24 on the host,
/// 198.51.100.2/24 inside.
struct Netns {
    name: String,
    veth: String,
    /// Released after Drop has deleted the veth and the namespace.
    _lock: InternetLock,
}

impl Netns {
    fn new() -> Netns {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            name: unique("ns"),
            veth: format!("pgc{}x{n}", std::process::id() % 1_000_000),
            _lock: InternetLock::acquire(),
        };
        let peer = format!("{}p", ns.veth);
        run("ip", &["netns", "add", &ns.name]);
        run(
            "ip",
            &[
                "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &ns.name]);
        run("ip", &["addr", "add", "198.51.100.1/24", "dev", &ns.veth]);
        run("ip", &["link", "set", &ns.veth, "up"]);
        run(
            "ip",
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                "198.51.100.2/24",
                "dev",
                &peer,
            ],
        );
        run("ip", &["-n", &ns.name, "link", "set", &peer, "up"]);
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A child process, killed and reaped on Drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bpffs directory of its own for one test; Drop removes whatever the
/// test's executors left in it (unpinning detaches).
struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    fn new() -> BpffsDir {
        BpffsDir {
            path: PathBuf::from("/sys/fs/bpf").join(unique("bpffs")),
        }
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        fn rm(p: &Path) {
            if let Ok(entries) = fs::read_dir(p) {
                for e in entries.flatten() {
                    let path = e.path();
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rm(&path);
                    } else {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            let _ = fs::remove_dir(p);
        }
        rm(&self.path);
    }
}

// ---- Listeners and the client ----

/// A TCP listener (and UDP socket) on `addr` inside the namespace,
/// accepting and closing; the port it printed.
fn ns_listener(ns: &Netns, addr: &str) -> (Proc, u16) {
    const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0))
s.listen(1024)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((sys.argv[1], s.getsockname()[1]))
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.close()
"#;
    // `ip netns exec` execs the interpreter itself: the pid is python's.
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "/usr/bin/python3",
            "-c",
            SERVER,
            addr,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the namespace listener");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("listener port");
    let port = line.trim().parse().expect("listener printed its port");
    (Proc { child }, port)
}

/// A loopback listener (v4 or v6) in this process, accepting forever on a
/// thread of its own.
fn loopback_listener(addr: &str) -> u16 {
    let l = TcpListener::bind(addr).expect("bind loopback");
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

/// A process inside the isolated cgroup that tries, every 50 ms: a TCP
/// connect to the namespace (`remote`), a UDP send there (`udp`: only the
/// egress program sees it), a connect to it as a v4-mapped address from an
/// AF_INET6 socket (`mapped`: connect6), and connects to 127.0.0.1 and ::1
/// (`loop`, `loop6`). Each result is one line: label, then `ok` or
/// `err<errno>` (err0 for a timeout).
struct Client {
    _proc: Proc,
    _stdin: ChildStdin,
    rx: Receiver<(Instant, String, String)>,
}

impl Client {
    fn start(
        cgroup: &Cgroup,
        remote: &str,
        remote_port: u16,
        loop_port: u16,
        loop6_port: u16,
    ) -> Client {
        const CLIENT: &str = r#"
import socket, sys, time
host, port, lport, l6port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def tcp(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(addr)
        return "ok"
    except OSError as e:
        return "err%d" % (e.errno or 0)
    finally:
        s.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (host, port))
        return "ok"
    except OSError as e:
        return "err%d" % (e.errno or 0)
    finally:
        s.close()
sys.stdin.readline()
while True:
    print("remote", tcp(socket.AF_INET, (host, port)), flush=True)
    print("udp", udp(), flush=True)
    print("mapped", tcp(socket.AF_INET6, ("::ffff:" + host, port, 0, 0)), flush=True)
    print("loop", tcp(socket.AF_INET, ("127.0.0.1", lport)), flush=True)
    print("loop6", tcp(socket.AF_INET6, ("::1", l6port, 0, 0)), flush=True)
    time.sleep(0.05)
"#;
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                CLIENT,
                remote,
                &remote_port.to_string(),
                &loop_port.to_string(),
                &loop6_port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the client");
        let stdout = child.stdout.take().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let proc = Proc { child };
        // Into the cgroup before the first connect.
        cgroup.add(proc.child.id());
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                let (Some(label), Some(result)) = (words.next(), words.next()) else {
                    continue;
                };
                if tx
                    .send((Instant::now(), label.to_string(), result.to_string()))
                    .is_err()
                {
                    break;
                }
            }
        });
        Client {
            _proc: proc,
            _stdin: stdin,
            rx,
        }
    }

    /// Waits for a result of `label` that satisfies `want`, for at most
    /// `within`; returns when it arrived and every result read meanwhile.
    fn wait_for(
        &self,
        label: &str,
        want: impl Fn(&str) -> bool,
        within: Duration,
    ) -> (Option<Instant>, Vec<(String, String)>) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, l, r)) => {
                    let hit = l == label && want(&r);
                    seen.push((l, r));
                    if hit {
                        return (Some(at), seen);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return (None, seen);
                }
            }
        }
    }

    /// Every result that arrives within `for_`.
    fn collect(&self, for_: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + for_;
        let mut seen = Vec::new();
        while let Ok((_, l, r)) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            seen.push((l, r));
        }
        seen
    }
}

/// What `bpftool cgroup show` lists for a cgroup (prog ids and names).
fn bpftool_show(cgroup: &Path) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show", &cgroup.to_string_lossy()])
        .output()
        .expect("bpftool (Debian: apt-get install bpftool)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many of our programs bpftool lists on the cgroup.
fn ours_attached(cgroup: &Path) -> usize {
    let shown = bpftool_show(cgroup);
    ["pg_ct_egress", "pg_ct_connect4", "pg_ct_connect6"]
        .iter()
        .map(|p| shown.matches(p).count())
        .sum()
}

fn isolation(id: &str, cgroup: &Path, mode: Mode) -> Isolation {
    Isolation {
        id: id.to_string(),
        cgroup: cgroup.to_path_buf(),
        mode,
        allow: vec!["203.0.113.53".parse().unwrap()],
    }
}

/// The error of the one entry of `applied` for `id`, which must have failed.
fn refused<'a>(applied: &'a [Applied], id: &str) -> &'a ContainError {
    match outcome(applied, id) {
        Applied::Failed { error, .. } => {
            // The message names the cgroup or the id: print it for the log.
            eprintln!("{id}: {error}");
            error
        }
        other => panic!("{id} was not refused: {other:?}"),
    }
}

/// The one entry of `applied` for `id`.
fn outcome<'a>(applied: &'a [Applied], id: &str) -> &'a Applied {
    let mine: Vec<_> = applied.iter().filter(|a| a.id() == Some(id)).collect();
    assert_eq!(mine.len(), 1, "one outcome for {id}: {applied:?}");
    mine[0]
}

/// The whole fixture: a namespace with a listener, loopback listeners, an
/// isolated-to-be cgroup with a client in it, and an executor with a bpffs
/// directory of its own. Field order is drop order.
struct World {
    client: Client,
    _listener: Proc,
    cgroup: Cgroup,
    _netns: Netns,
    bpffs: BpffsDir,
    remote: SocketAddr,
}

impl World {
    fn new() -> World {
        let bpffs = BpffsDir::new();
        let netns = Netns::new();
        let (listener, port) = ns_listener(&netns, NS_IP);
        let cgroup = Cgroup::new(Path::new(UNIFIED), &unique("cg"));
        let lport = loopback_listener("127.0.0.1:0");
        let l6port = loopback_listener("[::1]:0");
        let client = Client::start(&cgroup, NS_IP, port, lport, l6port);
        let world = World {
            client,
            _listener: listener,
            cgroup,
            _netns: netns,
            bpffs,
            remote: format!("{NS_IP}:{port}").parse().unwrap(),
        };
        // Before any isolation everything connects.
        for label in ["remote", "udp", "mapped", "loop", "loop6"] {
            let (ok, seen) = world
                .client
                .wait_for(label, |r| r == "ok", Duration::from_secs(5));
            assert!(
                ok.is_some(),
                "{label} never connected before isolation: {seen:?}"
            );
        }
        world
    }

    fn executor(&self) -> Executor {
        Executor::new(self.bpffs.path.join("contain")).expect("executor")
    }
}

// ---- Tests ----

#[test]
fn enforce_blocks_within_2s_and_release_lifts_it() {
    let _live = live();
    let w = World::new();
    let mut exec = w.executor();
    let id = "inc-1_isolate";

    let t0 = Instant::now();
    let t0_ms = unix_ms();
    let applied = exec.reconcile(&[isolation(id, &w.cgroup.path, Mode::Enforce)]);
    eprintln!("reconcile (load, fill, attach, pin): {:?}", t0.elapsed());
    assert!(
        matches!(outcome(&applied, id), Applied::Attached { .. }),
        "{applied:?}"
    );
    let (blocked, seen) = w
        .client
        .wait_for("remote", |r| r == EPERM, Duration::from_secs(2));
    let blocked = blocked.unwrap_or_else(|| panic!("no EPERM within 2 s: {seen:?}"));
    eprintln!(
        "time to containment (reconcile to the first failed connect): {:?}",
        blocked - t0
    );
    assert!(blocked - t0 < Duration::from_secs(2));

    // From then on: the namespace is unreachable by every path, loopback is
    // not.
    let rounds = w.client.collect(Duration::from_millis(800));
    for label in ["remote", "mapped", "udp"] {
        let results: Vec<_> = rounds.iter().filter(|(l, _)| l == label).collect();
        assert!(!results.is_empty(), "no {label} results: {rounds:?}");
        assert!(
            results.iter().all(|(_, r)| r == EPERM),
            "{label} got through or failed otherwise: {results:?}"
        );
    }
    for label in ["loop", "loop6"] {
        let results: Vec<_> = rounds.iter().filter(|(l, _)| l == label).collect();
        assert!(!results.is_empty(), "no {label} results");
        assert!(
            results.iter().all(|(_, r)| r == "ok"),
            "{label}: {results:?}"
        );
    }
    // A process outside the cgroup (this one) still connects.
    TcpStream::connect_timeout(&w.remote, Duration::from_secs(2))
        .expect("a process outside the cgroup connects");

    let c = exec.status(id).expect("counters");
    assert_eq!(c.mode, Some(Mode::Enforce));
    assert!(c.blocked_connects >= 2, "{c:?}");
    assert!(c.blocked_packets >= 1, "the UDP sends: {c:?}");
    assert_eq!((c.would_block_connects, c.would_block_packets), (0, 0));
    let first = c.first_block_unix_ms.expect("first block time");
    assert!(
        first + 50 >= t0_ms && first <= unix_ms() + 50,
        "first block {first} not between {t0_ms} and now"
    );
    assert_eq!(
        ours_attached(&w.cgroup.path),
        3,
        "{}",
        bpftool_show(&w.cgroup.path)
    );

    // Attached as multi (BPF_F_ALLOW_MULTI): other BPF users keep theirs.
    let shown = bpftool_show(&w.cgroup.path);
    eprintln!("bpftool cgroup show:\n{shown}");
    for line in shown.lines().filter(|l| l.contains("pg_ct_")) {
        assert!(line.contains(" multi "), "not multi-attach: {line}");
    }

    // Release: the pins go, the programs go, connects succeed again.
    let t1 = Instant::now();
    let applied = exec.reconcile(&[]);
    assert!(
        matches!(outcome(&applied, id), Applied::Released { .. }),
        "{applied:?}"
    );
    let (ok, seen) = w
        .client
        .wait_for("remote", |r| r == "ok", Duration::from_secs(2));
    let ok = ok.unwrap_or_else(|| panic!("still blocked 2 s after release: {seen:?}"));
    eprintln!("time to release: {:?}", ok - t1);
    let (udp, _) = w
        .client
        .wait_for("udp", |r| r == "ok", Duration::from_secs(2));
    assert!(udp.is_some(), "UDP still dropped after release");
    let deadline = Instant::now() + Duration::from_secs(2);
    while ours_attached(&w.cgroup.path) != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ours_attached(&w.cgroup.path),
        0,
        "{}",
        bpftool_show(&w.cgroup.path)
    );
    assert!(!exec.bpffs_dir().join(id).exists(), "pins left behind");
    assert!(exec.status(id).is_none());
}

/// The allow-list holds while the rest is cut off: a second address in
/// the namespace (198.51.100.3, its own listener) is allow-listed, and a
/// second client in the same isolated cgroup keeps reaching it by every
/// path (TCP, UDP through the egress program, v4-mapped through connect6),
/// while the first client's connects to the address next to it
/// (198.51.100.2, not listed) get EPERM. Released, both connect.
#[test]
fn an_allow_listed_address_stays_reachable_while_isolated() {
    const ALLOWED_IP: &str = "198.51.100.3";
    let _live = live();
    let w = World::new();
    run(
        "ip",
        &[
            "-n",
            &w._netns.name,
            "addr",
            "add",
            &format!("{ALLOWED_IP}/24"),
            "dev",
            &format!("{}p", w._netns.veth),
        ],
    );
    // Declared after the world: dropped (killed) before its namespace goes.
    let (_allowed_listener, allowed_port) = ns_listener(&w._netns, ALLOWED_IP);
    let allowed = Client::start(
        &w.cgroup,
        ALLOWED_IP,
        allowed_port,
        loopback_listener("127.0.0.1:0"),
        loopback_listener("[::1]:0"),
    );
    for label in ["remote", "udp", "mapped"] {
        let (ok, seen) = allowed.wait_for(label, |r| r == "ok", Duration::from_secs(5));
        assert!(
            ok.is_some(),
            "{label} to {ALLOWED_IP} never connected: {seen:?}"
        );
    }

    let mut exec = w.executor();
    let id = "inc-allow";
    let mut spec = isolation(id, &w.cgroup.path, Mode::Enforce);
    spec.allow
        .push(format!("{ALLOWED_IP}/32").parse::<Prefix>().unwrap());
    let applied = exec.reconcile(&[spec]);
    assert!(
        matches!(outcome(&applied, id), Applied::Attached { .. }),
        "{applied:?}"
    );
    let (blocked, seen) = w
        .client
        .wait_for("remote", |r| r == EPERM, Duration::from_secs(2));
    assert!(
        blocked.is_some(),
        "{NS_IP} not blocked within 2 s: {seen:?}"
    );
    // Every round from here on started with the programs attached.
    thread::sleep(Duration::from_millis(200));
    while allowed.rx.try_recv().is_ok() {}
    while w.client.rx.try_recv().is_ok() {}

    let through = allowed.collect(Duration::from_millis(800));
    // What the first client printed meanwhile, read from its channel.
    let cut = w.client.collect(Duration::from_millis(100));
    for label in ["remote", "udp", "mapped"] {
        let results: Vec<_> = through.iter().filter(|(l, _)| l == label).collect();
        assert!(!results.is_empty(), "no {label} results: {through:?}");
        assert!(
            results.iter().all(|(_, r)| r == "ok"),
            "{label} to the allow-listed {ALLOWED_IP} was refused: {results:?}"
        );
    }
    let refused: Vec<_> = cut.iter().filter(|(l, _)| l == "remote").collect();
    assert!(refused.len() >= 3, "too few results to {NS_IP}: {cut:?}");
    assert!(
        refused.iter().all(|(_, r)| r == EPERM),
        "{NS_IP} (not listed) got through: {refused:?}"
    );
    let c = exec.status(id).expect("counters");
    assert!(c.blocked_connects >= 1, "{c:?}");

    let applied = exec.reconcile(&[]);
    assert!(matches!(outcome(&applied, id), Applied::Released { .. }));
    let (ok, seen) = w
        .client
        .wait_for("remote", |r| r == "ok", Duration::from_secs(2));
    assert!(
        ok.is_some(),
        "{NS_IP} still blocked after release: {seen:?}"
    );
}

#[test]
fn shadow_counts_and_blocks_nothing() {
    let _live = live();
    let w = World::new();
    let mut exec = w.executor();
    let id = "inc-2";

    let applied = exec.reconcile(&[isolation(id, &w.cgroup.path, Mode::Shadow)]);
    assert!(
        matches!(outcome(&applied, id), Applied::Attached { .. }),
        "{applied:?}"
    );
    let rounds = w.client.collect(Duration::from_millis(1000));
    let remote: Vec<_> = rounds
        .iter()
        .filter(|(l, _)| l != "loop" && l != "loop6")
        .collect();
    assert!(remote.len() >= 6, "{rounds:?}");
    assert!(
        remote.iter().all(|(_, r)| r == "ok"),
        "shadow blocked something: {remote:?}"
    );

    let c = exec.status(id).expect("counters");
    assert_eq!(c.mode, Some(Mode::Shadow));
    assert!(c.would_block_connects >= 4, "{c:?}");
    assert!(c.would_block_packets >= 4, "{c:?}");
    assert_eq!((c.blocked_connects, c.blocked_packets), (0, 0), "{c:?}");
    assert!(c.first_would_block_unix_ms.is_some() && c.first_block_unix_ms.is_none());
    // The counts keep rising.
    thread::sleep(Duration::from_millis(300));
    let later = exec.status(id).unwrap();
    assert!(later.would_block_connects > c.would_block_connects);

    let applied = exec.reconcile(&[]);
    assert!(matches!(outcome(&applied, id), Applied::Released { .. }));
}

#[test]
fn a_restarted_executor_keeps_the_isolation_and_swaps_without_a_window() {
    let _live = live();
    let w = World::new();
    let id = "inc-3";
    let desired = [isolation(id, &w.cgroup.path, Mode::Enforce)];
    {
        let mut first = w.executor();
        let applied = first.reconcile(&desired);
        assert!(
            matches!(outcome(&applied, id), Applied::Attached { .. }),
            "{applied:?}"
        );
        let (blocked, seen) = w
            .client
            .wait_for("remote", |r| r == EPERM, Duration::from_secs(2));
        assert!(blocked.is_some(), "{seen:?}");
        // The three programs go on one after the other within reconcile: a
        // round of the client that straddled it may have seen some of them
        // only. From here on every round started after all three were on.
        thread::sleep(Duration::from_millis(200));
        while w.client.rx.try_recv().is_ok() {}
        // The agent goes away without a word (its executor dropped, nothing
        // released).
    }
    let before = bpftool_show(&w.cgroup.path);
    assert_eq!(ours_attached(&w.cgroup.path), 3, "{before}");

    // A new agent: it reads the isolation from bpffs, and reconciling the
    // same desired set touches nothing (the same program ids stay).
    let mut second = w.executor();
    let c = second
        .status(id)
        .expect("the new executor reads the counters");
    assert!(c.blocked_connects > 0, "{c:?}");
    let applied = second.reconcile(&desired);
    assert!(
        matches!(outcome(&applied, id), Applied::Unchanged { .. }),
        "{applied:?}"
    );
    assert_eq!(
        bpftool_show(&w.cgroup.path),
        before,
        "programs were re-attached"
    );

    // A changed spec (one more allowed prefix) is swapped in: new attached
    // first, old removed, and the client never gets through meanwhile.
    let mut changed = desired.clone();
    changed[0]
        .allow
        .push("203.0.113.0/24".parse::<Prefix>().unwrap());
    let applied = second.reconcile(&changed);
    assert!(
        matches!(outcome(&applied, id), Applied::Swapped { .. }),
        "{applied:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while ours_attached(&w.cgroup.path) != 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ours_attached(&w.cgroup.path),
        3,
        "{}",
        bpftool_show(&w.cgroup.path)
    );
    assert_ne!(
        bpftool_show(&w.cgroup.path),
        before,
        "the swap attached new programs"
    );
    let gens: Vec<_> = fs::read_dir(second.bpffs_dir().join(id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(gens, ["g2"], "the old generation is gone");

    // Through the drop, the restart, the no-op and the swap: not one
    // connect or datagram to the namespace went out (every result since
    // the isolation was complete).
    let rest = w.client.collect(Duration::from_millis(500));
    let leaked: Vec<_> = rest
        .iter()
        .filter(|(l, r)| ["remote", "udp", "mapped"].contains(&l.as_str()) && r != EPERM)
        .collect();
    assert!(leaked.is_empty(), "got through: {leaked:?}");

    let applied = second.reconcile(&[]);
    assert!(matches!(outcome(&applied, id), Applied::Released { .. }));
    let (ok, seen) = w
        .client
        .wait_for("remote", |r| r == "ok", Duration::from_secs(2));
    assert!(ok.is_some(), "{seen:?}");
}

#[test]
fn guards_refuse_and_attach_nothing() {
    let _live = live();
    let bpffs = BpffsDir::new();
    let mut exec = Executor::new(bpffs.path.join("contain")).expect("executor");
    // The hierarchy's root, and paths that are not inside the mount.
    let root = PathBuf::from(UNIFIED);
    let applied = exec.reconcile(&[
        isolation("root", &root, Mode::Enforce),
        isolation(
            "root-slash",
            Path::new("/sys/fs/cgroup/unified/"),
            Mode::Enforce,
        ),
        isolation("outside", Path::new("/tmp"), Mode::Enforce),
        isolation("v1", Path::new("/sys/fs/cgroup/memory"), Mode::Enforce),
        isolation("dotdot", &root.join("x/../.."), Mode::Enforce),
        isolation("relative", Path::new("pg"), Mode::Enforce),
        isolation("missing", &root.join(unique("never-made")), Mode::Enforce),
        isolation("bad id!", &root.join("x"), Mode::Enforce),
        isolation("dup", &root.join(unique("never-made")), Mode::Enforce),
        isolation("dup", &root.join(unique("never-made")), Mode::Enforce),
    ]);
    for id in ["root", "root-slash"] {
        assert!(
            matches!(
                refused(&applied, id),
                ContainError::Refused {
                    what: Protected::Root,
                    ..
                }
            ),
            "{id}"
        );
    }
    for id in ["outside", "v1", "dotdot", "relative"] {
        assert!(
            matches!(refused(&applied, id), ContainError::NotInCgroup2 { .. }),
            "{id}"
        );
    }
    assert!(matches!(
        refused(&applied, "missing"),
        ContainError::CgroupMissing { .. }
    ));
    assert!(matches!(
        refused(&applied, "bad id!"),
        ContainError::InvalidId { .. }
    ));
    let dups: Vec<_> = applied.iter().filter(|a| a.id() == Some("dup")).collect();
    assert_eq!(dups.len(), 2);
    assert!(matches!(
        dups[1],
        Applied::Failed {
            error: ContainError::DuplicateId { .. },
            ..
        }
    ));

    // The agent's own cgroup and its ancestors: move this process into
    // parent/child for the duration (the lock keeps other live tests from
    // spawning meanwhile), and back to the root in Drop.
    struct Back;
    impl Drop for Back {
        fn drop(&mut self) {
            let _ = fs::write(
                Path::new(UNIFIED).join("cgroup.procs"),
                std::process::id().to_string(),
            );
        }
    }
    let parent = Cgroup::new(Path::new(UNIFIED), &unique("agent-parent"));
    let child = Cgroup::new(&parent.path, "agent");
    let sibling = Cgroup::new(&parent.path, "workload");
    let back = Back;
    child.add(std::process::id());
    let applied = exec.reconcile(&[
        isolation("own", &child.path, Mode::Enforce),
        isolation("ancestor", &parent.path, Mode::Shadow),
    ]);
    drop(back);
    for id in ["own", "ancestor"] {
        assert!(
            matches!(
                refused(&applied, id),
                ContainError::Refused {
                    what: Protected::Agent,
                    ..
                }
            ),
            "{id}: {applied:?}"
        );
    }
    for cg in [&parent.path, &child.path, &sibling.path] {
        assert_eq!(ours_attached(cg), 0, "{}", cg.display());
    }
    // Back in the root, the sibling is fair game (the guard is about the
    // agent, not about the name).
    let applied = exec.reconcile(&[isolation("sibling", &sibling.path, Mode::Shadow)]);
    assert!(
        matches!(outcome(&applied, "sibling"), Applied::Attached { .. }),
        "{applied:?}"
    );
    let applied = exec.reconcile(&[]);
    assert!(matches!(
        outcome(&applied, "sibling"),
        Applied::Released { .. }
    ));

    // Something under the bpffs directory that the executor did not create
    // (a name that is no containment id; bpffs refuses names with a dot)
    // is reported and left alone.
    let foreign = exec.bpffs_dir().join("someone+else");
    fs::create_dir(&foreign).unwrap();
    let applied = exec.reconcile(&[]);
    assert!(
        applied
            .iter()
            .any(|a| matches!(a, Applied::Foreign { path } if *path == foreign)),
        "{applied:?}"
    );
    assert!(foreign.exists());
    // Nothing of ours is left anywhere.
    let left: Vec<String> = fs::read_dir(exec.bpffs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["someone+else"]);
}

/// The agent's side of the collector's desired state: a `Containments`
/// set is applied through `Responder` (the cgroup named relative to the
/// cgroup2 mount, as the collector names it), its status reports the
/// effect, an item whose spec cannot be read stays in force, and a set that
/// no longer names the containment lifts it.
#[test]
fn the_collectors_set_is_carried_out_and_lifted_only_by_a_set() {
    use patchgap_agent::respond::Responder;
    use patchgap_proto::v1;

    let _live = live();
    let w = World::new();
    let mut responder = Responder::new(
        Some(w.bpffs.path.join("contain")),
        None,
        PathBuf::from("/proc"),
        "http://127.0.0.1:7373".into(),
    );
    assert_eq!(responder.capability(), (true, String::new()));
    let relative = w
        .cgroup
        .path
        .strip_prefix(UNIFIED)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let item = |allow: &str| v1::Containment {
        id: "inc-9_a0".into(),
        cgroup: format!("/{relative}"),
        mode: v1::ContainmentMode::Enforce as i32,
        allow: vec![allow.into()],
        kind: v1::ContainmentKind::Isolate as i32,
    };
    let set = |generation, items| v1::Containments { generation, items };

    responder.apply(&set(1, vec![item("203.0.113.0/24")]));
    let (blocked, seen) = w
        .client
        .wait_for("remote", |r| r == EPERM, Duration::from_secs(2));
    assert!(blocked.is_some(), "not contained within 2 s: {seen:?}");
    let (generation, statuses) = responder.statuses();
    assert_eq!(generation, 1);
    let s = &statuses[0];
    assert!(s.applied && s.error.is_empty(), "{s:?}");
    assert!(s.blocked_connects >= 1 && s.first_block_ms > 0, "{s:?}");
    assert_eq!(s.mode, v1::ContainmentMode::Enforce as i32);

    // A spec the agent cannot read is reported and changes nothing.
    responder.apply(&set(2, vec![item("not-a-prefix")]));
    let (_, statuses) = responder.statuses();
    assert!(statuses[0].error.contains("not-a-prefix"), "{statuses:?}");
    assert!(statuses[0].applied, "still in force: {statuses:?}");
    let rounds = w.client.collect(Duration::from_millis(500));
    assert!(
        rounds
            .iter()
            .filter(|(l, _)| l == "remote")
            .all(|(_, r)| r == EPERM),
        "{rounds:?}"
    );

    // A new responder (a restarted agent) finds it in force.
    drop(responder);
    let mut responder = Responder::new(
        Some(w.bpffs.path.join("contain")),
        None,
        PathBuf::from("/proc"),
        "http://127.0.0.1:7373".into(),
    );
    responder.apply(&set(3, vec![item("203.0.113.0/24")]));
    assert!(responder.statuses().1[0].applied);
    assert_eq!(ours_attached(&w.cgroup.path), 3);

    // The set without it lifts it. Its last status stays in the reports,
    // marked lifted: the blocks seen before the lift still reach the
    // collector, whose heartbeat would otherwise find the counters gone.
    let before_lift = unix_ms() as i64;
    responder.apply(&set(4, vec![]));
    let (ok, seen) = w
        .client
        .wait_for("remote", |r| r == "ok", Duration::from_secs(2));
    assert!(
        ok.is_some(),
        "still blocked after the set lifted it: {seen:?}"
    );
    let (generation, statuses) = responder.statuses();
    assert_eq!(generation, 4);
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let last = &statuses[0];
    assert!(
        last.id == "inc-9_a0" && last.lifted && !last.applied,
        "{last:?}"
    );
    assert!(
        last.first_block_ms >= s.first_block_ms
            && last.first_block_ms <= before_lift
            && last.blocked_connects >= 1,
        "{last:?}"
    );
    assert_eq!(ours_attached(&w.cgroup.path), 0);
    // Named again, it is in force again and no longer reported lifted.
    responder.apply(&set(5, vec![item("203.0.113.0/24")]));
    let (_, statuses) = responder.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert!(statuses[0].applied && !statuses[0].lifted, "{statuses:?}");
    responder.apply(&set(6, vec![]));
    assert_eq!(ours_attached(&w.cgroup.path), 0);

    // Without an executor nothing is in force, and every item says why.
    let mut off = Responder::new(None, None, PathBuf::from("/proc"), String::new());
    assert!(!off.capability().0);
    off.apply(&set(7, vec![item("203.0.113.0/24")]));
    let (_, statuses) = off.statuses();
    assert!(!statuses[0].applied);
    assert!(statuses[0].error.contains("disabled"), "{statuses:?}");
}

// ---- Freeze and kill (through the Responder, as the collector asks) ----

/// A process that prints a line every 10 ms: whether it runs shows in
/// whether lines come. Killed and reaped on Drop.
struct Ticker {
    _proc: Proc,
    rx: Receiver<()>,
}

impl Ticker {
    fn start(cgroup: &Cgroup) -> Ticker {
        const TICK: &str = "import itertools, time\nfor i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.01)\n";
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", TICK])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the ticker");
        let stdout = child.stdout.take().unwrap();
        let proc = Proc { child };
        cgroup.add(proc.child.id());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.is_err() || tx.send(()).is_err() {
                    break;
                }
            }
        });
        Ticker { _proc: proc, rx }
    }

    /// Lines printed within `for_`, after what was already under way (in
    /// the pipe or on its way to the channel) is dropped.
    fn ticks(&self, for_: Duration) -> usize {
        while self.rx.try_recv().is_ok() {}
        thread::sleep(Duration::from_millis(50));
        while self.rx.try_recv().is_ok() {}
        let deadline = Instant::now() + for_;
        let mut n = 0;
        while self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {
            n += 1;
        }
        n
    }
}

/// A `sleep 1000` moved into `cgroup`.
fn sleeper(cgroup: &Cgroup) -> Proc {
    let child = Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let proc = Proc { child };
    cgroup.add(proc.child.id());
    proc
}

/// The signal that ended `p` within `within`, or None if it still runs.
fn ended_by(p: &mut Proc, within: Duration) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = p.child.try_wait().expect("waitpid") {
            return Some(status.signal().unwrap_or(0));
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn freeze_requested(cgroup: &Path) -> bool {
    fs::read_to_string(cgroup.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

fn kernel_says_frozen(cgroup: &Path) -> bool {
    fs::read_to_string(cgroup.join("cgroup.events"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
}

/// The cgroup as the collector names it: relative to the cgroup2 mount.
fn collector_path(cgroup: &Path) -> String {
    format!("/{}", cgroup.strip_prefix(UNIFIED).unwrap().display())
}

fn item(
    id: &str,
    cgroup: &str,
    kind: patchgap_proto::v1::ContainmentKind,
    mode: patchgap_proto::v1::ContainmentMode,
) -> patchgap_proto::v1::Containment {
    patchgap_proto::v1::Containment {
        id: id.into(),
        cgroup: cgroup.into(),
        mode: mode as i32,
        allow: Vec::new(),
        kind: kind as i32,
    }
}

fn containments(
    generation: u64,
    items: Vec<patchgap_proto::v1::Containment>,
) -> patchgap_proto::v1::Containments {
    patchgap_proto::v1::Containments { generation, items }
}

fn responder(bpffs: &BpffsDir, state: &Path) -> patchgap_agent::respond::Responder {
    patchgap_agent::respond::Responder::new(
        Some(bpffs.path.join("contain")),
        Some(state.to_path_buf()),
        PathBuf::from("/proc"),
        "http://127.0.0.1:7373".into(),
    )
}

/// Moves this process back to the cgroup2 root on Drop.
struct BackToRoot;

impl Drop for BackToRoot {
    fn drop(&mut self) {
        let _ = fs::write(
            Path::new(UNIFIED).join("cgroup.procs"),
            std::process::id().to_string(),
        );
    }
}

/// A freeze stops a running process: the kernel reports the cgroup frozen
/// (the status says so, with the time it was seen) and the process prints
/// nothing more; a second freeze of the same cgroup keeps it frozen when
/// the first is lifted; a set without either thaws it and it runs again.
#[test]
fn a_freeze_stops_a_process_until_a_set_without_it_thaws_it() {
    use patchgap_proto::v1::{ContainmentKind::Freeze, ContainmentMode::Enforce};

    let _live = live();
    let bpffs = BpffsDir::new();
    let state = tempfile::tempdir().unwrap();
    let cg = Cgroup::new(Path::new(UNIFIED), &unique("freeze"));
    let ticker = Ticker::start(&cg);
    assert!(ticker.ticks(Duration::from_millis(300)) > 5, "not ticking");
    let name = collector_path(&cg.path);
    let frz = |id| item(id, &name, Freeze, Enforce);

    let mut r = responder(&bpffs, state.path());
    let before = unix_ms() as i64;
    r.apply(&containments(1, vec![frz("frz-1")]));
    let applied_in = unix_ms() as i64 - before;
    let (generation, statuses) = r.statuses();
    assert_eq!(generation, 1);
    let s = &statuses[0];
    assert!(s.applied && s.frozen && s.error.is_empty(), "{s:?}");
    assert_eq!(s.kind, Freeze as i32);
    assert!(
        s.first_block_ms >= before && s.first_block_ms <= unix_ms() as i64,
        "{s:?}"
    );
    eprintln!(
        "freeze: applied in {applied_in} ms, seen frozen {} ms after the set",
        s.first_block_ms - before
    );
    assert!(kernel_says_frozen(&cg.path));
    assert_eq!(ticker.ticks(Duration::from_millis(500)), 0, "still running");
    let record = fs::read_to_string(state.path().join("contain/frozen.json")).unwrap();
    assert!(record.contains("\"frz-1\""), "{record}");

    // Two freezes of one cgroup: lifting one leaves it frozen.
    r.apply(&containments(2, vec![frz("frz-1"), frz("frz-2")]));
    r.apply(&containments(3, vec![frz("frz-2")]));
    assert!(freeze_requested(&cg.path) && kernel_says_frozen(&cg.path));
    assert_eq!(ticker.ticks(Duration::from_millis(300)), 0);
    let (_, statuses) = r.statuses();
    assert!(statuses[0].applied && statuses[0].frozen, "{statuses:?}");

    // A freeze someone thawed behind the agent's back is frozen again at
    // the next periodic check.
    fs::write(cg.path.join("cgroup.freeze"), "0").unwrap();
    r.tick();
    assert!(freeze_requested(&cg.path));

    // The set without it thaws it.
    r.apply(&containments(4, vec![]));
    assert!(!freeze_requested(&cg.path));
    assert!(
        ticker.ticks(Duration::from_millis(500)) > 5,
        "not running again after the thaw"
    );
    // Nothing is in force; the two freezes, which stopped the process,
    // are reported once more as lifted (their last status: the effect
    // still times the containment after a quick revert).
    let (generation, statuses) = r.statuses();
    assert_eq!(generation, 4);
    let ids: Vec<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["frz-1", "frz-2"], "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.lifted && !s.applied && s.first_block_ms > 0),
        "{statuses:?}"
    );
    let record = fs::read_to_string(state.path().join("contain/frozen.json")).unwrap();
    assert!(!record.contains("frz-"), "{record}");
}

/// The kernel keeps a cgroup frozen across an agent restart; the restarted
/// agent knows the freeze is its own (its record), reports it with the
/// time it was first seen, and lifts it when a set no longer names it,
/// while a cgroup someone else froze stays frozen.
#[test]
fn a_freeze_survives_a_responder_restart_and_a_later_set_thaws_it() {
    use patchgap_proto::v1::{ContainmentKind::Freeze, ContainmentMode::Enforce};

    let _live = live();
    let bpffs = BpffsDir::new();
    let state = tempfile::tempdir().unwrap();
    let cg = Cgroup::new(Path::new(UNIFIED), &unique("freeze"));
    let ticker = Ticker::start(&cg);
    let frz = item("frz-r", &collector_path(&cg.path), Freeze, Enforce);

    let mut first = responder(&bpffs, state.path());
    first.apply(&containments(1, vec![frz.clone()]));
    let seen_frozen = first.statuses().1[0].first_block_ms;
    assert!(seen_frozen > 0);
    drop(first);
    assert!(
        kernel_says_frozen(&cg.path),
        "a dropped responder thawed it"
    );
    assert_eq!(ticker.ticks(Duration::from_millis(300)), 0);

    // Restarted with the same set: still frozen, the same evidence.
    let mut second = responder(&bpffs, state.path());
    second.apply(&containments(2, vec![frz.clone()]));
    let (_, statuses) = second.statuses();
    let s = &statuses[0];
    assert!(s.applied && s.frozen && s.error.is_empty(), "{s:?}");
    assert_eq!(s.first_block_ms, seen_frozen);
    drop(second);

    // Someone else's freeze, which the agent never made.
    let foreign = Cgroup::new(Path::new(UNIFIED), &unique("foreign-frozen"));
    fs::write(foreign.path.join("cgroup.freeze"), "1").unwrap();

    // Restarted again, with a set that no longer names it: thawed.
    let mut third = responder(&bpffs, state.path());
    third.apply(&containments(3, vec![]));
    assert!(!freeze_requested(&cg.path));
    assert!(
        ticker.ticks(Duration::from_millis(500)) > 5,
        "not running after the restarted agent lifted the freeze"
    );
    assert!(
        freeze_requested(&foreign.path),
        "thawed a freeze that was not the agent's"
    );

    // Frozen by someone else first, then by a containment: lifting the
    // containment leaves the other freeze in place.
    let frz_foreign = item("frz-f", &collector_path(&foreign.path), Freeze, Enforce);
    third.apply(&containments(4, vec![frz_foreign]));
    let (_, statuses) = third.statuses();
    assert!(
        statuses[0].applied && statuses[0].error.is_empty(),
        "{statuses:?}"
    );
    third.apply(&containments(5, vec![]));
    assert!(
        freeze_requested(&foreign.path),
        "lifting the containment thawed someone else's freeze"
    );
}

/// A kill containment kills what is in the cgroup at once (SIGKILL), and a
/// process moved in while it is named at the next periodic check; the
/// status counts both. After a set without it, a new process survives.
#[test]
fn a_kill_kills_now_and_at_each_tick_until_a_set_lifts_it() {
    use patchgap_proto::v1::{ContainmentKind::Kill, ContainmentMode::Enforce};

    let _live = live();
    let bpffs = BpffsDir::new();
    let state = tempfile::tempdir().unwrap();
    let cg = Cgroup::new(Path::new(UNIFIED), &unique("kill"));
    let mut first = sleeper(&cg);
    let mut r = responder(&bpffs, state.path());
    let before = unix_ms() as i64;
    r.apply(&containments(
        1,
        vec![item("kill-1", &collector_path(&cg.path), Kill, Enforce)],
    ));
    assert_eq!(ended_by(&mut first, Duration::from_secs(2)), Some(9));
    eprintln!(
        "kill: the first process reaped {} ms after the set",
        unix_ms() as i64 - before
    );
    let (_, statuses) = r.statuses();
    let s = &statuses[0];
    assert!(s.applied && s.error.is_empty(), "{s:?}");
    assert_eq!((s.kind, s.killed), (Kill as i32, 1), "{s:?}");
    assert!(s.first_block_ms >= before, "{s:?}");
    let first_kill = s.first_block_ms;

    // Moved in while the kill is named: killed at the next tick, not
    // before (nothing else kills here).
    let mut second = sleeper(&cg);
    assert_eq!(ended_by(&mut second, Duration::from_millis(100)), None);
    r.tick();
    assert_eq!(ended_by(&mut second, Duration::from_secs(2)), Some(9));
    // An empty cgroup: a tick kills and counts nothing.
    r.tick();
    let (_, statuses) = r.statuses();
    assert_eq!(statuses[0].killed, 2, "{statuses:?}");
    assert_eq!(statuses[0].first_block_ms, first_kill);

    // Lifted: a new process lives on through ticks.
    r.apply(&containments(2, vec![]));
    let mut third = sleeper(&cg);
    r.tick();
    assert_eq!(ended_by(&mut third, Duration::from_millis(300)), None);
    // Reported once more as lifted, with what it did while in force.
    let (generation, statuses) = r.statuses();
    assert_eq!(generation, 2);
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert!(
        statuses[0].id == "kill-1"
            && statuses[0].lifted
            && !statuses[0].applied
            && statuses[0].killed == 2
            && statuses[0].first_block_ms == first_kill,
        "{statuses:?}"
    );
    drop(third);

    // A workload's cgroup removed once its processes died (what runtimes
    // do) has nothing left to kill: no error, the count stays. A kill of
    // a cgroup that was never there is refused.
    let gone = Cgroup::new(Path::new(UNIFIED), &unique("kill-gone"));
    let mut fourth = sleeper(&gone);
    let kill_gone = item("kill-2", &collector_path(&gone.path), Kill, Enforce);
    let never = item(
        "kill-3",
        &format!("/{}", unique("never-made")),
        Kill,
        Enforce,
    );
    r.apply(&containments(3, vec![kill_gone.clone(), never.clone()]));
    assert_eq!(ended_by(&mut fourth, Duration::from_secs(2)), Some(9));
    drop(gone);
    r.tick();
    r.apply(&containments(4, vec![kill_gone, never]));
    let (_, statuses) = r.statuses();
    let s = &statuses[0];
    assert!(s.applied && s.error.is_empty() && s.killed == 1, "{s:?}");
    let s = &statuses[1];
    assert!(!s.applied && s.error.contains("does not exist"), "{s:?}");
}

/// Freeze and kill go through the same guards as isolation: the root, a
/// path with `..`, an empty one, the agent's own cgroup and its ancestor
/// are refused with an error and nothing is frozen or killed; a shadow
/// freeze or kill and an unknown kind are refused too.
#[test]
fn freeze_and_kill_refuse_the_agent_the_root_and_bad_specs() {
    use patchgap_proto::v1::{
        ContainmentKind::{Freeze, Kill},
        ContainmentMode::{Enforce, Shadow},
    };

    let _live = live();
    let bpffs = BpffsDir::new();
    let state = tempfile::tempdir().unwrap();
    let cg = Cgroup::new(Path::new(UNIFIED), &unique("refuse"));
    let mut witness = sleeper(&cg);
    let name = collector_path(&cg.path);
    let mut unknown = item("kind-9", &name, Freeze, Enforce);
    unknown.kind = 9;
    let mut r = responder(&bpffs, state.path());
    r.apply(&containments(
        1,
        vec![
            item("root-f", "/", Freeze, Enforce),
            item("root-k", "/", Kill, Enforce),
            item("empty", "", Freeze, Enforce),
            item("dotdot", &format!("{name}/../x"), Kill, Enforce),
            item("shadow-f", &name, Freeze, Shadow),
            item("shadow-k", &name, Kill, Shadow),
            unknown,
        ],
    ));
    let (_, statuses) = r.statuses();
    for (id, why) in [
        ("root-f", "root of the cgroup2 hierarchy"),
        ("root-k", "root of the cgroup2 hierarchy"),
        ("empty", "bad cgroup path"),
        ("dotdot", "bad cgroup path"),
        ("shadow-f", "no shadow mode"),
        ("shadow-k", "no shadow mode"),
        ("kind-9", "unknown kind"),
    ] {
        let s = statuses.iter().find(|s| s.id == id).unwrap();
        assert!(!s.applied && s.error.contains(why), "{id}: {s:?}");
        eprintln!("{id}: {}", s.error);
    }
    assert!(!freeze_requested(&cg.path));
    assert_eq!(ended_by(&mut witness, Duration::from_millis(100)), None);

    // The agent's own cgroup and its ancestor. Should a guard ever let a
    // freeze through, this process would stop: a watchdog outside thaws
    // whatever is frozen there from 2 s on, every 200 ms (a thawed test
    // may freeze itself again with the next item), and leaves a mark, so
    // the test fails instead of hanging.
    let parent = Cgroup::new(Path::new(UNIFIED), &unique("agent-parent"));
    let own = Cgroup::new(&parent.path, "agent");
    let mark = state.path().join("thawed-by-watchdog");
    let _watchdog = Proc {
        child: Command::new("/bin/sh")
            .args([
                "-c",
                r#"sleep 2; m=$1; shift; while :; do for c in "$@"; do if [ "$(cat "$c/cgroup.freeze")" = 1 ]; then echo 0 > "$c/cgroup.freeze"; touch "$m"; fi; done; sleep 0.2; done"#,
                "sh",
            ])
            .arg(&mark)
            .arg(&parent.path)
            .arg(&own.path)
            .spawn()
            .expect("spawn the watchdog"),
    };
    let back = BackToRoot;
    own.add(std::process::id());
    r.apply(&containments(
        2,
        vec![
            item("own-f", &collector_path(&own.path), Freeze, Enforce),
            item("own-k", &collector_path(&own.path), Kill, Enforce),
            item("parent-f", &collector_path(&parent.path), Freeze, Enforce),
            item("parent-k", &collector_path(&parent.path), Kill, Enforce),
        ],
    ));
    // Nothing was taken on, so a tick while the agent is in there kills
    // nothing (this test still runs).
    r.tick();
    drop(back);
    assert!(!mark.exists(), "the agent froze itself");
    let (_, statuses) = r.statuses();
    for s in &statuses {
        assert!(
            !s.applied && s.error.contains("the agent's own cgroup"),
            "{s:?}"
        );
    }
    for c in [&parent.path, &own.path] {
        assert!(!freeze_requested(c), "{}", c.display());
    }
}

/// A freeze the agent cannot record could never be lifted after a
/// restart: it is refused, with the reason, and the cgroup stays running.
#[test]
fn a_freeze_that_cannot_be_recorded_is_not_made() {
    use patchgap_proto::v1::{ContainmentKind::Freeze, ContainmentMode::Enforce};

    let _live = live();
    let bpffs = BpffsDir::new();
    let state = tempfile::tempdir().unwrap();
    // A file where the state directory should be: nothing can be written.
    let blocked = state.path().join("not-a-directory");
    fs::write(&blocked, "").unwrap();
    let cg = Cgroup::new(Path::new(UNIFIED), &unique("unrecorded"));
    let ticker = Ticker::start(&cg);
    let mut r = responder(&bpffs, &blocked);
    r.apply(&containments(
        1,
        vec![item("frz-u", &collector_path(&cg.path), Freeze, Enforce)],
    ));
    let (_, statuses) = r.statuses();
    let s = &statuses[0];
    assert!(!s.applied && !s.frozen, "{s:?}");
    assert!(s.error.contains("not-a-directory"), "{s:?}");
    assert!(!freeze_requested(&cg.path));
    assert!(ticker.ticks(Duration::from_millis(300)) > 5);
}
