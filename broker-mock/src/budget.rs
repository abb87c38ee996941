//! The process-wide budget of model bytes held in memory at once
//! (`--max-buffered-model-bytes`).
//!
//! Every path that holds a model's bytes in memory (an upload read whole before it goes
//! into the database, a job's result fetched whole, a version's bytes loaded to be sent)
//! reserves its size, announced or capped, before it reads a byte, and gives it back when
//! its [`Reservation`] is dropped: when the request ends, the response body has been sent,
//! or the request future is dropped because its client hung up. A path that streams (the
//! bucket's uploads and downloads) reserves only what it buffers. Past the budget the
//! request is refused at once with `503` and `Retry-After: 1` ([`ApiError::Busy`]); nothing
//! waits and nothing is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ApiError;

/// The budget: how many bytes may be reserved at once and how many are.
#[derive(Debug)]
pub(crate) struct ModelBudget {
    limit: u64,
    held: AtomicU64,
}

/// Bytes reserved from a [`ModelBudget`], given back when dropped.
#[derive(Debug)]
#[must_use = "the reservation is given back when dropped"]
pub(crate) struct Reservation {
    budget: Arc<ModelBudget>,
    bytes: u64,
}

impl ModelBudget {
    /// A budget of `limit` bytes, none reserved.
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicU64::new(0),
        })
    }

    /// Bytes reserved right now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Reserves `bytes` for `what` (named in the refusal), or refuses with
    /// [`ApiError::Busy`] when they do not fit beside what is reserved already.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        what: &str,
    ) -> Result<Reservation, ApiError> {
        let limit = self.limit;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|after| *after <= limit)
            })
            .map(|_| Reservation {
                budget: Arc::clone(self),
                bytes,
            })
            .map_err(|_| {
                ApiError::Busy(format!(
                    "the broker holds as many model bytes in memory as it may ({limit}); {what} ({bytes} bytes) was not started: try again shortly"
                ))
            })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_past_the_limit_are_refused_and_dropping_one_makes_room() {
        let budget = ModelBudget::new(100);
        let a = budget.reserve(60, "a").expect("fits");
        let b = budget.reserve(40, "b").expect("fits exactly");
        let refused = budget.reserve(1, "c").expect_err("full");
        assert!(matches!(refused, ApiError::Busy(_)), "{refused:?}");
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        let c = budget.reserve(60, "c").expect("room again");
        assert!(budget.reserve(u64::MAX, "huge").is_err(), "no overflow");
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let budget = ModelBudget::new(1_000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..10_000_u64 {
                        if let Ok(r) = budget.reserve(1 + i % 300, "x") {
                            assert!(budget.held() <= 1_000);
                            drop(r);
                        }
                    }
                });
            }
        });
        assert_eq!(budget.held(), 0);
    }
}
