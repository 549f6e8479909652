//! Live sensing with eBPF: exec, exit, connect and library opens as they
//! happen, next to the periodic /proc scan.
//!
//! The kernel half lives in the `patchgap-ebpf` crate (C CO-RE programs on
//! tracepoints, one ring buffer, event layouts in `ebpf/bpf/events.h`). This
//! module loads that object with aya =0.14.0, attaches the programs, and turns
//! ring-buffer records into owned [`Event`]s on a bounded tokio channel.
//!
//! Kernel and toolchain facts this code depends on (see shared/PLATFORM.md):
//! - aya 0.14 has no tokio integration: the ring buffer's map fd is pollable
//!   (`EPOLLIN` while data is available), so it is wrapped in
//!   [`tokio::io::unix::AsyncFd`] and drained by hand.
//! - Tracepoint attachment reads `<tracefs>/events/<cat>/<name>/id`. aya looks
//!   for tracefs only at /sys/kernel/tracing and /sys/kernel/debug/tracing and
//!   caches the first answer (even "not found") for the life of the process,
//!   and this host does not mount tracefs: [`ensure_tracefs`] must run before
//!   the first `TracePoint::attach` anywhere in the process.
//! - There are no kprobes and no fentry on the target kernel; everything here
//!   is a classic `tracepoint/` program, which needs neither.
//! - Timestamps come from `bpf_ktime_get_boot_ns` (CLOCK_BOOTTIME, which keeps
//!   counting across suspend); they are turned into wall-clock milliseconds
//!   with one realtime-minus-boottime offset taken at start.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, TracePoint,
        trace_point::TracePointLinkId,
    },
};
use patchgap_ebpf::{
    CGROUP_CHANGE_TRACEPOINTS, Feature, GLOBAL_ENABLE_CONNECTS, GLOBAL_ENABLE_OPENS,
    GLOBAL_SELF_TGID, MAP_CGROUP_CHANGES, MAP_EVENTS, MAP_LOST, OBJECT, PROG_CGROUP_CHANGE,
    PROG_DNS, PROGRAMS, Program,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// Where tracefs is mounted when nobody has. The first of aya's two
/// candidates; the other (/sys/kernel/debug/tracing) would need debugfs too.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Capacity of the event channel. At the ~1.7k exec/s ceiling of this VM that
/// is tens of seconds of slack; beyond it events are dropped, never queued in
/// the reader, so the kernel ring keeps draining.
const CHANNEL_CAPACITY: usize = 65_536;

/// Records drained between two cooperative yields of the reader task, so a
/// flood cannot pin a runtime worker while other tasks wait.
const DRAIN_BATCH: usize = 4096;

/// What to sense. `Default` senses everything with a 1 MiB ring.
#[derive(Debug, Clone)]
pub struct SenseConfig {
    /// Size of the kernel ring buffer in bytes. The kernel requires a power of
    /// two that is a multiple of the page size; anything else is refused by
    /// [`Sensor::start`] instead of being silently rounded.
    pub ring_bytes: u32,
    /// Record successful opens of library-like files (`.so`, `.so.N`, `.py`,
    /// `.pyc`, `.jar`, `.node`, `package.json`), and executable mappings of
    /// the descriptors those opens returned.
    pub opens: bool,
    /// Record IPv4/IPv6 connect(2) calls with their result.
    pub connects: bool,
    /// Copy DNS answers (packets from port 53) delivered to the host's
    /// sockets, so connections carry the names their workload was told
    /// (`pg_dns` on the cgroup v2 root; `--no-dns` turns it off).
    pub dns: bool,
}

impl Default for SenseConfig {
    fn default() -> Self {
        // 1 MiB holds ~3,500 events: the reader drains every 100 ms (and at
        // every 64 KiB), and 100 exec/s with 1,000 connect/s is ~1,500
        // events/s, so 20x headroom (a storm past 64 KiB wakes the reader
        // without waiting for the timer). The ring's data pages
        // are mapped twice and count twice in the agent's RSS, so bigger is
        // not free. --ring-mib raises it.
        Self {
            ring_bytes: 1 << 20,
            opens: true,
            connects: true,
            dns: true,
        }
    }
}

/// A decoded kernel event, owned. Times are wall-clock ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A successful execve/execveat. `filename` is the path as passed to exec
    /// (maybe relative, or /dev/fd/N), not a resolved one; `comm` is the new
    /// program's.
    Exec {
        pid: u32,
        ppid: u32,
        uid: u32,
        cgroup_id: u64,
        comm: String,
        filename: Vec<u8>,
        /// argv of the new image, NUL-separated as /proc/PID/cmdline, at most
        /// [`patchgap_ebpf::ARGS_LEN`] bytes (unredacted: it stays in the
        /// agent until `parse::cmdline` has redacted it).
        args: Vec<u8>,
        /// argv was longer than `args`.
        args_truncated: bool,
        /// The process's start in clock ticks since boot (the kernel's
        /// start_boottime): with the pid, the process's key.
        start_ticks: u64,
        /// The file that runs, as the kernel named it at exec (for a
        /// script, its interpreter); all zero when unread.
        exe: patchgap_ebpf::FileIdentity,
        at_ms: i64,
    },
    /// The last thread of a process exited. `exit_code` is the kernel's
    /// `task->exit_code`, a wait(2) status: `(status << 8) | signal`, so
    /// `exit(1)` gives 256 and a SIGKILL gives 9.
    Exit {
        pid: u32,
        /// The process's start in clock ticks (its key with the pid).
        start_ticks: u64,
        exit_code: i32,
        at_ms: i64,
    },
    /// A connect(2) to an IPv4/IPv6 address returned. `ret` is 0 or -errno
    /// (-EINPROGRESS, -115, for a non-blocking TCP connect). `protocol` is
    /// "tcp", "udp", "tcp6", "udp6", or "" when the socket type was unknown.
    Connect {
        pid: u32,
        ppid: u32,
        /// The process's start in clock ticks (its key with the pid).
        start_ticks: u64,
        uid: u32,
        cgroup_id: u64,
        comm: String,
        addr: SocketAddr,
        protocol: &'static str,
        ret: i32,
        /// Connects like this one (same process, destination and result)
        /// that the kernel counted instead of sending, since the last one
        /// it sent: this event stands for `1 + repeats`.
        repeats: u32,
        at_ms: i64,
    },
    /// A successful openat/openat2 of a library-like path; `fd` is the new
    /// descriptor. The path is as the caller passed it (maybe relative).
    /// An open is not a load: a shared object is loaded only when a
    /// [`Event::Map`] of its descriptor follows.
    Open {
        pid: u32,
        cgroup_id: u64,
        path: Vec<u8>,
        fd: i32,
        /// The file opened, as the kernel named it; all zero when unread.
        file: patchgap_ebpf::FileIdentity,
        at_ms: i64,
    },
    /// The descriptor `fd` that an [`Event::Open`] of this process returned
    /// was mapped executable while it still named that file: the file was
    /// loaded as code (the dynamic loader does this for every library).
    Map {
        pid: u32,
        fd: i32,
        /// The file mapped, as the kernel named it; all zero when unread.
        file: patchgap_ebpf::FileIdentity,
        at_ms: i64,
    },
    /// A packet from source port 53 was delivered to a socket of
    /// `cgroup_id` (the receiving socket's cgroup v2: the workload that
    /// asked): a DNS answer, parsed by the scan loop (`crate::dns`). Seen
    /// in the receiving path, so it has no pid.
    Dns {
        cgroup_id: u64,
        /// The answering server.
        server: Option<std::net::IpAddr>,
        /// Over TCP: `payload` starts with a 2-byte length when the
        /// segment starts a message.
        tcp: bool,
        /// At most [`patchgap_ebpf::DNS_LEN`] bytes of the message.
        payload: Vec<u8>,
        /// The message was longer than `payload`.
        truncated: bool,
        at_ms: i64,
    },
}

impl Event {
    /// The thread-group id (the "pid" of ps) the event belongs to; 0 for a
    /// DNS answer, which belongs to a socket.
    pub fn pid(&self) -> u32 {
        match self {
            Event::Dns { .. } => 0,
            Event::Exec { pid, .. }
            | Event::Exit { pid, .. }
            | Event::Connect { pid, .. }
            | Event::Open { pid, .. }
            | Event::Map { pid, .. } => *pid,
        }
    }

    /// When the kernel saw it, wall-clock ms since the epoch.
    pub fn at_ms(&self) -> i64 {
        match self {
            Event::Exec { at_ms, .. }
            | Event::Exit { at_ms, .. }
            | Event::Connect { at_ms, .. }
            | Event::Open { at_ms, .. }
            | Event::Map { at_ms, .. }
            | Event::Dns { at_ms, .. } => *at_ms,
        }
    }
}

/// Why the sensor could not start. The agent keeps scanning /proc without it
/// and shows `ebpf: off (<reason>)`.
#[derive(Debug, thiserror::Error)]
pub enum SenseError {
    /// Loading BPF programs and opening perf events needs root (or
    /// CAP_BPF + CAP_PERFMON, which this agent does not try to detect).
    #[error("eBPF sensing needs root")]
    NotRoot,
    /// CO-RE relocations need the kernel's own BTF.
    #[error("kernel has no BTF (/sys/kernel/btf/vmlinux is missing)")]
    NoBtf,
    /// `Sensor::start` was called outside a tokio runtime.
    #[error("eBPF sensing must start inside a tokio runtime")]
    NoRuntime,
    /// The ring size is not a power of two multiple of the page size.
    #[error("ring buffer size {0} is not a power-of-two multiple of the page size")]
    RingSize(u32),
    /// tracefs could not be mounted at /sys/kernel/tracing.
    #[error("cannot mount tracefs at {TRACEFS}")]
    Tracefs(#[source] io::Error),
    /// Parsing, relocating or creating the maps of the object failed.
    #[error("cannot load the eBPF object")]
    Load(#[source] EbpfError),
    /// The object lacks a program this module attaches.
    #[error("eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The verifier (or the kernel) refused a program.
    #[error("cannot load eBPF program {program}")]
    ProgramLoad {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    /// Attaching a loaded program to its tracepoint failed.
    #[error("cannot attach eBPF program {program}")]
    Attach {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    /// A map is missing or of the wrong type.
    #[error("eBPF map {map} unusable")]
    Map {
        map: &'static str,
        #[source]
        source: Option<MapError>,
    },
    /// Registering the ring buffer's fd with the tokio reactor, or
    /// creating its drain timer, failed.
    #[error("cannot poll the ring buffer")]
    Poll(#[source] io::Error),
}

impl SenseError {
    /// One short, lower-case reason for "ebpf: off (reason)", e.g. "not root",
    /// "no btf", "load failed: ...". Verifier logs are left out (they run to
    /// kilobytes); the full chain is in `Display` and `source()`.
    pub fn reason(&self) -> String {
        let r = match self {
            SenseError::NotRoot => "not root".to_owned(),
            SenseError::NoBtf => "no btf".to_owned(),
            SenseError::NoRuntime => "no tokio runtime".to_owned(),
            SenseError::RingSize(n) => format!("bad ring size {n}"),
            SenseError::Tracefs(e) => format!("tracefs: {}", io_reason(e)),
            SenseError::Load(e) => format!("load failed: {}", ebpf_reason(e)),
            SenseError::MissingProgram(p) => format!("no program {p}"),
            SenseError::ProgramLoad { program, source } => {
                format!("{program} rejected: {}", program_reason(source))
            }
            SenseError::Attach { program, source } => {
                format!("attach {program}: {}", program_reason(source))
            }
            SenseError::Map { map, .. } => format!("map {map} unusable"),
            SenseError::Poll(e) => format!("poll: {}", io_reason(e)),
        };
        shorten(&r.to_lowercase())
    }
}

/// Cut a reason to at most 80 bytes on a char boundary: it is a status line.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// An io::Error without its "(os error N)" suffix, which says nothing to an
/// operator that the text before it does not.
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The essence of an aya load error: the errno for syscall failures, else
/// aya's own one-line message.
fn ebpf_reason(e: &EbpfError) -> String {
    match e {
        EbpfError::ProgramError(p) => program_reason(p),
        EbpfError::FileError { error, .. } => io_reason(error),
        other => other.to_string(),
    }
}

/// A `ProgramError` without the verifier log that `LoadError` embeds.
fn program_reason(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, .. } => io_reason(io_error),
        ProgramError::SyscallError(s) => format!("{}: {}", s.call, io_reason(&s.io_error)),
        other => other.to_string(),
    }
}

/// Counters, readable any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenseStats {
    /// Records read from the ring buffer (including those then dropped or
    /// undecodable).
    pub events: u64,
    /// Records the kernel could not reserve because the ring was full: the sum
    /// of the per-CPU `lost` counter.
    pub lost_kernel: u64,
    /// Decoded events dropped because the channel was full.
    pub lost_user: u64,
    /// Records that did not decode (unknown kind, short record).
    pub decode_errors: u64,
}

/// The reader task's counters, shared with [`Sensor::stats`].
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    lost_user: AtomicU64,
    decode_errors: AtomicU64,
}

/// A running sensor. The programs stay attached while it lives; dropping it
/// stops the reader and detaches everything.
pub struct Sensor {
    /// Owns the programs and their links; dropping it detaches them.
    _ebpf: Ebpf,
    /// The attached programs, in attach order, with their links.
    links: Vec<(&'static Program, TracePointLinkId)>,
    /// What is shed now (see [`Sensor::shed`]).
    shed: u8,
    /// The kernel's per-CPU drop counter (taken out of `_ebpf`).
    lost: PerCpuArray<MapData, u64>,
    /// The kernel's count of cgroup membership changes, with this
    /// sensor's identity; None when its programs could not be attached.
    cgroup_changes: Option<(u64, Array<MapData, u64>)>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
    /// Asks the reader to drain the ring now (see [`Sensor::flush`]).
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    /// Why DNS answers are not captured, or None when they are.
    dns_off: Option<String>,
}

impl std::fmt::Debug for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensor")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Sensor {
    /// Mounts tracefs if needed, loads the object with the globals
    /// (`self_tgid` = this process), attaches every enabled program, and
    /// spawns a tokio task that drains the ring buffer through `AsyncFd` and
    /// sends decoded events on the returned channel (bounded; when full the
    /// event is counted in `lost_user` and dropped, the reader never blocks).
    /// Must be called inside a tokio runtime.
    pub fn start(config: &SenseConfig) -> Result<(Sensor, mpsc::Receiver<Event>), SenseError> {
        // Cheap preconditions first, so the usual failures get a precise
        // reason instead of an EPERM or a BTF parse error from deep in aya.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(SenseError::NotRoot);
        }
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(SenseError::NoBtf);
        }
        // AsyncFd registration (and tokio::spawn) panic without a runtime;
        // check before loading anything into the kernel.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SenseError::NoRuntime);
        }
        // The kernel refuses other sizes with EINVAL; aya 0.14 would round a
        // bad size up (libbpf's rule) — refusing keeps the memory cost what
        // the operator configured.
        let page = page_size();
        let ring = config.ring_bytes;
        if !ring.is_power_of_two() || !ring.is_multiple_of(page) {
            return Err(SenseError::RingSize(ring));
        }
        // Must precede the first TracePoint::attach in the process: aya
        // caches its tracefs lookup forever.
        ensure_tracefs().map_err(SenseError::Tracefs)?;

        let clock = Clock::now();
        let self_tgid: u32 = std::process::id();
        let enable_opens = u32::from(config.opens);
        let enable_connects = u32::from(config.connects);
        // The globals are `const volatile` (.rodata): aya patches them into
        // the map's initial bytes before creating it and then freezes the
        // map (BPF_MAP_FREEZE), so the verifier sees constants and prunes
        // disabled branches. must_exist=true:
        // a renamed global should fail loudly, not silently sense ourselves.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_EVENTS, ring)
            .override_global(GLOBAL_SELF_TGID, &self_tgid, true)
            .override_global(GLOBAL_ENABLE_OPENS, &enable_opens, true)
            .override_global(GLOBAL_ENABLE_CONNECTS, &enable_connects, true)
            .load(OBJECT)
            .map_err(SenseError::Load)?;

        // Disabled features are not even attached (the globals above are the
        // belt; this is the braces): an unattached syscall tracepoint costs
        // the host nothing, an attached one that returns at once still costs
        // a program run on every openat of every process. PROGRAMS is in a
        // safe attach order: within each enter/exit pair the exit half goes
        // first, since the enter half stashes per-thread state that only the
        // exit half deletes.
        let wanted = |f: Feature| match f {
            Feature::Process => true,
            Feature::Connects => config.connects,
            Feature::Opens => config.opens,
        };
        let mut links = Vec::new();
        // DNS first: a cgroup program, not a tracepoint. Its failure (no
        // cgroup2 mount, an old kernel) costs the names, not the sensor:
        // reported once, and connections go on without names.
        let dns_off = if config.dns {
            attach_dns(&mut ebpf).err().inspect(|reason| {
                tracing::warn!(%reason, "ebpf: DNS answers not captured; connections carry no names");
            })
        } else {
            Some("off (--no-dns)".to_owned())
        };
        for p in PROGRAMS.iter().filter(|p| wanted(p.feature)) {
            let prog: &mut TracePoint = ebpf
                .program_mut(p.name)
                .ok_or(SenseError::MissingProgram(p.name))?
                .try_into()
                .map_err(|source| SenseError::ProgramLoad {
                    program: p.name,
                    source,
                })?;
            // load() runs BPF_PROG_LOAD (the verifier; CO-RE relocations were
            // applied against /sys/kernel/btf/vmlinux by EbpfLoader::load);
            // attach() reads the tracepoint id from tracefs, opens a perf
            // event on it and links the program (a bpf_link on 5.15+).
            prog.load().map_err(|source| SenseError::ProgramLoad {
                program: p.name,
                source,
            })?;
            let link =
                prog.attach(p.category, p.tracepoint)
                    .map_err(|source| SenseError::Attach {
                        program: p.name,
                        source,
                    })?;
            links.push((p, link));
        }

        // Optional, like DNS: without it full scans read every cgroup file.
        let cgroup_changes = attach_cgroup_changes(&mut ebpf)
            .inspect_err(|reason| {
                tracing::warn!(%reason, "ebpf: cgroup changes not counted; every scan reads every process's cgroups");
            })
            .ok()
            .map(|changes| (SENSORS.fetch_add(1, Ordering::Relaxed), changes));

        // Take the maps out of the Ebpf so the reader task can own the ring
        // and the Sensor the counter, without borrowing `ebpf`. The kernel
        // objects stay alive through the fds in MapData; the programs hold
        // their own references.
        let ring = ebpf
            .take_map(MAP_EVENTS)
            .ok_or(SenseError::Map {
                map: "events",
                source: None,
            })
            .and_then(|m| {
                RingBuf::try_from(m).map_err(|e| SenseError::Map {
                    map: "events",
                    source: Some(e),
                })
            })?;
        let lost = ebpf
            .take_map(MAP_LOST)
            .ok_or(SenseError::Map {
                map: "lost",
                source: None,
            })
            .and_then(|m| {
                PerCpuArray::<MapData, u64>::try_from(m).map_err(|e| SenseError::Map {
                    map: "lost",
                    source: Some(e),
                })
            })?;
        // READABLE only: the ring map's poll reports EPOLLIN when records are
        // waiting; we never write.
        // SAFETY: the RingBuf owns its MapData, whose OwnedFd stays open and
        // is the one as_raw_fd() returns for the RingBuf's whole life; the
        // reader only calls next() through the guard, never swaps the map.
        let afd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| SenseError::Poll(e.into_parts().1))?;

        let tick = Ticker::new(DRAIN_EVERY).map_err(SenseError::Poll)?;

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters::default());
        let (flushes, flush_rx) = mpsc::channel(4);
        let task = tokio::spawn(read_loop(
            afd,
            tick,
            tx,
            flush_rx,
            Arc::clone(&counters),
            clock,
        ));
        Ok((
            Sensor {
                _ebpf: ebpf,
                links,
                shed: 0,
                lost,
                cgroup_changes,
                counters,
                task,
                flushes,
                dns_off,
            },
            rx,
        ))
    }

    /// Why DNS answers are not captured ("off (--no-dns)", "no cgroup2
    /// mount", ...), or None when they are.
    pub fn dns_off(&self) -> Option<&str> {
        self.dns_off.as_deref()
    }

    /// Current counters. `lost_kernel` is read from the kernel map (one
    /// syscall); the rest are atomics.
    pub fn stats(&self) -> SenseStats {
        // PerCpuArray::get returns one value per *possible* CPU; a failed
        // read shows as 0 rather than failing a status line.
        let lost_kernel = self
            .lost
            .get(&0, 0)
            .map(|v| v.iter().copied().sum())
            .unwrap_or(0);
        SenseStats {
            events: self.counters.events.load(Ordering::Relaxed),
            lost_kernel,
            lost_user: self.counters.lost_user.load(Ordering::Relaxed),
            decode_errors: self.counters.decode_errors.load(Ordering::Relaxed),
        }
    }
}

impl Sensor {
    /// Sheds work for the watchdog: level 1 detaches the open and mmap
    /// programs, level 2 the connect programs too (the kernel then spends
    /// nothing on them); a lower level attaches them again. Exec and exit
    /// are never shed. Within an enter/exit pair the enter half is detached
    /// first and attached last, so no per-thread state is left behind. A
    /// failed re-attach is logged and tried again at the next call.
    pub fn shed(&mut self, level: u8) {
        if level == self.shed {
            return;
        }
        let off = |f: Feature| match f {
            Feature::Process => false,
            Feature::Opens => level >= 1,
            Feature::Connects => level >= 2,
        };
        // Detach, in reverse attach order.
        let mut kept = Vec::with_capacity(self.links.len());
        for (p, link) in std::mem::take(&mut self.links).into_iter().rev() {
            if !off(p.feature) {
                kept.push((p, link));
                continue;
            }
            if let Some(prog) = self._ebpf.program_mut(p.name)
                && let Ok(tp) = <&mut TracePoint>::try_from(prog)
                && let Err(error) = tp.detach(link)
            {
                tracing::warn!(program = p.name, %error, "ebpf: detach failed");
            }
        }
        kept.reverse();
        self.links = kept;
        // Attach what is wanted again (only what was loaded at start).
        let mut ok = true;
        for p in PROGRAMS.iter() {
            if off(p.feature) || self.links.iter().any(|(q, _)| q.name == p.name) {
                continue;
            }
            let Some(prog) = self._ebpf.program_mut(p.name) else {
                continue;
            };
            let Ok(tp) = <&mut TracePoint>::try_from(prog) else {
                continue;
            };
            if tp.fd().is_err() {
                // Never loaded: disabled by configuration.
                continue;
            }
            match tp.attach(p.category, p.tracepoint) {
                Ok(link) => self.links.push((p, link)),
                Err(error) => {
                    tracing::warn!(program = p.name, %error, "ebpf: re-attach failed");
                    ok = false;
                }
            }
        }
        if ok {
            self.shed = level;
        }
    }

    /// The kernel's count of changes to processes' cgroup membership since
    /// this sensor loaded, with the sensor's identity (another sensor's
    /// count starts again at 0). None when it is not counted.
    pub fn cgroup_changes(&self) -> Option<(u64, u64)> {
        let (id, map) = self.cgroup_changes.as_ref()?;
        map.get(&0, 0).ok().map(|n| (*id, n))
    }

    /// What is shed now: 0 nothing, 1 opens, 2 opens and connects.
    pub fn shed_level(&self) -> u8 {
        self.shed
    }

    /// Returns once every event the kernel had written when this was called
    /// is on the event channel (or was counted lost): the reader drains the
    /// ring and answers. A full scan calls it before judging what /proc no
    /// longer shows, so an exit is closed by its own event, at its own
    /// time. False when the reader is gone or did not answer within a
    /// second (a stalled host: the scan goes on without it).
    pub async fn flush(&self) -> bool {
        let (done, answer) = oneshot::channel();
        if self.flushes.send(done).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), answer).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        // The task owns the ring buffer; aborting makes the runtime drop its
        // future at the next scheduling point, which deregisters the fd and
        // unmaps the ring. The fields drop right after this: `_ebpf` drops
        // its programs, whose links detach from the tracepoints at once.
        self.task.abort();
    }
}

/// Sensors started in this process: each one's identity.
static SENSORS: AtomicU64 = AtomicU64::new(0);

/// Loads `pg_cgroup_change`, attaches it to every tracepoint of
/// [`CGROUP_CHANGE_TRACEPOINTS`] (all of them, or the count would miss
/// changes: any failure is an error) and takes its counter out of `ebpf`.
/// The links live as long as the program, in `ebpf`.
fn attach_cgroup_changes(ebpf: &mut Ebpf) -> Result<Array<MapData, u64>, String> {
    let prog: &mut TracePoint = ebpf
        .program_mut(PROG_CGROUP_CHANGE)
        .ok_or_else(|| format!("{PROG_CGROUP_CHANGE} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{PROG_CGROUP_CHANGE}: {e}"))?;
    prog.load()
        .map_err(|e| format!("{PROG_CGROUP_CHANGE}: load: {e}"))?;
    for tp in CGROUP_CHANGE_TRACEPOINTS {
        prog.attach("cgroup", tp)
            .map_err(|e| format!("{PROG_CGROUP_CHANGE}: attach to cgroup/{tp}: {e}"))?;
    }
    let map = ebpf
        .take_map(MAP_CGROUP_CHANGES)
        .ok_or_else(|| format!("map {MAP_CGROUP_CHANGES} missing"))?;
    Array::try_from(map).map_err(|e| format!("map {MAP_CGROUP_CHANGES}: {e}"))
}

/// Attaches `pg_dns` to the root of the cgroup v2 hierarchy (from this
/// process's mountinfo: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a
/// hybrid host), so it runs for every socket of the host. With aya =0.14 on
/// 5.7+ this is a BPF link (BPF_LINK_CREATE), which the kernel attaches as
/// multi by itself: other programs on the root stay, and ours goes when the
/// link's last descriptor closes (the `Ebpf` drops, or the agent dies; it
/// is never pinned). The error is a short reason for the log.
fn attach_dns(ebpf: &mut Ebpf) -> Result<(), String> {
    let mountinfo = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| format!("read mountinfo: {}", io_reason(&e)))?;
    let root =
        crate::contain::cgroup2_mount(&mountinfo).ok_or_else(|| "no cgroup2 mount".to_owned())?;
    let dir = std::fs::File::open(&root)
        .map_err(|e| format!("open {}: {}", root.display(), io_reason(&e)))?;
    let prog: &mut CgroupSkb = ebpf
        .program_mut(PROG_DNS)
        .ok_or_else(|| format!("no program {PROG_DNS}"))?
        .try_into()
        .map_err(|e| program_reason(&e))?;
    prog.load()
        .map_err(|e| format!("{PROG_DNS} rejected: {}", program_reason(&e)))?;
    // Single is "no flags": see contain/executor.rs, the kernel refuses
    // BPF_F_ALLOW_MULTI on a link and makes every cgroup link multi.
    prog.attach(&dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|e| format!("attach {PROG_DNS}: {}", program_reason(&e)))?;
    Ok(())
}

/// How often the ring is drained without a wakeup. The programs wake the
/// reader only when 64 KiB wait (a wakeup per event would cost a context
/// switch per event), so a trickle of events waits at most this long. Each
/// drain that finds events also wakes the scan thread: on this project's
/// VMs a wakeup of both costs about as much as merging an exec, so 100 ms
/// (not 50) took a fifth off the agent's CPU at 20 exec/s, and 200 ms (not
/// 100) another sixth at 100 exec/s and 1,000 connect/s (same-run A/B,
/// 0.830 and 0.838 with the agents swapped). Within the freshness budget
/// (an exec is queryable at the collector in under 1 s): deltas go at most
/// every 400 ms anyway, riding on the batch nearest their time.
pub(crate) const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A periodic kernel timer (timerfd) the runtime polls like a socket.
///
/// tokio's timer wheel keeps a deadline more than 64 ms away in a coarser
/// level and wakes a worker to move it down before it fires: a 100 ms
/// interval cost two wakeups a period. The kernel's timer costs one.
struct Ticker(AsyncFd<OwnedFd>);

impl Ticker {
    fn new(period: std::time::Duration) -> io::Result<Ticker> {
        // SAFETY: no pointers; the descriptor is owned right below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: timerfd_create returned a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let every = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open, as the
        // descriptor it was registered with, until the AsyncFd drops.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map(Ticker)
            .map_err(|e| e.into_parts().1)
    }

    /// Waits for the next expiry; expiries missed meanwhile count as one.
    async fn tick(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.0.readable_mut().await?;
            let read = guard.try_io(|fd| {
                let mut expiries = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), expiries.as_mut_ptr().cast(), 8)
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                // Readiness was stale: wait for the next edge.
                Err(_would_block) => continue,
            }
        }
    }
}

/// Drain the ring on every readiness and on a short timer, until the
/// receiver goes away.
async fn read_loop(
    mut afd: AsyncFd<RingBuf<MapData>>,
    mut tick: Ticker,
    tx: mpsc::Sender<Event>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    counters: Arc<Counters>,
    clock: Clock,
) {
    // Decoded events on their way to the scan thread: one buffer for the
    // reader's life, not one grown from empty at every drain (that growth
    // was half the drain's cost).
    let mut decoded = Vec::new();
    loop {
        tokio::select! {
            ready = afd.readable_mut() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        // Only happens if the reactor is shutting down.
                        tracing::warn!(error = %e, "ebpf ring buffer: poll failed, reader stops");
                        return;
                    }
                };
                if !drain(guard.get_inner_mut(), &mut decoded, &tx, &counters, &clock).await {
                    return;
                }
                // Clears readiness only if no new edge arrived since the guard
                // was taken (tokio compares ticks), so a record committed
                // between the last next() == None and here is not lost.
                guard.clear_ready();
            }
            ticked = tick.tick() => {
                if let Err(e) = ticked {
                    tracing::warn!(error = %e, "ebpf ring buffer: drain timer failed, reader stops");
                    return;
                }
                if !drain(afd.get_mut(), &mut decoded, &tx, &counters, &clock).await {
                    return;
                }
            }
            Some(done) = flushes.recv() => {
                if !drain(afd.get_mut(), &mut decoded, &tx, &counters, &clock).await {
                    return;
                }
                let _ = done.send(());
            }
        }
    }
}

/// Reads every record the ring holds. False when nobody listens any more.
///
/// Records are decoded first and handed over together, so the scan thread,
/// which wakes at the first event sent, finds the whole drain waiting.
async fn drain(
    ring: &mut RingBuf<MapData>,
    decoded: &mut Vec<Event>,
    tx: &mpsc::Sender<Event>,
    counters: &Counters,
    clock: &Clock,
) -> bool {
    loop {
        let Some(item) = ring.next() else {
            return hand_over(tx, decoded, counters);
        };
        counters.events.fetch_add(1, Ordering::Relaxed);
        // Decode into an owned Event while the record is borrowed;
        // dropping `item` advances the consumer position and frees the
        // space for the kernel.
        match decode(&item, clock) {
            Some(ev) => decoded.push(ev),
            None => {
                counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(item);
        if decoded.len() == DRAIN_BATCH {
            if !hand_over(tx, decoded, counters) {
                return false;
            }
            // Yield to the scheduler only if this task has used up its
            // budget; the ring is still drained to the end afterwards.
            tokio::task::coop::consume_budget().await;
        }
    }
}

/// Sends decoded events to the scan thread; a full channel drops (and
/// counts) them, so the reader never queues. False when nobody listens.
fn hand_over(tx: &mpsc::Sender<Event>, decoded: &mut Vec<Event>, counters: &Counters) -> bool {
    for ev in decoded.drain(..) {
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.lost_user.fetch_add(1, Ordering::Relaxed);
            }
            // Nobody listens: stop reading. The programs stay attached
            // until the Sensor drops; the kernel then counts its drops in
            // `lost`.
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}

/// USER_HZ, the unit of /proc/PID/stat's starttime.
fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Converts kernel CLOCK_BOOTTIME nanoseconds into wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// CLOCK_REALTIME - CLOCK_BOOTTIME, in ns, at start. Later wall-clock
    /// steps (NTP, settimeofday) are not followed: event times stay monotonic
    /// relative to each other.
    offset_ns: i64,
}

impl Clock {
    fn now() -> Self {
        // Read realtime on both sides of boottime and average, so the
        // offset's error is half the span of the three calls (tens of ns).
        let r1 = clock_ns(libc::CLOCK_REALTIME);
        let b = clock_ns(libc::CLOCK_BOOTTIME);
        let r2 = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: r1 + (r2 - r1) / 2 - b,
        }
    }

    fn to_ms(self, boot_ns: u64) -> i64 {
        // i64 ns holds dates until 2262; boot time never comes near that.
        i64::try_from(boot_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_ns)
            / 1_000_000
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; both clocks exist on every
    // kernel this runs on (BOOTTIME since 2.6.39), so this cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).unwrap_or(4096)
}

/// comm as text. The kernel does not promise UTF-8 (prctl(PR_SET_NAME) takes
/// any bytes); replacement characters are fine for a display name.
fn comm_string(h: &patchgap_ebpf::EventHeader) -> String {
    // comm_bytes() cuts at the first NUL; a 16-byte comm has none.
    String::from_utf8_lossy(h.comm_bytes()).into_owned()
}

/// One ring-buffer record to an owned [`Event`], or None if it is not one
/// (short record, unknown kind, or a connect of a family other than
/// AF_INET/AF_INET6, which the programs never emit).
fn decode(bytes: &[u8], clock: &Clock) -> Option<Event> {
    const {
        assert!(
            std::mem::size_of::<Event>() <= 152,
            "an Event is moved per kernel record: keep it small"
        )
    };
    use patchgap_ebpf as k;
    // k::decode copies the record out with read_unaligned and checks its
    // length against the struct its kind names; filename/path are cut at
    // the recorded *_len and at the first NUL by the *_bytes() helpers.
    let ticks = |h: &k::EventHeader| h.start_ns / (1_000_000_000 / clk_tck());
    Some(match k::decode(bytes)? {
        k::Event::Exec(e) => Event::Exec {
            pid: e.h.pid,
            ppid: e.h.ppid,
            uid: e.h.uid,
            cgroup_id: e.h.cgroup_id,
            comm: comm_string(&e.h),
            filename: e.filename_bytes().to_vec(),
            args: e.args_bytes().to_vec(),
            args_truncated: e.args_truncated(),
            start_ticks: ticks(&e.h),
            exe: e.exe,
            at_ms: clock.to_ms(e.h.ts_ns),
        },
        k::Event::Exit(e) => Event::Exit {
            pid: e.h.pid,
            start_ticks: ticks(&e.h),
            exit_code: e.exit_code,
            at_ms: clock.to_ms(e.h.ts_ns),
        },
        k::Event::Connect(e) => Event::Connect {
            pid: e.h.pid,
            ppid: e.h.ppid,
            start_ticks: ticks(&e.h),
            uid: e.h.uid,
            cgroup_id: e.h.cgroup_id,
            comm: comm_string(&e.h),
            // The port is already in host order; the address bytes are in
            // network order, which is what Ipv4Addr/Ipv6Addr take.
            addr: SocketAddr::new(e.ip()?, e.port),
            protocol: protocol(e.family, e.sock_type),
            ret: e.ret,
            repeats: e.repeats,
            at_ms: clock.to_ms(e.h.ts_ns),
        },
        k::Event::Open(e) => Event::Open {
            pid: e.h.pid,
            cgroup_id: e.h.cgroup_id,
            path: e.path_bytes().to_vec(),
            fd: e.ret,
            file: e.file,
            at_ms: clock.to_ms(e.h.ts_ns),
        },
        k::Event::Map(e) => Event::Map {
            pid: e.h.pid,
            fd: e.fd,
            file: e.file,
            at_ms: clock.to_ms(e.h.ts_ns),
        },
        k::Event::Dns(e) => Event::Dns {
            cgroup_id: e.h.cgroup_id,
            server: e.server(),
            tcp: e.is_tcp(),
            payload: e.payload_bytes().to_vec(),
            truncated: e.truncated(),
            at_ms: clock.to_ms(e.h.ts_ns),
        },
    })
}

/// The protocol name from the family and the socket type (SOCK_STREAM=1,
/// SOCK_DGRAM=2), "" when the BPF side could not read the socket.
fn protocol(family: u16, sock_type: u16) -> &'static str {
    let v6 = family == libc::AF_INET6 as u16;
    match (sock_type as i32, v6) {
        (libc::SOCK_STREAM, false) => "tcp",
        (libc::SOCK_STREAM, true) => "tcp6",
        (libc::SOCK_DGRAM, false) => "udp",
        (libc::SOCK_DGRAM, true) => "udp6",
        _ => "",
    }
}

/// Serializes mounting within this process, so two sensors started at once do
/// not stack two tracefs mounts on the same directory.
static TRACEFS_LOCK: Mutex<()> = Mutex::new(());

/// Mounts tracefs at /sys/kernel/tracing when /sys/kernel/tracing/events does
/// not exist. Idempotent.
pub fn ensure_tracefs() -> io::Result<()> {
    let events = std::path::Path::new(TRACEFS).join("events");
    let _g = TRACEFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if events.exists() {
        return Ok(());
    }
    // The kernel creates /sys/kernel/tracing as an empty mount point when
    // CONFIG_TRACING is on; it cannot be mkdir'ed in sysfs.
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null
    // for tracefs (no mount options).
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // Another process may have mounted it between our check and mount.
        if err.raw_os_error() == Some(libc::EBUSY) && events.exists() {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// What one run of the workload produced, for the child's pid only.
    struct Seen {
        child: u32,
        /// From spawn() to the Exec event's arrival on the channel.
        exec_latency: Option<Duration>,
        /// Receive wall time minus the event's own (kernel) time, in ms.
        exec_delivery_ms: Option<i64>,
        exec: Option<Event>,
        open: Option<Event>,
        connect: Option<Event>,
        exit: Option<Event>,
        /// Any event at all attributed to the test process itself.
        from_self: usize,
        opens_of_child: usize,
    }

    /// Runs the interpreter directly (not pyenv's shim, not through a shell)
    /// so the pid we hold is the one that execs, dlopens and connects. The
    /// listener is bound so connect() completes from the backlog (ret 0)
    /// without an accept().
    /// What the kernel's identity of `path` (reached from this process's
    /// root, "/") should read, from stat.
    fn stat_identity(path: &str) -> crate::scan::KernelFile {
        use std::os::unix::fs::MetadataExt;
        let (m, root) = (
            std::fs::metadata(path).unwrap(),
            std::fs::metadata("/").unwrap(),
        );
        crate::scan::KernelFile {
            file: (
                crate::rootfs::FileId {
                    dev: m.dev(),
                    ino: m.ino(),
                },
                i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            ),
            root: Some(crate::rootfs::FileId {
                dev: root.dev(),
                ino: root.ino(),
            }),
        }
    }

    async fn run_workload(rx: &mut mpsc::Receiver<Event>, want_open: bool) -> Seen {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!(
            "import ctypes, socket, time; ctypes.CDLL('libbz2.so.1.0'); \
             s=socket.socket(); s.connect_ex(('127.0.0.1', {port})); time.sleep(0.05)"
        );
        let spawned = Instant::now();
        let mut child = tokio::process::Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        // spawn() returns once exec has succeeded (std's CLOEXEC pipe), so
        // the Exec event already exists; collect while the child runs to
        // time its delivery.
        let child_pid = child.id().unwrap();
        let waiter = tokio::spawn(async move { child.wait().await });

        let me = std::process::id();
        let mut seen = Seen {
            child: child_pid,
            exec_latency: None,
            exec_delivery_ms: None,
            exec: None,
            open: None,
            connect: None,
            exit: None,
            from_self: 0,
            opens_of_child: 0,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            // Done when everything wanted has arrived. Exit is the child's
            // last event (its opens and connect precede it on one ring),
            // so once it is in, nothing more can come for this pid.
            let open_done = !want_open || seen.open.is_some();
            if seen.exec.is_some() && open_done && seen.connect.is_some() && seen.exit.is_some() {
                break;
            }
            let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => panic!("sensor channel closed"),
                Err(_) => break,
            };
            if ev.pid() == me {
                seen.from_self += 1;
            }
            if ev.pid() != child_pid {
                continue;
            }
            match &ev {
                Event::Exec { filename, .. }
                    if seen.exec.is_none() && filename.ends_with(b"python3") =>
                {
                    seen.exec_latency = Some(spawned.elapsed());
                    seen.exec_delivery_ms = Some(wall_ms() - ev.at_ms());
                    seen.exec = Some(ev.clone());
                }
                Event::Open { path, .. } => {
                    seen.opens_of_child += 1;
                    if seen.open.is_none() && contains(path, b"libbz2.so") {
                        seen.open = Some(ev.clone());
                    }
                }
                Event::Connect { addr, .. } if *addr == target => {
                    seen.connect = Some(ev.clone());
                }
                Event::Exit { .. } => seen.exit = Some(ev.clone()),
                _ => {}
            }
        }
        let status = waiter.await.unwrap().unwrap();
        assert!(status.success(), "workload failed: {status}");
        drop(listener);
        seen
    }

    fn wall_ms() -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(d.as_millis()).unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// A burst of connects to one destination comes as one record that
    /// counts the rest later: 50 connects, a pause longer than the kernel's
    /// repeat window, then one more. Every connect is counted once, and the
    /// burst is not 50 records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_connects_are_counted_in_the_kernel() {
        let (_sensor, mut rx) = Sensor::start(&SenseConfig::default()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!(
            "import socket, time\n\
             def c():\n    s = socket.create_connection(('127.0.0.1', {port})); s.close()\n\
             for _ in range(50): c()\n\
             time.sleep(1.5)\n\
             c()"
        );
        let mut child = tokio::process::Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let (mut records, mut counted) = (0u64, 0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => panic!("sensor channel closed"),
                Err(_) => panic!("no exit event for pid {pid}"),
            };
            match ev {
                Event::Connect {
                    pid: p,
                    addr,
                    repeats,
                    ret,
                    ..
                } if p == pid && addr == target => {
                    assert_eq!(ret, 0);
                    records += 1;
                    counted += 1 + u64::from(repeats);
                }
                Event::Exit { pid: p, .. } if p == pid => break,
                _ => {}
            }
        }
        assert!(child.wait().await.unwrap().success());
        drop(listener);
        assert_eq!(counted, 51, "{records} records");
        assert!(records < 10, "{records} records for 51 connects");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senses_exec_open_connect_exit_of_a_child() {
        let (sensor, mut rx) = Sensor::start(&SenseConfig::default()).unwrap();
        let seen = run_workload(&mut rx, true).await;

        let Some(Event::Exec {
            ppid,
            comm,
            at_ms,
            exe,
            ..
        }) = &seen.exec
        else {
            panic!("no exec event for pid {}", seen.child);
        };
        assert_eq!(*ppid, std::process::id(), "the test spawned it");
        // The kernel's names for the image and the root agree with stat's:
        // the agent reuses answers on them without a stat of its own.
        let kernel = crate::scan::kernel_file(exe).expect("the exec names its file");
        assert_eq!(kernel, stat_identity("/usr/bin/python3"), "{exe:?}");
        assert!(comm.starts_with("python3"), "comm {comm:?}");
        // Wall-clock conversion: within a few seconds of now.
        let now_ms = wall_ms();
        assert!(
            (now_ms - at_ms).abs() < 10_000,
            "at_ms {at_ms} vs now {now_ms}"
        );

        let Some(Event::Open { path, fd, file, .. }) = &seen.open else {
            panic!("no libbz2 open for pid {}", seen.child);
        };
        let kernel = crate::scan::kernel_file(file).expect("the open names its file");
        let path_str = String::from_utf8_lossy(path).into_owned();
        assert_eq!(kernel, stat_identity(&path_str), "{file:?}");
        assert!(
            *fd >= 0,
            "open of {:?} gave fd {fd}",
            String::from_utf8_lossy(path)
        );

        let Some(Event::Connect {
            ret,
            protocol,
            comm,
            ..
        }) = &seen.connect
        else {
            panic!("no connect event for pid {}", seen.child);
        };
        assert_eq!(*ret, 0);
        assert_eq!(*protocol, "tcp");
        assert!(comm.starts_with("python3"), "comm {comm:?}");

        let Some(Event::Exit { exit_code, .. }) = &seen.exit else {
            panic!("no exit event for pid {}", seen.child);
        };
        assert_eq!(*exit_code, 0);
        assert_eq!(
            seen.from_self, 0,
            "self_tgid filter let our own events through"
        );

        let stats = sensor.stats();
        assert!(stats.events > 0, "{stats:?}");
        assert_eq!(stats.lost_kernel, 0, "{stats:?}");
        assert_eq!(stats.decode_errors, 0, "{stats:?}");
        eprintln!(
            "sense: spawn -> Exec received {:?}; kernel time -> received {} ms; {stats:?}",
            seen.exec_latency.unwrap(),
            seen.exec_delivery_ms.unwrap()
        );
    }

    /// The exec event's start time is the one /proc/PID/stat reports, so a
    /// process is keyed the same whether it was recorded from the event or
    /// from /proc.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_start_ticks_match_proc_stat() {
        let (_sensor, mut rx) = Sensor::start(&SenseConfig {
            opens: false,
            connects: false,
            ..Default::default()
        })
        .unwrap();
        let mut child = std::process::Command::new("/usr/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
        let proc_ticks = crate::parse::stat::parse_stat(&stat).unwrap().start_ticks;
        let event_ticks = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let Some(Event::Exec {
                    pid: p,
                    start_ticks,
                    ..
                }) = rx.recv().await
                    && p == pid
                {
                    return start_ticks;
                }
            }
        })
        .await
        .expect("exec event");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(event_ticks, proc_ticks);
    }

    /// Every event of `pid` until its exit (or 5 s).
    async fn events_of(rx: &mut mpsc::Receiver<Event>, pid: u32) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if ev.pid() == pid {
                let exit = matches!(ev, Event::Exit { .. });
                out.push(ev);
                if exit {
                    break;
                }
            }
        }
        out
    }

    /// The exec event carries argv as /proc/PID/cmdline would, and says when
    /// it cut a long one at its bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_event_carries_argv_and_says_when_it_was_cut() {
        let (_sensor, mut rx) = Sensor::start(&SenseConfig {
            opens: false,
            connects: false,
            ..Default::default()
        })
        .unwrap();
        let long = "x".repeat(3000);
        for (args, want, cut) in [
            (
                vec!["a b", "--c=d"],
                b"/usr/bin/true\0a b\0--c=d\0".to_vec(),
                false,
            ),
            (vec![long.as_str()], Vec::new(), true),
        ] {
            let mut child = std::process::Command::new("/usr/bin/true")
                .args(&args)
                .spawn()
                .unwrap();
            let pid = child.id();
            child.wait().unwrap();
            let events = events_of(&mut rx, pid).await;
            let Some(Event::Exec {
                args,
                args_truncated,
                ..
            }) = events.iter().find(|e| matches!(e, Event::Exec { .. }))
            else {
                panic!("no exec event for {pid}: {events:?}");
            };
            assert_eq!(*args_truncated, cut);
            if cut {
                assert_eq!(args.len(), patchgap_ebpf::ARGS_LEN);
                assert!(args.starts_with(b"/usr/bin/true\0xxxx"));
            } else {
                assert_eq!(*args, want);
            }
        }
    }

    /// A library that is only read gives an open and no mapping; one that
    /// is loaded (dlopen: open, then an executable mmap of the descriptor)
    /// gives a Map event for the descriptor the open returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loaded_library_is_mapped_a_read_one_is_not() {
        const LIB: &str = "/usr/lib/x86_64-linux-gnu/libbz2.so.1.0";
        let (_sensor, mut rx) = Sensor::start(&SenseConfig {
            connects: false,
            ..Default::default()
        })
        .unwrap();
        for (script, loads) in [
            (format!("open('{LIB}', 'rb').read()"), false),
            (format!("import ctypes; ctypes.CDLL('{LIB}')"), true),
        ] {
            let mut child = std::process::Command::new("/usr/bin/python3")
                .args(["-c", &script])
                .spawn()
                .unwrap();
            let pid = child.id();
            child.wait().unwrap();
            let events = events_of(&mut rx, pid).await;
            // The Map must follow this open, before the descriptor's next
            // open (ld.so reuses descriptor 3 for every library).
            let at = events
                .iter()
                .position(|e| matches!(e, Event::Open { path, .. } if contains(path, b"libbz2.so")))
                .unwrap_or_else(|| panic!("no open of {LIB}: {events:?}"));
            let Event::Open { fd, .. } = events[at] else {
                unreachable!()
            };
            let mapped = events[at + 1..]
                .iter()
                .take_while(|e| !matches!(e, Event::Open { fd: f, .. } if *f == fd))
                .any(|e| matches!(e, Event::Map { fd: f, .. } if *f == fd));
            assert_eq!(mapped, loads, "{script}: {events:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opens_off_means_no_open_events() {
        let config = SenseConfig {
            opens: false,
            ..SenseConfig::default()
        };
        let (_sensor, mut rx) = Sensor::start(&config).unwrap();
        let seen = run_workload(&mut rx, false).await;
        // Exit is the child's last event: with it in, every open would be too.
        assert!(seen.exit.is_some(), "no exit event for pid {}", seen.child);
        assert!(seen.exec.is_some() && seen.connect.is_some());
        assert_eq!(seen.opens_of_child, 0);
    }

    /// A full scan reuses a process's cgroups only while the kernel counts
    /// no change: a sleeping process moved to another cgroup (it does not
    /// run, so nothing else of it changes) shows up there in the next
    /// scan, and the one after reuses that again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_process_moved_to_another_cgroup_is_seen_there() {
        let (sensor, _rx) = Sensor::start(&SenseConfig::default()).unwrap();
        let mountinfo = std::fs::read("/proc/self/mountinfo").unwrap();
        let root = crate::contain::cgroup2_mount(&mountinfo).expect("a cgroup2 mount");
        let dir = root.join(format!("patchgap-move-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        struct Cleanup(std::path::PathBuf, std::process::Child);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = self.1.kill();
                let _ = self.1.wait();
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let guard = Cleanup(dir.clone(), child);
        let mut scanner = crate::scan::Scanner::new(crate::scan::ScanConfig::default());
        let scan = |scanner: &mut crate::scan::Scanner| {
            scanner.cgroup_changes_before_scan(sensor.cgroup_changes());
            let inv = scanner.scan();
            let p = inv
                .processes
                .iter()
                .find(|p| p.key.pid == pid)
                .expect("the sleeper")
                .cgroup
                .clone();
            (p, inv.stats.cgroups_reused)
        };
        let (before, _) = scan(&mut scanner);
        // Other tests move processes too: retry until two scans in a row
        // saw no change (then the second reused the cgroups).
        let mut reused = 0;
        for _ in 0..20 {
            let (_, n) = scan(&mut scanner);
            reused = n;
            if n > 0 {
                break;
            }
        }
        assert!(reused > 0, "no scan reused a cgroup");
        let counted = sensor.cgroup_changes().unwrap();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        assert!(
            sensor.cgroup_changes().unwrap().1 > counted.1,
            "the move is counted"
        );
        let (after, _) = scan(&mut scanner);
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            after.contains(name) && !before.contains(name),
            "{before} -> {after}"
        );
        drop(guard);
    }

    /// This process's cgroup v2 id: the inode of its directory.
    fn own_cgroup_id() -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mountinfo = std::fs::read("/proc/self/mountinfo").unwrap();
        let root = crate::contain::cgroup2_mount(&mountinfo).expect("a cgroup2 mount");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        std::fs::metadata(root.join(rel.trim_start_matches('/')))
            .unwrap()
            .ino()
    }

    /// The DNS events from `server` that arrive within a second (the
    /// program sees the whole host: other tests' answers and the host's
    /// own lookups arrive too).
    async fn dns_events(rx: &mut mpsc::Receiver<Event>, from: std::net::IpAddr) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if matches!(ev, Event::Dns { server: Some(s), .. } if s == from) {
                out.push(ev);
            }
        }
        out
    }

    /// Binds port 53 on a loopback address of its own (127.0.0.0/8 is all
    /// loopback), so parallel tests and a resolver on 127.0.0.53 never
    /// collide with it.
    fn port53_addr(salt: u8) -> std::net::Ipv4Addr {
        let pid = std::process::id();
        std::net::Ipv4Addr::new(127, 53, (pid >> 8) as u8, (pid as u8) ^ salt)
    }

    /// Packets from port 53 reach the ring with the receiving socket's
    /// cgroup, the server and the payload, over UDP (IPv4 and IPv6) and
    /// TCP (after the handshake, which carries no payload); longer than
    /// 512 bytes is cut and says so; a packet from another port is not
    /// copied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dns_answers_reach_the_ring_with_the_receiving_cgroup() {
        let (sensor, mut rx) = Sensor::start(&SenseConfig {
            opens: false,
            connects: false,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(sensor.dns_off(), None);
        let cgroup = own_cgroup_id();
        let answer: Vec<u8> = (0..100u8).collect();

        // UDP, IPv4: 100 bytes, then 600 (cut), then from port 5353.
        let server_ip = port53_addr(0);
        let server = std::net::UdpSocket::bind((server_ip, 53)).unwrap();
        let other = std::net::UdpSocket::bind((server_ip, 5353)).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        server.send_to(&answer, to).unwrap();
        server.send_to(&[7u8; 600], to).unwrap();
        other.send_to(&answer, to).unwrap();
        let mut buf = [0u8; 1024];
        for _ in 0..3 {
            client.recv(&mut buf).unwrap();
        }
        let got = dns_events(&mut rx, server_ip.into()).await;
        assert_eq!(
            got.len(),
            2,
            "two answers from port 53, none from 5353: {got:?}"
        );
        match &got[0] {
            Event::Dns {
                cgroup_id,
                server,
                tcp,
                payload,
                truncated,
                ..
            } => {
                assert_eq!(*cgroup_id, cgroup);
                assert_eq!(*server, Some(server_ip.into()));
                assert!(!tcp && !truncated);
                assert_eq!(payload, &answer);
            }
            other => panic!("{other:?}"),
        }
        match &got[1] {
            Event::Dns {
                payload, truncated, ..
            } => {
                assert_eq!(payload.len(), patchgap_ebpf::DNS_LEN);
                assert!(truncated);
            }
            other => panic!("{other:?}"),
        }

        // TCP: the handshake's SYN-ACK from port 53 has no payload; the
        // length-prefixed message does.
        let tcp_ip = port53_addr(1);
        let listener = std::net::TcpListener::bind((tcp_ip, 53)).unwrap();
        let mut stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        std::io::Write::write_all(&mut accepted, &framed).unwrap();
        let mut back = vec![0u8; framed.len()];
        std::io::Read::read_exact(&mut stream, &mut back).unwrap();
        let got = dns_events(&mut rx, tcp_ip.into()).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(&got[0], Event::Dns { tcp: true, payload, cgroup_id, .. } if *payload == framed && *cgroup_id == cgroup)
        );

        // UDP, IPv6 (::1 is the only IPv6 loopback address: skipped when
        // something else holds its port 53).
        match std::net::UdpSocket::bind("[::1]:53") {
            Ok(server6) => {
                let client6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
                server6
                    .send_to(&answer, client6.local_addr().unwrap())
                    .unwrap();
                client6.recv(&mut buf).unwrap();
                let got = dns_events(&mut rx, std::net::Ipv6Addr::LOCALHOST.into()).await;
                assert!(
                    matches!(&got[..], [Event::Dns { server: Some(s), payload, .. }] if s.is_ipv6() && *payload == answer),
                    "{got:?}"
                );
            }
            Err(e) => eprintln!("IPv6 part skipped: [::1]:53 is taken ({e})"),
        }
    }

    /// With `dns` off nothing is attached and the sensor says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dns_off_copies_nothing() {
        let (sensor, mut rx) = Sensor::start(&SenseConfig {
            opens: false,
            connects: false,
            dns: false,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(sensor.dns_off(), Some("off (--no-dns)"));
        let server_ip = port53_addr(2);
        let server = std::net::UdpSocket::bind((server_ip, 53)).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .send_to(b"answer", client.local_addr().unwrap())
            .unwrap();
        client.recv(&mut [0u8; 16]).unwrap();
        assert!(dns_events(&mut rx, server_ip.into()).await.is_empty());
    }

    /// The watchdog's shedding detaches opens (level 1), then connects
    /// (level 2), in the kernel; going back attaches them again. Exec and
    /// exit stay throughout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shedding_detaches_opens_then_connects_and_restores_them() {
        let (mut sensor, mut rx) = Sensor::start(&SenseConfig::default()).unwrap();
        let all = sensor.links.len();
        sensor.shed(1);
        assert_eq!(sensor.shed_level(), 1);
        let seen = run_workload(&mut rx, false).await;
        assert!(
            seen.exec.is_some() && seen.exit.is_some(),
            "child {}",
            seen.child
        );
        assert!(seen.connect.is_some(), "connects stay at level 1");
        assert_eq!(seen.opens_of_child, 0, "opens are shed");
        sensor.shed(2);
        let seen = run_workload(&mut rx, false).await;
        assert!(seen.exec.is_some() && seen.exit.is_some());
        assert!(seen.connect.is_none() && seen.opens_of_child == 0);
        sensor.shed(0);
        assert_eq!(sensor.links.len(), all, "every program attached again");
        let seen = run_workload(&mut rx, false).await;
        assert!(
            seen.connect.is_some() && seen.opens_of_child > 0,
            "{}",
            seen.opens_of_child
        );
    }

    #[test]
    fn reasons_are_short_and_lower_case() {
        let errors = [
            SenseError::NotRoot,
            SenseError::NoBtf,
            SenseError::NoRuntime,
            SenseError::RingSize(12345),
            SenseError::Tracefs(io::Error::from_raw_os_error(libc::EPERM)),
            SenseError::Load(EbpfError::NoBTF),
            SenseError::MissingProgram("pg_exec"),
            // (aya does not re-export VerifierLog, so a LoadError cannot be
            // built here; the syscall variant goes through the same path.)
            SenseError::ProgramLoad {
                program: "pg_exec",
                source: ProgramError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_prog_load",
                    io_error: io::Error::from_raw_os_error(libc::EACCES),
                }),
            },
            SenseError::Attach {
                program: "pg_open_enter",
                source: ProgramError::AlreadyAttached,
            },
            SenseError::Map {
                map: "events",
                source: None,
            },
            SenseError::Poll(io::Error::from_raw_os_error(libc::EBADF)),
        ];
        for e in &errors {
            let r = e.reason();
            assert!(!r.is_empty() && r.len() <= 80, "{r:?}");
            assert_eq!(r, r.to_lowercase(), "{r:?}");
            assert!(!r.contains("os error") && !r.contains('\n'), "{r:?}");
        }
        assert_eq!(SenseError::NotRoot.reason(), "not root");
        assert_eq!(SenseError::NoBtf.reason(), "no btf");
        assert_eq!(
            errors[7].reason(),
            "pg_exec rejected: bpf_prog_load: permission denied"
        );
    }

    /// A record's bytes as the kernel writes them.
    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: the patchgap-ebpf structs are #[repr(C)] with every pad a
        // named field (their layout test checks it against the object's
        // BTF), so all size_of::<T>() bytes are initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32, comm: &[u8]) -> patchgap_ebpf::EventHeader {
        let mut c = [0u8; patchgap_ebpf::COMM_LEN];
        c[..comm.len()].copy_from_slice(comm);
        patchgap_ebpf::EventHeader {
            kind,
            pid: 4242,
            tid: 4243,
            ppid: 1,
            ts_ns: 5_000_000,
            cgroup_id: 77,
            uid: 1000,
            _pad0: 0,
            comm: c,
            // 12.34 s after boot: 1234 ticks at USER_HZ 100.
            start_ns: 12_340_000_000,
        }
    }

    #[test]
    fn decodes_records_into_owned_events() {
        use patchgap_ebpf as k;
        let clock = Clock {
            offset_ns: 1_700_000_000_000_000_000,
        };
        // filename_len wins over a later NUL; a full 16-byte comm has no NUL.
        let mut filename = [0u8; k::PATH_LEN];
        filename[..20].copy_from_slice(b"/usr/bin/python3\0xyz");
        let mut args = [0u8; k::ARGS_LEN];
        args[..13].copy_from_slice(b"python3\0-c\0x\0");
        let exec = k::ExecEvent {
            h: header(k::EVENT_EXEC, b"0123456789abcdef"),
            exe: k::FileIdentity {
                ino: 99,
                ..Default::default()
            },
            filename_len: 8,
            args_len: 13,
            args_total: 4000,
            _pad0: 0,
            filename,
            args,
        };
        assert_eq!(
            decode(&bytes_of(&exec), &clock),
            Some(Event::Exec {
                pid: 4242,
                ppid: 1,
                uid: 1000,
                cgroup_id: 77,
                comm: "0123456789abcdef".into(),
                filename: b"/usr/bin".to_vec(),
                args: b"python3\0-c\0x\0".to_vec(),
                args_truncated: true,
                start_ticks: 12_340_000_000 / (1_000_000_000 / clk_tck()),
                exe: k::FileIdentity {
                    ino: 99,
                    ..Default::default()
                },
                at_ms: 1_700_000_000_005,
            })
        );

        let mut connect = k::ConnectEvent {
            h: header(k::EVENT_CONNECT, b"curl"),
            family: libc::AF_INET6 as u16,
            port: 53,
            sock_type: libc::SOCK_DGRAM as u16,
            _pad0: 0,
            ret: -115,
            repeats: 0,
            addr: std::net::Ipv6Addr::LOCALHOST.octets(),
        };
        let Some(Event::Connect {
            addr,
            protocol,
            ret,
            comm,
            ..
        }) = decode(&bytes_of(&connect), &clock)
        else {
            panic!("connect did not decode");
        };
        assert_eq!(addr, "[::1]:53".parse().unwrap());
        assert_eq!((protocol, ret, comm.as_str()), ("udp6", -115, "curl"));
        // A family the programs never emit is a decode error, not a bogus
        // address.
        connect.family = libc::AF_UNIX as u16;
        assert_eq!(decode(&bytes_of(&connect), &clock), None);

        // Short records and unknown kinds do not decode.
        let exit = k::ExitEvent {
            h: header(k::EVENT_EXIT, b"sh"),
            exit_code: 256,
            _pad0: 0,
        };
        let bytes = bytes_of(&exit);
        assert!(matches!(
            decode(&bytes, &clock),
            Some(Event::Exit { exit_code: 256, .. })
        ));
        assert_eq!(decode(&bytes[..bytes.len() - 1], &clock), None);
        assert_eq!(decode(&bytes_of(&header(99, b"x")), &clock), None);
    }

    #[test]
    fn protocols_from_family_and_socket_type() {
        let af4 = libc::AF_INET as u16;
        let af6 = libc::AF_INET6 as u16;
        assert_eq!(protocol(af4, 1), "tcp");
        assert_eq!(protocol(af4, 2), "udp");
        assert_eq!(protocol(af6, 1), "tcp6");
        assert_eq!(protocol(af6, 2), "udp6");
        // Unknown (the BPF side could not read the socket) or SOCK_RAW.
        assert_eq!(protocol(af4, 0), "");
        assert_eq!(protocol(af6, 3), "");
    }

    #[test]
    fn boot_ns_to_wall_ms() {
        let c = Clock {
            offset_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(c.to_ms(5_000_000), 1_700_000_000_005);
        // A fresh clock puts "now" in boottime at about now in realtime.
        let c = Clock::now();
        let boot = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        let wall = clock_ns(libc::CLOCK_REALTIME) / 1_000_000;
        assert!((c.to_ms(boot) - wall).abs() <= 1);
    }

    #[tokio::test]
    async fn bad_ring_size_is_refused() {
        let config = SenseConfig {
            ring_bytes: 3 << 20,
            ..SenseConfig::default()
        };
        assert!(matches!(
            Sensor::start(&config),
            Err(SenseError::RingSize(_))
        ));
    }
}
