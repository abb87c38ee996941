//! Repair an STL file the way `fixmyprint repair IN OUT` does, for scaling runs under
//! `/usr/bin/time -v` without building the service: `cargo run --release -p fixmyprint-heal
//! --features generate --example heal_file -- IN.stl OUT.stl`. Same library calls
//! (`repair_file`, then `write_stl`) and the same allocator (mimalloc; run with
//! `MIMALLOC_PURGE_DELAY=10`, which the CLI sets itself). Prints the wall time and the
//! report's result on one line, every stage's time (the report's `seconds`) on the next,
//! then every reason of the report's `not_watertight`.
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
    let mut repaired = match repair_file(input.as_ref(), &RepairOptions::default(), &|_| {}) {
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
