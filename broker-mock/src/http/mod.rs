//! The HTTP API: one file per area, each with its own `router()` and OpenAPI `Api`, merged
//! here. Handlers are thin: they parse the request ([`extract`]), call the storage layer
//! (`crate::store`) or a flow (`crate::offers`, `crate::intake`), and map the result to a
//! response ([`respond`]). [`log`] is the middleware that puts every request in the message
//! log; [`openapi`] builds the description of all of it.

pub(crate) mod events;
pub(crate) mod extract;
pub(crate) mod jobs;
pub(crate) mod links;
pub(crate) mod log;
pub(crate) mod messages;
pub(crate) mod models;
pub(crate) mod notifications;
pub(crate) mod openapi;
pub(crate) mod providers;
pub(crate) mod respond;
pub(crate) mod task;
pub(crate) mod users;

use axum::Router;
use http::header;

use crate::state::AppState;

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
            openapi::PATH,
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::to_json(),
                )
            }),
        )
        .fallback(respond::no_route)
        .method_not_allowed_fallback(respond::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log::log_and_count,
        ))
        // Refusals sent before the whole body was read keep the connection reusable.
        .layer(axum::middleware::from_fn(
            diax_sdk::axum_ext::finish_request_body,
        ))
        .with_state(state)
}
