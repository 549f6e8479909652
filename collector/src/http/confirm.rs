//! `POST /v1/webhooks/confirm`: a webhook receiver confirms it carried an
//! action out (an endpoint with `confirms = true` counts its actions done
//! only then). The callback is itself a Standard Webhooks message, signed
//! with the endpoint's own secret: `webhook-id`, `webhook-timestamp`,
//! `webhook-signature` headers over a JSON body
//!
//! ```json
//! {"type": "patchgap.action.confirmed",
//!  "data": {"webhook_id": "msg_…", "incident": "INC-7",
//!           "by": "token-rotator", "note": "rotated 3 tokens"}}
//! ```
//!
//! where `webhook_id` names the delivery being confirmed. Nothing else
//! authenticates it: whoever holds the endpoint's secret is the receiver.
//! Every call, refused or not, is audited.

use axum::{
    Extension,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use tracing::warn;

use super::{Http, Peer};
use crate::audit;
use crate::response::deliver::{self, ConfirmError, sign};
use crate::response::incident::{display_id, parse_id};

#[derive(Deserialize)]
struct Callback {
    #[serde(rename = "type")]
    kind: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    webhook_id: String,
    incident: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
}

/// The type a confirmation carries.
pub const CONFIRMED: &str = "patchgap.action.confirmed";

pub async fn confirm(
    State(http): State<Http>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer
        .map(|Extension(Peer(p))| p.to_string())
        .unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(id), Some(ts), Some(sig)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return answer(
            &http,
            &peer,
            "-",
            StatusCode::BAD_REQUEST,
            "a Standard Webhooks message needs webhook-id, webhook-timestamp and webhook-signature",
        )
        .await;
    };
    let cb: Callback = match serde_json::from_slice(&body) {
        Ok(cb) => cb,
        Err(e) => {
            return answer(
                &http,
                &peer,
                &id,
                StatusCode::BAD_REQUEST,
                &format!("the body: {e}"),
            )
            .await;
        }
    };
    if cb.kind != CONFIRMED {
        return answer(
            &http,
            &peer,
            &id,
            StatusCode::BAD_REQUEST,
            &format!("type {:?}: only {CONFIRMED:?} is taken here", cb.kind),
        )
        .await;
    }
    let Some(incident) = parse_id(&cb.data.incident) else {
        return answer(
            &http,
            &peer,
            &id,
            StatusCode::BAD_REQUEST,
            "data.incident is not an incident id (INC-7)",
        )
        .await;
    };
    let (ingest, policy, msg_id) = (http.ingest.clone(), http.policy.clone(), id.clone());
    let now_ms = patchgap_proto::time::now_ms();
    let done = tokio::task::spawn_blocking(move || -> Result<String, (StatusCode, String)> {
        // The delivery names its endpoint; the endpoint's secret in the
        // policy in force is the only key a confirmation is checked with.
        let d = ingest
            .store()
            .deliveries(Some(incident), 10_000)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("the store: {e}")))?
            .into_iter()
            .find(|d| d.webhook_id == cb.data.webhook_id)
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!(
                        "no delivery {} of {}",
                        cb.data.webhook_id,
                        display_id(incident)
                    ),
                )
            })?;
        let state = policy.state();
        let ep = state
            .current
            .endpoints
            .iter()
            .find(|e| e.name == d.endpoint)
            .ok_or_else(|| {
                (
                    StatusCode::CONFLICT,
                    format!("endpoint {:?} is not in the policy in force", d.endpoint),
                )
            })?;
        let secret = deliver::load_secret(&ep.secret).map_err(|why| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot verify: {why}"),
            )
        })?;
        sign::verify(&secret, &msg_id, &ts, &sig, &body, now_ms / 1000)
            .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
        let by = match cb.data.by.trim() {
            "" => format!("endpoint {}", d.endpoint),
            who => format!(
                "endpoint {} ({})",
                d.endpoint,
                who.chars().take(64).collect::<String>()
            ),
        };
        let inc = deliver::confirm(&ingest, incident, &d.webhook_id, &by, &cb.data.note, now_ms)
            .map_err(|e| match e {
                ConfirmError::NotDelivered { .. } => (StatusCode::CONFLICT, e.to_string()),
                ConfirmError::NoDelivery { .. } => (StatusCode::NOT_FOUND, e.to_string()),
                ConfirmError::Log(_) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            })?;
        let action = inc
            .actions
            .iter()
            .find(|a| a.planned.id == d.action)
            .map(|a| a.state.name())
            .unwrap_or("unknown");
        Ok(format!(
            "{{\"incident\":\"{}\",\"action\":{},\"state\":\"{action}\"}}\n",
            display_id(incident),
            d.action
        ))
    })
    .await;
    match done {
        Ok(Ok(json)) => {
            audit_call(&http, &peer, &id, "ok").await;
            (
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                json,
            )
                .into_response()
        }
        Ok(Err((status, why))) => answer(&http, &peer, &id, status, &why).await,
        Err(e) => {
            answer(
                &http,
                &peer,
                &id,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("{e}"),
            )
            .await
        }
    }
}

/// A refusal: audited, logged, and said to the caller.
async fn answer(http: &Http, peer: &str, id: &str, status: StatusCode, why: &str) -> Response {
    warn!(peer, webhook_id = id, %status, why, "webhook confirmation refused");
    audit_call(
        http,
        peer,
        id,
        &format!("refused {}: {why}", status.as_u16()),
    )
    .await;
    (status, format!("{why}\n")).into_response()
}

/// One audit entry, written on a blocking thread (a store write).
async fn audit_call(http: &Http, peer: &str, id: &str, result: &str) {
    let entry = audit::Event {
        subject: "webhook-receiver".into(),
        scopes: String::new(),
        peer: peer.to_string(),
        method: "webhook.confirm".into(),
        args: format!("webhook-id={}", id.chars().take(128).collect::<String>()),
        result: result.chars().take(300).collect(),
    };
    let audit = http.audit.clone();
    match tokio::task::spawn_blocking(move || audit.record(entry)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => warn!(%error, "cannot audit a webhook confirmation"),
        Err(error) => warn!(%error, "cannot audit a webhook confirmation"),
    }
}
