//! Link tokens: JWTs (RFC 7519) signed HS256 with the provider's shared secret, or EdDSA
//! (ed25519) with the provider's own secret key when it registered with `v1a`.
//!
//! A provider issues one to its user (`sub` = the user's provider account); the user hands it
//! to the broker, which checks it and links the account. Validation follows RFC 8725: `kid` is
//! only looked up in the keyring, and the algorithm is pinned by the key found there (HS256 for
//! a `whsec_` secret, EdDSA for a `whpk_` public key; never `none`, never the token's own
//! choice); `typ` must be [`LINK_TOKEN_TYP`], and `exp`, `aud`, `iss`, `sub`, `iat` and `jti`
//! are required.
//!
//! ```
//! use diax_sdk::token::{LinkTokenIssuer, LinkTokenValidator};
//! use diax_sdk::{AccountId, KeyId, Keyring, ProviderId, Secret};
//!
//! let key_id = KeyId::parse("key_1")?;
//! let secret = Secret::generate();
//! let provider = ProviderId::parse("prv_fixmyprint")?;
//! let issuer = LinkTokenIssuer::new(provider.clone(), "diax", key_id.clone(), secret.clone());
//! let now = 1_700_000_000;
//! let issued = issuer.issue_at(&AccountId::parse("acc_gareth")?, now)?;
//!
//! let ring = Keyring::single(key_id, secret);
//! let claims = LinkTokenValidator::new(provider, "diax").validate_at(&issued.token, &ring, now + 5)?;
//! assert_eq!(claims.sub.as_str(), "acc_gareth");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With ed25519 the provider signs with its secret key and the broker holds only the public one:
//!
//! ```
//! use diax_sdk::token::{LinkTokenIssuer, LinkTokenValidator};
//! use diax_sdk::{AccountId, KeyId, Keyring, ProviderId, SigningKey};
//!
//! let key_id = KeyId::parse("key_1")?;
//! let own = SigningKey::generate();
//! let provider = ProviderId::parse("prv_fixmyprint")?;
//! let issuer = LinkTokenIssuer::new(provider.clone(), "diax", key_id.clone(), own.clone());
//! let issued = issuer.issue_at(&AccountId::parse("acc_gareth")?, 1_700_000_000)?;
//!
//! let broker_ring = Keyring::single(key_id, own.public_key());
//! let claims = LinkTokenValidator::new(provider, "diax").validate_at(&issued.token, &broker_ring, 1_700_000_005)?;
//! assert_eq!(claims.sub.as_str(), "acc_gareth");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, KeyId, ProviderId};
use crate::secret::{KeyMaterial, Keyring};

/// The `typ` header of every link token.
pub const LINK_TOKEN_TYP: &str = "diax-link+jwt";
/// Default lifetime of an issued link token: 15 minutes.
pub const DEFAULT_LINK_TOKEN_TTL_SECS: u64 = 15 * 60;
/// Default clock leeway when validating: 30 seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The claims of a link token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// Issuer: the provider id.
    pub iss: ProviderId,
    /// Subject: the user's account at the provider.
    pub sub: AccountId,
    /// Audience: the broker id.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Not before (Unix seconds), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id; the broker accepts each `jti` once.
    pub jti: String,
}

/// A token just issued, with its claims. `Debug` shows the claims, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// What it says.
    pub claims: LinkClaims,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &crate::redact::Redacted)
            .field("claims", &self.claims)
            .finish()
    }
}

/// Why a link token could not be issued or was refused. Each variant names one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url segments, or a segment that is not JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than 4096 bytes")]
    TooLong,
    /// `alg` is neither HS256 nor EdDSA, or not the algorithm of the key `kid` names.
    #[error("algorithm {0:?} is not accepted for this key")]
    UnsupportedAlgorithm(String),
    /// `typ` is missing or not [`LINK_TOKEN_TYP`].
    #[error("token type must be \"diax-link+jwt\"")]
    WrongType,
    /// No `kid` header.
    #[error("token has no kid")]
    MissingKeyId,
    /// `kid` names no active key.
    #[error("no active key with id {0:?}")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent or of the wrong type.
    #[error("claim {0} is missing or invalid")]
    InvalidClaim(&'static str),
    /// `exp` has passed (beyond the leeway).
    #[error("token expired at {exp}")]
    Expired {
        /// The token's `exp`.
        exp: i64,
    },
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not valid before {0}")]
    NotYetValid(i64),
    /// `iss` is not the expected provider.
    #[error("issuer {0:?} is not the expected provider")]
    WrongIssuer(String),
    /// `aud` does not name this broker.
    #[error("audience does not include this broker")]
    WrongAudience,
    /// The lifetime requested is zero or absurd.
    #[error("invalid token lifetime")]
    InvalidLifetime,
    /// The signing library failed, or the key given cannot sign (a peer's public key).
    #[error("could not sign token: {0}")]
    Signing(String),
}

/// Issues link tokens for one provider.
#[derive(Debug, Clone)]
pub struct LinkTokenIssuer {
    issuer: ProviderId,
    audience: String,
    key_id: KeyId,
    key: KeyMaterial,
    ttl_secs: u64,
}

impl LinkTokenIssuer {
    /// An issuer for `provider`, whose tokens are meant for broker `audience`, signed with
    /// the key named `key_id`: a [`Secret`](crate::Secret) (HS256) or the provider's own
    /// [`SigningKey`](crate::SigningKey) (EdDSA). Lifetime [`DEFAULT_LINK_TOKEN_TTL_SECS`].
    #[must_use]
    pub fn new(
        provider: ProviderId,
        audience: impl Into<String>,
        key_id: KeyId,
        key: impl Into<KeyMaterial>,
    ) -> Self {
        Self {
            issuer: provider,
            audience: audience.into(),
            key_id,
            key: key.into(),
            ttl_secs: DEFAULT_LINK_TOKEN_TTL_SECS,
        }
    }

    /// Sets the lifetime of issued tokens.
    #[must_use]
    pub fn with_ttl(mut self, ttl_secs: u64) -> Self {
        self.ttl_secs = ttl_secs;
        self
    }

    /// Issues a token for `account` at time `now`.
    ///
    /// # Errors
    /// [`TokenError::InvalidLifetime`] for a lifetime of 0 or over a year;
    /// [`TokenError::Signing`] when the key is a public key.
    pub fn issue_at(&self, account: &AccountId, now: i64) -> Result<IssuedToken, TokenError> {
        if self.ttl_secs == 0 || self.ttl_secs > 366 * 24 * 3600 {
            return Err(TokenError::InvalidLifetime);
        }
        let claims = LinkClaims {
            iss: self.issuer.clone(),
            sub: account.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now.saturating_add(i64::try_from(self.ttl_secs).unwrap_or(i64::MAX)),
            nbf: None,
            jti: crate::util::random_token("lt_", 24),
        };
        let token = encode_claims(&claims, &self.key_id, &self.key)?;
        Ok(IssuedToken { token, claims })
    }

    /// [`Self::issue_at`] with the system clock.
    ///
    /// # Errors
    /// As [`Self::issue_at`].
    pub fn issue(&self, account: &AccountId) -> Result<IssuedToken, TokenError> {
        self.issue_at(account, crate::clock::unix_now())
    }
}

/// Signs arbitrary link claims (for tools and tests that need unusual tokens): HS256 with an
/// HMAC secret, EdDSA with an own ed25519 key.
///
/// ```
/// use diax_sdk::token::{LinkClaims, encode_claims};
/// use diax_sdk::{AccountId, KeyId, KeyMaterial, ProviderId, SigningKey};
///
/// let claims = LinkClaims {
///     iss: ProviderId::parse("prv_x")?, sub: AccountId::parse("acc_1")?, aud: "diax".into(),
///     iat: 1000, exp: 2000, nbf: None, jti: "j1".into(),
/// };
/// let key = KeyMaterial::from(SigningKey::generate());
/// let token = encode_claims(&claims, &KeyId::parse("key_a")?, &key)?;
/// assert_eq!(token.split('.').count(), 3);
/// // A public key cannot sign.
/// let public = KeyMaterial::from(SigningKey::generate().public_key());
/// assert!(encode_claims(&claims, &KeyId::parse("key_a")?, &public).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`TokenError::Signing`] if the key cannot sign or the JWT library fails.
pub fn encode_claims(
    claims: &LinkClaims,
    key_id: &KeyId,
    key: &KeyMaterial,
) -> Result<String, TokenError> {
    let signing = |e: jsonwebtoken::errors::Error| TokenError::Signing(e.to_string());
    let (alg, encoding) = match key {
        KeyMaterial::Hmac(secret) => (
            Algorithm::HS256,
            EncodingKey::from_secret(secret.expose_bytes()).map_err(signing)?,
        ),
        KeyMaterial::Ed25519(own) => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(&own.pkcs8_der().map_err(TokenError::Signing)?),
        ),
        KeyMaterial::Ed25519Public(_) => {
            return Err(TokenError::Signing("a public key cannot sign".into()));
        }
    };
    let mut header = Header::new(alg);
    header.typ = Some(LINK_TOKEN_TYP.to_owned());
    header.kid = Some(key_id.to_string());
    jsonwebtoken::encode(&header, claims, &encoding).map_err(signing)
}

/// Validates link tokens from one provider, for one broker.
#[derive(Debug, Clone)]
pub struct LinkTokenValidator {
    issuer: ProviderId,
    audience: String,
    leeway_secs: u64,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    typ: Option<serde_json::Value>,
    kid: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
}

fn int_claim(v: Option<&serde_json::Value>, name: &'static str) -> Result<i64, TokenError> {
    v.and_then(serde_json::Value::as_i64)
        .ok_or(TokenError::InvalidClaim(name))
}

fn str_claim<'a>(
    v: Option<&'a serde_json::Value>,
    name: &'static str,
) -> Result<&'a str, TokenError> {
    v.and_then(serde_json::Value::as_str)
        .ok_or(TokenError::InvalidClaim(name))
}

impl LinkTokenValidator {
    /// A validator expecting `iss` = `provider` and `aud` containing `audience`, with a
    /// leeway of [`DEFAULT_LEEWAY_SECS`].
    #[must_use]
    pub fn new(provider: ProviderId, audience: impl Into<String>) -> Self {
        Self {
            issuer: provider,
            audience: audience.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// Sets the clock leeway for `exp`, `nbf` and `iat`.
    #[must_use]
    pub fn with_leeway(mut self, leeway_secs: u64) -> Self {
        self.leeway_secs = leeway_secs;
        self
    }

    /// Reads the `kid` of a token without trusting anything in it.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] or [`TokenError::MissingKeyId`].
    pub fn peek_key_id(token: &str) -> Result<KeyId, TokenError> {
        let header = Self::parse_header(token)?;
        let kid = header
            .kid
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .ok_or(TokenError::MissingKeyId)?;
        KeyId::parse(kid).map_err(|_| TokenError::UnknownKey(kid.chars().take(64).collect()))
    }

    fn parse_header(token: &str) -> Result<RawHeader, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated segments",
            ));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| TokenError::Malformed("header is not base64url"))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Malformed("header is not a JSON object"))
    }

    /// Validates `token` at time `now` against the keys of `keyring` active then.
    ///
    /// # Errors
    /// A [`TokenError`] naming the first failed check.
    pub fn validate_at(
        &self,
        token: &str,
        keyring: &Keyring,
        now: i64,
    ) -> Result<LinkClaims, TokenError> {
        let header = Self::parse_header(token)?;
        let alg = match header.alg.as_ref().and_then(serde_json::Value::as_str) {
            Some("HS256") => Algorithm::HS256,
            Some("EdDSA") => Algorithm::EdDSA,
            Some(other) => {
                return Err(TokenError::UnsupportedAlgorithm(
                    other.chars().take(32).collect(),
                ));
            }
            None => return Err(TokenError::UnsupportedAlgorithm(String::new())),
        };
        if header.typ.as_ref().and_then(serde_json::Value::as_str) != Some(LINK_TOKEN_TYP) {
            return Err(TokenError::WrongType);
        }
        let kid_text = header
            .kid
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .ok_or(TokenError::MissingKeyId)?;
        let unknown = || TokenError::UnknownKey(kid_text.chars().take(64).collect());
        let kid = KeyId::parse(kid_text).map_err(|_| unknown())?;
        let key = keyring
            .get_active(&kid, now)
            .filter(|k| k.material.can_verify())
            .ok_or_else(unknown)?;

        // The key pins the algorithm: a token naming another one is refused before any
        // signature check, so an HMAC check keyed with a public key can never happen.
        let decoding = match (&key.material, alg) {
            (KeyMaterial::Hmac(secret), Algorithm::HS256) => {
                DecodingKey::from_secret(secret.expose_bytes())
                    .map_err(|_| TokenError::BadSignature)?
            }
            (KeyMaterial::Ed25519Public(public), Algorithm::EdDSA) => {
                DecodingKey::from_ed_der(&public.to_bytes())
            }
            _ => {
                return Err(TokenError::UnsupportedAlgorithm(
                    header
                        .alg
                        .as_ref()
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
        };

        // Signature and algorithm through jsonwebtoken; every time-based and identity check
        // is ours, against `now`, so tests control the clock.
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::UnsupportedAlgorithm("?".into())
                    }
                    ErrorKind::Json(_) => TokenError::Malformed("claims are not a JSON object"),
                    _ => TokenError::Malformed("undecodable token"),
                }
            })?;
        let c = data.claims;
        let leeway = i64::try_from(self.leeway_secs).unwrap_or(i64::MAX);

        let exp = int_claim(c.exp.as_ref(), "exp")?;
        if now > exp.saturating_add(leeway) {
            return Err(TokenError::Expired { exp });
        }
        if let Some(nbf) = c.nbf.as_ref() {
            let nbf = nbf.as_i64().ok_or(TokenError::InvalidClaim("nbf"))?;
            if nbf > now.saturating_add(leeway) {
                return Err(TokenError::NotYetValid(nbf));
            }
        }
        let iat = int_claim(c.iat.as_ref(), "iat")?;
        if iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid(iat));
        }
        let iss = str_claim(c.iss.as_ref(), "iss")?;
        if iss != self.issuer.as_str() {
            return Err(TokenError::WrongIssuer(iss.chars().take(64).collect()));
        }
        let aud_ok = match c.aud.as_ref() {
            Some(serde_json::Value::String(a)) => a == &self.audience,
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|a| a.as_str() == Some(&self.audience))
            }
            _ => return Err(TokenError::InvalidClaim("aud")),
        };
        if !aud_ok {
            return Err(TokenError::WrongAudience);
        }
        let sub = AccountId::parse(str_claim(c.sub.as_ref(), "sub")?)
            .map_err(|_| TokenError::InvalidClaim("sub"))?;
        let jti = str_claim(c.jti.as_ref(), "jti")?;
        if jti.is_empty() || jti.len() > 128 {
            return Err(TokenError::InvalidClaim("jti"));
        }
        Ok(LinkClaims {
            iss: self.issuer.clone(),
            sub,
            aud: self.audience.clone(),
            iat,
            exp,
            nbf: c.nbf.as_ref().and_then(serde_json::Value::as_i64),
            jti: jti.to_owned(),
        })
    }

    /// [`Self::validate_at`] with the system clock.
    ///
    /// # Errors
    /// As [`Self::validate_at`].
    pub fn validate(&self, token: &str, keyring: &Keyring) -> Result<LinkClaims, TokenError> {
        self.validate_at(token, keyring, crate::clock::unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Secret, SigningKey};

    fn setup() -> (LinkTokenIssuer, LinkTokenValidator, Keyring) {
        let kid = KeyId::parse("key_a").unwrap();
        let secret = Secret::generate();
        let prv = ProviderId::parse("prv_x").unwrap();
        (
            LinkTokenIssuer::new(prv.clone(), "diax", kid.clone(), secret.clone()),
            LinkTokenValidator::new(prv, "diax"),
            Keyring::single(kid, secret),
        )
    }

    fn forge(header: &str, claims: &str, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            sig
        )
    }

    #[test]
    fn round_trip_and_expiry_edges() {
        let (iss, val, ring) = setup();
        let acc = AccountId::parse("acc_1").unwrap();
        let t = iss.issue_at(&acc, 1000).unwrap();
        assert_eq!(val.validate_at(&t.token, &ring, 1000).unwrap(), t.claims);
        let exp = t.claims.exp;
        assert!(val.validate_at(&t.token, &ring, exp + 30).is_ok());
        assert_eq!(
            val.validate_at(&t.token, &ring, exp + 31),
            Err(TokenError::Expired { exp })
        );
        assert_eq!(
            val.validate_at(&t.token, &ring, 1000 - 31),
            Err(TokenError::NotYetValid(1000))
        );
    }

    #[test]
    fn debug_never_shows_the_token_or_the_secret() {
        let secret = Secret::generate();
        let text = secret.expose();
        let kid = KeyId::parse("key_a").unwrap();
        let iss = LinkTokenIssuer::new(ProviderId::parse("prv_x").unwrap(), "diax", kid, secret);
        let t = iss
            .issue_at(&AccountId::parse("acc_1").unwrap(), 1000)
            .unwrap();
        let signature = t.token.rsplit('.').next().unwrap();
        for debug in [format!("{t:?}"), format!("{iss:?}")] {
            assert!(!debug.contains(signature), "{debug}");
            assert!(!debug.contains(&text[6..]), "{debug}");
        }
        assert!(format!("{t:?}").contains("acc_1"));
    }

    #[test]
    fn alg_none_and_other_algs_refused() {
        let (_, val, ring) = setup();
        let claims =
            r#"{"iss":"prv_x","sub":"acc_1","aud":"diax","iat":1000,"exp":2000,"jti":"j"}"#;
        let none = forge(
            r#"{"alg":"none","typ":"diax-link+jwt","kid":"key_a"}"#,
            claims,
            "",
        );
        assert_eq!(
            val.validate_at(&none, &ring, 1000),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
        let hs512 = forge(
            r#"{"alg":"HS512","typ":"diax-link+jwt","kid":"key_a"}"#,
            claims,
            "AAAA",
        );
        assert!(matches!(
            val.validate_at(&hs512, &ring, 1000),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
        let wrong_typ = forge(
            r#"{"alg":"HS256","typ":"JWT","kid":"key_a"}"#,
            claims,
            "AAAA",
        );
        assert_eq!(
            val.validate_at(&wrong_typ, &ring, 1000),
            Err(TokenError::WrongType)
        );
        let no_kid = forge(r#"{"alg":"HS256","typ":"diax-link+jwt"}"#, claims, "AAAA");
        assert_eq!(
            val.validate_at(&no_kid, &ring, 1000),
            Err(TokenError::MissingKeyId)
        );
        let path_kid = forge(
            r#"{"alg":"HS256","typ":"diax-link+jwt","kid":"../../etc/passwd"}"#,
            claims,
            "AAAA",
        );
        assert!(matches!(
            val.validate_at(&path_kid, &ring, 1000),
            Err(TokenError::UnknownKey(_))
        ));
        let bad_sig = forge(
            r#"{"alg":"HS256","typ":"diax-link+jwt","kid":"key_a"}"#,
            claims,
            "AAAA",
        );
        assert_eq!(
            val.validate_at(&bad_sig, &ring, 1000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn wrong_issuer_audience_and_missing_claims() {
        let (_, val, ring) = setup();
        let key = ring.iter().next().unwrap();
        let mut claims = LinkClaims {
            iss: ProviderId::parse("prv_other").unwrap(),
            sub: AccountId::parse("acc_1").unwrap(),
            aud: "diax".into(),
            iat: 1000,
            exp: 2000,
            nbf: None,
            jti: "j1".into(),
        };
        let t = encode_claims(&claims, &key.id, &key.material).unwrap();
        assert_eq!(
            val.validate_at(&t, &ring, 1000),
            Err(TokenError::WrongIssuer("prv_other".into()))
        );
        claims.iss = ProviderId::parse("prv_x").unwrap();
        claims.aud = "other-broker".into();
        let t = encode_claims(&claims, &key.id, &key.material).unwrap();
        assert_eq!(
            val.validate_at(&t, &ring, 1000),
            Err(TokenError::WrongAudience)
        );
        claims.aud = "diax".into();
        claims.nbf = Some(1500);
        let t = encode_claims(&claims, &key.id, &key.material).unwrap();
        assert_eq!(
            val.validate_at(&t, &ring, 1000),
            Err(TokenError::NotYetValid(1500))
        );
        assert!(val.validate_at(&t, &ring, 1500).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let (_, val, ring) = setup();
        for t in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "eyJ9.e30.",
            &"x".repeat(5000),
        ] {
            assert!(val.validate_at(t, &ring, 0).is_err());
        }
    }

    #[test]
    fn eddsa_round_trip_and_algorithm_pinned_by_the_key() {
        let prv = ProviderId::parse("prv_x").unwrap();
        let kid = KeyId::parse("key_ed").unwrap();
        let own = SigningKey::generate();
        let iss = LinkTokenIssuer::new(prv.clone(), "diax", kid.clone(), own.clone());
        let val = LinkTokenValidator::new(prv, "diax");
        let acc = AccountId::parse("acc_1").unwrap();
        let t = iss.issue_at(&acc, 1000).unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "EdDSA");
        let broker = Keyring::single(kid.clone(), own.public_key());
        assert_eq!(val.validate_at(&t.token, &broker, 1000).unwrap(), t.claims);
        // Another key pair's public key under the same kid: bad signature.
        let other = Keyring::single(kid.clone(), SigningKey::generate().public_key());
        assert_eq!(
            val.validate_at(&t.token, &other, 1000),
            Err(TokenError::BadSignature)
        );
        // The provider's own secret key verifies nothing: the kid is unknown to that ring.
        let own_ring = Keyring::single(kid.clone(), own.clone());
        assert!(matches!(
            val.validate_at(&t.token, &own_ring, 1000),
            Err(TokenError::UnknownKey(_))
        ));
        // An EdDSA token whose kid names an HMAC secret is refused for its algorithm.
        let hmac_ring = Keyring::single(kid.clone(), Secret::generate());
        assert_eq!(
            val.validate_at(&t.token, &hmac_ring, 1000),
            Err(TokenError::UnsupportedAlgorithm("EdDSA".into()))
        );
        // The classic confusion: HS256 keyed with the public key's bytes, kid of the public key.
        let public_as_secret = Secret::from_bytes(&own.public_key().to_bytes()).unwrap();
        let forged = encode_claims(&t.claims, &kid, &KeyMaterial::Hmac(public_as_secret)).unwrap();
        assert_eq!(
            val.validate_at(&forged, &broker, 1000),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
        // A tampered claim fails the signature.
        let parts: Vec<_> = t.token.split('.').collect();
        let claims =
            r#"{"iss":"prv_x","sub":"acc_2","aud":"diax","iat":1000,"exp":2000,"jti":"j"}"#;
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims),
            parts[2]
        );
        assert_eq!(
            val.validate_at(&tampered, &broker, 1000),
            Err(TokenError::BadSignature)
        );
        // Garbage signatures of every length are refused without a panic.
        for sig in [
            "",
            "AAAA",
            &URL_SAFE_NO_PAD.encode([0u8; 64]),
            &URL_SAFE_NO_PAD.encode([0u8; 65]),
        ] {
            let t2 = format!("{}.{}.{}", parts[0], parts[1], sig);
            assert_eq!(
                val.validate_at(&t2, &broker, 1000),
                Err(TokenError::BadSignature),
                "{sig}"
            );
        }
        // A public key cannot issue.
        let bad = LinkTokenIssuer::new(
            ProviderId::parse("prv_x").unwrap(),
            "diax",
            kid,
            own.public_key(),
        );
        assert!(matches!(
            bad.issue_at(&acc, 1000),
            Err(TokenError::Signing(_))
        ));
    }
}
