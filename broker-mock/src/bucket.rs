//! Model bytes in an S3-compatible bucket (`--storage s3://bucket/prefix`), through the
//! `object_store` crate (ring signatures, the same rustls stack as the rest of the broker).
//!
//! - Objects are `{prefix}/models/{model_id}/{random}.stl`: a fresh name for every version
//!   written, so a retried or abandoned write never replaces a stored version, and an object
//!   no database row names is an orphan the sweep removes ([`Bucket::sweep_orphans`]).
//! - A model of up to the part size is one `PUT`; a larger one is a multipart upload in parts
//!   of that size, aborted when anything fails. Either way the object becomes visible only
//!   when complete: a failed or interrupted upload leaves no object. (An unfinished multipart
//!   upload left by a crash is invisible and is removed by the bucket's
//!   `AbortIncompleteMultipartUpload` lifecycle rule; see `broker-mock/README.md`.)
//! - [`Bucket::upload`] streams: it holds at most a few parts in memory whatever the size.
//! - [`Bucket::connect`] writes and removes a probe object, so a wrong bucket, credentials or
//!   endpoint fail at start-up, in one line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer as _;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutPayload, RetryConfig,
    WriteMultipart,
};
use sha2::{Digest as _, Sha256};

use crate::config::{Config, S3Location};

/// The longest a SigV4 presigned URL may live (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// The smallest part S3 accepts (but for the last).
const MIN_PART: usize = 5 * 1024 * 1024;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket and key prefix.
    pub location: S3Location,
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
    /// Multipart threshold and part size (at least 5 MiB).
    pub part_size: usize,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("location", &self.location)
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
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl S3Settings {
    /// The bucket settings of `config`, or `None` when models stay in the database
    /// (`--storage db`).
    ///
    /// # Errors
    /// A bad `--storage` value.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        if config.storage == "db" {
            return Ok(None);
        }
        Ok(Some(Self {
            location: S3Location::parse(&config.storage)?,
            endpoint: config.s3_endpoint.clone(),
            region: config.s3_region.clone(),
            access_key_id: config.s3_access_key_id.clone(),
            secret_access_key: config.s3_secret_access_key.as_ref().map(|s| s.0.clone()),
            session_token: config.s3_session_token.as_ref().map(|s| s.0.clone()),
            part_size: config.s3_part_size,
        }))
    }
}

/// One line: the chain of an error, whitespace collapsed, bounded.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
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

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BucketError {
    /// The stream being uploaded ended in an error of its own (the client went away):
    /// nothing is stored.
    #[error("{0}")]
    Source(String),
    /// The stream being uploaded passed the size limit: nothing is stored.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// The store refused or could not be reached.
    #[error("model store: {0}")]
    Store(String),
}

impl From<object_store::Error> for BucketError {
    fn from(e: object_store::Error) -> Self {
        Self::Store(one_line(&e))
    }
}

/// What [`Bucket::upload`] stored.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The object's key (relative to nothing: the full object name).
    pub(crate) key: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its SHA-256, lowercase hex.
    pub(crate) sha256: String,
}

/// A connected bucket.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    settings: S3Settings,
    part_size: usize,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// Builds the client (no request yet). `timeout` bounds each request; transient
    /// failures are retried a few times within it.
    ///
    /// # Errors
    /// One line naming the bad setting.
    pub fn new(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        diax_sdk::client::install_crypto_provider();
        let mut options = ClientOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout.min(Duration::from_secs(10)));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.location.bucket)
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
            .map_err(|e| format!("storage {}: {}", settings.location.url(), one_line(&e)))?;
        let part_size = settings.part_size.max(MIN_PART);
        Ok(Self {
            store: Arc::new(store),
            settings,
            part_size,
        })
    }

    /// [`Bucket::new`], then a probe: writes and removes a small object under the prefix, so
    /// an unknown bucket, refused credentials or an unreachable endpoint fail here.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn connect(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        let bucket = Self::new(settings, timeout)?;
        bucket.probe().await?;
        Ok(bucket)
    }

    /// Writes and removes a probe object.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn probe(&self) -> Result<(), String> {
        let path = self.under(&format!(
            ".probe-{}",
            diax_sdk::util::random_token("", 12).to_ascii_lowercase()
        ));
        let what = |op: &str, e: object_store::Error| {
            format!(
                "model store {} at {}: {op} failed: {}",
                self.settings.location.url(),
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

    /// `name` under the prefix.
    fn under(&self, name: &str) -> ObjectPath {
        if self.settings.location.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.settings.location.prefix))
        }
    }

    /// Where model objects live: `{prefix}/models`.
    fn models_root(&self) -> ObjectPath {
        self.under("models")
    }

    /// A fresh object name for a version of `model` (a protocol id).
    pub(crate) fn new_key(&self, model: &str) -> String {
        let name = format!(
            "models/{model}/{}.stl",
            diax_sdk::util::random_token("", 24).to_ascii_lowercase()
        );
        self.under(&name).to_string()
    }

    /// Streams `body` into a new object for `model`, hashing as it goes, refusing more than
    /// `max` bytes: one `PUT` when it fits in one part, else a multipart upload with at most
    /// [`PARTS_IN_FLIGHT`] parts in flight (memory stays flat with the model's size). On any
    /// failure (of the body or the store) nothing is left visible.
    pub(crate) async fn upload<S, E>(
        &self,
        model: &str,
        body: S,
        max: u64,
    ) -> Result<Stored, BucketError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: fmt::Display,
    {
        let key = self.new_key(model);
        let path = ObjectPath::from(key.clone());
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let too_big = || BucketError::TooLarge(max);
        // The first part's worth decides: a single PUT, or a multipart upload.
        let mut first: Vec<Bytes> = Vec::new();
        let mut first_len = 0usize;
        let mut ended = false;
        while first_len <= self.part_size {
            match body.next().await {
                Some(Ok(chunk)) => {
                    size = size.saturating_add(chunk.len() as u64);
                    if size > max {
                        return Err(too_big());
                    }
                    hasher.update(&chunk);
                    first_len += chunk.len();
                    first.push(chunk);
                }
                Some(Err(e)) => return Err(BucketError::Source(e.to_string())),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let payload: PutPayload = first.into_iter().collect();
            self.store.put(&path, payload).await?;
            return Ok(Stored {
                key,
                size,
                sha256: hex::encode(hasher.finalize()),
            });
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        for chunk in first {
            writer.put(chunk);
        }
        let rest = async {
            loop {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                match body.next().await {
                    Some(Ok(chunk)) => {
                        size = size.saturating_add(chunk.len() as u64);
                        if size > max {
                            return Err(too_big());
                        }
                        hasher.update(&chunk);
                        writer.put(chunk);
                    }
                    Some(Err(e)) => return Err(BucketError::Source(e.to_string())),
                    None => return Ok(()),
                }
            }
        }
        .await;
        match rest {
            Ok(()) => {
                if let Err(e) = writer.finish().await {
                    return Err(e.into());
                }
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %one_line(&abort), "could not abort a failed multipart upload");
                }
                return Err(e);
            }
        }
        Ok(Stored {
            key,
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The object `key` as a stream of chunks, with its size.
    pub(crate) async fn get(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, BucketError>>), BucketError> {
        let got = self.store.get(&ObjectPath::from(key)).await?;
        let size = got.meta.size;
        Ok((size, got.into_stream().map_err(BucketError::from).boxed()))
    }

    /// Removes `key` (no error when absent).
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BucketError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A URL that lets its bearer `GET` object `key` for `ttl` (at most [`MAX_PRESIGN`])
    /// with no other credential.
    pub(crate) async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<String, BucketError> {
        let url = self
            .store
            .signed_url(
                http::Method::GET,
                &ObjectPath::from(key),
                ttl.min(MAX_PRESIGN),
            )
            .await?;
        Ok(url.to_string())
    }

    /// The keys of the model objects last written before `before` (Unix seconds), for the
    /// sweep of objects no version names.
    pub(crate) fn models_written_before(
        &self,
        before: i64,
    ) -> BoxStream<'static, Result<String, BucketError>> {
        let root = self.models_root();
        self.store
            .list(Some(&root))
            .map_err(BucketError::from)
            .try_filter_map(move |meta| {
                let old = meta.last_modified.timestamp() < before;
                std::future::ready(Ok(old.then(|| meta.location.to_string())))
            })
            .boxed()
    }
}
