//! The protocol's messages, as serde types. `docs/PROTOCOL.md` is the normative text; the
//! broker mock, FixMyPrint and the tests all use these types and define no copies.
//!
//! Conventions: JSON bodies, snake_case members, times as Unix seconds (`i64`), money as
//! integer minor units, digests as lowercase hex SHA-256. Optional members are omitted when
//! absent. Receivers ignore members they do not know.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{
    AccountId, GroupId, JobId, KeyId, ModelId, NotificationId, ProviderId, ProviderJobId, UserId,
};
use crate::problem::Problem;
pub use crate::quote::Quote;
use crate::redact::{Redacted, redact_opt, redact_url};
pub use crate::secret::Scheme;

/// HTTP paths of the broker's API, relative to its base URL. `{…}` marks a path parameter.
pub mod broker_paths {
    /// `POST`: create a user. `GET` `/v1/me`: the caller.
    pub const USERS: &str = "/v1/users";
    /// `GET`: the authenticated user.
    pub const ME: &str = "/v1/me";
    /// `POST`: create a group.
    pub const GROUPS: &str = "/v1/groups";
    /// `POST`: add a member to group `{group_id}`.
    pub const GROUP_MEMBERS: &str = "/v1/groups/{group_id}/members";
    /// `POST`: register a provider.
    pub const PROVIDERS: &str = "/v1/providers";
    /// `POST`: rotate the secret of provider `{provider_id}`.
    pub const PROVIDER_ROTATE: &str = "/v1/providers/{provider_id}/secrets/rotate";
    /// `POST` (signed by the provider): job events for provider `{provider_id}`.
    pub const PROVIDER_EVENTS: &str = "/v1/providers/{provider_id}/events";
    /// `GET`: the public registry, `?service_kind=`.
    pub const REGISTRY: &str = "/v1/registry";
    /// `POST` (raw STL body, `?name=`): upload; `GET`: list.
    pub const MODELS: &str = "/v1/models";
    /// `GET`: one model with its versions.
    pub const MODEL: &str = "/v1/models/{model_id}";
    /// `GET`: the bytes of one version (owner's API key or a temporary credential).
    pub const MODEL_CONTENT: &str = "/v1/models/{model_id}/versions/{version}/content";
    /// `GET`: the PNG picture of the job that made one version (owner's API key).
    pub const MODEL_REPORT: &str = "/v1/models/{model_id}/versions/{version}/report";
    /// `POST`: ask for a job; `GET`: list.
    pub const JOBS: &str = "/v1/jobs";
    /// `GET`: one job.
    pub const JOB: &str = "/v1/jobs/{job_id}";
    /// `POST`: offer a rejected job to its provider again.
    pub const JOB_RETRY: &str = "/v1/jobs/{job_id}/retry";
    /// `POST`: link a provider account with a link token; `GET`: list links.
    pub const LINKS: &str = "/v1/links";
    /// `GET`: pending notifications.
    pub const NOTIFICATIONS: &str = "/v1/notifications";
    /// `POST`: acknowledge notifications.
    pub const NOTIFICATIONS_ACK: &str = "/v1/notifications/ack";
    /// `GET`: the message log (JSON); `/inspector` shows it as HTML.
    pub const MESSAGES: &str = "/v1/messages";
}

/// Header on every authenticated broker response: the caller's pending notification count.
pub const PENDING_NOTIFICATIONS_HEADER: &str = "diax-pending-notifications";

/// The service kind of a model-healing provider.
pub const SERVICE_KIND_MODEL_REPAIR: &str = "model-repair";

/// Whether a provider charges for its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Pricing {
    /// No account or payment needed.
    Free,
    /// Users need an account with the provider and a balance.
    Paid,
}

/// Whom a provider's secret speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SecretScope {
    /// One secret for the whole service, for every user.
    #[default]
    Service,
    /// A secret bound to the one user who registered the provider (open-source providers
    /// running on that user's machine). The broker sends such a provider only that user's
    /// jobs and accepts its links and callbacks only for that user.
    User,
}

// ---------------------------------------------------------------------------------------------
// Users, groups, registration, registry
// ---------------------------------------------------------------------------------------------

/// `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUser {
    /// Display name, 1–100 characters.
    pub name: String,
    /// Where the broker POSTs signed notifications for this user, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
}

/// Answer to [`CreateUser`] (`201`). The API key and the notification secret are shown once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserCreated {
    /// The new user.
    pub user_id: UserId,
    /// Bearer API key for the broker's API.
    pub api_key: String,
    /// `whsec_` secret the broker signs this user's notifications with, when a
    /// `notification_url` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_secret: Option<String>,
}

/// Redacts the API key and the notification secret.
impl fmt::Debug for UserCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCreated")
            .field("user_id", &self.user_id)
            .field("api_key", &Redacted)
            .field(
                "notification_secret",
                &redact_opt(self.notification_secret.as_ref()),
            )
            .finish()
    }
}

/// A broker user (`GET /v1/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Id.
    pub user_id: UserId,
    /// Display name.
    pub name: String,
    /// Notification URL, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    /// Groups the user belongs to.
    #[serde(default)]
    pub groups: Vec<GroupId>,
    /// Notifications not yet acknowledged.
    pub pending_notifications: u64,
}

/// `POST /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateGroup {
    /// Display name, 1–100 characters.
    pub name: String,
}

/// `POST /v1/groups/{group_id}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddMember {
    /// The user to add.
    pub user_id: UserId,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    /// Id.
    pub group_id: GroupId,
    /// Display name.
    pub name: String,
    /// Member user ids.
    pub members: Vec<UserId>,
}

/// `POST /v1/providers`: a user registers a provider on behalf of one of their groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterProvider {
    /// The owning group; the caller must be a member.
    pub group_id: GroupId,
    /// Display name, 1–100 characters.
    pub name: String,
    /// Service kind, e.g. [`SERVICE_KIND_MODEL_REPAIR`]: lowercase letters, digits, `-`.
    pub service_kind: String,
    /// Where the broker POSTs signed [`BrokerMessage`]s (job offers and inputs). `https`
    /// (plain `http` only to loopback addresses).
    pub job_url: String,
    /// Where users register with the provider.
    pub signup_url: String,
    /// Free or paid.
    pub pricing: Pricing,
    /// One-line description for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Service-wide secret (default) or one bound to the registering user.
    #[serde(default)]
    pub secret_scope: SecretScope,
    /// How the two sides sign: `hmac-sha256` (default, `v1`, a shared secret the broker
    /// makes) or `ed25519` (`v1a`: each side keeps its own secret key; no shared secret).
    #[serde(default, skip_serializing_if = "Scheme::is_v1")]
    pub signature_scheme: Scheme,
    /// With `ed25519`: the provider's `whpk_` public key, which the broker verifies the
    /// provider's events and link tokens with. Refused with `hmac-sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Answer to [`RegisterProvider`] (`201`). The secret is shown once: store it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderRegistered {
    /// The provider's id: `iss` of its link tokens, `provider_id` in every message.
    pub provider_id: ProviderId,
    /// The broker's id: the `aud` of link tokens.
    pub broker_id: String,
    /// Id of the provider's key (`kid` of its link tokens): the shared secret, or with
    /// `ed25519` the provider's public key.
    pub key_id: KeyId,
    /// The shared secret, `whsec_…` (`hmac-sha256` only; absent with `ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Where the provider POSTs signed [`JobEvent`]s.
    pub events_url: String,
    /// Scope of the secret.
    pub secret_scope: SecretScope,
    /// For [`SecretScope::User`]: the user the secret is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_user_id: Option<UserId>,
    /// The scheme both sides sign with.
    #[serde(default, skip_serializing_if = "Scheme::is_v1")]
    pub signature_scheme: Scheme,
    /// With `ed25519`: the id of the broker's key (its messages verify with the key of this id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_key_id: Option<KeyId>,
    /// With `ed25519`: the broker's `whpk_` public key, which the provider verifies offers
    /// and inputs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_public_key: Option<String>,
}

/// Redacts the secret.
impl fmt::Debug for ProviderRegistered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistered")
            .field("provider_id", &self.provider_id)
            .field("broker_id", &self.broker_id)
            .field("key_id", &self.key_id)
            .field("secret", &redact_opt(self.secret.as_ref()))
            .field("events_url", &self.events_url)
            .field("secret_scope", &self.secret_scope)
            .field("bound_user_id", &self.bound_user_id)
            .field("signature_scheme", &self.signature_scheme)
            .field("broker_key_id", &self.broker_key_id)
            .field("broker_public_key", &self.broker_public_key)
            .finish()
    }
}

/// `POST /v1/providers/{provider_id}/secrets/rotate`. Without `public_key` the broker makes
/// a new shared secret (`hmac-sha256`); with one, the provider's new `ed25519` key and a new
/// broker key take over. Either way the old keys stay valid for the grace period, so a
/// rotation can also move a provider from one scheme to the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotateSecret {
    /// How long the old secret stays valid, in seconds (default: the broker's, 24 h in the mock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u64>,
    /// The provider's new `whpk_` public key (`ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Answer to [`RotateSecret`]. The new secret is shown once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretRotated {
    /// The provider.
    pub provider_id: ProviderId,
    /// Id of the new secret (or of the provider's new public key).
    pub key_id: KeyId,
    /// The new secret, `whsec_…` (`hmac-sha256` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Id of the secret being retired.
    pub previous_key_id: KeyId,
    /// Unix time until which the retired secret is still accepted and signed with.
    pub previous_valid_until: i64,
    /// The scheme of the new keys.
    #[serde(default, skip_serializing_if = "Scheme::is_v1")]
    pub signature_scheme: Scheme,
    /// With `ed25519`: the id of the broker's new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_key_id: Option<KeyId>,
    /// With `ed25519`: the broker's new `whpk_` public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_public_key: Option<String>,
}

/// Redacts the secret.
impl fmt::Debug for SecretRotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRotated")
            .field("provider_id", &self.provider_id)
            .field("key_id", &self.key_id)
            .field("secret", &redact_opt(self.secret.as_ref()))
            .field("previous_key_id", &self.previous_key_id)
            .field("previous_valid_until", &self.previous_valid_until)
            .field("signature_scheme", &self.signature_scheme)
            .field("broker_key_id", &self.broker_key_id)
            .field("broker_public_key", &self.broker_public_key)
            .finish()
    }
}

/// One provider in the public registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderListing {
    /// Id.
    pub provider_id: ProviderId,
    /// Display name.
    pub name: String,
    /// Service kind.
    pub service_kind: String,
    /// Free or paid.
    pub pricing: Pricing,
    /// Where users register with it.
    pub signup_url: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Scope of its secret.
    pub secret_scope: SecretScope,
}

/// `GET /v1/registry?service_kind=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registry {
    /// Matching providers.
    pub providers: Vec<ProviderListing>,
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// Where a model version came from, when a provider made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionSource {
    /// The job that produced it.
    pub job_id: JobId,
    /// The provider that ran the job.
    pub provider_id: ProviderId,
    /// The version the job started from.
    pub from_version: u32,
}

/// One stored version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelVersion {
    /// Version number, from 1.
    pub version: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// When stored.
    pub created_at: i64,
    /// The job that made it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VersionSource>,
    /// Where the owner GETs the picture the provider drew of its work on this version
    /// (a PNG, e.g. FixMyPrint's before/after of a repair), with the same API key as the
    /// content; absent when the version has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_url: Option<String>,
}

/// A model in a user's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Model {
    /// Id.
    pub model_id: ModelId,
    /// File name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<ModelVersion>,
}

impl Model {
    /// The newest version.
    #[must_use]
    pub fn latest(&self) -> Option<&ModelVersion> {
        self.versions.last()
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelList {
    /// The caller's models.
    pub models: Vec<Model>,
}

// ---------------------------------------------------------------------------------------------
// Jobs (user side)
// ---------------------------------------------------------------------------------------------

/// State of a job, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created at the broker; the offer is being sent.
    Offered,
    /// The provider refused the offer; see `problem`.
    Rejected,
    /// The provider accepted; work has not started.
    Accepted,
    /// The provider is working; see `progress`.
    Running,
    /// Done; the result is stored.
    Completed,
    /// The provider gave up, or the broker could not deliver the input; see `problem`.
    Failed,
}

impl JobState {
    /// Whether no further change can happen.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Rejected | Self::Completed | Self::Failed)
    }

    /// The state as its wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Rejected => "rejected",
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/jobs`: run a provider's service on one of the caller's models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateJob {
    /// The provider.
    pub provider_id: ProviderId,
    /// The model.
    pub model_id: ModelId,
    /// The version (default: the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Operation name (default `repair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Operation parameters, passed to the provider as they are.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

/// A model version reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelVersionRef {
    /// Model.
    pub model_id: ModelId,
    /// Version.
    pub version: u32,
}

/// A job as the broker shows it to its user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Id.
    pub job_id: JobId,
    /// Provider.
    pub provider_id: ProviderId,
    /// Input.
    pub input: ModelVersionRef,
    /// Operation.
    pub operation: String,
    /// State.
    pub state: JobState,
    /// The provider's job id once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_job_id: Option<ProviderJobId>,
    /// The provider's status URL once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// The price quoted by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// Last progress, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The provider's problem, relayed unchanged (rejection or failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// The new model version holding the result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ModelVersionRef>,
    /// The provider's report on the work (opaque JSON), once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// What the provider reported it charged, once the job ended (`job.completed`: the
    /// price; `job.failed`: zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<Quote>,
    /// How the delivery of the `job.input` to the provider stands, once it accepted the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_delivery: Option<InputDelivery>,
    /// Created at.
    pub created_at: i64,
    /// Last changed at.
    pub updated_at: i64,
}

/// Where the broker stands in delivering a job's `job.input` to the provider (PROTOCOL §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InputDeliveryState {
    /// Not delivered yet; the broker tries again at `next_attempt_at`.
    Pending,
    /// The provider took the input.
    Delivered,
    /// The provider refused the input, or every attempt failed; the job is `failed`.
    Failed,
    /// The job moved on (progress or an end) before a delivery was confirmed; no more attempts.
    Stopped,
}

impl InputDeliveryState {
    /// The state as its wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for InputDeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delivery of a job's `job.input`, as the broker shows it to the job's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InputDelivery {
    /// Where it stands.
    pub state: InputDeliveryState,
    /// Attempts made so far; each is one message with a fresh credential and its own
    /// `webhook-id`.
    pub attempts: u32,
    /// When the last attempt was made, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<i64>,
    /// When the next attempt is due, Unix seconds (while `pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    /// When the provider took it, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<i64>,
    /// Why the last attempt failed (or how a `409` was taken as delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    /// The caller's jobs, newest first.
    pub jobs: Vec<Job>,
}

// ---------------------------------------------------------------------------------------------
// Account links
// ---------------------------------------------------------------------------------------------

/// `POST /v1/links`: hand the broker a link token from a provider.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkAccount {
    /// The provider that issued the token.
    pub provider_id: ProviderId,
    /// The link token (a JWT).
    pub token: String,
}

/// Redacts the token.
impl fmt::Debug for LinkAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkAccount")
            .field("provider_id", &self.provider_id)
            .field("token", &Redacted)
            .finish()
    }
}

/// A stored account link (`201` answer to [`LinkAccount`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountLink {
    /// Provider.
    pub provider_id: ProviderId,
    /// The user's account at the provider.
    pub provider_account: AccountId,
    /// When linked.
    pub linked_at: i64,
}

/// `GET /v1/links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkList {
    /// The caller's links.
    pub links: Vec<AccountLink>,
}

/// A link token as a provider hands it to its user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkTokenGrant {
    /// The JWT.
    pub token: String,
    /// The provider that signed it.
    pub provider_id: ProviderId,
    /// The account it names.
    pub account_id: AccountId,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// Redacts the token.
impl fmt::Debug for LinkTokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTokenGrant")
            .field("token", &Redacted)
            .field("provider_id", &self.provider_id)
            .field("account_id", &self.account_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Broker -> provider (signed)
// ---------------------------------------------------------------------------------------------

/// A location to fetch bytes from, with the credential to use and what to expect.
/// Used for the broker's temporary model credentials and the provider's result.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Download {
    /// `https` URL (plain `http` only on loopback).
    pub url: String,
    /// Value of the `Authorization` header to send, e.g. `Bearer tc_…`; `None` when the
    /// URL itself carries the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// Unix time after which the credential is refused.
    pub expires_at: i64,
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// Redacts the credential: the `authorization` value and the parts of the URL that can carry one (user information, query, fragment).
impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("url", &redact_url(&self.url))
            .field("authorization", &redact_opt(self.authorization.as_ref()))
            .field("expires_at", &self.expires_at)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// The model a job is about, as described in an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfferedModel {
    /// Model.
    pub model_id: ModelId,
    /// Version.
    pub version: u32,
    /// File name.
    pub name: String,
    /// Size in bytes (the basis of most quotes).
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Format, `stl`.
    pub format: String,
}

/// Who a job is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfferUser {
    /// The broker user.
    pub broker_user_id: UserId,
    /// Their linked account at this provider, if they linked one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_account: Option<AccountId>,
}

/// `job.offer`: would the provider run this job?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobOffer {
    /// The broker's job id; offers with the same id are the same job.
    pub job_id: JobId,
    /// The broker.
    pub broker_id: String,
    /// The provider addressed.
    pub provider_id: ProviderId,
    /// Service kind.
    pub service_kind: String,
    /// Operation, e.g. `repair`.
    pub operation: String,
    /// Who asks.
    pub user: OfferUser,
    /// On what.
    pub model: OfferedModel,
    /// Operation parameters (opaque).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Where to POST [`JobEvent`]s for this job.
    pub events_url: String,
    /// When offered.
    pub offered_at: i64,
}

/// `job.input`: temporary credentials to fetch the model of an accepted job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInput {
    /// The broker's job id.
    pub job_id: JobId,
    /// The provider's job id (from its acceptance).
    pub provider_job_id: ProviderJobId,
    /// Where and how to download the model: GET only, this one model version, short-lived.
    pub download: Download,
}

/// Every signed message the broker POSTs to a provider's `job_url`, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type")]
#[allow(clippy::large_enum_variant)] // parsed once per request; boxing would only add noise
pub enum BrokerMessage {
    /// A job offer: answer `202` ([`JobAccepted`]) or a problem.
    #[serde(rename = "job.offer")]
    Offer(JobOffer),
    /// The input of an accepted job: answer `202` ([`InputAccepted`]).
    #[serde(rename = "job.input")]
    Input(JobInput),
}

/// `202` answer to an offer. The `Location` header carries `status_url` too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    /// The broker's job id.
    pub job_id: JobId,
    /// The provider's job id.
    pub provider_job_id: ProviderJobId,
    /// Where the job's status can be read (`GET`, returns [`JobStatus`]).
    pub status_url: String,
    /// Price held for the job (absent for free services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// `accepted` (or later, when the offer is a redelivery).
    pub state: JobState,
}

/// `202` answer to a [`JobInput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InputAccepted {
    /// The broker's job id.
    pub job_id: JobId,
    /// The provider's job id.
    pub provider_job_id: ProviderJobId,
    /// The job's state now.
    pub state: JobState,
}

/// A provider's view of a job (`GET status_url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    /// The broker's job id.
    pub job_id: JobId,
    /// The provider's job id.
    pub provider_job_id: ProviderJobId,
    /// State.
    pub state: JobState,
    /// Progress, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// Last change.
    pub updated_at: i64,
}

// ---------------------------------------------------------------------------------------------
// Provider -> broker (signed)
// ---------------------------------------------------------------------------------------------

/// The result of a completed job, optionally with a picture of the work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResult {
    /// Where the broker fetches the result.
    pub download: Download,
    /// Format of the result, `stl`.
    pub format: String,
    /// The provider's report on the work (opaque JSON, e.g. a repair report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// What the provider charged the user for this job: its quote, charged once (PROTOCOL
    /// §5.6). Providers MUST send it; it is optional here only so that an event without it
    /// still parses (the broker then shows no charge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<Quote>,
    /// A picture of the work, if the provider drew one: a PNG (at most
    /// [`MAX_PICTURE_BYTES`]) fetched like the result, on the same origin, with its own size
    /// and digest (PROTOCOL §5.6). Optional: a broker that does not know it ignores it, and
    /// a bad picture never spoils the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<Download>,
}

/// The largest picture ([`JobResult::picture`]) a broker must accept: 16 MiB.
///
/// A provider offers its picture next to the result, each with its own size and digest:
///
/// ```
/// use diax_sdk::util::sha256_hex;
/// use diax_sdk::wire::{Download, JobResult, PNG_SIGNATURE, Quote};
///
/// let stl = b"solid healed".to_vec();
/// let png = [&PNG_SIGNATURE[..], b"...rest of the PNG"].concat();
/// let at = |path: &str, bytes: &[u8]| Download {
///     url: format!("https://fixmyprint.example/results/{path}"),
///     authorization: Some("Bearer rt_...".into()),
///     expires_at: 1_900_000_000,
///     size: bytes.len() as u64,
///     sha256: sha256_hex(bytes),
/// };
/// let result = JobResult {
///     download: at("pjob_1", &stl),
///     format: "stl".into(),
///     report: None,
///     charged: Some(Quote::new(250, "EUR")),
///     picture: Some(at("pjob_1/picture", &png)),
/// };
/// let json = serde_json::to_value(&result).unwrap();
/// assert_eq!(json["picture"]["size"], png.len());
/// // An event from a provider that draws no picture parses too.
/// let old: JobResult = serde_json::from_value(serde_json::json!({
///     "download": json["download"], "format": "stl"
/// }))
/// .unwrap();
/// assert!(old.picture.is_none());
/// ```
pub const MAX_PICTURE_BYTES: u64 = 16 * 1024 * 1024;

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// What happened, by event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type")]
pub enum JobEventKind {
    /// The job was accepted (sent once, after the `202`).
    #[serde(rename = "job.accepted")]
    Accepted {
        /// Price held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quote: Option<Quote>,
    },
    /// Work progressed.
    #[serde(rename = "job.progress")]
    Progress {
        /// Percent done, 0–100.
        percent: u8,
        /// Current stage, free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
    },
    /// Work finished; the result can be fetched.
    #[serde(rename = "job.completed")]
    Completed {
        /// The result.
        result: JobResult,
    },
    /// Work failed; nothing was charged (the hold is released).
    #[serde(rename = "job.failed")]
    Failed {
        /// Why.
        problem: Problem,
        /// What the provider charged: amount `0` in the quote's currency (PROTOCOL §5.6).
        /// Providers MUST send it; optional here only so that an event without it parses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charged: Option<Quote>,
    },
}

impl JobEventKind {
    /// The wire name of the event type, e.g. `job.completed`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "job.accepted",
            Self::Progress { .. } => "job.progress",
            Self::Completed { .. } => "job.completed",
            Self::Failed { .. } => "job.failed",
        }
    }

    /// The job state this event moves the job to.
    #[must_use]
    pub fn state(&self) -> JobState {
        match self {
            Self::Accepted { .. } => JobState::Accepted,
            Self::Progress { .. } => JobState::Running,
            Self::Completed { .. } => JobState::Completed,
            Self::Failed { .. } => JobState::Failed,
        }
    }
}

/// A signed event a provider POSTs to the broker's `events_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEvent {
    /// The broker's job id.
    pub job_id: JobId,
    /// The provider's job id.
    pub provider_job_id: ProviderJobId,
    /// The sending provider.
    pub provider_id: ProviderId,
    /// Per-job sequence number, from 1, increasing with each event of the job.
    pub sequence: u64,
    /// When it happened.
    pub occurred_at: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: JobEventKind,
}

/// Answer to a [`JobEvent`] (`200`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventAck {
    /// The job.
    pub job_id: JobId,
    /// Its state at the broker after the event.
    pub state: JobState,
    /// `true` when the event had been received before (nothing was done again).
    pub duplicate: bool,
}

// ---------------------------------------------------------------------------------------------
// Broker -> user notifications
// ---------------------------------------------------------------------------------------------

/// A notification to a broker user about one of their jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    /// Id (also the `webhook-id` of its signed delivery).
    pub notification_id: NotificationId,
    /// Event type: `job.completed`, `job.failed` or `job.rejected`.
    #[serde(rename = "type")]
    pub event: String,
    /// The job.
    pub job_id: JobId,
    /// The job's state.
    pub state: JobState,
    /// The repaired model version, for `job.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ModelVersionRef>,
    /// The problem, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// When created.
    pub created_at: i64,
}

/// `GET /v1/notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationList {
    /// Pending (unacknowledged) notifications, oldest first.
    pub notifications: Vec<Notification>,
}

/// `POST /v1/notifications/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckNotifications {
    /// Notifications to mark as read.
    pub notification_ids: Vec<NotificationId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_messages_are_tagged() {
        let input = BrokerMessage::Input(JobInput {
            job_id: JobId::parse("job_1").unwrap(),
            provider_job_id: ProviderJobId::parse("pjob_1").unwrap(),
            download: Download {
                url: "https://b/x".into(),
                authorization: Some("Bearer tc_1".into()),
                expires_at: 10,
                size: 3,
                sha256: "ab".into(),
            },
        });
        let v = serde_json::to_value(&input).unwrap();
        assert_eq!(v["type"], "job.input");
        assert_eq!(serde_json::from_value::<BrokerMessage>(v).unwrap(), input);
        assert!(!format!("{input:?}").contains("tc_1"));
    }

    #[test]
    fn events_flatten_their_kind() {
        let ev = JobEvent {
            job_id: JobId::parse("job_1").unwrap(),
            provider_job_id: ProviderJobId::parse("pjob_1").unwrap(),
            provider_id: ProviderId::parse("prv_1").unwrap(),
            sequence: 2,
            occurred_at: 5,
            kind: JobEventKind::Progress {
                percent: 40,
                stage: Some("weld".into()),
            },
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "job.progress");
        assert_eq!(v["percent"], 40);
        assert_eq!(serde_json::from_value::<JobEvent>(v).unwrap(), ev);
        assert!(serde_json::from_str::<JobEvent>(r#"{"type":"job.exploded"}"#).is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY2NfMSJ9.c2lnbmF0dXJl";
        let user = UserId::parse("usr_1").unwrap();
        let provider = ProviderId::parse("prv_1").unwrap();
        let key = KeyId::parse("key_1").unwrap();
        let download = |url: &str| Download {
            url: url.into(),
            authorization: Some("Bearer tc_hushhush".into()),
            expires_at: 10,
            size: 3,
            sha256: "ab".into(),
        };
        let cases: Vec<(String, &str)> = vec![
            (
                format!(
                    "{:?}",
                    UserCreated {
                        user_id: user.clone(),
                        api_key: "dxk_hushhush".into(),
                        notification_secret: Some(SECRET.into()),
                    }
                ),
                "hushhush",
            ),
            (
                format!(
                    "{:?}",
                    UserCreated {
                        user_id: user.clone(),
                        api_key: "dxk_hushhush".into(),
                        notification_secret: Some(SECRET.into()),
                    }
                ),
                &SECRET[6..],
            ),
            (
                format!(
                    "{:?}",
                    ProviderRegistered {
                        provider_id: provider.clone(),
                        broker_id: "diax".into(),
                        key_id: key.clone(),
                        secret: Some(SECRET.into()),
                        events_url: "https://b/e".into(),
                        secret_scope: SecretScope::User,
                        bound_user_id: Some(user),
                        signature_scheme: Scheme::V1,
                        broker_key_id: None,
                        broker_public_key: None,
                    }
                ),
                &SECRET[6..],
            ),
            (
                format!(
                    "{:?}",
                    SecretRotated {
                        provider_id: provider.clone(),
                        key_id: key.clone(),
                        secret: Some(SECRET.into()),
                        previous_key_id: key,
                        previous_valid_until: 5,
                        signature_scheme: Scheme::V1,
                        broker_key_id: None,
                        broker_public_key: None,
                    }
                ),
                &SECRET[6..],
            ),
            (
                format!(
                    "{:?}",
                    LinkAccount {
                        provider_id: provider.clone(),
                        token: TOKEN.into(),
                    }
                ),
                "c2lnbmF0dXJl",
            ),
            (
                format!(
                    "{:?}",
                    LinkTokenGrant {
                        token: TOKEN.into(),
                        provider_id: provider,
                        account_id: AccountId::parse("acc_1").unwrap(),
                        expires_at: 9,
                    }
                ),
                "c2lnbmF0dXJl",
            ),
            (format!("{:?}", download("https://b/x")), "hushhush"),
            (
                format!(
                    "{:?}",
                    download("https://s3.example/b/k?X-Amz-Signature=hushhush")
                ),
                "hushhush",
            ),
            (
                format!("{:?}", download("https://user:hushhush@b.example/k")),
                "hushhush",
            ),
        ];
        for (debug, secret) in &cases {
            assert!(!debug.contains(secret), "{debug}");
            assert!(debug.contains("[redacted]"), "{debug}");
        }
        // What is not secret still shows.
        assert!(cases[2].0.contains("prv_1") && cases[2].0.contains("https://b/e"));
        assert!(cases[7].0.contains("https://s3.example/b/k?[redacted]"));
    }
}
