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
