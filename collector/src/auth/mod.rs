//! Tokens: PASETO v4.public tokens signed with the collector's ed25519 key
//! (through `pasetors`; no signature scheme of our own), their scopes, and
//! the set of revoked token ids every call is checked against.
//!
//! **Invariant:** this module knows nothing of tonic or HTTP. `api::auth`
//! reads the `authorization` header, asks [`Tokens::verify`] who the caller
//! is, and maps [`AuthError`] to a status.

use std::{
    collections::HashSet,
    fmt,
    io::Write,
    path::{Path, PathBuf},
    sync::RwLock,
    time::Duration,
};

use pasetors::{
    Public,
    claims::{Claims, ClaimsValidationRules},
    errors::{ClaimValidationError, Error as PasetoError},
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use patchgap_proto::time::now_ms;

use crate::store::{Store, StoreError, TokenRecord};

/// The `iss` of every token and checkpoint this collector signs.
const ISSUER: &str = "patchgap-collector";

/// The signing key's file in the data directory.
pub const KEY_FILE: &str = "token-signing.key";

/// What a token allows. Each RPC needs exactly one; none implies another
/// (an `admin` token cannot query unless it also has `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Queries.
    Read,
    /// Pushing SBOMs.
    IngestSbom,
    /// Importing (and, later, deleting) advisories.
    Advisories,
    /// Opening and planning incidents.
    Respond,
    /// Approving tier-1 actions.
    Approve,
    /// Tokens, the audit log and policy.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Read,
        Scope::IngestSbom,
        Scope::Advisories,
        Scope::Respond,
        Scope::Approve,
        Scope::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::IngestSbom => "ingest-sbom",
            Scope::Advisories => "advisories",
            Scope::Respond => "respond",
            Scope::Approve => "approve",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a scope; scopes are {}",
                    Scope::ALL.map(Scope::name).join(", ")
                )
            })
    }

    /// A comma-separated list ("read,advisories"), deduplicated and sorted.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, String> {
        let mut scopes = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err("a token needs at least one scope".into());
        }
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub scopes: Vec<Scope>,
    /// The token's id (`jti`).
    pub token_id: String,
}

impl Identity {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn scope_names(&self) -> String {
        self.scopes
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Why a token was not accepted. The messages go to the client as they
/// are: they say what is wrong, never what the token held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this call needs a token: send `authorization: Bearer TOKEN` (PATCHGAP_TOKEN or --token-file)"
    )]
    Missing,
    #[error("the token is not a valid patchgap token (bad format or signature)")]
    Invalid,
    #[error("the token has expired; issue a new one")]
    Expired,
    #[error("the token {0} was revoked")]
    Revoked(String),
}

/// Why a token could not be issued, or the key not loaded.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot read or create the signing key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key {path} is damaged")]
    BadKey { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("signing failed")]
    Sign(#[source] PasetoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The collector's ed25519 key pair. Its `Debug` never shows the secret.
pub struct SigningKey {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Loads `DATA_DIR/token-signing.key`, creating it (mode 0600, in a
    /// 0700 directory) on first use. Two processes creating it at once
    /// cannot both win: the file is created with `create_new`.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, IssueError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| IssueError::Key {
            path: path.clone(),
            source,
        };
        crate::store::sqlite::private_dir(data_dir).map_err(io)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::parse(&text).ok_or(IssueError::BadKey { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(IssueError::Sign)?;
        let text = format!("{}\n", hex(pair.secret.as_bytes()));
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(SigningKey {
                    secret: pair.secret,
                    public: pair.public,
                })
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                Self::parse(&text).ok_or(IssueError::BadKey { path })
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse(text: &str) -> Option<SigningKey> {
        let bytes = unhex(text.trim())?;
        let secret = AsymmetricSecretKey::<V4>::from(&bytes).ok()?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret).ok()?;
        Some(SigningKey { secret, public })
    }

    /// Signs `payload` as a PASETO v4.public token (used for the audit
    /// log's checkpoints: the same key and library as the tokens).
    pub fn sign_bytes(&self, payload: &[u8]) -> Result<String, PasetoError> {
        PublicToken::sign(&self.secret, payload, None, Some(b"patchgap-audit"))
    }

    /// The ed25519 public key, as 32 bytes (evidence bundles name it).
    pub fn ed25519_public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.public.as_bytes());
        out
    }

    /// A plain ed25519 signature of `msg` (DSSE evidence bundles), by the
    /// same key as the tokens and audit checkpoints.
    pub fn sign_ed25519(&self, msg: &[u8]) -> [u8; 64] {
        let sk = ed25519_compact::SecretKey::from_slice(self.secret.as_bytes())
            .expect("a loaded key is a valid ed25519 secret key");
        *sk.sign(msg, None)
    }

    /// The payload of a token made by [`Self::sign_bytes`], if its
    /// signature holds.
    pub fn verify_bytes(&self, signed: &str) -> Option<Vec<u8>> {
        let untrusted = UntrustedToken::<Public, V4>::try_from(signed).ok()?;
        let trusted =
            PublicToken::verify(&self.public, &untrusted, None, Some(b"patchgap-audit")).ok()?;
        Some(trusted.payload().as_bytes().to_vec())
    }
}

/// Token lifetimes: `default` when a caller names none, never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Issues and verifies tokens, and keeps the revoked ids. Revocation
/// takes effect at once: [`Tokens::revoke`] stores the revocation and adds
/// the id to the in-memory set that every [`Tokens::verify`] reads.
pub struct Tokens {
    key: std::sync::Arc<SigningKey>,
    policy: TokenPolicy,
    revoked: RwLock<HashSet<String>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads the key from `data_dir` and the revoked ids from `store`.
    pub fn open(
        data_dir: &Path,
        policy: TokenPolicy,
        store: &dyn Store,
    ) -> Result<Tokens, IssueError> {
        let key = SigningKey::load_or_create(data_dir)?;
        let revoked = store
            .tokens()?
            .into_iter()
            .filter(|t| t.revoked_ms != 0)
            .map(|t| t.id)
            .collect();
        Ok(Tokens {
            key: std::sync::Arc::new(key),
            policy,
            revoked: RwLock::new(revoked),
        })
    }

    /// The signing key, shared with the audit log's checkpoints.
    pub fn key(&self) -> std::sync::Arc<SigningKey> {
        self.key.clone()
    }

    pub fn policy(&self) -> TokenPolicy {
        self.policy
    }

    /// Mints a token for `subject` with `scopes`, valid for `ttl` (the
    /// policy's default when `None`), records it in `store`, and returns
    /// the token and its record. The token itself is never stored.
    pub fn issue(
        &self,
        store: &dyn Store,
        subject: &str,
        scopes: &[Scope],
        ttl: Option<Duration>,
        issued_by: &str,
    ) -> Result<(String, TokenRecord), IssueError> {
        issue_with(
            &self.key,
            self.policy,
            store,
            subject,
            scopes,
            ttl,
            issued_by,
        )
    }

    /// Who `token` says the caller is, if it is genuine, current and not
    /// revoked.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| AuthError::Invalid)?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with(ISSUER);
        let trusted = pasetors::public::verify(&self.key.public, &untrusted, &rules, None, None)
            .map_err(|e| match e {
                PasetoError::ClaimValidation(ClaimValidationError::Exp) => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let claims = trusted.payload_claims().ok_or(AuthError::Invalid)?;
        let text = |name: &str| {
            claims
                .get_claim(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or(AuthError::Invalid)
        };
        let token_id = text("jti")?;
        let subject = text("sub")?;
        let scopes = claims
            .get_claim("scopes")
            .and_then(|v| v.as_array())
            .ok_or(AuthError::Invalid)?
            .iter()
            // A scope this collector does not know grants nothing.
            .filter_map(|v| v.as_str().and_then(|s| Scope::parse(s).ok()))
            .collect();
        if self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&token_id)
        {
            return Err(AuthError::Revoked(token_id));
        }
        Ok(Identity {
            subject,
            scopes,
            token_id,
        })
    }

    /// Revokes a token: stored first, then refused by every later call.
    pub fn revoke(&self, store: &dyn Store, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let record = store.revoke_token(id, now_ms())?;
        if record.is_some() {
            self.revoked
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string());
        }
        Ok(record)
    }
}

/// Mints the first admin token on the collector's host, from its data
/// directory (`patchgap-collector token issue`). It opens the same key and
/// store the server uses.
pub fn issue_local(
    data_dir: &Path,
    store: &dyn Store,
    subject: &str,
    scopes: &[Scope],
    ttl: Option<Duration>,
    policy: TokenPolicy,
) -> Result<(String, TokenRecord), IssueError> {
    let key = SigningKey::load_or_create(data_dir)?;
    issue_with(&key, policy, store, subject, scopes, ttl, "local")
}

fn issue_with(
    key: &SigningKey,
    policy: TokenPolicy,
    store: &dyn Store,
    subject: &str,
    scopes: &[Scope],
    ttl: Option<Duration>,
    issued_by: &str,
) -> Result<(String, TokenRecord), IssueError> {
    let subject = subject.trim();
    if subject.is_empty() {
        return Err(IssueError::Invalid("a token needs a subject".into()));
    }
    if scopes.is_empty() {
        return Err(IssueError::Invalid(
            "a token needs at least one scope".into(),
        ));
    }
    let ttl = ttl.unwrap_or(policy.default_ttl);
    if ttl.is_zero() || ttl > policy.max_ttl {
        return Err(IssueError::Invalid(format!(
            "the lifetime must be between 1s and {}s (the collector's maximum)",
            policy.max_ttl.as_secs()
        )));
    }
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| IssueError::Invalid(format!("no randomness for a token id: {e}")))?;
    let id = hex(&id);
    let invalid = |e: PasetoError| IssueError::Invalid(format!("token claims: {e}"));
    let now = now_ms();
    let mut claims = Claims::new_expires_in(&ttl).map_err(invalid)?;
    claims.issuer(ISSUER).map_err(invalid)?;
    claims.subject(subject).map_err(invalid)?;
    claims.token_identifier(&id).map_err(invalid)?;
    claims
        .add_additional(
            "scopes",
            scopes.iter().map(|s| s.name()).collect::<Vec<_>>(),
        )
        .map_err(invalid)?;
    let token =
        pasetors::public::sign(&key.secret, &claims, None, None).map_err(IssueError::Sign)?;
    let record = TokenRecord {
        id,
        subject: subject.to_string(),
        scopes: scopes.iter().map(|s| s.name().to_string()).collect(),
        issued_ms: now,
        expires_ms: now + ttl.as_millis() as i64,
        issued_by: issued_by.to_string(),
        revoked_ms: 0,
    };
    store.put_token(&record)?;
    Ok((token, record))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A duration such as 90s, 30m, 1h or 1d.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 30m, 1h or 1d"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn tokens() -> (tempfile::TempDir, SqliteStore, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::in_memory().unwrap();
        let tokens = Tokens::open(dir.path(), TokenPolicy::default(), &store).unwrap();
        (dir, store, tokens)
    }

    #[test]
    fn a_token_says_who_and_what_until_revoked() {
        let (_dir, store, tokens) = tokens();
        let (token, record) = tokens
            .issue(
                &store,
                "ci",
                &[Scope::Read, Scope::IngestSbom],
                None,
                "admin",
            )
            .unwrap();
        assert!(token.starts_with("v4.public."));
        assert!(record.expires_ms - record.issued_ms == 3_600_000);
        let who = tokens.verify(&token).unwrap();
        assert_eq!(who.subject, "ci");
        assert_eq!(who.scopes, vec![Scope::Read, Scope::IngestSbom]);
        assert!(!who.has(Scope::Admin));
        assert_eq!(who.token_id, record.id);
        tokens.revoke(&store, &record.id).unwrap().unwrap();
        assert_eq!(tokens.verify(&token), Err(AuthError::Revoked(record.id)));
    }

    #[test]
    fn forged_and_foreign_tokens_fail() {
        let (_dir, store, tokens) = tokens();
        let (token, _) = tokens
            .issue(&store, "ci", &[Scope::Read], None, "admin")
            .unwrap();
        // Every one-character edit of the body fails.
        let body = "v4.public.".len();
        for i in (body..token.len()).step_by(7) {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            assert!(tokens.verify(&t).is_err(), "edit at {i} accepted");
        }
        // Another collector's key.
        let other = tempfile::tempdir().unwrap();
        let theirs = Tokens::open(other.path(), TokenPolicy::default(), &store).unwrap();
        assert_eq!(theirs.verify(&token), Err(AuthError::Invalid));
        assert_eq!(tokens.verify(""), Err(AuthError::Invalid));
    }

    #[test]
    fn lifetimes_are_bounded() {
        let (_dir, store, tokens) = tokens();
        let long = Some(Duration::from_secs(25 * 3600));
        assert!(
            tokens
                .issue(&store, "x", &[Scope::Read], long, "a")
                .is_err()
        );
        assert!(tokens.issue(&store, "", &[Scope::Read], None, "a").is_err());
        assert!(tokens.issue(&store, "x", &[], None, "a").is_err());
        assert_eq!(parse_ttl("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_ttl("1w").is_err());
        assert_eq!(
            Scope::parse_list("read,admin,read"),
            Ok(vec![Scope::Read, Scope::Admin])
        );
        assert!(Scope::parse_list("root").is_err());
    }

    #[test]
    fn the_key_is_created_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = SigningKey::load_or_create(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&data), 0o700);
        let b = SigningKey::load_or_create(&data).unwrap();
        let signed = a.sign_bytes(b"checkpoint").unwrap();
        assert_eq!(b.verify_bytes(&signed).as_deref(), Some(&b"checkpoint"[..]));
        assert!(format!("{a:?}").contains("redacted"));
    }
}
