//! The FixMyPrint provider service: an axum app plus background workers over one database.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | settings (CLI, environment, file) and the price formula |
//! | [`db`] | SQLite/PostgreSQL pools, migrations, the shared replay store |
//! | [`accounts`] | provider-side accounts, append-only ledger, hold/capture/release |
//! | [`registration`] | broker registration, stored keyring, secret rotation |
//! | [`intake`] | signed job offers and inputs from the broker |
//! | [`inputs`] | where a job's input may be downloaded from (the fetch policy) |
//! | [`group_commit`] | the intake's writer: many messages' writes per transaction |
//! | [`queue`] | the durable job queue (claims with leases) |
//! | [`worker`] | download → heal → store → publish → callbacks ([`try_execute_job`]) |
//! | [`outbox`] | durable signed callbacks with retries ([`try_deliver_outbox`]) |
//! | [`storage`] | where results are kept |
//! | [`janitor`] | sweeping expired result credentials and files, unfinished writes |
//! | [`http`] | routes, one file per area, one shared state ([`Service`]) |
//! | [`server`] | [`App`]: build on a bound listener, serve until a shutdown future; [`ServiceHandle`] |
//!
//! Start it with [`run`] (the caller owns the listener and the shutdown signal), or build an
//! [`App`] and [spawn](App::spawn) it, which returns a [`ServiceHandle`] for tests.

use std::sync::Arc;
use std::time::Duration;

use diax_sdk::client::{ClientConfig, SignedSender};
use diax_sdk::{Verifier, VerifierConfig};
use tokio::sync::Notify;

use group_commit::GroupCommit;

pub mod accounts;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod group_commit;
pub mod http;
pub mod inputs;
pub mod intake;
pub mod janitor;
pub mod outbox;
pub mod queue;
pub mod registration;
pub mod server;
pub mod storage;
pub mod worker;

pub use config::{Config, Pricing, ServeArgs};
pub use db::{Db, DbReplayStore};
pub use outbox::{DeliveryOutcome, try_deliver_outbox};
pub use registration::{RegisterOptions, register, rotate};
pub use server::{App, ServiceHandle, run};
pub use storage::{DirStore, ResultStore, S3Settings, S3Store};
pub use worker::{ExecutionOutcome, try_execute_job};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Db(#[from] db::DbError),
    /// A query failed during start-up.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Files, sockets, TLS material.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The outgoing HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] diax_sdk::client::ClientError),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The result store is unusable (the start-up probe failed).
    #[error("{0}")]
    Storage(String),
}

/// The stored keyring plus the configured trusted broker keys (`key_trusted_1`, …), which
/// verify broker messages only (a public key signs nothing). Before registration the ring
/// stays empty: with no key of its own the service could not sign a single event.
fn with_trusted(mut ring: diax_sdk::Keyring, config: &Config) -> diax_sdk::Keyring {
    if ring.is_empty() {
        return ring;
    }
    for (n, key) in config.trusted_broker_keys.iter().enumerate() {
        if let Ok(id) = diax_sdk::KeyId::parse(format!("key_trusted_{}", n + 1)) {
            ring.insert(id, *key, None);
        }
    }
    ring
}

/// The state every handler and worker shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    db: Db,
    public_url: String,
    verifier: Arc<Verifier>,
    replay: DbReplayStore,
    group_commit: GroupCommit,
    http: reqwest::Client,
    inputs: inputs::InputFetchers,
    sender: SignedSender,
    storage: Arc<dyn ResultStore>,
    instance_id: String,
    wake_jobs: Notify,
    wake_outbox: Notify,
}

impl Service {
    /// Opens the database (migrating it), the result store (`{data_dir}/results`, or the
    /// bucket of [`Config::storage`], probed with a write), and the HTTP client; `public_url`
    /// is the base URL peers reach this service at.
    ///
    /// # Errors
    /// [`ServeError`].
    pub async fn new(config: Config, public_url: String) -> Result<Self, ServeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        std::fs::create_dir_all(config.data_dir.join("downloads"))?;
        let db = Db::connect(&config.database_url()).await?;
        let storage: Arc<dyn ResultStore> = match &config.storage {
            None => Arc::new(DirStore::new(config.data_dir.join("results"))?),
            Some(s3) => Arc::new(
                S3Store::connect(s3.clone(), config.http_timeout)
                    .await
                    .map_err(ServeError::Storage)?,
            ),
        };
        tracing::info!(store = %storage.describe(), "result store ready");
        Self::with_parts(config, public_url, db, storage).await
    }

    /// Like [`Service::new`] with an open database and a result store of your choice.
    ///
    /// # Errors
    /// [`ServeError`].
    pub async fn with_parts(
        config: Config,
        public_url: String,
        db: Db,
        storage: Arc<dyn ResultStore>,
    ) -> Result<Self, ServeError> {
        let mut roots = Vec::new();
        for path in &config.ca_certs {
            roots.push(std::fs::read(path)?);
        }
        let client_config = ClientConfig {
            timeout: config.http_timeout,
            connect_timeout: config.http_timeout.min(Duration::from_secs(10)),
            extra_root_certs_pem: roots,
            user_agent: concat!("fixmyprint/", env!("CARGO_PKG_VERSION")).into(),
            ..ClientConfig::default()
        };
        let http = diax_sdk::client::http_client(&client_config)?;
        let inputs = inputs::InputFetchers::new(&config, &client_config)?;
        let public_url = public_url.trim_end_matches('/').to_owned();
        let group_commit =
            GroupCommit::start_writers(db.clone(), public_url.clone(), config.intake_writers);
        let replay = DbReplayStore::new(db.clone(), group_commit.clone());
        let keyring = with_trusted(registration::load_keyring(&db).await?, &config);
        let verifier = Verifier::new(keyring)
            .with_replay_store(Arc::new(replay.clone()))
            .with_config(VerifierConfig {
                tolerance_secs: config.tolerance_secs,
                max_body_bytes: config.max_body_bytes,
                ..VerifierConfig::default()
            });
        Ok(Self {
            inner: Arc::new(Inner {
                public_url,
                group_commit,
                sender: SignedSender::new(http.clone()),
                http,
                inputs,
                verifier: Arc::new(verifier),
                replay,
                db,
                storage,
                instance_id: diax_sdk::util::random_token("inst_", 12),
                wake_jobs: Notify::new(),
                wake_outbox: Notify::new(),
                config,
            }),
        })
    }

    /// Settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Public base URL (no trailing slash).
    #[must_use]
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// The verifier of incoming signed messages.
    #[must_use]
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.inner.verifier
    }

    /// The shared replay store (also keeps answers for redeliveries).
    #[must_use]
    pub fn replay(&self) -> &DbReplayStore {
        &self.inner.replay
    }

    /// The intake's group-commit writer.
    #[must_use]
    pub fn group_commit(&self) -> &GroupCommit {
        &self.inner.group_commit
    }

    /// The outgoing HTTP client.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The fetchers of job inputs, under the input fetch policy.
    #[must_use]
    pub fn inputs(&self) -> &inputs::InputFetchers {
        &self.inner.inputs
    }

    /// The signed-callback sender.
    #[must_use]
    pub fn sender(&self) -> &SignedSender {
        &self.inner.sender
    }

    /// The result store.
    #[must_use]
    pub fn storage(&self) -> &Arc<dyn ResultStore> {
        &self.inner.storage
    }

    /// This instance's id (prefix of its lease owners).
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Reloads the keyring from the database into the verifier (after registration or a
    /// rotation, possibly by another instance), with the configured
    /// [`trusted_broker_keys`](Config::trusted_broker_keys) once registered.
    ///
    /// # Errors
    /// Database errors.
    pub async fn reload_keyring(&self) -> Result<(), sqlx::Error> {
        let ring = registration::load_keyring(&self.inner.db).await?;
        self.inner
            .verifier
            .set_keyring(with_trusted(ring, &self.inner.config));
        Ok(())
    }

    /// Wakes this instance's idle job workers.
    pub fn wake_workers(&self) {
        self.inner.wake_jobs.notify_waiters();
    }

    /// Wakes this instance's idle outbox loops.
    pub fn wake_outbox(&self) {
        self.inner.wake_outbox.notify_waiters();
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.public_url)
    }
}
