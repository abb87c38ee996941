//! S3-compatible buckets (feature `object-store`): the settings, the client and the start-up
//! probe that a provider (results) and a broker (models) share, through the
//! [`object_store`](https://docs.rs/object_store) crate (0.14, ring signatures, the same
//! rustls stack as [`client`](crate::client); no aws-lc-rs).
//!
//! - [`S3Settings`]: bucket, key prefix, endpoint, region, credentials (redacted in `Debug`)
//!   and the multipart part size, with [`S3Settings::parse_url`] for `s3://bucket/prefix`.
//! - `S3Args` (with feature `cli`): the endpoint and credential flags and their `AWS_*`
//!   environment variables, for a `clap` command line.
//! - [`S3Bucket::new`] builds the client: path-style requests, an endpoint that is `https`,
//!   or plain `http` on loopback only, a few retries within the request timeout.
//! - [`S3Bucket::connect`] also writes and removes a probe object, so an unknown bucket,
//!   refused credentials or an unreachable endpoint fail at start-up, in one line.
//! - [`S3Bucket::presign_get`]: a URL that lets its bearer `GET` one object until it expires
//!   (at most [`MAX_PRESIGN`]), the "temporary credential and location" of the protocol.
//!
//! What is written where, and how (one `PUT`, multipart uploads), stays with the caller,
//! which uses [`S3Bucket::store`] directly.
//!
//! ```
//! use std::time::Duration;
//! use diax_sdk::s3::{S3Bucket, S3Settings};
//!
//! let settings = S3Settings {
//!     endpoint: Some("http://127.0.0.1:9000".into()),
//!     access_key_id: Some("AKIDEXAMPLE".into()),
//!     secret_access_key: Some("secret".into()),
//!     ..S3Settings::parse_url("s3://models/broker/eu")?
//! };
//! // No request yet: `S3Bucket::connect` would probe the bucket.
//! let bucket = S3Bucket::new(settings, Duration::from_secs(30))?;
//! let path = bucket.path("models/mdl_1/v1.stl");
//! assert_eq!(path.as_ref(), "broker/eu/models/mdl_1/v1.stl");
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! // Presigning is local: it signs, it does not ask the server.
//! let url = bucket.presign_get(&path, Duration::from_secs(600)).await?;
//! assert!(url.as_str().starts_with("http://127.0.0.1:9000/models/broker/eu/models/mdl_1/v1.stl?"));
//! assert!(url.as_str().contains("X-Amz-Expires=600"));
//! # Ok::<(), Box<dyn std::error::Error>>(()) })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};

/// The longest a SigV4 presigned URL may live (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// The smallest part S3 accepts (but for the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// The default multipart threshold and part size.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Where and how to reach a bucket. Pass the credentials here (a command line reads the usual
/// `AWS_*` environment variables into them, see `S3Args`). With no access key, the client
/// asks the EC2 instance metadata service (`169.254.169.254`, IMDSv2) for the instance role's
/// credentials, as AWS SDKs do; off EC2 that fails, and [`S3Bucket::connect`] says so at
/// start-up, naming that address.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint URL of an S3-compatible server (`None`: AWS, by region). Plain `http` is
    /// accepted only for a loopback host.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Objects larger than this are uploaded in parts of this size (default
    /// [`DEFAULT_PART_SIZE`]; [`S3Bucket::part_size`] raises it to [`MIN_PART_SIZE`]).
    pub part_size: usize,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }
}

/// What `Debug` shows of a secret: whether there is one, never its value.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "[redacted]")
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// A bucket's endpoint and credentials as command-line flags (with feature `cli`), to
/// flatten into a [`clap`](https://docs.rs/clap) command so every program names them alike:
/// `--s3-endpoint`, `--s3-region`, `--s3-access-key-id`, `--s3-secret-access-key` and
/// `--s3-session-token`, each also read from its usual AWS environment variable
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`; the secret ones never shown by `--help`). `Debug` redacts the
/// secrets.
///
/// ```
/// use clap::Parser;
/// use diax_sdk::s3::{S3Args, S3Settings};
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     s3: S3Args,
/// }
///
/// let cli = Cli::parse_from([
///     "serve",
///     "--s3-endpoint",
///     "http://127.0.0.1:9000",
///     "--s3-secret-access-key",
///     "shh",
/// ]);
/// let mut settings = S3Settings::parse_url("s3://models/eu")?;
/// cli.s3.apply_to(&mut settings);
/// assert_eq!(settings.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
/// assert!(!format!("{:?}", cli.s3).contains("shh"));
/// # Ok::<(), String>(())
/// ```
#[cfg(feature = "cli")]
#[derive(Clone, Default, PartialEq, Eq, clap::Args)]
pub struct S3Args {
    /// Endpoint URL of the S3-compatible server (plain http only on loopback)
    /// [default: AWS, by region].
    #[arg(long = "s3-endpoint", env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Region of the bucket [default: us-east-1].
    #[arg(long = "s3-region", env = "AWS_REGION")]
    pub region: Option<String>,
    /// Access key id for the bucket.
    #[arg(long = "s3-access-key-id", env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key for the bucket.
    #[arg(
        long = "s3-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials for the bucket.
    #[arg(
        long = "s3-session-token",
        env = "AWS_SESSION_TOKEN",
        hide_env_values = true
    )]
    pub session_token: Option<String>,
}

#[cfg(feature = "cli")]
impl S3Args {
    /// Sets every value given here on `settings`, leaving the others as they are (a command
    /// line over a configuration file).
    pub fn apply_to(&self, settings: &mut S3Settings) {
        let pairs = [
            (&self.endpoint, &mut settings.endpoint),
            (&self.region, &mut settings.region),
            (&self.access_key_id, &mut settings.access_key_id),
            (&self.secret_access_key, &mut settings.secret_access_key),
            (&self.session_token, &mut settings.session_token),
        ];
        for (given, setting) in pairs {
            if given.is_some() {
                setting.clone_from(given);
            }
        }
    }
}

#[cfg(feature = "cli")]
impl fmt::Debug for S3Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Args")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .finish()
    }
}

impl S3Settings {
    /// Parses `s3://bucket[/prefix]` into settings with no endpoint or credentials yet.
    ///
    /// ```
    /// use diax_sdk::s3::S3Settings;
    /// let s = S3Settings::parse_url("s3://models/fixmyprint/eu").unwrap();
    /// assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("models", "fixmyprint/eu"));
    /// assert_eq!(s.url(), "s3://models/fixmyprint/eu");
    /// assert!(S3Settings::parse_url("s3://").is_err());
    /// assert!(S3Settings::parse_url("s3://Models").is_err());
    /// assert!(S3Settings::parse_url("s3://models/../x").is_err());
    /// assert!(S3Settings::parse_url("/var/lib/fixmyprint").is_err());
    /// ```
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("storage {url:?}: expected s3://bucket[/prefix]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3 bucket names: 3-63 of [a-z0-9.-].
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
        if !bucket_ok {
            return Err(format!(
                "storage {url:?}: the bucket name must be 3-63 characters of a-z, 0-9, '.' and '-'"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.len() > 512
        {
            return Err(format!("storage {url:?}: invalid key prefix"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            ..Self::default()
        })
    }

    /// `s3://bucket/prefix`, for messages.
    #[must_use]
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// One line: the chain of an error (an `object_store` error carries the server's code in
/// its sources), whitespace collapsed, at most 400 bytes.
///
/// ```
/// let e = std::io::Error::other("NoSuchBucket:\n  The specified bucket does not exist");
/// assert_eq!(
///     diax_sdk::s3::one_line(&e),
///     "NoSuchBucket: The specified bucket does not exist"
/// );
/// ```
#[must_use]
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// How [`S3Bucket::probe`] names the bucket and where it writes its probe object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe<'a> {
    /// What the bucket is to the caller, first in the error (`"result store"`).
    pub role: &'a str,
    /// The folder under the prefix the probe object goes to (`""`: the prefix itself), so a
    /// policy that only allows writes there is probed as it will be used.
    pub dir: &'a str,
}

/// A client of one bucket, for objects under its prefix. `Clone` shares the connections.
#[derive(Clone)]
pub struct S3Bucket {
    store: Arc<AmazonS3>,
    settings: S3Settings,
}

impl fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Bucket")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl S3Bucket {
    /// Builds the client (no request yet). `timeout` bounds each request; transient
    /// failures are retried three times within it (backoff from 100 ms to 2 s).
    ///
    /// # Errors
    /// One line naming the bad setting: an endpoint that is not a URL, plain `http` to a
    /// host that is not loopback, or what `object_store` refuses.
    pub fn new(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        crate::client::install_crypto_provider();
        let mut options = ClientOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout.min(Duration::from_secs(10)));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(settings.region.as_deref().unwrap_or("us-east-1"))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: timeout,
            });
        if let Some(endpoint) = &settings.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| format!("storage endpoint {endpoint:?}: {e}"))?;
            match url.scheme() {
                "https" => {}
                "http" if crate::client::require_secure_url(endpoint).is_ok() => {
                    options = options.with_allow_http(true);
                }
                _ => {
                    return Err(format!(
                        "storage endpoint {endpoint:?}: must be https (plain http only on loopback)"
                    ));
                }
            }
            // Path-style requests (`{endpoint}/{bucket}/{key}`), which every S3-compatible
            // server understands.
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(v) = &settings.access_key_id {
            builder = builder.with_access_key_id(v);
        }
        if let Some(v) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(v);
        }
        if let Some(v) = &settings.session_token {
            builder = builder.with_token(v);
        }
        let store = builder
            .with_client_options(options)
            .build()
            .map_err(|e| format!("storage {}: {}", settings.url(), one_line(&e)))?;
        Ok(Self {
            store: Arc::new(store),
            settings,
        })
    }

    /// [`S3Bucket::new`], then [`S3Bucket::probe`].
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn connect(
        settings: S3Settings,
        timeout: Duration,
        probe: &Probe<'_>,
    ) -> Result<Self, String> {
        let bucket = Self::new(settings, timeout)?;
        bucket.probe(probe).await?;
        Ok(bucket)
    }

    /// Writes and removes a small probe object (`{prefix}/{probe.dir}/.probe-{random}`), so
    /// an unknown bucket, refused credentials or an unreachable endpoint show now.
    ///
    /// # Errors
    /// One line: `{probe.role} s3://bucket/prefix at {endpoint}: {what} failed: {the store's
    /// error}`.
    pub async fn probe(&self, probe: &Probe<'_>) -> Result<(), String> {
        let name = format!(
            ".probe-{}",
            crate::util::random_token("", 12).to_ascii_lowercase()
        );
        let path = if probe.dir.is_empty() {
            self.path(&name)
        } else {
            self.path(&format!("{}/{name}", probe.dir))
        };
        let role = probe.role;
        let what = |op: &str, e: object_store::Error| {
            format!(
                "{role} {} at {}: {op} failed: {}",
                self.settings.url(),
                self.settings.endpoint.as_deref().unwrap_or("AWS"),
                one_line(&e)
            )
        };
        self.store
            .put(&path, PutPayload::from_static(b"probe"))
            .await
            .map_err(|e| what("writing a probe object", e))?;
        self.store
            .delete(&path)
            .await
            .map_err(|e| what("removing the probe object", e))?;
        Ok(())
    }

    /// The `object_store` client, for reads and writes.
    #[must_use]
    pub fn store(&self) -> &Arc<AmazonS3> {
        &self.store
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The multipart threshold and part size: the settings', at least [`MIN_PART_SIZE`].
    #[must_use]
    pub fn part_size(&self) -> usize {
        self.settings.part_size.max(MIN_PART_SIZE)
    }

    /// The object `name` under the prefix.
    #[must_use]
    pub fn path(&self, name: &str) -> ObjectPath {
        if self.settings.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.settings.prefix))
        }
    }

    /// A URL that lets its bearer `GET` object `path` for `ttl` (at most [`MAX_PRESIGN`])
    /// with no other credential. Computed locally: no request is made.
    ///
    /// # Errors
    /// What `object_store` refuses (no credentials to sign with).
    pub async fn presign_get(
        &self,
        path: &ObjectPath,
        ttl: Duration,
    ) -> Result<url::Url, object_store::Error> {
        self.store
            .signed_url(http::Method::GET, path, ttl.min(MAX_PRESIGN))
            .await
    }

    /// Removes object `path`; an absent one is no error.
    ///
    /// # Errors
    /// What the store answered.
    pub async fn delete(&self, path: &ObjectPath) -> Result<(), object_store::Error> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with_endpoint(endpoint: &str) -> Result<S3Bucket, String> {
        S3Bucket::new(
            S3Settings {
                endpoint: Some(endpoint.to_owned()),
                ..S3Settings::parse_url("s3://models").unwrap()
            },
            Duration::from_secs(5),
        )
    }

    #[test]
    fn the_endpoint_is_https_or_plain_http_on_loopback() {
        for ok in [
            "https://s3.eu-central-1.amazonaws.com",
            "http://127.0.0.1:9000",
            "http://[::1]:9000/",
            "http://localhost:9000",
        ] {
            assert!(with_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://s3.example.com",
            "http://10.0.0.1:9000",
            "ftp://127.0.0.1",
        ] {
            let e = with_endpoint(bad).unwrap_err();
            assert!(e.contains("must be https") && e.contains(bad), "{bad}: {e}");
        }
        let e = with_endpoint("not a url").unwrap_err();
        assert!(e.starts_with("storage endpoint \"not a url\""), "{e}");
    }

    #[test]
    fn secrets_never_print() {
        let settings = S3Settings {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("the-secret-key".into()),
            session_token: Some("the-session-token".into()),
            ..S3Settings::parse_url("s3://models/x").unwrap()
        };
        let bucket = S3Bucket::new(settings.clone(), Duration::from_secs(5)).unwrap();
        for shown in [format!("{settings:?}"), format!("{bucket:?}")] {
            assert!(
                shown.contains("AKIDEXAMPLE") && shown.contains("[redacted]"),
                "{shown}"
            );
            assert!(!shown.contains("the-secret-key") && !shown.contains("the-session-token"));
        }
    }

    #[test]
    fn the_part_size_is_at_least_what_s3_accepts() {
        let bucket = |part_size| {
            S3Bucket::new(
                S3Settings {
                    part_size,
                    ..S3Settings::parse_url("s3://models").unwrap()
                },
                Duration::from_secs(5),
            )
            .unwrap()
        };
        assert_eq!(bucket(1024).part_size(), MIN_PART_SIZE);
        assert_eq!(bucket(DEFAULT_PART_SIZE).part_size(), DEFAULT_PART_SIZE);
        assert_eq!(bucket(0).path("x").as_ref(), "x");
    }
}
