//! Responses: JSON answers, problem documents (every error answer, with its reason noted for
//! the message log), and the fallbacks for unknown routes and methods.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use diax_sdk::{PROBLEM_CONTENT_TYPE, Problem};
use http::{HeaderValue, StatusCode, header};

use crate::error::ApiError;
use crate::store::messages::Note;

/// A JSON answer with a status.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

/// `resp` carrying `note` for the message log.
pub(crate) fn with_note(mut resp: Response, note: Note) -> Response {
    resp.extensions_mut().insert(note);
    resp
}

/// A problem as an HTTP response (`application/problem+json`), noting the refusal reason
/// for the message log.
pub(crate) fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, problem.to_json()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    let reason = match &problem.detail {
        Some(d) => format!("{}: {d}", problem.title),
        None => problem.title.clone(),
    };
    with_note(
        resp,
        Note {
            verdict: Some("refused".into()),
            reason: Some(reason),
            ..Note::default()
        },
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Busy(_) = self {
            // A bound the broker will not pass right now: the client may try again shortly.
            let mut resp = problem_response(&self.problem());
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
        if !matches!(self, Self::Db(_) | Self::Internal(_)) {
            return problem_response(&self.problem());
        }
        // The cause goes to the server's log only, under an id; the message log (public:
        // anyone can read it) and the answer carry the generic problem and that id.
        let error_id = diax_sdk::util::random_token("err_", 16);
        tracing::error!(error = %self, error_id = %error_id, "request failed unexpectedly");
        let problem = self
            .problem()
            .with_instance(format!("urn:diax:error:{error_id}"));
        let mut resp = problem_response(&problem);
        if let Some(note) = resp.extensions_mut().get_mut::<Note>() {
            note.reason = Some(format!(
                "{} (error {error_id}; the cause is in the server's log)",
                problem.title
            ));
        }
        resp
    }
}

/// The answer for a path no route serves.
pub(crate) async fn no_route(req: Request) -> ApiError {
    ApiError::NoRoute(format!("{} {}", req.method(), req.uri().path()))
}

/// The answer for a method a route does not serve.
pub(crate) async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_503_with_retry_after() {
        let resp = ApiError::Busy("full".into()).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn an_internal_cause_stays_out_of_the_message_log_and_the_answer() {
        for error in [
            ApiError::Internal("secret path /etc/broker.key".into()),
            ApiError::Db(sqlx::Error::Protocol("secret path /etc/broker.key".into())),
        ] {
            let resp = error.into_response();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let reason = resp
                .extensions()
                .get::<Note>()
                .unwrap()
                .reason
                .clone()
                .unwrap();
            assert!(!reason.contains("secret"), "{reason}");
            assert!(reason.contains("err_"), "{reason}");
        }
    }
}
