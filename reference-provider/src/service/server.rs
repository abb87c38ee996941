//! The server: [`App`] (built on a bound listener, served until a shutdown future) and
//! [`ServiceHandle`], a handle on an [`App`] serving in the background.
//!
//! Both servers of the kit have this shape (the broker mock's is `broker_mock::server`), and
//! both serve through [`diax_sdk::server::serve`]:
//!
//! | step | FixMyPrint |
//! |---|---|
//! | build on a bound listener and a config | [`App::build`]`(listener, config)`, or [`App::with_service`] for a [`Service`] built by hand |
//! | where it listens, how peers reach it | [`App::local_addr`], [`App::base_url`] |
//! | serve until a future completes, then drain and stop the background tasks | [`App::serve`]`(shutdown)` |
//! | serve in the background | [`App::spawn`] `->` [`ServiceHandle`] |
//! | the handle | [`ServiceHandle::local_addr`], [`ServiceHandle::base_url`], [`ServiceHandle::service`], [`ServiceHandle::shutdown`]`().await` |
//! | bind, build and spawn in one call | [`ServiceHandle::start`]`(config)` |

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use diax_sdk::server::RustlsConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Config, ServeError, Service, http, janitor, outbox, queue, worker};

/// How long connections still open after the shutdown signal may take to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// A built service, bound to its listener but not yet serving.
#[derive(Debug)]
pub struct App {
    service: Service,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    tls: Option<RustlsConfig>,
}

impl App {
    /// Opens (and migrates) the database, the result store and the HTTP client, loads the
    /// TLS files, and prepares to serve on `listener`. The public URL is
    /// `config.public_url`, or derived from the listener's address.
    ///
    /// # Errors
    /// [`ServeError`] when the database, the TLS material, the client or the listener are
    /// unusable.
    pub async fn build(
        listener: std::net::TcpListener,
        config: Config,
    ) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
        let service = Service::new(config, base_url).await?;
        Self::with_service(listener, service).await
    }

    /// Like [`App::build`] with a [`Service`] already built (its own database or result
    /// store, say).
    ///
    /// # Errors
    /// [`ServeError`] when the TLS material or the listener are unusable.
    pub async fn with_service(
        listener: std::net::TcpListener,
        service: Service,
    ) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr()?;
        let tls = match &service.config().tls {
            Some(files) => Some(diax_sdk::server::load_tls(&files.cert, &files.key).await?),
            None => None,
        };
        Ok(Self {
            service,
            listener,
            local_addr,
            tls,
        })
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service's public base URL (no trailing slash).
    #[must_use]
    pub fn base_url(&self) -> &str {
        self.service.public_url()
    }

    /// The shared state.
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Serves in background tasks of the current Tokio runtime (the HTTP(S) server, the job
    /// workers, the outbox loops and the keyring refresher) until the returned handle is shut
    /// down. Dropping the handle stops the server and the background tasks without the
    /// graceful release of [`ServiceHandle::shutdown`].
    #[must_use = "dropping the handle stops the server"]
    pub fn spawn(self) -> ServiceHandle {
        let service = self.service;
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(diax_sdk::server::serve_within(
            self.listener,
            http::router(service.clone()),
            self.tls,
            stopped(stop_rx.clone()),
            service.config().server_limits(DRAIN),
        ));
        let mut background = Vec::new();
        for i in 0..service.config().workers {
            background.push(tokio::spawn(worker::run_worker(
                service.clone(),
                i,
                stop_rx.clone(),
            )));
        }
        for i in 0..service.config().outbox_workers {
            background.push(tokio::spawn(outbox::run_delivery(
                service.clone(),
                i,
                stop_rx.clone(),
            )));
        }
        background.push(tokio::spawn(refresh_keyring(service.clone(), stop_rx)));
        tracing::info!(addr = %self.local_addr, url = %service.public_url(), instance = %service.instance_id(), "fixmyprint serving");
        ServiceHandle {
            local_addr: self.local_addr,
            base_url: service.public_url().to_owned(),
            service,
            stop,
            server: Some(server),
            background,
        }
    }

    /// Serves until `shutdown` completes, then shuts down gracefully
    /// ([`ServiceHandle::shutdown`]).
    ///
    /// # Errors
    /// None once built; the `Result` matches the broker mock's `App::serve`.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let handle = self.spawn();
        shutdown.await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        Ok(())
    }
}

/// Serves FixMyPrint on `listener` until `shutdown` completes.
///
/// # Errors
/// As [`App::build`].
pub async fn run(
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: Config,
) -> Result<(), ServeError> {
    App::build(listener, config).await?.serve(shutdown).await
}

/// A service running in the background of this process: its address, its state, and a way
/// to stop it.
#[derive(Debug)]
pub struct ServiceHandle {
    local_addr: SocketAddr,
    base_url: String,
    service: Service,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    background: Vec<JoinHandle<()>>,
}

impl ServiceHandle {
    /// Binds `config.addr` (use port 0 for a free port), builds the [`App`] and
    /// [spawns](App::spawn) it.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn start(config: Config) -> Result<Self, ServeError> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        Ok(App::build(listener, config).await?.spawn())
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service's public base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The shared state (to drive workers from tests, say).
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Graceful shutdown: stop accepting requests, let in-flight requests and jobs finish
    /// for up to `shutdown_grace`, release what is still leased by this instance, close the
    /// database.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let grace = self.service.config().shutdown_grace;
        let mut background = std::mem::take(&mut self.background);
        let waited = tokio::time::timeout(grace, async {
            for task in &mut background {
                let _ = task.await;
            }
        })
        .await;
        if waited.is_err() {
            for task in &background {
                task.abort();
            }
            tracing::warn!("shutdown grace elapsed: releasing in-flight work");
        }
        if let Err(e) = queue::release_instance(&self.service).await {
            tracing::error!(error = %e, "could not release jobs on shutdown");
        }
        if let Err(e) = outbox::release_instance(&self.service).await {
            tracing::error!(error = %e, "could not release outbox messages on shutdown");
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(grace + DRAIN, server).await {
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
                Ok(_) => {}
                Err(_) => tracing::warn!("server did not stop in time"),
            }
        }
        self.service.db().close().await;
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn refresh_keyring(service: Service, mut stop: watch::Receiver<bool>) {
    let every = service.config().keyring_refresh;
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = service.reload_keyring().await {
            tracing::warn!(error = %e, "keyring refresh failed");
        }
        let _ = service
            .replay()
            .purge_expired(diax_sdk::clock::unix_now())
            .await
            .map_err(|e| tracing::warn!(error = %e, "replay purge failed"));
        if last_sweep.elapsed() >= service.config().sweep_every {
            last_sweep = tokio::time::Instant::now();
            if let Err(e) = janitor::sweep(&service, diax_sdk::clock::unix_now()).await {
                tracing::warn!(error = %e, "sweep failed");
            }
        }
    }
}
