//! The `fixmyprint` command: `repair` heals an STL file; `serve` and `register` run the provider.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The repair pipeline allocates and frees buffers of hundreds of megabytes one after another;
/// glibc's malloc returns each to the kernel and faults fresh zeroed pages in for the next,
/// which cost about a third of the CPU time at 4M facets. mimalloc keeps them for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "fixmyprint",
    version,
    about = "FixMyPrint: fast STL healing and a 3DIAX provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Repair an STL file: weld, clean, orient, fill holes, and write a printable binary STL.
    Repair(fixmyprint::repair_cli::RepairArgs),
    /// Run the provider service (HTTP API, job workers, callback outbox).
    Serve(fixmyprint::service::ServeArgs),
    /// Register this provider with a broker and store its credentials in the database.
    Register(fixmyprint::service::cli::RegisterArgs),
    /// Rotate the shared secret (the old one stays valid for the broker's grace period).
    Rotate(fixmyprint::service::cli::RotateArgs),
    /// Print the OpenAPI description of the service's HTTP API (JSON) to stdout.
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Repair(args) => fixmyprint::repair_cli::run(args),
        Command::Serve(args) => fixmyprint::service::cli::serve(&args),
        Command::Register(args) => fixmyprint::service::cli::register(&args),
        Command::Rotate(args) => fixmyprint::service::cli::rotate(&args),
        Command::Openapi => fixmyprint::service::cli::openapi(),
    }
}
