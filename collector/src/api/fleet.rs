//! The fleet as it runs: workloads, processes and connections, each with
//! the coverage of the answer.

use std::collections::HashMap;

use patchgap_proto::v1;
use tonic::Status;

use super::query::QueryService;
use crate::fleet::workloads;

pub(super) async fn list_workloads(
    svc: &QueryService,
    req: v1::ListWorkloadsRequest,
) -> Result<v1::ListWorkloadsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let (coverage, _) = svc.hosts().await?;
    let fleet = svc.workloads().await?;
    Ok(v1::ListWorkloadsResponse {
        coverage: Some(coverage),
        workloads: fleet
            .summaries
            .into_iter()
            .filter(|s| workloads::passes(s, &filter))
            .collect(),
        scope_map_error: fleet.scope_map_error,
    })
}

pub(super) async fn list_connections(
    svc: &QueryService,
    req: v1::ListConnectionsRequest,
) -> Result<v1::ListConnectionsResponse, Status> {
    let (coverage, hosts) = svc.hosts().await?;
    let fleet = svc.workloads().await?;
    let host_ids: HashMap<String, String> = hosts
        .into_iter()
        .filter_map(|h| h.identity.map(|i| (i.hostname, i.host_id)))
        .collect();
    let host = (!req.host.is_empty()).then_some(req.host);
    let since = req.since_ms;
    let mut connections = svc
        .read(move |s| s.connections(host.as_deref(), since))
        .await?;
    // Name each connection's fleet workload, as queries do.
    for c in &mut connections {
        if let Some(id) = host_ids.get(&c.host)
            && let Some(&i) = fleet.by_instance.get(&(id.clone(), c.workload.clone()))
        {
            c.workload = fleet.summaries[i].key.clone();
        }
    }
    Ok(v1::ListConnectionsResponse {
        coverage: Some(coverage),
        connections,
    })
}

pub(super) async fn list_processes(
    svc: &QueryService,
    req: v1::ListProcessesRequest,
) -> Result<v1::ListProcessesResponse, Status> {
    let host = req.host;
    let (coverage, _) = svc.hosts().await?;
    let processes = svc
        .read(move |s| s.processes((!host.is_empty()).then_some(host.as_str())))
        .await?;
    Ok(v1::ListProcessesResponse {
        coverage: Some(coverage),
        processes,
    })
}
