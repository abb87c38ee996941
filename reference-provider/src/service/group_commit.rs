//! Group commit for the intake path: many signed messages' writes in one transaction.
//!
//! Every signed message from the broker writes twice: its `webhook-id` in the replay table
//! (when the signature is checked) and, for a `job.offer`, the hold, the ledger entry, the
//! job row and the saved answer (one transaction). Committing each on its own costs one
//! commit (one `fsync` on SQLite, one WAL flush on PostgreSQL) per write, and on SQLite
//! every write waits for the single writer lock.
//!
//! Instead, the handlers hand their writes to one writer task ([`GroupCommit`]) through a
//! bounded channel. The writer takes whatever has queued up (at most [`MAX_BATCH`]
//! operations: no waiting window, a batch is simply what arrived while the previous one
//! committed), applies them in order in **one transaction**, commits, and only then answers
//! each caller. So an answer (a `202` above all) is never given for a write that is not
//! committed, and a crash before the commit loses only writes nobody was answered for.
//!
//! A signed offer is one operation: its `webhook-id` is recorded and the offer decided in
//! the same transaction. In the usual case (a new id, a new broker job, a balance that
//! covers the hold) a whole run of consecutive signed offers in a batch is decided in one
//! call to the database (`intake::accept_recorded_run`: on SQLite one call on the
//! connection's thread, on PostgreSQL one round trip); the run stops at the first offer
//! that needs more, which is decided step by step before the next run starts, so the
//! outcome is the one of deciding the offers one at a time, in order. A batch's *leading*
//! run goes first, in a transaction of its own made by that one call
//! (`intake::accept_recorded_run_alone`: on PostgreSQL no `BEGIN` or `COMMIT` round trip,
//! on SQLite no hand-off to sqlx's thread for them); its offers are answered once it is
//! committed, and the rest of the batch follows in the batch's transaction. On PostgreSQL
//! several writers ([`GroupCommit::start_writers`]) can commit at once, each its own batches;
//! an offer goes to the writer of its account, so one account's offers are decided in the
//! order they came and two writers never wait for each other's account rows. SQLite has
//! one writer connection ([`super::db::SqliteDb`]) and so one writer task.
//!
//! Operations never fail each other: a refusal (unknown account, balance too low, a
//! repeated offer) is an answer, not an error, and writes nothing. Should a statement fail
//! (a database error, or a unique violation when another instance sharing the PostgreSQL
//! database inserted the same broker job a moment earlier), the batch is rolled back and
//! each of its operations is run again in a transaction of its own, so that only the
//! failing one sees its error. Operations later in a batch see the writes of earlier ones
//! (the same transaction): the same offer twice in one batch is one job, and two offers
//! for one account take their holds one after the other.

use std::sync::Arc;

use diax_sdk::{Delivery, ReplayError};
use tokio::sync::{mpsc, oneshot};

use super::db::{Db, SavedResponse, Tx, is_unique_violation};
use super::intake::{self, OfferWork, Offered};
use super::registration::{self, Registration};

/// Most operations committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// Operations that may wait for the writer; callers beyond this wait for room (the queue
/// is bounded like every resource a stranger can grow).
pub const QUEUE_DEPTH: usize = 4096;

/// A handle to the writer tasks; cheap to clone. The tasks end when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queues: Arc<[mpsc::Sender<Op>]>,
}

/// Errors of a group-committed operation.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The database failed (the operation's own transaction, after the batch's).
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The writer task is gone (the service is shutting down).
    #[error("the intake writer has stopped")]
    Stopped,
    /// The writer answered an operation with another operation's outcome (a bug).
    #[error("the intake writer answered {0} with another kind of outcome")]
    Mismatch(&'static str),
}

#[derive(Debug)]
pub(crate) enum Work {
    /// Remember a `webhook-id` (see [`super::db::DbReplayStore`]).
    Record {
        id: String,
        digest: String,
        expires_at: i64,
        now: i64,
    },
    /// Save the answer given to a message id.
    SaveResponse {
        message_id: String,
        status: i64,
        body: String,
        location: Option<String>,
    },
    /// Accept or refuse a `job.offer` (and save the answer).
    Offer(Box<OfferWork>),
    /// Remember a `job.offer`'s `webhook-id` and, unless it is a replay, accept or refuse
    /// the offer, in the same transaction: one operation for a whole signed offer.
    RecordedOffer {
        record: RecordWork,
        offer: Box<OfferWork>,
    },
}

/// A `webhook-id` to remember (see [`super::db::DbReplayStore`]).
#[derive(Debug)]
pub(crate) struct RecordWork {
    pub(crate) id: String,
    pub(crate) digest: String,
    pub(crate) expires_at: i64,
    pub(crate) now: i64,
}

/// What became of a [`Work::RecordedOffer`].
#[derive(Debug)]
pub(crate) enum RecordedOffer {
    /// The id was seen before with another body: nothing else was done.
    Replayed(ReplayError),
    /// A redelivery of a message answered before: that answer.
    Saved(SavedResponse),
    /// The offer was decided (first delivery, or a redelivery whose first delivery had
    /// not finished).
    Offered(Offered),
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Recorded(Result<Delivery, ReplayError>),
    Saved,
    Offered(Offered),
    RecordedOffer(RecordedOffer),
}

#[derive(Debug)]
struct Op {
    work: Work,
    reply: oneshot::Sender<Result<Outcome, CommitError>>,
}

/// What operations in one transaction share: the registration, read at most once.
#[derive(Default)]
pub(crate) struct BatchCache {
    registration: Option<Option<Registration>>,
}

impl BatchCache {
    /// The registration if this transaction read it already.
    pub(crate) fn known_registration(&self) -> Option<Option<&Registration>> {
        self.registration.as_ref().map(Option::as_ref)
    }

    /// Remembers the registration read in this transaction by other means.
    pub(crate) fn remember_registration(&mut self, r: Option<Registration>) {
        self.registration = Some(r);
    }

    /// This provider's registration, read once per transaction.
    pub(crate) async fn registration(
        &mut self,
        tx: &mut Tx,
    ) -> Result<Option<Registration>, sqlx::Error> {
        if let Some(r) = &self.registration {
            return Ok(r.clone());
        }
        let r = registration::registration_in(tx).await?;
        self.registration = Some(r.clone());
        Ok(r)
    }
}

impl GroupCommit {
    /// Starts one writer task over `db`; `public_url` is the service's base URL (for the
    /// status and top-up URLs in answers). Needs a Tokio runtime.
    #[must_use]
    pub fn start(db: Db, public_url: String) -> Self {
        Self::start_writers(db, public_url, 1)
    }

    /// Starts `writers` writer tasks over `db` (at least one; SQLite always gets one, as
    /// it has one writer connection). Each writer commits its own batches, so on
    /// PostgreSQL several transactions are in flight at once. Operations are spread by
    /// account (an offer) or message id (anything else): two offers for one account go
    /// to one writer, in the order they came, and two writers never lock one account.
    #[must_use]
    pub fn start_writers(db: Db, public_url: String, writers: usize) -> Self {
        let writers = if db.is_postgres() { writers.max(1) } else { 1 };
        let queues = (0..writers)
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE_DEPTH / writers);
                tokio::spawn(writer(db.clone(), public_url.clone(), rx));
                queue
            })
            .collect();
        Self { queues }
    }

    /// Queues `work` and waits until it is committed (or refused, or failed).
    pub(crate) async fn submit(&self, work: Work) -> Result<Outcome, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queues[self.writer_of(&work)]
            .send(Op { work, reply })
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }

    /// The writer `work` goes to.
    fn writer_of(&self, work: &Work) -> usize {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        if self.queues.len() == 1 {
            return 0;
        }
        let key = match work {
            Work::Offer(offer) | Work::RecordedOffer { offer, .. } => offer.shard_key(),
            Work::Record { id, .. } => id,
            Work::SaveResponse { message_id, .. } => message_id,
        };
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        // The remainder is below the writer count, which is a `usize`.
        usize::try_from(hash % self.queues.len() as u64).unwrap_or(0)
    }
}

async fn writer(db: Db, public_url: String, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit_batch(&db, &public_url, &mut batch).await;
        batch.clear();
    }
}

async fn commit_batch(db: &Db, public_url: &str, batch: &mut Vec<Op>) {
    // Callers that gave up (their request was dropped) need no write.
    batch.retain(|op| !op.reply.is_closed());
    let ended_run = leading_run_alone(db, batch).await;
    if batch.is_empty() {
        return;
    }
    if batch.len() > 1 {
        match together(db, public_url, batch, ended_run).await {
            Ok(outcomes) => {
                for (op, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = op.reply.send(Ok(outcome));
                }
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, operations = batch.len(),
                    "group commit failed; running its operations one by one");
            }
        }
    }
    for (i, op) in batch.drain(..).enumerate() {
        let outcome = alone(db, public_url, &op.work, ended_run && i == 0).await;
        let _ = op.reply.send(outcome.map_err(CommitError::Db));
    }
}

/// The batch's leading run of signed offers decided in a transaction of its own, in one
/// call (PostgreSQL: one round trip that commits itself; SQLite: one call on the writer
/// connection's handle; see [`intake::accept_recorded_run_alone`]). The accepted offers
/// are answered and leave `batch`; the rest (from the offer that ended the run) stays, in
/// order, for the batch's transaction. On an error nothing was written, and the whole
/// batch stays.
///
/// Returns whether the first operation left in `batch` is a signed offer that ended the
/// run: the one-call path turned it down just now, so it goes straight to the
/// step-by-step path (not through a second call that would turn it down again).
async fn leading_run_alone(db: &Db, batch: &mut Vec<Op>) -> bool {
    let run: Vec<(&RecordWork, &OfferWork)> = batch
        .iter()
        .map_while(|op| match &op.work {
            Work::RecordedOffer { record, offer } => Some((record, &**offer)),
            _ => None,
        })
        .collect();
    if run.is_empty() {
        return false;
    }
    let accepted = match intake::accept_recorded_run_alone(db, &run).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::info!(error = %e, offers = run.len(),
                "a run of offers failed on its own; deciding it in the batch's transaction");
            return false;
        }
    };
    let n = accepted.len();
    let ended_run = n < run.len();
    drop(run);
    for (op, acc) in batch.drain(..n).zip(accepted) {
        let outcome = Outcome::RecordedOffer(RecordedOffer::Offered(Ok(acc)));
        let _ = op.reply.send(Ok(outcome));
    }
    ended_run
}

/// `batch` in one transaction. `ended_run`: its first operation is a signed offer that the
/// one-call path turned down just now ([`leading_run_alone`]), decided step by step.
async fn together(
    db: &Db,
    public_url: &str,
    batch: &[Op],
    ended_run: bool,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut cache = BatchCache::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rest = batch;
    let mut steps_first = ended_run;
    while let Some(first) = rest.first() {
        if std::mem::take(&mut steps_first)
            && let Work::RecordedOffer { record, offer } = &first.work
        {
            let outcome = recorded_offer_steps(&mut tx, &mut cache, public_url, record, offer);
            outcomes.push(Outcome::RecordedOffer(outcome.await?));
            rest = &rest[1..];
            continue;
        }
        // A run of signed offers: the usual case of all of them in one call.
        let run: Vec<(&RecordWork, &OfferWork)> = rest
            .iter()
            .map_while(|op| match &op.work {
                Work::RecordedOffer { record, offer } => Some((record, &**offer)),
                _ => None,
            })
            .collect();
        if run.is_empty() {
            outcomes.push(apply(&mut tx, &mut cache, public_url, &first.work).await?);
            rest = &rest[1..];
            continue;
        }
        let accepted = intake::accept_recorded_run(&mut tx, &mut cache, &run).await?;
        let n = accepted.len();
        outcomes.extend(
            accepted
                .into_iter()
                .map(|o| Outcome::RecordedOffer(RecordedOffer::Offered(Ok(o)))),
        );
        rest = &rest[n..];
        // The offer that ended the run, step by step (then the rest, in a new run).
        if let Some(&(record, offer)) = run.get(n) {
            let outcome = recorded_offer_steps(&mut tx, &mut cache, public_url, record, offer);
            outcomes.push(Outcome::RecordedOffer(outcome.await?));
            rest = &rest[1..];
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// `work` in a transaction of its own. `ended_run` as for [`together`].
async fn alone(
    db: &Db,
    public_url: &str,
    work: &Work,
    ended_run: bool,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut cache = BatchCache::default();
    let applied = match work {
        Work::RecordedOffer { record, offer } if ended_run => {
            recorded_offer_steps(&mut tx, &mut cache, public_url, record, offer)
                .await
                .map(Outcome::RecordedOffer)
        }
        _ => apply(&mut tx, &mut cache, public_url, work).await,
    };
    match applied {
        Ok(outcome) => {
            tx.commit().await?;
            Ok(outcome)
        }
        Err(e) => match work {
            Work::Offer(offer) if is_unique_violation(&e) => {
                // Another instance inserted this broker job first: answer with its job.
                tx.rollback().await?;
                let mut tx = db.begin().await?;
                let outcome = intake::offer_repeated(&mut tx, public_url, offer).await?;
                tx.commit().await?;
                Ok(Outcome::Offered(outcome))
            }
            Work::RecordedOffer { record, offer } if is_unique_violation(&e) => {
                // The same, with the id recorded again (the rollback undid it).
                tx.rollback().await?;
                let mut tx = db.begin().await?;
                let outcome = match record_in(&mut tx, record).await? {
                    Err(replayed) => RecordedOffer::Replayed(replayed),
                    Ok(_) => RecordedOffer::Offered(
                        intake::offer_repeated(&mut tx, public_url, offer).await?,
                    ),
                };
                tx.commit().await?;
                Ok(Outcome::RecordedOffer(outcome))
            }
            _ => Err(e),
        },
    }
}

async fn apply(
    tx: &mut Tx,
    cache: &mut BatchCache,
    public_url: &str,
    work: &Work,
) -> Result<Outcome, sqlx::Error> {
    Ok(match work {
        Work::Record {
            id,
            digest,
            expires_at,
            now,
        } => Outcome::Recorded(super::db::record_in(tx, id, digest, *expires_at, *now).await?),
        Work::SaveResponse {
            message_id,
            status,
            body,
            location,
        } => {
            super::db::save_response_in(tx, message_id, *status, body, location.as_deref()).await?;
            Outcome::Saved
        }
        Work::Offer(offer) => {
            Outcome::Offered(intake::offer_in(tx, cache, public_url, offer).await?)
        }
        Work::RecordedOffer { record, offer } => {
            // The usual case (a new id, a new job, a hold the balance covers): one call.
            let run = [(record, &**offer)];
            if let Some(offered) = intake::accept_recorded_run(tx, cache, &run).await?.pop() {
                return Ok(Outcome::RecordedOffer(RecordedOffer::Offered(Ok(offered))));
            }
            Outcome::RecordedOffer(
                recorded_offer_steps(tx, cache, public_url, record, offer).await?,
            )
        }
    })
}

/// A signed offer that left the one-call path, decided step by step: its id recorded
/// (or found a replay, or a redelivery with its saved answer), then the offer decided.
async fn recorded_offer_steps(
    tx: &mut Tx,
    cache: &mut BatchCache,
    public_url: &str,
    record: &RecordWork,
    offer: &OfferWork,
) -> Result<RecordedOffer, sqlx::Error> {
    Ok(match record_in(tx, record).await? {
        Err(replayed) => RecordedOffer::Replayed(replayed),
        Ok(delivery) => {
            let saved = match delivery {
                Delivery::First => None,
                Delivery::Redelivery => super::db::saved_response_in(tx, &record.id).await?,
            };
            match saved {
                Some(saved) => RecordedOffer::Saved(saved),
                None => {
                    RecordedOffer::Offered(intake::offer_in(tx, cache, public_url, offer).await?)
                }
            }
        }
    })
}

async fn record_in(
    tx: &mut Tx,
    r: &RecordWork,
) -> Result<Result<Delivery, ReplayError>, sqlx::Error> {
    super::db::record_in(tx, &r.id, &r.digest, r.expires_at, r.now).await
}

#[cfg(test)]
mod tests {
    use diax_sdk::wire::{JobOffer, OfferUser, OfferedModel};
    use diax_sdk::{AccountId, JobId, ModelId, ProviderId, UserId};

    use super::*;
    use crate::service::Config;
    use crate::service::accounts::{self, CreateAccount};
    use crate::service::db::exec;
    use crate::service::error::ApiError;
    use crate::service::intake::OfferWork;

    const URL: &str = "https://fmp.test";

    fn offer(provider: &ProviderId, account: &AccountId, job: &JobId, size: u64) -> JobOffer {
        JobOffer {
            job_id: job.clone(),
            broker_id: "diax-test".into(),
            provider_id: provider.clone(),
            service_kind: "model-repair".into(),
            operation: "repair".into(),
            user: OfferUser {
                broker_user_id: UserId::generate(),
                provider_account: Some(account.clone()),
            },
            model: OfferedModel {
                model_id: ModelId::generate(),
                version: 1,
                name: "part.stl".into(),
                size,
                sha256: "00".repeat(32),
                format: "stl".into(),
            },
            params: serde_json::Value::Null,
            events_url: "https://broker.test/events".into(),
            offered_at: 0,
        }
    }

    fn op(work: Work) -> (Op, oneshot::Receiver<Result<Outcome, CommitError>>) {
        let (reply, rx) = oneshot::channel();
        (Op { work, reply }, rx)
    }

    /// A signed offer delivered under `id` with the body digest `digest` at `now`.
    fn signed_op(
        id: &str,
        digest: &str,
        now: i64,
        offer: OfferWork,
    ) -> (Op, oneshot::Receiver<Result<Outcome, CommitError>>) {
        op(Work::RecordedOffer {
            record: RecordWork {
                id: id.into(),
                digest: digest.into(),
                expires_at: now + 300,
                now,
            },
            offer: Box::new(offer),
        })
    }

    /// The signed offer `offer`, priced by `config`, delivered as message `id` with the body
    /// digest `digest` at `now`.
    fn signed_offer(
        config: &Config,
        id: &str,
        digest: &str,
        now: i64,
        offer: JobOffer,
    ) -> (Op, oneshot::Receiver<Result<Outcome, CommitError>>) {
        signed_op(
            id,
            digest,
            now,
            OfferWork::new(config, URL, offer, id.into()),
        )
    }

    /// The account's holds in the ledger, in order.
    async fn holds(db: &Db, account: &AccountId) -> Vec<accounts::LedgerEntry> {
        accounts::ledger(db, account.as_str())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == accounts::LedgerKind::Hold)
            .collect()
    }

    /// `$sqlite` and `$postgres`: `$test` on a SQLite file and on a PostgreSQL database.
    macro_rules! on_both_backends {
        ($test:ident: $sqlite:ident, $postgres:ident) => {
            #[tokio::test]
            async fn $sqlite() {
                let (_dir, db) = temp_sqlite().await;
                $test(db).await;
            }

            #[tokio::test]
            async fn $postgres() {
                let (_guard, url) = PgDb::create().await;
                let db = Db::connect(&url).await.unwrap();
                $test(db).await;
            }
        };
    }

    /// Registers a provider in `db` (as `fixmyprint register` would) and returns its id.
    /// A database in a SQLite file of its own (removed with the directory).
    async fn temp_sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        (dir, db)
    }

    async fn registered(db: &Db) -> ProviderId {
        let provider = ProviderId::generate();
        let mut tx = db.begin().await.unwrap();
        exec!(
            &mut tx,
            "INSERT INTO registration (id, provider_id, broker_id, broker_url, events_url,
                                       secret_scope, registered_at)
             VALUES (1, $1, 'diax-test', 'https://broker.test', 'https://broker.test/e', 'service', 0)",
            provider.as_str()
        )
        .unwrap();
        tx.commit().await.unwrap();
        provider
    }

    /// A new account topped up with `quotes` times the price of a 1-byte model; returns
    /// the account and that price.
    async fn funded_account(db: &Db, quotes: i64) -> (AccountId, i64) {
        let price = Config::default().pricing.quote(1).amount;
        let account = accounts::create_account(db, &CreateAccount { name: "a".into() }, "EUR")
            .await
            .unwrap()
            .account_id;
        accounts::top_up(db, account.as_str(), quotes * price, None)
            .await
            .unwrap();
        (account, price)
    }

    /// One transaction with: an offer, the same offer again, an offer the balance cannot
    /// cover, an offer for an unknown account, and an affordable one after the refusals.
    #[tokio::test]
    async fn one_batch_decides_each_offer_on_its_own() {
        let (_dir, db) = temp_sqlite().await;
        let provider = registered(&db).await;
        let (account, price) = funded_account(&db, 2).await;
        let config = Config::default();

        let (job_a, job_b, job_c) = (JobId::generate(), JobId::generate(), JobId::generate());
        let stranger = AccountId::generate();
        let offers = [
            offer(&provider, &account, &job_a, 1),
            offer(&provider, &account, &job_a, 1),
            offer(&provider, &account, &job_b, 1),
            offer(&provider, &stranger, &JobId::generate(), 1),
            offer(&provider, &account, &job_c, 1),
        ];
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = offers
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                op(Work::Offer(Box::new(OfferWork::new(
                    &config,
                    URL,
                    o,
                    format!("msg_{i}"),
                ))))
            })
            .unzip();
        commit_batch(&db, URL, &mut batch).await;
        let mut results = Vec::new();
        for rx in &mut answers {
            match rx.await.unwrap().unwrap() {
                Outcome::Offered(o) => results.push(o),
                other => panic!("{other:?}"),
            }
        }
        let job_of = |r: &crate::service::intake::Offered| match r {
            Ok((acc, _)) => acc.provider_job_id.to_string(),
            Err(e) => panic!("{e:?}"),
        };
        // The repeat is the same job; the first two distinct jobs take the balance ...
        assert_eq!(job_of(&results[0]), job_of(&results[1]));
        assert_ne!(job_of(&results[0]), job_of(&results[2]));
        // ... so the last one is refused, and the unknown account is refused on its own.
        assert!(
            matches!(results[3], Err(ApiError::AccountRequired { .. })),
            "{:?}",
            results[3]
        );
        assert!(
            matches!(
                &results[4],
                Err(ApiError::PaymentRequired { balance: 0, .. })
            ),
            "{:?}",
            results[4]
        );
        let acct = accounts::get_account(&db, account.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((acct.balance, acct.held), (0, 2 * price));
        assert_eq!(holds(&db, &account).await.len(), 2);
        db.close().await;
    }

    /// A PostgreSQL database for one test, dropped with the value.
    struct PgDb {
        admin: String,
        name: String,
    }

    impl PgDb {
        async fn create() -> (Self, String) {
            use sqlx::Connection as _;
            let admin = std::env::var("FIXMYPRINT_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!(
                "fmp_gc_{}",
                diax_sdk::util::random_token("", 12).to_ascii_lowercase()
            );
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let _ = conn.close().await;
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            (Self { admin, name }, url.to_string())
        }
    }

    impl Drop for PgDb {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        use sqlx::Connection as _;
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut conn)
                            .await;
                            let _ = conn.close().await;
                        }
                    });
            })
            .join();
        }
    }

    /// One transaction of signed offers (id recorded and offer decided together), with
    /// every case that leaves the one-statement path: a redelivery of an offer accepted
    /// earlier in the batch, its id reused for another body, an id whose old record has
    /// expired, an overdraw, an unknown account and a repeated broker job.
    async fn signed_offers_in_one_batch(db: Db) {
        let provider = registered(&db).await;
        let now = 1_000_000;
        let mut tx = db.begin().await.unwrap();
        exec!(
            &mut tx,
            "INSERT INTO replay (message_id, digest, expires_at) VALUES ('msg_old', 'aa', $1)",
            now - 1
        )
        .unwrap();
        tx.commit().await.unwrap();
        let (account, price) = funded_account(&db, 3).await;
        let config = Config::default();

        let [a, b, c, d, e] = std::array::from_fn(|_| JobId::generate());
        let stranger = AccountId::generate();
        // (message id, body digest, offer)
        let sends = [
            ("msg_a", "d1", offer(&provider, &account, &a, 1)), // 0 accepted
            ("msg_a", "d1", offer(&provider, &account, &a, 1)), // 1 redelivery of 0
            ("msg_a", "d2", offer(&provider, &account, &b, 1)), // 2 id reused: 409
            ("msg_b", "d3", offer(&provider, &account, &b, 1)), // 3 accepted
            ("msg_old", "d4", offer(&provider, &account, &c, 1)), // 4 expired id: accepted
            ("msg_c", "d5", offer(&provider, &account, &d, 1)), // 5 overdraw: 402
            ("msg_d", "d6", offer(&provider, &stranger, &e, 1)), // 6 unknown account: 401
            ("msg_e", "d7", offer(&provider, &account, &a, 1)), // 7 job of 0 again
        ];
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = sends
            .into_iter()
            .map(|(id, digest, o)| signed_offer(&config, id, digest, now, o))
            .unzip();
        commit_batch(&db, URL, &mut batch).await;
        let mut results = Vec::new();
        for rx in &mut answers {
            match rx.await.unwrap().unwrap() {
                Outcome::RecordedOffer(o) => results.push(o),
                other => panic!("{other:?}"),
            }
        }
        let job_of = |r: &RecordedOffer| match r {
            RecordedOffer::Offered(Ok((acc, _))) => acc.provider_job_id.to_string(),
            RecordedOffer::Saved(saved) => {
                assert_eq!(saved.response_status, 202);
                let acc: diax_sdk::wire::JobAccepted =
                    serde_json::from_str(&saved.response_body).unwrap();
                acc.provider_job_id.to_string()
            }
            other => panic!("{other:?}"),
        };
        assert!(
            matches!(results[1], RecordedOffer::Saved(_)),
            "{:?}",
            results[1]
        );
        assert_eq!(job_of(&results[0]), job_of(&results[1]));
        assert!(
            matches!(results[2], RecordedOffer::Replayed(ReplayError::Conflict)),
            "{:?}",
            results[2]
        );
        assert_ne!(job_of(&results[3]), job_of(&results[0]));
        assert_ne!(job_of(&results[4]), job_of(&results[3]));
        assert!(
            matches!(
                &results[5],
                RecordedOffer::Offered(Err(ApiError::PaymentRequired { balance: 0, .. }))
            ),
            "{:?}",
            results[5]
        );
        assert!(
            matches!(
                &results[6],
                RecordedOffer::Offered(Err(ApiError::AccountRequired { .. }))
            ),
            "{:?}",
            results[6]
        );
        assert_eq!(job_of(&results[7]), job_of(&results[0]));

        // Three holds, the balance spent exactly, and every id recorded with its answer.
        let acct = accounts::get_account(&db, account.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((acct.balance, acct.held), (0, 3 * price));
        assert_eq!(holds(&db, &account).await.len(), 3);
        let mut tx = db.begin_read().await.unwrap();
        for (id, status) in [
            ("msg_a", 202),
            ("msg_b", 202),
            ("msg_old", 202),
            ("msg_c", 402),
            ("msg_d", 401),
            ("msg_e", 202),
        ] {
            let saved = crate::service::db::saved_response_in(&mut tx, id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no answer saved for {id}"));
            assert_eq!(saved.response_status, status, "{id}");
        }
        tx.commit().await.unwrap();
        db.close().await;
    }

    on_both_backends!(
        signed_offers_in_one_batch:
        signed_offers_in_one_batch_sqlite,
        signed_offers_in_one_batch_postgres
    );

    /// One batch of signed offers for one account that has money for five of them, with a
    /// replay record of another message in the middle: the first five offers in order are
    /// accepted (in runs of one call each), every later one is refused with nothing held,
    /// and the record between them is kept.
    async fn runs_stop_at_the_first_refusal(db: Db) {
        let provider = registered(&db).await;
        let (account, price) = funded_account(&db, 5).await;
        let config = Config::default();
        let now = 1_000_000;
        let signed = |i: usize| {
            let id = format!("msg_{i}");
            let o = offer(&provider, &account, &JobId::generate(), 1);
            signed_offer(&config, &id, &format!("d{i}"), now, o)
        };
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = (0..3).map(signed).unzip();
        let (record, record_answer) = op(Work::Record {
            id: "msg_other".into(),
            digest: "dd".into(),
            expires_at: now + 300,
            now,
        });
        batch.push(record);
        let (more, more_answers): (Vec<_>, Vec<_>) = (3..9).map(signed).unzip();
        batch.extend(more);
        answers.extend(more_answers);
        commit_batch(&db, URL, &mut batch).await;
        for (i, rx) in answers.iter_mut().enumerate() {
            let outcome = rx.await.unwrap().unwrap();
            if i < 5 {
                assert!(
                    matches!(
                        outcome,
                        Outcome::RecordedOffer(RecordedOffer::Offered(Ok(_)))
                    ),
                    "{i}: {outcome:?}"
                );
            } else {
                assert!(
                    matches!(
                        outcome,
                        Outcome::RecordedOffer(RecordedOffer::Offered(Err(
                            ApiError::PaymentRequired { balance: 0, .. }
                        )))
                    ),
                    "{i}: {outcome:?}"
                );
            }
        }
        assert!(matches!(
            record_answer.await.unwrap().unwrap(),
            Outcome::Recorded(Ok(Delivery::First))
        ));
        let acct = accounts::get_account(&db, account.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((acct.balance, acct.held), (0, 5 * price));
        assert_eq!(holds(&db, &account).await.len(), 5);
        let mut tx = db.begin_read().await.unwrap();
        for i in 0..9 {
            let saved = crate::service::db::saved_response_in(&mut tx, &format!("msg_{i}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(saved.response_status, if i < 5 { 202 } else { 402 }, "{i}");
        }
        tx.commit().await.unwrap();
        db.close().await;
    }

    on_both_backends!(
        runs_stop_at_the_first_refusal:
        runs_stop_at_the_first_refusal_sqlite,
        runs_stop_at_the_first_refusal_postgres
    );

    /// One run of signed offers for two accounts, interleaved, with a broker job and a
    /// `webhook-id` repeated inside the run and an offer priced in another currency than
    /// its account's, then one more: every hold's ledger entry carries the balance and
    /// held amount after it, in offer order, as one offer at a time would have written
    /// them; the repeats are decided as repeats and the other currency as an error.
    async fn one_run_writes_each_hold_as_one_at_a_time(db: Db) {
        let provider = registered(&db).await;
        let (a, price) = funded_account(&db, 5).await;
        let (b, _) = funded_account(&db, 3).await;
        let config = Config::default();
        let now = 1_000_000;
        let signed = |id: &str, account: &AccountId, job: &JobId| {
            let o = offer(&provider, account, job, 1);
            signed_offer(&config, id, &format!("d-{id}"), now, o)
        };
        let jobs: Vec<JobId> = (0..7).map(|_| JobId::generate()).collect();
        // Priced in another currency than the account's (a changed configuration).
        let mut dollars = Config::default();
        dollars.pricing.currency = "USD".into();
        let other_currency = OfferWork::new(
            &dollars,
            URL,
            offer(&provider, &a, &jobs[6], 1),
            "m7".into(),
        );
        let sends = vec![
            signed("m0", &a, &jobs[0]),
            signed("m1", &b, &jobs[1]),
            signed("m2", &a, &jobs[2]),
            signed("m3", &a, &jobs[3]),
            signed("m4", &b, &jobs[1]), // the broker job of m1 again: its job
            signed("m5", &a, &jobs[4]),
            signed("m2", &a, &jobs[2]), // m2 delivered again: its saved answer
            signed("m6", &b, &jobs[5]),
            signed_op("m7", "d-m7", now, other_currency),
            signed("m8", &a, &JobId::generate()),
        ];
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = sends.into_iter().unzip();
        commit_batch(&db, URL, &mut batch).await;
        let mut outcomes = Vec::new();
        for rx in &mut answers {
            match rx.await.unwrap().unwrap() {
                Outcome::RecordedOffer(o) => outcomes.push(o),
                other => panic!("{other:?}"),
            }
        }
        let job_of = |o: &RecordedOffer| match o {
            RecordedOffer::Offered(Ok((acc, _))) => acc.provider_job_id.to_string(),
            RecordedOffer::Saved(saved) => {
                serde_json::from_str::<diax_sdk::wire::JobAccepted>(&saved.response_body)
                    .unwrap()
                    .provider_job_id
                    .to_string()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(job_of(&outcomes[4]), job_of(&outcomes[1]));
        assert!(
            matches!(outcomes[6], RecordedOffer::Saved(_)),
            "{:?}",
            outcomes[6]
        );
        assert_eq!(job_of(&outcomes[6]), job_of(&outcomes[2]));
        assert!(
            matches!(
                &outcomes[8],
                RecordedOffer::Offered(Err(ApiError::Internal(_)))
            ),
            "{:?}",
            outcomes[8]
        );
        let held = |id: &AccountId| {
            let (db, id) = (db.clone(), id.clone());
            async move {
                holds(&db, &id)
                    .await
                    .into_iter()
                    .map(|e| (e.provider_job_id.unwrap(), e.balance_after, e.held_after))
                    .collect::<Vec<_>>()
            }
        };
        // Account a: m0, m2, m3, m5 in that order, then m8 (after m7 was refused).
        let expect_a: Vec<_> = [0, 2, 3, 5, 9]
            .iter()
            .zip(1..)
            .map(|(&i, k)| (job_of(&outcomes[i]), (5 - k) * price, k * price))
            .collect();
        assert_eq!(held(&a).await, expect_a);
        let expect_b: Vec<_> = [1, 7]
            .iter()
            .zip(1..)
            .map(|(&i, k)| (job_of(&outcomes[i]), (3 - k) * price, k * price))
            .collect();
        assert_eq!(held(&b).await, expect_b);
        let acct = accounts::get_account(&db, a.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((acct.balance, acct.held), (0, 5 * price));
        db.close().await;
    }

    on_both_backends!(
        one_run_writes_each_hold_as_one_at_a_time:
        one_run_writes_each_hold_as_one_at_a_time_sqlite,
        one_run_writes_each_hold_as_one_at_a_time_postgres
    );

    /// A run whose writes fail half-way (a trigger refuses one offer's job row): nothing
    /// of the run stays, the batch is decided again one operation at a time, the offers
    /// around the failing one are accepted once each and only the failing one gets the
    /// error.
    async fn a_failing_run_leaves_nothing_behind(db: Db) {
        let provider = registered(&db).await;
        let (account, price) = funded_account(&db, 5).await;
        let config = Config::default();
        let now = 1_000_000;
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::generate()).collect();
        let bad = jobs[1].as_str();
        let mut tx = db.begin().await.unwrap();
        let ddl = if db.is_postgres() {
            vec![
                "CREATE FUNCTION refuse_job() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                    .to_owned(),
                format!(
                    "CREATE TRIGGER refuse BEFORE INSERT ON jobs FOR EACH ROW
                     WHEN (NEW.broker_job_id = '{bad}') EXECUTE FUNCTION refuse_job()"
                ),
            ]
        } else {
            vec![format!(
                "CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.broker_job_id = '{bad}'
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )]
        };
        for statement in ddl {
            let statement = sqlx::AssertSqlSafe(statement);
            match &mut tx {
                Tx::Sqlite(t) => sqlx::query(statement).execute(&mut **t).await.map(drop),
                Tx::Postgres(t) => sqlx::query(statement).execute(&mut **t).await.map(drop),
            }
            .unwrap();
        }
        tx.commit().await.unwrap();
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let id = format!("m{i}");
                let o = offer(&provider, &account, job, 1);
                signed_offer(&config, &id, &format!("d{i}"), now, o)
            })
            .unzip();
        commit_batch(&db, URL, &mut batch).await;
        let mut outcomes = Vec::new();
        for rx in &mut answers {
            outcomes.push(rx.await.unwrap());
        }
        assert!(
            matches!(
                outcomes[0],
                Ok(Outcome::RecordedOffer(RecordedOffer::Offered(Ok(_))))
            ),
            "{:?}",
            outcomes[0]
        );
        assert!(
            matches!(outcomes[1], Err(CommitError::Db(_))),
            "{:?}",
            outcomes[1]
        );
        assert!(
            matches!(
                outcomes[2],
                Ok(Outcome::RecordedOffer(RecordedOffer::Offered(Ok(_))))
            ),
            "{:?}",
            outcomes[2]
        );
        let acct = accounts::get_account(&db, account.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((acct.balance, acct.held), (3 * price, 2 * price));
        assert_eq!(holds(&db, &account).await.len(), 2);
        // The writer is usable afterwards (no transaction was left open on it).
        let mut tx = db.begin().await.unwrap();
        exec!(&mut tx, "DELETE FROM replay WHERE message_id = 'nothing'").unwrap();
        tx.commit().await.unwrap();
        db.close().await;
    }

    on_both_backends!(
        a_failing_run_leaves_nothing_behind:
        a_failing_run_leaves_nothing_behind_sqlite,
        a_failing_run_leaves_nothing_behind_postgres
    );

    /// A batch of two signed offers for an account with money for one: the leading run
    /// takes the first, and the second, left alone in the batch, is refused on the
    /// step-by-step path with the balance it found.
    async fn the_offer_that_ended_the_run_is_decided_alone(db: Db) {
        let provider = registered(&db).await;
        let (account, price) = funded_account(&db, 1).await;
        let config = Config::default();
        let now = 1_000_000;
        let (mut batch, mut answers): (Vec<_>, Vec<_>) = (0..2)
            .map(|i| {
                let id = format!("m{i}");
                let o = offer(&provider, &account, &JobId::generate(), 1);
                signed_offer(&config, &id, &format!("d{i}"), now, o)
            })
            .unzip();
        commit_batch(&db, URL, &mut batch).await;
        let first = answers[0].try_recv().unwrap().unwrap();
        assert!(
            matches!(first, Outcome::RecordedOffer(RecordedOffer::Offered(Ok(_)))),
            "{first:?}"
        );
        let second = answers[1].try_recv().unwrap().unwrap();
        assert!(
            matches!(
                second,
                Outcome::RecordedOffer(RecordedOffer::Offered(Err(ApiError::PaymentRequired {
                    balance: 0,
                    ..
                })))
            ),
            "{second:?}"
        );
        let acct = accounts::get_account(&db, account.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((acct.balance, acct.held), (0, price));
        assert_eq!(holds(&db, &account).await.len(), 1);
        db.close().await;
    }

    on_both_backends!(
        the_offer_that_ended_the_run_is_decided_alone:
        the_offer_that_ended_the_run_is_decided_alone_sqlite,
        the_offer_that_ended_the_run_is_decided_alone_postgres
    );

    /// Offers for many accounts spread over several writers: each account's offers are
    /// decided in order by one writer, and none overdraws.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_writers_never_overdraw() {
        let (_guard, url) = PgDb::create().await;
        let db = Db::connect(&url).await.unwrap();
        let provider = registered(&db).await;
        let config = Config::default();
        let price = config.pricing.quote(1).amount;
        let mut accts = Vec::new();
        for i in 0..6 {
            let id = accounts::create_account(
                &db,
                &CreateAccount {
                    name: format!("a{i}"),
                },
                "EUR",
            )
            .await
            .unwrap()
            .account_id;
            accounts::top_up(&db, id.as_str(), 3 * price, None)
                .await
                .unwrap();
            accts.push(id);
        }
        let commit = GroupCommit::start_writers(db.clone(), URL.into(), 3);
        // Five offers per account, all at once: three of each are accepted.
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let commit = commit.clone();
                let o = offer(&provider, &accts[i % 6], &JobId::generate(), 1);
                let work = Work::Offer(Box::new(OfferWork::new(&config, URL, o, format!("m{i}"))));
                tokio::spawn(async move { commit.submit(work).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Outcome::Offered(Ok(_)) => accepted += 1,
                Outcome::Offered(Err(ApiError::PaymentRequired { .. })) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(accepted, 18);
        for id in &accts {
            let a = accounts::get_account(&db, id.as_str())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((a.balance, a.held), (0, 3 * price));
        }
        db.close().await;
    }
}
