//! Serving (feature `server`): an axum [`Router`] on a bound listener, over HTTP or HTTPS
//! (rustls with ring), until a shutdown future completes.
//!
//! Both servers of the kit (the reference provider and the broker mock) start this way: bind
//! a listener (port 0 in tests), build the app, and [`serve`] it until their shutdown signal.
//! After the signal the server stops accepting, lets requests in flight finish, and closes
//! connections still open after the drain time (an idle keep-alive connection or a request
//! that never completes cannot hold the shutdown up).
//!
//! Every connection is bounded ([`ServerLimits`]): a client must send each request's head
//! within a deadline or its connection is closed (a slowloris client cannot hold it), and at
//! most a fixed number of connections are served at once ([`ConnectionLimit`]; more wait in
//! the listen backlog). [`serve`] applies the defaults, [`serve_within`] the caller's.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let app: Router = Router::new().route("/healthz", get(|| async { "ok" }));
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! // HTTPS instead: `Some(diax_sdk::server::load_tls("cert.pem", "key.pem").await?)`.
//! diax_sdk::server::serve(listener, app, None, shutdown, Duration::from_secs(5)).await
//! # }
//! ```

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
pub use axum_server::tls_rustls::RustlsConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::TimeoutBody;

/// Bounds of a server's connections.
///
/// ```
/// use std::time::Duration;
/// let limits = diax_sdk::server::ServerLimits {
///     max_connections: 64,
///     ..diax_sdk::server::ServerLimits::default()
/// };
/// assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A connection must deliver each request's complete head (request line and headers)
    /// within this, the first one counted from the accept (after the TLS handshake, which
    /// has its own 10 s bound), or it is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one
    /// closes. Default 1,024.
    pub max_connections: usize,
    /// After the shutdown signal, how long open connections may still finish before they
    /// are closed. Default 5 s.
    pub drain: Duration,
    /// A request body that stalls (no bytes for this long while the handler waits for
    /// them) fails with a read error, so a client that announces a body and never sends it
    /// holds neither its handler nor what the handler reserved for it. Default 30 s.
    pub body_idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain: Duration::from_secs(5),
            body_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Loads a PEM certificate chain and private key into a server TLS configuration (rustls
/// with ring, installed as the process's crypto provider if none is).
///
/// # Errors
/// When a file cannot be read or does not hold a usable certificate chain and key.
pub async fn load_tls(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> std::io::Result<RustlsConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(cert, key).await
}

/// Serves `router` on `listener` (HTTPS with `tls`, plain HTTP/1.1 and HTTP/2 without) until
/// `shutdown` completes; then stops accepting and gives open connections `drain` to finish
/// before closing them. Returns when every connection is closed. The other bounds are
/// [`ServerLimits::default`]; [`serve_within`] takes them all.
///
/// # Errors
/// When the listener cannot be used (it is switched to non-blocking mode here) or accepting
/// fails.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let limits = ServerLimits {
        drain,
        ..ServerLimits::default()
    };
    serve_within(listener, router, tls, shutdown, limits).await
}

/// [`serve`] within `limits`: a deadline for each request's head, an idle timeout for each
/// request's body, a cap on connections served at once, and the drain time after
/// `shutdown`.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use diax_sdk::server::{ServerLimits, serve_within};
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let app = axum::Router::new();
/// let limits = ServerLimits { max_connections: 256, ..ServerLimits::default() };
/// serve_within(listener, app, None, std::future::pending(), limits).await
/// # }
/// ```
///
/// # Errors
/// As [`serve`].
pub async fn serve_within(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let signal = handle.clone();
    let drain = limits.drain;
    let watcher = tokio::spawn(async move {
        shutdown.await;
        signal.graceful_shutdown(Some(drain));
    });
    let idle = limits.body_idle_timeout;
    let router = router.layer(axum::middleware::map_request(
        move |request: axum::extract::Request| async move {
            request.map(|body| axum::body::Body::new(TimeoutBody::new(idle, body)))
        },
    ));
    let service = ConnectionLimit::new(router.into_make_service(), limits.max_connections);
    let head = limits.header_read_timeout;
    let result = match tls {
        Some(tls) => {
            let mut server = axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .first_request_timeout(head);
            server.http_builder().http1().header_read_timeout(head);
            server.serve(service).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .handle(handle)
                .first_request_timeout(head);
            server.http_builder().http1().header_read_timeout(head);
            server.serve(service).await
        }
    };
    watcher.abort();
    result
}

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A make-service that is ready only while fewer than `max` connections are open: each
/// connection's service holds a permit until the connection ends. The server's accept
/// loop waits on it, so connections over the cap wait in the listen backlog.
///
/// ```
/// use std::net::SocketAddr;
/// use tower::Service;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let router = axum::Router::new();
/// let mut make = diax_sdk::server::ConnectionLimit::new(router.into_make_service(), 1);
/// let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
/// std::future::poll_fn(|cx| Service::<SocketAddr>::poll_ready(&mut make, cx)).await.unwrap();
/// let first = make.call(addr).await.unwrap();
/// assert_eq!(make.open(), 1);
/// drop(first); // the connection ended
/// assert_eq!(make.open(), 0);
/// # });
/// ```
pub struct ConnectionLimit<M> {
    inner: M,
    semaphore: Arc<Semaphore>,
    max: usize,
    permit: Option<OwnedSemaphorePermit>,
    acquiring: Option<Acquire>,
}

impl<M: std::fmt::Debug> std::fmt::Debug for ConnectionLimit<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimit")
            .field("inner", &self.inner)
            .field("max", &self.max)
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

impl<M: Clone> Clone for ConnectionLimit<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            semaphore: Arc::clone(&self.semaphore),
            max: self.max,
            permit: None,
            acquiring: None,
        }
    }
}

impl<M> ConnectionLimit<M> {
    /// At most `max` (at least 1) connections at once.
    #[must_use]
    pub fn new(inner: M, max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner,
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            permit: None,
            acquiring: None,
        }
    }

    /// Connections open now (each holding a permit; a permit taken by a ready make-service
    /// that has not been called yet counts too).
    #[must_use]
    pub fn open(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

impl<M, T> tower::Service<T> for ConnectionLimit<M>
where
    M: tower::Service<T>,
    M::Future: Send + 'static,
{
    type Response = Limited<M::Response>;
    type Error = M::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, M::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while self.permit.is_none() {
            let semaphore = Arc::clone(&self.semaphore);
            let acquiring = self.acquiring.get_or_insert_with(|| {
                Box::pin(async move { semaphore.acquire_owned().await.ok() })
            });
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    self.acquiring = None;
                    // The semaphore is never closed; `None` cannot happen, but retrying is right.
                    self.permit = permit;
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: T) -> Self::Future {
        let permit = self.permit.take().map(Arc::new);
        let future = self.inner.call(target);
        Box::pin(async move {
            let inner = future.await?;
            Ok(Limited {
                inner,
                _permit: permit,
            })
        })
    }
}

/// The service of one connection under a [`ConnectionLimit`]: the permit is given back when
/// the connection (and every clone of this service) is gone.
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    _permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl<S, R> tower::Service<R> for Limited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.inner.call(request)
    }
}
