//! The storage boundary. The collector's services talk to a [`Store`]; the
//! SQLite backend (`sqlite`) is the default, and PostgreSQL will come in
//! behind the same trait.
//!
//! The store takes and returns patchgap.v1 messages as plain data. It knows
//! nothing of gRPC, streams or statuses.

use patchgap_proto::v1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
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
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("this agent session was superseded by a newer session of the same host")]
    Superseded,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What `find_package` looks for.
pub struct PackageQuery<'a> {
    /// Compared by [`package_key`]; a deb or rpm source package name also
    /// matches.
    pub name: &'a str,
    /// Only packages of this ecosystem (a purl type), when set.
    pub ecosystem: Option<&'a str>,
    /// Only packages with this source (a Maven groupId from a purl).
    pub source: Option<&'a str>,
    /// Whether a package's version qualifies: (ecosystem, version).
    pub version_ok: &'a dyn Fn(&str, &str) -> bool,
    /// (since, until) ms: every process that had the package at any time in
    /// the window, exited ones included. None: the running processes.
    pub window: Option<(i64, i64)>,
}

/// The name as queries compare it: lowercase, and for PyPI normalized as
/// PEP 503 says (runs of `-`, `_` and `.` are one `-`), so `PyYAML`,
/// `pyyaml` and `zope.interface` / `zope-interface` find their packages.
pub fn package_key(ecosystem: &str, name: &str) -> String {
    if ecosystem == "pypi" {
        pep503(name)
    } else {
        name.to_lowercase()
    }
}

/// How strongly a match's evidence shows the process uses the package: the
/// executable itself, a mapping, a module compiled in, an open, and last a
/// package merely installed where the process would find it.
pub fn evidence_rank(evidence: &str) -> u8 {
    match evidence {
        "exe" => 5,
        "mapped" => 4,
        "embedded" => 3,
        "opened" => 2,
        "installed" => 1,
        // "declared": an image SBOM lists it; nothing on the host shows it.
        _ => 0,
    }
}

/// Evidence that the process loaded the package, as `--evidence loaded`
/// means it: everything but "installed".
pub fn evidence_loaded(evidence: &str) -> bool {
    matches!(evidence, "exe" | "mapped" | "embedded" | "opened")
}

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

/// The narrow interface the services need. Every `apply` is one durable
/// transaction that also records the message's sequence number, so an ack
/// sent after it returns is never a lie, and a resent message is recognised.
pub trait Store: Send + 'static {
    /// Registers the host and session of a Hello.
    fn hello(&mut self, hello: &v1::Hello, now_ms: i64) -> Result<Session>;

    /// Applies one sequenced message of a session. Messages with a sequence
    /// number at or below the session's acked one are ignored (resends).
    fn apply(&mut self, session: &Session, msg: &v1::AgentMessage, now_ms: i64) -> Result<()>;

    fn hosts(&mut self) -> Result<Vec<HostRow>>;

    /// Processes that have a package whose binary or source name is `name`
    /// and whose version satisfies `version_ok`: running ones, or with
    /// `window` = (since, until) ms, every process that had it at any time in
    /// that window, exited ones included (with their exit time).
    fn find_package(&mut self, query: &PackageQuery<'_>) -> Result<Vec<v1::Match>>;

    /// Connections last seen at or after `since_ms`, optionally of one host.
    fn connections(
        &mut self,
        host: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<v1::ConnectionSummary>>;

    /// Workload instances with running processes, on every host.
    fn workloads(&mut self) -> Result<Vec<WorkloadRow>>;

    /// Running processes, optionally of one host (by hostname or host id).
    fn processes(&mut self, host: Option<&str>) -> Result<Vec<v1::ProcessSummary>>;

    /// Stores advisories in one transaction: each is added, replaces an
    /// older record of the same id, or is left out because the stored one
    /// is as new or newer. Nothing is lost when one fails: the whole batch
    /// is refused.
    fn put_advisories(&mut self, advisories: &[AdvisoryRecord]) -> Result<Vec<PutOutcome>>;

    /// The advisories an id or any alias (CVE, GHSA, PYSEC, GO, RUSTSEC,
    /// DSA...) names.
    fn advisory(&mut self, id_or_alias: &str) -> Result<Vec<AdvisoryRecord>>;

    /// Every advisory, optionally only those affecting an ecosystem (a purl
    /// type). Without their `data`.
    fn advisories(&mut self, ecosystem: Option<&str>) -> Result<Vec<AdvisoryRecord>>;

    /// The (package, advisory) pairs whose ecosystem and name agree, for
    /// the matcher to test versions on: the packages not matched yet
    /// against every advisory, or every package against some advisories.
    fn match_candidates(&mut self, scope: &MatchScope) -> Result<Candidates>;

    /// Records what the matcher decided for `scope`'s candidates, in one
    /// transaction: `Unmatched` marks every package that was unmatched as
    /// matched; `Advisories` replaces those advisories' earlier matches.
    /// The caller holds the store between `match_candidates` and this call.
    fn put_matches(&mut self, scope: &MatchScope, matches: &[AdvisoryMatch]) -> Result<()>;

    /// The processes with a package an advisory affects (as recorded by
    /// `put_matches`), one `Match` per process, package and advisory, with
    /// `advisory`, `severity` and `status` set; packages an image SBOM
    /// declares are found through the workloads running that image.
    fn findings(&mut self, query: &FindingsQuery) -> Result<Vec<v1::Match>>;

    /// Attaches an SBOM to an image digest, replacing the image's earlier
    /// SBOM. Its components become packages (so advisories match them) and
    /// `declared` evidence for the processes of workloads running the image.
    fn put_sbom(&mut self, sbom: &SbomRecord) -> Result<PutOutcome>;

    /// The stored SBOMs (without their documents), optionally of one image.
    fn sboms(&mut self, image: Option<&str>) -> Result<Vec<SbomRecord>>;
}

/// Which packages and advisories the matcher evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchScope {
    /// Packages stored since the last pass (new inventory), against every
    /// advisory.
    Unmatched,
    /// These advisories (by id), against every package.
    Advisories(Vec<String>),
}

/// What `match_candidates` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// For `Unmatched`: how many packages were unmatched (0 means there is
    /// nothing to record); for `Advisories`: how many advisories.
    pub scope_size: usize,
    pub pairs: Vec<MatchCandidate>,
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

/// What `findings` looks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingsQuery {
    /// Only these advisories (ids); None for every one.
    pub advisories: Option<Vec<String>>,
    /// (since, until) ms, as in [`PackageQuery::window`]; None: running
    /// processes.
    pub window: Option<(i64, i64)>,
    /// Include matches a distro backport fixed.
    pub include_fixed: bool,
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
    /// The document as pushed; empty when listed.
    pub data: Vec<u8>,
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
}
