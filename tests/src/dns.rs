//! DNS for live tests: network namespaces joined by a veth pair, and a
//! small authoritative DNS server (Debian's python3, standard library only)
//! that answers a fixed zone on an address the test chose: A, AAAA and
//! CNAME chains, NXDOMAIN for anything else. Nothing is sent to this
//! machine's own resolver: the test's clients ask the server's address
//! explicitly ([`RESOLVE_PY`]).
//!
//! Every namespace, link and process here has a Drop guard, so a failing
//! assertion leaves nothing behind. Root is assumed (CI runs as root).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::IpAddr,
    process::{Child, Command, Stdio},
};

/// Runs a command that must succeed.
pub fn run(cmd: &str, args: &[&str]) {
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

/// A network namespace (`ip netns add`), deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` (deleting a stale one of that name first), with its
    /// loopback up.
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// The path `nsenter --net=` takes.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the links in it, veth peers included.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair named `{prefix}a` (in `a`) and
/// `{prefix}b` (in `b`), both up. The links go with the namespaces.
pub fn veth(prefix: &str, a: &Netns, b: &Netns) -> (String, String) {
    let (la, lb) = (format!("{prefix}a"), format!("{prefix}b"));
    run(
        "ip",
        &[
            "link", "add", &la, "netns", &a.name, "type", "veth", "peer", "name", &lb, "netns",
            &b.name,
        ],
    );
    a.ip(&["link", "set", &la, "up"]);
    b.ip(&["link", "set", &lb, "up"]);
    (la, lb)
}

/// One resource record of a [`Zone`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A(IpAddr, u32),
    Aaaa(IpAddr, u32),
    Cname(String, u32),
}

/// What a [`DnsServer`] answers: names (lower case, no trailing dot) and
/// their records. A name with a CNAME is answered with the chain, then the
/// records of the type asked at its end.
#[derive(Debug, Clone, Default)]
pub struct Zone(BTreeMap<String, Vec<Record>>);

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    pub fn a(mut self, name: &str, ip: &str, ttl: u32) -> Zone {
        let ip = ip.parse().expect("an IPv4 address");
        self.0
            .entry(name.into())
            .or_default()
            .push(Record::A(ip, ttl));
        self
    }

    pub fn aaaa(mut self, name: &str, ip: &str, ttl: u32) -> Zone {
        let ip = ip.parse().expect("an IPv6 address");
        self.0
            .entry(name.into())
            .or_default()
            .push(Record::Aaaa(ip, ttl));
        self
    }

    pub fn cname(mut self, name: &str, target: &str, ttl: u32) -> Zone {
        self.0
            .entry(name.into())
            .or_default()
            .push(Record::Cname(target.into(), ttl));
        self
    }

    /// The zone as the server script reads it: {name: [[type, value, ttl]]}.
    fn json(&self) -> String {
        let v: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(name, records)| {
                let rs = records
                    .iter()
                    .map(|r| match r {
                        Record::A(ip, ttl) => serde_json::json!(["A", ip.to_string(), ttl]),
                        Record::Aaaa(ip, ttl) => serde_json::json!(["AAAA", ip.to_string(), ttl]),
                        Record::Cname(t, ttl) => serde_json::json!(["CNAME", t, ttl]),
                    })
                    .collect();
                (name.clone(), serde_json::Value::Array(rs))
            })
            .collect();
        serde_json::Value::Object(v).to_string()
    }
}

/// The server: one UDP socket on ADDR:53, names written uncompressed, QR,
/// RD and RA set, NXDOMAIN for a name it does not hold. argv: zone JSON,
/// address.
const SERVER_PY: &str = r#"
import json, socket, struct, sys
zone = json.loads(sys.argv[1])
addr = sys.argv[2]
s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
print('ready', flush=True)
def enc(n):
    return b''.join(bytes([len(l)]) + l.encode() for l in n.split('.') if l) + b'\0'
def rr(name, ty, ttl, data):
    return enc(name) + struct.pack('>HHIH', ty, 1, ttl, len(data)) + data
while True:
    q, peer = s.recvfrom(4096)
    try:
        qid = struct.unpack('>H', q[:2])[0]
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode())
            i += 1 + q[i]
        qtype = struct.unpack('>H', q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = '.'.join(labels).lower()
        known = name in zone
        ans, seen = [], set()
        while name in zone and name not in seen:
            seen.add(name)
            cn = [r for r in zone[name] if r[0] == 'CNAME']
            if cn:
                ans.append(rr(name, 5, cn[0][2], enc(cn[0][1])))
                name = cn[0][1]
                continue
            for ty, value, ttl in zone[name]:
                if ty == 'A' and qtype == 1:
                    ans.append(rr(name, 1, ttl, socket.inet_pton(socket.AF_INET, value)))
                if ty == 'AAAA' and qtype == 28:
                    ans.append(rr(name, 28, ttl, socket.inet_pton(socket.AF_INET6, value)))
            break
        flags = 0x8180 | (0 if known else 3)
        s.sendto(struct.pack('>HHHHHH', qid, flags, 1, len(ans), 0, 0) + question + b''.join(ans), peer)
    except Exception as e:
        print('bad query:', e, file=sys.stderr, flush=True)
"#;

/// A Python function for test clients, standard library only:
/// `resolve(server, name, qtype=1)` sends one query to `server` port 53
/// (never the host's resolver) and returns the addresses in the answer
/// (A for qtype 1, AAAA for 28), in order. Follows no CNAME itself: the
/// server sends the chain.
pub const RESOLVE_PY: &str = r#"
import random as _random, socket as _socket, struct as _struct
def resolve(server, name, qtype=1):
    qid = _random.randrange(65536)
    q = _struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.') if l) + b'\0'
    q += _struct.pack('>HH', qtype, 1)
    fam = _socket.AF_INET6 if ':' in server else _socket.AF_INET
    s = _socket.socket(fam, _socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, (server, 53))
    r = s.recv(4096)
    s.close()
    an = _struct.unpack('>H', r[6:8])[0]
    i = 12
    while r[i]:
        i += 1 + r[i]
    i += 5
    out = []
    for _ in range(an):
        while r[i] and r[i] < 0xC0:
            i += 1 + r[i]
        i += 2 if r[i] >= 0xC0 else 1
        ty, _c, _t, n = _struct.unpack('>HHIH', r[i:i + 10])
        i += 10
        if ty == 1:
            out.append(_socket.inet_ntop(_socket.AF_INET, r[i:i + n]))
        if ty == 28:
            out.append(_socket.inet_ntop(_socket.AF_INET6, r[i:i + n]))
        i += n
    return out
"#;

/// A DNS server for `zone` on `addr` port 53, in network namespace
/// `netns` (None: the caller's), in the caller's cgroup. Killed when
/// dropped.
pub struct DnsServer {
    child: Option<Child>,
    pub addr: IpAddr,
}

impl DnsServer {
    pub fn start(netns: Option<&Netns>, addr: IpAddr, zone: &Zone) -> DnsServer {
        let addr_text = addr.to_string();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.path()))
                    .arg("/usr/bin/python3");
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = cmd
            .args(["-c", SERVER_PY, &zone.json(), &addr_text])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the DNS server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let server = DnsServer {
            child: Some(child),
            addr,
        };
        assert_eq!(
            line.trim(),
            "ready",
            "the DNS server on {addr} did not start"
        );
        server
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
