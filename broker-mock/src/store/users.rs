//! Users (API keys stored as SHA-256), groups and membership. Owns `users`, `groups` and
//! `group_members`.

use diax_sdk::util::{random_token, sha256_hex};
use diax_sdk::wire::{Group, UserCreated};
use diax_sdk::{GroupId, Secret, UserId};
use sqlx::SqlitePool;

use super::{check_name, check_peer_url, scalar_id};
use crate::error::{ApiError, ApiResult};

/// Prefix of users' API keys.
pub(crate) const API_KEY_PREFIX: &str = "bk_";

/// Creates a user after checking its name and notification URL; the answer carries the API
/// key and, with a notification URL, the `whsec_` secret notifications are signed with
/// (both shown once).
pub(crate) async fn create(
    db: &SqlitePool,
    name: &str,
    notification_url: Option<&str>,
    now: i64,
) -> ApiResult<UserCreated> {
    check_name("name", name)?;
    if let Some(url) = notification_url {
        check_peer_url("notification_url", url)?;
    }
    let user_id = UserId::generate();
    let api_key = random_token(API_KEY_PREFIX, 40);
    let secret = notification_url.map(|_| Secret::generate().expose());
    sqlx::query(
        "INSERT INTO users (id, name, api_key_hash, notification_url, notification_secret, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user_id.as_str())
    .bind(name)
    .bind(sha256_hex(api_key.as_bytes()))
    .bind(notification_url)
    .bind(&secret)
    .bind(now)
    .execute(db)
    .await?;
    tracing::info!(user = %user_id, "user created");
    Ok(UserCreated {
        user_id,
        api_key,
        notification_secret: secret,
    })
}

/// The user owning an API key.
pub(crate) async fn by_key(db: &SqlitePool, key: &str) -> ApiResult<Option<UserId>> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE api_key_hash = $1")
        .bind(sha256_hex(key.as_bytes()))
        .fetch_optional(db)
        .await?;
    Ok(id.map(|id| scalar_id("users.id", id)).transpose()?)
}

/// Whether a user exists.
pub(crate) async fn exists(db: &SqlitePool, user: &UserId) -> ApiResult<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(user.as_str())
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

/// A user's profile: name, notification URL and groups (oldest membership first).
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) notification_url: Option<String>,
    pub(crate) groups: Vec<GroupId>,
}

/// The profile of `user` (who exists: it was authenticated).
pub(crate) async fn profile(db: &SqlitePool, user: &UserId) -> ApiResult<Profile> {
    let (name, notification_url): (String, Option<String>) =
        sqlx::query_as("SELECT name, notification_url FROM users WHERE id = $1")
            .bind(user.as_str())
            .fetch_one(db)
            .await?;
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY added_at, group_id",
    )
    .bind(user.as_str())
    .fetch_all(db)
    .await?;
    let groups = groups
        .into_iter()
        .map(|g| scalar_id("group_members.group_id", g))
        .collect::<Result<_, _>>()?;
    Ok(Profile {
        name,
        notification_url,
        groups,
    })
}

/// Whether `user` is a member of `group`; `NotFound` when the group does not exist.
pub(crate) async fn is_member(db: &SqlitePool, group: &GroupId, user: &UserId) -> ApiResult<bool> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT g.id, m.user_id FROM groups g
         LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = $2
         WHERE g.id = $1",
    )
    .bind(group.as_str())
    .bind(user.as_str())
    .fetch_optional(db)
    .await?;
    match row {
        None => Err(ApiError::NotFound(format!("no group {group}"))),
        Some((_, member)) => Ok(member.is_some()),
    }
}

/// `NotFound` when `group` does not exist, `Forbidden` when `user` is not a member.
pub(crate) async fn require_member(
    db: &SqlitePool,
    group: &GroupId,
    user: &UserId,
) -> ApiResult<()> {
    if is_member(db, group, user).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "you are not a member of {group}"
        )))
    }
}

/// The group with its members (oldest first), or `NotFound`.
pub(crate) async fn group(db: &SqlitePool, group: &GroupId) -> ApiResult<Group> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM groups WHERE id = $1")
        .bind(group.as_str())
        .fetch_optional(db)
        .await?;
    let name = name.ok_or_else(|| ApiError::NotFound(format!("no group {group}")))?;
    let members: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY added_at, user_id",
    )
    .bind(group.as_str())
    .fetch_all(db)
    .await?;
    Ok(Group {
        group_id: group.clone(),
        name,
        members: members
            .into_iter()
            .map(|m| scalar_id("group_members.user_id", m))
            .collect::<Result<_, _>>()?,
    })
}

/// Creates a group named `name` with `creator` as its first member.
pub(crate) async fn create_group(
    db: &SqlitePool,
    creator: &UserId,
    name: &str,
    now: i64,
) -> ApiResult<Group> {
    check_name("name", name)?;
    let id = GroupId::generate();
    let mut tx = super::begin_write(db).await?;
    sqlx::query("INSERT INTO groups (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.as_str())
        .bind(name)
        .bind(creator.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)")
        .bind(id.as_str())
        .bind(creator.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    group(db, &id).await
}

/// `by` (a member) adds `user` to `group`; adding a member twice changes nothing.
pub(crate) async fn add_member(
    db: &SqlitePool,
    by: &UserId,
    group_id: &GroupId,
    user: &UserId,
    now: i64,
) -> ApiResult<Group> {
    require_member(db, group_id, by).await?;
    if !exists(db, user).await? {
        return Err(ApiError::NotFound(format!("no user {user}")));
    }
    sqlx::query(
        "INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)
         ON CONFLICT (group_id, user_id) DO NOTHING",
    )
    .bind(group_id.as_str())
    .bind(user.as_str())
    .bind(now)
    .execute(db)
    .await?;
    group(db, group_id).await
}
