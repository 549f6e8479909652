//! Advisories (by id and alias), the (advisory, package) pairs to match, and
//! the matcher's verdicts. A write replaces whole advisories or a scope's
//! verdicts in one transaction; the stored row of each advisory written is
//! locked (`FOR UPDATE`) between its check and its write.

use patchgap_proto::v1;
use postgres::{Client, GenericClient};

use super::packages::{PACKAGE_COLUMNS, package_row};
use crate::store::{
    AdvisoryMatch, AdvisoryRecord, Candidates, MatchCandidate, MatchScope, Provenance, PutOutcome,
    Result, Verdict, package_key,
};

/// Advisories with their aliases and packages; `data` only when asked.
/// `filter` may use `$1` (`arg`).
fn advisory_rows(
    c: &mut impl GenericClient,
    filter: &str,
    arg: &str,
    with_data: bool,
) -> Result<Vec<AdvisoryRecord>> {
    let sql = format!(
        "SELECT a.id, a.modified, a.modified_ms, a.withdrawn, a.summary, a.severity, a.score,
                a.vector, a.source, CASE WHEN $2 THEN a.data ELSE '\\x'::BYTEA END, a.aliases,
                a.imported_by, a.imported_ms, a.origin, a.sha256
         FROM advisory a WHERE ($1::TEXT IS NOT NULL) AND {filter} ORDER BY a.id"
    );
    let mut rows: Vec<AdvisoryRecord> = c
        .query(&sql, &[&arg, &with_data])?
        .iter()
        .map(|r| AdvisoryRecord {
            id: r.get(0),
            modified: r.get(1),
            modified_ms: r.get(2),
            withdrawn: r.get(3),
            summary: r.get(4),
            severity: r.get(5),
            score: r.get(6),
            vector: r.get(7),
            source: r.get(8),
            data: r.get(9),
            aliases: r
                .get::<_, &str>(10)
                .split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
            provenance: Provenance {
                imported_by: r.get(11),
                imported_ms: r.get(12),
                source: r.get(13),
                sha256: r.get(14),
            },
            ..Default::default()
        })
        .collect();
    if rows.is_empty() {
        return Ok(rows);
    }
    let packages = c.prepare(
        "SELECT ecosystem, osv_ecosystem, name FROM advisory_package WHERE advisory_id = $1
         ORDER BY osv_ecosystem, name",
    )?;
    for a in &mut rows {
        a.packages = c
            .query(&packages, &[&a.id])?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    }
    Ok(rows)
}

pub(super) fn put_advisories(
    client: &mut Client,
    advisories: &[AdvisoryRecord],
    replace: bool,
) -> Result<Vec<PutOutcome>> {
    let mut tx = client.transaction()?;
    let select = tx.prepare(
        "SELECT modified_ms, data, origin, sha256 FROM advisory WHERE id = $1 FOR UPDATE",
    )?;
    let delete = tx.prepare("DELETE FROM advisory WHERE id = $1")?;
    // Pending (matched = false) until put_matches writes its verdicts.
    let insert = tx.prepare(
        "INSERT INTO advisory (id, modified, modified_ms, withdrawn, summary, severity, score,
         vector, aliases, source, data, imported_ms, imported_by, origin, sha256, matched)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, FALSE)",
    )?;
    let alias = tx.prepare(
        "INSERT INTO advisory_alias (alias, advisory_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )?;
    let pkg = tx.prepare(
        "INSERT INTO advisory_package (advisory_id, ecosystem, osv_ecosystem, key, name)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )?;
    let mut out = Vec::with_capacity(advisories.len());
    for a in advisories {
        let stored: Option<(i64, Vec<u8>, String, String)> = tx
            .query_opt(&select, &[&a.id])?
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)));
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
        // ON DELETE CASCADE clears the aliases, packages and verdicts.
        tx.execute(&delete, &[&a.id])?;
        tx.execute(
            &insert,
            &[
                &a.id,
                &a.modified,
                &a.modified_ms,
                &a.withdrawn,
                &a.summary,
                &a.severity,
                &a.score,
                &a.vector,
                &a.aliases.join(","),
                &a.source,
                &a.data,
                &a.provenance.imported_ms,
                &a.provenance.imported_by,
                &a.provenance.source,
                &a.provenance.sha256,
            ],
        )?;
        tx.execute(&alias, &[&a.id.to_uppercase(), &a.id])?;
        for x in &a.aliases {
            tx.execute(&alias, &[&x.to_uppercase(), &a.id])?;
        }
        for (eco, osv_eco, name) in &a.packages {
            tx.execute(&pkg, &[&a.id, eco, osv_eco, &package_key(eco, name), name])?;
        }
    }
    tx.commit()?;
    Ok(out)
}

pub(super) fn delete_advisory(
    client: &mut Client,
    id: &str,
    rematch: &[String],
) -> Result<Option<AdvisoryRecord>> {
    let mut tx = client.transaction()?;
    let Some(record) = advisory_rows(&mut tx, "a.id = $1", id, false)?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    // Explicit, though ON DELETE CASCADE would clear them too.
    tx.execute("DELETE FROM advisory_match WHERE advisory_id = $1", &[&id])?;
    tx.execute("DELETE FROM advisory_alias WHERE advisory_id = $1", &[&id])?;
    tx.execute(
        "DELETE FROM advisory_package WHERE advisory_id = $1",
        &[&id],
    )?;
    tx.execute("DELETE FROM advisory WHERE id = $1", &[&id])?;
    tx.execute(
        "UPDATE advisory SET matched = FALSE WHERE id = ANY($1)",
        &[&rematch],
    )?;
    tx.commit()?;
    Ok(Some(record))
}

pub(super) fn pending_advisories(c: &mut impl GenericClient, limit: usize) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT id FROM advisory WHERE NOT matched ORDER BY id LIMIT $1",
        &[&i64::try_from(limit).unwrap_or(i64::MAX)],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

pub(super) fn advisory(
    c: &mut impl GenericClient,
    id_or_alias: &str,
) -> Result<Vec<AdvisoryRecord>> {
    let ids: Vec<String> = c
        .query(
            "SELECT DISTINCT advisory_id FROM advisory_alias WHERE alias = $1 ORDER BY advisory_id",
            &[&id_or_alias.trim().to_uppercase()],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for id in ids {
        out.extend(advisory_rows(c, "a.id = $1", &id, true)?);
    }
    Ok(out)
}

pub(super) fn advisories(
    c: &mut impl GenericClient,
    ecosystem: Option<&str>,
) -> Result<Vec<AdvisoryRecord>> {
    match ecosystem {
        Some(eco) => advisory_rows(
            c,
            "a.id IN (SELECT advisory_id FROM advisory_package WHERE ecosystem = $1)",
            eco,
            false,
        ),
        None => advisory_rows(c, "TRUE", "", false),
    }
}

pub(super) fn match_candidates(
    c: &mut impl GenericClient,
    scope: &MatchScope,
) -> Result<Candidates> {
    let mut out = Vec::new();
    let mut read = Vec::new();
    let scope_size;
    match scope {
        MatchScope::Unmatched | MatchScope::Packages(_) => {
            // Each new package against the advisories naming it: by its
            // key, its source (Debian and rpm advisories name source
            // packages) or Maven's group:artifact.
            let rows = match scope {
                MatchScope::Packages(ids) => c.query(
                    &format!("{PACKAGE_COLUMNS} WHERE p.id = ANY($1) ORDER BY p.id"),
                    &[ids],
                )?,
                _ => c.query(
                    &format!("{PACKAGE_COLUMNS} WHERE NOT p.matched ORDER BY p.id"),
                    &[],
                )?,
            };
            let packages: Vec<(i64, v1::Package)> = rows.iter().map(package_row).collect();
            scope_size = packages.len();
            read = packages.iter().map(|(id, _)| *id).collect();
            let stmt = c.prepare(
                "SELECT DISTINCT advisory_id FROM advisory_package
                 WHERE ecosystem = $1 AND key IN ($2, $3, $4) ORDER BY advisory_id",
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
                for r in c.query(&stmt, &[&p.ecosystem, &key, &source, &other])? {
                    out.push(MatchCandidate {
                        package_id: id,
                        package: p.clone(),
                        advisory_id: r.get(0),
                    });
                }
            }
        }
        MatchScope::Advisories(ids) => {
            scope_size = ids.len();
            let names = c.prepare(
                "SELECT DISTINCT ecosystem, key, name FROM advisory_package WHERE advisory_id = $1
                 ORDER BY ecosystem, key, name",
            )?;
            let by_key = c.prepare(&format!(
                "{PACKAGE_COLUMNS} WHERE p.key = $2 AND p.ecosystem = $1
                 UNION {PACKAGE_COLUMNS} WHERE p.source = $3 AND p.ecosystem = $1
                 ORDER BY 1"
            ))?;
            let maven = c.prepare(&format!(
                "{PACKAGE_COLUMNS} WHERE p.key = $2 AND p.source = $3 AND p.ecosystem = $1 ORDER BY p.id"
            ))?;
            for advisory_id in ids {
                let wanted: Vec<(String, String, String)> = c
                    .query(&names, &[advisory_id])?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
                let mut seen = std::collections::HashSet::new();
                for (eco, key, name) in wanted {
                    let rows: Vec<(i64, v1::Package)> = match (eco.as_str(), name.split_once(':')) {
                        ("maven", Some((group, artifact))) => c
                            .query(&maven, &[&eco, &artifact.to_lowercase(), &group])?
                            .iter()
                            .map(package_row)
                            .collect(),
                        ("maven", None) | ("", _) => Vec::new(),
                        ("golang", _) if key == "toolchain" => c
                            .query(&by_key, &[&eco, &"stdlib", &"stdlib"])?
                            .iter()
                            .map(package_row)
                            .collect(),
                        _ => c
                            .query(&by_key, &[&eco, &key, &name])?
                            .iter()
                            .map(package_row)
                            .collect(),
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
    client: &mut Client,
    scope: &MatchScope,
    matches: &[AdvisoryMatch],
) -> Result<()> {
    let mut tx = client.transaction()?;
    match scope {
        MatchScope::Unmatched => {
            tx.execute(
                "DELETE FROM advisory_match WHERE package_id IN (SELECT id FROM package WHERE NOT matched)",
                &[],
            )?;
        }
        MatchScope::Packages(ids) => {
            // Their verdicts are these: no longer unmatched.
            tx.execute(
                "DELETE FROM advisory_match WHERE package_id = ANY($1)",
                &[ids],
            )?;
            tx.execute(
                "UPDATE package SET matched = TRUE WHERE id = ANY($1)",
                &[ids],
            )?;
        }
        MatchScope::Advisories(ids) => {
            tx.execute(
                "DELETE FROM advisory_match WHERE advisory_id = ANY($1)",
                &[ids],
            )?;
            // Their verdicts are written in this transaction: no longer
            // pending.
            tx.execute(
                "UPDATE advisory SET matched = TRUE WHERE id = ANY($1) AND NOT matched",
                &[ids],
            )?;
        }
    }
    let ins = tx.prepare(
        "INSERT INTO advisory_match (advisory_id, package_id, status) VALUES ($1, $2, $3)
         ON CONFLICT (advisory_id, package_id) DO UPDATE SET status = excluded.status",
    )?;
    for m in matches {
        tx.execute(&ins, &[&m.advisory_id, &m.package_id, &m.status])?;
    }
    if *scope == MatchScope::Unmatched {
        tx.execute("UPDATE package SET matched = TRUE WHERE NOT matched", &[])?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn verdicts(
    c: &mut impl GenericClient,
    advisories: Option<&[String]>,
    include_fixed: bool,
) -> Result<Vec<Verdict>> {
    let stmt = c.prepare(
        "SELECT m.advisory_id, m.package_id, m.status, a.severity, a.score, a.vector
         FROM advisory_match m JOIN advisory a ON a.id = m.advisory_id AND a.withdrawn IS NULL
         WHERE ($1::TEXT IS NULL OR m.advisory_id = $1) AND ($2 OR m.status = 'affected')
         ORDER BY m.advisory_id, m.package_id",
    )?;
    let mut out = Vec::new();
    let mut collect = |c: &mut dyn FnMut(Option<&str>) -> Result<Vec<postgres::Row>>,
                       id: Option<&str>|
     -> Result<()> {
        for r in c(id)? {
            out.push(Verdict {
                advisory_id: r.get(0),
                package_id: r.get(1),
                status: r.get(2),
                severity: r.get(3),
                score: r.get(4),
                vector: r.get(5),
            });
        }
        Ok(())
    };
    let mut query = |id: Option<&str>| -> Result<Vec<postgres::Row>> {
        Ok(c.query(&stmt, &[&id, &include_fixed])?)
    };
    match advisories {
        None => collect(&mut query, None)?,
        Some(ids) => {
            for id in ids {
                collect(&mut query, Some(id))?;
            }
        }
    }
    Ok(out)
}
