//! Where results are kept: a small trait with two implementations, a local directory
//! ([`DirStore`], the default: zero setup; several instances on one machine or a shared file
//! system may share it) and an S3-compatible bucket ([`S3Store`], `--storage s3://bucket/prefix`:
//! instances on separate machines share nothing but the database and the bucket).
//!
//! A result written through either is visible whole or not at all. With the directory, the
//! broker fetches a result from `GET /results/{id}` with a bearer credential; with a bucket,
//! from a presigned `GET` URL straight from the store ([`ResultStore::presign_get`]).

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use diax_sdk::replay::BoxFuture;

mod s3;
pub use s3::{DEFAULT_PART_SIZE, MAX_PRESIGN, S3Settings, S3Store};

/// The key of the repair picture kept beside the result under `result_key`: stored, served
/// and swept with it.
#[must_use]
pub fn picture_key(result_key: &str) -> String {
    format!("{result_key}-picture")
}

/// A store of result objects by key (the provider job id).
pub trait ResultStore: Send + Sync + Debug {
    /// Stores `bytes` under `key`, atomically (readers see all or nothing).
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, io::Result<()>>;
    /// The bytes under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>>;
    /// Removes `key` (no error when absent).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>>;
    /// A URL that lets its bearer `GET` the object under `key` for `ttl` with no other
    /// credential (a presigned URL), or `None` when this store cannot make one (the service
    /// then serves the result itself, behind a credential of its own).
    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, io::Result<Option<String>>> {
        let _ = (key, ttl);
        Box::pin(async { Ok(None) })
    }
    /// Where the results are, for logs (`dir:/path`, `s3://bucket/prefix`).
    fn describe(&self) -> String {
        "results store".to_owned()
    }
    /// Removes unfinished writes (left by a crash) last touched before `before`; how many.
    fn sweep_partial(&self, before: std::time::SystemTime) -> BoxFuture<'_, io::Result<u64>> {
        let _ = before;
        Box::pin(async { Ok(0) })
    }
}

/// Results as files in a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store in `dir` (created when missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(format!("{key}.stl")))
    }
}

/// Keys are protocol ids (`[A-Za-z0-9_-]`, at most 128); refuse anything else.
fn check_key(key: &str) -> io::Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad object key",
        ))
    }
}

impl ResultStore for DirStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let tmp = self.dir.join(format!(
                ".{key}.{}.part",
                diax_sdk::util::random_token("", 8)
            ));
            let result = async {
                // Readable by the service's user only (0600 on Unix).
                let mut options = tokio::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                options.mode(0o600);
                let mut file = options.open(&tmp).await?;
                tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await?;
                file.sync_all().await?;
                drop(file);
                tokio::fs::rename(&tmp, &path).await
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            result
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::read(&path).await {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.dir.display())
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn sweep_partial(&self, before: std::time::SystemTime) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(async move {
            let mut removed = 0;
            let mut entries = tokio::fs::read_dir(&self.dir).await?;
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !(name.starts_with('.') && name.ends_with(".part")) {
                    continue;
                }
                let old = entry
                    .metadata()
                    .await
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{DirStore, ResultStore as _};

    #[cfg(unix)]
    #[tokio::test]
    async fn results_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path()).unwrap();
        store
            .put("res_1", bytes::Bytes::from_static(b"solid"))
            .await
            .unwrap();
        let mut files = std::fs::read_dir(dir.path()).unwrap();
        let file = files.next().unwrap().unwrap();
        assert!(files.next().is_none(), "no .part left behind");
        let mode = file.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
