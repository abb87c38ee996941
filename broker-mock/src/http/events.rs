//! Provider events intake: signature, tolerance, replay, ownership, state transitions,
//! idempotent duplicates, and fetching the result of `job.completed` into a new model version.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use diax_sdk::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, RawHeaders};
use diax_sdk::wire::{EventAck, JobEvent, JobEventKind, JobState, VersionSource, broker_paths};
use diax_sdk::{Delivery, JobId, Problem, ProviderId, Verifier, VerifierConfig};
use http::StatusCode;

use super::jobs::{JobRow, find_job, quote_text};
use super::providers::{keyring, load_provider};
use super::{LogNote, json, path_id, read_body, require_json};
use crate::AppState;
use crate::db::SqliteReplayStore;
use crate::error::{ApiError, ApiResult};
use crate::outbound::{Subject, download};

/// OpenAPI description of the provider event route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(intake))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(broker_paths::PROVIDER_EVENTS, post(intake))
}

/// A job event from a provider (signed)
///
/// Verified over the raw body with the provider's active keys (Standard Webhooks v1,
/// tolerance, replay store), then applied: `accepted → running* → completed | failed`. On
/// `job.completed` the broker fetches the result into a new model version before answering.
/// A repeat of an event already applied is acknowledged with `duplicate: true`.
#[utoipa::path(
    post,
    path = "/v1/providers/{provider_id}/events",
    operation_id = "post_job_event",
    tag = "events",
    params(
        ("webhook-id" = String, Header, description = "Standard Webhooks message id (kept on retries)"),
        ("webhook-timestamp" = String, Header, description = "Unix seconds when this attempt was signed"),
        ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64 HMAC-SHA256>` entries, one per active key"),
        ("provider_id" = ProviderId, Path, description = "The sending provider"),
    ),
    request_body = JobEvent,
    responses(
        (status = 200, description = "Applied, or a duplicate of an event already applied", body = EventAck),
        (status = 400, description = "`signature-missing`, `signature-malformed` or `invalid-request` (malformed id or event)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`signature-invalid` or `timestamp-out-of-tolerance`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the event names another provider, or a per-user secret speaks for another user's job", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such provider, or no such job of this provider", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`replayed-message`, `invalid-transition` or `conflict` (another provider job id)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`download-failed`: the result could not be fetched or failed its size or digest check", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn intake(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    req: Request,
) -> Response {
    let mut note = LogNote {
        provider_id: Some(provider.clone()),
        ..LogNote::default()
    };
    let mut resp = match handle(&state, &provider, req, &mut note).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(n) = resp.extensions().get::<LogNote>() {
        if note.reason.is_none() {
            note.reason.clone_from(&n.reason);
        }
        if note.verdict.is_none() || !resp.status().is_success() {
            let refused = n.verdict.clone().unwrap_or_else(|| "refused".into());
            note.verdict = Some(match note.verdict.take() {
                Some(v) => format!("{v}; {refused}"),
                None => refused,
            });
        }
    }
    resp.extensions_mut().insert(note);
    resp
}

async fn handle(
    state: &AppState,
    provider: &str,
    req: Request,
    note: &mut LogNote,
) -> ApiResult<Response> {
    let provider_id: ProviderId = path_id("provider", provider)?;
    let provider = load_provider(state, &provider_id).await?;
    require_json(req.headers())?;
    let headers = req.headers().clone();
    let body = read_body(req, state.cfg.max_body_bytes).await?;
    let raw = RawHeaders {
        id: headers.get(HEADER_ID).map(|v| v.as_bytes()),
        timestamp: headers.get(HEADER_TIMESTAMP).map(|v| v.as_bytes()),
        signature: headers.get(HEADER_SIGNATURE).map(|v| v.as_bytes()),
    };
    let verifier = Verifier::new(keyring(state, &provider.id).await?)
        .with_replay_store(Arc::new(SqliteReplayStore::new(
            state.db.clone(),
            format!("provider:{}", provider.id),
        )))
        .with_config(VerifierConfig {
            tolerance_secs: state.cfg.tolerance,
            max_body_bytes: state.cfg.max_body_bytes,
            ..VerifierConfig::default()
        });
    let (verified, delivery) = match verifier.verify_at(&raw, &body, state.clock.now()).await {
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
    let event: JobEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a job event: {e}")))?;
    note.job_id = Some(event.job_id.to_string());
    if event.provider_id != provider_id {
        return Err(ApiError::Forbidden(format!(
            "event names provider {} but was posted to the events URL of {provider_id}",
            event.provider_id
        )));
    }
    // Serialise events of one job: a redelivery racing its original acts once.
    let lock = state.job_lock(event.job_id.as_str());
    let _guard = lock.lock().await;
    let job = match find_job(state, event.job_id.as_str()).await? {
        Some(j) if j.provider_id == provider.id => j,
        _ => {
            return Err(ApiError::NotFound(format!(
                "provider {provider_id} has no job {}",
                event.job_id
            )));
        }
    };
    if !provider.speaks_for(&job.user_id) {
        return Err(ApiError::Forbidden(
            "a per-user secret may only speak for its own user's jobs".into(),
        ));
    }
    if let Some(pj) = &job.provider_job_id
        && pj != event.provider_job_id.as_str()
    {
        return Err(ApiError::Conflict(format!(
            "job {} is provider job {pj}, not {}",
            job.id, event.provider_job_id
        )));
    }
    let canonical = serde_json::to_string(&event).map_err(|e| ApiError::Internal(e.to_string()))?;
    let seq = i64::try_from(event.sequence)
        .map_err(|_| ApiError::InvalidRequest("sequence out of range".into()))?;
    let known: Option<String> =
        sqlx::query_scalar("SELECT body FROM job_events WHERE job_id = $1 AND sequence = $2")
            .bind(&job.id)
            .bind(seq)
            .fetch_optional(&state.db)
            .await?;
    if let Some(known) = known {
        if known == canonical {
            return ack(&job.id, job.state(), true);
        }
        return Err(ApiError::InvalidTransition(format!(
            "event {} of job {} was already received with other content",
            event.sequence, job.id
        )));
    }
    let current = job.state();
    if current.is_terminal() {
        return Err(ApiError::InvalidTransition(format!(
            "job {} is {current}; it accepts no {}",
            job.id,
            event.kind.name()
        )));
    }
    if seq <= job.last_sequence {
        return Err(ApiError::InvalidTransition(format!(
            "sequence {} is not after the last one received ({})",
            event.sequence, job.last_sequence
        )));
    }
    let allowed = matches!(
        (&event.kind, current),
        (JobEventKind::Accepted { .. }, JobState::Offered)
            | (_, JobState::Accepted | JobState::Running)
    );
    if !allowed {
        return Err(ApiError::InvalidTransition(format!(
            "job {} is {current}; {} is not allowed now",
            job.id,
            event.kind.name()
        )));
    }
    apply(state, &job, &event, &canonical, seq).await
}

fn ack(job: &str, state: JobState, duplicate: bool) -> ApiResult<Response> {
    let job_id = JobId::parse(job.to_owned()).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json(
        StatusCode::OK,
        &EventAck {
            job_id,
            state,
            duplicate,
        },
    ))
}

async fn apply(
    state: &AppState,
    job: &JobRow,
    event: &JobEvent,
    canonical: &str,
    seq: i64,
) -> ApiResult<Response> {
    let now = state.clock.now();
    let mut result_version: Option<i64> = None;
    if let JobEventKind::Completed { result } = &event.kind {
        let subject = Subject {
            provider_id: Some(job.provider_id.clone()),
            job_id: Some(job.id.clone()),
            ..Subject::default()
        };
        let bytes = download(state, &result.download, &subject)
            .await
            .map_err(|e| ApiError::DownloadFailed(format!("could not fetch the result: {e}")))?;
        let source = VersionSource {
            job_id: event.job_id.clone(),
            provider_id: event.provider_id.clone(),
            from_version: u32::try_from(job.version).unwrap_or(0),
        };
        // Another delivery of the same event may have stored it meanwhile.
        if let Some(again) = recheck_duplicate(state, job, seq, canonical).await? {
            return Ok(again);
        }
        let v = super::models::add_version(state, &job.model_id, &bytes, &source).await?;
        result_version = Some(i64::from(v));
    }
    let mut tx = state.db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO job_events (job_id, sequence, kind, body, received_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(&job.id)
    .bind(seq)
    .bind(event.kind.name())
    .bind(canonical)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() != 1 {
        drop(tx);
        return recheck_duplicate(state, job, seq, canonical)
            .await?
            .ok_or_else(|| ApiError::InvalidTransition("a concurrent event won".into()));
    }
    let new_state = match (&event.kind, job.state()) {
        // A late `job.accepted` does not move a running job back.
        (JobEventKind::Accepted { .. }, JobState::Running) => JobState::Running,
        (kind, _) => kind.state(),
    };
    match &event.kind {
        JobEventKind::Accepted { quote } => {
            sqlx::query(
                "UPDATE jobs SET state = CASE WHEN state = 'running' THEN 'running' ELSE 'accepted' END,
                   quote = COALESCE($2, quote), last_sequence = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(&job.id)
            .bind(quote_text(quote.as_ref()))
            .bind(seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        JobEventKind::Progress { percent, .. } => {
            sqlx::query(
                "UPDATE jobs SET state = 'running', progress = $2, last_sequence = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(&job.id)
            .bind(i64::from((*percent).min(100)))
            .bind(seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        JobEventKind::Completed { result } => {
            sqlx::query(
                "UPDATE jobs SET state = 'completed', progress = 100, result_version = $2, report = $3, quote = COALESCE($4, quote), last_sequence = $5, updated_at = $6 WHERE id = $1",
            )
            .bind(&job.id)
            .bind(result_version)
            .bind(result.report.as_ref().map(ToString::to_string))
            .bind(quote_text(result.charged.as_ref()))
            .bind(seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        JobEventKind::Failed { problem } => {
            sqlx::query(
                "UPDATE jobs SET state = 'failed', problem = $2, last_sequence = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(&job.id)
            .bind(serde_json::to_string(problem).map_err(|e| ApiError::Internal(e.to_string()))?)
            .bind(seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    if new_state == JobState::Running || new_state.is_terminal() {
        // The provider works on the job (so it has the input) or ended it: stop sending it.
        sqlx::query(
            "UPDATE jobs SET input_state = 'stopped', input_next_attempt_ms = NULL
             WHERE id = $1 AND input_state = 'pending'",
        )
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if new_state.is_terminal()
        && let Some(updated) = find_job(state, &job.id).await?
    {
        super::notifications::notify_job(state, &updated, event.kind.name()).await?;
    }
    tracing::info!(job = %job.id, event = event.kind.name(), sequence = event.sequence, "job event applied");
    ack(&job.id, new_state, false)
}

async fn recheck_duplicate(
    state: &AppState,
    job: &JobRow,
    seq: i64,
    canonical: &str,
) -> ApiResult<Option<Response>> {
    let known: Option<String> =
        sqlx::query_scalar("SELECT body FROM job_events WHERE job_id = $1 AND sequence = $2")
            .bind(&job.id)
            .bind(seq)
            .fetch_optional(&state.db)
            .await?;
    match known {
        None => Ok(None),
        Some(k) if k == canonical => {
            let now = find_job(state, &job.id)
                .await?
                .map_or(job.state(), |j| j.state());
            ack(&job.id, now, true).map(Some)
        }
        Some(_) => Err(ApiError::InvalidTransition(format!(
            "event {seq} of job {} was already received with other content",
            job.id
        ))),
    }
}
