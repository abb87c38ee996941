//! Bounded worst case: hole loops that defeat ear clipping cost a constant per boundary edge,
//! the nesting check's work is bounded where the faces of many shells overlap, and a
//! deadline stops a repair with a typed error.
use std::time::{Duration, Instant};

use fixmyprint_heal::{self as heal, HealError, Mesh, RepairOptions, Stage, generate};

use crate::support::verify;

/// Work per boundary edge of the crafted tubes (hole rims of about `4 × rings` edges wrapped
/// round a thin tube), and the verdict of the output.
fn cut_tubes(tubes: usize, rings: usize) -> (f64, heal::Report) {
    let g = generate::cut_tubes(tubes, rings);
    let r = heal::repair(&g.stl, &RepairOptions::default()).expect("repairs");
    let report = r.report.clone();
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent, "{tubes}x{rings}: {v:?}");
    assert_eq!(v.degenerate, 0, "{tubes}x{rings}");
    assert_eq!(report.shells, tubes as u64, "{report:?}");
    assert_eq!(report.stages.holes.filled, tubes as u64, "{report:?}");
    // The tubes' rims lie side by side, far apart against their edges: never one strip.
    assert_eq!(report.stages.topology.strips, 0, "{report:?}");
    assert!(report.watertight, "{report:?}");
    let boundary = report.stages.topology.boundary_edges as f64;
    assert!(boundary >= (tubes * 4 * rings) as f64 * 0.9, "{boundary}");
    (report.stages.holes.work as f64 / boundary, report)
}

#[test]
fn heal_loops_wrapped_round_tubes_cost_a_constant_per_edge() {
    // Rims of ~400 and ~800 edges: the cubic least-area fill would need ~n²/6 checks per edge
    // (~27 000 and ~107 000); ear clipping alone ~n per edge.
    let (small, _) = cut_tubes(4, 100);
    let (large, _) = cut_tubes(4, 200);
    for w in [small, large] {
        assert!(w <= 500.0, "work per boundary edge {w}");
    }
    // Linear: doubling the rim length does not double the work per edge.
    assert!(large <= 1.5 * small + 1.0, "{small} -> {large}");
}

#[test]
fn heal_short_wrapped_loops_still_get_the_least_area_fill() {
    // Rims of ~40 edges (10 rings): short enough for the least-area fill.
    let (w, report) = cut_tubes(2, 10);
    assert!(w <= 500.0, "{w}");
    assert_eq!(report.stages.holes.vertices_added, 0, "{report:?}");
}

/// `n` closed slivers (tetrahedra) fanned round the z axis, apart from each other, every
/// other one inside out: large faces of many shells overlap in every column of the nesting
/// check, so each shell's rays meet most of the fan's faces.
fn wedge_fan(n: usize) -> Mesh {
    let mut m = Mesh::default();
    for k in 0..n {
        let a = std::f64::consts::TAU * k as f64 / n as f64;
        let b = a + std::f64::consts::PI / n as f64;
        let at = |r: f64, a: f64, z: f32| [(r * a.cos()) as f32, (r * a.sin()) as f32, z];
        let base = m.vertices.len() as u32;
        m.vertices.extend([
            at(20.0, a, 0.0),
            at(20.0, a, 100.0),
            at(50.0, a, 50.0),
            at(50.0, b, 50.0),
        ]);
        let [p, q, c, d] = [0, 1, 2, 3].map(|i| base + i);
        let mut faces = [[p, c, q], [p, q, d], [p, d, c], [q, c, d]];
        if k % 2 == 1 {
            for f in &mut faces {
                f.swap(1, 2);
            }
        }
        m.triangles.extend(faces);
    }
    m
}

#[test]
fn heal_a_fan_of_overlapping_shells_has_its_nesting_work_bounded() {
    // 4 000 slivers (16 000 facets) whose rays would meet tens of millions of faces in all,
    // beside a sphere with 125 cavities far from the fan's columns.
    let fan = wedge_fan(4_000);
    let bubbles = generate::bubbles(5, 24, 2_000);
    let mut m = fan.clone();
    let base = m.vertices.len() as u32;
    m.vertices.extend(
        bubbles
            .mesh
            .vertices
            .iter()
            .map(|p| [p[0], p[1] + 200.0, p[2] + 200.0]),
    );
    m.triangles
        .extend(bubbles.mesh.triangles.iter().map(|t| t.map(|i| i + base)));
    let r = heal::repair(&heal::stl::encode_binary(&m), &RepairOptions::default()).unwrap();
    let o = &r.report.stages.orient;
    assert_eq!(r.report.shells, 4_000 + 126, "{:?}", r.report.stages.shells);
    // Most of the fan is taken as outer shells without its rays being cast; the cavities,
    // whose rays meet few faces, are still tested and found.
    assert!(
        o.nesting_untested > 3_000 && o.nesting_untested <= 4_000,
        "{o:?}"
    );
    assert_eq!(o.cavities, 125, "{o:?}");
    // Every sliver faces outward: the inside-out half was turned.
    assert_eq!(o.shells_flipped, 2_000, "{o:?}");
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent, "{v:?}");
    let slivers: f64 = fan
        .triangles
        .chunks(4)
        .zip(fan.vertices.chunks(4))
        .map(|(t, corners)| {
            let base = t[0][0];
            let sliver = Mesh {
                vertices: corners.to_vec(),
                triangles: t.iter().map(|f| f.map(|i| i - base)).collect(),
            };
            sliver.signed_volume().abs()
        })
        .sum();
    let want = slivers + bubbles.volume;
    let rel = (r.report.volume - want).abs() / want;
    assert!(rel < 1e-6, "volume {} vs {want}", r.report.volume);
}

#[test]
fn heal_deadline_passed_is_a_typed_error() {
    let g = generate::broken_model(1, 5_000);
    let options = RepairOptions {
        deadline: Some(Instant::now()),
        ..RepairOptions::default()
    };
    match heal::repair(&g, &options) {
        Err(HealError::DeadlineExceeded { stage, .. }) => assert_eq!(stage, Stage::Weld),
        other => panic!(
            "expected DeadlineExceeded, got {:?}",
            other.map(|r| r.report)
        ),
    }
    let e = heal::repair(&g, &options).unwrap_err().to_string();
    assert!(e.contains("deadline") && e.contains("weld"), "{e}");
    // A deadline far away changes nothing.
    let later = RepairOptions {
        deadline: Some(Instant::now() + Duration::from_secs(3600)),
        ..RepairOptions::default()
    };
    let a = heal::repair(&g, &later).unwrap().to_stl_bytes();
    let b = heal::repair(&g, &RepairOptions::default())
        .unwrap()
        .to_stl_bytes();
    assert_eq!(a, b);
}
