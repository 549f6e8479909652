//! One "internet" at a time on this machine, across test processes.
//!
//! Several live tests give a network namespace fixed documentation
//! addresses behind a veth pair, with the host side at 198.51.100.1/24.
//! Two such namespaces alive at once, in two test binaries that a developer
//! (or a fresh machine's first run) has going side by side, put two routes
//! to 198.51.100.0/24 on the host: connects then reach the other
//! namespace, where nothing listens, and fail with "connection refused".
//! A mutex serialises the tests of one binary only; this lock serialises
//! them all.
//!
//! It is an flock(2) on a well-known file: the kernel releases it when
//! the holder's file is closed, also when a test process is killed, so a
//! crashed run never leaves it taken. flock locks belong to the open file,
//! so two threads of one process that each take it also wait for each
//! other.
//!
//! This file uses only std: the agent's own live tests (agent/tests/
//! contain.rs), which cannot depend on this crate, include it by path.

use std::fs::{File, OpenOptions};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The host side's address of every test internet.
const HOST_SIDE: &str = "198.51.100.1/";

/// Held for the whole life of a test's namespace "internet" (its veth,
/// addresses and listener); drop it after the namespace is gone.
#[derive(Debug)]
pub struct InternetLock {
    _file: File,
}

impl InternetLock {
    /// The lock file every test that puts a documentation subnet on the
    /// host side of a veth takes. /run/lock is root's and tmpfs on Debian,
    /// so the file goes with a reboot.
    pub const PATH: &'static str = "/run/lock/patchgap-tests-internet.lock";

    /// Waits until no other test (of any process) holds the internet, then
    /// holds it. Tests assume root, who can always open the file.
    pub fn acquire() -> InternetLock {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Self::PATH)
            .unwrap_or_else(|e| panic!("open {}: {e}", Self::PATH));
        let waited = Instant::now();
        file.lock()
            .unwrap_or_else(|e| panic!("flock {}: {e}", Self::PATH));
        remove_stale();
        let waited = waited.elapsed();
        if waited.as_secs() >= 1 {
            eprintln!(
                "waited {:.1} s for another test's namespace internet ({})",
                waited.as_secs_f64(),
                Self::PATH
            );
        }
        InternetLock { _file: file }
    }

    /// Takes the internet only if nobody holds it now.
    pub fn try_acquire() -> Option<InternetLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Self::PATH)
            .unwrap_or_else(|e| panic!("open {}: {e}", Self::PATH));
        match file.try_lock() {
            Ok(()) => Some(InternetLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => None,
            Err(std::fs::TryLockError::Error(e)) => panic!("flock {}: {e}", Self::PATH),
        }
    }
}

/// Deletes a veth that still holds the host side's address while nobody
/// holds the lock: a test killed with -9 (or a debugger's stop) never ran
/// the drop that removes it, and its routes would send the next test's
/// connects into a namespace where nothing listens. Deleting the veth
/// takes its addresses and routes; a namespace left behind holds nothing
/// that routes.
fn remove_stale() {
    let Ok(out) = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "7: pge9856    inet 198.51.100.1/24 scope global pge9856 ..."
        let mut fields = line.split_whitespace();
        let dev = fields.nth(1).unwrap_or("");
        if !line.contains(&format!(" {HOST_SIDE}")) || dev.is_empty() {
            continue;
        }
        eprintln!("removing {dev}, a test internet left behind by a killed test");
        let _ = Command::new("ip")
            .args(["link", "del", "dev", dev])
            .stderr(Stdio::null())
            .status();
    }
}
