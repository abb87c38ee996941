//! The middleware around every request: logs it with its outcome in the message log, turns
//! any error body that is not a problem into one, and adds the caller's pending
//! notification count to authenticated answers.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use diax_sdk::wire::PENDING_NOTIFICATIONS_HEADER;
use diax_sdk::{Problem, ProblemType};
use http::{HeaderMap, HeaderValue, header};

use super::extract::{bearer, is_credential};
use super::respond::problem_response;
use crate::outbound::redact_authorization;
use crate::state::AppState;
use crate::store::messages::{self, NewMessage, Note};
use crate::store::{notifications, users};

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
        out.insert("authorization".into(), redact_authorization(&text).into());
    }
    out
}

/// The pending notification count of the owner of API key `key` (`None`: unknown key).
async fn pending_for_key(state: &AppState, key: &str) -> Option<u64> {
    let user = users::by_key(&state.db, key).await.ok()??;
    notifications::pending_count(&state.db, &user).await.ok()
}

/// Logs the request and its outcome, turns any non-problem error body into a problem, and
/// adds the caller's pending notification count to authenticated responses.
pub(crate) async fn log_and_count(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let endpoint = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let headers = logged_headers(req.headers());
    let api_key = bearer(req.headers())
        .filter(|t| !is_credential(t))
        .map(str::to_owned);
    let started = std::time::Instant::now();
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
        let note = resp.extensions().get::<Note>().cloned();
        resp = problem_response(&problem);
        if let Some(note) = note {
            resp.extensions_mut().insert(note);
        }
    }

    if let Some(key) = api_key
        && let Some(count) = pending_for_key(&state, &key).await
        && let Ok(v) = HeaderValue::from_str(&count.to_string())
    {
        resp.headers_mut().insert(PENDING_NOTIFICATIONS_HEADER, v);
    }

    if !(path.starts_with("/v1/messages") || path.starts_with("/inspector")) {
        let note = resp.extensions().get::<Note>().cloned().unwrap_or_default();
        let status = resp.status();
        let verdict = note.verdict.unwrap_or_else(|| {
            if status.is_success() {
                "accepted".into()
            } else {
                "refused".into()
            }
        });
        let mut logged = NewMessage {
            direction: "in",
            method,
            endpoint,
            status: Some(status.as_u16()),
            provider_id: note.provider_id,
            job_id: note.job_id,
            headers,
            verdict,
            reason: note.reason,
            duration_ms: Some(messages::elapsed_ms(started)),
        };
        if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
            logged.headers.insert(
                "answer-content-type".into(),
                String::from_utf8_lossy(ct.as_bytes()).into_owned().into(),
            );
        }
        messages::record(
            &state.db,
            state.cfg.max_log_messages,
            state.clock.now_ms(),
            logged,
        )
        .await;
    }
    resp
}
