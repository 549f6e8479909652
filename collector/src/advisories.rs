//! Advisory import: OSV files (JSON, or YAML as PyPA ships it) become store
//! records. Each file is parsed on its own; a bad one is reported with its
//! name, position and reason, and changes nothing.

use patchgap_proto::v1;

use crate::{
    osv::{self, Advisory},
    store::{AdvisoryRecord, PutOutcome},
};

/// The purl type patchgap inventories for an OSV ecosystem, or "" for one
/// it does not (NuGet, RubyGems, ...).
pub fn purl_type(osv_ecosystem: &str) -> &'static str {
    match osv::osv_ecosystem(osv_ecosystem) {
        "PyPI" => "pypi",
        "npm" => "npm",
        "Go" => "golang",
        "crates.io" => "cargo",
        "Maven" => "maven",
        "Debian" | "Ubuntu" => "deb",
        "Alpine" | "Chainguard" | "Wolfi" => "apk",
        "Red Hat" | "Rocky Linux" | "AlmaLinux" | "SUSE" | "openSUSE" | "Mageia" | "openEuler" => {
            "rpm"
        }
        _ => "",
    }
}

/// The store's record of a parsed advisory. `document` is the file as
/// imported.
pub fn record(a: &Advisory, source: &str, document: &[u8]) -> AdvisoryRecord {
    let (score, severity, vector) = match a.cvss_v3_entry() {
        Some((entry, score, rating)) => (Some(score), rating.to_uppercase(), entry.score.clone()),
        // GHSA's qualitative severity when there is no vector to score.
        None => (
            None,
            a.database_severity()
                .map(|s| s.to_uppercase())
                .unwrap_or_default(),
            String::new(),
        ),
    };
    let mut aliases: Vec<String> = a.aliases.iter().filter(|x| **x != a.id).cloned().collect();
    aliases.sort();
    aliases.dedup();
    let mut packages: Vec<(String, String, String)> = a
        .affected
        .iter()
        .filter_map(|af| af.package.as_ref())
        .map(|p| {
            (
                purl_type(&p.ecosystem).to_string(),
                p.ecosystem.clone(),
                p.name.clone(),
            )
        })
        .collect();
    packages.sort();
    packages.dedup();
    AdvisoryRecord {
        id: a.id.clone(),
        modified: a.modified.to_string(),
        modified_ms: a.modified.unix_seconds * 1000 + i64::from(a.modified.nanos / 1_000_000),
        withdrawn: a.withdrawn.map(|w| w.to_string()),
        aliases,
        summary: a.summary.clone().unwrap_or_default(),
        severity,
        score,
        vector,
        packages,
        source: source.to_string(),
        data: document.to_vec(),
    }
}

/// Parses the files of one import request: records to store, and the
/// files that failed.
pub fn parse_files(files: &[v1::AdvisoryFile]) -> (Vec<AdvisoryRecord>, Vec<v1::ImportError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match osv::import::parse_file(&f.name, &f.data) {
            Some(Ok(a)) => records.push(record(&a, &f.name, &f.data)),
            Some(Err(e)) => errors.push(v1::ImportError {
                file: e.file.clone(),
                position: format!("{}:{}", e.line, e.column),
                reason: if e.path.is_empty() {
                    e.reason.clone()
                } else {
                    format!("{}: {}", e.path, e.reason)
                },
            }),
            None => errors.push(v1::ImportError {
                file: f.name.clone(),
                position: String::new(),
                reason: "not an advisory file: the name must end in .json, .yaml or .yml".into(),
            }),
        }
    }
    (records, errors)
}

/// Adds one batch's outcomes to the response's counts.
pub fn count(
    resp: &mut v1::ImportAdvisoriesResponse,
    records: &[AdvisoryRecord],
    put: &[PutOutcome],
) {
    for (r, o) in records.iter().zip(put) {
        match o {
            PutOutcome::Added => resp.added += 1,
            PutOutcome::Updated => resp.updated += 1,
            PutOutcome::Unchanged => resp.unchanged += 1,
            PutOutcome::Older => resp.older += 1,
        }
        if matches!(o, PutOutcome::Added | PutOutcome::Updated) && r.withdrawn.is_some() {
            resp.withdrawn += 1;
        }
    }
}

/// The wire form of a stored advisory.
pub fn summary(a: &AdvisoryRecord) -> v1::AdvisorySummary {
    v1::AdvisorySummary {
        id: a.id.clone(),
        aliases: a.aliases.clone(),
        modified: a.modified.clone(),
        withdrawn: a.withdrawn.clone().unwrap_or_default(),
        summary: a.summary.clone(),
        severity: a.severity.clone(),
        score: a.score,
        vector: a.vector.clone(),
        packages: a
            .packages
            .iter()
            .map(|(e, o, n)| v1::AffectedPackage {
                ecosystem: e.clone(),
                osv_ecosystem: o.clone(),
                name: n.clone(),
            })
            .collect(),
        source: a.source.clone(),
    }
}
