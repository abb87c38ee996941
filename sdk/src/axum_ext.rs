//! axum support (feature `axum`): problem responses and the [`Signed`] extractor.
//!
//! The module is called `axum_ext` rather than `axum` so that `use diax_sdk::*;` next to
//! `use axum::…;` never makes a path ambiguous.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::post, http::StatusCode};
//! use diax_sdk::axum_ext::Signed;
//! use diax_sdk::wire::BrokerMessage;
//! use diax_sdk::{KeyId, Keyring, Secret, Verifier};
//!
//! async fn jobs(Signed { message, delivery, .. }: Signed<BrokerMessage>) -> StatusCode {
//!     // Signature, timestamp, size and replay already checked; `message` is parsed.
//!     let _ = (message, delivery);
//!     StatusCode::ACCEPTED
//! }
//!
//! let verifier = Arc::new(Verifier::new(Keyring::single(KeyId::parse("key_1")?, Secret::generate())));
//! let app: Router = Router::new().route("/diax/jobs", post(jobs)).with_state(verifier);
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A server that refuses requests before reading their whole body (413 over a size limit,
//! 401/415 before reading at all) should also add the [`finish_request_body`] middleware, so
//! that HTTP/1.1 clients never reuse a connection the server is about to close.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemType};
use crate::replay::Delivery;
use crate::verify::Verifier;
use crate::webhook::{RawHeaders, Verified};

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.to_json()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        response
    }
}

/// The three `webhook-*` headers of a request, as raw bytes.
#[must_use]
pub fn raw_headers(headers: &HeaderMap) -> RawHeaders<'_> {
    RawHeaders::from_fn(|name| headers.get(name).map(HeaderValue::as_bytes))
}

/// Whether a request's content type is JSON (`application/json` or `application/*+json`,
/// parameters allowed).
#[must_use]
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A verified, parsed signed request.
///
/// Extraction reads the whole body (up to the [`Verifier`]'s `max_body_bytes`), checks the
/// content type, the Standard Webhooks signature, timestamp tolerance and the replay store,
/// and only then deserialises. Refusals are problem responses: 415 `unsupported-media-type`,
/// 413 `payload-too-large`, 400/401 signature problems, 409 `replayed-message`, 400
/// `invalid-request` for JSON that does not match `T`.
///
/// The handler's state must provide an `Arc<Verifier>` through [`FromRef`].
#[derive(Debug)]
pub struct Signed<T> {
    /// The parsed message.
    pub message: T,
    /// Who signed it and when.
    pub verified: Verified,
    /// First delivery or a redelivery of the same message.
    pub delivery: Delivery,
    /// The raw body, as signed.
    pub body: Bytes,
}

impl<S, T> FromRequest<S> for Signed<T>
where
    S: Send + Sync,
    Arc<Verifier>: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let (headers, body) = read_signed_body(&verifier, req).await?;
        let (verified, delivery) = verifier
            .verify(&raw_headers(&headers), &body)
            .await
            .map_err(|e| Problem::from(&e))?;
        let message = parse_message(&body)?;
        Ok(Signed {
            message,
            verified,
            delivery,
            body,
        })
    }
}

/// The checks of [`Signed`] without its replay-store step, at `now`: content type, body
/// size (the verifier's `max_body_bytes`), Standard Webhooks signature and timestamp
/// tolerance. Returns who signed and the raw body, for a receiver that records the message
/// id itself, in the transaction that acts on the message (with
/// [`Verifier::replay_expires_at`]); parse the body with [`parse_message`].
///
/// ```
/// use axum::{body::Body, extract::Request};
/// use diax_sdk::axum_ext::{parse_message, verify_request_at};
/// use diax_sdk::webhook::sign;
/// use diax_sdk::{KeyId, Keyring, Secret, Verifier};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let secret = Secret::generate();
/// let verifier = Verifier::new(Keyring::single(KeyId::parse("key_1").unwrap(), secret.clone()));
/// let (now, body) = (1_700_000_000, br#"{"n":1}"#);
/// let request = Request::post("/offers")
///     .header("content-type", "application/json")
///     .header("webhook-id", "msg_1")
///     .header("webhook-timestamp", now.to_string())
///     .header("webhook-signature", sign(&secret, "msg_1", now, body))
///     .body(Body::from(&body[..]))
///     .unwrap();
/// let (verified, body) = verify_request_at(&verifier, request, now).await.unwrap();
/// assert_eq!(verified.id.as_str(), "msg_1");
/// let value: serde_json::Value = parse_message(&body).unwrap();
/// assert_eq!(value["n"], 1);
/// # });
/// ```
///
/// # Errors
/// The problem to answer: 415 `unsupported-media-type`, 413 `payload-too-large`, 400/401
/// signature problems.
pub async fn verify_request_at(
    verifier: &Verifier,
    req: Request,
    now: i64,
) -> Result<(Verified, Bytes), Problem> {
    let (headers, body) = read_signed_body(verifier, req).await?;
    let verified = verifier
        .verify_signature_at(&raw_headers(&headers), &body, now)
        .map_err(|e| Problem::from(&e))?;
    Ok((verified, body))
}

/// A verified body parsed as `T`.
///
/// ```
/// use diax_sdk::axum_ext::parse_message;
///
/// let problem = parse_message::<u32>(b"\"seven\"").unwrap_err();
/// assert_eq!(problem.status, 400);
/// ```
///
/// # Errors
/// 400 `invalid-request` when the JSON does not match `T`.
#[allow(clippy::result_large_err)] // the problem is the answer, built once per refused request
pub fn parse_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(ProblemType::InvalidRequest)
            .with_detail(format!("body does not match the message schema: {e}"))
    })
}

/// A signed request's headers and whole body, once its content type is JSON and the body
/// is within the verifier's `max_body_bytes`.
async fn read_signed_body(
    verifier: &Verifier,
    req: Request,
) -> Result<(HeaderMap, Bytes), Problem> {
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        return Err(Problem::new(ProblemType::UnsupportedMediaType)
            .with_detail("signed messages must be sent as application/json"));
    }
    let limit = verifier.config().max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(ProblemType::PayloadTooLarge)
            .with_detail(format!("body exceeds {limit} bytes or could not be read"))
    })?;
    Ok((parts.headers, body))
}

/// At most this many unread request-body bytes are read and discarded after a response
/// by [`finish_request_body`]; a longer rest closes the connection instead.
pub const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// At most this long is spent by [`finish_request_body`] reading the unread rest of a request
/// body; a slower client gets its connection closed instead.
pub const DRAIN_MAX_WAIT: Duration = Duration::from_secs(30);

/// How long [`finish_request_body`] keeps reading and discarding a body too long to drain
/// before it closes the connection (a lingering close), so that a client still sending gets
/// the answer before the close, not a connection reset.
pub const LINGER_MAX_WAIT: Duration = Duration::from_secs(30);

/// A client that sends nothing of its body for this long has stopped sending:
/// [`finish_request_body`] stops reading it then (and closes the connection), within
/// [`DRAIN_MAX_WAIT`] or [`LINGER_MAX_WAIT`]. The stop is on silence, not on a total time
/// alone, so that a client still sending on a busy machine is never cut off mid-body (a
/// 20 MiB upload on a loaded 2-core machine once took more than the 5 s total this replaced,
/// and its client saw a reset instead of the `413`).
pub const LINGER_IDLE_WAIT: Duration = Duration::from_secs(5);

/// Middleware that keeps HTTP/1.1 connections safe to reuse when a handler answers without
/// reading the whole request body (a 413 over a size limit, a 401 or 415 before reading).
///
/// Left alone, hyper closes such a connection right after the response, with no
/// `Connection: close` in it, so a pooling client may send its next request into a closed
/// socket (`IncompleteMessage`, connection reset). With this middleware the response goes out
/// at once and the rest of the body is then read and discarded in the background (up to
/// [`DRAIN_MAX_BYTES`], within [`DRAIN_MAX_WAIT`]), so the connection stays usable. When
/// the announced rest is longer than that, the response says `Connection: close`, so that no
/// client reuses the connection, and the body is still read and discarded, while the client
/// keeps sending (a pause of [`LINGER_IDLE_WAIT`] ends it), for up to [`LINGER_MAX_WAIT`]
/// before the close: closing a socket with unread bytes makes the kernel
/// send a reset, which can reach a client still sending its body before it has read the
/// answer, and the client would see a reset instead of the `413`. A client waiting for
/// `100-continue` has sent no body: its connection is closed at once.
/// HTTP/2 requests pass through untouched (streams are reset on their own).
///
/// ```
/// use axum::{Router, routing::post, http::StatusCode};
///
/// let app: Router = Router::new()
///     .route("/upload", post(|| async { StatusCode::PAYLOAD_TOO_LARGE }))
///     .layer(axum::middleware::from_fn(diax_sdk::axum_ext::finish_request_body));
/// # let _ = app;
/// ```
pub async fn finish_request_body(req: Request, next: Next) -> Response {
    if req.version() > Version::HTTP_11 {
        return next.run(req).await;
    }
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = req.into_parts();
    let shared = Arc::new(Mutex::new(body));
    let req = Request::from_parts(parts, Body::new(SharedBody(Arc::clone(&shared))));
    let mut response = next.run(req).await;
    let reusable = match Arc::try_unwrap(shared) {
        // Still held (say, by a task the handler spawned): that holder reads it.
        Err(_) => true,
        Ok(body) => {
            let mut body = body
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let runtime = tokio::runtime::Handle::try_current();
            if body.is_end_stream() {
                true
            } else if expects_continue {
                // Reading would ask the client for a body nobody wants.
                false
            } else if let Ok(runtime) = runtime {
                // hyper keeps reading the body into `body` after the response is written
                // (with `Connection: close` too): drained, the connection serves the next
                // request; too long to drain, it is closed once the client has stopped
                // sending or the lingering time is over.
                let reusable = body.size_hint().lower() <= DRAIN_MAX_BYTES;
                runtime.spawn(async move {
                    if reusable {
                        let _ =
                            tokio::time::timeout(DRAIN_MAX_WAIT, drain(&mut body, DRAIN_MAX_BYTES))
                                .await;
                    } else {
                        let _ =
                            tokio::time::timeout(LINGER_MAX_WAIT, drain(&mut body, u64::MAX)).await;
                    }
                });
                reusable
            } else {
                false
            }
        }
    };
    if !reusable {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads and discards `body` to its end; `false` when it is longer than `max` bytes, fails,
/// or sends nothing for [`LINGER_IDLE_WAIT`].
async fn drain(body: &mut Body, max: u64) -> bool {
    let mut seen: u64 = 0;
    loop {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx));
        let Ok(next) = tokio::time::timeout(LINGER_IDLE_WAIT, next).await else {
            return false;
        };
        match next {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len() as u64);
                    if seen > max {
                        return false;
                    }
                }
            }
        }
    }
}

/// A request body the handler reads while [`finish_request_body`] keeps a share of it,
/// to finish reading it after the response.
struct SharedBody(Arc<Mutex<Body>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let mut body = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::pin::Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .size_hint()
    }
}
