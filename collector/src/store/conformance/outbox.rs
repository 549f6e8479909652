//! The outbox's contract: idempotent enqueue, leases that exclude each
//! other and run out, outcomes recorded once, 410 disabling an endpoint.

use crate::store::{DeliveryOutcome, DeliveryState, NewDelivery, Store};

use super::T0;

fn delivery(id: &str, endpoint: &str, incident: i64) -> NewDelivery {
    NewDelivery {
        webhook_id: id.to_string(),
        endpoint: endpoint.to_string(),
        incident,
        action: 3,
        event_type: "patchgap.action.requested".into(),
        body: br#"{"type":"patchgap.action.requested"}"#.to_vec(),
        created_ms: T0,
    }
}

pub(super) fn outbox_enqueues_once_per_webhook_id(store: &dyn Store) {
    assert!(
        store
            .enqueue_delivery(&delivery("msg_a", "tokens", 1))
            .unwrap()
    );
    let mut again = delivery("msg_a", "other", 2);
    again.body = b"{}".to_vec();
    assert!(!store.enqueue_delivery(&again).unwrap(), "same webhook id");
    assert!(
        store
            .enqueue_delivery(&delivery("msg_b", "tokens", 2))
            .unwrap()
    );
    let all = store.deliveries(None, 10).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].webhook_id, "msg_b", "newest first");
    let a = &all[1];
    assert_eq!(
        (a.endpoint.as_str(), a.incident, a.action, a.body.as_slice()),
        (
            "tokens",
            1,
            3,
            br#"{"type":"patchgap.action.requested"}"#.as_slice()
        ),
        "the first enqueue stands"
    );
    assert_eq!(
        (a.state, a.attempts, a.next_at_ms),
        (DeliveryState::Pending, 0, T0)
    );
    assert_eq!(store.deliveries(Some(2), 10).unwrap().len(), 1);
    assert!(store.enqueue_delivery(&delivery("", "tokens", 1)).is_err());
}

pub(super) fn outbox_leases_exclude_and_expire(store: &dyn Store) {
    store
        .enqueue_delivery(&delivery("msg_a", "tokens", 1))
        .unwrap();
    store
        .enqueue_delivery(&delivery("msg_b", "tokens", 1))
        .unwrap();
    assert!(
        store
            .claim_deliveries(T0 - 1, 1_000, 10)
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let first = store.claim_deliveries(T0, 1_000, 1).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].attempts, first[0].claimed_until_ms),
        (1, T0 + 1_000)
    );
    let second = store.claim_deliveries(T0, 1_000, 10).unwrap();
    assert_eq!(second.len(), 1, "a leased delivery is not claimed twice");
    assert_ne!(second[0].id, first[0].id);
    assert!(
        store
            .claim_deliveries(T0 + 999, 1_000, 10)
            .unwrap()
            .is_empty()
    );
    // A worker that died: the lease runs out and the delivery comes back,
    // its attempt counted.
    let again = store.claim_deliveries(T0 + 1_000, 1_000, 10).unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|d| d.attempts == 2));
}

pub(super) fn outbox_records_outcomes_once(store: &dyn Store) {
    store
        .enqueue_delivery(&delivery("msg_a", "tokens", 1))
        .unwrap();
    let d = store.claim_deliveries(T0, 1_000, 10).unwrap().remove(0);
    let retry = DeliveryOutcome::Retry {
        next_at_ms: T0 + 5_000,
        status: 500,
        error: "HTTP 500".into(),
    };
    store.finish_delivery(d.id, T0 + 10, &retry).unwrap();
    let now = store.deliveries(None, 1).unwrap().remove(0);
    assert_eq!(
        (
            now.state,
            now.claimed_until_ms,
            now.next_at_ms,
            now.last_status
        ),
        (DeliveryState::Pending, 0, T0 + 5_000, 500)
    );
    assert!(
        store
            .claim_deliveries(T0 + 4_999, 1_000, 10)
            .unwrap()
            .is_empty(),
        "backs off"
    );
    let d = store
        .claim_deliveries(T0 + 5_000, 1_000, 10)
        .unwrap()
        .remove(0);
    assert_eq!(d.attempts, 2);
    store
        .finish_delivery(
            d.id,
            T0 + 5_010,
            &DeliveryOutcome::Delivered { status: 204 },
        )
        .unwrap();
    let done = store.deliveries(None, 1).unwrap().remove(0);
    assert_eq!(
        (
            done.state,
            done.last_status,
            done.done_ms,
            done.last_error.as_str()
        ),
        (DeliveryState::Delivered, 204, T0 + 5_010, "")
    );
    assert!(
        store
            .finish_delivery(
                d.id,
                T0 + 6_000,
                &DeliveryOutcome::Delivered { status: 200 }
            )
            .is_err(),
        "an outcome is recorded once"
    );
    assert!(
        store
            .finish_delivery(999, T0, &DeliveryOutcome::Delivered { status: 200 })
            .is_err()
    );
    assert!(
        store
            .claim_deliveries(T0 + 1_000_000, 1_000, 10)
            .unwrap()
            .is_empty()
    );
}

pub(super) fn outbox_gone_disables_the_endpoint(store: &dyn Store) {
    store
        .enqueue_delivery(&delivery("msg_a", "tokens", 1))
        .unwrap();
    store
        .enqueue_delivery(&delivery("msg_b", "tokens", 1))
        .unwrap();
    store
        .enqueue_delivery(&delivery("msg_c", "canary", 1))
        .unwrap();
    let a = store.claim_deliveries(T0, 1_000, 1).unwrap().remove(0);
    assert_eq!(a.webhook_id, "msg_a");
    let gone = DeliveryOutcome::EndpointGone {
        status: 410,
        error: "HTTP 410 Gone".into(),
    };
    store.finish_delivery(a.id, T0 + 1, &gone).unwrap();
    let disabled = store.disabled_endpoints().unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!(
        (
            disabled[0].name.as_str(),
            disabled[0].at_ms,
            disabled[0].reason.as_str()
        ),
        ("tokens", T0 + 1, "HTTP 410 Gone")
    );
    let a = store
        .deliveries(None, 10)
        .unwrap()
        .into_iter()
        .find(|d| d.webhook_id == "msg_a")
        .unwrap();
    assert_eq!((a.state, a.last_status), (DeliveryState::Failed, 410));
    // The disabled endpoint's other delivery waits; others go on.
    let due = store.claim_deliveries(T0 + 2, 1_000, 10).unwrap();
    assert_eq!(
        due.iter()
            .map(|d| d.webhook_id.as_str())
            .collect::<Vec<_>>(),
        ["msg_c"]
    );
    assert!(store.enable_endpoint("tokens").unwrap());
    assert!(!store.enable_endpoint("tokens").unwrap());
    assert!(store.disabled_endpoints().unwrap().is_empty());
    let due = store.claim_deliveries(T0 + 3, 1_000, 10).unwrap();
    assert_eq!(
        due.iter()
            .map(|d| d.webhook_id.as_str())
            .collect::<Vec<_>>(),
        ["msg_b"]
    );
}
