//! HTTP routes: one file per area, each with its own `router()`, merged here over one
//! shared state ([`Service`]). Every error is an `application/problem+json` document,
//! unknown paths and methods included.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use diax_sdk::{Problem, ProblemType, Verifier};
use serde::de::DeserializeOwned;

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
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(service)
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
