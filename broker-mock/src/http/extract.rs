//! What handlers take from a request: the authenticated user, a checked JSON body, a
//! size-limited raw body, ids from the path.

use axum::extract::{FromRequest, FromRequestParts, Request};
use diax_sdk::UserId;
use http::request::Parts;
use http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::models::CREDENTIAL_PREFIX;
use crate::store::users;

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether a bearer token is a temporary credential rather than an API key.
pub(crate) fn is_credential(token: &str) -> bool {
    token.starts_with(CREDENTIAL_PREFIX)
}

/// The authenticated broker user (`Authorization: Bearer <api key>`).
#[derive(Debug, Clone)]
pub(crate) struct AuthUser {
    pub(crate) id: UserId,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(key) = bearer(&parts.headers) else {
            return Err(ApiError::Unauthorized(
                "send your API key as `Authorization: Bearer <key>`",
            ));
        };
        if is_credential(key) {
            return Err(ApiError::Unauthorized(
                "a temporary credential only opens its model content URL",
            ));
        }
        match users::by_key(&state.db, key).await? {
            Some(id) => Ok(Self { id }),
            None => Err(ApiError::Unauthorized("unknown API key")),
        }
    }
}

/// Checks that the request's content type is `application/json` (parameters allowed).
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if ct.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "missing content-type; send application/json".into(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "content-type {ct:?} is not application/json"
        )))
    }
}

/// Reads a request body of at most `limit` bytes.
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body larger than {limit} bytes"));
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large())
}

/// Reads a model upload of at most `limit` bytes into one buffer: of the `announced` size
/// when there is one (the caller has refused one over `limit`), else grown up to `limit`
/// and never past it. A body read whole thus takes about its own size in memory, which is
/// what the model budget reserved for it, not up to twice that as a doubling buffer would.
pub(crate) async fn read_model_body(
    req: Request,
    limit: usize,
    announced: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt as _;
    let too_large = || ApiError::PayloadTooLarge(format!("body larger than {limit} bytes"));
    let first = announced.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let mut buf = Vec::with_capacity(first);
    let mut body = req.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidRequest(format!("the body broke off: {e}")))?;
        let needed = buf.len().saturating_add(chunk.len());
        if needed > limit {
            return Err(too_large());
        }
        if needed > buf.capacity() {
            let grown = buf.capacity().saturating_mul(2).max(needed).min(limit);
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A JSON body: content type checked (415), size limited (413), parsed (400).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let body = read_body(req, state.cfg.max_body_bytes).await?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidRequest(format!("malformed JSON body: {e}")))
    }
}

/// Parses an id from a path segment; a malformed id is `400 invalid-request` (PROTOCOL §1).
pub(crate) fn path_id<T: std::str::FromStr>(what: &str, raw: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e| ApiError::InvalidRequest(format!("malformed {what} id in the path: {e}")))
}
