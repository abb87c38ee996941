//! The job's input (PROTOCOL §5.5): its delivery, the provider's download with the temporary
//! credential, and the same input sent again once the job has ended.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use diax_sdk::client;
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, random_token};
use diax_sdk::wire::{BrokerMessage, Download, InputAccepted, JobAccepted, JobInput};
use diax_sdk::{JobId, MessageId, ProviderJobId};

use super::super::endpoint::Log;
use super::exchange::{Answer, MAX_ANSWER_BYTES};
use super::{CREDENTIAL_TTL_SECS, Check, Runner, Verdict, not_checked};

impl Runner {
    /// `input.accepted`: the job's input with the temporary credential. Whether it was.
    pub(super) async fn input_check(
        &mut self,
        job_id: &JobId,
        accepted: Option<&JobAccepted>,
    ) -> bool {
        let t = Instant::now();
        match accepted {
            None => {
                self.record(
                    Check::InputAccepted,
                    Verdict::Fail,
                    not_checked(Check::OfferValidAccepted),
                    t,
                );
                false
            }
            Some(acc) => {
                let outcome = self.send_input(job_id, acc.provider_job_id.clone()).await;
                let ok = outcome.is_ok();
                self.judge(Check::InputAccepted, outcome, t);
                ok
            }
        }
    }

    /// `input.repeated-same-job` (see [`Self::repeat_input`]).
    pub(super) async fn repeated_input_check(
        &mut self,
        job_id: &JobId,
        accepted: Option<&JobAccepted>,
        input_ok: bool,
    ) {
        let t = Instant::now();
        let outcome = match accepted {
            None => Err(not_checked(Check::OfferValidAccepted)),
            Some(_) if !input_ok => Err(not_checked(Check::InputAccepted)),
            Some(acc) => self.repeat_input(job_id, &acc.provider_job_id).await,
        };
        self.judge(Check::InputRepeatedSameJob, outcome, t);
    }

    async fn send_input(
        &self,
        job_id: &JobId,
        provider_job_id: ProviderJobId,
    ) -> Result<String, String> {
        let answer = self
            .deliver_input(job_id, &provider_job_id, self.credential.clone())
            .await;
        let a = answer.map_err(|e| format!("job.input got no answer: {e}"))?;
        if a.status != 202 {
            return Err(format!(
                "expected 202 InputAccepted to job.input, got {}",
                a.describe()
            ));
        }
        let got: InputAccepted = serde_json::from_slice(&a.body)
            .map_err(|e| format!("202 to job.input, but the body is not InputAccepted: {e}"))?;
        if got.job_id != *job_id || got.provider_job_id != provider_job_id {
            return Err(format!(
                "InputAccepted names job {} / {}, expected {job_id} / {provider_job_id}",
                got.job_id, got.provider_job_id
            ));
        }
        Ok(format!("202 InputAccepted (state {})", got.state.as_str()))
    }

    /// Sends a `job.input` carrying `credential` as one delivery attempt of a broker: a new
    /// `webhook-id`, retried with that id on transport errors, 408, 429 and 5xx.
    async fn deliver_input(
        &self,
        job_id: &JobId,
        provider_job_id: &ProviderJobId,
        credential: String,
    ) -> Result<Answer, String> {
        let download = Download {
            url: self.endpoint.model_url(),
            authorization: Some(credential),
            expires_at: unix_now().saturating_add(CREDENTIAL_TTL_SECS),
            size: self.model_size,
            sha256: self.model_sha256.clone(),
        };
        self.deliver(job_id, provider_job_id, download).await
    }

    /// Sends a `job.input` carrying `download` as one delivery attempt of a broker: a new
    /// `webhook-id`, retried with that id on transport errors, 408, 429 and 5xx.
    pub(super) async fn deliver(
        &self,
        job_id: &JobId,
        provider_job_id: &ProviderJobId,
        download: Download,
    ) -> Result<Answer, String> {
        let input = JobInput {
            job_id: job_id.clone(),
            provider_job_id: provider_job_id.clone(),
            download,
        };
        let body = Self::body(&BrokerMessage::Input(input));
        // Through the SDK's signed sender, like the broker mock's own deliveries: the same
        // `webhook-id` on every attempt, each signed afresh, retried on transport errors,
        // 408, 429 and 5xx.
        let policy = client::RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_millis(500),
            multiplier: 2.0,
        };
        let sent = client::SignedSender::new(self.http.clone())
            .with_max_response_bytes(MAX_ANSWER_BYTES)
            .send(
                &self.cfg.provider_url,
                &MessageId::generate(),
                body,
                &self.keyring,
                &policy,
            )
            .await;
        match sent {
            Ok(resp) => Ok(self.answer(resp)),
            Err(client::SendError::Exhausted { last, .. }) => match *last {
                client::SendError::Status(resp) => Ok(self.answer(*resp)),
                other => Err(ErrorChain(&other).to_string()),
            },
            Err(e) => Err(ErrorChain(&e).to_string()),
        }
    }

    /// `input.repeated-same-job`: once the provider has reported the job's end, sends its
    /// `job.input` again under a new `webhook-id` with a fresh credential (as a broker's next
    /// delivery attempt does), expects `2xx` or `409`, then watches for a second run: any
    /// request to the download location, any event under a new `webhook-id`.
    async fn repeat_input(
        &self,
        job_id: &JobId,
        provider_job_id: &ProviderJobId,
    ) -> Result<String, String> {
        // What the endpoint saw before: later entries are the re-sent input's doing.
        let (downloads_before, deliveries_before, ids_before) = {
            let log = self.endpoint.shared.log.lock().await;
            if log.terminal.is_none() && log.forced.is_none() {
                return Err("not checked: no job.completed or job.failed arrived (see \
                     events.transitions), so there was no finished job to send the input \
                     to again"
                    .to_owned());
            }
            let ids: HashSet<String> = log.deliveries.iter().filter_map(|d| d.id.clone()).collect();
            (log.downloads.len(), log.deliveries.len(), ids)
        };
        let credential = format!("Bearer {}", random_token("tc_", 32));
        self.endpoint
            .shared
            .add_credential(credential.clone())
            .await;
        let sent = Instant::now();
        let answer = self
            .deliver_input(job_id, provider_job_id, credential)
            .await
            .map_err(|e| {
                format!("the job.input sent again under a new webhook-id got no answer: {e}")
            })?;
        let answered = judge_repeated_input(&answer, job_id, provider_job_id)?;

        // Watch for a second run, from the answer on (a slow answer does not shorten the
        // window): until the window ends, or a second terminal event arrives.
        let window = self.cfg.rerun_window.min(self.cfg.timeout);
        let deadline = Instant::now() + window;
        let (downloads, events) = loop {
            let done = Instant::now() >= deadline;
            let log = self.endpoint.shared.log.lock().await;
            let downloads: Vec<String> = log
                .downloads
                .iter()
                .skip(downloads_before)
                .map(|d| {
                    let with = match d.credential {
                        Some(1) => "the first input's credential".to_owned(),
                        Some(_) => "the re-sent input's credential".to_owned(),
                        None => "no issued credential".to_owned(),
                    };
                    format!("{} {} with {with} ({})", d.method, d.path, d.status)
                })
                .collect();
            let events: Vec<(&'static str, bool)> = log
                .deliveries
                .iter()
                .skip(deliveries_before)
                .filter(|d| d.id.as_ref().is_none_or(|id| !ids_before.contains(id)))
                .map(|d| {
                    let kind = d.event_type.unwrap_or("an unreadable event");
                    (kind, matches!(kind, "job.completed" | "job.failed"))
                })
                .collect();
            drop(log);
            if done || events.iter().any(|(_, terminal)| *terminal) {
                break (downloads, events);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        if downloads.is_empty() && events.is_empty() {
            return Ok(format!(
                "the finished job's job.input sent again under a new webhook-id with a fresh \
                 credential: {answered}; no download and no new event within {:.1} s of the answer",
                window.as_secs_f64()
            ));
        }
        let mut seen = Vec::new();
        if let Some(first) = downloads.first() {
            seen.push(format!(
                "{} request(s) to the download location (first: {first})",
                downloads.len()
            ));
        }
        if !events.is_empty() {
            let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
            let terminals = events.iter().filter(|(_, t)| *t).count();
            seen.push(format!(
                "{} new event(s) after the job had ended: {}{}",
                events.len(),
                kinds.join(", "),
                if terminals > 0 {
                    " (a second terminal event)"
                } else {
                    ""
                }
            ));
        }
        Err(format!(
            "the finished job's job.input sent again under a new webhook-id was answered \
             {answered}, but started a second run within {:.2} s: {}",
            sent.elapsed().as_secs_f64(),
            seen.join("; ")
        ))
    }
}

/// `download.credentials`: the model fetched with exactly the credential, nothing refused.
pub(super) fn judge_download(log: &Log, unfinished: &str) -> Result<String, String> {
    let refused: Vec<_> = log
        .downloads
        .iter()
        .filter_map(|d| {
            d.refusal
                .as_ref()
                .map(|r| format!("{} {}: {r}", d.method, d.path))
        })
        .collect();
    let served = log.downloads.iter().filter(|d| d.status == 200).count();
    if let Some(first) = refused.first() {
        Err(format!(
            "{} request(s) to the download location refused; first: {first}",
            refused.len()
        ))
    } else if served == 0 {
        Err(format!(
            "the provider never fetched the model from its download location{unfinished}"
        ))
    } else {
        Ok(format!(
            "{served} GET(s) with exactly the temporary credential, none refused"
        ))
    }
}

/// Judges the answer to a `job.input` sent again for the same job: `2xx` (when the body is
/// `InputAccepted`, naming the same job) or `409` with a problem document. Returns how it was
/// answered.
fn judge_repeated_input(
    a: &Answer,
    job_id: &JobId,
    provider_job_id: &ProviderJobId,
) -> Result<String, String> {
    let what = "the finished job's job.input sent again under a new webhook-id";
    if (200..300).contains(&a.status) {
        return match serde_json::from_slice::<InputAccepted>(&a.body) {
            Ok(got) if got.job_id != *job_id || got.provider_job_id != *provider_job_id => {
                Err(format!(
                    "{what}: {} InputAccepted names job {} / {}, expected {job_id} / \
                     {provider_job_id}: taken for another job",
                    a.status, got.job_id, got.provider_job_id
                ))
            }
            Ok(got) => Ok(format!(
                "{} InputAccepted (state {})",
                a.status,
                got.state.as_str()
            )),
            Err(_) => Ok(a.status.to_string()),
        };
    }
    if a.status == 409 {
        return match a.problem() {
            Some(p) if p.status == 0 || p.status == 409 => Ok(a.describe()),
            Some(p) => Err(format!(
                "{what}: 409 sent, but the problem document says status {}",
                p.status
            )),
            None => Err(format!(
                "{what}: expected 2xx or 409 with a problem document, got {}",
                a.describe()
            )),
        };
    }
    let note = if (400..500).contains(&a.status) {
        " (a broker fails the job on any other 4xx)"
    } else {
        ""
    };
    Err(format!(
        "{what}: expected 2xx (InputAccepted) or 409{note}, got {}",
        a.describe()
    ))
}
