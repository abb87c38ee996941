//! Deterministic test models: clean shapes at any facet count and defect injectors.
//!
//! Used by the test suite, the benches, the bench script and the service's tests/demo. The same
//! seed and facet count always give the same bytes.
//!
//! The standard model ([`clean_model`]) has four shells: an outer sphere with a spherical
//! cavity nested inside it (wound inward), a torus beside it, and a smaller sphere. The
//! defect injectors ([`Defects`]) then break it the ways real files are broken:
//!
//! ```
//! use fixmyprint_heal::generate::{self, Defects};
//!
//! let all = generate::broken_model(1, 10_000); // binary STL with every defect
//! assert!(all.len() > 84 + 50 * 10_000);
//! let only_holes = generate::model(1, 10_000, &Defects { holes: 5, ..Defects::none() });
//! assert_eq!(only_holes.clean.shells.len(), 4);
//! ```

use std::f64::consts::PI;

use rayon::prelude::*;

use crate::{Bbox, Mesh, stl};

/// A small deterministic random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Make every closed surface of `m` face outward (by its signed volume).
fn outward(mut m: Mesh) -> Mesh {
    if m.signed_volume() < 0.0 {
        for t in &mut m.triangles {
            t.swap(1, 2);
        }
    }
    m
}

/// A UV sphere with about `target_facets` facets (at least 8), facing outward.
pub fn sphere(center: [f32; 3], radius: f32, target_facets: usize) -> Mesh {
    sphere_phase(center, radius, target_facets, 0.0)
}

fn sphere_phase(center: [f32; 3], radius: f32, target_facets: usize, phase: f64) -> Mesh {
    // facets = 2 · segments · (rings − 1)
    let bands = ((target_facets as f64 / 4.0).sqrt().round() as usize).max(2);
    let segments = (target_facets / (2 * bands)).max(4);
    let rings = bands + 1;
    let r = f64::from(radius);
    let c = center.map(f64::from);
    let mut vertices = vec![[c[0], c[1], c[2] + r]];
    for i in 1..rings {
        let th = PI * i as f64 / rings as f64;
        for j in 0..segments {
            let ph = 2.0 * PI * j as f64 / segments as f64 + phase;
            vertices.push([
                c[0] + r * th.sin() * ph.cos(),
                c[1] + r * th.sin() * ph.sin(),
                c[2] + r * th.cos(),
            ]);
        }
    }
    vertices.push([c[0], c[1], c[2] - r]);
    let south = (vertices.len() - 1) as u32;
    let at = |i: usize, j: usize| (1 + (i - 1) * segments + j % segments) as u32;
    let mut triangles = Vec::with_capacity(2 * segments * (rings - 1));
    for j in 0..segments {
        triangles.push([0, at(1, j), at(1, j + 1)]);
        triangles.push([south, at(rings - 1, j + 1), at(rings - 1, j)]);
    }
    for i in 1..rings - 1 {
        for j in 0..segments {
            triangles.push([at(i, j), at(i + 1, j), at(i + 1, j + 1)]);
            triangles.push([at(i, j), at(i + 1, j + 1), at(i, j + 1)]);
        }
    }
    outward(Mesh {
        vertices: vertices.into_iter().map(|p| p.map(|x| x as f32)).collect(),
        triangles,
    })
}

/// A torus (major radius `major`, tube radius `minor`, axis z) with about `target_facets`
/// facets (at least 18), facing outward.
pub fn torus(center: [f32; 3], major: f32, minor: f32, target_facets: usize) -> Mesh {
    torus_phase(center, major, minor, target_facets, 0.0)
}

fn torus_phase(center: [f32; 3], major: f32, minor: f32, target: usize, phase: f64) -> Mesh {
    let ratio = (f64::from(major) / f64::from(minor)).max(1.0);
    let v = (((target as f64) / (2.0 * ratio)).sqrt().round() as usize).max(3);
    let u = (target / (2 * v)).max(3);
    let (rr, r) = (f64::from(major), f64::from(minor));
    let c = center.map(f64::from);
    let mut vertices = Vec::with_capacity(u * v);
    for i in 0..u {
        let a = 2.0 * PI * i as f64 / u as f64 + phase;
        for j in 0..v {
            let b = 2.0 * PI * j as f64 / v as f64;
            vertices.push([
                (c[0] + (rr + r * b.cos()) * a.cos()) as f32,
                (c[1] + (rr + r * b.cos()) * a.sin()) as f32,
                (c[2] + r * b.sin()) as f32,
            ]);
        }
    }
    let at = |i: usize, j: usize| ((i % u) * v + j % v) as u32;
    let mut triangles = Vec::with_capacity(2 * u * v);
    for i in 0..u {
        for j in 0..v {
            triangles.push([at(i, j), at(i + 1, j), at(i + 1, j + 1)]);
            triangles.push([at(i, j), at(i + 1, j + 1), at(i, j + 1)]);
        }
    }
    outward(Mesh {
        vertices,
        triangles,
    })
}

/// One shell of a generated model.
#[derive(Debug, Clone)]
pub struct ShellInfo {
    /// What it is.
    pub name: &'static str,
    /// Signed volume (negative for the cavity).
    pub volume: f64,
    /// Nested inside another shell and wound inward.
    pub cavity: bool,
    /// Bounding box.
    pub bbox: Bbox,
    /// Facets.
    pub facets: usize,
}

/// A clean, watertight, outward (cavity inward) multi-shell model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The mesh (shells one after the other).
    pub mesh: Mesh,
    /// Shell number of every facet.
    pub shell_of: Vec<u32>,
    /// The shells.
    pub shells: Vec<ShellInfo>,
    /// Total signed volume (the cavity subtracts).
    pub volume: f64,
}

/// The standard four-shell model with about `target_facets` facets: an outer sphere (r = 10)
/// with a nested spherical cavity (r = 5), a torus (R = 6, r = 2) and a small sphere (r = 3).
/// The seed shifts the shells and the mesh phases.
pub fn clean_model(seed: u64, target_facets: usize) -> Model {
    let mut rng = Rng::new(seed);
    let mut j = |s: f64| ((rng.f64() - 0.5) * s) as f32;
    let t = target_facets.max(200) as f64;
    let parts: [(&'static str, Mesh, bool); 4] = [
        (
            "outer sphere",
            sphere_phase(
                [j(1.0), j(1.0), j(1.0)],
                10.0,
                (t * 0.35) as usize,
                f64::from(j(1.0)),
            ),
            false,
        ),
        (
            "cavity",
            {
                let mut m = sphere_phase(
                    [j(1.0), j(1.0), j(1.0)],
                    5.0,
                    (t * 0.15) as usize,
                    f64::from(j(1.0)),
                );
                for f in &mut m.triangles {
                    f.swap(1, 2);
                }
                m
            },
            true,
        ),
        (
            "torus",
            torus_phase(
                [25.0 + j(1.0), j(1.0), j(1.0)],
                6.0,
                2.0,
                (t * 0.35) as usize,
                f64::from(j(1.0)),
            ),
            false,
        ),
        (
            "small sphere",
            sphere_phase(
                [j(1.0), 20.0 + j(1.0), j(1.0)],
                3.0,
                (t * 0.15) as usize,
                f64::from(j(1.0)),
            ),
            false,
        ),
    ];
    let mut mesh = Mesh::default();
    let mut shell_of = Vec::new();
    let mut shells = Vec::new();
    for (s, (name, m, cavity)) in parts.into_iter().enumerate() {
        let base = mesh.vertices.len() as u32;
        shells.push(ShellInfo {
            name,
            volume: m.signed_volume(),
            cavity,
            bbox: m.bbox().unwrap_or(Bbox {
                min: [0.0; 3],
                max: [0.0; 3],
            }),
            facets: m.triangles.len(),
        });
        mesh.vertices.extend_from_slice(&m.vertices);
        mesh.triangles
            .extend(m.triangles.iter().map(|t| t.map(|i| i + base)));
        shell_of.extend(std::iter::repeat_n(s as u32, m.triangles.len()));
    }
    let volume = shells.iter().map(|s| s.volume).sum();
    Model {
        mesh,
        shell_of,
        shells,
        volume,
    }
}

/// A closed thin tube along z (radius `radius`, length `length`, `around` sectors, `rings`
/// rings of quads, flat caps fanned from their centres), facing outward.
pub fn tube(origin: [f32; 3], radius: f32, length: f32, around: usize, rings: usize) -> Mesh {
    let (around, rings) = (around.max(3), rings.max(1));
    let mut vertices = Vec::with_capacity(around * (rings + 1) + 2);
    for r in 0..=rings {
        let z = origin[2] + length * r as f32 / rings as f32;
        for a in 0..around {
            let t = 2.0 * PI * a as f64 / around as f64;
            vertices.push([
                origin[0] + radius * t.cos() as f32,
                origin[1] + radius * t.sin() as f32,
                z,
            ]);
        }
    }
    let at = |r: usize, a: usize| (r * around + a % around) as u32;
    let mut triangles = Vec::with_capacity(2 * around * (rings + 1));
    for r in 0..rings {
        for a in 0..around {
            triangles.push([at(r, a), at(r, a + 1), at(r + 1, a + 1)]);
            triangles.push([at(r, a), at(r + 1, a + 1), at(r + 1, a)]);
        }
    }
    let (bottom, top) = (vertices.len() as u32, vertices.len() as u32 + 1);
    vertices.push([origin[0], origin[1], origin[2]]);
    vertices.push([origin[0], origin[1], origin[2] + length]);
    for a in 0..around {
        triangles.push([bottom, at(0, a + 1), at(0, a)]);
        triangles.push([top, at(rings, a), at(rings, a + 1)]);
    }
    outward(Mesh {
        vertices,
        triangles,
    })
}

/// The worst case for hole filling: `tubes` thin closed tubes side by side, each with a
/// helical strip two quads wide cut out of its wall, winding once round the tube every
/// `around` rings. Each cut leaves one hole whose rim (about `4 × rings` edges) wraps round
/// the tube again and again, so its projection onto any plane overlaps itself and ear
/// clipping finds no valid ear. Binary STL; `clean` is the uncut tubes.
pub fn cut_tubes(tubes: usize, rings: usize) -> Generated {
    let around = 8;
    let mut mesh = Mesh::default();
    let mut shells = Vec::new();
    let mut shell_of = Vec::new();
    let mut cut = Vec::new();
    for k in 0..tubes.max(1) {
        let m = tube([k as f32 * 0.5, 0.0, 0.0], 0.05, 10.0, around, rings);
        let base = mesh.vertices.len() as u32;
        shells.push(ShellInfo {
            name: "tube",
            volume: m.signed_volume(),
            cavity: false,
            bbox: m.bbox().unwrap_or(Bbox {
                min: [0.0; 3],
                max: [0.0; 3],
            }),
            facets: m.triangles.len(),
        });
        // Wall facets come in pairs per quad, ring by ring: quad (r, a) is facets
        // 2 (r around + a) and the next. Cut quads (r, r mod around) and (r, r + 1 mod around).
        for (f, t) in m.triangles.iter().enumerate() {
            let quad = f / 2;
            let (r, a) = (quad / around, quad % around);
            let on_strip = r < rings && (a == r % around || a == (r + 1) % around);
            if !on_strip {
                cut.push(t.map(|i| i + base));
            }
        }
        mesh.vertices.extend_from_slice(&m.vertices);
        mesh.triangles
            .extend(m.triangles.iter().map(|t| t.map(|i| i + base)));
        shell_of.extend(std::iter::repeat_n(k as u32, m.triangles.len()));
    }
    let stl = stl::encode_binary(&Mesh {
        vertices: mesh.vertices.clone(),
        triangles: cut,
    });
    let volume = shells.iter().map(|s| s.volume).sum();
    Generated {
        stl,
        clean: Model {
            mesh,
            shell_of,
            shells,
            volume,
        },
    }
}

/// A closed box from `min` to `max`, facing outward.
pub fn block(min: [f32; 3], max: [f32; 3]) -> Mesh {
    extrude(
        &[
            [min[0], min[1]],
            [max[0], min[1]],
            [max[0], max[1]],
            [min[0], max[1]],
        ],
        None,
        min[2],
        max[2],
    )
}

/// A CAD-like flat part with long thin facets: a square plate (side 100, thickness 2) with a
/// round hole (radius 20, `segments` sides), its faces triangulated as a strip between the
/// square and the hole, as CAD exporters do.
pub fn plate_with_hole(segments: usize) -> Mesh {
    let n = (segments.max(8) / 8) * 8;
    let mut outer = Vec::with_capacity(n);
    let mut inner = Vec::with_capacity(n);
    for i in 0..n {
        let t = 2.0 * PI * i as f64 / n as f64;
        let (c, s) = (t.cos(), t.sin());
        let k = 50.0 / c.abs().max(s.abs());
        outer.push([(k * c) as f32, (k * s) as f32]);
        inner.push([(20.0 * c) as f32, (20.0 * s) as f32]);
    }
    extrude(&outer, Some(&inner), 0.0, 2.0)
}

/// A CAD-like L bracket (arms 60 × 5 and 5 × 40, 30 wide): a few long thin facets, the caps
/// fanned from the inner corner.
pub fn bracket() -> Mesh {
    extrude(
        &[
            [5.0, 5.0],
            [5.0, 40.0],
            [0.0, 40.0],
            [0.0, 0.0],
            [60.0, 0.0],
            [60.0, 5.0],
        ],
        None,
        0.0,
        30.0,
    )
}

/// Extrude a counter-clockwise polygon (star-shaped from its first vertex) from `z0` to `z1`;
/// with `inner` (as many vertices, each on the ray of its outer one) the polygon has a hole
/// and the caps are strips between the two loops. Closed and facing outward.
fn extrude(outer: &[[f32; 2]], inner: Option<&[[f32; 2]]>, z0: f32, z1: f32) -> Mesh {
    let n = outer.len();
    let mut vertices = Vec::new();
    for z in [z0, z1] {
        vertices.extend(outer.iter().map(|p| [p[0], p[1], z]));
    }
    if let Some(inner) = inner {
        for z in [z0, z1] {
            vertices.extend(inner.iter().map(|p| [p[0], p[1], z]));
        }
    }
    let o = |i: usize, top: usize| (top * n + i % n) as u32;
    let h = |i: usize, top: usize| (2 * n + top * n + i % n) as u32;
    let mut triangles = Vec::new();
    for i in 0..n {
        // Outer wall.
        triangles.push([o(i, 0), o(i + 1, 0), o(i + 1, 1)]);
        triangles.push([o(i, 0), o(i + 1, 1), o(i, 1)]);
        if inner.is_some() {
            // Hole wall (facing the hole's axis) and the strips of the caps.
            triangles.push([h(i, 0), h(i + 1, 1), h(i + 1, 0)]);
            triangles.push([h(i, 0), h(i, 1), h(i + 1, 1)]);
            triangles.push([o(i, 1), o(i + 1, 1), h(i + 1, 1)]);
            triangles.push([o(i, 1), h(i + 1, 1), h(i, 1)]);
            triangles.push([o(i, 0), h(i + 1, 0), o(i + 1, 0)]);
            triangles.push([o(i, 0), h(i, 0), h(i + 1, 0)]);
        } else if i >= 1 && i + 1 < n {
            triangles.push([o(0, 1), o(i, 1), o(i + 1, 1)]);
            triangles.push([o(0, 0), o(i + 1, 0), o(i, 0)]);
        }
    }
    Mesh {
        vertices,
        triangles,
    }
}

/// Named closed parts as one model (no cavities: for shapes that do not nest).
pub fn parts(parts: Vec<(&'static str, Mesh)>) -> Model {
    let mut mesh = Mesh::default();
    let mut shell_of = Vec::new();
    let mut shells = Vec::new();
    for (s, (name, m)) in parts.into_iter().enumerate() {
        let base = mesh.vertices.len() as u32;
        shells.push(ShellInfo {
            name,
            volume: m.signed_volume(),
            cavity: false,
            bbox: m.bbox().unwrap_or(Bbox {
                min: [0.0; 3],
                max: [0.0; 3],
            }),
            facets: m.triangles.len(),
        });
        mesh.vertices.extend_from_slice(&m.vertices);
        mesh.triangles
            .extend(m.triangles.iter().map(|t| t.map(|i| i + base)));
        shell_of.extend(std::iter::repeat_n(s as u32, m.triangles.len()));
    }
    let volume = shells.iter().map(|s| s.volume).sum();
    Model {
        mesh,
        shell_of,
        shells,
        volume,
    }
}

/// A cube of side 10 whose faces are tiled by `n × n` squares (two facets each), as a soup of
/// bit-identical corner copies, with a `patch × patch` square of its top face cut out as a
/// separate open piece: the patch's copies of its rim vertices carry noise of up to `gap` ×
/// the diagonal per coordinate, so the seam is open after an exact weld (and after the
/// automatic one when `gap` is above its bound). The clean model is the closed cube. The case
/// for stitching: with `n = 100` and `patch = 2` the patch is under 2 % of the diagonal, so
/// dropping it as a tiny shell (and filling its hole) would lose real surface.
pub fn seam_patch(n: usize, patch: usize, gap: f64, seed: u64) -> Generated {
    let side = 10.0f64;
    let n = n.max(2);
    let patch = patch.clamp(1, n - 1);
    let at = |i: usize| (i as f64 * side / n as f64) as f32;
    let (p0, p1) = (n / 2 - patch / 2, n / 2 - patch / 2 + patch);
    let in_patch = |a: usize, s: usize, i: usize, j: usize| {
        a == 2 && s == 1 && (p0..p1).contains(&i) && (p0..p1).contains(&j)
    };
    let diag = side * 3f64.sqrt();
    let mut rng = Rng::new(seed);
    let mut noise = std::collections::HashMap::new();
    let mut jitter = |i: usize, j: usize| -> [f32; 3] {
        *noise
            .entry((i, j))
            .or_insert_with(|| [0, 1, 2].map(|_| ((rng.f64() * 2.0 - 1.0) * gap * diag) as f32))
    };
    let mut clean = Mesh::default();
    let mut cut = Mesh::default();
    for a in 0..3 {
        let (u, w) = ((a + 1) % 3, (a + 2) % 3);
        for s in 0..2 {
            for i in 0..n {
                for j in 0..n {
                    let corner = |di: usize, dj: usize| {
                        let mut p = [0f32; 3];
                        p[a] = if s == 1 { side as f32 } else { 0.0 };
                        p[u] = at(i + di);
                        p[w] = at(j + dj);
                        p
                    };
                    let q = [corner(0, 0), corner(1, 0), corner(1, 1), corner(0, 1)];
                    let mut tris = [[q[0], q[1], q[2]], [q[0], q[2], q[3]]];
                    // (u, w, a) is right-handed: counter-clockwise in (u, w) faces +a.
                    if s == 0 {
                        for t in &mut tris {
                            t.swap(1, 2);
                        }
                    }
                    for t in tris {
                        let base = clean.vertices.len() as u32;
                        clean.vertices.extend_from_slice(&t);
                        clean.triangles.push([base, base + 1, base + 2]);
                        let t = if in_patch(a, s, i, j) {
                            t.map(|p| {
                                // Rim vertices of the patch (on its border) get the noise.
                                let gi = ((f64::from(p[u]) / side * n as f64).round()) as usize;
                                let gj = ((f64::from(p[w]) / side * n as f64).round()) as usize;
                                if gi == p0 || gi == p1 || gj == p0 || gj == p1 {
                                    let d = jitter(gi, gj);
                                    [p[0] + d[0], p[1] + d[1], p[2] + d[2]]
                                } else {
                                    p
                                }
                            })
                        } else {
                            t
                        };
                        let base = cut.vertices.len() as u32;
                        cut.vertices.extend_from_slice(&t);
                        cut.triangles.push([base, base + 1, base + 2]);
                    }
                }
            }
        }
    }
    Generated {
        stl: crate::stl::encode_binary(&cut),
        clean: parts(vec![("tiled cube", clean)]),
    }
}

/// Many shells: an outer sphere (r = 16, `outer_facets`) round `n³` small spheres (r = 0.45,
/// `bubble_facets` each) on a grid of spacing 1 centred in it — the bubbles are cavities,
/// wound inward in the clean model. `n = 17` gives 4 913 cavities: the case for the nesting
/// check (each bubble's box is above the 2 % tiny-shell bound, so all are kept).
pub fn bubbles(n: usize, bubble_facets: usize, outer_facets: usize) -> Model {
    let half = (n as f32 - 1.0) / 2.0;
    let mut shells = vec![("outer", sphere([0.0; 3], 16.0, outer_facets))];
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let c = [i, j, k].map(|x| x as f32 - half);
                let mut b = sphere(c, 0.45, bubble_facets);
                for t in &mut b.triangles {
                    t.swap(1, 2);
                }
                shells.push(("bubble", b));
            }
        }
    }
    let mut m = parts(shells);
    for s in m.shells.iter_mut().skip(1) {
        s.cavity = true;
    }
    m
}

/// `model` written as a pure triangle soup: facets in random order, a fraction of them
/// flipped, every corner copy moved by independent noise of up to `noise` × the diagonal per
/// coordinate (0: exact copies), optionally one part (`invert`, by shell number) inside out.
pub fn soup(
    model: &Model,
    seed: u64,
    noise: f64,
    flip_fraction: f64,
    invert: Option<u32>,
) -> Generated {
    soup_traced(model, seed, noise, flip_fraction, invert).0
}

/// [`soup`], and for every corner of the soup (in file order) the model's vertex it is a copy
/// of, so a test can tell which vertices a repair merged.
pub fn soup_traced(
    model: &Model,
    seed: u64,
    noise: f64,
    flip_fraction: f64,
    invert: Option<u32>,
) -> (Generated, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let m = &model.mesh;
    let diag = m.bbox().map_or(1.0, |b| b.diagonal());
    let mut order: Vec<usize> = (0..m.triangles.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut positions = Vec::with_capacity(3 * order.len());
    let mut sources = Vec::with_capacity(3 * order.len());
    for &f in &order {
        let mut t = m.triangles[f];
        if invert == Some(model.shell_of[f]) || rng.f64() < flip_fraction {
            t.swap(1, 2);
        }
        for i in t {
            let p = m.vertices[i as usize];
            sources.push(i);
            positions.push(if noise > 0.0 {
                p.map(|x| (f64::from(x) + (rng.f64() - 0.5) * 2.0 * noise * diag) as f32)
            } else {
                p
            });
        }
    }
    (
        Generated {
            stl: stl::encode_soup(&positions, &[]),
            clean: model.clone(),
        },
        sources,
    )
}

/// Which defects to inject, and how much of each.
#[derive(Debug, Clone, PartialEq)]
pub struct Defects {
    /// Write an unwelded soup whose corner copies differ by float noise (up to
    /// [`Defects::noise_amplitude`] of the model diagonal per coordinate plus a few ulp), so
    /// rounding-based welds miss some of them.
    pub noise: bool,
    /// The noise's amplitude as a fraction of the diagonal (1e-7 in [`Defects::all`]).
    pub noise_amplitude: f64,
    /// Fraction of facets written with reversed winding.
    pub flip_fraction: f64,
    /// Write the torus entirely inside out.
    pub invert_shell: bool,
    /// Store wrong (random or zero) normals on 30 % of the facets.
    pub wrong_normals: bool,
    /// Number of holes (a facet and its vertex neighbours removed, on the outer shells).
    pub holes: u32,
    /// Fraction of facets repeated (half of them with reversed winding).
    pub duplicate_fraction: f64,
    /// Degenerate facets added (repeated corner, or three exactly collinear corners).
    pub degenerates: u32,
    /// Tiny closed noise shells (tetrahedra) and stray single facets added.
    pub noise_shells: u32,
    /// Write ASCII instead of binary.
    pub ascii: bool,
}

impl Defects {
    /// A clean model, written as welded-by-position binary STL.
    pub fn none() -> Defects {
        Defects {
            noise: false,
            noise_amplitude: 1e-7,
            flip_fraction: 0.0,
            invert_shell: false,
            wrong_normals: false,
            holes: 0,
            duplicate_fraction: 0.0,
            degenerates: 0,
            noise_shells: 0,
            ascii: false,
        }
    }

    /// Every defect at once (binary output).
    pub fn all() -> Defects {
        Defects {
            noise: true,
            noise_amplitude: 1e-7,
            flip_fraction: 0.10,
            invert_shell: true,
            wrong_normals: true,
            holes: 6,
            duplicate_fraction: 0.02,
            degenerates: 50,
            noise_shells: 12,
            ascii: false,
        }
    }

    /// Each defect on its own, with a name (ASCII output is one of them).
    pub fn each() -> Vec<(&'static str, Defects)> {
        let n = Defects::none();
        vec![
            (
                "noise soup",
                Defects {
                    noise: true,
                    ..n.clone()
                },
            ),
            (
                "10% flipped",
                Defects {
                    flip_fraction: 0.10,
                    ..n.clone()
                },
            ),
            (
                "inverted shell",
                Defects {
                    invert_shell: true,
                    ..n.clone()
                },
            ),
            (
                "wrong normals",
                Defects {
                    wrong_normals: true,
                    ..n.clone()
                },
            ),
            (
                "holes",
                Defects {
                    holes: 6,
                    ..n.clone()
                },
            ),
            (
                "duplicates",
                Defects {
                    duplicate_fraction: 0.02,
                    ..n.clone()
                },
            ),
            (
                "degenerates",
                Defects {
                    degenerates: 50,
                    ..n.clone()
                },
            ),
            (
                "noise shells",
                Defects {
                    noise_shells: 12,
                    ..n.clone()
                },
            ),
            (
                "ascii",
                Defects {
                    ascii: true,
                    ..n.clone()
                },
            ),
        ]
    }
}

/// A generated input and the clean model it was made from.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The STL bytes (binary, or ASCII when asked).
    pub stl: Vec<u8>,
    /// The clean model (what a perfect repair gets back, up to hole fills).
    pub clean: Model,
}

/// The standard model with `defects` injected, as STL bytes.
pub fn model(seed: u64, target_facets: usize, defects: &Defects) -> Generated {
    let clean = clean_model(seed, target_facets);
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
    let m = &clean.mesh;
    let diag = m.bbox().map_or(1.0, |b| b.diagonal());
    let mut tris: Vec<[u32; 3]> = m.triangles.clone();
    let mut shell: Vec<u32> = clean.shell_of.clone();

    // Holes: a facet and every facet sharing a vertex with it, on shells 0, 2, 3 in turn.
    if defects.holes > 0 {
        let mut remove = vec![false; tris.len()];
        let targets = [0u32, 2, 3];
        for h in 0..defects.holes {
            let s = targets[h as usize % targets.len()];
            let cands: Vec<usize> = (0..tris.len())
                .filter(|&f| shell[f] == s && !remove[f])
                .collect();
            if cands.is_empty() {
                continue;
            }
            let f = cands[rng.below(cands.len())];
            let vs = tris[f];
            for (g, t) in tris.iter().enumerate() {
                if t.iter().any(|x| vs.contains(x)) {
                    remove[g] = true;
                }
            }
        }
        let mut k = 0;
        tris.retain(|_| {
            k += 1;
            !remove[k - 1]
        });
        let mut k = 0;
        shell.retain(|_| {
            k += 1;
            !remove[k - 1]
        });
    }
    if defects.invert_shell {
        for (t, &s) in tris.iter_mut().zip(&shell) {
            if s == 2 {
                t.swap(1, 2);
            }
        }
    }
    // Soup.
    let mut soup: Vec<[f32; 3]> = Vec::with_capacity(tris.len() * 3 + 1024);
    for t in &tris {
        for &i in t {
            soup.push(m.vertices[i as usize]);
        }
    }
    if defects.noise {
        let amp = defects.noise_amplitude * diag;
        for p in &mut soup {
            for x in p.iter_mut() {
                let ulps = (rng.below(9) as i32 - 4) as f32 * x.abs() * f32::EPSILON;
                *x = (f64::from(*x + ulps) + (rng.f64() - 0.5) * 2.0 * amp) as f32;
            }
        }
    }
    let facets = tris.len();
    if defects.flip_fraction > 0.0 {
        for f in 0..facets {
            if rng.f64() < defects.flip_fraction {
                soup.swap(3 * f + 1, 3 * f + 2);
            }
        }
    }
    // Duplicates (exact copies of corners, half reversed).
    let dups = (facets as f64 * defects.duplicate_fraction) as usize;
    for d in 0..dups {
        let f = rng.below(facets);
        let (a, b, c) = (soup[3 * f], soup[3 * f + 1], soup[3 * f + 2]);
        if d % 2 == 0 {
            soup.extend_from_slice(&[a, b, c]);
        } else {
            soup.extend_from_slice(&[a, c, b]);
        }
    }
    // Degenerates.
    for d in 0..defects.degenerates {
        let f = rng.below(facets);
        let (a, b) = (soup[3 * f], soup[3 * f + 1]);
        if d % 2 == 0 {
            soup.extend_from_slice(&[a, a, b]);
        } else {
            let step = (diag * 0.01) as f32;
            soup.extend_from_slice(&[
                a,
                [a[0] + step, a[1], a[2]],
                [a[0] + 2.0 * step, a[1], a[2]],
            ]);
        }
    }
    // Tiny noise shells: tetrahedra of 0.1 % of the diagonal, and stray single facets. Noise
    // by the tiny-shell rule: a tetrahedron whose box (grown by its size) meets the model is
    // drawn again, since one touching or crossing the surface is part of the model by the
    // rule (`contact.rs`). A draw that misses keeps the random sequence as it was.
    if let Some(bb) = m.bbox() {
        let e = diag * 1e-3;
        let meets_model = |p: [f64; 3]| {
            let (lo, hi) = (p.map(|x| x - e), p.map(|x| x + 2.0 * e));
            m.triangles.par_iter().any(|t| {
                let q = t.map(|i| m.vertices[i as usize].map(f64::from));
                (0..3).all(|a| q.iter().any(|c| c[a] >= lo[a]) && q.iter().any(|c| c[a] <= hi[a]))
                    && crate::contact::triangle_meets_box(q, lo, hi)
            })
        };
        for k in 0..defects.noise_shells {
            let mut draw = || -> [f64; 3] {
                std::array::from_fn(|a| {
                    f64::from(bb.min[a]) + rng.f64() * (f64::from(bb.max[a]) - f64::from(bb.min[a]))
                })
            };
            let mut p = draw();
            for _ in 0..64 {
                if k % 3 == 2 || !meets_model(p) {
                    break;
                }
                p = draw();
            }
            let q = |dx: f64, dy: f64, dz: f64| {
                [(p[0] + dx) as f32, (p[1] + dy) as f32, (p[2] + dz) as f32]
            };
            let (a, b, c, d) = (
                q(0.0, 0.0, 0.0),
                q(e, 0.0, 0.0),
                q(0.0, e, 0.0),
                q(0.0, 0.0, e),
            );
            if k % 3 == 2 {
                soup.extend_from_slice(&[a, b, c]);
            } else {
                soup.extend_from_slice(&[a, c, b, a, b, d, b, c, d, a, d, c]);
            }
        }
    }
    let n = soup.len() / 3;
    let normals: Vec<[f32; 3]> = (0..n)
        .map(|f| {
            let v = &soup[3 * f..3 * f + 3];
            if defects.wrong_normals && rng.f64() < 0.3 {
                if rng.below(2) == 0 {
                    [0.0; 3]
                } else {
                    let r = [rng.f64() - 0.5, rng.f64() - 0.5, rng.f64() - 0.5];
                    let l = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt().max(1e-9);
                    r.map(|x| (x / l) as f32)
                }
            } else {
                stl::facet_normal(v[0], v[1], v[2])
            }
        })
        .collect();
    let stl = if defects.ascii {
        stl::encode_ascii(&soup, &normals)
    } else {
        stl::encode_soup(&soup, &normals)
    };
    Generated { stl, clean }
}

/// Binary STL of the standard model with **every** defect injected ([`Defects::all`]): float
/// noise soup, 10 % flipped facets, the torus inside out, wrong normals, six holes, 2 %
/// duplicates, degenerate facets and tiny noise shells. About `target_facets` facets (plus ~3 %
/// of injected extras); deterministic in `seed`.
pub fn broken_model(seed: u64, target_facets: usize) -> Vec<u8> {
    model(seed, target_facets, &Defects::all()).stl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_hit_their_facet_counts_and_face_outward() {
        for target in [1_000, 10_000, 100_000] {
            let s = sphere([0.0; 3], 1.0, target);
            assert!((s.triangles.len() as f64 - target as f64).abs() / (target as f64) < 0.05);
            assert!(s.signed_volume() > 0.0);
            let t = torus([0.0; 3], 3.0, 1.0, target);
            assert!((t.triangles.len() as f64 - target as f64).abs() / (target as f64) < 0.05);
            assert!(t.signed_volume() > 0.0);
        }
        let m = clean_model(3, 20_000);
        assert_eq!(m.shells.len(), 4);
        assert!(m.shells[1].volume < 0.0);
        assert!((m.mesh.triangles.len() as f64 - 20_000.0).abs() < 1_000.0);
    }

    #[test]
    fn deterministic() {
        assert_eq!(broken_model(5, 2_000), broken_model(5, 2_000));
        assert_ne!(broken_model(5, 2_000), broken_model(6, 2_000));
    }
}
