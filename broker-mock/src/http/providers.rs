//! `/v1/providers`, secret rotation and `/v1/registry`: thin handlers over
//! [`crate::store::providers`].

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::wire::{
    ProviderRegistered, RegisterProvider, Registry, RotateSecret, SecretRotated, broker_paths,
};
use diax_sdk::{Problem, ProviderId};
use http::StatusCode;

use super::extract::{AuthUser, JsonBody, path_id};
use super::respond::json;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::providers;

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

/// Register a provider
///
/// A member of `group_id` registers a provider on the group's behalf. The answer carries the
/// shared `whsec_` secret (shown once), the broker id (the `aud` of link tokens) and the
/// provider's events URL. With `signature_scheme: ed25519` the request carries the provider's
/// `whpk_` public key and the answer the broker's, and no secret is shared. With
/// `secret_scope: user` the keys are bound to the caller.
#[utoipa::path(
    post,
    path = "/v1/providers",
    operation_id = "register_provider",
    tag = "providers",
    security(("api_key" = [])),
    request_body = RegisterProvider,
    responses(
        (status = 201, description = "The provider, its secret (shown once) and events URL", body = ProviderRegistered),
        (status = 400, description = "`invalid-request`: bad name, service kind, URL, description or public key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the caller is not a member of the group", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such group", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<RegisterProvider>,
) -> ApiResult<Response> {
    let reg = providers::register(&state.db, &user.id, &req, state.clock.now()).await?;
    Ok(json(
        StatusCode::CREATED,
        &ProviderRegistered {
            events_url: providers::events_url(&state.base_url, &reg.provider_id),
            provider_id: reg.provider_id,
            broker_id: state.cfg.broker_id.clone(),
            key_id: reg.key_id,
            secret: reg.keys.secret(),
            secret_scope: req.secret_scope,
            bound_user_id: reg.bound_user_id,
            signature_scheme: reg.keys.scheme(),
            broker_key_id: reg.keys.broker_key_id(),
            broker_public_key: reg.keys.broker_public_key(),
        },
    ))
}

/// Rotate a provider's secret
///
/// Answers a new secret (shown once), or with `public_key` the broker's new public key; the
/// previous keys stay valid, and are signed with, until `previous_valid_until`.
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
        (status = 400, description = "`invalid-request`: malformed provider id or public key, or grace period over a year", body = Problem, content_type = "application/problem+json"),
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
    let rotated = providers::rotate(
        &state.db,
        &user.id,
        &provider_id,
        &req,
        state.cfg.rotation_grace,
        state.clock.now(),
    )
    .await?;
    Ok(json(StatusCode::OK, &rotated))
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
    let registry = providers::registry(&state.db, kind.map(String::as_str)).await?;
    Ok(json(StatusCode::OK, &registry))
}
