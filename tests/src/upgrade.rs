//! A real library package to upgrade and downgrade with apt while the agent
//! runs (issue 11): two versions the Debian archive serves, cached as .deb
//! files so reruns need no network.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Proc, dpkg_version, spawn_mapping};

/// Two versions of libaom3 that the Debian archive serves (bookworm and
/// bookworm-security), so the test can go both ways. Nothing else on this
/// host uses libaom, and it depends on libc6 alone.
pub const PACKAGE: &str = "libaom3";
pub const VERSIONS: [&str; 2] = ["3.6.0-1+deb12u1", "3.6.0-1+deb12u2"];
pub const SONAME: &str = "libaom.so.3";
/// Downloaded once; reruns need no network.
pub const CACHE: &str = "/var/cache/patchgap-tests/debs";

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

/// Puts the package back at the version the machine had, even when the
/// test fails half way.
pub struct Restore(pub String);

impl Drop for Restore {
    fn drop(&mut self) {
        if dpkg_version(PACKAGE) != self.0 && VERSIONS.contains(&self.0.as_str()) {
            apt_install(&deb(&self.0));
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
