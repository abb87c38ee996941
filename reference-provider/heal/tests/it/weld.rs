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
/// real edge much shorter than the weld's bound. Facets as corners.
fn tetra_facets(gap: f32) -> [[[f32; 3]; 3]; 6] {
    let (a, b, c, d) = (
        [0.0f32, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    );
    let e = [gap, 0.0, 0.0];
    [
        [a, c, e],
        [e, c, b],
        [a, e, d],
        [e, b, d],
        [a, d, c],
        [b, c, d],
    ]
}

/// [`tetra_facets`] as binary STL.
fn tetra_with_short_edge(gap: f32) -> Vec<u8> {
    let soup: Vec<[f32; 3]> = tetra_facets(gap).iter().flatten().copied().collect();
    heal::stl::encode_soup(&soup, &[])
}

/// [`tetra_facets`] as a soup whose every corner is its own copy (y moved by a different
/// multiple of 1e-7, so no two copies are bit-identical), the facets round A and E that lack
/// the short edge written first.
fn noisy_tetra_lax_copies_first(gap: f32) -> Vec<u8> {
    let f = tetra_facets(gap);
    let soup: Vec<[f32; 3]> = [f[4], f[1], f[3], f[5], f[0], f[2]]
        .iter()
        .flatten()
        .enumerate()
        .map(|(k, &p)| [p[0], p[1] + (k as f32 - 9.0) * 1e-7, p[2]])
        .collect();
    heal::stl::encode_soup(&soup, &[])
}

#[test]
fn heal_default_weld_keeps_a_short_edge_whose_lax_copies_come_first() {
    // The edge (4e-5, half the weld's bound) is 40 times the noise. The first corner of the
    // cell is A's copy in a large facet (limit: the bound); taken in corner order, E's copy
    // in the next large facet joined it, and the facets round E were moved onto A (4 facets
    // left, 2 edges of three). Taken from the smallest limit up, A's and E's copies in the
    // facets on the short edge come first and each copy joins its own vertex.
    let r = heal::repair(
        &noisy_tetra_lax_copies_first(4e-5),
        &RepairOptions::default(),
    )
    .unwrap();
    let rep = &r.report;
    assert_eq!(rep.output_facets, 6, "{rep:#?}");
    assert_eq!(rep.output_vertices, 5, "{rep:#?}");
    assert_eq!(rep.stages.weld.collapsed_facets, 0, "{rep:#?}");
    assert!(rep.stages.weld.largest_merge < 2e-6, "{rep:#?}");
    assert!(rep.watertight, "{rep:#?}");
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent && v.outward, "{v:?}");
}

/// A closed tetrahedron A, B, X, Y with a short edge A-B (4e-4; the others about 10), as a soup:
/// every copy exact except A's copy in the facet A-Y-X, moved 1.5e-4 along +y, and B's copy in
/// the facet B-X-Y, moved 1.5e-4 along -y. Those two facets are large (their corners' limit is
/// the weld's bound, 7.1e-4, wider than the edge); the copies on the short edge (limit 1e-4,
/// a quarter of it) are not within their limit of either moved copy.
fn tetra_with_moved_lax_copies() -> Vec<u8> {
    let (a, b, x, y) = (
        [0.0f32, 0.0, 0.0],
        [4e-4, 0.0, 0.0],
        [0.0, 10.0, 0.0],
        [0.0, 0.0, 10.0],
    );
    let (a3, b3) = ([0.0f32, 1.5e-4, 0.0], [4e-4, -1.5e-4, 0.0]);
    let facets = [[a, x, b], [a, b, y], [a3, y, x], [b3, x, y]];
    let soup: Vec<[f32; 3]> = facets.iter().flatten().copied().collect();
    heal::stl::encode_soup(&soup, &[])
}

#[test]
fn heal_default_weld_sends_a_copy_to_its_nearest_vertex_not_across_a_short_edge() {
    // The moved copies are 5e-4 apart, within their limits of each other: joined as the first
    // match, B's copy went to A (the two large facets became one facet both ways round, and
    // nothing printable was left). Each moved copy's nearest representative is its own
    // vertex's copy on the short edge, within half the edge: the weld leaves it apart rather
    // than take it across the edge, and the stitch closes the crack.
    let r = heal::repair(&tetra_with_moved_lax_copies(), &RepairOptions::default()).unwrap();
    let rep = &r.report;
    assert_eq!(rep.output_facets, 4, "{rep:#?}");
    assert_eq!(rep.output_vertices, 4, "{rep:#?}");
    assert_eq!(rep.stages.weld.collapsed_facets, 0, "{rep:#?}");
    assert!(rep.watertight, "{rep:#?}");
    assert!((rep.volume - 4e-4 * 100.0 / 6.0).abs() < 1e-7, "{rep:#?}");
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent && v.outward, "{v:?}");
}

/// A closed octahedron whose top vertex was computed twice, as a boolean or a CAD kernel
/// leaves a vertex: half its fan on a copy `lift` above it, and two slivers on the edge
/// between the two closing the gap. With `lift` of a unit or two in the last place, both
/// vertices are closed by the exact weld.
fn octahedron_with_split_top(lift: f32) -> Vec<u8> {
    let u = [0.0f32, 0.0, 1.0];
    let w = [0.0f32, 0.0, 1.0 + lift];
    let d = [0.0f32, 0.0, -1.0];
    let r = [
        [1.0f32, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
    ];
    let mut facets = vec![
        [u, r[0], r[1]],
        [u, r[1], r[2]],
        [w, r[2], r[3]],
        [w, r[3], r[0]],
    ];
    facets.extend((0..4).map(|i| [d, r[(i + 1) % 4], r[i]]));
    facets.push([u, r[2], w]);
    facets.push([u, w, r[0]]);
    let soup: Vec<[f32; 3]> = facets.iter().flatten().copied().collect();
    heal::stl::encode_soup(&soup, &[])
}

#[test]
fn heal_default_weld_merges_a_vertex_written_twice_a_rounding_apart() {
    // Two units in the last place of 1 (the largest z): one point up to rounding, merged in
    // the weld (the slivers then repeat a vertex). Before the rounding rule both copies were
    // closed and stayed apart; here the slivers were then removed as flat and the stitch
    // closed the crack, but on larger models the holes stage filled it with the same slivers
    // again (the foreign models' `rounding_split` cases).
    let lift = 2.0 * f32::EPSILON;
    let r = heal::repair(&octahedron_with_split_top(lift), &RepairOptions::default()).unwrap();
    let rep = &r.report;
    assert_eq!(rep.output_facets, 8, "{rep:#?}");
    assert_eq!(rep.output_vertices, 6, "{rep:#?}");
    assert!(rep.stages.weld.rounding_merged > 0, "{rep:#?}");
    assert_eq!(rep.stages.weld.collapsed_facets, 0, "{rep:#?}");
    assert_eq!(rep.stages.clean.repeated_vertex_removed, 2, "{rep:#?}");
    let v = verify(&r.to_stl_bytes());
    assert!(v.watertight && v.consistent && v.outward, "{v:?}");
    assert!((v.volume - 4.0 / 3.0).abs() < 1e-6, "{v:?}");
    // Far more than the rounding (8 units): a real vertex, kept with its facets.
    let r = heal::repair(
        &octahedron_with_split_top(64.0 * f32::EPSILON),
        &RepairOptions::default(),
    )
    .unwrap();
    assert_eq!(r.report.output_facets, 10, "{:#?}", r.report);
    assert_eq!(r.report.stages.weld.rounding_merged, 0);
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

/// Repair `g` with the default options and judge it against its clean model: watertight,
/// every shell kept, no piece removed as a tiny shell, at most `max_filled` facets added by
/// hole filling (the facet count otherwise the clean model's).
fn assert_healed_whole(name: &str, g: &generate::Generated, max_filled: u64) {
    let r =
        heal::repair(&g.stl, &RepairOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let rep = &r.report;
    assert!(rep.watertight, "{name}: {rep:#?}");
    assert_eq!(
        rep.shells as usize,
        g.clean.shells.len(),
        "{name}: {rep:#?}"
    );
    assert_eq!(rep.stages.shells.tiny_removed, 0, "{name}: {rep:#?}");
    let added = rep.stages.holes.facets_added;
    assert!(added <= max_filled, "{name}: {rep:#?}");
    assert_eq!(rep.stages.weld.collapsed_facets, 0, "{name}");
    assert_eq!(
        rep.output_facets,
        g.clean.mesh.triangles.len() as u64 + added,
        "{name}: {rep:#?}"
    );
    assert_quality(name, &r.to_stl_bytes(), &g.clean);
}

/// Fans of needles round a vertex of high valence (a UV sphere's poles, a cap fanned from its
/// centre) with noise near the spacing of the fan's rim: the rim's edges (0.004 on the
/// standard model's small sphere at 200 000 facets, 0.0008 on the tube's caps) are only 2–4
/// times the spread of a vertex's copies (up to 0.002 and 0.0004 apart at 1e-5 of the
/// diagonal per coordinate), so the weld — which may never join the two ends of an edge —
/// leaves pieces of the apex and of the rim vertices apart. The stitch sews them back by whole
/// edges, fragments that share an endpoint included; a few gaps of 3–4 edges where no edge
/// had a clear best match are left to hole filling (a few dozen facets of 200 000). Before,
/// the standard model came out with 13 shells (219 pieces of real surface removed as tiny,
/// 250 holes filled), not watertight.
#[test]
fn heal_fans_of_needles_with_noise_up_to_1e5_are_sewn_whole() {
    for (seed, soup_seed, noise) in [(7, 9, 1e-5), (3, 9, 1e-5), (7, 5, 3e-6)] {
        let g = generate::soup(
            &generate::clean_model(seed, 200_000),
            soup_seed,
            noise,
            0.1,
            Some(1),
        );
        assert_healed_whole(
            &format!("standard model {seed}/{soup_seed}, noise {noise}"),
            &g,
            40,
        );
    }
    // A tube of 8 000 sectors: two caps of 8 000 needles each round one centre, sides of
    // long thin facets.
    let tube = generate::parts(vec![(
        "tube",
        generate::tube([0.0; 3], 1.0, 10.0, 8_000, 2),
    )]);
    for (seed, noise) in [(1, 1e-6), (2, 1e-5)] {
        let g = generate::soup(&tube, seed, noise, 0.1, None);
        assert_healed_whole(&format!("tube, noise {noise}"), &g, 40);
    }
}

#[test]
fn heal_a_stray_facet_far_away_does_not_widen_the_weld() {
    // Two blocks of 10 a clearance of 0.01 apart, and one stray facet a thousand units away,
    // as careless exports leave (a point at the origin, a forgotten construction facet): it
    // makes the bounding box 80 times larger, but not the model, so the bounds the automatic
    // weld and stitch take as fractions of its size must not grow with it. Before, the weld's
    // bound of 5e-5 of the box (0.07) merged the two blocks' facing corners.
    let model = generate::parts(vec![
        ("a", generate::block([0.0; 3], [10.0; 3])),
        ("b", generate::block([10.01, 0.0, 0.0], [20.01, 10.0, 10.0])),
    ]);
    for (noise, seed) in [(0.0, 71), (1e-6, 72)] {
        let g = generate::soup(&model, seed, noise, 0.1, None);
        let mut corners: Vec<[f32; 3]> = crate::support::decode(&g.stl)
            .into_iter()
            .flatten()
            .collect();
        corners.extend([
            [1000.0, 1000.0, 0.0],
            [1000.5, 1000.0, 0.0],
            [1000.0, 1000.5, 0.0],
        ]);
        let stl = heal::stl::encode_soup(&corners, &[]);
        let r = heal::repair(&stl, &RepairOptions::default()).unwrap();
        let name = format!("noise {noise}");
        let rep = &r.report;
        assert!(rep.watertight, "{name}: {rep:#?}");
        assert_eq!((rep.shells, rep.output_facets), (2, 24), "{name}: {rep:#?}");
        assert!((rep.volume - 2000.0).abs() < 0.1, "{name}: {}", rep.volume);
        assert!(
            rep.stages.weld.tolerance < 0.005,
            "{name}: {:?}",
            rep.stages.weld
        );
        let v = verify(&r.to_stl_bytes());
        assert!(
            v.consistent && v.shells.iter().all(|s| s.1 > 0.0),
            "{name}: {v:?}"
        );
    }
    // The same for the tiny-shell rule: a unit cube beside a sphere of radius 2.5 is a part
    // (1.7 across, a fifth of the model's size), not noise, however far the stray facet lies.
    let model = generate::parts(vec![
        ("sphere", generate::sphere([0.0; 3], 2.5, 2_000)),
        ("cube", generate::block([3.0, 0.0, 0.0], [4.0, 1.0, 1.0])),
    ]);
    let g = generate::soup(&model, 73, 0.0, 0.1, None);
    let mut corners: Vec<[f32; 3]> = crate::support::decode(&g.stl)
        .into_iter()
        .flatten()
        .collect();
    corners.extend([
        [-500.0, -500.0, 0.0],
        [-499.5, -500.0, 0.0],
        [-500.0, -499.5, 0.0],
    ]);
    let stl = heal::stl::encode_soup(&corners, &[]);
    let r = heal::repair(&stl, &RepairOptions::default()).unwrap();
    let s = &r.report.stages.shells;
    assert_eq!((r.report.shells, s.tiny_removed), (2, 1), "{:#?}", r.report);
    assert_eq!(r.report.output_facets, g.clean.mesh.triangles.len() as u64);
}

#[test]
fn heal_a_thin_part_far_out_along_one_axis_keeps_its_walls_apart() {
    // A sphere squashed into a disc 400 long, 20 wide and 1 thick, placed 400 000 units out
    // along x only (machine coordinates: f32 keeps about 0.03 there along x, but 3e-5 along
    // z, where the part lies at 400). The weld's floor for rounding noise (16 ulp of the
    // largest coordinate) was one number for every axis: 0.76, taken from x, so it merged
    // the disc's top and bottom vertices (up to 0.64 apart), across z, where rounding is a
    // thousand times finer, and the part came out in 7 pieces, not watertight.
    let sphere = generate::sphere([0.0; 3], 10.0, 1_200);
    let mut model = generate::parts(vec![("disc", sphere)]);
    for v in &mut model.mesh.vertices {
        *v = [v[0] * 20.0 + 400_000.0, v[1], v[2] * 0.05 + 400.0];
    }
    let volume = verify(&heal::stl::encode_binary(&model.mesh))
        .shells
        .iter()
        .map(|s| s.1)
        .sum::<f64>();
    for (noise, seed) in [(0.0, 81), (1e-6, 82)] {
        let g = generate::soup(&model, seed, noise, 0.1, None);
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        let name = format!("noise {noise}");
        let rep = &r.report;
        assert!(rep.watertight, "{name}: {rep:#?}");
        assert_eq!(rep.shells, 1, "{name}: {rep:#?}");
        assert_eq!(rep.stages.weld.collapsed_facets, 0, "{name}");
        assert!(
            (rep.volume - volume).abs() < 5e-3 * volume,
            "{name}: {} against {volume}",
            rep.volume
        );
    }
}

#[test]
fn heal_exact_closed_parts_closer_than_the_weld_bound_stay_apart() {
    // Parts written exactly (every vertex's copies bit-identical, so the exact weld closes
    // each one) a clearance apart that is under the automatic bound (5e-5 of a size of about
    // 35: 1.7e-3): two blocks 1e-4 apart side by side, and two plates 2e-4 apart stacked on
    // them. No vertex shows noise to weld, so none may be merged: before, the blocks' facing
    // corners and the plates' were welded, and the parts came out joined, not watertight.
    let model = generate::parts(vec![
        ("a", generate::block([0.0; 3], [10.0; 3])),
        (
            "b",
            generate::block([10.0001, 0.0, 0.0], [20.0001, 10.0, 10.0]),
        ),
        (
            "c",
            generate::block([0.0, 0.0, 10.0002], [20.0, 10.0, 11.0002]),
        ),
        (
            "d",
            generate::block([0.0, 0.0, 11.0004], [20.0, 10.0, 12.0004]),
        ),
    ]);
    let g = generate::soup(&model, 91, 0.0, 0.1, None);
    let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
    let rep = &r.report;
    assert!(rep.watertight, "{rep:#?}");
    assert_eq!((rep.shells, rep.output_facets), (4, 48), "{rep:#?}");
    assert_eq!(rep.stages.weld.tolerance_merged, 0, "{:?}", rep.stages.weld);
    assert!((rep.volume - 2400.0).abs() < 0.01, "{}", rep.volume);
    let v = verify(&r.to_stl_bytes());
    assert!(v.consistent && v.shells.iter().all(|s| s.1 > 0.0), "{v:?}");
    // The same parts with a facet of each written twice (a duplicate pairs the edges at its
    // corners too, but is not a closed surface): still four whole parts.
    let mut corners: Vec<[f32; 3]> = crate::support::decode(&g.stl)
        .into_iter()
        .flatten()
        .collect();
    for f in [0, 12, 24, 36] {
        let t: Vec<[f32; 3]> = corners[3 * f..3 * f + 3].to_vec();
        corners.extend(t);
    }
    let r = heal::repair(
        &heal::stl::encode_soup(&corners, &[]),
        &RepairOptions::default(),
    )
    .unwrap();
    let rep = &r.report;
    assert!(rep.watertight, "{rep:#?}");
    assert_eq!((rep.shells, rep.output_facets), (4, 48), "{rep:#?}");
}

#[test]
fn heal_output_does_not_depend_on_the_number_of_threads() {
    // The weld cuts its sorted corners into one chunk per few threads; what it measures (the
    // noise that decides which short edges count) comes from all of them, so the repaired
    // file is the same on any machine. (Measured per chunk instead, the soup came out
    // differently with 1 and 7 threads.)
    let soup = generate::soup(&generate::clean_model(1, 200_000), 9, 2e-5, 0.1, Some(1));
    let noisy = generate::model(
        32,
        40_000,
        &generate::Defects {
            noise: true,
            noise_amplitude: 3e-6,
            ..generate::Defects::all()
        },
    );
    for (name, stl) in [
        ("soup 2e-5", &soup.stl),
        ("all defects, noise 3e-6", &noisy.stl),
    ] {
        let heal_with = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| heal::repair(stl, &RepairOptions::default()))
                .unwrap()
                .to_stl_bytes()
        };
        let one = heal_with(1);
        for threads in [2, 3, 7] {
            assert!(
                heal_with(threads) == one,
                "{name}: {threads} threads differ from one"
            );
        }
    }
}

/// `mesh` with `count` of its vertices (spread over it) each computed twice, as a boolean
/// leaves a vertex where two intersection curves nearly meet: half the fan round the vertex on
/// a copy `gap` away along x, and two slivers on the short edge between the two.
fn split_vertices(mesh: &heal::Mesh, count: usize, gap: f32) -> heal::Mesh {
    let mut m = mesh.clone();
    let mut used = vec![false; m.vertices.len()];
    let step = m.vertices.len() / count;
    let mut done = 0;
    for u in (0..m.vertices.len()).step_by(step.max(1)) {
        if done == count {
            break;
        }
        let fan: Vec<usize> = (0..m.triangles.len())
            .filter(|&i| m.triangles[i].contains(&(u as u32)))
            .collect();
        if fan.len() < 4
            || fan
                .iter()
                .any(|&i| m.triangles[i].iter().any(|&v| used[v as usize]))
        {
            continue;
        }
        // The fan in order round u: facet (u, a, b) leads to the one starting at b.
        let next: std::collections::HashMap<u32, (u32, usize)> = fan
            .iter()
            .map(|&i| {
                let t = m.triangles[i];
                let k = t.iter().position(|&v| v == u as u32).unwrap();
                (t[(k + 1) % 3], (t[(k + 2) % 3], i))
            })
            .collect();
        let mut ring = vec![
            m.triangles[fan[0]][(m.triangles[fan[0]]
                .iter()
                .position(|&v| v == u as u32)
                .unwrap()
                + 1)
                % 3],
        ];
        while ring.len() < fan.len() {
            ring.push(next[ring.last().unwrap()].0);
        }
        let mut p = m.vertices[u];
        p[0] += gap;
        m.vertices.push(p);
        let w = (m.vertices.len() - 1) as u32;
        let half = ring.len() / 2;
        for r in &ring[half..] {
            let t = &mut m.triangles[next[r].1];
            *t = t.map(|v| if v == u as u32 { w } else { v });
        }
        m.triangles.push([u as u32, ring[half], w]);
        m.triangles.push([u as u32, w, ring[0]]);
        for &v in ring.iter().chain(&[u as u32]) {
            used[v as usize] = true;
        }
        used.push(true);
        done += 1;
    }
    assert_eq!(done, count);
    m
}

/// A real edge shorter than the noise cannot be told from the noise: its ends are merged
/// rather than left as pieces of the surface. A sphere with 40 vertices computed twice a
/// short edge apart (slivers on it, as OpenSCAD's CGAL writes where intersection curves of a
/// boolean nearly meet: 1e-5 edges on a sphere of radius 20 bored by two cylinders), written
/// as a soup whose noise is 7 to 10 times that edge. Before, the weld kept the short edges'
/// ends apart (their facets' limits, a quarter of the edge, are below the noise), the
/// copies round them did not join, and the surface fell into pieces: 26 of them removed as
/// tiny shells, holes filled, non-manifold edges, not watertight.
#[test]
fn heal_a_real_edge_shorter_than_the_noise_is_merged_not_torn_apart() {
    let sphere = generate::sphere([0.0; 3], 10.0, 8_000);
    let diagonal = 20.0 * 3f64.sqrt();
    for (edge, noise) in [(1e-6, 0.0), (1.5e-7, 1e-6), (1e-6, 1e-5)] {
        let split = split_vertices(&sphere, 40, (edge * diagonal) as f32);
        let facets = split.triangles.len() as u64;
        let model = generate::parts(vec![("sphere", split)]);
        for seed in [1, 2, 3] {
            let g = generate::soup(&model, seed, noise, 0.1, None);
            let name = format!("edge {edge}, noise {noise}, seed {seed}");
            let r = heal::repair(&g.stl, &RepairOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let rep = &r.report;
            assert!(rep.watertight, "{name}: {rep:#?}");
            assert_eq!(rep.shells, 1, "{name}: {rep:#?}");
            assert_eq!(rep.stages.shells.tiny_removed, 0, "{name}: {rep:#?}");
            // Exact copies: every short edge kept with its slivers (but those flat up to
            // rounding). Noise 7 to 10 times the edge: each edge merged, its two slivers gone.
            if noise == 0.0 {
                let flat = rep.stages.clean.degenerate_removed;
                assert!(flat <= 4, "{name}: {rep:#?}");
                assert_eq!(rep.output_facets + flat, facets, "{name}: {rep:#?}");
            } else {
                assert_eq!(rep.output_facets, facets - 80, "{name}: {rep:#?}");
            }
            let v = verify(&r.to_stl_bytes());
            assert!(v.watertight && v.consistent && v.outward, "{name}: {v:?}");
            let clean = sphere.signed_volume();
            assert!(
                (v.volume - clean).abs() < 1e-3 * clean,
                "{name}: {v:?} vs {clean}"
            );
        }
    }
}
