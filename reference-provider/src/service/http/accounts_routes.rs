//! The provider's own API for its users: accounts, balance, ledger, top-up, link tokens.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use diax_sdk::Problem;
use diax_sdk::clock::unix_now;
use diax_sdk::wire::LinkTokenGrant;

use super::{ApiJson, Authenticated};
use crate::service::Service;
use crate::service::accounts::{
    self, AccountCreated, AccountView, CreateAccount, Ledger, TopUp, TopUpDone,
};
use crate::service::error::{ApiError, ApiResult};
use crate::service::registration;

/// OpenAPI description of the account routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, me, ledger, top_up, link_token))]
pub(crate) struct Api;

/// Account routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/v1/accounts", post(create))
        .route("/v1/accounts/me", get(me))
        .route("/v1/accounts/me/ledger", get(ledger))
        .route("/v1/accounts/me/top-up", post(top_up))
        .route("/v1/accounts/me/link-token", post(link_token))
}

/// Open an account
///
/// Answers the account's API key (shown once); the balance starts at 0.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    operation_id = "create_account",
    tag = "accounts",
    request_body = CreateAccount,
    responses(
        (status = 201, description = "The account and its API key (shown once)", body = AccountCreated),
        (status = 400, description = "`invalid-request`: a name that is not 1 to 100 printable characters, or unknown members", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(service): State<Service>,
    ApiJson(req): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<AccountCreated>)> {
    let created =
        accounts::create_account(service.db(), &req, &service.config().pricing.currency).await?;
    tracing::info!(account = %created.account_id, "account created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller's account
#[utoipa::path(
    get,
    path = "/v1/accounts/me",
    operation_id = "get_account",
    tag = "accounts",
    security(("api_key" = [])),
    responses((status = 200, description = "Balance (spendable) and held amounts", body = AccountView))
)]
async fn me(Authenticated(account): Authenticated) -> Json<AccountView> {
    Json(account.into())
}

/// The caller's ledger
///
/// Every money movement of the account, oldest first: `top_up`, `hold`, `capture`, `release`.
#[utoipa::path(
    get,
    path = "/v1/accounts/me/ledger",
    operation_id = "get_ledger",
    tag = "accounts",
    security(("api_key" = [])),
    responses((status = 200, description = "The ledger, oldest first", body = Ledger))
)]
async fn ledger(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
) -> ApiResult<Json<Ledger>> {
    let entries = accounts::ledger(service.db(), account.account_id.as_str()).await?;
    let view = AccountView::from(account);
    Ok(Json(Ledger {
        account_id: view.account_id,
        currency: view.currency,
        entries,
    }))
}

/// Top up the balance (development stand-in)
///
/// A stand-in for a payment system, for development and tests: it adds the amount with no
/// payment, so it is off unless the instance runs with `--dev-top-up` (otherwise `403
/// forbidden`). A real deployment credits accounts from its payment system instead (see
/// docs/FIXMYPRINT.md). With an `Idempotency-Key`, repeating the request returns the same
/// entry and adds nothing.
#[utoipa::path(
    post,
    path = "/v1/accounts/me/top-up",
    operation_id = "top_up",
    tag = "accounts",
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key adds the amount once")),
    request_body = TopUp,
    responses(
        (status = 200, description = "The ledger entry and the new balance", body = TopUpDone),
        (status = 400, description = "`invalid-request`: amount outside 1 to 100 000 000, or a non-ASCII key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the development top-up is turned off on this instance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the idempotency key was used with another amount", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn top_up(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TopUp>,
) -> ApiResult<Json<TopUpDone>> {
    if !service.config().dev_top_up {
        return Err(ApiError::Problem(
            Problem::new(diax_sdk::ProblemType::Forbidden).with_detail(
                "top-up without payment is a development stand-in, turned off on this \
                 instance (--dev-top-up turns it on); balances are credited by the payment system",
            ),
        ));
    }
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::Invalid("Idempotency-Key must be ASCII".into()))?,
        ),
        None => None,
    };
    let done = accounts::top_up(service.db(), account.account_id.as_str(), req.amount, key).await?;
    Ok(Json(done))
}

/// Issue a link token
///
/// An HS256 JWT (`typ` `diax-link+jwt`, `kid` the newest key, `iss` this provider, `aud` the
/// broker, `sub` the account, 15 minutes) the user hands to the broker (`POST /v1/links`).
#[utoipa::path(
    post,
    path = "/v1/accounts/me/link-token",
    operation_id = "issue_link_token",
    tag = "accounts",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The link token", body = LinkTokenGrant),
        (status = 503, description = "`service-unavailable`: this provider is not registered with a broker yet", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn link_token(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
) -> ApiResult<Json<LinkTokenGrant>> {
    let now = unix_now();
    let issuer = registration::issuer(service.db(), now)
        .await?
        .ok_or(ApiError::NotRegistered)?;
    let account_id = account.account_id;
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
