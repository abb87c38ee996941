//! The model repository and temporary credentials.

use broker_mock::Config;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn model_repository() {
    let (broker, api) = start(Config {
        max_model_bytes: 1000,
        ..test_config()
    })
    .await;
    let b = broker.base_url().to_owned();
    let (user_created, user) = new_user(&api, "gareth").await;
    let (_, other) = new_user(&api, "other").await;
    let model = user.upload_model("cube.stl", stl()).await.unwrap();
    assert_eq!(model.name, "cube.stl");
    assert_eq!(model.versions.len(), 1);
    assert_eq!(model.versions[0].sha256, sha256_hex(&stl()));
    assert_eq!(model.versions[0].size, stl().len() as u64);
    assert_eq!(user.models().await.unwrap().models, vec![model.clone()]);
    assert_eq!(user.model(&model.model_id).await.unwrap(), model);
    assert_eq!(user.download(&model.model_id, 1).await.unwrap(), stl());
    assert_eq!(
        kind(&other.model(&model.model_id).await.unwrap_err()),
        "not-found"
    );
    assert_eq!(
        kind(&other.download(&model.model_id, 1).await.unwrap_err()),
        "not-found"
    );
    assert_eq!(
        kind(&user.download(&model.model_id, 2).await.unwrap_err()),
        "not-found"
    );
    assert_eq!(
        kind(
            &user
                .model(&ModelId::parse("mdl_nope").unwrap())
                .await
                .unwrap_err()
        ),
        "not-found"
    );
    let h = http();
    let key = Some(user_created.api_key.as_str());
    for path in ["/v1/jobs/bad%20id", "/v1/models/..x", "/v1/groups/a%2Fb"] {
        let (got, _, json) = raw(
            &h,
            reqwest::Method::GET,
            format!("{b}{path}"),
            key,
            None,
            vec![],
        )
        .await;
        assert_eq!(
            (got, problem_type(&json)),
            (400, "invalid-request"),
            "{path}: {json}"
        );
    }
    use reqwest::Method as M;
    let cases: Vec<(String, Option<&str>, Vec<u8>, u16, &str)> = vec![
        (
            format!("{b}/v1/models?name=a.stl"),
            Some("text/plain"),
            stl(),
            415,
            "unsupported-media-type",
        ),
        (
            format!("{b}/v1/models"),
            Some("model/stl"),
            stl(),
            400,
            "invalid-request",
        ),
        (
            format!("{b}/v1/models?name=a%2Fb.stl"),
            Some("model/stl"),
            stl(),
            400,
            "invalid-request",
        ),
        (
            format!("{b}/v1/models?name=a.stl"),
            Some("application/octet-stream"),
            vec![],
            400,
            "invalid-request",
        ),
        (
            format!("{b}/v1/models?name=a.stl"),
            Some("model/stl"),
            vec![7; 1001],
            413,
            "payload-too-large",
        ),
    ];
    for (url, ct, body, status, slug) in cases {
        let (got, _, json) = raw(&h, M::POST, url.clone(), key, ct, body).await;
        assert_eq!((got, problem_type(&json)), (status, slug), "{url}: {json}");
    }
    let (got, _, json) = raw(
        &h,
        M::GET,
        format!("{b}/v1/models/{}/versions/1/content", model.model_id),
        None,
        None,
        vec![],
    )
    .await;
    assert_eq!((got, problem_type(&json)), (401, "unauthorized"));
    let (got, _, json) = raw(
        &h,
        M::GET,
        format!("{b}/v1/models/{}/versions/x/content", model.model_id),
        key,
        None,
        vec![],
    )
    .await;
    assert_eq!((got, problem_type(&json)), (400, "invalid-request"));
    let (got, _, json) = raw(
        &h,
        M::DELETE,
        format!("{b}/v1/models/{}/versions/1/content", model.model_id),
        key,
        None,
        vec![],
    )
    .await;
    assert_eq!((got, problem_type(&json)), (405, "method-not-allowed"));
    broker.shutdown().await;
}

#[tokio::test]
async fn temporary_credentials_are_scoped_and_expire() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, _job) = accepted_job(&api, &fake, &s, &broker).await;
    let (input, got) = fake.last_input();
    assert_eq!(got.unwrap(), stl());
    let auth = input.download.authorization.clone().unwrap();
    let token = auth.strip_prefix("Bearer ").unwrap();
    assert!(token.starts_with("tc_"));
    assert!(input.download.expires_at <= broker.clock().now() + 600);
    let h = http();
    let other = user
        .upload_model("other.stl", b"other".to_vec())
        .await
        .unwrap();
    let b = broker.base_url();
    use reqwest::Method as M;
    let own = format!("{b}/v1/models/{}/versions/1/content", model.model_id);
    let cases = vec![
        (M::GET, own.clone(), token.to_owned(), 200, ""),
        (
            M::GET,
            format!("{b}/v1/models/{}/versions/1/content", other.model_id),
            token.to_owned(),
            403,
            "credential-scope",
        ),
        (
            M::PUT,
            own.clone(),
            token.to_owned(),
            403,
            "credential-scope",
        ),
        (
            M::DELETE,
            own.clone(),
            token.to_owned(),
            403,
            "credential-scope",
        ),
        (
            M::GET,
            own.clone(),
            format!("{token}x"),
            401,
            "credential-invalid",
        ),
        (
            M::GET,
            format!("{b}/v1/models/{}", model.model_id),
            token.to_owned(),
            401,
            "unauthorized",
        ),
    ];
    for (m, url, tok, status, slug) in cases {
        let what = format!("{m} {url}");
        let (got, _, json) = raw(&h, m, url, Some(&tok), None, vec![]).await;
        assert_eq!(got, status, "{what}: {json}");
        if !slug.is_empty() {
            assert_eq!(problem_type(&json), slug, "{what}");
        }
    }
    broker.clock().advance(601);
    let (got, _, json) = raw(&h, M::GET, own, Some(token), None, vec![]).await;
    assert_eq!((got, problem_type(&json)), (401, "credential-invalid"));
    assert!(json["detail"].as_str().unwrap().contains("expired"));
    broker.shutdown().await;
}
