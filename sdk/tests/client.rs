//! The `client` feature against a real local axum server: signed sends with retries,
//! downloads with their checks, no redirects, the secure-URL rule, and the broker client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diax_sdk::client::{
    Attempt, BrokerCallError, BrokerClient, ClientConfig, DownloadError, DownloadLimits,
    DownloadTimeout, FetchPolicy, FetchRefused, Fetcher, RetryPolicy, SendError, SignedSender,
    download, download_to_file, download_to_vec, http_client, require_secure_url,
};
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, sha256_hex};
use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::{Download, Pricing, ProviderRegistered, RegisterProvider, SecretScope};
use diax_sdk::{GroupId, KeyId, Keyring, MessageId, Problem, ProblemType, ProviderId, Secret};

const BLOB: &[u8] = b"solid cube\nendsolid cube\n--- some model bytes ---";
const CREDENTIAL: &str = "Bearer tc_ok";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    timestamp: i64,
    signature: String,
    body: Bytes,
    at: Instant,
}

#[derive(Clone, Default)]
struct Log {
    hits: Arc<Mutex<HashMap<&'static str, usize>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Log {
    fn hit(&self, route: &'static str) -> usize {
        let mut hits = self.hits.lock().expect("lock");
        let n = hits.entry(route).or_default();
        *n += 1;
        *n
    }

    fn hits(&self, route: &'static str) -> usize {
        self.hits
            .lock()
            .expect("lock")
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    fn record(&self, route: &'static str, headers: &HeaderMap, body: Bytes) -> usize {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        self.seen.lock().expect("lock").push(Seen {
            id: text("webhook-id"),
            timestamp: text("webhook-timestamp").parse().unwrap_or(-1),
            signature: text("webhook-signature"),
            body,
            at: Instant::now(),
        });
        self.hit(route)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A problem answer, built by hand: this test needs only the `client` feature.
fn problem(kind: ProblemType) -> Response {
    let p = Problem::new(kind);
    let status = StatusCode::from_u16(p.status).expect("status");
    let ct = [(header::CONTENT_TYPE, diax_sdk::PROBLEM_CONTENT_TYPE)];
    (status, ct, p.to_json()).into_response()
}

async fn flaky(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    match log.record("flaky", &headers, body) {
        1 | 2 => problem(ProblemType::ServiceUnavailable),
        _ => (StatusCode::ACCEPTED, "accepted").into_response(),
    }
}

async fn rate_limited(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    match log.record("rate_limited", &headers, body) {
        1 => {
            let mut r = problem(ProblemType::RateLimited);
            r.headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().expect("value"));
            r
        }
        _ => (StatusCode::ACCEPTED, "accepted").into_response(),
    }
}

async fn bad_request(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    log.record("bad", &headers, body);
    problem(ProblemType::InvalidRequest)
}

async fn always_503(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    log.record("always_503", &headers, body);
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

async fn slow_once(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    if log.record("slow", &headers, body) == 1 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    (StatusCode::ACCEPTED, "accepted").into_response()
}

async fn redirect_post(State(log): State<Log>) -> Response {
    log.hit("redirect");
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, "/target")],
    )
        .into_response()
}

async fn target(State(log): State<Log>) -> Response {
    log.hit("target");
    StatusCode::OK.into_response()
}

async fn blob(State(log): State<Log>, headers: HeaderMap) -> Response {
    log.hit("blob");
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(CREDENTIAL)
    {
        return problem(ProblemType::CredentialInvalid);
    }
    (StatusCode::OK, BLOB).into_response()
}

async fn broken() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
}

async fn moved(State(log): State<Log>) -> Response {
    log.hit("moved");
    (StatusCode::FOUND, [(header::LOCATION, "/blob")]).into_response()
}

async fn stall() -> Response {
    use futures_util::StreamExt as _;
    let first =
        futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(&BLOB[..10])) });
    Body::from_stream(first.chain(futures_util::stream::pending())).into_response()
}

/// How long the trickled download takes, about: `DIAX_TEST_TRICKLE_MS` (default 1,800; the
/// issue's 60 s is 60000), with a client request timeout of 5/18 of it (500 ms by default,
/// 16.7 s for 60 s).
fn trickle_ms() -> u64 {
    std::env::var("DIAX_TEST_TRICKLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_800)
}

fn c_timeout(trickle_ms: u64) -> Duration {
    Duration::from_millis(trickle_ms * 5 / 18)
}

/// The blob in 4-byte pieces, one every `trickle_ms() / 12` (150 ms by default, about 1.8 s
/// in all).
async fn trickle() -> Response {
    use futures_util::StreamExt as _;
    let every = Duration::from_millis(trickle_ms() / 12);
    let pieces = futures_util::stream::iter(BLOB.chunks(4)).then(move |piece| async move {
        tokio::time::sleep(every).await;
        Ok::<_, std::io::Error>(Bytes::copy_from_slice(piece))
    });
    Body::from_stream(pieces).into_response()
}

/// The blob, after 3 s without any answer.
async fn late() -> Response {
    tokio::time::sleep(Duration::from_secs(3)).await;
    (StatusCode::OK, BLOB).into_response()
}

async fn register(headers: HeaderMap, Json(req): Json<RegisterProvider>) -> Response {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some("Bearer key_good")
    {
        return problem(ProblemType::Unauthorized);
    }
    let answer = ProviderRegistered {
        provider_id: ProviderId::parse("prv_new").expect("id"),
        broker_id: "diax".into(),
        key_id: KeyId::parse("key_1").expect("id"),
        secret: Some(Secret::generate().expose()),
        events_url: "http://127.0.0.1/v1/providers/prv_new/events".into(),
        secret_scope: req.secret_scope,
        bound_user_id: None,
        signature_scheme: req.signature_scheme,
        broker_key_id: None,
        broker_public_key: None,
    };
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Secret rotation answers that are not what a client expects.
async fn rotate(axum::extract::Path(provider): axum::extract::Path<String>) -> Response {
    match provider.as_str() {
        "prv_down" => (StatusCode::BAD_GATEWAY, "upstream is down").into_response(),
        _ => (StatusCode::OK, "{\"provider_id\": 7").into_response(),
    }
}

async fn server() -> (String, Log) {
    let log = Log::default();
    let app = Router::new()
        .route("/flaky", post(flaky))
        .route("/rate-limited", post(rate_limited))
        .route("/bad", post(bad_request))
        .route("/always-503", post(always_503))
        .route("/slow", post(slow_once))
        .route("/redirect", post(redirect_post))
        .route("/target", post(target).get(target))
        .route("/blob", get(blob))
        .route("/broken", get(broken))
        .route("/moved", get(moved))
        .route("/stall", get(stall))
        .route("/trickle", get(trickle))
        .route("/late", get(late))
        .route("/v1/providers", post(register))
        .route("/v1/providers/{provider}/secrets/rotate", post(rotate))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

fn client() -> diax_sdk::client::Client {
    http_client(&ClientConfig::default()).expect("client")
}

fn ring() -> Keyring {
    Keyring::single(KeyId::parse("key_1").expect("id"), Secret::generate())
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    }
}

/// Every attempt carried a valid signature for its own timestamp.
fn assert_signed(ring: &Keyring, seen: &[Seen]) {
    for s in seen {
        let ts = s.timestamp.to_string();
        let h = RawHeaders::new(&s.id, &ts, &s.signature);
        ring.verify_at(&h, &s.body, s.timestamp, 0)
            .expect("valid signature");
        assert!((s.timestamp - unix_now()).abs() < 60, "fresh timestamp");
    }
}

#[tokio::test]
async fn send_retries_503_with_the_same_id() {
    let (base, log) = server().await;
    let ring = ring();
    let id = MessageId::generate();
    let resp = SignedSender::new(client())
        .send(
            &format!("{base}/flaky"),
            &id,
            b"{\"n\":1}".to_vec(),
            &ring,
            &fast_policy(5),
        )
        .await
        .expect("delivered");
    assert_eq!(resp.status, 202);
    assert_eq!(&resp.body[..], b"accepted");
    let seen = log.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.id == id.as_str()));
    assert!(seen.iter().all(|s| &s.body[..] == b"{\"n\":1}"));
    assert_signed(&ring, &seen);
}

#[tokio::test]
async fn send_honours_retry_after_and_re_signs() {
    let (base, log) = server().await;
    let ring = ring();
    let id = MessageId::generate();
    let resp = SignedSender::new(client())
        .send(
            &format!("{base}/rate-limited"),
            &id,
            b"{}".to_vec(),
            &ring,
            // Retry-After is honoured up to max_backoff, so leave room for it.
            &RetryPolicy {
                max_backoff: Duration::from_secs(2),
                ..fast_policy(3)
            },
        )
        .await
        .expect("delivered");
    assert_eq!(resp.status, 202);
    let seen = log.seen();
    assert_eq!(seen.len(), 2);
    // `Retry-After: 1` beats the 10 ms backoff...
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
    // ...so the retry is signed a second later, under the same id.
    assert_eq!(seen[0].id, seen[1].id);
    assert!(seen[1].timestamp > seen[0].timestamp);
    assert_ne!(seen[0].signature, seen[1].signature);
    assert_signed(&ring, &seen);
}

#[tokio::test]
async fn send_does_not_retry_client_errors() {
    let (base, log) = server().await;
    let resp = SignedSender::new(client())
        .send(
            &format!("{base}/bad"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
            &fast_policy(5),
        )
        .await
        .expect("final answer");
    assert_eq!(resp.status, 400);
    assert!(
        resp.problem()
            .expect("problem")
            .is(ProblemType::InvalidRequest)
    );
    assert_eq!(log.hits("bad"), 1);
}

#[tokio::test]
async fn send_gives_up_after_max_attempts() {
    let (base, log) = server().await;
    let err = SignedSender::new(client())
        .send(
            &format!("{base}/always-503"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
            &fast_policy(3),
        )
        .await
        .expect_err("never succeeds");
    // The last answer is kept whole, as the source of the error.
    match &err {
        SendError::Exhausted { attempts: 3, last } => match &**last {
            SendError::Status(resp) => assert_eq!(resp.status, 503),
            other => panic!("unexpected last failure {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        ErrorChain(&err).to_string(),
        "gave up after 3 attempts: peer answered HTTP 503"
    );
    assert_eq!(log.hits("always_503"), 3);

    // Nobody listening: transport failures are retried too, then reported.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let err = SignedSender::new(client())
        .send(
            &format!("http://{closed}/x"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
            &fast_policy(2),
        )
        .await
        .expect_err("refused");
    match &err {
        SendError::Exhausted { attempts: 2, last } => {
            assert!(matches!(**last, SendError::Connect(_)), "{last:?}");
            assert!(last.is_transient());
        }
        other => panic!("unexpected {other:?}"),
    }
    // The cause is a source, down to the operating system's refusal.
    let chain = ErrorChain(&err).to_string();
    assert!(
        chain.starts_with("gave up after 2 attempts: could not connect: "),
        "{chain}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn send_retries_timeouts() {
    let (base, log) = server().await;
    let client = http_client(&ClientConfig {
        timeout: Duration::from_millis(800),
        ..ClientConfig::default()
    })
    .expect("client");
    let ring = ring();
    let resp = SignedSender::new(client)
        .send(
            &format!("{base}/slow"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring,
            &fast_policy(3),
        )
        .await
        .expect("second attempt answers");
    assert_eq!(resp.status, 202);
    let seen = log.seen();
    // Normally two attempts; a third only if a loaded machine made the second slow too.
    assert!((2..=3).contains(&seen.len()), "{seen:?}");
    assert!(seen.iter().all(|s| s.id == seen[0].id));
    assert_signed(&ring, &seen);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, log) = server().await;
    let resp = SignedSender::new(client())
        .send_once(
            &format!("{base}/redirect"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
        )
        .await
        .expect("answer");
    assert_eq!(resp.status, 307);
    let dl = blob_download(&base, "/moved");
    let err = download_to_vec(&client(), &dl, &DownloadLimits::default())
        .await
        .expect_err("redirect refused");
    assert!(
        matches!(err, DownloadError::Refused { status: 302, .. }),
        "{err:?}"
    );
    assert_eq!(log.hits("redirect"), 1);
    assert_eq!(log.hits("moved"), 1);
    assert_eq!(log.hits("target"), 0);
    assert_eq!(log.hits("blob"), 0);
}

fn blob_download(base: &str, path: &str) -> Download {
    Download {
        url: format!("{base}{path}"),
        authorization: Some(CREDENTIAL.into()),
        expires_at: unix_now() + 600,
        size: BLOB.len() as u64,
        sha256: sha256_hex(BLOB),
    }
}

fn assert_empty(dir: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn download_to_file_checks_and_writes() {
    let (base, _log) = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.stl");
    let got = download_to_file(
        &client(),
        &blob_download(&base, "/blob"),
        &path,
        &DownloadLimits::default(),
    )
    .await
    .expect("downloaded");
    assert_eq!(got.size, BLOB.len() as u64);
    assert_eq!(got.sha256, sha256_hex(BLOB));
    assert_eq!(std::fs::read(&path).expect("file"), BLOB);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);

    // The digest may be given in upper case.
    let mut upper = blob_download(&base, "/blob");
    upper.sha256 = upper.sha256.to_uppercase();
    let mut out = Vec::new();
    download(&client(), &upper, &mut out, &DownloadLimits::default())
        .await
        .expect("downloaded");
    assert_eq!(out, BLOB);
}

#[tokio::test]
async fn failed_downloads_leave_no_file() {
    let (base, log) = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.stl");
    let c = client();
    let limits = DownloadLimits::default();
    let len = BLOB.len() as u64;

    // Declared size over the cap: refused before any request.
    let capped = DownloadLimits {
        max_bytes: len - 1,
        ..limits
    };
    let err = download_to_file(&c, &blob_download(&base, "/blob"), &path, &capped)
        .await
        .expect_err("over the cap");
    assert!(
        matches!(err, DownloadError::DeclaredTooLarge { declared, limit } if declared == len && limit == len - 1),
        "{err:?}"
    );
    assert_eq!(log.hits("blob"), 0);
    assert_empty(dir.path());

    // The server sends more than declared.
    let mut dl = blob_download(&base, "/blob");
    dl.size = len - 5;
    let err = download_to_file(&c, &dl, &path, &limits)
        .await
        .expect_err("too long");
    assert!(
        matches!(err, DownloadError::TooLong { declared } if declared == len - 5),
        "{err:?}"
    );
    assert_empty(dir.path());

    // The server sends less than declared.
    dl.size = len + 5;
    let err = download_to_file(&c, &dl, &path, &limits)
        .await
        .expect_err("too short");
    assert!(
        matches!(err, DownloadError::TooShort { received, declared } if received == len && declared == len + 5),
        "{err:?}"
    );
    assert_empty(dir.path());

    // Right size, wrong digest.
    let mut dl = blob_download(&base, "/blob");
    dl.sha256 = sha256_hex(b"something else");
    let err = download_to_file(&c, &dl, &path, &limits)
        .await
        .expect_err("digest");
    assert!(
        matches!(err, DownloadError::DigestMismatch { ref actual, .. } if *actual == sha256_hex(BLOB)),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_empty(dir.path());

    // Refused with a problem document: the problem is kept.
    let mut dl = blob_download(&base, "/blob");
    dl.authorization = Some("Bearer tc_forged".into());
    let err = download_to_file(&c, &dl, &path, &limits)
        .await
        .expect_err("refused");
    match &err {
        DownloadError::Refused {
            status: 401,
            problem: Some(p),
        } => assert!(p.is(ProblemType::CredentialInvalid)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_transient());
    assert_empty(dir.path());

    // A 500 without a problem document: refused, worth retrying later.
    let err = download_to_file(&c, &blob_download(&base, "/broken"), &path, &limits)
        .await
        .expect_err("500");
    assert!(
        matches!(
            err,
            DownloadError::Refused {
                status: 500,
                problem: None
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_empty(dir.path());

    // The transfer stalls half-way: the overall timeout ends it.
    let short = DownloadLimits {
        timeout: Duration::from_millis(300),
        ..limits
    };
    let started = Instant::now();
    let err = download_to_file(&c, &blob_download(&base, "/stall"), &path, &short)
        .await
        .expect_err("stalls");
    assert!(
        matches!(err, DownloadError::Timeout(DownloadTimeout::Deadline)),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_empty(dir.path());
}

#[tokio::test]
async fn a_download_outlives_the_request_timeout_within_its_own_limits() {
    let (base, _log) = server().await;
    // The client cuts any request after 500 ms; the trickle takes about 1.8 s (both scaled
    // by DIAX_TEST_TRICKLE_MS).
    let trickle = trickle_ms();
    let c = http_client(&ClientConfig {
        timeout: c_timeout(trickle),
        ..ClientConfig::default()
    })
    .expect("client");
    let mut dl = blob_download(&base, "/trickle");
    dl.authorization = None;
    let limits = DownloadLimits {
        timeout: Duration::from_millis(trickle.max(30_000) * 2),
        connect_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_millis((trickle / 6).max(10_000)),
        ..DownloadLimits::default()
    };
    let started = std::time::Instant::now();
    let got = download_to_vec(&c, &dl, &limits)
        .await
        .expect("the download's own limits apply");
    assert_eq!(got, BLOB);
    let took = started.elapsed();
    assert!(
        took > c_timeout(trickle),
        "{took:?}: the trickle was not slower than the timeout"
    );
    eprintln!(
        "trickled download: {took:?} under a {:?} request timeout",
        c_timeout(trickle)
    );

    // Each limit, when it is the one that runs out, is named.
    let err = download_to_vec(
        &c,
        &dl,
        &DownloadLimits {
            timeout: Duration::from_millis(600),
            ..limits
        },
    )
    .await
    .expect_err("over the deadline");
    assert!(
        matches!(err, DownloadError::Timeout(DownloadTimeout::Deadline)),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("total deadline"),
        "{}",
        ErrorChain(&err)
    );

    let mut stalled = blob_download(&base, "/stall");
    stalled.authorization = None;
    let err = download_to_vec(
        &c,
        &stalled,
        &DownloadLimits {
            idle_timeout: Duration::from_millis(300),
            ..limits
        },
    )
    .await
    .expect_err("stalls");
    assert!(
        matches!(err, DownloadError::Timeout(DownloadTimeout::Idle)),
        "{err:?}"
    );

    let mut late = blob_download(&base, "/late");
    late.authorization = None;
    let err = download_to_vec(
        &c,
        &late,
        &DownloadLimits {
            connect_timeout: Duration::from_millis(300),
            ..limits
        },
    )
    .await
    .expect_err("no answer in time");
    assert!(
        matches!(err, DownloadError::Timeout(DownloadTimeout::Connect)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_fetcher_refuses_private_addresses_by_url_and_by_dns() {
    let (base, log) = server().await;
    let port = base.rsplit(':').next().expect("port");
    let safe = Fetcher::new(&ClientConfig::default(), FetchPolicy::default()).expect("fetcher");
    let limits = DownloadLimits::default();
    let refused = |url: &str| {
        let mut dl = blob_download("", "");
        dl.url = url.to_owned();
        dl
    };
    for (url, rule) in [
        (format!("http://127.0.0.1:{port}/blob"), "scheme"),
        (format!("https://127.0.0.1:{port}/blob"), "private"),
        (format!("https://localhost:{port}/blob"), "private"),
        (format!("https://LOCALHOST.:{port}/blob"), "private"),
        (format!("https://2130706433:{port}/blob"), "private"), // 127.0.0.1 in decimal
        (format!("https://0x7f.1:{port}/blob"), "private"),
        (format!("https://[::1]:{port}/blob"), "private"),
        (format!("https://[::ffff:127.0.0.1]:{port}/blob"), "private"),
        ("https://10.0.0.1/blob".to_owned(), "private"),
        ("https://192.168.0.1/blob".to_owned(), "private"),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "private",
        ),
        ("ftp://files.example/blob".to_owned(), "scheme"),
    ] {
        let err = safe
            .download_to_vec(&refused(&url), &limits)
            .await
            .expect_err(&url);
        match (&err, rule) {
            (DownloadError::NotAllowed(FetchRefused::Scheme { .. }), "scheme")
            | (DownloadError::NotAllowed(FetchRefused::PrivateAddress { .. }), "private") => {}
            other => panic!("{url}: {other:?}"),
        }
        assert!(!err.is_transient(), "{url}");
    }
    assert_eq!(log.hits("blob"), 0);

    // A DNS name that resolves to loopback is refused on the resolved address, by the
    // resolver of the fetcher's client, whoever sends the request.
    let err = safe
        .client()
        .get(format!("http://localhost:{port}/blob"))
        .send()
        .await
        .expect_err("resolver refuses");
    let chain = ErrorChain(&err).to_string();
    assert!(chain.contains("private, loopback or link-local"), "{chain}");
    let err = SignedSender::new(safe.client().clone())
        .send(
            &format!("http://localhost:{port}/flaky"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
            &fast_policy(3),
        )
        .await
        .expect_err("refused, not retried");
    assert!(
        matches!(
            err,
            SendError::NotAllowed(FetchRefused::PrivateAddress { .. })
        ),
        "{err:?}"
    );
    assert_eq!((log.hits("blob"), log.hits("flaky")), (0, 0));

    // The development policy reaches loopback, still only on the allowed origin and never
    // through a redirect.
    let dev = Fetcher::new(&ClientConfig::default(), FetchPolicy::development())
        .expect("fetcher")
        .with_origin_of(&format!("{base}/jobs"))
        .expect("origin");
    let got = dev
        .download_to_vec(&blob_download(&base, "/blob"), &limits)
        .await
        .expect("allowed");
    assert_eq!(got, BLOB);
    let other_port = "http://127.0.0.1:1/blob";
    let err = dev
        .download_to_vec(&refused(other_port), &limits)
        .await
        .expect_err("other origin");
    assert!(
        matches!(err, DownloadError::NotAllowed(FetchRefused::Origin { .. })),
        "{err:?}"
    );
    let err = dev
        .download_to_vec(&blob_download(&base, "/moved"), &limits)
        .await
        .expect_err("redirect");
    assert!(
        matches!(err, DownloadError::Refused { status: 302, .. }),
        "{err:?}"
    );
    assert_eq!(log.hits("blob"), 1);

    // A refusal names the rule, not what the server sent: no real digest or size.
    let mut lying = blob_download(&base, "/blob");
    lying.sha256 = sha256_hex(b"other");
    let err = dev
        .download_to_vec(&lying, &limits)
        .await
        .expect_err("digest");
    let text = ErrorChain(&err).to_string();
    assert!(!text.contains(&sha256_hex(BLOB)), "{text}");
    lying = blob_download(&base, "/blob");
    lying.size += 10;
    let err = dev
        .download_to_vec(&lying, &limits)
        .await
        .expect_err("size");
    let text = ErrorChain(&err).to_string();
    assert!(!text.contains(&BLOB.len().to_string()), "{text}");
}

#[tokio::test]
async fn only_secure_urls_are_used() {
    for ok in [
        "https://broker.example/v1/x",
        "http://127.0.0.1:8080/x",
        "http://127.9.9.9/x",
        "http://localhost:1/x",
        "http://[::1]:80/x",
    ] {
        assert!(require_secure_url(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://broker.example/x",
        "http://10.0.0.1/x",
        "http://[2001:db8::1]/x",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "not a url",
        "",
    ] {
        assert!(require_secure_url(bad).is_err(), "{bad}");
    }

    // Refused before any connection is attempted.
    let err = SignedSender::new(client())
        .send_once(
            "http://broker.example/events",
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
        )
        .await
        .expect_err("insecure");
    assert!(matches!(err, SendError::Url(_)), "{err:?}");
    let dl = blob_download("http://203.0.113.7", "/blob");
    let err = download_to_vec(&client(), &dl, &DownloadLimits::default())
        .await
        .expect_err("insecure");
    assert!(matches!(err, DownloadError::Url(_)), "{err:?}");
    assert!(BrokerClient::new(client(), "http://broker.example").is_err());

    // A refused URL is named without the parts that can carry a credential.
    let err = require_secure_url("http://u:hush1@203.0.113.7/m?X-Amz-Signature=hush2")
        .expect_err("insecure");
    let text = err.to_string();
    assert!(!text.contains("hush1") && !text.contains("hush2"), "{text}");
    assert!(text.contains("203.0.113.7"), "{text}");
}

#[tokio::test]
async fn broker_client_registers_and_keeps_problems() {
    let (base, _log) = server().await;
    let broker = BrokerClient::new(client(), &base).expect("loopback http");
    let request = RegisterProvider {
        group_id: GroupId::parse("grp_1").expect("id"),
        name: "FixMyPrint".into(),
        service_kind: "model-repair".into(),
        job_url: "http://127.0.0.1:9/diax/jobs".into(),
        signup_url: "http://127.0.0.1:9/signup".into(),
        pricing: Pricing::Paid,
        description: None,
        secret_scope: SecretScope::User,
        signature_scheme: Default::default(),
        public_key: None,
    };
    let registered = broker
        .register_provider("key_good", &request)
        .await
        .expect("registered");
    assert_eq!(registered.provider_id.as_str(), "prv_new");
    assert_eq!(registered.secret_scope, SecretScope::User);
    assert!(Secret::parse(registered.secret.as_deref().unwrap_or_default()).is_ok());

    let err = broker
        .register_provider("key_bad", &request)
        .await
        .expect_err("refused");
    match err {
        BrokerCallError::Problem(p) => assert!(p.is(ProblemType::Unauthorized)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn broker_client_errors_keep_the_answer_and_the_cause() {
    let (base, _log) = server().await;
    let broker = BrokerClient::new(client(), &base).expect("loopback http");
    let rotate = diax_sdk::wire::RotateSecret::default();

    // A status without a problem document: the whole answer is kept.
    let down = ProviderId::parse("prv_down").expect("id");
    match broker.rotate_secret("key_good", &down, &rotate).await {
        Err(BrokerCallError::Status(resp)) => {
            assert_eq!(resp.status, 502);
            assert_eq!(&resp.body[..], b"upstream is down");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A 200 that does not parse: the parse error is the source, the answer is kept.
    let garbled = ProviderId::parse("prv_garbled").expect("id");
    let err = broker
        .rotate_secret("key_good", &garbled, &rotate)
        .await
        .expect_err("malformed");
    match &err {
        BrokerCallError::Decode { response, .. } => assert_eq!(response.status, 200),
        other => panic!("unexpected {other:?}"),
    }
    let source = std::error::Error::source(&err).expect("source");
    assert!(source.is::<serde_json::Error>(), "{source:?}");

    // Nobody listening: the transport error, with its cause.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let nobody = BrokerClient::new(client(), &format!("http://{closed}")).expect("loopback");
    let err = nobody
        .rotate_secret("key_good", &down, &rotate)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, BrokerCallError::Send(SendError::Connect(_))),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

/// What the attempt hook saw of one attempt.
#[derive(Debug, Clone, PartialEq)]
struct Seen2 {
    number: u32,
    max: u32,
    timestamp: i64,
    status: Option<u16>,
    retry: bool,
}

#[tokio::test]
async fn every_attempt_is_signed_afresh_with_the_injected_clock_and_reported() {
    let (base, log) = server().await;
    let ring = ring();
    let id = MessageId::generate();
    // A clock that moves 100 s each time it is read: one read per attempt.
    let ticks = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock = {
        let ticks = Arc::clone(&ticks);
        move || 1_700_000_000 + 100 * ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    };
    let sender = SignedSender::new(client()).with_clock(clock);
    let reports = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    // Spawned: the send future, hook included, is Send.
    let task = {
        let (sender, ring, id, reports) =
            (sender.clone(), ring.clone(), id.clone(), reports.clone());
        let url = format!("{base}/flaky");
        tokio::spawn(async move {
            sender
                .send_with_hook(
                    &url,
                    &id,
                    b"{\"n\":2}".to_vec(),
                    &ring,
                    &fast_policy(5),
                    |a: &Attempt<'_>| {
                        assert!(a.url.ends_with("/flaky"));
                        let seen = Seen2 {
                            number: a.number,
                            max: a.max_attempts,
                            timestamp: a.signed.timestamp,
                            status: a.outcome.ok().map(|r| r.status),
                            retry: a.retry_in.is_some(),
                        };
                        let reports = Arc::clone(&reports);
                        async move { reports.lock().await.push(seen) }
                    },
                )
                .await
        })
    };
    let resp = task.await.expect("task").expect("delivered");
    assert_eq!(resp.status, 202);

    let seen = log.seen();
    let stamps: Vec<i64> = seen.iter().map(|s| s.timestamp).collect();
    assert_eq!(stamps, [1_700_000_000, 1_700_000_100, 1_700_000_200]);
    assert!(seen.iter().all(|s| s.id == id.as_str()));
    assert_ne!(seen[0].signature, seen[1].signature);
    assert_ne!(seen[1].signature, seen[2].signature);
    for s in &seen {
        let ts = s.timestamp.to_string();
        let h = RawHeaders::new(&s.id, &ts, &s.signature);
        ring.verify_at(&h, &s.body, s.timestamp, 0)
            .expect("each attempt signed for its own timestamp");
    }
    let expected = |number, timestamp, status, retry| Seen2 {
        number,
        max: 5,
        timestamp,
        status: Some(status),
        retry,
    };
    assert_eq!(
        *reports.lock().await,
        [
            expected(1, 1_700_000_000, 503, true),
            expected(2, 1_700_000_100, 503, true),
            expected(3, 1_700_000_200, 202, false),
        ]
    );
}

#[tokio::test]
async fn the_hook_sees_refusals_and_transport_failures() {
    let (base, _log) = server().await;
    let sender = SignedSender::new(client());

    // A 4xx: one attempt, reported as the last.
    let mut seen = Vec::new();
    let resp = sender
        .send_with_hook(
            &format!("{base}/bad"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
            &fast_policy(5),
            |a: &Attempt<'_>| {
                seen.push((a.number, a.outcome.map(|r| r.status).ok(), a.retry_in));
                std::future::ready(())
            },
        )
        .await
        .expect("final answer");
    assert_eq!(resp.status, 400);
    assert_eq!(seen, [(1, Some(400), None)]);

    // Nobody listening: each failure is reported, then the sender gives up.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut failures = Vec::new();
    let err = sender
        .send_with_hook(
            &format!("http://{closed}/x"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
            &fast_policy(2),
            |a: &Attempt<'_>| {
                let e = a.outcome.expect_err("no answer");
                failures.push((a.number, a.retry_in.is_some(), ErrorChain(e).to_string()));
                std::future::ready(())
            },
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, SendError::Exhausted { attempts: 2, .. }));
    assert_eq!(failures.len(), 2);
    assert_eq!((failures[0].0, failures[0].1), (1, true));
    assert_eq!((failures[1].0, failures[1].1), (2, false));
    assert!(
        failures[0].2.starts_with("could not connect: "),
        "{failures:?}"
    );

    // Refused before any attempt: no call.
    let mut calls = 0;
    let err = sender
        .send_with_hook(
            &format!("{base}/bad"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &Keyring::new(),
            &fast_policy(5),
            |_: &Attempt<'_>| {
                calls += 1;
                std::future::ready(())
            },
        )
        .await
        .expect_err("no key");
    assert!(matches!(err, SendError::NoActiveKey), "{err:?}");
    assert_eq!(calls, 0);
}

#[tokio::test]
async fn answers_over_the_sender_limit_are_refused() {
    let (base, log) = server().await;
    let err = SignedSender::new(client())
        .with_max_response_bytes(4)
        .send_once(
            &format!("{base}/bad"),
            &MessageId::generate(),
            b"{}".to_vec(),
            &ring(),
        )
        .await
        .expect_err("too large");
    assert!(
        matches!(err, SendError::ResponseTooLarge { limit: 4 }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(log.hits("bad"), 1);
}

/// A plain HTTP/1.1 keep-alive server on loopback that answers every request `200 ok` and
/// counts the connections it accepted.
async fn counting_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // Requests without bodies: one answer per header block.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_pooled_connection_idle_past_the_pool_timeout_is_never_reused() {
    // Servers close idle keep-alive connections (this SDK's server after its 10 s
    // header-read timeout, Apache and Node.js after 5 s); a client that reuses one at the
    // moment the server closes it gets a connection reset. The default pool forgets idle
    // connections before any of those.
    assert!(ClientConfig::default().pool_idle_timeout < Duration::from_secs(5));
    let (addr, accepted) = counting_server().await;
    let client = http_client(&ClientConfig {
        pool_idle_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    })
    .unwrap();
    let url = format!("http://{addr}/");
    let get = || async {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "ok");
    };
    get().await;
    get().await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "reused while fresh"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    get().await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "an idle connection older than the pool timeout was reused"
    );
}
