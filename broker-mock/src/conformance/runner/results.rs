//! The result (PROTOCOL §5.6): the job completed and its location serves the declared bytes.

use diax_sdk::wire::JobEventKind;

use super::super::endpoint::Log;

/// `result.digest`.
pub(super) fn judge_result(log: &Log, unfinished: &str) -> Result<String, String> {
    match (&log.terminal, &log.result) {
        (None, _) => Err(format!("the job never completed{unfinished}")),
        (Some(ev), _) if matches!(ev.kind, JobEventKind::Failed { .. }) => {
            let why = match &ev.kind {
                JobEventKind::Failed { problem } => problem.to_string(),
                _ => String::new(),
            };
            Err(format!("the job failed on a valid model: {why}"))
        }
        (Some(_), Some(Ok((size, sha)))) => Ok(format!(
            "the result location served {size} bytes with the declared sha256 {sha}"
        )),
        (Some(_), Some(Err(e))) => Err(e.clone()),
        (Some(_), None) => Err("the result was not fetched".to_owned()),
    }
}
