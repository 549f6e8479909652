//! Scope: the runtime truth as it comes in and as responders read it.
//! `bounds` cuts every field an agent sends to its length bound,
//! `ingest` is every write path (store, then match), `beats` writes
//! heartbeats together, `lag` its delta ingest lag for `/metrics`,
//! `pacing` the retry time of a message ingest refused for want of room,
//! `exposure` turns the
//! store's evidence into matches, `workloads` folds host instances into
//! fleet workloads, `held` keeps each host's workload rows until its
//! inventory generation moves, `scope` is the operator's data-scope mapping.
//!
//! **Invariant:** this layer knows the store's trait, never a backend nor
//! gRPC.

pub mod beats;
pub mod bounds;
pub mod changes;
pub mod coverage;
pub mod exposure;
pub mod held;
pub mod ingest;
pub mod lag;
pub mod pacing;
pub mod scope;
pub mod workloads;
