//! Database: opening the SQLite pool with its embedded migrations. What each table holds and
//! who writes it is in the storage layer (`store`, one module per table); the durable replay
//! store is re-exported here.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use crate::store::replay::SqliteReplayStore;

/// Opens (creating if needed) the database named by `db` (a path, a `sqlite:` URL or
/// `sqlite::memory:`) and runs the embedded migrations. A new database file is created
/// readable by its owner only (0600; SQLite gives its `-wal` and `-shm` files the same
/// mode): it holds users' API keys, notification and provider secrets, and their models.
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
    if !memory {
        create_private(options.get_filename())?;
    }
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
