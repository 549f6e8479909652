//! Respond: incidents, and (next) the policy that tiers them, plans,
//! approvals and the executors that carry actions out. Each decision is a
//! new event in an incident's append-only log.
//!
//! **Invariant:** decisions are pure functions of the store's facts and the
//! policy; executors never run inside a store transaction.

pub mod incident;
