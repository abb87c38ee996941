//! The run's other jobs, started together once the job under test has sent its completion
//! (PROTOCOL §5.5, §5.6): one that must complete beside the others (independent sequences
//! and ids), one whose input is a presigned object-store URL (no `authorization`; the
//! credential is the URL's query), and four the provider must fail: a declared size that does
//! not match, a declared SHA-256 that does not match, a download location that redirects, a
//! model that is not an STL. Each failed job must say it charged nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use diax_sdk::clock::unix_now;
use diax_sdk::util::{random_token, sha256_hex};
use diax_sdk::wire::{BrokerMessage, Download, JobAccepted, JobEventKind};
use diax_sdk::{JobId, ModelId, ProblemType, ProviderJobId};

use super::super::endpoint::{Served, SideJob};
use super::super::model::test_model;
use super::{CREDENTIAL_TTL_SECS, Check, Runner};

/// What is wrong with a side job (or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SideKind {
    /// A good job, run beside the others.
    Parallel,
    /// The input declares fewer bytes than the location serves.
    SizeMismatch,
    /// The input declares another SHA-256 than the served bytes have.
    DigestMismatch,
    /// The download location answers `302` to a location serving the model.
    Redirect,
    /// The model is not an STL.
    BadModel,
    /// A good job whose input comes twice at once (a broker's second delivery attempt: a
    /// new `webhook-id`, a fresh credential) while the job runs.
    RepeatedInput,
    /// A good job whose input is a presigned URL: `authorization` absent, the credential in
    /// the query, refused with an `Authorization` header or a changed query.
    Presigned,
}

impl SideKind {
    const ALL: [SideKind; 7] = [
        SideKind::Parallel,
        SideKind::SizeMismatch,
        SideKind::DigestMismatch,
        SideKind::Redirect,
        SideKind::BadModel,
        SideKind::RepeatedInput,
        SideKind::Presigned,
    ];

    fn what(self) -> &'static str {
        match self {
            Self::Parallel => "the parallel job",
            Self::SizeMismatch => "the job whose input declares a wrong size",
            Self::DigestMismatch => "the job whose input declares a wrong sha256",
            Self::Redirect => "the job whose download location redirects",
            Self::BadModel => "the job whose model is not an STL",
            Self::RepeatedInput => "the job whose input came twice while it ran",
            Self::Presigned => "the job whose input is a presigned URL",
        }
    }
}

/// A started side job.
pub(super) struct Started {
    kind: SideKind,
    job_id: JobId,
    /// The provider's job id, or why the offer or input was not taken.
    provider_job: Result<ProviderJobId, String>,
    /// What the input declared and what is served, for the reasons.
    declared: (u64, String),
    served: (u64, String),
    /// For [`SideKind::RepeatedInput`]: how the second input was answered.
    repeated: Option<Result<String, String>>,
}

/// Bytes that are no STL, ASCII or binary.
fn bad_model() -> Vec<u8> {
    b"diax conformance: this file is not an STL model, and a provider must fail on it.\n".repeat(4)
}

impl Runner {
    /// Offers every side job and gives it its input, one after the other without waiting
    /// for their work, so the provider runs them together.
    pub(super) async fn start_side_jobs(&self) -> Vec<Started> {
        let mut out = Vec::new();
        for kind in SideKind::ALL {
            out.push(self.start_side_job(kind).await);
        }
        out
    }

    async fn start_side_job(&self, kind: SideKind) -> Started {
        let job_id = JobId::generate();
        let model_id = ModelId::parse(random_token("mdl_conformanceSide", 12))
            .unwrap_or_else(|_| ModelId::generate());
        let bytes = if kind == SideKind::BadModel {
            bad_model()
        } else {
            test_model()
        };
        let served = (bytes.len() as u64, sha256_hex(&bytes));
        let declared = match kind {
            SideKind::SizeMismatch => (served.0 - 84, served.1.clone()),
            SideKind::DigestMismatch => (served.0, sha256_hex(b"not the model")),
            _ => served.clone(),
        };
        let path = format!("/v1/models/{model_id}/versions/1/content");
        let credential = format!("Bearer {}", random_token("tc_", 32));
        let second_credential = format!("Bearer {}", random_token("tc_", 32));
        let bytes = Bytes::from(bytes);
        let presigned_query = (kind == SideKind::Presigned).then(presigned_query);
        let entry = |redirect: Option<String>, redirect_target: bool| Served {
            job_id: job_id.to_string(),
            bytes: bytes.clone(),
            credentials: vec![credential.clone(), second_credential.clone()],
            redirect,
            redirect_target,
            presigned_query: presigned_query.clone(),
        };
        {
            let mut map = self.endpoint.shared.served.lock().await;
            if kind == SideKind::Redirect {
                let target = format!(
                    "/v1/models/{}/versions/1/content",
                    random_token("mdl_conformanceMoved", 12)
                );
                map.insert(
                    path.clone(),
                    entry(Some(format!("{}{target}", self.endpoint.base_url)), false),
                );
                map.insert(target, entry(None, true));
            } else {
                map.insert(path.clone(), entry(None, false));
            }
        }
        self.endpoint
            .shared
            .log
            .lock()
            .await
            .side
            .insert(job_id.to_string(), SideJob::default());
        let mut offer = self.offer(&job_id, self.account());
        offer.model.model_id = model_id;
        offer.model.size = declared.0;
        offer.model.sha256.clone_from(&declared.1);
        offer.model.name = "conformance-side.stl".to_owned();
        let body = Self::body(&BrokerMessage::Offer(offer));
        let mut repeated = None;
        let provider_job = async {
            let a = self
                .send_signed(&body)
                .await
                .map_err(|e| format!("its offer got no answer: {e}"))?;
            let acc: JobAccepted = (a.status == 202)
                .then(|| serde_json::from_slice(&a.body).ok())
                .flatten()
                .ok_or_else(|| format!("its offer was answered {}", a.describe()))?;
            let download = Download {
                url: match &presigned_query {
                    Some(query) => format!("{}{path}?{query}", self.endpoint.base_url),
                    None => format!("{}{path}", self.endpoint.base_url),
                },
                authorization: presigned_query.is_none().then(|| credential.clone()),
                expires_at: unix_now().saturating_add(CREDENTIAL_TTL_SECS),
                size: declared.0,
                sha256: declared.1.clone(),
            };
            let a = self
                .deliver(&job_id, &acc.provider_job_id, download.clone())
                .await
                .map_err(|e| format!("its job.input got no answer: {e}"))?;
            if a.status != 202 {
                return Err(format!("its job.input was answered {}", a.describe()));
            }
            if kind == SideKind::RepeatedInput {
                let again = Download {
                    authorization: Some(second_credential.clone()),
                    ..download
                };
                let answer = self.deliver(&job_id, &acc.provider_job_id, again).await;
                repeated = Some(match answer {
                    Ok(a) if (200..300).contains(&a.status) => Ok(a.describe()),
                    Ok(a) if a.status == 409 && a.problem().is_some() => Ok(a.describe()),
                    Ok(a) => Err(format!(
                        "its job.input sent again under a new webhook-id with a fresh \
                         credential was answered {}; expected 2xx or 409 (§5.5: a broker \
                         fails the job on any other 4xx)",
                        a.describe()
                    )),
                    Err(e) => Err(format!("its job.input sent again got no answer: {e}")),
                });
            }
            Ok(acc.provider_job_id)
        }
        .await;
        Started {
            kind,
            job_id,
            provider_job,
            declared,
            served,
            repeated,
        }
    }

    /// Waits for every started side job's end (or `deadline`) and judges them.
    pub(super) async fn judge_side_jobs(
        &mut self,
        started: &[Started],
        main: Option<&JobAccepted>,
        deadline: tokio::time::Instant,
    ) {
        let t = Instant::now();
        loop {
            let all_ended = {
                let log = self.endpoint.shared.log.lock().await;
                started.iter().all(|s| {
                    s.provider_job.is_err()
                        || log
                            .side
                            .get(s.job_id.as_str())
                            .is_some_and(|j| j.terminal().is_some())
                })
            };
            if all_ended || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waited = self.cfg.timeout.as_secs();
        let log = self.endpoint.shared.log.lock().await;
        let empty = SideJob::default();
        let pairs: Vec<(&Started, &SideJob)> = started
            .iter()
            .map(|s| (s, log.side.get(s.job_id.as_str()).unwrap_or(&empty)))
            .collect();
        let mut outcomes = Vec::new();
        for &(s, job) in &pairs {
            let check = match s.kind {
                SideKind::Parallel => continue,
                SideKind::Presigned => {
                    outcomes.push((Check::InputPresigned, judge_presigned(s, job, waited)));
                    continue;
                }
                SideKind::RepeatedInput => {
                    outcomes.push((
                        Check::InputRepeatedWhileRunning,
                        judge_repeated_while_running(s, job, waited),
                    ));
                    continue;
                }
                SideKind::SizeMismatch => Check::InputSizeMismatch,
                SideKind::DigestMismatch => Check::InputDigestMismatch,
                SideKind::Redirect => Check::InputRedirect,
                SideKind::BadModel => Check::JobBadModel,
            };
            outcomes.push((check, judge_failing(s, job, waited)));
        }
        outcomes.push((Check::ChargesFailedZero, judge_failed_zero(&pairs)));
        outcomes.push((Check::JobsParallel, judge_parallel(&pairs, main, waited)));
        drop(log);
        for (check, outcome) in outcomes {
            self.judge(check, outcome, t);
        }
    }
}

/// A side job the provider must fail: how it ended, and whether it followed a redirect.
fn judge_failing(s: &Started, job: &SideJob, waited: u64) -> Result<String, String> {
    let what = s.kind.what();
    if let Err(e) = &s.provider_job {
        return Err(format!("{what}: {e}; it must be accepted like any job"));
    }
    let setup = match s.kind {
        SideKind::SizeMismatch => format!(
            "declared size {}, served {} bytes",
            s.declared.0, s.served.0
        ),
        SideKind::DigestMismatch => format!(
            "declared sha256 {}, served bytes with {}",
            s.declared.1, s.served.1
        ),
        SideKind::Redirect => "its location answered 302 to another location".to_owned(),
        _ => format!("{} bytes of text served", s.served.0),
    };
    if job.followed_redirect {
        return Err(format!(
            "{what} ({setup}): the provider followed the redirect (§1, §5.5: no redirects)"
        ));
    }
    let want_download_failed = s.kind != SideKind::BadModel;
    match job.terminal().map(|e| &e.kind) {
        None => Err(format!(
            "{what} ({setup}): no job.failed within {waited} s (§5.6: a job that got its \
             input ends)"
        )),
        Some(JobEventKind::Failed { problem, .. }) => {
            if want_download_failed && !problem.is(ProblemType::DownloadFailed) {
                Err(format!(
                    "{what} ({setup}): job.failed with {problem}, expected download-failed \
                     (§5.5: check size and sha256 before using the bytes)"
                ))
            } else if !(400..600).contains(&problem.status) || problem.type_uri.is_empty() {
                Err(format!(
                    "{what} ({setup}): job.failed with an empty problem {problem:?}"
                ))
            } else {
                Ok(format!("{what} ({setup}): job.failed with {problem}"))
            }
        }
        Some(other) => Err(format!(
            "{what} ({setup}): {} instead of job.failed (§5.5: the provider checks size and \
             sha256, downloads without following redirects, and fails a model it cannot use)",
            other.name()
        )),
    }
}

/// `input.repeated-while-running` (§5.5: every `job.input` of an accepted job is the same
/// input of the same job): the second input answered `2xx` or `409`, one download, one end.
fn judge_repeated_while_running(s: &Started, job: &SideJob, waited: u64) -> Result<String, String> {
    let what = s.kind.what();
    if let Err(e) = &s.provider_job {
        return Err(format!("{what}: {e}"));
    }
    let answered = match &s.repeated {
        Some(Ok(a)) => a.clone(),
        Some(Err(e)) => return Err(format!("{what}: {e}")),
        None => return Err(format!("{what}: its input was not sent again")),
    };
    let fetched = job.downloads.iter().filter(|d| d.2 == 200).count();
    let second_run = job
        .violations
        .iter()
        .find(|v| v.contains("after the job was already") || v.contains("after sequence"));
    if fetched > 1 || second_run.is_some() {
        return Err(format!(
            "{what}: the second input (answered {answered}) started a second run: the model \
             fetched {fetched} time(s){}",
            second_run.map_or_else(String::new, |v| format!("; {v}"))
        ));
    }
    match job.terminal().map(|e| &e.kind) {
        Some(JobEventKind::Completed { .. }) => Ok(format!(
            "{what}: the second input answered {answered}; one download, one job.completed"
        )),
        Some(other) => Err(format!("{what}: a valid model ended with {}", other.name())),
        None => Err(format!("{what}: it did not end within {waited} s")),
    }
}

/// The query of a presigned S3 `GET` as an object store signs it (SigV4 query
/// authentication: percent-encoded `/` in the credential scope, a random signature), for a
/// URL the provider must fetch exactly as given.
fn presigned_query() -> String {
    let date = yyyymmdd(unix_now());
    let signature: String = random_token("", 64)
        .bytes()
        .map(|b| char::from(b"0123456789abcdef"[usize::from(b % 16)]))
        .collect();
    format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F{date}%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date={date}T000000Z&X-Amz-Expires={CREDENTIAL_TTL_SECS}&X-Amz-SignedHeaders=host\
         &X-Amz-Signature={signature}",
        random_token("DIAXCONFORMANCE", 5)
    )
}

/// `YYYYMMDD` of a Unix time (UTC).
fn yyyymmdd(unix: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), valid for every date after 1970.
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}")
}

/// `input.presigned` (§5.5): the job completed, its model fetched from the presigned URL as
/// given, with no `Authorization` header.
fn judge_presigned(s: &Started, job: &SideJob, waited: u64) -> Result<String, String> {
    let what = s.kind.what();
    if let Err(e) = &s.provider_job {
        return Err(format!("{what}: {e}"));
    }
    let refused = job.refusals.first().map_or_else(String::new, |r| {
        format!(
            "; its location refused {} request(s): {r}",
            job.refusals.len()
        )
    });
    match job.terminal().map(|e| &e.kind) {
        Some(JobEventKind::Completed { .. }) => Ok(format!(
            "{what}: fetched as given, job.completed{}",
            if job.refusals.is_empty() {
                String::new()
            } else {
                format!(" (after retrying{refused})")
            }
        )),
        Some(other) => Err(format!("{what}: {}{refused}", other.name())),
        None => Err(format!("{what}: it did not end within {waited} s{refused}")),
    }
}

/// `charges.failed-zero`: every side job that failed says it charged zero.
fn judge_failed_zero(pairs: &[(&Started, &SideJob)]) -> Result<String, String> {
    let mut failed = 0;
    for &(s, job) in pairs {
        let Some(ev) = job.terminal() else {
            continue;
        };
        let JobEventKind::Failed { charged, .. } = &ev.kind else {
            continue;
        };
        failed += 1;
        match charged {
            Some(q) if q.amount == 0 => {}
            Some(q) => {
                return Err(format!(
                    "{}: job.failed says {q} was charged; a failed job charges nothing and \
                     releases its hold (§5.6)",
                    s.kind.what()
                ));
            }
            None => {
                return Err(format!(
                    "{}: job.failed carries no charged (§5.6: amount 0 on failure)",
                    s.kind.what()
                ));
            }
        }
    }
    if failed == 0 {
        return Err(
            "not checked: none of the jobs the provider must fail sent job.failed (see \
             input.size-mismatch and the checks after it)"
                .to_owned(),
        );
    }
    Ok(format!("{failed} failed job(s), each says it charged 0"))
}

/// `jobs.parallel`: the parallel job completed; every side job's events kept their own
/// sequence from 1 and their own webhook-ids; provider job ids are distinct.
fn judge_parallel(
    pairs: &[(&Started, &SideJob)],
    main: Option<&JobAccepted>,
    waited: u64,
) -> Result<String, String> {
    let mut pjobs: Vec<String> = main
        .map(|m| m.provider_job_id.to_string())
        .into_iter()
        .collect();
    for &(s, job) in pairs {
        if let Ok(p) = &s.provider_job {
            if pjobs.contains(&p.to_string()) {
                return Err(format!(
                    "{} got provider_job_id {p}, already given to another job",
                    s.kind.what()
                ));
            }
            pjobs.push(p.to_string());
        }
        // A second run's events are the repeated input's doing, judged there.
        if let Some(v) = job
            .violations
            .first()
            .filter(|_| s.kind != SideKind::RepeatedInput)
        {
            return Err(format!(
                "{}: {v} (§5.6: each job has its own sequence from 1; {} jobs ran at once)",
                s.kind.what(),
                pairs.len()
            ));
        }
    }
    let &(parallel, j) = pairs
        .iter()
        .find(|(s, _)| s.kind == SideKind::Parallel)
        .ok_or("no parallel job")?;
    if let Err(e) = &parallel.provider_job {
        return Err(format!("the parallel job: {e}"));
    }
    match j.terminal().map(|e| &e.kind) {
        Some(JobEventKind::Completed { .. }) => {
            let trail: Vec<String> = j
                .events
                .iter()
                .map(|e| format!("{}#{}", e.kind.name(), e.sequence))
                .collect();
            Ok(format!(
                "{} jobs at once, distinct provider_job_ids; the parallel job: {}",
                pairs.len(),
                trail.join(" → ")
            ))
        }
        Some(other) => Err(format!(
            "the parallel job (a valid model) ended with {}",
            other.name()
        )),
        None => Err(format!("the parallel job did not end within {waited} s")),
    }
}
