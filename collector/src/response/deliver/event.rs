//! The JSON event a webhook action sends (documented in ARCHITECTURE.md,
//! "Outbound events"). Standard Webhooks' payload shape: `type`,
//! `timestamp` (RFC 3339) and `data`. Built from the incident as its log
//! says; never holds a secret (the endpoint appears by name only).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::response::incident::{Incident, IncidentAction, display_id};

/// The event type of an action a webhook carries out.
pub const ACTION_REQUESTED: &str = "patchgap.action.requested";

/// The webhook-id of action `action` of incident `incident` under plan
/// `plan`: the same on every attempt and after every restart, so the
/// outbox (and the receiver) see one delivery however often it is
/// enqueued or retried.
pub fn webhook_id(incident: i64, action: u32, plan: &str) -> String {
    let digest = Sha256::digest(format!("patchgap/{incident}/{action}/{plan}"));
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
    incident: IncidentView<'a>,
    action: ActionView<'a>,
    plan_hash: &'a str,
    targets: Vec<TargetView<'a>>,
    /// How many targets there are; `targets` holds at most
    /// [`MAX_TARGETS`] of them.
    targets_total: usize,
    link: String,
}

/// Targets an event lists at most, so a body stays small (an incident's
/// scope can hold thousands of instances; the link has them all).
pub const MAX_TARGETS: usize = 1_000;

#[derive(Serialize)]
struct IncidentView<'a> {
    id: String,
    dedup_key: &'a str,
    state: String,
    tier: Option<u32>,
    tier_name: &'a str,
    opened_at: String,
    image_digests: Vec<&'a str>,
}

#[derive(Serialize)]
struct ActionView<'a> {
    id: u32,
    kind: &'static str,
    mode: crate::response::Mode,
    endpoint: &'a str,
    approved_by: &'a str,
    requested_at: String,
}

#[derive(Serialize)]
struct TargetView<'a> {
    host: &'a str,
    workload: &'a str,
    instance: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
}

/// The body for action `a` of incident `id`. `link_base` is the
/// collector's public URL, if one is configured; the link is then
/// `{link_base}/incidents/INC-{id}`, else the CLI command that shows it.
pub fn action_requested(
    id: i64,
    incident: &Incident,
    a: &IncidentAction,
    link_base: Option<&str>,
) -> Vec<u8> {
    // The action's own targets, or (for actions that do not act on
    // workloads, which have none) the incident's exposed instances.
    let mut targets: Vec<TargetView<'_>> = if a.planned.targets.is_empty() {
        incident
            .scope
            .instances
            .iter()
            .map(|i| TargetView {
                host: &i.host,
                workload: &i.workload,
                instance: &i.instance,
                namespace: i.namespace.as_deref(),
                cluster: i.cluster.as_deref(),
            })
            .collect()
    } else {
        a.planned
            .targets
            .iter()
            .map(|t| TargetView {
                host: &t.host,
                workload: &t.workload,
                instance: &t.instance,
                namespace: None,
                cluster: None,
            })
            .collect()
    };
    let targets_total = targets.len();
    targets.truncate(MAX_TARGETS);
    let link = match link_base {
        Some(base) => format!(
            "{}/incidents/{}",
            base.trim_end_matches('/'),
            display_id(id)
        ),
        None => format!("patchgap incident show {}", display_id(id)),
    };
    let body = Body {
        kind: ACTION_REQUESTED,
        timestamp: rfc3339(a.times.requested),
        data: Data {
            incident: IncidentView {
                id: display_id(id),
                dedup_key: &incident.dedup_key,
                state: incident.state.to_string(),
                tier: incident.tier,
                tier_name: &incident.tier_name,
                opened_at: rfc3339(incident.opened_at_ms),
                image_digests: incident
                    .scope
                    .image_digests
                    .iter()
                    .map(String::as_str)
                    .collect(),
            },
            action: ActionView {
                id: a.planned.id,
                kind: a.planned.kind.as_str(),
                mode: a.planned.mode,
                endpoint: a.planned.endpoint.as_deref().unwrap_or_default(),
                approved_by: &a.approved_by,
                requested_at: rfc3339(a.times.requested),
            },
            plan_hash: &a.plan,
            targets,
            targets_total,
            link,
        },
    };
    serde_json::to_vec(&body).expect("events serialize")
}

pub use patchgap_proto::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_556_158_000), "2026-12-06T11:22:38.000Z");
    }

    #[test]
    fn webhook_ids_are_stable_and_distinct() {
        let a = webhook_id(3, 2, "abc");
        assert_eq!(a, webhook_id(3, 2, "abc"));
        assert!(a.starts_with("msg_") && a.len() == 28, "{a}");
        assert_ne!(a, webhook_id(3, 3, "abc"));
        assert_ne!(a, webhook_id(4, 2, "abc"));
        assert_ne!(a, webhook_id(3, 2, "abd"));
    }
}
