//! The retention contract (issue 19): pruning deletes history that ended
//! before the horizon and nothing current, compaction takes what only
//! that history referenced, the horizon is recorded, a second run finds
//! nothing, and a size bound evicts the oldest history first.

use patchgap_proto::v1::{self, Delta, agent_message::Body};

use super::{
    T0, apply, deb, exe, find, hello, mapped, msg, open, process, query, running, snapshot,
};
use crate::{
    fleet::exposure,
    retention::{RetentionFlags, enforce},
    store::{IncidentCache, IncidentEventRecord, Store},
};

/// A process whose only package of interest is `name`.
fn with(pid: u32, name: &str) -> v1::Process {
    process(
        pid,
        vec![
            exe(
                &format!("/usr/bin/{name}"),
                10_000 + u64::from(pid),
                Some(deb(name, name, "1.0-1")),
            ),
            mapped(
                "/usr/lib/libc.so.6",
                200,
                Some(deb("libc6", "glibc", "2.36-9")),
            ),
        ],
    )
}

/// A delta at `at`: these upserts, these exits (pid, time), and
/// connections of pid 12 to (port, last seen).
fn delta_at(
    at: i64,
    upserts: Vec<v1::Process>,
    exits: &[(u32, i64)],
    conns: &[(u32, i64)],
) -> Body {
    Body::Delta(Delta {
        scanned_at_ms: at,
        artifacts: Vec::new(),
        upserts,
        exits: exits
            .iter()
            .map(|&(pid, t)| v1::Exit {
                key: Some(super::key(pid)),
                exit_time_ms: t,
            })
            .collect(),
        sockets: Vec::new(),
        workloads: Vec::new(),
        connections: conns
            .iter()
            .map(|&(port, t)| v1::Connection {
                key: Some(super::key(12)),
                protocol: "tcp".into(),
                remote_addr: "198.51.100.7".into(),
                remote_port: port,
                first_seen_ms: t,
                last_seen_ms: t,
                count: 1,
                last_result: 0,
                names: Vec::new(),
            })
            .collect(),
        stats: None,
    })
}

/// Pids that had `name` at any time, exited ones included.
fn ever(store: &dyn Store, name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> =
        exposure::find_package(store, &query(name, &|_, _| true, Some((0, i64::MAX))))
            .expect("history")
            .iter()
            .map(|m| m.key.expect("key").pid)
            .collect();
    pids.sort_unstable();
    pids
}

/// Runs retention before `before` to the end, as `retention` does.
fn prune_all(store: &dyn Store, before: i64) -> (u64, u64) {
    let (mut rows, mut sets) = (0, 0);
    loop {
        // A tiny batch, so the loop (not one statement) does the work.
        let step = store.prune_history(before, 1).expect("prune");
        rows += step.rows();
        if step.done {
            break;
        }
    }
    loop {
        let checked = store.compact_history(1).expect("compact");
        if checked == 0 {
            break;
        }
        sets += checked;
    }
    (rows, sets)
}

/// Pid 11 (oldlib) exits long ago, pid 10 (newlib) recently; pid 12
/// runs, moved from curlib to curlib2 long ago, with one old and one
/// recent connection.
fn a_day_of_history(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                vec![with(10, "newlib"), with(11, "oldlib"), with(12, "curlib")],
                vec![],
            ),
        ),
    );
    apply(
        store,
        &s,
        msg(
            2,
            delta_at(
                T0 + 5_000,
                vec![with(12, "curlib2")],
                &[(11, T0 + 1_000)],
                &[(1, T0 + 1_000)],
            ),
        ),
    );
    apply(
        store,
        &s,
        msg(
            3,
            delta_at(
                T0 + 50_000,
                vec![],
                &[(10, T0 + 50_000)],
                &[(2, T0 + 60_000)],
            ),
        ),
    );
    assert_eq!(ever(store, "oldlib"), [11]);
    assert_eq!(ever(store, "curlib"), [12]);
}

pub(super) fn retention_drops_old_history_and_keeps_current(store: &dyn Store) {
    a_day_of_history(store);
    assert_eq!(store.retention_horizon().expect("horizon"), None);
    let horizon = T0 + 20_000;
    let (rows, sets) = prune_all(store, horizon);
    assert!(
        rows >= 3,
        "pid 11, curlib's interval and a connection: {rows}"
    );
    assert!(
        sets >= 1,
        "the sets of pid 11 and of pid 12's past were not checked"
    );
    store
        .set_retention_horizon(horizon, T0 + 70_000)
        .expect("record");
    assert_eq!(store.retention_horizon().expect("horizon"), Some(horizon));
    // The horizon only moves forward.
    store
        .set_retention_horizon(T0, T0 + 70_001)
        .expect("record");
    assert_eq!(store.retention_horizon().expect("horizon"), Some(horizon));

    // Old rows are gone.
    assert!(
        ever(store, "oldlib").is_empty(),
        "an exit before the horizon stayed"
    );
    assert!(
        ever(store, "curlib").is_empty(),
        "an interval closed before the horizon stayed"
    );
    let conns: Vec<u32> = store
        .connections(None, 0)
        .expect("connections")
        .iter()
        .map(|c| c.remote_port)
        .collect();
    assert_eq!(
        conns,
        [2],
        "a connection last seen before the horizon stayed"
    );
    // Current and recent ones stay.
    assert_eq!(running(store, None), [12]);
    assert_eq!(find(store, "curlib2").len(), 1);
    assert_eq!(find(store, "libc6").len(), 1);
    assert_eq!(
        ever(store, "newlib"),
        [10],
        "an exit after the horizon went"
    );
    assert_eq!(ever(store, "libc6"), [10, 12]);
    assert_eq!(store.hosts().expect("hosts").len(), 1);
    // Package rows are kept (advisory verdicts hang on them).
    assert!(
        !store
            .packages_named(&crate::store::PackageName { name: "oldlib" })
            .unwrap()
            .is_empty()
    );

    // A second run deletes nothing more.
    assert_eq!(prune_all(store, horizon), (0, 0));
    // A new process reuses what compaction kept, and history still works.
    let s = open(store, &hello("session-a"));
    apply(
        store,
        &s,
        msg(
            4,
            delta_at(T0 + 80_000, vec![with(13, "curlib2")], &[], &[]),
        ),
    );
    assert_eq!(find(store, "curlib2").len(), 2);
}

pub(super) fn retention_keeps_what_open_incidents_may_need(store: &dyn Store) {
    a_day_of_history(store);
    // An incident opened at T0 + 500, before pid 11 exited, is still open.
    let event = IncidentEventRecord {
        seq: 1,
        at_ms: T0 + 500,
        actor: "collector".into(),
        kind: "opened".into(),
        payload: "{}".into(),
    };
    let cache = IncidentCache {
        state: "open",
        open: true,
        projection: b"",
    };
    store
        .open_incident("advisory:TEST-1", T0 + 500, &[event], &cache)
        .expect("incident");
    let flags = RetentionFlags {
        max_age: Some(std::time::Duration::from_secs(10)),
        max_bytes: None,
    };
    let report = enforce(store, &flags, T0 + 70_000).expect("enforce");
    assert_eq!(report.horizon_ms, Some(T0 + 500), "{report:?}");
    assert_eq!(store.retention_horizon().expect("horizon"), Some(T0 + 500));
    assert_eq!(
        ever(store, "oldlib"),
        [11],
        "history after an open incident opened went"
    );
}

pub(super) fn retention_size_bound_evicts_oldest_first(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let pids: Vec<u32> = (100..110).collect();
    apply(
        store,
        &s,
        msg(
            1,
            snapshot(
                "snap-1",
                pids.iter()
                    .map(|&p| with(p, &format!("lib{p}")))
                    .chain([with(12, "curlib")])
                    .collect(),
                vec![],
            ),
        ),
    );
    // Pid 100 exits first, 109 last.
    let exits: Vec<(u32, i64)> = pids
        .iter()
        .map(|&p| (p, T0 + i64::from(p) * 1_000))
        .collect();
    apply(
        store,
        &s,
        msg(2, delta_at(T0 + 200_000, vec![], &exits, &[])),
    );
    // The third oldest exit, and everything up to it, goes first.
    let cutoff = store
        .history_cutoff(3)
        .expect("cutoff")
        .expect("exited processes");
    assert_eq!(cutoff, T0 + 102_000);
    assert_eq!(
        store.history_cutoff(1_000).unwrap(),
        Some(T0 + 109_000),
        "fewer than nth: the newest"
    );
    prune_all(store, cutoff + 1);
    for p in 100..=102 {
        assert!(ever(store, &format!("lib{p}")).is_empty(), "pid {p} stayed");
    }
    for p in 103..110 {
        assert_eq!(
            ever(store, &format!("lib{p}")),
            [p],
            "pid {p} went before older ones"
        );
    }

    // No bound is met by an unbounded store: nothing goes.
    let unbounded = RetentionFlags {
        max_age: None,
        max_bytes: Some(u64::MAX),
    };
    let r = enforce(store, &unbounded, T0 + 300_000).expect("enforce");
    assert_eq!((r.rows(), r.size_unmet), (0, false), "{r:?}");
    // A bound below what current data needs evicts all history, oldest
    // first, keeps what runs, and says the bound is not met.
    let tiny = RetentionFlags {
        max_age: None,
        max_bytes: Some(1),
    };
    let r = enforce(store, &tiny, T0 + 300_000).expect("enforce");
    assert!(r.size_unmet, "{r:?}");
    assert_eq!(r.processes, 7, "{r:?}");
    assert_eq!(store.retention_horizon().unwrap(), Some(T0 + 109_001));
    assert_eq!(running(store, None), [12]);
    assert_eq!(find(store, "curlib").len(), 1);
    assert_eq!(store.history_cutoff(1).unwrap(), None);
}
