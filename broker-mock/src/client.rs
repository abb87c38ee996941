//! A typed async client of the broker's user API, for tests and the demo. Errors keep the
//! broker's problem document.

use diax_sdk::wire::{
    AccountLink, AckNotifications, CreateGroup, CreateJob, CreateUser, Group, Job, JobList,
    LinkAccount, LinkList, Model, ModelList, NotificationList, PENDING_NOTIFICATIONS_HEADER,
    ProviderRegistered, RegisterProvider, Registry, RotateSecret, SecretRotated, User, UserCreated,
};
use diax_sdk::{GroupId, JobId, ModelId, NotificationId, Problem, ProviderId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::messages::MessageList;

/// Why a call to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with a problem.
    #[error("broker answered {status}: {problem}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem document.
        problem: Box<Problem>,
    },
    /// Transport or decoding failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not what the API promises.
    #[error("unexpected answer {status}: {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

impl ClientError {
    /// The problem, when the broker answered with one.
    #[must_use]
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Problem { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// Filters of `GET /v1/messages`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageFilter {
    /// `in` or `out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Only this provider's messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Only this job's messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// At most this many (1–1000, default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The broker's public (unauthenticated) API.
#[derive(Debug, Clone)]
pub struct BrokerApi {
    http: reqwest::Client,
    base: String,
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|_| ClientError::Unexpected {
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
        });
    }
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) => Err(ClientError::Problem {
            status,
            problem: Box::new(problem),
        }),
        Err(_) => Err(ClientError::Unexpected {
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
        }),
    }
}

impl BrokerApi {
    /// A client of the broker at `base_url` (no trailing slash needed).
    #[must_use]
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /v1/users`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_user(&self, req: &CreateUser) -> Result<UserCreated, ClientError> {
        decode(
            self.http
                .post(format!("{}/v1/users", self.base))
                .json(req)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/registry?service_kind=`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn registry(&self, service_kind: Option<&str>) -> Result<Registry, ClientError> {
        let mut req = self.http.get(format!("{}/v1/registry", self.base));
        if let Some(k) = service_kind {
            req = req.query(&[("service_kind", k)]);
        }
        decode(req.send().await?).await
    }

    /// `GET /v1/messages` with filters.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn messages(&self, filter: &MessageFilter) -> Result<MessageList, ClientError> {
        decode(
            self.http
                .get(format!("{}/v1/messages", self.base))
                .query(filter)
                .send()
                .await?,
        )
        .await
    }

    /// A client acting as the user owning `api_key`.
    #[must_use]
    pub fn user(&self, api_key: impl Into<String>) -> UserClient {
        UserClient {
            api: self.clone(),
            api_key: api_key.into(),
        }
    }
}

/// The broker's API as one user (`Authorization: Bearer <api key>`).
#[derive(Clone)]
pub struct UserClient {
    api: BrokerApi,
    api_key: String,
}

impl std::fmt::Debug for UserClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserClient")
            .field("base", &self.api.base)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

impl UserClient {
    /// The API key this client sends (for handing to another client of the same user, such
    /// as a browser page; never logged by this type's `Debug`).
    #[must_use]
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.api.http.get(self.url(path)).bearer_auth(&self.api_key)
    }

    fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> reqwest::RequestBuilder {
        self.api
            .http
            .post(self.url(path))
            .bearer_auth(&self.api_key)
            .json(body)
    }

    /// `GET /v1/me`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn me(&self) -> Result<User, ClientError> {
        decode(self.get("/v1/me").send().await?).await
    }

    /// The `diax-pending-notifications` count, read from a `GET /v1/me` answer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn pending_count(&self) -> Result<u64, ClientError> {
        let resp = self.get("/v1/me").send().await?;
        let status = resp.status().as_u16();
        resp.headers()
            .get(PENDING_NOTIFICATIONS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or(ClientError::Unexpected {
                status,
                body: "no pending-notifications header".into(),
            })
    }

    /// `POST /v1/groups`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_group(&self, name: &str) -> Result<Group, ClientError> {
        decode(
            self.post("/v1/groups", &CreateGroup { name: name.into() })
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/groups/{group}/members`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn add_member(&self, group: &GroupId, user: &UserId) -> Result<Group, ClientError> {
        decode(
            self.post(
                &format!("/v1/groups/{group}/members"),
                &diax_sdk::wire::AddMember {
                    user_id: user.clone(),
                },
            )
            .send()
            .await?,
        )
        .await
    }

    /// `POST /v1/providers`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn register_provider(
        &self,
        req: &RegisterProvider,
    ) -> Result<ProviderRegistered, ClientError> {
        decode(self.post("/v1/providers", req).send().await?).await
    }

    /// `POST /v1/providers/{id}/secrets/rotate`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn rotate_secret(
        &self,
        provider: &ProviderId,
        req: &RotateSecret,
    ) -> Result<SecretRotated, ClientError> {
        decode(
            self.post(&format!("/v1/providers/{provider}/secrets/rotate"), req)
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/models?name=` with the raw STL bytes.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn upload_model(&self, name: &str, bytes: Vec<u8>) -> Result<Model, ClientError> {
        decode(
            self.api
                .http
                .post(self.url("/v1/models"))
                .bearer_auth(&self.api_key)
                .query(&[("name", name)])
                .header(reqwest::header::CONTENT_TYPE, "model/stl")
                .body(bytes)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/models`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn models(&self) -> Result<ModelList, ClientError> {
        decode(self.get("/v1/models").send().await?).await
    }

    /// `GET /v1/models/{id}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn model(&self, id: &ModelId) -> Result<Model, ClientError> {
        decode(self.get(&format!("/v1/models/{id}")).send().await?).await
    }

    /// `GET /v1/models/{id}/versions/{v}/content`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn download(&self, id: &ModelId, version: u32) -> Result<Vec<u8>, ClientError> {
        self.get_bytes(&format!("/v1/models/{id}/versions/{version}/content"))
            .await
    }

    /// `GET /v1/models/{id}/versions/{v}/report`: the PNG picture of the job that made the
    /// version.
    ///
    /// # Errors
    /// [`ClientError`]; `404 not-found` when the version has no picture.
    pub async fn report(&self, id: &ModelId, version: u32) -> Result<Vec<u8>, ClientError> {
        self.get_bytes(&format!("/v1/models/{id}/versions/{version}/report"))
            .await
    }

    async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.get(path).send().await?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp.bytes().await?.to_vec());
        }
        decode::<serde_json::Value>(resp)
            .await
            .and(Err(ClientError::Unexpected {
                status,
                body: String::new(),
            }))
    }

    /// `POST /v1/jobs`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_job(&self, req: &CreateJob) -> Result<Job, ClientError> {
        decode(self.post("/v1/jobs", req).send().await?).await
    }

    /// `GET /v1/jobs`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn jobs(&self) -> Result<JobList, ClientError> {
        decode(self.get("/v1/jobs").send().await?).await
    }

    /// `GET /v1/jobs/{id}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn job(&self, id: &JobId) -> Result<Job, ClientError> {
        decode(self.get(&format!("/v1/jobs/{id}")).send().await?).await
    }

    /// `POST /v1/jobs/{id}/retry`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn retry_job(&self, id: &JobId) -> Result<Job, ClientError> {
        decode(
            self.api
                .http
                .post(self.url(&format!("/v1/jobs/{id}/retry")))
                .bearer_auth(&self.api_key)
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/links`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn link(
        &self,
        provider: &ProviderId,
        token: &str,
    ) -> Result<AccountLink, ClientError> {
        decode(
            self.post(
                "/v1/links",
                &LinkAccount {
                    provider_id: provider.clone(),
                    token: token.into(),
                },
            )
            .send()
            .await?,
        )
        .await
    }

    /// `GET /v1/links`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn links(&self) -> Result<LinkList, ClientError> {
        decode(self.get("/v1/links").send().await?).await
    }

    /// `GET /v1/notifications`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn notifications(&self) -> Result<NotificationList, ClientError> {
        decode(self.get("/v1/notifications").send().await?).await
    }

    /// `POST /v1/notifications/ack`; returns what is still pending.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn ack(&self, ids: &[NotificationId]) -> Result<NotificationList, ClientError> {
        decode(
            self.post(
                "/v1/notifications/ack",
                &AckNotifications {
                    notification_ids: ids.to_vec(),
                },
            )
            .send()
            .await?,
        )
        .await
    }
}
