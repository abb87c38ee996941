//! `diax`: a debugging command for Standard Webhooks signatures and diax link tokens.
//!
//! ```text
//! The key comes from `--secret-file F` (`-`: standard input), `DIAX_SECRET`, or `--secret S`.
//! It is a shared `whsec_` secret (v1, HS256), an ed25519 `whsk_` secret key (signs v1a and
//! EdDSA tokens; verifies with its own public half) or a `whpk_` public key (verifies only).
//!
//! diax sign   --secret S --id I --timestamp T [--body-file F]
//! diax verify --secret S --id I --timestamp T --signature SIG [--body-file F] [--now N] [--tolerance SECS]
//! diax token issue  --secret S --kid K --iss I --sub S --aud A --ttl SECS
//! diax token verify --secret S --kid K --iss I --aud A [--now N] TOKEN
//! diax secret new [--ed25519]
//! diax secret public --secret S
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
use diax_sdk::webhook::{DEFAULT_TOLERANCE_SECS, RawHeaders, sign, sign_v1a};
use diax_sdk::{AccountId, KeyId, KeyMaterial, Keyring, MessageId, ProviderId, Secret, SigningKey};

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

/// Where the key comes from: `--secret-file` (a file, or `-` for standard input), the
/// `DIAX_SECRET` environment variable, or `--secret` (visible to other users of the machine in
/// the process list: prefer the others).
#[derive(Debug, clap::Args)]
struct SecretArg {
    /// The key: a shared `whsec_` secret, an ed25519 `whsk_` secret key or `whpk_` public key
    /// (prefer --secret-file or DIAX_SECRET).
    #[arg(long, env = "DIAX_SECRET", hide_env_values = true)]
    secret: Option<Hidden>,
    /// File holding the key (`-`: standard input); surrounding whitespace is ignored.
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
}

/// A key that signs: a `whsec_` secret or a `whsk_` secret key.
fn signing(key: KeyMaterial, what: &str) -> Result<KeyMaterial, Failure> {
    if key.can_sign() {
        Ok(key)
    } else {
        Err(Failure::Input(format!(
            "{what}: a whpk_ public key cannot sign; give the whsk_ secret key"
        )))
    }
}

/// A key that verifies: a `whsec_` secret, a `whpk_` public key, or the public half of a
/// `whsk_` secret key.
fn verifying(key: KeyMaterial) -> KeyMaterial {
    match key {
        KeyMaterial::Ed25519(own) => KeyMaterial::Ed25519Public(own.public_key()),
        other => other,
    }
}

impl SecretArg {
    fn resolve(&self, body_from_stdin: bool) -> Result<KeyMaterial, Failure> {
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
        KeyMaterial::parse(text.trim()).map_err(input(label))
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
        /// The `webhook-signature` header as received (space-separated `v1,…`/`v1a,…` entries).
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
    /// Link tokens (HS256 or EdDSA JWTs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Shared secrets and ed25519 keys.
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
    /// Print a new random `whsec_` secret, or with `--ed25519` a new `whsk_` secret key and,
    /// on a second line, its `whpk_` public key.
    New {
        /// Make an ed25519 key pair (Standard Webhooks v1a) instead of a shared secret.
        #[arg(long)]
        ed25519: bool,
    },
    /// Print the `whpk_` public key of a `whsk_` secret key.
    Public {
        #[command(flatten)]
        secret: SecretArg,
    },
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
            let key = secret.resolve(body_file.as_ref().is_none_or(|p| p.as_os_str() == "-"))?;
            let id = MessageId::parse(id).map_err(input("--id"))?;
            match signing(key, "sign")? {
                KeyMaterial::Ed25519(own) => Ok(sign_v1a(
                    &own,
                    id.as_str(),
                    timestamp,
                    &read_body(body_file.as_ref())?,
                )),
                KeyMaterial::Hmac(secret) => Ok(sign(
                    &secret,
                    id.as_str(),
                    timestamp,
                    &read_body(body_file.as_ref())?,
                )),
                KeyMaterial::Ed25519Public(_) => Err(Failure::Input(
                    "sign: a whpk_ public key cannot sign; give the whsk_ secret key".into(),
                )),
            }
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
            let key = secret.resolve(body_file.as_ref().is_none_or(|p| p.as_os_str() == "-"))?;
            let body = read_body(body_file.as_ref())?;
            let ring = Keyring::single(
                KeyId::parse("key_cli").map_err(input("key id"))?,
                verifying(key),
            );
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
            let key = signing(secret.resolve(false)?, "token issue")?;
            let kid = KeyId::parse(kid).map_err(input("--kid"))?;
            let iss = ProviderId::parse(iss).map_err(input("--iss"))?;
            let sub = AccountId::parse(sub).map_err(input("--sub"))?;
            if aud.is_empty() {
                return Err(Failure::Input("--aud: must not be empty".into()));
            }
            let issued = LinkTokenIssuer::new(iss, aud, kid, key)
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
            let key = verifying(secret.resolve(false)?);
            let kid = KeyId::parse(kid).map_err(input("--kid"))?;
            let iss = ProviderId::parse(iss).map_err(input("--iss"))?;
            let ring = Keyring::single(kid, key);
            let claims = LinkTokenValidator::new(iss, aud)
                .validate_at(token.0.trim(), &ring, now.unwrap_or_else(unix_now))
                .map_err(|e| Failure::Invalid(e.to_string()))?;
            serde_json::to_string(&claims).map_err(|e| Failure::Invalid(e.to_string()))
        }
        Command::Secret {
            command: SecretCommand::New { ed25519: false },
        } => Ok(Secret::generate().expose()),
        Command::Secret {
            command: SecretCommand::New { ed25519: true },
        } => {
            let key = SigningKey::generate();
            Ok(format!("{}\n{}", key.expose(), key.public_key()))
        }
        Command::Secret {
            command: SecretCommand::Public { secret },
        } => match secret.resolve(false)? {
            KeyMaterial::Ed25519(own) => Ok(own.public_key().to_string()),
            KeyMaterial::Ed25519Public(public) => Ok(public.to_string()),
            KeyMaterial::Hmac(_) => Err(Failure::Input(
                "secret public: a whsec_ secret is shared and has no public key".into(),
            )),
        },
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
