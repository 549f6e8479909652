//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! the key being the base64 after a secret's `whsec_` prefix.
//!
//! Hand-written on `hmac` and `sha2` rather than the `standardwebhooks`
//! crate: that crate has had one release (1.0.1, March 2024) and would add
//! a third `base64` (0.21) and `time` to the tree for these twenty lines.
//! The live tests check every signature with the specification's own
//! Python package.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret is refused (never with the secret in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_`")]
    NoPrefix,
    #[error("a webhook secret is `whsec_` and base64 (it is not valid base64)")]
    NotBase64,
    #[error("a webhook secret holds 24 to 64 bytes of key (this one holds {0})")]
    BadLength(usize),
}

impl Secret {
    /// `whsec_` + base64 of 24 to 64 bytes (the specification's range),
    /// surrounding whitespace ignored (a file's trailing newline).
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Secret(key))
    }
}

/// The `webhook-signature` value for one attempt.
pub fn sign(secret: &Secret, webhook_id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// How far a signed message's timestamp may be from now: the
/// specification's tolerance against replays.
pub const TOLERANCE_S: i64 = 5 * 60;

/// Why a signed message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error("webhook-timestamp is more than 5 minutes from the collector's clock")]
    Stale,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// Checks a Standard Webhooks message: one of the space-separated `v1,`
/// signatures in `signature` is the HMAC of `id.timestamp.body` under
/// `secret` (compared in constant time), and the timestamp is within
/// [`TOLERANCE_S`] of `now_s`.
pub fn verify(
    secret: &Secret,
    webhook_id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_s: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(timestamp.chars().take(32).collect()))?;
    if (now_s - ts).abs() > TOLERANCE_S {
        return Err(VerifyError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let matches = signature
        .split_whitespace()
        .take(8)
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sign` writes, `verify` takes; a changed byte, another key, an
    /// old timestamp or a garbled header are refused.
    #[test]
    fn verifies_what_it_signs_and_nothing_else() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let other = Secret::parse("whsec_ZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleQ==").unwrap();
        let body = br#"{"type":"patchgap.action.confirmed"}"#;
        let sig = sign(&secret, "msg_1", 1_000, body);
        assert_eq!(verify(&secret, "msg_1", "1000", &sig, body, 1_100), Ok(()));
        // Several signatures (a key rotation): any one may match.
        let two = format!("v1,AAAA {sig}");
        assert_eq!(verify(&secret, "msg_1", "1000", &two, body, 1_100), Ok(()));
        let mut changed = body.to_vec();
        changed[3] ^= 1;
        assert_eq!(
            verify(&secret, "msg_1", "1000", &sig, &changed, 1_100),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&other, "msg_1", "1000", &sig, body, 1_100),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&secret, "msg_2", "1000", &sig, body, 1_100),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                &secret,
                "msg_1",
                "1000",
                &sig,
                body,
                1_000 + TOLERANCE_S + 1
            ),
            Err(VerifyError::Stale)
        );
        assert!(matches!(
            verify(&secret, "msg_1", "soon", &sig, body, 1_100),
            Err(VerifyError::BadTimestamp(_))
        ));
    }

    /// The specification's test vector (also in every reference library's
    /// tests).
    #[test]
    fn signs_the_specifications_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_secrets_without_showing_them() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::NoPrefix)
        );
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::BadLength(3)));
        let s = Secret::parse(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }
}
