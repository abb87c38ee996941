//! `/v1/users`, `/v1/me`, `/v1/groups`: thin handlers over [`crate::store::users`].

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::wire::{AddMember, CreateGroup, CreateUser, Group, User, UserCreated, broker_paths};
use diax_sdk::{GroupId, Problem};
use http::StatusCode;

use super::extract::{AuthUser, JsonBody, path_id};
use super::respond::json;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::{notifications, users};

/// OpenAPI description of the user and group routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_user, me, create_group, get_group, add_member))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::USERS, post(create_user))
        .route(broker_paths::ME, get(me))
        .route(broker_paths::GROUPS, post(create_group))
        .route("/v1/groups/{group_id}", get(get_group))
        .route(broker_paths::GROUP_MEMBERS, post(add_member))
}

/// Create a user
///
/// Creates a broker user and answers its API key (shown once). With a `notification_url`, the
/// broker also creates the `whsec_` secret it signs the user's notifications with.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The user, its API key and notification secret (shown once)", body = UserCreated),
        (status = 400, description = "`invalid-request`: bad name or notification URL", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateUser>,
) -> ApiResult<Response> {
    let created = users::create(
        &state.db,
        &req.name,
        req.notification_url.as_deref(),
        state.clock.now(),
    )
    .await?;
    Ok(json(StatusCode::CREATED, &created))
}

/// The caller
#[utoipa::path(
    get,
    path = "/v1/me",
    operation_id = "get_me",
    tag = "users",
    security(("api_key" = [])),
    responses((status = 200, description = "The authenticated user", body = User))
)]
async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    let profile = users::profile(&state.db, &user.id).await?;
    let pending = notifications::pending_count(&state.db, &user.id).await?;
    Ok(json(
        StatusCode::OK,
        &User {
            user_id: user.id,
            name: profile.name,
            notification_url: profile.notification_url,
            groups: profile.groups,
            pending_notifications: pending,
        },
    ))
}

/// Create a group
///
/// The caller becomes its first member. Groups own providers.
#[utoipa::path(
    post,
    path = "/v1/groups",
    tag = "users",
    security(("api_key" = [])),
    request_body = CreateGroup,
    responses(
        (status = 201, description = "The new group", body = Group),
        (status = 400, description = "`invalid-request`: bad name", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_group(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<CreateGroup>,
) -> ApiResult<Response> {
    let group = users::create_group(&state.db, &user.id, &req.name, state.clock.now()).await?;
    Ok(json(StatusCode::CREATED, &group))
}

/// A group
#[utoipa::path(
    get,
    path = "/v1/groups/{group_id}",
    tag = "users",
    security(("api_key" = [])),
    params(("group_id" = GroupId, Path, description = "The group")),
    responses(
        (status = 200, description = "The group and its members", body = Group),
        (status = 400, description = "`invalid-request`: malformed group id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the caller is not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such group", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_group(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group): Path<String>,
) -> ApiResult<Response> {
    let group: GroupId = path_id("group", &group)?;
    users::require_member(&state.db, &group, &user.id).await?;
    Ok(json(
        StatusCode::OK,
        &users::group(&state.db, &group).await?,
    ))
}

/// Add a member to a group
///
/// Only members may add members; adding a member twice changes nothing.
#[utoipa::path(
    post,
    path = "/v1/groups/{group_id}/members",
    tag = "users",
    security(("api_key" = [])),
    params(("group_id" = GroupId, Path, description = "The group")),
    request_body = AddMember,
    responses(
        (status = 200, description = "The group with its members", body = Group),
        (status = 400, description = "`invalid-request`: malformed group id or body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the caller is not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such group or user", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group): Path<String>,
    JsonBody(req): JsonBody<AddMember>,
) -> ApiResult<Response> {
    let group: GroupId = path_id("group", &group)?;
    let group =
        users::add_member(&state.db, &user.id, &group, &req.user_id, state.clock.now()).await?;
    Ok(json(StatusCode::OK, &group))
}
