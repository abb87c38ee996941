//! The broker's side reduced to what a tool or test needs to send a provider job offers
//! itself, as fast as it likes: a small HTTP server that answers a provider's registration
//! (`POST /v1/providers`) with a fresh secret and acknowledges its job events, and the
//! offers, built and signed with the SDK ([`Keyring::sign`]) as the broker signs them.
//!
//! The broker mock sends one offer per job a user asks for; `loadgen` and the intake crash
//! test need thousands of offers in flight at once, so they play the broker's part in
//! sending offers, like the conformance runner does.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use diax_sdk::clock::unix_now;
use diax_sdk::wire::{
    BrokerMessage, EventAck, JobEvent, JobOffer, OfferUser, OfferedModel, ProviderRegistered,
    SecretScope,
};
use diax_sdk::{AccountId, JobId, KeyId, Keyring, MessageId, ModelId, ProviderId, Secret, UserId};

/// The broker id the stand-in gives itself.
pub const BROKER_ID: &str = "diax-standin";

type Registered = Arc<Mutex<Option<(ProviderId, Keyring)>>>;

/// The running stand-in; its server stops when this is dropped.
#[derive(Debug)]
pub struct StandIn {
    base_url: String,
    registered: Registered,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StandIn {
    /// Starts the server on an OS-assigned loopback port (plain HTTP).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let registered = Registered::default();
        let app = Router::new()
            .route("/v1/providers", post(register))
            .route("/v1/providers/{id}/events", post(event))
            .with_state((base_url.clone(), registered.clone()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url,
            registered,
            server,
        })
    }

    /// Its base URL (`http://127.0.0.1:PORT`), for the provider's `--broker-url`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The provider registered last, with the keyring it was given (`None` before).
    #[must_use]
    pub fn registered(&self) -> Option<(ProviderId, Keyring)> {
        self.registered.lock().ok()?.clone()
    }

    /// Where the provider `provider` sends its job events.
    #[must_use]
    pub fn events_url(&self, provider: &ProviderId) -> String {
        format!("{}/v1/providers/{provider}/events", self.base_url)
    }
}

/// A `job.offer` for a new broker job of a new user linked to `account`, of one STL model
/// of `size` bytes, as the broker would send it to `provider` (JSON body).
#[must_use]
pub fn offer_body(
    provider: &ProviderId,
    events_url: &str,
    account: &AccountId,
    size: u64,
) -> Vec<u8> {
    let offer = JobOffer {
        job_id: JobId::generate(),
        broker_id: BROKER_ID.into(),
        provider_id: provider.clone(),
        service_kind: "model-repair".into(),
        operation: "repair".into(),
        user: OfferUser {
            broker_user_id: UserId::generate(),
            provider_account: Some(account.clone()),
        },
        model: OfferedModel {
            model_id: ModelId::generate(),
            version: 1,
            name: "part.stl".into(),
            size,
            sha256: "00".repeat(32),
            format: "stl".into(),
        },
        params: serde_json::Value::Null,
        events_url: events_url.to_owned(),
        offered_at: unix_now(),
    };
    serde_json::to_vec(&BrokerMessage::Offer(offer)).unwrap_or_default()
}

/// `req` with the `webhook-*` headers of `body` signed under `id` now (a redelivery signs
/// the same id and body again), and the JSON content type.
pub fn signed(
    req: reqwest::RequestBuilder,
    keyring: &Keyring,
    id: &MessageId,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut req = req.header("content-type", "application/json");
    if let Ok(signature) = keyring.sign(id, unix_now(), &body) {
        for (name, value) in signature.pairs() {
            req = req.header(name, value);
        }
    }
    req.body(body)
}

async fn register(State((base_url, registered)): State<(String, Registered)>) -> Response {
    let provider_id = ProviderId::generate();
    let key_id = KeyId::generate();
    let secret = Secret::generate();
    let ring = Keyring::single(key_id.clone(), secret.clone());
    if let Ok(mut r) = registered.lock() {
        *r = Some((provider_id.clone(), ring));
    }
    (
        StatusCode::CREATED,
        axum::Json(ProviderRegistered {
            events_url: format!("{base_url}/v1/providers/{provider_id}/events"),
            provider_id,
            broker_id: BROKER_ID.into(),
            key_id,
            secret: Some(secret.expose()),
            secret_scope: SecretScope::Service,
            bound_user_id: None,
            signature_scheme: Default::default(),
            broker_key_id: None,
            broker_public_key: None,
        }),
    )
        .into_response()
}

async fn event(body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<JobEvent>(&body) {
        Ok(e) => axum::Json(EventAck {
            state: e.kind.state(),
            job_id: e.job_id,
            duplicate: false,
        })
        .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}
