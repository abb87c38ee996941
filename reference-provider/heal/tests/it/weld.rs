//! The default weld needs no tolerance from the user: it welds float noise up to 1e-5 of the
//! diagonal per coordinate (copies up to twice that apart) and never merges the two ends of a
//! real edge, however short.
use crate::support::{assert_quality, verify};
use fixmyprint_heal::{self as heal, RepairOptions, generate};

#[test]
fn heal_default_weld_heals_noise_from_zero_to_1e5_of_the_diagonal() {
    for (amp, noise) in [
        (0.0, false),
        (1e-7, true),
        (1e-6, true),
        (3e-6, true),
        (1e-5, true),
    ] {
        for (seed, facets) in [(21, 12_000), (22, 60_000)] {
            let d = generate::Defects {
                noise,
                noise_amplitude: amp,
                ..generate::Defects::all()
            };
            let g = generate::model(seed, facets, &d);
            let r = heal::repair(&g.stl, &RepairOptions::default())
                .unwrap_or_else(|e| panic!("noise {amp}: {e}"));
            let name = format!("noise {amp}, seed {seed}, {facets} facets");
            let rep = &r.report;
            assert!(rep.watertight, "{name}: {rep:#?}");
            assert_eq!(rep.shells, 4, "{name}: {rep:#?}");
            assert_eq!(rep.stages.weld.collapsed_facets, 0, "{name}");
            assert!(rep.stages.weld.rule.starts_with("auto"), "{name}");
            assert_quality(&name, &r.to_stl_bytes(), &g.clean);
        }
    }
}

/// A closed tetrahedron whose edge A-B carries an extra vertex E at `gap` from A: AE is a
/// real edge much shorter than the weld's bound.
fn tetra_with_short_edge(gap: f32) -> Vec<u8> {
    let (a, b, c, d) = (
        [0.0f32, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    );
    let e = [gap, 0.0, 0.0];
    let facets = [
        [a, c, e],
        [e, c, b],
        [a, e, d],
        [e, b, d],
        [a, d, c],
        [b, c, d],
    ];
    let soup: Vec<[f32; 3]> = facets.iter().flatten().copied().collect();
    heal::stl::encode_soup(&soup, &[])
}

#[test]
fn heal_default_weld_never_merges_the_ends_of_a_short_real_edge() {
    // Edges of about 6e-7, 6e-6 and 6e-5 of the diagonal (1.7): the first two far below the
    // weld's bound (5e-5 of the diagonal).
    for gap in [1e-6f32, 1e-5, 1e-4] {
        let r = heal::repair(&tetra_with_short_edge(gap), &RepairOptions::default()).unwrap();
        let rep = &r.report;
        assert_eq!(rep.output_vertices, 5, "gap {gap}: {rep:#?}");
        assert_eq!(rep.output_facets, 6, "gap {gap}: {rep:#?}");
        assert_eq!(rep.stages.weld.collapsed_facets, 0, "gap {gap}");
        assert!(rep.stages.weld.limited_corners > 0, "gap {gap}");
        assert!(rep.watertight, "gap {gap}: {rep:#?}");
        let v = verify(&r.to_stl_bytes());
        assert!(
            v.watertight && v.consistent && v.outward,
            "gap {gap}: {v:?}"
        );
    }
}

#[test]
fn heal_explicit_weld_tolerance_still_wins() {
    let g = generate::model(
        23,
        12_000,
        &generate::Defects {
            noise_amplitude: 1e-5,
            ..generate::Defects::all()
        },
    );
    let options = RepairOptions {
        weld_tolerance: Some(1e-9),
        ..RepairOptions::default()
    };
    // A tolerance far below the noise leaves the soup apart: every facet is a piece of its
    // own, so nothing printable remains.
    match heal::repair(&g.stl, &options) {
        Err(heal::HealError::NothingPrintable { tiny_shells, .. }) => assert!(tiny_shells > 1000),
        other => panic!("{:?}", other.map(|r| r.report)),
    }
    let keep = RepairOptions {
        remove_tiny_shells: false,
        ..options
    };
    let r = heal::repair(&g.stl, &keep).unwrap();
    assert!(r.report.stages.weld.rule.starts_with("absolute"));
    assert!((r.report.stages.weld.tolerance - 1e-9).abs() < 1e-12);
    assert!(
        r.report.shells > 1000,
        "the pieces stay apart: {:?}",
        r.report.shells
    );
}
