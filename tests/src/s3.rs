//! A real S3-compatible server for the tests: `moto_server` (PyPI `moto[server]`) on an
//! OS-assigned loopback port, stopped when dropped.
//!
//! The server binary is `$MOTO_SERVER`, else `target/py-venv/bin/moto_server` (where `.ci/run`
//! installs it), else `moto_server` on the `PATH`. Without one the tests that need it fail
//! with a message saying how to install it.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fixmyprint::service::S3Settings;

/// A running `moto_server`.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    endpoint: String,
}

/// Why the server could not start or answer.
#[derive(Debug, thiserror::Error)]
#[error("moto_server: {0}")]
pub struct S3ServerError(String);

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

impl S3Server {
    /// Starts `moto_server -H 127.0.0.1 -p 0` and waits (up to 60 s) until it answers.
    ///
    /// # Errors
    /// When the binary is missing, or it does not come up in time.
    pub async fn start() -> Result<Self, S3ServerError> {
        diax_sdk::client::install_crypto_provider();
        let bin = binary();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                S3ServerError(format!(
                    "cannot run {} ({e}); install it with `pip install 'moto[server]'` \
                     (.ci/run does) or set MOTO_SERVER",
                    bin.display()
                ))
            })?;
        // The port it got is in its first lines on stderr; keep draining stderr after that
        // so the server never blocks on a full pipe.
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| S3ServerError("no stderr".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("Running on http://127.0.0.1:")
                    && let Some(tx) = tx.take()
                {
                    let port = line[at + "Running on http://127.0.0.1:".len()..]
                        .trim()
                        .to_owned();
                    let _ = tx.send(port);
                }
            }
        });
        let mut server = Self {
            child,
            endpoint: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .map_err(|e| S3ServerError(e.to_string()))?
            .map_err(|_| S3ServerError("did not report its port within 60 s".into()))?;
        let port: u16 = port
            .parse()
            .map_err(|_| S3ServerError(format!("unexpected port {port:?}")))?;
        server.endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        loop {
            if http.get(&server.endpoint).send().await.is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(S3ServerError("did not answer within 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a bucket named `fmp-{random}` and returns its name.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn create_bucket(&self) -> Result<String, S3ServerError> {
        let name = format!(
            "fmp-{}",
            diax_sdk::util::random_token("", 12).to_ascii_lowercase()
        );
        let status = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .map_err(|e| S3ServerError(e.to_string()))?
            .status();
        if !status.is_success() {
            return Err(S3ServerError(format!("creating bucket {name}: {status}")));
        }
        Ok(name)
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
    pub async fn enforce_credentials(&self) -> Result<(String, String), S3ServerError> {
        let http = reqwest::Client::new();
        // Unchecked yet, but the Authorization header's credential scope tells moto which
        // service is asked (IAM, not S3).
        let scope = "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/iam/aws4_request, \
                     SignedHeaders=host, Signature=0";
        let iam = async |form: &[(&str, &str)]| -> Result<String, S3ServerError> {
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
                .map_err(|e| S3ServerError(e.to_string()))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| S3ServerError(e.to_string()))?;
            if !status.is_success() {
                return Err(S3ServerError(format!("IAM {form:?}: {status} {body}")));
            }
            Ok(body)
        };
        let user = "fmp-tests";
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
        let between = |open: &str, close: &str| -> Result<String, S3ServerError> {
            let start = body
                .find(open)
                .ok_or_else(|| S3ServerError(format!("no {open} in {body}")))?
                + open.len();
            let len = body[start..]
                .find(close)
                .ok_or_else(|| S3ServerError(format!("no {close} in {body}")))?;
            Ok(body[start..start + len].to_owned())
        };
        let id = between("<AccessKeyId>", "</AccessKeyId>")?;
        let secret = between("<SecretAccessKey>", "</SecretAccessKey>")?;
        let status = http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .header("content-type", "application/octet-stream")
            .body("0")
            .send()
            .await
            .map_err(|e| S3ServerError(e.to_string()))?
            .status();
        if !status.is_success() {
            return Err(S3ServerError(format!("reset-auth: {status}")));
        }
        Ok((id, secret))
    }

    /// Settings for `s3://{bucket}/{prefix}` on this server, with test credentials.
    #[must_use]
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            ..S3Settings::parse_url(&url).unwrap_or_default()
        }
    }
}

impl S3Server {
    /// The broker's model store in `s3://{bucket}/{prefix}` on this server.
    #[must_use]
    pub fn broker_storage(&self, bucket: &str, prefix: &str) -> crate::stack::BrokerStorage {
        crate::stack::BrokerStorage {
            url: format!("s3://{bucket}/{prefix}"),
            endpoint: self.endpoint.clone(),
        }
    }

    /// The object keys of `bucket` under `prefix` (moto without its IAM mode takes unsigned
    /// requests).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3ServerError> {
        let body = reqwest::Client::new()
            .get(format!(
                "{}/{bucket}?list-type=2&prefix={}",
                self.endpoint,
                form_encode(prefix)
            ))
            .send()
            .await
            .map_err(|e| S3ServerError(e.to_string()))?
            .text()
            .await
            .map_err(|e| S3ServerError(e.to_string()))?;
        let mut keys = Vec::new();
        let mut rest = body.as_str();
        while let Some(at) = rest.find("<Key>") {
            rest = &rest[at + "<Key>".len()..];
            let Some(end) = rest.find("</Key>") else {
                break;
            };
            keys.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
        Ok(keys)
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

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of a server that the test can cut: while down it refuses new
/// connections and severs open ones (a store outage, as the client sees it).
#[derive(Debug)]
pub struct Cuttable {
    endpoint: String,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    /// A relay on an OS-assigned loopback port to `target` (`host:port`), up.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(target: String) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, target)
    }

    /// A relay on `listener` (bound beforehand, so that its address can be announced before
    /// the target exists) to `target` (`host:port`), up.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn start_on(listener: tokio::net::TcpListener, target: String) -> std::io::Result<Self> {
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (up, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: connection closed
                }
                let mut watch = watch.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { endpoint, up, task })
    }

    /// `http://127.0.0.1:PORT` of the relay.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Cuts (`false`) or restores (`true`) the link.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}
