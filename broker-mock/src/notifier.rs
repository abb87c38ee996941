//! Background delivery of user notifications: a Standard Webhooks-signed POST with the
//! user's own secret, retried with exponential backoff and jitter until a 2xx answer.
//! Stops when the server shuts down.

use std::time::Duration;

use diax_sdk::{KeyId, Keyring, MessageId, Secret};
use tokio::sync::watch;

use crate::AppState;
use crate::outbound::{Subject, send_signed};

/// Runs until `stop` turns true.
pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.cfg.notify_interval_ms.max(10));
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = deliver_due(&state).await {
            tracing::warn!(error = %e, "notification delivery round failed");
        }
        tokio::select! {
            _ = stop.changed() => break,
            () = state.wake_notifier.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[derive(sqlx::FromRow)]
struct Due {
    id: String,
    job_id: String,
    body: String,
    attempts: i64,
    url: String,
    secret: String,
}

/// One delivery round: every due notification of a user with a notification URL.
pub(crate) async fn deliver_due(state: &AppState) -> Result<(), sqlx::Error> {
    let due: Vec<Due> = sqlx::query_as(
        "SELECT n.id, n.job_id, n.body, n.attempts, u.notification_url AS url, u.notification_secret AS secret
         FROM notifications n JOIN users u ON u.id = n.user_id
         WHERE n.delivered_at IS NULL AND u.notification_url IS NOT NULL AND u.notification_secret IS NOT NULL
           AND n.next_attempt_ms <= $1 AND n.attempts < $2
         ORDER BY n.created_at LIMIT 50",
    )
    .bind(state.clock.now_ms())
    .bind(i64::from(state.cfg.notify_max_attempts))
    .fetch_all(&state.db)
    .await?;
    for n in due {
        let (Ok(secret), Ok(msg_id)) = (Secret::parse(&n.secret), MessageId::parse(n.id.clone()))
        else {
            tracing::error!(notification = %n.id, "unusable notification secret or id");
            continue;
        };
        let key_id = KeyId::parse("key_notifications").unwrap_or_else(|_| KeyId::generate());
        let ring = Keyring::single(key_id, secret);
        let subject = Subject {
            provider_id: None,
            job_id: Some(n.job_id.clone()),
            ..Subject::default()
        };
        let outcome = send_signed(
            state,
            &n.url,
            &msg_id,
            n.body.as_bytes(),
            &ring,
            1,
            &subject,
        )
        .await;
        let ok = matches!(&outcome, Ok(a) if (200..300).contains(&a.status));
        if ok {
            sqlx::query("UPDATE notifications SET delivered_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1")
                .bind(&n.id)
                .bind(state.clock.now())
                .execute(&state.db)
                .await?;
        } else {
            let why = match outcome {
                Ok(a) => format!("answered {}", a.status),
                Err(e) => e,
            };
            let attempts = n.attempts.saturating_add(1);
            let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(20);
            let base = state
                .cfg
                .notify_backoff_ms
                .saturating_mul(1u64 << exp)
                .min(state.cfg.notify_max_backoff_ms);
            let delay = base / 2 + rand::random_range(0..=base / 2);
            let next = state
                .clock
                .now_ms()
                .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
            tracing::info!(notification = %n.id, attempts, delay_ms = delay, error = %why, "notification delivery failed; will retry");
            sqlx::query(
                "UPDATE notifications SET attempts = $2, next_attempt_ms = $3, last_error = $4 WHERE id = $1",
            )
            .bind(&n.id)
            .bind(attempts)
            .bind(next)
            .bind(&why)
            .execute(&state.db)
            .await?;
        }
    }
    Ok(())
}
