//! What agents write: sessions (`hello`), their messages (`apply`), and the
//! interning of packages, artifacts and sets. Each message is one
//! transaction committed with its sequence number; the helpers run inside
//! the caller's transaction and never commit.
//!
//! The host row is locked (`FOR UPDATE`) for the whole of `apply`, so two
//! collectors holding streams of one host (a lingering old stream and the
//! new one) apply its messages one at a time, and the sequence check and
//! the write see the same row. Interning inserts with `ON CONFLICT`, so two
//! collectors interning one package both end with the same row.
//!
//! Interning is batched: before a snapshot or delta writes its processes,
//! [`Interner::preload`] interns every distinct package and artifact the
//! message names with a few set-based statements and fills the caches, so
//! the per-item code that follows reads ids from memory. One statement per
//! artifact made a first snapshot cost two round trips per artifact, and on
//! PostgreSQL a round trip, not the work, bounds ingest.
//!
//! The process writes are set-based for the same reason: a message's
//! processes are upserted with their history intervals in one statement,
//! its sockets replaced in one, and a delta's exits and connections
//! written in one each, every row bound as arrays and unnested, so a
//! message costs the same few statements whatever the number of its
//! processes (the per-row writes ran five or more per process of a first
//! snapshot). They store exactly what the per-row writes stored, repeated
//! keys in one message included (see [`upsert_processes`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use patchgap_proto::{Message, v1};
use postgres::{Client, GenericClient, Statement, Transaction, types::ToSql};
use sha2::{Digest, Sha256};

use crate::store::{HelloHost, Result, Session, StoreError};

/// path, dev, inode, kind, deleted, stale, package id, and the content
/// (size, sha256, why unhashed).
type ArtifactKey = (
    Vec<u8>,
    u64,
    u64,
    i32,
    bool,
    bool,
    i64,
    (u64, String, String),
);

/// ecosystem, name, source, version, arch, purl, distro package id.
type PackageKey = (String, String, String, String, String, String, i64);

/// Statements prepared on one client, by their text.
pub(super) type Statements = HashMap<&'static str, Statement>;

/// Statements of one transaction, prepared once (and, from `apply`, kept
/// with the pooled client for the next message): a snapshot interns
/// thousands of artifacts with the same few statements.
#[derive(Default)]
pub(super) struct Prepared {
    statements: Statements,
    /// How many statements were asked for: every statement of `apply` is
    /// run right after its `get`, so this counts its round trips (beyond
    /// the first preparation of each statement), which the tests bound.
    uses: u64,
}

impl Prepared {
    pub(super) fn get(
        &mut self,
        tx: &mut impl GenericClient,
        sql: &'static str,
    ) -> Result<Statement> {
        self.uses += 1;
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    /// Runs `sql`, prepared once per client and counted.
    pub(super) fn execute(
        &mut self,
        tx: &mut impl GenericClient,
        sql: &'static str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let stmt = self.get(tx, sql)?;
        Ok(tx.execute(&stmt, args)?)
    }
}

/// Interning caches for one transaction: processes of a snapshot share most
/// of their packages and artifacts.
#[derive(Default)]
pub(super) struct Interner {
    packages: HashMap<PackageKey, i64>,
    artifacts: HashMap<ArtifactKey, i64>,
    sets: HashMap<Vec<u8>, i64>,
    /// The id of each entry of the message's artifact table, once known.
    table: Vec<Option<i64>>,
    pub(super) sql: Prepared,
}

const INSERT_PACKAGE: &str = "INSERT INTO package (ecosystem, name, source, version, arch, purl, distro_id, key, fixed_cves, replaced_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (ecosystem, name, source, version, arch, purl, distro_id)
     DO UPDATE SET fixed_cves = excluded.fixed_cves
         WHERE excluded.fixed_cves != '' AND excluded.fixed_cves != package.fixed_cves
     RETURNING id";
const SELECT_PACKAGE: &str =
    "SELECT id FROM package WHERE ecosystem = $1 AND name = $2 AND source = $3 AND version = $4
     AND arch = $5 AND purl = $6 AND distro_id = $7";
const SELECT_PACKAGE_CVES: &str =
    "SELECT id, fixed_cves FROM package WHERE ecosystem = $1 AND name = $2 AND source = $3
     AND version = $4 AND arch = $5 AND purl = $6 AND distro_id = $7";
const INSERT_ARTIFACT: &str = "INSERT INTO artifact (path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING id";
const SELECT_ARTIFACT: &str = "SELECT id FROM artifact WHERE path = $1 AND dev = $2 AND inode = $3 AND kind = $4
     AND deleted = $5 AND stale = $6 AND package_id = $7 AND size = $8 AND sha256 = $9 AND unhashed = $10";

impl Interner {
    pub(super) fn package(&mut self, tx: &mut Transaction<'_>, p: &v1::Package) -> Result<i64> {
        // The distro's own package first: ours names it by id. It never has
        // a distro of its own (the recursion stops at one level).
        let distro = match &p.distro {
            Some(d) if d.distro.is_none() => self.package(tx, d)?,
            _ => 0,
        };
        let key = package_key(p, distro);
        // A record with changelog CVEs is always written: an earlier one of
        // the same package may have come without them.
        if p.fixed_cves.is_empty()
            && let Some(id) = self.packages.get(&key)
        {
            return Ok(*id);
        }
        let fixed_cves = p.fixed_cves.join(",");
        // Stored already, with nothing to change: read, not upserted. An
        // upsert locks the row even when its WHERE turns the update down,
        // so every ingest touching libc6 would queue behind the others on
        // that row until they commit, and two touching the same packages
        // in another order deadlock (collectors on one database do).
        let select = self.sql.get(tx, SELECT_PACKAGE_CVES)?;
        if let Some(row) = tx.query_opt(
            &select,
            &[&key.0, &key.1, &key.2, &key.3, &key.4, &key.5, &key.6],
        )? {
            let (id, stored): (i64, String) = (row.get(0), row.get(1));
            if fixed_cves.is_empty() || fixed_cves == stored {
                self.packages.insert(key, id);
                return Ok(id);
            }
        }
        let insert = self.sql.get(tx, INSERT_PACKAGE)?;
        let written = tx.query_opt(
            &insert,
            &[
                &key.0,
                &key.1,
                &key.2,
                &key.3,
                &key.4,
                &key.5,
                &key.6,
                &crate::store::package_key(&p.ecosystem, &p.name),
                &fixed_cves,
                &p.replaced_by,
            ],
        )?;
        // No row back: the package was stored and its CVEs did not change.
        let (id, changed) = match written {
            Some(row) => (row.get::<_, i64>(0), true),
            None => {
                let select = self.sql.get(tx, SELECT_PACKAGE)?;
                let row = tx.query_one(
                    &select,
                    &[&key.0, &key.1, &key.2, &key.3, &key.4, &key.5, &key.6],
                )?;
                (row.get(0), false)
            }
        };
        // New changelog CVEs can turn a match into fixed-by-distro: this
        // package and the language packages it installed are matched again.
        if changed && !p.fixed_cves.is_empty() {
            self.sql.execute(
                tx,
                "UPDATE package SET matched = FALSE WHERE id = $1 OR distro_id = $1",
                &[&id],
            )?;
        }
        self.packages.insert(key, id);
        Ok(id)
    }

    fn artifact(&mut self, tx: &mut Transaction<'_>, a: &v1::Artifact) -> Result<i64> {
        let package = match &a.package {
            Some(p) => self.package(tx, p)?,
            None => 0,
        };
        let key = artifact_key(a, package);
        if let Some(id) = self.artifacts.get(&key) {
            return Ok(*id);
        }
        let (dev, inode, kind, size) =
            (key.1 as i64, key.2 as i64, i64::from(key.3), key.7.0 as i64);
        let args: [&(dyn ToSql + Sync); 10] = [
            &key.0, &dev, &inode, &kind, &key.4, &key.5, &key.6, &size, &key.7.1, &key.7.2,
        ];
        let insert = self.sql.get(tx, INSERT_ARTIFACT)?;
        let id = match tx.query_opt(&insert, &args)? {
            Some(row) => row.get(0),
            None => {
                let select = self.sql.get(tx, SELECT_ARTIFACT)?;
                tx.query_one(&select, &args)?.get(0)
            }
        };
        self.artifacts.insert(key, id);
        Ok(id)
    }

    /// The id of the set holding exactly these artifacts.
    #[cfg(test)]
    fn set(&mut self, tx: &mut Transaction<'_>, artifacts: &[v1::Artifact]) -> Result<i64> {
        let ids = artifacts
            .iter()
            .map(|a| self.artifact(tx, a))
            .collect::<Result<Vec<_>>>()?;
        self.set_of(tx, ids)
    }

    /// The id of the set holding exactly this process's artifacts, those
    /// it refers to in `table` (its message's) included.
    fn process_set(
        &mut self,
        tx: &mut Transaction<'_>,
        table: &[v1::Artifact],
        p: &v1::Process,
    ) -> Result<i64> {
        let mut ids = Vec::with_capacity(p.artifact_count());
        for a in &p.artifacts {
            ids.push(self.artifact(tx, a)?);
        }
        self.table.resize(table.len(), None);
        for &r in &p.artifact_refs {
            let Some(a) = table.get(r as usize) else {
                continue;
            };
            ids.push(match self.table[r as usize] {
                Some(id) => id,
                None => {
                    let id = self.artifact(tx, a)?;
                    self.table[r as usize] = Some(id);
                    id
                }
            });
        }
        self.set_of(tx, ids)
    }

    /// The id of the set of these artifact ids.
    fn set_of(&mut self, tx: &mut Transaction<'_>, mut ids: Vec<i64>) -> Result<i64> {
        ids.sort_unstable();
        ids.dedup();
        let members: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        if let Some(id) = self.sets.get(&members) {
            return Ok(*id);
        }
        let digest = Sha256::digest(&members).to_vec();
        let insert = self.sql.get(
            tx,
            "INSERT INTO artifact_set (members, members_sha256, size) VALUES ($1, $2, $3)
             ON CONFLICT (members_sha256) DO NOTHING RETURNING id",
        )?;
        let id = match tx.query_opt(&insert, &[&members, &digest, &(ids.len() as i64)])? {
            Some(row) => {
                let id: i64 = row.get(0);
                self.sql.execute(
                    tx,
                    "INSERT INTO artifact_set_member (set_id, artifact_id)
                     SELECT $1, unnest($2::BIGINT[])",
                    &[&id, &ids],
                )?;
                id
            }
            None => {
                let select = self
                    .sql
                    .get(tx, "SELECT id FROM artifact_set WHERE members_sha256 = $1")?;
                tx.query_one(&select, &[&digest])?.get(0)
            }
        };
        self.sets.insert(members, id);
        Ok(id)
    }
}

fn package_key(p: &v1::Package, distro: i64) -> PackageKey {
    (
        p.ecosystem.clone(),
        p.name.clone(),
        p.source.clone(),
        p.version.clone(),
        p.arch.clone(),
        p.purl.clone(),
        distro,
    )
}

fn artifact_key(a: &v1::Artifact, package: i64) -> ArtifactKey {
    (
        a.path.clone(),
        a.dev,
        a.inode,
        a.kind,
        a.deleted,
        a.stale,
        package,
        a.content
            .as_ref()
            .map(|c| (c.size, c.sha256.clone(), c.unhashed.clone()))
            .unwrap_or_default(),
    )
}

/// The stored ones among a batch of packages: each row is the position in
/// the batch (the last array) and the id. The key columns are compared
/// with `=`: every one of them is NOT NULL, as in the single-row SELECT.
const FIND_PACKAGES: &str = "SELECT k.i, p.id
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[])
         AS k(ecosystem, name, source, version, arch, purl, distro_id, i)
     JOIN package p ON p.ecosystem = k.ecosystem AND p.name = k.name AND p.source = k.source
         AND p.version = k.version AND p.arch = k.arch AND p.purl = k.purl AND p.distro_id = k.distro_id";
/// Packages without changelog CVEs that are not stored yet, in key order
/// (the batch is sorted and `i` is the position in it): two collectors
/// inserting overlapping new keys then wait on each other in one order
/// and cannot deadlock. DO NOTHING takes no lock on a row stored already.
const INSERT_PACKAGES: &str = "INSERT INTO package (ecosystem, name, source, version, arch, purl, distro_id, key, fixed_cves, replaced_by)
     SELECT ecosystem, name, source, version, arch, purl, distro_id, key, '', replaced_by
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[],
                 $9::text[], $10::text[])
         AS k(ecosystem, name, source, version, arch, purl, distro_id, i, key, replaced_by)
     ORDER BY i
     ON CONFLICT (ecosystem, name, source, version, arch, purl, distro_id) DO NOTHING";
const FIND_ARTIFACTS: &str = "SELECT k.i, a.id
     FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::bool[], $6::bool[], $7::int8[], $8::int8[],
                 $9::text[], $10::text[], $11::int8[])
         AS k(path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed, i)
     JOIN artifact a ON a.path = k.path AND a.dev = k.dev AND a.inode = k.inode AND a.kind = k.kind
         AND a.deleted = k.deleted AND a.stale = k.stale AND a.package_id = k.package_id
         AND a.size = k.size AND a.sha256 = k.sha256 AND a.unhashed = k.unhashed";
const INSERT_ARTIFACTS: &str = "INSERT INTO artifact (path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed)
     SELECT path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed
     FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[], $5::bool[], $6::bool[], $7::int8[], $8::int8[],
                 $9::text[], $10::text[], $11::int8[])
         AS k(path, dev, inode, kind, deleted, stale, package_id, size, sha256, unhashed, i)
     ORDER BY i
     ON CONFLICT DO NOTHING";

const FIND_SETS: &str = "SELECT k.i, s.id FROM unnest($1::bytea[], $2::int8[]) AS k(digest, i)
     JOIN artifact_set s ON s.members_sha256 = k.digest";
/// New sets in digest order; `i` comes back through the digest, which the
/// insert returns, so each new set gets its member rows.
const INSERT_SETS: &str =
    "WITH k AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int8[])
         AS k(members, digest, size, i)),
     new AS (INSERT INTO artifact_set (members, members_sha256, size)
         SELECT members, digest, size FROM k ORDER BY i
         ON CONFLICT (members_sha256) DO NOTHING RETURNING id, members_sha256)
     SELECT k.i, new.id FROM new JOIN k ON k.digest = new.members_sha256";
const INSERT_SET_MEMBERS: &str = "INSERT INTO artifact_set_member (set_id, artifact_id)
     SELECT * FROM unnest($1::int8[], $2::int8[])";

type Column = Box<dyn ToSql + Sync>;

/// Rows of one batched interning, sorted by key; statements bind them as
/// one array per column.
trait Batch {
    /// The key columns of the rows at `which`, then their positions; with
    /// `insert`, then the columns only an insert writes.
    fn columns(&self, which: &[usize], insert: bool) -> Vec<Column>;
}

fn positions(which: &[usize]) -> Column {
    Box::new(which.iter().map(|&i| i as i64).collect::<Vec<i64>>())
}

/// A batch of packages, one per key, each as its first record in the
/// message has it (that record is the one the single-row path would
/// insert).
#[derive(Default)]
struct PackageBatch {
    keys: Vec<PackageKey>,
    records: Vec<v1::Package>,
}

impl PackageBatch {
    fn of(mut items: Vec<(PackageKey, v1::Package)>) -> PackageBatch {
        let mut seen = HashSet::new();
        items.retain(|(k, _)| seen.insert(k.clone()));
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (keys, records) = items.into_iter().unzip();
        PackageBatch { keys, records }
    }
}

impl Batch for PackageBatch {
    fn columns(&self, which: &[usize], insert: bool) -> Vec<Column> {
        let text = |f: fn(&PackageKey) -> &String| -> Column {
            Box::new(
                which
                    .iter()
                    .map(|&i| f(&self.keys[i]).clone())
                    .collect::<Vec<String>>(),
            )
        };
        let mut cols = vec![
            text(|k| &k.0),
            text(|k| &k.1),
            text(|k| &k.2),
            text(|k| &k.3),
            text(|k| &k.4),
            text(|k| &k.5),
            Box::new(which.iter().map(|&i| self.keys[i].6).collect::<Vec<i64>>()),
            positions(which),
        ];
        if insert {
            let records = which.iter().map(|&i| &self.records[i]);
            cols.push(Box::new(
                records
                    .clone()
                    .map(|p| crate::store::package_key(&p.ecosystem, &p.name))
                    .collect::<Vec<String>>(),
            ));
            cols.push(Box::new(
                records
                    .map(|p| p.replaced_by.clone())
                    .collect::<Vec<String>>(),
            ));
        }
        cols
    }
}

/// A batch of artifacts, one per key.
struct ArtifactBatch(Vec<ArtifactKey>);

impl Batch for ArtifactBatch {
    fn columns(&self, which: &[usize], _insert: bool) -> Vec<Column> {
        let keys = || which.iter().map(|&i| &self.0[i]);
        vec![
            Box::new(keys().map(|k| k.0.clone()).collect::<Vec<Vec<u8>>>()),
            Box::new(keys().map(|k| k.1 as i64).collect::<Vec<i64>>()),
            Box::new(keys().map(|k| k.2 as i64).collect::<Vec<i64>>()),
            Box::new(keys().map(|k| i64::from(k.3)).collect::<Vec<i64>>()),
            Box::new(keys().map(|k| k.4).collect::<Vec<bool>>()),
            Box::new(keys().map(|k| k.5).collect::<Vec<bool>>()),
            Box::new(keys().map(|k| k.6).collect::<Vec<i64>>()),
            Box::new(keys().map(|k| k.7.0 as i64).collect::<Vec<i64>>()),
            Box::new(keys().map(|k| k.7.1.clone()).collect::<Vec<String>>()),
            Box::new(keys().map(|k| k.7.2.clone()).collect::<Vec<String>>()),
            positions(which),
        ]
    }
}

fn bind(cols: &[Column]) -> Vec<&(dyn ToSql + Sync)> {
    cols.iter().map(|c| c.as_ref()).collect()
}

/// Interns a batch in three statements whatever its size: the stored rows
/// are found, the missing ones that `insertable` allows are inserted in
/// key order, and those are found again, which also finds the rows a
/// concurrent collector inserted in between (its insert of a key we also
/// insert makes ours wait until it commits, and each statement of this
/// READ COMMITTED transaction sees what was committed before it began).
/// Returns the id of each position found; a row not found is left to the
/// single-row path.
fn intern_batch(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    (find, insert): (&'static str, &'static str),
    batch: &impl Batch,
    len: usize,
    insertable: impl Fn(usize) -> bool,
) -> Result<HashMap<usize, i64>> {
    fn found(
        tx: &mut Transaction<'_>,
        sql: &mut Prepared,
        find: &'static str,
        batch: &impl Batch,
        which: &[usize],
        ids: &mut HashMap<usize, i64>,
    ) -> Result<()> {
        let stmt = sql.get(tx, find)?;
        let cols = batch.columns(which, false);
        for row in tx.query(&stmt, &bind(&cols))? {
            ids.insert(row.get::<_, i64>(0) as usize, row.get::<_, i64>(1));
        }
        Ok(())
    }
    let mut ids = HashMap::new();
    let all: Vec<usize> = (0..len).collect();
    if all.is_empty() {
        return Ok(ids);
    }
    found(tx, sql, find, batch, &all, &mut ids)?;
    let missing: Vec<usize> = all
        .into_iter()
        .filter(|i| !ids.contains_key(i) && insertable(*i))
        .collect();
    if missing.is_empty() {
        return Ok(ids);
    }
    let stmt = sql.get(tx, insert)?;
    let cols = batch.columns(&missing, true);
    tx.execute(&stmt, &bind(&cols))?;
    found(tx, sql, find, batch, &missing, &mut ids)?;
    Ok(ids)
}

impl Interner {
    /// Interns every package and artifact that these processes name, a
    /// few statements per level (distro packages, the packages they
    /// installed, artifacts) instead of one or two per item, and fills the
    /// caches so that [`Interner::package`] and the artifact lookups of
    /// [`Interner::process_set`] then answer from memory.
    ///
    /// What it writes is what the single-row path would: a package is
    /// inserted only when its first record in the message has no
    /// changelog CVEs (a record with CVEs may need them written and its
    /// verdicts reset, which stays with [`Interner::package`], run for
    /// every such record as before), and a package or artifact whose
    /// distro package is not stored yet is left to that path too.
    pub(super) fn preload(
        &mut self,
        tx: &mut Transaction<'_>,
        table: &[v1::Artifact],
        processes: &[v1::Process],
    ) -> Result<()> {
        // The table's artifacts once each, then the inline ones.
        let artifacts = || {
            table
                .iter()
                .chain(processes.iter().flat_map(|p| &p.artifacts))
        };
        let packages = || artifacts().filter_map(|a| a.package.as_ref());
        // Level one: the packages keyed without a distro package, in the
        // order the single-row path meets them (a package's distro first).
        let mut first = Vec::new();
        for p in packages() {
            match &p.distro {
                Some(d) if d.distro.is_none() => {
                    first.push((package_key(d, 0), d.as_ref().clone()))
                }
                _ => first.push((package_key(p, 0), p.clone())),
            }
        }
        self.intern_packages(tx, first)?;
        // Level two: the packages a stored distro package installed.
        let mut second = Vec::new();
        for p in packages() {
            if let Some(d) = &p.distro
                && d.distro.is_none()
                && let Some(&distro) = self.packages.get(&package_key(d, 0))
            {
                second.push((package_key(p, distro), p.clone()));
            }
        }
        self.intern_packages(tx, second)?;
        // Artifacts whose package is known now (or that have none).
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for a in artifacts() {
            let package = match &a.package {
                None => Some(0),
                Some(p) => self.cached_package(p),
            };
            if let Some(package) = package {
                let key = artifact_key(a, package);
                if !self.artifacts.contains_key(&key) && seen.insert(key.clone()) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        let batch = ArtifactBatch(keys);
        let ids = intern_batch(
            tx,
            &mut self.sql,
            (FIND_ARTIFACTS, INSERT_ARTIFACTS),
            &batch,
            batch.0.len(),
            |_| true,
        )?;
        for (i, id) in ids {
            self.artifacts.insert(batch.0[i].clone(), id);
        }
        self.table = table.iter().map(|a| self.cached_artifact(a)).collect();
        self.preload_sets(tx, processes)
    }

    /// The id [`Interner::artifact`] would give this record, when the
    /// caches know it.
    fn cached_artifact(&self, a: &v1::Artifact) -> Option<i64> {
        let package = match &a.package {
            None => 0,
            Some(p) => self.cached_package(p)?,
        };
        self.artifacts.get(&artifact_key(a, package)).copied()
    }

    /// The id [`Interner::package`] would give this record, when the
    /// caches know it.
    fn cached_package(&self, p: &v1::Package) -> Option<i64> {
        let distro = match &p.distro {
            Some(d) if d.distro.is_none() => *self.packages.get(&package_key(d, 0))?,
            _ => 0,
        };
        self.packages.get(&package_key(p, distro)).copied()
    }

    /// The members of this process's artifact list as [`Interner::set_of`]
    /// encodes them, and their ids, when the caches know every artifact
    /// (the table's through [`Interner::table`]).
    fn cached_members(&self, p: &v1::Process) -> Option<(Vec<u8>, Vec<i64>)> {
        let mut ids = Vec::with_capacity(p.artifact_count());
        for a in &p.artifacts {
            ids.push(self.cached_artifact(a)?);
        }
        for &r in &p.artifact_refs {
            ids.push((*self.table.get(r as usize)?)?);
        }
        ids.sort_unstable();
        ids.dedup();
        Some((ids.iter().flat_map(|id| id.to_le_bytes()).collect(), ids))
    }

    /// Interns the artifact sets of these processes as [`Interner::process_set`]
    /// does one at a time (a new set with its member rows), in four
    /// statements: find by digest, insert the missing ones in digest
    /// order, their members, and find again those a concurrent collector
    /// inserted first. Processes with an artifact the caches do not know
    /// are left to [`Interner::process_set`].
    fn preload_sets(&mut self, tx: &mut Transaction<'_>, processes: &[v1::Process]) -> Result<()> {
        let mut sets: Vec<(Vec<u8>, Vec<u8>, Vec<i64>)> = Vec::new();
        let mut seen = HashSet::new();
        for p in processes {
            if let Some((members, ids)) = self.cached_members(p)
                && !self.sets.contains_key(&members)
                && seen.insert(members.clone())
            {
                let digest = Sha256::digest(&members).to_vec();
                sets.push((digest, members, ids));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        let find = |tx: &mut Transaction<'_>,
                    sql: &mut Prepared,
                    which: &[usize]|
         -> Result<Vec<(usize, i64)>> {
            let stmt = sql.get(tx, FIND_SETS)?;
            let digests: Vec<&[u8]> = which.iter().map(|&i| sets[i].0.as_slice()).collect();
            let positions: Vec<i64> = which.iter().map(|&i| i as i64).collect();
            Ok(tx
                .query(&stmt, &[&digests, &positions])?
                .iter()
                .map(|r| (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1)))
                .collect())
        };
        let all: Vec<usize> = (0..sets.len()).collect();
        let mut ids: HashMap<usize, i64> = find(tx, &mut self.sql, &all)?.into_iter().collect();
        let missing: Vec<usize> = all.into_iter().filter(|i| !ids.contains_key(i)).collect();
        if !missing.is_empty() {
            let stmt = self.sql.get(tx, INSERT_SETS)?;
            let members: Vec<&[u8]> = missing.iter().map(|&i| sets[i].1.as_slice()).collect();
            let digests: Vec<&[u8]> = missing.iter().map(|&i| sets[i].0.as_slice()).collect();
            let sizes: Vec<i64> = missing.iter().map(|&i| sets[i].2.len() as i64).collect();
            let positions: Vec<i64> = missing.iter().map(|&i| i as i64).collect();
            let inserted: Vec<(usize, i64)> = tx
                .query(&stmt, &[&members, &digests, &sizes, &positions])?
                .iter()
                .map(|r| (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1)))
                .collect();
            let (mut set_ids, mut artifact_ids) = (Vec::new(), Vec::new());
            for &(i, id) in &inserted {
                set_ids.extend(std::iter::repeat_n(id, sets[i].2.len()));
                artifact_ids.extend_from_slice(&sets[i].2);
            }
            if !inserted.is_empty() {
                let stmt = self.sql.get(tx, INSERT_SET_MEMBERS)?;
                tx.execute(&stmt, &[&set_ids, &artifact_ids])?;
            }
            ids.extend(inserted);
            let raced: Vec<usize> = missing
                .into_iter()
                .filter(|i| !ids.contains_key(i))
                .collect();
            if !raced.is_empty() {
                ids.extend(find(tx, &mut self.sql, &raced)?);
            }
        }
        for (i, id) in ids {
            self.sets.insert(sets[i].1.clone(), id);
        }
        Ok(())
    }

    fn intern_packages(
        &mut self,
        tx: &mut Transaction<'_>,
        mut items: Vec<(PackageKey, v1::Package)>,
    ) -> Result<()> {
        items.retain(|(k, _)| !self.packages.contains_key(k));
        let batch = PackageBatch::of(items);
        let ids = intern_batch(
            tx,
            &mut self.sql,
            (FIND_PACKAGES, INSERT_PACKAGES),
            &batch,
            batch.keys.len(),
            |i| batch.records[i].fixed_cves.is_empty(),
        )?;
        for (i, id) in ids {
            self.packages.insert(batch.keys[i].clone(), id);
        }
        Ok(())
    }
}

/// A process key as the statements bind it: pid and start ticks.
type Key = (i64, i64);

fn key_of(k: &Option<v1::ProcessKey>) -> Result<Key> {
    let k = k.ok_or_else(|| StoreError::Invalid("process without a key".into()))?;
    Ok((i64::from(k.pid), k.start_ticks as i64))
}

/// One array parameter: `f` of each item.
fn column<T, U: ToSql + Sync + 'static>(items: &[T], f: impl Fn(&T) -> U) -> Column {
    Box::new(items.iter().map(f).collect::<Vec<U>>())
}

/// Upserts one round of processes (no key twice) with their history, in
/// one statement: `old` reads the stored rows the round names before any
/// of it is written (every part of the statement sees the same snapshot),
/// so it tells the new processes from the stored ones and says which of
/// those `moved` (another set, or had exited). A new process is inserted
/// seen first and last now, in message order (ids as the per-row code
/// gave them; an upsert's ON CONFLICT would draw an id for every stored
/// row too), with an open history interval; a stored one is updated and
/// is running again, and when it moved its open interval is closed now
/// and a new one opened. The host row lock keeps other collectors from
/// writing this host's processes in between.
const UPSERT_PROCESSES: &str = "WITH k AS (
         SELECT * FROM unnest($5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::bytea[],
                              $11::text[], $12::text[], $13::text[], $14::int8[], $15::int8[], $16::int8[],
                              $17::text[], $18::bytea[], $19::bool[], $20::int8[], $21::bytea[], $22::bool[],
                              $23::text[]) WITH ORDINALITY
             AS k(pid, start_ticks, ppid, uid, euid, exe, cmdline, comm, cgroup, mnt_ns, net_ns, start_time_ms,
                  workload, root, partial, set_id, privilege, privileged, net_ns_name, i)
     ), old AS (
         SELECT p.id, k.i, p.set_id != k.set_id OR p.exit_time_ms IS NOT NULL AS moved
         FROM k JOIN process p ON p.host = $1 AND p.boot_id = $2 AND p.pid = k.pid AND p.start_ticks = k.start_ticks
     ), new AS (
         INSERT INTO process (host, boot_id, pid, start_ticks, ppid, uid, euid, exe, cmdline, comm, cgroup, mnt_ns,
             net_ns, start_time_ms, workload, root, partial, set_id, privilege, privileged, net_ns_name,
             first_seen_ms, last_seen_ms, snapshot_id)
         SELECT $1::int8, $2::text, pid, start_ticks, ppid, uid, euid, exe, cmdline, comm, cgroup, mnt_ns, net_ns,
             start_time_ms, workload, root, partial, set_id, privilege, privileged, net_ns_name,
             $3::int8, $3::int8, $4::text
         FROM k WHERE i NOT IN (SELECT i FROM old) ORDER BY i
         RETURNING id, set_id
     ), updated AS (
         UPDATE process p SET ppid = k.ppid, uid = k.uid, euid = k.euid, exe = k.exe, cmdline = k.cmdline,
             comm = k.comm, cgroup = k.cgroup, mnt_ns = k.mnt_ns, net_ns = k.net_ns,
             start_time_ms = k.start_time_ms, workload = k.workload, root = k.root, partial = k.partial,
             set_id = k.set_id, last_seen_ms = $3, snapshot_id = $4, privilege = k.privilege,
             privileged = k.privileged, net_ns_name = k.net_ns_name, exit_time_ms = NULL
         FROM old JOIN k ON k.i = old.i WHERE p.id = old.id
     ), closed AS (
         UPDATE process_set_history h SET until_ms = $3 FROM old
         WHERE old.moved AND h.process_id = old.id AND h.until_ms IS NULL
     )
     INSERT INTO process_set_history (process_id, set_id, from_ms)
     SELECT id, set_id, $3 FROM new
     UNION ALL
     SELECT old.id, k.set_id, $3 FROM old JOIN k ON k.i = old.i WHERE old.moved";

/// Writes a message's processes as the per-row code wrote them one after
/// the other, in one statement per round: round n holds the nth record of
/// every key the message names, so a round names no row twice (which one
/// statement could not write in order), and the rounds replay a repeated
/// process's records in order (its last record stands, with a history
/// interval for each change of set on the way). An agent sends each
/// process once, so a message is one round.
fn upsert_processes(
    tx: &mut Transaction<'_>,
    interner: &mut Interner,
    (host, boot_id): (i64, &str),
    (table, processes): (&[v1::Artifact], &[v1::Process]),
    snapshot_id: &str,
    at_ms: i64,
) -> Result<()> {
    for round in rounds(processes)? {
        let sets = round
            .iter()
            .map(|(_, p)| interner.process_set(tx, table, p))
            .collect::<Result<Vec<i64>>>()?;
        let cols = vec![
            column(&round, |(k, _)| k.0),
            column(&round, |(k, _)| k.1),
            column(&round, |(_, p)| i64::from(p.ppid)),
            column(&round, |(_, p)| i64::from(p.uid)),
            column(&round, |(_, p)| i64::from(p.euid)),
            column(&round, |(_, p)| p.exe.clone()),
            column(&round, |(_, p)| p.cmdline.clone()),
            column(&round, |(_, p)| p.comm.clone()),
            column(&round, |(_, p)| p.cgroup.clone()),
            column(&round, |(_, p)| p.mnt_ns as i64),
            column(&round, |(_, p)| p.net_ns as i64),
            column(&round, |(_, p)| p.start_time_ms),
            column(&round, |(_, p)| p.workload.clone()),
            column(&round, |(_, p)| p.root.clone()),
            column(&round, |(_, p)| p.partial),
            Box::new(sets),
            column(&round, |(_, p)| {
                p.privilege.clone().unwrap_or_default().encode_to_vec()
            }),
            column(&round, |(_, p)| {
                p.privilege.as_ref().is_some_and(|x| x.privileged)
            }),
            column(&round, |(_, p)| p.net_ns_name.clone()),
        ];
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&host, &boot_id, &at_ms, &snapshot_id];
        args.extend(bind(&cols));
        interner.sql.execute(tx, UPSERT_PROCESSES, &args)?;
    }
    Ok(())
}

/// The processes with their keys, in rounds: the nth record of a key is in
/// round n, each round in message order.
fn rounds(processes: &[v1::Process]) -> Result<Vec<Vec<(Key, &v1::Process)>>> {
    let mut rounds: Vec<Vec<(Key, &v1::Process)>> = Vec::new();
    let mut seen: HashMap<Key, usize> = HashMap::new();
    for p in processes {
        let key = key_of(&p.key)?;
        let n = seen.entry(key).or_default();
        if *n == rounds.len() {
            rounds.push(Vec::new());
        }
        rounds[*n].push((key, p));
        *n += 1;
    }
    Ok(rounds)
}

/// Clears the sockets of the processes `target` names and inserts the
/// sockets listed for them, in one statement (the DELETE, like every part
/// of it, sees the table as it was before, so it leaves the new rows
/// alone). A key naming no process of the host's current boot is skipped.
const REPLACE_SOCKETS: &str = "WITH target AS (
         SELECT p.id, k.pid, k.start_ticks FROM unnest($3::int8[], $4::int8[]) AS k(pid, start_ticks)
         JOIN process p ON p.host = $1 AND p.boot_id = $2 AND p.pid = k.pid AND p.start_ticks = k.start_ticks
     ), cleared AS (
         DELETE FROM socket WHERE process_id IN (SELECT id FROM target)
     )
     INSERT INTO socket (process_id, protocol, local_addr, local_port, remote_addr, remote_port, state, inode,
         outbound, connect_ms)
     SELECT t.id, s.protocol, s.local_addr, s.local_port, s.remote_addr, s.remote_port, s.state, s.inode,
         s.outbound, s.connect_ms
     FROM unnest($5::int8[], $6::int8[], $7::text[], $8::text[], $9::int8[], $10::text[], $11::int8[],
                 $12::text[], $13::int8[], $14::bool[], $15::int8[])
         AS s(pid, start_ticks, protocol, local_addr, local_port, remote_addr, remote_port, state, inode,
              outbound, connect_ms)
     JOIN target t ON t.pid = s.pid AND t.start_ticks = s.start_ticks";

/// Replaces the sockets of the processes `cleared` and `sockets` name
/// with those `sockets` lists, in one statement: a process that `cleared`
/// names and `sockets` does not is left with none. A process listed twice
/// keeps its last list, as when each list replaced the one before.
/// Sockets of a process the store does not know are dropped: the upsert
/// naming it is in the same message, before them, so this only happens
/// for bad input.
fn replace_sockets(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    (host, boot_id): (i64, &str),
    cleared: &[Key],
    sockets: &[v1::ProcessSockets],
) -> Result<()> {
    let mut listed: BTreeMap<Key, &[v1::Socket]> = BTreeMap::new();
    for ps in sockets {
        listed.insert(key_of(&ps.key)?, &ps.sockets);
    }
    let target: BTreeSet<Key> = cleared.iter().chain(listed.keys()).copied().collect();
    if target.is_empty() {
        return Ok(());
    }
    let target: Vec<Key> = target.into_iter().collect();
    let rows: Vec<(Key, &v1::Socket)> = listed
        .iter()
        .flat_map(|(k, list)| list.iter().map(move |s| (*k, s)))
        .collect();
    let cols = [
        column(&target, |k| k.0),
        column(&target, |k| k.1),
        column(&rows, |(k, _)| k.0),
        column(&rows, |(k, _)| k.1),
        column(&rows, |(_, s)| s.protocol.clone()),
        column(&rows, |(_, s)| s.local_addr.clone()),
        column(&rows, |(_, s)| i64::from(s.local_port)),
        column(&rows, |(_, s)| s.remote_addr.clone()),
        column(&rows, |(_, s)| i64::from(s.remote_port)),
        column(&rows, |(_, s)| s.state.clone()),
        column(&rows, |(_, s)| s.inode as i64),
        column(&rows, |(_, s)| s.outbound),
        column(&rows, |(_, s)| s.connect_ms),
    ];
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&host, &boot_id];
    args.extend(bind(&cols));
    sql.execute(tx, REPLACE_SOCKETS, &args)?;
    Ok(())
}

/// Adds connection records to their processes, merged as the upsert
/// merges a record into the stored row (earliest first sighting, latest
/// last one, counts summed, the last result): records of one process and
/// peer are merged first, since one upsert cannot touch a row twice. A
/// record for a process the store does not know (it lived and died
/// between two messages and no scan saw it) is dropped.
const ADD_CONNECTIONS: &str = "INSERT INTO connection (process_id, protocol, remote_addr, remote_port,
         first_seen_ms, last_seen_ms, count, last_result)
     SELECT p.id, c.protocol, c.remote_addr, c.remote_port, min(c.first_seen_ms), max(c.last_seen_ms),
         sum(c.count)::int8, (array_agg(c.last_result ORDER BY c.i DESC))[1]
     FROM unnest($3::int8[], $4::int8[], $5::text[], $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                 $11::int8[]) WITH ORDINALITY
         AS c(pid, start_ticks, protocol, remote_addr, remote_port, first_seen_ms, last_seen_ms, count,
              last_result, i)
     JOIN process p ON p.host = $1 AND p.boot_id = $2 AND p.pid = c.pid AND p.start_ticks = c.start_ticks
     GROUP BY p.id, c.protocol, c.remote_addr, c.remote_port
     ON CONFLICT (process_id, protocol, remote_addr, remote_port) DO UPDATE SET
         first_seen_ms = LEAST(connection.first_seen_ms, excluded.first_seen_ms),
         last_seen_ms = GREATEST(connection.last_seen_ms, excluded.last_seen_ms),
         count = connection.count + excluded.count,
         last_result = excluded.last_result";

/// Adds a delta's connection records in one statement ([`ADD_CONNECTIONS`]).
fn add_connections(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    (host, boot_id): (i64, &str),
    conns: &[v1::Connection],
) -> Result<()> {
    if conns.is_empty() {
        return Ok(());
    }
    let keys = conns
        .iter()
        .map(|c| key_of(&c.key))
        .collect::<Result<Vec<Key>>>()?;
    let cols = [
        column(&keys, |k| k.0),
        column(&keys, |k| k.1),
        column(conns, |c| c.protocol.clone()),
        column(conns, |c| c.remote_addr.clone()),
        column(conns, |c| i64::from(c.remote_port)),
        column(conns, |c| c.first_seen_ms),
        column(conns, |c| c.last_seen_ms),
        column(conns, |c| c.count as i64),
        column(conns, |c| i64::from(c.last_result)),
    ];
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&host, &boot_id];
    args.extend(bind(&cols));
    sql.execute(tx, ADD_CONNECTIONS, &args)?;
    Ok(())
}

/// A statement retiring the running processes that `$update` (an UPDATE
/// of `process p` setting their exit time, and its WHERE) selects: their
/// open history intervals close at that time and their sockets go, in the
/// same statement.
macro_rules! retire {
    ($update:literal) => {
        concat!(
            "WITH gone AS (",
            $update,
            " AND p.exit_time_ms IS NULL RETURNING p.id, p.exit_time_ms
             ), closed AS (
                 UPDATE process_set_history h SET until_ms = gone.exit_time_ms FROM gone
                 WHERE h.process_id = gone.id AND h.until_ms IS NULL
             )
             DELETE FROM socket WHERE process_id IN (SELECT id FROM gone)"
        )
    };
}

/// Retires the processes a complete snapshot did not name (`$2` is its id,
/// `$3` its time).
const RETIRE_UNNAMED: &str =
    retire!("UPDATE process p SET exit_time_ms = $3 WHERE p.host = $1 AND p.snapshot_id != $2");

/// Retires the processes a delta's exits name, each at its exit time.
const RETIRE_EXITED: &str = retire!(
    "UPDATE process p SET exit_time_ms = k.exit_time_ms
     FROM unnest($3::int8[], $4::int8[], $5::int8[]) AS k(pid, start_ticks, exit_time_ms)
     WHERE p.host = $1 AND p.boot_id = $2 AND p.pid = k.pid AND p.start_ticks = k.start_ticks"
);

/// Retires the processes of a delta's exits in one statement. The first
/// exit of a process is the one that counts: a later one finds it retired
/// already (and one statement would pick either).
fn retire_exited(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    (host, boot_id): (i64, &str),
    exits: &[v1::Exit],
) -> Result<()> {
    let mut first: Vec<(Key, i64)> = Vec::new();
    let mut seen = HashSet::new();
    for e in exits {
        let key = key_of(&e.key)?;
        if seen.insert(key) {
            first.push((key, e.exit_time_ms));
        }
    }
    if first.is_empty() {
        return Ok(());
    }
    let cols = [
        column(&first, |(k, _)| k.0),
        column(&first, |(k, _)| k.1),
        column(&first, |(_, at)| *at),
    ];
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&host, &boot_id];
    args.extend(bind(&cols));
    sql.execute(tx, RETIRE_EXITED, &args)?;
    Ok(())
}

fn upsert_workloads(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    host: i64,
    workloads: &[v1::Workload],
    at_ms: i64,
) -> Result<()> {
    for w in workloads {
        if w.id.is_empty() {
            return Err(StoreError::Invalid("workload without an id".into()));
        }
        sql.execute(
            tx,
            "INSERT INTO workload (host, id, data, last_seen_ms, image_digest, image_id)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (host, id) DO UPDATE SET data = excluded.data, last_seen_ms = excluded.last_seen_ms,
                 image_digest = excluded.image_digest, image_id = excluded.image_id",
            &[
                &host,
                &w.id,
                &w.encode_to_vec(),
                &at_ms,
                &w.image_digest,
                &w.image_id,
            ],
        )?;
    }
    Ok(())
}

pub(super) fn hello(client: &mut Client, hello: &v1::Hello, now_ms: i64) -> Result<Session> {
    let HelloHost {
        id,
        host_key,
        caps,
        labels,
    } = HelloHost::of(hello)?;
    let mut tx = client.transaction()?;
    // Two collectors greeting one host at once: one inserts, and both
    // then hold the row locked in turn.
    let inserted = tx.execute(
        "INSERT INTO host (host_id, hostname, boot_id, kernel, labels, agent_version, capabilities,
         session_id, acked_seq, last_seen_ms) VALUES ($1, '', '', '', '{}', '', '\\x', '', 0, $2)
         ON CONFLICT (host_id) DO NOTHING",
        &[host_key, &now_ms],
    )? == 1;
    let row = tx.query_one(
        "SELECT id, session_id, acked_seq, session_epoch FROM host WHERE host_id = $1 FOR UPDATE",
        &[host_key],
    )?;
    let (host, session_id, acked, epoch): (i64, String, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let session = if inserted {
        Session {
            host,
            acked_seq: 0,
            new: true,
            epoch: 1,
        }
    } else if session_id == hello.session_id {
        Session {
            host,
            acked_seq: acked as u64,
            new: false,
            epoch,
        }
    } else {
        Session {
            host,
            acked_seq: 0,
            new: true,
            epoch: epoch + 1,
        }
    };
    tx.execute(
        "UPDATE host SET hostname = $2, boot_id = $3, kernel = $4, labels = $5, agent_version = $6,
         capabilities = $7, session_id = $8, acked_seq = $9, last_seen_ms = $10, session_epoch = $11,
         inventory_gen = inventory_gen + 1 WHERE id = $1",
        &[
            &session.host,
            &id.hostname,
            &id.boot_id,
            &id.kernel,
            &labels,
            &hello.agent_version,
            &caps,
            &hello.session_id,
            &(session.acked_seq as i64),
            &now_ms,
            &session.epoch,
        ],
    )?;
    tx.commit()?;
    Ok(session)
}

/// Stores one message in one transaction, with the statements already
/// prepared on this client (and keeps those it prepares).
pub(super) fn apply(
    client: &mut Client,
    statements: &mut Statements,
    session: &Session,
    msg: &v1::AgentMessage,
    now_ms: i64,
) -> Result<()> {
    let mut interner = Interner::default();
    interner.sql.statements = std::mem::take(statements);
    if let Some(v1::agent_message::Body::Heartbeat(h)) = &msg.body {
        let written = heartbeat(client, &mut interner.sql, session, msg.seq, h, now_ms);
        *statements = std::mem::take(&mut interner.sql.statements);
        return written;
    }
    let written = client.transaction().and_then(|mut tx| {
        match write(&mut tx, &mut interner, session, msg, now_ms) {
            Ok(()) => tx.commit().map(|()| Ok(())),
            Err(e) => Ok(Err(e)),
        }
    });
    *statements = std::mem::take(&mut interner.sql.statements);
    written?
}

/// What [`apply`] does in its transaction. Every statement goes through
/// `interner.sql`, so its `uses` counts the message's statements (the
/// tests bound them).
fn write(
    tx: &mut Transaction<'_>,
    interner: &mut Interner,
    session: &Session,
    msg: &v1::AgentMessage,
    now_ms: i64,
) -> Result<()> {
    use v1::agent_message::Body;
    let lock = interner.sql.get(
        tx,
        "SELECT acked_seq, boot_id, session_epoch FROM host WHERE id = $1 FOR UPDATE",
    )?;
    let row = tx.query_one(&lock, &[&session.host])?;
    let (acked, boot_id, epoch): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
    if epoch != session.epoch {
        return Err(StoreError::Superseded);
    }
    if msg.seq <= acked as u64 {
        return Ok(()); // A resend of something already stored.
    }
    let host = (session.host, boot_id.as_str());
    match &msg.body {
        None | Some(Body::Hello(_)) => {
            return Err(StoreError::Invalid(
                "only the first message of a stream may be a Hello".into(),
            ));
        }
        Some(Body::Snapshot(s)) => write_snapshot(tx, interner, host, s)?,
        Some(Body::Delta(d)) => write_delta(tx, interner, host, d)?,
        Some(Body::Heartbeat(h)) => write_heartbeat(tx, &mut interner.sql, session.host, h)?,
    }
    // A snapshot or delta moves the host's inventory generation; a
    // heartbeat changes nothing a workload summary reads.
    interner.sql.execute(
        tx,
        if matches!(msg.body, Some(Body::Heartbeat(_))) {
            "UPDATE host SET acked_seq = $2, last_seen_ms = $3 WHERE id = $1"
        } else {
            "UPDATE host SET acked_seq = $2, last_seen_ms = $3, inventory_gen = inventory_gen + 1 WHERE id = $1"
        },
        &[&session.host, &(msg.seq as i64), &now_ms],
    )?;
    Ok(())
}

fn write_snapshot(
    tx: &mut Transaction<'_>,
    interner: &mut Interner,
    host: (i64, &str),
    s: &v1::Snapshot,
) -> Result<()> {
    upsert_workloads(tx, &mut interner.sql, host.0, &s.workloads, s.scanned_at_ms)?;
    interner.preload(tx, &s.artifacts, &s.processes)?;
    upsert_processes(
        tx,
        interner,
        host,
        (&s.artifacts, &s.processes),
        &s.snapshot_id,
        s.scanned_at_ms,
    )?;
    // A snapshot is a full inventory and the part naming a process
    // carries all its sockets: listing none means it has none, so forget
    // what an earlier session stored.
    let named = s
        .processes
        .iter()
        .map(|p| key_of(&p.key))
        .collect::<Result<Vec<Key>>>()?;
    replace_sockets(tx, &mut interner.sql, host, &named, &s.sockets)?;
    if s.last {
        // The snapshot is complete: whatever it did not name has exited.
        interner.sql.execute(
            tx,
            RETIRE_UNNAMED,
            &[&host.0, &s.snapshot_id, &s.scanned_at_ms],
        )?;
        let stats = s.stats.unwrap_or_default().encode_to_vec();
        interner.sql.execute(
            tx,
            "UPDATE host SET last_full_scan_ms = $2, last_scan = $3 WHERE id = $1",
            &[&host.0, &s.scanned_at_ms, &stats],
        )?;
    }
    Ok(())
}

/// A delta's upserts, then its exits (an exit of a process upserted in
/// the same delta stands), then sockets and connections.
fn write_delta(
    tx: &mut Transaction<'_>,
    interner: &mut Interner,
    host: (i64, &str),
    d: &v1::Delta,
) -> Result<()> {
    upsert_workloads(tx, &mut interner.sql, host.0, &d.workloads, d.scanned_at_ms)?;
    interner.preload(tx, &d.artifacts, &d.upserts)?;
    upsert_processes(
        tx,
        interner,
        host,
        (&d.artifacts, &d.upserts),
        "",
        d.scanned_at_ms,
    )?;
    retire_exited(tx, &mut interner.sql, host, &d.exits)?;
    replace_sockets(tx, &mut interner.sql, host, &[], &d.sockets)?;
    add_connections(tx, &mut interner.sql, host, &d.connections)?;
    if let Some(stats) = &d.stats {
        interner.sql.execute(
            tx,
            "UPDATE host SET last_scan = $2 WHERE id = $1",
            &[&host.0, &stats.encode_to_vec()],
        )?;
    }
    Ok(())
}

/// A heartbeat: one statement, its own transaction. Heartbeats are most
/// of a fleet's messages (an agent sends one every 10 s: 1,000 a second
/// at 10,000 hosts), and they change only the host row, so the session
/// check, the resend check and every field are one `UPDATE`; only when it
/// updates nothing does a second statement tell a superseded session from
/// a resend. What it stores is what [`write_heartbeat`] stores.
fn heartbeat(
    client: &mut Client,
    sql: &mut Prepared,
    session: &Session,
    seq: u64,
    h: &v1::Heartbeat,
    now_ms: i64,
) -> Result<()> {
    let f = HeartbeatFields::of(h);
    let updated = sql.execute(
        client,
        "UPDATE host SET last_scan = COALESCE($3, last_scan), sense = COALESCE($4, sense),
             capabilities = COALESCE($5, capabilities), health = COALESCE($6, health),
             acked_seq = $2, last_seen_ms = $7
         WHERE id = $1 AND session_epoch = $8 AND acked_seq < $2",
        &[
            &session.host,
            &(seq as i64),
            &f.last_scan,
            &f.sense,
            &f.capabilities,
            &f.health,
            &now_ms,
            &session.epoch,
        ],
    )?;
    if updated == 0 {
        let epoch: i64 = client
            .query_one(
                "SELECT session_epoch FROM host WHERE id = $1",
                &[&session.host],
            )?
            .get(0);
        if epoch != session.epoch {
            return Err(StoreError::Superseded);
        }
        // A resend of something already stored.
    }
    Ok(())
}

/// A heartbeat's fields, inside a message transaction that checked the
/// session (see [`heartbeat`], which `apply` uses instead).
fn write_heartbeat(
    tx: &mut Transaction<'_>,
    sql: &mut Prepared,
    host: i64,
    h: &v1::Heartbeat,
) -> Result<()> {
    let f = HeartbeatFields::of(h);
    sql.execute(
        tx,
        "UPDATE host SET last_scan = COALESCE($2, last_scan), sense = COALESCE($3, sense),
             capabilities = COALESCE($4, capabilities), health = COALESCE($5, health)
         WHERE id = $1",
        &[&host, &f.last_scan, &f.sense, &f.capabilities, &f.health],
    )?;
    Ok(())
}

/// Heartbeats of different hosts in one statement, each written as
/// [`heartbeat`] writes it (the session check, the resend check and every
/// field): at a heartbeat every 10 s per agent they are most of a fleet's
/// messages, and one statement per heartbeat cost more than its update.
/// The heartbeats not written are told apart by the stored epoch: another
/// session's are superseded, the others were resends. Host rows are locked
/// in id order, as no other writer locks two of them.
pub(super) fn heartbeats(
    client: &mut Client,
    beats: &[(Session, v1::AgentMessage)],
    now_ms: i64,
) -> Result<Vec<Result<()>>> {
    use v1::agent_message::Body;
    let mut order: Vec<usize> = (0..beats.len()).collect();
    order.sort_by_key(|&i| beats[i].0.host);
    let mut hosts = Vec::with_capacity(beats.len());
    let mut seqs = Vec::with_capacity(beats.len());
    let mut epochs = Vec::with_capacity(beats.len());
    let (mut scans, mut senses, mut caps, mut healths) = (vec![], vec![], vec![], vec![]);
    for &i in &order {
        let (session, msg) = &beats[i];
        let Some(Body::Heartbeat(h)) = &msg.body else {
            return Err(StoreError::Invalid(
                "a heartbeat batch holds a heartbeat only".into(),
            ));
        };
        let f = HeartbeatFields::of(h);
        hosts.push(session.host);
        seqs.push(msg.seq as i64);
        epochs.push(session.epoch);
        scans.push(f.last_scan);
        senses.push(f.sense);
        caps.push(f.capabilities);
        healths.push(f.health);
    }
    if hosts.windows(2).any(|w| w[0] == w[1]) {
        return Err(StoreError::Invalid(
            "a heartbeat batch names a host twice".into(),
        ));
    }
    let rows = client.query(
        "WITH k AS (
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[],
                                  $6::bytea[], $7::bytea[])
                 AS k(host, seq, epoch, last_scan, sense, capabilities, health)
         ), written AS (
             UPDATE host h SET last_scan = COALESCE(k.last_scan, h.last_scan),
                 sense = COALESCE(k.sense, h.sense),
                 capabilities = COALESCE(k.capabilities, h.capabilities),
                 health = COALESCE(k.health, h.health),
                 acked_seq = k.seq, last_seen_ms = $8
             FROM k WHERE h.id = k.host AND h.session_epoch = k.epoch AND h.acked_seq < k.seq
             RETURNING h.id
         )
         SELECT k.host, w.id IS NOT NULL, h.session_epoch = k.epoch
         FROM k JOIN host h ON h.id = k.host LEFT JOIN written w ON w.id = k.host",
        &[
            &hosts, &seqs, &epochs, &scans, &senses, &caps, &healths, &now_ms,
        ],
    )?;
    // host -> (written, same epoch); a host with no row has none to write.
    let found: HashMap<i64, (bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(beats
        .iter()
        .map(|(session, _)| match found.get(&session.host) {
            Some((true, _)) => Ok(()),
            // A resend of something already stored.
            Some((false, true)) => Ok(()),
            Some((false, false)) => Err(StoreError::Superseded),
            None => Err(StoreError::Invalid(format!(
                "no host row {} for this heartbeat",
                session.host
            ))),
        })
        .collect())
}

/// What a heartbeat writes to its host row; `None` keeps the stored value.
struct HeartbeatFields {
    /// A scan that changed nothing sends no delta; the heartbeat still
    /// says when the host was last scanned.
    last_scan: Option<Vec<u8>>,
    sense: Option<Vec<u8>>,
    capabilities: Option<Vec<u8>>,
    health: Option<Vec<u8>>,
}

impl HeartbeatFields {
    fn of(h: &v1::Heartbeat) -> HeartbeatFields {
        HeartbeatFields {
            last_scan: h
                .last_scan
                .filter(|s| s.scanned_at_ms > 0)
                .map(|s| s.encode_to_vec()),
            sense: h.sense.map(|s| s.encode_to_vec()),
            capabilities: h.capabilities.as_ref().map(|c| c.encode_to_vec()),
            health: h.health.as_ref().map(|x| x.encode_to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::{
        Store,
        postgres::{PgStore, PgTarget, harness::Cluster},
    };

    /// The per-row writes `apply` made before they were set-based (a
    /// statement or more per process, socket list, exit and connection),
    /// kept as the reference the set-based writes are compared with and
    /// timed against.
    mod sequential {
        use patchgap_proto::{Message, v1};
        use postgres::{Client, Transaction, types::ToSql};

        use super::super::{Interner, Key, Prepared, key_of, upsert_workloads};
        use crate::store::{Result, Session};

        /// The heartbeat's four updates as `write` made them before one
        /// statement did (the reference for `heartbeats_store_what_four_updates_stored`).
        pub(super) fn write_heartbeat(
            tx: &mut Transaction<'_>,
            sql: &mut Prepared,
            host: i64,
            h: &v1::Heartbeat,
        ) -> Result<()> {
            // A scan that changed nothing sends no delta; the heartbeat still
            // says when the host was last scanned.
            if let Some(stats) = &h.last_scan
                && stats.scanned_at_ms > 0
            {
                sql.execute(
                    tx,
                    "UPDATE host SET last_scan = $2 WHERE id = $1",
                    &[&host, &stats.encode_to_vec()],
                )?;
            }
            if let Some(sense) = &h.sense {
                sql.execute(
                    tx,
                    "UPDATE host SET sense = $2 WHERE id = $1",
                    &[&host, &sense.encode_to_vec()],
                )?;
            }
            if let Some(caps) = &h.capabilities {
                sql.execute(
                    tx,
                    "UPDATE host SET capabilities = $2 WHERE id = $1",
                    &[&host, &caps.encode_to_vec()],
                )?;
            }
            if let Some(health) = &h.health {
                sql.execute(
                    tx,
                    "UPDATE host SET health = $2 WHERE id = $1",
                    &[&host, &health.encode_to_vec()],
                )?;
            }
            Ok(())
        }

        /// [`super::super::apply`] for snapshots and deltas, one row at a
        /// time.
        pub(super) fn apply(
            client: &mut Client,
            session: &Session,
            msg: &v1::AgentMessage,
            now_ms: i64,
        ) -> Result<()> {
            use v1::agent_message::Body;
            let mut tx = client.transaction()?;
            let row = tx.query_one(
                "SELECT acked_seq, boot_id, session_epoch FROM host WHERE id = $1 FOR UPDATE",
                &[&session.host],
            )?;
            let boot_id: String = row.get(1);
            let (host, boot_id) = (session.host, boot_id.as_str());
            let mut interner = Interner::default();
            match &msg.body {
                Some(Body::Snapshot(s)) => {
                    upsert_workloads(
                        &mut tx,
                        &mut interner.sql,
                        host,
                        &s.workloads,
                        s.scanned_at_ms,
                    )?;
                    interner.preload(&mut tx, &s.artifacts, &s.processes)?;
                    for p in &s.processes {
                        upsert_process(
                            &mut tx,
                            &mut interner,
                            host,
                            boot_id,
                            (&s.artifacts, p),
                            &s.snapshot_id,
                            s.scanned_at_ms,
                        )?;
                        let none = v1::ProcessSockets {
                            key: p.key,
                            sockets: Vec::new(),
                        };
                        replace_sockets(&mut tx, &mut interner.sql, host, boot_id, &none)?;
                    }
                    for ps in &s.sockets {
                        replace_sockets(&mut tx, &mut interner.sql, host, boot_id, ps)?;
                    }
                    if s.last {
                        mark_exited(
                            &mut tx,
                            "host = $1 AND snapshot_id != $2",
                            &[&host, &s.snapshot_id],
                            s.scanned_at_ms,
                        )?;
                        let stats = s.stats.unwrap_or_default().encode_to_vec();
                        tx.execute(
                            "UPDATE host SET last_full_scan_ms = $2, last_scan = $3 WHERE id = $1",
                            &[&host, &s.scanned_at_ms, &stats],
                        )?;
                    }
                }
                Some(Body::Delta(d)) => {
                    upsert_workloads(
                        &mut tx,
                        &mut interner.sql,
                        host,
                        &d.workloads,
                        d.scanned_at_ms,
                    )?;
                    interner.preload(&mut tx, &d.artifacts, &d.upserts)?;
                    for p in &d.upserts {
                        upsert_process(
                            &mut tx,
                            &mut interner,
                            host,
                            boot_id,
                            (&d.artifacts, p),
                            "",
                            d.scanned_at_ms,
                        )?;
                    }
                    for e in &d.exits {
                        let (pid, start_ticks) = key_of(&e.key)?;
                        mark_exited(
                            &mut tx,
                            "host = $1 AND boot_id = $2 AND pid = $3 AND start_ticks = $4",
                            &[&host, &boot_id, &pid, &start_ticks],
                            e.exit_time_ms,
                        )?;
                    }
                    for ps in &d.sockets {
                        replace_sockets(&mut tx, &mut interner.sql, host, boot_id, ps)?;
                    }
                    add_connections(&mut tx, &mut interner.sql, host, boot_id, &d.connections)?;
                    if let Some(stats) = &d.stats {
                        tx.execute(
                            "UPDATE host SET last_scan = $2 WHERE id = $1",
                            &[&host, &stats.encode_to_vec()],
                        )?;
                    }
                }
                _ => unreachable!("the reference writes snapshots and deltas"),
            }
            tx.execute(
                "UPDATE host SET acked_seq = $2, last_seen_ms = $3, inventory_gen = inventory_gen + 1 WHERE id = $1",
                &[&host, &(msg.seq as i64), &now_ms],
            )?;
            tx.commit()?;
            Ok(())
        }

        fn process_id(
            tx: &mut Transaction<'_>,
            sql: &mut Prepared,
            host: i64,
            boot_id: &str,
            (pid, start_ticks): Key,
        ) -> Result<Option<i64>> {
            let stmt = sql.get(
                tx,
                "SELECT id FROM process WHERE host = $1 AND boot_id = $2 AND pid = $3 AND start_ticks = $4",
            )?;
            Ok(tx
                .query_opt(&stmt, &[&host, &boot_id, &pid, &start_ticks])?
                .map(|r| r.get(0)))
        }

        fn upsert_process(
            tx: &mut Transaction<'_>,
            interner: &mut Interner,
            host: i64,
            boot_id: &str,
            (table, p): (&[v1::Artifact], &v1::Process),
            snapshot_id: &str,
            at_ms: i64,
        ) -> Result<()> {
            let (pid, start_ticks) = key_of(&p.key)?;
            let set_id = interner.process_set(tx, table, p)?;
            let find = interner.sql.get(
                tx,
                "SELECT id, set_id, exit_time_ms FROM process
                 WHERE host = $1 AND boot_id = $2 AND pid = $3 AND start_ticks = $4",
            )?;
            let existing: Option<(i64, i64, Option<i64>)> = tx
                .query_opt(&find, &[&host, &boot_id, &pid, &start_ticks])?
                .map(|r| (r.get(0), r.get(1), r.get(2)));
            let privilege = p.privilege.clone().unwrap_or_default();
            let (ppid, uid, euid) = (i64::from(p.ppid), i64::from(p.uid), i64::from(p.euid));
            let (mnt_ns, net_ns) = (p.mnt_ns as i64, p.net_ns as i64);
            let privilege_bytes = privilege.encode_to_vec();
            let fields: [&(dyn ToSql + Sync); 19] = [
                &ppid,
                &uid,
                &euid,
                &p.exe,
                &p.cmdline,
                &p.comm,
                &p.cgroup,
                &mnt_ns,
                &net_ns,
                &p.start_time_ms,
                &p.workload,
                &p.root,
                &p.partial,
                &set_id,
                &at_ms,
                &snapshot_id,
                &privilege_bytes,
                &privilege.privileged,
                &p.net_ns_name,
            ];
            match existing {
                None => {
                    let insert = interner.sql.get(
                        tx,
                        "INSERT INTO process (ppid, uid, euid, exe, cmdline, comm, cgroup, mnt_ns, net_ns, start_time_ms,
                         workload, root, partial, set_id, last_seen_ms, snapshot_id, privilege, privileged, net_ns_name,
                         first_seen_ms, host, boot_id, pid, start_ticks)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                         $15, $20, $21, $22, $23)
                         RETURNING id",
                    )?;
                    let mut args = fields.to_vec();
                    args.extend_from_slice(&[&host, &boot_id, &pid, &start_ticks]);
                    let id: i64 = tx.query_one(&insert, &args)?.get(0);
                    let history = interner.sql.get(
                        tx,
                        "INSERT INTO process_set_history (process_id, set_id, from_ms) VALUES ($1, $2, $3)",
                    )?;
                    tx.execute(&history, &[&id, &set_id, &at_ms])?;
                }
                Some((id, old_set, exit)) => {
                    let update = interner.sql.get(
                        tx,
                        "UPDATE process SET ppid = $1, uid = $2, euid = $3, exe = $4, cmdline = $5, comm = $6, cgroup = $7,
                         mnt_ns = $8, net_ns = $9, start_time_ms = $10, workload = $11, root = $12, partial = $13,
                         set_id = $14, last_seen_ms = $15, snapshot_id = $16, privilege = $17, privileged = $18,
                         net_ns_name = $19, exit_time_ms = NULL WHERE id = $20",
                    )?;
                    let mut args = fields.to_vec();
                    args.push(&id);
                    tx.execute(&update, &args)?;
                    if old_set != set_id || exit.is_some() {
                        tx.execute(
                            "UPDATE process_set_history SET until_ms = $2 WHERE process_id = $1 AND until_ms IS NULL",
                            &[&id, &at_ms],
                        )?;
                        tx.execute(
                            "INSERT INTO process_set_history (process_id, set_id, from_ms) VALUES ($1, $2, $3)",
                            &[&id, &set_id, &at_ms],
                        )?;
                    }
                }
            }
            Ok(())
        }

        fn add_connections(
            tx: &mut Transaction<'_>,
            sql: &mut Prepared,
            host: i64,
            boot_id: &str,
            conns: &[v1::Connection],
        ) -> Result<()> {
            for c in conns {
                let Some(id) = process_id(tx, sql, host, boot_id, key_of(&c.key)?)? else {
                    continue;
                };
                let stmt = sql.get(
                    tx,
                    "INSERT INTO connection (process_id, protocol, remote_addr, remote_port, first_seen_ms, last_seen_ms,
                     count, last_result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (process_id, protocol, remote_addr, remote_port) DO UPDATE SET
                       first_seen_ms = LEAST(connection.first_seen_ms, excluded.first_seen_ms),
                       last_seen_ms = GREATEST(connection.last_seen_ms, excluded.last_seen_ms),
                       count = connection.count + excluded.count,
                       last_result = excluded.last_result",
                )?;
                tx.execute(
                    &stmt,
                    &[
                        &id,
                        &c.protocol,
                        &c.remote_addr,
                        &i64::from(c.remote_port),
                        &c.first_seen_ms,
                        &c.last_seen_ms,
                        &(c.count as i64),
                        &i64::from(c.last_result),
                    ],
                )?;
            }
            Ok(())
        }

        fn replace_sockets(
            tx: &mut Transaction<'_>,
            sql: &mut Prepared,
            host: i64,
            boot_id: &str,
            ps: &v1::ProcessSockets,
        ) -> Result<()> {
            let Some(id) = process_id(tx, sql, host, boot_id, key_of(&ps.key)?)? else {
                return Ok(());
            };
            let delete = sql.get(tx, "DELETE FROM socket WHERE process_id = $1")?;
            tx.execute(&delete, &[&id])?;
            if ps.sockets.is_empty() {
                return Ok(());
            }
            let insert = sql.get(
                tx,
                "INSERT INTO socket (process_id, protocol, local_addr, local_port, remote_addr, remote_port, state, inode, outbound, connect_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )?;
            for s in &ps.sockets {
                tx.execute(
                    &insert,
                    &[
                        &id,
                        &s.protocol,
                        &s.local_addr,
                        &i64::from(s.local_port),
                        &s.remote_addr,
                        &i64::from(s.remote_port),
                        &s.state,
                        &(s.inode as i64),
                        &s.outbound,
                        &s.connect_ms,
                    ],
                )?;
            }
            Ok(())
        }

        fn mark_exited(
            tx: &mut Transaction<'_>,
            where_clause: &str,
            args: &[&(dyn ToSql + Sync)],
            at_ms: i64,
        ) -> Result<()> {
            let at = args.len() + 1;
            let sql = format!(
                "WITH gone AS (
                     UPDATE process SET exit_time_ms = ${at}
                     WHERE exit_time_ms IS NULL AND {where_clause} RETURNING id
                 ), closed AS (
                     UPDATE process_set_history SET until_ms = ${at}
                     WHERE until_ms IS NULL AND process_id IN (SELECT id FROM gone)
                 )
                 DELETE FROM socket WHERE process_id IN (SELECT id FROM gone)"
            );
            let mut all = args.to_vec();
            all.push(&at_ms);
            tx.execute(&sql, &all)?;
            Ok(())
        }
    }

    fn store() -> Option<(crate::store::postgres::harness::TestDatabase, PgStore)> {
        let db = Cluster::shared()?.database();
        let store = PgStore::connect(&PgTarget::new(&db.url()).expect("target")).expect("connect");
        Some((db, store))
    }

    fn deb(name: &str, cves: &[&str]) -> v1::Package {
        v1::Package {
            ecosystem: "deb".into(),
            name: name.into(),
            version: "1.0-1".into(),
            arch: "amd64".into(),
            purl: format!("pkg:deb/debian/{name}@1.0-1?arch=amd64"),
            fixed_cves: cves.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    fn artifact(path: &str, inode: u64, package: Option<v1::Package>) -> v1::Artifact {
        v1::Artifact {
            path: path.as_bytes().to_vec(),
            dev: 0x801,
            inode,
            kind: v1::ArtifactKind::Mapped as i32,
            package,
            ..Default::default()
        }
    }

    /// Processes naming `n` library artifacts of one distro package each
    /// (every tenth package distinct), a Python module installed by a deb
    /// (`with_cves`: one whose changelog names CVEs), a file of no
    /// package, and anonymous code with content; `host` makes one
    /// artifact per process this host's own.
    fn processes(n: u64, host: u64, with_cves: bool) -> Vec<v1::Process> {
        let cves: &[&str] = if with_cves { &["CVE-2024-0001"] } else { &[] };
        let module = v1::Package {
            ecosystem: "pypi".into(),
            name: "requests".into(),
            version: "2.28.1".into(),
            purl: "pkg:pypi/requests@2.28.1".into(),
            distro: Some(Box::new(deb("python3-requests", cves))),
            replaced_by: "niquests".into(),
            ..Default::default()
        };
        let libs: Vec<v1::Artifact> = (0..n)
            .map(|i| {
                artifact(
                    &format!("/usr/lib/lib{i}.so"),
                    100 + i,
                    Some(deb(&format!("lib{}", i / 10), &[])),
                )
            })
            .collect();
        (0..4u32)
            .map(|pid| {
                let mut artifacts: Vec<v1::Artifact> =
                    libs.iter().skip(pid as usize).cloned().collect();
                artifacts.push(artifact(
                    "/usr/lib/python3/requests/x.so",
                    7,
                    Some(module.clone()),
                ));
                artifacts.push(artifact("/opt/tool", 8, None));
                artifacts.push(v1::Artifact {
                    path: Vec::new(),
                    kind: v1::ArtifactKind::Anonymous as i32,
                    content: Some(v1::Content {
                        size: 4096,
                        sha256: "ab".repeat(32),
                        unhashed: String::new(),
                    }),
                    ..Default::default()
                });
                artifacts.push(artifact(&format!("/etc/host-{host}-{pid}"), 9 + host, None));
                v1::Process {
                    key: Some(v1::ProcessKey {
                        pid: pid + 1,
                        start_ticks: 10,
                    }),
                    exe: b"/usr/bin/x".to_vec(),
                    artifacts,
                    ..Default::default()
                }
            })
            .collect()
    }

    /// Everything interning stored, with ids replaced by what they name,
    /// so two databases written in different orders compare equal.
    fn contents(client: &mut Client) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for r in client
            .query(
                "SELECT p.ecosystem, p.name, p.source, p.version, p.arch, p.purl, coalesce(d.name, ''),
                        p.key, p.fixed_cves, p.matched, p.replaced_by
                 FROM package p LEFT JOIN package d ON d.id = p.distro_id",
                &[],
            )
            .unwrap()
        {
            let cols: Vec<String> = (0..11)
                .map(|i| {
                    if i == 9 {
                        r.get::<_, bool>(i).to_string()
                    } else {
                        r.get::<_, String>(i)
                    }
                })
                .collect();
            out.insert(format!("package {cols:?}"));
        }
        for r in client
            .query(
                "SELECT a.path, a.dev, a.inode, a.kind, a.deleted, a.stale, coalesce(p.purl, ''), a.size,
                        a.sha256, a.unhashed
                 FROM artifact a LEFT JOIN package p ON p.id = a.package_id",
                &[],
            )
            .unwrap()
        {
            out.insert(format!(
                "artifact {:?} {} {} {} {} {} {} {} {} {}",
                r.get::<_, Vec<u8>>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, bool>(4),
                r.get::<_, bool>(5),
                r.get::<_, String>(6),
                r.get::<_, i64>(7),
                r.get::<_, String>(8),
                r.get::<_, String>(9),
            ));
        }
        for r in client
            .query(
                "SELECT s.size, octet_length(s.members), s.members_sha256 = sha256(s.members),
                        array_agg(encode(a.path, 'escape') || '@' || a.inode ORDER BY a.path, a.inode)
                 FROM artifact_set s JOIN artifact_set_member m ON m.set_id = s.id
                 JOIN artifact a ON a.id = m.artifact_id GROUP BY s.id",
                &[],
            )
            .unwrap()
        {
            out.insert(format!(
                "set {} {} {} {:?}",
                r.get::<_, i64>(0),
                r.get::<_, i32>(1),
                r.get::<_, bool>(2),
                r.get::<_, Vec<String>>(3),
            ));
        }
        // The process tables, each row as JSON with its ids replaced by
        // what they name (the host, the process key, the set's digest),
        // once with its number of copies.
        for (table, process, set) in [
            ("process", "x.id", "x.set_id"),
            ("process_set_history", "x.process_id", "x.set_id"),
            ("socket", "x.process_id", "NULL"),
            ("connection", "x.process_id", "NULL"),
        ] {
            let sql = format!(
                "SELECT row, count(*) FROM (
                     SELECT (to_jsonb(x) - 'id' - 'host' - 'process_id' - 'set_id' || jsonb_build_object(
                         'process', h.host_id || '/' || p.boot_id || '/' || p.pid || '/' || p.start_ticks,
                         'set', encode(s.members_sha256, 'hex')))::text AS row
                     FROM {table} x JOIN process p ON p.id = {process} JOIN host h ON h.id = p.host
                     LEFT JOIN artifact_set s ON s.id = {set}
                 ) r GROUP BY row"
            );
            for r in client.query(&sql, &[]).unwrap() {
                out.insert(format!(
                    "{table} {} x{}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1)
                ));
            }
        }
        out
    }

    /// Interns two hosts' processes, one transaction each, with or
    /// without the batched pre-pass; returns each process's set id.
    fn intern(store: &PgStore, preload: bool, with_cves: bool) -> Vec<i64> {
        let mut sets = Vec::new();
        for host in [1, 2] {
            let processes = processes(40, host, with_cves);
            let mut conn = store.conn().unwrap();
            let mut tx = conn.transaction().unwrap();
            let mut interner = Interner::default();
            if preload {
                interner.preload(&mut tx, &[], &processes).unwrap();
            }
            for p in &processes {
                sets.push(interner.set(&mut tx, &p.artifacts).unwrap());
            }
            tx.commit().unwrap();
        }
        sets
    }

    /// The pre-pass writes exactly what the single-row path writes
    /// (packages with their key, CVEs, verdict flag and replacement;
    /// artifacts; sets with their members), with and without changelog
    /// CVEs on a distro package, and a second host's processes naming the
    /// same artifacts get the first host's rows.
    #[test]
    fn preload_writes_what_the_single_row_path_writes() {
        for with_cves in [false, true] {
            let Some((_a, batched)) = store() else { return };
            let Some((_b, single)) = store() else { return };
            let sets = intern(&batched, true, with_cves);
            let single_sets = intern(&single, false, with_cves);
            let (got, want) = (
                contents(&mut batched.conn().unwrap()),
                contents(&mut single.conn().unwrap()),
            );
            assert_eq!(got, want, "with CVEs: {with_cves}");
            // 40 libraries of 4 packages, the module and its deb, the
            // file, the anonymous code, one file per process and host.
            assert_eq!(got.iter().filter(|r| r.starts_with("package ")).count(), 6);
            assert_eq!(
                got.iter().filter(|r| r.starts_with("artifact ")).count(),
                40 + 3 + 8
            );
            assert!(got.iter().any(|r| r.contains("CVE-2024-0001")) == with_cves);
            // Host 2's process i differs from host 1's by its own file
            // only: distinct sets, each as the single-row path numbers it.
            assert_eq!(sets.len(), 8);
            assert_eq!(
                sets.iter().collect::<BTreeSet<_>>().len(),
                8,
                "{sets:?} {single_sets:?}"
            );
        }
    }

    /// After the pre-pass, the per-process interning runs no statement:
    /// a snapshot of 200 artifacts in 4 processes costs a fixed number of
    /// statements (three per package level and for artifacts, four for
    /// sets), where the single-row path runs two or more per artifact.
    #[test]
    fn preload_interns_a_snapshot_in_a_fixed_number_of_statements() {
        let Some((_db, store)) = store() else { return };
        for host in [1, 2] {
            let processes = processes(200, host, false);
            let mut conn = store.conn().unwrap();
            let mut tx = conn.transaction().unwrap();
            let mut interner = Interner::default();
            interner.preload(&mut tx, &[], &processes).unwrap();
            let preloaded = interner.sql.uses;
            assert!(preloaded <= 13, "{preloaded} statements for the pre-pass");
            for p in &processes {
                interner.set(&mut tx, &p.artifacts).unwrap();
            }
            assert_eq!(
                interner.sql.uses, preloaded,
                "host {host}: a set missed the caches"
            );
            tx.commit().unwrap();
            // The single-row path, for comparison: a stored artifact is an
            // insert that returns nothing and then a select.
            let mut tx = conn.transaction().unwrap();
            let mut single = Interner::default();
            for p in &processes {
                single.set(&mut tx, &p.artifacts).unwrap();
            }
            assert!(single.sql.uses > 400, "{}", single.sql.uses);
            tx.rollback().unwrap();
        }
    }

    /// Two collectors interning the same new artifacts, named in opposite
    /// orders by their messages, both commit with the same ids: the batch
    /// inserts in key order, so neither waits on a row the other will
    /// only insert after waiting on it.
    #[test]
    fn concurrent_preloads_of_overlapping_new_rows_agree() {
        let Some((_db, store)) = store() else { return };
        let barrier = std::sync::Barrier::new(2);
        let run = |reverse: bool| -> Result<Vec<i64>> {
            let mut processes = processes(300, 1, false);
            if reverse {
                processes.reverse();
                for p in &mut processes {
                    p.artifacts.reverse();
                }
            }
            let mut conn = store.conn()?;
            let mut tx = conn.transaction()?;
            let mut interner = Interner::default();
            barrier.wait();
            interner.preload(&mut tx, &[], &processes)?;
            let mut ids: Vec<i64> = processes
                .iter()
                .flat_map(|p| &p.artifacts)
                .map(|a| interner.artifact(&mut tx, a))
                .collect::<Result<_>>()?;
            tx.commit()?;
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        };
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(|| run(false));
            let two = s.spawn(|| run(true));
            (one.join().unwrap(), two.join().unwrap())
        });
        let (one, two) = (one.expect("first commits"), two.expect("second commits"));
        assert_eq!(one, two);
        assert_eq!(one.len(), 300 + 3 + 4);
    }

    /// Through the store: two hosts' first snapshots naming the same
    /// artifacts store them once, and the same lists get the same set.
    #[test]
    fn two_hosts_snapshots_share_their_rows() {
        let Some((_db, store)) = store() else { return };
        let mut shared = processes(30, 0, true);
        for p in &mut shared {
            p.artifacts.pop(); // no host-own file: the hosts' lists are equal
        }
        for host in ["h1", "h2"] {
            let hello = crate::store::conformance::hello_for(host, host, "s1");
            let session = store.hello(&hello, 1).unwrap();
            let msg = v1::AgentMessage {
                seq: 1,
                body: Some(v1::agent_message::Body::Snapshot(v1::Snapshot {
                    snapshot_id: "snap".into(),
                    scanned_at_ms: 1,
                    processes: shared.clone(),
                    last: true,
                    ..Default::default()
                })),
            };
            store.apply(&session, &msg, 2).unwrap();
        }
        let mut c = store.conn().unwrap();
        let count = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
        assert_eq!(count(&mut c, "SELECT count(*) FROM artifact"), 30 + 3);
        assert_eq!(count(&mut c, "SELECT count(*) FROM package"), 3 + 2);
        assert_eq!(count(&mut c, "SELECT count(*) FROM artifact_set"), 4);
        assert_eq!(count(&mut c, "SELECT count(*) FROM process"), 8);
        assert_eq!(
            count(
                &mut c,
                "SELECT count(DISTINCT (a.set_id, b.set_id)) FROM process a JOIN process b
                 ON a.pid = b.pid AND a.host < b.host WHERE a.set_id = b.set_id"
            ),
            4,
            "each pid's set is the same on both hosts"
        );
        assert_eq!(
            count(
                &mut c,
                "SELECT count(*) FROM package WHERE fixed_cves = 'CVE-2024-0001'"
            ),
            1
        );
    }

    /// `count` processes (a multiple of 4) of [`processes`] with `libs`
    /// libraries each, the pids of each round of four `4` apart.
    fn many_processes(count: u32, host: u64, libs: u64) -> Vec<v1::Process> {
        let mut out = Vec::new();
        for round in 0..count / 4 {
            for mut p in processes(libs, host, false) {
                p.key.as_mut().unwrap().pid += round * 4;
                out.push(p);
            }
        }
        out
    }

    fn socket(port: u32) -> v1::Socket {
        v1::Socket {
            protocol: "tcp".into(),
            local_addr: "10.0.0.1".into(),
            local_port: port,
            remote_addr: "10.0.0.2".into(),
            remote_port: 443,
            state: "established".into(),
            inode: u64::from(port),
            outbound: true,
            connect_ms: 1,
        }
    }

    /// Two sockets for each of these processes.
    fn sockets_of(processes: &[v1::Process]) -> Vec<v1::ProcessSockets> {
        processes
            .iter()
            .map(|p| v1::ProcessSockets {
                key: p.key,
                sockets: vec![socket(40000), socket(40001)],
            })
            .collect()
    }

    /// A snapshot part (`last`: the whole snapshot) taken at `at_ms`.
    fn snapshot(
        seq: u64,
        id: &str,
        at_ms: i64,
        last: bool,
        processes: Vec<v1::Process>,
        sockets: Vec<v1::ProcessSockets>,
    ) -> v1::AgentMessage {
        v1::AgentMessage {
            seq,
            body: Some(v1::agent_message::Body::Snapshot(v1::Snapshot {
                snapshot_id: id.into(),
                scanned_at_ms: at_ms,
                processes,
                sockets,
                last,
                ..Default::default()
            })),
        }
    }

    fn delta(seq: u64, d: v1::Delta) -> v1::AgentMessage {
        v1::AgentMessage {
            seq,
            body: Some(v1::agent_message::Body::Delta(d)),
        }
    }

    /// A host's first snapshot, complete in one message: 40 processes of
    /// [`processes`] (`libs` libraries each, so about `libs + 4` artifacts),
    /// each with two sockets.
    fn first_snapshot(host: u64, libs: u64) -> v1::AgentMessage {
        let processes = many_processes(40, host, libs);
        let sockets = sockets_of(&processes);
        snapshot(1, "snap", 1, true, processes, sockets)
    }

    /// This process with one more artifact `tag` (so another set) and
    /// `tag` as its command line.
    fn changed(p: &v1::Process, tag: &str) -> v1::Process {
        let mut p = p.clone();
        p.artifacts.push(artifact(&format!("/opt/{tag}"), 77, None));
        p.cmdline = tag.into();
        p
    }

    fn connection(
        key: Option<v1::ProcessKey>,
        peer: &str,
        (first, last, count, result): (i64, i64, u64, i32),
    ) -> v1::Connection {
        v1::Connection {
            key,
            protocol: "tcp".into(),
            remote_addr: peer.into(),
            remote_port: 443,
            first_seen_ms: first,
            last_seen_ms: last,
            count,
            last_result: result,
            ..Default::default()
        }
    }

    /// Applies a message in its own transaction as `apply` does and
    /// returns how many statements it ran.
    fn statements(store: &PgStore, session: &Session, msg: &v1::AgentMessage) -> u64 {
        let mut conn = store.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        let mut interner = Interner::default();
        write(&mut tx, &mut interner, session, msg, 2).unwrap();
        tx.commit().unwrap();
        interner.sql.uses
    }

    /// A first snapshot of `n` processes with their sockets, then a delta
    /// moving half of them to another set, adding `n / 2` new ones,
    /// retiring the other half and replacing sockets and adding two
    /// connections (one a repeat) per process: the statements each ran.
    fn statements_for(n: u32) -> Option<(u64, u64)> {
        let (_db, store) = store()?;
        let hello = crate::store::conformance::hello_for("h", "h", "s1");
        let session = store.hello(&hello, 1).unwrap();
        let processes = many_processes(n, 1, 20);
        let first = snapshot(1, "a", 10, true, processes.clone(), sockets_of(&processes));
        let (moved, gone) = processes.split_at(processes.len() / 2);
        let mut upserts: Vec<v1::Process> = moved.iter().map(|p| changed(p, "moved")).collect();
        for p in moved {
            let mut p = p.clone();
            p.key.as_mut().unwrap().pid += 10_000;
            upserts.push(p);
        }
        let mut connections = Vec::new();
        for p in &processes {
            connections.push(connection(p.key, "10.1.0.1", (11, 12, 1, 0)));
            connections.push(connection(p.key, "10.1.0.1", (10, 13, 2, 1)));
        }
        let second = delta(
            2,
            v1::Delta {
                scanned_at_ms: 20,
                sockets: sockets_of(&upserts),
                upserts,
                exits: gone
                    .iter()
                    .map(|p| v1::Exit {
                        key: p.key,
                        exit_time_ms: 19,
                    })
                    .collect(),
                connections,
                ..Default::default()
            },
        );
        Some((
            statements(&store, &session, &first),
            statements(&store, &session, &second),
        ))
    }

    /// A snapshot's and a delta's statements do not grow with their
    /// processes, sockets, exits and connections (the per-row writes ran
    /// five or more per process of a first snapshot): 10 and 200
    /// processes cost the same, every statement of `apply` counted.
    #[test]
    fn apply_writes_a_message_in_a_fixed_number_of_statements() {
        let Some(small) = statements_for(12) else {
            return;
        };
        let large = statements_for(200).unwrap();
        assert_eq!(small, large, "statements for 12 and for 200 processes");
        assert!(small.0 <= 20 && small.1 <= 20, "{small:?}");
    }

    /// A heartbeat, stored by `apply` in one statement of its own, leaves
    /// the host row as the four per-field updates in a message transaction
    /// did, whichever fields it carries; a resend changes nothing; a
    /// superseded session's heartbeat is refused.
    #[test]
    fn heartbeats_store_what_four_updates_stored() {
        let (Some((_db, store)), Some((_db2, reference))) = (store(), store()) else {
            return;
        };
        let hello = crate::store::conformance::hello_for("h", "h", "s1");
        let (a, b) = (
            store.hello(&hello, 1).unwrap(),
            reference.hello(&hello, 1).unwrap(),
        );
        let row = |s: &PgStore| -> Vec<(Option<Vec<u8>>, i64)> {
            let r = s
                .conn()
                .unwrap()
                .query_one(
                    "SELECT last_scan, sense, capabilities, health, acked_seq, last_seen_ms
                     FROM host WHERE host_id = 'h'",
                    &[],
                )
                .unwrap();
            (0..4)
                .map(|i| (r.get::<_, Option<Vec<u8>>>(i), 0))
                .chain([(None, r.get::<_, i64>(4)), (None, r.get::<_, i64>(5))])
                .collect()
        };
        let stats = |at: i64| v1::ScanStats {
            scanned_at_ms: at,
            processes: 7,
            ..Default::default()
        };
        let beats = [
            v1::Heartbeat {
                last_scan: Some(stats(5)),
                capabilities: Some(v1::Capabilities {
                    root: true,
                    ..Default::default()
                }),
                sense: Some(v1::SenseStats {
                    lost_kernel: 3,
                    ..Default::default()
                }),
                health: Some(v1::AgentHealth {
                    scanning: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            // A scan stamp of 0 says nothing: the last scan stays.
            v1::Heartbeat {
                last_scan: Some(stats(0)),
                health: Some(v1::AgentHealth {
                    scan_restarts: 2,
                    ..Default::default()
                }),
                ..Default::default()
            },
            v1::Heartbeat {
                last_scan: Some(stats(9)),
                ..Default::default()
            },
            v1::Heartbeat::default(),
        ];
        for (i, beat) in beats.iter().enumerate() {
            let seq = i as u64 + 1;
            let now = 10 + seq as i64;
            let msg = v1::AgentMessage {
                seq,
                body: Some(v1::agent_message::Body::Heartbeat(beat.clone())),
            };
            store.apply(&a, &msg, now).unwrap();
            let mut conn = reference.conn().unwrap();
            let mut tx = conn.transaction().unwrap();
            sequential::write_heartbeat(&mut tx, &mut Prepared::default(), b.host, beat).unwrap();
            tx.execute(
                "UPDATE host SET acked_seq = $2, last_seen_ms = $3 WHERE id = $1",
                &[&b.host, &(seq as i64), &now],
            )
            .unwrap();
            tx.commit().unwrap();
            assert_eq!(row(&store), row(&reference), "after heartbeat {seq}");
        }
        // A resend is ignored, its fields and its time too.
        let before = row(&store);
        let resend = v1::AgentMessage {
            seq: 2,
            body: Some(v1::agent_message::Body::Heartbeat(beats[0].clone())),
        };
        store.apply(&a, &resend, 99).unwrap();
        assert_eq!(row(&store), before);
        // A superseded session's heartbeat is refused.
        store
            .hello(&crate::store::conformance::hello_for("h", "h", "s2"), 100)
            .unwrap();
        let late = v1::AgentMessage {
            seq: 9,
            body: Some(v1::agent_message::Body::Heartbeat(beats[0].clone())),
        };
        assert!(matches!(
            store.apply(&a, &late, 101),
            Err(StoreError::Superseded)
        ));
    }

    /// The set-based writes store what the per-row writes stored, after
    /// every message of a session: a first snapshot (a process listed
    /// twice with two sets, a socket list twice, sockets of an unknown
    /// process), a second one where a process moved, one exited, one is
    /// new and one is listed three times, a delta upserting a moved, an
    /// exited, a new and a repeated process, with exits (one twice, one
    /// unknown), socket lists (one twice, one emptied, one of a process
    /// the delta retires) and connections (one repeated, one unknown), a
    /// delta merging connections into stored ones, and a snapshot in two
    /// parts.
    #[test]
    fn set_based_writes_match_the_per_row_writes() {
        let Some((_a, set_based)) = store() else {
            return;
        };
        let Some((_b, per_row)) = store() else { return };
        let p = many_processes(8, 1, 6);
        let key = |i: usize| p[i].key;
        let unknown = Some(v1::ProcessKey {
            pid: 999,
            start_ticks: 1,
        });
        let mut new = p[0].clone();
        new.key.as_mut().unwrap().pid = 100;
        let mut newer = p[1].clone();
        newer.key.as_mut().unwrap().pid = 101;
        let listed = |k, ports: &[u32]| v1::ProcessSockets {
            key: k,
            sockets: ports.iter().map(|&port| socket(port)).collect(),
        };
        let mut first = p.clone();
        first.push(changed(&p[2], "again"));
        let mut second: Vec<v1::Process> = p.iter().filter(|q| q.key != key(1)).cloned().collect();
        second[0] = changed(&p[0], "moved");
        second.extend([new.clone(), changed(&p[3], "x"), p[3].clone()]);
        let messages = [
            snapshot(
                1,
                "a",
                100,
                true,
                first,
                vec![
                    listed(key(0), &[1, 2]),
                    listed(key(1), &[1]),
                    listed(key(1), &[3]),
                    listed(unknown, &[1]),
                    listed(key(3), &[]),
                ],
            ),
            snapshot(2, "b", 200, true, second, vec![listed(key(0), &[4])]),
            delta(
                3,
                v1::Delta {
                    scanned_at_ms: 300,
                    upserts: vec![changed(&p[4], "y"), p[1].clone(), newer, p[4].clone()],
                    exits: [(5, 290), (5, 295), (2, 280)]
                        .iter()
                        .map(|&(i, at)| v1::Exit {
                            key: key(i),
                            exit_time_ms: at,
                        })
                        .chain([v1::Exit {
                            key: unknown,
                            exit_time_ms: 1,
                        }])
                        .collect(),
                    sockets: vec![
                        listed(key(0), &[5]),
                        listed(key(6), &[]),
                        listed(key(0), &[6, 7]),
                        listed(key(5), &[8]),
                    ],
                    connections: vec![
                        connection(key(0), "x", (250, 260, 2, 0)),
                        connection(key(0), "x", (240, 270, 3, 1)),
                        connection(key(7), "y", (250, 250, 1, 0)),
                        connection(unknown, "z", (250, 250, 1, 0)),
                    ],
                    ..Default::default()
                },
            ),
            delta(
                4,
                v1::Delta {
                    scanned_at_ms: 400,
                    connections: vec![
                        connection(key(0), "x", (230, 280, 1, 2)),
                        connection(key(7), "y", (390, 390, 4, 3)),
                    ],
                    ..Default::default()
                },
            ),
            snapshot(
                5,
                "c",
                500,
                false,
                vec![p[0].clone(), p[2].clone()],
                Vec::new(),
            ),
            snapshot(
                6,
                "c",
                500,
                true,
                vec![p[3].clone(), new],
                vec![listed(key(3), &[9])],
            ),
        ];
        let hello = crate::store::conformance::hello_for("h", "h", "s1");
        let (one, two) = (
            set_based.hello(&hello, 1).unwrap(),
            per_row.hello(&hello, 1).unwrap(),
        );
        for msg in &messages {
            set_based.apply(&one, msg, 2).unwrap();
            sequential::apply(&mut per_row.conn().unwrap(), &two, msg, 2).unwrap();
            let (got, want) = (
                contents(&mut set_based.conn().unwrap()),
                contents(&mut per_row.conn().unwrap()),
            );
            let differ: Vec<&String> = got.symmetric_difference(&want).collect();
            assert!(differ.is_empty(), "after message {}: {differ:#?}", msg.seq);
        }
        // The sequence wrote what it was meant to exercise.
        let mut c = set_based.conn().unwrap();
        let count = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
        assert_eq!(count(&mut c, "SELECT count(*) FROM process"), 10);
        assert!(
            count(
                &mut c,
                "SELECT count(*) FROM process_set_history WHERE from_ms = until_ms"
            ) >= 2,
            "a process listed again with another set opens and closes an interval at once"
        );
        assert_eq!(
            count(
                &mut c,
                "SELECT count FROM connection WHERE remote_addr = 'x'"
            ),
            6,
            "repeated and stored connection records add up"
        );
    }

    /// First snapshots applied, timed with the per-row writes and the
    /// set-based ones on one server (`cargo test -p patchgap-collector
    /// --lib first_snapshot_time -- --ignored --nocapture`):
    /// `PATCHGAP_SNAPSHOT_HOSTS` hosts (default 20), each one message of 40
    /// processes naming about 64 artifacts and two sockets each, applied
    /// one after the other, each in a fresh database.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn first_snapshot_time() {
        let hosts: u64 = std::env::var("PATCHGAP_SNAPSHOT_HOSTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        for set_based in [false, true, false, true] {
            let Some((_db, store)) = store() else { return };
            let sessions: Vec<Session> = (0..hosts)
                .map(|h| {
                    let name = format!("host-{h}");
                    let hello = crate::store::conformance::hello_for(&name, &name, "s1");
                    store.hello(&hello, 1).unwrap()
                })
                .collect();
            let messages: Vec<v1::AgentMessage> =
                (0..hosts).map(|h| first_snapshot(h, 60)).collect();
            let started = std::time::Instant::now();
            for (session, msg) in sessions.iter().zip(&messages) {
                if set_based {
                    store.apply(session, msg, 2).unwrap();
                } else {
                    sequential::apply(&mut store.conn().unwrap(), session, msg, 2).unwrap();
                }
            }
            let took = started.elapsed();
            println!(
                "set-based {set_based}: {hosts} first snapshots in {:.2} s ({:.1} ms per host)",
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / hosts as f64,
            );
        }
    }

    /// The interning of first snapshots, timed with and without the
    /// pre-pass on one server (`cargo test -p patchgap-collector --lib
    /// interning_time -- --ignored --nocapture`): `PATCHGAP_INTERN_HOSTS`
    /// hosts (default 50) of 40 processes naming 600 artifacts of 60
    /// packages, each host a transaction, the way `apply` interns them.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn interning_time_with_and_without_the_pre_pass() {
        let hosts: u64 = std::env::var("PATCHGAP_INTERN_HOSTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        for preload in [false, true, false, true] {
            let Some((_db, store)) = store() else { return };
            let started = std::time::Instant::now();
            let mut statements = 0;
            for host in 0..hosts {
                let mut processes = Vec::new();
                for round in 0..10u32 {
                    for mut p in self::processes(600, host, false) {
                        let key = p.key.as_mut().unwrap();
                        key.pid += round * 4;
                        processes.push(p);
                    }
                }
                let mut conn = store.conn().unwrap();
                let mut tx = conn.transaction().unwrap();
                let mut interner = Interner::default();
                if preload {
                    interner.preload(&mut tx, &[], &processes).unwrap();
                }
                for p in &processes {
                    interner.set(&mut tx, &p.artifacts).unwrap();
                }
                statements += interner.sql.uses;
                tx.commit().unwrap();
            }
            let took = started.elapsed();
            println!(
                "pre-pass {preload}: {hosts} hosts interned in {:.2} s ({:.1} ms and {} statements per host)",
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / hosts as f64,
                statements / hosts
            );
        }
    }
}
