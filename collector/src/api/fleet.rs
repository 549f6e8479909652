//! The fleet as it runs: workloads, processes and connections, each with
//! the coverage of the answer.

use std::collections::HashMap;

use patchgap_proto::v1;
use tonic::Status;

use super::{paging::Paging, query::QueryService};
use crate::fleet::workloads;

pub(super) async fn list_workloads(
    svc: &QueryService,
    req: v1::ListWorkloadsRequest,
) -> Result<v1::ListWorkloadsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let coverage = svc.coverage().await?;
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
    let (mut coverage, hosts) = svc.hosts().await?;
    svc.mark_retention(&mut coverage, req.since_ms).await?;
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
    let paging = Paging::parse(
        req.page_size,
        &req.page_token,
        &v1::ListProcessesRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        },
    )?;
    // Coverage reads every host: once per listing.
    let coverage = if paging.first() {
        Some(svc.coverage().await?)
    } else {
        None
    };
    let host = req.host;
    let (after, size) = (paging.after.clone(), paging.size);
    let page = svc
        .read(move |s| {
            s.processes_page(
                (!host.is_empty()).then_some(host.as_str()),
                after.as_ref(),
                size,
            )
        })
        .await?;
    // A full page may have more after it; a short one is the last.
    let next = (page.len() >= paging.size)
        .then(|| page.last().map(|(c, _)| c.clone()))
        .flatten();
    let (processes, next_page_token) =
        paging.fill(page.into_iter().map(|(c, p)| (c, vec![p])).collect(), next);
    Ok(v1::ListProcessesResponse {
        coverage,
        processes,
        next_page_token,
    })
}
