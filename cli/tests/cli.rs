//! The `patchgap` binary against a real collector and agent on this host.

use std::{collections::BTreeSet, process::Command};

use patchgap_tests::{Harness, dpkg_version};
use serde_json::Value;

fn patchgap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .env_remove("PATCHGAP_COLLECTOR")
        .output()
        .expect("run patchgap")
}

/// Pids whose maps name libc, the way `grep -l libc.so /proc/*/maps` does.
fn pids_mapping_libc() -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/maps"))
                .is_ok_and(|m| m.windows(7).any(|w| w == b"libc.so"))
        })
        .collect()
}

/// The (major, minor, inode) of this root's libc, as /proc/PID/maps shows
/// a mapped file's device and inode.
fn this_roots_libc() -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let dev = md.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor, md.ino())
}

/// Whether `pid` maps the file with that (major, minor, inode).
fn maps_file(pid: u32, (major, minor, ino): (u64, u64, u64)) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return false;
    };
    maps.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some((ma, mi)) = f.get(3).and_then(|d| d.split_once(':')) else {
            return false;
        };
        u64::from_str_radix(ma, 16) == Ok(major)
            && u64::from_str_radix(mi, 16) == Ok(minor)
            && f.get(4).and_then(|i| i.parse::<u64>().ok()) == Some(ino)
    })
}

#[test]
fn unreachable_collector_is_one_actionable_line() {
    let out = patchgap(&["query", "libc6", "--collector", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the collector at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("patchgap up"), "{err}");
}

#[test]
fn bad_constraint_names_the_bad_part() {
    let out = patchgap(&["query", "libc6@>=2.36,<<<3", "--collector", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("part 2") && err.contains("<<<"), "{err}");
    // Checked before any network access: the unreachable collector is not mentioned.
    assert!(!err.contains("cannot reach"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_libc6_lists_every_process_that_maps_libc() {
    let before = pids_mapping_libc();
    let h = Harness::start().await;
    h.sync().await;
    let addr = h.addr.to_string();
    let out = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || patchgap(&["query", "libc6", "-o", "json", "--collector", &addr])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = pids_mapping_libc();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The documented shape.
    assert_eq!(json["query"], "libc6");
    for field in [
        "hosts_total",
        "hosts_fresh",
        "hosts_stale",
        "oldest_scan_at",
        "generated_at",
    ] {
        assert!(!json["coverage"][field].is_null(), "coverage.{field}");
    }
    assert_eq!(json["coverage"]["hosts_fresh"], 1);
    let matches = json["matches"].as_array().unwrap();
    for m in matches {
        for field in [
            "host",
            "pid",
            "process_start",
            "exe",
            "workload",
            "evidence",
            "stale",
            "paths",
        ] {
            assert!(!m[field].is_null(), "match.{field} in {m}");
        }
        for field in ["ecosystem", "name", "source", "version", "purl"] {
            assert!(!m["package"][field].is_null(), "package.{field}");
        }
        assert_eq!(m["package"]["name"], "libc6");
        assert_eq!(m["package"]["source"], "glibc");
        // libc itself, or only the loader (also glibc's) when the scan
        // met a process mid-exec, before ld.so mapped libc.
        assert!(
            m["paths"].as_array().unwrap().iter().any(|p| {
                let path = p["path"].as_str().unwrap();
                path.contains("libc.so") || path.contains("ld-linux")
            }),
            "no glibc path in {m}"
        );
    }
    let answered: BTreeSet<u32> = matches
        .iter()
        .map(|m| m["pid"].as_u64().unwrap() as u32)
        .collect();
    // Every process that mapped libc before the scan and still does after it is listed.
    let stable: BTreeSet<u32> = before.intersection(&after).copied().collect();
    assert!(!stable.is_empty());
    let missing: Vec<_> = stable.difference(&answered).collect();
    assert!(missing.is_empty(), "not listed: {missing:?}");
    // Those that map this root's own libc file carry the version dpkg
    // gives here. A process may map another root's libc (a container's, or
    // the host's under a stand-in root such as .ci/fresh's, whose entering
    // unshare still maps the libc of a root it left): listed, but with its
    // own version or none.
    let host_version = dpkg_version("libc6");
    let ours = this_roots_libc();
    let mut checked = 0;
    for m in matches.iter().filter(|m| {
        let pid = m["pid"].as_u64().unwrap() as u32;
        stable.contains(&pid) && maps_file(pid, ours)
    }) {
        assert_eq!(m["package"]["version"], host_version.as_str(), "{m}");
        checked += 1;
    }
    assert!(checked > 0, "no listed process maps {ours:?}");

    // The table groups by host and workload.
    let out =
        tokio::task::spawn_blocking(move || patchgap(&["query", "libc6", "--collector", &addr]))
            .await
            .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("workload ") && table.contains("PID") && table.contains("EVIDENCE"),
        "{table}"
    );
    assert!(table.contains("coverage: 1 host(s), 1 fresh"), "{table}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_ps() {
    let h = Harness::start().await;
    let addr = h.addr.to_string();
    let (hosts, ps) = tokio::task::spawn_blocking(move || {
        let hosts = patchgap(&["hosts", "-o", "json", "--collector", &addr]);
        let name: Value = serde_json::from_slice(&hosts.stdout).unwrap();
        let name = name["hosts"][0]["host"].as_str().unwrap().to_string();
        (
            hosts,
            patchgap(&["ps", "--host", &name, "-o", "json", "--collector", &addr]),
        )
    })
    .await
    .unwrap();
    let hosts: Value = serde_json::from_slice(&hosts.stdout).unwrap();
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(hosts["hosts"][0]["fresh"], true);
    assert_eq!(hosts["hosts"][0]["connected"], true);
    assert_eq!(hosts["hosts"][0]["ebpf"], patchgap_tests::ebpf_wanted());
    let ps: Value = serde_json::from_slice(&ps.stdout).unwrap();
    let me = std::process::id() as u64;
    let me = ps["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == me)
        .expect("this test process is listed");
    // How old the socket view is, and which network namespace it is in.
    assert!(me["sockets_read_at"].is_string(), "{me}");
    assert!(hosts["hosts"][0]["last_scan"]["sockets_read_at"].is_string());
    assert_eq!(me["host_net_ns"], true, "{me}");
    assert!(me["net_ns"].as_u64().unwrap() > 0 && me["sockets"].is_array());
    h.stop().await;
}
