//! FixMyPrint with its results in an S3-compatible bucket: a real `moto_server` on loopback
//! (see `e2e::s3`), the broker mock fetching results and their repair pictures from
//! presigned URLs on the store's origin, a start-up probe for bad settings, large results in
//! parts, a store outage.

use std::time::{Duration, Instant};

use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::{CreateJob, JobState, Scheme, SecretScope};
use e2e::s3::{Cuttable, S3Server};
use e2e::stack::{Stack, StackOptions};
use e2e::story::{self, Quiet};
use fixmyprint::heal::generate;
use fixmyprint::service::{ResultStore as _, S3Store, janitor, queue};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The URLs the broker fetched results from, per its message log.
async fn result_fetches(stack: &Stack, job_id: &str) -> Vec<String> {
    let log = stack
        .broker_api
        .messages(&broker_mock::client::MessageFilter {
            job_id: Some(job_id.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    log.messages
        .iter()
        .filter(|m| m.method == "GET" && m.verdict.starts_with("result fetched"))
        .map(|m| m.endpoint.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_with_results_in_a_bucket_served_by_presigned_urls() {
    let s3 = S3Server::start().await.unwrap();
    let bucket = s3.create_bucket().await.unwrap();
    let stack = Stack::start(StackOptions {
        storage: Some(s3.settings(&bucket, "fixmyprint/results-test")),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let model = generate::model(5, 20_000, &generate::Defects::all());
    let outcome = story::play(&stack, "gareth.stl", model.stl, Scheme::V1, &Quiet)
        .await
        .unwrap();
    assert_eq!(outcome.job.state, JobState::Completed);

    // The broker fetched the result straight from the store, with a presigned URL whose
    // signature its message log does not keep.
    let fetched = result_fetches(&stack, outcome.job.job_id.as_str()).await;
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    let logged = &fetched[0];
    let prefix = format!(
        "{}/{bucket}/fixmyprint/results-test/results/",
        s3.endpoint()
    );
    assert!(logged.starts_with(&prefix), "{logged}");
    assert!(logged.ends_with("?[redacted]"), "{logged}");

    // The object is in the bucket; FixMyPrint's status names no presigned URL (a credential).
    let service = stack.provider.service();
    let pjid = outcome.job.provider_job_id.clone().unwrap();
    let row = queue::get(service.db(), pjid.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(!row.result_json.unwrap().contains("X-Amz-"));
    let key = format!("{pjid}_{}", row.attempts);
    let store = S3Store::new(s3.settings(&bucket, "fixmyprint/results-test"), TIMEOUT).unwrap();
    let object = store.get(&key).await.unwrap().unwrap();
    assert_eq!(sha256_hex(&object), sha256_hex(&outcome.repaired));

    // The repair picture took the same path: beside the result in the bucket, fetched by
    // the broker from its own presigned URL on the store, and shown to Gareth as stored.
    let log = stack
        .broker_api
        .messages(&broker_mock::client::MessageFilter {
            job_id: Some(outcome.job.job_id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    let pictures: Vec<&str> = log
        .messages
        .iter()
        .filter(|m| m.method == "GET" && m.verdict.starts_with("picture fetched"))
        .map(|m| m.endpoint.as_str())
        .collect();
    assert_eq!(pictures.len(), 1, "{pictures:?}");
    assert!(
        pictures[0].starts_with(&prefix) && pictures[0].ends_with("?[redacted]"),
        "{}",
        pictures[0]
    );
    let picture_key = fixmyprint::service::storage::picture_key(&key);
    let stored_picture = store.get(&picture_key).await.unwrap().unwrap();
    assert!(stored_picture.starts_with(&diax_sdk::wire::PNG_SIGNATURE));
    let result = outcome.job.result.clone().unwrap();
    let shown = outcome
        .gareth
        .client
        .report(&result.model_id, result.version)
        .await
        .unwrap();
    assert_eq!(sha256_hex(&shown), sha256_hex(&stored_picture));

    // Once its credential has expired, the sweep removes the object and its picture from
    // the bucket.
    let later = unix_now() + i64::try_from(service.config().result_ttl.as_secs()).unwrap() + 60;
    let swept = janitor::sweep(service, later).await.unwrap();
    assert_eq!(swept.expired_results, 1);
    assert!(store.get(&key).await.unwrap().is_none());
    assert!(store.get(&picture_key).await.unwrap().is_none());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_with_models_and_results_both_in_the_bucket() {
    let s3 = S3Server::start().await.unwrap();
    let bucket = s3.create_bucket().await.unwrap();
    let stack = Stack::start(StackOptions {
        storage: Some(s3.settings(&bucket, "fixmyprint")),
        broker_storage: Some(s3.broker_storage(&bucket, "broker")),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let model = generate::model(6, 20_000, &generate::Defects::all());
    let outcome = story::play(&stack, "gareth.stl", model.stl.clone(), Scheme::V1, &Quiet)
        .await
        .unwrap();
    assert_eq!(outcome.job.state, JobState::Completed);

    // Gareth's upload and the repaired version are objects of the broker's prefix;
    // FixMyPrint's result is one of its own.
    let broker_objects = s3.keys(&bucket, "broker/models/").await.unwrap();
    assert_eq!(broker_objects.len(), 2, "{broker_objects:?}");
    let provider_objects = s3.keys(&bucket, "fixmyprint/results/").await.unwrap();
    assert!(!provider_objects.is_empty(), "{provider_objects:?}");

    // FixMyPrint took the model from a presigned URL on the store, not from the broker: the
    // broker's log shows no request for the model's content with a temporary credential.
    let job_id = outcome.job.job_id.as_str();
    let log = stack
        .broker_api
        .messages(&broker_mock::client::MessageFilter {
            job_id: Some(job_id.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        log.messages
            .iter()
            .all(|m| !m.verdict.contains("temporary credential accepted")),
        "{:#?}",
        log.messages
    );
    // The broker fetched the result from FixMyPrint's presigned URL, as before.
    let fetched = result_fetches(&stack, job_id).await;
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(
        fetched[0].starts_with(&format!("{}/{bucket}/fixmyprint/results/", s3.endpoint())),
        "{fetched:?}"
    );
    // What Gareth downloaded from the broker (streamed from its bucket) is the version the
    // job made, and his upload is version 1, both as the broker recorded them.
    let shown = outcome
        .gareth
        .client
        .model(&outcome.model.model_id)
        .await
        .unwrap();
    assert_eq!(shown.versions.len(), 2);
    assert_eq!(shown.versions[0].sha256, sha256_hex(&model.stl));
    assert_eq!(shown.versions[1].sha256, sha256_hex(&outcome.repaired));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_settings_fail_at_start_up_in_one_line() {
    let s3 = S3Server::start().await.unwrap();
    // An unknown bucket.
    let e = S3Store::connect(s3.settings("no-such-bucket-here", ""), TIMEOUT)
        .await
        .unwrap_err();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.contains("s3://no-such-bucket-here") && e.contains("NoSuchBucket"),
        "{e}"
    );
    // An endpoint nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut settings = s3.settings("whatever", "");
    settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let e = S3Store::connect(settings, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    // Plain http to a host that is not loopback is refused before any request.
    let mut settings = s3.settings("whatever", "");
    settings.endpoint = Some("http://s3.example.com".into());
    let e = S3Store::new(settings, TIMEOUT).unwrap_err();
    assert!(e.contains("https"), "{e}");

    // The service refuses to start with such a store, saying so.
    let dir = tempfile::tempdir().unwrap();
    let config = fixmyprint::service::Config {
        data_dir: dir.path().to_owned(),
        storage: Some(s3.settings("no-such-bucket-here", "")),
        ..fixmyprint::service::Config::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = fixmyprint::service::App::build(listener, config)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n') && e.contains("NoSuchBucket"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_at_start_up_in_one_line() {
    let s3 = S3Server::start().await.unwrap();
    let bucket = s3.create_bucket().await.unwrap();
    let (id, secret) = s3.enforce_credentials().await.unwrap();
    let with = |id: &str, secret: &str| {
        let mut settings = s3.settings(&bucket, "creds");
        settings.access_key_id = Some(id.to_owned());
        settings.secret_access_key = Some(secret.to_owned());
        settings
    };
    // The right key passes the probe (so the server does check, and what fails below is the
    // credential alone).
    S3Store::connect(with(&id, &secret), TIMEOUT).await.unwrap();
    // A wrong secret, and a key the server does not know.
    for (settings, code) in [
        (with(&id, "not-the-secret"), "SignatureDoesNotMatch"),
        (with("AKIANOSUCHKEY0000000", &secret), "InvalidAccessKeyId"),
    ] {
        let e = S3Store::connect(settings.clone(), TIMEOUT)
            .await
            .unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains(&format!("s3://{bucket}/creds")) && e.contains(code),
            "{e}"
        );
        assert!(!e.contains(&secret), "the secret is never printed: {e}");
        // The service refuses to start with it, saying so in one line.
        let dir = tempfile::tempdir().unwrap();
        let config = fixmyprint::service::Config {
            data_dir: dir.path().to_owned(),
            storage: Some(settings),
            ..fixmyprint::service::Config::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = fixmyprint::service::App::build(listener, config)
            .await
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains(code), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_go_up_in_parts_and_come_back_whole() {
    let s3 = S3Server::start().await.unwrap();
    let bucket = s3.create_bucket().await.unwrap();
    let mut settings = s3.settings(&bucket, "big");
    settings.part_size = 5 * 1024 * 1024;
    let store = S3Store::connect(settings, TIMEOUT).await.unwrap();
    // 12 MiB and a bit: three parts, the last one short.
    let data: Vec<u8> = (0..12 * 1024 * 1024 + 12_345)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let data = bytes::Bytes::from(data);
    store.put("res_big_1", data.clone()).await.unwrap();
    assert_eq!(store.get("res_big_1").await.unwrap().unwrap(), data);
    let url = store
        .presign_get("res_big_1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), data);
    // (That the URL grants GET of this one object only is S3's rule; moto without its IAM
    // mode does not check signatures, so it is not asserted here.)
    // Keys are protocol ids; anything else is refused before a request.
    assert!(store.put("../escape", data.slice(..10)).await.is_err());
    store.delete("res_big_1").await.unwrap();
    store.delete("res_big_1").await.unwrap();
    assert!(store.get("res_big_1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_job_is_retried_and_nothing_is_lost() {
    let s3 = S3Server::start().await.unwrap();
    let bucket = s3.create_bucket().await.unwrap();
    let relay = Cuttable::start(s3.endpoint().trim_start_matches("http://").to_owned())
        .await
        .unwrap();
    let mut settings = s3.settings(&bucket, "");
    settings.endpoint = Some(relay.endpoint().to_owned());
    let stack = Stack::start(StackOptions {
        storage: Some(settings),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let provider = story::register_provider(&stack, SecretScope::Service, Scheme::V1, &Quiet)
        .await
        .unwrap();
    let gareth = story::broker_user(&stack, "Gareth", false).await.unwrap();
    let register_url = format!("{}/v1/accounts", stack.provider.base_url());
    let account = story::ProviderAccount::sign_up(&stack, &register_url, "Gareth")
        .await
        .unwrap();
    account
        .top_up(
            &format!("{}/v1/accounts/me/top-up", stack.provider.base_url()),
            10_000,
        )
        .await
        .unwrap();
    let grant = account.link_token().await.unwrap();
    gareth
        .client
        .link(provider.id(), &grant.token)
        .await
        .unwrap();
    let model = generate::model(7, 5_000, &generate::Defects::all());
    let model = gareth
        .client
        .upload_model("m.stl", model.stl)
        .await
        .unwrap();

    // The store goes away; the job is offered, downloaded and healed, but cannot be stored.
    relay.set_up(false);
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
        .unwrap();
    let pjid = job.provider_job_id.clone().unwrap();
    let service = stack.provider.service();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = queue::get(service.db(), pjid.as_str())
            .await
            .unwrap()
            .unwrap();
        assert!(
            !row.state.is_final(),
            "the job ended during the outage: {:?}",
            row.state
        );
        if row.download_retries >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the job was never retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The store comes back: the job completes, once, and is charged once.
    relay.set_up(true);
    let done = story::wait_for_job(&gareth.client, &job, Duration::from_secs(120), &Quiet)
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    let ledger = account.ledger().await.unwrap();
    let captures = ledger
        .entries
        .iter()
        .filter(|e| e.kind == fixmyprint::service::accounts::LedgerKind::Capture)
        .count();
    assert_eq!(captures, 1);
    assert_eq!(result_fetches(&stack, job.job_id.as_str()).await.len(), 1);
    stack.shutdown().await;
}

/// The `fixmyprint` binary of this test's profile, built if needed.
fn fixmyprint_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "--workspace", "--all-features", "--bins"])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bins failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("fixmyprint")
}

/// A child process killed (SIGKILL) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_only_postgres_and_a_bucket_and_survive_a_kill() {
    const JOBS: usize = 50;
    let s3 = S3Server::start().await.unwrap();
    let bucket = s3.create_bucket().await.unwrap();
    let settings = s3.settings(&bucket, "scale");
    // Instance A: in this process, with the broker mock.
    let stack = Stack::start(StackOptions {
        provider_db: e2e::stack::ProviderDb::Postgres,
        storage: Some(settings.clone()),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let provider = story::register_provider(&stack, SecretScope::Service, Scheme::V1, &Quiet)
        .await
        .unwrap();
    let gareth = story::broker_user(&stack, "Gareth", false).await.unwrap();
    let register_url = format!("{}/v1/accounts", stack.provider.base_url());
    let account = story::ProviderAccount::sign_up(&stack, &register_url, "Gareth")
        .await
        .unwrap();
    account
        .top_up(
            &format!("{}/v1/accounts/me/top-up", stack.provider.base_url()),
            1_000_000,
        )
        .await
        .unwrap();
    let grant = account.link_token().await.unwrap();
    gareth
        .client
        .link(provider.id(), &grant.token)
        .await
        .unwrap();

    // Instance B: the real binary, its own data directory, the same database and bucket; a
    // lease of 10 s, so that A takes over B's jobs soon after B is killed (and not before the
    // test has read what B held).
    let service_a = stack.provider.service();
    let database_url = service_a.config().database_url.clone().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let config_b = dir_b.path().join("b.toml");
    std::fs::write(
        &config_b,
        "job_lease_ms = 10000\npoll_interval_ms = 50\nworkers = 2\n",
    )
    .unwrap();
    let log_b = std::fs::File::create(dir_b.path().join("b.log")).unwrap();
    let mut b = Killed(
        std::process::Command::new(fixmyprint_binary())
            .args([
                "serve",
                "--allow-private-inputs",
                "--addr",
                "127.0.0.1:0",
                "--database-url",
                &database_url,
            ])
            .arg("--data-dir")
            .arg(dir_b.path().join("data"))
            .arg("--config")
            .arg(&config_b)
            .arg("--ca-cert")
            .arg(&stack.pki.ca_cert)
            .args(["--public-url", stack.provider.base_url()])
            .args(["--storage", &settings.url()])
            .args(["--s3-endpoint", s3.endpoint()])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RUST_LOG", "info")
            .stdout(log_b.try_clone().unwrap())
            .stderr(log_b)
            .spawn()
            .unwrap(),
    );

    // Fifty jobs, each on a model of its own (so "completed once" is "exactly one new
    // version"), asked for all at once so that both instances have a queue to take from.
    let models: Vec<_> = (0..JOBS)
        .map(|i| generate::model(100 + i as u64, 2_000, &generate::Defects::all()).stl)
        .collect();
    let mut asks = tokio::task::JoinSet::new();
    for (i, stl) in models.into_iter().enumerate() {
        let client = gareth.client.clone();
        let provider_id = provider.id().clone();
        asks.spawn(async move {
            let model = client
                .upload_model(&format!("m{i}.stl"), stl)
                .await
                .unwrap();
            let job = client
                .create_job(&CreateJob {
                    provider_id,
                    model_id: model.model_id.clone(),
                    version: None,
                    operation: None,
                    params: serde_json::Value::Null,
                })
                .await
                .unwrap();
            (job, model.model_id)
        });
    }
    // Mid-run, while B holds work, it dies without any goodbye (whatever it holds is taken
    // over by A when its lease runs out). To know what it held at that moment, B is frozen
    // (SIGSTOP) first and its leases read from PostgreSQL; when it happens to hold none, it
    // is let go on (SIGCONT) and caught again.
    let pg = sqlx::PgPool::connect(&database_url).await.unwrap();
    let a_prefix = format!("{}/%", service_a.instance_id());
    let log = dir_b.path().join("b.log");
    let b_pid = b.0.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &b_pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let held: Vec<(String, String)> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            b.0.try_wait().unwrap().is_none(),
            "instance B exited early:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "instance B was never caught holding a job:\n{text}"
        );
        if text.contains("job claimed") {
            signal("-STOP");
            // B is frozen: whatever it leases stays leased to it until the lease (of 10 s,
            // renewed by B's heartbeats until now) runs out.
            let held: Vec<(String, String)> = sqlx::query_as(
                "SELECT provider_job_id, lease_owner FROM jobs
                  WHERE state = 'running' AND lease_owner NOT LIKE $1",
            )
            .bind(&a_prefix)
            .fetch_all(&pg)
            .await
            .unwrap();
            if !held.is_empty() {
                break held;
            }
            signal("-CONT");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    let jobs = asks.join_all().await;
    assert_eq!(jobs.len(), JOBS);
    for (job, model_id) in &jobs {
        let done = story::wait_for_job(&gareth.client, job, Duration::from_secs(300), &Quiet)
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Completed, "{done:?}");
        let model = gareth.client.model(model_id).await.unwrap();
        assert_eq!(
            model.versions.len(),
            2,
            "{model_id}: completed more than once"
        );
        assert!(!result_fetches(&stack, job.job_id.as_str()).await.is_empty());
    }
    // What B held when it died was finished by A, once: claimed again after B's lease ran
    // out (a second attempt), completed with A's lease.
    for (pjid, owner) in &held {
        let (state, attempts, finished_by): (String, i64, Option<String>) = sqlx::query_as(
            "SELECT state, attempts, finished_by FROM jobs WHERE provider_job_id = $1",
        )
        .bind(pjid)
        .fetch_one(&pg)
        .await
        .unwrap();
        assert_eq!(state, "completed", "{pjid}");
        assert!(
            attempts >= 2,
            "{pjid}: B held it ({owner}) but it was claimed only once"
        );
        let finished_by = finished_by.unwrap_or_default();
        assert!(
            finished_by.starts_with(&format!("{}/", service_a.instance_id())),
            "{pjid}: held by {owner} when B died, finished by {finished_by:?}"
        );
    }
    pg.close().await;
    let ledger = account.ledger().await.unwrap();
    let captures = ledger
        .entries
        .iter()
        .filter(|e| e.kind == fixmyprint::service::accounts::LedgerKind::Capture)
        .count();
    assert_eq!(captures, JOBS, "charged exactly once per job");
    drop(b);
    stack.shutdown().await;
}
