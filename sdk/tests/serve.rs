//! `diax_sdk::server` on a real loopback listener: a client that never finishes its request
//! head is cut after the deadline, a connection over the cap waits until one closes, and
//! ordinary clients are served throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use diax_sdk::server::{ServerLimits, serve_within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn start(limits: ServerLimits) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_within(
        listener,
        app,
        None,
        async {
            let _ = stopped.await;
        },
        limits,
    ));
    (addr.to_string(), stop)
}

/// Sends half a request head and then nothing; returns once the server closed the
/// connection (or panics after `bound`, far beyond the deadline under test).
async fn slowloris(addr: &str, bound: Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
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

async fn get(addr: &str) -> u16 {
    let client = diax_sdk::client::http_client(&diax_sdk::client::ClientConfig {
        timeout: Duration::from_secs(30),
        ..diax_sdk::client::ClientConfig::default()
    })
    .unwrap();
    client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_and_others_are_served() {
    let (addr, _stop) = start(ServerLimits {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 2,
        ..ServerLimits::default()
    })
    .await;
    // Both slots held by slow clients; an ordinary request is served once they are cut.
    let slow = [
        tokio::spawn(slowloris_owned(addr.clone())),
        tokio::spawn(slowloris_owned(addr.clone())),
    ];
    assert_eq!(get(&addr).await, 200);
    for s in slow {
        s.await.unwrap();
    }
    // And the server keeps serving.
    assert_eq!(get(&addr).await, 200);
}

async fn slowloris_owned(addr: String) {
    slowloris(&addr, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let (addr, _stop) = start(ServerLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 1,
        ..ServerLimits::default()
    })
    .await;
    // One idle connection that has sent nothing holds the only slot.
    let holder = TcpStream::connect(&addr).await.unwrap();
    // Wait until the server has accepted it (the slot is taken): a request on a second
    // connection then gets no answer while the first stays open.
    let mut second = TcpStream::connect(&addr).await.unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), second.read_to_end(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {buf:?}");
    drop(holder);
    tokio::time::timeout(Duration::from_secs(20), second.read_to_end(&mut buf))
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// `SignedSender` with `v1a` (ed25519) keys against a receiver served by
/// `diax_sdk::server` with the `Signed` extractor, holding only the sender's public key: the
/// right key is accepted (also from a keyring migrating from a `v1` secret, which signs with
/// both), another ed25519 key and an HMAC secret are refused with `401 signature-invalid`
/// (PROTOCOL §2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_sender_with_ed25519_keys_is_verified_by_public_key_only() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use diax_sdk::axum_ext::Signed;
    use diax_sdk::client::{RetryPolicy, SignedSender};
    use diax_sdk::{KeyId, Keyring, MessageId, ProblemType, Secret, SigningKey, Verifier};

    let own = SigningKey::generate();
    let verifier = Arc::new(Verifier::new(Keyring::single(
        KeyId::parse("key_ed").unwrap(),
        own.public_key(),
    )));
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    let app = axum::Router::new()
        .route(
            "/events",
            axum::routing::post(move |Signed { verified, .. }: Signed<serde_json::Value>| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    (
                        axum::http::StatusCode::ACCEPTED,
                        verified.key_id.as_str().to_owned(),
                    )
                }
            }),
        )
        .with_state(verifier);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_within(
        listener,
        app,
        None,
        async {
            let _ = stopped.await;
        },
        ServerLimits::default(),
    ));
    let sender = SignedSender::new(diax_sdk::client::http_client(&Default::default()).unwrap());
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let send = |ring: Keyring| {
        let (sender, url, policy) = (sender.clone(), url.clone(), policy);
        async move {
            sender
                .send(
                    &url,
                    &MessageId::generate(),
                    b"{\"n\":1}".to_vec(),
                    &ring,
                    &policy,
                )
                .await
                .expect("an answer")
        }
    };

    let ring = Keyring::single(KeyId::parse("key_ed").unwrap(), own.clone());
    let resp = send(ring).await;
    assert_eq!((resp.status, &resp.body[..]), (202, &b"key_ed"[..]));
    // Migrating from an HMAC secret: both entries are sent, the v1a one verifies.
    let mut migrating = Keyring::single(KeyId::parse("key_old").unwrap(), Secret::generate());
    migrating.insert(KeyId::parse("key_ed").unwrap(), own, None);
    assert_eq!(send(migrating).await.status, 202);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let wrong_key = Keyring::single(KeyId::parse("key_ed").unwrap(), SigningKey::generate());
    let wrong_scheme = Keyring::single(KeyId::parse("key_ed").unwrap(), Secret::generate());
    for ring in [wrong_key, wrong_scheme] {
        let resp = send(ring).await;
        assert_eq!(resp.status, 401);
        let problem = resp.problem().expect("a problem document");
        assert!(problem.is(ProblemType::SignatureInvalid), "{problem:?}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "refused messages never reach the handler"
    );
    let _ = stop.send(());
}

#[test]
fn the_sdk_client_forgets_idle_connections_before_the_sdk_server_closes_them() {
    assert!(
        diax_sdk::client::ClientConfig::default().pool_idle_timeout
            < ServerLimits::default().header_read_timeout
    );
}
