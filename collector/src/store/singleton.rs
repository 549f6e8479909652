//! Work that must happen once across collectors sharing one database: a
//! background pass takes a named [`Singleton`] before it runs, and skips
//! the pass when another collector (or another pass of its own) holds it.
//!
//! PostgreSQL holds the name as a session-level advisory lock on a pooled
//! connection kept for the guard's life, so it is released when the pass
//! ends, and by the server when the collector dies mid-pass (its
//! connection closes). SQLite serves one collector per file, so the names
//! are held in memory ([`LocalSingletons`]) with the same contract.
//!
//! **Invariant:** while a guard for a name lives, no other `try_singleton`
//! for that name on the same database returns one; a guard never blocks
//! (a pass that is busy elsewhere is skipped, not queued).

use std::{collections::HashSet, sync::Mutex};

/// Held while a pass that must run once runs; dropping it lets the next
/// taker in (on any collector of the database).
#[must_use = "the pass is exclusive only while the guard lives"]
pub struct Singleton<'a> {
    name: String,
    release: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> Singleton<'a> {
    /// A guard for `name` that runs `release` when dropped.
    pub fn new(name: &str, release: impl FnOnce() + Send + 'a) -> Singleton<'a> {
        Singleton {
            name: name.to_string(),
            release: Some(Box::new(release)),
        }
    }

    /// The pass this guard is for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Singleton<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singleton")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Singleton<'_> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// The names held in this process: the singletons of a backend that only
/// one collector opens (SQLite).
#[derive(Debug, Default)]
pub struct LocalSingletons(Mutex<HashSet<String>>);

impl LocalSingletons {
    /// The guard for `name`, or None while another guard holds it.
    pub fn try_take(&self, name: &str) -> Option<Singleton<'_>> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(name.to_string()) {
            return None;
        }
        let owned = name.to_string();
        Some(Singleton::new(name, move || {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&owned);
        }))
    }
}
