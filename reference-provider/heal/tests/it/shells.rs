//! The tiny-shell rule: a shell is noise (removed) only when it shares no vertex with another
//! shell and its bounding box is under 2 % of the model's diagonal, whatever its facet count.
use fixmyprint_heal::{self as heal, Mesh, RepairOptions, generate};

/// A big sphere (r = 10) and a small one of radius `r` at `centre`, as one binary STL.
fn two_spheres(r: f32, centre: [f32; 3], small_facets: usize) -> Vec<u8> {
    let big = generate::sphere([0.0; 3], 10.0, 4_000);
    let small = generate::sphere(centre, r, small_facets);
    let mut m = Mesh::default();
    for part in [big, small] {
        let base = m.vertices.len() as u32;
        m.vertices.extend_from_slice(&part.vertices);
        m.triangles
            .extend(part.triangles.iter().map(|t| t.map(|i| i + base)));
    }
    heal::stl::encode_binary(&m)
}

#[test]
fn heal_small_lone_shell_is_noise_whatever_its_facet_count() {
    // Model diagonal ~35: a sphere of r = 0.2 has a bbox diagonal of ~0.7 (2 %) — under it.
    let r = heal::repair(
        &two_spheres(0.15, [0.0, 0.0, 14.0], 800),
        &RepairOptions::default(),
    )
    .unwrap();
    assert_eq!(r.report.shells, 1, "{:?}", r.report.stages.shells);
    assert_eq!(r.report.stages.shells.tiny_removed, 1);
}

#[test]
fn heal_small_shell_above_2_percent_is_kept() {
    let r = heal::repair(
        &two_spheres(0.5, [0.0, 0.0, 14.0], 800),
        &RepairOptions::default(),
    )
    .unwrap();
    assert_eq!(r.report.shells, 2, "{:?}", r.report.stages.shells);
}

#[test]
fn heal_small_shell_touching_another_is_kept() {
    // The small sphere's lowest point is the big sphere's top vertex: they share a vertex.
    let big = generate::sphere([0.0; 3], 10.0, 4_000);
    let top = *big
        .vertices
        .iter()
        .max_by(|a, b| a[2].total_cmp(&b[2]))
        .unwrap();
    let mut small = generate::sphere([top[0], top[1], top[2] + 0.15], 0.15, 800);
    let low = small
        .vertices
        .iter()
        .enumerate()
        .min_by(|a, b| a.1[2].total_cmp(&b.1[2]))
        .unwrap()
        .0;
    small.vertices[low] = top;
    let mut m = Mesh::default();
    for part in [big, small] {
        let base = m.vertices.len() as u32;
        m.vertices.extend_from_slice(&part.vertices);
        m.triangles
            .extend(part.triangles.iter().map(|t| t.map(|i| i + base)));
    }
    let r = heal::repair(&heal::stl::encode_binary(&m), &RepairOptions::default()).unwrap();
    assert_eq!(
        r.report.stages.shells.tiny_removed, 0,
        "{:?}",
        r.report.stages.shells
    );
    assert_eq!(r.report.shells, 2);
}

#[test]
fn heal_thousands_of_cavities_are_all_turned_inward() {
    // 4 913 spherical cavities in one outer sphere (4 914 shells); every other cavity comes
    // wound outward and must be turned inward, the outer sphere comes inside out.
    let model = generate::bubbles(17, 24, 2_000);
    let mut mesh = model.mesh.clone();
    for (t, &s) in mesh.triangles.iter_mut().zip(&model.shell_of) {
        if s % 2 == 0 {
            t.swap(1, 2);
        }
    }
    let r = heal::repair(&heal::stl::encode_binary(&mesh), &RepairOptions::default()).unwrap();
    let shells = model.shells.len() as u64;
    assert_eq!(shells, 4_914);
    assert_eq!(r.report.shells, shells, "{:?}", r.report.stages.shells);
    assert_eq!(r.report.stages.orient.cavities, shells - 1);
    assert_eq!(r.report.stages.orient.shells_flipped, shells / 2);
    assert!(r.report.watertight);
    let rel = (r.report.volume - model.volume).abs() / model.volume;
    assert!(rel < 1e-6, "volume {} vs {}", r.report.volume, model.volume);
    assert!(model.volume > 0.0);
}

#[test]
fn heal_open_patch_along_a_seam_is_stitched_not_dropped() {
    // A 0.2 × 0.2 patch cut out of a 10-unit cube's top face (1.2 % of the diagonal), its rim
    // copies moved by up to 2e-4 of the diagonal per coordinate — four times the automatic
    // weld's bound — and 0 (exact copies) for comparison.
    for gap in [0.0, 2e-5, 2e-4, 5e-4] {
        let g = generate::seam_patch(100, 2, gap, 7);
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        let s = &r.report.stages;
        assert_eq!(s.shells.tiny_removed, 0, "gap {gap}: {:?}", s.shells);
        assert_eq!(r.report.shells, 1, "gap {gap}");
        assert_eq!(s.holes.found, 0, "gap {gap}: {:?}", s.holes);
        assert_eq!(
            r.report.output_facets,
            g.clean.mesh.triangles.len() as u64,
            "gap {gap}"
        );
        assert!(r.report.watertight, "gap {gap}");
        let rel = (r.report.volume - g.clean.volume).abs() / g.clean.volume;
        assert!(rel < 1e-4, "gap {gap}: volume {}", r.report.volume);
        if gap >= 2e-4 {
            assert_eq!(s.topology.stitched_edges, 8, "gap {gap}: {:?}", s.topology);
        }
    }
    // Without stitching the patch is lost: that is what the stitch prevents.
    let g = generate::seam_patch(100, 2, 2e-4, 7);
    let options = RepairOptions {
        stitch: false,
        ..RepairOptions::default()
    };
    let r = heal::repair(&g.stl, &options).unwrap();
    assert_eq!(r.report.stages.shells.tiny_removed, 1);
}
