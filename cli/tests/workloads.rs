//! Workload attribution, live on this machine: real cgroups named like a
//! Kubernetes pod's container under containerd, a Docker container and a
//! systemd service; runtime metadata shaped as the runtimes write it under a
//! test runtime root; real processes with their own root and dpkg database;
//! and the `patchgap` binary asking the collector.

use std::{path::Path, process::Command};

use patchgap_agent::ScanConfig;
use patchgap_collector::CollectorConfig;
use patchgap_tests::{Cgroup, Harness, Proc, fixture_root, spawn_mapping, write};
use serde_json::Value;

fn patchgap(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .output()
        .expect("run patchgap");
    assert!(
        out.status.success(),
        "patchgap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A 64-hex container id unique to this test run.
fn container_id(tag: u32) -> String {
    format!("{tag:08x}{:08x}{:048x}", std::process::id(), 0xfeed_u128)
}

/// `chroot ROOT sleep` on a root with its own dpkg database.
fn sleeper_in(root: &Path) -> Proc {
    spawn_mapping(
        Command::new("chroot")
            .arg(root)
            .args(["/usr/bin/sleep", "300"]),
        root.join("usr/lib/x86_64-linux-gnu/libc.so.6")
            .to_str()
            .unwrap(),
    )
}

fn find<'a>(workloads: &'a Value, key: &str) -> &'a Value {
    workloads["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == key)
        .unwrap_or_else(|| panic!("no workload {key} in {workloads:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_containers_units_and_the_host_are_attributed() {
    let run = std::process::id();
    let runtime_root = tempfile::tempdir().unwrap();
    let rt = runtime_root.path();

    // A Kubernetes pod's container under containerd, systemd cgroup driver.
    let pod_uid = format!("0f8e9a36-5a2b-4c47-9d0e-{run:012x}");
    let pod_cid = container_id(1);
    let pod_name = "trainer-7d9f8b6c5d-x2x4z";
    write(
        rt,
        &format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{pod_cid}/config.json"),
        &serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/usr/bin/sleep", "300"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": "trainer",
                "io.kubernetes.cri.image-name": "registry.example/ml/trainer:2.1",
                "io.kubernetes.cri.sandbox-id": container_id(9),
                "io.kubernetes.cri.sandbox-name": pod_name,
                "io.kubernetes.cri.sandbox-namespace": "ml",
                "io.kubernetes.cri.sandbox-uid": pod_uid,
            },
            "linux": {"cgroupsPath": format!("kubepods-burstable-pod{}.slice:cri-containerd:{pod_cid}", pod_uid.replace('-', "_"))},
        })
        .to_string(),
    );
    let pod_cgroup = Cgroup::create(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{pod_cid}.scope",
        pod_uid.replace('-', "_")
    ));
    let pod_root = tempfile::tempdir().unwrap();
    fixture_root(pod_root.path(), "2.36-9+pod1");
    let pod_proc = sleeper_in(pod_root.path());
    pod_cgroup.add(pod_proc.pid());

    // A Docker container (systemd driver), with its scope in container labels.
    let docker_cid = container_id(2);
    write(
        rt,
        &format!("/var/lib/docker/containers/{docker_cid}/config.v2.json"),
        &serde_json::json!({
            "ID": docker_cid,
            "Created": "2026-11-28T06:40:00.000000000Z",
            "Path": "/usr/bin/sleep",
            "Args": ["300"],
            "Config": {
                "Hostname": &docker_cid[..12],
                "Image": "docker.io/library/nginx:1.25",
                "Labels": {"patchgap.io/data-classification": "internal", "patchgap.io/writes-to": "s3://logs"},
            },
            "Image": "sha256:4f67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100",
            "Name": "/web",
            "Driver": "overlay2",
        })
        .to_string(),
    );
    let docker_cgroup = Cgroup::create(&format!("/system.slice/docker-{docker_cid}.scope"));
    let docker_root = tempfile::tempdir().unwrap();
    fixture_root(docker_root.path(), "2.36-9+docker1");
    let docker_proc = sleeper_in(docker_root.path());
    docker_cgroup.add(docker_proc.pid());

    // A systemd service.
    let unit = format!("patchgap-test-{run}.service");
    let unit_cgroup = Cgroup::create(&format!("/system.slice/{unit}"));
    let unit_proc = spawn_mapping(Command::new("/usr/bin/sleep").arg("300"), "libc.so.6");
    unit_cgroup.add(unit_proc.pid());

    // Bad metadata: truncated JSON, a huge file, and a symlink out of the
    // runtime root. Each still yields a container workload, with a warning.
    let bad = [
        (container_id(3), "truncated"),
        (container_id(4), "huge"),
        (container_id(5), "escape"),
    ];
    let mut bad_cgroups = Vec::new();
    let mut bad_procs = Vec::new();
    for (cid, kind) in &bad {
        let path = rt.join(format!("var/lib/docker/containers/{cid}/config.v2.json"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match *kind {
            "truncated" => {
                std::fs::write(&path, r#"{"ID": "x", "Config": {"Image": "ngi"#).unwrap()
            }
            "huge" => std::fs::write(&path, vec![b' '; 5 << 20]).unwrap(),
            _ => std::os::unix::fs::symlink("../../../../../../../../etc/hostname", &path).unwrap(),
        }
        let cg = Cgroup::create(&format!("/system.slice/docker-{cid}.scope"));
        let p = spawn_mapping(Command::new("/usr/bin/sleep").arg("300"), "libc.so.6");
        cg.add(p.pid());
        bad_cgroups.push(cg);
        bad_procs.push(p);
    }

    let scope_map = runtime_root.path().join("scope.map");
    std::fs::write(
        &scope_map,
        format!("namespace=ml owner=Deployment/trainer => sensitive writes_to=s3://datasets\nunit={unit} => public\n"),
    )
    .unwrap();
    let h = Harness::start_full(
        CollectorConfig {
            scope_map: Some(scope_map.clone()),
            ..Default::default()
        },
        ScanConfig {
            runtime_root: rt.to_path_buf(),
            labels: [("cluster".to_string(), "test-cluster".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await;
    h.sync().await;
    let addr = h.addr.to_string();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();

    let (all, ml, pod_query, docker_query, sensitive_query) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let c = ["--collector", addr.as_str(), "-o", "json"];
            (
                patchgap(&[&["workloads"][..], &c].concat()),
                patchgap(
                    &[
                        &["workloads", "--namespace", "ml", "--scope", "sensitive"][..],
                        &c,
                    ]
                    .concat(),
                ),
                patchgap(&[&["query", "libc6@2.36-9+pod1"][..], &c].concat()),
                patchgap(&[&["query", "libc6", "--cluster", "test-cluster"][..], &c].concat()),
                patchgap(
                    &[
                        &["query", "libc6", "--scope", "sensitive", "--privileged"][..],
                        &c,
                    ]
                    .concat(),
                ),
            )
        }
    })
    .await
    .unwrap();

    // The pod: namespace, pod, owner Deployment, container, image, scope, privilege.
    let key = "k8s:test-cluster/ml/Deployment/trainer/trainer";
    let pod = find(&all, key);
    assert_eq!(pod["kind"], "pod");
    assert_eq!(pod["namespace"], "ml");
    assert_eq!(pod["pods"], serde_json::json!([pod_name]));
    assert_eq!(
        pod["owner"],
        serde_json::json!({"kind": "Deployment", "name": "trainer", "source": "inferred"})
    );
    assert_eq!(pod["container"], "trainer");
    assert_eq!(pod["runtime"], "containerd");
    assert_eq!(pod["image"], "registry.example/ml/trainer:2.1");
    assert!(
        pod["image_digest"].is_null(),
        "containerd's bundle has no digest: unknown, not guessed"
    );
    assert_eq!(pod["scope"]["classification"], "sensitive");
    assert_eq!(
        pod["scope"]["writes_to"],
        serde_json::json!(["s3://datasets"])
    );
    assert_eq!(pod["scope"]["source"], "mapping:1");
    assert_eq!(pod["privileged"], true, "root with every capability");
    assert!(pod["privilege"].as_str().unwrap().contains("root"), "{pod}");
    assert_eq!(pod["hosts"], serde_json::json!([hostname]));
    assert_eq!(pod["processes"], 1);
    // Filters.
    let keys: Vec<&str> = ml["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [key]);

    // The pod's package versions are its root's, not the host's.
    let m: Vec<&Value> = pod_query["matches"].as_array().unwrap().iter().collect();
    assert_eq!(m.len(), 1, "{pod_query:#}");
    assert_eq!(m[0]["pid"], pod_proc.pid());
    assert_eq!(m[0]["workload"], key);
    assert_eq!(m[0]["workload_detail"]["namespace"], "ml");
    assert_eq!(m[0]["package"]["version"], "2.36-9+pod1");
    let s: Vec<u64> = sensitive_query["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(s, [u64::from(pod_proc.pid())]);

    // The Docker container.
    let web = find(&all, &format!("container:{hostname}/web"));
    assert_eq!(web["kind"], "container");
    assert_eq!(web["runtime"], "docker");
    assert_eq!(web["image"], "docker.io/library/nginx:1.25");
    assert_eq!(web["scope"]["classification"], "internal");
    assert_eq!(web["scope"]["writes_to"], serde_json::json!(["s3://logs"]));
    let dm = docker_query["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["pid"] == docker_proc.pid())
        .unwrap();
    assert_eq!(dm["package"]["version"], "2.36-9+docker1");

    // The systemd service.
    let svc = find(&all, &format!("unit:{unit}"));
    assert_eq!(
        (
            svc["kind"].as_str(),
            svc["scope"]["classification"].as_str()
        ),
        (Some("systemd"), Some("public"))
    );

    // This machine's /process_api/<32 hex> cgroup is the host, not a container.
    let host = find(&all, &format!("host:{hostname}"));
    assert_eq!(host["kind"], "host");
    let me = docker_query["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["pid"] == std::process::id())
        .unwrap();
    assert_eq!(me["workload"], format!("host:{hostname}"));

    // Bad metadata: a workload with what is known, and a warning each.
    for (cid, kind) in &bad {
        let w = find(&all, &format!("container:{hostname}/{}", &cid[..12]));
        assert_eq!(w["kind"], "container", "{kind}");
        assert_eq!(w["metadata_warnings"], 1, "{kind}: {w}");
        assert!(
            w["image"] == "",
            "{kind}: nothing read from the bad file, nor from /etc/hostname: {w}"
        );
    }

    // A broken mapping file keeps the previous mapping in force and says so.
    std::fs::write(
        &scope_map,
        "namespace=ml => sensitive\nthis is not a rule\n",
    )
    .unwrap();
    let again = tokio::task::spawn_blocking(move || {
        patchgap(&["workloads", "--collector", &addr, "-o", "json"])
    })
    .await
    .unwrap();
    assert!(
        again["scope_map_error"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{again}"
    );
    assert_eq!(
        find(&again, key)["scope"]["source"],
        "mapping:1",
        "the previous mapping stays"
    );

    drop((pod_proc, docker_proc, unit_proc, bad_procs));
    h.stop().await;
}
