//! Job intake, work and callbacks over real HTTP, on SQLite and PostgreSQL.

use std::time::Duration;

use crate::support::*;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::{BrokerMessage, JobEventKind, JobState, JobStatus, Scheme};
use diax_sdk::{MessageId, ProblemType};
use fixmyprint::service::{self, ExecutionOutcome, queue};

/// The story: unknown account → 401, empty balance → 402, top-up → 202, input, work,
/// callbacks, result behind a credential, exactly one charge.
async fn full_story(backend: Backend, scheme: Scheme) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start_with(scheme).await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    register(&provider, &broker).await;
    let model = fixmyprint::heal::generate::broken_model(3, 2_000);

    // No account in the offer.
    let offer = broker.offer(None, model.len() as u64);
    let (status, headers, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(body["type"], ProblemType::AccountRequired.uri());
    assert_eq!(
        body["register_url"],
        format!("{}/v1/accounts", provider.base_url())
    );

    // An account the provider never issued.
    let offer = broker.offer(Some(&diax_sdk::AccountId::generate()), 10);
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], ProblemType::AccountRequired.uri());

    // A known account with no money.
    let account = create_account(&provider, "Gareth").await;
    let offer = broker.offer_for(Some(&account.account_id), &model);
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer.clone()),
    )
    .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["type"], ProblemType::PaymentRequired.uri());
    assert_eq!(
        body["top_up_url"],
        format!("{}/v1/accounts/me/top-up", provider.base_url())
    );
    let quote = body["quote"]["amount"].as_i64().unwrap();
    assert_eq!(quote, 60, "50 + 10 per started MiB");
    assert_eq!(body["quote"]["currency"], "EUR");

    // Top up and retry the same broker job (a new webhook-id).
    top_up(&provider, &account.api_key, 1_000).await;
    let first_id = MessageId::generate();
    let (status, headers, body) = send_signed(
        &provider,
        &broker,
        &first_id,
        &BrokerMessage::Offer(offer.clone()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let pjob = body["provider_job_id"].as_str().unwrap().to_owned();
    let status_url = format!("{}/diax/jobs/{pjob}", provider.base_url());
    assert_eq!(body["status_url"], status_url);
    assert_eq!(
        headers.get("location").unwrap().to_str().unwrap(),
        status_url
    );
    assert_eq!(body["quote"]["amount"], quote);

    // Redelivery of the same message: same answer; a new message for the same job: same job.
    let (status, _, again) = send_signed(
        &provider,
        &broker,
        &first_id,
        &BrokerMessage::Offer(offer.clone()),
    )
    .await;
    assert_eq!((status, &again), (202, &body));
    let (status, _, again) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer.clone()),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(again["provider_job_id"], pjob.as_str());
    // The same id over a different body is a replay.
    let mut other = offer.clone();
    other.job_id = diax_sdk::JobId::generate();
    let (status, _, body) =
        send_signed(&provider, &broker, &first_id, &BrokerMessage::Offer(other)).await;
    assert_eq!(status, 409);
    assert_eq!(body["type"], ProblemType::ReplayedMessage.uri());

    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(1_000 - quote), Some(quote))
    );

    // Input, then the worker (driven by hand), then the outbox.
    let input = diax_sdk::wire::JobInput {
        job_id: offer.job_id.clone(),
        provider_job_id: diax_sdk::ProviderJobId::parse(pjob.clone()).unwrap(),
        download: broker.host_model(&model),
    };
    let input_id = MessageId::generate();
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &input_id,
        &BrokerMessage::Input(input.clone()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "accepted");
    let outcome = service::try_execute_job(provider.service(), "t")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            provider_job_id: pjob.clone()
        }
    );
    assert_eq!(
        service::try_execute_job(provider.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::EmptyQueue
    );
    drain_outbox(&provider).await;
    let events = broker.events_for(&offer.job_id);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["job.progress", "job.progress", "job.completed"]);
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let JobEventKind::Completed { result } = &events[2].kind else {
        panic!("not completed")
    };
    assert_eq!(result.format, "stl");
    assert_eq!(result.charged.as_ref().unwrap().amount, quote);
    assert!(result.report.is_some());

    // The result behind its credential: right one works, others are refused.
    let dl = &result.download;
    assert_eq!(dl.url, format!("{}/results/{pjob}", provider.base_url()));
    let bytes = diax_sdk::client::download_to_vec(&client(), dl, &Default::default())
        .await
        .expect("result downloads with size and digest checks");
    assert_eq!(sha256_hex(&bytes), dl.sha256);
    let auth = dl.authorization.clone().unwrap();
    let resp = client()
        .get(&dl.url)
        .header("authorization", "Bearer rc_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client().get(&dl.url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(format!("{}/results/pjob_other", provider.base_url()))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client()
        .delete(&dl.url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // The repair picture beside it, behind the same credential: a PNG, digest as offered.
    let picture = result
        .picture
        .as_ref()
        .expect("job.completed offers a picture");
    assert_eq!(picture.url, format!("{}/picture", dl.url));
    assert_eq!(picture.authorization.as_deref(), Some(auth.as_str()));
    let png = diax_sdk::client::download_to_vec(&client(), picture, &Default::default())
        .await
        .expect("the picture downloads with size and digest checks");
    assert!(png.starts_with(&diax_sdk::wire::PNG_SIGNATURE));
    let resp = client().get(&picture.url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(format!(
            "{}/results/pjob_other/picture",
            provider.base_url()
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Status (its owner only), money.
    let (code, body) = get_json(&status_url, None).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["type"], ProblemType::Unauthorized.uri());
    let stranger = create_account(&provider, "Stranger").await;
    let (code, body) = get_json(&status_url, Some(&stranger.api_key)).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["type"], ProblemType::NotFound.uri());
    let (code, status) = get_json(&status_url, Some(&account.api_key)).await;
    assert_eq!(code, 200);
    let status: JobStatus = serde_json::from_value(status).unwrap();
    assert_eq!(
        (status.state, status.progress),
        (JobState::Completed, Some(100))
    );
    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(1_000 - quote), Some(0))
    );

    // Everything again after completion: same job, same state, nothing charged twice.
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer.clone()),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        (body["provider_job_id"].as_str(), body["state"].as_str()),
        (Some(pjob.as_str()), Some("completed"))
    );
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &input_id,
        &BrokerMessage::Input(input.clone()),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (202, Some("accepted")),
        "redelivery answers as before"
    );
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Input(input),
    )
    .await;
    assert_eq!((status, body["state"].as_str()), (202, Some("completed")));
    assert_eq!(
        service::try_execute_job(provider.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::EmptyQueue
    );
    let (_, ledger) = get_json(
        &format!("{}/v1/accounts/me/ledger", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    let kinds: Vec<&str> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["top_up", "hold", "capture"]);
    provider.shutdown().await;
}
every_backend_and_scheme!(full_story);

/// A file that is not an STL ends in `job.failed` (model-invalid), nothing charged.
async fn non_stl_fails_and_releases(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Ann").await;
    top_up(&provider, &account.api_key, 500).await;
    let job = accept_job(
        &provider,
        &broker,
        &account,
        b"this is not an STL file at all",
    )
    .await;
    let outcome = service::try_execute_job(provider.service(), "t")
        .await
        .unwrap();
    let ExecutionOutcome::Failed { problem, .. } = outcome else {
        panic!("expected failure, got {outcome:?}")
    };
    assert!(problem.is(ProblemType::ModelInvalid), "{problem:?}");
    drain_outbox(&provider).await;
    let events = broker.events_for(&job.offer.job_id);
    let JobEventKind::Failed { problem, charged } = &events.last().unwrap().kind else {
        panic!("last event is not job.failed: {events:?}")
    };
    assert!(problem.is(ProblemType::ModelInvalid));
    assert_eq!(charged.as_ref().map(|q| q.amount), Some(0), "{charged:?}");
    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(500), Some(0))
    );
    let (_, status) = get_json(
        &format!("{}/diax/jobs/{}", provider.base_url(), job.provider_job_id),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["problem"]["type"], ProblemType::ModelInvalid.uri());
    provider.shutdown().await;
}
both_backends!(non_stl_fails_and_releases);

/// A worker that claimed a job and died: after the lease, another worker runs it, and the
/// dead worker's late completion would be refused.
async fn lease_expiry_after_crash(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let mut config = test_config(&db, db.dir());
    config.job_lease = Duration::from_millis(300);
    let provider = start_provider(config).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Bo").await;
    top_up(&provider, &account.api_key, 500).await;
    let model = fixmyprint::heal::generate::broken_model(5, 1_000);
    let job = accept_job(&provider, &broker, &account, &model).await;

    // The "crashed" worker claims and never comes back.
    let claimed = queue::claim(
        provider.service().db(),
        "dead-instance/w0",
        Duration::from_millis(300),
    )
    .await
    .unwrap()
    .expect("claimable");
    assert_eq!(claimed.provider_job_id, job.provider_job_id);
    assert_eq!(
        service::try_execute_job(provider.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::EmptyQueue,
        "leased jobs are not claimed"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        service::try_execute_job(provider.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::Completed {
            provider_job_id: job.provider_job_id.to_string()
        }
    );
    // The dead worker cannot heartbeat or release any more.
    assert!(
        !queue::heartbeat(
            provider.service().db(),
            job.provider_job_id.as_str(),
            "dead-instance/w0",
            Duration::from_secs(1)
        )
        .await
        .unwrap()
    );
    drain_outbox(&provider).await;
    assert_eq!(broker.terminal_events().len(), 1);
    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(me["balance"].as_i64(), Some(500 - 60));
    assert_eq!(me["held"].as_i64(), Some(0));
    provider.shutdown().await;
}
both_backends!(lease_expiry_after_crash);

/// The crash budget: a job whose every claim ended without a result (its worker died each
/// time) fails as `model-invalid` once claimed more than `max_job_attempts` times, never
/// `internal`; its hold is released and nothing is charged.
async fn the_crash_budget_fails_the_job_as_model_invalid(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let mut config = test_config(&db, db.dir());
    config.job_lease = Duration::from_millis(200);
    config.max_job_attempts = 1;
    let provider = start_provider(config).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Cr").await;
    top_up(&provider, &account.api_key, 500).await;
    let model = fixmyprint::heal::generate::broken_model(5, 1_000);
    let job = accept_job(&provider, &broker, &account, &model).await;

    // The one attempt of the budget: a worker that claims and dies.
    queue::claim(
        provider.service().db(),
        "dead-instance/w0",
        Duration::from_millis(200),
    )
    .await
    .unwrap()
    .expect("claimable");
    // Polled until the lease has expired and the job is claimed again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        let outcome = service::try_execute_job(provider.service(), "t")
            .await
            .unwrap();
        if outcome != ExecutionOutcome::EmptyQueue {
            break outcome;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match &outcome {
        ExecutionOutcome::Failed {
            provider_job_id,
            problem,
        } => {
            assert_eq!(provider_job_id, job.provider_job_id.as_str());
            assert!(problem.is(ProblemType::ModelInvalid), "{problem:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    drain_outbox(&provider).await;
    let events = broker.events_for(&job.offer.job_id);
    let last = events.last().expect("events");
    assert_eq!(last.kind.state(), JobState::Failed, "{events:?}");
    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(500), Some(0))
    );
    provider.shutdown().await;
}
both_backends!(the_crash_budget_fails_the_job_as_model_invalid);

/// The broker answers 503 for a while: the outbox loop retries with the same webhook-id
/// until it gets a 2xx; background workers do the job on their own.
async fn outbox_redelivery_while_broker_down(backend: Backend, scheme: Scheme) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start_with(scheme).await;
    let mut config = test_config(&db, db.dir());
    config.workers = 1;
    config.outbox_workers = 1;
    let provider = start_provider(config).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Cy").await;
    top_up(&provider, &account.api_key, 500).await;
    broker
        .state
        .fail_next
        .store(5, std::sync::atomic::Ordering::SeqCst);
    let model = fixmyprint::heal::generate::broken_model(9, 1_000);
    let job = accept_job(&provider, &broker, &account, &model).await;
    let done = wait_until(Duration::from_secs(20), || async {
        broker
            .events_for(&job.offer.job_id)
            .iter()
            .any(|e| e.kind.name() == "job.completed")
    })
    .await;
    assert!(done, "completed event delivered despite the outage");
    let attempts = broker.state.attempts.lock().unwrap().clone();
    assert!(attempts.iter().filter(|a| a.2 == 503).count() == 5);
    // Every attempt of one event carried the same webhook-id.
    for (id, event, _) in &attempts {
        for (id2, event2, _) in &attempts {
            if event.sequence == event2.sequence && event.job_id == event2.job_id {
                assert_eq!(id, id2);
            }
        }
    }
    // The broker records an event before its answer reaches the provider, which only then
    // marks the message delivered.
    let settled = wait_until(Duration::from_secs(20), || async {
        service::outbox::counts(provider.service()).await.unwrap().0 == 0
    })
    .await;
    assert!(settled, "outbox drained");
    let (pending, delivered, dead) = service::outbox::counts(provider.service()).await.unwrap();
    assert_eq!((pending, delivered, dead), (0, 3, 0));
    provider.shutdown().await;
}
every_backend_and_scheme!(outbox_redelivery_while_broker_down);

/// Bad signed input: unsigned, wrong content type, malformed JSON, unknown message type,
/// unknown job for an input, stale timestamp; the service keeps serving.
async fn bad_signed_input(backend: Backend, scheme: Scheme) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start_with(scheme).await;
    let provider = start_provider(test_config(&db, db.dir())).await;

    // Not registered yet: signed messages cannot be checked.
    let resp = client()
        .post(format!("{}/diax/jobs", provider.base_url()))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", diax_sdk::clock::unix_now().to_string())
        .header("webhook-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    register(&provider, &broker).await;

    let url = format!("{}/diax/jobs", provider.base_url());
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let p: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(p["type"], ProblemType::SignatureMissing.uri());
    let resp = client()
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let (status, _, body) = send_raw_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = send_raw_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        br#"{"type":"job.explode"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let big = vec![b' '; 2 * 1024 * 1024];
    let (status, _, _) = send_raw_signed(&provider, &broker, &MessageId::generate(), big).await;
    assert_eq!(status, 413);
    // Tampered: signed by another key of the scheme, and by a key of the other scheme.
    let other_scheme = match scheme {
        Scheme::V1 => diax_sdk::Keyring::single(
            diax_sdk::KeyId::generate(),
            diax_sdk::SigningKey::generate(),
        ),
        Scheme::V1a => {
            diax_sdk::Keyring::single(diax_sdk::KeyId::generate(), diax_sdk::Secret::generate())
        }
    };
    for stranger in [broker.stranger(), other_scheme] {
        let resp = diax_sdk::client::SignedSender::new(client())
            .send_once(&url, &MessageId::generate(), b"{}".to_vec(), &stranger)
            .await
            .unwrap();
        assert_eq!(resp.status, 401);
        let p: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(p["type"], ProblemType::SignatureInvalid.uri());
    }
    // Stale timestamp.
    let ring = broker.keyring();
    let old = diax_sdk::clock::unix_now() - 3600;
    let signed = ring.sign(&MessageId::generate(), old, b"{}").unwrap();
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", signed.id.as_str())
        .header("webhook-timestamp", old.to_string())
        .header("webhook-signature", &signed.signature)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Input for a job that does not exist.
    let input = diax_sdk::wire::JobInput {
        job_id: diax_sdk::JobId::generate(),
        provider_job_id: diax_sdk::ProviderJobId::generate(),
        download: broker.host_model(b"x"),
    };
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Input(input),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // An operation this provider does not run.
    let account = create_account(&provider, "Di").await;
    let mut offer = broker.offer(Some(&account.account_id), 10);
    offer.operation = "slice".into();
    let (status, _, body) = send_signed(
        &provider,
        &broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], ProblemType::UnsupportedOperation.uri());
    // Unknown status id.
    let (status, body) = get_json(&format!("{url}/pjob_nope"), Some(&account.api_key)).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some(ProblemType::NotFound.uri().as_str()))
    );
    // Still serving.
    let (status, _) = get_json(&format!("{}/readyz", provider.base_url()), None).await;
    assert_eq!(status, 200);
    provider.shutdown().await;
}
every_backend_and_scheme!(bad_signed_input);

/// Graceful shutdown releases what this instance still leases; after a restart on the same
/// database the job completes and is charged once.
async fn shutdown_releases_and_restart_completes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let config = test_config(&db, db.dir());
    let provider = start_provider(config.clone()).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Flo").await;
    top_up(&provider, &account.api_key, 500).await;
    let model = fixmyprint::heal::generate::broken_model(13, 1_000);
    let job = accept_job(&provider, &broker, &account, &model).await;
    let owner = format!("{}/w7", provider.service().instance_id());
    let claimed = queue::claim(provider.service().db(), &owner, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("claimable");
    assert_eq!(claimed.state, queue::JobPhase::Running);
    provider.shutdown().await;

    let restarted = start_provider(config).await;
    let row = queue::get(restarted.service().db(), job.provider_job_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state.as_str(), row.lease_owner), ("accepted", None));
    assert_eq!(
        service::try_execute_job(restarted.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::Completed {
            provider_job_id: job.provider_job_id.to_string()
        }
    );
    drain_outbox(&restarted).await;
    assert_eq!(broker.terminal_events().len(), 1);
    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", restarted.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(440), Some(0))
    );
    restarted.shutdown().await;
}
both_backends!(shutdown_releases_and_restart_completes);

/// A stored job whose id does not decode is an error naming the column, never a made-up id
/// (the state column has a CHECK constraint).
async fn corrupt_job_rows_are_errors(backend: Backend) {
    use sqlx::Connection as _;
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Gus").await;
    top_up(&provider, &account.api_key, 500).await;
    let model = fixmyprint::heal::generate::broken_model(5, 500);
    let job = accept_job(&provider, &broker, &account, &model).await;
    let id = job.provider_job_id.as_str().to_owned();
    for (column, update) in [(
        "broker_job_id",
        "UPDATE jobs SET broker_job_id = 'bad id!' WHERE provider_job_id = $1",
    )] {
        match backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query(update).bind(&id).execute(&mut c).await.unwrap();
                let _ = c.close().await;
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query(update).bind(&id).execute(&mut c).await.unwrap();
                let _ = c.close().await;
            }
        }
        let err = queue::get(provider.service().db(), &id).await.unwrap_err();
        assert!(err.to_string().contains(column), "{column}: {err}");
    }
    provider.shutdown().await;
}
both_backends!(corrupt_job_rows_are_errors);

/// Expired result credentials go with their files; unfinished writes left by a crash go
/// once old; everything else stays.
async fn sweep_removes_expired_results_and_old_partial_writes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Hal").await;
    top_up(&provider, &account.api_key, 500).await;
    let model = fixmyprint::heal::generate::broken_model(4, 500);
    let job = accept_job(&provider, &broker, &account, &model).await;
    assert!(matches!(
        service::try_execute_job(provider.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::Completed { .. }
    ));
    drain_outbox(&provider).await;
    let events = broker.events_for(&job.offer.job_id);
    let Some(JobEventKind::Completed { result }) = events.last().map(|e| &e.kind) else {
        panic!("not completed")
    };
    let dl = result.download.clone();
    let results = db.dir().join("results");
    let stored = || {
        std::fs::read_dir(&results)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let old_part = results.join(".pjob_x_1.crashed.part");
    let new_part = results.join(".pjob_y_1.writing.part");
    std::fs::write(&old_part, b"half").unwrap();
    std::fs::write(&new_part, b"half").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old_part)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    // The result, its picture and the two unfinished writes.
    assert_eq!(stored().len(), 4, "{:?}", stored());
    assert!(result.picture.is_some());

    // Before expiry: only the old unfinished write goes.
    let now = diax_sdk::clock::unix_now();
    let swept = service::janitor::sweep(provider.service(), now)
        .await
        .unwrap();
    assert_eq!((swept.expired_results, swept.partial_files), (0, 1));
    assert!(!old_part.exists() && new_part.exists());
    diax_sdk::client::download_to_vec(&client(), &dl, &Default::default())
        .await
        .expect("result still there");

    // After expiry (a day and more): the credential, its file and its picture go.
    let swept = service::janitor::sweep(provider.service(), now + 2 * 86_400)
        .await
        .unwrap();
    assert_eq!((swept.expired_results, swept.partial_files), (1, 0));
    assert_eq!(stored(), [".pjob_y_1.writing.part"]);
    let resp = client()
        .get(&dl.url)
        .header("authorization", dl.authorization.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    provider.shutdown().await;
}
both_backends!(sweep_removes_expired_results_and_old_partial_writes);

/// A `job.completed` whose result credential expired before the broker took it is not sent
/// (the broker could no longer fetch the result): the message is stopped and recorded as
/// dead, never re-sent forever.
async fn a_completed_event_with_an_expired_result_is_stopped(backend: Backend) {
    use sqlx::Connection as _;
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    register(&provider, &broker).await;
    let account = create_account(&provider, "Ivy").await;
    top_up(&provider, &account.api_key, 500).await;
    let model = fixmyprint::heal::generate::broken_model(6, 500);
    let job = accept_job(&provider, &broker, &account, &model).await;
    assert!(matches!(
        service::try_execute_job(provider.service(), "t")
            .await
            .unwrap(),
        ExecutionOutcome::Completed { .. }
    ));
    let expire = "UPDATE result_credentials SET expires_at = 0";
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(expire).execute(&mut c).await.unwrap();
            let _ = c.close().await;
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(expire).execute(&mut c).await.unwrap();
            let _ = c.close().await;
        }
    }
    drain_outbox(&provider).await;
    let events = broker.events_for(&job.offer.job_id);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert!(!kinds.contains(&"job.completed"), "{kinds:?}");
    let (pending, _, dead) = service::outbox::counts(provider.service()).await.unwrap();
    assert_eq!((pending, dead), (0, 1));
    provider.shutdown().await;
}
both_backends!(a_completed_event_with_an_expired_result_is_stopped);
