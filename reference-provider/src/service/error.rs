//! The one error type of the HTTP API and its mapping to problem documents.

use axum::response::{IntoResponse, Response};
use diax_sdk::{Problem, ProblemType, Quote};

/// Every way a request can fail. [`ApiError::to_problem`] is the only place that decides
/// the status and problem type of each.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The offer names no account, or one this provider does not know.
    #[error("account required")]
    AccountRequired {
        /// Where to register.
        register_url: String,
    },
    /// The account cannot pay the quote.
    #[error("payment required")]
    PaymentRequired {
        /// Where to top up.
        top_up_url: String,
        /// The price.
        quote: Quote,
        /// What the account has available.
        balance: i64,
    },
    /// Missing or unknown API key.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// No such resource.
    #[error("not found: {0}")]
    NotFound(String),
    /// Malformed request.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Conflicts with an earlier request (idempotency key reuse, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation or service kind is not offered.
    #[error("unsupported operation: {0}")]
    Unsupported(String),
    /// The model is larger than this provider accepts.
    #[error("model too large: {0}")]
    ModelTooLarge(String),
    /// A result credential that is missing, unknown or expired.
    #[error("credential invalid")]
    CredentialInvalid,
    /// A valid result credential used for another object or method.
    #[error("credential scope")]
    CredentialScope,
    /// The provider is not registered with a broker yet.
    #[error("not registered")]
    NotRegistered,
    /// A problem built elsewhere (e.g. by the SDK), sent as is.
    #[error("{0}")]
    Problem(Problem),
    /// Database failure: logged, answered with an opaque 500.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Anything else unexpected: logged, answered with an opaque 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The problem document for this error (the single status mapping of the API).
    #[must_use]
    pub fn to_problem(&self) -> Problem {
        match self {
            ApiError::AccountRequired { register_url } => {
                Problem::account_required(register_url.clone())
            }
            ApiError::PaymentRequired {
                top_up_url,
                quote,
                balance,
            } => Problem::payment_required(top_up_url.clone(), quote.clone())
                .with("balance", balance),
            ApiError::Unauthorized(why) => {
                Problem::new(ProblemType::Unauthorized).with_detail(*why)
            }
            ApiError::NotFound(what) => {
                Problem::new(ProblemType::NotFound).with_detail(what.clone())
            }
            ApiError::Invalid(why) => {
                Problem::new(ProblemType::InvalidRequest).with_detail(why.clone())
            }
            ApiError::Conflict(why) => Problem::new(ProblemType::Conflict).with_detail(why.clone()),
            ApiError::Unsupported(why) => {
                Problem::new(ProblemType::UnsupportedOperation).with_detail(why.clone())
            }
            ApiError::ModelTooLarge(why) => {
                Problem::new(ProblemType::ModelInvalid).with_detail(why.clone())
            }
            ApiError::CredentialInvalid => Problem::new(ProblemType::CredentialInvalid),
            ApiError::CredentialScope => Problem::new(ProblemType::CredentialScope),
            ApiError::NotRegistered => Problem::new(ProblemType::ServiceUnavailable)
                .with_detail("this provider is not registered with a broker yet"),
            ApiError::Problem(p) => p.clone(),
            ApiError::Db(_) | ApiError::Internal(_) => Problem::new(ProblemType::Internal)
                .with_detail("an unexpected error occurred; it has been logged"),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError::Problem(p)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Db(e) => tracing::error!(error = %e, "database error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
        let problem = self.to_problem();
        let mut response = problem.into_response();
        if matches!(
            self,
            ApiError::Unauthorized(_) | ApiError::CredentialInvalid
        ) {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
