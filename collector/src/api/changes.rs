//! ListWorkloadChanges: what changed on one workload since a time
//! (`fleet::changes`), in pages. The changes are computed whole (bounded
//! by the fold's instance and package caps) and a page is the part after
//! the token's change, in (time, name, version) order; the token names
//! the request it continues, so it is refused with another workload or
//! time.

use patchgap_proto::v1;
use tonic::Status;

use super::{invalid, query::QueryService, to_status};
use crate::fleet::changes::{self, Change, LOOKBACK_MS};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;
/// The longest workload text accepted.
const MAX_FIELD: usize = 512;
const TOKEN_VERSION: &str = "c1.";

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChanges {
    pub workload: String,
    pub since_ms: i64,
    pub page_size: usize,
    /// The last change of the previous page: (at, name, to).
    pub after: Option<(i64, String, String)>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The token after change `c` of the answer to (`workload`, `since_ms`).
pub fn token(workload: &str, since_ms: i64, c: &Change) -> String {
    let text = format!(
        "{workload}\u{1f}{since_ms}\u{1f}{}\u{1f}{}\u{1f}{}",
        c.at_ms, c.name, c.to
    );
    format!("{TOKEN_VERSION}{}", hex(&text))
}

impl TryFrom<v1::ListWorkloadChangesRequest> for ListChanges {
    type Error = Status;

    fn try_from(req: v1::ListWorkloadChangesRequest) -> Result<Self, Status> {
        let workload = req.workload.trim().to_string();
        if workload.is_empty()
            || workload.len() > MAX_FIELD
            || workload.chars().any(char::is_control)
        {
            return Err(invalid(
                "give a workload: its baseline key, or part of it that names one workload",
            ));
        }
        if req.since_ms < 0 {
            return Err(invalid(
                "since is a time (ms since the epoch), not negative",
            ));
        }
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = match req.page_token.as_str() {
            "" => None,
            t => {
                let bad = || invalid("page_token is not one this query gave");
                let text = t
                    .strip_prefix(TOKEN_VERSION)
                    .and_then(unhex)
                    .ok_or_else(bad)?;
                let parts: Vec<&str> = text.split('\u{1f}').collect();
                let [w, since, at, name, to] = parts.as_slice() else {
                    return Err(bad());
                };
                if *w != workload || since.parse::<i64>().ok() != Some(req.since_ms) {
                    return Err(invalid(
                        "page_token belongs to another query (workload or since differ)",
                    ));
                }
                Some((
                    at.parse().map_err(|_| bad())?,
                    name.to_string(),
                    to.to_string(),
                ))
            }
        };
        Ok(ListChanges {
            workload,
            since_ms: req.since_ms,
            page_size,
            after,
        })
    }
}

/// The page of `all` (sorted by time, name, version) after `after`.
pub fn page<'a>(
    all: &'a [Change],
    after: Option<&(i64, String, String)>,
    size: usize,
) -> (&'a [Change], bool) {
    let start = match after {
        None => 0,
        Some((at, name, to)) => all.partition_point(|c| {
            (c.at_ms, c.name.as_str(), c.to.as_str()) <= (*at, name.as_str(), to.as_str())
        }),
    };
    let end = (start + size).min(all.len());
    (&all[start..end], end < all.len())
}

fn to_wire(c: &Change) -> v1::WorkloadPackageChange {
    v1::WorkloadPackageChange {
        name: c.name.clone(),
        from_version: c.from.clone(),
        to_version: c.to.clone(),
        at_ms: c.at_ms,
        evidence: c.evidence.clone(),
        purl: c.purl.clone(),
        hosts: c.hosts.clone(),
        replicas: c.replicas.clone(),
    }
}

/// Changes an incident opened from an egress alert shows: its workload's
/// within the quarantine window before the alert's first sighting (at
/// most 100). Empty for other incidents, or when the alert is gone.
/// Blocking.
pub(super) fn of_incident(
    ingest: &crate::Ingest,
    incident: &crate::response::incident::Incident,
) -> Vec<v1::WorkloadPackageChange> {
    let crate::response::incident::Source::EgressAlert { alert } = &incident.source else {
        return Vec::new();
    };
    let Ok(id) = alert.trim_start_matches("EGR-").parse::<i64>() else {
        return Vec::new();
    };
    let store = ingest.store().as_ref();
    let Ok(Some(record)) = store.egress_alert(id) else {
        return Vec::new();
    };
    let quarantine = ingest
        .egress()
        .map(|s| s.config().learning.quarantine)
        .unwrap_or_default();
    let since = record
        .first_seen_ms
        .saturating_sub(i64::try_from(quarantine.as_millis()).unwrap_or(i64::MAX / 4));
    match changes::for_workload(store, &record.workload, since) {
        Ok(found) => found.changes.iter().take(100).map(to_wire).collect(),
        Err(error) => {
            tracing::warn!(error = %error.chain(), alert = id, "cannot read the alert's package changes");
            Vec::new()
        }
    }
}

pub(super) async fn list(
    svc: &QueryService,
    req: v1::ListWorkloadChangesRequest,
) -> Result<v1::ListWorkloadChangesResponse, Status> {
    let q = ListChanges::try_from(req)?;
    svc.domain(move |ingest| {
        let store = ingest.store().as_ref();
        let keys = changes::keys_matching(store, &q.workload, q.since_ms.saturating_sub(LOOKBACK_MS))
            .map_err(to_status)?;
        let key = match keys.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Status::not_found(format!(
                    "no workload {:?} seen since a week before --since (patchgap workloads names them)",
                    q.workload
                )));
            }
            many => {
                let shown: Vec<&str> = many.iter().take(5).map(String::as_str).collect();
                return Err(invalid(format!(
                    "{:?} names {} workloads ({}{}): give more of the key",
                    q.workload,
                    many.len(),
                    shown.join(", "),
                    if many.len() > 5 { ", …" } else { "" }
                )));
            }
        };
        let found = changes::for_workload(store, &key, q.since_ms).map_err(to_status)?;
        let (items, more) = page(&found.changes, q.after.as_ref(), q.page_size);
        Ok(v1::ListWorkloadChangesResponse {
            key: found.key.clone(),
            next_page_token: match (more, items.last()) {
                (true, Some(last)) => token(&q.workload, q.since_ms, last),
                _ => String::new(),
            },
            changes: items.iter().map(to_wire).collect(),
            instances: u32::try_from(found.instances).unwrap_or(u32::MAX),
            truncated: found.truncated,
            history_dropped_before_ms: found.history_dropped_before_ms,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(at: i64, name: &str, to: &str) -> Change {
        Change {
            name: name.into(),
            from: String::new(),
            to: to.into(),
            at_ms: at,
            evidence: "installed".into(),
            purl: String::new(),
            hosts: vec![],
            replicas: vec![],
        }
    }

    fn req(workload: &str, since: i64, size: u32, token: &str) -> v1::ListWorkloadChangesRequest {
        v1::ListWorkloadChangesRequest {
            workload: workload.into(),
            since_ms: since,
            page_size: size,
            page_token: token.into(),
        }
    }

    #[test]
    fn pages_walk_every_change_once() {
        let all = vec![
            change(1, "pypi/a", "2"),
            change(1, "pypi/b", "2"),
            change(2, "pypi/a", "3"),
            change(5, "deb/x", ""),
            change(9, "pypi/z", "1"),
        ];
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let q = ListChanges::try_from(req("trainer", 0, 2, &token)).unwrap();
            let (items, more) = page(&all, q.after.as_ref(), q.page_size);
            seen.extend(items.iter().cloned());
            if !more {
                break;
            }
            token = super::token("trainer", 0, items.last().unwrap());
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn bad_requests_are_refused_clearly() {
        let msg = |r: v1::ListWorkloadChangesRequest| {
            ListChanges::try_from(r).unwrap_err().message().to_string()
        };
        assert!(msg(req("", 0, 0, "")).contains("give a workload"));
        assert!(msg(req("x\ny", 0, 0, "")).contains("give a workload"));
        assert!(msg(req("x", -1, 0, "")).contains("not negative"));
        assert!(msg(req("x", 0, 0, "garbage")).contains("not one this query gave"));
        assert!(msg(req("x", 0, 0, "c1.zz")).contains("not one this query gave"));
        let t = token("trainer", 5, &change(7, "pypi/a", "2"));
        assert!(msg(req("other", 5, 0, &t)).contains("another query"));
        assert!(msg(req("trainer", 6, 0, &t)).contains("another query"));
        let ok = ListChanges::try_from(req("trainer", 5, 5_000, &t)).unwrap();
        assert_eq!(ok.after, Some((7, "pypi/a".into(), "2".into())));
        assert_eq!(ok.page_size, MAX_PAGE);
    }
}
