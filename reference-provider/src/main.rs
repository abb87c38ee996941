//! The `fixmyprint` command: `repair` heals an STL file; `serve` and `register` run the provider.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Repair(args) => fixmyprint::repair_cli::run(args),
    }
}
