//! Vertex welding: exact, then within a tolerance.
//!
//! 1. Every corner gets a key `hash(cell) << 32 | corner`, where the cell is the corner's box in
//!    a grid of side `CELL_FACTOR × tolerance` (or its exact bit pattern when the tolerance is
//!    0). One parallel sort groups equal cells.
//! 2. Within a run of equal hashes, corners join the first representative within the
//!    tolerance (bit-identical corners count as exact merges), else become representatives.
//!    Representatives of one run are thus more than the tolerance apart. With local limits,
//!    a vertex the exact weld already closes takes no tolerance merge ([`closed`]) but still
//!    merges with what is one point up to rounding ([`rounding_box`]), and when a run's
//!    limits differ its corners are taken from the smallest limit up, each to its nearest
//!    representative or to none ([`noise_scale`]).
//! 3. Copies that straddle a cell face (which rounding-based welds miss): a representative
//!    closer than the tolerance to a face of its cell looks up the representatives of the
//!    neighbouring cell(s) across that face (a merge-join of sorted probes with the sorted
//!    representative keys) and records a merge for every one within the tolerance. Union-find
//!    with the smallest corner index as root joins them.
//! 4. Vertices are numbered by first use (a root's rank among the root corners, from a bitmap
//!    of them), and every corner's number is scattered back into corner order.
//!
//! Memory: the sorted keys are overwritten in place with each corner's representative, and the
//! corner positions are dropped as soon as the representatives hold theirs, so the peak is the
//! positions plus the cell hashes and the sorted keys.
//!
//! After this, any two output vertices are more than the tolerance apart, so welding the output
//! again merges nothing (the repair is idempotent).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::Bbox;
use crate::keys::{self, hi, lo, pack};

/// Grid cell side as a multiple of the tolerance: large enough that few points lie near a
/// face, small enough that a cell holds few distinct vertices.
const CELL_FACTOR: f64 = 16.0;

/// A run of one cell with more representatives than this files them in a finer grid.
const RUN_INDEX_REPS: usize = 48;

pub(crate) struct Welded {
    pub vertices: Vec<[f32; 3]>,
    pub triangles: Vec<[u32; 3]>,
    pub input_vertices: u64,
    pub exact_merged: u64,
    pub tolerance_merged: u64,
    /// Largest distance between two corners merged within the tolerance.
    pub largest_merge: f64,
    /// With local limits: every facet's limit, shared by its three corners (see
    /// [`local_limits`]), else empty.
    pub limits: Vec<f32>,
    /// With local limits: how many corners' limits were cut below the tolerance.
    pub limited: u64,
    /// With local limits: how many vertices the exact weld closes (see [`closed`]), which
    /// took no tolerance merge.
    pub closed: u64,
    /// With local limits: merges of corners one point up to rounding ([`rounding_box`]) that
    /// their limits (or a closed vertex) would have kept apart.
    pub rounded: u64,
    /// With local limits: the noise measured between a vertex's copies ([`noise_scale`]).
    pub noise: f64,
}

struct Grid {
    origin: [f64; 3],
    inv_cell: f64,
    tol: f32,
    /// Per axis, the most two merged corners may differ by along it, when that is less than
    /// `tol` for some axis (see [`weld_in`]); `None` when `tol` bounds every axis.
    axis: Option<[f64; 3]>,
    /// Cell keys in Morton (Z) order when the cells of the bounding box fit in 32 bits (see
    /// [`Morton`]); else (or with tolerance 0) keys are hashes.
    morton: Option<Box<Morton>>,
    /// With local limits: per axis, how far apart two corners may be and still be one point
    /// up to the rounding of the model's coordinates ([`rounding_box`]); a corner that takes
    /// no tolerance merge (limit 0: a vertex the exact weld closes, a corner of a facet of zero
    /// area) still merges within it. Zero (only equal corners) otherwise.
    round: [f64; 3],
}

/// Per axis, the rounding of the largest coordinate of `bbox` along it ([`crate::clean::rounding`]:
/// 4 units in the last place): two corners that differ by no more along every axis are one point written
/// twice. A boolean or a CAD kernel computes two vertices apart that are one point, and
/// writing them as `f32` leaves them a unit or two of the model's magnitude apart (not of
/// their own: a coordinate near 0 carries the rounding of the others it was computed from),
/// joined by an edge of that length: the facets on it are slivers, and the exact weld closes
/// both vertices (or a sliver's short edge cuts their limits), so no tolerance merge would
/// join them.
pub(crate) fn rounding_box(bbox: Option<Bbox>) -> [f64; 3] {
    bbox.map_or([0.0; 3], |b| {
        std::array::from_fn(|a| {
            crate::clean::rounding(f64::from(b.min[a].abs().max(b.max[a].abs())))
        })
    })
}

/// Cell keys along a Z-order curve: the bits of the three cell indices interleaved (each axis
/// with as many bits as its number of cells needs). Unlike a hash, this key is unique per cell
/// and sorts cells that are near in space near each other, so the corners of neighbouring
/// cells come out of the sort together: the gathers that follow (positions, limits by facet;
/// neighbour cells across a face) then touch memory that is near in the input too, instead of
/// one random cache line per corner.
struct Morton {
    /// Cells per axis: cell indices `0..cells[a]`.
    cells: [i64; 3],
    /// `spread[a][byte][v]`: the key bits of value `v` in byte `byte` of the index on axis `a`.
    spread: [[[u32; 256]; 4]; 3],
    /// Bytes of the index that can be non-zero on each axis (the others spread to 0).
    bytes: [usize; 3],
}

impl Morton {
    /// The interleaving for `cells` cells per axis, if their indices fit in 32 bits together.
    fn new(cells: [i64; 3]) -> Option<Box<Morton>> {
        if cells.iter().any(|&n| n < 1) {
            return None;
        }
        let bits = cells.map(|n| 64 - (n as u64 - 1).leading_zeros());
        if bits.iter().sum::<u32>() > 32 {
            return None;
        }
        // Output bit of bit `i` of axis `a`: low bits first, axes in turn while they have bits.
        let mut at = [[0u32; 32]; 3];
        let mut next = 0;
        for i in 0..32 {
            for a in 0..3 {
                if i < bits[a] {
                    at[a][i as usize] = next;
                    next += 1;
                }
            }
        }
        let mut m = Box::new(Morton {
            cells,
            spread: [[[0; 256]; 4]; 3],
            bytes: bits.map(|b| b.div_ceil(8) as usize),
        });
        for a in 0..3 {
            for byte in 0..4 {
                for v in 0..256usize {
                    let mut k = 0u32;
                    for j in 0..8 {
                        let i = byte * 8 + j;
                        if v >> j & 1 == 1 && (i as u32) < bits[a] {
                            k |= 1 << at[a][i];
                        }
                    }
                    m.spread[a][byte][v] = k;
                }
            }
        }
        Some(m)
    }

    /// The key of cell `c`, or `None` outside the box (no corner lies there).
    #[inline]
    fn key(&self, c: [i64; 3]) -> Option<u32> {
        let mut k = 0;
        for (((&ca, &n), spread), &bytes) in
            c.iter().zip(&self.cells).zip(&self.spread).zip(&self.bytes)
        {
            if ca < 0 || ca >= n {
                return None;
            }
            let x = ca as u32;
            for (byte, table) in spread.iter().enumerate().take(bytes) {
                k |= table[(x >> (8 * byte)) as usize & 255];
            }
        }
        Some(k)
    }
}

/// The tolerance of every corner (`per_facet`: corner `c` has its facet's, `per_facet[c / 3]`,
/// each at most `tol`), or `tol` for all.
#[derive(Clone, Copy)]
struct Limits<'a> {
    per_facet: Option<&'a [f32]>,
    tol: f32,
}

impl Grid {
    #[inline]
    fn cell(&self, p: [f32; 3]) -> [i64; 3] {
        // floor without a libm call (this runs for every corner).
        let c = |a: usize| {
            let x = (f64::from(p[a]) - self.origin[a]) * self.inv_cell;
            let t = x as i64;
            if (t as f64) > x { t - 1 } else { t }
        };
        [c(0), c(1), c(2)]
    }

    /// The key of cell `c`: its Morton key, else (outside the box, or without one) a hash.
    /// Distinct cells may share a key only in the second case; corners are compared by
    /// position within a run, so that costs time, never correctness.
    #[inline]
    fn cell_key(&self, c: [i64; 3]) -> u32 {
        match self.morton.as_ref().and_then(|m| m.key(c)) {
            Some(k) => k,
            None => keys::hash3(c[0] as u32, c[1] as u32, c[2] as u32),
        }
    }

    #[inline]
    fn hash(&self, p: [f32; 3]) -> u32 {
        if self.tol > 0.0 {
            self.cell_key(self.cell(p))
        } else {
            keys::hash3(p[0].to_bits(), p[1].to_bits(), p[2].to_bits())
        }
    }

    /// The cell of `p` in a grid of side `tol` (the same origin).
    #[inline]
    fn fine(&self, p: [f32; 3]) -> [i64; 3] {
        let inv = self.inv_cell * CELL_FACTOR;
        let c = |a: usize| ((f64::from(p[a]) - self.origin[a]) * inv).floor() as i64;
        [c(0), c(1), c(2)]
    }

    /// Are `p` and `q` within `tol` (at most the grid's tolerance), or one point up to
    /// rounding (see [`Grid::round`])? Returns the squared distance when they are.
    #[inline]
    fn matches(&self, p: [f32; 3], q: [f32; 3], tol: f32) -> Option<f64> {
        if p == q {
            return Some(0.0);
        }
        let d = [0, 1, 2].map(|a| f64::from(p[a]) - f64::from(q[a]));
        let d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
        if tol == 0.0 && (0..3).all(|a| d[a].abs() <= self.round[a]) {
            return Some(d2);
        }
        if self.tol > 0.0 && tol > 0.0 {
            if let Some(axis) = &self.axis
                && (0..3).any(|a| d[a].abs() > axis[a])
            {
                return None;
            }
            (d2 <= f64::from(tol) * f64::from(tol)).then_some(d2)
        } else {
            None
        }
    }
}

/// Result of clustering one chunk of sorted keys (the chunk itself is overwritten with
/// `local representative ordinal << 32 | corner` for every corner).
struct ChunkOut {
    /// Sorted keys of the representatives found in this chunk.
    reps: Vec<u64>,
    /// Their positions.
    rep_pos: Vec<[f32; 3]>,
    /// Their tolerances.
    rep_tol: Vec<f32>,
    exact: u64,
    tol: u64,
    /// Of `tol`, merges only the rounding allowed (beyond the corners' limits).
    rounded: u64,
    /// Largest squared distance of a tolerance merge.
    largest: f64,
    /// Vertices found closed.
    closed: u64,
}

/// The auto-weld limit of every corner: `cap`, cut to [`LOCAL_FRACTION`] of the shortest
/// edge of the corner's facet (so two ends of a real edge, which share a facet, are never
/// within each other's limit); edges of length 0 (a repeated corner) do not count, and the
/// corners of a facet of zero area (which the clean stage removes) get 0: they weld only to
/// bit-identical copies and set no limit for them.
///
/// One limit per facet (its three corners share it: a third of the memory of one per corner,
/// and the clustering's gather reads a third as many cache lines). Also returns how many
/// corners were cut below `cap`.
pub(crate) fn local_limits(positions: &[[f32; 3]], cap: f32) -> (Vec<f32>, u64) {
    let limits: Vec<f32> = positions
        .par_chunks_exact(3)
        .map(|p| facet_limit([p[0], p[1], p[2]], cap))
        .collect();
    let cut = limits.par_iter().filter(|&&t| t > 0.0 && t < cap).count() as u64 * 3;
    (limits, cut)
}

/// The auto-weld limit of the corners of the facet `p` (see [`local_limits`]): `cap` cut to
/// [`LOCAL_FRACTION`] of its shortest edge of length > 0; 0 for a facet of zero area.
fn facet_limit(p: [[f32; 3]; 3], cap: f32) -> f32 {
    // A facet of zero area is removed by the clean stage, so its edges are not the model's:
    // its corners weld only to bit-identical copies (limit 0), and they set no limit for
    // those copies (see `cluster_chunk`).
    if crate::clean::degenerate_at(p) {
        return 0.0;
    }
    // Coincident corners say nothing about the scale: the shortest edge of length > 0.
    // Squared lengths: the square root is monotonic, so the shortest length is the root of the
    // shortest square (one root instead of three, the same value).
    let shortest2 = [dist2(p[0], p[1]), dist2(p[1], p[2]), dist2(p[2], p[0])]
        .into_iter()
        .filter(|&x| x > 0.0)
        .fold(f64::INFINITY, f64::min);
    if shortest2.is_finite() {
        ((shortest2.sqrt() * LOCAL_FRACTION) as f32).min(cap)
    } else {
        cap
    }
}

/// Could an automatic weld of `mesh` (bound `cap`) merge one of the vertices `touched` with
/// another vertex? Each vertex's limit is the smallest [`facet_limit`] of the facets round it
/// (an upper bound of what [`weld_in`] uses); two vertices could merge only within the smaller
/// of their limits. Never says `false` when such a weld would merge one of them.
///
/// Cost: linear passes over the facets and the vertices plus a sort of at most 8 probes per
/// touched vertex and of one key per vertex near one, much less than welding again (which
/// sorts every corner): in a grid of side `2 × cap`, the ball of a vertex's own limit (at
/// most `cap`) meets at most two cells per axis, its own and the neighbour on the nearer side
/// when the ball reaches past that face, so every touched vertex emits `hash(cell) << 32 |
/// ordinal` for those (1 to 8) cells, every vertex whose cell hash a small bitmap of the
/// probes' hashes holds emits `hash(cell) << 32 | vertex`, and the two sorted lists are
/// merged.
pub(crate) fn touched_may_merge(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    touched: &[u32],
    cap: f32,
) -> bool {
    if touched.is_empty() || cap <= 0.0 {
        return false;
    }
    // Corners one point up to rounding merge whatever their limits: no limit is below the
    // rounding box's diagonal (more pairs to check, never one missed).
    let r = rounding_box(keys::par_bbox(vertices));
    let floor = ((r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt() as f32).min(cap);
    let mut lim_u = vertex_limits(vertices, triangles, touched, cap);
    lim_u.iter_mut().for_each(|l| *l = l.max(floor));
    let pairs = pairs_within(vertices, touched, &lim_u, cap);
    if pairs.is_empty() {
        return false;
    }
    let others: Vec<u32> = pairs.iter().map(|&(_, v)| v).collect();
    let mut lim_v = vertex_limits(vertices, triangles, &others, cap);
    lim_v.iter_mut().for_each(|l| *l = l.max(floor));
    pairs.iter().zip(&lim_v).any(|(&(k, v), &lv)| {
        let l = f64::from(lim_u[k as usize].min(lv));
        dist2(vertices[touched[k as usize] as usize], vertices[v as usize]) <= l * l
    })
}

/// The pairs `(k, v)` of a touched vertex's ordinal `k` in `touched` and another vertex `v`
/// within that touched vertex's own limit `lim_u[k]` (each at most `cap`), in no order: the
/// probes of the touched vertices' cells and the keys of every vertex's own cell, both sorted,
/// merged (see [`touched_may_merge`]).
fn pairs_within(
    vertices: &[[f32; 3]],
    touched: &[u32],
    lim_u: &[f32],
    cap: f32,
) -> Vec<(u32, u32)> {
    let side = 2.0 * f64::from(cap);
    let inv = 1.0 / side;
    let cell = |p: [f32; 3]| p.map(|x| keys::floor_i64(f64::from(x) * inv));
    let hash = |c: [i64; 3]| keys::hash3(c[0] as u32, c[1] as u32, c[2] as u32);
    let mut probes: Vec<u64> = touched
        .par_iter()
        .enumerate()
        .flat_map_iter(|(k, &u)| {
            let p = vertices[u as usize];
            let c = cell(p);
            // Along each axis: the own cell, and the neighbour on the nearer side when the
            // ball of the vertex's own limit reaches past that face (0 when it does not).
            // The ball reaches the face within `reach` cells (a cell's side is 1 here), with
            // room for the rounding of the cell indices.
            let reach = f64::from(lim_u[k]) * inv * (1.0 + 1e-6) + 1e-6;
            let side_of = |a: usize| {
                let f = f64::from(p[a]) * inv - c[a] as f64;
                if f < 0.5 {
                    if f <= reach { -1 } else { 0 }
                } else if 1.0 - f <= reach {
                    1
                } else {
                    0
                }
            };
            let s = [side_of(0), side_of(1), side_of(2)];
            // The combinations of own and neighbour cells, without repeats: bit `a` of `m`
            // takes the neighbour along axis `a`, only where there is one.
            let axes =
                (s[0] != 0) as usize | ((s[1] != 0) as usize) << 1 | ((s[2] != 0) as usize) << 2;
            (0..8usize)
                .filter(move |&m| m & !axes == 0)
                .map(move |m: usize| {
                    let n = [0, 1, 2].map(|a| c[a] + if m >> a & 1 == 1 { s[a] } else { 0 });
                    pack(hash(n), k as u32)
                })
        })
        .collect();
    keys::sort(&mut probes);
    // A bitmap of the probes' cell hashes, at most 32 KiB so that it stays in cache: with few
    // touched vertices (a few removed facets, the common case) most vertices miss it and are
    // neither collected nor sorted; with many, it passes nearly all of them.
    let bits = (usize::BITS - probes.len().leading_zeros() + 3).clamp(12, 18);
    let mask = (1u32 << bits) - 1;
    let mut present = vec![0u64; 1 << (bits - 6)];
    for &x in &probes {
        let b = hi(x) & mask;
        present[(b >> 6) as usize] |= 1 << (b & 63);
    }
    let present = &present;
    // The cell hashes of the vertices that pass, sorted too, then merged with the probes:
    // two sorted passes instead of a look-up per vertex at a random place of a table as large
    // as the probes (a cache miss for most of the vertices at 4M facets, several times the
    // cost of the sort).
    let mut cells: Vec<u64> = keys::par_blocks(vertices.len(), |r, out| {
        out.extend(r.filter_map(|v| {
            let h = hash(cell(vertices[v]));
            let b = h & mask;
            (present[(b >> 6) as usize] >> (b & 63) & 1 == 1).then(|| pack(h, v as u32))
        }));
    });
    keys::sort(&mut cells);
    let (probes, cells) = (&probes, &cells);
    // Pairs (touched ordinal, other vertex) within the touched vertex's own limit: the
    // probes in chunks that never cut a run, each merged with the vertices of its hashes.
    keys::run_chunks(probes, keys::parts_for(probes.len()))
        .into_par_iter()
        .flat_map_iter(|r| {
            let chunk = &probes[r];
            let first = cells.partition_point(|&x| hi(x) < hi(chunk[0]));
            let mut out = Vec::new();
            let (mut i, mut j) = (0, first);
            while i < chunk.len() && j < cells.len() {
                let (hp, hc) = (hi(chunk[i]), hi(cells[j]));
                if hp < hc {
                    i += 1;
                } else if hc < hp {
                    j += 1;
                } else {
                    let run = |keys: &[u64], at: usize| {
                        at + keys[at..].iter().take_while(|&&x| hi(x) == hp).count()
                    };
                    let (ie, je) = (run(chunk, i), run(cells, j));
                    for &x in &chunk[i..ie] {
                        let k = lo(x);
                        let u = touched[k as usize];
                        let l = f64::from(lim_u[k as usize]);
                        for &y in &cells[j..je] {
                            let v = lo(y);
                            if u != v && dist2(vertices[u as usize], vertices[v as usize]) <= l * l
                            {
                                out.push((k, v));
                            }
                        }
                    }
                    (i, j) = (ie, je);
                }
            }
            out
        })
        .collect()
}

/// The squared distance of two points, in `f64`.
fn dist2(a: [f32; 3], b: [f32; 3]) -> f64 {
    (0..3)
        .map(|k| {
            let x = f64::from(a[k]) - f64::from(b[k]);
            x * x
        })
        .sum()
}

/// Per entry of `ids` (a vertex may be listed more than once): the smallest positive [`facet_limit`] of the
/// facets round it, or `cap` when there is none.
fn vertex_limits(vertices: &[[f32; 3]], triangles: &[[u32; 3]], ids: &[u32], cap: f32) -> Vec<f32> {
    const NO: u32 = u32::MAX;
    let mut slot = vec![NO; vertices.len()];
    // The same set as a bitset (a 64th of the size, so it stays in cache): most facets use
    // none of `ids`, and this finds them without touching `slot`.
    let mut listed = vec![0u64; vertices.len().div_ceil(64)];
    for (k, &v) in ids.iter().enumerate() {
        slot[v as usize] = k as u32;
        listed[v as usize / 64] |= 1 << (v % 64);
    }
    let (slot, listed) = (&slot, &listed);
    // The smallest limit per slot, kept as bits: a positive `f32`'s bits order as the number
    // does, so `fetch_min` on them is the minimum (no list of (slot, limit) pairs to gather).
    let least: Vec<AtomicU32> = (0..ids.len())
        .into_par_iter()
        .map(|_| AtomicU32::new(cap.to_bits()))
        .collect();
    triangles
        .par_iter()
        .with_min_len(1 << 12)
        .filter(|t| {
            t.iter()
                .any(|&v| listed[v as usize / 64] >> (v % 64) & 1 == 1)
        })
        .for_each(|t| {
            let l = facet_limit(t.map(|i| vertices[i as usize]), cap);
            if l > 0.0 {
                for &v in t {
                    let k = slot[v as usize];
                    if k != NO {
                        least[k as usize].fetch_min(l.to_bits(), Ordering::Relaxed);
                    }
                }
            }
        });
    let mut out: Vec<f32> = least
        .into_iter()
        .map(|b| f32::from_bits(b.into_inner()))
        .collect();
    // A vertex listed twice got its limit in its last slot only: share it.
    for (k, &v) in ids.iter().enumerate() {
        let s = slot[v as usize] as usize;
        out[k] = out[s];
    }
    out
}

/// A corner's weld limit is at most this fraction of its facet's shortest edge.
pub(crate) const LOCAL_FRACTION: f64 = 0.25;

/// A corner's weld limit (when positive) is at least this many times the measured noise
/// ([`noise_scale`]), but never above the bound. An edge shorter than the spread of its
/// ends' copies cannot be told from that spread: a limit cut to a quarter of it kept the
/// copies of each end apart, and the surface round it fell into pieces (a sphere bored by
/// two cylinders in OpenSCAD, whose CGAL output has edges of 1.5e-7 of the diagonal where
/// intersection curves nearly meet, written as a soup with noise of 1e-6 of the diagonal:
/// 26 pieces removed as tiny shells, not watertight). Merged instead, the edge's slivers go
/// in the clean stage. The noise measure is a median nearest-copy distance, which is below
/// most of the distances between copies (up to `2√3` times the noise amplitude per
/// coordinate apart): 4 covers them, 3 did not (8 of its 16 noisy files still torn).
pub(crate) const NOISE_FLOOR: f64 = 4.0;

/// Weld `positions` within `tol`.
pub(crate) fn weld(positions: Vec<[f32; 3]>, tol: f32) -> Welded {
    let bbox = keys::par_bbox(&positions);
    weld_in(positions, tol, [tol; 3], bbox, false)
}

/// Weld `positions`, whose bounding box is `bbox`, within `tol`; with `local`, every corner
/// gets its own limit ([`local_limits`], returned in [`Welded::limits`]) and two corners
/// merge only within the smaller of their two limits (each at most `tol`). Two corners also
/// merge only when they differ by at most `axis[a]` along every axis `a` (the rounding floor
/// of the automatic bound is per axis: see `pipeline::weld_bound`).
pub(crate) fn weld_in(
    positions: Vec<[f32; 3]>,
    tol: f32,
    axis: [f32; 3],
    bbox: Option<Bbox>,
    local: bool,
) -> Welded {
    let n = positions.len();
    let input_vertices = n as u64;
    let origin = bbox.map_or([0.0; 3], |b| b.min.map(f64::from));
    let extent = bbox.map_or(0.0, |b| b.diagonal());
    // Keep cell indices far from i64 saturation even for absurdly small tolerances.
    let cell = (f64::from(tol) * CELL_FACTOR).max(extent * f64::powi(2.0, -40));
    let mut grid = Grid {
        origin,
        inv_cell: if tol > 0.0 { 1.0 / cell } else { 0.0 },
        tol,
        axis: axis.iter().any(|&a| a < tol).then(|| axis.map(f64::from)),
        morton: None,
        round: if local && tol > 0.0 {
            rounding_box(bbox)
        } else {
            [0.0; 3]
        },
    };
    if tol > 0.0
        && let Some(b) = bbox
    {
        // Every corner's cell index is at most the box corner's (the floor is monotonic).
        grid.morton = Morton::new(grid.cell(b.max).map(|c| c.saturating_add(1)));
    }

    // 1. Keys and sort: every corner's cell hash, then the keys `hash << 32 | corner` in
    // sorted order (never written unsorted: see `keys::sort_hashes`).
    let hashes: Vec<u32> = positions.par_iter().map(|&p| grid.hash(p)).collect();
    let mut sorted = keys::sort_hashes(&hashes);
    drop(hashes);
    // The corners' own limits, computed only now: the hashes are gone, so the two are never
    // held at once.
    let (per_facet, limited) = if local {
        local_limits(&positions, tol)
    } else {
        (Vec::new(), 0)
    };
    let limits = Limits {
        per_facet: local.then_some(&per_facet[..]),
        tol,
    };

    // How far apart copies of one vertex lie ([`noise_scale`]), from the whole sorted order,
    // so that it does not depend on how the keys are cut into chunks (the number of threads).
    let noise = if local {
        noise_scale(&sorted, &positions)
    } else {
        0.0
    };

    // 2. Cluster within runs; each chunk of `sorted` is overwritten with its corners'
    // chunk-local representative ordinals (no second corner-sized buffer).
    let ranges = keys::run_chunks(&sorted, keys::parts_for(n));
    let mut chunks: Vec<&mut [u64]> = Vec::with_capacity(ranges.len());
    let mut rest: &mut [u64] = &mut sorted;
    let mut at = 0;
    for r in &ranges {
        let (c, tail) = std::mem::take(&mut rest).split_at_mut(r.end - at);
        at = r.end;
        chunks.push(c);
        rest = tail;
    }
    let outs: Vec<ChunkOut> = chunks
        .par_iter_mut()
        .map(|c| cluster_chunk(c, &positions, &grid, limits, noise))
        .collect();
    drop(chunks);
    // Every position still needed is a representative's, kept in `rep_pos`.
    drop(positions);
    let mut rep_keys: Vec<u64> = Vec::with_capacity(outs.iter().map(|o| o.reps.len()).sum());
    let mut rep_pos: Vec<[f32; 3]> = Vec::with_capacity(rep_keys.capacity());
    let mut rep_tol: Vec<f32> = Vec::with_capacity(rep_keys.capacity());
    let mut offsets = Vec::with_capacity(outs.len());
    let (mut exact_merged, mut tolerance_merged, mut largest) = (0, 0, 0.0f64);
    let closed = outs.iter().map(|o| o.closed).sum();
    let mut rounded: u64 = outs.iter().map(|o| o.rounded).sum();
    for o in outs {
        offsets.push(rep_keys.len() as u32);
        rep_keys.extend_from_slice(&o.reps);
        rep_pos.extend_from_slice(&o.rep_pos);
        rep_tol.extend_from_slice(&o.rep_tol);
        exact_merged += o.exact;
        tolerance_merged += o.tol;
        largest = largest.max(o.largest);
    }

    // 3. Merges across cell faces, then union-find over representative ordinals.
    let mut parent: Vec<u32> = (0..rep_keys.len() as u32).collect();
    if tol > 0.0 {
        let pairs = cross_cell_pairs(&rep_keys, &rep_pos, &rep_tol, &grid);
        for (a, b, d) in pairs {
            largest = largest.max(d);
            let l = f64::from(rep_tol[a as usize].min(rep_tol[b as usize]));
            if d > l * l && find(&mut parent, a) != find(&mut parent, b) {
                rounded += 1;
            }
            union(&mut parent, &rep_keys, a, b);
        }
        for i in 0..parent.len() {
            let r = find(&mut parent, i as u32);
            parent[i] = r;
        }
        // Corners merged through a cross-cell union were counted as representatives.
        for (i, &p) in parent.iter().enumerate() {
            if p as usize != i {
                if rep_pos[i] == rep_pos[p as usize] {
                    exact_merged += 1;
                } else {
                    tolerance_merged += 1;
                }
            }
        }
    }

    // 4. Number vertices by first use. A cluster's root is its smallest corner, so first-use
    // order is the roots' corner order: a vertex's number is how many roots have a smaller
    // corner, its rank in a bitmap of the root corners (one bit per corner, a running count
    // per 64-bit word). No list of roots is collected or sorted.
    let roots = || {
        parent
            .par_iter()
            .enumerate()
            .filter_map(|(i, &p)| (p as usize == i).then_some(i))
    };
    let bits: Vec<AtomicU64> = (0..n.div_ceil(64))
        .into_par_iter()
        .map(|_| AtomicU64::new(0))
        .collect();
    roots().for_each(|i| {
        let c = lo(rep_keys[i]);
        bits[c as usize / 64].fetch_or(1 << (c % 64), Ordering::Relaxed);
    });
    // Same size and alignment: collected in place.
    let bits: Vec<u64> = bits.into_iter().map(AtomicU64::into_inner).collect();
    let mut before: Vec<u32> = bits.par_iter().map(|w| w.count_ones()).collect();
    let mut vertex_count = 0u32;
    for b in &mut before {
        (*b, vertex_count) = (vertex_count, vertex_count + *b);
    }
    let (bits, before) = (&bits, &before);
    let rank = |c: u32| {
        let w = c as usize / 64;
        before[w] + (bits[w] & ((1u64 << (c % 64)) - 1)).count_ones()
    };
    // Every root's position at its number, stored as bits (each slot is written once).
    let slots: Vec<[AtomicU32; 3]> = (0..vertex_count)
        .into_par_iter()
        .map(|_| Default::default())
        .collect();
    roots().for_each(|i| {
        let slot = &slots[rank(lo(rep_keys[i])) as usize];
        for (s, x) in slot.iter().zip(rep_pos[i]) {
            s.store(x.to_bits(), Ordering::Relaxed);
        }
    });
    let vertices: Vec<[f32; 3]> = slots
        .into_iter()
        .map(|s| s.map(|x| f32::from_bits(x.into_inner())))
        .collect();
    drop(rep_pos);
    drop(rep_tol);
    let number: Vec<u32> = parent
        .par_iter()
        .map(|&p| rank(lo(rep_keys[p as usize])))
        .collect();
    drop(parent);
    drop(rep_keys);

    // 5. Every corner's vertex number, scattered from the chunks into corner order.
    // Written per facet, so that the facets are this very buffer afterwards (no copy).
    let ids: Vec<[AtomicU32; 3]> = (0..n / 3)
        .into_par_iter()
        .map(|_| Default::default())
        .collect();
    ranges
        .par_iter()
        .zip(offsets.par_iter())
        .for_each(|(r, &off)| {
            sorted[r.clone()].par_chunks(1 << 14).for_each(|block| {
                for &e in block {
                    let c = lo(e) as usize;
                    // (Corners past the last whole facet belong to no facet.)
                    if let Some(f) = ids.get(c / 3) {
                        f[c % 3].store(number[(off + hi(e)) as usize], Ordering::Relaxed);
                    }
                }
            });
        });
    drop(sorted);
    drop(number);
    // Same size and alignment: the standard library collects this in place.
    let triangles: Vec<[u32; 3]> = ids
        .into_iter()
        .map(|t| t.map(AtomicU32::into_inner))
        .collect();
    Welded {
        vertices,
        triangles,
        input_vertices,
        exact_merged,
        tolerance_merged,
        largest_merge: largest.sqrt(),
        limits: per_facet,
        limited,
        closed,
        rounded,
        noise,
    }
}

fn cluster_chunk(
    sorted: &mut [u64],
    positions: &[[f32; 3]],
    grid: &Grid,
    limits: Limits<'_>,
    noise: f64,
) -> ChunkOut {
    // The corners' positions and limits are gathered a block at a time ahead of the loop
    // that uses them: independent loads overlap, unlike loads inside the clustering loop, and
    // the block is reused (a gather of the whole chunk would be fresh memory as large as the
    // positions, faulted in on every run).
    let mut win = Window::default();
    let mut reps: Vec<u64> = Vec::new();
    let mut rep_pos: Vec<[f32; 3]> = Vec::new();
    let mut rep_tol: Vec<f32> = Vec::new();
    let (mut exact, mut tol, mut largest, mut closed_vertices) = (0u64, 0u64, 0.0f64, 0u64);
    let mut rounded = 0u64;
    // Per corner of the run: its limit, lowered to the smallest limit among its bit-identical
    // copies (so a vertex is only as tolerant as the smallest facet round it).
    let mut run_limit: Vec<f32> = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    // No two corners farther apart than this match (the tolerance, or the rounding box).
    let reach_any = f64::from(grid.tol).powi(2) + grid.round.iter().map(|r| r * r).sum::<f64>();
    // No positive limit below this: a limit below the noise cannot tell a real short edge
    // from the spread of a vertex's copies, it would only tear the copies apart (see
    // [`NOISE_FLOOR`]).
    let floor = (NOISE_FLOOR * noise).min(f64::from(limits.tol)) as f32;
    let mut i = 0;
    while i < sorted.len() {
        let h = hi(sorted[i]);
        let run_start = i;
        let run_end = i + sorted[i..].partition_point(|&k| hi(k) == h);
        win.cover(sorted, run_start, run_end, positions, limits.per_facet);
        let pos = |j: usize| win.pos[j - win.start];
        run_limit.clear();
        if limits.per_facet.is_none() {
            run_limit.resize(run_end - run_start, limits.tol);
        } else {
            run_limit.extend_from_slice(&win.lim[run_start - win.start..run_end - win.start]);
            if floor > 0.0 {
                for t in run_limit.iter_mut().filter(|t| **t > 0.0) {
                    *t = t.max(floor);
                }
            }
        }
        // A vertex the exact weld closes (its bit-identical copies' facets pair every edge at
        // it) shows no noise to weld: it takes no tolerance merge (limit 0, like a corner of
        // a zero-area facet), so two sides of a wall, or two parts, closer than the bound but
        // each closed, stay apart. Only vertices on an open edge are welded within limits.
        let share = run_limit.iter().any(|&t| t < limits.tol);
        if limits.per_facet.is_some() && run_end - run_start > 1 {
            let bits = |j: usize| pos(run_start + j).map(f32::to_bits);
            order.clear();
            order.extend(0..run_end - run_start);
            order.sort_unstable_by_key(|&j| bits(j));
            let mut g = 0;
            while g < order.len() {
                let mut e = g + 1;
                while e < order.len() && bits(order[e]) == bits(order[g]) {
                    e += 1;
                }
                let around = order[g..e]
                    .iter()
                    .map(|&j| win.ring[run_start + j - win.start]);
                if e - g > 1 && closed(around, &mut pairs) {
                    closed_vertices += 1;
                    for &j in &order[g..e] {
                        run_limit[j] = 0.0;
                    }
                } else if share && e - g > 1 {
                    // Corners of zero-area facets (limit 0) do not lower the limit, but they
                    // take it: they are the same point as the others, and one of them may be
                    // the first of the copies (the representative the rest join), which must
                    // not leave the vertex welding only to bit-identical copies.
                    let m = order[g..e]
                        .iter()
                        .map(|&j| run_limit[j])
                        .filter(|&t| t > 0.0)
                        .fold(f32::INFINITY, f32::min);
                    if m.is_finite() {
                        for &j in &order[g..e] {
                            run_limit[j] = m;
                        }
                    }
                }
                g = e;
            }
        }
        let run_start_rep = reps.len();
        // Many distinct vertices in one cell (fine detail, or a crafted pile of
        // near-duplicates): past `RUN_INDEX_REPS` representatives, they are also filed by
        // their cell in a grid of side `tol`, so a corner compares with the representatives
        // of the 27 cells round it instead of with every one of the run. It finds the same
        // representative (the first within the limit), so the output does not change.
        let mut index: Option<HashMap<[i64; 3], Vec<u32>>> = None;
        // Corners of small facets first, when the run's limits differ: a vertex's copies then
        // gather round its strictest copy before a laxer copy (one of a larger facet round
        // the same vertex) can take in a copy of the vertex at the other end of a short edge.
        // Taken in corner order, the first copy of either end, if a lax one, took both ends'
        // lax copies (noise carries copies apart, so the bit-identical sharing above does not
        // reach them), and a short edge hundreds of times the noise was collapsed.
        // The representative's position and corner are still its smallest corner's, set
        // after the run (the output is the same whenever the order changes no cluster).
        // (Only a run with a limit below the tolerance can have two different limits.)
        let reorder = share && {
            let positive = run_limit.iter().filter(|&&t| t > 0.0);
            positive.clone().fold(f32::INFINITY, |a, &t| a.min(t))
                < positive.fold(0.0f32, |a, &t| a.max(t))
        };
        if reorder {
            let key = |j: usize| match run_limit[j] {
                t if t > 0.0 => t,
                _ => f32::INFINITY,
            };
            order.clear();
            order.extend(0..run_end - run_start);
            order.sort_unstable_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
        }
        // (`order` is filled only when it differs from `0..`: indexed, not iterated.)
        #[allow(clippy::needless_range_loop)]
        for n in 0..run_end - run_start {
            let i = run_start + if reorder { order[n] } else { n };
            let corner = lo(sorted[i]);
            let p = pos(i);
            let t = run_limit[i - run_start];
            // Where the run's limits differ (short edges near), a corner goes to its
            // nearest representative or to none: the first one within the pair's limit may
            // be the copy of the vertex at the other end of a short edge that is not an edge
            // of the corner's own facet (a lax copy there is within its limit of both ends).
            let mut found: Option<(usize, f64)> = None;
            let mut best: Option<(usize, f64)> = None;
            let mut nearest = |k: usize| {
                let d = dist2(p, rep_pos[k]);
                // A representative that may not take the corner still counts when its own
                // shortest edge is evidence of another vertex near: the corner is within half
                // that edge (twice the limit, a quarter of the edge) of it, and the limit is
                // above the noise (a sliver whose short edge is only noise tells nothing).
                let l = f64::from(rep_tol[k]);
                let counts = (l > noise && d <= 4.0 * l * l)
                    || (d <= reach_any && grid.matches(p, rep_pos[k], t.min(rep_tol[k])).is_some());
                if counts && best.is_none_or(|(b, e)| d < e || (d == e && k < b)) {
                    best = Some((k, d));
                }
            };
            if let Some(ix) = &index {
                let c = grid.fine(p);
                for dx in -1..=1 {
                    for dy in -1..=1 {
                        for dz in -1..=1 {
                            let Some(ks) = ix.get(&[c[0] + dx, c[1] + dy, c[2] + dz]) else {
                                continue;
                            };
                            for &k in ks {
                                let k = k as usize;
                                if reorder {
                                    nearest(k);
                                    continue;
                                }
                                if found.is_some_and(|(f, _)| f <= k) {
                                    break;
                                }
                                if let Some(d) = grid.matches(p, rep_pos[k], t.min(rep_tol[k])) {
                                    found = Some((k, d));
                                }
                            }
                        }
                    }
                }
            } else if reorder {
                (run_start_rep..rep_pos.len()).for_each(&mut nearest);
            } else {
                for (k, (&q, &tq)) in rep_pos[run_start_rep..]
                    .iter()
                    .zip(&rep_tol[run_start_rep..])
                    .enumerate()
                {
                    if let Some(d) = grid.matches(p, q, t.min(tq)) {
                        found = Some((run_start_rep + k, d));
                        break;
                    }
                }
            }
            if let Some((k, _)) = best {
                found = grid
                    .matches(p, rep_pos[k], t.min(rep_tol[k]))
                    .map(|d| (k, d));
            }
            if let Some((k, d)) = found {
                if p == rep_pos[k] {
                    exact += 1;
                } else {
                    tol += 1;
                    largest = largest.max(d);
                    let l = f64::from(t.min(rep_tol[k]));
                    if d > l * l {
                        rounded += 1;
                    }
                }
            }
            let found = found.map(|(k, _)| k);
            let local = match found {
                Some(k) => {
                    // A vertex is only as tolerant as the smallest facet round it (a corner
                    // of a zero-area facet, limit 0, joins only bit-identical copies and
                    // does not count).
                    if t > 0.0 {
                        rep_tol[k] = rep_tol[k].min(t);
                    }
                    k
                }
                None => {
                    reps.push(sorted[i]);
                    rep_pos.push(p);
                    rep_tol.push(t);
                    let k = reps.len() - 1;
                    if let Some(ix) = index.as_mut() {
                        ix.entry(grid.fine(p)).or_default().push(k as u32);
                    } else if grid.tol > 0.0 && k + 1 - run_start_rep > RUN_INDEX_REPS {
                        let mut ix: HashMap<[i64; 3], Vec<u32>> = HashMap::new();
                        for (r, &q) in rep_pos.iter().enumerate().skip(run_start_rep) {
                            ix.entry(grid.fine(q)).or_default().push(r as u32);
                        }
                        index = Some(ix);
                    }
                    k
                }
            };
            sorted[i] = pack(local as u32, corner);
        }
        if reorder {
            for (i, &e) in sorted.iter().enumerate().take(run_end).skip(run_start) {
                let (k, corner) = (hi(e) as usize, lo(e));
                if corner < lo(reps[k]) {
                    reps[k] = pack(hi(reps[k]), corner);
                    rep_pos[k] = pos(i);
                }
            }
        }
        i = run_end;
    }
    ChunkOut {
        reps,
        rep_pos,
        rep_tol,
        exact,
        tol,
        rounded,
        largest,
        closed: closed_vertices,
    }
}

/// The median, over up to 512 cells spread along `sorted` (keys `hash << 32 | corner`, sorted),
/// of the distance from a cell's first corner to the nearest other corner
/// of that cell: about how far a noisy export moved copies of one vertex apart (0 where they
/// are bit-identical). Cells of more than 32 corners are skipped (fine detail, not copies).
fn noise_scale(sorted: &[u64], positions: &[[f32; 3]]) -> f64 {
    const SAMPLES: usize = 512;
    let step = (sorted.len() / SAMPLES).max(1);
    let mut near = Vec::with_capacity(SAMPLES);
    let mut i = 0;
    while i < sorted.len() {
        // To the start of the next run.
        while i > 0 && i < sorted.len() && hi(sorted[i]) == hi(sorted[i - 1]) {
            i += 1;
        }
        let Some(&first) = sorted.get(i) else { break };
        let end = i + sorted[i..].partition_point(|&k| hi(k) == hi(first));
        if (2..=32).contains(&(end - i)) {
            let p = positions[lo(first) as usize];
            let d = sorted[i + 1..end]
                .iter()
                .map(|&k| dist2(p, positions[lo(k) as usize]))
                .fold(f64::INFINITY, f64::min);
            near.push(d.sqrt());
        }
        i = (i + step).max(end);
    }
    if near.is_empty() {
        return 0.0;
    }
    let mid = near.len() / 2;
    *near.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Corners gathered in sorted order for [`cluster_chunk`]: `pos[k]` and `lim[k]` are the
/// position and limit of the corner at `start + k` of the chunk.
#[derive(Default)]
struct Window {
    start: usize,
    pos: Vec<[f32; 3]>,
    lim: Vec<f32>,
    /// With limits: per corner, the [`ring`] hashes of its facet's other two corners.
    ring: Vec<[u64; 2]>,
}

impl Window {
    /// Corners gathered at a time (more for a longer run): small enough to stay in L2.
    const BLOCK: usize = 4096;

    /// Make the window hold corners `from..to` of `sorted` (whose index halves are still
    /// corner numbers from `from` on), gathering from `from` when it does not.
    fn cover(
        &mut self,
        sorted: &[u64],
        from: usize,
        to: usize,
        positions: &[[f32; 3]],
        per_facet: Option<&[f32]>,
    ) {
        if from >= self.start && to <= self.start + self.pos.len() {
            return;
        }
        let end = to.max(from + Self::BLOCK).min(sorted.len());
        let keys = &sorted[from..end];
        self.start = from;
        self.pos.clear();
        self.pos
            .extend(keys.iter().map(|&k| positions[lo(k) as usize]));
        self.lim.clear();
        self.ring.clear();
        if let Some(l) = per_facet {
            self.lim.extend(keys.iter().map(|&k| l[lo(k) as usize / 3]));
            // The facet's other corners lie beside the corner in memory (the same cache line
            // or the next): no gather of its own.
            self.ring.extend(keys.iter().map(|&k| {
                let c = lo(k) as usize;
                let f = c - c % 3;
                match positions.get(f..f + 3) {
                    Some(t) => [ring(t[(c + 1) % 3]), ring(t[(c + 2) % 3])],
                    None => [1, 2],
                }
            }));
        }
    }
}

/// Is the vertex whose corners' facets' other corners (as [`ring`] hashes) are `around`
/// closed: every edge at it has a facet on each side? Facets there more than once (copies,
/// either way round: the clean stage removes them) count once. The XOR of the hashes of the
/// facets' other corners is 0 when every neighbour is there an even number of times, and is
/// not 0 by chance (a crafted point that makes it 0 only keeps that vertex from a tolerance
/// merge). `scratch` is reused.
fn closed(around: impl Iterator<Item = [u64; 2]>, scratch: &mut Vec<(u64, u64)>) -> bool {
    scratch.clear();
    scratch.extend(around.map(|[a, b]| (a.wrapping_add(b), a ^ b)));
    scratch.sort_unstable();
    scratch.dedup_by_key(|p| p.0);
    scratch.len() > 1 && scratch.iter().fold(0, |x, p| x ^ p.1) == 0
}

/// A 64-bit hash of a point's exact bits, for [`closed`].
#[inline]
fn ring(p: [f32; 3]) -> u64 {
    let [x, y, z] = p.map(|v| u64::from(v.to_bits()));
    let mut h = (x | y << 32) ^ z.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for k in [0xbf58_476d_1ce4_e5b9u64, 0x94d0_49bb_1331_11eb] {
        h ^= h >> 31;
        h = h.wrapping_mul(k);
    }
    h ^ h >> 29
}

/// Pairs of representative ordinals closer than the tolerance across a cell face.
///
/// Every representative within the tolerance of a face of its cell emits a probe
/// `hash(neighbour cell) << 32 | ordinal` for each neighbouring cell across those faces. The
/// probes are sorted like the representatives, so one merge-join pass over both finds the
/// candidates (sequential reads instead of one binary search per probe).
fn cross_cell_pairs(
    rep_keys: &[u64],
    rep_pos: &[[f32; 3]],
    rep_tol: &[f32],
    grid: &Grid,
) -> Vec<(u32, u32, f64)> {
    let cell = 1.0 / grid.inv_cell;
    let round = grid.round[0].max(grid.round[1]).max(grid.round[2]);
    let mut probes: Vec<u64> = rep_keys
        .par_iter()
        .enumerate()
        .flat_map_iter(|(ord, &k)| {
            let mut out = [0u64; 7];
            let mut len = 0;
            let p = rep_pos[ord];
            // (Within the rounding of a face too: such corners merge whatever their limits.)
            let near = f64::from(rep_tol[ord]).max(round);
            let c = grid.cell(p);
            // Which neighbours to look at along each axis.
            let mut opts = [[0i64; 2]; 3];
            let mut cnt = [1usize; 3];
            for a in 0..3 {
                let f = f64::from(p[a]) - grid.origin[a] - c[a] as f64 * cell;
                if f < near {
                    opts[a][1] = -1;
                    cnt[a] = 2;
                } else if cell - f <= near {
                    opts[a][1] = 1;
                    cnt[a] = 2;
                }
            }
            if cnt != [1, 1, 1] {
                for ix in 0..cnt[0] {
                    for iy in 0..cnt[1] {
                        for iz in 0..cnt[2] {
                            if ix == 0 && iy == 0 && iz == 0 {
                                continue;
                            }
                            let nc = [c[0] + opts[0][ix], c[1] + opts[1][iy], c[2] + opts[2][iz]];
                            // A neighbour outside the box holds no corner.
                            if grid.morton.as_ref().is_some_and(|m| m.key(nc).is_none()) {
                                continue;
                            }
                            let h = grid.cell_key(nc);
                            if h != hi(k) {
                                // (Same hash: same run, already clustered together.)
                                out[len] = pack(h, ord as u32);
                                len += 1;
                            }
                        }
                    }
                }
            }
            out.into_iter().take(len)
        })
        .collect();
    keys::sort(&mut probes);
    let chunks = keys::run_chunks(&probes, keys::parts_for(probes.len()));
    chunks
        .par_iter()
        .flat_map_iter(|r| {
            let ps = &probes[r.clone()];
            let mut out = Vec::new();
            let mut j = ps
                .first()
                .map_or(0, |&p| rep_keys.partition_point(|&x| hi(x) < hi(p)));
            for &pr in ps {
                let h = hi(pr);
                while j < rep_keys.len() && hi(rep_keys[j]) < h {
                    j += 1;
                }
                let ord = lo(pr);
                let p = rep_pos[ord as usize];
                let mut m = j;
                while m < rep_keys.len() && hi(rep_keys[m]) == h {
                    if m as u32 > ord
                        && let Some(d) =
                            grid.matches(p, rep_pos[m], rep_tol[ord as usize].min(rep_tol[m]))
                    {
                        out.push((ord, m as u32, d));
                    }
                    m += 1;
                }
            }
            out.into_iter()
        })
        .collect()
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// Union keeping as root the member with the smallest corner index.
fn union(parent: &mut [u32], rep_keys: &[u64], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra == rb {
        return;
    }
    if lo(rep_keys[ra as usize]) < lo(rep_keys[rb as usize]) {
        parent[rb as usize] = ra;
    } else {
        parent[ra as usize] = rb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welds_noise_across_cell_faces() {
        // Points straddling a cell face by tiny noise must weld.
        let tol = 1e-3f32;
        let mut pts = Vec::new();
        for i in 0..200 {
            let base = [i as f32 * 0.1, 0.5, 0.25];
            for k in 0..3 {
                let e = (k as f32 - 1.0) * 1e-5;
                pts.push([base[0] + e, base[1] - e, base[2] + e]);
            }
        }
        let w = weld(pts, tol);
        assert_eq!(w.vertices.len(), 200);
        assert_eq!(w.triangles.len(), 200);
        for t in &w.triangles {
            assert_eq!(t[0], t[1]);
            assert_eq!(t[1], t[2]);
        }
    }

    /// A corner of a zero-area facet that comes first among the bit-identical copies of a
    /// vertex (the representative the others join) must not leave that vertex welding only to
    /// bit-identical copies: a noisy copy from another facet still joins it.
    #[test]
    fn a_zero_area_corner_first_among_copies_keeps_the_vertex_tolerant() {
        let (p, q) = ([0.0, 0.0, 0.0], [0.0, 0.0, 1.0]);
        let (b, c) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
        let noisy = [1e-6, 0.0, 0.0];
        let pts = vec![p, q, q, p, b, c, noisy, q, b];
        let bbox = keys::par_bbox(&pts);
        let w = weld_in(pts, 1e-3, [1e-3; 3], bbox, true);
        assert_eq!(w.vertices.len(), 4, "{:?}", w.vertices);
        assert_eq!(w.triangles[1][0], w.triangles[2][0]);
    }

    /// Vertices are numbered by first use: the rank of each cluster's root among the root
    /// corners, here with roots spread over many 64-corner words of the bitmap and clusters
    /// whose copies come far apart, against a plain first-use numbering.
    #[test]
    fn vertices_are_numbered_by_first_use_across_bitmap_words() {
        let points: Vec<[f32; 3]> = (0..97)
            .map(|i| [i as f32, (i * i % 13) as f32, 0.5])
            .collect();
        // 999 corners (333 facets) drawn from the 97 points in a scrambled order, so roots
        // (first copies) lie in every word and most clusters span several words.
        let pts: Vec<[f32; 3]> = (0..999usize)
            .map(|c| points[(c * 37 + c / 7) % 97])
            .collect();
        for tol in [0.0, 1e-3] {
            let w = weld(pts.clone(), tol);
            let mut first_use: Vec<[f32; 3]> = Vec::new();
            let mut ids = Vec::new();
            for p in &pts {
                let id = match first_use.iter().position(|q| q == p) {
                    Some(k) => k,
                    None => {
                        first_use.push(*p);
                        first_use.len() - 1
                    }
                };
                ids.push(id as u32);
            }
            assert_eq!(w.vertices, first_use, "tolerance {tol}");
            let facets: Vec<[u32; 3]> = ids.chunks(3).map(|t| [t[0], t[1], t[2]]).collect();
            assert_eq!(w.triangles, facets, "tolerance {tol}");
        }
    }

    #[test]
    fn exact_only() {
        let pts = vec![[0.0, 0.0, 0.0], [0.0, 0.0, 1e-7], [0.0, 0.0, 0.0]];
        let w = weld(pts, 0.0);
        assert_eq!(w.vertices.len(), 2);
        assert_eq!(w.triangles, vec![[0, 1, 0]]);
        assert_eq!(w.exact_merged, 1);
    }

    /// Uniform numbers in `[0, 1)` from a linear congruential generator seeded with `seed`.
    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as f32 / (1u64 << 31) as f32
        }
    }

    /// The points of a `side`³ lattice of spacing 1, each moved by up to 0.1 along every axis:
    /// no two within 0.8 of each other. Point `(x, y, z)` is at `x + side (y + side z)`.
    fn jittered_lattice(side: u32, next: &mut impl FnMut() -> f32) -> Vec<[f32; 3]> {
        let mut points = Vec::new();
        for z in 0..side {
            for y in 0..side {
                for x in 0..side {
                    let mut j = |k: u32| k as f32 + (next() - 0.5) * 0.2;
                    points.push([j(x), j(y), j(z)]);
                }
            }
        }
        points
    }

    /// `touched_may_merge` against every pair: on a jittered lattice (no two vertices within
    /// the cap) with one vertex planted at a distance round the limit from one lattice vertex,
    /// at several places, and enough touched vertices (two thirds) that the probes are merged
    /// in several chunks.
    #[test]
    fn touched_may_merge_agrees_with_every_pair() {
        let mut next = uniform(0x9e37_79b9_7f4a_7c15);
        let side = 22u32;
        let at = |x: u32, y: u32, z: u32| x + side * (y + side * z);
        let cap = 0.2f32;
        let lattice = jittered_lattice(side, &mut next);
        let mut facets = Vec::new();
        for z in 0..side {
            for y in 0..side - 1 {
                for x in 0..side - 1 {
                    facets.push([at(x, y, z), at(x + 1, y, z), at(x, y + 1, z)]);
                }
            }
        }
        let mut outcomes = [0, 0];
        for planted in [0.0f32, 0.05, 0.15, 0.19, 0.21, 0.3] {
            for k in 0..8u32 {
                // The planted vertex has a facet of its own with two neighbours of its lattice
                // vertex (edges about 1: limit `cap`).
                let (x, y, z) = (1 + (k * 5) % 19, 1 + (k * 7) % 19, 1 + (k * 13) % 19);
                let (mut vertices, mut triangles) = (lattice.clone(), facets.clone());
                let q = vertices[at(x, y, z) as usize];
                let d = [next() - 0.5, next() - 0.5, next() - 0.5];
                let n = d.iter().map(|c| c * c).sum::<f32>().sqrt().max(1e-6);
                vertices.push([0, 1, 2].map(|a| q[a] + d[a] / n * planted));
                let p = vertices.len() as u32 - 1;
                triangles.push([p, at(x + 1, y, z), at(x, y, z + 1)]);
                // The planted vertex or its lattice vertex, or both, are touched.
                let touched: Vec<u32> = (0..vertices.len() as u32)
                    .filter(|v| v % 3 != k % 3 || (*v == p && k % 2 == 0))
                    .collect();
                assert!(
                    keys::parts_for(touched.len() * 8) > 1,
                    "several merge chunks"
                );
                // Every pair within the smaller of the two vertices' limits.
                let all: Vec<u32> = (0..vertices.len() as u32).collect();
                let lim = vertex_limits(&vertices, &triangles, &all, cap);
                let mut by_x = all.clone();
                by_x.sort_by(|&a, &b| vertices[a as usize][0].total_cmp(&vertices[b as usize][0]));
                let expected = touched.iter().any(|&u| {
                    let x = vertices[u as usize][0];
                    let from = by_x.partition_point(|&v| vertices[v as usize][0] < x - cap);
                    by_x[from..]
                        .iter()
                        .take_while(|&&v| vertices[v as usize][0] <= x + cap)
                        .any(|&v| {
                            let l = f64::from(lim[u as usize].min(lim[v as usize]));
                            v != u && dist2(vertices[u as usize], vertices[v as usize]) <= l * l
                        })
                });
                let got = touched_may_merge(&vertices, &triangles, &touched, cap);
                assert_eq!(got, expected, "planted at {planted} by vertex {k}");
                outcomes[usize::from(got)] += 1;
            }
        }
        assert!(
            outcomes[0] >= 16 && outcomes[1] >= 16,
            "both answers: {outcomes:?}"
        );
    }

    /// `pairs_within` finds every pair that a look at all pairs finds, and nothing else: a
    /// jittered lattice (no two vertices within the cap) with a vertex planted next to every
    /// seventh lattice vertex, at distances from 0 to 1.5 times the cap, and two thirds of the
    /// vertices touched (the probes merged in several chunks).
    #[test]
    fn pairs_within_finds_every_pair_within_the_limit() {
        let mut next = uniform(0x2545_f491_4f6c_dd1d);
        let (side, cap) = (22u32, 0.2f32);
        let mut vertices = jittered_lattice(side, &mut next);
        for q in (0..vertices.len()).step_by(7) {
            let d = [next() - 0.5, next() - 0.5, next() - 0.5];
            let n = d.iter().map(|c| c * c).sum::<f32>().sqrt().max(1e-6);
            let r = next() * 1.5 * cap;
            let p = vertices[q];
            vertices.push([0, 1, 2].map(|a| p[a] + d[a] / n * r));
        }
        let touched: Vec<u32> = (0..vertices.len() as u32).filter(|v| v % 3 != 0).collect();
        assert!(
            keys::parts_for(touched.len() * 8) > 1,
            "several merge chunks"
        );
        // Limits from the cap down to a third of it, and one in four down to a hundredth (a
        // small limit probes the neighbour cells only where its ball reaches them).
        let lim: Vec<f32> = touched
            .iter()
            .enumerate()
            .map(|(k, _)| {
                if k % 4 == 0 {
                    cap * (0.01 + next() * 0.32)
                } else {
                    cap * (1.0 - next() * 0.67)
                }
            })
            .collect();
        let mut got = pairs_within(&vertices, &touched, &lim, cap);
        got.sort_unstable();
        let mut expected = Vec::new();
        for (k, &u) in touched.iter().enumerate() {
            let l = f64::from(lim[k]);
            for v in 0..vertices.len() as u32 {
                if v != u && dist2(vertices[u as usize], vertices[v as usize]) <= l * l {
                    expected.push((k as u32, v));
                }
            }
        }
        assert!(expected.len() > 500, "{} pairs", expected.len());
        assert_eq!(got, expected);
    }
}
