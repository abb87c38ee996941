//! Purges rows that only grow: expired replay rows, used link-token ids whose token has
//! expired, expired temporary credentials; and, with a model bucket, objects no model
//! version names (a failed insert, a crash between writing an object and its row). Runs every `--sweep-interval-ms` until the server
//! shuts down. (The message log bounds itself as it is written; see
//! `store::messages::record`.)

use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;
use crate::store::{models, replay};

/// Runs until `stop` turns true.
pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.cfg.sweep_interval_ms.max(10));
    loop {
        if *stop.borrow() {
            break;
        }
        sweep(&state).await;
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One sweep; failures are logged and tried again next time.
pub(crate) async fn sweep(state: &AppState) {
    let now = state.clock.now();
    let purged = async {
        let rows = replay::purge_expired(&state.db, now).await?;
        Ok::<u64, sqlx::Error>(rows + models::purge_expired_credentials(&state.db, now).await?)
    }
    .await;
    match purged {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "expired rows purged"),
        Err(e) => tracing::warn!(error = %e, "purging expired rows failed"),
    }
    if let Some(bucket) = &state.bucket {
        // Objects no version names, written long enough ago that no upload or result fetch
        // still on its way to its row can be among them.
        let before = now.saturating_sub(ORPHAN_GRACE_SECS);
        match models::sweep_objects(&state.db, bucket, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(objects = n, "unreferenced model objects removed"),
            Err(e) => tracing::warn!(error = %e, "sweeping the model bucket failed"),
        }
    }
}

/// How old an object no version names must be before the sweep removes it, seconds: longer
/// than any upload or result fetch takes between writing the object and its row.
pub(crate) const ORPHAN_GRACE_SECS: i64 = 3600;
