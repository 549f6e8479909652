//! Outbound actions: signed webhooks (Standard Webhooks) for the actions a
//! policy routes to an `[[endpoint]]`, and alerts to Prometheus
//! Alertmanager for incidents that page (`alertmanager`). A sink per file,
//! vector-style: `sign` (the signature), `schedule` (retries and what an
//! answer means), `http` (the one bounded POST), `event` (the JSON body),
//! `alertmanager`.
//!
//! The loop of [`run`]: (1) every requested webhook action of an open
//! incident is enqueued in the store's outbox under a webhook-id derived
//! from (incident, action, plan), so enqueueing again (each pass, after a
//! restart) is a no-op; (2) due deliveries are leased in one short
//! transaction; (3) each is signed anew (a fresh timestamp) and POSTed,
//! outside any transaction; (4) the outcome is recorded in the outbox, the
//! audit log (subject, target, outcome) and, when it settles the action,
//! the incident's log (`acknowledged`, or `failed`). A collector killed
//! between (2) and (4) leaves a lease that runs out, and the delivery is
//! made again: at least once, and receivers dedupe by webhook-id as the
//! specification asks.
//!
//! **Invariant:** executors never run inside a store transaction, and
//! secrets never leave this module: a secret is read (file or environment
//! variable the policy names) only to sign, is never logged, audited,
//! stored or returned, and its `Debug` is redacted. The audit log and the
//! outbox name an endpoint and its scheme://host:port only (a URL's path
//! can carry a token).

pub mod alertmanager;
pub mod egress;
pub mod event;
pub mod http;
pub mod schedule;
pub mod sign;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use crate::{
    audit::{self, AuditLog},
    fleet::ingest::Ingest,
    response::{
        Mode, SharedPolicy,
        incident::{
            ActionState, Event, Incident, IncidentError, Observation, display_id,
            log::{self, COLLECTOR, LogError},
        },
        policy::endpoint::{Endpoint, SecretRef, check_url},
    },
    store::{DeliveryOutcome, DeliveryRecord, DeliveryState, NewDelivery, Store, StoreError},
};

use schedule::{Answer, Verdict};
use sign::Secret;

/// How the deliverer behaves.
#[derive(Debug, Clone)]
pub struct DeliverConfig {
    /// Multiplies every wait: the retry schedule, `retry-after` and the
    /// Alertmanager re-send interval. 1 in production; tests compress the
    /// specification's 27-hour schedule into seconds.
    pub time_scale: f64,
    pub timeouts: http::Timeouts,
    /// How often the outbox is looked at.
    pub poll: Duration,
    /// The collector's public URL for the link back in events (None: the
    /// CLI command that shows the incident).
    pub link_base: Option<String>,
    /// Alertmanager's base URL (`--alertmanager`), if any.
    pub alertmanager: Option<String>,
    /// How often an active incident's alert is sent again (scaled).
    pub alert_interval: Duration,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        DeliverConfig {
            time_scale: 1.0,
            timeouts: http::Timeouts::default(),
            poll: Duration::from_secs(1),
            link_base: None,
            alertmanager: None,
            alert_interval: Duration::from_secs(60),
        }
    }
}

/// Deliveries leased at a time.
const CLAIM_BATCH: usize = 16;

/// Incidents looked at for requested webhook actions per pass.
const ENQUEUE_MAX: usize = log::REFRESH_MAX;

/// Enqueues every requested webhook action of the open incidents (the
/// newest [`ENQUEUE_MAX`]) not enqueued yet. Returns how many were new.
pub fn enqueue_requested(
    store: &dyn Store,
    link_base: Option<&str>,
    now_ms: i64,
) -> Result<usize, LogError> {
    enqueue_changed(store, link_base, now_ms, &mut Scanned::default())
}

/// The last event of each incident [`enqueue_changed`] looked at: an
/// incident whose log has not grown since has nothing new to enqueue
/// (enqueueing is a function of the log), so a pass every second decodes
/// only the incidents that changed.
#[derive(Debug, Default)]
pub struct Scanned(std::collections::HashMap<i64, i64>);

fn enqueue_changed(
    store: &dyn Store,
    link_base: Option<&str>,
    now_ms: i64,
    scanned: &mut Scanned,
) -> Result<usize, LogError> {
    let mut new = 0;
    let open = store.incidents(None, true, ENQUEUE_MAX)?;
    scanned.0.retain(|id, _| open.iter().any(|r| r.id == *id));
    for rec in open {
        if scanned.0.get(&rec.id) == Some(&rec.last_seq) {
            continue;
        }
        let incident = log::load(store, &rec)?;
        for a in &incident.actions {
            if a.state != ActionState::Requested
                || !a.planned.via_endpoint()
                || a.planned.mode == Mode::Observe
            {
                continue;
            }
            let endpoint = a.planned.endpoint.clone().unwrap_or_default();
            let d = NewDelivery {
                webhook_id: event::webhook_id(rec.id, a.planned.id, &a.plan),
                endpoint,
                incident: rec.id,
                action: a.planned.id,
                event_type: event::ACTION_REQUESTED.into(),
                body: event::action_requested(rec.id, &incident, a, link_base),
                created_ms: now_ms,
            };
            if store.enqueue_delivery(&d)? {
                new += 1;
            }
        }
        scanned.0.insert(rec.id, rec.last_seq);
    }
    Ok(new)
}

/// Why a confirmation is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("{incident} has no delivery {webhook_id}")]
    NoDelivery {
        incident: String,
        webhook_id: String,
    },
    #[error("delivery {webhook_id} is {state}: only an acknowledged delivery is confirmed")]
    NotDelivered {
        webhook_id: String,
        state: &'static str,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Records that the receiver of delivery `webhook_id` (of incident
/// `incident`) confirmed it carried the action out: the action becomes
/// `verified`, its reason "confirmed by {by}". For the collector's HTTP
/// callback route, which authenticates the receiver first. A second
/// confirmation changes nothing.
pub fn confirm(
    ingest: &Ingest,
    incident: i64,
    webhook_id: &str,
    by: &str,
    note: &str,
    now_ms: i64,
) -> Result<Incident, ConfirmError> {
    let store = ingest.store().as_ref();
    let d = store
        .deliveries(Some(incident), usize::MAX)
        .map_err(LogError::from)?
        .into_iter()
        .find(|d| d.webhook_id == webhook_id)
        .ok_or_else(|| ConfirmError::NoDelivery {
            incident: display_id(incident),
            webhook_id: webhook_id.to_string(),
        })?;
    if d.state != DeliveryState::Delivered {
        return Err(ConfirmError::NotDelivered {
            webhook_id: webhook_id.to_string(),
            state: d.state.name(),
        });
    }
    let note: String = note.chars().take(500).collect();
    Ok(log::append(ingest, incident, by, now_ms, |cur| {
        let done = cur
            .actions
            .iter()
            .any(|a| a.planned.id == d.action && a.state == ActionState::Verified);
        Ok(match done {
            true => Vec::new(),
            false => vec![Event::Observed {
                action: d.action,
                observation: Observation::Confirmed {
                    at_ms: now_ms,
                    by: by.to_string(),
                    note: note.clone(),
                },
            }],
        })
    })?)
}

/// Reads an endpoint's secret (the only place one is read).
pub fn load_secret(secret: &SecretRef) -> Result<Secret, String> {
    let text = match secret {
        SecretRef::File(path) => {
            // Bounded: a secret is a line.
            let bytes = std::fs::read(path)
                .map_err(|e| format!("reading the secret file {}: {e}", path.display()))?;
            if bytes.len() > 4096 {
                return Err(format!("the secret file {} is too large", path.display()));
            }
            String::from_utf8(bytes)
                .map_err(|_| format!("the secret file {} is not text", path.display()))?
        }
        SecretRef::Env(name) => std::env::var(name)
            .map_err(|_| format!("the environment variable {name} holds no secret"))?,
    };
    Secret::parse(text.lines().next().unwrap_or_default()).map_err(|e| e.to_string())
}

/// scheme://host[:port] of a URL: what the audit log and the logs name
/// (a path can carry a token).
pub fn target_of(url: &str) -> String {
    match url.parse::<::http::Uri>() {
        Ok(u) => format!(
            "{}://{}",
            u.scheme_str().unwrap_or("?"),
            u.authority().map_or("?", |a| a.as_str())
        ),
        Err(_) => "(not a URL)".into(),
    }
}

/// A uniformly random u32 for the jitter.
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

/// What one attempt did, for the records.
struct Attempt {
    answer: Answer,
    target: String,
    confirms: bool,
}

/// Makes one attempt of a leased delivery: finds its endpoint in the
/// policy now in force, signs with a fresh timestamp, POSTs.
async fn attempt(d: &DeliveryRecord, endpoints: &[Endpoint], config: &DeliverConfig) -> Attempt {
    let Some(ep) = endpoints.iter().find(|e| e.name == d.endpoint) else {
        return Attempt {
            answer: Answer::NoAnswer(format!(
                "endpoint {:?} is not in the policy in force",
                d.endpoint
            )),
            target: String::new(),
            confirms: false,
        };
    };
    let target = target_of(&ep.url);
    let confirms = ep.confirms;
    let fail = |why: String| Attempt {
        answer: Answer::NoAnswer(why),
        target: target.clone(),
        confirms,
    };
    let url = match check_url(&ep.url) {
        Ok(u) => u,
        Err(why) => return fail(why),
    };
    let secret = {
        let s = ep.secret.clone();
        match tokio::task::spawn_blocking(move || load_secret(&s)).await {
            Ok(Ok(s)) => s,
            Ok(Err(why)) => return fail(format!("cannot sign: {why}")),
            Err(e) => return fail(format!("cannot sign: {e}")),
        }
    };
    let timestamp = patchgap_proto::time::now_ms().div_euclid(1000);
    let signature = sign::sign(&secret, &d.webhook_id, timestamp, &d.body);
    drop(secret);
    let headers = [
        ("webhook-id", d.webhook_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let answer = http::post(
        &url,
        &headers,
        Bytes::from(d.body.clone()),
        ep.ca_file.as_deref(),
        config.timeouts,
    )
    .await;
    Attempt {
        answer,
        target,
        confirms,
    }
}

/// Records an attempt: the outbox row, the audit entry and, when the
/// delivery settled, the incident's log. Blocking.
fn record(
    ingest: &Ingest,
    audit: &AuditLog,
    d: &DeliveryRecord,
    a: &Attempt,
    config: &DeliverConfig,
    now_ms: i64,
) -> Result<(), StoreError> {
    let status = match &a.answer {
        Answer::Status { status, .. } => *status,
        Answer::NoAnswer(_) => 0,
    };
    let what = match &a.answer {
        Answer::Status { status, .. } => format!("HTTP {status}"),
        Answer::NoAnswer(why) => why.clone(),
    };
    let verdict = schedule::verdict(d.attempts, &a.answer, config.time_scale, random_u32());
    let (outcome, result, settled) = match verdict {
        Verdict::Delivered => (
            DeliveryOutcome::Delivered { status },
            format!("delivered ({what})"),
            Some(Observation::Acknowledged {
                at_ms: now_ms,
                endpoint: d.endpoint.clone(),
                webhook_id: d.webhook_id.clone(),
                status,
                awaits_confirmation: a.confirms,
            }),
        ),
        Verdict::RetryAfter(wait) => (
            DeliveryOutcome::Retry {
                next_at_ms: now_ms.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64),
                status,
                error: what.clone(),
            },
            format!("retry in {:.3} s ({what})", wait.as_secs_f64()),
            None,
        ),
        Verdict::GiveUp(why) => {
            let reason = format!("delivery to {} failed: {why}; last: {what}", d.endpoint);
            (
                DeliveryOutcome::Failed {
                    status,
                    error: format!("{why}; last: {what}"),
                },
                format!("failed: {why} ({what})"),
                Some(Observation::Failed {
                    at_ms: now_ms,
                    reason,
                }),
            )
        }
        Verdict::Gone => {
            let reason = format!(
                "endpoint {} answered 410 Gone: it is disabled, and nothing more is sent to it",
                d.endpoint
            );
            (
                DeliveryOutcome::EndpointGone {
                    status,
                    error: "HTTP 410 Gone: endpoint disabled".into(),
                },
                "endpoint disabled (HTTP 410)".into(),
                Some(Observation::Failed {
                    at_ms: now_ms,
                    reason,
                }),
            )
        }
    };
    ingest.store().finish_delivery(d.id, now_ms, &outcome)?;
    if let Err(error) = audit.record(audit::Event {
        subject: COLLECTOR.into(),
        scopes: String::new(),
        peer: a.target.clone(),
        method: "webhook.deliver".into(),
        args: match d.incident {
            0 => format!(
                "endpoint={} webhook-id={} event={} attempt={}",
                d.endpoint, d.webhook_id, d.event_type, d.attempts
            ),
            _ => format!(
                "endpoint={} webhook-id={} incident={} action={} attempt={}",
                d.endpoint,
                d.webhook_id,
                display_id(d.incident),
                d.action,
                d.attempts
            ),
        },
        result,
    }) {
        tracing::warn!(%error, webhook_id = %d.webhook_id, "cannot audit a delivery");
    }
    // An egress alert's event (incident 0) has no incident log to tell.
    if let Some(observation) = settled.filter(|_| d.incident != 0) {
        let wrote = log::append(ingest, d.incident, COLLECTOR, now_ms, |cur| {
            let open = cur.actions.iter().any(|x| {
                x.planned.id == d.action
                    && matches!(x.state, ActionState::Requested | ActionState::Failed)
            });
            Ok::<_, IncidentError>(match open {
                true => vec![Event::Observed {
                    action: d.action,
                    observation: observation.clone(),
                }],
                false => Vec::new(),
            })
        });
        if let Err(error) = wrote {
            tracing::warn!(%error, incident = %display_id(d.incident), action = d.action, "cannot record a delivery in the incident");
        }
    }
    Ok(())
}

/// Why delivery `d` should not be sent any more (None: send it): its
/// action was reverted, or its incident ended.
fn still_wanted(store: &dyn Store, d: &DeliveryRecord) -> Result<Option<String>, LogError> {
    if d.incident == 0 {
        // An egress alert's event (`egress`): always wanted, its
        // resolution included.
        return Ok(None);
    }
    let Some(rec) = store.incident(d.incident)? else {
        return Ok(Some(format!("{} does not exist", display_id(d.incident))));
    };
    let incident = log::load(store, &rec)?;
    if !incident.state.is_open() {
        return Ok(Some(format!(
            "{} is {}: not sent",
            display_id(d.incident),
            incident.state
        )));
    }
    Ok(incident
        .actions
        .iter()
        .find(|a| a.planned.id == d.action)
        .filter(|a| a.state == ActionState::Reverted)
        .map(|_| format!("action {} was reverted before it was delivered", d.action)))
}

/// One pass: enqueue, lease, deliver, record. Returns the deliveries
/// attempted.
pub async fn pass(
    ingest: &Arc<Ingest>,
    policy: &SharedPolicy,
    audit: &Arc<AuditLog>,
    config: &DeliverConfig,
    scanned: &Arc<std::sync::Mutex<Scanned>>,
) -> Result<usize, LogError> {
    let lease_ms = (config.timeouts.total + Duration::from_secs(30)).as_millis() as i64;
    let claimed = {
        let (ingest, link, scanned) = (ingest.clone(), config.link_base.clone(), scanned.clone());
        tokio::task::spawn_blocking(move || {
            let store = ingest.store().as_ref();
            let now = patchgap_proto::time::now_ms();
            let mut scanned = scanned.lock().unwrap_or_else(|e| e.into_inner());
            let new = enqueue_changed(store, link.as_deref(), now, &mut scanned)?;
            if new > 0 {
                tracing::info!(new, "webhook actions enqueued");
            }
            let mut due = store.claim_deliveries(now, lease_ms, CLAIM_BATCH)?;
            // An action reverted (or its incident ended) before its
            // webhook went out is not sent any more.
            due.retain(|d| match still_wanted(store, d) {
                Ok(None) => true,
                Ok(Some(why)) => {
                    let gave_up = DeliveryOutcome::Failed {
                        status: 0,
                        error: why,
                    };
                    if let Err(error) = store.finish_delivery(d.id, now, &gave_up) {
                        tracing::warn!(%error, webhook_id = %d.webhook_id, "cannot drop a delivery");
                    }
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, webhook_id = %d.webhook_id, "cannot read the delivery's incident");
                    true
                }
            });
            Ok::<_, LogError>(due)
        })
        .await
        .map_err(|e| LogError::Store(StoreError::backend(e)))??
    };
    let n = claimed.len();
    let endpoints = Arc::new(policy.state().current.endpoints.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for d in claimed {
        let (ingest, audit, config, endpoints) = (
            ingest.clone(),
            audit.clone(),
            config.clone(),
            endpoints.clone(),
        );
        tasks.spawn(async move {
            let a = attempt(&d, &endpoints, &config).await;
            let _ = tokio::task::spawn_blocking(move || {
                let now = patchgap_proto::time::now_ms();
                if let Err(error) = record(&ingest, &audit, &d, &a, &config, now) {
                    tracing::warn!(%error, webhook_id = %d.webhook_id, "cannot record a delivery's outcome");
                }
            })
            .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(n)
}

/// Delivers until the task is dropped: a pass every `config.poll`.
pub async fn run(
    ingest: Arc<Ingest>,
    policy: SharedPolicy,
    audit: Arc<AuditLog>,
    config: DeliverConfig,
) {
    let poll = config.poll.max(Duration::from_millis(10));
    let scanned = Arc::default();
    loop {
        if let Err(error) = pass(&ingest, &policy, &audit, &config, &scanned).await {
            tracing::warn!(%error, "webhook delivery pass failed");
        }
        tokio::time::sleep(poll).await;
    }
}
