//! [`Verifier`]: signature, timestamp, size and replay checks for incoming signed requests.

use std::sync::{Arc, RwLock};

use crate::clock::unix_now;
use crate::replay::{Delivery, MemoryReplayStore, ReplayError, ReplayStore, body_digest};
use crate::secret::Keyring;
use crate::webhook::{DEFAULT_TOLERANCE_SECS, RawHeaders, Verified, VerifyError};

/// Default largest body a [`Verifier`] accepts: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default time a verified message id is remembered: 24 hours, so that retries of the same
/// delivery over a long outage are still recognised as redeliveries.
pub const DEFAULT_REPLAY_RETENTION_SECS: u64 = 24 * 3600;

/// Settings of a [`Verifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Largest clock difference accepted, in seconds, in either direction. Default 300.
    pub tolerance_secs: u64,
    /// Largest body accepted, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// How long a verified id is remembered, in seconds; never less than twice the
    /// tolerance. Default 24 h.
    pub replay_retention_secs: u64,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            replay_retention_secs: DEFAULT_REPLAY_RETENTION_SECS,
        }
    }
}

/// Checks incoming signed requests: headers, timestamp tolerance, signature against every
/// active key, body size, and replays.
///
/// The keyring can be swapped at run time (after a secret rotation) with
/// [`Verifier::set_keyring`]; the verifier is meant to be shared (`Arc<Verifier>`).
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diax_sdk::{Delivery, KeyId, Keyring, MessageId, Secret, Verifier, VerifyError};
/// use diax_sdk::webhook::RawHeaders;
///
/// let ring = Keyring::single(KeyId::parse("key_1")?, Secret::generate());
/// let now = 1_700_000_000;
/// let signed = ring.sign(&MessageId::parse("msg_1")?, now, b"{}")?;
/// let ts = signed.timestamp.to_string();
/// let headers = RawHeaders::new(signed.id.as_str(), &ts, &signed.signature);
///
/// let verifier = Verifier::new(ring);
/// let (_, first) = verifier.verify_at(&headers, b"{}", now).await?;
/// assert_eq!(first, Delivery::First);
/// // The same delivery again is a redelivery, not an error...
/// let (_, again) = verifier.verify_at(&headers, b"{}", now + 1).await?;
/// assert_eq!(again, Delivery::Redelivery);
/// // ...but the same id over another body is a replay (and here also a bad signature).
/// assert!(verifier.verify_at(&headers, b"[]", now + 1).await.is_err());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug)]
pub struct Verifier {
    keyring: RwLock<Arc<Keyring>>,
    replay: Arc<dyn ReplayStore>,
    config: VerifierConfig,
}

impl Verifier {
    /// A verifier with default settings and an in-memory replay store.
    #[must_use]
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring: RwLock::new(Arc::new(keyring)),
            replay: Arc::new(MemoryReplayStore::default()),
            config: VerifierConfig::default(),
        }
    }

    /// Uses another replay store (one shared by several instances, say).
    #[must_use]
    pub fn with_replay_store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay = store;
        self
    }

    /// Uses other settings.
    #[must_use]
    pub fn with_config(mut self, config: VerifierConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings in force.
    #[must_use]
    pub fn config(&self) -> VerifierConfig {
        self.config
    }

    /// The keyring in force.
    #[must_use]
    pub fn keyring(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the keyring (after a rotation).
    pub fn set_keyring(&self, keyring: Keyring) {
        let mut guard = match self.keyring.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(keyring);
    }

    /// Checks size, headers, timestamp and signature at `now`, without touching the replay
    /// store.
    ///
    /// # Errors
    /// The first [`VerifyError`] found.
    pub fn verify_signature_at(
        &self,
        headers: &RawHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, VerifyError> {
        if body.len() > self.config.max_body_bytes {
            return Err(VerifyError::BodyTooLarge {
                size: body.len(),
                limit: self.config.max_body_bytes,
            });
        }
        self.keyring()
            .verify_at(headers, body, now, self.config.tolerance_secs)
    }

    /// Until when (Unix seconds) a message id verified at `now` is remembered: the
    /// `expires_at` that [`Self::verify_at`] hands to the replay store (the retention, at
    /// least twice the tolerance). For a service that records ids itself, in its own
    /// transaction, after [`Self::verify_signature_at`].
    ///
    /// ```
    /// use diax_sdk::{Keyring, Verifier};
    ///
    /// let verifier = Verifier::new(Keyring::default());
    /// let now = 1_700_000_000;
    /// assert_eq!(verifier.replay_expires_at(now), now + 24 * 3600);
    /// ```
    #[must_use]
    pub fn replay_expires_at(&self, now: i64) -> i64 {
        let retention = self
            .config
            .replay_retention_secs
            .max(self.config.tolerance_secs.saturating_mul(2));
        now.saturating_add(i64::try_from(retention).unwrap_or(i64::MAX))
    }

    /// Full check at `now`: [`Self::verify_signature_at`], then the replay store. Returns
    /// whether this is the first delivery of the id or a redelivery of the same message.
    ///
    /// # Errors
    /// [`VerifyError::Replayed`] when the id was used for a different body, and every error
    /// of [`Self::verify_signature_at`].
    pub async fn verify_at(
        &self,
        headers: &RawHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<(Verified, Delivery), VerifyError> {
        let verified = self.verify_signature_at(headers, body, now)?;
        let expires_at = self.replay_expires_at(now);
        let delivery = self
            .replay
            .record(verified.id.as_str(), body_digest(body), expires_at, now)
            .await
            .map_err(|e| match e {
                ReplayError::Conflict => VerifyError::Replayed(verified.id.to_string()),
                ReplayError::Unavailable(why) => VerifyError::ReplayStore(why),
            })?;
        Ok((verified, delivery))
    }

    /// [`Self::verify_at`] with the system clock.
    ///
    /// # Errors
    /// As [`Self::verify_at`].
    pub async fn verify(
        &self,
        headers: &RawHeaders<'_>,
        body: &[u8],
    ) -> Result<(Verified, Delivery), VerifyError> {
        self.verify_at(headers, body, unix_now()).await
    }
}
