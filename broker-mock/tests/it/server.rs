//! The server itself: its shape (build on a bound listener, serve until a shutdown future,
//! or spawn and keep a handle), a restart on the same database file, TLS everywhere.

use broker_mock::client::MessageFilter;
use broker_mock::{App, BrokerApi, Clock, Config};
use diax_sdk::clock::unix_now;
use diax_sdk::wire::*;

use crate::common::*;

#[tokio::test]
async fn restart_on_the_same_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db").display().to_string();
    let cfg = Config {
        db: db.clone(),
        ..test_config()
    };
    let (broker, api) = start(cfg.clone()).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (created, user) = new_user(&api, "persistent").await;
    let m = user.upload_model("keep.stl", stl()).await.unwrap();
    let token = link_token(&s.reg, "acc_p", broker.clock().now());
    user.link(&s.reg.provider_id, &token).await.unwrap();
    broker.shutdown().await;

    let (broker, api) = start(cfg).await;
    let user = api.user(created.api_key);
    assert_eq!(user.model(&m.model_id).await.unwrap(), m);
    assert_eq!(user.download(&m.model_id, 1).await.unwrap(), stl());
    assert_eq!(user.links().await.unwrap().links.len(), 1);
    assert_eq!(
        kind(&user.link(&s.reg.provider_id, &token).await.unwrap_err()),
        "token-reused"
    );
    assert_eq!(api.registry(None).await.unwrap().providers.len(), 1);
    assert!(
        !api.messages(&MessageFilter::default())
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    broker.shutdown().await;
    drop(dir);
}

fn write_pki(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn tls_everywhere_with_a_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_pki(dir.path());
    let (broker, _) = start(Config {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ca_certs: vec![ca.clone()],
        ..test_config()
    })
    .await;
    assert!(broker.base_url().starts_with("https://"));
    let ca_cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca_cert])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without the CA the handshake fails: the channel is really TLS.
    assert!(
        http()
            .get(format!("{}/v1/registry", broker.base_url()))
            .send()
            .await
            .is_err()
    );
    let api = BrokerApi::new(trusting.clone(), broker.base_url());

    // A provider served over HTTPS by a certificate of the same CA.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Fake {
        base_url: format!("https://{addr}"),
        state: std::sync::Arc::new(FakeState::default()),
        http: trusting.clone(),
    };
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
        .await
        .unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)
        .unwrap()
        .handle(handle.clone())
        .serve(fake_router(fake.clone()).into_make_service());
    let server = tokio::spawn(server);

    let s = register(&api, &fake, SecretScope::Service).await;
    let (user, model, job) = accepted_job(&api, &fake, &s, &broker).await;
    let (_, got) = fake.last_input();
    assert_eq!(got.unwrap(), stl(), "the provider downloaded over https");
    let healed = b"healed over tls".to_vec();
    fake.set_result(healed.clone());
    let done = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Completed {
            result: JobResult {
                download: fake.result_download(&healed, unix_now() + 60),
                format: "stl".into(),
                report: None,
                charged: None,
                picture: None,
            },
        },
    );
    let (st, ack) = post_event_raw(
        &trusting,
        &s.reg,
        &s.ring,
        "msg_tls",
        unix_now(),
        &serde_json::to_vec(&done).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{ack}");
    assert_eq!(user.download(&model.model_id, 2).await.unwrap(), healed);
    handle.graceful_shutdown(None);
    let _ = server.await;
    broker.shutdown().await;
}

#[tokio::test]
async fn an_app_is_built_on_a_bound_listener_and_serves_until_its_shutdown_future_completes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clock = Clock::default();
    let app = App::build(listener, test_config(), clock.clone())
        .await
        .unwrap();
    assert_eq!(app.local_addr(), addr);
    assert_eq!(app.base_url(), format!("http://{addr}"));
    clock.advance(42);
    assert_eq!(
        app.clock().now(),
        clock.now(),
        "the app keeps the clock it was given"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.serve(async {
        let _ = stopped.await;
    }));
    let api = BrokerApi::new(http(), &format!("http://{addr}"));
    assert!(api.registry(None).await.unwrap().providers.is_empty());
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_spawned_app_is_reached_and_stopped_through_its_handle() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::build(
        listener,
        Config {
            public_url: Some("http://broker.test:8700/".into()),
            ..test_config()
        },
        Clock::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        app.base_url(),
        "http://broker.test:8700",
        "the announced URL"
    );
    let broker = app.spawn();
    assert_eq!(broker.local_addr(), addr);
    assert_eq!(broker.base_url(), "http://broker.test:8700");
    let api = BrokerApi::new(http(), &format!("http://{addr}"));
    let (_, user) = new_user(&api, "spawned").await;
    assert_eq!(user.me().await.unwrap().name, "spawned");
    broker.shutdown().await;
}
