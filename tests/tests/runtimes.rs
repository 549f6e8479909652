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

/// containerd for a test: the one running here (its socket answers), or
/// one this test starts with the default root and state (the agent looks
/// there) and its own socket, stopped when dropped. The CRI plugin is off:
/// the test makes its containers itself, as the plugin would.
struct Containerd {
    address: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let system = "/run/containerd/containerd.sock";
        if Path::new(system).exists()
            && Command::new("ctr")
                .args(["-a", system, "version"])
                .output()
                .is_ok_and(|o| o.status.success())
        {
            return Containerd {
                address: system.into(),
                child: None,
                _dir: dir,
            };
        }
        let address = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"/var/lib/containerd\"\nstate = \"/run/containerd\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                address.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            address: address.to_str().unwrap().into(),
            child: Some(child),
            _dir: dir,
        };
        wait_until("containerd to answer", || {
            Command::new("ctr")
                .args(["-a", &c.address, "version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        c
    }

    /// Runs `ctr -a ADDRESS -n k8s.io ARGS`.
    fn ctr(&self, args: &[&str]) -> String {
        let mut all = vec!["-a", &self.address, "-n", "k8s.io"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// The same, for cleanup: failures ignored.
    fn ctr_quiet(&self, args: &[&str]) {
        let _ = Command::new("ctr")
            .args(["-a", &self.address, "-n", "k8s.io"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM, so that it closes its database; the shims it started are gone by now.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The cgroup directories runc makes on the way to a container's cgroup
/// (`/kubepods/besteffort/pod<uid>` in every hierarchy) that were not there
/// before, removed innermost first when dropped; runc removes only the
/// container's own.
struct CgroupParents(Vec<PathBuf>);

impl CgroupParents {
    fn before(rel: &str) -> CgroupParents {
        let mut hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        hierarchies.retain(|h| h.join("cgroup.procs").exists());
        let mut missing = Vec::new();
        for h in hierarchies {
            let mut dir = h;
            for part in rel.trim_matches('/').split('/') {
                dir.push(part);
                if !dir.exists() {
                    missing.push(dir.clone());
                }
            }
        }
        CgroupParents(missing)
    }
}

impl Drop for CgroupParents {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A task, its container (and so its snapshot) and the imported image,
/// removed when dropped (before the containerd they live in).
struct CtrContainer<'a> {
    containerd: &'a Containerd,
    id: String,
}

impl Drop for CtrContainer<'_> {
    fn drop(&mut self) {
        // No assertion here: a panic while a failed test unwinds would abort.
        let c = self.containerd;
        c.ctr_quiet(&["task", "kill", "-s", "SIGKILL", &self.id]);
        // A killed task stays listed (STOPPED) until deleted; --force also
        // deletes one still running.
        for _ in 0..50 {
            c.ctr_quiet(&["task", "delete", "--force", &self.id]);
            let listed = Command::new("ctr")
                .args(["-a", &c.address, "-n", "k8s.io", "task", "ls", "-q"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&self.id))
                .unwrap_or(false);
            if !listed {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.ctr_quiet(&["container", "delete", &self.id]);
        c.ctr_quiet(&["image", "rm", "--sync", TAG]);
    }
}

/// containerd through `ctr` in the `k8s.io` namespace: a container with the
/// annotations the CRI plugin writes (io.kubernetes.cri.*) and the labels it
/// sets (io.cri-containerd.kind, io.kubernetes.pod.*), in a kubelet-shaped
/// cgroupfs path. Before issue 20 it had its pod and name but neither digest
/// nor image id nor provenance: the spec carries none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_container_has_its_pod_owner_image_digest_provenance_and_own_packages() {
    if !have("containerd") || !have("ctr") {
        eprintln!("containerd is not installed (tests/deps.sh installs it): skipped");
        return;
    }
    if !have("podman") {
        eprintln!("podman is not installed, and it builds the test image: skipped");
        return;
    }
    assert_host_lacks("busybox");
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = archive_dir.path().join("image.oci.tar");
    image(Some(&archive));
    let containerd = Containerd::start();
    containerd.ctr(&["image", "import", archive.to_str().unwrap()]);
    // What containerd itself says: REF TYPE DIGEST ...
    let listed = containerd.ctr(&["image", "ls"]);
    let digest = listed
        .lines()
        .find(|l| l.starts_with(TAG))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("{TAG} not in {listed}"))
        .to_string();

    let run_id = std::process::id();
    let id = format!("{run_id:08x}{:056x}", 0xc0ffee_u64);
    let sandbox = format!("{run_id:08x}{:056x}", 0x5a4d_b0c5_u64);
    let uid = format!("6f0d2c1e-4b7a-4e59-9c3d-{run_id:012x}");
    let pod = "web-6c8f7b9d4c-h7k2p";
    let _parents = CgroupParents::before(&format!("/kubepods/besteffort/pod{uid}"));
    // The pod's sandbox, as the CRI plugin makes it: the pod's labels are
    // its containerd labels, and nowhere else on the node.
    let sandbox_labels = [
        "io.cri-containerd.kind=sandbox".to_string(),
        "app=web".into(),
        "pod-template-hash=6c8f7b9d4c".into(),
        format!("io.kubernetes.pod.name={pod}"),
        "io.kubernetes.pod.namespace=shop".into(),
        format!("io.kubernetes.pod.uid={uid}"),
    ];
    let sandbox_annotations = [
        "io.kubernetes.cri.container-type=sandbox".to_string(),
        format!("io.kubernetes.cri.sandbox-id={sandbox}"),
        format!("io.kubernetes.cri.sandbox-name={pod}"),
        "io.kubernetes.cri.sandbox-namespace=shop".into(),
        format!("io.kubernetes.cri.sandbox-uid={uid}"),
    ];
    // The application container: the kubelet's labels, the plugin's annotations.
    let labels = [
        "io.cri-containerd.kind=container".to_string(),
        format!("io.kubernetes.pod.name={pod}"),
        "io.kubernetes.pod.namespace=shop".into(),
        format!("io.kubernetes.pod.uid={uid}"),
        "io.kubernetes.container.name=web".into(),
    ];
    let annotations = [
        "io.kubernetes.cri.container-type=container".to_string(),
        format!("io.kubernetes.cri.sandbox-id={sandbox}"),
        format!("io.kubernetes.cri.sandbox-name={pod}"),
        "io.kubernetes.cri.sandbox-namespace=shop".into(),
        format!("io.kubernetes.cri.sandbox-uid={uid}"),
        "io.kubernetes.cri.container-name=web".into(),
        format!("io.kubernetes.cri.image-name={TAG}"),
    ];
    let start = |id: &str, labels: &[String], annotations: &[String]| {
        let cgroup = format!("/kubepods/besteffort/pod{uid}/{id}");
        let mut args = vec!["run", "-d", "--cgroup", &cgroup];
        for l in labels {
            args.extend(["--label", l]);
        }
        for a in annotations {
            args.extend(["--annotation", a]);
        }
        args.extend([TAG, id, "busybox", "sleep", "600"]);
        let guard = CtrContainer {
            containerd: &containerd,
            id: id.to_string(),
        };
        containerd.ctr(&args);
        let mut pid = 0u32;
        wait_until("the task to run", || {
            pid = containerd
                .ctr(&["task", "ls"])
                .lines()
                .find(|l| l.starts_with(id))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            pid > 0
        });
        (guard, pid)
    };
    let (_sandbox, _) = start(&sandbox, &sandbox_labels, &sandbox_annotations);
    let (ctr, pid) = start(&id, &labels, &annotations);
    let busybox = run(
        "ctr",
        &[
            "-a",
            &containerd.address,
            "-n",
            "k8s.io",
            "task",
            "exec",
            "--exec-id",
            "dpkg",
            &id,
            "dpkg-query",
            "-W",
            "-f",
            "${Version}",
            "busybox",
        ],
    );

    let h = Harness::start().await;
    h.sync().await;
    let addr = h.addr.to_string();
    let (workloads, own) = tokio::task::spawn_blocking(move || {
        (
            patchgap(&addr, &["workloads"]),
            matches_of(&addr, &["query", "busybox"], pid),
        )
    })
    .await
    .unwrap();
    h.stop().await;
    drop(ctr);

    let key = "k8s:/shop/Deployment/web/web";
    let w = workloads["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == key)
        .unwrap_or_else(|| panic!("no workload {key} in {workloads:#}"));
    eprintln!("containerd workload: {w}");
    assert_eq!(w["kind"], "pod");
    assert_eq!(w["runtime"], "containerd");
    assert_eq!(w["namespace"], "shop");
    assert_eq!(w["container"], "web");
    assert_eq!(w["pods"], serde_json::json!([pod]));
    assert_eq!(w["owner"]["kind"], "Deployment");
    assert_eq!(w["owner"]["name"], "web");
    // From the pod-template-hash label of the sandbox, not from the name's pattern.
    assert_eq!(w["owner"]["source"], "label");
    assert_eq!(w["image"], TAG);
    assert_eq!(w["image_digest"], digest.as_str());
    assert_eq!(w["provenance"]["revision"], REVISION);
    assert_eq!(w["provenance"]["source"], SOURCE);
    assert_eq!(w["provenance"]["created"], CREATED);

    assert!(!own.is_empty(), "busybox not found for pid {pid}");
    for m in &own {
        assert_eq!(m["package"]["version"], busybox.as_str(), "{m}");
        assert_eq!(m["exe"], "/usr/bin/busybox", "{m}");
        assert_eq!(m["workload"], key, "{m}");
    }
}

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
