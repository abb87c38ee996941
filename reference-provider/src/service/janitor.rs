//! Sweeping what expires: result credentials past their expiry (with their result files),
//! unfinished result writes left by a crash, and accepted jobs whose input never came
//! (failed, hold released). Run by every instance from the background
//! loop in `mod.rs`; each step is idempotent, so instances sharing a database may overlap.

use std::time::{Duration, SystemTime};

use diax_sdk::wire::JobEventKind;
use diax_sdk::{Problem, ProblemType, Quote};

use super::Service;
use super::db::{exec, fetch_all, ms};
use super::{accounts, outbox, queue, registration};

/// How often each instance sweeps, by default (`sweep_every_secs`).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// An unfinished result write older than this is left over from a crash (a write takes
/// seconds).
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(3600);

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired result credentials (rows) and their result files.
    pub expired_results: u64,
    /// Unfinished result writes (`.part` files).
    pub partial_files: u64,
    /// Accepted jobs whose input did not come within `input_timeout`: failed, hold
    /// released, `job.failed` queued.
    pub inputs_never_came: u64,
}

/// Result credentials expired before `$1` (Unix seconds), through the
/// `result_credentials_expiry` index.
pub(crate) const EXPIRED_CREDENTIALS: &str =
    "SELECT token_hash, object_key FROM result_credentials WHERE expires_at < $1";

/// Accepted jobs still without their input, offered before `$1` (Unix ms), oldest first,
/// through the `jobs_waiting` index.
pub(crate) const WAITING_TOO_LONG: &str = "SELECT provider_job_id FROM jobs
 WHERE state = 'accepted' AND input_json IS NULL AND created_at < $1
 ORDER BY created_at LIMIT 100";

#[derive(sqlx::FromRow)]
struct ExpiredCredential {
    token_hash: String,
    object_key: String,
}

/// Removes result credentials that expired before `now` (Unix seconds) and their result
/// files, and unfinished writes older than [`PARTIAL_MAX_AGE`]; fails the accepted jobs
/// whose input has not come within `input_timeout` of their offer ([`expire_waiting_jobs`]).
///
/// # Errors
/// Database errors; a file that cannot be removed is logged and retried next time.
pub async fn sweep(service: &Service, now: i64) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    let mut tx = service.db().begin().await?;
    let expired: Vec<ExpiredCredential> =
        fetch_all!(&mut tx, ExpiredCredential, EXPIRED_CREDENTIALS, now)?;
    tx.commit().await?;
    for cred in expired {
        // The result's picture first, so that no picture outlives its result's row.
        let picture = super::storage::picture_key(&cred.object_key);
        if let Err(e) = service.storage().delete(&picture).await {
            tracing::warn!(error = %e, key = %picture, "could not remove an expired picture");
            continue;
        }
        if let Err(e) = service.storage().delete(&cred.object_key).await {
            tracing::warn!(error = %e, key = %cred.object_key, "could not remove an expired result");
            continue;
        }
        let mut tx = service.db().begin().await?;
        swept.expired_results += exec!(
            &mut tx,
            "DELETE FROM result_credentials WHERE token_hash = $1",
            &cred.token_hash
        )?;
        tx.commit().await?;
    }
    let before = SystemTime::now()
        .checked_sub(PARTIAL_MAX_AGE)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match service.storage().sweep_partial(before).await {
        Ok(n) => swept.partial_files = n,
        Err(e) => tracing::warn!(error = %e, "could not sweep unfinished result writes"),
    }
    swept.inputs_never_came = expire_waiting_jobs(service, now).await?;
    if swept != Swept::default() {
        tracing::info!(
            expired_results = swept.expired_results,
            partial_files = swept.partial_files,
            inputs_never_came = swept.inputs_never_came,
            "swept"
        );
    }
    Ok(swept)
}

#[derive(sqlx::FromRow)]
struct Waiting {
    provider_job_id: String,
}

/// Fails every accepted job whose input has not arrived `input_timeout` after its offer
/// (`now` in Unix seconds): `upstream-failed`, the hold released and `job.failed` queued, in
/// one transaction per job guarded by the state (an input arriving meanwhile wins, and
/// instances sweeping at once settle a job once). Returns how many were failed.
///
/// # Errors
/// Database errors.
pub async fn expire_waiting_jobs(service: &Service, now: i64) -> Result<u64, sqlx::Error> {
    let timeout = service.config().input_timeout;
    let cutoff = now.saturating_mul(1000).saturating_sub(ms(timeout));
    let mut tx = service.db().begin().await?;
    let waiting: Vec<Waiting> = fetch_all!(&mut tx, Waiting, WAITING_TOO_LONG, cutoff)?;
    tx.commit().await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let Some(provider) = registration::registration(service.db())
        .await?
        .and_then(|r| r.provider().ok())
    else {
        return Ok(0);
    };
    let problem = Problem::new(ProblemType::UpstreamFailed).with_detail(format!(
        "the job's input did not arrive within {} s of the offer",
        timeout.as_secs()
    ));
    let problem_json = serde_json::to_string(&problem).unwrap_or_default();
    let mut failed = 0;
    for w in waiting {
        let mut tx = service.db().begin().await?;
        let expired = queue::expire_waiting(&mut tx, &w.provider_job_id, &problem_json).await?;
        let job = queue::find(&mut tx, &w.provider_job_id).await?;
        let (true, Some(job)) = (expired, job) else {
            continue;
        };
        accounts::settle(
            &mut tx,
            job.account_id.as_str(),
            &w.provider_job_id,
            job.quote_amount,
            false,
        )
        .await?;
        outbox::enqueue(
            &mut tx,
            &job,
            &provider,
            JobEventKind::Failed {
                problem: problem.clone(),
                charged: Some(Quote::new(0, job.currency.clone())),
            },
        )
        .await?;
        tx.commit().await?;
        failed += 1;
        tracing::info!(job = %w.provider_job_id, "the job's input never came; failed, hold released");
    }
    if failed > 0 {
        service.wake_outbox();
    }
    Ok(failed)
}
