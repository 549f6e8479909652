//! A workload instance's first start, as verification reads it to tell a
//! new deploy from a restarted container.

use super::{T0, apply, delta, hello, hello_for, msg, open, plain, snapshot};
use crate::store::Store;

/// The earliest start of the instance's processes, exited ones
/// included; by hostname or host id; None for an instance or a host the
/// store does not know.
pub(super) fn instance_first_start_keeps_exited_processes(store: &dyn Store) {
    let s = open(store, &hello("session-a"));
    let mut first = plain(10);
    first.start_time_ms = T0 - 50_000;
    let mut second = plain(11);
    second.start_time_ms = T0 - 20_000;
    apply(
        store,
        &s,
        msg(1, snapshot("snap-1", vec![first, second], vec![])),
    );
    let start = |host: &str, instance: &str| {
        store
            .instance_first_start(host, instance)
            .expect("instance_first_start")
    };
    assert_eq!(start("alpha", "unit/test.service"), Some(T0 - 50_000));
    assert_eq!(start("machine-1", "unit/test.service"), Some(T0 - 50_000));
    // The first process exits (a container restart keeps its instance):
    // the instance still started when it did.
    apply(store, &s, msg(2, delta(vec![], &[10], vec![])));
    assert_eq!(start("alpha", "unit/test.service"), Some(T0 - 50_000));
    assert_eq!(start("alpha", "pod/other/app"), None);
    assert_eq!(start("beta", "unit/test.service"), None);
    // Another host's instance of the same id is its own.
    let b = open(store, &hello_for("machine-2", "beta", "session-b"));
    let mut late = plain(12);
    late.start_time_ms = T0 - 1_000;
    apply(store, &b, msg(1, snapshot("snap-b", vec![late], vec![])));
    assert_eq!(start("beta", "unit/test.service"), Some(T0 - 1_000));
    assert_eq!(start("alpha", "unit/test.service"), Some(T0 - 50_000));
}

/// A host's stored name by its key: the machine-id when the Hello had
/// one, else the host name; None for a key no host has.
pub(super) fn hostname_of_key_reads_the_keyed_host(store: &dyn Store) {
    assert_eq!(store.hostname_of_key("machine-1").unwrap(), None);
    open(store, &hello("session-a"));
    open(store, &hello_for("machine-2", "beta", "session-b"));
    assert_eq!(
        store.hostname_of_key("machine-1").unwrap().as_deref(),
        Some("alpha")
    );
    assert_eq!(
        store.hostname_of_key("machine-2").unwrap().as_deref(),
        Some("beta")
    );
    // A name is not a key when the host has a machine-id.
    assert_eq!(store.hostname_of_key("alpha").unwrap(), None);
    let nameless = open(store, &hello_for("", "gamma", "session-c"));
    assert!(nameless.host > 0);
    assert_eq!(
        store.hostname_of_key("gamma").unwrap().as_deref(),
        Some("gamma")
    );
}
