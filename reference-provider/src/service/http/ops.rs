//! `/healthz` (the process answers) and `/readyz` (the database answers too).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use diax_sdk::{Problem, ProblemType};

use crate::service::Service;

/// OpenAPI description of the health routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz))]
pub(crate) struct Api;

/// Health routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Liveness
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process answers", body = Object, example = json!({"status": "ok"})))
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "The database answers too", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "`service-unavailable`: the database is not reachable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(service): State<Service>) -> Response {
    match service.db().ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Problem::new(ProblemType::ServiceUnavailable)
                .with_detail("the database is not reachable")
                .into_response()
        }
    }
}
