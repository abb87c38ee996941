//! Durable delivery of `job.input` (PROTOCOL §5.5).
//!
//! When a provider accepts a job, the job's input becomes *pending* in the database and the
//! broker makes a first attempt at once. Each attempt is one signed message carrying a fresh
//! temporary credential, so each has its own `webhook-id`; within an attempt, transport
//! errors, 408, 429 and 5xx are retried quickly with the same id and body
//! ([`send_signed`]). What an attempt ends with:
//!
//! - a 2xx answer: delivered;
//! - `409` (the provider has the input already, or its job moved on): taken as delivered;
//! - transport errors, 408, 429, 5xx: another attempt after an exponential backoff with
//!   jitter, until `input_max_attempts`; then the broker gives up and fails the job;
//! - any other 4xx: not retried; the job fails with the provider's reason.
//!
//! A background task ([`run`]) makes the attempts that are due, so a pending input survives
//! restarts. Progress or an end reported by the provider stops the attempts (the input is no
//! longer needed). Every attempt is in the message log, labelled `job.input attempt n/max`.

use std::time::Duration;

use diax_sdk::client::RetryPolicy;
use diax_sdk::wire::{BrokerMessage, Download, InputDeliveryState, JobInput};
use diax_sdk::{JobId, MessageId, Problem, ProblemType};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{ApiError, ApiResult};
use crate::notifier::notify_job;
use crate::outbound::{Answer, Subject, answer_summary, record, send_signed};
use crate::state::{AppState, Claim};
use crate::store::jobs::{self, JobRow};
use crate::store::{models, providers};

/// Most inputs attempted in one round; each provider gets at most its destination's
/// in-flight bound of them (more could not be sent at once anyway), so a provider with many
/// inputs due never fills a round and starves the others.
const ROUND: i64 = 50;

/// Runs until `stop` turns true; an attempt in flight is abandoned (the input stays
/// pending and is sent again, as a new message, after a restart).
pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.cfg.input_interval_ms.max(10));
    let mut tasks = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = stop.changed() => break,
            res = deliver_due(&state, &mut tasks) => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "input delivery round failed");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
            // A finished attempt frees room at its destination: look again at once.
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.abort_all();
}

/// One round: a concurrent attempt (in `tasks`) for every pending input that is due, as
/// far as its provider's destination has room ([`AppState::enter`]): a slow provider
/// delays only its own inputs.
pub(crate) async fn deliver_due(state: &AppState, tasks: &mut JoinSet<()>) -> ApiResult<()> {
    let due = jobs::inputs_due(
        &state.db,
        state.clock.now_ms(),
        ROUND,
        i64::from(state.cfg.max_in_flight_per_destination.max(1)),
    )
    .await?;
    for id in due {
        let state = state.clone();
        tasks.spawn(async move {
            if let Err(e) = attempt(&state, &id).await {
                tracing::warn!(job = %id, error = %e, "job.input attempt failed unexpectedly");
            }
        });
    }
    Ok(())
}

/// How one attempt ended.
enum Outcome {
    /// The provider took it (2xx), or already had it (409, with the note why).
    Delivered(Option<String>),
    /// Worth another attempt.
    Retry(String),
    /// A 4xx other than 408, 409 and 429: the provider will not take it.
    Refused(String),
}

/// Whether an attempt's result shows the destination up, for its circuit breaker. Any
/// answer but a server failure does: a provider answering `503` or `429` (busy, not taking
/// work now) or `408` is reachable, and its input is retried with backoff, not counted
/// towards opening the circuit. Transport failures and other `5xx` count.
fn destination_up(sent: &Result<Answer, String>) -> bool {
    match sent {
        Ok(a) => !(500..=599).contains(&a.status) || a.status == 503,
        Err(_) => false,
    }
}

fn classify(outcome: Result<Answer, String>) -> Outcome {
    let answer = match outcome {
        Ok(a) => a,
        Err(e) => return Outcome::Retry(e),
    };
    let status = answer.status;
    if (200..300).contains(&status) {
        return Outcome::Delivered(None);
    }
    let (verdict, reason) = answer_summary(&answer);
    let why = match reason {
        Some(r) if !r.is_empty() => format!("{verdict}: {r}"),
        _ => verdict,
    };
    match status {
        409 => Outcome::Delivered(Some(format!(
            "{why}; taken as delivered (the provider has the input or no longer needs it)"
        ))),
        408 | 429 | 500..=599 => Outcome::Retry(why),
        _ => Outcome::Refused(why),
    }
}

/// One attempt at delivering the input of job `job_id`, if it is pending, due, and no
/// other attempt is in flight: a fresh credential, a new message id, the outcome recorded.
///
/// # Errors
/// Database errors, or a job whose stored data is unusable.
pub(crate) async fn attempt(state: &AppState, job_id: &JobId) -> ApiResult<()> {
    match state.inputs_in_flight.claim(job_id.as_str()) {
        Some(claim) => attempt_claimed(state, job_id, claim).await,
        None => Ok(()),
    }
}

/// [`attempt`] for a job already claimed (the first attempt claims the job before marking
/// its input pending, so the background task cannot take it first).
pub(crate) async fn attempt_claimed(
    state: &AppState,
    job_id: &JobId,
    _claim: Claim<'_>,
) -> ApiResult<()> {
    let Some(job) = jobs::find(&state.db, job_id).await? else {
        return Ok(());
    };
    let Some(input) = &job.input else {
        return Ok(());
    };
    let due = input
        .next_attempt_ms
        .is_some_and(|t| t <= state.clock.now_ms());
    if input.state != InputDeliveryState::Pending || !due {
        return Ok(());
    }
    let max = state.cfg.input_max_attempts.max(1);
    let number = input.attempts.saturating_add(1);
    let provider = providers::find(&state.db, &job.provider_id).await?;
    // The provider's destination must have room; otherwise a later round sends it.
    let Some(slot) = state.enter(&provider.job_url, state.clock.now_ms()) else {
        return Ok(());
    };
    let provider_job_id = job.provider_job_id.clone().ok_or_else(|| {
        ApiError::Internal(format!("accepted job {} has no provider job id", job.id))
    })?;
    let ring = providers::keyring(&state.db, &provider.id).await?;

    let ttl = state.cfg.credential_ttl;
    let expires_at = state
        .clock
        .now()
        .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let facts = models::version_facts(&state.db, &job.model_id, job.version).await?;
    let (url, authorization) = match &facts.object_key {
        // In the bucket: a presigned GET URL is both the location and the credential.
        Some(key) => {
            let url = models::presign_object(state.bucket.as_ref(), key, Duration::from_secs(ttl))
                .await?;
            (url, None)
        }
        // In the database: the broker's own content URL and a bearer credential for it.
        None => {
            let token = models::issue_credential(
                &state.db,
                &job.id,
                &job.model_id,
                job.version,
                expires_at,
                state.clock.now(),
            )
            .await?;
            (
                format!(
                    "{}/v1/models/{}/versions/{}/content",
                    state.base_url, job.model_id, job.version
                ),
                Some(format!("Bearer {token}")),
            )
        }
    };
    let input = BrokerMessage::Input(JobInput {
        job_id: job.id.clone(),
        provider_job_id,
        download: Download {
            url,
            authorization,
            expires_at,
            size: facts.size,
            sha256: facts.sha256,
        },
    });
    let body = serde_json::to_vec(&input).map_err(|e| ApiError::Internal(e.to_string()))?;
    let subject = Subject {
        provider_id: Some(provider.id.to_string()),
        job_id: Some(job.id.to_string()),
        label: Some(format!("job.input attempt {number}/{max}")),
    };
    // A fresh credential makes a different body: a new message, so a new webhook-id.
    let sent = send_signed(
        state,
        &provider.job_url,
        &MessageId::generate(),
        &body,
        &ring,
        state.cfg.send_attempts,
        &subject,
    )
    .await;
    let now = state.clock.now();
    let up = destination_up(&sent);
    let outcome = classify(sent);
    slot.done(up, state.clock.now_ms());
    let (why, verdict) = match outcome {
        Outcome::Delivered(note) => {
            jobs::input_delivered(&state.db, &job.id, number, note.as_deref(), now).await?;
            tracing::info!(job = %job.id, attempt = number, note = ?note, "job.input delivered");
            return Ok(());
        }
        Outcome::Retry(why) if number < max => {
            let delay = backoff_ms(state, number);
            let next = state
                .clock
                .now_ms()
                .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
            jobs::input_retry_at(&state.db, &job.id, number, &why, next, now).await?;
            tracing::info!(job = %job.id, attempt = number, delay_ms = delay, error = %why, "job.input not delivered; will try again");
            return Ok(());
        }
        Outcome::Retry(why) => (
            why,
            format!(
                "job.input not delivered after {number} attempts: the broker gives up and fails the job"
            ),
        ),
        Outcome::Refused(why) => (
            why,
            format!(
                "job.input refused by the provider (attempt {number}/{max}): not retried, the broker fails the job"
            ),
        ),
    };
    give_up(
        state,
        &job,
        &provider.job_url,
        &subject,
        number,
        &why,
        verdict,
    )
    .await?;
    Ok(())
}

/// Delay before attempt `number + 1`: the SDK's [`RetryPolicy`] (full jitter, doubling from
/// `input_backoff_ms` up to `input_max_backoff_ms`).
fn backoff_ms(state: &AppState, number: u32) -> u64 {
    let policy = RetryPolicy {
        max_attempts: state.cfg.input_max_attempts,
        initial_backoff: Duration::from_millis(state.cfg.input_backoff_ms.max(1)),
        max_backoff: Duration::from_millis(state.cfg.input_max_backoff_ms.max(1)),
        multiplier: 2.0,
    };
    u64::try_from(policy.delay(number, None).as_millis()).unwrap_or(u64::MAX)
}

/// Fails the job (if it still waits for its input), tells the user and logs why.
async fn give_up(
    state: &AppState,
    job: &JobRow,
    job_url: &str,
    subject: &Subject,
    number: u32,
    why: &str,
    verdict: String,
) -> ApiResult<()> {
    let problem = Problem::new(ProblemType::UpstreamFailed)
        .with_detail(format!(
            "the broker could not deliver the job's input to the provider: {why}"
        ))
        .with("input_attempts", number);
    let failed =
        jobs::input_given_up(&state.db, &job.id, number, why, &problem, state.clock.now()).await?;
    if !failed {
        // The job moved on meanwhile (the provider reported on it): nothing to give up.
        return Ok(());
    }
    tracing::warn!(job = %job.id, attempts = number, error = %why, "job.input given up; job failed");
    // Not a request: the broker's decision about the message, logged with it.
    let mut logged = subject.message("POST", job_url);
    logged.verdict = verdict;
    logged.reason = Some(why.to_owned());
    record(state, logged).await;
    if let Some(updated) = jobs::find(&state.db, &job.id).await? {
        notify_job(state, &updated, "job.failed").await?;
    }
    Ok(())
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    fn answer(status: u16) -> Result<Answer, String> {
        Ok(Answer {
            status,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        })
    }

    #[test]
    fn busy_answers_are_back_off_not_breaker_failures() {
        for status in [200, 202, 408, 409, 422, 429, 503] {
            assert!(destination_up(&answer(status)), "{status}");
        }
        for status in [500, 502, 504] {
            assert!(!destination_up(&answer(status)), "{status}");
        }
        assert!(!destination_up(&Err("connection refused".into())));
        // 503 and 429 are still retried.
        assert!(matches!(classify(answer(503)), Outcome::Retry(_)));
        assert!(matches!(classify(answer(429)), Outcome::Retry(_)));
    }
}
