//! Gareth's own notification endpoint: an HTTPS server that verifies the broker's signed
//! notifications with Gareth's notification secret and keeps them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use diax_sdk::wire::Notification;
use diax_sdk::{KeyId, Keyring, Problem, ProblemType, Secret, Verifier};
use tokio::sync::Notify;

use crate::pki::Pki;

#[derive(Debug, Default)]
struct Shared {
    verifier: Mutex<Option<Arc<Verifier>>>,
    received: Mutex<Vec<Notification>>,
    deliveries: Mutex<u64>,
    arrived: Notify,
}

/// A running notification endpoint.
#[derive(Debug)]
pub struct Inbox {
    url: String,
    shared: Arc<Shared>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let verifier = shared
        .verifier
        .lock()
        .map_err(|_| Problem::new(ProblemType::Internal))?
        .clone()
        // Not configured yet: ask the broker to come back later.
        .ok_or_else(|| Problem::new(ProblemType::ServiceUnavailable))?;
    let headers = diax_sdk::axum_ext::raw_headers(&headers);
    let (_, delivery) = verifier
        .verify(&headers, &body)
        .await
        .map_err(|e| Problem::from(&e))?;
    let note: Notification = serde_json::from_slice(&body)
        .map_err(|e| Problem::new(ProblemType::InvalidRequest).with_detail(e.to_string()))?;
    if let Ok(mut n) = shared.deliveries.lock() {
        *n += 1;
    }
    if delivery == diax_sdk::Delivery::First
        && let Ok(mut list) = shared.received.lock()
    {
        list.push(note);
    }
    shared.arrived.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

impl Inbox {
    /// Starts the endpoint over TLS on a free loopback port.
    ///
    /// # Errors
    /// When the certificate cannot be loaded or the port bound.
    pub async fn start(pki: &Pki) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/notifications", post(receive))
            .with_state(Arc::clone(&shared));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let tls =
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&pki.server_cert, &pki.server_key)
                .await?;
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::warn!(error = %e, "inbox stopped with an error");
            }
        });
        Ok(Self {
            url: format!("https://localhost:{}/notifications", addr.port()),
            shared,
            handle,
            task,
        })
    }

    /// The URL to give the broker as `notification_url`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets the secret the broker signs with (known only once the user exists).
    ///
    /// # Errors
    /// When the secret is not a valid `whsec_` secret.
    pub fn set_secret(&self, secret: &str) -> Result<(), diax_sdk::SecretError> {
        let ring = Keyring::single(
            KeyId::parse("key_notifications").unwrap_or_else(|_| KeyId::generate()),
            Secret::parse(secret)?,
        );
        if let Ok(mut v) = self.shared.verifier.lock() {
            *v = Some(Arc::new(Verifier::new(ring)));
        }
        Ok(())
    }

    /// The notifications received and verified so far (each once).
    #[must_use]
    pub fn received(&self) -> Vec<Notification> {
        self.shared
            .received
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Deliveries accepted, redeliveries included.
    #[must_use]
    pub fn deliveries(&self) -> u64 {
        self.shared.deliveries.lock().map(|n| *n).unwrap_or(0)
    }

    /// Waits until a notification satisfying `pred` arrived, or `timeout` passed.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Notification) -> bool,
    ) -> Option<Notification> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            if let Some(n) = self.received().into_iter().find(|n| pred(n)) {
                return Some(n);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.received().into_iter().find(|n| pred(n));
            }
        }
    }

    /// Stops the endpoint.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = self.task.await;
    }
}
