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

fn process_full(p: Process) -> v1::Process {
    v1::Process {
        key: Some(key(&p.key)),
        ppid: p.ppid,
        uid: p.uid,
        euid: p.euid,
        exe: p.exe.0,
        cmdline: p.cmdline,
        comm: p.comm,
        cgroup: p.cgroup,
        mnt_ns: p.mnt_ns,
        net_ns: p.net_ns,
        net_ns_name: p.net_ns_name,
        start_time_ms: p.start_time_ms,
        workload: p.workload,
        root: p.root.0,
        artifacts: p
            .artifacts
            .into_iter()
            .map(|a| v1::Artifact {
                path: a.path.0,
                dev: a.dev,
                inode: a.inode,
                kind: match a.kind {
                    ArtifactKind::Exe => v1::ArtifactKind::Exe,
                    ArtifactKind::Mapped => v1::ArtifactKind::Mapped,
                    ArtifactKind::Opened => v1::ArtifactKind::Opened,
                    ArtifactKind::Installed => v1::ArtifactKind::Installed,
                    ArtifactKind::Embedded => v1::ArtifactKind::Embedded,
                    ArtifactKind::Anonymous => v1::ArtifactKind::Anonymous,
                } as i32,
                deleted: a.deleted,
                stale: a.stale,
                package: a.package.as_deref().map(package),
                content: a.content.map(|c| v1::Content {
                    size: c.size,
                    sha256: c.sha256,
                    unhashed: c.unhashed.into(),
                }),
            })
            .collect(),
        artifact_refs: Vec::new(),
        partial: p.partial,
        privilege: Some(privilege(&p.privilege)),
    }
}

pub fn package(p: &model::PackageInfo) -> v1::Package {
    v1::Package {
        ecosystem: p.ecosystem.clone(),
        name: p.name.clone(),
        source: p.source.clone(),
        version: p.version.clone(),
        arch: p.arch.clone(),
        purl: p.purl.clone(),
        distro: p.distro.as_deref().map(|d| Box::new(package(d))),
        fixed_cves: p.fixed_cves.clone(),
        replaced_by: p.replaced_by.clone(),
    }
}

pub fn privilege(p: &crate::workload::privilege::Privilege) -> v1::Privilege {
    v1::Privilege {
        uid0: p.uid0,
        euid0: p.euid0,
        cap_eff: p.cap_eff.clone(),
        all_caps: p.all_caps,
        no_new_privs: p.no_new_privs,
        seccomp: p.seccomp.clone().unwrap_or_default(),
        host_pid_ns: p.host_pid_ns,
        host_net_ns: p.host_net_ns,
        host_mnt_ns: p.host_mnt_ns,
        privileged: p.is_privileged(),
        summary: p.summary(),
    }
}

pub fn workload(w: &crate::model::Workload) -> v1::Workload {
    v1::Workload {
        id: w.id.clone(),
        kind: w.kind.clone(),
        runtime: w.runtime.clone(),
        container_id: w.container_id.clone(),
        container_name: w.container_name.clone(),
        namespace: w.namespace.clone(),
        pod: w.pod.clone(),
        pod_uid: w.pod_uid.clone(),
        qos: w.qos.clone(),
        owner: w.owner.as_ref().map(|o| v1::Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
            source: match o.source {
                crate::workload::meta::OwnerSource::Label => "label".into(),
                crate::workload::meta::OwnerSource::Inferred => "inferred".into(),
            },
        }),
        image: w.image.clone(),
        image_id: w.image_id.clone(),
        image_digest: w.image_digest.clone(),
        unit: w.unit.clone(),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        scope: (!w.classification.is_empty() || !w.writes_to.is_empty()).then(|| v1::DataScope {
            classification: w.classification.clone(),
            writes_to: w.writes_to.clone(),
            source: w.scope_source.clone(),
        }),
        metadata_warnings: w.metadata_warnings,
        cgroup: w.cgroup.clone(),
        provenance: (!w.provenance.is_empty()).then(|| v1::ImageProvenance {
            revision: w.provenance.revision.clone(),
            source: w.provenance.source.clone(),
            created: w.provenance.created.clone(),
        }),
    }
}

/// The largest encoded process record the agent sends. A process with more
/// mappings than fit (hundreds of thousands of files) is sent with the first
/// of them and marked partial, rather than as a message the collector must
/// refuse forever.
pub const MAX_PROCESS_BYTES: usize = 4 << 20;

/// A process as a message, truncated to [`MAX_PROCESS_BYTES`].
pub fn process(p: &Process) -> v1::Process {
    process_owned(p.clone())
}

/// [`process`] of a record that is let go: its strings move, not copy.
pub fn process_owned(p: Process) -> v1::Process {
    let mut msg = process_full(p);
    let len = msg.encoded_len();
    if len > MAX_PROCESS_BYTES {
        // Artifacts are all about the same size: keep the share that fits.
        let keep = msg.artifacts.len() * (MAX_PROCESS_BYTES / 2) / len;
        msg.artifacts.truncate(keep);
        msg.partial = true;
    }
    msg
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
                connect_ms: s.connect_ms,
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
        reconciled: s.reconciled,
        sockets_read_ms: s.sockets_read_ms,
        reused: s.reused,
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

/// Splits a delta whose encoded size is over `part_bytes` into several, in
/// order (each with its artifacts in its table, see
/// `patchgap_proto::artifacts`; sizes count them inline, an upper bound): the upserts spread over the parts, the exits and socket lists in
/// the last one (after every process they could name).
///
/// Every part is at most about `part_bytes`, counting the workloads of the
/// first and the exits and sockets of the last, unless one record alone is
/// larger: a collector whose limit is above both accepts them all.
pub fn split_delta(delta: v1::Delta, part_bytes: usize) -> Vec<v1::Delta> {
    if delta.encoded_len() <= part_bytes {
        let mut delta = delta;
        delta.share_artifacts();
        return vec![delta];
    }
    let mut parts = Vec::new();
    // Workloads go in the first part, before any upsert that names them.
    let mut size = delta.workloads.iter().map(|w| w.encoded_len() + 8).sum();
    let mut cur = v1::Delta {
        scanned_at_ms: delta.scanned_at_ms,
        workloads: delta.workloads,
        ..Default::default()
    };
    for p in delta.upserts {
        let len = p.encoded_len() + 16;
        if size + len > part_bytes && !cur.upserts.is_empty() {
            let next = v1::Delta {
                scanned_at_ms: delta.scanned_at_ms,
                ..Default::default()
            };
            parts.push(std::mem::replace(&mut cur, next));
            size = 0;
        }
        size += len;
        cur.upserts.push(p);
    }
    let tail = delta
        .exits
        .iter()
        .map(|e| e.encoded_len() + 4)
        .sum::<usize>()
        + delta
            .sockets
            .iter()
            .map(|s| s.encoded_len() + 8)
            .sum::<usize>();
    if size + tail > part_bytes && !cur.upserts.is_empty() {
        let next = v1::Delta {
            scanned_at_ms: delta.scanned_at_ms,
            ..Default::default()
        };
        parts.push(std::mem::replace(&mut cur, next));
    }
    cur.exits = delta.exits;
    cur.sockets = delta.sockets;
    cur.stats = delta.stats;
    parts.push(cur);
    for part in &mut parts {
        part.share_artifacts();
    }
    parts
}

/// Splits a full inventory into snapshot parts of at most about
/// `part_bytes` encoded bytes each, the first part's workloads included,
/// each part naming its artifacts once in its table (sizes count them
/// inline, an upper bound). A
/// single process larger than that still gets a part of its own (at most
/// [`MAX_PROCESS_BYTES`] and its sockets); the collector's limit is well
/// above both.
pub fn snapshot_parts(inv: &Inventory, snapshot_id: &str, part_bytes: usize) -> Vec<v1::Snapshot> {
    let mut parts = Vec::new();
    // Workloads travel first, before any process that names them.
    let mut cur = v1::Snapshot {
        workloads: inv.workloads.iter().map(workload).collect(),
        ..Default::default()
    };
    let mut size = cur.workloads.iter().map(|w| w.encoded_len() + 8).sum();
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
        part.share_artifacts();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Artifact, PathBytes, ProcessKey};

    fn proc_with(pid: u32, artifacts: usize) -> Process {
        Process {
            key: ProcessKey {
                pid,
                start_ticks: 1,
            },
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
            start_time_ms: 0,
            workload: "host".into(),
            root: PathBytes(b"/".to_vec()),
            artifacts: (0..artifacts)
                .map(|i| Artifact {
                    path: PathBytes(format!("/usr/lib/x86_64-linux-gnu/lib{i:08}.so").into_bytes()),
                    dev: 1,
                    inode: i as u64,
                    kind: crate::model::ArtifactKind::Mapped,
                    deleted: false,
                    stale: false,
                    package: None,
                    content: None,
                })
                .collect(),
            sockets: Vec::new(),
            partial: false,
            privilege: Default::default(),
        }
    }

    #[test]
    fn a_huge_process_is_truncated_and_marked_partial() {
        let huge = process(&proc_with(7, 200_000));
        assert!(
            huge.encoded_len() <= MAX_PROCESS_BYTES,
            "{}",
            huge.encoded_len()
        );
        assert!(huge.partial && !huge.artifacts.is_empty());
        let small = process(&proc_with(8, 10));
        assert!(!small.partial && small.artifacts.len() == 10);
    }

    #[test]
    fn deltas_split_in_order_with_exits_last() {
        let delta = v1::Delta {
            scanned_at_ms: 5,
            upserts: (0..40).map(|pid| process(&proc_with(pid, 1000))).collect(),
            exits: vec![v1::Exit {
                key: Some(v1::ProcessKey {
                    pid: 99,
                    start_ticks: 1,
                }),
                exit_time_ms: 5,
            }],
            ..Default::default()
        };
        let parts = split_delta(delta, 1 << 20);
        assert!(parts.len() > 1);
        assert!(
            parts
                .iter()
                .all(|p| p.encoded_len() <= (1 << 20) + (64 << 10))
        );
        let pids: Vec<u32> = parts
            .iter()
            .flat_map(|p| p.upserts.iter().map(|u| u.key.unwrap().pid))
            .collect();
        assert_eq!(pids, (0..40).collect::<Vec<_>>());
        assert!(parts[..parts.len() - 1].iter().all(|p| p.exits.is_empty()));
        assert_eq!(parts.last().unwrap().exits.len(), 1);
        assert!(parts.iter().all(|p| p.scanned_at_ms == 5));
    }

    /// A host with many workloads: the first part carries them all, and
    /// used to be that many bytes over `part_bytes` (a collector with a
    /// limit just above the agent's part size refused it).
    fn inventory(workloads: usize, processes: usize) -> Inventory {
        Inventory {
            host: Default::default(),
            scanned_at_ms: 5,
            stats: Default::default(),
            workloads: (0..workloads)
                .map(|i| crate::model::Workload {
                    id: format!("pod/{i:036}/{:064x}", i),
                    kind: "pod".into(),
                    cgroup: format!("/kubepods.slice/kubepods-pod{i:036}.slice"),
                    ..Default::default()
                })
                .collect(),
            processes: (0..processes as u32)
                .map(|pid| proc_with(pid, 100))
                .collect(),
            sockets_read: false,
        }
    }

    #[test]
    fn snapshot_parts_count_the_workloads_of_the_first_part() {
        let part_bytes = 64 << 10;
        let inv = inventory(200, 300);
        let parts = snapshot_parts(&inv, "s", part_bytes);
        assert!(parts.len() > 2, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(
                p.encoded_len() <= part_bytes + 1024,
                "part {i} is {} bytes, over {part_bytes}",
                p.encoded_len()
            );
        }
        assert_eq!(parts[0].workloads.len(), 200);
        assert!(parts[1..].iter().all(|p| p.workloads.is_empty()));
        let pids: Vec<u32> = parts
            .iter()
            .flat_map(|p| p.processes.iter().map(|u| u.key.unwrap().pid))
            .collect();
        assert_eq!(pids, (0..300).collect::<Vec<_>>());
        assert!(parts.last().unwrap().last && parts.last().unwrap().stats.is_some());
    }

    #[test]
    fn delta_parts_count_the_workloads_and_the_exits_and_sockets() {
        let part_bytes = 64 << 10;
        let inv = inventory(200, 0);
        let delta = v1::Delta {
            scanned_at_ms: 5,
            workloads: inv.workloads.iter().map(workload).collect(),
            upserts: (0..60).map(|pid| process(&proc_with(pid, 100))).collect(),
            exits: (1000..5000)
                .map(|pid| v1::Exit {
                    key: Some(v1::ProcessKey {
                        pid,
                        start_ticks: 1,
                    }),
                    exit_time_ms: 5,
                })
                .collect(),
            ..Default::default()
        };
        let parts = split_delta(delta, part_bytes);
        for (i, p) in parts.iter().enumerate() {
            assert!(
                p.encoded_len() <= part_bytes + 1024,
                "part {i} is {} bytes, over {part_bytes}",
                p.encoded_len()
            );
        }
        assert_eq!(parts.last().unwrap().exits.len(), 4000);
        assert_eq!(
            parts.iter().map(|p| p.upserts.len()).sum::<usize>(),
            60,
            "every upsert is sent once"
        );
    }
}
