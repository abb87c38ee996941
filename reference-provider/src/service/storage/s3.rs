//! Results in an S3-compatible bucket, through the `object_store` crate (ring signatures, the
//! same rustls stack as the rest of the service).
//!
//! - A result of up to [`S3Settings::multipart_threshold`] bytes is one `PUT`; a larger one is a
//!   multipart upload in parts of that size, aborted when any part fails. Either way the object
//!   becomes visible only when complete: a failed or interrupted upload leaves no object (an
//!   unfinished multipart upload left by a crash is invisible and removed by the bucket's
//!   `AbortIncompleteMultipartUpload` lifecycle rule; see docs/FIXMYPRINT.md).
//! - The broker fetches a result from a presigned `GET` URL ([`ResultStore::presign_get`]), so
//!   results never pass through the service.
//! - [`S3Store::connect`] writes and removes a probe object, so a wrong bucket, credentials or
//!   endpoint fail at start-up, in one line.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diax_sdk::replay::BoxFuture;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};

use super::{ResultStore, check_key};

/// The longest a SigV4 presigned URL may live (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where and how to reach the bucket. Credentials left out are taken from nowhere else: pass
/// them here (the CLI reads the usual `AWS_*` environment variables into them).
#[derive(Clone, Default, PartialEq, Eq)]
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
    /// Results larger than this are uploaded in parts of this size (default 8 MiB; S3 needs
    /// at least 5 MiB).
    pub multipart_threshold: usize,
}

/// The default multipart threshold and part size.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .field("multipart_threshold", &self.multipart_threshold)
            .finish()
    }
}

impl S3Settings {
    /// Parses `s3://bucket[/prefix]` into settings with no endpoint or credentials yet.
    ///
    /// ```
    /// use fixmyprint::service::storage::S3Settings;
    /// let s = S3Settings::parse_url("s3://models/fixmyprint/eu").unwrap();
    /// assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("models", "fixmyprint/eu"));
    /// assert!(S3Settings::parse_url("s3://").is_err());
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
            multipart_threshold: DEFAULT_PART_SIZE,
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

/// Results as objects `{prefix}/results/{key}.stl` in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    store: Arc<AmazonS3>,
    settings: S3Settings,
    part_size: usize,
}

/// One line: the chain of an `object_store` error, whitespace collapsed, bounded.
fn one_line(e: &dyn std::error::Error) -> String {
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

fn io_err(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, one_line(&e))
}

impl S3Store {
    /// Builds the client (no request yet). `timeout` bounds each request; transient failures
    /// are retried a few times within it.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn new(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        diax_sdk::client::install_crypto_provider();
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
                "http" if diax_sdk::client::require_secure_url(endpoint).is_ok() => {
                    options = options.with_allow_http(true);
                }
                _ => {
                    return Err(format!(
                        "storage endpoint {endpoint:?}: must be https (plain http only on loopback)"
                    ));
                }
            }
            // Path-style requests: `{endpoint}/{bucket}/{key}`, which every S3-compatible
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
        let part_size = settings.multipart_threshold.max(5 * 1024 * 1024);
        Ok(Self {
            store: Arc::new(store),
            settings,
            part_size,
        })
    }

    /// [`S3Store::new`], then a probe: writes and removes a small object under the prefix, so
    /// an unknown bucket, refused credentials or an unreachable endpoint fail here.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn connect(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        let store = Self::new(settings, timeout)?;
        store.probe().await?;
        Ok(store)
    }

    /// Writes and removes a probe object.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn probe(&self) -> Result<(), String> {
        let path = self.path_of(&format!(".probe-{}", diax_sdk::util::random_token("", 12)));
        let what = |op: &str, e: object_store::Error| {
            format!(
                "result store {} at {}: {op} failed: {}",
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

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The object name of `key` (already checked).
    fn path_of(&self, name: &str) -> ObjectPath {
        let name = if self.settings.prefix.is_empty() {
            format!("results/{name}")
        } else {
            format!("{}/results/{name}", self.settings.prefix)
        };
        ObjectPath::from(name)
    }

    fn object(&self, key: &str) -> io::Result<ObjectPath> {
        check_key(key)?;
        Ok(self.path_of(&format!("{key}.stl")))
    }

    async fn put_parts(&self, path: &ObjectPath, bytes: Bytes) -> io::Result<()> {
        let mut upload = self.store.put_multipart(path).await.map_err(io_err)?;
        // Parts are slices of one buffer (no copies); at most 4 in flight.
        let parts: Vec<Bytes> = (0..bytes.len())
            .step_by(self.part_size)
            .map(|at| bytes.slice(at..(at + self.part_size).min(bytes.len())))
            .collect();
        let uploads: Vec<_> = parts
            .into_iter()
            .map(|p| upload.put_part(PutPayload::from_bytes(p)))
            .collect();
        let sent = futures_util::stream::iter(uploads)
            .buffered(4)
            .try_collect::<Vec<()>>()
            .await;
        let done = match sent {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %one_line(&abort), "could not abort a failed multipart upload");
            }
            return Err(io_err(e));
        }
        Ok(())
    }
}

impl ResultStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.object(key)?;
            if bytes.len() > self.part_size {
                self.put_parts(&path, bytes).await
            } else {
                self.store
                    .put(&path, PutPayload::from_bytes(bytes))
                    .await
                    .map(|_| ())
                    .map_err(io_err)
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        Box::pin(async move {
            let path = self.object(key)?;
            match self.store.get(&path).await {
                Ok(got) => got.bytes().await.map(Some).map_err(io_err),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_err(e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.object(key)?;
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io_err(e)),
            }
        })
    }

    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<String>>> {
        Box::pin(async move {
            let path = self.object(key)?;
            let url = self
                .store
                .signed_url(http::Method::GET, &path, ttl.min(MAX_PRESIGN))
                .await
                .map_err(io_err)?;
            Ok(Some(url.to_string()))
        })
    }

    fn describe(&self) -> String {
        self.settings.url()
    }
}
