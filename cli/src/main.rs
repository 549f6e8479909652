//! `patchgap`: the responder CLI. It queries a collector over gRPC, and
//! `patchgap up` runs a collector and a local agent in one process.

mod advisories;
mod deliveries;
mod egress;
mod gate;
mod pages;
mod pki;
mod render;
#[cfg(test)]
mod snapshots;
mod verify;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use patchgap_collector::{CollectorConfig, advisories::version::parse_query, ecosystem::Ecosystem};
use patchgap_proto::v1::{self, query_client::QueryClient};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// A Query client that sends the caller's bearer token, if any.
type Client = QueryClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[derive(Parser)]
#[command(
    name = "patchgap",
    version,
    about = "Which hosts and workloads run package X right now, with proof"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every read command takes.
#[derive(clap::Args, Clone)]
struct ReadOpts {
    /// The collector to ask.
    #[arg(
        long,
        env = "PATCHGAP_COLLECTOR",
        default_value = "127.0.0.1:7373",
        global = true
    )]
    collector: String,
    /// The CA that signed the collector's certificate (PEM), for an
    /// https:// collector. A bare HOST:PORT is https:// when it is given.
    #[arg(long, env = "PATCHGAP_CA", global = true)]
    ca: Option<PathBuf>,
    /// A client certificate (`patchgap pki issue cli --name NAME`), for
    /// collectors that ask for one.
    #[arg(long, env = "PATCHGAP_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "PATCHGAP_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// A file holding the bearer token to send (else PATCHGAP_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// How long to wait for the collector on each call (connect, and
    /// each request or page): 30s, 2m, ...
    #[arg(
        long,
        global = true,
        default_value = "30s",
        value_parser = parse_timeout
    )]
    timeout: Duration,
}

/// Paging of a large answer.
#[derive(clap::Args, Clone, Default)]
struct PageOpts {
    /// Print at most this many processes (with all their rows), then the
    /// --page-token to continue with; without it every page is fetched.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: Option<u32>,
    /// Continue where an earlier --limit stopped (the token it printed,
    /// with the same command and filters).
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = patchgap_collector::auth::parse_ttl(s)?;
    if d.is_zero() {
        return Err("the timeout must be at least 1s".into());
    }
    Ok(d)
}

/// Filters on workloads.
#[derive(clap::Args, Clone, Default)]
struct FilterOpts {
    /// Only this Kubernetes namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only hosts with this "cluster" label.
    #[arg(long)]
    cluster: Option<String>,
    /// Only workloads with this data classification, such as sensitive.
    #[arg(long)]
    scope: Option<String>,
    /// Only workloads with a privileged process (root with CAP_SYS_ADMIN,
    /// every capability, or root in the host's pid or network namespace).
    #[arg(long)]
    privileged: bool,
}

impl FilterOpts {
    fn to_proto(&self) -> v1::WorkloadFilter {
        v1::WorkloadFilter {
            namespace: self.namespace.clone().unwrap_or_default(),
            cluster: self.cluster.clone().unwrap_or_default(),
            scope: self.scope.clone().unwrap_or_default(),
            privileged: self.privileged,
        }
    }
}

/// `patchgap gate` commands.
#[derive(Subcommand)]
enum GateCommand {
    /// The verdict for one image.
    ///
    /// Example: patchgap gate check --image sha256:4f67c834… -o json
    Check {
        /// The image digest (sha256:…), or a reference that pins one
        /// (NAME@sha256:…). A tag alone is judged per the policy.
        #[arg(long)]
        image: String,
        /// The namespace it goes to, so frozen namespaces count too.
        #[arg(long)]
        namespace: Option<String>,
        /// The image's SBOM (CycloneDX or SPDX, as `sbom push` takes),
        /// judged with the stored one and not stored.
        #[arg(long, value_name = "FILE")]
        sbom: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    /// JUnit XML: `gate check` only.
    Junit,
    /// Graphviz DOT: only `incident graph` draws it; other commands print
    /// their table.
    Dot,
}

/// Options of every `pki` command.
#[derive(clap::Args, Clone)]
struct PkiOpts {
    /// The PKI directory (made 0700; keys in it are 0600).
    #[arg(long, default_value = "pki")]
    dir: PathBuf,
    /// Days the certificate is valid.
    #[arg(long)]
    days: Option<u32>,
    /// Replace an existing key and certificate (the old ones stop working
    /// once the other side reloads).
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Make a CA: DIR/ca.crt and DIR/ca.key (valid 10 years by default).
    Init {
        #[command(flatten)]
        opts: PkiOpts,
    },
    /// Issue a key and a certificate signed by DIR's CA (valid 1 year by default).
    #[command(subcommand)]
    Issue(PkiIssue),
}

#[derive(Subcommand)]
enum PkiIssue {
    /// The collector's server certificate: DIR/collector.crt and .key.
    ///
    /// Example: patchgap pki issue collector --dir pki --san collector.example,10.0.0.5
    Collector {
        /// DNS names and IP addresses agents and clients reach it by.
        #[arg(long, value_delimiter = ',', required = true)]
        san: Vec<String>,
        #[command(flatten)]
        opts: PkiOpts,
    },
    /// An agent's certificate: DIR/agent-HOST.crt and .key. The host name is
    /// its CN and its URI SAN urn:patchgap:agent:HOST; the collector takes
    /// its Hello only for HOST.
    Agent {
        /// The host name, as the agent reports it (`hostname`).
        #[arg(long)]
        host: String,
        #[command(flatten)]
        opts: PkiOpts,
    },
    /// A CLI client certificate: DIR/cli-NAME.crt and .key (CN NAME, URI SAN
    /// urn:patchgap:cli:NAME). It can query, never ingest.
    Cli {
        /// Who holds it.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        opts: PkiOpts,
    },
}

#[derive(Subcommand)]
enum AdvisoriesCommand {
    /// Import OSV advisories from a file, a directory tree (*.json, *.yaml,
    /// *.yml) or a zip of OSV JSON. Re-importing changes nothing; a newer
    /// `modified` replaces the stored record. Each record keeps who
    /// imported it, when, from which source, and its SHA-256; a record
    /// whose id is held from another source is refused (the others are
    /// imported) unless --replace. Needs the `advisories` scope.
    Import {
        path: PathBuf,
        /// The source's name, kept with each record (such as osv-pypa);
        /// `unnamed` when left out. Name your feeds: a record held from a
        /// named source is refused from any other.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Replace the stored records of these ids whatever their source,
        /// even with an older `modified`: restores a genuine source.
        #[arg(long)]
        replace: bool,
    },
    /// Remove one advisory by its id (not an alias), with its findings.
    /// Needs the `advisories` scope; audited.
    Delete { id: String },
    /// List the stored advisories.
    List {
        /// Only those affecting this ecosystem.
        #[arg(long, value_parser = ecosystems())]
        ecosystem: Option<String>,
    },
    /// One advisory, by its id or any alias (CVE, GHSA, PYSEC, GO, RUSTSEC, DSA).
    Show { id: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a token signed by the collector's key (needs `admin`). The
    /// token is printed once; the collector keeps only its id.
    ///
    /// Example: patchgap token issue --subject ci --scope read,ingest-sbom --ttl 2h
    Issue {
        /// Who the token is for.
        #[arg(long)]
        subject: String,
        /// Comma-separated: read, ingest-sbom, advisories, respond, approve, admin.
        #[arg(long)]
        scope: String,
        /// Its lifetime (90s, 30m, 1h, 1d); the collector's default when left out.
        #[arg(long, value_parser = patchgap_collector::auth::parse_ttl)]
        ttl: Option<Duration>,
    },
    /// The tokens issued, with their expiry and revocation.
    List,
    /// Revoke a token by its id: every later call with it is refused.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Have the collector recompute the audit log's hash chain and check
    /// its signed checkpoints. Exit 0 when intact, 4 when broken (the first
    /// entry edited, deleted or reordered is named), 1 on errors.
    Verify,
    /// Show the audit log.
    Tail {
        /// Only entries since T (RFC 3339, or a duration ago such as 10m).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// At most this many entries (the latest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a response policy file without a collector: every problem is
    /// printed as FILE:LINE:COLUMN: REASON (exit 1); a good file prints
    /// its tiers, rules and actions, and warnings such as an expired
    /// exception (exit 0). `-o json` prints the policy as the collector
    /// reads it.
    ///
    /// Examples:
    ///   patchgap policy check /etc/patchgap/policy.toml
    ///   patchgap policy check packaging/policy.example.toml -o json
    Check {
        file: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum SbomCommand {
    /// Attach an SBOM (CycloneDX JSON or XML, SPDX JSON or tag-value) to an
    /// image digest. Its components become `declared` evidence for every
    /// workload running that image, and advisories are matched against them.
    ///
    /// Example: patchgap sbom push --image sha256:4f67c834… trainer.cdx.json
    Push {
        /// The image's digest or id: sha256: and 64 hex digits.
        #[arg(long)]
        image: String,
        file: PathBuf,
        /// The source's name, kept as the SBOM's provenance; the file's
        /// base name when left out.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
    /// List the SBOMs attached to images.
    List {
        /// Only this image's.
        #[arg(long)]
        image: Option<String>,
    },
}

#[derive(Subcommand)]
enum IncidentCommand {
    /// Open an incident for an advisory's or a package range's exposure:
    /// its scope (workloads, hosts, image digests, pids, data scope,
    /// privilege, evidence) is computed now and kept current by the
    /// collector. The same advisory (and host) or package range opens
    /// one incident: again, it prints "already open: ID". Needs the
    /// `respond` scope.
    ///
    /// Examples:
    ///   patchgap incident open --advisory CVE-2023-5752
    ///   patchgap incident open --advisory GHSA-mq26-g339-26xf --host web-1 -o json
    ///   patchgap incident open --package 'libssl3@<3.0.13'
    ///   patchgap incident open --package pkg:pypi/pip@23.0.1
    ///   patchgap incident open --alert 12
    Open {
        /// An advisory id or any alias (CVE, GHSA, PYSEC, GO, RUSTSEC, DSA).
        #[arg(
            long,
            required_unless_present_any = ["package", "alert"],
            conflicts_with_all = ["package", "alert"]
        )]
        advisory: Option<String>,
        /// With --advisory: only this host (hostname or host id).
        #[arg(long, requires = "advisory")]
        host: Option<String>,
        /// NAME[@RANGE] or a purl (its version is a range of one).
        #[arg(long, value_name = "PURL_OR_NAME@RANGE", conflicts_with = "alert")]
        package: Option<String>,
        /// An egress alert's id (`patchgap alerts`): the incident is
        /// scoped to the alert's workload, every replica of it.
        #[arg(long, value_name = "ID")]
        alert: Option<String>,
    },
    /// One incident with its scope, tier, the policy in force (a failed
    /// reload said first), its plan's hash, its actions (state, times,
    /// what they blocked) and its event log (who did what, when).
    ///
    /// Example: patchgap incident show INC-3 -o json
    Show {
        /// INC-<n>, or n.
        id: String,
    },
    /// What the response policy would do about the incident now: its
    /// tier, then per action its mode, approval and revert_after, its
    /// exact targets (host, workload, cgroup, the exposed pids of how many
    /// processes share the cgroup, other workloads in it) and what the
    /// guards leave out. A plan that differs from the last one is recorded
    /// in the incident's log; its hash is what `incident approve` takes.
    /// Needs the `respond` scope.
    ///
    /// Example: patchgap incident plan INC-7 -o json
    Plan {
        /// INC-<n>, or n.
        id: String,
    },
    /// Approve one plan, by its hash: the actions that wait for approval
    /// are requested. A plan that changed since it was printed (the scope
    /// or the policy moved) is refused: the new plan is printed to review
    /// and the exit is 1. Needs the `approve` scope.
    ///
    /// Example: patchgap incident approve INC-7 --plan 3f2a9c…
    Approve {
        /// INC-<n>, or n.
        id: String,
        /// The plan's hash, as `patchgap incident plan` printed it.
        #[arg(long, value_name = "HASH")]
        plan: String,
    },
    /// Lift one action, or every action in force, and say why (kept in the
    /// incident's log). The revert is an action too: the agents lift it and
    /// `incident show` says when that was seen. Needs the `respond` scope.
    ///
    /// Examples:
    ///   patchgap incident revert INC-7 --reason false-positive
    ///   patchgap incident revert INC-7 --action 2 --reason resolved
    Revert {
        /// INC-<n>, or n.
        id: String,
        /// Only this action (its number in `incident show`); every action
        /// in force when left out.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        action: Option<u32>,
        /// Why: false-positive (the incident was wrong), not-affected (the
        /// targets do not run the affected code), resolved (fixed).
        #[arg(long, value_enum)]
        reason: RevertReason,
    },
    /// Close an incident without converged evidence. An incident closes by
    /// itself once its checks succeed K runs in a row and its containment
    /// is lifted; this is for when that cannot happen. Whatever is in
    /// force is lifted; the close is audited and counts as "closed
    /// without evidence". Needs the `respond` scope.
    ///
    /// Example: patchgap incident close INC-7 --force --reason "host rebuilt from a clean image"
    Close {
        /// INC-<n>, or n.
        id: String,
        /// Required: closing is only ever forced from the command line.
        #[arg(long, required = true)]
        force: bool,
        /// Why it closes without evidence (kept in the incident's log).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// The signed evidence of the incident (a DSSE envelope around an
    /// in-toto Statement): its checks with their queries, results and
    /// coverage, its timeline, its actions and their verified effects,
    /// and the policy in force. `patchgap evidence verify` checks it.
    ///
    /// Example: patchgap incident evidence INC-7 > bundle.json
    Evidence {
        /// INC-<n>, or n.
        id: String,
    },
    /// The incident's exposure graph: advisory → package@version → the
    /// chain that pulled it in → image digest (with its provenance
    /// labels) → workload → host → data scope and writes_to, each node
    /// exposed, contained or converged. `-o dot` draws it for Graphviz.
    ///
    /// Examples:
    ///   patchgap incident graph INC-7 -o json
    ///   patchgap incident graph INC-7 -o dot | dot -Tsvg > inc-7.svg
    Graph {
        /// INC-<n>, or n.
        id: String,
    },
}

/// `patchgap evidence`.
#[derive(Subcommand)]
enum EvidenceCommand {
    /// Verify an evidence bundle offline: the DSSE signature over the
    /// in-toto Statement (one changed byte fails it). Exit 1 when it does
    /// not verify.
    ///
    /// Example: patchgap evidence verify bundle.json --key ed25519:3b6a…
    Verify {
        /// The bundle, as `patchgap incident evidence` wrote it.
        file: PathBuf,
        /// The collector's key (`ed25519:<hex>` as `incident evidence`
        /// prints it on stderr): required to have signed it. Without it,
        /// the key the bundle names is used.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
}

/// `patchgap hosts` subcommands.
#[derive(Subcommand)]
enum HostsCommand {
    /// A host decommissioned on purpose: every open incident stops asking
    /// for its reports (an audited `host_retired` event each), so a
    /// silent retired host no longer keeps an incident inconclusive.
    /// Needs the `respond` scope.
    ///
    /// Example: patchgap hosts retire web-3 --reason "decommissioned, CHG-1234"
    Retire {
        /// The host's name as `patchgap hosts` shows it.
        name: String,
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
}

/// Why a responder lifts a containment; sent as its name.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum RevertReason {
    FalsePositive,
    NotAffected,
    Resolved,
}

impl RevertReason {
    /// The name the collector takes: false-positive, not-affected, resolved.
    fn as_str(self) -> &'static str {
        match self {
            RevertReason::FalsePositive => "false-positive",
            RevertReason::NotAffected => "not-affected",
            RevertReason::Resolved => "resolved",
        }
    }
}

/// What `patchgap query` takes.
#[derive(clap::Args)]
struct QueryArgs {
    /// NAME[@CONSTRAINT], or a purl such as pkg:pypi/cryptography@38.0.4
    #[arg(required_unless_present = "advisory")]
    spec: Option<String>,
    /// Instead of a package: the processes exposed to this advisory (id
    /// or alias, such as CVE-2023-23931): every package and version it
    /// affects.
    #[arg(long, conflicts_with = "spec")]
    advisory: Option<String>,
    /// Only packages of this ecosystem.
    #[arg(long, value_parser = ecosystems())]
    ecosystem: Option<String>,
    /// loaded: the process runs, maps or opened the package, or has it
    /// compiled in; installed: it is only installed where the process
    /// would find it (its Python environment, its node_modules);
    /// declared: only the SBOM of the image it runs lists it.
    #[arg(long, value_parser = ["loaded", "installed", "declared"])]
    evidence: Option<String>,
    /// History: processes that had the package at any time since T (an
    /// RFC 3339 time or a duration ago such as 10m, 2h, 1d), exited ones
    /// included.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// History: until T (default now). Needs --since.
    #[arg(long, value_parser = parse_time, requires = "since")]
    until: Option<i64>,
    #[command(flatten)]
    filter: FilterOpts,
    #[command(flatten)]
    page: PageOpts,
    #[command(flatten)]
    read: ReadOpts,
}

/// What `patchgap up` takes: the collector's and the agent's flags of the
/// same names, with the same meaning.
#[derive(clap::Args)]
struct UpArgs {
    /// Directory for the collector's database.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7373")]
    listen: SocketAddr,
    /// Where the HTTP listener (the admission webhook, `POST
    /// /v1/admission`) serves; plaintext, so loopback only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7374")]
    http_listen: SocketAddr,
    /// Seconds between the agent's full rescans.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// The procfs root the agent scans.
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// Where the container runtimes' metadata lives (the host's root).
    #[arg(long, default_value = "/")]
    runtime_root: PathBuf,
    /// Scan /proc only: no eBPF sensing.
    #[arg(long)]
    no_ebpf: bool,
    /// The response policy file (see `patchgap policy check`); the
    /// built-in three tiers without it. SIGHUP reloads it.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// A data-scope mapping file: one rule per line, `SELECTOR... => CLASSIFICATION [writes_to=A,B]`.
    /// It is reloaded when it changes; a bad reload keeps the previous mapping.
    #[arg(long, value_name = "FILE")]
    scope_map: Option<PathBuf>,
    #[command(flatten)]
    egress: patchgap_collector::egress::flags::EgressFlags,
    #[command(flatten)]
    retention: patchgap_collector::retention::RetentionFlags,
    /// Let the local agent carry out the collector's containments (eBPF
    /// egress isolation of a workload's cgroup, pinned in bpffs under
    /// --contain-dir; needs root). Off by default: the agent then tells
    /// the collector it cannot contain, and plans say so.
    #[arg(long)]
    contain: bool,
    /// With --contain: where the containments are pinned in bpffs. One
    /// directory per host: the agent makes what is there equal to the
    /// collector's set, and a pinned isolation outlives `up`.
    #[arg(
        long,
        value_name = "DIR",
        requires = "contain",
        default_value = patchgap_agent::contain::DEFAULT_BPFFS_DIR
    )]
    contain_dir: PathBuf,
    /// Prometheus Alertmanager to page through (its base URL, such as
    /// http://127.0.0.1:9093): incidents whose plan opens a sev1 or sev2
    /// are posted to its API v2 while active and resolved when they close.
    #[arg(long, value_name = "URL", value_parser = parse_alertmanager)]
    alertmanager: Option<String>,
}

fn parse_alertmanager(s: &str) -> Result<String, String> {
    patchgap_collector::response::policy::endpoint::check_url(s).map(|_| s.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// A private CA and the certificates for mTLS between agents, the
    /// collector and clients.
    ///
    /// Example: patchgap pki init --dir pki && patchgap pki issue agent --dir pki --host web-1
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Run a collector and a local agent in one process, for a first look.
    ///
    /// Containment is off unless --contain: this is a first look, and an
    /// isolation it carried out stays pinned in bpffs after it stops.
    ///
    /// Examples:
    ///   sudo patchgap up --data-dir /tmp/patchgap
    ///   sudo patchgap up --scope-map scopes.txt --policy policy.toml --contain
    Up(UpArgs),
    /// Response policies: check a file before a collector loads it.
    ///
    /// Example: patchgap policy check policy.toml
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Which running processes include a package, optionally in a version range.
    ///
    /// NAME is a binary or source package name. CONSTRAINT is a version or
    /// comparisons in dpkg order, joined by commas.
    ///
    /// Examples:
    ///   patchgap query libssl3
    ///   patchgap query openssl@'<3.0.13'
    ///   patchgap query libc6@'>=2.36,<2.37' -o json
    Query(QueryArgs),
    /// OSV advisories: import them offline, list them, show one by any id.
    ///
    /// Examples:
    ///   patchgap advisories import ./advisory-database/vulns
    ///   patchgap advisories import osv-PyPI-all.zip
    ///   patchgap advisories show CVE-2023-23931 -o json
    Advisories {
        #[command(subcommand)]
        command: AdvisoriesCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Image SBOMs: push one for an image digest, list them.
    ///
    /// Examples:
    ///   patchgap sbom push --image sha256:4f67c834… trainer.cdx.json
    ///   patchgap sbom list -o json
    Sbom {
        #[command(subcommand)]
        command: SbomCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Every stored advisory against the fleet: the running processes
    /// exposed, with severity, evidence, data scope and privilege.
    ///
    /// Examples:
    ///   patchgap findings --severity high --scope sensitive
    ///   patchgap findings --loaded -o json
    Findings {
        /// At least this severity.
        #[arg(long, value_parser = ["low", "medium", "high", "critical"])]
        severity: Option<String>,
        /// Only packages the process loaded, not merely installed.
        #[arg(long)]
        loaded: bool,
        #[command(flatten)]
        filter: FilterOpts,
        #[command(flatten)]
        page: PageOpts,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Outbound connections seen by eBPF: process, destination, first and
    /// last seen, count.
    ///
    /// Example: patchgap connections --since 1h
    Connections {
        /// Only this host (hostname or host id).
        #[arg(long)]
        host: Option<String>,
        /// Only connections seen since T (RFC 3339, or a duration ago such as 10m).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Unexpected egress: one alert per workload, destination and port,
    /// with the lineage, the packages changed, the workload and its scope.
    ///
    /// Examples:
    ///   patchgap alerts --since 1h
    ///   patchgap alerts -o json
    Alerts {
        /// Only alerts seen since T (RFC 3339, or a duration ago such as 10m).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// At most this many, newest first (at most 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// What changed in one workload's packages since T: each package
    /// from → to, when, with which evidence, on which replicas (the
    /// changes egress alerts carry).
    ///
    /// Examples:
    ///   patchgap changes --workload ml/Deployment/trainer --since 24h
    ///   patchgap changes --workload ml/Deployment/trainer --since 2026-12-06T07:00:00Z -o json
    Changes {
        /// The workload's baseline key, or part of it that names one
        /// workload.
        #[arg(long)]
        workload: String,
        /// Changes since T (RFC 3339, or a duration ago such as 24h).
        #[arg(long, value_parser = parse_time)]
        since: i64,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Unexpected egress: the learned baselines.
    Egress {
        #[command(subcommand)]
        command: egress::EgressCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Workloads across the fleet: kind, owner, image, digest, hosts,
    /// processes, data scope and privilege.
    ///
    /// Examples:
    ///   patchgap workloads --namespace ml --scope sensitive
    ///   patchgap workloads --privileged -o json
    Workloads {
        #[command(flatten)]
        filter: FilterOpts,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Tokens for people and automation (needs an `admin` token).
    ///
    /// Examples:
    ///   patchgap token issue --subject ci --scope read --ttl 1h
    ///   patchgap token list -o json
    ///   patchgap token revoke 3f2a…
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// The collector's tamper-evident audit log (needs an `admin` token).
    ///
    /// Examples:
    ///   patchgap audit verify
    ///   patchgap audit tail --since 1h -o json
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Incidents: open one from an advisory or a package range, show one
    /// with its event log and actions, plan its response, approve the
    /// plan, revert what it did.
    ///
    /// Examples:
    ///   patchgap incident open --advisory CVE-2023-5752
    ///   patchgap incident show INC-3
    ///   patchgap incident plan INC-3
    ///   patchgap incident approve INC-3 --plan 3f2a9c…
    ///   patchgap incident revert INC-3 --reason false-positive
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// The deploy gate, for CI: may this image be deployed now? The
    /// answer the admission webhook gives. Exit status 0 when allowed, 3
    /// when denied, 1 on error; `-o junit` writes JUnit XML.
    ///
    /// Examples:
    ///   patchgap gate check --image sha256:4f67c834…
    ///   patchgap gate check --image registry.example/app@sha256:4f67… -o junit > gate.xml
    ///   patchgap gate check --image sha256:4f67c834… --sbom app.cdx.json
    Gate {
        #[command(subcommand)]
        command: GateCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// The signed webhooks' outbox, newest first: each delivery's
    /// endpoint, incident action, state, attempts, next attempt and the
    /// receiver's last answer, and the endpoints a 410 disabled. Never a
    /// body or a secret.
    ///
    /// Examples:
    ///   patchgap deliveries --incident INC-7
    ///   patchgap deliveries -o json
    Deliveries {
        /// Only this incident's deliveries (INC-<n>).
        #[arg(long, value_name = "ID")]
        incident: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Webhook endpoints: call one again that a receiver disabled with
    /// 410 (gone).
    ///
    /// Example: patchgap endpoint enable tokens
    Endpoint {
        #[command(subcommand)]
        command: deliveries::EndpointCommand,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Incidents, newest first: state, tier, who opened them, scope size.
    ///
    /// Examples:
    ///   patchgap incidents --open
    ///   patchgap incidents -o json
    Incidents {
        /// Only open incidents (neither closed nor false_positive).
        #[arg(long)]
        open: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only incidents older than this one (INC-<n>): the next page.
        #[arg(long, value_name = "ID")]
        before: Option<String>,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// How well the response went, from the incidents' logs: time to
    /// scope, time to containment by tier (approval wait apart),
    /// convergence time, the share closed with evidence, the
    /// false-positive containment rate by tier, reopens. Distributions as
    /// p50, p90 and max.
    ///
    /// Examples:
    ///   patchgap report
    ///   patchgap report --since 30d -o json
    Report {
        /// Only incidents opened within this long (90s, 30m, 12h, 30d).
        #[arg(long, value_name = "DURATION", value_parser = patchgap_collector::auth::parse_ttl)]
        since: Option<Duration>,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// The hosts the collector knows, with freshness and coverage.
    ///
    /// Example: patchgap hosts -o json
    Hosts {
        #[command(subcommand)]
        command: Option<HostsCommand>,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Evidence bundles, checked offline.
    ///
    /// Example: patchgap evidence verify bundle.json
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
    /// Running processes, with their package and socket counts.
    ///
    /// Example: patchgap ps --host web-1
    Ps {
        /// Only this host (hostname or host id).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        page: PageOpts,
        #[command(flatten)]
        read: ReadOpts,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<gate::GateDenied>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(3)
        }
        Err(e) if e.downcast_ref::<AuditBroken>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(4)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Pki { command } => pki_command(command),
        Command::Up(args) => up(args).await,
        Command::Policy { command } => policy_command(command),
        Command::Query(args) => query(args).await,
        Command::Connections { host, since, read } => connections(host, since, read).await,
        Command::Advisories { command, read } => advisories(command, read).await,
        Command::Sbom { command, read } => sbom(command, read).await,
        Command::Findings {
            severity,
            loaded,
            filter,
            page,
            read,
        } => findings(severity, loaded, filter, page, read).await,
        Command::Workloads { filter, read } => workloads(filter, read).await,
        Command::Hosts {
            command: None,
            read,
        } => hosts(read).await,
        Command::Hosts {
            command: Some(HostsCommand::Retire { name, reason }),
            read,
        } => retire_host(name, reason, read).await,
        Command::Report { since, read } => report(since, read).await,
        Command::Evidence {
            command: EvidenceCommand::Verify { file, key },
        } => {
            print!("{}", verify::verify_bundle(&file, key.as_deref())?);
            Ok(())
        }
        Command::Alerts { since, limit, read } => egress::alerts(since, limit, read).await,
        Command::Egress { command, read } => egress::egress(command, read).await,
        Command::Changes {
            workload,
            since,
            read,
        } => egress::changes(workload, since, read).await,
        Command::Token { command, read } => token(command, read).await,
        Command::Audit { command, read } => audit(command, read).await,
        Command::Ps { host, page, read } => ps(host, page, read).await,
        Command::Incident { command, read } => incident(command, read).await,
        Command::Incidents {
            open,
            limit,
            before,
            read,
        } => incidents(open, limit, before, read).await,
        Command::Gate { command, read } => gate_command(command, read).await,
        Command::Deliveries {
            incident,
            limit,
            read,
        } => deliveries::deliveries(incident, limit, read).await,
        Command::Endpoint { command, read } => deliveries::endpoint(command, read).await,
    }
}

/// `patchgap gate check`: the deploy gate's verdict for one image.
async fn gate_command(command: GateCommand, read: ReadOpts) -> anyhow::Result<()> {
    let GateCommand::Check {
        image,
        namespace,
        sbom,
    } = command;
    let (sbom, sbom_name) = match &sbom {
        Some(file) => (read_sbom(file)?, file.display().to_string()),
        None => (Vec::new(), String::new()),
    };
    let mut client = connect(&read).await?;
    let r = client
        .gate_check(v1::GateCheckRequest {
            image: image.clone(),
            namespace: namespace.unwrap_or_default(),
            sbom,
            sbom_name,
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    match read.output {
        Output::Junit => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(gate::junit(&image, &r).as_bytes())?;
            out.flush()?;
        }
        output => print(output, gate::json(&image, &r), || gate::table(&image, &r))?,
    }
    if r.allowed {
        Ok(())
    } else {
        let incidents: std::collections::BTreeSet<&str> = r
            .denied
            .iter()
            .map(|d| d.incident.as_str())
            .filter(|i| !i.is_empty())
            .collect();
        Err(gate::GateDenied(format!(
            "denied: {image} is blocked{}",
            match incidents.is_empty() {
                true => String::new(),
                false => format!(
                    " by {}",
                    incidents.into_iter().collect::<Vec<_>>().join(", ")
                ),
            }
        ))
        .into())
    }
}

/// `patchgap policy check`: the collector's own parser, run locally.
fn policy_command(command: PolicyCommand) -> anyhow::Result<()> {
    use patchgap_collector::response::PolicyLoadError;
    let PolicyCommand::Check { file, output } = command;
    let policy = match patchgap_collector::response::policy::state::load_file(&file) {
        Ok(p) => p,
        Err(PolicyLoadError::Invalid(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "{}: {} problem(s); a collector would refuse this policy",
                file.display(),
                errors.len()
            );
        }
        Err(e) => return Err(e.into()),
    };
    for w in &policy.warnings {
        eprintln!("{w}");
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&policy)?),
        Output::Junit => anyhow::bail!("-o junit is for `patchgap gate check` only"),
        Output::Table | Output::Dot => println!(
            "{}: ok ({} tiers, {} rules, {} actions)",
            file.display(),
            policy.tiers.len(),
            policy.rule_count(),
            policy.action_count()
        ),
    }
    Ok(())
}

/// `patchgap pki`.
fn pki_command(command: PkiCommand) -> anyhow::Result<()> {
    let (written, what) = match command {
        PkiCommand::Init { opts } => (
            pki::init(&opts.dir, opts.days.unwrap_or(3650), opts.force)?,
            "CA".to_string(),
        ),
        PkiCommand::Issue(issue) => {
            let (leaf, opts) = match issue {
                PkiIssue::Collector { san, opts } => (pki::Leaf::Collector { sans: san }, opts),
                PkiIssue::Agent { host, opts } => (pki::Leaf::Agent { host }, opts),
                PkiIssue::Cli { name, opts } => (pki::Leaf::Cli { name }, opts),
            };
            let what = format!("{leaf:?}");
            (
                pki::issue(&opts.dir, &leaf, opts.days.unwrap_or(365), opts.force)?,
                what,
            )
        }
    };
    println!(
        "wrote {} and {} (key 0600): {what}",
        written.cert.display(),
        written.key.display()
    );
    Ok(())
}

/// `patchgap query`: the constraint is checked here, so a typo never costs
/// a round trip; a purl is checked by the collector, which knows the types.
async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let spec = args.spec.unwrap_or_default();
    let (name, constraint) = if spec.trim_start().starts_with("pkg:") || spec.is_empty() {
        (spec.trim().to_string(), None)
    } else {
        parse_query(&spec).map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let request = v1::FindPackageRequest {
        name,
        constraint: constraint.map(|c| c.to_string()).unwrap_or_default(),
        filter: Some(args.filter.to_proto()),
        since_ms: args.since.unwrap_or(0),
        until_ms: args.until.unwrap_or(0),
        ecosystem: args.ecosystem.unwrap_or_default(),
        evidence: args.evidence.unwrap_or_default(),
        advisory: args.advisory.unwrap_or_default(),
        ..Default::default()
    };
    let read = args.read;
    let mut client = connect(&read).await?;
    let width = render::width();
    let mut footer: Option<v1::FindPackageResponse> = None;
    let mut count = 0;
    paged(
        &read,
        &args.page,
        "matches",
        async |token, size| {
            client
                .find_package(v1::FindPackageRequest {
                    page_size: size,
                    page_token: token,
                    ..request.clone()
                })
                .await
                .map(tonic::Response::into_inner)
        },
        |r: &v1::FindPackageResponse| r.next_page_token.clone(),
        render::query_json,
        |r, _first| {
            count += r.matches.len();
            if footer.is_none() {
                footer = Some(v1::FindPackageResponse {
                    matches: Vec::new(),
                    ..r.clone()
                });
            }
            render::query_groups(&r.matches, width)
        },
    )
    .await?;
    if read.output == Output::Table {
        let f = footer.unwrap_or_default();
        pages::Sink::stdout().write(&render::query_footer(
            count,
            &f.query,
            &f.scope_map_error,
            &f.coverage,
        ))?;
    }
    Ok(())
}

/// Fetches a paged answer and prints it as it comes: every page, or with
/// --limit one page and then the token to continue with (on stderr, and
/// as `next_page_token` in JSON). `json` renders a page as a document
/// whose `key` array holds its items; `table` renders a page's rows.
#[allow(clippy::too_many_arguments)]
async fn paged<R>(
    read: &ReadOpts,
    page: &PageOpts,
    key: &str,
    mut fetch: impl AsyncFnMut(String, i32) -> Result<R, tonic::Status>,
    next_token: impl Fn(&R) -> String,
    json: impl Fn(&R) -> serde_json::Value,
    mut table: impl FnMut(&R, bool) -> String,
) -> anyhow::Result<()> {
    let mut sink = pages::Sink::stdout();
    let mut token = page.page_token.clone().unwrap_or_default();
    let size = page.limit.map_or(0, |n| n as i32);
    let mut array: Option<pages::JsonArray> = None;
    let mut first = true;
    loop {
        let resp = fetch(token, size)
            .await
            .map_err(|s| status_error(read, s))?;
        let next = next_token(&resp);
        let stop = next.is_empty() || page.limit.is_some();
        let open = match read.output {
            Output::Json => {
                let mut doc = json(&resp);
                let items = pages::take_array(&mut doc, key);
                if array.is_none() {
                    doc[key] = serde_json::json!([]);
                    if stop && !next.is_empty() {
                        doc["next_page_token"] = next.clone().into();
                    }
                    array = Some(pages::JsonArray::begin(&mut sink, &doc, key)?);
                }
                array
                    .as_mut()
                    .expect("begun above")
                    .push(&mut sink, items)?
            }
            Output::Table | Output::Junit | Output::Dot => sink.write(&table(&resp, first))?,
        };
        first = false;
        if stop || !open {
            if !next.is_empty() && open {
                eprintln!("more: continue with --page-token {next}");
            }
            break;
        }
        token = next;
    }
    if let Some(array) = array {
        array.finish(&mut sink)?;
    }
    Ok(())
}

/// `patchgap connections`.
async fn connections(
    host: Option<String>,
    since: Option<i64>,
    read: ReadOpts,
) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let resp = client
        .list_connections(v1::ListConnectionsRequest {
            host: host.unwrap_or_default(),
            since_ms: since.unwrap_or(0),
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    print(read.output, render::connections_json(&resp), || {
        render::connections_table(&resp)
    })
}

/// `patchgap advisories import|list|show`.
async fn advisories(command: AdvisoriesCommand, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    match command {
        AdvisoriesCommand::Import {
            path,
            source,
            replace,
        } => {
            let source = source.unwrap_or_default();
            advisories_import(&mut client, &path, &source, replace, &read).await
        }
        AdvisoriesCommand::Delete { id } => {
            let resp = client
                .delete_advisory(v1::DeleteAdvisoryRequest { id })
                .await
                .map_err(|s| status_error(&read, s))?
                .into_inner();
            print(read.output, render::delete_json(&resp), || {
                render::delete_table(&resp)
            })
        }
        AdvisoriesCommand::List { ecosystem } => {
            let resp = client
                .list_advisories(v1::ListAdvisoriesRequest {
                    ecosystem: ecosystem.unwrap_or_default(),
                })
                .await
                .map_err(|s| status_error(&read, s))?
                .into_inner();
            print(
                read.output,
                render::advisories_json(&resp.advisories, &[]),
                || render::advisories_table(&resp.advisories),
            )
        }
        AdvisoriesCommand::Show { id } => {
            let resp = client
                .get_advisory(v1::GetAdvisoryRequest { id: id.clone() })
                .await
                .map_err(|s| status_error(&read, s))?
                .into_inner();
            if resp.advisories.is_empty() {
                anyhow::bail!("no advisory is known as {id}");
            }
            print(
                read.output,
                render::advisories_json(&resp.advisories, &resp.documents),
                || render::advisory_detail(&resp.advisories, &resp.documents),
            )
        }
    }
}

/// `patchgap advisories import`: the counts are printed even when some
/// files failed, and then the command fails.
async fn advisories_import(
    client: &mut Client,
    path: &std::path::Path,
    source: &str,
    replace: bool,
    read: &ReadOpts,
) -> anyhow::Result<()> {
    let resp = advisories::import(client, path, source, replace)
        .await
        .map_err(|e| match e.downcast::<tonic::Status>() {
            Ok(s) => status_error(read, s),
            Err(e) => e,
        })?;
    let failed = !resp.errors.is_empty();
    print(read.output, render::import_json(&resp), || {
        render::import_table(&resp)
    })?;
    if failed {
        anyhow::bail!(
            "{} file(s) or record(s) were not imported",
            resp.errors.len()
        );
    }
    Ok(())
}

/// The source an SBOM push names when --source is left out: the file's
/// base name.
fn default_source(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unnamed".into())
}

/// `patchgap sbom push|list`.
async fn sbom(command: SbomCommand, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    match command {
        SbomCommand::Push {
            image,
            file,
            source,
        } => {
            let source = source.unwrap_or_else(|| default_source(&file));
            let data = read_sbom(&file)?;
            let resp = client
                .push_sbom(v1::PushSbomRequest {
                    image,
                    name: file.display().to_string(),
                    source,
                    data,
                })
                .await
                .map_err(|s| status_error(&read, s))?
                .into_inner();
            print(read.output, render::sbom_push_json(&resp), || {
                render::sbom_push_table(&resp)
            })
        }
        SbomCommand::List { image } => {
            let resp = client
                .list_sboms(v1::ListSbomsRequest {
                    image: image.unwrap_or_default(),
                })
                .await
                .map_err(|s| status_error(&read, s))?
                .into_inner();
            print(read.output, render::sboms_json(&resp), || {
                render::sboms_table(&resp)
            })
        }
    }
}

/// An SBOM file's bytes, refused before reading when larger than the
/// collector accepts.
fn read_sbom(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    let max = patchgap_collector::sbom::MAX_INPUT_BYTES as u64;
    if meta.len() > max {
        anyhow::bail!(
            "{}: {} bytes is more than the {max} accepted",
            file.display(),
            meta.len()
        );
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// `patchgap findings`.
async fn findings(
    severity: Option<String>,
    loaded: bool,
    filter: FilterOpts,
    page: PageOpts,
    read: ReadOpts,
) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let request = v1::ListFindingsRequest {
        filter: Some(filter.to_proto()),
        severity: severity.unwrap_or_default(),
        loaded,
        ..Default::default()
    };
    let width = render::width();
    let (mut count, mut advisories, mut elapsed_ms) = (0, None, 0);
    paged(
        &read,
        &page,
        "findings",
        async |token, size| {
            client
                .list_findings(v1::ListFindingsRequest {
                    page_size: size,
                    page_token: token,
                    ..request.clone()
                })
                .await
                .map(tonic::Response::into_inner)
        },
        |r: &v1::ListFindingsResponse| r.next_page_token.clone(),
        render::findings_json,
        |r, first| {
            count += r.findings.len();
            advisories.get_or_insert(r.advisories);
            elapsed_ms += r.elapsed_ms;
            render::findings_rows(&r.findings, width, first)
        },
    )
    .await?;
    if read.output == Output::Table {
        pages::Sink::stdout().write(&render::findings_footer(
            count,
            advisories.unwrap_or_default(),
            elapsed_ms,
        ))?;
    }
    Ok(())
}

/// `patchgap workloads`.
async fn workloads(filter: FilterOpts, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let resp = client
        .list_workloads(v1::ListWorkloadsRequest {
            filter: Some(filter.to_proto()),
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    print(read.output, render::workloads_json(&resp), || {
        render::workloads_table(&resp, render::width())
    })
}

/// `patchgap hosts`.
async fn hosts(read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let resp = client
        .list_hosts(v1::ListHostsRequest {})
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    print(read.output, render::hosts_json(&resp), || {
        render::hosts_table(&resp)
    })
}

/// `patchgap report`.
async fn report(since: Option<Duration>, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let since_ms = since.map_or(0, |d| {
        patchgap_proto::time::now_ms().saturating_sub(d.as_millis() as i64)
    });
    let r = client
        .get_response_report(v1::GetResponseReportRequest { since_ms })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    let json: serde_json::Value =
        serde_json::from_str(&r.report_json).context("the collector's report")?;
    print(read.output, json.clone(), || verify::report_table(&json))
}

/// `patchgap hosts retire`.
async fn retire_host(name: String, reason: String, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let r = client
        .retire_host(v1::RetireHostRequest {
            host: name.clone(),
            reason,
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    print(
        read.output,
        serde_json::json!({"host": name, "incidents": r.incidents}),
        || {
            if r.incidents.is_empty() {
                format!(
                    "{}: retired; no open incident covered it\n",
                    render::clean(&name)
                )
            } else {
                format!(
                    "{}: retired from {}\n",
                    render::clean(&name),
                    render::clean(&r.incidents.join(", "))
                )
            }
        },
    )
}

/// `patchgap ps`.
async fn ps(host: Option<String>, page: PageOpts, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let host = host.unwrap_or_default();
    let width = render::width();
    // What the notes under the table need: the first page's coverage, each
    // host's latest socket-table read, the processes with anonymous code.
    let mut notes = v1::ListProcessesResponse::default();
    let mut read_at: std::collections::BTreeMap<String, i64> = Default::default();
    paged(
        &read,
        &page,
        "processes",
        async |token, size| {
            client
                .list_processes(v1::ListProcessesRequest {
                    host: host.clone(),
                    page_size: size,
                    page_token: token,
                })
                .await
                .map(tonic::Response::into_inner)
        },
        |r: &v1::ListProcessesResponse| r.next_page_token.clone(),
        render::ps_json,
        |r, first| {
            if first {
                notes.coverage = r.coverage.clone();
            }
            for p in &r.processes {
                let t = read_at.entry(p.host.clone()).or_default();
                *t = (*t).max(p.sockets_read_ms);
                if !p.anonymous_code.is_empty() {
                    notes.processes.push(v1::ProcessSummary {
                        host: p.host.clone(),
                        key: p.key,
                        sockets_read_ms: p.sockets_read_ms,
                        anonymous_code: p.anonymous_code.clone(),
                        ..Default::default()
                    });
                }
            }
            render::ps_rows(&r.processes, width, first)
        },
    )
    .await?;
    if read.output == Output::Table {
        for (host, at) in read_at {
            notes.processes.push(v1::ProcessSummary {
                host,
                sockets_read_ms: at,
                ..Default::default()
            });
        }
        pages::Sink::stdout().write(&render::ps_notes(&notes))?;
    }
    Ok(())
}

/// `patchgap audit verify` found the log broken: exit status 4.
#[derive(Debug)]
struct AuditBroken(String);

impl std::fmt::Display for AuditBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuditBroken {}

fn token_json(t: &v1::TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "subject": t.subject,
        "scopes": t.scopes,
        "issued": render::rfc3339(t.issued_ms),
        "expires": render::rfc3339(t.expires_ms),
        "issued_by": t.issued_by,
        "revoked": (t.revoked_ms != 0).then(|| render::rfc3339(t.revoked_ms)),
    })
}

fn token_line(t: &v1::TokenInfo) -> String {
    let state = if t.revoked_ms != 0 {
        format!("revoked {}", render::rfc3339(t.revoked_ms))
    } else if t.expires_ms < patchgap_proto::time::now_ms() {
        "expired".to_string()
    } else {
        format!("expires {}", render::rfc3339(t.expires_ms))
    };
    format!(
        "{}  {:<16} {:<28} {}\n",
        t.id,
        t.subject,
        t.scopes.join(","),
        state
    )
}

/// `patchgap token issue|list|revoke`.
async fn token(command: TokenCommand, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let err = |s| status_error(&read, s);
    match command {
        TokenCommand::Issue {
            subject,
            scope,
            ttl,
        } => {
            let resp = client
                .issue_token(v1::IssueTokenRequest {
                    subject,
                    scopes: scope.split(',').map(|s| s.trim().to_string()).collect(),
                    ttl_seconds: ttl.map_or(0, |d| d.as_secs()),
                })
                .await
                .map_err(err)?
                .into_inner();
            let info = resp.info.unwrap_or_default();
            let mut json = token_json(&info);
            json["token"] = resp.token.clone().into();
            print(read.output, json, || {
                eprint!("{}", token_line(&info));
                format!("{}\n", resp.token)
            })
        }
        TokenCommand::List => {
            let resp = client
                .list_tokens(v1::ListTokensRequest {})
                .await
                .map_err(err)?
                .into_inner();
            print(
                read.output,
                serde_json::json!({"tokens": resp.tokens.iter().map(token_json).collect::<Vec<_>>()}),
                || resp.tokens.iter().map(token_line).collect(),
            )
        }
        TokenCommand::Revoke { id } => {
            let resp = client
                .revoke_token(v1::RevokeTokenRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            let info = resp.info.unwrap_or_default();
            print(read.output, token_json(&info), || token_line(&info))
        }
    }
}

/// `patchgap audit verify|tail`.
async fn audit(command: AuditCommand, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let err = |s| status_error(&read, s);
    match command {
        AuditCommand::Verify => {
            let r = client
                .verify_audit(v1::VerifyAuditRequest {})
                .await
                .map_err(err)?
                .into_inner();
            let json = serde_json::json!({
                "intact": r.intact,
                "entries": r.entries,
                "checkpoints": r.checkpoints,
                "first_bad_seq": (!r.intact).then_some(r.first_bad_seq),
                "kind": (!r.intact).then_some(r.kind.clone()),
                "message": (!r.intact).then_some(r.message.clone()),
            });
            print(read.output, json, || {
                if r.intact {
                    format!(
                        "audit log intact: {} entries, {} signed checkpoints\n",
                        r.entries, r.checkpoints
                    )
                } else {
                    String::new()
                }
            })?;
            if !r.intact {
                return Err(AuditBroken(format!(
                    "the audit log is broken at entry {}: {}",
                    r.first_bad_seq, r.message
                ))
                .into());
            }
            Ok(())
        }
        AuditCommand::Tail { since, limit } => {
            // Page through from `since`, keeping the last `limit`.
            let mut entries: std::collections::VecDeque<v1::AuditEntry> = Default::default();
            let mut after = 0;
            loop {
                let page = client
                    .list_audit(v1::ListAuditRequest {
                        since_ms: since.unwrap_or(0),
                        after_seq: after,
                        limit: 1000,
                    })
                    .await
                    .map_err(err)?
                    .into_inner()
                    .entries;
                // Each page read is itself audited: stop at a short page,
                // or this would follow its own entries forever.
                let Some(last) = page.last() else { break };
                after = last.seq;
                let short = page.len() < 1000;
                for e in page {
                    entries.push_back(e);
                    if entries.len() > limit {
                        entries.pop_front();
                    }
                }
                if short {
                    break;
                }
            }
            let json = serde_json::json!({"entries": entries.iter().map(|e| serde_json::json!({
                "seq": e.seq,
                "time": render::rfc3339(e.time_ms),
                "subject": e.subject,
                "scopes": e.scopes,
                "peer": e.peer,
                "method": e.method,
                "args": e.args,
                "result": e.result,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            })).collect::<Vec<_>>()});
            print(read.output, json, || {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{:>6} {} {:<12} {:<22} {:<24} {}\n",
                            e.seq,
                            render::rfc3339(e.time_ms),
                            e.subject,
                            e.peer,
                            e.method,
                            e.result
                        )
                    })
                    .collect()
            })
        }
    }
}

/// `patchgap incident open|show|plan|approve|revert`.
async fn incident(command: IncidentCommand, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let err = |s| status_error(&read, s);
    match command {
        IncidentCommand::Open {
            advisory,
            host,
            package,
            alert,
        } => {
            let r = client
                .open_incident(v1::OpenIncidentRequest {
                    advisory: advisory.unwrap_or_default(),
                    host: host.unwrap_or_default(),
                    package: package.unwrap_or_default(),
                    alert: alert.unwrap_or_default(),
                })
                .await
                .map_err(err)?
                .into_inner();
            let i = r.incident.unwrap_or_default();
            let mut json = render::incident_json(&i, false);
            json["created"] = r.created.into();
            print(read.output, json, || {
                let head = if r.created {
                    format!("opened {}\n", render::clean(&i.id))
                } else {
                    format!("already open: {}\n", render::clean(&i.id))
                };
                head + &render::incident_detail(&i, false)
            })
        }
        IncidentCommand::Show { id } => {
            let r = client
                .get_incident(v1::GetIncidentRequest { id, max_events: 0 })
                .await
                .map_err(err)?
                .into_inner();
            let i = r.incident.unwrap_or_default();
            let mut json = render::incident_json(&i, true);
            json["more_events"] = r.more_events.into();
            warn_policy_json(read.output, &i);
            print(read.output, json, || {
                render::incident_detail(&i, r.more_events)
            })
        }
        IncidentCommand::Plan { id } => {
            let r = client
                .plan_incident(v1::PlanIncidentRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            warn_policy_json(read.output, &r.incident.clone().unwrap_or_default());
            print(read.output, render::plan_json(&r), || {
                render::plan_detail(&r)
            })
        }
        IncidentCommand::Approve { id, plan } => {
            let approved = client
                .approve_incident(v1::ApproveIncidentRequest {
                    id: id.clone(),
                    plan: plan.clone(),
                })
                .await;
            let r = match approved {
                Ok(r) => r.into_inner(),
                // The plan moved since the responder read it: nothing was
                // approved. Show what it is now, so the next approval is
                // of a plan someone has seen.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    eprintln!("error: {}", render::terminal_safe(s.message()));
                    let new = client
                        .plan_incident(v1::PlanIncidentRequest { id: id.clone() })
                        .await
                        .map_err(|s| {
                            anyhow::anyhow!(
                                "nothing approved; cannot fetch the new plan (`patchgap incident plan {}` needs the respond scope): {:#}",
                                render::clean(&id),
                                status_error(&read, s)
                            )
                        })?
                        .into_inner();
                    warn_policy_json(read.output, &new.incident.clone().unwrap_or_default());
                    print(read.output, render::plan_json(&new), || {
                        render::plan_detail(&new)
                    })?;
                    let hash = render::clean(&new.plan.unwrap_or_default().hash);
                    anyhow::bail!(
                        "nothing approved: plan {plan} is not the plan in force; review the plan above, then approve it with --plan {hash}"
                    );
                }
                Err(s) => return Err(err(s)),
            };
            let i = r.incident.clone().unwrap_or_default();
            warn_policy_json(read.output, &i);
            print(read.output, render::approve_json(&r), || {
                let ids: Vec<String> = r.requested.iter().map(|n| format!("#{n}")).collect();
                let head = if ids.is_empty() {
                    format!(
                        "approved plan {plan} of {}: no action was waiting for approval\n",
                        render::clean(&i.id)
                    )
                } else {
                    format!(
                        "approved plan {plan} of {}: requested {}\n",
                        render::clean(&i.id),
                        ids.join(" ")
                    )
                };
                head + &render::actions_detail(&i.actions)
            })
        }
        IncidentCommand::Revert { id, action, reason } => {
            let r = client
                .revert_incident(v1::RevertIncidentRequest {
                    id,
                    action: action.unwrap_or(0),
                    reason: reason.as_str().into(),
                })
                .await
                .map_err(err)?
                .into_inner();
            let i = r.incident.clone().unwrap_or_default();
            warn_policy_json(read.output, &i);
            print(read.output, render::revert_json(&r), || {
                let ids: Vec<String> = r.reverted.iter().map(|n| format!("#{n}")).collect();
                let head = if ids.is_empty() {
                    format!(
                        "{}: no action was in force to revert\n",
                        render::clean(&i.id)
                    )
                } else {
                    format!(
                        "{}: reverting {} ({})\n",
                        render::clean(&i.id),
                        ids.join(" "),
                        reason.as_str()
                    )
                };
                head + &render::actions_detail(&i.actions)
            })
        }
        IncidentCommand::Close { id, force, reason } => {
            let r = client
                .close_incident(v1::CloseIncidentRequest { id, force, reason })
                .await
                .map_err(err)?
                .into_inner();
            let json = serde_json::json!({
                "id": r.id,
                "state": r.state,
                "reverted": r.reverted,
                "closed_with_evidence": false,
            });
            print(read.output, json, || {
                let ids: Vec<String> = r.reverted.iter().map(|n| format!("#{n}")).collect();
                let lifted = if ids.is_empty() {
                    String::new()
                } else {
                    format!("; lifting {}", ids.join(" "))
                };
                format!(
                    "{}: {} by force, without evidence{lifted}\n",
                    render::clean(&r.id),
                    render::clean(&r.state)
                )
            })
        }
        IncidentCommand::Graph { id } => {
            let r = client
                .get_incident_graph(v1::GetIncidentGraphRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            let graph: patchgap_collector::response::verify::graph::Graph =
                serde_json::from_str(&r.graph_json).context("the collector's graph")?;
            if read.output == Output::Dot {
                use std::io::Write;
                let text = patchgap_collector::response::verify::graph::to_dot(&graph);
                let mut out = std::io::stdout().lock();
                return match out.write_all(text.as_bytes()) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => Ok(other?),
                };
            }
            print(read.output, serde_json::to_value(&graph)?, || {
                verify::graph_table(&graph)
            })
        }
        IncidentCommand::Evidence { id } => {
            let r = client
                .get_incident_evidence(v1::GetIncidentEvidenceRequest { id })
                .await
                .map_err(err)?
                .into_inner();
            // The bundle is the output, whatever -o says: it is a file.
            eprintln!("signed by {}", r.keyid);
            println!("{}", r.bundle_json);
            Ok(())
        }
    }
}

/// With `-o json`, a failed policy reload is also said on stderr: a
/// script that reads only the fields it knows would otherwise act on a
/// plan of the previous policy without a word. Tables say it themselves.
fn warn_policy_json(output: Output, i: &v1::Incident) {
    if output != Output::Json {
        return;
    }
    if let Some(p) = &i.policy
        && !p.reload_error.is_empty()
    {
        eprintln!(
            "warning: policy reload failed, previous in force: {}: {}",
            render::clean(&p.source),
            render::clean(&p.reload_error)
        );
    }
}

/// `patchgap incidents`.
async fn incidents(
    open: bool,
    limit: u32,
    before: Option<String>,
    read: ReadOpts,
) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let r = client
        .list_incidents(v1::ListIncidentsRequest {
            limit,
            before: before.unwrap_or_default(),
            open_only: open,
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    warn_policy_json(
        read.output,
        &v1::Incident {
            policy: r.policy.clone(),
            ..Default::default()
        },
    );
    print(read.output, render::incidents_json(&r), || {
        render::incidents_table(&r)
    })
}

fn print(
    output: Output,
    json: serde_json::Value,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = match output {
        Output::Json => render::json_text(&json)?,
        // Fields are escaped where tables place them; this catches the rest.
        Output::Table | Output::Dot => render::terminal_safe(&table()).into_owned(),
        Output::Junit => anyhow::bail!("-o junit is for `patchgap gate check` only"),
    };
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `patchgap query libc6 | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A point in time from an RFC 3339 string or a duration ago ("90s", "10m",
/// "2h", "1d"), as milliseconds since the epoch.
fn parse_time(s: &str) -> Result<i64, String> {
    let now = patchgap_proto::time::now_ms();
    if let Some(unit) = s.chars().last().filter(|c| c.is_ascii_alphabetic())
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        let ms = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
        };
        return Ok(now - n * ms);
    }
    render::parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is neither an RFC 3339 time (2026-11-28T06:00:00Z) nor a duration (10m)")
    })
}

impl ReadOpts {
    fn tls(&self) -> patchgap_agent::tls::ClientTls {
        patchgap_agent::tls::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    fn url(&self) -> String {
        patchgap_agent::tls::collector_url(&self.collector, &self.tls())
    }
}

const START_HINT: &str = "start one with `patchgap up`, or point --collector (or PATCHGAP_COLLECTOR) at a running collector";

/// The bearer token: the --token-file's content, else PATCHGAP_TOKEN.
fn bearer(read: &ReadOpts) -> anyhow::Result<Bearer> {
    let token = match &read.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?,
        ),
        None => std::env::var("PATCHGAP_TOKEN").ok(),
    };
    let token = token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(Bearer(
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot"))
            })
            .transpose()?,
    ))
}

async fn connect(read: &ReadOpts) -> anyhow::Result<Client> {
    let url = read.url();
    let bearer = bearer(read)?;
    // https:// without a CA is refused here: never a plaintext fallback.
    let endpoint = patchgap_agent::tls::endpoint(&url, &read.tls())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .connect_timeout(read.timeout.min(Duration::from_secs(5)))
        // Every call has a deadline (sent as grpc-timeout, and kept here).
        .timeout(read.timeout);
    let connected = tokio::time::timeout(read.timeout, endpoint.connect())
        .await
        .map_err(|_| no_answer(read))?;
    match connected {
        Ok(channel) => {
            Ok(QueryClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20))
        }
        Err(e) => {
            // The whole chain: a TLS failure says why only in its depths.
            let mut causes = Vec::new();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                causes.push(s.to_string());
                source = s.source();
            }
            if causes.is_empty() {
                causes.push(e.to_string());
            }
            anyhow::bail!(
                "cannot reach the collector at {url} ({}); {START_HINT}",
                causes.join(": ")
            )
        }
    }
}

/// The collector did not answer within --timeout.
fn no_answer(read: &ReadOpts) -> anyhow::Error {
    anyhow::anyhow!(
        "the collector at {} did not answer within {} s (--timeout); is it running, stopped or overloaded?",
        read.url(),
        read.timeout.as_secs()
    )
}

fn status_error(read: &ReadOpts, s: tonic::Status) -> anyhow::Error {
    // tonic's own deadline ends the call as Cancelled ("Timeout expired");
    // the collector's as DeadlineExceeded.
    let timed_out = s.code() == tonic::Code::DeadlineExceeded
        || (s.code() == tonic::Code::Cancelled && s.message().contains("Timeout expired"));
    if timed_out {
        return no_answer(read);
    }
    match s.code() {
        tonic::Code::Unavailable => {
            anyhow::anyhow!(
                "cannot reach the collector at {} ({}); {START_HINT}",
                read.url(),
                s.message()
            )
        }
        _ => anyhow::anyhow!("{}", s.message()),
    }
}

fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/patchgap");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("patchgap"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/patchgap"),
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let UpArgs {
        data_dir,
        listen,
        http_listen,
        interval,
        proc_root,
        runtime_root,
        no_ebpf,
        policy,
        scope_map,
        egress,
        retention,
        contain,
        contain_dir,
        alertmanager,
    } = args;
    anyhow::ensure!(interval > 0, "--interval must be at least 1 second");
    // A bad policy stops `up` before it listens, each problem at its place.
    if let Some(path) = &policy {
        patchgap_collector::response::policy::state::load_file(path)
            .map_err(|e| anyhow::anyhow!("response policy not loaded:\n{e}"))?;
    }
    // So does a bad scope mapping (the collector would refuse it at start).
    if let Some(path) = &scope_map {
        patchgap_collector::ScopeMap::load(path)
            .map_err(|e| anyhow::anyhow!("scope mapping: {e}"))?;
    }
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another collector running? pick another with --listen"))?;
    let addr = listener.local_addr()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "warning: not running as root: the agent sees only your own processes' files and packages"
        );
    }
    println!(
        "patchgap collector listening on {addr}, plaintext on loopback; tokens off: queries need no token on this first look (data in {})",
        data_dir.display()
    );
    if contain {
        println!(
            "containment: on; the agent carries out approved isolations, pinned under {}",
            contain_dir.display()
        );
    } else {
        println!("containment: off (--contain turns it on)");
    }
    println!(
        "hint: in another shell, run `patchgap query libc6` (add --collector {addr} if you changed --listen)"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // The agent's spool lives beside the store, so unsent history survives
    // a restart of `up` too.
    let agent_state = data_dir.join("agent");
    let mut collector = tokio::spawn(patchgap_collector::run(
        CollectorConfig {
            data_dir,
            policy,
            scope_map,
            http_listen: Some(http_listen),
            deliver: patchgap_collector::response::deliver::DeliverConfig {
                alertmanager,
                ..Default::default()
            },
            egress,
            retention,
            ..CollectorConfig::default()
        },
        listener,
        shutdown(stop_rx.clone()),
    ));
    let agent = patchgap_agent::spawn(patchgap_agent::AgentConfig {
        collector: format!("http://{addr}"),
        scan: patchgap_agent::ScanConfig {
            proc_root,
            runtime_root,
            ..Default::default()
        },
        interval: Duration::from_secs(interval),
        ebpf: !no_ebpf,
        contain: contain.then_some(contain_dir),
        spool: patchgap_agent::spool::SpoolConfig {
            dir: Some(agent_state),
            ..Default::default()
        },
        // No watchdog: this process is the collector's too, and its CPU
        // and memory are not the agent's alone.
        ..Default::default()
    });
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = &mut collector => {
            agent.shutdown().await;
            return r.context("collector task")?;
        }
    }
    eprintln!("stopping");
    agent.shutdown().await;
    let _ = stop_tx.send(true);
    collector.await.context("collector task")?
}

/// The `--ecosystem` values: the purl types patchgap inventories, from the
/// one list the collector keeps.
fn ecosystems() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Ecosystem::ALL.map(Ecosystem::purl_type))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// Clap's own checks of every command's flags, which otherwise fail
    /// only when that command runs.
    #[test]
    fn flags_are_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn up_and_policy_check_take_a_policy_file() {
        let cli = super::Cli::try_parse_from(["patchgap", "up", "--policy", "p.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            super::Command::Up(super::UpArgs { policy: Some(p), .. }) if p.as_os_str() == "p.toml"
        ));
        let cli =
            super::Cli::try_parse_from(["patchgap", "policy", "check", "p.toml", "-o", "json"])
                .unwrap();
        assert!(matches!(
            cli.command,
            super::Command::Policy {
                command: super::PolicyCommand::Check {
                    output: super::Output::Json,
                    ..
                }
            }
        ));
    }

    fn up(args: &[&str]) -> Result<super::UpArgs, clap::Error> {
        let cli = super::Cli::try_parse_from(["patchgap", "up"].iter().chain(args))?;
        match cli.command {
            super::Command::Up(a) => Ok(a),
            _ => unreachable!("parsed as up"),
        }
    }

    /// `up` passes the collector's --scope-map and the agent's
    /// --runtime-root through, and contains nothing unless --contain.
    #[test]
    fn up_takes_scope_map_runtime_root_and_contain() {
        let plain = up(&[]).unwrap();
        assert!(!plain.contain, "containment must be off by default");
        assert_eq!(plain.runtime_root.as_os_str(), "/");
        assert!(plain.scope_map.is_none());
        assert_eq!(
            plain.contain_dir.as_os_str(),
            patchgap_agent::contain::DEFAULT_BPFFS_DIR
        );

        let a = up(&[
            "--scope-map",
            "scopes.txt",
            "--runtime-root",
            "/host",
            "--contain",
        ])
        .unwrap();
        assert_eq!(a.scope_map.unwrap().as_os_str(), "scopes.txt");
        assert_eq!(a.runtime_root.as_os_str(), "/host");
        assert!(a.contain);
        assert_eq!(
            a.contain_dir.as_os_str(),
            "/sys/fs/bpf/patchgap/contain",
            "the agent's default directory"
        );

        let a = up(&["--contain", "--contain-dir", "/sys/fs/bpf/pg-test"]).unwrap();
        assert_eq!(a.contain_dir.as_os_str(), "/sys/fs/bpf/pg-test");

        // A directory without --contain would contain nothing: refused,
        // not ignored.
        let e = up(&["--contain-dir", "/sys/fs/bpf/x"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--contain"), "{e}");
    }

    fn incident(args: &[&str]) -> Result<super::IncidentCommand, clap::Error> {
        let cli = super::Cli::try_parse_from(["patchgap", "incident"].iter().chain(args))?;
        match cli.command {
            super::Command::Incident { command, .. } => Ok(command),
            _ => unreachable!("parsed as incident"),
        }
    }

    #[test]
    fn approve_needs_the_plan_hash() {
        let e = incident(&["approve", "INC-7"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--plan <HASH>"), "{e}");
        assert!(matches!(
            incident(&["approve", "INC-7", "--plan", "9c1f", "-o", "json"]).unwrap(),
            super::IncidentCommand::Approve { id, plan } if id == "INC-7" && plan == "9c1f"
        ));
    }

    /// --reason is required and only takes the three reasons, each sent
    /// under its own name; a bad one is refused listing the good ones.
    #[test]
    fn revert_reasons_are_checked_by_clap() {
        let e = incident(&["revert", "INC-7"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--reason"), "{e}");

        let e = incident(&["revert", "INC-7", "--reason", "oops"])
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let text = e.to_string();
        for good in ["false-positive", "not-affected", "resolved"] {
            assert!(text.contains(good), "{good} not listed: {text}");
        }

        for (name, want) in [
            ("false-positive", super::RevertReason::FalsePositive),
            ("not-affected", super::RevertReason::NotAffected),
            ("resolved", super::RevertReason::Resolved),
        ] {
            let c = incident(&["revert", "INC-7", "--reason", name]).unwrap();
            let super::IncidentCommand::Revert { action, reason, .. } = c else {
                panic!("not a revert")
            };
            assert_eq!(reason, want);
            assert_eq!(reason.as_str(), name, "sent as typed");
            assert_eq!(action, None, "every action by default");
        }
        let c = incident(&["revert", "7", "--action", "2", "--reason", "resolved"]).unwrap();
        assert!(matches!(
            c,
            super::IncidentCommand::Revert {
                action: Some(2),
                ..
            }
        ));
        // Action numbers start at 1; 0 would mean "all" on the wire.
        let e = incident(&["revert", "7", "--action", "0", "--reason", "resolved"])
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
