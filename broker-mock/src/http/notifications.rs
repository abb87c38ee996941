//! `/v1/notifications`: a user's pending notifications and their acknowledgement. Thin
//! handlers over [`crate::store::notifications`].

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::Problem;
use diax_sdk::wire::{AckNotifications, NotificationList, broker_paths};
use http::StatusCode;

use super::extract::{AuthUser, JsonBody};
use super::respond::json;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::notifications;

/// OpenAPI description of the notification routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, ack))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::NOTIFICATIONS, get(list))
        .route(broker_paths::NOTIFICATIONS_ACK, post(ack))
}

/// Pending notifications
///
/// The caller's unacknowledged notifications, oldest first. The same notifications are also
/// POSTed (signed) to the user's `notification_url`, if any.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    operation_id = "list_notifications",
    tag = "notifications",
    security(("api_key" = [])),
    responses((status = 200, description = "Pending notifications, oldest first", body = NotificationList))
)]
async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    Ok(json(
        StatusCode::OK,
        &notifications::pending(&state.db, &user.id).await?,
    ))
}

/// Acknowledge notifications
#[utoipa::path(
    post,
    path = "/v1/notifications/ack",
    operation_id = "ack_notifications",
    tag = "notifications",
    security(("api_key" = [])),
    request_body = AckNotifications,
    responses(
        (status = 200, description = "The notifications still pending", body = NotificationList),
        (status = 400, description = "`invalid-request`: more than 1000 ids, or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such notification of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ack(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<AckNotifications>,
) -> ApiResult<Response> {
    notifications::acknowledge(
        &state.db,
        &user.id,
        &req.notification_ids,
        state.clock.now(),
    )
    .await?;
    Ok(json(
        StatusCode::OK,
        &notifications::pending(&state.db, &user.id).await?,
    ))
}
