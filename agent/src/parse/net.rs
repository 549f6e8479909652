//! Parser for `/proc/PID/net/{tcp,tcp6,udp,udp6}`: the sockets of a network
//! namespace.
//!
//! Each file starts with a header line (`  sl  local_address rem_address
//! st ...`) followed by one line per socket:
//!
//! ```text
//!    0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 ...
//! ```
//!
//! Quirks this parser handles:
//!
//! * Addresses are printed with `%08X` applied to the raw `__be32` words of
//!   the address, i.e. the network-order bytes reinterpreted as a *host*
//!   integer. On little-endian machines 127.0.0.1 therefore prints as
//!   `0100007F`. We undo this with `to_ne_bytes()`, which is correct for the
//!   machine the file was produced on (parse on the same host).
//! * IPv6 addresses are four such words, 32 hex digits in total. IPv4 vs IPv6
//!   is decided by the digit count (8 vs 32), not by the file name, so the
//!   same function parses all four files. IPv4-mapped sockets in `tcp6` stay
//!   IPv6 (`::ffff:a.b.c.d`).
//! * Ports are already converted to host order and printed as `%04X`.
//! * The state is the kernel's `TCP_*` enum in hex. UDP reuses it: an unbound
//!   or unconnected UDP socket is `TCP_CLOSE` (7), a connected one
//!   `TCP_ESTABLISHED` (1).
//! * Lines are padded with trailing spaces, and the UDP files have extra
//!   trailing columns (`ref pointer drops`); only the first ten columns are
//!   read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{parse_dec_u32, parse_dec_u64, parse_hex_u32, parse_hex_u64};

/// `TCP_LISTEN`: a listening TCP socket.
pub const TCP_LISTEN: u8 = 0x0A;
/// `TCP_ESTABLISHED`: a connected TCP (or connected UDP) socket.
pub const TCP_ESTABLISHED: u8 = 0x01;
/// `TCP_CLOSE` as used by UDP for a bound but unconnected socket.
pub const UDP_UNCONNECTED: u8 = 0x07;

/// One socket from a `/proc/net` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEntry {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (all zeros when not connected).
    pub remote: SocketAddr,
    /// The `TCP_*` state number, see the constants in this module.
    pub state: u8,
    /// Owner uid (in the initial user namespace's terms, as the kernel maps it
    /// for the reader).
    pub uid: u32,
    /// Socket inode, matching the `socket:[N]` links in `/proc/PID/fd`. Zero
    /// for sockets in `TIME_WAIT`, which no longer have an inode.
    pub inode: u64,
}

/// Parses a `/proc/net/{tcp,tcp6,udp,udp6}` table. Returns the entries and
/// the number of malformed lines skipped. The header line (first column
/// `sl`) and blank lines are skipped without being counted.
pub fn parse_net(bytes: &[u8]) -> (Vec<NetEntry>, usize) {
    let mut entries = Vec::new();
    let mut malformed = 0;
    for line in super::lines(bytes) {
        let mut cols = super::fields(line);
        let Some(first) = cols.next() else {
            continue;
        };
        if first == b"sl" {
            continue;
        }
        match parse_line(first, cols) {
            Some(e) => entries.push(e),
            None => malformed += 1,
        }
    }
    (entries, malformed)
}

/// Parses the columns of one socket line; `slot` is the first column.
fn parse_line<'a>(slot: &[u8], mut cols: impl Iterator<Item = &'a [u8]>) -> Option<NetEntry> {
    // The slot number is printed as "%4d:" (or "%5d:" for UDP).
    parse_dec_u64(slot.strip_suffix(b":")?)?;
    let local = parse_sockaddr(cols.next()?)?;
    let remote = parse_sockaddr(cols.next()?)?;
    let state = u8::try_from(parse_hex_u32(cols.next()?)?).ok()?;
    // Skip tx_queue:rx_queue, tr:tm->when and retrnsmt.
    let _queues = cols.next()?;
    let _timer = cols.next()?;
    let _retransmits = cols.next()?;
    let uid = parse_dec_u32(cols.next()?)?;
    let _timeout = cols.next()?;
    let inode = parse_dec_u64(cols.next()?)?;
    Some(NetEntry {
        local,
        remote,
        state,
        uid,
        inode,
    })
}

/// Parses `ADDR:PORT` where ADDR is 8 (IPv4) or 32 (IPv6) hex digits in the
/// kernel's word layout and PORT is hex.
fn parse_sockaddr(field: &[u8]) -> Option<SocketAddr> {
    let colon = field.iter().position(|&b| b == b':')?;
    let (addr, port) = (&field[..colon], &field[colon + 1..]);
    if port.len() > 4 {
        return None;
    }
    let port = u16::try_from(parse_hex_u64(port)?).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(parse_hex_u32(addr)?.to_ne_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (word, out) in addr.chunks_exact(8).zip(octets.chunks_exact_mut(4)) {
                out.copy_from_slice(&parse_hex_u32(word)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A real `/proc/net/tcp` excerpt (x86-64), with a listener on 0.0.0.0:2024
/// and an established loopback connection.
#[cfg(test)]
pub(crate) const SAMPLE_TCP: &[u8] = b"\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1609 1 00000000324f44ea 100 0 0 10 0                      
   1: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000  1000        0 48213 1 000000009a3b1c2d 20 4 30 10 -1                    
   2: 0100007F:A2C4 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 00000000a1b2c3d4                                      
";

/// A `/proc/net/tcp6` excerpt: `[::1]:8080` listening, and an IPv4-mapped
/// connection.
#[cfg(test)]
pub(crate) const SAMPLE_TCP6: &[u8] = b"\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0016 0000000000000000FFFF00000A00000A:D431 01 00000000:00000000 02:0009A4E5 00000000     0        0 654321 2 0000000000000000 20 4 31 10 -1
   2: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 777 1 0000000000000000 100 0 0 10 0
";

/// A `/proc/net/udp` excerpt with the UDP-only trailing columns.
#[cfg(test)]
const SAMPLE_UDP: &[u8] = b"\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
  221: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   102        0 20480 2 00000000deadbeef 0         
";

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn sample_tcp() {
        let (e, bad) = parse_net(SAMPLE_TCP);
        assert_eq!(bad, 0);
        assert_eq!(
            e,
            vec![
                NetEntry {
                    local: sa("0.0.0.0:2024"),
                    remote: sa("0.0.0.0:0"),
                    state: TCP_LISTEN,
                    uid: 0,
                    inode: 1609,
                },
                NetEntry {
                    local: sa("127.0.0.1:8080"),
                    remote: sa("127.0.0.1:41668"),
                    state: TCP_ESTABLISHED,
                    uid: 1000,
                    inode: 48213,
                },
                NetEntry {
                    local: sa("127.0.0.1:41668"),
                    remote: sa("127.0.0.1:8080"),
                    state: 0x06,
                    uid: 0,
                    inode: 0,
                },
            ]
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn sample_tcp6_and_udp() {
        let (e, bad) = parse_net(SAMPLE_TCP6);
        assert_eq!(bad, 0);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].local, sa("[::1]:8080"));
        assert_eq!(e[0].remote, sa("[::]:0"));
        assert_eq!(
            (e[0].state, e[0].uid, e[0].inode),
            (TCP_LISTEN, 1000, 123_456)
        );
        assert_eq!(e[1].local, sa("[::ffff:127.0.0.1]:22"));
        assert_eq!(e[1].remote, sa("[::ffff:10.0.0.10]:54321"));
        assert_eq!(e[2].local, sa("[2001:db8::1]:443"));
        let (e, bad) = parse_net(SAMPLE_UDP);
        assert_eq!(bad, 0);
        assert_eq!(e[0].local, sa("127.0.0.53:53"));
        assert_eq!(
            (e[0].state, e[0].uid, e[0].inode),
            (UDP_UNCONNECTED, 102, 20480)
        );
    }

    #[test]
    fn malformed_lines_are_counted() {
        let good = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        let bad_lines = [
            // Address lengths other than 8 and 32.
            "   0: 100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F00:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
            // Port overflow and junk.
            "   0: 0100007F:10000 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F:00001 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F: 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007G:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
            // State that does not fit a byte.
            "   0: 0100007F:1F90 00000000:0000 100 0:0 0:0 0 0 0 1",
            // uid and inode overflow.
            "   0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 4294967296 0 1",
            "   0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 18446744073709551616",
            // Truncated.
            "   0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0",
            "   0: 0100007F:1F90",
            "   0:",
            // Bad slot.
            "   x: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
        ];
        let mut input = String::from("  sl  local_address rem_address\n\n");
        for l in bad_lines {
            input.push_str(l);
            input.push('\n');
        }
        input.push_str(good);
        let (e, bad) = parse_net(input.as_bytes());
        assert_eq!(bad, bad_lines.len());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].local.port(), 0x1F90);
        // A file without a header parses the same.
        assert_eq!(parse_net(good.as_bytes()).0.len(), 1);
    }

    #[test]
    fn hostile_inputs() {
        assert_eq!(parse_net(b""), (vec![], 0));
        assert_eq!(
            parse_net(SAMPLE_TCP.split(|&b| b == b'\n').next().unwrap()),
            (vec![], 0)
        );
        let big = 4 << 20;
        assert_eq!(parse_net(&vec![b'0'; big]), (vec![], 1));
        assert_eq!(parse_net(&vec![b':'; big]), (vec![], 1));
        assert_eq!(parse_net(&vec![b' '; big]), (vec![], 0));
        assert_eq!(parse_net(&vec![0xff; big]).0, vec![]);
        // A valid line followed by 4 MiB of trailing columns still parses.
        let mut l = SAMPLE_TCP6.split(|&b| b == b'\n').nth(1).unwrap().to_vec();
        for _ in 0..(big / 2) {
            l.extend_from_slice(b" 0");
        }
        assert_eq!(parse_net(&l).0.len(), 1);
        // NUL and invalid UTF-8 inside columns.
        let (e, bad) = parse_net(b"   0: 0100007F:1F90\0 00000000:0000 0A 0:0 0:0 0 0 0 1\n\xff\n");
        assert_eq!((e.len(), bad), (0, 2));
        // Every truncation of every sample line parses or is counted.
        for sample in [SAMPLE_TCP, SAMPLE_TCP6, SAMPLE_UDP] {
            for n in 0..sample.len() {
                let (e, bad) = parse_net(&sample[..n]);
                assert!(e.len() + bad <= 4);
            }
        }
    }

    /// Finds a listener in a live table (test-only I/O).
    fn find_listener(table: &str, local: SocketAddr) -> Option<NetEntry> {
        let bytes = std::fs::read(table).ok()?;
        let (entries, bad) = parse_net(&bytes);
        assert_eq!(bad, 0, "{table}");
        entries
            .into_iter()
            .find(|e| e.local == local && e.state == TCP_LISTEN)
    }

    #[test]
    fn finds_real_listeners() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = v4.local_addr().unwrap();
        let Some(e) = find_listener("/proc/self/net/tcp", addr) else {
            if std::fs::metadata("/proc/self/net/tcp").is_err() {
                return;
            }
            panic!("listener {addr} not found in /proc/self/net/tcp");
        };
        assert_ne!(e.inode, 0);
        assert_eq!(e.remote, sa("0.0.0.0:0"));

        // IPv6 may be disabled in a container; only then is a skip allowed.
        match std::net::TcpListener::bind("[::1]:0") {
            Ok(v6) => {
                let addr = v6.local_addr().unwrap();
                let e = find_listener("/proc/self/net/tcp6", addr)
                    .unwrap_or_else(|| panic!("listener {addr} not found in tcp6"));
                assert_ne!(e.inode, 0);
            }
            Err(err) => eprintln!("no IPv6 loopback ({err}); skipping tcp6"),
        }

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let bytes = std::fs::read("/proc/self/net/udp").unwrap();
        let (entries, bad) = parse_net(&bytes);
        assert_eq!(bad, 0);
        assert!(
            entries
                .iter()
                .any(|e| e.local == addr && e.state == UDP_UNCONNECTED),
            "udp socket {addr} not found"
        );
    }
}
