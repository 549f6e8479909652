//! The matcher against every row of testdata/osv/ground_truth_matches.json:
//! each row names a real advisory file, a package and the version installed
//! somewhere on this image (an interpreter, a Go binary, a jar, the cargo
//! cache), and whether OSV's ranges say that version is affected. A row is
//! one affected entry: an advisory with two entries for a package (Go's
//! stdlib with two range sets) has two rows, in document order. The verdict
//! here is `matching::affects_entry` on that entry of the parsed file, the
//! function the collector's incremental matcher decides with
//! (`affects_package` is "any entry naming the package").
//!
//! Runtime agreement (processes that really have these packages) is tested
//! end to end in tests/tests/lang.rs and cli/tests/sbom.rs; this covers the
//! rows no test process runs (Go binaries, the cargo cache, Maven poms).

use std::{collections::BTreeMap, path::PathBuf};

use patchgap_collector::advisories::{
    matching::{affects_entry, affects_package, names},
    osv::import::parse_file,
    records::purl_type,
};
use patchgap_proto::v1;
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", "testdata", "osv", rel]
        .iter()
        .collect()
}

/// The package as the agent names it: Maven's groupId as the source.
fn package(ecosystem: &str, name: &str, version: &str) -> v1::Package {
    let ty = purl_type(ecosystem).to_string();
    let (name, source) = match (ty.as_str(), name.split_once(':')) {
        ("maven", Some((group, artifact))) => (artifact.to_string(), group.to_string()),
        _ => (name.to_string(), String::new()),
    };
    v1::Package {
        ecosystem: ty,
        name,
        source,
        version: version.to_string(),
        ..Default::default()
    }
}

#[test]
fn every_ground_truth_row_agrees() {
    let rows: Value =
        serde_json::from_slice(&std::fs::read(testdata("ground_truth_matches.json")).unwrap())
            .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1315);
    // (source, where) → (rows, affected, agree)
    let mut table: BTreeMap<(String, String), (usize, usize, usize)> = BTreeMap::new();
    let mut disagree = Vec::new();
    // (id, where, package) → rows seen, to pick the next entry.
    let mut nth: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    // (id, where, package) → the ground truth's "any entry" verdict and ours.
    let mut per_package: BTreeMap<(String, String, String), (bool, bool)> = BTreeMap::new();
    for r in rows {
        let file = r["file"].as_str().unwrap();
        let data = std::fs::read(testdata(file)).unwrap();
        let adv = match parse_file(file, &data) {
            Some(Ok(a)) => a,
            other => panic!("{file}: {other:?}"),
        };
        let p = package(
            r["ecosystem"].as_str().unwrap(),
            r["package"].as_str().unwrap(),
            r["installed_version"].as_str().unwrap(),
        );
        let want = r["affected_per_osv_ranges"].as_bool().unwrap();
        let id = (
            r["id"].as_str().unwrap().to_string(),
            r["where"].as_str().unwrap().to_string(),
            p.name.clone(),
        );
        let k = nth.entry(id.clone()).or_default();
        // With one entry naming the package, repeated rows are the same
        // package found twice (system python3's cryptography has a
        // dist-info and an egg-info).
        let entries: Vec<_> = adv.affected.iter().filter(|af| names(af, &p)).collect();
        assert!(!entries.is_empty(), "{id:?}: no entry names the package");
        let got = affects_entry(entries[(*k).min(entries.len() - 1)], &p);
        *k += 1;
        let any = per_package
            .entry(id)
            .or_insert((false, affects_package(&adv, &p)));
        any.0 |= want;
        let key = (
            r["source"].as_str().unwrap().to_string(),
            r["where"].as_str().unwrap().to_string(),
        );
        let e = table.entry(key).or_default();
        e.0 += 1;
        e.1 += usize::from(want);
        if got == want {
            e.2 += 1;
        } else {
            disagree.push(format!(
                "{} {} {}@{}: ground truth {want}, patchgap {got}",
                r["id"].as_str().unwrap(),
                r["where"].as_str().unwrap(),
                p.name,
                p.version
            ));
        }
    }
    eprintln!("source | where | rows | affected | agree");
    for ((source, place), (n, affected, agree)) in &table {
        eprintln!("{source} | {place} | {n} | {affected} | {agree}");
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
    // Per package (what a finding is): affected when any entry is.
    let differ: Vec<_> = per_package.iter().filter(|(_, (w, g))| w != g).collect();
    assert!(differ.is_empty(), "{differ:?}");
    eprintln!(
        "{} rows, {} (advisory, place, package) verdicts: all agree",
        rows.len(),
        per_package.len()
    );
}
