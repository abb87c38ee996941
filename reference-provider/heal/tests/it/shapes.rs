//! Shapes the standard model does not have: CAD-like flat parts with long thin facets (a plate
//! with a hole, an L bracket), a sphere and a torus alone, several boxes with one inside out,
//! each written as a pure triangle soup (shuffled, 10 % flipped) with float noise from none to
//! 1e-5 of the diagonal per coordinate, healed with the default options; and two closed boxes
//! sharing an edge.
use crate::support::{assert_quality, verify};
use fixmyprint_heal::generate::{self, Generated};
use fixmyprint_heal::{self as heal, RepairOptions};

/// The shapes, each as a soup with the given noise.
pub fn cases(noise: f64, seed: u64) -> Vec<(String, Generated)> {
    let shapes: Vec<(&str, generate::Model, Option<u32>)> = vec![
        (
            "plate with a hole",
            generate::parts(vec![("plate", generate::plate_with_hole(64))]),
            None,
        ),
        (
            "bracket",
            generate::parts(vec![("bracket", generate::bracket())]),
            None,
        ),
        (
            "sphere",
            generate::parts(vec![(
                "sphere",
                generate::sphere([1.0, 2.0, 3.0], 7.0, 20_000),
            )]),
            None,
        ),
        (
            "torus",
            generate::parts(vec![("torus", generate::torus([0.0; 3], 6.0, 1.5, 20_000))]),
            None,
        ),
        (
            "boxes, one inside out",
            generate::parts(vec![
                ("box a", generate::block([0.0; 3], [4.0, 4.0, 4.0])),
                ("box b", generate::block([6.0, 0.0, 0.0], [9.0, 5.0, 2.0])),
                ("box c", generate::block([0.0, 7.0, 0.0], [3.0, 9.0, 6.0])),
            ]),
            Some(1),
        ),
    ];
    shapes
        .into_iter()
        .map(|(name, model, invert)| {
            (
                format!("{name}, noise {noise}"),
                generate::soup(&model, seed, noise, 0.10, invert),
            )
        })
        .collect()
}

#[test]
fn heal_cad_and_curved_soups_with_noise_up_to_1e5() {
    for (noise, seed) in [(0.0, 31), (1e-6, 32), (1e-5, 33)] {
        for (name, g) in cases(noise, seed) {
            let r = heal::repair(&g.stl, &RepairOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(r.report.watertight, "{name}: {:#?}", r.report);
            assert_eq!(
                r.report.stages.holes.facets_added, 0,
                "{name}: nothing to fill, no needles: {:#?}",
                r.report
            );
            assert_eq!(
                r.report.output_facets as usize,
                g.clean.mesh.triangles.len(),
                "{name}"
            );
            assert_quality(&name, &r.to_stl_bytes(), &g.clean);
        }
    }
}

#[test]
fn heal_two_boxes_sharing_an_edge_keep_both() {
    let model = generate::parts(vec![
        ("box a", generate::block([0.0; 3], [1.0, 1.0, 1.0])),
        ("box b", generate::block([1.0, 1.0, 0.0], [2.0, 2.0, 1.0])),
    ]);
    for (noise, seed) in [(0.0, 41), (1e-6, 42)] {
        let g = generate::soup(&model, seed, noise, 0.10, None);
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        assert_eq!(r.report.output_facets, 24, "{:#?}", r.report);
        let v = verify(&r.to_stl_bytes());
        assert!(v.consistent, "{v:?}");
        assert!(v.shells.iter().all(|s| s.1 > 0.0), "both outward: {v:?}");
        assert!((v.volume - 2.0).abs() < 0.01, "{v:?}");
    }
}

#[test]
fn heal_two_solids_sharing_a_face_are_joined() {
    // Two unit blocks written whole, side by side: the face at x = 1 comes twice, once each
    // way round, meshed the same (the second block is the first mirrored). Exact, and as a
    // soup with noise.
    let a = generate::block([0.0; 3], [1.0, 1.0, 1.0]);
    let mut b = a.clone();
    for p in &mut b.vertices {
        p[0] = 2.0 - p[0];
    }
    for t in &mut b.triangles {
        t.swap(1, 2);
    }
    let model = generate::parts(vec![("a", a), ("b", b)]);
    for (noise, seed) in [(0.0, 51), (1e-6, 52)] {
        let g = generate::soup(&model, seed, noise, 0.0, None);
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        let s = &r.report.stages;
        assert_eq!(s.topology.shared_faces_removed, 2, "noise {noise}: {s:?}");
        assert_eq!(s.clean.duplicate_removed, 2, "noise {noise}");
        assert!(
            r.report.watertight,
            "noise {noise}: {:?}",
            r.report.not_watertight
        );
        assert_eq!(
            (r.report.shells, r.report.output_facets),
            (1, 20),
            "noise {noise}"
        );
        assert!((r.report.volume - 2.0).abs() < 1e-4, "{}", r.report.volume);
    }
}
