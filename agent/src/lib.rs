//! The patchgap host agent: scans /proc, resolves mapped files to packages and
//! streams the inventory to the collector.
//!
//! `scan` reads one procfs root into a [`model::Inventory`]; `resolve` maps
//! files to packages through each process's own root; `diff` and `wire` turn
//! successive inventories into patchgap.v1 messages; `run` streams them.

pub mod contain;
pub mod dbwatch;
pub mod diff;
pub mod dns;
pub mod failover;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
pub mod lang;
pub mod model;
pub mod netns;
pub mod parse;
pub mod resolve;
pub mod respond;
pub mod rootfs;
pub mod run;
pub mod scan;
pub mod sense;
pub mod spool;
pub mod tls;
pub mod watchdog;
pub mod wire;
pub mod workload;

pub use run::{AgentConfig, AgentHandle, AgentStatus, run, spawn};
pub use scan::{ScanConfig, Scanner, scan_once};
