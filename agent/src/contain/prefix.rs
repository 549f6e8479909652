//! Address prefixes for the allow-list, and the resolv.conf parser that
//! gives a workload's DNS resolvers. Parsers: bytes or strings in, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 or IPv6 prefix, `addr/len`, with the host bits cleared. A bare
/// address is a host prefix (/32 or /128). An IPv6 prefix inside
/// `::ffff:0:0/96` (v4-mapped) becomes the IPv4 prefix it stands for: a
/// dual-stack socket's connects to such an address are checked, and its
/// packets sent, as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The length is not a number within the family's bits.
    #[error("bad prefix length in {0:?}")]
    Length(String),
}

impl Prefix {
    /// `addr/len`; host bits are cleared. Fails if `len` exceeds the
    /// family's bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        match addr {
            IpAddr::V4(a) if len <= 32 => Ok(Prefix {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(len))),
                len,
            }),
            IpAddr::V6(a) if len <= 128 => {
                if len >= 96
                    && let Some(v4) = a.to_ipv4_mapped()
                {
                    return Prefix::new(IpAddr::V4(v4), len - 96);
                }
                Ok(Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(len))),
                    len,
                })
            }
            _ => Err(PrefixError::Length(format!("{addr}/{len}"))),
        }
    }

    /// The prefix of one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix::new(addr, len).expect("a host length is always valid")
    }

    /// The first address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => u32::from(a) & mask32(self.len) == u32::from(p),
            (IpAddr::V6(p), IpAddr::V6(a)) => u128::from(a) & mask128(self.len) == u128::from(p),
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::Address(addr.to_string()))?;
        match len {
            None => Ok(Prefix::host(ip)),
            Some(l) => {
                // Digits only: u8's parser would also take "+8".
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(PrefixError::Length(s.to_string()));
                }
                let len: u8 = l.parse().map_err(|_| PrefixError::Length(s.to_string()))?;
                Prefix::new(ip, len).map_err(|_| PrefixError::Length(s.to_string()))
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How many resolvers glibc and musl use (`MAXNS`): later `nameserver`
/// lines are ignored by the workload, so they are not allowed either.
pub const MAX_NAMESERVERS: usize = 3;

/// The `nameserver` addresses of a resolv.conf, in order, at most
/// [`MAX_NAMESERVERS`]. Comments (`#`, `;`) and other keywords are skipped,
/// as are lines whose address does not parse; an IPv6 zone (`fe80::1%eth0`)
/// is dropped (the allow-list is by address). The caller reads the file
/// (the workload's own, through its root) and allows these with
/// [`Prefix::host`].
pub fn nameservers(resolv_conf: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in resolv_conf.split(|&b| b == b'\n') {
        if out.len() == MAX_NAMESERVERS {
            break;
        }
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        if words.next() != Some(b"nameserver".as_slice()) {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let word = word.split(|&b| b == b'%').next().unwrap_or(word);
        if let Some(ip) = std::str::from_utf8(word).ok().and_then(|w| w.parse().ok())
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_normalises() {
        for (input, want) in [
            ("198.51.100.7", "198.51.100.7/32"),
            ("198.51.100.7/24", "198.51.100.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("::1", "::1/128"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            // v4-mapped: checked as IPv4 by the programs.
            ("::ffff:192.0.2.9", "192.0.2.9/32"),
            ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        ] {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        // A v4-mapped prefix shorter than /96 reaches past the mapped range:
        // it stays IPv6.
        assert_eq!(p("::ffff:0:0/95").to_string(), "::fffe:0:0/95");
    }

    #[test]
    fn rejects_bad_prefixes() {
        for bad in [
            "",
            "/",
            "/8",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/+8",
            "1.2.3.4/-1",
            "::1/129",
            "1.2.3.4/0008",
            "example.org",
            "1.2.3",
            "1.2.3.4/8/8",
            "1.2.3.4 /8",
            "fe80::1%eth0",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn contains_by_family() {
        let net = p("198.51.100.0/24");
        assert!(net.contains("198.51.100.255".parse().unwrap()));
        assert!(!net.contains("198.51.101.0".parse().unwrap()));
        assert!(!net.contains("::ffff:198.51.100.1".parse().unwrap()));
        assert!(p("0.0.0.0/0").contains("203.0.113.1".parse().unwrap()));
        assert!(p("2001:db8::/32").contains("2001:db8:ffff::1".parse().unwrap()));
    }

    #[test]
    fn json_is_the_string_form() {
        let v = vec![p("10.0.0.0/8"), p("::1")];
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8","::1/128"]"#);
        assert_eq!(serde_json::from_str::<Vec<Prefix>>(&json).unwrap(), v);
        assert!(serde_json::from_str::<Prefix>(r#""10.0.0.0/40""#).is_err());
    }

    #[test]
    fn nameservers_of_real_files() {
        // Debian's default with a search line, a comment, an IPv6 resolver
        // with a zone, a duplicate, and a fourth the resolver never uses.
        let conf = b"# Generated by NetworkManager\n\
            search example.internal\n\
            options edns0 trust-ad\n\
            nameserver 192.0.2.53\n\
            ; nameserver 192.0.2.99\n\
            nameserver\tfe80::1%eth0\n\
            nameserver 192.0.2.53\n\
            nameserver    2001:db8::53   # trailing words are ignored\n\
            nameserver 198.51.100.53\n";
        let want: Vec<IpAddr> = ["192.0.2.53", "fe80::1", "2001:db8::53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(nameservers(conf), want);
        // Kubernetes' ClusterFirst.
        assert_eq!(
            nameservers(
                b"search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
            ),
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        // systemd-resolved's stub, no trailing newline, CRLF.
        assert_eq!(
            nameservers(b"nameserver 127.0.0.53\r\noptions edns0"),
            vec!["127.0.0.53".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn nameservers_of_hostile_input() {
        for bad in [
            &b""[..],
            b"nameserver",
            b"nameserver \n",
            b"nameserverx 1.2.3.4",
            b"nameserver not-an-ip",
            b"nameserver 999.1.1.1",
            b"\xff\xfe nameserver 1.2.3.4",
            b"nameserver \xff1.2.3.4",
            b"\0\0\0",
        ] {
            assert!(nameservers(bad).is_empty(), "{bad:?}");
        }
        // A huge file of one repeated server: one pass, one entry each.
        let mut big = b"nameserver 192.0.2.1\n".repeat(100_000);
        big.extend_from_slice(b"nameserver 192.0.2.2\n");
        assert_eq!(nameservers(&big).len(), 2);
    }
}
