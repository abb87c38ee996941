//! The storage and domain layer: one module per table or aggregate. Each owns its SQL, its
//! typed rows and its rules (validation, state transitions); nothing else in the crate
//! writes its tables.
//!
//! | module | tables | rules |
//! |---|---|---|
//! | [`users`] | `users`, `groups`, `group_members` | names, notification URL, membership |
//! | [`providers`] | `providers`, `provider_keys` | registration checks, keyrings, rotation, who a per-user secret speaks for |
//! | [`links`] | `links` | link-token checks, one link per user and provider |
//! | [`replay`] | `replay`, `used_jtis` | a `webhook-id` or a link token's `jti` is taken once |
//! | [`models`] | `models`, `model_versions`, `credentials` | file names, versions, temporary credentials and their scope |
//! | [`jobs`] | `jobs`, `job_events` | the job state machine ([`jobs::state`]), event order and duplicates, `job.input` delivery bookkeeping |
//! | [`notifications`] | `notifications` | pending until acknowledged, delivery bookkeeping |
//! | [`messages`] | `messages` | the message log and its filters |
//!
//! Functions take the pool (or a transaction) and explicit values (`now`, limits); none
//! knows HTTP, the outgoing client or the background tasks. Rows come out typed: ids as
//! the SDK's newtypes, states as enums, JSON columns parsed. A stored value that does not
//! decode is an error ([`sqlx::Error::ColumnDecode`] naming the column), never a default.

pub(crate) mod jobs;
pub(crate) mod links;
pub(crate) mod messages;
pub(crate) mod models;
pub(crate) mod notifications;
pub(crate) mod providers;
pub(crate) mod replay;
pub(crate) mod users;

use diax_sdk::InvalidId;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteRow;

use crate::error::ApiError;

/// Begins a write transaction: `BEGIN IMMEDIATE` takes SQLite's write lock up front, so a
/// transaction that reads before it writes waits its turn on the busy timeout. A deferred
/// `BEGIN` would start as a reader and fail with `SQLITE_BUSY` ("database is locked", which
/// the busy timeout does not wait out) when another connection wrote first.
pub(crate) async fn begin_write(
    db: &sqlx::SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    db.begin_with("BEGIN IMMEDIATE").await
}

/// A stored value of `column` that does not decode.
pub(crate) fn corrupt(column: &str, why: impl Into<BoxDynError>) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: why.into(),
    }
}

/// Column `col` as an id newtype.
pub(crate) fn id<T>(row: &SqliteRow, col: &str) -> Result<T, sqlx::Error>
where
    T: TryFrom<String, Error = InvalidId>,
{
    let raw: String = row.try_get(col)?;
    T::try_from(raw).map_err(|e| corrupt(col, e))
}

/// Nullable column `col` as an id newtype.
pub(crate) fn opt_id<T>(row: &SqliteRow, col: &str) -> Result<Option<T>, sqlx::Error>
where
    T: TryFrom<String, Error = InvalidId>,
{
    let raw: Option<String> = row.try_get(col)?;
    raw.map(T::try_from)
        .transpose()
        .map_err(|e| corrupt(col, e))
}

/// A value read on its own (`query_scalar`) as an id newtype; `what` names the column.
pub(crate) fn scalar_id<T>(what: &str, raw: String) -> Result<T, sqlx::Error>
where
    T: TryFrom<String, Error = InvalidId>,
{
    T::try_from(raw).map_err(|e| corrupt(what, e))
}

/// Text column `col` through `parse`; `None` from `parse` is an unknown value.
pub(crate) fn parsed<T>(
    row: &SqliteRow,
    col: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    let raw: String = row.try_get(col)?;
    parse(&raw).ok_or_else(|| corrupt(col, format!("unknown value {raw:?}")))
}

/// Nullable JSON text column `col`, parsed.
pub(crate) fn opt_json<T: DeserializeOwned>(
    row: &SqliteRow,
    col: &str,
) -> Result<Option<T>, sqlx::Error> {
    let raw: Option<String> = row.try_get(col)?;
    raw.map(|text| json_text(col, &text)).transpose()
}

/// JSON text stored in `what`, parsed.
pub(crate) fn json_text<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// A value as JSON text for storage.
pub(crate) fn to_json_text<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A display name: 1–100 characters, no control characters.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n == 0 || n > 100 || name.chars().any(char::is_control) || name.trim().is_empty() {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must be 1 to 100 printable characters"
        )));
    }
    Ok(())
}

/// A URL the broker will call (`job_url`, `notification_url`): `https`, or plain `http` to a
/// loopback host (the SDK's rule). `what` prefixes the refusal.
pub(crate) fn check_peer_url(what: &str, url: &str) -> Result<(), ApiError> {
    diax_sdk::client::require_secure_url(url)
        .map(drop)
        .map_err(|e| {
            let why = diax_sdk::util::ErrorChain(&e);
            ApiError::InvalidRequest(format!("{what} {why}"))
        })
}
