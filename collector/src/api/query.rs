//! The Query service: what responders ask. The trait impl only routes each
//! RPC to its area's file; the shared parts (coverage, fleet workloads with
//! the data-scope mapping in force) live here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use patchgap_proto::{
    time::now_ms,
    v1::{self, query_server::Query},
};
use tonic::{Request, Response, Status};

use super::{Connected, SharedStore, advisories, blocking, fleet, packages, sboms};
use crate::fleet::{coverage, ingest::Ingest, scope::ScopeMap, workloads};

#[derive(Clone)]
pub struct QueryService {
    pub(super) ingest: Arc<Ingest>,
    connected: Connected,
    /// A host is fresh when it reported within this long.
    fresh_after: Duration,
    /// The operator's data-scope mapping, reloaded when its file changes.
    scope: Arc<Mutex<ScopeMap>>,
}

/// Fleet workloads with the mapping in force: the summaries, the index of
/// each instance's summary by (host id, instance id), and the mapping's
/// load error if the last reload failed.
pub(super) struct Fleet {
    pub summaries: Vec<v1::WorkloadSummary>,
    pub by_instance: HashMap<(String, String), usize>,
    pub scope_map_error: String,
}

impl QueryService {
    pub fn new(
        ingest: Arc<Ingest>,
        connected: Connected,
        fresh_after: Duration,
        scope: ScopeMap,
    ) -> Self {
        QueryService {
            ingest,
            connected,
            fresh_after,
            scope: Arc::new(Mutex::new(scope)),
        }
    }

    /// The store, for reads.
    pub(super) fn store(&self) -> SharedStore {
        self.ingest.store().clone()
    }

    /// Runs a read off the async workers.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store();
        blocking(move || f(store.as_ref())).await
    }

    pub(super) async fn workloads(&self) -> Result<Fleet, Status> {
        let rows = self.read(|s| s.workloads()).await?;
        let (rules, scope_map_error) = {
            let mut scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
            scope.refresh();
            (
                scope.rules().to_vec(),
                scope.error().unwrap_or_default().to_string(),
            )
        };
        let summaries = workloads::summarize(&rows, &rules);
        let index: HashMap<&str, usize> = summaries
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.as_str(), i))
            .collect();
        let by_instance = rows
            .iter()
            .map(|r| {
                (
                    (r.host_id.clone(), r.workload.id.clone()),
                    index[workloads::key(r).as_str()],
                )
            })
            .collect();
        Ok(Fleet {
            summaries,
            by_instance,
            scope_map_error,
        })
    }

    pub(super) async fn hosts(&self) -> Result<(v1::Coverage, Vec<v1::HostSummary>), Status> {
        let rows = self.read(|s| s.hosts()).await?;
        let connected = self
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(coverage::summarize(
            rows,
            &connected,
            self.fresh_after,
            now_ms(),
        ))
    }
}

/// Names each match's fleet workload (its key and summary), keeps those
/// the filter passes, and sorts by workload, host and pid.
pub(super) fn place_in_workloads(
    matches: &mut Vec<v1::Match>,
    fleet: &Fleet,
    filter: &v1::WorkloadFilter,
) {
    matches.retain_mut(|m| {
        let detail = fleet
            .by_instance
            .get(&(m.host_id.clone(), m.workload.clone()))
            .map(|&i| &fleet.summaries[i]);
        if let Some(d) = detail {
            m.workload = d.key.clone();
            m.workload_detail = Some(d.clone());
        }
        let empty = v1::WorkloadSummary::default();
        workloads::passes(detail.unwrap_or(&empty), filter)
    });
    matches.sort_by(|a, b| {
        (&a.workload, &a.host, a.key.map(|k| k.pid)).cmp(&(
            &b.workload,
            &b.host,
            b.key.map(|k| k.pid),
        ))
    });
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn find_package(
        &self,
        request: Request<v1::FindPackageRequest>,
    ) -> Result<Response<v1::FindPackageResponse>, Status> {
        let query = packages::FindPackage::try_from(request.into_inner())?;
        Ok(Response::new(query.apply(self).await?))
    }

    async fn list_workloads(
        &self,
        request: Request<v1::ListWorkloadsRequest>,
    ) -> Result<Response<v1::ListWorkloadsResponse>, Status> {
        Ok(Response::new(
            fleet::list_workloads(self, request.into_inner()).await?,
        ))
    }

    async fn import_advisories(
        &self,
        request: Request<v1::ImportAdvisoriesRequest>,
    ) -> Result<Response<v1::ImportAdvisoriesResponse>, Status> {
        Ok(Response::new(
            advisories::import(self, request.into_inner()).await?,
        ))
    }

    async fn list_advisories(
        &self,
        request: Request<v1::ListAdvisoriesRequest>,
    ) -> Result<Response<v1::ListAdvisoriesResponse>, Status> {
        Ok(Response::new(
            advisories::list(self, request.into_inner()).await?,
        ))
    }

    async fn get_advisory(
        &self,
        request: Request<v1::GetAdvisoryRequest>,
    ) -> Result<Response<v1::GetAdvisoryResponse>, Status> {
        Ok(Response::new(
            advisories::get(self, request.into_inner()).await?,
        ))
    }

    async fn list_findings(
        &self,
        request: Request<v1::ListFindingsRequest>,
    ) -> Result<Response<v1::ListFindingsResponse>, Status> {
        let query = advisories::ListFindings::try_from(request.into_inner())?;
        Ok(Response::new(query.apply(self).await?))
    }

    async fn push_sbom(
        &self,
        request: Request<v1::PushSbomRequest>,
    ) -> Result<Response<v1::PushSbomResponse>, Status> {
        Ok(Response::new(
            sboms::push(self, request.into_inner()).await?,
        ))
    }

    async fn list_sboms(
        &self,
        request: Request<v1::ListSbomsRequest>,
    ) -> Result<Response<v1::ListSbomsResponse>, Status> {
        Ok(Response::new(
            sboms::list(self, request.into_inner()).await?,
        ))
    }

    async fn list_connections(
        &self,
        request: Request<v1::ListConnectionsRequest>,
    ) -> Result<Response<v1::ListConnectionsResponse>, Status> {
        Ok(Response::new(
            fleet::list_connections(self, request.into_inner()).await?,
        ))
    }

    async fn list_hosts(
        &self,
        _: Request<v1::ListHostsRequest>,
    ) -> Result<Response<v1::ListHostsResponse>, Status> {
        let (coverage, hosts) = self.hosts().await?;
        Ok(Response::new(v1::ListHostsResponse {
            coverage: Some(coverage),
            hosts,
        }))
    }

    async fn list_processes(
        &self,
        request: Request<v1::ListProcessesRequest>,
    ) -> Result<Response<v1::ListProcessesResponse>, Status> {
        Ok(Response::new(
            fleet::list_processes(self, request.into_inner()).await?,
        ))
    }
}
