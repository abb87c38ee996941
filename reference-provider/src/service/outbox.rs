//! The durable outbox of signed job events.
//!
//! Events are written in the same transaction as the state change they announce, each with
//! its `webhook-id` fixed at that moment. Any instance delivers them: a message is claimed
//! with a lease, sent once (re-signed with a fresh timestamp), and then marked delivered
//! (2xx), dead (a 4xx other than 408/429: the broker will never accept it; logged), or
//! scheduled again with the SDK's backoff ([`RetryPolicy::delay`]). Messages of one job go
//! out in sequence order: a message waits while an earlier one of its job is pending.

use std::time::Duration;

use diax_sdk::client::{RetryPolicy, retry_after};
use diax_sdk::clock::unix_now;
use diax_sdk::util::ErrorChain;
use diax_sdk::wire::{JobEvent, JobEventKind};
use diax_sdk::{MessageId, ProviderId, ProviderJobId};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::Service;
use super::db::{Tx, exec, fetch_optional, ms, now_ms};
use super::queue::{self, JobRow};

/// Where an outbox message is: the `outbox.state` column.
///
/// | from | to | by |
/// |---|---|---|
/// | (none) | `pending` | [`enqueue`], in the transaction of the change it announces |
/// | `pending` | `pending` | a failed attempt that may be retried (next attempt scheduled) |
/// | `pending` | `delivered` | a 2xx answer |
/// | `pending` | `dead` | a final refusal (4xx other than 408/429), an unusable stored id, a `job.completed` whose result expired |
///
/// `delivered` and `dead` are final. [`OutboxState::can_become`] is this table; every move
/// is the guarded `UPDATE` in `finish` (only a `pending` row leased by the caller moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Acknowledged by the broker.
    Delivered,
    /// Given up for good.
    Dead,
}

impl OutboxState {
    /// Every state.
    pub const ALL: [OutboxState; 3] = [
        OutboxState::Pending,
        OutboxState::Delivered,
        OutboxState::Dead,
    ];

    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }

    /// Whether a message may move from `self` to `next` (the table above).
    #[must_use]
    pub fn can_become(self, next: OutboxState) -> bool {
        use OutboxState::{Dead, Delivered, Pending};
        matches!((self, next), (Pending, Pending | Delivered | Dead))
    }

    /// Whether no transition leaves this state.
    #[must_use]
    pub fn is_final(self) -> bool {
        OutboxState::ALL.iter().all(|&next| !self.can_become(next))
    }
}

impl std::fmt::Display for OutboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored outbox state that is none of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown outbox state {0:?}")]
pub struct UnknownOutboxState(String);

impl TryFrom<String> for OutboxState {
    type Error = UnknownOutboxState;
    fn try_from(s: String) -> Result<Self, UnknownOutboxState> {
        OutboxState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownOutboxState(s))
    }
}

/// A claimed outbox message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// `webhook-id`.
    #[sqlx(try_from = "String")]
    pub message_id: MessageId,
    /// The job.
    #[sqlx(try_from = "String")]
    pub provider_job_id: ProviderJobId,
    /// Per-job sequence.
    pub sequence: i64,
    /// `job.progress`, …
    pub event_type: String,
    /// Where to.
    pub url: String,
    /// The JSON body, as signed.
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// What [`try_deliver_outbox`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Nothing was due.
    Empty,
    /// Acknowledged with a 2xx.
    Delivered {
        /// `webhook-id`.
        message_id: String,
        /// HTTP status.
        status: u16,
    },
    /// Will be retried.
    Retry {
        /// `webhook-id`.
        message_id: String,
        /// Why.
        reason: String,
        /// When, from now.
        after: Duration,
    },
    /// Refused for good (4xx other than 408/429).
    Dead {
        /// `webhook-id`.
        message_id: String,
        /// HTTP status.
        status: u16,
    },
}

/// Adds an event for `job` to the outbox inside the caller's transaction, taking the job's
/// next sequence number. Returns the message id.
///
/// # Errors
/// Database errors.
pub async fn enqueue(
    tx: &mut Tx,
    job: &JobRow,
    provider_id: &ProviderId,
    kind: JobEventKind,
) -> Result<MessageId, sqlx::Error> {
    let seq = queue::take_sequence(tx, job.provider_job_id.as_str()).await?;
    let event_type = kind.name();
    let event = JobEvent {
        job_id: job.broker_id(),
        provider_job_id: job.id(),
        provider_id: provider_id.clone(),
        sequence: u64::try_from(seq).unwrap_or(0),
        occurred_at: unix_now(),
        kind,
    };
    let body = serde_json::to_string(&event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let id = MessageId::generate();
    exec!(
        tx,
        "INSERT INTO outbox (message_id, provider_job_id, sequence, event_type, url, body, state,
                             attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
        id.as_str(),
        job.provider_job_id.as_str(),
        seq,
        event_type,
        &job.events_url,
        body,
        OutboxState::Pending.as_str(),
        now_ms()
    )?;
    tracing::debug!(job = %job.provider_job_id, message_id = %id, event = event_type, sequence = seq, "event queued");
    Ok(id)
}

async fn claim(service: &Service, owner: &str) -> Result<Option<OutboxRow>, sqlx::Error> {
    let now = now_ms();
    let until = now.saturating_add(ms(service.config().outbox_lease));
    let mut tx = service.db().begin().await?;
    let row = match &mut tx {
        Tx::Sqlite(t) => {
            sqlx::query_as::<_, OutboxRow>(
                "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
                 WHERE message_id = (
                     SELECT o.message_id FROM outbox o
                     WHERE o.state = 'pending' AND o.next_attempt_at <= $3
                       AND (o.lease_until IS NULL OR o.lease_until < $3)
                       AND NOT EXISTS (SELECT 1 FROM outbox p
                                       WHERE p.provider_job_id = o.provider_job_id
                                         AND p.state = 'pending' AND p.sequence < o.sequence)
                     ORDER BY o.next_attempt_at LIMIT 1)
                 RETURNING message_id, provider_job_id, sequence, event_type, url, body, attempts",
            )
            .bind(owner)
            .bind(until)
            .bind(now)
            .fetch_optional(&mut **t)
            .await?
        }
        Tx::Postgres(t) => {
            sqlx::query_as::<_, OutboxRow>(
                "UPDATE outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
                 WHERE message_id = (
                     SELECT o.message_id FROM outbox o
                     WHERE o.state = 'pending' AND o.next_attempt_at <= $3
                       AND (o.lease_until IS NULL OR o.lease_until < $3)
                       AND NOT EXISTS (SELECT 1 FROM outbox p
                                       WHERE p.provider_job_id = o.provider_job_id
                                         AND p.state = 'pending' AND p.sequence < o.sequence)
                     ORDER BY o.next_attempt_at LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING message_id, provider_job_id, sequence, event_type, url, body, attempts",
            )
            .bind(owner)
            .bind(until)
            .bind(now)
            .fetch_optional(&mut **t)
            .await?
        }
    };
    tx.commit().await?;
    Ok(row)
}

async fn finish(
    service: &Service,
    row: &OutboxRow,
    owner: &str,
    state: OutboxState,
    status: Option<u16>,
    error: Option<String>,
    next_attempt_at: i64,
) -> Result<(), sqlx::Error> {
    debug_assert!(OutboxState::Pending.can_become(state));
    let now = now_ms();
    let mut tx = service.db().begin().await?;
    exec!(
        &mut tx,
        "UPDATE outbox SET state = $1, last_status = $2, last_error = $3, next_attempt_at = $4,
                lease_owner = NULL, lease_until = NULL,
                delivered_at = CASE WHEN $1 = 'delivered' THEN $5 ELSE delivered_at END
         WHERE message_id = $6 AND lease_owner = $7 AND state = $8",
        state.as_str(),
        status.map(i64::from),
        error,
        next_attempt_at,
        now,
        row.message_id.as_str(),
        owner,
        OutboxState::Pending.as_str()
    )?;
    tx.commit().await
}

/// Claims one due outbox message and delivers it once. Public so tests (and operators)
/// can drive delivery without timers.
///
/// # Errors
/// Database errors (delivery failures are outcomes, not errors).
pub async fn try_deliver_outbox(
    service: &Service,
    owner: &str,
) -> Result<DeliveryOutcome, sqlx::Error> {
    let Some(row) = claim(service, owner).await? else {
        return Ok(DeliveryOutcome::Empty);
    };
    let span = tracing::info_span!("deliver", job = %row.provider_job_id, message_id = %row.message_id, event = %row.event_type);
    deliver(service, owner, row).instrument(span).await
}

async fn deliver(
    service: &Service,
    owner: &str,
    row: OutboxRow,
) -> Result<DeliveryOutcome, sqlx::Error> {
    let policy = service.config().retry_policy();
    let attempt = u32::try_from(row.attempts.max(1)).unwrap_or(u32::MAX);
    let id = match MessageId::parse(row.message_id.clone()) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "stored message id is invalid; dropping");
            finish(
                service,
                &row,
                owner,
                OutboxState::Dead,
                None,
                Some(e.to_string()),
                now_ms(),
            )
            .await?;
            return Ok(DeliveryOutcome::Dead {
                message_id: row.message_id.to_string(),
                status: 0,
            });
        }
    };
    if row.event_type == "job.completed"
        && result_expired(service, row.provider_job_id.as_str()).await?
    {
        let reason = "the result credential expired before the broker acknowledged the event";
        tracing::warn!(reason, "job.completed stopped");
        finish(
            service,
            &row,
            owner,
            OutboxState::Dead,
            None,
            Some(reason.to_owned()),
            now_ms(),
        )
        .await?;
        return Ok(DeliveryOutcome::Dead {
            message_id: row.message_id.to_string(),
            status: 0,
        });
    }
    let keyring = service.verifier().keyring();
    let result = service
        .sender()
        .send_once(&row.url, &id, row.body.clone().into_bytes(), &keyring)
        .await;
    let retry = |reason: String, hint: Option<Duration>| {
        let after = policy.delay(attempt, hint);
        (reason, after)
    };
    let outcome = match result {
        Ok(resp) if resp.is_success() => {
            finish(
                service,
                &row,
                owner,
                OutboxState::Delivered,
                Some(resp.status),
                None,
                now_ms(),
            )
            .await?;
            tracing::info!(
                status = resp.status,
                attempts = row.attempts,
                "event delivered"
            );
            DeliveryOutcome::Delivered {
                message_id: row.message_id.to_string(),
                status: resp.status,
            }
        }
        Ok(resp) if !RetryPolicy::is_retryable_status(resp.status) => {
            let detail = resp.problem().map(|p| p.to_string()).unwrap_or_else(|| {
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned()
            });
            tracing::warn!(status = resp.status, detail = %detail, "event refused for good");
            finish(
                service,
                &row,
                owner,
                OutboxState::Dead,
                Some(resp.status),
                Some(detail),
                now_ms(),
            )
            .await?;
            DeliveryOutcome::Dead {
                message_id: row.message_id.to_string(),
                status: resp.status,
            }
        }
        Ok(resp) => {
            let (reason, after) =
                retry(format!("HTTP {}", resp.status), retry_after(&resp.headers));
            tracing::info!(
                status = resp.status,
                retry_in_ms = ms(after),
                "event not acknowledged; will retry"
            );
            finish(
                service,
                &row,
                owner,
                OutboxState::Pending,
                Some(resp.status),
                Some(reason.clone()),
                now_ms() + ms(after),
            )
            .await?;
            DeliveryOutcome::Retry {
                message_id: row.message_id.to_string(),
                reason,
                after,
            }
        }
        Err(e) => {
            let (reason, after) = retry(ErrorChain(&e).to_string(), None);
            tracing::info!(error = %reason, retry_in_ms = ms(after), "event delivery failed; will retry");
            finish(
                service,
                &row,
                owner,
                OutboxState::Pending,
                None,
                Some(reason.clone()),
                now_ms() + ms(after),
            )
            .await?;
            DeliveryOutcome::Retry {
                message_id: row.message_id.to_string(),
                reason,
                after,
            }
        }
    };
    Ok(outcome)
}

/// Whether the job's result can no longer be fetched: its newest result credential expired
/// (or was swept).
async fn result_expired(service: &Service, provider_job_id: &str) -> Result<bool, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Newest {
        expires_at: Option<i64>,
    }
    let mut tx = service.db().begin().await?;
    let newest = fetch_optional!(
        &mut tx,
        Newest,
        "SELECT MAX(expires_at) AS expires_at FROM result_credentials WHERE provider_job_id = $1",
        provider_job_id
    )?;
    tx.commit().await?;
    let now = diax_sdk::clock::unix_now();
    Ok(newest.and_then(|n| n.expires_at).is_none_or(|at| at <= now))
}

/// Releases every outbox message leased by this instance (on shutdown).
///
/// # Errors
/// Database errors.
pub async fn release_instance(service: &Service) -> Result<u64, sqlx::Error> {
    let pattern = format!("{}/%", service.instance_id());
    let mut tx = service.db().begin().await?;
    let n = exec!(
        &mut tx,
        "UPDATE outbox SET lease_owner = NULL, lease_until = NULL
         WHERE state = 'pending' AND lease_owner LIKE $1",
        pattern
    )?;
    tx.commit().await?;
    Ok(n)
}

/// Counts of outbox messages by state: (pending, delivered, dead).
///
/// # Errors
/// Database errors.
pub async fn counts(service: &Service) -> Result<(i64, i64, i64), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct C {
        pending: i64,
        delivered: i64,
        dead: i64,
    }
    let mut tx = service.db().begin().await?;
    let c = fetch_optional!(
        &mut tx,
        C,
        "SELECT
            COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS pending,
            COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0) AS delivered,
            COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0) AS dead
         FROM outbox"
    )?;
    tx.commit().await?;
    Ok(c.map_or((0, 0, 0), |c| (c.pending, c.delivered, c.dead)))
}

/// The delivery loop of one outbox worker: deliver while there is something due, otherwise
/// wait for a wake-up or the poll interval; stop when `stop` turns true.
pub async fn run_delivery(service: Service, index: usize, mut stop: watch::Receiver<bool>) {
    let owner = format!("{}/o{index}", service.instance_id());
    let poll = service.config().poll_interval;
    loop {
        if *stop.borrow() {
            return;
        }
        let idle = match try_deliver_outbox(&service, &owner).await {
            Ok(DeliveryOutcome::Empty) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "outbox delivery failed");
                true
            }
        };
        if idle {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = service.inner.wake_outbox.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutboxState::{self, Dead, Delivered, Pending};

    /// The whole transition table: every pair, allowed or not.
    #[test]
    fn outbox_transitions() {
        let allowed = [(Pending, Pending), (Pending, Delivered), (Pending, Dead)];
        for from in OutboxState::ALL {
            for to in OutboxState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        let finals: Vec<_> = OutboxState::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(finals, [Delivered, Dead]);
    }

    #[test]
    fn stored_names_round_trip_and_unknown_ones_are_errors() {
        for s in OutboxState::ALL {
            assert_eq!(OutboxState::try_from(s.as_str().to_owned()).unwrap(), s);
        }
        let e = OutboxState::try_from("sent".to_owned()).unwrap_err();
        assert!(e.to_string().contains("\"sent\""), "{e}");
    }
}
