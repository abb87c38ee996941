//! Shared secrets (`whsec_…`), key material of either scheme, and the keyring that holds
//! several keys during a rotation or a migration from `v1` (HMAC) to `v1a` (ed25519).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::ed25519::{PublicKey, SigningKey};
use crate::ids::KeyId;

/// Fewest secret bytes accepted: anything shorter is too weak for HMAC-SHA256.
pub const MIN_SECRET_BYTES: usize = 16;
/// Most secret bytes accepted.
pub const MAX_SECRET_BYTES: usize = 64;
/// Bytes of entropy in a secret made by [`Secret::generate`].
pub const GENERATED_SECRET_BYTES: usize = 32;

/// Why a string is not a usable `whsec_` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The string is empty.
    #[error("secret is empty")]
    Empty,
    /// The string does not start with `whsec_`.
    #[error("secret must start with \"whsec_\"")]
    MissingPrefix,
    /// The part after `whsec_` is not standard base64.
    #[error("secret is not valid base64 after \"whsec_\"")]
    NotBase64,
    /// The decoded secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("secret decodes to {0} bytes; at least 16 are required")]
    TooShort(usize),
    /// The decoded secret is longer than [`MAX_SECRET_BYTES`].
    #[error("secret decodes to {0} bytes; at most 64 are allowed")]
    TooLong(usize),
}

/// A shared secret used to sign and verify messages (HMAC-SHA256) and link tokens (HS256).
///
/// Its text form is `whsec_` followed by the standard base64 of the secret bytes, as in the
/// Standard Webhooks specification. `Debug` and `Display` never show the secret; call
/// [`Secret::expose`] when you really need the text (to store it or hand it to a peer).
/// It deliberately has no `PartialEq`, so it cannot be compared by accident in variable time.
///
/// ```
/// use diax_sdk::Secret;
///
/// let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// assert_eq!(format!("{secret}"), "whsec_[redacted]");
/// assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
/// assert!("whsec_c2hvcnQ=".parse::<Secret>().is_err()); // 5 bytes: too short
/// # Ok::<(), diax_sdk::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    bytes: Box<[u8]>,
}

impl Secret {
    /// The text prefix of every secret.
    pub const PREFIX: &'static str = "whsec_";

    /// A new random secret of [`GENERATED_SECRET_BYTES`] bytes from the operating system's CSPRNG.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_SECRET_BYTES];
        rand::fill(&mut bytes[..]);
        Self {
            bytes: bytes.into_boxed_slice(),
        }
    }

    /// A secret from raw bytes.
    ///
    /// # Errors
    /// [`SecretError::TooShort`] / [`SecretError::TooLong`] outside 16–64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        match bytes.len() {
            0 => Err(SecretError::Empty),
            n if n < MIN_SECRET_BYTES => Err(SecretError::TooShort(n)),
            n if n > MAX_SECRET_BYTES => Err(SecretError::TooLong(n)),
            _ => Ok(Self {
                bytes: bytes.into(),
            }),
        }
    }

    /// Parses `whsec_<base64>`.
    ///
    /// # Errors
    /// A [`SecretError`] saying what is wrong; the error never contains the secret.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let b64 = text
            .strip_prefix(Self::PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        if b64.is_empty() {
            return Err(SecretError::Empty);
        }
        // 64 bytes encode to 88 characters; refuse anything longer before decoding.
        if b64.len() > 128 {
            return Err(SecretError::TooLong(b64.len() * 3 / 4));
        }
        let bytes = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        Self::from_bytes(&bytes)
    }

    /// The secret's text form, `whsec_<base64>`. Handle with care.
    #[must_use]
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(&self.bytes))
    }

    /// The raw secret bytes: the HMAC key for signatures and the HS256 key for link tokens.
    #[must_use]
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl FromStr for Secret {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, SecretError> {
        Self::parse(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_[redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the key material before the allocation is freed.
        self.bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.bytes);
    }
}

/// The two signature schemes of Standard Webhooks. On the wire (registration) they are
/// named `hmac-sha256` and `ed25519`.
///
/// ```
/// use diax_sdk::secret::Scheme;
///
/// assert_eq!(Scheme::V1a.version(), "v1a");
/// assert_eq!("ed25519".parse::<Scheme>(), Ok(Scheme::V1a));
/// assert_eq!(Scheme::default(), Scheme::V1);
/// assert_eq!(Scheme::V1.to_string(), "hmac-sha256");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scheme {
    /// `v1`: HMAC-SHA256 with a secret both sides share (`whsec_`), HS256 link tokens.
    #[default]
    #[serde(rename = "hmac-sha256")]
    V1,
    /// `v1a`: ed25519; each side signs with its own `whsk_` and verifies the peer's `whpk_`;
    /// EdDSA link tokens.
    #[serde(rename = "ed25519")]
    V1a,
}

impl Scheme {
    /// The version tag of its `webhook-signature` entries: `v1` or `v1a`.
    #[must_use]
    pub fn version(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1a => "v1a",
        }
    }

    /// Its name in registration messages: `hmac-sha256` or `ed25519`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "hmac-sha256",
            Self::V1a => "ed25519",
        }
    }

    /// Whether this is [`Scheme::V1`] (for `skip_serializing_if`).
    #[must_use]
    pub fn is_v1(&self) -> bool {
        *self == Self::V1
    }

    /// The JWS `alg` of link tokens signed under it: `HS256` or `EdDSA`.
    #[must_use]
    pub fn jwt_alg(self) -> &'static str {
        match self {
            Self::V1 => "HS256",
            Self::V1a => "EdDSA",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = UnknownScheme;
    /// Accepts the registration names (`hmac-sha256`, `ed25519`) and the version tags
    /// (`v1`, `v1a`).
    fn from_str(s: &str) -> Result<Self, UnknownScheme> {
        match s {
            "hmac-sha256" | "v1" => Ok(Self::V1),
            "ed25519" | "v1a" => Ok(Self::V1a),
            _ => Err(UnknownScheme),
        }
    }
}

/// A scheme name other than `hmac-sha256`, `ed25519`, `v1` or `v1a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature scheme; expected hmac-sha256 (v1) or ed25519 (v1a)")]
pub struct UnknownScheme;

/// What one key in a [`Keyring`] is, and so what it can do.
///
/// | variant | signs | verifies |
/// |---|---|---|
/// | [`Hmac`](Self::Hmac) | `v1` entries, HS256 tokens | `v1` entries, HS256 tokens |
/// | [`Ed25519`](Self::Ed25519) (own secret key) | `v1a` entries, EdDSA tokens | nothing |
/// | [`Ed25519Public`](Self::Ed25519Public) (a peer's key) | nothing | `v1a` entries, EdDSA tokens |
///
/// An own ed25519 secret key deliberately verifies nothing: a message signed with it came
/// from this party, never from the peer, so accepting it would let a captured outgoing
/// message be reflected back.
///
/// ```
/// use diax_sdk::ed25519::SigningKey;
/// use diax_sdk::secret::{KeyMaterial, Scheme};
/// use diax_sdk::Secret;
///
/// let hmac = KeyMaterial::from(Secret::generate());
/// let own = KeyMaterial::from(SigningKey::generate());
/// assert!(hmac.can_sign() && hmac.can_verify());
/// assert!(own.can_sign() && !own.can_verify());
/// assert_eq!(own.scheme(), Scheme::V1a);
/// assert_eq!(format!("{own:?}").contains("whsk_[redacted]"), true);
/// ```
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// A shared `whsec_` secret.
    Hmac(Secret),
    /// This party's own `whsk_` secret key.
    Ed25519(SigningKey),
    /// A peer's `whpk_` public key.
    Ed25519Public(PublicKey),
}

impl KeyMaterial {
    /// The scheme the key belongs to.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Hmac(_) => Scheme::V1,
            Self::Ed25519(_) | Self::Ed25519Public(_) => Scheme::V1a,
        }
    }

    /// Whether the key signs (an HMAC secret or an own ed25519 key).
    #[must_use]
    pub fn can_sign(&self) -> bool {
        !matches!(self, Self::Ed25519Public(_))
    }

    /// Whether the key verifies a peer's signatures (an HMAC secret or a peer's public key).
    #[must_use]
    pub fn can_verify(&self) -> bool {
        !matches!(self, Self::Ed25519(_))
    }

    /// The HMAC secret, if this is one.
    #[must_use]
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Self::Hmac(secret) => Some(secret),
            _ => None,
        }
    }

    /// The text form: `whsec_…`, `whsk_…` (both secret: handle with care) or `whpk_…`.
    #[must_use]
    pub fn expose(&self) -> String {
        match self {
            Self::Hmac(secret) => secret.expose(),
            Self::Ed25519(key) => key.expose(),
            Self::Ed25519Public(key) => key.to_string(),
        }
    }

    /// Parses any of the three text forms, told apart by their prefix.
    ///
    /// ```
    /// use diax_sdk::secret::{KeyMaterial, Scheme};
    ///
    /// let k = KeyMaterial::parse("whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")?;
    /// assert_eq!(k.scheme(), Scheme::V1a);
    /// assert!(KeyMaterial::parse("whxx_AAAA").is_err());
    /// # Ok::<(), diax_sdk::secret::KeyMaterialError>(())
    /// ```
    ///
    /// # Errors
    /// [`KeyMaterialError`] naming the form that was tried and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, KeyMaterialError> {
        let t = text.trim();
        if t.starts_with(SigningKey::PREFIX) {
            Ok(Self::Ed25519(SigningKey::parse(t)?))
        } else if t.starts_with(PublicKey::PREFIX) {
            Ok(Self::Ed25519Public(PublicKey::parse(t)?))
        } else {
            Ok(Self::Hmac(Secret::parse(t)?))
        }
    }
}

/// Why a string is none of `whsec_…`, `whsk_…` and `whpk_…`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyMaterialError {
    /// Not a usable `whsec_` secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Not a usable `whsk_` or `whpk_` key.
    #[error(transparent)]
    Key(#[from] crate::ed25519::KeyError),
}

impl From<Secret> for KeyMaterial {
    fn from(secret: Secret) -> Self {
        Self::Hmac(secret)
    }
}

impl From<SigningKey> for KeyMaterial {
    fn from(key: SigningKey) -> Self {
        Self::Ed25519(key)
    }
}

impl From<PublicKey> for KeyMaterial {
    fn from(key: PublicKey) -> Self {
        Self::Ed25519Public(key)
    }
}

/// One key in a [`Keyring`], with the window in which it is valid.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key's id (`kid` in link tokens).
    pub id: KeyId,
    /// The key itself.
    pub material: KeyMaterial,
    /// Unix time (seconds) after which the key is no longer accepted or used; `None` = no end.
    pub not_after: Option<i64>,
}

impl Key {
    /// Whether the key is valid at `now` (Unix seconds).
    #[must_use]
    pub fn is_active_at(&self, now: i64) -> bool {
        self.not_after.is_none_or(|end| now <= end)
    }

    /// The HMAC secret, if the key is one.
    #[must_use]
    pub fn secret(&self) -> Option<&Secret> {
        self.material.secret()
    }
}

/// The keys one party holds for one peer, by key id.
///
/// During a rotation the keyring holds the new key and the old one (with a `not_after`
/// at the end of the grace period): senders sign with every active key that signs, receivers
/// accept a signature made with any active key that verifies. With `v1` (HMAC) both sides hold
/// the same secrets; with `v1a` (ed25519) each side holds its own [`SigningKey`] and the
/// peer's [`PublicKey`]; during a migration from one to the other the ring holds both kinds.
///
/// ```
/// use diax_sdk::{KeyId, Keyring, Secret};
///
/// let mut ring = Keyring::new();
/// ring.insert(KeyId::parse("key_old")?, Secret::generate(), Some(1_700_000_600));
/// ring.insert(KeyId::parse("key_new")?, Secret::generate(), None);
/// assert_eq!(ring.active_at(1_700_000_000).count(), 2);
/// assert_eq!(ring.active_at(1_700_001_000).count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// An empty keyring.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A keyring with one key that never expires.
    #[must_use]
    pub fn single(id: KeyId, key: impl Into<KeyMaterial>) -> Self {
        let mut ring = Self::new();
        ring.insert(id, key, None);
        ring
    }

    /// Adds a key (a [`Secret`], a [`SigningKey`], a [`PublicKey`] or a [`KeyMaterial`]),
    /// replacing any key with the same id. The newest signing key inserted is the
    /// [`primary`](Self::primary) one.
    pub fn insert(&mut self, id: KeyId, key: impl Into<KeyMaterial>, not_after: Option<i64>) {
        self.keys.retain(|k| k.id != id);
        self.keys.push(Key {
            id,
            material: key.into(),
            not_after,
        });
    }

    /// Sets when a key stops being valid (the end of a rotation's grace period).
    /// Returns `false` when no key has that id.
    pub fn expire(&mut self, id: &KeyId, not_after: i64) -> bool {
        match self.keys.iter_mut().find(|k| &k.id == id) {
            Some(key) => {
                key.not_after = Some(not_after);
                true
            }
            None => false,
        }
    }

    /// Removes a key; returns it if it was there.
    pub fn remove(&mut self, id: &KeyId) -> Option<Key> {
        let pos = self.keys.iter().position(|k| &k.id == id)?;
        Some(self.keys.remove(pos))
    }

    /// Drops keys that expired before `now`.
    pub fn prune(&mut self, now: i64) {
        self.keys.retain(|k| k.is_active_at(now));
    }

    /// The key with this id, active or not.
    #[must_use]
    pub fn get(&self, id: &KeyId) -> Option<&Key> {
        self.keys.iter().find(|k| &k.id == id)
    }

    /// The key with this id if it is active at `now`.
    #[must_use]
    pub fn get_active(&self, id: &KeyId, now: i64) -> Option<&Key> {
        self.get(id).filter(|k| k.is_active_at(now))
    }

    /// The newest key that is active at `now` and signs (an HMAC secret or an own ed25519
    /// key): the one to issue link tokens with.
    #[must_use]
    pub fn primary(&self, now: i64) -> Option<&Key> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.is_active_at(now) && k.material.can_sign())
    }

    /// Whether keys active at `now` verify `v1` and `v1a` signatures (what a receiver accepts).
    #[must_use]
    pub(crate) fn verifying_schemes(&self, now: i64) -> (bool, bool) {
        let mut v1 = false;
        let mut v1a = false;
        for key in self.active_at(now) {
            match key.material {
                KeyMaterial::Hmac(_) => v1 = true,
                KeyMaterial::Ed25519Public(_) => v1a = true,
                KeyMaterial::Ed25519(_) => {}
            }
        }
        (v1, v1a)
    }

    /// Every key active at `now`, oldest first.
    pub fn active_at(&self, now: i64) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.is_active_at(now))
    }

    /// Every key, active or not.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// Number of keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_bad_secrets() {
        assert_eq!(Secret::parse("").unwrap_err(), SecretError::Empty);
        assert_eq!(Secret::parse("whsec_").unwrap_err(), SecretError::Empty);
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            Secret::parse("whsec_!!!notbase64").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::TooShort(5)
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(Secret::parse(&long).unwrap_err(), SecretError::TooLong(65));
        let huge = format!("whsec_{}", "A".repeat(10_000));
        assert!(matches!(Secret::parse(&huge), Err(SecretError::TooLong(_))));
    }

    #[test]
    fn generated_secrets_round_trip_and_never_print() {
        let s = Secret::generate();
        let text = s.expose();
        let back = Secret::parse(&text).unwrap();
        assert_eq!(back.expose_bytes(), s.expose_bytes());
        let ring = Keyring::single(KeyId::parse("key_a").unwrap(), s.clone());
        assert!(!format!("{ring:?}").contains(&text[6..]));
        assert!(!format!("{s:?}").contains(&text[6..]));
        assert!(!format!("{s}").contains(&text[6..]));
    }

    #[test]
    fn keyring_rotation_windows() {
        let mut ring = Keyring::new();
        let old = KeyId::parse("key_old").unwrap();
        let new = KeyId::parse("key_new").unwrap();
        ring.insert(old.clone(), Secret::generate(), None);
        ring.insert(new.clone(), Secret::generate(), None);
        assert!(ring.expire(&old, 100));
        assert_eq!(ring.primary(50).unwrap().id, new);
        assert!(ring.get_active(&old, 100).is_some());
        assert!(ring.get_active(&old, 101).is_none());
        ring.prune(101);
        assert_eq!(ring.len(), 1);
    }
}

#[cfg(test)]
mod mixed_tests {
    use super::*;

    #[test]
    fn primary_is_the_newest_key_that_signs() {
        let mut ring = Keyring::new();
        let own = SigningKey::generate();
        ring.insert(KeyId::parse("key_hmac").unwrap(), Secret::generate(), None);
        ring.insert(KeyId::parse("key_own").unwrap(), own.clone(), None);
        ring.insert(
            KeyId::parse("key_peer").unwrap(),
            SigningKey::generate().public_key(),
            None,
        );
        assert_eq!(ring.primary(0).unwrap().id.as_str(), "key_own");
        assert_eq!(ring.verifying_schemes(0), (true, true));
        assert!(!format!("{ring:?}").contains(&own.expose()[5..]));
        ring.remove(&KeyId::parse("key_peer").unwrap());
        assert_eq!(ring.verifying_schemes(0), (true, false));
    }

    #[test]
    fn key_material_parses_every_form() {
        let own = SigningKey::generate();
        assert!(matches!(
            KeyMaterial::parse(&own.expose()),
            Ok(KeyMaterial::Ed25519(_))
        ));
        assert!(matches!(
            KeyMaterial::parse(&own.public_key().to_string()),
            Ok(KeyMaterial::Ed25519Public(_))
        ));
        assert!(matches!(
            KeyMaterial::parse(&Secret::generate().expose()),
            Ok(KeyMaterial::Hmac(_))
        ));
        assert!(matches!(
            KeyMaterial::parse("whpk_AAAA"),
            Err(KeyMaterialError::Key(_))
        ));
        assert!(matches!(
            KeyMaterial::parse("nope"),
            Err(KeyMaterialError::Secret(SecretError::MissingPrefix))
        ));
    }
}
