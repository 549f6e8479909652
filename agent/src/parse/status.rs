//! Parser for `/proc/PID/status`: identity, credentials and confinement.
//!
//! The file is a list of `Key:\tvalue` lines. Quirks this parser handles:
//!
//! * `Name:` is the task's comm, but unlike in `/proc/PID/stat` it is
//!   escaped by `proc_task_name()` with `string_escape_str(..., ESCAPE_SPACE |
//!   ESCAPE_SPECIAL, "\n\\")`: only a newline (printed as `\n`) and a
//!   backslash (printed as `\\`) are escaped. Because every literal backslash
//!   is escaped, decoding these two sequences is unambiguous, and we do so
//!   that [`Status::name`] matches the raw comm from `stat`. Other bytes
//!   (including spaces, tabs and invalid UTF-8) are printed raw.
//! * `Uid:`/`Gid:` hold four tab-separated decimal ids: real, effective,
//!   saved set, and filesystem.
//! * `CapEff:`/`CapPrm:` are 16 hex digits.
//! * `NoNewPrivs:` appeared in Linux 4.10 and `Seccomp:` in 3.8 (only when
//!   the kernel has `CONFIG_SECCOMP`), so both are optional.
//! * `NSpid:` (Linux 4.1+) lists the pid in each pid namespace from the one
//!   the reader is in down to the process's own; its last entry is the pid
//!   the process sees for itself inside its container.
//!
//! Only a missing or malformed `Uid:` line makes the parse fail: the agent
//! cannot attribute a process without it. Any other line that is missing or
//! malformed simply leaves that field at its default.

use super::{ParseError, malformed, parse_dec_u32, parse_dec_u64, parse_hex_u64, preview};

/// The fields of `/proc/PID/status` the agent needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The command name, with the kernel's `\n` and `\\` escapes decoded.
    pub name: Vec<u8>,
    /// Real, effective, saved and filesystem user ids.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem group ids. All zero if the
    /// `Gid:` line is missing or malformed.
    pub gid: [u32; 4],
    /// Effective capability set. Zero if missing or malformed.
    pub cap_eff: u64,
    /// Permitted capability set. Zero if missing or malformed.
    pub cap_prm: u64,
    /// `Some` when the kernel reports `NoNewPrivs:` as 0 or 1.
    pub no_new_privs: Option<bool>,
    /// The seccomp mode (0 disabled, 1 strict, 2 filter) when reported.
    pub seccomp: Option<u8>,
    /// The pid in each nested pid namespace, outermost first. Empty if the
    /// line is missing or malformed.
    pub nspid: Vec<u32>,
}

/// Parses the contents of `/proc/PID/status`.
///
/// If a key appears more than once (which the kernel never does) the first
/// occurrence wins.
///
/// # Errors
///
/// Errors only if the `Uid:` line is missing ([`ParseError::Missing`]) or
/// does not hold exactly four decimal `u32` ids ([`ParseError::Malformed`]).
pub fn parse_status(bytes: &[u8]) -> Result<Status, ParseError> {
    let mut status = Status::default();
    let mut uid: Option<Result<[u32; 4], String>> = None;
    let mut seen_name = false;
    let mut seen_gid = false;
    let mut seen_cap_eff = false;
    let mut seen_cap_prm = false;
    let mut seen_nnp = false;
    let mut seen_seccomp = false;
    let mut seen_nspid = false;

    for line in super::lines(bytes) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let key = &line[..colon];
        let raw_value = &line[colon + 1..];
        let value = raw_value.trim_ascii();
        match key {
            b"Name" if !seen_name => {
                seen_name = true;
                // The kernel writes exactly one tab after the colon; the name
                // itself may begin or end with spaces, so strip nothing else.
                let raw = raw_value.strip_prefix(b"\t").unwrap_or(raw_value);
                status.name = unescape_name(raw);
            }
            b"Uid" if uid.is_none() => {
                uid = Some(parse_ids(value).ok_or_else(|| preview(value)));
            }
            b"Gid" if !seen_gid => {
                seen_gid = true;
                if let Some(ids) = parse_ids(value) {
                    status.gid = ids;
                }
            }
            b"CapEff" if !seen_cap_eff => {
                seen_cap_eff = true;
                status.cap_eff = parse_hex_u64(value).unwrap_or(0);
            }
            b"CapPrm" if !seen_cap_prm => {
                seen_cap_prm = true;
                status.cap_prm = parse_hex_u64(value).unwrap_or(0);
            }
            b"NoNewPrivs" if !seen_nnp => {
                seen_nnp = true;
                status.no_new_privs = match value {
                    b"0" => Some(false),
                    b"1" => Some(true),
                    _ => None,
                };
            }
            b"Seccomp" if !seen_seccomp => {
                seen_seccomp = true;
                // Modes 0..=2 exist today; accept any small number so a future
                // mode is reported rather than hidden.
                status.seccomp = parse_dec_u64(value).and_then(|v| u8::try_from(v).ok());
            }
            b"NSpid" if !seen_nspid => {
                seen_nspid = true;
                let ids: Option<Vec<u32>> = super::fields(value).map(parse_dec_u32).collect();
                status.nspid = ids.unwrap_or_default();
            }
            _ => {}
        }
    }

    match uid {
        Some(Ok(ids)) => {
            status.uid = ids;
            Ok(status)
        }
        Some(Err(shown)) => Err(malformed("status Uid line", format!("'{shown}'"))),
        None => Err(ParseError::Missing {
            what: "status Uid line",
        }),
    }
}

/// Parses exactly four whitespace-separated decimal ids.
fn parse_ids(value: &[u8]) -> Option<[u32; 4]> {
    let mut out = [0u32; 4];
    let mut it = super::fields(value);
    for slot in &mut out {
        *slot = parse_dec_u32(it.next()?)?;
    }
    if it.next().is_some() {
        return None;
    }
    Some(out)
}

/// Decodes the two escapes the kernel applies to `Name:` (`\n` and `\\`).
/// Any other backslash sequence cannot come from the kernel and is kept
/// verbatim.
fn unescape_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], raw.get(i + 1)) {
            (b'\\', Some(b'n')) => {
                out.push(b'\n');
                i += 2;
            }
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A real `/proc/self/status` from an x86-64 Debian host (kernel 6.x), with
/// the long `Mems_allowed` line shortened.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] = b"Name:\tcat
Umask:\t0022
State:\tR (running)
Tgid:\t5155
Ngid:\t0
Pid:\t5155
PPid:\t5145
TracerPid:\t0
Uid:\t1000\t1000\t1000\t1000
Gid:\t1000\t1000\t1000\t1000
FDSize:\t256
Groups:\t 
NStgid:\t5155\t12
NSpid:\t5155\t12
NSpgid:\t5145\t1
NSsid:\t4482\t1
Kthread:\t0
VmPeak:\t    3060 kB
VmSize:\t    3060 kB
VmRSS:\t    1772 kB
Threads:\t1
SigQ:\t1/96365
SigPnd:\t0000000000000000
ShdPnd:\t0000000000000000
SigBlk:\t0000000000000000
SigIgn:\t0000000000000000
SigCgt:\t0000000000000000
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
Seccomp:\t2
Seccomp_filters:\t1
Speculation_Store_Bypass:\tvulnerable
SpeculationIndirectBranch:\talways enabled
Cpus_allowed:\t3
Cpus_allowed_list:\t0-1
Mems_allowed:\t00000000,00000001
Mems_allowed_list:\t0
voluntary_ctxt_switches:\t0
nonvoluntary_ctxt_switches:\t0
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample() {
        let s = parse_status(SAMPLE).unwrap();
        assert_eq!(
            s,
            Status {
                name: b"cat".to_vec(),
                uid: [1000; 4],
                gid: [1000; 4],
                cap_eff: 0x1ff_feff_ffff,
                cap_prm: 0x1ff_feff_ffff,
                no_new_privs: Some(false),
                seccomp: Some(2),
                nspid: vec![5155, 12],
            }
        );
    }

    #[test]
    fn the_real_self_status_parses() {
        // Test-only I/O: the parser itself never reads files.
        let Ok(bytes) = std::fs::read("/proc/self/status") else {
            return;
        };
        let s = parse_status(&bytes).unwrap();
        assert!(!s.name.is_empty());
        assert_eq!(s.nspid.first().copied(), Some(std::process::id()));
    }

    #[test]
    fn distinct_ids_keep_their_order() {
        let s = parse_status(b"Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n").unwrap();
        assert_eq!(s.uid, [1, 2, 3, 4]);
        assert_eq!(s.gid, [5, 6, 7, 8]);
        // Old kernels and minimal fixtures: everything optional is defaulted.
        assert_eq!(s.no_new_privs, None);
        assert_eq!(s.seccomp, None);
        assert!(s.nspid.is_empty());
        assert!(s.name.is_empty());
    }

    #[test]
    fn uid_is_required() {
        assert_eq!(
            parse_status(b"Name:\tx\nGid:\t0\t0\t0\t0\n"),
            Err(ParseError::Missing {
                what: "status Uid line"
            })
        );
        for bad in [
            &b"Uid:\t0\t0\t0\n"[..],
            b"Uid:\t0\t0\t0\t0\t0\n",
            b"Uid:\t0\t0\t0\t4294967296\n",
            b"Uid:\t0\t0\t0\t-1\n",
            b"Uid:\n",
            b"Uid:\t0\t0\t\xff\t0\n",
        ] {
            let e = parse_status(bad).unwrap_err();
            assert!(matches!(e, ParseError::Malformed { .. }), "{e}");
        }
        // The first Uid line wins, even if a later one is well-formed.
        assert!(parse_status(b"Uid:\tx\nUid:\t0\t0\t0\t0\n").is_err());
        // "Uid" must be the whole key.
        assert!(parse_status(b"XUid:\t0\t0\t0\t0\n").is_err());
    }

    #[test]
    fn optional_fields_tolerate_garbage() {
        let s = parse_status(
            b"Uid:\t0\t0\t0\t0\nGid:\t1\nCapEff:\tzz\nCapPrm:\t1ffffffffffffffff\n\
              NoNewPrivs:\t2\nSeccomp:\t256\nNSpid:\t1\tx\n",
        )
        .unwrap();
        assert_eq!(s.gid, [0; 4]);
        assert_eq!((s.cap_eff, s.cap_prm), (0, 0));
        assert_eq!(s.no_new_privs, None);
        assert_eq!(s.seccomp, None);
        assert!(s.nspid.is_empty());
        let s = parse_status(b"Uid:\t0\t0\t0\t0\nNoNewPrivs:\t1\nSeccomp:\t0\n").unwrap();
        assert_eq!((s.no_new_privs, s.seccomp), (Some(true), Some(0)));
    }

    #[test]
    fn names_are_unescaped() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"Name:\tplain", b"plain"),
            (b"Name:\ta\\nb", b"a\nb"),
            (b"Name:\ta\\\\nb", b"a\\nb"),
            (b"Name:\t  sp ace  ", b"  sp ace  "),
            (b"Name:\ttab\there", b"tab\there"),
            (b"Name:\t\xff\xfe\0", b"\xff\xfe\0"),
            (b"Name:\ttrailing\\", b"trailing\\"),
            (b"Name:\t\\x", b"\\x"),
            (b"Name:\t", b""),
            (b"Name:", b""),
            (b"Name:\tcolon: inside", b"colon: inside"),
        ];
        for &(line, want) in cases {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\nUid:\t0\t0\t0\t0\n");
            assert_eq!(
                parse_status(&input).unwrap().name,
                want,
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn hostile_inputs() {
        assert!(parse_status(b"").is_err());
        assert!(parse_status(b"\0\0\0").is_err());
        assert!(parse_status(&vec![b':'; 4 << 20]).is_err());
        // A 4 MiB Uid line fails with a short message.
        let mut l = b"Uid:\t".to_vec();
        l.extend(std::iter::repeat_n(b'9', 4 << 20));
        let e = parse_status(&l).unwrap_err().to_string();
        assert!(e.len() < 100, "{} bytes", e.len());
        // A 4 MiB name and a 4 MiB NSpid list are fine.
        let mut l = b"Name:\t".to_vec();
        l.extend(std::iter::repeat_n(b'\\', 4 << 20));
        l.extend_from_slice(b"\nNSpid:");
        for _ in 0..(1 << 19) {
            l.extend_from_slice(b"\t1");
        }
        l.extend_from_slice(b"\nUid:\t0\t0\t0\t0");
        let s = parse_status(&l).unwrap();
        assert_eq!(s.name.len(), 2 << 20);
        assert_eq!(s.nspid.len(), 1 << 19);
        // Truncations of the sample: an error before the Uid line is complete,
        // success after it.
        let uid_end = SAMPLE.windows(4).position(|w| w == b"Gid:").unwrap();
        for n in 0..SAMPLE.len() {
            let r = parse_status(&SAMPLE[..n]);
            // Cutting inside the last uid still yields four numbers, just a
            // smaller last one, so only cuts before its first digit fail.
            if n < uid_end - 4 {
                assert!(r.is_err(), "prefix {n}");
            } else {
                assert!(r.is_ok(), "prefix {n}");
            }
        }
    }
}
