//! `POST /v1/admission`: the Kubernetes validating admission webhook. It
//! decodes the AdmissionReview, asks the deploy gate (`response::gate`)
//! on a blocking thread, records a break-glass admission (not on a dry
//! run), and answers with the same uid.

use axum::{
    Extension,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tracing::warn;

use super::{Http, Peer};
use crate::response::gate::{
    self,
    facts::{self, Requester},
    review,
};

pub async fn review(
    State(http): State<Http>,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> Response {
    let review = match review::parse(&body) {
        Ok(r) => r,
        // kube-apiserver never sends this; whoever did gets a plain 400
        // naming what is wrong.
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let peer = peer
        .map(|Extension(Peer(a))| a.to_string())
        .unwrap_or_default();
    let answer = tokio::task::spawn_blocking(move || judge(&http, &review, &peer)).await;
    match answer {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Err(error)) => {
            warn!(%error, "the deploy gate cannot decide");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the deploy gate cannot read the store\n",
            )
                .into_response()
        }
        Err(error) => {
            warn!(%error, "the deploy gate task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The answer's bytes. Errors are the store's; a review the gate does not
/// judge is allowed.
fn judge(
    http: &Http,
    r: &review::Review,
    peer: &str,
) -> Result<Vec<u8>, crate::response::incident::log::LogError> {
    let req = match &r.request {
        Ok(req) => req,
        Err(_) => {
            return Ok(review::respond(
                &r.uid,
                &gate::Verdict {
                    allowed: true,
                    ..gate::Verdict::default()
                },
            ));
        }
    };
    let policy = http.policy.state();
    let digests: Vec<&str> = req
        .images
        .iter()
        .filter_map(|i| i.digest.as_deref())
        .collect();
    let facts = http
        .gate
        .load(http.ingest.store().as_ref(), &policy.current, &digests)?;
    let verdict = gate::decide(req, &facts, &policy.current.gate);
    // A dry run asks; only admissions count.
    if !r.dry_run {
        http.gate.tally.record(&verdict);
    }
    if !r.dry_run && verdict.break_glass.is_some() {
        let who = Requester {
            user: r.user.clone(),
            peer: peer.to_string(),
            uid: r.uid.clone(),
        };
        facts::record_break_glass(
            &http.ingest,
            &http.audit,
            &who,
            &req.object,
            &verdict,
            patchgap_proto::time::now_ms(),
        )?;
    }
    Ok(review::respond(&r.uid, &verdict))
}
