//! The OpenAPI description of the broker mock's HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the SDK's wire types (built in the HTTP layer, next to
//! the handlers it describes).
//!
//! Served at `GET /openapi.json`, printed by `broker-mock openapi`, and checked in as
//! `docs/openapi/broker-mock.json` (a test fails when that copy is stale; regenerate it with
//! `cargo run -p broker-mock -- openapi > docs/openapi/broker-mock.json`).

pub use crate::http::openapi::{PATH, document, to_json};
