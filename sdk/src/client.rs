//! HTTP clients (feature `client`): signed sends with retries, downloads with temporary
//! credentials, and the broker's registration API.
//!
//! | item | what |
//! |---|---|
//! | [`SignedSender`] | signed POSTs, each attempt signed afresh; injectable [`Clock`], per-attempt hook |
//! | [`RetryPolicy`] | the one retry policy: attempts, exponential backoff, full jitter, `Retry-After` |
//! | [`download`], [`download_to_file`], [`download_to_vec`] | fetch a [`Download`] with size and digest checks |
//! | [`BrokerClient`] | registration and secret rotation; fails with [`BrokerCallError`] |
//! | [`http_client`], [`require_secure_url`] | rustls clients without redirects; the secure-URL rule |
//!
//! Errors keep their causes as [`source`](std::error::Error::source)s and the peer's answer
//! (status, headers, body, problem) where there was one; print a whole chain with
//! [`ErrorChain`](crate::util::ErrorChain).
//!
//! Every client built here uses rustls (ring), never follows redirects (a redirect from a
//! peer is answered as the final response), and has timeouts. Call
//! [`install_crypto_provider`] once before building clients ([`http_client`] does it for you).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::clock::{Clock, SystemClock};
use crate::ids::{MessageId, ProviderId};
use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::redact::redact_url;
use crate::secret::Keyring;
use crate::webhook::SignedHeaders;
use crate::wire::{Download, ProviderRegistered, RegisterProvider, RotateSecret, SecretRotated};

pub use reqwest::{Client, Url};

mod policy;
pub use policy::{FetchPolicy, FetchRefused, Fetcher, is_public_address};

/// Installs rustls' ring crypto provider as the process default, if none is installed yet.
/// Safe to call any number of times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Settings for [`http_client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Whole-request timeout (connect + send + receive headers and body). Default 30 s.
    pub timeout: Duration,
    /// Connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Extra trusted root certificates, PEM (for private CAs and tests).
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// How long an idle pooled connection may be reused. Default 4 s: shorter than the
    /// time servers keep an idle connection open (5 s for Apache httpd and Node.js, 10 s
    /// for this SDK's [`server`](crate::server) and any hyper server with a header-read
    /// timeout). A client that reuses a connection the server is closing at that moment
    /// sends its request into a closed socket and gets a connection reset; a pool that
    /// forgets idle connections first never does.
    pub pool_idle_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            extra_root_certs_pem: Vec::new(),
            user_agent: concat!("diax-sdk/", env!("CARGO_PKG_VERSION")).to_owned(),
            pool_idle_timeout: Duration::from_secs(4),
        }
    }
}

/// Why a client could not be built or a URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A PEM certificate could not be read.
    #[error("invalid root certificate")]
    Certificate(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Build(#[source] reqwest::Error),
    /// A URL is malformed or not allowed (plain `http` to a non-loopback host).
    #[error(transparent)]
    Url(#[from] UrlError),
}

/// Why a URL is refused by [`require_secure_url`]. The URL in each variant is shown without
/// the parts that can carry a credential (user information, query, fragment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all (or a path that does not join onto a base URL).
    #[error("URL not allowed: {url:?} is not a valid URL")]
    Invalid {
        /// The text given, redacted.
        url: String,
        /// The parser's reason.
        #[source]
        source: url::ParseError,
    },
    /// A scheme other than `https` and `http`.
    #[error("URL not allowed: {url:?}: scheme {scheme:?} not allowed")]
    Scheme {
        /// The URL, redacted.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Plain `http` to a host that is not a loopback address.
    #[error("URL not allowed: {url:?}: plain http is only allowed to loopback hosts")]
    NotLoopback {
        /// The URL, redacted.
        url: String,
    },
}

/// Builds a reqwest client: rustls with the platform's roots plus `extra_root_certs_pem`,
/// no redirects, the configured timeouts and idle-connection lifetime.
///
/// ```
/// use std::time::Duration;
/// use diax_sdk::client::{ClientConfig, http_client};
///
/// let client = http_client(&ClientConfig {
///     timeout: Duration::from_secs(5),
///     ..ClientConfig::default()
/// })?;
/// # let _ = client;
/// # Ok::<(), diax_sdk::client::ClientError>(())
/// ```
///
/// # Errors
/// [`ClientError::Certificate`] for unreadable PEM, [`ClientError::Build`] otherwise.
pub fn http_client(config: &ClientConfig) -> Result<Client, ClientError> {
    client_builder(config)?.build().map_err(ClientError::Build)
}

fn client_builder(config: &ClientConfig) -> Result<reqwest::ClientBuilder, ClientError> {
    install_crypto_provider();
    let mut certs = Vec::new();
    for pem in &config.extra_root_certs_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(ClientError::Certificate)?;
        certs.push(cert);
    }
    Ok(Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(config.pool_idle_timeout)
        .user_agent(config.user_agent.clone())
        .tls_certs_merge(certs))
}

/// Parses a URL and requires a secure channel: `https`, or plain `http` only to a loopback
/// host (`localhost`, `127.0.0.0/8`, `::1`).
///
/// ```
/// use diax_sdk::client::{ClientError, UrlError, require_secure_url};
///
/// assert!(require_secure_url("https://broker.example/v1").is_ok());
/// assert!(require_secure_url("http://127.0.0.1:8080/jobs").is_ok());
/// assert!(matches!(
///     require_secure_url("http://broker.example/v1"),
///     Err(ClientError::Url(UrlError::NotLoopback { .. }))
/// ));
/// ```
///
/// # Errors
/// [`ClientError::Url`] saying why.
pub fn require_secure_url(url: &str) -> Result<Url, ClientError> {
    let parsed = Url::parse(url).map_err(|source| UrlError::Invalid {
        url: redact_url(url).into_owned(),
        source,
    })?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(parsed)
            } else {
                Err(UrlError::NotLoopback {
                    url: redact_url(url).into_owned(),
                }
                .into())
            }
        }
        other => Err(UrlError::Scheme {
            url: redact_url(url).into_owned(),
            scheme: other.to_owned(),
        }
        .into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

/// When and how often to retry: the one retry policy of every retry loop in this crate, and
/// the one that durable delivery queues (outboxes) schedule their next attempt with.
///
/// Only transport failures (timeouts, connection failures, broken responses) and the
/// statuses of [`is_retryable_status`](Self::is_retryable_status) (408, 429, 5xx) are worth
/// retrying; any other 4xx is final. The wait before retry `n` is "full jitter": a uniformly
/// random duration between zero and [`backoff(n)`](Self::backoff), which grows from
/// `initial_backoff` by `multiplier` per attempt up to `max_backoff`. A peer's
/// `Retry-After` is honoured up to `max_backoff`.
///
/// ```
/// use std::time::Duration;
/// use diax_sdk::client::RetryPolicy;
///
/// let policy = RetryPolicy {
///     max_attempts: 5,
///     initial_backoff: Duration::from_millis(100),
///     ..RetryPolicy::default()
/// };
/// assert_eq!(policy.backoff(1), Duration::from_millis(100));
/// assert_eq!(policy.backoff(3), Duration::from_millis(400));
/// assert!(policy.delay(3, None) <= Duration::from_millis(400));
/// // Retry-After counts, but never beyond max_backoff (60 s by default).
/// assert_eq!(policy.delay(1, Some(Duration::from_secs(5))), Duration::from_secs(5));
/// assert_eq!(policy.delay(1, Some(Duration::from_secs(600))), Duration::from_secs(60));
/// assert!(RetryPolicy::is_retryable_status(503) && !RetryPolicy::is_retryable_status(404));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1 is always made). Default 8.
    pub max_attempts: u32,
    /// The longest wait before the first retry. Default 500 ms.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, `Retry-After` included. Default 60 s.
    pub max_backoff: Duration,
    /// Growth of the wait per attempt; values below 1 (or not finite) count as 1. Default 2.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The most to wait after `attempt` attempts failed (1 = before the first retry):
    /// `initial_backoff × multiplier^(attempt − 1)`, capped at `max_backoff`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use diax_sdk::client::RetryPolicy;
    ///
    /// let p = RetryPolicy { multiplier: 1.5, ..RetryPolicy::default() };
    /// assert_eq!(p.backoff(2), Duration::from_millis(750));
    /// assert_eq!(p.backoff(100), p.max_backoff);
    /// ```
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exp = i32::try_from(attempt.saturating_sub(1).min(4096)).unwrap_or(4096);
        let secs = self.initial_backoff.as_secs_f64() * multiplier.powi(exp);
        Duration::try_from_secs_f64(secs).map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }

    /// The wait after `attempt` attempts failed: uniformly random in
    /// `0..=`[`backoff(attempt)`](Self::backoff) (full jitter), or the peer's `retry_after`
    /// when that is longer, capped at `max_backoff`.
    ///
    /// A durable queue (an outbox) uses it to schedule its next attempt itself:
    ///
    /// ```
    /// use std::time::Duration;
    /// use diax_sdk::client::RetryPolicy;
    ///
    /// let policy = RetryPolicy { max_attempts: u32::MAX, ..RetryPolicy::default() };
    /// let attempts_so_far = 3;
    /// let wait = policy.delay(attempts_so_far, None);
    /// assert!(wait <= Duration::from_secs(2)); // 500 ms × 2²
    /// ```
    #[must_use]
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.backoff(attempt).mul_f64(rand::random::<f64>());
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.max_backoff)),
            None => jittered,
        }
    }

    /// Whether a response status is worth retrying: 408, 429 and every 5xx.
    #[must_use]
    pub fn is_retryable_status(status: u16) -> bool {
        status == 429 || status == 408 || (500..600).contains(&status)
    }
}

/// Parses a `Retry-After` header given in seconds (HTTP dates are ignored).
///
/// ```
/// use std::time::Duration;
/// use diax_sdk::client::retry_after;
/// use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(retry_after(&headers), None);
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
/// ```
#[must_use]
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------------
// Signed sends
// ---------------------------------------------------------------------------------------------

/// A peer's answer. `Debug` shows the status, the headers, the body's length and its problem
/// document if it is one, never the body itself (a registration answer carries a secret).
#[derive(Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body (at most [`MAX_RESPONSE_BYTES`], or the sender's own limit).
    pub body: Bytes,
}

/// Largest response body read from a peer unless a sender is given another limit.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

impl Response {
    /// Whether the status is 2xx.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as a problem document, when it is one.
    #[must_use]
    pub fn problem(&self) -> Option<Problem> {
        let ct = self.headers.get(CONTENT_TYPE)?.to_str().ok()?;
        if !ct.starts_with(PROBLEM_CONTENT_TYPE) {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// The parse error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The start of the body as text (at most `max` bytes, lossy UTF-8), for messages.
    ///
    /// ```
    /// use diax_sdk::client::Response;
    ///
    /// let resp = Response { status: 502, headers: Default::default(), body: "bad gateway".into() };
    /// assert_eq!(resp.body_start(3), "bad");
    /// ```
    #[must_use]
    pub fn body_start(&self, max: usize) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(max)]).into_owned()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("problem", &self.problem())
            .finish()
    }
}

/// Why a signed send did not get a final answer. Transport failures keep the HTTP client's
/// error as their [`source`](std::error::Error::source); use
/// [`ErrorChain`](crate::util::ErrorChain) to print the whole chain.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diax_sdk::client::{ClientConfig, SendError, SignedSender, http_client};
/// use diax_sdk::util::ErrorChain;
/// use diax_sdk::{KeyId, Keyring, MessageId, Secret};
///
/// let ring = Keyring::single(KeyId::parse("key_1")?, Secret::generate());
/// let sender = SignedSender::new(http_client(&ClientConfig::default())?);
/// // Plain http to a public host is refused before anything is sent.
/// let err = sender
///     .send_once("http://broker.example/events", &MessageId::generate(), "{}", &ring)
///     .await
///     .unwrap_err();
/// assert!(matches!(err, SendError::Url(_)) && !err.is_transient());
/// assert!(ErrorChain(&err).to_string().contains("plain http"));
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The request timed out.
    #[error("request timed out")]
    Timeout(#[source] reqwest::Error),
    /// No connection could be made.
    #[error("could not connect")]
    Connect(#[source] reqwest::Error),
    /// The keyring has no active key.
    #[error("no active key to sign with")]
    NoActiveKey,
    /// The URL is not allowed.
    #[error(transparent)]
    Url(#[from] ClientError),
    /// A [`Fetcher`]'s policy refused the address the host resolved to (final, never retried).
    #[error(transparent)]
    NotAllowed(FetchRefused),
    /// The response body was larger than the sender's limit.
    #[error("response body larger than {limit} bytes")]
    ResponseTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Some other transport failure (the request could not be sent, the response broke off).
    #[error("request failed")]
    Transport(#[source] reqwest::Error),
    /// The peer answered with a status worth retrying (408, 429, 5xx). Only ever the `last`
    /// failure of [`SendError::Exhausted`]; the whole answer is kept.
    #[error("peer answered HTTP {}", .0.status)]
    Status(Box<Response>),
    /// Every attempt failed with a retryable error; the last failure is the source.
    #[error("gave up after {attempts} attempts")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure: a transport error or [`SendError::Status`].
        #[source]
        last: Box<SendError>,
    },
}

impl SendError {
    /// Whether a later attempt could succeed (transport trouble, a retryable status).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_)
                | Self::Connect(_)
                | Self::ResponseTooLarge { .. }
                | Self::Transport(_)
                | Self::Status(_)
        )
    }
}

fn classify(e: reqwest::Error) -> SendError {
    if let Some(refused) = policy::refusal_in(&e) {
        SendError::NotAllowed(refused)
    } else if e.is_timeout() {
        SendError::Timeout(e)
    } else if e.is_connect() {
        SendError::Connect(e)
    } else {
        SendError::Transport(e)
    }
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Response, SendError> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(classify)?;
        if body.len() + chunk.len() > limit {
            return Err(SendError::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// One attempt of a signed send, as [`SignedSender::send_with_hook`] reports it (see its
/// example).
#[derive(Debug)]
#[non_exhaustive]
pub struct Attempt<'a> {
    /// The attempt's number, from 1.
    pub number: u32,
    /// Attempts allowed in all ([`RetryPolicy::max_attempts`], at least 1).
    pub max_attempts: u32,
    /// Where it went.
    pub url: &'a str,
    /// The signature headers it carried: the same `webhook-id` on every attempt, a fresh
    /// timestamp and signature each time.
    pub signed: &'a SignedHeaders,
    /// The peer's answer (any status), or the transport failure.
    pub outcome: Result<&'a Response, &'a SendError>,
    /// The wait before the next attempt, or `None` when this attempt was the last.
    pub retry_in: Option<Duration>,
}

/// Sends signed JSON messages (Standard Webhooks), once or with retries.
///
/// The same type serves the broker (offers, inputs, notifications) and providers (job
/// events): one signing path for every sender. Every attempt is signed afresh, with the
/// time of its [`Clock`] (the system clock unless [`with_clock`](Self::with_clock) says
/// otherwise) and every active key of the keyring, under the same `webhook-id`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diax_sdk::client::{ClientConfig, RetryPolicy, SignedSender, http_client};
/// use diax_sdk::{KeyId, Keyring, MessageId, Secret};
///
/// let ring = Keyring::single(KeyId::parse("key_1")?, Secret::generate());
/// let sender = SignedSender::new(http_client(&ClientConfig::default())?);
/// let answer = sender
///     .send(
///         "https://broker.example/v1/providers/prv_1/events",
///         &MessageId::generate(),
///         br#"{"type":"job.progress"}"#.to_vec(),
///         &ring,
///         &RetryPolicy::default(),
///     )
///     .await?;
/// assert!(answer.is_success() || answer.problem().is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SignedSender {
    client: Client,
    clock: Arc<dyn Clock>,
    max_response_bytes: usize,
}

impl fmt::Debug for SignedSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedSender")
            .field("client", &self.client)
            .field("clock", &self.clock)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl SignedSender {
    /// A sender over `client` (build it with [`http_client`]), signing with the system
    /// clock and reading answers up to [`MAX_RESPONSE_BYTES`].
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self {
            client,
            clock: Arc::new(SystemClock),
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }

    /// Signs with `clock` instead of the system clock: a broker whose clock tests move, or
    /// a test that pins the `webhook-timestamp`. Any `Fn() -> i64` closure is a clock.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicI64, Ordering};
    /// use diax_sdk::client::{ClientConfig, SignedSender, http_client};
    /// use diax_sdk::clock::unix_now;
    ///
    /// let skew = Arc::new(AtomicI64::new(0));
    /// let clock = {
    ///     let skew = Arc::clone(&skew);
    ///     move || unix_now() + skew.load(Ordering::Relaxed)
    /// };
    /// let sender = SignedSender::new(http_client(&ClientConfig::default())?).with_clock(clock);
    /// skew.store(600, Ordering::Relaxed); // every later attempt is signed 10 minutes ahead
    /// # let _ = sender;
    /// # Ok::<(), diax_sdk::client::ClientError>(())
    /// ```
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Reads answers up to `limit` bytes; a longer answer is a
    /// [`SendError::ResponseTooLarge`] (retried like other transport failures).
    ///
    /// ```
    /// use diax_sdk::client::{ClientConfig, SignedSender, http_client};
    ///
    /// let sender = SignedSender::new(http_client(&ClientConfig::default())?)
    ///     .with_max_response_bytes(64 * 1024);
    /// # let _ = sender;
    /// # Ok::<(), diax_sdk::client::ClientError>(())
    /// ```
    #[must_use]
    pub fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The underlying HTTP client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The clock attempts are signed with.
    ///
    /// ```
    /// use diax_sdk::client::{ClientConfig, SignedSender, http_client};
    ///
    /// let sender = SignedSender::new(http_client(&ClientConfig::default())?).with_clock(|| 42);
    /// assert_eq!(sender.clock().now(), 42);
    /// # Ok::<(), diax_sdk::client::ClientError>(())
    /// ```
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// One attempt: signs `body` now with every active key of `keyring` under `id` and
    /// POSTs it as `application/json`.
    ///
    /// # Errors
    /// Transport failures; any HTTP status is an `Ok` [`Response`].
    pub async fn send_once(
        &self,
        url: &str,
        id: &MessageId,
        body: impl Into<Bytes>,
        keyring: &Keyring,
    ) -> Result<Response, SendError> {
        let parsed = require_secure_url(url)?;
        let body: Bytes = body.into();
        let signed = self.sign(id, keyring, &body)?;
        self.post(parsed, &signed, body).await
    }

    /// Sends with retries under `policy`: the same `id` every time, a fresh signature and
    /// timestamp per attempt, retrying only transport failures, 408, 429 and 5xx.
    ///
    /// # Errors
    /// [`SendError::Exhausted`] when every attempt failed retryably; other errors at once.
    pub async fn send(
        &self,
        url: &str,
        id: &MessageId,
        body: impl Into<Bytes>,
        keyring: &Keyring,
        policy: &RetryPolicy,
    ) -> Result<Response, SendError> {
        self.send_with_hook(url, id, body, keyring, policy, |_: &Attempt<'_>| {
            std::future::ready(())
        })
        .await
    }

    /// [`send`](Self::send), calling `on_attempt` after every attempt (before waiting for
    /// the next), with the attempt's number, the headers it carried, its outcome and the
    /// wait before the next one: enough to write each attempt into a message log.
    ///
    /// The hook reads the borrowed [`Attempt`] synchronously and returns a future that the
    /// sender awaits before going on, so it may write to a database (take what it needs
    /// from the attempt first: the future cannot borrow it). Nothing is sent while it runs.
    /// A hook with nothing to await returns `std::future::ready(())`.
    ///
    /// No attempt (and no call) happens when the URL is refused or the keyring has no
    /// active key.
    ///
    /// ```no_run
    /// # async fn demo(sender: diax_sdk::client::SignedSender, ring: diax_sdk::Keyring)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use diax_sdk::MessageId;
    /// use diax_sdk::client::{Attempt, RetryPolicy};
    /// use diax_sdk::util::ErrorChain;
    ///
    /// // Stands for an async message log, e.g. a database table.
    /// let log = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    /// let answer = sender
    ///     .send_with_hook(
    ///         "https://provider.example/diax/jobs",
    ///         &MessageId::generate(),
    ///         br#"{"type":"job.offer"}"#.to_vec(),
    ///         &ring,
    ///         &RetryPolicy::default(),
    ///         |a: &Attempt<'_>| {
    ///             let what = match a.outcome {
    ///                 Ok(r) => format!("answered {}", r.status),
    ///                 Err(e) => ErrorChain(e).to_string(),
    ///             };
    ///             let line = format!("attempt {}/{} at {}: {what}", a.number, a.max_attempts, a.signed.timestamp);
    ///             let log = log.clone();
    ///             async move { log.lock().await.push(line) }
    ///         },
    ///     )
    ///     .await;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_with_hook<H, F>(
        &self,
        url: &str,
        id: &MessageId,
        body: impl Into<Bytes>,
        keyring: &Keyring,
        policy: &RetryPolicy,
        mut on_attempt: H,
    ) -> Result<Response, SendError>
    where
        H: FnMut(&Attempt<'_>) -> F,
        F: Future<Output = ()>,
    {
        let parsed = require_secure_url(url)?;
        let body: Bytes = body.into();
        let max_attempts = policy.max_attempts.max(1);
        let mut number = 0u32;
        loop {
            number += 1;
            let signed = self.sign(id, keyring, &body)?;
            let result = self.post(parsed.clone(), &signed, body.clone()).await;
            let (retryable, hint) = match &result {
                Ok(resp) => (
                    RetryPolicy::is_retryable_status(resp.status),
                    retry_after(&resp.headers),
                ),
                Err(e) => (e.is_transient(), None),
            };
            let retry_in = (retryable && number < max_attempts).then(|| policy.delay(number, hint));
            on_attempt(&Attempt {
                number,
                max_attempts,
                url,
                signed: &signed,
                outcome: result.as_ref(),
                retry_in,
            })
            .await;
            if let Some(wait) = retry_in {
                tokio::time::sleep(wait).await;
                continue;
            }
            return match result {
                Ok(resp) if !retryable => Ok(resp),
                Err(e) if !retryable => Err(e),
                Ok(resp) => Err(SendError::Exhausted {
                    attempts: number,
                    last: Box::new(SendError::Status(Box::new(resp))),
                }),
                Err(e) => Err(SendError::Exhausted {
                    attempts: number,
                    last: Box::new(e),
                }),
            };
        }
    }

    fn sign(
        &self,
        id: &MessageId,
        keyring: &Keyring,
        body: &[u8],
    ) -> Result<SignedHeaders, SendError> {
        keyring
            .sign(id, self.clock.now(), body)
            .map_err(|_| SendError::NoActiveKey)
    }

    async fn post(
        &self,
        url: Url,
        signed: &SignedHeaders,
        body: Bytes,
    ) -> Result<Response, SendError> {
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in signed.pairs() {
            req = req.header(name, value);
        }
        let resp = req.body(body).send().await.map_err(classify)?;
        read_limited(resp, self.max_response_bytes).await
    }
}

// ---------------------------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------------------------

/// Bounds on a download: its size and three clocks, all set by the caller and independent
/// of the client's own request timeout ([`ClientConfig::timeout`] never cuts a download).
///
/// ```
/// use std::time::Duration;
/// use diax_sdk::client::DownloadLimits;
///
/// // A 30 s request timeout elsewhere; a model may take up to 10 minutes to arrive, as long
/// // as bytes keep coming at least every 20 s.
/// let limits = DownloadLimits {
///     timeout: Duration::from_secs(600),
///     idle_timeout: Duration::from_secs(20),
///     ..DownloadLimits::default()
/// };
/// assert_eq!(limits.connect_timeout, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Largest size accepted, whatever the declared size says. Default 256 MiB.
    pub max_bytes: u64,
    /// The total deadline: time for the whole download, from the first connection attempt
    /// to the last byte. Default 5 minutes.
    pub timeout: Duration,
    /// Time to connect and receive the answer's status and headers. Default 30 s.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of the body (a stalled transfer ends after it).
    /// Default 30 s.
    pub idle_timeout: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Which clock of [`DownloadLimits`] ended a download ([`DownloadError::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownloadTimeout {
    /// [`DownloadLimits::connect_timeout`]: no status and headers in time.
    Connect,
    /// [`DownloadLimits::idle_timeout`]: the body stalled.
    Idle,
    /// [`DownloadLimits::timeout`]: the whole download took too long.
    Deadline,
}

impl fmt::Display for DownloadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "no answer within the connect timeout",
            Self::Idle => "no bytes within the idle timeout",
            Self::Deadline => "not complete within the total deadline",
        })
    }
}

/// What was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// Their SHA-256, lowercase hex.
    pub sha256: String,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The URL is not allowed.
    #[error(transparent)]
    Url(#[from] ClientError),
    /// A [`Fetcher`]'s [`FetchPolicy`] refused the URL or the address it resolved to.
    #[error(transparent)]
    NotAllowed(#[from] FetchRefused),
    /// The declared size is above the limit.
    #[error("declared size {declared} exceeds the limit of {limit} bytes")]
    DeclaredTooLarge {
        /// Declared size.
        declared: u64,
        /// Limit.
        limit: u64,
    },
    /// The server refused (any non-200 status), with its problem when it sent one.
    #[error("server answered {status}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem document, if any.
        problem: Option<Box<Problem>>,
    },
    /// More bytes arrived than declared.
    #[error("more than the declared {declared} bytes received")]
    TooLong {
        /// Declared size.
        declared: u64,
    },
    /// Fewer bytes arrived than declared. The message names only the declared size.
    #[error("fewer than the declared {declared} bytes received")]
    TooShort {
        /// Received.
        received: u64,
        /// Declared.
        declared: u64,
    },
    /// The digest does not match. The message names only the declared digest.
    #[error("SHA-256 mismatch: the bytes received do not have the declared digest {expected}")]
    DigestMismatch {
        /// Declared digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// A clock of [`DownloadLimits`] ran out; which one is said.
    #[error("download timed out: {0}")]
    Timeout(DownloadTimeout),
    /// Transport failure. The source is the HTTP client's error, stripped of the URL (which
    /// may carry a credential).
    #[error("transfer failed")]
    Transfer(#[source] reqwest::Error),
    /// Writing the bytes failed.
    #[error("could not write the download")]
    Io(#[from] std::io::Error),
}

impl DownloadError {
    /// Whether retrying later could help (transport trouble or a 5xx/429 answer).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transfer(_) => true,
            Self::Refused { status, .. } => RetryPolicy::is_retryable_status(*status),
            _ => false,
        }
    }
}

/// Streams `download` into `out`, sending its `Authorization`, checking the declared size,
/// `limits.max_bytes` and the SHA-256 as bytes arrive.
///
/// `out` may have received some bytes when an error is returned; use [`download_to_file`]
/// to get an all-or-nothing file.
///
/// # Errors
/// A [`DownloadError`] naming the failed check.
pub async fn download<W: AsyncWrite + Unpin>(
    client: &Client,
    download: &Download,
    out: &mut W,
    limits: &DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    let url = require_secure_url(&download.url)?;
    download_from(client, url, download, out, limits).await
}

/// [`download`] from an already checked `url`, under the total deadline.
async fn download_from<W: AsyncWrite + Unpin>(
    client: &Client,
    url: Url,
    download: &Download,
    out: &mut W,
    limits: &DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    match tokio::time::timeout(
        limits.timeout,
        download_inner(client, url, download, out, limits),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(DownloadError::Timeout(DownloadTimeout::Deadline)),
    }
}

/// A transport error, stripped of its URL; a timeout of the request's own clock (the total
/// deadline, or `phase`'s when it fires first inside the HTTP client) is named as such.
fn transfer_error(e: reqwest::Error, phase: DownloadTimeout) -> DownloadError {
    if let Some(refused) = policy::refusal_in(&e) {
        DownloadError::NotAllowed(refused)
    } else if e.is_timeout() {
        DownloadError::Timeout(phase)
    } else {
        DownloadError::Transfer(e.without_url())
    }
}

async fn download_inner<W: AsyncWrite + Unpin>(
    client: &Client,
    url: Url,
    download: &Download,
    out: &mut W,
    limits: &DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    if download.size > limits.max_bytes {
        return Err(DownloadError::DeclaredTooLarge {
            declared: download.size,
            limit: limits.max_bytes,
        });
    }
    // The request's own timeout replaces the client's whole-request timeout, so only the
    // limits given here bound the download.
    let mut req = client.get(url).timeout(limits.timeout);
    if let Some(auth) = &download.authorization {
        req = req.header(AUTHORIZATION, auth);
    }
    let resp = tokio::time::timeout(limits.connect_timeout, req.send())
        .await
        .map_err(|_| DownloadError::Timeout(DownloadTimeout::Connect))?
        .map_err(|e| transfer_error(e, DownloadTimeout::Connect))?;
    if resp.status().as_u16() != 200 {
        let status = resp.status().as_u16();
        let problem = read_limited(resp, MAX_RESPONSE_BYTES)
            .await
            .ok()
            .and_then(|r| r.problem())
            .map(Box::new);
        return Err(DownloadError::Refused { status, problem });
    }
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut stream = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout(limits.idle_timeout, stream.next())
            .await
            .map_err(|_| DownloadError::Timeout(DownloadTimeout::Idle))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| transfer_error(e, DownloadTimeout::Deadline))?;
        received += chunk.len() as u64;
        if received > download.size {
            return Err(DownloadError::TooLong {
                declared: download.size,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    if received != download.size {
        return Err(DownloadError::TooShort {
            received,
            declared: download.size,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(&download.sha256) {
        return Err(DownloadError::DigestMismatch {
            expected: download.sha256.clone(),
            actual,
        });
    }
    Ok(Downloaded {
        size: received,
        sha256: actual,
    })
}

/// [`download`] into a file at `path`: written to a temporary file beside it and renamed
/// into place only when every check passed; nothing is left behind on error.
///
/// # Errors
/// As [`download`].
pub async fn download_to_file(
    client: &Client,
    dl: &Download,
    path: &Path,
    limits: &DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    let url = require_secure_url(&dl.url)?;
    file_download(path, async |file: &mut tokio::fs::File| {
        download_from(client, url, dl, file, limits).await
    })
    .await
}

/// Runs `fetch` into a temporary file beside `path`, renamed into place on success and
/// removed on error.
async fn file_download(
    path: &Path,
    fetch: impl AsyncFnOnce(&mut tokio::fs::File) -> Result<Downloaded, DownloadError>,
) -> Result<Downloaded, DownloadError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let tmp = path.with_file_name(format!(
        ".{file_name}.{}.part",
        crate::util::random_token("", 8)
    ));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        let got = fetch(&mut file).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await?;
        Ok(got)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Downloads into memory (for small objects), with the same checks as [`download`].
///
/// # Errors
/// As [`download`].
pub async fn download_to_vec(
    client: &Client,
    dl: &Download,
    limits: &DownloadLimits,
) -> Result<Vec<u8>, DownloadError> {
    let mut buf = download_buffer(dl, limits);
    download(client, dl, &mut buf, limits).await?;
    Ok(buf)
}

fn download_buffer(dl: &Download, limits: &DownloadLimits) -> Vec<u8> {
    let cap = usize::try_from(dl.size.min(limits.max_bytes)).unwrap_or(0);
    Vec::with_capacity(cap.min(64 * 1024 * 1024))
}

// ---------------------------------------------------------------------------------------------
// Broker API client (registration, rotation)
// ---------------------------------------------------------------------------------------------

/// Why a call to the broker's API (through [`BrokerClient`]) failed: the broker's refusal,
/// an answer that makes no sense, or a failure to reach it.
///
/// This is the error of a *client* of the broker, not an error a server answers with; a
/// server answers with a [`Problem`], which the [`Problem`](Self::Problem) variant carries
/// back unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerCallError {
    /// The broker answered with a problem document.
    #[error("the broker refused: {0}")]
    Problem(Box<Problem>),
    /// The broker answered with an unexpected status and no problem document; the whole
    /// answer is kept.
    #[error("unexpected HTTP {} from the broker: {}", .0.status, .0.body_start(200))]
    Status(Box<Response>),
    /// A successful answer whose body did not parse; the answer is kept.
    #[error("malformed answer from the broker")]
    Decode {
        /// The parse error.
        #[source]
        source: serde_json::Error,
        /// The answer.
        response: Box<Response>,
    },
    /// Transport failure.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Bad base URL.
    #[error(transparent)]
    Url(#[from] ClientError),
}

/// The broker's API as a provider uses it: registration and secret rotation.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diax_sdk::client::{BrokerCallError, BrokerClient, ClientConfig, http_client};
/// use diax_sdk::wire::{Pricing, RegisterProvider, SecretScope};
/// use diax_sdk::{GroupId, ProblemType, Secret};
///
/// let broker = BrokerClient::new(http_client(&ClientConfig::default())?, "https://broker.example")?;
/// let request = RegisterProvider {
///     group_id: GroupId::parse("grp_1")?,
///     name: "FixMyPrint".into(),
///     service_kind: "model-repair".into(),
///     job_url: "https://fixmyprint.example/diax/jobs".into(),
///     signup_url: "https://fixmyprint.example/v1/accounts".into(),
///     pricing: Pricing::Paid,
///     description: None,
///     secret_scope: SecretScope::Service,
///     signature_scheme: Default::default(), // hmac-sha256; ed25519 also needs public_key
///     public_key: None,
/// };
/// match broker.register_provider("dxk_…", &request).await {
///     Ok(registered) => {
///         // Store it: it is shown once.
///         let secret = Secret::parse(registered.secret.as_deref().unwrap_or_default())?;
///         # let _ = secret;
///     }
///     Err(BrokerCallError::Problem(p)) if p.is(ProblemType::Unauthorized) => {
///         eprintln!("the API key was refused: {p}");
///     }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BrokerClient {
    client: Client,
    base: Url,
}

impl BrokerClient {
    /// A client for the broker at `base_url` (e.g. `https://broker.example`).
    ///
    /// # Errors
    /// [`ClientError::Url`] when the URL is not https (or http to loopback).
    pub fn new(client: Client, base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            client,
            base: require_secure_url(base_url)?,
        })
    }

    fn url(&self, path: &str) -> Result<Url, BrokerCallError> {
        self.base.join(path).map_err(|source| {
            ClientError::Url(UrlError::Invalid {
                url: redact_url(path).into_owned(),
                source,
            })
            .into()
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_key: &str,
        body: &B,
    ) -> Result<T, BrokerCallError> {
        let resp = self
            .client
            .post(self.url(path)?)
            .bearer_auth(api_key)
            .json(body)
            .send()
            .await
            .map_err(classify)?;
        let resp = read_limited(resp, MAX_RESPONSE_BYTES).await?;
        if resp.is_success() {
            return resp.json().map_err(|source| BrokerCallError::Decode {
                source,
                response: Box::new(resp),
            });
        }
        match resp.problem() {
            Some(p) => Err(BrokerCallError::Problem(Box::new(p))),
            None => Err(BrokerCallError::Status(Box::new(resp))),
        }
    }

    /// Registers a provider (`POST /v1/providers`) with a broker user's API key.
    ///
    /// # Errors
    /// [`BrokerCallError::Problem`] with the broker's reason, or a transport error.
    pub async fn register_provider(
        &self,
        api_key: &str,
        request: &RegisterProvider,
    ) -> Result<ProviderRegistered, BrokerCallError> {
        self.post(crate::wire::broker_paths::PROVIDERS, api_key, request)
            .await
    }

    /// Rotates a provider's secret (`POST /v1/providers/{id}/secrets/rotate`).
    ///
    /// # Errors
    /// [`BrokerCallError::Problem`] with the broker's reason, or a transport error.
    pub async fn rotate_secret(
        &self,
        api_key: &str,
        provider: &ProviderId,
        request: &RotateSecret,
    ) -> Result<SecretRotated, BrokerCallError> {
        let path =
            crate::wire::broker_paths::PROVIDER_ROTATE.replace("{provider_id}", provider.as_str());
        self.post(&path, api_key, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 3.0,
            ..RetryPolicy::default()
        };
        let ms = |n| policy.backoff(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4)],
            [100, 100, 300, 900, 1000]
        );
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(1));
        // The defaults: 500 ms doubling to 60 s.
        let d = RetryPolicy::default();
        assert_eq!(d.backoff(2), Duration::from_secs(1));
        assert_eq!(d.backoff(8), Duration::from_secs(60));
        // A multiplier below 1, NaN or infinite never shrinks, panics or overflows.
        for multiplier in [0.5, -2.0, f64::NAN, f64::INFINITY] {
            let odd = RetryPolicy { multiplier, ..d };
            let b = odd.backoff(20);
            assert!(
                b == d.initial_backoff || b == d.max_backoff,
                "{multiplier}: {b:?}"
            );
            let _ = odd.delay(u32::MAX, Some(Duration::MAX));
        }
    }

    #[test]
    fn delay_is_full_jitter_and_honours_retry_after_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
            ..RetryPolicy::default()
        };
        let delays: Vec<Duration> = (0..2000).map(|_| policy.delay(3, None)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter spreads over the whole range, not only its upper half.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(300)));
        let hinted = policy.delay(1, Some(Duration::from_millis(500)));
        assert_eq!(hinted, Duration::from_millis(500));
        let capped = policy.delay(1, Some(Duration::from_secs(3600)));
        assert_eq!(capped, Duration::from_millis(800));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(RetryPolicy::is_retryable_status(s), "{s}");
        }
        for s in [200, 202, 301, 400, 401, 403, 404, 409, 413, 422, 600] {
            assert!(!RetryPolicy::is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn response_debug_never_shows_the_body() {
        let resp = Response {
            status: 201,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#),
        };
        let debug = format!("{resp:?}");
        assert!(!debug.contains("MfKQ9r8"), "{debug}");
        assert!(
            debug.contains("201") && debug.contains("body_len: 51"),
            "{debug}"
        );
        let err = BrokerCallError::Decode {
            source: serde_json::from_slice::<u8>(b"x").expect_err("not json"),
            response: Box::new(resp),
        };
        assert!(!format!("{err:?}").contains("MfKQ9r8"));
    }
}
