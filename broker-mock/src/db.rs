//! Database: opening the SQLite pool with its embedded migrations. What each table holds and
//! who writes it is in the storage layer (`store`, one module per table); the durable replay
//! store is re-exported here.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, SqlitePool};

pub use crate::store::replay::SqliteReplayStore;

/// Opens (creating if needed) the database named by `db` (a path, a `sqlite:` URL or
/// `sqlite::memory:`) and runs the embedded migrations. A new database file is created
/// readable by its owner only (0600; SQLite gives its `-wal` and `-shm` files the same
/// mode): it holds users' API keys, notification and provider secrets, and their models.
///
/// # Errors
/// When the database cannot be opened or migrated.
pub async fn open(db: &str) -> Result<SqlitePool, sqlx::Error> {
    Ok(open_keeping(db).await?.0)
}

/// As [`open`], and for an in-memory database also the task that closes the connection
/// keeping it once the pool is closed: when it has ended, the database is gone.
pub(crate) async fn open_keeping(
    db: &str,
) -> Result<(SqlitePool, Option<tokio::task::JoinHandle<()>>), sqlx::Error> {
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
    if !memory {
        create_private(options.get_filename())?;
    }
    let (pool, keeping) = if memory {
        // An in-memory database lives as long as some connection to it is open, and the
        // pool may replace its connection (one that fails its check on return): a
        // connection outside the pool, never used, keeps the database until the pool
        // closes. The pool's one connection avoids shared-cache table locks.
        let keeper = options.connect().await?;
        let pool = pool_options()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let closed = pool.close_event();
        // Closed, not dropped: a dropped connection is closed later on its own thread.
        let keeping = tokio::spawn(async move {
            closed.await;
            if let Err(e) = sqlx::Connection::close(keeper).await {
                tracing::warn!(error = %e, "closing the in-memory database failed");
            }
        });
        (pool, Some(keeping))
    } else {
        let pool = pool_options()
            .max_connections(4)
            .connect_with(
                options
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await?;
        (pool, None)
    };
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    Ok((pool, keeping))
}

/// The options both kinds of database share. No ping before a connection is handed out: the
/// database is in this process (there is no peer that could have gone), and a request
/// cancelled during that ping (a client that hangs up, a deliverer stopped by the shutdown)
/// made the pool let the connection go without closing it. Such a connection is closed later
/// on its own thread, so `close` returned while it still held the database.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().test_before_acquire(false)
}

/// Creates `path` empty with mode 0600 if it does not exist yet (an existing file keeps its
/// mode).
fn create_private(path: &std::path::Path) -> Result<(), sqlx::Error> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(sqlx::Error::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests cancelled at any point (a client that hangs up drops its handler mid-query or
    /// mid-acquire; a deliverer stopped by the shutdown). An in-memory database lives only as
    /// long as a connection to it: it must outlive them. And the pool keeps its connection:
    /// one it let go without closing it would be closed later on its own thread, so `close`
    /// could return while it still held the database (an in-memory one outlived the broker's
    /// shutdown by a few milliseconds). The pool's size counts the connections it holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_memory_database_outlives_cancelled_queries() {
        let db = open("sqlite::memory:").await.expect("db");
        let user = crate::store::users::create(&db, "gareth", None, 0)
            .await
            .expect("user")
            .user_id;
        let mut lost = 0;
        for i in 0..2_000_u32 {
            let (pool, user) = (db.clone(), user.clone());
            let task = tokio::spawn(async move { crate::store::users::exists(&pool, &user).await });
            for _ in 0..i % 13 {
                tokio::task::yield_now().await;
            }
            task.abort();
            let _ = task.await;
            if db.size() == 0 {
                lost += 1;
            }
        }
        assert_eq!(lost, 0, "connections let go without being closed");
        let still = crate::store::users::exists(&db, &user)
            .await
            .expect("the tables are still there");
        assert!(still, "the user is still there");
    }
}
