//! Hostile and slow peers: the result URL cannot reach other origins or private addresses
//! (SSRF), refusals do not echo what a server sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ::axum::Router;
use ::axum::routing::get;
use broker_mock::client::MessageFilter;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;

use crate::common::*;

const SECRET_FILE: &[u8] = b"internal-only: the database password is hunter2";

/// An internal-only server on loopback holding a secret file; counts its hits.
async fn internal_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().route(
        "/secret",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { SECRET_FILE }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = ::axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), hits)
}

/// The body of [`crate::common::completed`].
fn completed(job: &Job, s: &Setup, seq: u64, download: Download) -> Vec<u8> {
    serde_json::to_vec(&crate::common::completed(job, &s.reg, seq, download)).unwrap()
}

#[tokio::test]
async fn a_result_url_off_the_providers_origin_is_never_fetched() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let (internal, hits) = internal_server().await;
    let h = http();
    let now = unix_now();

    // Another loopback port, the cloud metadata address, another host: all off the origin
    // of the registered job URL, refused before any connection.
    let targets = [
        format!("{internal}/secret"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://internal.example/secret".to_owned(),
    ];
    for (i, url) in targets.iter().enumerate() {
        let dl = Download {
            url: url.clone(),
            authorization: None,
            expires_at: now + 600,
            size: SECRET_FILE.len() as u64,
            sha256: sha256_hex(b"a guess"),
        };
        let (st, p) = post_event_raw(
            &h,
            &s.reg,
            &s.ring,
            &format!("msg_ssrf_{i}"),
            now,
            &completed(&job, &s, 1, dl),
        )
        .await;
        assert_eq!(
            (st, problem_type(&p)),
            (502, "download-failed"),
            "{url}: {p}"
        );
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("not an allowed origin"), "{url}: {detail}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the internal server was reached"
    );

    // On the provider's origin, a wrong digest or size is refused naming the rule only:
    // neither the real digest nor the real size of what the server sent.
    let healed = b"healed bytes".to_vec();
    fake.set_result(healed.clone());
    let mut lying = fake.result_download(&healed, now + 600);
    lying.sha256 = sha256_hex(b"something else");
    let (st, p) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_lie_1",
        now,
        &completed(&job, &s, 1, lying),
    )
    .await;
    assert_eq!(st, 502, "{p}");
    let mut short = fake.result_download(&healed, now + 600);
    short.size += 7;
    let (st, p2) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_lie_2",
        now,
        &completed(&job, &s, 1, short),
    )
    .await;
    assert_eq!(st, 502, "{p2}");
    let log = api
        .messages(&MessageFilter {
            job_id: Some(job.job_id.to_string()),
            limit: Some(1000),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let everything = format!("{p} {p2} {}", serde_json::to_string(&log.messages).unwrap());
    assert!(!everything.contains(&sha256_hex(&healed)), "{everything}");
    assert!(
        !everything.contains(&format!("received {} bytes", healed.len())),
        "{everything}"
    );
    assert!(everything.contains("SHA-256 mismatch"), "{everything}");
    // Nothing was stored.
    assert_eq!(user.model(&model.model_id).await.unwrap().versions.len(), 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn by_default_the_broker_calls_no_loopback_address() {
    let config = broker_mock::Config {
        allow_private_addresses: false,
        ..test_config()
    };
    let (broker, api) = start(config).await;
    // Plain http to loopback: refused by scheme (https only) before any address rule.
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_, user) = new_user(&api, "mallory").await;
    let model = user.upload_model("cube.stl", stl()).await.unwrap();
    fake.add_account("acc_mallory");
    user.link(
        &s.reg.provider_id,
        &link_token(&s.reg, "acc_mallory", broker.clock().now()),
    )
    .await
    .unwrap();
    let outcome = user
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: model.model_id.clone(),
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await;
    assert!(
        !matches!(&outcome, Ok(j) if j.state == JobState::Accepted),
        "{outcome:?}"
    );
    assert!(fake.state.offers.lock().unwrap().is_empty());
    let log = api
        .messages(&MessageFilter {
            direction: Some("out".into()),
            limit: Some(100),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert!(
        log.messages.iter().any(|m| m
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("fetch refused: ")),
        "{:?}",
        log.messages
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn twenty_one_rotations_in_the_grace_period_do_not_lock_the_provider_out() {
    let (broker, api) = start(test_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    // The provider keeps every secret it was given, each active until its grace ends.
    let mut ring = s.ring.clone();
    for _ in 0..21 {
        let rotated = s
            .owner
            .rotate_secret(&s.reg.provider_id, &RotateSecret::default())
            .await
            .unwrap();
        ring.insert(
            rotated.key_id.clone(),
            diax_sdk::Secret::parse(rotated.secret.as_deref().unwrap()).unwrap(),
            None,
        );
    }
    let now = unix_now();
    assert_eq!(ring.active_at(now).count(), 22);
    let body = serde_json::to_vec(&event(
        &job,
        &s.reg,
        1,
        JobEventKind::Progress {
            percent: 10,
            stage: None,
        },
    ))
    .unwrap();
    let (st, p) = post_event_raw(&http(), &s.reg, &ring, "msg_after_21", now, &body).await;
    assert_eq!(st, 200, "{p}");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_junk_requests_keeps_the_message_log_bounded() {
    let config = broker_mock::Config {
        max_log_messages: 200,
        ..test_config()
    };
    let (broker, api) = start(config).await;
    let h = http();
    let long_path = format!("/{}", "a".repeat(4000));
    let long_agent = "z".repeat(4000);
    for i in 0..1000 {
        let resp = h
            .get(format!("{}{long_path}{i}", broker.base_url()))
            .header("user-agent", &long_agent)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    let log = api
        .messages(&MessageFilter {
            limit: Some(1000),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(log.messages.len(), 200, "the log is a ring of 200");
    // The newest are kept.
    assert!(log.messages[0].endpoint.ends_with('…'));
    for m in &log.messages {
        assert!(
            m.endpoint.len() <= 512, // the documented limit
            "{}",
            m.endpoint.len()
        );
        let agent = m.headers["user-agent"].as_str().unwrap();
        assert!(agent.len() <= 256, "{}", agent.len());
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn models_per_user_and_stored_bytes_have_quotas() {
    let config = broker_mock::Config {
        max_models_per_user: 2,
        max_stored_bytes_per_user: 1000,
        ..test_config()
    };
    let (broker, api) = start(config).await;
    let (_, user) = new_user(&api, "hoarder").await;
    user.upload_model("a.stl", vec![b'a'; 100]).await.unwrap();
    user.upload_model("b.stl", vec![b'b'; 100]).await.unwrap();
    let e = user
        .upload_model("c.stl", vec![b'c'; 100])
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden");
    let (_, other) = new_user(&api, "big").await;
    other.upload_model("a.stl", vec![b'a'; 600]).await.unwrap();
    let e = other
        .upload_model("b.stl", vec![b'b'; 600])
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "payload-too-large");
    assert_eq!(other.models().await.unwrap().models.len(), 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn expired_replay_rows_used_token_ids_and_credentials_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("broker.db").display());
    let config = broker_mock::Config {
        db: db.clone(),
        sweep_interval_ms: 20,
        ..test_config()
    };
    let (broker, api) = start(config).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    // A link (a used jti), an input (a credential), an event (a replay row).
    let (_user, _model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let body = serde_json::to_vec(&event(
        &job,
        &s.reg,
        1,
        JobEventKind::Progress {
            percent: 10,
            stage: None,
        },
    ))
    .unwrap();
    let (st, p) = post_event_raw(&http(), &s.reg, &s.ring, "msg_p1", unix_now(), &body).await;
    assert_eq!(st, 200, "{p}");
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let q = match table {
                "replay" => "SELECT COUNT(*) FROM replay",
                "used_jtis" => "SELECT COUNT(*) FROM used_jtis",
                _ => "SELECT COUNT(*) FROM credentials",
            };
            sqlx::query_scalar::<_, i64>(q)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    for table in ["replay", "used_jtis", "credentials"] {
        assert!(count(table).await > 0, "{table} is empty to begin with");
    }
    // Two days later, everything above has expired.
    broker.clock().advance(2 * 86_400);
    for _ in 0..250 {
        if count("replay").await + count("used_jtis").await + count("credentials").await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for table in ["replay", "used_jtis", "credentials"] {
        assert_eq!(count(table).await, 0, "{table} was not purged");
    }
    broker.shutdown().await;
}

/// A server that takes requests and never answers; counts them.
async fn tarpit() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().route(
        "/notify",
        ::axum::routing::post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                std::future::pending::<()>().await;
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = ::axum::serve(listener, app).await;
    });
    (format!("http://{addr}/notify"), hits)
}

/// A user with a notification URL, and one rejected job (so one notification) per `jobs`.
async fn notified_user(
    api: &broker_mock::BrokerApi,
    s: &Setup,
    url: String,
    jobs: usize,
) -> broker_mock::UserClient {
    let created = api
        .create_user(&CreateUser {
            name: "notified".into(),
            notification_url: Some(url),
        })
        .await
        .unwrap();
    let user = api.user(created.api_key.clone());
    let m = user.upload_model("x.stl", stl()).await.unwrap();
    for _ in 0..jobs {
        let job = user
            .create_job(&CreateJob {
                provider_id: s.reg.provider_id.clone(),
                model_id: m.model_id.clone(),
                version: None,
                operation: None,
                params: serde_json::Value::Null,
            })
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Rejected);
    }
    user
}

#[tokio::test]
async fn a_tarpit_destination_delays_only_itself() {
    // Each request to the tarpit hangs for the whole HTTP timeout, long enough here that none
    // ends during the test however slow the machine: the tarpit's hit count is then the
    // number of its requests in flight.
    let config = broker_mock::Config {
        max_in_flight_per_destination: 2,
        http_timeout: 600,
        ..test_config()
    };
    let (broker, api) = start(config).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (tarpit_url, tarpit_hits) = tarpit().await;
    let _stuck = notified_user(&api, &s, tarpit_url, 4).await;
    eventually("the tarpit holding deliveries", || {
        tarpit_hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    // A healthy user's notification is created after four stuck ones, and is delivered
    // while the tarpit still holds its requests (sent one at a time, it would wait for ever).
    let _healthy = notified_user(&api, &s, format!("{}/notify", fake.base_url), 1).await;
    eventually("the healthy notification", || {
        !fake.state.notifications.lock().unwrap().is_empty()
    })
    .await;
    // Never more than the per-destination bound (2) at the tarpit at once, and none of its
    // requests has ended yet.
    let at_tarpit = tarpit_hits.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&at_tarpit),
        "{at_tarpit} requests at the tarpit"
    );
    broker.shutdown().await;
}

/// More due deliveries for one stuck destination than one round takes (50) do not starve
/// the others: each round takes at most the per-destination bound from each destination.
#[tokio::test]
async fn a_stuck_destination_with_more_than_a_round_due_starves_no_one() {
    // No tarpit request ends during the test (see above): hits are requests in flight. With
    // the usual 5 s timeout, a loaded machine let the first time out and a third start.
    let config = broker_mock::Config {
        max_in_flight_per_destination: 2,
        http_timeout: 600,
        ..test_config()
    };
    let (broker, api) = start(config).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (tarpit_url, tarpit_hits) = tarpit().await;
    let _stuck = notified_user(&api, &s, tarpit_url, 60).await;
    eventually("the tarpit holding deliveries", || {
        tarpit_hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    // Created after sixty stuck ones, all due: the oldest fifty alone filled a round before.
    let _healthy = notified_user(&api, &s, format!("{}/notify", fake.base_url), 1).await;
    eventually("the healthy notification", || {
        !fake.state.notifications.lock().unwrap().is_empty()
    })
    .await;
    let at_tarpit = tarpit_hits.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&at_tarpit),
        "{at_tarpit} requests at the tarpit"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_held_connection_does_not_stop_the_shutdown_and_the_database_is_private() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.db");
    let config = broker_mock::Config {
        db: path.display().to_string(),
        ..test_config()
    };
    let (broker, _api) = start(config).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    // A slow peer: a request whose body never comes, so a handler is left waiting for it.
    let mut held = tokio::net::TcpStream::connect(broker.local_addr())
        .await
        .unwrap();
    held.write_all(
        b"POST /v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    // Shutdown completes (after at most its 5 s grace), instead of waiting for the peer.
    tokio::time::timeout(std::time::Duration::from_secs(20), broker.shutdown())
        .await
        .expect("the shutdown waited on a held connection");
    // It did wait for the request in flight, up to its grace.
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    drop(held);
}

/// Sends half a request head and nothing more; returns once the server closed the
/// connection, or panics after `bound`, far beyond the deadline under test.
pub(crate) async fn slowloris(addr: std::net::SocketAddr, bound: std::time::Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /v1/registry HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    let mut buf = [0_u8; 512];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a client that never finished its head was not cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_and_others_are_served() {
    let (broker, _api) = start(broker_mock::Config {
        header_read_timeout_ms: 300,
        max_connections: 2,
        ..test_config()
    })
    .await;
    let addr = broker.local_addr();
    let bound = std::time::Duration::from_secs(20);
    // Both connection slots held by slow clients: an ordinary request is served once they
    // are cut, and the broker keeps serving.
    let slow = [
        tokio::spawn(slowloris(addr, bound)),
        tokio::spawn(slowloris(addr, bound)),
    ];
    let http = diax_sdk::client::http_client(&diax_sdk::client::ClientConfig::default()).unwrap();
    for _ in 0..2 {
        let resp = http
            .get(format!("{}/v1/registry", broker.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    for s in slow {
        s.await.unwrap();
    }
}

/// A raw upload of `len` bytes; returns the status, `Retry-After` and the problem type.
async fn upload_status(base: &str, api_key: &str, len: usize) -> (u16, Option<String>, String) {
    let resp = http()
        .post(format!("{base}/v1/models?name=now.stl"))
        .bearer_auth(api_key)
        .header("content-type", "model/stl")
        .body(vec![b'n'; len])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == 503 {
        assert_eq!(
            resp.headers()["content-type"],
            diax_sdk::PROBLEM_CONTENT_TYPE
        );
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (status, retry_after, problem_type(&body).to_owned())
}

fn budget_config() -> broker_mock::Config {
    broker_mock::Config {
        max_model_bytes: 1000,
        max_buffered_model_bytes: Some(2000),
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_memory_budget_get_503_and_nothing_is_stored() {
    let (broker, api) = start(budget_config()).await;
    let (created, user) = new_user(&api, "uploader").await;
    let key = created.api_key.clone();
    let base = broker.base_url().to_owned();
    // Two uploads of the largest size, their bodies still to come, hold the whole budget.
    let a = HeldUpload::start(broker.local_addr(), &key, 1000).await;
    let b = HeldUpload::start(broker.local_addr(), &key, 1000).await;
    for len in [1000, 10] {
        assert_eq!(
            upload_status(&base, &key, len).await,
            (503, Some("1".to_owned()), "service-unavailable".to_owned()),
            "{len} bytes"
        );
    }
    // A chunked upload (no announced size) reserves the limit: refused as well.
    let chunked = http()
        .post(format!("{base}/v1/models?name=chunked.stl"))
        .bearer_auth(&key)
        .header("content-type", "model/stl")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([
            Ok::<_, std::io::Error>(vec![b'c'; 10]),
        ])))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status().as_u16(), 503);
    assert!(
        user.models().await.unwrap().models.is_empty(),
        "nothing stored"
    );
    // Once they finish, their reservations are given back: the next upload is taken.
    assert_eq!(a.finish().await, "HTTP/1.1 201 Created");
    assert_eq!(b.finish().await, "HTTP/1.1 201 Created");
    assert_eq!(upload_status(&base, &key, 1000).await.0, 201);
    assert_eq!(user.models().await.unwrap().models.len(), 3);

    // Clients that hang up mid-body give their reservations back too.
    let a = HeldUpload::start(broker.local_addr(), &key, 1000).await;
    let b = HeldUpload::start(broker.local_addr(), &key, 1000).await;
    assert_eq!(upload_status(&base, &key, 1000).await.0, 503);
    drop((a, b));
    let mut answered = Vec::new();
    for _ in 0..250 {
        let (status, _, _) = upload_status(&base, &key, 1000).await;
        answered.push(status);
        if status == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(answered.last(), Some(&201), "{answered:?}");
    assert!(
        answered.iter().all(|s| [201, 503].contains(s)),
        "{answered:?}"
    );
    assert_eq!(user.models().await.unwrap().models.len(), 4);
    broker.shutdown().await;
}

/// Clients that announce an upload and then send nothing do not hold the budget for long:
/// their bodies are cut after the body idle timeout, and others can upload again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_cut_after_the_idle_timeout_and_give_the_budget_back() {
    let (broker, api) = start(broker_mock::Config {
        body_idle_timeout_ms: 300,
        ..budget_config()
    })
    .await;
    let (created, user) = new_user(&api, "staller").await;
    let key = created.api_key.clone();
    let base = broker.base_url().to_owned();
    let mut a = HeldUpload::start(broker.local_addr(), &key, 1000).await;
    let mut b = HeldUpload::start(broker.local_addr(), &key, 1000).await;
    assert_eq!(upload_status(&base, &key, 1000).await.0, 503);
    // Neither sends a byte: each is answered (a 400 problem) once its body stalled, and the
    // connection is closed.
    for held in [&mut a, &mut b] {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), held.answer())
            .await
            .expect("a stalled upload is answered within the idle timeout and a margin");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(upload_status(&base, &key, 1000).await.0, 201);
    assert_eq!(user.models().await.unwrap().models.len(), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_past_the_memory_budget_is_not_fetched_until_there_is_room() {
    let (broker, api) = start(budget_config()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
    // The fake provider has fetched the input (which holds its size while it is sent).
    eventually("the input fetched", || {
        fake.state
            .inputs
            .lock()
            .unwrap()
            .iter()
            .any(|(_, got)| got.is_ok())
    })
    .await;
    let result = vec![b'r'; 500];
    fake.set_result(result.clone());
    let (other, _) = new_user(&api, "uploader").await;
    let held = [
        HeldUpload::start(broker.local_addr(), &other.api_key, 1000).await,
        HeldUpload::start(broker.local_addr(), &other.api_key, 1000).await,
    ];
    let event = completed(&job, &s, 1, fake.result_download(&result, unix_now() + 600));
    let (st, p) = post_event_raw(&http(), &s.reg, &s.ring, "msg_budget", unix_now(), &event).await;
    assert_eq!((st, problem_type(&p)), (503, "service-unavailable"), "{p}");
    assert_eq!(fake.result_gets(), 0, "nothing fetched");
    for upload in held {
        assert_eq!(upload.finish().await, "HTTP/1.1 201 Created");
    }
    // The provider sends the event again (same id): now it is fetched and applied.
    let (st, p) = post_event_raw(&http(), &s.reg, &s.ring, "msg_budget", unix_now(), &event).await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(fake.result_gets(), 1);
    let versions = user.model(&model.model_id).await.unwrap().versions;
    assert_eq!(versions.len(), 2, "{versions:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_past_the_memory_budget_gets_503() {
    let (broker, api) = start(budget_config()).await;
    let (created, user) = new_user(&api, "reader").await;
    let model = user.upload_model("m.stl", vec![b'm'; 900]).await.unwrap();
    let url = format!(
        "{}/v1/models/{}/versions/1/content",
        broker.base_url(),
        model.model_id
    );
    // 1,800 bytes held: a 900-byte version does not fit beside them.
    let held = [
        HeldUpload::start(broker.local_addr(), &created.api_key, 900).await,
        HeldUpload::start(broker.local_addr(), &created.api_key, 900).await,
    ];
    let get = || http().get(&url).bearer_auth(&created.api_key).send();
    let resp = get().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    drop(held);
    let mut last = 0;
    for _ in 0..250 {
        let resp = get().await.unwrap();
        last = resp.status().as_u16();
        if last == 200 {
            assert_eq!(resp.headers()["content-length"], "900");
            assert_eq!(resp.bytes().await.unwrap().as_ref(), vec![b'm'; 900]);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last, 200);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_budget_smaller_than_one_model_is_refused_at_start() {
    let err = broker_mock::Broker::start(broker_mock::Config {
        max_model_bytes: 1000,
        max_buffered_model_bytes: Some(999),
        ..test_config()
    })
    .await
    .expect_err("a budget that no model of the largest size fits");
    assert!(
        err.to_string().contains("--max-buffered-model-bytes"),
        "{err}"
    );
}
