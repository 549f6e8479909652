//! `GET /metrics`: the response report (time to scope, to containment by
//! tier, convergence, closed with evidence, false-positive containment,
//! reopens) and the collector's operational gauges, in Prometheus' text
//! exposition format (`response::verify::metrics::render`, checked by
//! `promtool check metrics` in its tests), then the deploy gate's
//! admissions per action and outcome (`response::gate::tally`).

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tracing::warn;

use super::Http;
use crate::response::verify::{metrics, pass};

/// The exposition format's content type (text, version 0.0.4).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn scrape(State(http): State<Http>) -> Response {
    let agents = http.connected.lock().map(|s| s.live.len()).unwrap_or(0) as u64;
    let (ingest, ledger, fresh_after, dir) = (
        http.ingest.clone(),
        http.ledger.clone(),
        http.fresh_after,
        http.data_dir.clone(),
    );
    // The deploy gate's admissions per action and outcome (in memory).
    let gate = http.gate.tally.render();
    let now_ms = patchgap_proto::time::now_ms();
    let rendered = tokio::task::spawn_blocking(move || {
        let store = ingest.store();
        let report = ledger.report(store.as_ref(), 0)?;
        let mut ops = pass::operational(store.as_ref(), fresh_after, now_ms)?;
        ops.agents_connected = agents;
        ops.ingest_lag = ingest.lag();
        ops.store_bytes = store_bytes(&dir);
        let mut text = metrics::render(&report, &ops);
        text.push_str(&gate);
        Ok::<_, crate::response::incident::log::LogError>(text)
    })
    .await;
    match rendered {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(error)) => {
            warn!(%error, "/metrics: reading the store");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store could not be read\n",
            )
                .into_response()
        }
        Err(error) => {
            warn!(%error, "/metrics: the report task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// The store's files on disk (the database, its WAL and shared memory):
/// what the data directory's regular files add up to, not following links.
fn store_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
