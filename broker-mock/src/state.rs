//! What every handler and background task shares: the database, the configuration, the
//! outgoing HTTP client, the clock, and the in-process coordination of deliveries (which job
//! inputs are being sent, one lock per job while an event is applied).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::SqlitePool;
use tokio::sync::Notify;

use crate::config::{Clock, Config};

/// State shared by every handler and background task (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: SqlitePool,
    pub(crate) cfg: Config,
    /// The base URL peers reach this broker at (events and download URLs are built on it).
    pub(crate) base_url: String,
    /// The outgoing client and its address policy.
    pub(crate) fetcher: diax_sdk::client::Fetcher,
    pub(crate) clock: Clock,
    /// Woken when a notification is recorded, so it is pushed without waiting a round.
    pub(crate) wake_notifier: Notify,
    /// Jobs whose `job.input` is being sent right now.
    pub(crate) inputs_in_flight: InFlight,
    /// Notifications being sent right now.
    pub(crate) notifications_in_flight: InFlight,
    /// Per-destination bounds and circuit breakers of background deliveries.
    pub(crate) destinations: Destinations,
    /// One lock per job while an event is applied, so concurrent deliveries act once.
    job_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AppState {
    pub(crate) fn new(
        db: SqlitePool,
        cfg: Config,
        base_url: String,
        fetcher: diax_sdk::client::Fetcher,
        clock: Clock,
    ) -> Self {
        let destinations = Destinations::new(
            cfg.max_in_flight_per_destination,
            cfg.breaker_failures,
            cfg.breaker_cooldown_ms,
        );
        Self {
            inner: Arc::new(Inner {
                db,
                cfg,
                base_url,
                fetcher,
                clock,
                wake_notifier: Notify::new(),
                inputs_in_flight: InFlight::default(),
                notifications_in_flight: InFlight::default(),
                destinations,
                job_locks: Mutex::default(),
            }),
        }
    }
}

impl Inner {
    /// The lock serialising event processing for `job`.
    pub(crate) fn job_lock(&self, job: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.job_locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget locks nobody holds any more, so the map stays small.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(job.to_owned()).or_default())
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// Job ids with a `job.input` attempt in flight in this process, so the first attempt and
/// the background deliverer never send the same job's input at the same time.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashSet<String>>);

/// Removes its job from [`InFlight`] when dropped.
pub(crate) struct Claim<'a> {
    set: &'a InFlight,
    job: String,
}

impl InFlight {
    /// Marks `job` in flight, unless it is already.
    pub(crate) fn claim(&self, job: &str) -> Option<Claim<'_>> {
        let mut set = match self.0.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        set.insert(job.to_owned()).then(|| Claim {
            set: self,
            job: job.to_owned(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = match self.set.0.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        set.remove(&self.job);
    }
}

/// Where background deliveries go, keyed by destination (a URL's scheme, host and port): at
/// most `per_destination` deliveries in flight to each, and a circuit breaker that stops
/// sending to a destination after `failures` consecutive failures for `cooldown_ms`.
#[derive(Debug)]
pub(crate) struct Destinations {
    per_destination: u32,
    failures: u32,
    cooldown_ms: u64,
    map: Mutex<HashMap<String, Destination>>,
}

#[derive(Debug, Default)]
struct Destination {
    in_flight: u32,
    consecutive_failures: u32,
    open_until_ms: i64,
}

/// A delivery's place at its destination; report its outcome with [`Slot::done`]. Dropped
/// without a report (a task aborted at shutdown), it only frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    state: AppState,
    key: String,
    reported: bool,
}

/// The destination key of `url`: its origin, or the whole text when it has none.
pub(crate) fn destination_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .unwrap_or_else(|| url.to_owned())
}

impl Destinations {
    pub(crate) fn new(per_destination: u32, failures: u32, cooldown_ms: u64) -> Self {
        Self {
            per_destination: per_destination.max(1),
            failures: failures.max(1),
            cooldown_ms,
            map: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Destination>> {
        match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl AppState {
    /// A place for one delivery to `url` now, unless the destination already has its
    /// maximum in flight or its circuit is open (then the delivery waits for a later round).
    pub(crate) fn enter(&self, url: &str, now_ms: i64) -> Option<Slot> {
        let key = destination_of(url);
        let d = &self.destinations;
        let mut map = d.lock();
        let dest = map.entry(key.clone()).or_default();
        if dest.in_flight >= d.per_destination || now_ms < dest.open_until_ms {
            return None;
        }
        if dest.consecutive_failures >= d.failures && dest.in_flight > 0 {
            // Half-open: one probe at a time.
            return None;
        }
        dest.in_flight += 1;
        Some(Slot {
            state: self.clone(),
            key,
            reported: false,
        })
    }
}

impl Slot {
    /// Reports the delivery's outcome: a success closes the circuit, a failure counts
    /// towards opening it.
    pub(crate) fn done(mut self, ok: bool, now_ms: i64) {
        self.reported = true;
        let d = &self.state.destinations;
        let mut map = d.lock();
        if let Some(dest) = map.get_mut(&self.key) {
            dest.in_flight = dest.in_flight.saturating_sub(1);
            if ok {
                dest.consecutive_failures = 0;
                dest.open_until_ms = 0;
            } else {
                dest.consecutive_failures = dest.consecutive_failures.saturating_add(1);
                if dest.consecutive_failures >= d.failures {
                    dest.open_until_ms =
                        now_ms.saturating_add(i64::try_from(d.cooldown_ms).unwrap_or(i64::MAX));
                }
            }
            if dest.in_flight == 0 && dest.consecutive_failures == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        let mut map = self.state.destinations.lock();
        if let Some(dest) = map.get_mut(&self.key) {
            dest.in_flight = dest.in_flight.saturating_sub(1);
        }
    }
}
