//! Time the repair picture: `cargo run --release -p fixmyprint-heal --features generate,picture
//! --example picture_time -- [FACETS] [RUNS]` (default 1 000 000 facets, 3 runs). Generates the
//! standard model with every defect, then times, apart from the repair, drawing the "before"
//! views (from the input) and finishing (the "after" views, ghosts, layout), and the PNG.
use std::time::Instant;

use fixmyprint_heal::generate::{self, Defects};
use fixmyprint_heal::picture::{Picture, PictureOptions};
use fixmyprint_heal::{self as heal, RepairOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let facets = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let runs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let g = generate::model(1, facets, &Defects::all());
    let options = RepairOptions::default();
    for run in 0..runs {
        let soup = heal::stl::parse(&g.stl, &options)?;
        let n = soup.facets();
        let t = Instant::now();
        let mut picture = Picture::new(&soup.positions, &PictureOptions::default())?;
        picture.draw_before(&soup.positions);
        let before = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let repaired = heal::repair_soup(soup, &options, &|_| {})?;
        let repair = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let image = picture.finish(&repaired);
        let after = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let png = image.to_png();
        let encode = t.elapsed().as_secs_f64();
        println!(
            "run {run}: {n} facets in, {} out; picture {:.3} s (before {before:.3} s, after \
             {after:.3} s), png {encode:.3} s ({} bytes); repair {repair:.3} s",
            repaired.mesh.triangles.len(),
            before + after,
            png.len()
        );
    }
    Ok(())
}
