//! Loaders under the live agent (issue 11, defects 4 and 5): Perl's XS
//! modules, loaded by `dlopen` through a symlinked directory, and code
//! loaded from a memfd or an unlinked file, which no path on disk names.
//! Real processes, the real eBPF sensor, a collector in process.

use std::{process::Command, time::Duration};

use patchgap_tests::*;

/// Lets the agent read what the kernel has queued (the ring is drained every
/// 50 ms, events are batched for 200 ms, an exec is rescanned 100 ms
/// later), then scans and waits until the collector has stored everything.
async fn settle(h: &Harness) {
    tokio::time::sleep(Duration::from_millis(800)).await;
    h.sync().await;
}

/// The XS modules of issue 11's Perl case, as /proc/PID/maps names them.
/// Perl's @INC spells their directory `perl/5.36`, a symlink to the
/// `perl/5.36.0` that dpkg lists.
const XS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/perl/5.36.0/auto/IPC/SysV/SysV.so",
    "/usr/lib/x86_64-linux-gnu/perl/5.36.0/auto/Devel/Peek/Peek.so",
];

/// Issue 11, defect 4: three `perl -MIPC::SysV -MDevel::Peek` processes
/// started under the live agent must be listed under libperl5.36 with both
/// XS .so files mapped, as a one-shot scan lists them. Before the fix, the
/// eBPF open of `perl/5.36/auto/…/SysV.so` (the symlinked spelling dpkg
/// does not list) was resolved first and its "no package" was cached under
/// the file's inode, so every later scan's mapping of the same file, under
/// dpkg's own spelling, answered "no package" too: 0 of 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_xs_modules_are_kept_by_the_live_agent() {
    let h = Harness::start().await;
    let perls: Vec<Proc> = (0..3)
        .map(|_| {
            spawn_ready(Command::new("/usr/bin/perl").args([
                "-MIPC::SysV",
                "-MDevel::Peek",
                "-e",
                "$| = 1; print qq(ready\\n); sleep 1e6",
            ]))
        })
        .collect();
    for p in &perls {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
        assert!(XS.iter().all(|so| maps.contains(so)), "perl maps {XS:?}");
    }
    settle(&h).await;

    let r = h.find("libperl5.36", "").await;
    let mut complete = 0;
    for p in &perls {
        let m = r
            .matches
            .iter()
            .find(|m| m.key.is_some_and(|k| k.pid == p.pid()));
        let paths: Vec<String> = m
            .map(|m| {
                m.paths
                    .iter()
                    .filter(|p| p.evidence == "mapped")
                    .map(|p| String::from_utf8_lossy(&p.path).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if XS.iter().all(|so| paths.iter().any(|p| p == so)) {
            complete += 1;
        } else {
            eprintln!("perl {} under libperl5.36: {paths:?}", p.pid());
        }
    }
    eprintln!(
        "perl: {complete}/{} processes list libperl5.36 with both XS .so mapped",
        perls.len()
    );
    assert_eq!(complete, perls.len());
    drop(perls);
    h.stop().await;
}
