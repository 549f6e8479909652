//! Helpers the `patchgap` binary's integration tests share: run it against
//! a collector with a token, and read what it said.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::process::{Command, Output};

use patchgap_tests::Harness;

/// Runs `patchgap ARGS --collector ADDR` with PATCHGAP_TOKEN set to
/// `token` (and no PATCHGAP_COLLECTOR from the environment).
pub fn patchgap_at(collector: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .args(["--collector", collector])
        .env_remove("PATCHGAP_COLLECTOR")
        .env("PATCHGAP_TOKEN", token)
        .output()
        .expect("run patchgap")
}

/// [`patchgap_at`] the harness's collector.
pub fn patchgap(h: &Harness, token: &str, args: &[&str]) -> Output {
    patchgap_at(&h.addr.to_string(), token, args)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
