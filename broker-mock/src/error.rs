//! The errors of the broker mock: [`ApiError`] (why a request or a delivery step failed, and
//! the one place that maps each to its problem document) and [`StartError`] (why the server
//! could not start). Turning an [`ApiError`] into an HTTP response is the HTTP layer's job
//! (`http::respond`); this module knows no HTTP framework.

use diax_sdk::{Problem, ProblemType};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Binding or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The outgoing HTTP client could not be built (bad CA file, …).
    #[error("http client: {0}")]
    Client(String),
    /// A configuration value is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The model bucket (`--storage s3://…`) failed its start-up probe; the message names
    /// the store and what failed, in one line.
    #[error("{0}")]
    Storage(String),
}

/// Why a request to the broker mock failed. [`ApiError::problem`] is the single place that
/// decides the status and problem type of each.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A fully built problem (signature and token checks produce these).
    #[error("{0}")]
    Problem(Box<Problem>),
    /// No such resource (or not the caller's).
    #[error("not found: {0}")]
    NotFound(String),
    /// No route for this path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The route exists but not with this method.
    #[error("method {0} not allowed here")]
    MethodNotAllowed(String),
    /// Missing or unknown API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Malformed body or parameters.
    #[error("{0}")]
    InvalidRequest(String),
    /// Wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Body too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A conflicting state.
    #[error("{0}")]
    Conflict(String),
    /// A job event that the job's state does not allow.
    #[error("{0}")]
    InvalidTransition(String),
    /// A link token whose `jti` was used before.
    #[error("link token {0} was already used")]
    TokenReused(String),
    /// A temporary credential that is unknown, tampered with or expired.
    #[error("{0}")]
    CredentialInvalid(&'static str),
    /// A valid temporary credential used for another object or method.
    #[error("{0}")]
    CredentialScope(String),
    /// Fetching a result failed.
    #[error("{0}")]
    DownloadFailed(String),
    /// The broker is at a bound it will not pass right now (the budget of model bytes
    /// held in memory): `503`, answered with `Retry-After: 1`.
    #[error("{0}")]
    Busy(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Anything else unexpected.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The problem document answered for this error: the one status mapping.
    #[must_use]
    pub fn problem(&self) -> Problem {
        let (kind, detail) = match self {
            Self::Problem(p) => return (**p).clone(),
            Self::NotFound(d) | Self::NoRoute(d) => (ProblemType::NotFound, d.clone()),
            Self::MethodNotAllowed(_) => (ProblemType::MethodNotAllowed, self.to_string()),
            Self::Unauthorized(d) => (ProblemType::Unauthorized, (*d).to_owned()),
            Self::Forbidden(d) => (ProblemType::Forbidden, d.clone()),
            Self::InvalidRequest(d) => (ProblemType::InvalidRequest, d.clone()),
            Self::UnsupportedMediaType(d) => (ProblemType::UnsupportedMediaType, d.clone()),
            Self::PayloadTooLarge(d) => (ProblemType::PayloadTooLarge, d.clone()),
            Self::Conflict(d) => (ProblemType::Conflict, d.clone()),
            Self::InvalidTransition(d) => (ProblemType::InvalidTransition, d.clone()),
            Self::TokenReused(_) => (ProblemType::TokenReused, self.to_string()),
            Self::CredentialInvalid(d) => (ProblemType::CredentialInvalid, (*d).to_owned()),
            Self::CredentialScope(d) => (ProblemType::CredentialScope, d.clone()),
            Self::DownloadFailed(d) => (ProblemType::DownloadFailed, d.clone()),
            Self::Busy(d) => (ProblemType::ServiceUnavailable, d.clone()),
            Self::Db(_) | Self::Internal(_) => (
                ProblemType::Internal,
                "unexpected error; see the broker's log".to_owned(),
            ),
        };
        Problem::new(kind).with_detail(detail)
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Problem(Box::new(p))
    }
}

/// Result of handlers and domain operations.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_problem_and_hides_internals() {
        let cases: Vec<(ApiError, u16, ProblemType)> = vec![
            (ApiError::NotFound("x".into()), 404, ProblemType::NotFound),
            (ApiError::NoRoute("x".into()), 404, ProblemType::NotFound),
            (
                ApiError::MethodNotAllowed("PUT".into()),
                405,
                ProblemType::MethodNotAllowed,
            ),
            (ApiError::Unauthorized("x"), 401, ProblemType::Unauthorized),
            (ApiError::Forbidden("x".into()), 403, ProblemType::Forbidden),
            (
                ApiError::InvalidRequest("x".into()),
                400,
                ProblemType::InvalidRequest,
            ),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                ProblemType::UnsupportedMediaType,
            ),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                ProblemType::PayloadTooLarge,
            ),
            (ApiError::Conflict("x".into()), 409, ProblemType::Conflict),
            (
                ApiError::InvalidTransition("x".into()),
                409,
                ProblemType::InvalidTransition,
            ),
            (
                ApiError::TokenReused("j".into()),
                409,
                ProblemType::TokenReused,
            ),
            (
                ApiError::CredentialInvalid("x"),
                401,
                ProblemType::CredentialInvalid,
            ),
            (
                ApiError::CredentialScope("x".into()),
                403,
                ProblemType::CredentialScope,
            ),
            (
                ApiError::DownloadFailed("x".into()),
                502,
                ProblemType::DownloadFailed,
            ),
            (
                ApiError::Busy("x".into()),
                503,
                ProblemType::ServiceUnavailable,
            ),
            (
                ApiError::Internal("secret path /etc".into()),
                500,
                ProblemType::Internal,
            ),
            (
                ApiError::Db(sqlx::Error::RowNotFound),
                500,
                ProblemType::Internal,
            ),
        ];
        for (err, status, kind) in cases {
            let p = err.problem();
            assert_eq!((p.status, p.kind()), (status, Some(kind)), "{err:?}");
            if status == 500 {
                assert!(!p.detail.unwrap_or_default().contains("/etc"));
            }
        }
    }
}
