//! Serving (feature `server`): an axum [`Router`] on a bound listener, over HTTP or HTTPS
//! (rustls with ring), until a shutdown future completes.
//!
//! Both servers of the kit (the reference provider and the broker mock) start this way: bind
//! a listener (port 0 in tests), build the app, and [`serve`] it until their shutdown signal.
//! After the signal the server stops accepting, lets requests in flight finish, and closes
//! connections still open after the drain time (an idle keep-alive connection or a request
//! that never completes cannot hold the shutdown up).
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
use std::time::Duration;

use axum::Router;
pub use axum_server::tls_rustls::RustlsConfig;

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
/// before closing them. Returns when every connection is closed.
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
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let signal = handle.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        signal.graceful_shutdown(Some(drain));
    });
    let service = router.into_make_service();
    let result = match tls {
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(service)
                .await
        }
    };
    watcher.abort();
    result
}
