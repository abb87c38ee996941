//! ed25519 keys for Standard Webhooks `v1a` signatures and EdDSA link tokens.
//!
//! With `v1a` no party holds a key that can forge another's messages: each side signs with its
//! own [`SigningKey`] (`whsk_…`, never leaves its owner) and checks its peer's messages with the
//! peer's [`PublicKey`] (`whpk_…`, safe to publish).
//!
//! Text forms, as in the Standard Webhooks specification: `whpk_` followed by the standard
//! base64 of the 32-byte public key, and `whsk_` followed by the standard base64 of the 64-byte
//! key pair (the 32-byte secret seed, then its public key, the form libsodium and Svix write).
//! A `whsk_` holding the 32-byte seed alone is accepted too. Keys are checked when parsed: a
//! public key must be a valid curve point of large order, and the public half of a 64-byte
//! secret key must belong to its seed.
//!
//! ```
//! use diax_sdk::ed25519::{PublicKey, SigningKey};
//!
//! let key = SigningKey::generate();
//! let public = key.public_key();
//! assert!(public.to_string().starts_with("whpk_"));
//! assert_eq!(format!("{key:?}"), "SigningKey(whsk_[redacted], whpk_…)".replace("whpk_…", &public.to_string()));
//!
//! // Both forms survive a round trip through text.
//! let again = SigningKey::parse(&key.expose())?;
//! assert_eq!(again.public_key(), public);
//! assert_eq!(PublicKey::parse(&public.to_string())?, public);
//! # Ok::<(), diax_sdk::ed25519::KeyError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Bytes in an ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Bytes in an ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Why a string is not a usable `whsk_` or `whpk_` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The string is empty (or holds only the prefix).
    #[error("key is empty")]
    Empty,
    /// The string does not start with the expected prefix.
    #[error("key must start with {0:?}")]
    MissingPrefix(&'static str),
    /// The part after the prefix is not standard base64.
    #[error("key is not valid base64 after the prefix")]
    NotBase64,
    /// The decoded key has the wrong length.
    #[error("key decodes to {found} bytes; expected {expected}")]
    WrongLength {
        /// Bytes found.
        found: usize,
        /// What the key type needs (`"32"` or `"32 or 64"`).
        expected: &'static str,
    },
    /// The public key is not a point of the curve, or one of small order (which would let
    /// anybody forge signatures).
    #[error("public key is not a valid ed25519 point of large order")]
    InvalidPublicKey,
    /// The public half of a 64-byte secret key does not belong to its seed.
    #[error("the public half of the secret key does not match its seed")]
    Mismatch,
}

/// Decodes `prefix<base64>` into at most `max` bytes without allocating on hostile input.
fn decode_prefixed(
    text: &str,
    prefix: &'static str,
    max: usize,
    out: &mut [u8; 65],
) -> Result<usize, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let b64 = text
        .strip_prefix(prefix)
        .ok_or(KeyError::MissingPrefix(prefix))?;
    if b64.is_empty() {
        return Err(KeyError::Empty);
    }
    // 64 bytes encode to 88 characters; anything much longer is refused before decoding.
    if b64.len() > 100 {
        return Err(KeyError::WrongLength {
            found: b64.len() * 3 / 4,
            expected: if max == 64 { "32 or 64" } else { "32" },
        });
    }
    let n = STANDARD
        .decode_slice(b64, &mut out[..])
        .map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => KeyError::WrongLength {
                found: b64.len() * 3 / 4,
                expected: if max == 64 { "32 or 64" } else { "32" },
            },
            base64::DecodeSliceError::DecodeError(_) => KeyError::NotBase64,
        })?;
    Ok(n)
}

/// A secret ed25519 key (`whsk_…`): signs `v1a` messages and EdDSA link tokens.
///
/// `Debug` and `Display` never show the secret; [`SigningKey::expose`] gives the text form
/// when it must be stored. The key material is wiped when dropped. There is no `PartialEq`;
/// compare [`public_key`](Self::public_key)s instead.
///
/// ```
/// use diax_sdk::ed25519::{KeyError, SigningKey};
///
/// let key = SigningKey::generate();
/// assert_eq!(key.to_string(), "whsk_[redacted]");
/// assert!(key.expose().starts_with("whsk_"));
/// assert_eq!(SigningKey::parse("whsk_c2hvcnQ=").unwrap_err(), KeyError::WrongLength { found: 5, expected: "32 or 64" });
/// assert!(matches!(SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(KeyError::MissingPrefix("whsk_"))));
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// The text prefix of every secret key.
    pub const PREFIX: &'static str = "whsk_";

    /// A new key from the operating system's CSPRNG.
    #[must_use]
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed[..]);
        let key = Self::from_seed(&seed);
        seed.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&seed);
        key
    }

    /// The key whose 32-byte secret seed is `seed` (RFC 8032).
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// Parses `whsk_<base64>` of the 64-byte key pair or the 32-byte seed.
    ///
    /// # Errors
    /// A [`KeyError`] saying what is wrong; the error never contains the key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut buf = [0u8; 65];
        let n = decode_prefixed(text, Self::PREFIX, 64, &mut buf)?;
        let result = match n {
            32 => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&buf[..32]);
                let key = Self::from_seed(&seed);
                seed.iter_mut().for_each(|b| *b = 0);
                Ok(key)
            }
            64 => {
                let mut pair = [0u8; 64];
                pair.copy_from_slice(&buf[..64]);
                let key = ed25519_dalek::SigningKey::from_keypair_bytes(&pair)
                    .map(|inner| Self { inner })
                    .map_err(|_| KeyError::Mismatch);
                pair.iter_mut().for_each(|b| *b = 0);
                key
            }
            0 => Err(KeyError::Empty),
            found => Err(KeyError::WrongLength {
                found,
                expected: "32 or 64",
            }),
        };
        buf.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&buf);
        result
    }

    /// The key's text form, `whsk_` and the base64 of the 64-byte key pair. Handle with care.
    #[must_use]
    pub fn expose(&self) -> String {
        let mut pair = self.inner.to_keypair_bytes();
        let text = format!("{}{}", Self::PREFIX, STANDARD.encode(pair));
        pair.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&pair);
        text
    }

    /// The public key to hand to peers.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.verifying_key(),
        }
    }

    /// Signs `message` (deterministic, RFC 8032).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        use ed25519_dalek::Signer as _;
        self.inner.sign(message).to_bytes()
    }

    /// The PKCS#8 v1 DER form, which is what `jsonwebtoken` signs EdDSA tokens with.
    pub(crate) fn pkcs8_der(&self) -> Result<Vec<u8>, String> {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        self.inner
            .to_pkcs8_der()
            .map(|doc| doc.as_bytes().to_vec())
            .map_err(|e| e.to_string())
    }
}

impl FromStr for SigningKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(whsk_[redacted], {})", self.public_key())
    }
}

impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsk_[redacted]")
    }
}

/// A public ed25519 key (`whpk_…`): verifies a peer's `v1a` messages and EdDSA link tokens.
///
/// Public keys are not secret, so `Debug` and `Display` show the text form.
///
/// ```
/// use diax_sdk::ed25519::{KeyError, PublicKey};
///
/// let text = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
/// let key: PublicKey = text.parse()?;
/// assert_eq!(key.to_string(), text);
/// // The identity point has small order: anybody could forge for it.
/// assert_eq!(
///     "whpk_AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse::<PublicKey>(),
///     Err(KeyError::InvalidPublicKey)
/// );
/// # Ok::<(), KeyError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey {
    inner: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// The text prefix of every public key.
    pub const PREFIX: &'static str = "whpk_";

    /// Parses `whpk_<base64>` of 32 bytes.
    ///
    /// # Errors
    /// A [`KeyError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut buf = [0u8; 65];
        let n = decode_prefixed(text, Self::PREFIX, 32, &mut buf)?;
        if n != PUBLIC_KEY_BYTES {
            return Err(KeyError::WrongLength {
                found: n,
                expected: "32",
            });
        }
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&buf[..32]);
        Self::from_bytes(&raw)
    }

    /// A public key from its 32 raw bytes.
    ///
    /// # Errors
    /// [`KeyError::InvalidPublicKey`] for bytes that are not a point of large order.
    pub fn from_bytes(raw: &[u8; PUBLIC_KEY_BYTES]) -> Result<Self, KeyError> {
        let inner =
            ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|_| KeyError::InvalidPublicKey)?;
        if inner.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self { inner })
    }

    /// The 32 raw bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.inner.to_bytes()
    }

    /// Whether `signature` is this key's signature of `message`, under the strict rules of
    /// RFC 8032 (no small-order components, canonical encodings).
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.inner.verify_strict(message, &sig).is_ok()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            Self::PREFIX,
            STANDARD.encode(self.inner.as_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, test 1.
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    #[test]
    fn rfc8032_vector_signs_and_verifies() {
        let key = SigningKey::from_seed(&hex32(RFC_SEED));
        assert_eq!(key.public_key().to_bytes(), hex32(RFC_PUBLIC));
        let sig = key.sign(b"");
        assert_eq!(hex::encode(sig), RFC_SIG);
        assert!(key.public_key().verify(b"", &sig));
        assert!(!key.public_key().verify(b"x", &sig));
    }

    #[test]
    fn both_secret_forms_parse_and_bad_ones_are_typed() {
        let key = SigningKey::from_seed(&hex32(RFC_SEED));
        let seed_only = format!("whsk_{}", STANDARD.encode(hex32(RFC_SEED)));
        assert_eq!(
            SigningKey::parse(&seed_only).unwrap().public_key(),
            key.public_key()
        );
        assert_eq!(
            SigningKey::parse(&key.expose()).unwrap().public_key(),
            key.public_key()
        );
        // A key pair whose public half belongs to another seed.
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&hex32(RFC_SEED));
        pair[32..].copy_from_slice(&SigningKey::generate().public_key().to_bytes());
        let text = format!("whsk_{}", STANDARD.encode(pair));
        assert_eq!(SigningKey::parse(&text).unwrap_err(), KeyError::Mismatch);
        assert_eq!(SigningKey::parse("").unwrap_err(), KeyError::Empty);
        assert_eq!(SigningKey::parse("whsk_").unwrap_err(), KeyError::Empty);
        assert_eq!(
            SigningKey::parse("whsk_!!").unwrap_err(),
            KeyError::NotBase64
        );
        assert!(matches!(
            SigningKey::parse(&format!("whsk_{}", STANDARD.encode([1u8; 48]))),
            Err(KeyError::WrongLength { found: 48, .. })
        ));
        assert!(matches!(
            SigningKey::parse(&format!("whsk_{}", "A".repeat(10_000))),
            Err(KeyError::WrongLength { .. })
        ));
        assert!(matches!(
            SigningKey::parse(&format!("whsk_{}", STANDARD.encode([1u8; 65]))),
            Err(KeyError::WrongLength { .. })
        ));
    }

    #[test]
    fn public_keys_are_checked() {
        let public = SigningKey::generate().public_key();
        assert_eq!(PublicKey::parse(&public.to_string()).unwrap(), public);
        assert!(matches!(
            PublicKey::parse(&format!("whpk_{}", STANDARD.encode([9u8; 31]))),
            Err(KeyError::WrongLength { found: 31, .. })
        ));
        assert!(matches!(
            PublicKey::parse(&format!("whpk_{}", STANDARD.encode([9u8; 64]))),
            Err(KeyError::WrongLength { .. })
        ));
        assert_eq!(
            PublicKey::parse("whsk_AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(KeyError::MissingPrefix("whpk_"))
        );
        // Every small-order point is refused.
        for raw in [[0u8; 32], {
            let mut p = [0u8; 32];
            p[0] = 1;
            p
        }] {
            assert_eq!(PublicKey::from_bytes(&raw), Err(KeyError::InvalidPublicKey));
        }
    }

    #[test]
    fn secrets_never_print() {
        let key = SigningKey::generate();
        let text = key.expose();
        let b64 = &text[5..];
        assert!(!format!("{key:?}").contains(b64));
        assert!(!format!("{key}").contains(b64));
        assert!(!format!("{key:?}").contains(&b64[..20]));
    }
}
