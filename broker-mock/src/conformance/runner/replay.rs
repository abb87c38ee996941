//! Replays (PROTOCOL §3): a verified `webhook-id` reused for another body, at once and
//! seconds later (ids must be remembered at least twice the tolerance).

use std::time::Instant;

use diax_sdk::clock::unix_now;
use diax_sdk::util::random_token;
use diax_sdk::wire::{BrokerMessage, Download, JobInput};
use diax_sdk::{JobId, MessageId, ProblemType, ProviderJobId};

use super::exchange::{Answer, expect_problem, is_signature_problem, sign};
use super::{CREDENTIAL_TTL_SECS, Check, Runner};

/// The first half of `replay.after-delay`: the id, when it was sent, and its answer.
pub(super) struct PendingReplay {
    id: MessageId,
    sent: Instant,
    first: Result<Answer, String>,
}

impl Runner {
    /// A signed `job.input` for a job the provider does not have: acting on it has no side
    /// effects (a correct provider answers `404`), so it carries checks of the signature
    /// layer.
    pub(super) fn unknown_job_input(&self) -> Vec<u8> {
        Self::body(&BrokerMessage::Input(JobInput {
            job_id: JobId::generate(),
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
    }

    /// `replay.different-body`.
    pub(super) async fn replay_checks(&mut self) {
        let t = Instant::now();
        let id = MessageId::generate();
        let first = self.send_first(&id).await;
        let outcome = self.send_second(&id, first, "at once").await;
        self.judge(Check::ReplayDifferentBody, outcome, t);
    }

    /// Sends the first body of a replay pair under `id`.
    async fn send_first(&self, id: &MessageId) -> Result<Answer, String> {
        let body = self.unknown_job_input();
        self.send(&body, &sign(&self.keyring, id, unix_now(), &body))
            .await
    }

    /// Judges the first answer and sends another body under `id`: it must be
    /// `409 replayed-message`.
    async fn send_second(
        &self,
        id: &MessageId,
        first: Result<Answer, String>,
        when: &str,
    ) -> Result<String, String> {
        let first = first.map_err(|e| format!("the first message got no answer: {e}"))?;
        if is_signature_problem(&first) {
            return Err(format!(
                "a correctly signed first message was refused: {}",
                first.describe()
            ));
        }
        let second_body = self.unknown_job_input();
        let second = self
            .send(
                &second_body,
                &sign(&self.keyring, id, unix_now(), &second_body),
            )
            .await;
        expect_problem(&second, ProblemType::ReplayedMessage).map(|_| {
            format!(
                "webhook-id {id} reused for another body {when} (first answered {}): 409 \
                 replayed-message",
                first.status
            )
        })
    }

    /// The first body of `replay.after-delay`, sent at the start of the run.
    pub(super) async fn replay_start(&self) -> PendingReplay {
        let id = MessageId::generate();
        let sent = Instant::now();
        let first = self.send_first(&id).await;
        PendingReplay { id, sent, first }
    }

    /// `replay.after-delay`: another body under the first one's id, at least
    /// `replay_delay` after it (waiting out what the run has not already taken).
    pub(super) async fn replay_finish(&mut self, pending: PendingReplay) {
        let t = Instant::now();
        let delay = self.cfg.replay_delay;
        let elapsed = pending.sent.elapsed();
        if elapsed < delay {
            tokio::time::sleep(delay - elapsed).await;
        }
        let when = format!("{:.1} s later", pending.sent.elapsed().as_secs_f64());
        let outcome = self.send_second(&pending.id, pending.first, &when).await;
        self.judge(Check::ReplayAfterDelay, outcome, t);
    }
}
