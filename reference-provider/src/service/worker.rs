//! Job workers: claim → download (SDK helper: size cap, digest) → heal on a blocking thread
//! → store the result → publish it behind a temporary credential → capture the hold and
//! queue `job.completed` in one transaction (or release the hold and queue `job.failed`).
//!
//! Every state change is guarded by the lease: a worker that lost its lease (it was too
//! slow, or presumed dead and its job claimed again) cannot complete or fail the job, so a
//! job is charged and completed at most once, whatever runs twice.

use std::time::Duration;

use diax_sdk::client::{DownloadError, DownloadLimits};
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, sha256_hex};
use diax_sdk::wire::{Download, JobEventKind, JobResult};
use diax_sdk::{Problem, ProblemType, ProviderId, Quote};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::Service;
use super::accounts;
use super::db::exec;
use super::outbox;
use super::queue::{self, Finish, JobRow};
use super::registration;

/// What [`try_execute_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionOutcome {
    /// No job was claimable.
    EmptyQueue,
    /// The job completed; its hold was captured and `job.completed` queued.
    Completed {
        /// The job.
        provider_job_id: String,
    },
    /// The job failed; its hold was released and `job.failed` queued.
    Failed {
        /// The job.
        provider_job_id: String,
        /// Why.
        problem: Problem,
    },
    /// The job went back to the queue (a transient download failure) to be retried.
    Released {
        /// The job.
        provider_job_id: String,
        /// Why.
        reason: String,
    },
    /// Another worker took the job over (this one's lease expired); nothing was recorded.
    LostLease {
        /// The job.
        provider_job_id: String,
    },
}

/// Failures of the worker itself (the job stays leased and is retried after the lease).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Database failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Result store failure (outside a job's own write, which is retried instead).
    #[error("result store: {0}")]
    Storage(#[from] std::io::Error),
    /// The provider is not registered, so no event could be signed.
    #[error("not registered with a broker")]
    NotRegistered,
}

/// What the healing step makes of a model.
#[derive(Debug)]
pub struct Healed {
    /// The repaired binary STL.
    pub stl: Vec<u8>,
    /// The repair report (JSON).
    pub report: serde_json::Value,
    /// The repair picture (PNG), or why there is none: it is an extra, so a model too large
    /// for the picture's budget, a repair that used up the job's budget, or a failure while
    /// drawing leaves the result as it is.
    pub picture: Result<Vec<u8>, String>,
}

/// The healing step, isolated so the service depends on the healing core in one place:
/// STL bytes in, a repaired binary STL, the repair report (JSON) and the repair picture out,
/// or the healer's error message. The repair gives up once `budget` has passed; the picture
/// (of models of at most `picture_max_facets` facets, `0`: none) is drawn only while the
/// budget lasts.
///
/// # Errors
/// The healer's error, as text, when the model cannot be repaired or ran out of its budget.
pub fn heal_model(
    bytes: &[u8],
    max_bytes: u64,
    budget: Duration,
    picture_max_facets: u64,
) -> Result<Healed, String> {
    use crate::heal::picture::{Picture, PictureOptions};
    let started = std::time::Instant::now();
    let deadline = started.checked_add(budget);
    let options = crate::heal::RepairOptions {
        max_file_bytes: max_bytes,
        deadline,
        ..crate::heal::RepairOptions::default()
    };
    let over_budget = |e: crate::heal::HealError| match e {
        crate::heal::HealError::DeadlineExceeded { .. } => format!(
            "healing this model takes longer than the provider's budget of {} s per job ({e})",
            budget.as_secs_f64()
        ),
        e => e.to_string(),
    };
    let soup = crate::heal::stl::parse(bytes, &options).map_err(over_budget)?;
    // The "before" views come from the input, before the repair consumes it. Drawing is
    // guarded: whatever happens to the picture, the repair goes on.
    let mut picture = if picture_max_facets == 0 {
        Err("pictures are turned off (picture_max_facets = 0)".to_owned())
    } else {
        let options = PictureOptions {
            max_facets: picture_max_facets,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Picture::new(&soup.positions, &options).map(|mut p| {
                p.draw_before(&soup.positions);
                p
            })
        }))
        .map_err(|_| "drawing the picture failed".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let repaired = crate::heal::repair_soup(soup, &options, &|_| {}).map_err(over_budget)?;
    let stl = repaired.to_stl_bytes();
    let report = serde_json::to_value(&repaired.report).unwrap_or(serde_json::Value::Null);
    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
        picture = Err("the job's budget was used up by the repair".to_owned());
    }
    let picture = picture.and_then(|p| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.finish(&repaired).to_png()
        }))
        .map_err(|_| "drawing the picture failed".to_owned())
    });
    Ok(Healed {
        stl,
        report,
        picture,
    })
}

enum Step {
    Heal(Vec<u8>),
    Fail(Problem),
    Release(String, Duration),
    Lost,
}

/// Claims one job and runs it to an outcome. Public so tests drive workers without timers;
/// `worker` names the worker within this instance (lease owner `{instance}/{worker}`).
///
/// # Errors
/// [`WorkerError`]; the job then stays leased and is claimed again after its lease.
pub async fn try_execute_job(
    service: &Service,
    worker: &str,
) -> Result<ExecutionOutcome, WorkerError> {
    let owner = format!("{}/{worker}", service.instance_id());
    let lease = service.config().job_lease;
    let Some(job) = queue::claim(service.db(), &owner, lease).await? else {
        return Ok(ExecutionOutcome::EmptyQueue);
    };
    let span = tracing::info_span!("job", job = %job.provider_job_id, broker_job = %job.broker_job_id, attempt = job.attempts);
    run_claimed(service, &job, &owner).instrument(span).await
}

async fn run_claimed(
    service: &Service,
    job: &JobRow,
    owner: &str,
) -> Result<ExecutionOutcome, WorkerError> {
    let lease = service.config().job_lease;
    tracing::info!("job claimed");
    let provider = match registration::registration(service.db()).await? {
        Some(r) => r.provider().map_err(|_| WorkerError::NotRegistered)?,
        None => {
            queue::release(service.db(), job.provider_job_id.as_str(), owner, lease).await?;
            return Err(WorkerError::NotRegistered);
        }
    };
    let work = execute(service, job, owner, &provider);
    let beat = heartbeat(service, job.provider_job_id.as_str(), owner);
    tokio::select! {
        result = work => result,
        () = beat => {
            tracing::warn!("lease lost while working; abandoning this attempt");
            Ok(ExecutionOutcome::LostLease { provider_job_id: job.provider_job_id.to_string() })
        }
    }
}

/// Renews the lease while the job runs; returns only when the lease is lost (another worker
/// took the job over, or shutdown released it), which abandons the attempt.
async fn heartbeat(service: &Service, provider_job_id: &str, owner: &str) {
    let lease = service.config().job_lease;
    let every = (lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        match queue::heartbeat(service.db(), provider_job_id, owner, lease).await {
            Ok(true) => {}
            Ok(false) => {
                // A beat that finds the job final is not a loss: the attempt's own final
                // write may just have committed (the beat waited on the row for it), and
                // the attempt's result says whether that write was its own. Only a job
                // still open under another owner, or back in the queue, is lost.
                match queue::get(service.db(), provider_job_id).await {
                    Ok(Some(job)) if job.state.is_final() => std::future::pending().await,
                    _ => return,
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

async fn progress(
    service: &Service,
    job: &JobRow,
    owner: &str,
    provider: &ProviderId,
    percent: u8,
    stage: &str,
) -> Result<bool, WorkerError> {
    if job.progress.is_some_and(|p| p >= i64::from(percent)) {
        // An earlier attempt (a download retried later, a worker that died) already
        // reported this phase: one `job.progress` per real phase change.
        return Ok(true);
    }
    let mut tx = service.db().begin().await?;
    if !queue::set_progress(&mut tx, job.provider_job_id.as_str(), owner, percent).await? {
        return Ok(false);
    }
    outbox::enqueue(
        &mut tx,
        job,
        provider,
        JobEventKind::Progress {
            percent,
            stage: Some(stage.to_owned()),
        },
    )
    .await?;
    tx.commit().await?;
    service.wake_outbox();
    Ok(true)
}

async fn execute(
    service: &Service,
    job: &JobRow,
    owner: &str,
    provider: &ProviderId,
) -> Result<ExecutionOutcome, WorkerError> {
    let id = job.provider_job_id.as_str().to_owned();
    let config = service.config();
    let step = if job.attempts > i64::from(config.max_job_attempts) {
        // The crash budget: every claim of this job so far ended without a result (its
        // worker crashed, ran out of memory or its instance was stopped). The model is the
        // one common factor, so it is taken as one that cannot be processed.
        Step::Fail(Problem::new(ProblemType::ModelInvalid).with_detail(format!(
            "processing this model stopped its worker {} times (a crash, running out of \
             memory, or its instance stopping); it is not tried again",
            config.max_job_attempts
        )))
    } else {
        fetch_input(service, job, owner, provider).await?
    };
    let bytes = match step {
        Step::Heal(bytes) => bytes,
        Step::Fail(problem) => return fail(service, job, owner, provider, problem).await,
        Step::Release(reason, delay) => {
            tracing::info!(reason = %reason, retry_in_ms = delay.as_millis() as u64, "download failed; retrying later");
            queue::release_for_retry(service.db(), &id, owner, delay).await?;
            return Ok(ExecutionOutcome::Released {
                provider_job_id: id,
                reason,
            });
        }
        Step::Lost => {
            return Ok(ExecutionOutcome::LostLease {
                provider_job_id: id,
            });
        }
    };
    if !progress(service, job, owner, provider, 30, "healing").await? {
        return Ok(ExecutionOutcome::LostLease {
            provider_job_id: id,
        });
    }
    let (max, budget) = (config.max_model_bytes, config.heal_budget);
    let picture_max = config.picture_max_facets;
    let started = std::time::Instant::now();
    let healed =
        tokio::task::spawn_blocking(move || heal_model(&bytes, max, budget, picture_max)).await;
    let healed = match healed {
        Ok(Ok(out)) => out,
        Ok(Err(reason)) => {
            tracing::info!(reason = %reason, "model cannot be healed");
            let problem = Problem::new(ProblemType::ModelInvalid).with_detail(reason);
            return fail(service, job, owner, provider, problem).await;
        }
        Err(join) => {
            tracing::error!(error = %join, "the healer panicked");
            let problem = Problem::new(ProblemType::ModelInvalid)
                .with_detail("the model could not be processed");
            return fail(service, job, owner, provider, problem).await;
        }
    };
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        bytes = healed.stl.len(),
        "healed"
    );
    let picture = match healed.picture {
        Ok(png) => Some(png),
        Err(why) => {
            tracing::info!(reason = %why, "no picture for this job");
            None
        }
    };
    complete(
        service,
        job,
        owner,
        provider,
        healed.stl,
        healed.report,
        picture,
    )
    .await
}

/// Whether a failed download may succeed later: transport trouble, timeouts, a `5xx`/`429`
/// answer, or a body cut short.
fn retryable(e: &DownloadError) -> bool {
    e.is_transient() || matches!(e, DownloadError::TooShort { .. })
}

/// The problem of a job whose input credential expired before its model could be fetched:
/// `upstream-failed` when the source kept failing, `download-failed` otherwise.
fn expired_input(job: &JobRow, last: Option<&DownloadError>) -> Problem {
    let retries = job.download_retries + i64::from(last.is_some());
    if retries == 0 {
        return Problem::new(ProblemType::DownloadFailed)
            .with_detail("the input credential expired before the model could be downloaded");
    }
    let last = last
        .map(|e| format!(" (last: {})", ErrorChain(e)))
        .unwrap_or_default();
    Problem::new(ProblemType::UpstreamFailed).with_detail(format!(
        "the model source failed {retries} time(s){last} until the input credential expired"
    ))
}

async fn fetch_input(
    service: &Service,
    job: &JobRow,
    owner: &str,
    provider: &ProviderId,
) -> Result<Step, WorkerError> {
    let config = service.config();
    let Some(download) = job
        .input_json
        .as_deref()
        .and_then(|s| serde_json::from_str::<Download>(s).ok())
    else {
        return Ok(Step::Fail(
            Problem::new(ProblemType::InvalidRequest).with_detail("the job's input is unreadable"),
        ));
    };
    // The input must be the model the offer priced: what the SDK checks the bytes against
    // (size, SHA-256) is the input's declaration, so that must be the offer's.
    let declared_size = i64::try_from(download.size).unwrap_or(i64::MAX);
    if declared_size != job.model_size || !download.sha256.eq_ignore_ascii_case(&job.model_sha256) {
        tracing::warn!("the input is not the model the offer priced");
        return Ok(Step::Fail(
            Problem::new(ProblemType::InputMismatch).with_detail(format!(
                "the input declares {} bytes with SHA-256 {}; the offer priced {} bytes with \
                 SHA-256 {}",
                download.size, download.sha256, job.model_size, job.model_sha256
            )),
        ));
    }
    if download.expires_at <= unix_now() {
        return Ok(Step::Fail(expired_input(job, None)));
    }
    if !progress(service, job, owner, provider, 10, "downloading").await? {
        return Ok(Step::Lost);
    }
    let dir = config.data_dir.join("downloads");
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!(
        "{}-{}.stl",
        job.provider_job_id,
        diax_sdk::util::random_token("", 8)
    ));
    let limits = DownloadLimits {
        max_bytes: config.max_model_bytes,
        timeout: config.http_timeout.saturating_mul(10),
        ..DownloadLimits::default()
    };
    let fetcher = match service.inputs().for_url(&download.url) {
        Ok(fetcher) => fetcher,
        Err(refused) => {
            tracing::warn!(rule = %refused, "input refused by the fetch policy");
            return Ok(Step::Fail(
                Problem::new(ProblemType::DownloadFailed)
                    .with_detail(format!("the model could not be downloaded: {refused}")),
            ));
        }
    };
    let result = fetcher.download_to_file(&download, &path, &limits).await;
    match result {
        Ok(got) => {
            let bytes = tokio::fs::read(&path).await;
            let _ = tokio::fs::remove_file(&path).await;
            tracing::info!(size = got.size, "model downloaded");
            Ok(Step::Heal(bytes?))
        }
        Err(e) if retryable(&e) => {
            // Retried until the credential expires, with backoff; the last retry is timed
            // to happen before the expiry.
            let retry = u32::try_from(job.download_retries.saturating_add(1)).unwrap_or(u32::MAX);
            let backoff = config.retry_policy().delay(retry, None);
            let left = u64::try_from(download.expires_at.saturating_sub(unix_now())).unwrap_or(0);
            let Some(room) = Duration::from_secs(left).checked_sub(Duration::from_secs(1)) else {
                tracing::warn!(error = %ErrorChain(&e), "download failed; the input credential expires now");
                return Ok(Step::Fail(expired_input(job, Some(&e))));
            };
            Ok(Step::Release(
                format!("download failed: {}", ErrorChain(&e)),
                backoff.min(room),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "download refused");
            Ok(Step::Fail(
                Problem::new(ProblemType::DownloadFailed).with_detail(format!(
                    "the model could not be downloaded: {}",
                    ErrorChain(&e)
                )),
            ))
        }
    }
}

async fn fail(
    service: &Service,
    job: &JobRow,
    owner: &str,
    provider: &ProviderId,
    problem: Problem,
) -> Result<ExecutionOutcome, WorkerError> {
    let id = job.provider_job_id.as_str().to_owned();
    let problem_json = serde_json::to_string(&problem).unwrap_or_default();
    let mut tx = service.db().begin().await?;
    let finished = queue::finish(
        &mut tx,
        &id,
        owner,
        Finish::Failed {
            problem_json: &problem_json,
        },
    )
    .await?;
    if !finished {
        return Ok(ExecutionOutcome::LostLease {
            provider_job_id: id,
        });
    }
    accounts::settle(
        &mut tx,
        job.account_id.as_str(),
        &id,
        job.quote_amount,
        false,
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        job,
        provider,
        JobEventKind::Failed {
            problem: problem.clone(),
            charged: Some(Quote::new(0, job.currency.clone())),
        },
    )
    .await?;
    tx.commit().await?;
    service.wake_outbox();
    tracing::info!(problem = %problem, "job failed; hold released");
    Ok(ExecutionOutcome::Failed {
        provider_job_id: id,
        problem,
    })
}

async fn complete(
    service: &Service,
    job: &JobRow,
    owner: &str,
    provider: &ProviderId,
    stl: Vec<u8>,
    report: serde_json::Value,
    picture: Option<Vec<u8>>,
) -> Result<ExecutionOutcome, WorkerError> {
    let id = job.provider_job_id.as_str().to_owned();
    let size = stl.len() as u64;
    let sha256 = sha256_hex(&stl);
    // One object per attempt: a worker that lost its lease never overwrites the result
    // another worker published.
    let object_key = format!("{id}_{}", job.attempts);
    let credential = diax_sdk::util::random_token("rc_", 40);
    let ttl = service.config().result_ttl;
    let expires_at = unix_now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    // The store may be down for a while: the job goes back to the queue (its attempt given
    // back) and runs again later; nothing is charged or reported meanwhile.
    let stored = match service.storage().put(&object_key, stl.into()).await {
        Ok(()) => service.storage().presign_get(&object_key, ttl).await,
        Err(e) => Err(e),
    };
    let presigned = match stored {
        Ok(presigned) => presigned,
        Err(e) => {
            let _ = service.storage().delete(&object_key).await;
            let retry = u32::try_from(job.download_retries.saturating_add(1)).unwrap_or(u32::MAX);
            let delay = service.config().retry_policy().delay(retry, None);
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "result store failed; retrying the job later");
            queue::release_for_retry(service.db(), &id, owner, delay).await?;
            return Ok(ExecutionOutcome::Released {
                provider_job_id: id,
                reason: format!("result store: {e}"),
            });
        }
    };
    // A store that presigns hands the broker the store's own URL; otherwise the service
    // serves the result behind a bearer credential of its own.
    let (url, authorization) = match presigned {
        Some(url) => (url, None),
        None => (
            service.url(&format!("/results/{id}")),
            Some(format!("Bearer {credential}")),
        ),
    };
    let picture = match picture {
        Some(png) => store_picture(service, &id, &object_key, png, &credential, expires_at).await,
        None => None,
    };
    let result = JobResult {
        download: Download {
            url,
            authorization,
            expires_at,
            size,
            sha256,
        },
        format: "stl".into(),
        report: Some(report),
        charged: Some(Quote::new(job.quote_amount, job.currency.clone())),
        picture,
    };
    // What the status shows: the result without its credential (a presigned URL is one).
    let shown_url = match &result.download.authorization {
        Some(_) => result.download.url.clone(),
        None => service.url(&format!("/results/{id}")),
    };
    let summary = serde_json::json!({
        "url": shown_url, "size": size, "sha256": result.download.sha256,
        "expires_at": expires_at,
    })
    .to_string();
    let mut tx = service.db().begin().await?;
    let finished = queue::finish(
        &mut tx,
        &id,
        owner,
        Finish::Completed {
            summary_json: &summary,
        },
    )
    .await?;
    if !finished {
        drop(tx);
        let _ = service.storage().delete(&object_key).await;
        let _ = service
            .storage()
            .delete(&super::storage::picture_key(&object_key))
            .await;
        return Ok(ExecutionOutcome::LostLease {
            provider_job_id: id,
        });
    }
    exec!(
        &mut tx,
        "INSERT INTO result_credentials (token_hash, provider_job_id, object_key, expires_at)
         VALUES ($1, $2, $3, $4)",
        sha256_hex(credential.as_bytes()),
        &id,
        &object_key,
        expires_at
    )?;
    accounts::settle(
        &mut tx,
        job.account_id.as_str(),
        &id,
        job.quote_amount,
        true,
    )
    .await?;
    outbox::enqueue(&mut tx, job, provider, JobEventKind::Completed { result }).await?;
    tx.commit().await?;
    service.wake_outbox();
    tracing::info!(charged = job.quote_amount, "job completed; hold captured");
    Ok(ExecutionOutcome::Completed {
        provider_job_id: id,
    })
}

/// Stores the repair picture `png` of the result under `object_key` and says where the
/// broker fetches it: presigned by the store, or `GET /results/{id}/picture` with the
/// result's own `credential`. The picture is an extra: when the store fails, the job
/// completes without it.
async fn store_picture(
    service: &Service,
    id: &str,
    object_key: &str,
    png: Vec<u8>,
    credential: &str,
    expires_at: i64,
) -> Option<Download> {
    let key = super::storage::picture_key(object_key);
    let size = png.len() as u64;
    let sha256 = sha256_hex(&png);
    let ttl = service.config().result_ttl;
    let stored = match service.storage().put(&key, png.into()).await {
        Ok(()) => service.storage().presign_get(&key, ttl).await,
        Err(e) => Err(e),
    };
    let (url, authorization) = match stored {
        Ok(Some(url)) => (url, None),
        Ok(None) => (
            service.url(&format!("/results/{id}/picture")),
            Some(format!("Bearer {credential}")),
        ),
        Err(e) => {
            let _ = service.storage().delete(&key).await;
            tracing::warn!(error = %e, "result store failed for the picture; completing without it");
            return None;
        }
    };
    Some(Download {
        url,
        authorization,
        expires_at,
        size,
        sha256,
    })
}

/// The loop of one job worker: run jobs while there are some, otherwise wait for a wake-up
/// or the poll interval; stop when `stop` turns true (a job in progress finishes first).
pub async fn run_worker(service: Service, index: usize, mut stop: watch::Receiver<bool>) {
    let name = format!("w{index}");
    let poll = service.config().poll_interval;
    loop {
        if *stop.borrow() {
            return;
        }
        let idle = match try_execute_job(&service, &name).await {
            Ok(ExecutionOutcome::EmptyQueue) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "worker step failed");
                true
            }
        };
        if idle {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = service.inner.wake_jobs.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_over_its_budget_fails_with_a_clear_reason() {
        let model = crate::heal::generate::broken_model(2, 2_000);
        let e = heal_model(&model, 1 << 20, Duration::ZERO, 1_000_000).unwrap_err();
        assert!(e.contains("budget") && e.contains("deadline"), "{e}");
        let healed = heal_model(&model, 1 << 20, Duration::from_secs(3600), 1_000_000).unwrap();
        assert_eq!(healed.report["watertight"], true);
        assert!(healed.stl.len() > 84);
        assert!(
            healed
                .picture
                .unwrap()
                .starts_with(&diax_sdk::wire::PNG_SIGNATURE)
        );
    }

    #[test]
    fn a_model_over_the_picture_budget_is_healed_without_a_picture() {
        let model = crate::heal::generate::broken_model(2, 2_000);
        let healed = heal_model(&model, 1 << 20, Duration::from_secs(3600), 10).unwrap();
        assert_eq!(healed.report["watertight"], true);
        let why = healed.picture.unwrap_err();
        assert!(why.contains("budget"), "{why}");
        let off = heal_model(&model, 1 << 20, Duration::from_secs(3600), 0).unwrap();
        assert!(off.picture.is_err());
    }
}
