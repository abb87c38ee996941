//! HTTP routes: one file per area, each with its own `router()`, merged here over one
//! shared state ([`Service`]). Every error is an `application/problem+json` document,
//! unknown paths and methods included.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use diax_sdk::{Problem, ProblemType, Verifier};
use serde::de::DeserializeOwned;
use tower_http::classify::ServerErrorsFailureClass;

use super::Service;
use super::accounts::{self, Account};
use super::error::ApiError;

pub mod accounts_routes;
pub mod jobs;
pub mod openapi;
pub mod ops;
pub mod results;

impl FromRef<Service> for Arc<Verifier> {
    fn from_ref(service: &Service) -> Self {
        Arc::clone(service.verifier())
    }
}

/// The whole application.
pub fn router(service: Service) -> Router {
    Router::new()
        .merge(accounts_routes::router())
        .merge(jobs::router())
        .merge(results::router())
        .merge(ops::router())
        .route(
            openapi::PATH,
            axum::routing::get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    openapi::to_json(),
                )
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Refusals sent before the whole body was read keep the connection reusable.
        .layer(axum::middleware::from_fn(
            diax_sdk::axum_ext::finish_request_body,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(log_failure))
        .with_state(service)
}

/// Whether a failed request is worth an ERROR line. A 503 is the normal answer before the
/// provider is registered (and while the database is unreachable, which `/readyz` reports):
/// a warning. Unexpected errors are also logged at ERROR where they happen (`ApiError`).
fn failure_is_error(class: &ServerErrorsFailureClass) -> bool {
    !matches!(class, ServerErrorsFailureClass::StatusCode(s) if *s == http::StatusCode::SERVICE_UNAVAILABLE)
}

fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_millis();
    if failure_is_error(&class) {
        tracing::error!(classification = %class, latency_ms, "response failed");
    } else {
        tracing::warn!(classification = %class, latency_ms, "response failed");
    }
}

async fn not_found() -> Response {
    Problem::new(ProblemType::NotFound)
        .with_detail("no such resource")
        .into_response()
}

async fn method_not_allowed() -> Response {
    Problem::new(ProblemType::MethodNotAllowed)
        .with_detail("this resource does not support this method")
        .into_response()
}

/// A JSON request body: 415 unless `application/json`, 413 over the configured limit,
/// 400 when it does not parse into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Service> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Service) -> Result<Self, ApiError> {
        if !diax_sdk::axum_ext::is_json(req.headers()) {
            return Err(Problem::new(ProblemType::UnsupportedMediaType)
                .with_detail("send the body as application/json")
                .into());
        }
        let limit = state.config().max_body_bytes;
        let body =
            axum::body::to_bytes(req.into_body(), limit)
                .await
                .map_err(|_| {
                    ApiError::Problem(Problem::new(ProblemType::PayloadTooLarge).with_detail(
                        format!("the body exceeds {limit} bytes or could not be read"),
                    ))
                })?;
        serde_json::from_slice(&body)
            .map(ApiJson)
            .map_err(|e| ApiError::Invalid(format!("malformed JSON body: {e}")))
    }
}

/// The account owning the request's `Authorization: Bearer <api key>`.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Account);

impl FromRequestParts<Service> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Service) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or(ApiError::Unauthorized(
            "send your account's API key as Authorization: Bearer <key>",
        ))?;
        accounts::authenticate(state.db(), key)
            .await?
            .map(Authenticated)
            .ok_or(ApiError::Unauthorized("unknown API key"))
    }
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use tower_http::classify::ServerErrorsFailureClass as Class;

    #[test]
    fn a_503_is_not_logged_as_an_error_other_failures_are() {
        use http::StatusCode as S;
        assert!(!super::failure_is_error(&Class::StatusCode(
            S::SERVICE_UNAVAILABLE
        )));
        for s in [S::INTERNAL_SERVER_ERROR, S::BAD_GATEWAY, S::GATEWAY_TIMEOUT] {
            assert!(super::failure_is_error(&Class::StatusCode(s)), "{s}");
        }
        assert!(super::failure_is_error(&Class::Error("broken".into())));
    }
}
