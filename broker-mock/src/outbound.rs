//! Outgoing HTTP: one [`Fetcher`](client::Fetcher) (rustls, no redirects, no proxy, the
//! address policy of `--allow-private-addresses` checked on every URL and every resolved
//! address), signed POSTs to providers with retries, and result downloads with size and
//! digest checks from the origin the provider registered. Every request is logged.

use std::time::{Duration, Instant};

use bytes::Bytes;
use diax_sdk::client;
use diax_sdk::util::ErrorChain;
use diax_sdk::wire::{Download, MAX_PICTURE_BYTES, PNG_SIGNATURE};
use diax_sdk::{Keyring, MessageId};
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use http::HeaderMap;
use tokio::io::AsyncWrite;

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
        ..client::ClientConfig::default()
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

/// POSTs `body` signed with `keyring` through the SDK's [`SignedSender`](client::SignedSender)
/// (a fresh timestamp from the broker's clock each attempt, the same `webhook-id`), retrying
/// transport errors, 408, 429 and 5xx up to `attempts` times under the SDK's
/// [`RetryPolicy`](client::RetryPolicy) (from `--retry-backoff-ms`), logging every attempt.
/// Returns the last answer (a retryable one when every attempt got one), or the last
/// transport error.
pub(crate) async fn send_signed(
    state: &AppState,
    url: &str,
    id: &MessageId,
    body: &[u8],
    keyring: &Keyring,
    attempts: u32,
    subject: &Subject,
) -> Result<Answer, String> {
    if let Err(refused) = state.fetcher.policy().check(url) {
        let mut logged = subject.message("POST", url);
        logged.verdict = subject.verdict("not sent");
        logged.reason = Some(refused.to_string());
        record(state, logged).await;
        return Err(refused.to_string());
    }
    let policy = client::RetryPolicy {
        max_attempts: attempts.max(1),
        initial_backoff: Duration::from_millis(state.cfg.retry_backoff_ms),
        max_backoff: Duration::from_secs(30),
        multiplier: 2.0,
    };
    let clock = state.clock.clone();
    let sender = client::SignedSender::new(state.fetcher.client().clone())
        .with_clock(move || clock.now())
        .with_max_response_bytes(state.cfg.max_body_bytes);
    let mut attempt_started = Instant::now();
    let sent = sender
        .send_with_hook(
            url,
            id,
            Bytes::copy_from_slice(body),
            keyring,
            &policy,
            |attempt: &client::Attempt<'_>| {
                let mut logged = attempt_message(subject, attempt);
                logged.duration_ms = Some(messages::elapsed_ms(attempt_started));
                // The next attempt starts after the wait.
                attempt_started = Instant::now() + attempt.retry_in.unwrap_or_default();
                async move { record(state, logged).await }
            },
        )
        .await;
    match sent {
        Ok(resp) => Ok(answer(resp)),
        Err(client::SendError::Exhausted { last, .. }) => match *last {
            client::SendError::Status(resp) => Ok(answer(*resp)),
            other => Err(transport_reason(&other)),
        },
        Err(e) => Err(transport_reason(&e)),
    }
}

fn answer(resp: client::Response) -> Answer {
    Answer {
        status: resp.status,
        headers: resp.headers,
        body: resp.body,
    }
}

/// One attempt of a signed send, as the message log shows it.
fn attempt_message(subject: &Subject, attempt: &client::Attempt<'_>) -> NewMessage {
    let (n, max) = (attempt.number, attempt.max_attempts);
    let pairs = attempt.signed.pairs();
    let mut logged = subject.message("POST", attempt.url);
    logged.headers = signature_headers(&pairs);
    logged
        .headers
        .insert("content-type".into(), "application/json".into());
    match attempt.outcome {
        Ok(resp) => {
            let a = Answer {
                status: resp.status,
                headers: resp.headers.clone(),
                body: resp.body.clone(),
            };
            let (verdict, reason) = answer_summary(&a);
            logged.status = Some(a.status);
            logged.verdict = subject.verdict(&format!("{verdict} (attempt {n}/{max})"));
            logged.reason = reason;
            for (name, key) in [
                (http::header::CONTENT_TYPE, "answer-content-type"),
                (http::header::LOCATION, "answer-location"),
            ] {
                if let Some(v) = a.headers.get(name) {
                    logged.headers.insert(
                        key.into(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    );
                }
            }
        }
        Err(e) => {
            logged.verdict = subject.verdict(&format!("transport error (attempt {n}/{max})"));
            logged.reason = Some(transport_reason(e));
        }
    }
    logged
}

/// A transport failure for the log: what happened and its cause.
fn transport_reason(e: &client::SendError) -> String {
    use client::SendError as E;
    let what = match e {
        E::Timeout(_) => "timed out",
        E::Connect(_) => "could not connect",
        E::NotAllowed(_) | E::Url(_) => "not sent",
        _ => "request failed",
    };
    format!("{what}: {}", ErrorChain(e))
}

/// What a provider hands the broker to fetch at the end of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// The result: a model, within `--max-model-bytes`.
    Result,
    /// The picture of the work: a PNG of at most [`MAX_PICTURE_BYTES`].
    Picture,
}

impl Fetched {
    fn name(self) -> &'static str {
        match self {
            Fetched::Result => "result",
            Fetched::Picture => "picture",
        }
    }

    fn max_bytes(self, state: &AppState) -> u64 {
        match self {
            Fetched::Result => u64::try_from(state.cfg.max_model_bytes).unwrap_or(u64::MAX),
            Fetched::Picture => MAX_PICTURE_BYTES,
        }
    }
}

/// Downloads what `dl` describes from the origin of `origin_of` (the provider's registered
/// job URL) or one of the configured `--result-store-origin`s: URL and address policy,
/// status, size cap, declared size and SHA-256 (and for a picture, the PNG signature). The
/// error names the rule that failed, never what the server sent (its body, the real size or
/// digest).
pub(crate) async fn download(
    state: &AppState,
    dl: &Download,
    origin_of: &str,
    subject: &Subject,
    what: Fetched,
) -> Result<Vec<u8>, String> {
    let started = Instant::now();
    let cap = dl.size.min(what.max_bytes(state)).min(64 * 1024 * 1024);
    let mut bytes = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
    let result = match fetch_into(state, dl, origin_of, what, &mut bytes).await {
        Ok(_) if what == Fetched::Picture && !bytes.starts_with(&PNG_SIGNATURE) => Err((
            Some(200),
            "the picture is not a PNG (no PNG signature)".to_owned(),
        )),
        other => other,
    };
    log_fetch(state, dl, subject, what, started, &result).await;
    result.map(|_| bytes).map_err(|(_, e)| e)
}

/// [`download`] as a stream, for a result that goes into the bucket without ever being
/// whole in memory: the chunks as they arrive, and the future that fetches them (poll both
/// together, e.g. with `tokio::join!`; the fetch waits while the stream is not read). The
/// stream ends normally only after the last byte has passed every check (declared size,
/// size cap, SHA-256); when a check fails or the transfer breaks, its last item is that
/// error instead, so whoever stores the stream stores nothing. The future's output is the
/// download's own verdict (the size fetched, or the rule that failed), logged as
/// [`download`] logs it.
pub(crate) fn download_stream<'a>(
    state: &'a AppState,
    dl: &'a Download,
    origin_of: &'a str,
    subject: &'a Subject,
    what: Fetched,
) -> (
    impl Stream<Item = Result<Bytes, String>> + Send + 'static,
    impl Future<Output = Result<u64, String>> + Send + 'a,
) {
    // A pipe of 256 KiB between the HTTP body and the store, and the verdict after it.
    let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let fetch = async move {
        let started = Instant::now();
        let result = fetch_into(state, dl, origin_of, what, &mut writer).await;
        // End of the bytes first, then whether they passed: a reader never takes the end of
        // the pipe for a good download before the verdict says so.
        drop(writer);
        let _ = verdict_tx.send(result.as_ref().map(|_| ()).map_err(|(_, e)| e.clone()));
        log_fetch(state, dl, subject, what, started, &result).await;
        result.map(|(_, size)| size).map_err(|(_, e)| e)
    };
    let verdict = futures_util::stream::once(verdict_rx).filter_map(|v| {
        std::future::ready(match v {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(Err(why)),
            Err(_) => Some(Err("the download was abandoned".to_owned())),
        })
    });
    let bytes = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024)
        .map_err(|e| format!("the pipe from the download broke: {e}"));
    (bytes.chain(verdict), fetch)
}

/// Bytes buffered between a streamed download and its consumer.
const PIPE_BYTES: usize = 256 * 1024;

/// Notes a download in the message log.
async fn log_fetch(
    state: &AppState,
    dl: &Download,
    subject: &Subject,
    what: Fetched,
    started: Instant,
    result: &Result<(u16, u64), (Option<u16>, String)>,
) {
    let duration_ms = messages::elapsed_ms(started);
    // A presigned URL carries its credential in the query: the log keeps the path only.
    let shown = match dl.url.split_once('?') {
        Some((path, _)) => format!("{path}?[redacted]"),
        None => dl.url.clone(),
    };
    let mut logged = subject.message("GET", &shown);
    logged.duration_ms = Some(duration_ms);
    if let Some(a) = &dl.authorization {
        logged
            .headers
            .insert("authorization".into(), redact_authorization(a).into());
    }
    let name = what.name();
    match result {
        Ok((status, size)) => {
            logged.status = Some(*status);
            logged.verdict = format!("{name} fetched: {size} bytes, digest ok");
        }
        Err((status, why)) => {
            logged.status = *status;
            logged.verdict = match what {
                Fetched::Result => "result download failed".into(),
                Fetched::Picture => "picture refused; the result is kept without it".into(),
            };
            logged.reason = Some(why.clone());
        }
    }
    record(state, logged).await;
}

/// Fetches `dl` into `out` under the rules of [`download`] (but the PNG check): the status
/// and size fetched, or the status (if any) and the rule that failed.
async fn fetch_into<W: AsyncWrite + Unpin>(
    state: &AppState,
    dl: &Download,
    origin_of: &str,
    what: Fetched,
    out: &mut W,
) -> Result<(u16, u64), (Option<u16>, String)> {
    let name = what.name();
    if dl.expires_at < state.clock.now() {
        return Err((
            None,
            format!("the {name} location expired at {}", dl.expires_at),
        ));
    }
    let limits = client::DownloadLimits {
        max_bytes: what.max_bytes(state),
        timeout: Duration::from_secs(state.cfg.http_timeout.max(1).saturating_mul(4)),
        connect_timeout: Duration::from_secs(state.cfg.http_timeout.max(1)),
        idle_timeout: Duration::from_secs(state.cfg.http_timeout.max(1)),
    };
    // The provider's registered origin, or an object store the broker is configured to
    // trust (a presigned URL on the store's origin).
    let on_store =
        url::Url::parse(&dl.url).is_ok_and(|u| {
            let origin = u.origin().ascii_serialization();
            state.cfg.result_store_origins.iter().any(|o| {
                url::Url::parse(o).is_ok_and(|o| o.origin().ascii_serialization() == origin)
            })
        });
    let fetcher = state
        .fetcher
        .with_origin_of(if on_store { &dl.url } else { origin_of })
        .map_err(|e| (None, e.to_string()))?;
    match fetcher.download(dl, out, &limits).await {
        Ok(got) => Ok((200, got.size)),
        Err(e) => {
            use client::DownloadError as E;
            let status = match &e {
                E::Refused { status, .. } => Some(*status),
                _ => None,
            };
            // The rule that failed; no body, size or digest of what the server sent, and
            // one message for every transport failure.
            let detail = match &e {
                E::Refused { status, .. } => format!("the {name}'s server answered {status}"),
                E::Transfer(_) | E::Timeout(_) | E::Io(_) => {
                    format!("the {name} could not be transferred")
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
