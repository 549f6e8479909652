//! A workload's learned egress: the destinations its replicas reach, how
//! learning goes, and what a generation change (a new image or package
//! set) carries over. Pure: every method takes the time it runs at, so
//! tests drive learning in milliseconds and a restart replays nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use sha2::{Digest, Sha256};

use serde::{Deserialize, Serialize};

use super::policy::{name_matches, normalize_name};

/// The learning durations and promotion rule. The policy file sets them;
/// `--egress-*` flags override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learning {
    /// Nothing is judged before the workload has run this long: its
    /// start-up traffic is all new.
    pub warmup: Duration,
    /// Learning ends once no new entry came for this long.
    pub stable: Duration,
    /// Learning that never settles ends here, without anomaly alerts.
    pub max_learning: Duration,
    /// A destination first reached this soon after a package change
    /// alerts as "new since the upgrade", whatever the state.
    pub quarantine: Duration,
    /// An entry is promoted once this many replicas reached it…
    pub promote_replicas: u32,
    /// …or once it has been reached over this long.
    pub promote_after: Duration,
}

impl Default for Learning {
    fn default() -> Learning {
        Learning {
            warmup: Duration::from_secs(10 * 60),
            stable: Duration::from_secs(6 * 3600),
            max_learning: Duration::from_secs(7 * 86_400),
            quarantine: Duration::from_secs(24 * 3600),
            promote_replicas: 2,
            promote_after: Duration::from_secs(3600),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a baseline's learning stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Too young to learn from: start-up traffic.
    WarmingUp,
    Learning,
    /// The entry set settled: anything new is an anomaly.
    Stable,
    /// Learning hit its cap without settling. Raises no anomaly alerts
    /// (policy and upgrade quarantine still apply); shown so that nobody
    /// mistakes the silence for a clean bill.
    NeverStable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::WarmingUp => "warming_up",
            State::Learning => "learning",
            State::Stable => "stable",
            State::NeverStable => "never_stable",
        }
    }
}

/// A destination as learned: by name when the process was told one
/// (a CDN address serves many names, so the name is what stays true),
/// else by address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Name(String),
    Address(IpAddr),
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view) as the IPv4
/// address it carries.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Destination {
    /// The destination a connection is learned as: its first name, else
    /// its address.
    pub fn of(ip: IpAddr, names: &[String]) -> Destination {
        match names.first() {
            Some(n) => Destination::Name(normalize_name(n)),
            None => Destination::Address(unmapped(ip)),
        }
    }

    pub fn matches(&self, ip: IpAddr, names: &[String]) -> bool {
        match self {
            Destination::Name(p) => names.iter().any(|n| name_matches(p, n)),
            Destination::Address(a) => *a == unmapped(ip),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Name(n) => f.write_str(n),
            // As the CIDR of one address, as an exported policy writes it.
            Destination::Address(IpAddr::V4(a)) => write!(f, "{a}/32"),
            Destination::Address(IpAddr::V6(a)) => write!(f, "{a}/128"),
        }
    }
}

/// One learned destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub destination: Destination,
    pub port: u16,
    pub protocol: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: u64,
    /// The executable that first made it, and its lineage (exe paths up
    /// to the workload's root): the provenance an exported policy shows.
    pub exe: String,
    pub lineage: Vec<String>,
    /// Replicas (workload instances: host and instance id) that reached it.
    pub replicas: BTreeSet<String>,
    /// Seen on enough replicas, or for long enough, to be trusted.
    pub promoted: bool,
    /// The generation it was learned in.
    pub generation: String,
    /// For an entry learned by name: the addresses connections told that
    /// name went to, and when each was last seen (ms since the epoch). A
    /// connection whose answer the agent did not see (a client's cached
    /// lookup, a connection open across an agent restart) carries no
    /// name; it is this entry when its address is one of these, seen
    /// within [`ADDRESS_MEMORY_MS`]. At most [`MAX_ADDRESSES`], the
    /// least recently seen going first.
    #[serde(default)]
    pub addresses: BTreeMap<IpAddr, i64>,
}

/// Addresses remembered per entry learned by name.
pub const MAX_ADDRESSES: usize = 16;
/// How long an address stays the name's for a connection without a name:
/// the agent's longest DNS binding (its TTL ceiling).
pub const ADDRESS_MEMORY_MS: i64 = 3_600_000;

impl Entry {
    /// Whether `obs` is this entry: by name or address as learned, or,
    /// when `obs` carries no name, by an address this name was recently
    /// reached at.
    fn matches(&self, obs: &Observation) -> bool {
        if self.port != obs.port || self.protocol != obs.protocol {
            return false;
        }
        if self.destination.matches(obs.ip, &obs.names) {
            return true;
        }
        obs.names.is_empty()
            && matches!(self.destination, Destination::Name(_))
            && self
                .addresses
                .get(&unmapped(obs.ip))
                .is_some_and(|seen| obs.at_ms - seen <= ADDRESS_MEMORY_MS)
    }

    /// Remembers the address a named connection went to; true when the
    /// set changed (not when only a time moved).
    fn remember_address(&mut self, obs: &Observation) -> bool {
        if obs.names.is_empty() || !matches!(self.destination, Destination::Name(_)) {
            return false;
        }
        let ip = unmapped(obs.ip);
        if let Some(seen) = self.addresses.get_mut(&ip) {
            *seen = (*seen).max(obs.at_ms);
            return false;
        }
        if self.addresses.len() >= MAX_ADDRESSES
            && let Some(oldest) = self
                .addresses
                .iter()
                .min_by_key(|(_, seen)| **seen)
                .map(|(ip, _)| *ip)
        {
            self.addresses.remove(&oldest);
        }
        self.addresses.insert(ip, obs.at_ms);
        true
    }
}

/// A package that changed on the workload, as the upgrade quarantine
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChange {
    pub name: String,
    /// Empty when the package is new.
    pub from: String,
    /// Empty when it was removed.
    pub to: String,
    /// When the collector first saw the new set (ms since the epoch).
    #[serde(rename = "at")]
    pub at_ms: i64,
    /// How the collector knows (the evidence kind of the new version).
    pub evidence: String,
}

/// One connection as the baseline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub ip: IpAddr,
    /// The names its process was told for `ip`; empty when none.
    pub names: Vec<String>,
    pub port: u16,
    pub protocol: String,
    /// The workload instance it came from.
    pub replica: String,
    pub exe: String,
    pub lineage: Vec<String>,
    pub at_ms: i64,
}

/// What the baseline says about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A learned destination.
    Known,
    /// New, and learned: the baseline is still learning.
    Learned,
    /// New, and not learned: the baseline never settled, so it says
    /// nothing (policy still applies).
    Unjudged,
    /// New while the baseline is stable.
    New,
    /// New within the quarantine after a package change: never learned.
    NewSinceUpgrade { changes: Vec<PackageChange> },
}

/// A workload's baseline. Replicas share it: the key names the
/// workload (owner and container, unit, or executable), not an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub key: String,
    /// Hash of the image digest and the package set.
    pub generation: String,
    /// The generations before this one, oldest first.
    pub previous_generations: Vec<String>,
    pub created_ms: i64,
    /// When the entry set last grew.
    pub last_change_ms: i64,
    /// When learning ended as stable (it stays stable).
    pub stable_since_ms: Option<i64>,
    /// The last package change and what it changed: the quarantine runs
    /// from `upgraded_ms`.
    pub upgraded_ms: Option<i64>,
    pub changes: Vec<PackageChange>,
    pub entries: Vec<Entry>,
    /// What each executable of the workload loads (package → version and
    /// evidence): the sets seen recently, newest last. The generation is
    /// the newest ones' hash with the image digest, and a new set is the
    /// upgrade diff.
    #[serde(default)]
    pub package_sets: BTreeMap<String, Vec<BTreeMap<String, Seen>>>,
    #[serde(default)]
    pub image_digest: String,
}

/// A package as a workload's executable has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub version: String,
    pub evidence: String,
}

/// Executables tracked per baseline, and packages per executable: bounds
/// for a workload that runs anything at all.
pub const MAX_EXES: usize = 64;
pub const MAX_PACKAGES: usize = 4096;
/// Package sets remembered per executable: replicas on the old and the
/// new version during a rollout, and a rollback.
pub const SETS_PER_EXE: usize = 4;

/// At most this many entries per baseline: a workload that reaches
/// thousands of distinct destinations is not one a baseline describes,
/// and memory stays bounded. Past it, new destinations are not learned
/// and the state cannot become stable through growth.
pub const MAX_ENTRIES: usize = 4096;

impl Baseline {
    pub fn new(key: &str, generation: &str, now_ms: i64) -> Baseline {
        Baseline {
            key: key.into(),
            generation: generation.into(),
            previous_generations: Vec::new(),
            created_ms: now_ms,
            last_change_ms: now_ms,
            stable_since_ms: None,
            upgraded_ms: None,
            changes: Vec::new(),
            entries: Vec::new(),
            package_sets: BTreeMap::new(),
            image_digest: String::new(),
        }
    }

    /// Records what `exe` loads now and the image digest. A set not seen
    /// before for this executable (or a new digest) moves the generation
    /// on, entries kept and quarantine started, with the diff from the
    /// newest set known. A set seen recently (a replica not rolled yet)
    /// changes nothing, so a rolling upgrade does not flip-flop. The first
    /// sight of an executable only widens the generation. True when
    /// something changed.
    pub fn track_packages(
        &mut self,
        exe: &str,
        image_digest: &str,
        packages: &BTreeMap<String, Seen>,
        now_ms: i64,
    ) -> bool {
        let image_changed = !self.image_digest.is_empty()
            && !image_digest.is_empty()
            && self.image_digest != image_digest;
        // The common case, once per connection: a known set on the same
        // image. Answered without copying the set (the copy below costs
        // two allocations per package).
        if !image_changed
            && self.package_sets.get(exe).is_some_and(|known| {
                let kept = packages.len().min(MAX_PACKAGES);
                known
                    .iter()
                    .any(|k| k.len() == kept && k.iter().eq(packages.iter().take(kept)))
            })
        {
            return false;
        }
        let mut packages = packages.clone();
        while packages.len() > MAX_PACKAGES {
            packages.pop_last();
        }
        if !self.package_sets.contains_key(exe) && self.package_sets.len() >= MAX_EXES {
            return false;
        }
        let known = self.package_sets.entry(exe.to_string()).or_default();
        let first = known.is_empty();
        let diff = match known.last() {
            _ if known.contains(&packages) => {
                if !image_changed {
                    return false;
                }
                Vec::new()
            }
            Some(newest) => diff(newest, &packages, now_ms),
            None => Vec::new(),
        };
        known.retain(|k| *k != packages);
        known.push(packages);
        if known.len() > SETS_PER_EXE {
            known.remove(0);
        }
        if !image_digest.is_empty() {
            self.image_digest = image_digest.to_string();
        }
        let generation = self.hash();
        if first && !image_changed {
            self.generation = generation;
        } else {
            self.new_generation(&generation, diff, now_ms);
        }
        true
    }

    /// Hash of the image digest and every executable's package set.
    fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.image_digest.as_bytes());
        for (exe, sets) in &self.package_sets {
            let Some(set) = sets.last() else { continue };
            h.update(b"\0exe\0");
            h.update(exe.as_bytes());
            for (name, seen) in set {
                h.update(b"\0");
                h.update(name.as_bytes());
                h.update(b"@");
                h.update(seen.version.as_bytes());
            }
        }
        let d = h.finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The state at `now_ms`. Stability is sticky once reached
    /// ([`Baseline::settle`] records it).
    pub fn state(&self, learning: &Learning, now_ms: i64) -> State {
        if self.stable_since_ms.is_some() {
            return State::Stable;
        }
        let age = now_ms - self.created_ms;
        if age < ms(learning.warmup) {
            State::WarmingUp
        } else if now_ms - self.last_change_ms >= ms(learning.stable)
            && now_ms - self.created_ms >= ms(learning.warmup) + ms(learning.stable)
        {
            State::Stable
        } else if age >= ms(learning.max_learning) {
            State::NeverStable
        } else {
            State::Learning
        }
    }

    /// Records stability when it is reached; true when the state changed
    /// (the caller persists the baseline then).
    pub fn settle(&mut self, learning: &Learning, now_ms: i64) -> bool {
        if self.stable_since_ms.is_none() && self.state(learning, now_ms) == State::Stable {
            self.stable_since_ms = Some(now_ms);
            return true;
        }
        false
    }

    /// A new generation: the entries stay (a rollout does not start from
    /// zero), and the quarantine starts now with `changes`.
    pub fn new_generation(&mut self, generation: &str, changes: Vec<PackageChange>, now_ms: i64) {
        if generation == self.generation {
            return;
        }
        let old = std::mem::replace(&mut self.generation, generation.into());
        self.previous_generations.push(old);
        if self.previous_generations.len() > 16 {
            self.previous_generations.remove(0);
        }
        self.upgraded_ms = Some(now_ms);
        self.changes = changes;
    }

    /// In the quarantine after a package change.
    pub fn quarantined(&self, learning: &Learning, now_ms: i64) -> bool {
        self.upgraded_ms
            .is_some_and(|at| now_ms - at < ms(learning.quarantine))
    }

    /// Judges one connection and learns from it. The second value says
    /// whether the baseline changed in a way worth persisting (an entry,
    /// a promotion, the state); counts alone are not.
    pub fn observe(&mut self, obs: &Observation, learning: &Learning) -> (Verdict, bool) {
        let now = obs.at_ms;
        let mut changed = self.settle(learning, now);
        if let Some(e) = self.entries.iter_mut().find(|e| e.matches(obs)) {
            changed |= e.remember_address(obs);
            e.count += 1;
            e.last_seen_ms = e.last_seen_ms.max(now);
            if !e.replicas.contains(&obs.replica) {
                changed |= e.replicas.insert(obs.replica.clone());
            }
            if !e.promoted
                && (e.replicas.len() >= learning.promote_replicas.max(1) as usize
                    || now - e.first_seen_ms >= ms(learning.promote_after))
            {
                e.promoted = true;
                changed = true;
            }
            return (Verdict::Known, changed);
        }
        if self.quarantined(learning, now) {
            return (
                Verdict::NewSinceUpgrade {
                    changes: self.changes.clone(),
                },
                changed,
            );
        }
        match self.state(learning, now) {
            State::Stable => (Verdict::New, changed),
            State::NeverStable => (Verdict::Unjudged, changed),
            State::WarmingUp | State::Learning => {
                if self.entries.len() >= MAX_ENTRIES {
                    return (Verdict::Unjudged, changed);
                }
                self.entries.push(Entry {
                    destination: Destination::of(obs.ip, &obs.names),
                    port: obs.port,
                    protocol: obs.protocol.clone(),
                    first_seen_ms: now,
                    last_seen_ms: now,
                    count: 1,
                    exe: obs.exe.clone(),
                    lineage: obs.lineage.clone(),
                    replicas: [obs.replica.clone()].into(),
                    promoted: learning.promote_replicas <= 1,
                    generation: self.generation.clone(),
                    addresses: BTreeMap::new(),
                });
                let learned = self.entries.last_mut().expect("just pushed");
                learned.remember_address(obs);
                self.last_change_ms = now;
                (Verdict::Learned, true)
            }
        }
    }
}

/// What changed between two package sets, by name.
fn diff(
    old: &BTreeMap<String, Seen>,
    new: &BTreeMap<String, Seen>,
    now_ms: i64,
) -> Vec<PackageChange> {
    let mut out = Vec::new();
    for (name, n) in new {
        match old.get(name) {
            Some(o) if o.version == n.version => {}
            o => out.push(PackageChange {
                name: name.clone(),
                from: o.map(|o| o.version.clone()).unwrap_or_default(),
                to: n.version.clone(),
                at_ms: now_ms,
                evidence: n.evidence.clone(),
            }),
        }
    }
    for (name, o) in old {
        if !new.contains_key(name) {
            out.push(PackageChange {
                name: name.clone(),
                from: o.version.clone(),
                to: String::new(),
                at_ms: now_ms,
                evidence: String::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learning() -> Learning {
        Learning {
            warmup: Duration::from_secs(1),
            stable: Duration::from_secs(2),
            max_learning: Duration::from_secs(10),
            quarantine: Duration::from_secs(60),
            promote_replicas: 2,
            promote_after: Duration::from_secs(3600),
        }
    }

    fn obs(name: Option<&str>, ip: &str, replica: &str, at_ms: i64) -> Observation {
        Observation {
            ip: ip.parse().unwrap(),
            names: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
            port: 443,
            protocol: "tcp".into(),
            replica: replica.into(),
            exe: "/venv/bin/python3".into(),
            lineage: vec!["/venv/bin/python3".into()],
            at_ms,
        }
    }

    /// Learning: entries while learning, stable after the quiet period,
    /// then new destinations are anomalies and known ones are not; an
    /// entry seen from two replicas is promoted.
    #[test]
    fn learns_then_settles_then_flags_new() {
        let l = learning();
        let mut b = Baseline::new("pod/ml/Deployment/trainer/trainer", "g1", 0);
        assert_eq!(b.state(&l, 500), State::WarmingUp);
        assert_eq!(
            b.observe(
                &obs(Some("data.example.org"), "198.51.100.10", "a", 500),
                &l
            )
            .0,
            Verdict::Learned
        );
        assert!(!b.entries[0].promoted);
        // The same name on another address (a CDN) is the same entry.
        let (v, changed) = b.observe(
            &obs(Some("DATA.example.org."), "198.51.100.11", "b", 1500),
            &l,
        );
        assert_eq!(v, Verdict::Known);
        assert!(changed && b.entries[0].promoted);
        assert_eq!(b.state(&l, 2500), State::Learning);
        assert_eq!(b.state(&l, 3100), State::Stable);
        assert_eq!(
            b.observe(&obs(None, "203.0.113.66", "a", 3100), &l).0,
            Verdict::New
        );
        assert_eq!(b.stable_since_ms, Some(3100));
        assert_eq!(
            b.observe(
                &obs(Some("data.example.org"), "198.51.100.10", "a", 3200),
                &l
            )
            .0,
            Verdict::Known
        );
        assert_eq!(b.entries.len(), 1);
        assert_eq!(b.entries[0].count, 3);
    }

    /// A connection without a name (its answer came before the agent
    /// did: a client's cached lookup, an agent restart) is the entry
    /// learned by name when its address is one that name was reached at
    /// within the hour; any other address, or one last seen for the name
    /// longer ago, stays new. The memory is bounded.
    #[test]
    fn a_nameless_connection_to_a_named_entry_s_address_is_known() {
        let l = learning();
        let mut b = Baseline::new("k", "g1", 0);
        b.observe(
            &obs(Some("data.example.org"), "198.51.100.10", "a", 500),
            &l,
        );
        assert_eq!(b.state(&l, 3100), State::Stable);
        let (v, changed) = b.observe(
            &obs(Some("data.example.org"), "198.51.100.11", "a", 3100),
            &l,
        );
        assert_eq!(v, Verdict::Known);
        assert!(changed, "a new address for the name is persisted");
        for (ip, at, want) in [
            ("198.51.100.10", 4000, Verdict::Known),
            ("198.51.100.11", 4000, Verdict::Known),
            // The IPv4-mapped form of a learned address is that address.
            ("::ffff:198.51.100.11", 4000, Verdict::Known),
            ("198.51.100.12", 4000, Verdict::New),
            // 198.51.100.10 was last told the name at 500.
            ("198.51.100.10", 500 + ADDRESS_MEMORY_MS + 1, Verdict::New),
            ("198.51.100.11", 3100 + ADDRESS_MEMORY_MS, Verdict::Known),
        ] {
            assert_eq!(
                b.observe(&obs(None, ip, "a", at), &l).0,
                want,
                "{ip} at {at}"
            );
        }
        // Another port is another entry, whatever the address.
        let mut other_port = obs(None, "198.51.100.10", "a", 4000);
        other_port.port = 80;
        assert_eq!(b.observe(&other_port, &l).0, Verdict::New);
        for i in 0..40 {
            b.observe(
                &obs(
                    Some("data.example.org"),
                    &format!("203.0.113.{i}"),
                    "a",
                    5000 + i,
                ),
                &l,
            );
        }
        assert_eq!(b.entries.len(), 1);
        assert_eq!(b.entries[0].addresses.len(), MAX_ADDRESSES);
        assert!(
            b.entries[0]
                .addresses
                .contains_key(&"203.0.113.39".parse().unwrap())
        );
        assert!(
            !b.entries[0]
                .addresses
                .contains_key(&"198.51.100.10".parse().unwrap())
        );
        // The addresses survive the store's JSON.
        let back: Baseline = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }

    /// A baseline that keeps growing never stabilises: past the cap it
    /// raises no anomaly and says so.
    #[test]
    fn never_stable_judges_nothing() {
        let l = learning();
        let mut b = Baseline::new("k", "g1", 0);
        let mut t = 0;
        while t < 10_000 {
            b.observe(&obs(None, &format!("192.0.2.{}", t / 1000 + 1), "a", t), &l);
            t += 1000;
        }
        assert_eq!(b.state(&l, 10_500), State::NeverStable);
        assert_eq!(
            b.observe(&obs(None, "203.0.113.9", "a", 10_500), &l).0,
            Verdict::Unjudged
        );
    }

    /// A generation change keeps the entries, and a new destination in
    /// the quarantine alerts with the package diff even while learning;
    /// after the quarantine a stable baseline flags it as plainly new.
    #[test]
    fn upgrade_inherits_and_quarantines() {
        let l = learning();
        let mut b = Baseline::new("k", "g1", 0);
        b.observe(
            &obs(Some("data.example.org"), "198.51.100.10", "a", 1000),
            &l,
        );
        let change = PackageChange {
            name: "requests".into(),
            from: "2.31.0".into(),
            to: "2.99.0".into(),
            at_ms: 1500,
            evidence: "mapped".into(),
        };
        b.new_generation("g2", vec![change.clone()], 1500);
        assert_eq!(b.previous_generations, vec!["g1".to_string()]);
        assert_eq!(
            b.observe(
                &obs(Some("data.example.org"), "198.51.100.10", "a", 1600),
                &l
            )
            .0,
            Verdict::Known
        );
        assert_eq!(
            b.observe(
                &obs(Some("exfil.example.net"), "203.0.113.66", "a", 1700),
                &l
            )
            .0,
            Verdict::NewSinceUpgrade {
                changes: vec![change]
            }
        );
        // Not learned silently.
        assert_eq!(b.entries.len(), 1);
        assert_eq!(
            b.observe(
                &obs(Some("exfil.example.net"), "203.0.113.66", "a", 70_000),
                &l
            )
            .0,
            Verdict::New
        );
    }

    fn set(pkgs: &[(&str, &str)]) -> BTreeMap<String, Seen> {
        pkgs.iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    Seen {
                        version: v.to_string(),
                        evidence: "installed".into(),
                    },
                )
            })
            .collect()
    }

    /// The generation hashes what is loaded: the first sight records it,
    /// a second replica with the same set changes nothing, and an upgrade
    /// moves the generation on with from → to.
    #[test]
    fn package_changes_move_the_generation() {
        let l = learning();
        let mut b = Baseline::new("k", "", 0);
        let v1 = set(&[("requests", "2.31.0"), ("numpy", "1.26.4")]);
        assert!(b.track_packages("/venv/bin/python3", "sha256:aa", &v1, 0));
        let g1 = b.generation.clone();
        assert_eq!(g1.len(), 16);
        assert!(b.upgraded_ms.is_none());
        assert!(!b.track_packages("/venv/bin/python3", "sha256:aa", &v1, 500));
        assert!(b.track_packages("/usr/bin/sh", "sha256:aa", &set(&[]), 600));
        assert!(b.upgraded_ms.is_none());
        let g1 = b.generation.clone();
        let v2 = set(&[("requests", "2.99.0"), ("numpy", "1.26.4"), ("evil", "0.1")]);
        assert!(b.track_packages("/venv/bin/python3", "sha256:aa", &v2, 4000));
        assert_ne!(b.generation, g1);
        assert_eq!(b.previous_generations, vec![g1]);
        assert!(b.quarantined(&l, 4000));
        let names: Vec<_> = b
            .changes
            .iter()
            .map(|c| format!("{} {}->{}", c.name, c.from, c.to))
            .collect();
        assert_eq!(names, vec!["evil ->0.1", "requests 2.31.0->2.99.0"]);
        let json = serde_json::to_value(&b.changes[1]).unwrap();
        assert_eq!(json["at"], 4000);
        // The replica not restarted yet still has the old set: no flip.
        let g2 = b.generation.clone();
        assert!(!b.track_packages("/venv/bin/python3", "sha256:aa", &v1, 4100));
        assert_eq!(b.generation, g2);
        assert_eq!(b.upgraded_ms, Some(4000));
        // A known set on a new image is not answered by the shortcut for
        // known sets: the image moves the generation.
        assert!(b.track_packages("/venv/bin/python3", "sha256:bb", &v1, 4200));
        assert_ne!(b.generation, g2);
        assert_eq!(b.image_digest, "sha256:bb");
    }
}
