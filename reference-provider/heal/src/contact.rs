//! Small shells that are part of the model: the geometric half of the tiny-shell rule.
//!
//! A shell under the tiny-shell size bound that shares no vertex with another shell (a
//! *candidate*) is noise only when it floats free. It is part of the model, and kept, when
//! - the box round it, grown by a hundredth of its diagonal, meets a facet of another shell:
//!   letters sunk into a plate or set on it, a pin through a part, a part touching another
//!   without a shared vertex (exporters write each body of an assembly on its own); or
//! - it lies in the material of the other shells (an odd number of their facets crossed by
//!   rays from one of its corners along at least two of the three axes) and comes wound inward:
//!   a void, given as one. "Inward" is against the model: when the other shells' signed volume
//!   sums below zero (a whole model written inside out, as a mirrored export is), a void comes
//!   wound outward.
//!
//! A candidate floating in air (or in a cavity) stays noise, and so does an outward one in the
//! material, which adds nothing to the solid round it.
//!
//! Cost: one parallel pass over the facets of the other shells. The candidates' boxes are
//! filed on a grid of at most [`MAX_CELLS`] cells per axis, its cells as large as the largest
//! candidate box, and their rays in the columns of that grid; a bitmap says which cells hold
//! anything. A facet looks at the cells its box covers, or at every candidate when it covers
//! more than [`BIG_FACET_CELLS`]. The exact tests a facet makes beyond a small constant (and
//! the whole list for a big facet) are charged to a budget proportional to the facets; when
//! it runs out every candidate is kept (keeping a speck is the lesser error than dropping part
//! of a model) and the report says so.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

use rayon::prelude::*;

use crate::Bbox;
use crate::holes::{cross, dot, sub};
use crate::orient::{Winding, crosses};

/// Cells per axis of the candidates' grid, at most.
const MAX_CELLS: f64 = 128.0;

/// A facet whose box covers more cells than this looks at every candidate instead.
const BIG_FACET_CELLS: usize = 64;

/// A candidate's box is grown by this fraction of its diagonal before it is tested.
const MARGIN: f64 = 0.01;

/// Exact tests a facet may make without charging the budget.
const FREE_WORK: u64 = 32;

pub(crate) struct Contact {
    /// Per candidate, in the order given: part of the model (keep it).
    pub keep: Vec<bool>,
    /// The work budget ran out before every candidate was decided: all are kept.
    pub limited: bool,
}

/// Cells holding something: a bitmap for the quick test and (cell, item) pairs in cell order.
struct Filed {
    bits: Vec<u64>,
    pairs: Vec<(u32, u32)>,
}

impl Filed {
    fn new(cells: usize, mut pairs: Vec<(u32, u32)>) -> Filed {
        pairs.sort_unstable();
        pairs.dedup();
        let mut bits = vec![0u64; cells.div_ceil(64)];
        for &(c, _) in &pairs {
            bits[c as usize / 64] |= 1 << (c % 64);
        }
        Filed { bits, pairs }
    }

    /// The items filed in `cell` (most cells hold none: one bit test).
    #[inline]
    fn get(&self, cell: usize) -> &[(u32, u32)] {
        if self.bits[cell / 64] & (1 << (cell % 64)) == 0 {
            return &[];
        }
        let c = cell as u32;
        let lo = self.pairs.partition_point(|p| p.0 < c);
        let hi = self.pairs.partition_point(|p| p.0 <= c);
        &self.pairs[lo..hi]
    }
}

/// Cells along one axis (at most `MAX_CELLS + 1`) as bits.
#[derive(Clone, Copy, Default)]
struct Mask([u64; 3]);

impl Mask {
    fn set(&mut self, lo: usize, hi: usize) {
        for i in lo..=hi {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    /// Is any cell of `lo..=hi` set?
    #[inline]
    fn any(&self, lo: usize, hi: usize) -> bool {
        (lo / 64..=hi / 64).any(|word| {
            let from = if word == lo / 64 { lo % 64 } else { 0 };
            let to = if word == hi / 64 { hi % 64 } else { 63 };
            let bits = (u64::MAX >> (63 - to)) & (u64::MAX << from);
            self.0[word] & bits != 0
        })
    }
}

/// The grid over the model: origin, cells per unit of length, cells per axis.
struct Grid {
    lo: [f64; 3],
    inv: f64,
    dims: [usize; 3],
}

impl Grid {
    #[inline]
    fn at(&self, x: f64, a: usize) -> usize {
        // `as` saturates (and maps NaN to 0), so no floor is needed: a negative offset goes to
        // cell 0 either way.
        (((x - self.lo[a]) * self.inv) as usize).min(self.dims[a] - 1)
    }

    /// The cells `lo..=hi` along each axis that the box `min..max` covers.
    #[inline]
    fn span(&self, min: [f64; 3], max: [f64; 3]) -> [(usize, usize); 3] {
        std::array::from_fn(|a| (self.at(min[a], a), self.at(max[a], a)))
    }
}

/// Decides which `candidates` (shell numbers) are part of the model. `counts[s]`: the facets
/// of shell `s` count as the model's (it is neither a candidate nor a shell of under four
/// facets); `bb`: every shell's box; `first`: every shell's first facet; `model`: the model's
/// box.
#[allow(clippy::too_many_arguments)]
pub(crate) fn in_contact(
    v: &[[f32; 3]],
    t: &[[u32; 3]],
    w: &Winding,
    candidates: &[u32],
    counts: &[bool],
    bb: &[Option<Bbox>],
    first: &[u32],
    model: &Bbox,
) -> Contact {
    let k = candidates.len();
    let f64s = |p: [f32; 3]| p.map(f64::from);
    // Each candidate's box, grown, and the corner its rays start from.
    let boxes: Vec<([f64; 3], [f64; 3])> = candidates
        .iter()
        .map(|&s| {
            let b = bb[s as usize].expect("a candidate has facets");
            let m = MARGIN * b.diagonal();
            let (lo, hi) = (f64s(b.min), f64s(b.max));
            (lo.map(|x| x - m), hi.map(|x| x + m))
        })
        .collect();
    let corner: Vec<[f64; 3]> = candidates
        .iter()
        .map(|&s| f64s(v[t[first[s as usize] as usize][0] as usize]))
        .collect();
    // The grid: cells as large as the largest grown box (so each box covers at most two cells
    // per axis), and at most MAX_CELLS per axis.
    let mut lo = f64s(model.min);
    let mut hi = f64s(model.max);
    let mut largest = 0.0f64;
    for (bl, bh) in &boxes {
        for a in 0..3 {
            lo[a] = lo[a].min(bl[a]);
            hi[a] = hi[a].max(bh[a]);
            largest = largest.max(bh[a] - bl[a]);
        }
    }
    let span = (0..3).map(|a| hi[a] - lo[a]).fold(0.0, f64::max);
    let cell = largest.max(span / MAX_CELLS).max(f64::MIN_POSITIVE);
    let dims: [usize; 3] = std::array::from_fn(|a| ((hi[a] - lo[a]) / cell) as usize + 1);
    let grid = Grid {
        lo,
        inv: 1.0 / cell,
        dims,
    };
    let index = |c: [usize; 3]| (c[0] * dims[1] + c[1]) * dims[2] + c[2];
    let mut pairs = Vec::new();
    for (c, (bl, bh)) in boxes.iter().enumerate() {
        let r = grid.span(*bl, *bh);
        for x in r[0].0..=r[0].1 {
            for y in r[1].0..=r[1].1 {
                for z in r[2].0..=r[2].1 {
                    pairs.push((index([x, y, z]) as u32, c as u32));
                }
            }
        }
    }
    // Per axis, the cells any box covers: most facets are ruled out by three range tests.
    let mut box_mask = [Mask::default(); 3];
    for (bl, bh) in &boxes {
        for (a, (l, h)) in grid.span(*bl, *bh).into_iter().enumerate() {
            box_mask[a].set(l, h);
        }
    }
    let boxed = Filed::new(dims.iter().product(), pairs);
    // Rays: from each candidate's corner along +x, +y and +z, the start nudged off any edge
    // (as the orientation stage does), filed in the column of the grid they run along.
    let scale = Bbox::diagonal(model).max(f64::MIN_POSITIVE);
    let nudge = [scale * 1.234_567_9e-7, scale * 7.654_321e-8];
    let start = corner;
    // Which candidates come wound inward (signed volume below zero after the winding stage's
    // flips; outward when the model is written inside out, below): only those can be voids,
    // so only those cast rays.
    let mut cand_of = vec![u32::MAX; counts.len()];
    for (c, &s) in candidates.iter().enumerate() {
        cand_of[s as usize] = c as u32;
    }
    // Facet `f`'s part (times 6) of its shell's signed volume, seen from `o`, as the winding
    // stage left it.
    let cone = |f: usize, o: [f64; 3]| {
        let mut tri = t[f];
        if w.flip[f] {
            tri.swap(1, 2);
        }
        let [a, b, d] = tri.map(|i| sub(f64s(v[i as usize]), o));
        dot(a, cross(b, d))
    };
    let mut volume = vec![0.0f64; k];
    for (f, &s) in w.shell_of.iter().enumerate() {
        let c = cand_of[s as usize];
        if c != u32::MAX {
            volume[c as usize] += cone(f, start[c as usize]);
        }
    }
    // A void is wound against the model round it. The model's way is that of most of its
    // volume: the other shells' signed volume summed (a whole model written inside out, as a
    // mirrored export is, has its voids wound outward; one shell written inside out among
    // outward ones, as a careless export has, changes nothing for the specks in it).
    let origin = f64s(model.min);
    let model_volume: f64 = (0..t.len())
        .into_par_iter()
        .with_min_len(1 << 12)
        .filter(|&f| counts[w.shell_of[f] as usize])
        .map(|f| cone(f, origin))
        .sum();
    let inside_out = model_volume < 0.0;
    let inward: Vec<bool> = volume
        .iter()
        .map(|&x| if inside_out { x > 0.0 } else { x < 0.0 })
        .collect();
    // Per ray axis: the columns' cells on the two other axes, filed and as range masks.
    let rays: [(Filed, [Mask; 2]); 3] = std::array::from_fn(|axis| {
        let (ua, wa) = ((axis + 1) % 3, (axis + 2) % 3);
        let mut mask = [Mask::default(); 2];
        let pairs = start
            .iter()
            .enumerate()
            .filter(|&(c, _)| inward[c])
            .map(|(c, p)| {
                let (cu, cw) = (grid.at(p[ua] + nudge[0], ua), grid.at(p[wa] + nudge[1], wa));
                mask[0].set(cu, cu);
                mask[1].set(cw, cw);
                ((cu * dims[wa] + cw) as u32, c as u32)
            })
            .collect();
        (Filed::new(dims[ua] * dims[wa], pairs), mask)
    });
    // Every vertex's cell, one byte per axis (at most MAX_CELLS + 1 cells).
    let code: Vec<[u8; 3]> = v
        .par_iter()
        .with_min_len(1 << 12)
        .map(|p| std::array::from_fn(|a| grid.at(f64::from(p[a]), a) as u8))
        .collect();
    let touching: Vec<AtomicBool> = (0..k).map(|_| AtomicBool::new(false)).collect();
    let parity: Vec<AtomicU8> = (0..k).map(|_| AtomicU8::new(0)).collect();
    let budget = AtomicU64::new(8 * t.len() as u64 + (1 << 16));
    let spent = AtomicBool::new(false);
    // Charges `work` to the budget; false once it has run out.
    let charge = |work: u64| {
        if work <= FREE_WORK {
            return !spent.load(Relaxed);
        }
        let left = budget.fetch_sub(work.min(1 << 40), Relaxed);
        if left < work || left > 1 << 62 {
            spent.store(true, Relaxed);
        }
        !spent.load(Relaxed)
    };
    (0..t.len())
        .into_par_iter()
        .with_min_len(1 << 10)
        .for_each(|f| {
            if !counts[w.shell_of[f] as usize] || spent.load(Relaxed) {
                return;
            }
            // The cells the facet's box covers, from its corners' cells (the corners themselves
            // are read only for the few facets that pass the masks).
            let cc = t[f].map(|i| code[i as usize]);
            let r: [(usize, usize); 3] = std::array::from_fn(|a| {
                let c = cc.map(|x| x[a]);
                (
                    usize::from(c[0].min(c[1]).min(c[2])),
                    usize::from(c[0].max(c[1]).max(c[2])),
                )
            });
            let covered = |a: usize| r[a].1 - r[a].0 + 1;
            let geometry = || {
                let p = t[f].map(|i| f64s(v[i as usize]));
                let min: [f64; 3] = std::array::from_fn(|a| p[0][a].min(p[1][a]).min(p[2][a]));
                let max: [f64; 3] = std::array::from_fn(|a| p[0][a].max(p[1][a]).max(p[2][a]));
                (p, min, max)
            };
            let mut work = 0u64;
            // Contact: the facet against the boxes of the cells it covers.
            if (0..3).all(|a| box_mask[a].any(r[a].0, r[a].1)) {
                let (p, min, max) = geometry();
                let meet = |c: usize, work: &mut u64| {
                    *work += 1;
                    if touching[c].load(Relaxed) {
                        return;
                    }
                    let (bl, bh) = boxes[c];
                    if (0..3).all(|a| min[a] <= bh[a] && max[a] >= bl[a])
                        && triangle_meets_box(p, bl, bh)
                    {
                        touching[c].store(true, Relaxed);
                    }
                };
                if covered(0) * covered(1) * covered(2) <= BIG_FACET_CELLS {
                    for x in r[0].0..=r[0].1 {
                        for y in r[1].0..=r[1].1 {
                            for z in r[2].0..=r[2].1 {
                                for &(_, c) in boxed.get(index([x, y, z])) {
                                    meet(c as usize, &mut work);
                                }
                            }
                        }
                    }
                } else {
                    if !charge(k as u64) {
                        return;
                    }
                    for c in 0..k {
                        meet(c, &mut work);
                    }
                }
            }
            // Rays: the facet against the rays of the columns its shadow covers.
            for (axis, (filed, mask)) in rays.iter().enumerate() {
                let (ua, wa) = ((axis + 1) % 3, (axis + 2) % 3);
                if !(mask[0].any(r[ua].0, r[ua].1) && mask[1].any(r[wa].0, r[wa].1)) {
                    continue;
                }
                let (_, _, max) = geometry();
                let ray = |c: usize, work: &mut u64| {
                    *work += 1;
                    let s = start[c];
                    if max[axis] > s[axis]
                        && crosses(v, t[f], axis, s, s[ua] + nudge[0], s[wa] + nudge[1])
                    {
                        parity[c].fetch_xor(1 << axis, Relaxed);
                    }
                };
                if covered(ua) * covered(wa) <= BIG_FACET_CELLS {
                    for x in r[ua].0..=r[ua].1 {
                        for y in r[wa].0..=r[wa].1 {
                            for &(_, c) in filed.get(x * dims[wa] + y) {
                                ray(c as usize, &mut work);
                            }
                        }
                    }
                } else {
                    if !charge(k as u64) {
                        return;
                    }
                    for c in 0..k {
                        ray(c, &mut work);
                    }
                }
            }
            charge(work);
        });
    if spent.load(Relaxed) {
        return Contact {
            keep: vec![true; k],
            limited: true,
        };
    }
    // Touching, or in the material and wound inward (a void).
    let keep: Vec<bool> = (0..k)
        .map(|c| {
            touching[c].load(Relaxed) || (inward[c] && parity[c].load(Relaxed).count_ones() >= 2)
        })
        .collect();
    Contact {
        keep,
        limited: false,
    }
}

/// Does the triangle `p` meet the box `lo..hi`? Separating axes: the box's three (tested by
/// the caller's box overlap, and again here), the triangle's normal, and the nine products of
/// a triangle edge with a box axis.
pub(crate) fn triangle_meets_box(p: [[f64; 3]; 3], lo: [f64; 3], hi: [f64; 3]) -> bool {
    let centre: [f64; 3] = std::array::from_fn(|a| (lo[a] + hi[a]) / 2.0);
    let half: [f64; 3] = std::array::from_fn(|a| (hi[a] - lo[a]) / 2.0);
    let q = p.map(|x| sub(x, centre));
    let edges = [sub(q[1], q[0]), sub(q[2], q[1]), sub(q[0], q[2])];
    let separates = |axis: [f64; 3]| {
        let r: f64 = (0..3).map(|a| half[a] * axis[a].abs()).sum();
        let d = q.map(|x| dot(x, axis));
        d[0].min(d[1]).min(d[2]) > r || d[0].max(d[1]).max(d[2]) < -r
    };
    let unit = |a: usize| std::array::from_fn::<f64, 3, _>(|i| f64::from(u8::from(i == a)));
    if (0..3).any(|a| separates(unit(a))) || separates(cross(edges[0], edges[1])) {
        return false;
    }
    !edges
        .iter()
        .any(|&e| (0..3).any(|a| separates(cross(e, unit(a)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_answers_for_ranges_across_words() {
        let mut m = Mask::default();
        m.set(63, 64);
        m.set(128, 128);
        assert!(m.any(0, 63) && m.any(64, 64) && m.any(60, 200) && m.any(128, 191));
        assert!(!m.any(0, 62) && !m.any(65, 127) && !m.any(129, 191));
    }

    #[test]
    fn a_triangle_meets_a_box_it_crosses_and_not_one_beside_it() {
        let lo = [0.0; 3];
        let hi = [1.0; 3];
        // A large triangle through the middle of the box, no corner inside it.
        let through = [[-5.0, -5.0, 0.5], [5.0, -5.0, 0.5], [0.0, 10.0, 0.5]];
        assert!(triangle_meets_box(through, lo, hi));
        // The same plane, moved above the box.
        let above = through.map(|p| [p[0], p[1], 1.5]);
        assert!(!triangle_meets_box(above, lo, hi));
        // A triangle whose box overlaps the box's but which passes beside its corner (the
        // line x + y = 2.2 beyond the corner x + y = 2): only an edge axis separates them.
        let beside = [[2.7, -0.5, 0.5], [-0.5, 2.7, 0.5], [3.0, 3.0, 0.5]];
        assert!(!triangle_meets_box(beside, lo, hi));
        // Touching a face exactly counts.
        let on = [[-1.0, -1.0, 1.0], [3.0, -1.0, 1.0], [-1.0, 3.0, 1.0]];
        assert!(triangle_meets_box(on, lo, hi));
    }
}
