//! Assets of the machine image the testdata was taken from: pyenv's
//! interpreters under /root/.pyenv, terraform and the docker CLI under
//! /usr/local/bin. Tests compare what the agent reports for them against
//! what `pip list` and `go version -m` printed on that image (testdata/).
//!
//! A fresh machine (the README's set-up on a bare Debian 12) does not have
//! them, and no package installs them. There a test that needs one says so
//! and returns. CI runs on a machine of the image's kind and sets
//! `PATCHGAP_REQUIRE_IMAGE=1`: there a missing asset fails the test, so
//! these tests cannot silently stop testing.
//!
//! One file, included with `#[path]` by every crate's tests that need it.

use std::path::Path;

/// Whether `path`, an asset of the image, is here. When it is not: a
/// panic under `PATCHGAP_REQUIRE_IMAGE=1`, otherwise a line saying what is
/// skipped and `false`.
#[allow(dead_code)]
pub fn has(path: &str) -> bool {
    present(path, path)
}

/// Whether this machine is the image the testdata was taken from, for a
/// test that compares against a fact of the image's whole package set
/// (what a Debian python's dist-packages or node's global packages hold
/// there), `what`. The image's pyenv 3.11.7 is its mark; the same
/// `PATCHGAP_REQUIRE_IMAGE=1` rule applies.
#[allow(dead_code)]
pub fn is_the_image(what: &str) -> bool {
    present("/root/.pyenv/versions/3.11.7", what)
}

fn present(path: &str, what: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var_os("PATCHGAP_REQUIRE_IMAGE").is_some_and(|v| v == "1") {
        panic!(
            "{path} is missing, and PATCHGAP_REQUIRE_IMAGE=1 says this machine is the image's kind"
        );
    }
    eprintln!(
        "skipped: {what} (not on this machine: {path} is the image's, which the testdata was taken from)"
    );
    false
}
