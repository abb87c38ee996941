//! The provider's events (PROTOCOL §5.6): signed, in order, retried under the same id.

use diax_sdk::wire::JobAccepted;

use std::time::Duration;

use super::super::endpoint::{Log, REFUSALS, Retry};

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
        (None, _) => Err(format!("no completion event arrived to refuse{unfinished}")),
        (Some((id, _, _)), None) => Err(format!(
            "the completion event (webhook-id {id}) was answered 503 {} time(s), and no \
             accepted retry arrived within {waited} s (§5.6: retried on 5xx)",
            log.attempts.len()
        )),
        (Some((id, _, _)), Some(Retry::SameId(after))) => Ok(format!(
            "{REFUSALS} × 503 to the completion event {id}; delivered {:.1} s after the \
             first attempt with the same webhook-id and body each time",
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

/// `events.retry-fresh-signature` (§3: each attempt signed afresh with the current
/// timestamp): of two deliveries of the refused event at least 1.5 s apart, the later one
/// carries a later `webhook-timestamp`.
pub(super) fn judge_fresh_signature(log: &Log, unfinished: &str) -> Result<String, String> {
    let attempts = &log.attempts;
    if attempts.len() < 2 {
        return Err(format!(
            "not checked: {} delivery(ies) of the refused completion event arrived{unfinished} \
             (see events.retry-same-id)",
            attempts.len()
        ));
    }
    for (i, later) in attempts.iter().enumerate().skip(1) {
        for (j, earlier) in attempts.iter().enumerate().take(i) {
            let apart = later.at.duration_since(earlier.at);
            let parse = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<i64>().ok());
            let (Some(t0), Some(t1)) = (parse(&earlier.timestamp), parse(&later.timestamp)) else {
                continue;
            };
            if apart >= Duration::from_millis(1500) && t1 <= t0 {
                let same_sig = if later.signature == earlier.signature {
                    " and the same webhook-signature"
                } else {
                    ""
                };
                return Err(format!(
                    "attempt {} arrived {:.1} s after attempt {} with the same \
                     webhook-timestamp {t1}{same_sig}: the retry was not signed afresh \
                     (§3: each attempt is signed with the current timestamp)",
                    i + 1,
                    apart.as_secs_f64(),
                    j + 1
                ));
            }
        }
    }
    let stamps: Vec<String> = attempts
        .iter()
        .map(|a| a.timestamp.clone().unwrap_or_default())
        .collect();
    Ok(format!(
        "{} deliveries of the refused completion event, timestamps {}: signed afresh",
        attempts.len(),
        stamps.join(", ")
    ))
}

/// `events.retry-backoff` (§5.6: backoff; `Retry-After` honoured): every retry after a
/// `503` with `Retry-After: 1` came at least a second later.
pub(super) fn judge_backoff(log: &Log, unfinished: &str) -> Result<String, String> {
    let attempts = &log.attempts;
    if attempts.len() < 2 {
        return Err(format!(
            "not checked: {} delivery(ies) of the refused completion event arrived{unfinished} \
             (see events.retry-same-id)",
            attempts.len()
        ));
    }
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    let shown: Vec<String> = gaps
        .iter()
        .map(|g| format!("{:.2} s", g.as_secs_f64()))
        .collect();
    if let Some((n, g)) = gaps
        .iter()
        .enumerate()
        .find(|(_, g)| **g < Duration::from_millis(950))
    {
        return Err(format!(
            "retry {} came {:.2} s after a 503 with Retry-After: 1 (gaps: {}): retries must \
             back off and wait at least Retry-After (§5.6)",
            n + 1,
            g.as_secs_f64(),
            shown.join(", ")
        ));
    }
    Ok(format!(
        "{} refusals with Retry-After: 1, retried after {}",
        gaps.len(),
        shown.join(", ")
    ))
}

/// `events.fields` (§1, §5.6): every event's fields in their units and ranges.
pub(super) fn judge_fields(log: &Log, unfinished: &str) -> Result<String, String> {
    if let Some(first) = log.field_errors.first() {
        return Err(format!(
            "{} field(s) out of unit or range; first: {first}",
            log.field_errors.len()
        ));
    }
    let n = log.seen_count();
    if n == 0 {
        return Err(format!("not checked: no event arrived{unfinished}"));
    }
    Ok(format!(
        "{n} event(s): occurred_at in Unix seconds near now, expires_at a future time in \
         seconds, lowercase hex digests, money with an ISO 4217 code"
    ))
}
