//! Language and binary packages of real processes on this machine, checked
//! against what independent tools report (`pip list`, `go version -m`,
//! rust-audit-info), vendored in testdata/.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use patchgap_proto::purl::pep503;

#[path = "../../tests/src/image.rs"]
mod image;

use patchgap_agent::{
    ScanConfig, Scanner,
    model::{ArtifactKind, Inventory, Process},
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// A child that is killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a command and waits for its first line of output ("ready").
fn start(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{cmd:?}");
    Running(child)
}

fn scan() -> Inventory {
    Scanner::new(ScanConfig::default()).scan()
}

fn process(inv: &Inventory, pid: u32) -> &Process {
    inv.processes
        .iter()
        .find(|p| p.key.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not scanned"))
}

/// (normalized name, version) of a process's packages of one ecosystem
/// with this evidence.
fn packages(p: &Process, kind: ArtifactKind, ecosystem: &str) -> BTreeSet<(String, String)> {
    p.artifacts
        .iter()
        .filter(|a| a.kind == kind)
        .filter_map(|a| a.package.as_ref())
        .filter(|pkg| pkg.ecosystem == ecosystem)
        .map(|pkg| (pep503(&pkg.name), pkg.version.clone()))
        .collect()
}

/// `pip list --format json` as vendored.
fn pip_list(file: &str) -> BTreeSet<(String, String)> {
    parse_pip_list(&std::fs::read(testdata(&format!("inventory/{file}"))).unwrap())
}

/// (normalized name, version) of `pip list --format json` output.
fn parse_pip_list(bytes: &[u8]) -> BTreeSet<(String, String)> {
    let list: Vec<serde_json::Value> = serde_json::from_slice(bytes).unwrap();
    list.iter()
        .map(|e| {
            (
                pep503(e["name"].as_str().unwrap()),
                e["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `python -m pip list --format json`, run here (tests/deps.sh installs
/// pip): the independent answer for a site that is not frozen with the
/// image (the pyenv interpreters' are, and compare with `pip_list`).
fn live_pip_list(python: &str) -> BTreeSet<(String, String)> {
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "list",
            "--format",
            "json",
            "--disable-pip-version-check",
        ])
        .env("PIP_NO_INPUT", "1")
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "{python} -m pip list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_pip_list(&out.stdout)
}

const SLEEPER: &str = "import time; print('ready', flush=True); time.sleep(60)";

/// The system python3 and a pyenv interpreter: the distributions reported
/// installed are exactly what `pip list` printed for each.
#[test]
fn python_environments_equal_pip_list() {
    let system = start(Command::new("/usr/bin/python3").args(["-c", SLEEPER]));
    let pyenv_python = "/root/.pyenv/versions/3.11.7/bin/python3.11";
    let pyenv =
        image::has(pyenv_python).then(|| start(Command::new(pyenv_python).args(["-c", SLEEPER])));
    let inv = scan();

    let got = packages(
        process(&inv, system.0.id()),
        ArtifactKind::Installed,
        "pypi",
    );
    // What pip says here, now: the system's site directories change with
    // what apt installs (the HA script's Patroni, a fresh machine's few).
    assert_eq!(got, live_pip_list("/usr/bin/python3"), "system python3");
    if let Some(pyenv) = &pyenv {
        let got = packages(process(&inv, pyenv.0.id()), ArtifactKind::Installed, "pypi");
        assert_eq!(got, pip_list("pip_pyenv_3.11.7.json"), "pyenv 3.11.7");
    }

    // Debian's python3-cryptography ships cryptography 38.0.4 as both a
    // dist-info and an egg-info: one package, carrying both identities.
    let p = process(&inv, system.0.id());
    let crypto: Vec<_> = p
        .artifacts
        .iter()
        .filter_map(|a| a.package.as_ref())
        .filter(|pkg| pkg.ecosystem == "pypi" && pkg.name == "cryptography")
        .collect();
    assert_eq!(crypto.len(), 1, "{crypto:?}");
    let distro = crypto[0].distro.as_ref().expect("shipped by a deb");
    assert_eq!(distro.name, "python3-cryptography");
    assert_eq!(distro.ecosystem, "deb");
    assert_eq!(crypto[0].purl, "pkg:pypi/cryptography@38.0.4");
}

/// A Python C extension in /proc/PID/maps is `mapped` under its
/// distribution; an interpreter that did not import it has it `installed`.
#[test]
fn a_mapped_c_extension_is_loaded_evidence() {
    let importer = start(
        Command::new("/usr/bin/python3").args(["-c", &format!("import yaml._yaml; {SLEEPER}")]),
    );
    let idle = start(Command::new("/usr/bin/python3").args(["-c", SLEEPER]));
    let inv = scan();
    let yaml = ("pyyaml".to_string(), "6.0".to_string());
    let mapped = packages(process(&inv, importer.0.id()), ArtifactKind::Mapped, "pypi");
    assert!(mapped.contains(&yaml), "{mapped:?}");
    let mapped = packages(process(&inv, idle.0.id()), ArtifactKind::Mapped, "pypi");
    assert!(!mapped.contains(&yaml), "{mapped:?}");
    let installed = packages(process(&inv, idle.0.id()), ArtifactKind::Installed, "pypi");
    assert!(installed.contains(&yaml), "{installed:?}");
}

/// `go version -m` output: (module path, version) of mod, dep (or its
/// `=>` replacement by another module: that is what was built), and the
/// toolchain as stdlib. A dep replaced by a local directory (`=> ./dir
/// (devel)`) keeps the path and version the binary's requirements name.
fn go_version_m(file: &str) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(testdata(&format!("gobuildinfo/{file}"))).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with('\t') {
            // "/usr/local/bin/terraform: go1.23.3"
            if let Some((_, go)) = line.rsplit_once(": go") {
                out.push(("stdlib".into(), go.trim().into()));
            }
            continue;
        }
        let cols: Vec<&str> = line.trim_start().split('\t').collect();
        match cols[..] {
            ["mod", path, version, ..] | ["dep", path, version, ..] => {
                out.push((path.into(), version.into()))
            }
            // The replacement is what was built.
            ["=>", path, ..] if path.starts_with('.') || path.starts_with('/') => {}
            ["=>", path, version, ..] => *out.last_mut().unwrap() = (path.into(), version.into()),
            _ => {}
        }
    }
    out.into_iter().collect()
}

#[test]
fn go_binaries_equal_go_version_m() {
    // The docker CLI is built outside module mode: go version -m shows no
    // mod or dep lines, only the toolchain.
    for (binary, expected, at_least) in [
        ("/usr/local/bin/terraform", "terraform.txt", 100),
        ("/usr/local/bin/docker", "docker.txt", 1),
    ] {
        if !image::has(binary) {
            continue;
        }
        let file = std::fs::File::open(binary).expect("binary on this image");
        let got: BTreeSet<(String, String)> = patchgap_agent::lang::embedded_in(&file)
            .iter()
            .map(|p| {
                assert_eq!(p.ecosystem, "golang");
                assert!(p.purl.starts_with("pkg:golang/"), "{}", p.purl);
                (p.name.clone(), p.version.clone())
            })
            .collect();
        let want = go_version_m(expected);
        assert!(want.len() >= at_least, "{expected}: {}", want.len());
        assert_eq!(got, want, "{binary}");
    }
}

/// A running executable that carries a real `.dep-v0` section (the
/// fixture crate's, put into a copy of /bin/sleep with objcopy): its
/// crates are `embedded`, equal to what rust-audit-info read.
#[test]
fn a_cargo_auditable_process_reports_its_crates() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("audited-sleep");
    let status = Command::new("objcopy")
        .arg(format!(
            "--add-section=.dep-v0={}",
            testdata("rust_auditable/dep-v0.zlib").display()
        ))
        .args(["/bin/sleep", exe.to_str().unwrap()])
        .status()
        .expect("objcopy (binutils)");
    assert!(status.success());
    let child = Running(Command::new(&exe).arg("60").spawn().unwrap());
    let pid = child.0.id();
    // The exec has happened once /proc shows the new executable.
    for _ in 0..400 {
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|l| l == exe) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let inv = scan();
    let got = packages(process(&inv, pid), ArtifactKind::Embedded, "cargo");
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata("rust_auditable/rust-audit-info.json")).unwrap(),
    )
    .unwrap();
    let want: BTreeSet<(String, String)> = info["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                pep503(p["name"].as_str().unwrap()),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(got.contains(&("smallvec".into(), "1.6.0".into())));
}

/// A Node.js app: the packages under its node_modules, scoped and nested
/// ones included, are installed.
#[test]
fn a_node_app_reports_its_node_modules() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path();
    let write = |rel: &str, text: &str| {
        let path = app.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "node_modules/left-pad/package.json",
        r#"{"name": "left-pad", "version": "1.3.0", "main": "index.js"}"#,
    );
    write(
        "node_modules/left-pad/index.js",
        "module.exports = (s) => s;",
    );
    write(
        "node_modules/@acme/util/package.json",
        r#"{"name": "@acme/util", "version": "2.0.0-rc.1"}"#,
    );
    write(
        "node_modules/@acme/util/node_modules/left-pad/package.json",
        r#"{"name": "left-pad", "version": "1.1.0"}"#,
    );
    write(
        "server.js",
        "require('left-pad'); console.log('ready'); setTimeout(() => {}, 60000);",
    );
    let node = start(Command::new("node").arg("server.js").current_dir(app));
    let inv = scan();
    let got: BTreeSet<(String, String)> = process(&inv, node.0.id())
        .artifacts
        .iter()
        .filter(|a| a.kind == ArtifactKind::Installed)
        .filter_map(|a| a.package.as_ref())
        .filter(|p| p.ecosystem == "npm")
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("left-pad", "1.3.0"),
        ("@acme/util", "2.0.0-rc.1"),
        ("left-pad", "1.1.0"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
}

/// A JVM that loaded a class from a jar in /usr/share/java holds the jar
/// open: it is reported with the jar's Maven coordinates, and with the
/// Debian package that installed it.
#[test]
fn a_jvm_reports_the_jars_it_holds_open() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("Hold.java");
    std::fs::write(
        &source,
        "public class Hold { public static void main(String[] a) throws Exception {\n\
         System.out.println(org.apache.commons.io.FilenameUtils.getExtension(\"x.jar\").equals(\"jar\") ? \"ready\" : \"no\");\n\
         Thread.sleep(60000); } }\n",
    )
    .unwrap();
    let jar = std::fs::canonicalize("/usr/share/java/commons-io.jar").expect("libcommons-io-java");
    let java = start(Command::new("java").arg("-cp").arg(&jar).arg(&source));
    let inv = scan();
    let p = process(&inv, java.0.id());
    let found: Vec<_> = p
        .artifacts
        .iter()
        .filter(|a| {
            a.kind == ArtifactKind::Opened && a.path.0 == jar.as_os_str().as_encoded_bytes()
        })
        .filter_map(|a| a.package.as_ref())
        .filter(|pkg| pkg.ecosystem == "maven")
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].source, "commons-io");
    assert_eq!(found[0].name, "commons-io");
    assert_eq!(found[0].version, "2.11.0");
    assert_eq!(found[0].purl, "pkg:maven/commons-io/commons-io@2.11.0");
    let distro = found[0].distro.as_ref().expect("installed by a deb");
    assert_eq!(distro.name, "libcommons-io-java");
}
