//! What changed between two scans: the Delta the agent sends between full
//! snapshots.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use patchgap_proto::v1;

use crate::{
    model::{Artifact, ArtifactKind, Inventory, Process, ProcessKey, Socket, Workload},
    wire,
};

/// The processes of the last scan whose state the collector has been sent.
#[derive(Debug, Default)]
pub struct Baseline {
    /// By pid: among running processes a pid is unique, and events name
    /// processes by pid. The record's key says which process it is.
    processes: HashMap<u32, Process>,
    workloads: HashMap<String, Workload>,
    last_reconciled: u32,
    /// When an exec event was merged for each pid, until the next full
    /// scan: a process recorded after that scan started could not be in
    /// it, and is not closed for being missing.
    exec_at: HashMap<u32, Instant>,
    /// Keys of processes closed lately, by pid: a late event of one (a
    /// connect read after the scan that closed it) is put to its key, not
    /// turned into a new record that would reopen it.
    closed: HashMap<u32, (ProcessKey, Instant)>,
    /// When the socket tables were read, as the collector was last told.
    sockets_read_ms: i64,
    /// Processes whose record changed (recorded at an event, or gained files
    /// it opened) since it last went into a delta. The record is converted
    /// once, when the delta goes out ([`Baseline::settle`]) or before the
    /// process leaves the baseline, not once per change: an exec and its
    /// loader's opens were three conversions (and frees) of the whole
    /// record, an import of 200 modules two hundred.
    unsent: HashSet<u32>,
}

/// How long a closed process's key answers for its pid.
const CLOSED_FOR: std::time::Duration = std::time::Duration::from_secs(5);
/// Entries of `closed` before it is emptied.
const CLOSED_LIMIT: usize = 4096;

impl Baseline {
    pub fn new(inv: &Inventory) -> Baseline {
        Baseline {
            processes: inv
                .processes
                .iter()
                .map(|p| (p.key.pid, p.clone()))
                .collect(),
            workloads: inv
                .workloads
                .iter()
                .map(|w| (w.id.clone(), w.clone()))
                .collect(),
            last_reconciled: 0,
            exec_at: HashMap::new(),
            closed: HashMap::new(),
            sockets_read_ms: inv.stats.sockets_read_ms,
            unsent: HashSet::new(),
        }
    }

    /// Whether some record changed that no delta carries yet.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Puts the records that changed since they last went out into `delta`.
    pub fn settle(&mut self, delta: &mut v1::Delta) {
        for pid in std::mem::take(&mut self.unsent) {
            if let Some(p) = self.processes.get(&pid) {
                upsert(delta, wire::process(p));
            }
        }
    }

    /// The same for one process, before its record leaves the baseline.
    fn settle_one(&mut self, pid: u32, delta: &mut v1::Delta) {
        if self.unsent.remove(&pid)
            && let Some(p) = self.processes.get(&pid)
        {
            upsert(delta, wire::process(p));
        }
    }

    /// The delta from this baseline to `inv`, or None when nothing changed.
    /// The baseline then becomes `inv`. With `sensing` (eBPF on), every
    /// process this scan finds that the baseline lacks, and every exit it
    /// finds, is something eBPF missed: counted as `reconciled`.
    ///
    /// `scan_started` is when the scan began reading /proc. The caller
    /// merges the events the kernel had sent by the scan's end first, so a
    /// process that exited before the scan is closed by its own exit event
    /// and time; one whose exec was merged after the scan started is kept
    /// (the scan could not see it).
    pub fn advance(
        &mut self,
        inv: &Inventory,
        sensing: bool,
        scan_started: Instant,
    ) -> Option<v1::Delta> {
        let mut delta = v1::Delta {
            scanned_at_ms: inv.scanned_at_ms,
            ..Default::default()
        };
        let mut reconciled = 0u32;
        // Records with opens no delta carries yet go out with this one,
        // whatever the scan finds.
        let unsent = std::mem::take(&mut self.unsent);
        // New or changed workloads go first, so every upsert can name them.
        for w in &inv.workloads {
            if self.workloads.get(&w.id) != Some(w) {
                delta.workloads.push(wire::workload(w));
                self.workloads.insert(w.id.clone(), w.clone());
            }
        }
        let mut next = HashMap::with_capacity(inv.processes.len());
        for p in &inv.processes {
            let mut p = p.clone();
            let mut old = self.processes.remove(&p.key.pid);
            // The same pid, another process: the old one exited.
            if let Some(o) = old.take_if(|o| o.key != p.key) {
                if unsent.contains(&o.key.pid) {
                    delta.upserts.push(wire::process(&o));
                }
                reconciled += 1;
                delta.exits.push(v1::Exit {
                    key: Some(wire::key(&o.key)),
                    exit_time_ms: inv.scanned_at_ms,
                });
            }
            match old {
                None => {
                    reconciled += 1;
                    delta.upserts.push(wire::process(&p));
                    if !p.sockets.is_empty() {
                        delta.sockets.push(wire::sockets(&p));
                    }
                }
                Some(old) => {
                    // Files the process opened (seen by eBPF) are history a
                    // /proc scan cannot see again: keep them.
                    keep_opened(&old.artifacts, &mut p.artifacts);
                    // A scan that did not read sockets knows nothing new.
                    if !inv.sockets_read {
                        p.sockets = old.sockets.clone();
                    } else {
                        keep_later_connects(
                            &old.sockets,
                            &mut p.sockets,
                            inv.stats.sockets_read_ms,
                        );
                    }
                    if unsent.contains(&p.key.pid) || !old.same_record(&p) {
                        delta.upserts.push(wire::process(&p));
                    }
                    if old.sockets != p.sockets {
                        delta.sockets.push(wire::sockets(&p));
                    }
                }
            }
            next.insert(p.key.pid, p);
        }
        // Whatever is left was not seen in this scan: it exited (and its
        // exit event was lost), unless an exec event recorded it after the
        // scan had started.
        self.exec_at.retain(|_, at| *at >= scan_started);
        for (pid, p) in std::mem::take(&mut self.processes) {
            if unsent.contains(&pid) {
                delta.upserts.push(wire::process(&p));
            }
            if sensing && self.exec_at.contains_key(&pid) && !next.contains_key(&pid) {
                next.insert(pid, p);
                continue;
            }
            reconciled += 1;
            self.note_closed(p.key);
            delta.exits.push(v1::Exit {
                key: Some(wire::key(&p.key)),
                exit_time_ms: inv.scanned_at_ms,
            });
        }
        self.processes = next;
        // A scan that read the socket tables is news even when no socket
        // changed: the stats say how old the socket view is now.
        let read_news = inv.stats.sockets_read_ms != self.sockets_read_ms;
        self.sockets_read_ms = inv.stats.sockets_read_ms;
        let changed = read_news
            || !(delta.upserts.is_empty()
                && delta.exits.is_empty()
                && delta.sockets.is_empty()
                && delta.workloads.is_empty());
        let mut stats = inv.stats;
        stats.reconciled = if sensing { reconciled } else { 0 };
        self.last_reconciled = stats.reconciled;
        changed.then(|| {
            delta.stats = Some(wire::stats(&stats));
            delta
        })
    }

    /// Puts the opened artifacts this baseline knows into the processes of
    /// a fresh inventory (the same processes, by key): a resync starts from
    /// /proc, which cannot see what was opened and closed.
    pub fn carry_opened(&self, inv: &mut Inventory) {
        for p in &mut inv.processes {
            if let Some(old) = self.processes.get(&p.key.pid).filter(|o| o.key == p.key) {
                keep_opened(&old.artifacts, &mut p.artifacts);
            }
        }
    }

    /// What the last `advance` counted as reconciled.
    pub fn last_reconciled(&self) -> u32 {
        self.last_reconciled
    }

    /// The running process with this pid (pids are unique among running
    /// processes).
    pub fn by_pid(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    /// A workload of the baseline, by id.
    pub fn workload(&self, id: &str) -> Option<&Workload> {
        self.workloads.get(id)
    }

    /// Records the light record of an exec event. The process's files
    /// `opened` so far are dropped: events arrive in the order they
    /// happened, so every one of them was opened by the image this exec
    /// replaced (`bash -c 'exec node'` must not leave node with bash's
    /// libraries). A full record of the same process that already shows the
    /// new image (a scan ran between the exec and the handling of its
    /// event: same exe and command line) is kept, less those opens; any
    /// other record of it is the old image and is replaced.
    /// `w` is None when the process is in a workload the baseline has
    /// (its parent's: a copy of it would only be compared and dropped).
    pub fn record_exec(&mut self, p: Process, w: Option<Workload>, delta: &mut v1::Delta) {
        if let Some(w) = w {
            self.learn_workload(w, delta);
        }
        if let Some(old) = self
            .processes
            .get_mut(&p.key.pid)
            .filter(|old| old.key == p.key)
        {
            let before = old.artifacts.len();
            old.artifacts.retain(|a| a.kind != ArtifactKind::Opened);
            let dropped = old.artifacts.len() != before;
            if !old.partial && old.exe == p.exe && old.cmdline == p.cmdline {
                if dropped {
                    self.unsent.insert(p.key.pid);
                }
                return;
            }
            // Replaced whole: record() must not carry anything over, but
            // the sockets, which an exec keeps (descriptors without
            // CLOEXEC) until the next read of the tables says otherwise.
            // What the old image opened is dropped with it.
            self.unsent.remove(&p.key.pid);
            let old = self.processes.remove(&p.key.pid).expect("found above");
            let mut p = p;
            if p.sockets.is_empty() {
                p.sockets = old.sockets;
            }
            self.exec_at.insert(p.key.pid, Instant::now());
            self.record_process(p, delta);
            return;
        }
        self.exec_at.insert(p.key.pid, Instant::now());
        self.record_process(p, delta);
    }

    /// The key of a process with this pid that was closed lately (in the
    /// last few seconds: later, the pid may well be another process's).
    pub fn closed(&self, pid: u32) -> Option<ProcessKey> {
        self.closed
            .get(&pid)
            .filter(|(_, at)| at.elapsed() < CLOSED_FOR)
            .map(|(k, _)| *k)
    }

    fn note_closed(&mut self, key: ProcessKey) {
        if self.closed.len() >= CLOSED_LIMIT {
            self.closed.clear();
        }
        self.closed.insert(key.pid, (key, Instant::now()));
    }

    /// Records a process scanned at an event (exec, or an unknown pid), and
    /// puts what changed into `delta`: exits and workloads now, the record
    /// at the next [`Baseline::settle`].
    pub fn record(&mut self, p: Process, w: Workload, delta: &mut v1::Delta) {
        self.learn_workload(w, delta);
        self.record_process(p, delta);
    }

    /// A workload as it is now: sent when new or changed.
    pub fn learn_workload(&mut self, w: Workload, delta: &mut v1::Delta) {
        if self.workloads.get(&w.id) != Some(&w) {
            delta.workloads.push(wire::workload(&w));
            self.workloads.insert(w.id.clone(), w);
        }
    }

    /// A process record, in a workload the baseline has.
    pub fn record_process(&mut self, p: Process, delta: &mut v1::Delta) {
        // A pid reused since: the old process is gone.
        if self
            .processes
            .get(&p.key.pid)
            .is_some_and(|old| old.key != p.key)
        {
            self.settle_one(p.key.pid, delta);
            let old = self.processes.remove(&p.key.pid).expect("checked above");
            delta.exits.push(v1::Exit {
                key: Some(wire::key(&old.key)),
                exit_time_ms: p.start_time_ms,
            });
        }
        let mut p = p;
        if let Some(old) = self.processes.get(&p.key.pid) {
            keep_opened(&old.artifacts, &mut p.artifacts);
            // A scan of one pid does not read the socket tables: what the
            // last full scan and the connects since said still holds.
            if p.sockets.is_empty() {
                p.sockets = old.sockets.clone();
            }
            if old.same_record(&p) {
                return;
            }
        }
        // Converted when the delta goes out (or its process leaves): an
        // exec and the opens of its loader are one conversion, not three.
        self.unsent.insert(p.key.pid);
        if !p.sockets.is_empty() {
            delta.sockets.push(wire::sockets(&p));
        }
        self.processes.insert(p.key.pid, p);
    }

    /// Adds files a process opened; the record goes out at the next
    /// [`Baseline::settle`]. Returns false when the process is not known
    /// or already has those files.
    pub fn add_opened(&mut self, pid: u32, artifacts: Vec<Artifact>) -> bool {
        let Some(p) = self.processes.get_mut(&pid) else {
            return false;
        };
        let mut added = false;
        for artifact in artifacts {
            if !p
                .artifacts
                .iter()
                .any(|a| same_file_and_package(a, &artifact))
            {
                p.artifacts.push(artifact);
                added = true;
            }
        }
        if added {
            self.unsent.insert(pid);
        }
        added
    }

    /// Adds a socket a connect event made to its process's current view,
    /// unless the view has that destination already. Returns whether it
    /// was added (and the process's sockets put into `delta`).
    pub fn add_connect(&mut self, pid: u32, socket: Socket, delta: &mut v1::Delta) -> bool {
        let Some(p) = self.processes.get_mut(&pid) else {
            return false;
        };
        if p.sockets.iter().any(|s| {
            s.protocol == socket.protocol
                && s.remote_addr == socket.remote_addr
                && s.remote_port == socket.remote_port
        }) {
            return false;
        }
        p.sockets.push(socket);
        let sockets = wire::sockets(p);
        // One list per process in a delta: the latest.
        match delta.sockets.iter_mut().find(|s| s.key == sockets.key) {
            Some(s) => *s = sockets,
            None => delta.sockets.push(sockets),
        }
        true
    }

    /// Records an exit seen by eBPF. `start_ticks` (0: unknown) must match
    /// the record's, so an exit is never put to a later process with the
    /// same pid. Returns the process's key, or None when it was never seen.
    pub fn exit(
        &mut self,
        pid: u32,
        start_ticks: u64,
        at_ms: i64,
        delta: &mut v1::Delta,
    ) -> Option<ProcessKey> {
        let key = self.by_pid(pid)?.key;
        if start_ticks != 0 && key.start_ticks != start_ticks {
            return None;
        }
        // What it opened goes out before its exit (the record is let go,
        // so it moves into the message).
        let record = self.processes.remove(&pid);
        if self.unsent.remove(&pid)
            && let Some(p) = record
        {
            upsert(delta, wire::process_owned(p));
        }
        self.exec_at.remove(&pid);
        self.note_closed(key);
        delta.exits.push(v1::Exit {
            key: Some(wire::key(&key)),
            exit_time_ms: at_ms,
        });
        Some(key)
    }
}

/// Carries over the sockets that connect events added after the socket
/// tables were read (at `read_ms`): the tables may not show them yet.
fn keep_later_connects(old: &[Socket], new: &mut Vec<Socket>, read_ms: i64) {
    for s in old {
        if s.connect_ms > 0
            && s.connect_ms >= read_ms
            && !new.iter().any(|n| {
                n.protocol == s.protocol
                    && n.remote_addr == s.remote_addr
                    && n.remote_port == s.remote_port
            })
        {
            new.push(s.clone());
        }
    }
}

/// Carries the opened artifacts of an earlier record of a process over to
/// its new record: an open is history that a /proc scan cannot see again.
fn keep_opened(old: &[Artifact], new: &mut Vec<Artifact>) {
    for a in old.iter().filter(|a| a.kind == ArtifactKind::Opened) {
        // Compared with the new record's opened artifacts only: the same
        // file may be there as `installed` (a node package's package.json
        // is both its installed record and what `require` opens).
        if !new
            .iter()
            .any(|b| b.kind == a.kind && b.path == a.path && b.package == a.package)
        {
            new.push(a.clone());
        }
    }
}

/// One file under one package identity (a file can have two: Debian's
/// python3-cryptography and PyPI's cryptography) with one evidence (a node
/// package's package.json is `installed`, and `opened` once required).
fn same_file_and_package(a: &Artifact, b: &Artifact) -> bool {
    a.kind == b.kind
        && a.path == b.path
        && (a.dev, a.inode) == (b.dev, b.inode)
        && a.package == b.package
}

/// Puts a process record into a pending delta, replacing an earlier record
/// of the same process in it.
fn upsert(delta: &mut v1::Delta, p: v1::Process) {
    match delta.upserts.iter_mut().find(|u| u.key == p.key) {
        Some(u) => *u = p,
        None => delta.upserts.push(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PathBytes, ScanStats};

    fn proc(pid: u32, start_ticks: u64) -> Process {
        Process {
            key: ProcessKey { pid, start_ticks },
            ppid: 1,
            uid: 0,
            euid: 0,
            comm: "x".into(),
            exe: PathBytes(b"/bin/x".to_vec()),
            cmdline: String::new(),
            cgroup: "/".into(),
            mnt_ns: 1,
            net_ns: 1,
            net_ns_name: String::new(),
            start_time_ms: 1000,
            workload: "host".into(),
            root: PathBytes(b"/".to_vec()),
            artifacts: Vec::new(),
            sockets: Vec::new(),
            partial: false,
            privilege: Default::default(),
        }
    }

    fn inv(processes: Vec<Process>) -> Inventory {
        Inventory {
            host: Default::default(),
            scanned_at_ms: 5000,
            stats: ScanStats::default(),
            workloads: vec![Workload {
                id: "host".into(),
                kind: "host".into(),
                ..Default::default()
            }],
            processes,
            sockets_read: true,
        }
    }

    fn keys(exits: &[v1::Exit]) -> Vec<(u32, u64)> {
        exits
            .iter()
            .map(|e| e.key.map(|k| (k.pid, k.start_ticks)).unwrap())
            .collect()
    }

    fn opened(path: &str, package: Option<&str>) -> Artifact {
        Artifact {
            path: PathBytes(path.as_bytes().to_vec()),
            dev: 1,
            inode: 2,
            kind: ArtifactKind::Opened,
            deleted: false,
            stale: false,
            content: None,
            package: package.map(|name| {
                std::sync::Arc::new(crate::model::PackageInfo {
                    ecosystem: "pypi".into(),
                    name: name.into(),
                    source: String::new(),
                    version: "1.0".into(),
                    arch: String::new(),
                    purl: format!("pkg:pypi/{name}@1.0"),
                    distro: None,
                    fixed_cves: Vec::new(),
                    replaced_by: String::new(),
                })
            }),
        }
    }

    /// Opens are history that /proc cannot show again: rescans, event-time
    /// records and resyncs keep them, under every identity of the file.
    #[test]
    fn opened_artifacts_survive_rescans_and_resyncs() {
        let mut base = Baseline::new(&inv(vec![proc(10, 1)]));
        let file = "/venv/lib/python3.11/site-packages/tiny/__init__.py";
        let mut d = v1::Delta::default();
        // The same file as an unowned file and as a PyPI module.
        assert!(base.add_opened(10, vec![opened(file, None), opened(file, Some("tiny"))]));
        assert!(
            !base.add_opened(10, vec![opened(file, Some("tiny"))]),
            "no duplicate"
        );
        assert_eq!(base.by_pid(10).unwrap().artifacts.len(), 2);
        base.settle(&mut d);

        let host = base.workload("host").cloned().unwrap();
        base.record(proc(10, 1), host, &mut d);
        assert_eq!(
            base.by_pid(10).unwrap().artifacts.len(),
            2,
            "event-time record"
        );
        assert!(
            base.advance(&inv(vec![proc(10, 1)]), true, Instant::now())
                .is_none(),
            "a rescan changes nothing"
        );
        assert_eq!(base.by_pid(10).unwrap().artifacts.len(), 2);

        // A resync's fresh inventory gets them back, for the same process only.
        let mut fresh = inv(vec![proc(10, 1), proc(11, 1)]);
        base.carry_opened(&mut fresh);
        assert_eq!(fresh.processes[0].artifacts.len(), 2);
        assert!(fresh.processes[1].artifacts.is_empty());
        let mut reused = inv(vec![proc(10, 9)]);
        base.carry_opened(&mut reused);
        assert!(
            reused.processes[0].artifacts.is_empty(),
            "another process on a reused pid"
        );
    }

    /// A scan that skipped the socket tables keeps the sockets last read; one
    /// that read them reports the change.
    #[test]
    fn a_scan_without_sockets_keeps_the_last_ones() {
        let mut with_socket = proc(10, 1);
        with_socket.sockets.push(crate::model::Socket {
            protocol: "tcp",
            local_addr: "127.0.0.1".into(),
            local_port: 40000,
            remote_addr: "127.0.0.1".into(),
            remote_port: 443,
            state: "ESTABLISHED",
            inode: 7,
            outbound: true,
            connect_ms: 0,
        });
        let mut base = Baseline::new(&inv(vec![with_socket]));
        let mut skipped = inv(vec![proc(10, 1)]);
        skipped.sockets_read = false;
        assert!(
            base.advance(&skipped, true, Instant::now()).is_none(),
            "nothing changed"
        );
        assert_eq!(base.by_pid(10).unwrap().sockets.len(), 1);
        let d = base
            .advance(&inv(vec![proc(10, 1)]), true, Instant::now())
            .expect("sockets closed");
        assert_eq!(d.sockets.len(), 1);
        assert!(d.sockets[0].sockets.is_empty());
    }

    /// A reused pid is another process: the old one exits, wherever the new
    /// one is learned (an event or a scan).
    fn connected(remote_port: u16, connect_ms: i64) -> crate::model::Socket {
        crate::model::Socket {
            protocol: "tcp",
            local_addr: String::new(),
            local_port: 0,
            remote_addr: "127.0.0.1".into(),
            remote_port,
            state: "ESTABLISHED",
            inode: 0,
            outbound: true,
            connect_ms,
        }
    }

    /// A connect event puts its socket into the process's view at once;
    /// event-time records and scans that skip the tables keep it; a read of
    /// the tables replaces it, unless the connect came after that read.
    /// Each read of the tables is news (its time), even with no change.
    #[test]
    fn connects_show_until_the_tables_are_read() {
        let mut base = Baseline::new(&inv(vec![proc(10, 1)]));
        let mut d = v1::Delta::default();
        assert!(base.add_connect(10, connected(19090, 6000), &mut d));
        assert!(
            !base.add_connect(10, connected(19090, 6001), &mut d),
            "known"
        );
        assert!(
            !base.add_connect(11, connected(19090, 6001), &mut d),
            "no such pid"
        );
        assert_eq!(d.sockets.len(), 1);
        assert_eq!(d.sockets[0].sockets[0].connect_ms, 6000);

        let host = base.workload("host").cloned().unwrap();
        let mut changed = proc(10, 1);
        changed.cmdline = "x --new".into();
        base.record(changed.clone(), host, &mut d);
        assert_eq!(
            base.by_pid(10).unwrap().sockets.len(),
            1,
            "event-time record"
        );
        base.settle(&mut d);

        let mut skipped = inv(vec![changed.clone()]);
        skipped.sockets_read = false;
        assert!(base.advance(&skipped, true, Instant::now()).is_none());
        assert_eq!(base.by_pid(10).unwrap().sockets.len(), 1);

        // Read before the connect: the tables may lack it, it stays.
        let mut early = inv(vec![changed.clone()]);
        early.stats.sockets_read_ms = 5500;
        let d = base
            .advance(&early, true, Instant::now())
            .expect("a read is news");
        assert!(d.sockets.is_empty());
        assert_eq!(d.stats.unwrap().sockets_read_ms, 5500);
        assert_eq!(base.by_pid(10).unwrap().sockets.len(), 1);
        // Read after it, and the socket is gone: the tables are the truth.
        let mut late = inv(vec![changed]);
        late.stats.sockets_read_ms = 7000;
        let d = base
            .advance(&late, true, Instant::now())
            .expect("sockets changed");
        assert!(d.sockets[0].sockets.is_empty());
        assert!(base.by_pid(10).unwrap().sockets.is_empty());
    }

    #[test]
    fn pid_reuse_exits_the_old_process() {
        let mut base = Baseline::new(&inv(vec![proc(10, 1), proc(11, 1)]));
        let host = base.workload("host").cloned().unwrap();
        let mut d = v1::Delta::default();
        base.record(proc(10, 2), host.clone(), &mut d);
        assert_eq!(keys(&d.exits), [(10, 1)]);
        assert!(d.upserts.is_empty(), "the record waits for the flush");
        base.settle(&mut d);
        assert_eq!(d.upserts.len(), 1);
        assert_eq!(base.by_pid(10).unwrap().key.start_ticks, 2);

        // Recording the same process again changes nothing.
        let mut d = v1::Delta::default();
        base.record(proc(10, 2), host, &mut d);
        base.settle(&mut d);
        assert!(d.upserts.is_empty() && d.exits.is_empty());

        // A scan that finds pid 10 started again, and pid 11 gone.
        let d = base
            .advance(&inv(vec![proc(10, 3)]), true, Instant::now())
            .unwrap();
        let mut exits = keys(&d.exits);
        exits.sort();
        assert_eq!(exits, [(10, 2), (11, 1)]);
        assert_eq!(
            base.last_reconciled(),
            3,
            "a new process and two exits the events missed"
        );

        // A late exec event for a process a scan already read changes nothing.
        let mut d = v1::Delta::default();
        let mut light = proc(10, 3);
        light.partial = true;
        base.record_exec(light, base.workload("host").cloned(), &mut d);
        assert!(d.upserts.is_empty());
        assert!(!base.by_pid(10).unwrap().partial);

        // An exit event closes it with the event's time.
        let mut d = v1::Delta::default();
        assert_eq!(
            base.exit(10, 0, 7000, &mut d),
            Some(ProcessKey {
                pid: 10,
                start_ticks: 3
            })
        );
        assert_eq!(d.exits[0].exit_time_ms, 7000);
        assert!(base.by_pid(10).is_none());
        assert_eq!(base.exit(10, 0, 7000, &mut d), None);
    }

    /// A process whose exec was merged while a scan read /proc could not be
    /// in that scan: it stays open. One exec'd before the scan started and
    /// missing from it exited (its exit event was lost): it is closed.
    #[test]
    fn a_scan_closes_only_what_it_could_have_seen() {
        let mut base = Baseline::new(&inv(vec![proc(10, 1)]));
        let host = base.workload("host").cloned().unwrap();
        let mut d = v1::Delta::default();
        base.record_exec(proc(20, 1), Some(host.clone()), &mut d);
        let scan_started = Instant::now();
        base.record_exec(proc(21, 1), Some(host), &mut d);
        let d = base
            .advance(&inv(vec![proc(10, 1)]), true, scan_started)
            .expect("an exit");
        assert_eq!(keys(&d.exits), [(20, 1)]);
        assert!(base.by_pid(21).is_some(), "exec'd during the scan");

        // The next scan started after it: missing now means gone.
        let d = base
            .advance(&inv(vec![proc(10, 1)]), true, Instant::now())
            .expect("an exit");
        assert_eq!(keys(&d.exits), [(21, 1)]);

        // Without eBPF nothing is waited for.
        let mut base = Baseline::new(&inv(vec![]));
        let host = base.workload("host").cloned().unwrap_or_default();
        let scan_started = Instant::now();
        base.record_exec(proc(30, 1), Some(host), &mut v1::Delta::default());
        let d = base.advance(&inv(vec![]), false, scan_started).unwrap();
        assert_eq!(keys(&d.exits), [(30, 1)]);
    }

    /// Opens are sent once per flush, not once per open, and never lost:
    /// a record with unsent opens goes out before its process leaves the
    /// baseline (an exit event, a reused pid, a scan that misses it).
    #[test]
    fn opens_go_out_once_and_before_the_process_leaves() {
        let file = |n: u32| format!("/venv/lib/python3.11/site-packages/m{n}.py");
        let mut base = Baseline::new(&inv(vec![proc(10, 1), proc(11, 1), proc(12, 1)]));
        for n in 0..50 {
            assert!(base.add_opened(10, vec![opened(&file(n), Some("m"))]));
        }
        assert!(base.has_unsent());
        let mut d = v1::Delta::default();
        base.settle(&mut d);
        assert_eq!(d.upserts.len(), 1, "one record for 50 opens");
        assert_eq!(d.upserts[0].artifacts.len(), 50);
        assert!(!base.has_unsent());

        // A short process (exec, its loader's open, exit): one conversion.
        let host = base.workload("host").cloned().unwrap();
        let mut d = v1::Delta::default();
        base.record_exec(proc(40, 1), Some(host), &mut d);
        base.add_opened(40, vec![opened("/usr/lib/libc.so.6", Some("libc6"))]);
        base.exit(40, 1, 6000, &mut d);
        base.settle(&mut d);
        assert_eq!(d.upserts.len(), 1);
        assert_eq!(d.upserts[0].artifacts.len(), 1);
        assert_eq!(keys(&d.exits), [(40, 1)]);

        // An exit: the record with its opens first, then the exit.
        base.add_opened(11, vec![opened(&file(1), Some("m"))]);
        let mut d = v1::Delta::default();
        base.exit(11, 1, 7000, &mut d);
        assert_eq!(d.upserts.len(), 1);
        assert_eq!(d.upserts[0].artifacts.len(), 1);
        assert_eq!(keys(&d.exits), [(11, 1)]);
        assert!(!base.has_unsent());

        // A pid reused: the old process's opens, then its exit.
        base.add_opened(12, vec![opened(&file(2), Some("m"))]);
        let host = base.workload("host").cloned().unwrap();
        let mut d = v1::Delta::default();
        base.record(proc(12, 5), host, &mut d);
        assert_eq!(keys(&d.exits), [(12, 1)]);
        base.settle(&mut d);
        let sent: Vec<_> = d
            .upserts
            .iter()
            .map(|u| (u.key.as_ref().unwrap().start_ticks, u.artifacts.len()))
            .collect();
        assert_eq!(sent, [(1, 1), (5, 0)]);

        // A scan: unsent opens go with its delta, of a process it still
        // finds (same record otherwise) and of one it finds gone.
        base.add_opened(10, vec![opened(&file(99), Some("m"))]);
        base.add_opened(12, vec![opened(&file(3), Some("m"))]);
        let d = base
            .advance(&inv(vec![proc(10, 1)]), true, Instant::now())
            .expect("news");
        let mut sent: Vec<_> = d
            .upserts
            .iter()
            .map(|u| (u.key.as_ref().unwrap().pid, u.artifacts.len()))
            .collect();
        sent.sort();
        assert_eq!(sent, [(10, 51), (12, 1)]);
        assert_eq!(keys(&d.exits), [(12, 5)]);
        assert!(!base.has_unsent());
    }
}
