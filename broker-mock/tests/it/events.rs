//! Signed provider events: every refusal, and concurrent duplicates acting once.

use broker_mock::client::MessageFilter;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn event_refusals() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
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
    // Wrong secret, stale, future. The tolerance is 300 s; the broker reads its clock a
    // moment after `now` was taken (seconds later on a busy machine), so the timestamps are
    // well outside it: one just over 300 s ahead would come back inside once a second ticks.
    let stranger = Keyring::single(s.reg.key_id.clone(), Secret::generate());
    for (ring, ts, status, slug) in [
        (&stranger, now, 401, "signature-invalid"),
        (&s.ring, now - 400, 401, "timestamp-out-of-tolerance"),
        (&s.ring, now + 400, 401, "timestamp-out-of-tolerance"),
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
                picture: None,
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
                picture: None,
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
            charged: Some(Quote::new(0, "EUR")),
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
    // The user sees that the failed job charged nothing.
    let shown = user.job(&job.job_id).await.unwrap();
    assert_eq!(shown.charged, Some(Quote::new(0, "EUR")));
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
                picture: None,
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
