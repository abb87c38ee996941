//! The conformance runner against providers written here: a correct minimal one (every
//! check passes) and the same provider with one realistic bug at a time (exactly the checks
//! meant for that bug fail).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    clippy::result_large_err,
    clippy::too_many_lines,
    missing_docs
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use broker_mock::conformance::{Check, ConformanceConfig, Report, TlsIdentity, Verdict, run};
use diax_sdk::axum_ext::{Signed, raw_headers};
use diax_sdk::client::{
    self, ClientConfig, DownloadLimits, RetryPolicy, SignedSender, download_to_vec, retry_after,
};
use diax_sdk::clock::unix_now;
use diax_sdk::util::{random_token, sha256_hex};
use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::{
    BrokerMessage, Download, InputAccepted, JobAccepted, JobEvent, JobEventKind, JobInput,
    JobOffer, JobResult, JobState, Scheme,
};
use diax_sdk::{
    Delivery, KeyId, Keyring, MessageId, PROBLEM_CONTENT_TYPE, Problem, ProblemType, ProviderId,
    ProviderJobId, Quote, Secret, SigningKey, Verifier, VerifyError,
};

const QUOTE: i64 = 60;
const FUNDED: &str = "acc_funded";
const POOR: &str = "acc_poor";
const PROVIDER_ID: &str = "prv_testprovider";

/// How the test provider misbehaves: one realistic bug at a time (`None` is a correct
/// provider). Each test names the checks that bug must fail, and only those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Bug {
    /// A correct provider.
    #[default]
    None,
    /// Parses signed messages without checking signature or timestamp (or replays).
    SkipSignatures,
    /// Checks signature and timestamp, but remembers no message ids.
    NoReplayProtection,
    /// Remembers message ids for one second only.
    ShortReplayMemory,
    /// Checks only the first entry of `webhook-signature`.
    OnlyFirstSignatureEntry,
    /// Answers a malformed `webhook-signature` with a bare `500`.
    MalformedSignatureIs500,
    /// Answers a correctly signed body that is not JSON with a bare `500`.
    NotJsonIs500,
    /// Verifies the signature over the message re-serialised, not over the raw bytes.
    VerifiesReserialisedJson,
    /// Puts the shared secret in the detail of its signature problems.
    EchoesSecret,
    /// With ed25519: checks the headers and the timestamp, but takes any well-formed `v1a`
    /// entry as valid, whoever signed it.
    AnyV1aEntry,
    /// Accepts offers addressed to any provider id.
    IgnoresProviderId,
    /// Accepts any operation.
    AcceptsAnyOperation,
    /// Deduplicates a repeated offer only while the job waits for its input.
    DedupOffersOnlyBeforeInput,
    /// Accepts inputs but never downloads nor calls back.
    NeverCallBack,
    /// Takes every `job.input` for a new job: runs (downloads, completes) again (also while
    /// the first run works).
    RerunOnNewInput,
    /// Answers a job's second `job.input` `404` (forgets jobs once they have their input).
    RefuseRepeatedInput,
    /// Answers a job's second `job.input` `409 invalid-transition` (allowed: the input is no
    /// longer needed).
    ConflictOnRepeatedInput,
    /// Downloads without checking the declared size and SHA-256.
    NoSizeOrDigestCheck,
    /// Follows redirects on the download.
    FollowsRedirects,
    /// Sends `Authorization: Bearer none` when the input has no credential (a presigned URL).
    BearerWithoutCredential,
    /// Fetches the input's URL without its query (a presigned URL's credential).
    DropsQuery,
    /// Takes any bytes for a model.
    AcceptsAnyModel,
    /// One event sequence for all jobs.
    SharedSequence,
    /// Retries an event under a new webhook-id each attempt.
    NewIdOnRetry,
    /// Signs an event once and re-sends the same timestamp and signature on retries.
    SignsOnce,
    /// Retries at once, ignoring backoff and `Retry-After`.
    NoBackoff,
    /// Sends `occurred_at` in milliseconds.
    OccurredAtInMillis,
    /// Serves the result without checking its credential.
    ResultWithoutCredential,
    /// Charges the quote plus one cent on completion.
    ChargesMoreThanQuoted,
    /// Says it charged the quote on a failed job.
    ChargesOnFailure,
    /// Offers no picture of its work (allowed: the picture is optional).
    NoPicture,
    /// Offers the result's STL bytes as its picture (size and digest as served).
    PictureNotPng,
    /// Offers a PNG cut short (size and digest as served: only decoding tells).
    PictureCut,
    /// Declares a picture over the 16 MiB bound.
    PictureTooLarge,
    /// Puts the picture on another origin than the result (`localhost` for `127.0.0.1`).
    PictureOtherOrigin,
    /// Serves the picture without checking its credential.
    PictureWithoutCredential,
}

struct Job {
    provider_job_id: ProviderJobId,
    events_url: String,
    /// Whether an input arrived (and the job started).
    has_input: bool,
    state: JobState,
}

struct Inner {
    bug: Bug,
    base_url: String,
    secret_text: String,
    keyring: Keyring,
    verifier: Arc<Verifier>,
    sender: SignedSender,
    http: client::Client,
    balances: Mutex<HashMap<String, i64>>,
    jobs: Mutex<HashMap<String, Job>>,
    answers: Mutex<HashMap<String, (u16, Option<String>, Vec<u8>, Option<String>)>>,
    results: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Each result's picture, by provider job id: its credential (the result's) and bytes.
    pictures: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Message ids seen by the hand-written verifier, with their body digest and when.
    seen: Mutex<HashMap<String, (String, Instant)>>,
    /// The shared sequence of [`Bug::SharedSequence`].
    sequence: AtomicU64,
}

#[derive(Clone)]
struct App(Arc<Inner>);

impl FromRef<App> for Arc<Verifier> {
    fn from_ref(app: &App) -> Arc<Verifier> {
        Arc::clone(&app.0.verifier)
    }
}

struct Provider {
    job_url: String,
    /// What the runner signs with: the shared secret, or with ed25519 the broker's secret key.
    secret: String,
    /// With ed25519: the provider's public key.
    public_key: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn problem_response(p: &Problem) -> Response {
    (
        StatusCode::from_u16(p.status).unwrap(),
        [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)],
        p.to_json(),
    )
        .into_response()
}

async fn start_provider(bug: Bug) -> Provider {
    start_provider_trusting(bug, Vec::new()).await
}

/// A provider whose HTTP client also trusts `roots` (PEM), for a runner serving HTTPS.
async fn start_provider_trusting(bug: Bug, roots: Vec<Vec<u8>>) -> Provider {
    start_provider_with(bug, roots, Scheme::V1).await
}

/// A provider signing and verifying with `scheme`: a shared secret, or its own ed25519 key
/// and the broker's public key (whose secret key the runner is given).
async fn start_provider_with(bug: Bug, roots: Vec<Vec<u8>>, scheme: Scheme) -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let (keyring, secret_text, public_key) = match scheme {
        Scheme::V1 => {
            let secret = Secret::generate();
            let text = secret.expose();
            (
                Keyring::single(KeyId::parse("key_test").unwrap(), secret),
                text,
                None,
            )
        }
        Scheme::V1a => {
            let own = SigningKey::generate();
            let broker = SigningKey::generate();
            let mut ring = Keyring::single(KeyId::parse("key_test").unwrap(), own.clone());
            ring.insert(
                KeyId::parse("key_broker").unwrap(),
                broker.public_key(),
                None,
            );
            (ring, broker.expose(), Some(own.public_key().to_string()))
        }
    };
    let http = client::http_client(&ClientConfig {
        timeout: Duration::from_secs(10),
        extra_root_certs_pem: roots,
        ..ClientConfig::default()
    })
    .unwrap();
    let balances = HashMap::from([(FUNDED.to_owned(), 10_000), (POOR.to_owned(), 10)]);
    let app = App(Arc::new(Inner {
        bug,
        base_url: base_url.clone(),
        secret_text: secret_text.clone(),
        verifier: Arc::new(Verifier::new(keyring.clone())),
        keyring,
        sender: SignedSender::new(http.clone()),
        http,
        balances: Mutex::new(balances),
        jobs: Mutex::default(),
        answers: Mutex::default(),
        results: Mutex::default(),
        pictures: Mutex::default(),
        seen: Mutex::default(),
        sequence: AtomicU64::new(0),
    }));
    let jobs_route = if bug == Bug::None || !hand_written_verifier(bug) {
        post(jobs_signed)
    } else {
        post(jobs_unchecked)
    };
    let router = Router::new()
        .route("/diax/jobs", jobs_route)
        .route("/results/{pjob}", get(result))
        .route("/results/{pjob}/picture", get(picture))
        .with_state(app);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Provider {
        job_url: format!("{base_url}/diax/jobs"),
        secret: secret_text,
        public_key,
        stop: Some(tx),
    }
}

/// The bugs that live in the signature layer, where the SDK's extractor is replaced by a
/// hand-written verifier.
fn hand_written_verifier(bug: Bug) -> bool {
    matches!(
        bug,
        Bug::SkipSignatures
            | Bug::NoReplayProtection
            | Bug::ShortReplayMemory
            | Bug::OnlyFirstSignatureEntry
            | Bug::MalformedSignatureIs500
            | Bug::NotJsonIs500
            | Bug::VerifiesReserialisedJson
            | Bug::EchoesSecret
            | Bug::AnyV1aEntry
    )
}

/// The correct path: the SDK's extractor verifies signature, tolerance and replays.
async fn jobs_signed(
    State(app): State<App>,
    signed: Result<Signed<BrokerMessage>, Problem>,
) -> Response {
    match signed {
        Ok(s) => handle(&app, s.verified.id.as_str(), s.delivery, s.message).await,
        Err(p) => problem_response(&p),
    }
}

fn bare_500() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// The broken paths: a hand-written verifier with the bug under test.
async fn jobs_unchecked(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let inner = &app.0;
    let bug = inner.bug;
    if bug == Bug::MalformedSignatureIs500 {
        let well_formed = headers
            .get("webhook-signature")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(' ').all(|entry| {
                    entry.split_once(',').is_some_and(|(version, sig)| {
                        version.starts_with('v')
                            && !sig.is_empty()
                            && sig
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
                    })
                })
            });
        if headers.contains_key("webhook-signature") && !well_formed {
            return bare_500();
        }
    }
    let reserialised;
    let signed_bytes: &[u8] = if bug == Bug::VerifiesReserialisedJson {
        match serde_json::from_slice::<BrokerMessage>(&body) {
            Ok(m) => {
                reserialised = serde_json::to_vec(&m).unwrap();
                &reserialised
            }
            Err(e) => {
                return problem_response(
                    &Problem::new(ProblemType::InvalidRequest).with_detail(e.to_string()),
                );
            }
        }
    } else {
        &body
    };
    let first_entry = headers.get("webhook-signature").map(|v| {
        v.as_bytes()
            .split(|b| *b == b' ')
            .next()
            .unwrap_or(b"")
            .to_vec()
    });
    let raw = if bug == Bug::OnlyFirstSignatureEntry {
        RawHeaders {
            signature: first_entry.as_deref(),
            ..raw_headers(&headers)
        }
    } else {
        raw_headers(&headers)
    };
    let any_v1a = bug == Bug::AnyV1aEntry
        && headers
            .get("webhook-signature")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(' ').any(|e| {
                    e.strip_prefix("v1a,").is_some_and(|sig| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(sig)
                            .is_ok_and(|b| b.len() == 64)
                    })
                })
            });
    if bug != Bug::SkipSignatures
        && let Err(e) = inner.keyring.verify_at(&raw, signed_bytes, unix_now(), 300)
        // Headers and timestamp are checked; only the key behind a v1a entry is not.
        && !(any_v1a && e == VerifyError::SignatureMismatch)
    {
        let mut p = Problem::from(&e);
        if bug == Bug::EchoesSecret {
            p = p.with_detail(format!(
                "no signature matches the secret {}",
                inner.secret_text
            ));
        }
        return problem_response(&p);
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| MessageId::generate().to_string(), str::to_owned);
    let mut delivery = Delivery::First;
    if !matches!(bug, Bug::SkipSignatures | Bug::NoReplayProtection) {
        let digest = sha256_hex(&body);
        let memory = if bug == Bug::ShortReplayMemory {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(600)
        };
        let mut seen = inner.seen.lock().unwrap();
        match seen.get(&id) {
            Some((d, at)) if at.elapsed() < memory && *d != digest => {
                return problem_response(&Problem::new(ProblemType::ReplayedMessage));
            }
            Some((d, at)) if at.elapsed() < memory && *d == digest => {
                delivery = Delivery::Redelivery;
            }
            _ => {
                seen.insert(id.clone(), (digest, Instant::now()));
            }
        }
    }
    match serde_json::from_slice::<BrokerMessage>(&body) {
        Ok(msg) => handle(&app, &id, delivery, msg).await,
        Err(_)
            if bug == Bug::NotJsonIs500
                && serde_json::from_slice::<serde_json::Value>(&body).is_err() =>
        {
            bare_500()
        }
        Err(e) => {
            problem_response(&Problem::new(ProblemType::InvalidRequest).with_detail(e.to_string()))
        }
    }
}

async fn handle(app: &App, message_id: &str, delivery: Delivery, msg: BrokerMessage) -> Response {
    let inner = &app.0;
    if delivery == Delivery::Redelivery
        && let Some((status, ct, body, location)) =
            inner.answers.lock().unwrap().get(message_id).cloned()
    {
        let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if let Some(ct) = ct {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        if let Some(l) = location {
            resp.headers_mut()
                .insert(header::LOCATION, l.parse().unwrap());
        }
        return resp;
    }
    let answer: Result<(u16, Vec<u8>, Option<String>), Problem> = match msg {
        BrokerMessage::Offer(offer) => offer_answer(inner, &offer),
        BrokerMessage::Input(input) => input_answer(app, input),
    };
    let (status, ct, body, location) = match answer {
        Ok((status, body, location)) => (status, "application/json".to_owned(), body, location),
        Err(p) => (p.status, PROBLEM_CONTENT_TYPE.to_owned(), p.to_json(), None),
    };
    inner.answers.lock().unwrap().insert(
        message_id.to_owned(),
        (status, Some(ct.clone()), body.clone(), location.clone()),
    );
    let mut resp = (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, ct)],
        body,
    )
        .into_response();
    if let Some(l) = location {
        resp.headers_mut()
            .insert(header::LOCATION, l.parse().unwrap());
    }
    resp
}

fn offer_answer(
    inner: &Inner,
    offer: &JobOffer,
) -> Result<(u16, Vec<u8>, Option<String>), Problem> {
    if offer.provider_id.as_str() != PROVIDER_ID && inner.bug != Bug::IgnoresProviderId {
        return Err(Problem::new(ProblemType::Forbidden));
    }
    if offer.operation != "repair" && inner.bug != Bug::AcceptsAnyOperation {
        return Err(Problem::new(ProblemType::UnsupportedOperation));
    }
    let accepted = |pjob: &ProviderJobId| {
        let status_url = format!("{}/diax/jobs/{pjob}", inner.base_url);
        let body = serde_json::to_vec(&JobAccepted {
            job_id: offer.job_id.clone(),
            provider_job_id: pjob.clone(),
            status_url: status_url.clone(),
            quote: Some(Quote::new(QUOTE, "EUR")),
            state: JobState::Accepted,
        })
        .unwrap();
        (202, body, Some(status_url))
    };
    let mut jobs = inner.jobs.lock().unwrap();
    let mut second_job = false;
    if let Some(job) = jobs.get(offer.job_id.as_str()) {
        if !(job.has_input && inner.bug == Bug::DedupOffersOnlyBeforeInput) {
            return Ok(accepted(&job.provider_job_id));
        }
        second_job = true;
    }
    let register_url = format!("{}/v1/accounts", inner.base_url);
    let account = offer
        .user
        .provider_account
        .as_ref()
        .ok_or_else(|| Problem::account_required(&register_url))?;
    let mut balances = inner.balances.lock().unwrap();
    let balance = balances
        .get_mut(account.as_str())
        .ok_or_else(|| Problem::account_required(&register_url))?;
    if *balance < QUOTE {
        return Err(Problem::payment_required(
            format!("{}/v1/accounts/me/top-up", inner.base_url),
            Quote::new(QUOTE, "EUR"),
        )
        .with("balance", *balance));
    }
    *balance -= QUOTE;
    let pjob = ProviderJobId::generate();
    if second_job {
        // The bug: a second job (and a second hold) for an offer already taken.
        return Ok(accepted(&pjob));
    }
    jobs.insert(
        offer.job_id.to_string(),
        Job {
            provider_job_id: pjob.clone(),
            events_url: offer.events_url.clone(),
            has_input: false,
            state: JobState::Accepted,
        },
    );
    Ok(accepted(&pjob))
}

fn input_answer(app: &App, input: JobInput) -> Result<(u16, Vec<u8>, Option<String>), Problem> {
    let bug = app.0.bug;
    let (events_url, start, state) = {
        let mut jobs = app.0.jobs.lock().unwrap();
        let job = jobs
            .get_mut(input.job_id.as_str())
            .filter(|j| j.provider_job_id == input.provider_job_id)
            .ok_or_else(|| Problem::new(ProblemType::NotFound).with_detail("no such job"))?;
        if job.has_input && bug == Bug::RefuseRepeatedInput {
            return Err(Problem::new(ProblemType::NotFound).with_detail("no such job"));
        }
        if job.has_input && bug == Bug::ConflictOnRepeatedInput {
            return Err(Problem::new(ProblemType::InvalidTransition)
                .with_detail("this job has its input already"));
        }
        // Every input of a job is the same input: the job starts once.
        let start = !job.has_input || bug == Bug::RerunOnNewInput;
        job.has_input = true;
        (job.events_url.clone(), start, job.state)
    };
    let body = serde_json::to_vec(&InputAccepted {
        job_id: input.job_id.clone(),
        provider_job_id: input.provider_job_id.clone(),
        state,
    })
    .unwrap();
    if start && bug != Bug::NeverCallBack {
        tokio::spawn(work(app.clone(), input, events_url));
    }
    Ok((202, body, None))
}

/// Fetches the model: the SDK's checked download, or the bug's unchecked one.
async fn fetch(inner: &Inner, download: &Download) -> Result<Vec<u8>, String> {
    if matches!(inner.bug, Bug::BearerWithoutCredential | Bug::DropsQuery) {
        let mut url = reqwest::Url::parse(&download.url).map_err(|e| e.to_string())?;
        if inner.bug == Bug::DropsQuery {
            url.set_query(None);
        }
        let auth = match (&download.authorization, inner.bug) {
            (None, Bug::BearerWithoutCredential) => Some("Bearer none".to_owned()),
            (a, _) => a.clone(),
        };
        let download = Download {
            url: url.to_string(),
            authorization: auth,
            ..download.clone()
        };
        return download_to_vec(&inner.http, &download, &DownloadLimits::default())
            .await
            .map_err(|e| e.to_string());
    }
    if !matches!(inner.bug, Bug::NoSizeOrDigestCheck | Bug::FollowsRedirects) {
        return download_to_vec(&inner.http, download, &DownloadLimits::default())
            .await
            .map_err(|e| e.to_string());
    }
    let mut url = download.url.clone();
    for _ in 0..3 {
        let mut req = inner.http.get(&url);
        if let Some(auth) = &download.authorization {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if resp.status().is_redirection() && inner.bug == Bug::FollowsRedirects {
            url = resp.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned();
            continue;
        }
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
        if inner.bug == Bug::FollowsRedirects
            && (bytes.len() as u64 != download.size || sha256_hex(&bytes) != download.sha256)
        {
            return Err("size or digest mismatch".into());
        }
        return Ok(bytes);
    }
    Err("too many redirects".into())
}

/// A binary STL: 84 header bytes and 50 per facet.
fn is_binary_stl(bytes: &[u8]) -> bool {
    bytes.len() >= 84
        && u32::from_le_bytes(bytes[80..84].try_into().unwrap()) as usize * 50 + 84 == bytes.len()
}

/// Downloads, "heals" by echoing the model, hosts the result, and calls back.
async fn work(app: App, input: JobInput, events_url: String) {
    let inner = &app.0;
    let mut own_sequence = 0;
    let mut event = |kind| {
        let sequence = if inner.bug == Bug::SharedSequence {
            inner.sequence.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            own_sequence += 1;
            own_sequence
        };
        JobEvent {
            job_id: input.job_id.clone(),
            provider_job_id: input.provider_job_id.clone(),
            provider_id: ProviderId::parse(PROVIDER_ID).unwrap(),
            sequence,
            occurred_at: if inner.bug == Bug::OccurredAtInMillis {
                unix_now() * 1000
            } else {
                unix_now()
            },
            kind,
        }
    };
    let progress = event(JobEventKind::Progress {
        percent: 10,
        stage: Some("download".into()),
    });
    send_event(&app, &events_url, &progress).await;
    let fetched = fetch(inner, &input.download).await;
    let last = match fetched {
        Ok(bytes) if is_binary_stl(&bytes) || inner.bug == Bug::AcceptsAnyModel => {
            let token = random_token("rc_", 24);
            let download = Download {
                url: format!("{}/results/{}", inner.base_url, input.provider_job_id),
                authorization: Some(format!("Bearer {token}")),
                expires_at: unix_now() + 3600,
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            };
            let picture = draw_picture(inner, &input.provider_job_id, &token, &bytes, &download);
            inner
                .results
                .lock()
                .unwrap()
                .insert(input.provider_job_id.to_string(), (token, bytes));
            let charged = if inner.bug == Bug::ChargesMoreThanQuoted {
                QUOTE + 1
            } else {
                QUOTE
            };
            JobEventKind::Completed {
                result: JobResult {
                    download,
                    format: "stl".into(),
                    report: None,
                    charged: Some(Quote::new(charged, "EUR")),
                    picture,
                },
            }
        }
        Ok(_) => JobEventKind::Failed {
            problem: Problem::new(ProblemType::ModelInvalid).with_detail("not a binary STL"),
            charged: Some(Quote::new(failed_charge(inner.bug), "EUR")),
        },
        Err(e) => JobEventKind::Failed {
            problem: Problem::new(ProblemType::DownloadFailed).with_detail(e),
            charged: Some(Quote::new(failed_charge(inner.bug), "EUR")),
        },
    };
    if let Some(job) = inner.jobs.lock().unwrap().get_mut(input.job_id.as_str()) {
        job.state = last.state();
    }
    let last = event(last);
    send_event(&app, &events_url, &last).await;
}

/// A small PNG: a 24 × 16 gradient.
fn png_bytes() -> Vec<u8> {
    let (w, h) = (24u32, 16u32);
    let rgb: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % w * 10) as u8, (i / w * 15) as u8, 128])
        .collect();
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&rgb).unwrap();
    writer.finish().unwrap();
    out
}

/// Hosts the job's picture (the bug's, if it has one about pictures) behind the result's
/// credential and says where it is.
fn draw_picture(
    inner: &Inner,
    pjob: &ProviderJobId,
    token: &str,
    stl: &[u8],
    result: &Download,
) -> Option<Download> {
    let bytes = match inner.bug {
        Bug::NoPicture => return None,
        Bug::PictureNotPng => stl.to_vec(),
        Bug::PictureCut => {
            let png = png_bytes();
            png[..png.len() * 2 / 3].to_vec()
        }
        _ => png_bytes(),
    };
    let base = if inner.bug == Bug::PictureOtherOrigin {
        inner.base_url.replace("127.0.0.1", "localhost")
    } else {
        inner.base_url.clone()
    };
    let download = Download {
        url: format!("{base}/results/{pjob}/picture"),
        authorization: result.authorization.clone(),
        expires_at: result.expires_at,
        size: if inner.bug == Bug::PictureTooLarge {
            diax_sdk::wire::MAX_PICTURE_BYTES + 1
        } else {
            bytes.len() as u64
        },
        sha256: sha256_hex(&bytes),
    };
    inner
        .pictures
        .lock()
        .unwrap()
        .insert(pjob.to_string(), (token.to_owned(), bytes));
    Some(download)
}

fn failed_charge(bug: Bug) -> i64 {
    if bug == Bug::ChargesOnFailure {
        QUOTE
    } else {
        0
    }
}

async fn send_event(app: &App, url: &str, event: &JobEvent) {
    let inner = &app.0;
    let body = serde_json::to_vec(event).unwrap();
    let policy = RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(30),
        max_backoff: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    let id = MessageId::generate();
    if !matches!(
        inner.bug,
        Bug::NewIdOnRetry | Bug::SignsOnce | Bug::NoBackoff
    ) {
        let _ = inner
            .sender
            .send(url, &id, body, &inner.keyring, &policy)
            .await;
        return;
    }
    let signed_once = inner.keyring.sign(&id, unix_now(), &body).unwrap();
    for attempt in 1..policy.max_attempts {
        let answer = match inner.bug {
            Bug::SignsOnce => inner
                .http
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("webhook-id", id.as_str())
                .header("webhook-timestamp", signed_once.timestamp.to_string())
                .header("webhook-signature", &signed_once.signature)
                .body(body.clone())
                .send()
                .await
                .map(|r| (r.status().as_u16(), retry_after(r.headers())))
                .map_err(|_| ()),
            Bug::NewIdOnRetry => inner
                .sender
                .send_once(url, &MessageId::generate(), body.clone(), &inner.keyring)
                .await
                .map(|r| (r.status, retry_after(&r.headers)))
                .map_err(|_| ()),
            _ => inner
                .sender
                .send_once(url, &id, body.clone(), &inner.keyring)
                .await
                .map(|r| (r.status, retry_after(&r.headers)))
                .map_err(|_| ()),
        };
        let hint = match answer {
            Ok((status, _)) if !RetryPolicy::is_retryable_status(status) => return,
            Ok((_, hint)) => hint,
            Err(()) => None,
        };
        if inner.bug != Bug::NoBackoff {
            tokio::time::sleep(policy.delay(attempt, hint)).await;
        }
    }
}

async fn result(State(app): State<App>, Path(pjob): Path<String>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let results = app.0.results.lock().unwrap();
    if app.0.bug == Bug::ResultWithoutCredential
        && let Some((_, bytes)) = results.get(&pjob)
    {
        return (StatusCode::OK, bytes.clone()).into_response();
    }
    let found = results
        .iter()
        .find(|(_, (token, _))| auth == format!("Bearer {token}"));
    match found {
        None => problem_response(&Problem::new(ProblemType::CredentialInvalid)),
        Some((id, _)) if *id != pjob => {
            problem_response(&Problem::new(ProblemType::CredentialScope))
        }
        Some((_, (_, bytes))) => (StatusCode::OK, bytes.clone()).into_response(),
    }
}

async fn picture(State(app): State<App>, Path(pjob): Path<String>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pictures = app.0.pictures.lock().unwrap();
    match pictures.get(&pjob) {
        Some((token, bytes))
            if app.0.bug == Bug::PictureWithoutCredential || auth == format!("Bearer {token}") =>
        {
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "image/png")],
                bytes.clone(),
            )
                .into_response()
        }
        _ => problem_response(&Problem::new(ProblemType::CredentialInvalid)),
    }
}

fn config(p: &Provider) -> ConformanceConfig {
    let mut cfg = ConformanceConfig::new(&p.job_url, &p.secret);
    cfg.provider_public_key.clone_from(&p.public_key);
    cfg.provider_id = PROVIDER_ID.into();
    cfg.account = Some(FUNDED.into());
    cfg.poor_account = Some(POOR.into());
    cfg.timeout = Duration::from_secs(20);
    cfg
}

fn failed(report: &Report) -> BTreeSet<&'static str> {
    report.failed().iter().map(|c| c.name()).collect()
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

#[tokio::test]
async fn a_correct_provider_passes_every_check() {
    let provider = start_provider(Bug::None).await;
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    assert!(report.passed(), "{}", report.to_human());
    assert_eq!(report.results.len(), Check::ALL.len());
    assert!(report.skipped().is_empty(), "{}", report.to_human());
    assert!(
        report
            .results
            .iter()
            .all(|r| r.verdict == Verdict::Pass && !r.reason.is_empty())
    );
    let retry = report.get(Check::EventsRetrySameId).unwrap();
    assert!(retry.reason.contains("same webhook-id"), "{}", retry.reason);
    let picture = &report.get(Check::ResultPicture).unwrap().reason;
    assert!(
        picture.contains("a 24×16 PNG") && picture.contains("refused without its credential"),
        "{picture}"
    );
}

#[tokio::test]
async fn a_provider_offering_no_picture_passes_the_picture_check() {
    let provider = start_provider(Bug::NoPicture).await;
    let report = run(config(&provider)).await.unwrap();
    assert!(report.passed(), "{}", report.to_human());
    let r = report.get(Check::ResultPicture).unwrap();
    assert_eq!(r.verdict, Verdict::Pass);
    assert!(r.reason.contains("offers no picture"), "{}", r.reason);
}

/// Each bad picture fails `result.picture` alone, with a reason naming what is wrong: the
/// result, the events and the charges still pass (the broker keeps the result without the
/// picture), and the runner goes on to the end.
#[tokio::test]
async fn a_provider_offering_a_bad_picture_fails_the_picture_check_alone() {
    let cases = [
        (Bug::PictureNotPng, "not a PNG: its bytes do not start"),
        (Bug::PictureCut, "not a whole PNG"),
        (Bug::PictureTooLarge, "over the 16777216-byte bound"),
        (Bug::PictureOtherOrigin, "neither the result's origin"),
        (Bug::PictureWithoutCredential, "bytes without a credential"),
    ];
    let mut runs = tokio::task::JoinSet::new();
    for (i, (bug, _)) in cases.iter().copied().enumerate() {
        runs.spawn(async move {
            let provider = start_provider(bug).await;
            (i, run(config(&provider)).await.unwrap())
        });
    }
    let mut reports = runs.join_all().await;
    reports.sort_by_key(|(i, _)| *i);
    for ((bug, says), (_, report)) in cases.iter().zip(&reports) {
        assert_eq!(
            failed(report),
            set(&["result.picture"]),
            "{bug:?}:\n{}",
            report.to_human()
        );
        let r = reason(report, Check::ResultPicture);
        assert!(r.contains(says), "{bug:?}: {r}");
    }
}

#[tokio::test]
async fn a_correct_ed25519_provider_passes_every_check_with_v1a() {
    let provider = start_provider_with(Bug::None, Vec::new(), Scheme::V1a).await;
    assert!(provider.secret.starts_with("whsk_"));
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    assert!(report.passed(), "{}", report.to_human());
    assert_eq!(report.results.len(), Check::ALL.len());
    assert!(report.skipped().is_empty(), "{}", report.to_human());
}

#[tokio::test]
async fn an_ed25519_provider_taking_a_v1a_entry_from_any_key_fails_the_signature_checks() {
    let provider = start_provider_with(Bug::AnyV1aEntry, Vec::new(), Scheme::V1a).await;
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    assert_eq!(
        failed(&report),
        set(&["signature.tampered-body", "signature.wrong-secret"]),
        "{}",
        report.to_human()
    );
}

#[tokio::test]
async fn an_ed25519_run_needs_both_keys() {
    let provider = start_provider_with(Bug::None, Vec::new(), Scheme::V1a).await;
    let mut cfg = config(&provider);
    cfg.provider_public_key = None;
    assert!(run(cfg).await.is_err());
    let mut cfg = config(&provider);
    cfg.secret = provider.public_key.clone().unwrap();
    assert!(run(cfg).await.is_err());
}

#[tokio::test]
async fn a_provider_that_skips_signature_checks_fails_them() {
    let provider = start_provider(Bug::SkipSignatures).await;
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    assert_eq!(
        failed(&report),
        set(&[
            "signature.tampered-body",
            "signature.wrong-secret",
            "signature.missing-id",
            "signature.missing-timestamp",
            "signature.missing-signature",
            "replay.different-body",
            "timestamp.stale",
            "timestamp.future",
            // Malformed headers are acted on (a 404 for the unknown job), not refused.
            "signature.malformed-id",
            "signature.malformed-timestamp",
            "signature.malformed-signature",
            "replay.after-delay",
        ]),
        "{}",
        report.to_human()
    );
    let tampered = report.get(Check::SignatureTamperedBody).unwrap();
    assert!(
        tampered
            .reason
            .contains("expected 401 signature-invalid, got 202"),
        "{}",
        tampered.reason
    );
}

#[tokio::test]
async fn a_provider_without_replay_protection_fails_the_replay_check() {
    let provider = start_provider(Bug::NoReplayProtection).await;
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    assert_eq!(
        failed(&report),
        set(&["replay.different-body", "replay.after-delay"]),
        "{}",
        report.to_human()
    );
    let r = report.get(Check::ReplayDifferentBody).unwrap();
    assert!(
        r.reason.contains("expected 409 replayed-message, got 404"),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn a_provider_that_never_calls_back_fails_the_job_checks() {
    let provider = start_provider(Bug::NeverCallBack).await;
    let mut cfg = config(&provider);
    cfg.timeout = Duration::from_secs(2);
    let report = run(cfg).await.unwrap();
    println!("{}", report.to_human());
    assert_eq!(
        failed(&report),
        set(&[
            "download.credentials",
            "events.signed",
            "events.transitions",
            "events.retry-same-id",
            "result.digest",
            // Dependent: nothing to judge without events, no ended job to send the offer
            // and input to again, nothing charged.
            "events.retry-fresh-signature",
            "events.retry-backoff",
            "events.fields",
            "result.credential-required",
            "result.picture",
            "offer.repeated-after-end",
            "input.repeated-same-job",
            "charges.match-quote",
            // The other jobs never end either.
            "input.size-mismatch",
            "input.digest-mismatch",
            "input.redirect",
            "job.bad-model",
            "charges.failed-zero",
            "jobs.parallel",
            "input.repeated-while-running",
            "input.presigned",
        ]),
        "{}",
        report.to_human()
    );
    assert!(
        report
            .get(Check::DownloadCredentials)
            .unwrap()
            .reason
            .contains("never fetched")
    );
    assert!(
        report
            .get(Check::InputRepeatedSameJob)
            .unwrap()
            .reason
            .starts_with("not checked: no job.completed or job.failed arrived")
    );
}

#[tokio::test]
async fn a_provider_that_retries_under_a_new_id_fails_the_retry_check() {
    let provider = start_provider(Bug::NewIdOnRetry).await;
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    assert_eq!(
        failed(&report),
        set(&["events.retry-same-id"]),
        "{}",
        report.to_human()
    );
    assert!(
        report
            .get(Check::EventsRetrySameId)
            .unwrap()
            .reason
            .contains("new webhook-id")
    );
}

#[tokio::test]
async fn a_provider_that_runs_a_repeated_input_again_fails_the_repeated_input_check() {
    let provider = start_provider(Bug::RerunOnNewInput).await;
    let report = run(config(&provider)).await.unwrap();
    println!("{}", report.to_human());
    // The second run's job.completed charges again.
    assert_eq!(
        failed(&report),
        set(&[
            "input.repeated-same-job",
            "input.repeated-while-running",
            "charges.match-quote",
        ]),
        "{}",
        report.to_human()
    );
    let charges = report.get(Check::ChargesMatchQuote).unwrap();
    assert!(
        charges.reason.contains("charged more than once"),
        "{}",
        charges.reason
    );
    let r = report.get(Check::InputRepeatedSameJob).unwrap();
    for part in [
        "was answered 202 InputAccepted",
        "started a second run",
        "with the re-sent input's credential",
        "job.progress, job.completed (a second terminal event)",
    ] {
        assert!(r.reason.contains(part), "{part:?} not in {}", r.reason);
    }
    // The second run was seen quickly: the watch ends at the second terminal event.
    assert!(r.duration_ms < 2_000, "{}", r.duration_ms);
}

#[tokio::test]
async fn a_provider_answering_a_repeated_input_with_a_problem_fails_the_repeated_input_check() {
    let provider = start_provider(Bug::RefuseRepeatedInput).await;
    let report = run(config(&provider)).await.unwrap();
    assert_eq!(
        failed(&report),
        set(&["input.repeated-same-job", "input.repeated-while-running"]),
        "{}",
        report.to_human()
    );
    let r = report.get(Check::InputRepeatedSameJob).unwrap();
    assert!(
        r.reason
            .contains("expected 2xx (InputAccepted) or 409 (a broker fails the job on any other 4xx), got 404 not-found"),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn a_provider_answering_a_repeated_input_with_409_passes() {
    let provider = start_provider(Bug::ConflictOnRepeatedInput).await;
    let report = run(config(&provider)).await.unwrap();
    assert!(report.passed(), "{}", report.to_human());
    let r = report.get(Check::InputRepeatedSameJob).unwrap();
    assert!(r.reason.contains("409 invalid-transition"), "{}", r.reason);
    assert!(
        r.reason.contains("no download and no new event"),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn without_accounts_the_account_checks_are_skipped_not_passed() {
    let provider = start_provider(Bug::None).await;
    let mut cfg = config(&provider);
    cfg.poor_account = None;
    let report = run(cfg).await.unwrap();
    assert!(report.passed(), "{}", report.to_human());
    assert_eq!(report.skipped(), vec![Check::PaymentInsufficient]);
    assert_eq!(report.summary().skipped, 1);
    assert!(report.to_human().contains("SKIP  payment.insufficient"));
}

#[tokio::test]
async fn bad_configuration_is_an_error_not_a_report() {
    let provider = start_provider(Bug::None).await;
    let mut cfg = config(&provider);
    cfg.secret = "not-a-secret".into();
    assert!(run(cfg).await.is_err());
    let mut cfg = config(&provider);
    cfg.provider_url = "http://provider.example/diax/jobs".into();
    assert!(run(cfg).await.is_err());
}

#[tokio::test]
async fn the_runner_can_serve_its_endpoint_over_https() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = start_provider_trusting(Bug::None, vec![ca.pem().into_bytes()]).await;
    let mut cfg = config(&provider);
    cfg.tls = Some(TlsIdentity {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    });
    let report = run(cfg).await.unwrap();
    assert!(report.passed(), "{}", report.to_human());
    let download = report.get(Check::DownloadCredentials).unwrap();
    assert_eq!(download.verdict, Verdict::Pass);
    // The provider really fetched over TLS: the model URL it was given is https.
    let input = report.get(Check::InputAccepted).unwrap();
    assert_eq!(input.verdict, Verdict::Pass);
}

fn run_cli(args: Vec<String>) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_broker-mock"))
        .arg("conformance")
        .args(args)
        .env_remove("DIAX_CONFORMANCE_SECRET")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_prints_json_writes_junit_and_sets_the_exit_status() {
    let good = start_provider(Bug::None).await;
    let bad = start_provider(Bug::NoReplayProtection).await;
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("conformance.xml");
    let args = |p: &Provider, extra: &[&str]| {
        let mut v: Vec<String> = [
            "--provider-url",
            &p.job_url,
            "--secret",
            &p.secret,
            "--provider-id",
            PROVIDER_ID,
            "--account",
            FUNDED,
            "--poor-account",
            POOR,
            "--timeout",
            "20",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };

    let good_args = args(&good, &["--json", "--junit", junit.to_str().unwrap()]);
    let out = tokio::task::spawn_blocking(move || run_cli(good_args))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["summary"]["failed"], 0);
    assert_eq!(json["checks"].as_array().unwrap().len(), Check::ALL.len());
    assert_eq!(json["checks"][0]["name"], "offer.valid-accepted");
    assert_eq!(json["checks"][0]["verdict"], "PASS");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuite name=\"diax-conformance\""));
    assert!(xml.contains("failures=\"0\""));
    assert_eq!(xml.matches("<testcase ").count(), Check::ALL.len());

    let bad_args = args(&bad, &[]);
    let out = tokio::task::spawn_blocking(move || run_cli(bad_args))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  replay.different-body"), "{stdout}");
    assert!(stdout.contains("PASS  offer.valid-accepted"), "{stdout}");
    assert!(stdout.contains("DOES NOT CONFORM"), "{stdout}");

    // Bad usage: no secret, an unparsable flag.
    let out = tokio::task::spawn_blocking(|| {
        run_cli(vec!["--provider-url".into(), "http://127.0.0.1:1/x".into()])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secret"));
    let out = tokio::task::spawn_blocking(|| run_cli(vec!["--timeout".into(), "soon".into()]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_provider_accepting_offers_for_another_provider_fails_the_other_provider_check() {
    let provider = start_provider(Bug::IgnoresProviderId).await;
    let report = run(config(&provider)).await.unwrap();
    assert_eq!(
        failed(&report),
        set(&["offer.other-provider"]),
        "{}",
        report.to_human()
    );
    let r = report.get(Check::OfferOtherProvider).unwrap();
    assert!(
        r.reason.contains("expected 403 forbidden, got 202"),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn a_provider_charging_more_than_its_quote_fails_the_charges_check() {
    let provider = start_provider(Bug::ChargesMoreThanQuoted).await;
    let report = run(config(&provider)).await.unwrap();
    assert_eq!(
        failed(&report),
        set(&["charges.match-quote"]),
        "{}",
        report.to_human()
    );
    let r = report.get(Check::ChargesMatchQuote).unwrap();
    assert!(
        r.reason
            .contains("says 0.61 EUR was charged, but the accepted quote was 0.60 EUR"),
        "{}",
        r.reason
    );
}

/// Runs the runner against the provider with `bug` and checks that exactly `expected` fail.
async fn fails_exactly(bug: Bug, expected: &[&'static str]) -> Report {
    let provider = start_provider(bug).await;
    let report = run(config(&provider)).await.unwrap();
    assert_eq!(
        failed(&report),
        set(expected),
        "{bug:?}:\n{}",
        report.to_human()
    );
    report
}

fn reason(report: &Report, check: Check) -> String {
    report.get(check).unwrap().reason.clone()
}

#[tokio::test]
async fn a_provider_checking_only_the_first_signature_entry_fails_the_multiple_entries_check() {
    let report = fails_exactly(
        Bug::OnlyFirstSignatureEntry,
        &["signature.multiple-entries"],
    )
    .await;
    let r = reason(&report, Check::SignatureMultipleEntries);
    assert!(r.contains("refused as 401 signature-invalid"), "{r}");
}

#[tokio::test]
async fn a_provider_answering_a_malformed_signature_with_500_fails_that_check() {
    let report = fails_exactly(
        Bug::MalformedSignatureIs500,
        &["signature.malformed-signature"],
    )
    .await;
    let r = reason(&report, Check::SignatureMalformedSignature);
    assert!(r.contains("expected a 400 or 401 problem, got 500"), "{r}");
}

#[tokio::test]
async fn a_provider_answering_a_signed_non_json_body_with_500_fails_the_body_check() {
    let report = fails_exactly(Bug::NotJsonIs500, &["body.not-json"]).await;
    let r = reason(&report, Check::BodyNotJson);
    assert!(r.contains("expected a 400 problem, got 500"), "{r}");
}

#[tokio::test]
async fn a_provider_verifying_reserialised_json_fails_the_raw_bytes_check() {
    let report = fails_exactly(Bug::VerifiesReserialisedJson, &["signature.raw-bytes"]).await;
    let r = reason(&report, Check::SignatureRawBytes);
    assert!(r.contains("401 signature-invalid"), "{r}");
}

#[tokio::test]
async fn a_provider_remembering_ids_for_a_moment_fails_the_delayed_replay_check() {
    let report = fails_exactly(Bug::ShortReplayMemory, &["replay.after-delay"]).await;
    let r = reason(&report, Check::ReplayAfterDelay);
    assert!(r.contains("expected 409 replayed-message"), "{r}");
}

#[tokio::test]
async fn a_provider_accepting_any_operation_fails_the_unsupported_operation_check() {
    fails_exactly(Bug::AcceptsAnyOperation, &["offer.unsupported-operation"]).await;
}

#[tokio::test]
async fn a_provider_echoing_the_secret_fails_the_secret_check() {
    let report = fails_exactly(Bug::EchoesSecret, &["secret.not-echoed"]).await;
    let r = reason(&report, Check::SecretNotEchoed);
    assert!(r.contains("carried the secret in the body"), "{r}");
}

#[tokio::test]
async fn a_provider_deduplicating_offers_only_before_the_input_fails_the_repeated_offer_checks() {
    let report = fails_exactly(
        Bug::DedupOffersOnlyBeforeInput,
        &["offer.repeated-after-input", "offer.repeated-after-end"],
    )
    .await;
    let r = reason(&report, Check::OfferRepeatedAfterEnd);
    assert!(r.contains("the provider created a second job"), "{r}");
}

#[tokio::test]
async fn a_provider_not_checking_size_and_digest_fails_the_mismatch_checks() {
    let report = fails_exactly(
        Bug::NoSizeOrDigestCheck,
        &["input.size-mismatch", "input.digest-mismatch"],
    )
    .await;
    let r = reason(&report, Check::InputSizeMismatch);
    assert!(r.contains("job.completed instead of job.failed"), "{r}");
}

#[tokio::test]
async fn a_provider_following_redirects_fails_the_redirect_check() {
    let report = fails_exactly(Bug::FollowsRedirects, &["input.redirect"]).await;
    let r = reason(&report, Check::InputRedirect);
    assert!(r.contains("followed the redirect"), "{r}");
}

#[tokio::test]
async fn a_provider_sending_a_bearer_with_a_presigned_url_fails_the_presigned_check() {
    let report = fails_exactly(Bug::BearerWithoutCredential, &["input.presigned"]).await;
    let r = reason(&report, Check::InputPresigned);
    assert!(
        r.contains("an Authorization header sent with a presigned URL"),
        "{r}"
    );
}

#[tokio::test]
async fn a_provider_dropping_a_presigned_urls_query_fails_the_presigned_check() {
    let report = fails_exactly(Bug::DropsQuery, &["input.presigned"]).await;
    let r = reason(&report, Check::InputPresigned);
    assert!(r.contains("query was changed (sent none"), "{r}");
}

#[tokio::test]
async fn a_provider_taking_any_bytes_for_a_model_fails_the_bad_model_check() {
    fails_exactly(Bug::AcceptsAnyModel, &["job.bad-model"]).await;
}

#[tokio::test]
async fn a_provider_with_one_sequence_for_all_jobs_fails_the_parallel_check() {
    let report = fails_exactly(Bug::SharedSequence, &["jobs.parallel"]).await;
    let r = reason(&report, Check::JobsParallel);
    assert!(r.contains("has sequence"), "{r}");
}

#[tokio::test]
async fn a_provider_signing_a_retried_event_once_fails_the_fresh_signature_check() {
    let report = fails_exactly(Bug::SignsOnce, &["events.retry-fresh-signature"]).await;
    let r = reason(&report, Check::EventsRetryFreshSignature);
    assert!(r.contains("not signed afresh"), "{r}");
}

#[tokio::test]
async fn a_provider_retrying_without_backoff_fails_the_backoff_check() {
    let report = fails_exactly(Bug::NoBackoff, &["events.retry-backoff"]).await;
    let r = reason(&report, Check::EventsRetryBackoff);
    assert!(r.contains("after a 503 with Retry-After: 1"), "{r}");
}

#[tokio::test]
async fn a_provider_sending_times_in_milliseconds_fails_the_fields_check() {
    let report = fails_exactly(Bug::OccurredAtInMillis, &["events.fields"]).await;
    let r = reason(&report, Check::EventsFields);
    assert!(r.contains("Unix seconds expected"), "{r}");
}

#[tokio::test]
async fn a_provider_serving_the_result_without_its_credential_fails_that_check() {
    let report = fails_exactly(
        Bug::ResultWithoutCredential,
        &["result.credential-required"],
    )
    .await;
    let r = reason(&report, Check::ResultCredentialRequired);
    assert!(r.contains("without a credential"), "{r}");
}

#[tokio::test]
async fn a_provider_charging_failed_jobs_fails_the_failed_charges_check() {
    let report = fails_exactly(Bug::ChargesOnFailure, &["charges.failed-zero"]).await;
    let r = reason(&report, Check::ChargesFailedZero);
    assert!(r.contains("0.60 EUR was charged"), "{r}");
}
