//! Users (API keys stored hashed), groups and membership.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::util::{random_token, sha256_hex};
use diax_sdk::wire::{AddMember, CreateGroup, CreateUser, Group, User, UserCreated, broker_paths};
use diax_sdk::{GroupId, Problem, Secret, UserId};
use http::StatusCode;

use super::{AuthUser, JsonBody, check_name, json, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::outbound::check_peer_url;

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

/// The user owning an API key.
pub(crate) async fn user_by_key(state: &AppState, key: &str) -> Result<Option<UserId>, ApiError> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE api_key_hash = $1")
        .bind(sha256_hex(key.as_bytes()))
        .fetch_optional(&state.db)
        .await?;
    Ok(id.and_then(|id| UserId::parse(id).ok()))
}

/// Pending notifications of the owner of an API key (`None` for an unknown key).
pub(crate) async fn pending_count_for_key(
    state: &AppState,
    key: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM notifications n WHERE n.user_id = u.id AND n.acked_at IS NULL)
         FROM users u WHERE u.api_key_hash = $1",
    )
    .bind(sha256_hex(key.as_bytes()))
    .fetch_optional(&state.db)
    .await
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
    check_name("name", &req.name)?;
    if let Some(url) = &req.notification_url {
        check_peer_url(url)
            .map_err(|e| ApiError::InvalidRequest(format!("notification_url {e}")))?;
    }
    let user_id = UserId::generate();
    let api_key = random_token("bk_", 40);
    let secret = req
        .notification_url
        .as_ref()
        .map(|_| Secret::generate().expose());
    sqlx::query(
        "INSERT INTO users (id, name, api_key_hash, notification_url, notification_secret, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user_id.as_str())
    .bind(&req.name)
    .bind(sha256_hex(api_key.as_bytes()))
    .bind(&req.notification_url)
    .bind(&secret)
    .bind(state.clock.now())
    .execute(&state.db)
    .await?;
    tracing::info!(user = %user_id, "user created");
    Ok(json(
        StatusCode::CREATED,
        &UserCreated {
            user_id,
            api_key,
            notification_secret: secret,
        },
    ))
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
    let (name, notification_url): (String, Option<String>) =
        sqlx::query_as("SELECT name, notification_url FROM users WHERE id = $1")
            .bind(user.id.as_str())
            .fetch_one(&state.db)
            .await?;
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY added_at, group_id",
    )
    .bind(user.id.as_str())
    .fetch_all(&state.db)
    .await?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND acked_at IS NULL",
    )
    .bind(user.id.as_str())
    .fetch_one(&state.db)
    .await?;
    Ok(json(
        StatusCode::OK,
        &User {
            user_id: user.id,
            name,
            notification_url,
            groups: groups
                .into_iter()
                .filter_map(|g| GroupId::parse(g).ok())
                .collect(),
            pending_notifications: u64::try_from(pending).unwrap_or(0),
        },
    ))
}

/// Whether `user` is a member of `group`; `NotFound` when the group does not exist.
pub(crate) async fn is_member(state: &AppState, group: &GroupId, user: &UserId) -> ApiResult<bool> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT g.id, m.user_id FROM groups g
         LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = $2
         WHERE g.id = $1",
    )
    .bind(group.as_str())
    .bind(user.as_str())
    .fetch_optional(&state.db)
    .await?;
    match row {
        None => Err(ApiError::NotFound(format!("no group {group}"))),
        Some((_, member)) => Ok(member.is_some()),
    }
}

async fn load_group(state: &AppState, group: &GroupId) -> ApiResult<Group> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM groups WHERE id = $1")
        .bind(group.as_str())
        .fetch_optional(&state.db)
        .await?;
    let name = name.ok_or_else(|| ApiError::NotFound(format!("no group {group}")))?;
    let members: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY added_at, user_id",
    )
    .bind(group.as_str())
    .fetch_all(&state.db)
    .await?;
    Ok(Group {
        group_id: group.clone(),
        name,
        members: members
            .into_iter()
            .filter_map(|m| UserId::parse(m).ok())
            .collect(),
    })
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
    check_name("name", &req.name)?;
    let id = GroupId::generate();
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    sqlx::query("INSERT INTO groups (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.as_str())
        .bind(&req.name)
        .bind(user.id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)")
        .bind(id.as_str())
        .bind(user.id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(json(StatusCode::CREATED, &load_group(&state, &id).await?))
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
    if !is_member(&state, &group, &user.id).await? {
        return Err(ApiError::Forbidden(format!(
            "you are not a member of {group}"
        )));
    }
    Ok(json(StatusCode::OK, &load_group(&state, &group).await?))
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
    if !is_member(&state, &group, &user.id).await? {
        return Err(ApiError::Forbidden(format!(
            "you are not a member of {group}"
        )));
    }
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(req.user_id.as_str())
        .fetch_optional(&state.db)
        .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound(format!("no user {}", req.user_id)));
    }
    sqlx::query(
        "INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)
         ON CONFLICT (group_id, user_id) DO NOTHING",
    )
    .bind(group.as_str())
    .bind(req.user_id.as_str())
    .bind(state.clock.now())
    .execute(&state.db)
    .await?;
    Ok(json(StatusCode::OK, &load_group(&state, &group).await?))
}
