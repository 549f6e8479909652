//! The policy in force in a running collector: loaded at start (a bad
//! file stops the start), replaced on SIGHUP. A reload that fails leaves
//! the previous policy in force and keeps the error, so every answer that
//! depends on the policy can say "policy reload failed, previous in force".
//!
//! This is the only place the policy file is read. Readers take an
//! `Arc` of the state under a read lock held for a pointer copy, so the
//! lock is cheap enough to take on every request.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use sha2::{Digest, Sha256};

use super::{MAX_POLICY_BYTES, Policy, PolicyError};

/// The policy in force and where it came from.
#[derive(Debug, Clone)]
pub struct PolicyState {
    pub current: Arc<Policy>,
    /// The file's path as given, or "built-in".
    pub source: String,
    /// When `current` was loaded (ms since the epoch).
    pub loaded_at_ms: i64,
    /// The SHA-256 (hex) of the policy file's bytes as they were read for
    /// `current`, or of the built-in policy's normalised form
    /// ([`builtin_sha256`]). The path and load time alone do not say
    /// which policy decided: the file can be edited and reloaded under
    /// the same path, so the evidence bundle carries this hash.
    pub sha256: String,
    /// Why the last reload failed, with every `file:line:column: reason`;
    /// None after a load that succeeded.
    pub last_error: Option<String>,
}

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The cause is in the message (not a `source`), so the reload error
    /// kept for answers says why in one line.
    #[error("reading the policy {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyError>),
}

/// Reads and checks a policy file (at most [`MAX_POLICY_BYTES`]); errors
/// name the path as given.
pub fn load_file(path: &Path) -> Result<Policy, PolicyLoadError> {
    read_file(path).map(|(policy, _)| policy)
}

/// [`load_file`], with the SHA-256 (hex) of the very bytes parsed, so the
/// hash names the policy in force even if the file changes afterwards.
pub fn read_file(path: &Path) -> Result<(Policy, String), PolicyLoadError> {
    let name = path.display().to_string();
    let read_error = |error| PolicyLoadError::Read {
        path: name.clone(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    let policy = Policy::parse(&name, &bytes).map_err(PolicyLoadError::Invalid)?;
    Ok((policy, crate::auth::hex(&Sha256::digest(&bytes))))
}

/// The SHA-256 (hex) of the built-in policy, normalised as the compact
/// JSON of [`Policy::builtin`] (serde's field order; maps are ordered).
/// The built-in has no file bytes to hash, and its JSON changes exactly
/// when what it decides changes, so a bundle can still name it.
pub fn builtin_sha256() -> String {
    let json = serde_json::to_vec(&Policy::builtin()).expect("the built-in policy serializes");
    crate::auth::hex(&Sha256::digest(&json))
}

/// The collector's policy, shared by every request and the SIGHUP task.
#[derive(Debug, Clone)]
pub struct SharedPolicy {
    /// The file to reload; None for the built-in policy.
    path: Option<PathBuf>,
    state: Arc<RwLock<Arc<PolicyState>>>,
}

impl SharedPolicy {
    /// The seed's three tiers; a reload keeps them.
    pub fn builtin() -> SharedPolicy {
        SharedPolicy {
            path: None,
            state: Arc::new(RwLock::new(Arc::new(PolicyState {
                current: Arc::new(Policy::builtin()),
                source: "built-in".into(),
                loaded_at_ms: patchgap_proto::time::now_ms(),
                sha256: builtin_sha256(),
                last_error: None,
            }))),
        }
    }

    /// Loads `path` now; an error here should stop the collector's start.
    pub fn load(path: &Path) -> Result<SharedPolicy, PolicyLoadError> {
        let (policy, sha256) = read_file(path)?;
        for w in &policy.warnings {
            tracing::warn!(policy = %path.display(), "{w}");
        }
        Ok(SharedPolicy {
            path: Some(path.to_path_buf()),
            state: Arc::new(RwLock::new(Arc::new(PolicyState {
                current: Arc::new(policy),
                source: path.display().to_string(),
                loaded_at_ms: patchgap_proto::time::now_ms(),
                sha256,
                last_error: None,
            }))),
        })
    }

    /// The state in force now.
    pub fn state(&self) -> Arc<PolicyState> {
        // A writer never panics while it holds the lock (it only swaps an
        // Arc), so a poisoned lock still holds a whole state.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again (SIGHUP). On success the new policy is in
    /// force; on failure the previous one stays and the error is kept in
    /// `last_error`. Logs the result either way.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            tracing::info!("SIGHUP: no --policy file, the built-in policy stays in force");
            return Ok(());
        };
        self.apply(read_file(path), patchgap_proto::time::now_ms())
    }

    /// Puts a reload's outcome into force: the new policy with the hash
    /// of its bytes, or the error beside the previous policy (and its
    /// hash).
    pub fn apply(
        &self,
        loaded: Result<(Policy, String), PolicyLoadError>,
        now_ms: i64,
    ) -> Result<(), String> {
        let mut guard = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = guard.clone();
        match loaded {
            Ok((policy, sha256)) => {
                for w in &policy.warnings {
                    tracing::warn!(policy = %previous.source, "{w}");
                }
                tracing::info!(
                    policy = %previous.source,
                    tiers = policy.tiers.len(),
                    rules = policy.rule_count(),
                    actions = policy.action_count(),
                    "policy reloaded"
                );
                *guard = Arc::new(PolicyState {
                    current: Arc::new(policy),
                    source: previous.source.clone(),
                    loaded_at_ms: now_ms,
                    sha256,
                    last_error: None,
                });
                Ok(())
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!(
                    policy = %previous.source,
                    error = %error,
                    "policy reload failed, previous in force"
                );
                *guard = Arc::new(PolicyState {
                    last_error: Some(error.clone()),
                    ..(*previous).clone()
                });
                Err(error)
            }
        }
    }
}

/// The task that reloads the policy on SIGHUP; dropping it ends the task.
#[derive(Debug)]
pub struct ReloadTask(tokio::task::JoinHandle<()>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reloads the policy on every SIGHUP until the returned task is dropped.
/// The file is read off the async workers. Once this has run, SIGHUP no
/// longer ends the process (tokio keeps its handler for the process's
/// life), which is what a daemon's `systemctl reload` wants.
pub fn reload_on_sighup(policy: SharedPolicy) -> std::io::Result<ReloadTask> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(ReloadTask(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let policy = policy.clone();
            // The outcome is logged and kept in the state by `reload`.
            let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"open_ticket_sev3\"\nmode = \"enforce\"\napproval = \"auto\"\n";

    #[test]
    fn a_failed_reload_keeps_the_previous_policy_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, GOOD).unwrap();
        let shared = SharedPolicy::load(&path).unwrap();
        let first = shared.state();
        assert_eq!(
            first.sha256,
            crate::auth::hex(&Sha256::digest(GOOD.as_bytes()))
        );
        assert_eq!(first.current.tiers.len(), 1);
        assert_eq!(first.source, path.display().to_string());
        assert!(first.last_error.is_none());

        // An unknown action kind on line 6: refused, the old policy stays.
        std::fs::write(&path, GOOD.replace("open_ticket_sev3", "open_ticket_sev9")).unwrap();
        let e = shared.reload().unwrap_err();
        let now = shared.state();
        assert!(
            Arc::ptr_eq(&now.current, &first.current),
            "previous policy in force"
        );
        assert_eq!(now.loaded_at_ms, first.loaded_at_ms);
        assert_eq!(now.sha256, first.sha256, "the hash of the policy in force");
        assert_eq!(now.last_error.as_deref(), Some(e.as_str()));
        assert!(
            e.starts_with(&format!(
                "{}:6:8: unknown variant `open_ticket_sev9`",
                path.display()
            )),
            "{e}"
        );

        // A missing file is a failed reload too.
        std::fs::remove_file(&path).unwrap();
        assert!(shared.reload().unwrap_err().contains("reading the policy"));
        assert!(Arc::ptr_eq(&shared.state().current, &first.current));

        // A good file replaces it and clears the error.
        std::fs::write(&path, GOOD.replace("\"all\"", "\"everything\"")).unwrap();
        shared.reload().unwrap();
        let now = shared.state();
        assert_eq!(now.current.tiers[0].name, "everything");
        assert_eq!(
            now.sha256,
            crate::auth::hex(&Sha256::digest(
                GOOD.replace("\"all\"", "\"everything\"").as_bytes()
            ))
        );
        assert!(now.last_error.is_none());
    }

    #[test]
    fn a_bad_file_at_start_is_an_error_naming_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[[tier]]\nnumber = 1\nname = \"x\"\nbogus = 2\n").unwrap();
        let e = SharedPolicy::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:4:1: unknown field `bogus`", path.display())),
            "{e}"
        );
    }

    #[test]
    fn the_builtin_policy_reloads_to_itself() {
        let shared = SharedPolicy::builtin();
        shared.reload().unwrap();
        let s = shared.state();
        assert_eq!(s.source, "built-in");
        assert_eq!(*s.current, Policy::builtin());
        // The built-in's hash is its normalised JSON's; a file with the
        // same tiers written out hashes as its own bytes.
        let json = serde_json::to_vec(&Policy::builtin()).unwrap();
        assert_eq!(s.sha256, crate::auth::hex(&Sha256::digest(&json)));
        assert_eq!(s.sha256.len(), 64);
    }
}
