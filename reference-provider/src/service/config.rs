//! Settings of `fixmyprint serve`: command line, environment (`FIXMYPRINT_*`), an optional
//! TOML or JSON file, and defaults, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Prices: `base + per_mib × started MiB of the model`, in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// Fixed part per job (default 50).
    pub base: i64,
    /// Per started MiB of the input model (default 10).
    pub per_mib: i64,
    /// ISO 4217 currency of every account and quote (default `EUR`).
    pub currency: String,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            base: 50,
            per_mib: 10,
            currency: "EUR".into(),
        }
    }
}

impl Pricing {
    /// The price of a job on a model of `size` bytes: `base + per_mib × ⌈size / 1 MiB⌉`.
    #[must_use]
    pub fn quote(&self, size: u64) -> diax_sdk::Quote {
        let mib = size.div_ceil(1024 * 1024);
        let amount = self.base.saturating_add(
            self.per_mib
                .saturating_mul(i64::try_from(mib).unwrap_or(i64::MAX)),
        );
        diax_sdk::Quote::new(amount, self.currency.clone())
    }
}

/// A TLS certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Default [`Config::intake_writers`].
pub const DEFAULT_INTAKE_WRITERS: usize = 2;

/// Most [`Config::intake_writers`] (each may hold a pooled PostgreSQL connection).
pub const MAX_INTAKE_WRITERS: usize = 8;

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (used by the binary and [`crate::service::ServiceHandle::start`];
    /// [`crate::service::App::build`] takes a bound listener).
    pub addr: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`; `None` = `sqlite://{data_dir}/fixmyprint.db`.
    pub database_url: Option<String>,
    /// Downloads, results and the default SQLite file. Share it between instances.
    pub data_dir: PathBuf,
    /// The broker's base URL (for `register`/`rotate`; events go to the registered URL).
    pub broker_url: Option<String>,
    /// The URL the broker and users reach this service at; `None` = derived from the
    /// listener's address.
    pub public_url: Option<String>,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
    /// Extra trusted CA certificates (PEM files) for outgoing calls.
    pub ca_certs: Vec<PathBuf>,
    /// Job workers in this instance (0: none, drive [`crate::service::try_execute_job`]).
    pub workers: usize,
    /// Outbox delivery loops in this instance (0: none).
    pub outbox_workers: usize,
    /// Intake writer tasks on PostgreSQL, each committing its own batches of signed
    /// messages (SQLite has one writer whatever this says). See
    /// [`crate::service::group_commit`].
    pub intake_writers: usize,
    /// How often idle workers look for work.
    pub poll_interval: Duration,
    /// A claimed job is claimable again this long after its last heartbeat.
    pub job_lease: Duration,
    /// A claimed outbox message is claimable again after this.
    pub outbox_lease: Duration,
    /// First retry delay of a callback.
    pub retry_initial_backoff: Duration,
    /// Longest retry delay of a callback.
    pub retry_max_backoff: Duration,
    /// A job claimed this many times without finishing fails.
    pub max_job_attempts: u32,
    /// On shutdown, how long in-flight jobs may run before they are released.
    pub shutdown_grace: Duration,
    /// Lifetime of the credential that lets the broker fetch a result.
    pub result_ttl: Duration,
    /// Largest model accepted (offer size and download cap).
    pub max_model_bytes: u64,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Signature timestamp tolerance, seconds.
    pub tolerance_secs: u64,
    /// How often the keyring is reloaded from the database (rotation by another instance).
    pub keyring_refresh: Duration,
    /// Timeout of outgoing HTTP calls.
    pub http_timeout: Duration,
    /// Longest a job's repair may take; a model that needs more fails with `model-invalid`.
    pub heal_budget: Duration,
    /// The repair picture offered with each result (`job.completed`'s `picture`): drawn only
    /// for models of at most this many facets (about 0.5 s per million on two cores); `0`
    /// draws none. A model over it completes without a picture.
    pub picture_max_facets: u64,
    /// How often each instance sweeps (expired results, unfinished writes, jobs whose input
    /// never came); the first sweep is one interval after start.
    pub sweep_every: Duration,
    /// An accepted job whose input has not arrived this long after the offer is failed
    /// (`upstream-failed`) and its hold released.
    pub input_timeout: Duration,
    /// Whether `POST /v1/accounts/me/top-up` adds money with no payment (a development
    /// stand-in for a payment system; off by default, then it answers `403 forbidden`).
    pub dev_top_up: bool,
    /// The operator's key: whoever presents it may credit any account
    /// (`POST /v1/operator/accounts/{account_id}/top-up`), as a payment system does once a
    /// payment settles. `None` (the default): no one may.
    pub operator_key: Option<OperatorKey>,
    /// A connection must send each request's head within this (slowloris), or it is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Broker public keys (`whpk_…`) trusted in addition to the registered broker's keys,
    /// once registered: how the conformance runner, playing the broker with a key pair of
    /// its own, reaches a provider registered with `ed25519`. Whoever holds the matching
    /// secret key can send offers and inputs, so list only keys you made.
    pub trusted_broker_keys: Vec<diax_sdk::PublicKey>,
    /// Prices.
    pub pricing: Pricing,
    /// Where results go: `None` = files in `{data_dir}/results` (the default), or an
    /// S3-compatible bucket (`--storage s3://bucket/prefix`).
    pub storage: Option<super::storage::S3Settings>,
    /// Origins (`scheme://host[:port]`) a job's input may be downloaded from. Empty (the
    /// default): any public `https` origin the signed `job.input` names. Listed: only those,
    /// e.g. the broker's origin and its model store's (for presigned inputs); another
    /// origin fails the job with `download-failed` before any request. A listed origin
    /// whose host is a loopback or private IP address (or `localhost`) is reached there:
    /// listing it is the explicit permission.
    pub input_origins: Vec<String>,
    /// Let job inputs come from loopback, private and link-local addresses on any origin
    /// (plain `http` to loopback included): development set-ups on one machine. Off by
    /// default: an input URL that is, or resolves to, such an address fails the job with
    /// `download-failed` before any connection.
    pub allow_private_inputs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8480)),
            database_url: None,
            data_dir: PathBuf::from("fixmyprint-data"),
            broker_url: None,
            public_url: None,
            tls: None,
            ca_certs: Vec::new(),
            workers: 2,
            outbox_workers: 1,
            intake_writers: DEFAULT_INTAKE_WRITERS,
            poll_interval: Duration::from_secs(1),
            job_lease: Duration::from_secs(60),
            outbox_lease: Duration::from_secs(30),
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(60),
            max_job_attempts: 5,
            shutdown_grace: Duration::from_secs(10),
            result_ttl: Duration::from_secs(24 * 3600),
            max_model_bytes: 256 * 1024 * 1024,
            max_body_bytes: 1024 * 1024,
            tolerance_secs: 300,
            keyring_refresh: Duration::from_secs(5),
            http_timeout: Duration::from_secs(30),
            heal_budget: Duration::from_secs(30),
            picture_max_facets: 5_000_000,
            input_timeout: Duration::from_secs(3600),
            sweep_every: super::janitor::SWEEP_EVERY,
            dev_top_up: false,
            operator_key: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            trusted_broker_keys: Vec::new(),
            pricing: Pricing::default(),
            storage: None,
            input_origins: Vec::new(),
            allow_private_inputs: false,
        }
    }
}

impl Config {
    /// The database URL in force.
    #[must_use]
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.data_dir.join("fixmyprint.db").display())
        })
    }

    /// The bounds of the HTTP server: `header_read_timeout`, `max_connections`, and `drain`
    /// for connections still open at shutdown.
    #[must_use]
    pub fn server_limits(&self, drain: Duration) -> diax_sdk::server::ServerLimits {
        diax_sdk::server::ServerLimits {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            drain,
            ..diax_sdk::server::ServerLimits::default()
        }
    }

    /// The SDK retry policy of event callbacks and model downloads: from
    /// `retry_initial_backoff`, doubling up to `retry_max_backoff`, with no attempt limit
    /// (the outbox and the job queue keep trying; jobs stop at `max_job_attempts`).
    #[must_use]
    pub fn retry_policy(&self) -> diax_sdk::client::RetryPolicy {
        diax_sdk::client::RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: self.retry_initial_backoff,
            max_backoff: self.retry_max_backoff,
            ..diax_sdk::client::RetryPolicy::default()
        }
    }
}

/// The settings file (`--config FILE`, TOML or JSON by extension). Every member is optional;
/// durations are in milliseconds.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub addr: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub broker_url: Option<String>,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ca_cert: Option<Vec<PathBuf>>,
    pub workers: Option<usize>,
    pub outbox_workers: Option<usize>,
    pub intake_writers: Option<usize>,
    pub poll_interval_ms: Option<u64>,
    pub job_lease_ms: Option<u64>,
    pub outbox_lease_ms: Option<u64>,
    pub retry_initial_backoff_ms: Option<u64>,
    pub retry_max_backoff_ms: Option<u64>,
    pub max_job_attempts: Option<u32>,
    pub shutdown_grace_ms: Option<u64>,
    pub result_ttl_secs: Option<u64>,
    pub max_model_bytes: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub tolerance_secs: Option<u64>,
    pub keyring_refresh_ms: Option<u64>,
    pub http_timeout_ms: Option<u64>,
    pub heal_budget_ms: Option<u64>,
    pub picture_max_facets: Option<u64>,
    pub input_timeout_secs: Option<u64>,
    pub sweep_every_secs: Option<u64>,
    pub dev_top_up: Option<bool>,
    pub operator_key: Option<Redacted>,
    pub header_read_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub trusted_broker_keys: Option<Vec<String>>,
    pub input_origins: Option<Vec<String>>,
    pub allow_private_inputs: Option<bool>,
    pub price_base: Option<i64>,
    pub price_per_mib: Option<i64>,
    pub currency: Option<String>,
    /// `s3://bucket[/prefix]` (or `dir`, the default).
    pub storage: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Redacted>,
    pub s3_session_token: Option<Redacted>,
    pub s3_multipart_threshold: Option<usize>,
}

/// A secret setting (the bucket's secret key): parsed and deserialized as a string, never
/// printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The operator's key (see [`Config::operator_key`]): at least [`OperatorKey::MIN_LEN`]
/// printable ASCII characters, never printed by `Debug`, compared in constant time.
///
/// ```
/// use fixmyprint::service::config::OperatorKey;
///
/// let key = OperatorKey::parse("op-4f7c1e9a2b8d6035e1c7a9f2")?;
/// assert!(key.matches("op-4f7c1e9a2b8d6035e1c7a9f2"));
/// assert!(!key.matches("op-4f7c1e9a2b8d6035e1c7a9f3"));
/// assert_eq!(format!("{key:?}"), "OperatorKey([redacted])");
/// assert!(OperatorKey::parse("short").is_err());
/// # Ok::<(), fixmyprint::service::config::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct OperatorKey(String);

impl OperatorKey {
    /// Shortest key accepted.
    pub const MIN_LEN: usize = 24;

    /// Checks a configured key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] (naming the rule, never the value) for a key shorter than
    /// [`Self::MIN_LEN`] or with characters outside printable ASCII.
    pub fn parse(key: &str) -> Result<Self, ConfigError> {
        let key = key.trim();
        if key.len() < Self::MIN_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(format!(
                "operator key: expected at least {} printable ASCII characters without spaces",
                Self::MIN_LEN
            )));
        }
        Ok(Self(key.to_owned()))
    }

    /// Whether `presented` is this key (in constant time: both are hashed first, and the
    /// digests compared with `subtle`).
    #[must_use]
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let want = sha2::Sha256::digest(self.0.as_bytes());
        let got = sha2::Sha256::digest(presented.as_bytes());
        want.as_slice().ct_eq(got.as_slice()).into()
    }
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey([redacted])")
    }
}

/// Why settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file did not parse.
    #[error("invalid config file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is not acceptable.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads a TOML (`.toml`) or JSON (anything else) settings file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_err = |reason: String| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        };
        if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| parse_err(e.to_string()))
        } else {
            serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))
        }
    }
}

/// `fixmyprint serve` options; each also reads a `FIXMYPRINT_*` environment variable (the
/// bucket's endpoint, region and credentials read the usual `AWS_*` names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8480].
    #[arg(long, env = "FIXMYPRINT_ADDR")]
    pub addr: Option<SocketAddr>,
    /// sqlite://PATH or postgres://… [default: sqlite in the data dir].
    #[arg(long, env = "FIXMYPRINT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for downloads and results (share it between instances) [default: ./fixmyprint-data].
    #[arg(long, env = "FIXMYPRINT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The broker's base URL.
    #[arg(long, env = "FIXMYPRINT_BROKER_URL")]
    pub broker_url: Option<String>,
    /// Public base URL of this service [default: derived from the listen address].
    #[arg(long, env = "FIXMYPRINT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// TLS certificate chain (PEM); serve HTTPS.
    #[arg(long, env = "FIXMYPRINT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "FIXMYPRINT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra trusted CA certificate (PEM) for outgoing calls; repeatable.
    #[arg(long, env = "FIXMYPRINT_CA_CERT")]
    pub ca_cert: Vec<PathBuf>,
    /// Job workers in this instance [default: 2].
    #[arg(long, env = "FIXMYPRINT_WORKERS")]
    pub workers: Option<usize>,
    /// Let `POST /v1/accounts/me/top-up` add money with no payment (development only: a
    /// stand-in for a payment system) [default: off].
    #[arg(long, env = "FIXMYPRINT_DEV_TOP_UP")]
    pub dev_top_up: bool,
    /// The operator's key (at least 24 characters): whoever presents it may credit any
    /// account (POST /v1/operator/accounts/{account_id}/top-up), as a payment system does.
    /// Prefer the environment or the file: a command line is visible to other local users
    /// [default: none, no one may]
    #[arg(long, env = "FIXMYPRINT_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<Redacted>,
    /// Where results go: `dir` (files in the data dir) or `s3://bucket[/prefix]` (an
    /// S3-compatible bucket; results handed out as presigned URLs) [default: dir].
    #[arg(long, env = "FIXMYPRINT_STORAGE")]
    pub storage: Option<String>,
    /// The bucket's endpoint and credentials (`--s3-*`, `AWS_*`), over the file's.
    #[command(flatten)]
    pub s3: diax_sdk::s3::S3Args,
    /// A broker public key (`whpk_…`) to trust in addition to the registered broker's keys,
    /// e.g. the conformance runner's; repeatable (environment: comma-separated).
    #[arg(
        long = "trust-broker-key",
        env = "FIXMYPRINT_TRUST_BROKER_KEYS",
        value_delimiter = ','
    )]
    pub trust_broker_key: Vec<String>,
    /// An origin (`scheme://host[:port]`) job inputs may be downloaded from; repeatable
    /// (environment: comma-separated) [default: any origin the signed job.input names].
    #[arg(
        long = "input-origin",
        env = "FIXMYPRINT_INPUT_ORIGINS",
        value_delimiter = ','
    )]
    pub input_origin: Vec<String>,
    /// Let job inputs come from loopback, private and link-local addresses, plain http to
    /// loopback included (development on one machine only) [default: off; public https only,
    /// or the listed --input-origin]
    #[arg(long, env = "FIXMYPRINT_ALLOW_PRIVATE_INPUTS")]
    pub allow_private_inputs: bool,
    /// Settings file (TOML or JSON).
    #[arg(long, env = "FIXMYPRINT_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ServeArgs {
    /// Resolves the settings: these options (and environment), then the file, then defaults.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or a value is invalid.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        // The storage options (and their AWS_* environment) override the file's, member by
        // member.
        fn over<T: Clone>(flag: &Option<T>, file: &mut Option<T>) {
            if flag.is_some() {
                file.clone_from(flag);
            }
        }
        over(&self.storage, &mut file.storage);
        over(&self.operator_key, &mut file.operator_key);
        let mut c = file.apply(Config::default())?;
        if let Some(s3) = &mut c.storage {
            self.s3.apply_to(s3);
        }
        if let Some(v) = self.addr {
            c.addr = v;
        }
        if let Some(v) = &self.database_url {
            c.database_url = Some(v.clone());
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.broker_url {
            c.broker_url = Some(v.clone());
        }
        if let Some(v) = &self.public_url {
            c.public_url = Some(v.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if !self.ca_cert.is_empty() {
            c.ca_certs = self.ca_cert.clone();
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        if self.dev_top_up {
            c.dev_top_up = true;
        }
        if !self.trust_broker_key.is_empty() {
            c.trusted_broker_keys = parse_public_keys(&self.trust_broker_key)?;
        }
        if !self.input_origin.is_empty() {
            c.input_origins = parse_origins(&self.input_origin)?;
        }
        if self.allow_private_inputs {
            c.allow_private_inputs = true;
        }
        Ok(c)
    }
}

/// Parses bare origins (`scheme://host[:port]`, `http` or `https`, nothing after the port)
/// into their normal form.
fn parse_origins(values: &[String]) -> Result<Vec<String>, ConfigError> {
    values
        .iter()
        .map(|v| {
            let bad = || {
                ConfigError::Invalid(format!(
                    "input origin {v:?}: expected a bare origin, scheme://host[:port] (http or https)"
                ))
            };
            let url = url::Url::parse(v.trim()).map_err(|_| bad())?;
            let bare = matches!(url.scheme(), "http" | "https")
                && url.username().is_empty()
                && url.password().is_none()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.host().is_some();
            if !bare {
                return Err(bad());
            }
            Ok(url.origin().ascii_serialization())
        })
        .collect()
}

/// Parses `whpk_…` public keys; a secret (`whsk_`, `whsec_`) or anything else is refused.
fn parse_public_keys(keys: &[String]) -> Result<Vec<diax_sdk::PublicKey>, ConfigError> {
    keys.iter()
        .map(|k| {
            diax_sdk::PublicKey::parse(k.trim()).map_err(|e| {
                ConfigError::Invalid(format!(
                    "trusted broker key: {e} (expected a whpk_ public key)"
                ))
            })
        })
        .collect()
}

impl FileConfig {
    /// Applies the members that are set over `c`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a half TLS pair or a negative price.
    pub fn apply(self, mut c: Config) -> Result<Config, ConfigError> {
        let d = Duration::from_millis;
        if let Some(v) = self.addr {
            c.addr = v;
        }
        c.database_url = self.database_url.or(c.database_url);
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        c.broker_url = self.broker_url.or(c.broker_url);
        c.public_url = self.public_url.or(c.public_url);
        match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => c.tls = Some(TlsFiles { cert, key }),
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key go together".into(),
                ));
            }
        }
        if let Some(v) = self.ca_cert {
            c.ca_certs = v;
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        if let Some(v) = self.outbox_workers {
            c.outbox_workers = v;
        }
        if let Some(v) = self.intake_writers {
            if !(1..=MAX_INTAKE_WRITERS).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "intake_writers must be 1 to {MAX_INTAKE_WRITERS}, not {v}"
                )));
            }
            c.intake_writers = v;
        }
        if let Some(v) = self.poll_interval_ms {
            c.poll_interval = d(v.max(1));
        }
        if let Some(v) = self.job_lease_ms {
            c.job_lease = d(v.max(1));
        }
        if let Some(v) = self.outbox_lease_ms {
            c.outbox_lease = d(v.max(1));
        }
        if let Some(v) = self.retry_initial_backoff_ms {
            c.retry_initial_backoff = d(v);
        }
        if let Some(v) = self.retry_max_backoff_ms {
            c.retry_max_backoff = d(v);
        }
        if let Some(v) = self.max_job_attempts {
            c.max_job_attempts = v.max(1);
        }
        if let Some(v) = self.shutdown_grace_ms {
            c.shutdown_grace = d(v);
        }
        if let Some(v) = self.result_ttl_secs {
            c.result_ttl = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.max_model_bytes {
            c.max_model_bytes = v;
        }
        if let Some(v) = self.max_body_bytes {
            c.max_body_bytes = v;
        }
        if let Some(v) = self.tolerance_secs {
            c.tolerance_secs = v;
        }
        if let Some(v) = self.keyring_refresh_ms {
            c.keyring_refresh = d(v.max(1));
        }
        if let Some(v) = self.http_timeout_ms {
            c.http_timeout = d(v.max(1));
        }
        if let Some(v) = self.heal_budget_ms {
            c.heal_budget = d(v.max(1));
        }
        if let Some(v) = self.picture_max_facets {
            c.picture_max_facets = v;
        }
        if let Some(v) = self.sweep_every_secs {
            c.sweep_every = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.input_timeout_secs {
            c.input_timeout = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.dev_top_up {
            c.dev_top_up = v;
        }
        if let Some(v) = self.operator_key {
            c.operator_key = Some(OperatorKey::parse(&v.0)?);
        }
        if let Some(v) = self.header_read_timeout_ms {
            c.header_read_timeout = d(v.max(1));
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v.max(1);
        }
        if let Some(v) = self.trusted_broker_keys {
            c.trusted_broker_keys = parse_public_keys(&v)?;
        }
        if let Some(v) = self.input_origins {
            c.input_origins = parse_origins(&v)?;
        }
        if let Some(v) = self.allow_private_inputs {
            c.allow_private_inputs = v;
        }
        if let Some(v) = self.price_base {
            c.pricing.base = v;
        }
        if let Some(v) = self.price_per_mib {
            c.pricing.per_mib = v;
        }
        if let Some(v) = self.currency {
            c.pricing.currency = v;
        }
        match self.storage.as_deref() {
            None | Some("dir") => {
                c.storage = None;
            }
            Some(url) => {
                let mut s3 =
                    super::storage::S3Settings::parse_url(url).map_err(ConfigError::Invalid)?;
                s3.endpoint = self.s3_endpoint;
                s3.region = self.s3_region;
                s3.access_key_id = self.s3_access_key_id;
                s3.secret_access_key = self.s3_secret_access_key.map(|r| r.0);
                s3.session_token = self.s3_session_token.map(|r| r.0);
                if let Some(v) = self.s3_multipart_threshold {
                    s3.part_size = v;
                }
                c.storage = Some(s3);
            }
        }
        if c.pricing.base < 0 || c.pricing.per_mib < 0 {
            return Err(ConfigError::Invalid("prices must not be negative".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_formula() {
        let p = Pricing::default();
        assert_eq!(p.quote(0).amount, 50);
        assert_eq!(p.quote(1).amount, 60);
        assert_eq!(p.quote(1024 * 1024).amount, 60);
        assert_eq!(p.quote(1024 * 1024 + 1).amount, 70);
    }

    #[test]
    fn storage_settings_from_file_and_flags_keep_secrets_out_of_debug() {
        let f: FileConfig = toml::from_str(
            "storage = \"s3://fmp-results/prod\"\ns3_region = \"eu-central-1\"\n\
             s3_secret_access_key = \"file-secret\"",
        )
        .expect("toml");
        assert!(!format!("{f:?}").contains("file-secret"));
        let args = ServeArgs {
            s3: diax_sdk::s3::S3Args {
                secret_access_key: Some("flag-secret".into()),
                endpoint: Some("https://s3.example".into()),
                ..diax_sdk::s3::S3Args::default()
            },
            ..ServeArgs::default()
        };
        assert!(!format!("{args:?}").contains("flag-secret"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "storage = \"s3://fmp-results/prod\"\ns3_region = \"eu-central-1\"",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path),
            ..args
        };
        let s3 = args.resolve().expect("resolve").storage.expect("s3");
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("fmp-results", "prod")
        );
        assert_eq!(s3.region.as_deref(), Some("eu-central-1"));
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("flag-secret"));
        assert!(!format!("{s3:?}").contains("flag-secret"));
        let bad: FileConfig = toml::from_str("storage = \"s3://NO\"").expect("toml");
        assert!(bad.apply(Config::default()).is_err());
    }

    #[test]
    fn the_operator_key_is_checked_and_never_printed() {
        let key = "op-OPERATORSECRET-0123456789";
        let args = ServeArgs {
            operator_key: Some(key.parse().expect("infallible")),
            ..ServeArgs::default()
        };
        assert!(!format!("{args:?}").contains("OPERATORSECRET"));
        let c = args.resolve().expect("resolve");
        assert!(c.operator_key.as_ref().expect("set").matches(key));
        assert!(!format!("{c:?}").contains("OPERATORSECRET"));
        // The file's key, overridden by the option.
        let f: FileConfig =
            toml::from_str("operator_key = \"op-FILESECRET-0123456789abcdef\"").expect("toml");
        assert!(!format!("{f:?}").contains("FILESECRET"));
        let from_file = f.clone().apply(Config::default()).expect("apply");
        assert!(
            from_file
                .operator_key
                .expect("set")
                .matches("op-FILESECRET-0123456789abcdef")
        );
        // Too short or with spaces: refused, without echoing the value.
        for bad in ["op-SHORT", "op OPERATOR SECRET 0123456789"] {
            let args = ServeArgs {
                operator_key: Some(bad.parse().expect("infallible")),
                ..ServeArgs::default()
            };
            let e = args.resolve().expect_err(bad).to_string();
            assert!(
                e.contains("operator key") && !e.contains("SHORT") && !e.contains("SECRET"),
                "{e}"
            );
        }
        // --help never shows the environment's value.
        let cmd = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "operator_key")
            .expect("--operator-key");
        assert!(arg.is_hide_env_values_set());
    }

    #[test]
    fn toml_file_applies() {
        let f: FileConfig =
            toml::from_str("workers = 3\npoll_interval_ms = 20\ncurrency = \"USD\"").expect("toml");
        let c = f.apply(Config::default()).expect("apply");
        assert_eq!(c.workers, 3);
        assert_eq!(c.poll_interval, Duration::from_millis(20));
        assert_eq!(c.pricing.currency, "USD");
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
    }

    #[test]
    fn input_origins_are_bare_origins_in_normal_form() {
        let f: FileConfig = toml::from_str(
            "input_origins = [\"https://Models.Example:443\", \"http://127.0.0.1:9000/\"]",
        )
        .expect("toml");
        let c = f.apply(Config::default()).expect("apply");
        assert_eq!(
            c.input_origins,
            ["https://models.example", "http://127.0.0.1:9000"]
        );
        for bad in [
            "https://models.example/bucket",
            "https://models.example/?x=1",
            "https://user:pw@models.example",
            "ftp://models.example",
            "models.example",
        ] {
            let f: FileConfig =
                toml::from_str(&format!("input_origins = [\"{bad}\"]")).expect("toml");
            let e = f.apply(Config::default()).expect_err(bad).to_string();
            assert!(e.contains("bare origin") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn trusted_broker_keys_take_public_keys_only() {
        let own = diax_sdk::SigningKey::generate();
        let public = own.public_key().to_string();
        let args = ServeArgs {
            trust_broker_key: vec![public.clone()],
            ..ServeArgs::default()
        };
        let c = args.resolve().expect("a public key");
        assert_eq!(c.trusted_broker_keys.len(), 1);
        assert_eq!(c.trusted_broker_keys[0].to_string(), public);
        let f: FileConfig =
            toml::from_str(&format!("trusted_broker_keys = [\"{public}\"]")).expect("toml");
        assert_eq!(
            f.apply(Config::default())
                .expect("apply")
                .trusted_broker_keys
                .len(),
            1
        );
        for bad in [
            own.expose(),
            diax_sdk::Secret::generate().expose(),
            "whpk_nope".into(),
        ] {
            let args = ServeArgs {
                trust_broker_key: vec![bad.clone()],
                ..ServeArgs::default()
            };
            let err = args.resolve().expect_err("not a public key").to_string();
            assert!(err.contains("trusted broker key"), "{err}");
            assert!(!err.contains(&bad), "the refusal echoes no key: {err}");
        }
    }
}
