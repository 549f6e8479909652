//! The singleton contract: one guard per name at a time, released when
//! dropped, never blocking, and names independent of each other.

use crate::store::Store;

pub(super) fn singletons_exclude_until_dropped(store: &dyn Store) {
    let held = store
        .try_singleton("verify")
        .expect("try_singleton")
        .expect("a free name is taken");
    assert_eq!(held.name(), "verify");
    // A second taker (another collector's pass) is told no at once.
    assert!(
        store.try_singleton("verify").expect("try again").is_none(),
        "two guards for one name"
    );
    // Another pass is not held up by this one.
    let other = store.try_singleton("match").expect("other name");
    assert!(other.is_some(), "one name held another");
    drop(held);
    let again = store.try_singleton("verify").expect("after release");
    assert!(again.is_some(), "a dropped guard still held its name");
    // And again, so a release that left the name half-held shows up.
    drop(again);
    assert!(store.try_singleton("verify").expect("third").is_some());
}
