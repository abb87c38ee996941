//! The `fixmyprint` command: `repair` heals an STL file; `serve` and `register` run the provider.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The repair pipeline allocates and frees buffers of hundreds of megabytes one after another;
/// glibc's malloc returns each to the kernel and faults fresh zeroed pages in for the next,
/// which cost about a third of the CPU time at 4M facets. mimalloc reuses them (see
/// [`tune_allocator`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (`enum mi_option_e`), which
/// `libmimalloc-sys` does not name; its default is 1000 (ms), checked by a test below.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the kernel after 10 ms instead of 1 s: a freed buffer is still
/// reused when the next allocation follows at once, but the buffers of all stages no longer
/// stay resident together for a whole run (at 1M facets the default kept the peak at 3.7×
/// the file size; with 10 ms, 2.8×, for some speed: freed memory is faulted in again).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it takes no
    // pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
}

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
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Repair(args) => fixmyprint::repair_cli::run(args),
        Command::Serve(args) => fixmyprint::service::cli::serve(&args),
        Command::Register(args) => fixmyprint::service::cli::register(&args),
        Command::Rotate(args) => fixmyprint::service::cli::rotate(&args),
        Command::Openapi => fixmyprint::service::cli::openapi(),
    }
}

#[cfg(test)]
mod tests {
    /// The option number is mimalloc's purge delay: its default is 1000 (ms), and
    /// [`super::tune_allocator`] sets it to 10. (Fails if `MIMALLOC_PURGE_DELAY` is set.)
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_is_the_one_meant() {
        // SAFETY: reads an integer from mimalloc's option table.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000);
        super::tune_allocator();
        assert_eq!(get(), 10);
    }
}
