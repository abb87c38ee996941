//! OpenAPI helpers (feature `openapi`) shared by the servers that describe their HTTP API
//! with utoipa: the problem responses every operation of a kind shares, the checked-in
//! document's exact text, and the checks their tests run on a document.
//!
//! ```
//! use utoipa::openapi::OpenApi;
//! use diax_sdk::openapi::{SharedProblems, add_shared_problem_responses, to_sorted_json};
//!
//! let mut doc: OpenApi = serde_json::from_str(
//!     r#"{"openapi":"3.1.0","info":{"title":"t","version":"1"},
//!         "paths":{"/x":{"get":{"operationId":"x","summary":"X","tags":[],
//!         "responses":{"200":{"description":"ok"}}}}}}"#,
//! )?;
//! add_shared_problem_responses(&mut doc, &SharedProblems {
//!     payload_too_large: "`payload-too-large`: the body is larger than 1 MiB",
//!     internal: "`internal`: unexpected error; details only in the server's log",
//! });
//! // The responses refer to the `Problem` schema, which the document defines.
//! use utoipa::PartialSchema;
//! let components = doc.components.get_or_insert_with(Default::default);
//! components.schemas.insert("Problem".into(), diax_sdk::problem::Problem::schema());
//! let text = to_sorted_json(&doc);
//! assert!(text.contains("\"500\""));
//! let value: serde_json::Value = serde_json::from_str(&text)?;
//! assert!(diax_sdk::openapi::lint(&value).is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::problem::PROBLEM_CONTENT_TYPE;

const PROBLEM_REF: &str = "#/components/schemas/Problem";

/// A response whose body is a problem document (`application/problem+json`, schema
/// `#/components/schemas/Problem`).
#[must_use]
pub fn problem_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                .build(),
        )
        .build()
        .into()
}

/// Every operation of the document (GET, HEAD, POST, PUT, DELETE, PATCH of every path).
pub fn operations_mut(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.head.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// Whether the operation takes a JSON request body.
#[must_use]
pub fn has_json_body(op: &Operation) -> bool {
    op.request_body
        .as_ref()
        .is_some_and(|b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")))
}

/// Whether the operation requires the security scheme `scheme` (by name).
#[must_use]
pub fn requires_scheme(op: &Operation, scheme: &str) -> bool {
    op.security
        .as_ref()
        .and_then(|reqs| serde_json::to_value(reqs).ok())
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|reqs| reqs.iter().any(|r| r.get(scheme).is_some()))
}

/// The descriptions of the shared problem responses that differ between servers.
#[derive(Debug, Clone, Copy)]
pub struct SharedProblems<'a> {
    /// The `413` of every JSON body (say what the limit is).
    pub payload_too_large: &'a str,
    /// The `500` of every operation (say where the details are).
    pub internal: &'a str,
}

/// Adds the problem responses every operation of a kind shares, unless the operation
/// declares its own: `500 internal` everywhere; `400 invalid-request`,
/// `413 payload-too-large` and `415 unsupported-media-type` on every JSON body;
/// `401 unauthorized` on every operation that requires the `api_key` scheme.
pub fn add_shared_problem_responses(doc: &mut OpenApi, texts: &SharedProblems<'_>) {
    for op in operations_mut(doc) {
        let json_body = has_json_body(op);
        let authenticated = requires_scheme(op, "api_key");
        let responses = &mut op.responses.responses;
        let mut add = |status: &str, description: &str| {
            responses
                .entry(status.to_owned())
                .or_insert_with(|| problem_response(description));
        };
        if json_body {
            add(
                "400",
                "`invalid-request`: the body is not valid JSON of the expected shape",
            );
            add("413", texts.payload_too_large);
            add(
                "415",
                "`unsupported-media-type`: the body is not `application/json`",
            );
        }
        if authenticated {
            add(
                "401",
                "`unauthorized`: missing or unknown API key (`Authorization: Bearer <api_key>`)",
            );
        }
        add("500", texts.internal);
    }
}

/// The document as pretty JSON with every object's keys sorted, ending with a newline: the
/// exact text to check in, so that a regenerated copy differs only where the API did.
#[must_use]
pub fn to_sorted_json(doc: &OpenApi) -> String {
    fn sort_keys(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.sort_keys();
                map.values_mut().for_each(sort_keys);
            }
            Value::Array(items) => items.iter_mut().for_each(sort_keys),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    sort_keys(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// Compares a checked-in copy of a document with the generated text.
///
/// # Errors
/// A message naming the file, the first differing line and the command that regenerates
/// it (`regenerate`), when the copy is missing or differs.
pub fn check_checked_in(path: &Path, generated: &str, regenerate: &str) -> Result<(), String> {
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if checked_in == generated {
        return Ok(());
    }
    let first_diff = checked_in
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .map_or_else(
            || "the files differ in length".to_owned(),
            |i| format!("first difference at line {}", i + 1),
        );
    Err(format!(
        "{} is stale or missing ({first_diff}).\n\
         Regenerate it from the workspace root with:\n\n    {regenerate}\n",
        path.display()
    ))
}

/// Every documented operation as (lower-case method, path): GET, HEAD, POST, PUT, DELETE,
/// PATCH and OPTIONS.
#[must_use]
pub fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    if ["get", "head", "post", "put", "delete", "patch", "options"]
                        .contains(&method.as_str())
                    {
                        out.insert((method.clone(), path.clone()));
                    }
                }
            }
        }
    }
    out
}

/// What a documented API must hold, as a list of findings (empty when it holds): every
/// operation has a unique `operationId`, a summary and declared tags; every path parameter
/// is declared as a required path parameter; every 4xx/5xx response is a problem document;
/// every operation documents its `500`, and every operation that requires `api_key` its
/// `401`; the `Problem` schema, once referenced, has the five RFC 9457 members and keeps
/// unknown ones (`additionalProperties`).
#[must_use]
pub fn lint(doc: &Value) -> Vec<String> {
    let mut findings = Vec::new();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let mut ids = BTreeSet::new();
    for (method, path) in operations(doc) {
        let op = &doc["paths"][&path][&method];
        let at = format!("{} {path}", method.to_uppercase());
        match op["operationId"].as_str() {
            Some(id) if !ids.insert(id.to_owned()) => {
                findings.push(format!("{at}: duplicate operationId {id}"));
            }
            Some(_) => {}
            None => findings.push(format!("{at}: no operationId")),
        }
        if !op["summary"].is_string() {
            findings.push(format!("{at}: no summary"));
        }
        match op["tags"].as_array() {
            Some(op_tags) => {
                for tag in op_tags {
                    if !tag.as_str().is_some_and(|t| tags.contains(t)) {
                        findings.push(format!("{at}: undeclared tag {tag}"));
                    }
                }
            }
            None => findings.push(format!("{at}: no tags")),
        }
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            let declared = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
            });
            if !declared {
                findings.push(format!("{at}: path parameter {name} not declared"));
            }
        }
        if let Some(responses) = op["responses"].as_object() {
            for (status, response) in responses {
                if (status.starts_with('4') || status.starts_with('5'))
                    && response["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"] != PROBLEM_REF
                {
                    findings.push(format!("{at} {status}: not a problem document"));
                }
            }
        }
        if !op["responses"]["500"].is_object() {
            findings.push(format!("{at}: no 500"));
        }
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
        if secured && !op["responses"]["401"].is_object() {
            findings.push(format!("{at}: no 401"));
        }
    }
    if doc["paths"].to_string().contains(PROBLEM_REF) {
        let problem = &doc["components"]["schemas"]["Problem"];
        if !problem["additionalProperties"].is_object() {
            findings.push("Problem: unknown members not kept".to_owned());
        }
        for member in ["type", "title", "status", "detail", "instance"] {
            if !problem["properties"][member].is_object() {
                findings.push(format!("Problem: no member {member}"));
            }
        }
    }
    findings
}

/// Compares the documented operations with the (method, path) pairs a router serves.
///
/// # Errors
/// A message listing the routes missing from the document and the documented operations
/// missing from `routes`.
pub fn check_routes(doc: &Value, routes: &[(&str, &str)]) -> Result<(), String> {
    let documented = operations(doc);
    let known: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    if missing.is_empty() && unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "routes missing from the document: {missing:?}; documented operations not in \
             the route list (add them): {unknown:?}"
        ))
    }
}

/// Checks that the operation `method path` is documented as signed with Standard Webhooks
/// (the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers) and takes a JSON
/// body of the schema `body` (a `$ref`, such as `#/components/schemas/JobEvent`).
///
/// ```
/// let doc = serde_json::json!({"paths": {"/hook": {"post": {
///     "parameters": [
///         {"name": "webhook-id", "in": "header"},
///         {"name": "webhook-timestamp", "in": "header"},
///         {"name": "webhook-signature", "in": "header"}
///     ],
///     "requestBody": {"content": {"application/json": {"schema": {
///         "$ref": "#/components/schemas/Event"}}}}
/// }}}});
/// assert!(diax_sdk::openapi::check_signed(&doc, "post", "/hook", "#/components/schemas/Event").is_ok());
/// let err = diax_sdk::openapi::check_signed(&doc, "post", "/hook", "#/components/schemas/Other");
/// assert!(err.unwrap_err().contains("body"));
/// ```
///
/// # Errors
/// A message naming the first header or the body schema that is missing.
pub fn check_signed(doc: &Value, method: &str, path: &str, body: &str) -> Result<(), String> {
    let op = &doc["paths"][path][method];
    let at = format!("{} {path}", method.to_uppercase());
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let documented = op["parameters"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == header && p["in"] == "header")
        });
        if !documented {
            return Err(format!("{at}: no {header} header"));
        }
    }
    let given = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    if given != body {
        return Err(format!("{at}: body {given}, expected {body}"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lint_names_what_is_missing_and_routes_are_compared_both_ways() {
        let doc: Value = serde_json::json!({
            "tags": [{"name": "a"}],
            "paths": {
                "/x/{id}": {"get": {"operationId": "x", "summary": "X", "tags": ["b"],
                    "security": [{"api_key": []}],
                    "responses": {"404": {"description": "plain"}}}},
                "/y": {"post": {"operationId": "x", "tags": ["a"], "responses": {
                    "400": {"content": {"application/problem+json": {"schema": {
                        "$ref": "#/components/schemas/Problem"}}}}}}}
            },
            "components": {"schemas": {"Problem": {"properties": {"type": {}}}}}
        });
        let findings = lint(&doc);
        for expected in [
            "GET /x/{id}: undeclared tag \"b\"",
            "GET /x/{id}: path parameter id not declared",
            "GET /x/{id} 404: not a problem document",
            "GET /x/{id}: no 500",
            "GET /x/{id}: no 401",
            "POST /y: duplicate operationId x",
            "POST /y: no summary",
            "Problem: unknown members not kept",
            "Problem: no member title",
        ] {
            assert!(
                findings.iter().any(|f| f == expected),
                "{expected} not in {findings:?}"
            );
        }
        assert!(check_routes(&doc, &[("get", "/x/{id}"), ("post", "/y")]).is_ok());
        let err = check_routes(&doc, &[("get", "/x/{id}"), ("get", "/z")]).unwrap_err();
        assert!(err.contains("\"/z\"") && err.contains("\"/y\""), "{err}");
    }

    #[test]
    fn a_stale_copy_names_the_first_differing_line_and_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        std::fs::write(&path, "a\nb\n").unwrap();
        assert!(check_checked_in(&path, "a\nb\n", "regen").is_ok());
        let err = check_checked_in(&path, "a\nc\n", "regen").unwrap_err();
        assert!(err.contains("line 2") && err.contains("regen"), "{err}");
    }
}
