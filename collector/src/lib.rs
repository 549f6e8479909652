//! The patchgap collector: ingests agent streams, stores the runtime truth and
//! answers responders' queries. It is grouped by stage of the response loop:
//!
//! - `api`: the gRPC edge (tonic), the only module that knows it;
//! - `fleet`: the runtime truth as responders read it (workloads, scope);
//! - `advisories`: Detect (OSV, version orders, matching);
//! - `sbom`: image SBOMs (CycloneDX, SPDX) and their records;
//! - `store`: the storage contract, its conformance suite and backends;
//! - `tls`: mTLS with certificates reloaded from disk.
//! - `auth`: scoped PASETO tokens and their revocation;
//! - `audit`: the hash-chained, checkpointed audit log.
//! - `conn`: connection admission (descriptors, idle connections).
//! - `response`: Contain: the response policy (tiers, actions, guards,
//!   exceptions) and incidents (an append-only event log and its projection).
//! - `http`: the HTTP listener (`--http-listen`): the admission webhook.
//!
//! [`run`] serves everything on one listener.

pub mod advisories;
pub mod api;
pub mod audit;
pub mod auth;
pub mod conn;
pub mod ecosystem;
pub mod egress;
pub mod fleet;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod http;
pub mod once;
pub mod response;
pub mod retention;
pub mod sbom;
pub mod store;
pub mod tls;

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use patchgap_proto::v1::{ingest_server::IngestServer, query_server::QueryServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

pub use api::{IngestService, IngestTls, QueryService, SharedStore};
pub use fleet::{ingest::Ingest, scope::ScopeMap};
pub use response::{Policy, SharedPolicy};
pub use store::{Store, sqlite::SqliteStore};
pub use tls::TlsFiles;

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// The largest message accepted from an agent or client.
    pub max_message_bytes: usize,
    /// Agent messages decoded and waiting to be stored, at most; past it a
    /// stream's message is refused with UNAVAILABLE (the agent keeps it in
    /// its spool and sends it again after a backoff). Memory for ingest is
    /// then this many messages, whatever the number of agents.
    pub max_waiting_messages: usize,
    /// A host is fresh when it reported within this long.
    pub fresh_after: Duration,
    /// The operator's data-scope mapping file (see `scope`), if any.
    pub scope_map: Option<PathBuf>,
    /// The response policy file (see `response::policy`); None: the
    /// built-in three tiers. Reloaded on SIGHUP.
    pub policy: Option<PathBuf>,
    /// mTLS: the collector's certificate and key and the client CA. Without
    /// it the collector serves plaintext, on loopback only.
    pub tls: Option<TlsFiles>,
    /// Serve plaintext on a non-loopback address anyway (warned at start).
    pub insecure_plaintext: bool,
    /// Every Query call needs a bearer token with the RPC's scope. Off,
    /// only `admin` calls (tokens, the audit log) need one: the loopback
    /// first look of `patchgap up`.
    pub require_tokens: bool,
    /// Critical paths (`approve` and `admin` calls) also need a verified
    /// CLI client certificate (`patchgap pki issue cli`). Needs `tls`.
    pub critical_needs_cert: bool,
    /// Token lifetimes: the default and the longest allowed.
    pub token_policy: auth::TokenPolicy,
    /// Connections: how many, how long idle, HTTP/2 keepalive.
    pub limits: conn::ConnLimits,
    /// How often the scopes of open incidents are recomputed (also soon
    /// after a write that can change an exposure, at most every fifth of
    /// this).
    pub incident_refresh: Duration,
    /// Where the HTTP listener (the admission webhook) listens; None: off.
    /// TLS with `tls`'s certificate, else loopback only.
    pub http_listen: Option<SocketAddr>,
    /// The HTTP listener takes only clients presenting a CLI certificate
    /// of the client CA (`patchgap pki issue cli --name kube-apiserver`,
    /// which kube-apiserver presents through its AdmissionConfiguration
    /// kubeconfig). Needs `tls`.
    pub http_client_cert: bool,
    /// Signed webhooks and Alertmanager (see `response::deliver`).
    pub deliver: response::deliver::DeliverConfig,
    /// Verify and Recover: how often incidents past containment are
    /// checked, K, and the evidence levels counted (`response::verify`):
    /// the base, under the policy file's `[verify]` and `verify_flags`.
    /// Its `fresh_after` is replaced by the one above.
    pub verify: response::verify::Settings,
    /// The `--verify-*` flags given: each wins over the policy file.
    pub verify_flags: response::verify::settings::VerifyFlags,
    /// Unexpected egress: the `--egress-*` learning durations, over the
    /// defaults.
    pub egress: egress::flags::EgressFlags,
    /// History retention: `--retain` and `--retain-size` (see
    /// `retention`); off by default.
    pub retention: retention::RetentionFlags,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("/var/lib/patchgap"),
            max_message_bytes: 16 << 20,
            max_waiting_messages: api::MAX_WAITING_MESSAGES,
            fresh_after: Duration::from_secs(90),
            scope_map: None,
            policy: None,
            tls: None,
            insecure_plaintext: false,
            require_tokens: false,
            critical_needs_cert: false,
            token_policy: auth::TokenPolicy::default(),
            limits: conn::ConnLimits::default(),
            incident_refresh: Duration::from_secs(10),
            http_listen: None,
            http_client_cert: false,
            deliver: response::deliver::DeliverConfig::default(),
            verify: response::verify::Settings::default(),
            verify_flags: Default::default(),
            egress: egress::flags::EgressFlags::default(),
            retention: retention::RetentionFlags::default(),
        }
    }
}

/// How to set TLS up, for the refusal to serve plaintext off loopback.
pub const TLS_HINT: &str = "set up TLS: `patchgap pki init --dir DIR`, `patchgap pki issue collector --dir DIR --san NAME[,IP]`, then pass --tls-cert DIR/collector.crt --tls-key DIR/collector.key --client-ca DIR/ca.crt (or --insecure-plaintext to accept the risk)";

/// Plaintext is for loopback only: anyone who can reach a plaintext port
/// can feed the collector any host's inventory. Returns the refusal, or a
/// warning to print when `--insecure-plaintext` overrides it.
pub fn check_listen(
    addr: SocketAddr,
    tls: bool,
    insecure_plaintext: bool,
) -> Result<Option<String>, String> {
    if tls || addr.ip().is_loopback() {
        return Ok(None);
    }
    if insecure_plaintext {
        return Ok(Some(format!(
            "serving PLAINTEXT on {addr} (--insecure-plaintext): anyone who can reach it can send any host's inventory and read the fleet"
        )));
    }
    Err(format!(
        "refusing to serve plaintext on {addr}, which is not a loopback address; {TLS_HINT}"
    ))
}

/// Opens the store and serves Ingest, Query and reflection on `listener`
/// until `shutdown` completes.
pub async fn run(
    config: CollectorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Refuse before opening anything.
    if let Err(e) = check_listen(
        listener.local_addr()?,
        config.tls.is_some(),
        config.insecure_plaintext,
    ) {
        anyhow::bail!(e);
    }
    let store = SqliteStore::open(&config.data_dir).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "opening the store in {}",
            config.data_dir.display()
        ))
    })?;
    serve(config, Arc::new(store), listener, shutdown).await
}

/// Serves with a store the caller opened (tests use this to share one).
pub async fn serve(
    config: CollectorConfig,
    store: SharedStore,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    match check_listen(
        listener.local_addr()?,
        config.tls.is_some(),
        config.insecure_plaintext,
    ) {
        Err(e) => anyhow::bail!(e),
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Ok(None) => {}
    }
    if let Some(addr) = config.http_listen {
        match check_listen(addr, config.tls.is_some(), config.insecure_plaintext) {
            Err(e) => anyhow::bail!("--http-listen: {e}"),
            Ok(Some(warning)) => tracing::warn!("--http-listen: {warning}"),
            Ok(None) => {}
        }
    }
    anyhow::ensure!(
        !config.http_client_cert || config.tls.is_some(),
        "--http-client-cert needs TLS (client certificates come with it): {TLS_HINT}"
    );
    anyhow::ensure!(
        !config.critical_needs_cert || config.tls.is_some(),
        "--critical-needs-cert needs TLS (client certificates come with it): {TLS_HINT}"
    );
    // A policy file that does not load stops the start, naming
    // file:line:column; later reloads (SIGHUP) keep the previous policy.
    let policy = match &config.policy {
        Some(path) => SharedPolicy::load(path)
            .map_err(|e| anyhow::anyhow!("response policy not loaded:\n{e}"))?,
        None => SharedPolicy::builtin(),
    };
    // Ends with `serve`, whichever way it returns.
    let _reloads = response::policy::state::reload_on_sighup(policy.clone())
        .map_err(|e| anyhow::Error::new(e).context("listening for SIGHUP (policy reloads)"))?;
    {
        // Logged once SIGHUP is handled, so a reload can follow this line.
        let state = policy.state();
        let p = &state.current;
        tracing::info!(
            policy = %state.source,
            tiers = p.tiers.len(),
            rules = p.rule_count(),
            actions = p.action_count(),
            "response policy in force; SIGHUP reloads it"
        );
    }
    // Load TLS before anything else, so a bad file stops the start.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(
            tls::ReloadingConfig::load(files.clone()).map_err(|e| {
                anyhow::Error::new(e).context("loading the TLS certificate, key and client CA")
            })?,
        )),
        None => None,
    };
    // The signing key lives beside the database (0600, in the 0700 data
    // directory); the audit log and the tokens share it.
    let tokens = {
        let (dir, policy, store) = (config.data_dir.clone(), config.token_policy, store.clone());
        tokio::task::spawn_blocking(move || auth::Tokens::open(&dir, policy, store.as_ref()))
            .await?
            .map_err(|e| anyhow::Error::new(e).context("loading the token signing key"))?
    };
    let key = tokens.key();
    let audit = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            audit::AuditLog::open(store, key, audit::CheckpointPolicy::default())
        })
        .await?
        .map_err(|e| anyhow::Error::new(e).context("opening the audit log"))?
    };
    let (tokens, audit) = (Arc::new(tokens), Arc::new(audit));
    // Kept to flush it on a clean stop.
    let store_at_stop = store.clone();
    let ingest = Arc::new(Ingest::new(store));
    // Packages stored but not matched yet (a crash between an ingest and
    // its matching pass, or a database from before schema 8).
    {
        let ingest = ingest.clone();
        tokio::task::spawn_blocking(move || ingest.match_unmatched())
            .await?
            .map_err(|e| anyhow::Error::new(e).context("matching stored packages"))?;
    }
    // The desired containments come from the incident logs: published
    // before any agent stream opens, so a restarted collector never sends
    // an agent an empty set by mistake.
    let hub = {
        let mut hub = response::contain::Hub::new(patchgap_proto::time::now_ms().max(0) as u64);
        if let Some((host, cgroup)) = own_host_and_cgroup() {
            hub = hub.with_collector(host, cgroup);
        }
        // The deploy gate carries out its actions on the HTTP listener.
        if let Some(addr) = config.http_listen {
            hub = hub.with_admission(addr.to_string());
        }
        let hub = Arc::new(hub);
        let (ingest, h) = (ingest.clone(), hub.clone());
        tokio::task::spawn_blocking(move || {
            response::contain::rebuild(ingest.store().as_ref(), &h)
        })
        .await?
        .map_err(|e| anyhow::Error::new(e).context("loading the desired containments"))?;
        hub
    };
    let connected: api::Connected = Arc::new(Mutex::new(api::Streams::default()));
    // The deploy gate's facts and admission tally: one for the webhook,
    // the API and the gate's executor.
    let gate = Arc::new(response::gate::facts::Cache::default());
    // The response report's incident folds: one for `patchgap report` and
    // `/metrics`, so each reads only the events appended since either ran.
    let ledger = Arc::new(response::verify::report::Ledger::default());
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    // The HTTP listener (the admission webhook): bound before the gRPC
    // server starts, so a taken port stops the start; it stops with it.
    let http_task = match config.http_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("--http-listen {addr}")))?;
            let router = http::router(http::Http {
                ingest: ingest.clone(),
                policy: policy.clone(),
                audit: audit.clone(),
                gate: gate.clone(),
                ledger: ledger.clone(),
                connected: connected.clone(),
                fresh_after: config.fresh_after,
                data_dir: config.data_dir.clone(),
            });
            let mut stop = stopping.clone();
            let tls = tls.clone().map(|t| http::Tls {
                config: t,
                client_cert: config.http_client_cert,
            });
            Some(tokio::spawn(http::serve(
                listener,
                router,
                tls,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    let shutdown = async move {
        shutdown.await;
        // End the agents' streams; they reconnect to whoever serves next.
        let _ = stopping_tx.send(true);
    };
    let ingest_api = IngestServer::new(IngestService::new(
        ingest.clone(),
        connected.clone(),
        stopping,
        if tls.is_some() {
            IngestTls::Required
        } else {
            IngestTls::Off
        },
        audit.clone(),
        hub.clone(),
        config.max_waiting_messages,
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    // A mapping file that does not load stops the collector at start; later
    // reloads keep the previous mapping instead.
    let scope = Arc::new(Mutex::new(match &config.scope_map {
        Some(path) => ScopeMap::load(path).map_err(|e| anyhow::anyhow!("scope mapping: {e}"))?,
        None => ScopeMap::default(),
    }));
    // Unexpected egress: every agent message's connections are judged
    // after they commit; alerts go quiet into resolved.
    let egress_stage = Arc::new(egress::stage::Stage::from_policy(
        policy.clone(),
        config.egress,
    ));
    let egress_events = egress_stage.subscribe();
    ingest.attach_egress(egress_stage, scope.clone());
    let resolver = tokio::spawn(resolve_egress(ingest.clone()));
    // Old history goes, once across collectors; the task goes with the server.
    let retainer = config
        .retention
        .enabled()
        .then(|| tokio::spawn(retention::run(ingest.store().clone(), config.retention)));
    // Open incidents follow their exposure; the task goes when the server does.
    let refresher = tokio::spawn(refresh_incidents(
        ingest.clone(),
        scope.clone(),
        policy.clone(),
        hub.clone(),
        config.incident_refresh,
    ));
    // What the agents report about the actions in force.
    let follower = tokio::spawn(follow_containments(ingest.clone(), hub.clone()));
    // Outbound actions: the outbox's webhooks, and the pages to
    // Alertmanager when one is configured. Aborted with the server; a
    // delivery cut short is leased again after a restart.
    let deliverer = tokio::spawn(response::deliver::run(
        ingest.clone(),
        policy.clone(),
        audit.clone(),
        config.deliver.clone(),
    ));
    let pager = config.deliver.alertmanager.clone().map(|url| {
        tokio::spawn(response::deliver::alertmanager::run(
            ingest.clone(),
            audit.clone(),
            url,
            config.deliver.clone(),
        ))
    });
    // The deploy gate carries out its actions where it serves admission:
    // what it enforces is recorded on the incidents.
    let gate_follower = config.http_listen.map(|_| {
        GateTask(tokio::spawn(follow_gate(
            ingest.clone(),
            policy.clone(),
            gate.clone(),
        )))
    });
    // Egress alerts: to Alertmanager, and to the endpoints their
    // workloads' policies name, through the same outbox.
    let egress_deliverer = tokio::spawn(response::deliver::egress::run(
        ingest.clone(),
        audit.clone(),
        config.deliver.clone(),
        egress_events,
    ));
    let outbound = OutboundTasks(Some(deliverer), pager, Some(egress_deliverer));
    // Incidents past containment are verified, recovered and closed (or
    // reopened); the task goes when the server does.
    let verify_settings = response::verify::Settings {
        fresh_after: config.fresh_after,
        ..config.verify.clone()
    };
    let verifier = tokio::spawn(verify_incidents(
        ingest.clone(),
        scope.clone(),
        hub.clone(),
        policy.clone(),
        verify_settings.clone(),
        config.verify_flags.clone(),
    ));
    let query_service = QueryService::new(
        ingest,
        connected,
        config.fresh_after,
        scope,
        tokens.clone(),
        audit.clone(),
    )
    .with_policy(policy)
    .with_gate(gate)
    .with_ledger(ledger)
    .with_hub(hub)
    .with_verify(verify_settings, config.verify_flags.clone());
    let warmer = tokio::spawn(query_service.clone().keep_workloads_warm());
    let query = QueryServer::new(query_service)
        // An SBOM push carries a whole document: room for the largest the
        // parser accepts, so it (not the transport) says what is wrong.
        .max_decoding_message_size(
            config
                .max_message_bytes
                .max(sbom::MAX_INPUT_BYTES + (1 << 20)),
        )
        .max_encoding_message_size(64 << 20);
    // Every Query call passes the token check first (the agents' Ingest
    // stream is authenticated by its client certificate instead). Off
    // loopback the collector serves TLS, and then every call needs a token.
    let query = api::auth::Authorized::new(
        query,
        Arc::new(api::auth::Guard {
            tokens,
            audit: audit.clone(),
            require_tokens: config.require_tokens || config.tls.is_some(),
            critical_needs_cert: config.critical_needs_cert,
        }),
    );
    let limits = config.limits;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.streams_per_connection)
        .concurrency_limit_per_connection(limits.requests_per_connection)
        .add_service(ingest_api)
        .add_service(query)
        .add_service(patchgap_proto::reflection::v1())
        .add_service(patchgap_proto::reflection::v1alpha());
    // We accept TCP ourselves, plaintext and TLS alike: descriptors stay
    // below the process's limit, idle connections go (see `conn`), and
    // under TLS certificates reload without a restart (see `tls`). The
    // tasks go when the server does.
    let admission = conn::Admission::new(limits);
    let (accepted, accept_task) = conn::accept_loop(listener, admission.clone());
    match tls {
        None => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let wrap_task = tokio::spawn(async move {
                let mut accepted = accepted;
                while let Some((tcp, _, state)) = accepted.recv().await {
                    let io = conn::Guarded::new(tcp, state, admission.clone());
                    if tx.send(Ok::<_, std::io::Error>(io)).await.is_err() {
                        return;
                    }
                }
            });
            let served = router
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
                .await;
            accept_task.abort();
            wrap_task.abort();
            refresher.abort();
            follower.abort();
            verifier.abort();
            resolver.abort();
            warmer.abort();
            served?
        }
        Some(config) => {
            let (incoming, tls_task) = tls::incoming(accepted, admission, config);
            let served = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            accept_task.abort();
            tls_task.abort();
            refresher.abort();
            follower.abort();
            verifier.abort();
            resolver.abort();
            warmer.abort();
            served?
        }
    }
    if let Some(task) = http_task {
        task.abort();
    }
    if let Some(task) = retainer {
        task.abort();
    }
    drop(outbound);
    drop(gate_follower);
    // Seal what was logged since the last checkpoint.
    tokio::task::spawn_blocking(move || audit.checkpoint_now())
        .await?
        .map_err(|e| anyhow::Error::new(e).context("signing the last audit checkpoint"))?;
    // Leave the store whole in its file (SQLite's WAL folded in).
    tokio::task::spawn_blocking(move || store_at_stop.flush())
        .await?
        .map_err(|e| anyhow::Error::new(e).context("flushing the store on stop"))?;
    Ok(())
}

/// The outbound tasks, aborted when dropped (also when `run` returns
/// early with an error).
struct OutboundTasks(
    Option<tokio::task::JoinHandle<()>>,
    Option<tokio::task::JoinHandle<()>>,
    Option<tokio::task::JoinHandle<()>>,
);

impl Drop for OutboundTasks {
    fn drop(&mut self) {
        for t in [self.0.take(), self.1.take(), self.2.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

/// The gate's executor task, aborted when dropped.
struct GateTask(tokio::task::JoinHandle<()>);

impl Drop for GateTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records what the deploy gate enforces (`response::gate::execute`):
/// a pass every half second, on a blocking thread, outside any store
/// transaction but its appends. A steady collector reads the open
/// incidents' rows and decodes only those whose log grew.
async fn follow_gate(
    ingest: Arc<Ingest>,
    policy: SharedPolicy,
    gate: Arc<response::gate::facts::Cache>,
) {
    let follower = Arc::new(response::gate::execute::Follower::default());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (ingest, policy, gate, f) = (
            ingest.clone(),
            policy.state(),
            gate.clone(),
            follower.clone(),
        );
        let pass = tokio::task::spawn_blocking(move || {
            // The policy's own Arc: the cache keeps its entries while it
            // is the one in force.
            f.pass(
                &ingest,
                &gate,
                &policy.current,
                patchgap_proto::time::now_ms(),
            )
        })
        .await;
        match pass {
            Ok(Ok(p)) if p.events > 0 || p.failed > 0 => tracing::info!(
                active = p.active,
                events = p.events,
                failed = p.failed,
                "recorded what the deploy gate enforces"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot follow the deploy gate's actions"),
            Err(error) => tracing::warn!(%error, "the deploy gate's task failed"),
        }
    }
}

/// Resolves egress alerts that went quiet, every ten seconds (or a
/// quarter of `--egress-resolve-after` when that is shorter), on a
/// blocking thread (the store's write lock).
async fn resolve_egress(ingest: Arc<Ingest>) {
    loop {
        let quiet = ingest
            .egress()
            .map_or(Duration::from_secs(40), |s| s.config().resolve_after);
        let tick = (quiet / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::time::sleep(tick).await;
        let i = ingest.clone();
        match tokio::task::spawn_blocking(move || {
            once::run_once(i.store().as_ref(), once::EGRESS_RESOLVE, || {
                i.resolve_egress(patchgap_proto::time::now_ms())
            })
            .unwrap_or_else(|| Ok(Vec::new()))
        })
        .await
        {
            Ok(Ok(resolved)) if !resolved.is_empty() => {
                tracing::info!(
                    resolved = resolved.len(),
                    "egress alerts resolved after their quiet period"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e.chain(), "resolving egress alerts failed"),
            Err(e) => tracing::warn!(error = %e, "resolving egress alerts panicked"),
        }
    }
}

/// Keeps the scopes of open incidents current: a pass every `every`, and
/// one soon after a write that can change an exposure (agent messages,
/// advisory imports and deletes, SBOM pushes), but never sooner than a
/// fifth of `every` after the last pass, so a busy fleet costs at most
/// five passes per period. A pass looks at most at
/// `response::incident::log::REFRESH_MAX` incidents and runs on a
/// blocking thread, outside any store transaction but its own appends.
async fn refresh_incidents(
    ingest: Arc<Ingest>,
    scope: Arc<Mutex<ScopeMap>>,
    policy: response::SharedPolicy,
    hub: Arc<response::contain::Hub>,
    every: Duration,
) {
    let every = every.max(Duration::from_millis(100));
    let gap = every / 5;
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(last + every) => {}
            _ = ingest.changed().notified() => {
                tokio::time::sleep_until(last + gap).await;
            }
        }
        last = tokio::time::Instant::now();
        let rules = {
            let mut scope = scope.lock().unwrap_or_else(|e| e.into_inner());
            scope.refresh();
            scope.rules().to_vec()
        };
        let (ingest, policy, hub) = (ingest.clone(), policy.state(), hub.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let store = ingest.store().clone();
            once::run_once(store.as_ref(), once::INCIDENT_REFRESH, || {
                let now = patchgap_proto::time::now_ms();
                // Incidents the policy opens by itself (none unless a rule
                // says `open_incident = "auto"`), then every open one's scope.
                let opened =
                    response::incident::act::auto_open(&ingest, &policy.current, &rules, now)?;
                if opened > 0 {
                    tracing::info!(opened, "the policy opened incidents");
                }
                let refreshed = response::incident::log::refresh_open(&ingest, &rules, now)?;
                // Then each open incident's plan: the tier routed and the
                // automatic actions requested, by the collector.
                let planned = plan_open(&ingest, &rules, &policy.current, &hub, now)?;
                if planned > 0 {
                    tracing::info!(planned, "planned open incidents");
                    response::contain::rebuild(ingest.store().as_ref(), &hub)?;
                }
                Ok::<_, response::incident::log::LogError>(refreshed)
            })
            .or_else(|| {
                // Another collector refreshed and planned: what it decided
                // reaches the agents streaming here through the logs.
                response::contain::rebuild(store.as_ref(), &hub)
                    .err()
                    .map(Err)
            })
        })
        .await;
        match pass {
            // Another collector refreshed them.
            Ok(None) => {}
            Ok(Some(Ok(r))) if r.changed > 0 || r.failed > 0 => tracing::info!(
                checked = r.checked,
                changed = r.changed,
                failed = r.failed,
                "refreshed the scopes of open incidents"
            ),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => tracing::warn!(%error, "cannot refresh open incidents"),
            Err(error) => tracing::warn!(%error, "the incident refresh task failed"),
        }
    }
}

/// Verifies the incidents past containment every `every` of the settings
/// in force (the flags over the policy's `[verify]` over `base`, read
/// again each pass so a reload applies): each pass runs on a blocking
/// thread (the checks read the store, then the gate's events are
/// appended, outside any transaction but their own), and publishes the
/// desired containments again when the gate lifted or closed something,
/// so the agents lift it.
async fn verify_incidents(
    ingest: Arc<Ingest>,
    scope: Arc<Mutex<ScopeMap>>,
    hub: Arc<response::contain::Hub>,
    policy: response::SharedPolicy,
    base: response::verify::Settings,
    flags: response::verify::settings::VerifyFlags,
) {
    loop {
        let every =
            response::verify::settings::resolve(&base, &policy.state().current.verify, &flags)
                .settings
                .every;
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
        // The policy as it is now (a reload during the sleep applies).
        let current = policy.state().current.clone();
        let settings = response::verify::settings::resolve(&base, &current.verify, &flags).settings;
        let rules = {
            let scope = scope.lock().unwrap_or_else(|e| e.into_inner());
            scope.rules().to_vec()
        };
        let (ingest, h, settings) = (ingest.clone(), hub.clone(), settings.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let store = ingest.store().clone();
            once::run_once(store.as_ref(), once::VERIFY, || {
                let now = patchgap_proto::time::now_ms();
                let done =
                    response::verify::pass::run_pass(&ingest, &settings, &rules, &current, now)?;
                if done.lifted > 0 || done.closed > 0 || done.reopened > 0 {
                    response::contain::rebuild(ingest.store().as_ref(), &h)?;
                }
                Ok::<_, response::incident::log::LogError>(done)
            })
        })
        .await;
        match pass {
            // Another collector verified them.
            Ok(None) => {}
            Ok(Some(Ok(p))) if p.events > 0 || p.failed > 0 => tracing::info!(
                checked = p.checked,
                events = p.events,
                lifted = p.lifted,
                closed = p.closed,
                reopened = p.reopened,
                failed = p.failed,
                "verified incidents"
            ),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => tracing::warn!(%error, "cannot verify incidents"),
            Err(error) => tracing::warn!(%error, "the verification task failed"),
        }
    }
}

/// Plans every open incident that needs it, each against the protected
/// instances of its own hosts.
fn plan_open(
    ingest: &Ingest,
    rules: &[fleet::scope::Rule],
    policy: &response::Policy,
    hub: &response::contain::Hub,
    now_ms: i64,
) -> Result<usize, response::incident::log::LogError> {
    use response::incident::{State, act, log};
    let store = ingest.store().as_ref();
    let mut planned = 0;
    for rec in store.incidents(None, true, log::REFRESH_MAX)? {
        let incident = log::load(store, &rec)?;
        if !matches!(
            incident.state,
            State::Scoped | State::Planned | State::ApprovalPending
        ) {
            continue;
        }
        let protected = response::contain::protected(store, &incident.scope, hub.collector())?;
        let p = act::Planning {
            policy,
            rules,
            protected: &protected,
            executors: hub.executors(),
        };
        match act::plan(ingest, rec.id, log::COLLECTOR, &p, now_ms) {
            Ok(done) if done.recorded => planned += 1,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, incident = rec.id, "cannot plan the incident"),
        }
    }
    Ok(planned)
}

/// Follows the actions in force: at each agent report that carries
/// containments (and every second while some are in force), records what
/// the reports show (applied, verified, failed, a revert seen, a
/// `revert_after` run out) and publishes the set again when that changed
/// it. Quiet when nothing is in force.
async fn follow_containments(ingest: Arc<Ingest>, hub: Arc<response::contain::Hub>) {
    let mut active = true;
    loop {
        if active {
            tokio::select! {
                _ = hub.reported().notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else {
            hub.reported().notified().await;
        }
        let (ingest, h) = (ingest.clone(), hub.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let observed = h.observed();
            let progress = response::incident::act::observe(
                &ingest,
                &observed,
                patchgap_proto::time::now_ms(),
            )?;
            if progress.events > 0 {
                response::contain::rebuild(ingest.store().as_ref(), &h)?;
            }
            Ok::<_, response::incident::log::LogError>(progress)
        })
        .await;
        match pass {
            Ok(Ok(p)) => active = p.active > 0 || !hub.desired().by_host.is_empty(),
            Ok(Err(error)) => tracing::warn!(%error, "cannot follow the containments in force"),
            Err(error) => tracing::warn!(%error, "the containment task failed"),
        }
    }
}

/// This host's key as its agent names it (the machine id, else the host
/// name) and the collector's own cgroup v2 path: never a containment
/// target.
fn own_host_and_cgroup() -> Option<(String, String)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .to_string();
    let host = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })?;
    Some((host, path))
}
