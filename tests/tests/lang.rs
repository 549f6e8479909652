//! Language packages end to end: a real venv, a real pip install, real
//! interpreters, the agent (with eBPF unless PATCHGAP_EBPF=off) and the
//! collector's answers.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use patchgap_proto::v1;
use patchgap_tests::{
    GroundTruth, Harness, ebpf_wanted, ground_truth, osv_files,
    py::{self, new_venv, pip_install},
    spawn_ready, timeout,
};

/// python3 -m venv, then a wheel built from testdata/python/tinydist
/// (offline, by testdata/python/build_wheel.py) installed with pip.
fn venv_with_tinydist(dir: &Path) -> std::path::PathBuf {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python");
    let venv = dir.join("venv");
    let ok = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(ok.success());
    let out = Command::new("/usr/bin/python3")
        .arg(testdata.join("build_wheel.py"))
        .arg(testdata.join("tinydist"))
        .arg(dir)
        .output()
        .expect("build the wheel");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = String::from_utf8(out.stdout).unwrap();
    let ok = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--no-index",
            "--disable-pip-version-check",
        ])
        .arg(wheel.trim())
        .status()
        .expect("pip install");
    assert!(ok.success());
    venv
}

async fn find(h: &Harness, name: &str, ecosystem: &str, evidence: &str) -> v1::FindPackageResponse {
    h.client()
        .await
        .find_package(v1::FindPackageRequest {
            name: name.into(),
            ecosystem: ecosystem.into(),
            evidence: evidence.into(),
            ..Default::default()
        })
        .await
        .expect("find_package")
        .into_inner()
}

fn evidence_of(r: &v1::FindPackageResponse, pid: u32) -> Option<String> {
    r.matches
        .iter()
        .find(|m| m.key.is_some_and(|k| k.pid == pid))
        .map(|m| m.evidence.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venv_distribution_is_opened_when_imported_and_installed_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let venv = venv_with_tinydist(dir.path());
    let h = Harness::start().await;
    let python = venv.join("bin/python");
    // The import comes a moment after "ready", once the agent has this
    // process: see the closing note of issue 5 for the race this avoids.
    let importer = spawn_ready(Command::new(&python).args([
        "-c",
        "import tinydist, time; print('ready', flush=True); time.sleep(120)",
    ]));
    let idle = spawn_ready(Command::new(&python).args([
        "-c",
        "import time; print('ready', flush=True); time.sleep(120)",
    ]));
    h.sync().await;

    // The import's open comes as an eBPF event; give it time to arrive.
    let want = if ebpf_wanted() { "opened" } else { "installed" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = timeout(find(&h, "tinydist", "", "")).await;
        if evidence_of(&r, importer.pid()).as_deref() == Some(want) || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        evidence_of(&r, importer.pid()).as_deref(),
        Some(want),
        "{r:#?}"
    );
    assert_eq!(evidence_of(&r, idle.pid()).as_deref(), Some("installed"));
    let m = r
        .matches
        .iter()
        .find(|m| m.key.unwrap().pid == idle.pid())
        .unwrap();
    let pkg = m.package.as_ref().unwrap();
    assert_eq!(
        (
            pkg.ecosystem.as_str(),
            pkg.name.as_str(),
            pkg.version.as_str()
        ),
        ("pypi", "tinydist", "0.1.0")
    );
    assert_eq!(pkg.purl, "pkg:pypi/tinydist@0.1.0");
    assert!(pkg.distro.is_none(), "pip installed it, not a deb");
    let venv_site = venv.join("lib/python3.11/site-packages/tinydist-0.1.0.dist-info");
    assert!(
        m.paths
            .iter()
            .any(|p| p.path == venv_site.as_os_str().as_encoded_bytes()),
        "{:?}",
        m.paths
    );
    // The interpreters are the system's, so the venv's own packages are
    // the only ones: no Debian dist-packages leak in.
    let r = timeout(find(&h, "python3-cryptography", "", "")).await;
    assert_eq!(evidence_of(&r, idle.pid()), None);

    // --evidence and --ecosystem filter; a purl finds the same processes.
    let loaded = timeout(find(&h, "tinydist", "", "loaded")).await;
    let installed = timeout(find(&h, "tinydist", "", "installed")).await;
    assert_eq!(
        evidence_of(&installed, idle.pid()).as_deref(),
        Some("installed")
    );
    if ebpf_wanted() {
        assert!(evidence_of(&loaded, importer.pid()).is_some());
        assert!(evidence_of(&installed, importer.pid()).is_none());
    } else {
        assert!(evidence_of(&loaded, importer.pid()).is_none());
    }
    assert!(evidence_of(&loaded, idle.pid()).is_none());
    let npm = timeout(find(&h, "tinydist", "npm", "")).await;
    assert!(npm.matches.is_empty());
    for spec in ["pkg:pypi/tinydist@0.1.0", "pkg:pypi/TinyDist", "TINYDIST"] {
        let r = timeout(find(&h, spec, "", "")).await;
        assert!(evidence_of(&r, idle.pid()).is_some(), "{spec}");
    }
    let r = timeout(find(&h, "pkg:pypi/tinydist@0.2.0", "", "")).await;
    assert!(r.matches.is_empty(), "another version");
    // Constraints compare in the package's own order: in PEP 440 a release
    // comes after its release candidates (in dpkg's order it would not).
    let pep440 = h
        .client()
        .await
        .find_package(v1::FindPackageRequest {
            name: "tinydist".into(),
            constraint: ">=0.1.0rc1,<0.1.1".into(),
            ..Default::default()
        })
        .await
        .expect("find_package")
        .into_inner();
    assert!(evidence_of(&pep440, idle.pid()).is_some(), "{pep440:?}");
    let err = h
        .client()
        .await
        .find_package(v1::FindPackageRequest {
            name: "pkg:pypi/tinydist".into(),
            ecosystem: "npm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    drop((importer, idle));
    h.stop().await;
}

/// `--advisory`: the real PyPA advisories against a real pyenv 3.11.7
/// interpreter. For every ground-truth row of that interpreter
/// (testdata/osv/ground_truth_matches.json, an independent matcher's
/// verdicts), the process is exposed exactly when the row says affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_expose_the_processes_whose_versions_they_affect() {
    if !patchgap_tests::image::has("/root/.pyenv/versions/3.11.7/bin/python3.11") {
        return;
    }
    let osv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/osv");
    let h = Harness::start().await;
    let python = spawn_ready(
        Command::new("/root/.pyenv/versions/3.11.7/bin/python3.11").args([
            "-c",
            "import time; print('ready', flush=True); time.sleep(120)",
        ]),
    );
    h.sync().await;
    // Import every PyPA advisory, the way `patchgap advisories import` does.
    let files = osv_files(&["pypa/vulns"]);
    let imported = h
        .client()
        .await
        .import_advisories(v1::ImportAdvisoriesRequest {
            files,
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner();
    assert_eq!(
        (imported.added, imported.errors.len()),
        (88, 0),
        "{imported:?}"
    );

    let truth: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(osv.join("ground_truth_matches.json")).unwrap())
            .unwrap();
    let rows: Vec<&serde_json::Value> = truth
        .iter()
        .filter(|r| r["where"] == "pyenv_3.11.7" && r["source"] == "pypa")
        .collect();
    let (mut agree, mut exposed) = (0, 0);
    for row in &rows {
        let id = row["id"].as_str().unwrap();
        let r = timeout(async {
            h.client()
                .await
                .find_package(v1::FindPackageRequest {
                    advisory: id.into(),
                    ecosystem: "pypi".into(),
                    ..Default::default()
                })
                .await
                .expect("find_package")
                .into_inner()
        })
        .await;
        let ours = r.matches.iter().any(|m| {
            m.key.is_some_and(|k| k.pid == python.pid())
                && m.package.as_ref().is_some_and(|p| {
                    p.name
                        .eq_ignore_ascii_case(row["package"].as_str().unwrap())
                        && p.version == row["installed_version"].as_str().unwrap()
                })
        });
        let want = row["affected_per_osv_ranges"].as_bool().unwrap();
        assert_eq!(
            ours, want,
            "{id} {} {}",
            row["package"], row["installed_version"]
        );
        if ours {
            exposed += 1;
            let m = r
                .matches
                .iter()
                .find(|m| m.key.unwrap().pid == python.pid())
                .unwrap();
            assert_eq!(m.advisory, id);
        }
        agree += 1;
    }
    eprintln!("pyenv 3.11.7: {agree} ground-truth rows agree, {exposed} exposed");
    assert!(
        rows.len() >= 10 && exposed >= 2,
        "{} rows, {exposed} exposed",
        rows.len()
    );

    // Debian's python3: the same verdicts, except that where Debian's own
    // changelog says the installed version (or an earlier one) fixed the
    // CVE, the finding is fixed-by-distro, not an exposure
    // (python3-cryptography 38.0.4-3+deb12u1 and CVE-2023-23931).
    let system = spawn_ready(Command::new("/usr/bin/python3").args([
        "-c",
        "import time; print('ready', flush=True); time.sleep(120)",
    ]));
    h.sync().await;
    let mut seen = std::collections::BTreeSet::new();
    let (mut affected, mut fixed, mut clean) = (0, 0, 0);
    for row in truth
        .iter()
        .filter(|r| r["where"] == "system_python3" && r["source"] == "pypa")
    {
        let id = row["id"].as_str().unwrap();
        if !seen.insert(id) {
            continue; // The data lists the dist-info and the egg-info.
        }
        let r = timeout(async {
            h.client()
                .await
                .find_package(v1::FindPackageRequest {
                    advisory: id.into(),
                    ecosystem: "pypi".into(),
                    ..Default::default()
                })
                .await
                .expect("find_package")
                .into_inner()
        })
        .await;
        let ours = r
            .matches
            .iter()
            .find(|m| m.key.is_some_and(|k| k.pid == system.pid()))
            .map(|m| m.status.clone());
        let want = match (
            row["affected_per_osv_ranges"].as_bool().unwrap(),
            row["debian_changelog_mentions_cve"]
                .as_bool()
                .unwrap_or(false),
        ) {
            (false, _) => None,
            (true, false) => Some("affected"),
            (true, true) => Some("fixed-by-distro"),
        };
        assert_eq!(ours.as_deref(), want, "{id} {}", row["package"]);
        match want {
            None => clean += 1,
            Some("affected") => affected += 1,
            _ => fixed += 1,
        }
    }
    eprintln!("system python3: {affected} affected, {fixed} fixed-by-distro, {clean} not affected");
    assert!(seen.contains("PYSEC-2023-11") && fixed >= 2 && affected >= 1);

    // Findings: every advisory at once. The exposures above are there, the
    // backported ones are not, and --loaded drops packages only installed.
    let all = h
        .client()
        .await
        .list_findings(v1::ListFindingsRequest::default())
        .await
        .expect("findings")
        .into_inner();
    assert_eq!(all.advisories, 88);
    let of = |pid: u32, id: &str| {
        all.findings
            .iter()
            .any(|m| m.key.is_some_and(|k| k.pid == pid) && m.advisory == id)
    };
    assert!(of(system.pid(), "PYSEC-2023-228"), "pip 23.0.1");
    assert!(!of(system.pid(), "PYSEC-2023-11"), "fixed by Debian");
    assert!(of(python.pid(), "PYSEC-2023-228"), "pip 23.2.1");
    assert!(
        all.findings
            .iter()
            .all(|m| m.status == "affected" && !m.advisory.is_empty())
    );
    let loaded = h
        .client()
        .await
        .list_findings(v1::ListFindingsRequest {
            loaded: true,
            ..Default::default()
        })
        .await
        .expect("findings")
        .into_inner();
    assert!(
        loaded.findings.iter().all(|m| m.evidence != "installed"),
        "{loaded:?}"
    );
    let err = h
        .client()
        .await
        .list_findings(v1::ListFindingsRequest {
            severity: "urgent".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    eprintln!(
        "findings: {} from {} advisories in {} ms",
        all.findings.len(),
        all.advisories,
        all.elapsed_ms
    );
    drop(system);

    // An unknown advisory is NotFound; a package and an advisory together
    // are refused.
    let err = h
        .client()
        .await
        .find_package(v1::FindPackageRequest {
            advisory: "CVE-1999-0001".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    drop(python);
    h.stop().await;
}

/// A real process of `exe`, stopped by ptrace at its exec: the kernel has
/// mapped the executable, and not one of its instructions has run (the
/// binaries here are CLIs that would exit or reach for the network).
fn stopped_at_exec(exe: &str) -> patchgap_tests::Proc {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe and touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn under ptrace");
    let pid = child.id();
    // Wait for the stop at exec (SIGTRAP) without reaping.
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::__WALL) };
    assert_eq!(r, pid as i32);
    assert!(libc::WIFSTOPPED(status), "{exe} did not stop at exec");
    patchgap_tests::Proc(child)
}

/// The real Go vulndb advisories against real Go binaries on this image
/// (terraform, the docker CLI, terraform-provider-aws), each a process
/// whose modules and Go release the agent reads from the executable: the
/// findings per process are exactly the ground truth's affected
/// (advisory, module) pairs for that binary, except for withdrawn
/// advisories: the ground truth evaluates ranges alone, and a withdrawn
/// advisory exposes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_binaries_findings_agree_with_the_ground_truth() {
    let binaries = [
        "/usr/local/bin/terraform",
        "/usr/local/bin/docker",
        "/opt/tf-plugins/registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws_v5.100.0_x5",
    ];
    if !binaries.iter().all(|b| patchgap_tests::image::has(b)) {
        return;
    }
    let procs: Vec<_> = binaries.iter().map(|b| stopped_at_exec(b)).collect();
    let h = Harness::start().await;
    h.sync().await;
    let (imported, findings) = h
        .import_then_findings(osv_files(&["golang-vulndb/data/osv"]))
        .await;
    assert_eq!((imported.added, imported.errors.len()), (205, 0));
    for (exe, p) in binaries.iter().zip(&procs) {
        // Affected when any of the advisory's entries for the module is.
        let GroundTruth {
            live: want,
            withdrawn,
        } = ground_truth(exe);
        let got: std::collections::BTreeSet<(String, String)> = findings
            .findings
            .iter()
            .filter(|m| m.key.is_some_and(|k| k.pid == p.pid()))
            .map(|m| {
                assert_eq!(m.evidence, "embedded", "{m:?}");
                (m.advisory.clone(), m.package.as_ref().unwrap().name.clone())
            })
            .collect();
        eprintln!(
            "{exe}: {} affected (advisory, module) pairs agree, {} more are of withdrawn advisories",
            want.len(),
            withdrawn.len()
        );
        assert!(!want.is_empty());
        assert_eq!(
            got,
            want,
            "{exe}: missing {:?}, extra {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(&want).collect::<Vec<_>>()
        );
    }
    drop(procs);
    h.stop().await;
}

/// Every pyenv interpreter on this image (2.7 to 3.13), idle, against the
/// real PyPA and GHSA advisories: each process's findings are exactly the
/// ground truth's affected (advisory, package) pairs for that interpreter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pyenv_interpreters_findings_agree_with_the_ground_truth() {
    let versions = [
        "2.7.18", "3.6.15", "3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0",
    ];
    if !versions
        .iter()
        .all(|v| patchgap_tests::image::has(&format!("/root/.pyenv/versions/{v}")))
    {
        return;
    }
    let procs: Vec<_> = versions
        .iter()
        .map(|v| {
            let minor: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
            spawn_ready(
                Command::new(format!("/root/.pyenv/versions/{v}/bin/python{minor}")).args([
                    "-c",
                    "import sys, time; sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(120)",
                ]),
            )
        })
        .collect();
    let h = Harness::start().await;
    h.sync().await;
    let (imported, findings) = h
        .import_then_findings(osv_files(&["pypa/vulns", "ghsa"]))
        .await;
    assert_eq!((imported.added, imported.errors.len()), (96, 0));
    for (v, p) in versions.iter().zip(&procs) {
        let place = format!("pyenv_{v}");
        let truth = ground_truth(&place);
        assert!(truth.withdrawn.is_empty());
        let want: std::collections::BTreeSet<(String, String)> = truth
            .live
            .into_iter()
            .map(|(id, package)| (id, patchgap_proto::purl::pep503(&package)))
            .collect();
        let got: std::collections::BTreeSet<(String, String)> = findings
            .findings
            .iter()
            .filter(|m| m.key.is_some_and(|k| k.pid == p.pid()))
            .map(|m| {
                (
                    m.advisory.clone(),
                    patchgap_proto::purl::pep503(&m.package.as_ref().unwrap().name),
                )
            })
            .collect();
        eprintln!("{place}: {} affected pairs agree", want.len());
        assert_eq!(got, want, "{place}");
    }
    drop(procs);
    h.stop().await;
}

/// A real wheel from PyPI, cached in the tests' target tmp dir (see
/// [`patchgap_tests::py::wheel`]).
fn wheel(pip: &Path, spec: &str) -> std::path::PathBuf {
    py::wheel(
        pip,
        spec,
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheels"),
    )
}

/// What the interpreter itself says it loaded, written by the test's
/// python to a file before it prints "ready": every distribution
/// (importlib.metadata, over its real sys.path) that lists an extension
/// module the process has imported, lower-cased name → version.
const LOADED_EXTENSION_DISTS: &str = r#"
import importlib.metadata as md, json, os, sys
loaded = {os.path.realpath(m.__file__) for m in list(sys.modules.values())
          if (getattr(m, '__file__', None) or '').endswith('.so')}
found = {}
for d in md.distributions():
    for f in d.files or []:
        if os.path.realpath(d.locate_file(f)) in loaded:
            found[d.metadata['Name'].lower()] = d.version
open(sys.argv[1], 'w').write(json.dumps(found))
print('ready', flush=True)
import time; time.sleep(300)
"#;

/// The interpreter's own answer (see [`LOADED_EXTENSION_DISTS`]).
fn interpreter_says(file: &Path) -> std::collections::BTreeMap<String, String> {
    let m: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    m
}

/// The distributions the tests here install (the collector is asked by
/// name).
const TEST_DISTS: [&str; 2] = ["pyyaml", "simplejson"];

/// The collector's matches of a process for these PyPI names.
async fn matches_of(h: &Harness, pid: u32, names: &[String]) -> Vec<v1::Match> {
    let mut out = Vec::new();
    for name in names {
        let r = timeout(find(h, name, "pypi", "")).await;
        out.extend(
            r.matches
                .into_iter()
                .filter(|m| m.key.is_some_and(|k| k.pid == pid)),
        );
    }
    out
}

/// The PyPI distributions the collector says a process maps, lower-cased
/// name → version, among `truth`'s names and the tests' own.
async fn mapped_pypi(
    h: &Harness,
    pid: u32,
    truth: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut names: Vec<String> = truth.keys().cloned().collect();
    names.extend(TEST_DISTS.iter().map(|n| n.to_string()));
    names.sort();
    names.dedup();
    let mut out = std::collections::BTreeMap::new();
    for m in matches_of(h, pid, &names).await {
        if m.paths.iter().any(|p| p.evidence == "mapped") {
            let p = m.package.as_ref().unwrap();
            out.insert(p.name.to_lowercase(), p.version.clone());
        }
    }
    out
}

/// The mapped files of a process that the collector names no PyPI
/// distribution for, though they lie in the test's directory.
async fn unresolved_under(h: &Harness, pid: u32, dir: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let dir = dir.to_string_lossy().into_owned();
    let names: Vec<String> = TEST_DISTS.iter().map(|n| n.to_string()).collect();
    let named: std::collections::BTreeSet<Vec<u8>> = matches_of(h, pid, &names)
        .await
        .iter()
        .flat_map(|m| m.paths.iter().map(|p| p.path.clone()))
        .collect();
    let mut out: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_once(&dir).map(|(_, rest)| format!("{dir}{rest}")))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
        .filter(|p| p.contains(".so") && !named.contains(p.as_bytes()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Issue 11, defect 6: a venv python imports yaml (PyYAML 6.0.1's `_yaml`
/// C extension is mapped), then a real `pip install PyYAML==6.0.2`
/// replaces it. The old `.so` stays mapped, `(deleted)`, at pip's stash
/// path; the collector must answer it stale and as PyYAML 6.0.1, the
/// version the process loaded, while the venv now installs 6.0.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pip_replaced_extension_stays_named_at_the_version_it_was_loaded_at() {
    let dir = tempfile::tempdir().unwrap();
    let venv = new_venv(dir.path());
    let pip = venv.join("bin/pip");
    let (old, new) = (wheel(&pip, "PyYAML==6.0.1"), wheel(&pip, "PyYAML==6.0.2"));
    pip_install(&pip, &[old.as_os_str()]);
    let said = dir.path().join("said.json");
    let p = spawn_ready(
        Command::new(venv.join("bin/python"))
            .args(["-c", &format!("import yaml\n{LOADED_EXTENSION_DISTS}")])
            .arg(&said),
    );
    let h = Harness::start().await;
    h.sync().await;
    let truth = interpreter_says(&said);
    let before = mapped_pypi(&h, p.pid(), &truth).await;
    assert_eq!(before, truth, "agreement before");
    assert_eq!(before.get("pyyaml").map(String::as_str), Some("6.0.1"));

    pip_install(&pip, &[std::ffi::OsStr::new("--upgrade"), new.as_os_str()]);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains("_yaml.cpython"))
        .expect("_yaml still mapped");
    assert!(line.ends_with(" (deleted)"), "{line}");
    h.sync().await;

    let r = timeout(find(&h, "PyYAML", "pypi", "")).await;
    let ours: Vec<&v1::Match> = r
        .matches
        .iter()
        .filter(|m| m.key.is_some_and(|k| k.pid == p.pid()))
        .collect();
    let version = |m: &&v1::Match| m.package.as_ref().unwrap().version.clone();
    let loaded = ours
        .iter()
        .find(|m| m.paths.iter().any(|p| p.evidence == "mapped"))
        .unwrap_or_else(|| panic!("the old _yaml is named by no distribution: {ours:#?}"));
    assert_eq!(version(loaded), "6.0.1", "{loaded:#?}");
    assert!(loaded.stale, "{loaded:#?}");
    let path = loaded
        .paths
        .iter()
        .find(|p| p.evidence == "mapped")
        .unwrap();
    assert!(path.stale && path.deleted, "{path:?}");
    assert!(
        ours.iter()
            .any(|m| version(m) == "6.0.2" && m.evidence == "installed"),
        "{ours:#?}"
    );
    assert!(unresolved_under(&h, p.pid(), dir.path()).await.is_empty());
    // A process started now maps the new version, not stale.
    let said2 = dir.path().join("said2.json");
    let q = spawn_ready(
        Command::new(venv.join("bin/python"))
            .args(["-c", &format!("import yaml\n{LOADED_EXTENSION_DISTS}")])
            .arg(&said2),
    );
    h.sync().await;
    let truth = interpreter_says(&said2);
    let now = mapped_pypi(&h, q.pid(), &truth).await;
    assert_eq!(now, truth, "agreement after");
    assert_eq!(now.get("pyyaml").map(String::as_str), Some("6.0.2"));
    // `pip list` agrees: every distribution of the venv, at its version.
    let out = Command::new(&pip)
        .args(["list", "--format", "json", "--disable-pip-version-check"])
        .output()
        .expect("pip list");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = listed
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    let ours: std::collections::BTreeSet<(String, String)> = matches_of(&h, q.pid(), &names)
        .await
        .iter()
        .map(|m| {
            let p = m.package.as_ref().unwrap();
            (p.name.to_lowercase(), p.version.clone())
        })
        .collect();
    let pip_says: std::collections::BTreeSet<(String, String)> = listed
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_lowercase(),
                d["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ours, pip_says, "pip list");
    eprintln!(
        "pip-replaced _yaml: before {before:?}, after upgrade (old process) 6.0.1 stale, new process {now:?}, pip list {pip_says:?}"
    );
    drop((p, q));
    h.stop().await;
}

/// Issue 11, defect 7: environments beyond the guessed one. Debian's
/// python3 processes load C extensions from (a) a PYTHONPATH directory
/// that is no site-packages (`pip install --target`), (b) another
/// site-packages added to sys.path, and (c) a venv's site-packages added
/// with `sys.path.insert`. Every mapped extension must be named by the
/// distribution whose RECORD lists it (agreeing with what the interpreter
/// says it imported), and in (c) Debian's dist-packages stay installed.
/// The agent reads no environment: the PYTHONPATH below is the child's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_files_resolve_by_record_wherever_sys_path_put_them() {
    let dir = tempfile::tempdir().unwrap();
    let venv = new_venv(dir.path());
    let pip = venv.join("bin/pip");
    let simplejson = wheel(&pip, "simplejson==3.19.3");
    let yaml = wheel(&pip, "PyYAML==6.0.1");
    // (a) a plain directory, (b) a site-packages outside any venv, (c) the venv.
    let plain = dir.path().join("vendor");
    let other = dir.path().join("other/lib/python3.11/site-packages");
    let t = std::ffi::OsStr::new("--target");
    pip_install(&pip, &[t, plain.as_os_str(), simplejson.as_os_str()]);
    pip_install(&pip, &[t, other.as_os_str(), simplejson.as_os_str()]);
    pip_install(&pip, &[yaml.as_os_str()]);
    let venv_site = venv.join("lib/python3.11/site-packages");

    let said = |n: &str| dir.path().join(format!("said-{n}.json"));
    let a = spawn_ready(
        Command::new("/usr/bin/python3")
            .env("PYTHONPATH", &plain)
            .args([
                "-c",
                &format!("import simplejson._speedups\n{LOADED_EXTENSION_DISTS}"),
            ])
            .arg(said("a")),
    );
    let b = spawn_ready(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                &format!(
                    "import sys; sys.path.append({:?})\nimport simplejson._speedups\n{LOADED_EXTENSION_DISTS}",
                    other.to_str().unwrap()
                ),
            ])
            .arg(said("b")),
    );
    let c = spawn_ready(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                &format!(
                    "import sys; sys.path.insert(0, {:?})\nimport yaml\n{LOADED_EXTENSION_DISTS}",
                    venv_site.to_str().unwrap()
                ),
            ])
            .arg(said("c")),
    );
    let h = Harness::start().await;
    // (d) imports from the PYTHONPATH directory once the agent runs, so
    // eBPF sees its opens of simplejson's modules.
    let d = spawn_ready(
        Command::new("/usr/bin/python3")
            .env("PYTHONPATH", &plain)
            .args([
                "-c",
                "import sys, time, json; print('ready', flush=True); time.sleep(1); import simplejson\n\
                 json.dump(sorted(m.__cached__ for m in list(sys.modules.values()) if 'simplejson' in (getattr(m, '__cached__', None) or '')), open(sys.argv[1], 'w'))\n\
                 time.sleep(300)",
            ])
            .arg(said("d")),
    );
    h.sync().await;

    // Every check is made before any fails, so one run shows them all.
    let mut wrong = Vec::new();
    eprintln!("process  interpreter says  patchgap mapped  unresolved .so");
    for (name, p) in [("a", &a), ("b", &b), ("c", &c)] {
        let truth = interpreter_says(&said(name));
        let ours = mapped_pypi(&h, p.pid(), &truth).await;
        let missing = unresolved_under(&h, p.pid(), dir.path()).await;
        eprintln!("{name}        {truth:?}  {ours:?}  {missing:?}");
        assert!(!truth.is_empty(), "{name}");
        if ours != truth || !missing.is_empty() {
            wrong.push(format!(
                "{name}: {ours:?} != {truth:?}, unresolved {missing:?}"
            ));
        }
    }
    // (c) is Debian's python3: its own dist-packages are still on sys.path.
    let r = timeout(find(&h, "cryptography", "pypi", "")).await;
    if evidence_of(&r, c.pid()).as_deref() != Some("installed") {
        wrong.push("c: Debian's dist-packages dropped".into());
    }
    // The venv's PyYAML shadows Debian's for (c).
    let r = timeout(find(&h, "PyYAML", "pypi", "")).await;
    let versions: Vec<String> = r
        .matches
        .iter()
        .filter(|m| m.key.is_some_and(|k| k.pid == c.pid()))
        .map(|m| m.package.as_ref().unwrap().version.clone())
        .collect();
    if versions != ["6.0.1"] {
        wrong.push(format!("c: PyYAML {versions:?}"));
    }
    // (d): every module file eBPF saw it open under the PYTHONPATH
    // directory is named simplejson 3.19.3, and each one it imported was seen.
    if ebpf_wanted() {
        let deadline = Instant::now() + Duration::from_secs(15);
        let (imported, opened) = loop {
            let imported: Vec<String> = std::fs::read(said("d"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let names = vec!["simplejson".to_string()];
            let opened: std::collections::BTreeSet<String> = matches_of(&h, d.pid(), &names)
                .await
                .iter()
                .filter(|m| m.package.as_ref().unwrap().version == "3.19.3")
                .flat_map(|m| m.paths.iter())
                .filter(|p| p.evidence == "opened")
                .map(|p| String::from_utf8_lossy(&p.path).into_owned())
                .collect();
            let done = !imported.is_empty() && imported.iter().all(|f| opened.contains(f));
            if done || Instant::now() > deadline {
                break (imported, opened);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        eprintln!(
            "d        imported {} simplejson module files, patchgap names {} opened",
            imported.len(),
            imported.iter().filter(|f| opened.contains(*f)).count()
        );
        let missing: Vec<&String> = imported.iter().filter(|f| !opened.contains(*f)).collect();
        if imported.is_empty() || !missing.is_empty() {
            wrong.push(format!("d: opened but not named: {missing:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    drop((a, b, c, d));
    h.stop().await;
}
