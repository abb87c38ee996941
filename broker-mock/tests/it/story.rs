//! The seed story end to end against a fake provider, and the refusals a provider can relay.

use broker_mock::Config;
use broker_mock::client::MessageFilter;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

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
        Secret::parse(s.reg.secret.as_deref().unwrap()).unwrap(),
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
                picture: None,
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
    // What the provider charged is shown beside what it quoted.
    assert_eq!(job.charged, Some(Quote::new(250, "EUR")));
    assert_eq!(job.quote, Some(Quote::new(250, "EUR")));
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
