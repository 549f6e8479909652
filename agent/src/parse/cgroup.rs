//! Parsers for `/proc/PID/cgroup` and for the `readlink()` values of
//! `/proc/PID/ns/*` and `/proc/PID/fd/*` socket links.
//!
//! `/proc/PID/cgroup` has one line per hierarchy:
//!
//! ```text
//! 4:memory:/process_api/6d274245258b929b949c58f424842e47
//! 1:name=systemd:/system.slice/docker-4f1c....scope
//! 0::/system.slice/containerd.service
//! ```
//!
//! Quirks this parser handles:
//!
//! * cgroup v1 lines carry a hierarchy id and a comma-separated controller
//!   list (named hierarchies appear as `name=...`); the unified cgroup v2
//!   hierarchy is always `0::<path>` with an empty list. Hybrid hosts print
//!   both kinds, pure v2 hosts print only the `0::` line.
//! * The path is printed without any escaping and a cgroup directory name may
//!   contain `:`, so only the first two colons separate fields.
//! * Inside a cgroup namespace the path is relative to the namespace root
//!   and may start with `/..` when the process lives outside it.
//! * For zombie processes or races with exit the file may be empty.
//!
//! Namespace links read like `mnt:[4026531841]` and socket fd links like
//! `socket:[12345]`; the number is the inode, which identifies the namespace
//! or socket across processes.

use super::{parse_dec_u32, parse_dec_u64};

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupLine {
    /// The hierarchy id; 0 for the cgroup v2 unified hierarchy.
    pub hierarchy: u32,
    /// The controllers bound to the hierarchy (`["cpu", "cpuacct"]`,
    /// `["name=systemd"]`), empty for v2. Lossy UTF-8 (controller names are
    /// ASCII on every real kernel).
    pub controllers: Vec<String>,
    /// The cgroup path, byte-exact.
    pub path: Vec<u8>,
}

/// Parses `/proc/PID/cgroup`. Lines that do not have the
/// `hierarchy-ID:controller-list:path` shape, or whose hierarchy id is not a
/// decimal `u32`, are skipped.
pub fn parse_cgroup(bytes: &[u8]) -> Vec<CgroupLine> {
    super::lines(bytes).filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<CgroupLine> {
    let mut parts = line.splitn(3, |&b| b == b':');
    let hierarchy = parse_dec_u32(parts.next()?)?;
    let controllers = parts.next()?;
    // splitn yields the third part only if a second colon was present.
    let path = parts.next()?;
    let controllers = controllers
        .split(|&b| b == b',')
        .filter(|c| !c.is_empty())
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Some(CgroupLine {
        hierarchy,
        controllers,
        path: path.to_vec(),
    })
}

/// Extracts the inode from a namespace link such as `mnt:[4026531841]` or
/// `pid_for_children:[4026531836]`. The type must be a non-empty run of
/// lower-case letters and `_`.
pub fn parse_ns_link(link: &[u8]) -> Option<u64> {
    let open = link.iter().position(|&b| b == b':')?;
    let kind = &link[..open];
    if kind.is_empty() || !kind.iter().all(|&b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    bracketed_number(&link[open + 1..])
}

/// Extracts the inode from a socket fd link `socket:[12345]`. Other fd link
/// kinds (`pipe:[...]`, `anon_inode:[eventfd]`, paths) give `None`.
pub fn parse_socket_link(link: &[u8]) -> Option<u64> {
    bracketed_number(link.strip_prefix(b"socket:")?)
}

/// Parses exactly `[N]` with N a decimal `u64`.
fn bracketed_number(bytes: &[u8]) -> Option<u64> {
    parse_dec_u64(bytes.strip_prefix(b"[")?.strip_suffix(b"]")?)
}

/// A real `/proc/self/cgroup` from a hybrid (v1 + v2) container host.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] = b"\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/6d274245258b929b949c58f424842e47
3:cpuset:/
2:cpuacct,cpu:/
1:net_cls,net_prio:/
0::/
";

#[cfg(test)]
mod tests {
    use super::*;

    fn line(h: u32, c: &[&str], p: &[u8]) -> CgroupLine {
        CgroupLine {
            hierarchy: h,
            controllers: c.iter().map(|s| s.to_string()).collect(),
            path: p.to_vec(),
        }
    }

    #[test]
    fn sample() {
        let lines = parse_cgroup(SAMPLE);
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0], line(9, &["name=systemd"], b"/"));
        assert_eq!(
            lines[5],
            line(
                4,
                &["memory"],
                b"/process_api/6d274245258b929b949c58f424842e47"
            )
        );
        assert_eq!(lines[7], line(2, &["cpuacct", "cpu"], b"/"));
        assert_eq!(lines[9], line(0, &[], b"/"));
    }

    #[test]
    fn the_real_self_cgroup_parses() {
        // Test-only I/O: the parser itself never reads files.
        let Ok(bytes) = std::fs::read("/proc/self/cgroup") else {
            return;
        };
        let lines = parse_cgroup(&bytes);
        assert_eq!(lines.len(), bytes.iter().filter(|&&b| b == b'\n').count());
        assert!(lines.iter().all(|l| l.path.starts_with(b"/")));
    }

    #[test]
    fn v2_and_odd_paths() {
        let input: &[u8] = b"\
0::/system.slice/docker-4f1c2d.scope
0::/user.slice/user-1000.slice/user@1000.service/app.slice/a:b:c.scope
0::/../../outside
1:name=systemd:/with space/and\ttab/\xff\xfe
0::
";
        let lines = parse_cgroup(input);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], line(0, &[], b"/system.slice/docker-4f1c2d.scope"));
        assert_eq!(
            lines[1].path,
            b"/user.slice/user-1000.slice/user@1000.service/app.slice/a:b:c.scope"
        );
        assert_eq!(lines[2].path, b"/../../outside");
        assert_eq!(
            lines[3],
            line(1, &["name=systemd"], b"/with space/and\ttab/\xff\xfe")
        );
        assert_eq!(lines[4], line(0, &[], b""));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let input: &[u8] = b"\
x::/a
-1::/a
4294967296::/a
:memory:/a
0:/a
0
\0::/a

12:cpu,,cpuacct:/ok
";
        assert_eq!(
            parse_cgroup(input),
            vec![line(12, &["cpu", "cpuacct"], b"/ok")]
        );
    }

    #[test]
    fn hostile_inputs() {
        assert!(parse_cgroup(b"").is_empty());
        let big = 4 << 20;
        assert!(parse_cgroup(&vec![b':'; big]).is_empty());
        assert!(parse_cgroup(&vec![b'1'; big]).is_empty());
        assert!(parse_cgroup(&vec![0xff; big]).is_empty());
        // A 4 MiB controller list and a 4 MiB path.
        let mut l = b"1:".to_vec();
        l.extend(b"cpuacct,".repeat(big / 8));
        l.extend_from_slice(b":/");
        l.extend(std::iter::repeat_n(b'p', big));
        let lines = parse_cgroup(&l);
        assert_eq!(lines[0].controllers.len(), big / 8);
        assert_eq!(lines[0].path.len(), big + 1);
        // Truncations never panic and never yield more lines than exist.
        for n in 0..SAMPLE.len() {
            assert!(parse_cgroup(&SAMPLE[..n]).len() <= 10);
        }
    }

    #[test]
    fn ns_links() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"mnt:[4026531841]", Some(4_026_531_841)),
            (b"pid_for_children:[4026531836]", Some(4_026_531_836)),
            (b"cgroup:[0]", Some(0)),
            (b"net:[18446744073709551615]", Some(u64::MAX)),
            (b"net:[18446744073709551616]", None),
            (b"mnt:[]", None),
            (b"mnt:[12", None),
            (b"mnt:12]", None),
            (b"mnt:[12]\n", None),
            (b"mnt:[1 2]", None),
            (b"mnt:[-1]", None),
            (b":[12]", None),
            (b"MNT:[12]", None),
            (b"m/t:[12]", None),
            (b"mnt[12]", None),
            (b"", None),
            (b"\0", None),
            (b"mnt:[\xff]", None),
        ];
        for &(link, want) in cases {
            assert_eq!(parse_ns_link(link), want, "{}", link.escape_ascii());
        }
        let mut big = b"mnt:[".to_vec();
        big.extend(std::iter::repeat_n(b'0', 4 << 20));
        big.push(b']');
        assert_eq!(parse_ns_link(&big), Some(0));
        assert_eq!(parse_ns_link(&vec![b'a'; 4 << 20]), None);
    }

    #[test]
    fn socket_links() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"socket:[12345]", Some(12345)),
            (b"socket:[0]", Some(0)),
            (b"socket:[99999999999999999999]", None),
            (b"pipe:[12345]", None),
            (b"anon_inode:[eventfd]", None),
            (b"/dev/null", None),
            (b"socket:12345", None),
            (b"socket:[12345", None),
            (b"socket:[]", None),
            (b"Socket:[1]", None),
            (b"socket:[1]\0", None),
            (b"", None),
        ];
        for &(link, want) in cases {
            assert_eq!(parse_socket_link(link), want, "{}", link.escape_ascii());
        }
    }

    #[test]
    fn real_links() {
        // Test-only I/O: our own mount namespace and a real socket.
        if let Ok(link) = std::fs::read_link("/proc/self/ns/mnt") {
            let link = link.into_os_string().into_encoded_bytes();
            assert!(parse_ns_link(&link).is_some_and(|n| n > 0));
        }
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        if let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            let link = link.into_os_string().into_encoded_bytes();
            assert!(parse_socket_link(&link).is_some_and(|n| n > 0));
        }
    }
}
