//! Egress baselines (versioned documents) and alerts (one open per dedup
//! key). The documents are the domain's; SQL here keeps their identity,
//! versions and counters only. A baseline's writers take an advisory lock
//! on its key; an alert's sighting is one upsert on the partial unique
//! index of open alerts, so racing sightings of one key make one alert.

use patchgap_proto::{Message, v1};
use postgres::{Client, GenericClient, Row};

use super::packages::{PACKAGE_COLUMNS, evidence_name, package_row};
use crate::store::{
    ChainLink, EGRESS_BASELINE_VERSIONS, EgressAlertRecord, EgressAlertUpsert,
    EgressBaselineRecord, ProcessChain, Result, StoreError,
};

fn baseline_row(r: &Row) -> EgressBaselineRecord {
    EgressBaselineRecord {
        key: r.get(0),
        version: r.get(1),
        updated_ms: r.get(2),
        body: r.get(3),
    }
}

pub(super) fn put_baseline(
    client: &mut Client,
    key: &str,
    expected_version: i64,
    updated_ms: i64,
    body: &str,
) -> Result<EgressBaselineRecord> {
    let mut tx = client.transaction()?;
    // Writers of one key take turns (a hash collision only makes two keys
    // take turns too).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('egress_baseline:' || $1::TEXT, 0))",
        &[&key],
    )?;
    let stored: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM egress_baseline WHERE key = $1",
            &[&key],
        )?
        .get(0);
    if stored != expected_version {
        return Err(StoreError::Invalid(format!(
            "egress baseline {key:?} is at version {stored}, not {expected_version}: reload it"
        )));
    }
    let version = stored + 1;
    tx.execute(
        "INSERT INTO egress_baseline (key, version, updated_ms, body) VALUES ($1, $2, $3, $4)",
        &[&key, &version, &updated_ms, &body],
    )?;
    tx.execute(
        "DELETE FROM egress_baseline WHERE key = $1 AND version <= $2",
        &[&key, &(version - EGRESS_BASELINE_VERSIONS)],
    )?;
    tx.commit()?;
    Ok(EgressBaselineRecord {
        key: key.into(),
        version,
        updated_ms,
        body: body.into(),
    })
}

pub(super) fn baseline(
    c: &mut impl GenericClient,
    key: &str,
    version: Option<i64>,
) -> Result<Option<EgressBaselineRecord>> {
    Ok(c.query_opt(
        "SELECT key, version, updated_ms, body FROM egress_baseline
             WHERE key = $1 AND ($2::BIGINT IS NULL OR version = $2)
             ORDER BY version DESC LIMIT 1",
        &[&key, &version],
    )?
    .map(|r| baseline_row(&r)))
}

pub(super) fn baselines(c: &mut impl GenericClient) -> Result<Vec<EgressBaselineRecord>> {
    Ok(c.query(
        "SELECT b.key, b.version, b.updated_ms, b.body FROM egress_baseline b
             WHERE b.version = (SELECT MAX(version) FROM egress_baseline WHERE key = b.key)
             ORDER BY b.key",
        &[],
    )?
    .iter()
    .map(baseline_row)
    .collect())
}

const ALERT_COLUMNS: &str =
    "id, dedup_key, workload, first_seen_ms, last_seen_ms, count, resolved_ms, body";

fn alert_row(r: &Row) -> EgressAlertRecord {
    EgressAlertRecord {
        id: r.get(0),
        dedup_key: r.get(1),
        workload: r.get(2),
        first_seen_ms: r.get(3),
        last_seen_ms: r.get(4),
        count: r.get(5),
        resolved_ms: r.get(6),
        body: r.get(7),
    }
}

pub(super) fn upsert_alert(
    c: &mut impl GenericClient,
    a: &EgressAlertUpsert<'_>,
) -> Result<(EgressAlertRecord, bool)> {
    if a.count < 1 {
        return Err(StoreError::Invalid(format!(
            "egress alert {:?}: a sighting counts at least 1, not {}",
            a.dedup_key, a.count
        )));
    }
    // `xmax = 0` only on a row this statement inserted.
    let r = c.query_one(
        &format!(
            "INSERT INTO egress_alert AS e (dedup_key, workload, first_seen_ms, last_seen_ms, count, body)
             VALUES ($1, $2, $3, $3, $4, $5)
             ON CONFLICT (dedup_key) WHERE resolved_ms IS NULL DO UPDATE SET
                 last_seen_ms = GREATEST(e.last_seen_ms, excluded.last_seen_ms),
                 count = e.count + excluded.count, body = excluded.body
             RETURNING {ALERT_COLUMNS}, (xmax = 0)"
        ),
        &[&a.dedup_key, &a.workload, &a.seen_ms, &a.count, &a.body],
    )?;
    Ok((alert_row(&r), r.get(8)))
}

pub(super) fn resolve_alerts(
    c: &mut impl GenericClient,
    quiet_before_ms: i64,
    now_ms: i64,
) -> Result<Vec<EgressAlertRecord>> {
    let mut resolved: Vec<EgressAlertRecord> = c
        .query(
            &format!(
                "UPDATE egress_alert SET resolved_ms = $2
                 WHERE resolved_ms IS NULL AND last_seen_ms < $1
                 RETURNING {ALERT_COLUMNS}"
            ),
            &[&quiet_before_ms, &now_ms],
        )?
        .iter()
        .map(alert_row)
        .collect();
    resolved.sort_by_key(|a| a.id);
    Ok(resolved)
}

pub(super) fn alert(c: &mut impl GenericClient, id: i64) -> Result<Option<EgressAlertRecord>> {
    Ok(c.query_opt(
        &format!("SELECT {ALERT_COLUMNS} FROM egress_alert WHERE id = $1"),
        &[&id],
    )?
    .map(|r| alert_row(&r)))
}

pub(super) fn open_alert(
    c: &mut impl GenericClient,
    dedup_key: &str,
) -> Result<Option<EgressAlertRecord>> {
    Ok(c.query_opt(
        &format!(
            "SELECT {ALERT_COLUMNS} FROM egress_alert WHERE dedup_key = $1 AND resolved_ms IS NULL"
        ),
        &[&dedup_key],
    )?
    .map(|r| alert_row(&r)))
}

pub(super) fn alerts(
    c: &mut impl GenericClient,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<EgressAlertRecord>> {
    Ok(c.query(
        &format!(
            "SELECT {ALERT_COLUMNS} FROM egress_alert WHERE last_seen_ms >= $1
                 ORDER BY last_seen_ms DESC, id DESC LIMIT $2"
        ),
        &[&since_ms, &i64::try_from(limit).unwrap_or(i64::MAX)],
    )?
    .iter()
    .map(alert_row)
    .collect())
}

/// (row id, set id, ppid, link).
type Found = (i64, i64, u32, ChainLink);

fn link_row(r: &Row) -> Found {
    (
        r.get(0),
        r.get(1),
        r.get::<_, i64>(2) as u32,
        ChainLink {
            pid: r.get::<_, i64>(3) as u32,
            start_ticks: r.get::<_, i64>(4) as u64,
            start_time_ms: r.get(5),
            exe: r.get(6),
            cmdline: r.get(7),
            workload: r.get(8),
            privilege: v1::Privilege::decode(r.get::<_, &[u8]>(9)).unwrap_or_default(),
        },
    )
}

const LINK_COLUMNS: &str =
    "id, set_id, ppid, pid, start_ticks, start_time_ms, exe, cmdline, workload, privilege";

pub(super) fn process_chain(
    c: &mut impl GenericClient,
    host: i64,
    key: &v1::ProcessKey,
    depth: usize,
) -> Result<Option<ProcessChain>> {
    let Some(hostname) = c
        .query_opt("SELECT hostname FROM host WHERE id = $1", &[&host])?
        .map(|r| r.get::<_, String>(0))
    else {
        return Ok(None);
    };
    let first = c
        .query_opt(
            &format!(
                "SELECT {LINK_COLUMNS} FROM process WHERE host = $1 AND pid = $2 AND start_ticks = $3
                 ORDER BY (exit_time_ms IS NULL) DESC, id DESC LIMIT 1"
            ),
            &[&host, &i64::from(key.pid), &(key.start_ticks as i64)],
        )?
        .map(|r| link_row(&r));
    let Some((_, set_id, mut ppid, link)) = first else {
        return Ok(None);
    };
    let mut chain = ProcessChain {
        hostname,
        ..ProcessChain::default()
    };
    let workload_id = link.workload.clone();
    let mut started = link.start_time_ms;
    chain.links.push(link);
    // The parent is the process with the ppid that started before the
    // child: running if it still does, else the latest such.
    let parent = c.prepare(&format!(
        "SELECT {LINK_COLUMNS} FROM process WHERE host = $1 AND pid = $2 AND start_time_ms <= $3
         ORDER BY (exit_time_ms IS NULL) DESC, start_time_ms DESC LIMIT 1"
    ))?;
    while chain.links.len() < depth && ppid > 0 {
        let Some((_, _, next, link)) = c
            .query_opt(&parent, &[&host, &i64::from(ppid), &started])?
            .map(|r| link_row(&r))
        else {
            break;
        };
        if chain.links.iter().any(|l| l.pid == link.pid) {
            break;
        }
        started = link.start_time_ms;
        ppid = next;
        chain.links.push(link);
    }
    // The strongest evidence per package: exe, mapped, opened and
    // anonymous by their kind's number, then embedded, then installed.
    let found: Vec<(i64, i64)> = c
        .query(
            "SELECT a.package_id, MIN(CASE a.kind WHEN 4 THEN 10 WHEN 5 THEN 9 ELSE a.kind END)
             FROM artifact a JOIN artifact_set_member m ON m.artifact_id = a.id
             WHERE m.set_id = $1 AND a.package_id != 0
             GROUP BY a.package_id",
            &[&set_id],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let package = c.prepare(&format!("{PACKAGE_COLUMNS} WHERE p.id = $1"))?;
    for (id, rank) in found {
        let kind = match rank {
            10 => v1::ArtifactKind::Installed as i32,
            9 => v1::ArtifactKind::Embedded as i32,
            k => k as i32,
        };
        if let Some(r) = c.query_opt(&package, &[&id])? {
            let (_, p) = package_row(&r);
            chain.packages.push((p, evidence_name(kind).to_string()));
        }
    }
    chain.packages.sort_by(|(a, _), (b, _)| {
        (&a.ecosystem, &a.name, &a.version).cmp(&(&b.ecosystem, &b.name, &b.version))
    });
    chain.workload = c
        .query_opt(
            "SELECT data FROM workload WHERE host = $1 AND id = $2",
            &[&host, &workload_id],
        )?
        .and_then(|r| v1::Workload::decode(r.get::<_, &[u8]>(0)).ok());
    Ok(Some(chain))
}
