//! The kernel side of patchgap: the compiled eBPF objects, the records the
//! sensing programs write, and the maps the isolation programs share with the
//! agent.
//!
//! The C sources are in `ebpf/bpf/`: `patchgap.bpf.c` (live sensing, CO-RE,
//! on tracepoints) and `contain.bpf.c` (host isolation, on cgroup hooks).
//! `ebpf/build.sh` compiles them into `ebpf/obj/patchgap.bpf.o` and
//! `ebpf/obj/contain.bpf.o`, which are checked in, so building this crate
//! needs no clang. [`OBJECT`] and [`CONTAIN_OBJECT`] embed them for the
//! agent's aya loader.
//!
//! Every record in the `events` ring buffer starts with an [`EventHeader`]
//! whose `kind` says which struct it is. The structs here are `#[repr(C)]`
//! mirrors of `ebpf/bpf/events.h`, the one definition; the layout test
//! (`tests/layout.rs`) reads the C layouts from the object's BTF and fails if
//! a size or a field offset differs. [`decode`] turns a record into an
//! [`Event`] by copying it out (`ptr::read_unaligned`), so it accepts any
//! byte slice, aligned or not.

/// A byte buffer with 8-byte alignment, so that [`OBJECT`] starts on an 8-byte
/// boundary as aya's ELF parser wants.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

const ALIGNED_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("../obj/patchgap.bpf.o"));

/// The compiled eBPF object (ELF, BTF included), 8-byte aligned. Pass it to
/// `aya::EbpfLoader::load`.
pub const OBJECT: &[u8] = &ALIGNED_OBJECT.0;

const ALIGNED_CONTAIN_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("../obj/contain.bpf.o"));

/// The compiled isolation object (`contain.bpf.c`), 8-byte aligned. The agent
/// loads one instance per isolated cgroup (`aya::EbpfLoader::load`), so each
/// has its own maps. See [`contain`] for its names and map layouts.
pub const CONTAIN_OBJECT: &[u8] = &ALIGNED_CONTAIN_OBJECT.0;

/// Names and map layouts of [`CONTAIN_OBJECT`]; the structs are `#[repr(C)]`
/// mirrors of `ebpf/bpf/contain.h`, checked against the object's BTF by
/// `tests/layout.rs`.
pub mod contain {
    /// `cgroup_skb/egress`: drops (enforce) or counts (shadow) IPv4/IPv6
    /// packets to destinations that are not allowed.
    pub const PROG_EGRESS: &str = "pg_ct_egress";
    /// `cgroup/connect4`: fails (EPERM) or counts connects of AF_INET sockets
    /// to destinations that are not allowed.
    pub const PROG_CONNECT4: &str = "pg_ct_connect4";
    /// `cgroup/connect6`: the same for AF_INET6 sockets (v4-mapped
    /// destinations are checked against the IPv4 list).
    pub const PROG_CONNECT6: &str = "pg_ct_connect6";
    /// Every program, in attach order. The connect hooks come first: they
    /// give the workload an immediate EPERM, the egress hook then cuts what
    /// was already open.
    pub const PROGRAMS: &[&str] = &[PROG_CONNECT4, PROG_CONNECT6, PROG_EGRESS];

    /// LPM trie of allowed IPv4 prefixes: key [`V4Key`], value `u8` (1).
    /// 127.0.0.0/8 is allowed by the programs whatever the trie holds.
    pub const MAP_ALLOW4: &str = "ct_allow4";
    /// LPM trie of allowed IPv6 prefixes: key [`V6Key`], value `u8` (1). ::1
    /// is allowed by the programs whatever the trie holds.
    pub const MAP_ALLOW6: &str = "ct_allow6";
    /// Array of one [`Config`].
    pub const MAP_CONFIG: &str = "ct_config";
    /// Array of one [`Counters`].
    pub const MAP_COUNTERS: &str = "ct_counters";
    /// Array of one [`Spec`]: the executor's JSON record of what it applied.
    pub const MAP_SPEC: &str = "ct_spec";
    /// Every map, as the executor pins them.
    pub const MAPS: &[&str] = &[MAP_ALLOW4, MAP_ALLOW6, MAP_CONFIG, MAP_COUNTERS, MAP_SPEC];

    /// Entries of each allow-list trie (`PG_CONTAIN_ALLOW_MAX`).
    pub const ALLOW_MAX: usize = 1024;
    /// Bytes of [`Spec::json`] (`PG_CONTAIN_SPEC_BYTES`).
    pub const SPEC_BYTES: usize = 4096;

    /// [`Config::mode`]: count what would be blocked, block nothing.
    pub const MODE_SHADOW: u32 = 1;
    /// [`Config::mode`]: block and count. Any value other than
    /// [`MODE_SHADOW`] blocks, so an unset config fails closed.
    pub const MODE_ENFORCE: u32 = 2;

    /// `struct pg_contain_config`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Config {
        /// [`MODE_SHADOW`] or [`MODE_ENFORCE`].
        pub mode: u32,
        pub _pad0: u32,
    }

    /// `struct pg_contain_counters`. Times are CLOCK_BOOTTIME ns, 0 until the
    /// first event of their kind.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Counters {
        /// Connects failed with EPERM (enforce).
        pub blocked_connects: u64,
        /// Packets dropped (enforce).
        pub blocked_packets: u64,
        /// Connects that enforce would have failed (shadow).
        pub would_block_connects: u64,
        /// Packets that enforce would have dropped (shadow).
        pub would_block_packets: u64,
        /// When the first connect or packet was blocked.
        pub first_block_ns: u64,
        /// When the first connect or packet would have been blocked.
        pub first_would_block_ns: u64,
    }

    /// `struct pg_contain_v4_key`: an LPM trie key.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct V4Key {
        /// Prefix length in bits, 0..=32.
        pub prefixlen: u32,
        /// The address, network order.
        pub addr: [u8; 4],
    }

    /// `struct pg_contain_v6_key`: an LPM trie key.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct V6Key {
        /// Prefix length in bits, 0..=128.
        pub prefixlen: u32,
        /// The address, network order.
        pub addr: [u8; 16],
    }

    /// `struct pg_contain_spec`: JSON, NUL-padded.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Spec {
        pub json: [u8; SPEC_BYTES],
    }
}

/// Bytes of `comm` in every header (`PG_COMM_LEN`, the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of a path buffer (`PG_PATH_LEN`): paths are cut at `PATH_LEN - 1`
/// bytes.
pub const PATH_LEN: usize = 256;
/// Bytes of argv an exec record carries (`PG_ARGS_LEN`); longer command
/// lines are cut, and [`ExecEvent::args_truncated`] says so.
pub const ARGS_LEN: usize = 1024;

/// `kind` of an [`ExecEvent`].
pub const EVENT_EXEC: u32 = 1;
/// `kind` of an [`ExitEvent`].
pub const EVENT_EXIT: u32 = 2;
/// `kind` of a [`ConnectEvent`].
pub const EVENT_CONNECT: u32 = 3;
/// `kind` of an [`OpenEvent`].
pub const EVENT_OPEN: u32 = 4;
/// `kind` of a [`MapEvent`].
pub const EVENT_MAP: u32 = 5;
/// `kind` of a [`DnsEvent`].
pub const EVENT_DNS: u32 = 6;
/// Bytes of a DNS message a [`DnsEvent`] carries (`PG_DNS_LEN`); longer
/// ones are cut, and [`DnsEvent::truncated`] says so.
pub const DNS_LEN: usize = 512;

/// Program on `sched/sched_process_exec`: one [`ExecEvent`] per successful exec.
pub const PROG_EXEC: &str = "pg_exec";
/// Program on `sched/sched_process_exit`: one [`ExitEvent`] per process (the
/// last thread of the group).
pub const PROG_EXIT: &str = "pg_exit";
/// Program on `syscalls/sys_enter_connect`: keeps the destination per thread.
pub const PROG_CONNECT_ENTER: &str = "pg_connect_enter";
/// Program on `syscalls/sys_exit_connect`: emits the [`ConnectEvent`].
pub const PROG_CONNECT_EXIT: &str = "pg_connect_exit";
/// Program on `syscalls/sys_enter_openat`: keeps library-like paths per thread.
pub const PROG_OPEN_ENTER: &str = "pg_open_enter";
/// Program on `syscalls/sys_exit_openat`: emits the [`OpenEvent`] on success.
pub const PROG_OPEN_EXIT: &str = "pg_open_exit";
/// Program on `syscalls/sys_enter_openat2`: as [`PROG_OPEN_ENTER`].
pub const PROG_OPEN2_ENTER: &str = "pg_open2_enter";
/// Program on `syscalls/sys_exit_openat2`: as [`PROG_OPEN_EXIT`].
pub const PROG_OPEN2_EXIT: &str = "pg_open2_exit";
/// Program on `syscalls/sys_enter_mmap`: emits a [`MapEvent`] when a
/// descriptor an [`OpenEvent`] reported is mapped executable.
pub const PROG_MAP_ENTER: &str = "pg_map_enter";

/// Program on `cgroup_skb/ingress`, attached to the root of the cgroup v2
/// hierarchy (not a tracepoint, so not in [`PROGRAMS`]): emits a
/// [`DnsEvent`] for every packet from source port 53 with a payload that a
/// socket on the host receives, and returns after a few loads for every
/// other packet.
pub const PROG_DNS: &str = "pg_dns";

/// Program that counts changes to processes' cgroup membership in
/// [`MAP_CGROUP_CHANGES`]. Its section names `cgroup/cgroup_attach_task`;
/// a loader attaches it to every tracepoint of [`CGROUP_CHANGE_TRACEPOINTS`]
/// (so it is not in [`PROGRAMS`]). It reads no record, so any layout fits.
pub const PROG_CGROUP_CHANGE: &str = "pg_cgroup_change";

/// The `cgroup` tracepoints after which a process's `/proc/PID/cgroup`
/// can read differently without the process being new: a migration, a v1
/// cpuset transfer, a rename, a v1 hierarchy mounted or destroyed.
pub const CGROUP_CHANGE_TRACEPOINTS: &[&str] = &[
    "cgroup_attach_task",
    "cgroup_transfer_tasks",
    "cgroup_rename",
    "cgroup_setup_root",
    "cgroup_destroy_root",
];

/// The ring buffer of records (`BPF_MAP_TYPE_RINGBUF`). Its size in the object
/// is [`EVENTS_DEFAULT_BYTES`]; a loader may set another power of two that is a
/// multiple of the page size (aya: `EbpfLoader::map_max_entries`).
pub const MAP_EVENTS: &str = "events";
/// Records dropped because the ring buffer was full: `BPF_MAP_TYPE_PERCPU_ARRAY`,
/// one `u64` per CPU at key 0. Sum over CPUs.
pub const MAP_LOST: &str = "lost";
/// Changes to cgroup membership since the programs were loaded:
/// `BPF_MAP_TYPE_ARRAY`, one `u64` at key 0.
pub const MAP_CGROUP_CHANGES: &str = "cgroup_changes";
/// connect(2) calls in flight, by thread id (internal).
pub const MAP_CONNECT_START: &str = "connect_start";
/// Library-like opens in flight, by thread id (internal).
pub const MAP_OPEN_START: &str = "open_start";
/// Per-CPU scratch buffer for the path being filtered (internal).
pub const MAP_OPEN_SCRATCH: &str = "open_scratch";
/// Descriptors recorded opens returned, with their file (internal, LRU).
pub const MAP_LIB_FDS: &str = "lib_fds";
/// Default size of [`MAP_EVENTS`] in the object: 16 MiB.
pub const EVENTS_DEFAULT_BYTES: u32 = 16 << 20;

/// `u32` load-time global (`.rodata`; aya: `EbpfLoader::override_global`):
/// records of this thread group id are dropped. 0 (the default) drops none.
pub const GLOBAL_SELF_TGID: &str = "self_tgid";
/// `u32` load-time global: 1 (the default) records library-like opens, 0 not.
pub const GLOBAL_ENABLE_OPENS: &str = "enable_opens";
/// `u32` load-time global: 1 (the default) records connects, 0 not.
pub const GLOBAL_ENABLE_CONNECTS: &str = "enable_connects";

/// What a program senses, for loaders that attach only what is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Exec and exit: always wanted.
    Process,
    /// Connects (with [`GLOBAL_ENABLE_CONNECTS`]).
    Connects,
    /// Library-like opens (with [`GLOBAL_ENABLE_OPENS`]).
    Opens,
}

/// One program of [`OBJECT`] and the tracepoint it attaches to
/// (`tracepoint/<category>/<tracepoint>` is its ELF section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The program's (function symbol's) name.
    pub name: &'static str,
    /// Tracepoint category: `sched` or `syscalls`.
    pub category: &'static str,
    /// Tracepoint name within the category.
    pub tracepoint: &'static str,
    /// What it senses.
    pub feature: Feature,
}

/// Every program in [`OBJECT`], in a safe attach order: within each
/// enter/exit pair the exit half comes first, so no enter half stashes state
/// for a syscall whose exit nobody sees yet.
pub const PROGRAMS: &[Program] = &[
    Program {
        name: PROG_EXEC,
        category: "sched",
        tracepoint: "sched_process_exec",
        feature: Feature::Process,
    },
    Program {
        name: PROG_EXIT,
        category: "sched",
        tracepoint: "sched_process_exit",
        feature: Feature::Process,
    },
    Program {
        name: PROG_CONNECT_EXIT,
        category: "syscalls",
        tracepoint: "sys_exit_connect",
        feature: Feature::Connects,
    },
    Program {
        name: PROG_CONNECT_ENTER,
        category: "syscalls",
        tracepoint: "sys_enter_connect",
        feature: Feature::Connects,
    },
    Program {
        name: PROG_OPEN_EXIT,
        category: "syscalls",
        tracepoint: "sys_exit_openat",
        feature: Feature::Opens,
    },
    Program {
        name: PROG_OPEN_ENTER,
        category: "syscalls",
        tracepoint: "sys_enter_openat",
        feature: Feature::Opens,
    },
    Program {
        name: PROG_OPEN2_EXIT,
        category: "syscalls",
        tracepoint: "sys_exit_openat2",
        feature: Feature::Opens,
    },
    Program {
        name: PROG_OPEN2_ENTER,
        category: "syscalls",
        tracepoint: "sys_enter_openat2",
        feature: Feature::Opens,
    },
    Program {
        name: PROG_MAP_ENTER,
        category: "syscalls",
        tracepoint: "sys_enter_mmap",
        feature: Feature::Opens,
    },
];

/// `struct pg_event_header`: first in every record.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `EVENT_*` constants.
    pub kind: u32,
    /// Thread group id (the "pid" of ps), in the initial pid namespace.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `real_parent->tgid`.
    pub ppid: u32,
    /// CLOCK_BOOTTIME in nanoseconds (`bpf_ktime_get_boot_ns`).
    pub ts_ns: u64,
    /// `bpf_get_current_cgroup_id()`: the inode number of the task's cgroup v2
    /// directory.
    pub cgroup_id: u64,
    /// Real uid, in the initial user namespace.
    pub uid: u32,
    pub _pad0: u32,
    /// The task's comm, NUL-terminated unless 16 bytes long.
    pub comm: [u8; COMM_LEN],
    /// `group_leader->start_boottime`: the process's start in ns since boot
    /// (/proc/PID/stat's starttime is this in clock ticks). With the pid,
    /// the process's key.
    pub start_ns: u64,
}

/// `struct pg_file_id`: a file as the kernel names it. All zero when the
/// program could not read it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileIdentity {
    /// The inode number.
    pub ino: u64,
    /// The inode's change time: seconds and nanoseconds.
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    /// The superblock's device in the kernel's encoding (`major << 20 |
    /// minor`), not stat's: see [`FileIdentity::st_dev`].
    pub dev: u32,
    /// The root directory of the task that reached the file (its inode,
    /// and its device in the kernel's encoding): the root its paths are in.
    pub root_ino: u64,
    pub root_dev: u32,
    pub _pad0: u32,
}

impl FileIdentity {
    /// Some when the kernel gave one (an inode number is never 0).
    pub fn known(&self) -> Option<&FileIdentity> {
        (self.ino != 0).then_some(self)
    }

    /// The device as `stat` reports it (`st_dev`, glibc's `makedev` of the
    /// kernel's major and minor).
    pub fn st_dev(&self) -> u64 {
        st_dev(self.dev)
    }

    /// The root directory's device as `stat` reports it; 0 when unread.
    pub fn root_st_dev(&self) -> u64 {
        st_dev(self.root_dev)
    }

    /// The change time in ns since the epoch, as stat's `st_ctime` and
    /// `st_ctime_nsec` make it.
    pub fn ctime_ns(&self) -> i128 {
        i128::from(self.ctime_sec) * 1_000_000_000 + i128::from(self.ctime_nsec)
    }
}

/// A kernel `dev_t` (`major << 20 | minor`) as stat's `st_dev`: glibc's
/// `makedev` of the same major and minor.
fn st_dev(dev: u32) -> u64 {
    let (major, minor) = (u64::from(dev >> 20), u64::from(dev & 0xf_ffff));
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

/// `struct pg_exec_event`: a successful execve/execveat.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecEvent {
    pub h: EventHeader,
    /// `mm->exe_file` of the new image: the file that runs (for a script,
    /// its interpreter, not `filename`).
    pub exe: FileIdentity,
    /// Bytes of `filename` used, without the NUL.
    pub filename_len: u32,
    /// Bytes of `args` used.
    pub args_len: u32,
    /// Bytes of argv in the process (`arg_end - arg_start`): more than
    /// `args_len` when it was cut.
    pub args_total: u32,
    pub _pad0: u32,
    /// The path as passed to exec (maybe relative, or /dev/fd/N).
    pub filename: [u8; PATH_LEN],
    /// argv as NUL-separated strings, what /proc/PID/cmdline gives.
    pub args: [u8; ARGS_LEN],
}

/// `struct pg_exit_event`: the last thread of a process exited.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitEvent {
    pub h: EventHeader,
    /// `task->exit_code`, a wait(2) status: `(status << 8) | signal`.
    pub exit_code: i32,
    pub _pad0: u32,
}

/// `struct pg_connect_event`: a connect(2) to an IPv4 or IPv6 address returned.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectEvent {
    pub h: EventHeader,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// The socket's type: SOCK_STREAM (1), SOCK_DGRAM (2), ...; 0 if unknown.
    pub sock_type: u16,
    pub _pad0: u16,
    /// connect(2)'s result: 0 or -errno (-EINPROGRESS for non-blocking TCP).
    pub ret: i32,
    /// Connects of this process to this destination, with this result,
    /// counted in the kernel and not sent since the previous record: this
    /// record stands for `1 + repeats`.
    pub repeats: u32,
    /// Destination address, network order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// `struct pg_open_event`: a successful openat/openat2 of a library-like path.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenEvent {
    pub h: EventHeader,
    /// The new file descriptor (only successful opens are recorded).
    pub ret: i32,
    /// Open flags (O_RDONLY, O_CLOEXEC, ...).
    pub flags: u32,
    /// Bytes of `path` used, without the NUL.
    pub path_len: u32,
    pub _pad0: u32,
    /// The file the new descriptor names.
    pub file: FileIdentity,
    /// The path as passed to open (maybe relative to the caller's cwd or dirfd).
    pub path: [u8; PATH_LEN],
}

/// `struct pg_map_event`: a descriptor an [`OpenEvent`] of this process
/// returned was mapped with PROT_EXEC while it still named that file.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEvent {
    pub h: EventHeader,
    /// The descriptor (the `ret` of the open).
    pub fd: i32,
    /// mmap's prot (PROT_EXEC always set).
    pub prot: u32,
    /// The file the descriptor names: the one mapped.
    pub file: FileIdentity,
}

/// `struct pg_dns_event`: a packet from source port 53 delivered to a
/// socket on this host (a DNS answer). It was seen in the receiving path,
/// not in the asking process: the header carries `kind`, `ts_ns`,
/// `cgroup_id` (the receiving socket's cgroup v2) and `uid` (the socket's
/// owner); pid, tid, ppid, comm and start_ns are 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsEvent {
    pub h: EventHeader,
    /// The packet's family: AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// IPPROTO_UDP (17) or IPPROTO_TCP (6).
    pub proto: u16,
    /// Bytes of `payload` used.
    pub payload_len: u32,
    /// The transport payload's length in the packet: more than
    /// `payload_len` when it was cut at [`DNS_LEN`].
    pub payload_total: u32,
    pub _pad0: u32,
    /// The answering server's address, network order; IPv4 in the first 4
    /// bytes.
    pub saddr: [u8; 16],
    /// The UDP payload (a DNS message), or a TCP segment's payload (a
    /// 2-byte length, then the message, when the segment starts one).
    pub payload: [u8; DNS_LEN],
}

/// `buf` up to `len` bytes and before the first NUL.
fn c_prefix(buf: &[u8], len: u32) -> &[u8] {
    let buf = &buf[..buf.len().min(len as usize)];
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

impl EventHeader {
    /// The comm bytes before the NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        c_prefix(&self.comm, COMM_LEN as u32)
    }
}

impl ExecEvent {
    /// The filename bytes that were recorded.
    pub fn filename_bytes(&self) -> &[u8] {
        c_prefix(&self.filename, self.filename_len)
    }

    /// The argv bytes that were recorded (NUL-separated, as
    /// /proc/PID/cmdline), possibly cut mid-argument.
    pub fn args_bytes(&self) -> &[u8] {
        &self.args[..(self.args_len as usize).min(ARGS_LEN)]
    }

    /// argv was longer than what was recorded.
    pub fn args_truncated(&self) -> bool {
        self.args_total > self.args_len
    }
}

impl OpenEvent {
    /// The path bytes that were recorded.
    pub fn path_bytes(&self) -> &[u8] {
        c_prefix(&self.path, self.path_len)
    }
}

impl DnsEvent {
    /// The payload bytes that were recorded.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.payload[..(self.payload_len as usize).min(DNS_LEN)]
    }

    /// The message was longer than what was recorded.
    pub fn truncated(&self) -> bool {
        self.payload_total > self.payload_len
    }

    /// The answering server, or None for a family other than
    /// AF_INET/AF_INET6.
    pub fn server(&self) -> Option<std::net::IpAddr> {
        ip_of(self.family, &self.saddr)
    }

    /// Carried over TCP (a 2-byte length prefix before the message).
    pub fn is_tcp(&self) -> bool {
        self.proto == 6
    }
}

/// An address of `family` from 16 bytes (IPv4 in the first 4).
fn ip_of(family: u16, addr: &[u8; 16]) -> Option<std::net::IpAddr> {
    match family {
        2 => Some(std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()),
        10 => Some(std::net::Ipv6Addr::from(*addr).into()),
        _ => None,
    }
}

impl ConnectEvent {
    /// The destination address, or None for a family other than
    /// AF_INET/AF_INET6.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        ip_of(self.family, &self.addr)
    }
}

/// Types that may be read from any bytes.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structs of integers and byte arrays only, so
/// every bit pattern of `size_of::<Self>()` bytes is a valid value.
unsafe trait Plain: Copy {}

// SAFETY: each is #[repr(C)] with only u16/u32/i32/u64 fields, byte arrays and
// (for the events) an EventHeader, which is itself Plain.
unsafe impl Plain for EventHeader {}
// SAFETY: as above.
unsafe impl Plain for ExecEvent {}
// SAFETY: as above.
unsafe impl Plain for ExitEvent {}
// SAFETY: as above.
unsafe impl Plain for ConnectEvent {}
// SAFETY: as above.
unsafe impl Plain for OpenEvent {}
// SAFETY: as above.
unsafe impl Plain for MapEvent {}
// SAFETY: as above.
unsafe impl Plain for DnsEvent {}

/// Copies a `T` out of the front of `bytes`, whatever their alignment; None if
/// they are too few.
fn read<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() readable bytes (checked
    // above); read_unaligned has no alignment requirement; and T: Plain makes
    // any bit pattern a valid T.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl EventHeader {
    /// The header at the front of a record; None if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        read(bytes)
    }
}

macro_rules! record {
    ($ty:ident, $kind:ident) => {
        impl $ty {
            /// The `kind` of this record.
            pub const KIND: u32 = $kind;

            /// Copies this record out of `bytes` (any alignment); None if they
            /// are shorter than the struct or the header's kind is another.
            /// Trailing bytes are ignored, so a later object may append fields.
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                let e: Self = read(bytes)?;
                (e.h.kind == $kind).then_some(e)
            }
        }
    };
}
record!(ExecEvent, EVENT_EXEC);
record!(ExitEvent, EVENT_EXIT);
record!(ConnectEvent, EVENT_CONNECT);
record!(OpenEvent, EVENT_OPEN);
record!(MapEvent, EVENT_MAP);
record!(DnsEvent, EVENT_DNS);

/// A decoded record: a copy of the struct that `kind` named.
// A transient value, decoded and converted at once by the reader: boxing
// the 1.4 KiB exec record would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Exec(ExecEvent),
    Exit(ExitEvent),
    Connect(ConnectEvent),
    Open(OpenEvent),
    Map(MapEvent),
    Dns(DnsEvent),
}

impl Event {
    /// The header common to every record.
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.h,
            Event::Exit(e) => &e.h,
            Event::Connect(e) => &e.h,
            Event::Open(e) => &e.h,
            Event::Map(e) => &e.h,
            Event::Dns(e) => &e.h,
        }
    }
}

/// Decodes one ring-buffer record. None if it is shorter than its struct or
/// its kind is unknown. Copies (the records are at most about 1.4 KiB), so `bytes`
/// need not be aligned and the result does not borrow them.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    match EventHeader::from_bytes(bytes)?.kind {
        EVENT_EXEC => ExecEvent::from_bytes(bytes).map(Event::Exec),
        EVENT_EXIT => ExitEvent::from_bytes(bytes).map(Event::Exit),
        EVENT_CONNECT => ConnectEvent::from_bytes(bytes).map(Event::Connect),
        EVENT_OPEN => OpenEvent::from_bytes(bytes).map(Event::Open),
        EVENT_MAP => MapEvent::from_bytes(bytes).map(Event::Map),
        EVENT_DNS => DnsEvent::from_bytes(bytes).map(Event::Dns),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a value, as the kernel would have written them.
    fn bytes_of<T: Plain>(v: &T) -> Vec<u8> {
        // SAFETY: v is a valid, initialised T; the Plain structs have no
        // implicit padding (every pad is a named field, checked by the layout
        // test), so all size_of::<T>() bytes are initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..7].copy_from_slice(b"python3");
        EventHeader {
            kind,
            pid: 4242,
            tid: 4243,
            ppid: 1,
            ts_ns: 123_456_789,
            cgroup_id: 0x1234_5678_9abc,
            uid: 1000,
            _pad0: 0,
            comm,
            start_ns: 987_654_321,
        }
    }

    fn args(s: &[u8]) -> [u8; ARGS_LEN] {
        let mut a = [0u8; ARGS_LEN];
        a[..s.len()].copy_from_slice(s);
        a
    }

    fn path(s: &[u8]) -> [u8; PATH_LEN] {
        let mut p = [0u8; PATH_LEN];
        p[..s.len()].copy_from_slice(s);
        p
    }

    #[test]
    fn object_is_aligned_elf() {
        assert_eq!(OBJECT.as_ptr() as usize % 8, 0);
        assert_eq!(&OBJECT[..4], b"\x7fELF");
    }

    #[test]
    fn decodes_every_kind_at_any_alignment() {
        let file = FileIdentity {
            ino: 1_234_567,
            ctime_sec: 1_765_000_000,
            ctime_nsec: 123_456_789,
            dev: (259 << 20) | 1,
            root_ino: 2,
            root_dev: (259 << 20) | 1,
            _pad0: 0,
        };
        let exec = ExecEvent {
            h: header(EVENT_EXEC),
            exe: file,
            filename_len: 16,
            args_len: 13,
            args_total: 13,
            _pad0: 0,
            filename: path(b"/usr/bin/python3"),
            args: args(b"python3\0-c\0x\0"),
        };
        let map = MapEvent {
            h: header(EVENT_MAP),
            fd: 3,
            prot: 5,
            file,
        };
        let exit = ExitEvent {
            h: header(EVENT_EXIT),
            exit_code: 0x300,
            _pad0: 0,
        };
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let connect = ConnectEvent {
            h: header(EVENT_CONNECT),
            family: 2,
            port: 443,
            sock_type: 1,
            _pad0: 0,
            ret: -115,
            repeats: 0,
            addr,
        };
        let open = OpenEvent {
            h: header(EVENT_OPEN),
            ret: 3,
            flags: 0x80000,
            path_len: 31,
            _pad0: 0,
            file,
            path: path(b"/lib/x86_64-linux-gnu/libc.so.6"),
        };
        let mut payload = [0u8; DNS_LEN];
        payload[..4].copy_from_slice(&[0x12, 0x34, 0x81, 0x80]);
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[198, 51, 100, 53]);
        let mut dh = header(EVENT_DNS);
        (dh.pid, dh.tid, dh.ppid, dh.start_ns, dh.comm) = (0, 0, 0, 0, [0; COMM_LEN]);
        let dns = DnsEvent {
            h: dh,
            family: 2,
            proto: 17,
            payload_len: 4,
            payload_total: 4,
            _pad0: 0,
            saddr,
            payload,
        };
        let cases = [
            (bytes_of(&dns), Event::Dns(dns)),
            (bytes_of(&exec), Event::Exec(exec)),
            (bytes_of(&exit), Event::Exit(exit)),
            (bytes_of(&connect), Event::Connect(connect)),
            (bytes_of(&open), Event::Open(open)),
            (bytes_of(&map), Event::Map(map)),
        ];
        for (bytes, want) in cases {
            for shift in 0..8 {
                let mut buf = vec![0xAAu8; shift];
                buf.extend_from_slice(&bytes);
                assert_eq!(decode(&buf[shift..]), Some(want), "shift {shift}");
            }
            // A longer record (a later object) still decodes.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0; 16]);
            assert_eq!(decode(&longer), Some(want));
            // One byte short never does.
            assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        }
        assert_eq!(exec.filename_bytes(), b"/usr/bin/python3");
        assert_eq!(exec.args_bytes(), b"python3\0-c\0x\0");
        assert!(!exec.args_truncated());
        assert_eq!(open.path_bytes(), b"/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(exec.h.comm_bytes(), b"python3");
        assert_eq!(connect.ip(), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(dns.payload_bytes(), [0x12, 0x34, 0x81, 0x80]);
        assert_eq!(dns.server(), Some("198.51.100.53".parse().unwrap()));
        assert!(!dns.truncated() && !dns.is_tcp());
        let mut cut = dns;
        (cut.payload_len, cut.payload_total) = (u32::MAX, 9000);
        assert_eq!(cut.payload_bytes().len(), DNS_LEN);
        cut.payload_len = DNS_LEN as u32;
        assert!(cut.truncated());
    }

    #[test]
    fn rejects_unknown_and_mismatched_kinds() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[1, 0, 0]), None);
        let mut h = header(99);
        assert_eq!(decode(&bytes_of(&h)), None);
        // An exit-sized record claiming to be an exec is too short for one.
        h.kind = EVENT_EXEC;
        let exit = ExitEvent {
            h,
            exit_code: 0,
            _pad0: 0,
        };
        assert_eq!(decode(&bytes_of(&exit)), None);
        // The typed decoders check the kind too.
        let exit = ExitEvent {
            h: header(EVENT_EXIT),
            exit_code: 9,
            _pad0: 0,
        };
        assert_eq!(ConnectEvent::from_bytes(&bytes_of(&exit)), None);
        assert_eq!(ExitEvent::from_bytes(&bytes_of(&exit)), Some(exit));
    }

    #[test]
    fn file_identity_speaks_stat() {
        // 259:1 (an NVMe partition) and 8:17, against glibc's makedev, and
        // a minor over 255 (a device-mapper volume, 253:300).
        let id = |dev| FileIdentity {
            ino: 7,
            ctime_sec: -1,
            ctime_nsec: 999_999_999,
            dev,
            root_ino: 2,
            root_dev: dev,
            _pad0: 0,
        };
        assert_eq!(id((259 << 20) | 1).st_dev(), libc::makedev(259, 1));
        assert_eq!(id((8 << 20) | 17).st_dev(), libc::makedev(8, 17));
        assert_eq!(id((253 << 20) | 300).st_dev(), libc::makedev(253, 300));
        assert_eq!(id((254 << 20) | 3).root_st_dev(), libc::makedev(254, 3));
        assert_eq!(id(0).ctime_ns(), -1);
        assert!(id(1).known().is_some());
        assert!(FileIdentity::default().known().is_none());
    }

    #[test]
    fn lengths_are_clamped() {
        let mut exec = ExecEvent {
            h: header(EVENT_EXEC),
            exe: FileIdentity::default(),
            filename_len: u32::MAX,
            args_len: u32::MAX,
            args_total: u32::MAX,
            _pad0: 0,
            filename: [b'a'; PATH_LEN],
            args: [b'b'; ARGS_LEN],
        };
        assert_eq!(exec.filename_bytes().len(), PATH_LEN);
        assert_eq!(exec.args_bytes().len(), ARGS_LEN);
        assert!(!exec.args_truncated());
        exec.args_len = ARGS_LEN as u32;
        exec.args_total = 5000;
        assert!(exec.args_truncated());
        exec.filename[10] = 0;
        assert_eq!(exec.filename_bytes().len(), 10);
        let mut connect = ConnectEvent::from_bytes(&bytes_of(&ConnectEvent {
            h: header(EVENT_CONNECT),
            family: 10,
            port: 53,
            sock_type: 2,
            _pad0: 0,
            ret: 0,
            repeats: 0,
            addr: std::net::Ipv6Addr::LOCALHOST.octets(),
        }))
        .unwrap();
        assert_eq!(connect.ip(), Some("::1".parse().unwrap()));
        connect.family = 1;
        assert_eq!(connect.ip(), None);
    }
}
