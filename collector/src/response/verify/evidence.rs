//! The evidence bundle: what proves an incident's closure, as a DSSE
//! envelope (secure-systems-lab/dsse, protocol v1) around an in-toto
//! Statement v1, signed by the collector's ed25519 key (the key its audit
//! checkpoints and tokens are signed with). Any DSSE verifier can check
//! it; `patchgap evidence verify` does.
//!
//! The statement's subject is the incident, with the SHA-256 of its
//! event log; the predicate carries the checks with their queries,
//! results and coverage, the timeline, the actions with their verified
//! effects, and the policy in force.
//!
//! Verification takes bytes and does no I/O: a changed byte anywhere in
//! the payload, its type or the signature fails it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::check::utc;
use crate::{
    auth::hex,
    response::incident::{Event, Incident, Recorded, display_id},
};

/// The payload type of an in-toto Statement in DSSE.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The in-toto Statement version this writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// What the predicate is: patchgap's incident closure evidence.
pub const PREDICATE_TYPE: &str = "https://patchgap.dev/evidence/incident-closure/v1";
/// The largest bundle `verify` reads.
pub const MAX_BUNDLE_BYTES: usize = 64 << 20;

/// DSSE's pre-authentication encoding: what is signed, so the payload
/// type cannot be swapped under a signature.
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in
/// ASCII decimal.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// The DSSE JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the serialized statement.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// `ed25519:<hex public key>`: which key signed (not authenticated by
    /// itself: compare it with the collector's key).
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the ed25519 signature over the PAE.
    pub sig: String,
}

/// Why a bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("the bundle is {0} bytes, more than the {MAX_BUNDLE_BYTES} read")]
    TooLarge(usize),
    #[error("the bundle is not a DSSE JSON envelope: {0}")]
    NotEnvelope(String),
    #[error("the {field} is not base64")]
    Base64 { field: &'static str },
    #[error("the payload type is {0:?}, not {PAYLOAD_TYPE}")]
    PayloadType(String),
    #[error("the envelope has no ed25519 signature this can check")]
    NoSignature,
    #[error("signed by {found}, not by the expected key {expected}")]
    WrongKey { found: String, expected: String },
    #[error(
        "the signature does not match the payload: the bundle was changed or not signed by {keyid}"
    )]
    BadSignature { keyid: String },
    #[error("the payload is not an in-toto Statement v1 with the patchgap predicate: {0}")]
    NotStatement(String),
}

/// The collector's key, as the bundle needs it: sign bytes, name itself.
pub trait Signer {
    /// The ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// An ed25519 signature of `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

impl Signer for crate::auth::SigningKey {
    fn public_key(&self) -> [u8; 32] {
        self.ed25519_public()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.sign_ed25519(msg)
    }
}

/// `ed25519:<hex>` for a public key.
pub fn keyid(public: &[u8; 32]) -> String {
    format!("ed25519:{}", hex(public))
}

/// What the policy in force says of itself (for the bundle).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    /// The file's path, or "built-in".
    pub source: String,
    pub loaded_at_ms: i64,
    /// The SHA-256 (hex) of the policy file's bytes as the collector read
    /// them, or of the built-in policy's normalised JSON
    /// (`policy::state::builtin_sha256`): the version of the policy, which
    /// a path and a load time do not pin (a file edited and reloaded keeps
    /// its path). A verifier compares it with `sha256sum` of the file.
    pub sha256: String,
    /// K, as the gate applied it.
    pub streak_required: u32,
    pub evidence_counted: Vec<String>,
}

impl PolicyRef {
    /// The reference to the policy in force (`state`) with the
    /// verification settings the gate applies under it.
    pub fn in_force(state: &crate::response::PolicyState, settings: &super::Settings) -> PolicyRef {
        PolicyRef {
            source: state.source.clone(),
            loaded_at_ms: state.loaded_at_ms,
            sha256: state.sha256.clone(),
            streak_required: settings.streak,
            evidence_counted: settings.counted.clone(),
        }
    }
}

/// The SHA-256 of an incident's log: each event's record (seq, time,
/// actor, kind, payload) as one JSON line.
pub fn log_digest(events: &[Recorded]) -> String {
    let mut h = Sha256::new();
    for r in events {
        let rec = r.to_record();
        let line = json!([rec.seq, rec.at_ms, rec.actor, rec.kind, rec.payload]);
        h.update(line.to_string().as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// The in-toto Statement for incident `id` as its whole log shows it.
pub fn statement(
    id: i64,
    incident: &Incident,
    events: &[Recorded],
    policy: &PolicyRef,
    graph: Option<Value>,
) -> Value {
    let runs: Vec<Value> = events
        .iter()
        .filter_map(|r| match &r.event {
            Event::Checked { run } => Some(json!({
                "seq": r.seq,
                "at": utc(r.at_ms),
                "at_ms": r.at_ms,
                "verdict": run.verdict,
                "checks": run.checks,
            })),
            _ => None,
        })
        .collect();
    let timeline: Vec<Value> = events
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "at": utc(r.at_ms),
                "at_ms": r.at_ms,
                "actor": r.actor,
                "event": r.event,
            })
        })
        .collect();
    let actions: Vec<Value> = incident
        .actions
        .iter()
        .map(|a| {
            json!({
                "id": a.planned.id,
                "kind": a.planned.kind.as_str(),
                "mode": a.planned.mode,
                "state": a.state.name(),
                "reason": a.reason,
                "approved_by": a.approved_by,
                "targets": a.planned.targets,
                "times_ms": a.times,
                "time_to_containment_ms": a.time_to_containment_ms,
                "effect_verified": a.times.verified > 0,
                "revert_verified": a.times.revert_verified > 0,
            })
        })
        .collect();
    let name = display_id(id);
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": format!("patchgap:incident/{name}"),
            "digest": {"sha256": log_digest(events)},
        }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "incident": name,
            "dedup_key": incident.dedup_key,
            "source": incident.source,
            "state": incident.state,
            "closed_with_evidence": incident.state == crate::response::incident::State::Closed
                && incident.forced_close.is_none(),
            "forced_close_reason": incident.forced_close,
            "reopened": incident.reopened,
            "opened_at": utc(incident.opened_at_ms),
            "policy": policy,
            "verification": incident.verification.as_ref().map(|v| json!({
                "streak": v.streak,
                "streak_since": utc(v.streak_since_ms),
                "last_run_at": utc(v.at_ms),
                "last_run": v.last,
            })),
            "runs": runs,
            "actions": actions,
            "scope": incident.scope,
            "hosts_covered": incident.hosts_seen,
            "hosts_retired": incident.hosts_retired,
            "exposure_graph": graph,
            "timeline": timeline,
        },
    })
}

/// The statement signed: a DSSE envelope, as JSON text.
pub fn seal(statement: &Value, key: &dyn Signer) -> String {
    let body = serde_json::to_vec(statement).expect("statements serialize");
    let sig = key.sign(&pae(PAYLOAD_TYPE, &body));
    let env = Envelope {
        payload: b64(&body),
        payload_type: PAYLOAD_TYPE.into(),
        signatures: vec![Signature {
            keyid: keyid(&key.public_key()),
            sig: b64(&sig),
        }],
    };
    serde_json::to_string_pretty(&env).expect("envelopes serialize")
}

/// A bundle that verified: who signed it and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub keyid: String,
    pub statement: Value,
}

/// Verifies a bundle: the envelope decodes, its payload type is an
/// in-toto statement, an ed25519 signature over the PAE holds (by
/// `expected` when given, else by the key its keyid names), and the
/// payload is a Statement v1 with the patchgap predicate.
pub fn verify(bundle: &[u8], expected: Option<&[u8; 32]>) -> Result<Verified, EvidenceError> {
    if bundle.len() > MAX_BUNDLE_BYTES {
        return Err(EvidenceError::TooLarge(bundle.len()));
    }
    let env: Envelope =
        serde_json::from_slice(bundle).map_err(|e| EvidenceError::NotEnvelope(e.to_string()))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(EvidenceError::PayloadType(env.payload_type));
    }
    let body = unb64(&env.payload).ok_or(EvidenceError::Base64 { field: "payload" })?;
    let signed = pae(&env.payload_type, &body);
    let mut last = EvidenceError::NoSignature;
    for s in &env.signatures {
        let Some(public) = s.keyid.strip_prefix("ed25519:").and_then(unhex32) else {
            continue;
        };
        if let Some(want) = expected
            && &public != want
        {
            last = EvidenceError::WrongKey {
                found: s.keyid.clone(),
                expected: keyid(want),
            };
            continue;
        }
        let sig = unb64(&s.sig).ok_or(EvidenceError::Base64 { field: "signature" })?;
        let ok = ed25519_compact::Signature::from_slice(&sig)
            .ok()
            .zip(ed25519_compact::PublicKey::from_slice(&public).ok())
            .is_some_and(|(sig, pk)| pk.verify(&signed, &sig).is_ok());
        if !ok {
            last = EvidenceError::BadSignature {
                keyid: s.keyid.clone(),
            };
            continue;
        }
        let statement: Value = serde_json::from_slice(&body)
            .map_err(|e| EvidenceError::NotStatement(e.to_string()))?;
        if statement["_type"] != STATEMENT_TYPE {
            return Err(EvidenceError::NotStatement(format!(
                "_type is {}",
                statement["_type"]
            )));
        }
        if statement["predicateType"] != PREDICATE_TYPE {
            return Err(EvidenceError::NotStatement(format!(
                "predicateType is {}",
                statement["predicateType"]
            )));
        }
        return Ok(Verified {
            keyid: s.keyid.clone(),
            statement,
        });
    }
    Err(last)
}

fn b64(bytes: &[u8]) -> String {
    use ct_codecs::{Base64, Encoder};
    Base64::encode_to_string(bytes).expect("base64 of a bounded buffer")
}

/// Standard or URL-safe base64, padded or not: DSSE verifiers accept
/// either.
fn unb64(s: &str) -> Option<Vec<u8>> {
    use ct_codecs::{Base64, Base64NoPadding, Base64UrlSafe, Base64UrlSafeNoPadding, Decoder};
    Base64::decode_to_vec(s, None)
        .or_else(|_| Base64NoPadding::decode_to_vec(s, None))
        .or_else(|_| Base64UrlSafe::decode_to_vec(s, None))
        .or_else(|_| Base64UrlSafeNoPadding::decode_to_vec(s, None))
        .ok()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed test key (seed 0x07 repeated).
    struct TestKey(ed25519_compact::KeyPair);

    impl TestKey {
        fn new(seed: u8) -> TestKey {
            TestKey(ed25519_compact::KeyPair::from_seed(
                ed25519_compact::Seed::new([seed; 32]),
            ))
        }
    }

    impl Signer for TestKey {
        fn public_key(&self) -> [u8; 32] {
            *self.0.pk
        }
        fn sign(&self, msg: &[u8]) -> [u8; 64] {
            *self.0.sk.sign(msg, None)
        }
    }

    #[test]
    fn pae_matches_the_dsse_specs_test_vector() {
        // protocol.md, "Test Vectors".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
        // The spec's envelope payload decodes to its body.
        assert_eq!(unb64("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(unb64("aGVsbG8gd29ybGQ").unwrap(), b"hello world");
    }

    fn statement_value() -> Value {
        json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "patchgap:incident/INC-1", "digest": {"sha256": "00"}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"incident": "INC-1", "closed_with_evidence": true},
        })
    }

    #[test]
    fn a_sealed_bundle_verifies_and_one_changed_byte_anywhere_fails_it() {
        let key = TestKey::new(7);
        let bundle = seal(&statement_value(), &key);
        let ok = verify(bundle.as_bytes(), None).unwrap();
        assert_eq!(ok.keyid, keyid(&key.public_key()));
        assert_eq!(ok.statement["predicate"]["incident"], "INC-1");
        assert!(verify(bundle.as_bytes(), Some(&key.public_key())).is_ok());
        // Another expected key: refused, naming both.
        let other = TestKey::new(8);
        assert!(matches!(
            verify(bundle.as_bytes(), Some(&other.public_key())),
            Err(EvidenceError::WrongKey { .. })
        ));
        // Every single-byte change of the payload, the type or the
        // signature fails (a change that still parses must fail on the
        // signature).
        let env: Envelope = serde_json::from_str(&bundle).unwrap();
        let body = unb64(&env.payload).unwrap();
        for i in 0..body.len() {
            let mut changed = body.clone();
            changed[i] ^= 0x01;
            let e = Envelope {
                payload: b64(&changed),
                ..env.clone()
            };
            let bytes = serde_json::to_vec(&e).unwrap();
            assert!(
                matches!(
                    verify(&bytes, None),
                    Err(EvidenceError::BadSignature { .. })
                ),
                "byte {i}"
            );
        }
        let mut sig = unb64(&env.signatures[0].sig).unwrap();
        sig[10] ^= 0x80;
        let mut e = env.clone();
        e.signatures[0].sig = b64(&sig);
        assert!(matches!(
            verify(&serde_json::to_vec(&e).unwrap(), None),
            Err(EvidenceError::BadSignature { .. })
        ));
        let mut e = env.clone();
        e.payload_type = "application/vnd.in-toto+jsoN".into();
        assert!(matches!(
            verify(&serde_json::to_vec(&e).unwrap(), None),
            Err(EvidenceError::PayloadType(_))
        ));
        // A signature by another key under this key's id fails too.
        let mut e = env.clone();
        e.signatures[0].sig = b64(&other.sign(&pae(PAYLOAD_TYPE, &body)));
        assert!(verify(&serde_json::to_vec(&e).unwrap(), None).is_err());
        // The raw file with one byte changed inside the base64 payload.
        let at = bundle.find("\"payload\": \"").unwrap() + 20;
        let mut raw = bundle.clone().into_bytes();
        raw[at] = if raw[at] == b'A' { b'B' } else { b'A' };
        assert!(verify(&raw, None).is_err());
    }

    /// An incident as its first event makes it.
    fn opened() -> (Incident, Vec<Recorded>) {
        use crate::response::incident::{Source, project};
        let source = Source::Advisory {
            id: "PYSEC-2023-228".into(),
            asked_as: String::new(),
            host: None,
        };
        let events = vec![Recorded {
            seq: 1,
            at_ms: 1_700_000_000_000,
            actor: "alice".into(),
            event: Event::Opened {
                dedup_key: source.dedup_key(),
                source,
            },
        }];
        (project(&events).unwrap(), events)
    }

    /// The policy's hash in the bundle is the hash of the bytes the
    /// collector put in force: a reload of an edited file under the same
    /// path changes it, a failed reload does not, and the built-in has
    /// its own. Each sealed bundle still verifies with the hash in it.
    #[test]
    fn the_bundle_carries_the_hash_of_the_policy_in_force_and_verifies() {
        use crate::response::policy::state::{SharedPolicy, builtin_sha256};
        let sha = |b: &[u8]| hex(&Sha256::digest(b));
        let key = TestKey::new(7);
        let (incident, events) = opened();
        let settings = crate::response::verify::Settings {
            streak: 4,
            ..Default::default()
        };
        let bundled = |shared: &SharedPolicy| {
            let policy = PolicyRef::in_force(&shared.state(), &settings);
            let bundle = seal(&statement(1, &incident, &events, &policy, None), &key);
            let ok = verify(bundle.as_bytes(), Some(&key.public_key())).unwrap();
            ok.statement["predicate"]["policy"].clone()
        };

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let first = "[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"open_ticket_sev3\"\nmode = \"enforce\"\napproval = \"auto\"\n";
        std::fs::write(&path, first).unwrap();
        let shared = SharedPolicy::load(&path).unwrap();
        let p = bundled(&shared);
        assert_eq!(p["sha256"], sha(first.as_bytes()), "{p:#}");
        assert_eq!(p["source"], path.display().to_string());
        assert_eq!(p["streak_required"], 4);

        // Edited in place and reloaded: same path, another version.
        let second = first.replace("\"all\"", "\"everything\"");
        std::fs::write(&path, &second).unwrap();
        shared.reload().unwrap();
        let p = bundled(&shared);
        assert_eq!(p["sha256"], sha(second.as_bytes()));
        assert_ne!(p["sha256"], sha(first.as_bytes()));
        assert_eq!(p["source"], path.display().to_string());

        // A reload that fails leaves the previous policy, and its hash.
        std::fs::write(&path, "[[tier]]\nbogus = 1\n").unwrap();
        assert!(shared.reload().is_err());
        assert_eq!(bundled(&shared)["sha256"], sha(second.as_bytes()));

        // The built-in: the hash of its normalised JSON.
        let p = bundled(&SharedPolicy::builtin());
        assert_eq!(p["source"], "built-in");
        assert_eq!(p["sha256"], builtin_sha256());
        let json = serde_json::to_vec(&crate::response::Policy::builtin()).unwrap();
        assert_eq!(p["sha256"], sha(&json));
    }

    #[test]
    fn malformed_bundles_say_why() {
        assert!(matches!(
            verify(b"{not json", None),
            Err(EvidenceError::NotEnvelope(_))
        ));
        let no_sig = json!({"payload": "e30=", "payloadType": PAYLOAD_TYPE, "signatures": []});
        assert_eq!(
            verify(no_sig.to_string().as_bytes(), None),
            Err(EvidenceError::NoSignature)
        );
        let bad_b64 = json!({"payload": "***", "payloadType": PAYLOAD_TYPE, "signatures": []});
        assert_eq!(
            verify(bad_b64.to_string().as_bytes(), None),
            Err(EvidenceError::Base64 { field: "payload" })
        );
        // Signed, but not our statement.
        let key = TestKey::new(9);
        let bundle = seal(&json!({"_type": "https://in-toto.io/Statement/v0.1"}), &key);
        assert!(matches!(
            verify(bundle.as_bytes(), None),
            Err(EvidenceError::NotStatement(_))
        ));
        assert!(matches!(
            verify(&vec![b' '; MAX_BUNDLE_BYTES + 1], None),
            Err(EvidenceError::TooLarge(_))
        ));
    }
}
