//! `--storage s3://bucket/prefix`: model versions (uploads and job results) in a real
//! S3-compatible server (`moto_server`, see `tests/src/moto.rs`), the provider's input as a presigned
//! URL, uploads streamed in parts with nothing left by a failed one, the sweep of objects no
//! version names, and bad bucket settings refused at start-up in one line.

use std::time::Duration;

use broker_mock::Config;
use diax_sdk::clock::unix_now;
use diax_sdk::s3::S3Args;
use diax_sdk::util::sha256_hex;
use diax_sdk::wire::*;

use crate::child::{Child, memory_kib};
use crate::common::*;
use crate::moto::Moto;

const PREFIX: &str = "broker/eu";

fn bucket_config(moto: &Moto, bucket: &str) -> Config {
    Config {
        storage: format!("s3://{bucket}/{PREFIX}"),
        s3: S3Args {
            endpoint: Some(moto.endpoint().to_owned()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            session_token: None,
        },
        s3_part_size: 5 * 1024 * 1024,
        ..test_config()
    }
}

/// [`bucket_config`] for models of up to 20 MiB (several parts).
fn large_bucket_config(moto: &Moto, bucket: &str) -> Config {
    Config {
        max_model_bytes: 20 * 1024 * 1024,
        ..bucket_config(moto, bucket)
    }
}

/// Bytes that do not repeat in any short period (so a misplaced part would show).
fn big(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Polls `f` until it is true (up to 20 s: the bucket answers in milliseconds).
async fn until<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_results_live_in_the_bucket_and_the_input_is_a_presigned_url() {
    let moto = Moto::start().await.unwrap();
    let bucket = moto.create_bucket().await.unwrap();
    let (broker, api) = start(bucket_config(&moto, &bucket)).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (key, user, model, job) = linked_job(&api, &fake, &s, &broker).await;
    assert_eq!(job.state, JobState::Accepted, "{job:?}");

    // The upload is one object under the prefix, named after its model.
    let objects = moto
        .keys(&bucket, &format!("{PREFIX}/models/{}/", model.model_id))
        .await
        .unwrap();
    assert_eq!(objects.len(), 1, "{objects:?}");

    // The provider got a presigned GET URL on the store: no Authorization header, the size
    // and digest in the signed message, and it fetched the bytes with it.
    let stl = stl();
    eventually("the input", || {
        !fake.state.inputs.lock().unwrap().is_empty()
    })
    .await;
    let (input, got) = fake.last_input();
    let dl = &input.download;
    assert_eq!(dl.authorization, None);
    assert!(
        dl.url
            .starts_with(&format!("{}/{bucket}/{}", moto.endpoint(), objects[0])),
        "{}",
        dl.url
    );
    assert!(dl.url.contains("X-Amz-Signature="), "{}", dl.url);
    assert!(dl.url.contains("X-Amz-Expires=600"), "{}", dl.url);
    assert_eq!(
        (dl.size, dl.sha256.as_str()),
        (stl.len() as u64, sha256_hex(&stl).as_str())
    );
    assert!((dl.expires_at - (unix_now() + 600)).abs() <= 5);
    assert_eq!(got.unwrap(), stl);
    // (That the URL grants GET of this one object only, until it expires, is S3's rule:
    // moto checks no signature outside its IAM mode and serves no presigned URL in it, so
    // it is not asserted here.)

    // The result becomes version 2, also an object; the owner downloads it through the
    // broker, streamed from the bucket.
    let healed = big(300_000);
    fake.set_result(healed.clone());
    let done = event(
        &job,
        &s.reg,
        1,
        JobEventKind::Completed {
            result: JobResult {
                download: fake.result_download(&healed, unix_now() + 600),
                format: "stl".into(),
                report: None,
                charged: None,
                picture: None,
            },
        },
    );
    let h = http();
    let (st, ack) = post_event_raw(
        &h,
        &s.reg,
        &s.ring,
        "msg_done",
        unix_now(),
        &serde_json::to_vec(&done).unwrap(),
    )
    .await;
    assert_eq!(
        (st, ack["state"].as_str()),
        (200, Some("completed")),
        "{ack}"
    );
    let objects = moto
        .keys(&bucket, &format!("{PREFIX}/models/{}/", model.model_id))
        .await
        .unwrap();
    assert_eq!(objects.len(), 2, "{objects:?}");
    let shown = user.model(&model.model_id).await.unwrap();
    assert_eq!(shown.versions[1].sha256, sha256_hex(&healed));
    let url = format!(
        "{}/v1/models/{}/versions/2/content",
        broker.base_url(),
        model.model_id
    );
    let resp = h.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-content-sha256"],
        sha256_hex(&healed).as_str()
    );
    assert_eq!(
        resp.headers()["content-length"],
        healed.len().to_string().as_str()
    );
    assert_eq!(resp.bytes().await.unwrap(), healed);
    // Someone else's key still sees nothing.
    let (other, _) = new_user(&api, "mallory").await;
    let resp = h
        .get(&url)
        .bearer_auth(&other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_go_up_in_parts_and_failed_ones_leave_nothing() {
    let moto = Moto::start().await.unwrap();
    let bucket = moto.create_bucket().await.unwrap();
    let (broker, api) = start(large_bucket_config(&moto, &bucket)).await;
    let (created, user) = new_user(&api, "gareth").await;

    // 12 MiB and a bit: three parts of 5 MiB, the last one short; back whole.
    let data = big(12 * 1024 * 1024 + 12_345);
    let model = user.upload_model("big.stl", data.clone()).await.unwrap();
    assert_eq!(model.versions[0].size, data.len() as u64);
    assert_eq!(model.versions[0].sha256, sha256_hex(&data));
    assert_eq!(user.download(&model.model_id, 1).await.unwrap(), data);
    assert!(moto.open_uploads(&bucket).await.unwrap().is_empty());
    let before = moto.keys(&bucket, PREFIX).await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");

    let url = format!("{}/v1/models?name=cut.stl", broker.base_url());
    // A body cut off after 7 MiB (the client goes away): the request fails, and neither an
    // object nor an unfinished multipart upload stays.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..7)
        .map(|i| Ok(data[i << 20..(i + 1) << 20].to_vec()))
        .chain([Err(std::io::Error::other("cut"))])
        .collect();
    let sent = http()
        .post(&url)
        .bearer_auth(&created.api_key)
        .header("content-type", "model/stl")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    assert!(
        sent.as_ref().map_or(true, |r| !r.status().is_success()),
        "{sent:?}"
    );
    until("the cut upload aborted", || async {
        moto.open_uploads(&bucket).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(moto.keys(&bucket, PREFIX).await.unwrap(), before);

    // Larger than --max-model-bytes: announced, refused before a byte is read; streamed
    // without a length, refused when the limit is passed. Nothing stays either way.
    let too_big = big(20 * 1024 * 1024 + 1);
    let (st, _, body) = raw(
        &http(),
        reqwest::Method::POST,
        url.clone(),
        Some(&created.api_key),
        Some("model/stl"),
        too_big.clone(),
    )
    .await;
    assert_eq!(
        (st, problem_type(&body)),
        (413, "payload-too-large"),
        "{body}"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        too_big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let resp = http()
        .post(&url)
        .bearer_auth(&created.api_key)
        .header("content-type", "model/stl")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    until("the oversized upload aborted", || async {
        moto.open_uploads(&bucket).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(moto.keys(&bucket, PREFIX).await.unwrap(), before);
    assert_eq!(user.models().await.unwrap().models.len(), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_streams_into_the_bucket_and_a_bad_one_leaves_nothing() {
    let moto = Moto::start().await.unwrap();
    let bucket = moto.create_bucket().await.unwrap();
    let (broker, api) = start(large_bucket_config(&moto, &bucket)).await;
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (key, user, model, job) = linked_job(&api, &fake, &s, &broker).await;
    let objects = format!("{PREFIX}/models/{}/", model.model_id);
    let before = moto.keys(&bucket, &objects).await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");

    // 12 MiB and a bit: more than two parts of 5 MiB, so every refusal below comes after
    // the upload of the first parts has begun.
    let healed = big(12 * 1024 * 1024 + 777);
    fake.set_result(healed.clone());
    let post = async |id: &str, download: Download| {
        post_event(&s, id, &completed(&job, &s.reg, 1, download)).await
    };
    let good = fake.result_download(&healed, unix_now() + 600);
    let wrong_digest = Download {
        sha256: sha256_hex(b"other bytes"),
        ..good.clone()
    };
    // Declared one byte short: more arrives than declared.
    let oversize = Download {
        size: good.size - 1,
        ..good.clone()
    };
    let refused = async |id: &str, (st, p): (u16, serde_json::Value)| {
        assert_eq!(
            (st, problem_type(&p)),
            (502, "download-failed"),
            "{id}: {p}"
        );
        until("the refused result's upload aborted", || async {
            moto.open_uploads(&bucket).await.unwrap().is_empty()
        })
        .await;
        assert_eq!(moto.keys(&bucket, &objects).await.unwrap(), before, "{id}");
        assert_eq!(user.model(&model.model_id).await.unwrap().versions.len(), 1);
    };
    for (id, download) in [("msg_digest", wrong_digest), ("msg_oversize", oversize)] {
        refused(id, post(id, download).await).await;
    }
    // The provider's server sends 7 MiB, then holds the connection: the bytes are already
    // going up as a multipart upload (nothing buffers the result whole). Then it breaks
    // the connection off.
    let gate = fake.cut_result_after(7 << 20);
    let (answer, ()) = tokio::join!(post("msg_cut", good.clone()), async {
        until(
            "a multipart upload begun before the end of the result",
            || async { !moto.open_uploads(&bucket).await.unwrap().is_empty() },
        )
        .await;
        gate.notify_one();
    });
    refused("msg_cut", answer).await;

    // The whole result: version 2, one new object, byte for byte, no upload left open.
    fake.serve_whole_result();
    let (st, ack) = post("msg_done", good).await;
    assert_eq!(
        (st, ack["state"].as_str()),
        (200, Some("completed")),
        "{ack}"
    );
    assert!(moto.open_uploads(&bucket).await.unwrap().is_empty());
    let after = moto.keys(&bucket, &objects).await.unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    let shown = user.model(&model.model_id).await.unwrap();
    assert_eq!(
        (shown.versions[1].size, shown.versions[1].sha256.as_str()),
        (healed.len() as u64, sha256_hex(&healed).as_str())
    );
    let url = format!(
        "{}/v1/models/{}/versions/2/content",
        broker.base_url(),
        model.model_id
    );
    let resp = http().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == healed);
    broker.shutdown().await;
}

/// A job's result (96 MiB by default; `BROKER_MOCK_TEST_RESULT_MIB` sets it) goes from the
/// provider into the bucket through the real `broker-mock` binary, which never holds it
/// whole: its peak resident memory grows by less than half the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_streams_through_the_broker_in_flat_memory() {
    let mib: usize = std::env::var("BROKER_MOCK_TEST_RESULT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let moto = Moto::start().await.unwrap();
    let bucket = moto.create_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let max = ((mib + 1) << 20).to_string();
    let storage = format!("s3://{bucket}/{PREFIX}");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_broker-mock"));
    command
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--allow-private-addresses",
            "--storage",
        ])
        .arg(&storage)
        .args(["--s3-endpoint", moto.endpoint()])
        .args([
            "--s3-access-key-id",
            "testing",
            "--s3-secret-access-key",
            "testing",
        ])
        .args([
            "--max-model-bytes",
            &max,
            "--max-stored-bytes-per-user",
            &max,
        ])
        .env("RUST_LOG", "info");
    let broker = Child::start(&mut command, &dir.path().join("broker.log"), "listening").await;
    let base = format!("http://{}", broker.addr());
    let pid = broker.id();
    let api = broker_mock::BrokerApi::new(http(), &base);
    let fake = fake_provider().await;
    let s = register(&api, &fake, SecretScope::Service).await;
    let (key, _, model, job) = linked_job_at(&api, &fake, &s, unix_now()).await;
    assert_eq!(job.state, JobState::Accepted, "{job:?}");
    let result = big(mib << 20);
    fake.set_result(result.clone());
    let (rss_before, peak_before) = memory_kib(pid);
    let started = std::time::Instant::now();
    let download = fake.result_download(&result, unix_now() + 600);
    let (st, ack) = post_event(&s, "msg_big", &completed(&job, &s.reg, 1, download)).await;
    let took = started.elapsed();
    assert_eq!(
        (st, ack["state"].as_str()),
        (200, Some("completed")),
        "{ack}"
    );
    let (rss_after, peak_after) = memory_kib(pid);
    eprintln!(
        "{mib} MiB result fetched into the bucket in {:.1} s ({:.1} MiB/s): broker VmRSS {} -> {} MiB, \
         VmHWM {} -> {} MiB",
        took.as_secs_f64(),
        mib as f64 / took.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        peak_before / 1024,
        peak_after / 1024
    );
    // Back whole, from the bucket through the broker.
    let url = format!("{base}/v1/models/{}/versions/2/content", model.model_id);
    let resp = http().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == result);
    assert!(
        peak_after < peak_before + (mib as u64 * 1024) / 2,
        "the broker's peak resident memory grew from {peak_before} KiB to {peak_after} KiB \
         for a {mib} MiB result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_objects_no_version_names() {
    let moto = Moto::start().await.unwrap();
    let bucket = moto.create_bucket().await.unwrap();
    let (broker, api) = start(Config {
        sweep_interval_ms: 50,
        ..bucket_config(&moto, &bucket)
    })
    .await;
    let (_, user) = new_user(&api, "gareth").await;
    let model = user.upload_model("cube.stl", stl()).await.unwrap();
    let kept = moto.keys(&bucket, PREFIX).await.unwrap();
    assert_eq!(kept.len(), 1);
    // What a crash between writing an object and its row leaves.
    let stray = format!("{PREFIX}/models/{}/stray.stl", model.model_id);
    moto.put(&bucket, &stray, b"orphan".to_vec()).await.unwrap();
    // Outside the prefix: not the broker's to remove.
    moto.put(&bucket, "elsewhere/models/x.stl", b"other".to_vec())
        .await
        .unwrap();
    // Young objects are left alone (an upload may be on its way to its row).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(moto.keys(&bucket, PREFIX).await.unwrap().contains(&stray));
    // An hour and more later the stray goes; the version's object and the foreign one stay.
    broker.clock().advance(3700);
    until("the stray removed", || async {
        !moto.keys(&bucket, PREFIX).await.unwrap().contains(&stray)
    })
    .await;
    assert_eq!(moto.keys(&bucket, PREFIX).await.unwrap(), kept);
    assert_eq!(moto.keys(&bucket, "elsewhere").await.unwrap().len(), 1);
    assert_eq!(user.download(&model.model_id, 1).await.unwrap(), stl());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bucket_settings_fail_at_start_up_in_one_line() {
    let moto = Moto::start().await.unwrap();
    let bucket = moto.create_bucket().await.unwrap();
    let fails = async |config: Config| -> String {
        let e = broker_mock::Broker::start(config)
            .await
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    };
    // An unknown bucket.
    let e = fails(bucket_config(&moto, "no-such-bucket-here")).await;
    assert!(
        e.contains("s3://no-such-bucket-here/broker/eu") && e.contains("NoSuchBucket"),
        "{e}"
    );
    // An endpoint nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = bucket_config(&moto, &bucket);
    config.s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
    config.http_timeout = 3;
    let e = fails(config).await;
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    // Plain http to a host that is not loopback, before any request.
    let mut config = bucket_config(&moto, &bucket);
    config.s3.endpoint = Some("http://s3.example.com".into());
    let e = fails(config).await;
    assert!(e.contains("https"), "{e}");

    // Wrong credentials, once the server checks them.
    let (id, secret) = moto.enforce_credentials().await.unwrap();
    let with = |id: &str, secret: &str| {
        let mut config = bucket_config(&moto, &bucket);
        config.s3.access_key_id = Some(id.to_owned());
        config.s3.secret_access_key = Some(secret.to_owned());
        config
    };
    // The right key passes (so what fails below is the credential alone).
    broker_mock::Broker::start(with(&id, &secret))
        .await
        .unwrap()
        .shutdown()
        .await;
    for (config, code) in [
        (with(&id, "not-the-secret"), "SignatureDoesNotMatch"),
        (with("AKIANOSUCHKEY0000000", &secret), "InvalidAccessKeyId"),
    ] {
        let e = fails(config).await;
        assert!(
            e.contains(&format!("s3://{bucket}/{PREFIX}")) && e.contains(code),
            "{e}"
        );
        assert!(!e.contains(&secret), "the secret is never printed: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_bad_bucket_with_one_line_and_a_failure_exit() {
    let moto = Moto::start().await.unwrap();
    let endpoint = moto.endpoint().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_broker-mock"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--storage",
                "s3://no-such-bucket-here/x",
                "--s3-endpoint",
                &endpoint,
            ])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "error")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("NoSuchBucket"), "{lines:?}");
    // A malformed --storage is a usage error naming the rule.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker-mock"))
        .args(["serve", "--storage", "s3://NO"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bucket name must be"), "{stderr}");
}
