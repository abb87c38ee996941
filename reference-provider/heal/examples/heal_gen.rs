//! Write a generated test model: `cargo run --release -p fixmyprint-heal --features generate --example heal_gen -- OUT.stl FACETS
//! [SEED] [all|clean|ascii|soup:NOISE]`. `all` (default) injects every defect (see
//! `fixmyprint_heal::generate::Defects::all`); `soup:NOISE` writes the clean model as a pure
//! triangle soup (shuffled facets, 10 % flipped, the torus inside out, every corner copy moved
//! by noise of up to NOISE × the diagonal per coordinate: `generate::soup`).
use fixmyprint_heal::generate::{self, Defects};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(facets)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: heal_gen OUT.stl FACETS [SEED] [all|clean|ascii|soup:NOISE]");
        std::process::exit(2);
    };
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let kind = args.get(3).map(String::as_str).unwrap_or("all");
    if let Some(noise) = kind.strip_prefix("soup:") {
        let Ok(noise) = noise.parse::<f64>() else {
            eprintln!("soup:NOISE needs a number, e.g. soup:1e-6");
            std::process::exit(2);
        };
        let g = generate::soup(&generate::clean_model(seed, facets), 9, noise, 0.1, Some(1));
        write(out, &g);
        return;
    }
    let defects = match kind {
        "clean" => Defects::none(),
        "ascii" => Defects {
            ascii: true,
            ..Defects::all()
        },
        _ => Defects::all(),
    };
    write(out, &generate::model(seed, facets, &defects));
}

fn write(out: &str, g: &generate::Generated) {
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
