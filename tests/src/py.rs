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

/// `pip install` into the venv of `python` by the host's pip
/// (`/usr/bin/python3 -m pip --python PYTHON install`), local wheels only.
/// For a venv created without pip ([`bare_venv`]): a distribution that
/// is itself named `pip` installed by the venv's own pip would replace
/// that pip (an upgrade to it lands its files over pip's own package), and
/// the next `pip install` would run the test's stand-in. The host's pip
/// 23.0.1 (Debian 12) re-runs itself under the venv's interpreter for
/// `--python`, so the install, the uninstall of an older version through
/// its RECORD and the PEP 668 check all concern the venv, not the system.
pub fn host_pip_install(python: &Path, args: &[&std::ffi::OsStr]) {
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "--python"])
        .arg(python)
        .args([
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(args)
        .output()
        .expect("python3 -m pip");
    assert!(
        out.status.success(),
        "pip install {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds a real wheel (PEP 427) of the distribution `name` at `version`
/// in `dir` and returns its path: a zip of the package (`NAME/__init__.py`
/// with `__version__`) and its `NAME-VERSION.dist-info` (`METADATA`,
/// `WHEEL`, `top_level.txt`, and a `RECORD` with each file's sha256 and
/// size, which pip checks on install and follows on uninstall). With
/// `native` the package also holds `NAME/_native.so`, a copy of libbz2,
/// so a process that loads it with ctypes (see [`load_native_dist`]) has
/// the evidence `mapped`; the wheel is then tagged platlib for
/// `linux_x86_64`. Written by python3's zipfile, nothing is downloaded.
pub fn build_wheel(dir: &Path, name: &str, version: &str, native: bool) -> PathBuf {
    let tag = if native {
        "py3-none-linux_x86_64"
    } else {
        "py3-none-any"
    };
    let path = dir.join(format!("{name}-{version}-{tag}.whl"));
    let script = "import base64, hashlib, sys, zipfile\n\
        path, name, version, tag, native = sys.argv[1:]\n\
        files = {name + '/__init__.py': ('__version__ = %r\\n' % version).encode()}\n\
        if native == '1':\n\
        \x20   files[name + '/_native.so'] = open('/usr/lib/x86_64-linux-gnu/libbz2.so.1.0', 'rb').read()\n\
        info = '%s-%s.dist-info' % (name, version)\n\
        files[info + '/METADATA'] = ('Metadata-Version: 2.1\\nName: %s\\nVersion: %s\\n' % (name, version)).encode()\n\
        files[info + '/WHEEL'] = ('Wheel-Version: 1.0\\nGenerator: patchgap-tests\\nRoot-Is-Purelib: %s\\nTag: %s\\n' % ('false' if native == '1' else 'true', tag)).encode()\n\
        files[info + '/top_level.txt'] = (name + '\\n').encode()\n\
        rec = []\n\
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:\n\
        \x20   for n, c in files.items():\n\
        \x20       z.writestr(n, c)\n\
        \x20       h = base64.urlsafe_b64encode(hashlib.sha256(c).digest()).rstrip(b'=').decode()\n\
        \x20       rec.append('%s,sha256=%s,%d' % (n, h, len(c)))\n\
        \x20   rec.append(info + '/RECORD,,')\n\
        \x20   z.writestr(info + '/RECORD', '\\n'.join(rec) + '\\n')\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&path)
        .args([name, version, tag, if native { "1" } else { "0" }])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "wheel {name} {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
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

/// A venv without pip (`/usr/bin/python3 -m venv --without-pip DIR/venv`):
/// its python and its site-packages, for distributions installed by the
/// host's pip ([`host_pip_install`]) or laid down by the test itself
/// ([`install_native_dist`]).
pub fn bare_venv(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("venv");
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&root)
        .output()
        .expect("python3 -m venv");
    assert!(
        out.status.success(),
        "venv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = std::fs::read_dir(root.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3")
        })
        .expect("lib/python3.X");
    (root.join("bin/python"), lib.join("site-packages"))
}

/// Installs the distribution `name` at `version` into `site` as a wheel
/// would land: the package with a native library (`NAME/_native.so`, a
/// copy of libbz2 with an inode of its own, so a process that loads it
/// with ctypes has the evidence `mapped`) and its dist-info. A locally
/// built stand-in: nothing is downloaded. An older version's dist-info is
/// removed, and the library is renamed over the old one, so a process
/// that mapped the old one keeps it (`(deleted)`: a stale mapping).
pub fn install_native_dist(site: &Path, name: &str, version: &str) {
    let prefix = format!("{name}-");
    for e in std::fs::read_dir(site).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&prefix)
        {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    let pkg = site.join(name);
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("__init__.py"),
        format!("__version__ = {version:?}\n"),
    )
    .unwrap();
    let tmp = pkg.join("_native.so.tmp");
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libbz2.so.1.0", &tmp).unwrap();
    std::fs::rename(&tmp, pkg.join("_native.so")).unwrap();
    let dist = site.join(format!("{name}-{version}.dist-info"));
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
    )
    .unwrap();
    std::fs::write(dist.join("top_level.txt"), format!("{name}\n")).unwrap();
    std::fs::write(
        dist.join("RECORD"),
        format!(
            "{name}/__init__.py,,\n{name}/_native.so,,\n{name}-{version}.dist-info/METADATA,,\n{name}-{version}.dist-info/RECORD,,\n"
        ),
    )
    .unwrap();
}

/// Python that imports the distribution `name` (a native [`build_wheel`]
/// installed, or laid down by [`install_native_dist`]) and maps its
/// native library.
pub fn load_native_dist(name: &str) -> String {
    format!(
        "import ctypes, os, {name}\n\
         ctypes.CDLL(os.path.join(os.path.dirname({name}.__file__), '_native.so'))"
    )
}
