//! Signed messages from the broker: job offers and job inputs.
//!
//! An offer is accepted in one transaction that holds the quote on the account, creates
//! the job and saves the answer for redeliveries; the broker's job id is unique, so a
//! repeated offer (same job id, or a redelivery of the same message) returns the same job
//! and holds nothing twice. That transaction is shared with other messages arriving at the
//! same time ([`group_commit`](super::group_commit)), and the `202` is sent only once it is
//! committed.

use diax_sdk::wire::{
    InputAccepted, JobAccepted, JobInput, JobOffer, JobState, SERVICE_KIND_MODEL_REPAIR,
};
use diax_sdk::{AccountId, ProviderJobId, Quote};

use super::accounts;
use super::db::{Db, Tx, now_ms, save_response_in, sqlite_error, time_ordered_id};
use super::error::ApiError;
use super::group_commit::{BatchCache, CommitError, Outcome, RecordWork, RecordedOffer, Work};
use super::queue::{self, JobRow, NewJob};
use super::registration::Registration;
use super::{Config, Service};

/// Operations this provider runs.
pub const OPERATIONS: &[&str] = &["repair"];

fn accepted(public_url: &str, job: &JobRow) -> JobAccepted {
    JobAccepted {
        job_id: job.broker_id(),
        provider_job_id: job.id(),
        status_url: status_url_at(public_url, job.provider_job_id.as_str()),
        quote: Some(Quote::new(job.quote_amount, job.currency.clone())),
        state: job.wire_state(),
    }
}

/// `{public}/diax/jobs/{provider_job_id}`.
#[must_use]
pub fn status_url(service: &Service, provider_job_id: &str) -> String {
    status_url_at(service.public_url(), provider_job_id)
}

fn status_url_at(public_url: &str, provider_job_id: &str) -> String {
    format!("{public_url}/diax/jobs/{provider_job_id}")
}

/// The answer to an offer, decided and saved in the transaction: the `202` body with the
/// document it encodes, or a refusal.
pub(crate) type Offered = Result<(JobAccepted, String), ApiError>;

/// A `job.offer` on its way to the intake writer, with what could be decided without the
/// database.
#[derive(Debug)]
pub(crate) struct OfferWork {
    offer: JobOffer,
    message_id: String,
    checked: Result<Checked, Refusal>,
}

#[derive(Debug)]
struct Checked {
    account_id: AccountId,
    quote: Quote,
    provider_job_id: ProviderJobId,
    model_size: i64,
    /// The hold's ledger entry id, made before the offer reaches the writer.
    entry_id: String,
    /// The `202` answer should the offer be accepted as a new job, with the document it
    /// encodes, built before the offer reaches the writer (`None` if it cannot be
    /// encoded: the step-by-step path reports that).
    answer: Option<(JobAccepted, String)>,
}

/// Refusals decided before the database is read (answered only after the repeated-offer
/// check, so a repeated offer gets its job whatever else changed).
#[derive(Debug)]
enum Refusal {
    Unsupported(String),
    ModelTooLarge(String),
    NoAccount,
}

impl Refusal {
    fn to_error(&self, public_url: &str) -> ApiError {
        match self {
            Refusal::Unsupported(m) => ApiError::Unsupported(m.clone()),
            Refusal::ModelTooLarge(m) => ApiError::ModelTooLarge(m.clone()),
            Refusal::NoAccount => ApiError::AccountRequired {
                register_url: format!("{public_url}/v1/accounts"),
            },
        }
    }
}

impl OfferWork {
    /// `offer`, delivered under `message_id`, with the checks that need no database made
    /// against `config`, and the new job's ids and `202` answer (its status URL under
    /// `public_url`) made ready, so that the single intake writer does none of this.
    pub(crate) fn new(
        config: &Config,
        public_url: &str,
        offer: JobOffer,
        message_id: String,
    ) -> Self {
        let checked = check(config, public_url, &offer);
        Self {
            offer,
            message_id,
            checked,
        }
    }
}

impl OfferWork {
    /// What spreads offers over the intake writers: the account the offer would hold
    /// money on (else the broker job).
    pub(crate) fn shard_key(&self) -> &str {
        match &self.offer.user.provider_account {
            Some(account) => account.as_str(),
            None => self.offer.job_id.as_str(),
        }
    }
}

/// A new provider job id, in time order ([`time_ordered_id`]).
fn time_ordered_job_id() -> ProviderJobId {
    let id = time_ordered_id(ProviderJobId::PREFIX);
    // Always valid (prefix, digits and letters); the random id is a fallback never taken.
    ProviderJobId::parse(id).unwrap_or_else(|_| ProviderJobId::generate())
}

fn check(config: &Config, public_url: &str, offer: &JobOffer) -> Result<Checked, Refusal> {
    if offer.service_kind != SERVICE_KIND_MODEL_REPAIR
        || !OPERATIONS.contains(&offer.operation.as_str())
    {
        return Err(Refusal::Unsupported(format!(
            "this provider runs {SERVICE_KIND_MODEL_REPAIR}/repair, not {}/{}",
            offer.service_kind, offer.operation
        )));
    }
    if offer.model.size > config.max_model_bytes {
        return Err(Refusal::ModelTooLarge(format!(
            "the model is {} bytes; this provider accepts at most {}",
            offer.model.size, config.max_model_bytes
        )));
    }
    let Some(account_id) = offer.user.provider_account.clone() else {
        return Err(Refusal::NoAccount);
    };
    let quote = config.pricing.quote(offer.model.size);
    let provider_job_id = time_ordered_job_id();
    let acc = JobAccepted {
        job_id: offer.job_id.clone(),
        status_url: status_url_at(public_url, provider_job_id.as_str()),
        provider_job_id: provider_job_id.clone(),
        quote: Some(quote.clone()),
        state: JobState::Accepted,
    };
    let answer = serde_json::to_string(&acc).ok().map(|body| (acc, body));
    Ok(Checked {
        account_id,
        quote,
        provider_job_id,
        model_size: i64::try_from(offer.model.size).unwrap_or(i64::MAX),
        entry_id: time_ordered_id("led_"),
        answer,
    })
}

/// Handles a verified `job.offer` delivered under `message_id`: the answer is committed
/// (and saved for redeliveries) when this returns.
///
/// # Errors
/// `account-required`, `payment-required`, `unsupported-operation`, `forbidden` (offer for
/// another provider) as [`ApiError`]s; database errors.
pub async fn handle_offer(
    service: &Service,
    offer: JobOffer,
    message_id: &str,
) -> Result<(JobAccepted, String), ApiError> {
    let work = OfferWork::new(
        service.config(),
        service.public_url(),
        offer,
        message_id.to_owned(),
    );
    match service
        .group_commit()
        .submit(Work::Offer(Box::new(work)))
        .await
    {
        Ok(Outcome::Offered(answer)) => answer,
        Ok(_) => Err(ApiError::Internal(
            CommitError::Mismatch("an offer").to_string(),
        )),
        Err(CommitError::Db(e)) => Err(ApiError::Db(e)),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// Handles a `job.offer` whose signature is verified but whose `webhook-id` is not yet
/// recorded: the id is recorded and the offer decided in one group-committed operation
/// (one transaction), so that a signed offer costs the writer one operation, not two.
///
/// # Errors
/// Database errors and a stopped writer (refusals are in [`RecordedOffer::Offered`]).
pub(crate) async fn handle_recorded_offer(
    service: &Service,
    offer: JobOffer,
    record: RecordWork,
) -> Result<RecordedOffer, ApiError> {
    let work = OfferWork::new(
        service.config(),
        service.public_url(),
        offer,
        record.id.clone(),
    );
    match service
        .group_commit()
        .submit(Work::RecordedOffer {
            record,
            offer: Box::new(work),
        })
        .await
    {
        Ok(Outcome::RecordedOffer(outcome)) => Ok(outcome),
        Ok(_) => Err(ApiError::Internal(
            CommitError::Mismatch("a signed offer").to_string(),
        )),
        Err(CommitError::Db(e)) => Err(ApiError::Db(e)),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// Decides `work` in the caller's transaction (the intake writer's): at most one hold, one
/// ledger entry and one job row, and the answer saved under the message id. A refusal
/// writes nothing but its saved answer.
pub(crate) async fn offer_in(
    tx: &mut Tx,
    cache: &mut BatchCache,
    public_url: &str,
    work: &OfferWork,
) -> Result<Offered, sqlx::Error> {
    let offer = &work.offer;
    let Some(reg) = cache.registration(tx).await? else {
        return Ok(Err(ApiError::NotRegistered));
    };
    if offer.provider_id.as_str() != reg.provider_id {
        let forbidden = ApiError::Problem(
            diax_sdk::Problem::new(diax_sdk::ProblemType::Forbidden)
                .with_detail("this offer is addressed to another provider"),
        );
        return refuse(tx, work, forbidden).await;
    }
    // The usual case in one statement batch: a new job whose hold the balance covers.
    if let Ok(c) = &work.checked
        && let Some(accepted) = accept_new(tx, public_url, work, c).await?
    {
        return Ok(accepted);
    }
    // Anything else (nothing was written above): one step at a time.
    // The same broker job offered again: the same answer, whatever else changed.
    if let Some(job) = queue::find_by_broker_job(tx, offer.job_id.as_str()).await? {
        tracing::info!(job = %job.provider_job_id, broker_job = %offer.job_id, "repeated offer: same job");
        return answer(tx, work, accepted(public_url, &job)).await;
    }
    let c = match &work.checked {
        Ok(c) => c,
        Err(refusal) => return refuse(tx, work, refusal.to_error(public_url)).await,
    };
    let account_id = c.account_id.as_str();
    let job_id = c.provider_job_id.as_str();
    if !accounts::hold(tx, account_id, job_id, c.quote.amount, &c.quote.currency).await? {
        // Nothing was held: tell why.
        let error = match accounts::account_in(tx, account_id).await? {
            None => ApiError::AccountRequired {
                register_url: format!("{public_url}/v1/accounts"),
            },
            Some(account) if account.currency != c.quote.currency => {
                return Ok(Err(ApiError::Internal(format!(
                    "account currency {} differs from price currency {}",
                    account.currency, c.quote.currency
                ))));
            }
            Some(account) => ApiError::PaymentRequired {
                top_up_url: format!("{public_url}/v1/accounts/me/top-up"),
                quote: c.quote.clone(),
                balance: account.balance,
            },
        };
        return refuse(tx, work, error).await;
    }
    queue::insert(
        tx,
        &NewJob {
            provider_job_id: job_id,
            broker_job_id: offer.job_id.as_str(),
            offer_message_id: &work.message_id,
            account_id,
            broker_user_id: offer.user.broker_user_id.as_str(),
            events_url: &offer.events_url,
            operation: &offer.operation,
            model_name: &offer.model.name,
            model_size: c.model_size,
            model_sha256: &offer.model.sha256,
            quote_amount: c.quote.amount,
            currency: &c.quote.currency,
            now: now_ms(),
        },
    )
    .await?;
    tracing::info!(job = %job_id, broker_job = %offer.job_id, account = %account_id, amount = c.quote.amount, "offer accepted; quote held");
    let acc = JobAccepted {
        job_id: offer.job_id.clone(),
        provider_job_id: c.provider_job_id.clone(),
        status_url: status_url_at(public_url, job_id),
        quote: Some(c.quote.clone()),
        state: JobState::Accepted,
    };
    answer(tx, work, acc).await
}

/// A new signed offer's values for the one-call path, all made before the writer took it.
struct NewOffer<'a> {
    work: &'a OfferWork,
    c: &'a Checked,
    record: &'a RecordWork,
    acc: &'a JobAccepted,
    body: &'a str,
}

/// Signed offers' usual case, for a run of them in one call to the database: each offer's
/// `webhook-id` is new, its broker job is new, it is for this provider and the balance
/// covers its hold. Then its hold, ledger entry, job row and replay record (with the saved
/// `202`) are written together, all or none.
///
/// The offers are taken in order, each seeing the writes of those before it, and the run
/// stops at the first one not accepted that way (the id seen before, even expired; a
/// repeated job; any refusal), with nothing written for it. The answers returned are those
/// of the accepted prefix; the caller decides the offer after it step by step
/// ([`group_commit`](super::group_commit)) and then calls this again for the rest, so a
/// batch is decided exactly as one offer at a time would decide it.
///
/// Everything that needs no database (the ids, the answer and its JSON) was made when the
/// offer was queued ([`OfferWork::new`]), so the writer only writes.
///
/// SQLite: the whole run is one call on the connection's thread (its statements prepared
/// once per run; the registration read in the same call when the batch has not read it
/// yet), not one channel round trip per statement. PostgreSQL: one round trip (the
/// `fmp_accept_offer_run` function of the migrations, over arrays, with a fixed number of
/// statements per run).
pub(crate) async fn accept_recorded_run(
    tx: &mut Tx,
    cache: &mut BatchCache,
    run: &[(&RecordWork, &OfferWork)],
) -> Result<Vec<(JobAccepted, String)>, sqlx::Error> {
    let candidates = new_offers(run);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let accepted = match tx {
        Tx::Sqlite(t) => {
            t.run_on_handle(|conn| run_statements_sqlite(conn, cache, candidates, now))
                .await?
        }
        Tx::Postgres(t) => accept_run_postgres(&mut *t, candidates, now).await?,
    };
    Ok(answers(accepted))
}

/// [`accept_recorded_run`] in a transaction of its own, committed when this returns. The
/// intake writer decides a batch's leading run this way ([`group_commit`](super::group_commit));
/// what the run leaves is decided in a transaction after it, in order. On an error nothing
/// was written.
///
/// PostgreSQL: the call is sent outside any transaction and commits itself, so the run
/// costs one round trip (no `BEGIN`, no `COMMIT`). SQLite: `BEGIN IMMEDIATE`, the run and
/// `COMMIT` in the one call on the writer connection's handle, so the run costs one
/// hand-off to sqlx's thread for that connection instead of three.
pub(crate) async fn accept_recorded_run_alone(
    db: &Db,
    run: &[(&RecordWork, &OfferWork)],
) -> Result<Vec<(JobAccepted, String)>, sqlx::Error> {
    let candidates = new_offers(run);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let accepted = match db {
        Db::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            accept_run_postgres(&mut conn, candidates, now_ms()).await?
        }
        Db::Sqlite(sqlite) => {
            let now = now_ms();
            let mut writer = sqlite.writer().await?;
            writer
                .run_on_handle(|conn| accept_run_sqlite(conn, candidates, now))
                .await?
        }
    };
    Ok(answers(accepted))
}

/// The leading offers of `run` whose answer is ready (those after the first that is not are
/// the step-by-step path's: it reports them); which of these are for this provider is known
/// once the registration is read.
fn new_offers<'a>(run: &[(&'a RecordWork, &'a OfferWork)]) -> Vec<NewOffer<'a>> {
    run.iter()
        .map_while(|&(record, work)| {
            let c = work.checked.as_ref().ok()?;
            let (acc, body) = c.answer.as_ref()?;
            Some(NewOffer {
                work,
                c,
                record,
                acc,
                body,
            })
        })
        .collect()
}

/// The answers of accepted offers (each logged).
fn answers(accepted: Vec<NewOffer<'_>>) -> Vec<(JobAccepted, String)> {
    accepted
        .into_iter()
        .map(|n| {
            tracing::info!(job = %n.c.provider_job_id, broker_job = %n.work.offer.job_id, account = %n.c.account_id, amount = n.c.quote.amount, "offer accepted; quote held");
            (n.acc.clone(), n.body.to_owned())
        })
        .collect()
}

/// The leading offers of `candidates` addressed to this provider (none if it is not
/// registered).
fn for_provider<'a>(
    reg: Option<&Registration>,
    mut candidates: Vec<NewOffer<'a>>,
) -> Vec<NewOffer<'a>> {
    let n = candidates
        .iter()
        .take_while(|n| reg.is_some_and(|r| r.provider_id == n.work.offer.provider_id.as_str()))
        .count();
    candidates.truncate(n);
    candidates
}

/// This provider's registration read on SQLite through rusqlite (the columns of
/// [`registration::registration_in`](super::registration::registration_in)).
const REGISTRATION_SQLITE: &str = "SELECT provider_id, broker_id, broker_url, events_url, \
    secret_scope FROM registration WHERE id = 1";

/// The hold of [`accept_run_sqlite`]: a row only when the balance covers it and the broker
/// job and the `webhook-id` are new.
const HOLD_SQLITE: &str = "\
UPDATE accounts SET balance = balance - ?1, held = held + ?1
 WHERE account_id = ?2 AND balance >= ?1 AND currency = ?3
   AND NOT EXISTS (SELECT 1 FROM jobs WHERE broker_job_id = ?4)
   AND NOT EXISTS (SELECT 1 FROM replay WHERE message_id = ?5)
 RETURNING balance, held";

const LEDGER_SQLITE: &str = "\
INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                    provider_job_id, created_at)
 VALUES (?1, ?2, 'hold', ?3, ?4, ?5, ?6, ?7)";

const JOB_SQLITE: &str = "\
INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                  broker_user_id, events_url, operation, model_name, model_size,
                  model_sha256, quote_amount, currency, state, created_at, updated_at)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)";

const REPLAY_SQLITE: &str = "\
INSERT INTO replay (message_id, digest, expires_at, response_status, response_body,
                    response_location)
 VALUES (?1, ?2, ?3, 202, ?4, ?5)";

/// [`accept_recorded_run_alone`] on SQLite, on the caller's thread while sqlx's worker
/// thread for the writer connection is locked out: `BEGIN IMMEDIATE`, the registration,
/// four prepared statements per offer and `COMMIT`, no hand-off between threads. Returns
/// the accepted offers (a prefix of those addressed to this provider); on an error
/// nothing of the run stays.
fn accept_run_sqlite<'a>(
    conn: &rusqlite::Connection,
    candidates: Vec<NewOffer<'a>>,
    now: i64,
) -> Result<Vec<NewOffer<'a>>, sqlx::Error> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(sqlite_error)?;
    let mut cache = BatchCache::default();
    let done = run_statements_sqlite(conn, &mut cache, candidates, now).and_then(|accepted| {
        conn.execute_batch("COMMIT")
            .map(|()| accepted)
            .map_err(sqlite_error)
    });
    if done.is_err() {
        // Nothing of the run stays (the error is the one reported).
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// The run's statements on `conn`, in the transaction open on it (prepared once per
/// connection: [`super::db::WriterStatements`]).
fn run_statements_sqlite<'a>(
    conn: &rusqlite::Connection,
    cache: &mut BatchCache,
    candidates: Vec<NewOffer<'a>>,
    now: i64,
) -> Result<Vec<NewOffer<'a>>, sqlx::Error> {
    use rusqlite::{OptionalExtension as _, params};
    if cache.known_registration().is_none() {
        let reg = conn
            .prepare_cached(REGISTRATION_SQLITE)
            .and_then(|mut registration| {
                registration
                    .query_row([], |row| {
                        Ok(Registration {
                            provider_id: row.get(0)?,
                            broker_id: row.get(1)?,
                            broker_url: row.get(2)?,
                            events_url: row.get(3)?,
                            secret_scope: row.get(4)?,
                        })
                    })
                    .optional()
            })
            .map_err(sqlite_error)?;
        cache.remember_registration(reg);
    }
    let mut ready = for_provider(cache.known_registration().flatten(), candidates);
    let mut accepted = 0;
    if !ready.is_empty() {
        let mut hold = conn.prepare_cached(HOLD_SQLITE).map_err(sqlite_error)?;
        let mut ledger = conn.prepare_cached(LEDGER_SQLITE).map_err(sqlite_error)?;
        let mut job = conn.prepare_cached(JOB_SQLITE).map_err(sqlite_error)?;
        let mut replay = conn.prepare_cached(REPLAY_SQLITE).map_err(sqlite_error)?;
        for n in &ready {
            let (offer, c, r) = (&n.work.offer, n.c, n.record);
            let amount = c.quote.amount;
            let account = c.account_id.as_str();
            let provider_job = c.provider_job_id.as_str();
            // UPDATE … RETURNING makes its change at the first step.
            let Some((balance, held)) = hold
                .query_row(
                    params![
                        amount,
                        account,
                        c.quote.currency.as_str(),
                        offer.job_id.as_str(),
                        r.id.as_str()
                    ],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(sqlite_error)?
            else {
                break;
            };
            ledger
                .execute(params![
                    c.entry_id.as_str(),
                    account,
                    amount,
                    balance,
                    held,
                    provider_job,
                    now
                ])
                .map_err(sqlite_error)?;
            job.execute(params![
                provider_job,
                offer.job_id.as_str(),
                n.work.message_id.as_str(),
                account,
                offer.user.broker_user_id.as_str(),
                offer.events_url.as_str(),
                offer.operation.as_str(),
                offer.model.name.as_str(),
                c.model_size,
                offer.model.sha256.as_str(),
                amount,
                c.quote.currency.as_str(),
                queue::JobPhase::Accepted.as_str(),
                now
            ])
            .map_err(sqlite_error)?;
            replay
                .execute(params![
                    r.id.as_str(),
                    r.digest.as_str(),
                    r.expires_at,
                    n.body,
                    n.acc.status_url.as_str()
                ])
                .map_err(sqlite_error)?;
            accepted += 1;
        }
    }
    ready.truncate(accepted);
    Ok(ready)
}

/// [`accept_recorded_run`] on PostgreSQL: one call of `fmp_accept_offer_run` (migration
/// `0007`), which decides the run and writes its accepted prefix with a fixed number of
/// statements, whatever the run's length. `conn` may be in a transaction or not: on its
/// own the call is one round trip that commits itself. Returns the accepted offers.
///
/// The function takes a run in which no broker job id or `webhook-id` repeats, all in one
/// currency, no amount negative: the run is cut here before the first offer that breaks
/// this (the step-by-step path decides it), so the outcome is the one-at-a-time one.
async fn accept_run_postgres<'a>(
    conn: &mut sqlx::PgConnection,
    mut candidates: Vec<NewOffer<'a>>,
    now: i64,
) -> Result<Vec<NewOffer<'a>>, sqlx::Error> {
    use std::collections::HashSet;

    let Some(first) = candidates.first() else {
        return Ok(candidates);
    };
    let currency = first.c.quote.currency.as_str();
    let mut jobs = HashSet::with_capacity(candidates.len());
    let mut ids = HashSet::with_capacity(candidates.len());
    let usable = candidates
        .iter()
        .take_while(|n| {
            n.c.quote.amount >= 0
                && n.c.quote.currency == currency
                && jobs.insert(n.work.offer.job_id.as_str())
                && ids.insert(n.record.id.as_str())
        })
        .count();
    candidates.truncate(usable);
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let mut account_keys: Vec<&str> = candidates.iter().map(|n| n.c.account_id.as_str()).collect();
    account_keys.sort_unstable();
    account_keys.dedup();
    let account_of: Vec<i32> = candidates
        .iter()
        .map(|n| {
            let k = account_keys
                .binary_search(&n.c.account_id.as_str())
                .unwrap_or(0);
            i32::try_from(k + 1).unwrap_or(i32::MAX)
        })
        .collect();
    macro_rules! column {
        (|$n:ident| $e:expr) => {
            candidates.iter().map(|$n| $e).collect::<Vec<_>>()
        };
    }
    let accepted: i32 = sqlx::query_scalar(
        "SELECT fmp_accept_offer_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                                     $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(column!(|n| n.work.offer.provider_id.as_str()))
    .bind(&account_keys)
    .bind(&account_of)
    .bind(column!(|n| n.c.account_id.as_str()))
    .bind(column!(|n| n.c.quote.amount))
    .bind(currency)
    .bind(column!(|n| n.work.offer.job_id.as_str()))
    .bind(column!(|n| n.record.id.as_str()))
    .bind(column!(|n| n.c.provider_job_id.as_str()))
    .bind(column!(|n| n.c.entry_id.as_str()))
    .bind(column!(|n| n.work.offer.user.broker_user_id.as_str()))
    .bind(column!(|n| n.work.offer.events_url.as_str()))
    .bind(column!(|n| n.work.offer.operation.as_str()))
    .bind(column!(|n| n.work.offer.model.name.as_str()))
    .bind(column!(|n| n.c.model_size))
    .bind(column!(|n| n.work.offer.model.sha256.as_str()))
    .bind(column!(|n| n.record.digest.as_str()))
    .bind(column!(|n| n.record.expires_at))
    .bind(column!(|n| n.body))
    .bind(column!(|n| n.acc.status_url.as_str()))
    .bind(now)
    .bind(queue::JobPhase::Accepted.as_str())
    .fetch_one(conn)
    .await?;
    candidates.truncate(usize::try_from(accepted).unwrap_or(0));
    Ok(candidates)
}

/// SQLite: the hold, its ledger entry, the job row and the saved answer as one compound
/// statement, run in one call on the connection's thread. Each step after the first runs only
/// if the one before it changed a row (`changes()`), so the whole is all or nothing; it
/// returns the hold's row and the job's row, or no row at all.
const ACCEPT_NEW_SQLITE: &str = "\
UPDATE accounts SET balance = balance - $1, held = held + $1
 WHERE account_id = $2 AND balance >= $1 AND currency = $3
   AND NOT EXISTS (SELECT 1 FROM jobs WHERE broker_job_id = $4)
 RETURNING balance, held;
INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                    provider_job_id, created_at)
 SELECT $6, account_id, 'hold', $1, balance, held, $5, $7
   FROM accounts WHERE account_id = $2 AND changes() = 1;
INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                  broker_user_id, events_url, operation, model_name, model_size,
                  model_sha256, quote_amount, currency, state, created_at, updated_at)
 SELECT $5, $4, $8, $2, $9, $10, $11, $12, $13, $14, $1, $3, $15, $7, $7
  WHERE changes() = 1
 RETURNING provider_job_id;
UPDATE replay SET response_status = 202, response_body = $16, response_location = $17
 WHERE message_id = $8 AND response_status IS NULL
   AND EXISTS (SELECT 1 FROM jobs WHERE provider_job_id = $5)";

/// PostgreSQL: the same as one statement (one round trip): every part hangs on the hold's
/// `RETURNING` row, so all of it happens or none.
const ACCEPT_NEW_POSTGRES: &str = "\
WITH acct AS (
  UPDATE accounts SET balance = balance - $1, held = held + $1
   WHERE account_id = $2 AND balance >= $1 AND currency = $3
     AND NOT EXISTS (SELECT 1 FROM jobs WHERE broker_job_id = $4)
   RETURNING account_id, balance, held),
led AS (
  INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                      provider_job_id, created_at)
  SELECT $6, account_id, 'hold', $1, balance, held, $5, $7 FROM acct),
job AS (
  INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                    broker_user_id, events_url, operation, model_name, model_size,
                    model_sha256, quote_amount, currency, state, created_at, updated_at)
  SELECT $5, $4, $8, $2, $9, $10, $11, $12, $13, $14, $1, $3, $15, $7, $7 FROM acct),
rep AS (
  UPDATE replay SET response_status = 202, response_body = $16, response_location = $17
   WHERE message_id = $8 AND response_status IS NULL AND EXISTS (SELECT 1 FROM acct))
SELECT balance, held FROM acct";

/// Accepts a new offer whose hold the balance covers, in one statement batch (one call to
/// the database instead of five): the hold, its ledger entry, the job row and the saved
/// `202`. `None` (and nothing written) when the broker job exists already or the hold is
/// refused (no such account, another currency, too low a balance): the caller then takes
/// the step-by-step path, which tells these cases apart.
async fn accept_new(
    tx: &mut Tx,
    public_url: &str,
    work: &OfferWork,
    c: &Checked,
) -> Result<Option<Offered>, sqlx::Error> {
    let offer = &work.offer;
    let job_id = c.provider_job_id.as_str();
    let acc = JobAccepted {
        job_id: offer.job_id.clone(),
        provider_job_id: c.provider_job_id.clone(),
        status_url: status_url_at(public_url, job_id),
        quote: Some(c.quote.clone()),
        state: JobState::Accepted,
    };
    let body = match serde_json::to_string(&acc) {
        Ok(b) => b,
        Err(e) => return Ok(Some(Err(ApiError::Internal(e.to_string())))),
    };
    let entry_id = &c.entry_id;
    let now = now_ms();
    macro_rules! bound {
        ($sql:expr) => {
            sqlx::query($sql)
                .bind(c.quote.amount)
                .bind(c.account_id.as_str())
                .bind(c.quote.currency.as_str())
                .bind(offer.job_id.as_str())
                .bind(job_id)
                .bind(entry_id.as_str())
                .bind(now)
                .bind(work.message_id.as_str())
                .bind(offer.user.broker_user_id.as_str())
                .bind(offer.events_url.as_str())
                .bind(offer.operation.as_str())
                .bind(offer.model.name.as_str())
                .bind(c.model_size)
                .bind(offer.model.sha256.as_str())
                .bind(queue::JobPhase::Accepted.as_str())
                .bind(body.as_str())
                .bind(acc.status_url.as_str())
        };
    }
    let accepted = match tx {
        Tx::Sqlite(t) => match bound!(ACCEPT_NEW_SQLITE).fetch_all(&mut **t).await?.len() {
            0 => false,
            2 => true,
            n => {
                // Never expected: fail the transaction rather than keep half of it.
                return Err(sqlx::Error::Protocol(format!(
                    "accepting an offer returned {n} rows instead of 0 or 2"
                )));
            }
        },
        Tx::Postgres(t) => bound!(ACCEPT_NEW_POSTGRES)
            .fetch_optional(&mut **t)
            .await?
            .is_some(),
    };
    if !accepted {
        return Ok(None);
    }
    tracing::info!(job = %job_id, broker_job = %offer.job_id, account = %c.account_id, amount = c.quote.amount, "offer accepted; quote held");
    Ok(Some(Ok((acc, body))))
}

/// The answer to an offer whose job another instance inserted first (the job row's unique
/// broker job id): that job.
pub(crate) async fn offer_repeated(
    tx: &mut Tx,
    public_url: &str,
    work: &OfferWork,
) -> Result<Offered, sqlx::Error> {
    match queue::find_by_broker_job(tx, work.offer.job_id.as_str()).await? {
        Some(job) => answer(tx, work, accepted(public_url, &job)).await,
        None => Ok(Err(ApiError::Internal(
            "job vanished after a conflict".into(),
        ))),
    }
}

async fn answer(tx: &mut Tx, work: &OfferWork, acc: JobAccepted) -> Result<Offered, sqlx::Error> {
    let body = match serde_json::to_string(&acc) {
        Ok(b) => b,
        Err(e) => return Ok(Err(ApiError::Internal(e.to_string()))),
    };
    save_response_in(tx, &work.message_id, 202, &body, Some(&acc.status_url)).await?;
    Ok(Ok((acc, body)))
}

/// Saves a 4xx refusal for redeliveries (a 5xx is not saved: a redelivery tries again).
async fn refuse(tx: &mut Tx, work: &OfferWork, error: ApiError) -> Result<Offered, sqlx::Error> {
    let problem = error.to_problem();
    if (400..500).contains(&problem.status) {
        let body = String::from_utf8_lossy(&problem.to_json()).into_owned();
        save_response_in(tx, &work.message_id, i64::from(problem.status), &body, None).await?;
    }
    Ok(Err(error))
}

/// Handles a verified `job.input`: stores the download so a worker can claim the job.
///
/// # Errors
/// `not-found` for an unknown job (or one of another broker job), database errors.
pub async fn handle_input(service: &Service, input: &JobInput) -> Result<InputAccepted, ApiError> {
    let db = service.db();
    let download =
        serde_json::to_string(&input.download).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut tx = db.begin().await?;
    let job = queue::find(&mut tx, input.provider_job_id.as_str())
        .await?
        .filter(|j| j.broker_job_id == input.job_id)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no job {} for broker job {}",
                input.provider_job_id, input.job_id
            ))
        })?;
    let state = job.wire_state();
    if !state.is_terminal() && job.input_json.as_deref() != Some(download.as_str()) {
        // New or refreshed credentials (a re-sent input): the next claim uses them.
        queue::set_input(&mut tx, job.provider_job_id.as_str(), &download).await?;
    }
    tx.commit().await?;
    if state == JobState::Accepted {
        service.wake_workers();
    }
    tracing::info!(job = %job.provider_job_id, "input received");
    Ok(InputAccepted {
        job_id: job.broker_id(),
        provider_job_id: job.id(),
        state,
    })
}
