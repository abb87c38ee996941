//! The HTTP API: one file per area, merged here; extractors shared by all handlers; the
//! middleware that logs every request and adds the pending-notification count.

pub(crate) mod events;
pub(crate) mod jobs;
pub(crate) mod links;
pub(crate) mod messages;
pub(crate) mod models;
pub(crate) mod notifications;
pub(crate) mod providers;
pub(crate) mod users;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use diax_sdk::wire::PENDING_NOTIFICATIONS_HEADER;
use diax_sdk::{Problem, ProblemType, UserId};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use serde::de::DeserializeOwned;

pub use messages::{LoggedMessage, MessageList};

use crate::AppState;
use crate::error::{ApiError, problem_response};

/// What a handler tells the message log about a request beyond its status: set as a
/// response extension.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogNote {
    pub(crate) verdict: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) provider_id: Option<String>,
    pub(crate) job_id: Option<String>,
}

/// The whole application router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .merge(users::router())
        .merge(providers::router())
        .merge(models::router())
        .merge(jobs::router())
        .merge(links::router())
        .merge(events::router())
        .merge(notifications::router())
        .merge(messages::router())
        .route(
            crate::openapi::PATH,
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    crate::openapi::to_json(),
                )
            }),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_and_count,
        ))
        .with_state(state)
}

async fn no_route(req: Request) -> ApiError {
    ApiError::NoRoute(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}

/// Headers worth keeping in the message log (credentials redacted).
fn logged_headers(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    const KEEP: &[&str] = &[
        "content-type",
        "content-length",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    ];
    let mut out = serde_json::Map::new();
    for name in KEEP {
        if let Some(v) = headers.get(*name) {
            out.insert(
                (*name).to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            );
        }
    }
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let text = String::from_utf8_lossy(v.as_bytes());
        out.insert(
            "authorization".into(),
            crate::outbound::redact_authorization(&text).into(),
        );
    }
    out
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Logs the request and its outcome, turns any non-problem error body into a problem, and
/// adds the caller's pending notification count to authenticated responses.
async fn log_and_count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let endpoint = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let headers = logged_headers(req.headers());
    let api_key = bearer(req.headers())
        .filter(|t| !t.starts_with(models::CREDENTIAL_PREFIX))
        .map(str::to_owned);
    let mut resp = next.run(req).await;

    // Safety net: every error is a problem document, whatever produced it.
    let status = resp.status();
    let is_problem = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(diax_sdk::PROBLEM_CONTENT_TYPE.as_bytes())
    });
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let kind = match status.as_u16() {
            400 | 422 => ProblemType::InvalidRequest,
            401 => ProblemType::Unauthorized,
            403 => ProblemType::Forbidden,
            404 => ProblemType::NotFound,
            405 => ProblemType::MethodNotAllowed,
            409 => ProblemType::Conflict,
            413 => ProblemType::PayloadTooLarge,
            415 => ProblemType::UnsupportedMediaType,
            429 => ProblemType::RateLimited,
            503 => ProblemType::ServiceUnavailable,
            _ => ProblemType::Internal,
        };
        let body = axum::body::to_bytes(std::mem::take(resp.body_mut()), 4096)
            .await
            .unwrap_or_default();
        let mut problem = Problem::new(kind);
        if !body.is_empty() {
            problem = problem.with_detail(String::from_utf8_lossy(&body).into_owned());
        }
        problem.status = status.as_u16();
        let note = resp.extensions().get::<LogNote>().cloned();
        resp = problem_response(&problem);
        if let Some(note) = note {
            resp.extensions_mut().insert(note);
        }
    }

    if let Some(key) = api_key
        && let Ok(Some(count)) = users::pending_count_for_key(&state, &key).await
        && let Ok(v) = HeaderValue::from_str(&count.to_string())
    {
        resp.headers_mut().insert(PENDING_NOTIFICATIONS_HEADER, v);
    }

    if !(path.starts_with("/v1/messages") || path.starts_with("/inspector")) {
        let note = resp
            .extensions()
            .get::<LogNote>()
            .cloned()
            .unwrap_or_default();
        let status = resp.status();
        let verdict = note.verdict.unwrap_or_else(|| {
            if status.is_success() {
                "accepted".into()
            } else {
                "refused".into()
            }
        });
        let mut logged = messages::NewMessage {
            direction: "in",
            method,
            endpoint,
            status: Some(status.as_u16()),
            provider_id: note.provider_id,
            job_id: note.job_id,
            headers,
            verdict,
            reason: note.reason,
        };
        if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
            logged.headers.insert(
                "answer-content-type".into(),
                String::from_utf8_lossy(ct.as_bytes()).into_owned().into(),
            );
        }
        messages::record(&state, logged).await;
    }
    resp
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
        if key.starts_with(models::CREDENTIAL_PREFIX) {
            return Err(ApiError::Unauthorized(
                "a temporary credential only opens its model content URL",
            ));
        }
        match users::user_by_key(state, key).await? {
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

/// A JSON answer with a status.
pub(crate) fn json<T: serde::Serialize>(status: http::StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Checks a display name: 1–100 characters, no control characters.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n == 0 || n > 100 || name.chars().any(char::is_control) || name.trim().is_empty() {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must be 1 to 100 printable characters"
        )));
    }
    Ok(())
}

/// Parses an id from a path segment; a malformed id is `400 invalid-request` (PROTOCOL §1).
pub(crate) fn path_id<T: std::str::FromStr>(what: &str, raw: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e| ApiError::InvalidRequest(format!("malformed {what} id in the path: {e}")))
}
