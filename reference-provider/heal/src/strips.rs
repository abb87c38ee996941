//! Strips: two boundary chains that run alongside each other are joined by a strip of facets.
//!
//! Where two patches of one curved surface were meshed apart (a cylinder's wall in 64
//! segments, its caps in 48; a plate's hole in 32, the hole's wall in 40), the seam's two
//! sides are two polylines on the same curve, off each other by the chords' sagitta: far more
//! than rounding, so neither the weld, the stitch nor the zip joins them. Each patch would
//! stay a shell of its own and its rim would be filled onto itself (a flat shell).
//!
//! The boundary is cut into chains at its branch vertices (where the two sides meet: more
//! than one boundary edge leaves or enters), and two chains are candidates when they join the
//! same two branch vertices, or when both are closed (no branch vertex on them), of about the
//! same length, and their centroids are near. The strip between them is the classic zipper
//! of two polylines: walking both from one end, the next facet takes the next edge of the
//! chain whose new diagonal is shorter. It is made only when every vertex of each chain lies
//! within [`MAX_WIDTH`] of the length of the other chain's nearest edge (the chains lie along
//! each other, not across a hole; a walk out of step stops at the first vertex it leaves
//! behind), every facet is a sliver (its height over its longest edge at most [`MAX_WIDTH`]),
//! none is flat by the clean stage's rule ([`clean::flat`], so a repair of the output removes
//! nothing), none folds back over the mesh's facet on the edge it takes ([`folds`]: the rims
//! of a narrow open band lie along each other too, but with the band between them), and no
//! diagonal is an edge the mesh or another strip has already. Every facet uses a chain's
//! boundary edge the other way round, so the
//! strip pairs with both sides when the edges are paired again; a side wound the other way
//! is turned by the winding stage like any other.
//!
//! Cost: chains are found in one pass over the boundary (sorted), pairs by a hash of their
//! end vertices or a grid of centroids, at most [`MAX_TRIES`] tries per chain, each linear in
//! the two chains' lengths.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::holes::{cross, dot, half_edges_within, norm, sub, vertex_set};
use crate::topology::{self, half_edge};
use crate::{clean, keys};

/// A chain's vertices may be at most this far from the other chain, relative to the length of
/// its nearest edge; and a strip's facets at most this high, relative to their longest edge.
pub(crate) const MAX_WIDTH: f64 = 0.2;
/// A strip facet within this angle of the mesh's facet on the same edge (seen along the edge)
/// folds back over it (see [`folds`]).
const FOLD_ANGLE: f64 = std::f64::consts::FRAC_PI_4;
/// Candidate partners tried per chain.
const MAX_TRIES: usize = 8;
/// Closed chains looked at per chain when searching for partners (a crafted pile of rims in
/// one place costs no more than this each).
const MAX_SCAN: usize = 64;
/// Closed chains are paired only when their lengths differ by at most this fraction.
const LENGTH_RATIO: f64 = 0.1;

/// What the strips did.
#[derive(Debug, Default)]
pub(crate) struct Strips {
    /// Strips made (pairs of chains joined).
    pub strips: u64,
    /// Facets appended.
    pub facets: u64,
}

/// A chain of boundary vertices in hole direction (the reverse of the surface's), and
/// whether it is closed (its last vertex is its first, not repeated).
struct Chain {
    v: Vec<u32>,
    closed: bool,
}

/// Join the boundary chains of `triangles` that run alongside each other (see the module
/// doc). `twin` and `loose` are the pairing of `triangles`; `snap` the weld's largest merge.
/// Facets are appended. Returns `None` when no strip was made.
pub(crate) fn strips(
    v: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    twin: &[u32],
    loose: &[u32],
    snap: f64,
) -> Option<Strips> {
    let tris: &[[u32; 3]] = triangles;
    // Hole-direction edges (the reverse of every boundary half-edge) with the third corner of
    // their facet, sorted.
    let mut edges: Vec<(u32, u32, u32)> = topology::boundary_half_edges(twin, loose)
        .into_par_iter()
        .map(|h| {
            let (a, b) = half_edge(tris, h);
            (b, a, tris[h as usize / 3][(h as usize % 3 + 2) % 3])
        })
        .collect();
    if edges.len() < 4 {
        return None;
    }
    edges.par_sort_unstable();
    let chains = chains(&edges, v.len());
    let candidates = pairs(v, &chains);
    if candidates.is_empty() {
        return None;
    }
    let key = |a: u32, b: u32| (a.min(b), a.max(b));
    // The third corner of the facet on a boundary edge between `a` and `b` either way round
    // (of the last such edge in `edges`' order), looked up in the sorted edges: a table of
    // them all (millions on a cloud of separate triangles) cost more than the strips.
    let last_from = |x: u32, y: u32| {
        let end = edges.partition_point(|e| (e.0, e.1) <= (x, y));
        (end > 0 && (edges[end - 1].0, edges[end - 1].1) == (x, y)).then(|| edges[end - 1].2)
    };
    let opposite = |a: u32, b: u32| {
        let (lo, hi) = key(a, b);
        last_from(hi, lo).or_else(|| last_from(lo, hi))
    };
    let p = |i: u32| v[i as usize].map(f64::from);
    // Build every candidate's strip, then keep those whose diagonals are new.
    let built: Vec<Option<Vec<[u32; 3]>>> = candidates
        .par_iter()
        .map(|&(x, y, reverse)| {
            let xs = &chains[x as usize];
            let ys = &chains[y as usize];
            let mut yv = ys.v.clone();
            if reverse {
                yv.reverse();
                if ys.closed {
                    // Closed: keep it a rotation of the loop that starts where it did.
                    yv.rotate_right(1);
                }
            }
            zipper(&xs.v, &yv, xs.closed, &p, &opposite, v, snap)
        })
        .collect();
    if built.iter().all(Option::is_none) {
        return None;
    }
    // The mesh's edges between the vertices of the strips built.
    let near = vertex_set(
        v.len(),
        built
            .iter()
            .flatten()
            .flat_map(|s| s.iter().flatten().copied()),
    );
    let mut existing: HashSet<(u32, u32)> = half_edges_within(tris, &near)
        .into_iter()
        .map(|(a, b)| key(a, b))
        .collect();
    let mut used = vec![false; chains.len()];
    let mut out = Strips::default();
    for ((x, y, _), strip) in candidates.iter().zip(built) {
        let Some(strip) = strip else { continue };
        if used[*x as usize] || used[*y as usize] {
            continue;
        }
        let own: HashSet<(u32, u32)> = chain_edges(&chains[*x as usize])
            .chain(chain_edges(&chains[*y as usize]))
            .map(|(a, b)| key(a, b))
            .collect();
        let diagonals: HashSet<(u32, u32)> = strip
            .iter()
            .flat_map(|t| (0..3).map(move |k| key(t[k], t[(k + 1) % 3])))
            .filter(|e| !own.contains(e))
            .collect();
        if diagonals.iter().any(|e| existing.contains(e)) {
            continue;
        }
        existing.extend(diagonals);
        used[*x as usize] = true;
        used[*y as usize] = true;
        out.strips += 1;
        out.facets += strip.len() as u64;
        triangles.extend(strip);
    }
    (out.strips > 0).then_some(out)
}

/// The edges of a chain, in its direction.
fn chain_edges(c: &Chain) -> impl Iterator<Item = (u32, u32)> + '_ {
    let n = c.v.len();
    let m = if c.closed { n } else { n - 1 };
    (0..m).map(move |i| (c.v[i], c.v[(i + 1) % n]))
}

/// Cut the hole edges (sorted by start) into chains at branch vertices: vertices where other
/// than exactly one edge leaves and one arrives. What is left are closed chains.
fn chains(edges: &[(u32, u32, u32)], vertices: usize) -> Vec<Chain> {
    // Per vertex: the edges that arrive, and where its edges leave in `edges` (sorted by start).
    let mut ins = vec![0u32; vertices];
    let mut start = vec![0u32; vertices + 1];
    for &(a, b, _) in edges {
        ins[b as usize] += 1;
        start[a as usize + 1] += 1;
    }
    for x in 0..vertices {
        start[x + 1] += start[x];
    }
    let out_of = |x: u32| start[x as usize] as usize..start[x as usize + 1] as usize;
    let branch = |x: u32| out_of(x).len() != 1 || ins[x as usize] != 1;
    let mut used = vec![false; edges.len()];
    let mut chains = Vec::new();
    let follow = |first: usize, used: &mut Vec<bool>| -> Vec<u32> {
        let mut path = vec![edges[first].0];
        let mut e = first;
        loop {
            used[e] = true;
            let to = edges[e].1;
            path.push(to);
            if branch(to) || to == path[0] {
                break;
            }
            e = out_of(to).start;
            if used[e] {
                break;
            }
        }
        path
    };
    for first in 0..edges.len() {
        if !used[first] && branch(edges[first].0) {
            let path = follow(first, &mut used);
            chains.push(Chain {
                v: path,
                closed: false,
            });
        }
    }
    for first in 0..edges.len() {
        if !used[first] {
            let mut path = follow(first, &mut used);
            let closed = path.len() > 3 && path.last() == path.first();
            if closed {
                path.pop();
            }
            chains.push(Chain { v: path, closed });
        }
    }
    chains
}

/// Two chains to try joining, `(x, y, reversed)`: `y` taken reversed or as it is.
type Pair = (u32, u32, bool);

/// Candidate pairs `(x, y, reverse y)`, best first within each chain: open chains between the
/// same two branch vertices, and closed chains of about the same length whose centroids are
/// within a tenth of their length of each other.
fn pairs(v: &[[f32; 3]], chains: &[Chain]) -> Vec<Pair> {
    let mut out = Vec::new();
    // Open chains by their ends.
    let mut by_ends: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    for (i, c) in chains.iter().enumerate() {
        let (a, b) = (c.v[0], c.v[c.v.len() - 1]);
        if !c.closed && a != b && c.v.len() >= 2 {
            by_ends
                .entry((a.min(b), a.max(b)))
                .or_default()
                .push(i as u32);
        }
    }
    let mut buckets: Vec<Vec<u32>> = by_ends.into_values().filter(|b| b.len() >= 2).collect();
    buckets.sort_unstable();
    for b in buckets {
        for (k, &x) in b.iter().enumerate().take(MAX_TRIES) {
            for &y in b.iter().skip(k + 1).take(MAX_TRIES) {
                // Both in the same direction run `p → q`: the partner is taken as it is;
                // otherwise reversed.
                let same = chains[x as usize].v[0] == chains[y as usize].v[0];
                out.push((x, y, !same));
            }
        }
    }
    // Closed chains by the cell of their centroid, on a grid whose side is a power of two
    // chosen per chain (its length / 8 or more): a partner within a tenth of the length lies
    // in a neighbouring cell of the same level or the next one up or down.
    let p = |i: u32| v[i as usize].map(f64::from);
    let info: Vec<(u32, [f64; 3], f64)> = chains
        .iter()
        .enumerate()
        .filter(|(_, c)| c.closed)
        .filter_map(|(i, c)| {
            let (centre, length) = centre_and_length(&p, c);
            (length > 0.0 && length.is_finite()).then_some((i as u32, centre, length))
        })
        .collect();
    let level = |length: f64| (length / 8.0).log2().ceil() as i32;
    // The chains filed by level and centroid cell in a [`keys::LexGrid`] and taken in that
    // order, so that their look-ups move forward through the sorted cells: on a cloud of
    // separate triangles (each a closed chain) look-ups at random in a table of millions of
    // cells were nearly all of the repair's time.
    let centres: Vec<[f64; 3]> = info.iter().map(|x| x.1).collect();
    let top = info
        .iter()
        .map(|x| level(x.2))
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let grid = keys::LexGrid::around(&centres, top);
    drop(centres);
    let cells: Vec<(i32, [i64; 3])> = info
        .par_iter()
        .map(|x| {
            let l = grid.level(level(x.2));
            (l, grid.cell(l, x.1))
        })
        .collect();
    let filed: Vec<u64> = cells
        .par_iter()
        .map(|&(l, c)| {
            grid.key(l, c)
                .expect("a centroid lies in the grid round them")
        })
        .collect();
    let index = keys::LexIndex::new(&filed);
    drop(filed);
    // Per chain, the cells within a tenth of its length of its centroid at its own level and
    // the next one down and up (a partner's length is within a tenth of its own, so its level
    // is one of these): at most 5, 3 and 2 cells per axis, since a cell is at least a
    // sixteenth, an eighth and a quarter of the length there.
    const CHUNK: usize = 2048;
    let n = index.order.len();
    // The chains' centroids and lengths in cell order, for the look-ups' checks to read in
    // turn: `(k, centroid, length)`, `k` the chain's place in `info`.
    let sorted: Vec<(u32, [f64; 3], f64)> = index
        .order
        .par_iter()
        .map(|&k| (k, info[k as usize].1, info[k as usize].2))
        .collect();
    let mut found: Vec<(u32, Pair)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .flat_map_iter(|chunk| {
            let from = chunk * CHUNK;
            let (index, cells, info, grid, sorted) = (&index, &cells, &info, &grid, &sorted);
            // One hint per level and row along x (5 × 5 at most per level).
            let mut hints = [from; 75];
            index.order[from..n.min(from + CHUNK)]
                .iter()
                .flat_map(move |&k| {
                    let k = k as usize;
                    let (x, cx, lx) = info[k];
                    let r = lx / 10.0;
                    let mut levels = [-1, 0, 1].map(|d| grid.level(level(lx) + d));
                    levels.sort_unstable();
                    // Each level once, with the box of cells within `r` of the centroid.
                    let boxes = levels.map(|l| {
                        let lo = grid.cell(l, cx.map(|c| c - r));
                        let hi: [i64; 3] = std::array::from_fn(|d| {
                            grid.cell(l, cx.map(|c| c + r))[d].clamp(lo[d], lo[d] + 4)
                        });
                        (l, lo, hi)
                    });
                    let fresh = |n: usize| n == 0 || levels[n] != levels[n - 1];
                    let mut near: Vec<(f64, usize)> = Vec::new();
                    let consider = |at: usize, near: &mut Vec<(f64, usize)>| {
                        let (o, co, lo) = sorted[at];
                        let o = o as usize;
                        let dist = norm(sub(co, cx));
                        if o > k && (lx - lo).abs() <= LENGTH_RATIO * lx.max(lo) && dist <= r {
                            near.push((dist, o));
                        }
                    };
                    // Every row of cells along x as one span of the sorted cells; when the
                    // chains seen pass [`MAX_SCAN`], the look-up is made again cell by cell in
                    // a fixed order (x, then y, then z), so which chains the budget keeps does
                    // not depend on the grid's layout.
                    let mut seen = 0;
                    'rows: for (n, &(l, lo, hi)) in boxes.iter().enumerate().filter(|x| fresh(x.0))
                    {
                        for gz in lo[2]..=hi[2] {
                            for gy in lo[1]..=hi[1] {
                                let Some((a, b)) = grid.row(l, lo[0]..=hi[0], gy, gz) else {
                                    continue;
                                };
                                let row = n * 25 + ((gy - lo[1]) * 5 + (gz - lo[2])) as usize;
                                for at in index.span(a, b, &mut hints[row]) {
                                    seen += 1;
                                    if seen > MAX_SCAN {
                                        break 'rows;
                                    }
                                    consider(at, &mut near);
                                }
                            }
                        }
                    }
                    if seen > MAX_SCAN {
                        near.clear();
                        seen = 0;
                        'cells: for (n, &(l, lo, hi)) in
                            boxes.iter().enumerate().filter(|x| fresh(x.0))
                        {
                            for gx in lo[0]..=hi[0] {
                                for gy in lo[1]..=hi[1] {
                                    for gz in lo[2]..=hi[2] {
                                        let Some(key) = grid.key(l, [gx, gy, gz]) else {
                                            continue;
                                        };
                                        let row =
                                            n * 25 + ((gy - lo[1]) * 5 + (gz - lo[2])) as usize;
                                        for at in index.run(key, &mut hints[row]) {
                                            debug_assert_eq!(
                                                cells[index.order[at] as usize],
                                                (l, [gx, gy, gz])
                                            );
                                            seen += 1;
                                            if seen > MAX_SCAN {
                                                break 'cells;
                                            }
                                            consider(at, &mut near);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    near.into_iter()
                        .take(MAX_TRIES)
                        // Facing surfaces' rims run opposite ways: the partner reversed first.
                        .flat_map(move |(_, o)| {
                            [true, false].map(|reversed| (k as u32, (x, info[o].0, reversed)))
                        })
                })
        })
        .collect();
    // In the chains' order (a chain's own tries in the order made).
    found.par_sort_by_key(|f| f.0);
    out.extend(found.into_iter().map(|f| f.1));
    out
}

/// A closed chain's centroid (the mean of its vertices) and length.
fn centre_and_length(p: &impl Fn(u32) -> [f64; 3], c: &Chain) -> ([f64; 3], f64) {
    let n = c.v.len();
    let mut centre = [0.0; 3];
    let mut length = 0.0;
    for k in 0..n {
        let (a, b) = (p(c.v[k]), p(c.v[(k + 1) % n]));
        length += norm(sub(b, a));
        for d in 0..3 {
            centre[d] += a[d] / n as f64;
        }
    }
    (centre, length)
}

/// The strip between chains `x` and `y`, both running the same way (from a common first
/// vertex to a common last one, or closed), or `None` when it is not a strip of slivers.
/// A facet that takes `x`'s edge `a → b` winds `a, b, apex`; one that takes `y`'s edge
/// `c → d` winds `c, apex, d`... so both chains' edges are used against their direction.
fn zipper(
    x: &[u32],
    y: &[u32],
    closed: bool,
    p: &impl Fn(u32) -> [f64; 3],
    opposite: &impl Fn(u32, u32) -> Option<u32>,
    v: &[[f32; 3]],
    snap: f64,
) -> Option<Vec<[u32; 3]>> {
    let (n, m) = if closed {
        (x.len(), y.len())
    } else {
        (x.len() - 1, y.len() - 1)
    };
    // A closed pair starts at the vertex of `y` nearest to `x[0]`.
    let start = if closed {
        let x0 = p(x[0]);
        (0..m).min_by(|&a, &b| {
            let (da, db) = (norm(sub(p(y[a]), x0)), norm(sub(p(y[b]), x0)));
            da.total_cmp(&db).then(a.cmp(&b))
        })?
    } else {
        0
    };
    let xi = |i: usize| x[i % x.len()];
    let yj = |j: usize| y[(start + j) % y.len()];
    let dist = |a: u32, b: u32| norm(sub(p(a), p(b)));
    // How far every vertex is from the other chain, relative to the length of the other
    // chain's edge it is nearest to (among those near where the walk is): the chains must
    // lie along each other everywhere, not merely give thin facets (two rims far apart
    // joined out of step give needles).
    let mut off_x = vec![f64::INFINITY; n + 1];
    let mut off_y = vec![f64::INFINITY; m + 1];
    let off = |w: u32, seg: (u32, u32)| {
        let (a, b, q) = (p(seg.0), p(seg.1), p(w));
        let d = sub(b, a);
        let len = norm(d);
        if len == 0.0 {
            return f64::INFINITY;
        }
        let t = (dot(sub(q, a), d) / (len * len)).clamp(0.0, 1.0);
        norm(sub(q, [a[0] + t * d[0], a[1] + t * d[1], a[2] + t * d[2]])) / len
    };
    // The other chain's edges `k → k + 1` near position `at` (round the loop when closed).
    let segments = |at: usize, count: usize| {
        if closed {
            at + count - 2..at + count + 2
        } else {
            at.saturating_sub(2)..(at + 2).min(count)
        }
    };
    let measure = |i: usize, j: usize, off_x: &mut Vec<f64>, off_y: &mut Vec<f64>| {
        for k in segments(j, m) {
            off_x[i] = off_x[i].min(off(xi(i), (yj(k), yj(k + 1))));
        }
        for k in segments(i, n) {
            off_y[j] = off_y[j].min(off(yj(j), (xi(k), xi(k + 1))));
        }
    };
    let mut out = Vec::with_capacity(n + m);
    let (mut i, mut j) = (0, 0);
    measure(0, 0, &mut off_x, &mut off_y);
    while i < n || j < m {
        let take_x = if i == n {
            false
        } else if j == m {
            true
        } else {
            dist(xi(i + 1), yj(j)) <= dist(xi(i), yj(j + 1))
        };
        // A vertex the walk leaves is measured no more: a strip out of step stops there.
        let t = if take_x {
            if off_x[i] > MAX_WIDTH {
                return None;
            }
            i += 1;
            [xi(i - 1), xi(i), yj(j)]
        } else {
            if off_y[j] > MAX_WIDTH {
                return None;
            }
            j += 1;
            [xi(i), yj(j), yj(j - 1)]
        };
        measure(i, j, &mut off_x, &mut off_y);
        if t[0] == t[1] || t[1] == t[2] || t[0] == t[2] {
            continue;
        }
        if !sliver(t.map(p)) || clean::flat(v, t, snap) {
            return None;
        }
        // The chain edge this facet takes, and its apex on the other chain.
        let (a, b, apex) = if take_x {
            (t[0], t[1], t[2])
        } else {
            (t[2], t[1], t[0])
        };
        if opposite(a, b).is_some_and(|c| folds(p(a), p(b), p(c), p(apex))) {
            return None;
        }
        out.push(t);
    }
    let along = off_x.iter().chain(&off_y).all(|&o| o <= MAX_WIDTH);
    (along && !out.is_empty()).then_some(out)
}

/// Would a strip facet on edge `a b` with its apex at `y` fold back over the mesh's facet on
/// that edge (third corner `c`)? Seen along the edge, the two lie within [`FOLD_ANGLE`] of
/// each other, the apex beside the edge and more than halfway across the facet: the strip
/// would cover surface that is there (the two rims of a narrow band), not bridge a seam
/// (where it continues the surface, meets it at a crease, or laps it by the sagitta).
fn folds(a: [f64; 3], b: [f64; 3], c: [f64; 3], y: [f64; 3]) -> bool {
    let e = sub(b, a);
    let e2 = dot(e, e);
    if e2 == 0.0 {
        return false;
    }
    let across = |q: [f64; 3]| {
        let d = sub(q, a);
        let t = dot(d, e) / e2;
        ([d[0] - t * e[0], d[1] - t * e[1], d[2] - t * e[2]], t)
    };
    let ((u, _), (w, t)) = (across(c), across(y));
    let (lu, lw) = (norm(u), norm(w));
    // An apex beyond the edge's ends (a sliver of a seam's zipper, its corners all near one
    // curve) says nothing about the side it lies on; one that reaches less than halfway
    // across the facet (a seam on the concave side, such as a plate's hole rim whose chords cut
    // inside the wall's: the strip laps the facet by the sagitta) covers a sliver of it, not
    // the facet.
    (0.0..=1.0).contains(&t) && lu > 0.0 && lw > 0.5 * lu && dot(u, w) > FOLD_ANGLE.cos() * lu * lw
}

/// Is the triangle's height over its longest edge at most [`MAX_WIDTH`] of that edge?
fn sliver(t: [[f64; 3]; 3]) -> bool {
    let longest = (0..3)
        .map(|k| norm(sub(t[(k + 1) % 3], t[k])))
        .fold(0.0f64, f64::max);
    let area2 = norm(cross(sub(t[1], t[0]), sub(t[2], t[0])));
    longest > 0.0 && area2 / longest <= MAX_WIDTH * longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_chains_are_paired_with_every_near_one_of_their_length() {
        // Square rims of side 0.9 to 1.1 (lengths 3.6 to 4.4) in a box of 200, and beside
        // every third one a partner moved by up to a fifth of its length: all pairs within a
        // tenth of the length and of lengths within a tenth are found, as a look at every
        // pair finds them.
        let mut next = keys::test_uniform(0x1234_5678_9abc_def1u64);
        let mut v: Vec<[f32; 3]> = Vec::new();
        let mut chains = Vec::new();
        let square = |v: &mut Vec<[f32; 3]>, c: [f64; 3], side: f64| {
            let b = v.len() as u32;
            for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)] {
                v.push([c[0] + dx * side, c[1] + dy * side, c[2]].map(|x| x as f32));
            }
            Chain {
                v: vec![b, b + 1, b + 2, b + 3],
                closed: true,
            }
        };
        for k in 0..3_000 {
            let c: [f64; 3] = std::array::from_fn(|_| next() * 200.0);
            let side = 0.9 + 0.2 * next();
            chains.push(square(&mut v, c, side));
            if k % 3 == 0 {
                let shift: [f64; 3] = std::array::from_fn(|_| (next() - 0.5) * 0.5);
                let c2 = [0, 1, 2].map(|d| c[d] + shift[d]);
                chains.push(square(&mut v, c2, side * (0.95 + 0.1 * next())));
            }
        }
        let found: HashSet<(u32, u32)> = pairs(&v, &chains)
            .into_iter()
            .map(|(x, y, _)| (x, y))
            .collect();
        let p = |i: u32| v[i as usize].map(f64::from);
        let info: Vec<([f64; 3], f64)> = chains.iter().map(|c| centre_and_length(&p, c)).collect();
        let mut want = HashSet::new();
        for (i, &(ci, li)) in info.iter().enumerate() {
            for (j, &(cj, lj)) in info.iter().enumerate().skip(i + 1) {
                if (li - lj).abs() <= LENGTH_RATIO * li.max(lj) && norm(sub(ci, cj)) <= li / 10.0 {
                    want.insert((i as u32, j as u32));
                }
            }
        }
        assert!(want.len() > 300, "{}", want.len());
        assert_eq!(found, want);
    }

    #[test]
    fn a_crowd_of_closed_chains_is_scanned_in_a_fixed_order() {
        // 200 square rims in two neighbouring cells of the grid: even chains in the cell of
        // lower x and higher y, odd ones in the other. Past MAX_SCAN chains seen, the look-up
        // is made cell by cell, x first: every chain sees the first MAX_SCAN even chains (by
        // index) and tries the next MAX_TRIES of them after itself. (Row by row, y first, it
        // would see the odd ones first.)
        let mut v: Vec<[f32; 3]> = Vec::new();
        let mut chains = Vec::new();
        for k in 0..200 {
            let (x, y) = if k % 2 == 0 {
                (-0.05, 0.05)
            } else {
                (0.05, -0.05)
            };
            let b = v.len() as u32;
            for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)] {
                v.push([x + dx, y + dy, 0.0]);
            }
            chains.push(Chain {
                v: vec![b, b + 1, b + 2, b + 3],
                closed: true,
            });
        }
        let got: Vec<(u32, u32)> = pairs(&v, &chains)
            .into_iter()
            .filter(|p| p.2)
            .map(|(x, y, _)| (x, y))
            .collect();
        let seen: Vec<u32> = (0..200).step_by(2).take(MAX_SCAN).collect();
        let want: Vec<(u32, u32)> = (0..200)
            .flat_map(|k| {
                seen.iter()
                    .filter(move |&&o| o > k)
                    .take(MAX_TRIES)
                    .map(move |&o| (k, o))
            })
            .collect();
        assert!(want.len() > 400);
        assert_eq!(got, want);
    }
}
