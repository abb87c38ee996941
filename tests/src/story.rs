//! The seed story, step by step, over HTTPS: shared by the end-to-end tests (which assert on
//! every step) and the demo (which narrates them).

use std::time::{Duration, Instant};

use broker_mock::UserClient;
use diax_sdk::wire::{
    AccountLink, CreateJob, CreateUser, Job, JobState, LinkTokenGrant, Model, ProviderRegistered,
    SERVICE_KIND_MODEL_REPAIR, Scheme, SecretScope,
};
use diax_sdk::{Problem, ProblemType, ProviderId};
use fixmyprint::service::RegisterOptions;
use fixmyprint::service::accounts::{
    AccountCreated, AccountView, CreateAccount, Ledger, TopUp, TopUpDone,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::inbox::Inbox;
use crate::stack::Stack;

/// A failed step: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct StoryError {
    /// The step that failed.
    pub step: String,
    /// Why.
    pub reason: String,
}

/// `Result` of a story step.
pub type StepResult<T> = Result<T, StoryError>;

fn fail<T>(step: &str, reason: impl std::fmt::Display) -> StepResult<T> {
    Err(StoryError {
        step: step.to_owned(),
        reason: reason.to_string(),
    })
}

trait Context<T> {
    fn step(self, step: &str) -> StepResult<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn step(self, step: &str) -> StepResult<T> {
        self.or_else(|e| fail(step, e))
    }
}

/// Who is told what happens: the demo prints, the tests stay quiet.
pub trait Narrator: Send + Sync {
    /// A new step of the story starts.
    fn step(&self, title: &str);
    /// A detail of the current step.
    fn say(&self, line: &str);
    /// The job progressed (percent, stage).
    fn progress(&self, _percent: u8, _stage: Option<&str>) {}
    /// The job reached a terminal state.
    fn progress_done(&self) {}
}

/// A narrator that says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Narrator for Quiet {
    fn step(&self, _title: &str) {}
    fn say(&self, _line: &str) {}
}

/// FixMyPrint as its operator registered it with the broker.
#[derive(Debug, Clone)]
pub struct RegisteredProvider {
    /// The broker's answer.
    pub registered: ProviderRegistered,
    /// The operator's broker API key.
    pub operator_key: String,
}

impl RegisteredProvider {
    /// The provider id.
    #[must_use]
    pub fn id(&self) -> &ProviderId {
        &self.registered.provider_id
    }
}

/// Step 1: the operator creates a broker account and a group, registers FixMyPrint, and
/// FixMyPrint stores the shared secret (`hmac-sha256`), or with `ed25519` its own secret key
/// and the broker's public key. Checks the registry listing.
///
/// With [`SecretScope::User`] the secret is bound to the operator, who is then also the only
/// user the provider may serve (the open-source variant).
///
/// # Errors
/// [`StoryError`] naming the failed check.
pub async fn register_provider(
    stack: &Stack,
    scope: SecretScope,
    scheme: Scheme,
    n: &dyn Narrator,
) -> StepResult<RegisteredProvider> {
    const STEP: &str = "provider registration";
    let operator = stack
        .broker_api
        .create_user(&CreateUser {
            name: "FixMyPrint operator".into(),
            notification_url: None,
        })
        .await
        .step(STEP)?;
    n.say(&format!(
        "FixMyPrint's operator has broker account {}",
        operator.user_id
    ));
    let service = stack.provider.service();
    let registered = fixmyprint::service::register(
        service.db(),
        service.http(),
        &RegisterOptions {
            broker_url: stack.broker.base_url().to_owned(),
            api_key: operator.api_key.clone(),
            group_id: None,
            name: "FixMyPrint".into(),
            public_url: stack.provider.base_url().to_owned(),
            secret_scope: scope,
            description: Some("Watertight, outward, printable models".into()),
            signature_scheme: scheme,
        },
    )
    .await
    .step(STEP)?;
    service.reload_keyring().await.step(STEP)?;
    match (&registered.broker_key_id, &registered.broker_public_key) {
        (Some(broker_kid), Some(broker_public)) => n.say(&format!(
            "registered as {} with ed25519 ({:?} scope): FixMyPrint sent its public key {}, the broker answered with its own, {} ({broker_public}); no secret is shared, FixMyPrint's secret key never left its database",
            registered.provider_id, registered.secret_scope, registered.key_id, broker_kid
        )),
        _ => n.say(&format!(
            "registered as {} ({:?} secret {} for broker {}); the secret is stored in FixMyPrint's database",
            registered.provider_id, registered.secret_scope, registered.key_id, registered.broker_id
        )),
    }
    let registry = stack
        .broker_api
        .registry(Some(SERVICE_KIND_MODEL_REPAIR))
        .await
        .step(STEP)?;
    if !registry
        .providers
        .iter()
        .any(|p| p.provider_id == registered.provider_id)
    {
        return fail(
            STEP,
            "FixMyPrint is not listed in the registry under model-repair",
        );
    }
    n.say(&format!(
        "listed in the registry of model-repair partners ({} listed)",
        registry.providers.len()
    ));
    Ok(RegisteredProvider {
        registered,
        operator_key: operator.api_key,
    })
}

/// A broker user with (optionally) their own notification endpoint.
#[derive(Debug)]
pub struct BrokerUser {
    /// Their client of the broker API.
    pub client: UserClient,
    /// Their id.
    pub user_id: diax_sdk::UserId,
    /// Their notification endpoint, if they have one.
    pub inbox: Option<Inbox>,
}

/// Creates a broker user; with `inbox`, the user gets a notification endpoint over HTTPS.
///
/// # Errors
/// [`StoryError`].
pub async fn broker_user(stack: &Stack, name: &str, inbox: bool) -> StepResult<BrokerUser> {
    const STEP: &str = "broker user";
    let inbox = if inbox {
        Some(Inbox::start(&stack.pki).await.step(STEP)?)
    } else {
        None
    };
    let created = stack
        .broker_api
        .create_user(&CreateUser {
            name: name.to_owned(),
            notification_url: inbox.as_ref().map(|i| i.url().to_owned()),
        })
        .await
        .step(STEP)?;
    if let Some(inbox) = &inbox {
        let Some(secret) = &created.notification_secret else {
            return fail(
                STEP,
                "no notification secret returned for a notification URL",
            );
        };
        inbox.set_secret(secret).step(STEP)?;
    }
    Ok(BrokerUser {
        client: stack.broker_api.user(created.api_key),
        user_id: created.user_id,
        inbox,
    })
}

/// Operator-side client of FixMyPrint's own account API, as a user holding an account there.
#[derive(Debug, Clone)]
pub struct ProviderAccount {
    http: reqwest::Client,
    base: String,
    api_key: String,
    /// The account.
    pub account_id: diax_sdk::AccountId,
}

async fn call<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    api_key: Option<&str>,
    body: Option<&B>,
) -> Result<T, String> {
    let mut req = http.request(method, url);
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => format!("HTTP {status}: {p}"),
            Err(_) => format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer: {e}"))
}

impl ProviderAccount {
    /// Signs up at the `register_url` the provider's problem pointed to.
    ///
    /// # Errors
    /// [`StoryError`].
    pub async fn sign_up(stack: &Stack, register_url: &str, name: &str) -> StepResult<Self> {
        let created: AccountCreated = call(
            &stack.http,
            reqwest::Method::POST,
            register_url,
            None,
            Some(&CreateAccount { name: name.into() }),
        )
        .await
        .step("sign-up at FixMyPrint")?;
        Ok(Self {
            http: stack.http.clone(),
            base: stack.provider.base_url().trim_end_matches('/').to_owned(),
            api_key: created.api_key,
            account_id: created.account_id,
        })
    }

    /// The account's balance.
    ///
    /// # Errors
    /// [`StoryError`].
    pub async fn view(&self) -> StepResult<AccountView> {
        call::<(), _>(
            &self.http,
            reqwest::Method::GET,
            &format!("{}/v1/accounts/me", self.base),
            Some(&self.api_key),
            None,
        )
        .await
        .step("read balance")
    }

    /// The account's ledger.
    ///
    /// # Errors
    /// [`StoryError`].
    pub async fn ledger(&self) -> StepResult<Ledger> {
        call::<(), _>(
            &self.http,
            reqwest::Method::GET,
            &format!("{}/v1/accounts/me/ledger", self.base),
            Some(&self.api_key),
            None,
        )
        .await
        .step("read ledger")
    }

    /// Tops the balance up by `amount` minor units (at `url`, the problem's `top_up_url`).
    ///
    /// # Errors
    /// [`StoryError`].
    pub async fn top_up(&self, url: &str, amount: i64) -> StepResult<TopUpDone> {
        call(
            &self.http,
            reqwest::Method::POST,
            url,
            Some(&self.api_key),
            Some(&TopUp { amount }),
        )
        .await
        .step("top-up")
    }

    /// Asks FixMyPrint for a link token for the broker.
    ///
    /// # Errors
    /// [`StoryError`].
    pub async fn link_token(&self) -> StepResult<LinkTokenGrant> {
        call::<(), _>(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/v1/accounts/me/link-token", self.base),
            Some(&self.api_key),
            None,
        )
        .await
        .step("link token")
    }
}

/// Waits until the job is terminal, reporting progress.
///
/// # Errors
/// [`StoryError`] on timeout.
pub async fn wait_for_job(
    user: &UserClient,
    job: &Job,
    timeout: Duration,
    n: &dyn Narrator,
) -> StepResult<Job> {
    let deadline = Instant::now() + timeout;
    let mut last_progress = None;
    loop {
        let now = user.job(&job.job_id).await.step("job status")?;
        if now.progress != last_progress
            && let Some(p) = now.progress
        {
            n.progress(p, Some(now.state.as_str()));
            last_progress = now.progress;
        }
        if now.state.is_terminal() {
            n.progress_done();
            return Ok(now);
        }
        if Instant::now() > deadline {
            n.progress_done();
            return fail(
                "job",
                format!("job {} still {} after {timeout:?}", job.job_id, now.state),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything the story produced, for the tests to check and the demo to save.
#[derive(Debug)]
pub struct StoryOutcome {
    /// FixMyPrint's registration.
    pub provider: RegisteredProvider,
    /// Gareth.
    pub gareth: BrokerUser,
    /// Gareth's model as uploaded.
    pub model: Model,
    /// The problem of Gareth's first request.
    pub first_refusal: Problem,
    /// The problem of the request after linking, with no money yet.
    pub payment_refusal: Problem,
    /// Gareth's account at FixMyPrint.
    pub account: ProviderAccount,
    /// The link token FixMyPrint signed (HS256 or EdDSA, with the scheme).
    pub link_token: String,
    /// The stored link.
    pub link: AccountLink,
    /// The job in its final state.
    pub job: Job,
    /// The repaired model, as Gareth downloaded it.
    pub repaired: Vec<u8>,
    /// The broker's pending count on Gareth's next request.
    pub pending_on_next_request: u64,
    /// The account after the job.
    pub account_after: AccountView,
    /// The account's ledger after the job.
    pub ledger: Ledger,
    /// How long the job took from the accepted retry to completion.
    pub job_seconds: f64,
}

/// The whole seed story with one model: registration, refusal with the register link,
/// sign-up and link, refusal for payment, top-up, retry, download, healing, callback,
/// result stored as a new version, notifications, download.
///
/// # Errors
/// [`StoryError`] naming the first step that did not go as the protocol says.
pub async fn play(
    stack: &Stack,
    model_name: &str,
    model_bytes: Vec<u8>,
    scheme: Scheme,
    n: &dyn Narrator,
) -> StepResult<StoryOutcome> {
    n.step("1. FixMyPrint registers itself with the broker");
    let provider = register_provider(stack, SecretScope::Service, scheme, n).await?;

    n.step("2. Gareth finds FixMyPrint and sends his model across");
    let gareth = broker_user(stack, "Gareth", true).await?;
    let model = gareth
        .client
        .upload_model(model_name, model_bytes)
        .await
        .step("upload")?;
    let version = model.latest().map_or(0, |v| v.version);
    n.say(&format!(
        "uploaded {} as {} v{} ({} bytes)",
        model.name,
        model.model_id,
        version,
        model.latest().map_or(0, |v| v.size)
    ));
    let job = gareth
        .client
        .create_job(&CreateJob {
            provider_id: provider.id().clone(),
            model_id: model.model_id.clone(),
            version: None,
            operation: None,
            params: serde_json::Value::Null,
        })
        .await
        .step("job request")?;
    let first_refusal = match (&job.state, &job.problem) {
        (JobState::Rejected, Some(p)) if p.is(ProblemType::AccountRequired) => p.clone(),
        (state, p) => {
            return fail(
                "first request",
                format!("expected rejected/account-required, got {state} {p:?}"),
            );
        }
    };
    let Some(register_url) = first_refusal.register_url().map(str::to_owned) else {
        return fail("first request", "the refusal carries no register_url");
    };
    n.say(&format!(
        "broker signed the offer; FixMyPrint refused: {} (register at {register_url})",
        first_refusal.title
    ));

    n.step("3. Gareth signs up at FixMyPrint and links his account");
    let account = ProviderAccount::sign_up(stack, &register_url, "Gareth").await?;
    n.say(&format!(
        "FixMyPrint account {} created",
        account.account_id
    ));
    let grant = account.link_token().await?;
    n.say(&format!(
        "FixMyPrint signed a link token with {} (expires at {})",
        scheme.jwt_alg(),
        grant.expires_at
    ));
    let link = gareth
        .client
        .link(provider.id(), &grant.token)
        .await
        .step("account link")?;
    n.say(&format!(
        "broker checked signature, issuer, audience, expiry and single use; linked {}",
        link.provider_account
    ));

    n.step("4. Gareth retries: the account has no money yet");
    let job = gareth.client.retry_job(&job.job_id).await.step("retry")?;
    let payment_refusal = match (&job.state, &job.problem) {
        (JobState::Rejected, Some(p)) if p.is(ProblemType::PaymentRequired) => p.clone(),
        (state, p) => {
            return fail(
                "retry without money",
                format!("expected rejected/payment-required, got {state} {p:?}"),
            );
        }
    };
    let (Some(quote), Some(top_up_url)) = (
        payment_refusal.quote(),
        payment_refusal.top_up_url().map(str::to_owned),
    ) else {
        return fail(
            "retry without money",
            "payment-required lacks quote or top_up_url",
        );
    };
    n.say(&format!(
        "FixMyPrint refused: payment required, quote {quote}"
    ));
    let topped = account.top_up(&top_up_url, quote.amount * 4).await?;
    n.say(&format!(
        "topped up; balance {}",
        diax_sdk::Quote::new(topped.balance, topped.currency.clone())
    ));

    n.step("5. Gareth retries: FixMyPrint accepts, downloads and heals");
    let started = Instant::now();
    let job = gareth.client.retry_job(&job.job_id).await.step("retry")?;
    if !matches!(
        job.state,
        JobState::Accepted | JobState::Running | JobState::Completed
    ) {
        return fail(
            "retry with money",
            format!("expected accepted, got {} {:?}", job.state, job.problem),
        );
    }
    n.say(&format!(
        "accepted as {} (quote {}); the broker sent temporary credentials for {} v{}",
        job.provider_job_id.as_ref().map_or("?", |id| id.as_str()),
        job.quote
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string),
        model.model_id,
        version
    ));
    let job = wait_for_job(&gareth.client, &job, Duration::from_secs(300), n).await?;
    let job_seconds = started.elapsed().as_secs_f64();
    if job.state != JobState::Completed {
        return fail(
            "healing",
            format!("job ended {} with {:?}", job.state, job.problem),
        );
    }
    let Some(result) = job.result.clone() else {
        return fail("healing", "completed job has no result version");
    };
    n.say(&format!(
        "signed completion callback received; result stored as {} v{} ({job_seconds:.2} s after the retry)",
        result.model_id, result.version
    ));

    n.step("6. Gareth is notified and downloads the repaired model");
    let stored = gareth.client.model(&result.model_id).await.step("model")?;
    let Some(new_version) = stored.versions.iter().find(|v| v.version == result.version) else {
        return fail("result", "the result version is not in Gareth's repository");
    };
    if new_version.source.as_ref().map(|s| &s.job_id) != Some(&job.job_id) {
        return fail("result", "the new version is not linked to the job");
    }
    if let Some(inbox) = &gareth.inbox {
        let Some(note) = inbox
            .wait_for(Duration::from_secs(30), |n| {
                n.job_id == job.job_id && n.state == JobState::Completed
            })
            .await
        else {
            return fail(
                "notification",
                "no signed job.completed notification reached Gareth's URL",
            );
        };
        n.say(&format!(
            "signed notification {} arrived at Gareth's own URL",
            note.notification_id
        ));
    }
    let pending_on_next_request = gareth.client.pending_count().await.step("pending count")?;
    n.say(&format!(
        "and {pending_on_next_request} notifications (the two refusals and the completion) wait on his next request"
    ));
    let repaired = gareth
        .client
        .download(&result.model_id, result.version)
        .await
        .step("download")?;
    n.say(&format!("downloaded {} bytes", repaired.len()));
    let account_after = account.view().await?;
    let ledger = account.ledger().await?;
    n.say(&format!(
        "FixMyPrint charged {quote} once: balance {}, held {}",
        diax_sdk::Quote::new(account_after.balance, account_after.currency.clone()),
        diax_sdk::Quote::new(account_after.held, account_after.currency.clone())
    ));
    Ok(StoryOutcome {
        provider,
        gareth,
        model,
        first_refusal,
        payment_refusal,
        account,
        link_token: grant.token,
        link,
        job,
        repaired,
        pending_on_next_request,
        account_after,
        ledger,
        job_seconds,
    })
}
