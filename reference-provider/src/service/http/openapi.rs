//! The OpenAPI description of FixMyPrint's HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations, the SDK's wire types and the account types.
//!
//! Served at `GET /openapi.json`, printed by `fixmyprint openapi`, and checked in as
//! `docs/openapi/fixmyprint.json` (a test fails when that copy is stale; regenerate it with
//! `cargo run -p fixmyprint -- openapi > docs/openapi/fixmyprint.json`).
//!
//! Responses every operation of a kind shares are added here rather than on each handler:
//! `500 internal` everywhere; `400 invalid-request`, `413 payload-too-large` and
//! `415 unsupported-media-type` on every JSON body; `401 unauthorized` on every operation
//! authenticated by an API key.

use std::sync::LazyLock;

use diax_sdk::Problem;
use diax_sdk::openapi::SharedProblems;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "FixMyPrint",
        description = "The reference 3DIAX provider: it repairs STL models for the users of a \
3DIAX broker. Users open an account, top it up and ask for link tokens (`/v1/accounts…`); the \
broker POSTs signed job offers and inputs to `/diax/jobs` and fetches results from \
`/results/…`. The protocol is `docs/PROTOCOL.md`, the service `docs/FIXMYPRINT.md`; every \
error is an RFC 9457 problem document (`application/problem+json`). Money is integer minor \
units of the account currency."
    ),
    tags(
        (name = "accounts", description = "The provider's own API for its users: accounts, balance, ledger, top-up, link tokens"),
        (name = "broker", description = "Broker-facing endpoints: signed messages (`job_url`), job status (`status_url`), results"),
        (name = "operator", description = "The operator's own calls: crediting accounts from a payment system"),
        (name = "ops", description = "Health and readiness"),
        (name = "meta", description = "This document"),
    ),
    paths(openapi_json),
    components(schemas(Problem))
)]
struct FixMyPrintApi;

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI description of this server", content_type = "application/json", body = Object))
)]
#[allow(dead_code)] // the route is served by `http::router`; this only carries the annotation
fn openapi_json() {}

/// The OpenAPI document of FixMyPrint.
#[must_use]
pub fn document() -> OpenApi {
    let mut doc = FixMyPrintApi::openapi();
    for area in [
        super::accounts_routes::Api::openapi(),
        super::jobs::Api::openapi(),
        super::results::Api::openapi(),
        super::ops::Api::openapi(),
    ] {
        doc.merge(area);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An account's API key (`fmp_…`), from `POST /v1/accounts`",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "operator_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The operator's key (`--operator-key`): credits accounts; never given to users",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "result_credential",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A result credential (`rc_…`) from a `job.completed` event: GET/HEAD of one result only",
                ))
                .build(),
        ),
    );
    add_shared_responses(&mut doc);
    doc
}

/// The document as pretty JSON with every object's keys sorted, ending with a newline: the
/// exact text of `docs/openapi/fixmyprint.json`.
#[must_use]
pub fn to_json() -> String {
    static JSON: LazyLock<String> =
        LazyLock::new(|| diax_sdk::openapi::to_sorted_json(&document()));
    JSON.clone()
}

/// Adds the responses shared by every operation of a kind (see the module docs).
fn add_shared_responses(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        // One handler serves GET and HEAD; operation ids must stay unique.
        if let Some(head) = item.head.as_mut()
            && let Some(id) = head.operation_id.take()
        {
            head.operation_id = Some(format!("{id}_head"));
        }
    }
    diax_sdk::openapi::add_shared_problem_responses(
        doc,
        &SharedProblems {
            payload_too_large: "`payload-too-large`: the body is larger than `max_body_bytes`",
            internal: "`internal`: unexpected error; details only in the server's log",
        },
    );
}
