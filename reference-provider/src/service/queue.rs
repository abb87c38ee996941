//! The durable job queue.
//!
//! A job row is created `accepted` when an offer is accepted, becomes claimable once its
//! input arrives, is `running` while a worker holds its lease (renewed by heartbeats), and
//! ends `completed` or `failed`. A `running` job whose lease expired (its worker died) is
//! claimable again. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so concurrent workers
//! of several instances never claim the same row; SQLite claims with a single `UPDATE …
//! RETURNING` inside a `BEGIN IMMEDIATE` transaction (one writer at a time).

use std::time::Duration;

use diax_sdk::wire::{JobState, JobStatus};
use diax_sdk::{JobId, Problem, ProviderJobId};

use super::Service;
use super::db::{Db, Tx, exec, fetch_optional, ms, now_ms};

/// The columns of `jobs`, in [`JobRow`] order.
macro_rules! job_cols {
    () => {
        "provider_job_id, broker_job_id, offer_message_id, account_id, broker_user_id, events_url,
         operation, model_name, model_size, model_sha256, quote_amount, currency, state, progress,
         input_json, problem_json, result_json, next_sequence, attempts, not_before, lease_owner,
         lease_until, created_at, updated_at"
    };
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct JobRow {
    pub provider_job_id: String,
    pub broker_job_id: String,
    pub offer_message_id: String,
    pub account_id: String,
    pub broker_user_id: String,
    pub events_url: String,
    pub operation: String,
    pub model_name: String,
    pub model_size: i64,
    pub model_sha256: String,
    pub quote_amount: i64,
    pub currency: String,
    /// `accepted`, `running`, `completed` or `failed`.
    pub state: String,
    pub progress: Option<i64>,
    /// The broker's `Download` (JSON), once `job.input` arrived.
    pub input_json: Option<String>,
    pub problem_json: Option<String>,
    pub result_json: Option<String>,
    pub next_sequence: i64,
    pub attempts: i64,
    /// Unix ms before which the job is not claimed (retry delay).
    pub not_before: i64,
    pub lease_owner: Option<String>,
    /// Unix ms.
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl JobRow {
    /// The wire state.
    #[must_use]
    pub fn wire_state(&self) -> JobState {
        match self.state.as_str() {
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            _ => JobState::Accepted,
        }
    }

    /// The provider job id, typed.
    #[must_use]
    pub fn id(&self) -> ProviderJobId {
        ProviderJobId::parse(self.provider_job_id.clone())
            .unwrap_or_else(|_| ProviderJobId::generate())
    }

    /// The broker job id, typed.
    #[must_use]
    pub fn broker_id(&self) -> JobId {
        JobId::parse(self.broker_job_id.clone()).unwrap_or_else(|_| JobId::generate())
    }

    /// The status document (`GET status_url`).
    #[must_use]
    pub fn status(&self) -> JobStatus {
        JobStatus {
            job_id: self.broker_id(),
            provider_job_id: self.id(),
            state: self.wire_state(),
            progress: self
                .progress
                .and_then(|p| u8::try_from(p.clamp(0, 100)).ok()),
            problem: self
                .problem_json
                .as_deref()
                .and_then(|p| serde_json::from_str::<Problem>(p).ok()),
            updated_at: self.updated_at / 1000,
        }
    }
}

/// A job by provider job id, inside a transaction.
///
/// # Errors
/// Database errors.
pub async fn find(tx: &mut Tx, provider_job_id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    fetch_optional!(
        tx,
        JobRow,
        concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE provider_job_id = $1"
        ),
        provider_job_id
    )
}

/// A job by broker job id, inside a transaction.
///
/// # Errors
/// Database errors.
pub async fn find_by_broker_job(
    tx: &mut Tx,
    broker_job_id: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    fetch_optional!(
        tx,
        JobRow,
        concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE broker_job_id = $1"
        ),
        broker_job_id
    )
}

/// A job by provider job id.
///
/// # Errors
/// Database errors.
pub async fn get(db: &Db, provider_job_id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let row = find(&mut tx, provider_job_id).await?;
    tx.commit().await?;
    Ok(row)
}

/// Claims the oldest claimable job for `owner` with a lease of `lease`: an `accepted` job
/// with its input, or a `running` job whose lease expired. Counts the attempt.
///
/// # Errors
/// Database errors.
pub async fn claim(db: &Db, owner: &str, lease: Duration) -> Result<Option<JobRow>, sqlx::Error> {
    let now = now_ms();
    let until = now.saturating_add(ms(lease));
    let mut tx = db.begin().await?;
    let row = match &mut tx {
        Tx::Sqlite(t) => {
            sqlx::query_as::<_, JobRow>(concat!(
                "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2,
                        attempts = attempts + 1, updated_at = $3
                 WHERE provider_job_id = (
                     SELECT provider_job_id FROM jobs
                     WHERE ((state = 'accepted' AND input_json IS NOT NULL AND not_before <= $3)
                            OR (state = 'running' AND lease_until < $3))
                     ORDER BY created_at LIMIT 1)
                 RETURNING ",
                job_cols!()
            ))
            .bind(owner)
            .bind(until)
            .bind(now)
            .fetch_optional(&mut **t)
            .await?
        }
        Tx::Postgres(t) => {
            sqlx::query_as::<_, JobRow>(concat!(
                "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2,
                        attempts = attempts + 1, updated_at = $3
                 WHERE provider_job_id = (
                     SELECT provider_job_id FROM jobs
                     WHERE ((state = 'accepted' AND input_json IS NOT NULL AND not_before <= $3)
                            OR (state = 'running' AND lease_until < $3))
                     ORDER BY created_at LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING ",
                job_cols!()
            ))
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

/// Extends the lease of a job `owner` still holds; `false` when it lost it.
///
/// # Errors
/// Database errors.
pub async fn heartbeat(
    db: &Db,
    provider_job_id: &str,
    owner: &str,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let n = exec!(
        &mut tx,
        "UPDATE jobs SET lease_until = $1
         WHERE provider_job_id = $2 AND lease_owner = $3 AND state = 'running'",
        now_ms().saturating_add(ms(lease)),
        provider_job_id,
        owner
    )?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Gives a job back to the queue (claimable after `delay`), if `owner` still holds it.
///
/// # Errors
/// Database errors.
pub async fn release(
    db: &Db,
    provider_job_id: &str,
    owner: &str,
    delay: Duration,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let n = exec!(
        &mut tx,
        "UPDATE jobs SET state = 'accepted', lease_owner = NULL, lease_until = NULL,
                not_before = $1, updated_at = $2
         WHERE provider_job_id = $3 AND lease_owner = $4 AND state = 'running'",
        now.saturating_add(ms(delay)),
        now,
        provider_job_id,
        owner
    )?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Releases every job leased by this instance (on shutdown).
///
/// # Errors
/// Database errors.
pub async fn release_instance(service: &Service) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let pattern = format!("{}/%", service.instance_id());
    let mut tx = service.db().begin().await?;
    let n = exec!(
        &mut tx,
        "UPDATE jobs SET state = 'accepted', lease_owner = NULL, lease_until = NULL, updated_at = $1
         WHERE state = 'running' AND lease_owner LIKE $2",
        now,
        pattern
    )?;
    tx.commit().await?;
    if n > 0 {
        tracing::info!(jobs = n, "released in-flight jobs");
    }
    Ok(n)
}

/// Records progress (for `GET status_url`) if `owner` holds the job.
///
/// # Errors
/// Database errors.
pub async fn set_progress(
    tx: &mut Tx,
    provider_job_id: &str,
    owner: &str,
    percent: u8,
) -> Result<bool, sqlx::Error> {
    let n = exec!(
        tx,
        "UPDATE jobs SET progress = $1, updated_at = $2
         WHERE provider_job_id = $3 AND lease_owner = $4 AND state = 'running'",
        i64::from(percent),
        now_ms(),
        provider_job_id,
        owner
    )?;
    Ok(n == 1)
}
