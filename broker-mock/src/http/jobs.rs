//! `/v1/jobs`: a user asks for a provider's service on a model, lists and reads jobs, and
//! retries a rejected one. Thin handlers over [`crate::offers`] and
//! [`crate::store::jobs`].

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::wire::{CreateJob, Job, JobList, broker_paths};
use diax_sdk::{JobId, Problem};
use http::StatusCode;

use super::extract::{AuthUser, JsonBody, path_id};
use super::respond::{json, with_note};
use crate::error::ApiResult;
use crate::offers;
use crate::state::AppState;
use crate::store::jobs::{self, JobRow};
use crate::store::messages::Note;

/// OpenAPI description of the job routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, get_job, retry))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::JOBS, post(create).get(list))
        .route(broker_paths::JOB, get(get_job))
        .route(broker_paths::JOB_RETRY, post(retry))
}

/// The job as its owner sees it, noting its provider and id for the message log.
fn answer(status: StatusCode, job: &JobRow) -> Response {
    let note = Note {
        provider_id: Some(job.provider_id.to_string()),
        job_id: Some(job.id.to_string()),
        ..Note::default()
    };
    with_note(json(status, &job.to_wire()), note)
}

/// Ask for a job
///
/// Creates the job and offers it (signed `job.offer`) to the provider before answering. A
/// provider's problem answer is relayed unchanged in the job's `problem` (state `rejected`),
/// e.g. `account-required` with a `register_url`. On acceptance the broker owes the provider
/// the `job.input` with a temporary credential: the first attempt is made before answering,
/// later ones in the background, each with a fresh credential; `input_delivery` shows how it
/// stands, and a job whose input cannot be delivered becomes `failed` (PROTOCOL §5.5).
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "create_job",
    tag = "jobs",
    security(("api_key" = [])),
    request_body = CreateJob,
    responses(
        (status = 201, description = "The job, `accepted` or `rejected` (with the provider's problem)", body = Job),
        (status = 400, description = "`invalid-request`: bad operation or body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the provider's per-user secret is bound to another user", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such provider, model or version", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<CreateJob>,
) -> ApiResult<Response> {
    // The offer and its answer run to their end even if the client hangs up meanwhile:
    // a job is never left `offered` with an answer from the provider unapplied.
    let job =
        super::task::to_completion(async move { offers::create(&state, &user.id, &req).await })
            .await??;
    Ok(answer(StatusCode::CREATED, &job))
}

/// The caller's jobs
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    security(("api_key" = [])),
    responses((status = 200, description = "The caller's jobs, newest first", body = JobList))
)]
async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    let jobs = jobs::list(&state.db, &user.id).await?;
    Ok(json(StatusCode::OK, &JobList { jobs }))
}

/// One job
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    security(("api_key" = [])),
    params(("job_id" = JobId, Path, description = "The job")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 400, description = "`invalid-request`: malformed job id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such job of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: JobId = path_id("job", &id)?;
    let job = jobs::owned(&state.db, &user.id, &id).await?;
    Ok(answer(StatusCode::OK, &job))
}

/// Offer a rejected job again
///
/// Same `job_id`, a new signed offer (now carrying a linked account, if any).
#[utoipa::path(
    post,
    path = "/v1/jobs/{job_id}/retry",
    operation_id = "retry_job",
    tag = "jobs",
    security(("api_key" = [])),
    params(("job_id" = JobId, Path, description = "The job")),
    responses(
        (status = 200, description = "The job after the new offer", body = Job),
        (status = 400, description = "`invalid-request`: malformed job id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such job of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the job is not `rejected`, or is being retried already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: JobId = path_id("job", &id)?;
    let job = super::task::to_completion(async move { offers::retry(&state, &user.id, &id).await })
        .await??;
    Ok(answer(StatusCode::OK, &job))
}
