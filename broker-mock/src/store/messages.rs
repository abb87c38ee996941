//! The message log: every request the broker receives and every one it sends, with its
//! verdict and the exact reason of a refusal (`GET /v1/messages`, `/inspector`). Owns
//! `messages`.
//!
//! Ids here are kept as the text that was seen, not as id newtypes: the log also records
//! requests whose path or body named a malformed id, and says so.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};

use super::json_text;
use crate::error::{ApiError, ApiResult};

/// One logged message, as `GET /v1/messages` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoggedMessage {
    /// Log sequence number (increasing).
    pub id: i64,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// `in` (received by the broker) or `out` (sent by the broker).
    pub direction: String,
    /// HTTP method.
    pub method: String,
    /// Path and query for `in`, the full URL for `out`.
    pub endpoint: String,
    /// Status answered (`in`) or received (`out`); absent when no answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The provider concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The job concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Relevant headers (credentials redacted); answer headers are prefixed `answer-`.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// What the broker made of it: `accepted`, `refused`, `signature valid (key_…)`, ….
    pub verdict: String,
    /// The exact reason, when refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the exchange took, milliseconds: from the request's arrival to the answer
    /// (`in`), or from sending to the answer or failure (`out`). It started at
    /// `at_ms - duration_ms`. Absent for the broker's own decisions logged as messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

/// `GET /v1/messages`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    /// The messages.
    pub messages: Vec<LoggedMessage>,
}

/// A message about to be logged.
#[derive(Debug, Clone)]
pub(crate) struct NewMessage {
    pub(crate) direction: &'static str,
    pub(crate) method: String,
    pub(crate) endpoint: String,
    pub(crate) status: Option<u16>,
    pub(crate) provider_id: Option<String>,
    pub(crate) job_id: Option<String>,
    pub(crate) headers: serde_json::Map<String, serde_json::Value>,
    pub(crate) verdict: String,
    pub(crate) reason: Option<String>,
    pub(crate) duration_ms: Option<i64>,
}

impl NewMessage {
    /// A message the broker sends (`out`), about `provider_id` / `job_id` when known; the
    /// caller fills in the outcome.
    pub(crate) fn out(
        method: &str,
        url: &str,
        provider_id: Option<String>,
        job_id: Option<String>,
    ) -> Self {
        Self {
            direction: "out",
            method: method.to_owned(),
            endpoint: url.to_owned(),
            status: None,
            provider_id,
            job_id,
            headers: serde_json::Map::new(),
            verdict: String::new(),
            reason: None,
            duration_ms: None,
        }
    }
}

/// What the code handling a request tells the message log beyond the status: the verdict
/// (`signature valid (key_…)`, …), the reason of a refusal, and the provider and job
/// concerned. The HTTP layer carries it on the response and logs the request with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Note {
    pub(crate) verdict: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) provider_id: Option<String>,
    pub(crate) job_id: Option<String>,
}

/// Longest endpoint (path and query, or URL) kept in the log, bytes; longer ones are cut.
pub(crate) const MAX_ENDPOINT_LEN: usize = 512;
/// Longest header value kept in the log, bytes.
pub(crate) const MAX_HEADER_VALUE_LEN: usize = 256;
/// Longest verdict or reason kept in the log, bytes.
pub(crate) const MAX_TEXT_LEN: usize = 2048;

/// Milliseconds since `started`, for a message's `duration_ms`.
pub(crate) fn elapsed_ms(started: std::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Appends to the log, stamped `at_ms`, with every field cut to its limit
/// ([`MAX_ENDPOINT_LEN`], [`MAX_HEADER_VALUE_LEN`], [`MAX_TEXT_LEN`]), then drops the oldest
/// messages beyond the newest `keep` (the log is a ring). A logging failure is only logged.
pub(crate) async fn record(db: &SqlitePool, keep: u32, at_ms: i64, mut m: NewMessage) {
    m.method = truncated(m.method, 16);
    m.endpoint = truncated(m.endpoint, MAX_ENDPOINT_LEN);
    m.verdict = truncated(m.verdict, MAX_TEXT_LEN);
    m.reason = m.reason.map(|r| truncated(r, MAX_TEXT_LEN));
    m.provider_id = m.provider_id.map(|r| truncated(r, 128));
    m.job_id = m.job_id.map(|r| truncated(r, 128));
    for value in m.headers.values_mut() {
        if let serde_json::Value::String(v) = value {
            *v = truncated(std::mem::take(v), MAX_HEADER_VALUE_LEN);
        }
    }
    let headers = serde_json::Value::Object(m.headers).to_string();
    let res = sqlx::query(
        "INSERT INTO messages (at_ms, direction, method, endpoint, status, provider_id, job_id, headers, verdict, reason, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(at_ms)
    .bind(m.direction)
    .bind(&m.method)
    .bind(&m.endpoint)
    .bind(m.status)
    .bind(&m.provider_id)
    .bind(&m.job_id)
    .bind(headers)
    .bind(&m.verdict)
    .bind(&m.reason)
    .bind(m.duration_ms.map(|d| d.max(0)))
    .execute(db)
    .await;
    match res {
        Ok(done) => {
            let oldest_kept = done.last_insert_rowid() - i64::from(keep.max(1));
            if let Err(e) = sqlx::query("DELETE FROM messages WHERE id <= $1")
                .bind(oldest_kept)
                .execute(db)
                .await
            {
                tracing::warn!(error = %e, "could not trim the message log");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not write the message log"),
    }
    tracing::debug!(direction = m.direction, method = %m.method, endpoint = %m.endpoint, status = ?m.status, verdict = %m.verdict, reason = ?m.reason, "message");
}

/// The filters of `GET /v1/messages`, checked.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    direction: Option<String>,
    provider_id: Option<String>,
    job_id: Option<String>,
    limit: i64,
}

impl Filter {
    /// Parses the query parameters: only `direction` (`in`/`out`), `provider_id`, `job_id`
    /// and `limit` (1–1000, default 100); empty values mean no filter.
    pub(crate) fn parse(q: &HashMap<String, String>) -> ApiResult<Self> {
        for key in q.keys() {
            if !matches!(
                key.as_str(),
                "direction" | "provider_id" | "job_id" | "limit"
            ) {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown parameter {key:?}; use direction, provider_id, job_id, limit"
                )));
            }
        }
        let given = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        let direction = given("direction");
        if let Some(d) = &direction
            && d != "in"
            && d != "out"
        {
            return Err(ApiError::InvalidRequest(
                "direction must be `in` or `out`".into(),
            ));
        }
        let limit = match q.get("limit") {
            None => 100,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(ApiError::InvalidRequest(
                        "limit must be an integer from 1 to 1000".into(),
                    ));
                }
            },
        };
        Ok(Self {
            direction,
            provider_id: given("provider_id"),
            job_id: given("job_id"),
            limit,
        })
    }
}

struct LogRow(LoggedMessage);

impl<'r> FromRow<'r, SqliteRow> for LogRow {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        let headers: String = row.try_get("headers")?;
        Ok(Self(LoggedMessage {
            id: row.try_get("id")?,
            at_ms: row.try_get("at_ms")?,
            direction: row.try_get("direction")?,
            method: row.try_get("method")?,
            endpoint: row.try_get("endpoint")?,
            status: row.try_get("status")?,
            provider_id: row.try_get("provider_id")?,
            job_id: row.try_get("job_id")?,
            headers: json_text("messages.headers", &headers)?,
            verdict: row.try_get("verdict")?,
            reason: row.try_get("reason")?,
            duration_ms: row.try_get("duration_ms")?,
        }))
    }
}

/// The messages matching `filter`, newest first.
pub(crate) async fn list(db: &SqlitePool, filter: &Filter) -> ApiResult<MessageList> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT id, at_ms, direction, method, endpoint, status, provider_id, job_id, headers, verdict, reason, duration_ms
         FROM messages
         WHERE ($1 IS NULL OR direction = $1) AND ($2 IS NULL OR provider_id = $2) AND ($3 IS NULL OR job_id = $3)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(&filter.direction)
    .bind(&filter.provider_id)
    .bind(&filter.job_id)
    .bind(filter.limit)
    .fetch_all(db)
    .await?;
    Ok(MessageList {
        messages: rows.into_iter().map(|LogRow(m)| m).collect(),
    })
}

/// Most messages one job's timeline shows (its first ones).
pub(crate) const MAX_TIMELINE: i64 = 1000;

/// Every logged message about job `job_id` (at most [`MAX_TIMELINE`]), in the order they
/// started: an exchange's start is `at_ms - duration_ms`, so a user's request that caused an
/// offer comes before the offer although it was answered after it (and of two that started in
/// the same millisecond, the longer one, which encloses the other, comes first).
pub(crate) async fn timeline(db: &SqlitePool, job_id: &str) -> ApiResult<Vec<LoggedMessage>> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT id, at_ms, direction, method, endpoint, status, provider_id, job_id, headers, verdict, reason, duration_ms
         FROM messages
         WHERE job_id = $1
         ORDER BY at_ms - COALESCE(duration_ms, 0), COALESCE(duration_ms, 0) DESC, id LIMIT $2",
    )
    .bind(job_id)
    .bind(MAX_TIMELINE)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|LogRow(m)| m).collect())
}
