//! Scale-out: two provider instances on one PostgreSQL database and one shared data
//! directory share many jobs; every job runs to completion once, is charged once, and
//! every callback reaches the broker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::*;
use diax_sdk::wire::JobEventKind;
use fixmyprint::service;

async fn two_instances_share_the_work(backend: Backend) {
    const JOBS: usize = 16;
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let shared = db.dir().join("shared");
    let mut config = test_config(&db, &shared);
    config.workers = 2;
    config.outbox_workers = 2;
    let a = start_provider(config.clone()).await;
    register(&a, &broker).await;
    let b = start_provider(config).await;
    b.service().reload_keyring().await.unwrap();
    assert_ne!(a.service().instance_id(), b.service().instance_id());

    // Accounts and offers go to either instance: they are one provider.
    let account = create_account(&a, "Scale").await;
    top_up(&b, &account.api_key, 100_000).await;
    // Both instances accept offers, signed once for the provider.
    let model = fixmyprint::heal::generate::broken_model(11, 800);
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let via = if i % 2 == 0 { &a } else { &b };
        jobs.push(accept_job(via, &broker, &account, &model).await);
    }
    let done = wait_until(Duration::from_secs(60), || async {
        broker.terminal_events().len() >= JOBS
    })
    .await;
    assert!(
        done,
        "all jobs completed: {}",
        broker.terminal_events().len()
    );
    // Let any stray duplicate surface before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let terminal = broker.terminal_events();
    assert_eq!(terminal.len(), JOBS, "one terminal event per job");
    let ids: HashSet<_> = terminal.iter().map(|e| e.job_id.clone()).collect();
    assert_eq!(ids.len(), JOBS);
    assert!(
        terminal
            .iter()
            .all(|e| matches!(e.kind, JobEventKind::Completed { .. }))
    );
    // Per job: sequence numbers strictly increase and end with the completion.
    let mut by_job: HashMap<_, Vec<u64>> = HashMap::new();
    for e in broker.state.events.lock().unwrap().iter() {
        by_job.entry(e.job_id.clone()).or_default().push(e.sequence);
    }
    for (job, seqs) in &by_job {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{job}: {seqs:?}");
    }
    // Both instances did some of the work (each claims with SKIP LOCKED).
    let finishers = finished_by(&a).await;
    assert_eq!(finishers.len(), JOBS);
    let instances: HashSet<&str> = finishers
        .iter()
        .map(|f| f.split('/').next().unwrap())
        .collect();
    assert_eq!(
        instances,
        HashSet::from([a.service().instance_id(), b.service().instance_id()])
    );
    // Charged exactly once per job.
    let (_, ledger) = get_json(
        &format!("{}/v1/accounts/me/ledger", a.base_url()),
        Some(&account.api_key),
    )
    .await;
    let entries = ledger["entries"].as_array().unwrap();
    let captures = entries.iter().filter(|e| e["kind"] == "capture").count();
    let holds = entries.iter().filter(|e| e["kind"] == "hold").count();
    assert_eq!((holds, captures), (JOBS, JOBS));
    let (_, me) = get_json(
        &format!("{}/v1/accounts/me", b.base_url()),
        Some(&account.api_key),
    )
    .await;
    assert_eq!(me["held"].as_i64(), Some(0));
    assert_eq!(me["balance"].as_i64(), Some(100_000 - 60 * JOBS as i64));
    // Results stored once in the shared directory are served by either instance.
    let job = &jobs[0];
    let events = broker.events_for(&job.offer.job_id);
    let JobEventKind::Completed { result } = &events.last().unwrap().kind else {
        panic!("no result")
    };
    let via_b = result.download.url.replace(a.base_url(), b.base_url());
    let mut dl = result.download.clone();
    dl.url = via_b;
    diax_sdk::client::download_to_vec(&client(), &dl, &Default::default())
        .await
        .expect("the other instance serves the shared result");
    let (pending, delivered, dead) = service::outbox::counts(a.service()).await.unwrap();
    assert_eq!((pending, dead), (0, 0));
    assert_eq!(delivered, (JOBS * 3) as i64);
    a.shutdown().await;
    b.shutdown().await;
}

/// The worker that finished each completed job.
async fn finished_by(provider: &service::ServiceHandle) -> Vec<String> {
    let mut tx = provider.service().db().begin().await.unwrap();
    let rows: Vec<(String,)> = match &mut tx {
        service::db::Tx::Sqlite(t) => {
            sqlx::query_as("SELECT finished_by FROM jobs WHERE state = 'completed'")
                .fetch_all(&mut **t)
                .await
                .unwrap()
        }
        service::db::Tx::Postgres(t) => {
            sqlx::query_as("SELECT finished_by FROM jobs WHERE state = 'completed'")
                .fetch_all(&mut **t)
                .await
                .unwrap()
        }
    };
    tx.commit().await.unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres() {
    two_instances_share_the_work(Backend::Postgres).await;
}

/// SQLite is one node, but two instances on one file must still not run a job twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_sqlite_file() {
    two_instances_share_the_work(Backend::Sqlite).await;
}
