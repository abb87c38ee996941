//! Results in an S3-compatible bucket, through the `object_store` crate; the settings, the
//! client, the endpoint rule and the start-up probe are the SDK's ([`diax_sdk::s3`], feature
//! `object-store`), shared with the broker mock.
//!
//! - A result of up to [`S3Settings::part_size`] bytes is one `PUT`; a larger one is a
//!   multipart upload in parts of that size, aborted when any part fails. Either way the object
//!   becomes visible only when complete: a failed or interrupted upload leaves no object (an
//!   unfinished multipart upload left by a crash is invisible and removed by the bucket's
//!   `AbortIncompleteMultipartUpload` lifecycle rule; see docs/FIXMYPRINT.md).
//! - The broker fetches a result from a presigned `GET` URL ([`ResultStore::presign_get`]), so
//!   results never pass through the service.
//! - [`S3Store::connect`] writes and removes a probe object, so a wrong bucket, credentials or
//!   endpoint fail at start-up, in one line.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use diax_sdk::replay::BoxFuture;
use diax_sdk::s3::{Probe, S3Bucket, one_line};
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};

pub use diax_sdk::s3::{DEFAULT_PART_SIZE, MAX_PRESIGN, S3Settings};

use super::{ResultStore, check_key};

/// How the start-up probe names the bucket, and where it writes (beside the results).
const PROBE: Probe<'static> = Probe {
    role: "result store",
    dir: "results",
};

/// Results as objects `{prefix}/results/{key}.stl` in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: S3Bucket,
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
        S3Bucket::new(settings, timeout).map(|bucket| Self { bucket })
    }

    /// [`S3Store::new`], then a probe: writes and removes a small object under the prefix, so
    /// an unknown bucket, refused credentials or an unreachable endpoint fail here.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn connect(settings: S3Settings, timeout: Duration) -> Result<Self, String> {
        S3Bucket::connect(settings, timeout, &PROBE)
            .await
            .map(|bucket| Self { bucket })
    }

    /// Writes and removes a probe object.
    ///
    /// # Errors
    /// One line naming the store and what failed.
    pub async fn probe(&self) -> Result<(), String> {
        self.bucket.probe(&PROBE).await
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        self.bucket.settings()
    }

    /// The object name of `key` (already checked).
    fn path_of(&self, name: &str) -> ObjectPath {
        self.bucket.path(&format!("results/{name}"))
    }

    fn object(&self, key: &str) -> io::Result<ObjectPath> {
        check_key(key)?;
        Ok(self.path_of(&format!("{key}.stl")))
    }

    async fn put_parts(&self, path: &ObjectPath, bytes: Bytes) -> io::Result<()> {
        let mut upload = self
            .bucket
            .store()
            .put_multipart(path)
            .await
            .map_err(io_err)?;
        // Parts are slices of one buffer (no copies); at most 4 in flight.
        let part_size = self.bucket.part_size();
        let parts: Vec<Bytes> = (0..bytes.len())
            .step_by(part_size)
            .map(|at| bytes.slice(at..(at + part_size).min(bytes.len())))
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
            if bytes.len() > self.bucket.part_size() {
                self.put_parts(&path, bytes).await
            } else {
                self.bucket
                    .store()
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
            match self.bucket.store().get(&path).await {
                Ok(got) => got.bytes().await.map(Some).map_err(io_err),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_err(e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.object(key)?;
            self.bucket.delete(&path).await.map_err(io_err)
        })
    }

    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<String>>> {
        Box::pin(async move {
            let path = self.object(key)?;
            let url = self.bucket.presign_get(&path, ttl).await.map_err(io_err)?;
            Ok(Some(url.to_string()))
        })
    }

    fn describe(&self) -> String {
        self.bucket.settings().url()
    }
}
