//! Length bounds on everything an agent sends, applied at ingest before
//! anything is stored (issue 14: a 65,536-character hostname was stored
//! and crashed every client that listed hosts).
//!
//! A field over its bound is cut at a character boundary and ends with
//! [`MARKER`] and the length it had (`…[truncated 100000 bytes]`), the whole
//! within the bound, so a reader sees that it was cut and by how much. The
//! bounds are far above what a real host sends:
//!
//! | field | bound (bytes) |
//! |---|---|
//! | identifiers and names: hostname, machine-id, boot id, session and snapshot ids, kernel, agent version, comm, addresses, states, kinds, capability names, CVE ids, hashes | [`NAME`] 256 |
//! | package names, sources, versions, arches, purls | [`PACKAGE`] 1,024 |
//! | paths (exe, root, artifacts, cgroups), workload ids and names, images, labels' values, scope and privilege text | [`PATH`] 4,096 (`PATH_MAX`) |
//! | the command line | [`CMDLINE`] 32,768 (Java class paths run to tens of KB) |
//!
//! A map of labels keeps at most [`MAX_LABELS`] entries. The message size
//! limit bounds how many processes, artifacts and sockets come at once.
//!
//! **Invariant:** every string and bytes field of an agent message is
//! within these bounds before `Ingest` sees it; the bounds never reject a
//! message, so an ack is never withheld for a long name.

use std::collections::HashMap;

use patchgap_proto::v1::{self, agent_message::Body};

pub const NAME: usize = 256;
pub const PACKAGE: usize = 1024;
pub const PATH: usize = 4096;
pub const CMDLINE: usize = 32 << 10;
pub const MAX_LABELS: usize = 256;

/// What ends a cut field, before its original length.
pub const MARKER: &str = "…[truncated ";

/// The text that ends a field cut from `len` bytes.
fn marker(len: usize) -> String {
    format!("{MARKER}{len} bytes]")
}

/// Counts the fields cut, so the caller can say so once per message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cut(pub usize);

impl Cut {
    fn text(&mut self, s: &mut String, max: usize) {
        if s.len() <= max {
            return;
        }
        let m = marker(s.len());
        let mut end = max.saturating_sub(m.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(&m);
        self.0 += 1;
    }

    fn bytes(&mut self, b: &mut Vec<u8>, max: usize) {
        if b.len() <= max {
            return;
        }
        let m = marker(b.len());
        b.truncate(max.saturating_sub(m.len()));
        b.extend_from_slice(m.as_bytes());
        self.0 += 1;
    }

    fn list(&mut self, l: &mut [String], max: usize) {
        for s in l {
            self.text(s, max);
        }
    }

    fn labels(&mut self, labels: &mut HashMap<String, String>) {
        if labels.len() > MAX_LABELS {
            let mut keys: Vec<String> = labels.keys().cloned().collect();
            keys.sort();
            for k in &keys[MAX_LABELS..] {
                labels.remove(k);
            }
            self.0 += 1;
        }
        if labels.keys().any(|k| k.len() > NAME) || labels.values().any(|v| v.len() > PATH) {
            let old = std::mem::take(labels);
            for (mut k, mut v) in old {
                self.text(&mut k, NAME);
                self.text(&mut v, PATH);
                labels.insert(k, v);
            }
        }
    }

    fn identity(&mut self, h: &mut v1::HostIdentity) {
        self.text(&mut h.host_id, NAME);
        self.text(&mut h.hostname, NAME);
        self.text(&mut h.boot_id, NAME);
        self.text(&mut h.kernel, NAME);
        self.labels(&mut h.labels);
    }

    fn capabilities(&mut self, c: &mut v1::Capabilities) {
        self.text(&mut c.ebpf_reason, PATH);
    }

    fn package(&mut self, p: &mut v1::Package) {
        self.text(&mut p.ecosystem, NAME);
        self.text(&mut p.name, PACKAGE);
        self.text(&mut p.source, PACKAGE);
        self.text(&mut p.version, PACKAGE);
        self.text(&mut p.arch, NAME);
        self.text(&mut p.purl, PACKAGE);
        self.list(&mut p.fixed_cves, NAME);
        self.text(&mut p.replaced_by, PACKAGE);
        if let Some(d) = &mut p.distro {
            self.package(d);
        }
    }

    fn artifacts(&mut self, list: &mut [v1::Artifact]) {
        for a in list {
            self.bytes(&mut a.path, PATH);
            if let Some(pkg) = &mut a.package {
                self.package(pkg);
            }
            if let Some(c) = &mut a.content {
                self.text(&mut c.sha256, NAME);
                self.text(&mut c.unhashed, PATH);
            }
        }
    }

    fn process(&mut self, p: &mut v1::Process) {
        self.bytes(&mut p.exe, PATH);
        self.text(&mut p.cmdline, CMDLINE);
        self.text(&mut p.comm, NAME);
        self.text(&mut p.cgroup, PATH);
        self.text(&mut p.workload, PATH);
        self.bytes(&mut p.root, PATH);
        self.text(&mut p.net_ns_name, NAME);
        self.artifacts(&mut p.artifacts);
        if let Some(pr) = &mut p.privilege {
            self.list(&mut pr.cap_eff, NAME);
            self.text(&mut pr.seccomp, NAME);
            self.text(&mut pr.summary, PATH);
        }
    }

    fn sockets(&mut self, list: &mut [v1::ProcessSockets]) {
        for ps in list {
            for s in &mut ps.sockets {
                self.text(&mut s.protocol, NAME);
                self.text(&mut s.local_addr, NAME);
                self.text(&mut s.remote_addr, NAME);
                self.text(&mut s.state, NAME);
            }
        }
    }

    fn workload(&mut self, w: &mut v1::Workload) {
        for s in [
            &mut w.id,
            &mut w.container_name,
            &mut w.namespace,
            &mut w.pod,
            &mut w.image,
            &mut w.unit,
            &mut w.cgroup,
        ] {
            self.text(s, PATH);
        }
        for s in [
            &mut w.kind,
            &mut w.runtime,
            &mut w.container_id,
            &mut w.pod_uid,
            &mut w.qos,
            &mut w.image_id,
            &mut w.image_digest,
        ] {
            self.text(s, NAME);
        }
        if let Some(o) = &mut w.owner {
            self.text(&mut o.kind, NAME);
            self.text(&mut o.name, PATH);
            self.text(&mut o.source, NAME);
        }
        self.labels(&mut w.labels);
        if let Some(sc) = &mut w.scope {
            self.text(&mut sc.classification, NAME);
            self.list(&mut sc.writes_to, PATH);
            self.text(&mut sc.source, PATH);
        }
        // The image builder's labels: anything it chose to write.
        if let Some(p) = &mut w.provenance {
            self.text(&mut p.revision, NAME);
            self.text(&mut p.source, PATH);
            self.text(&mut p.created, NAME);
        }
    }
}

/// Bounds a Hello in place; how many fields were cut.
pub fn hello(h: &mut v1::Hello) -> Cut {
    let mut cut = Cut::default();
    if let Some(id) = &mut h.host {
        cut.identity(id);
    }
    cut.text(&mut h.agent_version, NAME);
    cut.text(&mut h.session_id, NAME);
    if let Some(c) = &mut h.capabilities {
        cut.capabilities(c);
    }
    cut
}

/// Bounds an agent message in place; how many fields were cut.
pub fn message(msg: &mut v1::AgentMessage) -> Cut {
    let mut cut = Cut::default();
    match &mut msg.body {
        Some(Body::Hello(h)) => return hello(h),
        Some(Body::Snapshot(s)) => {
            cut.text(&mut s.snapshot_id, NAME);
            cut.artifacts(&mut s.artifacts);
            for p in &mut s.processes {
                cut.process(p);
            }
            cut.sockets(&mut s.sockets);
            for w in &mut s.workloads {
                cut.workload(w);
            }
        }
        Some(Body::Delta(d)) => {
            cut.artifacts(&mut d.artifacts);
            for p in &mut d.upserts {
                cut.process(p);
            }
            cut.sockets(&mut d.sockets);
            for w in &mut d.workloads {
                cut.workload(w);
            }
            for c in &mut d.connections {
                cut.text(&mut c.protocol, NAME);
                cut.text(&mut c.remote_addr, NAME);
            }
        }
        Some(Body::Heartbeat(h)) => {
            if let Some(c) = &mut h.capabilities {
                cut.capabilities(c);
            }
        }
        None => {}
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_with_a_marker_within_the_bound() {
        let mut h = v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "m".repeat(32),
                hostname: "h".repeat(100_000),
                labels: (0..1000)
                    .map(|i| (format!("k{i:04}"), "v".repeat(5000)))
                    .collect(),
                ..Default::default()
            }),
            session_id: "s".into(),
            ..Default::default()
        };
        let cut = hello(&mut h);
        let id = h.host.unwrap();
        assert_eq!(id.hostname.len(), NAME, "{}", id.hostname);
        assert!(id.hostname.ends_with("…[truncated 100000 bytes]"));
        assert_eq!(id.host_id, "m".repeat(32), "short fields are kept");
        assert_eq!(id.labels.len(), MAX_LABELS);
        assert!(id.labels.values().all(|v| v.len() == PATH));
        assert_eq!(cut.0, 1 + 1 + MAX_LABELS);
    }

    #[test]
    fn multibyte_text_is_cut_at_a_character_boundary() {
        // "é" is two bytes: no cut may split one.
        let mut p = v1::Process {
            cmdline: "é".repeat(CMDLINE),
            exe: vec![0xff; 10 * PATH],
            artifacts: vec![v1::Artifact {
                path: vec![b'/'; PATH + 1],
                package: Some(v1::Package {
                    name: "ü".repeat(PACKAGE),
                    distro: Some(Box::new(v1::Package {
                        version: "1".repeat(PACKAGE + 1),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut msg = v1::AgentMessage {
            seq: 1,
            body: Some(Body::Delta(v1::Delta {
                upserts: vec![p.clone()],
                ..Default::default()
            })),
        };
        assert_eq!(message(&mut msg).0, 5);
        let Some(Body::Delta(d)) = msg.body else {
            unreachable!()
        };
        p = d.upserts.into_iter().next().unwrap();
        assert!(p.cmdline.len() <= CMDLINE && p.cmdline.len() > CMDLINE - 40);
        assert!(
            p.cmdline
                .ends_with(&format!("{MARKER}{} bytes]", 2 * CMDLINE))
        );
        assert_eq!(p.exe.len(), PATH);
        let a = &p.artifacts[0];
        assert_eq!(a.path.len(), PATH);
        let pkg = a.package.as_ref().unwrap();
        assert!(pkg.name.len() <= PACKAGE);
        assert!(pkg.distro.as_ref().unwrap().version.len() <= PACKAGE);
        // Within bounds: untouched.
        let mut ok = v1::AgentMessage {
            seq: 2,
            body: Some(Body::Delta(v1::Delta {
                upserts: vec![v1::Process {
                    cmdline: "x".repeat(CMDLINE),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        let before = ok.clone();
        assert_eq!(message(&mut ok).0, 0);
        assert_eq!(ok, before);
    }
}
