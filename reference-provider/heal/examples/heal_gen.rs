//! Write a generated test model: `cargo run --release -p fixmyprint-heal --features generate --example heal_gen -- OUT.stl FACETS
//! [SEED] [all|clean|ascii]`. `all` (default) injects every defect (see
//! `fixmyprint_heal::generate::Defects::all`).
use fixmyprint_heal::generate::{self, Defects};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(facets)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: heal_gen OUT.stl FACETS [SEED] [all|clean|ascii]");
        std::process::exit(2);
    };
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let defects = match args.get(3).map(String::as_str).unwrap_or("all") {
        "clean" => Defects::none(),
        "ascii" => Defects {
            ascii: true,
            ..Defects::all()
        },
        _ => Defects::all(),
    };
    let g = generate::model(seed, facets, &defects);
    if let Err(e) = std::fs::write(out, &g.stl) {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
    println!(
        "{out}: {} bytes, clean volume {:.6}",
        g.stl.len(),
        g.clean.volume
    );
}
