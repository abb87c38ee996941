//! Hole loops that bound one face with holes in it.
//!
//! A CAD face with a hole or a boss in it (a plate's top round a through-hole, round a pin
//! standing on it) has two rims: when the face is missing, the holes stage finds two loops in
//! one plane, one inside the other. Filled one by one, each gets a face of its own: the outer
//! one a face over the whole plate, hole included, and the inner one a face over the hole
//! (wound the other way, so the two lie on each other, a skin of no thickness over the hole)
//! or under the pin (which becomes a body of its own, standing on the plate). The face that
//! was there is the region between them.
//!
//! So before the loops are filled one by one, loops that lie in one plane (every vertex within
//! the rounding of its coordinates plus twice the weld's largest merge of the plane of the
//! loop's Newell normal through its centroid), one inside another and wound against it (their
//! normals opposite: what a face with holes has on its rims) are filled together, as one
//! region: a constrained Delaunay triangulation (spade) of all their vertices in the outer
//! loop's plane, with every loop edge a constraint, keeping the triangles inside the outer
//! loop and outside the inner ones. The fill is kept only when the loops cross neither
//! themselves nor each other (every constraint goes in whole), no triangle is degenerate, it
//! has the number of triangles a polygon with those holes has (vertices + 2 × holes − 2),
//! every loop edge is used once in its own direction, and no new edge repeats an edge of the
//! mesh or of another such fill; otherwise the loops are filled one by one, as before.
//!
//! Cost: planar loops are sorted by their plane; a loop looks for holes among the loops of
//! its plane, at most [`GROUP_MAX`] (a point-in-polygon test each, `O(n)`), and a
//! triangulation is
//! `O(n log n)` in its vertices, all the triangulations together at most four times the
//! loops' vertices (a try that fails leaves its loops to other tries).

use foldhash::{HashMap, HashSet};
use spade::{ConstrainedDelaunayTriangulation, Point2, Triangulation};

use crate::clean::{degenerate, rounding};
use crate::holes::{V3, cross, dot, norm, sub};

/// Loops of more edges than this are not looked at.
pub(crate) const ISLAND_MAX_EDGES: usize = 4096;

/// Loops of one plane (a run of the loops sorted by plane, each within the tolerances of the
/// next) looked at together, at most: a larger run is left to the loop-by-loop fills, so a
/// face's holes are either all found or none is.
const GROUP_MAX: usize = 256;

/// Two loops' planes are parallel when their normals are within this (the cosine of 0.06°).
const PARALLEL_COS: f64 = 1.0 - 5e-7;

/// Loops filled together, and their fill.
pub(crate) struct Island {
    /// The loops (indices into the loops given): the outer one first.
    pub loops: Vec<usize>,
    /// The fill, wound like the outer loop's surface.
    pub tris: Vec<[u32; 3]>,
}

/// A planar loop.
struct Flat {
    loop_index: usize,
    /// Unit Newell normal, in the loop's order.
    normal: V3,
    centroid: V3,
    /// Half the Newell normal's length: the area the loop encloses.
    area: f64,
    tol: f64,
    /// The normal turned so that its largest component is positive, and the plane's offset
    /// along it: loops of one plane sort next to each other.
    axis: usize,
    offset: f64,
}

/// The faces with holes among `loops` (vertex loops, each with its shell), whose fills must
/// not repeat an edge of `existing`; `snap` is the weld's largest merge.
pub(crate) fn faces_with_holes(
    v: &[[f32; 3]],
    loops: &[(Vec<u32>, u32)],
    existing: &HashSet<(u32, u32)>,
    snap: f64,
) -> Vec<Island> {
    let p = |i: u32| v[i as usize].map(f64::from);
    let mut flats: Vec<Flat> = loops
        .iter()
        .enumerate()
        .filter(|(_, (l, _))| (3..=ISLAND_MAX_EDGES).contains(&l.len()))
        .filter_map(|(i, (l, _))| flat(l, &p, snap).map(|f| Flat { loop_index: i, ..f }))
        .collect();
    if flats.len() < 2 {
        return Vec::new();
    }
    flats.sort_by(|a, b| a.axis.cmp(&b.axis).then(a.offset.total_cmp(&b.offset)));
    // Each loop's run of loops of one plane (`group[i]`: the run's range in sorted order).
    let mut group = vec![0..0; flats.len()];
    let mut start = 0;
    for i in 1..=flats.len() {
        let apart = i == flats.len() || {
            let (a, b) = (&flats[i - 1], &flats[i]);
            a.axis != b.axis || b.offset - a.offset > a.tol + b.tol
        };
        if apart {
            for g in &mut group[start..i] {
                *g = start..i;
            }
            start = i;
        }
    }
    // Outer loops, smallest first, so a hole goes to the nearest loop round it.
    let mut by_area: Vec<usize> = (0..flats.len()).collect();
    by_area.sort_by(|&a, &b| flats[a].area.total_cmp(&flats[b].area));
    let mut used = vec![false; flats.len()];
    let mut islands = Vec::new();
    // The chords of the islands found so far: two islands that share vertices must not add
    // one edge twice.
    let mut chords: HashSet<(u32, u32)> = HashSet::default();
    // Vertices the triangulations may take, over all tries (a try that fails leaves its loops
    // to other tries): a few times the loops' own, so a crafted plane of nested rims whose
    // fills all fail costs linear time.
    let mut budget = 4 * flats
        .iter()
        .map(|f| loops[f.loop_index].0.len())
        .sum::<usize>();
    for &o in &by_area {
        if used[o] || group[o].len() < 2 || group[o].len() > GROUP_MAX {
            continue;
        }
        let outer = &flats[o];
        let l = &loops[outer.loop_index].0;
        let (u, w) = basis(outer.normal);
        let to2 = |x: V3| {
            let d = sub(x, outer.centroid);
            [dot(d, u), dot(d, w)]
        };
        let ring: Vec<[f64; 2]> = l.iter().map(|&i| to2(p(i))).collect();
        let (lo, hi) = ring.iter().fold(
            ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]),
            |(lo, hi), q| {
                (
                    [lo[0].min(q[0]), lo[1].min(q[1])],
                    [hi[0].max(q[0]), hi[1].max(q[1])],
                )
            },
        );
        let within = |q: [f64; 2]| {
            (lo[0]..=hi[0]).contains(&q[0]) && (lo[1]..=hi[1]).contains(&q[1]) && inside(q, &ring)
        };
        // Loops of the same plane, wound against it, inside it.
        let near = group[o]
            .clone()
            .filter(|&j| j != o && !used[j])
            .filter(|&j| {
                let f = &flats[j];
                f.axis == outer.axis
                    && (f.offset - outer.offset).abs() <= f.tol + outer.tol
                    && dot(f.normal, outer.normal) <= -PARALLEL_COS
                    && f.area < outer.area
                    && within(to2(p(loops[f.loop_index].0[0])))
            });
        let holes: Vec<usize> = near.collect();
        if holes.is_empty() {
            continue;
        }
        let members: Vec<usize> = std::iter::once(o).chain(holes.iter().copied()).collect();
        let rings: Vec<&[u32]> = members
            .iter()
            .map(|&m| loops[flats[m].loop_index].0.as_slice())
            .collect();
        let size: usize = rings.iter().map(|r| r.len()).sum();
        if size > budget {
            break;
        }
        budget -= size;
        let taken = |e: &(u32, u32)| existing.contains(e) || chords.contains(e);
        if let Some(tris) = triangulate(v, &rings, &to2, outer.normal, taken) {
            for &m in &members {
                used[m] = true;
            }
            chords.extend(tris.iter().flat_map(|t| {
                (0..3).map(move |k| (t[k].min(t[(k + 1) % 3]), t[k].max(t[(k + 1) % 3])))
            }));
            islands.push(Island {
                loops: members.iter().map(|&m| flats[m].loop_index).collect(),
                tris,
            });
        }
    }
    islands
}

/// The plane of loop `l`, when every vertex lies on it (see the module).
fn flat(l: &[u32], p: &impl Fn(u32) -> V3, snap: f64) -> Option<Flat> {
    let n = l.len();
    let pts: Vec<V3> = l.iter().map(|&i| p(i)).collect();
    let c = pts
        .iter()
        .fold([0.0; 3], |s, q| [s[0] + q[0], s[1] + q[1], s[2] + q[2]])
        .map(|x| x / n as f64);
    let mut sum = [0.0; 3];
    for i in 0..n {
        let x = cross(sub(pts[i], c), sub(pts[(i + 1) % n], c));
        sum = [sum[0] + x[0], sum[1] + x[1], sum[2] + x[2]];
    }
    let len = norm(sum);
    if !(len.is_finite() && len > 0.0) {
        return None;
    }
    let normal = sum.map(|x| x / len);
    let far = pts.iter().flatten().fold(0.0f64, |m, &x| m.max(x.abs()));
    let tol = rounding(far) + 2.0 * snap;
    if !pts.iter().all(|&q| dot(sub(q, c), normal).abs() <= tol) {
        return None;
    }
    let axis = (0..3)
        .max_by(|&a, &b| normal[a].abs().total_cmp(&normal[b].abs()))
        .unwrap_or(0);
    let sign = normal[axis].signum();
    Some(Flat {
        loop_index: 0,
        normal,
        centroid: c,
        area: len / 2.0,
        tol,
        axis,
        offset: sign * dot(normal, c),
    })
}

/// Two unit vectors `u`, `w` with `u × w = n`.
fn basis(n: V3) -> (V3, V3) {
    let a = if n[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let u = cross(a, n);
    let u = u.map(|x| x / norm(u));
    (u, cross(n, u))
}

/// Is `q` inside the polygon `ring` (crossings of a ray along +x)?
fn inside(q: [f64; 2], ring: &[[f64; 2]]) -> bool {
    let mut odd = false;
    for i in 0..ring.len() {
        let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
        if (a[1] > q[1]) != (b[1] > q[1]) {
            let x = a[0] + (q[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if x > q[0] {
                odd = !odd;
            }
        }
    }
    odd
}

/// The region inside `rings[0]` and outside the others, triangulated (see the module's
/// checks); `None` when a check fails.
fn triangulate(
    v: &[[f32; 3]],
    rings: &[&[u32]],
    to2: &impl Fn(V3) -> [f64; 2],
    normal: V3,
    taken: impl Fn(&(u32, u32)) -> bool,
) -> Option<Vec<[u32; 3]>> {
    let p = |i: u32| v[i as usize].map(f64::from);
    let mut cdt = ConstrainedDelaunayTriangulation::<Point2<f64>>::new();
    let mut ids: Vec<u32> = Vec::new();
    let mut handles = Vec::with_capacity(rings.len());
    for ring in rings {
        let mut hs = Vec::with_capacity(ring.len());
        for &i in *ring {
            let [x, y] = to2(p(i));
            let h = cdt.insert(Point2::new(x, y)).ok()?;
            // A vertex of the same position as another: not a simple region.
            if h.index() != ids.len() {
                return None;
            }
            ids.push(i);
            hs.push(h);
        }
        handles.push(hs);
    }
    for hs in &handles {
        for k in 0..hs.len() {
            if cdt.try_add_constraint(hs[k], hs[(k + 1) % hs.len()]).len() != 1 {
                return None;
            }
        }
    }
    let polys: Vec<Vec<[f64; 2]>> = rings
        .iter()
        .map(|r| r.iter().map(|&i| to2(p(i))).collect())
        .collect();
    let mut tris = Vec::new();
    for face in cdt.inner_faces() {
        let vs = face.vertices().map(|h| h.fix().index());
        let q = vs.map(|k| polys_point(&polys, k));
        let c = [
            (q[0][0] + q[1][0] + q[2][0]) / 3.0,
            (q[0][1] + q[1][1] + q[2][1]) / 3.0,
        ];
        if !inside(c, &polys[0]) || polys[1..].iter().any(|r| inside(c, r)) {
            continue;
        }
        let mut t = vs.map(|k| ids[k]);
        let n = cross(sub(p(t[1]), p(t[0])), sub(p(t[2]), p(t[0])));
        if dot(n, normal) < 0.0 {
            t.swap(1, 2);
        }
        tris.push(t);
    }
    let corners: usize = rings.iter().map(|r| r.len()).sum();
    if tris.len() != corners + 2 * (rings.len() - 1) - 2 {
        return None;
    }
    // Every loop edge once, in its own direction; every other edge twice, one each way, and
    // not an edge of the mesh; no degenerate facet.
    let mut count: HashMap<(u32, u32), u32> = HashMap::default();
    for t in &tris {
        if degenerate(v, *t) {
            return None;
        }
        for k in 0..3 {
            *count.entry((t[k], t[(k + 1) % 3])).or_default() += 1;
        }
    }
    let mut own = HashSet::default();
    for r in rings {
        for k in 0..r.len() {
            let e = (r[k], r[(k + 1) % r.len()]);
            if count.get(&e) != Some(&1) || count.contains_key(&(e.1, e.0)) {
                return None;
            }
            own.insert(e);
        }
    }
    let chords_ok = count
        .iter()
        .filter(|(e, _)| !own.contains(e))
        .all(|(&(a, b), &c)| {
            c == 1 && count.get(&(b, a)) == Some(&1) && !taken(&(a.min(b), a.max(b)))
        });
    chords_ok.then_some(tris)
}

/// The 2D position of the `k`-th vertex over all `polys` in turn.
fn polys_point(polys: &[Vec<[f64; 2]>], mut k: usize) -> [f64; 2] {
    for r in polys {
        if k < r.len() {
            return r[k];
        }
        k -= r.len();
    }
    unreachable!("a triangulation's vertex is one of the loops'")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square loop of side `s` round `(cx, cy)` at height `z`, counter-clockwise seen from
    /// +z (or clockwise with `cw`), its vertices appended to `v`.
    fn square(v: &mut Vec<[f32; 3]>, c: [f32; 2], s: f32, z: f32, cw: bool) -> Vec<u32> {
        let h = s / 2.0;
        let mut l: Vec<u32> = [[-h, -h], [h, -h], [h, h], [-h, h]]
            .iter()
            .map(|d| {
                v.push([c[0] + d[0], c[1] + d[1], z]);
                (v.len() - 1) as u32
            })
            .collect();
        if cw {
            l.reverse();
        }
        l
    }

    fn islands(v: &[[f32; 3]], loops: &[Vec<u32>]) -> Vec<Island> {
        let loops: Vec<(Vec<u32>, u32)> = loops.iter().map(|l| (l.clone(), 0)).collect();
        faces_with_holes(v, &loops, &HashSet::default(), 0.0)
    }

    /// The signed area of the fill seen from +z, and whether every facet faces +z.
    fn area_up(v: &[[f32; 3]], tris: &[[u32; 3]]) -> (f64, bool) {
        let mut up = true;
        let mut area = 0.0;
        for t in tris {
            let p = t.map(|i| v[i as usize].map(f64::from));
            let n = cross(sub(p[1], p[0]), sub(p[2], p[0]));
            up &= n[2] > 0.0;
            area += n[2] / 2.0;
        }
        (area, up)
    }

    #[test]
    fn a_face_with_holes_is_filled_between_its_rims() {
        // A 10 x 10 square round two 2 x 2 holes, the holes' rims wound against it.
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let a = square(&mut v, [-2.0, 0.0], 2.0, 1.0, true);
        let b = square(&mut v, [2.5, 1.0], 2.0, 1.0, true);
        let found = islands(&v, &[outer, a, b]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].loops, [0, 1, 2]);
        // 12 vertices and two holes: 12 + 2 × 2 − 2 triangles, covering 100 − 8, all up.
        assert_eq!(found[0].tris.len(), 14);
        let (area, up) = area_up(&v, &found[0].tris);
        assert!((area - 92.0).abs() < 1e-9 && up, "{area} {up}");
    }

    #[test]
    fn loops_wound_alike_apart_or_crossing_are_no_face_with_holes() {
        // Wound the same way as the square round them: two faces, one on the other.
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let inner = square(&mut v, [0.0, 0.0], 2.0, 1.0, false);
        assert!(islands(&v, &[outer, inner]).is_empty());
        // A tenth out of the plane.
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let inner = square(&mut v, [0.0, 0.0], 2.0, 1.1, true);
        assert!(islands(&v, &[outer, inner]).is_empty());
        // Crossing the outer rim (one corner inside it, so the pair is tried).
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let inner = square(&mut v, [5.5, 5.5], 2.0, 1.0, true);
        assert!(islands(&v, &[outer, inner]).is_empty());
        // Outside it.
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let inner = square(&mut v, [20.0, 0.0], 2.0, 1.0, true);
        assert!(islands(&v, &[outer, inner]).is_empty());
    }

    #[test]
    fn a_fill_repeating_an_edge_of_the_mesh_is_refused() {
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let inner = square(&mut v, [0.0, 0.0], 2.0, 1.0, true);
        let loops = vec![(outer, 0), (inner, 0)];
        let free = faces_with_holes(&v, &loops, &HashSet::default(), 0.0);
        assert_eq!(free.len(), 1);
        // Every chord of that fill, already an edge of the mesh: refused.
        for t in &free[0].tris {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                if (a < 4) != (b < 4) {
                    let existing: HashSet<(u32, u32)> = HashSet::from_iter([(a.min(b), a.max(b))]);
                    assert!(faces_with_holes(&v, &loops, &existing, 0.0).is_empty());
                }
            }
        }
    }
}
