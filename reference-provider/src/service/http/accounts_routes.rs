//! The provider's own API for its users: accounts, balance, ledger, top-up, link tokens;
//! and the operator's credit of an account (a payment system's entry point).

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use diax_sdk::Problem;
use diax_sdk::clock::unix_now;
use diax_sdk::wire::LinkTokenGrant;

use super::{ApiJson, Authenticated, bearer};
use crate::service::Service;
use crate::service::accounts::{
    self, AccountCreated, AccountView, CreateAccount, Ledger, TopUp, TopUpDone,
};
use crate::service::error::{ApiError, ApiResult};
use crate::service::registration;

/// OpenAPI description of the account routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, me, ledger, top_up, link_token, operator_top_up))]
pub(crate) struct Api;

/// Account routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/v1/accounts", post(create))
        .route("/v1/accounts/me", get(me))
        .route("/v1/accounts/me/ledger", get(ledger))
        .route("/v1/accounts/me/top-up", post(top_up))
        .route("/v1/accounts/me/link-token", post(link_token))
        .route(
            "/v1/operator/accounts/{account_id}/top-up",
            post(operator_top_up),
        )
}

/// The caller presented the configured operator key (`Authorization: Bearer <key>`).
/// Checked before the body is read: `403 forbidden` when this instance has no operator key,
/// `401 unauthorized` for a missing or wrong one.
#[derive(Debug)]
pub struct Operator;

impl FromRequestParts<Service> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Service) -> Result<Self, ApiError> {
        let Some(key) = &state.config().operator_key else {
            return Err(ApiError::Problem(
                Problem::new(diax_sdk::ProblemType::Forbidden).with_detail(
                    "no operator key is configured on this instance (--operator-key, \
                     FIXMYPRINT_OPERATOR_KEY)",
                ),
            ));
        };
        match bearer(parts) {
            Some(presented) if key.matches(presented) => Ok(Operator),
            Some(_) => Err(ApiError::Unauthorized("not the operator key")),
            None => Err(ApiError::Unauthorized(
                "send the operator key as Authorization: Bearer <key>",
            )),
        }
    }
}

/// The `Idempotency-Key` header, if any; `Err` when it is not ASCII.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, http::header::ToStrError> {
    headers
        .get("idempotency-key")
        .map(|v| v.to_str())
        .transpose()
}

fn not_ascii(_: http::header::ToStrError) -> ApiError {
    ApiError::Invalid("Idempotency-Key must be ASCII".into())
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
/// Every money movement of the account, oldest first: `top_up`, `hold`, `capture`, `release`;
/// in pages of at most 1,000 entries. A page that is not the last ends with `next_after`: pass
/// it as `after` for the next one.
#[utoipa::path(
    get,
    path = "/v1/accounts/me/ledger",
    operation_id = "get_ledger",
    tag = "accounts",
    security(("api_key" = [])),
    params(
        ("after" = Option<String>, Query, description = "Start after this entry (an `entry_id` of this account's ledger, as a page's `next_after`); from the first entry without it"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many entries, 1 to 1000 (the default)"),
    ),
    responses(
        (status = 200, description = "A page of the ledger, oldest first", body = Ledger),
        (status = 400, description = "`invalid-request`: `limit` out of range, `after` not an entry of this account's ledger, or another query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ledger(
    State(service): State<Service>,
    Authenticated(account): Authenticated,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Ledger>> {
    let max = accounts::LEDGER_PAGE_MAX;
    // What a refusal quotes of the request: its first 64 characters.
    let quoted = |s: &str| format!("{:?}", s.chars().take(64).collect::<String>());
    let (mut after, mut limit) = (None, max);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*name {
            "after" => after = Some(value.into_owned()),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::Invalid(format!(
                            "limit must be an integer from 1 to {max}, not {}",
                            quoted(&value)
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::Invalid(format!(
                    "unknown query parameter {} (the ledger takes after and limit)",
                    quoted(other)
                )));
            }
        }
    }
    let page = accounts::ledger_page(
        service.db(),
        account.account_id.as_str(),
        after.as_deref(),
        limit,
    )
    .await?
    .ok_or_else(|| {
        ApiError::Invalid(format!(
            "after: {} is not an entry of this account's ledger",
            quoted(after.as_deref().unwrap_or_default())
        ))
    })?;
    let next_after = page
        .more
        .then(|| page.entries.last().map(|e| e.entry_id.clone()))
        .flatten();
    let view = AccountView::from(account);
    Ok(Json(Ledger {
        account_id: view.account_id,
        currency: view.currency,
        entries: page.entries,
        next_after,
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
    let key = idempotency_key(&headers).map_err(not_ascii)?;
    let done = accounts::top_up(service.db(), account.account_id.as_str(), req.amount, key).await?;
    Ok(Json(done))
}

/// Credit an account (operator)
///
/// How money comes in for real: the operator's payment system, once a payment settles,
/// credits the account it was for, with the operator key (`--operator-key`) and the
/// payment's id as `Idempotency-Key`, so that a settlement reported twice credits once.
/// `403 forbidden` when this instance has no operator key. An account's own API key is
/// not enough.
#[utoipa::path(
    post,
    path = "/v1/operator/accounts/{account_id}/top-up",
    operation_id = "operator_top_up",
    tag = "operator",
    security(("operator_key" = [])),
    params(
        ("account_id" = String, Path, description = "The account to credit (`acc_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "The payment's id: the same key adds the amount once"),
    ),
    request_body = TopUp,
    responses(
        (status = 200, description = "The ledger entry and the account's new balance", body = TopUpDone),
        (status = 400, description = "`invalid-request`: amount outside 1 to 100 000 000, or a non-ASCII key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no operator key presented, or not the configured one", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: no operator key is configured on this instance", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the idempotency key was used with another amount", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn operator_top_up(
    State(service): State<Service>,
    _operator: Operator,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TopUp>,
) -> ApiResult<Json<TopUpDone>> {
    if account_id.len() > 100 {
        return Err(ApiError::NotFound("no such account".into()));
    }
    let key = idempotency_key(&headers).map_err(not_ascii)?;
    let done = accounts::top_up(service.db(), &account_id, req.amount, key).await?;
    tracing::info!(account = %account_id, amount = req.amount, entry = %done.entry.entry_id, "operator top-up");
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
