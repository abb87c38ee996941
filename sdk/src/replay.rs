//! Replay protection: remembering which message ids were seen, and with which body.
//!
//! Standard Webhooks senders keep the same `webhook-id` when they retry a delivery, so a
//! receiver must tell a *redelivery* (same id, same body: answer as before, do nothing twice)
//! from a *replay* (same id, different body: refuse). A [`ReplayStore`] records the SHA-256
//! of each verified body under its id until the id can no longer pass the timestamp check.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// A boxed, sendable future, so [`ReplayStore`] stays object-safe without extra crates.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a replay store knew about a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First time this id is seen: process the message.
    First,
    /// The same id with the same body was seen before: a retry. Answer as the first time
    /// did, without acting twice.
    Redelivery,
}

/// Errors of a replay store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The id was seen with a different body.
    #[error("message id reused for a different body")]
    Conflict,
    /// The store itself failed (database down, …).
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

/// The SHA-256 of a body, as stored by replay stores.
#[must_use]
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Where verified message ids are remembered. Implement it over your database to share it
/// between several instances of a service; [`MemoryReplayStore`] serves a single process.
pub trait ReplayStore: Send + Sync + std::fmt::Debug {
    /// Records `id` with `digest` until `expires_at` (Unix seconds), atomically:
    /// [`Delivery::First`] if unknown, [`Delivery::Redelivery`] if known with the same
    /// digest, [`ReplayError::Conflict`] if known with another digest.
    fn record<'a>(
        &'a self,
        id: &'a str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<Delivery, ReplayError>>;
}

/// An in-process [`ReplayStore`] with expiry and a bound on the number of ids kept.
#[derive(Debug)]
pub struct MemoryReplayStore {
    seen: Mutex<HashMap<String, ([u8; 32], i64)>>,
    capacity: usize,
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

impl MemoryReplayStore {
    /// A store that keeps at most `capacity` live ids; when full it first drops expired
    /// ids, then refuses new ones with [`ReplayError::Unavailable`] rather than forget a
    /// live id (which would reopen the replay window).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Synchronous form of [`ReplayStore::record`].
    ///
    /// # Errors
    /// As [`ReplayStore::record`].
    pub fn record_sync(
        &self,
        id: &str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> Result<Delivery, ReplayError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| ReplayError::Unavailable("lock poisoned".into()))?;
        if let Some((known, until)) = seen.get(id)
            && *until >= now
        {
            return if *known == digest {
                Ok(Delivery::Redelivery)
            } else {
                Err(ReplayError::Conflict)
            };
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, (_, until)| *until >= now);
            if seen.len() >= self.capacity {
                return Err(ReplayError::Unavailable("replay store full".into()));
            }
        }
        seen.insert(id.to_owned(), (digest, expires_at));
        Ok(Delivery::First)
    }

    /// Number of ids currently held (expired ones included until the next sweep).
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether the store holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayStore for MemoryReplayStore {
    fn record<'a>(
        &'a self,
        id: &'a str,
        digest: [u8; 32],
        expires_at: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<Delivery, ReplayError>> {
        let result = self.record_sync(id, digest, expires_at, now);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_redelivery_conflict_expiry() {
        let store = MemoryReplayStore::with_capacity(2);
        let a = body_digest(b"a");
        let b = body_digest(b"b");
        assert_eq!(store.record_sync("m1", a, 100, 0), Ok(Delivery::First));
        assert_eq!(
            store.record_sync("m1", a, 100, 50),
            Ok(Delivery::Redelivery)
        );
        assert_eq!(
            store.record_sync("m1", b, 100, 50),
            Err(ReplayError::Conflict)
        );
        // Expired: the id may be used again (the timestamp check refuses old messages).
        assert_eq!(store.record_sync("m1", b, 300, 101), Ok(Delivery::First));
        assert_eq!(store.record_sync("m2", a, 300, 101), Ok(Delivery::First));
        assert!(matches!(
            store.record_sync("m3", a, 300, 101),
            Err(ReplayError::Unavailable(_))
        ));
        assert_eq!(store.record_sync("m3", a, 300, 301), Ok(Delivery::First));
    }
}
