//! The storage boundary. The collector's services talk to a [`Store`]; the
//! SQLite backend (`sqlite`) is the default, and PostgreSQL will come in
//! behind the same trait.
//!
//! The store takes and returns patchgap.v1 messages as plain data. It knows
//! nothing of gRPC, streams or statuses.

use patchgap_proto::v1;

/// The contract every backend passes; its message builders serve other
/// modules' tests too.
#[cfg(test)]
pub(crate) mod conformance;
/// A store wrapper that counts reads, for tests that bound them.
#[cfg(test)]
pub(crate) mod counting;
pub mod evidence;
pub mod outbox;
pub mod postgres;
pub mod retention;
pub mod singleton;
pub mod sqlite;

pub use outbox::{DeliveryOutcome, DeliveryRecord, DeliveryState, DisabledEndpoint, NewDelivery};
pub use retention::{PruneStep, StorageUse};
pub use singleton::Singleton;

/// A store failure, free of any backend's types: the backend's own error
/// is the boxed source, so the cause chain survives to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed")]
    Backend {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot open the data directory {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "database schema version {found} is newer than this collector knows ({known}); upgrade the collector"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// The store file is not a patchgap store (zero-length, not SQLite,
    /// another application's database): refused, never reinitialised.
    #[error(
        "{path} is not a patchgap store: {reason}; move it aside or point --data-dir elsewhere"
    )]
    Foreign {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The store file fails SQLite's check: refused before anything is served.
    #[error(
        "{path} is corrupt ({problems}); restore it from a backup, or run `patchgap-collector check --data-dir DIR` for every problem"
    )]
    Corrupt {
        path: std::path::PathBuf,
        problems: String,
    },
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("this agent session was superseded by a newer session of the same host")]
    Superseded,
}

impl StoreError {
    /// Wraps a backend's error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend {
            source: Box::new(e),
        }
    }

    /// The message and every cause, joined with ": ", for logs.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            out.push_str(": ");
            out.push_str(&s.to_string());
            src = s.source();
        }
        out
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which package rows `packages_named` returns.
#[derive(Debug, Clone, Copy)]
pub struct PackageName<'a> {
    /// Compared by [`package_key`] in the package's ecosystem; a deb or rpm
    /// source package name also matches.
    pub name: &'a str,
}

/// One piece of evidence that a process has a package row: an artifact of
/// its set (running processes, or with a window every set it had in the
/// window), or the SBOM of the image its workload runs (`declared`).
/// `fleet::exposure` merges these into one `v1::Match` per process and
/// package; the backend only finds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The store's id of the process row: evidence of one process shares it.
    pub process: i64,
    pub package_id: i64,
    /// The process's side of a match: host, host id, workload, key, start
    /// and exit time, exe, cmdline, uid and privilege. No package, paths or
    /// evidence.
    /// Shared by every piece of one process's evidence.
    pub holder: std::sync::Arc<v1::Match>,
    /// The artifact (path, evidence name, stale, deleted, dev, inode), or
    /// for `declared` the path `sbom IMAGE REF`.
    pub path: v1::MatchPath,
    /// For `declared`: the image digest and the "pulled in by" chain.
    pub sbom: Option<(String, Vec<String>)>,
}

/// A process's place in the order paged answers list processes in: host
/// name, host row, pid, then process row. Paging is by keyset (the next
/// page starts after this key), never by offset, so a process present
/// throughout a listing is listed exactly once however ingest moves
/// others in and out.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessCursor {
    pub hostname: String,
    /// The store's id of the host.
    pub host: i64,
    pub pid: u32,
    /// The store's id of the process row.
    pub id: i64,
}

/// How much one page may hold and read: at most `items` processes, and
/// at most `scan` process rows looked at to find them (a page that stops
/// on `scan` holds fewer, and says where to go on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    pub items: usize,
    pub scan: usize,
}

impl PageLimit {
    /// Everything at once (tests, and the unpaged helpers).
    pub const ALL: PageLimit = PageLimit {
        items: usize::MAX,
        scan: usize::MAX,
    };
}

/// One page of evidence: each process with evidence, in cursor order,
/// with its pieces (artifacts in the order of the packages asked for, then
/// by kind and path; then SBOM declarations); and where the next page
/// starts (None: nothing more).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvidencePage {
    pub processes: Vec<(ProcessCursor, Vec<Evidence>)>,
    pub next: Option<ProcessCursor>,
}

/// The matcher's stored verdict on a package, with its advisory's severity
/// and score.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub advisory_id: String,
    pub package_id: i64,
    pub status: String,
    pub severity: String,
    pub score: Option<f64>,
    pub vector: String,
}

/// The name as queries compare it (one definition, for every backend and
/// the matcher): see [`crate::ecosystem::Ecosystem::key`].
pub use crate::ecosystem::package_key;

/// PEP 503 normalization (one implementation, shared with the agent).
pub use patchgap_proto::purl::pep503;

/// Where an agent session stands after its Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The store's id for the host.
    pub host: i64,
    /// The highest sequence number of this session durably stored.
    pub acked_seq: u64,
    /// The session was not known: the agent must send a full snapshot.
    pub new: bool,
    /// Counts the host's sessions. A stream whose session is no longer the
    /// host's latest (the agent restarted while the old stream lingered) is
    /// refused instead of writing against the new session's sequence.
    pub epoch: i64,
}

/// A host as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub identity: v1::HostIdentity,
    pub agent_version: String,
    pub capabilities: v1::Capabilities,
    pub last_seen_ms: i64,
    pub last_full_scan_ms: i64,
    pub processes_running: u32,
    pub last_scan: v1::ScanStats,
    pub sense: v1::SenseStats,
    /// The agent's health from its last heartbeat; None from agents that
    /// do not report it.
    pub health: Option<v1::AgentHealth>,
}

/// A workload instance on one host that has running processes.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRow {
    pub host: String,
    pub host_id: String,
    pub host_labels: std::collections::HashMap<String, String>,
    pub workload: v1::Workload,
    /// Running processes in it.
    pub processes: u32,
    /// The distinct privileges of those processes.
    pub privileges: Vec<v1::Privilege>,
}

/// The narrow interface the domain needs: SQL (or its equivalent) only.
/// What the data means (evidence ranking, merging a process's evidence
/// into one match, which path runs the matcher) lives above it, in
/// `fleet` and `advisories`, so a second backend implements storage and
/// nothing else; `conformance` is the contract it must pass.
///
/// Every method takes `&self`: a backend serves reads while one write
/// commits (SQLite from a pool of WAL readers). Writers are serialized by
/// the caller (`fleet::ingest::Ingest`). Every `apply` is one durable
/// transaction that also records the message's sequence number, so an ack
/// sent after it returns is never a lie, and a resent message is
/// recognised.
/// What every backend stores of a Hello's host, checked the same way:
/// the host's key (its host id, else its hostname), its capabilities
/// encoded and its labels as JSON.
pub(crate) struct HelloHost<'a> {
    pub id: &'a v1::HostIdentity,
    pub host_key: &'a String,
    pub caps: Vec<u8>,
    pub labels: String,
}

impl<'a> HelloHost<'a> {
    pub fn of(hello: &'a v1::Hello) -> Result<HelloHost<'a>> {
        use patchgap_proto::Message;
        let id = hello
            .host
            .as_ref()
            .ok_or_else(|| StoreError::Invalid("hello without host identity".into()))?;
        let host_key = if id.host_id.is_empty() {
            &id.hostname
        } else {
            &id.host_id
        };
        if host_key.is_empty() {
            return Err(StoreError::Invalid(
                "hello names neither a host id nor a hostname".into(),
            ));
        }
        Ok(HelloHost {
            id,
            host_key,
            caps: hello
                .capabilities
                .clone()
                .unwrap_or_default()
                .encode_to_vec(),
            labels: serde_json::to_string(&id.labels).unwrap_or_else(|_| "{}".into()),
        })
    }
}

pub trait Store: Send + Sync + 'static {
    /// Registers the host and session of a Hello.
    fn hello(&self, hello: &v1::Hello, now_ms: i64) -> Result<Session>;

    /// Applies one sequenced message of a session. Messages with a sequence
    /// number at or below the session's acked one are ignored (resends).
    fn apply(&self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()>;

    /// Applies heartbeats of different hosts (`msg.body` a heartbeat, no
    /// host twice), each as [`Store::apply`] would: a result per
    /// heartbeat, in order. A backend may write them together (one
    /// statement for the lot on PostgreSQL); this default applies them
    /// one by one.
    fn apply_heartbeats(
        &self,
        beats: &[(Session, v1::AgentMessage)],
        now_ms: i64,
    ) -> Vec<Result<()>> {
        beats
            .iter()
            .map(|(session, msg)| self.apply(session, msg, now_ms))
            .collect()
    }

    fn hosts(&self) -> Result<Vec<HostRow>>;

    /// Every host as [`Store::hosts`] gives it but with
    /// `processes_running` 0: what an answer's coverage needs, without
    /// counting every running process of the fleet.
    fn hosts_for_coverage(&self) -> Result<Vec<HostRow>>;

    /// Package rows whose name (by [`package_key`]) or source package is
    /// `name`, of every ecosystem and version: the caller filters.
    fn packages_named(&self, name: &PackageName<'_>) -> Result<Vec<(i64, v1::Package)>>;

    /// Package rows by id (ids that do not exist are left out).
    fn packages_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, v1::Package)>>;

    /// One page of the evidence that a process has one of `package_ids`:
    /// running processes, or with `window` = (since, until) ms every
    /// process that had it at any time in the window, exited ones included
    /// (with their exit time); the processes after `after` in cursor order,
    /// within `limit`. Memory and time are bounded by the page (and the
    /// packages' artifacts), not by the fleet.
    fn evidence_page(
        &self,
        package_ids: &[i64],
        window: Option<(i64, i64)>,
        after: Option<&ProcessCursor>,
        limit: PageLimit,
    ) -> Result<EvidencePage>;

    /// Every piece of evidence at once ([`Store::evidence_page`] without
    /// limits), process by process in cursor order.
    fn evidence(&self, package_ids: &[i64], window: Option<(i64, i64)>) -> Result<Vec<Evidence>> {
        let page = self.evidence_page(package_ids, window, None, PageLimit::ALL)?;
        Ok(page.processes.into_iter().flat_map(|(_, e)| e).collect())
    }

    /// Connections last seen at or after `since_ms`, optionally of one host.
    fn connections(&self, host: Option<&str>, since_ms: i64) -> Result<Vec<v1::ConnectionSummary>>;

    /// Workload instances with running processes, on every host.
    fn workloads(&self) -> Result<Vec<WorkloadRow>>;

    /// The rows of [`Store::workloads`] that are on the hosts named
    /// `hostnames` (host names, as `WorkloadRow::host`), in the same order,
    /// at the cost of those hosts' workloads and running processes, not
    /// the fleet's.
    fn workloads_on(&self, hostnames: &[String]) -> Result<Vec<WorkloadRow>>;

    /// Each host's inventory generation, as (hostname, host row, generation),
    /// for the hosts named `hostnames` or (None) every host, in hostname
    /// order. A host's generation moves in the same transaction as every
    /// stored snapshot, delta and Hello: whatever [`Store::workloads_on`]
    /// reads of a host (its processes, workloads, name and labels) changes
    /// only when its generation moves. A heartbeat does not move it.
    fn inventory_gens(&self, hostnames: Option<&[String]>) -> Result<Vec<(String, i64, i64)>>;

    /// When the workload instance `instance` (an agent's instance id) on
    /// the host `host` (hostname or host id) first ran a process, as far
    /// as the stored history holds, exited processes included: the
    /// earliest process start time; None when no process of it is stored.
    /// A container restarted in its pod keeps its instance's first start,
    /// so verification tells a new deploy from a restart by it.
    fn instance_first_start(&self, host: &str, instance: &str) -> Result<Option<i64>>;

    /// The host name stored for the host keyed `host_key` (its machine-id,
    /// else its name: see `fleet::coverage::host_key`), if it is stored.
    /// One indexed row: every mTLS Hello asks it.
    fn hostname_of_key(&self, host_key: &str) -> Result<Option<String>>;

    /// Running processes, optionally of one host (by hostname or host id):
    /// at most `limit` after `after`, in cursor order, each with its
    /// cursor.
    fn processes_page(
        &self,
        host: Option<&str>,
        after: Option<&ProcessCursor>,
        limit: usize,
    ) -> Result<Vec<(ProcessCursor, v1::ProcessSummary)>>;

    /// Every running process at once (tests, small fleets).
    fn processes(&self, host: Option<&str>) -> Result<Vec<v1::ProcessSummary>> {
        Ok(self
            .processes_page(host, None, usize::MAX)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Stores advisories in one transaction: each is added, replaces an
    /// older record of the same id, or is left out because the stored one
    /// is as new or newer. A record whose id is held from another
    /// [`Provenance::source`] (an empty stored source, from before schema
    /// 13, is no source) is left out as [`PutOutcome::OtherSource`]. With
    /// `replace`, neither the source nor `modified` holds a record back:
    /// it replaces the stored one unless both source and content hash are
    /// the same (`Unchanged`). Each stored record keeps the provenance it
    /// came with. Nothing is lost when one fails: the whole batch is
    /// refused. An added or updated record is stored pending (see
    /// [`Store::pending_advisories`]) in the same transaction, so a crash
    /// before its verdicts are written leaves it marked.
    fn put_advisories(
        &self,
        advisories: &[AdvisoryRecord],
        replace: bool,
    ) -> Result<Vec<PutOutcome>>;

    /// Removes the advisory of this id (not an alias) with its aliases,
    /// packages and verdicts, in one transaction. The record as it was
    /// stored (without `data`), or `None` when no advisory has this id.
    /// The advisories `rematch` names are marked pending in the same
    /// transaction (the matcher judged them beside the removed one).
    fn delete_advisory(&self, id: &str, rematch: &[String]) -> Result<Option<AdvisoryRecord>>;

    /// Up to `limit` advisories (ids, in order) stored or marked since
    /// their verdicts were last written: the matcher's work left undone,
    /// by an import in flight or one a crash interrupted.
    fn pending_advisories(&self, limit: usize) -> Result<Vec<String>>;

    /// The advisories an id or any alias (CVE, GHSA, PYSEC, GO, RUSTSEC,
    /// DSA...) names.
    fn advisory(&self, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>>;

    /// Every advisory, optionally only those affecting an ecosystem (a purl
    /// type). Without their `data`.
    fn advisories(&self, ecosystem: Option<&str>) -> Result<Vec<AdvisoryRecord>>;

    /// The (package, advisory) pairs whose ecosystem and name agree, for
    /// the matcher to test versions on: the packages not matched yet
    /// against every advisory, or every package against some advisories.
    fn match_candidates(&self, scope: &MatchScope) -> Result<Candidates>;

    /// Records what the matcher decided for `scope`'s candidates, in one
    /// transaction: `Unmatched` marks every package that was unmatched as
    /// matched; `Advisories` replaces those advisories' earlier matches
    /// and clears their pending mark.
    /// The caller serializes writers between `match_candidates` and this
    /// call.
    fn put_matches(&self, scope: &MatchScope, matches: &[AdvisoryMatch]) -> Result<()>;

    /// The stored verdicts of non-withdrawn advisories (only `advisories`,
    /// when given; fixed-by-distro ones only with `include_fixed`), ordered
    /// by advisory id.
    fn verdicts(&self, advisories: Option<&[String]>, include_fixed: bool) -> Result<Vec<Verdict>>;

    /// Attaches an SBOM to an image digest, replacing the image's earlier
    /// SBOM. Its components become packages (so advisories match them) and
    /// `declared` evidence for the processes of workloads running the image.
    fn put_sbom(&self, sbom: &SbomRecord) -> Result<PutOutcome>;

    /// The stored SBOMs (without their documents), optionally of one image.
    fn sboms(&self, image: Option<&str>) -> Result<Vec<SbomRecord>>;

    /// Appends one entry to the audit log, in its own transaction. The
    /// entry must extend the stored chain: its `seq` is one more than the
    /// last entry's and its `prev_hash` is that entry's `hash` (or, for the
    /// first entry, [`AUDIT_GENESIS`]); otherwise nothing is written and
    /// the error is `Invalid`. There is no method to update or delete an
    /// entry: the log is append-only through this trait.
    fn append_audit(&self, entry: &AuditEntry) -> Result<()>;

    /// The last entry's (seq, hash), if any.
    fn audit_head(&self) -> Result<Option<(i64, String)>>;

    /// Entries with `seq` above `after_seq` and `time_ms` at or above
    /// `since_ms`, in `seq` order, at most `limit`.
    fn audit_entries(&self, after_seq: i64, since_ms: i64, limit: usize)
    -> Result<Vec<AuditEntry>>;

    /// Appends a signed checkpoint (append-only, like the entries).
    fn append_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<()>;

    /// Every checkpoint, in `seq` order.
    fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>>;

    /// Records a token the collector issued (never the token itself).
    fn put_token(&self, token: &TokenRecord) -> Result<()>;

    /// Every token issued, newest first.
    fn tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Marks a token revoked at `now_ms` (a token already revoked keeps its
    /// first time). `None` when no token has this id.
    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Option<TokenRecord>>;

    /// Opens an incident under `dedup_key` with its first events (`seq`
    /// from 1) and their projection, in one transaction: when an open
    /// incident already holds the key, nothing is written and that
    /// incident comes back with `false`; else the new one (ids from 1)
    /// with `true`. Two callers racing on one key get one incident.
    fn open_incident(
        &self,
        dedup_key: &str,
        created_ms: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<(IncidentRecord, bool)>;

    /// Appends events to incident `id` and replaces its cached projection,
    /// in one transaction. The first event's `seq` must be one more than
    /// the stored last one and the rest follow on (else `Invalid` and
    /// nothing is written: another writer got there first, so the caller
    /// projects again). `Invalid` for an incident that does not exist.
    /// There is no method to change or remove an event.
    fn append_incident_events(
        &self,
        id: i64,
        events: &[IncidentEventRecord],
        cache: &IncidentCache<'_>,
    ) -> Result<IncidentRecord>;

    /// The incident with this id.
    fn incident(&self, id: i64) -> Result<Option<IncidentRecord>>;

    /// The open incident that holds this dedup key.
    fn open_incident_by_key(&self, dedup_key: &str) -> Result<Option<IncidentRecord>>;

    /// Incidents, newest first: those with an id below `before` (None:
    /// from the newest), only open ones with `open_only`, at most `limit`.
    fn incidents(
        &self,
        before: Option<i64>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>>;

    /// Incident `id`'s events with `seq` above `after_seq`, in order, at
    /// most `limit`.
    fn incident_events(
        &self,
        id: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<IncidentEventRecord>>;

    // ---- The outbox (see `outbox`): each call is one short transaction.

    /// Stores a delivery, due now, unless one with its `webhook_id` exists
    /// (then nothing changes and the answer is `false`).
    fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<bool>;

    /// Leases up to `limit` pending deliveries due at `now_ms` (not leased,
    /// or their lease ran out; their endpoint not disabled), oldest due
    /// first, until `now_ms + lease_ms`, and counts the attempt. A worker
    /// that dies leaves the lease to run out, and the delivery is claimed
    /// again.
    fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>>;

    /// Records an attempt's outcome and ends the lease. `Invalid` when the
    /// delivery does not exist or is not pending any more (recorded
    /// already).
    fn finish_delivery(&self, id: i64, now_ms: i64, outcome: &DeliveryOutcome) -> Result<()>;

    /// Deliveries, newest first: of incident `incident` (None: all), at
    /// most `limit`.
    fn deliveries(&self, incident: Option<i64>, limit: usize) -> Result<Vec<DeliveryRecord>>;

    /// Endpoints disabled (by a 410), by name.
    fn disabled_endpoints(&self) -> Result<Vec<DisabledEndpoint>>;

    /// Calls endpoint `name` again; `false` when it was not disabled.
    fn enable_endpoint(&self, name: &str) -> Result<bool>;
    // ---- Egress (issue 18): baselines and alerts as opaque documents ----

    /// Stores version `expected_version + 1` of the baseline `key` (0: the
    /// first), in one transaction; `Invalid` and nothing written when the
    /// stored version is not `expected_version` (another writer got there
    /// first, so the caller reloads). Versions are kept, the newest
    /// [`EGRESS_BASELINE_VERSIONS`] of each key.
    fn put_egress_baseline(
        &self,
        key: &str,
        expected_version: i64,
        updated_ms: i64,
        body: &str,
    ) -> Result<EgressBaselineRecord>;

    /// The newest version of baseline `key`, or of a given `version`.
    fn egress_baseline(
        &self,
        key: &str,
        version: Option<i64>,
    ) -> Result<Option<EgressBaselineRecord>>;

    /// The newest version of every baseline, by key.
    fn egress_baselines(&self) -> Result<Vec<EgressBaselineRecord>>;

    /// Records a sighting of the alert `dedup_key`: when no open alert
    /// holds the key, a new one (ids from 1) with `body`, `true`; else the
    /// open one with `last_seen_ms` raised, `count` added to and `body`
    /// replaced, `false`. One transaction; two callers racing on one key
    /// get one alert.
    fn upsert_egress_alert(
        &self,
        alert: &EgressAlertUpsert<'_>,
    ) -> Result<(EgressAlertRecord, bool)>;

    /// Resolves the open alerts last seen before `quiet_before_ms` (at
    /// `now_ms`), and returns them. A later sighting of the key opens a
    /// new alert.
    fn resolve_egress_alerts(
        &self,
        quiet_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<EgressAlertRecord>>;

    /// The process `key` on host row `host` (a session's), with its
    /// ancestors on that host by ppid (parent first, at most `depth` in
    /// all), its packages with their evidence, and its workload: what an
    /// egress verdict needs to know about the process that connected.
    /// The running process with the key is preferred, else the latest.
    fn process_chain(
        &self,
        host: i64,
        key: &v1::ProcessKey,
        depth: usize,
    ) -> Result<Option<ProcessChain>>;

    /// The open alert that holds this dedup key.
    fn open_egress_alert(&self, dedup_key: &str) -> Result<Option<EgressAlertRecord>>;

    /// The alert with this id.
    fn egress_alert(&self, id: i64) -> Result<Option<EgressAlertRecord>>;

    /// Alerts last seen at or after `since_ms`, newest first (by last
    /// sighting, then id), at most `limit`.
    fn egress_alerts(&self, since_ms: i64, limit: usize) -> Result<Vec<EgressAlertRecord>>;

    // ---- Package changes (issue 18, `fleet::changes`) ----

    /// Workload instances (of every host) last reported at or after
    /// `seen_since_ms`, running or gone, newest first, at most `limit`:
    /// what a rollout leaves behind is still named. `processes` and
    /// `privileges` are left empty.
    fn workload_instances(&self, seen_since_ms: i64, limit: usize) -> Result<Vec<WorkloadRow>>;

    /// The packages the processes of workload instance (`host_id`,
    /// `workload`) held in history intervals that end at or after
    /// `after_ms` or go on: per package, the earliest start, the latest
    /// end (None while a running process holds it), the strongest
    /// evidence and how many processes; at most `limit` packages, by
    /// package row. Exited processes count.
    fn workload_package_spans(
        &self,
        host_id: &str,
        workload: &str,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<PackageSpan>>;

    /// The guard of a background pass that must run once across all the
    /// collectors of this database (the matching pass, incident refresh,
    /// verification; see `singleton`), or None while another guard for
    /// `name` lives: the caller skips its pass. Never blocks.
    fn try_singleton(&self, name: &str) -> Result<Option<Singleton<'_>>>;

    // ---- History retention (issue 19, `crate::retention`) ----

    /// One bounded batch of retention, in one short transaction: deletes
    /// up to `limit` exited processes whose exit is before `before_ms`
    /// (oldest first, with their intervals, sockets and connections), and
    /// up to `limit` each of closed intervals and connections that ended
    /// before it and of workload instances last reported before it with
    /// no process left. The artifact sets the deleted rows pointed at
    /// become candidates for [`Store::compact_history`]. Running processes
    /// and their open intervals are never deleted.
    fn prune_history(&self, before_ms: i64, limit: usize) -> Result<PruneStep>;

    /// Checks up to `limit` of the artifact sets that pruning left behind,
    /// and deletes those nothing references any more, with their members
    /// and the artifacts no set holds any more, in one short transaction;
    /// how many sets were checked. 0: nothing left to compact.
    fn compact_history(&self, limit: usize) -> Result<u64>;

    /// The exit time of the `nth` oldest exited process (from 1), or of
    /// the newest when fewer are stored; None when none is. A size bound
    /// prunes up to it, so the oldest history goes first.
    fn history_cutoff(&self, nth: usize) -> Result<Option<i64>>;

    /// How much room the database takes.
    fn storage_use(&self) -> Result<StorageUse>;

    /// Hands up to `max_bytes` of free space back to the file system
    /// where the backend can do so in a bounded step (SQLite with
    /// `auto_vacuum=incremental`), and returns how many bytes; 0 when it
    /// cannot (PostgreSQL reuses the space, and autovacuum owns it).
    fn reclaim(&self, max_bytes: u64) -> Result<u64>;

    /// On a clean stop: folds what the backend keeps beside its file into
    /// it (SQLite's WAL, truncated to nothing), so the file alone is whole
    /// and its size is what the store takes. Nothing for PostgreSQL.
    fn flush(&self) -> Result<()>;

    /// How many agent messages of different hosts this backend can store
    /// at once (`Ingest` keeps a host's messages one at a time). 1, the
    /// default, serialises every write: SQLite has one writer.
    fn parallel_writes(&self) -> usize {
        1
    }

    /// Records that history before `horizon_ms` was dropped (at `now_ms`).
    /// The stored horizon only moves forward.
    fn set_retention_horizon(&self, horizon_ms: i64, now_ms: i64) -> Result<()>;

    /// The retention horizon: history before it was dropped. None while
    /// retention never dropped anything.
    fn retention_horizon(&self) -> Result<Option<i64>>;
}

/// When one workload instance held one package (see
/// [`Store::workload_package_spans`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PackageSpan {
    pub package: v1::Package,
    /// The strongest evidence of any interval: "exe", "mapped",
    /// "opened", "embedded", "installed".
    pub evidence: String,
    pub first_ms: i64,
    /// None while a running process holds it.
    pub last_ms: Option<i64>,
    pub processes: u32,
}

/// A process and its ancestors (see [`Store::process_chain`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessChain {
    pub hostname: String,
    /// The process first, then its parent, and so on.
    pub links: Vec<ChainLink>,
    /// The first process's packages, each with its strongest evidence
    /// ("mapped", "opened", "installed", …).
    pub packages: Vec<(v1::Package, String)>,
    /// The first process's workload, when the store has it.
    pub workload: Option<v1::Workload>,
}

/// One process of a [`ProcessChain`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChainLink {
    pub pid: u32,
    pub start_ticks: u64,
    pub start_time_ms: i64,
    pub exe: Vec<u8>,
    pub cmdline: String,
    pub workload: String,
    pub privilege: v1::Privilege,
}

/// Baseline versions kept per key.
pub const EGRESS_BASELINE_VERSIONS: i64 = 32;

/// One version of a workload's egress baseline. `body` is the domain's
/// document (`egress::baseline::Baseline` as JSON); the store never reads
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressBaselineRecord {
    pub key: String,
    pub version: i64,
    pub updated_ms: i64,
    pub body: String,
}

/// An egress alert as the store keeps it: its identity and counters, and
/// the domain's document (`egress::alert::Alert` as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressAlertRecord {
    pub id: i64,
    pub dedup_key: String,
    pub workload: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: i64,
    /// None while open.
    pub resolved_ms: Option<i64>,
    pub body: String,
}

/// A sighting for [`Store::upsert_egress_alert`].
#[derive(Debug, Clone, Copy)]
pub struct EgressAlertUpsert<'a> {
    pub dedup_key: &'a str,
    pub workload: &'a str,
    pub seen_ms: i64,
    pub count: i64,
    pub body: &'a str,
}

/// An incident as the store keeps it: its identity, and what the domain
/// cached with its last event (the state for listings, and the projection
/// of its log). The store never reads the projection; the log
/// (`incident_events`) is the truth and `response::incident` derives
/// everything from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncidentRecord {
    pub id: i64,
    pub dedup_key: String,
    pub created_ms: i64,
    /// The state's name, as the domain spells it.
    pub state: String,
    /// Not closed and not a false positive: only one open incident holds
    /// a dedup key at a time.
    pub open: bool,
    /// The `seq` of its last event.
    pub last_seq: i64,
    /// The `at_ms` of its last event.
    pub updated_ms: i64,
    /// The projection as of `last_seq`, in the domain's encoding.
    pub projection: Vec<u8>,
}

/// One event of an incident's append-only log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncidentEventRecord {
    /// From 1, without gaps, per incident.
    pub seq: i64,
    pub at_ms: i64,
    /// Who: a token's subject, `anonymous`, or `collector` for the
    /// collector's own refreshes.
    pub actor: String,
    /// The event's kind (`opened`, `scope_changed`, ...).
    pub kind: String,
    /// The event as JSON.
    pub payload: String,
}

/// What the domain caches on the incident row beside the events it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentCache<'a> {
    pub state: &'a str,
    pub open: bool,
    pub projection: &'a [u8],
}

/// The `prev_hash` of the first audit entry: 64 zeros.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit log, as stored. `hash` is the SHA-256 (hex) of
/// the entry's canonical encoding, `prev_hash` included (see
/// `crate::audit`); `seq` numbers the entries from 1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEntry {
    pub seq: i64,
    pub time_ms: i64,
    /// Who called: a token's subject, or `anonymous` when tokens are off.
    pub subject: String,
    /// The caller's scopes, comma-separated.
    pub scopes: String,
    /// The caller's address.
    pub peer: String,
    /// The RPC, such as `Query/FindPackage`.
    pub method: String,
    /// The arguments, with secrets left out (never a token).
    pub args: String,
    /// `ok` and a short summary, or the status code and its message.
    pub result: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A signed statement that the log's entry `seq` had `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub time_ms: i64,
    /// A PASETO v4.public token whose payload is the checkpoint, signed
    /// with the collector's key.
    pub signature: String,
}

/// A token the collector issued, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRecord {
    /// The token's `jti`.
    pub id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// The subject that issued it (`local` for the collector's own CLI).
    pub issued_by: String,
    /// 0 while not revoked.
    pub revoked_ms: i64,
}

/// Which packages and advisories the matcher evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchScope {
    /// Packages stored since the last pass (new inventory), against every
    /// advisory.
    Unmatched,
    /// These advisories (by id), against every package.
    Advisories(Vec<String>),
    /// These packages (by id), against every advisory. A pass over
    /// `Unmatched` records its verdicts with the packages it read
    /// ([`Candidates::packages`]), so it never marks matched a package
    /// another collector committed after that read (it would be left
    /// without verdicts).
    Packages(Vec<i64>),
}

/// What `match_candidates` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// For `Unmatched`: how many packages were unmatched (0 means there is
    /// nothing to record); for `Advisories`: how many advisories.
    pub scope_size: usize,
    pub pairs: Vec<MatchCandidate>,
    /// For `Unmatched` and `Packages`: the ids of the packages read.
    pub packages: Vec<i64>,
}

/// A package that an advisory names (same ecosystem, and a name or source
/// that agrees); the matcher decides on the version.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchCandidate {
    pub package_id: i64,
    /// With its distro identity, if any.
    pub package: v1::Package,
    pub advisory_id: String,
}

/// The matcher's verdict on one package and advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryMatch {
    pub advisory_id: String,
    pub package_id: i64,
    /// "affected" or "fixed-by-distro".
    pub status: String,
}

/// An SBOM attached to an image, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SbomRecord {
    /// The image digest, "sha256:" and 64 lowercase hex digits.
    pub image: String,
    /// The file name it was pushed as.
    pub name: String,
    /// sha256 of the document, hex.
    pub sha256: String,
    /// "cyclonedx" or "spdx", the syntax ("json", "xml", "tag-value") and
    /// the spec version.
    pub format: String,
    pub syntax: String,
    pub spec_version: String,
    /// Tools that wrote it, "name version", comma-separated.
    pub tools: String,
    /// Every component in the document, and the dependency edges.
    pub components: u32,
    pub edges: u32,
    /// The components stored as packages: those with a purl of an
    /// ecosystem patchgap matches.
    pub packages: Vec<DeclaredPackage>,
    pub pushed_ms: i64,
    /// Who pushed it, from where, and the document's hash.
    pub provenance: Provenance,
    /// The document as pushed; empty when listed.
    pub data: Vec<u8>,
}

/// Who imported a stored advisory or SBOM, when, from which source, and
/// the SHA-256 of the record's bytes as imported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    /// The token's subject; `anonymous` when tokens are off and none was
    /// sent, `local` for the collector's own process.
    pub imported_by: String,
    pub imported_ms: i64,
    /// The name the import gave its source (`--source osv-pypa`), or the
    /// import path's base name; empty for records stored before schema 13.
    pub source: String,
    /// SHA-256 of the record's bytes (the advisory file or SBOM document),
    /// lowercase hex.
    pub sha256: String,
}

/// One component of an SBOM as a package.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeclaredPackage {
    pub package: v1::Package,
    /// The component's id in the document (bom-ref, SPDXID).
    pub reference: String,
    /// The shortest chain that brought it in, from the root or a top-level
    /// component to the component itself ("name@version" each); empty when
    /// the document has no dependency graph for it.
    pub pulled_in_by: Vec<String>,
    /// When listed: the advisories that affect it (fixed-by-distro left
    /// out). Ignored by `put_sbom`.
    pub advisories: Vec<String>,
}

/// An OSV advisory as the store keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdvisoryRecord {
    pub id: String,
    /// OSV `modified`, as published, and in ms since the epoch.
    pub modified: String,
    pub modified_ms: i64,
    /// OSV `withdrawn`, when set.
    pub withdrawn: Option<String>,
    /// Sorted, without the id itself.
    pub aliases: Vec<String>,
    pub summary: String,
    /// "CRITICAL", "HIGH", "MEDIUM", "LOW", or empty when unknown.
    pub severity: String,
    pub score: Option<f64>,
    /// The CVSS vector the score comes from.
    pub vector: String,
    /// (purl type, OSV ecosystem, name) of each affected package.
    pub packages: Vec<(String, String, String)>,
    /// Where it was imported from (a file name).
    pub source: String,
    /// Who imported it, when, from which named source, and its hash.
    pub provenance: Provenance,
    /// The advisory as canonical JSON.
    pub data: Vec<u8>,
}

/// `modified` of 0001-01-01T00:00:00Z in ms: what golang/vulndb writes in
/// every record. With it, `modified` says nothing, so a record with this
/// time and other content replaces the stored one.
pub const UNKNOWN_MODIFIED_MS: i64 = -62_135_596_800_000;

/// What `put_advisories` did with one advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Added,
    /// A newer `modified` replaced the stored record.
    Updated,
    /// The same `modified` was already stored.
    Unchanged,
    /// The stored record is newer: this one was left out.
    Older,
    /// The id is held from another source: left out (without `replace`).
    OtherSource,
}
