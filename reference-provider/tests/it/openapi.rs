//! FixMyPrint's OpenAPI description: the checked-in copy is current, the service serves the
//! same document, and every route the router serves is documented (and every documented
//! operation is routed).

use std::path::PathBuf;

use crate::support::{Backend, TestDb, start_provider, test_config};
use diax_sdk::client::{ClientConfig, http_client};
use diax_sdk::openapi as openapi_checks;
use fixmyprint::service::http::openapi;
use serde_json::Value;

const CHECKED_IN: &str = "docs/openapi/fixmyprint.json";
const REGENERATE: &str = "cargo run -p fixmyprint -- openapi > docs/openapi/fixmyprint.json";

/// Every (method, path) FixMyPrint's router serves. A new route must be added here and
/// annotated with `#[utoipa::path]`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts/me"),
    ("get", "/v1/accounts/me/ledger"),
    ("post", "/v1/accounts/me/top-up"),
    ("post", "/v1/accounts/me/link-token"),
    ("post", "/v1/operator/accounts/{account_id}/top-up"),
    ("post", "/diax/jobs"),
    ("get", "/diax/jobs/{provider_job_id}"),
    ("get", "/results/{provider_job_id}"),
    ("head", "/results/{provider_job_id}"),
    ("get", "/results/{provider_job_id}/picture"),
    ("head", "/results/{provider_job_id}/picture"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

#[test]
fn checked_in_document_is_current() {
    let generated = openapi::to_json();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHECKED_IN);
    if let Err(stale) = openapi_checks::check_checked_in(&path, &generated, REGENERATE) {
        panic!("{stale}");
    }
}

#[test]
fn document_is_well_formed() {
    let doc: Value = serde_json::from_str(&openapi::to_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "FixMyPrint");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["result_credential"]["scheme"], "bearer");

    // Ids, summaries, tags, path parameters, problem responses and the Problem schema,
    // 500s and 401s.
    let findings = openapi_checks::lint(&doc);
    assert!(findings.is_empty(), "{}", findings.join("\n"));

    // Signed endpoints document the Standard Webhooks headers.
    let signed = openapi_checks::check_signed(
        &doc,
        "post",
        "/diax/jobs",
        "#/components/schemas/BrokerMessage",
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
    let doc: Value = serde_json::from_str(&openapi::to_json()).unwrap();
    if let Err(mismatch) = openapi_checks::check_routes(&doc, ROUTES) {
        panic!("{mismatch}");
    }
}

/// Fills a documented path's parameters with well-formed dummy values.
fn concrete(path: &str) -> String {
    path.replace("{provider_job_id}", "pjob_openapi")
        .replace("{account_id}", "acc_openapi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_service_serves_the_document_and_every_operation() {
    let db = TestDb::new(Backend::Sqlite).await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    let base = provider.base_url().to_owned();
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
    assert_eq!(served, openapi::to_json());

    // Each documented operation reaches a handler: neither the router's fallback 404 ("no
    // such resource") nor its 405.
    let doc: Value = serde_json::from_str(&served).unwrap();
    for (method, path) in openapi_checks::operations(&doc) {
        let url = format!("{base}{}", concrete(&path));
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = http.request(m.clone(), &url).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{m} {path} is documented but not routed");
        assert!(
            !(status == 404 && body["detail"] == "no such resource"),
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
    assert_eq!(body["detail"], "no such resource");
    provider.shutdown().await;
}
