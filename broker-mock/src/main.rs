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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
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
                let _ = tokio::signal::ctrl_c().await;
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
    }
}
