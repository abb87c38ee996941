//! Serving the router over plain HTTP or HTTPS (rustls, ring), within the SDK's connection
//! bounds ([`diax_sdk::serve`]), with graceful shutdown.

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use diax_sdk::serve::ServerLimits;
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

/// Serves `app` on `listener` (HTTPS when `tls` is set) within `limits` (a deadline for each
/// request's head, a connection cap) until `stop` turns true; open connections then get
/// `limits.shutdown_grace` to finish.
///
/// # Errors
/// When the TLS material cannot be loaded or the listener cannot be converted.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    limits: ServerLimits,
    stop: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    let tls = match tls {
        Some(files) => Some(load(&files).await?),
        None => None,
    };
    let listener = listener.into_std()?;
    Ok(tokio::spawn(diax_sdk::serve::serve(
        listener,
        app,
        tls,
        limits,
        stopped(stop),
    )))
}
