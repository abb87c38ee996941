//! Time a full in-memory repair of a generated model with every defect, with the default
//! options: `cargo run --release -p fixmyprint-heal --features generate --example heal_time --
//! [FACETS] [RUNS] [SEED]` (default 1000000 facets, 7 runs, seed 1). Prints the best and the
//! median wall time of `repair` (parse to repaired mesh, no file I/O), the report's weld
//! and hole figures, and a digest (FNV-1a) of the repaired STL, to tell whether two builds give
//! the same output. `HEAL_SOUP_NOISE=NOISE` times the clean model as a noisy triangle soup
//! instead (`generate::soup(&clean_model(SEED, FACETS), 9, NOISE, 0.1, Some(1))`: shuffled,
//! 10 % flipped, the torus inside out, every corner copy moved by up to NOISE × the diagonal).
use std::time::Instant;

use fixmyprint_heal::{RepairOptions, generate, repair};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (facets, runs, seed) = (arg(0, 1_000_000), arg(1, 7).max(1), arg(2, 1) as u64);
    let soup_noise: Option<f64> = std::env::var("HEAL_SOUP_NOISE")
        .ok()
        .and_then(|s| s.parse().ok());
    let input = match soup_noise {
        Some(noise) => {
            generate::soup(&generate::clean_model(seed, facets), 9, noise, 0.1, Some(1)).stl
        }
        None => generate::broken_model(seed, facets),
    };
    // HEAL_WELD_TOLERANCE=UNITS times an absolute tolerance instead of the automatic one.
    let options = RepairOptions {
        weld_tolerance: std::env::var("HEAL_WELD_TOLERANCE")
            .ok()
            .and_then(|s| s.parse().ok()),
        ..RepairOptions::default()
    };
    let mut secs = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = repair(&input, &options).expect("the generated model repairs");
        secs.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    secs.sort_by(f64::total_cmp);
    let repaired = last.expect("at least one run");
    // A digest of the repaired STL, to tell whether two builds give the same output.
    let digest = repaired
        .to_stl_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let r = repaired.report;
    println!(
        "{facets} facets ({} bytes), {runs} runs: best {:.3} s, median {:.3} s; watertight {}, \
         passes {}, weld tolerance {:.3e} (largest merge {:.3e}, limited corners {}), \
         holes filled {}, output facets {}, shells {}, output digest {digest:016x}",
        input.len(),
        secs[0],
        secs[runs / 2],
        r.watertight,
        r.passes,
        r.stages.weld.tolerance,
        r.stages.weld.largest_merge,
        r.stages.weld.limited_corners,
        r.holes_filled,
        r.output_facets,
        r.shells
    );
    let stages: Vec<String> = r.stages.seconds()[..8]
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.3}"))
        .collect();
    println!(
        "last run, seconds per stage: {}; total {:.3}",
        stages.join(", "),
        r.total_seconds
    );
}
