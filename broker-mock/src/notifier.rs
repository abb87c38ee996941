//! User notifications: [`notify_job`] records one and wakes the background deliverer
//! ([`run`]), which POSTs each (Standard Webhooks-signed with the user's own secret) to the
//! user's `notification_url`, retried with exponential backoff and jitter until a 2xx
//! answer. Stops when the server shuts down.

use std::time::Duration;

use diax_sdk::client::RetryPolicy;
use diax_sdk::{KeyId, Keyring};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{ApiError, ApiResult};
use crate::outbound::{Subject, send_signed};
use crate::state::AppState;
use crate::store::jobs::JobRow;
use crate::store::notifications;

/// The key id notifications are signed under (users hold one secret each).
const NOTIFICATION_KEY_ID: &str = "key_notifications";

/// Most notifications sent in one round; each notification URL gets at most its
/// destination's in-flight bound of them, so one URL with many notifications due never fills
/// a round and starves the others.
const ROUND: i64 = 50;

/// Records notification `event` about `job` for its user and wakes the deliverer.
///
/// # Errors
/// Database errors.
pub(crate) async fn notify_job(state: &AppState, job: &JobRow, event: &str) -> ApiResult<()> {
    notifications::record_for_job(&state.db, job, event, state.clock.now()).await?;
    state.wake_notifier.notify_one();
    Ok(())
}

/// Runs until `stop` turns true; deliveries still in flight then are abandoned (they stay
/// due and are sent again later).
pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.cfg.notify_interval_ms.max(10));
    let mut tasks = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        if let Err(e) = deliver_due(&state, &mut tasks).await {
            tracing::warn!(error = %e, "notification delivery round failed");
        }
        tokio::select! {
            _ = stop.changed() => break,
            () = state.wake_notifier.notified() => {}
            () = tokio::time::sleep(interval) => {}
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.abort_all();
}

/// One delivery round: a concurrent delivery task (in `tasks`) for every due notification of
/// a user with a notification URL, as far as its destination has room
/// ([`AppState::enter`]): a slow destination delays only its own notifications.
pub(crate) async fn deliver_due(state: &AppState, tasks: &mut JoinSet<()>) -> ApiResult<()> {
    let due = notifications::due(
        &state.db,
        state.clock.now_ms(),
        state.cfg.notify_max_attempts,
        ROUND,
        i64::from(state.cfg.max_in_flight_per_destination.max(1)),
    )
    .await?;
    let key_id =
        KeyId::parse(NOTIFICATION_KEY_ID).map_err(|e| ApiError::Internal(e.to_string()))?;
    for n in due {
        let Some(slot) = state.enter(&n.url, state.clock.now_ms()) else {
            continue;
        };
        let state = state.clone();
        let key_id = key_id.clone();
        tasks.spawn(async move {
            let Some(_claim) = state.notifications_in_flight.claim(n.id.as_str()) else {
                return;
            };
            let id = n.id.clone();
            match deliver_one(&state, key_id, n).await {
                Ok(ok) => slot.done(ok, state.clock.now_ms()),
                Err(e) => {
                    tracing::warn!(notification = %id, error = %e, "notification delivery failed unexpectedly");
                }
            }
        });
    }
    Ok(())
}

/// One attempt at one notification; `true` when delivered.
async fn deliver_one(state: &AppState, key_id: KeyId, n: notifications::Due) -> ApiResult<bool> {
    let ring = Keyring::single(key_id, n.secret);
    let subject = Subject {
        provider_id: None,
        job_id: Some(n.job_id.clone()),
        label: Some("notification to the user".into()),
    };
    let outcome = send_signed(state, &n.url, &n.id, n.body.as_bytes(), &ring, 1, &subject).await;
    let ok = matches!(&outcome, Ok(a) if (200..300).contains(&a.status));
    if ok {
        notifications::delivered(&state.db, &n.id, state.clock.now()).await?;
    } else {
        let why = match outcome {
            Ok(a) => format!("answered {}", a.status),
            Err(e) => e,
        };
        let attempts = n.attempts.saturating_add(1);
        let policy = RetryPolicy {
            max_attempts: state.cfg.notify_max_attempts,
            initial_backoff: Duration::from_millis(state.cfg.notify_backoff_ms.max(1)),
            max_backoff: Duration::from_millis(state.cfg.notify_max_backoff_ms.max(1)),
            multiplier: 2.0,
        };
        let delay = u64::try_from(policy.delay(attempts, None).as_millis()).unwrap_or(u64::MAX);
        let next = state
            .clock
            .now_ms()
            .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        tracing::info!(notification = %n.id, attempts, delay_ms = delay, error = %why, "notification delivery failed; will retry");
        notifications::failed(&state.db, &n.id, attempts, next, &why).await?;
    }
    Ok(ok)
}
