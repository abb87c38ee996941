//! The demo. Until the broker mock and the FixMyPrint service are wired into the full seed
//! story, it shows the healing core on a generated broken model: it writes the original, the
//! repaired model and the repair report into `--out`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use fixmyprint::heal::{self, RepairOptions, generate};

#[derive(Debug, Parser)]
#[command(about = "FixMyPrint kit demo: heal a generated broken model")]
struct Args {
    /// Where to write original.stl, repaired.stl and report.json.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Facets in the generated model.
    #[arg(long, default_value_t = 200_000)]
    facets: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    println!(
        "1. generating a broken model ({} facets, seed {}): float-noise soup, flipped facets, an inside-out shell, wrong normals, holes, duplicates, degenerates, noise shells",
        args.facets, args.seed
    );
    let original = generate::broken_model(args.seed, args.facets);
    let original_path = args.out.join("original.stl");
    std::fs::write(&original_path, &original)?;
    println!(
        "   wrote {} ({} bytes)",
        original_path.display(),
        original.len()
    );

    println!("2. healing");
    let started = Instant::now();
    let repaired = heal::repair_with_progress(&original, &RepairOptions::default(), &|stage| {
        println!("   - {}", stage.name());
    })?;
    let elapsed = started.elapsed();
    let bytes = repaired.to_stl_bytes();
    let repaired_path = args.out.join("repaired.stl");
    std::fs::write(&repaired_path, &bytes)?;
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&repaired.report)?)?;
    let r = &repaired.report;
    println!(
        "3. done in {:.3} s: {} -> {} facets, {} shells, {} holes filled, watertight: {}, winding consistent: {}, volume {:.3}",
        elapsed.as_secs_f64(),
        r.input_facets,
        r.output_facets,
        r.shells,
        r.holes_filled,
        r.watertight,
        r.winding_consistent,
        r.volume
    );
    println!(
        "   wrote {} and {}",
        repaired_path.display(),
        report_path.display()
    );
    if !(r.watertight && r.winding_consistent && r.volume > 0.0) {
        return Err("the repaired model is not watertight, consistently wound and outward".into());
    }
    Ok(())
}
