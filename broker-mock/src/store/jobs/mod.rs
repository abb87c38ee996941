//! Jobs: created for a user's request, offered to the provider, moved by the provider's
//! events, and the bookkeeping of their `job.input` delivery. Owns `jobs` and `job_events`;
//! this is the only module that writes them, and every change of `jobs.state` is a step of
//! the state machine in [`state`].
//!
//! `job.input` delivery (PROTOCOL §5.5) lives in the `input_*` columns: none while no input
//! is owed (offered, rejected); `pending` once the provider accepted (due at
//! `input_next_attempt_ms`); then `delivered` (taken, or a `409`: it had it already),
//! `failed` (refused, or every attempt failed: the job fails too), or `stopped` (the job
//! moved on first; a late confirmation still makes it `delivered`).

pub(crate) mod state;

use diax_sdk::wire::{
    InputDelivery, InputDeliveryState, Job, JobAccepted, JobEvent, JobEventKind, JobState,
    ModelVersionRef,
};
use diax_sdk::{JobId, ModelId, Problem, ProviderId, ProviderJobId, Quote, UserId};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqliteConnection, SqlitePool};

use self::state::Trigger;
use super::models::{self, NewVersion};
use super::{id, opt_id, opt_json, parsed, to_json_text};
use crate::error::{ApiError, ApiResult};

/// A job as stored, typed.
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    pub(crate) id: JobId,
    pub(crate) user_id: UserId,
    pub(crate) provider_id: ProviderId,
    pub(crate) model_id: ModelId,
    pub(crate) version: u32,
    pub(crate) operation: String,
    pub(crate) params: Option<Value>,
    pub(crate) state: JobState,
    pub(crate) provider_job_id: Option<ProviderJobId>,
    pub(crate) status_url: Option<String>,
    pub(crate) quote: Option<Quote>,
    pub(crate) progress: Option<u8>,
    pub(crate) problem: Option<Problem>,
    pub(crate) result_version: Option<u32>,
    pub(crate) report: Option<Value>,
    /// What the provider reported it charged, from its `job.completed` or `job.failed`.
    pub(crate) charged: Option<Quote>,
    pub(crate) last_sequence: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// The `job.input` delivery; none before the provider accepted.
    pub(crate) input: Option<InputRow>,
}

/// The `job.input` delivery of a job, as stored.
#[derive(Debug, Clone)]
pub(crate) struct InputRow {
    pub(crate) state: InputDeliveryState,
    pub(crate) attempts: u32,
    /// When the next attempt is due, Unix milliseconds.
    pub(crate) next_attempt_ms: Option<i64>,
    pub(crate) last_attempt_at: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) delivered_at: Option<i64>,
}

const INPUT_STATES: [InputDeliveryState; 4] = [
    InputDeliveryState::Pending,
    InputDeliveryState::Delivered,
    InputDeliveryState::Failed,
    InputDeliveryState::Stopped,
];

fn parse_input_state(s: &str) -> Option<InputDeliveryState> {
    INPUT_STATES.into_iter().find(|st| st.as_str() == s)
}

impl<'r> FromRow<'r, SqliteRow> for JobRow {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        let input = match row.try_get::<Option<String>, _>("input_state")? {
            None => None,
            Some(_) => Some(InputRow {
                state: parsed(row, "input_state", parse_input_state)?,
                attempts: row.try_get("input_attempts")?,
                next_attempt_ms: row.try_get("input_next_attempt_ms")?,
                last_attempt_at: row.try_get("input_last_attempt_at")?,
                last_error: row.try_get("input_last_error")?,
                delivered_at: row.try_get("input_delivered_at")?,
            }),
        };
        Ok(Self {
            id: id(row, "id")?,
            user_id: id(row, "user_id")?,
            provider_id: id(row, "provider_id")?,
            model_id: id(row, "model_id")?,
            version: row.try_get("version")?,
            operation: row.try_get("operation")?,
            params: opt_json(row, "params")?,
            state: parsed(row, "state", state::parse)?,
            provider_job_id: opt_id(row, "provider_job_id")?,
            status_url: row.try_get("status_url")?,
            quote: opt_json(row, "quote")?,
            progress: row.try_get("progress")?,
            problem: opt_json(row, "problem")?,
            result_version: row.try_get("result_version")?,
            report: opt_json(row, "report")?,
            charged: opt_json(row, "charged")?,
            last_sequence: row.try_get("last_sequence")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            input,
        })
    }
}

impl JobRow {
    /// The input delivery as the user sees it.
    fn input_delivery(&self) -> Option<InputDelivery> {
        let input = self.input.as_ref()?;
        Some(InputDelivery {
            state: input.state,
            attempts: input.attempts,
            last_attempt_at: input.last_attempt_at,
            next_attempt_at: input
                .next_attempt_ms
                .filter(|_| input.state == InputDeliveryState::Pending)
                .map(|ms| ms.saturating_add(999).div_euclid(1000)),
            delivered_at: input.delivered_at,
            last_error: input.last_error.clone(),
        })
    }

    /// The result version as a reference to the job's model.
    pub(crate) fn result(&self) -> Option<ModelVersionRef> {
        self.result_version.map(|version| ModelVersionRef {
            model_id: self.model_id.clone(),
            version,
        })
    }

    /// The job as its owner sees it.
    pub(crate) fn to_wire(&self) -> Job {
        Job {
            job_id: self.id.clone(),
            provider_id: self.provider_id.clone(),
            input: ModelVersionRef {
                model_id: self.model_id.clone(),
                version: self.version,
            },
            operation: self.operation.clone(),
            state: self.state,
            provider_job_id: self.provider_job_id.clone(),
            status_url: self.status_url.clone(),
            quote: self.quote.clone(),
            progress: self.progress,
            problem: self.problem.clone(),
            result: self.result(),
            report: self.report.clone(),
            charged: self.charged.clone(),
            input_delivery: self.input_delivery(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The job with this id, whoever owns it.
pub(crate) async fn find(db: &SqlitePool, id: &JobId) -> ApiResult<Option<JobRow>> {
    Ok(sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(db)
        .await?)
}

/// The job with this id, which must exist (the caller just wrote it).
pub(crate) async fn get(db: &SqlitePool, id: &JobId) -> ApiResult<JobRow> {
    find(db, id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("job {id} vanished")))
}

/// `user`'s job `id`, or `NotFound` (also when it is someone else's).
pub(crate) async fn owned(db: &SqlitePool, user: &UserId, id: &JobId) -> ApiResult<JobRow> {
    match find(db, id).await? {
        Some(job) if job.user_id == *user => Ok(job),
        _ => Err(ApiError::NotFound(format!("no job {id}"))),
    }
}

/// `user`'s jobs, newest first.
pub(crate) async fn list(db: &SqlitePool, user: &UserId) -> ApiResult<Vec<Job>> {
    let rows: Vec<JobRow> =
        sqlx::query_as("SELECT * FROM jobs WHERE user_id = $1 ORDER BY created_at DESC, id DESC")
            .bind(user.as_str())
            .fetch_all(db)
            .await?;
    Ok(rows.iter().map(JobRow::to_wire).collect())
}

/// An operation name: 1–64 letters, digits, `-`, `_` or `.`.
pub(crate) fn check_operation(operation: &str) -> ApiResult<()> {
    if operation.is_empty()
        || operation.len() > 64
        || !operation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::InvalidRequest(
            "operation must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    Ok(())
}

/// What a new job is.
pub(crate) struct NewJob<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) provider: &'a ProviderId,
    pub(crate) model: &'a ModelId,
    pub(crate) version: u32,
    pub(crate) operation: &'a str,
    pub(crate) params: &'a Value,
}

/// Creates a job in state `offered` (its operation checked); returns its id.
pub(crate) async fn create(db: &SqlitePool, new: &NewJob<'_>, now: i64) -> ApiResult<JobId> {
    check_operation(new.operation)?;
    let params = (!new.params.is_null()).then(|| new.params.to_string());
    let job_id = JobId::generate();
    sqlx::query(
        "INSERT INTO jobs (id, user_id, provider_id, model_id, version, operation, params, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(job_id.as_str())
    .bind(new.user.as_str())
    .bind(new.provider.as_str())
    .bind(new.model.as_str())
    .bind(new.version)
    .bind(new.operation)
    .bind(&params)
    .bind(JobState::Offered.as_str())
    .bind(now)
    .execute(db)
    .await?;
    Ok(job_id)
}

/// `(from, to)` of a step the broker takes itself; a step the machine does not have is a
/// bug, not a request error.
fn step(from: JobState, trigger: Trigger) -> ApiResult<(JobState, JobState)> {
    state::next(from, trigger)
        .map(|to| (from, to))
        .ok_or_else(|| ApiError::Internal(format!("no transition from {from} on {trigger:?}")))
}

/// `Conflict` unless `job` may be offered again.
pub(crate) fn ensure_retryable(job: &JobRow) -> ApiResult<()> {
    match state::next(job.state, Trigger::Retry) {
        Some(_) => Ok(()),
        None => Err(ApiError::Conflict(format!(
            "job {} is {}; only a rejected job can be retried",
            job.id, job.state
        ))),
    }
}

/// Claims a retry of a rejected job atomically (so two concurrent retries do not both
/// offer): `rejected → offered`, its problem cleared.
pub(crate) async fn claim_retry(db: &SqlitePool, job: &JobId, now: i64) -> ApiResult<()> {
    let (from, to) = step(JobState::Rejected, Trigger::Retry)?;
    let claimed = sqlx::query(
        "UPDATE jobs SET state = $4, problem = NULL, updated_at = $2 WHERE id = $1 AND state = $3",
    )
    .bind(job.as_str())
    .bind(now)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(db)
    .await?;
    if claimed.rows_affected() != 1 {
        return Err(ApiError::Conflict(format!(
            "job {job} is being retried already"
        )));
    }
    Ok(())
}

/// Stores a quote as JSON text.
fn quote_text(q: Option<&Quote>) -> ApiResult<Option<String>> {
    q.map(to_json_text).transpose()
}

/// The provider accepted the offer: `offered → accepted`, and the input is owed from now on
/// (pending, due at `now_ms`). `false` when the job was no longer `offered`.
pub(crate) async fn offer_accepted(
    db: &SqlitePool,
    job: &JobId,
    accepted: &JobAccepted,
    now: i64,
    now_ms: i64,
) -> ApiResult<bool> {
    let (from, to) = step(JobState::Offered, Trigger::OfferAccepted)?;
    let done = sqlx::query(
        "UPDATE jobs SET state = $8, provider_job_id = $2, status_url = $3, quote = $4, problem = NULL, updated_at = $5,
           input_state = $9, input_attempts = 0, input_next_attempt_ms = $6, input_last_attempt_at = NULL,
           input_last_error = NULL, input_delivered_at = NULL
         WHERE id = $1 AND state = $7",
    )
    .bind(job.as_str())
    .bind(accepted.provider_job_id.as_str())
    .bind(&accepted.status_url)
    .bind(quote_text(accepted.quote.as_ref())?)
    .bind(now)
    .bind(now_ms)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(InputDeliveryState::Pending.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The offer was refused (`problem` says why): `offered → rejected`. `false` when the job
/// was no longer `offered`.
pub(crate) async fn offer_refused(
    db: &SqlitePool,
    job: &JobId,
    problem: &Problem,
    now: i64,
) -> ApiResult<bool> {
    let (from, to) = step(JobState::Offered, Trigger::OfferRefused)?;
    let done = sqlx::query(
        "UPDATE jobs SET state = $5, problem = $2, updated_at = $3 WHERE id = $1 AND state = $4",
    )
    .bind(job.as_str())
    .bind(to_json_text(problem)?)
    .bind(now)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The canonical body of event `sequence` of `job`, if one was applied.
pub(crate) async fn recorded_event(
    db: &SqlitePool,
    job: &JobId,
    sequence: i64,
) -> ApiResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT body FROM job_events WHERE job_id = $1 AND sequence = $2")
            .bind(job.as_str())
            .bind(sequence)
            .fetch_optional(db)
            .await?,
    )
}

fn refused_event(job: &JobId, current: JobState, kind: &JobEventKind) -> ApiError {
    if current.is_terminal() {
        ApiError::InvalidTransition(format!(
            "job {job} is {current}; it accepts no {}",
            kind.name()
        ))
    } else {
        ApiError::InvalidTransition(format!(
            "job {job} is {current}; {} is not allowed now",
            kind.name()
        ))
    }
}

/// Whether a new event (not a duplicate) may be applied to `job` now: not after an end,
/// not out of order, and allowed by the state machine. Answers the state it leads to.
pub(crate) fn admit_event(job: &JobRow, event: &JobEvent, sequence: i64) -> ApiResult<JobState> {
    let current = job.state;
    if current.is_terminal() {
        return Err(refused_event(&job.id, current, &event.kind));
    }
    if sequence <= job.last_sequence {
        return Err(ApiError::InvalidTransition(format!(
            "sequence {} is not after the last one received ({})",
            event.sequence, job.last_sequence
        )));
    }
    state::next(current, Trigger::of_event(&event.kind))
        .ok_or_else(|| refused_event(&job.id, current, &event.kind))
}

/// Applies provider event `event` (admitted by [`admit_event`], stored as `canonical`) to
/// `job`: records it, moves the job along the state machine from the state it is in now,
/// and stops a pending input once the provider works on the job or ended it.
/// `result` is the fetched result of a `job.completed`: it is stored as a new model version
/// in the same transaction, so it exists exactly when the event was applied.
///
/// `Ok(None)`: a concurrent delivery recorded this sequence first (nothing changed).
pub(crate) async fn apply_event(
    db: &SqlitePool,
    job: &JobRow,
    event: &JobEvent,
    canonical: &str,
    sequence: i64,
    result: Option<&NewVersion<'_>>,
    now: i64,
) -> ApiResult<Option<JobState>> {
    let mut tx = crate::store::begin_write(db).await?;
    let inserted = sqlx::query(
        "INSERT INTO job_events (job_id, sequence, kind, body, received_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(job.id.as_str())
    .bind(sequence)
    .bind(event.kind.name())
    .bind(canonical)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() != 1 {
        return Ok(None);
    }
    // The result becomes a version in this transaction: if the event is refused, or the
    // request is dropped before the commit, there is no version without its event (and a
    // redelivery cannot make a second one).
    let result_version = match result {
        Some(new) => Some(models::add_version(&mut tx, new, now).await?),
        None => None,
    };
    let trigger = Trigger::of_event(&event.kind);
    // The broker's own steps (giving up an input) may have moved the job since it was read:
    // move it from where it is now, if the machine allows.
    let mut from = job.state;
    let to = loop {
        let to =
            state::next(from, trigger).ok_or_else(|| refused_event(&job.id, from, &event.kind))?;
        if set_event_state(
            &mut tx,
            &job.id,
            &event.kind,
            from,
            to,
            sequence,
            result_version,
            now,
        )
        .await?
        {
            break to;
        }
        let now_in: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(job.id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let current = state::parse(&now_in)
            .ok_or_else(|| super::corrupt("state", format!("unknown value {now_in:?}")))?;
        if current == from {
            return Err(ApiError::Internal(format!(
                "job {} did not change from {from}",
                job.id
            )));
        }
        from = current;
    };
    if to == JobState::Running || to.is_terminal() {
        // The provider works on the job (so it has the input) or ended it: stop sending it.
        sqlx::query(
            "UPDATE jobs SET input_state = $2, input_next_attempt_ms = NULL
             WHERE id = $1 AND input_state = $3",
        )
        .bind(job.id.as_str())
        .bind(InputDeliveryState::Stopped.as_str())
        .bind(InputDeliveryState::Pending.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(to))
}

/// One compare-and-set of the job's state and the columns `kind` carries; `false` when the
/// job is no longer in `from`.
#[allow(clippy::too_many_arguments)]
async fn set_event_state(
    tx: &mut SqliteConnection,
    job: &JobId,
    kind: &JobEventKind,
    from: JobState,
    to: JobState,
    sequence: i64,
    result_version: Option<u32>,
    now: i64,
) -> ApiResult<bool> {
    let done = match kind {
        JobEventKind::Accepted { quote } => {
            sqlx::query(
                "UPDATE jobs SET state = $6, quote = COALESCE($2, quote), last_sequence = $3, updated_at = $4
                 WHERE id = $1 AND state = $5",
            )
            .bind(job.as_str())
            .bind(quote_text(quote.as_ref())?)
            .bind(sequence)
            .bind(now)
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?
        }
        JobEventKind::Progress { percent, .. } => {
            sqlx::query(
                "UPDATE jobs SET state = $6, progress = $2, last_sequence = $3, updated_at = $4
                 WHERE id = $1 AND state = $5",
            )
            .bind(job.as_str())
            .bind(i64::from((*percent).min(100)))
            .bind(sequence)
            .bind(now)
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?
        }
        JobEventKind::Completed { result } => {
            sqlx::query(
                "UPDATE jobs SET state = $8, progress = 100, result_version = $2, report = $3, charged = $4,
                   last_sequence = $5, updated_at = $6
                 WHERE id = $1 AND state = $7",
            )
            .bind(job.as_str())
            .bind(result_version)
            .bind(result.report.as_ref().map(ToString::to_string))
            .bind(quote_text(result.charged.as_ref())?)
            .bind(sequence)
            .bind(now)
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?
        }
        JobEventKind::Failed { problem, charged } => {
            sqlx::query(
                "UPDATE jobs SET state = $6, problem = $2, charged = $7, last_sequence = $3, updated_at = $4
                 WHERE id = $1 AND state = $5",
            )
            .bind(job.as_str())
            .bind(to_json_text(problem)?)
            .bind(sequence)
            .bind(now)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(quote_text(charged.as_ref())?)
            .execute(&mut *tx)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

/// Jobs whose input is pending and due at `now_ms`, most overdue first, at most
/// `per_provider` of each provider (fair between providers) and `limit` in all.
pub(crate) async fn inputs_due(
    db: &SqlitePool,
    now_ms: i64,
    limit: i64,
    per_provider: i64,
) -> ApiResult<Vec<JobId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM (
           SELECT id, input_next_attempt_ms,
                  ROW_NUMBER() OVER (PARTITION BY provider_id ORDER BY input_next_attempt_ms, id) AS nth
           FROM jobs WHERE input_state = $3 AND input_next_attempt_ms <= $1)
         WHERE nth <= $4
         ORDER BY input_next_attempt_ms, id LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .bind(InputDeliveryState::Pending.as_str())
    .bind(per_provider)
    .fetch_all(db)
    .await?;
    Ok(ids
        .into_iter()
        .map(|id| super::scalar_id("jobs.id", id))
        .collect::<Result<_, _>>()?)
}

/// Attempt `attempt` delivered the input (`note` says how, for a `409`): pending or stopped
/// → delivered.
pub(crate) async fn input_delivered(
    db: &SqlitePool,
    job: &JobId,
    attempt: u32,
    note: Option<&str>,
    now: i64,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE jobs SET input_state = $5, input_attempts = $2, input_last_attempt_at = $3,
           input_delivered_at = $3, input_next_attempt_ms = NULL, input_last_error = $4, updated_at = $3
         WHERE id = $1 AND input_state IN ($6, $7)",
    )
    .bind(job.as_str())
    .bind(attempt)
    .bind(now)
    .bind(note)
    .bind(InputDeliveryState::Delivered.as_str())
    .bind(InputDeliveryState::Pending.as_str())
    .bind(InputDeliveryState::Stopped.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// Attempt `attempt` failed with `why`; the next is due at `next_ms` (still pending).
pub(crate) async fn input_retry_at(
    db: &SqlitePool,
    job: &JobId,
    attempt: u32,
    why: &str,
    next_ms: i64,
    now: i64,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE jobs SET input_attempts = $2, input_last_attempt_at = $3, input_next_attempt_ms = $4,
           input_last_error = $5, updated_at = $3
         WHERE id = $1 AND input_state = $6",
    )
    .bind(job.as_str())
    .bind(attempt)
    .bind(now)
    .bind(next_ms)
    .bind(why)
    .bind(InputDeliveryState::Pending.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// The broker gives up the input after attempt `attempt` (`why`): the input fails and the
/// job with it (`accepted → failed`, with `problem`). `false` when the job moved on
/// meanwhile (the provider reported on it) and nothing was given up.
pub(crate) async fn input_given_up(
    db: &SqlitePool,
    job: &JobId,
    attempt: u32,
    why: &str,
    problem: &Problem,
    now: i64,
) -> ApiResult<bool> {
    let (from, to) = step(JobState::Accepted, Trigger::InputGivenUp)?;
    let failed = sqlx::query(
        "UPDATE jobs SET input_state = $8, input_attempts = $2, input_last_attempt_at = $3,
           input_next_attempt_ms = NULL, input_last_error = $4, state = $7, problem = $5, updated_at = $3
         WHERE id = $1 AND input_state = $9 AND state = $6",
    )
    .bind(job.as_str())
    .bind(attempt)
    .bind(now)
    .bind(why)
    .bind(to_json_text(problem)?)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(InputDeliveryState::Failed.as_str())
    .bind(InputDeliveryState::Pending.as_str())
    .execute(db)
    .await?;
    Ok(failed.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_job_that_does_not_decode_is_an_error_naming_the_column() {
        let db = crate::db::open("sqlite::memory:").await.expect("db");
        // Rows written behind the broker's back (users and providers are not needed here).
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&db)
            .await
            .expect("pragma");
        let cases = [
            ("job_state", "weird", None, None, "state"),
            (
                "job_pjob",
                "accepted",
                Some("not an id!"),
                None,
                "provider_job_id",
            ),
            ("job_problem", "failed", None, Some("{not json"), "problem"),
        ];
        for (id, state, pjob, problem, column) in cases {
            sqlx::query(
                "INSERT INTO jobs (id, user_id, provider_id, model_id, version, operation, state, provider_job_id, problem, created_at, updated_at)
                 VALUES ($1, 'usr_x', 'prv_x', 'mdl_x', 1, 'repair', $2, $3, $4, 0, 0)",
            )
            .bind(id)
            .bind(state)
            .bind(pjob)
            .bind(problem)
            .execute(&db)
            .await
            .expect("insert");
            let id = JobId::parse(id).expect("id");
            match find(&db, &id).await {
                Err(ApiError::Db(sqlx::Error::ColumnDecode { index, .. })) => {
                    assert_eq!(index, column, "{id}");
                }
                other => panic!("{id}: expected a decoding error, got {other:?}"),
            }
        }
    }

    async fn db_with_job(id: &str, state: &str) -> (SqlitePool, JobId) {
        let db = crate::db::open("sqlite::memory:").await.expect("db");
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&db)
            .await
            .expect("pragma");
        sqlx::query(
            "INSERT INTO jobs (id, user_id, provider_id, model_id, version, operation, state, provider_job_id,
               input_state, input_next_attempt_ms, created_at, updated_at)
             VALUES ($1, 'usr_x', 'prv_x', 'mdl_x', 1, 'repair', $2, 'pjob_x', 'pending', 0, 0, 0)",
        )
        .bind(id)
        .bind(state)
        .execute(&db)
        .await
        .expect("insert");
        (db, JobId::parse(id).expect("id"))
    }

    fn event(job: &JobId, kind: JobEventKind) -> (JobEvent, String) {
        let event = JobEvent {
            job_id: job.clone(),
            provider_job_id: ProviderJobId::parse("pjob_x").expect("id"),
            provider_id: ProviderId::parse("prv_x").expect("id"),
            sequence: 1,
            occurred_at: 0,
            kind,
        };
        let canonical = serde_json::to_string(&event).expect("json");
        (event, canonical)
    }

    #[tokio::test]
    async fn an_event_meets_the_job_where_it_is_now_not_where_it_was_read() {
        // Read while accepted; the broker gives the input up before the event is applied.
        let (db, id) = db_with_job("job_gave_up", "accepted").await;
        let read = get(&db, &id).await.expect("job");
        let problem = Problem::new(diax_sdk::ProblemType::UpstreamFailed);
        assert!(
            input_given_up(&db, &id, 3, "unreachable", &problem, 10)
                .await
                .expect("give up")
        );
        let (progress, canonical) = event(
            &id,
            JobEventKind::Progress {
                percent: 5,
                stage: None,
            },
        );
        match apply_event(&db, &read, &progress, &canonical, 1, None, 11).await {
            Err(ApiError::InvalidTransition(why)) => assert!(why.contains("is failed"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let now = get(&db, &id).await.expect("job");
        assert_eq!((now.state, now.progress), (JobState::Failed, None));
        assert_eq!(
            recorded_event(&db, &id, 1).await.expect("read"),
            None,
            "the refused event is not recorded"
        );

        // Read while offered; the offer's 202 lands first: the provider's own
        // `job.accepted` still applies, from `accepted`.
        let (db, id) = db_with_job("job_raced", "offered").await;
        let read = get(&db, &id).await.expect("job");
        let accepted = JobAccepted {
            job_id: id.clone(),
            provider_job_id: ProviderJobId::parse("pjob_x").expect("id"),
            status_url: "http://127.0.0.1:1/status".into(),
            quote: None,
            state: JobState::Accepted,
        };
        assert!(
            offer_accepted(&db, &id, &accepted, 10, 10_000)
                .await
                .expect("accept")
        );
        let (ev, canonical) = event(&id, JobEventKind::Accepted { quote: None });
        let to = apply_event(&db, &read, &ev, &canonical, 1, None, 11)
            .await
            .expect("applied");
        assert_eq!(to, Some(JobState::Accepted));
        assert_eq!(
            recorded_event(&db, &id, 1).await.expect("read"),
            Some(canonical)
        );
    }

    async fn versions(db: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM model_versions WHERE model_id = 'mdl_x'")
            .fetch_one(db)
            .await
            .expect("count")
    }

    fn completed(job: &JobId) -> (JobEvent, String) {
        event(
            job,
            JobEventKind::Completed {
                result: diax_sdk::wire::JobResult {
                    download: diax_sdk::wire::Download {
                        url: "https://provider.test/r".into(),
                        authorization: None,
                        expires_at: 100,
                        size: 3,
                        sha256: diax_sdk::util::sha256_hex(b"stl"),
                    },
                    format: "stl".into(),
                    report: None,
                    charged: None,
                    picture: None,
                },
            },
        )
    }

    #[tokio::test]
    async fn a_result_is_a_version_exactly_when_its_event_is_applied() {
        let source = diax_sdk::wire::VersionSource {
            job_id: JobId::parse("job_done").expect("id"),
            provider_id: ProviderId::parse("prv_x").expect("id"),
            from_version: 1,
        };
        let model = ModelId::parse("mdl_x").expect("id");
        let body = models::Body::Inline(b"stl".to_vec());
        let new = NewVersion {
            model: &model,
            body: &body,
            picture: None,
            source: &source,
        };

        // Refused by the state machine (the broker gave the job up while the result was
        // being fetched): no version.
        let (db, id) = db_with_job("job_done", "running").await;
        let read = get(&db, &id).await.expect("job");
        let problem = Problem::new(diax_sdk::ProblemType::UpstreamFailed);
        sqlx::query("UPDATE jobs SET state = 'accepted' WHERE id = $1")
            .bind(id.as_str())
            .execute(&db)
            .await
            .expect("update");
        assert!(
            input_given_up(&db, &id, 3, "unreachable", &problem, 10)
                .await
                .expect("give up")
        );
        let (done, canonical) = completed(&id);
        match apply_event(&db, &read, &done, &canonical, 1, Some(&new), 11).await {
            Err(ApiError::InvalidTransition(_)) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(versions(&db).await, 0, "a refused result made a version");

        // Applied once; the same event again (a redelivery that was not seen as one, e.g.
        // after the first request was dropped mid-way) records nothing and adds none.
        let (db, id) = db_with_job("job_done", "running").await;
        let read = get(&db, &id).await.expect("job");
        let to = apply_event(&db, &read, &done, &canonical, 1, Some(&new), 11)
            .await
            .expect("applied");
        assert_eq!(to, Some(JobState::Completed));
        assert_eq!(versions(&db).await, 1);
        let again = apply_event(&db, &read, &done, &canonical, 1, Some(&new), 12)
            .await
            .expect("no error");
        assert_eq!(again, None);
        assert_eq!(
            versions(&db).await,
            1,
            "a second delivery made a second version"
        );
        let row = get(&db, &id).await.expect("job");
        assert_eq!(row.result_version, Some(1));
    }

    #[test]
    fn stored_input_states_round_trip_and_unknown_ones_are_refused() {
        for st in INPUT_STATES {
            assert_eq!(parse_input_state(st.as_str()), Some(st));
        }
        assert_eq!(parse_input_state("Pending"), None);
    }
}
