//! The provider's own API (accounts, top-up, ledger, link tokens), bad input on every
//! endpoint, secret rotation, TLS and the settings file.

use crate::support::*;
use diax_sdk::wire::{BrokerMessage, LinkTokenGrant, Scheme};
use diax_sdk::{LinkTokenValidator, MessageId, ProblemType};
use serde_json::{Value, json};

async fn accounts_and_money(backend: Backend, scheme: Scheme) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start_with(scheme).await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    let base = provider.base_url().to_owned();
    let account = create_account(&provider, "Gareth").await;
    assert_eq!((account.balance, account.currency.as_str()), (0, "EUR"));
    assert!(account.api_key.starts_with("fmp_"));

    // Link tokens need a registration first.
    let resp = client()
        .post(format!("{base}/v1/accounts/me/link-token"))
        .bearer_auth(&account.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let reg = register(&provider, &broker).await;
    let resp = client()
        .post(format!("{base}/v1/accounts/me/link-token"))
        .bearer_auth(&account.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let grant: LinkTokenGrant = resp.json().await.unwrap();
    assert_eq!(grant.account_id, account.account_id);
    let claims = LinkTokenValidator::new(reg.provider_id.clone(), BROKER_ID)
        .validate(&grant.token, &broker.keyring())
        .expect("the broker accepts the token");
    assert_eq!(claims.sub, account.account_id);

    // Top-up with an idempotency key: once, whatever is retried.
    let top = |key: &'static str, amount: i64| {
        let base = base.clone();
        let api_key = account.api_key.clone();
        async move {
            client()
                .post(format!("{base}/v1/accounts/me/top-up"))
                .bearer_auth(api_key)
                .header("idempotency-key", key)
                .json(&json!({ "amount": amount }))
                .send()
                .await
                .unwrap()
        }
    };
    let first: Value = top("pay-1", 700).await.json().await.unwrap();
    let again: Value = top("pay-1", 700).await.json().await.unwrap();
    assert_eq!(first["entry"], again["entry"]);
    assert_eq!(again["balance"], 700);
    assert_eq!(top("pay-1", 800).await.status(), 409);
    top("pay-2", 300).await;
    let (status, me) = get_json(&format!("{base}/v1/accounts/me"), Some(&account.api_key)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(1000), Some(0))
    );
    let (_, ledger) = get_json(
        &format!("{base}/v1/accounts/me/ledger"),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 2);

    // Balance never negative: concurrent offers beyond the balance hold at most what is there.
    let model_size = 1024 * 1024 * 30; // 50 + 30 × 10 = 350 each: two fit in 1000, not three
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let offer = broker.offer(Some(&account.account_id), model_size);
        let msg = BrokerMessage::Offer(offer);
        let (provider, broker) = (&provider, &broker);
        tasks.push(async move {
            send_signed(provider, broker, &MessageId::generate(), &msg)
                .await
                .0
        });
    }
    let mut statuses = futures_util::future::join_all(tasks).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 202, 402, 402, 402]);
    let (_, me) = get_json(&format!("{base}/v1/accounts/me"), Some(&account.api_key)).await;
    assert_eq!(
        (me["balance"].as_i64(), me["held"].as_i64()),
        (Some(300), Some(700))
    );
    provider.shutdown().await;
}
every_backend_and_scheme!(accounts_and_money);

async fn bad_input_everywhere(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    let base = provider.base_url().to_owned();
    let account = create_account(&provider, "Eve").await;
    let c = client();
    let is_problem = |r: &reqwest::Response| {
        r.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            == Some("application/problem+json".into())
    };
    let mut cases: Vec<(reqwest::RequestBuilder, u16, ProblemType)> = vec![
        (c.get(format!("{base}/nope")), 404, ProblemType::NotFound),
        (
            c.delete(format!("{base}/v1/accounts")),
            405,
            ProblemType::MethodNotAllowed,
        ),
        (
            c.get(format!("{base}/diax/jobs")),
            405,
            ProblemType::MethodNotAllowed,
        ),
        (
            c.post(format!("{base}/v1/accounts"))
                .header("content-type", "text/plain")
                .body("x"),
            415,
            ProblemType::UnsupportedMediaType,
        ),
        (
            c.post(format!("{base}/v1/accounts"))
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
            ProblemType::InvalidRequest,
        ),
        (
            c.post(format!("{base}/v1/accounts"))
                .json(&json!({ "name": "" })),
            400,
            ProblemType::InvalidRequest,
        ),
        (
            c.post(format!("{base}/v1/accounts"))
                .json(&json!({ "name": "x", "admin": true })),
            400,
            ProblemType::InvalidRequest,
        ),
        (
            c.post(format!("{base}/v1/accounts"))
                .header("content-type", "application/json")
                .body(format!("{{\"name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024))),
            413,
            ProblemType::PayloadTooLarge,
        ),
        (
            c.get(format!("{base}/v1/accounts/me")),
            401,
            ProblemType::Unauthorized,
        ),
        (
            c.get(format!("{base}/v1/accounts/me"))
                .bearer_auth("fmp_wrong"),
            401,
            ProblemType::Unauthorized,
        ),
        (
            c.get(format!("{base}/v1/accounts/me/ledger"))
                .header("authorization", "Basic Zm9v"),
            401,
            ProblemType::Unauthorized,
        ),
        (
            c.post(format!("{base}/v1/accounts/me/top-up"))
                .bearer_auth(&account.api_key)
                .json(&json!({ "amount": -5 })),
            400,
            ProblemType::InvalidRequest,
        ),
        (
            c.post(format!("{base}/v1/accounts/me/top-up"))
                .bearer_auth(&account.api_key)
                .json(&json!({ "amount": 1.5 })),
            400,
            ProblemType::InvalidRequest,
        ),
        (
            c.post(format!("{base}/v1/accounts/me/top-up"))
                .bearer_auth(&account.api_key)
                .json(&json!({ "amount": 9_000_000_000_000_000_000u64 })),
            400,
            ProblemType::InvalidRequest,
        ),
        (
            c.post(format!("{base}/v1/accounts/me/link-token"))
                .bearer_auth("nope"),
            401,
            ProblemType::Unauthorized,
        ),
        (
            c.get(format!("{base}/results/pjob_x")),
            401,
            ProblemType::CredentialInvalid,
        ),
        (
            c.get(format!("{base}/results/pjob_x"))
                .bearer_auth("rc_forged"),
            401,
            ProblemType::CredentialInvalid,
        ),
        (
            c.get(format!("{base}/diax/jobs/pjob_missing")),
            401,
            ProblemType::Unauthorized,
        ),
    ];
    for (i, (req, status, kind)) in cases.drain(..).enumerate() {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        assert!(is_problem(&resp), "case {i}: problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["type"], kind.uri(), "case {i}: {body}");
        assert_eq!(body["status"], status, "case {i}");
    }
    let (status, body) = get_json(&format!("{base}/healthz"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = get_json(&format!("{base}/readyz"), None).await;
    assert_eq!(status, 200);
    provider.shutdown().await;
}
both_backends!(bad_input_everywhere);

/// The ledger comes in pages: `limit` entries from the first after `after`, and a page with
/// more behind it names its last entry in `next_after`. Walking the pages gives every entry
/// once, in order; a `limit` out of range, an `after` that is not an entry of the caller's
/// ledger and an unknown parameter are `400 invalid-request`.
async fn the_ledger_comes_in_pages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    let base = provider.base_url().to_owned();
    let mine = create_account(&provider, "Pat").await;
    let other = create_account(&provider, "Quinn").await;
    for amount in 1..=7 {
        top_up(&provider, &mine.api_key, amount).await;
    }
    let theirs = top_up(&provider, &other.api_key, 1).await;
    let url = format!("{base}/v1/accounts/me/ledger");
    let ids = |page: &Value| -> Vec<String> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["entry_id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Everything on one page by default, oldest first.
    let (status, all) = get_json(&url, Some(&mine.api_key)).await;
    assert_eq!(status, 200, "{all}");
    let amounts: Vec<i64> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [1, 2, 3, 4, 5, 6, 7]);
    assert!(all.get("next_after").is_none(), "{all}");

    // Pages of 3: 3, 3 and 1, each but the last naming its last entry.
    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let (status, page) = get_json(&format!("{url}?{query}"), Some(&mine.api_key)).await;
        assert_eq!(status, 200, "{page}");
        let got = ids(&page);
        sizes.push(got.len());
        walked.extend(got.iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), got.last().map(String::as_str));
                query = format!("limit=3&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(walked, ids(&all));
    // A page that ends with the last entry says nothing more follows.
    let (_, exact) = get_json(&format!("{url}?limit=7"), Some(&mine.api_key)).await;
    assert_eq!(ids(&exact).len(), 7);
    assert!(exact.get("next_after").is_none(), "{exact}");
    let last = walked.last().unwrap();
    let (status, past) = get_json(&format!("{url}?after={last}"), Some(&mine.api_key)).await;
    assert_eq!((status, ids(&past).len()), (200, 0), "{past}");

    let their_entry = theirs["entry"]["entry_id"].as_str().unwrap();
    for query in [
        "limit=0".to_owned(),
        "limit=1001".to_owned(),
        "limit=x".to_owned(),
        "limit=".to_owned(),
        "after=led_nothing".to_owned(),
        format!("after={their_entry}"),
        format!("after={}", "x".repeat(5000)),
        "before=x".to_owned(),
    ] {
        let r = client()
            .get(format!("{url}?{query}"))
            .bearer_auth(&mine.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let problem: Value = r.json().await.unwrap();
        assert_eq!(
            problem["type"],
            ProblemType::InvalidRequest.uri(),
            "{query}: {problem}"
        );
        // The refusal quotes a bounded part of what was sent.
        assert!(problem["detail"].as_str().unwrap().len() < 200, "{problem}");
    }
    provider.shutdown().await;
}
both_backends!(the_ledger_comes_in_pages);

/// Rotation: the provider keeps the old key during the grace period (both verify), and
/// link tokens use the new one.
async fn secret_rotation(backend: Backend, scheme: Scheme) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start_with(scheme).await;
    let provider = start_provider(test_config(&db, db.dir())).await;
    let reg = register(&provider, &broker).await;
    let old_ring = broker.keyring();
    let svc = provider.service();
    let rotated = fixmyprint::service::rotate(svc.db(), svc.http(), "usr_key", Some(3600), None)
        .await
        .expect("rotate");
    assert_eq!(rotated.previous_key_id, reg.key_id);
    svc.reload_keyring().await.unwrap();
    // Offers signed with only the old key, only the new key, and both: all verify.
    let account = create_account(&provider, "Ro").await;
    let offer = broker.offer(Some(&account.account_id), 10);
    for ring in [old_ring, broker.keyring()] {
        let resp = diax_sdk::client::SignedSender::new(client())
            .send_once(
                &format!("{}/diax/jobs", provider.base_url()),
                &MessageId::generate(),
                serde_json::to_vec(&BrokerMessage::Offer(offer.clone())).unwrap(),
                &ring,
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 402, "verified, then refused for money");
    }
    let grant: LinkTokenGrant = client()
        .post(format!("{}/v1/accounts/me/link-token", provider.base_url()))
        .bearer_auth(&account.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = LinkTokenValidator::peek_key_id(&grant.token).unwrap();
    assert_eq!(kid, rotated.key_id);
    provider.shutdown().await;
}
every_backend_and_scheme!(secret_rotation);

/// HTTPS with a certificate from a test CA, settings from a TOML file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_config_file() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = db.dir();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let file = dir.join("fixmyprint.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = {:?}\ndata_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\nworkers = 0\nprice_base = 70\n",
            db.url,
            dir.join("data"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        ),
    )
    .unwrap();
    let args = fixmyprint::service::ServeArgs {
        config: Some(file),
        ..Default::default()
    };
    let config = args.resolve().unwrap();
    assert_eq!(config.pricing.base, 70);
    assert_eq!(config.workers, 0);
    let provider = start_provider(config).await;
    assert!(provider.base_url().starts_with("https://"));
    let https = diax_sdk::client::http_client(&diax_sdk::client::ClientConfig {
        extra_root_certs_pem: vec![ca.pem().into_bytes()],
        ..Default::default()
    })
    .unwrap();
    let resp = https
        .get(format!("{}/readyz", provider.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A client that does not trust the CA refuses the connection.
    assert!(
        client()
            .get(format!("{}/healthz", provider.base_url()))
            .send()
            .await
            .is_err()
    );
    provider.shutdown().await;
}

/// A body over the limit is refused before it has all arrived; the connection still serves
/// the next request once the client has finished sending (a pooling client reuses it).
#[tokio::test]
async fn a_413_leaves_the_connection_usable() {
    use tokio::io::AsyncWriteExt as _;
    let db = TestDb::new(Backend::Sqlite).await;
    let config = test_config(&db, db.dir());
    let limit = config.max_body_bytes;
    let provider = start_provider(config).await;
    let mut stream = tokio::net::TcpStream::connect(provider.local_addr())
        .await
        .unwrap();
    let length = 2 * limit;
    stream
        .write_all(
            format!(
                "POST /v1/accounts HTTP/1.1\r\nHost: fixmyprint\r\n\
                 Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(&vec![b' '; limit + 1]).await.unwrap();
    let (status, head, _) = crate::child::read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    stream
        .write_all(&vec![b' '; length - limit - 1])
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: fixmyprint\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = crate::child::read_response(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    drop(stream);
    provider.shutdown().await;
}

/// `trusted_broker_keys`: once registered (with ed25519), a message signed by a trusted key
/// verifies next to the registered broker's; before registration nothing does (`503`), and a
/// key nobody trusted is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_broker_key_verifies_next_to_the_registered_ones() {
    let db = TestDb::new(Backend::Sqlite).await;
    let broker = FakeBroker::start_with(Scheme::V1a).await;
    let runner = diax_sdk::SigningKey::generate();
    let provider = start_provider(fixmyprint::service::Config {
        trusted_broker_keys: vec![runner.public_key()],
        ..test_config(&db, db.dir())
    })
    .await;
    let runner_ring = diax_sdk::Keyring::single(diax_sdk::KeyId::generate(), runner);
    let account = create_account(&provider, "Tr").await;
    let send = |ring: diax_sdk::Keyring, body: Vec<u8>| {
        let url = format!("{}/diax/jobs", provider.base_url());
        async move {
            diax_sdk::client::SignedSender::new(client())
                .send_once(&url, &MessageId::generate(), body, &ring)
                .await
                .unwrap()
                .status
        }
    };
    // Not registered: the trusted key alone does not make the service answer offers.
    assert_eq!(send(runner_ring.clone(), b"{}".to_vec()).await, 503);
    register(&provider, &broker).await;
    let offer = serde_json::to_vec(&BrokerMessage::Offer(
        broker.offer(Some(&account.account_id), 10),
    ))
    .unwrap();
    assert_eq!(
        send(runner_ring, offer.clone()).await,
        402,
        "verified, then refused for money"
    );
    assert_eq!(send(broker.keyring(), offer.clone()).await, 402);
    assert_eq!(send(broker.stranger(), offer).await, 401);
    provider.shutdown().await;
}
