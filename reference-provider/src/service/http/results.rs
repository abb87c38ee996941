//! `GET /results/{provider_job_id}`: a result, and `GET /results/{provider_job_id}/picture`:
//! its repair picture, for the bearer of the result's temporary credential (one job, GET
//! only, expiring).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::{Problem, ProviderJobId};

use super::bearer;
use crate::service::Service;
use crate::service::db::fetch_optional;
use crate::service::error::{ApiError, ApiResult};

/// OpenAPI description of the result route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(fetch, fetch_picture))]
pub(crate) struct Api;

/// Result routes.
pub fn router() -> Router<Service> {
    Router::new()
        .route("/results/{provider_job_id}", any(fetch))
        .route("/results/{provider_job_id}/picture", any(fetch_picture))
}

#[derive(sqlx::FromRow)]
struct Credential {
    provider_job_id: String,
    object_key: String,
    expires_at: i64,
}

/// A repaired model (the `job.completed` download)
///
/// For the bearer of the result credential (`rc_…`) of exactly this job; GET or HEAD only.
#[utoipa::path(
    method(get, head),
    path = "/results/{provider_job_id}",
    operation_id = "get_result",
    tag = "broker",
    security(("result_credential" = [])),
    params(("provider_job_id" = ProviderJobId, Path, description = "The provider's job id")),
    responses(
        (status = 200, description = "The repaired binary STL (no body for HEAD)", body = Vec<u8>, content_type = "model/stl"),
        (status = 401, description = "`credential-invalid`: missing, unknown or expired credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`credential-scope`: another job's credential, or a method other than GET and HEAD", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: the result is no longer stored", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fetch(
    State(service): State<Service>,
    Path(provider_job_id): Path<String>,
    method: Method,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    serve(&service, &provider_job_id, &method, request, Object::Result).await
}

/// The repair picture of a result (`job.completed`'s `picture`)
///
/// The PNG of the model before and after the repair, for the bearer of the same result
/// credential (`rc_…`) as the result; GET or HEAD only. Served while the result is.
#[utoipa::path(
    method(get, head),
    path = "/results/{provider_job_id}/picture",
    operation_id = "get_result_picture",
    tag = "broker",
    security(("result_credential" = [])),
    params(("provider_job_id" = ProviderJobId, Path, description = "The provider's job id")),
    responses(
        (status = 200, description = "The PNG (no body for HEAD)", body = Vec<u8>, content_type = "image/png"),
        (status = 401, description = "`credential-invalid`: missing, unknown or expired credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`credential-scope`: another job's credential, or a method other than GET and HEAD", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: the job has no picture, or it is no longer stored", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fetch_picture(
    State(service): State<Service>,
    Path(provider_job_id): Path<String>,
    method: Method,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    serve(
        &service,
        &provider_job_id,
        &method,
        request,
        Object::Picture,
    )
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Object {
    Result,
    Picture,
}

async fn serve(
    service: &Service,
    provider_job_id: &str,
    method: &Method,
    request: axum::extract::Request,
    object: Object,
) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    let token = bearer(&parts).ok_or(ApiError::CredentialInvalid)?;
    if token.len() > 200 {
        return Err(ApiError::CredentialInvalid);
    }
    let mut tx = service.db().begin().await?;
    let cred = fetch_optional!(
        &mut tx,
        Credential,
        "SELECT provider_job_id, object_key, expires_at FROM result_credentials WHERE token_hash = $1",
        sha256_hex(token.as_bytes())
    )?;
    tx.commit().await?;
    let cred = cred.ok_or(ApiError::CredentialInvalid)?;
    if cred.expires_at < unix_now() {
        return Err(ApiError::CredentialInvalid);
    }
    if cred.provider_job_id != provider_job_id
        || (*method != Method::GET && *method != Method::HEAD)
    {
        return Err(ApiError::CredentialScope);
    }
    let (key, content_type, missing) = match object {
        Object::Result => (
            cred.object_key.clone(),
            "model/stl",
            "the result is no longer stored",
        ),
        Object::Picture => (
            crate::service::storage::picture_key(&cred.object_key),
            "image/png",
            "this job has no picture, or it is no longer stored",
        ),
    };
    let bytes = service
        .storage()
        .get(&key)
        .await
        .map_err(|e| ApiError::Internal(format!("result store: {e}")))?
        .ok_or_else(|| ApiError::NotFound(missing.into()))?;
    let mut response = if method == Method::HEAD {
        let mut r = ().into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        r
    } else {
        bytes.into_response()
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
