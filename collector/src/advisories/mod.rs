//! Detect: OSV advisories and what they affect. `osv` parses OSV documents
//! from bytes, `version` holds each ecosystem's version order, `records`
//! turns parsed advisories into the store's records, and `matching` decides
//! which stored packages each advisory affects.
//!
//! **Invariant:** parsing and version comparison do no I/O; verdicts are
//! written only by [`matching::refresh`].

pub mod matching;
pub mod osv;
pub mod records;
pub mod version;
