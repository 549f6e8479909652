//! Artifact tables: a message names each artifact once and its processes
//! refer to it by position (`Process.artifact_refs`), as agents send it.

use super::*;

/// A snapshot and a delta whose artifacts sit in their tables store what
/// the same messages with every artifact inline store: the same running
/// processes, artifact and package counts, and the same matches with the
/// same paths.
pub(super) fn shared_artifacts_store_what_inline_ones_store(store: &dyn Store) {
    let libc = || {
        mapped(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            300,
            Some(deb("libc6", "glibc", "2.36-9")),
        )
    };
    let ssl = |v: &str| {
        mapped(
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            400,
            Some(deb("libssl3", "openssl", v)),
        )
    };
    let first = || {
        vec![
            process(
                10,
                vec![exe("/usr/bin/a", 100, None), libc(), ssl("3.0.15-1")],
            ),
            process(11, vec![exe("/usr/bin/b", 101, None), libc()]),
        ]
    };
    let later = || {
        vec![
            // One inline artifact beside its references: both forms at once.
            process(
                12,
                vec![exe("/usr/bin/c", 102, None), libc(), ssl("3.0.16-1")],
            ),
            process(
                10,
                vec![exe("/usr/bin/a", 100, None), libc(), ssl("3.0.16-1")],
            ),
        ]
    };
    for (host_id, name, session, shared) in [
        ("machine-1", "inline", "session-a", false),
        ("machine-2", "shared", "session-b", true),
    ] {
        let s = open(store, &hello_for(host_id, name, session));
        let mut snap = snapshot("snap-1", first(), vec![]);
        let mut changes = delta(later(), &[11], vec![]);
        if shared {
            let (Body::Snapshot(snap), Body::Delta(changes)) = (&mut snap, &mut changes) else {
                unreachable!()
            };
            snap.share_artifacts();
            assert_eq!(snap.artifacts.len(), 4, "libc once");
            changes.share_artifacts();
            let exe = changes.upserts[0].artifact_refs.remove(0);
            changes.upserts[0]
                .artifacts
                .push(changes.artifacts[exe as usize].clone());
        }
        apply(store, &s, msg(1, snap));
        apply(store, &s, msg(2, changes));
    }
    let counts = |host: &str| {
        let mut out: Vec<(u32, u32, u32)> = store
            .processes(Some(host))
            .expect("processes")
            .iter()
            .map(|p| (p.key.expect("a key").pid, p.artifacts, p.packages))
            .collect();
        out.sort_unstable();
        out
    };
    assert_eq!(counts("inline"), vec![(10, 3, 2), (12, 3, 2)]);
    assert_eq!(counts("shared"), counts("inline"));
    for package in ["libc6", "libssl3"] {
        let answer = |host: &str| {
            let mut out: Vec<(u32, String, Vec<Vec<u8>>)> = find(store, package)
                .into_iter()
                .filter(|m| m.host == host)
                .map(|m| {
                    let version = m.package.map(|p| p.version).unwrap_or_default();
                    let paths = m.paths.into_iter().map(|p| p.path).collect();
                    (m.key.expect("a key").pid, version, paths)
                })
                .collect();
            out.sort();
            out
        };
        assert_eq!(answer("inline").len(), 2, "{package}");
        assert_eq!(answer("shared"), answer("inline"), "{package}");
    }
}
