//! Account links: a user hands the broker a provider's link token; once its checks pass,
//! the provider account it names is stored against the user (one per user and provider,
//! a newer link replacing an older one). Owns `links`.

use diax_sdk::wire::{AccountLink, LinkList};
use diax_sdk::{AccountId, LinkTokenValidator, Problem, ProviderId, UserId};
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};

use super::providers::{self, Provider};
use super::{id, replay, scalar_id};
use crate::error::{ApiError, ApiResult};

struct LinkRow(AccountLink);

impl<'r> FromRow<'r, SqliteRow> for LinkRow {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self(AccountLink {
            provider_id: id(row, "provider_id")?,
            provider_account: id(row, "account_id")?,
            linked_at: row.try_get("linked_at")?,
        }))
    }
}

/// Checks `token` (signature with one of `provider`'s active keys, `typ`, `iss`, `aud` =
/// `broker_id`, `exp`, an unused `jti`) and links the account it names to `user`.
pub(crate) async fn link_with_token(
    db: &SqlitePool,
    user: &UserId,
    provider: &Provider,
    token: &str,
    broker_id: &str,
    now: i64,
) -> ApiResult<AccountLink> {
    if !provider.speaks_for(user) {
        return Err(ApiError::Forbidden(format!(
            "provider {} uses a per-user secret bound to another user",
            provider.id
        )));
    }
    let ring = providers::keyring(db, &provider.id).await?;
    let claims = LinkTokenValidator::new(provider.id.clone(), broker_id.to_owned())
        .validate_at(token, &ring, now)
        .map_err(|e| ApiError::from(Problem::from(&e)))?;
    let mut tx = super::begin_write(db).await?;
    let keep_until = claims
        .exp
        .saturating_add(i64::try_from(diax_sdk::token::DEFAULT_LEEWAY_SECS).unwrap_or(0));
    if !replay::use_jti(&mut tx, &provider.id, &claims.jti, now, keep_until).await? {
        return Err(ApiError::TokenReused(claims.jti));
    }
    sqlx::query(
        "INSERT INTO links (user_id, provider_id, account_id, linked_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, provider_id) DO UPDATE SET account_id = excluded.account_id, linked_at = excluded.linked_at",
    )
    .bind(user.as_str())
    .bind(provider.id.as_str())
    .bind(claims.sub.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(user = %user, provider = %provider.id, account = %claims.sub, "account linked");
    Ok(AccountLink {
        provider_id: provider.id.clone(),
        provider_account: claims.sub,
        linked_at: now,
    })
}

/// The account of `user` at `provider`, if linked.
pub(crate) async fn account(
    db: &SqlitePool,
    user: &UserId,
    provider: &ProviderId,
) -> ApiResult<Option<AccountId>> {
    let account: Option<String> =
        sqlx::query_scalar("SELECT account_id FROM links WHERE user_id = $1 AND provider_id = $2")
            .bind(user.as_str())
            .bind(provider.as_str())
            .fetch_optional(db)
            .await?;
    Ok(account
        .map(|a| scalar_id("links.account_id", a))
        .transpose()?)
}

/// The links of `user`, oldest first.
pub(crate) async fn list(db: &SqlitePool, user: &UserId) -> ApiResult<LinkList> {
    let rows: Vec<LinkRow> = sqlx::query_as(
        "SELECT provider_id, account_id, linked_at FROM links WHERE user_id = $1 ORDER BY linked_at, provider_id",
    )
    .bind(user.as_str())
    .fetch_all(db)
    .await?;
    Ok(LinkList {
        links: rows.into_iter().map(|LinkRow(link)| link).collect(),
    })
}
