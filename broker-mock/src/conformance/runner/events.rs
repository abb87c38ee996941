//! The provider's events (PROTOCOL §5.6): signed, in order, retried under the same id.

use diax_sdk::wire::JobAccepted;

use super::super::endpoint::{Log, Retry};

/// `events.signed`: every delivery verified and parsed.
pub(super) fn judge_signed(log: &Log, unfinished: &str) -> Result<String, String> {
    let bad: Vec<_> = log
        .deliveries
        .iter()
        .filter_map(|d| {
            d.error
                .as_ref()
                .map(|e| format!("webhook-id {}: {e}", d.id.as_deref().unwrap_or("(none)")))
        })
        .collect();
    if let Some(first) = bad.first() {
        Err(format!(
            "{} of {} deliveries failed: first: {first}",
            bad.len(),
            log.deliveries.len()
        ))
    } else if log.deliveries.is_empty() {
        Err(format!("no event reached the events URL{unfinished}"))
    } else {
        Ok(format!(
            "{} deliveries, all signed with the shared secret within the tolerance",
            log.deliveries.len()
        ))
    }
}

/// `events.transitions`: the right job and provider, sequence and order, a terminal event.
pub(super) fn judge_transitions(
    log: &Log,
    accepted: &JobAccepted,
    unfinished: &str,
) -> Result<String, String> {
    let trail: Vec<String> = log
        .applied
        .iter()
        .map(|e| format!("{}#{}", e.kind.name(), e.sequence))
        .collect();
    let trail = if trail.is_empty() {
        "(none)".to_owned()
    } else {
        trail.join(" → ")
    };
    let transitions = if let Some(first) = log.violations.first() {
        Err(format!(
            "{} violation(s); first: {first}; events: {trail}",
            log.violations.len()
        ))
    } else if log.terminal.is_none() && log.forced.is_none() {
        Err(format!(
            "no job.completed or job.failed received{unfinished}; events: {trail}"
        ))
    } else {
        Ok(format!("events: {trail}"))
    };
    match transitions {
        Ok(_)
            if log
                .provider_job_id
                .as_deref()
                .is_some_and(|p| p != accepted.provider_job_id.as_str()) =>
        {
            Err(format!(
                "events name another provider job than the accepted {}",
                accepted.provider_job_id
            ))
        }
        other => other,
    }
}

/// `events.retry-same-id`: the refused completion event retried under its id and body.
pub(super) fn judge_retry(log: &Log, waited: u64, unfinished: &str) -> Result<String, String> {
    match (&log.forced, &log.retry) {
        (None, _) => Err(format!(
            "no completion event arrived to refuse once{unfinished}"
        )),
        (Some((id, _, _)), None) => Err(format!(
            "the completion event (webhook-id {id}) was answered 503, and no retry arrived \
             within {waited} s"
        )),
        (Some((id, _, _)), Some(Retry::SameId(after))) => Ok(format!(
            "503 to the completion event {id}; retried after {:.1} s with the same \
             webhook-id and body, signed afresh",
            after.as_secs_f64()
        )),
        (Some((id, _, _)), Some(Retry::NewId(new))) => Err(format!(
            "the completion event {id} was answered 503 and retried under a new \
             webhook-id {new}"
        )),
        (Some((id, _, _)), Some(Retry::DifferentBody)) => Err(format!(
            "the completion event {id} was answered 503 and retried with the same \
             webhook-id over a different body"
        )),
    }
}
