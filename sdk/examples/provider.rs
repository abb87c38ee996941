//! A minimal provider endpoint: verifies the broker's signed messages with
//! [`Signed<BrokerMessage>`](diax_sdk::axum_ext::Signed) and answers them.
//!
//! ```text
//! DIAX_SECRET=whsec_… DIAX_LISTEN=127.0.0.1:8080 \
//!     cargo run -p diax-sdk --features axum --example provider
//! ```
//!
//! Offers from users without a linked account get `401 account-required`; others are
//! accepted with `202` (the same provider job for a repeated offer). Everything that fails
//! verification is refused with the matching problem before this code runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use diax_sdk::axum_ext::Signed;
use diax_sdk::wire::{BrokerMessage, InputAccepted, JobAccepted, JobState};
use diax_sdk::{JobId, KeyId, Keyring, Problem, ProviderJobId, Secret, Verifier};

#[derive(Clone)]
struct App {
    verifier: Arc<Verifier>,
    /// Where users and the broker reach this service.
    public_url: Arc<str>,
    /// Broker job id -> our job id, so a repeated offer gets the same job.
    jobs: Arc<Mutex<HashMap<JobId, ProviderJobId>>>,
}

impl FromRef<App> for Arc<Verifier> {
    fn from_ref(app: &App) -> Self {
        Arc::clone(&app.verifier)
    }
}

async fn job_url(State(app): State<App>, signed: Signed<BrokerMessage>) -> Response {
    match signed.message {
        BrokerMessage::Offer(offer) => {
            if offer.user.provider_account.is_none() {
                return Problem::account_required(format!("{}/signup", app.public_url))
                    .into_response();
            }
            let provider_job_id = {
                let mut jobs = app.jobs.lock().unwrap_or_else(|p| p.into_inner());
                jobs.entry(offer.job_id.clone())
                    .or_insert_with(ProviderJobId::generate)
                    .clone()
            };
            let status_url = format!("{}/jobs/{provider_job_id}", app.public_url);
            let accepted = JobAccepted {
                job_id: offer.job_id,
                provider_job_id,
                status_url: status_url.clone(),
                quote: None,
                state: JobState::Accepted,
            };
            let location = [(header::LOCATION, status_url)];
            (StatusCode::ACCEPTED, location, Json(accepted)).into_response()
        }
        BrokerMessage::Input(input) => {
            // A real provider would queue the download of `input.download` here.
            let answer = InputAccepted {
                job_id: input.job_id,
                provider_job_id: input.provider_job_id,
                state: JobState::Accepted,
            };
            (StatusCode::ACCEPTED, Json(answer)).into_response()
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The secret and key id the broker returned at registration.
    let secret = match std::env::var("DIAX_SECRET") {
        Ok(text) => Secret::parse(&text)?,
        Err(_) => {
            let secret = Secret::generate();
            eprintln!("DIAX_SECRET not set; using {}", secret.expose());
            secret
        }
    };
    let key_id = KeyId::parse(std::env::var("DIAX_KEY_ID").unwrap_or_else(|_| "key_1".into()))?;
    let listen = std::env::var("DIAX_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let public_url = format!("http://{}", listener.local_addr()?);
    let app = App {
        verifier: Arc::new(Verifier::new(Keyring::single(key_id, secret))),
        public_url: public_url.clone().into(),
        jobs: Arc::default(),
    };
    let router = Router::new()
        .route("/diax/jobs", post(job_url))
        .with_state(app);
    eprintln!("job_url: {public_url}/diax/jobs");
    axum::serve(listener, router).await?;
    Ok(())
}
