//! Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
//!
//! The signed content is `{id}.{timestamp}.{body}` over the raw body bytes (any bytes, not only
//! UTF-8). Two schemes sign it:
//!
//! - `v1,` followed by the base64 HMAC-SHA256 of that content, keyed by a shared `whsec_`
//!   secret's bytes ([`sign`]);
//! - `v1a,` followed by the base64 ed25519 signature of that content, made with the sender's
//!   own `whsk_` key and checked with its `whpk_` public key ([`sign_v1a`]).
//!
//! A header may carry several space-separated signatures (one per active key during a rotation
//! or a migration between the schemes); versions the receiver has no key for are skipped.
//! Verification compares HMACs in constant time and refuses timestamps outside a tolerance in
//! either direction.
//!
//! ```
//! use diax_sdk::webhook::{sign, RawHeaders};
//! use diax_sdk::{KeyId, Keyring, Secret};
//!
//! // The test vector published with the Standard Webhooks specification.
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let body = br#"{"test": 2432232314}"#;
//! let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
//! assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//!
//! let ring = Keyring::single(KeyId::parse("key_1")?, secret);
//! let headers = RawHeaders::new("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig);
//! let verified = ring.verify_at(&headers, body, 1614265330 + 10, 300)?;
//! assert_eq!(verified.id.as_str(), "msg_p5jXN8AQM9LWM0D4loKWxJek");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same with ed25519: the sender signs with its secret key, the receiver holds only the
//! sender's public key.
//!
//! ```
//! use diax_sdk::ed25519::SigningKey;
//! use diax_sdk::webhook::RawHeaders;
//! use diax_sdk::{KeyId, Keyring, MessageId};
//!
//! let sender_key = SigningKey::generate();
//! let sender = Keyring::single(KeyId::parse("key_sender")?, sender_key.clone());
//! let receiver = Keyring::single(KeyId::parse("key_sender")?, sender_key.public_key());
//!
//! let signed = sender.sign(&MessageId::parse("msg_1")?, 1_700_000_000, b"{}")?;
//! assert!(signed.signature.starts_with("v1a,"));
//! let ts = signed.timestamp.to_string();
//! let headers = RawHeaders::new("msg_1", &ts, &signed.signature);
//! assert_eq!(receiver.verify_at(&headers, b"{}", 1_700_000_000, 300)?.key_id.as_str(), "key_sender");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ed25519::{SIGNATURE_BYTES, SigningKey};
use crate::ids::{KeyId, MessageId};
use crate::secret::{KeyMaterial, Keyring, Scheme, Secret};

/// Header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the Unix timestamp (seconds) at which the message was signed.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` and `v1a,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Default tolerance between the signer's clock and ours, in seconds, in either direction.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Longest `webhook-signature` header accepted: 1,024 bytes, room for 21 `v1` signatures
/// (47 bytes each, space-separated) or 11 `v1a` ones (93 bytes each). [`Keyring::sign`] never
/// writes a longer one.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 16 * 64;
/// Longest `webhook-id` accepted.
pub const MAX_ID_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but malformed.
    #[error("malformed header {name}: {reason}")]
    MalformedHeader {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The timestamp is older than the tolerance allows.
    #[error("timestamp {timestamp} is {age} s old; tolerance is {tolerance} s")]
    TimestampTooOld {
        /// The message's timestamp.
        timestamp: i64,
        /// Seconds between it and now.
        age: i64,
        /// The tolerance in force.
        tolerance: u64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error("timestamp {timestamp} is {ahead} s in the future; tolerance is {tolerance} s")]
    TimestampInFuture {
        /// The message's timestamp.
        timestamp: i64,
        /// Seconds between now and it.
        ahead: i64,
        /// The tolerance in force.
        tolerance: u64,
    },
    /// No signature in the header matches any active key.
    #[error("no signature matches any active key")]
    SignatureMismatch,
    /// The header holds no `v1` or `v1a` signature at all.
    #[error("no v1 or v1a signature in webhook-signature")]
    NoSupportedSignature,
    /// The header holds signatures only of a scheme the receiver has no active key for: `v1a`
    /// entries where only `v1` (HMAC) keys are configured, or the reverse.
    #[error(
        "the message carries only {found} signatures; this receiver verifies {expected} signatures only"
    )]
    WrongScheme {
        /// The version of the entries found (`v1` or `v1a`).
        found: &'static str,
        /// The version the receiver's active keys verify.
        expected: &'static str,
    },
    /// The keyring has no key active now.
    #[error("no active key to verify with")]
    NoActiveKey,
    /// The message id was seen before with a different body.
    #[error("message id {0} was already used for a different message")]
    Replayed(String),
    /// The replay store could not be consulted.
    #[error("replay store failed: {0}")]
    ReplayStore(String),
    /// The body is larger than the configured limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Bytes received (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The keyring has no key active at the signing time.
    #[error("no active key to sign with")]
    NoActiveKey,
}

/// The three signature headers as received, before any checking. Values are bytes because
/// HTTP header values need not be UTF-8.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawHeaders<'a> {
    /// `webhook-id`, if present.
    pub id: Option<&'a [u8]>,
    /// `webhook-timestamp`, if present.
    pub timestamp: Option<&'a [u8]>,
    /// `webhook-signature`, if present.
    pub signature: Option<&'a [u8]>,
}

impl<'a> RawHeaders<'a> {
    /// All three headers present, from strings.
    #[must_use]
    pub fn new(id: &'a str, timestamp: &'a str, signature: &'a str) -> Self {
        Self {
            id: Some(id.as_bytes()),
            timestamp: Some(timestamp.as_bytes()),
            signature: Some(signature.as_bytes()),
        }
    }

    /// Looks the three headers up through a caller-supplied getter (case-insensitive names
    /// are the getter's business), keeping this crate free of any HTTP library's types.
    pub fn from_fn(get: impl Fn(&'static str) -> Option<&'a [u8]>) -> Self {
        Self {
            id: get(HEADER_ID),
            timestamp: get(HEADER_TIMESTAMP),
            signature: get(HEADER_SIGNATURE),
        }
    }
}

/// Headers to attach to an outgoing signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `webhook-id`.
    pub id: MessageId,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// `webhook-signature`: one `v1,…` or `v1a,…` entry per active signing key,
    /// space-separated.
    pub signature: String,
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs, ready for any HTTP client.
    #[must_use]
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (HEADER_ID, self.id.to_string()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// A message whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its `webhook-id`.
    pub id: MessageId,
    /// Its `webhook-timestamp`.
    pub timestamp: i64,
    /// The key whose signature matched.
    pub key_id: KeyId,
}

fn mac_for(secret: &Secret, id: &[u8], timestamp: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; Secret guarantees 16..=64 bytes.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.expose_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id);
    mac.update(b".");
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac
}

/// Signs `id.timestamp.body` with one secret; returns `v1,<base64>`.
///
/// ```
/// use diax_sdk::{webhook::sign, Secret};
///
/// let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
/// assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), diax_sdk::SecretError>(())
/// ```
#[must_use]
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let tag = mac_for(secret, id.as_bytes(), ts.as_bytes(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

fn signed_content(id: &[u8], timestamp: &[u8], body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id);
    content.push(b'.');
    content.extend_from_slice(timestamp);
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// Signs `id.timestamp.body` with one ed25519 secret key; returns `v1a,<base64>` (88 base64
/// characters of the 64-byte signature).
///
/// ```
/// use diax_sdk::ed25519::SigningKey;
/// use diax_sdk::webhook::sign_v1a;
///
/// let key = SigningKey::generate();
/// let sig = sign_v1a(&key, "msg_1", 1_700_000_000, b"{}");
/// assert!(sig.starts_with("v1a,"));
/// assert_eq!(sig.len(), 4 + 88);
/// ```
#[must_use]
pub fn sign_v1a(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = key.sign(&signed_content(id.as_bytes(), ts.as_bytes(), body));
    format!("v1a,{}", STANDARD.encode(sig))
}

fn parse_id(raw: &[u8]) -> Result<MessageId, VerifyError> {
    let bad = |reason| VerifyError::MalformedHeader {
        name: HEADER_ID,
        reason,
    };
    if raw.len() > MAX_ID_LEN {
        return Err(bad("longer than 128 bytes"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| bad("not ASCII"))?;
    MessageId::parse(text).map_err(|e| bad(e.reason))
}

fn parse_timestamp(raw: &[u8]) -> Result<i64, VerifyError> {
    let bad = |reason| VerifyError::MalformedHeader {
        name: HEADER_TIMESTAMP,
        reason,
    };
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(bad("expected Unix seconds as 1 to 12 decimal digits"));
    }
    raw.iter()
        .try_fold(0i64, |acc, d| {
            acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or(bad("out of range"))
}

impl Keyring {
    /// Signs a message with every signing key active at `timestamp` (HMAC secrets give `v1`
    /// entries, own ed25519 keys `v1a` entries, peers' public keys nothing), newest first, as
    /// many as fit in [`MAX_SIGNATURE_HEADER_LEN`] (21 `v1` signatures): when more keys are
    /// active (more than 20 rotations within one grace period), the oldest are left out, so
    /// the header is never refused for its length. A receiver that knows only one of the
    /// left-out secrets must take the newer secret; the header keeps the order of the keys,
    /// oldest first.
    ///
    /// ```
    /// use diax_sdk::webhook::MAX_SIGNATURE_HEADER_LEN;
    /// use diax_sdk::{KeyId, Keyring, MessageId, Secret};
    ///
    /// let mut ring = Keyring::new();
    /// for n in 0..30 {
    ///     ring.insert(KeyId::parse(format!("key_{n}"))?, Secret::generate(), None);
    /// }
    /// let signed = ring.sign(&MessageId::parse("msg_1")?, 1_700_000_000, b"{}")?;
    /// assert!(signed.signature.len() <= MAX_SIGNATURE_HEADER_LEN);
    /// assert_eq!(signed.signature.split(' ').count(), 21);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SignError::NoActiveKey`] when no signing key is active.
    pub fn sign(
        &self,
        id: &MessageId,
        timestamp: i64,
        body: &[u8],
    ) -> Result<SignedHeaders, SignError> {
        let active: Vec<_> = self.active_at(timestamp).collect();
        let mut sigs: Vec<String> = Vec::new();
        let mut len = 0usize;
        for key in active.iter().rev() {
            let sig = match &key.material {
                KeyMaterial::Hmac(secret) => sign(secret, id.as_str(), timestamp, body),
                KeyMaterial::Ed25519(own) => sign_v1a(own, id.as_str(), timestamp, body),
                KeyMaterial::Ed25519Public(_) => continue,
            };
            let added = sig.len() + usize::from(!sigs.is_empty());
            if len + added > MAX_SIGNATURE_HEADER_LEN {
                break;
            }
            len += added;
            sigs.push(sig);
        }
        sigs.reverse();
        if sigs.is_empty() {
            return Err(SignError::NoActiveKey);
        }
        Ok(SignedHeaders {
            id: id.clone(),
            timestamp,
            signature: sigs.join(" "),
        })
    }

    /// Verifies a signed message at time `now` (Unix seconds) with the keys active then,
    /// refusing timestamps more than `tolerance_secs` away from `now` in either direction.
    ///
    /// `v1` entries are checked against the HMAC secrets (in constant time, against every
    /// candidate), `v1a` entries against the peers' public keys; entries of other versions are
    /// skipped. A header whose only entries are of a scheme no active key verifies is refused
    /// with [`VerifyError::WrongScheme`]; a `v1a` entry that does not decode to 64 bytes, when
    /// nothing else matches, with [`VerifyError::MalformedHeader`].
    ///
    /// This checks the signature only; replays are the business of a
    /// [`ReplayStore`](crate::replay::ReplayStore) (see [`Verifier`](crate::Verifier)).
    ///
    /// # Errors
    /// A [`VerifyError`] naming the first problem found.
    pub fn verify_at(
        &self,
        headers: &RawHeaders<'_>,
        body: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<Verified, VerifyError> {
        let raw_id = headers.id.ok_or(VerifyError::MissingHeader(HEADER_ID))?;
        let raw_ts = headers
            .timestamp
            .ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
        let raw_sig = headers
            .signature
            .ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
        let id = parse_id(raw_id)?;
        let timestamp = parse_timestamp(raw_ts)?;
        if raw_sig.len() > MAX_SIGNATURE_HEADER_LEN {
            return Err(VerifyError::MalformedHeader {
                name: HEADER_SIGNATURE,
                reason: "longer than 1024 bytes",
            });
        }
        let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
        let delta = now.saturating_sub(timestamp);
        if delta > tolerance {
            return Err(VerifyError::TimestampTooOld {
                timestamp,
                age: delta,
                tolerance: tolerance_secs,
            });
        }
        if delta < -tolerance {
            return Err(VerifyError::TimestampInFuture {
                timestamp,
                ahead: -delta,
                tolerance: tolerance_secs,
            });
        }

        // Decode every signature once; skip other versions and undecodable v1 entries.
        let mut v1: Vec<[u8; 32]> = Vec::new();
        let mut v1a: Vec<[u8; SIGNATURE_BYTES]> = Vec::new();
        let mut v1a_malformed = false;
        for entry in raw_sig.split(|b| *b == b' ').filter(|e| !e.is_empty()) {
            if let Some(b64) = entry.strip_prefix(b"v1,") {
                let mut out = [0u8; 33];
                if let Ok(32) = STANDARD.decode_slice(b64, &mut out) {
                    let mut sig = [0u8; 32];
                    sig.copy_from_slice(&out[..32]);
                    v1.push(sig);
                }
            } else if let Some(b64) = entry.strip_prefix(b"v1a,") {
                let mut out = [0u8; SIGNATURE_BYTES + 1];
                match STANDARD.decode_slice(b64, &mut out) {
                    Ok(SIGNATURE_BYTES) => {
                        let mut sig = [0u8; SIGNATURE_BYTES];
                        sig.copy_from_slice(&out[..SIGNATURE_BYTES]);
                        v1a.push(sig);
                    }
                    _ => v1a_malformed = true,
                }
            }
        }
        if v1.is_empty() && v1a.is_empty() {
            return Err(if v1a_malformed {
                malformed_v1a()
            } else {
                VerifyError::NoSupportedSignature
            });
        }

        let (has_v1, has_v1a) = self.verifying_schemes(now);
        if !has_v1 && !has_v1a {
            return Err(VerifyError::NoActiveKey);
        }
        if !has_v1 && v1a.is_empty() {
            return Err(if v1a_malformed {
                malformed_v1a()
            } else {
                VerifyError::WrongScheme {
                    found: Scheme::V1.version(),
                    expected: Scheme::V1a.version(),
                }
            });
        }
        if !has_v1a && v1.is_empty() {
            return Err(VerifyError::WrongScheme {
                found: Scheme::V1a.version(),
                expected: Scheme::V1.version(),
            });
        }

        let mut matched: Option<&KeyId> = None;
        let mut content: Option<Vec<u8>> = None;
        for key in self.active_at(now) {
            match &key.material {
                KeyMaterial::Hmac(secret) if !v1.is_empty() => {
                    let expected = mac_for(secret, raw_id, raw_ts, body)
                        .finalize()
                        .into_bytes();
                    // Compare against every candidate without stopping early.
                    let mut hit = subtle::Choice::from(0);
                    for cand in &v1 {
                        hit |= expected.as_slice().ct_eq(cand);
                    }
                    if bool::from(hit) && matched.is_none() {
                        matched = Some(&key.id);
                    }
                }
                // Public-key checks hold no secret: stopping at the first match leaks nothing.
                KeyMaterial::Ed25519Public(public) if !v1a.is_empty() && matched.is_none() => {
                    let content =
                        content.get_or_insert_with(|| signed_content(raw_id, raw_ts, body));
                    if v1a.iter().any(|sig| public.verify(content, sig)) {
                        matched = Some(&key.id);
                    }
                }
                _ => {}
            }
        }
        match matched {
            Some(key_id) => Ok(Verified {
                id,
                timestamp,
                key_id: key_id.clone(),
            }),
            None if v1a_malformed => Err(malformed_v1a()),
            None => Err(VerifyError::SignatureMismatch),
        }
    }
}

fn malformed_v1a() -> VerifyError {
    VerifyError::MalformedHeader {
        name: HEADER_SIGNATURE,
        reason: "a v1a signature must be the base64 of 64 bytes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1614265330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn twenty_one_rotations_in_one_grace_period_never_overflow_the_header() {
        let now = 1_700_000_000;
        let id = MessageId::parse("msg_rot").unwrap();
        let mut ring = Keyring::new();
        let mut newest = None;
        // The first secret and 21 rotations, all still in their grace period.
        for n in 0..=21 {
            let secret = Secret::generate();
            let kid = KeyId::parse(format!("key_{n}")).unwrap();
            newest = Some((kid.clone(), secret.clone()));
            ring.insert(kid, secret, Some(now + 86_400));
        }
        assert_eq!(ring.active_at(now).count(), 22);
        let signed = ring.sign(&id, now, b"{}").unwrap();
        assert!(
            signed.signature.len() <= MAX_SIGNATURE_HEADER_LEN,
            "{} bytes",
            signed.signature.len()
        );
        assert_eq!(signed.signature.split(' ').count(), 21);
        // The receiver's own check accepts it, with the newest key alone or the whole ring.
        let (kid, secret) = newest.unwrap();
        let sig = signed.signature.clone();
        let headers = RawHeaders::new(id.as_str(), "1700000000", &sig);
        let receiver = Keyring::single(kid.clone(), secret);
        assert_eq!(
            receiver
                .verify_at(&headers, b"{}", now, 300)
                .unwrap()
                .key_id,
            kid
        );
        assert!(ring.verify_at(&headers, b"{}", now, 300).is_ok());
        // The oldest key is the one left out.
        assert!(
            !signed.signature.starts_with(&sign(
                ring.get(&KeyId::parse("key_0").unwrap())
                    .unwrap()
                    .secret()
                    .unwrap(),
                id.as_str(),
                now,
                b"{}"
            ))
        );
    }

    fn ring() -> Keyring {
        Keyring::single(
            KeyId::parse("key_1").unwrap(),
            Secret::parse(VECTOR_SECRET).unwrap(),
        )
    }

    #[test]
    fn published_vector_signs_and_verifies() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(sign(&secret, VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
        let h = RawHeaders::new(VECTOR_ID, "1614265330", VECTOR_SIG);
        ring().verify_at(&h, VECTOR_BODY, VECTOR_TS, 300).unwrap();
    }

    #[test]
    fn tolerance_edges_both_ways() {
        let h = RawHeaders::new(VECTOR_ID, "1614265330", VECTOR_SIG);
        let r = ring();
        assert!(r.verify_at(&h, VECTOR_BODY, VECTOR_TS + 300, 300).is_ok());
        assert!(r.verify_at(&h, VECTOR_BODY, VECTOR_TS - 300, 300).is_ok());
        assert!(matches!(
            r.verify_at(&h, VECTOR_BODY, VECTOR_TS + 301, 300),
            Err(VerifyError::TimestampTooOld { age: 301, .. })
        ));
        assert!(matches!(
            r.verify_at(&h, VECTOR_BODY, VECTOR_TS - 301, 300),
            Err(VerifyError::TimestampInFuture { ahead: 301, .. })
        ));
    }

    #[test]
    fn several_signatures_and_unknown_versions() {
        let h = RawHeaders::new(
            VECTOR_ID,
            "1614265330",
            "v2,abc v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        ring().verify_at(&h, VECTOR_BODY, VECTOR_TS, 300).unwrap();
        let only_v2 = RawHeaders::new(VECTOR_ID, "1614265330", "v2,abc");
        assert_eq!(
            ring().verify_at(&only_v2, VECTOR_BODY, VECTOR_TS, 300),
            Err(VerifyError::NoSupportedSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let r = ring();
        let mut h = RawHeaders::new(VECTOR_ID, "1614265330", VECTOR_SIG);
        h.signature = None;
        assert_eq!(
            r.verify_at(&h, VECTOR_BODY, VECTOR_TS, 300),
            Err(VerifyError::MissingHeader(HEADER_SIGNATURE))
        );
        let h = RawHeaders::new(VECTOR_ID, "-5", VECTOR_SIG);
        assert!(matches!(
            r.verify_at(&h, VECTOR_BODY, VECTOR_TS, 300),
            Err(VerifyError::MalformedHeader {
                name: HEADER_TIMESTAMP,
                ..
            })
        ));
        let h = RawHeaders::new("bad id", "1614265330", VECTOR_SIG);
        assert!(matches!(
            r.verify_at(&h, VECTOR_BODY, VECTOR_TS, 300),
            Err(VerifyError::MalformedHeader {
                name: HEADER_ID,
                ..
            })
        ));
    }

    #[test]
    fn rotation_signs_with_both_and_either_verifies() {
        let old = Secret::generate();
        let new = Secret::generate();
        let mut sender = Keyring::new();
        sender.insert(KeyId::parse("key_old").unwrap(), old.clone(), Some(1000));
        sender.insert(KeyId::parse("key_new").unwrap(), new.clone(), None);
        let id = MessageId::parse("msg_1").unwrap();
        let signed = sender.sign(&id, 900, b"body").unwrap();
        assert_eq!(signed.signature.split(' ').count(), 2);
        let ts = signed.timestamp.to_string();
        let h = RawHeaders::new(id.as_str(), &ts, &signed.signature);
        let only_old = Keyring::single(KeyId::parse("key_old").unwrap(), old);
        let only_new = Keyring::single(KeyId::parse("key_new").unwrap(), new);
        assert_eq!(
            only_old
                .verify_at(&h, b"body", 900, 300)
                .unwrap()
                .key_id
                .as_str(),
            "key_old"
        );
        assert_eq!(
            only_new
                .verify_at(&h, b"body", 900, 300)
                .unwrap()
                .key_id
                .as_str(),
            "key_new"
        );
        // After the grace period the sender signs with the new key only.
        let later = sender.sign(&id, 1001, b"body").unwrap();
        assert_eq!(later.signature.split(' ').count(), 1);
    }

    #[test]
    fn non_utf8_bodies_are_fine() {
        let r = ring();
        let body = [0xff, 0x00, 0xfe, 0x80];
        let id = MessageId::parse("msg_bin").unwrap();
        let s = r.sign(&id, 5000, &body).unwrap();
        let ts = s.timestamp.to_string();
        let h = RawHeaders::new(id.as_str(), &ts, &s.signature);
        r.verify_at(&h, &body, 5000, 300).unwrap();
        assert_eq!(
            r.verify_at(&h, &[0xff, 0x00, 0xfe, 0x81], 5000, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    fn ed_pair() -> (SigningKey, Keyring, Keyring) {
        let own = SigningKey::generate();
        let kid = KeyId::parse("key_ed").unwrap();
        (
            own.clone(),
            Keyring::single(kid.clone(), own.clone()),
            Keyring::single(kid, own.public_key()),
        )
    }

    #[test]
    fn v1a_signs_and_only_the_public_key_verifies() {
        let (_, sender, receiver) = ed_pair();
        let id = MessageId::parse("msg_ed").unwrap();
        let s = sender.sign(&id, 5000, b"body").unwrap();
        assert!(s.signature.starts_with("v1a,"));
        let h = RawHeaders::new(id.as_str(), "5000", &s.signature);
        assert_eq!(
            receiver
                .verify_at(&h, b"body", 5000, 300)
                .unwrap()
                .key_id
                .as_str(),
            "key_ed"
        );
        assert_eq!(
            receiver.verify_at(&h, b"bodY", 5000, 300),
            Err(VerifyError::SignatureMismatch)
        );
        // The sender's own secret key never verifies (no reflection of its own messages).
        assert_eq!(
            sender.verify_at(&h, b"body", 5000, 300),
            Err(VerifyError::NoActiveKey)
        );
        // Another key pair's public key does not verify it.
        let (_, _, stranger) = ed_pair();
        assert_eq!(
            stranger.verify_at(&h, b"body", 5000, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn schemes_that_do_not_meet_get_typed_errors() {
        let (_, sender, receiver) = ed_pair();
        let id = MessageId::parse("msg_x").unwrap();
        let v1a = sender.sign(&id, 5000, b"b").unwrap().signature;
        let v1 = ring().sign(&id, 5000, b"b").unwrap().signature;
        let h = RawHeaders::new(id.as_str(), "5000", &v1a);
        assert_eq!(
            ring().verify_at(&h, b"b", 5000, 300),
            Err(VerifyError::WrongScheme {
                found: "v1a",
                expected: "v1"
            })
        );
        let h = RawHeaders::new(id.as_str(), "5000", &v1);
        assert_eq!(
            receiver.verify_at(&h, b"b", 5000, 300),
            Err(VerifyError::WrongScheme {
                found: "v1",
                expected: "v1a"
            })
        );
        // Wrong-length v1a entries are malformed, unless another entry matches.
        for bad in [
            "v1a,AAAA",
            "v1a,!!!",
            "v1a,",
            &format!("v1a,{}", STANDARD.encode([0u8; 65])),
        ] {
            let h = RawHeaders::new(id.as_str(), "5000", bad);
            for r in [&receiver, &ring()] {
                assert!(
                    matches!(
                        r.verify_at(&h, b"b", 5000, 300),
                        Err(VerifyError::MalformedHeader {
                            name: HEADER_SIGNATURE,
                            ..
                        })
                    ),
                    "{bad}"
                );
            }
            let both = format!("{bad} {v1a}");
            let h = RawHeaders::new(id.as_str(), "5000", &both);
            assert!(receiver.verify_at(&h, b"b", 5000, 300).is_ok());
        }
        // A well-formed signature that is not a valid ed25519 encoding is a mismatch, not a panic.
        let junk = format!("v1a,{}", STANDARD.encode([0xffu8; 64]));
        let h = RawHeaders::new(id.as_str(), "5000", &junk);
        assert_eq!(
            receiver.verify_at(&h, b"b", 5000, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn a_migration_ring_signs_both_and_each_side_accepts_its_own() {
        let (own, _, _) = ed_pair();
        let secret = Secret::generate();
        let mut sender = Keyring::new();
        sender.insert(
            KeyId::parse("key_hmac").unwrap(),
            secret.clone(),
            Some(10_000),
        );
        sender.insert(KeyId::parse("key_ed").unwrap(), own.clone(), None);
        let id = MessageId::parse("msg_mig").unwrap();
        let s = sender.sign(&id, 5000, b"b").unwrap();
        let entries: Vec<_> = s.signature.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].starts_with("v1,") && entries[1].starts_with("v1a,"));
        let h = RawHeaders::new(id.as_str(), "5000", &s.signature);
        let old_receiver = Keyring::single(KeyId::parse("key_hmac").unwrap(), secret);
        let new_receiver = Keyring::single(KeyId::parse("key_ed").unwrap(), own.public_key());
        assert_eq!(
            old_receiver
                .verify_at(&h, b"b", 5000, 300)
                .unwrap()
                .key_id
                .as_str(),
            "key_hmac"
        );
        assert_eq!(
            new_receiver
                .verify_at(&h, b"b", 5000, 300)
                .unwrap()
                .key_id
                .as_str(),
            "key_ed"
        );
        // After the HMAC key's grace period only the v1a entry is written.
        let later = sender.sign(&id, 10_001, b"b").unwrap();
        assert!(later.signature.starts_with("v1a,") && !later.signature.contains(' '));
    }

    #[test]
    fn eleven_v1a_keys_fit_the_header() {
        let mut ring = Keyring::new();
        for n in 0..15 {
            ring.insert(
                KeyId::parse(format!("key_{n}")).unwrap(),
                SigningKey::generate(),
                None,
            );
        }
        let s = ring
            .sign(&MessageId::parse("msg_1").unwrap(), 1, b"")
            .unwrap();
        assert!(s.signature.len() <= MAX_SIGNATURE_HEADER_LEN);
        assert_eq!(s.signature.split(' ').count(), 11);
    }
}
