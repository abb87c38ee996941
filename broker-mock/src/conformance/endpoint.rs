//! The runner's own endpoint: what a broker serves during a job. It serves the test model
//! (and the other jobs' models, one of them behind a redirect) to the temporary credentials
//! it issued, recording every attempt, and receives the provider's signed events at the
//! `events_url` of its offers: verifying, recording, checking units and ranges, scanning for
//! the secret, and refusing the first [`REFUSALS`] deliveries of the job's completion event
//! (`503`, `Retry-After: 1`) to watch the retries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use diax_sdk::client::{self, Client, DownloadLimits};
use diax_sdk::clock::unix_now;
use diax_sdk::util::{ErrorChain, sha256_hex};
use diax_sdk::webhook::RawHeaders;
use diax_sdk::wire::{EventAck, JobEvent, JobEventKind, JobState};
use diax_sdk::{JobId, Keyring, Problem, ProblemType, Quote};
use tokio::sync::{Mutex, watch};

use super::{ConformanceError, TlsIdentity};

/// One request to the model's download location.
#[derive(Debug, Clone)]
pub(crate) struct DownloadAttempt {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    /// Which issued credential it carried: 1 for the first `job.input`'s, 2 for the re-sent
    /// one's; `None` for no or another credential.
    pub(crate) credential: Option<usize>,
    /// Why it was refused, when it was.
    pub(crate) refusal: Option<String>,
}

/// One POST to the events URL.
#[derive(Debug, Clone)]
pub(crate) struct EventDelivery {
    pub(crate) id: Option<String>,
    pub(crate) status: u16,
    /// Signature/tolerance failure, or body that does not parse.
    pub(crate) error: Option<String>,
    pub(crate) event_type: Option<&'static str>,
}

/// How many deliveries of the job's completion event are refused (`503`, `Retry-After: 1`)
/// before one is accepted.
pub(crate) const REFUSALS: usize = 3;

/// One delivery of the refused completion event.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) at: Instant,
    pub(crate) timestamp: Option<String>,
    pub(crate) signature: Option<String>,
}

/// Another job of the run (a parallel job, or one whose input or model is bad).
#[derive(Debug, Default)]
pub(crate) struct SideJob {
    /// First deliveries of its events, in order.
    pub(crate) events: Vec<JobEvent>,
    /// Its webhook-ids.
    pub(crate) ids: Vec<String>,
    pub(crate) violations: Vec<String>,
    /// Requests to its download location: (method, path, status).
    pub(crate) downloads: Vec<(String, String, u16)>,
    /// Whether the provider followed its download location's redirect.
    pub(crate) followed_redirect: bool,
    /// Why its download location refused a request (a presigned URL fetched with an
    /// `Authorization` header or with its query changed).
    pub(crate) refusals: Vec<String>,
    last_sequence: u64,
}

impl SideJob {
    /// Its terminal event, once one arrived.
    pub(crate) fn terminal(&self) -> Option<&JobEvent> {
        self.events.iter().find(|e| e.kind.state().is_terminal())
    }
}

/// What a side job's download location serves.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub(crate) job_id: String,
    pub(crate) bytes: Bytes,
    /// Every credential issued for it (each `job.input` carries a fresh one).
    pub(crate) credentials: Vec<String>,
    /// Answer `302` to this location instead.
    pub(crate) redirect: Option<String>,
    /// This is where a redirect points: any request here means the redirect was followed.
    pub(crate) redirect_target: bool,
    /// A presigned location: the credential is this query, exactly as given, and a request
    /// with an `Authorization` header is refused (as S3 does: one auth mechanism only).
    pub(crate) presigned_query: Option<String>,
}

/// A terminal event's report of what was charged.
#[derive(Debug, Clone)]
pub(crate) struct Charge {
    pub(crate) id: String,
    pub(crate) event_type: &'static str,
    pub(crate) charged: Option<Quote>,
}

/// How the provider retried the completion event after the forced `503`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Same `webhook-id`, same body, after this long.
    SameId(Duration),
    /// Another id for the same completion.
    NewId(String),
    /// The same id over a different body.
    DifferentBody,
}

/// Everything the endpoint saw.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) downloads: Vec<DownloadAttempt>,
    pub(crate) deliveries: Vec<EventDelivery>,
    /// Applied events, in order.
    pub(crate) applied: Vec<JobEvent>,
    pub(crate) violations: Vec<String>,
    /// The job the runner gave an input for, and the provider's job id once known.
    pub(crate) job_id: Option<String>,
    pub(crate) provider_job_id: Option<String>,
    /// The completion delivery answered `503`: its id, body digest and when.
    pub(crate) forced: Option<(String, String, Instant)>,
    pub(crate) retry: Option<Retry>,
    /// The applied terminal event.
    pub(crate) terminal: Option<JobEvent>,
    /// The result fetch: size and digest, or why it failed.
    pub(crate) result: Option<Result<(u64, String), String>>,
    /// Every terminal event of the job under test under a new `webhook-id`, in arrival
    /// order, with what it says was charged (redeliveries are not repeated here).
    pub(crate) charges: Vec<Charge>,
    /// Every delivery of the refused completion event, in arrival order: the first
    /// [`REFUSALS`] are answered `503` with `Retry-After: 1`, the next is accepted.
    pub(crate) attempts: Vec<Attempt>,
    /// Field values of any job's events out of their unit or range (PROTOCOL §1, §5.6).
    pub(crate) field_errors: Vec<String>,
    /// Where an event carried the shared secret.
    pub(crate) leaks: Vec<String>,
    /// The run's other jobs, by broker job id.
    pub(crate) side: HashMap<String, SideJob>,
    seen: HashMap<String, String>,
    state: Option<JobState>,
    last_sequence: u64,
}

impl Log {
    /// How many distinct event messages arrived.
    pub(crate) fn seen_count(&self) -> usize {
        self.seen.len()
    }

    /// Sets (or checks) the provider job id of the job under test.
    pub(crate) fn set_provider_job(&mut self, pjob: &str) {
        match &self.provider_job_id {
            Some(known) if known != pjob => self.violations.push(format!(
                "events name provider job {known}, but the offer was accepted as {pjob}"
            )),
            _ => self.provider_job_id = Some(pjob.to_owned()),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) model: Bytes,
    pub(crate) model_path: String,
    /// Every credential issued for the model, in order (each `job.input` gets a fresh one).
    credentials: Mutex<Vec<String>>,
    pub(crate) provider_id: String,
    keyring: Keyring,
    tolerance: u64,
    http: Client,
    limits: DownloadLimits,
    pub(crate) log: Mutex<Log>,
    done: watch::Sender<bool>,
    /// The side jobs' download locations, by path.
    pub(crate) served: Mutex<HashMap<String, Served>>,
    /// Text forms of the shared secret, looked for in every event.
    pub(crate) secret_texts: Vec<String>,
}

/// The running endpoint.
pub(crate) struct Endpoint {
    pub(crate) base_url: String,
    pub(crate) shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    done: watch::Receiver<bool>,
}

/// What the endpoint needs to know.
pub(crate) struct EndpointSetup {
    pub(crate) listen: SocketAddr,
    pub(crate) public_url: Option<String>,
    pub(crate) tls: Option<TlsIdentity>,
    pub(crate) model: Vec<u8>,
    pub(crate) model_id: String,
    pub(crate) credential: String,
    pub(crate) provider_id: String,
    pub(crate) keyring: Keyring,
    pub(crate) tolerance: u64,
    pub(crate) http: Client,
    pub(crate) request_timeout: Duration,
    pub(crate) secret_texts: Vec<String>,
}

impl Endpoint {
    pub(crate) async fn start(setup: EndpointSetup) -> Result<Self, ConformanceError> {
        let listener = std::net::TcpListener::bind(setup.listen).map_err(|e| {
            ConformanceError::Endpoint(format!("cannot listen on {}: {e}", setup.listen))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ConformanceError::Endpoint(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ConformanceError::Endpoint(e.to_string()))?;
        let scheme = if setup.tls.is_some() { "https" } else { "http" };
        let base_url = match &setup.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("{scheme}://{addr}"),
        };
        let (done_tx, done_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            model: Bytes::from(setup.model),
            model_path: format!("/v1/models/{}/versions/1/content", setup.model_id),
            credentials: Mutex::new(vec![setup.credential]),
            provider_id: setup.provider_id.clone(),
            keyring: setup.keyring,
            tolerance: setup.tolerance,
            http: setup.http,
            limits: DownloadLimits {
                max_bytes: 256 * 1024 * 1024,
                timeout: setup.request_timeout,
                ..DownloadLimits::default()
            },
            log: Mutex::new(Log::default()),
            done: done_tx,
            served: Mutex::new(HashMap::new()),
            secret_texts: setup.secret_texts,
        });
        let router = Router::new()
            .route(
                "/v1/models/{model_id}/versions/{version}/content",
                any(content),
            )
            .route("/v1/providers/{provider_id}/events", post(events))
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = match setup.tls {
            Some(tls) => {
                let config =
                    axum_server::tls_rustls::RustlsConfig::from_pem(tls.cert_pem, tls.key_pem)
                        .await
                        .map_err(|e| ConformanceError::Endpoint(format!("TLS identity: {e}")))?;
                let handle = axum_server::Handle::new();
                let h2 = handle.clone();
                tokio::spawn(async move {
                    let _ = stop_rx.await;
                    h2.graceful_shutdown(Some(Duration::from_secs(1)));
                });
                let server = axum_server::from_tcp_rustls(listener, config)
                    .map_err(|e| ConformanceError::Endpoint(e.to_string()))?
                    .handle(handle);
                tokio::spawn(async move {
                    if let Err(e) = server.serve(router.into_make_service()).await {
                        tracing::warn!(error = %e, "conformance endpoint stopped");
                    }
                })
            }
            None => {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| ConformanceError::Endpoint(e.to_string()))?;
                tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop_rx.await;
                    };
                    if let Err(e) = axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        tracing::warn!(error = %e, "conformance endpoint stopped");
                    }
                })
            }
        };
        Ok(Self {
            base_url,
            shared,
            stop: Some(stop_tx),
            task: Some(task),
            done: done_rx,
        })
    }

    /// The URL of the model's content.
    pub(crate) fn model_url(&self) -> String {
        format!("{}{}", self.base_url, self.shared.model_path)
    }

    /// The events URL to put in offers.
    pub(crate) fn events_url(&self) -> String {
        format!(
            "{}/v1/providers/{}/events",
            self.base_url, self.shared.provider_id
        )
    }

    /// Waits until the terminal event is applied (true) or `deadline` passes (false).
    pub(crate) async fn wait_done(&mut self, deadline: tokio::time::Instant) -> bool {
        matches!(
            tokio::time::timeout_at(deadline, self.done.wait_for(|d| *d)).await,
            Ok(Ok(_))
        )
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }
}

impl Shared {
    /// Issues another credential for the model (for a re-sent `job.input`); earlier ones stay
    /// valid, as a broker's do until they expire.
    pub(crate) async fn add_credential(&self, credential: String) {
        self.credentials.lock().await.push(credential);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(diax_sdk::PROBLEM_CONTENT_TYPE),
        )],
        p.to_json(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    problem(Problem::new(ProblemType::NotFound).with_detail(format!("no route {}", uri.path())))
}

/// The model's content: an issued credential, exactly this path, GET only.
async fn content(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let side = shared.served.lock().await.get(uri.path()).cloned();
    if let Some(served) = side {
        return side_content(&shared, &served, &method, &uri, &headers).await;
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let credential = match auth.as_deref() {
        None => None,
        Some(a) => shared
            .credentials
            .lock()
            .await
            .iter()
            .position(|c| c == a)
            .map(|i| i + 1),
    };
    let refusal = if credential.is_none() {
        Some((
            ProblemType::CredentialInvalid,
            match auth {
                None => "no Authorization header".to_owned(),
                Some(_) => {
                    "an Authorization header other than the temporary credentials".to_owned()
                }
            },
        ))
    } else if uri.path() != shared.model_path {
        Some((
            ProblemType::CredentialScope,
            "the credential used for another object".to_owned(),
        ))
    } else if method != Method::GET {
        Some((
            ProblemType::CredentialScope,
            format!("the credential used with {method} (GET only)"),
        ))
    } else {
        None
    };
    let mut attempt = DownloadAttempt {
        method: method.to_string(),
        path: uri.path().to_owned(),
        status: 200,
        credential,
        refusal: None,
    };
    let response = match refusal {
        Some((kind, why)) => {
            attempt.status = kind.status();
            attempt.refusal = Some(format!("{why} ({} {})", kind.status(), kind.slug()));
            problem(Problem::new(kind).with_detail(why))
        }
        None => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("model/stl"))],
            shared.model.clone(),
        )
            .into_response(),
    };
    shared.log.lock().await.downloads.push(attempt);
    response
}

/// A side job's download location: its credential (or its presigned query), GET only; a
/// redirect when told so.
async fn side_content(
    shared: &Shared,
    served: &Served,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let refusal = match &served.presigned_query {
        Some(_) if auth.is_some() => Some((
            ProblemType::InvalidRequest,
            "an Authorization header sent with a presigned URL (an object store refuses \
             a request carrying two credentials: §5.5, send none when `authorization` is \
             absent)"
                .to_owned(),
        )),
        Some(query) if uri.query() != Some(query.as_str()) => Some((
            ProblemType::CredentialInvalid,
            format!(
                "the presigned URL's query was changed (sent {}; §5.5: fetch the URL exactly \
                 as given, its signature covers the query)",
                uri.query()
                    .map_or_else(|| "none".to_owned(), |q| format!("{} bytes", q.len()))
            ),
        )),
        Some(_) => None,
        None if !auth
            .as_deref()
            .is_some_and(|a| served.credentials.iter().any(|c| c == a)) =>
        {
            Some((ProblemType::CredentialInvalid, String::new()))
        }
        None => None,
    };
    let response = if let Some((kind, why)) = &refusal {
        let p = Problem::new(*kind);
        problem(if why.is_empty() {
            p
        } else {
            p.with_detail(why.clone())
        })
    } else if *method != Method::GET {
        problem(Problem::new(ProblemType::CredentialScope))
    } else if let Some(location) = &served.redirect {
        (
            StatusCode::FOUND,
            [(header::LOCATION, location.clone())],
            String::new(),
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("model/stl"))],
            served.bytes.clone(),
        )
            .into_response()
    };
    let mut log = shared.log.lock().await;
    let job = log.side.entry(served.job_id.clone()).or_default();
    job.downloads.push((
        method.to_string(),
        uri.path().to_owned(),
        response.status().as_u16(),
    ));
    if served.redirect_target {
        job.followed_redirect = true;
    }
    if let Some((_, why)) = refusal.filter(|(_, why)| !why.is_empty()) {
        job.refusals.push(why);
    }
    response
}

/// Units and ranges of an event's fields (PROTOCOL §1 and §5.6): times in Unix seconds near
/// now, digests lowercase hex, money non-negative with an ISO 4217 code, problems with an
/// error status.
pub(crate) fn field_errors(event: &JobEvent, now: i64, tolerance: u64) -> Vec<String> {
    let mut out = Vec::new();
    let what = format!("{} (sequence {})", event.kind.name(), event.sequence);
    let tolerance = i64::try_from(tolerance).unwrap_or(300);
    if event.occurred_at.abs_diff(now) > tolerance.unsigned_abs() {
        out.push(format!(
            "{what}: occurred_at {} is {} s from now: Unix seconds expected (§1)",
            event.occurred_at,
            event.occurred_at.saturating_sub(now)
        ));
    }
    if event.sequence == 0 {
        out.push(format!("{what}: sequence 0 (sequences start at 1)"));
    }
    let money = |out: &mut Vec<String>, q: &diax_sdk::Quote| {
        if q.amount < 0 {
            out.push(format!("{what}: charged amount {} is negative", q.amount));
        }
        if q.currency.len() != 3 || !q.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            out.push(format!(
                "{what}: currency {:?} is not an ISO 4217 code",
                q.currency
            ));
        }
    };
    match &event.kind {
        JobEventKind::Completed { result } => {
            let d = &result.download;
            let ten_years = 10 * 365 * 24 * 3600;
            if d.expires_at <= now || d.expires_at > now.saturating_add(ten_years) {
                out.push(format!(
                    "{what}: result.download.expires_at {} is not a future time in Unix \
                     seconds (§1)",
                    d.expires_at
                ));
            }
            if d.sha256.len() != 64
                || !d
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                out.push(format!(
                    "{what}: result.download.sha256 {:?} is not lowercase hex SHA-256",
                    d.sha256
                ));
            }
            if d.size == 0 {
                out.push(format!("{what}: result.download.size is 0"));
            }
            if let Some(q) = &result.charged {
                money(&mut out, q);
            }
        }
        JobEventKind::Failed { problem, charged } => {
            if !(400..600).contains(&problem.status) {
                out.push(format!(
                    "{what}: problem status {} is not an error status",
                    problem.status
                ));
            }
            if let Some(q) = charged {
                money(&mut out, q);
            }
        }
        _ => {}
    }
    out
}

/// An event for a side job: recorded with its order checked, acknowledged.
fn side_event(log: &mut Log, id: String, digest: &str, event: JobEvent) -> Response {
    let job_id = event.job_id.clone();
    match log.seen.get(&id) {
        Some(prev) if prev != digest => {
            let job = log.side.entry(job_id.to_string()).or_default();
            job.violations.push(format!(
                "webhook-id {id} reused for a different body ({})",
                event.kind.name()
            ));
            return problem(Problem::new(ProblemType::ReplayedMessage));
        }
        Some(_) => {
            let state = log
                .side
                .get(job_id.as_str())
                .and_then(|j| j.events.last())
                .map_or(JobState::Accepted, |e| e.kind.state());
            return ack(&job_id, state, true);
        }
        None => {}
    }
    log.seen.insert(id.clone(), digest.to_owned());
    let job = log.side.entry(job_id.to_string()).or_default();
    if let Some(t) = job.terminal() {
        job.violations.push(format!(
            "{} (sequence {}) after the job was already {}",
            event.kind.name(),
            event.sequence,
            t.kind.state().as_str()
        ));
        return problem(Problem::new(ProblemType::InvalidTransition));
    }
    if job.events.is_empty() && event.sequence != 1 {
        job.violations.push(format!(
            "its first event ({}) has sequence {}, not 1",
            event.kind.name(),
            event.sequence
        ));
    } else if !job.events.is_empty() && event.sequence <= job.last_sequence {
        job.violations.push(format!(
            "{} has sequence {} after sequence {}",
            event.kind.name(),
            event.sequence,
            job.last_sequence
        ));
    }
    job.last_sequence = job.last_sequence.max(event.sequence);
    let state = event.kind.state();
    job.ids.push(id);
    job.events.push(event);
    ack(&job_id, state, false)
}

fn ack(job_id: &JobId, state: JobState, duplicate: bool) -> Response {
    (
        StatusCode::OK,
        axum::Json(EventAck {
            job_id: job_id.clone(),
            state,
            duplicate,
        }),
    )
        .into_response()
}

/// The events URL: verify, record, refuse the completion's first deliveries, apply.
async fn events(
    State(shared): State<Arc<Shared>>,
    Path(provider_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = headers
        .get("webhook-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut log = shared.log.lock().await;
    let mut delivery = EventDelivery {
        id: id.clone(),
        status: 200,
        error: None,
        event_type: None,
    };
    let raw = RawHeaders::from_fn(|name| headers.get(name).map(HeaderValue::as_bytes));
    if let Err(e) = shared
        .keyring
        .verify_at(&raw, &body, unix_now(), shared.tolerance)
    {
        let p = Problem::from(&e);
        delivery.status = p.status;
        delivery.error = Some(format!("refused: {e}"));
        log.deliveries.push(delivery);
        return problem(p);
    }
    let event: JobEvent = match serde_json::from_slice(&body) {
        Ok(ev) => ev,
        Err(e) => {
            delivery.status = 400;
            delivery.error = Some(format!("body is not a JobEvent: {e}"));
            log.deliveries.push(delivery);
            return problem(
                Problem::new(ProblemType::InvalidRequest)
                    .with_detail(format!("body is not a JobEvent: {e}")),
            );
        }
    };
    delivery.event_type = Some(event.kind.name());
    // The id verified, so it is present.
    let id = id.unwrap_or_default();
    let digest = sha256_hex(&body);
    let text = String::from_utf8_lossy(&body);
    if shared
        .secret_texts
        .iter()
        .any(|s| text.contains(s.as_str()))
    {
        log.leaks.push(format!(
            "event {id} ({}) carries the secret",
            event.kind.name()
        ));
    }
    if !log.seen.contains_key(&id) {
        let errors = field_errors(&event, unix_now(), shared.tolerance);
        log.field_errors.extend(errors);
    }
    if log.side.contains_key(event.job_id.as_str()) {
        let response = side_event(&mut log, id, &digest, event);
        delivery.status = response.status().as_u16();
        log.deliveries.push(delivery);
        return response;
    }
    if provider_id != shared.provider_id || event.provider_id.as_str() != shared.provider_id {
        log.violations.push(format!(
            "event {id} sent for provider {} at the events URL of {provider_id}; expected {}",
            event.provider_id, shared.provider_id
        ));
    }
    let is_terminal = matches!(
        event.kind,
        JobEventKind::Completed { .. } | JobEventKind::Failed { .. }
    );
    let response = match log.seen.get(&id).cloned() {
        Some(prev) if prev != digest => {
            log.violations.push(format!(
                "webhook-id {id} reused for a different body ({})",
                event.kind.name()
            ));
            if log.forced.as_ref().is_some_and(|(fid, _, _)| *fid == id) && log.retry.is_none() {
                log.retry = Some(Retry::DifferentBody);
            }
            problem(Problem::new(ProblemType::ReplayedMessage))
        }
        Some(_) => {
            let forced_retry =
                log.retry.is_none() && log.forced.as_ref().is_some_and(|(fid, _, _)| *fid == id);
            if forced_retry && log.attempts.len() < REFUSALS {
                log.attempts.push(attempt_of(&headers));
                refuse()
            } else if forced_retry {
                log.attempts.push(attempt_of(&headers));
                let waited = log
                    .forced
                    .as_ref()
                    .map(|(_, _, at)| at.elapsed())
                    .unwrap_or_default();
                log.retry = Some(Retry::SameId(waited));
                apply(&shared, &mut log, event).await
            } else {
                let state = log.state.unwrap_or(JobState::Accepted);
                ack(&event.job_id, state, true)
            }
        }
        None => {
            log.seen.insert(id.clone(), digest.clone());
            let known_job = log.job_id.as_deref() == Some(event.job_id.as_str());
            // The forced completion's retry under a new id is judged by
            // events.retry-same-id; it is not a second charge.
            let retried_under_new_id = log.retry.is_none()
                && log.terminal.is_none()
                && log.forced.as_ref().is_some_and(|(fid, _, _)| *fid != id);
            if is_terminal && known_job && !retried_under_new_id {
                let charged = match &event.kind {
                    JobEventKind::Completed { result } => result.charged.clone(),
                    JobEventKind::Failed { charged, .. } => charged.clone(),
                    _ => None,
                };
                log.charges.push(Charge {
                    id: id.clone(),
                    event_type: event.kind.name(),
                    charged,
                });
            }
            if is_terminal && known_job && log.forced.is_none() {
                log.forced = Some((id.clone(), digest, Instant::now()));
                log.attempts.push(attempt_of(&headers));
                refuse()
            } else {
                let new_id_retry = is_terminal
                    && known_job
                    && log.retry.is_none()
                    && log.terminal.is_none()
                    && log.forced.as_ref().is_some_and(|(fid, _, _)| *fid != id);
                if new_id_retry {
                    log.retry = Some(Retry::NewId(id.clone()));
                    log.attempts.push(attempt_of(&headers));
                }
                apply(&shared, &mut log, event).await
            }
        }
    };
    delivery.status = response.status().as_u16();
    log.deliveries.push(delivery);
    response
}

fn attempt_of(headers: &HeaderMap) -> Attempt {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Attempt {
        at: Instant::now(),
        timestamp: text("webhook-timestamp"),
        signature: text("webhook-signature"),
    }
}

/// `503` with `Retry-After: 1` to a delivery of the completion event.
fn refuse() -> Response {
    let mut response = problem(Problem::new(ProblemType::ServiceUnavailable).with_detail(
        "the conformance runner refuses the first deliveries of the completion event, to see \
         them retried with the same webhook-id, signed afresh, not before Retry-After",
    ));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Applies a (first) event to the job under test, recording protocol violations.
async fn apply(shared: &Shared, log: &mut Log, event: JobEvent) -> Response {
    if log.job_id.as_deref() != Some(event.job_id.as_str()) {
        log.violations.push(format!(
            "{} for job {}, which the runner never gave an input for",
            event.kind.name(),
            event.job_id
        ));
        return problem(
            Problem::new(ProblemType::NotFound)
                .with_detail(format!("no job {} here", event.job_id)),
        );
    }
    log.set_provider_job(event.provider_job_id.as_str());
    if let Some(state) = log.state
        && state.is_terminal()
    {
        log.violations.push(format!(
            "{} (sequence {}) after the job was already {}",
            event.kind.name(),
            event.sequence,
            state.as_str()
        ));
        return problem(Problem::new(ProblemType::InvalidTransition));
    }
    if log.applied.is_empty() && event.sequence != 1 {
        log.violations.push(format!(
            "the first event ({}) has sequence {}, not 1",
            event.kind.name(),
            event.sequence
        ));
    } else if !log.applied.is_empty() && event.sequence <= log.last_sequence {
        log.violations.push(format!(
            "{} has sequence {} after sequence {}",
            event.kind.name(),
            event.sequence,
            log.last_sequence
        ));
    }
    log.last_sequence = log.last_sequence.max(event.sequence);
    match &event.kind {
        JobEventKind::Progress { percent, .. } if *percent > 100 => {
            log.violations
                .push(format!("job.progress with percent {percent} (over 100)"));
        }
        JobEventKind::Completed { result } => {
            let fetched = if result.format != "stl" {
                Err(format!("result format {:?}, not \"stl\"", result.format))
            } else if result.download.expires_at < unix_now() {
                Err(format!(
                    "the result location had expired at {}",
                    result.download.expires_at
                ))
            } else {
                match client::download_to_vec(&shared.http, &result.download, &shared.limits).await
                {
                    Ok(bytes) => Ok((bytes.len() as u64, sha256_hex(&bytes))),
                    Err(client::DownloadError::Refused {
                        status,
                        problem: Some(p),
                    }) => Err(format!("the result location answered {status}: {p}")),
                    Err(e) => Err(format!("fetching the result: {}", ErrorChain(&e))),
                }
            };
            log.result = Some(fetched);
        }
        _ => {}
    }
    let state = event.kind.state();
    log.state = Some(state);
    if state.is_terminal() {
        log.terminal = Some(event.clone());
    }
    let job_id = event.job_id.clone();
    log.applied.push(event);
    if state.is_terminal() {
        let _ = shared.done.send(true);
    }
    ack(&job_id, state, false)
}

#[cfg(test)]
mod tests {
    use diax_sdk::wire::{Download, JobResult};
    use diax_sdk::{ProviderId, ProviderJobId, Quote};

    use super::*;

    fn event(occurred_at: i64, kind: JobEventKind) -> JobEvent {
        JobEvent {
            job_id: JobId::generate(),
            provider_job_id: ProviderJobId::generate(),
            provider_id: ProviderId::generate(),
            sequence: 2,
            occurred_at,
            kind,
        }
    }

    fn completed(expires_at: i64, sha256: &str, charged: Quote) -> JobEventKind {
        JobEventKind::Completed {
            result: JobResult {
                download: Download {
                    url: "https://provider.example/r".into(),
                    authorization: None,
                    expires_at,
                    size: 684,
                    sha256: sha256.into(),
                },
                format: "stl".into(),
                report: None,
                charged: Some(charged),
                picture: None,
            },
        }
    }

    #[test]
    fn fields_in_their_units_pass_and_each_wrong_unit_is_named() {
        let now = 1_764_352_800;
        let sha = "a".repeat(64);
        let good = event(now - 2, completed(now + 3600, &sha, Quote::new(60, "EUR")));
        assert!(field_errors(&good, now, 300).is_empty());

        let millis = event(
            now * 1000,
            completed(now + 3600, &sha, Quote::new(60, "EUR")),
        );
        let errors = field_errors(&millis, now, 300);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("Unix seconds expected"), "{errors:?}");

        let expires_in_ms = event(
            now,
            completed((now + 3600) * 1000, &sha, Quote::new(60, "EUR")),
        );
        assert!(field_errors(&expires_in_ms, now, 300)[0].contains("expires_at"));

        let upper_hex = event(
            now,
            completed(now + 3600, &"A".repeat(64), Quote::new(60, "EUR")),
        );
        assert!(field_errors(&upper_hex, now, 300)[0].contains("sha256"));

        let bad_money = event(now, completed(now + 3600, &sha, Quote::new(-1, "euro")));
        assert_eq!(field_errors(&bad_money, now, 300).len(), 2);

        let failed = event(
            now,
            JobEventKind::Failed {
                problem: Problem::new(ProblemType::ModelInvalid),
                charged: Some(Quote::new(0, "EUR")),
            },
        );
        assert!(field_errors(&failed, now, 300).is_empty());
    }
}
