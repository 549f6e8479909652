//! Advisories (by id and alias), the (advisory, package) pairs to match, and
//! the matcher's verdicts. A write replaces whole advisories or a scope's
//! verdicts in one transaction.

use patchgap_proto::v1;
use rusqlite::{Connection, OptionalExtension, params};

use super::packages::{PACKAGE_COLUMNS, package_row};
use crate::store::{
    AdvisoryMatch, AdvisoryRecord, Candidates, MatchCandidate, MatchScope, Provenance, PutOutcome,
    Result, Verdict, package_key,
};

/// Advisories with their aliases and packages; `data` only when asked.
fn advisory_rows(
    conn: &Connection,
    filter: &str,
    arg: &str,
    with_data: bool,
) -> Result<Vec<AdvisoryRecord>> {
    let sql = format!(
        "SELECT a.id, a.modified, a.modified_ms, a.withdrawn, a.summary, a.severity, a.score,
                    a.vector, a.source, CASE WHEN ?2 THEN a.data ELSE x'' END, a.aliases,
                    a.imported_by, a.imported_ms, a.origin, a.sha256
             FROM advisory a {filter} ORDER BY a.id"
    );
    let mut rows: Vec<AdvisoryRecord> = conn
        .prepare_cached(&sql)?
        .query_map(params![arg, with_data], |r| {
            Ok(AdvisoryRecord {
                id: r.get(0)?,
                modified: r.get(1)?,
                modified_ms: r.get(2)?,
                withdrawn: r.get(3)?,
                summary: r.get(4)?,
                severity: r.get(5)?,
                score: r.get(6)?,
                vector: r.get(7)?,
                source: r.get(8)?,
                data: r.get(9)?,
                aliases: r
                    .get::<_, String>(10)?
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
                provenance: Provenance {
                    imported_by: r.get(11)?,
                    imported_ms: r.get(12)?,
                    source: r.get(13)?,
                    sha256: r.get(14)?,
                },
                ..Default::default()
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut packages = conn.prepare_cached(
        "SELECT ecosystem, osv_ecosystem, name FROM advisory_package WHERE advisory_id = ?1
             ORDER BY osv_ecosystem, name",
    )?;
    for a in &mut rows {
        a.packages = packages
            .query_map([&a.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
    }
    Ok(rows)
}

pub(super) fn put_advisories(
    conn: &mut Connection,
    advisories: &[AdvisoryRecord],
    replace: bool,
) -> Result<Vec<PutOutcome>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(advisories.len());
    for a in advisories {
        let stored: Option<(i64, Vec<u8>, String, String)> = tx
            .prepare_cached("SELECT modified_ms, data, origin, sha256 FROM advisory WHERE id = ?1")?
            .query_row([&a.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let outcome = match stored {
            None => PutOutcome::Added,
            // Replacing: neither the source nor the time holds it back.
            Some((_, _, origin, sha)) if replace => {
                if origin == a.provenance.source && sha == a.provenance.sha256 {
                    PutOutcome::Unchanged
                } else {
                    PutOutcome::Updated
                }
            }
            // Held from another source: only a replace may take it over.
            Some((_, _, origin, _)) if !origin.is_empty() && origin != a.provenance.source => {
                PutOutcome::OtherSource
            }
            // A time that says nothing: the content decides.
            Some((m, data, _, _))
                if m == a.modified_ms
                    && m == crate::store::UNKNOWN_MODIFIED_MS
                    && data != a.data =>
            {
                PutOutcome::Updated
            }
            Some((m, ..)) if m == a.modified_ms => PutOutcome::Unchanged,
            Some((m, ..)) if m > a.modified_ms => PutOutcome::Older,
            Some(_) => PutOutcome::Updated,
        };
        out.push(outcome);
        if !matches!(outcome, PutOutcome::Added | PutOutcome::Updated) {
            continue;
        }
        // ON DELETE CASCADE clears the aliases and packages.
        tx.prepare_cached("DELETE FROM advisory WHERE id = ?1")?
            .execute([&a.id])?;
        // Pending (matched = 0) until put_matches writes its verdicts.
        tx.prepare_cached(
            "INSERT INTO advisory (id, modified, modified_ms, withdrawn, summary, severity, score,
             vector, aliases, source, data, imported_ms, imported_by, origin, sha256, matched)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 0)",
        )?
        .execute(params![
            a.id,
            a.modified,
            a.modified_ms,
            a.withdrawn,
            a.summary,
            a.severity,
            a.score,
            a.vector,
            a.aliases.join(","),
            a.source,
            a.data,
            a.provenance.imported_ms,
            a.provenance.imported_by,
            a.provenance.source,
            a.provenance.sha256
        ])?;
        let mut alias = tx.prepare_cached(
            "INSERT OR IGNORE INTO advisory_alias (alias, advisory_id) VALUES (?1, ?2)",
        )?;
        alias.execute(params![a.id.to_uppercase(), a.id])?;
        for x in &a.aliases {
            alias.execute(params![x.to_uppercase(), a.id])?;
        }
        let mut pkg = tx.prepare_cached(
            "INSERT OR IGNORE INTO advisory_package (advisory_id, ecosystem, osv_ecosystem, key, name)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (eco, osv_eco, name) in &a.packages {
            pkg.execute(params![a.id, eco, osv_eco, package_key(eco, name), name])?;
        }
    }
    tx.commit()?;
    Ok(out)
}

pub(super) fn delete_advisory(
    conn: &mut Connection,
    id: &str,
    rematch: &[String],
) -> Result<Option<AdvisoryRecord>> {
    let tx = conn.transaction()?;
    let Some(record) = advisory_rows(&tx, "WHERE a.id = ?1", id, false)?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    // Explicit, though ON DELETE CASCADE would clear them too.
    tx.prepare_cached("DELETE FROM advisory_match WHERE advisory_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM advisory_alias WHERE advisory_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM advisory_package WHERE advisory_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM advisory WHERE id = ?1")?
        .execute([id])?;
    let mut pending = tx.prepare_cached("UPDATE advisory SET matched = 0 WHERE id = ?1")?;
    for other in rematch {
        pending.execute([other])?;
    }
    drop(pending);
    tx.commit()?;
    Ok(Some(record))
}

pub(super) fn pending_advisories(conn: &Connection, limit: usize) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT id FROM advisory WHERE matched = 0 ORDER BY id LIMIT ?1")?
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

pub(super) fn advisory(conn: &Connection, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT advisory_id FROM advisory_alias WHERE alias = ?1 ORDER BY advisory_id",
        )?
        .query_map([id_or_alias.trim().to_uppercase()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        out.extend(advisory_rows(conn, "WHERE a.id = ?1", &id, true)?);
    }
    Ok(out)
}

pub(super) fn advisories(
    conn: &Connection,
    ecosystem: Option<&str>,
) -> Result<Vec<AdvisoryRecord>> {
    match ecosystem {
        Some(eco) => advisory_rows(
            conn,
            "WHERE a.id IN (SELECT advisory_id FROM advisory_package WHERE ecosystem = ?1)",
            eco,
            false,
        ),
        None => advisory_rows(conn, "WHERE ?1 = ?1", "", false),
    }
}

pub(super) fn match_candidates(conn: &Connection, scope: &MatchScope) -> Result<Candidates> {
    let mut out = Vec::new();
    let mut read = Vec::new();
    let scope_size;
    match scope {
        MatchScope::Unmatched | MatchScope::Packages(_) => {
            // Each new package against the advisories naming it: by its
            // key, its source (Debian and rpm advisories name source
            // packages) or Maven's group:artifact.
            let packages: Vec<(i64, v1::Package)> = match scope {
                MatchScope::Packages(ids) => {
                    let mut stmt =
                        conn.prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.id = ?1"))?;
                    let mut found = Vec::with_capacity(ids.len());
                    for id in ids {
                        if let Some(p) = stmt.query_row([id], package_row).optional()? {
                            found.push(p);
                        }
                    }
                    found
                }
                _ => conn
                    .prepare_cached(&format!("{PACKAGE_COLUMNS} WHERE p.matched = 0"))?
                    .query_map([], package_row)?
                    .collect::<Result<_, _>>()?,
            };
            scope_size = packages.len();
            read = packages.iter().map(|(id, _)| *id).collect();
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT advisory_id FROM advisory_package
                 WHERE ecosystem = ?1 AND key IN (?2, ?3, ?4)",
            )?;
            for (id, p) in packages {
                let key = package_key(&p.ecosystem, &p.name);
                let source = p.source.to_lowercase();
                // Maven's group:artifact; Go's stdlib is also the
                // toolchain (see `matching::affects_package`).
                let other = if p.ecosystem == "golang" && key == "stdlib" {
                    "toolchain".to_string()
                } else {
                    format!("{source}:{key}")
                };
                let ids: Vec<String> = stmt
                    .query_map(params![p.ecosystem, key, source, other], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for advisory_id in ids {
                    out.push(MatchCandidate {
                        package_id: id,
                        package: p.clone(),
                        advisory_id,
                    });
                }
            }
        }
        MatchScope::Advisories(ids) => {
            scope_size = ids.len();
            let mut names = conn.prepare_cached(
                "SELECT DISTINCT ecosystem, key, name FROM advisory_package WHERE advisory_id = ?1",
            )?;
            let mut by_key = conn.prepare_cached(&format!(
                "{PACKAGE_COLUMNS} WHERE p.key = ?2 AND p.ecosystem = ?1
                 UNION {PACKAGE_COLUMNS} WHERE p.source = ?3 AND p.ecosystem = ?1"
            ))?;
            let mut maven = conn.prepare_cached(&format!(
                "{PACKAGE_COLUMNS} WHERE p.key = ?2 AND p.source = ?3 AND p.ecosystem = 'maven'"
            ))?;
            for advisory_id in ids {
                let wanted: Vec<(String, String, String)> = names
                    .query_map([advisory_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let mut seen = std::collections::HashSet::new();
                for (eco, key, name) in wanted {
                    let rows: Vec<(i64, v1::Package)> = match (eco.as_str(), name.split_once(':')) {
                        ("maven", Some((group, artifact))) => maven
                            .query_map(params![eco, artifact.to_lowercase(), group], package_row)?
                            .collect::<Result<_, _>>()?,
                        ("maven", None) | ("", _) => Vec::new(),
                        ("golang", _) if key == "toolchain" => by_key
                            .query_map(params![eco, "stdlib", "stdlib"], package_row)?
                            .collect::<Result<_, _>>()?,
                        _ => by_key
                            .query_map(params![eco, key, name], package_row)?
                            .collect::<Result<_, _>>()?,
                    };
                    for (id, package) in rows {
                        if seen.insert(id) {
                            out.push(MatchCandidate {
                                package_id: id,
                                package,
                                advisory_id: advisory_id.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(Candidates {
        scope_size,
        pairs: out,
        packages: read,
    })
}

pub(super) fn put_matches(
    conn: &mut Connection,
    scope: &MatchScope,
    matches: &[AdvisoryMatch],
) -> Result<()> {
    let tx = conn.transaction()?;
    match scope {
        MatchScope::Unmatched => {
            tx.execute(
                "DELETE FROM advisory_match WHERE package_id IN (SELECT id FROM package WHERE matched = 0)",
                [],
            )?;
        }
        MatchScope::Packages(ids) => {
            // Their verdicts are these: no longer unmatched.
            let mut del = tx.prepare_cached("DELETE FROM advisory_match WHERE package_id = ?1")?;
            let mut done = tx.prepare_cached("UPDATE package SET matched = 1 WHERE id = ?1")?;
            for id in ids {
                del.execute([id])?;
                done.execute([id])?;
            }
        }
        MatchScope::Advisories(ids) => {
            let mut del = tx.prepare_cached("DELETE FROM advisory_match WHERE advisory_id = ?1")?;
            // Their verdicts are written in this transaction: no longer
            // pending.
            let mut done =
                tx.prepare_cached("UPDATE advisory SET matched = 1 WHERE id = ?1 AND matched = 0")?;
            for id in ids {
                del.execute([id])?;
                done.execute([id])?;
            }
        }
    }
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO advisory_match (advisory_id, package_id, status) VALUES (?1, ?2, ?3)
             ON CONFLICT (advisory_id, package_id) DO UPDATE SET status = excluded.status",
        )?;
        for m in matches {
            ins.execute(params![m.advisory_id, m.package_id, m.status])?;
        }
    }
    if *scope == MatchScope::Unmatched {
        tx.execute("UPDATE package SET matched = 1 WHERE matched = 0", [])?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn verdicts(
    conn: &Connection,
    advisories: Option<&[String]>,
    include_fixed: bool,
) -> Result<Vec<Verdict>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.advisory_id, m.package_id, m.status, a.severity, a.score, a.vector
         FROM advisory_match m JOIN advisory a ON a.id = m.advisory_id AND a.withdrawn IS NULL
         WHERE (?1 IS NULL OR m.advisory_id = ?1) AND (?2 OR m.status = 'affected')
         ORDER BY m.advisory_id, m.package_id",
    )?;
    let mut out = Vec::new();
    let mut collect = |id: Option<&str>| -> Result<()> {
        let rows = stmt.query_map(params![id, include_fixed], |r| {
            Ok(Verdict {
                advisory_id: r.get(0)?,
                package_id: r.get(1)?,
                status: r.get(2)?,
                severity: r.get(3)?,
                score: r.get(4)?,
                vector: r.get(5)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
        Ok(())
    };
    match advisories {
        None => collect(None)?,
        Some(ids) => {
            for id in ids {
                collect(Some(id))?;
            }
        }
    }
    Ok(out)
}
