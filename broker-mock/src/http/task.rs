//! Work a request starts that must not stop half-way when its client hangs up.

use crate::error::{ApiError, ApiResult};

/// Runs `work` in a task of its own and waits for it. A client that hangs up drops its
/// request, and with it whatever the handler was awaiting; work run here goes on to its end
/// (an offer's answer applied, a fetched result recorded and its user notified), so no
/// request leaves a multi-step change half made. Its answer is lost with the client.
///
/// # Errors
/// `Internal` when the task panicked.
pub(crate) async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("a request's task failed: {e}")))
}
