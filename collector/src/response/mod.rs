//! Contain: what the collector does about findings. `policy` routes each
//! finding to a risk tier and that tier's actions (with their modes,
//! approvals, TTLs, guards and exceptions), from a TOML file or the seed's
//! built-in three tiers; `policy::state` holds the policy in force and
//! reloads it on SIGHUP. `incident` keeps each incident as an append-only
//! event log and its projection: every decision is a new event, plans,
//! approvals, actions and what agents report of them included
//! (`incident::act`). `plan` makes the exact plan a responder approves by
//! its hash. `contain` derives the desired containments of every host from
//! the incidents and publishes them for the ingest streams to send.
//! `gate` is the deploy gate: the admission webhook's and `gate check`'s
//! decision from the incidents whose gate actions are in force.
//! `deliver` carries out the actions that reach other systems: signed
//! webhooks through the store's outbox, and pages to Alertmanager.
//! Verification comes next, as further events of the same log.
//!
//! **Invariant:** decisions are pure functions of the store's facts and
//! the policy: nothing here reads a file, the clock or the network while it
//! decides (callers pass the facts and `now_ms`; only `policy::state`
//! reads the policy file). Executors never run inside a store transaction
//! (the agents carry out a set published after the appends committed;
//! `deliver` leases an outbox row, commits, then calls out), and the store
//! knows nothing of this module.

pub mod contain;
pub mod deliver;
pub mod gate;
pub mod incident;
pub mod plan;
pub mod policy;
pub mod verify;

pub use policy::{
    Action, ActionKind, Admission, Approval, Cidr, Evidence, Exception, FindingFacts, GateSettings,
    GuardReason, GuardTarget, Guards, Mode, OpenIncident, Policy, PolicyError, Route, RoutedTier,
    Rule, Severity, Tier,
    state::{PolicyLoadError, PolicyState, SharedPolicy},
};
