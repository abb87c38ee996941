//! Bad input at every interface gets a precise problem, is logged, and the server keeps serving.

use broker_mock::Config;
use broker_mock::client::MessageFilter;
use diax_sdk::*;

use crate::common::*;

#[tokio::test]
async fn bad_input_gets_problems_and_the_server_keeps_serving() {
    let (broker, api) = start(Config {
        max_body_bytes: 2048,
        ..test_config()
    })
    .await;
    let b = broker.base_url().to_owned();
    let h = http();
    use reqwest::Method as M;
    let cases: Vec<(M, String, Option<&str>, Option<&str>, Vec<u8>, u16, &str)> = vec![
        (
            M::GET,
            format!("{b}/nope"),
            None,
            None,
            vec![],
            404,
            "not-found",
        ),
        (
            M::DELETE,
            format!("{b}/v1/users"),
            None,
            None,
            vec![],
            405,
            "method-not-allowed",
        ),
        (
            M::PUT,
            format!("{b}/v1/registry"),
            None,
            None,
            vec![],
            405,
            "method-not-allowed",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("text/plain"),
            b"{}".to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            None,
            b"{}".to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            b"{not json".to_vec(),
            400,
            "invalid-request",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            br#"{"name":""}"#.to_vec(),
            400,
            "invalid-request",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            br#"{"name":"x","notification_url":"http://example.com/n"}"#.to_vec(),
            400,
            "invalid-request",
        ),
        (
            M::POST,
            format!("{b}/v1/users"),
            None,
            Some("application/json"),
            vec![b' '; 5000],
            413,
            "payload-too-large",
        ),
        (
            M::GET,
            format!("{b}/v1/me"),
            None,
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            M::GET,
            format!("{b}/v1/me"),
            Some("bk_wrong"),
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            M::GET,
            format!("{b}/v1/me"),
            Some("tc_credential"),
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            M::GET,
            format!("{b}/v1/messages?direction=sideways"),
            None,
            None,
            vec![],
            400,
            "invalid-request",
        ),
        (
            M::GET,
            format!("{b}/v1/messages?limit=0"),
            None,
            None,
            vec![],
            400,
            "invalid-request",
        ),
        (
            M::GET,
            format!("{b}/v1/registry?service_kind=Bad%20Kind"),
            None,
            None,
            vec![],
            400,
            "invalid-request",
        ),
    ];
    for (m, url, auth, ct, body, status, slug) in cases {
        let what = format!("{m} {url}");
        let (got, got_ct, json) = raw(&h, m, url, auth, ct, body).await;
        assert_eq!(got, status, "{what}: {json}");
        assert_eq!(got_ct, PROBLEM_CONTENT_TYPE, "{what}");
        assert_eq!(problem_type(&json), slug, "{what}: {json}");
        assert_eq!(json["status"], status, "{what}");
    }
    // Still serving.
    let (_, user) = new_user(&api, "after the storm").await;
    assert_eq!(user.me().await.unwrap().name, "after the storm");
    // Every refusal is in the message log with its reason.
    let log = api
        .messages(&MessageFilter {
            direction: Some("in".into()),
            limit: Some(1000),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let unsupported = log
        .messages
        .iter()
        .find(|m| m.status == Some(415))
        .expect("415 logged");
    assert_eq!(unsupported.verdict, "refused");
    assert!(
        unsupported
            .reason
            .as_deref()
            .unwrap()
            .contains("application/json")
    );
    assert!(
        log.messages
            .iter()
            .all(|m| !m.endpoint.starts_with("/v1/messages"))
    );
    broker.shutdown().await;
}

/// A body over the limit is refused before it is read; once the client has finished
/// sending it, the same connection serves the next request (pooling clients reuse it).
#[tokio::test]
async fn a_413_leaves_the_connection_usable() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (broker, _api) = start(Config {
        max_body_bytes: 2048,
        ..test_config()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(broker.local_addr())
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /v1/users HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    async fn response(stream: &mut tokio::net::TcpStream) -> (u16, String) {
        let mut raw = Vec::new();
        let mut byte = [0_u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.unwrap();
            assert_eq!(n, 1, "connection closed after {raw:?}");
            raw.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0_u8; length];
        stream.read_exact(&mut body).await.unwrap();
        (head.split(' ').nth(1).unwrap().parse().unwrap(), head)
    }
    let (status, head) = response(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    stream.write_all(&vec![b' '; 100_000]).await.unwrap();
    stream
        .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: broker\r\n\r\n")
        .await
        .unwrap();
    let (status, head) = response(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    drop(stream);
    broker.shutdown().await;
}
