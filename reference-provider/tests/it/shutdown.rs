//! SIGTERM on the real `fixmyprint serve` binary, on SQLite and PostgreSQL: the requests in
//! flight finish, new connections are refused, the job in hand is released so a restart
//! finishes it (charged once), and the process exits 0 within a bound.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::child::{Child, read_head, read_response, refused};
use crate::support::*;
use diax_sdk::clock::unix_now;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::{Download, JobEventKind};
use fixmyprint::service::queue;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long the binary may take to exit after SIGTERM: its `shutdown_grace_ms` (500 here)
/// for the job in hand, and the requests in flight, which finish about a second after the
/// signal (the drain would cut them at 5 s).
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// `fixmyprint serve` on port 0 for `database_url` and `data_dir` with the settings file
/// `config`, its log in `log`.
async fn start_instance(database_url: &str, data_dir: &Path, config: &Path, log: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fixmyprint"));
    command
        .args(["serve", "--allow-private-inputs", "--addr", "127.0.0.1:0"])
        .args(["--database-url", database_url])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info");
    Child::start(&mut command, log, "fixmyprint serving").await
}

/// A model source on loopback that, until opened, sends the head and half the body of
/// each answer and then holds the rest back (the download stays in flight); once opened it
/// sends the rest, and serves later requests whole.
struct StallingSource {
    url: String,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StallingSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StallingSource {
    async fn start(model: Vec<u8>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/model", listener.local_addr().unwrap());
        let (open, _) = tokio::sync::watch::channel(false);
        let open = Arc::new(open);
        let requests = Arc::new(AtomicUsize::new(0));
        let (counter, gate, model) = (Arc::clone(&requests), Arc::clone(&open), Arc::new(model));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let (mut gate, model) = (gate.subscribe(), Arc::clone(&model));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0_u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if !matches!(stream.read(&mut byte).await, Ok(1)) {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: model/stl\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        model.len()
                    );
                    let half = model.len() / 2;
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.write_all(&model[..half]).await;
                    if gate.wait_for(|open| *open).await.is_ok() {
                        let _ = stream.write_all(&model[half..]).await;
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            open,
            requests,
            task,
        }
    }

    fn download(&self, model: &[u8]) -> Download {
        Download {
            url: self.url.clone(),
            authorization: Some("Bearer tc_stalling".into()),
            expires_at: unix_now() + 600,
            size: model.len() as u64,
            sha256: sha256_hex(model),
        }
    }
}

/// The result of `job`, from the `job.completed` the broker received (waits up to 120 s).
async fn completed(broker: &FakeBroker, job: &diax_sdk::JobId) -> Download {
    let done = wait_until(Duration::from_secs(120), || async {
        broker
            .events_for(job)
            .iter()
            .any(|e| matches!(e.kind, JobEventKind::Completed { .. }))
    })
    .await;
    assert!(done, "{job} completed: {:?}", broker.events_for(job));
    broker
        .events_for(job)
        .into_iter()
        .find_map(|e| match e.kind {
            JobEventKind::Completed { result } => Some(result.download),
            _ => None,
        })
        .unwrap()
}

/// SIGTERM while instance B (the binary) downloads a job's input, serves a result download
/// still being read and receives a request whose body is still coming: both requests
/// complete, no new connection is accepted meanwhile, B exits 0 within [`EXIT_BOUND`], the
/// job it held is released at once (not after its lease), and B restarted finishes it;
/// every job is charged once. Instance A (in this process, no workers) takes the offers.
async fn sigterm_finishes_requests_releases_the_job_and_exits_zero(backend: Backend) {
    let db = TestDb::new(backend).await;
    let broker = FakeBroker::start().await;
    let (provider, account) =
        funded_provider(test_config(&db, db.dir()), &broker, "Term", 1_000_000).await;
    let config: PathBuf = db.dir().join("b.toml");
    std::fs::write(
        &config,
        "workers = 1\noutbox_workers = 1\npoll_interval_ms = 20\nshutdown_grace_ms = 500\n\
         job_lease_ms = 60000\nretry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\n\
         keyring_refresh_ms = 100\npicture_max_facets = 0\n",
    )
    .unwrap();
    let mut b = start_instance(&db.url, db.dir(), &config, &db.dir().join("b.log")).await;

    // Job 1, done by B: a result larger than the socket buffers (4 MiB of send buffer at
    // most on Linux; the reader's receive buffer is kept small), so its download is still
    // being written when the signal comes.
    let big = fixmyprint::heal::generate::broken_model(1, 120_000);
    let first = accept_job(&provider, &broker, &account, &big).await;
    let result = completed(&broker, &first.offer.job_id).await;
    assert!(result.size > 5 * 1024 * 1024, "{}", result.size);
    let path = url::Url::parse(&result.url).unwrap().path().to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut download = socket.connect(b.addr()).await.unwrap();
    let auth = result.authorization.clone().unwrap();
    download
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut got = vec![0_u8; 256 * 1024];
    let (status, head) = read_head(&mut download).await;
    assert_eq!(status, 200, "{head}");
    download.read_exact(&mut got).await.unwrap();

    // Job 2: B's worker is in the middle of its input's download.
    let model = fixmyprint::heal::generate::broken_model(2, 2_000);
    let source = StallingSource::start(model.clone()).await;
    let (second, second_pjob) = offer_with_input(
        &provider,
        &broker,
        &account,
        &model,
        source.download(&model),
    )
    .await;
    let downloading = wait_until(Duration::from_secs(60), || async {
        source.requests.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(downloading, "B took job 2");

    // A request whose body is still coming: half sent.
    let body = br#"{"name":"Late arrival"}"#;
    let mut upload = TcpStream::connect(b.addr()).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /v1/accounts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    upload.write_all(&body[..8]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    b.terminate();
    let signalled = Instant::now();
    refused(b.addr()).await;
    assert!(b.running(), "exited early");
    for piece in body[8..].chunks(4) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        upload.write_all(piece).await.unwrap();
    }
    let (status, head, answer) = read_response(&mut upload).await;
    assert_eq!(status, 201, "the request in flight completed: {head}");
    let late: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let mut rest = Vec::new();
    download.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(
        got.len() as u64,
        result.size,
        "the download in flight completed"
    );
    assert_eq!(sha256_hex(&got), result.sha256);

    let status = b.exited_within(EXIT_BOUND).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    eprintln!(
        "{backend:?}: exited {status} {:.2} s after SIGTERM; result download {} bytes",
        took.as_secs_f64(),
        result.size
    );
    drop(b);
    // Released at once (its lease had a minute to run).
    let row = queue::get(provider.service().db(), &second_pjob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, queue::JobPhase::Accepted, "job 2 released");
    assert_eq!(row.lease_owner, None);

    // B restarted finishes job 2; every job charged once; the late account exists.
    source.open.send_replace(true);
    let _b = start_instance(&db.url, db.dir(), &config, &db.dir().join("b2.log")).await;
    completed(&broker, &second).await;
    let (_, ledger) = get_json(
        &format!("{}/v1/accounts/me/ledger", provider.base_url()),
        Some(&account.api_key),
    )
    .await;
    let mut kinds: Vec<&str> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["capture", "capture", "hold", "hold", "top_up"]);
    let (status, me) = get_json(
        &format!("{}/v1/accounts/me", provider.base_url()),
        late["api_key"].as_str(),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    provider.shutdown().await;
}
both_backends!(sigterm_finishes_requests_releases_the_job_and_exits_zero);
