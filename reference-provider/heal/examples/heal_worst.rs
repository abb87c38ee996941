//! The bounded-worst-case table: crafted inputs, each aimed at one stage, healed with the
//! default options and timed against the generated all-defects model of about the same size:
//! `cargo run --release -p fixmyprint-heal --features generate --example heal_worst --
//! [FACETS] [RUNS]` (default 1000000 facets, 3 runs; best of the runs). Prints one row per
//! case: facets, best wall seconds, the ratio to the all-defects model (time per facet), and
//! what the report says. Each repair gets a 120 s deadline, so a runaway case shows as such
//! instead of hanging the bench. `HEAL_WORST_CASE=WORDS` runs only the cases whose name
//! contains them; `HEAL_WORST_WRITE=DIR` also writes every case's input to `DIR/<name>.stl`
//! (for `/usr/bin/time -v` runs of `heal_file` on one case; empty: nothing written).
use std::time::{Duration, Instant};

use fixmyprint_heal::{HealError, Mesh, RepairOptions, Report, generate, repair, stl};

/// A sphere of about `facets` facets with everything above z = 0 removed: one hole whose
/// rim has as many edges as the sphere has segments (filled by a fan).
fn huge_hole(facets: usize) -> Vec<u8> {
    let mut m = generate::sphere([0.0; 3], 10.0, facets);
    let v = m.vertices.clone();
    m.triangles
        .retain(|t| t.iter().any(|&i| v[i as usize][2] <= 0.0));
    stl::encode_binary(&m)
}

/// A closed double cone: every facet of each half on one apex vertex (a vertex of degree
/// `facets / 2`), the two halves sharing one rim.
fn one_vertex(facets: usize) -> Vec<u8> {
    let n = (facets / 2).max(3);
    let mut m = Mesh::default();
    m.vertices.push([0.0, 0.0, 5.0]);
    m.vertices.push([0.0, 0.0, -5.0]);
    for k in 0..n {
        let a = std::f64::consts::TAU * k as f64 / n as f64;
        m.vertices
            .push([(10.0 * a.cos()) as f32, (10.0 * a.sin()) as f32, 0.0]);
    }
    for k in 0..n as u32 {
        let (p, q) = (2 + k, 2 + (k + 1) % n as u32);
        m.triangles.push([0, p, q]);
        m.triangles.push([1, q, p]);
    }
    stl::encode_binary(&m)
}

/// `copies` copies of a sphere, every corner copy moved by independent noise of up to
/// `noise` × the diagonal per coordinate: piles of near-duplicate vertices and facets.
/// Closed slivers (tetrahedra) fanned round one axis, every one on the axis's two end points:
/// large faces of many shells overlapping in every column of the nesting check.
fn wedge_fan(facets: usize) -> Vec<u8> {
    let n = (facets / 4).max(3);
    let mut m = Mesh::default();
    m.vertices.push([0.0, 0.0, 0.0]);
    m.vertices.push([0.0, 0.0, 100.0]);
    let at = |a: f64| [(50.0 * a.cos()) as f32, (50.0 * a.sin()) as f32, 50.0];
    for k in 0..n {
        let a = std::f64::consts::TAU * k as f64 / n as f64;
        let b = m.vertices.len() as u32;
        m.vertices.push(at(a));
        m.vertices.push(at(a + std::f64::consts::PI / n as f64));
        let (c, d) = (b, b + 1);
        m.triangles
            .extend([[0, c, 1], [0, 1, d], [0, d, c], [1, c, d]]);
    }
    stl::encode_binary(&m)
}

/// Adds an axis-aligned cube of side `side` with its least corner at `at`, wound outward.
fn add_cube(m: &mut Mesh, at: [f32; 3], side: f32) {
    let cube = generate::block(at, at.map(|x| x + side));
    let b = m.vertices.len() as u32;
    m.vertices.extend_from_slice(&cube.vertices);
    m.triangles
        .extend(cube.triangles.iter().map(|f| f.map(|i| b + i)));
}

/// Separate cubes in a square grid on one plane (a build plate of parts): every ray of the
/// nesting check along a row meets the whole row. With `hollow`, every cube holds a cavity
/// (wound like a solid), so every cube really contains a shell.
fn cube_rows(facets: usize, hollow: bool) -> Vec<u8> {
    let per = if hollow { 24 } else { 12 };
    let n = ((facets / per) as f64).sqrt().max(1.0) as usize;
    let mut m = Mesh::default();
    for i in 0..n {
        for j in 0..n {
            let at = [i as f32 * 4.0, j as f32 * 4.0, 0.0];
            add_cube(&mut m, at, 3.0);
            if hollow {
                add_cube(&mut m, at.map(|x| x + 1.0), 1.0);
            }
        }
    }
    stl::encode_binary(&m)
}

/// Separate small triangles (sides up to 2 % of the box) at random in a box: each is a closed
/// boundary chain of three edges, and nearly every corner a boundary vertex.
fn triangle_cloud(facets: usize) -> Vec<u8> {
    let mut rng = generate::Rng::new(7);
    let mut m = Mesh::default();
    for _ in 0..facets {
        let c: [f64; 3] = std::array::from_fn(|_| rng.f64() * 100.0);
        let b = m.vertices.len() as u32;
        for _ in 0..3 {
            m.vertices
                .push(c.map(|x| (x + rng.f64() * 2.0 - 1.0) as f32));
        }
        m.triangles.push([b, b + 1, b + 2]);
    }
    stl::encode_binary(&m)
}

fn near_duplicate_soup(facets: usize, copies: usize, noise: f64) -> Vec<u8> {
    let base = generate::sphere([0.0; 3], 10.0, facets / copies);
    let diag = 20.0 * 3f64.sqrt();
    let mut rng = generate::Rng::new(5);
    let mut m = Mesh::default();
    for _ in 0..copies {
        for t in &base.triangles {
            let b = m.vertices.len() as u32;
            for &i in t {
                let p = base.vertices[i as usize];
                m.vertices
                    .push(p.map(|x| x + ((rng.f64() * 2.0 - 1.0) * noise * diag) as f32));
            }
            m.triangles.push([b, b + 1, b + 2]);
        }
    }
    stl::encode_binary(&m)
}

/// As many small spherical cavities as fit (kept: each above the tiny-shell bound) in one
/// outer sphere, about `facets` facets in all.
fn many_shells(facets: usize) -> Vec<u8> {
    let n = ((facets as f64 / 48.0).cbrt() as usize).clamp(2, 23);
    let per = (facets / (n * n * n)).max(8);
    stl::encode_binary(&generate::bubbles(n, per, per * 4).mesh)
}

/// Thin tubes with helical cuts whose rims (about 1 600 edges each) wrap round them.
fn tube_loops(facets: usize) -> Vec<u8> {
    let rings = 400;
    generate::cut_tubes((facets / (16 * rings)).max(1), rings).stl
}

/// A bumpy sheet (a height field) with a hole of `h × h` cells in every `h + 1` square: one
/// connected surface whose holes are bent loops of `4h` edges, each filled by ear clipping
/// and, up to 24 edges, again by the fill of gentlest folds (its most costly case: `h = 6`,
/// one loop per 26 facets).
fn bent_holes(facets: usize, h: usize) -> Vec<u8> {
    let w = h + 1;
    let n = w * ((facets as f64 / (4 * w - 2) as f64).sqrt().max(1.0) as usize) + 1;
    let mut m = Mesh::default();
    for j in 0..=n {
        for i in 0..=n {
            let (x, y) = (i as f32, j as f32);
            m.vertices
                .push([x, y, 3.0 * (x * 0.7).sin() * (y * 0.5).cos()]);
        }
    }
    let at = |i: usize, j: usize| (j * (n + 1) + i) as u32;
    for j in 0..n {
        for i in 0..n {
            if i % w == 0 || j % w == 0 {
                let (a, b, c, d) = (at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1));
                m.triangles.extend([[a, b, c], [a, c, d]]);
            }
        }
    }
    stl::encode_binary(&m)
}

fn time(input: &[u8], runs: usize) -> (f64, Result<Report, HealError>) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let options = RepairOptions {
            deadline: Instant::now().checked_add(Duration::from_secs(120)),
            ..RepairOptions::default()
        };
        let t = Instant::now();
        let r = repair(input, &options).map(|r| r.report);
        best = best.min(t.elapsed().as_secs_f64());
        let stop = r.is_err();
        last = Some(r);
        if stop {
            break;
        }
    }
    (best, last.expect("at least one run"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (facets, runs) = (arg(0, 1_000_000), arg(1, 3).max(1));
    let facets_of = |b: &[u8]| u32::from_le_bytes([b[80], b[81], b[82], b[83]]) as f64;
    let base = generate::broken_model(1, facets);
    let (t0, _) = time(&base, runs);
    let per0 = t0 / facets_of(&base);
    println!(
        "best of {runs} runs, default options; ratio = seconds per facet ÷ the all-defects model's"
    );
    println!("| case | facets | best s | ratio | report |");
    println!("|---|---|---|---|---|");
    println!(
        "| all defects (generated) | {} | {t0:.3} | 1.0 | |",
        facets_of(&base)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("many shells (cavities)", many_shells(facets)),
        ("huge hole", huge_hole(facets)),
        ("hole loops round thin tubes", tube_loops(facets)),
        (
            "bumpy sheet with bent holes of 24 edges",
            bent_holes(facets, 6),
        ),
        (
            "bumpy sheet with bent holes of 32 edges",
            bent_holes(facets, 8),
        ),
        ("all facets on one vertex", one_vertex(facets)),
        ("fan of closed slivers round one axis", wedge_fan(facets)),
        ("cloud of separate small triangles", triangle_cloud(facets)),
        ("plate of separate cubes in rows", cube_rows(facets, false)),
        ("plate of hollow cubes in rows", cube_rows(facets, true)),
        (
            "near-duplicate soup (64 copies, 1e-4)",
            near_duplicate_soup(facets, 64, 1e-4),
        ),
        (
            "near-duplicate soup (8 copies, 1e-5)",
            near_duplicate_soup(facets, 8, 1e-5),
        ),
    ];
    // HEAL_WORST_CASE=WORDS runs only the cases whose name contains them.
    let only = std::env::var("HEAL_WORST_CASE").unwrap_or_default();
    // Set but empty is unset (not the current directory: `HEAL_WORST_WRITE= heal_worst …`
    // once wrote 550 MB of inputs into the checkout).
    let write_to = std::env::var_os("HEAL_WORST_WRITE")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    for (name, input) in cases.into_iter().filter(|(n, _)| n.contains(only.as_str())) {
        if let Some(dir) = &write_to {
            let file: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let path = dir.join(format!("{file}.stl"));
            if let Err(e) = std::fs::write(&path, &input) {
                eprintln!("error: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        let (t, r) = time(&input, runs);
        let n = facets_of(&input);
        let what = match r {
            Ok(r) => {
                let s = &r.stages;
                format!(
                    "{} shells, {} holes filled, watertight {}{}; stages: {}",
                    r.shells,
                    r.holes_filled,
                    r.watertight,
                    if r.not_watertight.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.not_watertight.join("; "))
                    },
                    // The repair's stages, weld to orient (not parsing or writing).
                    s.seconds()[1..8]
                        .iter()
                        .copied()
                        .filter(|(_, t)| *t >= 0.01)
                        .map(|(n, t)| format!("{n} {t:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Err(e) => format!("error: {e}"),
        };
        println!("| {name} | {n} | {t:.3} | {:.2} | {what} |", t / n / per0);
    }
}
