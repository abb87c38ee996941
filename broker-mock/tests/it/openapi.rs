//! The OpenAPI description: the checked-in copy is current, the server serves the same
//! document, and every route the router serves is documented (and every documented
//! operation is routed).

use std::path::PathBuf;

use diax_sdk::client::{ClientConfig, http_client};
use diax_sdk::openapi as openapi_checks;
use serde_json::Value;

const CHECKED_IN: &str = "docs/openapi/broker-mock.json";
const REGENERATE: &str = "cargo run -p broker-mock -- openapi > docs/openapi/broker-mock.json";

/// Every (method, path) the broker's router serves. A new route must be added here and
/// annotated with `#[utoipa::path]`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/users"),
    ("get", "/v1/me"),
    ("post", "/v1/groups"),
    ("get", "/v1/groups/{group_id}"),
    ("post", "/v1/groups/{group_id}/members"),
    ("post", "/v1/providers"),
    ("post", "/v1/providers/{provider_id}/secrets/rotate"),
    ("post", "/v1/providers/{provider_id}/events"),
    ("get", "/v1/registry"),
    ("post", "/v1/models"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{model_id}"),
    ("get", "/v1/models/{model_id}/versions/{version}/content"),
    ("get", "/v1/models/{model_id}/versions/{version}/report"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("post", "/v1/jobs/{job_id}/retry"),
    ("post", "/v1/links"),
    ("get", "/v1/links"),
    ("get", "/v1/notifications"),
    ("post", "/v1/notifications/ack"),
    ("get", "/v1/messages"),
    ("get", "/inspector"),
    ("get", "/inspector/jobs/{job_id}"),
    ("get", "/openapi.json"),
];

#[test]
fn checked_in_document_is_current() {
    let generated = broker_mock::openapi::to_json();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHECKED_IN);
    if let Err(stale) = openapi_checks::check_checked_in(&path, &generated, REGENERATE) {
        panic!("{stale}");
    }
}

#[test]
fn document_is_well_formed() {
    let doc: Value = serde_json::from_str(&broker_mock::openapi::to_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "3DIAX broker mock");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["temporary_credential"]["scheme"], "bearer");

    // Ids, summaries, tags, path parameters, problem responses and the Problem schema,
    // 500s and 401s.
    let findings = openapi_checks::lint(&doc);
    assert!(findings.is_empty(), "{}", findings.join("\n"));

    // Signed endpoints document the Standard Webhooks headers.
    let signed = openapi_checks::check_signed(
        &doc,
        "post",
        "/v1/providers/{provider_id}/events",
        "#/components/schemas/JobEvent",
    );
    if let Err(missing) = signed {
        panic!("{missing}");
    }

    // Ids are strings with the protocol's pattern.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["JobId"]["type"], "string");
    assert_eq!(schemas["JobId"]["pattern"], "^[A-Za-z0-9_.:-]{1,128}$");
}

#[test]
fn every_route_is_documented() {
    let doc: Value = serde_json::from_str(&broker_mock::openapi::to_json()).unwrap();
    if let Err(mismatch) = openapi_checks::check_routes(&doc, ROUTES) {
        panic!("{mismatch}");
    }
}

/// Fills a documented path's parameters with well-formed dummy values.
fn concrete(path: &str) -> String {
    path.replace("{group_id}", "grp_openapi")
        .replace("{provider_id}", "prv_openapi")
        .replace("{model_id}", "mdl_openapi")
        .replace("{version}", "1")
        .replace("{job_id}", "job_openapi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_server_serves_the_document_and_every_operation() {
    let broker = broker_mock::Broker::start(broker_mock::Config::default())
        .await
        .unwrap();
    let base = broker.base_url().to_owned();
    let http = http_client(&ClientConfig::default()).unwrap();

    let resp = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let served = resp.text().await.unwrap();
    assert_eq!(served, broker_mock::openapi::to_json());

    // Each documented operation reaches a handler: neither the router's fallback (404 whose
    // detail is "METHOD /path") nor its 405.
    let doc: Value = serde_json::from_str(&served).unwrap();
    for (method, path) in openapi_checks::operations(&doc) {
        let url = format!("{base}{}", concrete(&path));
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = http.request(m.clone(), &url).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let fallback = format!("{m} {}", concrete(&path));
        assert_ne!(status, 405, "{m} {path} is documented but not routed");
        assert!(
            !(status == 404 && body["detail"] == fallback.as_str()),
            "{m} {path} is documented but not routed"
        );
    }
    // And the fallback is recognisable, so the check above means something.
    let resp = http
        .get(format!("{base}/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["detail"], "GET /v1/nothing-here");
    broker.shutdown().await;
}
