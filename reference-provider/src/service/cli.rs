//! The `serve`, `register`, `rotate` and `openapi` subcommands.

use std::process::ExitCode;

use diax_sdk::GroupId;
use diax_sdk::client::ClientConfig;
use diax_sdk::wire::{Scheme, SecretScope};

use super::config::{Redacted, ServeArgs};
use super::db::Db;
use super::registration::{self, RegisterOptions};

/// `fixmyprint register` (`Debug` redacts the API key).
#[derive(Debug, Clone, clap::Args)]
pub struct RegisterArgs {
    /// Database, data dir, broker and public URLs (as for `serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A broker user's API key (prefer the environment variable: a command line is
    /// visible to other users of the machine).
    #[arg(long, env = "FIXMYPRINT_BROKER_API_KEY", hide_env_values = true)]
    pub api_key: Redacted,
    /// The broker group that owns the provider [default: create one].
    #[arg(long)]
    pub group_id: Option<String>,
    /// Display name in the broker's registry.
    #[arg(long, default_value = "FixMyPrint")]
    pub name: String,
    /// Registry description.
    #[arg(long)]
    pub description: Option<String>,
    /// `service` (one secret for everyone) or `user` (bound to the registering user).
    #[arg(long, default_value = "service", value_parser = ["service", "user"])]
    pub secret_scope: String,
    /// `hmac-sha256` (a shared secret the broker makes) or `ed25519` (FixMyPrint makes its
    /// own key pair and sends only the public key; no secret is shared).
    #[arg(long, default_value = "hmac-sha256", value_parser = parse_scheme)]
    pub signature_scheme: Scheme,
    /// Also print the shared secret (to point the conformance runner at this provider). It
    /// is stored in the database either way. With `ed25519` nothing secret is printed: the
    /// keys' ids and the public keys are.
    #[arg(long)]
    pub show_secret: bool,
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    match s {
        "hmac-sha256" => Ok(Scheme::V1),
        "ed25519" => Ok(Scheme::V1a),
        _ => Err("expected hmac-sha256 or ed25519".into()),
    }
}

/// `fixmyprint rotate` (`Debug` redacts the API key).
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    /// Database and data dir (as for `serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A broker user's API key (a member of the provider's group; prefer the environment
    /// variable).
    #[arg(long, env = "FIXMYPRINT_BROKER_API_KEY", hide_env_values = true)]
    pub api_key: Redacted,
    /// Seconds the old secret stays valid [default: the broker's].
    #[arg(long)]
    pub grace_secs: Option<u64>,
    /// Scheme of the new keys, `hmac-sha256` or `ed25519` [default: the current one]: a
    /// rotation to the other scheme migrates, both being accepted during the grace period.
    #[arg(long, value_parser = parse_scheme)]
    pub signature_scheme: Option<Scheme>,
}

/// Logs go to stdout, coloured only on a terminal and not when `NO_COLOR` is set: a log file
/// or a pipe gets plain text (`addr=127.0.0.1:8480`, not escape codes around `addr`).
fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colours = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_ansi(colours)
        .with_env_filter(filter)
        .try_init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Runs `fixmyprint serve`.
#[must_use]
pub fn serve(args: &ServeArgs) -> ExitCode {
    init_tracing();
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fixmyprint: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime().map_err(super::ServeError::from).and_then(|rt| {
        rt.block_on(async {
            let listener = std::net::TcpListener::bind(config.addr)?;
            super::run(listener, shutdown_signal(), config).await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fixmyprint: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open(args: &ServeArgs) -> Result<(super::Config, Db, reqwest::Client), String> {
    let config = args.resolve().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
    let db = Db::connect(&config.database_url())
        .await
        .map_err(|e| e.to_string())?;
    let mut roots = Vec::new();
    for p in &config.ca_certs {
        roots.push(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    let http = diax_sdk::client::http_client(&ClientConfig {
        extra_root_certs_pem: roots,
        ..ClientConfig::default()
    })
    .map_err(|e| e.to_string())?;
    Ok((config, db, http))
}

/// Runs `fixmyprint register`.
#[must_use]
pub fn register(args: &RegisterArgs) -> ExitCode {
    init_tracing();
    let result: Result<String, String> = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            let (config, db, http) = open(&args.serve).await?;
            let broker_url = config
                .broker_url
                .clone()
                .ok_or("--broker-url is required")?;
            let public_url = config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.addr));
            let group_id = match &args.group_id {
                Some(g) => Some(GroupId::parse(g.clone()).map_err(|e| e.to_string())?),
                None => None,
            };
            let opts = RegisterOptions {
                broker_url,
                api_key: args.api_key.0.clone(),
                group_id,
                name: args.name.clone(),
                public_url,
                secret_scope: if args.secret_scope == "user" {
                    SecretScope::User
                } else {
                    SecretScope::Service
                },
                description: args.description.clone(),
                signature_scheme: args.signature_scheme,
            };
            let reg = registration::register(&db, &http, &opts)
                .await
                .map_err(|e| e.to_string())?;
            let mut line = format!(
                "registered: provider_id={} broker_id={} key_id={} events_url={} (secret stored in the database)",
                reg.provider_id, reg.broker_id, reg.key_id, reg.events_url
            );
            if let (true, Some(secret)) = (args.show_secret, &reg.secret) {
                line.push_str(&format!("\nsecret={secret}"));
            }
            if let (Some(kid), Some(public)) = (&reg.broker_key_id, &reg.broker_public_key) {
                line.push_str(&format!(
                    "\nsignature_scheme=ed25519 broker_key_id={kid} broker_public_key={public}"
                ));
            }
            if let Some(own) = registration::own_public_key(&db).await.map_err(|e| e.to_string())? {
                // What a broker (or the conformance runner) verifies FixMyPrint's events with.
                line.push_str(&format!("\npublic_key={own}"));
            }
            db.close().await;
            Ok(line)
        })
    });
    report(result)
}

/// Runs `fixmyprint rotate`.
#[must_use]
pub fn rotate(args: &RotateArgs) -> ExitCode {
    init_tracing();
    let result: Result<String, String> = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            let (_, db, http) = open(&args.serve).await?;
            let rotated = registration::rotate(
                &db,
                &http,
                &args.api_key.0,
                args.grace_secs,
                args.signature_scheme,
            )
            .await
            .map_err(|e| e.to_string())?;
            db.close().await;
            Ok(format!(
                "rotated: new key_id={}; {} stays valid until {}",
                rotated.key_id, rotated.previous_key_id, rotated.previous_valid_until
            ))
        })
    });
    report(result)
}

/// Runs `fixmyprint openapi`: prints the OpenAPI document (pretty JSON, sorted keys).
#[must_use]
pub fn openapi() -> ExitCode {
    print!("{}", super::http::openapi::to_json());
    ExitCode::SUCCESS
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fixmyprint: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::accounts::AccountCreated;

    #[test]
    fn api_keys_stay_out_of_debug() {
        let key = "key_0123456789abcdefSECRET";
        let register = RegisterArgs {
            serve: ServeArgs::default(),
            api_key: Redacted(key.into()),
            group_id: None,
            name: "FixMyPrint".into(),
            description: None,
            secret_scope: "service".into(),
            signature_scheme: Scheme::V1,
            show_secret: false,
        };
        let rotate = RotateArgs {
            serve: ServeArgs::default(),
            api_key: Redacted(key.into()),
            grace_secs: None,
            signature_scheme: None,
        };
        let options = RegisterOptions {
            broker_url: "https://broker.example".into(),
            api_key: key.into(),
            group_id: None,
            name: "FixMyPrint".into(),
            public_url: "https://fixmyprint.example".into(),
            secret_scope: SecretScope::Service,
            description: None,
            signature_scheme: Scheme::V1,
        };
        let created = AccountCreated {
            account_id: diax_sdk::AccountId::parse("acc_0123456789abcdef").expect("id"),
            api_key: key.into(),
            balance: 0,
            currency: "EUR".into(),
        };
        for debug in [
            format!("{register:?}"),
            format!("{rotate:?}"),
            format!("{options:?}"),
            format!("{created:?}"),
        ] {
            assert!(!debug.contains("SECRET"), "{debug}");
            assert!(debug.contains("[redacted]"), "{debug}");
        }
    }
}
