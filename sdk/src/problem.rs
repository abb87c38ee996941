//! RFC 9457 problem details (`application/problem+json`) with the protocol's stable types.
//!
//! ```
//! use diax_sdk::{Problem, ProblemType, Quote};
//!
//! let p = Problem::payment_required("https://fixmyprint.example/top-up", Quote::new(250, "EUR"));
//! assert_eq!(p.status, 402);
//! assert_eq!(p.kind(), Some(ProblemType::PaymentRequired));
//! let json = serde_json::to_value(&p)?;
//! assert_eq!(json["type"], "https://3diax.example/problems/payment-required");
//! assert_eq!(json["quote"]["amount"], 250);
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::quote::Quote;

/// Media type of a problem document.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Prefix of every problem `type` URI the protocol defines.
pub const PROBLEM_TYPE_BASE: &str = "https://3diax.example/problems/";

macro_rules! problem_types {
    ($($(#[$doc:meta])* $variant:ident => ($slug:literal, $status:literal, $title:literal),)*) => {
        /// The problem types of the protocol, each with a stable `type` URI
        /// (`https://3diax.example/problems/<slug>`), an HTTP status and a title.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemType {
            $($(#[$doc])* $variant,)*
        }

        impl ProblemType {
            /// Every problem type.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$variant,)*];

            /// The last segment of the type URI, e.g. `account-required`.
            #[must_use]
            pub fn slug(self) -> &'static str {
                match self { $(ProblemType::$variant => $slug,)* }
            }

            /// The HTTP status this problem is sent with.
            #[must_use]
            pub fn status(self) -> u16 {
                match self { $(ProblemType::$variant => $status,)* }
            }

            /// A short, fixed, human-readable summary.
            #[must_use]
            pub fn title(self) -> &'static str {
                match self { $(ProblemType::$variant => $title,)* }
            }
        }
    };
}

problem_types! {
    /// The user has no (linked) account at the provider. Extension: `register_url`.
    AccountRequired => ("account-required", 401, "Account required"),
    /// The provider account cannot pay the quote. Extensions: `top_up_url`, `quote`, `balance`.
    PaymentRequired => ("payment-required", 402, "Payment required"),
    /// A `webhook-*` header is missing.
    SignatureMissing => ("signature-missing", 400, "Signature headers missing"),
    /// A `webhook-*` header is malformed.
    SignatureMalformed => ("signature-malformed", 400, "Signature headers malformed"),
    /// No signature matches an active key.
    SignatureInvalid => ("signature-invalid", 401, "Signature invalid"),
    /// `webhook-timestamp` is too old or too far in the future.
    TimestampOutOfTolerance => ("timestamp-out-of-tolerance", 401, "Timestamp out of tolerance"),
    /// A `webhook-id` already used for a different message.
    ReplayedMessage => ("replayed-message", 409, "Message id replayed"),
    /// A link token failed a check. Extension: `reason`.
    InvalidToken => ("invalid-token", 401, "Invalid link token"),
    /// A link token's `jti` was already used.
    TokenReused => ("token-reused", 409, "Link token already used"),
    /// Missing or unknown API key.
    Unauthorized => ("unauthorized", 401, "Authentication required"),
    /// Authenticated, but not allowed to do this.
    Forbidden => ("forbidden", 403, "Forbidden"),
    /// A temporary credential that is missing, unknown, tampered with or expired.
    CredentialInvalid => ("credential-invalid", 401, "Credential invalid or expired"),
    /// A valid temporary credential used for another object or method.
    CredentialScope => ("credential-scope", 403, "Credential not valid for this request"),
    /// No such resource.
    NotFound => ("not-found", 404, "Not found"),
    /// The resource exists but not with this method.
    MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed"),
    /// The body's content type is not the one expected.
    UnsupportedMediaType => ("unsupported-media-type", 415, "Unsupported media type"),
    /// The body is larger than allowed.
    PayloadTooLarge => ("payload-too-large", 413, "Payload too large"),
    /// The body or parameters are malformed. Extension: `errors`.
    InvalidRequest => ("invalid-request", 400, "Invalid request"),
    /// The job cannot move to the state a callback asks for.
    InvalidTransition => ("invalid-transition", 409, "Invalid job state transition"),
    /// A conflicting resource exists.
    Conflict => ("conflict", 409, "Conflict"),
    /// The operation or service kind is not offered by this provider.
    UnsupportedOperation => ("unsupported-operation", 422, "Unsupported operation"),
    /// The model could not be processed (not an STL, broken beyond repair, …).
    ModelInvalid => ("model-invalid", 422, "Model invalid"),
    /// A download failed its size or digest check, or could not be completed.
    DownloadFailed => ("download-failed", 502, "Download failed"),
    /// The job's input is not the model the offer priced (its declared size or SHA-256
    /// differs from the offer's).
    InputMismatch => ("input-mismatch", 422, "Input does not match the offer"),
    /// The provider (or broker) could not be reached or answered badly.
    UpstreamFailed => ("upstream-failed", 502, "Upstream failed"),
    /// Too many requests. The response carries `Retry-After`.
    RateLimited => ("rate-limited", 429, "Too many requests"),
    /// The service cannot take work now (shutting down, overloaded).
    ServiceUnavailable => ("service-unavailable", 503, "Service unavailable"),
    /// An unexpected error; details are in the server's log, not here.
    Internal => ("internal", 500, "Internal error"),
}

impl ProblemType {
    /// The full `type` URI.
    #[must_use]
    pub fn uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug())
    }

    /// The problem type with this `type` URI, if the protocol defines it.
    #[must_use]
    pub fn from_uri(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix(PROBLEM_TYPE_BASE)?;
        Self::ALL.iter().copied().find(|t| t.slug() == slug)
    }
}

impl fmt::Display for ProblemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// An RFC 9457 problem document.
///
/// Unknown members are kept in [`Problem::extensions`], so a problem relayed by the broker
/// reaches the user unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// The problem type URI.
    #[serde(rename = "type", default = "about_blank")]
    pub type_uri: String,
    /// Short summary of the problem type.
    #[serde(default)]
    pub title: String,
    /// HTTP status code.
    #[serde(default)]
    pub status: u16,
    /// Explanation specific to this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// URI of this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension members (`register_url`, `top_up_url`, `quote`, …).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    /// A problem of a protocol type, with its status and title.
    #[must_use]
    pub fn new(kind: ProblemType) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: None,
            instance: None,
            extensions: Map::new(),
        }
    }

    /// Sets `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `instance`.
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Adds an extension member. Standard members (`type`, `title`, `status`, `detail`,
    /// `instance`) cannot be overwritten this way and are ignored.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        if matches!(key, "type" | "title" | "status" | "detail" | "instance") {
            return self;
        }
        if let Ok(v) = serde_json::to_value(value) {
            self.extensions.insert(key.to_owned(), v);
        }
        self
    }

    /// `account-required` with the URL where the user can register.
    #[must_use]
    pub fn account_required(register_url: impl Into<String>) -> Self {
        Self::new(ProblemType::AccountRequired)
            .with_detail("This provider does not know you yet: register, then link your account.")
            .with("register_url", register_url.into())
    }

    /// `payment-required` with the URL to top up and the price of the job.
    #[must_use]
    pub fn payment_required(top_up_url: impl Into<String>, quote: Quote) -> Self {
        Self::new(ProblemType::PaymentRequired)
            .with_detail("Your balance does not cover this job: top up, then retry.")
            .with("top_up_url", top_up_url.into())
            .with("quote", quote)
    }

    /// The protocol type, when `type` is one of ours.
    #[must_use]
    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_uri(&self.type_uri)
    }

    /// Whether this problem is of type `kind`.
    #[must_use]
    pub fn is(&self, kind: ProblemType) -> bool {
        self.kind() == Some(kind)
    }

    /// An extension member as a string.
    #[must_use]
    pub fn extension_str(&self, key: &str) -> Option<&str> {
        self.extensions.get(key).and_then(Value::as_str)
    }

    /// The `register_url` extension.
    #[must_use]
    pub fn register_url(&self) -> Option<&str> {
        self.extension_str("register_url")
    }

    /// The `top_up_url` extension.
    #[must_use]
    pub fn top_up_url(&self) -> Option<&str> {
        self.extension_str("top_up_url")
    }

    /// The `quote` extension.
    #[must_use]
    pub fn quote(&self) -> Option<Quote> {
        self.extensions
            .get("quote")
            .and_then(|q| serde_json::from_value(q.clone()).ok())
    }

    /// The problem as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"type\":\"about:blank\"}".to_vec())
    }
}

impl From<ProblemType> for Problem {
    fn from(kind: ProblemType) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.title, self.status)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl From<&crate::webhook::VerifyError> for Problem {
    fn from(e: &crate::webhook::VerifyError) -> Self {
        use crate::webhook::VerifyError as E;
        let kind = match e {
            E::MissingHeader(_) => ProblemType::SignatureMissing,
            E::MalformedHeader { .. } | E::NoSupportedSignature => ProblemType::SignatureMalformed,
            E::TimestampTooOld { .. } | E::TimestampInFuture { .. } => {
                ProblemType::TimestampOutOfTolerance
            }
            E::SignatureMismatch | E::NoActiveKey | E::WrongScheme { .. } => {
                ProblemType::SignatureInvalid
            }
            E::Replayed(_) => ProblemType::ReplayedMessage,
            E::BodyTooLarge { .. } => ProblemType::PayloadTooLarge,
            E::ReplayStore(_) => ProblemType::ServiceUnavailable,
        };
        let detail = match e {
            // Do not leak storage internals to the peer.
            E::ReplayStore(_) => {
                "replay protection is temporarily unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        Problem::new(kind).with_detail(detail)
    }
}

impl From<crate::webhook::VerifyError> for Problem {
    fn from(e: crate::webhook::VerifyError) -> Self {
        Problem::from(&e)
    }
}

impl From<&crate::token::TokenError> for Problem {
    fn from(e: &crate::token::TokenError) -> Self {
        Problem::new(ProblemType::InvalidToken)
            .with_detail(e.to_string())
            .with("reason", token_reason(e))
    }
}

fn token_reason(e: &crate::token::TokenError) -> &'static str {
    use crate::token::TokenError as E;
    match e {
        E::Malformed(_) | E::TooLong => "malformed",
        E::UnsupportedAlgorithm(_) => "algorithm",
        E::WrongType => "type",
        E::MissingKeyId | E::UnknownKey(_) => "key",
        E::BadSignature => "signature",
        E::InvalidClaim(_) => "claims",
        E::Expired { .. } => "expired",
        E::NotYetValid(_) => "not-yet-valid",
        E::WrongIssuer(_) => "issuer",
        E::WrongAudience => "audience",
        E::InvalidLifetime | E::Signing(_) => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_its_uri() {
        for t in ProblemType::ALL {
            assert_eq!(ProblemType::from_uri(&t.uri()), Some(*t));
            assert!((400..600).contains(&t.status()));
        }
    }

    #[test]
    fn unknown_members_survive_a_round_trip() {
        let text = r#"{"type":"https://example.com/x","title":"X","status":418,"foo":{"bar":1},"register_url":"https://r"}"#;
        let p: Problem = serde_json::from_str(text).unwrap();
        assert_eq!(p.kind(), None);
        assert_eq!(p.register_url(), Some("https://r"));
        let back: Value = serde_json::to_value(&p).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn extensions_cannot_override_standard_members() {
        let p = Problem::new(ProblemType::Conflict).with("status", 200);
        assert_eq!(serde_json::to_value(&p).unwrap()["status"], 409);
    }
}
