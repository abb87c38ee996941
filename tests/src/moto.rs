//! A real S3-compatible server for the tests: `moto_server` (PyPI `moto[server]`) on an
//! OS-assigned loopback port, stopped when dropped. Used by the end-to-end tests (through
//! [`crate::s3`]) and, included by path, by the broker mock's bucket tests.
//!
//! The server binary is `$MOTO_SERVER`, else `target/py-venv/bin/moto_server` (where `.ci/run`
//! installs it), else `moto_server` on the `PATH`. Without one the tests that need it fail
//! with a message saying how to install it.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    endpoint: String,
}

/// Why the server could not start, or refused or failed a request.
#[derive(Debug)]
pub struct MotoError(String);

impl std::fmt::Display for MotoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "moto_server: {}", self.0)
    }
}

impl std::error::Error for MotoError {}

fn err(e: impl std::fmt::Display) -> MotoError {
    MotoError(e.to_string())
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    // Both including packages sit one level below the workspace root.
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p 0` and waits (up to 60 s) until it answers.
    ///
    /// # Errors
    /// When the binary is missing, or it does not come up in time.
    pub async fn start() -> Result<Self, MotoError> {
        diax_sdk::client::install_crypto_provider();
        let bin = binary();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                MotoError(format!(
                    "cannot run {} ({e}); install it with `pip install 'moto[server]'` \
                     (.ci/run does) or set MOTO_SERVER",
                    bin.display()
                ))
            })?;
        // The port it got is in its first lines on stderr; keep draining stderr after that
        // so the server never blocks on a full pipe.
        let stderr = child.stderr.take().ok_or_else(|| err("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            const MARK: &str = "Running on http://127.0.0.1:";
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[at + MARK.len()..].trim().to_owned());
                }
            }
        });
        // Killed when dropped, from here on.
        let mut server = Self {
            child,
            endpoint: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .map_err(err)?
            .map_err(|_| err("did not report its port within 60 s"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| MotoError(format!("unexpected port {port:?}")))?;
        server.endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        loop {
            if http.get(&server.endpoint).send().await.is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(err("did not answer within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a bucket named `kit-{random}` and returns its name.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn create_bucket(&self) -> Result<String, MotoError> {
        let name = format!(
            "kit-{}",
            diax_sdk::util::random_token("", 12).to_ascii_lowercase()
        );
        let status = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .map_err(err)?
            .status();
        if !status.is_success() {
            return Err(MotoError(format!("creating bucket {name}: {status}")));
        }
        Ok(name)
    }

    /// The object keys of `bucket` under `prefix` (moto without its IAM mode takes unsigned
    /// requests).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, MotoError> {
        let url = format!(
            "{}/{bucket}?list-type=2&prefix={}",
            self.endpoint,
            form_encode(prefix)
        );
        Ok(between_all(&self.text(&url).await?, "<Key>", "</Key>"))
    }

    /// Multipart uploads begun and neither completed nor aborted in `bucket`.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn open_uploads(&self, bucket: &str) -> Result<Vec<String>, MotoError> {
        let url = format!("{}/{bucket}?uploads", self.endpoint);
        Ok(between_all(
            &self.text(&url).await?,
            "<UploadId>",
            "</UploadId>",
        ))
    }

    /// Writes `bytes` as object `key` of `bucket` directly.
    ///
    /// # Errors
    /// When the server refuses or cannot be reached.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), MotoError> {
        let status = reqwest::Client::new()
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(bytes)
            .send()
            .await
            .map_err(err)?
            .status();
        if !status.is_success() {
            return Err(MotoError(format!("putting {bucket}/{key}: {status}")));
        }
        Ok(())
    }

    async fn text(&self, url: &str) -> Result<String, MotoError> {
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .map_err(err)?
            .text()
            .await
            .map_err(err)
    }

    /// Makes the server check credentials from now on, as S3 does, and returns the only ones
    /// it then accepts: `(access key id, secret access key)` of an IAM user allowed `s3:*`.
    ///
    /// moto accepts any credentials by default. This creates the user and its key through
    /// moto's IAM API (still unchecked), then sets moto's `INITIAL_NO_AUTH_ACTION_COUNT` to 0
    /// (`POST /moto-api/reset-auth`): every later request must be signed with that key. Create
    /// buckets before calling it. Presigned URLs are not served in this mode.
    ///
    /// # Errors
    /// When the server refuses a step.
    pub async fn enforce_credentials(&self) -> Result<(String, String), MotoError> {
        let http = reqwest::Client::new();
        // Unchecked yet, but the Authorization header's credential scope tells moto which
        // service is asked (IAM, not S3).
        let scope = "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/iam/aws4_request, \
                     SignedHeaders=host, Signature=0";
        let iam = async |form: &[(&str, &str)]| -> Result<String, MotoError> {
            let mut form = form.to_vec();
            form.push(("Version", "2010-05-08"));
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let response = http
                .post(format!("{}/", self.endpoint))
                .header("authorization", scope)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .map_err(err)?;
            let status = response.status();
            let body = response.text().await.map_err(err)?;
            if !status.is_success() {
                return Err(MotoError(format!("IAM {form:?}: {status} {body}")));
            }
            Ok(body)
        };
        let user = "kit-tests";
        iam(&[("Action", "CreateUser"), ("UserName", user)]).await?;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", user),
            ("PolicyName", "s3"),
            ("PolicyDocument", policy),
        ])
        .await?;
        let body = iam(&[("Action", "CreateAccessKey"), ("UserName", user)]).await?;
        let first = |open: &str, close: &str| {
            between_all(&body, open, close)
                .into_iter()
                .next()
                .ok_or_else(|| MotoError(format!("no {open} in {body}")))
        };
        let id = first("<AccessKeyId>", "</AccessKeyId>")?;
        let secret = first("<SecretAccessKey>", "</SecretAccessKey>")?;
        let status = http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .header("content-type", "application/octet-stream")
            .body("0")
            .send()
            .await
            .map_err(err)?
            .status();
        if !status.is_success() {
            return Err(MotoError(format!("reset-auth: {status}")));
        }
        Ok((id, secret))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Every text between `open` and the next `close` in `body`, in order.
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
