//! The deploy gate end to end (issue 16, "Gate"): a real collector with
//! its HTTP listener, a real agent scanning a real process in a
//! Docker-shaped container cgroup whose image digest has an SBOM pushed,
//! GitHub's real GHSA-cx63-2mw6-8hw5 (setuptools before 70.0.0, HIGH)
//! imported, and an incident opened, planned and approved through the
//! real `patchgap` binary (tier 2: block_new_artifacts_with_package).
//! Then AdmissionReviews shaped as kube-apiserver sends them
//! (collector/src/response/gate/fixtures) go to `POST /v1/admission`
//! through curl, and `patchgap gate check` answers CI.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use patchgap_agent::ScanConfig;
use patchgap_collector::{CollectorConfig, SqliteStore, Store};
use patchgap_tests::{Cgroup, Harness, spawn_mapping, write};
use serde_json::{Value, json};

/// Runs `patchgap ARGS --collector ADDR`: (stdout, exit code, stderr).
fn patchgap(addr: &str, args: &[&str]) -> (String, i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .args(["--collector", addr])
        .env_remove("PATCHGAP_COLLECTOR")
        .output()
        .expect("run patchgap");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `patchgap ARGS -o json`, which must succeed.
fn patchgap_json(addr: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (out, code, err) = patchgap(addr, &all);
    assert_eq!(code, 0, "patchgap {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn fixture(name: &str, blocked: &str, clean: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "collector/src/response/gate/fixtures",
        &format!("{name}.json"),
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .replace("@@BLOCKED@@", blocked)
        .replace("@@CLEAN@@", clean)
}

/// POSTs an AdmissionReview with curl (a client that is not ours) and
/// returns the AdmissionReview answer.
fn admit(http: &str, body: &str) -> Value {
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "--max-time",
            "10",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            &format!("http://{http}/v1/admission"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    curl.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = curl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "curl: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A free loopback port for the HTTP listener (bound, then let go).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The image's SBOM: trainer@1.0 -> pip-tools@7.0.0 -> setuptools@65.5.0.
fn sbom() -> String {
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "component": {"bom-ref": "trainer", "type": "application", "name": "trainer", "version": "1.0"}
        },
        "components": [
            {"bom-ref": "pip-tools", "type": "library", "name": "pip-tools", "version": "7.0.0", "purl": "pkg:pypi/pip-tools@7.0.0"},
            {"bom-ref": "setuptools", "type": "library", "name": "setuptools", "version": "65.5.0", "purl": "pkg:pypi/setuptools@65.5.0"}
        ],
        "dependencies": [
            {"ref": "trainer", "dependsOn": ["pip-tools"]},
            {"ref": "pip-tools", "dependsOn": ["setuptools"]},
            {"ref": "setuptools", "dependsOn": []}
        ]
    })
    .to_string()
}

/// One live scene: a Docker-shaped container (systemd cgroup driver)
/// running an image whose SBOM pulls in setuptools 65.5.0, a collector
/// with its HTTP listener (and `policy`) and an agent, GitHub's real
/// GHSA-cx63-2mw6-8hw5 imported and the SBOM pushed. `salt` keeps the
/// digests and the container apart between the tests of this binary.
struct Scene {
    h: Harness,
    addr: String,
    http: String,
    blocked: String,
    clean: String,
    trainer: patchgap_tests::Proc,
    _cgroup: Cgroup,
    _runtime_root: tempfile::TempDir,
}

async fn scene(salt: u32, policy: Option<PathBuf>) -> Scene {
    let run = std::process::id();
    let blocked = format!("sha256:{run:08x}{salt:08x}{:048x}", 0x9a7e_u128);
    let clean = format!("sha256:{run:08x}{salt:08x}{:048x}", 0xc1ea_u128);
    let runtime_root = tempfile::tempdir().unwrap();
    let rt = runtime_root.path();
    let cid = format!("{:08x}{run:08x}{salt:08x}{:040x}", 0x6a7e_u32, 0xfeed_u128);
    write(
        rt,
        &format!("/var/lib/docker/containers/{cid}/config.v2.json"),
        &json!({
            "ID": cid,
            "Config": {"Image": format!("registry.example/ml/trainer@{blocked}"), "Labels": {}},
            "Image": format!("sha256:{:064x}", 0xabc_u128),
            "Name": "/trainer",
        })
        .to_string(),
    );
    let cgroup = Cgroup::create(&format!("/system.slice/docker-{cid}.scope"));
    let trainer = spawn_mapping(Command::new("/usr/bin/sleep").arg("300"), "libc.so.6");
    cgroup.add(trainer.pid());

    let http = free_port();
    let h = Harness::start_full(
        CollectorConfig {
            http_listen: Some(http),
            incident_refresh: Duration::from_millis(500),
            policy,
            ..CollectorConfig::default()
        },
        ScanConfig {
            runtime_root: rt.to_path_buf(),
            ..Default::default()
        },
    )
    .await;
    h.sync().await;
    let addr = h.addr.to_string();
    let (a, b) = (addr.clone(), blocked.clone());
    tokio::task::spawn_blocking(move || {
        let advisory: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "..",
            "testdata/osv/ghsa/GHSA-cx63-2mw6-8hw5.json",
        ]
        .iter()
        .collect();
        patchgap_json(&a, &["advisories", "import", advisory.to_str().unwrap()]);
        let sbom_file = tempfile::NamedTempFile::with_suffix(".cdx.json").unwrap();
        std::fs::write(sbom_file.path(), sbom()).unwrap();
        let pushed = patchgap_json(
            &a,
            &[
                "sbom",
                "push",
                "--image",
                &b,
                sbom_file.path().to_str().unwrap(),
            ],
        );
        assert_eq!(pushed["matches"], 1, "{pushed}");
    })
    .await
    .unwrap();
    Scene {
        h,
        addr,
        http: http.to_string(),
        blocked,
        clean,
        trainer,
        _cgroup: cgroup,
        _runtime_root: runtime_root,
    }
}

/// `patchgap incident open --advisory GHSA-cx63-2mw6-8hw5`: its id.
fn open_incident(addr: &str) -> String {
    let opened = patchgap_json(
        addr,
        &["incident", "open", "--advisory", "GHSA-cx63-2mw6-8hw5"],
    );
    opened["incident"]["id"]
        .as_str()
        .or(opened["id"].as_str())
        .unwrap()
        .to_string()
}

/// An AdmissionReview fixture sent to the webhook, checked for its
/// envelope; the `response`.
fn answer(http: &str, name: &str, blocked: &str, clean: &str) -> Value {
    let body = fixture(name, blocked, clean);
    let sent: Value = serde_json::from_str(&body).unwrap();
    let got = admit(http, &body);
    assert_eq!(got["apiVersion"], "admission.k8s.io/v1", "{name}: {got}");
    assert_eq!(got["kind"], "AdmissionReview", "{name}: {got}");
    assert_eq!(
        got["response"]["uid"], sent["request"]["uid"],
        "{name}: {got}"
    );
    got["response"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_reviews_and_gate_check_answer_from_a_real_incident() {
    let Scene {
        h,
        addr,
        http,
        blocked,
        clean,
        trainer,
        _cgroup,
        _runtime_root,
    } = scene(1, None).await;
    let run = std::process::id();
    let data_dir = h.data_dir.path().to_path_buf();

    tokio::task::spawn_blocking(move || {
        // Before any incident, nothing blocks the digest.
        let (out, code, err) = patchgap(&addr, &["gate", "check", "--image", &blocked]);
        assert_eq!(code, 0, "{out} {err}");

        // The existing flow: open, plan, approve (tier 2 for HIGH).
        let id = open_incident(&addr);
        let mut plan = Value::Null;
        for _ in 0..50 {
            plan = patchgap_json(&addr, &["incident", "plan", &id]);
            if plan["tier"] == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(plan["tier"], 2, "{plan}");
        assert!(
            plan.to_string()
                .contains("block_new_artifacts_with_package"),
            "{plan}"
        );
        // The deploy gate carries the block out: the plan says so.
        let block = gate_action(&plan);
        assert_eq!(block["executor"], "deploy_gate", "{plan}");
        assert_eq!(block["no_executor"], Value::Null, "{plan}");
        let hash = plan["hash"].as_str().unwrap().to_string();
        let approved = patchgap_json(&addr, &["incident", "approve", &id, "--plan", &hash]);
        let requested_at = gate_action(&approved)["requested_at"].clone();
        assert!(requested_at.is_string(), "{approved}");

        // Applied from the approval's commit (every decision since read
        // it), then verified by the gate's own decision on the incident's
        // digest, with its time to containment; the incident is contained.
        let shown = wait_for_gate_action(&addr, &id, |a| a["state"] == "verified");
        let block = gate_action(&shown);
        assert_eq!(block["applied_at"], requested_at, "{block}");
        assert!(block["verified_at"].is_string(), "{block}");
        assert!(
            block["time_to_containment_ms"].as_i64().unwrap() > 0,
            "{block}"
        );
        // (The verifier may have moved it on already.)
        assert!(
            matches!(shown["state"].as_str(), Some("contained" | "verifying")),
            "{shown}"
        );

        // The AdmissionReviews, each answered with its own uid.
        let answer = |name: &str| answer(&http, name, &blocked, &clean);
        let pod = answer("pod");
        assert_eq!(pod["allowed"], false, "{pod}");
        assert_eq!(pod["status"]["code"], 403);
        let message = pod["status"]["message"].as_str().unwrap();
        for want in [
            id.as_str(),
            "GHSA-cx63-2mw6-8hw5",
            "pkg:pypi/setuptools@65.5.0",
            "trainer@1.0 -> pip-tools@7.0.0 -> setuptools@65.5.0",
        ] {
            assert!(message.contains(want), "{want} not in {message}");
        }

        let deployment = answer("deployment-two-containers");
        assert_eq!(deployment["allowed"], false, "{deployment}");
        let message = deployment["status"]["message"].as_str().unwrap();
        assert!(message.contains("container trainer"), "{message}");
        assert!(!message.contains("container app"), "{message}");

        let system = answer("pod-kube-system");
        assert_eq!(system["allowed"], true, "{system}");

        let tag = answer("pod-tag-only");
        assert_eq!(tag["allowed"], true, "{tag}");
        assert!(
            tag["warnings"][0]
                .as_str()
                .unwrap()
                .contains("nginx:1.25 names no digest"),
            "{tag}"
        );

        // A dry run with a break-glass ticket: the same answer, no trace.
        let dry = answer("pod-dry-run");
        assert_eq!(dry["allowed"], true, "{dry}");
        assert!(
            dry["warnings"][0].as_str().unwrap().contains("SEC-9999"),
            "{dry}"
        );

        let glass = answer("deployment-break-glass");
        assert_eq!(glass["allowed"], true, "{glass}");
        assert!(
            glass["warnings"][0]
                .as_str()
                .unwrap()
                .starts_with("break-glass SEC-4242 (audited)"),
            "{glass}"
        );

        // The break-glass is an event of the incident, the dry run is not.
        let shown = patchgap_json(&addr, &["incident", "show", &id]);
        // The admissions, counted on the action: the Pod and the
        // Deployment denied, the break-glass overridden; kube-system, the
        // tag and the dry run are not the block's.
        let block = gate_action(&shown);
        assert_eq!(
            (
                &block["denied_admissions"],
                &block["overridden_admissions"],
                &block["would_deny_admissions"]
            ),
            (&json!(2), &json!(1), &json!(0)),
            "{block}"
        );
        let text = shown.to_string();
        assert!(text.contains("break-glass SEC-4242"), "{shown}");
        assert!(text.contains("bob@example.com"), "{shown}");
        assert!(!text.contains("SEC-9999"), "{shown}");
        // ...and in the audit log, once.
        let store = SqliteStore::open(&data_dir).unwrap();
        let audit: Vec<_> = store
            .audit_entries(0, 0, 10_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.method == "gate/break-glass")
            .collect();
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert!(audit[0].args.contains("ticket=SEC-4242"), "{audit:?}");
        assert_eq!(audit[0].subject, "bob@example.com");

        // CI: exit 3 on the blocked digest, 0 on a clean one, JUnit valid.
        let (out, code, err) = patchgap(&addr, &["gate", "check", "--image", &blocked]);
        assert_eq!(code, 3, "{out} {err}");
        assert!(
            out.contains("DENIED") && out.contains("GHSA-cx63-2mw6-8hw5"),
            "{out}"
        );
        let (out, code, err) = patchgap(&addr, &["gate", "check", "--image", &clean]);
        assert_eq!(code, 0, "{out} {err}");
        let (json_out, code, _) =
            patchgap(&addr, &["gate", "check", "--image", &blocked, "-o", "json"]);
        assert_eq!(code, 3);
        let v: Value = serde_json::from_str(&json_out).unwrap();
        assert_eq!(v["allowed"], false);
        assert_eq!(
            v["denied"][0]["chain"],
            json!(["trainer@1.0", "pip-tools@7.0.0", "setuptools@65.5.0"])
        );
        for (image, failures, want) in [(&blocked, "1", 3), (&clean, "0", 0)] {
            let (xml, code, _) =
                patchgap(&addr, &["gate", "check", "--image", image, "-o", "junit"]);
            assert_eq!(code, want);
            check_junit(&xml, failures);
        }
        let (_, code, err) = patchgap(&addr, &["gate", "check", "--image", "not-a@digest"]);
        assert_eq!(code, 1, "{err}");

        // --sbom: a document CI has, judged and not stored.
        let unpushed = format!("sha256:{run:08x}{:056x}", 0x5b0b_u128);
        let doc = tempfile::NamedTempFile::with_suffix(".cdx.json").unwrap();
        std::fs::write(doc.path(), sbom()).unwrap();
        let doc_path = doc.path().to_str().unwrap();
        let (out, code, err) = patchgap(
            &addr,
            &[
                "gate", "check", "--image", &unpushed, "--sbom", doc_path, "-o", "json",
            ],
        );
        assert_eq!(code, 3, "{out} {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["denied"][0]["advisory"], "GHSA-cx63-2mw6-8hw5", "{v}");
        assert_eq!(v["denied"][0]["via"], "sbom", "{v}");
        let fixed = sbom().replace("65.5.0", "70.0.0");
        std::fs::write(doc.path(), fixed).unwrap();
        let (out, code, err) = patchgap(
            &addr,
            &["gate", "check", "--image", &unpushed, "--sbom", doc_path],
        );
        assert_eq!(code, 0, "{out} {err}");
        std::fs::write(doc.path(), "{\"bomFormat\": \"CycloneDX\",").unwrap();
        let (_, code, err) = patchgap(
            &addr,
            &["gate", "check", "--image", &unpushed, "--sbom", doc_path],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(".cdx.json"), "{err}");
        let listed = patchgap_json(&addr, &["sbom", "list", "--image", &unpushed]);
        assert_eq!(listed["sboms"], json!([]), "not stored: {listed}");

        // Reverting the action lifts the block at once (the gate's cache
        // sees the incident's log grow).
        patchgap_json(&addr, &["incident", "revert", &id, "--reason", "resolved"]);
        let (out, code, err) = patchgap(&addr, &["gate", "check", "--image", &blocked]);
        assert_eq!(code, 0, "{out} {err}");
        let pod = answer("pod");
        assert_eq!(pod["allowed"], true, "{pod}");
        // ...and the revert is verified by the same decision.
        let shown = wait_for_gate_action(&addr, &id, |a| a["revert_verified_at"].is_string());
        let block = gate_action(&shown);
        assert_eq!(block["state"], "reverted", "{block}");
        assert_eq!(block["reason"], "resolved", "{block}");
    })
    .await
    .unwrap();
    drop(trainer);
    h.stop().await;
}

/// Shadow mode (issue 16's gate with a policy that says `mode =
/// "shadow"`): the block is requested automatically, the gate carries it
/// out by warning instead of denying (verified by that warning), and
/// every admission it would have denied is counted on the action and on
/// `/metrics`; a dry run is not an admission and is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_gate_actions_warn_and_count_what_they_would_deny() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("shadow.toml");
    std::fs::write(
        &policy,
        "[[tier]]\nnumber = 1\nname = \"high or critical\"\n\n[[tier.rule]]\nseverity = [\"high\", \"critical\"]\n\n[[tier.action]]\nkind = \"block_new_artifacts_with_package\"\nmode = \"shadow\"\napproval = \"auto\"\n",
    )
    .unwrap();
    let Scene {
        h,
        addr,
        http,
        blocked,
        clean,
        trainer,
        _cgroup,
        _runtime_root,
    } = scene(2, Some(policy)).await;
    tokio::task::spawn_blocking(move || {
        let id = open_incident(&addr);
        // The collector plans it and requests the automatic block; the
        // gate's shadow warning verifies it.
        let shown = wait_for_gate_action(&addr, &id, |a| a["state"] == "verified");
        let block = gate_action(&shown);
        assert_eq!((&block["mode"], &block["executor"]), (&json!("shadow"), &json!("deploy_gate")));
        assert_eq!(block["would_deny_admissions"], 0, "{block}");

        for n in 1..=3 {
            let pod = answer(&http, "pod", &blocked, &clean);
            assert_eq!(pod["allowed"], true, "shadow never denies: {pod}");
            let warning = pod["warnings"][0].as_str().unwrap();
            assert!(warning.starts_with("shadow (would deny)"), "{pod}");
            assert!(warning.contains(&id), "{pod}");
            let block = gate_action(&patchgap_json(&addr, &["incident", "show", &id]));
            assert_eq!(block["would_deny_admissions"], n, "{block}");
            assert_eq!(block["denied_admissions"], 0, "{block}");
        }
        // A dry run is answered the same and not counted.
        let dry = answer(&http, "pod-dry-run", &blocked, &clean);
        assert_eq!(dry["allowed"], true, "{dry}");
        let block = gate_action(&patchgap_json(&addr, &["incident", "show", &id]));
        assert_eq!(block["would_deny_admissions"], 3, "{block}");

        // /metrics says the same, by action and outcome.
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10"])
            .arg(format!("http://{http}/metrics"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = "patchgap_gate_admissions_total{action=\"block_new_artifacts_with_package\",outcome=\"would_deny\"} 3";
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    })
    .await
    .unwrap();
    drop(trainer);
    h.stop().await;
}

/// The incident's (or plan's) `block_new_artifacts_with_package` action.
fn gate_action(v: &Value) -> Value {
    find_gate_action(v).unwrap_or_else(|| panic!("no block action: {v}"))
}

fn find_gate_action(v: &Value) -> Option<Value> {
    v["actions"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .rfind(|a| a["kind"] == "block_new_artifacts_with_package")
        })
        .cloned()
}

/// `incident show ID -o json` once its block action satisfies `done`
/// (within 10 s).
fn wait_for_gate_action(addr: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = patchgap_json(addr, &["incident", "show", id]);
        // (The collector plans an incident by itself a moment after it
        // opens.)
        if find_gate_action(&shown).is_some_and(|a| done(&a)) {
            return shown;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the block action never got there: {shown}");
}

/// Parses JUnit XML with Python's xml.etree (a parser that is not ours)
/// and checks its counts.
fn check_junit(xml: &str, failures: &str) {
    let script = "import sys, xml.etree.ElementTree as ET\n\
        root = ET.fromstring(sys.stdin.read())\n\
        assert root.tag == 'testsuites', root.tag\n\
        suite = root.find('testsuite')\n\
        cases = suite.findall('testcase')\n\
        assert len(cases) == 1\n\
        print(suite.get('failures'), len(cases[0].findall('failure')))\n";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    py.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got.trim(), format!("{failures} {failures}"), "{xml}");
}

/// The webhook over HTTPS with the collector's own certificate (`patchgap
/// pki`), as kube-apiserver calls it: no client certificate, HTTP/1.1 or
/// HTTP/2, the CA as its caBundle. Plaintext to that port gets nothing,
/// and plaintext off loopback is refused before anything listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_serves_https_with_the_collectors_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    for args in [
        vec!["pki", "init", "--dir", pki_s],
        vec![
            "pki",
            "issue",
            "collector",
            "--dir",
            pki_s,
            "--san",
            "localhost,127.0.0.1",
        ],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_patchgap"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let tls = patchgap_collector::TlsFiles {
        cert: pki.join("collector.crt"),
        key: pki.join("collector.key"),
        client_ca: pki.join("ca.crt"),
    };

    // Plaintext off loopback: refused, naming the flag.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = patchgap_collector::serve(
        CollectorConfig {
            data_dir: dir.path().join("refused"),
            http_listen: Some("0.0.0.0:7374".parse().unwrap()),
            ..CollectorConfig::default()
        },
        std::sync::Arc::new(SqliteStore::open(&dir.path().join("refused")).unwrap()),
        listener,
        async {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("--http-listen") && refused.contains("plaintext"),
        "{refused}"
    );

    let http = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = dir.path().join("data");
    let store = std::sync::Arc::new(SqliteStore::open(&data).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patchgap_collector::serve(
        CollectorConfig {
            data_dir: data,
            tls: Some(tls),
            http_listen: Some(http),
            ..CollectorConfig::default()
        },
        store,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let ca = pki.join("ca.crt");
    let body = fixture(
        "pod",
        &format!("sha256:{:064x}", 1),
        &format!("sha256:{:064x}", 2),
    );
    let result = tokio::task::spawn_blocking(move || {
        let curl = |extra: &[&str], url: &str| {
            let mut c = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    "@-",
                ])
                .args(extra)
                .arg(url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            c.wait_with_output().unwrap()
        };
        let url = format!("https://localhost:{}/v1/admission", http.port());
        // The listener comes up with the server: wait for it.
        let mut out = curl(&["--cacert", ca.to_str().unwrap()], &url);
        for _ in 0..50 {
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = curl(&["--cacert", ca.to_str().unwrap()], &url);
        }
        for (name, extra) in [("http/1.1", "--http1.1"), ("h2", "--http2")] {
            let out = curl(
                &[
                    "--cacert",
                    ca.to_str().unwrap(),
                    extra,
                    "-w",
                    "\n%{http_version}",
                ],
                &url,
            );
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (json_text, version) = text.rsplit_once('\n').unwrap();
            let v: Value = serde_json::from_str(json_text).unwrap();
            assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
            assert_eq!(v["response"]["allowed"], true, "no incident: {v}");
            assert_eq!(version, if name == "h2" { "2" } else { "1.1" });
        }
        // A client that does not trust the CA, and plaintext, get nothing.
        assert!(!curl(&[], &url).status.success());
        let plain = curl(
            &[],
            &format!("http://127.0.0.1:{}/v1/admission", http.port()),
        );
        assert!(
            !plain.status.success()
                || !String::from_utf8_lossy(&plain.stdout).contains("AdmissionReview"),
            "plaintext answered"
        );
        // Not an AdmissionReview: 400 with the reason.
        let mut c = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "-",
                "-w",
                "%{http_code}",
                "--cacert",
                ca.to_str().unwrap(),
            ])
            .args(["--data-binary", "{\"kind\":\"Pod\"}", &url])
            .output()
            .unwrap();
        c.stdout.retain(|b| *b != b'\r');
        let text = String::from_utf8_lossy(&c.stdout).into_owned();
        assert!(
            text.ends_with("400") && text.contains("only admission.k8s.io/v1"),
            "{text}"
        );
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    result.unwrap();
}

/// `--http-client-cert`: only a client presenting a CLI certificate of the
/// client CA (what kube-apiserver presents through its AdmissionConfiguration
/// kubeconfig) is served; no certificate, or an agent's, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_can_require_a_cli_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    for args in [
        vec!["pki", "init", "--dir", pki_s],
        vec![
            "pki",
            "issue",
            "collector",
            "--dir",
            pki_s,
            "--san",
            "localhost",
        ],
        vec![
            "pki",
            "issue",
            "cli",
            "--dir",
            pki_s,
            "--name",
            "kube-apiserver",
        ],
        vec!["pki", "issue", "agent", "--dir", pki_s, "--host", "web-1"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_patchgap"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let http = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = dir.path().join("data");
    let store = std::sync::Arc::new(SqliteStore::open(&data).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patchgap_collector::serve(
        CollectorConfig {
            data_dir: data,
            tls: Some(patchgap_collector::TlsFiles {
                cert: pki.join("collector.crt"),
                key: pki.join("collector.key"),
                client_ca: pki.join("ca.crt"),
            }),
            http_listen: Some(http),
            http_client_cert: true,
            ..CollectorConfig::default()
        },
        store,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let body = fixture(
        "pod",
        &format!("sha256:{:064x}", 1),
        &format!("sha256:{:064x}", 2),
    );
    let result = tokio::task::spawn_blocking(move || {
        let url = format!("https://localhost:{}/v1/admission", http.port());
        let curl = |who: Option<&str>| {
            let mut c = Command::new("curl");
            c.args([
                "-sS",
                "--max-time",
                "10",
                "--data-binary",
                &body,
                "--cacert",
            ])
            .arg(pki.join("ca.crt"));
            if let Some(who) = who {
                c.arg("--cert")
                    .arg(pki.join(format!("{who}.crt")))
                    .arg("--key")
                    .arg(pki.join(format!("{who}.key")));
            }
            c.arg(&url).output().unwrap()
        };
        let mut out = curl(Some("cli-kube-apiserver"));
        for _ in 0..50 {
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = curl(Some("cli-kube-apiserver"));
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["response"]["allowed"], true, "{v}");
        for who in [None, Some("agent-web-1")] {
            let out = curl(who);
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("AdmissionReview"),
                "{who:?} was answered"
            );
        }
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    result.unwrap();
}
