//! Plaintext only on loopback: the real `patchgap-collector` refuses to
//! start on another address without TLS, says how to set TLS up, and
//! `--insecure-plaintext` overrides it with a warning.

use std::process::Command;

#[test]
fn plaintext_off_loopback_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("0.0.0.0:0") && err.contains("patchgap pki init"),
        "{err}"
    );
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-plaintext"),
        "{err}"
    );
    // Refused before opening the store.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[test]
fn the_rule_itself() {
    use patchgap_collector::check_listen;
    let lo = "127.0.0.1:7373".parse().unwrap();
    let lo6 = "[::1]:7373".parse().unwrap();
    let any = "0.0.0.0:7373".parse().unwrap();
    assert_eq!(check_listen(lo, false, false), Ok(None));
    assert_eq!(check_listen(lo6, false, false), Ok(None));
    assert_eq!(check_listen(any, true, false), Ok(None));
    assert!(check_listen(any, false, false).is_err());
    assert!(
        check_listen(any, false, true)
            .unwrap()
            .unwrap()
            .contains("PLAINTEXT")
    );
}

#[test]
fn plaintext_http_off_loopback_is_refused_at_start_too() {
    let data = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--http-listen")
            && err.contains("0.0.0.0:0")
            && err.contains("patchgap pki init"),
        "{err}"
    );
    // Refused before opening the store.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}
