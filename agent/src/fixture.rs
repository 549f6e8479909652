//! Synthetic procfs trees, for benchmarks and tests, and the [`Crowd`] of
//! real processes that benchmarks start to fill a host.
//!
//! [`write_proc_tree`] lays out a directory that the [`Scanner`] reads like
//! /proc: per pid `stat`, `status`, `cmdline`, `cgroup`, `ns/{mnt,net}`,
//! `root`, `exe`, `maps`, `fd/` and (in the first pid) `net/*`, plus a
//! top-level `stat` with a `btime` line. Each process is stamped from a
//! [`ProcTemplate`]: an executable and a memory map, normally captured from a
//! real process of this host with [`ProcTemplate::capture`], so the mapped
//! files are real files that the resolver finds in the host's dpkg database.
//! The `root` links point at "/", so the host's root is every process's root.
//!
//! Only std is used: the caller chooses (and later removes) the directory.
//!
//! [`Scanner`]: crate::scan::Scanner

use std::{
    ffi::OsStr,
    fmt::Write as _,
    fs, io,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, symlink},
    },
    path::{Path, PathBuf},
};

use crate::parse;

/// The mount namespace link target of every synthetic process.
pub const MNT_NS: &str = "mnt:[4026531841]";
/// The network namespace link target of every synthetic process.
pub const NET_NS: &str = "net:[4026531840]";
/// Socket inodes of the synthetic processes are `SOCKET_INODE_BASE + pid`.
pub const SOCKET_INODE_BASE: u64 = 5_000_000;
/// Pipe inodes of the synthetic processes are `PIPE_INODE_BASE + pid`.
const PIPE_INODE_BASE: u64 = 6_000_000;

/// One kind of process the tree repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcTemplate {
    /// The comm, at most 15 bytes as the kernel keeps it.
    pub comm: String,
    /// Target of the `exe` link: should be a real file of this host.
    pub exe: PathBuf,
    /// Command line arguments, argv\[0\] first.
    pub args: Vec<String>,
    /// The contents of `maps`.
    pub maps: Vec<u8>,
}

impl ProcTemplate {
    /// Captures the executable and memory map of a real process under
    /// `proc_root`. Mappings of files that no longer exist at their path with
    /// the same device and inode (deleted or replaced files) are dropped, so
    /// every file-backed line names a current host file; anonymous and pseudo
    /// mappings are kept as they are. The command line is not copied (it may
    /// hold secrets): `args` is just the executable.
    ///
    /// Returns `Ok(None)` for a process without a usable executable (a kernel
    /// thread, or an executable that was deleted).
    pub fn capture(proc_root: &Path, pid: u32) -> io::Result<Option<ProcTemplate>> {
        let dir = proc_root.join(pid.to_string());
        let exe = match fs::read_link(dir.join("exe")) {
            Ok(exe) => exe,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if exe.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") || !exe.is_file() {
            return Ok(None);
        }
        let maps = current_mappings(&fs::read(dir.join("maps"))?);
        if maps.is_empty() {
            return Ok(None);
        }
        let comm = fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end_matches('\n').to_string())
            .unwrap_or_else(|_| {
                exe.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let comm = truncate_comm(comm);
        Ok(Some(ProcTemplate {
            comm,
            args: vec![exe.to_string_lossy().into_owned()],
            exe,
            maps,
        }))
    }

    /// The number of file-backed lines in `maps`.
    pub fn file_mappings(&self) -> usize {
        parse::maps::parse_maps(&self.maps).0.len()
    }

    /// The number of lines in `maps`.
    pub fn mappings(&self) -> usize {
        self.maps
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    }
}

/// The lines of a maps file that are anonymous or pseudo mappings, or name a
/// file that is still at that path with the same device and inode.
pub fn current_mappings(maps: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(maps.len());
    for line in maps.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let (entries, malformed) = parse::maps::parse_maps(line);
        let keep = match entries.first() {
            Some(e) => {
                !e.deleted
                    && fs::metadata(OsStr::from_bytes(&e.path)).is_ok_and(|m| {
                        m.dev() == libc::makedev(e.dev_major, e.dev_minor) && m.ino() == e.inode
                    })
            }
            None => malformed == 0,
        };
        if keep {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

fn truncate_comm(mut comm: String) -> String {
    while comm.len() > 15 {
        comm.pop();
    }
    comm
}

/// What to build.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// How many processes.
    pub procs: u32,
    /// The first pid; the others follow consecutively.
    pub first_pid: u32,
    /// Process kinds, assigned round-robin by pid. Must not be empty.
    pub templates: Vec<ProcTemplate>,
    /// The `btime` of the top-level `stat`.
    pub btime: u64,
    /// How many consecutive processes share one cgroup (one workload).
    pub procs_per_cgroup: u32,
}

impl TreeSpec {
    /// `procs` processes from pid 1000 on, 20 to a cgroup.
    pub fn new(procs: u32, templates: Vec<ProcTemplate>) -> TreeSpec {
        TreeSpec {
            procs,
            first_pid: 1000,
            templates,
            btime: 1_795_893_335,
            procs_per_cgroup: 20,
        }
    }

    /// The pids the tree holds, ascending.
    pub fn pids(&self) -> impl Iterator<Item = u32> + use<> {
        self.first_pid..self.first_pid + self.procs
    }
}

/// Writes the tree into `dir` (created if missing; existing pid directories
/// of the same numbers must not exist). Returns the pids written.
///
/// Per pid: a full 52-field `stat` (ppid 1, starttime in field 22), a
/// realistic `status`, a NUL-separated `cmdline`, a hybrid cgroup v1 + v2
/// `cgroup`, `ns/mnt` → [`MNT_NS`], `ns/net` → [`NET_NS`], `root` → "/",
/// `exe` → the template's executable, `maps` from the template, and `fd/0..3`
/// (`/dev/null`, two pipes, and for every other pid starting with the first a
/// `socket:[SOCKET_INODE_BASE + pid]`, otherwise an eventfd). The first pid,
/// which is the first one with a socket, also has `net/{tcp,tcp6,udp,udp6}`
/// (a header and a few sockets of the first pids).
pub fn write_proc_tree(dir: &Path, spec: &TreeSpec) -> io::Result<Vec<u32>> {
    if spec.templates.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a proc tree needs at least one template",
        ));
    }
    fs::create_dir_all(dir)?;
    fs::write(dir.join("stat"), proc_stat(spec.btime, spec.procs))?;
    let mut pids = Vec::with_capacity(spec.procs as usize);
    for (i, pid) in spec.pids().enumerate() {
        let t = &spec.templates[i % spec.templates.len()];
        let p = dir.join(pid.to_string());
        fs::create_dir(&p)?;
        let group = i as u32 / spec.procs_per_cgroup.max(1);
        let uid = [0, 1000, 33, 999][group as usize % 4];
        let start_ticks = 1_000 + u64::from(pid) * 37;
        fs::write(p.join("stat"), pid_stat(pid, &t.comm, start_ticks))?;
        fs::write(p.join("status"), pid_status(pid, &t.comm, uid))?;
        fs::write(p.join("cmdline"), cmdline(t, i))?;
        fs::write(p.join("cgroup"), cgroup(group))?;
        fs::write(p.join("maps"), &t.maps)?;
        fs::create_dir(p.join("ns"))?;
        symlink(MNT_NS, p.join("ns/mnt"))?;
        symlink(NET_NS, p.join("ns/net"))?;
        symlink("/", p.join("root"))?;
        symlink(&t.exe, p.join("exe"))?;
        let fd = p.join("fd");
        fs::create_dir(&fd)?;
        let pipe = PIPE_INODE_BASE + u64::from(pid);
        symlink("/dev/null", fd.join("0"))?;
        symlink(format!("pipe:[{pipe}]"), fd.join("1"))?;
        symlink(format!("pipe:[{pipe}]"), fd.join("2"))?;
        if i.is_multiple_of(2) {
            symlink(
                format!("socket:[{}]", SOCKET_INODE_BASE + u64::from(pid)),
                fd.join("3"),
            )?;
        } else {
            symlink("anon_inode:[eventfd]", fd.join("3"))?;
        }
        if i == 0 {
            write_net(&p.join("net"), spec)?;
        }
        pids.push(pid);
    }
    Ok(pids)
}

/// A top-level /proc/stat for a two-CPU host.
fn proc_stat(btime: u64, procs: u32) -> String {
    format!(
        "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0\n\
         cpu0 5066076 145348 1542359 23414241 8341 0 12597 0 0 0\n\
         cpu1 5066077 145348 1542360 23414242 8342 0 12598 0 0 0\n\
         intr 199292720 10 9 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
         ctxt 418342451\n\
         btime {btime}\n\
         processes {}\n\
         procs_running 2\n\
         procs_blocked 0\n\
         softirq 52386418 0 9811430 2 3420411 0 0 1622 21183719 0 17969234\n",
        u64::from(procs) + 33_000
    )
}

/// All 52 fields of /proc/PID/stat, as a 6.x kernel prints them.
fn pid_stat(pid: u32, comm: &str, start_ticks: u64) -> String {
    let base: u64 = 0x5600_0000_0000 + u64::from(pid) * 0x10_0000;
    let stack: u64 = 0x7ffc_0000_0000 + u64::from(pid) * 0x1000;
    let fields: [String; 50] = [
        "S".into(),                      // 3 state
        "1".into(),                      // 4 ppid
        pid.to_string(),                 // 5 pgrp
        pid.to_string(),                 // 6 session
        "0".into(),                      // 7 tty_nr
        "-1".into(),                     // 8 tpgid
        "4194560".into(),                // 9 flags
        (2_000 + pid % 997).to_string(), // 10 minflt
        "0".into(),                      // 11 cminflt
        (pid % 13).to_string(),          // 12 majflt
        "0".into(),                      // 13 cmajflt
        (40 + pid % 300).to_string(),    // 14 utime
        (10 + pid % 70).to_string(),     // 15 stime
        "0".into(),                      // 16 cutime
        "0".into(),                      // 17 cstime
        "20".into(),                     // 18 priority
        "0".into(),                      // 19 nice
        (1 + pid % 8).to_string(),       // 20 num_threads
        "0".into(),                      // 21 itrealvalue
        start_ticks.to_string(),         // 22 starttime
        "2998272".into(),                // 23 vsize
        "383".into(),                    // 24 rss
        "18446744073709551615".into(),   // 25 rsslim
        base.to_string(),                // 26 startcode
        (base + 24_105).to_string(),     // 27 endcode
        stack.to_string(),               // 28 startstack
        "0".into(),                      // 29 kstkesp
        "0".into(),                      // 30 kstkeip
        "0".into(),                      // 31 signal
        "0".into(),                      // 32 blocked
        "16781312".into(),               // 33 sigignore
        "134235650".into(),              // 34 sigcatch
        "0".into(),                      // 35 wchan
        "0".into(),                      // 36 nswap
        "0".into(),                      // 37 cnswap
        "17".into(),                     // 38 exit_signal
        (pid % 2).to_string(),           // 39 processor
        "0".into(),                      // 40 rt_priority
        "0".into(),                      // 41 policy
        "0".into(),                      // 42 delayacct_blkio_ticks
        "0".into(),                      // 43 guest_time
        "0".into(),                      // 44 cguest_time
        (base + 39_952).to_string(),     // 45 start_data
        (base + 41_568).to_string(),     // 46 end_data
        (base + 90_333_184).to_string(), // 47 start_brk
        (stack + 1_379).to_string(),     // 48 arg_start
        (stack + 1_407).to_string(),     // 49 arg_end
        (stack + 1_407).to_string(),     // 50 env_start
        (stack + 2_874).to_string(),     // 51 env_end
        "0".into(),                      // 52 exit_code
    ];
    format!("{pid} ({comm}) {}\n", fields.join(" "))
}

/// /proc/PID/status as a 6.x kernel prints it.
fn pid_status(pid: u32, comm: &str, uid: u32) -> String {
    let mut s = String::with_capacity(1600);
    let _ = write!(
        s,
        "Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\n\
         Pid:\t{pid}\nPPid:\t1\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
         Gid:\t{uid}\t{uid}\t{uid}\t{uid}\nFDSize:\t64\nGroups:\t{uid} \nNStgid:\t{pid}\n\
         NSpid:\t{pid}\nNSpgid:\t{pid}\nNSsid:\t{pid}\nKthread:\t0\n\
         VmPeak:\t   25796 kB\nVmSize:\t   25796 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n\
         VmHWM:\t   11264 kB\nVmRSS:\t   11264 kB\nRssAnon:\t    2304 kB\n\
         RssFile:\t    8960 kB\nRssShmem:\t       0 kB\nVmData:\t    3220 kB\n\
         VmStk:\t     132 kB\nVmExe:\t    2912 kB\nVmLib:\t    6564 kB\nVmPTE:\t      84 kB\n\
         VmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\nCoreDumping:\t0\nTHP_enabled:\t1\n\
         untag_mask:\t0xffffffffffffffff\nThreads:\t{}\nSigQ:\t0/96365\n\
         SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\n\
         SigIgn:\t0000000001001000\nSigCgt:\t0000000180000002\nCapInh:\t0000000000000000\n",
        1 + pid % 8
    );
    let caps = if uid == 0 {
        "000001ffffffffff"
    } else {
        "0000000000000000"
    };
    let _ = write!(
        s,
        "CapPrm:\t{caps}\nCapEff:\t{caps}\nCapBnd:\t000001ffffffffff\n\
         CapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n\
         Speculation_Store_Bypass:\tthread vulnerable\n\
         SpeculationIndirectBranch:\tconditional enabled\nCpus_allowed:\t3\n\
         Cpus_allowed_list:\t0-1\nMems_allowed:\t"
    );
    for _ in 0..31 {
        s.push_str("00000000,");
    }
    let _ = write!(
        s,
        "00000001\nMems_allowed_list:\t0\nvoluntary_ctxt_switches:\t{}\n\
         nonvoluntary_ctxt_switches:\t{}\n",
        150 + pid % 1000,
        pid % 17
    );
    s
}

/// The template's arguments plus a few per-process ones; every tenth process
/// carries a secret that the scanner redacts.
fn cmdline(t: &ProcTemplate, i: usize) -> Vec<u8> {
    let mut args: Vec<String> = t.args.clone();
    args.push(format!("--worker={i}"));
    args.push("--config=/etc/app/config.yaml".into());
    if i.is_multiple_of(10) {
        args.push("--db-password=hunter2".into());
    }
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out
}

/// A hybrid host's /proc/PID/cgroup: v1 controllers plus `0::/`, with the
/// workload named by the memory controller's path.
fn cgroup(group: u32) -> String {
    let hex = format!(
        "{:016x}{:016x}",
        mix(u64::from(group)),
        mix(u64::from(group) + 0x9e37)
    );
    format!(
        "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
         4:memory:/process_api/{hex}\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"
    )
}

/// splitmix64: deterministic, well-spread ids.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The network namespace's socket tables: a header and a few sockets of the
/// first pids (which have sockets at every other index).
fn write_net(net: &Path, spec: &TreeSpec) -> io::Result<()> {
    fs::create_dir(net)?;
    let sock = |k: u32| SOCKET_INODE_BASE + u64::from(spec.first_pid + 2 * k);
    let tail = "1 0000000000000000 100 0 0 10 0";
    let mut tcp = String::from(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    );
    let _ = writeln!(
        tcp,
        "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {} {tail}",
        sock(0)
    );
    let _ = writeln!(
        tcp,
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 {} {tail}",
        sock(1)
    );
    let _ = writeln!(
        tcp,
        "   2: 0A00000F:D431 5DB8D822:01BB 01 00000000:00000000 02:000AFC80 00000000  1000        0 {} {tail}",
        sock(2)
    );
    let _ = writeln!(
        tcp,
        "   3: 0A00000F:D432 5DB8D822:01BB 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000"
    );
    let mut tcp6 = String::from(
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    );
    let _ = writeln!(
        tcp6,
        "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {} {tail}",
        sock(3)
    );
    let mut udp = String::from(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n",
    );
    let _ = writeln!(
        udp,
        "  123: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {} 2 0000000000000000 0",
        sock(4)
    );
    let udp6 = String::from(
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n",
    );
    fs::write(net.join("tcp"), tcp)?;
    fs::write(net.join("tcp6"), tcp6)?;
    fs::write(net.join("udp"), udp)?;
    fs::write(net.join("udp6"), udp6)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{ScanConfig, Scanner};

    #[test]
    fn a_tree_of_this_process_scans_and_resolves() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let me = ProcTemplate::capture(Path::new("/proc"), std::process::id())
            .expect("capture self")
            .expect("self has an exe");
        assert!(me.file_mappings() > 0);
        let spec = TreeSpec::new(10, vec![me]);
        let pids = write_proc_tree(dir.path(), &spec).expect("write tree");
        assert_eq!(pids.len(), 10);
        let inv = Scanner::new(ScanConfig {
            proc_root: dir.path().to_path_buf(),
            labels: Default::default(),
            ..ScanConfig::default()
        })
        .scan();
        assert_eq!(inv.stats.processes, 10);
        assert!(inv.stats.artifacts > inv.stats.unresolved_artifacts);
        let p = &inv.processes[0];
        assert_eq!(p.key.pid, 1000);
        assert!(!p.partial, "fixture process is partial");
        assert_eq!(p.net_ns, 4026531840);
        assert_eq!(p.sockets.len(), 1);
        assert!(p.cgroup.starts_with("/process_api/"));
        assert!(
            p.artifacts.iter().all(|a| !a.stale),
            "a mapped file of the fixture is not the host's current file"
        );
    }
}

/// Real processes that crowd the host for a benchmark, killed and reaped
/// when dropped (also when the benchmark panics).
#[derive(Debug)]
pub struct Crowd(Vec<std::process::Child>);

impl Crowd {
    /// Starts `n` real long-sleeping processes: one python importing ssl
    /// in ten, `sleep` for the rest, so the host has that many more
    /// processes whose /proc files the kernel generates on every read.
    /// Waits (up to two minutes) until each python has loaded libssl, so
    /// that every scan after this sees the same maps.
    pub fn spawn(n: u32) -> io::Result<Crowd> {
        use std::process::{Command, Stdio};
        let mut crowd = Crowd(Vec::with_capacity(n as usize));
        for i in 0..n {
            let mut cmd = if i % 10 == 0 {
                let mut c = Command::new("/usr/bin/python3");
                c.args(["-c", "import ssl, json, sqlite3, time; time.sleep(900)"]);
                c
            } else {
                let mut c = Command::new("/usr/bin/sleep");
                c.arg("900");
                c
            };
            let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
            crowd.0.push(child);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        for (i, c) in crowd.0.iter().enumerate().step_by(10) {
            let maps = format!("/proc/{}/maps", c.id());
            while !fs::read_to_string(&maps).is_ok_and(|m| m.contains("libssl.so")) {
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "crowd python {i} never loaded libssl"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(crowd)
    }

    /// The pids of the processes it started.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(std::process::Child::id)
    }

    /// How many processes it started.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}
