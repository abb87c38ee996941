//! Things a peer may present only once: a signed message's `webhook-id` (per sender, with
//! the digest of its body, so a redelivery is told from a replay) and a link token's `jti`
//! (per provider). Owns `replay` and `used_jtis`.

use diax_sdk::replay::{BoxFuture, ReplayStore};
use diax_sdk::{Delivery, ProviderId, ReplayError};
use sqlx::{SqliteConnection, SqlitePool};

/// A [`ReplayStore`] in the broker's database, scoped to one sender (a provider), so ids
/// survive restarts and one provider's ids never collide with another's.
#[derive(Debug, Clone)]
pub struct SqliteReplayStore {
    pool: SqlitePool,
    scope: String,
}

impl SqliteReplayStore {
    /// A store for messages from `scope`.
    #[must_use]
    pub fn new(pool: SqlitePool, scope: impl Into<String>) -> Self {
        Self {
            pool,
            scope: scope.into(),
        }
    }

    async fn record_inner(
        &self,
        id: &str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> Result<Delivery, ReplayError> {
        let unavailable = |e: sqlx::Error| ReplayError::Unavailable(e.to_string());
        let inserted = sqlx::query(
            "INSERT INTO replay (scope, message_id, digest, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, message_id) DO UPDATE
               SET digest = excluded.digest, expires_at = excluded.expires_at
               WHERE replay.expires_at < $5",
        )
        .bind(&self.scope)
        .bind(id)
        .bind(digest.as_slice())
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if inserted.rows_affected() == 1 {
            return Ok(Delivery::First);
        }
        let known: Vec<u8> =
            sqlx::query_scalar("SELECT digest FROM replay WHERE scope = $1 AND message_id = $2")
                .bind(&self.scope)
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        if known.as_slice() == digest.as_slice() {
            Ok(Delivery::Redelivery)
        } else {
            Err(ReplayError::Conflict)
        }
    }
}

impl ReplayStore for SqliteReplayStore {
    fn record<'a>(
        &'a self,
        id: &'a str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<Delivery, ReplayError>> {
        Box::pin(self.record_inner(id, digest, expires_at, now))
    }
}

/// Records the use of link token `jti` of `provider` inside the caller's transaction, kept
/// until `expires_at` (after which the token itself is refused); `false` when it was used
/// before.
pub(crate) async fn use_jti(
    conn: &mut SqliteConnection,
    provider: &ProviderId,
    jti: &str,
    now: i64,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    let fresh = sqlx::query(
        "INSERT INTO used_jtis (provider_id, jti, used_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(provider.as_str())
    .bind(jti)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(fresh.rows_affected() == 1)
}

/// Deletes replay rows and used link-token ids that expired before `now`; returns how many.
///
/// # Errors
/// Database errors.
pub(crate) async fn purge_expired(db: &SqlitePool, now: i64) -> Result<u64, sqlx::Error> {
    let replay = sqlx::query("DELETE FROM replay WHERE expires_at < $1")
        .bind(now)
        .execute(db)
        .await?
        .rows_affected();
    let jtis = sqlx::query("DELETE FROM used_jtis WHERE expires_at < $1")
        .bind(now)
        .execute(db)
        .await?
        .rows_affected();
    Ok(replay + jtis)
}
