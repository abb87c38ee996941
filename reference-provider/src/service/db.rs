//! The database: SQLite (embedded default) or PostgreSQL (scale-out), behind one enum.
//!
//! Queries are runtime `sqlx` queries written once in SQL both engines accept (`$1`
//! placeholders, `ON CONFLICT`, `RETURNING`); the few statements that differ (the job claim
//! with `FOR UPDATE SKIP LOCKED`) are spelled per engine. Migrations for both live under
//! `reference-provider/migrations/{sqlite,postgres}` and are embedded in the binary.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diax_sdk::replay::{BoxFuture, ReplayStore};
use diax_sdk::{Delivery, ReplayError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

use super::group_commit::{CommitError, GroupCommit, Outcome, Work};

/// Current Unix time in milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh id for a row the service creates (a provider job, a ledger entry): `prefix`, the
/// creation time in milliseconds as 9 base-36 digits (`0-9a-z`) that sort as text in time
/// order, then 20 random base-62 characters (as random as [`diax_sdk::util::random_token`]'s
/// ids).
///
/// New rows' keys so land at the end of their indexes (the table's primary key, the
/// ledger's unique entry id, its one-entry-per-job index) instead of at a random place:
/// a batch of inserts dirties a few pages at the right edge of each of these B-trees
/// rather than one page per row, which is what a commit writes to SQLite's log and
/// PostgreSQL's WAL. The ids stay opaque tokens on the wire (`[A-Za-z0-9_]`).
#[must_use]
pub fn time_ordered_id(prefix: &str) -> String {
    time_ordered_id_at(prefix, now_ms())
}

/// [`time_ordered_id`] with the clock given (milliseconds since the Unix epoch).
#[must_use]
pub fn time_ordered_id_at(prefix: &str, now_ms: i64) -> String {
    // Digits and lower-case letters only: their byte order (SQLite's BINARY, PostgreSQL's
    // "C") and their order in the usual linguistic collations (a database created with
    // en_US.UTF-8) agree, so the ids sort by time in either. 36^9 ms is some 3,000 years.
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut t = u64::try_from(now_ms).unwrap_or(0);
    let mut time = [b'0'; 9];
    for d in time.iter_mut().rev() {
        *d = DIGITS[usize::try_from(t % 36).unwrap_or(0)];
        t /= 36;
    }
    let mut id = diax_sdk::util::random_token(prefix, 20);
    let time = std::str::from_utf8(&time).unwrap_or("000000000");
    id.insert_str(prefix.len(), time);
    id
}

/// A duration in whole milliseconds, saturating.
#[must_use]
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A connection pool to one of the two supported databases.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite (one file; one node).
    Sqlite(SqliteDb),
    /// PostgreSQL (any number of nodes).
    Postgres(PgPool),
}

/// SQLite's connections: one writer and a few readers.
///
/// SQLite lets one connection write at a time. Every write transaction ([`Db::begin`])
/// takes the **one** writer connection, so writers queue in the pool (first come, first
/// served) instead of in SQLite's busy handler, which sleeps (up to 100 ms a turn), and the
/// writer's page cache stays valid from one transaction to the next (another connection's
/// write would invalidate it). Read-only transactions ([`Db::begin_read`]) take one of
/// the read-only connections and never wait for the writer (WAL readers see the last
/// commit).
///
/// Checkpoints (copying the write-ahead log back into the database file, with its
/// `fsync`) run on a connection of their own, every [`CHECKPOINT_EVERY`], out of the
/// writer's way; the writer checkpoints itself only when the log passes
/// [`WAL_AUTOCHECKPOINT_PAGES`] (a bound on the log's size should the background
/// checkpoints fall behind).
#[derive(Debug, Clone)]
pub struct SqliteDb {
    /// Declared before `write`: dropped (its statements finalized) before the pool.
    statements: Arc<WriterStatements>,
    write: SqlitePool,
    read: SqlitePool,
    /// The task holding the writer connection in a transaction, if one does (see
    /// [`WriterHeld`]).
    writer_task: Arc<Mutex<Option<tokio::task::Id>>>,
    /// Whether the readers are the writer (an in-memory database).
    read_is_write: bool,
    /// `true` until [`Db::close`]; the checkpoint task ends when it is `false` or dropped.
    open: Arc<AtomicBool>,
}

/// Read-only SQLite connections.
pub const SQLITE_READERS: u32 = 4;

/// How often the background task checkpoints SQLite's write-ahead log (`PASSIVE`: it
/// never blocks the writer or the readers).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Pages (4 KiB) of write-ahead log after which the writer checkpoints at commit itself
/// (SQLite's default is 1,000): the log's bound should the background checkpoints fall
/// behind.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Pages (4 KiB) of write-ahead log after which the background checkpoints finish the log
/// on the writer connection so that the next write starts it over (the background
/// checkpoint task of [`SqliteDb`]).
pub const WAL_RESTART_PAGES: i64 = 8_192;

/// SQLite's page cache per connection, in KiB (SQLite's default is 2,000).
const SQLITE_CACHE_KIB: u32 = 16_384;

/// Bytes of the database file SQLite reads through a memory map.
const SQLITE_MMAP_BYTES: u64 = 256 << 20;

/// A pooled PostgreSQL connection idle this long is pinged before it is lent out.
const PG_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Bytes the write-ahead log file is truncated to after a checkpoint reset it.
const SQLITE_WAL_LIMIT_BYTES: u64 = 64 << 20;

/// An open transaction on a [`Db`].
#[derive(Debug)]
pub enum Tx {
    /// SQLite transaction (`BEGIN IMMEDIATE` on the writer connection, `BEGIN` on a
    /// reader); `&mut **t` is its connection.
    Sqlite(SqliteTx),
    /// PostgreSQL transaction (read committed).
    Postgres(Transaction<'static, Postgres>),
}

/// A SQLite transaction; dereferences to its connection.
#[derive(Debug)]
pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    /// Set while this transaction holds the writer from within a task.
    _writer: Option<WriterMark>,
    /// The writer connection's kept statements (`None` on a reader).
    statements: Option<Arc<WriterStatements>>,
}

impl SqliteTx {
    /// Runs `f` on this transaction's connection (see [`WriterStatements::run`]).
    pub(crate) async fn run_on_handle<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let statements = self.statements.clone();
        let mut handle = self.tx.lock_handle().await?;
        WriterStatements::run(statements.as_deref(), &mut handle, f)
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = sqlx::SqliteConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// SQLite's writer connection lent out with no transaction open ([`SqliteDb::writer`]);
/// dereferences to the connection.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    /// Set while this holds the writer from within a task.
    _writer: Option<WriterMark>,
    statements: Arc<WriterStatements>,
}

impl SqliteWriter {
    /// Runs `f` on the writer connection (see [`WriterStatements::run`]).
    pub(crate) async fn run_on_handle<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let statements = Arc::clone(&self.statements);
        let mut handle = self.conn.lock_handle().await?;
        WriterStatements::run(Some(&statements), &mut handle, f)
    }
}

/// The intake's prepared statements on SQLite's writer connection, kept from one call to
/// the next.
///
/// The intake writer runs its statements through rusqlite on the handle of the writer
/// connection that sqlx owns ([`SqliteTx::run_on_handle`]): one call on the caller's
/// thread instead of a hand-off to sqlx's worker thread per statement. Preparing them again
/// for every call cost about a tenth of the writer's time (docs/LOADGEN.md), so rusqlite's
/// view of the connection, with its statement cache (`prepare_cached`), lives here as long
/// as the connection does.
///
/// sqlx closes a SQLite connection with `sqlite3_close`, which refuses (and sqlx panics)
/// while a statement is not finalized. So the kept statements are finalized before the
/// connection can close: [`Db::close`] finalizes them before closing the pool, and the
/// last [`SqliteDb`] drops them before its pool (field order; other pool handles, such as
/// the checkpoint task's, end after it). The writer connection is opened in SQLite's
/// serialized mode, so that finalizing from whatever thread drops them is safe while
/// sqlx's worker uses the connection. Once closed, every call prepares its statements
/// for itself, as any call on another connection does.
#[derive(Debug, Default)]
pub(crate) struct WriterStatements {
    /// The connection's handle (its address) and rusqlite's view of it.
    kept: Mutex<Option<(usize, rusqlite::Connection)>>,
    closed: AtomicBool,
}

impl WriterStatements {
    /// Runs `f` with rusqlite's view of the connection behind `handle`: the kept one (and
    /// its cached statements) when `statements` belongs to that connection, else one made
    /// for this call.
    #[allow(unsafe_code)] // the connection handed from sqlx to rusqlite: see SAFETY below
    fn run<T>(
        statements: Option<&Self>,
        handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let raw = handle.as_raw_handle().as_ptr();
        // SAFETY: `handle` keeps sqlx's worker away from the connection (and from every
        // statement on it) while `f` runs; the connection outlives every statement
        // prepared here (see the type's documentation); `from_handle` never closes the
        // connection. libsqlite3-sys is one crate (one version) for sqlx and rusqlite, so
        // the handle is the type rusqlite expects.
        let view = || unsafe { rusqlite::Connection::from_handle(raw) }.map_err(sqlite_error);
        let Some(statements) = statements else {
            return f(&view()?);
        };
        let mut kept = statements
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.is_none() && !statements.closed.load(Ordering::Acquire) {
            *kept = Some((raw as usize, view()?));
        }
        match kept.as_ref() {
            Some((address, conn)) if *address == raw as usize => f(conn),
            _ => f(&view()?),
        }
    }

    /// Finalizes the kept statements; from now on each call prepares its own.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(kept);
    }
}

/// A SQLite error met through rusqlite, as a database error of sqlx's (so that
/// [`is_unique_violation`] and the like see it).
pub(crate) fn sqlite_error(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Database(Box::new(SqliteCallError(e)))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqliteCallError(rusqlite::Error);

impl sqlx::error::DatabaseError for SqliteCallError {
    fn message(&self) -> &str {
        match &self.0 {
            rusqlite::Error::SqliteFailure(_, Some(m)) => m,
            _ => "SQLite call failed",
        }
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .sqlite_error()
            .map(|e| e.extended_code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.0.sqlite_error().map(|e| e.extended_code) {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                ErrorKind::UniqueViolation
            }
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

impl std::ops::Deref for SqliteWriter {
    type Target = sqlx::SqliteConnection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for SqliteWriter {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

/// Marks the task holding SQLite's writer connection; unmarks it when dropped (after the
/// transaction ended).
#[derive(Debug)]
struct WriterMark {
    holder: Arc<Mutex<Option<tokio::task::Id>>>,
    task: tokio::task::Id,
}

impl Drop for WriterMark {
    fn drop(&mut self) {
        if let Ok(mut holder) = self.holder.lock()
            && *holder == Some(self.task)
        {
            *holder = None;
        }
    }
}

/// A task asked for SQLite's writer connection ([`Db::begin`]) while it already holds it
/// in an open transaction: with one writer connection it would wait on itself until the
/// pool's timeout, so it is refused at once. Found in the [`sqlx::Error::Io`] that
/// [`Db::begin`] returns (kind [`std::io::ErrorKind::Deadlock`]); see
/// [`is_writer_held`].
#[derive(Debug, thiserror::Error)]
#[error("this task already holds the SQLite writer connection in an open transaction")]
pub struct WriterHeld;

/// Whether `e` is [`WriterHeld`]: a transaction begun inside another of the same task.
#[must_use]
pub fn is_writer_held(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<WriterHeld>()))
}

/// Runs a statement on a `&mut Tx`; evaluates to `Result<u64 rows affected, sqlx::Error>`.
macro_rules! exec {
    ($tx:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $tx {
            $crate::service::db::Tx::Sqlite(t) => sqlx::query($sql)$(.bind($arg))*
                .execute(&mut **t).await.map(|r| r.rows_affected()),
            $crate::service::db::Tx::Postgres(t) => sqlx::query($sql)$(.bind($arg))*
                .execute(&mut **t).await.map(|r| r.rows_affected()),
        }
    };
}

/// `query_as::<_, T>(sql).fetch_optional` on a `&mut Tx`.
macro_rules! fetch_optional {
    ($tx:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $tx {
            $crate::service::db::Tx::Sqlite(t) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_optional(&mut **t).await,
            $crate::service::db::Tx::Postgres(t) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_optional(&mut **t).await,
        }
    };
}

/// `query_as::<_, T>(sql).fetch_all` on a `&mut Tx`.
macro_rules! fetch_all {
    ($tx:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $tx {
            $crate::service::db::Tx::Sqlite(t) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_all(&mut **t).await,
            $crate::service::db::Tx::Postgres(t) => sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*
                .fetch_all(&mut **t).await,
        }
    };
}

pub(crate) use {exec, fetch_all, fetch_optional};

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL (use sqlite://PATH or postgres://…): {0}")]
    UnsupportedUrl(String),
    /// PostgreSQL could not be reached at start-up (refused, unknown host, bad credentials).
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Unreachable {
        /// `host:port` from the URL.
        target: String,
        /// What the connection attempt said.
        source: sqlx::Error,
    },
    /// The SQLite file could not be created.
    #[error("cannot create the SQLite database {path}: {source}")]
    CreateFile {
        /// The database file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting or querying failed.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the SQLite database file readable by its owner only (`0600` on Unix), unless it
/// exists already or is in memory. SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private_file(path: &std::path::Path) -> Result<(), DbError> {
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DbError::CreateFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` creates the file; `postgres://…`) and applies the
    /// embedded migrations.
    ///
    /// # Errors
    /// [`DbError`] when the URL is unsupported or the database cannot be reached or migrated.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
                .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string())
                .pragma("journal_size_limit", SQLITE_WAL_LIMIT_BYTES.to_string());
            create_private_file(opts.get_filename())?;
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            Db::Sqlite(SqliteDb::open(opts, in_memory).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            // One direct attempt first: an unreachable server is reported at once and by
            // name, not as "pool timed out" after the acquire timeout.
            {
                use sqlx::Connection as _;
                let target = format!("{}:{}", opts.get_host(), opts.get_port());
                let probe = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::PgConnection::connect_with(&opts),
                )
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
                match probe {
                    Ok(conn) => {
                        let _ = conn.close().await;
                    }
                    Err(source) => return Err(DbError::Unreachable { target, source }),
                }
            }
            // A connection is pinged before use only when it sat idle for a while: a ping
            // before every transaction would be one more round trip on each of them (the
            // intake's batches above all), and a connection used a moment ago is alive.
            // One that broke anyway fails its transaction, and the pool drops it.
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(30))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PG_PING_AFTER_IDLE {
                            use sqlx::Connection as _;
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await?;
            Db::Postgres(pool)
        } else {
            return Err(DbError::UnsupportedUrl(redact_url(url)));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the embedded migrations (idempotent; PostgreSQL serialises concurrent runs
    /// with an advisory lock).
    ///
    /// # Errors
    /// [`DbError::Migrate`].
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(&p.write).await?,
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// Whether this is PostgreSQL.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Begins a transaction. Cancel-safe: a caller dropped while this waits (a client that
    /// disconnected, a `select!` that took another branch) never leaves a pooled connection
    /// inside a transaction.
    ///
    /// sqlx 0.9's PostgreSQL `BEGIN` is not: dropped after sending `BEGIN` and before its
    /// answer, it returns the connection to the pool with the server in a transaction that
    /// nobody will end (`idle in transaction`, then "there is already a transaction in
    /// progress" for its next user). So the `BEGIN` runs in a task of its own that always
    /// completes; when nobody waits for it any more, the transaction it made is dropped
    /// there, which rolls it back before the connection is reused. Once begun, sqlx
    /// rolls back a dropped transaction itself. SQLite's driver already undoes a `BEGIN`
    /// nobody received.
    ///
    /// On SQLite, a task that calls this while it holds the one writer connection in a
    /// transaction of its own gets [`WriterHeld`] at once instead of waiting on itself
    /// until the pool's timeout (checked within Tokio tasks, which every request and
    /// background job runs in).
    ///
    /// # Errors
    /// The driver's error; [`WriterHeld`] (see [`is_writer_held`]).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin_write().await?),
            Db::Postgres(p) => Tx::Postgres(begin_pg(p).await?),
        })
    }

    /// Begins a transaction that only reads. On SQLite it runs on a read-only connection,
    /// never waits for the writer and sees the last commit; a write in it fails. On
    /// PostgreSQL it is [`Db::begin`]. Cancel-safe like [`Db::begin`].
    ///
    /// # Errors
    /// The driver's error.
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) if p.read_is_write => Tx::Sqlite(p.begin_write().await?),
            Db::Sqlite(p) => Tx::Sqlite(SqliteTx {
                tx: p.read.begin_with("BEGIN").await?,
                _writer: None,
                statements: None,
            }),
            Db::Postgres(p) => Tx::Postgres(begin_pg(p).await?),
        })
    }

    /// `SELECT 1`, for readiness checks.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(&p.read).await.map(|_| ()),
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => {
                p.open.store(false, Ordering::Relaxed);
                p.statements.close();
                p.write.close().await;
                p.read.close().await;
            }
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// `BEGIN` on PostgreSQL in a task of its own (see [`Db::begin`]).
async fn begin_pg(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
}

impl SqliteDb {
    /// Opens the writer, the readers and the checkpoint task over `opts`. An in-memory
    /// database has no log to checkpoint, and reads on its one connection.
    async fn open(opts: SqliteConnectOptions, in_memory: bool) -> Result<Self, sqlx::Error> {
        // Pooled SQLite connections do not go stale: no `SELECT 1` round trip to the
        // connection's thread before each use, and no closing of idle ones.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                opts.clone()
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                    // See `WriterStatements`: its statements may be finalized from any
                    // thread.
                    .serialized(true),
            )
            .await?;
        let statements = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        let writer_task = Arc::new(Mutex::new(None));
        if in_memory {
            return Ok(Self {
                statements,
                read: write.clone(),
                write,
                open,
                writer_task,
                read_is_write: true,
            });
        }
        let read = SqlitePoolOptions::new()
            .max_connections(SQLITE_READERS)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone().read_only(true))
            .await?;
        tokio::spawn(checkpoints(
            opts.create_if_missing(false),
            write.clone(),
            Arc::downgrade(&open),
            CHECKPOINT_EVERY,
            WAL_RESTART_PAGES,
        ));
        Ok(Self {
            statements,
            write,
            read,
            open,
            writer_task,
            read_is_write: false,
        })
    }

    /// `BEGIN IMMEDIATE` on the writer connection, refused with [`WriterHeld`] when the
    /// calling task holds it already.
    async fn begin_write(&self) -> Result<SqliteTx, sqlx::Error> {
        self.refuse_held_writer()?;
        let tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteTx {
            tx,
            _writer: self.mark_writer(),
            statements: Some(Arc::clone(&self.statements)),
        })
    }

    /// The writer connection with no transaction open, for a caller that begins and ends
    /// its own on the connection's handle (the intake's leading run of offers:
    /// [`super::intake`]). Refused with [`WriterHeld`] like [`Db::begin`].
    pub(crate) async fn writer(&self) -> Result<SqliteWriter, sqlx::Error> {
        self.refuse_held_writer()?;
        let conn = self.write.acquire().await?;
        Ok(SqliteWriter {
            conn,
            _writer: self.mark_writer(),
            statements: Arc::clone(&self.statements),
        })
    }

    fn refuse_held_writer(&self) -> Result<(), sqlx::Error> {
        if let Some(task) = tokio::task::try_id()
            && self
                .writer_task
                .lock()
                .is_ok_and(|holder| *holder == Some(task))
        {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::Deadlock,
                WriterHeld,
            )));
        }
        Ok(())
    }

    fn mark_writer(&self) -> Option<WriterMark> {
        tokio::task::try_id().map(|task| {
            if let Ok(mut holder) = self.writer_task.lock() {
                *holder = Some(task);
            }
            WriterMark {
                holder: self.writer_task.clone(),
                task,
            }
        })
    }
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_EVERY`] (`PASSIVE`), on a
/// connection of its own, until the database is closed (or dropped).
///
/// Under steady writes such a checkpoint never catches up with the log's end (frames are
/// appended while it copies), so the log would only start over once it passed
/// [`WAL_AUTOCHECKPOINT_PAGES`] and the writer checkpointed at a commit itself, stalling
/// every write behind that commit for the copy and two `fsync`s (tens of milliseconds
/// here, once a second at 9,000 offers/s). Instead, once the log holds
/// [`WAL_RESTART_PAGES`], this task copies what it can twice (each pass shorter than the
/// one before), then takes the writer connection between two write transactions, in its
/// turn like any writer, and finishes the copy there: with no write in between it
/// reaches the log's end, and the next write starts the log over. The writer waits only
/// for the little the passes left.
///
/// `every` and `restart_pages` are [`CHECKPOINT_EVERY`] and [`WAL_RESTART_PAGES`] but in
/// tests.
async fn checkpoints(
    opts: SqliteConnectOptions,
    write: SqlitePool,
    open: Weak<AtomicBool>,
    every: Duration,
    restart_pages: i64,
) {
    use sqlx::Connection as _;
    let mut conn = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !open.upgrade().is_some_and(|o| o.load(Ordering::Relaxed)) {
            break;
        }
        if conn.is_none() {
            conn = sqlx::SqliteConnection::connect_with(&opts).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut log_pages = 0;
        for _ in 0..2 {
            match checkpoint(&mut *c).await {
                Ok(log) => log_pages = log,
                Err(e) => {
                    tracing::warn!(error = %e, "background checkpoint failed");
                    conn = None;
                    break;
                }
            }
            if log_pages < restart_pages {
                break;
            }
        }
        if log_pages >= restart_pages {
            let asked = std::time::Instant::now();
            let finished = match write.acquire().await {
                Ok(mut w) => {
                    let held = std::time::Instant::now();
                    checkpoint(&mut w).await.map(|log| (log, held.elapsed()))
                }
                Err(e) => Err(e),
            };
            match finished {
                Ok((log, held)) => tracing::debug!(
                    log_pages = log,
                    waited_ms = asked.elapsed().saturating_sub(held).as_secs_f64() * 1e3,
                    held_ms = held.as_secs_f64() * 1e3,
                    "checkpoint finished on the writer connection"
                ),
                Err(e) => tracing::warn!(error = %e, "checkpoint on the writer connection failed"),
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`; the log's length in pages.
async fn checkpoint(conn: &mut sqlx::SqliteConnection) -> Result<i64, sqlx::Error> {
    // (busy, pages in the log, pages checkpointed): -1s when the database is not in WAL mode.
    let (_, log, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(log)
}

impl Tx {
    /// Commits.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.tx.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }

    /// Rolls back (also happens on drop).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.tx.rollback().await,
            Tx::Postgres(t) => t.rollback().await,
        }
    }
}

/// Whether `e` is a unique-constraint violation.
#[must_use]
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Whether `e` is a check-constraint violation.
#[must_use]
pub fn is_check_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_check_violation())
}

/// A URL with any password replaced, for logs and errors.
#[must_use]
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => url.chars().take(16).collect::<String>() + "…",
    }
}

/// Expired replay records deleted per transaction by [`DbReplayStore::purge_expired`].
pub const PURGE_CHUNK: i64 = 1000;

/// One chunk of the replay purge (`$1` now in Unix seconds, `$2` the chunk): the oldest
/// expired records, found through the `replay_expiry` index.
pub(crate) const PURGE_REPLAY: &str = "\
DELETE FROM replay WHERE message_id IN (
    SELECT message_id FROM replay WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)";

/// A [`ReplayStore`] in the database, shared by every instance using it.
///
/// It also remembers the answer given to each message id, so a redelivery is answered
/// exactly as the first delivery was ([`DbReplayStore::saved_response`]). Ids are recorded
/// and answers saved through the intake's [`GroupCommit`] writer: many messages per
/// transaction.
#[derive(Debug, Clone)]
pub struct DbReplayStore {
    db: Db,
    commit: GroupCommit,
}

/// An answer saved for a message id.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SavedResponse {
    /// HTTP status.
    pub response_status: i64,
    /// JSON body.
    pub response_body: String,
    /// `Location` header, if any.
    pub response_location: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DigestRow {
    digest: String,
    expires_at: i64,
}

/// Records a message id in the caller's transaction: [`Delivery::First`] for a new (or
/// expired) id, [`Delivery::Redelivery`] for a known id with the same `digest` (hex),
/// [`ReplayError::Conflict`] for a known id with another.
pub(crate) async fn record_in(
    tx: &mut Tx,
    id: &str,
    digest: &str,
    expires_at: i64,
    now: i64,
) -> Result<Result<Delivery, ReplayError>, sqlx::Error> {
    let inserted = exec!(
        &mut *tx,
        "INSERT INTO replay (message_id, digest, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (message_id) DO UPDATE
           SET digest = excluded.digest, expires_at = excluded.expires_at,
               response_status = NULL, response_body = NULL, response_location = NULL
         WHERE replay.expires_at < $4",
        id,
        digest,
        expires_at,
        now
    )?;
    if inserted == 1 {
        return Ok(Ok(Delivery::First));
    }
    let row = fetch_optional!(
        &mut *tx,
        DigestRow,
        "SELECT digest, expires_at FROM replay WHERE message_id = $1",
        id
    )?;
    Ok(match row {
        Some(r) if r.digest == digest && r.expires_at >= now => Ok(Delivery::Redelivery),
        _ => Err(ReplayError::Conflict),
    })
}

/// Saves the answer given to `message_id` in the caller's transaction (the first answer
/// saved stays).
pub(crate) async fn save_response_in(
    tx: &mut Tx,
    message_id: &str,
    status: i64,
    body: &str,
    location: Option<&str>,
) -> Result<(), sqlx::Error> {
    exec!(
        tx,
        "UPDATE replay SET response_status = $1, response_body = $2, response_location = $3
         WHERE message_id = $4 AND response_status IS NULL",
        status,
        body,
        location,
        message_id
    )?;
    Ok(())
}

/// The answer saved for `message_id` in the caller's transaction, if there is one.
pub(crate) async fn saved_response_in(
    tx: &mut Tx,
    message_id: &str,
) -> Result<Option<SavedResponse>, sqlx::Error> {
    fetch_optional!(
        tx,
        SavedResponse,
        "SELECT response_status, response_body, response_location FROM replay
         WHERE message_id = $1 AND response_status IS NOT NULL",
        message_id
    )
}

impl DbReplayStore {
    /// A store over `db`, writing through `commit`.
    #[must_use]
    pub fn new(db: Db, commit: GroupCommit) -> Self {
        Self { db, commit }
    }

    async fn record_inner(
        &self,
        id: &str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> Result<Result<Delivery, ReplayError>, CommitError> {
        let work = Work::Record {
            id: id.to_owned(),
            digest: hex_encode(&digest),
            expires_at,
            now,
        };
        match self.commit.submit(work).await? {
            Outcome::Recorded(result) => Ok(result),
            _ => Err(CommitError::Mismatch("a replay record")),
        }
    }

    /// The answer saved for `message_id`, if the first delivery finished.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn saved_response(
        &self,
        message_id: &str,
    ) -> Result<Option<SavedResponse>, sqlx::Error> {
        let mut tx = self.db.begin_read().await?;
        let row = saved_response_in(&mut tx, message_id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Saves the answer given to `message_id` (group-committed).
    ///
    /// # Errors
    /// The database's error, or [`CommitError::Stopped`] during shutdown.
    pub async fn save_response(
        &self,
        message_id: &str,
        status: u16,
        body: &str,
        location: Option<&str>,
    ) -> Result<(), CommitError> {
        let work = Work::SaveResponse {
            message_id: message_id.to_owned(),
            status: i64::from(status),
            body: body.to_owned(),
            location: location.map(str::to_owned),
        };
        self.commit.submit(work).await.map(|_| ())
    }

    /// Deletes expired ids, [`PURGE_CHUNK`] per transaction, so that the intake's writes
    /// take turns with a large purge instead of waiting for all of it.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn purge_expired(&self, now_secs: i64) -> Result<u64, sqlx::Error> {
        let mut purged = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let n = exec!(&mut tx, PURGE_REPLAY, now_secs, PURGE_CHUNK)?;
            tx.commit().await?;
            purged += n;
            if n < PURGE_CHUNK.unsigned_abs() {
                return Ok(purged);
            }
        }
    }
}

impl ReplayStore for DbReplayStore {
    fn record<'a>(
        &'a self,
        id: &'a str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<Delivery, ReplayError>> {
        Box::pin(async move {
            match self.record_inner(id, digest, expires_at, now).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(error = %e, "replay store failed");
                    Err(ReplayError::Unavailable("database error".into()))
                }
            }
        })
    }
}

/// Lowercase hex.
#[must_use]
pub fn hex_encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod start_up_tests {
    use std::time::Duration;

    use super::{Db, DbError, time_ordered_id_at};

    /// Ids made later sort after ids made earlier, as text, across every digit's roll-over;
    /// each keeps its 20 random characters and is a valid provider job id.
    #[test]
    fn time_ordered_ids_sort_by_time() {
        let times = [
            0,
            1,
            35,
            36,
            1_295,
            1_296,
            1_764_352_800_000,
            1_764_352_800_001,
            1_764_352_800_035,
            1_764_352_800_036,
            1_764_352_846_655,
            1_764_352_846_656,
            4_000_000_000_000,
        ];
        let ids: Vec<String> = times
            .iter()
            .map(|&t| time_ordered_id_at("pjob_", t))
            .collect();
        for pair in ids.windows(2) {
            // The time part decides, whatever the random tails.
            assert!(pair[0][..14] < pair[1][..14], "{pair:?}");
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        for id in &ids {
            assert_eq!(id.len(), "pjob_".len() + 9 + 20, "{id}");
            diax_sdk::ProviderJobId::parse(id.as_str()).unwrap();
        }
        assert!(ids[0].starts_with("pjob_000000000"), "{}", ids[0]);
        assert_ne!(
            time_ordered_id_at("led_", 5)[13..],
            time_ordered_id_at("led_", 5)[13..]
        );
    }

    /// Under back-to-back write transactions, with the writer's own checkpoints off, the
    /// background task keeps the log starting over, its pass on the writer connection
    /// included (which must neither fail nor hold up the writes). A restart is seen in the
    /// log file's header (its first salt changes). This does not show that the pass on
    /// the writer connection is what restarts the log: the background passes alone catch
    /// up now and then (3,000 writes here: 95–99 restarts with it, 17–22 without it on a
    /// quiet machine, 157–271 either way with the cores and the disk loaded), so the
    /// effect is measured under load instead (docs/LOADGEN.md: offer p99.9 50 → 16 ms).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_over_under_steady_writes() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone().pragma("wal_autocheckpoint", "0"))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v BLOB)")
            .execute(&write)
            .await
            .unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(super::checkpoints(
            opts,
            write.clone(),
            Arc::downgrade(&open),
            Duration::from_millis(5),
            64,
        ));
        // Transactions of a 4,000-byte row each, back to back, until the log has started
        // over three times (or a minute has passed).
        let salt = || {
            let header = std::fs::read(dir.path().join("t.db-wal")).unwrap_or_default();
            header.get(16..20).map(<[u8]>::to_vec)
        };
        let (mut restarts, mut last, mut writes) = (0, salt(), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while restarts < 3 && std::time::Instant::now() < deadline {
            sqlx::query("INSERT INTO t VALUES (zeroblob(4000))")
                .execute(&write)
                .await
                .unwrap();
            writes += 1;
            let now = salt();
            if now != last {
                restarts += 1;
                last = now;
            }
        }
        assert_eq!(
            restarts, 3,
            "the log started over {restarts} times in {writes} writes"
        );
        open.store(false, std::sync::atomic::Ordering::Relaxed);
        task.await.unwrap();
        write.close().await;
    }

    #[tokio::test]
    async fn an_unreachable_postgres_is_named_at_once() {
        // Port 1 on loopback: nothing listens there.
        let Err(err) = Db::connect("postgres://postgres@127.0.0.1:1/fixmyprint").await else {
            panic!("nothing listens on port 1");
        };
        assert!(matches!(err, DbError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("cannot connect to PostgreSQL at 127.0.0.1:1"),
            "{text}"
        );
    }

    /// A task that holds the SQLite writer in a transaction and asks for it again is
    /// refused at once; another task waits for it as usual, and so does the same task once
    /// its transaction ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beginning_twice_in_one_task_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        let (held_tx, held) = tokio::sync::oneshot::channel();
        let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn({
            let db = db.clone();
            async move {
                let tx = db.begin().await.unwrap();
                let err = db.begin().await.unwrap_err();
                assert!(super::is_writer_held(&err), "{err:?}");
                // Reading stays possible (a reader connection).
                let read = db.begin_read().await.unwrap();
                read.commit().await.unwrap();
                held_tx.send(()).unwrap();
                go.await.unwrap();
                tx.commit().await.unwrap();
                let again = db.begin().await.unwrap();
                again.rollback().await.unwrap();
            }
        });
        held.await.unwrap();
        let other = tokio::spawn({
            let db = db.clone();
            async move { db.begin().await.map(drop) }
        });
        go_tx.send(()).unwrap();
        holder.await.unwrap();
        other.await.unwrap().unwrap();
        db.close().await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fmp.db");
        let db = Db::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        for file in ["fmp.db", "fmp.db-wal", "fmp.db-shm"] {
            let p = dir.path().join(file);
            if p.exists() {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{file}");
            }
        }
        db.close().await;
    }

    /// Panics whose message says a SQLite connection could not close (sqlx panics on its
    /// connection's thread when `sqlite3_close` refuses), seen by any test in this binary.
    fn close_refusals() -> &'static std::sync::atomic::AtomicUsize {
        use std::sync::atomic::AtomicUsize;
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if info.to_string().contains("unfinalized statements") {
                    SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                previous(info);
            }));
        });
        &SEEN
    }

    /// A database whose writer connection holds kept statements (see
    /// `WriterStatements`), in `dir`.
    async fn with_kept_statements(dir: &std::path::Path) -> Db {
        let db = Db::connect(&format!("sqlite://{}", dir.join("fmp.db").display()))
            .await
            .unwrap();
        let Db::Sqlite(sqlite) = &db else {
            unreachable!()
        };
        let mut writer = sqlite.writer().await.unwrap();
        let kept = writer
            .run_on_handle(|conn| {
                let mut one = conn
                    .prepare_cached("SELECT 1")
                    .map_err(super::sqlite_error)?;
                one.query_row([], |row| row.get::<_, i64>(0))
                    .map_err(super::sqlite_error)
            })
            .await
            .unwrap();
        assert_eq!(kept, 1);
        drop(writer);
        db
    }

    /// The intake's statements kept on SQLite's writer connection never keep it from
    /// closing, whether the database is closed or only dropped: the connection closes
    /// cleanly (SQLite removes the log at the last clean close) and sqlx never meets a
    /// statement left open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_statements_never_keep_the_writer_from_closing() {
        let refusals = close_refusals();
        let before = refusals.load(std::sync::atomic::Ordering::SeqCst);

        // The last connection to close (the checkpoint task's, at its next tick once the
        // database is closed or gone) removes the log.
        async fn closes_cleanly(dir: &std::path::Path) {
            let log = dir.join("fmp.db-wal");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while log.exists() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!log.exists(), "the database never closed cleanly");
        }
        let closed = tempfile::tempdir().unwrap();
        with_kept_statements(closed.path()).await.close().await;
        closes_cleanly(closed.path()).await;
        let dropped = tempfile::tempdir().unwrap();
        drop(with_kept_statements(dropped.path()).await);
        closes_cleanly(dropped.path()).await;
        assert_eq!(refusals.load(std::sync::atomic::Ordering::SeqCst), before);
    }
}
