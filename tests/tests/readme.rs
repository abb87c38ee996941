//! The README's "Running the pieces yourself" commands, run as a user would: the real
//! `broker-mock` and `fixmyprint` binaries as separate processes, driven over HTTP, ending with
//! the conformance runner's verdict on FixMyPrint. Ports are assigned by the OS (`--addr
//! 127.0.0.1:0`) and read back from each server's log line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Builds (if needed) and locates a binary of the workspace, in the profile of
/// this test binary (`target/<profile>/deps/..`).
fn binary(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        // Every binary with the README test command's features: under that command this
        // rebuilds nothing; run alone it builds what is missing or stale.
        .args(["build", "-q", "--workspace", "--all-features", "--bins"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bins failed");
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join(name)
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `cmd`, waits for its log line carrying `url=`/`base_url=`, keeps draining its output.
fn serve(mut cmd: Command) -> Server {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if let Some(url) = line.split_whitespace().find_map(|w| {
                    w.strip_prefix("base_url=")
                        .or_else(|| w.strip_prefix("url="))
                }) {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
    }
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server announced its URL");
    Server { child, url }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.env("NO_COLOR", "1").output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn post(http: &reqwest::Client, url: &str, key: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let value: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {value}");
    value
}

/// Step 5: a funded account (1,000 minor units) and a poor one at the FixMyPrint at `url`.
async fn accounts(http: &reqwest::Client, url: &str) -> (Value, Value) {
    let funded = post(
        http,
        &format!("{url}/v1/accounts"),
        None,
        json!({"name": "funded"}),
    )
    .await;
    post(
        http,
        &format!("{url}/v1/accounts/me/top-up"),
        funded["api_key"].as_str(),
        json!({"amount": 1000}),
    )
    .await;
    let poor = post(
        http,
        &format!("{url}/v1/accounts"),
        None,
        json!({"name": "poor"}),
    )
    .await;
    (funded, poor)
}

/// Polls until the server at `url` has loaded its registration: its job endpoint answers an
/// unsigned message with `400` instead of `503`.
async fn wait_for_registration(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http
            .post(format!("{url}/diax/jobs"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if resp.status() == reqwest::StatusCode::BAD_REQUEST {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registration not picked up: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Step 6: starts the conformance runner against the FixMyPrint at `url`, the secret (or
/// secret key) in the environment.
fn conformance(
    bin: &Path,
    secret: &str,
    url: &str,
    provider_id: &str,
    funded: &Value,
    poor: &Value,
    extra: &[&str],
) -> std::thread::JoinHandle<Output> {
    let child = Command::new(bin)
        .env("NO_COLOR", "1")
        .env("DIAX_CONFORMANCE_SECRET", secret)
        .args([
            "conformance",
            "--provider-url",
            &format!("{url}/diax/jobs"),
            "--provider-id",
            provider_id,
        ])
        .args([
            "--account",
            funded["account_id"].as_str().unwrap(),
            "--poor-account",
            poor["account_id"].as_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the conformance runner");
    // Drained on a thread of its own, so a full pipe never stalls the runner.
    std::thread::spawn(move || child.wait_with_output().expect("conformance runner output"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works() {
    let broker_bin = binary("broker-mock");
    let fixmyprint_bin = binary("fixmyprint");
    let diax_bin = binary("diax");
    let dir = tempfile::tempdir().unwrap();
    let http = diax_sdk::client::http_client(&diax_sdk::client::ClientConfig::default()).unwrap();

    // 1. The broker mock with a SQLite file.
    let mut cmd = Command::new(&broker_bin);
    cmd.args([
        "serve",
        "--allow-private-addresses",
        "--addr",
        "127.0.0.1:0",
        "--db",
    ])
    .arg(dir.path().join("broker.db"));
    let broker = serve(cmd);

    // 2. The operator's broker account.
    let operator = post(
        &http,
        &format!("{}/v1/users", broker.url),
        None,
        json!({"name": "operator"}),
    )
    .await;
    let operator_key = operator["api_key"].as_str().unwrap().to_owned();

    // 3. FixMyPrint on SQLite in its data dir, and a second instance on PostgreSQL.
    let data = dir.path().join("fixmyprint-data");
    let mut cmd = Command::new(&fixmyprint_bin);
    cmd.args([
        "serve",
        "--dev-top-up",
        "--allow-private-inputs",
        "--addr",
        "127.0.0.1:0",
        "--broker-url",
        &broker.url,
        "--data-dir",
    ])
    .arg(&data);
    let fixmyprint = serve(cmd);
    let pg = e2e::pg::TempDatabase::create().await.unwrap();
    let mut cmd = Command::new(&fixmyprint_bin);
    cmd.args([
        "serve",
        "--allow-private-inputs",
        "--addr",
        "127.0.0.1:0",
        "--broker-url",
        &broker.url,
        "--database-url",
        pg.url(),
        "--data-dir",
    ])
    .arg(dir.path().join("shared-data"));
    let on_postgres = serve(cmd);
    let ready = http
        .get(format!("{}/readyz", on_postgres.url))
        .send()
        .await
        .unwrap();
    assert!(
        ready.status().is_success(),
        "PostgreSQL instance not ready: {}",
        ready.status()
    );
    drop(on_postgres);

    // 4. Registration, with the secret shown.
    let out = run(Command::new(&fixmyprint_bin)
        .args([
            "register",
            "--broker-url",
            &broker.url,
            "--public-url",
            &fixmyprint.url,
            "--api-key",
            &operator_key,
            "--show-secret",
            "--data-dir",
        ])
        .arg(&data));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {stdout}"))
            .to_owned()
    };
    let (provider_id, secret) = (field("provider_id"), field("secret"));
    assert!(secret.starts_with("whsec_"));

    // 5. A funded and a poor account.
    let (funded, poor) = accounts(&http, &fixmyprint.url).await;

    // The running service picks the registration up from its database within seconds:
    // until then its job endpoint answers 503, afterwards an unsigned message gets 400.
    wait_for_registration(&http, &fixmyprint.url).await;

    // 6. The conformance runner: every check passes. It runs while the ed25519 variant below
    //    is set up, then that one runs too.
    let hmac_run = conformance(
        &broker_bin,
        &secret,
        &fixmyprint.url,
        &provider_id,
        &funded,
        &poor,
        &[],
    );

    // The same steps with ed25519: a key pair for the runner, FixMyPrint trusting its public
    // key, registered with `--signature-scheme ed25519` (it prints its own public key), and
    // the runner with its secret key and FixMyPrint's public key.
    let out = run(Command::new(&diax_bin).args(["secret", "new", "--ed25519"]));
    let keys = String::from_utf8(out.stdout).unwrap();
    let mut lines = keys.lines();
    let (runner_secret, runner_public) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(runner_secret.starts_with("whsk_") && runner_public.starts_with("whpk_"));
    let data_ed = dir.path().join("fixmyprint-ed25519");
    let mut cmd = Command::new(&fixmyprint_bin);
    cmd.args([
        "serve",
        "--dev-top-up",
        "--allow-private-inputs",
        "--trust-broker-key",
        runner_public,
        "--addr",
        "127.0.0.1:0",
        "--broker-url",
        &broker.url,
        "--data-dir",
    ])
    .arg(&data_ed);
    let fixmyprint_ed = serve(cmd);
    let out = run(Command::new(&fixmyprint_bin)
        .args([
            "register",
            "--signature-scheme",
            "ed25519",
            "--broker-url",
            &broker.url,
            "--public-url",
            &fixmyprint_ed.url,
            "--api-key",
            &operator_key,
            "--data-dir",
        ])
        .arg(&data_ed));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {stdout}"))
            .to_owned()
    };
    let (provider_id_ed, public_key) = (field("provider_id"), field("public_key"));
    assert!(public_key.starts_with("whpk_"), "{stdout}");
    assert!(
        !stdout.contains("whsk_") && !stdout.contains("whsec_"),
        "{stdout}"
    );
    let (funded_ed, poor_ed) = accounts(&http, &fixmyprint_ed.url).await;
    wait_for_registration(&http, &fixmyprint_ed.url).await;
    let ed_run = conformance(
        &broker_bin,
        runner_secret,
        &fixmyprint_ed.url,
        &provider_id_ed,
        &funded_ed,
        &poor_ed,
        &["--provider-public-key", &public_key],
    );
    for (scheme, child) in [("hmac-sha256", hmac_run), ("ed25519", ed_run)] {
        let out = child.join().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "conformance ({scheme}) failed:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            report.contains("PASS") && !report.contains("FAIL"),
            "{scheme}: {report}"
        );
    }

    drop(fixmyprint_ed);
    drop(fixmyprint);
    drop(broker);
    pg.drop_database().await.unwrap();
}
