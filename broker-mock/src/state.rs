//! What every handler and background task shares: the database, the configuration, the
//! outgoing HTTP client, the clock, and the in-process coordination of deliveries (which job
//! inputs are being sent, one lock per job while an event is applied).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::SqlitePool;
use tokio::sync::Notify;

use crate::bucket::Bucket;
use crate::budget::ModelBudget;
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
    /// The bucket model versions are written to (`--storage s3://…`); `None`: the database.
    pub(crate) bucket: Option<Bucket>,
    /// Model bytes held in memory at once (`--max-buffered-model-bytes`).
    pub(crate) model_budget: Arc<ModelBudget>,
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
        bucket: Option<Bucket>,
    ) -> Self {
        let destinations = Destinations::new(
            cfg.max_in_flight_per_destination,
            cfg.breaker_failures,
            cfg.breaker_cooldown_ms,
        );
        let model_budget = ModelBudget::new(cfg.buffered_model_budget());
        Self {
            inner: Arc::new(Inner {
                db,
                model_budget,
                cfg,
                base_url,
                fetcher,
                clock,
                bucket,
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
///
/// The map is bounded ([`MAX_DESTINATIONS`]): an entry goes as soon as nothing is in flight
/// and its last delivery succeeded; a failing one stays (its failure count and open circuit
/// matter) until the map is full, when the idle ones (nothing in flight, circuit not open),
/// least recently used first, make room. When none is idle a new destination waits for a
/// later round.
#[derive(Debug)]
pub(crate) struct Destinations {
    per_destination: u32,
    failures: u32,
    cooldown_ms: u64,
    max_entries: usize,
    map: Mutex<HashMap<String, Destination>>,
}

/// Most destinations tracked at once (see [`Destinations`]).
pub(crate) const MAX_DESTINATIONS: usize = 4096;

#[derive(Debug, Default)]
struct Destination {
    in_flight: u32,
    consecutive_failures: u32,
    open_until_ms: i64,
    last_used_ms: i64,
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
        Self::with_capacity(per_destination, failures, cooldown_ms, MAX_DESTINATIONS)
    }

    fn with_capacity(
        per_destination: u32,
        failures: u32,
        cooldown_ms: u64,
        max_entries: usize,
    ) -> Self {
        Self {
            per_destination: per_destination.max(1),
            failures: failures.max(1),
            cooldown_ms,
            max_entries: max_entries.max(1),
            map: Mutex::default(),
        }
    }

    /// Takes a place for one delivery to `key` at `now_ms`, if the destination has room and
    /// its circuit lets it through (see [`AppState::enter`]).
    fn admit(&self, key: &str, now_ms: i64) -> bool {
        let mut map = self.lock();
        if !map.contains_key(key) && map.len() >= self.max_entries {
            let excess = map.len() + 1 - self.max_entries;
            Self::evict_idle(&mut map, now_ms, excess);
            if map.len() >= self.max_entries {
                return false;
            }
        }
        let dest = map.entry(key.to_owned()).or_default();
        if dest.in_flight >= self.per_destination || now_ms < dest.open_until_ms {
            return false;
        }
        if dest.consecutive_failures >= self.failures && dest.in_flight > 0 {
            // Half-open: one probe at a time.
            return false;
        }
        dest.in_flight += 1;
        dest.last_used_ms = now_ms;
        true
    }

    /// Removes up to `n` idle entries (nothing in flight, circuit not open), least recently
    /// used first.
    fn evict_idle(map: &mut HashMap<String, Destination>, now_ms: i64, n: usize) {
        let mut idle: Vec<(i64, String)> = map
            .iter()
            .filter(|(_, d)| d.in_flight == 0 && now_ms >= d.open_until_ms)
            .map(|(k, d)| (d.last_used_ms, k.clone()))
            .collect();
        idle.sort_unstable();
        for (_, key) in idle.into_iter().take(n) {
            map.remove(&key);
        }
    }

    /// Reports a delivery to `key` done (`ok`: it succeeded).
    fn finish(&self, key: &str, ok: bool, now_ms: i64) {
        let mut map = self.lock();
        if let Some(dest) = map.get_mut(key) {
            dest.in_flight = dest.in_flight.saturating_sub(1);
            dest.last_used_ms = dest.last_used_ms.max(now_ms);
            if ok {
                dest.consecutive_failures = 0;
                dest.open_until_ms = 0;
            } else {
                dest.consecutive_failures = dest.consecutive_failures.saturating_add(1);
                if dest.consecutive_failures >= self.failures {
                    dest.open_until_ms =
                        now_ms.saturating_add(i64::try_from(self.cooldown_ms).unwrap_or(i64::MAX));
                }
            }
            if dest.in_flight == 0 && dest.consecutive_failures == 0 {
                map.remove(key);
            }
        }
    }

    /// Frees a place taken at `key` with no outcome.
    fn leave(&self, key: &str) {
        if let Some(dest) = self.lock().get_mut(key) {
            dest.in_flight = dest.in_flight.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
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
        if !self.destinations.admit(&key, now_ms) {
            return None;
        }
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
        self.state.destinations.finish(&self.key, ok, now_ms);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.reported {
            self.state.destinations.leave(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failing destinations stay (their breaker state matters) until the map is full; then
    /// the idle ones make room, least recently used first, and a busy one is never evicted.
    #[test]
    fn the_destination_map_is_bounded_and_evicts_idle_entries() {
        let d = Destinations::with_capacity(2, 3, 1_000, 4);
        // Four destinations whose deliveries failed once each: kept (failure counts).
        for (n, key) in ["a", "b", "c", "e"].iter().enumerate() {
            let t = i64::try_from(n).unwrap();
            assert!(d.admit(key, t));
            d.finish(key, false, t);
        }
        assert_eq!(d.len(), 4);
        // A fifth: the least recently used idle one ("a") makes room.
        assert!(d.admit("f", 10));
        assert_eq!(d.len(), 4);
        assert!(!d.lock().contains_key("a"));
        // Everything busy or open: a new destination waits.
        for key in ["b", "c", "e"] {
            assert!(d.admit(key, 11));
        }
        assert!(!d.admit("g", 12), "no idle entry to evict");
        assert_eq!(d.len(), 4);
        // A success removes its entry at once.
        d.finish("f", true, 13);
        assert_eq!(d.len(), 3);
        assert!(d.admit("g", 14));
        // Ten thousand failing destinations one after another never grow the map past 4.
        for n in 0..10_000_i64 {
            let key = format!("h{n}");
            if d.admit(&key, 100 + n) {
                d.finish(&key, false, 100 + n);
            }
            assert!(d.len() <= 4);
        }
        // An open circuit is not idle: it is kept however old.
        let d = Destinations::with_capacity(1, 1, 1_000_000, 2);
        assert!(d.admit("open", 0));
        d.finish("open", false, 0);
        assert!(d.admit("x", 1));
        d.finish("x", false, 1);
        assert!(!d.admit("y", 2), "both open");
        assert!(
            d.admit("y", 2_000_000),
            "after the cooldown both are idle again"
        );
        assert!(d.lock().contains_key("y"));
    }
}
