//! `patchgap advisories` against a real collector, with the real OSV files
//! in testdata/osv (GHSA, Go vulndb, PyPA YAML and its JSON derivation,
//! RustSec, Ubuntu).

use std::{path::PathBuf, process::Command};

use patchgap_tests::Harness;
use serde_json::Value;

fn patchgap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .env_remove("PATCHGAP_COLLECTOR")
        .output()
        .expect("run patchgap")
}

fn osv(rel: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "testdata", "osv", rel]
        .iter()
        .collect();
    p.display().to_string()
}

/// Runs `patchgap advisories ARGS -o json` and returns its JSON and whether
/// it succeeded.
fn advisories(h: &Harness, args: &[&str]) -> (Value, bool) {
    let addr = h.addr.to_string();
    let mut all = vec!["advisories"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--collector", &addr, "-o", "json"]);
    let out = patchgap(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "patchgap {all:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.success())
}

fn counts(v: &Value) -> [u64; 5] {
    ["added", "updated", "unchanged", "older", "withdrawn"].map(|k| v[k].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_import_idempotently_resolve_every_alias_and_refuse_bad_files() {
    let h = Harness::start().await;
    // The _eval.json files beside them are the data set's own notes, not
    // advisories.
    let sources = [
        "ghsa",
        "golang-vulndb/data",
        "pypa/vulns",
        "rustsec/crates",
        "ubuntu",
    ];
    let mut added = 0;
    for s in sources {
        let (r, ok) = advisories(&h, &["import", &osv(s)]);
        assert!(ok, "{s}: {r}");
        assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{s}: {r}");
        added += r["added"].as_u64().unwrap();
    }
    // The 364 advisories of shared/data/osv (see its PROVENANCE.md).
    assert_eq!(added, 364);
    let (list, _) = advisories(&h, &["list"]);
    assert_eq!(list["advisories"].as_array().unwrap().len(), 364);

    // Again: nothing changes. PyPA's JSON derivation of its YAML is the same
    // advisories with the same `modified`: unchanged too.
    let (r, ok) = advisories(&h, &["import", &osv("ghsa")]);
    assert!(ok);
    assert_eq!(counts(&r), [0, 0, 8, 0, 0]);
    let (r, ok) = advisories(&h, &["import", &osv("pypa-json-derived/vulns")]);
    assert!(ok, "{r}");
    assert_eq!(counts(&r), [0, 0, 88, 0, 0]);

    // Every alias names the same advisory.
    let (a, ok) = advisories(&h, &["show", "CVE-2023-23931"]);
    assert!(ok, "{a}");
    let a = &a["advisories"][0];
    assert_eq!(a["id"], "PYSEC-2023-11");
    assert!(a["document"].as_str().unwrap().contains("cryptography"));
    for alias in a["aliases"].as_array().unwrap() {
        let (b, ok) = advisories(&h, &["show", alias.as_str().unwrap()]);
        assert!(ok);
        let ids: Vec<&str> = b["advisories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"PYSEC-2023-11"), "{alias}: {ids:?}");
    }
    let (pypi, _) = advisories(&h, &["list", "--ecosystem", "pypi"]);
    let pypi = pypi["advisories"].as_array().unwrap();
    assert!(pypi.len() >= 88, "{}", pypi.len());
    assert!(pypi.iter().all(|x| {
        x["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["ecosystem"] == "pypi")
    }));

    // A newer record replaces the stored one and a withdrawal is honoured;
    // an older one is left out.
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(osv("ghsa/GHSA-2vj5-px25-gjrp.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&original).unwrap();
    doc["modified"] = "2099-01-01T00:00:00Z".into();
    doc["withdrawn"] = "2099-01-01T00:00:00Z".into();
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, doc.to_string()).unwrap();
    let (r, ok) = advisories(&h, &["import", newer.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(counts(&r), [0, 1, 0, 0, 1]);
    let (shown, _) = advisories(&h, &["show", "GHSA-2vj5-px25-gjrp"]);
    assert_eq!(shown["advisories"][0]["withdrawn"], "2099-01-01T00:00:00Z");
    let (r, _) = advisories(&h, &["import", &osv("ghsa/GHSA-2vj5-px25-gjrp.json")]);
    assert_eq!(counts(&r), [0, 0, 0, 1, 0]);

    // Hostile input: each bad file is refused with its name, position and
    // reason, the command fails, and nothing stored is lost.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("truncated.json"), &original[..original.len() / 2]).unwrap();
    let wrong = original.replacen("\"affected\": [", "\"affected\": {\"x\": [", 1);
    std::fs::write(bad.join("wrong-type.json"), &wrong).unwrap();
    std::fs::write(bad.join("huge.json"), vec![b' '; 17 << 20]).unwrap();
    std::fs::write(bad.join("bomb.yaml"), "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n").unwrap();
    let (r, ok) = advisories(&h, &["import", bad.to_str().unwrap()]);
    assert!(!ok, "a failed import exits non-zero");
    assert_eq!(counts(&r), [0, 0, 0, 0, 0]);
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4, "{r}");
    for e in errors {
        let file = e["file"].as_str().unwrap();
        assert!(file.contains("/bad/"), "{e}");
        assert!(!e["reason"].as_str().unwrap().is_empty(), "{e}");
        if !file.ends_with("huge.json") {
            assert!(
                e["position"].as_str().unwrap().contains(':'),
                "a parse error says where: {e}"
            );
        }
    }
    let (list, _) = advisories(&h, &["list"]);
    assert_eq!(list["advisories"].as_array().unwrap().len(), 364);
    let addr = h.addr.to_string();
    let out = patchgap(&["advisories", "show", "CVE-1999-0001", "--collector", &addr]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no advisory is known as CVE-1999-0001"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.stop().await;
}
