//! Signed messages from the broker: job offers and job inputs.
//!
//! An offer is accepted in one transaction that holds the quote on the account and creates
//! the job; the broker's job id is unique, so a repeated offer (same job id, or a
//! redelivery of the same message) returns the same job and holds nothing twice.

use diax_sdk::wire::{
    InputAccepted, JobAccepted, JobInput, JobOffer, JobState, SERVICE_KIND_MODEL_REPAIR,
};
use diax_sdk::{ProviderJobId, Quote};

use super::Service;
use super::accounts;
use super::db::{is_unique_violation, now_ms};
use super::error::ApiError;
use super::queue::{self, JobRow, NewJob};
use super::registration;

/// Operations this provider runs.
pub const OPERATIONS: &[&str] = &["repair"];

fn accepted(service: &Service, job: &JobRow) -> JobAccepted {
    JobAccepted {
        job_id: job.broker_id(),
        provider_job_id: job.id(),
        status_url: status_url(service, job.provider_job_id.as_str()),
        quote: Some(Quote::new(job.quote_amount, job.currency.clone())),
        state: job.wire_state(),
    }
}

/// `{public}/diax/jobs/{provider_job_id}`.
#[must_use]
pub fn status_url(service: &Service, provider_job_id: &str) -> String {
    service.url(&format!("/diax/jobs/{provider_job_id}"))
}

/// Handles a verified `job.offer` delivered under `message_id`.
///
/// # Errors
/// `account-required`, `payment-required`, `unsupported-operation`, `forbidden` (offer for
/// another provider) as [`ApiError`]s; database errors.
pub async fn handle_offer(
    service: &Service,
    offer: &JobOffer,
    message_id: &str,
) -> Result<JobAccepted, ApiError> {
    let db = service.db();
    let reg = registration::registration(db)
        .await?
        .ok_or(ApiError::NotRegistered)?;
    if offer.provider_id.as_str() != reg.provider_id {
        return Err(ApiError::Problem(
            diax_sdk::Problem::new(diax_sdk::ProblemType::Forbidden)
                .with_detail("this offer is addressed to another provider"),
        ));
    }
    // The same broker job offered again: the same answer, whatever else changed.
    {
        let mut tx = db.begin().await?;
        let existing = queue::find_by_broker_job(&mut tx, offer.job_id.as_str()).await?;
        tx.commit().await?;
        if let Some(job) = existing {
            tracing::info!(job = %job.provider_job_id, broker_job = %offer.job_id, "repeated offer: same job");
            return Ok(accepted(service, &job));
        }
    }
    if offer.service_kind != SERVICE_KIND_MODEL_REPAIR
        || !OPERATIONS.contains(&offer.operation.as_str())
    {
        return Err(ApiError::Unsupported(format!(
            "this provider runs {SERVICE_KIND_MODEL_REPAIR}/repair, not {}/{}",
            offer.service_kind, offer.operation
        )));
    }
    if offer.model.size > service.config().max_model_bytes {
        return Err(ApiError::ModelTooLarge(format!(
            "the model is {} bytes; this provider accepts at most {}",
            offer.model.size,
            service.config().max_model_bytes
        )));
    }
    let register_url = service.url("/v1/accounts");
    let Some(account_id) = offer.user.provider_account.as_ref() else {
        return Err(ApiError::AccountRequired { register_url });
    };
    let quote = service.config().pricing.quote(offer.model.size);
    let provider_job_id = ProviderJobId::generate();
    let now = now_ms();
    let mut tx = db.begin().await?;
    let Some(account) = accounts::account_in(&mut tx, account_id.as_str()).await? else {
        return Err(ApiError::AccountRequired { register_url });
    };
    if account.currency != quote.currency {
        return Err(ApiError::Internal(format!(
            "account currency {} differs from price currency {}",
            account.currency, quote.currency
        )));
    }
    let model_size = i64::try_from(offer.model.size).unwrap_or(i64::MAX);
    let inserted = queue::insert(
        &mut tx,
        &NewJob {
            provider_job_id: provider_job_id.as_str(),
            broker_job_id: offer.job_id.as_str(),
            offer_message_id: message_id,
            account_id: account_id.as_str(),
            broker_user_id: offer.user.broker_user_id.as_str(),
            events_url: &offer.events_url,
            operation: &offer.operation,
            model_name: &offer.model.name,
            model_size,
            model_sha256: &offer.model.sha256,
            quote_amount: quote.amount,
            currency: &quote.currency,
            now,
        },
    )
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            // A concurrent delivery of the same offer won the race: answer with its job.
            drop(tx);
            let mut tx = db.begin().await?;
            let job = queue::find_by_broker_job(&mut tx, offer.job_id.as_str()).await?;
            tx.commit().await?;
            return job
                .map(|j| accepted(service, &j))
                .ok_or_else(|| ApiError::Internal("job vanished after a conflict".into()));
        }
        Err(e) => return Err(e.into()),
    }
    if !accounts::hold(
        &mut tx,
        account_id.as_str(),
        provider_job_id.as_str(),
        quote.amount,
    )
    .await?
    {
        tx.rollback().await?;
        return Err(ApiError::PaymentRequired {
            top_up_url: service.url("/v1/accounts/me/top-up"),
            quote,
            balance: account.balance,
        });
    }
    let job = queue::find(&mut tx, provider_job_id.as_str())
        .await?
        .ok_or_else(|| ApiError::Internal("job not found after insert".into()))?;
    tx.commit().await?;
    tracing::info!(job = %provider_job_id, broker_job = %offer.job_id, account = %account_id, amount = quote.amount, "offer accepted; quote held");
    Ok(accepted(service, &job))
}

/// Handles a verified `job.input`: stores the download so a worker can claim the job.
///
/// # Errors
/// `not-found` for an unknown job (or one of another broker job), database errors.
pub async fn handle_input(service: &Service, input: &JobInput) -> Result<InputAccepted, ApiError> {
    let db = service.db();
    let download =
        serde_json::to_string(&input.download).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut tx = db.begin().await?;
    let job = queue::find(&mut tx, input.provider_job_id.as_str())
        .await?
        .filter(|j| j.broker_job_id == input.job_id)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no job {} for broker job {}",
                input.provider_job_id, input.job_id
            ))
        })?;
    let state = job.wire_state();
    if !state.is_terminal() && job.input_json.as_deref() != Some(download.as_str()) {
        // New or refreshed credentials (a re-sent input): the next claim uses them.
        queue::set_input(&mut tx, job.provider_job_id.as_str(), &download).await?;
    }
    tx.commit().await?;
    if state == JobState::Accepted {
        service.wake_workers();
    }
    tracing::info!(job = %job.provider_job_id, "input received");
    Ok(InputAccepted {
        job_id: job.broker_id(),
        provider_job_id: job.id(),
        state,
    })
}
