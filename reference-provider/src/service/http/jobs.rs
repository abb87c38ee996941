//! `POST /diax/jobs` (the `job_url`: signed offers and inputs from the broker) and
//! `GET /diax/jobs/{provider_job_id}` (the `status_url`).

use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diax_sdk::axum_ext::{parse_message, verify_request_at};
use diax_sdk::clock::unix_now;
use diax_sdk::replay::{ReplayStore as _, body_digest};
use diax_sdk::wire::{BrokerMessage, InputAccepted, JobAccepted, JobStatus};
use diax_sdk::{
    Delivery, PROBLEM_CONTENT_TYPE, Problem, ProblemType, ProviderJobId, ReplayError, VerifyError,
};

use super::Authenticated;
use crate::service::db::hex_encode;
use crate::service::error::{ApiError, ApiResult};
use crate::service::group_commit::{RecordWork, RecordedOffer};
use crate::service::{Service, intake, queue};

/// OpenAPI description of the broker-facing job routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(receive, status))]
pub(crate) struct Api;

/// The `202` answer to a signed message, for the OpenAPI document: [`JobAccepted`] for a
/// `job.offer`, [`InputAccepted`] for a `job.input`.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only describes the answers in the OpenAPI document
enum MessageAccepted {
    /// The answer to a `job.offer`.
    Offer(JobAccepted),
    /// The answer to a `job.input`.
    Input(InputAccepted),
}

/// Job routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/diax/jobs", post(receive))
        .route("/diax/jobs/{provider_job_id}", get(status))
}

/// A signed message from the broker (the `job_url`)
///
/// `job.offer` or `job.input`, verified over the raw body (Standard Webhooks v1, every active
/// key, 300 s tolerance, database-backed replay store). A redelivery (same `webhook-id`, same
/// body) gets the answer saved for the first delivery; offers are deduplicated on `job_id`.
#[utoipa::path(
    post,
    path = "/diax/jobs",
    operation_id = "receive_broker_message",
    tag = "broker",
    params(
        ("webhook-id" = String, Header, description = "Standard Webhooks message id (kept on retries)"),
        ("webhook-timestamp" = String, Header, description = "Unix seconds when this attempt was signed"),
        ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64 HMAC-SHA256>` entries, one per active key"),
    ),
    request_body = BrokerMessage,
    responses(
        (status = 202, description = "`JobAccepted` for an offer (with `Location` = `status_url`), `InputAccepted` for an input", body = MessageAccepted,
            headers(("Location" = String, description = "The job's `status_url` (offers only)"))),
        (status = 400, description = "`signature-missing`, `signature-malformed` or `invalid-request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`account-required` (with `register_url`), `signature-invalid` or `timestamp-out-of-tolerance`", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`payment-required` (with `top_up_url`, `quote` and `balance`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: an offer addressed to another provider", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: an input for an unknown provider job (or one of another broker job)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`replayed-message`: a `webhook-id` reused for another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unsupported-operation` (another service kind or operation) or `model-invalid` (model too large)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service-unavailable`: this provider is not registered with a broker yet", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn receive(State(service): State<Service>, request: Request) -> Response {
    let unrecorded = match verify(&service, request).await {
        Ok(u) => u,
        Err(problem) => return refused(&service, problem),
    };
    let message_id = unrecorded.record.id.clone();
    let (message, delivery) = match unrecorded.message {
        // An offer: its id is recorded in the transaction that decides it.
        Ok(BrokerMessage::Offer(offer)) => {
            return match intake::handle_recorded_offer(&service, offer, unrecorded.record).await {
                Ok(RecordedOffer::Replayed(e)) => refused(&service, replay_problem(&message_id, e)),
                Ok(RecordedOffer::Saved(saved)) => {
                    tracing::info!(message_id = %message_id, "redelivery: answering as before");
                    rebuild(&saved)
                }
                Ok(RecordedOffer::Offered(Ok((acc, body)))) => {
                    respond(StatusCode::ACCEPTED, body, Some(&acc.status_url), false)
                }
                Ok(RecordedOffer::Offered(Err(e))) | Err(e) => {
                    let problem = e.to_problem();
                    if (400..500).contains(&problem.status) {
                        tracing::info!(message_id, problem = %problem, "message refused");
                    }
                    e.into_response()
                }
            };
        }
        // Anything else: the id is recorded first, on its own (as `Signed` would).
        message => {
            let r = &unrecorded.record;
            let delivery = match service
                .replay()
                .record(&r.id, unrecorded.digest, r.expires_at, r.now)
                .await
            {
                Ok(d) => d,
                Err(e) => return refused(&service, replay_problem(&message_id, e)),
            };
            match message {
                Ok(m) => (m, delivery),
                Err(problem) => return refused(&service, problem),
            }
        }
    };
    if delivery == Delivery::Redelivery {
        match service.replay().saved_response(&message_id).await {
            Ok(Some(saved)) => {
                tracing::info!(message_id = %message_id, "redelivery: answering as before");
                return rebuild(&saved);
            }
            Ok(None) => {} // the first delivery did not finish: handle it (idempotently)
            Err(e) => return ApiError::Db(e).into_response(),
        }
    }
    let BrokerMessage::Input(input) = message else {
        return ApiError::Internal("an offer took the path of inputs".into()).into_response();
    };
    let acc = match intake::handle_input(&service, &input).await {
        Ok(acc) => acc,
        Err(e) => return save_error(&service, &message_id, e).await,
    };
    let Ok(body) = serde_json::to_string(&acc) else {
        return ApiError::Internal("could not encode the answer".into()).into_response();
    };
    if let Err(e) = service
        .replay()
        .save_response(&message_id, StatusCode::ACCEPTED.as_u16(), &body, None)
        .await
    {
        tracing::warn!(error = %e, "could not save the answer for redeliveries");
    }
    respond(StatusCode::ACCEPTED, body, None, false)
}

/// A signed message whose signature, timestamp and size are checked, and whose
/// `webhook-id` is not recorded yet.
struct Unrecorded {
    /// The parsed message, or the `invalid-request` problem for a body that does not match.
    message: Result<BrokerMessage, Problem>,
    /// The id to record.
    record: RecordWork,
    /// The body's SHA-256.
    digest: [u8; 32],
}

/// The checks of [`diax_sdk::axum_ext::Signed`] (content type, size, signature, timestamp,
/// schema) without its replay-store step, which the caller does: for an offer in the
/// transaction that decides it.
async fn verify(service: &Service, request: Request) -> Result<Unrecorded, Problem> {
    let verifier = service.verifier();
    let now = unix_now();
    let (verified, body) = verify_request_at(verifier, request, now).await?;
    let digest = body_digest(&body);
    let message = parse_message(&body);
    Ok(Unrecorded {
        message,
        record: RecordWork {
            id: verified.id.to_string(),
            digest: hex_encode(&digest),
            expires_at: verifier.replay_expires_at(now),
            now,
        },
        digest,
    })
}

/// The problem for a replay-store refusal: `replayed-message` (409) for an id seen with
/// another body, `service-unavailable` when the store failed.
fn replay_problem(message_id: &str, e: ReplayError) -> Problem {
    Problem::from(&match e {
        ReplayError::Conflict => VerifyError::Replayed(message_id.to_owned()),
        ReplayError::Unavailable(why) => VerifyError::ReplayStore(why),
        other => VerifyError::ReplayStore(other.to_string()),
    })
}

/// Answers a message refused before it was handled.
fn refused(service: &Service, problem: Problem) -> Response {
    let signature_problem = matches!(
        problem.kind(),
        Some(
            ProblemType::SignatureInvalid
                | ProblemType::SignatureMalformed
                | ProblemType::SignatureMissing
                | ProblemType::TimestampOutOfTolerance
        )
    );
    if signature_problem && service.verifier().keyring().is_empty() {
        return ApiError::NotRegistered.into_response();
    }
    tracing::info!(problem = %problem, "signed message refused");
    problem.into_response()
}

/// Answers with an error, saving 4xx answers so a redelivery gets the same one.
async fn save_error(service: &Service, message_id: &str, error: ApiError) -> Response {
    let problem = error.to_problem();
    if (400..500).contains(&problem.status) {
        let body = String::from_utf8_lossy(&problem.to_json()).into_owned();
        if let Err(e) = service
            .replay()
            .save_response(message_id, problem.status, &body, None)
            .await
        {
            tracing::warn!(error = %e, "could not save the answer for redeliveries");
        }
        tracing::info!(message_id, problem = %problem, "message refused");
    }
    error.into_response()
}

fn respond(status: StatusCode, body: String, location: Option<&str>, problem: bool) -> Response {
    let mut response = (status, body).into_response();
    let ct = if problem {
        PROBLEM_CONTENT_TYPE
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, loc);
    }
    response
}

fn rebuild(saved: &crate::service::db::SavedResponse) -> Response {
    let status = u16::try_from(saved.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(
        status,
        saved.response_body.clone(),
        saved.response_location.as_deref(),
        !status.is_success(),
    )
}

/// A job's status (the `status_url`)
///
/// Readable by the job's owner only: the provider account the offer named, with its API
/// key. Another account gets `404` (as for a job that does not exist), so a status URL
/// seen elsewhere (in a log, say) is of no use without the owner's key.
#[utoipa::path(
    get,
    path = "/diax/jobs/{provider_job_id}",
    operation_id = "get_job_status",
    tag = "broker",
    security(("api_key" = [])),
    params(("provider_job_id" = ProviderJobId, Path, description = "The provider's job id")),
    responses(
        (status = 200, description = "The job's state, progress and problem", body = JobStatus),
        (status = 401, description = "`unauthorized`: no or an unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such job of this account", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn status(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
    Path(provider_job_id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    let job = queue::get(service.db(), &provider_job_id)
        .await?
        .filter(|job| job.account_id == account.account_id)
        .ok_or_else(|| ApiError::NotFound(format!("no job {provider_job_id} of this account")))?;
    Ok(Json(job.status()))
}
