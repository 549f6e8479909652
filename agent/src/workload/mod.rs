//! Workload attribution: cgroups, runtime metadata and privileges.

pub mod attribute;
pub mod cgroup;
pub mod containerd;
pub mod meta;
pub mod privilege;
pub mod storage;
