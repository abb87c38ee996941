//! Replays (PROTOCOL §3): a verified `webhook-id` reused for another body.

use std::time::Instant;

use diax_sdk::clock::unix_now;
use diax_sdk::util::random_token;
use diax_sdk::wire::{BrokerMessage, Download, JobInput};
use diax_sdk::{JobId, MessageId, ProblemType, ProviderJobId};

use super::exchange::{expect_problem, sign};
use super::{CREDENTIAL_TTL_SECS, Check, Runner};

impl Runner {
    /// `replay.different-body`.
    pub(super) async fn replay_checks(&mut self) {
        let t = Instant::now();
        let outcome = self.replay_check().await;
        self.judge(Check::ReplayDifferentBody, outcome, t);
    }

    /// A `job.input` for a job the provider does not have (no side effects) under id R,
    /// then another body under R: the second must be `409 replayed-message`.
    async fn replay_check(&self) -> Result<String, String> {
        let input = |job: JobId| {
            Self::body(&BrokerMessage::Input(JobInput {
                job_id: job,
                provider_job_id: ProviderJobId::parse(random_token("pjob_conformanceUnknown", 12))
                    .unwrap_or_else(|_| ProviderJobId::generate()),
                download: Download {
                    // Not the model's location: a provider that wrongly acts on these
                    // inputs must not be blamed in `download.credentials`.
                    url: format!("{}/v1/replay-check/content", self.endpoint.base_url),
                    authorization: Some(format!("Bearer {}", random_token("tc_", 32))),
                    expires_at: unix_now().saturating_add(CREDENTIAL_TTL_SECS),
                    size: self.model_size,
                    sha256: self.model_sha256.clone(),
                },
            }))
        };
        let id = MessageId::generate();
        let first_body = input(JobId::generate());
        let first = self
            .send(
                &first_body,
                &sign(&self.keyring, &id, unix_now(), &first_body),
            )
            .await
            .map_err(|e| format!("the first message got no answer: {e}"))?;
        if let Some(p) = first.problem()
            && matches!(
                p.kind(),
                Some(
                    ProblemType::SignatureInvalid
                        | ProblemType::SignatureMissing
                        | ProblemType::SignatureMalformed
                        | ProblemType::TimestampOutOfTolerance
                        | ProblemType::ReplayedMessage
                )
            )
        {
            return Err(format!(
                "a correctly signed first message was refused: {}",
                first.describe()
            ));
        }
        let second_body = input(JobId::generate());
        let second = self
            .send(
                &second_body,
                &sign(&self.keyring, &id, unix_now(), &second_body),
            )
            .await;
        expect_problem(&second, ProblemType::ReplayedMessage).map(|_| {
            format!(
                "webhook-id reused for another body (first answered {}): 409 replayed-message",
                first.status
            )
        })
    }
}
