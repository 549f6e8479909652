//! The policy check's gate part in the store: a workload instance first
//! started from a blocked digest after the gate blocked it is a bypass,
//! unless a break-glass ticket let that digest through; a container
//! restarted in its old instance is not; a gate that only warns has no
//! bypasses.

use std::sync::Arc;

use patchgap_proto::v1::{self, agent_message::Body};

use super::{Settings, Verdict, check, pass};
use crate::{
    fleet::ingest::Ingest,
    response::{
        ActionKind, Admission, Approval, Mode, Policy,
        incident::{
            Event, Incident, Plan, Source, State,
            log::{self, show},
        },
        plan::PlannedAction,
    },
    store::{
        Session,
        conformance::{T0, deb, exe, hello, mapped, msg, process},
        sqlite::SqliteStore,
    },
};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// When the gate's block came into force.
const GATE_AT: i64 = T0 + 1_000;

fn workload(id: &str, digest: &str) -> v1::Workload {
    v1::Workload {
        id: id.into(),
        kind: "pod".into(),
        namespace: "ml".into(),
        pod: id.rsplit('/').nth(1).unwrap_or_default().into(),
        image_digest: digest.into(),
        ..Default::default()
    }
}

/// A process of `instance` running libfoo 1.5 (affected), started at
/// `started`.
fn app(pid: u32, instance: &str, started: i64) -> v1::Process {
    let mut p = process(
        pid,
        vec![
            exe("/usr/bin/app", 100, None),
            mapped(
                "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
                300,
                Some(deb("libfoo1", "foo", "1.5-1")),
            ),
        ],
    );
    p.workload = instance.into();
    p.start_time_ms = started;
    p
}

struct World {
    ingest: Ingest,
    alpha: Session,
    seq: u64,
    id: i64,
}

impl World {
    /// Alpha runs `pod/old/app` (the blocked digest, started before the
    /// gate); an incident on libfoo < 2 has a `block_new_artifacts_with_package`
    /// action in `mode`, in force since [`GATE_AT`].
    fn new(mode: Mode) -> World {
        let ingest = Ingest::new(Arc::new(SqliteStore::in_memory().unwrap()));
        let alpha = ingest.hello(&hello("s1"), T0).unwrap();
        let snapshot = Body::Snapshot(v1::Snapshot {
            snapshot_id: "snap-1".into(),
            part: 0,
            last: true,
            scanned_at_ms: T0,
            stats: Some(v1::ScanStats {
                processes: 1,
                ..Default::default()
            }),
            processes: vec![app(10, "pod/old/app", T0 - 60_000)],
            sockets: vec![],
            workloads: vec![workload("pod/old/app", DIGEST)],
            artifacts: Vec::new(),
        });
        ingest.apply(&alpha, &msg(1, snapshot), T0).unwrap();
        let source = Source::Package {
            package: "libfoo1".into(),
            name: "libfoo1".into(),
            ecosystem: None,
            group: None,
            range: Some("<2".into()),
        };
        let o = log::open(&ingest, source, "alice", &[], T0 + 1).unwrap();
        let block = PlannedAction {
            id: 1,
            kind: ActionKind::BlockNewArtifactsWithPackage,
            mode,
            approval: Approval::Auto,
            revert_after_ms: None,
            allow: vec![],
            targets: vec![],
            excluded: vec![],
            no_executor: None,
            endpoint: None,
        };
        log::append(&ingest, o.id, "alice", GATE_AT, |i| {
            let planned = i.transition(State::Planned, "")?;
            Ok(vec![
                Event::Planned {
                    plan: Plan {
                        hash: "h".into(),
                        tier: Some(2),
                        tier_name: "high".into(),
                        exception: None,
                        actions: vec![block.clone()],
                    },
                },
                Event::Requested { actions: vec![1] },
                // What the deploy gate's follower records once its facts
                // hold the block (gate/execute.rs).
                Event::Observed {
                    action: 1,
                    observation: crate::response::incident::Observation::Applied { at_ms: GATE_AT },
                },
                planned,
                Event::StateChanged {
                    from: State::Planned,
                    to: State::Contained,
                    reason: "test".into(),
                },
            ])
        })
        .unwrap();
        World {
            ingest,
            alpha,
            seq: 1,
            id: o.id,
        }
    }

    /// Alpha reports these processes started, in these workloads.
    fn started(
        &mut self,
        processes: Vec<v1::Process>,
        workloads: Vec<v1::Workload>,
        exits: &[u32],
    ) {
        self.seq += 1;
        let d = Body::Delta(v1::Delta {
            scanned_at_ms: GATE_AT + 10_000,
            upserts: processes,
            exits: exits
                .iter()
                .map(|pid| v1::Exit {
                    key: Some(v1::ProcessKey {
                        pid: *pid,
                        start_ticks: 1000 + u64::from(*pid) * 7,
                    }),
                    exit_time_ms: GATE_AT + 10_000,
                })
                .collect(),
            sockets: vec![],
            workloads,
            connections: vec![],
            stats: None,
            artifacts: vec![],
        });
        self.ingest
            .apply(&self.alpha, &msg(self.seq, d), GATE_AT + 10_000)
            .unwrap();
    }

    fn incident(&self) -> Incident {
        show(self.ingest.store().as_ref(), self.id, 1000)
            .unwrap()
            .incident
    }

    /// One pass now; the policy check's result.
    fn policy_check(&self, at: i64) -> check::CheckResult {
        pass::run_pass(
            &self.ingest,
            &Settings::default(),
            &[],
            &Policy::builtin(),
            at,
        )
        .unwrap();
        let i = self.incident();
        let run = &i.verification.as_ref().expect("a run").last;
        run.checks
            .iter()
            .find(|c| c.check == "policy")
            .cloned()
            .expect("a policy check")
    }
}

#[test]
fn a_new_workload_from_a_blocked_digest_without_a_ticket_fails_the_policy_check() {
    let mut w = World::new(Mode::Enforce);
    // Before anything new: the old instance predates the gate.
    let c = w.policy_check(GATE_AT + 5_000);
    assert_eq!(c.verdict, Verdict::Successful, "{c:#?}");
    assert!(
        c.evidence.iter().any(|e| e
            .starts_with("deploy gate: 1 blocked digest(s), 0 workload(s) started from one since")),
        "{c:#?}"
    );
    // A deploy while the webhook was down: pod/new/app runs the blocked
    // digest, first started after the gate; the old pod's container
    // restarts (a new process in its old instance); another pod runs an
    // image with the fixed version, which the gate does not block (one
    // running the affected version would be an affected digest, blocked
    // too: the pass places each process in its workload and image).
    let mut fixed = app(30, "pod/other/app", GATE_AT + 9_500);
    fixed.artifacts[1] = mapped(
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
        301,
        Some(deb("libfoo1", "foo", "2.1-1")),
    );
    w.started(
        vec![
            app(20, "pod/new/app", GATE_AT + 8_000),
            app(11, "pod/old/app", GATE_AT + 9_000),
            fixed,
        ],
        vec![
            workload("pod/new/app", DIGEST),
            workload("pod/other/app", OTHER),
        ],
        &[10],
    );
    let c = w.policy_check(GATE_AT + 11_000);
    assert_eq!(c.verdict, Verdict::Failed, "{c:#?}");
    assert_eq!(c.blockers.len(), 1, "{c:#?}");
    let b = &c.blockers[0];
    assert!(
        b.starts_with(&format!(
            "workload pod/new/app on alpha (namespace ml) started {} from blocked digest {DIGEST} after the gate blocked it at {}",
            check::utc(GATE_AT + 8_000),
            check::utc(GATE_AT)
        )),
        "{b}"
    );
    assert!(
        b.ends_with("with no break-glass ticket: a deploy bypassed the gate"),
        "{b}"
    );
    // The incident says so in what blocks closure.
    let i = w.incident();
    assert!(
        i.verification
            .as_ref()
            .unwrap()
            .last
            .blockers()
            .iter()
            .any(|l| l.starts_with("policy (failed): workload pod/new/app on alpha")),
        "{:?}",
        i.verification
    );

    // A break-glass ticket let that digest through: admitted, named in
    // the evidence with its ticket, and the check passes.
    log::append(&w.ingest, w.id, log::COLLECTOR, GATE_AT + 12_000, |_| {
        Ok(vec![Event::BreakGlass {
            ticket: "SEC-4242".into(),
            by: "bob@example.com".into(),
            object: "Deployment ml/app".into(),
            digests: vec![DIGEST.into()],
        }])
    })
    .unwrap();
    let c = w.policy_check(GATE_AT + 13_000);
    assert_eq!(c.verdict, Verdict::Successful, "{c:#?}");
    assert!(
        c.evidence
            .iter()
            .any(|e| e.starts_with("workload pod/new/app on alpha")
                && e.contains(
                    "admitted by break-glass SEC-4242 (bob@example.com for Deployment ml/app"
                )),
        "{c:#?}"
    );
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("0 workload(s) started from one since")
                && e.ends_with("1 with a break-glass ticket")),
        "{c:#?}"
    );
}

#[test]
fn a_gate_in_shadow_or_warning_has_no_bypasses() {
    let mut w = World::new(Mode::Shadow);
    w.started(
        vec![app(20, "pod/new/app", GATE_AT + 8_000)],
        vec![workload("pod/new/app", DIGEST)],
        &[],
    );
    let c = w.policy_check(GATE_AT + 11_000);
    assert_eq!(c.verdict, Verdict::Successful, "{c:#?}");
    assert!(
        c.evidence
            .iter()
            .any(|e| e.starts_with("the gate only warns")),
        "{c:#?}"
    );
    // The same in enforce mode, answered with a warning by the policy.
    let mut w = World::new(Mode::Enforce);
    w.started(
        vec![app(20, "pod/new/app", GATE_AT + 8_000)],
        vec![workload("pod/new/app", DIGEST)],
        &[],
    );
    let i = w.incident();
    let mut facts = pass::facts(w.ingest.store().as_ref(), &i, &[], GATE_AT + 11_000).unwrap();
    assert_eq!(facts.instances.len(), 2, "{:?}", facts.instances);
    assert_eq!(check::policy(&i, &facts).verdict, Verdict::Failed);
    facts.gate_admission = Some(Admission::Warn);
    assert_eq!(check::policy(&i, &facts).verdict, Verdict::Successful);
    facts.gate_admission = Some(Admission::Deny);
    assert_eq!(check::policy(&i, &facts).verdict, Verdict::Failed);
}
