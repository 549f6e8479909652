//! Issue 20, live: real containers started by the real runtimes of this
//! machine (Podman with runc; containerd through `ctr` in the `k8s.io`
//! namespace, shaped as the CRI plugin makes them), from an image built
//! offline (tests/runtimes/image.sh: debootstrap from the apt mirror, then
//! `podman import`; containerd gets it as an OCI archive). Each test asserts
//! what the agent reports for the container's process, through the
//! collector and the CLI: the name, the image, the digest, the owner where
//! one is known, the image's provenance labels, and a package of the
//! container's own root that the host does not have (busybox, run as the
//! container's process). An SBOM pushed for the Podman image's digest shows
//! up as `declared` evidence on that container's process.
//!
//! A test is skipped, with its reason printed, only when the runtime is not
//! installed here; CI installs both (tests/deps.sh). Everything a test
//! creates (containers, tasks, snapshots, images, a containerd it started)
//! is removed by Drop guards, also when an assertion fails.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use patchgap_tests::{Harness, built_bins};
use serde_json::Value;

/// The image tag tests/runtimes/image.sh builds.
const TAG: &str = "localhost/patchgap-test-debian:bookworm-2";
/// The provenance labels image.sh gives the image.
const REVISION: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const SOURCE: &str = "https://example.org/patchgap/test-image";
const CREATED: &str = "2026-12-01T00:00:00Z";
/// Podman with runc: crun refuses this hybrid cgroup layout, and without
/// the two ulimits its setrlimit is refused.
const PODMAN_RUN: &[&str] = &[
    "--runtime",
    "/usr/sbin/runc",
    "run",
    "-d",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Runs a command, fails the test with its output when it fails, and
/// returns its trimmed stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether `program` is on PATH (or at that path).
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn repo(rel: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", rel].iter().collect()
}

/// Builds (once per machine) or finds the test image; with `archive`, also
/// writes it there as an OCI archive.
fn image(archive: Option<&Path>) {
    let script = repo("tests/runtimes/image.sh");
    let mut args = vec![];
    if let Some(a) = archive {
        args = vec!["--oci-archive", a.to_str().unwrap()];
    }
    let tag = run(script.to_str().unwrap(), &args);
    assert_eq!(tag.lines().last(), Some(TAG));
}

/// Runs `patchgap ARGS --collector ADDR -o json`.
fn patchgap(addr: &str, args: &[&str]) -> Value {
    let out = Command::new(built_bins().join("patchgap"))
        .args(args)
        .args(["--collector", addr, "-o", "json"])
        .env_remove("PATCHGAP_COLLECTOR")
        .output()
        .expect("run patchgap");
    assert!(
        out.status.success(),
        "patchgap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("patchgap -o json")
}

/// The host's name as the agent reports it (workload keys carry it).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The matches of `patchgap query PACKAGE` for process `pid`.
fn matches_of(addr: &str, args: &[&str], pid: u32) -> Vec<Value> {
    let v = patchgap(addr, args);
    v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["pid"] == pid as u64)
        .cloned()
        .collect()
}

/// Asserts what the host itself does not have, so that a package found for
/// the container can only come from the container's root.
fn assert_host_lacks(package: &str) {
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"));
    assert!(
        !installed,
        "the host has {package}: the test could not tell roots apart"
    );
}

/// A Podman container, removed (with its storage) when dropped.
struct PodmanContainer {
    id: String,
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args([
                "--runtime",
                "/usr/sbin/runc",
                "rm",
                "-f",
                "-t",
                "0",
                &self.id,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A minimal CycloneDX 1.5 SBOM of the image: what its builder declares.
fn sbom(hello_version: &str) -> String {
    serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "container", "name": TAG}},
        "components": [{
            "type": "application",
            "name": "hello",
            "version": hello_version,
            "purl": format!("pkg:deb/debian/hello@{hello_version}?arch=amd64&distro=debian-12"),
        }],
    })
    .to_string()
}

/// Podman: `podman run` of the test image. Before issue 20 the workload was
/// `container:<host>/<short id>` with runtime podman and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_container_has_its_name_image_digest_provenance_own_packages_and_declared_sbom() {
    if !have("podman") || !Path::new("/usr/sbin/runc").exists() {
        eprintln!("podman or runc is not installed (tests/deps.sh installs them): skipped");
        return;
    }
    assert_host_lacks("busybox");
    assert_host_lacks("hello");
    image(None);
    let name = format!("patchgap-test-{}", std::process::id());
    let mut args = PODMAN_RUN.to_vec();
    args.extend(["--name", &name, TAG, "busybox", "sleep", "600"]);
    let ctr = PodmanContainer {
        id: run("podman", &args),
    };
    let pid: u32 = run("podman", &["inspect", "-f", "{{.State.Pid}}", &ctr.id])
        .parse()
        .expect("pid");
    // What Podman itself says, to compare with.
    let digest = run("podman", &["image", "inspect", "-f", "{{.Digest}}", TAG]);
    let image_id = run("podman", &["image", "inspect", "-f", "{{.Id}}", TAG]);
    let in_image = |package: &str| {
        run(
            "podman",
            &[
                "--runtime",
                "/usr/sbin/runc",
                "exec",
                &ctr.id,
                "dpkg-query",
                "-W",
                "-f",
                "${Version}",
                package,
            ],
        )
    };
    let (busybox, hello) = (in_image("busybox"), in_image("hello"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    let h = Harness::start().await;
    h.sync().await;
    let addr = h.addr.to_string();
    let sbom_dir = tempfile::tempdir().unwrap();
    let (workloads, own, pushed, declared) = tokio::task::spawn_blocking({
        let (digest, hello, sbom_path) = (
            digest.clone(),
            hello.clone(),
            sbom_dir.path().join("image.cdx.json"),
        );
        move || {
            let workloads = patchgap(&addr, &["workloads"]);
            let own = matches_of(&addr, &["query", "busybox"], pid);
            std::fs::write(&sbom_path, sbom(&hello)).unwrap();
            let pushed = patchgap(
                &addr,
                &[
                    "sbom",
                    "push",
                    "--image",
                    &digest,
                    sbom_path.to_str().unwrap(),
                ],
            );
            let declared = matches_of(&addr, &["query", "hello", "--evidence", "declared"], pid);
            (workloads, own, pushed, declared)
        }
    })
    .await
    .unwrap();
    h.stop().await;

    let key = format!("container:{}/{name}", hostname());
    let w = workloads["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == key.as_str())
        .unwrap_or_else(|| panic!("no workload {key} in {workloads:#}"));
    eprintln!("podman workload: {w}");
    assert_eq!(w["kind"], "container");
    assert_eq!(w["runtime"], "podman");
    assert_eq!(w["container"], name.as_str());
    assert_eq!(w["image"], TAG);
    assert_eq!(w["image_digest"], digest.as_str());
    assert_eq!(w["provenance"]["revision"], REVISION);
    assert_eq!(w["provenance"]["source"], SOURCE);
    assert_eq!(w["provenance"]["created"], CREATED);
    // A plain container has no owner.
    assert!(w["owner"].is_null(), "{w}");
    let _ = image_id;

    // The container's own busybox (its executable), at the image's version.
    assert!(!own.is_empty(), "busybox not found for pid {pid}");
    for m in &own {
        assert_eq!(m["package"]["version"], busybox.as_str(), "{m}");
        // Its executable, from the container's own dpkg database.
        assert_eq!(m["evidence"], "exe", "{m}");
        assert_eq!(m["exe"], "/usr/bin/busybox", "{m}");
    }
    // The SBOM joins the container by the image's digest.
    assert_eq!(pushed["outcome"], "added", "{pushed}");
    assert_eq!(
        declared.len(),
        1,
        "declared evidence for pid {pid}: {declared:?}"
    );
    assert_eq!(declared[0]["evidence"], "declared");
    assert_eq!(declared[0]["package"]["version"], hello.as_str());
}

#[allow(dead_code)]
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited 30 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[allow(dead_code)]
struct Killed(Child);
