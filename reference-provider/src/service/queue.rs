//! The durable job queue: the `jobs` table and the provider job's state machine
//! ([`JobPhase`]).
//!
//! A job row is created `accepted` when an offer is accepted, becomes claimable once its
//! input arrives, is `running` while a worker holds its lease (renewed by heartbeats), and
//! ends `completed` or `failed`. A `running` job whose lease expired (its worker died) is
//! claimable again. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so concurrent workers
//! of several instances never claim the same row; SQLite claims with a single `UPDATE …
//! RETURNING` inside a `BEGIN IMMEDIATE` transaction (one writer at a time).

use std::fmt;
use std::time::Duration;

use diax_sdk::wire::{JobState, JobStatus};
use diax_sdk::{AccountId, JobId, Problem, ProviderJobId};

use super::Service;
use super::db::{Db, Tx, exec, fetch_optional, ms, now_ms};

/// The columns of `jobs`, in [`JobRow`] order.
macro_rules! job_cols {
    () => {
        "provider_job_id, broker_job_id, offer_message_id, account_id, broker_user_id, events_url,
         operation, model_name, model_size, model_sha256, quote_amount, currency, state, progress,
         input_json, problem_json, result_json, next_sequence, attempts, download_retries,
         not_before, lease_owner, lease_until, created_at, updated_at"
    };
}

/// Where a provider job is: the `jobs.state` column.
///
/// | from | to | by |
/// |---|---|---|
/// | (none) | `accepted` | [`insert`] (an offer accepted) |
/// | `accepted` | `running` | [`claim`] (input present, `not_before` passed) |
/// | `accepted` | `failed` | [`expire_waiting`] (the input never came) |
/// | `running` | `running` | [`claim`] (the lease expired: another worker takes over) |
/// | `running` | `accepted` | [`release`], [`release_for_retry`], [`release_instance`] (retry later, shutdown) |
/// | `running` | `completed` | [`finish`] with [`Finish::Completed`] (the result is stored) |
/// | `running` | `failed` | [`finish`] with [`Finish::Failed`] (a final failure) |
///
/// `completed` and `failed` are final. [`JobPhase::can_become`] is this table, and every
/// write of `jobs.state` is one of the functions it names, all in this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobPhase {
    /// Offer accepted, hold placed; waiting for its input or a worker.
    Accepted,
    /// A worker holds the lease.
    Running,
    /// Result stored, hold captured.
    Completed,
    /// Failed for good, hold released.
    Failed,
}

impl JobPhase {
    /// Every phase.
    pub const ALL: [JobPhase; 4] = [
        JobPhase::Accepted,
        JobPhase::Running,
        JobPhase::Completed,
        JobPhase::Failed,
    ];

    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Accepted => "accepted",
            JobPhase::Running => "running",
            JobPhase::Completed => "completed",
            JobPhase::Failed => "failed",
        }
    }

    /// The wire state.
    #[must_use]
    pub fn wire(self) -> JobState {
        match self {
            JobPhase::Accepted => JobState::Accepted,
            JobPhase::Running => JobState::Running,
            JobPhase::Completed => JobState::Completed,
            JobPhase::Failed => JobState::Failed,
        }
    }

    /// Whether the queue may move a job from `self` to `next` (the table above).
    #[must_use]
    pub fn can_become(self, next: JobPhase) -> bool {
        use JobPhase::{Accepted, Completed, Failed, Running};
        matches!(
            (self, next),
            (Accepted | Running, Running)
                | (Accepted, Failed)
                | (Running, Accepted | Completed | Failed)
        )
    }

    /// Whether no transition leaves this phase.
    #[must_use]
    pub fn is_final(self) -> bool {
        JobPhase::ALL.iter().all(|&next| !self.can_become(next))
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored state name that is none of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownPhase(String);

impl TryFrom<String> for JobPhase {
    type Error = UnknownPhase;
    fn try_from(s: String) -> Result<Self, UnknownPhase> {
        JobPhase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownPhase(s))
    }
}

/// A job as stored. Ids and the state are checked when the row is read: a row that does not
/// decode is an error naming its column, never a made-up value.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct JobRow {
    #[sqlx(try_from = "String")]
    pub provider_job_id: ProviderJobId,
    #[sqlx(try_from = "String")]
    pub broker_job_id: JobId,
    pub offer_message_id: String,
    #[sqlx(try_from = "String")]
    pub account_id: AccountId,
    pub broker_user_id: String,
    pub events_url: String,
    pub operation: String,
    pub model_name: String,
    pub model_size: i64,
    pub model_sha256: String,
    pub quote_amount: i64,
    pub currency: String,
    #[sqlx(try_from = "String")]
    pub state: JobPhase,
    pub progress: Option<i64>,
    /// The broker's `Download` (JSON), once `job.input` arrived.
    pub input_json: Option<String>,
    pub problem_json: Option<String>,
    pub result_json: Option<String>,
    pub next_sequence: i64,
    pub attempts: i64,
    /// Transient download failures so far (retried outside the `attempts` budget).
    pub download_retries: i64,
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
        self.state.wire()
    }

    /// The provider job id.
    #[must_use]
    pub fn id(&self) -> ProviderJobId {
        self.provider_job_id.clone()
    }

    /// The broker job id.
    #[must_use]
    pub fn broker_id(&self) -> JobId {
        self.broker_job_id.clone()
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
    let mut tx = db.begin_read().await?;
    let row = find(&mut tx, provider_job_id).await?;
    tx.commit().await?;
    Ok(row)
}

/// The claim on SQLite (`$1` owner, `$2` lease end, `$3` now): the oldest of two
/// candidates, the oldest job whose input has come (index `jobs_ready`) and the oldest
/// `running` job whose lease expired (index `jobs_leased`). Each is one index lookup, so a
/// poll costs the same however many jobs wait for their input or are finished (an index
/// over every job's state would make each poll walk all the waiting ones).
pub(crate) const CLAIM_SQLITE: &str = concat!(
    "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2,
            attempts = attempts + 1, updated_at = $3
     WHERE provider_job_id = (
         SELECT provider_job_id FROM (
             SELECT * FROM (SELECT provider_job_id, created_at FROM jobs
                            WHERE state = 'accepted' AND input_json IS NOT NULL
                              AND not_before <= $3
                            ORDER BY created_at LIMIT 1)
             UNION ALL
             SELECT * FROM (SELECT provider_job_id, created_at FROM jobs
                            WHERE state = 'running' AND lease_until < $3
                            ORDER BY created_at LIMIT 1))
         ORDER BY created_at LIMIT 1)
     RETURNING ",
    job_cols!()
);

/// The claim on PostgreSQL: as [`CLAIM_SQLITE`], each candidate locked with
/// `FOR UPDATE SKIP LOCKED` so concurrent workers never claim the same row.
pub(crate) const CLAIM_POSTGRES: &str = concat!(
    "WITH ready AS (
         SELECT provider_job_id, created_at FROM jobs
          WHERE state = 'accepted' AND input_json IS NOT NULL AND not_before <= $3
          ORDER BY created_at LIMIT 1
          FOR UPDATE SKIP LOCKED),
     stale AS (
         SELECT provider_job_id, created_at FROM jobs
          WHERE state = 'running' AND lease_until < $3
          ORDER BY created_at LIMIT 1
          FOR UPDATE SKIP LOCKED)
     UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2,
            attempts = attempts + 1, updated_at = $3
      WHERE provider_job_id = (
          SELECT provider_job_id FROM (SELECT * FROM ready UNION ALL SELECT * FROM stale) c
           ORDER BY created_at LIMIT 1)
     RETURNING ",
    job_cols!()
);

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
            sqlx::query_as::<_, JobRow>(CLAIM_SQLITE)
                .bind(owner)
                .bind(until)
                .bind(now)
                .fetch_optional(&mut **t)
                .await?
        }
        Tx::Postgres(t) => {
            sqlx::query_as::<_, JobRow>(CLAIM_POSTGRES)
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

/// A job to insert `accepted`: what the accepted offer said and what was quoted.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct NewJob<'a> {
    pub provider_job_id: &'a str,
    pub broker_job_id: &'a str,
    pub offer_message_id: &'a str,
    pub account_id: &'a str,
    pub broker_user_id: &'a str,
    pub events_url: &'a str,
    pub operation: &'a str,
    pub model_name: &'a str,
    pub model_size: i64,
    pub model_sha256: &'a str,
    pub quote_amount: i64,
    pub currency: &'a str,
    /// Unix ms.
    pub now: i64,
}

/// Inserts an accepted offer's job, `accepted` and waiting for its input (the first row of
/// the table on [`JobPhase`]). A second offer for the same broker job fails with a unique
/// violation, which the caller answers with the job that won.
///
/// # Errors
/// Database errors, the unique violation included.
pub async fn insert(tx: &mut Tx, job: &NewJob<'_>) -> Result<(), sqlx::Error> {
    exec!(
        tx,
        "INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                           broker_user_id, events_url, operation, model_name, model_size,
                           model_sha256, quote_amount, currency, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
        job.provider_job_id,
        job.broker_job_id,
        job.offer_message_id,
        job.account_id,
        job.broker_user_id,
        job.events_url,
        job.operation,
        job.model_name,
        job.model_size,
        job.model_sha256,
        job.quote_amount,
        job.currency,
        JobPhase::Accepted.as_str(),
        job.now
    )?;
    Ok(())
}

/// Stores a job's (new or refreshed) input download, JSON, unless the job is final.
///
/// # Errors
/// Database errors.
pub async fn set_input(
    tx: &mut Tx,
    provider_job_id: &str,
    download_json: &str,
) -> Result<bool, sqlx::Error> {
    let n = exec!(
        tx,
        "UPDATE jobs SET input_json = $1, updated_at = $2
         WHERE provider_job_id = $3 AND state IN ($4, $5)",
        download_json,
        now_ms(),
        provider_job_id,
        JobPhase::Accepted.as_str(),
        JobPhase::Running.as_str()
    )?;
    Ok(n == 1)
}

/// How a worker ends a job it holds.
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    /// The result is stored: the status summary (the result without its credential), JSON.
    Completed {
        /// What `GET status_url` shows of the result.
        summary_json: &'a str,
    },
    /// A final failure: the problem, JSON.
    Failed {
        /// The problem the status and `job.failed` carry.
        problem_json: &'a str,
    },
}

/// Moves a job `owner` holds from `running` to `completed` or `failed`, in the caller's
/// transaction (which also settles the hold and queues the event); `false` when `owner`
/// lost the lease, and nothing was written.
///
/// # Errors
/// Database errors.
pub async fn finish(
    tx: &mut Tx,
    provider_job_id: &str,
    owner: &str,
    finish: Finish<'_>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let n = match finish {
        Finish::Completed { summary_json } => {
            debug_assert!(JobPhase::Running.can_become(JobPhase::Completed));
            exec!(
                tx,
                "UPDATE jobs SET state = $1, progress = 100, result_json = $2,
                        lease_owner = NULL, lease_until = NULL, updated_at = $3, finished_by = $5
                 WHERE provider_job_id = $4 AND lease_owner = $5 AND state = $6",
                JobPhase::Completed.as_str(),
                summary_json,
                now,
                provider_job_id,
                owner,
                JobPhase::Running.as_str()
            )?
        }
        Finish::Failed { problem_json } => {
            debug_assert!(JobPhase::Running.can_become(JobPhase::Failed));
            exec!(
                tx,
                "UPDATE jobs SET state = $1, problem_json = $2, lease_owner = NULL,
                        lease_until = NULL, updated_at = $3, finished_by = $5
                 WHERE provider_job_id = $4 AND lease_owner = $5 AND state = $6",
                JobPhase::Failed.as_str(),
                problem_json,
                now,
                provider_job_id,
                owner,
                JobPhase::Running.as_str()
            )?
        }
    };
    Ok(n == 1)
}

/// Fails an `accepted` job whose input never came, in the caller's transaction; `false`
/// when the job is no longer waiting (its input arrived meanwhile, or another instance
/// expired it first), and nothing was written.
///
/// # Errors
/// Database errors.
pub async fn expire_waiting(
    tx: &mut Tx,
    provider_job_id: &str,
    problem_json: &str,
) -> Result<bool, sqlx::Error> {
    debug_assert!(JobPhase::Accepted.can_become(JobPhase::Failed));
    let n = exec!(
        tx,
        "UPDATE jobs SET state = $1, problem_json = $2, updated_at = $3
         WHERE provider_job_id = $4 AND state = $5 AND input_json IS NULL",
        JobPhase::Failed.as_str(),
        problem_json,
        now_ms(),
        provider_job_id,
        JobPhase::Accepted.as_str()
    )?;
    Ok(n == 1)
}

/// Takes the job's next event sequence number (0, 1, 2, …) in the caller's transaction,
/// which queues the event that carries it.
///
/// # Errors
/// Database errors; `RowNotFound` for an unknown job.
pub async fn take_sequence(tx: &mut Tx, provider_job_id: &str) -> Result<i64, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Seq {
        next_sequence: i64,
    }
    let seq = fetch_optional!(
        tx,
        Seq,
        "UPDATE jobs SET next_sequence = next_sequence + 1 WHERE provider_job_id = $1
         RETURNING next_sequence",
        provider_job_id
    )?
    .ok_or(sqlx::Error::RowNotFound)?;
    Ok(seq.next_sequence - 1)
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

/// Gives a job back to the queue after a transient download failure (claimable after
/// `delay`), if `owner` still holds it: the claim's attempt is given back (transient
/// failures of the model source do not use up the crash budget) and `download_retries`
/// counted instead.
///
/// # Errors
/// Database errors.
pub async fn release_for_retry(
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
                not_before = $1, updated_at = $2, attempts = attempts - 1,
                download_retries = download_retries + 1
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

#[cfg(test)]
mod tests {
    use super::JobPhase::{self, Accepted, Completed, Failed, Running};

    /// The whole transition table: every pair, allowed or not.
    #[test]
    fn job_transitions() {
        let allowed = [
            (Accepted, Running),
            (Accepted, Failed),
            (Running, Running),
            (Running, Accepted),
            (Running, Completed),
            (Running, Failed),
        ];
        for from in JobPhase::ALL {
            for to in JobPhase::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        let finals: Vec<_> = JobPhase::ALL.into_iter().filter(|p| p.is_final()).collect();
        assert_eq!(finals, [Completed, Failed]);
    }

    #[test]
    fn stored_names_round_trip_and_unknown_ones_are_errors() {
        for p in JobPhase::ALL {
            assert_eq!(JobPhase::try_from(p.as_str().to_owned()).unwrap(), p);
        }
        let e = JobPhase::try_from("done".to_owned()).unwrap_err();
        assert!(e.to_string().contains("\"done\""), "{e}");
    }

    /// What the periodic statements (the workers' claim, the replay purge, the janitor's
    /// queries) cost in SQLite's virtual machine steps does not grow with the rows they
    /// leave alone: jobs waiting for their input, finished jobs, replay records not yet
    /// expired. (With one index over every job's state, each claim walked all the jobs
    /// waiting for their input, and the purge scanned the whole replay table.)
    #[tokio::test]
    async fn periodic_statements_do_not_walk_growing_tables() {
        use crate::service::db::{Db, PURGE_CHUNK, PURGE_REPLAY};
        use crate::service::janitor::{EXPIRED_CREDENTIALS, WAITING_TOO_LONG};
        use rusqlite::{StatementStatus, params};

        fn steps(conn: &rusqlite::Connection) -> Vec<(&'static str, i32)> {
            let now_ms: i64 = 1_000_000_000;
            let now_s = now_ms / 1000;
            let run = |name: &'static str, sql: &str, args: &[&dyn rusqlite::ToSql]| {
                conn.execute_batch("BEGIN").unwrap();
                let mut st = conn.prepare(sql).unwrap();
                let mut rows = st.query(args).unwrap();
                while rows.next().unwrap().is_some() {}
                drop(rows);
                let n = st.get_status(StatementStatus::VmStep);
                drop(st);
                conn.execute_batch("ROLLBACK").unwrap();
                (name, n)
            };
            vec![
                run(
                    "claim",
                    super::CLAIM_SQLITE,
                    params!["w", now_ms + 1, now_ms],
                ),
                run("replay purge", PURGE_REPLAY, params![now_s, PURGE_CHUNK]),
                run(
                    "inputs never came",
                    WAITING_TOO_LONG,
                    params![now_ms - 3_600_000],
                ),
                run("expired results", EXPIRED_CREDENTIALS, params![now_s]),
            ]
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        db.close().await;
        let conn = rusqlite::Connection::open(&path).unwrap();
        // `n` jobs in `state` (all recent: none is due for the janitor) and `n` replay
        // records expiring after `now`, their ids starting with `tag`.
        let add = |tag: &str, n: i64, state: &str| {
            conn.execute(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
                 INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                                   broker_user_id, events_url, operation, model_name,
                                   model_size, model_sha256, quote_amount, currency, state,
                                   created_at, updated_at)
                 SELECT ?2 || i, ?2 || 'b' || i, ?2 || 'm' || i, 'acc', 'u', 'e', 'repair',
                        'm', 1, 's', 1, 'EUR', ?3, 999990000 + i, 999990000 + i FROM k",
                params![n, tag, state],
            )
            .unwrap();
            conn.execute(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
                 INSERT INTO replay (message_id, digest, expires_at)
                 SELECT ?2 || 'r' || i, 'd', 1000001 + i FROM k",
                params![n, tag],
            )
            .unwrap();
        };
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO accounts (account_id, name, api_key_hash, currency, created_at)
             VALUES ('acc', 'a', 'h', 'EUR', 0)",
        )
        .unwrap();
        add("few", 10, "accepted");
        let few = steps(&conn);
        add("waiting", 20_000, "accepted");
        add("finished", 20_000, "completed");
        let many = steps(&conn);
        for ((name, few), (_, many)) in few.into_iter().zip(many) {
            assert!(
                many <= few + 20,
                "{name}: {few} steps with 10 jobs waiting, {many} with 20,010 and 20,000 finished"
            );
        }
    }
}
