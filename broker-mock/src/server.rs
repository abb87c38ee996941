//! The server: [`App`] (built on a bound listener, served until a shutdown future) and
//! [`Broker`], a handle on an [`App`] serving in the background.
//!
//! Both servers of the kit have this shape (FixMyPrint's is `fixmyprint::service::server`),
//! and both serve through [`diax_sdk::server::serve`]:
//!
//! | step | broker mock |
//! |---|---|
//! | build on a bound listener and a config | [`App::build`]`(listener, config, clock)` |
//! | where it listens, how peers reach it | [`App::local_addr`], [`App::base_url`] |
//! | serve until a future completes, then drain and stop the background tasks | [`App::serve`]`(shutdown)` |
//! | serve in the background | [`App::spawn`] `->` [`Broker`] |
//! | the handle | [`Broker::local_addr`], [`Broker::base_url`], [`Broker::clock`], [`Broker::shutdown`]`().await` |
//! | bind, build and spawn in one call | [`Broker::start`]`(config)` |

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::bucket::{self, Bucket};
use crate::config::{Clock, Config};
use crate::error::StartError;
use crate::state::AppState;
use crate::{db, http, inputs, janitor, notifier, outbound};

/// A built broker, bound to its listener but not yet serving.
#[derive(Debug)]
pub struct App {
    state: AppState,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    /// For an in-memory database: the task that closes the connection keeping it, once the
    /// pool has closed ([`db::open_keeping`]).
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Opens the database, builds the HTTP client and prepares to serve on `listener`.
    ///
    /// # Errors
    /// [`StartError`] when the database, the CA files, the listener or the model bucket
    /// (`--storage s3://…`, probed with a write and a delete) are unusable.
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
        if config.buffered_model_budget() < config.max_model_bytes as u64 {
            return Err(StartError::Config(format!(
                "--max-buffered-model-bytes ({}) is less than --max-model-bytes ({}): no model of the largest size could ever be taken",
                config.buffered_model_budget(),
                config.max_model_bytes
            )));
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
        let (db, keeper) = db::open_keeping(&config.db).await?;
        let fetcher = outbound::fetcher(&config)?;
        // A bucket for the models is probed now, so bad settings fail here in one line.
        let bucket = match bucket::settings_from_config(&config).map_err(StartError::Config)? {
            Some(settings) => {
                let timeout = Duration::from_secs(config.http_timeout.max(1));
                let bucket = Bucket::connect(settings, timeout)
                    .await
                    .map_err(StartError::Storage)?;
                tracing::info!(store = %bucket.settings().url(), "model versions go to the bucket");
                Some(bucket)
            }
            None => None,
        };
        let state = AppState::new(db, config, base_url, fetcher, clock, bucket);
        Ok(Self {
            state,
            listener,
            local_addr,
            keeper,
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

    /// The broker's clock; [`Clock::advance`] moves it for expiry tests.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// Serves in a background task of the current Tokio runtime until the returned handle
    /// is shut down (or dropped).
    #[must_use = "dropping the handle stops the server"]
    pub fn spawn(self) -> Broker {
        let local_addr = self.local_addr;
        let base_url = self.state.base_url.clone();
        let clock = self.state.clock.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = rx.await;
        }));
        Broker {
            local_addr,
            base_url,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish, stops the background deliverers (notifications, job inputs) and closes the
    /// database pool.
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
        let inputs = tokio::spawn(inputs::run(self.state.clone(), stop_rx.clone()));
        let janitor = tokio::spawn(janitor::run(self.state.clone(), stop_rx));
        tracing::info!(addr = %self.local_addr, base_url = %self.state.base_url, "broker mock listening");
        let result = async {
            let tls = match (&self.state.cfg.tls_cert, &self.state.cfg.tls_key) {
                (Some(cert), Some(key)) => Some(diax_sdk::server::load_tls(cert, key).await?),
                _ => None,
            };
            // A deadline for each request's head (slowloris), a connection cap, and a
            // graceful shutdown that is not forever: a connection held open (idle, or a
            // request that never completes) gets 5 s after the shutdown signal.
            let limits = diax_sdk::server::ServerLimits {
                header_read_timeout: Duration::from_millis(
                    self.state.cfg.header_read_timeout_ms.max(1),
                ),
                max_connections: self.state.cfg.max_connections,
                drain: Duration::from_secs(5),
                body_idle_timeout: Duration::from_millis(
                    self.state.cfg.body_idle_timeout_ms.max(1),
                ),
            };
            diax_sdk::server::serve_within(self.listener, router, tls, shutdown, limits).await
        }
        .await;
        let _ = stop_tx.send(true);
        let _ = notifier.await;
        let _ = inputs.await;
        let _ = janitor.await;
        // Close the pool: its connections end (and with an in-memory database, the
        // connection that keeps it, so the database goes too). Bounded, in case a request
        // cut after the drain still holds a connection.
        if tokio::time::timeout(Duration::from_secs(5), self.state.db.close())
            .await
            .is_err()
        {
            tracing::warn!("the database pool did not close within 5 s");
        }
        // An in-memory database is gone once the connection keeping it has closed: wait for
        // that, so nothing of it is left when this returns.
        if let Some(keeper) = self.keeper
            && tokio::time::timeout(Duration::from_secs(5), keeper)
                .await
                .is_err()
        {
            tracing::warn!("the in-memory database's keeper did not close within 5 s");
        }
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
    /// Binds `config.addr` (use port 0 for a free port), builds the [`App`] with a fresh
    /// [`Clock`] and [spawns](App::spawn) it.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        Ok(App::build(listener, config, Clock::default())
            .await?
            .spawn())
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

    /// Stops the server gracefully and waits for it (and its background tasks) to end; the
    /// database pool is closed (an in-memory database is gone after it).
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
