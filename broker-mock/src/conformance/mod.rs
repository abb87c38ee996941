//! The conformance runner: plays the broker's side of the protocol against **any** provider
//! and reports one verdict per named [`Check`].
//!
//! The runner needs nothing but the provider's `job_url` and the shared secret. It serves
//! what a broker serves during a job from a temporary endpoint of its own (port 0 by
//! default, loopback HTTP or HTTPS with [`ConformanceConfig::tls`]): the test model behind a
//! temporary bearer credential it issued, and an `events_url` that verifies the provider's
//! signed events. It sends good and bad signed messages (tampered, wrong secret, missing and
//! malformed headers, several signature entries, bodies whose re-serialisation differs from
//! their bytes, bodies that are not JSON, replays at once and seconds later, stale, from the
//! future, unknown account, another provider, an unsupported operation, …), refuses the
//! completion event three times (`503`, `Retry-After: 1`) to watch the retries, fetches the
//! result with and without its credential, offers and inputs the job again at each stage,
//! runs seven other jobs at once (a parallel one, one whose input comes twice, one whose
//! input is a presigned URL, and four the
//! provider must fail: wrong size, wrong digest, a redirect, a model that is no STL), checks
//! what each job says it charged, checks the result's picture when the provider offers one
//! (origin, size bound, digest, credential, a PNG that decodes), and scans every answer and
//! event for the secret. Every
//! [`Check`] names the PROTOCOL sections it rests on ([`Check::section`]);
//! `docs/CONFORMANCE.md` describes every check.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use broker_mock::conformance::{ConformanceConfig, Verdict, run};
//!
//! let mut config = ConformanceConfig::new("http://127.0.0.1:8480/diax/jobs", "whsec_…");
//! config.provider_id = "prv_…".into();
//! config.account = Some("acc_funded".into());
//! config.poor_account = Some("acc_broke".into());
//! let report = run(config).await?;
//! print!("{}", report.to_human());
//! assert!(report.passed(), "failed: {:?}", report.failed());
//! # let _ = Verdict::Pass;
//! # Ok(()) }
//! ```

mod cli;
mod endpoint;
mod model;
mod report;
mod runner;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use cli::{ConformanceArgs, main};
pub use model::test_model;
pub use report::Summary;

/// The default key id the runner names its secret with (providers that verify against a
/// keyring ignore it: only the secret's bytes matter for a signature).
pub const DEFAULT_KEY_ID: &str = "key_conformance";
/// The default provider id put in offers.
pub const DEFAULT_PROVIDER_ID: &str = "prv_conformance";
/// The default broker id put in offers (the broker mock's default).
pub const DEFAULT_BROKER_ID: &str = "3diax-mock";
/// How long `input.repeated-same-job` watches for a second run by default.
pub const DEFAULT_RERUN_WINDOW: Duration = Duration::from_secs(2);
/// How long `replay.after-delay` waits between its two messages by default.
pub const DEFAULT_REPLAY_DELAY: Duration = Duration::from_secs(3);

/// A certificate chain and its private key, both PEM, for the runner's own endpoint.
#[derive(Clone)]
pub struct TlsIdentity {
    /// PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// What the runner is pointed at and how it plays the broker.
#[derive(Clone)]
pub struct ConformanceConfig {
    /// The provider's `job_url`: where signed `BrokerMessage`s are POSTed.
    pub provider_url: String,
    /// The shared secret (`whsec_…`) the provider verifies with and signs its events with;
    /// or, for a provider registered with `ed25519`, the broker's secret key (`whsk_…`) whose
    /// public key the provider trusts, with [`Self::provider_public_key`].
    pub secret: String,
    /// With `ed25519`: the provider's public key (`whpk_…`), which its events must verify
    /// with. The whole check list then runs with `v1a` signatures.
    pub provider_public_key: Option<String>,
    /// Id of the secret (a provider's keyring usually ignores it). Default
    /// [`DEFAULT_KEY_ID`].
    pub key_id: String,
    /// The provider's id as the broker knows it: `provider_id` of offers, and the id the
    /// provider's events must carry. Default [`DEFAULT_PROVIDER_ID`].
    pub provider_id: String,
    /// The broker's id put in offers. Default [`DEFAULT_BROKER_ID`].
    pub broker_id: String,
    /// A provider account that exists and can pay for one job of the test model. `None`
    /// for a free provider: offers then name no account and the `account.*` checks are
    /// skipped.
    pub account: Option<String>,
    /// A provider account that exists but cannot pay; without it `payment.insufficient`
    /// is skipped.
    pub poor_account: Option<String>,
    /// Extra trusted root certificates (PEM) for calling the provider over HTTPS.
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// Where the runner's own endpoint listens. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The base URL the provider reaches the runner's endpoint at; default derived from the
    /// bound address (`http://127.0.0.1:PORT`, or `https://…` with [`Self::tls`]).
    pub public_url: Option<String>,
    /// Serve the runner's endpoint over HTTPS with this identity.
    pub tls: Option<TlsIdentity>,
    /// How long to wait for the provider's download, events and retries. Default 120 s.
    pub timeout: Duration,
    /// Timeout of each HTTP request the runner makes. Default 30 s (never above
    /// [`Self::timeout`]).
    pub request_timeout: Duration,
    /// The provider's timestamp tolerance, seconds; the stale and future checks sign 60 s
    /// beyond it. Default 300 (the protocol's).
    pub tolerance_secs: u64,
    /// How long `input.repeated-same-job` watches for a second run (a download of the model,
    /// a new event) once the provider answered the finished job's input sent again. Default
    /// 2 s (never above [`Self::timeout`]); a second terminal event ends the watch early.
    pub rerun_window: Duration,
    /// How long `replay.after-delay` waits between its two messages. Default 3 s (kept
    /// below the tolerance).
    pub replay_delay: Duration,
}

impl fmt::Debug for ConformanceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConformanceConfig")
            .field("provider_url", &self.provider_url)
            .field("secret", &"[redacted]")
            .field("provider_public_key", &self.provider_public_key)
            .field("key_id", &self.key_id)
            .field("provider_id", &self.provider_id)
            .field("broker_id", &self.broker_id)
            .field("account", &self.account)
            .field("poor_account", &self.poor_account)
            .field("extra_root_certs", &self.extra_root_certs_pem.len())
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("request_timeout", &self.request_timeout)
            .field("tolerance_secs", &self.tolerance_secs)
            .field("rerun_window", &self.rerun_window)
            .field("replay_delay", &self.replay_delay)
            .finish()
    }
}

impl ConformanceConfig {
    /// A configuration with every default: `provider_url` is the provider's `job_url`,
    /// `secret` the shared `whsec_…` secret.
    #[must_use]
    pub fn new(provider_url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            provider_url: provider_url.into(),
            secret: secret.into(),
            provider_public_key: None,
            key_id: DEFAULT_KEY_ID.to_owned(),
            provider_id: DEFAULT_PROVIDER_ID.to_owned(),
            broker_id: DEFAULT_BROKER_ID.to_owned(),
            account: None,
            poor_account: None,
            extra_root_certs_pem: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            tls: None,
            timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            tolerance_secs: 300,
            rerun_window: DEFAULT_RERUN_WINDOW,
            replay_delay: DEFAULT_REPLAY_DELAY,
        }
    }
}

/// Why the runner could not run at all (as opposed to a provider failing a check).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// A configuration value is unusable (bad secret, id or URL).
    #[error("configuration: {0}")]
    Config(String),
    /// The runner's endpoint could not listen or serve.
    #[error("runner endpoint: {0}")]
    Endpoint(String),
    /// The HTTP client could not be built (unreadable CA certificate, …).
    #[error("http client: {0}")]
    Client(String),
}

macro_rules! checks {
    ($($(#[$doc:meta])* $variant:ident => $name:literal @ $section:literal,)*) => {
        /// A named conformance check. The names are stable: scripts may match on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Check {
            $($(#[$doc])* $variant,)*
        }

        impl Check {
            /// Every check, in report order.
            pub const ALL: &'static [Check] = &[$(Check::$variant,)*];

            /// The stable name, e.g. `offer.valid-accepted`.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $(Check::$variant => $name,)* }
            }

            /// The sections of `docs/PROTOCOL.md` the check rests on, e.g. `§3, §5.2`.
            #[must_use]
            pub fn section(self) -> &'static str {
                match self { $(Check::$variant => $section,)* }
            }

            /// The check with this name.
            #[must_use]
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.name() == name)
            }
        }
    };
}

checks! {
    /// A signed offer naming the funded account is answered `202 JobAccepted` with a
    /// `status_url` (and `Location`).
    OfferValidAccepted => "offer.valid-accepted" @ "§5.2",
    /// The same offer message again (same `webhook-id`, same body) gets the same answer.
    OfferRedeliverySameAnswer => "offer.redelivery-same-answer" @ "§3, §5.2",
    /// The same `job_id` offered under a new `webhook-id` returns the same
    /// `provider_job_id` (no second job).
    OfferRepeatedSameJob => "offer.repeated-same-job" @ "§5.2",
    /// An offer naming another provider's id → `403 forbidden`.
    OfferOtherProvider => "offer.other-provider" @ "§5.2",
    /// An offer for an operation the provider does not offer → `422 unsupported-operation`.
    OfferUnsupportedOperation => "offer.unsupported-operation" @ "§5.2",
    /// The same `job_id` offered again once the job has its input → the same job.
    OfferRepeatedAfterInput => "offer.repeated-after-input" @ "§5.2",
    /// The same `job_id` offered again once the job has ended → the same job.
    OfferRepeatedAfterEnd => "offer.repeated-after-end" @ "§5.2",
    /// A body changed after signing → `401 signature-invalid`.
    SignatureTamperedBody => "signature.tampered-body" @ "§3",
    /// Signed with another secret → `401 signature-invalid`.
    SignatureWrongSecret => "signature.wrong-secret" @ "§3",
    /// No `webhook-id` → `400 signature-missing`.
    SignatureMissingId => "signature.missing-id" @ "§3",
    /// No `webhook-timestamp` → `400 signature-missing`.
    SignatureMissingTimestamp => "signature.missing-timestamp" @ "§3",
    /// No `webhook-signature` → `400 signature-missing`.
    SignatureMissingSignature => "signature.missing-signature" @ "§3",
    /// Several signature entries, the only valid one last (as during rotation) → accepted.
    SignatureMultipleEntries => "signature.multiple-entries" @ "§3, §6",
    /// Malformed `webhook-id` values → `400`/`401` problems, never a `5xx`.
    SignatureMalformedId => "signature.malformed-id" @ "§2, §3",
    /// Malformed `webhook-timestamp` values → `400`/`401` problems, never a `5xx`.
    SignatureMalformedTimestamp => "signature.malformed-timestamp" @ "§2, §3",
    /// Malformed `webhook-signature` values → `400`/`401` problems, never a `5xx`.
    SignatureMalformedSignature => "signature.malformed-signature" @ "§2, §3",
    /// A body whose re-serialisation differs from its raw bytes (whitespace, escapes,
    /// non-ASCII, an unknown member) verifies over the raw bytes.
    SignatureRawBytes => "signature.raw-bytes" @ "§3",
    /// A correctly signed body that is not JSON → `400` problem.
    BodyNotJson => "body.not-json" @ "§1, §2",
    /// A correctly signed JSON body that is not a message of the schema → `400` problem.
    BodyNotSchema => "body.not-schema" @ "§1, §2",
    /// A verified `webhook-id` reused with a different body → `409 replayed-message`.
    ReplayDifferentBody => "replay.different-body" @ "§3",
    /// The same, with the second body sent seconds later (within the tolerance).
    ReplayAfterDelay => "replay.after-delay" @ "§3",
    /// Timestamp beyond the tolerance in the past → `401 timestamp-out-of-tolerance`.
    TimestampStale => "timestamp.stale" @ "§3",
    /// Timestamp beyond the tolerance in the future → `401 timestamp-out-of-tolerance`.
    TimestampFuture => "timestamp.future" @ "§3",
    /// An account the provider does not know → `401 account-required` with `register_url`.
    AccountUnknown => "account.unknown" @ "§5.2",
    /// No account in the offer → `401 account-required` with `register_url`.
    AccountMissing => "account.missing" @ "§5.2",
    /// An account that cannot pay → `402 payment-required` with `quote` (and `top_up_url`).
    PaymentInsufficient => "payment.insufficient" @ "§5.2",
    /// The `job.input` with temporary credentials is answered `202 InputAccepted`.
    InputAccepted => "input.accepted" @ "§5.5",
    /// The provider fetched the model with exactly the temporary credential, GET only, and
    /// was refused nothing.
    DownloadCredentials => "download.credentials" @ "§5.5",
    /// Every event delivery verifies with the shared secret within the tolerance and parses.
    EventsSigned => "events.signed" @ "§3, §5.6",
    /// Events name the right job and provider, follow `accepted → running* → completed |
    /// failed`, and their `sequence` starts at 1 and increases.
    EventsTransitions => "events.transitions" @ "§5.6",
    /// After `503`s to the completion event, the retries keep its `webhook-id` and body.
    EventsRetrySameId => "events.retry-same-id" @ "§3, §5.6",
    /// Each retry of a refused event is signed afresh (a later timestamp when later).
    EventsRetryFreshSignature => "events.retry-fresh-signature" @ "§3",
    /// Retries of a refused event wait at least the `Retry-After` given.
    EventsRetryBackoff => "events.retry-backoff" @ "§5.6",
    /// Event fields in their units and ranges (`occurred_at` in seconds, …).
    EventsFields => "events.fields" @ "§1, §5.6",
    /// The job completed and its result location serves bytes of the declared size and
    /// SHA-256.
    ResultDigest => "result.digest" @ "§5.6",
    /// The result location refuses a fetch without, or with a wrong, credential.
    ResultCredentialRequired => "result.credential-required" @ "§5.6",
    /// The result's picture, when the provider offers one: on the result's origin (or the
    /// job URL's), not expiring before the result, at most
    /// [`MAX_PICTURE_BYTES`](diax_sdk::wire::MAX_PICTURE_BYTES), served with its declared
    /// size and SHA-256, refused without its credential, and a PNG that decodes whole. A
    /// provider that offers no picture passes (the picture is optional).
    ResultPicture => "result.picture" @ "§5.6",
    /// The finished job's `job.input` sent again under a new `webhook-id` with a fresh
    /// credential is answered `2xx` or `409` and starts no second run: no download, no new
    /// event (so no second `job.completed` or `job.failed`).
    InputRepeatedSameJob => "input.repeated-same-job" @ "§5.5",
    /// The job's terminal event says what was charged: the accepted quote on
    /// `job.completed`, zero on `job.failed`; and only one terminal event charges.
    ChargesMatchQuote => "charges.match-quote" @ "§5.6",
    /// A job whose input's declared size does not match → `job.failed` `download-failed`.
    InputSizeMismatch => "input.size-mismatch" @ "§5.5",
    /// A job whose input's declared SHA-256 does not match → `job.failed` `download-failed`.
    InputDigestMismatch => "input.digest-mismatch" @ "§5.5",
    /// A job whose download location redirects → not followed; `job.failed`.
    InputRedirect => "input.redirect" @ "§1, §5.5",
    /// A job whose model is not an STL → `job.failed` with a problem.
    JobBadModel => "job.bad-model" @ "§5.6",
    /// Every failed job says it charged zero.
    ChargesFailedZero => "charges.failed-zero" @ "§5.6",
    /// A job's input sent again while it runs (new `webhook-id`, fresh credential) →
    /// `2xx` or `409`, and no second run.
    InputRepeatedWhileRunning => "input.repeated-while-running" @ "§5.5",
    /// A job whose input is a presigned object-store URL (no `authorization`, the credential
    /// in the query): fetched exactly as given, with no `Authorization` header; it completes.
    InputPresigned => "input.presigned" @ "§5.5",
    /// Jobs run in parallel keep their own sequences, ids and webhook-ids.
    JobsParallel => "jobs.parallel" @ "§5.6",
    /// No answer or event carries the shared secret.
    SecretNotEchoed => "secret.not-echoed" @ "§2, §3",
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Check {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The provider behaved as the protocol requires.
    Pass,
    /// It did not (or the check could not be made because an earlier step failed).
    Fail,
    /// Not checked, for lack of what it needs (e.g. no `--poor-account`); not a pass.
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        })
    }
}

/// One check's verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which check.
    #[serde(rename = "name")]
    pub check: Check,
    /// The sections of `docs/PROTOCOL.md` it rests on ([`Check::section`]).
    pub section: &'static str,
    /// Its verdict.
    pub verdict: Verdict,
    /// One line: what was seen.
    pub reason: String,
    /// Time spent on it, milliseconds (waiting included).
    pub duration_ms: u64,
}

/// The outcome of a run: one [`CheckResult`] per [`Check`], in [`Check::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The provider's `job_url`.
    pub provider_url: String,
    /// When the run started, Unix seconds.
    pub started_at: i64,
    /// Length of the run, milliseconds.
    pub duration_ms: u64,
    /// The verdicts.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Whether no check failed (skipped checks do not fail a run; see [`Self::skipped`]).
    #[must_use]
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.verdict != Verdict::Fail)
    }

    /// The result of `check`.
    #[must_use]
    pub fn get(&self, check: Check) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.check == check)
    }

    /// The verdict of `check` (`Fail` when it is missing from the report).
    #[must_use]
    pub fn verdict(&self, check: Check) -> Verdict {
        self.get(check).map_or(Verdict::Fail, |r| r.verdict)
    }

    /// The checks with verdict `v`, in report order.
    #[must_use]
    pub fn with_verdict(&self, v: Verdict) -> Vec<Check> {
        self.results
            .iter()
            .filter(|r| r.verdict == v)
            .map(|r| r.check)
            .collect()
    }

    /// The failed checks.
    #[must_use]
    pub fn failed(&self) -> Vec<Check> {
        self.with_verdict(Verdict::Fail)
    }

    /// The skipped checks.
    #[must_use]
    pub fn skipped(&self) -> Vec<Check> {
        self.with_verdict(Verdict::Skip)
    }
}

/// Runs every check against the provider at `config.provider_url` and returns the report.
///
/// Starts the runner's endpoint, plays the checks (the whole job flow included), stops the
/// endpoint and returns. A provider's misbehaviour is a [`Verdict::Fail`] in the report,
/// never an error.
///
/// # Errors
/// [`ConformanceError`] when the run cannot start: unusable secret, ids or URLs, a listener
/// that cannot bind, unreadable certificates.
pub async fn run(config: ConformanceConfig) -> Result<Report, ConformanceError> {
    runner::run(config).await
}
