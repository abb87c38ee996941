//! Provenance: every output facet's marks agree exactly with the stage reports, and a clean
//! model carries none.

use fixmyprint_heal::generate::{self, Defects};
use fixmyprint_heal::provenance::mark;
use fixmyprint_heal::{self as heal, RepairOptions};

#[test]
fn a_clean_model_is_untouched() {
    let g = generate::model(3, 4000, &Defects::none());
    let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
    assert_eq!(r.provenance.facets.len(), r.mesh.triangles.len());
    assert!(r.provenance.is_untouched());
}

#[test]
fn each_defect_marks_what_its_stage_reports() {
    for (name, defects) in Defects::each() {
        let g = generate::model(5, 4000, &defects);
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        let p = &r.provenance;
        let s = &r.report.stages;
        assert_eq!(p.facets.len(), r.mesh.triangles.len(), "{name}");
        assert_eq!(
            p.count(mark::FILLED),
            s.holes.facets_added + s.topology.strip_facets,
            "{name}"
        );
        assert_eq!(p.count(mark::WINDING), s.winding.facets_flipped, "{name}");
        assert_eq!(
            p.removed.len() as u64,
            s.shells.facets_removed,
            "{name}: removed facets kept for ghosting"
        );
        if s.orient.shells_flipped == 0 {
            assert_eq!(p.count(mark::OUTWARD), 0, "{name}");
        } else {
            assert!(p.count(mark::OUTWARD) > 0, "{name}");
        }
        // The filled facets are the ones hole filling appended: at the end, in order.
        let filled = s.holes.facets_added as usize;
        let n = p.facets.len();
        assert!(
            p.facets[n - filled..].iter().all(|m| m & mark::FILLED != 0),
            "{name}"
        );
    }
}

#[test]
fn an_inverted_shell_is_marked_outward_whole() {
    let d = Defects {
        invert_shell: true,
        ..Defects::none()
    };
    let g = generate::model(7, 4000, &d);
    let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
    assert_eq!(r.report.stages.orient.shells_flipped, 1);
    let marked = r.provenance.count(mark::OUTWARD);
    assert!(marked > 0 && marked < r.mesh.triangles.len() as u64);
    assert_eq!(r.provenance.count(mark::FILLED | mark::WINDING), 0);
}

#[test]
fn facets_on_a_non_manifold_edge_are_marked() {
    // Two tetrahedra sharing one edge: four facets meet there.
    let tet = |o: [f32; 3], d: f32| {
        let a = [0.0, 0.0, 0.0];
        let b = [1.0, 0.0, 0.0];
        let c = [o[0], o[1] + d, o[2]];
        let e = [o[0], o[1], o[2] + d];
        vec![[a, c, b], [a, b, e], [a, e, c], [b, c, e]]
    };
    let mut facets = tet([0.5, 0.0, 0.0], 1.0);
    facets.extend(
        tet([0.5, 0.0, 0.0], -1.0)
            .into_iter()
            .map(|[a, b, c]| [a, c, b]),
    );
    let mut stl = String::from("solid t\n");
    for f in &facets {
        stl.push_str("facet normal 0 0 0 outer loop\n");
        for p in f {
            stl.push_str(&format!("vertex {} {} {}\n", p[0], p[1], p[2]));
        }
        stl.push_str("endloop endfacet\n");
    }
    stl.push_str("endsolid t\n");
    let r = heal::repair(stl.as_bytes(), &RepairOptions::default()).unwrap();
    assert_eq!(r.report.stages.topology.non_manifold_edges, 1);
    assert_eq!(r.provenance.count(mark::NON_MANIFOLD), 4);
}
