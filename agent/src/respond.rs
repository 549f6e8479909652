//! Carries out the collector's containments on this host. The desired set
//! comes whole in a `Containments` command (after every Welcome and at each
//! change) and names three kinds: isolate ([`Executor`] makes what is
//! pinned in bpffs equal to the set's isolations), freeze ([`Freezer`],
//! `cgroup.freeze`) and kill ([`Killer`], `cgroup.kill`). The heartbeats
//! report what is in force, with the evidence of its effect: the first
//! blocked connect, the kernel reporting the cgroup frozen, the first kill
//! (`first_block_ms`), and the counts. A containment a set lifted is
//! reported for [`LIFTED_KEPT_MS`] more with its last status (marked
//! `lifted`), so an effect seen shortly before a quick lift still reaches
//! the collector.
//!
//! The set names cgroups relative to the cgroup2 mount; every kind goes
//! through the same guards (`contain::Hierarchy`: never the root, the
//! agent's or PID 1's cgroup or an ancestor of them, never outside the
//! mount). For isolation this side adds what must stay reachable whatever
//! the policy says: the collector (or the agent could never be told to
//! lift it) and the workload's DNS resolvers, read from its own root's
//! /etc/resolv.conf (loopback is always allowed). Freeze and kill have no
//! shadow mode: a shadow one is refused with an error and nothing is done.
//!
//! **Invariant:** a containment is lifted only when a set from the
//! collector no longer names it: not when the agent restarts, loses the
//! collector, or cannot read its pins (a freeze is lifted after a restart
//! from the freezer's record; a kill is killing again at the next periodic
//! [`Responder::tick`], which runs connected or not). Responder calls are
//! bpf(2), bpffs and cgroupfs work: they run on a blocking thread, never
//! on an async worker.

use std::{
    collections::HashMap,
    io::Read,
    net::IpAddr,
    path::{Component, Path, PathBuf},
};

use patchgap_proto::v1;

use crate::{
    contain::{
        Applied, CgroupTarget, Executor, Freezer, Hierarchy, Isolation, Killer, Mode, Prefix,
        describe, nameservers,
    },
    rootfs::RootFs,
    scan::now_ms,
};

/// Bytes of a workload's resolv.conf read at most.
const RESOLV_CONF_LIMIT: u64 = 64 << 10;

/// How long a lifted containment's last status stays in the reports. The
/// heartbeat after a set is sent at once, but its counters are gone with
/// the lift: a first block seen since the previous heartbeat (10 s by
/// default) would never be reported, and the collector could not time
/// the containment. Ten minutes outlasts a few heartbeats and a
/// reconnect, and keeps the reports from growing with every containment
/// ever lifted.
pub const LIFTED_KEPT_MS: i64 = 10 * 60_000;

/// The host's containments, as this agent carries them out.
pub struct Responder {
    /// Isolation: None when this host cannot isolate, with the reason.
    executor: Result<Executor, String>,
    /// Freeze and kill need only the cgroup2 hierarchy (no BPF).
    cgroups: Result<Hierarchy, String>,
    freezer: Freezer,
    killer: Killer,
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
    /// Per id a set lifted, after an effect was seen: its last status
    /// (marked lifted) and when it was lifted.
    lifted: HashMap<String, (v1::ContainmentStatus, i64)>,
}

impl Responder {
    /// A responder pinning isolations under `bpffs_dir` and recording its
    /// freezes under `state_dir` (None: in memory only, so a restarted
    /// agent cannot thaw them); a None `bpffs_dir` turns containment off
    /// (said in the capabilities).
    pub fn new(
        bpffs_dir: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        proc_root: PathBuf,
        collector: String,
    ) -> Responder {
        let (executor, cgroups) = match bpffs_dir {
            None => {
                let off = "disabled by configuration".to_string();
                (Err(off.clone()), Err(off))
            }
            Some(dir) => (
                Executor::new(dir).map_err(|e| describe(&e)),
                Hierarchy::new().map_err(|e| describe(&e)),
            ),
        };
        Responder {
            executor,
            cgroups,
            freezer: Freezer::open(state_dir.as_deref()),
            killer: Killer::new(),
            proc_root,
            collector,
            generation: 0,
            wanted: Vec::new(),
            applied_ms: HashMap::new(),
            errors: HashMap::new(),
            lifted: HashMap::new(),
        }
    }

    /// Whether this host can contain (isolate), and why not.
    pub fn capability(&self) -> (bool, String) {
        match &self.executor {
            Ok(_) => (true, String::new()),
            Err(why) => (false, why.clone()),
        }
    }

    /// Makes the host's containments equal to `set`: isolations through the
    /// executor, freezes through the freezer, kills through the killer
    /// (which kill at once). An item that cannot be read keeps what is in
    /// force for its id.
    pub fn apply(&mut self, set: &v1::Containments) {
        let mut errors = HashMap::new();
        let mut isolations = Vec::new();
        let mut freezes = Vec::new();
        let mut kills = Vec::new();
        let collector = match &self.executor {
            Ok(_)
                if set
                    .items
                    .iter()
                    .any(|c| c.kind == v1::ContainmentKind::Isolate as i32) =>
            {
                collector_addrs(&self.collector)
            }
            _ => Vec::new(),
        };
        for c in &set.items {
            let kind = v1::ContainmentKind::try_from(c.kind);
            let done = match kind {
                Ok(v1::ContainmentKind::Isolate) => match &self.executor {
                    Ok(e) => isolation(c, e.cgroup2_mount(), &self.proc_root, &collector)
                        .map(|iso| isolations.push(iso)),
                    Err(why) => Err(format!("cannot contain on this host: {why}")),
                },
                Ok(kind) => match &self.cgroups {
                    Ok(h) => cgroup_target(c, kind, h.mount()).map(|t| match kind {
                        v1::ContainmentKind::Freeze => freezes.push(t),
                        _ => kills.push(t),
                    }),
                    Err(why) => Err(format!("cannot {} on this host: {why}", kind_verb(kind))),
                },
                Err(_) => Err(format!("containment {}: unknown kind {}", c.id, c.kind)),
            };
            if let Err(e) = done {
                errors.insert(c.id.clone(), e);
            }
        }
        // What the containments this set drops showed last, read now:
        // their counters go with the lift.
        let dropped: Vec<v1::Containment> = self
            .wanted
            .iter()
            .filter(|w| !set.items.iter().any(|c| c.id == w.id))
            .cloned()
            .collect();
        let mut last: HashMap<String, v1::ContainmentStatus> = dropped
            .iter()
            .map(|c| (c.id.clone(), self.status(c)))
            .collect();
        // An item that could not be read is left as it is in force (if it
        // is): it is still wanted, so it must not be lifted.
        let keep: Vec<&str> = errors.keys().map(String::as_str).collect();
        let mut results = Vec::new();
        if let Ok(executor) = &mut self.executor {
            results.extend(executor.reconcile_keeping(&isolations, &keep));
        }
        if let Ok(cgroups) = &self.cgroups {
            results.extend(self.freezer.reconcile(cgroups, &freezes, &keep));
            results.extend(self.killer.reconcile(cgroups, &kills, &keep));
        }
        for r in results {
            match r {
                Applied::Attached { id } | Applied::Swapped { id } | Applied::Unchanged { id } => {
                    self.applied_ms.entry(id.clone()).or_insert_with(now_ms);
                    errors.remove(&id);
                }
                Applied::Released { id } => {
                    if !set.items.iter().any(|c| c.id == id) {
                        self.applied_ms.remove(&id);
                        if let Some(mut s) = last.remove(&id).filter(|s| s.first_block_ms > 0) {
                            s.lifted = true;
                            s.applied = false;
                            s.error.clear();
                            self.lifted.insert(id, (s, now_ms()));
                        }
                    }
                }
                Applied::Failed { id, error } => {
                    errors.insert(id, describe(&error));
                }
                Applied::Foreign { path } => {
                    tracing::warn!(path = %path.display(), "contain: an entry in bpffs that is not ours; left alone");
                }
            }
        }
        // Named again, it is in force again, not lifted.
        self.lifted
            .retain(|id, _| !set.items.iter().any(|c| &c.id == id));
        self.generation = set.generation;
        self.wanted = set.items.clone();
        self.errors = errors;
    }

    /// The periodic check between sets (the agent calls it at most every
    /// heartbeat interval, connected or not): kills in force kill again
    /// where processes appeared, freezes someone thawed are frozen again.
    pub fn tick(&mut self) {
        if let Ok(cgroups) = &self.cgroups {
            self.killer.tick(cgroups);
            self.freezer.tick(cgroups);
        }
    }

    /// What is in force, for a heartbeat: the generation reconciled to and
    /// each wanted containment's state and counters, then the last status
    /// of each containment lifted in the last [`LIFTED_KEPT_MS`] after an
    /// effect was seen (by id). A freeze first seen frozen here has that
    /// time recorded.
    pub fn statuses(&mut self) -> (u64, Vec<v1::ContainmentStatus>) {
        let wanted = self.wanted.clone();
        let mut statuses: Vec<v1::ContainmentStatus> =
            wanted.iter().map(|c| self.status(c)).collect();
        let now = now_ms();
        self.lifted
            .retain(|_, (_, at)| now.saturating_sub(*at) < LIFTED_KEPT_MS);
        let mut lifted: Vec<v1::ContainmentStatus> =
            self.lifted.values().map(|(s, _)| s.clone()).collect();
        lifted.sort_by(|a, b| a.id.cmp(&b.id));
        statuses.extend(lifted);
        (self.generation, statuses)
    }

    /// One wanted containment's state and counters.
    fn status(&mut self, c: &v1::Containment) -> v1::ContainmentStatus {
        let mut s = v1::ContainmentStatus {
            id: c.id.clone(),
            error: self.errors.get(&c.id).cloned().unwrap_or_default(),
            applied_ms: self.applied_ms.get(&c.id).copied().unwrap_or_default(),
            mode: c.mode,
            kind: c.kind,
            ..Default::default()
        };
        match v1::ContainmentKind::try_from(c.kind) {
            Ok(v1::ContainmentKind::Isolate) => {
                let counters = self.executor.as_ref().ok().and_then(|e| e.status(&c.id));
                s.applied = counters.is_some();
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
            }
            Ok(v1::ContainmentKind::Freeze) => {
                let status = match &self.cgroups {
                    Ok(h) => self.freezer.status(h, &c.id),
                    Err(_) => None,
                };
                if let Some(f) = status {
                    s.applied = true;
                    s.frozen = f.frozen;
                    s.first_block_ms = f.frozen_ms;
                    s.applied_ms = f.applied_ms;
                    if s.error.is_empty() {
                        s.error = f.problem.unwrap_or_default();
                    }
                }
            }
            Ok(v1::ContainmentKind::Kill) => {
                if let Some(k) = self.killer.status(&c.id) {
                    s.applied = true;
                    s.killed = k.killed;
                    s.first_block_ms = k.first_kill_ms;
                    s.applied_ms = k.applied_ms;
                    if s.error.is_empty() {
                        s.error = k.problem.unwrap_or_default();
                    }
                }
            }
            Err(_) => {}
        }
        s
    }
}

/// The verb for a kind, in errors.
fn kind_verb(kind: v1::ContainmentKind) -> &'static str {
    match kind {
        v1::ContainmentKind::Isolate => "isolate",
        v1::ContainmentKind::Freeze => "freeze",
        v1::ContainmentKind::Kill => "kill",
    }
}

/// The cgroup a containment names, inside the cgroup2 mount: relative to
/// it, never empty, no `..` (the executors check the rest: the guards, and
/// that it resolves beneath the mount).
fn cgroup_path(c: &v1::Containment, mount: &Path) -> Result<PathBuf, String> {
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
    Ok(mount.join(relative))
}

/// A freeze or kill as the freezer or killer takes it. Neither has a shadow
/// form: a shadow freeze or kill is refused (an error, nothing done), as
/// the policy refuses `shadow` on such actions; "counted, not done" would
/// tell a responder nothing, and a silent downgrade is what DESIGN.md
/// forbids.
fn cgroup_target(
    c: &v1::Containment,
    kind: v1::ContainmentKind,
    mount: &Path,
) -> Result<CgroupTarget, String> {
    match v1::ContainmentMode::try_from(c.mode) {
        Ok(v1::ContainmentMode::Enforce) => {}
        Ok(v1::ContainmentMode::Shadow) => {
            return Err(format!(
                "containment {}: {} has no shadow mode; refused, nothing done",
                c.id,
                kind_verb(kind)
            ));
        }
        _ => return Err(format!("containment {}: no mode", c.id)),
    }
    Ok(CgroupTarget {
        id: c.id.clone(),
        cgroup: cgroup_path(c, mount)?,
    })
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
    let cgroup = cgroup_path(c, mount)?;
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

/// The addresses of the collectors in `urls` (`http://HOST:PORT` or
/// `https://...`, comma-separated): a literal address as is, a name looked up (none when
/// the lookup fails: the collector is then unreachable from contained
/// workloads until the next set, and the status says nothing of it).
fn collector_addrs(urls: &str) -> Vec<IpAddr> {
    // Every collector in a failover list stays reachable: the agent may
    // move to any of them while the isolation holds.
    let mut addrs: Vec<IpAddr> = urls.split(',').flat_map(one_collector_addrs).collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

fn one_collector_addrs(url: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    let url = url.trim();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:443")
    } else {
        authority.to_string()
    };
    with_port
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::ContainError;

    #[test]
    fn the_collector_is_found_in_its_url() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(collector_addrs("http://127.0.0.1:7373"), vec![v4]);
        assert_eq!(collector_addrs("https://[::1]:7373/"), vec![v6]);
        assert_eq!(collector_addrs("https://[::1]"), vec![v6]);
        assert_eq!(
            collector_addrs("http://127.0.0.1:7373,https://[::1]:7373"),
            vec![v4, v6]
        );
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
            kind: v1::ContainmentKind::Isolate as i32,
        }
    }

    /// The resolvers come from the workload's own root: the first process
    /// of the cgroup whose root opens, its /etc/resolv.conf resolved inside
    /// that root (an absolute symlink, as containers have, stays in it). A
    /// root without the file, a cgroup without processes or one that is
    /// gone gives no resolver (loopback stays allowed regardless).
    #[test]
    fn resolvers_are_read_from_the_workloads_own_root() {
        use std::{fs, os::unix::fs::symlink};
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup");
        let proc_root = dir.path().join("proc");
        fs::create_dir(&cgroup).unwrap();
        // Pid 41 has exited (no root); pid 42's resolv.conf links to
        // /run/resolv.conf, which exists only inside its root.
        let root = proc_root.join("42/root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("run")).unwrap();
        fs::write(
            root.join("run/resolv.conf"),
            "search svc.example\nnameserver 203.0.113.53\nnameserver 2001:db8::53\noptions ndots:5\n",
        )
        .unwrap();
        symlink("/run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        fs::write(cgroup.join("cgroup.procs"), "41\n42\n").unwrap();
        let want: Vec<IpAddr> = vec![
            "203.0.113.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ];
        assert_eq!(resolvers(&cgroup, &proc_root), want);
        let c = containment("r1", "/cgroup", v1::ContainmentMode::Enforce, &[]);
        let iso = isolation(&c, dir.path(), &proc_root, &[]).unwrap();
        let allow: Vec<String> = iso.allow.iter().map(|p| p.to_string()).collect();
        assert_eq!(allow, ["203.0.113.53/32", "2001:db8::53/128"]);

        // The first process with a root decides: its root has no
        // resolv.conf, so none (not the next process's).
        fs::create_dir_all(proc_root.join("43/root/etc")).unwrap();
        fs::write(cgroup.join("cgroup.procs"), "43\n42\n").unwrap();
        assert!(resolvers(&cgroup, &proc_root).is_empty());

        // No process yet; a cgroup that is gone.
        fs::write(cgroup.join("cgroup.procs"), "").unwrap();
        assert!(resolvers(&cgroup, &proc_root).is_empty());
        assert!(resolvers(&dir.path().join("gone"), &proc_root).is_empty());
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

    #[test]
    fn freezes_and_kills_are_enforce_only_and_inside_the_mount() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        for kind in [v1::ContainmentKind::Freeze, v1::ContainmentKind::Kill] {
            let ok = containment("f1", "/pods/x", v1::ContainmentMode::Enforce, &[]);
            let t = cgroup_target(&ok, kind, mount).unwrap();
            assert_eq!(t.cgroup, mount.join("pods/x"));
            assert_eq!(t.id, "f1");
            for (mode, cgroup, why) in [
                (v1::ContainmentMode::Shadow, "/pods/x", "no shadow mode"),
                (v1::ContainmentMode::Unspecified, "/pods/x", "no mode"),
                (v1::ContainmentMode::Enforce, "", "bad cgroup"),
                (v1::ContainmentMode::Enforce, "/pods/../x", "bad cgroup"),
            ] {
                let c = containment("f1", cgroup, mode, &[]);
                let e = cgroup_target(&c, kind, mount).unwrap_err();
                assert!(e.contains(why) && e.contains("f1"), "{kind:?} {e}");
            }
        }
    }

    #[test]
    fn without_containment_every_kind_says_why() {
        let mut off = Responder::new(None, None, PathBuf::from("/proc"), String::new());
        let mut items = Vec::new();
        for (id, kind) in [
            ("i", v1::ContainmentKind::Isolate),
            ("f", v1::ContainmentKind::Freeze),
            ("k", v1::ContainmentKind::Kill),
        ] {
            let mut c = containment(id, "/pods/x", v1::ContainmentMode::Enforce, &[]);
            c.kind = kind as i32;
            items.push(c);
        }
        off.apply(&v1::Containments {
            generation: 3,
            items,
        });
        let (generation, statuses) = off.statuses();
        assert_eq!(generation, 3);
        for s in &statuses {
            assert!(!s.applied && s.error.contains("disabled"), "{s:?}");
        }
        let kinds: Vec<i32> = statuses.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [0, 1, 2]);
    }

    /// A lifted containment's last status is reported for
    /// [`LIFTED_KEPT_MS`] after the lift, then no more; a set that names
    /// it again makes it wanted, not lifted.
    #[test]
    fn a_lifted_containments_last_status_is_kept_for_a_while() {
        let mut r = Responder::new(None, None, PathBuf::from("/proc"), String::new());
        let now = now_ms();
        for (id, at) in [("old", now - LIFTED_KEPT_MS - 1), ("recent", now - 1_000)] {
            let last = v1::ContainmentStatus {
                id: id.into(),
                lifted: true,
                first_block_ms: at - 10,
                blocked_connects: 1,
                ..Default::default()
            };
            r.lifted.insert(id.into(), (last, at));
        }
        let (_, statuses) = r.statuses();
        let ids: Vec<(&str, bool)> = statuses.iter().map(|s| (s.id.as_str(), s.lifted)).collect();
        assert_eq!(ids, [("recent", true)]);
        assert!(!r.lifted.contains_key("old"));

        r.apply(&v1::Containments {
            generation: 2,
            items: vec![containment(
                "recent",
                "/pods/x",
                v1::ContainmentMode::Enforce,
                &[],
            )],
        });
        let (_, statuses) = r.statuses();
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        assert!(
            !statuses[0].lifted && statuses[0].error.contains("disabled"),
            "{statuses:?}"
        );
    }

    #[test]
    fn without_cgroup2_freezes_and_kills_say_so_and_nothing_is_lifted() {
        let why = ContainError::NoCgroup2.to_string();
        let mut r = Responder::new(None, None, PathBuf::from("/proc"), String::new());
        r.executor = Err(why.clone());
        r.cgroups = Err(why.clone());
        let mut items = Vec::new();
        for (id, kind) in [
            ("f", v1::ContainmentKind::Freeze),
            ("k", v1::ContainmentKind::Kill),
        ] {
            let mut c = containment(id, "/pods/x", v1::ContainmentMode::Enforce, &[]);
            c.kind = kind as i32;
            items.push(c);
        }
        r.apply(&v1::Containments {
            generation: 1,
            items,
        });
        let (_, statuses) = r.statuses();
        assert_eq!(statuses.len(), 2);
        assert_eq!(
            statuses[0].error,
            format!("cannot freeze on this host: {why}")
        );
        assert_eq!(
            statuses[1].error,
            format!("cannot kill on this host: {why}")
        );
        assert!(why.contains("cgroup2"), "{why}");
        assert!(statuses.iter().all(|s| !s.applied));
    }
}
