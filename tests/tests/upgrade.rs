//! Runtime truth under change (issue 11, defect 1): a real dpkg upgrade and
//! downgrade of a library package while the agent runs. A process started
//! after the change is answered with the new version at once (from the
//! event path with eBPF, from a scan without), never the old one and never
//! without a package; a process started before it stays at its version,
//! stale.

use std::time::{Duration, Instant};

use patchgap_proto::v1;
use patchgap_tests::{upgrade::*, *};

/// The collector's matches of the package for a pid.
async fn matches_of(h: &Harness, pid: u32) -> Vec<v1::Match> {
    h.find(PACKAGE, "")
        .await
        .matches
        .into_iter()
        .filter(|m| m.key.is_some_and(|k| k.pid == pid))
        .collect()
}

/// Waits for the collector to list a new process with the package: from
/// the exec and open events with eBPF (no scan is asked for), from a scan
/// without. Every answer seen on the way must name `version`.
async fn wait_new(h: &Harness, what: &str, pid: u32, version: &str) -> v1::Match {
    if !h.agent.status().ebpf {
        h.sync().await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = matches_of(h, pid).await;
        for m in &found {
            let pkg = m.package.as_ref().expect("package");
            assert_eq!(
                pkg.version, version,
                "{what}: a process started after the change is answered with the installed version: {m:?}"
            );
            assert!(!m.stale, "{m:?}");
        }
        // Wait for the mapping, not only the loader's open.
        if let Some(m) = found.into_iter().find(|m| m.evidence == "mapped") {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: pid {pid} never listed with {PACKAGE} at {version} (eBPF {}): {:?}",
            h.agent.status().ebpf,
            matches_of(h, pid).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_after_a_dpkg_upgrade_gets_the_new_version_and_the_old_one_goes_stale() {
    let before = installed_version(PACKAGE);
    // Start from one of the two archive versions (installed if it was not:
    // a fresh machine has no libaom3; the test removes it again).
    let versions = versions();
    let _restore = Restore(before.clone());
    if !before.as_ref().is_some_and(|b| versions.contains(b)) {
        apt_install(&deb(&versions[0]));
    }
    let original = dpkg_version(PACKAGE);
    let other = versions.iter().find(|v| **v != original).unwrap().as_str();
    deb(other);

    let h = Harness::start().await;
    let first = library_user();
    let m = wait_new(&h, "before", first.pid(), &original).await;
    assert_eq!(m.evidence, "mapped");

    // One way: to the other version.
    apt_install(&deb(other));
    assert_eq!(dpkg_version(PACKAGE), other);
    let second = library_user();
    wait_new(&h, "after the change", second.pid(), other).await;

    // And back.
    apt_install(&deb(&original));
    assert_eq!(dpkg_version(PACKAGE), original);
    let third = library_user();
    wait_new(&h, "after the change back", third.pid(), &original).await;

    // A full scan agrees, and the earlier processes are stale at the
    // versions they still run.
    h.sync().await;
    for (proc, version, stale) in [
        (&first, original.as_str(), true),
        (&second, other, true),
        (&third, original.as_str(), false),
    ] {
        let found = matches_of(&h, proc.pid()).await;
        let m = found
            .iter()
            .find(|m| m.evidence == "mapped")
            .unwrap_or_else(|| panic!("pid {} not listed: {found:?}", proc.pid()));
        let pkg = m.package.as_ref().unwrap();
        assert_eq!(
            (pkg.version.as_str(), m.stale),
            (version, stale),
            "pid {}: {m:?}",
            proc.pid()
        );
    }
    // A version query lists each process under what it runs.
    let at_other = pids(&h.find(PACKAGE, other).await);
    assert!(at_other.contains(&second.pid()) && !at_other.contains(&third.pid()));
    h.stop().await;
}
