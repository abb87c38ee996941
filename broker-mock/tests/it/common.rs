//! Shared test helpers: a broker on port 0, a fake provider, signed events.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::axum::Router;
use ::axum::extract::{Path, State};
use ::axum::http::{HeaderMap, StatusCode};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{get, post};
use broker_mock::{BrokerApi, ClientError, Config, UserClient};
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::*;
use diax_sdk::*;
use futures_util::StreamExt as _;

pub fn stl() -> Vec<u8> {
    b"solid cube\n facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n   vertex 0 1 0\n  endloop\n endfacet\nendsolid cube\n".to_vec()
}

pub fn test_config() -> Config {
    Config {
        notify_interval_ms: 20,
        notify_backoff_ms: 30,
        notify_max_backoff_ms: 200,
        input_interval_ms: 20,
        input_backoff_ms: 30,
        input_max_backoff_ms: 200,
        retry_backoff_ms: 20,
        http_timeout: 5,
        // The fake providers run on loopback.
        allow_private_addresses: true,
        ..Config::default()
    }
}

/// The SDK's client (no redirects; idle connections forgotten before the server closes
/// them, so no request goes into a connection the server is closing).
pub fn http() -> reqwest::Client {
    diax_sdk::client::http_client(&diax_sdk::client::ClientConfig::default()).unwrap()
}

pub async fn start(config: Config) -> (broker_mock::Broker, BrokerApi) {
    let broker = broker_mock::Broker::start(config).await.unwrap();
    let api = BrokerApi::new(http(), broker.base_url());
    (broker, api)
}

pub async fn new_user(api: &BrokerApi, name: &str) -> (UserCreated, UserClient) {
    let created = api
        .create_user(&CreateUser {
            name: name.into(),
            notification_url: None,
        })
        .await
        .unwrap();
    let client = api.user(created.api_key.clone());
    (created, client)
}

/// How the fake provider answers offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 401 account-required unless the offer names a known account; then 202.
    Normal,
    /// 402 payment-required for known accounts.
    Broke,
    /// 500 without a problem.
    Broken,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub ring: Mutex<Option<Keyring>>,
    pub mode: Mutex<Option<Mode>>,
    pub accounts: Mutex<HashSet<String>>,
    pub offers: Mutex<Vec<JobOffer>>,
    pub offer_signatures: Mutex<Vec<String>>,
    pub inputs: Mutex<Vec<(JobInput, Result<Vec<u8>, String>)>>,
    pub result: Mutex<Option<Vec<u8>>>,
    /// Serve only this many bytes of the result, then break the connection off when told.
    pub result_cut: Mutex<Option<(usize, Arc<tokio::sync::Notify>)>>,
    /// Every GET of the result (authorised or not).
    pub result_gets: Mutex<u32>,
    pub picture: Mutex<Option<Vec<u8>>>,
    pub notify_failures_left: Mutex<u32>,
    pub input_failures_left: Mutex<u32>,
    /// What a refused input is answered with (default `503 service-unavailable`).
    pub input_refusal: Mutex<Option<Problem>>,
    pub input_ids: Mutex<Vec<String>>,
    /// Every `job.input` received, refused or not, with its `webhook-id`.
    pub input_messages: Mutex<Vec<(String, JobInput)>>,
    pub notifications: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

#[derive(Debug, Clone)]
pub struct Fake {
    pub base_url: String,
    pub state: Arc<FakeState>,
    pub http: reqwest::Client,
}

pub const RESULT_TOKEN: &str = "rt_result_secret";

impl Fake {
    pub fn job_url(&self) -> String {
        format!("{}/jobs", self.base_url)
    }
    pub fn set_ring(&self, ring: Keyring) {
        *self.state.ring.lock().unwrap() = Some(ring);
    }
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = Some(mode);
    }
    pub fn add_account(&self, acc: &str) {
        self.state.accounts.lock().unwrap().insert(acc.to_owned());
    }
    pub fn last_input(&self) -> (JobInput, Result<Vec<u8>, String>) {
        self.state
            .inputs
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("an input")
    }
    pub fn set_result(&self, bytes: Vec<u8>) {
        *self.state.result.lock().unwrap() = Some(bytes);
    }
    pub fn set_picture(&self, bytes: Vec<u8>) {
        *self.state.picture.lock().unwrap() = Some(bytes);
    }
    /// From now on serves the result's first `after` bytes, then holds the connection until
    /// the returned `Notify` is notified, then breaks it off.
    pub fn cut_result_after(&self, after: usize) -> Arc<tokio::sync::Notify> {
        let gate = Arc::new(tokio::sync::Notify::new());
        *self.state.result_cut.lock().unwrap() = Some((after, gate.clone()));
        gate
    }
    /// From now on serves the whole result.
    pub fn serve_whole_result(&self) {
        *self.state.result_cut.lock().unwrap() = None;
    }
    pub fn result_gets(&self) -> u32 {
        *self.state.result_gets.lock().unwrap()
    }
    pub fn picture_download(&self, bytes: &[u8], expires_at: i64) -> Download {
        Download {
            url: format!("{}/pictures/r1", self.base_url),
            authorization: Some(format!("Bearer {RESULT_TOKEN}")),
            expires_at,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
    pub fn result_download(&self, bytes: &[u8], expires_at: i64) -> Download {
        Download {
            url: format!("{}/results/r1", self.base_url),
            authorization: Some(format!("Bearer {RESULT_TOKEN}")),
            expires_at,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap();
    (
        status,
        [("content-type", PROBLEM_CONTENT_TYPE)],
        p.to_json(),
    )
        .into_response()
}

async fn jobs(State(fake): State<Fake>, headers: HeaderMap, body: ::axum::body::Bytes) -> Response {
    let get = |n: &'static str| headers.get(n).map(|v| v.as_bytes());
    let raw = RawHeaders::from_fn(get);
    let Some(ring) = fake.state.ring.lock().unwrap().clone() else {
        return problem(Problem::new(ProblemType::ServiceUnavailable));
    };
    if let Err(e) = ring.verify_at(&raw, &body, unix_now(), 300) {
        return problem(Problem::from(&e));
    }
    if let Some(sig) = headers.get("webhook-signature") {
        fake.state
            .offer_signatures
            .lock()
            .unwrap()
            .push(sig.to_str().unwrap().to_owned());
    }
    let msg: BrokerMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return problem(Problem::new(ProblemType::InvalidRequest).with_detail(e.to_string()));
        }
    };
    match msg {
        BrokerMessage::Offer(offer) => {
            fake.state.offers.lock().unwrap().push(offer.clone());
            let mode = fake.state.mode.lock().unwrap().unwrap_or(Mode::Normal);
            if mode == Mode::Broken {
                return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
            }
            let known = offer
                .user
                .provider_account
                .as_ref()
                .is_some_and(|a| fake.state.accounts.lock().unwrap().contains(a.as_str()));
            if !known {
                return problem(
                    Problem::account_required(format!("{}/signup", fake.base_url))
                        .with("vendor_hint", "fake-provider"),
                );
            }
            if mode == Mode::Broke {
                return problem(Problem::payment_required(
                    format!("{}/top-up", fake.base_url),
                    Quote::new(250, "EUR"),
                ));
            }
            let pjob = format!("pjob_{}", &offer.job_id.as_str()[4..]);
            let status_url = format!("{}/status/{pjob}", fake.base_url);
            (
                StatusCode::ACCEPTED,
                [("location", status_url.clone())],
                ::axum::Json(JobAccepted {
                    job_id: offer.job_id.clone(),
                    provider_job_id: ProviderJobId::parse(pjob).unwrap(),
                    status_url,
                    quote: Some(Quote::new(250, "EUR")),
                    state: JobState::Accepted,
                }),
            )
                .into_response()
        }
        BrokerMessage::Input(input) => {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            fake.state.input_ids.lock().unwrap().push(id.clone());
            fake.state
                .input_messages
                .lock()
                .unwrap()
                .push((id, input.clone()));
            {
                let mut left = fake.state.input_failures_left.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    let refusal = fake.state.input_refusal.lock().unwrap().clone();
                    return problem(
                        refusal.unwrap_or_else(|| Problem::new(ProblemType::ServiceUnavailable)),
                    );
                }
            }
            let mut req = fake.http.get(&input.download.url);
            if let Some(a) = &input.download.authorization {
                req = req.header("authorization", a);
            }
            let got = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let b = r.bytes().await.unwrap().to_vec();
                    if b.len() as u64 == input.download.size
                        && sha256_hex(&b) == input.download.sha256
                    {
                        Ok(b)
                    } else {
                        Err("size or digest mismatch".to_owned())
                    }
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            fake.state.inputs.lock().unwrap().push((input.clone(), got));
            (
                StatusCode::ACCEPTED,
                ::axum::Json(InputAccepted {
                    job_id: input.job_id,
                    provider_job_id: input.provider_job_id,
                    state: JobState::Accepted,
                }),
            )
                .into_response()
        }
    }
}

async fn result(State(fake): State<Fake>, headers: HeaderMap, Path(_id): Path<String>) -> Response {
    *fake.state.result_gets.lock().unwrap() += 1;
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {RESULT_TOKEN}")) {
        return problem(Problem::new(ProblemType::CredentialInvalid));
    }
    let cut = fake.state.result_cut.lock().unwrap().clone();
    match (fake.state.result.lock().unwrap().clone(), cut) {
        (Some(b), None) => (StatusCode::OK, b).into_response(),
        (Some(b), Some((after, gate))) => {
            // The declared length, some of the bytes in 1 MiB chunks, then (once the gate
            // opens) an error: the server drops the connection mid-body.
            let len = b.len();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = b[..after.min(len)]
                .chunks(1 << 20)
                .map(|c| Ok(c.to_vec()))
                .collect();
            let cut = futures_util::stream::once(async move {
                gate.notified().await;
                Err(std::io::Error::other("cut"))
            });
            (
                StatusCode::OK,
                [("content-length", len.to_string())],
                ::axum::body::Body::from_stream(futures_util::stream::iter(chunks).chain(cut)),
            )
                .into_response()
        }
        (None, _) => problem(Problem::new(ProblemType::NotFound)),
    }
}

async fn picture(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path(_id): Path<String>,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {RESULT_TOKEN}")) {
        return problem(Problem::new(ProblemType::CredentialInvalid));
    }
    match fake.state.picture.lock().unwrap().clone() {
        Some(b) => (StatusCode::OK, b).into_response(),
        None => problem(Problem::new(ProblemType::NotFound)),
    }
}

async fn notify(
    State(fake): State<Fake>,
    headers: HeaderMap,
    body: ::axum::body::Bytes,
) -> StatusCode {
    {
        let mut left = fake.state.notify_failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    fake.state
        .notifications
        .lock()
        .unwrap()
        .push((headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

pub fn fake_router(fake: Fake) -> Router {
    Router::new()
        .route("/jobs", post(jobs))
        .route("/results/{id}", get(result))
        .route("/pictures/{id}", get(picture))
        .route("/notify", post(notify))
        .with_state(fake)
}

/// Starts the fake provider over plain HTTP on port 0.
pub async fn fake_provider() -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Fake {
        base_url: format!("http://{addr}"),
        state: Arc::new(FakeState::default()),
        http: http(),
    };
    let app = fake_router(fake.clone());
    tokio::spawn(async move {
        let _ = ::axum::serve(listener, app).await;
    });
    fake
}

pub fn register_req(group: &GroupId, job_url: &str, scope: SecretScope) -> RegisterProvider {
    RegisterProvider {
        group_id: group.clone(),
        name: "FixMyPrint".into(),
        service_kind: SERVICE_KIND_MODEL_REPAIR.into(),
        job_url: job_url.into(),
        signup_url: "https://fixmyprint.example/signup".into(),
        pricing: Pricing::Paid,
        description: Some("heals models".into()),
        secret_scope: scope,
        signature_scheme: Scheme::V1,
        public_key: None,
    }
}

/// A provider registered by a fresh owner, with the fake's keyring set.
pub struct Setup {
    pub owner: UserClient,
    pub reg: ProviderRegistered,
    pub ring: Keyring,
}

pub async fn register(api: &BrokerApi, fake: &Fake, scope: SecretScope) -> Setup {
    let (_, owner) = new_user(api, "FixMyPrint owner").await;
    let group = owner.create_group("fixmyprint").await.unwrap();
    let reg = owner
        .register_provider(&register_req(&group.group_id, &fake.job_url(), scope))
        .await
        .unwrap();
    let ring = Keyring::single(
        reg.key_id.clone(),
        Secret::parse(reg.secret.as_deref().unwrap()).unwrap(),
    );
    fake.set_ring(ring.clone());
    Setup { owner, reg, ring }
}

/// A provider registered with ed25519: its ring holds its own secret key (which signs its
/// events and link tokens) and the broker's public key (which verifies offers).
pub async fn register_ed25519(api: &BrokerApi, fake: &Fake, scope: SecretScope) -> Setup {
    let (_, owner) = new_user(api, "FixMyPrint owner").await;
    let group = owner.create_group("fixmyprint").await.unwrap();
    let own = SigningKey::generate();
    let mut req = register_req(&group.group_id, &fake.job_url(), scope);
    req.signature_scheme = Scheme::V1a;
    req.public_key = Some(own.public_key().to_string());
    let reg = owner.register_provider(&req).await.unwrap();
    let mut ring = Keyring::single(reg.key_id.clone(), own);
    ring.insert(
        reg.broker_key_id.clone().unwrap(),
        PublicKey::parse(reg.broker_public_key.as_deref().unwrap()).unwrap(),
        None,
    );
    fake.set_ring(ring.clone());
    Setup { owner, reg, ring }
}

/// A link token signed with the newest signing key of a setup's ring (either scheme).
pub fn link_token_from(s: &Setup, account: &str, now: i64) -> String {
    let key = s.ring.primary(now).unwrap();
    LinkTokenIssuer::new(
        s.reg.provider_id.clone(),
        s.reg.broker_id.clone(),
        key.id.clone(),
        key.material.clone(),
    )
    .issue_at(&AccountId::parse(account).unwrap(), now)
    .unwrap()
    .token
}

pub fn link_token(reg: &ProviderRegistered, account: &str, now: i64) -> String {
    LinkTokenIssuer::new(
        reg.provider_id.clone(),
        reg.broker_id.clone(),
        reg.key_id.clone(),
        Secret::parse(reg.secret.as_deref().unwrap()).unwrap(),
    )
    .issue_at(&AccountId::parse(account).unwrap(), now)
    .unwrap()
    .token
}

/// POSTs a signed event; returns status and JSON body.
pub async fn post_event_raw(
    http: &reqwest::Client,
    reg: &ProviderRegistered,
    ring: &Keyring,
    msg_id: &str,
    ts: i64,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let signed = ring
        .sign(&MessageId::parse(msg_id).unwrap(), ts, body)
        .unwrap();
    let mut req = http
        .post(&reg.events_url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in signed.pairs() {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

pub fn event(job: &Job, reg: &ProviderRegistered, seq: u64, kind: JobEventKind) -> JobEvent {
    JobEvent {
        job_id: job.job_id.clone(),
        provider_job_id: job.provider_job_id.clone().expect("accepted job"),
        provider_id: reg.provider_id.clone(),
        sequence: seq,
        occurred_at: unix_now(),
        kind,
    }
}

/// Event `seq` of `job`: `job.completed` with the result at `download` (STL, no report,
/// charge or picture).
pub fn completed(job: &Job, reg: &ProviderRegistered, seq: u64, download: Download) -> JobEvent {
    event(
        job,
        reg,
        seq,
        JobEventKind::Completed {
            result: JobResult {
                download,
                format: "stl".into(),
                report: None,
                charged: None,
                picture: None,
            },
        },
    )
}

/// Signs `event` with the provider's ring as message `msg_id`, now, and posts it; returns
/// status and JSON body.
pub async fn post_event(s: &Setup, msg_id: &str, event: &JobEvent) -> (u16, serde_json::Value) {
    post_event_raw(
        &http(),
        &s.reg,
        &s.ring,
        msg_id,
        unix_now(),
        &serde_json::to_vec(event).unwrap(),
    )
    .await
}

pub async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn problem_type(v: &serde_json::Value) -> &str {
    v["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or("")
}

/// A job for a linked user ("gareth") of the fake provider: creates the user, uploads a
/// model, links the account and asks for the job. Returns the user's API key, the user, the
/// model and the job as the broker answered (its input may still be pending).
pub async fn linked_job(
    api: &BrokerApi,
    fake: &Fake,
    s: &Setup,
    broker: &broker_mock::Broker,
) -> (String, UserClient, Model, Job) {
    linked_job_at(api, fake, s, broker.clock().now()).await
}

/// [`linked_job`] with a link token issued at `now` (the broker's clock; a broker in
/// another process runs on the system clock).
pub async fn linked_job_at(
    api: &BrokerApi,
    fake: &Fake,
    s: &Setup,
    now: i64,
) -> (String, UserClient, Model, Job) {
    let (created, user) = new_user(api, "gareth").await;
    let model = user.upload_model("cube.stl", stl()).await.unwrap();
    fake.add_account("acc_gareth");
    user.link(&s.reg.provider_id, &link_token_from(s, "acc_gareth", now))
        .await
        .unwrap();
    let job = user
        .create_job(&CreateJob {
            provider_id: s.reg.provider_id.clone(),
            model_id: model.model_id.clone(),
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .unwrap();
    (created.api_key, user, model, job)
}

/// The problem type slug of a client error.
pub fn kind(e: &ClientError) -> String {
    e.problem()
        .and_then(|p| p.kind())
        .map(|k| k.slug().to_owned())
        .unwrap_or_else(|| format!("not a problem: {e}"))
}

/// Sends a raw request; returns status, content type and JSON body.
pub async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, serde_json::Value) {
    let mut req = http.request(method, url).body(body);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    if let Some(c) = ct {
        req = req.header("content-type", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, ct, json)
}

/// Creates a job for a linked user of a fake provider that accepts; returns the job.
pub async fn accepted_job(
    api: &BrokerApi,
    fake: &Fake,
    s: &Setup,
    broker: &broker_mock::Broker,
) -> (UserClient, Model, Job) {
    let (_, user, model, job) = linked_job(api, fake, s, broker).await;
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    (user, model, job)
}

/// An upload of `len` bytes whose head (with `Expect: 100-continue`) has been sent and
/// whose `100 Continue` has come back: the broker is reading its body, so it holds its
/// share of the model budget. Send the body with [`HeldUpload::finish`].
pub struct HeldUpload(tokio::net::TcpStream, usize);

impl HeldUpload {
    pub async fn start(addr: std::net::SocketAddr, api_key: &str, len: usize) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /v1/models?name=held.stl HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {api_key}\r\n\
                     content-type: model/stl\r\ncontent-length: {len}\r\nexpect: 100-continue\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).await.unwrap(),
                1,
                "connection closed"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 100"), "{head}");
        Self(stream, len)
    }

    /// Sends the body; returns the status line of the answer.
    pub async fn finish(mut self) -> String {
        use tokio::io::AsyncWriteExt as _;
        self.0.write_all(&vec![b's'; self.1]).await.unwrap();
        self.answer().await
    }

    /// Waits for the answer; returns its status line.
    pub async fn answer(&mut self) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut answer = Vec::new();
        let mut buf = [0_u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = self.0.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        answer.lines().next().unwrap_or_default().to_owned()
    }
}
