//! The provider's own API for its users: accounts, balance, ledger, top-up, link tokens.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use diax_sdk::wire::LinkTokenGrant;
use diax_sdk::{AccountId, unix_now};

use super::{ApiJson, Authenticated};
use crate::service::Service;
use crate::service::accounts::{
    self, AccountCreated, AccountView, CreateAccount, Ledger, TopUp, TopUpDone,
};
use crate::service::error::{ApiError, ApiResult};
use crate::service::registration;

/// Account routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/v1/accounts", post(create))
        .route("/v1/accounts/me", get(me))
        .route("/v1/accounts/me/ledger", get(ledger))
        .route("/v1/accounts/me/top-up", post(top_up))
        .route("/v1/accounts/me/link-token", post(link_token))
}

async fn create(
    State(service): State<Service>,
    ApiJson(req): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<AccountCreated>)> {
    let created =
        accounts::create_account(service.db(), &req, &service.config().pricing.currency).await?;
    tracing::info!(account = %created.account_id, "account created");
    Ok((StatusCode::CREATED, Json(created)))
}

async fn me(Authenticated(account): Authenticated) -> Json<AccountView> {
    Json(account.into())
}

async fn ledger(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
) -> ApiResult<Json<Ledger>> {
    let entries = accounts::ledger(service.db(), &account.account_id).await?;
    let view = AccountView::from(account);
    Ok(Json(Ledger {
        account_id: view.account_id,
        currency: view.currency,
        entries,
    }))
}

async fn top_up(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TopUp>,
) -> ApiResult<Json<TopUpDone>> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::Invalid("Idempotency-Key must be ASCII".into()))?,
        ),
        None => None,
    };
    let done = accounts::top_up(service.db(), &account.account_id, req.amount, key).await?;
    Ok(Json(done))
}

async fn link_token(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
) -> ApiResult<Json<LinkTokenGrant>> {
    let now = unix_now();
    let issuer = registration::issuer(service.db(), now)
        .await?
        .ok_or(ApiError::NotRegistered)?;
    let account_id = AccountId::parse(account.account_id.clone())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let issued = issuer
        .issue_at(&account_id, now)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(LinkTokenGrant {
        token: issued.token,
        provider_id: issued.claims.iss,
        account_id,
        expires_at: issued.claims.exp,
    }))
}
