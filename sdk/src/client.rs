//! HTTP clients (feature `client`): signed sends with retries, downloads with temporary
//! credentials, and the broker's registration API.
//!
//! Every client built here uses rustls (ring), never follows redirects (a redirect from a
//! peer is answered as the final response), and has timeouts. Call
//! [`install_crypto_provider`] once before building clients ([`http_client`] does it for you).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::ids::{MessageId, ProviderId};
use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::secret::Keyring;
use crate::verify::unix_now;
use crate::wire::{Download, ProviderRegistered, RegisterProvider, RotateSecret, SecretRotated};

pub use reqwest::{Client, Url};

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
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            extra_root_certs_pem: Vec::new(),
            user_agent: concat!("diax-sdk/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Errors of the clients in this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A PEM certificate could not be read.
    #[error("invalid root certificate: {0}")]
    Certificate(String),
    /// The HTTP client could not be built.
    #[error("could not build HTTP client: {0}")]
    Build(String),
    /// A URL is malformed or not allowed (plain `http` to a non-loopback host).
    #[error("URL not allowed: {0}")]
    Url(String),
}

/// Builds a reqwest client: rustls with the platform's roots plus `extra_root_certs_pem`,
/// no redirects, the configured timeouts.
///
/// # Errors
/// [`ClientError::Certificate`] for unreadable PEM, [`ClientError::Build`] otherwise.
pub fn http_client(config: &ClientConfig) -> Result<Client, ClientError> {
    install_crypto_provider();
    let mut certs = Vec::new();
    for pem in &config.extra_root_certs_pem {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| ClientError::Certificate(e.to_string()))?;
        certs.push(cert);
    }
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(config.user_agent.clone())
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// Parses a URL and requires a secure channel: `https`, or plain `http` only to a loopback
/// host (`localhost`, `127.0.0.0/8`, `::1`).
///
/// # Errors
/// [`ClientError::Url`] saying why.
pub fn require_secure_url(url: &str) -> Result<Url, ClientError> {
    let parsed = Url::parse(url).map_err(|e| ClientError::Url(format!("{url:?}: {e}")))?;
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
                Err(ClientError::Url(format!(
                    "{url:?}: plain http is only allowed to loopback hosts"
                )))
            }
        }
        other => Err(ClientError::Url(format!(
            "{url:?}: scheme {other:?} not allowed"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

/// When and how often to retry a delivery. Only timeouts, connection failures, 5xx and 429
/// are retried; other 4xx are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 8.
    pub max_attempts: u32,
    /// Delay before the first retry. Default 500 ms.
    pub initial_backoff: Duration,
    /// Longest delay between attempts. Default 60 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 = the first retry): exponential from
    /// `initial_backoff`, capped at `max_backoff`, with jitter (between half and all of it).
    /// A server's `Retry-After` is honoured when longer (up to one hour).
    #[must_use]
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let jitter: f64 = 0.5 + rand::random::<f64>() * 0.5;
        let with_jitter = base.mul_f64(jitter);
        match retry_after {
            Some(ra) => with_jitter.max(ra.min(Duration::from_secs(3600))),
            None => with_jitter,
        }
    }

    /// Whether a response status is worth retrying.
    #[must_use]
    pub fn is_retryable_status(status: u16) -> bool {
        status == 429 || status == 408 || (500..600).contains(&status)
    }
}

/// Parses a `Retry-After` header given in seconds (HTTP dates are ignored).
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

/// A peer's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Bytes,
}

/// Largest response body read from a peer.
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
}

/// Why a signed send did not get a final answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The request timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No connection could be made.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The keyring has no active key.
    #[error("no active key to sign with")]
    NoActiveKey,
    /// The URL is not allowed.
    #[error(transparent)]
    Url(#[from] ClientError),
    /// The response was larger than [`MAX_RESPONSE_BYTES`] or broke off.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// Some other transport failure.
    #[error("request failed: {0}")]
    Other(String),
    /// Every attempt failed with a retryable error; the last one is given.
    #[error("gave up after {attempts} attempts; last: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure (a transport error or a retryable status).
        last: String,
    },
}

impl SendError {
    /// Whether a later attempt could succeed (transport trouble).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Connect(_) | Self::BadResponse(_) | Self::Other(_)
        )
    }
}

fn classify(e: &reqwest::Error) -> SendError {
    if e.is_timeout() {
        SendError::Timeout(e.to_string())
    } else if e.is_connect() {
        SendError::Connect(e.to_string())
    } else {
        SendError::Other(e.to_string())
    }
}

async fn read_limited(resp: reqwest::Response) -> Result<Response, SendError> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| classify(&e))?;
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(SendError::BadResponse("response body too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// Sends signed JSON messages (Standard Webhooks), once or with retries.
///
/// The same type serves the broker (offers, inputs, notifications) and providers (job
/// events): one signing path for every sender.
#[derive(Debug, Clone)]
pub struct SignedSender {
    client: Client,
}

impl SignedSender {
    /// A sender over `client` (build it with [`http_client`]).
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The underlying HTTP client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
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
        let url = require_secure_url(url)?;
        let body: Bytes = body.into();
        let signed = keyring
            .sign(id, unix_now(), &body)
            .map_err(|_| SendError::NoActiveKey)?;
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in signed.pairs() {
            req = req.header(name, value);
        }
        let resp = req.body(body).send().await.map_err(|e| classify(&e))?;
        read_limited(resp).await
    }

    /// Sends with retries under `policy`: the same `id` every time, a fresh signature and
    /// timestamp per attempt, retrying only transport failures, 408, 429 and 5xx.
    ///
    /// # Errors
    /// [`SendError::Exhausted`] when every attempt failed retryably; non-transient errors
    /// at once.
    pub async fn send(
        &self,
        url: &str,
        id: &MessageId,
        body: impl Into<Bytes>,
        keyring: &Keyring,
        policy: &RetryPolicy,
    ) -> Result<Response, SendError> {
        let body: Bytes = body.into();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (last, wait_hint) = match self.send_once(url, id, body.clone(), keyring).await {
                Ok(resp) if !RetryPolicy::is_retryable_status(resp.status) => return Ok(resp),
                Ok(resp) => (format!("HTTP {}", resp.status), retry_after(&resp.headers)),
                Err(e) if e.is_transient() => (e.to_string(), None),
                Err(e) => return Err(e),
            };
            if attempt >= policy.max_attempts.max(1) {
                return Err(SendError::Exhausted {
                    attempts: attempt,
                    last,
                });
            }
            tokio::time::sleep(policy.delay(attempt, wait_hint)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------------------------

/// Bounds on a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Largest size accepted, whatever the declared size says. Default 256 MiB.
    pub max_bytes: u64,
    /// Time for the whole download. Default 5 minutes.
    pub timeout: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            timeout: Duration::from_secs(300),
        }
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
    /// Fewer bytes arrived than declared.
    #[error("received {received} bytes; {declared} declared")]
    TooShort {
        /// Received.
        received: u64,
        /// Declared.
        declared: u64,
    },
    /// The digest does not match.
    #[error("SHA-256 mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Declared digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// The whole download took longer than allowed.
    #[error("download timed out")]
    Timeout,
    /// Transport failure.
    #[error("transfer failed: {0}")]
    Transfer(String),
    /// Writing the bytes failed.
    #[error("could not write: {0}")]
    Io(#[from] std::io::Error),
}

impl DownloadError {
    /// Whether retrying later could help (transport trouble or a 5xx/429 answer).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout | Self::Transfer(_) => true,
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
    match tokio::time::timeout(
        limits.timeout,
        download_inner(client, download, out, limits),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(DownloadError::Timeout),
    }
}

async fn download_inner<W: AsyncWrite + Unpin>(
    client: &Client,
    download: &Download,
    out: &mut W,
    limits: &DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    let url = require_secure_url(&download.url)?;
    if download.size > limits.max_bytes {
        return Err(DownloadError::DeclaredTooLarge {
            declared: download.size,
            limit: limits.max_bytes,
        });
    }
    let mut req = client.get(url);
    if let Some(auth) = &download.authorization {
        req = req.header(AUTHORIZATION, auth);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| DownloadError::Transfer(e.to_string()))?;
    if resp.status().as_u16() != 200 {
        let status = resp.status().as_u16();
        let problem = read_limited(resp)
            .await
            .ok()
            .and_then(|r| r.problem())
            .map(Box::new);
        return Err(DownloadError::Refused { status, problem });
    }
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DownloadError::Transfer(e.to_string()))?;
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
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let tmp = path.with_file_name(format!(".{file_name}.{}.part", crate::random_token("", 8)));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        let got = download(client, dl, &mut file, limits).await?;
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
    let cap = usize::try_from(dl.size.min(limits.max_bytes)).unwrap_or(0);
    let mut buf = Vec::with_capacity(cap.min(64 * 1024 * 1024));
    download(client, dl, &mut buf, limits).await?;
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Broker API client (registration, rotation)
// ---------------------------------------------------------------------------------------------

/// Why a broker API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The broker answered with a problem document.
    #[error("broker refused: {0}")]
    Problem(Box<Problem>),
    /// The broker answered with an unexpected status and no problem document.
    #[error("unexpected HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer did not parse.
    #[error("malformed answer: {0}")]
    Decode(String),
    /// Transport failure.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Bad base URL.
    #[error(transparent)]
    Url(#[from] ClientError),
}

/// The broker's API as a provider uses it: registration and secret rotation.
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

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base
            .join(path)
            .map_err(|e| ApiError::Url(ClientError::Url(e.to_string())))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        api_key: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let resp = self
            .client
            .post(self.url(path)?)
            .bearer_auth(api_key)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Send(classify(&e)))?;
        let resp = read_limited(resp).await?;
        if resp.is_success() {
            return resp.json().map_err(|e| ApiError::Decode(e.to_string()));
        }
        match resp.problem() {
            Some(p) => Err(ApiError::Problem(Box::new(p))),
            None => Err(ApiError::Status {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned(),
            }),
        }
    }

    /// Registers a provider (`POST /v1/providers`) with a broker user's API key.
    ///
    /// # Errors
    /// [`ApiError::Problem`] with the broker's reason, or a transport error.
    pub async fn register_provider(
        &self,
        api_key: &str,
        request: &RegisterProvider,
    ) -> Result<ProviderRegistered, ApiError> {
        self.post(crate::wire::broker_paths::PROVIDERS, api_key, request)
            .await
    }

    /// Rotates a provider's secret (`POST /v1/providers/{id}/secrets/rotate`).
    ///
    /// # Errors
    /// [`ApiError::Problem`] with the broker's reason, or a transport error.
    pub async fn rotate_secret(
        &self,
        api_key: &str,
        provider: &ProviderId,
        request: &RotateSecret,
    ) -> Result<SecretRotated, ApiError> {
        let path =
            crate::wire::broker_paths::PROVIDER_ROTATE.replace("{provider_id}", provider.as_str());
        self.post(&path, api_key, request).await
    }
}
