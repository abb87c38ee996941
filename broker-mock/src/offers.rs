//! Offering jobs (PROTOCOL §5.2–§5.5): a user's request becomes a job, the broker sends the
//! provider a signed `job.offer` and applies the answer. A `202` with a matching
//! `JobAccepted` makes the job `accepted` and the input owed (first attempt before
//! answering the user, later ones by [`crate::inputs`]); a problem is relayed unchanged in
//! the job's `problem` (state `rejected`), anything else becomes `upstream-failed`.

use diax_sdk::wire::{BrokerMessage, CreateJob, JobAccepted, JobOffer, OfferUser, OfferedModel};
use diax_sdk::{JobId, MessageId, Problem, ProblemType, UserId};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::notifier::notify_job;
use crate::outbound::{Subject, send_signed};
use crate::state::AppState;
use crate::store::jobs::{self, JobRow, NewJob};
use crate::store::providers::{self, Provider};
use crate::store::{links, models};

/// The operation asked for when a request names none.
const DEFAULT_OPERATION: &str = "repair";

/// Creates `user`'s job from `req` and offers it; answers the job after the offer.
///
/// # Errors
/// `NotFound` (provider, model or version), `Forbidden` (a per-user secret bound to another
/// user), `InvalidRequest` (operation); database errors.
pub(crate) async fn create(state: &AppState, user: &UserId, req: &CreateJob) -> ApiResult<JobRow> {
    let provider = providers::find(&state.db, &req.provider_id).await?;
    let model = models::find(&state.db, &state.base_url, user, &req.model_id).await?;
    if !provider.speaks_for(user) {
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
    let job_id = jobs::create(
        &state.db,
        &NewJob {
            user,
            provider: &req.provider_id,
            model: &req.model_id,
            version: version.version,
            operation: req.operation.as_deref().unwrap_or(DEFAULT_OPERATION),
            params: &req.params,
        },
        state.clock.now(),
    )
    .await?;
    offer(state, &provider, &job_id).await
}

/// Offers `user`'s rejected job `id` again (same id, a new signed offer carrying the
/// account linked since, if any).
///
/// # Errors
/// `NotFound`, `Conflict` (not rejected, or being retried already); database errors.
pub(crate) async fn retry(state: &AppState, user: &UserId, id: &JobId) -> ApiResult<JobRow> {
    let job = jobs::owned(&state.db, user, id).await?;
    jobs::ensure_retryable(&job)?;
    let provider = providers::find(&state.db, &job.provider_id).await?;
    jobs::claim_retry(&state.db, &job.id, state.clock.now()).await?;
    offer(state, &provider, &job.id).await
}

/// Sends the signed offer of job `job_id` (state `offered`) and applies the answer.
async fn offer(state: &AppState, provider: &Provider, job_id: &JobId) -> ApiResult<JobRow> {
    let job = jobs::get(&state.db, job_id).await?;
    let account = links::account(&state.db, &job.user_id, &provider.id).await?;
    let facts = models::version_facts(&state.db, &job.model_id, job.version).await?;
    let offer = BrokerMessage::Offer(JobOffer {
        job_id: job.id.clone(),
        broker_id: state.cfg.broker_id.clone(),
        provider_id: provider.id.clone(),
        service_kind: provider.service_kind.clone(),
        operation: job.operation.clone(),
        user: OfferUser {
            broker_user_id: job.user_id.clone(),
            provider_account: account,
        },
        model: OfferedModel {
            model_id: job.model_id.clone(),
            version: job.version,
            name: facts.name,
            size: facts.size,
            sha256: facts.sha256,
            format: "stl".into(),
        },
        params: job.params.clone().unwrap_or(Value::Null),
        events_url: providers::events_url(&state.base_url, &provider.id),
        offered_at: state.clock.now(),
    });
    let body = serde_json::to_vec(&offer).map_err(|e| ApiError::Internal(e.to_string()))?;
    let ring = providers::keyring(&state.db, &provider.id).await?;
    let subject = Subject {
        provider_id: Some(provider.id.to_string()),
        job_id: Some(job.id.to_string()),
        label: Some("job.offer".into()),
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
            Ok(acc) if acc.job_id == job.id => {
                // The input is owed from now on, durably: pending and due at once. Claimed
                // first, so the first attempt is this one, before the answer to the user.
                let claim = state.inputs_in_flight.claim(job.id.as_str());
                let accepted =
                    jobs::offer_accepted(&state.db, &job.id, &acc, now, state.clock.now_ms())
                        .await?;
                if accepted
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
        jobs::offer_refused(&state.db, &job.id, &problem, now).await?;
        if let Some(j) = jobs::find(&state.db, &job.id).await? {
            notify_job(state, &j, "job.rejected").await?;
        }
    }
    jobs::get(&state.db, &job.id).await
}
