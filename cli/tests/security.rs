//! Tokens and the audit log (issue 13) against a real collector that
//! requires tokens, through the real `patchgap` binary.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use patchgap_collector::{
    CollectorConfig, SqliteStore,
    auth::{Scope, TokenPolicy, issue_local},
};
use patchgap_tests::Harness;
use serde_json::Value;

/// Runs `patchgap ARGS --collector H` with `token` in PATCHGAP_TOKEN.
fn patchgap(h: &Harness, token: Option<&str>, args: &[&str]) -> Output {
    let addr = h.addr.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchgap"));
    cmd.args(args)
        .args(["--collector", &addr])
        .env_remove("PATCHGAP_COLLECTOR")
        .env_remove("PATCHGAP_TOKEN");
    if let Some(t) = token {
        cmd.env("PATCHGAP_TOKEN", t);
    }
    cmd.output().expect("run patchgap")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// A token minted the way `patchgap-collector token issue` does.
fn local_token(data_dir: &Path, scopes: &[Scope]) -> String {
    let store = SqliteStore::open(data_dir).unwrap();
    issue_local(
        data_dir,
        &store,
        "root",
        scopes,
        None,
        TokenPolicy::default(),
    )
    .unwrap()
    .0
}

fn testdata(rel: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "testdata", rel]
        .iter()
        .collect();
    p.display().to_string()
}

fn issue(h: &Harness, admin: &str, scope: &str, ttl: &str) -> (String, String) {
    let out = json(&patchgap(
        h,
        Some(admin),
        &[
            "token",
            "issue",
            "--subject",
            "t",
            "--scope",
            scope,
            "--ttl",
            ttl,
            "-o",
            "json",
        ],
    ));
    (
        out["token"].as_str().unwrap().to_string(),
        out["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_expire_revoke_and_resist_edits() {
    let h = Harness::start_with(CollectorConfig {
        require_tokens: true,
        ..Default::default()
    })
    .await;
    let admin = local_token(h.data_dir.path(), &[Scope::Admin]);

    // No token: Unauthenticated, with how to send one.
    let o = patchgap(&h, None, &["hosts"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs a token"), "{}", stderr(&o));

    // A read token queries, and cannot import, push or mint.
    let (read, _) = issue(&h, &admin, "read", "1h");
    json(&patchgap(&h, Some(&read), &["hosts", "-o", "json"]));
    json(&patchgap(
        &h,
        Some(&read),
        &["query", "libc6", "-o", "json"],
    ));
    let (ghsa, sbom) = (
        testdata("osv/ghsa"),
        testdata("sbom/cdxpy_pyenv311.cdx.json"),
    );
    let refused = [
        (vec!["advisories", "import", &ghsa], "`advisories`"),
        (
            vec![
                "sbom",
                "push",
                "--image",
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                &sbom,
            ],
            "`ingest-sbom`",
        ),
        (
            vec!["token", "issue", "--subject", "x", "--scope", "read"],
            "`admin`",
        ),
    ];
    for (args, scope) in &refused {
        let o = patchgap(&h, Some(&read), args);
        assert!(!o.status.success(), "{args:?} passed");
        assert!(
            stderr(&o).contains(&format!("needs the {scope} scope")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // An admin token alone cannot query either: no scope implies another.
    let o = patchgap(&h, Some(&admin), &["hosts"]);
    assert!(
        stderr(&o).contains("needs the `read` scope"),
        "{}",
        stderr(&o)
    );

    // One byte edited, anywhere in the body: refused.
    let mut forged = read.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let o = patchgap(&h, Some(std::str::from_utf8(&forged).unwrap()), &["hosts"]);
    assert!(
        stderr(&o).contains("not a valid patchgap token"),
        "{}",
        stderr(&o)
    );

    // Expired. Its life is long enough for one query on a loaded machine:
    // a 1 s token once expired before its first query.
    let (short, _) = issue(&h, &admin, "read", "5s");
    json(&patchgap(&h, Some(&short), &["hosts", "-o", "json"]));
    tokio::time::sleep(Duration::from_millis(6100)).await;
    let o = patchgap(&h, Some(&short), &["hosts"]);
    assert!(stderr(&o).contains("expired"), "{}", stderr(&o));

    // Revoked: refused by the very next call, well within a second.
    let (doomed, id) = issue(&h, &admin, "read", "1h");
    json(&patchgap(&h, Some(&doomed), &["hosts", "-o", "json"]));
    json(&patchgap(
        &h,
        Some(&admin),
        &["token", "revoke", &id, "-o", "json"],
    ));
    let revoked_at = Instant::now();
    let o = patchgap(&h, Some(&doomed), &["hosts"]);
    let after = revoked_at.elapsed();
    assert!(stderr(&o).contains("was revoked"), "{}", stderr(&o));
    assert!(after < Duration::from_secs(1), "{after:?}");
    let list = json(&patchgap(
        &h,
        Some(&admin),
        &["token", "list", "-o", "json"],
    ));
    let listed = list["tokens"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t["id"] == id && !t["revoked"].is_null())
    );

    // The refusals are in the audit log, and no entry holds a token.
    let tail = json(&patchgap(
        &h,
        Some(&admin),
        &["audit", "tail", "--limit", "1000", "-o", "json"],
    ));
    let entries = tail["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| {
        e["method"] == "Query/ImportAdvisories"
            && e["result"]
                .as_str()
                .unwrap()
                .starts_with("refused: PermissionDenied")
    }));
    assert!(!tail.to_string().contains(&read[12..40]));
    h.stop().await;
}

/// Runs `patchgap audit verify` and returns its exit code and stderr.
fn verify(h: &Harness, admin: &str) -> (i32, String) {
    let o = patchgap(h, Some(admin), &["audit", "verify"]);
    (o.status.code().unwrap(), stderr(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_edited_deleted_and_swapped_entry() {
    let h = Harness::start().await;
    let admin = local_token(h.data_dir.path(), &[Scope::Admin]);
    for _ in 0..12 {
        json(&patchgap(&h, None, &["hosts", "-o", "json"]));
    }
    assert_eq!(verify(&h, &admin), (0, String::new()));

    // Tamper as someone with the file would: past the triggers.
    let db = rusqlite::Connection::open(h.data_dir.path().join("patchgap.db")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();

    // 1. Edit entry 3.
    db.execute(
        "UPDATE audit SET subject = 'someone-else' WHERE seq = 3",
        [],
    )
    .unwrap();
    let (code, err) = verify(&h, &admin);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("entry 3 was edited"), "{err}");
    db.execute("UPDATE audit SET subject = 'anonymous' WHERE seq = 3", [])
        .unwrap();
    assert_eq!(verify(&h, &admin).0, 0);

    // 2. Delete entry 5 (and put it back).
    let row = "seq, time_ms, subject, scopes, peer, method, args, result, prev_hash, hash";
    db.execute_batch(&format!(
        "CREATE TABLE kept AS SELECT {row} FROM audit WHERE seq = 5; DELETE FROM audit WHERE seq = 5;"
    ))
    .unwrap();
    let (code, err) = verify(&h, &admin);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("entry 5 was deleted"), "{err}");
    db.execute_batch(&format!(
        "INSERT INTO audit ({row}) SELECT {row} FROM kept; DROP TABLE kept;"
    ))
    .unwrap();
    assert_eq!(verify(&h, &admin).0, 0);

    // 3. Swap entries 7 and 9.
    let swap = "UPDATE audit SET seq = -1 WHERE seq = 7; UPDATE audit SET seq = 7 WHERE seq = 9; \
                UPDATE audit SET seq = 9 WHERE seq = -1;";
    db.execute_batch(swap).unwrap();
    let (code, err) = verify(&h, &admin);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("entry 7 was reordered"), "{err}");
    db.execute_batch(swap).unwrap();

    // Untouched again: intact, and JSON says so.
    let out = json(&patchgap(
        &h,
        Some(&admin),
        &["audit", "verify", "-o", "json"],
    ));
    assert_eq!(out["intact"], true, "{out}");
    h.stop().await;
}

#[test]
fn store_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new").join("data");
    let store = SqliteStore::open(&dir).unwrap();
    drop(store);
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.clone()), 0o700);
    for f in ["patchgap.db", "patchgap.db-wal", "patchgap.db-shm"] {
        if dir.join(f).exists() {
            assert_eq!(mode(dir.join(f)), 0o600, "{f}");
        }
    }
    let store = SqliteStore::open(&dir).unwrap();
    issue_local(
        &dir,
        &store,
        "root",
        &[Scope::Admin],
        None,
        TokenPolicy::default(),
    )
    .unwrap();
    assert_eq!(mode(dir.join("patchgap.db-wal")), 0o600);
    assert_eq!(mode(dir.join("token-signing.key")), 0o600);
}
