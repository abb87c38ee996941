//! Configuration of the broker mock (command line flags and environment variables) and
//! its adjustable clock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Everything the broker mock can be told. Every field is a `serve` flag and an environment
/// variable (`BROKER_MOCK_*`); [`Config::default`] is what the flags default to, with an
/// in-memory database, so tests only change what they need.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "BROKER_MOCK_ADDR", default_value = "127.0.0.1:8700")]
    pub addr: SocketAddr,
    /// SQLite database: a file path, a `sqlite:` URL, or `sqlite::memory:`.
    #[arg(long, env = "BROKER_MOCK_DB", default_value = "sqlite::memory:")]
    pub db: String,
    /// PEM certificate chain; with `--tls-key`, serve HTTPS.
    #[arg(long, env = "BROKER_MOCK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "BROKER_MOCK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Base URL peers use to reach this broker (events and download URLs are built on it);
    /// default `http(s)://<listening address>`.
    #[arg(long, env = "BROKER_MOCK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The broker's id: the `aud` of link tokens and `broker_id` of offers.
    #[arg(long, env = "BROKER_MOCK_BROKER_ID", default_value = "3diax-mock")]
    pub broker_id: String,
    /// Lifetime of temporary model credentials, seconds.
    #[arg(long, env = "BROKER_MOCK_CREDENTIAL_TTL", default_value_t = 600)]
    pub credential_ttl: u64,
    /// Signature timestamp tolerance, seconds, in either direction.
    #[arg(long, env = "BROKER_MOCK_TOLERANCE", default_value_t = 300)]
    pub tolerance: u64,
    /// Default grace period of a rotated secret, seconds.
    #[arg(long, env = "BROKER_MOCK_ROTATION_GRACE", default_value_t = 86_400)]
    pub rotation_grace: u64,
    /// Development only: let outgoing requests (offers, inputs, notifications, result
    /// downloads) reach loopback, private and link-local addresses, and use plain http to
    /// loopback. Off by default: the broker then only calls public https addresses, checked
    /// on the address each host name resolves to. Turn it on to run providers on this machine.
    #[arg(long, env = "BROKER_MOCK_ALLOW_PRIVATE_ADDRESSES")]
    pub allow_private_addresses: bool,
    /// Origins of object stores (`https://s3.eu-central-1.amazonaws.com`) a provider's result
    /// may also be fetched from, besides the provider's registered origin: a provider that
    /// keeps its results in a bucket hands out presigned URLs on its store's origin. The
    /// address policy, size cap and digest check apply as to any result. Repeatable.
    #[arg(
        long = "result-store-origin",
        env = "BROKER_MOCK_RESULT_STORE_ORIGINS",
        value_delimiter = ',',
        value_parser = store_origin
    )]
    pub result_store_origins: Vec<String>,
    /// Extra PEM root certificates trusted for outgoing HTTPS (providers with a private CA).
    #[arg(long = "ca-cert", env = "BROKER_MOCK_CA_CERT", value_delimiter = ',')]
    pub ca_certs: Vec<PathBuf>,
    /// Largest model upload or result download, bytes.
    #[arg(long, env = "BROKER_MOCK_MAX_MODEL_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_model_bytes: usize,
    /// Model bytes held in memory at once, over all requests (uploads read whole, results
    /// fetched whole, versions loaded to be sent; with `--storage s3://…` only what a
    /// transfer buffers): past it a request that would hold more is answered `503` with
    /// `Retry-After: 1`. At least `--max-model-bytes`
    /// [default: 4 × `--max-model-bytes`].
    #[arg(long, env = "BROKER_MOCK_MAX_BUFFERED_MODEL_BYTES")]
    pub max_buffered_model_bytes: Option<u64>,
    /// Largest JSON or signed request body, bytes.
    #[arg(long, env = "BROKER_MOCK_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Messages kept in the message log; older ones are dropped as new ones come (a ring).
    #[arg(long, env = "BROKER_MOCK_MAX_LOG_MESSAGES", default_value_t = 10_000)]
    pub max_log_messages: u32,
    /// Models one user may hold.
    #[arg(long, env = "BROKER_MOCK_MAX_MODELS_PER_USER", default_value_t = 100)]
    pub max_models_per_user: u32,
    /// Bytes of model versions (uploads and results) one user may hold before uploads are
    /// refused.
    #[arg(long, env = "BROKER_MOCK_MAX_STORED_BYTES_PER_USER", default_value_t = 512 * 1024 * 1024)]
    pub max_stored_bytes_per_user: u64,
    /// How often expired replay rows, used link-token ids and expired credentials are
    /// purged, milliseconds.
    #[arg(long, env = "BROKER_MOCK_SWEEP_INTERVAL_MS", default_value_t = 60_000)]
    pub sweep_interval_ms: u64,
    /// Deliveries (notifications, `job.input` attempts) in flight at once to one destination
    /// (scheme, host and port); the others wait for a later round. Destinations are served
    /// concurrently, so a slow one delays only itself.
    #[arg(
        long,
        env = "BROKER_MOCK_MAX_IN_FLIGHT_PER_DESTINATION",
        default_value_t = 8
    )]
    pub max_in_flight_per_destination: u32,
    /// Consecutive failed deliveries after which a destination's circuit opens (nothing is
    /// sent to it until the cool-down has passed; then one attempt probes it).
    #[arg(long, env = "BROKER_MOCK_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open circuit stays open, milliseconds.
    #[arg(
        long,
        env = "BROKER_MOCK_BREAKER_COOLDOWN_MS",
        default_value_t = 30_000
    )]
    pub breaker_cooldown_ms: u64,
    /// Timeout of each outgoing HTTP request, seconds.
    #[arg(long, env = "BROKER_MOCK_HTTP_TIMEOUT", default_value_t = 30)]
    pub http_timeout: u64,
    /// Attempts per outgoing signed message to a provider (retried on transport errors, 5xx, 429).
    #[arg(long, env = "BROKER_MOCK_SEND_ATTEMPTS", default_value_t = 3)]
    pub send_attempts: u32,
    /// First retry delay of outgoing messages to providers, milliseconds (doubles each time).
    #[arg(long, env = "BROKER_MOCK_RETRY_BACKOFF_MS", default_value_t = 200)]
    pub retry_backoff_ms: u64,
    /// How often the notification deliverer looks for due deliveries, milliseconds.
    #[arg(long, env = "BROKER_MOCK_NOTIFY_INTERVAL_MS", default_value_t = 1000)]
    pub notify_interval_ms: u64,
    /// First retry delay of a failed user notification, milliseconds (doubles, with jitter).
    #[arg(long, env = "BROKER_MOCK_NOTIFY_BACKOFF_MS", default_value_t = 1000)]
    pub notify_backoff_ms: u64,
    /// Longest retry delay of a user notification, milliseconds.
    #[arg(
        long,
        env = "BROKER_MOCK_NOTIFY_MAX_BACKOFF_MS",
        default_value_t = 300_000
    )]
    pub notify_max_backoff_ms: u64,
    /// Attempts before a user notification delivery is given up (it stays pending).
    #[arg(long, env = "BROKER_MOCK_NOTIFY_MAX_ATTEMPTS", default_value_t = 20)]
    pub notify_max_attempts: u32,
    /// How often the input deliverer looks for `job.input`s due again, milliseconds.
    #[arg(long, env = "BROKER_MOCK_INPUT_INTERVAL_MS", default_value_t = 1000)]
    pub input_interval_ms: u64,
    /// Delay before a `job.input` that failed is sent again, milliseconds (doubles each
    /// attempt, with jitter).
    #[arg(long, env = "BROKER_MOCK_INPUT_BACKOFF_MS", default_value_t = 2000)]
    pub input_backoff_ms: u64,
    /// Longest delay between two attempts of a `job.input`, milliseconds.
    #[arg(
        long,
        env = "BROKER_MOCK_INPUT_MAX_BACKOFF_MS",
        default_value_t = 300_000
    )]
    pub input_max_backoff_ms: u64,
    /// Attempts at delivering a `job.input` (each a new message with a fresh credential)
    /// before the broker gives up and fails the job.
    #[arg(long, env = "BROKER_MOCK_INPUT_MAX_ATTEMPTS", default_value_t = 10)]
    pub input_max_attempts: u32,
    /// A connection must send each request's head (request line and headers) within this,
    /// milliseconds, or it is closed (slowloris).
    #[arg(
        long,
        env = "BROKER_MOCK_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// A request body that sends nothing for this long, milliseconds, is cut: an upload
    /// that stalls gives back its connection and its share of `--max-buffered-model-bytes`.
    #[arg(
        long,
        env = "BROKER_MOCK_BODY_IDLE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub body_idle_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "BROKER_MOCK_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Where model versions (uploads and job results) are kept: `db` (in the SQLite
    /// database, the default) or `s3://bucket[/prefix]` (an S3-compatible bucket; providers
    /// then get presigned `GET` URLs as the temporary credential and location of a job's
    /// input). The bucket is probed at start-up.
    #[arg(long, env = "BROKER_MOCK_STORAGE", default_value = "db", value_parser = storage)]
    pub storage: String,
    /// The bucket's endpoint and credentials (`--s3-*`, `AWS_*`).
    #[command(flatten)]
    pub s3: diax_sdk::s3::S3Args,
    /// Models larger than this go to the bucket as a multipart upload in parts of this size,
    /// bytes (at least 5 MiB, as S3 requires); smaller ones in one `PUT`.
    #[arg(long, env = "BROKER_MOCK_S3_PART_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub s3_part_size: usize,
}

impl Config {
    /// The budget of model bytes held in memory at once: `--max-buffered-model-bytes`, or
    /// 4 × `--max-model-bytes`.
    #[must_use]
    pub fn buffered_model_budget(&self) -> u64 {
        self.max_buffered_model_bytes
            .unwrap_or_else(|| (self.max_model_bytes as u64).saturating_mul(4))
    }
}

/// Parses `--storage`: `db`, or `s3://bucket[/prefix]` (checked by
/// [`S3Settings::parse_url`](diax_sdk::s3::S3Settings::parse_url)).
fn storage(value: &str) -> Result<String, String> {
    if value == "db" {
        return Ok(value.to_owned());
    }
    if !value.starts_with("s3://") {
        return Err(format!(
            "storage {value:?}: expected db or s3://bucket[/prefix]"
        ));
    }
    diax_sdk::s3::S3Settings::parse_url(value).map(|_| value.to_owned())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            db: "sqlite::memory:".to_owned(),
            tls_cert: None,
            tls_key: None,
            public_url: None,
            broker_id: "3diax-mock".to_owned(),
            credential_ttl: 600,
            tolerance: 300,
            rotation_grace: 86_400,
            allow_private_addresses: false,
            result_store_origins: Vec::new(),
            ca_certs: Vec::new(),
            max_model_bytes: 64 * 1024 * 1024,
            max_buffered_model_bytes: None,
            max_body_bytes: 1024 * 1024,
            max_log_messages: 10_000,
            max_models_per_user: 100,
            max_stored_bytes_per_user: 512 * 1024 * 1024,
            sweep_interval_ms: 60_000,
            max_in_flight_per_destination: 8,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
            http_timeout: 30,
            send_attempts: 3,
            retry_backoff_ms: 200,
            notify_interval_ms: 1000,
            notify_backoff_ms: 1000,
            notify_max_backoff_ms: 300_000,
            notify_max_attempts: 20,
            input_interval_ms: 1000,
            input_backoff_ms: 2000,
            input_max_backoff_ms: 300_000,
            input_max_attempts: 10,
            header_read_timeout_ms: 10_000,
            body_idle_timeout_ms: 30_000,
            max_connections: 1024,
            storage: "db".to_owned(),
            s3: diax_sdk::s3::S3Args::default(),
            s3_part_size: 8 * 1024 * 1024,
        }
    }
}

/// The broker's clock: the system clock plus an offset that tests can advance, so expiry
/// and grace periods are tested without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// Now, in Unix seconds.
    #[must_use]
    pub fn now(&self) -> i64 {
        diax_sdk::clock::unix_now().saturating_add(self.offset.load(Ordering::Relaxed))
    }

    /// Now, in Unix milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        ms.saturating_add(self.offset.load(Ordering::Relaxed).saturating_mul(1000))
    }

    /// Moves the clock forward by `secs` (backwards when negative).
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// Parses one `--result-store-origin`: an `http` or `https` origin (scheme, host, optional
/// port) and nothing else, given back in its normal form. A value the broker could never
/// match (a path, a query, credentials, another scheme) is refused at start-up instead of
/// being ignored.
fn store_origin(value: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected an origin such as https://s3.eu-central-1.amazonaws.com";
    let url = url::Url::parse(value).map_err(|e| format!("not a URL ({e}); {EXPECTED}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not http or https; {EXPECTED}",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err(format!("no host; {EXPECTED}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "an origin carries no user name or password; {EXPECTED}"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "an origin has no path, query or fragment; {EXPECTED}"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Config;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn the_defaults_are_the_flags_defaults_for_the_background_deliverers() {
        let flags = Cli::try_parse_from(["broker-mock"])
            .expect("no flag is required")
            .config;
        let default = Config::default();
        let pick = |c: &Config| {
            (
                c.send_attempts,
                c.retry_backoff_ms,
                c.notify_interval_ms,
                c.notify_backoff_ms,
                c.notify_max_backoff_ms,
                c.notify_max_attempts,
                c.input_interval_ms,
                c.input_backoff_ms,
                c.input_max_backoff_ms,
                c.input_max_attempts,
            )
        };
        assert_eq!(pick(&flags), pick(&default));
        assert_eq!(flags.credential_ttl, default.credential_ttl);
        assert_eq!(
            (
                flags.max_log_messages,
                flags.max_models_per_user,
                flags.max_stored_bytes_per_user,
                flags.sweep_interval_ms
            ),
            (
                default.max_log_messages,
                default.max_models_per_user,
                default.max_stored_bytes_per_user,
                default.sweep_interval_ms
            )
        );
        assert!(!flags.allow_private_addresses && !default.allow_private_addresses);
    }

    #[test]
    fn private_addresses_are_allowed_only_when_asked_for() {
        let on = Cli::try_parse_from(["broker-mock", "--allow-private-addresses"])
            .expect("flag")
            .config;
        assert!(on.allow_private_addresses);
    }

    #[test]
    fn a_result_store_origin_is_an_origin_or_refused() {
        let ok = Cli::try_parse_from([
            "broker-mock",
            "--result-store-origin",
            "HTTPS://S3.Example.com:443/,http://127.0.0.1:9000",
        ])
        .expect("two origins")
        .config;
        assert_eq!(
            ok.result_store_origins,
            ["https://s3.example.com", "http://127.0.0.1:9000"]
        );
        for bad in [
            "s3.example.com",
            "ftp://s3.example.com",
            "https://s3.example.com/bucket",
            "https://s3.example.com/?x=1",
            "https://key:secret@s3.example.com",
            "https://",
        ] {
            let err = Cli::try_parse_from(["broker-mock", "--result-store-origin", bad])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("origin"), "{bad}: {err}");
        }
    }
}
