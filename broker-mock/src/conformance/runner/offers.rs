//! Offers (PROTOCOL §5.2): the valid offer, its redelivery and the same job offered again.

use diax_sdk::client;
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, random_token};
use diax_sdk::wire::{
    BrokerMessage, JobAccepted, JobOffer, OfferUser, OfferedModel, SERVICE_KIND_MODEL_REPAIR,
};
use diax_sdk::{AccountId, JobId, MessageId, ProblemType, ProviderId};
use serde_json::Value;
use std::time::Instant;

use super::exchange::{Answer, expect_problem, sign};
use super::{Check, Runner, Verdict, not_checked};

impl Runner {
    /// `offer.valid-accepted`, `offer.redelivery-same-answer` and `offer.repeated-same-job`
    /// for the job under test; the provider's acceptance when it accepted.
    pub(super) async fn offer_checks(&mut self, job_id: &JobId) -> Option<JobAccepted> {
        let t = Instant::now();
        let offer = self.offer(job_id, self.account());
        let body = Self::body(&BrokerMessage::Offer(offer.clone()));
        let offer_id = MessageId::generate();
        let first = self
            .send(&body, &sign(&self.keyring, &offer_id, unix_now(), &body))
            .await;
        let accepted = match judge_accepted(&first, job_id) {
            Ok(acc) => {
                self.record(
                    Check::OfferValidAccepted,
                    Verdict::Pass,
                    format!(
                        "202 JobAccepted: provider_job_id {}, status_url {}",
                        acc.provider_job_id, acc.status_url
                    ),
                    t,
                );
                self.endpoint
                    .shared
                    .log
                    .lock()
                    .await
                    .set_provider_job(acc.provider_job_id.as_str());
                Some(acc)
            }
            Err(why) => {
                self.record(Check::OfferValidAccepted, Verdict::Fail, why, t);
                None
            }
        };

        let t = Instant::now();
        let outcome = match &accepted {
            None => Err(not_checked(Check::OfferValidAccepted)),
            Some(acc) => {
                let again = self
                    .send(&body, &sign(&self.keyring, &offer_id, unix_now(), &body))
                    .await;
                same_job(&again, acc, "the same message again").map(|()| {
                    "the same webhook-id and body again: 202 with the same provider_job_id \
                     and status_url"
                        .to_owned()
                })
            }
        };
        self.judge(Check::OfferRedeliverySameAnswer, outcome, t);

        let t = Instant::now();
        let outcome = match &accepted {
            None => Err(not_checked(Check::OfferValidAccepted)),
            Some(acc) => {
                let mut repeat = offer.clone();
                repeat.offered_at = offer.offered_at.saturating_add(1);
                let body = Self::body(&BrokerMessage::Offer(repeat));
                let again = self.send_signed(&body).await;
                same_job(&again, acc, "the same job_id under a new webhook-id").map(|()| {
                    format!(
                        "the same job_id under a new webhook-id: 202 with the same \
                         provider_job_id {}",
                        acc.provider_job_id
                    )
                })
            }
        };
        self.judge(Check::OfferRepeatedSameJob, outcome, t);
        accepted
    }

    /// `offer.other-provider`: an offer addressed to another provider id, otherwise valid
    /// (the funded account), must be refused `403 forbidden` (PROTOCOL §5.2).
    pub(super) async fn other_provider_check(&mut self) {
        let t = Instant::now();
        let mut offer = self.offer(&JobId::generate(), self.account());
        let other = random_token("prv_conformanceOther", 12);
        offer.provider_id =
            ProviderId::parse(other.clone()).unwrap_or_else(|_| ProviderId::generate());
        let body = Self::body(&BrokerMessage::Offer(offer));
        let answer = self.send_signed(&body).await;
        let outcome = expect_problem(&answer, ProblemType::Forbidden).map(|_| {
            format!(
                "an offer naming provider_id {other} (not {}): 403 forbidden",
                self.provider_id
            )
        });
        self.judge(Check::OfferOtherProvider, outcome, t);
    }

    /// `offer.unsupported-operation` (§5.2): a valid offer naming the funded account for an
    /// operation nobody offers → `422 unsupported-operation`.
    pub(super) async fn unsupported_operation_check(&mut self) {
        let t = Instant::now();
        let mut offer = self.offer(&JobId::generate(), self.account());
        offer.operation = "conformance-unsupported-operation".to_owned();
        let body = Self::body(&BrokerMessage::Offer(offer));
        let answer = self.send_signed(&body).await;
        let outcome = expect_problem(&answer, ProblemType::UnsupportedOperation).map(|_| {
            "operation conformance-unsupported-operation: 422 unsupported-operation".to_owned()
        });
        self.judge(Check::OfferUnsupportedOperation, outcome, t);
    }

    /// `offer.repeated-after-input` / `offer.repeated-after-end` (§5.2: offers with the same
    /// `job_id` are the same job, whatever its stage): the job's offer under a new
    /// `webhook-id` once `stage` is reached (`None` when it was not).
    pub(super) async fn repeated_offer_check(
        &mut self,
        check: Check,
        job_id: &JobId,
        accepted: Option<&JobAccepted>,
        stage: Option<&str>,
    ) {
        let t = Instant::now();
        let outcome = match (accepted, stage) {
            (None, _) => Err(not_checked(Check::OfferValidAccepted)),
            (Some(_), None) => Err(format!(
                "not checked: the job never reached this stage (see {} and \
                 events.transitions)",
                Check::InputAccepted
            )),
            (Some(acc), Some(stage)) => {
                let mut offer = self.offer(job_id, self.account());
                offer.offered_at = offer.offered_at.saturating_add(2);
                let body = Self::body(&BrokerMessage::Offer(offer));
                let again = self.send_signed(&body).await;
                let what = format!("the same job_id under a new webhook-id once {stage}");
                same_job(&again, acc, &what).map(|()| {
                    format!(
                        "{what}: 202 with the same provider_job_id {}",
                        acc.provider_job_id
                    )
                })
            }
        };
        self.judge(check, outcome, t);
    }

    pub(super) fn offer(&self, job_id: &JobId, account: Option<&str>) -> JobOffer {
        JobOffer {
            job_id: job_id.clone(),
            broker_id: self.cfg.broker_id.clone(),
            provider_id: self.provider_id.clone(),
            service_kind: SERVICE_KIND_MODEL_REPAIR.to_owned(),
            operation: "repair".to_owned(),
            user: OfferUser {
                broker_user_id: self.user_id.clone(),
                provider_account: account.and_then(|a| AccountId::parse(a).ok()),
            },
            model: OfferedModel {
                model_id: self.model_id.clone(),
                version: 1,
                name: "conformance-cube.stl".to_owned(),
                size: self.model_size,
                sha256: self.model_sha256.clone(),
                format: "stl".to_owned(),
            },
            params: Value::Object(serde_json::Map::new()),
            events_url: self.endpoint.events_url(),
            offered_at: unix_now(),
        }
    }
}

/// Checks a `202 JobAccepted` for `job_id` with a secure `status_url` and `Location`.
fn judge_accepted(answer: &Result<Answer, String>, job_id: &JobId) -> Result<JobAccepted, String> {
    let a = answer
        .as_ref()
        .map_err(|e| format!("the offer got no answer: {e}"))?;
    if a.status != 202 {
        return Err(format!(
            "expected 202 JobAccepted to a valid offer, got {}",
            a.describe()
        ));
    }
    let acc: JobAccepted = serde_json::from_slice(&a.body)
        .map_err(|e| format!("202, but the body is not JobAccepted: {e}"))?;
    if acc.job_id != *job_id {
        return Err(format!(
            "JobAccepted names job {}, the offer was {job_id}",
            acc.job_id
        ));
    }
    client::require_secure_url(&acc.status_url)
        .map_err(|e| format!("status_url: {}", ErrorChain(&e)))?;
    match &a.location {
        None => Err(format!(
            "202 JobAccepted without a Location header (must be the status_url {})",
            acc.status_url
        )),
        Some(l) if *l != acc.status_url => Err(format!(
            "Location {l} differs from status_url {}",
            acc.status_url
        )),
        Some(_) => Ok(acc),
    }
}

/// Checks that `answer` is `202` naming the same provider job as `acc`.
fn same_job(answer: &Result<Answer, String>, acc: &JobAccepted, what: &str) -> Result<(), String> {
    let a = answer
        .as_ref()
        .map_err(|e| format!("{what} got no answer: {e}"))?;
    if a.status != 202 {
        return Err(format!(
            "{what}: expected 202 as the first time, got {}",
            a.describe()
        ));
    }
    let again: JobAccepted = serde_json::from_slice(&a.body)
        .map_err(|e| format!("{what}: 202, but the body is not JobAccepted: {e}"))?;
    if again.provider_job_id != acc.provider_job_id {
        return Err(format!(
            "{what}: a second job {} (first {}): the provider created a second job",
            again.provider_job_id, acc.provider_job_id
        ));
    }
    if again.status_url != acc.status_url {
        return Err(format!(
            "{what}: status_url {} differs from the first {}",
            again.status_url, acc.status_url
        ));
    }
    Ok(())
}
