//! The OpenAPI description of the broker mock's HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the SDK's wire types.
//!
//! Served at `GET /openapi.json`, printed by `broker-mock openapi`, and checked in as
//! `docs/openapi/broker-mock.json` (a test fails when that copy is stale; regenerate it with
//! `cargo run -p broker-mock -- openapi > docs/openapi/broker-mock.json`).
//!
//! Responses every operation of a kind shares are added here rather than on each handler:
//! `500 internal` everywhere; `400 invalid-request`, `413 payload-too-large` and
//! `415 unsupported-media-type` on every JSON body; `401 unauthorized` and the
//! `diax-pending-notifications` header on every operation authenticated by an API key.

use std::sync::LazyLock;

use diax_sdk::Problem;
use diax_sdk::openapi::SharedProblems;
use diax_sdk::wire::PENDING_NOTIFICATIONS_HEADER;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, OpenApi, RefOr};

use super::{events, jobs, links, messages, models, notifications, providers, users};

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "3DIAX broker mock",
        description = "A faithful stand-in for the 3DIAX broker: users, groups, provider \
registration and secrets, the public registry, the model repository, jobs offered to \
providers (signed), account links, signed provider events and user notifications. The \
normative protocol is `docs/PROTOCOL.md`; every error is an RFC 9457 problem document \
(`application/problem+json`) with a type from its §2."
    ),
    tags(
        (name = "users", description = "Users and groups (PROTOCOL §4)"),
        (name = "providers", description = "Provider registration, secret rotation and the public registry (§5.1, §6)"),
        (name = "models", description = "The model repository and temporary credentials (§5.5)"),
        (name = "jobs", description = "Jobs offered to providers (§5.2, §5.3)"),
        (name = "links", description = "Account links with provider link tokens (§5.4)"),
        (name = "events", description = "Signed job events from providers (§5.6)"),
        (name = "notifications", description = "User notifications (§5.7)"),
        (name = "messages", description = "The message log and inspector (development tools)"),
        (name = "meta", description = "This document"),
    ),
    paths(openapi_json),
    components(schemas(Problem))
)]
struct BrokerApi;

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI description of this server", content_type = "application/json", body = Object))
)]
#[allow(dead_code)] // the route is served by `super::router`; this only carries the annotation
fn openapi_json() {}

/// The OpenAPI document of the broker mock.
#[must_use]
pub fn document() -> OpenApi {
    let mut doc = BrokerApi::openapi();
    for area in [
        users::Api::openapi(),
        providers::Api::openapi(),
        models::Api::openapi(),
        jobs::Api::openapi(),
        links::Api::openapi(),
        events::Api::openapi(),
        notifications::Api::openapi(),
        messages::Api::openapi(),
    ] {
        doc.merge(area);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A broker user's API key (`bk_…`)"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "temporary_credential",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A temporary credential (`tc_…`) from a `job.input`: GET of one model version only",
                ))
                .build(),
        ),
    );
    add_shared_responses(&mut doc);
    doc
}

/// The document as pretty JSON with every object's keys sorted, ending with a newline: the
/// exact text of `docs/openapi/broker-mock.json`.
#[must_use]
pub fn to_json() -> String {
    static JSON: LazyLock<String> =
        LazyLock::new(|| diax_sdk::openapi::to_sorted_json(&document()));
    JSON.clone()
}

/// Adds the responses and headers shared by every operation of a kind (see the module docs).
fn add_shared_responses(doc: &mut OpenApi) {
    diax_sdk::openapi::add_shared_problem_responses(
        doc,
        &SharedProblems {
            payload_too_large: "`payload-too-large`: the body is larger than the broker accepts",
            internal: "`internal`: unexpected error; details only in the broker's log",
        },
    );
    for op in diax_sdk::openapi::operations_mut(doc) {
        if !diax_sdk::openapi::requires_scheme(op, "api_key") {
            continue;
        }
        for response in op.responses.responses.values_mut() {
            if let RefOr::T(r) = response {
                r.headers.insert(
                    PENDING_NOTIFICATIONS_HEADER.to_owned(),
                    HeaderBuilder::new()
                        .schema(Some(<u64 as utoipa::PartialSchema>::schema()))
                        .description(Some("The caller's pending notification count"))
                        .build()
                        .into(),
                );
            }
        }
    }
}
