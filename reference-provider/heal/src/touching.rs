//! Two solids that touch along a face meshed differently on each side.
//!
//! Two bodies of an assembly written whole, side by side, share a face: each brings its own
//! side of it, and an exporter that meshes every body on its own triangulates the two sides
//! differently (the other diagonal of a rectangle, a fan from another corner), so there are
//! no copies for the clean to find (`clean::internal_faces` handles the copies). After the
//! weld the face's rim has four facets on every edge: a side facet of each solid and a facet
//! of each side of the face.
//!
//! Such a face is found from its rim: on an edge of four facets, two that run opposite ways,
//! lie along one plane and overlap (their third corners on the same side of the edge) start
//! two regions, each grown over its neighbours along that plane (their normals within 1° of
//! it) up to the edges of more than two facets. The two regions are the two sides of a
//! shared face, and both go (the solids become one), when all of these hold:
//!
//! * every vertex of both lies within the rounding of the coordinates plus twice the weld's
//!   largest merge of the plane that fits them all;
//! * both are bounded by the same edges, and only by edges of exactly four facets; or, on
//!   one side only, by open edges too (a hole in the face, which goes with it), and then
//!   without the rim edges of its missing facets (which have three);
//! * on every one of those edges, the two facets not in the regions (the solids' sides) lie
//!   on opposite sides of the plane: the solids are on either side of the face. (A solid
//!   inside another, touching its face from within, has both sides on one side; removing
//!   the face would cut it open.) An edge may have only one such facet (a hole beside the
//!   face, which stays a hole of its own once the face goes), but not every edge;
//! * the two regions cover the same area, within a thousandth (a side with a hole: no more
//!   than the other).
//!
//! Every facet is grown into at most one region, so the cost is a sort of the half-edges of
//! the facets on edges of more than two facets, and linear in the regions grown from them.

use rayon::prelude::*;

use crate::clean::rounding;
use crate::holes::{cross, dot, sub};
use crate::keys::pack;
use crate::topology::{NONE, SAME, Topology, half_edge};

/// A seed facet flatter than this (height over its longest edge) gives no plane to grow in;
/// another edge of the rim gives another seed.
const SEED_HEIGHT: f64 = 1e-3;

/// A facet lies along a plane when its normal is within 1° of the plane's (either way).
const ALONG_COS: f64 = 0.999_847_7;

/// The two sides of a face cover the same area within this fraction.
const AREA_SLACK: f64 = 1e-3;

/// The facets of faces shared by two solids and meshed differently on each side, both
/// sides (ascending). `snap` is the weld's largest merge.
pub(crate) fn faces(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    topo: &Topology,
    snap: f64,
) -> Vec<u32> {
    if topo.non_manifold_edges == 0 {
        return Vec::new();
    }
    // The half-edges of the facets on edges of more than two facets, by their edge: every
    // half-edge of such an edge is among them.
    let mut on: Vec<(u64, u32)> = topo
        .non_manifold_facets
        .par_iter()
        .flat_map_iter(|&f| {
            (0..3).map(move |k| {
                let h = 3 * f + k;
                let (a, b) = half_edge(triangles, h);
                (pack(a.min(b), a.max(b)), h)
            })
        })
        .collect();
    on.par_sort_unstable();
    on.dedup();
    // The edges of more than two facets, each with its half-edges.
    let mut runs: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut i = 0;
    while i < on.len() {
        let mut j = i + 1;
        while j < on.len() && on[j].0 == on[i].0 {
            j += 1;
        }
        if j - i > 2 {
            runs.push((on[i].0, i..j));
        }
        i = j;
    }
    if runs.is_empty() {
        return Vec::new();
    }
    let many: foldhash::HashMap<u64, std::ops::Range<usize>> = runs.iter().cloned().collect();
    let p = |v: u32| vertices[v as usize].map(f64::from);
    let far = vertices
        .par_iter()
        .flatten()
        .map(|x| f64::from(x.abs()))
        .filter(|x| x.is_finite())
        .reduce(|| 0.0, f64::max);
    let tol = rounding(far) + 2.0 * snap;
    let mut grown = vec![false; triangles.len()];
    let mut gone = Vec::new();
    for (_, run) in runs.iter().filter(|(_, r)| r.len() == 4) {
        let hs: Vec<u32> = on[run.clone()].iter().map(|&(_, h)| h).collect();
        for x in 0..4 {
            for y in x + 1..4 {
                let (h1, h2) = (hs[x], hs[y]);
                let (f1, f2) = ((h1 / 3) as usize, (h2 / 3) as usize);
                if grown[f1]
                    || grown[f2]
                    || half_edge(triangles, h1) != flip(half_edge(triangles, h2))
                {
                    continue;
                }
                let Some(plane) = Plane::of(triangles[f1].map(p)) else {
                    continue;
                };
                let third = |h: u32| p(triangles[(h / 3) as usize][((h % 3 + 2) % 3) as usize]);
                let (a, b) = half_edge(triangles, h1);
                if !plane.along(triangles[f2].map(p), tol)
                    || !same_side(p(a), p(b), third(h1), third(h2))
                {
                    continue;
                }
                let r1 = grow(
                    f1, &plane, tol, triangles, &topo.twin, &many, &p, &mut grown,
                );
                let r2 = grow(
                    f2, &plane, tol, triangles, &topo.twin, &many, &p, &mut grown,
                );
                if shared(&r1, &r2, &plane, tol, triangles, &topo.twin, &on, &many, &p) {
                    gone.extend(r1);
                    gone.extend(r2);
                }
            }
        }
    }
    gone.sort_unstable();
    gone
}

/// The edge `a → b` the other way round.
fn flip((a, b): (u32, u32)) -> (u32, u32) {
    (b, a)
}

/// A plane through a point, with its unit normal.
struct Plane {
    at: [f64; 3],
    normal: [f64; 3],
}

impl Plane {
    /// The plane of a triangle; `None` when the triangle is too flat to tell it
    /// ([`SEED_HEIGHT`]).
    fn of(t: [[f64; 3]; 3]) -> Option<Plane> {
        let u = sub(t[1], t[0]);
        let w = sub(t[2], t[0]);
        let n = cross(u, w);
        let area2 = dot(n, n).sqrt();
        let longest = [u, w, sub(t[2], t[1])]
            .map(|e| dot(e, e))
            .into_iter()
            .fold(0.0f64, f64::max);
        (area2.is_finite() && area2 > SEED_HEIGHT * longest).then(|| Plane {
            at: t[0],
            normal: n.map(|x| x / area2),
        })
    }

    fn distance(&self, q: [f64; 3]) -> f64 {
        dot(sub(q, self.at), self.normal)
    }

    /// Does the triangle `t` lie along the plane: parallel to it within [`ALONG_COS`] (a
    /// facet's normal, noisy copies welded, tilts with the noise over its height, so a
    /// distance from one facet's plane grows along a large face), or, when too flat to have a
    /// normal, within `tol` of it?
    fn along(&self, t: [[f64; 3]; 3], tol: f64) -> bool {
        match Plane::of(t) {
            Some(q) => dot(q.normal, self.normal).abs() >= ALONG_COS,
            None => t.iter().all(|&v| self.distance(v).abs() <= tol),
        }
    }

    /// The plane through `at` whose normal is the facets' summed area vectors, each turned
    /// to agree with `self` (the facets of both sides, however wound).
    fn fit(&self, at: [f64; 3], facets: impl Iterator<Item = [[f64; 3]; 3]>) -> Option<Plane> {
        let mut n = [0.0; 3];
        for t in facets {
            let a = cross(sub(t[1], t[0]), sub(t[2], t[0]));
            let s = if dot(a, self.normal) < 0.0 { -1.0 } else { 1.0 };
            n = [0, 1, 2].map(|k| n[k] + s * a[k]);
        }
        let len = dot(n, n).sqrt();
        (len.is_finite() && len > 0.0).then(|| Plane {
            at,
            normal: n.map(|x| x / len),
        })
    }
}

/// Do `c` and `d` lie on the same side of the line through `a` and `b` (in their common
/// plane: the two triangles `a b c` and `a b d` overlap)?
fn same_side(a: [f64; 3], b: [f64; 3], c: [f64; 3], d: [f64; 3]) -> bool {
    let e = sub(b, a);
    dot(cross(e, sub(c, a)), cross(e, sub(d, a))) > 0.0
}

/// The facets reached from `seed` across edges of two facets whose every vertex lies within
/// `tol` of `plane`; each is marked in `grown`, which no later region enters.
#[allow(clippy::too_many_arguments)]
fn grow(
    seed: usize,
    plane: &Plane,
    tol: f64,
    triangles: &[[u32; 3]],
    twin: &[u32],
    many: &foldhash::HashMap<u64, std::ops::Range<usize>>,
    p: &impl Fn(u32) -> [f64; 3],
    grown: &mut [bool],
) -> Vec<u32> {
    let flat = |f: usize| plane.along(triangles[f].map(p), tol);
    let mut region = Vec::new();
    if grown[seed] || !flat(seed) {
        return region;
    }
    grown[seed] = true;
    let mut stack = vec![seed as u32];
    while let Some(f) = stack.pop() {
        region.push(f);
        for k in 0..3 {
            let h = 3 * f + k;
            let t = twin[h as usize];
            if t == NONE {
                continue;
            }
            let (a, b) = half_edge(triangles, h);
            if many.contains_key(&pack(a.min(b), a.max(b))) {
                continue;
            }
            let g = ((t & !SAME) / 3) as usize;
            if !grown[g] && flat(g) {
                grown[g] = true;
                stack.push(g as u32);
            }
        }
    }
    region.sort_unstable();
    region
}

/// Are `r1` and `r2` (ascending) the two sides of one face between two solids (see the
/// module's rules)?
#[allow(clippy::too_many_arguments)]
fn shared(
    r1: &[u32],
    r2: &[u32],
    plane: &Plane,
    tol: f64,
    triangles: &[[u32; 3]],
    twin: &[u32],
    on: &[(u64, u32)],
    many: &foldhash::HashMap<u64, std::ops::Range<usize>>,
    p: &impl Fn(u32) -> [f64; 3],
) -> bool {
    if r1.is_empty() || r2.is_empty() {
        return false;
    }
    // Every vertex of both within `tol` of the plane that fits them (through their corners'
    // mean, the summed area vectors its normal).
    let corners = || r1.iter().chain(r2).map(|&f| triangles[f as usize].map(p));
    let mean = corners()
        .flatten()
        .fold([0.0; 3], |m, v| [0, 1, 2].map(|k| m[k] + v[k]))
        .map(|x| x / (3 * (r1.len() + r2.len())) as f64);
    let Some(plane) = plane.fit(mean, corners()) else {
        return false;
    };
    // (A NaN distance is off the plane too.)
    if !corners().flatten().all(|v| plane.distance(v).abs() <= tol) {
        return false;
    }
    let key = |h: u32| {
        let (a, b) = half_edge(triangles, h);
        pack(a.min(b), a.max(b))
    };
    // A region's rim: its edges of more than two facets. Every other edge of a region must
    // join it to a facet of its own, or be open (a hole in the face, which goes with it): a
    // neighbour off the plane means the region is not a whole face.
    let rim = |r: &[u32]| -> Option<(Vec<u64>, bool)> {
        let mut rim = Vec::new();
        let mut open = false;
        for &f in r {
            for h in 3 * f..3 * f + 3 {
                let e = key(h);
                if many.contains_key(&e) {
                    rim.push(e);
                    continue;
                }
                match twin[h as usize] {
                    NONE => open = true,
                    t if r.binary_search(&((t & !SAME) / 3)).is_err() => return None,
                    _ => {}
                }
            }
        }
        rim.sort_unstable();
        Some((rim, open))
    };
    let (Some((a, open1)), Some((b, open2))) = (rim(r1), rim(r2)) else {
        return false;
    };
    // The same rim, each edge once; a side with a hole may lack the rim edges of its missing
    // facets.
    let subset = |x: &[u64], y: &[u64]| x.iter().all(|e| y.binary_search(e).is_ok());
    let rim = match (open1, open2) {
        (false, false) if a == b => &a,
        (true, false) if subset(&a, &b) => &b,
        (false, true) if subset(&b, &a) => &a,
        _ => return false,
    };
    if rim.is_empty() || [&a, &b].iter().any(|x| x.windows(2).any(|w| w[0] == w[1])) {
        return false;
    }
    // On every rim edge: a facet of each region that has it, and two more, clearly on
    // opposite sides of the plane; or only one more (a hole beside the face, which stays a
    // hole of its own once the face goes), but not on every edge.
    let inside = |f: u32| r1.binary_search(&f).is_ok() || r2.binary_search(&f).is_ok();
    let mut told = false;
    for e in rim {
        let run = &many[e];
        let ours =
            usize::from(a.binary_search(e).is_ok()) + usize::from(b.binary_search(e).is_ok());
        let sides: Vec<f64> = on[run.clone()]
            .iter()
            .filter(|&&(_, h)| !inside(h / 3))
            .map(|&(_, h)| {
                let third = triangles[(h / 3) as usize][((h % 3 + 2) % 3) as usize];
                plane.distance(p(third))
            })
            .collect();
        match sides[..] {
            [s, t] if run.len() == ours + 2 => {
                if s.abs() <= tol || t.abs() <= tol || s.signum() == t.signum() {
                    return false;
                }
                told = true;
            }
            [_] if run.len() == ours + 1 => {}
            _ => return false,
        }
    }
    if !told {
        return false;
    }
    let area = |r: &[u32]| -> f64 {
        r.iter()
            .map(|&f| {
                let t = triangles[f as usize].map(p);
                let n = cross(sub(t[1], t[0]), sub(t[2], t[0]));
                dot(n, n).sqrt() / 2.0
            })
            .sum()
    };
    // The same area, within a thousandth; a side with a hole, no more than the other.
    let (s1, s2) = (area(r1), area(r2));
    match (open1, open2) {
        (false, false) => (s1 - s2).abs() <= AREA_SLACK * s1.max(s2),
        (true, _) => s1 <= (1.0 + AREA_SLACK) * s2,
        (_, true) => s2 <= (1.0 + AREA_SLACK) * s1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::pair_edges;

    /// An indexed mesh: corners shared by position.
    #[derive(Default)]
    struct Mesh {
        vertices: Vec<[f32; 3]>,
        triangles: Vec<[u32; 3]>,
    }

    impl Mesh {
        fn at(&mut self, p: [f32; 3]) -> u32 {
            match self.vertices.iter().position(|&q| q == p) {
                Some(i) => i as u32,
                None => {
                    self.vertices.push(p);
                    (self.vertices.len() - 1) as u32
                }
            }
        }

        /// A quad `a b c d` (wound that way), split along `a c`, or `b d` with `other`.
        fn quad(&mut self, q: [[f32; 3]; 4], other: bool) {
            let [a, b, c, d] = q.map(|p| self.at(p));
            if other {
                self.triangles.extend([[a, b, d], [b, c, d]]);
            } else {
                self.triangles.extend([[a, b, c], [a, c, d]]);
            }
        }

        /// The box from `lo` to `hi`, wound outward; `other` picks each face's diagonal (faces
        /// -x, +x, -y, +y, -z, +z).
        fn cuboid(&mut self, lo: [f32; 3], hi: [f32; 3], other: [bool; 6]) {
            let p = |x: usize, y: usize, z: usize| {
                [[lo[0], hi[0]][x], [lo[1], hi[1]][y], [lo[2], hi[2]][z]]
            };
            self.quad([p(0, 0, 0), p(0, 0, 1), p(0, 1, 1), p(0, 1, 0)], other[0]);
            self.quad([p(1, 0, 0), p(1, 1, 0), p(1, 1, 1), p(1, 0, 1)], other[1]);
            self.quad([p(0, 0, 0), p(1, 0, 0), p(1, 0, 1), p(0, 0, 1)], other[2]);
            self.quad([p(0, 1, 0), p(0, 1, 1), p(1, 1, 1), p(1, 1, 0)], other[3]);
            self.quad([p(0, 0, 0), p(0, 1, 0), p(1, 1, 0), p(1, 0, 0)], other[4]);
            self.quad([p(0, 0, 1), p(1, 0, 1), p(1, 1, 1), p(0, 1, 1)], other[5]);
        }

        fn faces(&self) -> Vec<u32> {
            faces(
                &self.vertices,
                &self.triangles,
                &pair_edges(&self.triangles),
                0.0,
            )
        }

        /// The facets `found` are those whose every corner has `x == at`.
        fn all_at_x(&self, found: &[u32], at: f32) -> bool {
            let on: Vec<u32> = (0..self.triangles.len() as u32)
                .filter(|&f| {
                    self.triangles[f as usize]
                        .iter()
                        .all(|&v| self.vertices[v as usize][0] == at)
                })
                .collect();
            on == found
        }
    }

    #[test]
    fn two_boxes_sharing_a_face_meshed_differently_lose_both_sides() {
        let mut m = Mesh::default();
        m.cuboid([0.0; 3], [1.0; 3], [false; 6]);
        // The second box's face at x = 1 split along the other diagonal.
        m.cuboid(
            [1.0, 0.0, 0.0],
            [2.0, 1.0, 1.0],
            [true, false, false, false, false, false],
        );
        let found = m.faces();
        assert_eq!(found.len(), 4);
        assert!(m.all_at_x(&found, 1.0));
        // Meshed the same, the two sides are copies: the clean's, not this rule's (their rim
        // has three facets once the clean kept one copy).
        let mut copies = Mesh::default();
        copies.cuboid([0.0; 3], [1.0; 3], [false; 6]);
        copies.cuboid([1.0, 0.0, 0.0], [2.0, 1.0, 1.0], [false; 6]);
        copies.triangles.drain(12..14);
        assert!(copies.faces().is_empty());
    }

    #[test]
    fn a_box_inside_another_touching_its_face_keeps_it() {
        // The inner box shares the outer one's face at x = 0 from inside, its side of the face
        // wound the wrong way (as a flipped facet comes): the two sides then run opposite
        // ways, but both solids' sides leave the rim on the same side of the face, and
        // removing it would cut the outer box open.
        let mut m = Mesh::default();
        m.cuboid([0.0; 3], [2.0, 1.0, 1.0], [false; 6]);
        m.cuboid(
            [0.0; 3],
            [1.0, 1.0, 1.0],
            [true, false, false, false, false, false],
        );
        for t in &mut m.triangles[12..14] {
            t.reverse();
        }
        assert_eq!(pair_edges(&m.triangles).non_manifold_edges, 4);
        assert!(m.faces().is_empty());
    }

    #[test]
    fn a_hole_in_one_side_goes_with_the_face() {
        // One facet of the second box's side of the face missing (the rim edge it had keeps
        // three facets): still the two sides of one face.
        let mut m = Mesh::default();
        m.cuboid([0.0; 3], [1.0; 3], [false; 6]);
        m.cuboid(
            [1.0, 0.0, 0.0],
            [2.0, 1.0, 1.0],
            [true, false, false, false, false, false],
        );
        m.triangles.remove(12);
        let found = m.faces();
        assert_eq!(found.len(), 3);
        assert!(m.all_at_x(&found, 1.0));
        // A hole in both sides: not told apart from two open pieces.
        m.triangles.remove(2);
        assert!(m.faces().is_empty());
    }

    #[test]
    fn a_side_off_the_plane_or_of_another_size_is_no_shared_face() {
        // The second box's face bent: its centre pushed a thousandth into the first box (a
        // pyramid of four facets on the same rim, two millionths larger than the square).
        let mut m = Mesh::default();
        m.cuboid([0.0; 3], [1.0; 3], [false; 6]);
        m.cuboid([1.0, 0.0, 0.0], [2.0, 1.0, 1.0], [false; 6]);
        m.triangles.drain(12..14);
        let apex = m.at([0.999, 0.5, 0.5]);
        let ring = [
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 1.0],
            [1.0, 1.0, 1.0],
            [1.0, 1.0, 0.0],
        ];
        for k in 0..4 {
            let (a, b) = (m.at(ring[k]), m.at(ring[(k + 1) % 4]));
            m.triangles.push([a, b, apex]);
        }
        assert_eq!(pair_edges(&m.triangles).non_manifold_edges, 4);
        assert!(m.faces().is_empty());
        // Flat, the same pyramid's apex in the plane: one face again.
        let flat = m.triangles.len() as u32 - 4;
        m.vertices[apex as usize][0] = 1.0;
        assert_eq!(m.faces().len(), 6);
        assert!(m.faces().ends_with(&[flat, flat + 1, flat + 2, flat + 3]));
        // Flat but a smaller face: the second box's side of it one unit wider along y is no
        // longer on the same rim.
        let mut wide = Mesh::default();
        wide.cuboid([0.0; 3], [1.0; 3], [false; 6]);
        wide.cuboid(
            [1.0, 0.0, 0.0],
            [2.0, 2.0, 1.0],
            [true, false, false, false, false, false],
        );
        assert!(wide.faces().is_empty());
    }
}
