//! The 7:10 a.m. story through the collector, in one process: an agent's
//! messages go through `Ingest` (as the gRPC service sends them), the
//! stage judges their connections against the store, and the alert,
//! the baseline and the incident are read back as the API reads them.
//! No kernel: `tests/` has the live version.

use std::{sync::Arc, time::Duration};

use patchgap_proto::v1::{
    self, AgentMessage, Artifact, ArtifactKind, Delta, Exit, Owner, Package, Process, ProcessKey,
    Snapshot, agent_message::Body,
};

use super::{
    alert::Reason,
    baseline::{Baseline, Learning, State},
    policy::{EgressPolicy, Mode},
    stage::{AlertEvent, EgressConfig, EgressPolicies, Stage},
};
use crate::{
    Ingest, ScopeMap, SqliteStore,
    response::incident::{Source, log},
    store::{
        Store,
        conformance::{T0, hello},
    },
};

fn learning() -> Learning {
    Learning {
        warmup: Duration::from_secs(1),
        stable: Duration::from_secs(2),
        max_learning: Duration::from_secs(60),
        quarantine: Duration::from_secs(60),
        promote_replicas: 2,
        promote_after: Duration::from_secs(3600),
    }
}

fn pod(uid: &str, pod: &str, owner: &str) -> v1::Workload {
    v1::Workload {
        id: format!("pod/{uid}/c-{uid}"),
        kind: "pod".into(),
        namespace: "ml".into(),
        pod: pod.into(),
        pod_uid: uid.into(),
        container_name: owner.into(),
        owner: Some(Owner {
            kind: "Deployment".into(),
            name: owner.into(),
            source: "label".into(),
        }),
        image_digest: "sha256:aaaa".into(),
        cgroup: format!("/kubepods/besteffort/pod{uid}/c-{uid}"),
        ..Default::default()
    }
}

fn key(pid: u32) -> ProcessKey {
    ProcessKey {
        pid,
        start_ticks: 5000 + u64::from(pid),
    }
}

/// The trainer's interpreter with `trainlib` at `version` installed in
/// its venv, in workload `w`.
fn python(pid: u32, ppid: u32, w: &v1::Workload, version: &str) -> Process {
    let pypi = Package {
        ecosystem: "pypi".into(),
        name: "trainlib".into(),
        version: version.into(),
        purl: format!("pkg:pypi/trainlib@{version}"),
        ..Default::default()
    };
    Process {
        key: Some(key(pid)),
        ppid,
        exe: b"/venv/bin/python3".to_vec(),
        cmdline: "python3 train.py --api-key <redacted>".into(),
        comm: "python3".into(),
        cgroup: w.cgroup.clone(),
        start_time_ms: T0 - 1000 + i64::from(pid),
        workload: w.id.clone(),
        root: b"/".to_vec(),
        artifacts: vec![
            Artifact {
                path: b"/venv/bin/python3".to_vec(),
                inode: 10,
                kind: ArtifactKind::Exe as i32,
                ..Default::default()
            },
            Artifact {
                path: format!(
                    "/venv/lib/python3.11/site-packages/trainlib-{version}.dist-info/METADATA"
                )
                .into_bytes(),
                inode: 20 + u64::from(pid),
                kind: ArtifactKind::Installed as i32,
                package: Some(pypi),
                ..Default::default()
            },
        ],
        privilege: Some(v1::Privilege::default()),
        ..Default::default()
    }
}

fn connect(pid: u32, ip: &str, names: &[&str], at: i64) -> v1::Connection {
    v1::Connection {
        key: Some(key(pid)),
        protocol: "tcp".into(),
        remote_addr: ip.into(),
        remote_port: 443,
        first_seen_ms: at,
        last_seen_ms: at,
        count: 1,
        last_result: 0,
        names: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn msg(seq: u64, body: Body) -> AgentMessage {
    AgentMessage {
        seq,
        body: Some(body),
    }
}

fn delta(upserts: Vec<Process>, exits: &[u32], connections: Vec<v1::Connection>, at: i64) -> Body {
    Body::Delta(Delta {
        scanned_at_ms: at,
        upserts,
        exits: exits
            .iter()
            .map(|pid| Exit {
                key: Some(key(*pid)),
                exit_time_ms: at,
            })
            .collect(),
        connections,
        ..Default::default()
    })
}

struct Story {
    ingest: Arc<Ingest>,
    stage: Arc<Stage>,
    events: tokio::sync::broadcast::Receiver<AlertEvent>,
    _dir: tempfile::TempDir,
}

fn attach(store: Arc<dyn Store>, dir: tempfile::TempDir) -> Story {
    let ingest = Arc::new(Ingest::new(store));
    let stage = Arc::new(Stage::new(EgressConfig {
        learning: learning(),
        policies: EgressPolicies {
            default: EgressPolicy::default(),
            workloads: vec![(
                "*/Deployment/batch/*".into(),
                EgressPolicy {
                    mode: Mode::Audit,
                    ..EgressPolicy::default()
                },
            )],
        },
        ..EgressConfig::default()
    }));
    let map = dir.path().join("scopes.txt");
    std::fs::write(&map, "namespace=ml => sensitive writes_to=s3://ml-data\n").unwrap();
    let scope = Arc::new(std::sync::Mutex::new(ScopeMap::load(&map).unwrap()));
    ingest.attach_egress(stage.clone(), scope);
    let events = stage.subscribe();
    Story {
        ingest,
        stage,
        events,
        _dir: dir,
    }
}

/// Learning on two replicas, a stable shared baseline, an upgrade, and a
/// new name: one alert (not one per replica) with the names, address,
/// lineage, the package from → to, the workload and scope `sensitive`;
/// one event published; an audit-mode workload's alert listed and not
/// published; a restart keeps the baseline; the incident opened from the
/// alert is scoped to the trainer's two replicas.
#[test]
fn upgrade_then_new_name_is_one_alert_with_the_story() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let s = attach(store.clone(), tempfile::tempdir().unwrap());
    let (a, b, batch) = (
        pod("uid-a", "trainer-5d8c7b9f4-x2k9p", "trainer"),
        pod("uid-b", "trainer-5d8c7b9f4-q7w4z", "trainer"),
        pod("uid-c", "batch-7f9c8d6b5-m4n2p", "batch"),
    );
    let session = s.ingest.hello(&hello("s1"), T0).unwrap();
    s.ingest
        .apply(
            &session,
            &msg(
                1,
                Body::Snapshot(Snapshot {
                    snapshot_id: "snap".into(),
                    last: true,
                    scanned_at_ms: T0,
                    processes: vec![
                        python(100, 1, &a, "1.0.0"),
                        python(110, 100, &a, "1.0.0"),
                        python(200, 1, &b, "1.0.0"),
                        python(300, 1, &batch, "1.0.0"),
                    ],
                    workloads: vec![a.clone(), b.clone(), batch.clone()],
                    ..Default::default()
                }),
            ),
            T0,
        )
        .unwrap();
    // Learning: both replicas reach their usual destinations.
    let learn = vec![
        connect(110, "198.51.100.10", &["data.example.org"], T0 + 100),
        connect(200, "198.51.100.10", &["data.example.org"], T0 + 200),
        connect(200, "192.0.2.10", &[], T0 + 300),
        connect(300, "198.51.100.10", &["data.example.org"], T0 + 300),
    ];
    s.ingest
        .apply(
            &session,
            &msg(2, delta(vec![], &[], learn, T0 + 300)),
            T0 + 300,
        )
        .unwrap();
    assert!(store.egress_alerts(0, 10).unwrap().is_empty());
    let trainer_key = "k8s:/ml/Deployment/trainer/trainer";
    let record = store
        .egress_baseline(trainer_key, None)
        .unwrap()
        .unwrap_or_else(|| panic!("a baseline: {:?}", store.egress_baselines().unwrap()));
    let baseline: Baseline = serde_json::from_str(&record.body).unwrap();
    assert_eq!(baseline.entries.len(), 2, "{baseline:?}");
    assert!(baseline.entries[0].promoted, "seen on both replicas");
    assert_eq!(baseline.state(&learning(), T0 + 4000), State::Stable);

    // Restart the collector's stage mid-story: the baseline comes back
    // from the store. A learned name on another address (a CDN) is known.
    drop(s);
    let mut s = attach(store.clone(), tempfile::tempdir().unwrap());
    let known = vec![connect(
        100,
        "198.51.100.77",
        &["data.example.org"],
        T0 + 4000,
    )];
    s.ingest
        .apply(
            &session,
            &msg(3, delta(vec![], &[], known, T0 + 4000)),
            T0 + 4000,
        )
        .unwrap();
    assert!(store.egress_alerts(0, 10).unwrap().is_empty());

    // The upgrade: both replicas restart with trainlib 2.0.0, then reach a
    // new name on an unexpected address.
    let restarted = vec![python(101, 1, &a, "2.0.0"), python(201, 1, &b, "2.0.0")];
    s.ingest
        .apply(
            &session,
            &msg(4, delta(restarted, &[100, 110, 200], vec![], T0 + 5000)),
            T0 + 5000,
        )
        .unwrap();
    let new = vec![
        connect(
            101,
            "203.0.113.66",
            &["telemetry.example.net", "cdn.example.net"],
            T0 + 6000,
        ),
        connect(201, "203.0.113.66", &["telemetry.example.net"], T0 + 6100),
        connect(300, "203.0.113.66", &["telemetry.example.net"], T0 + 6200),
    ];
    s.ingest
        .apply(
            &session,
            &msg(5, delta(vec![], &[], new, T0 + 6200)),
            T0 + 6200,
        )
        .unwrap();

    let alerts = store.egress_alerts(0, 10).unwrap();
    assert_eq!(
        alerts.len(),
        2,
        "one for the trainer, one for batch: {alerts:?}"
    );
    let trainer = alerts
        .iter()
        .find(|r| r.workload == trainer_key)
        .expect("trainer's alert");
    assert_eq!(trainer.count, 2, "both replicas, one alert");
    let alert: super::alert::Alert = serde_json::from_str(&trainer.body).unwrap();
    assert_eq!(alert.reason, Reason::NewSinceUpgrade);
    assert_eq!(alert.destination.ip, "203.0.113.66");
    assert_eq!(
        alert.destination.names,
        vec![
            "telemetry.example.net".to_string(),
            "cdn.example.net".to_string()
        ]
    );
    assert_eq!(alert.destination.names_source, "dns");
    assert_eq!(alert.scope.classification, "sensitive");
    assert_eq!(alert.scope.writes_to, vec!["s3://ml-data".to_string()]);
    assert_eq!(
        (
            alert.workload.owner.as_str(),
            alert.workload.namespace.as_str()
        ),
        ("trainer", "ml")
    );
    assert_eq!(alert.workload.image_digest, "sha256:aaaa");
    assert_eq!(alert.lineage[0].pid, 101);
    assert_eq!(
        alert.lineage[0].argv,
        "python3 train.py --api-key <redacted>"
    );
    // From `fleet::changes` (what `patchgap changes` answers): when the
    // upgraded processes were first held, not when they connected.
    assert_eq!(alert.packages_changed.len(), 1, "{alert:?}");
    let change = &alert.packages_changed[0];
    assert_eq!(
        (
            change.name.as_str(),
            change.from.as_str(),
            change.to.as_str(),
            change.at_ms
        ),
        ("pypi/trainlib", "1.0.0", "2.0.0", T0 + 5000)
    );
    assert_eq!(alert.packages, vec!["pkg:pypi/trainlib@2.0.0".to_string()]);
    assert_eq!(alert.replicas.len(), 2, "{:?}", alert.replicas);
    assert_eq!(alert.baseline.state, "stable");
    // One event for the trainer; batch is in audit mode: listed, not sent.
    match s.events.try_recv() {
        Ok(AlertEvent::New(a)) => {
            assert_eq!((a.id, a.workload.key.as_str()), (trainer.id, trainer_key))
        }
        other => panic!("expected the trainer's alert, got {other:?}"),
    }
    assert!(
        s.events.try_recv().is_err(),
        "one event, not one per replica or for audit"
    );
    let audit = alerts.iter().find(|r| r.workload != trainer_key).unwrap();
    assert!(audit.body.contains("\"mode\":\"audit\""), "{}", audit.body);

    // The incident from the alert: the trainer, both replicas, sensitive.
    let rules = crate::fleet::scope::parse(b"namespace=ml => sensitive\n").unwrap();
    let opened = log::open(
        &s.ingest,
        Source::EgressAlert {
            alert: trainer.id.to_string(),
        },
        "test",
        &rules,
        T0 + 7000,
    )
    .unwrap();
    let scope = &opened.incident.scope;
    assert_eq!(
        scope.workloads.iter().collect::<Vec<_>>(),
        vec![&trainer_key.to_string()]
    );
    assert_eq!(scope.instances.len(), 2);
    assert!(scope.data_scopes.contains("sensitive"));
    assert!(matches!(
        log::open(
            &s.ingest,
            Source::EgressAlert {
                alert: "999".into()
            },
            "test",
            &rules,
            T0
        ),
        Err(log::LogError::Scope(
            crate::response::incident::scope::ScopeError::UnknownAlert(_)
        ))
    ));

    // Quiet for the resolve period: resolved and published.
    let resolved = s
        .stage
        .resolve_quiet(store.as_ref(), T0 + 6200 + 16 * 60_000)
        .unwrap();
    assert_eq!(resolved.len(), 2);
    assert!(matches!(s.events.try_recv(), Ok(AlertEvent::Resolved(a)) if a.id == trainer.id));
}

/// The policy file's `[[egress]]` sections and `[egress_learning]`: read,
/// checked with positions, and what the stage applies (the flags over
/// the file's durations).
#[test]
fn policy_file_egress_sections() {
    let text = br#"
[[tier]]
number = 1
name = "all"
[[tier.rule]]

[egress_learning]
warmup = "2s"
quarantine = "1h"

[[egress]]
workload = "*"
mode = "audit"

[[egress]]
workload = "k8s:*/ml/Deployment/trainer/*"
mode = "enforce"
[[egress.allow]]
names = ["*.example.org", "api.example.net"]
cidrs = ["198.51.100.0/24"]
ports = [443]
"#;
    let policy = crate::Policy::parse("p.toml", text).unwrap();
    let e = &policy.egress;
    assert_eq!(e.default.mode, Mode::Audit);
    assert_eq!(e.workloads.len(), 1);
    let trainer = super::alert::WorkloadRef {
        key: "k8s:/ml/Deployment/trainer/trainer".into(),
        ..Default::default()
    };
    let p = e.for_workload(&trainer);
    assert_eq!(p.mode, Mode::Enforce);
    assert!(p.allows("198.51.100.7".parse().unwrap(), &[], 443));
    assert!(p.allows("192.0.2.1".parse().unwrap(), &["x.example.org".into()], 443));
    assert!(!p.allows("192.0.2.1".parse().unwrap(), &["x.example.org".into()], 80));
    assert!(
        !p.allows("10.0.0.1".parse().unwrap(), &[], 443),
        "private is not exempt"
    );
    let other = super::alert::WorkloadRef {
        key: "unit:cron".into(),
        ..Default::default()
    };
    assert_eq!(e.for_workload(&other).mode, Mode::Audit);
    let flags = super::flags::EgressFlags {
        quarantine: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let l = flags.over(policy.egress_learning.over(Learning::default()));
    assert_eq!(
        (l.warmup, l.quarantine, l.stable),
        (
            Duration::from_secs(2),
            Duration::from_secs(5),
            Learning::default().stable
        )
    );

    // Mistakes, each at its place.
    let bad = br#"
[[tier]]
number = 1
name = "all"
[[tier.rule]]

[egress_learning]
warmup = "300"

[[egress]]
workload = "x"
mode = "learn"
[[egress.allow]]
names = ["a b"]
cidrs = ["10.0.0.1/8"]
ports = [70000]
"#;
    let errors: Vec<String> = crate::Policy::parse("p.toml", bad)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let want = [
        "p.toml:8:10: duration \"300\" has no unit",
        "p.toml:12:8: egress mode \"learn\"",
        "p.toml:14:10: egress name \"a b\"",
        "p.toml:15:10: egress cidr \"10.0.0.1/8\" has host bits set",
        "p.toml:16:10: egress port 70000",
    ];
    for w in want {
        assert!(
            errors.iter().any(|e| e.starts_with(w)),
            "{w} not in {errors:#?}"
        );
    }

    // An [[egress]] routes its alerts to an [[endpoint]] by name; a name
    // the file does not define is an error at its place.
    let routed = br#"
[[tier]]
number = 1
name = "all"
[[tier.rule]]

[[endpoint]]
name = "soc"
url = "http://127.0.0.1:9/hook"
secret_env = "SOC_SECRET"

[[egress]]
workload = "ml/trainer"
endpoint = "soc"

[[egress]]
workload = "ml/batch"
endpoint = "nowhere"
"#;
    let errors: Vec<String> = crate::Policy::parse("p.toml", routed)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e
                .starts_with("p.toml:18:12: egress endpoint \"nowhere\" is not an [[endpoint]]")),
        "{errors:#?}"
    );
    let ok = std::str::from_utf8(routed)
        .unwrap()
        .replace("\"nowhere\"", "\"soc\"");
    let policy = crate::Policy::parse("p.toml", ok.as_bytes()).unwrap();
    let trainer = super::alert::WorkloadRef {
        namespace: "ml".into(),
        owner: "trainer".into(),
        ..Default::default()
    };
    assert_eq!(
        policy.egress.for_workload(&trainer).endpoint.as_deref(),
        Some("soc")
    );
    assert_eq!(policy.egress.default.endpoint, None);
}

/// The stage keeps a process's facts across messages, and forgets them
/// when the process's record changes: the same process key upserted with
/// trainlib 2.0.0 (no restart) is judged with 2.0.0 at once, so its new
/// destination alerts as new since the upgrade with 1.0.0 → 2.0.0. A
/// stale chain would still show 1.0.0 and call it a plain new
/// destination. A Hello forgets every chain.
#[test]
fn a_cached_chain_follows_its_process_record() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let s = attach(store.clone(), tempfile::tempdir().unwrap());
    let (a, b) = (
        pod("uid-a", "trainer-5d8c7b9f4-x2k9p", "trainer"),
        pod("uid-b", "trainer-5d8c7b9f4-q7w4z", "trainer"),
    );
    let session = s.ingest.hello(&hello("s1"), T0).unwrap();
    s.ingest
        .apply(
            &session,
            &msg(
                1,
                Body::Snapshot(Snapshot {
                    snapshot_id: "snap".into(),
                    last: true,
                    scanned_at_ms: T0,
                    processes: vec![python(100, 1, &a, "1.0.0"), python(200, 1, &b, "1.0.0")],
                    workloads: vec![a.clone(), b.clone()],
                    ..Default::default()
                }),
            ),
            T0,
        )
        .unwrap();
    let learn = vec![
        connect(100, "198.51.100.10", &["data.example.org"], T0 + 100),
        connect(200, "198.51.100.10", &["data.example.org"], T0 + 200),
    ];
    s.ingest
        .apply(
            &session,
            &msg(2, delta(vec![], &[], learn, T0 + 200)),
            T0 + 200,
        )
        .unwrap();
    let learned = s.stage.chain_cache_stats();
    assert_eq!((learned.misses, learned.entries), (2, 2), "{learned:?}");
    // Stable now; a connections-only message is answered from the cache.
    let known = vec![connect(
        100,
        "198.51.100.10",
        &["data.example.org"],
        T0 + 4000,
    )];
    s.ingest
        .apply(
            &session,
            &msg(3, delta(vec![], &[], known, T0 + 4000)),
            T0 + 4000,
        )
        .unwrap();
    let cached = s.stage.chain_cache_stats();
    assert_eq!((cached.hits, cached.misses), (1, 2), "{cached:?}");
    assert!(store.egress_alerts(0, 10).unwrap().is_empty());

    // The same process, its record replaced: trainlib upgraded in place.
    s.ingest
        .apply(
            &session,
            &msg(
                4,
                delta(vec![python(100, 1, &a, "2.0.0")], &[], vec![], T0 + 5000),
            ),
            T0 + 5000,
        )
        .unwrap();
    let forgotten = s.stage.chain_cache_stats();
    assert_eq!(
        (forgotten.entries, forgotten.invalidated),
        (0, 2),
        "{forgotten:?}"
    );
    let new = vec![connect(
        100,
        "203.0.113.66",
        &["telemetry.example.net"],
        T0 + 6000,
    )];
    s.ingest
        .apply(
            &session,
            &msg(5, delta(vec![], &[], new, T0 + 6000)),
            T0 + 6000,
        )
        .unwrap();
    let alerts = store.egress_alerts(0, 10).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert: super::alert::Alert = serde_json::from_str(&alerts[0].body).unwrap();
    assert_eq!(alert.reason, Reason::NewSinceUpgrade, "{alert:?}");
    assert!(
        alert
            .packages
            .contains(&"pkg:pypi/trainlib@2.0.0".to_string()),
        "{:?}",
        alert.packages
    );
    assert_eq!(
        alert
            .packages_changed
            .iter()
            .map(|c| (c.from.as_str(), c.to.as_str()))
            .collect::<Vec<_>>(),
        vec![("1.0.0", "2.0.0")]
    );
    assert_eq!(s.stage.chain_cache_stats().entries, 1);

    // A Hello (a reconnect, maybe a reboot reusing process keys).
    s.ingest.hello(&hello("s2"), T0 + 7000).unwrap();
    assert_eq!(s.stage.chain_cache_stats().entries, 0);
}
