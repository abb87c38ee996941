//! User notifications: kept pending until acknowledged, and pushed (signed) to the user's
//! `notification_url` by the background deliverer.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::wire::{
    AckNotifications, ModelVersionRef, Notification, NotificationList, broker_paths,
};
use diax_sdk::{JobId, ModelId, NotificationId, Problem};
use http::StatusCode;

use super::jobs::JobRow;
use super::{AuthUser, JsonBody, json};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// OpenAPI description of the notification routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, ack))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::NOTIFICATIONS, get(list))
        .route(broker_paths::NOTIFICATIONS_ACK, post(ack))
}

/// Records a notification about `job` for its user and wakes the deliverer.
pub(crate) async fn notify_job(state: &AppState, job: &JobRow, event: &str) -> ApiResult<()> {
    let bad = |e: diax_sdk::InvalidId| ApiError::Internal(e.to_string());
    let model_id = ModelId::parse(job.model_id.clone()).map_err(bad)?;
    let n = Notification {
        notification_id: NotificationId::generate(),
        event: event.to_owned(),
        job_id: JobId::parse(job.id.clone()).map_err(bad)?,
        state: job.state(),
        result: job.result_version.map(|v| ModelVersionRef {
            model_id,
            version: u32::try_from(v).unwrap_or(0),
        }),
        problem: job
            .problem
            .as_ref()
            .and_then(|p| serde_json::from_str(p).ok()),
        created_at: state.clock.now(),
    };
    let body = serde_json::to_string(&n).map_err(|e| ApiError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO notifications (id, user_id, job_id, body, created_at, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(n.notification_id.as_str())
    .bind(&job.user_id)
    .bind(&job.id)
    .bind(body)
    .bind(n.created_at)
    .execute(&state.db)
    .await?;
    state.wake_notifier.notify_one();
    Ok(())
}

async fn pending(state: &AppState, user: &str) -> ApiResult<NotificationList> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM notifications WHERE user_id = $1 AND acked_at IS NULL ORDER BY created_at, rowid",
    )
    .bind(user)
    .fetch_all(&state.db)
    .await?;
    Ok(NotificationList {
        notifications: rows
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect(),
    })
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
        &pending(&state, user.id.as_str()).await?,
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
    if req.notification_ids.len() > 1000 {
        return Err(ApiError::InvalidRequest(
            "at most 1000 notification ids at once".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    for id in &req.notification_ids {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM notifications WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if owner.as_deref() != Some(user.id.as_str()) {
            return Err(ApiError::NotFound(format!("no notification {id}")));
        }
        sqlx::query("UPDATE notifications SET acked_at = COALESCE(acked_at, $2) WHERE id = $1")
            .bind(id.as_str())
            .bind(state.clock.now())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(json(
        StatusCode::OK,
        &pending(&state, user.id.as_str()).await?,
    ))
}
