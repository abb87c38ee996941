//! A real S3-compatible server for the bucket tests: `moto_server` (PyPI `moto[server]`,
//! installed by `.ci/run`) on an OS-assigned loopback port, stopped when dropped. Found at
//! `$MOTO_SERVER`, else `target/py-venv/bin/moto_server`, else on the `PATH`.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

impl Moto {
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = binary();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); install it with `pip install 'moto[server]'` \
                     (.ci/run does) or set MOTO_SERVER",
                    bin.display()
                )
            });
        // The port is in its first lines on stderr; keep draining stderr afterwards so the
        // server never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            const MARK: &str = "Running on http://127.0.0.1:";
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[at + MARK.len()..].trim().to_owned());
                }
            }
        });
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("moto_server reports its port within 60 s");
        let port: u16 = port.parse().unwrap();
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..1200 {
            if http.get(&moto.endpoint).send().await.is_ok() {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer within 60 s");
    }

    /// Creates a bucket `bm-{random}`; returns its name.
    pub async fn create_bucket(&self) -> String {
        let name = format!(
            "bm-{}",
            diax_sdk::util::random_token("", 12).to_ascii_lowercase()
        );
        let status = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "creating bucket {name}: {status}");
        name
    }

    /// The object keys in `bucket` under `prefix` (moto without its IAM mode takes
    /// unsigned requests).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body = reqwest::Client::new()
            .get(format!("{}/{bucket}", self.endpoint))
            .query(&[("list-type", "2"), ("prefix", prefix)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        between_all(&body, "<Key>", "</Key>")
    }

    /// Multipart uploads begun and neither completed nor aborted in `bucket`.
    pub async fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let body = reqwest::Client::new()
            .get(format!("{}/{bucket}?uploads", self.endpoint))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        between_all(&body, "<UploadId>", "</UploadId>")
    }

    /// Writes `bytes` as object `key` of `bucket` directly.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let status = reqwest::Client::new()
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }

    /// Makes the server check credentials from now on (moto's IAM mode) and returns the
    /// only ones it then accepts: `(access key id, secret access key)` of a user allowed
    /// `s3:*`. Create buckets first.
    pub async fn enforce_credentials(&self) -> (String, String) {
        let http = reqwest::Client::new();
        // Unchecked yet; the credential scope tells moto which service is asked (IAM).
        let scope = "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/iam/aws4_request, \
                     SignedHeaders=host, Signature=0";
        let iam = async |form: &[(&str, &str)]| -> String {
            let mut form = form.to_vec();
            form.push(("Version", "2010-05-08"));
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let resp = http
                .post(format!("{}/", self.endpoint))
                .header("authorization", scope)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert!(status.is_success(), "IAM {form:?}: {status} {body}");
            body
        };
        let user = "bm-tests";
        iam(&[("Action", "CreateUser"), ("UserName", user)]).await;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", user),
            ("PolicyName", "s3"),
            ("PolicyDocument", policy),
        ])
        .await;
        let body = iam(&[("Action", "CreateAccessKey"), ("UserName", user)]).await;
        let id = between_all(&body, "<AccessKeyId>", "</AccessKeyId>").remove(0);
        let secret = between_all(&body, "<SecretAccessKey>", "</SecretAccessKey>").remove(0);
        let status = http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .header("content-type", "application/octet-stream")
            .body("0")
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "reset-auth: {status}");
        (id, secret)
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn between_all(body: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find(open) {
        rest = &rest[at + open.len()..];
        let Some(end) = rest.find(close) else { break };
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
