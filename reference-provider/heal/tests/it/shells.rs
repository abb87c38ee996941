//! The tiny-shell rule: a shell is noise (removed) only when it shares no vertex with another
//! shell, touches or crosses none and is no void in one, and its bounding box is under 2 % of
//! the model's diagonal, whatever its facet count; and only while such shells together hold at
//! most 10 % of the surface area (else they are parts, and only debris among them goes).
use fixmyprint_heal::{self as heal, Mesh, RepairOptions, generate};

use crate::support::verify;

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
fn heal_small_voids_of_a_model_written_inside_out_are_kept() {
    // A block of 100 with five voids of side 1 (each under 2 % of the size, so a tiny-shell
    // candidate, kept as a void), written as it should be and written inside out (every facet
    // reversed, as a mirrored export writes it: the block wound inward, the voids outward).
    // A void is wound against the model, whichever way that is: before, only an inward
    // candidate could be a void, and the inside-out file lost its five voids.
    let mut parts = vec![("block", generate::block([0.0; 3], [100.0; 3]))];
    for k in 0..5 {
        let at = 10.0 + 15.0 * k as f32;
        let mut void = generate::block([at, 40.0, 50.0], [at + 1.0, 41.0, 51.0]);
        for t in &mut void.triangles {
            t.swap(1, 2);
        }
        parts.push(("void", void));
    }
    let m = generate::parts(parts).mesh;
    for inside_out in [false, true] {
        let mut m = m.clone();
        if inside_out {
            for t in &mut m.triangles {
                t.swap(1, 2);
            }
        }
        let r = heal::repair(&heal::stl::encode_binary(&m), &RepairOptions::default()).unwrap();
        let rep = &r.report;
        assert_eq!(
            rep.shells, 6,
            "inside out {inside_out}: {:?}",
            rep.stages.shells
        );
        assert_eq!(rep.stages.orient.cavities, 5, "inside out {inside_out}");
        assert!((rep.volume - 999_995.0).abs() < 0.01, "{}", rep.volume);
    }
}

#[test]
fn heal_a_part_sunk_into_another_and_sticking_out_is_no_cavity() {
    // A plate with a block sunk 1 into it and standing 6 out of it (text or a boss modelled as
    // a body of its own, as CAD exports write them), turned 45° about x so that the plate's
    // bounding box holds the block's. The block lies partly inside the plate: it is a part,
    // not a cavity, and must face outward whichever of its vertices are looked at. Before,
    // its nesting was judged on two vertices, those of its first and middle facets, both on
    // its sunk bottom, and it was turned inward.
    let plate = generate::block([-50.0, -50.0, -4.0], [50.0, 50.0, 0.0]);
    let boss = generate::block([-5.0, -5.0, -1.0], [5.0, 5.0, 6.0]);
    let mut m = generate::parts(vec![("plate", plate), ("boss", boss)]).mesh;
    // cos 45° = sin 45°.
    let r = std::f32::consts::FRAC_1_SQRT_2;
    for v in &mut m.vertices {
        *v = [v[0], r * v[1] - r * v[2], r * v[1] + r * v[2]];
    }
    for flip in [false, true] {
        let mut m = m.clone();
        if flip {
            // The boss written inside out: it must still come out facing outward.
            for t in &mut m.triangles[12..] {
                t.swap(1, 2);
            }
        }
        let r = heal::repair(&heal::stl::encode_binary(&m), &RepairOptions::default()).unwrap();
        assert_eq!(r.report.shells, 2, "{:?}", r.report);
        assert_eq!(r.report.stages.orient.cavities, 0, "flip {flip}");
        let v = verify(&r.to_stl_bytes());
        assert!(v.shells.iter().all(|s| s.1 > 0.0), "flip {flip}: {v:?}");
    }
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
fn heal_a_grid_of_hollow_boxes_keeps_every_cavity() {
    // 30 × 30 boxes of side 36 on a pitch of 40, each with a cavity of side 24 that comes
    // wound like a solid: every ray along a row of boxes crosses the whole row, and every
    // cavity must still be found inside its box and turned inward.
    assert!(volume(&cube_at([0.0; 3], 1.0)) > 0.0);
    let mut parts = Vec::new();
    for i in 0..900 {
        let (x, y) = ((i % 30) as f32 * 40.0, (i / 30) as f32 * 40.0);
        parts.push(cube_at([x, y, 0.0], 36.0));
        parts.push(cube_at([x + 6.0, y + 6.0, 6.0], 24.0));
    }
    let r = heal::repair(&joined(parts), &RepairOptions::default()).unwrap();
    let o = &r.report.stages.orient;
    assert_eq!(r.report.shells, 1_800);
    assert_eq!(o.cavities, 900, "{o:?}");
    assert_eq!(o.shells_flipped, 900, "{o:?}");
    assert_volume(&r, 900.0 * (36f64.powi(3) - 24f64.powi(3)));
}

#[test]
fn heal_a_deep_chain_of_nested_boxes_alternates_solid_and_cavity() {
    // 80 boxes each inside the last (the smallest well above the tiny-shell bound), every one
    // wound outward: the nesting check lists at most 64 shells that hold a box, so the deeper
    // ones are decided by a scan of their cells; the boxes at odd depths are cavities and must
    // be turned inward.
    let n = 80;
    let parts = (0..n)
        .map(|k| cube_at([k as f32; 3], (2 * (n - k) + 10) as f32))
        .collect();
    let r = heal::repair(&joined(parts), &RepairOptions::default()).unwrap();
    let o = &r.report.stages.orient;
    assert_eq!(r.report.shells, n);
    assert_eq!(o.cavities, n / 2, "{o:?}");
    assert_eq!(o.shells_flipped, n / 2, "{o:?}");
    let want: f64 = (0..n)
        .map(|k| f64::from((2 * (n - k) + 10) as u32).powi(3) * if k % 2 == 0 { 1.0 } else { -1.0 })
        .sum();
    assert_volume(&r, want);
}

/// `n` closed slivers (tetrahedra) fanned round the z axis, apart from each other, every
/// other one inside out: large faces of many shells overlap in every column of the nesting
/// check, though no sliver's box holds another's.
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
fn heal_a_fan_of_overlapping_shells_beside_cavities_orients_every_one() {
    // 4 000 slivers (16 000 facets) whose boxes overlap without nesting, beside a sphere with
    // 125 cavities: every sliver is an outer shell (the inside-out half turned), every cavity
    // is found and turned inward.
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
    assert_eq!(o.cavities, 125, "{o:?}");
    assert_eq!(o.shells_flipped, 2_000, "{o:?}");
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent, "{v:?}");
    let slivers: f64 = fan
        .triangles
        .chunks(4)
        .zip(fan.vertices.chunks(4))
        .map(|(t, corners)| {
            let base = t[0][0];
            Mesh {
                vertices: corners.to_vec(),
                triangles: t.iter().map(|f| f.map(|i| i - base)).collect(),
            }
            .signed_volume()
            .abs()
        })
        .sum();
    assert_volume(&r, slivers + bubbles.volume);
}

/// The repair's volume is `want` to a millionth.
fn assert_volume(r: &heal::Repaired, want: f64) {
    assert!(
        (r.report.volume - want).abs() < 1e-6 * want,
        "volume {} against {want}",
        r.report.volume
    );
}

/// An axis-aligned cube of side `s` with its least corner at `at`, wound outward.
fn cube_at(at: [f32; 3], s: f32) -> Mesh {
    let vertices = (0..8)
        .map(|k| [0, 1, 2].map(|a| at[a] + if k >> a & 1 == 1 { s } else { 0.0 }))
        .collect();
    let triangles = vec![
        [0, 2, 1],
        [1, 2, 3],
        [4, 5, 6],
        [5, 7, 6],
        [0, 1, 4],
        [1, 5, 4],
        [2, 6, 3],
        [3, 6, 7],
        [0, 4, 2],
        [2, 4, 6],
        [1, 3, 5],
        [3, 7, 5],
    ];
    Mesh {
        vertices,
        triangles,
    }
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
    // Without stitching the patch stays a shell of its own: it lies in the cube's hole, so the
    // contact rule keeps it rather than dropping it as noise, but only the stitch makes the
    // two one surface again.
    let g = generate::seam_patch(100, 2, 2e-4, 7);
    let options = RepairOptions {
        stitch: false,
        ..RepairOptions::default()
    };
    let r = heal::repair(&g.stl, &options).unwrap();
    let s = &r.report.stages.shells;
    assert_eq!((s.tiny_removed, s.kept_touching), (0, 1), "{s:?}");
    assert_eq!(r.report.shells, 2, "{:?}", r.report);
}

/// A mesh of the given facets over the given vertices, as binary STL.
fn stl_of(vertices: Vec<[f32; 3]>, triangles: Vec<[u32; 3]>) -> Vec<u8> {
    heal::stl::encode_binary(&Mesh {
        vertices,
        triangles,
    })
}

/// A flat square of `n` × `n` quads at height `z`, wound up (+z) or down.
fn square(n: u32, size: f32, z: f32, up: bool) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
    let at = |i: u32, j: u32| i * (n + 1) + j;
    let vertices = (0..=n)
        .flat_map(|i| (0..=n).map(move |j| [i as f32, j as f32, 0.0]))
        .map(|[x, y, _]| [x * size / n as f32, y * size / n as f32, z])
        .collect();
    let mut triangles = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let (a, b, c, d) = (at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1));
            if up {
                triangles.extend([[a, b, c], [a, c, d]]);
            } else {
                triangles.extend([[a, c, b], [a, d, c]]);
            }
        }
    }
    (vertices, triangles)
}

#[test]
fn heal_a_flat_sheet_closed_onto_itself_is_not_called_watertight() {
    // An open flat plate: filling its rim lays a second face on the first, enclosing nothing.
    let (v, t) = square(6, 50.0, 3.0, true);
    let r = heal::repair(&stl_of(v, t), &RepairOptions::default()).unwrap();
    assert_eq!(r.report.stages.orient.flat_shells, 1);
    assert!(!r.report.watertight);
    assert!(
        r.report
            .not_watertight
            .iter()
            .any(|why| why.contains("enclose no volume")),
        "{:?}",
        r.report.not_watertight
    );
}

#[test]
fn heal_a_thin_closed_plate_encloses_volume() {
    // Two faces 0.01 apart (3.5e-4 of the plate's diagonal, some 5 000 units in the last place
    // of its coordinates) and the four sides: a real solid, however thin.
    let n = 6;
    let (mut v, mut t) = square(n, 20.0, 0.0, false);
    let (top_v, top_t) = square(n, 20.0, 0.01, true);
    let base = v.len() as u32;
    v.extend(top_v);
    t.extend(top_t.iter().map(|f| f.map(|i| i + base)));
    // The sides join the rims of the two faces.
    let rim: Vec<u32> = (0..n)
        .chain((0..n).map(|i| i * (n + 1) + n))
        .chain((1..=n).rev().map(|j| n * (n + 1) + j))
        .chain((1..=n).rev().map(|i| i * (n + 1)))
        .collect();
    for k in 0..rim.len() {
        let (a, b) = (rim[k], rim[(k + 1) % rim.len()]);
        t.extend([[a, b, b + base], [a, b + base, a + base]]);
    }
    let r = heal::repair(&stl_of(v, t), &RepairOptions::default()).unwrap();
    assert_eq!(r.report.stages.orient.flat_shells, 0);
    assert!(r.report.watertight, "{:?}", r.report.not_watertight);
    assert!((r.report.volume - 4.0).abs() < 1e-3, "{}", r.report.volume);
}

/// A cylinder (radius `r`, height 20) whose wall has `wall` segments and whose caps (fans
/// from their centres, radius `cap_r`, turned by `turn` of a cap segment) have `caps`: each
/// face meshed on its own, as some exporters do.
fn cylinder_meshed_apart(wall: u32, caps: u32, r: f32, cap_r: f32, turn: f32) -> Vec<u8> {
    let h = 20.0f32;
    let at = |k: f32, n: u32, radius: f32, z: f32| {
        let a = std::f32::consts::TAU * k / n as f32;
        [radius * a.cos(), radius * a.sin(), z]
    };
    let mut v = Vec::new();
    let mut t = Vec::new();
    let mut add = |p: [[f32; 3]; 3]| {
        let base = v.len() as u32;
        v.extend(p);
        t.push([base, base + 1, base + 2]);
    };
    for k in 0..wall {
        let k = k as f32;
        let (a, b) = (at(k, wall, r, 0.0), at(k + 1.0, wall, r, 0.0));
        let (c, d) = (at(k + 1.0, wall, r, h), at(k, wall, r, h));
        add([a, b, c]);
        add([a, c, d]);
    }
    for k in 0..caps {
        let k = k as f32 + turn;
        add([
            [0.0, 0.0, h],
            at(k, caps, cap_r, h),
            at(k + 1.0, caps, cap_r, h),
        ]);
        add([
            [0.0, 0.0, 0.0],
            at(k + 1.0, caps, cap_r, 0.0),
            at(k, caps, cap_r, 0.0),
        ]);
    }
    stl_of(v, t)
}

#[test]
fn heal_caps_meshed_apart_from_a_curved_wall_are_joined_by_strips() {
    // The caps' rims lie off the wall's chords by the sagitta (far more than rounding, so
    // nothing is zipped): the strips join each cap to the wall, whether the two meshes share
    // vertices round the rim (64 and 48 segments: every 22.5°; 64 and 50: at 0° and 180°)
    // or none (the caps turned by half a segment).
    let wall_area = |n: f32| n / 2.0 * 100.0 * (std::f32::consts::TAU / n).sin();
    for (wall, caps, turn) in [(64, 48, 0.0), (64, 50, 0.0), (64, 48, 0.5), (40, 96, 0.25)] {
        let stl = cylinder_meshed_apart(wall, caps, 10.0, 10.0, turn);
        let rep = heal::repair(&stl, &RepairOptions::default()).unwrap();
        let case = format!("{wall} / {caps} turned {turn}: {:?}", rep.report);
        assert!(rep.report.watertight, "{case}");
        assert_eq!(rep.report.shells, 1, "{case}");
        // One strip per rim, or one per stretch between shared vertices.
        assert!(rep.report.stages.topology.strips >= 2, "{case}");
        assert_eq!(rep.report.stages.orient.flat_shells, 0, "{case}");
        assert_eq!(rep.report.stages.holes.found, 0, "{case}");
        let filled = rep.provenance.count(heal::provenance::mark::FILLED);
        assert_eq!(filled, rep.report.stages.topology.strip_facets, "{case}");
        // Between the two polygons' prisms (the strips lie between the rims).
        let (lo, hi) = {
            let (a, b) = (wall_area(wall as f32), wall_area(caps as f32));
            (a.min(b) as f64 * 20.0, a.max(b) as f64 * 20.0)
        };
        let vol = rep.report.volume;
        assert!(
            vol > lo * 0.9999 && vol < hi * 1.0001,
            "{vol} not in {lo}..{hi}: {case}"
        );
        // A repair of the output changes nothing.
        let out = rep.to_stl_bytes();
        let again = heal::repair(&out, &RepairOptions::default()).unwrap();
        assert_eq!(again.to_stl_bytes(), out, "{case}");
        assert_eq!(again.report.stages.topology.strips, 0, "{case}");
    }
}

#[test]
fn heal_caps_apart_from_their_wall_are_joined_by_the_ring_between() {
    // Caps of radius 9 on a wall of radius 10: a gap of 1 against rim edges of about 1, far
    // from the sliver a seam leaves, so no strip joins them. Each end is two loops in one
    // plane, the cap's inside the wall's and wound against it: a face with a hole, filled
    // between its rims (`islands`). Before, each cap was a shell of its own, its rim filled
    // onto itself (a flat shell), and the repair said it was not watertight.
    let rep = heal::repair(
        &cylinder_meshed_apart(64, 48, 10.0, 9.0, 0.0),
        &RepairOptions::default(),
    )
    .unwrap();
    let r = &rep.report;
    assert_eq!(r.stages.topology.strips, 0, "{r:?}");
    assert_eq!(r.stages.orient.flat_shells, 0, "{r:?}");
    assert!(
        r.watertight && r.shells == 1 && r.holes_filled == 4,
        "{r:?}"
    );
    // The wall's 64-gon, 20 high: the rings made the caps whole.
    let base = 0.5 * 64.0 * 100.0 * (std::f64::consts::TAU / 64.0).sin();
    assert!((r.volume - 20.0 * base).abs() < 1e-3, "{}", r.volume);
}

#[test]
fn heal_a_narrow_open_band_gets_caps_not_a_strip_over_itself() {
    // A short open tube (16 segments of ~3.9 round, 0.5 high, in two rows): its two rims run
    // alongside each other within a fraction of their edges, but the band's own surface lies
    // between them. A strip would fold back over it (a closed shell of no volume); the rims
    // are holes, filled as caps.
    let (r, rows, height) = (10.0f32, 2u32, 0.5f32);
    let at = |k: u32, row: u32| {
        let a = std::f32::consts::TAU * k as f32 / 16.0;
        [r * a.cos(), r * a.sin(), height * row as f32 / rows as f32]
    };
    let mut v = Vec::new();
    let mut t = Vec::new();
    for row in 0..=rows {
        for k in 0..16 {
            v.push(at(k, row));
        }
    }
    let id = |k: u32, row: u32| row * 16 + k % 16;
    for row in 0..rows {
        for k in 0..16 {
            let (a, b, c, d) = (
                id(k, row),
                id(k + 1, row),
                id(k + 1, row + 1),
                id(k, row + 1),
            );
            t.extend([[a, b, c], [a, c, d]]);
        }
    }
    let rep = heal::repair(&stl_of(v, t), &RepairOptions::default()).unwrap();
    let s = &rep.report.stages;
    assert_eq!(s.topology.strips, 0, "{:?}", rep.report);
    assert_eq!((s.holes.found, s.holes.filled), (2, 2), "{:?}", rep.report);
    assert!(rep.report.watertight, "{:?}", rep.report);
    let disc = 8.0 * r * r * (std::f32::consts::TAU / 16.0).sin();
    let expected = f64::from(disc * height);
    assert!(
        (rep.report.volume - expected).abs() < 1e-3 * expected,
        "{}",
        rep.report.volume
    );
}

/// Meshes one after the other, as one binary STL.
fn joined(parts: Vec<Mesh>) -> Vec<u8> {
    let mut m = Mesh::default();
    for part in parts {
        let base = m.vertices.len() as u32;
        m.vertices.extend_from_slice(&part.vertices);
        m.triangles
            .extend(part.triangles.iter().map(|t| t.map(|i| i + base)));
    }
    heal::stl::encode_binary(&m)
}

/// The signed volume of a closed mesh.
fn volume(m: &Mesh) -> f64 {
    m.triangles
        .iter()
        .map(|t| {
            let [a, b, c] = t.map(|i| m.vertices[i as usize].map(f64::from));
            (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                + a[2] * (b[0] * c[1] - b[1] * c[0]))
                / 6.0
        })
        .sum()
}

/// The mesh wound the other way round.
fn inverted(mut m: Mesh) -> Mesh {
    for t in &mut m.triangles {
        t.swap(1, 2);
    }
    m
}

#[test]
fn heal_small_parts_touching_or_crossing_another_are_kept() {
    // A 200 × 120 × 4 plate and six letters of 2 × 3 × 1.5 (1.7 % of the model's diagonal),
    // written as bodies of their own that share no vertex with the plate, as exporters write
    // an assembly: sunk 0.5 into it, set on it, and floating 0.5 above it (noise by the rule).
    for (lift, kept) in [(-0.5, 6), (0.0, 6), (0.5, 0)] {
        let mut parts = vec![generate::block([0.0; 3], [200.0, 120.0, 4.0])];
        for i in 0..6 {
            let x = 20.0 + 8.0 * i as f32;
            parts.push(generate::block(
                [x, 50.0, 4.0 + lift],
                [x + 2.0, 53.0, 5.5 + lift],
            ));
        }
        let r = heal::repair(&joined(parts), &RepairOptions::default()).unwrap();
        let s = &r.report.stages.shells;
        assert_eq!(
            (s.kept_touching, s.tiny_removed),
            (kept, 6 - kept),
            "lift {lift}: {s:?}"
        );
        assert!(!s.touch_limited);
        assert_eq!(r.report.shells, 1 + kept, "lift {lift}");
        assert!(
            r.report.watertight,
            "lift {lift}: {:?}",
            r.report.not_watertight
        );
    }
}

/// `n × n` cubes of side 1 on a pitch of 3 from `(x0, 0, 0)`: none touches another.
fn cube_grid(n: usize, x0: f32) -> Vec<Mesh> {
    let mut parts = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let (x, y) = (x0 + 3.0 * i as f32, 3.0 * j as f32);
            parts.push(generate::block([x, y, 0.0], [x + 1.0, y + 1.0, 1.0]));
        }
    }
    parts
}

#[test]
fn heal_a_model_made_only_of_small_pieces_keeps_them_all() {
    // 900 separate cubes, each 1.4 % of the layout's diagonal: by size alone every one is
    // noise and nothing would be left, but together they are the whole surface.
    let r = heal::repair(&joined(cube_grid(30, 0.0)), &RepairOptions::default()).unwrap();
    let s = &r.report.stages.shells;
    assert_eq!((s.tiny_removed, s.kept_as_parts), (0, 900), "{s:?}");
    assert!((s.tiny_area_share - 1.0).abs() < 1e-9, "{s:?}");
    assert_eq!(r.report.shells, 900);
    assert!(r.report.watertight, "{:?}", r.report.not_watertight);
    assert!((r.report.volume - 900.0).abs() < 1e-6 * 900.0);
}

#[test]
fn heal_many_small_parts_beside_a_large_one_are_kept_but_specks_are_not() {
    // A 60 × 60 × 2 plate and, 10 beside it, 400 separate cubes of side 1 (1.2 % of the
    // layout's diagonal each; together 24 % of the surface area): parts, kept. Two specks
    // of side 0.05 among them are debris: removed.
    let plate = || generate::block([0.0; 3], [60.0, 60.0, 2.0]);
    let mut parts = vec![plate()];
    parts.extend(cube_grid(20, 70.0));
    for x in [71.5, 101.5] {
        parts.push(generate::block([x, 1.5, 0.0], [x + 0.05, 1.55, 0.05]));
    }
    let r = heal::repair(&joined(parts.clone()), &RepairOptions::default()).unwrap();
    let s = &r.report.stages.shells;
    assert_eq!((s.tiny_removed, s.kept_as_parts), (2, 400), "{s:?}");
    let specks = 2.0 * 6.0 * 0.05 * 0.05;
    let want = (2400.0 + specks) / (10_080.0 + specks);
    assert!((s.tiny_area_share - want).abs() < 1e-9, "{s:?}");
    assert_eq!(r.report.shells, 401);
    assert!(r.report.watertight, "{:?}", r.report.not_watertight);
    // With the share check off, the size rule alone removes them.
    let off = RepairOptions {
        tiny_shell_max_area_share: 1.0,
        ..RepairOptions::default()
    };
    let r = heal::repair(&joined(parts), &off).unwrap();
    assert_eq!(r.report.stages.shells.tiny_removed, 402);
    assert_eq!(r.report.shells, 1);

    // The same plate with three specks of side 0.5 in the same place (0.06 % of the area):
    // noise, removed.
    let mut parts = vec![plate()];
    for i in 0..3 {
        let x = 70.0 + 20.0 * i as f32;
        parts.push(generate::block([x, 30.0, 0.0], [x + 0.5, 30.5, 0.5]));
    }
    let r = heal::repair(&joined(parts), &RepairOptions::default()).unwrap();
    let s = &r.report.stages.shells;
    assert_eq!((s.tiny_removed, s.kept_as_parts), (3, 0), "{s:?}");
    assert!(s.tiny_area_share > 0.0 && s.tiny_area_share < 1e-3, "{s:?}");
    assert_eq!(r.report.shells, 1);
}

#[test]
fn heal_small_voids_are_kept_and_small_islands_in_the_material_are_not() {
    // A 100 × 60 × 40 block holding five voids of radius 0.6 (1.7 % of the diagonal), wound
    // inward as voids come, and five spheres of the same size wound outward: islands of
    // material in material, which add nothing.
    let mut parts = vec![generate::block([0.0; 3], [100.0, 60.0, 40.0])];
    for i in 0..5 {
        let x = 20.0 + 15.0 * i as f32;
        parts.push(inverted(generate::sphere([x, 20.0, 20.0], 0.6, 200)));
        parts.push(generate::sphere([x, 40.0, 20.0], 0.6, 200));
    }
    let void = volume(&generate::sphere([0.0; 3], 0.6, 200));
    assert!(void > 0.8, "{void}");
    let r = heal::repair(&joined(parts), &RepairOptions::default()).unwrap();
    let s = &r.report.stages;
    assert_eq!(
        (s.shells.kept_touching, s.shells.tiny_removed),
        (5, 5),
        "{:?}",
        s.shells
    );
    assert_eq!(r.report.shells, 6);
    assert_eq!(s.orient.cavities, 5);
    assert!(r.report.watertight, "{:?}", r.report.not_watertight);
    assert_volume(&r, 240_000.0 - 5.0 * void);
}

#[test]
fn heal_contact_test_past_its_budget_keeps_every_small_shell() {
    // A round bar 1 000 long meshed as needles that each run its whole length (every one
    // covers the contact grid from end to end), and 2 000 small tetrahedra floating along it
    // inside its bounding box but outside the bar: testing every needle against every
    // tetrahedron would cost 1.2 M exact tests, far past the budget (eight per facet). The
    // test stops there and keeps them all rather than guess.
    let sides = 300;
    let mut bar = Mesh::default();
    for end in [0.0f32, 1000.0] {
        for i in 0..sides {
            let a = std::f32::consts::TAU * i as f32 / sides as f32;
            bar.vertices.push([end, 5.0 * a.cos(), 5.0 * a.sin()]);
        }
    }
    for i in 0..sides as u32 {
        let j = (i + 1) % sides as u32;
        let n = sides as u32;
        bar.triangles.extend([[i, j, j + n], [i, j + n, i + n]]);
        if i > 0 && j > 0 {
            bar.triangles.extend([[0, j, i], [n, n + i, n + j]]);
        }
    }
    let mut parts = vec![bar];
    for k in 0..2_000 {
        let (x, y, z) = (0.5 * k as f32, 4.2, 4.2);
        let p = [[x, y, z], [x + 0.3, y, z], [x, y + 0.3, z], [x, y, z + 0.3]];
        parts.push(Mesh {
            vertices: p.to_vec(),
            triangles: vec![[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]],
        });
    }
    let r = heal::repair(&joined(parts), &RepairOptions::default()).unwrap();
    let s = &r.report.stages.shells;
    assert!(s.touch_limited, "{s:?}");
    assert_eq!((s.kept_touching, s.tiny_removed), (2_000, 0), "{s:?}");
    assert!(r.report.watertight, "{:?}", r.report.not_watertight);
}
