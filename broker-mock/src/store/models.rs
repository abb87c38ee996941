//! The model repository: models with numbered versions (uploads and job results), and the
//! temporary credentials that open one version for one method until they expire. Owns
//! `models`, `model_versions` and `credentials`.
//!
//! A version's bytes are in its row (`content`, the default) or, with `--storage s3://…`,
//! in an object of the bucket that the row names (`object_key`). The object is written
//! first and the row second, so a row never names a missing object; an object no row names
//! (a failed insert, a crash in between) is removed by the janitor's sweep.

use diax_sdk::util::{random_token, sha256_hex};
use diax_sdk::wire::{Model, ModelList, ModelVersion, VersionSource, broker_paths};
use diax_sdk::{JobId, ModelId, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqliteConnection, SqlitePool};

use super::{opt_id, scalar_id};
use crate::bucket::{Bucket, BucketError, Stored};
use crate::error::{ApiError, ApiResult};

/// Prefix of temporary credentials.
pub(crate) const CREDENTIAL_PREFIX: &str = "tc_";

/// The one method a temporary credential allows.
const CREDENTIAL_METHOD: &str = "GET";

struct VersionRow(ModelVersion);

/// The absolute URL of the picture of `model` version `version` on the broker at `base`.
fn report_url(base: &str, model: &ModelId, version: u32) -> String {
    format!(
        "{}{}",
        base.trim_end_matches('/'),
        broker_paths::MODEL_REPORT
            .replace("{model_id}", model.as_str())
            .replace("{version}", &version.to_string())
    )
}

impl<'r> FromRow<'r, SqliteRow> for VersionRow {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        let job: Option<JobId> = opt_id(row, "source_job_id")?;
        let provider = opt_id(row, "source_provider_id")?;
        let from: Option<u32> = row.try_get("source_from_version")?;
        let source = match (job, provider, from) {
            (Some(job_id), Some(provider_id), Some(from_version)) => Some(VersionSource {
                job_id,
                provider_id,
                from_version,
            }),
            (None, None, None) => None,
            _ => {
                return Err(super::corrupt(
                    "source_job_id",
                    "a version's source is stored in part",
                ));
            }
        };
        Ok(Self(ModelVersion {
            version: row.try_get("version")?,
            size: row.try_get("size")?,
            sha256: row.try_get("sha256")?,
            created_at: row.try_get("created_at")?,
            source,
            // Set by `find` (which knows the broker's URL) from `has_picture`.
            report_url: row.try_get::<bool, _>("has_picture")?.then(String::new),
        }))
    }
}

/// `owner`'s model `id` with its versions, or `NotFound` (also when it is someone else's);
/// `base` is the broker's URL, for the versions' `report_url`.
pub(crate) async fn find(
    db: &SqlitePool,
    base: &str,
    owner: &UserId,
    id: &ModelId,
) -> ApiResult<Model> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM models WHERE id = $1 AND owner_id = $2")
            .bind(id.as_str())
            .bind(owner.as_str())
            .fetch_optional(db)
            .await?;
    let name = name.ok_or_else(|| ApiError::NotFound(format!("no model {id}")))?;
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT version, size, sha256, created_at, source_job_id, source_provider_id, source_from_version,
                picture IS NOT NULL AS has_picture
         FROM model_versions WHERE model_id = $1 ORDER BY version",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    let versions = rows
        .into_iter()
        .map(|VersionRow(mut v)| {
            if v.report_url.is_some() {
                v.report_url = Some(report_url(base, id, v.version));
            }
            v
        })
        .collect();
    Ok(Model {
        model_id: id.clone(),
        name,
        versions,
    })
}

/// `owner`'s models, oldest first (`base` as for [`find`]).
pub(crate) async fn list(db: &SqlitePool, base: &str, owner: &UserId) -> ApiResult<ModelList> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM models WHERE owner_id = $1 ORDER BY created_at, id")
            .bind(owner.as_str())
            .fetch_all(db)
            .await?;
    let mut models = Vec::with_capacity(ids.len());
    for id in ids {
        let id: ModelId = scalar_id("models.id", id)?;
        models.push(find(db, base, owner, &id).await?);
    }
    Ok(ModelList { models })
}

/// A model's file name: 1–255 characters, no `/`, `\` or control characters, not `.`/`..`.
pub(crate) fn check_file_name(name: &str) -> ApiResult<()> {
    let n = name.chars().count();
    if n == 0
        || n > 255
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
        || name == "."
        || name == ".."
    {
        return Err(ApiError::InvalidRequest(
            "?name= must be a file name of 1 to 255 characters without '/', '\\' or control characters".into(),
        ));
    }
    Ok(())
}

/// How much one user may store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    /// Models.
    pub(crate) models: u32,
    /// Bytes over all versions of all models (results included).
    pub(crate) bytes: u64,
}

/// Refuses a new model of `bytes` bytes for `owner` when it would pass `quota`: `403
/// forbidden` for the number of models, `413 payload-too-large` for the bytes.
async fn check_quota(
    conn: &mut sqlx::SqliteConnection,
    owner: &UserId,
    bytes: u64,
    quota: Quota,
) -> ApiResult<()> {
    let (models, stored): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM models WHERE owner_id = $1),
                (SELECT COALESCE(SUM(v.size), 0) FROM model_versions v JOIN models m ON m.id = v.model_id WHERE m.owner_id = $1)",
    )
    .bind(owner.as_str())
    .fetch_one(&mut *conn)
    .await?;
    if models >= i64::from(quota.models) {
        return Err(ApiError::Forbidden(format!(
            "model quota reached: a user may hold {} models; delete one first",
            quota.models
        )));
    }
    let after = u64::try_from(stored).unwrap_or(0).saturating_add(bytes);
    if after > quota.bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "storage quota reached: a user may store {} bytes of models",
            quota.bytes
        )));
    }
    Ok(())
}

/// Where a new version's bytes are: in memory, to go into its row, or already in the
/// bucket.
#[derive(Debug)]
pub(crate) enum Body {
    /// The bytes, stored in the row.
    Inline(Vec<u8>),
    /// An object written to the bucket, named by the row.
    Object(Stored),
}

impl Body {
    fn size(&self) -> u64 {
        match self {
            Body::Inline(b) => b.len() as u64,
            Body::Object(o) => o.size,
        }
    }

    fn sha256(&self) -> String {
        match self {
            Body::Inline(b) => sha256_hex(b),
            Body::Object(o) => o.sha256.clone(),
        }
    }

    /// What goes into the `content` column (empty for an object).
    fn content(&self) -> &[u8] {
        match self {
            Body::Inline(b) => b,
            Body::Object(_) => &[],
        }
    }

    fn object_key(&self) -> Option<&str> {
        match self {
            Body::Inline(_) => None,
            Body::Object(o) => Some(&o.key),
        }
    }
}

/// Streams `body` (at most `max` bytes) into the bucket as a new object for `model`.
///
/// # Errors
/// `PayloadTooLarge` past `max`, `InvalidRequest` when the body fails (the client went
/// away), an opaque 500 when the bucket fails; nothing is stored then.
pub(crate) async fn stage_stream<S, E>(
    bucket: &Bucket,
    model: &ModelId,
    body: S,
    max: u64,
) -> ApiResult<Body>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send,
    E: std::fmt::Display,
{
    bucket
        .upload(model.as_str(), body, max)
        .await
        .map(Body::Object)
        .map_err(store_error)
}

/// The bytes of a version kept in the bucket as object `key`: its size and a stream of
/// chunks.
///
/// # Errors
/// An opaque 500 when there is no bucket (the broker was started with `--storage db` over a
/// database whose versions are in a bucket) or the bucket fails.
pub(crate) async fn open_object(
    bucket: Option<&Bucket>,
    key: &str,
) -> ApiResult<(
    u64,
    futures_util::stream::BoxStream<'static, Result<bytes::Bytes, BucketError>>,
)> {
    let bucket = bucket.ok_or_else(|| {
        ApiError::Internal(format!(
            "version kept in a bucket ({key}) but the broker runs with --storage db"
        ))
    })?;
    bucket.get(key).await.map_err(store_error)
}

/// A presigned `GET` URL of object `key`, valid for `ttl`.
///
/// # Errors
/// As [`open_object`].
pub(crate) async fn presign_object(
    bucket: Option<&Bucket>,
    key: &str,
    ttl: std::time::Duration,
) -> ApiResult<String> {
    let bucket = bucket.ok_or_else(|| {
        ApiError::Internal(format!(
            "version kept in a bucket ({key}) but the broker runs with --storage db"
        ))
    })?;
    bucket.presign_get(key, ttl).await.map_err(store_error)
}

/// Removes the object of a version that was not recorded after all (best effort: the sweep
/// removes what this misses).
pub(crate) async fn discard(bucket: Option<&Bucket>, body: &Body) {
    if let (Some(bucket), Body::Object(o)) = (bucket, body)
        && let Err(e) = bucket.delete(&o.key).await
    {
        tracing::warn!(key = %o.key, error = %e, "could not remove an unrecorded model object; the sweep will");
    }
}

/// A bucket failure as an API error: an opaque 500 whose reason goes to the log.
pub(crate) fn store_error(e: BucketError) -> ApiError {
    match e {
        BucketError::Source(why) => ApiError::InvalidRequest(format!("upload failed: {why}")),
        e @ BucketError::TooLarge(_) => ApiError::PayloadTooLarge(format!("body {e}")),
        BucketError::Store(why) => ApiError::Internal(format!("model store: {why}")),
    }
}

/// Checks that `owner` may add a new model of `size` bytes within `quota`, before its bytes
/// are taken in (a streamed upload says its size up front only in `content-length`).
pub(crate) async fn precheck_quota(
    db: &SqlitePool,
    owner: &UserId,
    size: u64,
    quota: Quota,
) -> ApiResult<()> {
    let mut conn = db.acquire().await?;
    check_quota(&mut conn, owner, size, quota).await
}

/// A new model: its version 1 and who owns it.
pub(crate) struct NewModel<'a> {
    /// Fresh: [`ModelId::generate`] (a staged object is already named after it).
    pub(crate) id: &'a ModelId,
    pub(crate) owner: &'a UserId,
    /// Checked by [`check_file_name`].
    pub(crate) name: &'a str,
    /// Non-empty, within the size limit.
    pub(crate) body: &'a Body,
}

/// Stores `new` within `quota` (`base` as for [`find`]). When refused, a staged object is
/// left for the caller to [`discard`].
pub(crate) async fn upload(
    db: &SqlitePool,
    base: &str,
    new: &NewModel<'_>,
    quota: Quota,
    now: i64,
) -> ApiResult<Model> {
    let NewModel {
        id,
        owner,
        name,
        body,
    } = *new;
    check_file_name(name)?;
    if body.size() == 0 {
        return Err(ApiError::InvalidRequest("empty model".into()));
    }
    let mut tx = super::begin_write(db).await?;
    check_quota(&mut tx, owner, body.size(), quota).await?;
    sqlx::query("INSERT INTO models (id, owner_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.as_str())
        .bind(owner.as_str())
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO model_versions (model_id, version, size, sha256, content, object_key, created_at) VALUES ($1, 1, $2, $3, $4, $5, $6)",
    )
    .bind(id.as_str())
    .bind(i64::try_from(body.size()).unwrap_or(i64::MAX))
    .bind(body.sha256())
    .bind(body.content())
    .bind(body.object_key())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    find(db, base, owner, id).await
}

/// A model version a job made: its result, with the job's checked `picture` (a PNG) if it
/// sent one.
pub(crate) struct NewVersion<'a> {
    pub(crate) model: &'a ModelId,
    pub(crate) body: &'a Body,
    pub(crate) picture: Option<&'a [u8]>,
    pub(crate) source: &'a VersionSource,
}

/// Stores `new` as the next version of its model on `conn` (inside the transaction that
/// records the event which made it, so a version exists exactly when its event was
/// applied); returns the version number.
pub(crate) async fn add_version(
    conn: &mut SqliteConnection,
    new: &NewVersion<'_>,
    now: i64,
) -> ApiResult<u32> {
    let NewVersion {
        model,
        body,
        picture,
        source,
    } = new;
    let version: u32 = sqlx::query_scalar(
        "INSERT INTO model_versions (model_id, version, size, sha256, content, created_at, source_job_id, source_provider_id, source_from_version, picture, picture_sha256, object_key)
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM model_versions WHERE model_id = $1
         RETURNING version",
    )
    .bind(model.as_str())
    .bind(i64::try_from(body.size()).unwrap_or(i64::MAX))
    .bind(body.sha256())
    .bind(body.content())
    .bind(now)
    .bind(source.job_id.as_str())
    .bind(source.provider_id.as_str())
    .bind(i64::from(source.from_version))
    .bind(*picture)
    .bind(picture.map(sha256_hex))
    .bind(body.object_key())
    .fetch_one(&mut *conn)
    .await?;
    Ok(version)
}

/// The size of the picture of `model` version `version` (`None`: it has none) and the
/// model's owner, if the version exists; reads no picture bytes.
pub(crate) async fn picture_size(
    db: &SqlitePool,
    model: &ModelId,
    version: u32,
) -> ApiResult<Option<(Option<u64>, UserId)>> {
    let row: Option<(Option<i64>, String)> = sqlx::query_as(
        "SELECT length(v.picture), m.owner_id FROM model_versions v JOIN models m ON m.id = v.model_id
         WHERE v.model_id = $1 AND v.version = $2",
    )
    .bind(model.as_str())
    .bind(version)
    .fetch_optional(db)
    .await?;
    row.map(|(size, owner)| {
        Ok((
            size.map(|s| s.unsigned_abs()),
            scalar_id("models.owner_id", owner)?,
        ))
    })
    .transpose()
}

/// The picture of `model` version `version` (the PNG and its SHA-256), if the version
/// exists and has one. Check its owner with [`picture_size`] first.
pub(crate) async fn picture(
    db: &SqlitePool,
    model: &ModelId,
    version: u32,
) -> ApiResult<Option<(Vec<u8>, String)>> {
    let row: Option<(Option<Vec<u8>>, Option<String>)> = sqlx::query_as(
        "SELECT picture, picture_sha256 FROM model_versions WHERE model_id = $1 AND version = $2",
    )
    .bind(model.as_str())
    .bind(version)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(png, sha256)| png.zip(sha256)))
}

/// What an offer or an input says about a model version.
pub(crate) struct VersionFacts {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    /// The bucket object holding the bytes, if they are not in the row.
    pub(crate) object_key: Option<String>,
}

/// The name, size and digest of `model` version `version` (which exists: a job refers to it).
pub(crate) async fn version_facts(
    db: &SqlitePool,
    model: &ModelId,
    version: u32,
) -> ApiResult<VersionFacts> {
    let (name, size, sha256, object_key): (String, u64, String, Option<String>) = sqlx::query_as(
        "SELECT m.name, v.size, v.sha256, v.object_key FROM models m JOIN model_versions v ON v.model_id = m.id
         WHERE m.id = $1 AND v.version = $2",
    )
    .bind(model.as_str())
    .bind(version)
    .fetch_one(db)
    .await?;
    Ok(VersionFacts {
        name,
        size,
        sha256,
        object_key,
    })
}

/// Where a model version's bytes are, with their size, digest and owner.
pub(crate) struct Content {
    /// The size in bytes.
    pub(crate) size: u64,
    /// The bucket object holding the bytes; `None`: they are in the row
    /// ([`content_bytes`]).
    pub(crate) object_key: Option<String>,
    pub(crate) sha256: String,
    pub(crate) owner: UserId,
    /// The job whose result this version is, as stored (for the message log).
    pub(crate) source_job: Option<String>,
}

/// What [`Content`] says of `model` version `version`, if it exists; the bytes are not
/// read.
pub(crate) async fn content(
    db: &SqlitePool,
    model: &ModelId,
    version: u32,
) -> ApiResult<Option<Content>> {
    type Row = (i64, Option<String>, String, String, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT v.size, v.object_key, v.sha256, m.owner_id, v.source_job_id FROM model_versions v JOIN models m ON m.id = v.model_id
         WHERE v.model_id = $1 AND v.version = $2",
    )
    .bind(model.as_str())
    .bind(version)
    .fetch_optional(db)
    .await?;
    row.map(|(size, object_key, sha256, owner, source_job)| {
        Ok(Content {
            size: u64::try_from(size).map_err(|_| super::corrupt("size", "negative"))?,
            object_key,
            sha256,
            owner: scalar_id("models.owner_id", owner)?,
            source_job,
        })
    })
    .transpose()
}

/// The bytes of `model` version `version` kept in its row, or `NotFound`.
pub(crate) async fn content_bytes(
    db: &SqlitePool,
    model: &ModelId,
    version: u32,
) -> ApiResult<Vec<u8>> {
    let bytes: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT content FROM model_versions WHERE model_id = $1 AND version = $2",
    )
    .bind(model.as_str())
    .bind(version)
    .fetch_optional(db)
    .await?;
    bytes.ok_or_else(|| ApiError::NotFound(format!("no version {version} of model {model}")))
}

/// Creates a temporary credential for GETting `model` version `version` on behalf of
/// `job`, valid until `expires_at`; returns the bearer value (stored only as its SHA-256).
pub(crate) async fn issue_credential(
    db: &SqlitePool,
    job: &JobId,
    model: &ModelId,
    version: u32,
    expires_at: i64,
    now: i64,
) -> ApiResult<String> {
    let token = random_token(CREDENTIAL_PREFIX, 40);
    sqlx::query(
        "INSERT INTO credentials (token_hash, job_id, model_id, version, method, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(job.as_str())
    .bind(model.as_str())
    .bind(version)
    .bind(CREDENTIAL_METHOD)
    .bind(expires_at)
    .bind(now)
    .execute(db)
    .await?;
    Ok(token)
}

/// Checks temporary credential `token` for `method` on the raw path segments `model` and
/// `version` at `now`; answers the job it was issued for.
///
/// Unknown, tampered with or expired: `CredentialInvalid`; another model, version or
/// method: `CredentialScope`.
pub(crate) async fn check_credential(
    db: &SqlitePool,
    token: &str,
    method: &str,
    model: &str,
    version: &str,
    now: i64,
) -> ApiResult<JobId> {
    let row: Option<(String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT job_id, model_id, version, method, expires_at FROM credentials WHERE token_hash = $1",
    )
    .bind(sha256_hex(token.as_bytes()))
    .fetch_optional(db)
    .await?;
    let Some((job, c_model, c_version, c_method, expires_at)) = row else {
        return Err(ApiError::CredentialInvalid(
            "unknown or tampered temporary credential",
        ));
    };
    if now > expires_at {
        return Err(ApiError::CredentialInvalid("temporary credential expired"));
    }
    if c_model != model || c_version.to_string() != version {
        return Err(ApiError::CredentialScope(format!(
            "this credential opens {c_model} version {c_version} only"
        )));
    }
    if method != c_method {
        return Err(ApiError::CredentialScope(format!(
            "this credential allows {c_method} only, not {method}"
        )));
    }
    Ok(scalar_id("credentials.job_id", job)?)
}

/// Which of `keys` (bucket objects) a model version names.
///
/// # Errors
/// Database errors.
pub(crate) async fn referenced_objects(
    db: &SqlitePool,
    keys: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for key in keys {
        let hit: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM model_versions WHERE object_key = $1")
                .bind(key)
                .fetch_optional(db)
                .await?;
        if hit.is_some() {
            found.insert(key.clone());
        }
    }
    Ok(found)
}

/// Removes the bucket's model objects written before `before` (Unix seconds) that no
/// version names: those of a failed or abandoned write. Returns how many.
///
/// # Errors
/// Bucket or database errors, as one line.
pub(crate) async fn sweep_objects(
    db: &SqlitePool,
    bucket: &Bucket,
    before: i64,
) -> Result<u64, String> {
    use futures_util::StreamExt as _;
    let mut listing = bucket.models_written_before(before).chunks(100);
    let mut removed = 0;
    while let Some(chunk) = listing.next().await {
        let keys: Vec<String> = chunk
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let keep = referenced_objects(db, &keys)
            .await
            .map_err(|e| e.to_string())?;
        for key in keys.iter().filter(|k| !keep.contains(*k)) {
            bucket.delete(key).await.map_err(|e| e.to_string())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Deletes temporary credentials that expired before `now`; returns how many.
///
/// # Errors
/// Database errors.
pub(crate) async fn purge_expired_credentials(
    db: &SqlitePool,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM credentials WHERE expires_at < $1")
        .bind(now)
        .execute(db)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uploads at once to a database file (several pooled connections): each reads the quota
    /// and then writes, so a transaction that began as a reader would fail with
    /// `SQLITE_BUSY` (which the busy timeout does not wait out) as soon as another wrote
    /// first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_uploads_to_a_database_file_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::open(dir.path().join("b.db").to_str().expect("utf-8"))
            .await
            .expect("db");
        let owner = crate::store::users::create(&db, "gareth", None, 0)
            .await
            .expect("user")
            .user_id;
        let quota = Quota {
            models: 1_000,
            bytes: 1 << 30,
        };
        let mut uploads = tokio::task::JoinSet::new();
        for i in 0..64_u8 {
            let (db, owner) = (db.clone(), owner.clone());
            uploads.spawn(async move {
                let id = ModelId::generate();
                let body = Body::Inline(vec![i; 4096]);
                let new = NewModel {
                    id: &id,
                    owner: &owner,
                    name: "m.stl",
                    body: &body,
                };
                upload(&db, "https://broker.test", &new, quota, 0).await
            });
        }
        for outcome in uploads.join_all().await {
            outcome.expect("every upload is stored");
        }
        let models: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM models")
            .fetch_one(&db)
            .await
            .expect("count");
        assert_eq!(models, 64);
    }
}
