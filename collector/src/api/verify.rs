//! CloseIncident (forced), GetIncidentEvidence and RetireHost, and the
//! verification as `patchgap.v1` messages. The domain lives in
//! `response::verify`; this maps it to the wire.

use patchgap_proto::{time::now_ms, v1};
use tonic::Status;

use super::{incidents::status, invalid, query::QueryService};
use crate::response::{
    incident::{Incident, display_id, log, parse_id},
    verify::{
        self,
        evidence::{self, PolicyRef, Signer},
    },
};

/// Hosts are named as agents report them: bounded, printable.
const MAX_HOST_NAME: usize = 255;
/// A forced close's reason, at most.
const MAX_REASON: usize = 4_096;

/// Where the incident's verification stands (None before the first run
/// and without a forced close).
pub(super) fn verification(i: &Incident) -> Option<v1::Verification> {
    if i.verification.is_none() && i.forced_close.is_none() && i.reopened == 0 {
        return None;
    }
    let mut out = v1::Verification {
        forced_close_reason: i.forced_close.clone().unwrap_or_default(),
        reopened: i.reopened,
        hosts_retired: i.hosts_retired.iter().cloned().collect(),
        ..Default::default()
    };
    if let Some(v) = &i.verification {
        out.verdict = v.last.verdict.name().to_string();
        out.last_run_ms = v.at_ms;
        out.streak = v.streak;
        out.streak_since_ms = v.streak_since_ms;
        out.blockers = v.last.blockers();
        out.checks = v
            .last
            .checks
            .iter()
            .map(|c| v1::CheckResult {
                check: c.check.clone(),
                verdict: c.verdict.name().to_string(),
                query: c.query.clone(),
                evidence: c.evidence.clone(),
                blockers: c.blockers.clone(),
            })
            .collect();
    }
    Some(out)
}

fn incident_id(id: &str) -> Result<i64, Status> {
    parse_id(id).ok_or_else(|| invalid(format!("{id:?} is not an incident id (INC-7, or 7)")))
}

pub(super) async fn close(
    svc: &QueryService,
    req: v1::CloseIncidentRequest,
    actor: String,
) -> Result<v1::CloseIncidentResponse, Status> {
    let id = incident_id(&req.id)?;
    if !req.force {
        return Err(Status::failed_precondition(
            "an incident closes by itself once its checks converge (see `patchgap incident show`); to close it without that evidence, pass --force --reason TEXT",
        ));
    }
    let reason = req.reason.trim().to_string();
    if reason.is_empty() {
        return Err(invalid(
            "--force needs --reason TEXT: why it closes without evidence",
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(invalid(format!(
            "--reason is longer than {MAX_REASON} bytes"
        )));
    }
    let hub = svc.hub.clone();
    let (before, after) = svc
        .domain(move |ingest| {
            let store = ingest.store().as_ref();
            let rec = store
                .incident(id)
                .map_err(|e| status(e.into()))?
                .ok_or_else(|| {
                    Status::not_found(format!("no incident is known as {}", display_id(id)))
                })?;
            let before = log::load(store, &rec).map_err(status)?;
            let after =
                verify::pass::force_close(ingest, id, &actor, &reason, now_ms()).map_err(status)?;
            if let Err(error) = crate::response::contain::rebuild(store, &hub) {
                tracing::warn!(%error, "cannot publish the desired containments");
            }
            Ok((before, after))
        })
        .await?;
    let reverted = after
        .actions
        .iter()
        .zip(&before.actions)
        .filter(|(a, b)| a.state != b.state)
        .map(|(a, _)| a.planned.id)
        .collect();
    Ok(v1::CloseIncidentResponse {
        id: display_id(id),
        state: after.state.name().to_string(),
        reverted,
    })
}

pub(super) async fn evidence(
    svc: &QueryService,
    req: v1::GetIncidentEvidenceRequest,
) -> Result<v1::GetIncidentEvidenceResponse, Status> {
    let id = incident_id(&req.id)?;
    let key = svc.tokens.key();
    let settings = svc.verify_settings();
    let state = svc.policy().state();
    let policy = PolicyRef::in_force(&state, &settings);
    let rules = svc.scope_rules();
    svc.domain(move |ingest| {
        let store = ingest.store().as_ref();
        let rec = store
            .incident(id)
            .map_err(|e| status(e.into()))?
            .ok_or_else(|| {
                Status::not_found(format!("no incident is known as {}", display_id(id)))
            })?;
        let incident = log::load(store, &rec).map_err(status)?;
        // The whole log, read in pages: the bundle is the timeline.
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .incident_events(id, after, 1_000)
                .map_err(|e| status(e.into()))?;
            for r in &page {
                events.push(crate::response::incident::Recorded::from_record(r).map_err(
                    |source| {
                        status(log::LogError::Corrupt {
                            id: display_id(id),
                            source,
                        })
                    },
                )?);
            }
            match page.last() {
                Some(last) if page.len() == 1_000 => after = last.seq,
                _ => break,
            }
        }
        let facts = verify::pass::facts(store, &incident, &rules, now_ms()).map_err(status)?;
        let graph = verify::graph::build(&display_id(id), &incident, &facts);
        let statement = evidence::statement(
            id,
            &incident,
            &events,
            &policy,
            serde_json::to_value(&graph).ok(),
        );
        let bundle_json = evidence::seal(&statement, key.as_ref());
        Ok(v1::GetIncidentEvidenceResponse {
            bundle_json,
            keyid: evidence::keyid(&key.public_key()),
        })
    })
    .await
}

pub(super) async fn retire(
    svc: &QueryService,
    req: v1::RetireHostRequest,
    actor: String,
) -> Result<v1::RetireHostResponse, Status> {
    let host = req.host.trim().to_string();
    if host.is_empty() || host.len() > MAX_HOST_NAME || host.chars().any(char::is_control) {
        return Err(invalid("give the host's name as `patchgap hosts` shows it"));
    }
    let reason = req.reason.trim().to_string();
    if reason.len() > MAX_REASON {
        return Err(invalid(format!(
            "--reason is longer than {MAX_REASON} bytes"
        )));
    }
    let changed = svc
        .domain(move |ingest| {
            verify::pass::retire_host(ingest, &host, &actor, &reason, now_ms()).map_err(status)
        })
        .await?;
    Ok(v1::RetireHostResponse {
        incidents: changed.into_iter().map(display_id).collect(),
    })
}

pub(super) async fn graph(
    svc: &QueryService,
    req: v1::GetIncidentGraphRequest,
) -> Result<v1::GetIncidentGraphResponse, Status> {
    let id = incident_id(&req.id)?;
    let rules = svc.scope_rules();
    svc.domain(move |ingest| {
        let store = ingest.store().as_ref();
        let rec = store
            .incident(id)
            .map_err(|e| status(e.into()))?
            .ok_or_else(|| {
                Status::not_found(format!("no incident is known as {}", display_id(id)))
            })?;
        let incident = log::load(store, &rec).map_err(status)?;
        let facts = verify::pass::facts(store, &incident, &rules, now_ms()).map_err(status)?;
        let graph = verify::graph::build(&display_id(id), &incident, &facts);
        Ok(v1::GetIncidentGraphResponse {
            graph_json: serde_json::to_string(&graph).expect("graphs serialize"),
        })
    })
    .await
}

pub(super) async fn report(
    svc: &QueryService,
    req: v1::GetResponseReportRequest,
) -> Result<v1::GetResponseReportResponse, Status> {
    let since = req.since_ms.max(0);
    let ledger = svc.ledger.clone();
    svc.domain(move |ingest| {
        let r = ledger
            .report(ingest.store().as_ref(), since)
            .map_err(status)?;
        Ok(v1::GetResponseReportResponse {
            report_json: serde_json::to_string(&r).expect("reports serialize"),
        })
    })
    .await
}
