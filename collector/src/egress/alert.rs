//! An unexpected-egress alert as a responder reads it: one per workload,
//! destination and port, with everything needed to act in one read.
//! Plain data (serde): the store keeps it as an opaque JSON document
//! beside its identity and counters, and the CLI prints it.

use serde::{Deserialize, Serialize};

use super::baseline::PackageChange;

/// Why a connection alerted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The policy does not allow it (enforce mode, or no baseline verdict
    /// needed).
    Policy,
    /// The stable baseline has no such destination.
    NewDestination,
    /// First reached within the quarantine after a package change.
    NewSinceUpgrade,
}

/// The workload an alert is about, as the alert carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// The baseline key: replicas share it.
    pub key: String,
    /// "pod", "container", "systemd", "host".
    pub kind: String,
    pub owner_kind: String,
    pub owner: String,
    pub namespace: String,
    pub container: String,
    pub image_digest: String,
}

/// The data the workload can touch, and what it may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// "sensitive", "internal", … ; empty when nobody said.
    pub classification: String,
    pub writes_to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privilege {
    pub root: bool,
    pub privileged: bool,
    pub host_network: bool,
}

/// Where the process connected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub ip: String,
    pub port: u16,
    pub protocol: String,
    /// The names the process was told for `ip` (DNS answers it received);
    /// empty when none was seen.
    pub names: Vec<String>,
    /// "dns" when names came from answers the agent captured, "none".
    pub names_source: String,
}

/// One process on the way from the connecting process up to its
/// workload's root, connecting process first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageStep {
    pub pid: u32,
    pub start_time_ms: i64,
    pub exe: String,
    /// The command line with secret values redacted (as the agent sent it).
    pub argv: String,
}

/// The baseline's word at the time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineRef {
    pub state: String,
    pub generation: String,
}

/// The alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The store's id; 0 before it is stored.
    pub id: i64,
    /// One alert per (workload, destination, port, protocol).
    pub dedup_key: String,
    pub reason: Reason,
    /// The workload's egress mode; `audit` alerts are listed, never sent.
    pub mode: String,
    pub host: String,
    pub workload: WorkloadRef,
    pub scope: Scope,
    pub privilege: Privilege,
    pub destination: Destination,
    pub lineage: Vec<LineageStep>,
    /// The packages the process has (purls), bounded.
    pub packages: Vec<String>,
    /// Packages changed on the workload recently (from → to, when, how).
    pub packages_changed: Vec<PackageChange>,
    pub baseline: BaselineRef,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: u64,
    /// Workload instances (host and instance) seen making it.
    pub replicas: Vec<String>,
    /// Whether it goes out: "not sent (audit mode)" for a workload in
    /// `audit` mode, else "sent" (to Alertmanager and the policy's
    /// endpoint, those configured).
    #[serde(default)]
    pub delivery: String,
}

/// [`Alert::delivery`] of an `audit`-mode alert.
pub const NOT_SENT_AUDIT: &str = "not sent (audit mode)";

/// Longest lists an alert carries, so one alert stays a page.
pub const MAX_PACKAGES: usize = 200;
pub const MAX_LINEAGE: usize = 32;
