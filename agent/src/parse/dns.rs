//! DNS answers as the kernel copied them (`pg_dns`, at most 512 bytes of a
//! packet from source port 53): which addresses the asking workload was
//! told, under which names, for how long.
//!
//! The wire format is simple-dns's business (a lean, dependency-free
//! parser: names with compression pointers that must point backwards, so a
//! pointer loop is an error, not a hang; names capped at 255 bytes). This
//! module decides what a response means for the agent: the question's
//! name, the address records, and the CNAME chain from the one to the
//! other ([`Answer::bindings`]).
//!
//! Bounded: the input is at most what the caller passes (the kernel record
//! holds 512 bytes); header counts that the bytes cannot hold are refused
//! before anything is allocated for them; a message cut by the kernel's
//! bound is salvaged by parsing the answer records that are complete, at
//! most [`MAX_RECORDS`] tries of at most that many bytes.

use std::net::IpAddr;

use simple_dns::{CLASS, Packet, PacketFlag, RCODE, rdata::RData};

/// Records one message may claim across its four sections. 512 bytes hold
/// at most 46 (a record is at least 11 bytes); TCP answers may be longer
/// but are cut at the same 512 bytes by the kernel.
pub const MAX_RECORDS: usize = 128;

/// CNAME links followed from the question's name; a longer chain (or a
/// loop) ends there.
pub const MAX_CHAIN: usize = 8;

/// Why a packet from port 53 says nothing the agent can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Fewer bytes than a DNS header (12), or a TCP segment shorter than
    /// its length prefix.
    #[error("dns message truncated: {len} bytes")]
    Short { len: usize },
    /// The QR bit is clear: a query, not an answer (a resolver on this
    /// host answering from port 53 sends answers; a query from port 53 is
    /// someone else's business).
    #[error("dns message is a query, not a response")]
    NotAResponse,
    /// The header claims more records than its bytes can hold.
    #[error("dns header claims {claimed} records in {len} bytes")]
    Counts { claimed: usize, len: usize },
    /// The wire format is broken (a label past the end, a forward or
    /// looping compression pointer, a name over 255 bytes, ...), and no
    /// complete answer record could be salvaged.
    #[error("malformed dns message: {reason}")]
    Malformed { reason: String },
}

/// One address record and the names that lead to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub ip: IpAddr,
    /// The name the process asked for first, then each CNAME target in
    /// order, down to the name that holds the address record. Lower case,
    /// without the trailing dot.
    pub names: Vec<String>,
    /// The smallest TTL along the chain, in seconds: the binding is only as
    /// fresh as its weakest link.
    pub ttl: u32,
}

/// What one response said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The question's name (lower case, no trailing dot); empty when the
    /// response carries no question.
    pub question: String,
    /// The response code (0 NOERROR, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// Address records (A, AAAA) of the answer section: owner, address, TTL.
    pub addresses: Vec<(String, IpAddr, u32)>,
    /// CNAME records of the answer section: alias, target, TTL.
    pub aliases: Vec<(String, String, u32)>,
    /// Answer records were dropped because the message was cut (by the
    /// kernel's 512-byte bound or by the server's TC bit).
    pub partial: bool,
}

/// The DNS message inside a TCP segment that starts one: a 2-byte length,
/// then the message (RFC 1035 4.2.2). The message may continue past the
/// segment; the parser then salvages what is complete.
pub fn tcp_message(segment: &[u8]) -> Result<&[u8], DnsError> {
    match segment {
        [hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            Ok(&rest[..len.min(rest.len())])
        }
        _ => Err(DnsError::Short { len: segment.len() }),
    }
}

/// Parses one DNS response. Never panics; the work is bounded by the input
/// length (see the module's doc).
pub fn parse_response(msg: &[u8]) -> Result<Answer, DnsError> {
    const HEADER: usize = 12;
    if msg.len() < HEADER {
        return Err(DnsError::Short { len: msg.len() });
    }
    if msg[2] & 0x80 == 0 {
        return Err(DnsError::NotAResponse);
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    // simple-dns reserves room for every record the header claims: more
    // than MAX_RECORDS, or questions (at least 5 bytes each) the bytes
    // cannot hold, are refused first. (Records past the bytes are allowed:
    // that is a message the kernel cut, salvaged below.)
    let claimed = qd + an + ns + ar;
    if claimed > MAX_RECORDS || HEADER + 5 * qd > msg.len() {
        return Err(DnsError::Counts {
            claimed,
            len: msg.len(),
        });
    }
    match Packet::parse(msg) {
        Ok(p) => Ok(answer_of(&p, false)),
        Err(first) => salvage(msg, an).ok_or(DnsError::Malformed {
            reason: format!("{first:?}"),
        }),
    }
}

/// A message cut inside its records: parse again with the answer count
/// lowered (and the other sections dropped) until the records that remain
/// are complete. At most `an` parses of `msg.len()` bytes.
fn salvage(msg: &[u8], an: usize) -> Option<Answer> {
    let mut copy = msg.to_vec();
    copy[8..12].fill(0); // authority and additional: not needed
    for keep in (1..an).rev() {
        copy[6..8].copy_from_slice(&(keep as u16).to_be_bytes());
        if let Ok(p) = Packet::parse(&copy) {
            return Some(answer_of(&p, true));
        }
    }
    None
}

/// A domain name as the agent keeps it: lower case, no trailing dot.
fn name_text(name: &simple_dns::Name<'_>) -> String {
    let mut s = name.to_string();
    s.make_ascii_lowercase();
    while s.ends_with('.') {
        s.pop();
    }
    s
}

fn answer_of(p: &Packet<'_>, cut: bool) -> Answer {
    let mut a = Answer {
        question: p
            .questions
            .first()
            .map(|q| name_text(&q.qname))
            .unwrap_or_default(),
        rcode: rcode_number(p.rcode()),
        partial: cut || p.has_flags(PacketFlag::TRUNCATION),
        ..Answer::default()
    };
    for rr in &p.answers {
        if rr.class != CLASS::IN {
            continue;
        }
        let owner = || name_text(&rr.name);
        match &rr.rdata {
            RData::A(r) => {
                a.addresses
                    .push((owner(), IpAddr::from(r.address.to_be_bytes()), rr.ttl))
            }
            RData::AAAA(r) => {
                a.addresses
                    .push((owner(), IpAddr::from(r.address.to_be_bytes()), rr.ttl))
            }
            RData::CNAME(c) => a.aliases.push((owner(), name_text(&c.0), rr.ttl)),
            _ => {}
        }
    }
    a
}

fn rcode_number(r: RCODE) -> u8 {
    match r {
        RCODE::NoError => 0,
        RCODE::FormatError => 1,
        RCODE::ServerFailure => 2,
        RCODE::NameError => 3,
        RCODE::NotImplemented => 4,
        RCODE::Refused => 5,
        _ => 255,
    }
}

impl Answer {
    /// Each address with the names that lead to it: the question's name,
    /// then the CNAME chain (`www.example.test` → `cdn.example.test` → A),
    /// the TTL the smallest along it. An address record whose owner the
    /// question's chain does not reach (unsolicited data) is bound to its
    /// owner alone. Chains are followed at most [`MAX_CHAIN`] links and
    /// never around a loop.
    pub fn bindings(&self) -> Vec<Binding> {
        // The question's chain: name → (position, TTL so far).
        let mut chain: Vec<(String, u32)> = Vec::new();
        if !self.question.is_empty() {
            chain.push((self.question.clone(), u32::MAX));
            while chain.len() <= MAX_CHAIN {
                let (tail, ttl) = chain.last().cloned().expect("not empty");
                let Some((_, target, t)) = self.aliases.iter().find(|(alias, _, _)| *alias == tail)
                else {
                    break;
                };
                if chain.iter().any(|(n, _)| n == target) {
                    break; // a CNAME loop
                }
                chain.push((target.clone(), ttl.min(*t)));
            }
        }
        self.addresses
            .iter()
            .map(
                |(owner, ip, ttl)| match chain.iter().position(|(n, _)| n == owner) {
                    Some(i) => Binding {
                        ip: *ip,
                        names: chain[..=i].iter().map(|(n, _)| n.clone()).collect(),
                        ttl: chain[i].1.min(*ttl),
                    },
                    None => Binding {
                        ip: *ip,
                        names: vec![owner.clone()],
                        ttl: *ttl,
                    },
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::fuzz::{Rng, mutate, random_input};

    /// A response to `question` (type A) with `records`, written by hand
    /// so the tests do not trust the crate that parses them. Names are
    /// written in full unless a record says otherwise.
    struct Msg {
        bytes: Vec<u8>,
    }

    fn name(out: &mut Vec<u8>, n: &str) {
        for label in n.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }

    impl Msg {
        fn new(question: &str, answers: u16) -> Msg {
            let mut bytes = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
            bytes.extend_from_slice(&answers.to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, 0]);
            name(&mut bytes, question);
            bytes.extend_from_slice(&[0, 1, 0, 1]); // type A, class IN
            Msg { bytes }
        }

        fn record(mut self, owner: &str, ty: u16, ttl: u32, rdata: &[u8]) -> Msg {
            name(&mut self.bytes, owner);
            self.bytes.extend_from_slice(&ty.to_be_bytes());
            self.bytes.extend_from_slice(&[0, 1]);
            self.bytes.extend_from_slice(&ttl.to_be_bytes());
            self.bytes
                .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            self.bytes.extend_from_slice(rdata);
            self
        }

        fn a(self, owner: &str, ttl: u32, ip: [u8; 4]) -> Msg {
            self.record(owner, 1, ttl, &ip)
        }

        fn aaaa(self, owner: &str, ttl: u32, ip: std::net::Ipv6Addr) -> Msg {
            self.record(owner, 28, ttl, &ip.octets())
        }

        fn cname(self, owner: &str, ttl: u32, target: &str) -> Msg {
            let mut t = Vec::new();
            name(&mut t, target);
            self.record(owner, 5, ttl, &t)
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cname_chain_binds_the_asked_name_and_the_chain() {
        let m = Msg::new("WWW.example.test.", 3)
            .cname("www.example.test", 300, "cdn.example.test")
            .cname("cdn.example.test", 60, "edge.cdn.test")
            .a("edge.cdn.test", 120, [203, 0, 113, 10]);
        let a = parse_response(&m.bytes).unwrap();
        assert_eq!(a.question, "www.example.test");
        assert_eq!(
            a.bindings(),
            [Binding {
                ip: ip("203.0.113.10"),
                names: vec![
                    "www.example.test".into(),
                    "cdn.example.test".into(),
                    "edge.cdn.test".into()
                ],
                ttl: 60,
            }]
        );
        assert!(!a.partial);
    }

    #[test]
    fn plain_a_and_aaaa_and_several_addresses() {
        let v6: std::net::Ipv6Addr = "2001:db8::10".parse().unwrap();
        let m = Msg::new("api.example.test", 3)
            .a("api.example.test", 30, [198, 51, 100, 7])
            .a("api.example.test", 30, [198, 51, 100, 8])
            .aaaa("api.example.test", 40, v6);
        let b = parse_response(&m.bytes).unwrap().bindings();
        let ips: Vec<IpAddr> = b.iter().map(|b| b.ip).collect();
        assert_eq!(
            ips,
            [ip("198.51.100.7"), ip("198.51.100.8"), IpAddr::V6(v6)]
        );
        assert!(b.iter().all(|b| b.names == ["api.example.test"]));
        assert_eq!(b[2].ttl, 40);
    }

    #[test]
    fn compressed_names_are_followed() {
        // www.example.test at offset 12; the answer's owner is a pointer to
        // it, the CNAME target "cdn" + a pointer to "example.test" (16).
        let mut m = Msg::new("www.example.test", 2).bytes;
        m.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
        m.extend_from_slice(&[3, b'c', b'd', b'n', 0xC0, 16]);
        let cdn_at = (m.len() - 6) as u8;
        m.extend_from_slice(&[0xC0, cdn_at, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 10]);
        let b = parse_response(&m).unwrap().bindings();
        assert_eq!(b[0].names, ["www.example.test", "cdn.example.test"]);
        assert_eq!(b[0].ip, ip("203.0.113.10"));
    }

    #[test]
    fn a_compression_pointer_loop_is_an_error_not_a_hang() {
        // The answer's owner points at itself, then at the pointer before it.
        let mut m = Msg::new("x.test", 1).bytes;
        let at = m.len() as u8;
        m.extend_from_slice(&[0xC0, at, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(
            parse_response(&m),
            Err(DnsError::Malformed { .. })
        ));
        // Two pointers pointing at each other.
        let mut m = Msg::new("x.test", 1).bytes;
        let at = m.len() as u8;
        m.extend_from_slice(&[0xC0, at + 2, 0xC0, at]);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
        assert!(parse_response(&m).is_err());
    }

    #[test]
    fn a_cname_loop_ends_the_chain() {
        let m = Msg::new("a.test", 3)
            .cname("a.test", 60, "b.test")
            .cname("b.test", 60, "a.test")
            .a("b.test", 60, [192, 0, 2, 1]);
        let b = parse_response(&m.bytes).unwrap().bindings();
        assert_eq!(b[0].names, ["a.test", "b.test"]);
    }

    #[test]
    fn unsolicited_records_bind_their_owner_only() {
        let m = Msg::new("a.test", 2).a("a.test", 60, [192, 0, 2, 1]).a(
            "bank.test",
            60,
            [192, 0, 2, 2],
        );
        let b = parse_response(&m.bytes).unwrap().bindings();
        assert_eq!(b[1].names, ["bank.test"]);
    }

    #[test]
    fn queries_and_short_input_are_refused() {
        let mut m = Msg::new("a.test", 1).a("a.test", 60, [192, 0, 2, 1]).bytes;
        assert_eq!(parse_response(&m[..11]), Err(DnsError::Short { len: 11 }));
        assert_eq!(parse_response(&[]), Err(DnsError::Short { len: 0 }));
        m[2] &= 0x7F;
        assert_eq!(parse_response(&m), Err(DnsError::NotAResponse));
    }

    #[test]
    fn counts_the_bytes_cannot_hold_are_refused_before_allocating() {
        let mut m = Msg::new("a.test", 1).a("a.test", 60, [192, 0, 2, 1]).bytes;
        m[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse_response(&m), Err(DnsError::Counts { .. })));
        m[6..8].copy_from_slice(&1u16.to_be_bytes());
        m[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse_response(&m), Err(DnsError::Counts { .. })));
    }

    #[test]
    fn a_message_cut_at_512_bytes_keeps_its_complete_answers() {
        let mut m = Msg::new("many.example.test", 40);
        for i in 0..40u8 {
            m = m.a("many.example.test", 60, [198, 51, 100, i]);
        }
        assert!(m.bytes.len() > 512);
        let a = parse_response(&m.bytes[..512]).unwrap();
        assert!(a.partial);
        let ips = a.bindings().len();
        // 12 + 23 of question, then 33 bytes per uncompressed record.
        assert_eq!(ips, (512 - 12 - 23) / 33);
        // Cut inside the question: nothing to salvage.
        assert!(matches!(
            parse_response(&m.bytes[..20]),
            Err(DnsError::Malformed { .. } | DnsError::Counts { .. })
        ));
    }

    #[test]
    fn oversized_input_is_bounded() {
        // A 64 KiB "message" of one answer and garbage after it: parsed in
        // bounded time, the trailing bytes ignored.
        let mut m = Msg::new("a.test", 1).a("a.test", 60, [192, 0, 2, 1]).bytes;
        m.resize(65_535, 0xC0);
        let a = parse_response(&m).unwrap();
        assert_eq!(a.bindings().len(), 1);
        // A name of 300 bytes in labels is over the 255-byte limit.
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..10 {
            m.push(30);
            m.extend_from_slice(&[b'a'; 30]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(parse_response(&m).is_err());
    }

    #[test]
    fn tcp_segments_lose_their_length_prefix() {
        let m = Msg::new("a.test", 1).a("a.test", 60, [192, 0, 2, 1]).bytes;
        let mut seg = (m.len() as u16).to_be_bytes().to_vec();
        seg.extend_from_slice(&m);
        assert_eq!(tcp_message(&seg).unwrap(), &m[..]);
        assert_eq!(tcp_message(&[1]), Err(DnsError::Short { len: 1 }));
        // A length past the segment: what there is.
        assert_eq!(tcp_message(&[0xFF, 0xFF, 1, 2]).unwrap(), [1, 2]);
    }

    #[test]
    fn hostile_input_never_panics() {
        let fixture = Msg::new("www.example.test", 2)
            .cname("www.example.test", 60, "cdn.example.test")
            .a("cdn.example.test", 60, [203, 0, 113, 10])
            .bytes;
        let alphabet = [0xC0, 0, 1, 5, 12, 28, 0x81, 0x80, 63, 64, 0xFF];
        let mut rng = Rng(0x5eed_d115);
        for _ in 0..20_000 {
            let input = if rng.below(2) == 0 {
                mutate(&mut rng, &fixture, &alphabet)
            } else {
                random_input(&mut rng, &alphabet)
            };
            if let Ok(a) = parse_response(&input) {
                for b in a.bindings() {
                    assert!(b.names.len() <= MAX_CHAIN + 1);
                }
            }
        }
    }
}
