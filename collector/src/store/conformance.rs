//! A conformance suite for [`Store`] backends.
//!
//! Every check is a plain function that takes a fresh, empty store and
//! panics when the store breaks the contract the services rely on: sessions
//! and acks, idempotent resends, snapshots in parts, deltas, sockets and the
//! exposure query (through `fleet::exposure`, as the services read it).
//! The `checks!` list below gives every backend one `#[test]` per check:
//! SQLite in memory and on disk, and PostgreSQL on a real server.

use patchgap_proto::v1::{
    self, AgentMessage, Artifact, ArtifactKind, Delta, Exit, Hello, HostIdentity, Package, Process,
    ProcessKey, ProcessSockets, Snapshot, Socket, agent_message::Body,
};

use crate::{
    fleet::exposure::{self, FindingsQuery, PackageQuery},
    store::{
        AUDIT_GENESIS, AdvisoryMatch, AdvisoryRecord, AuditCheckpoint, AuditEntry, DeclaredPackage,
        EGRESS_BASELINE_VERSIONS, EgressAlertUpsert, IncidentCache, IncidentEventRecord,
        MatchScope, PackageName, PageLimit, ProcessCursor, Provenance, PutOutcome, SbomRecord,
        Session, Store, StoreError, TokenRecord,
    },
};

/// Declares the checks once: each backend gets one `#[test]` per check
/// from this list, and a check left out of it is a private function that
/// nothing calls, which the compiler flags (`dead_code`, denied in CI), so
/// a check cannot be written and never run.
macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        /// The SQLite backend, in memory.
        mod sqlite_in_memory {
            $(
                #[test]
                fn $check() {
                    let store = crate::store::sqlite::SqliteStore::in_memory().expect("in-memory store");
                    super::$check(&store);
                }
            )*
        }

        /// The SQLite backend, on disk (pooled WAL readers beside the writer).
        mod sqlite_on_disk {
            $(
                #[test]
                fn $check() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = crate::store::sqlite::SqliteStore::open(dir.path()).expect("open store");
                    super::$check(&store);
                }
            )*
        }

        /// The PostgreSQL backend, on a real PostgreSQL 15 that the test
        /// starts (`store::postgres::harness`), one fresh database per
        /// check. Skipped, saying so, only where PostgreSQL is not
        /// installed and `PATCHGAP_REQUIRE_POSTGRES` is unset (CI sets it).
        mod postgres_server {
            $(
                #[test]
                fn $check() {
                    let Some(cluster) = crate::store::postgres::harness::Cluster::shared() else {
                        return;
                    };
                    let db = cluster.database();
                    let target = crate::store::postgres::PgTarget::new(&db.url()).expect("target");
                    let store = crate::store::postgres::PgStore::connect(&target).expect("connect");
                    super::$check(&store);
                }
            )*
        }
    };
}

checks!(
    anonymous_code_keeps_its_content,
    hello_sessions,
    hello_rejects_missing_identity,
    apply_rejects_invalid_messages,
    apply_ignores_resends,
    snapshot_in_parts,
    new_session_snapshot_supersedes,
    delta_upserts_and_exits,
    delta_replaces_sockets,
    snapshot_replaces_sockets,
    sockets_carry_their_age_and_namespace,
    find_package_by_name_and_source,
    find_package_version_predicate,
    language_packages,
    advisories,
    advisory_provenance_and_sources,
    delete_advisory_takes_its_verdicts,
    advisories_stay_pending_until_their_verdicts,
    sbom_provenance,
    find_package_evidence_and_paths,
    stale_mapping_keeps_its_version,
    processes_by_host,
    pages_walk_the_whole_answer,
    a_package_most_processes_hold_is_walked,
    workloads_with_running_processes,
    workloads_on_named_hosts_and_coverage_rows,
    inventory_generations_move_with_what_workloads_read,
    heartbeats_together_store_what_each_alone_stores,
    matches_and_findings,
    sboms_declare_packages,
    history_and_connections,
    audit_log_only_extends_its_chain,
    tokens_and_revocation,
    incidents_open_once_per_key,
    incident_log_only_extends,
    incidents_list_newest_first,
    outbox_enqueues_once_per_webhook_id,
    outbox_leases_exclude_and_expire,
    outbox_records_outcomes_once,
    outbox_gone_disables_the_endpoint,
    egress_baselines_are_versioned,
    egress_alerts_one_open_per_key,
    process_chain_walks_to_the_root,
    a_pass_marks_only_the_packages_it_read,
    instance_first_start_keeps_exited_processes,
    hostname_of_key_reads_the_keyed_host,
    shared_artifacts_store_what_inline_ones_store,
    workload_package_spans_over_history,
    singletons_exclude_until_dropped,
    retention_drops_old_history_and_keeps_current,
    retention_keeps_what_open_incidents_may_need,
    retention_size_bound_evicts_oldest_first,
);

mod instances;
use instances::{
    hostname_of_key_reads_the_keyed_host, instance_first_start_keeps_exited_processes,
};
mod singletons;
use singletons::singletons_exclude_until_dropped;
mod tables;
use tables::shared_artifacts_store_what_inline_ones_store;
mod retention;
use retention::{
    retention_drops_old_history_and_keeps_current, retention_keeps_what_open_incidents_may_need,
    retention_size_bound_evicts_oldest_first,
};
mod outbox;
use outbox::{
    outbox_enqueues_once_per_webhook_id, outbox_gone_disables_the_endpoint,
    outbox_leases_exclude_and_expire, outbox_records_outcomes_once,
};

// ---- Message builders -------------------------------------------------------

pub(crate) const T0: i64 = 1_700_000_000_000;

fn identity(host_id: &str, hostname: &str) -> HostIdentity {
    HostIdentity {
        host_id: host_id.into(),
        hostname: hostname.into(),
        boot_id: "boot-1".into(),
        kernel: "6.1.0-test".into(),
        labels: [("env".to_string(), "test".to_string())].into(),
    }
}

pub(crate) fn hello_for(host_id: &str, hostname: &str, session: &str) -> Hello {
    Hello {
        host: Some(identity(host_id, hostname)),
        agent_version: "0.1.0".into(),
        capabilities: Some(v1::Capabilities::default()),
        session_id: session.into(),
    }
}

/// Hello for the default test host.
pub(crate) fn hello(session: &str) -> Hello {
    hello_for("machine-1", "alpha", session)
}

fn key(pid: u32) -> ProcessKey {
    // Distinct from the pid, so a backend that confuses them is caught.
    ProcessKey {
        pid,
        start_ticks: 1000 + u64::from(pid) * 7,
    }
}

pub(crate) fn deb(name: &str, source: &str, version: &str) -> Package {
    Package {
        ecosystem: "deb".into(),
        name: name.into(),
        source: source.into(),
        version: version.into(),
        arch: "amd64".into(),
        purl: format!("pkg:deb/debian/{name}@{version}?arch=amd64"),
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    }
}

fn artifact(path: &str, inode: u64, kind: ArtifactKind, package: Option<Package>) -> Artifact {
    Artifact {
        path: path.as_bytes().to_vec(),
        dev: 0x801,
        inode,
        kind: kind as i32,
        deleted: false,
        stale: false,
        package,
        content: None,
    }
}

pub(crate) fn exe(path: &str, inode: u64, package: Option<Package>) -> Artifact {
    artifact(path, inode, ArtifactKind::Exe, package)
}

pub(crate) fn mapped(path: &str, inode: u64, package: Option<Package>) -> Artifact {
    artifact(path, inode, ArtifactKind::Mapped, package)
}

pub(crate) fn process(pid: u32, artifacts: Vec<Artifact>) -> Process {
    let exe = artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::Exe as i32)
        .map(|a| a.path.clone())
        .unwrap_or_default();
    Process {
        key: Some(key(pid)),
        ppid: 1,
        uid: 1000,
        euid: 1000,
        exe,
        cmdline: format!("proc-{pid} --flag"),
        comm: format!("proc-{pid}"),
        cgroup: "/system.slice/test.service".into(),
        mnt_ns: 4026531841,
        net_ns: 4026531840,
        start_time_ms: T0 - 60_000,
        workload: "unit/test.service".into(),
        root: b"/".to_vec(),
        artifacts,
        artifact_refs: Vec::new(),
        partial: false,
        privilege: Some(v1::Privilege {
            summary: format!("uid{pid}"),
            privileged: pid == 10,
            ..Default::default()
        }),
        net_ns_name: String::new(),
    }
}

/// The workload every test process belongs to.
fn unit_workload() -> v1::Workload {
    v1::Workload {
        id: "unit/test.service".into(),
        kind: "systemd".into(),
        unit: "test.service".into(),
        cgroup: "/system.slice/test.service".into(),
        ..Default::default()
    }
}

/// A process that maps libc (owned by libc6) and nothing else of interest.
fn plain(pid: u32) -> Process {
    process(
        pid,
        vec![
            exe("/usr/bin/plain", 100, Some(deb("plain", "plain", "1.0-1"))),
            mapped(
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                200,
                Some(deb("libc6", "glibc", "2.36-9")),
            ),
        ],
    )
}

fn socket(local_port: u32, remote_port: u32, outbound: bool, inode: u64) -> Socket {
    Socket {
        protocol: "tcp".into(),
        local_addr: "10.0.0.5".into(),
        local_port,
        remote_addr: if remote_port == 0 {
            "0.0.0.0".into()
        } else {
            "10.0.0.9".into()
        },
        remote_port,
        state: if remote_port == 0 {
            "LISTEN".into()
        } else {
            "ESTABLISHED".into()
        },
        inode,
        outbound,
        connect_ms: 0,
    }
}

fn sockets(pid: u32, sockets: Vec<Socket>) -> ProcessSockets {
    ProcessSockets {
        key: Some(key(pid)),
        sockets,
    }
}

pub(crate) fn msg(seq: u64, body: Body) -> AgentMessage {
    AgentMessage {
        seq,
        body: Some(body),
    }
}

/// One part of a snapshot.
fn part(
    id: &str,
    part: u32,
    last: bool,
    processes: Vec<Process>,
    socks: Vec<ProcessSockets>,
) -> Body {
    Body::Snapshot(Snapshot {
        snapshot_id: id.into(),
        part,
        last,
        scanned_at_ms: T0 + i64::from(part),
        stats: last.then(|| v1::ScanStats {
            processes: 1,
            ..Default::default()
        }),
        processes,
        sockets: socks,
        workloads: vec![unit_workload()],
        artifacts: Vec::new(),
    })
}

/// A complete snapshot in one part.
pub(crate) fn snapshot(id: &str, processes: Vec<Process>, socks: Vec<ProcessSockets>) -> Body {
    part(id, 0, true, processes, socks)
}

pub(crate) fn delta(upserts: Vec<Process>, exits: &[u32], socks: Vec<ProcessSockets>) -> Body {
    Body::Delta(Delta {
        scanned_at_ms: T0 + 10_000,
        upserts,
        exits: exits
            .iter()
            .map(|pid| Exit {
                key: Some(key(*pid)),
                exit_time_ms: T0 + 10_000,
            })
            .collect(),
        sockets: socks,
        workloads: Vec::new(),
        connections: Vec::new(),
        stats: None,
        artifacts: Vec::new(),
    })
}

pub(crate) fn heartbeat() -> Body {
    Body::Heartbeat(v1::Heartbeat {
        sent_at_ms: T0,
        last_scan: None,
        capabilities: Some(v1::Capabilities {
            ebpf: false,
            ebpf_reason: "test".into(),
            root: true,
            rescan_interval_secs: 30,
            ..Default::default()
        }),
        sense: None,
        health: Some(v1::AgentHealth {
            scanning: true,
            scan_restarts: 2,
            spool_dropped: 5,
            ..Default::default()
        }),
        ..Default::default()
    })
}

// ---- Store helpers -----------------------------------------------------------

fn open(store: &dyn Store, h: &Hello) -> Session {
    store
        .hello(h, T0)
        .unwrap_or_else(|e| panic!("hello {:?}: {e}", h.session_id))
}

fn apply(store: &dyn Store, session: &Session, m: AgentMessage) {
    let seq = m.seq;
    store
        .apply(session, &m, T0 + seq as i64)
        .unwrap_or_else(|e| panic!("apply seq {seq}: {e}"));
}

/// The running pids (of `host`, or of every host), sorted.
fn running(store: &dyn Store, host: Option<&str>) -> Vec<u32> {
    let mut pids: Vec<u32> = store
        .processes(host)
        .expect("processes")
        .iter()
        .map(|p| p.key.expect("a process summary has a key").pid)
        .collect();
    pids.sort_unstable();
    pids
}

fn summary(store: &dyn Store, pid: u32) -> v1::ProcessSummary {
    store
        .processes(None)
        .expect("processes")
        .into_iter()
        .find(|p| p.key.is_some_and(|k| k.pid == pid))
        .unwrap_or_else(|| panic!("pid {pid} is not running"))
}

fn find(store: &dyn Store, name: &str) -> Vec<v1::Match> {
    find_where(store, name, &|_| true)
}

fn find_where(store: &dyn Store, name: &str, ok: &dyn Fn(&str) -> bool) -> Vec<v1::Match> {
    exposure::find_package(store, &query(name, &|_, v| ok(v), None)).expect("find_package")
}

fn query<'a>(
    name: &'a str,
    version_ok: &'a dyn Fn(&str, &str) -> bool,
    window: Option<(i64, i64)>,
) -> PackageQuery<'a> {
    PackageQuery {
        name,
        ecosystem: None,
        source: None,
        version_ok,
        window,
    }
}

/// The matched pids, sorted (a pid appears once per matching package).
fn pids(matches: &[v1::Match]) -> Vec<u32> {
    let mut pids: Vec<u32> = matches
        .iter()
        .map(|m| m.key.expect("a match has a key").pid)
        .collect();
    pids.sort_unstable();
    pids
}

fn is_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Invalid(_)))
}

// ---- Checks -----------------------------------------------------------------

/// New hosts and sessions start at 0; a known session resumes at its ack; a
/// new session of a known host starts over on the same host.
fn hello_sessions(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    assert!(s.new, "a new host's session is new");
    assert_eq!(s.acked_seq, 0, "a new session has nothing acked");

    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );
    apply(store, &s, msg(2, heartbeat()));
    apply(store, &s, msg(3, delta(vec![plain(11)], &[], vec![])));

    let again = open(store, &hello("session-a"));
    assert_eq!(
        again,
        Session {
            host: s.host,
            acked_seq: 3,
            new: false,
            epoch: s.epoch,
        },
        "the same session resumes after its last applied seq"
    );
    assert_eq!(running(store, None), vec![10, 11], "hello loses nothing");

    let other = open(store, &hello("session-b"));
    assert!(other.new, "another session of a known host is new");
    assert_eq!(other.epoch, s.epoch + 1, "a new session is a new epoch");
    // The old session's stream may linger; it must not write any more.
    assert!(matches!(
        store.apply(&s, &msg(4, heartbeat()), 0),
        Err(StoreError::Superseded)
    ));
    assert_eq!(other.acked_seq, 0, "another session starts over");
    assert_eq!(other.host, s.host, "it is the same host");
    // Its processes stay until the new session's first full snapshot.
    assert_eq!(running(store, None), vec![10, 11]);

    // The new session's seq 1 is not mistaken for a resend of the old one's.
    apply(
        store,
        &other,
        msg(1, snapshot("snap-b", vec![plain(10), plain(12)], vec![])),
    );
    assert_eq!(running(store, None), vec![10, 12]);
    assert_eq!(open(store, &hello("session-b")).acked_seq, 1);

    let hosts = store.hosts().expect("hosts");
    assert_eq!(hosts.len(), 1, "one host however many sessions: {hosts:?}");
    let h = &hosts[0];
    assert_eq!(h.identity.host_id, "machine-1");
    assert_eq!(h.identity.hostname, "alpha");
    assert_eq!(h.identity.boot_id, "boot-1");
    assert_eq!(
        h.identity.labels.get("env").map(String::as_str),
        Some("test")
    );
    assert_eq!(h.agent_version, "0.1.0");
    assert_eq!(h.processes_running, 2);
    assert!(h.last_full_scan_ms > 0, "a complete snapshot was stored");
    let health = h.health.as_ref().expect("the heartbeat's health is kept");
    assert_eq!((health.scan_restarts, health.spool_dropped), (2, 5));
}

/// A Hello must say which host it is.
fn hello_rejects_missing_identity(store: &dyn Store) {
    let mut h = hello("session-a");
    h.host = None;
    assert!(
        is_invalid(store.hello(&h, T0)),
        "hello without a host identity is invalid"
    );
    h.host = Some(HostIdentity::default());
    assert!(
        is_invalid(store.hello(&h, T0)),
        "hello with neither host id nor hostname is invalid"
    );
    assert!(store.hosts().expect("hosts").is_empty(), "nothing stored");
}

/// Bodiless messages, Hellos after the first message and processes without
/// keys are invalid, and a rejected message is not acked.
fn apply_rejects_invalid_messages(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );

    let none = AgentMessage { seq: 2, body: None };
    assert!(
        is_invalid(store.apply(&s, &none, T0)),
        "a message needs a body"
    );
    let again = msg(2, Body::Hello(hello("session-a")));
    assert!(
        is_invalid(store.apply(&s, &again, T0)),
        "a Hello after the first message is invalid"
    );
    let mut keyless = plain(11);
    keyless.key = None;
    let bad = msg(2, delta(vec![keyless], &[], vec![]));
    assert!(
        is_invalid(store.apply(&s, &bad, T0)),
        "a process needs a key"
    );

    assert_eq!(
        open(store, &hello("session-a")).acked_seq,
        1,
        "rejected messages are not acked"
    );
    assert_eq!(running(store, None), vec![10]);
    // The same seq, valid this time, is applied.
    apply(store, &s, msg(2, delta(vec![plain(11)], &[], vec![])));
    assert_eq!(running(store, None), vec![10, 11]);
}

/// A message at or below the acked seq is a resend and changes nothing.
fn apply_ignores_resends(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );
    let upsert_11 = msg(
        2,
        delta(
            vec![process(
                11,
                vec![mapped(
                    "/usr/lib/libz.so.1",
                    300,
                    Some(deb("zlib1g", "zlib", "1.2.13")),
                )],
            )],
            &[],
            vec![],
        ),
    );
    apply(store, &s, upsert_11.clone());
    apply(store, &s, msg(3, delta(vec![], &[11], vec![])));
    assert_eq!(running(store, None), vec![10]);

    // Seq 2 again after seq 3: 11 stays exited.
    apply(store, &s, upsert_11);
    assert_eq!(running(store, None), vec![10], "a resend revived an exit");
    assert!(find(store, "zlib1g").is_empty(), "a resend revived a match");

    // A resend whose content differs (it must not, but the seq decides).
    apply(store, &s, msg(3, delta(vec![plain(12)], &[10], vec![])));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-x", vec![plain(13)], vec![])),
    );
    assert_eq!(running(store, None), vec![10], "a resend was applied");
    assert_eq!(
        open(store, &hello("session-a")).acked_seq,
        3,
        "a resend moved the ack"
    );

    // The stream goes on after the resends.
    apply(store, &s, msg(4, delta(vec![plain(14)], &[], vec![])));
    assert_eq!(running(store, None), vec![10, 14]);
    assert_eq!(open(store, &hello("session-a")).acked_seq, 4);
}

/// A snapshot in parts: every part's processes run; only the last part
/// retires what the whole snapshot did not name, and it stays in history.
fn snapshot_in_parts(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-0", vec![plain(5), plain(10)], vec![])),
    );

    let libssl = |v: &str| {
        Some(mapped(
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            400,
            Some(deb("libssl3", "openssl", v)),
        ))
    };
    let with_ssl = |pid: u32| {
        let mut p = plain(pid);
        p.artifacts.extend(libssl("3.0.15-1"));
        p
    };
    apply(
        store,
        &s,
        msg(
            2,
            part("snap-1", 0, false, vec![with_ssl(10), plain(20)], vec![]),
        ),
    );
    assert_eq!(
        running(store, None),
        vec![5, 10, 20],
        "a part that is not the last retires nothing"
    );
    apply(
        store,
        &s,
        msg(3, part("snap-1", 1, true, vec![with_ssl(30)], vec![])),
    );
    assert_eq!(
        running(store, None),
        vec![10, 20, 30],
        "both parts run; what neither named exited"
    );
    assert_eq!(pids(&find(store, "libssl3")), vec![10, 30]);

    // A later complete snapshot that omits 30.
    apply(
        store,
        &s,
        msg(4, snapshot("snap-2", vec![with_ssl(10), plain(20)], vec![])),
    );
    assert_eq!(running(store, None), vec![10, 20]);
    assert_eq!(
        pids(&find(store, "libssl3")),
        vec![10],
        "an exited process is no longer exposed"
    );
    let hosts = store.hosts().expect("hosts");
    assert_eq!(hosts[0].processes_running, 2);
}

/// After an agent restart, the new session's first snapshot replaces the
/// old session's view of the host.
fn new_session_snapshot_supersedes(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-a", vec![plain(10), plain(11)], vec![])),
    );
    apply(store, &s, msg(2, delta(vec![plain(12)], &[], vec![])));
    let b = open(store, &hello("session-b"));
    apply(
        store,
        &b,
        msg(1, snapshot("snap-b", vec![plain(11), plain(13)], vec![])),
    );
    assert_eq!(running(store, None), vec![11, 13]);
}

/// Code mapped from no file on disk (issue 11, defect 5) is listed with the
/// process, with its content: a memfd hashed, an unlinked file too large to
/// hash with the reason. The same memfd rewritten (same inode, another
/// hash) is another artifact, and packages never include it.
fn anonymous_code_keeps_its_content(store: &dyn Store) {
    let anon = |path: &str, inode, content: v1::Content| Artifact {
        deleted: true,
        stale: path.starts_with("/tmp"),
        content: Some(content),
        ..artifact(path, inode, ArtifactKind::Anonymous, None)
    };
    let hashed = |sha: &str| v1::Content {
        size: 4096,
        sha256: sha.into(),
        unhashed: String::new(),
    };
    let s = open(store, &hello("session-a"));
    let mut p10 = plain(10);
    p10.artifacts
        .push(anon("/memfd:payload", 7, hashed("ab01")));
    p10.artifacts.push(anon(
        "/tmp/x.so",
        8,
        v1::Content {
            size: 100 << 20,
            sha256: String::new(),
            unhashed: "larger than 64 MiB".into(),
        },
    ));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![p10.clone(), plain(11)], vec![])),
    );
    let p = summary(store, 10);
    assert_eq!((p.artifacts, p.packages), (4, 2));
    // By path.
    assert_eq!(p.anonymous_code, p10.artifacts[2..].to_vec());
    assert!(summary(store, 11).anonymous_code.is_empty());

    p10.artifacts[2] = anon("/memfd:payload", 7, hashed("cd02"));
    apply(store, &s, msg(2, delta(vec![p10], &[], vec![])));
    let p = summary(store, 10);
    let memfd = p
        .anonymous_code
        .iter()
        .find(|a| a.path == b"/memfd:payload");
    assert_eq!(
        memfd
            .and_then(|a| a.content.as_ref())
            .map(|c| c.sha256.as_str()),
        Some("cd02")
    );
    assert!(find(store, "").is_empty(), "anonymous code matches no name");
}

/// Delta upserts add and replace processes; exits retire them.
fn delta_upserts_and_exits(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );
    let p = summary(store, 10);
    assert_eq!(p.key, Some(key(10)));
    assert_eq!(p.host, "alpha");
    assert_eq!(p.workload, "unit/test.service");
    assert_eq!(p.exe, b"/usr/bin/plain");
    assert_eq!(p.cmdline, "proc-10 --flag");
    assert_eq!((p.ppid, p.uid), (1, 1000));
    assert_eq!(p.start_time_ms, T0 - 60_000);
    assert_eq!((p.artifacts, p.packages, p.stale_artifacts), (2, 2, 0));

    // A new process, with a file no package owns.
    let mut p11 = plain(11);
    p11.artifacts.push(mapped("/opt/vendor/libv.so", 500, None));
    apply(store, &s, msg(2, delta(vec![p11], &[], vec![])));
    assert_eq!(running(store, None), vec![10, 11]);
    let p = summary(store, 11);
    assert_eq!(
        (p.artifacts, p.packages),
        (3, 2),
        "an unowned file is an artifact but no package"
    );
    assert!(find(store, "").is_empty(), "unowned files match no name");

    // 10 now maps zlib too: a full replacement of its record.
    let mut p10 = plain(10);
    p10.cmdline = "proc-10 --reloaded".into();
    p10.artifacts.push(mapped(
        "/usr/lib/libz.so.1",
        300,
        Some(deb("zlib1g", "zlib", "1:1.2.13")),
    ));
    apply(store, &s, msg(3, delta(vec![p10], &[], vec![])));
    let p = summary(store, 10);
    assert_eq!(p.cmdline, "proc-10 --reloaded");
    assert_eq!((p.artifacts, p.packages), (3, 3));
    assert_eq!(pids(&find(store, "zlib1g")), vec![10]);

    // ... and then stops mapping it.
    apply(store, &s, msg(4, delta(vec![plain(10)], &[], vec![])));
    assert!(
        find(store, "zlib1g").is_empty(),
        "the upsert replaced the set"
    );
    assert_eq!(summary(store, 10).artifacts, 2);

    // Exits, including one of a process never seen (harmless).
    apply(store, &s, msg(5, delta(vec![], &[11, 99], vec![])));
    assert_eq!(running(store, None), vec![10]);
    assert!(!pids(&find(store, "libc6")).contains(&11));

    // The same key upserted again runs again.
    apply(store, &s, msg(6, delta(vec![plain(11)], &[], vec![])));
    assert_eq!(running(store, None), vec![10, 11]);
    assert_eq!(store.hosts().expect("hosts")[0].processes_running, 2);
}

/// Delta socket lists replace a process's sockets; an upsert without one
/// keeps them; an exit drops them.
fn delta_replaces_sockets(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![plain(10), plain(11)],
                vec![sockets(
                    10,
                    vec![
                        socket(40000, 443, true, 1),
                        socket(40001, 5432, true, 2),
                        socket(8080, 0, false, 3),
                    ],
                )],
            ),
        ),
    );
    assert_eq!(summary(store, 10).outbound_sockets, 2);
    assert_eq!(summary(store, 11).outbound_sockets, 0);

    let mut p10 = plain(10);
    p10.cmdline = "changed".into();
    apply(store, &s, msg(2, delta(vec![p10], &[], vec![])));
    assert_eq!(
        summary(store, 10).outbound_sockets,
        2,
        "an upsert without a socket list keeps the sockets"
    );

    apply(
        store,
        &s,
        msg(
            3,
            delta(
                vec![plain(12)],
                &[],
                vec![
                    sockets(10, vec![socket(40002, 443, true, 4)]),
                    sockets(
                        12,
                        vec![socket(40003, 53, true, 5), socket(40004, 53, true, 6)],
                    ),
                ],
            ),
        ),
    );
    assert_eq!(
        summary(store, 10).outbound_sockets,
        1,
        "replaced, not added"
    );
    assert_eq!(summary(store, 12).outbound_sockets, 2);

    apply(
        store,
        &s,
        msg(4, delta(vec![], &[], vec![sockets(10, vec![])])),
    );
    assert_eq!(
        summary(store, 10).outbound_sockets,
        0,
        "an empty list clears"
    );

    // 12 exits and comes back (same key): its old sockets are gone.
    apply(store, &s, msg(5, delta(vec![], &[12], vec![])));
    apply(store, &s, msg(6, delta(vec![plain(12)], &[], vec![])));
    assert_eq!(
        summary(store, 12).outbound_sockets,
        0,
        "an exit dropped the sockets"
    );
}

/// A snapshot is a full inventory: a process it names without a socket list
/// has no sockets, whatever was stored before.
/// The process summary carries the sockets themselves (with the time of
/// the connect that added one the tables have not shown yet), when its
/// agent last read the socket tables, and the network namespace by inode
/// and name; connections name the namespace too (issue 11, defect 9).
fn sockets_carry_their_age_and_namespace(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let mut p = plain(10);
    p.net_ns = 4026532999;
    p.net_ns_name = "blue".into();
    p.privilege.as_mut().expect("privilege").host_net_ns = false;
    let mut host = plain(11);
    host.privilege.as_mut().expect("privilege").host_net_ns = true;
    let mut snap = snapshot("snap-1", vec![p, host], vec![]);
    if let Body::Snapshot(sn) = &mut snap {
        sn.stats
            .as_mut()
            .expect("last part has stats")
            .sockets_read_ms = T0 - 5_000;
    }
    apply(store, &s, msg(1, snap));
    let got = summary(store, 10);
    assert_eq!(
        (got.net_ns, got.net_ns_name.as_str(), got.host_net_ns),
        (4026532999, "blue", false)
    );
    assert_eq!(got.sockets_read_ms, T0 - 5_000);
    assert!(got.sockets.is_empty());
    assert!(summary(store, 11).host_net_ns);

    // A connect eBPF saw: the socket (no local end, no inode yet) and its
    // connection, in one delta whose stats say the tables are as old as before.
    let mut from_connect = socket(0, 19090, true, 0);
    from_connect.local_addr = String::new();
    from_connect.remote_addr = "127.0.0.1".into();
    from_connect.connect_ms = T0 + 9_000;
    let mut d = match delta(vec![], &[], vec![sockets(10, vec![from_connect.clone()])]) {
        Body::Delta(d) => d,
        _ => unreachable!(),
    };
    d.stats = Some(v1::ScanStats {
        sockets_read_ms: T0 - 5_000,
        ..Default::default()
    });
    d.connections = vec![v1::Connection {
        key: Some(key(10)),
        protocol: "tcp".into(),
        remote_addr: "127.0.0.1".into(),
        remote_port: 19090,
        first_seen_ms: T0 + 9_000,
        last_seen_ms: T0 + 9_000,
        count: 1,
        last_result: 0,
        names: Vec::new(),
    }];
    apply(store, &s, msg(2, Body::Delta(d)));
    let got = summary(store, 10);
    assert_eq!(got.sockets, vec![from_connect]);
    assert_eq!((got.outbound_sockets, got.sockets_total), (1, 1));
    assert_eq!(got.sockets_read_ms, T0 - 5_000);
    let c = store.connections(None, 0).expect("connections");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].net_ns, c[0].net_ns_name.as_str()),
        (4026532999, "blue")
    );
    // A busy server: the summary lists 256 sockets, outbound ones first,
    // and counts them all.
    let many: Vec<Socket> = (0..300u32)
        .map(|i| {
            socket(
                8080,
                if i < 10 { 443 } else { 0 },
                i < 10,
                1000 + u64::from(i),
            )
        })
        .collect();
    apply(
        store,
        &s,
        msg(3, delta(vec![], &[], vec![sockets(11, many)])),
    );
    let got = summary(store, 11);
    assert_eq!((got.sockets.len(), got.sockets_total), (256, 300));
    assert!(got.sockets[..10].iter().all(|s| s.outbound));
}

fn snapshot_replaces_sockets(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![plain(10), plain(11)],
                vec![
                    sockets(10, vec![socket(40000, 443, true, 1)]),
                    sockets(11, vec![socket(40001, 443, true, 2)]),
                ],
            ),
        ),
    );
    assert_eq!(summary(store, 10).outbound_sockets, 1);
    apply(
        store,
        &s,
        msg(
            2,
            snapshot(
                "snap-2",
                vec![plain(10), plain(11)],
                vec![sockets(
                    11,
                    vec![socket(40001, 443, true, 2), socket(40005, 80, true, 7)],
                )],
            ),
        ),
    );
    assert_eq!(
        summary(store, 10).outbound_sockets,
        0,
        "a snapshot that lists no sockets for a process clears them"
    );
    assert_eq!(summary(store, 11).outbound_sockets, 2);
}

/// find_package answers by binary package name and by source name.
fn find_package_by_name_and_source(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let ssl = deb("libssl3", "openssl", "3.0.15-1~deb12u1");
    let cli = deb("openssl", "openssl", "3.0.15-1~deb12u1");
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![
                    process(
                        10,
                        vec![
                            exe("/usr/bin/curl", 600, Some(deb("curl", "curl", "7.88.1-10"))),
                            mapped(
                                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                                400,
                                Some(ssl.clone()),
                            ),
                        ],
                    ),
                    process(
                        11,
                        vec![
                            exe("/usr/bin/openssl", 700, Some(cli.clone())),
                            mapped(
                                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                                400,
                                Some(ssl.clone()),
                            ),
                        ],
                    ),
                    plain(12),
                ],
                vec![],
            ),
        ),
    );

    let by_binary = find(store, "libssl3");
    assert_eq!(pids(&by_binary), vec![10, 11]);
    for m in &by_binary {
        assert_eq!(m.package.as_ref(), Some(&ssl));
        assert_eq!(m.host, "alpha");
        assert_eq!(m.host_id, "machine-1");
        assert_eq!(m.workload, "unit/test.service");
        assert_eq!(m.uid, 1000);
        assert_eq!(m.process_start_ms, T0 - 60_000);
        assert_eq!(m.key, Some(key(m.key.unwrap().pid)), "start ticks kept");
    }
    let curl = by_binary.iter().find(|m| m.key.unwrap().pid == 10).unwrap();
    assert_eq!(curl.exe, b"/usr/bin/curl");
    assert_eq!(curl.cmdline, "proc-10 --flag");

    // By source: libssl3 in both, and the openssl binary package in 11.
    let by_source = find(store, "openssl");
    assert_eq!(pids(&by_source), vec![10, 11, 11]);
    let mut packages: Vec<(u32, &str)> = by_source
        .iter()
        .map(|m| {
            (
                m.key.unwrap().pid,
                m.package.as_ref().unwrap().name.as_str(),
            )
        })
        .collect();
    packages.sort_unstable();
    assert_eq!(
        packages,
        vec![(10, "libssl3"), (11, "libssl3"), (11, "openssl")]
    );

    assert_eq!(pids(&find(store, "glibc")), vec![12], "source of libc6");
    assert_eq!(pids(&find(store, "libc6")), vec![12]);
    assert!(find(store, "libssl").is_empty(), "names match exactly");
    assert!(find(store, "nonexistent").is_empty());
}

/// Language packages: both identities of a distro-shipped one, PEP 503 names,
/// the ecosystem and source filters, and the evidence levels beyond exe and
/// mapped.
fn language_packages(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let distro = deb(
        "python3-cryptography",
        "python-cryptography",
        "38.0.4-3+deb12u1",
    );
    let upstream = Package {
        ecosystem: "pypi".into(),
        name: "cryptography".into(),
        source: String::new(),
        version: "38.0.4".into(),
        arch: String::new(),
        purl: "pkg:pypi/cryptography@38.0.4".into(),
        distro: Some(Box::new(distro.clone())),
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    };
    let from_pip = Package {
        distro: None,
        ..upstream.clone()
    };
    let yaml = Package {
        ecosystem: "pypi".into(),
        name: "PyYAML".into(),
        source: String::new(),
        version: "6.0.1".into(),
        arch: String::new(),
        purl: "pkg:pypi/pyyaml@6.0.1".into(),
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    };
    let jar = Package {
        ecosystem: "maven".into(),
        name: "commons-io".into(),
        source: "commons-io".into(),
        version: "2.11.0".into(),
        arch: String::new(),
        purl: "pkg:maven/commons-io/commons-io@2.11.0".into(),
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    };
    let module = Package {
        ecosystem: "golang".into(),
        name: "golang.org/x/net".into(),
        source: String::new(),
        version: "v0.23.0".into(),
        arch: String::new(),
        purl: "pkg:golang/golang.org/x/net@v0.23.0".into(),
        distro: None,
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    };
    let dist = "/usr/lib/python3/dist-packages/cryptography";
    let so = format!("{dist}/hazmat/bindings/_rust.abi3.so");
    let processes = vec![
        // Imports cryptography from Debian's package: the mapped extension
        // carries both identities, as two artifacts on one path.
        process(
            10,
            vec![
                mapped(&so, 500, Some(distro.clone())),
                artifact(&so, 500, ArtifactKind::Mapped, Some(upstream.clone())),
                artifact(
                    "/usr/lib/python3/dist-packages/PyYAML-6.0.1.dist-info",
                    501,
                    ArtifactKind::Installed,
                    Some(yaml.clone()),
                ),
            ],
        ),
        // A venv's own copy, only installed.
        process(
            11,
            vec![
                artifact(
                    "/srv/venv/lib/python3.11/site-packages/cryptography-38.0.4.dist-info",
                    600,
                    ArtifactKind::Installed,
                    Some(from_pip.clone()),
                ),
                artifact(
                    "/srv/venv/lib/python3.11/site-packages/zope.interface-6.0.dist-info",
                    601,
                    ArtifactKind::Installed,
                    Some(Package {
                        name: "zope.interface".into(),
                        version: "6.0".into(),
                        purl: "pkg:pypi/zope-interface@6.0".into(),
                        ..from_pip.clone()
                    }),
                ),
            ],
        ),
        // A JVM holding a jar open, and a Go binary.
        process(
            12,
            vec![
                artifact(
                    "/usr/share/java/commons-io-2.11.0.jar",
                    700,
                    ArtifactKind::Opened,
                    Some(jar.clone()),
                ),
                artifact(
                    "/usr/local/bin/tool",
                    701,
                    ArtifactKind::Embedded,
                    Some(module.clone()),
                ),
            ],
        ),
    ];
    apply(store, &s, msg(1, snapshot("snap-1", processes, vec![])));

    let all = find(store, "cryptography");
    assert_eq!(pids(&all), vec![10, 11]);
    let debian = all.iter().find(|m| m.key.unwrap().pid == 10).unwrap();
    assert_eq!(
        debian.package.as_ref(),
        Some(&upstream),
        "distro identity kept"
    );
    assert_eq!(debian.evidence, "mapped");
    let venv = all.iter().find(|m| m.key.unwrap().pid == 11).unwrap();
    assert_eq!(venv.package.as_ref(), Some(&from_pip));
    assert_eq!(venv.evidence, "installed");
    // The distro's own name finds the same process through the deb artifact.
    assert_eq!(pids(&find(store, "python3-cryptography")), vec![10]);

    // PEP 503: any spelling of a PyPI name; other ecosystems are only
    // case-insensitive.
    for spelling in ["PyYAML", "pyyaml", "PYYAML"] {
        assert_eq!(pids(&find(store, spelling)), vec![10], "{spelling}");
    }
    for spelling in [
        "zope.interface",
        "zope_interface",
        "Zope-Interface",
        "zope__interface",
    ] {
        assert_eq!(pids(&find(store, spelling)), vec![11], "{spelling}");
    }
    assert_eq!(pids(&find(store, "COMMONS-IO")), vec![12]);
    assert!(
        find(store, "commons_io").is_empty(),
        "PEP 503 is for PyPI only"
    );

    let only = |store: &dyn Store, name: &str, eco: Option<&str>, src: Option<&str>| {
        let q = PackageQuery {
            source: src,
            ecosystem: eco,
            ..query(name, &|_, _| true, None)
        };
        pids(&exposure::find_package(store, &q).expect("find_package"))
    };
    assert_eq!(
        only(store, "cryptography", Some("pypi"), None),
        vec![10, 11]
    );
    assert!(only(store, "cryptography", Some("deb"), None).is_empty());
    assert_eq!(
        only(store, "commons-io", Some("maven"), Some("commons-io")),
        vec![12]
    );
    assert!(only(store, "commons-io", Some("maven"), Some("org.example")).is_empty());
    let go = find(store, "golang.org/x/net");
    assert_eq!(pids(&go), vec![12]);
    assert_eq!(go[0].evidence, "embedded");
    assert_eq!(find(store, "commons-io")[0].evidence, "opened");

    // The version predicate sees the ecosystem, so each can be compared in
    // its own order.
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |eco: &str, v: &str| {
        seen.borrow_mut().push(format!("{eco} {v}"));
        true
    };
    let q = query("cryptography", &record, None);
    exposure::find_package(store, &q).expect("find_package");
    assert!(
        seen.borrow().iter().all(|s| s == "pypi 38.0.4"),
        "{:?}",
        seen.borrow()
    );
}

fn advisory_record(id: &str, modified_ms: i64, aliases: &[&str]) -> AdvisoryRecord {
    AdvisoryRecord {
        id: id.into(),
        modified: format!("@{modified_ms}"),
        modified_ms,
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        summary: format!("summary of {id}"),
        severity: "HIGH".into(),
        score: Some(7.5),
        vector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N".into(),
        packages: vec![("pypi".into(), "PyPI".into(), "cryptography".into())],
        source: format!("{id}.json"),
        data: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        ..Default::default()
    }
}

/// Advisories: idempotent re-import, newer replaces older, older is left
/// out, every alias resolves, withdrawn ones are kept and say so.
fn advisories(store: &dyn Store) {
    let a = advisory_record(
        "GHSA-aaaa-bbbb-cccc",
        1000,
        &["CVE-2023-23931", "PYSEC-2023-11"],
    );
    let b = AdvisoryRecord {
        packages: vec![("deb".into(), "Debian:12".into(), "openssl".into())],
        ..advisory_record("DSA-5417-1", 1000, &["CVE-2023-0464"])
    };
    let put = store
        .put_advisories(&[a.clone(), b.clone()], false)
        .expect("put");
    assert_eq!(put, [PutOutcome::Added, PutOutcome::Added]);
    let again = store
        .put_advisories(&[a.clone(), b.clone()], false)
        .expect("put again");
    assert_eq!(again, [PutOutcome::Unchanged, PutOutcome::Unchanged]);

    for name in [
        "GHSA-aaaa-bbbb-cccc",
        "ghsa-aaaa-bbbb-cccc",
        "CVE-2023-23931",
        "PYSEC-2023-11",
    ] {
        let found = store.advisory(name).expect("advisory");
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(found[0].id, a.id);
        assert_eq!(found[0].aliases, ["CVE-2023-23931", "PYSEC-2023-11"]);
        assert_eq!(found[0].data, a.data, "show returns the advisory itself");
        assert_eq!(found[0].packages, a.packages);
        assert_eq!(found[0].score, Some(7.5));
    }
    assert!(
        store
            .advisory("CVE-1999-0001")
            .expect("advisory")
            .is_empty()
    );

    // A newer record replaces the older one, aliases included; an older
    // one is left out.
    let newer = AdvisoryRecord {
        withdrawn: Some("2024-01-01T00:00:00Z".into()),
        ..advisory_record("GHSA-aaaa-bbbb-cccc", 2000, &["CVE-2023-23931"])
    };
    assert_eq!(
        store.put_advisories(&[newer], false).expect("put"),
        [PutOutcome::Updated]
    );
    assert!(
        store
            .advisory("PYSEC-2023-11")
            .expect("advisory")
            .is_empty(),
        "alias dropped"
    );
    let got = store.advisory("CVE-2023-23931").expect("advisory");
    assert_eq!(got[0].modified_ms, 2000);
    assert_eq!(got[0].withdrawn.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&a), false)
            .expect("put"),
        [PutOutcome::Older]
    );
    assert_eq!(
        store.advisory(&a.id).expect("advisory")[0].modified_ms,
        2000
    );

    let all = store.advisories(None).expect("list");
    assert_eq!(
        all.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        ["DSA-5417-1", "GHSA-aaaa-bbbb-cccc"]
    );
    assert!(
        all.iter().all(|x| x.data.is_empty()),
        "lists leave the data out"
    );
    let deb = store.advisories(Some("deb")).expect("list");
    assert_eq!(deb.len(), 1);
    assert_eq!(deb[0].id, "DSA-5417-1");

    // golang/vulndb writes modified 0001-01-01 in every record: then the
    // content decides.
    let unknown = crate::store::UNKNOWN_MODIFIED_MS;
    let go = advisory_record("GO-2024-0001", unknown, &[]);
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&go), false)
            .expect("put"),
        [PutOutcome::Added]
    );
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&go), false)
            .expect("put"),
        [PutOutcome::Unchanged]
    );
    let changed = AdvisoryRecord {
        data: b"{\"id\":\"GO-2024-0001\",\"summary\":\"revised\"}".to_vec(),
        ..go
    };
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&changed), false)
            .expect("put"),
        [PutOutcome::Updated]
    );
    assert_eq!(
        store.advisory("GO-2024-0001").expect("advisory")[0].data,
        changed.data
    );
}

/// The version predicate sees each stored package version.
fn find_package_version_predicate(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let lib = |pid: u32, version: &str, inode: u64| {
        process(
            pid,
            vec![mapped(
                "/usr/lib/libxml2.so.2",
                inode,
                Some(deb("libxml2", "libxml2", version)),
            )],
        )
    };
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![
                    lib(10, "2.9.14+dfsg-1.1", 800),
                    lib(11, "2.9.14+dfsg-1.3", 801),
                ],
                vec![],
            ),
        ),
    );
    let seen = std::cell::RefCell::new(Vec::new());
    let all = find_where(store, "libxml2", &|v| {
        seen.borrow_mut().push(v.to_string());
        true
    });
    assert_eq!(pids(&all), vec![10, 11]);
    let mut seen = seen.into_inner();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["2.9.14+dfsg-1.1", "2.9.14+dfsg-1.3"]);

    let old = |v: &str| {
        crate::advisories::version::dpkg_cmp(v, "2.9.14+dfsg-1.2") == std::cmp::Ordering::Less
    };
    let vulnerable = find_where(store, "libxml2", &old);
    assert_eq!(pids(&vulnerable), vec![10]);
    assert_eq!(
        vulnerable[0].package.as_ref().unwrap().version,
        "2.9.14+dfsg-1.1"
    );
    assert!(find_where(store, "libxml2", &|_| false).is_empty());
}

/// Evidence "exe" beats "mapped"; one Match per process and package with all
/// its paths; any stale path makes the match stale.
fn find_package_evidence_and_paths(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let py = deb("python3.11-minimal", "python3.11", "3.11.2-6");
    let libpy = deb("libpython3.11-minimal", "python3.11", "3.11.2-6");
    let nss = deb("libnss3", "nss", "2:3.87.1-1");
    let mut stale_nss = mapped(
        "/usr/lib/x86_64-linux-gnu/libfreebl3.so",
        901,
        Some(nss.clone()),
    );
    stale_nss.stale = true;
    stale_nss.deleted = true;
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![
                    process(
                        10,
                        vec![
                            exe("/usr/bin/python3.11", 1000, Some(py.clone())),
                            // The executable is mapped too.
                            mapped("/usr/bin/python3.11", 1000, Some(py.clone())),
                            mapped("/usr/lib/python3.11/lib-dynload/_ssl.so", 1001, Some(libpy)),
                            mapped(
                                "/usr/lib/x86_64-linux-gnu/libnss3.so",
                                900,
                                Some(nss.clone()),
                            ),
                            stale_nss,
                        ],
                    ),
                    process(
                        11,
                        vec![
                            exe("/usr/bin/other", 1100, None),
                            mapped(
                                "/usr/lib/x86_64-linux-gnu/libnss3.so",
                                900,
                                Some(nss.clone()),
                            ),
                        ],
                    ),
                ],
                vec![],
            ),
        ),
    );

    let m = find(store, "python3.11-minimal");
    assert_eq!(pids(&m), vec![10]);
    assert_eq!(
        m[0].evidence, "exe",
        "the executable is the strongest evidence"
    );
    let mut paths: Vec<(&[u8], &str, u64, u64)> = m[0]
        .paths
        .iter()
        .map(|p| (p.path.as_slice(), p.evidence.as_str(), p.dev, p.inode))
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            (&b"/usr/bin/python3.11"[..], "exe", 0x801, 1000),
            (&b"/usr/bin/python3.11"[..], "mapped", 0x801, 1000),
        ],
        "the executable and its mapping are two paths of one match"
    );
    assert!(!m[0].stale);

    let by_source = find(store, "python3.11");
    let evidence: Vec<(&str, &str)> = {
        let mut e: Vec<_> = by_source
            .iter()
            .map(|m| {
                (
                    m.package.as_ref().unwrap().name.as_str(),
                    m.evidence.as_str(),
                )
            })
            .collect();
        e.sort_unstable();
        e
    };
    assert_eq!(
        evidence,
        vec![
            ("libpython3.11-minimal", "mapped"),
            ("python3.11-minimal", "exe")
        ]
    );

    // Two files of one package in one process: one Match with two paths.
    let m = find(store, "libnss3");
    assert_eq!(pids(&m), vec![10, 11], "one match per process: {m:?}");
    let m10 = m.iter().find(|m| m.key.unwrap().pid == 10).unwrap();
    assert_eq!(m10.evidence, "mapped");
    assert!(m10.stale, "one stale path makes the match stale");
    let mut paths: Vec<(String, bool, bool, &str)> = m10
        .paths
        .iter()
        .map(|p| {
            (
                String::from_utf8_lossy(&p.path).into_owned(),
                p.stale,
                p.deleted,
                p.evidence.as_str(),
            )
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            (
                "/usr/lib/x86_64-linux-gnu/libfreebl3.so".to_string(),
                true,
                true,
                "mapped"
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libnss3.so".to_string(),
                false,
                false,
                "mapped"
            ),
        ]
    );
    let m11 = m.iter().find(|m| m.key.unwrap().pid == 11).unwrap();
    assert!(!m11.stale, "staleness is per process");
    assert_eq!(m11.paths.len(), 1);
    assert_eq!(summary(store, 10).stale_artifacts, 1);
    assert_eq!(summary(store, 11).stale_artifacts, 0);
}

/// A process that still maps the old file of an upgraded package is found
/// under the old version, and a new process under the new one.
fn stale_mapping_keeps_its_version(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let path = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    let old = deb("libssl3", "openssl", "3.0.11-1~deb12u2");
    let new = deb("libssl3", "openssl", "3.0.15-1~deb12u1");
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![process(10, vec![mapped(path, 400, Some(old.clone()))])],
                vec![],
            ),
        ),
    );
    // The package is upgraded: the file at the path has a new inode. 10 keeps
    // the old (now stale) mapping; 11 starts with the new file.
    let mut stale = mapped(path, 400, Some(old.clone()));
    stale.stale = true;
    stale.deleted = true;
    apply(
        store,
        &s,
        msg(
            2,
            delta(
                vec![
                    process(10, vec![stale]),
                    process(11, vec![mapped(path, 401, Some(new.clone()))]),
                ],
                &[],
                vec![],
            ),
        ),
    );

    let all = find(store, "libssl3");
    assert_eq!(pids(&all), vec![10, 11]);
    let m10 = all.iter().find(|m| m.key.unwrap().pid == 10).unwrap();
    assert_eq!(m10.package.as_ref(), Some(&old), "the stored version stays");
    assert!(m10.stale && m10.paths[0].stale && m10.paths[0].deleted);
    assert_eq!(m10.paths[0].inode, 400);
    let m11 = all.iter().find(|m| m.key.unwrap().pid == 11).unwrap();
    assert_eq!(m11.package.as_ref(), Some(&new));
    assert!(!m11.stale);

    let before_fix = |v: &str| v == "3.0.11-1~deb12u2";
    assert_eq!(pids(&find_where(store, "libssl3", &before_fix)), vec![10]);
    let fixed = |v: &str| v == "3.0.15-1~deb12u1";
    assert_eq!(pids(&find_where(store, "openssl", &fixed)), vec![11]);

    // A restart of 10 (same key, fresh scan) maps the new file.
    apply(
        store,
        &s,
        msg(
            3,
            delta(
                vec![process(10, vec![mapped(path, 401, Some(new))])],
                &[],
                vec![],
            ),
        ),
    );
    assert!(find_where(store, "libssl3", &before_fix).is_empty());
}

/// processes() filters by hostname or host id; hosts do not disturb each
/// other's processes or sequence numbers.
/// Workloads come with their snapshot, count running processes, carry their
/// processes' distinct privileges, and drop out when nothing runs in them.
fn workloads_with_running_processes(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10), plain(11)], vec![])),
    );
    let rows = store.workloads().expect("workloads");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].workload, unit_workload());
    assert_eq!(rows[0].processes, 2);
    let mut summaries: Vec<&str> = rows[0]
        .privileges
        .iter()
        .map(|p| p.summary.as_str())
        .collect();
    summaries.sort();
    assert_eq!(summaries, ["uid10", "uid11"]);
    assert!(rows[0].privileges.iter().any(|p| p.privileged));
    let m = find(store, "libc6");
    assert!(
        m.iter()
            .all(|m| m.privilege.as_ref().is_some_and(|p| !p.summary.is_empty()))
    );
    apply(store, &s, msg(2, snapshot("snap-2", vec![], vec![])));
    assert!(
        store.workloads().expect("workloads").is_empty(),
        "nothing runs in it"
    );
}

/// `workloads_on` gives exactly `workloads`' rows of the named hosts (same
/// order, counts and privileges, several workloads per host, two hosts of
/// one name both), and what it returns for a host does not change when
/// unrelated hosts join; `hosts_for_coverage` is `hosts` without the
/// running-process counts.
/// Heartbeats applied together (`apply_heartbeats`) store what each
/// applied alone stores, and answer each as `apply` would: written, a
/// resend (nothing changes), a superseded session (refused).
fn heartbeats_together_store_what_each_alone_stores(store: &dyn Store) {
    let beat = |scan_ms: i64, spool_dropped: u64| {
        let Body::Heartbeat(mut h) = heartbeat() else {
            unreachable!()
        };
        h.last_scan = Some(v1::ScanStats {
            scanned_at_ms: scan_ms,
            ..Default::default()
        });
        if let Some(x) = h.health.as_mut() {
            x.spool_dropped = spool_dropped;
        }
        Body::Heartbeat(h)
    };
    let mut sessions = Vec::new();
    for name in ["alone", "together", "resent", "replaced"] {
        let s = open(store, &hello_for(&format!("m-{name}"), name, "s1"));
        apply(
            store,
            &s,
            msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
        );
        sessions.push(s);
    }
    let (alone, together, resent, replaced) = (sessions[0], sessions[1], sessions[2], sessions[3]);
    apply(store, &resent, msg(2, beat(T0 + 50, 1)));
    // The replaced host's agent restarted: a new session, a new epoch.
    open(store, &hello_for("m-replaced", "replaced", "s2"));
    let at = T0 + 100;
    store
        .apply(&alone, &msg(2, beat(T0 + 60, 7)), at)
        .expect("alone");
    let before = store.hosts().expect("hosts");
    let row = |rows: &[crate::store::HostRow], name: &str| {
        rows.iter()
            .find(|h| h.identity.hostname == name)
            .cloned()
            .unwrap_or_else(|| panic!("no host {name}"))
    };
    let results = store.apply_heartbeats(
        &[
            (together, msg(2, beat(T0 + 60, 7))),
            (resent, msg(2, beat(T0 + 70, 9))),
            (replaced, msg(2, beat(T0 + 80, 9))),
        ],
        at,
    );
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].is_ok(), "a resend: {:?}", results[1]);
    assert!(
        matches!(results[2], Err(StoreError::Superseded)),
        "{:?}",
        results[2]
    );
    let after = store.hosts().expect("hosts");
    let (a, t) = (row(&after, "alone"), row(&after, "together"));
    assert_eq!(t.last_seen_ms, at);
    assert_eq!(t.last_scan, a.last_scan);
    assert_eq!(t.health, a.health);
    assert_eq!(t.capabilities, a.capabilities);
    assert_eq!(t.sense, a.sense);
    assert_eq!(
        row(&after, "resent"),
        row(&before, "resent"),
        "a resend changes nothing"
    );
    assert_eq!(row(&after, "replaced"), row(&before, "replaced"));
    // The next message of the batch's session follows its heartbeat.
    apply(store, &together, msg(3, beat(T0 + 90, 8)));
    assert_eq!(
        row(&store.hosts().expect("hosts"), "together")
            .last_scan
            .scanned_at_ms,
        T0 + 90
    );
}

/// A host's inventory generation moves with every Hello, snapshot and
/// delta, in the same transaction, and never with a heartbeat; hosts that
/// share a hostname are listed apart, in hostname order.
fn inventory_generations_move_with_what_workloads_read(store: &dyn Store) {
    let gens = |names: Option<&[&str]>| {
        let names: Option<Vec<String>> = names.map(|n| n.iter().map(|s| s.to_string()).collect());
        store
            .inventory_gens(names.as_deref())
            .expect("inventory_gens")
    };
    let of =
        |name: &str| -> Vec<i64> { gens(Some(&[name])).into_iter().map(|(_, _, g)| g).collect() };
    let b = open(store, &hello_for("m-b", "beta", "s-b"));
    let a = open(store, &hello_for("m-a", "alpha", "s-a"));
    let hello = of("alpha")[0];
    apply(
        store,
        &a,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );
    let snapped = of("alpha")[0];
    assert!(snapped > hello, "a snapshot moves it: {hello} -> {snapped}");
    apply(store, &a, msg(2, heartbeat()));
    assert_eq!(of("alpha"), [snapped], "a heartbeat does not");
    apply(store, &a, msg(3, delta(vec![plain(11)], &[10], vec![])));
    let changed = of("alpha")[0];
    assert!(changed > snapped, "a delta moves it");
    // A resend of something stored writes nothing, and moves nothing.
    apply(store, &a, msg(3, delta(vec![plain(12)], &[], vec![])));
    assert_eq!(of("alpha"), [changed]);
    let beta = of("beta");
    open(store, &hello_for("m-a", "alpha", "s-a2"));
    assert!(of("alpha")[0] > changed, "a Hello moves it");
    assert_eq!(of("beta"), beta, "another host's does not");
    apply(store, &b, msg(1, heartbeat()));
    assert_eq!(of("beta"), beta);

    // Another machine that calls itself alpha: listed apart.
    open(store, &hello_for("m-a2", "alpha", "s-a3"));
    let all = gens(None);
    let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["alpha", "alpha", "beta"]);
    assert!(all[0].1 < all[1].1, "host rows in order: {all:?}");
    assert_eq!(gens(Some(&["alpha", "gamma"])), all[..2]);
    assert_eq!(gens(Some(&[])), []);
}

fn workloads_on_named_hosts_and_coverage_rows(store: &dyn Store) {
    let container = |id: &str, name: &str| v1::Workload {
        id: format!("container/{id}"),
        kind: "container".into(),
        container_id: id.into(),
        container_name: name.into(),
        runtime: "docker".into(),
        ..Default::default()
    };
    let in_workload = |pid: u32, w: &str| Process {
        workload: w.into(),
        ..plain(pid)
    };
    let host = |store: &dyn Store, machine: &str, name: &str, n: u32| {
        let s = open(store, &hello_for(machine, name, &format!("s-{machine}")));
        let mut snap = snapshot(
            "snap-1",
            vec![
                plain(10),
                plain(100 + n),
                in_workload(20, "container/c1"),
                in_workload(21, "container/c1"),
                in_workload(22, "container/c2"),
            ],
            vec![],
        );
        if let Body::Snapshot(s) = &mut snap {
            s.workloads.extend([
                container("c1", "web"),
                container("c2", "db"),
                container("c3", "idle"),
            ]);
        }
        apply(store, &s, msg(1, snap));
    };
    host(store, "m-a", "alpha", 0);
    host(store, "m-b", "beta", 1);
    // Another machine that calls itself alpha.
    host(store, "m-a2", "alpha", 2);
    let all = store.workloads().expect("workloads");
    let of = |names: &[&str]| -> Vec<crate::store::WorkloadRow> {
        all.iter()
            .filter(|r| names.contains(&r.host.as_str()))
            .cloned()
            .collect()
    };
    let on = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        store.workloads_on(&names).expect("workloads_on")
    };
    // Three instances per host (c3 runs nothing), on three hosts.
    assert_eq!(all.len(), 9, "{all:?}");
    assert_eq!(on(&["alpha"]), of(&["alpha"]));
    assert_eq!(on(&["alpha"]).len(), 6, "both hosts named alpha");
    assert_eq!(on(&["beta"]), of(&["beta"]));
    assert_eq!(on(&["beta", "alpha"]), all);
    assert_eq!(on(&["gamma"]), []);
    assert_eq!(on(&[]), []);
    let c1 = on(&["beta"])
        .into_iter()
        .find(|r| r.workload.id == "container/c1")
        .expect("c1 on beta");
    assert_eq!(c1.processes, 2);
    let mut privs: Vec<String> = c1.privileges.iter().map(|p| p.summary.clone()).collect();
    privs.sort();
    assert_eq!(privs, ["uid20", "uid21"]);

    let before = on(&["beta"]);
    for i in 0..12 {
        host(store, &format!("m-x{i}"), &format!("unrelated-{i:02}"), i);
    }
    assert_eq!(on(&["beta"]), before, "unrelated hosts change nothing");
    assert_eq!(store.workloads().expect("workloads").len(), 9 + 3 * 12);

    let counted = store.hosts().expect("hosts");
    let light = store.hosts_for_coverage().expect("hosts_for_coverage");
    assert_eq!(light.len(), 15);
    assert!(
        counted.iter().all(|h| h.processes_running == 5),
        "{counted:?}"
    );
    let zeroed: Vec<_> = counted
        .into_iter()
        .map(|h| crate::store::HostRow {
            processes_running: 0,
            ..h
        })
        .collect();
    assert_eq!(light, zeroed);
}

/// A window query finds exited processes with their exit time; connection
/// records add up per destination.
fn history_and_connections(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );
    let conn = |count, at| v1::Connection {
        key: Some(key(10)),
        protocol: "tcp".into(),
        remote_addr: "127.0.0.1".into(),
        remote_port: 8080,
        first_seen_ms: at,
        last_seen_ms: at,
        count,
        last_result: 0,
        names: Vec::new(),
    };
    let mut d = match delta(vec![], &[], vec![]) {
        Body::Delta(d) => d,
        _ => unreachable!(),
    };
    d.connections = vec![conn(2, T0 + 1_000), conn(3, T0 + 2_000)];
    apply(store, &s, msg(2, Body::Delta(d)));
    let c = store.connections(None, 0).expect("connections");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].count, c[0].first_seen_ms, c[0].last_seen_ms),
        (5, T0 + 1_000, T0 + 2_000)
    );
    assert!(
        store
            .connections(None, T0 + 3_000)
            .expect("connections")
            .is_empty()
    );

    // Exit at T0 + 10 s (the delta's time): gone from now, there in history.
    apply(store, &s, msg(3, delta(vec![], &[10], vec![])));
    assert!(find(store, "libc6").is_empty());
    let hist = exposure::find_package(
        store,
        &query("libc6", &|_, _| true, Some((T0 - 1, T0 + 60_000))),
    )
    .expect("history");
    assert_eq!(hist.len(), 1, "{hist:?}");
    assert_eq!(hist[0].exit_time_ms, T0 + 10_000);
    // A window that ends before the process was first seen misses it.
    let before = exposure::find_package(store, &query("libc6", &|_, _| true, Some((0, T0 - 1))))
        .expect("history");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(
        store.connections(None, 0).expect("connections")[0].exit_time_ms,
        T0 + 10_000
    );
}

fn processes_by_host(store: &dyn Store) {
    let a = open(store, &hello_for("machine-1", "alpha", "session-a"));
    let b = open(store, &hello_for("machine-2", "beta", "session-b"));
    assert_ne!(a.host, b.host);
    apply(
        store,
        &a,
        msg(1, snapshot("snap-a", vec![plain(10), plain(11)], vec![])),
    );
    apply(store, &a, msg(2, delta(vec![plain(12)], &[], vec![])));
    // The same pid (and start ticks) on another host is another process.
    apply(
        store,
        &b,
        msg(1, snapshot("snap-b", vec![plain(10), plain(20)], vec![])),
    );

    assert_eq!(running(store, Some("alpha")), vec![10, 11, 12]);
    assert_eq!(running(store, Some("machine-1")), vec![10, 11, 12]);
    assert_eq!(running(store, Some("beta")), vec![10, 20]);
    assert_eq!(running(store, Some("machine-2")), vec![10, 20]);
    assert_eq!(running(store, None), vec![10, 10, 11, 12, 20]);
    assert!(running(store, Some("gamma")).is_empty());
    for p in store.processes(Some("beta")).expect("processes") {
        assert_eq!(p.host, "beta");
    }

    // Beta's next complete snapshot retires only beta's processes.
    apply(
        store,
        &b,
        msg(2, snapshot("snap-b2", vec![plain(20)], vec![])),
    );
    assert_eq!(running(store, Some("alpha")), vec![10, 11, 12]);
    assert_eq!(running(store, Some("beta")), vec![20]);
    // Exits are per host too.
    apply(store, &a, msg(3, delta(vec![], &[20, 10], vec![])));
    assert_eq!(running(store, Some("alpha")), vec![11, 12]);
    assert_eq!(running(store, Some("beta")), vec![20]);

    let mut hosts: Vec<(String, u32)> = store
        .hosts()
        .expect("hosts")
        .into_iter()
        .map(|h| (h.identity.hostname, h.processes_running))
        .collect();
    hosts.sort();
    assert_eq!(hosts, vec![("alpha".into(), 2), ("beta".into(), 1)]);
    let matches = find(store, "libc6");
    let mut by_host: Vec<(&str, u32)> = matches
        .iter()
        .map(|m| (m.host.as_str(), m.key.unwrap().pid))
        .collect();
    by_host.sort_unstable();
    assert_eq!(by_host, vec![("alpha", 11), ("alpha", 12), ("beta", 20)]);

    assert_eq!(
        open(store, &hello_for("machine-1", "alpha", "session-a")).acked_seq,
        3
    );
    assert_eq!(
        open(store, &hello_for("machine-2", "beta", "session-b")).acked_seq,
        2
    );
}

fn pypi(name: &str, version: &str, distro: Option<Package>) -> Package {
    Package {
        ecosystem: "pypi".into(),
        name: name.into(),
        source: String::new(),
        version: version.into(),
        arch: String::new(),
        purl: format!("pkg:pypi/{name}@{version}"),
        distro: distro.map(Box::new),
        fixed_cves: Vec::new(),
        replaced_by: String::new(),
    }
}

fn provenance(by: &str, ms: i64, source: &str, sha: &str) -> Provenance {
    Provenance {
        imported_by: by.into(),
        imported_ms: ms,
        source: source.into(),
        sha256: sha.repeat(64),
    }
}

/// Each advisory keeps who imported it, when, from which source and its
/// hash; an id held from another source is refused unless `replace`, and
/// `replace` also takes an older `modified`.
fn advisory_provenance_and_sources(store: &dyn Store) {
    let genuine = AdvisoryRecord {
        provenance: provenance("feeds", T0, "osv-pypa", "a"),
        ..advisory_record("PYSEC-2023-11", 1000, &["CVE-2023-23931"])
    };
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&genuine), false)
            .expect("put"),
        [PutOutcome::Added]
    );
    let got = &store.advisory("CVE-2023-23931").expect("advisory")[0];
    assert_eq!(got.provenance, genuine.provenance);
    let listed = store.advisories(None).expect("advisories");
    assert_eq!(listed[0].provenance, genuine.provenance, "listed too");

    // A newer record of the same id from another source is refused, and
    // changes nothing.
    let forged = AdvisoryRecord {
        packages: Vec::new(),
        data: b"{\"forged\":true}".to_vec(),
        provenance: provenance("mallory", T0 + 1, "mirror", "b"),
        ..advisory_record("PYSEC-2023-11", 9000, &[])
    };
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&forged), false)
            .expect("put"),
        [PutOutcome::OtherSource]
    );
    let got = &store.advisory("PYSEC-2023-11").expect("advisory")[0];
    assert_eq!(got.modified_ms, 1000);
    assert_eq!(got.provenance, genuine.provenance);
    assert_eq!(got.data, genuine.data);

    // With `replace` it takes the id over, provenance and all.
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&forged), true)
            .expect("put"),
        [PutOutcome::Updated]
    );
    let got = &store.advisory("PYSEC-2023-11").expect("advisory")[0];
    assert_eq!(got.provenance, forged.provenance);
    assert!(got.packages.is_empty());
    assert!(
        store
            .advisory("CVE-2023-23931")
            .expect("advisory")
            .is_empty(),
        "the forgery's aliases replace the genuine ones"
    );
    // The genuine record is older: refused as another source without
    // `replace`, taken back with it.
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&genuine), false)
            .expect("put"),
        [PutOutcome::OtherSource]
    );
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&genuine), true)
            .expect("put"),
        [PutOutcome::Updated]
    );
    let got = &store.advisory("CVE-2023-23931").expect("advisory")[0];
    assert_eq!(got.modified_ms, 1000);
    assert_eq!(got.provenance, genuine.provenance);
    assert_eq!(got.packages, genuine.packages);
    // The same record from the same source again: unchanged, even with
    // `replace`; the first import's provenance stays.
    let again = AdvisoryRecord {
        provenance: provenance("other", T0 + 5, "osv-pypa", "a"),
        ..genuine.clone()
    };
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&again), true)
            .expect("put"),
        [PutOutcome::Unchanged]
    );
    assert_eq!(
        store.put_advisories(&[again], false).expect("put"),
        [PutOutcome::Unchanged]
    );
    assert_eq!(
        store.advisory("PYSEC-2023-11").expect("advisory")[0].provenance,
        genuine.provenance
    );
    // The same source with a newer record updates as before.
    let newer = AdvisoryRecord {
        provenance: provenance("feeds", T0 + 9, "osv-pypa", "c"),
        ..advisory_record("PYSEC-2023-11", 2000, &["CVE-2023-23931"])
    };
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&newer), false)
            .expect("put"),
        [PutOutcome::Updated]
    );
    assert_eq!(
        store.advisory("PYSEC-2023-11").expect("advisory")[0].provenance,
        newer.provenance
    );
    // A record without a source (stored before provenance was kept) is
    // held from no source: any source may update it.
    let legacy = advisory_record("GHSA-1111-2222-3333", 1000, &[]);
    store.put_advisories(&[legacy], false).expect("put");
    let named = AdvisoryRecord {
        provenance: provenance("feeds", T0, "osv-ghsa", "d"),
        ..advisory_record("GHSA-1111-2222-3333", 2000, &[])
    };
    assert_eq!(
        store.put_advisories(&[named], false).expect("put"),
        [PutOutcome::Updated]
    );
}

/// An added or updated advisory is pending from the transaction that
/// stores it until the one that writes its verdicts; an unchanged one
/// keeps its state, and `limit` bounds the answer.
fn advisories_stay_pending_until_their_verdicts(store: &dyn Store) {
    let a = advisory_record("PYSEC-2023-11", 1000, &["CVE-2023-23931"]);
    let b = advisory_record("GHSA-x", 1000, &[]);
    store
        .put_advisories(&[a.clone(), b.clone()], false)
        .expect("put");
    assert_eq!(
        store.pending_advisories(10).expect("pending"),
        ["GHSA-x", "PYSEC-2023-11"]
    );
    assert_eq!(store.pending_advisories(1).expect("pending"), ["GHSA-x"]);
    // Re-importing what is pending does not clear it.
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&b), false)
            .expect("put"),
        [PutOutcome::Unchanged]
    );
    store
        .put_matches(&MatchScope::Advisories(vec!["GHSA-x".into()]), &[])
        .expect("matches");
    assert_eq!(
        store.pending_advisories(10).expect("pending"),
        ["PYSEC-2023-11"],
        "verdicts written (none here), no longer pending"
    );
    // Packages' passes leave advisories' marks alone.
    store
        .put_matches(&MatchScope::Unmatched, &[])
        .expect("matches");
    assert_eq!(store.pending_advisories(10).expect("pending").len(), 1);
    store
        .put_matches(&MatchScope::Advisories(vec![a.id.clone()]), &[])
        .expect("matches");
    assert!(store.pending_advisories(10).expect("pending").is_empty());
    assert_eq!(
        store
            .put_advisories(std::slice::from_ref(&a), false)
            .expect("put"),
        [PutOutcome::Unchanged]
    );
    assert!(store.pending_advisories(10).expect("pending").is_empty());
    let newer = advisory_record("PYSEC-2023-11", 2000, &["CVE-2023-23931"]);
    assert_eq!(
        store.put_advisories(&[newer], false).expect("put"),
        [PutOutcome::Updated]
    );
    assert_eq!(
        store.pending_advisories(10).expect("pending"),
        ["PYSEC-2023-11"],
        "an update is pending again"
    );
}

/// Deleting an advisory removes it, its aliases and its verdicts; an
/// unknown id deletes nothing.
fn delete_advisory_takes_its_verdicts(store: &dyn Store) {
    let image = format!("sha256:{}", "d".repeat(64));
    let sbom = SbomRecord {
        image,
        name: "app.cdx.json".into(),
        sha256: "2".repeat(64),
        packages: vec![DeclaredPackage {
            package: pypi("cryptography", "39.0.0", None),
            reference: "cryptography==39.0.0".into(),
            ..Default::default()
        }],
        pushed_ms: T0,
        data: b"{}".to_vec(),
        ..Default::default()
    };
    store.put_sbom(&sbom).expect("sbom");
    let a = AdvisoryRecord {
        provenance: provenance("feeds", T0, "osv-pypa", "a"),
        ..advisory_record("PYSEC-2023-11", 1000, &["CVE-2023-23931"])
    };
    let other = advisory_record("GHSA-x", 1000, &[]);
    store
        .put_advisories(&[a.clone(), other], false)
        .expect("put");
    let scope = MatchScope::Advisories(vec![a.id.clone(), "GHSA-x".into()]);
    let pkg = candidate_id(store, &scope, &a.id, "cryptography");
    store
        .put_matches(
            &scope,
            &[
                verdict(&a.id, pkg, "affected"),
                verdict("GHSA-x", pkg, "affected"),
            ],
        )
        .expect("matches");
    assert_eq!(store.verdicts(None, false).expect("verdicts").len(), 2);

    assert!(store.pending_advisories(10).expect("pending").is_empty());
    let removed = store
        .delete_advisory(&a.id, &["GHSA-x".to_string()])
        .expect("delete")
        .expect("it was stored");
    assert_eq!(
        store.pending_advisories(10).expect("pending"),
        ["GHSA-x"],
        "the delete marks the advisories to judge again"
    );
    assert_eq!(removed.id, a.id);
    assert_eq!(removed.provenance, a.provenance);
    assert!(store.advisory(&a.id).expect("advisory").is_empty());
    assert!(store.advisory("CVE-2023-23931").expect("alias").is_empty());
    let left = store.verdicts(None, false).expect("verdicts");
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].advisory_id, "GHSA-x",
        "the other advisory's verdict stays"
    );
    assert_eq!(store.advisories(Some("pypi")).expect("list").len(), 1);
    assert!(
        store
            .match_candidates(&MatchScope::Advisories(vec![a.id.clone()]))
            .expect("candidates")
            .pairs
            .is_empty(),
        "its packages are gone"
    );
    assert_eq!(store.delete_advisory(&a.id, &[]).expect("delete"), None);
    assert_eq!(
        store
            .delete_advisory("CVE-2023-23931", &[])
            .expect("delete"),
        None
    );
    // The id is free again: any source may add it.
    assert_eq!(
        store.put_advisories(&[a], false).expect("put"),
        [PutOutcome::Added]
    );
}

/// An SBOM keeps who pushed it, from which source, and its hash.
fn sbom_provenance(store: &dyn Store) {
    let sbom = SbomRecord {
        image: format!("sha256:{}", "e".repeat(64)),
        name: "app.cdx.json".into(),
        sha256: "3".repeat(64),
        pushed_ms: T0,
        provenance: Provenance {
            imported_by: "ci".into(),
            imported_ms: T0,
            source: "build-pipeline".into(),
            sha256: "3".repeat(64),
        },
        data: b"{}".to_vec(),
        ..Default::default()
    };
    store.put_sbom(&sbom).expect("sbom");
    let listed = store.sboms(None).expect("sboms");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].provenance, sbom.provenance);
}

fn verdict(advisory: &str, package_id: i64, status: &str) -> AdvisoryMatch {
    AdvisoryMatch {
        advisory_id: advisory.into(),
        package_id,
        status: status.into(),
    }
}

fn candidate_id(store: &dyn Store, scope: &MatchScope, advisory: &str, name: &str) -> i64 {
    let found = store.match_candidates(scope).expect("candidates");
    found
        .pairs
        .iter()
        .find(|c| c.advisory_id == advisory && c.package.name == name)
        .unwrap_or_else(|| panic!("no candidate {name} for {advisory}: {found:?}"))
        .package_id
}

/// New packages are unmatched until a pass records them; candidates pair
/// packages and advisories by ecosystem and name (a Debian advisory by
/// source package); findings join the recorded verdicts with the processes.
fn matches_and_findings(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let mut python3_cryptography = deb(
        "python3-cryptography",
        "python-cryptography",
        "38.0.4-3+deb12u1",
    );
    python3_cryptography.fixed_cves = vec!["CVE-2023-23931".into()];
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![
                    process(
                        10,
                        vec![mapped(
                            "/usr/lib/libssl.so.3",
                            300,
                            Some(deb("libssl3", "openssl", "3.0.11-1")),
                        )],
                    ),
                    process(
                        11,
                        vec![artifact(
                            "/usr/lib/python3/dist-packages/cryptography/__init__.py",
                            301,
                            ArtifactKind::Installed,
                            Some(pypi("cryptography", "38.0.4", Some(python3_cryptography))),
                        )],
                    ),
                ],
                vec![],
            ),
        ),
    );
    let unmatched = store
        .match_candidates(&MatchScope::Unmatched)
        .expect("candidates");
    assert!(unmatched.scope_size >= 3, "{unmatched:?}");
    assert!(unmatched.pairs.is_empty(), "no advisories yet");
    store.put_matches(&MatchScope::Unmatched, &[]).expect("put");
    assert_eq!(
        store
            .match_candidates(&MatchScope::Unmatched)
            .expect("candidates")
            .scope_size,
        0,
        "a pass leaves nothing unmatched"
    );

    let openssl = AdvisoryRecord {
        packages: vec![("deb".into(), "Debian:12".into(), "openssl".into())],
        ..advisory_record("DSA-5532-1", 1000, &["CVE-2023-5678"])
    };
    let upstream = advisory_record("PYSEC-2023-11", 1000, &["CVE-2023-23931"]);
    store
        .put_advisories(&[openssl.clone(), upstream.clone()], false)
        .expect("put");
    let scope = MatchScope::Advisories(vec![openssl.id.clone(), upstream.id.clone()]);
    let libssl = candidate_id(store, &scope, &openssl.id, "libssl3");
    let crypto = candidate_id(store, &scope, &upstream.id, "cryptography");
    let found = store.match_candidates(&scope).expect("candidates");
    assert_eq!(found.scope_size, 2);
    let c = found.pairs.iter().find(|c| c.package_id == crypto).unwrap();
    let d = c
        .package
        .distro
        .as_deref()
        .expect("the distro identity comes along");
    assert_eq!(d.fixed_cves, ["CVE-2023-23931"]);
    store
        .put_matches(
            &scope,
            &[
                verdict(&openssl.id, libssl, "affected"),
                verdict(&upstream.id, crypto, "fixed-by-distro"),
            ],
        )
        .expect("put");

    let all = exposure::findings(store, &FindingsQuery::default()).expect("findings");
    assert_eq!(pids(&all), [10], "fixed-by-distro is left out: {all:?}");
    assert_eq!(all[0].advisory, openssl.id);
    assert_eq!(all[0].severity, "HIGH");
    assert_eq!(all[0].score, Some(7.5));
    assert!(all[0].vector.starts_with("CVSS:3.1/"));
    assert_eq!(all[0].status, "affected");
    assert_eq!(all[0].evidence, "mapped");
    let with_fixed = exposure::findings(
        store,
        &FindingsQuery {
            include_fixed: true,
            ..Default::default()
        },
    )
    .expect("findings");
    assert_eq!(pids(&with_fixed), [10, 11]);
    assert_eq!(with_fixed[1].status, "fixed-by-distro");
    let one = exposure::findings(
        store,
        &FindingsQuery {
            advisories: Some(vec![upstream.id.clone()]),
            include_fixed: true,
            ..Default::default()
        },
    )
    .expect("findings");
    assert_eq!(pids(&one), [11]);

    // New changelog CVEs for the distro package (an upgrade's changelog
    // read later) put the language package it shipped up for matching
    // again: its verdict may now be fixed-by-distro.
    let mut more = deb(
        "python3-cryptography",
        "python-cryptography",
        "38.0.4-3+deb12u1",
    );
    more.fixed_cves = vec!["CVE-2023-23931".into(), "CVE-2023-49083".into()];
    apply(
        store,
        &s,
        msg(
            2,
            delta(
                vec![process(
                    11,
                    vec![artifact(
                        "/usr/lib/python3/dist-packages/cryptography/__init__.py",
                        301,
                        ArtifactKind::Installed,
                        Some(pypi("cryptography", "38.0.4", Some(more))),
                    )],
                )],
                &[],
                vec![],
            ),
        ),
    );
    assert_eq!(
        candidate_id(store, &MatchScope::Unmatched, &upstream.id, "cryptography"),
        crypto,
        "the same package, unmatched again"
    );
    store
        .put_matches(
            &MatchScope::Unmatched,
            &[verdict(&upstream.id, crypto, "fixed-by-distro")],
        )
        .expect("put");
    assert_eq!(
        store
            .match_candidates(&MatchScope::Unmatched)
            .expect("candidates")
            .scope_size,
        0
    );

    // Re-evaluating an advisory replaces its verdicts.
    store
        .put_matches(&MatchScope::Advisories(vec![openssl.id.clone()]), &[])
        .expect("put");
    assert!(
        exposure::findings(store, &FindingsQuery::default())
            .expect("findings")
            .is_empty()
    );

    // A package that appears later is unmatched until a pass records it.
    apply(
        store,
        &s,
        msg(
            3,
            delta(
                vec![process(
                    12,
                    vec![mapped(
                        "/usr/lib/libssl.so.3",
                        302,
                        Some(deb("libssl3", "openssl", "3.0.9-1")),
                    )],
                )],
                &[],
                vec![],
            ),
        ),
    );
    let newer = candidate_id(store, &MatchScope::Unmatched, &openssl.id, "libssl3");
    assert_ne!(newer, libssl);
    store
        .put_matches(
            &MatchScope::Unmatched,
            &[verdict(&openssl.id, newer, "affected")],
        )
        .expect("put");
    assert_eq!(
        pids(&exposure::findings(store, &FindingsQuery::default()).expect("findings")),
        [12]
    );
    // An exited process is no finding now, but is one in a window.
    apply(store, &s, msg(4, delta(vec![], &[12], vec![])));
    assert!(
        exposure::findings(store, &FindingsQuery::default())
            .expect("findings")
            .is_empty()
    );
    let window = exposure::findings(
        store,
        &FindingsQuery {
            window: Some((T0, T0 + 20_000)),
            ..Default::default()
        },
    )
    .expect("findings");
    assert_eq!(pids(&window), [12]);
    // A withdrawn advisory exposes nothing.
    let withdrawn = AdvisoryRecord {
        withdrawn: Some("2024-01-01T00:00:00Z".into()),
        ..advisory_record("DSA-5532-1", 2000, &["CVE-2023-5678"])
    };
    store.put_advisories(&[withdrawn], false).expect("put");
    assert!(
        exposure::findings(
            store,
            &FindingsQuery {
                window: Some((T0, T0 + 20_000)),
                ..Default::default()
            }
        )
        .expect("findings")
        .is_empty()
    );
}

/// An SBOM attached to an image declares its packages for the processes of
/// workloads running that image, with the chain that pulled each in.
fn sboms_declare_packages(store: &dyn Store) {
    let image = format!("sha256:{}", "ab".repeat(32));
    let s = open(store, &hello("session-a"));
    let container = v1::Workload {
        id: "container/c1".into(),
        kind: "container".into(),
        runtime: "docker".into(),
        image_digest: image.clone(),
        ..Default::default()
    };
    let mut in_container = plain(20);
    in_container.workload = container.id.clone();
    let Body::Snapshot(mut snap) = snapshot("snap-1", vec![plain(10), in_container], vec![]) else {
        unreachable!()
    };
    snap.workloads.push(container);
    apply(store, &s, msg(1, Body::Snapshot(snap)));

    let requests = DeclaredPackage {
        package: pypi("requests", "2.19.0", None),
        reference: "requests==2.19.0".into(),
        pulled_in_by: vec!["app@1.0".into(), "requests@2.19.0".into()],
        advisories: Vec::new(),
    };
    let sbom = SbomRecord {
        image: image.clone(),
        name: "app.cdx.json".into(),
        sha256: "1".repeat(64),
        format: "cyclonedx".into(),
        syntax: "json".into(),
        spec_version: "1.6".into(),
        tools: "cyclonedx-py 7.1.0".into(),
        components: 2,
        edges: 1,
        packages: vec![requests],
        pushed_ms: T0,
        provenance: Provenance {
            imported_by: "ci".into(),
            imported_ms: T0,
            source: "app.cdx.json".into(),
            sha256: "1".repeat(64),
        },
        data: b"{}".to_vec(),
    };
    assert_eq!(store.put_sbom(&sbom).expect("put"), PutOutcome::Added);
    assert_eq!(store.put_sbom(&sbom).expect("put"), PutOutcome::Unchanged);

    // Its packages are found by name like any other, declared for the
    // container's process only.
    let m = find(store, "requests");
    assert_eq!(pids(&m), [20], "{m:?}");
    assert_eq!(m[0].evidence, "declared");
    assert_eq!(m[0].sbom_image, image);
    assert_eq!(m[0].pulled_in_by, ["app@1.0", "requests@2.19.0"]);

    let adv = AdvisoryRecord {
        packages: vec![("pypi".into(), "PyPI".into(), "requests".into())],
        ..advisory_record("PYSEC-2018-28", 1000, &["CVE-2018-18074"])
    };
    store
        .put_advisories(std::slice::from_ref(&adv), false)
        .expect("put");
    let scope = MatchScope::Advisories(vec![adv.id.clone()]);
    let id = candidate_id(store, &scope, &adv.id, "requests");
    store
        .put_matches(&scope, &[verdict(&adv.id, id, "affected")])
        .expect("put");
    let f = exposure::findings(store, &FindingsQuery::default()).expect("findings");
    assert_eq!(pids(&f), [20]);
    assert_eq!(f[0].evidence, "declared");
    assert_eq!(f[0].advisory, adv.id);

    let listed = store.sboms(None).expect("sboms");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].data.is_empty(), "lists leave the document out");
    assert_eq!(listed[0].packages.len(), 1);
    assert_eq!(
        listed[0].packages[0].advisories,
        std::slice::from_ref(&adv.id)
    );
    assert_eq!(
        listed[0].packages[0].pulled_in_by,
        ["app@1.0", "requests@2.19.0"]
    );

    // Another document for the image replaces the first.
    let replacement = SbomRecord {
        sha256: "2".repeat(64),
        packages: Vec::new(),
        ..sbom
    };
    assert_eq!(
        store.put_sbom(&replacement).expect("put"),
        PutOutcome::Updated
    );
    assert!(find(store, "requests").is_empty());
    assert!(
        exposure::findings(store, &FindingsQuery::default())
            .expect("findings")
            .is_empty()
    );
    assert!(store.sboms(Some("sha256:00")).expect("sboms").is_empty());
}

// ---- Audit log and tokens ---------------------------------------------------

fn audit_entry(seq: i64, prev: &str) -> AuditEntry {
    AuditEntry {
        seq,
        time_ms: T0 + seq,
        subject: "ci".into(),
        scopes: "read".into(),
        peer: "127.0.0.1:1".into(),
        method: "Query/FindPackage".into(),
        args: format!("n={seq}"),
        result: "ok".into(),
        prev_hash: prev.into(),
        hash: format!("{seq:064}"),
    }
}

fn audit_log_only_extends_its_chain(store: &dyn Store) {
    assert_eq!(store.audit_head().unwrap(), None);
    // The first entry links to the genesis hash.
    assert!(matches!(
        store.append_audit(&audit_entry(1, "x")),
        Err(StoreError::Invalid(_))
    ));
    let first = audit_entry(1, AUDIT_GENESIS);
    store.append_audit(&first).unwrap();
    // A fork (same seq again) and a gap are refused.
    assert!(store.append_audit(&audit_entry(1, AUDIT_GENESIS)).is_err());
    assert!(store.append_audit(&audit_entry(3, &first.hash)).is_err());
    let second = audit_entry(2, &first.hash);
    store.append_audit(&second).unwrap();
    assert!(store.append_audit(&audit_entry(3, "wrong")).is_err());
    assert_eq!(store.audit_head().unwrap(), Some((2, second.hash.clone())));
    assert_eq!(
        store.audit_entries(0, i64::MIN, 10).unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store.audit_entries(1, i64::MIN, 10).unwrap(),
        vec![second.clone()]
    );
    assert_eq!(store.audit_entries(0, T0 + 2, 10).unwrap(), vec![second]);
    assert_eq!(store.audit_entries(0, i64::MIN, 1).unwrap(), vec![first]);
    let cp = AuditCheckpoint {
        seq: 2,
        hash: "h".into(),
        time_ms: T0,
        signature: "s".into(),
    };
    store.append_audit_checkpoint(&cp).unwrap();
    assert!(store.append_audit_checkpoint(&cp).is_err());
    assert_eq!(store.audit_checkpoints().unwrap(), vec![cp]);
}

fn incident_event(seq: i64, kind: &str) -> IncidentEventRecord {
    IncidentEventRecord {
        seq,
        at_ms: T0 + seq,
        actor: "responder".into(),
        kind: kind.into(),
        payload: format!("{{\"kind\":\"{kind}\",\"n\":{seq}}}"),
    }
}

fn cache<'a>(state: &'a str, open: bool, projection: &'a [u8]) -> IncidentCache<'a> {
    IncidentCache {
        state,
        open,
        projection,
    }
}

fn incidents_open_once_per_key(store: &dyn Store) {
    assert_eq!(store.open_incident_by_key("advisory:A").unwrap(), None);
    let first = [
        incident_event(1, "opened"),
        incident_event(2, "scope_changed"),
    ];
    let (a, new) = store
        .open_incident("advisory:A", T0, &first, &cache("scoped", true, b"p1"))
        .unwrap();
    assert!(new);
    assert_eq!(
        (
            a.dedup_key.as_str(),
            a.created_ms,
            a.state.as_str(),
            a.open,
            a.last_seq,
            a.updated_ms,
            a.projection.as_slice()
        ),
        ("advisory:A", T0, "scoped", true, 2, T0 + 2, &b"p1"[..])
    );
    // The same key again: the stored incident, and nothing written.
    let (again, new) = store
        .open_incident(
            "advisory:A",
            T0 + 9,
            &[incident_event(1, "opened")],
            &cache("detected", true, b"other"),
        )
        .unwrap();
    assert!(!new);
    assert_eq!(again, a);
    assert_eq!(store.incident_events(a.id, 0, 100).unwrap(), first.to_vec());
    assert_eq!(
        store.open_incident_by_key("advisory:A").unwrap(),
        Some(a.clone())
    );
    // Another key is another incident.
    let (b, new) = store
        .open_incident(
            "advisory:B",
            T0,
            &[incident_event(1, "opened")],
            &cache("detected", true, b""),
        )
        .unwrap();
    assert!(new && b.id != a.id);
    // An incident opens with events numbered from 1.
    assert!(is_invalid(store.open_incident(
        "advisory:C",
        T0,
        &[incident_event(2, "opened")],
        &cache("detected", true, b""),
    )));
    assert!(is_invalid(store.open_incident(
        "advisory:C",
        T0,
        &[],
        &cache("detected", true, b""),
    )));
    assert_eq!(store.open_incident_by_key("advisory:C").unwrap(), None);
    // Once closed, the key is free: the next open is a new incident, and
    // the closed one keeps its log.
    store
        .append_incident_events(
            a.id,
            &[incident_event(3, "state_changed")],
            &cache("false_positive", false, b"p3"),
        )
        .unwrap();
    assert_eq!(store.open_incident_by_key("advisory:A").unwrap(), None);
    let (c, new) = store
        .open_incident(
            "advisory:A",
            T0 + 100,
            &[incident_event(1, "opened")],
            &cache("detected", true, b""),
        )
        .unwrap();
    assert!(new && c.id != a.id && c.id != b.id);
    assert_eq!(store.incident_events(a.id, 0, 100).unwrap().len(), 3);
    assert_eq!(
        store.incident(a.id).unwrap().unwrap().state,
        "false_positive"
    );
}

fn incident_log_only_extends(store: &dyn Store) {
    let (a, _) = store
        .open_incident(
            "package:libssl3@<3.0.13",
            T0,
            &[incident_event(1, "opened")],
            &cache("detected", true, b"p1"),
        )
        .unwrap();
    // A gap, a fork (seq 1 again) and an unknown incident are refused,
    // and leave the log and the cache as they were.
    for events in [
        vec![incident_event(3, "note")],
        vec![incident_event(1, "note")],
        vec![incident_event(2, "note"), incident_event(4, "note")],
    ] {
        assert!(is_invalid(store.append_incident_events(
            a.id,
            &events,
            &cache("scoped", true, b"bad")
        )));
    }
    assert!(is_invalid(store.append_incident_events(
        a.id + 1000,
        &[incident_event(1, "note")],
        &cache("scoped", true, b"bad")
    )));
    assert_eq!(store.incident(a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.incident_events(a.id, 0, 100).unwrap().len(), 1);
    let more = [
        incident_event(2, "scope_changed"),
        incident_event(3, "state_changed"),
    ];
    let b = store
        .append_incident_events(a.id, &more, &cache("scoped", true, b"p3"))
        .unwrap();
    assert_eq!(
        (
            b.id,
            b.last_seq,
            b.updated_ms,
            b.state.as_str(),
            b.created_ms
        ),
        (a.id, 3, T0 + 3, "scoped", T0)
    );
    assert_eq!(b.projection, b"p3");
    // Nothing to append changes nothing.
    assert_eq!(
        store
            .append_incident_events(a.id, &[], &cache("closed", false, b"x"))
            .unwrap(),
        b
    );
    let all = store.incident_events(a.id, 0, 100).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[1], more[0]);
    assert_eq!(
        store.incident_events(a.id, 1, 1).unwrap(),
        vec![more[0].clone()]
    );
    assert!(store.incident_events(a.id, 3, 100).unwrap().is_empty());
    assert_eq!(store.incident(a.id + 1000).unwrap(), None);
}

fn incidents_list_newest_first(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let (r, _) = store
            .open_incident(
                &format!("advisory:{i}"),
                T0 + i,
                &[incident_event(1, "opened")],
                &cache("scoped", true, b""),
            )
            .unwrap();
        ids.push(r.id);
    }
    // Two are no longer open.
    for &id in &ids[1..3] {
        store
            .append_incident_events(
                id,
                &[incident_event(2, "state_changed")],
                &cache("false_positive", false, b""),
            )
            .unwrap();
    }
    let listed = |before, open_only, limit| -> Vec<i64> {
        store
            .incidents(before, open_only, limit)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(listed(None, false, 100), newest_first);
    assert_eq!(listed(None, false, 2), newest_first[..2]);
    // Paging: each page starts below the last id of the one before.
    assert_eq!(listed(Some(newest_first[1]), false, 2), newest_first[2..4]);
    assert_eq!(listed(None, true, 100), vec![ids[4], ids[3], ids[0]]);
    assert_eq!(listed(Some(ids[3]), true, 100), vec![ids[0]]);
    assert_eq!(listed(Some(ids[0]), false, 100), Vec::<i64>::new());
}

fn tokens_and_revocation(store: &dyn Store) {
    let token = |id: &str, issued_ms| TokenRecord {
        id: id.into(),
        subject: "ci".into(),
        scopes: vec!["read".into(), "ingest-sbom".into()],
        issued_ms,
        expires_ms: issued_ms + 3_600_000,
        issued_by: "local".into(),
        revoked_ms: 0,
    };
    store.put_token(&token("a", T0)).unwrap();
    store.put_token(&token("b", T0 + 1)).unwrap();
    assert!(store.put_token(&token("a", T0)).is_err());
    assert_eq!(
        store.tokens().unwrap(),
        vec![token("b", T0 + 1), token("a", T0)]
    );
    let revoked = store.revoke_token("a", T0 + 5).unwrap().unwrap();
    assert_eq!(revoked.revoked_ms, T0 + 5);
    // A second revocation keeps the first time.
    assert_eq!(
        store.revoke_token("a", T0 + 9).unwrap().unwrap().revoked_ms,
        T0 + 5
    );
    assert_eq!(store.revoke_token("nope", T0).unwrap(), None);
}

/// Pages of any size, each started after the last one's cursor, are the
/// whole answer in order, with no process twice: running processes across
/// two hosts, and the evidence for a package (now and in a window), with
/// a scan budget that cuts pages short.
fn pages_walk_the_whole_answer(store: &dyn Store) {
    let a = open(store, &hello("paging-a"));
    apply(
        store,
        &a,
        msg(1, snapshot("snap-a", (10..40).map(plain).collect(), vec![])),
    );
    let b = open(store, &hello_for("machine-2", "beta", "paging-b"));
    apply(
        store,
        &b,
        msg(1, snapshot("snap-b", (5..25).map(plain).collect(), vec![])),
    );
    let all = store.processes(None).expect("processes");
    assert_eq!(all.len(), 50);
    let order: Vec<(String, u32)> = all
        .iter()
        .map(|p| (p.host.clone(), p.key.expect("key").pid))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "by host, then pid");
    for size in [1, 3, 7, 49, 50, 51] {
        let mut after: Option<ProcessCursor> = None;
        let mut got = Vec::new();
        loop {
            let page = store
                .processes_page(None, after.as_ref(), size)
                .expect("page");
            assert!(page.len() <= size);
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            got.extend(page.into_iter().map(|(_, p)| p));
        }
        assert_eq!(got, all, "pages of {size}");
    }
    let libc: Vec<i64> = store
        .packages_named(&PackageName { name: "libc6" })
        .expect("packages")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for window in [None, Some((0, i64::MAX))] {
        let whole = store.evidence(&libc, window).expect("evidence");
        assert_eq!(whole.len(), 50, "{window:?}");
        for (items, scan) in [(1, usize::MAX), (4, 3), (100, 9)] {
            let got = every_page(store, &libc, window, PageLimit { items, scan });
            assert_eq!(got, whole, "{window:?}, {items} per page, scan {scan}");
        }
    }
}

/// The evidence of every page, each started after the last one's cursor
/// (each page within its bounds; at most 100,000 pages).
fn every_page(
    store: &dyn Store,
    ids: &[i64],
    window: Option<(i64, i64)>,
    limit: PageLimit,
) -> Vec<crate::store::Evidence> {
    let mut after: Option<ProcessCursor> = None;
    let mut got = Vec::new();
    for _ in 0..100_000 {
        let page = store
            .evidence_page(ids, window, after.as_ref(), limit)
            .expect("evidence page");
        assert!(page.processes.len() <= limit.items.min(limit.scan));
        got.extend(page.processes.into_iter().flat_map(|(_, e)| e));
        match page.next {
            Some(next) => after = Some(next),
            None => return got,
        }
    }
    panic!("no last page after 100,000 pages");
}

/// A package more running processes hold than a selective page gathers
/// (`evidence::SELECTIVE_MAX`) is paged by walking the hosts, and one only
/// a few hold from its sets; both give every holder once, in cursor
/// order, in pages of any size.
fn a_package_most_processes_hold_is_walked(store: &dyn Store) {
    let n = crate::store::evidence::SELECTIVE_MAX as u32 + 1;
    let a = open(store, &hello("common"));
    let mut processes: Vec<Process> = (1..=n).map(plain).collect();
    // Two processes also map libz: a selective answer among the walked.
    for p in processes
        .iter_mut()
        .filter(|p| p.key.is_some_and(|k| k.pid % 3_000 == 7))
    {
        p.artifacts.push(mapped(
            "/usr/lib/x86_64-linux-gnu/libz.so.1",
            300,
            Some(deb("zlib1g", "zlib", "1:1.2.13")),
        ));
    }
    apply(
        store,
        &a,
        msg(1, snapshot("snap-common", processes, vec![])),
    );
    for (name, holders) in [("libc6", n as usize), ("zlib1g", 2)] {
        let ids: Vec<i64> = store
            .packages_named(&PackageName { name })
            .expect("packages")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let whole = store.evidence(&ids, None).expect("evidence");
        assert_eq!(whole.len(), holders, "{name}");
        let pids: Vec<u32> = whole
            .iter()
            .map(|e| e.holder.key.expect("key").pid)
            .collect();
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "{name}: pid order");
        for (items, scan) in [(1_000, usize::MAX), (700, 300)] {
            let got = every_page(store, &ids, None, PageLimit { items, scan });
            assert_eq!(got, whole, "{name}, {items} per page, scan {scan}");
        }
    }
}

// ---- Egress (issue 18) -------------------------------------------------------

/// Baselines: versions number from 1, a writer that read an older version
/// is refused and nothing is written, every kept version reads back, only
/// the newest few are kept, and listings give each key's newest.
fn egress_baselines_are_versioned(store: &dyn Store) {
    assert_eq!(store.egress_baseline("pod:ml/trainer", None).unwrap(), None);
    let v1 = store
        .put_egress_baseline("pod:ml/trainer", 0, T0, "{\"v\":1}")
        .unwrap();
    assert_eq!((v1.version, v1.updated_ms), (1, T0));
    let err = store
        .put_egress_baseline("pod:ml/trainer", 0, T0 + 1, "{\"lost\":1}")
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let v2 = store
        .put_egress_baseline("pod:ml/trainer", 1, T0 + 2, "{\"v\":2}")
        .unwrap();
    assert_eq!(v2.version, 2);
    store.put_egress_baseline("unit:cron", 0, T0, "{}").unwrap();
    assert_eq!(
        store.egress_baseline("pod:ml/trainer", None).unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        store.egress_baseline("pod:ml/trainer", Some(1)).unwrap(),
        Some(v1)
    );
    let all = store.egress_baselines().unwrap();
    assert_eq!(
        all.iter()
            .map(|b| (b.key.as_str(), b.version))
            .collect::<Vec<_>>(),
        vec![("pod:ml/trainer", 2), ("unit:cron", 1)]
    );
    let mut version = 2;
    for i in 0..EGRESS_BASELINE_VERSIONS {
        version = store
            .put_egress_baseline("pod:ml/trainer", version, T0 + 10 + i, "{}")
            .unwrap()
            .version;
    }
    assert_eq!(version, 2 + EGRESS_BASELINE_VERSIONS);
    assert_eq!(
        store.egress_baseline("pod:ml/trainer", Some(2)).unwrap(),
        None
    );
    assert!(
        store
            .egress_baseline(
                "pod:ml/trainer",
                Some(version - EGRESS_BASELINE_VERSIONS + 1)
            )
            .unwrap()
            .is_some()
    );
}

/// Alerts: one open alert per dedup key (sightings raise its count and
/// last sighting, and replace its document); resolving the quiet ones
/// frees the key, so the next sighting opens a new alert; listings are
/// newest first and bounded by time.
fn egress_alerts_one_open_per_key(store: &dyn Store) {
    let sighting = |key: &'static str, at: i64, count: i64, body: &'static str| EgressAlertUpsert {
        dedup_key: key,
        workload: "pod:ml/trainer",
        seen_ms: at,
        count,
        body,
    };
    let k = "pod:ml/trainer|telemetry.example.net|443|tcp";
    let (a, new) = store
        .upsert_egress_alert(&sighting(k, T0, 1, "first"))
        .unwrap();
    assert!(new);
    assert_eq!(
        (a.first_seen_ms, a.last_seen_ms, a.count, a.resolved_ms),
        (T0, T0, 1, None)
    );
    let (b, new) = store
        .upsert_egress_alert(&sighting(k, T0 + 500, 3, "second"))
        .unwrap();
    assert!(!new);
    assert_eq!(
        (b.id, b.last_seen_ms, b.count, b.body.as_str()),
        (a.id, T0 + 500, 4, "second")
    );
    assert_eq!(store.open_egress_alert(k).unwrap(), Some(b.clone()));
    // A sighting reported late does not move the last sighting back.
    let (b, _) = store
        .upsert_egress_alert(&sighting(k, T0 + 100, 1, "late"))
        .unwrap();
    assert_eq!((b.last_seen_ms, b.count), (T0 + 500, 5));
    assert!(matches!(
        store.upsert_egress_alert(&sighting(k, T0, 0, "none")),
        Err(StoreError::Invalid(_))
    ));
    let (other, new) = store
        .upsert_egress_alert(&sighting(
            "pod:ml/trainer|192.0.2.99/32|443|tcp",
            T0 + 1000,
            1,
            "x",
        ))
        .unwrap();
    assert!(new && other.id != a.id);
    let listed: Vec<i64> = store
        .egress_alerts(0, 10)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, vec![other.id, a.id]);
    assert_eq!(store.egress_alerts(T0 + 600, 10).unwrap().len(), 1);
    assert_eq!(store.egress_alerts(0, 1).unwrap().len(), 1);
    // Quiet since before T0 + 600: the first resolves, the other stays.
    let resolved = store.resolve_egress_alerts(T0 + 600, T0 + 2000).unwrap();
    assert_eq!(
        resolved.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![a.id]
    );
    assert_eq!(resolved[0].resolved_ms, Some(T0 + 2000));
    assert!(
        store
            .resolve_egress_alerts(T0 + 600, T0 + 2001)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.open_egress_alert(k).unwrap(), None);
    let (again, new) = store
        .upsert_egress_alert(&sighting(k, T0 + 3000, 1, "again"))
        .unwrap();
    assert!(new && again.id != a.id);
    assert_eq!(
        store
            .egress_alert(a.id)
            .unwrap()
            .map(|a| (a.count, a.resolved_ms)),
        Some((5, Some(T0 + 2000)))
    );
    assert_eq!(store.egress_alert(9999).unwrap(), None);
}

/// The chain of the process that connected: it, then its parents on its
/// host by ppid (a parent that started later is another process with a
/// recycled pid and stops the walk), its packages with their strongest
/// evidence, and its workload.
/// A matching pass records the packages it read, by id: a package
/// committed between its read and its record (by another collector's
/// ingest) stays unmatched for the next pass instead of being marked
/// matched with no verdicts.
fn a_pass_marks_only_the_packages_it_read(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let first = process(
        10,
        vec![mapped(
            "/usr/lib/libssl.so.3",
            300,
            Some(deb("libssl3", "openssl", "3.0.11-1")),
        )],
    );
    apply(store, &s, msg(1, snapshot("snap-1", vec![first], vec![])));
    let read = store
        .match_candidates(&MatchScope::Unmatched)
        .expect("candidates");
    assert_eq!(read.scope_size, read.packages.len(), "{read:?}");
    assert!(!read.packages.is_empty(), "{read:?}");
    // Another package commits before the pass records its verdicts.
    let later = process(
        11,
        vec![mapped(
            "/usr/lib/libz.so.1",
            301,
            Some(deb("zlib1g", "zlib", "1:1.2.13-1")),
        )],
    );
    apply(store, &s, msg(2, delta(vec![later], &[], vec![])));
    store
        .put_matches(&MatchScope::Packages(read.packages.clone()), &[])
        .expect("put");
    let left = store
        .match_candidates(&MatchScope::Unmatched)
        .expect("candidates");
    assert_eq!(
        left.scope_size, 1,
        "the later package is still unmatched: {left:?}"
    );
    assert!(
        left.packages.iter().all(|id| !read.packages.contains(id)),
        "{left:?} {read:?}"
    );
    // The same packages read by id again: what `Packages` matches.
    let again = store
        .match_candidates(&MatchScope::Packages(read.packages.clone()))
        .expect("candidates");
    assert_eq!(again.packages, read.packages);
}

fn process_chain_walks_to_the_root(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let mut root = plain(10);
    root.ppid = 0;
    let mut child = plain(11);
    child.ppid = 10;
    child.start_time_ms = T0 - 30_000;
    child.cmdline = "python3 train.py --token <redacted>".into();
    let mut grandchild = process(
        12,
        vec![
            exe("/venv/bin/python3", 300, None),
            mapped(
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                200,
                Some(deb("libc6", "glibc", "2.36-9")),
            ),
        ],
    );
    grandchild.ppid = 11;
    grandchild.start_time_ms = T0 - 10_000;
    // pid 13's parent pid 14 started after it: not its parent.
    let mut orphan = plain(13);
    orphan.ppid = 14;
    let mut late = plain(14);
    late.start_time_ms = T0;
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![root, child, grandchild, orphan, late],
                vec![],
            ),
        ),
    );
    let chain = store
        .process_chain(s.host, &key(12), 16)
        .unwrap()
        .expect("the process");
    assert_eq!(chain.hostname, "alpha");
    assert_eq!(
        chain.links.iter().map(|l| l.pid).collect::<Vec<_>>(),
        vec![12, 11, 10]
    );
    assert_eq!(chain.links[0].exe, b"/venv/bin/python3");
    assert_eq!(
        chain.links[1].cmdline,
        "python3 train.py --token <redacted>"
    );
    assert_eq!(chain.links[0].start_ticks, key(12).start_ticks);
    assert_eq!(chain.links[2].privilege.summary, "uid10");
    assert_eq!(
        chain
            .packages
            .iter()
            .map(|(p, e)| (p.name.as_str(), p.version.as_str(), e.as_str()))
            .collect::<Vec<_>>(),
        vec![("libc6", "2.36-9", "mapped")]
    );
    assert_eq!(
        chain.workload.as_ref().map(|w| w.id.as_str()),
        Some("unit/test.service")
    );
    let depth = store.process_chain(s.host, &key(12), 2).unwrap().unwrap();
    assert_eq!(depth.links.len(), 2);
    let orphan = store.process_chain(s.host, &key(13), 16).unwrap().unwrap();
    assert_eq!(
        orphan.links.iter().map(|l| l.pid).collect::<Vec<_>>(),
        vec![13]
    );
    assert_eq!(store.process_chain(s.host, &key(99), 16).unwrap(), None);
    assert_eq!(
        store.process_chain(s.host + 100, &key(12), 16).unwrap(),
        None
    );
}

/// A workload's packages over its processes' history: an exited process
/// keeps its span (with its end), a running one's goes on; the instance
/// is listed after its processes are gone; `fleet::changes` folds the
/// spans into libc6 2.36-9 -> 2.36-10.
fn workload_package_spans_over_history(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![plain(10)], vec![])),
    );
    let mut upgraded = plain(11);
    upgraded.artifacts[1].package = Some(deb("libc6", "glibc", "2.36-10"));
    upgraded.artifacts[1].inode = 201;
    apply(store, &s, msg(2, delta(vec![upgraded], &[10], vec![])));

    let instances = store.workload_instances(0, 10).unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(
        (
            instances[0].host.as_str(),
            instances[0].host_id.as_str(),
            instances[0].workload.id.as_str()
        ),
        ("alpha", "machine-1", "unit/test.service")
    );
    assert!(
        store
            .workload_instances(T0 + 1_000_000, 10)
            .unwrap()
            .is_empty()
    );

    let spans = store
        .workload_package_spans("machine-1", "unit/test.service", 0, 100)
        .unwrap();
    let view = |name: &str, version: &str| {
        spans
            .iter()
            .find(|p| p.package.name == name && p.package.version == version)
            .unwrap_or_else(|| panic!("{name} {version} in {spans:?}"))
    };
    let old = view("libc6", "2.36-9");
    let new = view("libc6", "2.36-10");
    let exe = view("plain", "1.0-1");
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert_eq!(old.evidence, "mapped");
    assert_eq!(exe.evidence, "exe");
    assert_eq!((old.processes, new.processes, exe.processes), (1, 1, 2));
    assert!(old.last_ms.is_some_and(|end| end >= T0), "{old:?}");
    assert_eq!((new.last_ms, exe.last_ms), (None, None));
    assert!(new.first_ms > old.first_ms, "{new:?} {old:?}");
    assert_eq!(new.package.purl, "pkg:deb/debian/libc6@2.36-10?arch=amd64");
    // Intervals that ended before `after_ms` are left out.
    let after = store
        .workload_package_spans("machine-1", "unit/test.service", T0 + 20_000, 100)
        .unwrap();
    assert!(
        after.iter().all(|p| p.package.version != "2.36-9"),
        "{after:?}"
    );
    assert_eq!(after.len(), 2);
    assert_eq!(
        store
            .workload_package_spans("machine-1", "unit/test.service", 0, 1)
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .workload_package_spans("machine-9", "unit/test.service", 0, 100)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .workload_package_spans("machine-1", "unit/other.service", 0, 100)
            .unwrap()
            .is_empty()
    );

    let changes =
        crate::fleet::changes::for_workload(store, "unit:test.service", old.first_ms + 1).unwrap();
    let got: Vec<(String, String, String)> = changes
        .changes
        .iter()
        .map(|c| (c.name.clone(), c.from.clone(), c.to.clone()))
        .collect();
    assert_eq!(
        got,
        [(
            "deb/libc6".to_string(),
            "2.36-9".to_string(),
            "2.36-10".to_string()
        )],
        "{changes:?}"
    );
    assert_eq!(changes.changes[0].replicas, ["alpha/unit/test.service"]);
    assert_eq!(changes.instances, 1);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// The number of migrations this build knows: a fresh store has run them all.
    fn migrations() -> i64 {
        let known = SqliteStore::in_memory()
            .expect("in-memory store")
            .schema_version()
            .expect("schema version");
        assert!(known > 0, "a fresh store has run its migrations");
        known
    }

    fn raw(dir: &Path) -> rusqlite::Connection {
        rusqlite::Connection::open(dir.join("patchgap.db")).expect("open the db file")
    }

    #[test]
    fn sqlite_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = {
            let store = SqliteStore::open(dir.path()).expect("open");
            let s = open(&store, &hello("session-a"));
            apply(
                &store,
                &s,
                msg(
                    1,
                    snapshot(
                        "snap-1",
                        vec![plain(10), plain(11)],
                        vec![sockets(10, vec![socket(40000, 443, true, 1)])],
                    ),
                ),
            );
            apply(&store, &s, msg(2, delta(vec![plain(12)], &[11], vec![])));
            s
        };

        let store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(
            open(&store, &hello("session-a")),
            Session {
                host: session.host,
                acked_seq: 2,
                new: false,
                epoch: session.epoch,
            }
        );
        assert_eq!(running(&store, None), vec![10, 12]);
        assert_eq!(summary(&store, 10).outbound_sockets, 1);
        assert_eq!(pids(&find(&store, "libc6")), vec![10, 12]);
        assert_eq!(
            store.schema_version().expect("schema version"),
            migrations()
        );
        // A resend after the reopen is still recognised.
        apply(
            &store,
            &session,
            msg(2, delta(vec![plain(11)], &[], vec![])),
        );
        assert_eq!(running(&store, None), vec![10, 12]);
    }

    #[test]
    fn sqlite_keeps_exited_processes_as_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let s = open(&store, &hello("session-a"));
        apply(
            &store,
            &s,
            msg(1, snapshot("snap-1", vec![plain(10), plain(11)], vec![])),
        );
        apply(
            &store,
            &s,
            msg(2, snapshot("snap-2", vec![plain(10)], vec![])),
        );
        assert_eq!(running(&store, None), vec![10]);
        drop(store);

        let conn = raw(dir.path());
        let (exit, until): (Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT p.exit_time_ms, h.until_ms FROM process p
                 JOIN process_set_history h ON h.process_id = p.id WHERE p.pid = 11",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the exited process is still in the database");
        assert_eq!(
            exit,
            Some(T0),
            "exited at the complete snapshot's scan time"
        );
        assert_eq!(until, Some(T0), "its history interval is closed");
        let running: i64 = conn
            .query_row(
                "SELECT count(*) FROM process WHERE pid = 10 AND exit_time_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(running, 1);
    }

    /// Migration 17's triggers: the incident log refuses UPDATE and
    /// DELETE from any SQL, and an incident keeps its identity.
    #[test]
    fn sqlite_incident_log_is_append_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = {
            let store = SqliteStore::open(dir.path()).expect("open");
            store
                .open_incident(
                    "advisory:A",
                    T0,
                    &[incident_event(1, "opened")],
                    &cache("detected", true, b""),
                )
                .unwrap()
                .0
                .id
        };
        let conn = raw(dir.path());
        for sql in [
            "UPDATE incident_event SET actor = 'mallory'",
            "DELETE FROM incident_event",
            "DELETE FROM incident",
            "UPDATE incident SET dedup_key = 'advisory:B'",
            "UPDATE incident SET created_ms = 0",
        ] {
            let err = conn.execute(sql, []).expect_err(sql).to_string();
            assert!(
                err.contains("append-only") || err.contains("never") || err.contains("keeps"),
                "{sql}: {err}"
            );
        }
        let actor: String = conn
            .query_row(
                "SELECT actor FROM incident_event WHERE incident = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(actor, "responder");
    }

    #[test]
    fn sqlite_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(SqliteStore::open(dir.path()).expect("create"));
        let known = migrations();
        raw(dir.path())
            .pragma_update(None, "user_version", known + 1)
            .expect("set user_version");
        match SqliteStore::open(dir.path()) {
            Err(StoreError::SchemaTooNew { found, known: k }) => {
                assert_eq!((found, k), (known + 1, known));
            }
            Err(e) => panic!("expected SchemaTooNew, got {e}"),
            Ok(_) => panic!("opened a database with a newer schema"),
        }
    }
}
