//! `POST /v1/providers/{id}/events`: a provider's signed job events. The handler reads the
//! raw body and notes the outcome for the message log; [`crate::intake`] verifies and
//! applies the event.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use diax_sdk::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, RawHeaders};
use diax_sdk::wire::{EventAck, JobEvent, broker_paths};
use diax_sdk::{Problem, ProviderId};
use http::StatusCode;

use super::extract::{path_id, read_body, require_json};
use super::respond::json;
use crate::error::ApiResult;
use crate::intake;
use crate::state::AppState;
use crate::store::messages::Note;
use crate::store::providers;

/// OpenAPI description of the provider event route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(post_event))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(broker_paths::PROVIDER_EVENTS, post(post_event))
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
        (status = 503, description = "`service-unavailable`: a `job.completed` whose result would pass the broker's budget of model bytes held in memory (`--max-buffered-model-bytes`); nothing was fetched or applied, send the event again after `Retry-After`", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u32, description = "Seconds to wait before sending again (1)"))),
    )
)]
async fn post_event(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    req: Request,
) -> Response {
    let mut note = Note {
        provider_id: Some(provider.clone()),
        ..Note::default()
    };
    let mut resp = match handle(&state, &provider, req, &mut note).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(n) = resp.extensions().get::<Note>() {
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
    note: &mut Note,
) -> ApiResult<Response> {
    let provider_id: ProviderId = path_id("provider", provider)?;
    let provider = providers::find(&state.db, &provider_id).await?;
    require_json(req.headers())?;
    let headers = req.headers().clone();
    let body = read_body(req, state.cfg.max_body_bytes).await?;
    // Verified and applied to the end even if the provider hangs up meanwhile: a result
    // fetched and recorded always gets its user's notification (the provider's redelivery is
    // then acknowledged as a duplicate).
    let work = {
        let state = state.clone();
        let mut noted = std::mem::take(note);
        async move {
            let raw = RawHeaders {
                id: headers.get(HEADER_ID).map(|v| v.as_bytes()),
                timestamp: headers.get(HEADER_TIMESTAMP).map(|v| v.as_bytes()),
                signature: headers.get(HEADER_SIGNATURE).map(|v| v.as_bytes()),
            };
            let ack = intake::receive(&state, &provider, &raw, &body, &mut noted).await;
            (ack, noted)
        }
    };
    let (ack, noted) = super::task::to_completion(work).await?;
    *note = noted;
    let ack = ack?;
    Ok(json(StatusCode::OK, &ack))
}
