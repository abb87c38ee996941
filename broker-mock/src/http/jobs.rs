//! Jobs: a user asks for a provider's service on a model; the broker offers it (signed) to
//! the provider, relays a problem answer unchanged, and on `202` owes the provider the
//! signed `job.input` with a temporary credential (delivered durably by `crate::inputs`).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use diax_sdk::wire::{
    BrokerMessage, CreateJob, InputDelivery, InputDeliveryState, Job, JobAccepted, JobList,
    JobOffer, JobState, ModelVersionRef, OfferUser, OfferedModel, broker_paths,
};
use diax_sdk::{
    AccountId, JobId, MessageId, ModelId, Problem, ProblemType, ProviderId, ProviderJobId, Quote,
};
use http::StatusCode;
use serde_json::Value;

use super::providers::{ProviderRow, keyring, load_provider};
use super::{AuthUser, JsonBody, LogNote, json, path_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::outbound::{Subject, send_signed};

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

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) provider_id: String,
    pub(crate) model_id: String,
    pub(crate) version: i64,
    pub(crate) operation: String,
    pub(crate) params: Option<String>,
    pub(crate) state: String,
    pub(crate) provider_job_id: Option<String>,
    pub(crate) status_url: Option<String>,
    pub(crate) quote: Option<String>,
    pub(crate) progress: Option<i64>,
    pub(crate) problem: Option<String>,
    pub(crate) result_version: Option<i64>,
    pub(crate) report: Option<String>,
    pub(crate) last_sequence: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) input_state: Option<String>,
    pub(crate) input_attempts: i64,
    pub(crate) input_next_attempt_ms: Option<i64>,
    pub(crate) input_last_attempt_at: Option<i64>,
    pub(crate) input_last_error: Option<String>,
    pub(crate) input_delivered_at: Option<i64>,
}

pub(crate) fn parse_state(s: &str) -> JobState {
    match s {
        "rejected" => JobState::Rejected,
        "accepted" => JobState::Accepted,
        "running" => JobState::Running,
        "completed" => JobState::Completed,
        "failed" => JobState::Failed,
        _ => JobState::Offered,
    }
}

impl JobRow {
    pub(crate) fn state(&self) -> JobState {
        parse_state(&self.state)
    }

    /// The input delivery as the user sees it; none before the provider accepted.
    fn input_delivery(&self) -> Option<InputDelivery> {
        let state = match self.input_state.as_deref()? {
            "pending" => InputDeliveryState::Pending,
            "delivered" => InputDeliveryState::Delivered,
            "failed" => InputDeliveryState::Failed,
            _ => InputDeliveryState::Stopped,
        };
        Some(InputDelivery {
            state,
            attempts: u32::try_from(self.input_attempts).unwrap_or(0),
            last_attempt_at: self.input_last_attempt_at,
            next_attempt_at: self
                .input_next_attempt_ms
                .filter(|_| state == InputDeliveryState::Pending)
                .map(|ms| ms.saturating_add(999).div_euclid(1000)),
            delivered_at: self.input_delivered_at,
            last_error: self.input_last_error.clone(),
        })
    }

    pub(crate) fn to_job(&self) -> ApiResult<Job> {
        let bad = |e: diax_sdk::InvalidId| ApiError::Internal(e.to_string());
        let model_id = ModelId::parse(self.model_id.clone()).map_err(bad)?;
        Ok(Job {
            job_id: JobId::parse(self.id.clone()).map_err(bad)?,
            provider_id: ProviderId::parse(self.provider_id.clone()).map_err(bad)?,
            input: ModelVersionRef {
                model_id: model_id.clone(),
                version: u32::try_from(self.version).unwrap_or(0),
            },
            operation: self.operation.clone(),
            state: self.state(),
            provider_job_id: self
                .provider_job_id
                .as_ref()
                .and_then(|p| ProviderJobId::parse(p.clone()).ok()),
            status_url: self.status_url.clone(),
            quote: self
                .quote
                .as_ref()
                .and_then(|q| serde_json::from_str(q).ok()),
            progress: self.progress.and_then(|p| u8::try_from(p).ok()),
            problem: self
                .problem
                .as_ref()
                .and_then(|p| serde_json::from_str(p).ok()),
            result: self.result_version.map(|v| ModelVersionRef {
                model_id,
                version: u32::try_from(v).unwrap_or(0),
            }),
            report: self
                .report
                .as_ref()
                .and_then(|r| serde_json::from_str(r).ok()),
            input_delivery: self.input_delivery(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The job with this id, whoever owns it.
pub(crate) async fn find_job(state: &AppState, id: &str) -> ApiResult<Option<JobRow>> {
    Ok(sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?)
}

async fn owned_job(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<JobRow> {
    let id: JobId = path_id("job", id)?;
    match find_job(state, id.as_str()).await? {
        Some(job) if job.user_id == user.id.as_str() => Ok(job),
        _ => Err(ApiError::NotFound(format!("no job {id}"))),
    }
}

fn note_for(job: &JobRow) -> LogNote {
    LogNote {
        provider_id: Some(job.provider_id.clone()),
        job_id: Some(job.id.clone()),
        ..LogNote::default()
    }
}

fn with_note(mut resp: Response, note: LogNote) -> Response {
    resp.extensions_mut().insert(note);
    resp
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
    let provider = load_provider(&state, &req.provider_id).await?;
    let model = super::models::load_model(&state, &user.id, &req.model_id).await?;
    if !provider.speaks_for(user.id.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "provider {} uses a per-user secret bound to another user; it only runs that user's jobs",
            req.provider_id
        )));
    }
    let version = match req.version {
        Some(v) => model
            .versions
            .iter()
            .find(|m| m.version == v)
            .ok_or_else(|| {
                ApiError::NotFound(format!("no version {v} of model {}", req.model_id))
            })?,
        None => model
            .latest()
            .ok_or_else(|| ApiError::Internal("model without versions".into()))?,
    };
    let operation = req.operation.clone().unwrap_or_else(|| "repair".to_owned());
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
    let params = (!req.params.is_null()).then(|| req.params.to_string());
    let job_id = JobId::generate();
    let now = state.clock.now();
    sqlx::query(
        "INSERT INTO jobs (id, user_id, provider_id, model_id, version, operation, params, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'offered', $8, $8)",
    )
    .bind(job_id.as_str())
    .bind(user.id.as_str())
    .bind(req.provider_id.as_str())
    .bind(req.model_id.as_str())
    .bind(i64::from(version.version))
    .bind(&operation)
    .bind(&params)
    .bind(now)
    .execute(&state.db)
    .await?;
    let job = offer(&state, &provider, job_id.as_str()).await?;
    let note = note_for(&job);
    Ok(with_note(json(StatusCode::CREATED, &job.to_job()?), note))
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
    let rows: Vec<JobRow> =
        sqlx::query_as("SELECT * FROM jobs WHERE user_id = $1 ORDER BY created_at DESC, id DESC")
            .bind(user.id.as_str())
            .fetch_all(&state.db)
            .await?;
    let jobs = rows
        .iter()
        .map(JobRow::to_job)
        .collect::<ApiResult<Vec<_>>>()?;
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
    let job = owned_job(&state, &user, &id).await?;
    let note = note_for(&job);
    Ok(with_note(json(StatusCode::OK, &job.to_job()?), note))
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
    let job = owned_job(&state, &user, &id).await?;
    if job.state() != JobState::Rejected {
        return Err(ApiError::Conflict(format!(
            "job {} is {}; only a rejected job can be retried",
            job.id, job.state
        )));
    }
    let provider_id = ProviderId::parse(job.provider_id.clone())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let provider = load_provider(&state, &provider_id).await?;
    // Claim the retry atomically so two concurrent retries do not both offer.
    let claimed = sqlx::query(
        "UPDATE jobs SET state = 'offered', problem = NULL, updated_at = $2 WHERE id = $1 AND state = 'rejected'",
    )
    .bind(&job.id)
    .bind(state.clock.now())
    .execute(&state.db)
    .await?;
    if claimed.rows_affected() != 1 {
        return Err(ApiError::Conflict(format!(
            "job {} is being retried already",
            job.id
        )));
    }
    let job = offer(&state, &provider, &job.id).await?;
    let note = note_for(&job);
    Ok(with_note(json(StatusCode::OK, &job.to_job()?), note))
}

/// Sends the signed offer of job `job_id` (state `offered`) and applies the answer.
async fn offer(state: &AppState, provider: &ProviderRow, job_id: &str) -> ApiResult<JobRow> {
    let job = find_job(state, job_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("job {job_id} vanished")))?;
    let account: Option<String> =
        sqlx::query_scalar("SELECT account_id FROM links WHERE user_id = $1 AND provider_id = $2")
            .bind(&job.user_id)
            .bind(&provider.id)
            .fetch_optional(&state.db)
            .await?;
    let (name, size, sha): (String, i64, String) = sqlx::query_as(
        "SELECT m.name, v.size, v.sha256 FROM models m JOIN model_versions v ON v.model_id = m.id
         WHERE m.id = $1 AND v.version = $2",
    )
    .bind(&job.model_id)
    .bind(job.version)
    .fetch_one(&state.db)
    .await?;
    let bad = |e: diax_sdk::InvalidId| ApiError::Internal(e.to_string());
    let offer = BrokerMessage::Offer(JobOffer {
        job_id: JobId::parse(job.id.clone()).map_err(bad)?,
        broker_id: state.cfg.broker_id.clone(),
        provider_id: ProviderId::parse(provider.id.clone()).map_err(bad)?,
        service_kind: provider.service_kind.clone(),
        operation: job.operation.clone(),
        user: OfferUser {
            broker_user_id: diax_sdk::UserId::parse(job.user_id.clone()).map_err(bad)?,
            provider_account: account.and_then(|a| AccountId::parse(a).ok()),
        },
        model: OfferedModel {
            model_id: ModelId::parse(job.model_id.clone()).map_err(bad)?,
            version: u32::try_from(job.version).unwrap_or(0),
            name,
            size: u64::try_from(size).unwrap_or(0),
            sha256: sha,
            format: "stl".into(),
        },
        params: job
            .params
            .as_ref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null),
        events_url: format!("{}/v1/providers/{}/events", state.base_url, provider.id),
        offered_at: state.clock.now(),
    });
    let body = serde_json::to_vec(&offer).map_err(|e| ApiError::Internal(e.to_string()))?;
    let ring = keyring(state, &provider.id).await?;
    let subject = Subject {
        provider_id: Some(provider.id.clone()),
        job_id: Some(job.id.clone()),
        ..Subject::default()
    };
    let answer = send_signed(
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
    let rejection = match answer {
        Ok(a) if a.status == 202 => match serde_json::from_slice::<JobAccepted>(&a.body) {
            Ok(acc) if acc.job_id.as_str() == job.id => {
                // The input is owed from now on, durably: pending and due at once. Claimed
                // first, so the first attempt is this one, before the answer to the user.
                let claim = state.inputs_in_flight.claim(&job.id);
                let accepted = sqlx::query(
                    "UPDATE jobs SET state = 'accepted', provider_job_id = $2, status_url = $3, quote = $4, problem = NULL, updated_at = $5,
                       input_state = 'pending', input_attempts = 0, input_next_attempt_ms = $6, input_last_attempt_at = NULL,
                       input_last_error = NULL, input_delivered_at = NULL
                     WHERE id = $1 AND state = 'offered'",
                )
                .bind(&job.id)
                .bind(acc.provider_job_id.as_str())
                .bind(&acc.status_url)
                .bind(quote_text(acc.quote.as_ref()))
                .bind(now)
                .bind(state.clock.now_ms())
                .execute(&state.db)
                .await?;
                if accepted.rows_affected() == 1
                    && let Some(claim) = claim
                    && let Err(e) = crate::inputs::attempt_claimed(state, &job.id, claim).await
                {
                    // Still pending: the background deliverer tries again.
                    tracing::warn!(job = %job.id, error = %e, "first job.input attempt failed");
                }
                None
            }
            Ok(acc) => Some(
                Problem::new(ProblemType::UpstreamFailed).with_detail(format!(
                    "the provider accepted job {} instead of {}",
                    acc.job_id, job.id
                )),
            ),
            Err(e) => Some(
                Problem::new(ProblemType::UpstreamFailed).with_detail(format!(
                    "the provider answered 202 with a body that is not a JobAccepted: {e}"
                )),
            ),
        },
        Ok(a) => match serde_json::from_slice::<Problem>(&a.body) {
            // The provider's problem, relayed unchanged.
            Ok(p) if !(200..300).contains(&a.status) => Some(p),
            _ => Some(
                Problem::new(ProblemType::UpstreamFailed)
                    .with_detail(format!(
                        "the provider answered {} without a problem document",
                        a.status
                    ))
                    .with("provider_status", a.status),
            ),
        },
        Err(e) => Some(
            Problem::new(ProblemType::UpstreamFailed)
                .with_detail(format!("could not deliver the offer to the provider: {e}")),
        ),
    };
    if let Some(problem) = rejection {
        let text =
            serde_json::to_string(&problem).map_err(|e| ApiError::Internal(e.to_string()))?;
        sqlx::query(
            "UPDATE jobs SET state = 'rejected', problem = $2, updated_at = $3 WHERE id = $1 AND state = 'offered'",
        )
        .bind(&job.id)
        .bind(&text)
        .bind(now)
        .execute(&state.db)
        .await?;
        let updated = find_job(state, &job.id).await?;
        if let Some(j) = &updated {
            super::notifications::notify_job(state, j, "job.rejected").await?;
        }
    }
    find_job(state, &job.id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("job {job_id} vanished")))
}

/// Stores a quote as JSON text.
pub(crate) fn quote_text(q: Option<&Quote>) -> Option<String> {
    q.and_then(|q| serde_json::to_string(q).ok())
}
