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
//! loop and outside the inner ones (those to the left of the loop edges and those reached
//! from them without crossing one). It is not tried when the surface facet across a loop edge
//! folds back onto the fill (their normals within 45° of opposite: the rims' own surface
//! lies inside the region, as the annulus between the rims of two gaps does). The fill is
//! kept only when the loops cross neither
//! themselves nor each other (every constraint goes in whole), no triangle is degenerate, it
//! has the number of triangles a polygon with those holes has (vertices + 2 × holes − 2),
//! every loop edge is used once in its own direction, and no new edge repeats an edge of the
//! mesh or of another such fill; otherwise the loops are filled one by one, as before.
//!
//! Cost: planar loops are sorted by their plane; a loop looks for holes among the loops of
//! its plane, at most [`GROUP_MAX`] (a point-in-polygon test each, `O(n)`), and a
//! triangulation is `O(n log n)` in its vertices, all the triangulations together at most
//! four times the loops' vertices (a try that fails leaves its loops to other tries).

use foldhash::{HashMap, HashSet};
use spade::handles::FixedVertexHandle;
use spade::{ConstrainedDelaunayTriangulation, Point2, Triangulation};

use crate::clean::{degenerate, rounding};
use crate::holes::{Across, V3, cross, dot, newell, norm, normal_across, sub};

/// Loops of more edges than this are not looked at.
pub(crate) const ISLAND_MAX_EDGES: usize = 4096;

/// Loops of one plane (a run of the loops sorted by plane, each within the tolerances of the
/// next) looked at together, at most: a larger run is left to the loop-by-loop fills, so a
/// face's holes are either all found or none is.
const GROUP_MAX: usize = 256;

/// Two loops' planes are parallel when their normals are within this (the cosine of 0.06°).
const PARALLEL_COS: f64 = 1.0 - 5e-7;

/// A fill facet folds back onto the surface facet across its loop edge when their normals
/// are within 45° of opposite.
const FOLD_COS: f64 = std::f64::consts::FRAC_1_SQRT_2;

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
    across: &Across,
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
        // The fill lies in the outer loop's plane, facing its way: it must not fold back onto
        // the surface facet across any loop edge (their normals within 45° of opposite). A
        // region whose rims' own surface lies inside it, in its plane (an annulus that is
        // there, between the rims of the gaps on either side), is no missing face.
        let folds = rings.iter().any(|r| {
            (0..r.len()).any(|k| {
                normal_across(v, across, r[k], r[(k + 1) % r.len()])
                    .is_some_and(|m| dot(m, outer.normal) < -FOLD_COS)
            })
        });
        if folds {
            continue;
        }
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
    let pts: Vec<V3> = l.iter().map(|&i| p(i)).collect();
    let (c, sum) = newell(&pts);
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
    // Bulk loading (`O(n log n)`); inserting a ring's points one by one, in order round it,
    // cost a flip per point already in: 16 s for 64 rings of 4 096.
    let ids: Vec<u32> = rings.iter().flat_map(|r| r.iter().copied()).collect();
    let points: Vec<Point2<f64>> = ids
        .iter()
        .map(|&i| {
            let [x, y] = to2(p(i));
            Point2::new(x, y)
        })
        .collect();
    let mut edges = Vec::with_capacity(ids.len());
    let mut start = 0;
    for r in rings {
        edges.extend((0..r.len()).map(|k| [start + k, start + (k + 1) % r.len()]));
        start += r.len();
    }
    let mut conflicts = 0;
    let cdt = ConstrainedDelaunayTriangulation::<Point2<f64>>::try_bulk_load_cdt(
        points,
        edges.clone(),
        |_| conflicts += 1,
    )
    .ok()?;
    // No two vertices in one place (the order is kept, so a handle's index is the input's),
    // no loop crossing another or itself, every loop edge whole (not split at a vertex on it).
    if conflicts > 0
        || cdt.num_vertices() != ids.len()
        || !edges.iter().all(|&[a, b]| {
            cdt.exists_constraint(
                FixedVertexHandle::from_index(a),
                FixedVertexHandle::from_index(b),
            )
        })
    {
        return None;
    }
    // The region: the faces to the left of every loop edge (the outer loop runs
    // counter-clockwise in the plane's basis, the inner ones clockwise), and every face
    // reached from them without crossing a loop edge. One that reaches the outside (a loop
    // that does not close the region) is no region.
    let mut region = vec![false; cdt.num_all_faces()];
    let mut stack = Vec::new();
    for &[a, b] in &edges {
        let e = cdt.get_edge_from_neighbors(
            FixedVertexHandle::from_index(a),
            FixedVertexHandle::from_index(b),
        )?;
        let f = e.face().as_inner()?;
        if !std::mem::replace(&mut region[f.fix().index()], true) {
            stack.push(f.fix());
        }
    }
    let mut tris = Vec::new();
    while let Some(f) = stack.pop() {
        let face = cdt.face(f);
        for e in face.adjacent_edges() {
            if e.is_constraint_edge() {
                continue;
            }
            let g = e.rev().face().as_inner()?;
            if !std::mem::replace(&mut region[g.fix().index()], true) {
                stack.push(g.fix());
            }
        }
        let mut t = face.vertices().map(|h| ids[h.fix().index()]);
        let n = cross(sub(p(t[1]), p(t[0])), sub(p(t[2]), p(t[0])));
        if dot(n, normal) < 0.0 {
            t.swap(1, 2);
        }
        tris.push(t);
    }
    // In the order of the faces (not of the walk), so the output does not depend on it.
    tris.sort_unstable();
    let corners: usize = rings.iter().map(|r| r.len()).sum();
    if tris.len() != corners + 2 * (rings.len() - 1) - 2 {
        return None;
    }
    // Every loop edge once, in its own direction; every other edge twice, one each way, and
    // not an edge of the mesh; no degenerate facet.
    let mut count: HashMap<(u32, u32), u32> =
        HashMap::with_capacity_and_hasher(3 * tris.len(), Default::default());
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
        faces_with_holes(v, &loops, &HashSet::default(), &Across::default(), 0.0)
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
    fn the_rims_of_a_ring_that_is_there_are_no_face_with_holes() {
        // An annulus between squares of side 2 and 4, facing +z: its hole loops are the
        // outer rim, wound clockwise, and the inner one, counter-clockwise. Between them lies
        // the annulus itself: a fill there would fold back onto it.
        let mut v = Vec::new();
        let inner = square(&mut v, [0.0, 0.0], 2.0, 0.0, false);
        let outer = square(&mut v, [0.0, 0.0], 4.0, 0.0, false);
        let mut t = Vec::new();
        for k in 0..4 {
            let j = (k + 1) % 4;
            t.push([inner[k], outer[k], outer[j]]);
            t.push([inner[k], outer[j], inner[j]]);
        }
        let across: Across = t
            .iter()
            .flat_map(|f| (0..3).map(move |k| ((f[k], f[(k + 1) % 3]), f[(k + 2) % 3])))
            .collect();
        let rim: Vec<u32> = outer.iter().rev().copied().collect();
        let loops = vec![(rim, 0), (inner, 0)];
        assert!(faces_with_holes(&v, &loops, &HashSet::default(), &across, 0.0).is_empty());
        // The same loops with no surface across them are a face with a hole.
        let found = faces_with_holes(&v, &loops, &HashSet::default(), &Across::default(), 0.0);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn a_fill_repeating_an_edge_of_the_mesh_is_refused() {
        let mut v = Vec::new();
        let outer = square(&mut v, [0.0, 0.0], 10.0, 1.0, false);
        let inner = square(&mut v, [0.0, 0.0], 2.0, 1.0, true);
        let loops = vec![(outer, 0), (inner, 0)];
        let free = faces_with_holes(&v, &loops, &HashSet::default(), &Across::default(), 0.0);
        assert_eq!(free.len(), 1);
        // Every chord of that fill, already an edge of the mesh: refused.
        for t in &free[0].tris {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                if (a < 4) != (b < 4) {
                    let existing: HashSet<(u32, u32)> = HashSet::from_iter([(a.min(b), a.max(b))]);
                    let across = Across::default();
                    assert!(faces_with_holes(&v, &loops, &existing, &across, 0.0).is_empty());
                }
            }
        }
    }
}
