//! The result (PROTOCOL §5.6): the job completed and its location serves the declared bytes.

use std::time::Instant;

use diax_sdk::Quote;
use diax_sdk::client::{self, DownloadError, DownloadLimits};
use diax_sdk::util::random_token;
use diax_sdk::wire::{JobAccepted, JobEventKind};

use super::super::endpoint::{Charge, Log};
use super::{Check, Runner, not_checked};

/// `result.digest`.
pub(super) fn judge_result(log: &Log, unfinished: &str) -> Result<String, String> {
    match (&log.terminal, &log.result) {
        (None, _) => Err(format!("the job never completed{unfinished}")),
        (Some(ev), _) if matches!(ev.kind, JobEventKind::Failed { .. }) => {
            let why = match &ev.kind {
                JobEventKind::Failed { problem, .. } => problem.to_string(),
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

impl Runner {
    /// `result.credential-required` (§5.6: the result is fetched with its credential): the
    /// completed job's result location, fetched without a credential and with a wrong one,
    /// must refuse (`401`/`403`) and serve nothing.
    pub(super) async fn result_credential_check(&mut self, finished: bool) {
        let t = Instant::now();
        let result = {
            let log = self.endpoint.shared.log.lock().await;
            match &log.terminal {
                Some(ev) => match &ev.kind {
                    JobEventKind::Completed { result } => Some(result.download.clone()),
                    _ => None,
                },
                None => None,
            }
        };
        let Some(download) = result else {
            let why = if finished {
                "not checked: the job did not complete (see result.digest)"
            } else {
                "not checked: the job did not end (see events.transitions)"
            };
            self.judge(Check::ResultCredentialRequired, Err(why.to_owned()), t);
            return;
        };
        let limits = DownloadLimits {
            max_bytes: download.size.saturating_add(1),
            timeout: self.cfg.request_timeout.min(self.cfg.timeout),
            ..DownloadLimits::default()
        };
        let mut seen = Vec::new();
        let mut outcome = Ok(());
        for (what, authorization) in [
            ("without a credential", None),
            (
                "given a wrong credential",
                Some(format!(
                    "Bearer {}",
                    random_token("rc_conformanceWrong", 24)
                )),
            ),
        ] {
            let mut d = download.clone();
            d.authorization = authorization;
            match client::download_to_vec(&self.http, &d, &limits).await {
                Err(DownloadError::Refused { status, .. }) if matches!(status, 401 | 403) => {
                    seen.push(format!("{what}: {status}"));
                }
                Err(DownloadError::Refused { status, .. }) => {
                    outcome = Err(format!(
                        "the result location {what} answered {status}; expected 401 or 403"
                    ));
                    break;
                }
                Ok(bytes) => {
                    outcome = Err(format!(
                        "the result location served {} bytes {what}: anyone with the URL gets \
                         the user's model",
                        bytes.len()
                    ));
                    break;
                }
                Err(e) => {
                    outcome = Err(format!(
                        "the result location {what}: {}",
                        diax_sdk::util::ErrorChain(&e)
                    ));
                    break;
                }
            }
        }
        let outcome = outcome.map(|()| format!("result.download.url {}", seen.join(", ")));
        self.judge(Check::ResultCredentialRequired, outcome, t);
    }

    /// `charges.match-quote`, judged at the end of the run (after the finished job's input
    /// came again), so that a second charge shows.
    pub(super) async fn charges_check(&mut self, accepted: Option<&JobAccepted>, input_ok: bool) {
        let t = Instant::now();
        let outcome = match accepted {
            None => Err(not_checked(Check::OfferValidAccepted)),
            Some(_) if !input_ok => Err(not_checked(Check::InputAccepted)),
            Some(acc) => {
                let log = self.endpoint.shared.log.lock().await;
                judge_charges(&log.charges, acc.quote.as_ref())
            }
        };
        self.judge(Check::ChargesMatchQuote, outcome, t);
    }
}

/// One job's terminal events against its quote: the first says what was charged (the quote
/// on `job.completed`, zero on `job.failed`), and no later one charges again.
pub(super) fn judge_charges(charges: &[Charge], quote: Option<&Quote>) -> Result<String, String> {
    let Some(first) = charges.first() else {
        return Err("not checked: no job.completed or job.failed arrived (see \
                    events.transitions)"
            .to_owned());
    };
    let charged = first.charged.as_ref().ok_or_else(|| {
        format!(
            "{} {} carries no `charged` (PROTOCOL §5.6: what the provider charged, amount \
             and currency)",
            first.event_type, first.id
        )
    })?;
    let quoted = quote.map_or_else(|| "no quote (free)".to_owned(), ToString::to_string);
    if first.event_type == "job.failed" {
        if charged.amount != 0 {
            return Err(format!(
                "job.failed {} says {charged} was charged; a failed job charges nothing \
                 (amount 0) and releases its hold (quote was {quoted})",
                first.id
            ));
        }
    } else {
        let expected = quote.map_or(0, |q| q.amount);
        let currency_ok = quote.is_none_or(|q| q.currency == charged.currency);
        if charged.amount != expected || !currency_ok {
            return Err(format!(
                "job.completed {} says {charged} was charged, but the accepted quote was \
                 {quoted}",
                first.id
            ));
        }
    }
    let again: Vec<String> = charges
        .iter()
        .skip(1)
        .filter(|c| c.charged.as_ref().is_none_or(|q| q.amount != 0))
        .map(|c| {
            let what = c
                .charged
                .as_ref()
                .map_or_else(|| "no charged member".to_owned(), ToString::to_string);
            format!("{} {} ({what})", c.event_type, c.id)
        })
        .collect();
    if let Some(second) = again.first() {
        return Err(format!(
            "{} {} charged {charged}, then {} more terminal event(s) under new webhook-ids: \
             first {second}: the job was charged more than once",
            first.event_type,
            first.id,
            again.len()
        ));
    }
    Ok(format!(
        "{} {} says {charged} was charged (quote {quoted}), and no other terminal event came",
        first.event_type, first.id
    ))
}
