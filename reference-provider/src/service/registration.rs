//! Registration with the broker, the stored keyring, and secret rotation.
//!
//! With `hmac-sha256` the keyring holds the shared `whsec_` secrets. With `ed25519` it holds
//! FixMyPrint's own `whsk_` keys (which sign its events and link tokens, under the key ids the
//! broker assigned) and the broker's `whpk_` public keys (which verify offers and inputs); the
//! secret key is made here and never leaves this database.

use diax_sdk::client::{BrokerClient, Client};
use diax_sdk::wire::{
    CreateGroup, Group, Pricing as WirePricing, ProviderRegistered, RegisterProvider, RotateSecret,
    SERVICE_KIND_MODEL_REPAIR, Scheme, SecretRotated, SecretScope,
};
use diax_sdk::{
    GroupId, KeyId, KeyMaterial, Keyring, LinkTokenIssuer, ProviderId, PublicKey, Secret,
    SigningKey,
};

use super::db::{Db, Tx, exec, fetch_all, fetch_optional, now_ms};

/// What the broker told us at registration.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Registration {
    /// Our provider id (`iss` of link tokens).
    pub provider_id: String,
    /// The broker's id (`aud` of link tokens).
    pub broker_id: String,
    /// The broker's base URL.
    pub broker_url: String,
    /// Where job events go.
    pub events_url: String,
    /// `service` or `user`.
    pub secret_scope: String,
}

impl Registration {
    /// The provider id, parsed.
    ///
    /// # Errors
    /// When the stored id is not a valid id.
    pub fn provider(&self) -> Result<ProviderId, diax_sdk::InvalidId> {
        ProviderId::parse(self.provider_id.clone())
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: String,
    secret: String,
    not_after: Option<i64>,
}

/// Errors of registration and rotation.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The broker refused or could not be reached.
    #[error("broker call failed: {0}")]
    Broker(#[from] diax_sdk::client::BrokerCallError),
    /// The broker's URL or our client configuration is unusable.
    #[error(transparent)]
    Client(#[from] diax_sdk::client::ClientError),
    /// The broker answered something we cannot use.
    #[error("unexpected answer from the broker: {0}")]
    Answer(String),
    /// Rotation before registration.
    #[error("this provider is not registered yet: run `fixmyprint register` first")]
    NotRegistered,
    /// Database failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How to register (`Debug` redacts the API key).
#[derive(Clone)]
pub struct RegisterOptions {
    /// The broker's base URL.
    pub broker_url: String,
    /// A broker user's API key.
    pub api_key: String,
    /// The owning group; `None` creates one named after the provider.
    pub group_id: Option<GroupId>,
    /// Display name.
    pub name: String,
    /// Public base URL of this service: `job_url` = `{public}/diax/jobs`, `signup_url` =
    /// `{public}/v1/accounts`.
    pub public_url: String,
    /// Service-wide or per-user secret.
    pub secret_scope: SecretScope,
    /// One-line description.
    pub description: Option<String>,
    /// `hmac-sha256` (a shared secret) or `ed25519` (own key pair, no shared secret).
    pub signature_scheme: Scheme,
}

impl std::fmt::Debug for RegisterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterOptions")
            .field("broker_url", &self.broker_url)
            .field("api_key", &"[redacted]")
            .field("group_id", &self.group_id)
            .field("name", &self.name)
            .field("public_url", &self.public_url)
            .field("secret_scope", &self.secret_scope)
            .field("description", &self.description)
            .field("signature_scheme", &self.signature_scheme)
            .finish()
    }
}

/// Registers with the broker (creating a group first when none is given) and stores the
/// answer (provider id, broker id, events URL, the secret) in the database.
///
/// # Errors
/// [`RegisterError`].
pub async fn register(
    db: &Db,
    http: &Client,
    opts: &RegisterOptions,
) -> Result<ProviderRegistered, RegisterError> {
    let broker = BrokerClient::new(http.clone(), &opts.broker_url)?;
    let group_id = match &opts.group_id {
        Some(g) => g.clone(),
        None => create_group(http, &opts.broker_url, &opts.api_key, &opts.name).await?,
    };
    let public = opts.public_url.trim_end_matches('/');
    let own = (opts.signature_scheme == Scheme::V1a).then(SigningKey::generate);
    let request = RegisterProvider {
        group_id,
        name: opts.name.clone(),
        service_kind: SERVICE_KIND_MODEL_REPAIR.into(),
        job_url: format!("{public}/diax/jobs"),
        signup_url: format!("{public}/v1/accounts"),
        pricing: WirePricing::Paid,
        description: opts.description.clone(),
        secret_scope: opts.secret_scope,
        signature_scheme: opts.signature_scheme,
        public_key: own.as_ref().map(|k| k.public_key().to_string()),
    };
    let registered = broker.register_provider(&opts.api_key, &request).await?;
    store_registration(db, &registered, &opts.broker_url, own.as_ref()).await?;
    Ok(registered)
}

async fn create_group(
    http: &Client,
    broker_url: &str,
    api_key: &str,
    name: &str,
) -> Result<GroupId, RegisterError> {
    let base = diax_sdk::client::require_secure_url(broker_url)?;
    let url = base
        .join(diax_sdk::wire::broker_paths::GROUPS)
        .map_err(|e| RegisterError::Answer(e.to_string()))?;
    let resp = http
        .post(url)
        .bearer_auth(api_key)
        .json(&CreateGroup {
            name: name.chars().take(100).collect(),
        })
        .send()
        .await
        .map_err(|e| RegisterError::Answer(format!("creating a group: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| RegisterError::Answer(e.to_string()))?;
    if !status.is_success() {
        if let Ok(p) = serde_json::from_slice::<diax_sdk::Problem>(&body) {
            return Err(diax_sdk::client::BrokerCallError::Problem(Box::new(p)).into());
        }
        return Err(RegisterError::Answer(format!(
            "creating a group: HTTP {status}"
        )));
    }
    let group: Group =
        serde_json::from_slice(&body).map_err(|e| RegisterError::Answer(e.to_string()))?;
    Ok(group.group_id)
}

/// The key rows an answer asks us to store: `(key_id, text)`. With `hmac-sha256` the shared
/// secret; with `ed25519` our own secret key under our key id and the broker's public key
/// under its key id.
fn answered_keys(
    scheme: Scheme,
    key_id: &KeyId,
    secret: Option<&str>,
    broker_key: (Option<&KeyId>, Option<&str>),
    own: Option<&SigningKey>,
) -> Result<Vec<(KeyId, String)>, RegisterError> {
    let answer = |what: &str| RegisterError::Answer(what.to_owned());
    match (scheme, own) {
        (Scheme::V1, _) => {
            let secret = Secret::parse(secret.ok_or_else(|| answer("no secret in the answer"))?)
                .map_err(|e| RegisterError::Answer(e.to_string()))?;
            Ok(vec![(key_id.clone(), secret.expose())])
        }
        (Scheme::V1a, Some(own)) => {
            let (Some(broker_key_id), Some(broker_public)) = broker_key else {
                return Err(answer("no broker key in an ed25519 answer"));
            };
            let broker_public = PublicKey::parse(broker_public)
                .map_err(|e| RegisterError::Answer(format!("broker_public_key: {e}")))?;
            Ok(vec![
                (key_id.clone(), own.expose()),
                (broker_key_id.clone(), broker_public.to_string()),
            ])
        }
        (Scheme::V1a, None) => Err(answer("an ed25519 answer to an hmac-sha256 request")),
    }
}

/// Stores a registration (replacing any earlier one and its keys). `own` is the secret key
/// whose public half an `ed25519` registration sent.
///
/// # Errors
/// Database errors, or [`RegisterError::Answer`] for a malformed or missing key.
pub async fn store_registration(
    db: &Db,
    reg: &ProviderRegistered,
    broker_url: &str,
    own: Option<&SigningKey>,
) -> Result<(), RegisterError> {
    let keys = answered_keys(
        reg.signature_scheme,
        &reg.key_id,
        reg.secret.as_deref(),
        (reg.broker_key_id.as_ref(), reg.broker_public_key.as_deref()),
        own,
    )?;
    let scope = match reg.secret_scope {
        SecretScope::Service => "service",
        SecretScope::User => "user",
    };
    let mut tx = db.begin().await?;
    exec!(&mut tx, "DELETE FROM registration")?;
    exec!(&mut tx, "DELETE FROM provider_keys")?;
    exec!(
        &mut tx,
        "INSERT INTO registration (id, provider_id, broker_id, broker_url, events_url, secret_scope, registered_at)
         VALUES (1, $1, $2, $3, $4, $5, $6)",
        reg.provider_id.as_str(),
        &reg.broker_id,
        broker_url,
        &reg.events_url,
        scope,
        now_ms()
    )?;
    for (key_id, text) in &keys {
        insert_key(&mut tx, key_id.as_str(), text).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_key(tx: &mut Tx, key_id: &str, secret: &str) -> Result<(), sqlx::Error> {
    exec!(
        tx,
        "INSERT INTO provider_keys (key_id, secret, not_after, position, created_at)
         VALUES ($1, $2, NULL, (SELECT COALESCE(MAX(position), 0) + 1 FROM provider_keys), $3)",
        key_id,
        secret,
        now_ms()
    )
    .map(|_| ())
}

/// Rotates the secret at the broker and keeps the old key until the end of its grace
/// period: incoming messages verify against both, outgoing ones are signed with both, and
/// link tokens use the new one. `scheme` is the scheme of the new keys (default: the current
/// one), so a rotation can also move between `hmac-sha256` and `ed25519`.
///
/// # Errors
/// [`RegisterError`].
pub async fn rotate(
    db: &Db,
    http: &Client,
    api_key: &str,
    grace_secs: Option<u64>,
    scheme: Option<Scheme>,
) -> Result<SecretRotated, RegisterError> {
    let reg = registration(db)
        .await?
        .ok_or(RegisterError::NotRegistered)?;
    let provider = reg
        .provider()
        .map_err(|e| RegisterError::Answer(e.to_string()))?;
    let scheme = match scheme {
        Some(s) => s,
        None => load_keyring(db)
            .await?
            .primary(diax_sdk::clock::unix_now())
            .map_or(Scheme::V1, |k| k.material.scheme()),
    };
    let own = (scheme == Scheme::V1a).then(SigningKey::generate);
    let broker = BrokerClient::new(http.clone(), &reg.broker_url)?;
    let request = RotateSecret {
        grace_secs,
        public_key: own.as_ref().map(|k| k.public_key().to_string()),
    };
    let rotated = broker.rotate_secret(api_key, &provider, &request).await?;
    store_rotation(db, &rotated, own.as_ref()).await?;
    Ok(rotated)
}

/// Stores the result of a rotation: every key without an end (ours and, with `ed25519`, the
/// broker's) now ends with the grace period, and the new keys are added. `own` is the secret
/// key whose public half an `ed25519` rotation sent.
///
/// # Errors
/// Database errors, [`RegisterError::Answer`] for a malformed or missing key.
pub async fn store_rotation(
    db: &Db,
    rotated: &SecretRotated,
    own: Option<&SigningKey>,
) -> Result<(), RegisterError> {
    let keys = answered_keys(
        rotated.signature_scheme,
        &rotated.key_id,
        rotated.secret.as_deref(),
        (
            rotated.broker_key_id.as_ref(),
            rotated.broker_public_key.as_deref(),
        ),
        own,
    )?;
    let mut tx = db.begin().await?;
    exec!(
        &mut tx,
        "UPDATE provider_keys SET not_after = $1 WHERE key_id = $2 OR not_after IS NULL",
        rotated.previous_valid_until,
        rotated.previous_key_id.as_str()
    )?;
    for (key_id, text) in &keys {
        exec!(
            &mut tx,
            "DELETE FROM provider_keys WHERE key_id = $1",
            key_id.as_str()
        )?;
        insert_key(&mut tx, key_id.as_str(), text).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The stored registration, if any.
///
/// # Errors
/// Database errors.
pub async fn registration(db: &Db) -> Result<Option<Registration>, sqlx::Error> {
    let mut tx = db.begin_read().await?;
    let r = registration_in(&mut tx).await?;
    tx.commit().await?;
    Ok(r)
}

/// The registration, in the caller's transaction.
///
/// # Errors
/// Database errors.
pub async fn registration_in(tx: &mut Tx) -> Result<Option<Registration>, sqlx::Error> {
    fetch_optional!(
        tx,
        Registration,
        "SELECT provider_id, broker_id, broker_url, events_url, secret_scope FROM registration WHERE id = 1"
    )
}

/// The stored keys as a keyring (oldest first, so the newest is primary). Keys whose
/// stored text is not a valid secret are skipped and logged.
///
/// # Errors
/// Database errors.
pub async fn load_keyring(db: &Db) -> Result<Keyring, sqlx::Error> {
    let mut tx = db.begin_read().await?;
    let rows = fetch_all!(
        &mut tx,
        KeyRow,
        "SELECT key_id, secret, not_after FROM provider_keys ORDER BY position"
    )?;
    tx.commit().await?;
    let mut ring = Keyring::new();
    for row in rows {
        match (
            KeyId::parse(row.key_id.clone()),
            KeyMaterial::parse(&row.secret),
        ) {
            (Ok(id), Ok(key)) => ring.insert(id, key, row.not_after),
            _ => tracing::error!(key_id = %row.key_id, "stored key is invalid; skipped"),
        }
    }
    Ok(ring)
}

/// The public half of this provider's newest own ed25519 key (what the broker verifies its
/// events and link tokens with), if it signs with one.
///
/// # Errors
/// Database errors.
pub async fn own_public_key(db: &Db) -> Result<Option<PublicKey>, sqlx::Error> {
    let ring = load_keyring(db).await?;
    Ok(ring
        .primary(diax_sdk::clock::unix_now())
        .and_then(|k| match &k.material {
            KeyMaterial::Ed25519(own) => Some(own.public_key()),
            _ => None,
        }))
}

/// A link-token issuer with the newest active key, if registered.
///
/// # Errors
/// Database errors.
pub async fn issuer(db: &Db, now: i64) -> Result<Option<LinkTokenIssuer>, sqlx::Error> {
    let Some(reg) = registration(db).await? else {
        return Ok(None);
    };
    let ring = load_keyring(db).await?;
    let (Ok(provider), Some(key)) = (reg.provider(), ring.primary(now)) else {
        return Ok(None);
    };
    Ok(Some(LinkTokenIssuer::new(
        provider,
        reg.broker_id,
        key.id.clone(),
        key.material.clone(),
    )))
}
