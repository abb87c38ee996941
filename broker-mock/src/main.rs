//! `broker-mock`: run the 3DIAX broker mock.

use clap::{Parser, Subcommand};

/// A faithful stand-in for the 3DIAX broker.
#[derive(Debug, Parser)]
#[command(name = "broker-mock", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the broker API, the message log and the inspector page.
    Serve(broker_mock::Config),
    /// Print the OpenAPI description of the broker API (JSON) to stdout.
    Openapi,
    /// Play the broker against a provider and report one verdict per conformance check
    /// (exit 0: no check failed, 1: a check failed, 2: bad usage).
    Conformance(broker_mock::conformance::ConformanceArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Conformance(args) = &cli.command {
        // The report goes to stdout; logs (warnings only, by default) to stderr.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(colours(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .init();
        return broker_mock::conformance::main(args.clone()).await;
    }
    tracing_subscriber::fmt()
        .with_ansi(colours(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Openapi => {
            print!("{}", broker_mock::openapi::to_json());
            std::process::ExitCode::SUCCESS
        }
        Command::Serve(config) => {
            let listener = match std::net::TcpListener::bind(config.addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(addr = %config.addr, error = %e, "cannot listen");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let shutdown = async {
                terminated().await;
                tracing::info!("shutting down");
            };
            match broker_mock::run(listener, shutdown, config).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "broker mock failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Conformance(_) => std::process::ExitCode::from(2), // handled above
    }
}

/// Log lines are coloured only on a terminal, and not when `NO_COLOR` is set: a log file
/// or a pipe gets plain text (`addr=127.0.0.1:8700`, not escape codes around `addr`).
fn colours(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Ctrl-C (SIGINT) or, on Unix, SIGTERM (what service managers and `docker stop` send).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
