//! Durable `job.input` delivery, over real HTTP on port 0: re-sent with a fresh credential
//! and a new `webhook-id` until the provider takes it, given up (job failed) after the
//! configured attempts or on a 4xx, stopped by the provider's own report, kept across a
//! restart.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use broker_mock::client::MessageFilter;
use broker_mock::{BrokerApi, Config, LoggedMessage, UserClient};
use diax_sdk::clock::unix_now;
use diax_sdk::wire::*;
use diax_sdk::*;

use crate::common::*;

/// One HTTP request per attempt, so attempts and requests can be counted alike.
fn config() -> Config {
    Config {
        send_attempts: 1,
        ..test_config()
    }
}

/// Polls the job until `done` holds (generous deadline: the machine may be busy).
async fn job_until(user: &UserClient, id: &JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = user.job(id).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn delivery(job: &Job) -> &InputDelivery {
    job.input_delivery.as_ref().expect("an input delivery")
}

async fn outbound_log(api: &BrokerApi, job: &JobId) -> Vec<LoggedMessage> {
    api.messages(&MessageFilter {
        direction: Some("out".into()),
        job_id: Some(job.to_string()),
        limit: Some(1000),
        ..MessageFilter::default()
    })
    .await
    .unwrap()
    .messages
}

fn input_attempts_logged(log: &[LoggedMessage]) -> Vec<&LoggedMessage> {
    log.iter()
        .filter(|m| m.verdict.starts_with("job.input attempt") && m.status.is_some())
        .collect()
}

#[tokio::test]
async fn a_refused_input_is_sent_again_with_a_fresh_credential_until_taken() {
    let (broker, api) = start(config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.input_failures_left.lock().unwrap() = 3;
    let (_, user, model, job) = linked_job(&api, &fake, &s, &broker).await;
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    // The first attempt was made before the answer (a later one may have been made too).
    let d = delivery(&job);
    assert_eq!(d.state, InputDeliveryState::Pending, "{d:?}");
    assert!(d.attempts >= 1 && d.next_attempt_at.is_some(), "{d:?}");
    assert!(d.last_error.as_deref().unwrap().contains("503"), "{d:?}");

    let job = job_until(&user, &job.job_id, "the input delivered", |j| {
        delivery(j).state == InputDeliveryState::Delivered
    })
    .await;
    let d = delivery(&job);
    assert_eq!(d.attempts, 4, "{d:?}");
    assert!(d.delivered_at.is_some() && d.next_attempt_at.is_none() && d.last_error.is_none());

    // Four messages: each with its own webhook-id and its own, unexpired credential.
    let sent = fake.state.input_messages.lock().unwrap().clone();
    assert_eq!(sent.len(), 4, "{sent:?}");
    let ids: HashSet<_> = sent.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 4, "{sent:?}");
    let creds: HashSet<_> = sent
        .iter()
        .map(|(_, i)| i.download.authorization.clone().unwrap())
        .collect();
    assert_eq!(creds.len(), 4, "{sent:?}");
    for (_, input) in &sent {
        assert_eq!(input.job_id, job.job_id);
        assert_eq!(Some(&input.provider_job_id), job.provider_job_id.as_ref());
        assert!(input.download.expires_at > unix_now());
    }
    // The last one opened the model.
    let (taken, fetched) = fake.last_input();
    assert_eq!(&taken, &sent[3].1);
    assert_eq!(fetched.unwrap(), stl());

    // Every attempt is in the message log, with its status and reason.
    let log = outbound_log(&api, &job.job_id).await;
    let attempts = input_attempts_logged(&log);
    assert_eq!(attempts.len(), 4, "{log:#?}");
    let refused: Vec<_> = attempts.iter().filter(|m| m.status == Some(503)).collect();
    assert_eq!(refused.len(), 3, "{log:#?}");
    assert!(refused.iter().all(|m| m.reason.is_some()), "{log:#?}");
    for n in 1..=4 {
        let label = format!("job.input attempt {n}/10:");
        assert!(
            attempts.iter().any(|m| m.verdict.starts_with(&label)),
            "{label} {log:#?}"
        );
    }
    let logged_ids: HashSet<_> = attempts
        .iter()
        .map(|m| m.headers["webhook-id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged_ids, ids);

    // The job proceeds when the provider calls back.
    let healed = b"healed".to_vec();
    fake.set_result(healed.clone());
    let h = http();
    for (seq, kind) in [
        (
            1,
            JobEventKind::Progress {
                percent: 50,
                stage: None,
            },
        ),
        (
            2,
            JobEventKind::Completed {
                result: JobResult {
                    download: fake.result_download(&healed, unix_now() + 60),
                    format: "stl".into(),
                    report: None,
                    charged: None,
                    picture: None,
                },
            },
        ),
    ] {
        let body = serde_json::to_vec(&event(&job, &s.reg, seq, kind)).unwrap();
        let (st, ack) = post_event_raw(
            &h,
            &s.reg,
            &s.ring,
            &format!("msg_ev{seq}"),
            unix_now(),
            &body,
        )
        .await;
        assert_eq!(st, 200, "{ack}");
    }
    let job = user.job(&job.job_id).await.unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(delivery(&job).state, InputDeliveryState::Delivered);
    assert_eq!(user.download(&model.model_id, 2).await.unwrap(), healed);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_broker_gives_up_after_the_configured_attempts_and_fails_the_job() {
    let (broker, api) = start(Config {
        input_max_attempts: 3,
        ..config()
    })
    .await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.input_failures_left.lock().unwrap() = u32::MAX;
    let (_, user, _model, job) = linked_job(&api, &fake, &s, &broker).await;
    let job = job_until(&user, &job.job_id, "the job failed", |j| {
        j.state == JobState::Failed
    })
    .await;
    let d = delivery(&job);
    assert_eq!(
        (d.state, d.attempts),
        (InputDeliveryState::Failed, 3),
        "{d:?}"
    );
    assert!(d.next_attempt_at.is_none() && d.last_error.as_deref().unwrap().contains("503"));
    let p = job.problem.clone().unwrap();
    assert!(p.is(ProblemType::UpstreamFailed), "{p:?}");
    assert_eq!(
        p.extensions.get("input_attempts"),
        Some(&serde_json::json!(3))
    );
    assert!(p.detail.unwrap().contains("could not deliver"));
    assert_eq!(fake.state.input_messages.lock().unwrap().len(), 3);

    // The message log says so.
    let log = outbound_log(&api, &job.job_id).await;
    assert_eq!(input_attempts_logged(&log).len(), 3, "{log:#?}");
    assert!(
        log.iter()
            .any(|m| m.verdict.contains("gives up") && m.reason.is_some()),
        "{log:#?}"
    );
    // The user is told, and the provider's late report is refused.
    let n = user.notifications().await.unwrap().notifications;
    assert!(
        n.iter()
            .any(|n| n.job_id == job.job_id && n.event == "job.failed"),
        "{n:?}"
    );
    let progress = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Progress {
            percent: 10,
            stage: None,
        },
    );
    let (st, body) = post_event_raw(
        &http(),
        &s.reg,
        &s.ring,
        "msg_late",
        unix_now(),
        &serde_json::to_vec(&progress).unwrap(),
    )
    .await;
    assert_eq!((st, problem_type(&body)), (409, "invalid-transition"));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_4xx_fails_the_job_at_once_and_a_409_counts_as_delivered() {
    let (broker, api) = start(config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;

    // 400: the provider will never take this input; no second attempt.
    *fake.state.input_refusal.lock().unwrap() =
        Some(Problem::new(ProblemType::InvalidRequest).with_detail("the input names no known job"));
    *fake.state.input_failures_left.lock().unwrap() = u32::MAX;
    let (_, user, _model, job) = linked_job(&api, &fake, &s, &broker).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let d = delivery(&job);
    assert_eq!(
        (d.state, d.attempts),
        (InputDeliveryState::Failed, 1),
        "{d:?}"
    );
    assert!(
        d.last_error.as_deref().unwrap().contains("no known job"),
        "{d:?}"
    );
    assert!(job.problem.clone().unwrap().is(ProblemType::UpstreamFailed));
    let log = outbound_log(&api, &job.job_id).await;
    assert!(
        log.iter().any(|m| m.verdict.contains("not retried")),
        "{log:#?}"
    );
    assert_eq!(fake.state.input_messages.lock().unwrap().len(), 1);

    // 409: the provider has the input already (say, an earlier attempt's answer was lost).
    *fake.state.input_refusal.lock().unwrap() =
        Some(Problem::new(ProblemType::Conflict).with_detail("job already has its input"));
    let job = user
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: job.input.model_id.clone(),
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    let d = delivery(&job);
    assert_eq!(
        (d.state, d.attempts),
        (InputDeliveryState::Delivered, 1),
        "{d:?}"
    );
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .contains("taken as delivered")
    );
    assert_eq!(fake.state.input_messages.lock().unwrap().len(), 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_providers_own_report_stops_the_attempts() {
    // A long backoff: the second attempt is only ever made when the clock is moved.
    let (broker, api) = start(Config {
        input_backoff_ms: 60_000,
        input_max_backoff_ms: 60_000,
        ..config()
    })
    .await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.input_failures_left.lock().unwrap() = u32::MAX;
    let (_, user, _model, job) = linked_job(&api, &fake, &s, &broker).await;
    assert_eq!(delivery(&job).state, InputDeliveryState::Pending);
    // The provider got the input after all and reports the job's end.
    let failed = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Failed {
            problem: Problem::new(ProblemType::Internal).with_detail("printer on fire"),
            charged: None,
        },
    );
    let (st, ack) = post_event_raw(
        &http(),
        &s.reg,
        &s.ring,
        "msg_fail",
        unix_now(),
        &serde_json::to_vec(&failed).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{ack}");
    let job = user.job(&job.job_id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    let d = delivery(&job);
    assert_eq!(
        (d.state, d.attempts),
        (InputDeliveryState::Stopped, 1),
        "{d:?}"
    );
    assert!(d.next_attempt_at.is_none());
    // Past the backoff, the deliverer runs many times and sends nothing more.
    broker.clock().advance(120);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.state.input_messages.lock().unwrap().len(), 1);
    assert_eq!(
        delivery(&user.job(&job.job_id).await.unwrap()).state,
        InputDeliveryState::Stopped
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_pending_input_survives_a_restart_and_is_delivered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        db: dir.path().join("broker.db").display().to_string(),
        input_backoff_ms: 60_000,
        input_max_backoff_ms: 60_000,
        ..config()
    };
    let (broker, api) = start(cfg.clone()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    *fake.state.input_failures_left.lock().unwrap() = u32::MAX;
    let (key, _, model, job) = linked_job(&api, &fake, &s, &broker).await;
    let d = delivery(&job);
    assert_eq!(
        (d.state, d.attempts),
        (InputDeliveryState::Pending, 1),
        "{d:?}"
    );
    broker.shutdown().await;

    // The provider is healthy again; the restarted broker finds the input still owed.
    *fake.state.input_failures_left.lock().unwrap() = 0;
    let (broker, api) = start(cfg).await;
    let user = api.user(key);
    let after = user.job(&job.job_id).await.unwrap();
    assert_eq!(delivery(&after), d);
    broker.clock().advance(120); // past the stored backoff
    let job = job_until(&user, &job.job_id, "the input delivered", |j| {
        delivery(j).state == InputDeliveryState::Delivered
    })
    .await;
    assert_eq!(delivery(&job).attempts, 2);
    let sent = fake.state.input_messages.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0].0, sent[1].0);
    assert_ne!(
        sent[0].1.download.authorization,
        sent[1].1.download.authorization
    );
    // The credential issued after the restart opens the model.
    assert_eq!(fake.last_input().1.unwrap(), stl());
    assert_eq!(user.model(&model.model_id).await.unwrap().versions.len(), 1);
    broker.shutdown().await;
    drop(dir);
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
