//! Shared helpers of the service tests: a throwaway database (SQLite file or a fresh
//! PostgreSQL database), a tiny fake broker, and a provider started on port 0.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use diax_sdk::client::{ClientConfig, SignedSender};
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::{
    BrokerMessage, Download, EventAck, Group, JobEvent, JobOffer, JobState, OfferUser,
    OfferedModel, ProviderRegistered, RegisterProvider, RotateSecret, Scheme, SecretRotated,
    SecretScope,
};
use diax_sdk::{
    AccountId, GroupId, JobId, KeyId, KeyMaterial, Keyring, MessageId, ModelId, ProviderId,
    PublicKey, Secret, SigningKey, UserId, Verifier,
};
use fixmyprint::service::accounts::AccountCreated;
use fixmyprint::service::{self, Config, ServiceHandle};
use serde_json::Value;
use tempfile::TempDir;

pub const BROKER_ID: &str = "diax-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend (two `#[tokio::test]`s).
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await;
            }
        }
    };
}

/// Runs an async test body once per backend and signature scheme (four `#[tokio::test]`s):
/// `hmac-sha256` (`v1`, a shared secret) and `ed25519` (`v1a`, a key pair on each side).
macro_rules! every_backend_and_scheme {
    ($name:ident) => {
        mod $name {
            use diax_sdk::wire::Scheme;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite, Scheme::V1).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres, Scheme::V1).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_ed25519() {
                super::$name($crate::support::Backend::Sqlite, Scheme::V1a).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_ed25519() {
                super::$name($crate::support::Backend::Postgres, Scheme::V1a).await;
            }
        }
    };
}

/// A database that disappears with the value (even when the test panics).
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    dir: TempDir,
    pg: Option<(String, String)>, // (admin url, database name)
}

pub fn pg_admin_url() -> String {
    std::env::var("FIXMYPRINT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("fmp.db").display()),
                dir,
                pg: None,
            },
            Backend::Postgres => {
                use sqlx::Connection as _;
                let admin = pg_admin_url();
                let name = format!(
                    "fmp_test_{}",
                    diax_sdk::util::random_token("", 12).to_ascii_lowercase()
                );
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL at FIXMYPRINT_TEST_PG_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let _ = conn.close().await;
                let mut url = url::Url::parse(&admin).expect("admin url");
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    dir,
                    pg: Some((admin, name)),
                }
            }
        }
    }

    /// A directory that lives as long as the database.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    use sqlx::Connection as _;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fake broker
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct BrokerState {
    /// The scheme it registers providers with.
    pub scheme: Mutex<Scheme>,
    /// With `hmac-sha256` the shared secrets; with `ed25519` the broker's own secret keys
    /// (which sign offers and inputs) and the provider's public keys (which verify events).
    pub keyring: Mutex<Keyring>,
    pub verifier: Mutex<Option<Arc<Verifier>>>,
    pub provider_id: Mutex<Option<ProviderId>>,
    /// Every signed event POST that verified: (webhook-id, event, answered status).
    pub attempts: Mutex<Vec<(String, JobEvent, u16)>>,
    /// Events accepted (first deliveries only).
    pub events: Mutex<Vec<JobEvent>>,
    /// Answer 503 to this many event POSTs.
    pub fail_next: AtomicUsize,
    /// Model bytes by credential token.
    pub models: Mutex<HashMap<String, Vec<u8>>>,
    pub base_url: Mutex<String>,
}

#[derive(Debug)]
pub struct FakeBroker {
    pub addr: SocketAddr,
    pub base_url: String,
    pub state: Arc<BrokerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn broker_events(
    State(st): State<Arc<BrokerState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let verifier = st.verifier.lock().unwrap().clone();
    let Some(verifier) = verifier else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let raw = diax_sdk::axum_ext::raw_headers(&headers);
    let (verified, delivery) = match verifier.verify(&raw, &body).await {
        Ok(v) => v,
        Err(e) => return diax_sdk::Problem::from(&e).into_response(),
    };
    let Ok(event) = serde_json::from_slice::<JobEvent>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if event.provider_id.as_str() != provider {
        return StatusCode::FORBIDDEN.into_response();
    }
    let fail = st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail { 503 } else { 200 };
    st.attempts
        .lock()
        .unwrap()
        .push((verified.id.to_string(), event.clone(), status));
    if fail {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let duplicate = {
        let mut events = st.events.lock().unwrap();
        let dup = events
            .iter()
            .any(|e| e.job_id == event.job_id && e.sequence == event.sequence);
        if !dup {
            events.push(event.clone());
        }
        dup || delivery == diax_sdk::Delivery::Redelivery
    };
    axum::Json(EventAck {
        job_id: event.job_id.clone(),
        state: event.kind.state(),
        duplicate,
    })
    .into_response()
}

async fn broker_model(
    State(st): State<Arc<BrokerState>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {token}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match st.models.lock().unwrap().get(&token) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn broker_groups() -> Response {
    (
        StatusCode::CREATED,
        axum::Json(Group {
            group_id: GroupId::generate(),
            name: "g".into(),
            members: vec![],
        }),
    )
        .into_response()
}

async fn broker_register(
    State(st): State<Arc<BrokerState>>,
    headers: HeaderMap,
    axum::Json(request): axum::Json<RegisterProvider>,
) -> Response {
    if headers.get("authorization").is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let scheme = *st.scheme.lock().unwrap();
    if request.signature_scheme != scheme {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let provider_id = ProviderId::generate();
    let key_id = KeyId::generate();
    let mut ring = Keyring::new();
    let keys = match new_keys(scheme, &key_id, request.public_key.as_deref(), &mut ring) {
        Ok(keys) => keys,
        Err(status) => return status.into_response(),
    };
    *st.keyring.lock().unwrap() = ring.clone();
    *st.verifier.lock().unwrap() = Some(Arc::new(Verifier::new(ring)));
    *st.provider_id.lock().unwrap() = Some(provider_id.clone());
    let base = st.base_url.lock().unwrap().clone();
    (
        StatusCode::CREATED,
        axum::Json(ProviderRegistered {
            events_url: format!("{base}/v1/providers/{provider_id}/events"),
            provider_id,
            broker_id: BROKER_ID.into(),
            key_id,
            secret: keys.secret,
            secret_scope: SecretScope::Service,
            bound_user_id: None,
            signature_scheme: scheme,
            broker_key_id: keys.broker_key_id,
            broker_public_key: keys.broker_public_key,
        }),
    )
        .into_response()
}

/// What an answer to a registration or rotation carries besides the key id.
struct NewKeys {
    secret: Option<String>,
    broker_key_id: Option<KeyId>,
    broker_public_key: Option<String>,
}

/// Adds the keys of a registration or rotation to `ring`: a shared secret under `key_id`
/// (`hmac-sha256`), or the provider's public key under `key_id` and a fresh broker key pair
/// under a key id of its own (`ed25519`, where the request must carry the public key).
fn new_keys(
    scheme: Scheme,
    key_id: &KeyId,
    public_key: Option<&str>,
    ring: &mut Keyring,
) -> Result<NewKeys, StatusCode> {
    match scheme {
        Scheme::V1 => {
            let secret = Secret::generate();
            ring.insert(key_id.clone(), secret.clone(), None);
            Ok(NewKeys {
                secret: Some(secret.expose()),
                broker_key_id: None,
                broker_public_key: None,
            })
        }
        Scheme::V1a => {
            let provider_key = public_key
                .and_then(|k| PublicKey::parse(k).ok())
                .ok_or(StatusCode::UNPROCESSABLE_ENTITY)?;
            let broker_key = SigningKey::generate();
            let broker_key_id = KeyId::generate();
            ring.insert(key_id.clone(), provider_key, None);
            ring.insert(broker_key_id.clone(), broker_key.clone(), None);
            Ok(NewKeys {
                secret: None,
                broker_key_id: Some(broker_key_id),
                broker_public_key: Some(broker_key.public_key().to_string()),
            })
        }
    }
}

async fn broker_rotate(
    State(st): State<Arc<BrokerState>>,
    Path(provider): Path<String>,
    axum::Json(request): axum::Json<RotateSecret>,
) -> Response {
    let scheme = *st.scheme.lock().unwrap();
    let key_id = KeyId::generate();
    let until = unix_now() + 3600;
    let mut ring = st.keyring.lock().unwrap().clone();
    // The provider's key in force: the shared secret, or the provider's public key.
    let previous = ring
        .iter()
        .filter(|k| k.not_after.is_none())
        .filter(|k| {
            matches!(
                k.material,
                KeyMaterial::Hmac(_) | KeyMaterial::Ed25519Public(_)
            )
        })
        .last()
        .unwrap()
        .id
        .clone();
    let open: Vec<KeyId> = ring
        .iter()
        .filter(|k| k.not_after.is_none())
        .map(|k| k.id.clone())
        .collect();
    for id in &open {
        ring.expire(id, until);
    }
    let keys = match new_keys(scheme, &key_id, request.public_key.as_deref(), &mut ring) {
        Ok(keys) => keys,
        Err(status) => return status.into_response(),
    };
    *st.keyring.lock().unwrap() = ring.clone();
    *st.verifier.lock().unwrap() = Some(Arc::new(Verifier::new(ring)));
    axum::Json(SecretRotated {
        provider_id: ProviderId::parse(provider).unwrap(),
        key_id,
        secret: keys.secret,
        previous_key_id: previous,
        previous_valid_until: until,
        signature_scheme: scheme,
        broker_key_id: keys.broker_key_id,
        broker_public_key: keys.broker_public_key,
    })
    .into_response()
}

impl FakeBroker {
    /// A fake broker that registers providers with `hmac-sha256`.
    pub async fn start() -> Self {
        Self::start_with(Scheme::V1).await
    }

    /// A fake broker that registers providers with `scheme`.
    pub async fn start_with(scheme: Scheme) -> Self {
        let state = Arc::new(BrokerState {
            scheme: Mutex::new(scheme),
            ..BrokerState::default()
        });
        let app = Router::new()
            .route("/v1/groups", post(broker_groups))
            .route("/v1/providers", post(broker_register))
            .route("/v1/providers/{id}/secrets/rotate", post(broker_rotate))
            .route("/v1/providers/{id}/events", post(broker_events))
            .route("/models/{token}", get(broker_model))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}");
        *state.base_url.lock().unwrap() = base_url.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeBroker {
            addr,
            base_url,
            state,
            task,
        }
    }

    pub fn provider_id(&self) -> ProviderId {
        self.state
            .provider_id
            .lock()
            .unwrap()
            .clone()
            .expect("registered")
    }

    /// The scheme it registers providers with.
    pub fn scheme(&self) -> Scheme {
        *self.state.scheme.lock().unwrap()
    }

    /// A keyring of keys this broker does not have, of its scheme (signs messages the
    /// provider must refuse).
    pub fn stranger(&self) -> Keyring {
        match self.scheme() {
            Scheme::V1 => Keyring::single(KeyId::generate(), Secret::generate()),
            Scheme::V1a => Keyring::single(KeyId::generate(), SigningKey::generate()),
        }
    }

    pub fn keyring(&self) -> Keyring {
        self.state.keyring.lock().unwrap().clone()
    }

    /// Hosts `bytes` behind a fresh credential; returns the `Download` for a job input.
    pub fn host_model(&self, bytes: &[u8]) -> Download {
        let token = diax_sdk::util::random_token("tc_", 24);
        self.state
            .models
            .lock()
            .unwrap()
            .insert(token.clone(), bytes.to_vec());
        Download {
            url: format!("{}/models/{token}", self.base_url),
            authorization: Some(format!("Bearer {token}")),
            expires_at: unix_now() + 600,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }

    /// An offer of `model`, with its real size and SHA-256 (what the provider checks the
    /// job's input against).
    pub fn offer_for(&self, account: Option<&AccountId>, model: &[u8]) -> JobOffer {
        let mut offer = self.offer(account, model.len() as u64);
        offer.model.sha256 = sha256_hex(model);
        offer
    }

    /// An offer of a model of `size` bytes that is never fetched (its digest is a
    /// placeholder: an input sent for it is refused as `input-mismatch`).
    pub fn offer(&self, account: Option<&AccountId>, size: u64) -> JobOffer {
        let provider = self.provider_id();
        JobOffer {
            job_id: JobId::generate(),
            broker_id: BROKER_ID.into(),
            provider_id: provider.clone(),
            service_kind: "model-repair".into(),
            operation: "repair".into(),
            user: OfferUser {
                broker_user_id: UserId::generate(),
                provider_account: account.cloned(),
            },
            model: OfferedModel {
                model_id: ModelId::generate(),
                version: 1,
                name: "part.stl".into(),
                size,
                sha256: "00".repeat(32),
                format: "stl".into(),
            },
            params: Value::Null,
            events_url: format!("{}/v1/providers/{provider}/events", self.base_url),
            offered_at: unix_now(),
        }
    }

    /// Events accepted for a broker job, in arrival order.
    pub fn events_for(&self, job: &JobId) -> Vec<JobEvent> {
        self.state
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| &e.job_id == job)
            .cloned()
            .collect()
    }

    pub fn terminal_events(&self) -> Vec<JobEvent> {
        self.state
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind.state().is_terminal())
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Provider under test
// ---------------------------------------------------------------------------------------------

/// Settings with short intervals for tests.
pub fn test_config(db: &TestDb, data_dir: &std::path::Path) -> Config {
    Config {
        database_url: Some(db.url.clone()),
        data_dir: data_dir.to_owned(),
        workers: 0,
        outbox_workers: 0,
        poll_interval: Duration::from_millis(20),
        job_lease: Duration::from_secs(5),
        outbox_lease: Duration::from_secs(5),
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
        keyring_refresh: Duration::from_millis(100),
        // Tests sweep explicitly, with the clock they choose; a background sweep would race them.
        sweep_every: Duration::from_secs(24 * 3600),
        http_timeout: Duration::from_secs(10),
        dev_top_up: true,
        // Every peer of these tests is on loopback.
        allow_private_inputs: true,
        ..Config::default()
    }
}

pub async fn start_provider(config: Config) -> ServiceHandle {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    service::App::build(listener, config)
        .await
        .expect("provider starts")
        .spawn()
}

/// Registers the provider at the fake broker through the library entry point.
pub async fn register(provider: &ServiceHandle, broker: &FakeBroker) -> ProviderRegistered {
    let svc = provider.service();
    let reg = service::register(
        svc.db(),
        svc.http(),
        &service::RegisterOptions {
            broker_url: broker.base_url.clone(),
            api_key: "usr_key".into(),
            group_id: None,
            name: "FixMyPrint test".into(),
            public_url: provider.base_url().to_owned(),
            secret_scope: SecretScope::Service,
            description: None,
            signature_scheme: broker.scheme(),
        },
    )
    .await
    .expect("register");
    svc.reload_keyring().await.expect("reload keyring");
    reg
}

/// The start of most fault and shutdown tests: a FixMyPrint instance on `config`,
/// registered with `broker`, and a provider account `name` at it funded with `amount`.
pub async fn funded_provider(
    config: Config,
    broker: &FakeBroker,
    name: &str,
    amount: i64,
) -> (ServiceHandle, AccountCreated) {
    let provider = start_provider(config).await;
    register(&provider, broker).await;
    let account = create_account(&provider, name).await;
    top_up(&provider, &account.api_key, amount).await;
    (provider, account)
}

/// An HTTP client for talking to the provider as a user or the broker.
pub fn client() -> reqwest::Client {
    diax_sdk::client::http_client(&ClientConfig::default()).unwrap()
}

/// Sends a signed broker message to the provider's job URL under `id`.
pub async fn send_signed(
    provider: &ServiceHandle,
    broker: &FakeBroker,
    id: &MessageId,
    message: &BrokerMessage,
) -> (u16, HeaderMap, Value) {
    let body = serde_json::to_vec(message).unwrap();
    send_raw_signed(provider, broker, id, body).await
}

pub async fn send_raw_signed(
    provider: &ServiceHandle,
    broker: &FakeBroker,
    id: &MessageId,
    body: Vec<u8>,
) -> (u16, HeaderMap, Value) {
    let sender = SignedSender::new(client());
    let resp = sender
        .send_once(
            &format!("{}/diax/jobs", provider.base_url()),
            id,
            body,
            &broker.keyring(),
        )
        .await
        .expect("send");
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, resp.headers, json)
}

pub async fn create_account(provider: &ServiceHandle, name: &str) -> AccountCreated {
    let resp = client()
        .post(format!("{}/v1/accounts", provider.base_url()))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

pub async fn top_up(provider: &ServiceHandle, api_key: &str, amount: i64) -> Value {
    let resp = client()
        .post(format!("{}/v1/accounts/me/top-up", provider.base_url()))
        .bearer_auth(api_key)
        .json(&serde_json::json!({ "amount": amount }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

pub async fn get_json(url: &str, api_key: Option<&str>) -> (u16, Value) {
    let mut req = client().get(url);
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delivers every due outbox message (driving the outbox without its loop).
pub async fn drain_outbox(provider: &ServiceHandle) {
    loop {
        match service::try_deliver_outbox(provider.service(), "test-outbox")
            .await
            .unwrap()
        {
            service::DeliveryOutcome::Empty => return,
            _ => continue,
        }
    }
}

/// An accepted job: account with balance, offer accepted, input delivered.
pub struct AcceptedJob {
    pub offer: JobOffer,
    pub provider_job_id: diax_sdk::ProviderJobId,
    pub account: AccountCreated,
}

/// Offers `model` for `account` and sends it as the job's input, hosted by the fake broker.
pub async fn accept_job(
    provider: &ServiceHandle,
    broker: &FakeBroker,
    account: &AccountCreated,
    model: &[u8],
) -> AcceptedJob {
    accept_job_with_input(provider, broker, account, model, broker.host_model(model)).await
}

/// Offers `model` for `account` and sends `download` as the job's input.
pub async fn accept_job_with_input(
    provider: &ServiceHandle,
    broker: &FakeBroker,
    account: &AccountCreated,
    model: &[u8],
    download: Download,
) -> AcceptedJob {
    let offer = broker.offer_for(Some(&account.account_id), model);
    let (status, _, body) = send_signed(
        provider,
        broker,
        &MessageId::generate(),
        &BrokerMessage::Offer(offer.clone()),
    )
    .await;
    assert_eq!(status, 202, "offer accepted: {body}");
    let accepted: diax_sdk::wire::JobAccepted = serde_json::from_value(body).unwrap();
    assert_eq!(accepted.state, JobState::Accepted);
    let input = diax_sdk::wire::JobInput {
        job_id: offer.job_id.clone(),
        provider_job_id: accepted.provider_job_id.clone(),
        download,
    };
    let (status, _, body) = send_signed(
        provider,
        broker,
        &MessageId::generate(),
        &BrokerMessage::Input(input),
    )
    .await;
    assert_eq!(status, 202, "input accepted: {body}");
    AcceptedJob {
        offer,
        provider_job_id: accepted.provider_job_id,
        account: account.clone(),
    }
}

/// [`accept_job_with_input`], returning the broker's and the provider's job ids.
pub async fn offer_with_input(
    provider: &ServiceHandle,
    broker: &FakeBroker,
    account: &AccountCreated,
    model: &[u8],
    download: Download,
) -> (JobId, String) {
    let job = accept_job_with_input(provider, broker, account, model, download).await;
    (job.offer.job_id, job.provider_job_id.to_string())
}
