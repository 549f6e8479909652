//! `patchgap sbom` against a real collector and agent: every real SBOM in
//! testdata/sbom pushed and counted, the real OSV advisories matched against
//! their components, and a real process in a Docker-shaped container cgroup
//! running the image whose SBOM declares affected packages, with the chain
//! that pulled each one in. Hostile documents are refused with file,
//! position and reason, and change nothing.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use patchgap_agent::ScanConfig;
use patchgap_collector::CollectorConfig;
use patchgap_tests::{Cgroup, Harness, spawn_mapping, spawn_ready, write};
use serde_json::Value;

const PYENV_311: &str = "/root/.pyenv/versions/3.11.7/bin/python3.11";

fn testdata(rel: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "testdata", rel]
        .iter()
        .collect()
}

/// Runs `patchgap ARGS --collector ADDR -o json`: (JSON, success, stderr).
fn patchgap(addr: &str, args: &[&str]) -> (Value, bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .args(["--collector", addr, "-o", "json"])
        .env_remove("PATCHGAP_COLLECTOR")
        .output()
        .expect("run patchgap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "patchgap {args:?}: {e}: {}{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    (json, out.status.success(), stderr)
}

fn digest(tag: u32) -> String {
    format!("sha256:{tag:08x}{:056x}", 0xdec1_a7edu128)
}

/// The rows of testdata/sbom/expected.tsv: (file, components).
fn expected() -> Vec<(String, u64)> {
    std::fs::read_to_string(testdata("sbom/expected.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[3].parse().unwrap())
        })
        .collect()
}

/// (advisory id, PEP 503 package) pairs of live advisories the ground truth
/// says affect `where`.
fn ground_truth(place: &str) -> BTreeSet<(String, String)> {
    patchgap_tests::ground_truth(place)
        .live
        .into_iter()
        .map(|(id, package)| (id, patchgap_proto::purl::pep503(&package)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sboms_are_pushed_counted_matched_and_declared_for_the_workloads_running_the_image() {
    let run = std::process::id();
    let runtime_root = tempfile::tempdir().unwrap();
    let rt = runtime_root.path();
    // A Docker container (systemd cgroup driver) whose image reference
    // pins a digest: the image the pyenv 3.11.7 SBOM describes.
    let image = format!("sha256:{run:08x}{:056x}", 0x7e57_u128);
    let cid = format!("{:08x}{run:08x}{:048x}", 0x5b0b_u32, 0xfeed_u128);
    write(
        rt,
        &format!("/var/lib/docker/containers/{cid}/config.v2.json"),
        &serde_json::json!({
            "ID": cid,
            "Config": {
                "Image": format!("registry.example/ml/trainer@{image}"),
                "Labels": {"patchgap.io/data-classification": "sensitive"},
            },
            "Image": format!("sha256:{:064x}", 0xabc_u128),
            "Name": "/trainer",
        })
        .to_string(),
    );
    let cgroup = Cgroup::create(&format!("/system.slice/docker-{cid}.scope"));
    let trainer = spawn_mapping(Command::new("/usr/bin/sleep").arg("300"), "libc.so.6");
    cgroup.add(trainer.pid());

    let h = Harness::start_full(
        CollectorConfig::default(),
        ScanConfig {
            runtime_root: rt.to_path_buf(),
            ..Default::default()
        },
    )
    .await;
    h.sync().await;
    let addr = h.addr.to_string();

    let (pushed, refused, stored, findings, query, declared) = tokio::task::spawn_blocking({
        let image = image.clone();
        move || {
            let p = |args: &[&str]| patchgap(&addr, args);
            // The advisories first, so pushes report their matches.
            for dir in ["ghsa", "golang-vulndb/data", "pypa/vulns", "rustsec/crates"] {
                let (r, ok, err) = p(&["advisories", "import", testdata(&format!("osv/{dir}")).to_str().unwrap()]);
                assert!(ok, "{dir}: {r} {err}");
            }
            // Every real SBOM, each for its own image.
            let mut pushed = Vec::new();
            for (i, (file, _)) in expected().iter().enumerate() {
                let path = testdata(&format!("sbom/{file}"));
                let (r, ok, err) = p(&["sbom", "push", "--image", &digest(i as u32), path.to_str().unwrap()]);
                assert!(ok, "{file}: {err}");
                pushed.push((file.clone(), r));
            }
            // The trainer's image.
            let pyenv = testdata("sbom/cdxpy_pyenv311.cdx.json");
            let (r, ok, err) = p(&["sbom", "push", "--image", &image, pyenv.to_str().unwrap()]);
            assert!(ok, "{err}");
            assert_eq!(r["outcome"], "added");
            // Pushed again: unchanged.
            let (again, ok, _) = p(&["sbom", "push", "--image", &image, pyenv.to_str().unwrap()]);
            assert!(ok);
            assert_eq!(again["outcome"], "unchanged");
            pushed.push(("trainer".into(), r));

            // Hostile documents: refused with file, position and reason.
            let dir = tempfile::tempdir().unwrap();
            let truncated = dir.path().join("truncated.cdx.json");
            let doc = std::fs::read(&pyenv).unwrap();
            std::fs::write(&truncated, &doc[..doc.len() / 2]).unwrap();
            let xml_bomb = dir.path().join("bomb.cdx.xml");
            std::fs::write(
                &xml_bomb,
                "<?xml version=\"1.0\"?>\n<!DOCTYPE bom [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]>\n<bom xmlns=\"http://cyclonedx.org/schema/bom/1.5\"><components>&b;</components></bom>\n",
            )
            .unwrap();
            let huge = dir.path().join("huge.spdx.json");
            let f = std::fs::File::create(&huge).unwrap();
            f.set_len(65 << 20).unwrap();
            let mut refused = Vec::new();
            for bad in [&truncated, &xml_bomb, &huge] {
                let (_, ok, err) = p(&["sbom", "push", "--image", &image, bad.to_str().unwrap()]);
                assert!(!ok, "{} was accepted", bad.display());
                refused.push(err);
            }
            let (bad_digest, ok, _) = p(&["sbom", "push", "--image", "nginx:1.25", pyenv.to_str().unwrap()]);
            assert!(!ok && bad_digest.is_null());

            let (stored, ok, _) = p(&["sbom", "list", "--image", &image]);
            assert!(ok);
            let (findings, ok, _) = p(&["findings"]);
            assert!(ok);
            let (query, ok, _) = p(&["query", "--advisory", "PYSEC-2022-43012"]);
            assert!(ok);
            let (declared, ok, _) = p(&["query", "setuptools", "--evidence", "declared"]);
            assert!(ok);
            (pushed, refused, stored, findings, query, declared)
        }
    })
    .await
    .unwrap();

    // Counted: every document's components as an independent reading
    // found them, and the packages patchgap matches among them.
    let want = expected();
    for (i, (file, r)) in pushed.iter().enumerate().take(want.len()) {
        assert_eq!(r["sbom"]["components"], want[i].1, "{file}: {r}");
        let packages = r["sbom"]["packages"].as_u64().unwrap();
        assert!(packages > 0 && packages <= want[i].1, "{file}: {r}");
    }
    // Matched: the SBOMs of an interpreter or a binary this image has give
    // as many (advisory, package) matches as the ground truth has affected
    // pairs there (the trainer's findings below compare the pairs
    // themselves).
    let truth = ground_truth("pyenv_3.11.7");
    for (file, place) in [
        ("cdxpy_pyenv311.cdx.json", "pyenv_3.11.7"),
        ("trivy_rootfs_pyenv.cdx.json", "pyenv_3.11.7"),
        ("cdxpy_system_python3.cdx.json", "system_python3"),
        (
            "small/cdxpy_system_python3_sv1.4.cdx.json",
            "system_python3",
        ),
        ("small/cdxpy_system_python3_sv1.5.cdx.xml", "system_python3"),
        (
            "small/syft_terraform_gobinary.cdx.json",
            "/usr/local/bin/terraform",
        ),
        (
            "small/trivy_terraform_gobinary.cdx.json",
            "/usr/local/bin/terraform",
        ),
    ] {
        let r = &pushed.iter().find(|(f, _)| f == file).unwrap().1;
        let want = ground_truth(place).len();
        assert!(want > 0);
        assert_eq!(
            r["matches"].as_u64().unwrap() as usize,
            want,
            "{file} vs {place}: {r}"
        );
    }
    eprintln!("matches per SBOM:");
    for (file, r) in &pushed {
        eprintln!(
            "  {file}: {} components, {} packages, {} advisory matches",
            r["sbom"]["components"], r["sbom"]["packages"], r["matches"]
        );
    }

    // Refused with where and why; nothing stored changed.
    assert!(
        refused[0].contains("truncated.cdx.json:") && refused[0].contains(':'),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].to_lowercase().contains("doctype"),
        "{}",
        refused[1]
    );
    assert!(
        refused[2].contains("huge.spdx.json") && refused[2].contains("bytes"),
        "{}",
        refused[2]
    );
    let s = &stored["sboms"][0];
    assert_eq!(stored["sboms"].as_array().unwrap().len(), 1);
    assert_eq!(s["components"], 94);
    assert_eq!(s["packages"], 94);
    assert!(
        s["name"]
            .as_str()
            .unwrap()
            .ends_with("cdxpy_pyenv311.cdx.json")
    );

    // Declared: the trainer process runs the image, so it has the SBOM's
    // packages, with the chain that pulled each in.
    let pid = trainer.pid() as u64;
    let of_trainer = |v: &Value, key: &str| -> Vec<Value> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["pid"] == pid)
            .cloned()
            .collect()
    };
    let q = of_trainer(&query, "matches");
    assert_eq!(q.len(), 1, "{query:#}");
    let m = &q[0];
    assert_eq!(m["evidence"], "declared");
    assert_eq!(m["status"], "affected");
    assert_eq!(m["package"]["name"], "setuptools");
    assert_eq!(m["sbom_image"], image);
    let chain: Vec<&str> = m["pulled_in_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(chain.len() >= 2, "{chain:?}");
    assert_eq!(*chain.last().unwrap(), "setuptools@65.5.0");
    assert_eq!(m["workload_detail"]["image_digest"], image);
    assert_eq!(m["workload_detail"]["scope"]["classification"], "sensitive");
    let d = of_trainer(&declared, "matches");
    assert_eq!(d.len(), 1, "{declared:#}");
    assert_eq!(d[0]["package"]["version"], "65.5.0");

    // Findings: the trainer's exposures are exactly the ground truth's.
    let got: BTreeSet<(String, String)> = of_trainer(&findings, "findings")
        .iter()
        .map(|f| {
            assert_eq!(f["evidence"], "declared");
            (
                f["advisory"].as_str().unwrap().to_string(),
                patchgap_proto::purl::pep503(f["package"]["name"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, truth);

    // Incremental: an interpreter that starts after the import is a
    // finding at the next scan, with no re-import (its packages are matched
    // when its inventory is stored).
    // The image's pyenv 3.11.7 is the interpreter the SBOM describes.
    if patchgap_tests::image::has(PYENV_311) {
        let python = spawn_ready(Command::new(PYENV_311).args([
            "-c",
            "import time; print('ready', flush=True); time.sleep(120)",
        ]));
        h.sync().await;
        let addr = h.addr.to_string();
        let later = tokio::task::spawn_blocking(move || patchgap(&addr, &["findings"]).0)
            .await
            .unwrap();
        let pid = python.pid() as u64;
        let got: BTreeSet<(String, String)> = later["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["pid"] == pid)
            .map(|f| {
                (
                    f["advisory"].as_str().unwrap().to_string(),
                    patchgap_proto::purl::pep503(f["package"]["name"].as_str().unwrap()),
                )
            })
            .collect();
        assert_eq!(got, truth, "the interpreter's own packages, as the SBOM's");
        drop(python);
    }
    drop(trainer);
    drop(cgroup);
    h.stop().await;
}
