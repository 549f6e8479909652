//! Paging through Prometheus Alertmanager's API v2 (`POST
//! /api/v2/alerts`) for incidents whose plan opens a sev1 or sev2
//! (`open_incident_sev1`/`open_incident_sev2`, enforced, automatic or
//! approved, not reverted).
//!
//! An active incident's alerts are sent again every interval without
//! `endsAt`, so Alertmanager keeps them firing (its `resolve_timeout`, 5
//! minutes by default, must exceed the interval); containment applied
//! changes nothing. Only when the incident ends (closed, or a false
//! positive) are they sent once more with `endsAt`, the time it ended,
//! which resolves them. One alert per exposed (namespace, workload), with
//! low-cardinality labels (alertname, severity, tier, incident, namespace,
//! workload); everything else is an annotation.
//!
//! [`alerts`] is pure (the incidents in, the alert documents out); the
//! loop in [`run`] reads the store, posts outside any transaction and
//! audits each call.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use serde::Serialize;

use super::{DeliverConfig, event::rfc3339, http, schedule::Answer, target_of};
use crate::{
    audit::{self, AuditLog},
    fleet::ingest::Ingest,
    response::{
        ActionKind, Approval, Mode,
        incident::{ActionState, Event, Incident, IncidentError, Observation, display_id, log},
    },
};

/// The alert name every incident alert carries.
pub const ALERTNAME: &str = "PatchgapIncident";

/// Alerts per incident at most (one per exposed namespace and workload).
pub const MAX_ALERTS_PER_INCIDENT: usize = 50;

/// How long after an incident ended its resolution is still sent (by a
/// collector that restarted, say).
pub const RESOLVE_WINDOW_MS: i64 = 24 * 3_600_000;

/// One alert as API v2 takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

/// The page an incident's plan asks for: its severity, or None.
pub fn paged_severity(incident: &Incident) -> Option<&'static str> {
    incident.actions.iter().find_map(|a| {
        let sev = match a.planned.kind {
            ActionKind::OpenIncidentSev1 => "sev1",
            ActionKind::OpenIncidentSev2 => "sev2",
            _ => return None,
        };
        let wanted = a.planned.mode == Mode::Enforce
            && a.state != ActionState::Reverted
            && (a.planned.approval == Approval::Auto || !a.approved_by.is_empty());
        wanted.then_some(sev)
    })
}

/// The alerts for incident `id`: firing while it is open, resolved (with
/// `endsAt` the time it ended) once it ended. None when it does not page.
pub fn alerts(id: i64, incident: &Incident, link_base: Option<&str>) -> Option<Vec<Alert>> {
    let severity = paged_severity(incident)?;
    let ended = !incident.state.is_open();
    let mut places: BTreeSet<(String, String)> = incident
        .scope
        .instances
        .iter()
        .map(|i| (i.namespace.clone().unwrap_or_default(), i.workload.clone()))
        .collect();
    if places.is_empty() {
        places.insert((String::new(), String::new()));
    }
    let link = match link_base {
        Some(base) => format!(
            "{}/incidents/{}",
            base.trim_end_matches('/'),
            display_id(id)
        ),
        None => String::new(),
    };
    let summary = format!(
        "{}: {} (tier {} {})",
        display_id(id),
        incident.dedup_key,
        incident.tier.map_or("-".into(), |t| t.to_string()),
        incident.tier_name
    );
    let description = format!(
        "{} workload(s) on {} host(s) exposed; {} image digest(s). State: {}. See `patchgap incident show {}`.",
        incident.scope.workloads.len(),
        incident.scope.hosts.len(),
        incident.scope.image_digests.len(),
        incident.state,
        display_id(id)
    );
    Some(
        places
            .into_iter()
            .take(MAX_ALERTS_PER_INCIDENT)
            .map(|(namespace, workload)| {
                let mut labels = BTreeMap::from([
                    ("alertname".to_string(), ALERTNAME.to_string()),
                    ("severity".to_string(), severity.to_string()),
                    (
                        "tier".to_string(),
                        incident.tier.map_or(String::new(), |t| t.to_string()),
                    ),
                    ("incident".to_string(), display_id(id)),
                ]);
                // Alertmanager drops empty labels anyway; leave them out.
                if !namespace.is_empty() {
                    labels.insert("namespace".into(), namespace);
                }
                if !workload.is_empty() {
                    labels.insert("workload".into(), workload);
                }
                labels.retain(|_, v| !v.is_empty());
                let annotations = BTreeMap::from([
                    ("summary".to_string(), summary.clone()),
                    ("description".to_string(), description.clone()),
                    ("dedup_key".to_string(), incident.dedup_key.clone()),
                    ("state".to_string(), incident.state.to_string()),
                ]);
                Alert {
                    labels,
                    annotations,
                    starts_at: rfc3339(incident.opened_at_ms),
                    ends_at: ended.then(|| rfc3339(incident.updated_at_ms)),
                    generator_url: link.clone(),
                }
            })
            .collect(),
    )
}

/// What one pass posts: (incident, resolved, alerts).
type Batch = Vec<(i64, bool, Vec<Alert>)>;

/// The alerts of the newest incidents: every open one that pages, and
/// every one that ended within [`RESOLVE_WINDOW_MS`] and whose resolution
/// this process has not sent yet.
fn due(
    ingest: &Ingest,
    resolved: &HashSet<i64>,
    link_base: Option<&str>,
    now_ms: i64,
) -> Result<Batch, log::LogError> {
    let store = ingest.store().as_ref();
    let mut out = Vec::new();
    for rec in store.incidents(None, false, log::REFRESH_MAX)? {
        if !rec.open && (resolved.contains(&rec.id) || rec.updated_ms < now_ms - RESOLVE_WINDOW_MS)
        {
            continue;
        }
        let incident = log::load(store, &rec)?;
        if let Some(a) = alerts(rec.id, &incident, link_base) {
            out.push((rec.id, !incident.state.is_open(), a));
        }
    }
    Ok(out)
}

/// Records in incident `id`'s log that Alertmanager took its page (the
/// first time): the page action `requested` if it was only planned (a
/// page has no executor but this one), then `acknowledged`, so it shows
/// `applied`. Blocking.
fn record_page(ingest: &Ingest, id: i64, status: u16) {
    let now = patchgap_proto::time::now_ms();
    let wrote = log::append(ingest, id, log::COLLECTOR, now, |cur| {
        let Some(a) = cur.actions.iter().find(|a| {
            matches!(
                a.planned.kind,
                ActionKind::OpenIncidentSev1 | ActionKind::OpenIncidentSev2
            ) && a.planned.mode == Mode::Enforce
                && matches!(a.state, ActionState::Planned | ActionState::Requested)
                && (a.planned.approval == Approval::Auto || !a.approved_by.is_empty())
        }) else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        if a.state == ActionState::Planned {
            events.push(Event::Requested {
                actions: vec![a.planned.id],
            });
        }
        events.push(Event::Observed {
            action: a.planned.id,
            observation: Observation::Acknowledged {
                at_ms: now,
                endpoint: "alertmanager".into(),
                webhook_id: String::new(),
                status,
                awaits_confirmation: false,
            },
        });
        Ok::<_, IncidentError>(events)
    });
    if let Err(error) = wrote {
        tracing::warn!(%error, incident = %display_id(id), "cannot record the page in the incident");
    }
}

/// Posts and re-posts alerts until the task is dropped: a pass every
/// `config.alert_interval` (scaled by `config.time_scale`).
pub async fn run(ingest: Arc<Ingest>, audit: Arc<AuditLog>, base: String, config: DeliverConfig) {
    let every = config
        .alert_interval
        .mul_f64(config.time_scale)
        .max(Duration::from_millis(100));
    let url: ::http::Uri = match format!("{}/api/v2/alerts", base.trim_end_matches('/')).parse() {
        Ok(u) => u,
        Err(error) => {
            tracing::error!(%error, "the Alertmanager URL does not parse; no alerts are sent");
            return;
        }
    };
    let target = target_of(&base);
    let mut resolved: HashSet<i64> = HashSet::new();
    loop {
        let batch = {
            let (ingest, seen, link) = (ingest.clone(), resolved.clone(), config.link_base.clone());
            tokio::task::spawn_blocking(move || {
                due(
                    &ingest,
                    &seen,
                    link.as_deref(),
                    patchgap_proto::time::now_ms(),
                )
            })
            .await
        };
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the incidents to page for");
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(%error, "the paging pass failed");
                Vec::new()
            }
        };
        for (id, ended, alerts) in batch {
            let body = serde_json::to_vec(&alerts).expect("alerts serialize");
            let answer = http::post(&url, &[], Bytes::from(body), None, config.timeouts).await;
            let ok =
                matches!(answer, Answer::Status { status, .. } if (200..300).contains(&status));
            if ok && ended {
                resolved.insert(id);
            }
            let result = match &answer {
                Answer::Status { status, .. } => format!("HTTP {status}"),
                Answer::NoAnswer(why) => format!("no answer: {why}"),
            };
            if !ok {
                tracing::warn!(incident = %display_id(id), %result, "Alertmanager did not take the alerts");
            }
            let (audit, target, ingest) = (audit.clone(), target.clone(), ingest.clone());
            let n = alerts.len();
            let status = match &answer {
                Answer::Status { status, .. } => *status,
                Answer::NoAnswer(_) => 0,
            };
            let _ = tokio::task::spawn_blocking(move || {
                if ok && !ended {
                    record_page(&ingest, id, status);
                }
                audit.record(audit::Event {
                    subject: log::COLLECTOR.into(),
                    scopes: String::new(),
                    peer: target,
                    method: "alertmanager.post".into(),
                    args: format!(
                        "incident={} alerts={n} {}",
                        display_id(id),
                        if ended { "resolved" } else { "firing" }
                    ),
                    result,
                })
            })
            .await;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{
        incident::{ActionTimes, IncidentAction, Instance, Source, State},
        plan::PlannedAction,
    };

    fn incident(state: State, kind: ActionKind, approval: Approval, approved_by: &str) -> Incident {
        let source = Source::Advisory {
            id: "GHSA-xxxx".into(),
            asked_as: String::new(),
            host: None,
        };
        let mut scope = crate::response::incident::Scope::default();
        for (ns, w) in [
            ("shop", "k8s:c/shop/Deployment/web"),
            ("shop", "k8s:c/shop/Deployment/web"),
            ("pay", "k8s:c/pay/Deployment/api"),
        ] {
            scope.instances.push(Instance {
                host: "h1".into(),
                workload: w.into(),
                namespace: Some(ns.into()),
                ..Instance::default()
            });
        }
        Incident {
            dedup_key: source.dedup_key(),
            state,
            tier: Some(1),
            source,
            opened_at_ms: 1_000,
            opened_by: "alice".into(),
            updated_at_ms: 9_000,
            scope,
            last_seq: 5,
            tier_name: "critical".into(),
            plan: None,
            actions: vec![IncidentAction {
                planned: PlannedAction {
                    id: 1,
                    kind,
                    mode: Mode::Enforce,
                    approval,
                    revert_after_ms: None,
                    allow: Vec::new(),
                    targets: Vec::new(),
                    excluded: Vec::new(),
                    no_executor: None,
                    endpoint: None,
                },
                plan: "h".into(),
                state: ActionState::Planned,
                reason: String::new(),
                approved_by: approved_by.into(),
                times: ActionTimes::default(),
                time_to_containment_ms: None,
            }],
            next_action: 2,
            hosts_seen: Default::default(),
            hosts_retired: Default::default(),
            break_glass: Default::default(),
            plan_stale: false,
            verification: None,
            forced_close: None,
            reopened: 0,
        }
    }

    #[test]
    fn an_open_incident_fires_one_alert_per_workload_without_ends_at() {
        let i = incident(
            State::Contained,
            ActionKind::OpenIncidentSev1,
            Approval::Auto,
            "",
        );
        let a = alerts(7, &i, Some("https://pg.example")).unwrap();
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(
            a.iter().all(|a| a.ends_at.is_none()),
            "containment applied does not resolve"
        );
        let labels: Vec<_> = a[1]
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            labels,
            [
                "alertname=PatchgapIncident",
                "incident=INC-7",
                "namespace=shop",
                "severity=sev1",
                "tier=1",
                "workload=k8s:c/shop/Deployment/web"
            ]
        );
        assert_eq!(a[0].starts_at, "1970-01-01T00:00:01.000Z");
        assert_eq!(a[0].generator_url, "https://pg.example/incidents/INC-7");
        assert!(a[0].annotations["summary"].contains("GHSA-xxxx"));
    }

    #[test]
    fn a_closed_incident_resolves_with_ends_at() {
        let i = incident(
            State::Closed,
            ActionKind::OpenIncidentSev2,
            Approval::Required,
            "bob",
        );
        let a = alerts(7, &i, None).unwrap();
        assert!(
            a.iter()
                .all(|a| a.ends_at.as_deref() == Some("1970-01-01T00:00:09.000Z"))
        );
        assert_eq!(a[0].labels["severity"], "sev2");
    }

    #[test]
    fn pages_only_when_the_plan_says_so() {
        // Waiting for an approval: no page yet.
        let i = incident(
            State::ApprovalPending,
            ActionKind::OpenIncidentSev1,
            Approval::Required,
            "",
        );
        assert!(alerts(1, &i, None).is_none());
        let i = incident(
            State::Planned,
            ActionKind::OpenTicketSev3,
            Approval::Auto,
            "",
        );
        assert!(alerts(1, &i, None).is_none());
        let mut i = incident(
            State::Planned,
            ActionKind::OpenIncidentSev1,
            Approval::Auto,
            "",
        );
        i.actions[0].planned.mode = Mode::Observe;
        assert!(alerts(1, &i, None).is_none());
    }
}
