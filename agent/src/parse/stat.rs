//! Parsers for `/proc/PID/stat` (one process) and the `btime` line of
//! `/proc/stat` (the whole system).
//!
//! `/proc/PID/stat` is a single line printed by `do_task_stat()`:
//!
//! ```text
//! 5157 (cat) R 5145 5145 4482 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 17087 ...
//! ```
//!
//! The second field is the task's `comm` in parentheses, printed raw: it is
//! up to 15 bytes chosen by the process itself (via `prctl(PR_SET_NAME)` or
//! by writing `/proc/PID/comm`) and may contain spaces, parentheses, newlines
//! and arbitrary non-UTF-8 bytes. No field after it can contain `)`, so the
//! comm ends at the *last* `)` in the line. The fields after it are all
//! numbers or the one-letter state, separated by single spaces.
//!
//! Field 22 (1-based, counting pid as 1 and comm as 2) is `starttime`, the
//! process start time in clock ticks since boot. Combined with `btime` from
//! `/proc/stat` (seconds since the epoch at boot) it yields a start time that,
//! together with the pid, identifies a process even across pid reuse.

use super::{ParseError, malformed, parse_dec_u32, parse_dec_u64, preview};

/// The fields of `/proc/PID/stat` the agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1: the process (or thread) id.
    pub pid: u32,
    /// Field 2: the raw command name, without the parentheses.
    pub comm: Vec<u8>,
    /// Field 3: the state letter, e.g. `b'R'`, `b'S'`, `b'Z'`.
    pub state: u8,
    /// Field 4: the parent process id (0 for init and kernel threads).
    pub ppid: u32,
    /// Field 20: threads in the thread group (0 if unreadable). A zombie
    /// leader with threads left is a running process.
    pub num_threads: u32,
    /// Field 22: start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// The 1-based index of `num_threads` in the whole line.
const NUM_THREADS_FIELD: usize = 20;
/// The 1-based index of `starttime` in the whole line.
const STARTTIME_FIELD: usize = 22;
/// The 1-based index of the first field after the comm.
const FIRST_FIELD_AFTER_COMM: usize = 3;

/// Parses the contents of `/proc/PID/stat`.
///
/// # Errors
///
/// Returns [`ParseError::Malformed`] if the parentheses around the comm are
/// missing, the line ends before `starttime`, or the pid, state, ppid or
/// starttime is not a valid number (or letter).
pub fn parse_stat(bytes: &[u8]) -> Result<Stat, ParseError> {
    const WHAT: &str = "stat";
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or_else(|| malformed(WHAT, "no '(' before comm"))?;
    // The comm may itself contain ')' (and '('), so it ends at the last ')'.
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&c| c > open)
        .ok_or_else(|| malformed(WHAT, "no ')' after comm"))?;

    let pid_field = bytes[..open].trim_ascii();
    let pid = parse_dec_u32(pid_field)
        .ok_or_else(|| malformed(WHAT, format!("bad pid '{}'", preview(pid_field))))?;
    let comm = bytes[open + 1..close].to_vec();

    // Everything after the comm is space separated. Splitting on any ASCII
    // whitespace also absorbs the trailing newline.
    let mut rest = bytes[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());

    let state = match rest.next() {
        Some(&[s]) => s,
        Some(other) => {
            return Err(malformed(WHAT, format!("bad state '{}'", preview(other))));
        }
        None => return Err(malformed(WHAT, "truncated after comm")),
    };
    let ppid_field = rest
        .next()
        .ok_or_else(|| malformed(WHAT, "truncated before ppid"))?;
    let ppid = parse_dec_u32(ppid_field)
        .ok_or_else(|| malformed(WHAT, format!("bad ppid '{}'", preview(ppid_field))))?;
    // State and ppid are fields 3 and 4, so num_threads is this many
    // further on, and starttime two after it.
    let skip = NUM_THREADS_FIELD - FIRST_FIELD_AFTER_COMM - 2;
    let num_threads = rest.nth(skip).and_then(parse_dec_u32).unwrap_or(0);
    let skip = STARTTIME_FIELD - NUM_THREADS_FIELD - 1;
    let start_field = rest
        .nth(skip)
        .ok_or_else(|| malformed(WHAT, "truncated before starttime"))?;
    let start_ticks = parse_dec_u64(start_field)
        .ok_or_else(|| malformed(WHAT, format!("bad starttime '{}'", preview(start_field))))?;

    Ok(Stat {
        pid,
        comm,
        state,
        ppid,
        num_threads,
        start_ticks,
    })
}

/// Extracts the boot time (seconds since the Unix epoch) from the
/// `btime N` line of `/proc/stat`.
///
/// # Errors
///
/// Returns [`ParseError::Missing`] if there is no `btime` line and
/// [`ParseError::Malformed`] if its value is not a decimal `u64`.
pub fn parse_btime(proc_stat: &[u8]) -> Result<u64, ParseError> {
    for line in super::lines(proc_stat) {
        let Some(value) = line.strip_prefix(b"btime") else {
            continue;
        };
        // Require a separator so that a hypothetical "btimefoo" line is not
        // mistaken for it.
        if !value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let value = value.trim_ascii();
        return parse_dec_u64(value)
            .ok_or_else(|| malformed("btime line", format!("bad value '{}'", preview(value))));
    }
    Err(ParseError::Missing { what: "btime line" })
}

/// A real `/proc/self/stat` line from an x86-64 Debian host.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] = b"5157 (cat) R 5145 5145 4482 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 17087 3133440 406 18446744073709551615 94015078469632 94015078489513 140729309191056 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94015078505520 94015078507136 94015306813440 140729309198868 140729309198888 140729309198888 140729309200363 0\n";

/// An excerpt of `/proc/stat`.
#[cfg(test)]
pub(crate) const SAMPLE_PROC_STAT: &[u8] = b"\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0
cpu0 1393280 32966 572056 13366824 6371 0 22683 0 0 0
intr 199292720 10 9 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 418342451
btime 1795893335
processes 1170553
procs_running 2
procs_blocked 0
softirq 107374839 2 22633398 125 2316097 0 0 1542 33007440 0 49414235
";

#[cfg(test)]
mod tests {
    use super::*;

    fn line_with_comm(comm: &[u8]) -> Vec<u8> {
        let mut v = b"42 (".to_vec();
        v.extend_from_slice(comm);
        v.extend_from_slice(
            b") S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654321 1 2 3\n",
        );
        v
    }

    #[test]
    fn sample() {
        let s = parse_stat(SAMPLE).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 5157,
                comm: b"cat".to_vec(),
                state: b'R',
                ppid: 5145,
                num_threads: 1,
                start_ticks: 17087,
            }
        );
    }

    #[test]
    fn the_real_self_stat_parses() {
        // Test-only I/O: the parser itself never reads files.
        let Ok(bytes) = std::fs::read("/proc/self/stat") else {
            return;
        };
        let s = parse_stat(&bytes).unwrap();
        assert_eq!(s.pid, std::process::id());
        assert!(s.start_ticks > 0);
        assert!(s.num_threads >= 1, "{s:?}");
        let Ok(proc_stat) = std::fs::read("/proc/stat") else {
            return;
        };
        assert!(parse_btime(&proc_stat).unwrap() > 1_000_000_000);
    }

    #[test]
    fn hostile_comms() {
        let cases: &[&[u8]] = &[
            b"a) S 1 2 3 (x",
            b"))))",
            b"",
            b" ",
            b"(",
            b"we\nird\n",
            b"\0nul\0",
            b"\xff\xfe\xc3\x28",
            b"1 (2) 3",
        ];
        for &comm in cases {
            let s = parse_stat(&line_with_comm(comm)).unwrap();
            assert_eq!(s.comm, comm, "{}", comm.escape_ascii());
            assert_eq!((s.pid, s.state, s.ppid), (42, b'S', 1));
            assert_eq!(s.start_ticks, 987_654_321);
        }
    }

    #[test]
    fn errors() {
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"42 cat R 1").is_err());
        assert!(parse_stat(b"42 (cat R 1").is_err());
        assert!(parse_stat(b"42 )cat( R 1").is_err());
        assert!(parse_stat(b"(cat) R 1").is_err());
        assert!(parse_stat(b"-1 (cat) R 1").is_err());
        assert!(parse_stat(b"4294967296 (cat) R 1").is_err());
        assert!(parse_stat(b"42 (cat)").is_err());
        assert!(parse_stat(b"42 (cat) RR 1").is_err());
        assert!(parse_stat(b"42 (cat) R").is_err());
        assert!(parse_stat(b"42 (cat) R x").is_err());
        // Every truncation of a valid line fails cleanly.
        for n in 0..SAMPLE.len() {
            let prefix = &SAMPLE[..n];
            let end_of_starttime =
                b"5157 (cat) R 5145 5145 4482 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 1".len();
            let r = parse_stat(prefix);
            if n >= end_of_starttime {
                assert!(r.is_ok(), "prefix {n}");
            } else {
                assert!(r.is_err(), "prefix {n}");
            }
        }
        // A starttime that overflows u64.
        let mut l = line_with_comm(b"x");
        let at = l.windows(9).position(|w| w == b"987654321").unwrap();
        l.splice(at..at + 9, b"18446744073709551616".iter().copied());
        let e = parse_stat(&l).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed stat: bad starttime '18446744073709551616'"
        );
    }

    #[test]
    fn huge_inputs() {
        // A 4 MiB comm (impossible from the kernel, but hostile input).
        let s = parse_stat(&line_with_comm(&vec![b')'; 4 << 20])).unwrap();
        assert_eq!(s.comm.len(), 4 << 20);
        // A 4 MiB line with no structure, and a 4 MiB pid.
        assert!(parse_stat(&vec![b'('; 4 << 20]).is_err());
        let mut l = vec![b'9'; 4 << 20];
        l.extend_from_slice(b" (x) R 1");
        let e = parse_stat(&l).unwrap_err().to_string();
        assert!(
            e.len() < 100,
            "error message echoes input: {} bytes",
            e.len()
        );
        assert!(parse_btime(&vec![b'\n'; 4 << 20]).is_err());
    }

    #[test]
    fn btime() {
        assert_eq!(parse_btime(SAMPLE_PROC_STAT), Ok(1_795_893_335));
        assert_eq!(parse_btime(b"btime 7"), Ok(7));
        assert_eq!(parse_btime(b"btime\t7\r\n"), Ok(7));
        assert_eq!(
            parse_btime(b"cpu 1\nbtimex 5\n"),
            Err(ParseError::Missing { what: "btime line" })
        );
        assert!(matches!(
            parse_btime(b"btime 18446744073709551616\n"),
            Err(ParseError::Malformed { .. })
        ));
        assert!(parse_btime(b"btime \n").is_err());
        assert!(parse_btime(b"btime -1\n").is_err());
        assert!(parse_btime(b"").is_err());
        assert!(parse_btime(b"\0btime 5").is_err());
        assert_eq!(
            parse_btime(b"\xff\xfe\nbtime 5\0\n"),
            Err(malformed("btime line", "bad value '5\\x00'"))
        );
    }
}
