//! Receiving a provider's signed job events (PROTOCOL §5.6): the signature is checked over
//! the raw body with the provider's active keys (tolerance, durable replay store), the event
//! must be about one of the provider's jobs (and, for a per-user secret, one of its user's),
//! then the job moves along its state machine. A `job.completed` has its result (and its
//! picture, if any: a bad picture is dropped, the result kept) fetched into a new model
//! version before it is acknowledged; a repeat of an applied event is
//! acknowledged as a duplicate; an end notifies the user.

use std::sync::Arc;

use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::{Download, EventAck, JobEvent, JobEventKind, JobState, VersionSource};
use diax_sdk::{Delivery, JobId, Problem, Verifier, VerifierConfig};

use crate::error::{ApiError, ApiResult};
use crate::notifier::notify_job;
use crate::outbound::{Fetched, Subject, download, download_stream};
use crate::state::AppState;
use crate::store::jobs::{self, JobRow};
use crate::store::messages::Note;
use crate::store::models;
use crate::store::providers::{self, Provider};
use crate::store::replay::SqliteReplayStore;

/// Verifies and applies one event `body` posted to the events URL of `provider`, noting
/// the verdict and the job for the message log.
///
/// # Errors
/// The problem to answer: signature problems, `InvalidRequest`, `Forbidden`, `NotFound`,
/// `Conflict`, `InvalidTransition`, `DownloadFailed`; database errors.
pub(crate) async fn receive(
    state: &AppState,
    provider: &Provider,
    raw: &RawHeaders<'_>,
    body: &[u8],
    note: &mut Note,
) -> ApiResult<EventAck> {
    let verifier = Verifier::new(providers::keyring(&state.db, &provider.id).await?)
        .with_replay_store(Arc::new(SqliteReplayStore::new(
            state.db.clone(),
            format!("provider:{}", provider.id),
        )))
        .with_config(VerifierConfig {
            tolerance_secs: state.cfg.tolerance,
            max_body_bytes: state.cfg.max_body_bytes,
            ..VerifierConfig::default()
        });
    let (verified, delivery) = match verifier.verify_at(raw, body, state.clock.now()).await {
        Ok(v) => v,
        Err(e) => {
            note.verdict = Some("signature refused".into());
            return Err(ApiError::from(Problem::from(&e)));
        }
    };
    note.verdict = Some(format!(
        "signature valid ({}){}",
        verified.key_id,
        if delivery == Delivery::Redelivery {
            ", redelivery"
        } else {
            ""
        }
    ));
    let event: JobEvent = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a job event: {e}")))?;
    note.job_id = Some(event.job_id.to_string());
    // Which event it was, for the message log (and the job's timeline in the inspector).
    let what = match &event.kind {
        JobEventKind::Progress { percent, .. } => format!("job.progress {percent} %"),
        kind => kind.name().to_owned(),
    };
    if let Some(v) = note.verdict.as_mut() {
        v.push_str(": ");
        v.push_str(&what);
    }
    if event.provider_id != provider.id {
        return Err(ApiError::Forbidden(format!(
            "event names provider {} but was posted to the events URL of {}",
            event.provider_id, provider.id
        )));
    }
    // Serialise events of one job: a redelivery racing its original acts once.
    let lock = state.job_lock(event.job_id.as_str());
    let _guard = lock.lock().await;
    let job = match jobs::find(&state.db, &event.job_id).await? {
        Some(j) if j.provider_id == provider.id => j,
        _ => {
            return Err(ApiError::NotFound(format!(
                "provider {} has no job {}",
                provider.id, event.job_id
            )));
        }
    };
    if !provider.speaks_for(&job.user_id) {
        return Err(ApiError::Forbidden(
            "a per-user secret may only speak for its own user's jobs".into(),
        ));
    }
    if let Some(pj) = &job.provider_job_id
        && *pj != event.provider_job_id
    {
        return Err(ApiError::Conflict(format!(
            "job {} is provider job {pj}, not {}",
            job.id, event.provider_job_id
        )));
    }
    let canonical = serde_json::to_string(&event).map_err(|e| ApiError::Internal(e.to_string()))?;
    let seq = i64::try_from(event.sequence)
        .map_err(|_| ApiError::InvalidRequest("sequence out of range".into()))?;
    if let Some(known) = jobs::recorded_event(&state.db, &job.id, seq).await? {
        if known == canonical {
            return Ok(ack(&job.id, job.state, true));
        }
        return Err(ApiError::InvalidTransition(format!(
            "event {} of job {} was already received with other content",
            event.sequence, job.id
        )));
    }
    jobs::admit_event(&job, &event, seq)?;
    apply(state, provider, &job, &event, &canonical, seq).await
}

fn ack(job: &JobId, state: JobState, duplicate: bool) -> EventAck {
    EventAck {
        job_id: job.clone(),
        state,
        duplicate,
    }
}

async fn apply(
    state: &AppState,
    provider: &Provider,
    job: &JobRow,
    event: &JobEvent,
    canonical: &str,
    seq: i64,
) -> ApiResult<EventAck> {
    let now = state.clock.now();
    let mut fetched = None;
    // What the result (and its picture) will hold in memory while the event is applied,
    // reserved before a byte is fetched; given back when this returns (or is dropped).
    let mut _held = None;
    if let JobEventKind::Completed { result } = &event.kind {
        let declared = result.download.size.min(state.cfg.max_model_bytes as u64);
        let result_bytes = match &state.bucket {
            None => declared,
            Some(bucket) => declared.min(bucket.buffered_bytes()),
        };
        let picture_bytes = result
            .picture
            .as_ref()
            .map_or(0, |p| p.size.min(diax_sdk::wire::MAX_PICTURE_BYTES));
        _held = Some(state.model_budget.reserve(
            result_bytes.saturating_add(picture_bytes),
            "fetching this job's result",
        )?);
        let subject = Subject {
            provider_id: Some(job.provider_id.to_string()),
            job_id: Some(job.id.to_string()),
            ..Subject::default()
        };
        // A result must be on the origin the provider registered (its job URL's). With
        // `--storage s3://…` it goes into the bucket as it arrives; the row that names it
        // is written with the event below.
        let body = fetch_result(state, provider, job, &result.download, &subject).await?;
        // The picture under the same rules; a bad one is dropped (the log says why), never
        // the result.
        let picture = match &result.picture {
            Some(p) => download(state, p, &provider.job_url, &subject, Fetched::Picture)
                .await
                .ok(),
            None => None,
        };
        let source = VersionSource {
            job_id: event.job_id.clone(),
            provider_id: event.provider_id.clone(),
            from_version: job.version,
        };
        fetched = Some((body, picture, source));
    }
    let version = fetched
        .as_ref()
        .map(|(body, picture, source)| models::NewVersion {
            model: &job.model_id,
            body,
            picture: picture.as_deref(),
            source,
        });
    // The version is stored with the event, in one transaction: a redelivery that
    // recorded the event meanwhile makes none.
    let applied =
        jobs::apply_event(&state.db, job, event, canonical, seq, version.as_ref(), now).await;
    if !matches!(applied, Ok(Some(_)))
        && let Some((body, _, _)) = &fetched
    {
        // No version recorded: its object (if any) must not stay.
        models::discard(state.bucket.as_ref(), body).await;
    }
    let Some(new_state) = applied? else {
        return recheck_duplicate(state, job, seq, canonical)
            .await?
            .ok_or_else(|| ApiError::InvalidTransition("a concurrent event won".into()));
    };
    if new_state.is_terminal()
        && let Some(updated) = jobs::find(&state.db, &job.id).await?
    {
        notify_job(state, &updated, event.kind.name()).await?;
    }
    tracing::info!(job = %job.id, event = event.kind.name(), sequence = event.sequence, "job event applied");
    Ok(ack(&job.id, new_state, false))
}

/// Fetches a job's result as a new version's body: into memory for the database, or with a
/// bucket streamed into a new object as it arrives (in parts above the part size), so memory
/// stays flat with the result's size. The object exists only when every check of the
/// download passed; a refused or broken download leaves none.
///
/// # Errors
/// `DownloadFailed` naming the rule the download broke; an opaque 500 when the bucket fails.
async fn fetch_result(
    state: &AppState,
    provider: &Provider,
    job: &JobRow,
    dl: &Download,
    subject: &Subject,
) -> ApiResult<models::Body> {
    let failed = |e: String| ApiError::DownloadFailed(format!("could not fetch the result: {e}"));
    let Some(bucket) = state.bucket.as_ref() else {
        let bytes = download(state, dl, &provider.job_url, subject, Fetched::Result)
            .await
            .map_err(failed)?;
        return Ok(models::Body::Inline(bytes));
    };
    let (bytes, fetching) = download_stream(state, dl, &provider.job_url, subject, Fetched::Result);
    let (fetched, staged) = tokio::join!(
        fetching,
        models::stage_stream(bucket, &job.model_id, bytes, dl.size)
    );
    match (fetched, staged) {
        (Ok(_), Ok(body)) => Ok(body),
        // The store failed (the download then broke off on the closed pipe): a 500, so the
        // provider sends the event again later.
        (_, Err(e @ ApiError::Internal(_))) | (Ok(_), Err(e)) => Err(e),
        (Err(why), Err(_)) => Err(failed(why)),
        (Err(why), Ok(body)) => {
            // Not reached (the stream ends in the download's error), but never keep it.
            models::discard(Some(bucket), &body).await;
            Err(failed(why))
        }
    }
}

/// The acknowledgement of a duplicate, if event `seq` of `job` was recorded meanwhile with
/// the same content; `InvalidTransition` if with other content.
async fn recheck_duplicate(
    state: &AppState,
    job: &JobRow,
    seq: i64,
    canonical: &str,
) -> ApiResult<Option<EventAck>> {
    match jobs::recorded_event(&state.db, &job.id, seq).await? {
        None => Ok(None),
        Some(k) if k == canonical => {
            let now = jobs::find(&state.db, &job.id)
                .await?
                .map_or(job.state, |j| j.state);
            Ok(Some(ack(&job.id, now, true)))
        }
        Some(_) => Err(ApiError::InvalidTransition(format!(
            "event {seq} of job {} was already received with other content",
            job.id
        ))),
    }
}
