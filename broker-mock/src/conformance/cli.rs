//! `broker-mock conformance …`: flags, output and exit status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{
    ConformanceConfig, DEFAULT_BROKER_ID, DEFAULT_KEY_ID, DEFAULT_PROVIDER_ID, TlsIdentity, run,
};

/// Flags of `broker-mock conformance`.
///
/// Exit status: 0 when no check failed (skipped checks are listed but do not fail the run),
/// 1 when any check failed, 2 on bad usage or when the runner cannot start.
#[derive(Debug, Clone, clap::Args)]
pub struct ConformanceArgs {
    /// The provider's job_url, where signed job offers and inputs are POSTed
    /// (https, or http to a loopback address).
    #[arg(long)]
    pub provider_url: String,
    /// The shared secret, `whsec_…`, or for an ed25519 provider the broker's secret key,
    /// `whsk_…`, whose public key the provider trusts (better passed in the environment).
    #[arg(long, env = "DIAX_CONFORMANCE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// With ed25519: the provider's public key, `whpk_…`, its events must verify with. The
    /// whole check list then runs with v1a signatures.
    #[arg(long)]
    pub provider_public_key: Option<String>,
    /// Id of the secret (`kid`); providers verifying against a keyring ignore it.
    #[arg(long, default_value = DEFAULT_KEY_ID)]
    pub key_id: String,
    /// The provider's id as registered at the broker (offers carry it; events must).
    #[arg(long, default_value = DEFAULT_PROVIDER_ID)]
    pub provider_id: String,
    /// The broker id offers carry.
    #[arg(long, default_value = DEFAULT_BROKER_ID)]
    pub broker_id: String,
    /// A provider account that exists and can pay for one job of the test model (a
    /// 684-byte STL). Omit for a free provider (the account checks are then skipped).
    #[arg(long)]
    pub account: Option<String>,
    /// A provider account that exists but cannot pay (for `payment.insufficient`).
    #[arg(long)]
    pub poor_account: Option<String>,
    /// Extra trusted root certificate (PEM file) for reaching the provider and its result
    /// location over HTTPS. Repeatable.
    #[arg(long = "ca-cert")]
    pub ca_certs: Vec<PathBuf>,
    /// Where the runner's own endpoint (model download, events URL) listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Base URL the provider reaches the runner's endpoint at (default: from the bound
    /// address).
    #[arg(long)]
    pub public_url: Option<String>,
    /// PEM certificate chain: serve the runner's endpoint over HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds to wait for the provider's download, events and retries.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The provider's signature tolerance in seconds (stale/future checks go 60 s beyond).
    #[arg(long, default_value_t = 300)]
    pub tolerance: u64,
    /// Seconds `input.repeated-same-job` watches for a second run once the provider answered
    /// the finished job's input sent again (at most --timeout).
    #[arg(long, default_value_t = 2)]
    pub rerun_window: u64,
    /// Seconds `replay.after-delay` waits between its two bodies (below the tolerance).
    #[arg(long, default_value_t = 3)]
    pub replay_delay: u64,
    /// Print the report as JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JUnit XML to this file.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

impl ConformanceArgs {
    /// The library configuration these flags describe (reads the PEM files).
    ///
    /// # Errors
    /// A message when the secret is missing or a file cannot be read.
    pub fn to_config(&self) -> Result<ConformanceConfig, String> {
        let secret = self.secret.clone().ok_or(
            "--secret (or DIAX_CONFORMANCE_SECRET) is required: the whsec_ secret shared with \
             the provider, or with ed25519 the broker's whsk_ key",
        )?;
        let mut cfg = ConformanceConfig::new(self.provider_url.clone(), secret);
        cfg.provider_public_key
            .clone_from(&self.provider_public_key);
        cfg.key_id.clone_from(&self.key_id);
        cfg.provider_id.clone_from(&self.provider_id);
        cfg.broker_id.clone_from(&self.broker_id);
        cfg.account.clone_from(&self.account);
        cfg.poor_account.clone_from(&self.poor_account);
        for path in &self.ca_certs {
            cfg.extra_root_certs_pem.push(read(path, "--ca-cert")?);
        }
        cfg.listen = self.listen;
        cfg.public_url.clone_from(&self.public_url);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            cfg.tls = Some(TlsIdentity {
                cert_pem: read(cert, "--tls-cert")?,
                key_pem: read(key, "--tls-key")?,
            });
        }
        if self.timeout == 0 {
            return Err("--timeout must be at least 1 second".into());
        }
        cfg.timeout = Duration::from_secs(self.timeout);
        cfg.tolerance_secs = self.tolerance;
        cfg.rerun_window = Duration::from_secs(self.rerun_window);
        if self.replay_delay >= self.tolerance {
            return Err("--replay-delay must be below --tolerance".into());
        }
        cfg.replay_delay = Duration::from_secs(self.replay_delay);
        Ok(cfg)
    }
}

/// Runs `broker-mock conformance` and returns its exit status: 0 all checks passed (or
/// were skipped), 1 a check failed, 2 bad usage or the runner could not start.
pub async fn main(args: ConformanceArgs) -> ExitCode {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("broker-mock conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("broker-mock conformance: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
    }
    if let Some(path) = &args.junit
        && let Err(e) = std::fs::write(path, report.to_junit())
    {
        eprintln!("broker-mock conformance: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
