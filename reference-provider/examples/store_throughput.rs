//! Throughput of the S3 result store on one large result: upload through [`S3Store`]
//! (multipart), download through a presigned URL (streamed, as the broker does), and the
//! process's peak RSS after each phase.
//!
//! ```sh
//! moto_server -H 127.0.0.1 -p 9000 &            # or any S3-compatible endpoint
//! curl -s -X PUT http://127.0.0.1:9000/bench     # a bucket
//! AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
//!   cargo run --release -p fixmyprint --example store_throughput -- http://127.0.0.1:9000 bench 200
//! ```

use std::time::{Duration, Instant};

use fixmyprint::service::{ResultStore as _, S3Settings, S3Store};
use futures_util::StreamExt as _;
use sha2::Digest as _;

/// Peak resident set size of this process so far, MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: store_throughput ENDPOINT BUCKET [MIB]";
    let endpoint = args.next().ok_or(usage)?;
    let bucket = args.next().ok_or(usage)?;
    let mib: usize = args.next().map_or(Ok(200), |s| s.parse())?;
    let env = |k: &str| std::env::var(k).ok();
    let settings = S3Settings {
        endpoint: Some(endpoint),
        region: env("AWS_REGION"),
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
        ..S3Settings::parse_url(&format!("s3://{bucket}/bench"))?
    };
    let store = S3Store::connect(settings, Duration::from_secs(120)).await?;
    let before = peak_rss_mib();
    let data: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let digest = diax_sdk::util::sha256_hex(&data);
    let data = bytes::Bytes::from(data);
    let with_data = peak_rss_mib();
    println!(
        "result: {mib} MiB; peak RSS {before:.0} MiB before it, {with_data:.0} MiB holding it"
    );

    let key = "bench_result";
    let started = Instant::now();
    store.put(key, data.clone()).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "upload   (multipart, 8 MiB parts, 4 in flight): {secs:.2} s, {:.1} MiB/s, peak RSS {:.0} MiB",
        mib as f64 / secs,
        peak_rss_mib()
    );
    drop(data);

    diax_sdk::client::install_crypto_provider();
    let url = store
        .presign_get(key, Duration::from_secs(600))
        .await?
        .ok_or("no presigned URL")?;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(&url)
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut hasher = sha2::Sha256::new();
    let mut got = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        got += chunk.len();
        hasher.update(&chunk);
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = hex::encode(hasher.finalize()) == digest && got == mib * 1024 * 1024;
    println!(
        "download (presigned GET, streamed and hashed): {secs:.2} s, {:.1} MiB/s, digest {}, peak RSS {:.0} MiB",
        mib as f64 / secs,
        if ok { "ok" } else { "MISMATCH" },
        peak_rss_mib()
    );
    store.delete(key).await?;
    if ok {
        Ok(())
    } else {
        Err("digest mismatch".into())
    }
}
