//! Sweeping what expires: result credentials past their expiry (with their result files)
//! and unfinished result writes left by a crash. Run by every instance from the background
//! loop in `mod.rs`; each step is idempotent, so instances sharing a database may overlap.

use std::time::{Duration, SystemTime};

use super::Service;
use super::db::{exec, fetch_all};

/// How often each instance sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// An unfinished result write older than this is left over from a crash (a write takes
/// seconds).
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(3600);

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired result credentials (rows) and their result files.
    pub expired_results: u64,
    /// Unfinished result writes (`.part` files).
    pub partial_files: u64,
}

#[derive(sqlx::FromRow)]
struct ExpiredCredential {
    token_hash: String,
    object_key: String,
}

/// Removes result credentials that expired before `now` (Unix seconds) and their result
/// files, and unfinished writes older than [`PARTIAL_MAX_AGE`].
///
/// # Errors
/// Database errors; a file that cannot be removed is logged and retried next time.
pub async fn sweep(service: &Service, now: i64) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    let mut tx = service.db().begin().await?;
    let expired: Vec<ExpiredCredential> = fetch_all!(
        &mut tx,
        ExpiredCredential,
        "SELECT token_hash, object_key FROM result_credentials WHERE expires_at < $1",
        now
    )?;
    tx.commit().await?;
    for cred in expired {
        if let Err(e) = service.storage().delete(&cred.object_key).await {
            tracing::warn!(error = %e, key = %cred.object_key, "could not remove an expired result");
            continue;
        }
        let mut tx = service.db().begin().await?;
        swept.expired_results += exec!(
            &mut tx,
            "DELETE FROM result_credentials WHERE token_hash = $1",
            &cred.token_hash
        )?;
        tx.commit().await?;
    }
    let before = SystemTime::now()
        .checked_sub(PARTIAL_MAX_AGE)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match service.storage().sweep_partial(before).await {
        Ok(n) => swept.partial_files = n,
        Err(e) => tracing::warn!(error = %e, "could not sweep unfinished result writes"),
    }
    if swept != Swept::default() {
        tracing::info!(
            expired_results = swept.expired_results,
            partial_files = swept.partial_files,
            "swept"
        );
    }
    Ok(swept)
}
