//! Advisory and SBOM integrity (issue 13, part 5) against a real collector
//! that requires tokens, through the real `patchgap` binary: a forged
//! advisory (newer `modified`, emptied range, the id of a genuine OSV
//! record) cannot be imported without the `advisories` scope; with it, it
//! is refused as another source unless `--replace`, and a replace is
//! audited and hides the finding; `--replace --source osv-pypa` of the
//! genuine record restores it, and `advisories delete` removes a record and
//! its finding.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use patchgap_collector::{
    CollectorConfig, SqliteStore,
    auth::{Scope, TokenPolicy, issue_local},
};
use patchgap_tests::Harness;
use serde_json::{Value, json};

mod common;
use common::{patchgap, stderr};

const IMAGE: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";
const ID: &str = "PYSEC-2023-11";

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn ok(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    json_of(o)
}

fn local_token(data_dir: &Path) -> String {
    let store = SqliteStore::open(data_dir).unwrap();
    issue_local(
        data_dir,
        &store,
        "root",
        &[Scope::Admin],
        None,
        TokenPolicy::default(),
    )
    .unwrap()
    .0
}

fn issue(h: &Harness, admin: &str, subject: &str, scope: &str) -> String {
    let out = ok(&patchgap(
        h,
        admin,
        &[
            "token",
            "issue",
            "--subject",
            subject,
            "--scope",
            scope,
            "-o",
            "json",
        ],
    ));
    out["token"].as_str().unwrap().to_string()
}

fn sha256sum(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The advisory matches among the SBOM's packages: what every workload
/// running the image is exposed to (pushing the same document again stores
/// nothing and answers with the current verdicts).
fn findings(h: &Harness, ci: &str, sbom: &Path) -> u64 {
    let r = ok(&patchgap(
        h,
        ci,
        &[
            "sbom",
            "push",
            "--image",
            IMAGE,
            sbom.to_str().unwrap(),
            "-o",
            "json",
        ],
    ));
    r["matches"].as_u64().unwrap()
}

fn show(h: &Harness, token: &str) -> Value {
    let v = ok(&patchgap(
        h,
        token,
        &["advisories", "show", ID, "-o", "json"],
    ));
    v["advisories"][0]["provenance"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_advisory_is_scoped_audited_and_undone() {
    let h = Harness::start_with(CollectorConfig {
        require_tokens: true,
        ..Default::default()
    })
    .await;
    let admin = local_token(h.data_dir.path());
    let read = issue(&h, &admin, "reader", "read");
    let ci = issue(&h, &admin, "ci", "ingest-sbom,read");
    let feeds = issue(&h, &admin, "feeds", "advisories,read");
    let mallory = issue(&h, &admin, "mallory", "advisories");

    let dir = tempfile::tempdir().unwrap();
    let genuine: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "testdata",
        "osv",
        "pypa",
        "vulns",
        "cryptography",
        "PYSEC-2023-11.yaml",
    ]
    .iter()
    .collect();
    // cryptography 39.0.0: affected (fixed in 39.0.1).
    let sbom = dir.path().join("app.cdx.json");
    std::fs::write(
        &sbom,
        json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "version": 1,
            "metadata": {"component": {"type": "application", "bom-ref": "app", "name": "app", "version": "1.0"}},
            "components": [{
                "type": "library",
                "bom-ref": "cryptography==39.0.0",
                "name": "cryptography",
                "version": "39.0.0",
                "purl": "pkg:pypi/cryptography@39.0.0",
            }],
        })
        .to_string(),
    )
    .unwrap();
    // The forgery: the same id, a far newer `modified`, no affected range.
    let forged = dir.path().join("PYSEC-2023-11.json");
    std::fs::write(
        &forged,
        json!({
            "id": ID,
            "modified": "2099-01-01T00:00:00Z",
            "aliases": ["CVE-2023-23931"],
            "summary": "nothing to see",
            "affected": [{
                "package": {"ecosystem": "PyPI", "name": "cryptography"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0"}]}],
            }],
        })
        .to_string(),
    )
    .unwrap();

    // The genuine record, from a named source, by `feeds`.
    let imported = ok(&patchgap(
        &h,
        &feeds,
        &[
            "advisories",
            "import",
            genuine.to_str().unwrap(),
            "--source",
            "osv-pypa",
            "-o",
            "json",
        ],
    ));
    assert_eq!(imported["added"], 1, "{imported}");
    let p = show(&h, &read);
    assert_eq!(p["imported_by"], "feeds");
    assert_eq!(p["source"], "osv-pypa");
    assert_eq!(p["sha256"], sha256sum(&genuine));
    assert!(p["imported_at"].as_str().unwrap().starts_with("20"), "{p}");
    assert_eq!(findings(&h, &ci, &sbom), 1, "39.0.0 is affected");
    let listed = ok(&patchgap(&h, &read, &["sbom", "list", "-o", "json"]));
    assert_eq!(listed["sboms"][0]["provenance"]["imported_by"], "ci");
    assert_eq!(listed["sboms"][0]["provenance"]["source"], "app.cdx.json");
    assert_eq!(listed["sboms"][0]["provenance"]["sha256"], sha256sum(&sbom));

    // Without the `advisories` scope: refused, whatever the flags.
    for token in [&read, &ci] {
        let o = patchgap(
            &h,
            token,
            &[
                "advisories",
                "import",
                forged.to_str().unwrap(),
                "--replace",
                "--source",
                "osv-pypa",
            ],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("needs the `advisories` scope"),
            "{}",
            stderr(&o)
        );
        let o = patchgap(&h, token, &["advisories", "delete", ID]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("needs the `advisories` scope"));
    }
    assert_eq!(findings(&h, &ci, &sbom), 1);

    // With it, from another source: refused per record, exit 1.
    let o = patchgap(
        &h,
        &mallory,
        &[
            "advisories",
            "import",
            forged.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = json_of(&o);
    assert_eq!(r["refused"], 1, "{r}");
    assert_eq!(r["updated"], 0);
    let reason = r["errors"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("held from source \"osv-pypa\"")
            && reason.contains("--replace")
            && reason.contains("from \"unnamed\""),
        "{reason}"
    );
    assert_eq!(findings(&h, &ci, &sbom), 1, "the forgery changed nothing");

    // With --replace it goes in: audited, and the finding disappears.
    let r = ok(&patchgap(
        &h,
        &mallory,
        &[
            "advisories",
            "import",
            forged.to_str().unwrap(),
            "--replace",
            "--source",
            "mirror",
            "-o",
            "json",
        ],
    ));
    assert_eq!(r["updated"], 1, "{r}");
    assert_eq!(findings(&h, &ci, &sbom), 0, "the forgery hides the CVE");
    let p = show(&h, &read);
    assert_eq!(p["imported_by"], "mallory");
    assert_eq!(p["source"], "mirror");
    assert_eq!(p["sha256"], sha256sum(&forged));

    // The genuine record is older: refused without --replace...
    let o = patchgap(
        &h,
        &feeds,
        &[
            "advisories",
            "import",
            genuine.to_str().unwrap(),
            "--source",
            "osv-pypa",
            "-o",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_of(&o)["refused"], 1);
    // ...and restores the finding with it.
    let r = ok(&patchgap(
        &h,
        &feeds,
        &[
            "advisories",
            "import",
            genuine.to_str().unwrap(),
            "--replace",
            "--source",
            "osv-pypa",
            "-o",
            "json",
        ],
    ));
    assert_eq!(r["updated"], 1, "{r}");
    assert_eq!(findings(&h, &ci, &sbom), 1, "the genuine record is back");
    let p = show(&h, &read);
    assert_eq!(p["imported_by"], "feeds");
    assert_eq!(p["source"], "osv-pypa");
    assert_eq!(p["sha256"], sha256sum(&genuine));

    // Delete: the record and its finding go; a second delete fails.
    let d = ok(&patchgap(
        &h,
        &feeds,
        &["advisories", "delete", ID, "-o", "json"],
    ));
    assert_eq!(d["deleted"]["id"], ID, "{d}");
    assert_eq!(d["deleted"]["provenance"]["source"], "osv-pypa");
    assert_eq!(findings(&h, &ci, &sbom), 0, "deleted with its finding");
    let o = patchgap(&h, &read, &["advisories", "show", ID]);
    assert_eq!(o.status.code(), Some(1));
    let o = patchgap(&h, &feeds, &["advisories", "delete", ID]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no advisory has the id"),
        "{}",
        stderr(&o)
    );

    // The audit log has every step, under the token's subject.
    let tail = ok(&patchgap(
        &h,
        &admin,
        &["audit", "tail", "--limit", "1000", "-o", "json"],
    ));
    let entries = tail["entries"].as_array().unwrap();
    let has = |subject: &str, method: &str, result: &str, args: &str| {
        entries.iter().any(|e| {
            e["subject"] == subject
                && e["method"] == method
                && e["result"].as_str().unwrap().starts_with(result)
                && e["args"].as_str().unwrap().contains(args)
        })
    };
    assert!(
        has(
            "reader",
            "Query/ImportAdvisories",
            "refused: PermissionDenied",
            ""
        ),
        "{tail:#}"
    );
    assert!(has(
        "mallory",
        "Query/ImportAdvisories",
        "ok: 0 added, 0 updated, 0 unchanged, 0 older, 1 refused",
        "replace: false"
    ));
    assert!(
        has(
            "mallory",
            "Query/ImportAdvisories",
            "ok: 0 added, 1 updated",
            "source: \"mirror\", replace: true"
        ),
        "{tail:#}"
    );
    assert!(has(
        "feeds",
        "Query/ImportAdvisories",
        "ok: 0 added, 1 updated",
        "source: \"osv-pypa\", replace: true"
    ));
    assert!(has(
        "feeds",
        "Query/DeleteAdvisory",
        &format!("ok: deleted {ID}"),
        ID
    ));
    assert!(has("feeds", "Query/DeleteAdvisory", "NotFound", ID));
    assert!(has(
        "ci",
        "Query/DeleteAdvisory",
        "refused: PermissionDenied",
        ""
    ));
    h.stop().await;
}
