//! Output: stable JSON for scripts and aligned tables for people. The JSON
//! field names are part of the interface (README, "JSON output"); add
//! fields, never rename them.

use std::collections::BTreeMap;

use patchgap_proto::v1;
use serde_json::{Value, json};

/// Text for bytes that may not be UTF-8, losslessly (the agent's rule).
pub use patchgap_agent::model::display_bytes as bytes_text;

/// Parses an RFC 3339 time (UTC "Z" or a numeric offset; fractional seconds
/// allowed) into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits.min(3)];
        ms = f.parse::<i64>().ok()? * 10_i64.pow(3 - f.len() as u32);
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let v = o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + ms)
}

/// The text `-o json` prints: the value pretty-printed, with a final newline.
/// Snapshot tests pin these bytes.
pub fn json_text(v: &Value) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

/// RFC 3339 in UTC with milliseconds, from milliseconds since the epoch.
pub use patchgap_proto::time::rfc3339;

fn coverage_json(c: &Option<v1::Coverage>) -> Value {
    let c = c.clone().unwrap_or_default();
    json!({
        "hosts_total": c.hosts_total,
        "hosts_fresh": c.hosts_fresh,
        "hosts_stale": c.hosts_stale,
        "hosts_scan_only": c.hosts_scan_only,
        "oldest_scan_at": (c.oldest_scan_ms > 0).then(|| rfc3339(c.oldest_scan_ms)),
        "generated_at": rfc3339(c.generated_at_ms),
        "history_dropped_before": (c.history_dropped_before_ms > 0)
            .then(|| rfc3339(c.history_dropped_before_ms)),
        "hosts": c.hosts.iter().map(|h| json!({
            "host": h.host,
            "fresh": h.fresh,
            "ebpf": h.ebpf,
            "ebpf_reason": h.ebpf_reason,
            "events_lost": h.events_lost,
            "scanning": h.scanning,
            "scan_restarts": h.scan_restarts,
            "spool_dropped": h.spool_dropped,
            "shedding": h.shedding,
        })).collect::<Vec<_>>(),
    })
}

fn coverage_line(c: &Option<v1::Coverage>) -> String {
    let c = c.clone().unwrap_or_default();
    // "As of" is the oldest scan behind the answer, not the time of the
    // query: a process that started after it is not in the answer yet.
    let as_of = if c.oldest_scan_ms > 0 {
        c.oldest_scan_ms
    } else {
        c.generated_at_ms
    };
    let mut line = format!(
        "coverage: {} host(s), {} fresh, {} stale; {} scan-only (no eBPF); data as of {}\n",
        c.hosts_total,
        c.hosts_fresh,
        c.hosts_stale,
        c.hosts_scan_only,
        rfc3339(as_of)
    );
    if c.history_dropped_before_ms > 0 {
        line.push_str(&format!(
            "note: history before {} was dropped by retention: what ran or connected earlier is not in this answer\n",
            rfc3339(c.history_dropped_before_ms)
        ));
    }
    for h in &c.hosts {
        if !h.ebpf {
            line.push_str(&format!(
                "note: {} is scan-only (ebpf: off, {}): processes and connections that lived between rescans are not seen\n",
                clean(&h.host),
                clean(&h.ebpf_reason)
            ));
        } else if h.events_lost > 0 {
            line.push_str(&format!(
                "warning: {} lost {} kernel events\n",
                clean(&h.host),
                h.events_lost
            ));
        }
        if !h.scanning {
            line.push_str(&format!(
                "warning: {}'s agent is not scanning (its scan loop stalled or is restarting)\n",
                clean(&h.host)
            ));
        }
        if h.scan_restarts > 0 {
            line.push_str(&format!(
                "warning: {}'s agent restarted its scan loop {} time(s) after a panic\n",
                clean(&h.host),
                h.scan_restarts
            ));
        }
        if h.spool_dropped > 0 {
            line.push_str(&format!(
                "warning: {}'s agent dropped {} unsent message(s) from its full spool; history there has gaps\n",
                clean(&h.host),
                h.spool_dropped
            ));
        }
        if !h.shedding.is_empty() {
            line.push_str(&format!(
                "warning: {}'s agent is over its CPU or memory cap and does not watch {}\n",
                clean(&h.host),
                clean(&h.shedding)
            ));
        }
    }
    if c.hosts_stale > 0 {
        line.push_str(
            "warning: stale hosts have not reported recently; their answers may be out of date\n",
        );
    }
    line
}

fn package_json(p: &Option<v1::Package>) -> Value {
    let p = p.clone().unwrap_or_default();
    let mut v = json!({
        "ecosystem": p.ecosystem,
        "name": p.name,
        "source": p.source,
        "version": p.version,
        "arch": p.arch,
        "purl": p.purl,
    });
    // A language package an OS package installed names that package too.
    if let Some(d) = p.distro {
        v["distro"] = package_json(&Some(*d));
    }
    if !p.fixed_cves.is_empty() {
        v["fixed_cves"] = json!(p.fixed_cves);
    }
    // A Go module built from a `=>` replacement.
    if !p.replaced_by.is_empty() {
        v["replaced_by"] = json!(p.replaced_by);
    }
    v
}

/// A package for a table cell: the name, its ecosystem when that is not
/// the host's own packaging, and the OS package that installed it.
fn package_cell(p: &v1::Package) -> String {
    let mut out = match p.ecosystem.as_str() {
        "deb" | "rpm" | "apk" | "" => p.name.clone(),
        eco => format!("{eco}:{}", p.name),
    };
    if let Some(d) = &p.distro {
        out.push_str(&format!(" (via {} {})", d.ecosystem, d.name));
    }
    out
}

pub fn query_json(r: &v1::FindPackageResponse) -> Value {
    let matches: Vec<Value> = r
        .matches
        .iter()
        .map(|m| {
            let key = m.key.unwrap_or_default();
            json!({
                "host": m.host,
                "host_id": m.host_id,
                "workload": m.workload,
                "pid": key.pid,
                "start_ticks": key.start_ticks,
                "process_start": rfc3339(m.process_start_ms),
                "exe": bytes_text(&m.exe),
                "cmdline": m.cmdline,
                "uid": m.uid,
                "package": package_json(&m.package),
                "evidence": m.evidence,
                "stale": m.stale,
                "paths": m.paths.iter().map(|p| json!({
                    "path": bytes_text(&p.path),
                    "evidence": p.evidence,
                    "stale": p.stale,
                    "deleted": p.deleted,
                    "dev": p.dev,
                    "inode": p.inode,
                })).collect::<Vec<_>>(),
                "exit_time": (m.exit_time_ms > 0).then(|| rfc3339(m.exit_time_ms)),
                "advisory": (!m.advisory.is_empty()).then_some(&m.advisory),
                "severity": (!m.severity.is_empty()).then_some(&m.severity),
                "score": m.score,
                "vector": (!m.vector.is_empty()).then_some(&m.vector),
                "status": (!m.status.is_empty()).then_some(&m.status),
                "sbom_image": (!m.sbom_image.is_empty()).then_some(&m.sbom_image),
                "pulled_in_by": (!m.pulled_in_by.is_empty()).then_some(&m.pulled_in_by),
                "workload_detail": m.workload_detail.as_ref().map(workload_json),
                "privilege": m.privilege.as_ref().map(privilege_json),
            })
        })
        .collect();
    json!({
        "query": r.query,
        "coverage": coverage_json(&r.coverage),
        "scope_map_error": (!r.scope_map_error.is_empty()).then_some(&r.scope_map_error),
        "matches": matches,
    })
}

fn privilege_json(p: &v1::Privilege) -> Value {
    json!({
        "uid0": p.uid0,
        "euid0": p.euid0,
        "cap_eff": p.cap_eff,
        "all_caps": p.all_caps,
        "no_new_privs": p.no_new_privs,
        "seccomp": p.seccomp,
        "host_pid_ns": p.host_pid_ns,
        "host_net_ns": p.host_net_ns,
        "host_mnt_ns": p.host_mnt_ns,
        "privileged": p.privileged,
        "summary": p.summary,
    })
}

fn workload_json(w: &v1::WorkloadSummary) -> Value {
    let scope = w.scope.clone().unwrap_or_default();
    json!({
        "key": w.key,
        "kind": w.kind,
        "cluster": w.cluster,
        "namespace": w.namespace,
        "name": w.name,
        "owner": w.owner.as_ref().map(|o| json!({"kind": o.kind, "name": o.name, "source": o.source})),
        "container": w.container,
        "runtime": w.runtime,
        "image": w.image,
        "image_digest": (!w.image_digest.is_empty()).then_some(&w.image_digest),
        "provenance": w.provenance.as_ref().map(|p| json!({
            "revision": p.revision,
            "source": p.source,
            "created": p.created,
        })),
        "unit": w.unit,
        "pods": w.pods,
        "hosts": w.hosts,
        "processes": w.processes,
        "scope": {
            "classification": scope.classification,
            "writes_to": scope.writes_to,
            "source": scope.source,
        },
        "privilege": w.privilege,
        "privileged": w.privileged,
        "metadata_warnings": w.metadata_warnings,
    })
}

pub fn workloads_json(r: &v1::ListWorkloadsResponse) -> Value {
    json!({
        "coverage": coverage_json(&r.coverage),
        "scope_map_error": (!r.scope_map_error.is_empty()).then_some(&r.scope_map_error),
        "workloads": r.workloads.iter().map(workload_json).collect::<Vec<_>>(),
    })
}

fn owner_text(w: &v1::WorkloadSummary) -> String {
    match &w.owner {
        Some(o) if o.source == "inferred" => format!("{}/{} (inferred)", o.kind, o.name),
        Some(o) => format!("{}/{}", o.kind, o.name),
        None => "-".into(),
    }
}

/// The image's provenance as a note ("image from <source> at <revision>, built
/// <created>"), None when nothing is known. These are the builder's claims.
fn provenance_text(w: &v1::WorkloadSummary) -> Option<String> {
    let p = w.provenance.as_ref()?;
    let mut parts = Vec::new();
    if !p.source.is_empty() {
        parts.push(format!("source {}", clean(&p.source)));
    }
    if !p.revision.is_empty() {
        parts.push(format!("revision {}", clean(&p.revision)));
    }
    if !p.created.is_empty() {
        parts.push(format!("created {}", clean(&p.created)));
    }
    (!parts.is_empty()).then(|| format!("image {}", parts.join("  ")))
}

fn scope_text(w: &v1::WorkloadSummary) -> String {
    match &w.scope {
        Some(s) if !s.classification.is_empty() => s.classification.clone(),
        _ => "-".into(),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub fn workloads_table(r: &v1::ListWorkloadsResponse, width: usize) -> String {
    let image_width = width.saturating_sub(100).max(20);
    let rows: Vec<Vec<String>> = r
        .workloads
        .iter()
        .map(|w| {
            vec![
                w.kind.clone(),
                or_dash(&w.namespace),
                w.name.clone(),
                owner_text(w),
                or_dash(&w.container),
                fit(&or_dash(&w.image), image_width),
                if w.image_digest.is_empty() {
                    "unknown".into()
                } else {
                    fit(&w.image_digest, 19)
                },
                w.hosts.len().to_string(),
                w.processes.to_string(),
                scope_text(w),
                w.privilege.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "KIND",
            "NAMESPACE",
            "NAME",
            "OWNER",
            "CONTAINER",
            "IMAGE",
            "DIGEST",
            "HOSTS",
            "PROCS",
            "SCOPE",
            "PRIVILEGE",
        ],
        &rows,
        "",
    );
    for w in &r.workloads {
        if let Some(p) = provenance_text(w) {
            out.push_str(&format!("{}: {p}\n", clean(&w.key)));
        }
    }
    if !r.scope_map_error.is_empty() {
        out.push_str(&format!(
            "warning: scope mapping not reloaded, previous one in force: {}\n",
            r.scope_map_error
        ));
    }
    out.push_str(&coverage_line(&r.coverage));
    out
}

/// The longest a table cell, or a field inside a note, gets (in
/// characters, after escaping); `-o json` keeps every field whole.
pub const MAX_CELL: usize = 256;

/// Whether a character must not reach a terminal raw: C0 controls, DEL, C1
/// controls (CSI is U+009B), and the bidirectional overrides and isolates
/// that reorder what is shown (U+202A..U+202E, U+2066..U+2069).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `c` visibly: `\n`, `\r`, `\t`, `\x1b`, `\u{202e}`.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// A field as a table or a note shows it: every unsafe character (see
/// [`is_unsafe`]) written visibly, so no field moves the cursor, recolours
/// the terminal or forges a row, then clipped to [`MAX_CELL`] characters
/// with a trailing "…".
pub fn clean(s: &str) -> String {
    clean_to(s, MAX_CELL)
}

/// [`clean`] with another bound, for a sentence rather than a cell.
fn clean_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut n = 0;
    for c in s.chars() {
        if n >= max {
            // Keep room for the marker.
            let cut = out
                .char_indices()
                .nth(max - 1)
                .map_or(out.len(), |(i, _)| i);
            out.truncate(cut);
            out.push('…');
            return out;
        }
        if is_unsafe(c) {
            let before = out.len();
            push_escaped(&mut out, c);
            n += out[before..].chars().count();
        } else {
            out.push(c);
            n += 1;
        }
    }
    if n > max {
        let cut = out
            .char_indices()
            .nth(max - 1)
            .map_or(out.len(), |(i, _)| i);
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The last line of defence for table output: every unsafe character but
/// the newlines that make its lines, written visibly. Fields are [`clean`]ed
/// where they are placed; this catches text that was not (an advisory's
/// summary, an error), so no escape sequence reaches the terminal raw.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c != '\n' && is_unsafe(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Shortens from the left, keeping the file name visible.
fn fit(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max || max < 2 {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

/// Left-aligned columns, two spaces apart. Every cell is [`clean`]ed:
/// escaped and clipped, so one row is one line whatever the agents sent.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = indent.to_string();
        let last = cells.len() - 1;
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(&c);
            if i != last {
                // By hand: `{:<w$}` refuses widths above u16::MAX.
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// The matches grouped by workload, one table each (a page's worth, when
/// the answer comes in pages).
pub fn query_groups(matches: &[v1::Match], width: usize) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<&str, Vec<&v1::Match>> = BTreeMap::new();
    for m in matches {
        groups.entry(&m.workload).or_default().push(m);
    }
    // Room for the exe column: the rest of the row is about 70 columns.
    let exe_width = width.saturating_sub(72).max(16);
    for (workload, ms) in groups {
        out.push_str(&format!("workload {}\n", clean(workload)));
        if let Some(w) = &ms[0].workload_detail {
            out.push_str(&format!(
                "  kind {}  namespace {}  owner {}  container {}  image {}  digest {}  scope {}  privilege {}\n",
                clean(&w.kind),
                clean(&or_dash(&w.namespace)),
                clean(&owner_text(w)),
                clean(&or_dash(&w.container)),
                clean(&or_dash(&w.image)),
                clean(if w.image_digest.is_empty() { "unknown" } else { &w.image_digest }),
                clean(&scope_text(w)),
                clean(&w.privilege),
            ));
            if let Some(p) = provenance_text(w) {
                out.push_str(&format!("  {p}\n"));
            }
        }
        let with_status = ms.iter().any(|m| !m.status.is_empty());
        let rows: Vec<Vec<String>> = ms
            .iter()
            .map(|m| {
                let p = m.package.clone().unwrap_or_default();
                let mut row = vec![
                    m.host.clone(),
                    m.key.unwrap_or_default().pid.to_string(),
                    fit(&bytes_text(&m.exe), exe_width),
                    package_cell(&p),
                    if p.version.is_empty() {
                        "?(replaced)".into()
                    } else {
                        p.version
                    },
                    m.evidence.clone(),
                    if m.stale { "STALE".into() } else { "no".into() },
                    if m.exit_time_ms > 0 {
                        rfc3339(m.exit_time_ms)
                    } else {
                        "running".into()
                    },
                ];
                if with_status {
                    row.push(m.status.clone());
                }
                row
            })
            .collect();
        let mut header = vec![
            "HOST", "PID", "EXE", "PACKAGE", "VERSION", "EVIDENCE", "STALE", "EXITED",
        ];
        if with_status {
            header.push("STATUS");
        }
        out.push_str(&table(&header, &rows, "  "));
        out.push_str(&chains(&ms));
    }
    out
}

/// What follows the tables: the count, the scope mapping's error, the
/// coverage.
pub fn query_footer(
    count: usize,
    query: &str,
    scope_map_error: &str,
    coverage: &Option<v1::Coverage>,
) -> String {
    let mut out = String::new();
    if count == 0 {
        out.push_str(&format!("no running process includes {}\n", clean(query)));
    }
    out.push_str(&format!("{count} match(es) for {}\n", clean(query)));
    if !scope_map_error.is_empty() {
        out.push_str(&format!(
            "warning: scope mapping not reloaded, previous one in force: {}\n",
            clean(scope_map_error)
        ));
    }
    out.push_str(&coverage_line(coverage));
    out
}

/// "pulled in by" lines under a table, one per package an image SBOM
/// declares with a chain (each package once).
fn chains(ms: &[&v1::Match]) -> String {
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in ms {
        if m.pulled_in_by.len() < 2 {
            continue;
        }
        let p = m.package.clone().unwrap_or_default();
        if seen.insert((p.name.clone(), p.version.clone(), m.sbom_image.clone())) {
            out.push_str(&format!(
                "  {} {}: pulled in by {} (SBOM of {})\n",
                clean(&package_cell(&p)),
                clean(&p.version),
                clean(&m.pulled_in_by[..m.pulled_in_by.len() - 1].join(" -> ")),
                clean(short_digest(&m.sbom_image))
            ));
        }
    }
    out
}

/// "sha256:4f67c83422ec" for a table.
fn short_digest(d: &str) -> &str {
    &d[..d.len().min(19)]
}

pub fn connections_json(r: &v1::ListConnectionsResponse) -> Value {
    let conns: Vec<Value> = r
        .connections
        .iter()
        .map(|c| {
            let key = c.key.unwrap_or_default();
            json!({
                "host": c.host,
                "workload": c.workload,
                "pid": key.pid,
                "start_ticks": key.start_ticks,
                "exe": bytes_text(&c.exe),
                "protocol": c.protocol,
                "remote_addr": c.remote_addr,
                "remote_port": c.remote_port,
                "first_seen": rfc3339(c.first_seen_ms),
                "last_seen": rfc3339(c.last_seen_ms),
                "count": c.count,
                "last_result": c.last_result,
                "exit_time": (c.exit_time_ms > 0).then(|| rfc3339(c.exit_time_ms)),
                "net_ns": c.net_ns,
                "net_ns_name": c.net_ns_name,
            })
        })
        .collect();
    json!({ "coverage": coverage_json(&r.coverage), "connections": conns })
}

/// A destination, with the network namespace it is in when that one has a
/// name (an address such as 127.0.0.1 means nothing without it).
fn remote_text(c: &v1::ConnectionSummary) -> String {
    let addr = format!("{}:{}", c.remote_addr, c.remote_port);
    if c.net_ns_name.is_empty() {
        addr
    } else {
        format!("{addr} (netns {})", c.net_ns_name)
    }
}

/// A process's network namespace for tables: "host", its /run/netns name,
/// its inode, or "-" when unknown.
fn netns_text(p: &v1::ProcessSummary) -> String {
    if p.host_net_ns {
        "host".into()
    } else if !p.net_ns_name.is_empty() {
        p.net_ns_name.clone()
    } else if p.net_ns != 0 {
        format!("net:[{}]", p.net_ns)
    } else {
        "-".into()
    }
}

fn socket_json(s: &v1::Socket) -> Value {
    json!({
        "protocol": s.protocol,
        "local_addr": s.local_addr,
        "local_port": s.local_port,
        "remote_addr": s.remote_addr,
        "remote_port": s.remote_port,
        "state": s.state,
        "inode": s.inode,
        "outbound": s.outbound,
        "connect_seen_at": (s.connect_ms > 0).then(|| rfc3339(s.connect_ms)),
    })
}

pub fn connections_table(r: &v1::ListConnectionsResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .connections
        .iter()
        .map(|c| {
            vec![
                c.host.clone(),
                c.key.unwrap_or_default().pid.to_string(),
                fit(&bytes_text(&c.exe), 32),
                or_dash(&c.protocol),
                remote_text(c),
                c.count.to_string(),
                c.last_result.to_string(),
                rfc3339(c.first_seen_ms),
                rfc3339(c.last_seen_ms),
                fit(&c.workload, 40),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "HOST",
            "PID",
            "EXE",
            "PROTO",
            "REMOTE",
            "COUNT",
            "RESULT",
            "FIRST SEEN",
            "LAST SEEN",
            "WORKLOAD",
        ],
        &rows,
        "",
    );
    out.push_str(&coverage_line(&r.coverage));
    out
}

pub fn hosts_json(r: &v1::ListHostsResponse) -> Value {
    let hosts: Vec<Value> = r
        .hosts
        .iter()
        .map(|h| {
            let id = h.identity.clone().unwrap_or_default();
            let caps = h.capabilities.clone().unwrap_or_default();
            let scan = h.last_scan.unwrap_or_default();
            json!({
                "host": id.hostname,
                "host_id": id.host_id,
                "boot_id": id.boot_id,
                "kernel": id.kernel,
                "labels": id.labels.into_iter().collect::<BTreeMap<_, _>>(),
                "agent_version": h.agent_version,
                "ebpf": caps.ebpf,
                "ebpf_reason": caps.ebpf_reason,
                "root": caps.root,
                // Whether the agent can isolate workloads (cgroup BPF).
                "contain": caps.contain,
                "contain_reason": caps.contain_reason,
                "connected": h.connected,
                "cert_expires": (h.cert_not_after_ms > 0).then(|| rfc3339(h.cert_not_after_ms)),
                // Two agents claiming this host's identity; null when none.
                "conflict": (!h.conflict.is_empty()).then_some(&h.conflict),
                "fresh": h.fresh,
                // "fresh", "first scan" or "STALE", as the table shows it.
                "state": host_state(h),
                "last_seen": rfc3339(h.last_seen_ms),
                "last_full_scan": (h.last_full_scan_ms > 0).then(|| rfc3339(h.last_full_scan_ms)),
                "processes_running": h.processes_running,
                "last_scan": {
                    "processes": scan.processes,
                    "vanished": scan.vanished,
                    "denied": scan.denied,
                    "artifacts": scan.artifacts,
                    "unresolved_artifacts": scan.unresolved_artifacts,
                    "cpu_micros": scan.cpu_micros,
                    "wall_micros": scan.wall_micros,
                    "reused": scan.reused,
                    "scanned_at": (scan.scanned_at_ms > 0).then(|| rfc3339(scan.scanned_at_ms)),
                    "sockets_read_at": (scan.sockets_read_ms > 0).then(|| rfc3339(scan.sockets_read_ms)),
                },
                "health": h.health.as_ref().map(|x| json!({
                    "scanning": x.scanning,
                    "scan_alive_at": (x.scan_alive_ms > 0).then(|| rfc3339(x.scan_alive_ms)),
                    "scan_restarts": x.scan_restarts,
                    "last_panic": x.last_panic,
                    "spool_dropped": x.spool_dropped,
                    "spool_bytes": x.spool_bytes,
                    "spool_unacked": x.spool_unacked,
                    "spool_on_disk": x.spool_on_disk,
                    "shedding": x.shedding,
                    "watchdog_trips": x.watchdog_trips,
                    "cpu_permille": x.cpu_permille,
                    "rss_bytes": x.rss_bytes,
                })),
            })
        })
        .collect();
    json!({ "coverage": coverage_json(&r.coverage), "hosts": hosts })
}

/// A host's state as a responder reads it: fresh, or STALE (its answers
/// may be out of date), or "first scan" for a host that is connected and
/// still sending its first full scan, which is not stale: nothing it has
/// said is old, it has not said it all yet.
fn host_state(h: &v1::HostSummary) -> &'static str {
    if h.fresh {
        "fresh"
    } else if h.connected && h.last_full_scan_ms == 0 {
        "first scan"
    } else {
        "STALE"
    }
}

pub fn hosts_table(r: &v1::ListHostsResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .hosts
        .iter()
        .map(|h| {
            let id = h.identity.clone().unwrap_or_default();
            let caps = h.capabilities.clone().unwrap_or_default();
            vec![
                id.hostname,
                host_state(h).into(),
                if h.connected { "yes" } else { "no" }.into(),
                h.processes_running.to_string(),
                if caps.ebpf {
                    "on".into()
                } else {
                    format!("off ({})", caps.ebpf_reason)
                },
                if caps.root { "root" } else { "NOT ROOT" }.into(),
                rfc3339(h.last_seen_ms),
                if h.cert_not_after_ms > 0 {
                    rfc3339(h.cert_not_after_ms)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "HOST",
            "STATE",
            "CONNECTED",
            "PROCESSES",
            "EBPF",
            "AGENT",
            "LAST SEEN",
            "CERT EXPIRES",
        ],
        &rows,
        "",
    );
    for h in r.hosts.iter().filter(|h| !h.conflict.is_empty()) {
        let id = h.identity.clone().unwrap_or_default();
        out.push_str(&format!(
            "CONFLICT: {}: {}\n",
            clean(&id.hostname),
            clean_to(&h.conflict, 1024)
        ));
    }
    out.push_str(&coverage_line(&r.coverage));
    out
}

pub fn ps_json(r: &v1::ListProcessesResponse) -> Value {
    let procs: Vec<Value> = r
        .processes
        .iter()
        .map(|p| {
            let key = p.key.unwrap_or_default();
            json!({
                "host": p.host,
                "workload": p.workload,
                "pid": key.pid,
                "start_ticks": key.start_ticks,
                "process_start": rfc3339(p.start_time_ms),
                "ppid": p.ppid,
                "uid": p.uid,
                "exe": bytes_text(&p.exe),
                "cmdline": p.cmdline,
                "artifacts": p.artifacts,
                "packages": p.packages,
                "stale_artifacts": p.stale_artifacts,
                "outbound_sockets": p.outbound_sockets,
                // Code mapped from no file on disk (memfds, unlinked
                // files no package owns): a sign of fileless loading.
                "anonymous_code": p.anonymous_code.iter().map(|a| {
                    let c = a.content.clone().unwrap_or_default();
                    json!({
                        "path": bytes_text(&a.path),
                        "deleted": a.deleted,
                        "size": c.size,
                        "sha256": c.sha256,
                        "unhashed": c.unhashed,
                    })
                }).collect::<Vec<_>>(),
                "net_ns": p.net_ns,
                "net_ns_name": p.net_ns_name,
                "host_net_ns": p.host_net_ns,
                "sockets_read_at": (p.sockets_read_ms > 0).then(|| rfc3339(p.sockets_read_ms)),
                "sockets": p.sockets.iter().map(socket_json).collect::<Vec<_>>(),
                "sockets_total": p.sockets_total,
            })
        })
        .collect();
    json!({ "coverage": coverage_json(&r.coverage), "processes": procs })
}

/// A whole answer at once (the CLI prints it page by page with
/// [`ps_rows`] and [`ps_notes`]).
#[cfg(test)]
pub fn ps_table(r: &v1::ListProcessesResponse, width: usize) -> String {
    let mut out = ps_rows(&r.processes, width, true);
    out.push_str(&ps_notes(r));
    out
}

/// The processes' rows, with the header or without (a later page).
pub fn ps_rows(processes: &[v1::ProcessSummary], width: usize, header: bool) -> String {
    let cmd_width = width.saturating_sub(70).max(20);
    let rows: Vec<Vec<String>> = processes
        .iter()
        .map(|p| {
            vec![
                p.host.clone(),
                p.key.unwrap_or_default().pid.to_string(),
                p.uid.to_string(),
                p.packages.to_string(),
                p.stale_artifacts.to_string(),
                p.outbound_sockets.to_string(),
                fit(&netns_text(p), 16),
                fit(&p.workload, 24),
                fit(
                    if p.cmdline.is_empty() {
                        &p.workload
                    } else {
                        &p.cmdline
                    },
                    cmd_width,
                ),
            ]
        })
        .collect();
    let out = table(
        &[
            "HOST", "PID", "UID", "PKGS", "STALE", "OUT", "NETNS", "WORKLOAD", "CMD",
        ],
        &rows,
        "",
    );
    if header {
        out
    } else {
        out.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_string())
    }
}

/// What follows the rows: the coverage, how old each host's socket view
/// is, and the processes that map code from no file on disk. It reads
/// only each process's host, socket-read time, key and anonymous code.
pub fn ps_notes(r: &v1::ListProcessesResponse) -> String {
    let mut out = String::new();
    out.push_str(&coverage_line(&r.coverage));
    // How old each host's socket view is: the tables are read at rescans
    // (one in ten with eBPF, which adds each connect as it happens).
    let now = r.coverage.as_ref().map_or(0, |c| c.generated_at_ms);
    let mut read: std::collections::BTreeMap<&str, i64> = Default::default();
    for p in &r.processes {
        let t = read.entry(&p.host).or_default();
        *t = (*t).max(p.sockets_read_ms);
    }
    let unknown: Vec<&str> = read
        .iter()
        .filter(|(_, at)| **at == 0)
        .map(|(h, _)| *h)
        .collect();
    // One line for a fleet: the oldest view (each host's: -o json).
    if let Some((host, at)) = read
        .iter()
        .filter(|(_, at)| **at > 0)
        .min_by_key(|(_, at)| **at)
    {
        out.push_str(&format!(
            "note: sockets are as of the last read of the socket tables{}: {} at {} ({} s before this answer); connects eBPF saw since are included\n",
            if read.len() > 1 { ", oldest" } else { "" },
            clean(host),
            rfc3339(*at),
            (now - at).max(0) / 1000
        ));
    }
    if !unknown.is_empty() {
        out.push_str(&format!(
            "note: no time of the last socket-table read from {}\n",
            clean(&unknown.join(", "))
        ));
    }
    out.push_str(&anonymous_code_lines(&r.processes));
    out
}

/// One warning per process that maps code from no file on disk (a memfd,
/// an unlinked file no package owns): fileless loading is what a responder
/// looks for first, so the table says it, not only `-o json`.
fn anonymous_code_lines(processes: &[v1::ProcessSummary]) -> String {
    let mut out = String::new();
    for p in processes.iter().filter(|p| !p.anonymous_code.is_empty()) {
        let what: Vec<String> = p
            .anonymous_code
            .iter()
            .map(|a| {
                let c = a.content.clone().unwrap_or_default();
                let hash = if c.sha256.is_empty() {
                    format!("not hashed: {}", c.unhashed)
                } else {
                    format!("sha256 {}", c.sha256)
                };
                format!("{} ({})", clean(&bytes_text(&a.path)), clean(&hash))
            })
            .collect();
        out.push_str(&format!(
            "warning: {} pid {} maps code from no file on disk: {}\n",
            clean(&p.host),
            p.key.unwrap_or_default().pid,
            what.join(", ")
        ));
    }
    out
}

/// The terminal's width, or 120 when stdout is not a terminal.
pub fn width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct we pass.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        120
    }
}

/// The findings as a query answer (`matches` are the findings), plus how
/// many advisories were evaluated and how long that took.
pub fn findings_json(r: &v1::ListFindingsResponse) -> Value {
    let as_query = v1::FindPackageResponse {
        next_page_token: String::new(),
        query: "findings".into(),
        coverage: r.coverage.clone(),
        matches: r.findings.clone(),
        scope_map_error: r.scope_map_error.clone(),
    };
    let mut v = query_json(&as_query);
    v["findings"] = v["matches"].take();
    if let Some(o) = v.as_object_mut() {
        o.remove("matches");
        o.remove("query");
    }
    v["advisories_evaluated"] = json!(r.advisories);
    v["elapsed_ms"] = json!(r.elapsed_ms);
    v
}

/// A whole answer at once (the CLI prints it page by page with
/// [`findings_rows`] and [`findings_footer`]).
#[cfg(test)]
pub fn findings_table(r: &v1::ListFindingsResponse, width: usize) -> String {
    let mut out = findings_rows(&r.findings, width, true);
    out.push_str(&findings_footer(
        r.findings.len(),
        r.advisories,
        r.elapsed_ms,
    ));
    out
}

/// The findings' rows and their "pulled in by" lines, with the header or
/// without (a later page).
pub fn findings_rows(findings: &[v1::Match], width: usize, header: bool) -> String {
    let exe_width = width.saturating_sub(125).max(16);
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|m| {
            let p = m.package.clone().unwrap_or_default();
            vec![
                m.advisory.clone(),
                match m.score {
                    Some(score) => format!("{} {score:.1}", or_dash(&m.severity)),
                    None => or_dash(&m.severity),
                },
                m.workload.clone(),
                m.host.clone(),
                m.key.unwrap_or_default().pid.to_string(),
                fit(&bytes_text(&m.exe), exe_width),
                package_cell(&p),
                p.version,
                m.evidence.clone(),
                m.workload_detail
                    .as_ref()
                    .map_or_else(|| "-".into(), scope_text),
                m.privilege
                    .as_ref()
                    .map_or_else(|| "-".into(), |p| or_dash(&p.summary)),
            ]
        })
        .collect();
    let out = table(
        &[
            "ADVISORY",
            "SEVERITY",
            "WORKLOAD",
            "HOST",
            "PID",
            "EXE",
            "PACKAGE",
            "VERSION",
            "EVIDENCE",
            "SCOPE",
            "PRIVILEGE",
        ],
        &rows,
        "",
    );
    let mut out = if header {
        out
    } else {
        out.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_string())
    };
    out.push_str(&chains(&findings.iter().collect::<Vec<_>>()));
    out
}

pub fn findings_footer(count: usize, advisories: u32, elapsed_ms: i64) -> String {
    format!("{count} finding(s) from {advisories} advisories in {elapsed_ms} ms\n")
}

pub fn import_json(r: &v1::ImportAdvisoriesResponse) -> Value {
    json!({
        "added": r.added,
        "updated": r.updated,
        "unchanged": r.unchanged,
        "older": r.older,
        "refused": r.refused,
        "withdrawn": r.withdrawn,
        "matches": r.matches,
        "time_to_scope_ms": r.time_to_scope_ms,
        "errors": r.errors.iter().map(|e| json!({
            "file": e.file,
            "position": e.position,
            "reason": e.reason,
        })).collect::<Vec<_>>(),
    })
}

pub fn import_table(r: &v1::ImportAdvisoriesResponse) -> String {
    let mut out = format!(
        "{} added, {} updated, {} unchanged, {} older than stored (left out), {} held from another source (refused), {} withdrawn\n\
         {} package match(es) for what changed; findings complete after {} ms (time to scope)\n",
        r.added,
        r.updated,
        r.unchanged,
        r.older,
        r.refused,
        r.withdrawn,
        r.matches,
        r.time_to_scope_ms
    );
    for e in &r.errors {
        if e.position.is_empty() {
            out.push_str(&format!("error: {}: {}\n", e.file, e.reason));
        } else {
            out.push_str(&format!("error: {}:{}: {}\n", e.file, e.position, e.reason));
        }
    }
    out
}

fn advisory_json(a: &v1::AdvisorySummary) -> Value {
    json!({
        "id": a.id,
        "aliases": a.aliases,
        "modified": a.modified,
        "withdrawn": (!a.withdrawn.is_empty()).then_some(&a.withdrawn),
        "summary": a.summary,
        "severity": a.severity,
        "score": a.score,
        "vector": a.vector,
        "packages": a.packages.iter().map(|p| json!({
            "ecosystem": p.ecosystem,
            "osv_ecosystem": p.osv_ecosystem,
            "name": p.name,
        })).collect::<Vec<_>>(),
        "source": a.source,
        "provenance": provenance_json(a.provenance.as_ref()),
    })
}

/// Who imported a record, when, from which source, and its hash.
fn provenance_json(p: Option<&v1::Provenance>) -> Value {
    let p = p.cloned().unwrap_or_default();
    json!({
        "imported_by": p.imported_by,
        "imported_at": (p.imported_ms != 0).then(|| rfc3339(p.imported_ms)),
        "source": p.source,
        "sha256": p.sha256,
    })
}

pub fn delete_json(r: &v1::DeleteAdvisoryResponse) -> Value {
    json!({
        "deleted": r.advisory.as_ref().map(advisory_json),
        "matches": r.matches,
    })
}

pub fn delete_table(r: &v1::DeleteAdvisoryResponse) -> String {
    let a = r.advisory.clone().unwrap_or_default();
    let p = a.provenance.clone().unwrap_or_default();
    format!(
        "deleted {} (source {}, imported by {}, sha256 {}); its findings are gone\n",
        a.id,
        or_dash(&p.source),
        or_dash(&p.imported_by),
        or_dash(&p.sha256)
    )
}

/// `documents` (the advisories as imported) when showing one.
pub fn advisories_json(list: &[v1::AdvisorySummary], documents: &[String]) -> Value {
    let advisories: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut v = advisory_json(a);
            if let Some(d) = documents.get(i) {
                v["document"] = Value::String(d.clone());
            }
            v
        })
        .collect();
    json!({ "advisories": advisories })
}

fn packages_cell(a: &v1::AdvisorySummary) -> String {
    let mut names: Vec<String> = a
        .packages
        .iter()
        .map(|p| format!("{}:{}", p.osv_ecosystem, p.name))
        .collect();
    names.dedup();
    if names.len() > 3 {
        let more = names.len() - 3;
        names.truncate(3);
        names.push(format!("+{more}"));
    }
    names.join(" ")
}

pub fn advisories_table(list: &[v1::AdvisorySummary]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                or_dash(&a.severity),
                a.score
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "-".into()),
                if a.withdrawn.is_empty() {
                    "no".into()
                } else {
                    "WITHDRAWN".into()
                },
                packages_cell(a),
                fit(&a.aliases.join(" "), 40),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "SEVERITY",
            "SCORE",
            "WITHDRAWN",
            "PACKAGES",
            "ALIASES",
        ],
        &rows,
        "  ",
    );
    out.push_str(&format!("{} advisories\n", list.len()));
    out
}

pub fn advisory_detail(list: &[v1::AdvisorySummary], documents: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in list.iter().enumerate() {
        out.push_str(&format!("{}  {}\n", a.id, a.summary));
        out.push_str(&format!("  aliases   {}\n", or_dash(&a.aliases.join(" "))));
        out.push_str(&format!(
            "  severity  {} {} {}\n",
            or_dash(&a.severity),
            a.score.map(|s| format!("{s:.1}")).unwrap_or_default(),
            a.vector
        ));
        out.push_str(&format!("  modified  {}\n", a.modified));
        if !a.withdrawn.is_empty() {
            out.push_str(&format!("  WITHDRAWN {}\n", a.withdrawn));
        }
        for p in &a.packages {
            out.push_str(&format!("  affects   {} {}\n", p.osv_ecosystem, p.name));
        }
        out.push_str(&format!("  file      {}\n", a.source));
        let p = a.provenance.clone().unwrap_or_default();
        out.push_str(&format!("  source    {}\n", or_dash(&p.source)));
        out.push_str(&format!(
            "  imported  by {} at {}\n",
            or_dash(&p.imported_by),
            if p.imported_ms == 0 {
                "-".to_string()
            } else {
                rfc3339(p.imported_ms)
            }
        ));
        out.push_str(&format!("  sha256    {}\n", or_dash(&p.sha256)));
        if documents.get(i).is_some() && list.len() == 1 {
            out.push_str("  (-o json includes the advisory as imported)\n");
        }
    }
    out
}

fn sbom_json(s: &v1::SbomSummary) -> Value {
    json!({
        "image": s.image,
        "name": s.name,
        "sha256": s.sha256,
        "format": s.format,
        "syntax": s.syntax,
        "spec_version": s.spec_version,
        "tools": s.tools,
        "components": s.components,
        "edges": s.edges,
        "packages": s.packages,
        "ecosystems": s.ecosystems.iter().collect::<BTreeMap<_, _>>(),
        "pushed": rfc3339(s.pushed_ms),
        "provenance": provenance_json(s.provenance.as_ref()),
    })
}

pub fn sbom_push_json(r: &v1::PushSbomResponse) -> Value {
    json!({
        "outcome": r.outcome,
        "matches": r.matches,
        "sbom": r.sbom.as_ref().map(sbom_json),
    })
}

pub fn sbom_push_table(r: &v1::PushSbomResponse) -> String {
    let s = r.sbom.clone().unwrap_or_default();
    let ecosystems: BTreeMap<_, _> = s.ecosystems.iter().collect();
    format!(
        "{} {} SBOM of {} ({} {} {}, by {}): {} components, {} edges; {} with a purl patchgap matches ({}); {} advisory match(es)\n",
        s.name,
        r.outcome,
        s.image,
        s.format,
        s.spec_version,
        s.syntax,
        if s.tools.is_empty() {
            "-".to_string()
        } else {
            s.tools.join(", ")
        },
        s.components,
        s.edges,
        s.packages,
        ecosystems
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.matches
    )
}

pub fn sboms_json(r: &v1::ListSbomsResponse) -> Value {
    json!({ "sboms": r.sboms.iter().map(sbom_json).collect::<Vec<_>>() })
}

pub fn sboms_table(r: &v1::ListSbomsResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .sboms
        .iter()
        .map(|s| {
            vec![
                s.image.clone(),
                s.name.clone(),
                format!("{} {}", s.format, s.spec_version),
                s.components.to_string(),
                s.packages.to_string(),
                rfc3339(s.pushed_ms),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "IMAGE",
            "FILE",
            "FORMAT",
            "COMPONENTS",
            "PACKAGES",
            "PUSHED",
        ],
        &rows,
        "",
    );
    out.push_str(&format!("{} SBOM(s)\n", r.sboms.len()));
    out
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { s.into() }
}

fn incident_source_json(s: &Option<v1::IncidentSource>) -> Value {
    let s = s.clone().unwrap_or_default();
    match s.kind.as_str() {
        "advisory" => json!({
            "kind": s.kind,
            "advisory": s.advisory,
            "asked_as": opt_str(&s.asked_as),
            "host": opt_str(&s.host),
        }),
        "package" => json!({
            "kind": s.kind,
            "package": s.package,
            "range": opt_str(&s.range),
        }),
        "policy_rule" => json!({"kind": s.kind, "rule": s.rule, "subject": s.subject}),
        "egress_alert" => json!({
            "kind": s.kind,
            "alert": s.alert,
            "changes": s.changes.iter().map(|c| json!({
                "name": c.name,
                "from": c.from_version,
                "to": c.to_version,
                "at": rfc3339(c.at_ms),
                "evidence": c.evidence,
            })).collect::<Vec<_>>(),
        }),
        _ => json!({"kind": s.kind}),
    }
}

fn incident_scope_json(s: &Option<v1::IncidentScope>) -> Value {
    let s = s.clone().unwrap_or_default();
    let pids: serde_json::Map<String, Value> = s
        .pids
        .iter()
        .map(|h| (h.host.clone(), json!(h.pids)))
        .collect();
    json!({
        "workloads": s.workloads,
        "hosts": s.hosts,
        "image_digests": s.image_digests,
        "pids": pids,
        "data_scopes": s.data_scopes,
        "privileged": s.privileged,
        "evidence": opt_str(&s.evidence),
        "packages": s.packages,
        "processes": s.processes,
        "truncated": s.truncated,
    })
}

/// One event: its number, time, actor and kind, then the fields of its
/// payload (the collector's JSON, kept as it is).
fn incident_event_json(e: &v1::IncidentEvent) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("seq".into(), e.seq.into());
    out.insert("at".into(), rfc3339(e.at_ms).into());
    out.insert("actor".into(), e.actor.clone().into());
    out.insert("kind".into(), e.kind.clone().into());
    match serde_json::from_str::<Value>(&e.payload_json) {
        Ok(Value::Object(fields)) => {
            for (k, v) in fields {
                if k != "kind" {
                    out.insert(k, v);
                }
            }
        }
        _ => {
            out.insert("payload".into(), e.payload_json.clone().into());
        }
    }
    Value::Object(out)
}

/// A time the collector sends as milliseconds since the epoch, where 0
/// means "not yet": RFC 3339, or null.
fn time_or_null(ms: i64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        rfc3339(ms).into()
    }
}

/// A workload an action acts on: its cgroup on one host, the exposed pids
/// and how many processes the cgroup holds in all (what else an isolation
/// would cut off), and the other workloads seen in that cgroup.
fn plan_target_json(t: &v1::PlanTarget) -> Value {
    json!({
        "host": t.host,
        "workload": t.workload,
        "cgroup": t.cgroup,
        "pids": t.pids,
        "processes": t.processes,
        "shared_with": t.shared_with,
    })
}

fn plan_exclusion_json(e: &v1::PlanExclusion) -> Value {
    json!({
        "host": e.host,
        "workload": e.workload,
        "cgroup": e.cgroup,
        "guard": e.guard,
        "pids": e.pids,
    })
}

fn plan_action_json(a: &v1::PlanAction) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "mode": a.mode,
        "approval": a.approval,
        // null: in force until a responder reverts it.
        "revert_after_ms": (a.revert_after_ms > 0).then_some(a.revert_after_ms),
        "allow": a.allow,
        "no_executor": opt_str(&a.no_executor),
        "executor": opt_str(&a.executor),
        "targets": a.targets.iter().map(plan_target_json).collect::<Vec<_>>(),
        "excluded": a.excluded.iter().map(plan_exclusion_json).collect::<Vec<_>>(),
    })
}

/// A plan's own fields, shared by `incident plan` (at the top level) and
/// an incident's `plan`.
fn plan_fields(p: &v1::Plan) -> serde_json::Map<String, Value> {
    let Value::Object(fields) = json!({
        "hash": p.hash,
        "tier": p.tier,
        "tier_name": opt_str(&p.tier_name),
        "exception": opt_str(&p.exception),
        "requested_by": opt_str(&p.requested_by),
        "made_at": time_or_null(p.made_at_ms),
        "expires_at": time_or_null(p.expires_at_ms),
        "actions": p.actions.iter().map(plan_action_json).collect::<Vec<_>>(),
    }) else {
        unreachable!("json! of an object is an object")
    };
    fields
}

/// The policy in force when the collector answered; null when it did not
/// say (a collector from before policies).
fn policy_json(p: &Option<v1::PolicyInForce>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => {
            let mut v = json!({
                "source": p.source,
                "loaded_at": time_or_null(p.loaded_at_ms),
                "reload_error": opt_str(&p.reload_error),
            });
            // Incident open and show say how verification runs.
            if let Some(s) = &p.verify {
                v["verify"] = json!({
                    "every_ms": s.every_ms,
                    "streak": s.streak,
                    "evidence": s.evidence,
                    "from": {
                        "every": s.every_from,
                        "streak": s.streak_from,
                        "evidence": s.evidence_from,
                    },
                });
            }
            v
        }
    }
}

/// One of an incident's actions, with where it stands: each state's time
/// (null until it entered it), the time to containment (null until the
/// first block, or would-be block, was counted) and the agents' counters.
pub fn incident_action_json(a: &v1::IncidentAction) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "mode": a.mode,
        "approval": a.approval,
        "state": a.state,
        "reason": opt_str(&a.reason),
        "plan": a.plan,
        "approved_by": opt_str(&a.approved_by),
        "targets": a.targets.iter().map(plan_target_json).collect::<Vec<_>>(),
        "planned_at": time_or_null(a.planned_at_ms),
        "requested_at": time_or_null(a.requested_at_ms),
        "applied_at": time_or_null(a.applied_at_ms),
        "verified_at": time_or_null(a.verified_at_ms),
        "reverted_at": time_or_null(a.reverted_at_ms),
        "failed_at": time_or_null(a.failed_at_ms),
        "revert_at": time_or_null(a.revert_at_ms),
        "revert_verified_at": time_or_null(a.revert_verified_at_ms),
        "time_to_containment_ms": (a.time_to_containment_ms > 0).then_some(a.time_to_containment_ms),
        "blocked_connects": a.blocked_connects,
        "blocked_packets": a.blocked_packets,
        "would_block_connects": a.would_block_connects,
        "would_block_packets": a.would_block_packets,
        "executor": opt_str(&a.executor),
        "denied_admissions": a.denied_admissions,
        "would_deny_admissions": a.would_deny_admissions,
        "warned_admissions": a.warned_admissions,
        "overridden_admissions": a.overridden_admissions,
    })
}

/// `incident plan -o json`: the incident's id, the plan's fields, whether
/// this call recorded it, and the policy it was made under.
pub fn plan_json(r: &v1::PlanIncidentResponse) -> Value {
    let i = r.incident.clone().unwrap_or_default();
    let mut v = plan_fields(&r.plan.clone().unwrap_or_default());
    v.insert("id".into(), i.id.into());
    v.insert("recorded".into(), r.recorded.into());
    v.insert("policy".into(), policy_json(&i.policy));
    Value::Object(v)
}

/// `incident approve -o json`: the incident after the approval, and the
/// actions it requested.
pub fn approve_json(r: &v1::ApproveIncidentResponse) -> Value {
    let mut v = incident_json(&r.incident.clone().unwrap_or_default(), false);
    v["requested"] = json!(r.requested);
    v
}

/// `incident revert -o json`: the incident after the revert, and the
/// actions it lifted.
pub fn revert_json(r: &v1::RevertIncidentResponse) -> Value {
    let mut v = incident_json(&r.incident.clone().unwrap_or_default(), false);
    v["reverted"] = json!(r.reverted);
    v
}

/// An incident as `incident open` and `incident show` print it (with its
/// events when `events`), and as each element of `incidents`.
pub fn incident_json(i: &v1::Incident, events: bool) -> Value {
    let mut v = json!({
        "id": i.id,
        "dedup_key": i.dedup_key,
        "state": i.state,
        "tier": i.tier,
        "tier_name": opt_str(&i.tier_name),
        "source": incident_source_json(&i.source),
        "opened_at": rfc3339(i.opened_at_ms),
        "opened_by": i.opened_by,
        "updated_at": rfc3339(i.updated_at_ms),
        "scope": incident_scope_json(&i.scope),
        "policy": policy_json(&i.policy),
        "plan": i.plan.as_ref().map(|p| Value::Object(plan_fields(p))),
        "actions": i.actions.iter().map(incident_action_json).collect::<Vec<_>>(),
    });
    if let Some(ver) = &i.verification {
        v["verification"] = crate::verify::verification_json(ver);
    }
    if events {
        v["events"] = i.events.iter().map(incident_event_json).collect();
    }
    v
}

pub fn incidents_json(r: &v1::ListIncidentsResponse) -> Value {
    json!({
        "incidents": r.incidents.iter().map(|i| incident_json(i, false)).collect::<Vec<_>>(),
        "next_before": opt_str(&r.next_before),
        "policy": policy_json(&r.policy),
        "time_to_containment": r.time_to_containment.iter().map(|t| json!({
            "tier": t.tier,
            "actions": t.actions,
            "min_ms": t.min_ms,
            "median_ms": t.median_ms,
            "max_ms": t.max_ms,
        })).collect::<Vec<_>>(),
    })
}

fn tier_text(i: &v1::Incident) -> String {
    tier_label(i.tier, &i.tier_name)
}

/// "1 critical-sensitive", "1" without a name, "-" when not routed.
fn tier_label(tier: Option<u32>, name: &str) -> String {
    match tier {
        None => "-".into(),
        Some(t) if name.is_empty() => t.to_string(),
        Some(t) => format!("{t} {name}"),
    }
}

/// A duration as the policy writes one: "90ms", "4.2s", "30m", "2h",
/// "1d2h".
fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 && !ms.is_multiple_of(1000) {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let secs = ms / 1000;
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// The policy line of an incident or a plan; a failed reload is said
/// first and loudly, since the plan is then the previous policy's.
fn policy_lines(p: &Option<v1::PolicyInForce>) -> Vec<String> {
    let Some(p) = p else { return Vec::new() };
    let loaded = if p.loaded_at_ms > 0 {
        format!(" (loaded {})", rfc3339(p.loaded_at_ms))
    } else {
        String::new()
    };
    let mut lines = Vec::new();
    if !p.reload_error.is_empty() {
        lines.push(format!(
            "WARNING: policy reload failed, previous in force: {}{loaded}: {}",
            p.source, p.reload_error
        ));
    }
    lines.push(format!("policy     {}{loaded}", p.source));
    if let Some(v) = &p.verify {
        lines.push(format!(
            "verify     every {} ms ({}), streak {} ({}), evidence {} ({})",
            v.every_ms,
            clean(&v.every_from),
            v.streak,
            clean(&v.streak_from),
            clean(&v.evidence.join(", ")),
            clean(&v.evidence_from)
        ));
    }
    lines
}

/// A target as one line: "web-1 k8s:prod/ml/Deployment/trainer/trainer
/// cgroup /kubepods/…: 2 exposed pids (4242 4250) of 5 processes; shared
/// with container:web-1/sidecar".
fn target_text(t: &v1::PlanTarget) -> String {
    let pids: Vec<String> = t.pids.iter().map(u32::to_string).collect();
    let mut line = format!(
        "{} {} cgroup {}: {} exposed pid(s) ({}) of {} process(es)",
        t.host,
        t.workload,
        or_dash(&t.cgroup),
        t.pids.len(),
        if pids.is_empty() {
            "-".into()
        } else {
            pids.join(" ")
        },
        t.processes
    );
    if !t.shared_with.is_empty() {
        line.push_str(&format!("; shared with {}", t.shared_with.join(", ")));
    }
    line
}

fn exclusion_text(e: &v1::PlanExclusion) -> String {
    let pids: Vec<String> = e.pids.iter().map(u32::to_string).collect();
    format!(
        "{} {} cgroup {}: left out by guard {}{}",
        e.host,
        e.workload,
        or_dash(&e.cgroup),
        e.guard,
        if pids.is_empty() {
            String::new()
        } else {
            format!(" (pids {})", pids.join(" "))
        }
    )
}

/// Appends `text` as one line (escaped, so no field can break it) after
/// `indent`.
fn push_line(out: &mut String, indent: &str, text: &str) {
    out.push_str(indent);
    out.push_str(&clean_to(text, 4096));
    out.push('\n');
}

/// `incident plan` for a person: the tier, the hash to approve, then each
/// action with its settings, its exact targets and what the guards leave
/// out.
pub fn plan_detail(r: &v1::PlanIncidentResponse) -> String {
    let i = r.incident.clone().unwrap_or_default();
    let p = r.plan.clone().unwrap_or_default();
    let mut out = String::new();
    for l in policy_lines(&i.policy) {
        if l.starts_with("WARNING") {
            push_line(&mut out, "", &l);
        }
    }
    push_line(
        &mut out,
        "",
        &format!(
            "{} plan{}",
            i.id,
            if r.recorded {
                " (new: recorded in the incident's log)"
            } else {
                " (unchanged since it was recorded)"
            }
        ),
    );
    push_line(&mut out, "  ", &format!("hash       {}", p.hash));
    push_line(
        &mut out,
        "  ",
        &format!("tier       {}", tier_label(p.tier, &p.tier_name)),
    );
    if !p.exception.is_empty() {
        push_line(
            &mut out,
            "  ",
            &format!("exception  {} (the incident is exempt)", p.exception),
        );
    }
    if p.made_at_ms > 0 {
        push_line(
            &mut out,
            "  ",
            &format!(
                "made       {} by {}",
                rfc3339(p.made_at_ms),
                or_dash(&p.requested_by)
            ),
        );
    }
    if p.expires_at_ms > 0 {
        push_line(
            &mut out,
            "  ",
            &format!(
                "expires    {} (approve before, or plan again)",
                rfc3339(p.expires_at_ms)
            ),
        );
    }
    for l in policy_lines(&i.policy) {
        if !l.starts_with("WARNING") {
            push_line(&mut out, "  ", &l);
        }
    }
    if p.actions.is_empty() {
        out.push_str("\nno actions: nothing to contain\n");
        return out;
    }
    out.push_str("\nactions:\n");
    for a in &p.actions {
        let mut head = format!(
            "#{} {}  mode {}  approval {}",
            a.id, a.kind, a.mode, a.approval
        );
        if a.revert_after_ms > 0 {
            head.push_str(&format!(
                "  revert after {}",
                duration_text(a.revert_after_ms)
            ));
        }
        push_line(&mut out, "  ", &head);
        if !a.no_executor.is_empty() {
            push_line(
                &mut out,
                "     ",
                &format!("not carried out: {}", a.no_executor),
            );
        }
        if !a.executor.is_empty() {
            push_line(
                &mut out,
                "     ",
                &format!("carried out by {}", executor_text(&a.executor)),
            );
        }
        if !a.allow.is_empty() {
            push_line(
                &mut out,
                "     ",
                &format!(
                    "allowed beyond loopback, the collector and resolvers: {}",
                    a.allow.join(", ")
                ),
            );
        }
        if a.executor == "deploy_gate" {
            // It acts on admissions, not on workloads.
            push_line(
                &mut out,
                "     ",
                "targets: admissions of the incident's image digests and namespaces",
            );
        } else if a.targets.is_empty() {
            push_line(&mut out, "     ", "targets: none");
        } else {
            push_line(&mut out, "     ", "targets:");
            for t in &a.targets {
                push_line(&mut out, "       ", &target_text(t));
            }
        }
        if !a.excluded.is_empty() {
            push_line(&mut out, "     ", "excluded:");
            for e in &a.excluded {
                push_line(&mut out, "       ", &exclusion_text(e));
            }
        }
    }
    if p.actions.iter().any(|a| a.approval == "required") {
        push_line(
            &mut out,
            "\n",
            &format!(
                "approve with: patchgap incident approve {} --plan {}",
                i.id, p.hash
            ),
        );
    }
    out
}

/// Where an action stands: its state with the time it entered it.
fn action_state_text(a: &v1::IncidentAction) -> String {
    let at = match a.state.as_str() {
        "planned" => a.planned_at_ms,
        "requested" => a.requested_at_ms,
        "applied" => a.applied_at_ms,
        "verified" => a.verified_at_ms,
        "reverted" => a.reverted_at_ms,
        "failed" => a.failed_at_ms,
        _ => 0,
    };
    if at > 0 {
        format!("{} since {}", a.state, rfc3339(at))
    } else {
        a.state.clone()
    }
}

/// The actions of an incident, each with its state, times, effect and
/// targets (`incident show`, `approve` and `revert`).
/// Who carries an action out, in words.
fn executor_text(executor: &str) -> String {
    match executor {
        "deploy_gate" => "the deploy gate (admission webhook)".into(),
        "agents" => "the agents".into(),
        e => match e.strip_prefix("endpoint:") {
            Some(name) => format!("a signed webhook to endpoint {name}"),
            None => e.to_string(),
        },
    }
}

pub fn actions_detail(actions: &[v1::IncidentAction]) -> String {
    let mut out = String::new();
    if actions.is_empty() {
        return out;
    }
    out.push_str("\nactions:\n");
    for a in actions {
        push_line(
            &mut out,
            "  ",
            &format!(
                "#{} {}  mode {}  approval {}  {}",
                a.id,
                a.kind,
                a.mode,
                a.approval,
                action_state_text(a)
            ),
        );
        let mut from = format!("plan {}", or_dash(&a.plan));
        if !a.approved_by.is_empty() {
            from.push_str(&format!("; approved by {}", a.approved_by));
        }
        if !a.executor.is_empty() {
            from.push_str(&format!("; carried out by {}", executor_text(&a.executor)));
        }
        push_line(&mut out, "     ", &from);
        if !a.reason.is_empty() {
            push_line(&mut out, "     ", &format!("reason: {}", a.reason));
        }
        let times: Vec<String> = [
            ("planned", a.planned_at_ms),
            ("requested", a.requested_at_ms),
            ("applied", a.applied_at_ms),
            ("verified", a.verified_at_ms),
            ("failed", a.failed_at_ms),
            ("reverted", a.reverted_at_ms),
            ("revert verified", a.revert_verified_at_ms),
            ("reverts at", a.revert_at_ms),
        ]
        .into_iter()
        .filter(|(_, ms)| *ms > 0)
        .map(|(what, ms)| format!("{what} {}", rfc3339(ms)))
        .collect();
        if !times.is_empty() {
            push_line(&mut out, "     ", &times.join(", "));
        }
        let effect = if a.mode == "shadow" {
            format!(
                "would block {} connect(s), {} packet(s)",
                a.would_block_connects, a.would_block_packets
            )
        } else {
            format!(
                "blocked {} connect(s), {} packet(s)",
                a.blocked_connects, a.blocked_packets
            )
        };
        let ttc = if a.time_to_containment_ms > 0 {
            format!(
                "time to containment {}",
                duration_text(a.time_to_containment_ms as u64)
            )
        } else {
            "no effect seen yet".into()
        };
        // Records and rotations block nothing: no counters to show.
        let counted =
            a.blocked_connects + a.blocked_packets + a.would_block_connects + a.would_block_packets
                > 0;
        if a.executor == "deploy_gate" {
            // The gate's effect is on admissions, not connects.
            let admissions = if a.mode == "shadow" {
                format!("would deny {} admission(s)", a.would_deny_admissions)
            } else {
                format!(
                    "denied {} admission(s), warned {}, break-glass {}",
                    a.denied_admissions, a.warned_admissions, a.overridden_admissions
                )
            };
            push_line(&mut out, "     ", &format!("{admissions}; {ttc}"));
        } else if !a.targets.is_empty() || counted || a.time_to_containment_ms > 0 {
            push_line(&mut out, "     ", &format!("{effect}; {ttc}"));
        }
        for t in &a.targets {
            push_line(&mut out, "     ", &format!("target {}", target_text(t)));
        }
    }
    out
}

pub fn incidents_table(r: &v1::ListIncidentsResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .incidents
        .iter()
        .map(|i| {
            let s = i.scope.clone().unwrap_or_default();
            vec![
                i.id.clone(),
                i.state.clone(),
                tier_text(i),
                rfc3339(i.opened_at_ms),
                i.opened_by.clone(),
                s.processes.to_string(),
                s.hosts.len().to_string(),
                i.dedup_key.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "STATE",
            "TIER",
            "OPENED",
            "BY",
            "PROCESSES",
            "HOSTS",
            "KEY",
        ],
        &rows,
        "",
    );
    for line in policy_lines(&r.policy) {
        out.push_str(&line);
        out.push('\n');
    }
    for t in &r.time_to_containment {
        out.push_str(&format!(
            "time to containment, tier {}: median {} ms (min {}, max {}) over {} action(s)\n",
            t.tier, t.median_ms, t.min_ms, t.max_ms, t.actions
        ));
    }
    out.push_str(&format!("{} incident(s)", r.incidents.len()));
    if !r.next_before.is_empty() {
        out.push_str(&format!(
            "; older ones with --before {}",
            clean(&r.next_before)
        ));
    }
    out.push('\n');
    out
}

fn list_text(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// What a scope change added and removed, from its payload: "+2 pids
/// (alpha: 7, 9), -1 workload (host:alpha)".
fn scope_change_text(payload: &Value) -> String {
    let side = |sign: &str, d: &Value| -> Vec<String> {
        let mut parts = Vec::new();
        let pids: Vec<String> = d["pids"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(host, p)| {
                let list: Vec<String> = p
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.to_string())
                    .collect();
                format!("{host}: {}", list.join(" "))
            })
            .collect();
        if !pids.is_empty() {
            parts.push(format!("{sign}pids ({})", pids.join("; ")));
        }
        for what in ["workloads", "hosts"] {
            let names: Vec<&str> = d[what]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !names.is_empty() {
                parts.push(format!("{sign}{what} ({})", names.join(", ")));
            }
        }
        parts
    };
    let mut parts = side("+", &payload["added"]);
    parts.extend(side("-", &payload["removed"]));
    let processes = payload["scope"]["processes"].as_u64().unwrap_or(0);
    if parts.is_empty() {
        format!("{processes} process(es); evidence or data changed")
    } else {
        format!("{processes} process(es): {}", parts.join(", "))
    }
}

/// One line of detail for an event in `incident show`.
fn event_detail(e: &v1::IncidentEvent) -> String {
    let payload: Value = serde_json::from_str(&e.payload_json).unwrap_or(Value::Null);
    let s = |k: &str| payload[k].as_str().unwrap_or("").to_string();
    match e.kind.as_str() {
        "opened" => s("dedup_key"),
        "scope_changed" => scope_change_text(&payload),
        "state_changed" => {
            let reason = s("reason");
            if reason.is_empty() {
                format!("{} -> {}", s("from"), s("to"))
            } else {
                format!("{} -> {}: {reason}", s("from"), s("to"))
            }
        }
        "note" => s("text"),
        _ => e.payload_json.clone(),
    }
}

/// `incident show` (and `incident open`) for a person: the incident, its
/// scope, and its event log.
pub fn incident_detail(i: &v1::Incident, more_events: bool) -> String {
    let s = i.scope.clone().unwrap_or_default();
    let src = i.source.clone().unwrap_or_default();
    let what = match src.kind.as_str() {
        "advisory" => {
            let mut w = format!("advisory {}", src.advisory);
            if !src.asked_as.is_empty() {
                w.push_str(&format!(" (asked as {})", src.asked_as));
            }
            if !src.host.is_empty() {
                w.push_str(&format!(" on host {}", src.host));
            }
            w
        }
        "package" if src.range.is_empty() => format!("package {}", src.package),
        "package" => format!("package {} {}", src.package, src.range),
        other => other.to_string(),
    };
    let pids: Vec<String> = s
        .pids
        .iter()
        .map(|h| {
            let list: Vec<String> = h.pids.iter().map(u32::to_string).collect();
            format!("{}: {}", h.host, list.join(" "))
        })
        .collect();
    let lines = [
        ("state", format!("{} (tier {})", i.state, tier_text(i))),
        (
            "opened",
            format!("{} by {}", rfc3339(i.opened_at_ms), i.opened_by),
        ),
        ("from", what),
        ("key", i.dedup_key.clone()),
        ("updated", rfc3339(i.updated_at_ms)),
        (
            "scope",
            format!(
                "{} process(es) on {} host(s); evidence {}; privileged {}{}",
                s.processes,
                s.hosts.len(),
                or_dash(&s.evidence),
                if s.privileged { "yes" } else { "no" },
                if s.truncated {
                    "; cut at the collector's bound"
                } else {
                    ""
                }
            ),
        ),
        ("hosts", list_text(&s.hosts)),
        ("workloads", list_text(&s.workloads)),
        ("images", list_text(&s.image_digests)),
        ("data", list_text(&s.data_scopes)),
        ("pids", list_text(&pids)),
        ("packages", list_text(&s.packages)),
    ];
    let mut out = String::new();
    let policy = policy_lines(&i.policy);
    // A failed reload comes before anything else: every plan below was
    // made under the previous policy.
    for l in policy.iter().filter(|l| l.starts_with("WARNING")) {
        push_line(&mut out, "", l);
    }
    out.push_str(&format!("{}\n", clean(&i.id)));
    for (k, v) in lines {
        out.push_str(&format!("  {k:<10} {}\n", clean_to(&v, 4096)));
    }
    for l in policy.iter().filter(|l| !l.starts_with("WARNING")) {
        push_line(&mut out, "  ", l);
    }
    if let Some(p) = &i.plan {
        let mut plan = format!("plan       {}", or_dash(&p.hash));
        if p.made_at_ms > 0 {
            plan.push_str(&format!(
                " (made {} by {}",
                rfc3339(p.made_at_ms),
                or_dash(&p.requested_by)
            ));
            if p.expires_at_ms > 0 {
                plan.push_str(&format!("; expires {}", rfc3339(p.expires_at_ms)));
            }
            plan.push(')');
        }
        push_line(&mut out, "  ", &plan);
    }
    out.push_str(&actions_detail(&i.actions));
    if let Some(v) = &i.verification {
        out.push_str(&crate::verify::verification_detail(&i.state, v));
    }
    if !i.events.is_empty() {
        out.push_str("\nevents:\n");
        let rows: Vec<Vec<String>> = i
            .events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    rfc3339(e.at_ms),
                    e.actor.clone(),
                    e.kind.clone(),
                    event_detail(e),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SEQ", "AT", "ACTOR", "KIND", "DETAIL"],
            &rows,
            "  ",
        ));
        if more_events {
            out.push_str("  (more events than shown)\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finding a responder reads at 7 a.m.: which advisory, how bad, in
    /// which workload and data scope, with which privilege, and for a
    /// declared package the chain that pulled it in.
    #[test]
    fn findings_table_shows_scope_privilege_and_chain() {
        let m = v1::Match {
            host: "node-1".into(),
            workload: "container:node-1/trainer".into(),
            key: Some(v1::ProcessKey {
                pid: 4242,
                start_ticks: 1,
            }),
            exe: b"/usr/bin/python3".to_vec(),
            package: Some(v1::Package {
                ecosystem: "pypi".into(),
                name: "setuptools".into(),
                version: "65.5.0".into(),
                ..Default::default()
            }),
            evidence: "declared".into(),
            advisory: "PYSEC-2022-43012".into(),
            severity: "HIGH".into(),
            score: Some(7.5),
            status: "affected".into(),
            sbom_image: format!("sha256:{}", "ab".repeat(32)),
            pulled_in_by: vec!["ipython@8.12.3".into(), "setuptools@65.5.0".into()],
            workload_detail: Some(v1::WorkloadSummary {
                scope: Some(v1::DataScope {
                    classification: "sensitive".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            privilege: Some(v1::Privilege {
                summary: "root,CAP_SYS_ADMIN".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = findings_table(
            &v1::ListFindingsResponse {
                next_page_token: String::new(),
                findings: vec![m],
                advisories: 1,
                ..Default::default()
            },
            200,
        );
        for want in [
            "PYSEC-2022-43012",
            "HIGH 7.5",
            "sensitive",
            "root,CAP_SYS_ADMIN",
            "declared",
            "pypi:setuptools 65.5.0: pulled in by ipython@8.12.3 (SBOM of sha256:abababababab)",
            "1 finding(s) from 1 advisories",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
    }

    /// ps names each process's network namespace, and says how old each
    /// host's socket view is; connections name a named namespace.
    #[test]
    fn ps_and_connections_tables_name_the_netns_and_the_socket_age() {
        let now = 1_795_900_000_000;
        let coverage = Some(v1::Coverage {
            generated_at_ms: now,
            ..Default::default()
        });
        let proc = |pid, net_ns, name: &str, host_net_ns, read| v1::ProcessSummary {
            host: "node-1".into(),
            key: Some(v1::ProcessKey {
                pid,
                start_ticks: 1,
            }),
            net_ns,
            net_ns_name: name.into(),
            host_net_ns,
            sockets_read_ms: read,
            ..Default::default()
        };
        let out = ps_table(
            &v1::ListProcessesResponse {
                next_page_token: String::new(),
                coverage: coverage.clone(),
                processes: vec![
                    proc(1, 4026531840, "", true, now - 42_000),
                    proc(2, 4026532999, "blue", false, now - 42_000),
                    proc(3, 4026533000, "", false, now - 42_000),
                    proc(4, 0, "", false, 0),
                ],
            },
            160,
        );
        assert!(!out.contains("warning:"), "{out}");
        for want in [
            "NETNS",
            "0    host",
            "0    blue",
            "net:[4026533000]",
            "node-1 at 2026-11-28T21:05:58.000Z (42 s before this answer)",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
        let out = connections_table(&v1::ListConnectionsResponse {
            coverage,
            connections: vec![v1::ConnectionSummary {
                remote_addr: "127.0.0.1".into(),
                remote_port: 19090,
                net_ns_name: "blue".into(),
                ..Default::default()
            }],
        });
        assert!(out.contains("127.0.0.1:19090 (netns blue)"), "{out}");
    }

    #[test]
    fn ps_warns_of_anonymous_code() {
        let p = v1::ProcessSummary {
            host: "node-1".into(),
            key: Some(v1::ProcessKey {
                pid: 7,
                start_ticks: 1,
            }),
            anonymous_code: vec![
                v1::Artifact {
                    path: b"/memfd:payload".to_vec(),
                    deleted: true,
                    content: Some(v1::Content {
                        size: 3,
                        sha256: "ab12".into(),
                        unhashed: String::new(),
                    }),
                    ..Default::default()
                },
                v1::Artifact {
                    path: b"/tmp/x.so".to_vec(),
                    deleted: true,
                    content: Some(v1::Content {
                        unhashed: "larger than 64 MiB".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let out = ps_table(
            &v1::ListProcessesResponse {
                next_page_token: String::new(),
                coverage: None,
                processes: vec![p],
            },
            160,
        );
        assert!(
            out.contains(
                "warning: node-1 pid 7 maps code from no file on disk: /memfd:payload (sha256 ab12), /tmp/x.so (not hashed: larger than 64 MiB)"
            ),
            "{out}"
        );
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_900_000_000), "2026-11-28T21:06:40.000Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        for ms in [0, 951_782_400_123, 1_795_900_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-11-28T07:00:00+01:00"),
            parse_rfc3339("2026-11-28T06:00:00Z")
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T06:00:00",
            "x026-11-28T06:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn fit_keeps_the_tail() {
        assert_eq!(fit("/usr/lib/python3.11", 8), "…hon3.11");
        assert_eq!(fit("/bin/sh", 8), "/bin/sh");
    }

    #[test]
    fn clean_escapes_control_characters_and_clips() {
        assert_eq!(clean("a\x1b[31mred\x1b[0m"), "a\\x1b[31mred\\x1b[0m");
        assert_eq!(clean("a\nb\tc\rd\x7f"), "a\\nb\\tc\\rd\\x7f");
        assert_eq!(
            clean("csi\u{9b}2J bidi\u{202e}x"),
            "csi\\u{9b}2J bidi\\u{202e}x"
        );
        assert_eq!(clean("é ü /usr/lib"), "é ü /usr/lib");
        let long = clean(&"h".repeat(100_000));
        assert_eq!(long.chars().count(), MAX_CELL);
        assert!(long.ends_with('…'));
        // Escapes count toward the bound.
        let esc = clean(&"\x1b".repeat(MAX_CELL));
        assert_eq!(esc.chars().count(), MAX_CELL);
        assert_eq!(clean(&"x".repeat(MAX_CELL)), "x".repeat(MAX_CELL));
        assert_eq!(terminal_safe("a\x1bb\nc\n"), "a\\x1bb\nc\n");
    }

    #[test]
    fn a_connected_host_before_its_first_full_scan_is_not_stale() {
        let host = |fresh, connected, last_full_scan_ms| v1::HostSummary {
            fresh,
            connected,
            last_full_scan_ms,
            ..Default::default()
        };
        assert_eq!(host_state(&host(true, true, 1)), "fresh");
        assert_eq!(host_state(&host(false, true, 0)), "first scan");
        // Scanned once, silent since: stale, connected or not.
        assert_eq!(host_state(&host(false, true, 1)), "STALE");
        assert_eq!(host_state(&host(false, false, 0)), "STALE");
    }

    /// Issue 14: a 100,000-character hostname panicked every table
    /// ("Formatting argument out of range"), and a newline in a command
    /// line forged a row.
    #[test]
    fn hostile_fields_render_one_line_per_row() {
        let host = "h".repeat(100_000);
        let hosts = v1::ListHostsResponse {
            hosts: vec![v1::HostSummary {
                identity: Some(v1::HostIdentity {
                    hostname: host.clone(),
                    ..Default::default()
                }),
                conflict: "two agents\nclaim it".into(),
                ..Default::default()
            }],
            coverage: Some(v1::Coverage {
                hosts: vec![v1::HostCoverage {
                    host: host.clone(),
                    ebpf_reason: "x\ny".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let t = hosts_table(&hosts);
        assert!(t.lines().all(|l| l.chars().count() < 600), "{t}");
        assert!(t.contains("x\\ny"), "{t}");
        assert!(
            t.contains("CONFLICT: hhh") && t.contains(": two agents\\nclaim it"),
            "{t}"
        );
        let ps = v1::ListProcessesResponse {
            processes: vec![v1::ProcessSummary {
                host: host.clone(),
                cmdline: "sh -c \x1b[2J\nFORGED 1 2 3".into(),
                workload: "w\rX".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = ps_table(&ps, 100_000);
        assert!(!t.contains('\x1b') && !t.contains('\r'), "{t}");
        assert!(!t.lines().any(|l| l.starts_with("FORGED")), "{t}");
        assert!(t.contains("\\x1b[2J\\nFORGED"), "{t}");
        let q = v1::FindPackageResponse {
            query: "p\x1b".into(),
            matches: vec![v1::Match {
                host,
                workload: "\x1b]0;title\x07".into(),
                exe: b"/bin/\x1b[1m".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = query_groups(&q.matches, 100_000)
            + &query_footer(q.matches.len(), &q.query, "", &q.coverage);
        assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t}");
    }

    /// Every text field of an incident (agents name hosts, workloads and
    /// packages; tokens name actors; notes are free text) reaches the
    /// terminal escaped, one row per event; JSON keeps the exact text.
    #[test]
    fn hostile_incident_fields_render_safely() {
        let evil = "\x1b[31mRED\x1b[0m\nFORGED-ROW\tx\u{202e}";
        let payload = json!({"kind": "note", "text": evil}).to_string();
        let i = v1::Incident {
            id: format!("INC-1{evil}"),
            dedup_key: format!("advisory:{evil}"),
            state: "scoped".into(),
            source: Some(v1::IncidentSource {
                kind: "advisory".into(),
                advisory: evil.into(),
                host: evil.into(),
                ..Default::default()
            }),
            opened_by: evil.into(),
            scope: Some(v1::IncidentScope {
                workloads: vec![evil.into()],
                hosts: vec![evil.into()],
                pids: vec![v1::HostPids {
                    host: evil.into(),
                    pids: vec![1],
                }],
                packages: vec![evil.into()],
                processes: 1,
                ..Default::default()
            }),
            events: vec![v1::IncidentEvent {
                seq: 1,
                actor: evil.into(),
                kind: "note".into(),
                payload_json: payload,
                ..Default::default()
            }],
            ..Default::default()
        };
        let list = v1::ListIncidentsResponse {
            incidents: vec![i.clone()],
            next_before: evil.into(),
            time_to_containment: vec![],
            policy: None,
        };
        for text in [incident_detail(&i, true), incidents_table(&list)] {
            for bad in ['\x1b', '\r', '\t', '\u{202e}'] {
                assert!(!text.contains(bad), "{bad:?} reached the terminal:\n{text}");
            }
            assert!(
                !text.lines().any(|l| l.starts_with("FORGED-ROW")),
                "a forged row:\n{text}"
            );
            assert!(text.contains("\\x1b[31mRED"), "{text}");
        }
        let json = incident_json(&i, true);
        assert_eq!(json["opened_by"], evil);
        assert_eq!(json["events"][0]["text"], evil);
        assert_eq!(json["events"][0]["actor"], evil);
    }

    use crate::snapshots::{a_contained_incident, a_plan, an_incident};

    fn planned() -> v1::PlanIncidentResponse {
        v1::PlanIncidentResponse {
            incident: Some(v1::Incident {
                plan: Some(a_plan()),
                ..an_incident()
            }),
            plan: Some(a_plan()),
            recorded: true,
        }
    }

    /// The plan a responder approves from: the hash whole (it is copied
    /// into `approve`), the tier, each action's settings, its targets with
    /// exposed pids of all processes, what a guard left out, and why an
    /// action will not be carried out.
    #[test]
    fn plan_text_names_hash_targets_and_exclusions() {
        let text = plan_detail(&planned());
        println!("{text}");
        let hash = "9c1f".repeat(16);
        for want in [
            "INC-3 plan (new: recorded in the incident's log)".to_string(),
            format!("  hash       {hash}"),
            "  tier       1 critical in a sensitive scope".into(),
            "  made       2025-12-05T02:02:00.000Z by alice".into(),
            "  expires    2025-12-05T03:02:00.000Z".into(),
            "  policy     built-in (loaded 2025-12-05T01:43:20.000Z)".into(),
            "  #1 isolate_affected_workloads  mode enforce  approval required  revert after 2h".into(),
            "allowed beyond loopback, the collector and resolvers: 10.20.0.0/16".into(),
            "web-1 k8s:prod/ml/Deployment/trainer/trainer cgroup /kubepods.slice/".into(),
            ": 2 exposed pid(s) (4242 4250) of 5 process(es)".into(),
            "web-1 unit:patchgap-agent.service cgroup /system.slice/patchgap-agent.service: left out by guard protect_agent (pids 812)".into(),
            "  #2 rotate_scoped_tokens  mode enforce  approval required\n     not carried out: no executor configured".into(),
            "  #3 open_incident_sev1  mode enforce  approval auto".into(),
            format!("approve with: patchgap incident approve INC-3 --plan {hash}"),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("WARNING"), "{text}");

        let mut again = planned();
        again.recorded = false;
        assert!(plan_detail(&again).contains("(unchanged since it was recorded)"));
        // Nothing waits for approval: no approve hint.
        let mut auto = planned();
        let p = auto.plan.as_mut().unwrap();
        p.actions.retain(|a| a.approval == "auto");
        assert!(!plan_detail(&auto).contains("approve with"));
        auto.plan.as_mut().unwrap().actions.clear();
        assert!(plan_detail(&auto).contains("no actions: nothing to contain"));
    }

    /// `-o json` of a plan: exact names, RFC 3339 times, null for what is
    /// unset (0 ms, an empty string), and numbers kept as numbers.
    #[test]
    fn plan_json_fields_times_and_nulls() {
        let v = plan_json(&planned());
        assert_eq!(v["id"], "INC-3");
        assert_eq!(v["hash"], "9c1f".repeat(16));
        assert_eq!(v["tier"], 1);
        assert_eq!(v["tier_name"], "critical in a sensitive scope");
        assert_eq!(v["exception"], Value::Null);
        assert_eq!(v["recorded"], true);
        assert_eq!(v["requested_by"], "alice");
        assert_eq!(v["made_at"], "2025-12-05T02:02:00.000Z");
        assert_eq!(v["expires_at"], "2025-12-05T03:02:00.000Z");
        assert_eq!(v["policy"]["source"], "built-in");
        assert_eq!(v["policy"]["reload_error"], Value::Null);
        let a = &v["actions"][0];
        assert_eq!(a["id"], 1);
        assert_eq!(a["kind"], "isolate_affected_workloads");
        assert_eq!(a["revert_after_ms"], 7_200_000);
        assert_eq!(a["no_executor"], Value::Null);
        assert_eq!(a["allow"], json!(["10.20.0.0/16"]));
        assert_eq!(a["targets"][0]["pids"], json!([4242, 4250]));
        assert_eq!(a["targets"][0]["processes"], 5);
        assert_eq!(a["targets"][0]["shared_with"], json!([]));
        assert_eq!(a["excluded"][0]["guard"], "protect_agent");
        assert_eq!(a["excluded"][0]["pids"], json!([812]));
        let b = &v["actions"][1];
        assert_eq!(b["revert_after_ms"], Value::Null, "0: until reverted");
        assert_eq!(b["no_executor"], "no executor configured");

        // An unrecorded plan has no times: null, never the epoch.
        let mut bare = planned();
        let p = bare.plan.as_mut().unwrap();
        p.made_at_ms = 0;
        p.expires_at_ms = 0;
        p.tier = None;
        p.exception = "SEC-1234".into();
        let v = plan_json(&bare);
        assert_eq!(v["made_at"], Value::Null);
        assert_eq!(v["expires_at"], Value::Null);
        assert_eq!(v["tier"], Value::Null);
        assert_eq!(v["exception"], "SEC-1234");
    }

    /// Each action's times are RFC 3339 or null, the time to containment
    /// null until an effect was seen, the counters as counted.
    #[test]
    fn action_json_times_are_rfc3339_or_null() {
        let i = a_contained_incident();
        let v = incident_json(&i, false);
        assert_eq!(v["tier"], 1);
        assert_eq!(v["tier_name"], "critical in a sensitive scope");
        assert_eq!(v["plan"]["hash"], "9c1f".repeat(16));
        let a = &v["actions"][0];
        assert_eq!(a["state"], "applied");
        assert_eq!(a["approved_by"], "bob");
        assert_eq!(a["planned_at"], "2025-12-05T02:02:00.000Z");
        assert_eq!(a["requested_at"], "2025-12-05T02:05:00.000Z");
        assert_eq!(a["applied_at"], "2025-12-05T02:05:01.250Z");
        assert_eq!(a["revert_at"], "2025-12-05T04:05:00.000Z");
        for unset in [
            "verified_at",
            "reverted_at",
            "failed_at",
            "revert_verified_at",
            "reason",
        ] {
            assert_eq!(a[unset], Value::Null, "{unset}");
        }
        assert_eq!(a["time_to_containment_ms"], 302_400);
        assert_eq!(a["blocked_connects"], 3);
        assert_eq!(a["blocked_packets"], 41);
        assert_eq!(a["would_block_connects"], 0);
        let failed = &v["actions"][1];
        assert_eq!(failed["reason"], "no executor configured");
        assert_eq!(failed["failed_at"], "2025-12-05T02:05:00.000Z");
        assert_eq!(failed["time_to_containment_ms"], Value::Null, "0: not yet");
        assert_eq!(failed["targets"], json!([]));
        // Before any plan: null plan, empty actions.
        let v = incident_json(&an_incident(), false);
        assert_eq!(v["plan"], Value::Null);
        assert_eq!(v["actions"], json!([]));
    }

    /// `incident show` for a person: tier with its name, the plan hash,
    /// each action's state and effect; a failed policy reload first and
    /// loudly.
    #[test]
    fn show_text_has_actions_plan_and_a_loud_reload_error() {
        let mut i = a_contained_incident();
        i.policy = Some(v1::PolicyInForce {
            source: "/etc/patchgap/policy.toml".into(),
            loaded_at_ms: 1_764_899_000_000,
            reload_error: "policy.toml:12:8: unknown action kind".into(),
            verify: None,
        });
        let text = incident_detail(&i, false);
        println!("{text}");
        assert!(
            text.starts_with("WARNING: policy reload failed, previous in force: /etc/patchgap/policy.toml (loaded 2025-12-05T01:43:20.000Z): policy.toml:12:8: unknown action kind\n"),
            "{text}"
        );
        for want in [
            "  state      contained (tier 1 critical in a sensitive scope)".to_string(),
            format!(
                "  plan       {} (made 2025-12-05T02:02:00.000Z by alice; expires 2025-12-05T03:02:00.000Z)",
                "9c1f".repeat(16)
            ),
            "  #1 isolate_affected_workloads  mode enforce  approval required  applied since 2025-12-05T02:05:01.250Z".into(),
            "approved by bob".into(),
            "blocked 3 connect(s), 41 packet(s); time to containment 5m2s".into(),
            "reverts at 2025-12-05T04:05:00.000Z".into(),
            "  #2 rotate_scoped_tokens  mode enforce  approval required  failed since 2025-12-05T02:05:00.000Z".into(),
            "reason: no executor configured".into(),
            "target web-1 k8s:prod/ml/Deployment/trainer/trainer".into(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        // The listing shows the tier with its name.
        let list = incidents_table(&v1::ListIncidentsResponse {
            policy: i.policy.clone(),
            incidents: vec![i],
            next_before: String::new(),
            time_to_containment: vec![v1::TierContainment {
                tier: 1,
                actions: 3,
                min_ms: 800,
                median_ms: 1_200,
                max_ms: 4_000,
            }],
        });
        assert!(list.contains("1 critical in a sensitive scope"), "{list}");
        // The listing's tiers are the policy's routing: a failed reload is
        // said there too.
        assert!(
            list.contains(
                "WARNING: policy reload failed, previous in force: /etc/patchgap/policy.toml"
            ),
            "{list}"
        );
        assert!(
            list.contains(
                "time to containment, tier 1: median 1200 ms (min 800, max 4000) over 3 action(s)"
            ),
            "{list}"
        );
    }

    #[test]
    fn shadow_actions_say_what_they_would_block() {
        let mut i = a_contained_incident();
        i.actions.truncate(1);
        let a = &mut i.actions[0];
        a.mode = "shadow".into();
        a.would_block_connects = 7;
        a.would_block_packets = 9;
        a.time_to_containment_ms = 0;
        let text = actions_detail(&i.actions);
        assert!(
            text.contains("would block 7 connect(s), 9 packet(s); no effect seen yet"),
            "{text}"
        );
    }

    #[test]
    fn durations_read_as_the_policy_writes_them() {
        assert_eq!(duration_text(7_200_000), "2h");
        assert_eq!(duration_text(1_800_000), "30m");
        assert_eq!(duration_text(90_000), "1m30s");
        assert_eq!(duration_text(86_400_000 + 3_600_000), "1d1h");
        assert_eq!(duration_text(4_200), "4.2s");
        assert_eq!(duration_text(45_000), "45s");
        assert_eq!(duration_text(250), "250ms");
    }

    /// Plans carry what agents named (hosts, workloads, cgroups) and what
    /// the policy file says (guards, the reload error): escaped in text,
    /// exact in JSON.
    #[test]
    fn hostile_plan_fields_render_safely() {
        let evil = "\x1b[31mRED\x1b[0m\nFORGED-ROW\tx\u{202e}";
        let mut r = planned();
        let p = r.plan.as_mut().unwrap();
        p.hash = evil.into();
        p.tier_name = evil.into();
        let a = &mut p.actions[0];
        a.targets[0].workload = evil.into();
        a.targets[0].shared_with = vec![evil.into()];
        a.excluded[0].guard = evil.into();
        a.allow = vec![evil.into()];
        a.no_executor = evil.into();
        r.incident.as_mut().unwrap().policy = Some(v1::PolicyInForce {
            source: evil.into(),
            reload_error: evil.into(),
            ..Default::default()
        });
        let mut i = a_contained_incident();
        i.actions[0].reason = evil.into();
        i.actions[0].approved_by = evil.into();
        i.actions[0].targets[0].cgroup = evil.into();
        for text in [plan_detail(&r), actions_detail(&i.actions)] {
            for bad in ['\x1b', '\r', '\t', '\u{202e}'] {
                assert!(!text.contains(bad), "{bad:?} reached the terminal:\n{text}");
            }
            assert!(
                !text.lines().any(|l| l.starts_with("FORGED-ROW")),
                "a forged row:\n{text}"
            );
            assert!(text.contains("\\x1b[31mRED"), "{text}");
        }
        let v = plan_json(&r);
        assert_eq!(v["hash"], evil);
        assert_eq!(v["actions"][0]["excluded"][0]["guard"], evil);
    }
}
