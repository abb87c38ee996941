//! `/v1/models`: upload, list, get, and the versioned content download by the owner's API
//! key or by a temporary credential. Thin handlers over [`crate::store::models`].

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use diax_sdk::wire::{Model, ModelList, broker_paths};
use diax_sdk::{ModelId, Problem};
use futures_util::StreamExt as _;
use http::{HeaderValue, StatusCode, header};

use super::extract::{AuthUser, bearer, is_credential, path_id, read_model_body};
use super::respond::{json, with_note};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::messages::Note;
use crate::store::{jobs, models, users};

/// OpenAPI description of the model repository routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(upload, list, get_model, content, report))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::MODELS, post(upload).get(list))
        .route(broker_paths::MODEL, get(get_model))
        .route(
            broker_paths::MODEL_CONTENT,
            get(content).fallback(content_other_method),
        )
        .route(broker_paths::MODEL_REPORT, get(report))
}

/// Upload a model
///
/// Stores the raw STL bytes as version 1 of a new model in the caller's repository.
#[utoipa::path(
    post,
    path = "/v1/models",
    operation_id = "upload_model",
    tag = "models",
    security(("api_key" = [])),
    params(("name" = String, Query, description = "The file name: 1 to 255 characters without `/`, `\\` or control characters")),
    request_body(
        description = "The raw STL file",
        content(
            (Vec<u8> = "application/octet-stream"),
            (Vec<u8> = "model/stl"),
        )
    ),
    responses(
        (status = 201, description = "The new model with its first version", body = Model),
        (status = 400, description = "`invalid-request`: missing or bad `name`, or an empty body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the user holds as many models as the broker allows (`--max-models-per-user`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the model is larger than the broker accepts, or would pass the user's storage quota (`--max-stored-bytes-per-user`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/octet-stream` or `model/stl`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service-unavailable`: the broker holds as many model bytes in memory as it may (`--max-buffered-model-bytes`); nothing was stored, try again after `Retry-After`", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u32, description = "Seconds to wait before trying again (1)"))),
    )
)]
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> ApiResult<Response> {
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::InvalidRequest("missing ?name= (the file name)".into()))?
        .clone();
    models::check_file_name(&name)?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/octet-stream" && essence != "model/stl" {
        return Err(ApiError::UnsupportedMediaType(format!(
            "content-type {ct:?}: upload the raw STL as application/octet-stream or model/stl"
        )));
    }
    let quota = models::Quota {
        models: state.cfg.max_models_per_user,
        bytes: state.cfg.max_stored_bytes_per_user,
    };
    let id = ModelId::generate();
    let max = state.cfg.max_model_bytes as u64;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return Err(ApiError::PayloadTooLarge(format!(
            "body larger than {max} bytes"
        )));
    }
    // What this upload will hold in memory, reserved before a byte is read: the announced
    // size (the limit when none is announced), or what the bucket buffers of it.
    let whole = announced.unwrap_or(max);
    let held = match &state.bucket {
        None => whole,
        Some(bucket) => whole.min(bucket.buffered_bytes()),
    };
    let _held = state.model_budget.reserve(held, "this upload")?;
    let body = match &state.bucket {
        None => {
            models::Body::Inline(read_model_body(req, state.cfg.max_model_bytes, announced).await?)
        }
        Some(bucket) => {
            // Streamed into the bucket (in parts above the part size): refused up front when
            // the announced size is too large (above), then on the bytes actually sent.
            models::precheck_quota(&state.db, &user.id, announced.unwrap_or(0), quota).await?;
            let stream = req.into_body().into_data_stream();
            models::stage_stream(bucket, &id, stream, max).await?
        }
    };
    let model = models::upload(
        &state.db,
        &state.base_url,
        &models::NewModel {
            id: &id,
            owner: &user.id,
            name: &name,
            body: &body,
        },
        quota,
        state.clock.now(),
    )
    .await;
    if model.is_err() {
        models::discard(state.bucket.as_ref(), &body).await;
    }
    Ok(json(StatusCode::CREATED, &model?))
}

/// The caller's models
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "list_models",
    tag = "models",
    security(("api_key" = [])),
    responses((status = 200, description = "The caller's models, oldest first", body = ModelList))
)]
async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    Ok(json(
        StatusCode::OK,
        &models::list(&state.db, &state.base_url, &user.id).await?,
    ))
}

/// One model
#[utoipa::path(
    get,
    path = "/v1/models/{model_id}",
    tag = "models",
    security(("api_key" = [])),
    params(("model_id" = ModelId, Path, description = "The model")),
    responses(
        (status = 200, description = "The model with its versions, oldest first", body = Model),
        (status = 400, description = "`invalid-request`: malformed model id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such model of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_model(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: ModelId = path_id("model", &id)?;
    Ok(json(
        StatusCode::OK,
        &models::find(&state.db, &state.base_url, &user.id, &id).await?,
    ))
}

/// The bytes of one model version
///
/// For the owner's API key, or for a temporary credential issued for exactly this version
/// (GET only; any other method with a credential is `403 credential-scope`).
#[utoipa::path(
    get,
    path = "/v1/models/{model_id}/versions/{version}/content",
    operation_id = "get_model_content",
    tag = "models",
    security(("api_key" = []), ("temporary_credential" = [])),
    params(
        ("model_id" = ModelId, Path, description = "The model"),
        ("version" = u32, Path, description = "The version, from 1"),
    ),
    responses(
        (status = 200, description = "The STL bytes", body = Vec<u8>, content_type = "model/stl",
            headers(("x-content-sha256" = String, description = "SHA-256 of the bytes, lowercase hex"))),
        (status = 400, description = "`invalid-request`: malformed model id or version", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized` (no or unknown API key) or `credential-invalid` (unknown, tampered with or expired credential)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`credential-scope`: a credential for another model, version or method", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such model or version of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "`method-not-allowed`: any method but GET", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service-unavailable`: sending this version would pass the broker's budget of model bytes held in memory (`--max-buffered-model-bytes`); try again after `Retry-After`", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u32, description = "Seconds to wait before trying again (1)"))),
    )
)]
async fn content(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let token = bearer(req.headers()).map(str::to_owned);
    let mut note = Note::default();
    let owner_check = match token.as_deref() {
        Some(t) if is_credential(t) => {
            let job = models::check_credential(
                &state.db,
                t,
                req.method().as_str(),
                &model,
                &version,
                state.clock.now(),
            )
            .await?;
            note.verdict = Some("temporary credential accepted".into());
            if let Some(job) = jobs::find(&state.db, &job).await? {
                note.job_id = Some(job.id.to_string());
                note.provider_id = Some(job.provider_id.to_string());
            }
            None
        }
        Some(t) => match users::by_key(&state.db, t).await? {
            Some(user) => Some(user),
            None => return Err(ApiError::Unauthorized("unknown API key")),
        },
        None => {
            return Err(ApiError::Unauthorized(
                "send your API key or a temporary credential as `Authorization: Bearer …`",
            ));
        }
    };
    let model_id: ModelId = path_id("model", &model)?;
    let version_no: u32 = version.parse().map_err(|_| {
        ApiError::InvalidRequest(format!("version {version:?} is not a positive integer"))
    })?;
    let Some(content) = models::content(&state.db, &model_id, version_no).await? else {
        return Err(ApiError::NotFound(format!(
            "no version {version} of model {model_id}"
        )));
    };
    if let Some(user) = owner_check {
        if user != content.owner {
            return Err(ApiError::NotFound(format!("no model {model_id}")));
        }
        // The owner downloading a job's result: part of that job's timeline.
        if let Some(job) = &content.source_job {
            note.job_id = Some(job.clone());
            note.verdict = Some("result downloaded by its owner".into());
        }
    }
    let mut resp = match &content.object_key {
        // Loaded whole from the row: the size is reserved first and held until the body
        // has been sent (or the client has gone).
        None => {
            let held = state.model_budget.reserve(content.size, "this download")?;
            let bytes = models::content_bytes(&state.db, &model_id, version_no).await?;
            let size = bytes.len() as u64;
            let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                bytes::Bytes::from(bytes),
            )])
            .map(move |chunk| {
                let _held = &held;
                chunk
            });
            let mut resp = (StatusCode::OK, axum::body::Body::from_stream(body)).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            resp
        }
        // Streamed from the bucket, never whole in memory.
        Some(key) => {
            let (size, stream) = models::open_object(state.bucket.as_ref(), key).await?;
            let mut resp = (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            resp
        }
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("model/stl"));
    if let Ok(v) = HeaderValue::from_str(&content.sha256) {
        resp.headers_mut().insert("x-content-sha256", v);
    }
    Ok(with_note(resp, note))
}

/// The picture of the job that made one version
///
/// The PNG the provider drew of its work (e.g. FixMyPrint's repair before and after), kept
/// with the version it made; for the model's owner. The version's `report_url` says whether
/// there is one.
#[utoipa::path(
    get,
    path = "/v1/models/{model_id}/versions/{version}/report",
    operation_id = "get_model_report",
    tag = "models",
    security(("api_key" = [])),
    params(
        ("model_id" = ModelId, Path, description = "The model"),
        ("version" = u32, Path, description = "The version, from 1"),
    ),
    responses(
        (status = 200, description = "The PNG", body = Vec<u8>, content_type = "image/png",
            headers(("x-content-sha256" = String, description = "SHA-256 of the bytes, lowercase hex"))),
        (status = 400, description = "`invalid-request`: malformed model id or version", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such model or version of the caller's, or the version has no picture", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn report(
    State(state): State<AppState>,
    user: AuthUser,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let model_id: ModelId = path_id("model", &model)?;
    let version_no: u32 = version.parse().map_err(|_| {
        ApiError::InvalidRequest(format!("version {version:?} is not a positive integer"))
    })?;
    let no_version = || ApiError::NotFound(format!("no version {version_no} of model {model_id}"));
    let no_picture = || {
        ApiError::NotFound(format!(
            "version {version_no} of model {model_id} has no picture"
        ))
    };
    let found = models::picture_size(&state.db, &model_id, version_no).await?;
    let Some((size, _)) = found.filter(|(_, owner)| *owner == user.id) else {
        return Err(no_version());
    };
    // Loaded whole from the row: its size is reserved first and held until the body has
    // been sent (or the client has gone).
    let held = state
        .model_budget
        .reserve(size.ok_or_else(no_picture)?, "this picture")?;
    let found = models::picture(&state.db, &model_id, version_no).await?;
    let Some((png, sha256)) = found else {
        return Err(no_picture());
    };
    let len = png.len() as u64;
    let body =
        futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(png))])
            .map(move |chunk| {
                let _held = &held;
                chunk
            });
    let mut resp = (StatusCode::OK, axum::body::Body::from_stream(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    if let Ok(v) = HeaderValue::from_str(&sha256) {
        resp.headers_mut().insert("x-content-sha256", v);
    }
    Ok(resp)
}

/// Any method but GET on the content URL: refused as credential misuse when a credential
/// is presented, otherwise 405.
async fn content_other_method(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    if let Some(t) = bearer(req.headers()).filter(|t| is_credential(t)) {
        models::check_credential(
            &state.db,
            t,
            req.method().as_str(),
            &model,
            &version,
            state.clock.now(),
        )
        .await?;
    }
    Err(ApiError::MethodNotAllowed(req.method().to_string()))
}
