//! Decisions: what a policy concluded about a subject in a window, signed and
//! chained. This crate performs no I/O and reads no clock: callers pass the
//! timestamp, and the decision log (`tollgate-decision-log`) writes the lines.
//!
//! - [`Draft::decision_id`] is a hash of (policy, policy revision, window,
//!   subject) only, so a replay after a crash yields the same id.
//! - A sealed [`Decision`] is one line of canonical JSON ([`canonical`]). Its
//!   `signature` is HMAC-SHA256, under the key named by `key_id`, over the
//!   canonical JSON of every other field; `prev_hash` is the SHA-256 of the
//!   previous record's line, so the records form a chain.
//! - [`Verifier`] checks lines in order: canonical form, known key, signature
//!   (constant-time), chain link, id, uniqueness.
//!
//! ```
//! use tollgate_decision::{Chain, DecisionWindow, Draft, Key, KeyRing, Verdict, Verifier, GENESIS_HASH};
//!
//! let key = Key::new("k1", "a-secret-of-16-bytes-or-more").unwrap();
//! let draft = || Draft {
//!     policy: "team-window-spend".into(),
//!     policy_revision: "r1".into(),
//!     subject: "tenant=acme/team=ai".into(),
//!     window: Some(DecisionWindow::from_millis(0, 60_000, "tollgate.inference/0")),
//!     observed: Default::default(),
//!     verdict: Verdict::Deny,
//!     reasons: vec!["spent 12.00 USD, above 10 USD".into()],
//! };
//! // The same draft has the same id, whenever it is made (replays add nothing).
//! assert_eq!(draft().decision_id(), draft().decision_id());
//!
//! let mut chain = Chain::after(GENESIS_HASH);
//! let (first, line1) = chain.seal(draft(), "2026-01-01T00:01:00.000Z".into(), &key);
//! assert_eq!(first.prev_hash, GENESIS_HASH);
//! let mut second = draft();
//! second.subject = "tenant=acme/team=ml".into();
//! let (_, line2) = chain.seal(second, "2026-01-01T00:01:00.000Z".into(), &key);
//!
//! // A verifier with the key accepts the lines in order...
//! let ring = KeyRing::new(None, vec![key.clone()]).unwrap();
//! let mut v = Verifier::new(&ring);
//! assert!(v.check_line(&line1).is_ok() && v.check_line(&line2).is_ok());
//! // ...and refuses a changed byte, or the chain out of order.
//! let mut v = Verifier::new(&ring);
//! assert!(v.check_line(&line1.replace("12.00", "11.00")).is_err());
//! assert!(Verifier::new(&ring).check_line(&line2).is_err());
//! ```

pub mod canonical;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// `prev_hash` of the first record of a log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Shortest secret accepted for signing or verification, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Warn,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Warn => "warn",
            Verdict::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Verdict::Allow),
            "warn" => Ok(Verdict::Warn),
            "deny" => Ok(Verdict::Deny),
            other => Err(format!(
                "unknown verdict {other:?} (expected allow, warn or deny)"
            )),
        }
    }
}

/// The window a decision is about: event-time bounds (RFC 3339, UTC) and the
/// source the window was kept for (`<topic>/<partition>`, or `gate`).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct DecisionWindow {
    pub start: String,
    pub end: String,
    pub source: String,
}

impl DecisionWindow {
    pub fn from_millis(start_ms: i64, end_ms: i64, source: impl Into<String>) -> Self {
        DecisionWindow {
            start: rfc3339_ms(start_ms),
            end: rfc3339_ms(end_ms),
            source: source.into(),
        }
    }
}

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-22T08:00:00.000Z`.
/// The tenant a decision's subject names: its first segment, `tenant=<t>`
/// (tenant names hold no `/`). A decision belongs to that tenant alone.
pub fn subject_tenant(subject: &str) -> Option<&str> {
    let first = subject.split('/').next()?;
    first.strip_prefix("tenant=")
}

pub fn rfc3339_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// A decision before it is signed and chained.
#[derive(Clone, PartialEq, Debug)]
pub struct Draft {
    pub policy: String,
    pub policy_revision: String,
    pub subject: String,
    pub window: Option<DecisionWindow>,
    pub observed: Map<String, Value>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

impl Draft {
    /// Deterministic id: the first 128 bits (hex) of SHA-256 over the
    /// canonical JSON of `[policy, policy_revision, window, subject]`.
    pub fn decision_id(&self) -> String {
        decision_id(
            &self.policy,
            &self.policy_revision,
            self.window.as_ref(),
            &self.subject,
        )
    }
}

pub fn decision_id(
    policy: &str,
    revision: &str,
    window: Option<&DecisionWindow>,
    subject: &str,
) -> String {
    // Canonical JSON of [policy, revision, window, subject].
    let mut key = String::with_capacity(256);
    key.push('[');
    canonical::string(policy, &mut key);
    key.push(',');
    canonical::string(revision, &mut key);
    key.push(',');
    write_window(window, &mut key);
    key.push(',');
    canonical::string(subject, &mut key);
    key.push(']');
    let digest = Sha256::digest(key.as_bytes());
    hex(&digest[..16])
}

fn write_window(w: Option<&DecisionWindow>, out: &mut String) {
    match w {
        None => out.push_str("null"),
        Some(w) => {
            out.push_str("{\"end\":");
            canonical::string(&w.end, out);
            out.push_str(",\"source\":");
            canonical::string(&w.source, out);
            out.push_str(",\"start\":");
            canonical::string(&w.start, out);
            out.push('}');
        }
    }
}

/// A signed, chained decision: one record of the log.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub decision_id: String,
    pub policy: String,
    pub policy_revision: String,
    pub subject: String,
    pub window: Option<DecisionWindow>,
    pub observed: Map<String, Value>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub ts: String,
    pub key_id: String,
    pub prev_hash: String,
    pub signature: String,
}

impl Decision {
    /// Canonical JSON written member by member, in RFC 8785 order, split
    /// where `"signature"` sorts: (members before it, members after it).
    fn canonical_halves(&self) -> (String, String) {
        let mut a = String::with_capacity(512);
        a.push_str("{\"decision_id\":");
        canonical::string(&self.decision_id, &mut a);
        a.push_str(",\"key_id\":");
        canonical::string(&self.key_id, &mut a);
        a.push_str(",\"observed\":");
        canonical::write_map(&self.observed, &mut a);
        a.push_str(",\"policy\":");
        canonical::string(&self.policy, &mut a);
        a.push_str(",\"policy_revision\":");
        canonical::string(&self.policy_revision, &mut a);
        a.push_str(",\"prev_hash\":");
        canonical::string(&self.prev_hash, &mut a);
        a.push_str(",\"reasons\":[");
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                a.push(',');
            }
            canonical::string(r, &mut a);
        }
        a.push(']');
        let mut b = String::with_capacity(256);
        b.push_str("\"subject\":");
        canonical::string(&self.subject, &mut b);
        b.push_str(",\"ts\":");
        canonical::string(&self.ts, &mut b);
        b.push_str(",\"verdict\":");
        canonical::string(self.verdict.as_str(), &mut b);
        b.push_str(",\"window\":");
        write_window(self.window.as_ref(), &mut b);
        b.push('}');
        (a, b)
    }

    /// Canonical JSON of every field but `signature`: the signed bytes.
    pub fn signing_input(&self) -> String {
        let (mut a, b) = self.canonical_halves();
        a.push(',');
        a.push_str(&b);
        a
    }

    /// The record as stored: canonical JSON of every field, one line.
    pub fn to_line(&self) -> String {
        let (mut a, b) = self.canonical_halves();
        a.push_str(",\"signature\":");
        canonical::string(&self.signature, &mut a);
        a.push(',');
        a.push_str(&b);
        a
    }

    pub fn draft(&self) -> Draft {
        Draft {
            policy: self.policy.clone(),
            policy_revision: self.policy_revision.clone(),
            subject: self.subject.clone(),
            window: self.window.clone(),
            observed: self.observed.clone(),
            verdict: self.verdict,
            reasons: self.reasons.clone(),
        }
    }
}

/// SHA-256 (hex) of a record's line: the next record's `prev_hash`.
pub fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key id must be 1-64 characters of [A-Za-z0-9._-], got {0:?}")]
    BadId(String),
    #[error("secret for key {id:?} is {len} bytes; at least {MIN_SECRET_BYTES} are required")]
    TooShort { id: String, len: usize },
    #[error("key {0:?} is configured twice with different secrets")]
    Conflict(String),
}

/// An HMAC key with its id. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Key {
    id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, <redacted>)", self.id)
    }
}

impl Key {
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let id = id.into();
        let secret = secret.into();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(KeyError::BadId(id));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort {
                id,
                len: secret.len(),
            });
        }
        Ok(Key { id, secret })
    }

    /// A key whose id is derived from the secret (`k-` + 12 hex digits of a
    /// domain-separated SHA-256), for deployments that set only the secret.
    pub fn with_derived_id(secret: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let secret = secret.into();
        let mut h = Sha256::new();
        h.update(b"tollgate key id/1\0");
        h.update(&secret);
        let id = format!("k-{}", &hex(&h.finalize())[..12]);
        Key::new(id, secret)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }

    /// HMAC-SHA256 of `bytes`, hex.
    pub fn sign(&self, bytes: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(bytes);
        hex(&mac.finalize().into_bytes())
    }

    /// Constant-time check of a hex signature.
    pub fn verify(&self, bytes: &[u8], signature_hex: &str) -> bool {
        let Some(sig) = unhex(signature_hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(bytes);
        mac.verify_slice(&sig).is_ok()
    }
}

/// The signing key (if this process signs) and every key accepted for
/// verification (the signing key included), for rotation.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    signing: Option<Key>,
    verify: BTreeMap<String, Key>,
}

impl KeyRing {
    pub fn new(signing: Option<Key>, verify: Vec<Key>) -> Result<Self, KeyError> {
        let mut ring = KeyRing {
            signing: None,
            verify: BTreeMap::new(),
        };
        for key in signing.iter().cloned().chain(verify) {
            match ring.verify.get(&key.id) {
                Some(have) if have.secret != key.secret => return Err(KeyError::Conflict(key.id)),
                _ => {
                    ring.verify.insert(key.id.clone(), key);
                }
            }
        }
        ring.signing = signing;
        Ok(ring)
    }

    pub fn signing(&self) -> Option<&Key> {
        self.signing.as_ref()
    }

    pub fn verification_key(&self, id: &str) -> Option<&Key> {
        self.verify.get(id)
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.verify.keys().map(String::as_str)
    }
}

/// The head of a chain: seals drafts into records that link to the previous.
#[derive(Clone, Debug)]
pub struct Chain {
    prev_hash: String,
}

impl Chain {
    /// A chain continuing after the record whose line hash is `prev_hash`
    /// ([`GENESIS_HASH`] for an empty log).
    pub fn after(prev_hash: impl Into<String>) -> Self {
        Chain {
            prev_hash: prev_hash.into(),
        }
    }

    pub fn prev_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Sign `draft` with `key`, link it to the chain, and advance the chain.
    /// Returns the record and its line. For a chain kept only in memory;
    /// a log that writes the line uses [`link`](Self::link) and advances
    /// with [`advance`](Self::advance) only once the line is written.
    pub fn seal(&mut self, draft: Draft, ts: String, key: &Key) -> (Decision, String) {
        let (d, line) = self.link(draft, ts, key);
        self.advance(&line);
        (d, line)
    }

    /// Sign `draft` with `key` as the record after the chain's last one,
    /// without moving the chain: if writing the line fails, the next
    /// record still links to the last one written.
    pub fn link(&self, draft: Draft, ts: String, key: &Key) -> (Decision, String) {
        let mut d = Decision {
            decision_id: draft.decision_id(),
            policy: draft.policy,
            policy_revision: draft.policy_revision,
            subject: draft.subject,
            window: draft.window,
            observed: draft.observed,
            verdict: draft.verdict,
            reasons: draft.reasons,
            ts,
            key_id: key.id().to_owned(),
            prev_hash: self.prev_hash.clone(),
            signature: String::new(),
        };
        let (mut a, b) = d.canonical_halves();
        let mut input = String::with_capacity(a.len() + b.len() + 1);
        input.push_str(&a);
        input.push(',');
        input.push_str(&b);
        d.signature = key.sign(input.as_bytes());
        a.push_str(",\"signature\":");
        canonical::string(&d.signature, &mut a);
        a.push(',');
        a.push_str(&b);
        (d, a)
    }

    /// Move the chain past `line`, a record [`link`](Self::link)ed to it
    /// and now written.
    pub fn advance(&mut self, line: &str) {
        self.prev_hash = line_hash(line);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("not a decision record: {0}")]
    Malformed(String),
    #[error("record is not in canonical form (bytes were changed)")]
    NotCanonical,
    #[error("signed with key {0:?}, which is not configured for verification")]
    UnknownKey(String),
    #[error("signature does not match the record (changed, or signed with another secret)")]
    BadSignature,
    #[error("chain broken: prev_hash is {found}, the previous record hashes to {expected} (a record was dropped, inserted or reordered)")]
    BrokenChain { expected: String, found: String },
    #[error(
        "decision_id {found} does not match its policy, revision, window and subject ({expected})"
    )]
    WrongId { expected: String, found: String },
    #[error("decision_id {0} appears twice")]
    Duplicate(String),
}

/// Checks records in log order.
pub struct Verifier<'a> {
    ring: &'a KeyRing,
    expected_prev: String,
    seen: HashSet<String>,
}

impl<'a> Verifier<'a> {
    pub fn new(ring: &'a KeyRing) -> Self {
        Verifier {
            ring,
            expected_prev: GENESIS_HASH.to_owned(),
            seen: HashSet::new(),
        }
    }

    /// Hash of the last record accepted ([`GENESIS_HASH`] before the first).
    pub fn last_hash(&self) -> &str {
        &self.expected_prev
    }

    /// Check the next line of the log (without its newline).
    pub fn check_line(&mut self, line: &str) -> Result<Decision, VerifyError> {
        let d: Decision =
            serde_json::from_str(line).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if d.to_line() != line {
            return Err(VerifyError::NotCanonical);
        }
        let key = self
            .ring
            .verification_key(&d.key_id)
            .ok_or_else(|| VerifyError::UnknownKey(d.key_id.clone()))?;
        if !key.verify(d.signing_input().as_bytes(), &d.signature) {
            return Err(VerifyError::BadSignature);
        }
        if d.prev_hash != self.expected_prev {
            return Err(VerifyError::BrokenChain {
                expected: self.expected_prev.clone(),
                found: d.prev_hash.clone(),
            });
        }
        let expected = d.draft().decision_id();
        if expected != d.decision_id {
            return Err(VerifyError::WrongId {
                expected,
                found: d.decision_id,
            });
        }
        if !self.seen.insert(d.decision_id.clone()) {
            return Err(VerifyError::Duplicate(d.decision_id));
        }
        self.expected_prev = line_hash(line);
        Ok(d)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests;
