//! Registration with the broker, the stored keyring, and secret rotation.

use diax_sdk::client::{BrokerClient, Client};
use diax_sdk::wire::{
    CreateGroup, Group, Pricing as WirePricing, ProviderRegistered, RegisterProvider, RotateSecret,
    SERVICE_KIND_MODEL_REPAIR, SecretRotated, SecretScope,
};
use diax_sdk::{GroupId, KeyId, Keyring, LinkTokenIssuer, ProviderId, Secret};

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

/// How to register.
#[derive(Debug, Clone)]
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
    let request = RegisterProvider {
        group_id,
        name: opts.name.clone(),
        service_kind: SERVICE_KIND_MODEL_REPAIR.into(),
        job_url: format!("{public}/diax/jobs"),
        signup_url: format!("{public}/v1/accounts"),
        pricing: WirePricing::Paid,
        description: opts.description.clone(),
        secret_scope: opts.secret_scope,
    };
    let registered = broker.register_provider(&opts.api_key, &request).await?;
    store_registration(db, &registered, &opts.broker_url).await?;
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

/// Stores a registration (replacing any earlier one and its keys).
///
/// # Errors
/// Database errors, or [`RegisterError::Answer`] for a malformed secret.
pub async fn store_registration(
    db: &Db,
    reg: &ProviderRegistered,
    broker_url: &str,
) -> Result<(), RegisterError> {
    Secret::parse(&reg.secret).map_err(|e| RegisterError::Answer(e.to_string()))?;
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
    insert_key(&mut tx, reg.key_id.as_str(), &reg.secret).await?;
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
/// link tokens use the new one.
///
/// # Errors
/// [`RegisterError`].
pub async fn rotate(
    db: &Db,
    http: &Client,
    api_key: &str,
    grace_secs: Option<u64>,
) -> Result<SecretRotated, RegisterError> {
    let reg = registration(db)
        .await?
        .ok_or(RegisterError::NotRegistered)?;
    let provider = reg
        .provider()
        .map_err(|e| RegisterError::Answer(e.to_string()))?;
    let broker = BrokerClient::new(http.clone(), &reg.broker_url)?;
    let rotated = broker
        .rotate_secret(api_key, &provider, &RotateSecret { grace_secs })
        .await?;
    store_rotation(db, &rotated).await?;
    Ok(rotated)
}

/// Stores the result of a rotation.
///
/// # Errors
/// Database errors, [`RegisterError::Answer`] for a malformed secret.
pub async fn store_rotation(db: &Db, rotated: &SecretRotated) -> Result<(), RegisterError> {
    Secret::parse(&rotated.secret).map_err(|e| RegisterError::Answer(e.to_string()))?;
    let mut tx = db.begin().await?;
    exec!(
        &mut tx,
        "UPDATE provider_keys SET not_after = $1 WHERE key_id = $2",
        rotated.previous_valid_until,
        rotated.previous_key_id.as_str()
    )?;
    exec!(
        &mut tx,
        "DELETE FROM provider_keys WHERE key_id = $1",
        rotated.key_id.as_str()
    )?;
    insert_key(&mut tx, rotated.key_id.as_str(), &rotated.secret).await?;
    tx.commit().await?;
    Ok(())
}

/// The stored registration, if any.
///
/// # Errors
/// Database errors.
pub async fn registration(db: &Db) -> Result<Option<Registration>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let r = fetch_optional!(
        &mut tx,
        Registration,
        "SELECT provider_id, broker_id, broker_url, events_url, secret_scope FROM registration WHERE id = 1"
    )?;
    tx.commit().await?;
    Ok(r)
}

/// The stored keys as a keyring (oldest first, so the newest is primary). Keys whose
/// stored text is not a valid secret are skipped and logged.
///
/// # Errors
/// Database errors.
pub async fn load_keyring(db: &Db) -> Result<Keyring, sqlx::Error> {
    let mut tx = db.begin().await?;
    let rows = fetch_all!(
        &mut tx,
        KeyRow,
        "SELECT key_id, secret, not_after FROM provider_keys ORDER BY position"
    )?;
    tx.commit().await?;
    let mut ring = Keyring::new();
    for row in rows {
        match (KeyId::parse(row.key_id.clone()), Secret::parse(&row.secret)) {
            (Ok(id), Ok(secret)) => ring.insert(id, secret, row.not_after),
            _ => tracing::error!(key_id = %row.key_id, "stored key is invalid; skipped"),
        }
    }
    Ok(ring)
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
