//! Serving the router over plain HTTP or HTTPS (rustls, ring), with graceful shutdown.

use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::TlsFiles;

async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Loads a PEM certificate chain and key into a rustls server configuration.
///
/// # Errors
/// When the files cannot be read or do not hold a usable certificate and key.
pub async fn load(files: &TlsFiles) -> std::io::Result<RustlsConfig> {
    diax_sdk::client::install_crypto_provider();
    RustlsConfig::from_pem_file(&files.cert, &files.key).await
}

/// Serves `app` on `listener` (HTTPS when `tls` is set) until `stop` turns true; open
/// connections then get a few seconds to finish.
///
/// # Errors
/// When the TLS material cannot be loaded or the listener cannot be converted.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    match tls {
        None => {
            let server = axum::serve(listener, app).with_graceful_shutdown(stopped(stop));
            Ok(tokio::spawn(async move { server.await }))
        }
        Some(files) => {
            let config = load(&files).await?;
            let std_listener = listener.into_std()?;
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(std_listener, config)?.handle(handle.clone());
            tokio::spawn(async move {
                stopped(stop).await;
                handle.graceful_shutdown(Some(Duration::from_secs(5)));
            });
            Ok(tokio::spawn(async move {
                server.serve(app.into_make_service()).await
            }))
        }
    }
}
