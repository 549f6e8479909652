//! Unexpected-egress alerts (issue 18) delivered: to Prometheus
//! Alertmanager's API v2 and, for workloads whose `[[egress]]` policy
//! names an `endpoint`, as Standard Webhooks through the outbox the
//! incident actions use.
//!
//! **Labels.** An Alertmanager alert is its label set: two alerts with
//! the same labels are one alert. patchgap opens one alert per
//! (workload, destination, port, protocol), so the labels are exactly
//! that identity, plus words from fixed vocabularies:
//! `alertname=PatchgapUnexpectedEgress`, `severity` (critical or
//! warning), `reason` (new_since_upgrade, new_destination, policy),
//! `namespace`, `workload` (the baseline key, which replicas share, so
//! two replicas making the connection are one alert), `destination`,
//! `port`, `protocol`. No pid, host, replica, process start time, count
//! or package version is a label: each would make a restart or a second
//! replica a new alert (the flood Kubescape's users describe) and grow
//! Alertmanager's groups without bound. `destination` is the
//! destination as the baseline learns it: the DNS name the process was
//! told, else the address (`203.0.113.66/32`). The address is kept as a
//! label only when no name is known, because then it *is* the
//! destination's identity; its cardinality is that of the alerts
//! themselves (a workload that is not allowed and has not learned a
//! destination), which the store bounds and which resolve after their
//! quiet period. It lets a responder silence or route one destination
//! across the fleet (`destination="telemetry.example.net"`). Everything
//! else (the address behind a name, every name, the lineage, the packages
//! changed from → to, scope, privilege, baseline state and generation,
//! first seen, count, replicas) is an annotation.
//!
//! **Timing.** An active alert is posted again every
//! `--alert-interval` without `endsAt`, so Alertmanager keeps it firing
//! (its `resolve_timeout` must exceed the interval); once the egress
//! stage resolves it (quiet for `--egress-resolve-after`) it is posted
//! once more with `endsAt`, the time it was resolved. A new or resolved
//! alert published by the stage is posted at once, not at the next
//! interval.
//!
//! **Audit mode.** Alerts of workloads in `audit` mode are listed by
//! `patchgap alerts` (with `delivery` saying why they were not sent) and
//! never posted or enqueued.
//!
//! [`am_alert`], [`webhook_body`] and [`due`] are pure; [`run`] reads the
//! store on a blocking thread, posts outside any transaction and audits
//! every call (`alertmanager.post`; webhook attempts are audited by the
//! outbox worker as `webhook.deliver`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::{DeliverConfig, alertmanager, event::rfc3339, http, schedule::Answer, target_of};
use crate::{
    audit::{self, AuditLog},
    egress::{
        alert::{Alert, Reason},
        baseline::Destination,
        policy::Mode,
        stage::{AlertEvent, EgressPolicies},
    },
    fleet::ingest::Ingest,
    response::incident::log::COLLECTOR,
    store::{EgressAlertRecord, NewDelivery, Store, StoreError},
};

/// The alert name every egress alert carries.
pub const ALERTNAME: &str = "PatchgapUnexpectedEgress";

/// The webhook event types.
pub const OPENED: &str = "patchgap.egress.alert.opened";
pub const RESOLVED: &str = "patchgap.egress.alert.resolved";

/// Alerts looked at per pass (the newest by last sighting).
pub const LOOKED_AT: usize = 1_000;

/// Alerts per POST to Alertmanager.
pub const PER_POST: usize = 100;

/// How long after an alert was resolved its resolution is still sent (by
/// a collector that restarted meanwhile, say).
pub const RESOLVE_WINDOW_MS: i64 = 24 * 3_600_000;

/// The longest annotation value sent (Alertmanager keeps what it is
/// given; a receiver's page should stay a page).
const MAX_ANNOTATION: usize = 4_096;

/// What a responder reads first: critical when the workload touches
/// sensitive data and the connection is new since an upgrade or against
/// its policy; warning otherwise.
pub fn severity(a: &Alert) -> &'static str {
    let sensitive = a.scope.classification.eq_ignore_ascii_case("sensitive");
    match a.reason {
        Reason::NewSinceUpgrade | Reason::Policy if sensitive => "critical",
        _ => "warning",
    }
}

fn reason_word(r: Reason) -> &'static str {
    match r {
        Reason::Policy => "policy",
        Reason::NewDestination => "new_destination",
        Reason::NewSinceUpgrade => "new_since_upgrade",
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_ANNOTATION {
        let mut cut = MAX_ANNOTATION - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The destination as one line: `203.0.113.66:443/tcp (names:
/// telemetry.example.net, from DNS)` or `… (no DNS name seen)`.
pub fn destination_line(a: &Alert) -> String {
    let d = &a.destination;
    if d.names.is_empty() {
        format!("{}:{}/{} (no DNS name seen)", d.ip, d.port, d.protocol)
    } else {
        format!(
            "{}:{}/{} (names: {}, from {})",
            d.ip,
            d.port,
            d.protocol,
            d.names.join(", "),
            d.names_source
        )
    }
}

/// The packages changed on the workload, one per line, from → to.
pub fn changes_lines(a: &Alert) -> String {
    if a.packages_changed.is_empty() {
        return "none recently".into();
    }
    a.packages_changed
        .iter()
        .map(|c| {
            let from = if c.from.is_empty() { "(none)" } else { &c.from };
            let to = if c.to.is_empty() { "(removed)" } else { &c.to };
            format!(
                "{} {from} -> {to} at {} ({})",
                c.name,
                rfc3339(c.at_ms),
                c.evidence
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lineage, connecting process first, one per line.
pub fn lineage_lines(a: &Alert) -> String {
    a.lineage
        .iter()
        .map(|l| {
            format!(
                "pid {} started {} {} [{}]",
                l.pid,
                rfc3339(l.start_time_ms),
                l.exe,
                l.argv
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The alert as Alertmanager API v2 takes it; `resolved_ms` set: with
/// `endsAt`.
pub fn am_alert(
    a: &Alert,
    resolved_ms: Option<i64>,
    link_base: Option<&str>,
) -> alertmanager::Alert {
    let ip = a.destination.ip.parse().ok();
    let learned_as = match ip {
        Some(ip) => Destination::of(ip, &a.destination.names).to_string(),
        None => a.destination.ip.clone(),
    };
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), ALERTNAME.to_string()),
        ("severity".to_string(), severity(a).to_string()),
        ("reason".to_string(), reason_word(a.reason).to_string()),
        ("namespace".to_string(), a.workload.namespace.clone()),
        ("workload".to_string(), a.workload.key.clone()),
        ("destination".to_string(), learned_as),
        ("port".to_string(), a.destination.port.to_string()),
        ("protocol".to_string(), a.destination.protocol.clone()),
    ]);
    // Alertmanager drops empty labels anyway; leave them out.
    labels.retain(|_, v| !v.is_empty());
    let who = if a.workload.owner.is_empty() {
        a.workload.key.clone()
    } else if a.workload.namespace.is_empty() {
        a.workload.owner.clone()
    } else {
        format!("{}/{}", a.workload.namespace, a.workload.owner)
    };
    let why = match a.reason {
        Reason::NewSinceUpgrade => {
            let first = a
                .packages_changed
                .first()
                .map(|c| format!(" of {} {} -> {}", c.name, c.from, c.to))
                .unwrap_or_default();
            format!("new since the upgrade{first}")
        }
        Reason::NewDestination => "a destination its stable baseline never had".into(),
        Reason::Policy => "not allowed by its egress policy".into(),
    };
    let summary = format!("{who} connected to {}: {why}", destination_line(a));
    let scope = if a.scope.writes_to.is_empty() {
        a.scope.classification.clone()
    } else {
        format!(
            "{} (writes to {})",
            a.scope.classification,
            a.scope.writes_to.join(", ")
        )
    };
    let description = format!(
        "Workload {} ({} {} in namespace {:?}, image {}) on {}, data scope {}. \
         First seen {}, {} time(s), by {} replica(s). \
         Open an incident: patchgap incident open --alert {}",
        a.workload.key,
        a.workload.owner_kind,
        a.workload.owner,
        a.workload.namespace,
        if a.workload.image_digest.is_empty() {
            "unknown"
        } else {
            &a.workload.image_digest
        },
        a.host,
        if scope.is_empty() { "unknown" } else { &scope },
        rfc3339(a.first_seen_ms),
        a.count,
        a.replicas.len(),
        a.id
    );
    let annotations = BTreeMap::from([
        ("summary".to_string(), summary),
        ("description".to_string(), description),
        ("alert_id".to_string(), a.id.to_string()),
        ("destination".to_string(), destination_line(a)),
        ("lineage".to_string(), lineage_lines(a)),
        ("packages_changed".to_string(), changes_lines(a)),
        ("scope".to_string(), scope),
        (
            "privilege".to_string(),
            format!(
                "root={} privileged={} host_network={}",
                a.privilege.root, a.privilege.privileged, a.privilege.host_network
            ),
        ),
        (
            "baseline".to_string(),
            format!(
                "{}, generation {}",
                a.baseline.state,
                if a.baseline.generation.is_empty() {
                    "-"
                } else {
                    &a.baseline.generation
                }
            ),
        ),
        ("first_seen".to_string(), rfc3339(a.first_seen_ms)),
        ("last_seen".to_string(), rfc3339(a.last_seen_ms)),
        ("count".to_string(), a.count.to_string()),
        ("replicas".to_string(), a.replicas.join(", ")),
        ("host".to_string(), a.host.clone()),
        ("mode".to_string(), a.mode.clone()),
        ("image_digest".to_string(), a.workload.image_digest.clone()),
    ])
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k, clip(v)))
    .collect();
    let generator_url = match link_base {
        Some(base) => format!("{}/alerts/{}", base.trim_end_matches('/'), a.id),
        None => String::new(),
    };
    alertmanager::Alert {
        labels,
        annotations,
        starts_at: rfc3339(a.first_seen_ms),
        ends_at: resolved_ms.map(rfc3339),
        generator_url,
    }
}

/// The webhook-id of alert `id`'s opening or resolution: the same on
/// every attempt and after every restart.
pub fn webhook_id(id: i64, resolved: bool) -> String {
    let what = if resolved { "resolved" } else { "opened" };
    let digest = Sha256::digest(format!("patchgap/egress/{id}/{what}"));
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    /// The alert as `patchgap alerts -o json` carries it (times in ms).
    alert: &'a Alert,
    severity: &'static str,
    resolved_at: Option<String>,
    link: String,
}

/// The webhook event (Standard Webhooks' payload shape), the same bytes
/// on every attempt: `timestamp` is when the alert opened or resolved,
/// not when it is sent.
pub fn webhook_body(a: &Alert, resolved_ms: Option<i64>, link_base: Option<&str>) -> Vec<u8> {
    let body = Body {
        kind: if resolved_ms.is_some() {
            RESOLVED
        } else {
            OPENED
        },
        timestamp: rfc3339(resolved_ms.unwrap_or(a.first_seen_ms)),
        data: Data {
            alert: a,
            severity: severity(a),
            resolved_at: resolved_ms.map(rfc3339),
            link: match link_base {
                Some(base) => format!("{}/alerts/{}", base.trim_end_matches('/'), a.id),
                None => format!("patchgap alerts (alert {})", a.id),
            },
        },
    };
    serde_json::to_vec(&body).expect("an alert serializes")
}

/// One stored alert, read back for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub alert: Alert,
    /// When it was resolved; None while open.
    pub resolved_ms: Option<i64>,
}

/// The stored alert as the domain sees it (its counters from the row),
/// or None when its document does not read.
pub fn stored(r: &EgressAlertRecord) -> Option<Stored> {
    let mut alert: Alert = serde_json::from_str(&r.body).ok()?;
    alert.id = r.id;
    alert.first_seen_ms = r.first_seen_ms;
    alert.last_seen_ms = r.last_seen_ms;
    alert.count = u64::try_from(r.count).unwrap_or(0);
    Some(Stored {
        alert,
        resolved_ms: r.resolved_ms,
    })
}

/// What this deliverer has sent already (in this process).
#[derive(Debug, Default)]
pub struct Sent {
    /// Firing alerts posted, by id, with when.
    firing: HashMap<i64, i64>,
    /// Resolutions posted.
    resolved: HashSet<i64>,
    /// Webhook deliveries enqueued (id, resolved).
    enqueued: HashSet<(i64, bool)>,
}

/// What one pass sends.
#[derive(Debug, Default, PartialEq)]
pub struct Due {
    /// Alerts to post now (firing, and resolved with their end).
    pub post: Vec<Stored>,
    /// Webhook events to enqueue: (alert, endpoint).
    pub enqueue: Vec<(Stored, String)>,
}

/// What to send from the alerts `alerts` (the newest first): firing
/// alerts not posted yet, or all of them when `resend`; resolutions
/// not posted yet, within [`RESOLVE_WINDOW_MS`]; and for workloads whose
/// policy names an endpoint, their opening and resolution events not
/// enqueued yet. Never an `audit`-mode alert.
pub fn due(
    alerts: &[Stored],
    policies: &EgressPolicies,
    sent: &Sent,
    resend: bool,
    now_ms: i64,
) -> Due {
    let mut out = Due::default();
    for s in alerts {
        let a = &s.alert;
        if a.mode == Mode::Audit.as_str() {
            continue;
        }
        match s.resolved_ms {
            None if resend || !sent.firing.contains_key(&a.id) => out.post.push(s.clone()),
            Some(at) if !sent.resolved.contains(&a.id) && at >= now_ms - RESOLVE_WINDOW_MS => {
                out.post.push(s.clone())
            }
            _ => {}
        }
        if let Some(endpoint) = &policies.for_workload(&a.workload).endpoint {
            for resolved in [false, true] {
                if (resolved && s.resolved_ms.is_none())
                    || sent.enqueued.contains(&(a.id, resolved))
                {
                    continue;
                }
                let mut event = s.clone();
                if !resolved {
                    event.resolved_ms = None;
                }
                out.enqueue.push((event, endpoint.clone()));
            }
        }
    }
    out
}

/// Reads the alerts that may need sending: last seen within the quiet
/// period and the resolution window.
fn read(store: &dyn Store, quiet: Duration, now_ms: i64) -> Result<Vec<Stored>, StoreError> {
    let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX / 4);
    let since = now_ms
        .saturating_sub(quiet_ms)
        .saturating_sub(RESOLVE_WINDOW_MS);
    Ok(store
        .egress_alerts(since, LOOKED_AT)?
        .iter()
        .filter_map(stored)
        .collect())
}

/// Enqueues the webhook events in the outbox (idempotent by
/// webhook-id); returns those stored (new or there already).
fn enqueue(
    store: &dyn Store,
    events: &[(Stored, String)],
    link_base: Option<&str>,
    now_ms: i64,
) -> Vec<(i64, bool)> {
    let mut done = Vec::new();
    for (s, endpoint) in events {
        let resolved = s.resolved_ms.is_some();
        let d = NewDelivery {
            webhook_id: webhook_id(s.alert.id, resolved),
            endpoint: endpoint.clone(),
            // Not an incident's: the outbox worker knows these by 0.
            incident: 0,
            action: 0,
            event_type: if resolved { RESOLVED } else { OPENED }.into(),
            body: webhook_body(&s.alert, s.resolved_ms, link_base),
            created_ms: now_ms,
        };
        match store.enqueue_delivery(&d) {
            Ok(_) => done.push((s.alert.id, resolved)),
            Err(error) => {
                tracing::warn!(error = %error.chain(), alert = s.alert.id, "cannot enqueue an egress alert's webhook")
            }
        }
    }
    done
}

/// What a pass prepared: the alerts to post, and the webhook events
/// enqueued (alert id, resolved).
pub type Prepared = (Vec<Stored>, Vec<(i64, bool)>);

/// One pass's store work (blocking): reads the alerts, enqueues the
/// webhook events due, and returns the alerts to post and the events
/// enqueued.
pub fn prepare(
    store: &dyn Store,
    egress: &crate::egress::stage::EgressConfig,
    sent: &Sent,
    resend: bool,
    link_base: Option<&str>,
    now_ms: i64,
) -> Result<Prepared, StoreError> {
    let alerts = read(store, egress.resolve_after, now_ms)?;
    let due = due(&alerts, &egress.policies, sent, resend, now_ms);
    let enqueued = enqueue(store, &due.enqueue, link_base, now_ms);
    Ok((due.post, enqueued))
}

/// Delivers egress alerts until the task is dropped: a pass at once on
/// each alert the stage publishes, and one every `config.alert_interval`
/// (scaled) that posts every active alert again.
pub async fn run(
    ingest: Arc<Ingest>,
    audit: Arc<AuditLog>,
    config: DeliverConfig,
    mut events: broadcast::Receiver<AlertEvent>,
) {
    let every = config
        .alert_interval
        .mul_f64(config.time_scale)
        .max(Duration::from_millis(100));
    let url: Option<::http::Uri> = match &config.alertmanager {
        None => None,
        Some(base) => match format!("{}/api/v2/alerts", base.trim_end_matches('/')).parse() {
            Ok(u) => Some(u),
            Err(error) => {
                tracing::error!(%error, "the Alertmanager URL does not parse; egress alerts go to webhooks only");
                None
            }
        },
    };
    let target = config.alertmanager.as_deref().map(target_of);
    let mut sent = Sent::default();
    let mut next_resend = tokio::time::Instant::now();
    loop {
        let resend = tokio::time::Instant::now() >= next_resend;
        if resend {
            next_resend = tokio::time::Instant::now() + every;
        }
        let Some(stage) = ingest.egress().cloned() else {
            return;
        };
        let pass = {
            let (ingest, link) = (ingest.clone(), config.link_base.clone());
            let (firing, resolved, enqueued) = (
                sent.firing.clone(),
                sent.resolved.clone(),
                sent.enqueued.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let sent = Sent {
                    firing,
                    resolved,
                    enqueued,
                };
                let now = patchgap_proto::time::now_ms();
                prepare(
                    ingest.store().as_ref(),
                    &stage.config(),
                    &sent,
                    resend,
                    link.as_deref(),
                    now,
                )
            })
            .await
        };
        match pass {
            Ok(Ok((post, enqueued))) => {
                sent.enqueued.extend(enqueued);
                if let (Some(url), Some(target)) = (&url, &target) {
                    post_all(&audit, url, target, &config, post, &mut sent).await;
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error.chain(), "cannot read the egress alerts to deliver")
            }
            Err(error) => tracing::warn!(%error, "the egress delivery pass failed"),
        }
        // Forget what fell out of the window, so memory stays bounded.
        if sent.firing.len() > 4 * LOOKED_AT {
            sent.firing.clear();
        }
        if sent.resolved.len() > 4 * LOOKED_AT {
            sent.resolved.clear();
        }
        if sent.enqueued.len() > 8 * LOOKED_AT {
            sent.enqueued.clear();
        }
        tokio::select! {
            got = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = got {
                    tokio::time::sleep_until(next_resend).await;
                }
                // Lagged: the store holds every alert; this pass reads it.
                // A burst is one pass, not one per alert: what else came
                // meanwhile is in the store too.
                while !matches!(
                    events.try_recv(),
                    Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
                ) {}
            }
            _ = tokio::time::sleep_until(next_resend) => {}
        }
    }
}

/// Posts `post` to Alertmanager in chunks, audits each POST, and
/// remembers what was taken.
async fn post_all(
    audit: &Arc<AuditLog>,
    url: &::http::Uri,
    target: &str,
    config: &DeliverConfig,
    post: Vec<Stored>,
    sent: &mut Sent,
) {
    for chunk in post.chunks(PER_POST) {
        let alerts: Vec<alertmanager::Alert> = chunk
            .iter()
            .map(|s| am_alert(&s.alert, s.resolved_ms, config.link_base.as_deref()))
            .collect();
        let body = serde_json::to_vec(&alerts).expect("alerts serialize");
        let answer = http::post(url, &[], Bytes::from(body), None, config.timeouts).await;
        let ok = matches!(answer, Answer::Status { status, .. } if (200..300).contains(&status));
        let now = patchgap_proto::time::now_ms();
        if ok {
            for s in chunk {
                match s.resolved_ms {
                    None => {
                        sent.firing.insert(s.alert.id, now);
                    }
                    Some(_) => {
                        sent.firing.remove(&s.alert.id);
                        sent.resolved.insert(s.alert.id);
                    }
                }
            }
        }
        let result = match &answer {
            Answer::Status { status, .. } => format!("HTTP {status}"),
            Answer::NoAnswer(why) => format!("no answer: {why}"),
        };
        if !ok {
            tracing::warn!(%result, alerts = chunk.len(), "Alertmanager did not take the egress alerts");
        }
        let firing = chunk.iter().filter(|s| s.resolved_ms.is_none()).count();
        let ids: Vec<String> = chunk
            .iter()
            .take(20)
            .map(|s| s.alert.id.to_string())
            .collect();
        let args = format!(
            "egress alerts={} firing={firing} resolved={} ids={}{}",
            chunk.len(),
            chunk.len() - firing,
            ids.join(","),
            if chunk.len() > ids.len() { ",…" } else { "" }
        );
        let (audit, target) = (audit.clone(), target.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(error) = audit.record(audit::Event {
                subject: COLLECTOR.into(),
                scopes: String::new(),
                peer: target,
                method: "alertmanager.post".into(),
                args,
                result,
            }) {
                tracing::warn!(%error, "cannot audit an Alertmanager post");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::{
        alert::{BaselineRef, Destination as Dest, LineageStep, Privilege, Scope, WorkloadRef},
        baseline::PackageChange,
        policy::EgressPolicy,
    };

    fn alert(id: i64, mode: &str, names: &[&str]) -> Alert {
        Alert {
            id,
            dedup_key: format!("k|{id}"),
            reason: Reason::NewSinceUpgrade,
            mode: mode.into(),
            host: "alpha".into(),
            workload: WorkloadRef {
                key: "k8s:/ml/Deployment/trainer/trainer".into(),
                kind: "pod".into(),
                owner_kind: "Deployment".into(),
                owner: "trainer".into(),
                namespace: "ml".into(),
                container: "trainer".into(),
                image_digest: String::new(),
            },
            scope: Scope {
                classification: "sensitive".into(),
                writes_to: vec!["s3://ml-data".into()],
            },
            privilege: Privilege::default(),
            destination: Dest {
                ip: "203.0.113.66".into(),
                port: 443,
                protocol: "tcp".into(),
                names: names.iter().map(|n| n.to_string()).collect(),
                names_source: if names.is_empty() { "none" } else { "dns" }.into(),
            },
            lineage: vec![
                LineageStep {
                    pid: 4242,
                    start_time_ms: 1_000,
                    exe: "/venv/bin/python3".into(),
                    argv: "python3 train.py".into(),
                },
                LineageStep {
                    pid: 4200,
                    start_time_ms: 900,
                    exe: "/bin/sh".into(),
                    argv: "sh -c run".into(),
                },
            ],
            packages: vec!["pkg:pypi/trainlib@2.0.0".into()],
            packages_changed: vec![PackageChange {
                name: "pypi/trainlib".into(),
                from: "1.0.0".into(),
                to: "2.0.0".into(),
                at_ms: 5_000,
                evidence: "installed".into(),
            }],
            baseline: BaselineRef {
                state: "stable".into(),
                generation: "g2".into(),
            },
            first_seen_ms: 6_000,
            last_seen_ms: 7_000,
            count: 3,
            replicas: vec!["alpha/a".into(), "alpha/b".into()],
            delivery: String::new(),
        }
    }

    /// The labels are the alert's identity in fixed words, never a pid,
    /// host, replica, count or version; the story is in the annotations.
    #[test]
    fn labels_are_low_cardinality_and_the_story_is_annotated() {
        let a = alert(7, "policy+learn", &["telemetry.example.net"]);
        let am = am_alert(&a, None, None);
        let labels: Vec<String> = am.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            labels,
            [
                "alertname=PatchgapUnexpectedEgress",
                "destination=telemetry.example.net",
                "namespace=ml",
                "port=443",
                "protocol=tcp",
                "reason=new_since_upgrade",
                "severity=critical",
                "workload=k8s:/ml/Deployment/trainer/trainer",
            ]
        );
        assert!(am.ends_at.is_none());
        assert_eq!(am.starts_at, "1970-01-01T00:00:06.000Z");
        let n = &am.annotations;
        assert_eq!(
            n["destination"],
            "203.0.113.66:443/tcp (names: telemetry.example.net, from dns)"
        );
        assert_eq!(
            n["packages_changed"],
            "pypi/trainlib 1.0.0 -> 2.0.0 at 1970-01-01T00:00:05.000Z (installed)"
        );
        assert!(n["lineage"].starts_with("pid 4242 started 1970-01-01T00:00:01.000Z /venv/bin/python3 [python3 train.py]\npid 4200"));
        assert_eq!(n["scope"], "sensitive (writes to s3://ml-data)");
        assert_eq!(n["baseline"], "stable, generation g2");
        assert_eq!(n["count"], "3");
        assert_eq!(n["alert_id"], "7");
        assert!(n["summary"].contains("ml/trainer connected to 203.0.113.66:443/tcp"));
        assert!(n["summary"].contains("new since the upgrade of pypi/trainlib 1.0.0 -> 2.0.0"));
        assert!(n["description"].contains("patchgap incident open --alert 7"));
        // Two replicas' sightings are one alert: nothing per replica is a
        // label.
        let mut b = a.clone();
        b.replicas = vec!["beta/c".into()];
        b.lineage[0].pid = 9;
        b.count = 99;
        b.host = "beta".into();
        assert_eq!(am_alert(&b, None, None).labels, am.labels);
        // Resolved: endsAt.
        let r = am_alert(&a, Some(60_000), Some("https://pg.example/"));
        assert_eq!(r.ends_at.as_deref(), Some("1970-01-01T00:01:00.000Z"));
        assert_eq!(r.generator_url, "https://pg.example/alerts/7");
    }

    /// With no name, the address alone is the destination.
    #[test]
    fn no_name_alerts_by_address() {
        let mut a = alert(8, "policy+learn", &[]);
        a.reason = Reason::NewDestination;
        let am = am_alert(&a, None, None);
        assert_eq!(am.labels["destination"], "203.0.113.66/32");
        assert_eq!(am.labels["severity"], "warning");
        assert_eq!(
            am.annotations["destination"],
            "203.0.113.66:443/tcp (no DNS name seen)"
        );
    }

    fn policies(endpoint: Option<&str>) -> EgressPolicies {
        EgressPolicies {
            default: EgressPolicy {
                endpoint: endpoint.map(String::from),
                ..EgressPolicy::default()
            },
            workloads: Vec::new(),
        }
    }

    #[test]
    fn due_posts_new_then_resends_and_resolves_once_never_audit() {
        let open = Stored {
            alert: alert(1, "policy+learn", &[]),
            resolved_ms: None,
        };
        let audit = Stored {
            alert: alert(2, "audit", &[]),
            resolved_ms: None,
        };
        let gone = Stored {
            alert: alert(3, "enforce", &[]),
            resolved_ms: Some(50_000),
        };
        let all = [open.clone(), audit.clone(), gone.clone()];
        let mut sent = Sent::default();
        let d = due(&all, &policies(Some("soc")), &sent, false, 60_000);
        let ids: Vec<i64> = d.post.iter().map(|s| s.alert.id).collect();
        assert_eq!(ids, [1, 3]);
        let events: Vec<(i64, bool, &str)> = d
            .enqueue
            .iter()
            .map(|(s, e)| (s.alert.id, s.resolved_ms.is_some(), e.as_str()))
            .collect();
        assert_eq!(
            events,
            [(1, false, "soc"), (3, false, "soc"), (3, true, "soc")]
        );
        // Posted and enqueued: a kick sends nothing more; a resend pass
        // posts the firing one again, never the resolution.
        sent.firing.insert(1, 60_000);
        sent.resolved.insert(3);
        sent.enqueued.extend([(1, false), (3, false), (3, true)]);
        assert_eq!(
            due(&all, &policies(Some("soc")), &sent, false, 61_000),
            Due::default()
        );
        let again = due(&all, &policies(Some("soc")), &sent, true, 61_000);
        assert_eq!(again.post, vec![open]);
        assert!(again.enqueue.is_empty());
        // No endpoint: nothing enqueued. A resolution older than the
        // window is not sent.
        let late = due(
            &all,
            &policies(None),
            &Sent::default(),
            false,
            50_000 + RESOLVE_WINDOW_MS + 1,
        );
        assert_eq!(
            late.post.iter().map(|s| s.alert.id).collect::<Vec<_>>(),
            [1]
        );
        assert!(late.enqueue.is_empty());
    }

    /// Through a real store: an open alert's opening goes to the outbox
    /// once (incident 0), its resolution once more after it resolves, and
    /// an audit-mode alert never.
    #[test]
    fn webhook_events_go_through_the_outbox_once() {
        use crate::{SqliteStore, egress::stage::EgressConfig, store::EgressAlertUpsert};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let now = 1_800_000_000_000;
        for (key, mode) in [("k|sent", "policy+learn"), ("k|audit", "audit")] {
            let mut a = alert(0, mode, &[]);
            a.dedup_key = key.into();
            let body = serde_json::to_string(&a).unwrap();
            store
                .upsert_egress_alert(&EgressAlertUpsert {
                    dedup_key: key,
                    workload: &a.workload.key,
                    seen_ms: now - 1_000,
                    count: 1,
                    body: &body,
                })
                .unwrap();
        }
        let config = EgressConfig {
            policies: policies(Some("soc")),
            ..EgressConfig::default()
        };
        let mut sent = Sent::default();
        let (post, enqueued) = prepare(&store, &config, &sent, false, None, now).unwrap();
        assert_eq!(post.len(), 1, "audit is not posted");
        assert_eq!(enqueued.len(), 1, "audit is not enqueued");
        let id = post[0].alert.id;
        sent.enqueued.extend(enqueued);
        // A restarted deliverer (nothing remembered) enqueues again: the
        // outbox keeps one row per webhook-id.
        prepare(&store, &config, &Sent::default(), false, None, now).unwrap();
        let rows = store.deliveries(Some(0), 10).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            (
                rows[0].event_type.as_str(),
                rows[0].endpoint.as_str(),
                rows[0].incident
            ),
            (OPENED, "soc", 0)
        );
        assert_eq!(rows[0].webhook_id, webhook_id(id, false));
        // Quiet: resolved, and the resolution goes out too.
        store.resolve_egress_alerts(now, now + 5_000).unwrap();
        let (post, enqueued) = prepare(&store, &config, &sent, false, None, now + 5_000).unwrap();
        assert_eq!(
            post.iter()
                .map(|s| (s.alert.id, s.resolved_ms))
                .collect::<Vec<_>>(),
            [(id, Some(now + 5_000))]
        );
        assert_eq!(enqueued, [(id, true)]);
        let rows = store.deliveries(Some(0), 10).unwrap();
        assert_eq!(rows.len(), 2);
        let body: serde_json::Value = serde_json::from_slice(&rows[0].body).unwrap();
        assert_eq!(body["type"], RESOLVED);
        assert_eq!(body["data"]["alert"]["id"], id);
    }

    #[test]
    fn webhook_ids_and_bodies_are_stable() {
        assert_eq!(webhook_id(5, false), webhook_id(5, false));
        assert_ne!(webhook_id(5, false), webhook_id(5, true));
        assert_ne!(webhook_id(5, false), webhook_id(6, false));
        assert!(webhook_id(5, true).starts_with("msg_") && webhook_id(5, true).len() == 28);
        let a = alert(5, "policy+learn", &["telemetry.example.net"]);
        let body = webhook_body(&a, Some(9_000), None);
        assert_eq!(body, webhook_body(&a, Some(9_000), None));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], RESOLVED);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:09.000Z");
        assert_eq!(v["data"]["alert"]["destination"]["ip"], "203.0.113.66");
        assert_eq!(v["data"]["alert"]["packages_changed"][0]["from"], "1.0.0");
        assert_eq!(v["data"]["severity"], "critical");
        let opened: serde_json::Value =
            serde_json::from_slice(&webhook_body(&a, None, None)).unwrap();
        assert_eq!(opened["type"], OPENED);
        assert_eq!(opened["data"]["resolved_at"], serde_json::Value::Null);
    }
}
