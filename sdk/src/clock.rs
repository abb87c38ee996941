//! Time: [`unix_now`] and the [`Clock`] that signers and senders read.
//!
//! Everything that stamps a message (the `webhook-timestamp` of a signed send, the `iat` of a
//! link token) reads the time through a [`Clock`], so a test or a broker with an adjustable
//! clock can move time without sleeping. [`SystemClock`] is the default; any
//! `Fn() -> i64 + Send + Sync` closure is a clock too.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use diax_sdk::clock::{Clock, SystemClock, unix_now};
//!
//! // The system clock.
//! assert!((SystemClock.now() - unix_now()).abs() <= 1);
//!
//! // A clock that tests move by hand: any closure returning Unix seconds.
//! let offset = Arc::new(AtomicI64::new(0));
//! let shifted = {
//!     let offset = Arc::clone(&offset);
//!     move || unix_now() + offset.load(Ordering::Relaxed)
//! };
//! offset.store(3600, Ordering::Relaxed);
//! assert!(shifted.now() >= unix_now() + 3599);
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The current Unix time in seconds, from the system clock (0 before 1970, `i64::MAX` in the
/// very far future: never a panic).
///
/// ```
/// assert!(diax_sdk::clock::unix_now() > 1_700_000_000);
/// ```
#[must_use]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A source of the current time, in Unix seconds.
///
/// Implemented by [`SystemClock`] and by every `Fn() -> i64 + Send + Sync` closure, so an
/// application's own adjustable clock plugs in with `move || my_clock.now()`.
///
/// ```
/// use diax_sdk::clock::Clock;
///
/// /// A clock stopped at one instant.
/// #[derive(Debug)]
/// struct Frozen(i64);
///
/// impl Clock for Frozen {
///     fn now(&self) -> i64 {
///         self.0
///     }
/// }
///
/// assert_eq!(Frozen(1_700_000_000).now(), 1_700_000_000);
/// ```
pub trait Clock: Send + Sync {
    /// Now, in Unix seconds.
    fn now(&self) -> i64;
}

/// The operating system's clock ([`unix_now`]).
///
/// ```
/// use diax_sdk::clock::{Clock, SystemClock};
/// assert!(SystemClock.now() > 1_700_000_000);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        unix_now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> i64 + Send + Sync,
{
    fn now(&self) -> i64 {
        self()
    }
}

impl fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock(now = {})", self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_and_the_system_clock_are_clocks() {
        let fixed = || 42;
        let clocks: [&dyn Clock; 2] = [&fixed, &SystemClock];
        assert_eq!(clocks[0].now(), 42);
        assert!(clocks[1].now() > 1_700_000_000);
        assert_eq!(format!("{:?}", clocks[0]), "Clock(now = 42)");
    }
}
