//! Conversion of the inventory model to patchgap.v1 messages, and the
//! splitting of a snapshot into parts that fit the stream's size limit.

use patchgap_proto::Message;
use patchgap_proto::v1;

use crate::model::{self, ArtifactKind, Inventory, Process};

pub fn key(k: &model::ProcessKey) -> v1::ProcessKey {
    v1::ProcessKey {
        pid: k.pid,
        start_ticks: k.start_ticks,
    }
}

pub fn process(p: &Process) -> v1::Process {
    v1::Process {
        key: Some(key(&p.key)),
        ppid: p.ppid,
        uid: p.uid,
        euid: p.euid,
        exe: p.exe.0.clone(),
        cmdline: p.cmdline.clone(),
        comm: p.comm.clone(),
        cgroup: p.cgroup.clone(),
        mnt_ns: p.mnt_ns,
        net_ns: p.net_ns,
        start_time_ms: p.start_time_ms,
        workload: p.workload.clone(),
        root: p.root.0.clone(),
        artifacts: p
            .artifacts
            .iter()
            .map(|a| v1::Artifact {
                path: a.path.0.clone(),
                dev: a.dev,
                inode: a.inode,
                kind: match a.kind {
                    ArtifactKind::Exe => v1::ArtifactKind::Exe,
                    ArtifactKind::Mapped => v1::ArtifactKind::Mapped,
                } as i32,
                deleted: a.deleted,
                stale: a.stale,
                package: a.package.as_ref().map(|p| v1::Package {
                    ecosystem: p.ecosystem.clone(),
                    name: p.name.clone(),
                    source: p.source.clone(),
                    version: p.version.clone(),
                    arch: p.arch.clone(),
                    purl: p.purl.clone(),
                }),
            })
            .collect(),
        partial: p.partial,
    }
}

pub fn sockets(p: &Process) -> v1::ProcessSockets {
    v1::ProcessSockets {
        key: Some(key(&p.key)),
        sockets: p
            .sockets
            .iter()
            .map(|s| v1::Socket {
                protocol: s.protocol.into(),
                local_addr: s.local_addr.clone(),
                local_port: s.local_port.into(),
                remote_addr: s.remote_addr.clone(),
                remote_port: s.remote_port.into(),
                state: s.state.into(),
                inode: s.inode,
                outbound: s.outbound,
            })
            .collect(),
    }
}

pub fn stats(s: &model::ScanStats) -> v1::ScanStats {
    v1::ScanStats {
        processes: s.processes,
        vanished: s.vanished,
        denied: s.denied,
        artifacts: s.artifacts,
        unresolved_artifacts: s.unresolved_artifacts,
        cpu_micros: s.cpu_micros,
        wall_micros: s.wall_micros,
        resolve_cache_hits: s.resolve_cache_hits,
        resolve_cache_misses: s.resolve_cache_misses,
        scanned_at_ms: s.scanned_at_ms,
    }
}

pub fn host(h: &model::HostIdentity) -> v1::HostIdentity {
    v1::HostIdentity {
        host_id: h.host_id.clone(),
        hostname: h.hostname.clone(),
        boot_id: h.boot_id.clone(),
        kernel: h.kernel.clone(),
        labels: h
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Splits a full inventory into snapshot parts of at most about
/// `part_bytes` encoded bytes each. A single process larger than that still
/// gets a part of its own; the collector's limit is well above `part_bytes`.
pub fn snapshot_parts(inv: &Inventory, snapshot_id: &str, part_bytes: usize) -> Vec<v1::Snapshot> {
    let mut parts = Vec::new();
    let mut cur = v1::Snapshot::default();
    let mut size = 0;
    for p in &inv.processes {
        let proc_msg = process(p);
        let sock_msg = sockets(p);
        let len = proc_msg.encoded_len() + sock_msg.encoded_len() + 16;
        if size + len > part_bytes && !cur.processes.is_empty() {
            parts.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.processes.push(proc_msg);
        if !sock_msg.sockets.is_empty() {
            cur.sockets.push(sock_msg);
        }
    }
    parts.push(cur);
    let n = parts.len();
    for (i, part) in parts.iter_mut().enumerate() {
        part.snapshot_id = snapshot_id.to_string();
        part.part = i as u32;
        part.last = i + 1 == n;
        part.scanned_at_ms = inv.scanned_at_ms;
        part.stats = part.last.then(|| stats(&inv.stats));
    }
    parts
}
