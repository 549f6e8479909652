//! Verify and Recover on the command line: an incident's verification as
//! `incident show` prints it (what blocks closure), `incident close
//! --force`, `incident evidence` and `evidence verify`, `hosts retire`.

use std::path::Path;

use anyhow::Context;
use patchgap_collector::response::verify::evidence;
use patchgap_proto::v1;
use serde_json::{Value, json};

use crate::render::{clean, rfc3339};

/// The verification's JSON fields (stable names) for `incident show -o
/// json`.
pub fn verification_json(v: &v1::Verification) -> Value {
    json!({
        "verdict": if v.verdict.is_empty() { Value::Null } else { v.verdict.clone().into() },
        "last_run_at": if v.last_run_ms > 0 { rfc3339(v.last_run_ms).into() } else { Value::Null },
        "streak": v.streak,
        "streak_required": v.streak_required,
        "streak_since": if v.streak_since_ms > 0 { rfc3339(v.streak_since_ms).into() } else { Value::Null },
        "blockers": v.blockers,
        "checks": v.checks.iter().map(|c| json!({
            "check": c.check,
            "verdict": c.verdict,
            "query": c.query,
            "evidence": c.evidence,
            "blockers": c.blockers,
        })).collect::<Vec<_>>(),
        "forced_close_reason": if v.forced_close_reason.is_empty() { Value::Null } else { v.forced_close_reason.clone().into() },
        "reopened": v.reopened,
        "hosts_retired": v.hosts_retired,
    })
}

/// The verification for a person: the last run, each check, and exactly
/// what blocks closure.
pub fn verification_detail(state: &str, v: &v1::Verification) -> String {
    let mut out = String::from("\nverification:\n");
    if !v.forced_close_reason.is_empty() {
        out.push_str(&format!(
            "  closed by force, without evidence: {}\n",
            clean(&v.forced_close_reason)
        ));
    }
    if v.reopened > 0 {
        out.push_str(&format!("  reopened {} time(s)\n", v.reopened));
    }
    if !v.verdict.is_empty() {
        let k = if v.streak_required > 0 {
            format!("{}/{}", v.streak, v.streak_required)
        } else {
            v.streak.to_string()
        };
        out.push_str(&format!(
            "  last run {}: {} (successful in a row: {k})\n",
            rfc3339(v.last_run_ms),
            clean(&v.verdict)
        ));
        for c in &v.checks {
            out.push_str(&format!(
                "  {:<9} {:<12} {}\n",
                clean(&c.check),
                clean(&c.verdict),
                clean(&c.evidence.join("; "))
            ));
        }
    }
    if !v.blockers.is_empty() && state != "closed" {
        out.push_str("  blocks closure:\n");
        for b in &v.blockers {
            out.push_str(&format!("    - {}\n", clean(b)));
        }
    }
    if !v.hosts_retired.is_empty() {
        out.push_str(&format!(
            "  hosts retired: {}\n",
            clean(&v.hosts_retired.join(", "))
        ));
    }
    out
}

/// `patchgap evidence verify FILE [--key HEX]`: checks the DSSE envelope
/// locally; an error (exit 1) names what failed.
pub fn verify_bundle(file: &Path, key: Option<&str>) -> anyhow::Result<String> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    anyhow::ensure!(
        meta.len() <= evidence::MAX_BUNDLE_BYTES as u64,
        "{}: {} bytes, more than the {} a bundle may have",
        file.display(),
        meta.len(),
        evidence::MAX_BUNDLE_BYTES
    );
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let expected = match key {
        None => None,
        Some(k) => Some(parse_key(k)?),
    };
    let ok = evidence::verify(&bytes, expected.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: does not verify: {e}", file.display()))?;
    let p = &ok.statement["predicate"];
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{}: verified, signed by {}\n  {} {}: closed with evidence: {}\n  subject sha256 {}\n",
        file.display(),
        ok.keyid,
        s(&p["incident"]),
        s(&p["state"]),
        p["closed_with_evidence"],
        s(&ok.statement["subject"][0]["digest"]["sha256"]),
    );
    if expected.is_none() {
        out.push_str(
            "  (the key is the one the bundle names: pass --key to require the collector's)\n",
        );
    }
    Ok(out)
}

fn parse_key(k: &str) -> anyhow::Result<[u8; 32]> {
    let hex = k.trim().strip_prefix("ed25519:").unwrap_or(k.trim());
    anyhow::ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "--key: 64 hex digits (or ed25519:<hex>), as `patchgap incident evidence` prints it"
    );
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// The graph for a person: each node with its status, then each edge.
pub fn graph_table(g: &patchgap_collector::response::verify::graph::Graph) -> String {
    let mut out = format!(
        "{}: {} node(s), {} edge(s)\n",
        clean(&g.incident),
        g.nodes.len(),
        g.edges.len()
    );
    for n in &g.nodes {
        let status = if n.status.is_empty() {
            "-"
        } else {
            n.status.as_str()
        };
        out.push_str(&format!(
            "  {:<10} {:<10} {}\n",
            clean(&n.kind),
            status,
            clean(&n.label)
        ));
    }
    for e in &g.edges {
        out.push_str(&format!("  {} -> {}\n", clean(&e.from), clean(&e.to)));
    }
    out
}

/// The report for a person: one line per measure, durations as seconds.
pub fn report_table(r: &Value) -> String {
    let secs = |v: &Value| match v.as_i64() {
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".into(),
    };
    let dist = |d: &Value| {
        format!(
            "n={} p50={} p90={} max={}",
            d["count"],
            secs(&d["p50_ms"]),
            secs(&d["p90_ms"]),
            secs(&d["max_ms"])
        )
    };
    let mut out = format!("incidents: {}\n", r["incidents"]);
    out.push_str(&format!(
        "time to scope:        {}\n",
        dist(&r["time_to_scope"])
    ));
    if let Some(m) = r["time_to_containment"].as_object() {
        for (tier, d) in m {
            out.push_str(&format!("time to containment, tier {tier}: {}\n", dist(d)));
        }
    }
    if let Some(m) = r["approval_wait"].as_object() {
        for (tier, d) in m {
            out.push_str(&format!("approval wait, tier {tier}:       {}\n", dist(d)));
        }
    }
    out.push_str(&format!(
        "convergence:          {}\n",
        dist(&r["convergence"])
    ));
    let share = r["share_closed_with_evidence"]
        .as_f64()
        .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
    out.push_str(&format!(
        "closed: {} ({} with evidence, {share})\n",
        r["closed"], r["closed_with_evidence"]
    ));
    if let Some(m) = r["false_positive_rate"].as_object() {
        for (tier, rate) in m {
            let rate = rate.as_f64().unwrap_or(0.0) * 100.0;
            out.push_str(&format!(
                "false-positive containment, tier {tier}: {rate:.0}%\n"
            ));
        }
    }
    out.push_str(&format!("reopens: {}\n", r["reopens"]));
    out
}
