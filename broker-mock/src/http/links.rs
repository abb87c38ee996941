//! `/v1/links`: a user hands the broker a provider's link token. Thin handlers over
//! [`crate::store::links`].

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use diax_sdk::Problem;
use diax_sdk::wire::{AccountLink, LinkAccount, LinkList, broker_paths};
use http::StatusCode;

use super::extract::{AuthUser, JsonBody};
use super::respond::{json, with_note};
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::messages::Note;
use crate::store::{links, providers};

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
    let result = link_inner(&state, &user, &req).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let provider_id = Some(req.provider_id.to_string());
    let merged = match resp.extensions().get::<Note>() {
        Some(n) => Note {
            provider_id,
            ..n.clone()
        },
        None => Note {
            provider_id,
            ..Note::default()
        },
    };
    Ok(with_note(resp, merged))
}

async fn link_inner(state: &AppState, user: &AuthUser, req: &LinkAccount) -> ApiResult<Response> {
    let provider = providers::find(&state.db, &req.provider_id).await?;
    let link = links::link_with_token(
        &state.db,
        &user.id,
        &provider,
        &req.token,
        &state.cfg.broker_id,
        state.clock.now(),
    )
    .await?;
    Ok(with_note(
        json(StatusCode::CREATED, &link),
        Note {
            verdict: Some("link token valid; account linked".into()),
            ..Note::default()
        },
    ))
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
    Ok(json(
        StatusCode::OK,
        &links::list(&state.db, &user.id).await?,
    ))
}
