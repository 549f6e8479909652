//! Destinations by name: which names each workload was told for an address,
//! from the DNS answers the kernel copied (`pg_dns`), so a connection is
//! recorded with the name(s) its process asked for (issue 18).
//!
//! Keyed by the receiving socket's cgroup v2 id (the directory's inode,
//! what `bpf_skb_cgroup_id` gives for the answer and
//! `bpf_get_current_cgroup_id` for the connect): a container, a pod's
//! container or a systemd unit has its own cgroup, so the answers one
//! workload got never name another's connections. Processes that share a
//! cgroup (every process of a container, or all of a host without
//! cgroups of its own, as on this project's CI machines) share their names.
//!
//! Entries live for the answer's TTL, held within [`DnsConfig::ttl_floor`]
//! and [`DnsConfig::ttl_ceiling`]: a TTL of 0 or 1 s still names the
//! connect that follows the lookup (and clients that cache an answer for a
//! while, such as the JVM's 30 s default, connect later than the TTL says),
//! and an answer that claims a week is not believed for more than an hour.
//! Bounded: at most `per_cgroup` bindings per cgroup and `total` overall;
//! past either the oldest goes, counted in [`DnsStats::evicted`].
//!
//! What cannot be seen (also in ARCHITECTURE.md): names resolved over DoH
//! or DoT (inside TLS), answers a cache gives without a packet from port 53
//! to the asking socket (nscd or systemd-resolved over their Unix sockets,
//! an application's own cache from before the agent started), and answers
//! on other ports. A stub resolver on loopback (127.0.0.53) is seen: its
//! answer is delivered to the asking socket, so it is attributed to the
//! asking workload (the stub's own upstream answers are attributed to the
//! stub's cgroup).
//!
//! **Invariant:** no I/O and no clock of its own (times come from the
//! events); memory bounded by the caps whatever the answers say.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use crate::parse::dns::{self as wire, DnsError};

/// Names a connection carries at most.
pub const MAX_NAMES: usize = 16;

/// DNS capture's knobs (the agent's `--no-dns` turns capture off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Answers are held at least this long, whatever their TTL.
    pub ttl_floor: Duration,
    /// And at most this long.
    pub ttl_ceiling: Duration,
    /// Bindings (an address and the names that led to it) per cgroup.
    pub per_cgroup: usize,
    /// Bindings overall.
    pub total: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            ttl_floor: Duration::from_secs(30),
            ttl_ceiling: Duration::from_secs(3600),
            per_cgroup: 2048,
            total: 16_384,
        }
    }
}

/// Counters since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Responses parsed (with or without addresses).
    pub answers: u64,
    /// Responses cut (by the kernel's 512-byte bound or the TC bit) whose
    /// complete records were kept.
    pub partial: u64,
    /// Packets from port 53 that were no usable response (queries, TCP
    /// continuation segments, malformed bytes).
    pub unparsed: u64,
    /// Bindings dropped for the caps before their time.
    pub evicted: u64,
    /// Bindings dropped at their time.
    pub expired: u64,
    /// Bindings held now.
    pub held: u64,
}

/// One address a cgroup was told, through one asked name.
#[derive(Debug, Clone)]
struct Binding {
    /// The asked name first, then the CNAME chain.
    names: Vec<String>,
    expires_ms: i64,
    /// Insertion order, for eviction.
    seq: u64,
}

#[derive(Debug, Default)]
struct Cgroup {
    by_ip: HashMap<IpAddr, Vec<Binding>>,
    /// seq → address, oldest first.
    order: BTreeMap<u64, IpAddr>,
}

/// Per-cgroup address → names, with their TTL.
#[derive(Debug, Default)]
pub struct Names {
    config: DnsConfig,
    cgroups: HashMap<u64, Cgroup>,
    /// seq → (cgroup, address), oldest first, across cgroups.
    order: BTreeMap<u64, (u64, IpAddr)>,
    next_seq: u64,
    /// When expired bindings were last swept out.
    swept_ms: i64,
    stats: DnsStats,
}

/// How often expired bindings are swept out (lookups skip them anyway).
const SWEEP_EVERY_MS: i64 = 10_000;

impl Names {
    pub fn new(config: DnsConfig) -> Names {
        Names {
            config,
            ..Names::default()
        }
    }

    pub fn stats(&self) -> DnsStats {
        DnsStats {
            held: self.order.len() as u64,
            ..self.stats
        }
    }

    /// Learns from one packet the kernel copied: a DNS response (over TCP
    /// with its length prefix) delivered to a socket of `cgroup` at `at_ms`.
    /// What is not a usable response is counted and returned.
    pub fn learn_packet(
        &mut self,
        cgroup: u64,
        payload: &[u8],
        tcp: bool,
        at_ms: i64,
    ) -> Result<(), DnsError> {
        let parsed = if tcp {
            wire::tcp_message(payload).and_then(wire::parse_response)
        } else {
            wire::parse_response(payload)
        };
        match parsed {
            Ok(answer) => {
                self.stats.answers += 1;
                self.stats.partial += u64::from(answer.partial);
                self.learn(cgroup, &answer, at_ms);
                Ok(())
            }
            Err(e) => {
                self.stats.unparsed += 1;
                Err(e)
            }
        }
    }

    /// Learns the bindings of a parsed answer.
    pub fn learn(&mut self, cgroup: u64, answer: &wire::Answer, at_ms: i64) {
        if at_ms - self.swept_ms >= SWEEP_EVERY_MS {
            self.sweep(at_ms);
        }
        for b in answer.bindings() {
            let ttl = Duration::from_secs(b.ttl.into())
                .clamp(self.config.ttl_floor, self.config.ttl_ceiling);
            let expires_ms = at_ms.saturating_add(ttl.as_millis() as i64);
            self.insert(cgroup, b.ip.to_canonical(), b.names, expires_ms);
        }
    }

    fn insert(&mut self, cgroup: u64, ip: IpAddr, names: Vec<String>, expires_ms: i64) {
        if self.config.per_cgroup == 0 || self.config.total == 0 || names.is_empty() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let cg = self.cgroups.entry(cgroup).or_default();
        let list = cg.by_ip.entry(ip).or_default();
        // The same asked name again: a fresh answer replaces the old one.
        if let Some(i) = list.iter().position(|b| b.names[0] == names[0]) {
            let old = list.remove(i);
            cg.order.remove(&old.seq);
            self.order.remove(&old.seq);
        }
        list.push(Binding {
            names,
            expires_ms,
            seq,
        });
        cg.order.insert(seq, ip);
        self.order.insert(seq, (cgroup, ip));
        // Over the caps: the oldest go, this cgroup's first.
        while self.cgroups.get(&cgroup).map_or(0, |c| c.order.len()) > self.config.per_cgroup {
            let oldest = self.cgroups[&cgroup].order.keys().next().copied();
            if let Some(s) = oldest {
                self.remove(cgroup, s);
                self.stats.evicted += 1;
            }
        }
        while self.order.len() > self.config.total {
            let Some((&s, &(cg, _))) = self.order.iter().next() else {
                break;
            };
            self.remove(cg, s);
            self.stats.evicted += 1;
        }
    }

    /// Removes the binding `seq` of `cgroup` from every index.
    fn remove(&mut self, cgroup: u64, seq: u64) {
        self.order.remove(&seq);
        let Some(cg) = self.cgroups.get_mut(&cgroup) else {
            return;
        };
        if let Some(ip) = cg.order.remove(&seq)
            && let Some(list) = cg.by_ip.get_mut(&ip)
        {
            list.retain(|b| b.seq != seq);
            if list.is_empty() {
                cg.by_ip.remove(&ip);
            }
        }
        if cg.order.is_empty() {
            self.cgroups.remove(&cgroup);
        }
    }

    /// Drops every binding expired at `now_ms`.
    pub fn sweep(&mut self, now_ms: i64) {
        self.swept_ms = now_ms;
        let expired: Vec<(u64, u64)> = self
            .cgroups
            .iter()
            .flat_map(|(&cg, c)| {
                c.by_ip
                    .values()
                    .flatten()
                    .filter(|b| b.expires_ms <= now_ms)
                    .map(move |b| (cg, b.seq))
            })
            .collect();
        for (cg, seq) in expired {
            self.remove(cg, seq);
            self.stats.expired += 1;
        }
    }

    /// The names `cgroup` was told for `ip` that are still valid at
    /// `at_ms`: the newest answer first, each with the name asked first and
    /// its CNAME chain after it, without repeats, at most [`MAX_NAMES`].
    /// Empty when it was told none (no answer seen, DoH, a cache outside
    /// the host's view).
    pub fn names(&self, cgroup: u64, ip: IpAddr, at_ms: i64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let Some(list) = self
            .cgroups
            .get(&cgroup)
            .and_then(|c| c.by_ip.get(&ip.to_canonical()))
        else {
            return out;
        };
        for b in list.iter().rev().filter(|b| b.expires_ms > at_ms) {
            for n in &b.names {
                if out.len() == MAX_NAMES {
                    return out;
                }
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::dns::Answer;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn answer(question: &str, aliases: &[(&str, &str)], addrs: &[(&str, &str, u32)]) -> Answer {
        Answer {
            question: question.into(),
            aliases: aliases
                .iter()
                .map(|(a, t)| (a.to_string(), t.to_string(), 300))
                .collect(),
            addresses: addrs
                .iter()
                .map(|(o, i, ttl)| (o.to_string(), ip(i), *ttl))
                .collect(),
            ..Answer::default()
        }
    }

    fn config() -> DnsConfig {
        DnsConfig {
            ttl_floor: Duration::from_secs(1),
            ttl_ceiling: Duration::from_secs(600),
            per_cgroup: 4,
            total: 6,
        }
    }

    #[test]
    fn a_connection_gets_the_asked_name_and_its_chain_in_its_cgroup_only() {
        let mut n = Names::new(config());
        let a = answer(
            "www.example.test",
            &[("www.example.test", "cdn.example.test")],
            &[("cdn.example.test", "203.0.113.10", 60)],
        );
        n.learn(7, &a, 1_000);
        assert_eq!(
            n.names(7, ip("203.0.113.10"), 2_000),
            ["www.example.test", "cdn.example.test"]
        );
        // Another cgroup was told nothing; another address has no name.
        assert!(n.names(8, ip("203.0.113.10"), 2_000).is_empty());
        assert!(n.names(7, ip("203.0.113.11"), 2_000).is_empty());
        // A v4-mapped destination (a dual-stack socket) is the same address.
        assert_eq!(n.names(7, ip("::ffff:203.0.113.10"), 2_000).len(), 2);
    }

    #[test]
    fn one_address_may_have_several_names_newest_first() {
        let mut n = Names::new(config());
        n.learn(7, &answer("a.test", &[], &[("a.test", "192.0.2.9", 60)]), 0);
        n.learn(
            7,
            &answer("b.test", &[], &[("b.test", "192.0.2.9", 60)]),
            10,
        );
        assert_eq!(n.names(7, ip("192.0.2.9"), 20), ["b.test", "a.test"]);
        // The same name answered again is one binding, now the newest.
        n.learn(
            7,
            &answer("a.test", &[], &[("a.test", "192.0.2.9", 60)]),
            30,
        );
        assert_eq!(n.names(7, ip("192.0.2.9"), 40), ["a.test", "b.test"]);
        assert_eq!(n.stats().held, 2);
    }

    #[test]
    fn ttls_expire_within_the_floor_and_the_ceiling() {
        let mut n = Names::new(config());
        // TTL 0: held for the 1 s floor.
        n.learn(
            7,
            &answer("zero.test", &[], &[("zero.test", "192.0.2.1", 0)]),
            0,
        );
        // TTL a day: held for the 600 s ceiling.
        n.learn(
            7,
            &answer("day.test", &[], &[("day.test", "192.0.2.2", 86_400)]),
            0,
        );
        // TTL 5 s: its own.
        n.learn(
            7,
            &answer("five.test", &[], &[("five.test", "192.0.2.3", 5)]),
            0,
        );
        assert_eq!(n.names(7, ip("192.0.2.1"), 999), ["zero.test"]);
        assert!(n.names(7, ip("192.0.2.1"), 1_000).is_empty());
        assert_eq!(n.names(7, ip("192.0.2.3"), 4_999), ["five.test"]);
        assert!(n.names(7, ip("192.0.2.3"), 5_000).is_empty());
        assert_eq!(n.names(7, ip("192.0.2.2"), 599_999), ["day.test"]);
        assert!(n.names(7, ip("192.0.2.2"), 600_000).is_empty());
        n.sweep(600_000);
        assert_eq!(n.stats().expired, 3);
        assert_eq!(n.stats().held, 0);
        assert!(n.cgroups.is_empty(), "empty cgroups are dropped");
    }

    #[test]
    fn the_caps_evict_the_oldest_and_count_it() {
        let mut n = Names::new(config());
        for i in 0..5u8 {
            let name = format!("n{i}.test");
            let addr = format!("192.0.2.{i}");
            n.learn(1, &answer(&name, &[], &[(&name, &addr, 60)]), i64::from(i));
        }
        // Four per cgroup: n0 went.
        assert!(n.names(1, ip("192.0.2.0"), 10).is_empty());
        assert_eq!(n.names(1, ip("192.0.2.4"), 10), ["n4.test"]);
        assert_eq!(n.stats().evicted, 1);
        // Six overall: two more in another cgroup push out cgroup 1's oldest.
        for i in 0..2u8 {
            let name = format!("m{i}.test");
            let addr = format!("198.51.100.{i}");
            n.learn(2, &answer(&name, &[], &[(&name, &addr, 60)]), 20);
        }
        assert_eq!(n.stats().held, 6);
        n.learn(
            2,
            &answer("m2.test", &[], &[("m2.test", "198.51.100.2", 60)]),
            21,
        );
        assert_eq!(n.stats().held, 6);
        assert!(n.names(1, ip("192.0.2.1"), 30).is_empty());
        assert_eq!(n.stats().evicted, 2);
        assert_eq!(n.names(2, ip("198.51.100.2"), 30), ["m2.test"]);
    }

    #[test]
    fn names_per_connection_are_capped() {
        let mut n = Names::new(DnsConfig {
            per_cgroup: 100,
            total: 100,
            ..config()
        });
        for i in 0..40 {
            let name = format!("cdn{i}.test");
            n.learn(1, &answer(&name, &[], &[(&name, "192.0.2.1", 60)]), i);
        }
        assert_eq!(n.names(1, ip("192.0.2.1"), 50).len(), MAX_NAMES);
    }

    #[test]
    fn packets_that_are_not_answers_are_counted() {
        let mut n = Names::new(config());
        assert!(n.learn_packet(1, b"\x12\x34\x01\x00", false, 0).is_err());
        assert!(n.learn_packet(1, &[0], true, 0).is_err());
        assert_eq!(n.stats().unparsed, 2);
        assert_eq!(n.stats().answers, 0);
    }
}
