//! Quality bar: every defect alone and all together come out watertight, consistently wound,
//! outward (cavity inward), free of duplicates, degenerates and tiny shells, with every real
//! shell kept and the volume within 0.5 % of the clean model.

use crate::support::{assert_quality, verify};
use fixmyprint_heal::{self as heal, RepairOptions, generate};

#[test]
fn heal_each_defect_alone() {
    for (name, d) in generate::Defects::each() {
        for seed in [1, 2] {
            let g = generate::model(seed, 12_000, &d);
            let r = heal::repair(&g.stl, &RepairOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                r.report.watertight,
                "{name}: report says not watertight: {:#?}",
                r.report
            );
            assert_eq!(r.report.shells, 4, "{name}");
            assert_quality(name, &r.to_stl_bytes(), &g.clean);
        }
    }
}

#[test]
fn heal_all_defects_together() {
    for (seed, facets) in [(3, 10_000), (4, 40_000), (5, 200_000)] {
        let g = generate::model(seed, facets, &generate::Defects::all());
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        let rep = &r.report;
        assert!(rep.watertight && rep.winding_consistent, "{rep:#?}");
        assert_eq!(rep.shells, 4);
        assert_eq!(rep.stages.holes.filled, 6, "{rep:#?}");
        assert!(rep.stages.clean.duplicate_removed > 0 && rep.stages.clean.degenerate_removed > 0);
        // 12 noise shells, plus collinear degenerates whose welded corner moved off the line
        // (they become one-facet slivers and go as tiny shells).
        assert!(rep.stages.shells.tiny_removed >= 12);
        assert_eq!(rep.stages.orient.cavities, 1);
        assert!(
            rep.stages.weld.tolerance_merged > 0,
            "noise must need the tolerance weld"
        );
        assert!((rep.volume - g.clean.volume).abs() / g.clean.volume < 0.005);
        assert_quality("all defects", &r.to_stl_bytes(), &g.clean);
    }
}

#[test]
fn heal_all_defects_ascii() {
    let d = generate::Defects {
        ascii: true,
        ..generate::Defects::all()
    };
    let g = generate::model(9, 20_000, &d);
    assert!(g.stl.starts_with(b"solid"));
    let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
    assert_eq!(r.report.stages.parse.format, "ascii");
    assert_quality("ascii all defects", &r.to_stl_bytes(), &g.clean);
}

#[test]
fn heal_clean_model_is_left_alone() {
    let g = generate::model(11, 30_000, &generate::Defects::none());
    let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
    let s = &r.report.stages;
    assert_eq!(r.report.input_facets, r.report.output_facets);
    assert_eq!(s.clean.degenerate_removed + s.clean.duplicate_removed, 0);
    assert_eq!(s.winding.facets_flipped + s.orient.shells_flipped, 0);
    assert_eq!(s.holes.found, 0);
    assert_eq!(r.mesh.triangles.len(), g.clean.mesh.triangles.len());
    let v = verify(&r.to_stl_bytes());
    assert!((v.volume - g.clean.volume).abs() < 1e-6 * g.clean.volume);
}

#[test]
fn heal_report_serialises_to_json() {
    let g = generate::broken_model(2, 5_000);
    let r = heal::repair(&g, &RepairOptions::default()).unwrap();
    let json = serde_json::to_value(&r.report).unwrap();
    for key in [
        "input_facets",
        "output_facets",
        "shells",
        "holes_filled",
        "watertight",
        "volume",
        "bbox",
        "stages",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    for stage in [
        "parse", "weld", "clean", "topology", "winding", "shells", "holes", "orient", "write",
    ] {
        assert!(
            json["stages"][stage]["seconds"].is_number(),
            "stage {stage}"
        );
    }
    let back: heal::Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r.report);
}

/// The report says why an output is not watertight, one line per cause, and says nothing
/// when it is.
#[test]
fn report_says_why_not_watertight() {
    // Watertight: no reason, and none in the JSON.
    let clean = generate::clean_model(3, 4_000);
    let r = heal::repair(
        &heal::stl::encode_binary(&clean.mesh),
        &RepairOptions::default(),
    )
    .unwrap();
    assert!(r.report.watertight);
    assert!(r.report.not_watertight.is_empty());
    assert!(
        !serde_json::to_string(&r.report)
            .unwrap()
            .contains("not_watertight")
    );

    // A box with a facet missing and hole filling off: one reason, the open hole.
    let mut open_box = generate::block([0.0; 3], [1.0, 2.0, 3.0]);
    open_box.triangles.pop();
    let off = RepairOptions {
        fill_holes: false,
        ..RepairOptions::default()
    };
    let r = heal::repair(&heal::stl::encode_binary(&open_box), &off).unwrap();
    assert!(!r.report.watertight);
    assert_eq!(
        r.report.not_watertight,
        vec!["1 of 1 hole loops left open (hole filling is off)".to_owned()]
    );
    let json: serde_json::Value = serde_json::to_value(&r.report).unwrap();
    assert_eq!(json["not_watertight"].as_array().map(Vec::len), Some(1));

    // Two tetrahedra that share one edge, the second the first turned half a turn round it
    // (four facets round that edge): the split edge is counted and named as overlapping
    // surfaces.
    let o = [0.0, 0.0, 0.0];
    let z = [0.0, 0.0, 1.0];
    let tetra = |x: [f32; 3], y: [f32; 3]| [[o, y, x], [o, x, z], [o, z, y], [x, y, z]];
    let mut edge = heal::Mesh::default();
    for f in tetra([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        .into_iter()
        .chain(tetra([-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]))
    {
        let base = edge.vertices.len() as u32;
        edge.vertices.extend(f);
        edge.triangles.push([base, base + 1, base + 2]);
    }
    let r = heal::repair(&heal::stl::encode_binary(&edge), &RepairOptions::default()).unwrap();
    assert!(!r.report.watertight);
    assert_eq!(
        r.report.not_watertight.len(),
        1,
        "{:?}",
        r.report.not_watertight
    );
    assert!(
        r.report.not_watertight[0]
            .starts_with("1 edges are shared by more than two facets (split apart)"),
        "{:?}",
        r.report.not_watertight
    );

    // A tetrahedron with a short edge (4e-4 of a model 10 across) and a stray facet on that
    // edge (three facets on it, split apart): the stray facet is a tiny shell of its own,
    // removed, and the edge keeps two facets. The output is closed and says so.
    let mut flap = heal::Mesh::default();
    let (a, b, x, y) = (
        [0.0f32, 0.0, 0.0],
        [4e-4, 0.0, 0.0],
        [0.0, 10.0, 0.0],
        [0.0, 0.0, 10.0],
    );
    for f in [
        [a, x, b],
        [a, b, y],
        [a, y, x],
        [b, x, y],
        [a, [2e-4, -1e-4, -1e-4], b],
    ] {
        let base = flap.vertices.len() as u32;
        flap.vertices.extend(f);
        flap.triangles.push([base, base + 1, base + 2]);
    }
    let r = heal::repair(&heal::stl::encode_binary(&flap), &RepairOptions::default()).unwrap();
    let rep = &r.report;
    assert_eq!(rep.stages.topology.non_manifold_edges, 1, "{rep:#?}");
    assert_eq!(rep.stages.shells.tiny_removed, 1, "{rep:#?}");
    assert_eq!(rep.output_facets, 4, "{rep:#?}");
    assert!(rep.watertight, "{rep:#?}");
    assert!(rep.not_watertight.is_empty(), "{rep:#?}");
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent && v.outward, "{v:?}");

    // Two tetrahedra on the same side of a face they share, its two copies wound opposite
    // ways: the shared face goes, and what is left encloses nothing, which the report says.
    let r = heal::repair(
        include_bytes!("../../../fuzz/seeds/repair/nonmanifold.stl"),
        &RepairOptions::default(),
    )
    .unwrap();
    assert!(!r.report.watertight);
    assert_eq!(r.report.stages.topology.shared_faces_removed, 1);
    assert!(
        r.report.not_watertight[0].contains("enclose no volume"),
        "{:?}",
        r.report.not_watertight
    );
}
