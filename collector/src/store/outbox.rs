//! The outbox: outbound deliveries (signed webhooks) as rows, so a
//! delivery the collector promised survives its restart and is made once
//! per `webhook_id`. The store keeps rows and leases only; what a delivery
//! says, where it goes and how it is signed belong to
//! `response::deliver`, which claims a row, commits, calls out, then
//! records the outcome, each step its own short transaction.

/// A delivery to make. `webhook_id` is its identity: enqueueing the same
/// id again changes nothing, so a caller may enqueue after every restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub webhook_id: String,
    /// The policy's name for the receiver (never its URL or secret: those
    /// are looked up when the delivery is made, so a policy reload applies).
    pub endpoint: String,
    pub incident: i64,
    pub action: u32,
    /// The event type in the body (`patchgap.action.requested`).
    pub event_type: String,
    /// The exact body sent on every attempt (signed anew each time).
    pub body: Vec<u8>,
    pub created_ms: i64,
}

/// Where a delivery stands. The names are an interface (they are stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet: due at `next_at_ms`, or leased to a worker.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: the retry schedule ran out, or the endpoint is gone (410).
    Failed,
}

impl DeliveryState {
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.name() == s)
    }
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub webhook_id: String,
    pub endpoint: String,
    pub incident: i64,
    pub action: u32,
    pub event_type: String,
    pub body: Vec<u8>,
    pub created_ms: i64,
    pub state: DeliveryState,
    /// Attempts claimed so far (a claim counts even when the worker died
    /// before it recorded the outcome).
    pub attempts: u32,
    pub next_at_ms: i64,
    /// The lease of the worker making an attempt now (0: none).
    pub claimed_until_ms: i64,
    /// The receiver's last HTTP status (0: none, such as a refused
    /// connection).
    pub last_status: u16,
    pub last_error: String,
    /// When it was delivered or given up (0: not yet).
    pub done_ms: i64,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx.
    Delivered { status: u16 },
    /// Try again at `next_at_ms` (5xx, 429, a timeout, a refused
    /// connection).
    Retry {
        next_at_ms: i64,
        status: u16,
        error: String,
    },
    /// Given up on this delivery.
    Failed { status: u16, error: String },
    /// The receiver answered 410 Gone: this delivery fails and its endpoint
    /// is disabled (in the same transaction), so no other delivery to it is
    /// claimed until a responder enables it again.
    EndpointGone { status: u16, error: String },
}

/// An endpoint the collector stopped calling, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledEndpoint {
    pub name: String,
    pub at_ms: i64,
    pub reason: String,
}
