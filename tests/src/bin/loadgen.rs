//! `loadgen`: drives a FixMyPrint server with valid signed job offers for funded linked
//! accounts and reports throughput and latency (p50/p99/p99.9), with the same figures for
//! the server's `GET /healthz` measured in the same run, and the CPU share of the server
//! and of the loader itself. A benchmark tool, never used by a timed test.
//!
//! It starts the `fixmyprint` binary it is given (`serve`, after `register` against a small
//! stand-in broker in this process that answers registration and acknowledges events) on
//! SQLite or PostgreSQL (a fresh database on the server at `FIXMYPRINT_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped afterwards), creates and funds accounts through the provider's API, then runs
//! two phases on the same server: `/healthz` for `--seconds`, then offers for `--seconds`,
//! each with `--connections` concurrent connections. See `docs/LOADGEN.md`.
//!
//! ```text
//! cargo build --release -p fixmyprint -p e2e --bin fixmyprint --bin loadgen
//! target/release/loadgen --fixmyprint target/release/fixmyprint --backend sqlite
//! target/release/loadgen --fixmyprint target/release/fixmyprint --backend postgres
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use diax_sdk::{AccountId, MessageId};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Signed-offer load against a FixMyPrint server"
)]
struct Args {
    /// The `fixmyprint` binary to start (build it with `--release`).
    #[arg(long)]
    fixmyprint: PathBuf,
    /// `sqlite` (a file in a fresh temporary directory) or `postgres`.
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    backend: String,
    /// Concurrent connections in each phase.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Funded linked accounts the offers are spread over.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// Skip the `/healthz` phase.
    #[arg(long)]
    no_healthz: bool,
    /// Offers per second to aim at (open loop: each request is sent at its planned time,
    /// and its latency counts from that time, so a stall shows as latency, not as fewer
    /// requests). Without it the offer phase sends back to back (closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// Print the server's resident memory (RSS) every this many seconds during the offer
    /// phase (for a soak: `--rate 5000 --seconds 600 --rss-every 30`).
    #[arg(long)]
    rss_every: Option<u64>,
    /// Extra arguments for `fixmyprint serve` (repeat), e.g. `--serve-arg=--workers=0`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

/// The child server, killed when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Latencies of one phase, in microseconds.
#[derive(Default)]
struct Phase {
    ok: u64,
    failed: u64,
    wall: Duration,
    micros: Vec<u32>,
    first_failure: Option<String>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        let i = ((self.micros.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<8} {:>9.0} req/s  ok {:>8}  failed {:>5}  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms",
            self.rate(),
            self.ok,
            self.failed,
            self.pct(0.5),
            self.pct(0.99),
            self.pct(0.999)
        )
    }
}

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How the loops of a phase send.
#[derive(Clone, Copy)]
struct Pace {
    /// Requests per second over all loops (open loop), or back to back (`None`).
    rate: Option<u64>,
    /// Print the server's RSS this often.
    rss_every: Option<Duration>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pg = if args.backend == "postgres" {
        Some(
            e2e::pg::TempDatabase::create()
                .await
                .map_err(|e| format!("PostgreSQL at {}: {e}", e2e::pg::admin_url()))?,
        )
    } else {
        None
    };
    let database_url = match &pg {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}", dir.path().join("fixmyprint.db").display()),
    };

    // The stand-in broker.
    let broker = e2e::standin::StandIn::start()
        .await
        .map_err(|e| e.to_string())?;
    let broker_url = broker.base_url().to_owned();

    // A free port for the server (bound and released: a bench tool may take that chance).
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let base = format!("http://{addr}");
    let common = |cmd: &mut Command| {
        cmd.arg("--addr")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(&database_url)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--broker-url")
            .arg(&broker_url)
            .arg("--public-url")
            .arg(&base)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
    };
    let mut reg = Command::new(&args.fixmyprint);
    reg.arg("register")
        .arg("--api-key")
        .arg("usr_loadgen")
        .arg("--group-id")
        .arg("grp_loadgen");
    common(&mut reg);
    let out = reg
        .output()
        .map_err(|e| format!("{}: {e}", args.fixmyprint.display()))?;
    if !out.status.success() {
        return Err(format!(
            "fixmyprint register failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (provider_id, keyring) = broker
        .registered()
        .ok_or("the broker saw no registration")?;

    let mut serve = Command::new(&args.fixmyprint);
    serve
        .arg("serve")
        .arg("--dev-top-up")
        .arg("--allow-private-inputs");
    common(&mut serve);
    serve.args(&args.serve_args).stdout(Stdio::null());
    let server = Server {
        child: serve.spawn().map_err(|e| e.to_string())?,
    };
    let server_pid = server.child.id().to_string();

    diax_sdk::client::install_crypto_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2)
        .build()
        .map_err(|e| e.to_string())?;
    // Ready?
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the server did not become ready in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Funded accounts.
    let mut accounts = Vec::new();
    for i in 0..args.accounts.max(1) {
        let created: Value = http
            .post(format!("{base}/v1/accounts"))
            .json(&json!({"name": format!("load {i}")}))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let key = created["api_key"].as_str().ok_or("no api_key")?.to_owned();
        let id = AccountId::parse(created["account_id"].as_str().ok_or("no account_id")?)
            .map_err(|e| e.to_string())?;
        let r = http
            .post(format!("{base}/v1/accounts/me/top-up"))
            .bearer_auth(&key)
            .json(&json!({"amount": 100_000_000}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("top-up: {}", r.status()));
        }
        accounts.push(id);
    }
    let accounts = Arc::new(accounts);

    println!(
        "loadgen: {} backend, {} connections, {} s per phase, {} accounts, offer rate {}, server pid {server_pid}",
        args.backend,
        args.connections,
        args.seconds,
        args.accounts,
        args.rate
            .map_or_else(|| "as fast as answered".to_owned(), |r| format!("{r}/s"))
    );
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    println!("load average before: {}", load());
    let phase_len = Duration::from_secs(args.seconds);
    if !args.no_healthz {
        let url = format!("{base}/healthz");
        let (phase, server_cpu, own_cpu) = drive(
            &http,
            args.connections,
            phase_len,
            &server_pid,
            move |c: &reqwest::Client, _n: u64| c.get(&url),
            200,
            Pace {
                rate: None,
                rss_every: None,
            },
        )
        .await;
        println!(
            "{}  server CPU {server_cpu:>4.0} %  loader CPU {own_cpu:>4.0} %",
            phase.line("healthz")
        );
    }
    let job_url = format!("{base}/diax/jobs");
    let events_url = broker.events_url(&provider_id);
    let keyring = Arc::new(keyring);
    let (phase, server_cpu, own_cpu) = drive(
        &http,
        args.connections,
        phase_len,
        &server_pid,
        move |c: &reqwest::Client, n: u64| {
            let account = &accounts[(n as usize) % accounts.len()];
            let body = e2e::standin::offer_body(&provider_id, &events_url, account, 10_000);
            e2e::standin::signed(c.post(&job_url), &keyring, &MessageId::generate(), body)
        },
        202,
        Pace {
            rate: args.rate,
            rss_every: args.rss_every.map(Duration::from_secs),
        },
    )
    .await;
    println!(
        "{}  server CPU {server_cpu:>4.0} %  loader CPU {own_cpu:>4.0} %",
        phase.line("offers")
    );
    println!(
        "server RSS after the offers: {} KiB; load average after: {}",
        rss_kib(&server_pid).unwrap_or(0),
        load()
    );
    if let Some(f) = &phase.first_failure {
        println!("first failure: {f}");
    }
    drop(server);
    if let Some(db) = pg {
        db.drop_database().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs `connections` loops for `len`, each sending `make(client, n)` and expecting
/// `want`, back to back or at a shared `pace.rate`; returns the phase and the CPU shares
/// (% of one core) of the server and of this process over the phase.
async fn drive<F>(
    http: &reqwest::Client,
    connections: usize,
    len: Duration,
    server_pid: &str,
    make: F,
    want: u16,
    pace: Pace,
) -> (Phase, f64, f64)
where
    F: Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let (server0, own0) = (cpu_secs(server_pid), cpu_secs("self"));
    let t0 = Instant::now();
    let start = tokio::time::Instant::now();
    // Open loop: request n is due at start + n / rate, whichever loop sends it.
    let interval = pace
        .rate
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(1.0 / r as f64));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (http, make, stop, counter) =
            (http.clone(), make.clone(), stop.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Phase::default();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let req = make(&http, n);
                let t = match interval {
                    Some(every) => {
                        let due = start + every.mul_f64(n as f64);
                        tokio::time::sleep_until(due).await;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        due.into_std()
                    }
                    None => Instant::now(),
                };
                let res = req.send().await;
                let ok = match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.bytes().await.unwrap_or_default();
                        if status == want {
                            true
                        } else {
                            if p.first_failure.is_none() {
                                p.first_failure = Some(format!(
                                    "{status} {}",
                                    String::from_utf8_lossy(&body[..body.len().min(300)])
                                ));
                            }
                            false
                        }
                    }
                    Err(e) => {
                        if p.first_failure.is_none() {
                            p.first_failure = Some(e.to_string());
                        }
                        false
                    }
                };
                let us = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                if ok {
                    p.ok += 1;
                    p.micros.push(us);
                } else {
                    p.failed += 1;
                }
            }
            p
        }));
    }
    match pace.rss_every {
        Some(every) if !every.is_zero() => {
            let end = start + len;
            let mut next = start;
            loop {
                println!(
                    "  t = {:>4} s  server RSS {:>8} KiB  requests begun {}",
                    start.elapsed().as_secs(),
                    rss_kib(server_pid).unwrap_or(0),
                    counter.load(Ordering::Relaxed)
                );
                next += every;
                if next >= end {
                    tokio::time::sleep_until(end).await;
                    break;
                }
                tokio::time::sleep_until(next).await;
            }
        }
        _ => tokio::time::sleep(len).await,
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Phase::default();
    for t in tasks {
        if let Ok(p) = t.await {
            all.ok += p.ok;
            all.failed += p.failed;
            all.micros.extend(p.micros);
            if all.first_failure.is_none() {
                all.first_failure = p.first_failure;
            }
        }
    }
    all.wall = t0.elapsed();
    all.micros.sort_unstable();
    let secs = all.wall.as_secs_f64();
    let server = (cpu_secs(server_pid) - server0) / secs * 100.0;
    let own = (cpu_secs("self") - own0) / secs * 100.0;
    (all, server, own)
}
