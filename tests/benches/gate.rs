//! Deploy gate decision latency: p50 and p99 of one decision (the store's
//! facts read, then `response::gate::decide`), as `POST /v1/admission`
//! and `GateCheck` make it, against a SQLite store on disk holding N
//! images with SBOMs and M open incidents whose
//! `block_new_artifacts_with_package` is in force, in one run.
//!
//! The images: each SBOM declares an application, 10 libraries shared
//! across images and one `pkg-K` (K = image % (2M)) at 1.5, so half of the
//! images carry a package that one of the M advisories (`pkg-K` before 2.0,
//! HIGH) affects. Advisories and SBOMs go through the real import and push
//! paths (parsers, matching); each incident is opened through the real
//! `incident::log::open` (its scope computed from the store), then routed
//! to tier 2 with the block action planned and needing no approval.
//! Requests ask about a random image each, one at a time.
//!
//! usage: cargo bench -p patchgap-tests --bench gate
//!   PATCHGAP_BENCH_IMAGES (default 10000), PATCHGAP_BENCH_INCIDENTS
//!   (default 100), PATCHGAP_BENCH_REQUESTS (default 2000)

use std::{sync::Arc, time::Instant};

use patchgap_collector::{
    Ingest, Policy, SqliteStore,
    advisories::records::parse_files,
    response::{
        ActionKind, Approval, Mode,
        gate::{self, Image, Request, facts},
        incident::{Event, Source, log},
        plan::{Plan, PlannedAction},
    },
    sbom::{Sbom, records::record},
};
use patchgap_proto::v1;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

fn advisory(k: usize) -> v1::AdvisoryFile {
    let doc = serde_json::json!({
        "schema_version": "1.6.0",
        "id": format!("GHSA-bnch-{k:04}-gate"),
        "modified": "2026-12-01T00:00:00Z",
        "published": "2026-12-01T00:00:00Z",
        "summary": format!("pkg-{k} before 2.0 is affected"),
        "affected": [{
            "package": {"ecosystem": "PyPI", "name": format!("pkg-{k}")},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}]
        }],
        "database_specific": {"severity": "HIGH"}
    });
    v1::AdvisoryFile {
        name: format!("GHSA-bnch-{k:04}-gate.json"),
        data: doc.to_string().into_bytes(),
    }
}

fn sbom(i: usize, incidents: usize) -> Vec<u8> {
    let k = i % (2 * incidents.max(1));
    let mut components = vec![serde_json::json!({
        "bom-ref": "pkg", "type": "library", "name": format!("pkg-{k}"),
        "version": "1.5", "purl": format!("pkg:pypi/pkg-{k}@1.5")
    })];
    let mut deps = vec!["pkg".to_string()];
    for j in 0..10 {
        let lib = (i * 7 + j) % 500;
        components.push(serde_json::json!({
            "bom-ref": format!("lib{j}"), "type": "library", "name": format!("lib-{lib}"),
            "version": "1.0", "purl": format!("pkg:pypi/lib-{lib}@1.0")
        }));
        deps.push(format!("lib{j}"));
    }
    serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"bom-ref": "app", "type": "application", "name": format!("app-{i}"), "version": "1.0"}},
        "components": components,
        "dependencies": [{"ref": "app", "dependsOn": deps}]
    })
    .to_string()
    .into_bytes()
}

fn main() {
    let images = env("PATCHGAP_BENCH_IMAGES", 10_000);
    let incidents = env("PATCHGAP_BENCH_INCIDENTS", 100);
    let requests = env("PATCHGAP_BENCH_REQUESTS", 2_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let ingest = Ingest::new(store);
    let now = patchgap_proto::time::now_ms();

    let t = Instant::now();
    let files: Vec<_> = (0..incidents).map(advisory).collect();
    let (records, errors) = parse_files(&files);
    assert!(errors.is_empty(), "{errors:?}");
    ingest.import_advisories(&records, false).unwrap();
    for i in 0..images {
        let data = sbom(i, incidents);
        let name = format!("app-{i}.cdx.json");
        let parsed = Sbom::parse(&data, &name).unwrap();
        ingest
            .push_sbom(&record(&parsed, &digest(i), &name, &data, now))
            .unwrap();
    }
    let stored_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for k in 0..incidents {
        let id = format!("GHSA-bnch-{k:04}-gate");
        let opened = log::open(
            &ingest,
            Source::Advisory {
                id,
                asked_as: String::new(),
                host: None,
            },
            "bench",
            &[],
            now,
        )
        .unwrap();
        log::append(&ingest, opened.id, "bench", now, |i| {
            let action = PlannedAction {
                id: i.next_action,
                kind: ActionKind::BlockNewArtifactsWithPackage,
                mode: Mode::Enforce,
                approval: Approval::Auto,
                revert_after_ms: None,
                allow: Vec::new(),
                targets: Vec::new(),
                excluded: Vec::new(),
                no_executor: None,
                endpoint: None,
            };
            let mut plan = Plan {
                hash: String::new(),
                tier: Some(2),
                tier_name: "high or critical".into(),
                exception: None,
                actions: vec![action],
            };
            plan.hash = patchgap_collector::response::plan::hash(&plan);
            Ok(vec![
                Event::TierRouted {
                    tier: Some(2),
                    name: "high or critical".into(),
                },
                Event::Planned { plan },
            ])
        })
        .unwrap();
    }
    let opened_s = t.elapsed().as_secs_f64();

    let policy = Arc::new(Policy::builtin());
    // As the servers do: incidents decoded once, again when they change.
    let cache = facts::Cache::default();
    let store = ingest.store().as_ref();
    let mut latencies = Vec::with_capacity(requests);
    let mut denied = 0;
    // A fixed LCG: the same images every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..requests {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let i = (seed >> 33) as usize % images.max(1);
        let req = Request {
            namespace: Some("payments".into()),
            object: format!("Pod payments/app-{i}"),
            images: vec![Image::from_reference(
                "app",
                &format!("registry.example/app@{}", digest(i)),
            )],
            ..Request::default()
        };
        let t = Instant::now();
        let digests: Vec<&str> = req
            .images
            .iter()
            .filter_map(|i| i.digest.as_deref())
            .collect();
        let f = cache.load(store, &policy, &digests).unwrap();
        let v = gate::decide(&req, &f, &policy.gate);
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(f.blockers.len(), incidents, "every incident blocks");
        denied += usize::from(!v.allowed);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "gate decision, {images} images with SBOMs, {incidents} open incidents blocking (stored in {stored_s:.1} s, opened in {opened_s:.1} s): {requests} requests, {denied} denied; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    assert!(denied > 0 || incidents == 0, "no request was denied");
}
