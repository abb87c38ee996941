//! The fault suite: the broker mock and FixMyPrint on loopback (a second FixMyPrint instance
//! as the real binary, both on one PostgreSQL database), with faults a real deployment
//! meets: an instance killed with `kill -9` mid-job again and again, the broker unreachable
//! while callbacks are due, and many jobs at once. After each, every job has run to its end
//! once, been charged once, and every callback has reached the broker and been applied once
//! (the broker deduplicates by event). And an instance killed with `kill -9` while offers
//! pour in (SQLite and PostgreSQL): no offer answered `202` is lost, none is held twice.
//! docs/RELIABILITY.md lists the figures.
//!
//! Scale (small by default, to keep CI short; docs/RELIABILITY.md gives the full-scale runs):
//! `FIXMYPRINT_TEST_KILLS` (default 5; 20 for the full run) kills, `FIXMYPRINT_TEST_JOBS`
//! (default 40; 200) concurrent jobs, `FIXMYPRINT_TEST_BROKER_OUTAGE_MS` (default 3,000;
//! 60000) of broker outage, `FIXMYPRINT_TEST_FLOOD_USERS` (default 2) users uploading five
//! 20 MiB models each, `FIXMYPRINT_TEST_INTAKE_KILLS` (default 3; 20) kills amid offers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use broker_mock::client::MessageFilter;
use diax_sdk::wire::{CreateJob, Job, JobAccepted, JobState, Scheme, SecretScope};
use diax_sdk::{AccountId, JobId, MessageId, ModelId};
use e2e::child::{Child, memory_kib};
use e2e::stack::{ProviderDb, Stack, StackOptions};
use e2e::standin::{self, StandIn};
use e2e::story::{self, BrokerUser, ProviderAccount, Quiet, RegisteredProvider};
use fixmyprint::heal::generate;
use sqlx::PgPool;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `fixmyprint` binary of this test's profile, built if needed (once per test run).
fn fixmyprint_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(build_binaries).clone()
}

fn build_binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "--workspace", "--all-features", "--bins"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bins failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("fixmyprint")
}

/// The stack (instance A in this process, on PostgreSQL), FixMyPrint registered, a broker
/// user linked to a funded FixMyPrint account.
struct Scene {
    stack: Stack,
    provider: RegisteredProvider,
    gareth: BrokerUser,
    account: ProviderAccount,
    pg: PgPool,
    dir: tempfile::TempDir,
}

impl Scene {
    async fn start(options: StackOptions) -> Self {
        // Warnings and errors of the in-process broker and instance A go to the test's
        // captured output: a failing test shows why a server answered 500.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let stack = Stack::start(StackOptions {
            provider_db: ProviderDb::Postgres,
            ..options
        })
        .await
        .unwrap();
        let provider = story::register_provider(&stack, SecretScope::Service, Scheme::V1, &Quiet)
            .await
            .unwrap();
        let gareth = story::broker_user(&stack, "Gareth", false).await.unwrap();
        let base = stack.provider.base_url().to_owned();
        let account = story::ProviderAccount::sign_up(&stack, &format!("{base}/v1/accounts"), "G")
            .await
            .unwrap();
        account
            .top_up(&format!("{base}/v1/accounts/me/top-up"), 100_000_000)
            .await
            .unwrap();
        let grant = account.link_token().await.unwrap();
        gareth
            .client
            .link(provider.id(), &grant.token)
            .await
            .unwrap();
        let url = stack
            .provider
            .service()
            .config()
            .database_url
            .clone()
            .unwrap();
        let pg = PgPool::connect(&url).await.unwrap();
        Self {
            stack,
            provider,
            gareth,
            account,
            pg,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Instance B: the real binary on the same database, with `config` (TOML) and the
    /// instance's public URL; its output goes to `b.log` in the scene's directory. Returns
    /// once it listens.
    async fn spawn_b(&self, config: &str) -> Child {
        let config_path = self.dir.path().join("b.toml");
        std::fs::write(&config_path, config).unwrap();
        let database_url = self
            .stack
            .provider
            .service()
            .config()
            .database_url
            .clone()
            .unwrap();
        let mut command = std::process::Command::new(fixmyprint_binary());
        command
            .args(["serve", "--allow-private-inputs", "--addr", "127.0.0.1:0"])
            .args(["--database-url", &database_url])
            .arg("--data-dir")
            .arg(self.stack.provider.service().config().data_dir.clone())
            .arg("--config")
            .arg(&config_path)
            .arg("--ca-cert")
            .arg(&self.stack.pki.ca_cert)
            .args(["--public-url", self.stack.provider.base_url()])
            .env("RUST_LOG", "info");
        Child::start(
            &mut command,
            &self.dir.path().join("b.log"),
            "fixmyprint serving",
        )
        .await
    }

    fn b_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("b.log")).unwrap_or_default()
    }

    /// Asks for one job per seed, each on a model of its own (so "completed once" is "exactly
    /// one new version"), all at once.
    async fn submit(&self, seeds: std::ops::Range<u64>, facets: usize) -> Vec<(Job, ModelId)> {
        let mut asks = tokio::task::JoinSet::new();
        for seed in seeds {
            let client = self.gareth.client.clone();
            let provider_id = self.provider.id().clone();
            asks.spawn(async move {
                let stl = generate::model(seed, facets, &generate::Defects::all()).stl;
                let model = client
                    .upload_model(&format!("m{seed}.stl"), stl)
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
        asks.join_all().await
    }

    /// Waits until every job is completed, then checks that each ran to its end once, was
    /// charged once, and that every event FixMyPrint sent was delivered to the broker and
    /// applied once. Returns what it counted.
    async fn check_all_completed_once(&self, jobs: &[(Job, ModelId)]) -> Counts {
        for (job, model_id) in jobs {
            let done =
                story::wait_for_job(&self.gareth.client, job, Duration::from_secs(300), &Quiet)
                    .await
                    .unwrap();
            assert_eq!(done.state, JobState::Completed, "{done:?}");
            let model = self.gareth.client.model(model_id).await.unwrap();
            assert_eq!(
                model.versions.len(),
                2,
                "{model_id}: not exactly one result"
            );
        }
        // Charged exactly once per job, and nothing held any more.
        let captures: Vec<(String,)> =
            sqlx::query_as("SELECT provider_job_id FROM ledger WHERE kind = 'capture'")
                .fetch_all(&self.pg)
                .await
                .unwrap();
        let captured: HashSet<String> = captures.iter().map(|c| c.0.clone()).collect();
        assert_eq!(captures.len(), jobs.len(), "one capture per job");
        assert_eq!(captured.len(), jobs.len());
        for (job, _) in jobs {
            let pjid = job.provider_job_id.as_ref().unwrap().to_string();
            assert!(captured.contains(&pjid), "{pjid} not charged");
        }
        let (held,): (i64,) = sqlx::query_as("SELECT held FROM accounts WHERE account_id = $1")
            .bind(self.account.account_id.as_str())
            .fetch_one(&self.pg)
            .await
            .unwrap();
        assert_eq!(held, 0);
        let reruns: Vec<(i64,)> = sqlx::query_as("SELECT attempts FROM jobs")
            .fetch_all(&self.pg)
            .await
            .unwrap();

        // Every event FixMyPrint queued was delivered; the broker received each (under its
        // webhook-id) and answered 200; a redelivery of one it already had is acknowledged
        // as a duplicate, not applied again (one result version per job, above).
        // The broker applies an event before FixMyPrint reads its `200` and marks the row
        // delivered, so a job can be completed at the broker a moment before its last row
        // is marked: wait for every row to leave `pending` (or give up after a minute).
        let query = "SELECT o.message_id, j.broker_job_id, o.state FROM outbox o \
                     JOIN jobs j ON j.provider_job_id = o.provider_job_id";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let outbox: Vec<(String, String, String)> = loop {
            let rows: Vec<(String, String, String)> =
                sqlx::query_as(query).fetch_all(&self.pg).await.unwrap();
            if rows.iter().all(|r| r.2 != "pending") || tokio::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut sent: HashMap<String, HashSet<String>> = HashMap::new();
        for (message_id, job, state) in &outbox {
            assert_eq!(state, "delivered", "{message_id} of {job}");
            sent.entry(job.clone())
                .or_default()
                .insert(message_id.clone());
        }
        let mut counts = Counts {
            jobs: jobs.len(),
            events: outbox.len(),
            reruns: reruns.iter().filter(|r| r.0 > 1).count(),
            ..Counts::default()
        };
        for (job, _) in jobs {
            let received = self.events_received(&job.job_id).await;
            let ids: HashSet<&String> = received.iter().map(|(id, _)| id).collect();
            let expected = sent.get(job.job_id.as_str()).cloned().unwrap_or_default();
            let expected: HashSet<&String> = expected.iter().collect();
            assert_eq!(ids, expected, "{}: events sent vs received", job.job_id);
            for id in &expected {
                assert!(
                    received
                        .iter()
                        .any(|(r, status)| r == *id && *status == 200),
                    "{}: {id} never answered 200: {received:?}",
                    job.job_id
                );
            }
            counts.deliveries += received.len();
        }
        counts
    }

    /// The job events the broker received for `job`: (webhook-id, status answered).
    async fn events_received(&self, job: &JobId) -> Vec<(String, u16)> {
        let log = self
            .stack
            .broker_api
            .messages(&MessageFilter {
                direction: Some("in".into()),
                job_id: Some(job.to_string()),
                limit: Some(1000),
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        log.messages
            .iter()
            .filter(|m| m.method == "POST" && m.endpoint.ends_with("/events"))
            .map(|m| {
                let id = m
                    .headers
                    .get("webhook-id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                (id, m.status.unwrap_or(0))
            })
            .collect()
    }

    async fn shutdown(self) {
        self.pg.close().await;
        self.stack.shutdown().await;
    }
}

#[derive(Debug, Default)]
#[allow(dead_code)] // printed
struct Counts {
    jobs: usize,
    /// Events FixMyPrint sent (distinct ids).
    events: usize,
    /// Event requests the broker received (redeliveries included).
    deliveries: usize,
    /// Jobs claimed more than once.
    reruns: usize,
}

/// `kill -9` of instance B while it holds a job, again and again: each kill is counted only
/// when the database shows that B held a running job at the moment it died (it cannot
/// change the row any more, so the row read after its death is the row at its death). The
/// jobs B held are taken over by A when their lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_job_again_and_again_loses_nothing_and_charges_once() {
    let kills = env_u64("FIXMYPRINT_TEST_KILLS", 5);
    let started = Instant::now();
    let scene = Scene::start(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let a_id = scene.stack.provider.service().instance_id().to_owned();
    let b_config = "job_lease_ms = 1500\npoll_interval_ms = 20\nworkers = 2\n";
    let mut jobs = Vec::new();
    let mut landed = 0;
    let mut tries = 0;
    let mut seed = 1_000;
    while landed < kills {
        tries += 1;
        assert!(
            tries <= kills * 5,
            "only {landed} of {tries} kills landed mid-job"
        );
        let mut b = scene.spawn_b(b_config).await;
        // Three jobs on models big enough that healing one takes a while.
        jobs.extend(scene.submit(seed..seed + 3, 20_000).await);
        seed += 3;
        // Wait until B holds a running job.
        let deadline = Instant::now() + Duration::from_secs(60);
        let held = loop {
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT provider_job_id, lease_owner FROM jobs \
                 WHERE state = 'running' AND lease_owner NOT LIKE $1 || '%' LIMIT 1",
            )
            .bind(&a_id)
            .fetch_optional(&scene.pg)
            .await
            .unwrap();
            if let Some(row) = row {
                break Some(row);
            }
            assert!(b.running(), "instance B exited:\n{}", scene.b_log());
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        b.kill();
        drop(b);
        let Some((pjid, owner)) = held else { continue };
        // After the death: did B still hold it?
        let (state, now_owner): (String, Option<String>) =
            sqlx::query_as("SELECT state, lease_owner FROM jobs WHERE provider_job_id = $1")
                .bind(&pjid)
                .fetch_one(&scene.pg)
                .await
                .unwrap();
        if state == "running" && now_owner.as_deref() == Some(owner.as_str()) {
            landed += 1;
        }
    }
    let counts = scene.check_all_completed_once(&jobs).await;
    assert!(counts.reruns >= 1, "a killed job was re-run: {counts:?}");
    eprintln!(
        "{landed} kills mid-job in {tries} tries; {counts:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    scene.shutdown().await;
}

/// Many jobs at once across two instances: each runs exactly once and is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_jobs_across_two_instances_each_run_exactly_once() {
    let n = env_u64("FIXMYPRINT_TEST_JOBS", 40);
    let started = Instant::now();
    let scene = Scene::start(StackOptions {
        broker_max_models_per_user: Some(u32::try_from(n).unwrap() + 10),
        ..StackOptions::default()
    })
    .await;
    let b = scene.spawn_b("poll_interval_ms = 20\nworkers = 2\n").await;
    let jobs = scene.submit(0..n, 300).await;
    let counts = scene.check_all_completed_once(&jobs).await;
    assert_eq!(counts.reruns, 0, "{counts:?}");
    // Both instances did some of the work.
    let finishers: Vec<(String,)> = sqlx::query_as("SELECT finished_by FROM jobs")
        .fetch_all(&scene.pg)
        .await
        .unwrap();
    let a_id = scene.stack.provider.service().instance_id();
    let by_a = finishers.iter().filter(|f| f.0.starts_with(a_id)).count();
    assert!(
        by_a > 0 && by_a < finishers.len(),
        "{by_a} of {} by A",
        finishers.len()
    );
    eprintln!(
        "{counts:?}; {by_a} finished by A; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(b);
    scene.shutdown().await;
}

/// The broker unreachable while callbacks are due: they wait and are all delivered once it
/// is back, each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_down_during_callbacks_loses_none() {
    let outage = Duration::from_millis(env_u64("FIXMYPRINT_TEST_BROKER_OUTAGE_MS", 3_000));
    let scene = Scene::start(StackOptions {
        broker_relay: true,
        ..StackOptions::default()
    })
    .await;
    let relay = scene.stack.relay.as_ref().unwrap();
    let jobs = scene.submit(0..12, 2_000).await;
    // The outage starts once the first job has completed at the broker.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = scene.gareth.client.jobs().await.unwrap();
        if list.jobs.iter().any(|j| j.state == JobState::Completed) {
            break;
        }
        assert!(Instant::now() < deadline, "no job completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.set_up(false);
    let cut = Instant::now();
    // Callbacks are attempted and fail during the outage.
    let deadline = cut + outage.max(Duration::from_secs(60));
    loop {
        let (failed,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE state = 'pending' AND attempts >= 2")
                .fetch_one(&scene.pg)
                .await
                .unwrap();
        if failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no callback was due in the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(rest) = outage.checked_sub(cut.elapsed()) {
        tokio::time::sleep(rest).await; // the outage itself
    }
    let (pending,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE state = 'pending'")
        .fetch_one(&scene.pg)
        .await
        .unwrap();
    let down = cut.elapsed();
    relay.set_up(true);
    let counts = scene.check_all_completed_once(&jobs).await;
    eprintln!(
        "broker down {:.1} s with {pending} callbacks pending; {counts:?}",
        down.as_secs_f64()
    );
    scene.shutdown().await;
}

/// The real `broker-mock` binary, as the README runs it (a database file), flooded by
/// strangers: junk requests with long paths and headers, and large uploads up to the
/// per-user quota and past it. Its resident memory stays under a stated bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_and_upload_flood_keeps_the_brokers_memory_bounded() {
    // The bound: what the broker holds after the flood, over its resident size before.
    const BOUND_MIB: u64 = 320;
    const JUNK: usize = 1_000;
    const UPLOADS: usize = 5;
    const UPLOAD_BYTES: usize = 20 * 1024 * 1024;
    let bin = fixmyprint_binary().with_file_name("broker-mock");
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(bin);
    command
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-log-messages",
            "1000",
        ])
        .arg("--db")
        .arg(dir.path().join("broker.db"))
        .env("RUST_LOG", "info");
    let mut broker = Child::start(&mut command, &dir.path().join("broker.log"), "listening").await;
    let addr = broker.addr();
    let base = format!("http://{addr}");
    let http = diax_sdk::client::http_client(&diax_sdk::client::ClientConfig::default()).unwrap();
    let pid = broker.id();
    // Warm: a user and a small upload.
    let api = broker_mock::BrokerApi::new(http.clone(), &base);
    let user = api
        .create_user(&diax_sdk::wire::CreateUser {
            name: "flood".into(),
            notification_url: None,
        })
        .await
        .unwrap();
    let client = api.user(user.api_key.clone());
    client
        .upload_model("warm.stl", vec![7; 1024])
        .await
        .unwrap();
    let (before, _) = memory_kib(pid);

    // 1,000 unauthenticated requests, each with a 4,000-byte path and User-Agent.
    let phase = Instant::now();
    let long = "x".repeat(4_000);
    let mut flood = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let http = http.clone();
        let url = format!("{base}/{long}");
        let ua = long.clone();
        flood.spawn(async move {
            for _ in 0..JUNK / 8 {
                let r = http
                    .get(format!("{url}{chunk}"))
                    .header("user-agent", &ua)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 404);
            }
        });
    }
    flood.join_all().await;
    let (after_junk, _) = memory_kib(pid);
    eprintln!(
        "{JUNK} junk requests in {:.1} s: VmRSS {} MiB",
        phase.elapsed().as_secs_f64(),
        after_junk / 1024
    );
    let phase = Instant::now();
    // Five 20 MiB uploads (within the 512 MiB quota) from each of two users.
    let users = env_u64("FIXMYPRINT_TEST_FLOOD_USERS", 2);
    for round in 0..users {
        let client = if round == 0 {
            client.clone()
        } else {
            let other = api
                .create_user(&diax_sdk::wire::CreateUser {
                    name: format!("flood{round}"),
                    notification_url: None,
                })
                .await
                .unwrap();
            api.user(other.api_key)
        };
        for i in 0..UPLOADS {
            let data = vec![u8::try_from(i).unwrap(); UPLOAD_BYTES];
            client
                .upload_model(&format!("big{i}.stl"), data)
                .await
                .unwrap();
            if round == 0 || i == UPLOADS - 1 {
                let (rss, _) = memory_kib(pid);
                eprintln!("user {round} upload {i}: VmRSS {} MiB", rss / 1024);
            }
        }
    }
    let (after, peak) = memory_kib(pid);
    eprintln!("uploads in {:.1} s", phase.elapsed().as_secs_f64());
    eprintln!(
        "broker VmRSS before {} MiB, after {JUNK} junk requests and {} uploads of {} MiB: {} MiB (peak {} MiB)",
        before / 1024,
        users * UPLOADS as u64,
        UPLOAD_BYTES / (1024 * 1024),
        after / 1024,
        peak / 1024
    );
    assert!(
        after < before + BOUND_MIB * 1024,
        "VmRSS grew from {before} KiB to {after} KiB"
    );
    broker.kill();
}

/// One offer sent in [`kill_dash_nine_during_a_burst_of_offers`].
struct SentOffer {
    id: MessageId,
    body: Vec<u8>,
    account: usize,
    /// The `202` answer, if it arrived before the kill.
    answer: Option<JobAccepted>,
}

/// Money each account starts with in [`kill_dash_nine_during_a_burst_of_offers`].
const TOP_UP: i64 = 100_000_000;

/// `kill -9` of FixMyPrint (the real binary) while signed offers pour in on 16 connections,
/// again and again (`FIXMYPRINT_TEST_INTAKE_KILLS`, default 3), each time restarted on the
/// same database. The offers are signed by the test as the broker would (`e2e::standin`):
/// the intake commits many offers together, and a `202` may be sent only once they are
/// durable. So after the restarts, every offer sent
/// again under its `webhook-id` (as a broker redelivers) is answered `202`: an offer
/// answered before a kill with the same provider job as then, one whose answer the kill
/// cut off with its job (if it was taken) or a new one. And each account's ledger holds
/// exactly one hold per offer, in order, with the balance and held amount after each.
async fn kill_dash_nine_during_a_burst_of_offers(db: ProviderDb) {
    const CONNECTIONS: usize = 16;
    const ACCOUNTS: usize = 4;
    let kills = env_u64("FIXMYPRINT_TEST_INTAKE_KILLS", 3);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pg = match db {
        ProviderDb::Postgres => Some(e2e::pg::TempDatabase::create().await.unwrap()),
        ProviderDb::Sqlite => None,
    };
    let database_url = pg.as_ref().map_or_else(
        || format!("sqlite://{}", dir.path().join("fixmyprint.db").display()),
        |pg| pg.url().to_owned(),
    );
    let broker = StandIn::start().await.unwrap();
    let binary = fixmyprint_binary();
    let common = |c: &mut std::process::Command| {
        c.args(["--database-url", &database_url])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--broker-url", broker.base_url()])
            // Written into the answers' status URLs only; each restart listens elsewhere.
            .args(["--public-url", "http://127.0.0.1:8480"])
            .env("RUST_LOG", "info");
    };
    let mut register = std::process::Command::new(&binary);
    register.args([
        "register",
        "--api-key",
        "usr_crash",
        "--group-id",
        "grp_crash",
    ]);
    common(&mut register);
    let out = register.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (provider_id, keyring) = broker.registered().unwrap();
    let keyring = Arc::new(keyring);
    let events_url = broker.events_url(&provider_id);
    let log = dir.path().join("serve.log");
    let serve = || {
        let mut c = std::process::Command::new(&binary);
        c.args([
            "serve",
            "--dev-top-up",
            "--workers",
            "0",
            "--addr",
            "127.0.0.1:0",
        ]);
        common(&mut c);
        c
    };
    let mut server = Child::start(&mut serve(), &log, "fixmyprint serving").await;
    diax_sdk::client::install_crypto_provider();
    let http = reqwest::Client::new();

    let mut api_keys = Vec::new();
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        let base = format!("http://{}", server.addr());
        let created: serde_json::Value = http
            .post(format!("{base}/v1/accounts"))
            .json(&serde_json::json!({"name": format!("crash {i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = created["api_key"].as_str().unwrap().to_owned();
        let topped = http
            .post(format!("{base}/v1/accounts/me/top-up"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"amount": TOP_UP}))
            .send()
            .await
            .unwrap();
        assert!(topped.status().is_success(), "{topped:?}");
        accounts.push(AccountId::parse(created["account_id"].as_str().unwrap()).unwrap());
        api_keys.push(key);
    }
    let accounts = Arc::new(accounts);

    let mut sent: Vec<SentOffer> = Vec::new();
    for kill in 0..kills {
        // A client of its own for each server: none of its pooled connections can lead to
        // a server killed before, should the new one get the same port.
        let http = reqwest::Client::new();
        let url = format!("http://{}/diax/jobs", server.addr());
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut loops = tokio::task::JoinSet::new();
        for c in 0..CONNECTIONS {
            let (http, url, stop, answered) =
                (http.clone(), url.clone(), stop.clone(), answered.clone());
            let (keyring, accounts, provider_id, events_url) = (
                keyring.clone(),
                accounts.clone(),
                provider_id.clone(),
                events_url.clone(),
            );
            loops.spawn(async move {
                let mut mine = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let account = (c + n) % accounts.len();
                    let body =
                        standin::offer_body(&provider_id, &events_url, &accounts[account], 10_000);
                    let id = MessageId::generate();
                    let request = standin::signed(http.post(&url), &keyring, &id, body.clone());
                    let answer = match request.send().await {
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            // A valid offer is only ever answered 202; an answer cut off
                            // by the kill is no answer.
                            assert!(
                                status == 202 || text.is_empty(),
                                "a valid offer answered {status}: {text}"
                            );
                            serde_json::from_str::<JobAccepted>(&text).ok()
                        }
                        Err(_) => None,
                    };
                    if answer.is_some() {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    mine.push(SentOffer {
                        id,
                        body,
                        account,
                        answer,
                    });
                }
                mine
            });
        }
        // Kill once a few hundred offers are in, while the loops keep sending.
        let deadline = Instant::now() + Duration::from_secs(120);
        while answered.load(Ordering::SeqCst) < 200 {
            assert!(Instant::now() < deadline, "no 200 offers answered in 120 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for mine in loops.join_all().await {
            sent.extend(mine);
        }
        eprintln!(
            "kill {} at {:.1} s: {} offers sent so far, {} answered 202",
            kill + 1,
            started.elapsed().as_secs_f64(),
            sent.len(),
            sent.iter().filter(|s| s.answer.is_some()).count()
        );
        server = Child::start(&mut serve(), &log, "fixmyprint serving").await;
    }

    // Holds written before the resends: those of the offers answered 202 and of some whose
    // answer a kill cut off (taken, but not answered in time).
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr());
    let mut taken = 0;
    for key in &api_keys {
        taken += ledger_entries(&http, &base, key).await.len() - 1;
    }

    // Every offer again, as the broker redelivers one it has no answer for (or sends again).
    let url = format!("{base}/diax/jobs");
    let sent = Arc::new(sent);
    let mut resends = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let (http, url, keyring, sent) = (http.clone(), url.clone(), keyring.clone(), sent.clone());
        resends.spawn(async move {
            let mut mine = Vec::new();
            for s in sent.iter().skip(c).step_by(CONNECTIONS) {
                let r = standin::signed(http.post(&url), &keyring, &s.id, s.body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                let again: JobAccepted = r.json().await.unwrap();
                if let Some(first) = &s.answer {
                    assert_eq!(
                        again.provider_job_id, first.provider_job_id,
                        "offer {} was answered 202 before a kill and has another job after it",
                        s.id
                    );
                }
                mine.push((s.account, again));
            }
            mine
        });
    }
    let mut jobs: Vec<HashMap<String, i64>> = vec![HashMap::new(); ACCOUNTS];
    for (account, again) in resends.join_all().await.into_iter().flatten() {
        let amount = again.quote.map(|q| q.amount).unwrap();
        let previous = jobs[account].insert(again.provider_job_id.to_string(), amount);
        assert!(previous.is_none(), "two offers were given one job");
    }
    eprintln!("resent in {:.1} s", started.elapsed().as_secs_f64());

    // The ledgers: one hold per offer and nothing else after the top-up, each entry with
    // the balance and held amount after it.
    for (key, jobs) in api_keys.iter().zip(&jobs) {
        let entries = ledger_entries(&http, &base, key).await;
        assert_eq!(entries[0]["kind"], "top_up");
        let (mut balance, mut held) = (TOP_UP, 0);
        let mut holds = HashMap::new();
        for e in &entries[1..] {
            assert_eq!(e["kind"], "hold", "{e}");
            let amount = e["amount"].as_i64().unwrap();
            (balance, held) = (balance - amount, held + amount);
            assert_eq!(
                (e["balance_after"].as_i64(), e["held_after"].as_i64()),
                (Some(balance), Some(held)),
                "{e}"
            );
            let job = e["provider_job_id"].as_str().unwrap().to_owned();
            assert!(
                holds.insert(job, amount).is_none(),
                "two holds for one job: {e}"
            );
        }
        assert_eq!(&holds, jobs, "the holds are not the offers' jobs");
        let me = account_get(&http, &format!("{base}/v1/accounts/me"), key).await;
        assert_eq!(
            (me["balance"].as_i64(), me["held"].as_i64()),
            (Some(balance), Some(held))
        );
    }
    let answered = sent.iter().filter(|s| s.answer.is_some()).count();
    eprintln!(
        "{db:?}: {kills} kills, {} offers, {answered} answered 202 before a kill, {} more \
         taken but not answered, {} jobs in the end; {:.1} s",
        sent.len(),
        // (Never below zero: the resends would have found a lost answered offer.)
        taken.saturating_sub(answered),
        jobs.iter().map(HashMap::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
    if let Some(pg) = pg {
        pg.drop_database().await.unwrap();
    }
}

/// The entries of the ledger of the account whose API key is `key`, oldest first (every
/// page of it).
async fn ledger_entries(http: &reqwest::Client, base: &str, key: &str) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    let mut url = format!("{base}/v1/accounts/me/ledger");
    loop {
        let page = account_get(http, &url, key).await;
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => url = format!("{base}/v1/accounts/me/ledger?after={next}"),
            None => return entries,
        }
    }
}

/// `GET url` of the provider's account API as the account whose API key is `key`.
async fn account_get(http: &reqwest::Client, url: &str, key: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_a_burst_of_offers_loses_no_answered_offer_sqlite() {
    kill_dash_nine_during_a_burst_of_offers(ProviderDb::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_a_burst_of_offers_loses_no_answered_offer_postgres() {
    kill_dash_nine_during_a_burst_of_offers(ProviderDb::Postgres).await;
}
