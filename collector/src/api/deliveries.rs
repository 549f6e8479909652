//! ListDeliveries and EnableEndpoint: the signed webhooks' outbox as
//! responders read it (`patchgap deliveries`), and calling an endpoint a
//! receiver's 410 disabled again (`patchgap endpoint enable`). The outbox
//! lives in the store (`store::outbox`) and `response::deliver` works it;
//! this maps it to the wire. Nothing here returns a body, a signature or
//! a secret: the outbox holds none of the last two, and the body stays
//! with the receiver.

use patchgap_proto::v1;
use tonic::Status;

use super::{invalid, query::QueryService};
use crate::{
    response::incident::{display_id, parse_id},
    store::DeliveryRecord,
};

/// Deliveries listed by default, and at most.
const DEFAULT_LIST: usize = 100;
const MAX_LIST: usize = 1_000;

/// The longest endpoint name accepted (the policy's are short words).
const MAX_NAME: usize = 128;

/// A ListDeliveries request, validated: the incident (None: all) and how
/// many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListDeliveries {
    pub incident: Option<i64>,
    pub limit: usize,
}

impl TryFrom<v1::ListDeliveriesRequest> for ListDeliveries {
    type Error = Status;

    fn try_from(req: v1::ListDeliveriesRequest) -> Result<ListDeliveries, Status> {
        let incident =
            match req.incident.trim() {
                "" => None,
                id => Some(parse_id(id).ok_or_else(|| {
                    invalid(format!("{id:?} is not an incident id (INC-7, or 7)"))
                })?),
            };
        let limit = match req.limit as usize {
            0 => DEFAULT_LIST,
            n => n.min(MAX_LIST),
        };
        Ok(ListDeliveries { incident, limit })
    }
}

/// An EnableEndpoint request's name, validated.
pub fn endpoint_name(req: &v1::EnableEndpointRequest) -> Result<String, Status> {
    let name = req.name.trim();
    if name.is_empty() {
        return Err(invalid(
            "give the endpoint's name, as the policy's [[endpoint]] names it",
        ));
    }
    if name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{name:?} is not an endpoint name: at most {MAX_NAME} printable characters"
        )));
    }
    Ok(name.to_string())
}

/// One delivery on the wire, its endpoint's state with it.
pub fn delivery_message(d: &DeliveryRecord, disabled: bool) -> v1::Delivery {
    let settled = d.done_ms > 0;
    v1::Delivery {
        id: d.id,
        webhook_id: d.webhook_id.clone(),
        endpoint: d.endpoint.clone(),
        incident: display_id(d.incident),
        action: d.action,
        event_type: d.event_type.clone(),
        state: d.state.name().to_string(),
        attempts: d.attempts,
        next_attempt_at_ms: if settled { 0 } else { d.next_at_ms },
        last_status: u32::from(d.last_status),
        last_error: d.last_error.clone(),
        created_at_ms: d.created_ms,
        done_at_ms: d.done_ms,
        endpoint_disabled: disabled,
    }
}

pub(super) async fn list(
    svc: &QueryService,
    req: v1::ListDeliveriesRequest,
) -> Result<v1::ListDeliveriesResponse, Status> {
    let q = ListDeliveries::try_from(req)?;
    let (rows, disabled) = svc
        .read(move |store| {
            Ok((
                store.deliveries(q.incident, q.limit)?,
                store.disabled_endpoints()?,
            ))
        })
        .await?;
    Ok(v1::ListDeliveriesResponse {
        deliveries: rows
            .iter()
            .map(|d| delivery_message(d, disabled.iter().any(|e| e.name == d.endpoint)))
            .collect(),
        disabled_endpoints: disabled
            .into_iter()
            .map(|e| v1::DisabledEndpoint {
                name: e.name,
                disabled_at_ms: e.at_ms,
                reason: e.reason,
            })
            .collect(),
    })
}

pub(super) async fn enable(
    svc: &QueryService,
    req: v1::EnableEndpointRequest,
) -> Result<v1::EnableEndpointResponse, Status> {
    let name = endpoint_name(&req)?;
    // One short write of the outbox's own table, as the worker's.
    let enabled = svc
        .domain(move |ingest| {
            ingest
                .store()
                .enable_endpoint(&name)
                .map_err(super::to_status)
        })
        .await?;
    Ok(v1::EnableEndpointResponse { enabled })
}

/// The audit entry's result.
pub(super) fn enabled_summary(r: &v1::EnableEndpointResponse) -> String {
    match r.enabled {
        true => "enabled: its pending deliveries are tried again".into(),
        false => "unchanged: it was not disabled".into(),
    }
}

pub(super) fn listed_summary(r: &v1::ListDeliveriesResponse) -> String {
    format!(
        "{} deliveries, {} endpoint(s) disabled",
        r.deliveries.len(),
        r.disabled_endpoints.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeliveryState;

    #[test]
    fn requests_are_read_without_io() {
        let q = ListDeliveries::try_from(v1::ListDeliveriesRequest {
            incident: " INC-7 ".into(),
            limit: 0,
        })
        .unwrap();
        assert_eq!(
            q,
            ListDeliveries {
                incident: Some(7),
                limit: DEFAULT_LIST
            }
        );
        let q = ListDeliveries::try_from(v1::ListDeliveriesRequest {
            incident: String::new(),
            limit: 50_000,
        })
        .unwrap();
        assert_eq!((q.incident, q.limit), (None, MAX_LIST));
        let err = ListDeliveries::try_from(v1::ListDeliveriesRequest {
            incident: "seven".into(),
            limit: 1,
        })
        .unwrap_err();
        assert!(err.message().contains("not an incident id"), "{err:?}");
        for bad in ["", "  ", "a\nb"] {
            let err = endpoint_name(&v1::EnableEndpointRequest { name: bad.into() }).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        assert_eq!(
            endpoint_name(&v1::EnableEndpointRequest {
                name: " tokens ".into()
            })
            .unwrap(),
            "tokens"
        );
    }

    /// The wire carries what a responder needs and no body: a settled
    /// delivery has no next attempt.
    #[test]
    fn a_delivery_on_the_wire() {
        let d = DeliveryRecord {
            id: 3,
            webhook_id: "msg_0123".into(),
            endpoint: "tokens".into(),
            incident: 7,
            action: 2,
            event_type: "patchgap.action.requested".into(),
            body: b"{\"secret-looking\": true}".to_vec(),
            created_ms: 10,
            state: DeliveryState::Failed,
            attempts: 1,
            next_at_ms: 20,
            claimed_until_ms: 0,
            last_status: 410,
            last_error: "gone".into(),
            done_ms: 30,
        };
        let m = delivery_message(&d, true);
        assert_eq!(
            (
                m.incident.as_str(),
                m.state.as_str(),
                m.last_status,
                m.next_attempt_at_ms
            ),
            ("INC-7", "failed", 410, 0)
        );
        assert!(m.endpoint_disabled);
        assert!(!format!("{m:?}").contains("secret-looking"));
    }
}
