//! User notifications: recorded when a job ends, pending until the user acknowledges them,
//! and pushed (signed) to the user's `notification_url` by the background deliverer with
//! its attempts counted here. Owns `notifications`.

use diax_sdk::wire::{Notification, NotificationList};
use diax_sdk::{MessageId, NotificationId, Secret, UserId};
use sqlx::SqlitePool;

use super::jobs::JobRow;
use super::{json_text, to_json_text};
use crate::error::{ApiError, ApiResult};

/// Most notification ids one acknowledgement may name.
pub(crate) const MAX_ACK: usize = 1000;

/// Records notification `event` about `job` (in its current state) for the job's user.
pub(crate) async fn record_for_job(
    db: &SqlitePool,
    job: &JobRow,
    event: &str,
    now: i64,
) -> ApiResult<()> {
    let n = Notification {
        notification_id: NotificationId::generate(),
        event: event.to_owned(),
        job_id: job.id.clone(),
        state: job.state,
        result: job.result(),
        problem: job.problem.clone(),
        created_at: now,
    };
    sqlx::query(
        "INSERT INTO notifications (id, user_id, job_id, body, created_at, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(n.notification_id.as_str())
    .bind(job.user_id.as_str())
    .bind(job.id.as_str())
    .bind(to_json_text(&n)?)
    .bind(n.created_at)
    .execute(db)
    .await?;
    Ok(())
}

/// `user`'s unacknowledged notifications, oldest first.
pub(crate) async fn pending(db: &SqlitePool, user: &UserId) -> ApiResult<NotificationList> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM notifications WHERE user_id = $1 AND acked_at IS NULL ORDER BY created_at, rowid",
    )
    .bind(user.as_str())
    .fetch_all(db)
    .await?;
    Ok(NotificationList {
        notifications: rows
            .iter()
            .map(|b| json_text("notifications.body", b))
            .collect::<Result<_, _>>()?,
    })
}

/// How many notifications `user` has not acknowledged.
pub(crate) async fn pending_count(db: &SqlitePool, user: &UserId) -> ApiResult<u64> {
    let n: u64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND acked_at IS NULL",
    )
    .bind(user.as_str())
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// `user` acknowledges `ids` (at most [`MAX_ACK`]); all or none: an id that is not one of
/// the user's is `NotFound`. Acknowledging twice changes nothing.
pub(crate) async fn acknowledge(
    db: &SqlitePool,
    user: &UserId,
    ids: &[NotificationId],
    now: i64,
) -> ApiResult<()> {
    if ids.len() > MAX_ACK {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_ACK} notification ids at once"
        )));
    }
    let mut tx = super::begin_write(db).await?;
    for id in ids {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM notifications WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if owner.as_deref() != Some(user.as_str()) {
            return Err(ApiError::NotFound(format!("no notification {id}")));
        }
        sqlx::query("UPDATE notifications SET acked_at = COALESCE(acked_at, $2) WHERE id = $1")
            .bind(id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A notification due for delivery, with where and how to sign it.
#[derive(Debug)]
pub(crate) struct Due {
    /// The notification id, also the `webhook-id` of its delivery.
    pub(crate) id: MessageId,
    pub(crate) job_id: String,
    /// The exact body to send.
    pub(crate) body: String,
    pub(crate) attempts: u32,
    pub(crate) url: String,
    pub(crate) secret: Secret,
}

/// Up to `limit` undelivered notifications of users with a notification URL, due at
/// `now_ms` and tried fewer than `max_attempts` times, oldest first. A row whose id or
/// secret does not decode is logged and skipped (it can never be sent).
pub(crate) async fn due(
    db: &SqlitePool,
    now_ms: i64,
    max_attempts: u32,
    limit: i64,
    per_destination: i64,
) -> ApiResult<Vec<Due>> {
    let rows: Vec<(String, String, String, u32, String, String)> = sqlx::query_as(
        "SELECT id, job_id, body, attempts, notification_url, notification_secret FROM (
           SELECT n.id, n.job_id, n.body, n.attempts, n.created_at, u.notification_url,
                  u.notification_secret,
                  ROW_NUMBER() OVER (PARTITION BY u.notification_url ORDER BY n.created_at, n.id) AS nth
           FROM notifications n JOIN users u ON u.id = n.user_id
           WHERE n.delivered_at IS NULL AND u.notification_url IS NOT NULL AND u.notification_secret IS NOT NULL
             AND n.next_attempt_ms <= $1 AND n.attempts < $2)
         WHERE nth <= $4
         ORDER BY created_at, id LIMIT $3",
    )
    .bind(now_ms)
    .bind(max_attempts)
    .bind(limit)
    .bind(per_destination)
    .fetch_all(db)
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for (id, job_id, body, attempts, url, secret) in rows {
        let (Ok(secret), Ok(msg_id)) = (Secret::parse(&secret), MessageId::parse(id.clone()))
        else {
            tracing::error!(notification = %id, "unusable notification secret or id");
            continue;
        };
        due.push(Due {
            id: msg_id,
            job_id,
            body,
            attempts,
            url,
            secret,
        });
    }
    Ok(due)
}

/// Notification `id` was delivered.
pub(crate) async fn delivered(db: &SqlitePool, id: &MessageId, now: i64) -> ApiResult<()> {
    sqlx::query("UPDATE notifications SET delivered_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1")
        .bind(id.as_str())
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

/// Delivery attempt `attempts` of notification `id` failed with `why`; the next is due at
/// `next_ms`.
pub(crate) async fn failed(
    db: &SqlitePool,
    id: &MessageId,
    attempts: u32,
    next_ms: i64,
    why: &str,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE notifications SET attempts = $2, next_attempt_ms = $3, last_error = $4 WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(attempts)
    .bind(next_ms)
    .bind(why)
    .execute(db)
    .await?;
    Ok(())
}
