//! Python environments for the tests: venvs and real wheels from PyPI.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A real wheel from PyPI for CPython 3.11 on x86_64 (`spec` is
/// `name==version`), downloaded once by `pip` into `cache` (the tests'
/// target tmp dir, `CARGO_TARGET_TMPDIR/wheels`); later runs are offline.
pub fn wheel(pip: &Path, spec: &str, cache: &Path) -> PathBuf {
    let (name, version) = spec.split_once("==").unwrap();
    let prefix = format!("{}-{version}-", name.to_lowercase());
    let find = || {
        std::fs::read_dir(cache)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let f = p.file_name().unwrap().to_string_lossy().to_lowercase();
                f.starts_with(&prefix) && f.ends_with(".whl")
            })
    };
    if let Some(p) = find() {
        return p;
    }
    let ok = Command::new(pip)
        .args([
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(cache)
        .arg(spec)
        .status()
        .expect("pip download");
    assert!(ok.success(), "pip download {spec}");
    find().unwrap_or_else(|| panic!("no wheel for {spec} in {}", cache.display()))
}

/// `pip install` of local wheels only, with extra arguments (`--target`).
pub fn pip_install(pip: &Path, args: &[&std::ffi::OsStr]) {
    let ok = Command::new(pip)
        .args([
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(args)
        .status()
        .expect("pip install");
    assert!(ok.success(), "pip install {args:?}");
}

/// `/usr/bin/python3 -m venv DIR/venv`.
pub fn new_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let ok = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(ok.success());
    venv
}
