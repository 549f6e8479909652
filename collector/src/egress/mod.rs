//! Unexpected egress (issue 18): which outbound connections a workload
//! has not made before, or that its policy does not allow, and the one
//! alert per workload, destination and port that tells the whole story
//! (lineage, packages and what changed in them, workload, data scope).
//!
//! - `policy`: what a workload may reach, and the mode (`enforce`,
//!   `policy+learn`, `audit`).
//! - `baseline`: what its replicas reach, learned with warm-up, stable
//!   and maximum-learning periods; generations that inherit the entries,
//!   and the quarantine after a package change.
//! - `engine`: one connection judged against both, and the alert.
//! - `alert`: the alert as plain data.
//! - `stage`: the I/O around the engine: facts from the store, baselines
//!   and alerts written back through `fleet::ingest`, alerts published.
//! - `duration`: `2s`, `24h` for the `--egress-*` flags and the policy
//!   file.
//!
//! **Invariant:** `policy`, `baseline` and `engine` are pure (no I/O, the
//! clock comes from the caller); the store keeps baselines and alerts as
//! opaque versioned documents and knows nothing of learning; and nothing
//! here delivers an alert: `stage` publishes new and resolved alerts on a
//! channel that delivery (Alertmanager, webhooks) subscribes to.

pub mod alert;
pub mod baseline;
pub mod duration;
pub mod engine;
pub mod export;
pub mod flags;
pub mod policy;
pub mod stage;

#[cfg(test)]
mod tests;
