//! The agent's inventory model: what one scan of a host found. It is what
//! `patchgap-agent scan` prints as JSON and what the stream sends, converted
//! to patchgap.v1 messages at the transport edge (see `wire`).

use std::{collections::BTreeMap, sync::Arc};

use serde::{Serialize, Serializer};

/// A process is a pid plus its start time in clock ticks since boot: a pid
/// alone is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcessKey {
    pub pid: u32,
    pub start_ticks: u64,
}

/// A package that owns a file, in one ecosystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PackageInfo {
    pub ecosystem: String,
    pub name: String,
    pub source: String,
    pub version: String,
    pub arch: String,
    pub purl: String,
    /// The OS package that installed this language package, if one did
    /// (Debian's python3-cryptography for PyPI's cryptography).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distro: Option<Arc<PackageInfo>>,
    /// For an OS package: the CVEs its own changelog says the installed
    /// version (or an earlier one) fixed. Read for the distro identities of
    /// language packages, where an upstream advisory may be a backport
    /// already applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixed_cves: Vec<String>,
    /// golang: the `=>` replacement the module was built from (see the
    /// proto's `Package.replaced_by`); empty otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub replaced_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Exe,
    Mapped,
    /// A library-like file the process opened (seen by eBPF) or holds open.
    Opened,
    /// A language package installed in the environment the process uses.
    Installed,
    /// A module compiled into the executable.
    Embedded,
    /// Code mapped executable from a file that no path on disk names and
    /// no package owns: a memfd (`/memfd:NAME`) or an unlinked file. Its
    /// `content` says what it held.
    Anonymous,
}

/// What a file held, as read through the process's mapping of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Content {
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex; empty when not hashed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Why `sha256` is empty; empty when hashed.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub unhashed: &'static str,
}

/// A file as the process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Artifact {
    pub path: PathBytes,
    pub dev: u64,
    pub inode: u64,
    pub kind: ArtifactKind,
    /// The kernel marked the mapping " (deleted)".
    pub deleted: bool,
    /// Deleted, or the file now at this path has another inode.
    pub stale: bool,
    pub package: Option<Arc<PackageInfo>>,
    /// For an `anonymous` artifact: what the file held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Socket {
    pub protocol: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
    pub state: &'static str,
    pub inode: u64,
    pub outbound: bool,
    /// When eBPF saw the connect that added this socket (ms since the
    /// epoch), for a socket not read from the tables yet (its local end and
    /// inode unknown); 0 for one read from the tables.
    pub connect_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    #[serde(flatten)]
    pub key: ProcessKey,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub comm: String,
    pub exe: PathBytes,
    /// Arguments joined by spaces, secrets redacted.
    pub cmdline: String,
    pub cgroup: String,
    pub mnt_ns: u64,
    pub net_ns: u64,
    /// The name `ip netns add` gave the network namespace (its /run/netns
    /// entry); empty when it has none.
    pub net_ns_name: String,
    pub start_time_ms: i64,
    pub workload: String,
    pub root: PathBytes,
    pub artifacts: Vec<Artifact>,
    pub sockets: Vec<Socket>,
    /// Some of the process's files could not be read.
    pub partial: bool,
    pub privilege: crate::workload::privilege::Privilege,
}

/// A workload instance on this host: a pod's container, a container, a
/// systemd unit, a user session, or the host itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Unique on this host: "pod/<uid>/<container id>", "container/<id>",
    /// "unit/<name>", "session/<unit>" or "host".
    pub id: String,
    /// "pod", "container", "systemd", "user-session" or "host".
    pub kind: String,
    pub runtime: String,
    pub container_id: String,
    pub container_name: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub qos: String,
    pub owner: Option<crate::workload::meta::Owner>,
    pub image: String,
    pub image_id: String,
    /// Empty when the runtime does not record it: never a guess.
    pub image_digest: String,
    /// The image's OCI provenance labels, where the runtime records them.
    pub provenance: crate::workload::meta::Provenance,
    pub unit: String,
    pub labels: BTreeMap<String, String>,
    pub classification: String,
    pub writes_to: Vec<String>,
    /// Where the scope came from: "annotation", "label" or empty.
    pub scope_source: String,
    /// Metadata files of this workload that were bad, too large or escaped
    /// the runtime root.
    pub metadata_warnings: u32,
    pub cgroup: String,
}

impl Process {
    /// Equality without the sockets, which change far more often than the
    /// rest and travel separately.
    pub fn same_record(&self, other: &Process) -> bool {
        self.key == other.key
            && self.ppid == other.ppid
            && self.uid == other.uid
            && self.euid == other.euid
            && self.comm == other.comm
            && self.exe == other.exe
            && self.cmdline == other.cmdline
            && self.cgroup == other.cgroup
            && self.mnt_ns == other.mnt_ns
            && self.net_ns == other.net_ns
            && self.net_ns_name == other.net_ns_name
            && self.workload == other.workload
            && self.root == other.root
            && self.artifacts == other.artifacts
            && self.partial == other.partial
            && self.privilege == other.privilege
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostIdentity {
    pub host_id: String,
    pub hostname: String,
    pub boot_id: String,
    pub kernel: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    pub processes: u32,
    /// Processes that exited while being scanned.
    pub vanished: u32,
    /// Processes whose files refused access.
    pub denied: u32,
    pub artifacts: u32,
    pub unresolved_artifacts: u32,
    pub cpu_micros: u64,
    pub wall_micros: u64,
    pub resolve_cache_hits: u64,
    pub resolve_cache_misses: u64,
    pub scanned_at_ms: i64,
    /// Processes and exits this scan found that eBPF had not reported.
    pub reconciled: u32,
    /// When the socket tables were last read (this scan or an earlier
    /// one), ms since the epoch; 0 when never.
    pub sockets_read_ms: i64,
    /// Processes whose last full read was reused: they had not run since
    /// (see the scanner's `Quiet`).
    pub reused: u32,
    /// Processes whose /proc/PID/cgroup was not read again: the kernel
    /// counted no cgroup change since the last full scan read it. (The
    /// agent's own log; not on the wire.)
    pub cgroups_reused: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub host: HostIdentity,
    pub scanned_at_ms: i64,
    pub stats: ScanStats,
    /// The workloads of this scan's processes.
    pub workloads: Vec<Workload>,
    pub processes: Vec<Process>,
    /// Whether this scan read the sockets. Reading a network namespace's
    /// tables walks the kernel's whole socket hash; with eBPF watching
    /// connects, most scans skip it and keep the last known sockets.
    pub sockets_read: bool,
}

/// A byte-exact path. Serialized as a string: UTF-8 as is, and any byte that
/// is not valid UTF-8 as `\xNN` (so `\` itself is written `\\`), which keeps
/// the JSON lossless.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathBytes(pub Vec<u8>);

impl PathBytes {
    pub fn display(&self) -> String {
        display_bytes(&self.0)
    }
}

impl Serialize for PathBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display())
    }
}

/// Renders bytes as text without losing information (see [`PathBytes`]).
pub fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_bytes_is_lossless_for_invalid_utf8() {
        assert_eq!(display_bytes(b"/usr/lib/a b.so"), "/usr/lib/a b.so");
        assert_eq!(display_bytes(b"/x/\xff\xfe"), "/x/\\xff\\xfe");
        assert_eq!(display_bytes(b"/x\\y"), "/x\\\\y");
    }
}
