//! The checks: what is sent, what is expected, and the verdicts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diax_sdk::client::{self, Client, ClientConfig};
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, random_token, sha256_hex};
use diax_sdk::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use diax_sdk::wire::{
    BrokerMessage, Download, InputAccepted, JobAccepted, JobEventKind, JobInput, JobOffer,
    OfferUser, OfferedModel, SERVICE_KIND_MODEL_REPAIR,
};
use diax_sdk::{
    AccountId, JobId, KeyId, Keyring, MessageId, ModelId, PROBLEM_CONTENT_TYPE, Problem,
    ProblemType, ProviderId, ProviderJobId, Secret, UserId,
};
use serde_json::Value;

use super::endpoint::{Endpoint, EndpointSetup, Retry};
use super::model::test_model;
use super::{Check, CheckResult, ConformanceConfig, ConformanceError, Report, Verdict};

/// Largest answer read from the provider.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Lifetime of the temporary model credential.
const CREDENTIAL_TTL_SECS: i64 = 600;

/// A provider's answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    body: Bytes,
}

impl Answer {
    fn problem(&self) -> Option<Problem> {
        let ct = self.content_type.as_deref()?;
        if !ct.starts_with(PROBLEM_CONTENT_TYPE) {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }

    /// `202`, or `401 signature-invalid: detail`, or `500 (text…)`.
    fn describe(&self) -> String {
        if let Some(p) = self.problem() {
            let slug = p
                .type_uri
                .rsplit('/')
                .next()
                .unwrap_or(&p.type_uri)
                .to_owned();
            return match p.detail {
                Some(d) => format!("{} {slug} ({})", self.status, one_line(&d, 120)),
                None => format!("{} {slug}", self.status),
            };
        }
        if (200..300).contains(&self.status) {
            return self.status.to_string();
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(120)]).into_owned();
        if text.trim().is_empty() {
            format!("{} (no problem document)", self.status)
        } else {
            format!(
                "{} (not a problem document: {})",
                self.status,
                one_line(&text, 120)
            )
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The three `webhook-*` headers, each possibly left out.
#[derive(Debug, Clone, Default)]
struct SigHeaders {
    id: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
}

fn sign(keyring: &Keyring, id: &MessageId, timestamp: i64, body: &[u8]) -> SigHeaders {
    // Signing with a non-empty keyring cannot fail; an empty header is what a broken
    // signer would send, and is judged as such.
    let signature = keyring
        .sign(id, timestamp, body)
        .map(|s| s.signature)
        .unwrap_or_default();
    SigHeaders {
        id: Some(id.to_string()),
        timestamp: Some(timestamp.to_string()),
        signature: Some(signature),
    }
}

/// Whether `answer` is the problem `kind` with the right status and content type.
fn expect_problem(answer: &Result<Answer, String>, kind: ProblemType) -> Result<Problem, String> {
    let want = format!("{} {}", kind.status(), kind.slug());
    let a = answer
        .as_ref()
        .map_err(|e| format!("expected {want}, got no answer: {e}"))?;
    let Some(p) = a.problem() else {
        return Err(format!("expected {want}, got {}", a.describe()));
    };
    if a.status != kind.status() || !p.is(kind) {
        return Err(format!("expected {want}, got {}", a.describe()));
    }
    if p.status != 0 && p.status != a.status {
        return Err(format!(
            "{want} sent, but the problem document says status {}",
            p.status
        ));
    }
    Ok(p)
}

struct Runner {
    cfg: ConformanceConfig,
    http: Client,
    keyring: Keyring,
    endpoint: Endpoint,
    model_id: ModelId,
    model_size: u64,
    model_sha256: String,
    user_id: UserId,
    provider_id: ProviderId,
    /// The first `job.input`'s credential.
    credential: String,
    results: HashMap<Check, CheckResult>,
}

fn parse_config(
    cfg: &ConformanceConfig,
) -> Result<(Keyring, ProviderId, Client), ConformanceError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| ConformanceError::Config(format!("{what}: {e}"));
    let secret = Secret::parse(&cfg.secret).map_err(|e| bad("secret", &e))?;
    let key_id = KeyId::parse(cfg.key_id.clone()).map_err(|e| bad("key id", &e))?;
    let provider_id =
        ProviderId::parse(cfg.provider_id.clone()).map_err(|e| bad("provider id", &e))?;
    for (what, acc) in [
        ("account", &cfg.account),
        ("poor account", &cfg.poor_account),
    ] {
        if let Some(a) = acc {
            AccountId::parse(a.clone()).map_err(|e| bad(what, &e))?;
        }
    }
    if cfg.broker_id.is_empty() || cfg.broker_id.len() > 128 {
        return Err(ConformanceError::Config(
            "broker id: 1 to 128 characters".into(),
        ));
    }
    client::require_secure_url(&cfg.provider_url)
        .map_err(|e| bad("provider URL", &ErrorChain(&e)))?;
    if cfg.timeout.is_zero() {
        return Err(ConformanceError::Config("timeout must be positive".into()));
    }
    let request_timeout = cfg
        .request_timeout
        .min(cfg.timeout)
        .max(Duration::from_secs(1));
    let http = client::http_client(&ClientConfig {
        timeout: request_timeout,
        connect_timeout: request_timeout.min(Duration::from_secs(10)),
        extra_root_certs_pem: cfg.extra_root_certs_pem.clone(),
        user_agent: concat!("broker-mock-conformance/", env!("CARGO_PKG_VERSION")).to_owned(),
    })
    .map_err(|e| ConformanceError::Client(e.to_string()))?;
    Ok((Keyring::single(key_id, secret), provider_id, http))
}

pub(crate) async fn run(cfg: ConformanceConfig) -> Result<Report, ConformanceError> {
    let started = Instant::now();
    let started_at = unix_now();
    let (keyring, provider_id, http) = parse_config(&cfg)?;
    let model = test_model();
    let model_size = model.len() as u64;
    let model_sha256 = sha256_hex(&model);
    let model_id = ModelId::parse(random_token("mdl_conformance", 12))
        .map_err(|e| ConformanceError::Config(e.to_string()))?;
    let user_id = UserId::parse(random_token("usr_conformance", 12))
        .map_err(|e| ConformanceError::Config(e.to_string()))?;
    let credential = format!("Bearer {}", random_token("tc_", 32));
    let endpoint = Endpoint::start(EndpointSetup {
        listen: cfg.listen,
        public_url: cfg.public_url.clone(),
        tls: cfg.tls.clone(),
        model,
        model_id: model_id.to_string(),
        credential: credential.clone(),
        provider_id: provider_id.to_string(),
        keyring: keyring.clone(),
        tolerance: cfg.tolerance_secs,
        http: http.clone(),
        request_timeout: cfg.request_timeout.min(cfg.timeout),
    })
    .await?;
    let mut runner = Runner {
        cfg,
        http,
        keyring,
        endpoint,
        model_id,
        model_size,
        model_sha256,
        user_id,
        provider_id,
        credential,
        results: HashMap::new(),
    };
    runner.play().await;
    let Runner {
        cfg,
        endpoint,
        mut results,
        ..
    } = runner;
    endpoint.shutdown().await;
    let results = Check::ALL
        .iter()
        .map(|c| {
            results.remove(c).unwrap_or(CheckResult {
                check: *c,
                verdict: Verdict::Fail,
                reason: "not run (runner bug)".into(),
                duration_ms: 0,
            })
        })
        .collect();
    Ok(Report {
        provider_url: cfg.provider_url,
        started_at,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        results,
    })
}

impl Runner {
    fn record(
        &mut self,
        check: Check,
        verdict: Verdict,
        reason: impl Into<String>,
        since: Instant,
    ) {
        let result = CheckResult {
            check,
            verdict,
            reason: one_line(&reason.into(), 400),
            duration_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        tracing::debug!(check = %check, verdict = %verdict, reason = %result.reason, "check done");
        self.results.insert(check, result);
    }

    fn judge(&mut self, check: Check, outcome: Result<String, String>, since: Instant) {
        match outcome {
            Ok(why) => self.record(check, Verdict::Pass, why, since),
            Err(why) => self.record(check, Verdict::Fail, why, since),
        }
    }

    fn offer(&self, job_id: &JobId, account: Option<&str>) -> JobOffer {
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

    fn account(&self) -> Option<&str> {
        self.cfg.account.as_deref()
    }

    async fn send(&self, body: &[u8], headers: &SigHeaders) -> Result<Answer, String> {
        let mut req = self
            .http
            .post(&self.cfg.provider_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        for (name, value) in [
            (HEADER_ID, &headers.id),
            (HEADER_TIMESTAMP, &headers.timestamp),
            (HEADER_SIGNATURE, &headers.signature),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("timed out: {e}")
            } else if e.is_connect() {
                format!("could not connect: {e}")
            } else {
                format!("request failed: {e}")
            }
        })?;
        let status = resp.status().as_u16();
        let text = |name: http::HeaderName| {
            resp.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = text(http::header::CONTENT_TYPE);
        let location = text(http::header::LOCATION);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            content_type,
            location,
            body: Bytes::from(body),
        })
    }

    /// Signs `body` now under a fresh id and sends it.
    async fn send_signed(&self, body: &[u8]) -> Result<Answer, String> {
        let id = MessageId::generate();
        self.send(body, &sign(&self.keyring, &id, unix_now(), body))
            .await
    }

    fn body(msg: &BrokerMessage) -> Vec<u8> {
        serde_json::to_vec(msg).unwrap_or_default()
    }

    async fn play(&mut self) {
        // 1. The valid offer, its redelivery and a repeated offer.
        let t = Instant::now();
        let job_id = JobId::generate();
        self.endpoint.shared.log.lock().await.job_id = Some(job_id.to_string());
        let offer = self.offer(&job_id, self.account());
        let body = Self::body(&BrokerMessage::Offer(offer.clone()));
        let offer_id = MessageId::generate();
        let first = self
            .send(&body, &sign(&self.keyring, &offer_id, unix_now(), &body))
            .await;
        let accepted = match judge_accepted(&first, &job_id) {
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

        // 2. The input: temporary credentials for the model.
        let t = Instant::now();
        let input_sent = Instant::now();
        let input_ok = match &accepted {
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
                let outcome = self.send_input(&job_id, acc.provider_job_id.clone()).await;
                let ok = outcome.is_ok();
                self.judge(Check::InputAccepted, outcome, t);
                ok
            }
        };

        // 3. Refusals, while the provider works on the job.
        self.refusal_checks().await;

        // 4. The provider's download, events, forced retry and result.
        let t = Instant::now();
        let deadline = tokio::time::Instant::from_std(input_sent + self.cfg.timeout);
        let finished = if input_ok {
            self.endpoint.wait_done(deadline).await
        } else {
            false
        };
        self.judge_job(accepted.as_ref(), input_ok, finished, t)
            .await;

        // 5. The finished job's input once more, as a broker's next delivery attempt.
        let t = Instant::now();
        let outcome = match &accepted {
            None => Err(not_checked(Check::OfferValidAccepted)),
            Some(_) if !input_ok => Err(not_checked(Check::InputAccepted)),
            Some(acc) => self.repeat_input(&job_id, &acc.provider_job_id).await,
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
        let input = JobInput {
            job_id: job_id.clone(),
            provider_job_id: provider_job_id.clone(),
            download: Download {
                url: self.endpoint.model_url(),
                authorization: Some(credential),
                expires_at: unix_now().saturating_add(CREDENTIAL_TTL_SECS),
                size: self.model_size,
                sha256: self.model_sha256.clone(),
            },
        };
        let body = Self::body(&BrokerMessage::Input(input));
        let id = MessageId::generate();
        let mut answer = Err(String::new());
        // Retried like a broker would: transport errors, 408, 429, 5xx; the same id.
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            answer = self
                .send(&body, &sign(&self.keyring, &id, unix_now(), &body))
                .await;
            let retry = match &answer {
                Ok(a) => client::RetryPolicy::is_retryable_status(a.status),
                Err(_) => true,
            };
            if !retry {
                break;
            }
        }
        answer
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

    async fn refusal_checks(&mut self) {
        let tolerance = i64::try_from(self.cfg.tolerance_secs).unwrap_or(300);
        let beyond = tolerance.saturating_add(60);

        // Tampered body.
        let t = Instant::now();
        let body = Self::body(&BrokerMessage::Offer(
            self.offer(&JobId::generate(), self.account()),
        ));
        let headers = sign(&self.keyring, &MessageId::generate(), unix_now(), &body);
        let tampered = String::from_utf8_lossy(&body)
            .replace("conformance-cube.stl", "conformance-evil.stl")
            .into_bytes();
        let answer = self.send(&tampered, &headers).await;
        let outcome = expect_problem(&answer, ProblemType::SignatureInvalid)
            .map(|_| "a body changed after signing: 401 signature-invalid".to_owned());
        self.judge(Check::SignatureTamperedBody, outcome, t);

        // Wrong secret.
        let t = Instant::now();
        let body = Self::body(&BrokerMessage::Offer(
            self.offer(&JobId::generate(), self.account()),
        ));
        let wrong = Keyring::single(
            KeyId::parse("key_conformance_wrong").unwrap_or_else(|_| KeyId::generate()),
            Secret::generate(),
        );
        let answer = self
            .send(
                &body,
                &sign(&wrong, &MessageId::generate(), unix_now(), &body),
            )
            .await;
        let outcome = expect_problem(&answer, ProblemType::SignatureInvalid)
            .map(|_| "signed with another secret: 401 signature-invalid".to_owned());
        self.judge(Check::SignatureWrongSecret, outcome, t);

        // Each header missing.
        for (check, header) in [
            (Check::SignatureMissingId, HEADER_ID),
            (Check::SignatureMissingTimestamp, HEADER_TIMESTAMP),
            (Check::SignatureMissingSignature, HEADER_SIGNATURE),
        ] {
            let t = Instant::now();
            let body = Self::body(&BrokerMessage::Offer(
                self.offer(&JobId::generate(), self.account()),
            ));
            let mut headers = sign(&self.keyring, &MessageId::generate(), unix_now(), &body);
            match header {
                HEADER_ID => headers.id = None,
                HEADER_TIMESTAMP => headers.timestamp = None,
                _ => headers.signature = None,
            }
            let answer = self.send(&body, &headers).await;
            let outcome = expect_problem(&answer, ProblemType::SignatureMissing)
                .map(|_| format!("no {header} header: 400 signature-missing"));
            self.judge(check, outcome, t);
        }

        // Replay: a verified id reused for another body.
        let t = Instant::now();
        let outcome = self.replay_check().await;
        self.judge(Check::ReplayDifferentBody, outcome, t);

        // Timestamps beyond the tolerance, both ways, correctly signed.
        for (check, offset, what) in [
            (Check::TimestampStale, -beyond, "in the past"),
            (Check::TimestampFuture, beyond, "in the future"),
        ] {
            let t = Instant::now();
            let body = Self::body(&BrokerMessage::Offer(
                self.offer(&JobId::generate(), self.account()),
            ));
            let headers = sign(
                &self.keyring,
                &MessageId::generate(),
                unix_now().saturating_add(offset),
                &body,
            );
            let answer = self.send(&body, &headers).await;
            let outcome = expect_problem(&answer, ProblemType::TimestampOutOfTolerance).map(|_| {
                format!(
                    "signed {} s {what}: 401 timestamp-out-of-tolerance",
                    offset.abs()
                )
            });
            self.judge(check, outcome, t);
        }

        // Accounts.
        for (check, unknown) in [
            (Check::AccountUnknown, true),
            (Check::AccountMissing, false),
        ] {
            let t = Instant::now();
            if self.cfg.account.is_none() {
                self.record(
                    check,
                    Verdict::Skip,
                    "no --account given: the provider is taken to be free (no accounts)",
                    t,
                );
                continue;
            }
            let account = unknown.then(|| random_token("acc_conformanceUnknown", 12));
            let body = Self::body(&BrokerMessage::Offer(
                self.offer(&JobId::generate(), account.as_deref()),
            ));
            let answer = self.send_signed(&body).await;
            let what = if unknown {
                "an account the provider does not know"
            } else {
                "no account"
            };
            let outcome =
                expect_problem(&answer, ProblemType::AccountRequired).and_then(|p| {
                    match p.register_url() {
                        Some(url) if !url.is_empty() => {
                            Ok(format!("{what}: 401 account-required, register_url {url}"))
                        }
                        _ => Err(format!(
                            "{what}: 401 account-required, but without a register_url"
                        )),
                    }
                });
            self.judge(check, outcome, t);
        }

        // Payment.
        let t = Instant::now();
        match self.cfg.poor_account.clone() {
            None => self.record(
                Check::PaymentInsufficient,
                Verdict::Skip,
                "no --poor-account given (an account that exists but cannot pay)",
                t,
            ),
            Some(poor) => {
                let body = Self::body(&BrokerMessage::Offer(
                    self.offer(&JobId::generate(), Some(&poor)),
                ));
                let answer = self.send_signed(&body).await;
                let outcome = expect_problem(&answer, ProblemType::PaymentRequired).and_then(|p| {
                    let quote = p
                        .quote()
                        .ok_or("402 payment-required, but without a valid quote")?;
                    let top_up = p.top_up_url().unwrap_or("(no top_up_url)");
                    Ok(format!(
                        "an account that cannot pay: 402 payment-required, quote {quote}, \
                             top_up_url {top_up}"
                    ))
                });
                self.judge(Check::PaymentInsufficient, outcome, t);
            }
        }
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

    async fn judge_job(
        &mut self,
        accepted: Option<&JobAccepted>,
        input_ok: bool,
        finished: bool,
        t: Instant,
    ) {
        let waited = self.cfg.timeout.as_secs();
        if accepted.is_none() || !input_ok {
            let why = if accepted.is_none() {
                not_checked(Check::OfferValidAccepted)
            } else {
                not_checked(Check::InputAccepted)
            };
            for c in [
                Check::DownloadCredentials,
                Check::EventsSigned,
                Check::EventsTransitions,
                Check::EventsRetrySameId,
                Check::ResultDigest,
            ] {
                self.record(c, Verdict::Fail, why.clone(), t);
            }
            return;
        }
        let log = self.endpoint.shared.log.lock().await;
        let unfinished = if finished {
            String::new()
        } else {
            format!(" (the job did not finish within {waited} s)")
        };

        // Download.
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
        let download = if let Some(first) = refused.first() {
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
        };

        // Signatures.
        let bad: Vec<_> = log
            .deliveries
            .iter()
            .filter_map(|d| {
                d.error
                    .as_ref()
                    .map(|e| format!("webhook-id {}: {e}", d.id.as_deref().unwrap_or("(none)")))
            })
            .collect();
        let signed = if let Some(first) = bad.first() {
            Err(format!(
                "{} of {} deliveries failed: first: {first}",
                bad.len(),
                log.deliveries.len()
            ))
        } else if log.deliveries.is_empty() {
            Err(format!("no event reached the events URL{unfinished}"))
        } else {
            Ok(format!(
                "{} deliveries, all signed with the shared secret within the tolerance",
                log.deliveries.len()
            ))
        };

        // Transitions.
        let trail: Vec<String> = log
            .applied
            .iter()
            .map(|e| format!("{}#{}", e.kind.name(), e.sequence))
            .collect();
        let trail = if trail.is_empty() {
            "(none)".to_owned()
        } else {
            trail.join(" → ")
        };
        let transitions = if let Some(first) = log.violations.first() {
            Err(format!(
                "{} violation(s); first: {first}; events: {trail}",
                log.violations.len()
            ))
        } else if log.terminal.is_none() && log.forced.is_none() {
            Err(format!(
                "no job.completed or job.failed received{unfinished}; events: {trail}"
            ))
        } else {
            Ok(format!("events: {trail}"))
        };
        let transitions = match (transitions, accepted) {
            (Ok(_), Some(acc))
                if log
                    .provider_job_id
                    .as_deref()
                    .is_some_and(|p| p != acc.provider_job_id.as_str()) =>
            {
                Err(format!(
                    "events name another provider job than the accepted {}",
                    acc.provider_job_id
                ))
            }
            (other, _) => other,
        };

        // Forced retry.
        let retry = match (&log.forced, &log.retry) {
            (None, _) => Err(format!(
                "no completion event arrived to refuse once{unfinished}"
            )),
            (Some((id, _, _)), None) => Err(format!(
                "the completion event (webhook-id {id}) was answered 503, and no retry arrived \
                 within {waited} s"
            )),
            (Some((id, _, _)), Some(Retry::SameId(after))) => Ok(format!(
                "503 to the completion event {id}; retried after {:.1} s with the same \
                 webhook-id and body, signed afresh",
                after.as_secs_f64()
            )),
            (Some((id, _, _)), Some(Retry::NewId(new))) => Err(format!(
                "the completion event {id} was answered 503 and retried under a new \
                 webhook-id {new}"
            )),
            (Some((id, _, _)), Some(Retry::DifferentBody)) => Err(format!(
                "the completion event {id} was answered 503 and retried with the same \
                 webhook-id over a different body"
            )),
        };

        // Result.
        let result = match (&log.terminal, &log.result) {
            (None, _) => Err(format!("the job never completed{unfinished}")),
            (Some(ev), _) if matches!(ev.kind, JobEventKind::Failed { .. }) => {
                let why = match &ev.kind {
                    JobEventKind::Failed { problem } => problem.to_string(),
                    _ => String::new(),
                };
                Err(format!("the job failed on a valid model: {why}"))
            }
            (Some(_), Some(Ok((size, sha)))) => Ok(format!(
                "the result location served {size} bytes with the declared sha256 {sha}"
            )),
            (Some(_), Some(Err(e))) => Err(e.clone()),
            (Some(_), None) => Err("the result was not fetched".to_owned()),
        };
        drop(log);
        self.judge(Check::DownloadCredentials, download, t);
        self.judge(Check::EventsSigned, signed, t);
        self.judge(Check::EventsTransitions, transitions, t);
        self.judge(Check::EventsRetrySameId, retry, t);
        self.judge(Check::ResultDigest, result, t);
    }
}

fn not_checked(prerequisite: Check) -> String {
    format!("not checked: {prerequisite} failed")
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
