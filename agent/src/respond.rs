//! Carries out the collector's containments on this host. The desired set
//! comes whole in a `Containments` command (after every Welcome and at each
//! change); [`Executor`] makes what is pinned in bpffs equal to it; the
//! heartbeats report what is in force, with the counters that show its
//! effect (the first blocked connect is the time of containment).
//!
//! The set names cgroups relative to the cgroup2 mount; this side adds what
//! must stay reachable whatever the policy says: the collector (or the
//! agent could never be told to lift it) and the workload's DNS resolvers,
//! read from its own root's /etc/resolv.conf (loopback is always allowed).
//!
//! **Invariant:** a containment is lifted only when a set from the
//! collector no longer names it: not when the agent restarts, loses the
//! collector, or cannot read its pins. Executor calls are bpf(2) and bpffs
//! work: they run on a blocking thread, never on an async worker.

use std::{
    collections::HashMap,
    io::Read,
    net::IpAddr,
    path::{Component, Path, PathBuf},
};

use patchgap_proto::v1;

use crate::{
    contain::{Applied, Executor, Isolation, Mode, Prefix, nameservers},
    rootfs::RootFs,
    scan::now_ms,
};

/// Bytes of a workload's resolv.conf read at most.
const RESOLV_CONF_LIMIT: u64 = 64 << 10;

/// The host's containments, as this agent carries them out.
pub struct Responder {
    /// None when this host cannot contain, with the reason.
    executor: Result<Executor, String>,
    proc_root: PathBuf,
    /// The collector's URL: its addresses stay reachable from a contained
    /// workload (looked up at each set, on the blocking thread).
    collector: String,
    /// The last set reconciled to.
    generation: u64,
    wanted: Vec<v1::Containment>,
    /// Per id: when this agent first saw it applied, and the last error.
    applied_ms: HashMap<String, i64>,
    errors: HashMap<String, String>,
}

impl Responder {
    /// A responder pinning under `bpffs_dir`; None turns containment off
    /// (said in the capabilities).
    pub fn new(bpffs_dir: Option<PathBuf>, proc_root: PathBuf, collector: String) -> Responder {
        let executor = match bpffs_dir {
            None => Err("disabled by configuration".to_string()),
            Some(dir) => Executor::new(dir).map_err(|e| e.to_string()),
        };
        Responder {
            executor,
            proc_root,
            collector,
            generation: 0,
            wanted: Vec::new(),
            applied_ms: HashMap::new(),
            errors: HashMap::new(),
        }
    }

    /// Whether this host can contain, and why not.
    pub fn capability(&self) -> (bool, String) {
        match &self.executor {
            Ok(_) => (true, String::new()),
            Err(why) => (false, why.clone()),
        }
    }

    /// Makes the host's containments equal to `set`.
    pub fn apply(&mut self, set: &v1::Containments) {
        let Ok(executor) = &mut self.executor else {
            // Reported per id: nothing can be in force here.
            let why = self.executor.as_ref().err().cloned().unwrap_or_default();
            self.errors = set
                .items
                .iter()
                .map(|c| (c.id.clone(), format!("cannot contain on this host: {why}")))
                .collect();
            self.generation = set.generation;
            self.wanted = set.items.clone();
            return;
        };
        let mount = executor.cgroup2_mount().to_path_buf();
        let collector = collector_addrs(&self.collector);
        let mut errors = HashMap::new();
        let mut desired = Vec::new();
        for c in &set.items {
            match isolation(c, &mount, &self.proc_root, &collector) {
                Ok(iso) => desired.push(iso),
                Err(e) => {
                    errors.insert(c.id.clone(), e);
                }
            }
        }
        // An item that could not be turned into an isolation is left as it
        // is pinned (if it is): it is still wanted, so it must not be lifted.
        let keep: Vec<&str> = errors.keys().map(String::as_str).collect();
        if !keep.is_empty() {
            desired.retain(|d| !keep.contains(&d.id.as_str()));
        }
        let results = if keep.is_empty() {
            executor.reconcile(&desired)
        } else {
            executor.reconcile_keeping(&desired, &keep)
        };
        for r in results {
            match r {
                Applied::Attached { id } | Applied::Swapped { id } | Applied::Unchanged { id } => {
                    self.applied_ms.entry(id.clone()).or_insert_with(now_ms);
                    errors.remove(&id);
                }
                Applied::Released { id } => {
                    self.applied_ms.remove(&id);
                }
                Applied::Failed { id, error } => {
                    errors.insert(id, error.to_string());
                }
                Applied::Foreign { path } => {
                    tracing::warn!(path = %path.display(), "contain: an entry in bpffs that is not ours; left alone");
                }
            }
        }
        self.generation = set.generation;
        self.wanted = set.items.clone();
        self.errors = errors;
    }

    /// What is in force, for a heartbeat: the generation reconciled to and
    /// each wanted containment's state and counters.
    pub fn statuses(&self) -> (u64, Vec<v1::ContainmentStatus>) {
        let statuses = self
            .wanted
            .iter()
            .map(|c| {
                let counters = self.executor.as_ref().ok().and_then(|e| e.status(&c.id));
                let mut s = v1::ContainmentStatus {
                    id: c.id.clone(),
                    applied: counters.is_some(),
                    error: self.errors.get(&c.id).cloned().unwrap_or_default(),
                    applied_ms: self.applied_ms.get(&c.id).copied().unwrap_or_default(),
                    mode: c.mode,
                    ..Default::default()
                };
                if let Some(k) = counters {
                    s.blocked_connects = k.blocked_connects;
                    s.blocked_packets = k.blocked_packets;
                    s.would_block_connects = k.would_block_connects;
                    s.would_block_packets = k.would_block_packets;
                    s.first_block_ms = k
                        .first_block_unix_ms
                        .or(k.first_would_block_unix_ms)
                        .unwrap_or_default() as i64;
                    s.mode = match k.mode {
                        Some(Mode::Shadow) => v1::ContainmentMode::Shadow as i32,
                        Some(Mode::Enforce) => v1::ContainmentMode::Enforce as i32,
                        None => c.mode,
                    };
                }
                s
            })
            .collect();
        (self.generation, statuses)
    }
}

/// One wanted containment as the executor takes it.
fn isolation(
    c: &v1::Containment,
    mount: &Path,
    proc_root: &Path,
    collector: &[IpAddr],
) -> Result<Isolation, String> {
    let mode = match v1::ContainmentMode::try_from(c.mode) {
        Ok(v1::ContainmentMode::Shadow) => Mode::Shadow,
        Ok(v1::ContainmentMode::Enforce) => Mode::Enforce,
        _ => return Err(format!("containment {}: no mode", c.id)),
    };
    let relative = Path::new(c.cgroup.trim_start_matches('/'));
    if c.cgroup.is_empty()
        || relative
            .components()
            .any(|p| !matches!(p, Component::Normal(_)))
    {
        return Err(format!(
            "containment {}: bad cgroup path {:?}",
            c.id, c.cgroup
        ));
    }
    let cgroup = mount.join(relative);
    let mut allow = Vec::new();
    for a in &c.allow {
        allow.push(
            a.parse::<Prefix>()
                .map_err(|e| format!("containment {}: allow {a:?}: {e}", c.id))?,
        );
    }
    allow.extend(collector.iter().map(|&ip| Prefix::host(ip)));
    allow.extend(resolvers(&cgroup, proc_root).into_iter().map(Prefix::host));
    allow.sort();
    allow.dedup();
    Ok(Isolation {
        id: c.id.clone(),
        cgroup,
        mode,
        allow,
    })
}

/// The DNS resolvers of the workload in `cgroup`: its first process's
/// /etc/resolv.conf, read inside that process's root. None found (no
/// process yet, an unreadable file) is no resolver: loopback still is.
fn resolvers(cgroup: &Path, proc_root: &Path) -> Vec<IpAddr> {
    let Ok(procs) = std::fs::read_to_string(cgroup.join("cgroup.procs")) else {
        return Vec::new();
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let Ok(root) = RootFs::open(&proc_root.join(pid.to_string()).join("root")) else {
            continue;
        };
        let Ok(file) = root.open_file(b"/etc/resolv.conf") else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file
            .take(RESOLV_CONF_LIMIT)
            .read_to_end(&mut bytes)
            .is_err()
        {
            return Vec::new();
        }
        return nameservers(&bytes);
    }
    Vec::new()
}

/// The addresses of the collector in `url` (`http://HOST:PORT` or
/// `https://...`): a literal address as is, a name looked up (none when
/// the lookup fails: the collector is then unreachable from contained
/// workloads until the next set, and the status says nothing of it).
fn collector_addrs(url: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:443")
    } else {
        authority.to_string()
    };
    let mut addrs: Vec<IpAddr> = with_port
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_is_found_in_its_url() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(collector_addrs("http://127.0.0.1:7373"), vec![v4]);
        assert_eq!(collector_addrs("https://[::1]:7373/"), vec![v6]);
        assert_eq!(collector_addrs("https://[::1]"), vec![v6]);
        assert!(collector_addrs("http://localhost:7373").contains(&v4));
    }

    fn containment(
        id: &str,
        cgroup: &str,
        mode: v1::ContainmentMode,
        allow: &[&str],
    ) -> v1::Containment {
        v1::Containment {
            id: id.into(),
            cgroup: cgroup.into(),
            mode: mode as i32,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_containment_becomes_an_isolation_with_what_must_stay_reachable() {
        let collector: IpAddr = "192.0.2.7".parse().unwrap();
        let mount = Path::new("/sys/fs/cgroup/unified");
        let c = containment(
            "i1-a2",
            "/pods/trainer",
            v1::ContainmentMode::Enforce,
            &["198.51.100.0/24"],
        );
        let iso = isolation(&c, mount, Path::new("/proc"), &[collector]).unwrap();
        assert_eq!(iso.cgroup, mount.join("pods/trainer"));
        assert_eq!(iso.mode, Mode::Enforce);
        let allow: Vec<String> = iso.allow.iter().map(|p| p.to_string()).collect();
        assert!(allow.contains(&"198.51.100.0/24".to_string()), "{allow:?}");
        assert!(allow.contains(&"192.0.2.7/32".to_string()), "{allow:?}");
    }

    #[test]
    fn bad_containments_are_refused_not_guessed() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        let proc_root = Path::new("/proc");
        for (c, why) in [
            (
                containment("a", "/pods/x", v1::ContainmentMode::Unspecified, &[]),
                "no mode",
            ),
            (
                containment("a", "/pods/../x", v1::ContainmentMode::Shadow, &[]),
                "bad cgroup",
            ),
            (
                containment("a", "", v1::ContainmentMode::Shadow, &[]),
                "bad cgroup",
            ),
            (
                containment("a", "/x", v1::ContainmentMode::Shadow, &["300.1.1.1/8"]),
                "allow",
            ),
        ] {
            let e = isolation(&c, mount, proc_root, &[]).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
