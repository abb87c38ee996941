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
        Self {
            inner: Arc::new(Inner {
                db,
                cfg,
                base_url,
                fetcher,
                clock,
                wake_notifier: Notify::new(),
                inputs_in_flight: InFlight::default(),
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
