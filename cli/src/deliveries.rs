//! `patchgap deliveries` and `patchgap endpoint enable`: the signed
//! webhooks' outbox (what was sent where, how often, what the receiver
//! answered) and calling again an endpoint a receiver's 410 disabled.
//! Nothing here prints a body, a signature or a secret: the collector
//! returns none.

use patchgap_proto::v1;
use serde_json::{Value, json};

use crate::{
    ReadOpts, connect, print,
    render::{clean, rfc3339, table},
    status_error,
};

#[derive(clap::Subcommand)]
pub enum EndpointCommand {
    /// Call an endpoint again that a receiver disabled with 410 (gone):
    /// its pending deliveries are tried at once. Needs the `respond`
    /// scope; audited.
    ///
    /// Example: patchgap endpoint enable tokens
    Enable {
        /// The policy's [[endpoint]] name.
        name: String,
    },
}

fn time_or_null(ms: i64) -> Value {
    if ms > 0 {
        json!(rfc3339(ms))
    } else {
        Value::Null
    }
}

/// One delivery as `-o json` lists it.
pub fn delivery_json(d: &v1::Delivery) -> Value {
    json!({
        "id": d.id,
        "webhook_id": d.webhook_id,
        "endpoint": d.endpoint,
        "endpoint_disabled": d.endpoint_disabled,
        "incident": d.incident,
        "action": d.action,
        "type": d.event_type,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt": time_or_null(d.next_attempt_at_ms),
        "last_status": (d.last_status > 0).then_some(d.last_status),
        "last_error": (!d.last_error.is_empty()).then_some(&d.last_error),
        "created_at": time_or_null(d.created_at_ms),
        "done_at": time_or_null(d.done_at_ms),
    })
}

/// `patchgap deliveries -o json`.
pub fn deliveries_json(r: &v1::ListDeliveriesResponse) -> Value {
    json!({
        "deliveries": r.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
        "disabled_endpoints": r.disabled_endpoints.iter().map(|e| json!({
            "name": e.name,
            "disabled_at": time_or_null(e.disabled_at_ms),
            "reason": e.reason,
        })).collect::<Vec<_>>(),
    })
}

/// The table: one delivery a row, then the disabled endpoints and how to
/// call them again.
pub fn deliveries_table(r: &v1::ListDeliveriesResponse) -> String {
    let mut out = if r.deliveries.is_empty() {
        "(no deliveries)\n".to_string()
    } else {
        let rows: Vec<Vec<String>> = r
            .deliveries
            .iter()
            .map(|d| {
                let endpoint = match d.endpoint_disabled {
                    true => format!("{} (disabled)", d.endpoint),
                    false => d.endpoint.clone(),
                };
                let last = match (d.last_status, d.last_error.as_str()) {
                    (0, "") => "-".to_string(),
                    (0, e) => e.to_string(),
                    (s, "") => s.to_string(),
                    (s, e) => format!("{s} {e}"),
                };
                vec![
                    d.id.to_string(),
                    d.incident.clone(),
                    format!("#{}", d.action),
                    endpoint,
                    d.state.clone(),
                    d.attempts.to_string(),
                    match d.next_attempt_at_ms {
                        0 => "-".into(),
                        ms => rfc3339(ms),
                    },
                    last,
                    d.webhook_id.clone(),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "INCIDENT",
                "ACTION",
                "ENDPOINT",
                "STATE",
                "ATTEMPTS",
                "NEXT",
                "LAST",
                "WEBHOOK-ID",
            ],
            &rows,
            "",
        )
    };
    for e in &r.disabled_endpoints {
        out.push_str(&format!(
            "endpoint {} disabled at {}: {} (`patchgap endpoint enable {}` calls it again)\n",
            clean(&e.name),
            rfc3339(e.disabled_at_ms),
            clean(&e.reason),
            clean(&e.name)
        ));
    }
    out
}

/// `patchgap deliveries [--incident ID] [--limit N]`.
pub async fn deliveries(
    incident: Option<String>,
    limit: u32,
    read: ReadOpts,
) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let r = client
        .list_deliveries(v1::ListDeliveriesRequest {
            incident: incident.unwrap_or_default(),
            limit,
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    print(read.output, deliveries_json(&r), || deliveries_table(&r))
}

/// `patchgap endpoint enable NAME`.
pub async fn endpoint(command: EndpointCommand, read: ReadOpts) -> anyhow::Result<()> {
    let EndpointCommand::Enable { name } = command;
    let mut client = connect(&read).await?;
    let r = client
        .enable_endpoint(v1::EnableEndpointRequest { name: name.clone() })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    print(
        read.output,
        json!({"endpoint": name, "enabled": r.enabled}),
        || match r.enabled {
            true => format!(
                "endpoint {}: enabled; its pending deliveries are tried again\n",
                clean(&name)
            ),
            false => format!(
                "endpoint {}: was not disabled; nothing changed\n",
                clean(&name)
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_delivery() -> v1::Delivery {
        v1::Delivery {
            id: 4,
            webhook_id: "msg_3b2f0c8e1d9a4f7b6c5d2e10".into(),
            endpoint: "tokens".into(),
            incident: "INC-7".into(),
            action: 3,
            event_type: "patchgap.action.requested".into(),
            state: "failed".into(),
            attempts: 1,
            last_status: 410,
            last_error: "endpoint gone\u{1b}[31m".into(),
            created_at_ms: 1_764_900_000_000,
            done_at_ms: 1_764_900_001_000,
            endpoint_disabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn json_and_table_say_where_each_delivery_stands() {
        let r = v1::ListDeliveriesResponse {
            deliveries: vec![a_delivery()],
            disabled_endpoints: vec![v1::DisabledEndpoint {
                name: "tokens".into(),
                disabled_at_ms: 1_764_900_001_000,
                reason: "HTTP 410 Gone".into(),
            }],
        };
        let v = deliveries_json(&r);
        let d = &v["deliveries"][0];
        assert_eq!(d["state"], "failed");
        assert_eq!(d["last_status"], 410);
        assert_eq!(d["next_attempt"], Value::Null);
        assert_eq!(d["done_at"], "2025-12-05T02:00:01.000Z");
        assert_eq!(v["disabled_endpoints"][0]["name"], "tokens");
        let t = deliveries_table(&r);
        assert!(t.contains("tokens (disabled)"), "{t}");
        assert!(t.contains("patchgap endpoint enable tokens"), "{t}");
        assert!(!t.contains('\u{1b}'), "control characters are escaped: {t}");
        assert_eq!(
            deliveries_table(&v1::ListDeliveriesResponse::default()),
            "(no deliveries)\n"
        );
    }
}
