//! Providers: registration, their secrets (keyrings, rotation with a grace period), the
//! public registry, and who a per-user secret speaks for. Owns `providers` and
//! `provider_keys`.

use diax_sdk::wire::{
    Pricing, ProviderListing, RegisterProvider, Registry, Scheme, SecretRotated, SecretScope,
};
use diax_sdk::{
    GroupId, KeyId, KeyMaterial, Keyring, ProviderId, PublicKey, Secret, SigningKey, UserId,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};

use super::{check_name, check_peer_url, id, opt_id, parsed, users};
use crate::error::{ApiError, ApiResult};

/// Longest grace period of a rotated secret, seconds.
const MAX_GRACE_SECS: u64 = 366 * 24 * 3600;

/// A provider as stored.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    pub(crate) id: ProviderId,
    pub(crate) group_id: GroupId,
    pub(crate) name: String,
    pub(crate) service_kind: String,
    pub(crate) job_url: String,
    pub(crate) signup_url: String,
    pub(crate) pricing: Pricing,
    pub(crate) description: Option<String>,
    pub(crate) secret_scope: SecretScope,
    pub(crate) bound_user_id: Option<UserId>,
}

fn pricing_str(p: Pricing) -> &'static str {
    match p {
        Pricing::Free => "free",
        Pricing::Paid => "paid",
    }
}

fn parse_pricing(s: &str) -> Option<Pricing> {
    [Pricing::Free, Pricing::Paid]
        .into_iter()
        .find(|p| pricing_str(*p) == s)
}

fn scope_str(s: SecretScope) -> &'static str {
    match s {
        SecretScope::Service => "service",
        SecretScope::User => "user",
    }
}

fn parse_scope(s: &str) -> Option<SecretScope> {
    [SecretScope::Service, SecretScope::User]
        .into_iter()
        .find(|v| scope_str(*v) == s)
}

impl<'r> FromRow<'r, SqliteRow> for Provider {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: id(row, "id")?,
            group_id: id(row, "group_id")?,
            name: row.try_get("name")?,
            service_kind: row.try_get("service_kind")?,
            job_url: row.try_get("job_url")?,
            signup_url: row.try_get("signup_url")?,
            pricing: parsed(row, "pricing", parse_pricing)?,
            description: row.try_get("description")?,
            secret_scope: parsed(row, "secret_scope", parse_scope)?,
            bound_user_id: opt_id(row, "bound_user_id")?,
        })
    }
}

impl Provider {
    /// Whether this provider's secret may speak for `user`: always for a service-wide
    /// secret; for a per-user secret, only for the user it is bound to.
    pub(crate) fn speaks_for(&self, user: &UserId) -> bool {
        self.secret_scope == SecretScope::Service || self.bound_user_id.as_ref() == Some(user)
    }

    fn listing(self) -> ProviderListing {
        ProviderListing {
            provider_id: self.id,
            name: self.name,
            service_kind: self.service_kind,
            pricing: self.pricing,
            signup_url: self.signup_url,
            description: self.description,
            secret_scope: self.secret_scope,
        }
    }
}

/// The URL a provider posts its events to.
pub(crate) fn events_url(base_url: &str, provider: &ProviderId) -> String {
    format!("{base_url}/v1/providers/{provider}/events")
}

/// The provider with this id, or `NotFound`.
pub(crate) async fn find(db: &SqlitePool, id: &ProviderId) -> ApiResult<Provider> {
    sqlx::query_as(
        "SELECT id, group_id, name, service_kind, job_url, signup_url, pricing, description, secret_scope, bound_user_id
         FROM providers WHERE id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no provider {id}")))
}

/// The provider's keyring: every stored key with its end of validity, oldest first (so the
/// newest is the primary). A row holds a shared `whsec_` secret (`hmac-sha256`), or with
/// `ed25519` the provider's `whpk_` public key or the broker's own `whsk_` key for it.
pub(crate) async fn keyring(db: &SqlitePool, id: &ProviderId) -> ApiResult<Keyring> {
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT key_id, secret, not_after FROM provider_keys WHERE provider_id = $1 ORDER BY seq",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    let mut ring = Keyring::new();
    for (kid, secret, not_after) in rows {
        let kid = KeyId::parse(kid).map_err(|e| ApiError::Internal(e.to_string()))?;
        let key = KeyMaterial::parse(&secret).map_err(|e| ApiError::Internal(e.to_string()))?;
        ring.insert(kid, key, not_after);
    }
    Ok(ring)
}

/// A service kind: 1–64 lowercase letters, digits or `-`.
pub(crate) fn check_service_kind(kind: &str) -> ApiResult<()> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(
            "service_kind must be 1 to 64 lowercase letters, digits or '-'".into(),
        ))
    }
}

/// The keys a registration or rotation made: a shared secret (shown once), or the broker's
/// own ed25519 key for the provider (whose public half the provider is told).
pub(crate) enum NewKeys {
    /// `hmac-sha256`: the shared secret.
    Shared(Secret),
    /// `ed25519`: the id and public key of the broker's new key.
    Ed25519 {
        broker_key_id: KeyId,
        broker_public_key: PublicKey,
    },
}

impl NewKeys {
    pub(crate) fn scheme(&self) -> Scheme {
        match self {
            Self::Shared(_) => Scheme::V1,
            Self::Ed25519 { .. } => Scheme::V1a,
        }
    }

    pub(crate) fn secret(&self) -> Option<String> {
        match self {
            Self::Shared(secret) => Some(secret.expose()),
            Self::Ed25519 { .. } => None,
        }
    }

    pub(crate) fn broker_key_id(&self) -> Option<KeyId> {
        match self {
            Self::Ed25519 { broker_key_id, .. } => Some(broker_key_id.clone()),
            Self::Shared(_) => None,
        }
    }

    pub(crate) fn broker_public_key(&self) -> Option<String> {
        match self {
            Self::Ed25519 {
                broker_public_key, ..
            } => Some(broker_public_key.to_string()),
            Self::Shared(_) => None,
        }
    }
}

/// What a registration created: the secret is shown once.
pub(crate) struct Registered {
    pub(crate) provider_id: ProviderId,
    pub(crate) key_id: KeyId,
    pub(crate) keys: NewKeys,
    pub(crate) bound_user_id: Option<UserId>,
}

/// The rows a scheme stores under a new provider key id: `(key_id, text)` pairs, and what the
/// answer tells the provider.
fn new_keys(
    scheme: Scheme,
    public_key: Option<&str>,
    key_id: &KeyId,
) -> ApiResult<(Vec<(KeyId, String)>, NewKeys)> {
    match (scheme, public_key) {
        (Scheme::V1, None) => {
            let secret = Secret::generate();
            Ok((
                vec![(key_id.clone(), secret.expose())],
                NewKeys::Shared(secret),
            ))
        }
        (Scheme::V1, Some(_)) => Err(ApiError::InvalidRequest(
            "public_key is given only with signature_scheme ed25519".into(),
        )),
        (Scheme::V1a, None) => Err(ApiError::InvalidRequest(
            "signature_scheme ed25519 needs the provider's public_key (whpk_…)".into(),
        )),
        (Scheme::V1a, Some(text)) => {
            let provider_key = PublicKey::parse(text)
                .map_err(|e| ApiError::InvalidRequest(format!("public_key: {e}")))?;
            let own = SigningKey::generate();
            let broker_key_id = KeyId::generate();
            let broker_public_key = own.public_key();
            Ok((
                vec![
                    (key_id.clone(), provider_key.to_string()),
                    (broker_key_id.clone(), own.expose()),
                ],
                NewKeys::Ed25519 {
                    broker_key_id,
                    broker_public_key,
                },
            ))
        }
    }
}

/// `user` (a member of `req.group_id`) registers a provider for the group, after checking
/// every field; with `secret_scope: user` the secret is bound to `user`.
pub(crate) async fn register(
    db: &SqlitePool,
    user: &UserId,
    req: &RegisterProvider,
    now: i64,
) -> ApiResult<Registered> {
    check_name("name", &req.name)?;
    check_service_kind(&req.service_kind)?;
    check_peer_url("job_url", &req.job_url)?;
    match url::Url::parse(&req.signup_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(ApiError::InvalidRequest(
                "signup_url must be an http(s) URL".into(),
            ));
        }
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(ApiError::InvalidRequest(
            "description must be at most 500 characters".into(),
        ));
    }
    let provider_id = ProviderId::generate();
    let key_id = KeyId::generate();
    let (rows, keys) = new_keys(req.signature_scheme, req.public_key.as_deref(), &key_id)?;
    users::require_member(db, &req.group_id, user).await?;
    let bound: Option<UserId> = (req.secret_scope == SecretScope::User).then(|| user.clone());
    let mut tx = super::begin_write(db).await?;
    sqlx::query(
        "INSERT INTO providers (id, group_id, name, service_kind, job_url, signup_url, pricing, description, secret_scope, bound_user_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(provider_id.as_str())
    .bind(req.group_id.as_str())
    .bind(&req.name)
    .bind(&req.service_kind)
    .bind(&req.job_url)
    .bind(&req.signup_url)
    .bind(pricing_str(req.pricing))
    .bind(&req.description)
    .bind(scope_str(req.secret_scope))
    .bind(bound.as_ref().map(UserId::as_str))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_keys(&mut tx, &provider_id, &rows, now).await?;
    tx.commit().await?;
    tracing::info!(provider = %provider_id, kind = %req.service_kind, scheme = %req.signature_scheme, "provider registered");
    Ok(Registered {
        provider_id,
        key_id,
        keys,
        bound_user_id: bound,
    })
}

async fn insert_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    provider_id: &ProviderId,
    rows: &[(KeyId, String)],
    now: i64,
) -> ApiResult<()> {
    for (key_id, text) in rows {
        sqlx::query(
            "INSERT INTO provider_keys (provider_id, key_id, secret, not_after, created_at) VALUES ($1, $2, $3, NULL, $4)",
        )
        .bind(provider_id.as_str())
        .bind(key_id.as_str())
        .bind(text)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `user` rotates the secret of `provider_id`: a new secret (shown once), or with
/// `public_key` the provider's new ed25519 key and a new broker key, become the primary;
/// every older key stays valid until the grace period ends (`grace_secs`, else
/// `default_grace`); keys already past their end are deleted.
pub(crate) async fn rotate(
    db: &SqlitePool,
    user: &UserId,
    provider_id: &ProviderId,
    req: &diax_sdk::wire::RotateSecret,
    default_grace: u64,
    now: i64,
) -> ApiResult<SecretRotated> {
    let grace_secs = req.grace_secs;
    let provider = find(db, provider_id).await?;
    if !users::is_member(db, &provider.group_id, user).await? {
        return Err(ApiError::Forbidden(format!(
            "only members of {} may rotate the secret of {provider_id}",
            provider.group_id
        )));
    }
    if provider.secret_scope == SecretScope::User && !provider.speaks_for(user) {
        return Err(ApiError::Forbidden(
            "only the bound user may rotate a per-user secret".into(),
        ));
    }
    let grace = grace_secs.unwrap_or(default_grace);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::InvalidRequest(
            "grace_secs must be at most one year".into(),
        ));
    }
    let valid_until = now.saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
    let ring = keyring(db, provider_id).await?;
    // The provider's newest key: its shared secret or its public key (not the broker's own).
    let previous = ring
        .active_at(now)
        .filter(|k| k.material.can_verify())
        .last()
        .map(|k| k.id.clone())
        .ok_or_else(|| ApiError::Internal("provider has no active key".into()))?;
    let key_id = KeyId::generate();
    let scheme = if req.public_key.is_some() {
        Scheme::V1a
    } else {
        Scheme::V1
    };
    let (rows, keys) = new_keys(scheme, req.public_key.as_deref(), &key_id)?;
    let mut tx = super::begin_write(db).await?;
    // Every key still open-ended now ends with the grace period; keys already ending sooner keep their end.
    sqlx::query(
        "UPDATE provider_keys SET not_after = $2
         WHERE provider_id = $1 AND (not_after IS NULL OR not_after > $2)",
    )
    .bind(provider_id.as_str())
    .bind(valid_until)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM provider_keys WHERE provider_id = $1 AND not_after < $2")
        .bind(provider_id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    insert_keys(&mut tx, provider_id, &rows, now).await?;
    tx.commit().await?;
    tracing::info!(provider = %provider_id, new_key = %key_id, old_key = %previous, %scheme, "secret rotated");
    Ok(SecretRotated {
        provider_id: provider_id.clone(),
        key_id,
        secret: keys.secret(),
        previous_key_id: previous,
        previous_valid_until: valid_until,
        signature_scheme: keys.scheme(),
        broker_key_id: keys.broker_key_id(),
        broker_public_key: keys.broker_public_key(),
    })
}

/// The public registry: every provider, or those of one service kind, by name.
pub(crate) async fn registry(db: &SqlitePool, kind: Option<&str>) -> ApiResult<Registry> {
    if let Some(k) = kind {
        check_service_kind(k)?;
    }
    let rows: Vec<Provider> = sqlx::query_as(
        "SELECT id, group_id, name, service_kind, job_url, signup_url, pricing, description, secret_scope, bound_user_id
         FROM providers WHERE ($1 IS NULL OR service_kind = $1) ORDER BY name, id",
    )
    .bind(kind)
    .fetch_all(db)
    .await?;
    Ok(Registry {
        providers: rows.into_iter().map(Provider::listing).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_pricing_and_scope_round_trip_and_unknown_values_are_refused() {
        for p in [Pricing::Free, Pricing::Paid] {
            assert_eq!(parse_pricing(pricing_str(p)), Some(p));
        }
        for s in [SecretScope::Service, SecretScope::User] {
            assert_eq!(parse_scope(scope_str(s)), Some(s));
        }
        assert_eq!(parse_pricing("Paid"), None);
        assert_eq!(parse_scope(""), None);
    }
}
