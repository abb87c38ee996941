//! The checks: what is sent, what is expected, and the verdicts. One module per area of
//! the protocol; this one holds the run's order and the shared state.

mod accounts;
mod events;
mod exchange;
mod inputs;
mod jobs;
mod offers;
mod replay;
mod results;
mod secrets;
mod signatures;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diax_sdk::client::{self, Client, ClientConfig};
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, random_token, sha256_hex};
use diax_sdk::wire::JobAccepted;
use diax_sdk::{
    AccountId, JobId, KeyId, KeyMaterial, Keyring, ModelId, ProviderId, PublicKey, Secret,
    SigningKey, UserId,
};

use super::endpoint::{Endpoint, EndpointSetup};
use super::model::test_model;
use super::{Check, CheckResult, ConformanceConfig, ConformanceError, Report, Verdict};
use exchange::one_line;

/// Lifetime of the temporary model credential.
const CREDENTIAL_TTL_SECS: i64 = 600;

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
    /// Text forms of the shared secret (`whsec_…` and its base64 part).
    secret_texts: Vec<String>,
    /// Where an answer carried the secret.
    leaks: std::sync::Mutex<Vec<String>>,
}

impl Runner {
    /// A key of the run's scheme that the provider does not trust.
    fn stranger_key(&self) -> KeyMaterial {
        match self.keyring.primary(unix_now()).map(|k| &k.material) {
            Some(KeyMaterial::Ed25519(_)) => SigningKey::generate().into(),
            _ => Secret::generate().into(),
        }
    }
}

fn parse_config(
    cfg: &ConformanceConfig,
) -> Result<(Keyring, ProviderId, Client), ConformanceError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| ConformanceError::Config(format!("{what}: {e}"));
    let key = KeyMaterial::parse(&cfg.secret).map_err(|e| bad("secret", &e))?;
    let key_id = KeyId::parse(cfg.key_id.clone()).map_err(|e| bad("key id", &e))?;
    let mut keyring = Keyring::new();
    match (&key, &cfg.provider_public_key) {
        (KeyMaterial::Hmac(_), None) => {}
        (KeyMaterial::Ed25519(_), Some(public)) => {
            let public = PublicKey::parse(public).map_err(|e| bad("provider public key", &e))?;
            let provider_key =
                KeyId::parse("key_conformance_provider").map_err(|e| bad("provider key id", &e))?;
            keyring.insert(provider_key, public, None);
        }
        (KeyMaterial::Hmac(_), Some(_)) => {
            return Err(ConformanceError::Config(
                "provider public key: only with ed25519, where the secret is the broker's whsk_ key"
                    .into(),
            ));
        }
        (KeyMaterial::Ed25519(_), None) => {
            return Err(ConformanceError::Config(
                "provider public key: an ed25519 run (a whsk_ broker key) needs the provider's whpk_ key to check its events"
                    .into(),
            ));
        }
        (KeyMaterial::Ed25519Public(_), _) => {
            return Err(ConformanceError::Config(
                "secret: a whpk_ public key cannot sign; give the whsec_ secret or the broker's whsk_ key"
                    .into(),
            ));
        }
    }
    keyring.insert(key_id, key, None);
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
    Ok((keyring, provider_id, http))
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
    let secret_texts: Vec<String> = [
        Some(cfg.secret.clone()),
        cfg.secret
            .strip_prefix("whsec_")
            .or_else(|| cfg.secret.strip_prefix("whsk_"))
            .map(str::to_owned),
    ]
    .into_iter()
    .flatten()
    .filter(|s| s.len() >= 16)
    .collect();
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
        secret_texts: secret_texts.clone(),
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
        secret_texts,
        leaks: std::sync::Mutex::new(Vec::new()),
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
                section: c.section(),
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
            section: check.section(),
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

    fn account(&self) -> Option<&str> {
        self.cfg.account.as_deref()
    }

    async fn play(&mut self) {
        // 0. The first body of the delayed replay; its second goes near the end.
        let replay = self.replay_start().await;

        // 1. The valid offer, its redelivery and a repeated offer.
        let job_id = JobId::generate();
        self.endpoint.shared.log.lock().await.job_id = Some(job_id.to_string());
        let accepted = self.offer_checks(&job_id).await;

        // 2. The input: temporary credentials for the model; then the offer once more.
        let input_sent = Instant::now();
        let input_ok = self.input_check(&job_id, accepted.as_ref()).await;
        self.repeated_offer_check(
            Check::OfferRepeatedAfterInput,
            &job_id,
            accepted.as_ref(),
            input_ok.then_some("the job has its input"),
        )
        .await;

        // 3. Refusals, while the provider works on the job.
        self.refusal_checks().await;

        // 4. Once the job's completion arrived (its sequence is complete): the other jobs,
        // all at once.
        let deadline = tokio::time::Instant::from_std(input_sent + self.cfg.timeout);
        if input_ok {
            self.wait_completion_sent(deadline).await;
        }
        let side = self.start_side_jobs().await;

        // 5. The provider's download, events, refused retries and result; the other jobs.
        let t = Instant::now();
        let finished = if input_ok {
            self.endpoint.wait_done(deadline).await
        } else {
            false
        };
        self.judge_job(accepted.as_ref(), input_ok, finished, t)
            .await;
        let side_deadline = tokio::time::Instant::now() + self.cfg.timeout;
        self.judge_side_jobs(&side, accepted.as_ref(), side_deadline)
            .await;

        // 6. The ended job: its result without the credential, its offer and input again.
        self.result_credential_check(finished).await;
        self.picture_check(finished).await;
        self.repeated_offer_check(
            Check::OfferRepeatedAfterEnd,
            &job_id,
            accepted.as_ref(),
            (input_ok && finished).then_some("the job has ended"),
        )
        .await;
        self.repeated_input_check(&job_id, accepted.as_ref(), input_ok)
            .await;

        // 7. The delayed replay's second body, what was charged, the secret.
        self.replay_finish(replay).await;
        self.charges_check(accepted.as_ref(), input_ok).await;
        self.secret_check().await;
    }

    /// Waits until the job's completion event arrived (refused or applied) or `deadline`.
    async fn wait_completion_sent(&self, deadline: tokio::time::Instant) {
        loop {
            {
                let log = self.endpoint.shared.log.lock().await;
                if log.forced.is_some() || log.terminal.is_some() {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn refusal_checks(&mut self) {
        self.other_provider_check().await;
        self.unsupported_operation_check().await;
        self.signature_checks().await;
        self.multiple_entries_check().await;
        self.malformed_header_checks().await;
        self.raw_bytes_check().await;
        self.body_checks().await;
        self.replay_checks().await;
        self.timestamp_checks().await;
        self.account_checks().await;
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
                Check::EventsRetryFreshSignature,
                Check::EventsRetryBackoff,
                Check::EventsFields,
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

        let outcome = [
            (
                Check::DownloadCredentials,
                inputs::judge_download(&log, &unfinished),
            ),
            (Check::EventsSigned, events::judge_signed(&log, &unfinished)),
            (
                Check::EventsTransitions,
                match accepted {
                    Some(acc) => events::judge_transitions(&log, acc, &unfinished),
                    None => Err(not_checked(Check::OfferValidAccepted)),
                },
            ),
            (
                Check::EventsRetrySameId,
                events::judge_retry(&log, waited, &unfinished),
            ),
            (
                Check::EventsRetryFreshSignature,
                events::judge_fresh_signature(&log, &unfinished),
            ),
            (
                Check::EventsRetryBackoff,
                events::judge_backoff(&log, &unfinished),
            ),
            (Check::EventsFields, events::judge_fields(&log, &unfinished)),
            (
                Check::ResultDigest,
                results::judge_result(&log, &unfinished),
            ),
        ];
        drop(log);
        for (check, outcome) in outcome {
            self.judge(check, outcome, t);
        }
    }
}

pub(super) fn not_checked(prerequisite: Check) -> String {
    format!("not checked: {prerequisite} failed")
}
