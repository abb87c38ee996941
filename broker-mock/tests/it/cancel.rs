//! Cancel safety: a client that hangs up mid-request drops its request. What the request
//! had begun (a job offered to a provider and waiting for its answer, a job result being
//! fetched) still runs to its end, so the state stays whole: every job leaves `offered`,
//! every applied `job.completed` has its version and its notification, and the pool serves
//! on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::axum::extract::Request;
use ::axum::middleware::{self, Next};
use ::axum::response::Response;
use ::axum::routing::get;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;
use diax_sdk::{Keyring, MessageId};
use tokio::io::AsyncWriteExt as _;

use crate::common::*;

/// How late the provider answers offers and serves results: long enough for the client's
/// hang-up to reach the broker while its request waits on the provider.
const LATE: Duration = Duration::from_millis(30);

/// Answers every `POST /jobs` (offers and inputs) [`LATE`].
async fn late_answers(req: Request, next: Next) -> Response {
    let slow = req.method() == ::axum::http::Method::POST && req.uri().path() == "/jobs";
    let resp = next.run(req).await;
    if slow {
        tokio::time::sleep(LATE).await;
    }
    resp
}

/// The fake provider, answering offers late, with a result at `/late-results/r1` served
/// [`LATE`] after each request (counted).
async fn late_provider(result: Vec<u8>) -> (Fake, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Fake {
        base_url: format!("http://{addr}"),
        state: Arc::default(),
        http: http(),
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let app = fake_router(fake.clone())
        .route(
            "/late-results/{id}",
            get(move || {
                let result = result.clone();
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(LATE).await;
                    result
                }
            }),
        )
        .layer(middleware::from_fn(late_answers));
    tokio::spawn(async move {
        let _ = ::axum::serve(listener, app).await;
    });
    (fake, hits)
}

/// Sends a whole request on a new connection and returns the connection (drop it to hang
/// up).
async fn send_raw(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn signed_headers(ring: &Keyring, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    ring.sign(&MessageId::parse(id).unwrap(), unix_now(), body)
        .unwrap()
        .pairs()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_mid_request_leave_every_job_whole() {
    const JOBS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let (broker, api) = start(broker_mock::Config {
        db: dir.path().join("broker.db").display().to_string(),
        ..test_config()
    })
    .await;
    let result = b"solid healed\nendsolid healed\n".to_vec();
    let (fake, result_hits) = late_provider(result.clone()).await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (created, user) = new_user(&api, "gareth").await;
    let model = user.upload_model("cube.stl", stl()).await.unwrap();
    fake.add_account("acc_gareth");
    user.link(
        &s.reg.provider_id,
        &link_token_from(&s, "acc_gareth", broker.clock().now()),
    )
    .await
    .unwrap();

    // Each job asked for by a client that hangs up once the offer has reached the provider,
    // while the broker waits for the answer.
    let body = serde_json::to_vec(&serde_json::json!({
        "provider_id": s.reg.provider_id,
        "model_id": model.model_id,
    }))
    .unwrap();
    let auth = [("authorization", format!("Bearer {}", created.api_key))];
    for i in 0..JOBS {
        let stream = send_raw(broker.local_addr(), "/v1/jobs", &auth, &body).await;
        wait_for("the offer", async || {
            fake.state.offers.lock().unwrap().len() > i
        })
        .await;
        drop(stream);
    }
    // Every offer's answer was applied: no job is left `offered`, each input delivered.
    wait_for("every job accepted", async || {
        let jobs = user.jobs().await.unwrap().jobs;
        jobs.len() == JOBS && jobs.iter().all(|j| j.state == JobState::Accepted)
    })
    .await;
    let jobs = user.jobs().await.unwrap().jobs;

    // Each job's `job.completed` posted by a provider that hangs up while the broker
    // fetches the result, then sends it again (same id) until it is acknowledged.
    for (i, job) in jobs.iter().enumerate() {
        let download = Download {
            url: format!("{}/late-results/r{i}", fake.base_url),
            authorization: None,
            expires_at: unix_now() + 600,
            size: result.len() as u64,
            sha256: sha256_hex(&result),
        };
        let event = serde_json::to_vec(&completed(job, &s.reg, 1, download)).unwrap();
        let id = format!("msg_gone_{i}");
        let before = result_hits.load(Ordering::SeqCst);
        let stream = send_raw(
            broker.local_addr(),
            &format!("/v1/providers/{}/events", s.reg.provider_id),
            &signed_headers(&s.ring, &id, &event),
            &event,
        )
        .await;
        wait_for("the result fetch", async || {
            result_hits.load(Ordering::SeqCst) > before
        })
        .await;
        drop(stream);
        wait_for("the event acknowledged", async || {
            let (status, _) =
                post_event_raw(&http(), &s.reg, &s.ring, &id, unix_now(), &event).await;
            status == 200
        })
        .await;
    }

    // Whole: every job completed, one new version each, one notification each; the pool
    // serves on.
    let jobs = user.jobs().await.unwrap().jobs;
    assert!(
        jobs.iter().all(|j| j.state == JobState::Completed),
        "{jobs:?}"
    );
    let versions = user.model(&model.model_id).await.unwrap().versions;
    assert_eq!(versions.len(), 1 + JOBS, "{versions:?}");
    let notes = user.notifications().await.unwrap().notifications;
    for job in &jobs {
        let n = notes
            .iter()
            .filter(|n| n.job_id == job.job_id && n.event == "job.completed")
            .count();
        assert_eq!(n, 1, "job {}: {notes:?}", job.job_id);
    }
    for _ in 0..20 {
        user.models().await.unwrap();
    }
    broker.shutdown().await;
}
