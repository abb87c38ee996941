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

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
        let headers = raw_headers(&parts.headers);
        let (verified, delivery) = verifier
            .verify(&headers, &body)
            .await
            .map_err(|e| Problem::from(&e))?;
        let message = serde_json::from_slice(&body).map_err(|e| {
            Problem::new(ProblemType::InvalidRequest)
                .with_detail(format!("body does not match the message schema: {e}"))
        })?;
        Ok(Signed {
            message,
            verified,
            delivery,
            body,
        })
    }
}
