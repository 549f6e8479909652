//! `patchgap-agent scan`, the command a responder runs on a host: it prints
//! the inventory the scanner makes, whole, and on this host it finds this
//! test with its C library resolved to the version dpkg reports.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use patchgap_agent::{
    ScanConfig, Scanner,
    fixture::{ProcTemplate, TreeSpec, write_proc_tree},
};
use serde_json::Value;

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_patchgap-agent"))
}

/// Runs `patchgap-agent scan ARGS` and parses its stdout.
fn scan_command(args: &[&str]) -> Value {
    let out = Command::new(agent())
        .arg("scan")
        .args(args)
        .output()
        .expect("run patchgap-agent scan");
    assert!(
        out.status.success(),
        "patchgap-agent scan failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout.last(),
        Some(&b'\n'),
        "the inventory ends with a newline"
    );
    serde_json::from_slice(&out.stdout).expect("the scan prints JSON")
}

/// The fields that differ between two scans of the same tree: when and
/// at what cost each ran.
fn without_timing(mut inv: Value) -> Value {
    let obj = inv.as_object_mut().expect("an inventory is an object");
    obj.remove("scanned_at_ms");
    obj.remove("stats");
    inv
}

/// The command prints exactly what the library's scanner finds in the same
/// synthetic /proc (processes, artifacts resolved against this host's dpkg
/// database, sockets from the `fd` links and `net` tables, workloads).
#[test]
fn the_scan_command_prints_what_the_scanner_finds() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    let me = ProcTemplate::capture(Path::new("/proc"), std::process::id())
        .unwrap()
        .expect("this process has an executable");
    let pids = write_proc_tree(&proc_root, &TreeSpec::new(40, vec![me])).unwrap();

    let printed = scan_command(&["--proc-root", proc_root.to_str().unwrap()]);
    let inv = Scanner::new(ScanConfig {
        proc_root: proc_root.clone(),
        labels: BTreeMap::new(),
        ..ScanConfig::default()
    })
    .scan();
    assert_eq!(
        printed["stats"]["processes"].as_u64(),
        Some(pids.len() as u64)
    );
    let processes = printed["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), pids.len());
    let sockets: usize = processes
        .iter()
        .map(|p| p["sockets"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(sockets > 0, "the tree's sockets are found");
    let resolved = processes
        .iter()
        .flat_map(|p| p["artifacts"].as_array().cloned().unwrap_or_default())
        .filter(|a| !a["package"].is_null())
        .count();
    assert!(resolved > 0, "mapped files resolve to packages");
    assert_eq!(
        without_timing(printed),
        without_timing(serde_json::to_value(&inv).unwrap())
    );
}

/// On this host the command finds this test process and names the package
/// of the C library it maps, at the version dpkg reports.
#[test]
fn the_scan_command_finds_this_process_and_its_libc() {
    let dpkg = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "libc6"])
        .output()
        .expect("dpkg-query");
    assert!(dpkg.status.success(), "libc6 is installed");
    let libc6 = String::from_utf8(dpkg.stdout).unwrap();

    let printed = scan_command(&[]);
    let me = u64::from(std::process::id());
    let processes = printed["processes"].as_array().expect("processes");
    assert!(processes.len() > 1, "more than this process");
    let this = processes
        .iter()
        .find(|p| p["pid"].as_u64() == Some(me))
        .expect("this test process is in the inventory");
    let libc = this["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| {
            a["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/libc.so.6"))
        })
        .expect("libc.so.6 is mapped");
    assert_eq!(libc["package"]["name"], "libc6", "{libc}");
    assert_eq!(libc["package"]["version"], libc6.as_str(), "{libc}");
}
