//! The runner's own endpoint: what a broker serves during a job. It serves the test model
//! to the temporary credentials it issued (and records every attempt), and receives the
//! provider's signed events at the `events_url` of its offers (verifying, recording, and
//! forcing one retry of the completion event).

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
    seen: HashMap<String, String>,
    state: Option<JobState>,
    last_sequence: u64,
}

impl Log {
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

/// The events URL: verify, record, force one retry of the completion, apply.
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
            if forced_retry {
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
                problem(Problem::new(ProblemType::ServiceUnavailable).with_detail(
                    "the conformance runner refuses the first delivery of the completion \
                     event once, to see it retried with the same webhook-id",
                ))
            } else {
                let new_id_retry = is_terminal
                    && known_job
                    && log.retry.is_none()
                    && log.terminal.is_none()
                    && log.forced.as_ref().is_some_and(|(fid, _, _)| *fid != id);
                if new_id_retry {
                    log.retry = Some(Retry::NewId(id.clone()));
                }
                apply(&shared, &mut log, event).await
            }
        }
    };
    delivery.status = response.status().as_u16();
    log.deliveries.push(delivery);
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
