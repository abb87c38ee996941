//! Repair an STL file the way `fixmyprint repair IN OUT` does, for scaling runs under
//! `/usr/bin/time -v` without building the service: `cargo run --release -p fixmyprint-heal
//! --features generate --example heal_file -- IN.stl OUT.stl`. Same library calls
//! (`repair_file`, then `write_stl`) and the same allocator (mimalloc; run with
//! `MIMALLOC_PURGE_DELAY=10`, which the CLI sets itself). Prints the wall time and the
//! report's result on one line, every stage's time (the report's `seconds`) on the next,
//! then every reason of the report's `not_watertight`. With `HEAL_FILE_TRACE=1` it also
//! prints, as each stage starts, the seconds since the start, the peak RSS so far (`VmHWM` of
//! `/proc/self/status`), and the process's minor page faults and user and system CPU seconds
//! so far (`/proc/self/stat`), so that a stage's time, memory and page faulting can be read
//! even when the repair ends in an error.
use std::time::Instant;

use fixmyprint_heal::{RepairOptions, repair_file};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        eprintln!("usage: heal_file IN.stl OUT.stl");
        std::process::exit(2);
    };
    let started = Instant::now();
    let trace = std::env::var_os("HEAL_FILE_TRACE").is_some_and(|v| v == "1");
    let progress = |stage| {
        if trace {
            let [faults, user, system] = cpu().unwrap_or_default();
            eprintln!(
                "{:7.3} s  peak {:>10}  faults {faults:>7}  user {:6.2} s  sys {:6.2} s  {stage:?}",
                started.elapsed().as_secs_f64(),
                peak_rss().unwrap_or_else(|| "?".into()),
                user as f64 / TICKS,
                system as f64 / TICKS,
            );
        }
    };
    let mut repaired = match repair_file(input.as_ref(), &RepairOptions::default(), &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {input}: {e}");
            std::process::exit(2);
        }
    };
    let written = std::fs::File::create(output)
        .map(std::io::BufWriter::new)
        .and_then(|mut w| repaired.write_stl(&mut w));
    if let Err(e) = written {
        eprintln!("error: {output}: {e}");
        std::process::exit(1);
    }
    let r = &repaired.report;
    let s = &r.stages;
    println!(
        "{input}: {:.3} s; {} -> {} facets, {} shells, watertight {}, passes {}, stitched {} \
         edges in {} rounds, {} tiny shells removed, {} holes filled; stages (first pass) weld \
         {:.3}, topology {:.3}, orient {:.3}",
        started.elapsed().as_secs_f64(),
        r.input_facets,
        r.output_facets,
        r.shells,
        r.watertight,
        r.passes,
        s.topology.stitched_edges,
        s.topology.stitch_rounds,
        s.shells.tiny_removed,
        r.holes_filled,
        s.weld.seconds,
        s.topology.seconds,
        s.orient.seconds
    );
    let stages: Vec<String> = s
        .seconds()
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.3}"))
        .collect();
    println!("  stages: {}", stages.join(", "));
    for why in &r.not_watertight {
        println!("  not watertight: {why}");
    }
}

/// The process's peak resident set so far, as `/proc/self/status` spells it (`123456 kB`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line["VmHWM:".len()..].trim().to_owned())
}

/// `/proc/self/stat` counts CPU time in clock ticks of 1/100 s (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// The process's minor page faults, user and system CPU ticks so far (fields 10, 14 and 15 of
/// `/proc/self/stat`, counted after the parenthesised command name, which may hold spaces).
fn cpu() -> Option<[u64; 3]> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (the state).
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some([field(10)?, field(14)?, field(15)?])
}
