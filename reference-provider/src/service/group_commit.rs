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
//! Operations never fail each other: a refusal (unknown account, balance too low, a
//! repeated offer) is an answer, not an error, and writes nothing. Should a statement fail
//! (a database error, or a unique violation when another instance sharing the PostgreSQL
//! database inserted the same broker job a moment earlier), the batch is rolled back and
//! each of its operations is run again in a transaction of its own, so that only the
//! failing one sees its error. Operations later in a batch see the writes of earlier ones
//! (the same transaction): the same offer twice in one batch is one job, and two offers
//! for one account take their holds one after the other.

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

/// A handle to the writer task; cheap to clone. The task ends when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Op>,
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
    /// Starts the writer task over `db`; `public_url` is the service's base URL (for the
    /// status and top-up URLs in answers). Needs a Tokio runtime.
    #[must_use]
    pub fn start(db: Db, public_url: String) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(db, public_url, rx));
        Self { queue }
    }

    /// Queues `work` and waits until it is committed (or refused, or failed).
    pub(crate) async fn submit(&self, work: Work) -> Result<Outcome, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Op { work, reply })
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
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
    if batch.is_empty() {
        return;
    }
    if batch.len() > 1 {
        match together(db, public_url, batch).await {
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
    for op in batch.drain(..) {
        let outcome = alone(db, public_url, &op.work).await;
        let _ = op.reply.send(outcome.map_err(CommitError::Db));
    }
}

async fn together(db: &Db, public_url: &str, batch: &[Op]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut cache = BatchCache::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for op in batch {
        outcomes.push(apply(&mut tx, &mut cache, public_url, &op.work).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn alone(db: &Db, public_url: &str, work: &Work) -> Result<Outcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut cache = BatchCache::default();
    match apply(&mut tx, &mut cache, public_url, work).await {
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
            Outcome::RecordedOffer(match record_in(tx, record).await? {
                Err(replayed) => RecordedOffer::Replayed(replayed),
                Ok(delivery) => {
                    let saved = match delivery {
                        Delivery::First => None,
                        Delivery::Redelivery => {
                            super::db::saved_response_in(tx, &record.id).await?
                        }
                    };
                    match saved {
                        Some(saved) => RecordedOffer::Saved(saved),
                        None => RecordedOffer::Offered(
                            intake::offer_in(tx, cache, public_url, offer).await?,
                        ),
                    }
                }
            })
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

    /// One transaction with: an offer, the same offer again, an offer the balance cannot
    /// cover, an offer for an unknown account, and an affordable one after the refusals.
    #[tokio::test]
    async fn one_batch_decides_each_offer_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
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
        let config = Config::default();
        let price = config.pricing.quote(1).amount;
        let account = accounts::create_account(&db, &CreateAccount { name: "a".into() }, "EUR")
            .await
            .unwrap()
            .account_id;
        accounts::top_up(&db, account.as_str(), 2 * price, None)
            .await
            .unwrap();

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
        let holds = accounts::ledger(&db, account.as_str())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == accounts::LedgerKind::Hold)
            .count();
        assert_eq!(holds, 2);
        db.close().await;
    }
}
