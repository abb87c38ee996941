//! Bounded worst case: hole loops that defeat ear clipping cost a constant per boundary edge,
//! and a deadline stops a repair with a typed error.
use std::time::{Duration, Instant};

use fixmyprint_heal::{self as heal, HealError, RepairOptions, Stage, generate};

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
