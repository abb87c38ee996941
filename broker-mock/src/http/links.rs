//! Account links: a user hands the broker a provider's link token.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use diax_sdk::wire::{AccountLink, LinkAccount, LinkList, broker_paths};
use diax_sdk::{AccountId, LinkTokenValidator, Problem, ProviderId};
use http::StatusCode;

use super::providers::{keyring, load_provider};
use super::{AuthUser, JsonBody, LogNote, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// OpenAPI description of the account link routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(link, list))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(broker_paths::LINKS, post(link).get(list))
}

/// Link a provider account
///
/// Checks the provider's link token (HS256 JWT, `typ` `diax-link+jwt`, a `kid` among the
/// provider's active keys, `iss`, `aud`, `exp`, unused `jti`) and stores the link, replacing
/// an earlier one.
#[utoipa::path(
    post,
    path = "/v1/links",
    operation_id = "link_account",
    tag = "links",
    security(("api_key" = [])),
    request_body = LinkAccount,
    responses(
        (status = 201, description = "The stored link", body = AccountLink),
        (status = 401, description = "`invalid-token` (with `reason`) or `unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the provider's per-user secret is bound to another user", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such provider", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`token-reused`: the token's `jti` was used before", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn link(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<LinkAccount>,
) -> ApiResult<Response> {
    let note = LogNote {
        provider_id: Some(req.provider_id.to_string()),
        ..LogNote::default()
    };
    let result = link_inner(&state, &user, &req).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    };
    let merged = match resp.extensions().get::<LogNote>() {
        Some(n) => LogNote {
            provider_id: note.provider_id,
            ..n.clone()
        },
        None => note,
    };
    resp.extensions_mut().insert(merged);
    Ok(resp)
}

async fn link_inner(state: &AppState, user: &AuthUser, req: &LinkAccount) -> ApiResult<Response> {
    let provider = load_provider(state, &req.provider_id).await?;
    if !provider.speaks_for(user.id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "provider {} uses a per-user secret bound to another user",
            req.provider_id
        )));
    }
    let now = state.clock.now();
    let ring = keyring(state, &provider.id).await?;
    let claims = LinkTokenValidator::new(req.provider_id.clone(), state.cfg.broker_id.clone())
        .validate_at(&req.token, &ring, now)
        .map_err(|e| ApiError::from(Problem::from(&e)))?;
    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO used_jtis (provider_id, jti, used_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&provider.id)
    .bind(&claims.jti)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() != 1 {
        return Err(ApiError::TokenReused(claims.jti));
    }
    sqlx::query(
        "INSERT INTO links (user_id, provider_id, account_id, linked_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, provider_id) DO UPDATE SET account_id = excluded.account_id, linked_at = excluded.linked_at",
    )
    .bind(user.id.as_str())
    .bind(&provider.id)
    .bind(claims.sub.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(user = %user.id, provider = %provider.id, account = %claims.sub, "account linked");
    let mut resp = json(
        StatusCode::CREATED,
        &AccountLink {
            provider_id: req.provider_id.clone(),
            provider_account: claims.sub,
            linked_at: now,
        },
    );
    resp.extensions_mut().insert(LogNote {
        verdict: Some("link token valid; account linked".into()),
        ..LogNote::default()
    });
    Ok(resp)
}

/// The caller's account links
#[utoipa::path(
    get,
    path = "/v1/links",
    operation_id = "list_links",
    tag = "links",
    security(("api_key" = [])),
    responses((status = 200, description = "The caller's links", body = LinkList))
)]
async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT provider_id, account_id, linked_at FROM links WHERE user_id = $1 ORDER BY linked_at, provider_id",
    )
    .bind(user.id.as_str())
    .fetch_all(&state.db)
    .await?;
    let links = rows
        .into_iter()
        .filter_map(|(p, a, t)| {
            Some(AccountLink {
                provider_id: ProviderId::parse(p).ok()?,
                provider_account: AccountId::parse(a).ok()?,
                linked_at: t,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &LinkList { links }))
}
