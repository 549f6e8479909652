//! A real library package to upgrade and downgrade with apt while the agent
//! runs (issue 11): two versions the Debian archive serves, cached as .deb
//! files so reruns need no network.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Proc, installed_version, spawn_mapping};

/// A library package to move between two versions the Debian archive
/// serves (bookworm and bookworm-security): nothing else on this host uses
/// libaom, and it depends on libc6 alone.
pub const PACKAGE: &str = "libaom3";
pub const SONAME: &str = "libaom.so.3";
/// Downloaded once; reruns need no network.
pub const CACHE: &str = "/var/cache/patchgap-tests/debs";

/// The two newest versions of [`PACKAGE`] the archive serves now, older
/// first. The archive moves (a security update replaces the older of the
/// two), so they are asked for, not written down.
pub fn versions() -> [String; 2] {
    let out = Command::new("apt-cache")
        .args(["madison", PACKAGE])
        .output()
        .expect("apt-cache madison");
    let mut served: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(version) = line.split('|').nth(1).map(str::trim) else {
            continue;
        };
        if !served.iter().any(|v| v == version) {
            served.push(version.to_string());
        }
    }
    match &served[..] {
        [newer, older, ..] => [older.clone(), newer.clone()],
        _ => panic!(
            "the apt archive serves {} version(s) of {PACKAGE}, two are needed \
             (apt-get update?): {served:?}",
            served.len()
        ),
    }
}

pub fn deb(version: &str) -> PathBuf {
    let path = Path::new(CACHE).join(format!("{PACKAGE}_{version}_amd64.deb"));
    if !path.exists() {
        std::fs::create_dir_all(CACHE).unwrap();
        let ok = Command::new("apt-get")
            .current_dir(CACHE)
            .args(["download", &format!("{PACKAGE}={version}")])
            .status()
            .expect("apt-get download");
        assert!(ok.success(), "apt-get download {PACKAGE}={version}");
    }
    path
}

/// Installs a .deb with apt (waiting for dpkg's lock, which other tests on
/// this host may hold), as an operator would.
pub fn apt_install(deb: &Path) {
    let out = Command::new("apt-get")
        .env("NEEDRESTART_SUSPEND", "1")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([
            "install",
            "-y",
            "-q",
            "--allow-downgrades",
            "-o",
            "DPkg::Lock::Timeout=300",
        ])
        .arg(deb)
        .output()
        .expect("apt-get install");
    assert!(
        out.status.success(),
        "apt-get install {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts the package back as the test found it, even when the test fails
/// half way: at its version, or not installed at all (a fresh machine has
/// no libaom3).
pub struct Restore(pub Option<String>);

impl Drop for Restore {
    fn drop(&mut self) {
        match &self.0 {
            Some(v) => {
                if installed_version(PACKAGE).as_ref() != Some(v) && versions().contains(v) {
                    apt_install(&deb(v));
                }
            }
            None => {
                let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
            }
        }
    }
}

/// Debian's python3 with the library loaded (ctypes), until killed.
pub fn library_user() -> Proc {
    spawn_mapping(
        Command::new("/usr/bin/python3").args([
            "-c",
            &format!("import ctypes,time;ctypes.CDLL('{SONAME}');time.sleep(600)"),
        ]),
        "libaom.so",
    )
}
