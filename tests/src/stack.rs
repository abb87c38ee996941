//! The whole kit running in this process: the broker mock and FixMyPrint, each on an
//! OS-assigned loopback port, over HTTPS with a generated CA, with their data in a temporary
//! directory.

use std::time::Duration;

use broker_mock::{Broker, BrokerApi};
use fixmyprint::service::ServiceHandle;
use fixmyprint::service::config::TlsFiles;

use crate::pg::TempDatabase;
use crate::pki::Pki;
use crate::s3::Cuttable;

/// Where FixMyPrint keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderDb {
    /// A SQLite file in the temporary data directory (the default, zero setup).
    Sqlite,
    /// A fresh database on the PostgreSQL server of [`crate::pg::admin_url`].
    Postgres,
}

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// FixMyPrint's database.
    pub provider_db: ProviderDb,
    /// Job workers in FixMyPrint.
    pub workers: usize,
    /// FixMyPrint's result store: `None` = its data directory; or a bucket, whose endpoint's
    /// origin the broker is then told to trust for results (`--result-store-origin`).
    pub storage: Option<fixmyprint::service::S3Settings>,
    /// Put a relay the test can cut ([`Stack::relay`]) in front of the broker: the broker
    /// announces the relay's address, so FixMyPrint reaches it (registration, keyring,
    /// model downloads, job events) only through the relay, while [`Stack::broker_api`]
    /// talks to the broker directly.
    pub broker_relay: bool,
    /// The broker's `max_models_per_user` (its default, 100, unless set).
    pub broker_max_models_per_user: Option<u32>,
    /// The broker's model store: `None` = its database; or a bucket (`--storage s3://…`).
    pub broker_storage: Option<BrokerStorage>,
}

/// A bucket for the broker's models, on an S3-compatible server that takes the test
/// credentials (`testing`/`testing`).
#[derive(Debug, Clone)]
pub struct BrokerStorage {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// The server, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            provider_db: ProviderDb::Sqlite,
            workers: 2,
            storage: None,
            broker_relay: false,
            broker_max_models_per_user: None,
            broker_storage: None,
        }
    }
}

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Temporary files or sockets.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// The broker mock did not start.
    #[error("broker mock: {0}")]
    Broker(#[from] broker_mock::StartError),
    /// FixMyPrint did not start.
    #[error("fixmyprint: {0}")]
    Provider(#[from] fixmyprint::service::ServeError),
    /// The PostgreSQL database could not be created.
    #[error("postgresql: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] diax_sdk::client::ClientError),
}

/// The running kit.
#[derive(Debug)]
pub struct Stack {
    /// The broker mock.
    pub broker: Broker,
    /// FixMyPrint.
    pub provider: ServiceHandle,
    /// The certificates every server uses.
    pub pki: Pki,
    /// A client that trusts the generated CA and follows no redirects.
    pub http: reqwest::Client,
    /// The broker's user API.
    pub broker_api: BrokerApi,
    /// The relay in front of the broker, with [`StackOptions::broker_relay`].
    pub relay: Option<Cuttable>,
    pg: Option<TempDatabase>,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the broker mock and FixMyPrint.
    ///
    /// # Errors
    /// [`StackError`].
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        diax_sdk::client::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("fixmyprint-kit-")
            .tempdir()?;
        let pki = Pki::generate(dir.path())?;

        let relay_listener = if options.broker_relay {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        } else {
            None
        };
        let public_url = match &relay_listener {
            Some(l) => Some(format!("https://{}", l.local_addr()?)),
            None => None,
        };
        let broker = Broker::start(broker_mock::Config {
            tls_cert: Some(pki.server_cert.clone()),
            tls_key: Some(pki.server_key.clone()),
            ca_certs: vec![pki.ca_cert.clone()],
            // Every party runs on this machine.
            allow_private_addresses: true,
            notify_interval_ms: 50,
            notify_backoff_ms: 100,
            retry_backoff_ms: 50,
            public_url,
            max_models_per_user: options
                .broker_max_models_per_user
                .unwrap_or(broker_mock::Config::default().max_models_per_user),
            result_store_origins: options
                .storage
                .iter()
                .filter_map(|s| s.endpoint.clone())
                .collect(),
            storage: options
                .broker_storage
                .as_ref()
                .map_or_else(|| "db".to_owned(), |b| b.url.clone()),
            s3: diax_sdk::s3::S3Args {
                endpoint: options.broker_storage.as_ref().map(|b| b.endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                session_token: None,
            },
            ..broker_mock::Config::default()
        })
        .await?;
        let relay = match relay_listener {
            Some(l) => Some(Cuttable::start_on(l, broker.local_addr().to_string())?),
            None => None,
        };

        let pg = match options.provider_db {
            ProviderDb::Sqlite => None,
            ProviderDb::Postgres => Some(TempDatabase::create().await?),
        };
        let config = fixmyprint::service::Config {
            database_url: pg.as_ref().map(|db| db.url().to_owned()),
            data_dir: dir.path().join("fixmyprint"),
            broker_url: Some(broker.base_url().to_owned()),
            tls: Some(TlsFiles {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
            }),
            ca_certs: vec![pki.ca_cert.clone()],
            workers: options.workers,
            outbox_workers: 1,
            poll_interval: Duration::from_millis(50),
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(2),
            keyring_refresh: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            dev_top_up: true,
            // The broker of the stack is on loopback.
            allow_private_inputs: true,
            storage: options.storage.clone(),
            ..fixmyprint::service::Config::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let provider = fixmyprint::service::App::build(listener, config)
            .await?
            .spawn();

        let http = diax_sdk::client::http_client(&diax_sdk::client::ClientConfig {
            extra_root_certs_pem: vec![pki.ca_pem.clone()],
            timeout: Duration::from_secs(60),
            ..diax_sdk::client::ClientConfig::default()
        })?;
        let direct = format!("https://{}", broker.local_addr());
        let broker_api = BrokerApi::new(http.clone(), &direct);
        Ok(Self {
            broker,
            provider,
            pki,
            http,
            broker_api,
            relay,
            pg,
            dir,
        })
    }

    /// The temporary directory holding certificates and FixMyPrint's data.
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops both servers and removes every file (and the PostgreSQL database).
    pub async fn shutdown(self) {
        self.provider.shutdown().await;
        self.broker.shutdown().await;
        if let Some(pg) = self.pg
            && let Err(e) = pg.drop_database().await
        {
            tracing::warn!(error = %e, "could not drop the test database");
        }
        drop(self.dir);
    }
}
