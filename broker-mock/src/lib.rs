//! # broker-mock: a faithful stand-in for the 3DIAX broker
//!
//! Provider developers run it to develop against: it registers providers and hands out
//! `whsec_` secrets, signs job offers, checks link tokens, issues temporary model
//! credentials, takes signed job events, fetches results into the user's model repository,
//! notifies users, and logs every message in and out with the reason it was accepted or
//! refused (`GET /v1/messages`, `/inspector`). The wire protocol is `docs/PROTOCOL.md`; all
//! message types come from [`diax_sdk::wire`].
//!
//! ## Layout
//! | module | what |
//! |---|---|
//! | [`config`] | [`Config`] (CLI flags / environment) and the adjustable [`Clock`] |
//! | [`Broker`] / [`run`] | start a server on a listener (port 0 in tests) |
//! | `http` | the router, one file per area, the message-log middleware |
//! | [`error`] | [`ApiError`], mapped to problem+json in one function |
//! | [`db`] | SQLite pool with embedded migrations, a durable replay store |
//! | `outbound` | signed POSTs to providers (retries), result downloads |
//! | `inputs` | durable delivery of `job.input` to providers (first attempt, background retries) |
//! | `notifier` | background delivery of signed user notifications |
//! | [`client`] | [`BrokerApi`] / [`UserClient`]: a typed client of the broker's user API |
//! | [`conformance`] | the conformance runner: plays the broker against any provider |
//!
//! ## Starting one in a test
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = broker_mock::Broker::start(broker_mock::Config::default()).await?;
//! println!("broker at {}", broker.base_url());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod client;
pub mod config;
pub mod conformance;
pub mod db;
pub mod error;
mod http;
mod inputs;
mod notifier;
pub mod openapi;
mod outbound;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{Notify, watch};

pub use client::{BrokerApi, ClientError, UserClient};
pub use config::{Clock, Config};
pub use error::ApiError;
pub use http::{LoggedMessage, MessageList};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Binding or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The outgoing HTTP client could not be built (bad CA file, …).
    #[error("http client: {0}")]
    Client(String),
    /// A configuration value is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// State shared by every handler and background task.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: SqlitePool,
    pub(crate) cfg: Config,
    pub(crate) base_url: String,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Clock,
    pub(crate) wake_notifier: Notify,
    /// Jobs whose `job.input` is being sent right now.
    pub(crate) inputs_in_flight: inputs::InFlight,
    /// One lock per job while an event is applied, so concurrent deliveries act once.
    pub(crate) job_locks:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Inner {
    /// The lock serialising event processing for `job`.
    pub(crate) fn job_lock(&self, job: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.job_locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget locks nobody holds any more, so the map stays small.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(job.to_owned()).or_default())
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// A built broker, bound to its listener but not yet serving.
#[derive(Debug)]
pub struct App {
    state: AppState,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
}

impl App {
    /// Opens the database, builds the HTTP client and prepares to serve on `listener`.
    ///
    /// # Errors
    /// [`StartError`] when the database, the CA files or the listener are unusable.
    pub async fn build(
        listener: std::net::TcpListener,
        config: Config,
        clock: Clock,
    ) -> Result<Self, StartError> {
        // One crypto provider for rustls everywhere (server and client): ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(StartError::Config(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("{scheme}://{local_addr}"),
        };
        let db = db::open(&config.db).await?;
        let http = outbound::http_client(&config)?;
        let state = AppState {
            inner: Arc::new(Inner {
                db,
                cfg: config,
                base_url,
                http,
                clock,
                wake_notifier: Notify::new(),
                inputs_in_flight: inputs::InFlight::default(),
                job_locks: std::sync::Mutex::default(),
            }),
        };
        Ok(Self {
            state,
            listener,
            local_addr,
        })
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL the broker announces (`--public-url` or derived from the address).
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish, and stops the background deliverers (notifications, job inputs).
    ///
    /// # Errors
    /// When serving fails (TLS files unreadable, socket errors).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let router = http::router(self.state.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let notifier = tokio::spawn(notifier::run(self.state.clone(), stop_rx.clone()));
        let inputs = tokio::spawn(inputs::run(self.state.clone(), stop_rx));
        tracing::info!(addr = %self.local_addr, base_url = %self.state.base_url, "broker mock listening");
        let result = match (&self.state.cfg.tls_cert, &self.state.cfg.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
                let handle = axum_server::Handle::new();
                let h2 = handle.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    h2.graceful_shutdown(Some(Duration::from_secs(5)));
                });
                axum_server::from_tcp_rustls(self.listener, tls)?
                    .handle(handle)
                    .serve(router.into_make_service())
                    .await
            }
            _ => {
                let listener = tokio::net::TcpListener::from_std(self.listener)?;
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        let _ = stop_tx.send(true);
        let _ = notifier.await;
        let _ = inputs.await;
        tracing::info!("broker mock stopped");
        result.map_err(StartError::from)
    }
}

/// Serves the broker on `listener` until `shutdown` completes.
///
/// # Errors
/// As [`App::build`] and [`App::serve`].
pub async fn run(
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: Config,
) -> Result<(), StartError> {
    App::build(listener, config, Clock::default())
        .await?
        .serve(shutdown)
        .await
}

/// A broker running in the background of this process (for tests, the demo and the
/// conformance runner).
#[derive(Debug)]
pub struct Broker {
    local_addr: SocketAddr,
    base_url: String,
    clock: Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), StartError>>>,
}

impl Broker {
    /// Binds `config.addr` (use port 0 for a free port), opens the database and serves in a
    /// background task.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        let clock = Clock::default();
        let app = App::build(listener, config, clock.clone()).await?;
        let local_addr = app.local_addr();
        let base_url = app.base_url().to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            local_addr,
            base_url,
            clock,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The broker's clock; [`Clock::advance`] moves it for expiry tests.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Stops the server gracefully and waits for it (and its background tasks) to end.
    pub async fn shutdown(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "broker stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "broker task failed"),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
