//! Zipping: a boundary edge that a boundary vertex lies on is split at that vertex.
//!
//! Where two patches of one surface meet with different subdivisions (CAD exporters mesh
//! every face on its own; a box face of two facets next to one of a hundred), the seam holds
//! the vertices of both sides, and a vertex of one side lies on an edge of the other: a
//! T-junction. No vertex has a copy on the other side, so neither the weld nor the stitch can
//! join them, and the patches stay apart: each would become a shell of its own, its rim a
//! hole filled flat. Such a seam runs between two shells as often as inside one, so it is
//! zipped here, before the shells are found, across the whole model.
//!
//! Every boundary edge `a → b` (of facet `(a, b, c)`) is split at the boundary vertices that
//! lie on it ([`lies_on`]): within rounding of the segment (plus the weld's largest merge,
//! where that is under a quarter of the distance to either end), and farther than that from
//! both ends. Splitting an edge at a point that lies on it does not move the surface. A facet
//! split along one edge becomes a fan from its opposite corner through the points; one split
//! along two or three edges is cut into ears at its true corners (never three points on one
//! line), so no facet added is flat and no vertex is added. The new edges are the twins of
//! the other side's, which is split the same way at this side's vertices, so the seam pairs
//! exactly when the edges are paired again.
//!
//! Finding the vertices on an edge is a join, not a pairwise search: boundary vertices are
//! filed under the cells of a grid (every cell their rounding box touches) and boundary edges
//! under every cell their segment passes through (a 3-D digital line walk), both sorted by
//! cell. The cell side starts at the median boundary edge and grows when the edges' walks
//! would pass more than [`CELLS_PER_EDGE`] cells each on average, and a cell holding more than
//! [`CELL_MAX_PAIRS`] vertex–edge pairs is skipped (counted), so a crafted pile of boundary
//! costs linear time.

use rayon::prelude::*;

use crate::clean::{self, rounding};
use crate::holes::{cross, dot, norm, sub};
use crate::keys::{self, hash3, hi, lo, pack};
use crate::topology::{self, half_edge};

/// The cells the edges' walks may pass, on average per boundary edge (the cell side grows
/// until they fit).
const CELLS_PER_EDGE: f64 = 16.0;
/// A cell with more vertex–edge pairs to check than this is skipped.
const CELL_MAX_PAIRS: usize = 4096;
/// A facet split along two or three edges is cut into ears only when it has at most this many
/// corners and points (`O(n²)`); a larger one is left as it is.
const POLYGON_MAX: usize = 256;

/// A boundary edge of one cell of the zip's join: its half-edge, facet, end points and box
/// (grown by the largest distance at which a point counts as lying on it).
type CellEdge = (u32, [u32; 3], [f64; 3], [f64; 3], ([f64; 3], [f64; 3]));

/// What a zip did.
#[derive(Debug, Default)]
pub(crate) struct Zipped {
    /// For every facet appended to the triangles, the facet it was split from.
    pub origin: Vec<u32>,
    /// Facets split.
    pub facets_split: u64,
    /// Boundary edges split.
    pub edges_split: u64,
    /// Points inserted into boundary edges.
    pub points: u64,
    /// Grid cells skipped as too crowded to search.
    pub cells_skipped: u64,
}

/// Where `w` lies on the segment `a → b`: its distance from `a` along the segment, when it is
/// within [`rounding`] of the segment (plus `snap`, where that is below a quarter of its
/// distance to either end) and farther than that from both ends.
pub(crate) fn lies_on(a: [f64; 3], b: [f64; 3], w: [f64; 3], snap: f64) -> Option<f64> {
    let d = sub(b, a);
    let len2 = dot(d, d);
    if len2 == 0.0 {
        return None;
    }
    let len = len2.sqrt();
    let aw = sub(w, a);
    let along = dot(aw, d) / len;
    if along <= 0.0 || along >= len {
        return None;
    }
    let off = norm(cross(aw, d)) / len;
    let largest = [a, b, w]
        .iter()
        .flatten()
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let end = along.min(len - along);
    let within = rounding(largest) + snap.min(end / 4.0);
    (end > within && off <= within).then_some(along)
}

/// Is `u` on the line through `a` and `b`, within [`rounding`] plus `snap`?
fn on_line(a: [f64; 3], b: [f64; 3], u: [f64; 3], snap: f64) -> bool {
    let d = sub(b, a);
    let len = norm(d);
    let largest = [a, b, u]
        .iter()
        .flatten()
        .fold(0.0f64, |m, x| m.max(x.abs()));
    len > 0.0 && norm(cross(sub(u, a), d)) / len <= rounding(largest) + snap
}

/// Split every boundary edge at the boundary vertices that lie on it within rounding (see the
/// module doc). `twin` and `loose` are the pairing of `triangles` (boundary half-edges have no
/// twin and are not loose); `snap` is the weld's largest merge: a facet is not split when a
/// piece would be flat by the clean stage's rule ([`clean::flat`]), so repairing the output
/// again removes nothing. Split facets are rewritten in place and the rest of their pieces
/// appended. Returns `None` when nothing was split and no cell was skipped.
pub(crate) fn zip(
    v: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    twin: &[u32],
    loose: &[u32],
    snap: f64,
) -> Option<Zipped> {
    let p = |i: u32| v[i as usize].map(f64::from);
    let boundary = topology::boundary_half_edges(twin, loose);
    if boundary.len() < 2 {
        return None;
    }
    let tris: &[[u32; 3]] = triangles;
    let mut ends: Vec<u32> = boundary
        .par_iter()
        .flat_map_iter(|&h| {
            let (a, b) = half_edge(tris, h);
            [a, b]
        })
        .collect();
    ends.par_sort_unstable();
    ends.dedup();
    let bbox = keys::par_bbox(v)?;
    let largest = bbox
        .min
        .iter()
        .chain(&bbox.max)
        .fold(0.0f64, |m, x| m.max(f64::from(*x).abs()));
    let reach = rounding(largest) + snap;
    let origin = bbox.min.map(f64::from);

    // The cell side: the median boundary edge, grown until the walks fit the budget.
    let mut lengths: Vec<(f64, f64)> = boundary
        .par_iter()
        .map(|&h| {
            let (a, b) = half_edge(tris, h);
            let d = sub(p(b), p(a));
            (norm(d), d.iter().map(|x| x.abs()).sum())
        })
        .collect();
    let manhattan: f64 = lengths.iter().map(|l| l.1).sum();
    let mid = lengths.len() / 2;
    let median = lengths
        .select_nth_unstable_by(mid, |x, y| x.0.total_cmp(&y.0))
        .1
        .0;
    drop(lengths);
    let side = median
        .max(manhattan / (CELLS_PER_EDGE * boundary.len() as f64))
        .max(4.0 * reach);
    if !(side.is_finite() && side > 0.0) {
        return None;
    }
    let cell = |g: [i64; 3]| hash3(g[0] as u32, g[1] as u32, g[2] as u32);
    let grid = |x: [f64; 3]| -> [f64; 3] { std::array::from_fn(|i| (x[i] - origin[i]) / side) };

    // Both lists are made a chunk at a time (one vector each, not one per vertex or edge:
    // millions of them on a cloud of separate triangles).
    const CHUNK: usize = 4096;
    let mut vertex_keys: Vec<u64> = ends
        .par_chunks(CHUNK)
        .flat_map_iter(|ws| {
            let mut out = Vec::with_capacity(ws.len() + ws.len() / 4);
            for &w in ws {
                let x = p(w);
                let lo_cell = grid(x.map(|c| c - reach)).map(|c| c.floor() as i64);
                let hi_cell = grid(x.map(|c| c + reach)).map(|c| c.floor() as i64);
                for i in lo_cell[0]..=hi_cell[0] {
                    for j in lo_cell[1]..=hi_cell[1] {
                        for k in lo_cell[2]..=hi_cell[2] {
                            out.push(pack(cell([i, j, k]), w));
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut edge_keys: Vec<u64> = boundary
        .par_chunks(CHUNK)
        .flat_map_iter(|hs| {
            let mut out = Vec::with_capacity(3 * hs.len());
            for &h in hs {
                let (a, b) = half_edge(tris, h);
                walk(grid(p(a)), grid(p(b)), |g| out.push(pack(cell(g), h)));
            }
            out
        })
        .collect();
    keys::sort(&mut vertex_keys);
    keys::sort(&mut edge_keys);
    // Every boundary vertex's neighbours along the boundary.
    let mut along_boundary: Vec<u64> = boundary
        .par_iter()
        .flat_map_iter(|&h| {
            let (a, b) = half_edge(tris, h);
            [pack(a, b), pack(b, a)]
        })
        .collect();
    keys::sort(&mut along_boundary);
    let neighbours = |w: u32| {
        let start = along_boundary.partition_point(|&k| hi(k) < w);
        along_boundary[start..]
            .iter()
            .take_while(move |&&k| hi(k) == w)
            .map(|&k| lo(k))
    };
    // `w` lies on `a → b`, and the boundary runs along that line on one side of it: a
    // neighbour of `w` along the boundary is on the line through `a` and `b` too (within
    // rounding and the weld's reach). A vertex that is merely near an edge (a copy the stitch
    // left apart) has no such chain.
    // And `w` is farther than twice the reach from both ends: near an end, a vertex within the
    // noise of the edge is as likely a copy of that end's neighbour (the rim of a fan finer
    // than the noise).
    let seam = |a: u32, b: u32, pa: [f64; 3], pb: [f64; 3], w: u32, pw: [f64; 3]| {
        let along = lies_on(pa, pb, pw, snap)?;
        if along.min(norm(sub(pb, pa)) - along) <= 2.0 * reach {
            return None;
        }
        neighbours(w)
            .any(|u| u == a || u == b || on_line(pa, pb, p(u), snap))
            .then_some(along)
    };

    // Join the two lists cell by cell: (half-edge, distance along it, vertex). A cell's edges
    // are read once into a buffer, not once per vertex of the cell (where the boundary fills
    // space, as in a cloud of separate triangles, a cell holds several of each).
    let chunks = keys::run_chunks(&vertex_keys, keys::parts_for(vertex_keys.len()));
    let (mut found, skipped): (Vec<(u32, f64, u32)>, u64) = chunks
        .par_iter()
        .map(|r| {
            let mut found = Vec::new();
            let mut skipped = 0;
            let mut cell: Vec<CellEdge> = Vec::new();
            let vk = &vertex_keys[r.clone()];
            let mut i = 0;
            // The cells come in order: each one's edges are searched for from the last one's.
            let mut hint = 0;
            while i < vk.len() {
                let c = hi(vk[i]);
                let next = c.checked_add(1).map(|n| pack(n, 0));
                let run = next.map_or(vk.len(), |n| keys::lower_bound_from(vk, n, i)) - i;
                let start = keys::lower_bound_from(&edge_keys, pack(c, 0), hint);
                hint = start;
                let len = next.map_or(edge_keys.len(), |n| {
                    keys::lower_bound_from(&edge_keys, n, start)
                }) - start;
                if run * len > CELL_MAX_PAIRS {
                    skipped += 1;
                } else if len > 0 {
                    cell.clear();
                    cell.extend(edge_keys[start..start + len].iter().map(|&ek| {
                        let h = lo(ek);
                        let (a, b) = half_edge(tris, h);
                        let (pa, pb) = (p(a), p(b));
                        // No point farther than `reach` from the segment lies on it (the box
                        // is grown by twice that, for rounding).
                        let low = [0, 1, 2].map(|k| pa[k].min(pb[k]) - 2.0 * reach);
                        let high = [0, 1, 2].map(|k| pa[k].max(pb[k]) + 2.0 * reach);
                        (h, tris[h as usize / 3], pa, pb, (low, high))
                    }));
                    for &wk in &vk[i..i + run] {
                        let (w, pw) = (lo(wk), p(lo(wk)));
                        for &(h, t, pa, pb, (low, high)) in &cell {
                            let outside = (0..3).any(|k| pw[k] < low[k] || pw[k] > high[k]);
                            if outside || t.contains(&w) {
                                continue;
                            }
                            let (a, b) = (t[(h % 3) as usize], t[(h % 3 + 1) as usize % 3]);
                            if let Some(along) = seam(a, b, pa, pb, w, pw) {
                                found.push((h, along, w));
                            }
                        }
                    }
                }
                i += run;
            }
            (found, skipped)
        })
        .reduce(
            || (Vec::new(), 0),
            |mut x, y| {
                x.0.extend(y.0);
                (x.0, x.1 + y.1)
            },
        );
    drop(vertex_keys);
    drop(edge_keys);
    found.par_sort_unstable_by(|x, y| {
        (x.0.cmp(&y.0))
            .then(x.1.total_cmp(&y.1))
            .then(x.2.cmp(&y.2))
    });
    // A point found in two cells is one point; two points of one edge closer than `reach`
    // along it would make a flat piece: the first is kept.
    found.dedup_by(|x, kept| x.0 == kept.0 && x.1 - kept.1 <= reach);
    let mut zipped = Zipped {
        cells_skipped: skipped,
        ..Zipped::default()
    };
    if found.is_empty() {
        return (skipped > 0).then_some(zipped);
    }

    // One facet at a time (its split edges are adjacent in `found`).
    let mut start = 0;
    while start < found.len() {
        let f = found[start].0 / 3;
        let end = start + found[start..].partition_point(|x| x.0 / 3 == f);
        let on = &found[start..end];
        start = end;
        let t = triangles[f as usize];
        let mut points: [Vec<u32>; 3] = Default::default();
        for &(h, _, w) in on {
            points[(h % 3) as usize].push(w);
        }
        let Some(pieces) = split_facet(t, &points) else {
            continue;
        };
        if pieces.iter().any(|&piece| clean::flat(v, piece, snap)) {
            continue;
        }
        zipped.facets_split += 1;
        zipped.edges_split += points.iter().filter(|p| !p.is_empty()).count() as u64;
        zipped.points += on.len() as u64;
        triangles[f as usize] = pieces[0];
        triangles.extend_from_slice(&pieces[1..]);
        zipped
            .origin
            .extend(std::iter::repeat_n(f, pieces.len() - 1));
    }
    Some(zipped)
}

/// The pieces of facet `t` split at `points[k]` (ordered from corner `k` to corner `k + 1`)
/// along its edges: a fan from the opposite corner when one edge is split, ears cut at true
/// corners otherwise. Every piece winds like `t`, and none has three corners on one edge.
/// `None` when a polygon is too large ([`POLYGON_MAX`]) or no ear can be cut.
fn split_facet(t: [u32; 3], points: &[Vec<u32>; 3]) -> Option<Vec<[u32; 3]>> {
    let split: Vec<usize> = (0..3).filter(|&k| !points[k].is_empty()).collect();
    if let [k] = split[..] {
        let c = t[(k + 2) % 3];
        let chain: Vec<u32> = std::iter::once(t[k])
            .chain(points[k].iter().copied())
            .chain(std::iter::once(t[(k + 1) % 3]))
            .collect();
        return Some(chain.windows(2).map(|w| [w[0], w[1], c]).collect());
    }
    // The polygon round the facet, each vertex with the edges (bits) it lies on.
    let mut poly: Vec<(u32, u8)> = Vec::new();
    for k in 0..3 {
        poly.push((t[k], 1 << k | 1 << ((k + 2) % 3)));
        poly.extend(points[k].iter().map(|&w| (w, 1 << k)));
    }
    if poly.len() > POLYGON_MAX {
        return None;
    }
    let mut pieces = Vec::with_capacity(poly.len() - 2);
    while poly.len() > 3 {
        let n = poly.len();
        // An ear at a true corner whose new edge joins two different lines, so neither the
        // ear nor what is left is flat.
        let ear = (0..n).find(|&i| {
            let (x, y, z) = (poly[(i + n - 1) % n].1, poly[i].1, poly[(i + 1) % n].1);
            x & y & z == 0 && x & z == 0
        })?;
        pieces.push([
            poly[(ear + n - 1) % n].0,
            poly[ear].0,
            poly[(ear + 1) % n].0,
        ]);
        poly.remove(ear);
    }
    if poly[0].1 & poly[1].1 & poly[2].1 != 0 {
        return None;
    }
    pieces.push([poly[0].0, poly[1].0, poly[2].0]);
    Some(pieces)
}

/// The grid cells (integer coordinates) the segment `a → b` (in cell units) passes through,
/// in order, each given to `visit`.
fn walk(a: [f64; 3], b: [f64; 3], mut visit: impl FnMut([i64; 3])) {
    let mut c = a.map(|x| x.floor() as i64);
    let last = b.map(|x| x.floor() as i64);
    let d = sub(b, a);
    let step: [i64; 3] = std::array::from_fn(|i| (d[i] > 0.0) as i64 - (d[i] < 0.0) as i64);
    let mut next: [f64; 3] = std::array::from_fn(|i| match step[i] {
        1 => ((c[i] + 1) as f64 - a[i]) / d[i],
        -1 => (c[i] as f64 - a[i]) / d[i],
        _ => f64::INFINITY,
    });
    let delta: [f64; 3] = std::array::from_fn(|i| 1.0 / d[i].abs());
    let count = (0..3).map(|i| (last[i] - c[i]).unsigned_abs()).sum::<u64>() as usize + 1;
    visit(c);
    for _ in 1..count {
        let axis = (0..3)
            .min_by(|&i, &j| next[i].total_cmp(&next[j]))
            .unwrap_or(0);
        if step[axis] == 0 {
            break;
        }
        c[axis] += step[axis];
        next[axis] += delta[axis];
        visit(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(a: [f64; 3], b: [f64; 3]) -> Vec<[i64; 3]> {
        let mut out = Vec::new();
        walk(a, b, |c| out.push(c));
        out
    }

    #[test]
    fn a_walk_passes_every_cell_the_segment_does() {
        let cells = walked([0.5, 0.5, 0.5], [2.5, 1.5, 0.5]);
        assert_eq!(cells.first(), Some(&[0, 0, 0]));
        assert_eq!(cells.last(), Some(&[2, 1, 0]));
        assert_eq!(cells.len(), 4);
        // Every step moves one cell along one axis.
        for w in cells.windows(2) {
            let moved: i64 = (0..3).map(|i| (w[1][i] - w[0][i]).abs()).sum();
            assert_eq!(moved, 1);
        }
        assert_eq!(walked([1.2, 3.4, 5.6], [1.7, 3.1, 5.9]), vec![[1, 3, 5]]);
        assert_eq!(walked([0.5, 0.5, 0.5], [-1.5, 0.5, 0.5]).len(), 3);
    }

    #[test]
    fn one_split_edge_is_a_fan_from_the_opposite_corner() {
        let pieces = split_facet([0, 1, 2], &[vec![3, 4], vec![], vec![]]).unwrap();
        assert_eq!(pieces, vec![[0, 3, 2], [3, 4, 2], [4, 1, 2]]);
    }

    #[test]
    fn split_edges_never_give_a_flat_piece() {
        // Facet 0 1 2; points 3, 4 on edge 0–1, 5 on 1–2, 6, 7 on 2–0.
        let line = |x: u32| match x {
            0 => 0b101,
            1 => 0b011,
            2 => 0b110,
            3 | 4 => 0b001,
            5 => 0b010,
            _ => 0b100,
        };
        for points in [
            [vec![3, 4], vec![5], vec![]],
            [vec![3], vec![5], vec![6, 7]],
            [vec![], vec![5], vec![6, 7]],
        ] {
            let pieces = split_facet([0, 1, 2], &points).unwrap();
            let corners: usize = points.iter().map(Vec::len).sum::<usize>() + 3;
            assert_eq!(pieces.len(), corners - 2, "{points:?}");
            for p in &pieces {
                assert_eq!(line(p[0]) & line(p[1]) & line(p[2]), 0, "{p:?} is flat");
            }
            // Every edge of the split boundary is used once, in the facet's direction.
            let mut rim: Vec<u32> = Vec::new();
            for k in 0..3u32 {
                rim.push(k);
                rim.extend(&points[k as usize]);
            }
            let n = rim.len();
            for i in 0..n {
                let (a, b) = (rim[i], rim[(i + 1) % n]);
                let uses = pieces
                    .iter()
                    .filter(|p| (0..3).any(|k| p[k] == a && p[(k + 1) % 3] == b))
                    .count();
                assert_eq!(uses, 1, "{a}→{b} in {pieces:?}");
            }
        }
    }

    #[test]
    fn a_point_lies_on_an_edge_only_within_rounding_and_away_from_its_ends() {
        let (a, b) = ([0.0, 0.0, 0.0], [10.0, 0.0, 0.0]);
        assert_eq!(lies_on(a, b, [4.0, 0.0, 0.0], 0.0), Some(4.0));
        assert!(lies_on(a, b, [4.0, 1e-6, 0.0], 0.0).is_some());
        assert!(lies_on(a, b, [4.0, 1e-4, 0.0], 0.0).is_none());
        assert!(lies_on(a, b, [4.0, 1e-4, 0.0], 2e-4).is_some());
        assert!(lies_on(a, b, [1e-7, 0.0, 0.0], 0.0).is_none());
        assert!(lies_on(a, b, [-1.0, 0.0, 0.0], 0.0).is_none());
        assert!(lies_on(a, b, [11.0, 0.0, 0.0], 0.0).is_none());
    }
}
