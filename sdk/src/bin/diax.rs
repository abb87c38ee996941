//! `diax`: a debugging command for Standard Webhooks signatures and diax link tokens.
//!
//! ```text
//! The secret comes from `--secret-file F` (`-`: standard input), `DIAX_SECRET`, or `--secret S`.
//!
//! diax sign   --secret S --id I --timestamp T [--body-file F]
//! diax verify --secret S --id I --timestamp T --signature SIG [--body-file F] [--now N] [--tolerance SECS]
//! diax token issue  --secret S --kid K --iss I --sub S --aud A --ttl SECS
//! diax token verify --secret S --kid K --iss I --aud A [--now N] TOKEN
//! diax secret new
//! ```
//!
//! The body is read from `--body-file`, or from standard input when no file is given.
//! Verdicts go to standard output: exit 0 when valid, 1 with the reason when not. Bad input
//! (an unreadable secret, a malformed number or id, a missing file) is one line on standard
//! error and exit status 2.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diax_sdk::clock::unix_now;
use diax_sdk::token::{LinkTokenIssuer, LinkTokenValidator};
use diax_sdk::webhook::{DEFAULT_TOLERANCE_SECS, RawHeaders, sign};
use diax_sdk::{AccountId, KeyId, Keyring, MessageId, ProviderId, Secret};

/// A command-line value that must not show in `Debug` output (a secret, a token).
#[derive(Clone)]
struct Hidden(String);

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the shared secret comes from: `--secret-file` (a file, or `-` for standard input),
/// the `DIAX_SECRET` environment variable, or `--secret` (visible to other users of the
/// machine in the process list: prefer the others).
#[derive(Debug, clap::Args)]
struct SecretArg {
    /// The shared secret, `whsec_<base64>` (prefer --secret-file or DIAX_SECRET).
    #[arg(long, env = "DIAX_SECRET", hide_env_values = true)]
    secret: Option<Hidden>,
    /// File holding the shared secret (`-`: standard input); surrounding whitespace is ignored.
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
}

impl SecretArg {
    fn resolve(&self, body_from_stdin: bool) -> Result<Secret, Failure> {
        let label = if self.secret_file.is_some() {
            "--secret-file"
        } else {
            "--secret"
        };
        let text = match (&self.secret_file, &self.secret) {
            (Some(path), _) if path.as_os_str() == "-" => {
                if body_from_stdin {
                    return Err(Failure::Input(
                        "--secret-file -: standard input already carries the body (use --body-file)"
                            .into(),
                    ));
                }
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(input("--secret-file -"))?;
                text
            }
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(input(&format!("--secret-file {}", path.display())))?,
            (None, Some(secret)) => secret.0.clone(),
            (None, None) => {
                return Err(Failure::Input(
                    "no secret: give --secret-file, DIAX_SECRET or --secret".into(),
                ));
            }
        };
        Secret::parse(text.trim()).map_err(input(label))
    }
}

/// Sign and verify Standard Webhooks messages and diax link tokens.
#[derive(Debug, Parser)]
#[command(name = "diax", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the `webhook-signature` value of a message.
    Sign {
        #[command(flatten)]
        secret: SecretArg,
        /// The `webhook-id`.
        #[arg(long)]
        id: String,
        /// The `webhook-timestamp`, Unix seconds.
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..))]
        timestamp: i64,
        /// File holding the body (default: standard input).
        #[arg(long)]
        body_file: Option<PathBuf>,
    },
    /// Check a signed message; exit 0 printing "valid", or 1 printing the reason.
    Verify {
        #[command(flatten)]
        secret: SecretArg,
        /// The `webhook-id` header as received.
        #[arg(long)]
        id: String,
        /// The `webhook-timestamp`, Unix seconds.
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..))]
        timestamp: i64,
        /// The `webhook-signature` header as received (space-separated `v1,…` entries).
        #[arg(long)]
        signature: String,
        /// File holding the body (default: standard input).
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// The time to verify at, Unix seconds (default: now).
        #[arg(long, allow_negative_numbers = true)]
        now: Option<i64>,
        /// Largest clock difference accepted, in seconds, either way.
        #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_TOLERANCE_SECS)]
        tolerance: u64,
    },
    /// Link tokens (HS256 JWTs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Shared secrets.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a fresh link token.
    Issue {
        #[command(flatten)]
        secret: SecretArg,
        /// Id of the secret (`kid` header).
        #[arg(long)]
        kid: String,
        /// Issuer: the provider id.
        #[arg(long)]
        iss: String,
        /// Subject: the user's account at the provider.
        #[arg(long)]
        sub: String,
        /// Audience: the broker id.
        #[arg(long)]
        aud: String,
        /// Lifetime in seconds.
        #[arg(long)]
        ttl: u64,
        /// Issue time, Unix seconds (default: now).
        #[arg(long, allow_negative_numbers = true)]
        now: Option<i64>,
    },
    /// Check a link token; print its claims as JSON, or exit 1 with the reason.
    Verify {
        #[command(flatten)]
        secret: SecretArg,
        /// Id of the secret (`kid` header).
        #[arg(long)]
        kid: String,
        /// Expected issuer (provider id).
        #[arg(long)]
        iss: String,
        /// Expected audience (broker id).
        #[arg(long)]
        aud: String,
        /// The time to verify at, Unix seconds (default: now).
        #[arg(long, allow_negative_numbers = true)]
        now: Option<i64>,
        /// The token.
        token: Hidden,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Print a new random `whsec_` secret.
    New,
}

/// What went wrong, and which exit status says so.
enum Failure {
    /// Bad input: exit 2.
    Input(String),
    /// A verdict of "not valid": exit 1.
    Invalid(String),
}

fn input<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| Failure::Input(format!("{what}: {e}"))
}

fn read_body(file: Option<&PathBuf>) -> Result<Vec<u8>, Failure> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).map_err(input(&format!("--body-file {}", path.display())))
        }
        _ => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(input("standard input"))?;
            Ok(body)
        }
    }
}

fn run(cli: Cli) -> Result<String, Failure> {
    match cli.command {
        Command::Sign {
            secret,
            id,
            timestamp,
            body_file,
        } => {
            let secret = secret.resolve(body_file.as_ref().is_none_or(|p| p.as_os_str() == "-"))?;
            let id = MessageId::parse(id).map_err(input("--id"))?;
            let body = read_body(body_file.as_ref())?;
            Ok(sign(&secret, id.as_str(), timestamp, &body))
        }
        Command::Verify {
            secret,
            id,
            timestamp,
            signature,
            body_file,
            now,
            tolerance,
        } => {
            let secret = secret.resolve(body_file.as_ref().is_none_or(|p| p.as_os_str() == "-"))?;
            let body = read_body(body_file.as_ref())?;
            let ring = Keyring::single(KeyId::parse("key_cli").map_err(input("key id"))?, secret);
            let ts = timestamp.to_string();
            let headers = RawHeaders::new(&id, &ts, &signature);
            ring.verify_at(&headers, &body, now.unwrap_or_else(unix_now), tolerance)
                .map(|_| "valid".to_owned())
                .map_err(|e| Failure::Invalid(e.to_string()))
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    secret,
                    kid,
                    iss,
                    sub,
                    aud,
                    ttl,
                    now,
                },
        } => {
            let secret = secret.resolve(false)?;
            let kid = KeyId::parse(kid).map_err(input("--kid"))?;
            let iss = ProviderId::parse(iss).map_err(input("--iss"))?;
            let sub = AccountId::parse(sub).map_err(input("--sub"))?;
            if aud.is_empty() {
                return Err(Failure::Input("--aud: must not be empty".into()));
            }
            let issued = LinkTokenIssuer::new(iss, aud, kid, secret)
                .with_ttl(ttl)
                .issue_at(&sub, now.unwrap_or_else(unix_now))
                .map_err(input("--ttl"))?;
            Ok(issued.token)
        }
        Command::Token {
            command:
                TokenCommand::Verify {
                    secret,
                    kid,
                    iss,
                    aud,
                    now,
                    token,
                },
        } => {
            let secret = secret.resolve(false)?;
            let kid = KeyId::parse(kid).map_err(input("--kid"))?;
            let iss = ProviderId::parse(iss).map_err(input("--iss"))?;
            let ring = Keyring::single(kid, secret);
            let claims = LinkTokenValidator::new(iss, aud)
                .validate_at(token.0.trim(), &ring, now.unwrap_or_else(unix_now))
                .map_err(|e| Failure::Invalid(e.to_string()))?;
            serde_json::to_string(&claims).map_err(|e| Failure::Invalid(e.to_string()))
        }
        Command::Secret {
            command: SecretCommand::New,
        } => Ok(Secret::generate().expose()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and no subcommand at all: clap's full text.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            // clap's message (up to its usage section), on one line.
            let text = e.render().to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{}", line.join(" "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Invalid(reason)) => {
            println!("invalid: {reason}");
            ExitCode::from(1)
        }
        Err(Failure::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_arguments_never_show_secrets_or_tokens() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        for args in [
            vec![
                "diax",
                "sign",
                "--secret",
                secret,
                "--id",
                "m",
                "--timestamp",
                "1",
            ],
            vec![
                "diax", "token", "verify", "--secret", secret, "--kid", "k", "--iss", "p", "--aud",
                "a", token,
            ],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            let debug = format!("{cli:?}");
            assert!(
                !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                "{debug}"
            );
            assert!(!debug.contains("c2lnbmF0dXJl"), "{debug}");
        }
    }
}
