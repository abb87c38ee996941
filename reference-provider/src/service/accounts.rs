//! Provider-side accounts and the append-only ledger.
//!
//! Money is integer minor units. `balance` is what an account can spend; `held` is what is
//! reserved for accepted jobs. Every change is one ledger entry written in the same
//! transaction as the account row: `top_up` (+balance), `hold` (balance → held), `capture`
//! (held → charged) and `release` (held → balance). A unique index allows one entry of each
//! kind per job, and `CHECK (balance >= 0)` keeps balances from going negative whatever the
//! code does.

use diax_sdk::AccountId;
use diax_sdk::util::sha256_hex;
use serde::{Deserialize, Serialize};

use super::db::{Db, Tx, exec, fetch_all, fetch_optional, is_unique_violation, now_ms};
use super::error::ApiError;

/// Largest single top-up, in minor units.
pub const MAX_TOP_UP: i64 = 100_000_000;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Account {
    /// Id (`acc_…`): the `sub` of link tokens.
    #[sqlx(try_from = "String")]
    pub account_id: AccountId,
    /// Display name.
    pub name: String,
    /// Currency of the balance.
    pub currency: String,
    /// Spendable balance, minor units.
    pub balance: i64,
    /// Reserved for accepted jobs, minor units.
    pub held: i64,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

/// `POST /v1/accounts` body.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Display name, 1–100 characters.
    pub name: String,
}

/// `201` answer to [`CreateAccount`]; the API key is shown once.
#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AccountCreated {
    /// The new account.
    pub account_id: AccountId,
    /// Bearer key for `/v1/accounts/me…`.
    pub api_key: String,
    /// Spendable balance (0).
    pub balance: i64,
    /// Currency.
    pub currency: String,
}

/// Redacts the API key.
impl std::fmt::Debug for AccountCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountCreated")
            .field("account_id", &self.account_id)
            .field("api_key", &"[redacted]")
            .field("balance", &self.balance)
            .field("currency", &self.currency)
            .finish()
    }
}

/// `GET /v1/accounts/me`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    /// Id.
    pub account_id: AccountId,
    /// Name.
    pub name: String,
    /// Spendable balance, minor units.
    pub balance: i64,
    /// Reserved for running jobs, minor units.
    pub held: i64,
    /// Currency.
    pub currency: String,
}

/// `POST /v1/accounts/me/top-up` body.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Amount in minor units, 1 to [`MAX_TOP_UP`].
    pub amount: i64,
}

/// What a ledger entry does: `top_up` (+balance), `hold` (balance → held: a job was
/// accepted), `capture` (held → charged: the job completed) or `release` (held → balance:
/// the job failed or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Money paid in: +balance.
    TopUp,
    /// A job's price reserved: balance → held.
    Hold,
    /// A job's hold charged: held → gone.
    Capture,
    /// A job's hold given back: held → balance.
    Release,
}

impl LedgerKind {
    /// Every kind.
    pub const ALL: [LedgerKind; 4] = [
        LedgerKind::TopUp,
        LedgerKind::Hold,
        LedgerKind::Capture,
        LedgerKind::Release,
    ];

    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::TopUp => "top_up",
            LedgerKind::Hold => "hold",
            LedgerKind::Capture => "capture",
            LedgerKind::Release => "release",
        }
    }

    /// Whether an entry of this kind may follow a job's last entry `last` (`None`: the job
    /// has none yet): the state machine of a job's money, whose first entry is a `hold`.
    ///
    /// | job's last entry | next entry | by |
    /// |---|---|---|
    /// | (none) | `hold` | [`hold`], when an offer is accepted |
    /// | `hold` | `capture` | [`settle`], when the job completes |
    /// | `hold` | `release` | [`settle`], when the job fails or expires |
    ///
    /// `capture` and `release` are final; a `top_up` belongs to no job. The unique index on
    /// (job, kind) is the database's backstop.
    #[must_use]
    pub fn may_follow(self, last: Option<LedgerKind>) -> bool {
        use LedgerKind::{Capture, Hold, Release};
        matches!((last, self), (None, Hold) | (Some(Hold), Capture | Release))
    }
}

impl std::fmt::Display for LedgerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored ledger kind that is none of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown ledger entry kind {0:?}")]
pub struct UnknownLedgerKind(String);

impl TryFrom<String> for LedgerKind {
    type Error = UnknownLedgerKind;
    fn try_from(s: String) -> Result<Self, UnknownLedgerKind> {
        LedgerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownLedgerKind(s))
    }
}

/// One ledger entry.
// The kind is checked when the row is read: an unknown stored kind is an error naming the
// column, never a made-up value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LedgerEntry {
    /// Id.
    pub entry_id: String,
    /// What the entry does.
    #[sqlx(try_from = "String")]
    pub kind: LedgerKind,
    /// Amount moved, minor units, never negative.
    pub amount: i64,
    /// Spendable balance after the entry.
    pub balance_after: i64,
    /// Held amount after the entry.
    pub held_after: i64,
    /// The job, for hold/capture/release.
    pub provider_job_id: Option<String>,
    /// When, Unix ms.
    pub created_at: i64,
}

/// `GET /v1/accounts/me/ledger`: one page of the ledger.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Ledger {
    /// The account.
    pub account_id: AccountId,
    /// Currency.
    pub currency: String,
    /// Entries, oldest first: at most `limit` of them, from the first after `after`.
    pub entries: Vec<LedgerEntry>,
    /// Present when more entries follow this page: the last entry's id, to pass as `after`
    /// for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Most entries on one page of the ledger, and the number a page holds unless the request
/// asks for fewer (`GET /v1/accounts/me/ledger?limit=`).
pub const LEDGER_PAGE_MAX: u32 = 1000;

/// One page of an account's ledger ([`ledger_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPage {
    /// Entries, oldest first.
    pub entries: Vec<LedgerEntry>,
    /// Whether more entries follow the last one.
    pub more: bool,
}

/// Answer to [`TopUp`].
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct TopUpDone {
    /// The ledger entry (the same one when an `Idempotency-Key` is repeated).
    pub entry: LedgerEntry,
    /// Spendable balance now.
    pub balance: i64,
    /// Held now.
    pub held: i64,
    /// Currency.
    pub currency: String,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            account_id: a.account_id,
            name: a.name,
            balance: a.balance,
            held: a.held,
            currency: a.currency,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Amounts {
    balance: i64,
    held: i64,
}

/// Creates an account with a zero balance.
///
/// # Errors
/// [`ApiError::Invalid`] for a bad name; database errors.
pub async fn create_account(
    db: &Db,
    req: &CreateAccount,
    currency: &str,
) -> Result<AccountCreated, ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "name must be 1 to 100 printable characters".into(),
        ));
    }
    let account_id = AccountId::generate();
    let api_key = diax_sdk::util::random_token("fmp_", 40);
    let mut tx = db.begin().await?;
    exec!(
        &mut tx,
        "INSERT INTO accounts (account_id, name, api_key_hash, currency, balance, held, created_at)
         VALUES ($1, $2, $3, $4, 0, 0, $5)",
        account_id.as_str(),
        name,
        sha256_hex(api_key.as_bytes()),
        currency,
        now_ms()
    )?;
    tx.commit().await?;
    Ok(AccountCreated {
        account_id,
        api_key,
        balance: 0,
        currency: currency.to_owned(),
    })
}

/// The account owning `api_key`, if any.
///
/// # Errors
/// Database errors.
pub async fn authenticate(db: &Db, api_key: &str) -> Result<Option<Account>, sqlx::Error> {
    if api_key.len() > 200 {
        return Ok(None);
    }
    let mut tx = db.begin_read().await?;
    let row = fetch_optional!(
        &mut tx,
        Account,
        "SELECT account_id, name, currency, balance, held, created_at FROM accounts
         WHERE api_key_hash = $1",
        sha256_hex(api_key.as_bytes())
    )?;
    tx.commit().await?;
    Ok(row)
}

/// One account by id.
///
/// # Errors
/// Database errors.
pub async fn get_account(db: &Db, account_id: &str) -> Result<Option<Account>, sqlx::Error> {
    let mut tx = db.begin_read().await?;
    let row = account_in(&mut tx, account_id).await?;
    tx.commit().await?;
    Ok(row)
}

pub(crate) async fn account_in(
    tx: &mut Tx,
    account_id: &str,
) -> Result<Option<Account>, sqlx::Error> {
    fetch_optional!(
        tx,
        Account,
        "SELECT account_id, name, currency, balance, held, created_at FROM accounts
         WHERE account_id = $1",
        account_id
    )
}

/// Up to `limit` entries of an account's ledger, oldest first, from the first after the entry
/// `after` (from the start without it). `None` when `after` is not an entry of this account.
///
/// A page ends at a `seq`, and the next starts after it. No entry of the account can commit
/// later with a smaller `seq` and be passed over: every transaction that writes one first
/// changes the account's row (the balance or held amount) and holds that row's lock until it
/// commits, so an account's entries take their `seq` in the order they commit.
///
/// # Errors
/// Database errors.
pub async fn ledger_page(
    db: &Db,
    account_id: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Option<LedgerPage>, sqlx::Error> {
    let mut tx = db.begin_read().await?;
    let from = match after {
        None => 0,
        Some(entry_id) => {
            let seq = fetch_optional!(
                &mut tx,
                (i64,),
                "SELECT seq FROM ledger WHERE entry_id = $1 AND account_id = $2",
                entry_id,
                account_id
            )?;
            match seq {
                Some((seq,)) => seq,
                None => {
                    tx.commit().await?;
                    return Ok(None);
                }
            }
        }
    };
    // One more than asked for: whether more follow.
    let mut entries = fetch_all!(
        &mut tx,
        LedgerEntry,
        "SELECT entry_id, kind, amount, balance_after, held_after, provider_job_id, created_at
         FROM ledger WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        account_id,
        from,
        i64::from(limit) + 1
    )?;
    tx.commit().await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = entries.len() > limit;
    entries.truncate(limit);
    Ok(Some(LedgerPage { entries, more }))
}

/// The whole ledger of an account, oldest first (for tools and tests: the API hands it out
/// in pages, [`ledger_page`]).
///
/// # Errors
/// Database errors.
pub async fn ledger(db: &Db, account_id: &str) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    let mut tx = db.begin_read().await?;
    let rows = fetch_all!(
        &mut tx,
        LedgerEntry,
        "SELECT entry_id, kind, amount, balance_after, held_after, provider_job_id, created_at
         FROM ledger WHERE account_id = $1 ORDER BY seq",
        account_id
    )?;
    tx.commit().await?;
    Ok(rows)
}

/// Adds `amount` to the balance (the payment stand-in). With an idempotency key, a repeat
/// of the same key and amount returns the first entry and changes nothing; the same key
/// with another amount is a conflict.
///
/// # Errors
/// [`ApiError::Invalid`] for an amount out of range, [`ApiError::Conflict`] for a reused
/// key, database errors.
pub async fn top_up(
    db: &Db,
    account_id: &str,
    amount: i64,
    idempotency_key: Option<&str>,
) -> Result<TopUpDone, ApiError> {
    if !(1..=MAX_TOP_UP).contains(&amount) {
        return Err(ApiError::Invalid(format!(
            "amount must be an integer from 1 to {MAX_TOP_UP} (minor units)"
        )));
    }
    if let Some(k) = idempotency_key
        && (k.is_empty() || k.len() > 200)
    {
        return Err(ApiError::Invalid(
            "Idempotency-Key must be 1 to 200 characters".into(),
        ));
    }
    for _ in 0..3 {
        let mut tx = db.begin().await?;
        if let Some(key) = idempotency_key {
            let prior = fetch_optional!(
                &mut tx,
                LedgerEntry,
                "SELECT entry_id, kind, amount, balance_after, held_after, provider_job_id, created_at
                 FROM ledger WHERE account_id = $1 AND idempotency_key = $2",
                account_id,
                key
            )?;
            if let Some(entry) = prior {
                if entry.amount != amount {
                    return Err(ApiError::Conflict(
                        "this Idempotency-Key was used for a different amount".into(),
                    ));
                }
                let acct = account_in(&mut tx, account_id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound("account".into()))?;
                tx.commit().await?;
                return Ok(TopUpDone {
                    entry,
                    balance: acct.balance,
                    held: acct.held,
                    currency: acct.currency,
                });
            }
        }
        let after = fetch_optional!(
            &mut tx,
            Amounts,
            "UPDATE accounts SET balance = balance + $1 WHERE account_id = $2
             RETURNING balance, held",
            amount,
            account_id
        )?
        .ok_or_else(|| ApiError::NotFound("account".into()))?;
        let entry = LedgerEntry {
            entry_id: super::db::time_ordered_id("led_"),
            kind: LedgerKind::TopUp,
            amount,
            balance_after: after.balance,
            held_after: after.held,
            provider_job_id: None,
            created_at: now_ms(),
        };
        match insert_entry(&mut tx, account_id, &entry, idempotency_key).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => continue, // a concurrent twin won: re-read
            Err(e) => return Err(e.into()),
        }
        let currency = account_in(&mut tx, account_id)
            .await?
            .map(|a| a.currency)
            .unwrap_or_default();
        tx.commit().await?;
        return Ok(TopUpDone {
            entry,
            balance: after.balance,
            held: after.held,
            currency,
        });
    }
    Err(ApiError::Conflict(
        "a concurrent request with the same Idempotency-Key is in progress".into(),
    ))
}

async fn insert_entry(
    tx: &mut Tx,
    account_id: &str,
    e: &LedgerEntry,
    idempotency_key: Option<&str>,
) -> Result<(), sqlx::Error> {
    exec!(
        tx,
        "INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                             provider_job_id, idempotency_key, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &e.entry_id,
        account_id,
        e.kind.as_str(),
        e.amount,
        e.balance_after,
        e.held_after,
        e.provider_job_id.as_deref(),
        idempotency_key,
        e.created_at
    )
    .map(|_| ())
}

/// Moves `amount` (in `currency`) from balance to held for a job, inside the caller's
/// transaction. Returns `false` (and changes nothing) when there is no such account, when
/// it keeps another currency, or when its balance does not cover the amount; the caller
/// reads the account to tell which.
///
/// # Errors
/// Database errors.
pub(crate) async fn hold(
    tx: &mut Tx,
    account_id: &str,
    provider_job_id: &str,
    amount: i64,
    currency: &str,
) -> Result<bool, sqlx::Error> {
    let after = fetch_optional!(
        &mut *tx,
        Amounts,
        "UPDATE accounts SET balance = balance - $1, held = held + $1
         WHERE account_id = $2 AND balance >= $1 AND currency = $3 RETURNING balance, held",
        amount,
        account_id,
        currency
    )?;
    let Some(after) = after else {
        return Ok(false);
    };
    let entry = LedgerEntry {
        entry_id: super::db::time_ordered_id("led_"),
        kind: LedgerKind::Hold,
        amount,
        balance_after: after.balance,
        held_after: after.held,
        provider_job_id: Some(provider_job_id.to_owned()),
        created_at: now_ms(),
    };
    insert_entry(tx, account_id, &entry, None).await?;
    Ok(true)
}

/// Settles a job's hold inside the caller's transaction: `capture` (charge it) or
/// `release` (give it back). The caller guarantees, by its own state transition in the
/// same transaction, that this runs once per job; the unique index is the backstop.
///
/// # Errors
/// Database errors (including a second settlement of the same job).
pub(crate) async fn settle(
    tx: &mut Tx,
    account_id: &str,
    provider_job_id: &str,
    amount: i64,
    capture: bool,
) -> Result<(), sqlx::Error> {
    let after = if capture {
        fetch_optional!(
            tx,
            Amounts,
            "UPDATE accounts SET held = held - $1 WHERE account_id = $2 RETURNING balance, held",
            amount,
            account_id
        )?
    } else {
        fetch_optional!(
            tx,
            Amounts,
            "UPDATE accounts SET held = held - $1, balance = balance + $1 WHERE account_id = $2
             RETURNING balance, held",
            amount,
            account_id
        )?
    }
    .ok_or(sqlx::Error::RowNotFound)?;
    let entry = LedgerEntry {
        entry_id: super::db::time_ordered_id("led_"),
        kind: if capture {
            LedgerKind::Capture
        } else {
            LedgerKind::Release
        },
        amount,
        balance_after: after.balance,
        held_after: after.held,
        provider_job_id: Some(provider_job_id.to_owned()),
        created_at: now_ms(),
    };
    insert_entry(tx, account_id, &entry, None).await
}

#[cfg(test)]
mod tests {
    use super::LedgerKind::{self, Capture, Hold, Release, TopUp};

    /// The whole table of a job's money: every (last entry, next entry) pair.
    #[test]
    fn ledger_transitions() {
        let allowed = [(None, Hold), (Some(Hold), Capture), (Some(Hold), Release)];
        let lasts = std::iter::once(None).chain(LedgerKind::ALL.into_iter().map(Some));
        for last in lasts {
            for next in LedgerKind::ALL {
                assert_eq!(
                    next.may_follow(last),
                    allowed.contains(&(last, next)),
                    "{last:?} -> {next}"
                );
            }
        }
        assert!(!TopUp.may_follow(None), "a top-up belongs to no job");
    }

    #[test]
    fn stored_and_wire_names_agree_and_unknown_ones_are_errors() {
        for k in LedgerKind::ALL {
            assert_eq!(LedgerKind::try_from(k.as_str().to_owned()).unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let e = LedgerKind::try_from("refund".to_owned()).unwrap_err();
        assert!(e.to_string().contains("\"refund\""), "{e}");
    }
}
