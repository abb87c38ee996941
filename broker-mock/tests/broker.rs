//! Integration tests over real HTTP on port 0: every endpoint and every refusal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

mod common;

use broker_mock::client::MessageFilter;
use broker_mock::{ClientError, Config};
use common::*;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;
use diax_sdk::*;

fn kind(e: &ClientError) -> String {
    e.problem()
        .and_then(|p| p.kind())
        .map(|k| k.slug().to_owned())
        .unwrap_or_else(|| format!("not a problem: {e}"))
}

async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, serde_json::Value) {
    let mut req = http.request(method, url).body(body);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    if let Some(c) = ct {
        req = req.header("content-type", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, ct, json)
}

#[tokio::test]
async fn bad_input_gets_problems_and_the_server_keeps_serving() {
    let (broker, api) = start(Config {
        max_body_bytes: 2048,
        ..test_config()
    })
    .await;
    let b = broker.base_url().to_owned();
    let h = http();
    use reqwest::Method as M;
    let cases: Vec<(M, String, Option<&str>, Option<&str>, Vec<u8>, u16, &str)> = vec![
        (
            M::GET,
            format!("{b}/nope"),
            None,
            None,
            vec![],
            404,
            "not-found",
        ),
        (
            M::DELETE,
            format!("{b}/v1/users"),
            None,
            None,
            vec![],
            405,
            "method-not-allowed",
        ),
        (
            M::PUT,
            format!("{b}/v1/registry"),
            None,
            None,
            vec![],
            405,
            "method-not-allowed",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("text/plain"),
            b"{}".to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            None,
            b"{}".to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            b"{not json".to_vec(),
            400,
            "invalid-request",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            br#"{"name":""}"#.to_vec(),
            400,
            "invalid-request",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            br#"{"name":"x","notification_url":"http://example.com/n"}"#.to_vec(),
            400,
            "invalid-request",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            vec![b' '; 5000],
            413,
            "payload-too-large",
        ),
        (
            M::GET,
            format!("{b}/v1/me"),
            None,
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            M::GET,
            format!("{b}/v1/me"),
            Some("bk_wrong"),
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            M::GET,
            format!("{b}/v1/me"),
            Some("tc_credential"),
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            M::GET,
            format!("{b}/v1/messages?direction=sideways"),
            None,
            None,
            vec![],
            400,
            "invalid-request",
        ),
        (
            M::GET,
            format!("{b}/v1/messages?limit=0"),
            None,
            None,
            vec![],
            400,
            "invalid-request",
        ),
        (
            M::GET,
            format!("{b}/v1/registry?service_kind=Bad%20Kind"),
            None,
            None,
            vec![],
            400,
            "invalid-request",
        ),
    ];
    for (m, url, auth, ct, body, status, slug) in cases {
        let what = format!("{m} {url}");
        let (got, got_ct, json) = raw(&h, m, url, auth, ct, body).await;
        assert_eq!(got, status, "{what}: {json}");
        assert_eq!(got_ct, PROBLEM_CONTENT_TYPE, "{what}");
        assert_eq!(problem_type(&json), slug, "{what}: {json}");
        assert_eq!(json["status"], status, "{what}");
    }
    // Still serving.
    let (_, user) = new_user(&api, "after the storm").await;
    assert_eq!(user.me().await.unwrap().name, "after the storm");
    // Every refusal is in the message log with its reason.
    let log = api
        .messages(&MessageFilter {
            direction: Some("in".into()),
            limit: Some(1000),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let unsupported = log
        .messages
        .iter()
        .find(|m| m.status == Some(415))
        .expect("415 logged");
    assert_eq!(unsupported.verdict, "refused");
    assert!(
        unsupported
            .reason
            .as_deref()
            .unwrap()
            .contains("application/json")
    );
    assert!(
        log.messages
            .iter()
            .all(|m| !m.endpoint.starts_with("/v1/messages"))
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn users_groups_and_membership() {
    let (broker, api) = start(test_config()).await;
    let (alice_created, alice) = new_user(&api, "alice").await;
    let (bob_created, bob) = new_user(&api, "bob").await;
    assert!(alice_created.api_key.starts_with("bk_"));
    assert!(alice_created.notification_secret.is_none());
    let me = alice.me().await.unwrap();
    assert_eq!(me.user_id, alice_created.user_id);
    assert_eq!(me.pending_notifications, 0);
    assert_eq!(alice.pending_count().await.unwrap(), 0);

    let group = alice.create_group("makers").await.unwrap();
    assert_eq!(group.members, vec![alice_created.user_id.clone()]);
    let e = bob
        .add_member(&group.group_id, &bob_created.user_id)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    let group = alice
        .add_member(&group.group_id, &bob_created.user_id)
        .await
        .unwrap();
    assert_eq!(group.members.len(), 2);
    // Idempotent.
    let group = alice
        .add_member(&group.group_id, &bob_created.user_id)
        .await
        .unwrap();
    assert_eq!(group.members.len(), 2);
    assert_eq!(bob.me().await.unwrap().groups, vec![group.group_id.clone()]);
    let e = alice
        .add_member(
            &GroupId::parse("grp_unknown").unwrap(),
            &bob_created.user_id,
        )
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    let e = alice
        .add_member(&group.group_id, &UserId::parse("usr_nobody").unwrap())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    broker.shutdown().await;
}

#[tokio::test]
async fn registration_registry_and_refusals() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    assert!(s.reg.secret.starts_with("whsec_"));
    assert_eq!(s.reg.broker_id, "3diax-mock");
    assert_eq!(
        s.reg.events_url,
        format!(
            "{}/v1/providers/{}/events",
            broker.base_url(),
            s.reg.provider_id
        )
    );
    let reg = api.registry(Some(SERVICE_KIND_MODEL_REPAIR)).await.unwrap();
    assert_eq!(reg.providers.len(), 1);
    assert_eq!(reg.providers[0].provider_id, s.reg.provider_id);
    assert_eq!(reg.providers[0].pricing, Pricing::Paid);
    assert!(
        api.registry(Some("slicing"))
            .await
            .unwrap()
            .providers
            .is_empty()
    );
    assert_eq!(api.registry(None).await.unwrap().providers.len(), 1);

    let group = s.owner.me().await.unwrap().groups[0].clone();
    let (_, stranger) = new_user(&api, "stranger").await;
    let e = stranger
        .register_provider(&register_req(&group, &fake.job_url(), SecretScope::Service))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    for bad_url in ["http://example.com/jobs", "ftp://127.0.0.1/x", "not a url"] {
        let e = s
            .owner
            .register_provider(&register_req(&group, bad_url, SecretScope::Service))
            .await
            .unwrap_err();
        assert_eq!(kind(&e), "invalid-request", "{bad_url}");
    }
    let mut bad_kind = register_req(&group, &fake.job_url(), SecretScope::Service);
    bad_kind.service_kind = "Model Repair".into();
    assert_eq!(
        kind(&s.owner.register_provider(&bad_kind).await.unwrap_err()),
        "invalid-request"
    );
    let e = s
        .owner
        .register_provider(&register_req(
            &GroupId::parse("grp_nope").unwrap(),
            &fake.job_url(),
            SecretScope::Service,
        ))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    let e = stranger
        .rotate_secret(&s.reg.provider_id, &RotateSecret::default())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    let e = s
        .owner
        .rotate_secret(
            &ProviderId::parse("prv_nope").unwrap(),
            &RotateSecret::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    broker.shutdown().await;
}

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

/// Creates a job for a linked user of a fake provider that accepts; returns the job.
async fn accepted_job(
    api: &BrokerApi,
    fake: &Fake,
    s: &Setup,
    broker: &broker_mock::Broker,
) -> (UserClient, Model, Job) {
    let (_, user, model, job) = linked_job(api, fake, s, broker).await;
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    (user, model, job)
}

use broker_mock::{BrokerApi, UserClient};
use diax_sdk::wire::Model;

#[tokio::test]
async fn the_seed_story_end_to_end() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_, gareth) = new_user(&api, "gareth").await;
    let model = gareth.upload_model("boat.stl", stl()).await.unwrap();
    let create = CreateJob {
        provider_id: s.reg.provider_id.clone(),
        model_id: model.model_id.clone(),
        version: Some(1),
        operation: Some("repair".into()),
        params: serde_json::json!({"tolerance": 0.01}),
    };

    // 2. First request fails: the provider's problem is relayed unchanged.
    let job = gareth.create_job(&create).await.unwrap();
    assert_eq!(job.state, JobState::Rejected);
    let p = job.problem.clone().unwrap();
    assert!(p.is(ProblemType::AccountRequired));
    assert_eq!(
        p.register_url(),
        Some(format!("{}/signup", fake.base_url).as_str())
    );
    assert_eq!(p.extension_str("vendor_hint"), Some("fake-provider"));
    let offer = fake.state.offers.lock().unwrap()[0].clone();
    assert_eq!(offer.user.provider_account, None);
    assert_eq!(offer.model.sha256, sha256_hex(&stl()));
    assert_eq!(offer.params["tolerance"], 0.01);
    assert_eq!(offer.events_url, s.reg.events_url);
    // The rejection is a pending notification, counted on every response.
    assert_eq!(gareth.pending_count().await.unwrap(), 1);

    // 3. Account link: bad tokens refused precisely, a good one accepted once.
    fake.add_account("acc_gareth");
    let now = broker.clock().now();
    let other_secret = Secret::generate();
    let forged = LinkTokenIssuer::new(
        s.reg.provider_id.clone(),
        "3diax-mock",
        s.reg.key_id.clone(),
        other_secret,
    )
    .issue_at(&AccountId::parse("acc_gareth").unwrap(), now)
    .unwrap()
    .token;
    let wrong_aud = LinkTokenIssuer::new(
        s.reg.provider_id.clone(),
        "another-broker",
        s.reg.key_id.clone(),
        Secret::parse(&s.reg.secret).unwrap(),
    )
    .issue_at(&AccountId::parse("acc_gareth").unwrap(), now)
    .unwrap()
    .token;
    let expired = link_token(&s.reg, "acc_gareth", now - 3600);
    for (token, reason) in [
        (forged.as_str(), "signature"),
        (wrong_aud.as_str(), "audience"),
        (expired.as_str(), "expired"),
        ("not.a.jwt", "malformed"),
    ] {
        let e = gareth.link(&s.reg.provider_id, token).await.unwrap_err();
        assert_eq!(kind(&e), "invalid-token");
        assert_eq!(
            e.problem().unwrap().extension_str("reason"),
            Some(reason),
            "{e}"
        );
    }
    let e = gareth
        .link(&ProviderId::parse("prv_nope").unwrap(), &expired)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    let token = link_token(&s.reg, "acc_gareth", now);
    let link = gareth.link(&s.reg.provider_id, &token).await.unwrap();
    assert_eq!(link.provider_account.as_str(), "acc_gareth");
    let e = gareth.link(&s.reg.provider_id, &token).await.unwrap_err();
    assert_eq!(kind(&e), "token-reused");
    assert_eq!(gareth.links().await.unwrap().links, vec![link]);

    // 4. Retry succeeds; 5. the provider got credentials and downloaded the model.
    let job = gareth.retry_job(&job.job_id).await.unwrap();
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    assert!(job.problem.is_none());
    assert_eq!(job.quote, Some(Quote::new(250, "EUR")));
    let offer = fake.state.offers.lock().unwrap().last().cloned().unwrap();
    assert_eq!(offer.job_id, job.job_id);
    assert_eq!(
        offer.user.provider_account.as_ref().unwrap().as_str(),
        "acc_gareth"
    );
    let (input, downloaded) = fake.last_input();
    assert_eq!(input.job_id, job.job_id);
    assert_eq!(downloaded.unwrap(), stl());
    let e = gareth.retry_job(&job.job_id).await.unwrap_err();
    assert_eq!(kind(&e), "conflict");

    // 6. Progress, then completion with a result the broker fetches.
    let h = http();
    let ev = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Progress {
            percent: 40,
            stage: Some("weld".into()),
        },
    );
    let (st, ack) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_p1",
        unix_now(),
        &serde_json::to_vec(&ev).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{ack}");
    assert_eq!(ack["state"], "running");
    assert_eq!(gareth.job(&job.job_id).await.unwrap().progress, Some(40));
    let healed = b"solid healed\nendsolid healed\n".to_vec();
    fake.set_result(healed.clone());
    let done = event(
        &job,
        &s.reg,
        2,
        JobEventKind::Completed {
            result: JobResult {
                download: fake.result_download(&healed, unix_now() + 600),
                format: "stl".into(),
                report: Some(serde_json::json!({"holes_filled": 3})),
                charged: Some(Quote::new(250, "EUR")),
            },
        },
    );
    let done_body = serde_json::to_vec(&done).unwrap();
    let (st, ack) = post_event_raw(&h, &s.reg, &s.ring, "msg_done", unix_now(), &done_body).await;
    assert_eq!(st, 200, "{ack}");
    assert_eq!(ack["state"], "completed");
    assert_eq!(ack["duplicate"], false);
    let job = gareth.job(&job.job_id).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.report.as_ref().unwrap()["holes_filled"], 3);
    let result = job.result.clone().unwrap();
    assert_eq!(result.version, 2);
    let model = gareth.model(&model.model_id).await.unwrap();
    let v2 = &model.versions[1];
    assert_eq!(v2.sha256, sha256_hex(&healed));
    let src = v2.source.clone().unwrap();
    assert_eq!(
        (src.job_id, src.provider_id, src.from_version),
        (job.job_id.clone(), s.reg.provider_id.clone(), 1)
    );
    // 7. User notified; downloads the repaired model.
    assert_eq!(gareth.download(&model.model_id, 2).await.unwrap(), healed);
    let pending = gareth.notifications().await.unwrap().notifications;
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].event, "job.rejected");
    assert_eq!(pending[1].event, "job.completed");
    assert_eq!(pending[1].result, Some(result));
    assert_eq!(gareth.pending_count().await.unwrap(), 2);
    let left = gareth
        .ack(&[pending[0].notification_id.clone()])
        .await
        .unwrap();
    assert_eq!(left.notifications.len(), 1);
    let e = gareth
        .ack(&[NotificationId::parse("ntf_nope").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not-found");
    assert_eq!(gareth.pending_count().await.unwrap(), 1);

    // Duplicates are acknowledged idempotently (same id, or a new id for the same event).
    let (st, ack) = post_event_raw(&h, &s.reg, &s.ring, "msg_done", unix_now(), &done_body).await;
    assert_eq!((st, ack["duplicate"].as_bool()), (200, Some(true)), "{ack}");
    let (st, ack) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_done_again",
        unix_now(),
        &done_body,
    )
    .await;
    assert_eq!((st, ack["duplicate"].as_bool()), (200, Some(true)), "{ack}");
    assert_eq!(
        gareth.model(&model.model_id).await.unwrap().versions.len(),
        2
    );
    // Anything else after the end is an invalid transition.
    let late = event(
        &job,
        &s.reg,
        3,
        JobEventKind::Progress {
            percent: 99,
            stage: None,
        },
    );
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_late",
        unix_now(),
        &serde_json::to_vec(&late).unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&p)), (409, "invalid-transition"), "{p}");

    // The message log shows the exchange for this job, both ways.
    let log = api
        .messages(&MessageFilter {
            job_id: Some(job.job_id.to_string()),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert!(
        log.messages
            .iter()
            .all(|m| m.job_id.as_deref() == Some(job.job_id.as_str()))
    );
    let out: Vec<_> = log
        .messages
        .iter()
        .filter(|m| m.direction == "out")
        .collect();
    assert!(out.iter().any(|m| {
        m.status == Some(401)
            && m.reason
                .as_deref()
                .unwrap_or("")
                .contains("account-required")
    }));
    assert!(
        out.iter()
            .any(|m| m.headers.contains_key("webhook-signature"))
    );
    assert!(
        log.messages
            .iter()
            .any(|m| m.direction == "in" && m.verdict.starts_with("signature valid"))
    );
    let refused = log.messages.iter().find(|m| m.status == Some(409)).unwrap();
    assert!(
        refused
            .reason
            .as_deref()
            .unwrap()
            .contains("accepts no job.progress")
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn payment_required_and_unreachable_providers_are_relayed() {
    let (broker, api) = start(Config {
        send_attempts: 2,
        ..test_config()
    })
    .await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    fake.set_mode(Mode::Broke);
    let (_, user) = new_user(&api, "u").await;
    let model = user.upload_model("m.stl", stl()).await.unwrap();
    fake.add_account("acc_u");
    user.link(
        &s.reg.provider_id,
        &link_token(&s.reg, "acc_u", broker.clock().now()),
    )
    .await
    .unwrap();
    let create = CreateJob {
        provider_id: s.reg.provider_id.clone(),
        model_id: model.model_id.clone(),
        version: None,
        operation: None,
        params: serde_json::Value::Null,
    };
    let job = user.create_job(&create).await.unwrap();
    assert_eq!(job.state, JobState::Rejected);
    let p = job.problem.unwrap();
    assert!(p.is(ProblemType::PaymentRequired));
    assert_eq!(p.quote(), Some(Quote::new(250, "EUR")));
    // A 500 without a problem: retried, then an upstream-failed problem.
    fake.set_mode(Mode::Broken);
    let before = fake.state.offers.lock().unwrap().len();
    let job = user.create_job(&create).await.unwrap();
    assert_eq!(job.state, JobState::Rejected);
    assert!(job.problem.unwrap().is(ProblemType::UpstreamFailed));
    assert_eq!(fake.state.offers.lock().unwrap().len(), before + 2);
    // Unknown ids and bad versions.
    let mut bad = create.clone();
    bad.version = Some(9);
    assert_eq!(kind(&user.create_job(&bad).await.unwrap_err()), "not-found");
    let mut bad = create.clone();
    bad.provider_id = ProviderId::parse("prv_nope").unwrap();
    assert_eq!(kind(&user.create_job(&bad).await.unwrap_err()), "not-found");
    let mut bad = create.clone();
    bad.operation = Some("rm -rf".into());
    assert_eq!(
        kind(&user.create_job(&bad).await.unwrap_err()),
        "invalid-request"
    );
    assert_eq!(
        kind(
            &user
                .job(&JobId::parse("job_nope").unwrap())
                .await
                .unwrap_err()
        ),
        "not-found"
    );
    assert_eq!(user.jobs().await.unwrap().jobs.len(), 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn event_refusals() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let h = http();
    let body = serde_json::to_vec(&event(
        &job,
        &s.reg,
        1,
        JobEventKind::Accepted { quote: None },
    ))
    .unwrap();
    let now = unix_now();
    // Missing signature headers.
    let resp = h
        .post(&s.reg.events_url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        problem_type(&resp.json().await.unwrap()),
        "signature-missing"
    );
    // Wrong secret, stale, future.
    let stranger = Keyring::single(s.reg.key_id.clone(), Secret::generate());
    for (ring, ts, status, slug) in [
        (&stranger, now, 401, "signature-invalid"),
        (&s.ring, now - 301, 401, "timestamp-out-of-tolerance"),
        (&s.ring, now + 301, 401, "timestamp-out-of-tolerance"),
    ] {
        let (st, p) = post_event_raw(&h, &s.reg, ring, "msg_bad", ts, &body).await;
        assert_eq!((st, problem_type(&p)), (status, slug), "{p}");
    }
    // Wrong content type.
    let resp = h
        .post(&s.reg.events_url)
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // Accepted, then the same id over another body is a replay.
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_a", now, &body).await;
    assert_eq!(st, 200, "{p}");
    let other = serde_json::to_vec(&event(
        &job,
        &s.reg,
        2,
        JobEventKind::Progress {
            percent: 5,
            stage: None,
        },
    ))
    .unwrap();
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_a", now, &other).await;
    assert_eq!((st, problem_type(&p)), (409, "replayed-message"), "{p}");
    // Signed but not an event.
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_junk",
        now,
        b"{\"type\":\"job.exploded\"}",
    )
    .await;
    assert_eq!((st, problem_type(&p)), (400, "invalid-request"), "{p}");
    // Another provider's id in the body, an unknown job, an unknown provider.
    let mut ev = event(
        &job,
        &s.reg,
        2,
        JobEventKind::Progress {
            percent: 5,
            stage: None,
        },
    );
    ev.provider_id = ProviderId::parse("prv_other").unwrap();
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_o",
        now,
        &serde_json::to_vec(&ev).unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&p)), (403, "forbidden"), "{p}");
    let mut ev = event(
        &job,
        &s.reg,
        2,
        JobEventKind::Progress {
            percent: 5,
            stage: None,
        },
    );
    ev.job_id = JobId::parse("job_nope").unwrap();
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_n",
        now,
        &serde_json::to_vec(&ev).unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&p)), (404, "not-found"), "{p}");
    let mut ghost = s.reg.clone();
    ghost.events_url = format!("{}/v1/providers/prv_ghost/events", broker.base_url());
    let (st, _) = post_event_raw(&h, &ghost, &s.ring, "msg_g", now, &other).await;
    assert_eq!(st, 404);
    // Out-of-order sequence.
    let (st, _) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_p5",
        now,
        &serde_json::to_vec(&event(
            &job,
            &s.reg,
            5,
            JobEventKind::Progress {
                percent: 50,
                stage: None,
            },
        ))
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_p4",
        now,
        &serde_json::to_vec(&event(
            &job,
            &s.reg,
            4,
            JobEventKind::Progress {
                percent: 40,
                stage: None,
            },
        ))
        .unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&p)), (409, "invalid-transition"), "{p}");
    // A late job.accepted is acknowledged but does not move a running job back.
    let late = event(&job, &s.reg, 6, JobEventKind::Accepted { quote: None });
    let (st, ack) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_late_acc",
        now,
        &serde_json::to_vec(&late).unwrap(),
    )
    .await;
    assert_eq!((st, ack["state"].as_str()), (200, Some("running")), "{ack}");
    // A result whose digest lies: 502, job unchanged; then a good one completes it.
    let healed = b"healed bytes".to_vec();
    fake.set_result(healed.clone());
    let mut dl = fake.result_download(&healed, unix_now() + 600);
    dl.sha256 = sha256_hex(b"something else");
    let lying = event(
        &job,
        &s.reg,
        7,
        JobEventKind::Completed {
            result: JobResult {
                download: dl,
                format: "stl".into(),
                report: None,
                charged: None,
            },
        },
    );
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_c1",
        now,
        &serde_json::to_vec(&lying).unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&p)), (502, "download-failed"), "{p}");
    let mut dl = fake.result_download(&healed, unix_now() + 600);
    dl.size += 1;
    let short = event(
        &job,
        &s.reg,
        7,
        JobEventKind::Completed {
            result: JobResult {
                download: dl,
                format: "stl".into(),
                report: None,
                charged: None,
            },
        },
    );
    let (st, _) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_c2",
        now,
        &serde_json::to_vec(&short).unwrap(),
    )
    .await;
    assert_eq!(st, 502);
    let failed = event(
        &job,
        &s.reg,
        7,
        JobEventKind::Failed {
            problem: Problem::new(ProblemType::ModelInvalid).with_detail("not a mesh"),
        },
    );
    let (st, ack) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_f",
        now,
        &serde_json::to_vec(&failed).unwrap(),
    )
    .await;
    assert_eq!((st, ack["state"].as_str()), (200, Some("failed")), "{ack}");
    // The log names the exact reasons.
    let log = api
        .messages(&MessageFilter {
            provider_id: Some(s.reg.provider_id.to_string()),
            direction: Some("in".into()),
            limit: Some(1000),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert!(
        log.messages
            .iter()
            .any(|m| m.reason.as_deref().unwrap_or("").contains("tolerance"))
    );
    assert!(log.messages.iter().any(|m| {
        m.reason
            .as_deref()
            .unwrap_or("")
            .contains("SHA-256 mismatch")
    }));
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

#[tokio::test]
async fn rotation_accepts_both_secrets_during_grace_only() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let rotated = s
        .owner
        .rotate_secret(
            &s.reg.provider_id,
            &RotateSecret {
                grace_secs: Some(100),
            },
        )
        .await
        .unwrap();
    assert_eq!(rotated.previous_key_id, s.reg.key_id);
    assert_ne!(rotated.key_id, s.reg.key_id);
    let new_ring = Keyring::single(
        rotated.key_id.clone(),
        Secret::parse(&rotated.secret).unwrap(),
    );
    let h = http();
    let ev = |seq| {
        serde_json::to_vec(&event(
            &job,
            &s.reg,
            seq,
            JobEventKind::Progress {
                percent: 10,
                stage: None,
            },
        ))
        .unwrap()
    };
    let now = broker.clock().now();
    assert_eq!(
        post_event_raw(&h, &s.reg, &s.ring, "msg_r1", now, &ev(1))
            .await
            .0,
        200
    );
    assert_eq!(
        post_event_raw(&h, &s.reg, &new_ring, "msg_r2", now, &ev(2))
            .await
            .0,
        200
    );
    // Offers during the overlap carry both signatures.
    let (_, user2) = new_user(&api, "second").await;
    let m = user2.upload_model("x.stl", stl()).await.unwrap();
    let mut both = s.ring.clone();
    both.insert(
        rotated.key_id.clone(),
        Secret::parse(&rotated.secret).unwrap(),
        None,
    );
    fake.set_ring(both);
    user2
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: m.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    let sig = fake
        .state
        .offer_signatures
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    // After the grace period only the new secret is accepted.
    broker.clock().advance(101);
    let now = broker.clock().now();
    let (st, p) = post_event_raw(&h, &s.reg, &s.ring, "msg_r3", now, &ev(3)).await;
    assert_eq!((st, problem_type(&p)), (401, "signature-invalid"), "{p}");
    assert_eq!(
        post_event_raw(&h, &s.reg, &new_ring, "msg_r4", now, &ev(3))
            .await
            .0,
        200
    );
    // A link token signed with the retired key is refused too.
    let old_token = link_token(&s.reg, "acc_late", now);
    let e = s
        .owner
        .link(&s.reg.provider_id, &old_token)
        .await
        .unwrap_err();
    assert_eq!(e.problem().unwrap().extension_str("reason"), Some("key"));
    broker.shutdown().await;
}

#[tokio::test]
async fn per_user_secrets_speak_only_for_their_user() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::User).await;
    assert_eq!(s.reg.secret_scope, SecretScope::User);
    let owner_id = s.owner.me().await.unwrap().user_id;
    assert_eq!(s.reg.bound_user_id, Some(owner_id));
    let (_, other) = new_user(&api, "other").await;
    let m = other.upload_model("x.stl", stl()).await.unwrap();
    let create = CreateJob {
        provider_id: s.reg.provider_id.clone(),
        model_id: m.model_id,
        version: None,
        operation: None,
        params: serde_json::Value::Null,
    };
    assert_eq!(
        kind(&other.create_job(&create).await.unwrap_err()),
        "forbidden"
    );
    let token = link_token(&s.reg, "acc_other", broker.clock().now());
    assert_eq!(
        kind(&other.link(&s.reg.provider_id, &token).await.unwrap_err()),
        "forbidden"
    );
    assert!(fake.state.offers.lock().unwrap().is_empty());
    // The bound user works normally.
    let mine = s.owner.upload_model("mine.stl", stl()).await.unwrap();
    fake.add_account("acc_me");
    s.owner
        .link(
            &s.reg.provider_id,
            &link_token(&s.reg, "acc_me", broker.clock().now()),
        )
        .await
        .unwrap();
    let job = s
        .owner
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: mine.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Accepted);
    broker.shutdown().await;
}

#[tokio::test]
async fn notifications_are_pushed_signed_with_retries() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.notify_failures_left.lock().unwrap() = 2;
    let created = api
        .create_user(&CreateUser {
            name: "hooked".into(),
            notification_url: Some(format!("{}/notify", fake.base_url)),
        })
        .await
        .unwrap();
    let secret = Secret::parse(created.notification_secret.as_deref().unwrap()).unwrap();
    let user = api.user(created.api_key.clone());
    let m = user.upload_model("x.stl", stl()).await.unwrap();
    let job = user
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: m.model_id,
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Rejected);
    eventually("a delivered notification", || {
        !fake.state.notifications.lock().unwrap().is_empty()
    })
    .await;
    let (headers, body) = fake.state.notifications.lock().unwrap()[0].clone();
    let raw = diax_sdk::webhook::RawHeaders::from_fn(|n| headers.get(n).map(|v| v.as_bytes()));
    let ring = Keyring::single(KeyId::parse("key_any").unwrap(), secret);
    let verified = ring.verify_at(&raw, &body, unix_now(), 300).unwrap();
    let n: Notification = serde_json::from_slice(&body).unwrap();
    assert_eq!(n.event, "job.rejected");
    assert_eq!(n.job_id, job.job_id);
    assert_eq!(verified.id.as_str(), n.notification_id.as_str());
    assert_eq!(*fake.state.notify_failures_left.lock().unwrap(), 0);
    // Still pending until acknowledged.
    assert_eq!(user.notifications().await.unwrap().notifications, vec![n]);
    let log = api
        .messages(&MessageFilter {
            direction: Some("out".into()),
            job_id: Some(job.job_id.to_string()),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert!(
        log.messages
            .iter()
            .filter(|m| m.endpoint.ends_with("/notify"))
            .count()
            >= 3
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_endpoint_and_inspector_page() {
    let (broker, api) = start(test_config()).await;
    new_user(&api, "x").await;
    let html = http()
        .get(format!("{}/inspector", broker.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text().await.unwrap().contains("/v1/messages"));
    let log = api
        .messages(&MessageFilter {
            limit: Some(1),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(log.messages.len(), 1);
    assert_eq!(log.messages[0].endpoint, "/v1/users");
    assert_eq!(log.messages[0].status, Some(201));
    broker.shutdown().await;
}

#[tokio::test]
async fn restart_on_the_same_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db").display().to_string();
    let cfg = Config {
        db: db.clone(),
        ..test_config()
    };
    let (broker, api) = start(cfg.clone()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (created, user) = new_user(&api, "persistent").await;
    let m = user.upload_model("keep.stl", stl()).await.unwrap();
    let token = link_token(&s.reg, "acc_p", broker.clock().now());
    user.link(&s.reg.provider_id, &token).await.unwrap();
    broker.shutdown().await;

    let (broker, api) = start(cfg).await;
    let user = api.user(created.api_key);
    assert_eq!(user.model(&m.model_id).await.unwrap(), m);
    assert_eq!(user.download(&m.model_id, 1).await.unwrap(), stl());
    assert_eq!(user.links().await.unwrap().links.len(), 1);
    assert_eq!(
        kind(&user.link(&s.reg.provider_id, &token).await.unwrap_err()),
        "token-reused"
    );
    assert_eq!(api.registry(None).await.unwrap().providers.len(), 1);
    assert!(
        !api.messages(&MessageFilter::default())
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    broker.shutdown().await;
    drop(dir);
}

fn write_pki(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn tls_everywhere_with_a_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_pki(dir.path());
    let (broker, _) = start(Config {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ca_certs: vec![ca.clone()],
        ..test_config()
    })
    .await;
    assert!(broker.base_url().starts_with("https://"));
    let ca_cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca_cert])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without the CA the handshake fails: the channel is really TLS.
    assert!(
        http()
            .get(format!("{}/v1/registry", broker.base_url()))
            .send()
            .await
            .is_err()
    );
    let api = BrokerApi::new(trusting.clone(), broker.base_url());

    // A provider served over HTTPS by a certificate of the same CA.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Fake {
        base_url: format!("https://{addr}"),
        state: std::sync::Arc::new(FakeState::default()),
        http: trusting.clone(),
    };
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
        .await
        .unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)
        .unwrap()
        .handle(handle.clone())
        .serve(fake_router(fake.clone()).into_make_service());
    let server = tokio::spawn(server);

    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let (_, got) = fake.last_input();
    assert_eq!(got.unwrap(), stl(), "the provider downloaded over https");
    let healed = b"healed over tls".to_vec();
    fake.set_result(healed.clone());
    let done = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Completed {
            result: JobResult {
                download: fake.result_download(&healed, unix_now() + 60),
                format: "stl".into(),
                report: None,
                charged: None,
            },
        },
    );
    let (st, ack) = post_event_raw(
        &trusting,
        &s.reg,
        &s.ring,
        "msg_tls",
        unix_now(),
        &serde_json::to_vec(&done).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{ack}");
    assert_eq!(user.download(&model.model_id, 2).await.unwrap(), healed);
    handle.graceful_shutdown(None);
    let _ = server.await;
    broker.shutdown().await;
}

#[tokio::test]
async fn input_delivery_is_retried_with_the_same_message_id() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.input_failures_left.lock().unwrap() = 2;
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let ids = fake.state.input_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.iter().all(|i| i == &ids[0] && i.starts_with("msg_")));
    assert_eq!(fake.state.inputs.lock().unwrap().len(), 1);
    let log = api
        .messages(&MessageFilter {
            direction: Some("out".into()),
            job_id: Some(job.job_id.to_string()),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        log.messages
            .iter()
            .filter(|m| m.status == Some(503))
            .count(),
        2
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn concurrent_duplicate_completions_store_one_version() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let healed = b"healed once".to_vec();
    fake.set_result(healed.clone());
    let done = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Completed {
            result: JobResult {
                download: fake.result_download(&healed, unix_now() + 60),
                format: "stl".into(),
                report: None,
                charged: None,
            },
        },
    );
    let body = serde_json::to_vec(&done).unwrap();
    let h = http();
    let now = unix_now();
    let (a, b) = tokio::join!(
        post_event_raw(&h, &s.reg, &s.ring, "msg_twin_a", now, &body),
        post_event_raw(&h, &s.reg, &s.ring, "msg_twin_b", now, &body),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let dups = [&a.1, &b.1]
        .iter()
        .filter(|v| v["duplicate"] == true)
        .count();
    assert_eq!(dups, 1, "{a:?} {b:?}");
    assert_eq!(user.model(&model.model_id).await.unwrap().versions.len(), 2);
    assert_eq!(user.notifications().await.unwrap().notifications.len(), 1);
    broker.shutdown().await;
}
