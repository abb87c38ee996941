//! The model repository: upload, list, get, versioned content download by the owner's API
//! key or by a temporary credential; and the credentials themselves.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use diax_sdk::util::{random_token, sha256_hex};
use diax_sdk::wire::{Model, ModelList, ModelVersion, VersionSource, broker_paths};
use diax_sdk::{JobId, ModelId, Problem, ProviderId, UserId};
use http::{HeaderValue, Method, StatusCode, header};

use super::{AuthUser, bearer, json, path_id, read_body};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Prefix of temporary credentials.
pub(crate) const CREDENTIAL_PREFIX: &str = "tc_";

/// OpenAPI description of the model repository routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(upload, list, get_model, content))]
pub(crate) struct Api;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(broker_paths::MODELS, post(upload).get(list))
        .route(broker_paths::MODEL, get(get_model))
        .route(
            broker_paths::MODEL_CONTENT,
            get(content).fallback(content_other_method),
        )
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i64,
    size: i64,
    sha256: String,
    created_at: i64,
    source_job_id: Option<String>,
    source_provider_id: Option<String>,
    source_from_version: Option<i64>,
}

impl VersionRow {
    fn into_version(self) -> ModelVersion {
        let source = match (
            self.source_job_id,
            self.source_provider_id,
            self.source_from_version,
        ) {
            (Some(j), Some(p), Some(v)) => match (JobId::parse(j), ProviderId::parse(p)) {
                (Ok(job_id), Ok(provider_id)) => Some(VersionSource {
                    job_id,
                    provider_id,
                    from_version: u32::try_from(v).unwrap_or(0),
                }),
                _ => None,
            },
            _ => None,
        };
        ModelVersion {
            version: u32::try_from(self.version).unwrap_or(0),
            size: u64::try_from(self.size).unwrap_or(0),
            sha256: self.sha256,
            created_at: self.created_at,
            source,
        }
    }
}

/// The caller's model `id` with its versions, or 404 (also when it is someone else's).
pub(crate) async fn load_model(state: &AppState, owner: &UserId, id: &ModelId) -> ApiResult<Model> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM models WHERE id = $1 AND owner_id = $2")
            .bind(id.as_str())
            .bind(owner.as_str())
            .fetch_optional(&state.db)
            .await?;
    let name = name.ok_or_else(|| ApiError::NotFound(format!("no model {id}")))?;
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT version, size, sha256, created_at, source_job_id, source_provider_id, source_from_version
         FROM model_versions WHERE model_id = $1 ORDER BY version",
    )
    .bind(id.as_str())
    .fetch_all(&state.db)
    .await?;
    Ok(Model {
        model_id: id.clone(),
        name,
        versions: rows.into_iter().map(VersionRow::into_version).collect(),
    })
}

fn check_file_name(name: &str) -> ApiResult<()> {
    let n = name.chars().count();
    if n == 0
        || n > 255
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
        || name == "."
        || name == ".."
    {
        return Err(ApiError::InvalidRequest(
            "?name= must be a file name of 1 to 255 characters without '/', '\\' or control characters".into(),
        ));
    }
    Ok(())
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
        (status = 413, description = "`payload-too-large`: the model is larger than the broker accepts", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/octet-stream` or `model/stl`", body = Problem, content_type = "application/problem+json"),
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
    check_file_name(&name)?;
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
    let body = read_body(req, state.cfg.max_model_bytes).await?;
    if body.is_empty() {
        return Err(ApiError::InvalidRequest("empty model".into()));
    }
    let id = ModelId::generate();
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    sqlx::query("INSERT INTO models (id, owner_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id.as_str())
        .bind(user.id.as_str())
        .bind(&name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO model_versions (model_id, version, size, sha256, content, created_at) VALUES ($1, 1, $2, $3, $4, $5)",
    )
    .bind(id.as_str())
    .bind(i64::try_from(body.len()).unwrap_or(i64::MAX))
    .bind(sha256_hex(&body))
    .bind(body.as_ref())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(json(
        StatusCode::CREATED,
        &load_model(&state, &user.id, &id).await?,
    ))
}

/// Stores `bytes` as a new version of `model`, made by a job; returns the version number.
pub(crate) async fn add_version(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    source: &VersionSource,
) -> ApiResult<u32> {
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO model_versions (model_id, version, size, sha256, content, created_at, source_job_id, source_provider_id, source_from_version)
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8 FROM model_versions WHERE model_id = $1
         RETURNING version",
    )
    .bind(model)
    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
    .bind(sha256_hex(bytes))
    .bind(bytes)
    .bind(state.clock.now())
    .bind(source.job_id.as_str())
    .bind(source.provider_id.as_str())
    .bind(i64::from(source.from_version))
    .fetch_one(&state.db)
    .await?;
    u32::try_from(version).map_err(|e| ApiError::Internal(e.to_string()))
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
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM models WHERE owner_id = $1 ORDER BY created_at, id")
            .bind(user.id.as_str())
            .fetch_all(&state.db)
            .await?;
    let mut models = Vec::with_capacity(ids.len());
    for id in ids {
        let id = ModelId::parse(id).map_err(|e| ApiError::Internal(e.to_string()))?;
        models.push(load_model(&state, &user.id, &id).await?);
    }
    Ok(json(StatusCode::OK, &ModelList { models }))
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
        &load_model(&state, &user.id, &id).await?,
    ))
}

/// Creates a temporary credential for GETting one model version; returns the bearer value.
pub(crate) async fn issue_credential(
    state: &AppState,
    job: &str,
    model: &str,
    version: i64,
    expires_at: i64,
) -> ApiResult<String> {
    let token = random_token(CREDENTIAL_PREFIX, 40);
    sqlx::query(
        "INSERT INTO credentials (token_hash, job_id, model_id, version, method, expires_at, created_at)
         VALUES ($1, $2, $3, $4, 'GET', $5, $6)",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(job)
    .bind(model)
    .bind(version)
    .bind(expires_at)
    .bind(state.clock.now())
    .execute(&state.db)
    .await?;
    Ok(token)
}

/// Checks a temporary credential for `method` on `model`/`version`.
async fn check_credential(
    state: &AppState,
    token: &str,
    method: &Method,
    model: &str,
    version: &str,
) -> ApiResult<()> {
    let row: Option<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT model_id, version, method, expires_at FROM credentials WHERE token_hash = $1",
    )
    .bind(sha256_hex(token.as_bytes()))
    .fetch_optional(&state.db)
    .await?;
    let Some((c_model, c_version, c_method, expires_at)) = row else {
        return Err(ApiError::CredentialInvalid(
            "unknown or tampered temporary credential",
        ));
    };
    if state.clock.now() > expires_at {
        return Err(ApiError::CredentialInvalid("temporary credential expired"));
    }
    if c_model != model || c_version.to_string() != version {
        return Err(ApiError::CredentialScope(format!(
            "this credential opens {c_model} version {c_version} only"
        )));
    }
    if method.as_str() != c_method {
        return Err(ApiError::CredentialScope(format!(
            "this credential allows {c_method} only, not {method}"
        )));
    }
    Ok(())
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
    )
)]
async fn content(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let token = bearer(req.headers()).map(str::to_owned);
    let mut note = super::LogNote::default();
    let owner_check = match token.as_deref() {
        Some(t) if t.starts_with(CREDENTIAL_PREFIX) => {
            check_credential(&state, t, req.method(), &model, &version).await?;
            note.verdict = Some("temporary credential accepted".into());
            let job: Option<(String, String)> = sqlx::query_as(
                "SELECT c.job_id, j.provider_id FROM credentials c JOIN jobs j ON j.id = c.job_id WHERE c.token_hash = $1",
            )
            .bind(sha256_hex(t.as_bytes()))
            .fetch_optional(&state.db)
            .await?;
            if let Some((job, provider)) = job {
                note.job_id = Some(job);
                note.provider_id = Some(provider);
            }
            None
        }
        Some(t) => match super::users::user_by_key(&state, t).await? {
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
    let version_no: i64 = version.parse::<u32>().map(i64::from).map_err(|_| {
        ApiError::InvalidRequest(format!("version {version:?} is not a positive integer"))
    })?;
    let row: Option<(Vec<u8>, String, String)> = sqlx::query_as(
        "SELECT v.content, v.sha256, m.owner_id FROM model_versions v JOIN models m ON m.id = v.model_id
         WHERE v.model_id = $1 AND v.version = $2",
    )
    .bind(model_id.as_str())
    .bind(version_no)
    .fetch_optional(&state.db)
    .await?;
    let Some((bytes, sha, owner)) = row else {
        return Err(ApiError::NotFound(format!(
            "no version {version} of model {model_id}"
        )));
    };
    if let Some(user) = owner_check
        && user.as_str() != owner
    {
        return Err(ApiError::NotFound(format!("no model {model_id}")));
    }
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("model/stl"));
    if let Ok(v) = HeaderValue::from_str(&sha) {
        resp.headers_mut().insert("x-content-sha256", v);
    }
    resp.extensions_mut().insert(note);
    Ok(resp)
}

/// Any method but GET on the content URL: refused as credential misuse when a credential
/// is presented, otherwise 405.
async fn content_other_method(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    if let Some(t) = bearer(req.headers()).filter(|t| t.starts_with(CREDENTIAL_PREFIX)) {
        check_credential(&state, t, req.method(), &model, &version).await?;
    }
    Err(ApiError::MethodNotAllowed(req.method().to_string()))
}
