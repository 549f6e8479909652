//! `patchgap pki` and the CLI over https://, with the real binary: the PKI
//! it makes serves a TLS collector, `--ca` (or PATCHGAP_CA) lets the CLI in,
//! and an https:// URL without a CA fails with a message that says so.

use std::{path::Path, process::Output};

use patchgap_collector::{CollectorConfig, TlsFiles};

async fn patchgap(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_patchgap"));
    cmd.args(args)
        .env_remove("PATCHGAP_CA")
        .env_remove("PATCHGAP_COLLECTOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run patchgap")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_over_https_needs_the_ca_and_works_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    for args in [
        &["pki", "init", "--dir", d][..],
        &[
            "pki",
            "issue",
            "collector",
            "--dir",
            d,
            "--san",
            "localhost,127.0.0.1",
        ],
        &["pki", "issue", "agent", "--dir", d, "--host", "web-1"],
        &["pki", "issue", "cli", "--dir", d, "--name", "ops"],
    ] {
        let o = patchgap(args, &[]).await;
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    for f in ["ca", "collector", "agent-web-1", "cli-ops"] {
        assert!(Path::new(&dir.join(format!("{f}.key"))).exists(), "{f}.key");
    }
    // Again without --force: refused, and the key is kept.
    let o = patchgap(
        &["pki", "issue", "agent", "--dir", d, "--host", "web-1"],
        &[],
    )
    .await;
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "{}",
        text(&o)
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    // Under TLS every query needs a token: a `read` one, minted on the
    // collector's host from its data directory.
    let token = {
        let store = patchgap_collector::SqliteStore::open(data.path()).unwrap();
        patchgap_collector::auth::issue_local(
            data.path(),
            &store,
            "tls-test",
            &[patchgap_collector::auth::Scope::Read],
            None,
            Default::default(),
        )
        .unwrap()
        .0
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(patchgap_collector::run(
        CollectorConfig {
            data_dir: data.path().into(),
            tls: Some(TlsFiles {
                cert: dir.join("collector.crt"),
                key: dir.join("collector.key"),
                client_ca: dir.join("ca.crt"),
            }),
            ..Default::default()
        },
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("https://127.0.0.1:{port}");
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();

    let o = patchgap(
        &["hosts", "--collector", &url, "--ca", ca, "-o", "json"],
        &[("PATCHGAP_TOKEN", &token)],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    // Without the token: refused, and the message says what is missing.
    let o = patchgap(&["hosts", "--collector", &url, "--ca", ca], &[]).await;
    assert!(
        !o.status.success() && text(&o).contains("token"),
        "{}",
        text(&o)
    );
    // PATCHGAP_CA and a bare address: https.
    let bare = format!("127.0.0.1:{port}");
    let o = patchgap(
        &["hosts", "--collector", &bare],
        &[("PATCHGAP_CA", ca), ("PATCHGAP_TOKEN", &token)],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    // With a client certificate too.
    let (cert, key) = (dir.join("cli-ops.crt"), dir.join("cli-ops.key"));
    let o = patchgap(
        &[
            "hosts",
            "--collector",
            &url,
            "--ca",
            ca,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[("PATCHGAP_TOKEN", &token)],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));

    // No CA: a clear error, never plaintext.
    let o = patchgap(&["hosts", "--collector", &url], &[]).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--ca") && text(&o).contains("never falls back"),
        "{}",
        text(&o)
    );
    // Plaintext against the TLS port fails.
    let o = patchgap(
        &["hosts", "--collector", &format!("http://127.0.0.1:{port}")],
        &[],
    )
    .await;
    assert!(!o.status.success(), "{}", text(&o));

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
