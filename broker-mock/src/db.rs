//! Database: opening the SQLite pool, embedded migrations, and the SQLite replay store.

use std::str::FromStr;
use std::time::Duration;

use diax_sdk::replay::{BoxFuture, ReplayStore};
use diax_sdk::{Delivery, ReplayError};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Opens (creating if needed) the database named by `db` (a path, a `sqlite:` URL or
/// `sqlite::memory:`) and runs the embedded migrations.
///
/// # Errors
/// When the database cannot be opened or migrated.
pub async fn open(db: &str) -> Result<SqlitePool, sqlx::Error> {
    let url = if db.starts_with("sqlite:") {
        db.to_owned()
    } else {
        format!("sqlite://{db}")
    };
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let memory = db.contains(":memory:") || db.contains("mode=memory");
    let pool = if memory {
        // One connection keeps the shared in-memory database alive and avoids
        // shared-cache table locks.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?
    } else {
        SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                options
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await?
    };
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    Ok(pool)
}

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
