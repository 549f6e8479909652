//! SBOMs, one per image, with their components stored as packages. A push
//! replaces the image's SBOM in one transaction; the same document again
//! writes nothing.

use std::collections::HashMap;

use patchgap_proto::v1;
use postgres::{Client, GenericClient};

use super::{ingest::Interner, packages::packages_by_id};
use crate::store::{DeclaredPackage, PutOutcome, Result, SbomRecord};

pub(super) fn put_sbom(client: &mut Client, sbom: &SbomRecord) -> Result<PutOutcome> {
    let mut tx = client.transaction()?;
    let stored: Option<(i64, String)> = tx
        .query_opt(
            "SELECT id, sha256 FROM sbom WHERE image = $1 FOR UPDATE",
            &[&sbom.image],
        )?
        .map(|r| (r.get(0), r.get(1)));
    let outcome = match &stored {
        Some((_, sha)) if *sha == sbom.sha256 => return Ok(PutOutcome::Unchanged),
        Some((id, _)) => {
            // ON DELETE CASCADE clears its components.
            tx.execute("DELETE FROM sbom WHERE id = $1", &[id])?;
            PutOutcome::Updated
        }
        None => PutOutcome::Added,
    };
    let sbom_id: i64 = tx
        .query_one(
            "INSERT INTO sbom (image, name, sha256, format, syntax, spec_version, tools, components, edges, data,
                 pushed_ms, imported_by, origin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            &[
                &sbom.image,
                &sbom.name,
                &sbom.sha256,
                &sbom.format,
                &sbom.syntax,
                &sbom.spec_version,
                &sbom.tools,
                &i64::from(sbom.components),
                &i64::from(sbom.edges),
                &sbom.data,
                &sbom.pushed_ms,
                &sbom.provenance.imported_by,
                &sbom.provenance.source,
            ],
        )?
        .get(0);
    let mut interner = Interner::default();
    let insert = tx.prepare(
        "INSERT INTO sbom_component (sbom_id, package_id, ref, chain) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )?;
    for d in &sbom.packages {
        let package_id = interner.package(&mut tx, &d.package)?;
        tx.execute(
            &insert,
            &[
                &sbom_id,
                &package_id,
                &d.reference,
                &d.pulled_in_by.join("\n"),
            ],
        )?;
    }
    tx.commit()?;
    Ok(outcome)
}

pub(super) fn sboms(c: &mut impl GenericClient, image: Option<&str>) -> Result<Vec<SbomRecord>> {
    let mut rows: Vec<(i64, SbomRecord)> = c
        .query(
            "SELECT id, image, name, sha256, format, syntax, spec_version, tools, components, edges, pushed_ms,
                    imported_by, origin
             FROM sbom WHERE $1::TEXT IS NULL OR image = $1 ORDER BY image",
            &[&image],
        )?
        .iter()
        .map(|r| {
            (
                r.get(0),
                SbomRecord {
                    image: r.get(1),
                    name: r.get(2),
                    sha256: r.get(3),
                    format: r.get(4),
                    syntax: r.get(5),
                    spec_version: r.get(6),
                    tools: r.get(7),
                    components: r.get::<_, i64>(8) as u32,
                    edges: r.get::<_, i64>(9) as u32,
                    pushed_ms: r.get(10),
                    // The hash and time are the document's and the push's.
                    provenance: crate::store::Provenance {
                        imported_by: r.get(11),
                        imported_ms: r.get(10),
                        source: r.get(12),
                        sha256: r.get(3),
                    },
                    ..Default::default()
                },
            )
        })
        .collect();
    let stmt = c.prepare(
        "SELECT sc.package_id, sc.ref, sc.chain FROM sbom_component sc WHERE sc.sbom_id = $1
         ORDER BY sc.package_id, sc.ref",
    )?;
    let mut components: Vec<Vec<(i64, String, String)>> = Vec::new();
    for (id, _) in &rows {
        components.push(
            c.query(&stmt, &[id])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        );
    }
    let affected = c.prepare(
        "SELECT m.advisory_id FROM advisory_match m JOIN advisory a ON a.id = m.advisory_id
         WHERE m.package_id = $1 AND m.status = 'affected' AND a.withdrawn IS NULL
         ORDER BY m.advisory_id",
    )?;
    let mut advisories: HashMap<i64, Vec<String>> = HashMap::new();
    for comps in &components {
        for (id, _, _) in comps {
            if !advisories.contains_key(id) {
                let ids = c
                    .query(&affected, &[id])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                advisories.insert(*id, ids);
            }
        }
    }
    for ((_, rec), comps) in rows.iter_mut().zip(components) {
        let ids: Vec<i64> = comps.iter().map(|c| c.0).collect();
        let packages: HashMap<i64, v1::Package> = packages_by_id(c, &ids)?.into_iter().collect();
        rec.packages = comps
            .into_iter()
            .filter_map(|(id, reference, chain)| {
                Some(DeclaredPackage {
                    package: packages.get(&id)?.clone(),
                    reference,
                    pulled_in_by: chain
                        .split('\n')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    advisories: advisories.get(&id).cloned().unwrap_or_default(),
                })
            })
            .collect();
    }
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}
