//! SIGTERM on the real `broker-mock` binary: the requests in flight finish, new connections
//! are refused, the process exits 0 within a bound, and nothing is lost (a restart on the
//! same database file has every model uploaded).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use broker_mock::BrokerApi;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::CreateUser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::child::{Child, read_head, read_response, refused};
use crate::common::http;

/// How long the binary may take to exit after SIGTERM with the requests below in flight:
/// they finish about a second after the signal; the drain would cut them at 5 s.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// `broker-mock serve` on port 0 with the database file `db`, its log in `log`.
async fn start_broker(db: &Path, log: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker-mock"));
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("RUST_LOG", "info");
    Child::start(&mut command, log, "listening").await
}

/// SIGTERM with an upload whose body is still coming and a download still being read: both
/// complete, no new connection is accepted meanwhile, the process exits 0, and a restart on
/// the same database has both models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db");
    let mut broker = start_broker(&db, &dir.path().join("broker.log")).await;
    let base = format!("http://{}", broker.addr());
    let client = http();
    let api = BrokerApi::new(client.clone(), &base);
    let user = api
        .create_user(&CreateUser {
            name: "term".into(),
            notification_url: None,
        })
        .await
        .unwrap();
    let key = user.api_key.clone();
    // A model larger than the socket buffers can hold (4 MiB of send buffer at most on
    // Linux, and the reader's receive buffer is kept small): its download is still being
    // written when the signal comes.
    let big: Vec<u8> = (0..16 * 1024 * 1024_u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let stored = api
        .user(key.clone())
        .upload_model("big.stl", big.clone())
        .await
        .unwrap();

    // The download: head and the first 256 KiB read, then nothing for now.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut download = socket.connect(broker.addr()).await.unwrap();
    download
        .write_all(
            format!(
                "GET /v1/models/{}/versions/1/content HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\r\n",
                stored.model_id
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, head) = read_head(&mut download).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(crate::child::content_length(&head), big.len());
    let mut got = vec![0_u8; 256 * 1024];
    download.read_exact(&mut got).await.unwrap();

    // The upload: head and half the body sent.
    let small: Vec<u8> = crate::common::stl().repeat(200);
    let mut upload = TcpStream::connect(broker.addr()).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /v1/models?name=slow.stl HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: model/stl\r\ncontent-length: {}\r\n\r\n",
                small.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let half = small.len() / 2;
    upload.write_all(&small[..half]).await.unwrap();
    upload.flush().await.unwrap();
    // And one through the SDK's client, on the keep-alive connection it used above, its
    // body a stream of which only the first piece is sent before the signal.
    let (pieces, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let streamed = small.repeat(3);
    pieces.send(Ok(streamed[..half].to_vec())).await.unwrap();
    let rx = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    let sdk_upload = tokio::spawn(
        client
            .post(format!("{base}/v1/models?name=streamed.stl"))
            .bearer_auth(&key)
            .header("content-type", "model/stl")
            .header("content-length", streamed.len())
            .body(reqwest::Body::wrap_stream(rx))
            .send(),
    );
    // Let the server read the head and start on the body.
    tokio::time::sleep(Duration::from_millis(300)).await;

    broker.terminate();
    let signalled = Instant::now();
    // The listener goes at once; both requests are still open.
    refused(broker.addr()).await;
    assert!(broker.running(), "exited early");

    // The rest of the upload comes slowly, well after the signal.
    for piece in small[half..].chunks(small.len().div_ceil(8)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        upload.write_all(piece).await.unwrap();
    }
    for piece in streamed[half..].chunks(streamed.len().div_ceil(8)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        pieces.send(Ok(piece.to_vec())).await.unwrap();
    }
    drop(pieces);
    let answer = sdk_upload
        .await
        .unwrap()
        .expect("the streamed upload was answered");
    assert_eq!(
        answer.status(),
        201,
        "the streamed upload in flight completed"
    );
    let (status, head, body) = read_response(&mut upload).await;
    assert_eq!(status, 201, "the upload in flight completed: {head}");
    let uploaded: diax_sdk::wire::Model = serde_json::from_slice(&body).unwrap();
    assert_eq!(uploaded.versions[0].sha256, sha256_hex(&small));

    // The download is read to its end.
    let mut rest = Vec::new();
    download.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), big.len(), "the download in flight completed");
    assert!(got == big, "the download's bytes are the model's");

    let status = broker.exited_within(EXIT_BOUND).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    eprintln!("exited {status} {:.2} s after SIGTERM", took.as_secs_f64());
    drop(broker);

    // Nothing lost: a restart on the same file has both models.
    let broker = start_broker(&db, &dir.path().join("again.log")).await;
    let api = BrokerApi::new(http(), &format!("http://{}", broker.addr()));
    let models = api.user(key).models().await.unwrap();
    let mut found: Vec<(String, u64, String)> = models
        .models
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.versions[0].size,
                m.versions[0].sha256.clone(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("big.stl".to_owned(), big.len() as u64, sha256_hex(&big)),
            (
                "slow.stl".to_owned(),
                small.len() as u64,
                sha256_hex(&small)
            ),
            (
                "streamed.stl".to_owned(),
                streamed.len() as u64,
                sha256_hex(&streamed)
            ),
        ]
    );
}

/// `Broker::shutdown` closes the database pool, so an in-memory database (kept by a
/// connection outside the pool until the pool closes) is gone when it returns, even while a
/// task of the broker still runs: here a `job.completed` whose result fetch hangs, which runs
/// to its end after its client was cut. A named in-memory database shows it: a new
/// connection to the same name finds it empty. The broker's warnings (a bound on closing the
/// pool or its keeper that ran out) are captured, and none is expected.
#[test]
fn shutdown_closes_the_pool_even_with_a_task_still_running() {
    let warnings = Warnings::default();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(warnings.clone())
            .finish(),
    );
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // For as long as the runtime's thread lives.
            std::mem::forget(tracing::dispatcher::set_default(&on_start));
        })
        .build()
        .unwrap();
    let _main = tracing::dispatcher::set_default(&dispatch);
    runtime.block_on(closes_the_pool(warnings));
}

/// The broker's log lines of level WARN and above, kept for the assertion's message.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Warnings {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Warnings {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Warnings {
    type Writer = Warnings;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn closes_the_pool(warnings: Warnings) {
    use crate::common::*;
    use diax_sdk::clock::unix_now;
    use diax_sdk::wire::SecretScope;
    use sqlx::ConnectOptions as _;
    use std::str::FromStr as _;
    let name = format!(
        "sqlite:file:broker-shutdown-{}-{}?mode=memory&cache=shared",
        std::process::id(),
        diax_sdk::util::random_token("", 8)
    );
    let count_tables = |name: String| async move {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&name)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        // Closed, not dropped: a dropped connection is closed later on its own thread, and
        // until then it keeps the in-memory database alive for the next count to find.
        sqlx::Connection::close(conn).await.unwrap();
        n
    };
    let (broker, api) = start(broker_mock::Config {
        db: name.clone(),
        // The hanging fetch outlives the shutdown.
        http_timeout: 120,
        ..test_config()
    })
    .await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (_, _, job) = accepted_job(&api, &fake, &s, &broker).await;
    let result = b"solid r\nendsolid r\n".to_vec();
    fake.set_result(result.clone());
    let gate = fake.cut_result_after(0);
    let event = completed(
        &job,
        &s.reg,
        1,
        fake.result_download(&result, unix_now() + 600),
    );
    let posting = tokio::spawn(async move { post_event(&s, "msg_hanging", &event).await });
    eventually("the result fetch", || fake.result_gets() == 1).await;
    assert!(
        count_tables(name.clone()).await > 0,
        "the broker's tables, while it runs"
    );
    let stopping = std::time::Instant::now();
    broker.shutdown().await;
    let took = stopping.elapsed();
    let tables = count_tables(name).await;
    let logged = warnings.text();
    assert!(
        !logged.contains("did not close"),
        "a bound on closing the database ran out (shutdown took {took:?}):\n{logged}"
    );
    assert_eq!(
        tables, 0,
        "the database outlived the broker (shutdown took {took:?}); its warnings:\n{logged}"
    );
    gate.notify_waiters();
    posting.abort();
}
