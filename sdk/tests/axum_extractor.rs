//! The `Signed<T>` extractor behind a real axum server on a loopback port, driven by raw
//! HTTP/1.1 so that any header bytes can be sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use diax_sdk::axum_ext::Signed;
use diax_sdk::clock::unix_now;
use diax_sdk::wire::BrokerMessage;
use diax_sdk::{
    Delivery, KeyId, Keyring, MessageId, PROBLEM_CONTENT_TYPE, ProblemType, Secret, SigningKey,
    Verifier, VerifierConfig,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

// Raw HTTP/1.1 helpers shared with the end-to-end suite.
#[path = "../../tests/src/child.rs"]
mod child;

const BODY_LIMIT: usize = 4096;

#[derive(Clone)]
struct AppState {
    verifier: Arc<Verifier>,
    handled: Arc<AtomicUsize>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(s: &AppState) -> Self {
        Arc::clone(&s.verifier)
    }
}

async fn jobs(
    State(state): State<AppState>,
    Signed {
        message,
        verified,
        delivery,
        body,
    }: Signed<BrokerMessage>,
) -> (StatusCode, Json<serde_json::Value>) {
    state.handled.fetch_add(1, Ordering::SeqCst);
    let kind = match message {
        BrokerMessage::Offer(_) => "job.offer",
        BrokerMessage::Input(_) => "job.input",
    };
    let delivery = match delivery {
        Delivery::First => "first",
        Delivery::Redelivery => "redelivery",
    };
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "type": kind,
            "delivery": delivery,
            "id": verified.id.as_str(),
            "key_id": verified.key_id.as_str(),
            "body_len": body.len(),
        })),
    )
}

struct Server {
    addr: SocketAddr,
    ring: Keyring,
    handled: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let ring = Keyring::single(KeyId::parse("key_1").expect("id"), Secret::generate());
    server_verifying(ring.clone(), ring).await
}

/// A receiver of `v1a` signatures: it holds the sender's public key (`key_1`); the returned
/// `ring` holds the matching secret key, which signs.
async fn ed25519_server() -> Server {
    let own = SigningKey::generate();
    let verifying = Keyring::single(KeyId::parse("key_1").expect("id"), own.public_key());
    let signing = Keyring::single(KeyId::parse("key_1").expect("id"), own);
    server_verifying(signing, verifying).await
}

/// A server verifying with `verifying`; `ring` is what the tests sign with.
async fn server_verifying(ring: Keyring, verifying: Keyring) -> Server {
    let verifier = Verifier::new(verifying).with_config(VerifierConfig {
        max_body_bytes: BODY_LIMIT,
        ..VerifierConfig::default()
    });
    let handled = Arc::new(AtomicUsize::new(0));
    let state = AppState {
        verifier: Arc::new(verifier),
        handled: Arc::clone(&handled),
    };
    let app = Router::new().route("/jobs", post(jobs)).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        ring,
        handled,
    }
}

struct Reply {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts a problem+json answer of `kind` with the matching status.
    #[track_caller]
    fn assert_problem(&self, kind: ProblemType) {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, kind.status(), "{text}");
        assert_eq!(
            self.content_type.as_deref(),
            Some(PROBLEM_CONTENT_TYPE),
            "{text}"
        );
        let p = self.json();
        assert_eq!(p["type"], kind.uri(), "{text}");
        assert_eq!(p["status"], kind.status(), "{text}");
    }
}

/// One HTTP/1.1 POST over a fresh connection; headers are raw bytes.
async fn post_raw(addr: SocketAddr, headers: &[(&str, &[u8])], body: &[u8]) -> Reply {
    let mut req = Vec::new();
    req.extend_from_slice(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&req).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut content_type = None;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value.trim().to_owned()),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = length {
        body.truncate(len);
    }
    Reply {
        status,
        content_type,
        body,
    }
}

const JSON: (&str, &[u8]) = ("Content-Type", b"application/json");

fn offer_body(job: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "job.offer",
        "job_id": job,
        "broker_id": "diax",
        "provider_id": "prv_fix",
        "service_kind": "model-repair",
        "operation": "repair",
        "user": {"broker_user_id": "usr_1", "provider_account": "acc_1"},
        "model": {"model_id": "mdl_1", "version": 1, "name": "x.stl", "size": 84,
                  "sha256": "00", "format": "stl"},
        "events_url": "https://broker.example/v1/providers/prv_fix/events",
        "offered_at": 1_700_000_000,
    }))
    .expect("json")
}

/// Signs `body` at `ts` with `ring` and POSTs it with `extra` headers (content type etc.).
async fn send_signed(
    addr: SocketAddr,
    ring: &Keyring,
    id: &MessageId,
    ts: i64,
    body: &[u8],
    extra: &[(&str, &[u8])],
) -> Reply {
    let signed = ring.sign(id, ts, body).expect("sign");
    let ts = signed.timestamp.to_string();
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("webhook-id", signed.id.as_str().as_bytes()),
        ("webhook-timestamp", ts.as_bytes()),
        ("webhook-signature", signed.signature.as_bytes()),
    ];
    headers.extend_from_slice(extra);
    post_raw(addr, &headers, body).await
}

#[tokio::test]
async fn valid_message_reaches_the_handler() {
    let s = server().await;
    let id = MessageId::generate();
    let body = offer_body("job_1");
    let r = send_signed(s.addr, &s.ring, &id, unix_now(), &body, &[JSON]).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "job.offer");
    assert_eq!(v["delivery"], "first");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["key_id"], "key_1");
    assert_eq!(v["body_len"], body.len());
    assert_eq!(s.handled.load(Ordering::SeqCst), 1);

    // `application/*+json` with parameters is JSON too; timestamps inside the tolerance pass.
    let r = send_signed(
        s.addr,
        &s.ring,
        &MessageId::generate(),
        unix_now() - 200,
        &body,
        &[("Content-Type", b"application/vnd.diax+json; charset=utf-8")],
    )
    .await;
    assert_eq!(r.status, 202);
    let r = send_signed(
        s.addr,
        &s.ring,
        &MessageId::generate(),
        unix_now() + 200,
        &body,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(s.handled.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn tampered_body_and_wrong_secret_are_refused() {
    let s = server().await;
    let id = MessageId::generate();
    let body = offer_body("job_1");
    let now = unix_now();
    let signed = s.ring.sign(&id, now, &body).expect("sign");
    let ts = now.to_string();
    let headers = [
        ("webhook-id", id.as_str().as_bytes()),
        ("webhook-timestamp", ts.as_bytes()),
        ("webhook-signature", signed.signature.as_bytes()),
        JSON,
    ];
    let tampered = offer_body("job_2");
    post_raw(s.addr, &headers, &tampered)
        .await
        .assert_problem(ProblemType::SignatureInvalid);

    let stranger = Keyring::single(KeyId::parse("key_1").expect("id"), Secret::generate());
    send_signed(
        s.addr,
        &stranger,
        &MessageId::generate(),
        now,
        &body,
        &[JSON],
    )
    .await
    .assert_problem(ProblemType::SignatureInvalid);
    assert_eq!(s.handled.load(Ordering::SeqCst), 0);
}

/// `v1a` (ed25519): the sender's key is accepted, alone or next to entries of keys the
/// receiver does not know; another ed25519 key, an HMAC (`v1`) signature where only `v1a`
/// keys are configured and the reverse, and a `v1a` entry of the wrong length get the problem
/// types of PROTOCOL §2, and the handler never runs for them.
#[tokio::test]
async fn ed25519_signatures_right_key_accepted_wrong_key_and_scheme_refused() {
    let s = ed25519_server().await;
    let body = offer_body("job_1");
    let now = unix_now();
    let id = MessageId::generate();
    let r = send_signed(s.addr, &s.ring, &id, now, &body, &[JSON]).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (v["id"].as_str(), v["key_id"].as_str()),
        (Some(id.as_str()), Some("key_1"))
    );

    // The right entry next to a stranger's `v1a` entry and an unknown version: accepted.
    let stranger = Keyring::single(KeyId::parse("key_9").expect("id"), SigningKey::generate());
    let id = MessageId::generate();
    let mine = s.ring.sign(&id, now, &body).expect("sign").signature;
    let theirs = stranger.sign(&id, now, &body).expect("sign").signature;
    let header = format!("v9,AAAA {theirs} {mine}");
    let ts = now.to_string();
    let r = post_raw(
        s.addr,
        &[
            ("webhook-id", id.as_str().as_bytes()),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", header.as_bytes()),
            JSON,
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(s.handled.load(Ordering::SeqCst), 2);

    // Another ed25519 key, and an HMAC secret where only v1a keys are configured.
    let hmac = Keyring::single(KeyId::parse("key_1").expect("id"), Secret::generate());
    for ring in [&stranger, &hmac] {
        send_signed(s.addr, ring, &MessageId::generate(), now, &body, &[JSON])
            .await
            .assert_problem(ProblemType::SignatureInvalid);
    }
    // A `v1a` entry that is not 64 bytes: malformed.
    let id = MessageId::generate();
    let short = format!("v1a,{}", "A".repeat(44));
    post_raw(
        s.addr,
        &[
            ("webhook-id", id.as_str().as_bytes()),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", short.as_bytes()),
            JSON,
        ],
        &body,
    )
    .await
    .assert_problem(ProblemType::SignatureMalformed);
    // Tampered body under a valid v1a signature.
    let id = MessageId::generate();
    let signed = s.ring.sign(&id, now, &body).expect("sign");
    post_raw(
        s.addr,
        &[
            ("webhook-id", id.as_str().as_bytes()),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", signed.signature.as_bytes()),
            JSON,
        ],
        &offer_body("job_2"),
    )
    .await
    .assert_problem(ProblemType::SignatureInvalid);
    assert_eq!(s.handled.load(Ordering::SeqCst), 2);

    // The reverse: a v1a signature to a receiver with only an HMAC secret.
    let h = server().await;
    let own = Keyring::single(KeyId::parse("key_1").expect("id"), SigningKey::generate());
    send_signed(h.addr, &own, &MessageId::generate(), now, &body, &[JSON])
        .await
        .assert_problem(ProblemType::SignatureInvalid);
    assert_eq!(h.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn missing_and_malformed_headers_are_refused() {
    let s = server().await;
    let id = MessageId::generate();
    let body = offer_body("job_1");
    let now = unix_now();
    let signed = s.ring.sign(&id, now, &body).expect("sign");
    let ts = now.to_string();
    let all = [
        ("webhook-id", id.as_str().as_bytes()),
        ("webhook-timestamp", ts.as_bytes()),
        ("webhook-signature", signed.signature.as_bytes()),
    ];
    for skip in 0..3 {
        let mut headers: Vec<(&str, &[u8])> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, h)| *h)
            .collect();
        headers.push(JSON);
        post_raw(s.addr, &headers, &body)
            .await
            .assert_problem(ProblemType::SignatureMissing);
    }
    let malformed: [[(&str, &[u8]); 3]; 4] = [
        [all[0], ("webhook-timestamp", b"yesterday"), all[2]],
        [("webhook-id", b"msg_\xff\xfe"), all[1], all[2]],
        [("webhook-id", b"../../etc"), all[1], all[2]],
        [all[0], all[1], ("webhook-signature", b"v2,abc v1,!!!")],
    ];
    for headers in malformed {
        let mut headers = headers.to_vec();
        headers.push(JSON);
        post_raw(s.addr, &headers, &body)
            .await
            .assert_problem(ProblemType::SignatureMalformed);
    }
    assert_eq!(s.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let s = server().await;
    let body = offer_body("job_1");
    for ts in [unix_now() - 400, unix_now() + 400, 0] {
        send_signed(s.addr, &s.ring, &MessageId::generate(), ts, &body, &[JSON])
            .await
            .assert_problem(ProblemType::TimestampOutOfTolerance);
    }
    assert_eq!(s.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn replays_are_refused_and_redeliveries_answered() {
    let s = server().await;
    let id = MessageId::generate();
    let body = offer_body("job_1");
    let now = unix_now();
    let r = send_signed(s.addr, &s.ring, &id, now, &body, &[JSON]).await;
    assert_eq!(r.json()["delivery"], "first");
    // A retry of the same message, re-signed: handled as a redelivery.
    let r = send_signed(s.addr, &s.ring, &id, now + 1, &body, &[JSON]).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["delivery"], "redelivery");
    // The same id over another body, even validly signed: a replay.
    let other = offer_body("job_2");
    send_signed(s.addr, &s.ring, &id, now + 1, &other, &[JSON])
        .await
        .assert_problem(ProblemType::ReplayedMessage);
    assert_eq!(s.handled.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn wrong_content_type_is_refused() {
    let s = server().await;
    let body = offer_body("job_1");
    for ct in [
        &[("Content-Type", b"text/plain".as_slice())][..],
        &[(
            "Content-Type",
            b"application/x-www-form-urlencoded".as_slice(),
        )][..],
        &[][..],
    ] {
        send_signed(
            s.addr,
            &s.ring,
            &MessageId::generate(),
            unix_now(),
            &body,
            ct,
        )
        .await
        .assert_problem(ProblemType::UnsupportedMediaType);
    }
    assert_eq!(s.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversize_body_is_refused() {
    let s = server().await;
    let mut body = offer_body("job_1");
    // Valid JSON, validly signed, one byte over the limit.
    body.pop();
    body.extend(std::iter::repeat_n(b' ', BODY_LIMIT + 1 - body.len() - 1));
    body.push(b'}');
    assert_eq!(body.len(), BODY_LIMIT + 1);
    send_signed(
        s.addr,
        &s.ring,
        &MessageId::generate(),
        unix_now(),
        &body,
        &[JSON],
    )
    .await
    .assert_problem(ProblemType::PayloadTooLarge);
    // Exactly at the limit is fine.
    body.remove(body.len() - 2);
    let r = send_signed(
        s.addr,
        &s.ring,
        &MessageId::generate(),
        unix_now(),
        &body,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(s.handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_json_is_refused_after_verification() {
    let s = server().await;
    for body in [
        &b"{\"type\":\"job.offer\""[..],
        &b"{\"type\":\"job.exploded\"}"[..],
        &b"{\"type\":\"job.offer\",\"job_id\":\"../x\"}"[..],
        &b"\xff\xfe"[..],
        &b""[..],
    ] {
        send_signed(
            s.addr,
            &s.ring,
            &MessageId::generate(),
            unix_now(),
            body,
            &[JSON],
        )
        .await
        .assert_problem(ProblemType::InvalidRequest);
    }
    // Unsigned garbage is a signature problem first, never a parse problem.
    post_raw(s.addr, &[JSON], b"{not json")
        .await
        .assert_problem(ProblemType::SignatureMissing);
    assert_eq!(s.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn problems_render_as_problem_json() {
    use axum::response::IntoResponse as _;
    let resp = diax_sdk::Problem::account_required("https://p.example/signup").into_response();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(PROBLEM_CONTENT_TYPE)
    );
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .expect("body");
    let p: diax_sdk::Problem = serde_json::from_slice(&bytes).expect("problem");
    assert!(p.is(ProblemType::AccountRequired));
    assert_eq!(p.register_url(), Some("https://p.example/signup"));
}

// ---------------------------------------------------------------------------------------------
// Refusals before the whole body was read keep the connection safe to reuse
// ---------------------------------------------------------------------------------------------

/// The `Signed` extractor's server plus `GET /ping`, behind `finish_request_body`.
async fn finishing_server() -> SocketAddr {
    let ring = Keyring::single(KeyId::parse("key_1").expect("id"), Secret::generate());
    let verifier = Verifier::new(ring).with_config(VerifierConfig {
        max_body_bytes: BODY_LIMIT,
        ..VerifierConfig::default()
    });
    let state = AppState {
        verifier: Arc::new(verifier),
        handled: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/jobs", post(jobs))
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .layer(axum::middleware::from_fn(
            diax_sdk::axum_ext::finish_request_body,
        ))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Reads one response (head and `Content-Length` body) off `stream`: (status, head).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let (status, head, _) = child::read_response(stream).await;
    (status, head)
}

fn over_limit_head(length: usize) -> Vec<u8> {
    format!(
        "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_413_sent_before_the_body_arrived_leaves_the_connection_usable() {
    let addr = finishing_server().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // Twice the limit is announced; a bit more than the limit is sent, the rest only after
    // the refusal, as a client still writing when the answer arrives would.
    let length = 2 * BODY_LIMIT;
    stream
        .write_all(&over_limit_head(length))
        .await
        .expect("head");
    stream
        .write_all(&vec![b' '; BODY_LIMIT + 1])
        .await
        .expect("first part");
    let (status, head) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    stream
        .write_all(&vec![b' '; length - BODY_LIMIT - 1])
        .await
        .expect("the rest of the body");
    // The same connection serves the next request.
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("next request");
    let (status, head) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{head}");
}

#[tokio::test]
async fn a_413_for_a_body_too_long_to_drain_says_connection_close() {
    let addr = finishing_server().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let length = usize::try_from(diax_sdk::axum_ext::DRAIN_MAX_BYTES).expect("usize") * 4;
    stream
        .write_all(&over_limit_head(length))
        .await
        .expect("head");
    stream
        .write_all(&vec![b' '; BODY_LIMIT + 1])
        .await
        .expect("first part");
    let (status, head) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn a_413_reaches_a_client_that_keeps_writing_a_body_too_long_to_drain() {
    // A client busy writing its body may read the answer only once it has written it all.
    // Were the server to close at once with unread bytes in its socket, the kernel would
    // reset the connection and the client would lose the 413 it was sent: the server must
    // linger, reading and discarding, until the client has stopped sending.
    let addr = finishing_server().await;
    let length = usize::try_from(diax_sdk::axum_ext::DRAIN_MAX_BYTES).expect("usize") * 2;
    for round in 0..4 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&over_limit_head(length))
            .await
            .expect("head");
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < length {
            let n = chunk.len().min(length - sent);
            stream
                .write_all(&chunk[..n])
                .await
                .unwrap_or_else(|e| panic!("round {round}: cut after {sent} bytes: {e}"));
            sent += n;
        }
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "round {round}: {read:?}, {} bytes: {text}",
            answer.len()
        );
        assert!(text.contains("connection: close"), "round {round}: {text}");
    }
}

#[tokio::test]
async fn a_413_reaches_a_slow_client_still_sending_after_the_old_five_seconds() {
    // A client that keeps sending, slowly (a busy machine): 16 MiB in 16 parts a little over
    // 0.4 s apart, 6.5 s in all. The server lingers while data comes, not for a fixed time:
    // a 5 s total once cut such a client off, which saw a reset instead of the 413.
    let addr = finishing_server().await;
    let part = 1 << 20;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&over_limit_head(16 * part))
        .await
        .expect("head");
    let chunk = vec![b' '; part];
    let started = std::time::Instant::now();
    for i in 0..16 {
        tokio::time::sleep(std::time::Duration::from_millis(410)).await;
        stream
            .write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("cut after {i} MiB, {:?}: {e}", started.elapsed()));
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{read:?}: {text}");
}

#[tokio::test]
async fn a_client_that_stops_sending_is_closed_after_the_idle_wait() {
    // The linger is bounded by silence: a client that sends part of a long body and then
    // nothing gets its connection closed once LINGER_IDLE_WAIT has passed, not after the
    // whole LINGER_MAX_WAIT.
    let addr = finishing_server().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&over_limit_head(64 << 20))
        .await
        .expect("head");
    stream
        .write_all(&vec![b' '; 1 << 20])
        .await
        .expect("first part");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        diax_sdk::axum_ext::LINGER_MAX_WAIT,
        stream.read_to_end(&mut answer),
    )
    .await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "still open after {waited:?}");
    assert!(
        waited >= diax_sdk::axum_ext::LINGER_IDLE_WAIT / 2
            && waited < diax_sdk::axum_ext::LINGER_IDLE_WAIT * 3,
        "{waited:?}"
    );
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
}

#[tokio::test]
async fn a_415_sent_without_reading_the_body_leaves_the_connection_usable() {
    let addr = finishing_server().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = vec![b'x'; 64 * 1024];
    stream
        .write_all(
            format!(
                "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("head");
    let (status, head) = read_response(&mut stream).await;
    assert_eq!(status, 415, "{head}");
    stream
        .write_all(&body)
        .await
        .expect("body after the answer");
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("next request");
    let (status, head) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{head}");
}
