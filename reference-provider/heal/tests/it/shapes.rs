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

/// `mesh` with a crack at every edge that two of its facets share: one facet of the pair is
/// split at the edge's midpoint and the other is not (a T-junction, as CAD exporters write
/// where two patches meet), so each edge is one boundary edge on one side and two on the other.
fn cracked(mesh: &heal::Mesh) -> heal::Mesh {
    let mut vertices = mesh.vertices.clone();
    let mut triangles = mesh.triangles.clone();
    let mut split = vec![false; triangles.len()];
    let mut extra = Vec::new();
    for f in 0..mesh.triangles.len() {
        for k in 0..3 {
            let (a, b) = (triangles[f][k], triangles[f][(k + 1) % 3]);
            let Some(g) = (0..triangles.len()).find(|&g| {
                let t = triangles[g];
                (0..3).any(|j| (t[j], t[(j + 1) % 3]) == (b, a))
            }) else {
                continue;
            };
            if split[f] || split[g] {
                continue;
            }
            split[f] = true;
            split[g] = true;
            let (pa, pb) = (vertices[a as usize], vertices[b as usize]);
            let m = vertices.len() as u32;
            vertices.push([0, 1, 2].map(|i| (pa[i] + pb[i]) / 2.0));
            let c = triangles[f][(k + 2) % 3];
            triangles[f] = [a, m, c];
            extra.push([m, b, c]);
            break;
        }
    }
    triangles.extend(extra);
    heal::Mesh {
        vertices,
        triangles,
    }
}

#[test]
fn heal_bodies_a_clearance_apart_with_cracks_stay_apart() {
    // Parts a small clearance apart (under the stitch's reach of 1e-3 of the model's size), each
    // with T-junction cracks along its edges: two blocks side by side and three plates stacked
    // (a print-in-place assembly, parts laid out tight). A crack's edge lies along the other
    // part's edge a clearance away, whole, so a stitch could sew the parts together; the
    // crack's own midpoint lies on it, so it is the zip's, and the parts stay apart.
    let pair = vec![
        generate::block([0.0; 3], [10.0; 3]),
        generate::block([10.01, 0.0, 0.0], [20.01, 10.0, 10.0]),
    ];
    let stack = (0..3)
        .map(|i| {
            let z = i as f32 * 3.02;
            generate::block([0.0, 0.0, z], [30.0, 30.0, z + 3.0])
        })
        .collect::<Vec<_>>();
    for (name, bodies, volume) in [("pair", pair, 2000.0), ("stack", stack, 8100.0)] {
        let n = bodies.len() as u64;
        let model = generate::parts(
            bodies
                .iter()
                .map(|m| ("part", cracked(m)))
                .collect::<Vec<_>>(),
        );
        for (noise, seed) in [(0.0, 61), (1e-6, 62)] {
            let g = generate::soup(&model, seed, noise, 0.0, None);
            let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
            assert!(
                r.report.watertight,
                "{name}, noise {noise}: {:#?}",
                r.report
            );
            assert_eq!(r.report.shells, n, "{name}, noise {noise}: {:#?}", r.report);
            assert!(
                (r.report.volume - volume).abs() < 1e-3 * volume,
                "{name}, noise {noise}: volume {}",
                r.report.volume
            );
            let v = verify(&r.to_stl_bytes());
            assert!(v.consistent, "{name}, noise {noise}: {v:?}");
            assert!(v.shells.iter().all(|s| s.1 > 0.0), "{name}: outward: {v:?}");
        }
    }
}

/// A box `[0, 4] × [0, 3] × [0, 2]` whose faces are fans round a point inside each (four
/// facets a face), without the six facets round its corner at the origin: the corner vertex
/// is gone with them. (With the faces' centres, the hole's rim would be planar: the hole
/// could as well be a chamfer's, and a flat fill is kept.)
fn box_without_a_corner() -> heal::Mesh {
    let (a, b, c) = (4.0, 3.0, 2.0);
    let faces: [[[f32; 3]; 4]; 6] = [
        [[0.0, 0.0, 0.0], [0.0, b, 0.0], [a, b, 0.0], [a, 0.0, 0.0]],
        [[0.0, 0.0, c], [a, 0.0, c], [a, b, c], [0.0, b, c]],
        [[0.0, 0.0, 0.0], [a, 0.0, 0.0], [a, 0.0, c], [0.0, 0.0, c]],
        [[0.0, b, 0.0], [0.0, b, c], [a, b, c], [a, b, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, c], [0.0, b, c], [0.0, b, 0.0]],
        [[a, 0.0, 0.0], [a, b, 0.0], [a, b, c], [a, 0.0, c]],
    ];
    let mut mesh = heal::Mesh::default();
    for face in faces {
        let w = [0.1, 0.2, 0.3, 0.4];
        let centre: [f32; 3] = std::array::from_fn(|k| (0..4).map(|i| w[i] * face[i][k]).sum());
        for i in 0..4 {
            let t = [face[i], face[(i + 1) % 4], centre];
            if t.contains(&[0.0; 3]) {
                continue;
            }
            let base = mesh.vertices.len() as u32;
            mesh.vertices.extend(t);
            mesh.triangles.push([base, base + 1, base + 2]);
        }
    }
    mesh
}

#[test]
fn heal_a_box_corner_lost_with_its_facets_is_given_back() {
    // The hole runs over three faces, so every triangulation of it alone cuts the corner off
    // (the volume falls short of 24); the planes round it meet at the corner, which the fill
    // puts back. Exact, and as a soup with noise; also turned about a slanted axis and moved
    // 1000 out, where `f32` rounds every coordinate, so that the faces are planes only up to
    // that rounding.
    let turned = |m: &heal::Mesh, angle: f64| {
        let k = [1.0, 2.0, 3.0].map(|x: f64| x / 14f64.sqrt());
        let (s, c) = angle.sin_cos();
        let mut m = m.clone();
        for p in &mut m.vertices {
            let v = p.map(f64::from);
            let kv = k[0] * v[0] + k[1] * v[1] + k[2] * v[2];
            let kxv = [
                k[1] * v[2] - k[2] * v[1],
                k[2] * v[0] - k[0] * v[2],
                k[0] * v[1] - k[1] * v[0],
            ];
            // Rodrigues' rotation, then the move.
            *p = std::array::from_fn(|i| {
                (v[i] * c + kxv[i] * s + k[i] * kv * (1.0 - c) + 1000.0) as f32
            });
        }
        m
    };
    let plain = box_without_a_corner();
    let cases = [
        (plain.clone(), 0.0, 61, [0.0; 3]),
        (plain.clone(), 1e-6, 62, [0.0; 3]),
        (turned(&plain, 0.7), 0.0, 63, [1000.0; 3]),
        (turned(&plain, 2.1), 1e-6, 64, [1000.0; 3]),
    ];
    for (mesh, noise, seed, at) in cases {
        let model = generate::parts(vec![("box", mesh)]);
        assert_eq!(model.mesh.triangles.len(), 18);
        let g = generate::soup(&model, seed, noise, 0.10, None);
        let r = heal::repair(&g.stl, &RepairOptions::default()).unwrap();
        let holes = &r.report.stages.holes;
        assert_eq!((holes.filled, holes.corners_restored), (1, 1), "{holes:?}");
        assert!(r.report.watertight, "noise {noise}: {:#?}", r.report);
        assert!(
            (r.report.volume - 24.0).abs() < 1e-3,
            "noise {noise}: {}",
            r.report.volume
        );
        let v = verify(&r.to_stl_bytes());
        assert!(v.consistent && v.shells.len() == 1, "{v:?}");
        let corner = r
            .mesh
            .vertices
            .iter()
            .map(|p| {
                (0..3)
                    .map(|i| (f64::from(p[i]) - at[i]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(f64::INFINITY, f64::min);
        assert!(
            corner < 1e-4 + 1e-6 * at[0],
            "noise {noise}: nearest vertex to the corner {corner}"
        );
    }
}
