//! A process's privilege as far as `/proc/PID/status` and its namespace links
//! tell: root or not, effective capabilities by name, no_new_privs, seccomp,
//! and whether it shares the host's pid, network and mount namespaces.
//!
//! Everything here is pure; the caller reads `/proc/PID/status` and the
//! `/proc/PID/ns/*` links (and those of PID 1 for the host) and passes them
//! in.
//!
//! Quirks handled here:
//!
//! * `CapEff:` is a 64-bit mask whose meaningful bits depend on the kernel:
//!   bit 40 (`CAP_CHECKPOINT_RESTORE`) arrived in 5.9, bits 38 and 39
//!   (`CAP_PERFMON`, `CAP_BPF`) in 5.8, bit 37 (`CAP_AUDIT_READ`) in 3.16. A
//!   privileged container gets exactly the running kernel's full set, so on a
//!   5.4 kernel that is `0000003fffffffff`, not 41 bits; see
//!   [`Privilege::all_caps`].
//! * Bits above the kernel's last capability are never set by the kernel,
//!   but a future kernel may add some: they are named `CAP_41` and so on
//!   rather than dropped.
//! * `Seccomp:` only exists with `CONFIG_SECCOMP` and `NoNewPrivs:` only
//!   since 4.10, so both stay `None` when absent.
//! * A namespace id of 0 means "could not read the link" (the process exited,
//!   or we lack ptrace access to it): it never counts as sharing the host's.
//! * A process that dropped root but keeps uid 0 as its real uid can switch
//!   back with `setresuid()`, so the real uid is reported separately.

use crate::parse::status::Status;

/// Capability names by bit, from include/uapi/linux/capability.h
/// (`CAP_CHOWN` = 0 ... `CAP_CHECKPOINT_RESTORE` = 40).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The 41 capabilities of a 5.9+ kernel.
const ALL_41: u64 = (1 << 41) - 1;

/// Bits 0..=37 (`CAP_AUDIT_READ`): the full set of a 3.16 to 5.7 kernel.
const ALL_38: u64 = (1 << 38) - 1;

const CAP_SYS_ADMIN: &str = "CAP_SYS_ADMIN";

/// Capabilities a root summary names because they are the usual container
/// escape routes; root's everyday capabilities (`CAP_CHOWN`,
/// `CAP_DAC_OVERRIDE`, `CAP_SETUID` and the like, all in Docker's default
/// set) would only be noise in a table.
const NOTABLE_FOR_ROOT: &[&str] = &[
    "CAP_DAC_READ_SEARCH",
    "CAP_NET_ADMIN",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE",
    "CAP_SYS_ADMIN",
    "CAP_BPF",
];

/// The namespace inodes of a process, from `/proc/PID/ns/{pid,net,mnt}`.
/// 0 = unknown: never counts as "shares the host's".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsIds {
    /// The pid namespace inode.
    pub pid: u64,
    /// The network namespace inode.
    pub net: u64,
    /// The mount namespace inode.
    pub mnt: u64,
}

/// What a process may do beyond an ordinary user's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Privilege {
    /// The real uid is 0.
    pub uid0: bool,
    /// The effective uid is 0.
    pub euid0: bool,
    /// Effective capabilities by name, e.g. ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"],
    /// in bit order.
    pub cap_eff: Vec<String>,
    /// All 41 capabilities of a modern kernel (or every bit set). A
    /// contiguous run from bit 0 through at least `CAP_AUDIT_READ` (bit 37)
    /// also counts: that is the complete set of a 3.16 to 5.8 kernel, which
    /// is what a privileged container gets there.
    pub all_caps: bool,
    /// The `NoNewPrivs:` flag, when the kernel reports it.
    pub no_new_privs: Option<bool>,
    /// "disabled", "strict", "filter", or "unknown(N)"; None when the kernel
    /// does not say.
    pub seccomp: Option<String>,
    /// Shares the host's pid namespace.
    pub host_pid_ns: bool,
    /// Shares the host's network namespace.
    pub host_net_ns: bool,
    /// Shares the host's mount namespace.
    pub host_mnt_ns: bool,
}

/// Names the bits of a capability mask in bit order: bits 0..=40 by their
/// kernel names (include/uapi/linux/capability.h), unknown bits as
/// "CAP_41" etc.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| match CAP_NAMES.get(bit) {
            Some(name) => (*name).to_string(),
            None => format!("CAP_{bit}"),
        })
        .collect()
}

/// Whether a mask is a complete capability set: all 41 bits, or a
/// contiguous run from bit 0 through at least bit 37 (the full set of an
/// older kernel; `u64::MAX` is such a run too).
fn is_all_caps(mask: u64) -> bool {
    mask & ALL_41 == ALL_41 || (mask & mask.wrapping_add(1) == 0 && mask >= ALL_38)
}

/// Maps the `Seccomp:` mode (include/uapi/linux/seccomp.h:
/// `SECCOMP_MODE_DISABLED` 0, `SECCOMP_MODE_STRICT` 1, `SECCOMP_MODE_FILTER`
/// 2) to its name.
fn seccomp_name(mode: u8) -> String {
    match mode {
        0 => "disabled".to_string(),
        1 => "strict".to_string(),
        2 => "filter".to_string(),
        n => format!("unknown({n})"),
    }
}

/// Both ids are known and equal.
fn same_ns(a: u64, b: u64) -> bool {
    a != 0 && a == b
}

/// Derives a process's privilege from its status and namespace ids, given
/// the host's (PID 1's) namespace ids.
pub fn privilege(status: &Status, ns: NsIds, host: NsIds) -> Privilege {
    Privilege {
        uid0: status.uid[0] == 0,
        euid0: status.uid[1] == 0,
        cap_eff: cap_names(status.cap_eff),
        all_caps: is_all_caps(status.cap_eff),
        no_new_privs: status.no_new_privs,
        seccomp: status.seccomp.map(seccomp_name),
        host_pid_ns: same_ns(ns.pid, host.pid),
        host_net_ns: same_ns(ns.net, host.net),
        host_mnt_ns: same_ns(ns.mnt, host.mnt),
    }
}

impl Privilege {
    /// A one-line summary for tables: "root,CAP_SYS_ADMIN,hostnet" / "root" /
    /// "-" ... ; "privileged" when all_caps.
    ///
    /// The parts, comma-separated and in this order: "root" when the
    /// effective uid is 0, else "ruid-root" when only the real uid is (the
    /// process can switch back); "privileged" when all_caps, else the notable
    /// capabilities (for root the usual escape routes such as
    /// `CAP_SYS_ADMIN`; for anyone else every effective capability, since a
    /// non-root process normally has none); then "hostpid", "hostnet",
    /// "hostmnt". "-" when there is nothing to say.
    pub fn summary(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if self.euid0 {
            parts.push("root");
        } else if self.uid0 {
            parts.push("ruid-root");
        }
        if self.all_caps {
            parts.push("privileged");
        } else if self.euid0 {
            parts.extend(
                self.cap_eff
                    .iter()
                    .map(String::as_str)
                    .filter(|c| NOTABLE_FOR_ROOT.contains(c)),
            );
        } else {
            parts.extend(self.cap_eff.iter().map(String::as_str));
        }
        for (on, label) in [
            (self.host_pid_ns, "hostpid"),
            (self.host_net_ns, "hostnet"),
            (self.host_mnt_ns, "hostmnt"),
        ] {
            if on {
                parts.push(label);
            }
        }
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(",")
        }
    }

    /// Escalation-relevant: euid 0 with CAP_SYS_ADMIN, or all caps, or
    /// sharing the host pid/net namespace while root.
    pub fn is_privileged(&self) -> bool {
        self.all_caps
            || (self.euid0
                && (self.host_pid_ns
                    || self.host_net_ns
                    || self.cap_eff.iter().any(|c| c == CAP_SYS_ADMIN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::status::parse_status;

    /// Docker's default capability set (moby oci/caps/defaults.go).
    const DOCKER_DEFAULT: u64 = 0xa804_25fb;

    fn status(uid: [u32; 4], cap_eff: u64) -> Status {
        Status {
            uid,
            cap_eff,
            ..Status::default()
        }
    }

    const HOST: NsIds = NsIds {
        pid: 4_026_531_836,
        net: 4_026_531_840,
        mnt: 4_026_531_841,
    };

    const OTHER: NsIds = NsIds {
        pid: 4_026_532_300,
        net: 4_026_532_301,
        mnt: 4_026_532_302,
    };

    #[test]
    fn cap_names_on_known_masks() {
        assert!(cap_names(0).is_empty());
        assert_eq!(cap_names(1 << 21), ["CAP_SYS_ADMIN"]);
        assert_eq!(cap_names(1), ["CAP_CHOWN"]);
        assert_eq!(cap_names(1 << 40), ["CAP_CHECKPOINT_RESTORE"]);
        let all = cap_names(0x1ff_ffff_ffff);
        assert_eq!(all.len(), 41);
        assert_eq!(all[0], "CAP_CHOWN");
        assert_eq!(all[21], "CAP_SYS_ADMIN");
        assert_eq!(
            all[38..],
            ["CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
        );
        // Names are unique and follow the CAP_ convention.
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 41);
        assert_eq!(
            cap_names(DOCKER_DEFAULT),
            [
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_RAW",
                "CAP_SYS_CHROOT",
                "CAP_MKNOD",
                "CAP_AUDIT_WRITE",
                "CAP_SETFCAP",
            ]
        );
        // Unknown bits keep their number.
        assert_eq!(cap_names(1 << 41 | 1 << 63), ["CAP_41", "CAP_63"]);
        assert_eq!(cap_names(u64::MAX).len(), 64);
    }

    #[test]
    fn all_caps() {
        assert!(is_all_caps(ALL_41));
        assert!(is_all_caps(u64::MAX));
        // A privileged container on a 5.4 kernel (38 caps) and on 5.8 (40).
        assert!(is_all_caps(0x3f_ffff_ffff));
        assert!(is_all_caps(0xff_ffff_ffff));
        // 41 caps plus unknown high bits still has all 41.
        assert!(is_all_caps(ALL_41 | 1 << 50));
        // Root minus CAP_SYS_RESOURCE (this test machine's sandbox).
        assert!(!is_all_caps(0x1ff_feff_ffff));
        // Too short a run: a 3.x kernel without CAP_AUDIT_READ is not told
        // apart from a process that dropped it, so it does not count.
        assert!(!is_all_caps(0x1f_ffff_ffff));
        assert!(!is_all_caps(0));
        assert!(!is_all_caps(DOCKER_DEFAULT));
        // A run that does not start at bit 0.
        assert!(!is_all_caps(0x3f_ffff_fffe));
    }

    #[test]
    fn seccomp_mapping() {
        let cases = [
            (None, None),
            (Some(0), Some("disabled")),
            (Some(1), Some("strict")),
            (Some(2), Some("filter")),
            (Some(3), Some("unknown(3)")),
            (Some(255), Some("unknown(255)")),
        ];
        for (mode, want) in cases {
            let s = Status {
                seccomp: mode,
                no_new_privs: Some(true),
                ..Status::default()
            };
            let p = privilege(&s, NsIds::default(), HOST);
            assert_eq!(p.seccomp.as_deref(), want, "{mode:?}");
            assert_eq!(p.no_new_privs, Some(true));
        }
    }

    #[test]
    fn namespace_comparisons() {
        let s = status([0; 4], 0);
        let p = privilege(&s, HOST, HOST);
        assert!(p.host_pid_ns && p.host_net_ns && p.host_mnt_ns);
        let p = privilege(&s, OTHER, HOST);
        assert!(!p.host_pid_ns && !p.host_net_ns && !p.host_mnt_ns);
        // hostNetwork pod: only the network namespace is shared.
        let ns = NsIds {
            net: HOST.net,
            ..OTHER
        };
        let p = privilege(&s, ns, HOST);
        assert_eq!(
            (p.host_pid_ns, p.host_net_ns, p.host_mnt_ns),
            (false, true, false)
        );
        // 0 is unknown, on either side, and even when both are 0.
        let unknown = NsIds::default();
        for (ns, host) in [(unknown, HOST), (HOST, unknown), (unknown, unknown)] {
            let p = privilege(&s, ns, host);
            assert!(!p.host_pid_ns && !p.host_net_ns && !p.host_mnt_ns);
        }
        let partial = NsIds { pid: 0, ..HOST };
        let p = privilege(&s, partial, HOST);
        assert_eq!(
            (p.host_pid_ns, p.host_net_ns, p.host_mnt_ns),
            (false, true, true)
        );
    }

    #[test]
    fn summaries_and_privileged() {
        // (uid, caps, ns, summary, is_privileged)
        let cases: &[([u32; 4], u64, NsIds, &str, bool)] = &[
            // An ordinary user's process in a container.
            ([1000; 4], 0, OTHER, "-", false),
            // Root in a default Docker container.
            ([0; 4], DOCKER_DEFAULT, OTHER, "root", false),
            // Root with CAP_SYS_ADMIN added.
            (
                [0; 4],
                DOCKER_DEFAULT | 1 << 21,
                OTHER,
                "root,CAP_SYS_ADMIN",
                true,
            ),
            // hostNetwork root pod with NET_ADMIN.
            (
                [0; 4],
                DOCKER_DEFAULT | 1 << 12,
                NsIds {
                    net: HOST.net,
                    ..OTHER
                },
                "root,CAP_NET_ADMIN,hostnet",
                true,
            ),
            // A privileged container.
            ([0; 4], ALL_41, OTHER, "root,privileged", true),
            // All caps without root still counts.
            ([1000; 4], ALL_41, OTHER, "privileged", true),
            // A non-root process with a file capability: every cap is named.
            ([1000; 4], 1 << 10, OTHER, "CAP_NET_BIND_SERVICE", false),
            // Non-root in the host namespaces is not escalation-relevant.
            ([1000; 4], 0, HOST, "hostpid,hostnet,hostmnt", false),
            // Root sharing only the host's mount namespace.
            (
                [0; 4],
                0,
                NsIds {
                    mnt: HOST.mnt,
                    ..OTHER
                },
                "root,hostmnt",
                false,
            ),
            // Real uid root, effective not: it can switch back.
            ([0, 1000, 1000, 1000], 0, OTHER, "ruid-root", false),
            // Root on the host: full caps and every host namespace.
            (
                [0; 4],
                ALL_41,
                HOST,
                "root,privileged,hostpid,hostnet,hostmnt",
                true,
            ),
            // Root with unknown namespaces is not "on the host".
            ([0; 4], 0, NsIds::default(), "root", false),
        ];
        for &(uid, caps, ns, summary, privileged) in cases {
            let p = privilege(&status(uid, caps), ns, HOST);
            assert_eq!(p.summary(), summary, "{uid:?} {caps:#x} {ns:?}");
            assert_eq!(p.is_privileged(), privileged, "{uid:?} {caps:#x} {ns:?}");
        }
        assert_eq!(Privilege::default().summary(), "-");
        assert!(!Privilege::default().is_privileged());
    }

    fn read_ns(pid: &str) -> NsIds {
        // Test-only I/O: the module itself never reads files.
        let read = |kind: &str| {
            std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                .ok()
                .and_then(|l| {
                    crate::parse::cgroup::parse_ns_link(&l.into_os_string().into_encoded_bytes())
                })
                .unwrap_or(0)
        };
        NsIds {
            pid: read("pid"),
            net: read("net"),
            mnt: read("mnt"),
        }
    }

    #[test]
    fn the_real_self_status() {
        // Test-only I/O: our own status and namespaces.
        let Ok(bytes) = std::fs::read("/proc/self/status") else {
            return;
        };
        let s = parse_status(&bytes).unwrap();
        let me = read_ns("self");
        let p = privilege(&s, me, me);
        assert_eq!(p.euid0, s.uid[1] == 0);
        assert_eq!(p.uid0, s.uid[0] == 0);
        // SAFETY: geteuid() has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            assert!(p.euid0, "running as root");
            assert!(p.summary().starts_with("root"), "{}", p.summary());
        } else {
            assert!(!p.euid0);
        }
        assert_eq!(p.cap_eff, cap_names(s.cap_eff));
        // Compared with itself, every readable namespace is "the host's".
        assert_eq!(p.host_pid_ns, me.pid != 0);
        assert_eq!(p.host_net_ns, me.net != 0);
        assert_eq!(p.host_mnt_ns, me.mnt != 0);
        if let Some(mode) = s.seccomp {
            assert!(p.seccomp.is_some_and(|m| !m.is_empty()), "mode {mode}");
        }
    }

    /// A xorshift64* generator: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            // Random status bytes through the real parser, then random fields.
            const ALPHABET: &[u8] = b"Uid:\t0123456789abcdef\nCapEff:Seccomp:NoNewPrivs:";
            let bytes: Vec<u8> = (0..(rng.next() % 200))
                .map(|_| {
                    let b = rng.next();
                    if b.is_multiple_of(3) {
                        ALPHABET[(b >> 8) as usize % ALPHABET.len()]
                    } else {
                        b as u8
                    }
                })
                .collect();
            let parsed = parse_status(&bytes).unwrap_or_default();
            let random = Status {
                uid: [rng.next() as u32 & 1, rng.next() as u32, 0, 0],
                cap_eff: rng.next(),
                no_new_privs: Some(rng.next() & 1 == 0),
                seccomp: Some(rng.next() as u8),
                ..Status::default()
            };
            for s in [parsed, random] {
                // Each id is unknown, the host's, or another namespace's.
                let mut pick = |host: u64, other: u64| [0, host, other][(rng.next() % 3) as usize];
                let ns = NsIds {
                    pid: pick(HOST.pid, OTHER.pid),
                    net: pick(HOST.net, OTHER.net),
                    mnt: pick(HOST.mnt, OTHER.mnt),
                };
                let p = privilege(&s, ns, HOST);
                assert_eq!(p.cap_eff.len(), s.cap_eff.count_ones() as usize);
                let summary = p.summary();
                assert!(!summary.is_empty());
                if p.all_caps {
                    assert!(p.is_privileged());
                }
            }
        }
    }
}
