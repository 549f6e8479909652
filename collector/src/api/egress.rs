//! ListEgressAlerts and GetEgressBaseline: the egress stage's alerts and
//! baselines as the store keeps them, read on a blocking thread.

use patchgap_proto::v1;
use tonic::Status;

use super::{invalid, query::QueryService, to_status};
use crate::egress::{baseline::Baseline, export};

const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1_000;
/// The longest workload text accepted.
const MAX_FIELD: usize = 512;

pub(super) async fn list_alerts(
    svc: &QueryService,
    req: v1::ListEgressAlertsRequest,
) -> Result<v1::ListEgressAlertsResponse, Status> {
    let limit = match req.limit as usize {
        0 => DEFAULT_LIST,
        n => n.min(MAX_LIST),
    };
    let found = svc
        .domain(move |ingest| {
            ingest
                .store()
                .egress_alerts(req.since_ms, limit)
                .map_err(to_status)
        })
        .await?;
    Ok(v1::ListEgressAlertsResponse {
        alerts: found
            .into_iter()
            .map(|r| v1::EgressAlert {
                id: r.id,
                dedup_key: r.dedup_key,
                workload: r.workload,
                first_seen_ms: r.first_seen_ms,
                last_seen_ms: r.last_seen_ms,
                count: u64::try_from(r.count).unwrap_or(0),
                resolved_ms: r.resolved_ms.unwrap_or(0),
                document: r.body,
            })
            .collect(),
    })
}

pub(super) async fn get_baseline(
    svc: &QueryService,
    req: v1::GetEgressBaselineRequest,
) -> Result<v1::GetEgressBaselineResponse, Status> {
    let wanted = req.workload.trim().to_string();
    if wanted.is_empty() || wanted.len() > MAX_FIELD || wanted.chars().any(char::is_control) {
        return Err(invalid(
            "give a workload: its baseline key, or part of it that names one baseline",
        ));
    }
    svc.domain(move |ingest| {
        let store = ingest.store();
        let all = store.egress_baselines().map_err(to_status)?;
        let record = match all.iter().find(|b| b.key == wanted) {
            Some(exact) => exact.clone(),
            None => {
                let mut hits = all.iter().filter(|b| b.key.contains(&wanted));
                match (hits.next(), hits.next()) {
                    (Some(one), None) => one.clone(),
                    (None, _) => {
                        return Err(Status::not_found(format!(
                            "no egress baseline for {wanted:?} (patchgap alerts names the workloads)"
                        )));
                    }
                    (Some(a), Some(b)) => {
                        return Err(invalid(format!(
                            "{wanted:?} names several baselines ({}, {}, ...): give more of the key",
                            a.key, b.key
                        )));
                    }
                }
            }
        };
        let baseline: Baseline = serde_json::from_str(&record.body).map_err(|e| {
            tracing::warn!(error = %e, key = record.key, "an egress baseline does not read");
            Status::internal("the stored baseline does not read; see the collector log")
        })?;
        let config = ingest.egress().map(|s| s.config()).unwrap_or_default();
        let now = patchgap_proto::time::now_ms();
        let policy = config.policies.for_workload(&crate::egress::alert::WorkloadRef {
            key: record.key.clone(),
            ..Default::default()
        });
        Ok(v1::GetEgressBaselineResponse {
            state: baseline.state(&config.learning, now).as_str().into(),
            policy: if req.export_policy {
                export::allow_list(&baseline, policy.mode.as_str())
            } else {
                String::new()
            },
            key: record.key,
            version: record.version,
            updated_ms: record.updated_ms,
            document: record.body,
        })
    })
    .await
}
