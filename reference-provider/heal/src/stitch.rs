//! Stitching: boundary edges that lie along another boundary edge are joined.
//!
//! After the weld, a seam between two open pieces of one surface (a model cut in two, an
//! export whose patches were meshed apart) can stay open when its gap is wider than the
//! weld's bound, or when long thin facets cut the weld's limits along it. Such a piece is no
//! noise: it is stitched, never dropped as a tiny shell.
//!
//! Two boundary edges `a → b` and `c → d` match when `a`, `d` and `b`, `c` (or `a`, `c` and
//! `b`, `d`: the winding is made consistent later) are each within the smaller of their two
//! limits. A boundary vertex's limit is [`STITCH_FRACTION`] of its scale — the shortest edge
//! (boundary or not) at any boundary vertex near it (the 27 cells round its own in a grid of
//! side `stitch_relative` × the model's size) — and at most that reach. The neighbourhood,
//! not the vertex's own edges: a piece of a vertex left apart by the weld (one needle of a
//! fan) may hold only long edges while its neighbour on the fan's rim is a short edge away.
//! So a stitch never joins the two ends of one edge, nor two distinct vertices of one facet
//! (checked), and whole edges must match, not just single points: a narrow slot between two
//! real edges of different lengths or offset along each other stays open. Two edges that
//! share an endpoint (two pieces of one fan) match by their other ends. An edge is stitched
//! to its mutual best match only (the smallest larger endpoint gap: the best, not the first within a bound, which
//! is what tells a vertex's copy from its neighbour when the noise is a large part of the
//! edges); the matched endpoints are merged (the smaller vertex id survives).
//!
//! Finding candidates is a sort, not a pairwise search: the midpoints of matching edges are
//! at most the mean of their endpoint gaps apart, so within the smaller of the two edges'
//! reach (the larger limit of its ends). Every edge is filed under its reach class
//! `k = ⌊log₂ reach⌋` and the cell of its midpoint in a grid of side `2^(k+2)` (the edges are
//! sorted by that cell, so one cell's edges are neighbours in memory), and looks up the
//! nearer 8 cells of its own class and of the class below; every match found counts for both
//! edges. Copies of one edge have nearly the same scale; a pair two classes apart is not
//! found (it stays open, never a wrong merge). At most [`STITCH_MAX_CANDIDATES`] candidates
//! are verified per edge, in a fixed order, so a crafted pile of coincident boundary edges
//! costs linear time and the result does not depend on the threads. An edge with an end that
//! has no other boundary vertex within the cap is not filed unless boundary edges of another
//! facet meet there: it has no match ([`Alone`]).
//!
//! A side of a crack (a T-junction: another boundary edge from one of its ends runs along it)
//! is never stitched: it is the zip's, and its best match may be an edge of another part a
//! small clearance away ([`cracked`]).

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::holes::{norm, sub};
use crate::keys::{self, hi, lo};
use crate::topology::{NONE, half_edge};
use crate::{clean, zip};

/// A boundary vertex's stitch limit as a fraction of its scale (the shortest edge at any
/// boundary vertex near it).
pub(crate) const STITCH_FRACTION: f64 = 0.5;

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
    /// The vertices alone on the boundary (a round over the whole boundary only).
    pub alone: Option<Alone>,
}

/// Where a later round of stitching looks: round the vertices the round before merged.
///
/// A pair of boundary edges whose outcome a round's merges can change lies near them: an edge
/// at a merged vertex (moved, renamed), an edge whose best match was sewn to another (within
/// the reach of that one's merged ends), or the new partner of either (one reach further);
/// the limits change only where new short edges appeared, at the merged vertices (a vertex's
/// scale is read from the 27 cells of side `cap` round it, so up to 2√3 ≈ 3.5 reaches away).
/// So a later round files only the boundary edges with an end within two cells of a merged
/// vertex in a grid of side [`FOCUS_CELLS`] × the largest reach (the focus), and sews only
/// pairs of edges with an end within one cell (the inner focus): every edge whose outcome can
/// change has an end in the inner focus (at least four reaches round a merged vertex), and
/// every inner edge's candidates, their candidates and their limits' neighbourhoods lie in
/// the focus (at least four reaches further), so an inner pair is sewn when a round over the
/// whole boundary would sew it, and the rest of the boundary, which the round before already
/// answered, is not looked at again. (Not to the letter in one contrived case: a pile of more
/// than [`STITCH_MAX_CANDIDATES`] edges round one spot whose budget a whole round would spend
/// partly on edges outside the focus.)
pub(crate) struct Focus {
    inv: f64,
    /// Coarse cells within one cell of a merged vertex (the inner focus) ...
    inner: CellSet,
    /// ... and within two.
    outer: CellSet,
}

/// A set of grid cells, hashed with foldhash rather than SipHash: the focus is asked about
/// every boundary edge of a round (millions on a cloud of separate triangles).
type CellSet = foldhash::HashSet<[i64; 3]>;

/// The focus's cells, in units of the largest reach.
const FOCUS_CELLS: f64 = 4.0;

impl Focus {
    /// The focus round the vertices `merged`, for stitches that reach at most `cap`; `None`
    /// (look at the whole boundary) when its cells would outnumber the `open` boundary edges
    /// (merges all over the model: a focus would save nothing).
    pub(crate) fn around(
        vertices: &[[f32; 3]],
        merged: &[u32],
        cap: f64,
        open: usize,
    ) -> Option<Focus> {
        let inv = 1.0 / (cap * FOCUS_CELLS);
        if !inv.is_finite() {
            return None;
        }
        let cell = |v: &u32| vertices[*v as usize].map(|x| (f64::from(x) * inv).floor() as i64);
        let mut cells: Vec<[i64; 3]> = merged.par_iter().map(cell).collect();
        cells.par_sort_unstable();
        cells.dedup();
        if cells.len().saturating_mul(125) > open {
            return None;
        }
        let mut inner = CellSet::default();
        let mut outer = CellSet::default();
        for c in cells {
            for d in 0..125 {
                let o = [d % 5, d / 5 % 5, d / 25].map(|o| o - 2);
                let n = [0, 1, 2].map(|a| c[a].wrapping_add(o[a]));
                if o.iter().all(|x| x.abs() <= 1) {
                    inner.insert(n);
                }
                outer.insert(n);
            }
        }
        Some(Focus { inv, inner, outer })
    }

    fn cell(&self, p: [f32; 3]) -> [i64; 3] {
        p.map(|x| (f64::from(x) * self.inv).floor() as i64)
    }

    /// Is an edge from `a` to `b` in the focus, and in the inner focus?
    fn holds(&self, a: [f32; 3], b: [f32; 3]) -> (bool, bool) {
        let (a, b) = (self.cell(a), self.cell(b));
        (
            self.outer.contains(&a) || self.outer.contains(&b),
            self.inner.contains(&a) || self.inner.contains(&b),
        )
    }
}

/// Stitch the boundary half-edges of `triangles` (`twin[h] == NONE`); `cap` is the absolute
/// upper bound of a limit. `scale` holds every vertex's scale from earlier rounds (empty at
/// first): a vertex's scale is never larger than it was, so limits do not grow as the
/// boundary (whose vertices give the scales) shrinks. With a `focus` (a later round), only
/// the boundary edges in it are looked at ([`Focus`]). `snap` is the weld's largest merge:
/// an edge along which another boundary edge from one of its ends runs, within rounding plus
/// that, is a side of a crack and never stitched (see [`cracked`]).
pub(crate) fn stitch(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    twin: &[u32],
    cap: f64,
    prior: &mut Vec<f64>,
    focus: Option<&Focus>,
    snap: f64,
) -> Stitched {
    stitch_filed(vertices, triangles, twin, cap, prior, focus, snap, true)
}

/// [`stitch`]; without the `lonely_filter`, every edge that has an end with a boundary vertex
/// near it is filed (so the tests can check that the edges [`Alone`] passes over match
/// nothing).
#[allow(clippy::too_many_arguments)]
fn stitch_filed(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    twin: &[u32],
    cap: f64,
    prior: &mut Vec<f64>,
    focus: Option<&Focus>,
    snap: f64,
    lonely_filter: bool,
) -> Stitched {
    // The boundary half-edges in the focus, each with whether it is in the inner focus.
    let boundary: Vec<(u32, bool)> = keys::par_blocks(twin.len(), |r, out| {
        out.extend(r.filter(|&h| twin[h] == NONE).filter_map(|h| match focus {
            None => Some((h as u32, true)),
            Some(f) => {
                let (a, b) = half_edge(triangles, h as u32);
                let (outer, inner) = f.holds(vertices[a as usize], vertices[b as usize]);
                outer.then_some((h as u32, inner))
            }
        }));
    });
    if boundary.len() < 2 || cap <= 0.0 {
        return Stitched::default();
    }
    let pos = |v: u32| vertices[v as usize].map(f64::from);
    let dist = |a: [f64; 3], b: [f64; 3]| {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    };
    // Per boundary vertex: the shortest edge of positive length at it, boundary or not (the
    // facets round a vertex whose boundary edges are long may hold a short edge to a
    // neighbour that a stitch must never reach).
    let mut on_boundary = vec![false; vertices.len()];
    for &(h, _) in &boundary {
        let (a, b) = half_edge(triangles, h);
        on_boundary[a as usize] = true;
        on_boundary[b as usize] = true;
    }
    // The lengths are positive, so their bits order as they do: an atomic minimum of the
    // bits is the shortest.
    let shortest: Vec<AtomicU64> = (0..vertices.len())
        .into_par_iter()
        .map(|_| AtomicU64::new(f64::INFINITY.to_bits()))
        .collect();
    triangles
        .par_iter()
        .filter(|t| t.iter().any(|&v| on_boundary[v as usize]))
        .for_each(|t| {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                let l = dist(pos(a), pos(b));
                if l > 0.0 {
                    for v in [a, b].into_iter().filter(|&v| on_boundary[v as usize]) {
                        let s = &shortest[v as usize];
                        if l.to_bits() < s.load(Ordering::Relaxed) {
                            s.fetch_min(l.to_bits(), Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    drop(on_boundary);
    let shortest: Vec<f64> = shortest
        .into_par_iter()
        .map(|s| f64::from_bits(s.into_inner()))
        .collect();
    // A fragment of a vertex (some of the facets round it, split off by the weld) sees only
    // its own edges, which may all be long while a neighbour vertex is much nearer (a fan's
    // apex copies beside a ring of short edges). So a vertex's scale is the shortest edge at
    // any boundary vertex near it: the smallest over the 27 cells round its own in a grid of
    // side `cap` (the farthest a stitch reaches), each cell holding the smallest of its own.
    let cell_min = CellMin::new(&shortest, vertices, cap);
    let known = |v: usize| prior.get(v).copied().unwrap_or(f64::INFINITY);
    let near = cell_min.near();
    // A vertex alone in its neighbourhood (no other boundary vertex in the 27 cells round its
    // own, which hold everything within `cap` of it): an edge with an end alone matches only
    // an edge that shares that end, of another facet ([`Alone`]), so it is filed only when
    // the boundary holds one.
    let (scale, lonely): (Vec<f64>, Vec<u8>) = (0..vertices.len())
        .into_par_iter()
        .map(|v| match cell_min.entry_of[v] {
            NONE => (known(v), Alone::UNKNOWN),
            e => {
                let (m, count) = near[e as usize];
                let state = if count == 1 {
                    Alone::ALONE
                } else {
                    Alone::NEAR
                };
                (m.min(known(v)), state)
            }
        })
        .unzip();
    drop(cell_min);
    let shared = shared_ends(
        triangles,
        boundary.par_iter().map(|&(h, _)| h),
        vertices.len(),
    );
    let open = |v: u32| lonely[v as usize] != Alone::ALONE || shared[v as usize];
    let filed = |a: u32, b: u32| {
        if lonely_filter {
            open(a) && open(b)
        } else {
            lonely[a as usize] != Alone::ALONE || lonely[b as usize] != Alone::ALONE
        }
    };
    *prior = scale;
    let scale = &*prior;
    let limit = |v: u32| -> f64 {
        let s = scale[v as usize];
        if s.is_finite() {
            (s * STITCH_FRACTION).min(cap)
        } else {
            0.0
        }
    };
    // Every boundary edge of positive length, filed as one record (its facet, endpoints,
    // positions and limits on one cache line), so verifying a candidate reads one record.
    let picked: Vec<(u32, bool)> = keys::par_blocks(boundary.len(), |r, out| {
        out.extend(boundary[r].iter().copied().filter(|&(h, _)| {
            let (a, b) = half_edge(triangles, h);
            let l = dist(pos(a), pos(b));
            filed(a, b) && l > 0.0 && l.is_finite()
        }));
    });
    drop(boundary);
    drop(shared);
    let filed = Filed::new(picked.len(), |i| {
        let (h, inner) = picked[i];
        let (a, b) = half_edge(triangles, h);
        Edge {
            a,
            b,
            facet: triangles[(h / 3) as usize],
            pa: vertices[a as usize],
            pb: vertices[b as usize],
            limit: [limit(a), limit(b)],
            inner,
        }
    });
    drop(picked);
    // Over the whole boundary (no focus), the flags serve the copies' stitch too.
    let alone = focus.is_none().then_some(Alone {
        state: lonely,
        reach: cap,
    });
    // Per edge: the best match, `score << 32 | other`, where the score (the larger endpoint
    // gap, ≥ 0) is an `f32`'s bits, monotone in the distance, so the smallest key is the
    // smallest score, then the smallest edge, whatever the order in which pairs are found.
    // Edges are numbered in their input order (boundary half-edge order), not the cells'.
    // Every match found is recorded for both edges (so no edge looks upward, and a match one
    // edge found counts for the other even when the other's budget ran out first).
    let best: Vec<AtomicU64> = (0..filed.edges.len())
        .map(|_| AtomicU64::new(u64::MAX))
        .collect();
    let offer = |to: usize, key: u64| {
        let b = &best[to];
        if key < b.load(Ordering::Relaxed) {
            b.fetch_min(key, Ordering::Relaxed);
        }
    };
    filed.for_each_in_order(|i, hints| {
        let mut mine = u64::MAX;
        let id = filed.input[i];
        filed.candidates(i, STITCH_MAX_CANDIDATES, hints, |j, s| {
            let s = u64::from((s as f32).to_bits()) << 32;
            let other = filed.input[j];
            mine = mine.min(s | u64::from(other));
            offer(other as usize, s | u64::from(id));
        });
        if mine != u64::MAX {
            offer(id as usize, mine);
        }
    });
    let best: Vec<u32> = best
        .into_iter()
        .map(|b| {
            let b = b.into_inner();
            if b == u64::MAX { NONE } else { lo(b) }
        })
        .collect();
    // Mutual best matches, each with its gap and the vertex pairs it merges, but none with a
    // crack's edge (the zip's: see `cracked`).
    let matched: Vec<(&Edge, &Edge, f64, Merges)> = best
        .iter()
        .enumerate()
        .filter(|&(i, &j)| j != NONE && (j as usize) >= i && best[j as usize] == i as u32)
        .map(|(i, &j)| (filed.by_input(i as u32), filed.by_input(j)))
        .filter(|(e, o)| e.inner && o.inner)
        .filter_map(|(e, o)| e.pairs(o).map(|(gap, pairs)| (e, o, gap, pairs)))
        .collect();
    let asked: Vec<(&Edge, f64)> = matched
        .iter()
        .flat_map(|&(e, o, gap, _)| [(e, gap), (o, gap)])
        .collect();
    let crack = cracked(vertices, triangles, twin, &asked, snap);
    // Union their endpoints.
    let mut parent: Vec<u32> = (0..vertices.len() as u32).collect();
    let mut stitched = 0u64;
    let mut largest = 0.0f64;
    for (k, &(_, _, s, pairs)) in matched.iter().enumerate() {
        if crack[2 * k] || crack[2 * k + 1] {
            continue;
        }
        for (x, y) in pairs {
            union(&mut parent, x, y);
        }
        stitched += 1;
        largest = largest.max(s);
    }
    let mut done = finish(parent, stitched, largest);
    done.alone = alone;
    done
}

/// Which boundary vertices had no other boundary vertex near them, as [`stitch`] found over
/// the whole boundary: such an end `a` of an edge `a → b` is a partner's end only as the same
/// vertex (no other is within any stitch's reach), and a partner at `a` in the edge's own
/// facet would merge `b` with another corner of that facet, which is refused. So an edge is
/// looked at only when each end has another boundary vertex within the reach, or boundary
/// edges of two facets at it: on a cloud of separate triangles, about a tenth of the edges.
#[derive(Debug)]
pub(crate) struct Alone {
    /// Per vertex: [`Alone::ALONE`], [`Alone::NEAR`] or, when it was not on the boundary
    /// (or had no edge of positive length), [`Alone::UNKNOWN`].
    state: Vec<u8>,
    /// The distance the flags were taken for: no other boundary vertex within it.
    reach: f64,
}

impl Alone {
    const UNKNOWN: u8 = 0;
    const ALONE: u8 = 1;
    const NEAR: u8 = 2;

    /// Per vertex of the boundary half-edges `boundary` of `triangles` now (which the sews
    /// since have made smaller, and larger where a removed facet laid its neighbours' edges
    /// open): may it be an end of a match within `reach`? `None` when every vertex may be
    /// (the reach is larger than the one the flags were taken for, or the boundary grew in
    /// too many places to tell).
    fn ends(
        &self,
        vertices: &[[f32; 3]],
        triangles: &[[u32; 3]],
        boundary: &[u32],
        reach: f64,
    ) -> Option<Vec<bool>> {
        if reach.is_nan() || reach > self.reach || self.state.len() != vertices.len() {
            return None;
        }
        // Vertices on the boundary now that were not then: a vertex they are near may not be
        // alone any more.
        let grown: Vec<u32> = boundary
            .par_iter()
            .flat_map_iter(|&h| {
                let (a, b) = half_edge(triangles, h);
                [a, b]
            })
            .filter(|&v| self.state[v as usize] == Alone::UNKNOWN)
            .collect();
        let near_grown = if grown.is_empty() {
            None
        } else {
            Some(Focus::around(vertices, &grown, self.reach, boundary.len())?)
        };
        let shared = shared_ends(triangles, boundary.par_iter().copied(), vertices.len());
        Some(
            (0..vertices.len())
                .into_par_iter()
                .map(|v| {
                    self.state[v] != Alone::ALONE
                        || shared[v]
                        || near_grown
                            .as_ref()
                            .is_some_and(|f| f.inner.contains(&f.cell(vertices[v])))
                })
                .collect(),
        )
    }
}

/// Per vertex (of `n`): do the boundary half-edges `boundary` of `triangles` hold edges of two
/// or more facets at it?
fn shared_ends(
    triangles: &[[u32; 3]],
    boundary: impl ParallelIterator<Item = u32>,
    n: usize,
) -> Vec<bool> {
    use std::sync::atomic::AtomicU32;
    const MANY: u32 = NONE - 1;
    let first: Vec<AtomicU32> = (0..n)
        .into_par_iter()
        .map(|_| AtomicU32::new(NONE))
        .collect();
    boundary.for_each(|h| {
        let f = h / 3;
        let (a, b) = half_edge(triangles, h);
        for v in [a, b] {
            let slot = &first[v as usize];
            match slot.compare_exchange(NONE, f, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {}
                Err(g) if g == f || g == MANY => {}
                Err(_) => slot.store(MANY, Ordering::Relaxed),
            }
        }
    });
    first
        .into_par_iter()
        .map(|x| x.into_inner() == MANY)
        .collect()
}

/// The two vertex pairs a stitch of two edges merges (a vertex of each).
type Merges = [(u32, u32); 2];

/// Per edge of `asked` (with the gap of the stitch that would sew it): is it one side of a
/// crack, another boundary edge from one of its ends running along it (the one edge's far
/// end lies on the other, [`zip::lies_on`]: within rounding plus `snap`, the weld's largest
/// merge, or a quarter of the gap if that is less; and farther than twice the larger of the
/// two from both of its ends: nearer an end, a vertex is as likely a copy of that end, which
/// the weld left apart and the stitch merges)? A facet split at a point of an edge whose
/// other facet is not (a T-junction) leaves the whole edge open on one side and its two
/// pieces on the other, each piece running along the whole edge from one of its ends. These
/// edges are the zip's, which splits the whole edge where the point lies and moves nothing. A
/// stitch must leave them: an edge that lies along one of them a little way off (a part's
/// edge across a small clearance from another part's, as parts laid out tight or stacked
/// are) may be its best match, and sewing them would join the two parts.
/// At most this many boundary neighbours of an edge's end are looked at for a crack (an end
/// of a crack has two or three; a crafted apex of millions of open facets must not cost its
/// edges that many each).
const CRACK_NEIGHBOURS: usize = 8;

fn cracked(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    twin: &[u32],
    asked: &[(&Edge, f64)],
    snap: f64,
) -> Vec<bool> {
    if asked.is_empty() {
        return Vec::new();
    }
    let mut wanted = vec![false; vertices.len()];
    for (e, _) in asked {
        wanted[e.a as usize] = true;
        wanted[e.b as usize] = true;
    }
    // (end, its neighbour along the boundary), for the asked edges' ends.
    let mut links: Vec<u64> = keys::par_blocks(twin.len(), |r, out| {
        for h in r.filter(|&h| twin[h] == NONE) {
            let (a, b) = half_edge(triangles, h as u32);
            out.extend(
                [(a, b), (b, a)]
                    .into_iter()
                    .filter(|&(x, _)| wanted[x as usize])
                    .map(|(x, y)| keys::pack(x, y)),
            );
        }
    });
    drop(wanted);
    links.par_sort_unstable();
    let p = |v: u32| vertices[v as usize].map(f64::from);
    asked
        .par_iter()
        .map(|&(e, gap)| {
            // Nearer the line than a quarter of the stitch's gap (the crack explains the edge
            // better than the stitch does), and well inside the edge (a vertex within the gap
            // of an end is as likely the copy of that end the stitch would merge).
            let near = snap.min(gap / 4.0);
            let ends = snap.max(gap);
            [(e.a, e.b), (e.b, e.a)].into_iter().any(|(x, y)| {
                let (px, py) = (p(x), p(y));
                let start = links.partition_point(|&k| hi(k) < x);
                links[start..]
                    .iter()
                    .take_while(|&&k| hi(k) == x)
                    .take(CRACK_NEIGHBOURS)
                    .map(|&k| lo(k))
                    .filter(|w| !e.facet.contains(w))
                    .any(|w| {
                        let pw = p(w);
                        runs_along(px, py, pw, near, ends) || runs_along(px, pw, py, near, ends)
                    })
            })
        })
        .collect()
}

/// Does `w` lie on the segment `a → b` (within rounding plus `near`: [`zip::lies_on`]),
/// farther than twice rounding plus `ends` from both ends?
fn runs_along(a: [f64; 3], b: [f64; 3], w: [f64; 3], near: f64, ends: f64) -> bool {
    let largest = [a, b, w]
        .iter()
        .flatten()
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let len = norm(sub(b, a));
    zip::lies_on(a, b, w, near)
        .is_some_and(|along| along.min(len - along) > 2.0 * (clean::rounding(largest) + ends))
}

/// Per cell of a grid: the smallest value of the vertices in it and their count, and both
/// over the 27 cells round each.
///
/// The cells are numbered in (z, y, x) order (10 bits each) and sorted, so the three cells
/// of a row along x round a cell are one span of the sorted cells, and the nine rows round
/// the cells taken in order move forward through them (searched from where the last cell's
/// ended: [`keys::lower_bound_from`]): no look-ups at random in a table larger than the cache
/// when the boundary is millions of vertices (a cloud of separate triangles).
struct CellMin {
    /// The filled cells' keys, sorted ...
    keys: Vec<u32>,
    /// ... the smallest value in each ...
    mins: Vec<f64>,
    /// ... and how many vertices it holds.
    counts: Vec<u32>,
    /// Per vertex: its cell's entry ([`NONE`] when its value is not finite).
    entry_of: Vec<u32>,
}

/// Cells of a [`CellMin`] grid along an axis, at most (10 bits, a margin each side).
const CELL_MIN_AXIS: f64 = 1016.0;

impl CellMin {
    /// The cells of side `side` (or more: at most [`CELL_MIN_AXIS`] of them across the box
    /// of the vertices filed) of the vertices `v` whose `value` is finite, each with the
    /// smallest value in it.
    fn new(value: &[f64], vertices: &[[f32; 3]], side: f64) -> CellMin {
        let at: Vec<u32> = keys::par_blocks(value.len(), |r, out| {
            out.extend(r.filter(|&v| value[v].is_finite()).map(|v| v as u32));
        });
        let points: Vec<[f32; 3]> = at.par_iter().map(|&v| vertices[v as usize]).collect();
        let Some(b) = keys::par_bbox(&points) else {
            return CellMin {
                keys: Vec::new(),
                mins: Vec::new(),
                counts: Vec::new(),
                entry_of: vec![NONE; value.len()],
            };
        };
        let extent = (0..3)
            .map(|k| f64::from(b.max[k]) - f64::from(b.min[k]))
            .fold(0.0f64, f64::max);
        // Cells numbered from the origin (the grid the scales have always used), counted
        // from the box's least cell.
        let inv = 1.0 / side.max(extent / CELL_MIN_AXIS);
        let least = b.min.map(|x| keys::floor_i64(f64::from(x) * inv));
        let key = |p: [f32; 3]| {
            let c = [0, 1, 2].map(|k| {
                let x = keys::floor_i64(f64::from(p[k]) * inv) - least[k];
                x.clamp(0, CELL_MIN_AXIS as i64 + 1) as u32 + 2
            });
            c[2] << 20 | c[1] << 10 | c[0]
        };
        let cells: Vec<u32> = points.par_iter().map(|&p| key(p)).collect();
        drop(points);
        let sorted = keys::sort_hashes(&cells);
        drop(cells);
        // The first sorted key of every cell, and each sorted key's cell (its entry).
        let starts: Vec<u32> = keys::par_blocks(sorted.len(), |r, out| {
            out.extend(
                r.filter(|&i| i == 0 || hi(sorted[i]) != hi(sorted[i - 1]))
                    .map(|i| i as u32),
            );
        });
        let keys: Vec<u32> = starts.par_iter().map(|&i| hi(sorted[i as usize])).collect();
        let entry_of: Vec<std::sync::atomic::AtomicU32> = (0..value.len())
            .into_par_iter()
            .map(|_| std::sync::atomic::AtomicU32::new(NONE))
            .collect();
        let (mins, counts): (Vec<f64>, Vec<u32>) = starts
            .par_iter()
            .enumerate()
            .map(|(e, &s)| {
                let end = starts.get(e + 1).map_or(sorted.len(), |&x| x as usize);
                let mut m = f64::INFINITY;
                for &k in &sorted[s as usize..end] {
                    let v = at[lo(k) as usize];
                    m = m.min(value[v as usize]);
                    entry_of[v as usize].store(e as u32, Ordering::Relaxed);
                }
                (m, (end - s as usize) as u32)
            })
            .unzip();
        CellMin {
            keys,
            mins,
            counts,
            entry_of: entry_of.into_iter().map(|e| e.into_inner()).collect(),
        }
    }

    /// Per entry: the smallest value in the 27 cells round its own, and how many vertices
    /// those cells hold.
    fn near(&self) -> Vec<(f64, u32)> {
        const CHUNK: usize = 4096;
        let n = self.keys.len();
        (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .flat_map_iter(|c| {
                let from = c * CHUNK;
                let mut hints = [from; 9];
                (from..n.min(from + CHUNK)).map(move |e| {
                    let k = self.keys[e];
                    let (mut m, mut count) = (f64::INFINITY, 0);
                    for (r, hint) in hints.iter_mut().enumerate() {
                        // The row at offset (dy, dz), from x − 1 to x + 1: every coordinate
                        // is at least 2, so none of these wraps.
                        let (dy, dz) = (r as u32 % 3, r as u32 / 3);
                        let row = (k + (dz << 20) + (dy << 10)) - (1 << 20) - (1 << 10);
                        let s = keys::lower_bound_from(&self.keys, row - 1, *hint);
                        *hint = s;
                        for ((&x, &v), &c) in self.keys[s..]
                            .iter()
                            .zip(&self.mins[s..])
                            .zip(&self.counts[s..])
                        {
                            if x > row + 1 {
                                break;
                            }
                            m = m.min(v);
                            count += c;
                        }
                    }
                    (m, count)
                })
            })
            .collect()
    }
}

/// Of an edge's own length, the fraction its ends may be moved by a stitch of copies.
pub(crate) const COPY_FRACTION: f64 = 0.25;

/// A pair of copies whose smaller end class holds more facets than this is not sewn (the
/// check that the sewn edge ends with two facets reads them all).
const OVERFULL_CHECK_MAX: usize = 1024;

/// At most this many candidates are verified per boundary edge when stitching copies.
pub(crate) const COPY_MAX_CANDIDATES: usize = 96;

/// Stitch the copies of edges that [`stitch`] left open: the fans of needles whose rim edges
/// are shorter than the noise on their vertices (a sphere's poles at a fine tessellation).
///
/// [`stitch`] limits a vertex to ½ of the shortest edge near it, so a fan's apex, whose rim
/// edges are short, keeps its copies apart although the nearest distinct vertex (the rim) is
/// a spoke away. Here two boundary edges match when both pairs of endpoints are within the
/// smaller of the two edges' own limits: [`COPY_FRACTION`] of the edge's length, and at most
/// `spread` — the largest gap between copies of one vertex that the weld and the stitch
/// bridged so far (the noise the input shows) — so a real gap wider than the noise is never
/// closed here. A fan's spokes are long, so two copies of a spoke match, while the spoke of
/// the next needle, a rim edge away at one end, matches too when the noise is that large:
/// the pairs are taken in the order of their larger endpoint gap (the smallest first), every
/// edge once, and a pair is refused when its merges would put two corners of one facet into
/// one vertex — checked on the union of every merge so far, not pair by pair, so no chain of
/// merges collapses a facet.
///
/// With a `focus` (a later round, round the vertices the one before merged, for reaches up to
/// `spread`), only the boundary edges in it are looked at, and only pairs in its inner part
/// are sewn ([`Focus`]; a pair further out is refused again for the reasons it was refused
/// before).
pub(crate) fn stitch_copies(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    twin: &[u32],
    spread: f64,
    focus: Option<&Focus>,
    alone: Option<&Alone>,
) -> Stitched {
    if spread <= 0.0 || !spread.is_finite() {
        return Stitched::default();
    }
    let boundary: Vec<u32> = keys::par_blocks(twin.len(), |r, out| {
        out.extend(r.filter(|&h| twin[h] == NONE).map(|h| h as u32));
    });
    let ends = alone.and_then(|a| a.ends(vertices, triangles, &boundary, spread));
    let limit = |pa, pb| (dist(pa, pb) * COPY_FRACTION).min(spread);
    let picked: Vec<(u32, bool)> = keys::par_blocks(boundary.len(), |r, out| {
        out.extend(boundary[r].iter().filter_map(|&h| {
            let (a, b) = half_edge(triangles, h);
            if ends
                .as_ref()
                .is_some_and(|e| !(e[a as usize] && e[b as usize]))
            {
                return None;
            }
            let (pa, pb) = (vertices[a as usize], vertices[b as usize]);
            let (outer, inner) = focus.map_or((true, true), |f| f.holds(pa, pb));
            let l = limit(pa, pb);
            (outer && dist(pa, pb).is_finite() && l > 0.0).then_some((h, inner))
        }));
    });
    drop(boundary);
    drop(ends);
    if picked.len() < 2 {
        return Stitched::default();
    }
    let filed = Filed::new(picked.len(), |i| {
        let (h, inner) = picked[i];
        let (a, b) = half_edge(triangles, h);
        let (pa, pb) = (vertices[a as usize], vertices[b as usize]);
        let l = limit(pa, pb);
        Edge {
            a,
            b,
            facet: triangles[(h / 3) as usize],
            pa,
            pb,
            limit: [l, l],
            inner,
        }
    });
    drop(picked);
    // Every match found, `(gap, i, j)` with `i < j`, once.
    let found = filed.map_chunks_in_order(|range, hints| {
        let mut mine = Vec::new();
        for i in range {
            filed.candidates(i, COPY_MAX_CANDIDATES, hints, |j, g| {
                // Edges numbered in their input order, not the cells'.
                let (i, j) = (filed.input[i], filed.input[j]);
                mine.push(((g as f32).to_bits(), i.min(j), i.max(j)));
            });
        }
        mine
    });
    let mut pairs: Vec<(u32, u32, u32)> = found.concat();
    pairs.par_sort_unstable();
    pairs.dedup();
    if pairs.is_empty() {
        return Stitched::default();
    }
    // The facets round every vertex a pair may merge, for the collapse check.
    let mut involved = vec![u32::MAX; vertices.len()];
    let mut count = 0u32;
    for &(_, i, j) in &pairs {
        for e in [filed.by_input(i), filed.by_input(j)] {
            for v in [e.a, e.b] {
                if involved[v as usize] == u32::MAX {
                    involved[v as usize] = count;
                    count += 1;
                }
            }
        }
    }
    let mut around: Vec<(u32, u32)> = keys::par_blocks(triangles.len(), |r, out| {
        for f in r {
            out.extend(
                triangles[f]
                    .iter()
                    .filter(|&&v| involved[v as usize] != u32::MAX)
                    .map(|&v| (involved[v as usize], f as u32)),
            );
        }
    });
    around.par_sort_unstable();
    around.dedup();
    // Per vertex (by its root in `parent`): the facets round the vertices of its class.
    let mut facets_of: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    let mut start = 0;
    while start < around.len() {
        let k = around[start].0;
        let mut end = start;
        while end < around.len() && around[end].0 == k {
            end += 1;
        }
        facets_of.insert(k, around[start..end].iter().map(|x| x.1).collect());
        start = end;
    }
    drop(around);
    // `facets_of` is keyed by the compact index of a class's root.
    let mut parent: Vec<u32> = (0..vertices.len() as u32).collect();
    let mut used = vec![false; filed.edges.len()];
    let mut stitched = 0u64;
    let mut largest = 0.0f64;
    // Would merging the classes of roots `x` and `y` put two corners of one facet into one?
    let collapses = |parent: &mut Vec<u32>,
                     facets_of: &std::collections::HashMap<u32, Vec<u32>>,
                     x: u32,
                     y: u32| {
        let fx = facets_of
            .get(&involved[x as usize])
            .map_or(&[][..], |v| &v[..]);
        let fy = facets_of
            .get(&involved[y as usize])
            .map_or(&[][..], |v| &v[..]);
        let (small, other) = if fx.len() <= fy.len() {
            (fx, y)
        } else {
            (fy, x)
        };
        small.iter().any(|&f| {
            triangles[f as usize]
                .iter()
                .any(|&w| find(parent, w) == other)
        })
    };
    for &(g, i, j) in &pairs {
        if used[i as usize] || used[j as usize] {
            continue;
        }
        let (e, o) = (filed.by_input(i), filed.by_input(j));
        if !(e.inner && o.inner) {
            continue;
        }
        let Some((_, merge)) = e.pairs(o) else {
            continue;
        };
        if folds(vertices, e, o) {
            continue;
        }
        let r = merge.map(|(x, y)| (find(&mut parent, x), find(&mut parent, y)));
        let real: Vec<(u32, u32)> = r.into_iter().filter(|(x, y)| x != y).collect();
        if real.is_empty() {
            continue;
        }
        // Both merges at once: they must not meet (that would join the two ends of an edge),
        // and neither may collapse a facet.
        if real.len() == 2 {
            let (p, q) = (real[0], real[1]);
            if p.0 == q.0 || p.0 == q.1 || p.1 == q.0 || p.1 == q.1 {
                continue;
            }
        }
        if real
            .iter()
            .any(|&(x, y)| collapses(&mut parent, &facets_of, x, y))
        {
            continue;
        }
        // The sewn edge must end with two facets: those of `e` and `o`, no third one that
        // already joins the two ends' classes (that edge would be split apart again).
        let ends = r.map(|(x, y)| [x, y]);
        let list = |x: u32| {
            facets_of
                .get(&involved[x as usize])
                .map_or(&[][..], |v| &v[..])
        };
        let size = |end: [u32; 2]| {
            list(end[0]).len()
                + if end[1] != end[0] {
                    list(end[1]).len()
                } else {
                    0
                }
        };
        let (near, far) = if size(ends[0]) <= size(ends[1]) {
            (ends[0], ends[1])
        } else {
            (ends[1], ends[0])
        };
        if size(near) > OVERFULL_CHECK_MAX {
            continue;
        }
        let mut joining = 0;
        let roots = if near[1] != near[0] {
            &near[..]
        } else {
            &near[..1]
        };
        for &x in roots {
            for &f in list(x) {
                if triangles[f as usize]
                    .iter()
                    .any(|&w| far.contains(&find(&mut parent, w)))
                {
                    joining += 1;
                }
            }
        }
        if joining > 2 {
            continue;
        }
        for (x, y) in real {
            // The smaller root survives; its class takes the other's facets.
            let (keep, gone) = (x.min(y), x.max(y));
            parent[gone as usize] = keep;
            let moved = facets_of
                .remove(&involved[gone as usize])
                .unwrap_or_default();
            facets_of
                .entry(involved[keep as usize])
                .or_default()
                .extend(moved);
        }
        used[i as usize] = true;
        used[j as usize] = true;
        stitched += 1;
        largest = largest.max(f64::from(f32::from_bits(g)));
    }
    finish(parent, stitched, largest)
}

/// Below this angle between two facets across a stitched edge (their third corners seen
/// along the edge), a stitch of copies would fold one facet onto the other: refused.
const FOLD_COS: f64 = 0.866; // cos 30°

/// Would joining edge `e` to `o` fold their facets onto each other? Seen along the edge, the
/// third corners of the two facets lie on opposite sides (a flat or gently bent surface), at
/// a right angle (a box's edge) or, for a sharp wedge, at a smaller angle; two copies of one
/// facet's neighbours never lie within 30° of each other on the same side, the spoke of the
/// wrong needle of a fan often does.
fn folds(vertices: &[[f32; 3]], e: &Edge, o: &Edge) -> bool {
    let third = |x: &Edge| {
        x.facet
            .iter()
            .find(|&&v| v != x.a && v != x.b)
            .map(|&v| vertices[v as usize].map(f64::from))
    };
    let (Some(c), Some(d)) = (third(e), third(o)) else {
        return false;
    };
    let (a, b) = (e.pa.map(f64::from), e.pb.map(f64::from));
    let axis = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let ll = axis.iter().map(|x| x * x).sum::<f64>();
    if ll <= 0.0 {
        return false;
    }
    // The part of `p - a` across the edge; the partner's third corner is taken from its own
    // first endpoint, which lies at `a` or `b` within the noise.
    let across = |p: [f64; 3], from: [f64; 3]| {
        let v = [p[0] - from[0], p[1] - from[1], p[2] - from[2]];
        let t = (v[0] * axis[0] + v[1] * axis[1] + v[2] * axis[2]) / ll;
        [v[0] - t * axis[0], v[1] - t * axis[1], v[2] - t * axis[2]]
    };
    let u = across(c, a);
    let w = across(d, o.pa.map(f64::from));
    let (nu, nw) = (
        u.iter().map(|x| x * x).sum::<f64>().sqrt(),
        w.iter().map(|x| x * x).sum::<f64>().sqrt(),
    );
    if nu <= 0.0 || nw <= 0.0 {
        return false;
    }
    (u[0] * w[0] + u[1] * w[1] + u[2] * w[2]) / (nu * nw) > FOLD_COS
}

/// The boundary edges filed by reach class and midpoint cell, for candidate look-ups.
///
/// Every edge is filed under its reach class `k = ⌊log₂ reach⌋` and the cell of its midpoint
/// in a grid of side `2^(k+2)` ([`keys::LexGrid`] level `k + 2`, clamped to the grids' finest
/// level), and the edges are sorted by that cell ([`keys::LexIndex`]): one cell's edges are
/// neighbours in memory, and the look-ups of edges taken in that order move forward through
/// the sorted cells instead of probing tables at random (a boundary of millions of edges,
/// as a cloud of separate triangles has, is far larger than the cache).
struct Filed {
    /// The edges in cell order.
    edges: Vec<Edge>,
    /// Per edge (in cell order): its index in the input.
    input: Vec<u32>,
    /// Per edge (in input order): its place in cell order.
    at: Vec<u32>,
    /// Which levels (above the grid's finest) hold edges, one bit each.
    levels: u128,
    /// The edges' cells, sorted.
    index: keys::LexIndex,
    grid: keys::LexGrid,
}

/// Edges whose look-ups one task makes in turn.
const FILED_CHUNK: usize = 4096;

impl Filed {
    /// Files the `n` edges `make(0)`, …, `make(n - 1)` (the input order). The edges are made
    /// again for each pass (the box, the keys, the edges in cell order) rather than held in
    /// input order too: a boundary of millions of edges held twice was the peak of a whole
    /// repair (a soup of 64 noisy copies of one model: 3 M edges of 64 bytes).
    fn new(n: usize, make: impl Fn(usize) -> Edge + Sync) -> Filed {
        let empty = || (i32::MIN, [f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        let (top, lo, hi) = (0..n)
            .into_par_iter()
            .fold(empty, |(c, lo, hi), i| {
                let e = make(i);
                let m = e.mid();
                (
                    c.max(class(&e)),
                    [0, 1, 2].map(|k| lo[k].min(m[k])),
                    [0, 1, 2].map(|k| hi[k].max(m[k])),
                )
            })
            .reduce(empty, |(c, lo, hi), (d, l, h)| {
                (
                    c.max(d),
                    [0, 1, 2].map(|k| lo[k].min(l[k])),
                    [0, 1, 2].map(|k| hi[k].max(h[k])),
                )
            });
        let top = if n == 0 { 0 } else { top }.saturating_add(2);
        let grid = keys::LexGrid::over(lo, hi, top);
        let keys: Vec<u64> = (0..n)
            .into_par_iter()
            .map(|i| {
                let e = make(i);
                let l = level(&grid, &e);
                grid.key(l, grid.cell(l, e.mid()))
                    .expect("a midpoint lies in the grid round the midpoints")
            })
            .collect();
        let levels = keys
            .par_iter()
            .map(|&k| 1u128 << keys::LexGrid::key_level(k))
            .reduce(|| 0, |a, b| a | b);
        let mut index = keys::LexIndex::new(&keys);
        drop(keys);
        let input = std::mem::take(&mut index.order);
        let edges = input.par_iter().map(|&i| make(i as usize)).collect();
        let mut at = vec![0u32; n];
        for (p, &i) in input.iter().enumerate() {
            at[i as usize] = p as u32;
        }
        Filed {
            edges,
            input,
            at,
            levels,
            index,
            grid,
        }
    }

    /// Edge `i` of the input order.
    fn by_input(&self, i: u32) -> &Edge {
        &self.edges[self.at[i as usize] as usize]
    }

    /// Calls `look(i, hints)` for every edge `i`, in cell order, a chunk of edges per task,
    /// `hints` kept across one chunk's look-ups (see [`Filed::candidates`]).
    fn for_each_in_order(&self, look: impl Fn(usize, &mut [usize; 16]) + Sync) {
        self.map_chunks_in_order(|range, hints| {
            for i in range {
                look(i, hints);
            }
        });
    }

    /// `look(range, hints)` for consecutive ranges of edges in cell order, one per task, with
    /// `hints` for their look-ups (see [`Filed::candidates`]); the results in range order.
    fn map_chunks_in_order<T: Send>(
        &self,
        look: impl Fn(std::ops::Range<usize>, &mut [usize; 16]) -> T + Sync,
    ) -> Vec<T> {
        let n = self.edges.len();
        (0..n.div_ceil(FILED_CHUNK))
            .into_par_iter()
            .map(|c| {
                let from = c * FILED_CHUNK;
                look(from..n.min(from + FILED_CHUNK), &mut [from; 16])
            })
            .collect()
    }

    /// Calls `found(j, gap)` for every edge `j` that matches edge `i` (see [`Edge::gap`])
    /// among at most `budget` candidates, verified in a fixed order (so the result does not
    /// depend on the threads). Edge `i` looks up the nearer cell along each axis (8 cells) in
    /// its own level and in the level below; a partner in the level above finds `i` by its own
    /// look-up of the level below. `hints` holds where each of the 16 look-ups of the edge
    /// before ended: in cell order, the next edge's are at or just after them.
    fn candidates(
        &self,
        i: usize,
        budget: usize,
        hints: &mut [usize; 16],
        mut found: impl FnMut(usize, f64),
    ) {
        let e = &self.edges[i];
        let l0 = level(&self.grid, e);
        let m = e.mid();
        let mut left = budget;
        for (n, l) in [l0, l0 - 1].into_iter().enumerate() {
            if l < self.grid.least() {
                break;
            }
            if self.levels >> (l - self.grid.least()) & 1 == 0 {
                continue;
            }
            let (x, dir) = self.grid.nearer(l, m);
            for k in 0..8usize {
                let shifted = [0, 1, 2].map(|a| x[a] + if k >> a & 1 == 1 { dir[a] } else { 0 });
                let Some(key) = self.grid.key(l, shifted) else {
                    continue;
                };
                for j in self.index.run(key, &mut hints[n * 8 + k]) {
                    if j == i {
                        continue;
                    }
                    if left == 0 {
                        return;
                    }
                    left -= 1;
                    if let Some(g) = e.gap(&self.edges[j]) {
                        found(j, g);
                    }
                }
            }
        }
    }
}

/// An edge's reach class `⌊log₂ reach⌋`.
fn class(e: &Edge) -> i32 {
    let c = e.reach().log2().floor();
    if c.is_nan() {
        i32::MIN
    } else {
        c.clamp(-1e6, 1e6) as i32
    }
}

/// The grid level an edge is filed under: its class + 2 (cells of side `2^(k+2)`: two
/// matching edges' midpoints are at most the smaller reach apart, so under half a side of the
/// lower class along every axis, and the nearer cell along each axis holds the partner).
fn level(grid: &keys::LexGrid, e: &Edge) -> i32 {
    grid.level(class(e).saturating_add(2))
}

/// A boundary half-edge `a → b` of `facet`, with what verifying a match needs.
#[derive(Clone, Copy)]
struct Edge {
    a: u32,
    b: u32,
    facet: [u32; 3],
    pa: [f32; 3],
    pb: [f32; 3],
    /// The stitch limits of `a` and `b`.
    limit: [f64; 2],
    /// In the inner part of the round's [`Focus`] (always, without one): may be sewn.
    inner: bool,
}

impl Edge {
    /// How far a matching edge's midpoint may be from this one's: the larger endpoint limit
    /// (the midpoints of two matching edges are at most the mean of the two endpoint gaps
    /// apart, each gap within both of its endpoints' limits).
    fn reach(&self) -> f64 {
        self.limit[0].max(self.limit[1])
    }

    fn mid(&self) -> [f64; 3] {
        [0, 1, 2].map(|k| (f64::from(self.pa[k]) + f64::from(self.pb[k])) / 2.0)
    }

    /// When `self` and `o` match (`a`, `d` and `b`, `c`, or `a`, `c` and `b`, `d`, each
    /// within the smaller of their limits, never two distinct vertices of one facet): the
    /// larger of the two endpoint gaps.
    fn gap(&self, o: &Edge) -> Option<f64> {
        self.pairs(o).map(|(s, _)| s)
    }

    /// [`Edge::gap`], and the vertex pairs the match merges.
    fn pairs(&self, o: &Edge) -> Option<(f64, [(u32, u32); 2])> {
        let within = |x: [f32; 3], lx: f64, y: [f32; 3], ly: f64| {
            let d = dist(x, y);
            (d <= lx.min(ly)).then_some(d)
        };
        let (l, m) = (self.limit, o.limit);
        let reversed = (
            within(self.pa, l[0], o.pb, m[1]),
            within(self.pb, l[1], o.pa, m[0]),
        );
        let pairs = [(self.a, o.b), (self.b, o.a)];
        if let (Some(x), Some(y)) = reversed
            && self.may_merge(o, pairs)
        {
            return Some((x.max(y), pairs));
        }
        let pairs = [(self.a, o.a), (self.b, o.b)];
        match (
            within(self.pa, l[0], o.pa, m[0]),
            within(self.pb, l[1], o.pb, m[1]),
        ) {
            (Some(x), Some(y)) if self.may_merge(o, pairs) => Some((x.max(y), pairs)),
            _ => None,
        }
    }

    /// May the vertex pairs `pairs` (a vertex of `self`, one of `o`) be merged? Never two
    /// distinct vertices of one facet; a pair that is one vertex already (the two edges share
    /// an endpoint, as fragments of one fan do) merges nothing, but not both.
    fn may_merge(&self, o: &Edge, pairs: [(u32, u32); 2]) -> bool {
        pairs.iter().any(|&(x, y)| x != y)
            && pairs
                .iter()
                .all(|&(x, y)| x == y || (!self.facet.contains(&y) && !o.facet.contains(&x)))
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f64 {
    let d = |k: usize| f64::from(a[k]) - f64::from(b[k]);
    (d(0).powi(2) + d(1).powi(2) + d(2).powi(2)).sqrt()
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

/// The result of a stitch whose merges are the union-find `parent`: every vertex pointed
/// straight at its class's root, and the number of vertices merged away.
fn finish(mut parent: Vec<u32>, stitched: u64, largest: f64) -> Stitched {
    if stitched == 0 {
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
        edges: stitched,
        vertices: merged,
        largest,
        alone: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edges with midpoints spread over a box a thousand reaches wide, so that most cells
    /// round an edge hold none (the sparse case the occupancy bitmap is for).
    fn sparse_edges(n: usize) -> Vec<Edge> {
        let mut next = keys::test_uniform(0x2545_f491_4f6c_dd1du64);
        (0..n as u32)
            .map(|i| {
                let p: [f32; 3] = std::array::from_fn(|_| (next() * 1000.0) as f32);
                let q = p.map(|c| c + 0.5);
                Edge {
                    a: 2 * i,
                    b: 2 * i + 1,
                    facet: [2 * i, 2 * i + 1, u32::MAX],
                    pa: p,
                    pb: q,
                    limit: [0.5 + next(), 0.5 + next()],
                    inner: true,
                }
            })
            .collect()
    }

    /// A wavy sheet of `n` × `n` squares cut into separate triangles, every corner copy moved
    /// by its own noise of up to `noise` (in units of the squares' side).
    fn noisy_soup(n: usize, noise: f64, seed: u64) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
        let mut next = keys::test_uniform(seed);
        let (mut v, mut t) = (Vec::new(), Vec::new());
        let at = |i: usize, j: usize| [i as f64, j as f64, (i as f64 * 0.3).sin() * 2.0];
        for i in 0..n {
            for j in 0..n {
                for tri in [
                    [at(i, j), at(i + 1, j), at(i + 1, j + 1)],
                    [at(i, j), at(i + 1, j + 1), at(i, j + 1)],
                ] {
                    let b = v.len() as u32;
                    for p in tri {
                        v.push(p.map(|x| (x + (next() * 2.0 - 1.0) * noise) as f32));
                    }
                    t.push([b, b + 1, b + 2]);
                }
            }
        }
        (v, t)
    }

    /// The facets after a round's merges, without the ones that collapsed.
    fn merge(t: &[[u32; 3]], r: &Stitched) -> Vec<[u32; 3]> {
        t.iter()
            .map(|f| f.map(|x| r.merge_into.get(x as usize).copied().unwrap_or(x)))
            .filter(|f| f[0] != f[1] && f[1] != f[2] && f[0] != f[2])
            .collect()
    }

    #[test]
    fn a_focused_round_sews_what_a_whole_round_sews() {
        // Rounds of stitching (and of stitching copies) on noisy soups: after every round that
        // sewed something, the next round is taken both over the whole boundary and focused
        // round the merged vertices, and must merge the same vertices.
        let mut later = [0u64; 2];
        let mut narrow = 0;
        for k in 0..9 {
            let noise = [0.05, 0.2, 0.3][k % 3];
            let (v, t0) = noisy_soup(64, noise, 0x3c6e_f372_fe94_f82bu64 + k as u64);
            // Focus cells of 2.4 and 1.2 squares: the sheet is many of them wide.
            let (cap, spread) = (0.6, 0.3);
            for copies in [false, true] {
                let mut t = t0.clone();
                let mut prior = Vec::new();
                let mut focus: Option<Focus> = None;
                for round in 0..4 {
                    let twin = crate::topology::pair_edges(&t).twin;
                    let run = |focus: Option<&Focus>, prior: &mut Vec<f64>| {
                        if copies {
                            stitch_copies(&v, &t, &twin, spread, focus, None)
                        } else {
                            stitch(&v, &t, &twin, cap, prior, focus, 0.0)
                        }
                    };
                    let whole = run(None, &mut prior.clone());
                    let r = match &focus {
                        Some(f) => {
                            let open = twin.iter().filter(|&&h| h == NONE).count();
                            let held = (0..twin.len() as u32)
                                .filter(|&h| twin[h as usize] == NONE)
                                .filter(|&h| {
                                    let (a, b) = half_edge(&t, h);
                                    f.holds(v[a as usize], v[b as usize]).0
                                })
                                .count();
                            narrow += usize::from(held * 2 < open);
                            let mut p = prior.clone();
                            let focused = run(Some(f), &mut p);
                            assert_eq!(focused.merge_into, whole.merge_into, "{noise} {round}");
                            later[usize::from(copies)] += focused.edges;
                            prior = p;
                            focused
                        }
                        None => run(None, &mut prior),
                    };
                    if r.edges == 0 {
                        break;
                    }
                    let merged: Vec<u32> = (0..v.len() as u32)
                        .filter(|&x| r.merge_into[x as usize] != x)
                        .flat_map(|x| [x, r.merge_into[x as usize]])
                        .collect();
                    let reach = if copies { spread } else { cap };
                    focus = Focus::around(&v, &merged, reach, usize::MAX);
                    t = merge(&t, &r);
                }
            }
        }
        assert!(
            later.iter().all(|&n| n > 0),
            "no focused round sewed anything: {later:?}"
        );
        assert!(narrow > 0, "every focus held most of the boundary");
    }

    /// A noisy soup, a wavy indexed sheet with a hole (its rim's vertices on two facets'
    /// boundary edges each), and a cloud of small triangles round both: some alone, some
    /// copies of another one (moved by up to `noise`), some pairs on one shared apex.
    fn mixed(noise: f64, seed: u64) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
        let (mut v, mut t) = noisy_soup(12, noise, seed);
        let mut next = keys::test_uniform(seed ^ 0x9e37_79b9_7f4a_7c15);
        let b = v.len() as u32;
        let n = 20u32;
        for i in 0..=n {
            for j in 0..=n {
                let (x, y) = (f64::from(i) * 0.7, f64::from(j) * 0.7 + 3.0);
                v.push([x as f32, y as f32, (x * 0.4).cos() as f32]);
            }
        }
        let id = |i: u32, j: u32| b + i * (n + 1) + j;
        for i in 0..n {
            for j in 0..n {
                if (8..12).contains(&i) && (8..12).contains(&j) {
                    continue;
                }
                t.push([id(i, j), id(i + 1, j), id(i + 1, j + 1)]);
                t.push([id(i, j), id(i + 1, j + 1), id(i, j + 1)]);
            }
        }
        for k in 0..800 {
            let c: [f64; 3] = std::array::from_fn(|_| next() * 16.0 - 1.0);
            let size = 0.2 + next() * 0.8;
            let corner = |next: &mut dyn FnMut() -> f64| c.map(|x| x + (next() * 2.0 - 1.0) * size);
            let tri = [corner(&mut next), corner(&mut next), corner(&mut next)];
            let b = v.len() as u32;
            v.extend(tri.map(|p| p.map(|x| x as f32)));
            t.push([b, b + 1, b + 2]);
            match k % 5 {
                // A copy, every corner moved by its own noise.
                0 => {
                    let b2 = v.len() as u32;
                    for p in tri {
                        v.push(p.map(|x| (x + (next() * 2.0 - 1.0) * noise) as f32));
                    }
                    t.push([b2, b2 + 1, b2 + 2]);
                }
                // A second facet on the first corner, its far corner near the first's second.
                1 => {
                    let b2 = v.len() as u32;
                    v.push(tri[1].map(|x| (x + (next() * 2.0 - 1.0) * noise) as f32));
                    v.push(c.map(|x| (x + size * 1.5) as f32));
                    t.push([b2, b, b2 + 1]);
                }
                _ => {}
            }
        }
        (v, t)
    }

    /// Every boundary edge of `t` (positive length) with the limits `limit` gives its ends.
    fn all_edges(
        v: &[[f32; 3]],
        t: &[[u32; 3]],
        limit: impl Fn(u32, u32) -> [f64; 2],
    ) -> Vec<Edge> {
        let twin = crate::topology::pair_edges(t).twin;
        (0..twin.len() as u32)
            .filter(|&h| twin[h as usize] == NONE)
            .map(|h| (half_edge(t, h), t[(h / 3) as usize]))
            .filter(|&((a, b), _)| dist(v[a as usize], v[b as usize]) > 0.0)
            .map(|((a, b), facet)| Edge {
                a,
                b,
                facet,
                pa: v[a as usize],
                pb: v[b as usize],
                limit: limit(a, b),
                inner: true,
            })
            .collect()
    }

    /// How many of `edges` the lonely ends' flags `ends` pass over, each checked against
    /// every edge: it matches none.
    fn passed_over_match_nothing(edges: &[Edge], ends: &[bool]) -> usize {
        let mut passed = 0;
        for e in edges {
            if ends[e.a as usize] && ends[e.b as usize] {
                continue;
            }
            passed += 1;
            for o in edges {
                assert!(
                    std::ptr::eq(e, o) || e.pairs(o).is_none(),
                    "{} → {} passed over, yet it matches {} → {}",
                    e.a,
                    e.b,
                    o.a,
                    o.b
                );
            }
        }
        passed
    }

    #[test]
    fn edges_at_a_lonely_end_are_passed_over_only_when_they_match_nothing() {
        // The lonely ends' filter (`Alone`) passes over edges: checked against every other
        // boundary edge, none of them matches one, in a round of stitching (with the limits
        // it took) and in a round of stitching copies after two of those.
        let mut passed = [0; 2];
        let mut sewn = 0;
        for k in 0..4 {
            let noise = [0.02, 0.08, 0.2][k % 3];
            let (v, t0) = mixed(noise, 0x510e_527f_ade6_82d1u64 + k as u64);
            for cap in [0.3, 0.6] {
                let mut t = t0.clone();
                let (mut prior, mut alone) = (Vec::new(), None);
                for _ in 0..2 {
                    let twin = crate::topology::pair_edges(&t).twin;
                    let mut r = stitch(&v, &t, &twin, cap, &mut prior, None, 0.0);
                    if let Some(a) = r.alone.take() {
                        let boundary: Vec<u32> = (0..twin.len() as u32)
                            .filter(|&h| twin[h as usize] == NONE)
                            .collect();
                        let ends = a.ends(&v, &t, &boundary, cap).expect("told");
                        let limit = |x: u32| (prior[x as usize] * STITCH_FRACTION).min(cap);
                        let edges = all_edges(&v, &t, |a, b| [limit(a), limit(b)]);
                        passed[0] += passed_over_match_nothing(&edges, &ends);
                        alone = Some(a);
                    }
                    sewn += r.edges;
                    if r.edges == 0 {
                        break;
                    }
                    t = merge(&t, &r);
                }
                let alone = alone.expect("a round over the whole boundary");
                let twin = crate::topology::pair_edges(&t).twin;
                let boundary: Vec<u32> = (0..twin.len() as u32)
                    .filter(|&h| twin[h as usize] == NONE)
                    .collect();
                let spread = cap / 2.0;
                let Some(ends) = alone.ends(&v, &t, &boundary, spread) else {
                    continue;
                };
                let edges = all_edges(&v, &t, |a, b| {
                    let l = (dist(v[a as usize], v[b as usize]) * COPY_FRACTION).min(spread);
                    [l, l]
                });
                passed[1] += passed_over_match_nothing(&edges, &ends);
            }
        }
        assert!(sewn > 0, "nothing was sewn");
        assert!(
            passed.iter().all(|&n| n > 100),
            "too few passed over: {passed:?}"
        );
    }

    #[test]
    fn a_vertex_near_one_newly_on_the_boundary_is_not_alone_any_more() {
        // Two separate triangles far apart: every corner alone. Then a third facet is open
        // too (as one is when a sew removes its neighbour), a corner of it near corner `3`:
        // the corners near it are not alone any more, those far from it still are, and its
        // own corners were never told. A reach larger than the flags were taken for is not
        // told at all.
        let v: Vec<[f32; 3]> = vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [10.0, 0.0, 0.0],
            [11.0, 0.0, 0.0],
            [10.0, 1.0, 0.0],
            [10.1, 0.1, 0.0],
            [9.0, 5.0, 0.0],
            [8.0, 5.0, 0.0],
        ];
        let mut v = v;
        let mut t = vec![[0, 1, 2], [3, 4, 5]];
        // And far away, a block of separate triangles (a boundary too long for a focus round
        // the new corners to cost more than it saves).
        for k in 0..216 {
            let b = v.len() as u32;
            let at = [k % 6, k / 6 % 6, k / 36].map(|c| 100.0 + 3.0 * c as f32);
            v.extend([at, [at[0] + 1.0, at[1], at[2]], [at[0], at[1] + 1.0, at[2]]]);
            t.push([b, b + 1, b + 2]);
        }
        let twin = crate::topology::pair_edges(&t).twin;
        let first = stitch(&v, &t, &twin, 0.2, &mut Vec::new(), None, 0.0);
        let alone = first.alone.expect("a round over the whole boundary");
        let boundary = |t: &[[u32; 3]]| -> Vec<u32> { (0..3 * t.len() as u32).collect() };
        let ends = alone.ends(&v, &t, &boundary(&t), 0.2).expect("told");
        assert!(ends[..6].iter().chain(&ends[9..]).all(|&e| !e));
        let mut grown = t.clone();
        grown.push([6, 7, 8]);
        let ends = alone
            .ends(&v, &grown, &boundary(&grown), 0.2)
            .expect("told");
        assert_eq!(ends[..4], [false, false, false, true]);
        assert_eq!(ends[6..9], [true; 3]);
        assert!(ends[9..].iter().all(|&e| !e));
        assert!(alone.ends(&v, &t, &boundary(&t), 0.3).is_none());
    }

    #[test]
    fn a_vertex_at_infinity_is_never_filed() {
        // `repair_soup` takes a `Soup` a caller may have built by hand: a corner at infinity
        // (or not a number) must not reach the grids, whose cells are for finite points.
        for bad in [f32::INFINITY, f32::NAN] {
            let v: Vec<[f32; 3]> = vec![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [bad, 0.0, 0.0],
                [1.0, 0.001, 0.0],
                [0.0, -1.0, 0.0],
            ];
            let t = vec![[0, 1, 2], [3, 4, 5], [4, 0, 5]];
            let twin = crate::topology::pair_edges(&t).twin;
            let s = stitch(&v, &t, &twin, 0.5, &mut Vec::new(), None, 0.0);
            let c = stitch_copies(&v, &t, &twin, 0.5, None, None);
            let moved = |m: &[u32]| (0..m.len()).filter(|&x| m[x] != x as u32).count();
            assert!(moved(&s.merge_into) + moved(&c.merge_into) <= 2, "{bad}");
        }
    }

    #[test]
    fn an_edge_with_one_end_alone_is_still_stitched() {
        // Two long thin facets on one apex `a` (the same vertex), their far ends `b` and `c`
        // a thousandth apart: no other boundary vertex is near `a`, yet `a → b` and `c → a`
        // match (by `b` and `c`). A far triangle, every corner alone, is left as it is.
        let v: Vec<[f32; 3]> = vec![
            [0.0, 0.0, 0.0],
            [10.0, 0.0, 0.0],
            [5.0, 5.0, 0.0],
            [10.0, 0.001, 0.0],
            [5.0, -5.0, 0.0],
            [50.0, 50.0, 50.0],
            [52.0, 50.0, 50.0],
            [50.0, 52.0, 50.0],
        ];
        let t = vec![[0, 1, 2], [3, 0, 4], [5, 6, 7]];
        let twin = crate::topology::pair_edges(&t).twin;
        let s = stitch(&v, &t, &twin, 0.5, &mut Vec::new(), None, 0.0);
        assert_eq!(s.edges, 1);
        let moved: Vec<(u32, u32)> = (0..v.len() as u32)
            .filter(|&x| s.merge_into[x as usize] != x)
            .map(|x| (x, s.merge_into[x as usize]))
            .collect();
        assert_eq!(moved, [(3, 1)]);
    }

    #[test]
    fn cell_min_holds_each_cells_smallest_value_and_count_and_their_neighbourhoods() {
        // 300 000 vertices, some values not finite (not filed), in cells of side 1 of a box
        // 60 wide, and in a box too wide for cells that small (cells of 1016ths of it then).
        let mut next = keys::test_uniform(0x6a09_e667_f3bc_c909u64);
        for (n, wide) in [(300_000, 60.0f64), (50_000, 5_000.0)] {
            let vertices: Vec<[f32; 3]> = (0..n)
                .map(|_| [0; 3].map(|_: u8| (next() * wide - wide / 2.0) as f32))
                .collect();
            let value: Vec<f64> = (0..n)
                .map(|_| {
                    let x = next();
                    if x < 0.05 { f64::INFINITY } else { x }
                })
                .collect();
            let m = CellMin::new(&value, &vertices, 1.0);
            // The grid the code must use: side 1, or 1016ths of the filed vertices' extent.
            let filed = (0..n).filter(|&v| value[v].is_finite());
            let extent = (0..3)
                .map(|k| {
                    let (lo, hi) = filed.clone().fold((f64::MAX, f64::MIN), |(a, b), v| {
                        let x = f64::from(vertices[v][k]);
                        (a.min(x), b.max(x))
                    });
                    hi - lo
                })
                .fold(0.0f64, f64::max);
            assert_eq!(extent / CELL_MIN_AXIS > 1.0, wide > 100.0);
            let inv = 1.0 / 1f64.max(extent / CELL_MIN_AXIS);
            let cell = |v: usize| vertices[v].map(|x| (f64::from(x) * inv).floor() as i64);
            let mut want: std::collections::HashMap<[i64; 3], f64> = Default::default();
            let mut count: std::collections::HashMap<[i64; 3], u32> = Default::default();
            for v in (0..n).filter(|&v| value[v].is_finite()) {
                let e = want.entry(cell(v)).or_insert(value[v]);
                *e = e.min(value[v]);
                *count.entry(cell(v)).or_default() += 1;
            }
            assert_eq!(m.keys.len(), want.len());
            let near = m.near();
            for (v, &entry) in m.entry_of.iter().enumerate() {
                match entry {
                    NONE => assert!(!value[v].is_finite()),
                    e => {
                        let c = cell(v);
                        assert_eq!(m.mins[e as usize], want[&c]);
                        let round = (0..27)
                            .map(|d| [d % 3, d / 3 % 3, d / 9].map(|o| o - 1))
                            .filter_map(|o| want.get(&[0, 1, 2].map(|a| c[a] + o[a])))
                            .fold(f64::INFINITY, |a, &b| a.min(b));
                        assert_eq!(near[e as usize].0, round, "{c:?}");
                        let count = (0..27)
                            .map(|d| [d % 3, d / 3 % 3, d / 9].map(|o| o - 1))
                            .filter_map(|o| count.get(&[0, 1, 2].map(|a| c[a] + o[a])))
                            .sum::<u32>();
                        assert_eq!(near[e as usize].1, count, "{c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_filed_edge_is_found_in_its_cells_run() {
        for n in [1, 7, 1_000, 20_000] {
            let edges = sparse_edges(n);
            let filed = Filed::new(n, |i| edges[i]);
            let g = &filed.grid;
            let cell = |e: &Edge| {
                let l = level(g, e);
                (l, g.cell(l, e.mid()))
            };
            assert!(filed.index.keys.is_sorted());
            let mut hint = 0;
            for (i, e) in filed.edges.iter().enumerate() {
                let (l, x) = cell(e);
                let run = filed.index.run(g.key(l, x).unwrap(), &mut hint);
                assert!(run.contains(&i), "n {n}: edge {i} not in {run:?}");
                assert!(
                    run.clone().all(|j| cell(&filed.edges[j]) == (l, x)),
                    "n {n}: {run:?}"
                );
            }
            // A probe finds exactly the edges filed under its cell, none when there are none:
            // the cells next to every edge's, in its level and the next.
            let mut count: std::collections::HashMap<(i32, [i64; 3]), usize> = Default::default();
            for e in &filed.edges {
                *count.entry(cell(e)).or_default() += 1;
            }
            for e in filed.edges.iter().step_by(7) {
                let (l, x) = cell(e);
                for (l, d) in (0..54).map(|d| (l + d / 27, d % 27)) {
                    let o = [d % 3, d / 3 % 3, d / 9].map(|o| o - 1);
                    let x = [0, 1, 2].map(|a| x[a] + i64::from(o[a]));
                    let want = count.get(&(l, x)).copied().unwrap_or(0);
                    let got = g
                        .key(l, x)
                        .map_or(0, |k| filed.index.run(k, &mut hint).len());
                    assert_eq!(got, want, "n {n}: {l} {x:?}");
                }
            }
        }
    }
}
