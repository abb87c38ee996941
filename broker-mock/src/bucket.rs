//! Model bytes in an S3-compatible bucket (`--storage s3://bucket/prefix`), through the
//! `object_store` crate; the settings, the client, the endpoint rule and the start-up probe
//! are the SDK's ([`diax_sdk::s3`], feature `object-store`), shared with FixMyPrint.
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
use std::time::Duration;

use bytes::Bytes;
use diax_sdk::s3::{Probe, S3Bucket, S3Settings, one_line};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use crate::config::Config;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// How the start-up probe names the bucket, and where it writes (under the prefix).
const PROBE: Probe<'static> = Probe {
    role: "model store",
    dir: "",
};

/// The bucket settings of `config`, or `None` when models stay in the database
/// (`--storage db`).
///
/// # Errors
/// A bad `--storage` value.
pub fn settings_from_config(config: &Config) -> Result<Option<S3Settings>, String> {
    if config.storage == "db" {
        return Ok(None);
    }
    let mut settings = S3Settings {
        part_size: config.s3_part_size,
        ..S3Settings::parse_url(&config.storage)?
    };
    config.s3.apply_to(&mut settings);
    Ok(Some(settings))
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
#[derive(Debug, Clone)]
pub struct Bucket {
    inner: S3Bucket,
}

impl Bucket {
    /// Builds the client (no request yet). `timeout` bounds each request; transient
    /// failures are retried a few times within it.
    ///
    /// # Errors
    /// One line naming the bad setting.
    pub fn new(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        S3Bucket::new(settings, timeout).map(|inner| Self { inner })
    }

    /// [`Bucket::new`], then a probe: writes and removes a small object under the prefix, so
    /// an unknown bucket, refused credentials or an unreachable endpoint fail here.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn connect(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        S3Bucket::connect(settings, timeout, &PROBE)
            .await
            .map(|inner| Self { inner })
    }

    /// Writes and removes a probe object.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn probe(&self) -> Result<(), String> {
        self.inner.probe(&PROBE).await
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        self.inner.settings()
    }

    /// Where model objects live: `{prefix}/models`.
    fn models_root(&self) -> ObjectPath {
        self.inner.path("models")
    }

    /// A fresh object name for a version of `model` (a protocol id).
    pub(crate) fn new_key(&self, model: &str) -> String {
        let name = format!(
            "models/{model}/{}.stl",
            diax_sdk::util::random_token("", 24).to_ascii_lowercase()
        );
        self.inner.path(&name).to_string()
    }

    /// The most bytes one [`upload`](Self::upload) holds in memory: the part being filled
    /// and the parts in flight.
    pub(crate) fn buffered_bytes(&self) -> u64 {
        (self.inner.part_size() as u64).saturating_mul(PARTS_IN_FLIGHT as u64 + 1)
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
        let part_size = self.inner.part_size();
        while first_len <= part_size {
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
            self.inner.store().put(&path, payload).await?;
            return Ok(Stored {
                key,
                size,
                sha256: hex::encode(hasher.finalize()),
            });
        }
        let upload = self.inner.store().put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.inner.part_size());
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
        let got = self.inner.store().get(&ObjectPath::from(key)).await?;
        let size = got.meta.size;
        Ok((size, got.into_stream().map_err(BucketError::from).boxed()))
    }

    /// Removes `key` (no error when absent).
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BucketError> {
        Ok(self.inner.delete(&ObjectPath::from(key)).await?)
    }

    /// A URL that lets its bearer `GET` object `key` for `ttl` (at most
    /// [`MAX_PRESIGN`](diax_sdk::s3::MAX_PRESIGN)) with no other credential.
    pub(crate) async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<String, BucketError> {
        let url = self.inner.presign_get(&ObjectPath::from(key), ttl).await?;
        Ok(url.to_string())
    }

    /// The keys of the model objects last written before `before` (Unix seconds), for the
    /// sweep of objects no version names.
    pub(crate) fn models_written_before(
        &self,
        before: i64,
    ) -> BoxStream<'static, Result<String, BucketError>> {
        let root = self.models_root();
        self.inner
            .store()
            .list(Some(&root))
            .map_err(BucketError::from)
            .try_filter_map(move |meta| {
                let old = meta.last_modified.timestamp() < before;
                std::future::ready(Ok(old.then(|| meta.location.to_string())))
            })
            .boxed()
    }
}
