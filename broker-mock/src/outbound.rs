//! Outgoing HTTP: one [`Fetcher`](client::Fetcher) (rustls, no redirects, no proxy, the
//! address policy of `--allow-private-addresses` checked on every URL and every resolved
//! address), signed POSTs to providers with retries, and result downloads with size and
//! digest checks from the origin the provider registered. Every request is logged.

use std::time::Duration;

use bytes::Bytes;
use diax_sdk::client;
use diax_sdk::util::ErrorChain;
use diax_sdk::wire::Download;
use diax_sdk::{Keyring, MessageId};
use http::HeaderMap;

use crate::config::Config;
use crate::error::StartError;
use crate::state::AppState;
use crate::store::messages::{self, NewMessage};

/// The outgoing policy: the safe one unless `--allow-private-addresses` is given.
pub(crate) fn fetch_policy(cfg: &Config) -> client::FetchPolicy {
    if cfg.allow_private_addresses {
        client::FetchPolicy::development()
    } else {
        client::FetchPolicy::default()
    }
}

/// Builds the one outgoing client with the SDK: rustls (ring) with the platform roots plus
/// the `--ca-cert` roots, never following redirects, under [`fetch_policy`].
pub(crate) fn fetcher(cfg: &Config) -> Result<client::Fetcher, StartError> {
    let mut extra = Vec::new();
    for path in &cfg.ca_certs {
        let pem = std::fs::read(path)
            .map_err(|e| StartError::Client(format!("reading {}: {e}", path.display())))?;
        extra.push(pem);
    }
    let config = client::ClientConfig {
        timeout: Duration::from_secs(cfg.http_timeout.max(1)),
        connect_timeout: Duration::from_secs(cfg.http_timeout.clamp(1, 10)),
        extra_root_certs_pem: extra,
        user_agent: concat!("broker-mock/", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    client::Fetcher::new(&config, fetch_policy(cfg))
        .map_err(|e| StartError::Client(ErrorChain(&e).to_string()))
}

/// An answer to an outgoing request.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Who a logged outgoing message concerns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subject {
    pub(crate) provider_id: Option<String>,
    pub(crate) job_id: Option<String>,
    /// What the message is, prefixed to each attempt's verdict (e.g. `job.input attempt 2/10`).
    pub(crate) label: Option<String>,
}

impl Subject {
    /// A message to `url` about this subject, for the log.
    pub(crate) fn message(&self, method: &str, url: &str) -> NewMessage {
        NewMessage::out(method, url, self.provider_id.clone(), self.job_id.clone())
    }

    fn verdict(&self, verdict: &str) -> String {
        match &self.label {
            Some(l) => format!("{l}: {verdict}"),
            None => verdict.to_owned(),
        }
    }
}

fn signature_headers(
    headers: &[(&'static str, String)],
) -> serde_json::Map<String, serde_json::Value> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect()
}

/// `(verdict, reason)` of an answer for the message log: the status, and a refusal's
/// problem (or the start of its body).
pub(crate) fn answer_summary(a: &Answer) -> (String, Option<String>) {
    if (200..300).contains(&a.status) {
        return (format!("peer answered {}", a.status), None);
    }
    let reason = match serde_json::from_slice::<diax_sdk::Problem>(&a.body) {
        Ok(p) => format!(
            "{} ({}){}",
            p.title,
            p.type_uri,
            p.detail.map(|d| format!(": {d}")).unwrap_or_default()
        ),
        Err(_) => String::from_utf8_lossy(&a.body[..a.body.len().min(300)]).into_owned(),
    };
    (format!("peer refused with {}", a.status), Some(reason))
}

/// POSTs `body` signed with `keyring` (a fresh timestamp each attempt, the same
/// `webhook-id`), retrying transport errors, 5xx and 429 up to `attempts` times.
/// Returns the last answer, or the last transport error.
pub(crate) async fn send_signed(
    state: &AppState,
    url: &str,
    id: &MessageId,
    body: &[u8],
    keyring: &Keyring,
    attempts: u32,
    subject: &Subject,
) -> Result<Answer, String> {
    let attempts = attempts.max(1);
    let mut last_err = String::new();
    if let Err(refused) = state.fetcher.policy().check(url) {
        let mut logged = subject.message("POST", url);
        logged.verdict = subject.verdict("not sent");
        logged.reason = Some(refused.to_string());
        record(state, logged).await;
        return Err(refused.to_string());
    }
    for attempt in 1..=attempts {
        if attempt > 1 {
            let exp = 2u64.saturating_pow(attempt - 2);
            let base = state.cfg.retry_backoff_ms.saturating_mul(exp).min(30_000);
            let jitter = rand::random_range(0..=base / 4 + 1);
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
        }
        let signed = match keyring.sign(id, state.clock.now(), body) {
            Ok(s) => s,
            Err(e) => return Err(format!("cannot sign: {e}")),
        };
        let pairs = signed.pairs();
        let mut req = state
            .fetcher
            .client()
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        for (k, v) in &pairs {
            req = req.header(*k, v);
        }
        let mut logged = subject.message("POST", url);
        logged.headers = signature_headers(&pairs);
        logged
            .headers
            .insert("content-type".into(), "application/json".into());
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = match read_limited(resp, state.cfg.max_body_bytes).await {
                    Ok(b) => b,
                    Err(e) => {
                        last_err = format!("reading the answer failed: {e}");
                        logged.status = Some(status);
                        logged.verdict = subject.verdict("transport error");
                        logged.reason = Some(last_err.clone());
                        record(state, logged).await;
                        continue;
                    }
                };
                let answer = Answer {
                    status,
                    headers,
                    body,
                };
                let (verdict, reason) = answer_summary(&answer);
                logged.status = Some(status);
                logged.verdict =
                    subject.verdict(&format!("{verdict} (attempt {attempt}/{attempts})"));
                logged.reason = reason;
                if let Some(ct) = answer.headers.get(http::header::CONTENT_TYPE) {
                    logged.headers.insert(
                        "answer-content-type".into(),
                        String::from_utf8_lossy(ct.as_bytes()).into_owned().into(),
                    );
                }
                if let Some(loc) = answer.headers.get(http::header::LOCATION) {
                    logged.headers.insert(
                        "answer-location".into(),
                        String::from_utf8_lossy(loc.as_bytes()).into_owned().into(),
                    );
                }
                record(state, logged).await;
                let retryable = status >= 500 || status == 429 || status == 408;
                if !retryable || attempt == attempts {
                    return Ok(answer);
                }
                last_err = format!("peer answered {status}");
            }
            Err(e) => {
                last_err = if let Some(refused) = policy_refusal(&e) {
                    format!("not sent: {refused}")
                } else if e.is_timeout() {
                    format!("timed out: {e}")
                } else if e.is_connect() {
                    format!("could not connect: {e}")
                } else {
                    format!("request failed: {e}")
                };
                logged.verdict =
                    subject.verdict(&format!("transport error (attempt {attempt}/{attempts})"));
                logged.reason = Some(last_err.clone());
                record(state, logged).await;
                if policy_refusal(&e).is_some() {
                    break;
                }
            }
        }
    }
    Err(last_err)
}

/// The fetch policy's refusal in a transport error's chain (the resolver refused every
/// address of the host).
fn policy_refusal(e: &reqwest::Error) -> Option<client::FetchRefused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<client::FetchRefused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if buf.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Downloads what `dl` describes from the origin of `origin_of` (the provider's registered
/// job URL): URL and address policy, status, size cap, declared size and SHA-256. The error
/// names the rule that failed, never what the server sent (its body, the real size or
/// digest).
pub(crate) async fn download(
    state: &AppState,
    dl: &Download,
    origin_of: &str,
    subject: &Subject,
) -> Result<Vec<u8>, String> {
    let result = download_inner(state, dl, origin_of).await;
    let mut logged = subject.message("GET", &dl.url);
    if let Some(a) = &dl.authorization {
        logged
            .headers
            .insert("authorization".into(), redact_authorization(a).into());
    }
    match &result {
        Ok((status, bytes)) => {
            logged.status = Some(*status);
            logged.verdict = format!("result fetched: {} bytes, digest ok", bytes.len());
        }
        Err((status, why)) => {
            logged.status = *status;
            logged.verdict = "result download failed".into();
            logged.reason = Some(why.clone());
        }
    }
    record(state, logged).await;
    result.map(|(_, b)| b).map_err(|(_, e)| e)
}

async fn download_inner(
    state: &AppState,
    dl: &Download,
    origin_of: &str,
) -> Result<(u16, Vec<u8>), (Option<u16>, String)> {
    if dl.expires_at < state.clock.now() {
        return Err((
            None,
            format!("the result location expired at {}", dl.expires_at),
        ));
    }
    let limits = client::DownloadLimits {
        max_bytes: u64::try_from(state.cfg.max_model_bytes).unwrap_or(u64::MAX),
        timeout: Duration::from_secs(state.cfg.http_timeout.max(1).saturating_mul(4)),
        connect_timeout: Duration::from_secs(state.cfg.http_timeout.max(1)),
        idle_timeout: Duration::from_secs(state.cfg.http_timeout.max(1)),
    };
    let fetcher = state
        .fetcher
        .with_origin_of(origin_of)
        .map_err(|e| (None, e.to_string()))?;
    match fetcher.download_to_vec(dl, &limits).await {
        Ok(bytes) => Ok((200, bytes)),
        Err(e) => {
            use client::DownloadError as E;
            let status = match &e {
                E::Refused { status, .. } => Some(*status),
                _ => None,
            };
            // The rule that failed; no body, size or digest of what the server sent, and
            // one message for every transport failure.
            let detail = match &e {
                E::Refused { status, .. } => format!("the result's server answered {status}"),
                E::Transfer(_) | E::Timeout(_) | E::Io(_) => {
                    "the result could not be transferred".to_owned()
                }
                _ => e.to_string(),
            };
            Err((status, detail))
        }
    }
}

/// `Bearer tc_abc…` -> `Bearer [redacted]`.
pub(crate) fn redact_authorization(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} [redacted]"),
        None => "[redacted]".to_owned(),
    }
}

/// Appends `m` to the message log, stamped now.
pub(crate) async fn record(state: &AppState, m: NewMessage) {
    messages::record(
        &state.db,
        state.cfg.max_log_messages,
        state.clock.now_ms(),
        m,
    )
    .await;
}
