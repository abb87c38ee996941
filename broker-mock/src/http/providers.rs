//! Provider registration, secret rotation, the public registry, and provider lookups.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::wire::{
    Pricing, ProviderListing, ProviderRegistered, RegisterProvider, Registry, RotateSecret,
    SecretRotated, SecretScope, broker_paths,
};
use diax_sdk::{KeyId, Keyring, Problem, ProviderId, Secret, UserId};
use http::StatusCode;

use super::{AuthUser, JsonBody, check_name, json, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::outbound::check_peer_url;

/// OpenAPI description of the provider routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(register, rotate, registry))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::PROVIDERS, post(register))
        .route(broker_paths::PROVIDER_ROTATE, post(rotate))
        .route(broker_paths::REGISTRY, get(registry))
}

/// A provider as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ProviderRow {
    pub(crate) id: String,
    pub(crate) group_id: String,
    pub(crate) name: String,
    pub(crate) service_kind: String,
    pub(crate) job_url: String,
    pub(crate) signup_url: String,
    pub(crate) pricing: String,
    pub(crate) description: Option<String>,
    pub(crate) secret_scope: String,
    pub(crate) bound_user_id: Option<String>,
}

impl ProviderRow {
    pub(crate) fn scope(&self) -> SecretScope {
        if self.secret_scope == "user" {
            SecretScope::User
        } else {
            SecretScope::Service
        }
    }

    /// For a per-user provider: whether `user` is the one its secret is bound to.
    pub(crate) fn speaks_for(&self, user: &str) -> bool {
        self.scope() == SecretScope::Service || self.bound_user_id.as_deref() == Some(user)
    }

    fn listing(self) -> Option<ProviderListing> {
        let scope = self.scope();
        Some(ProviderListing {
            provider_id: ProviderId::parse(self.id).ok()?,
            name: self.name,
            service_kind: self.service_kind,
            pricing: if self.pricing == "free" {
                Pricing::Free
            } else {
                Pricing::Paid
            },
            signup_url: self.signup_url,
            description: self.description,
            secret_scope: scope,
        })
    }
}

/// The provider with this id, or 404.
pub(crate) async fn load_provider(state: &AppState, id: &ProviderId) -> ApiResult<ProviderRow> {
    sqlx::query_as(
        "SELECT id, group_id, name, service_kind, job_url, signup_url, pricing, description, secret_scope, bound_user_id
         FROM providers WHERE id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no provider {id}")))
}

/// The provider's keyring: every stored secret with its end of validity, oldest first
/// (so the newest is the primary).
pub(crate) async fn keyring(state: &AppState, id: &str) -> ApiResult<Keyring> {
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT key_id, secret, not_after FROM provider_keys WHERE provider_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    let mut ring = Keyring::new();
    for (kid, secret, not_after) in rows {
        let kid = KeyId::parse(kid).map_err(|e| ApiError::Internal(e.to_string()))?;
        let secret = Secret::parse(&secret).map_err(|e| ApiError::Internal(e.to_string()))?;
        ring.insert(kid, secret, not_after);
    }
    Ok(ring)
}

fn check_service_kind(kind: &str) -> ApiResult<()> {
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

/// Register a provider
///
/// A member of `group_id` registers a provider on the group's behalf. The answer carries the
/// shared `whsec_` secret (shown once), the broker id (the `aud` of link tokens) and the
/// provider's events URL. With `secret_scope: user` the secret is bound to the caller.
#[utoipa::path(
    post,
    path = "/v1/providers",
    operation_id = "register_provider",
    tag = "providers",
    security(("api_key" = [])),
    request_body = RegisterProvider,
    responses(
        (status = 201, description = "The provider, its secret (shown once) and events URL", body = ProviderRegistered),
        (status = 400, description = "`invalid-request`: bad name, service kind, URL or description", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the caller is not a member of the group", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such group", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<RegisterProvider>,
) -> ApiResult<Response> {
    check_name("name", &req.name)?;
    check_service_kind(&req.service_kind)?;
    check_peer_url(&req.job_url).map_err(|e| ApiError::InvalidRequest(format!("job_url {e}")))?;
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
    if !super::users::is_member(&state, &req.group_id, &user.id).await? {
        return Err(ApiError::Forbidden(format!(
            "you are not a member of {}",
            req.group_id
        )));
    }
    let provider_id = ProviderId::generate();
    let key_id = KeyId::generate();
    let secret = Secret::generate();
    let bound: Option<UserId> = (req.secret_scope == SecretScope::User).then(|| user.id.clone());
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
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
    .bind(match req.pricing {
        Pricing::Free => "free",
        Pricing::Paid => "paid",
    })
    .bind(&req.description)
    .bind(match req.secret_scope {
        SecretScope::Service => "service",
        SecretScope::User => "user",
    })
    .bind(bound.as_ref().map(UserId::as_str))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO provider_keys (provider_id, key_id, secret, not_after, created_at) VALUES ($1, $2, $3, NULL, $4)",
    )
    .bind(provider_id.as_str())
    .bind(key_id.as_str())
    .bind(secret.expose())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(provider = %provider_id, kind = %req.service_kind, "provider registered");
    let events_url = format!("{}/v1/providers/{provider_id}/events", state.base_url);
    Ok(json(
        StatusCode::CREATED,
        &ProviderRegistered {
            provider_id,
            broker_id: state.cfg.broker_id.clone(),
            key_id,
            secret: secret.expose(),
            events_url,
            secret_scope: req.secret_scope,
            bound_user_id: bound,
        },
    ))
}

/// Rotate a provider's secret
///
/// Answers a new secret (shown once); the previous one stays valid, and is signed with,
/// until `previous_valid_until`.
#[utoipa::path(
    post,
    path = "/v1/providers/{provider_id}/secrets/rotate",
    operation_id = "rotate_secret",
    tag = "providers",
    security(("api_key" = [])),
    params(("provider_id" = ProviderId, Path, description = "The provider")),
    request_body = RotateSecret,
    responses(
        (status = 200, description = "The new secret (shown once) and the end of the old one's grace period", body = SecretRotated),
        (status = 400, description = "`invalid-request`: malformed provider id, or grace period over a year", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: not a member of the owning group (or not the bound user)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such provider", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rotate(
    State(state): State<AppState>,
    user: AuthUser,
    Path(provider): Path<String>,
    JsonBody(req): JsonBody<RotateSecret>,
) -> ApiResult<Response> {
    let provider_id: ProviderId = path_id("provider", &provider)?;
    let provider = load_provider(&state, &provider_id).await?;
    let group = diax_sdk::GroupId::parse(provider.group_id.clone())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !super::users::is_member(&state, &group, &user.id).await? {
        return Err(ApiError::Forbidden(format!(
            "only members of {group} may rotate the secret of {provider_id}"
        )));
    }
    if provider.scope() == SecretScope::User && !provider.speaks_for(user.id.as_str()) {
        return Err(ApiError::Forbidden(
            "only the bound user may rotate a per-user secret".into(),
        ));
    }
    let now = state.clock.now();
    let grace = req.grace_secs.unwrap_or(state.cfg.rotation_grace);
    if grace > 366 * 24 * 3600 {
        return Err(ApiError::InvalidRequest(
            "grace_secs must be at most one year".into(),
        ));
    }
    let valid_until = now.saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
    let ring = keyring(&state, provider_id.as_str()).await?;
    let previous = ring
        .primary(now)
        .map(|k| k.id.clone())
        .ok_or_else(|| ApiError::Internal("provider has no active key".into()))?;
    let key_id = KeyId::generate();
    let secret = Secret::generate();
    let mut tx = state.db.begin().await?;
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
    sqlx::query(
        "INSERT INTO provider_keys (provider_id, key_id, secret, not_after, created_at) VALUES ($1, $2, $3, NULL, $4)",
    )
    .bind(provider_id.as_str())
    .bind(key_id.as_str())
    .bind(secret.expose())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(provider = %provider_id, new_key = %key_id, old_key = %previous, "secret rotated");
    Ok(json(
        StatusCode::OK,
        &SecretRotated {
            provider_id,
            key_id,
            secret: secret.expose(),
            previous_key_id: previous,
            previous_valid_until: valid_until,
        },
    ))
}

/// The public registry
///
/// Every registered provider, optionally only those of one service kind, by name.
#[utoipa::path(
    get,
    path = "/v1/registry",
    tag = "providers",
    params(("service_kind" = Option<String>, Query, description = "Only providers of this service kind, e.g. `model-repair`")),
    responses(
        (status = 200, description = "The matching providers", body = Registry),
        (status = 400, description = "`invalid-request`: malformed service kind", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn registry(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let kind = q.get("service_kind").filter(|k| !k.is_empty());
    if let Some(k) = kind {
        check_service_kind(k)?;
    }
    let rows: Vec<ProviderRow> = sqlx::query_as(
        "SELECT id, group_id, name, service_kind, job_url, signup_url, pricing, description, secret_scope, bound_user_id
         FROM providers WHERE ($1 IS NULL OR service_kind = $1) ORDER BY name, id",
    )
    .bind(kind)
    .fetch_all(&state.db)
    .await?;
    Ok(json(
        StatusCode::OK,
        &Registry {
            providers: rows.into_iter().filter_map(ProviderRow::listing).collect(),
        },
    ))
}
