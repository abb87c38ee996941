//! Stitching: boundary edges that lie along another boundary edge are joined.
//!
//! After the weld, a seam between two open pieces of one surface (a model cut in two, an
//! export whose patches were meshed apart) can stay open when its gap is wider than the
//! weld's bound, or when long thin facets cut the weld's limits along it. Such a piece is no
//! noise: it is stitched, never dropped as a tiny shell.
//!
//! Two boundary edges `a → b` and `c → d` match when `a`, `d` and `b`, `c` (or `a`, `c` and
//! `b`, `d`: the winding is made consistent later) are each within the smaller of their two
//! limits. A boundary vertex's limit is [`STITCH_FRACTION`] of the shortest boundary edge at
//! it, and at most `stitch_relative` of the bounding-box diagonal. So a stitch never joins
//! the two ends of one edge, nor two vertices of one facet (checked), and whole edges must
//! match, not just single points: a narrow slot between two real edges of different lengths
//! or offset along each other stays open. An edge is stitched to its mutual best match
//! only; the matched endpoints are merged (the smaller vertex id survives).
//!
//! Finding candidates is a sort, not a pairwise search: matching edges have lengths within
//! a factor 1.5 of each other and midpoints within a quarter of the shorter one, so every
//! edge is filed under its length class `⌊log₂ L⌋` and the cell of its midpoint in a grid of
//! side `2^class / 2`, and looks for partners in the nearer 8 cells of its own class and of
//! the two neighbouring classes. At most [`STITCH_MAX_CANDIDATES`] candidates are verified
//! per edge, so a crafted pile of coincident boundary edges costs linear time.

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use crate::keys::{self, hi, lo, pack};
use crate::topology::{NONE, half_edge};

/// A boundary vertex's stitch limit as a fraction of the shortest boundary edge at it.
pub(crate) const STITCH_FRACTION: f64 = 0.25;

/// At most this many candidates are verified per boundary edge (over all its probes).
pub(crate) const STITCH_MAX_CANDIDATES: usize = 24;

/// What stitching found.
#[derive(Debug, Default)]
pub(crate) struct Stitched {
    /// Per vertex: the vertex it was merged into (itself when not merged); empty when none.
    pub merge_into: Vec<u32>,
    /// Pairs of boundary edges stitched.
    pub edges: u64,
    /// Vertices merged into another.
    pub vertices: u64,
    /// Largest distance bridged.
    pub largest: f64,
}

/// Stitch the boundary half-edges of `triangles` (`twin[h] == NONE`); `cap` is the absolute
/// upper bound of a limit.
pub(crate) fn stitch(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    twin: &[u32],
    cap: f64,
) -> Stitched {
    let boundary: Vec<u32> = (0..twin.len() as u32)
        .into_par_iter()
        .filter(|&h| twin[h as usize] == NONE)
        .collect();
    if boundary.len() < 2 || cap <= 0.0 {
        return Stitched::default();
    }
    let pos = |v: u32| vertices[v as usize].map(f64::from);
    let dist = |a: [f64; 3], b: [f64; 3]| {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    };
    let len = |h: u32| {
        let (a, b) = half_edge(triangles, h);
        dist(pos(a), pos(b))
    };
    // Per boundary vertex: the shortest boundary edge at it (sorted (vertex, length) pairs).
    let mut at: Vec<(u32, f64)> = boundary
        .par_iter()
        .flat_map_iter(|&h| {
            let (a, b) = half_edge(triangles, h);
            let l = len(h);
            [(a, l), (b, l)]
        })
        .collect();
    at.par_sort_unstable_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
    at.dedup_by_key(|x| x.0);
    let limit = |v: u32| -> f64 {
        let i = at.partition_point(|x| x.0 < v);
        at.get(i)
            .filter(|x| x.0 == v)
            .map_or(0.0, |x| (x.1 * STITCH_FRACTION).min(cap))
    };
    // Length class and midpoint of every boundary edge of positive length.
    let class = |l: f64| l.log2().floor() as i32;
    let side = |c: i32| 2f64.powi(c) / 2.0;
    let mid = |h: u32| {
        let (a, b) = half_edge(triangles, h);
        let (p, q) = (pos(a), pos(b));
        [0, 1, 2].map(|k| (p[k] + q[k]) / 2.0)
    };
    let cell_hash = |c: i32, m: [f64; 3], shift: [i64; 3]| {
        let s = side(c);
        let x = m.map(|x| (x / s).floor() as i64);
        let h = keys::hash3(
            (x[0] + shift[0]) as u32,
            (x[1] + shift[1]) as u32,
            (x[2] + shift[2]) as u32,
        );
        keys::fmix32(h ^ (c as u32).wrapping_mul(0x9E37_79B9))
    };
    let usable: Vec<u32> = boundary
        .par_iter()
        .copied()
        .filter(|&h| {
            let l = len(h);
            l > 0.0 && l.is_finite()
        })
        .collect();
    // Per usable edge: its endpoints' limits (looked up once, not per candidate).
    let elim: Vec<[f64; 2]> = usable
        .par_iter()
        .map(|&h| {
            let (a, b) = half_edge(triangles, h);
            [limit(a), limit(b)]
        })
        .collect();
    let mut filed: Vec<u64> = usable
        .par_iter()
        .enumerate()
        .map(|(i, &h)| {
            let l = len(h);
            pack(cell_hash(class(l), mid(h), [0; 3]), i as u32)
        })
        .collect();
    keys::sort(&mut filed);
    // Probes: for classes c-1, c, c+1, the nearer cell along each axis (8 cells).
    let mut probes: Vec<u64> = usable
        .par_iter()
        .enumerate()
        .flat_map_iter(|(i, &h)| {
            let c0 = class(len(h));
            let m = mid(h);
            // A partner's length is within a factor 1.5 of this one's: the class below is
            // possible only under 1.5 · 2^c, the class above only over 2^(c+1) / 1.5.
            let l = len(h) / 2f64.powi(c0);
            let lo_c = if l < 1.5 { c0 - 1 } else { c0 };
            let hi_c = if l > 4.0 / 3.0 { c0 + 1 } else { c0 };
            (lo_c..=hi_c).flat_map(move |c| {
                let s = side(c);
                let dir = m.map(|x| {
                    let f = x / s - (x / s).floor();
                    if f < 0.5 { -1 } else { 1 }
                });
                (0..8).map(move |k: usize| {
                    let shift = [0, 1, 2].map(|a| if k >> a & 1 == 1 { dir[a] } else { 0 });
                    pack(cell_hash(c, m, shift), i as u32)
                })
            })
        })
        .collect();
    keys::sort(&mut probes);
    probes.dedup();
    // Verify candidates: (this edge, other edge, score = larger endpoint distance, crossed).
    let facet_has = |h: u32, v: u32| triangles[(h / 3) as usize].contains(&v);
    let best: Vec<Option<(u32, f64)>> = {
        let chunks = keys::run_chunks(&probes, keys::parts_for(probes.len()));
        let budget: Vec<AtomicU32> = (0..usable.len()).map(|_| AtomicU32::new(0)).collect();
        let found: Vec<(u32, u32, f64)> = chunks
            .par_iter()
            .flat_map_iter(|r| {
                let mut out = Vec::new();
                // Probes and filed edges are both sorted: walk them together (a merge-join,
                // sequential reads instead of a binary search per probe).
                let mut from = probes
                    .get(r.start)
                    .map_or(0, |&p| filed.partition_point(|&x| hi(x) < hi(p)));
                for &pr in &probes[r.clone()] {
                    while from < filed.len() && hi(filed[from]) < hi(pr) {
                        from += 1;
                    }
                    let i = lo(pr);
                    let h = usable[i as usize];
                    let (a, b) = half_edge(triangles, h);
                    // The edge's budget of verifications, shared by all its probes.
                    let left = STITCH_MAX_CANDIDATES
                        .saturating_sub(budget[i as usize].load(Ordering::Relaxed) as usize);
                    if left == 0 {
                        continue;
                    }
                    let run = filed[from..]
                        .iter()
                        .take(left)
                        .take_while(|&&x| hi(x) == hi(pr))
                        .count();
                    budget[i as usize].fetch_add(run as u32, Ordering::Relaxed);
                    for &fk in &filed[from..from + run] {
                        let j = lo(fk);
                        if j == i {
                            continue;
                        }
                        let g = usable[j as usize];
                        let (c, d) = half_edge(triangles, g);
                        if facet_has(g, a) || facet_has(g, b) || facet_has(h, c) || facet_has(h, d)
                        {
                            continue;
                        }
                        let (li, lj) = (elim[i as usize], elim[j as usize]);
                        let within = |x: u32, lx: f64, y: u32, ly: f64| {
                            let d = dist(pos(x), pos(y));
                            (d <= lx.min(ly)).then_some(d)
                        };
                        let score = match (within(a, li[0], d, lj[1]), within(b, li[1], c, lj[0])) {
                            (Some(x), Some(y)) => Some(x.max(y)),
                            _ => match (within(a, li[0], c, lj[0]), within(b, li[1], d, lj[1])) {
                                (Some(x), Some(y)) => Some(x.max(y)),
                                _ => None,
                            },
                        };
                        if let Some(s) = score {
                            out.push((i, j, s));
                        }
                    }
                }
                out.into_iter()
            })
            .collect();
        let mut best: Vec<Option<(u32, f64)>> = vec![None; usable.len()];
        for (i, j, s) in found {
            let b = &mut best[i as usize];
            if b.is_none_or(|(bj, bs)| s < bs || (s == bs && j < bj)) {
                *b = Some((j, s));
            }
        }
        best
    };
    // Mutual best matches: union their endpoints.
    let mut parent: Vec<u32> = (0..vertices.len() as u32).collect();
    let mut edges = 0u64;
    let mut largest = 0.0f64;
    for (i, b) in best.iter().enumerate() {
        let Some((j, s)) = *b else { continue };
        if (j as usize) < i || best[j as usize].map(|x| x.0) != Some(i as u32) {
            continue;
        }
        let (a, bb) = half_edge(triangles, usable[i]);
        let (c, d) = half_edge(triangles, usable[j as usize]);
        let lim = |x: u32, y: u32| dist(pos(x), pos(y)) <= limit(x).min(limit(y));
        let pairs = if lim(a, d) && lim(bb, c) {
            [(a, d), (bb, c)]
        } else {
            [(a, c), (bb, d)]
        };
        for (x, y) in pairs {
            union(&mut parent, x, y);
        }
        edges += 1;
        largest = largest.max(s);
    }
    if edges == 0 {
        return Stitched::default();
    }
    let mut merged = 0u64;
    for v in 0..parent.len() {
        let r = find(&mut parent, v as u32);
        parent[v] = r;
        merged += u64::from(r != v as u32);
    }
    Stitched {
        merge_into: parent,
        edges,
        vertices: merged,
        largest,
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// Union keeping the smaller vertex id as root.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra < rb {
        parent[rb as usize] = ra;
    } else if rb < ra {
        parent[ra as usize] = rb;
    }
}
