//! Winding and orientation.
//!
//! * [`make_consistent`]: a breadth-first walk over paired edges gives every facet of a shell
//!   the same winding as its neighbours (a facet whose shared edge runs the same direction as
//!   its neighbour's is flipped). The walk also numbers the shells. Within each shell the
//!   majority winding wins, so a 10 % sprinkle of flipped facets costs 10 % of flips.
//! * [`orient_outward`]: on the closed shells (after hole filling) the signed volume says which
//!   way a shell faces. A shell nested inside an odd number of other shells (found by ray
//!   parity along three axes, majority vote, on two sample vertices) is a cavity and must face
//!   inward (negative volume); every other shell must face outward. Shells facing the wrong way
//!   are flipped as a whole.

use rayon::prelude::*;

use crate::clean::rounding;
use crate::holes::{cross, norm, sub};
use crate::topology::{NONE, SAME};
use crate::{Bbox, bbox_of};

pub(crate) struct Winding {
    /// Per facet: flip it.
    pub flip: Vec<bool>,
    /// Per facet: shell number.
    pub shell_of: Vec<u32>,
    pub shell_count: u32,
    pub flipped_count: u64,
    pub conflicts: u64,
}

pub(crate) fn make_consistent(twin: &[u32], facets: usize, fix: bool) -> Winding {
    const UNSEEN: u32 = u32::MAX;
    let mut shell_of = vec![UNSEEN; facets];
    let mut flip = vec![false; facets];
    let mut order: Vec<u32> = Vec::with_capacity(facets);
    let mut shell_count = 0u32;
    let mut conflicts = 0u64;
    let mut flipped_count = 0u64;
    for seed in 0..facets {
        if shell_of[seed] != UNSEEN {
            continue;
        }
        let s = shell_count;
        shell_count += 1;
        let start = order.len();
        shell_of[seed] = s;
        order.push(seed as u32);
        let mut head = start;
        let mut flipped_here = 0usize;
        while head < order.len() {
            let g = order[head] as usize;
            head += 1;
            for k in 0..3 {
                let tw = twin[3 * g + k];
                if tw == NONE {
                    continue;
                }
                let n = ((tw & !SAME) / 3) as usize;
                let want = if fix {
                    flip[g] ^ (tw & SAME != 0)
                } else {
                    false
                };
                if shell_of[n] == UNSEEN {
                    shell_of[n] = s;
                    flip[n] = want;
                    flipped_here += usize::from(want);
                    order.push(n as u32);
                } else if (fix && flip[n] != want) || (!fix && tw & SAME != 0) {
                    conflicts += 1;
                }
            }
        }
        let size = order.len() - start;
        if flipped_here * 2 > size {
            for &f in &order[start..] {
                flip[f as usize] = !flip[f as usize];
            }
            flipped_here = size - flipped_here;
        }
        flipped_count += flipped_here as u64;
    }
    Winding {
        flip,
        shell_of,
        shell_count,
        flipped_count,
        // Each conflicting edge is seen from both sides.
        conflicts: conflicts.div_ceil(2),
    }
}

/// Six times the signed volume of the tetrahedron (o, a, b, c).
#[inline]
fn det6(o: [f64; 3], a: [f32; 3], b: [f32; 3], c: [f32; 3]) -> f64 {
    let s = |p: [f32; 3]| {
        [
            f64::from(p[0]) - o[0],
            f64::from(p[1]) - o[1],
            f64::from(p[2]) - o[2],
        ]
    };
    let (a, b, c) = (s(a), s(b), s(c));
    a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
        + a[2] * (b[0] * c[1] - b[1] * c[0])
}

/// Signed volume of a triangle set (meaningful for closed surfaces).
pub(crate) fn signed_volume(v: &[[f32; 3]], t: &[[u32; 3]]) -> f64 {
    let Some(o) = t.first().map(|f| v[f[0] as usize].map(f64::from)) else {
        return 0.0;
    };
    t.par_iter()
        .map(|f| det6(o, v[f[0] as usize], v[f[1] as usize], v[f[2] as usize]))
        .sum::<f64>()
        / 6.0
}

pub(crate) struct Oriented {
    pub flipped: u64,
    pub cavities: u64,
    pub volume: f64,
    /// Per shell: turned outward (or a cavity turned inward) here, for provenance.
    pub flip_shell: Vec<bool>,
    /// Shells that enclose no volume ([`encloses_nothing`]).
    pub flat: u64,
}

/// Does a closed shell with this signed volume enclose nothing: is it flat, a sheet and its
/// fill on top of each other (an open flat piece whose rim was filled onto itself)? Its volume
/// is then zero up to the rounding of its coordinates: at most its area times [`rounding`]
/// (a solid that thin is under 8 units in the last place of its coordinates thick). Only
/// shells whose volume is small against their box are measured.
fn encloses_nothing(v: &[[f32; 3]], t: &[[u32; 3]], faces: &[u32], vol: f64, bb: &Bbox) -> bool {
    let d = bb.diagonal();
    if vol.abs() > 1e-3 * d * d * d {
        return false;
    }
    let largest = bb
        .min
        .iter()
        .chain(&bb.max)
        .fold(0.0f64, |m, x| m.max(f64::from(*x).abs()));
    let area: f64 = faces
        .iter()
        .map(|&f| {
            let p = t[f as usize].map(|i| v[i as usize].map(f64::from));
            norm(cross(sub(p[1], p[0]), sub(p[2], p[0]))) / 2.0
        })
        .sum();
    vol.abs() <= area * rounding(largest)
}

/// Facets of every shell, as a CSR list.
fn faces_by_shell(shell_of: &[u32], shells: usize) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; shells + 1];
    for &s in shell_of {
        start[s as usize + 1] += 1;
    }
    for i in 0..shells {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut faces = vec![0u32; shell_of.len()];
    for (f, &s) in shell_of.iter().enumerate() {
        faces[fill[s as usize] as usize] = f as u32;
        fill[s as usize] += 1;
    }
    (start, faces)
}

pub(crate) fn orient_outward(
    v: &[[f32; 3]],
    t: &mut [[u32; 3]],
    shell_of: &[u32],
    shells: u32,
    fix: bool,
) -> Oriented {
    let shells = shells as usize;
    let (start, faces) = faces_by_shell(shell_of, shells);
    let shell_faces = |s: usize| &faces[start[s] as usize..start[s + 1] as usize];
    let tt: &[[u32; 3]] = t;
    // Volume and box of every shell. A large shell (most of a model's facets are in one) is
    // worked on in parallel itself: its facets' terms are computed a block at a time in
    // parallel and summed in facet order (the same sum, to the bit, as one loop), its box is
    // a parallel reduction.
    const BLOCK: usize = 1 << 15;
    let info: Vec<(f64, Option<Bbox>)> = (0..shells)
        .into_par_iter()
        .map(|s| {
            let fs = shell_faces(s);
            let Some(&f0) = fs.first() else {
                return (0.0, None);
            };
            let o = v[tt[f0 as usize][0] as usize].map(f64::from);
            let term = |&f: &u32| {
                let f = tt[f as usize];
                det6(o, v[f[0] as usize], v[f[1] as usize], v[f[2] as usize])
            };
            let corners = |fs: &[u32]| {
                bbox_of(
                    fs.iter()
                        .flat_map(|&f| tt[f as usize])
                        .map(|i| v[i as usize]),
                )
            };
            if fs.len() <= BLOCK {
                return (fs.iter().map(term).sum::<f64>() / 6.0, corners(fs));
            }
            let mut terms = vec![0.0f64; BLOCK];
            // From -0.0, as `Sum` for floats starts.
            let mut vol = -0.0f64;
            for block in fs.chunks(BLOCK) {
                let terms = &mut terms[..block.len()];
                terms
                    .par_chunks_mut(1 << 12)
                    .zip(block.par_chunks(1 << 12))
                    .for_each(|(out, fs)| {
                        for (x, f) in out.iter_mut().zip(fs) {
                            *x = term(f);
                        }
                    });
                vol = terms.iter().fold(vol, |a, &x| a + x);
            }
            let bb = fs.par_chunks(1 << 14).map(corners).reduce(
                || None,
                |a, b| match (a, b) {
                    (Some(a), Some(b)) => bbox_of([a.min, a.max, b.min, b.max].into_iter()),
                    (a, None) => a,
                    (None, b) => b,
                },
            );
            (vol / 6.0, bb)
        })
        .collect();
    let flat = (0..shells)
        .into_par_iter()
        .filter(|&s| {
            let (vol, bb) = &info[s];
            bb.as_ref()
                .is_some_and(|bb| encloses_nothing(v, tt, shell_faces(s), *vol, bb))
        })
        .count() as u64;
    // Nesting depth of every shell.
    let depth = nesting_depths(v, tt, shell_of, &info, &start, &faces);
    let mut flipped = 0;
    let mut cavities = 0;
    let mut volume = 0.0;
    let mut flip_shell = vec![false; shells];
    for s in 0..shells {
        let cavity = depth[s] % 2 == 1;
        cavities += u64::from(cavity);
        let vol = info[s].0;
        let wrong = if cavity { vol > 0.0 } else { vol < 0.0 };
        if fix && wrong {
            flip_shell[s] = true;
            flipped += 1;
            volume -= vol;
        } else {
            volume += vol;
        }
    }
    if flipped > 0 {
        t.par_iter_mut()
            .zip(shell_of.par_iter())
            .for_each(|(f, &s)| {
                if flip_shell[s as usize] {
                    f.swap(1, 2);
                }
            });
    }
    Oriented {
        flipped,
        cavities,
        volume,
        flip_shell,
        flat,
    }
}

fn strictly_inside(inner: &Bbox, outer: &Bbox) -> bool {
    (0..3).all(|a| inner.min[a] > outer.min[a] && inner.max[a] < outer.max[a])
}

/// Is `p` inside the closed shell made of `faces`? Ray parity along +x, +y and +z (each ray
/// start nudged off any edge by a tiny irrational offset), majority vote.
fn inside(v: &[[f32; 3]], t: &[[u32; 3]], faces: &[u32], p: [f32; 3], bb: Option<Bbox>) -> bool {
    let scale = bb.map_or(1.0, |b| b.diagonal()).max(f64::MIN_POSITIVE);
    let p = p.map(f64::from);
    let nudge = [scale * 1.234_567_9e-7, scale * 7.654_321e-8];
    let votes: usize = (0..3)
        .map(|axis| {
            let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
            let (pu, pw) = (p[u] + nudge[0], p[w] + nudge[1]);
            faces
                .iter()
                .filter(|&&f| crosses(v, t[f as usize], axis, p, pu, pw))
                .count()
                % 2
        })
        .sum();
    votes >= 2
}

/// Does the ray from `p` along `+axis`, its start moved to `pu`, `pw` on the two other axes,
/// cross the facet `f`?
#[inline]
pub(crate) fn crosses(
    v: &[[f32; 3]],
    f: [u32; 3],
    axis: usize,
    p: [f64; 3],
    pu: f64,
    pw: f64,
) -> bool {
    let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
    let q = f.map(|i| v[i as usize].map(f64::from));
    let (a, b, c) = (q[0], q[1], q[2]);
    // Quick reject on the projected bounding box.
    if (a[u] < pu && b[u] < pu && c[u] < pu)
        || (a[u] > pu && b[u] > pu && c[u] > pu)
        || (a[w] < pw && b[w] < pw && c[w] < pw)
        || (a[w] > pw && b[w] > pw && c[w] > pw)
    {
        return false;
    }
    let e = |s: [f64; 3], r: [f64; 3]| (r[u] - s[u]) * (pw - s[w]) - (r[w] - s[w]) * (pu - s[u]);
    let (e0, e1, e2) = (e(a, b), e(b, c), e(c, a));
    let pos = e0 > 0.0 && e1 > 0.0 && e2 > 0.0;
    let neg = e0 < 0.0 && e1 < 0.0 && e2 < 0.0;
    if !(pos || neg) {
        return false;
    }
    // Barycentric height of the hit along the axis.
    let sum = e0 + e1 + e2;
    let x = (e1 * a[axis] + e2 * b[axis] + e0 * c[axis]) / sum;
    x > p[axis]
}

/// Per shell: how many other shells contain it (a shell `o` contains `s` when the box of `o`
/// strictly contains the box of `s` and both sample vertices of `s` are inside `o` by the
/// majority of three axis rays).
///
/// With few shells, and when testing every nested pair costs little (at most a few passes
/// over the facets), every pair of boxes is compared and each nested pair tested by its own
/// rays. Otherwise (many shells — a model of thousands of parts — or many small shells inside
/// a big one) the facets are binned once per axis into a column grid ([`Columns`]) and every
/// ray meets only the facets of its column, whichever shells they belong to: no pass over
/// pairs of shells, so the cost grows with the facets and the rays, not with shells squared.
fn nesting_depths(
    v: &[[f32; 3]],
    t: &[[u32; 3]],
    shell_of: &[u32],
    info: &[(f64, Option<Bbox>)],
    start: &[u32],
    faces: &[u32],
) -> Vec<u32> {
    let shells = info.len();
    let shell_faces = |s: usize| &faces[start[s] as usize..start[s + 1] as usize];
    let samples = |s: usize| -> Vec<[f32; 3]> {
        let fs = shell_faces(s);
        [0, fs.len() / 2]
            .iter()
            .filter_map(|&i| fs.get(i))
            .map(|&f| v[t[f as usize][0] as usize])
            .collect()
    };
    let nested = |s: usize, o: usize| {
        o != s
            && matches!((info[s].1, info[o].1), (Some(bs), Some(bo)) if strictly_inside(&bs, &bo))
    };
    let direct = shells <= DIRECT_MAX_SHELLS && {
        let cost: usize = (0..shells)
            .flat_map(|s| (0..shells).map(move |o| (s, o)))
            .filter(|&(s, o)| nested(s, o))
            .map(|(_, o)| shell_faces(o).len())
            .sum();
        cost <= 2 * t.len() + 4096
    };
    if direct {
        return (0..shells)
            .into_par_iter()
            .map(|s| {
                let ps = samples(s);
                (0..shells)
                    .filter(|&o| nested(s, o))
                    .filter(|&o| {
                        ps.iter()
                            .all(|&p| inside(v, t, shell_faces(o), p, info[o].1))
                    })
                    .count() as u32
            })
            .collect();
    }
    let Some(model) = bbox_of(info.iter().filter_map(|i| i.1).flat_map(|b| [b.min, b.max])) else {
        return vec![0; shells];
    };
    let scale = model.diagonal().max(f64::MIN_POSITIVE);
    let nudge = [scale * 1.234_567_9e-7, scale * 7.654_321e-8];
    let cols = Columns::build(v, t, &model);
    (0..shells)
        .into_par_iter()
        .map(|s| {
            // Only the facets of shells whose box strictly contains this one's can count; at
            // the second sample, only those of the shells the first one was inside.
            let mut inside_all: Option<Vec<u32>> = None;
            for p in samples(s) {
                let p = p.map(f64::from);
                let want = |o: u32| match &inside_all {
                    None => nested(s, o as usize),
                    Some(prev) => prev.binary_search(&o).is_ok(),
                };
                // Inside by majority: odd along at least two of the three axes. The ray along
                // z is cast only for the shells that x and y disagree on.
                let ox = cols[0].odd_shells(v, t, shell_of, &want, p, nudge);
                let oy = cols[1].odd_shells(v, t, shell_of, &want, p, nudge);
                let (mut maj, split) = agree(&ox, &oy);
                if !split.is_empty() {
                    let want_z = |o: u32| split.binary_search(&o).is_ok();
                    maj.extend(cols[2].odd_shells(v, t, shell_of, &want_z, p, nudge));
                    maj.sort_unstable();
                }
                let none = maj.is_empty();
                inside_all = Some(maj);
                if none {
                    break;
                }
            }
            inside_all
                .unwrap_or_default()
                .into_iter()
                .filter(|&o| nested(s, o as usize))
                .count() as u32
        })
        .collect()
}

/// Two sorted lists of shells: those in both, and those in only one (both sorted).
fn agree(x: &[u32], y: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let (mut both, mut one) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < x.len() || j < y.len() {
        match (x.get(i), y.get(j)) {
            (Some(a), Some(b)) if a == b => {
                both.push(*a);
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                one.push(*a);
                i += 1;
            }
            (Some(a), None) => {
                one.push(*a);
                i += 1;
            }
            (_, Some(b)) => {
                one.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (both, one)
}

/// Shells with more than this many shells use the column index ([`Columns`]) for nesting;
/// below it, every pair of shells whose boxes nest is tested directly when that is cheap.
const DIRECT_MAX_SHELLS: usize = 64;

/// A face is filed in the finest level of a column grid where its projection covers at most
/// this many cells.
const LEVEL_CELLS: usize = 16;

/// One column grid per axis: the faces binned by their projection along that axis, so a ray
/// along the axis meets only the faces filed in its column. The grid has levels: the finest
/// of about `faces / 2` cells, each next one half as fine per side, down to one cell; a face
/// is filed in the finest level where it covers at most [`LEVEL_CELLS`] cells, so every face
/// is filed a bounded number of times whatever its size, and a ray looks at one cell per
/// level. Built in `O(faces + cells)` (the faces are grouped by level in one pass, then the
/// levels are filled in parallel, each from its own faces); a ray costs the faces of its
/// columns.
struct Columns {
    axis: usize,
    origin: [f64; 2],
    ext: [f64; 2],
    levels: Vec<Level>,
}

struct Level {
    res: usize,
    start: Vec<u32>,
    faces: Vec<u32>,
}

/// A face's level and cell span `[u0, u1, w0, w1]` in one word (a grid is at most 2048 cells
/// per side, so a cell index fits 12 bits): 8 bytes a face instead of 40, since a column grid
/// is built for every face along each of the three axes at once.
mod span {
    pub(super) fn pack(level: usize, s: [usize; 4]) -> u64 {
        (level as u64) << 48
            | (s[0] as u64) << 36
            | (s[1] as u64) << 24
            | (s[2] as u64) << 12
            | s[3] as u64
    }
    pub(super) fn level(x: u64) -> usize {
        (x >> 48) as usize
    }
    pub(super) fn cells(x: u64) -> [usize; 4] {
        [36, 24, 12, 0].map(|b| (x >> b & 0xfff) as usize)
    }
}

impl Columns {
    /// The column grids along x, y and z. Each face's corners are read once for all three
    /// (the faces come in any order, so these are random reads: the costly part), giving
    /// its span word per axis.
    fn build(v: &[[f32; 3]], t: &[[u32; 3]], bb: &Bbox) -> Vec<Columns> {
        let finest = ((t.len() / 2).max(1) as f64).sqrt().ceil().min(2048.0) as usize;
        let mut res_of = vec![finest];
        while *res_of.last().unwrap_or(&1) > 1 {
            let r = res_of.last().copied().unwrap_or(1);
            res_of.push(r.div_ceil(2));
        }
        let frame = |axis: usize| {
            let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
            let origin = [f64::from(bb.min[u]), f64::from(bb.min[w])];
            let ext = [
                (f64::from(bb.max[u]) - origin[0]).max(f64::MIN_POSITIVE),
                (f64::from(bb.max[w]) - origin[1]).max(f64::MIN_POSITIVE),
            ];
            (origin, ext)
        };
        let frames = [0, 1, 2].map(frame);
        // Per face and axis: its level and its cell span there, packed in one word ([`span`]).
        let spans: Vec<[u64; 3]> = t
            .par_iter()
            .map(|f| {
                let q = f.map(|i| v[i as usize]);
                let range = |a: usize| {
                    q.iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(mn, mx), p| {
                            (mn.min(f64::from(p[a])), mx.max(f64::from(p[a])))
                        })
                };
                let r = [range(0), range(1), range(2)];
                [0, 1, 2].map(|axis| {
                    let (origin, ext) = frames[axis];
                    let (ru, rw) = (r[(axis + 1) % 3], r[(axis + 2) % 3]);
                    for (l, &res) in res_of.iter().enumerate() {
                        let c = |x: f64, k: usize| {
                            ((x - origin[k]) / ext[k] * res as f64)
                                .floor()
                                .clamp(0.0, (res - 1) as f64) as usize
                        };
                        let s = [c(ru.0, 0), c(ru.1, 0), c(rw.0, 1), c(rw.1, 1)];
                        if (s[1] - s[0] + 1) * (s[3] - s[2] + 1) <= LEVEL_CELLS || res == 1 {
                            return span::pack(l, s);
                        }
                    }
                    span::pack(res_of.len() - 1, [0; 4])
                })
            })
            .collect();
        (0..3)
            .into_par_iter()
            .map(|axis| {
                let (origin, ext) = frames[axis];
                Columns::new(axis, origin, ext, &res_of, &spans)
            })
            .collect()
    }

    /// The grid along `axis` from every face's span words.
    fn new(
        axis: usize,
        origin: [f64; 2],
        ext: [f64; 2],
        res_of: &[usize],
        spans: &[[u64; 3]],
    ) -> Columns {
        // The faces grouped by level in one counting pass (`by_level[of[l]..of[l + 1]]` are
        // level `l`'s, in face order), so each level then walks only its own faces: every face
        // is read a bounded number of times, not once per level.
        let mut of = vec![0usize; res_of.len() + 1];
        for x in spans {
            of[span::level(x[axis]) + 1] += 1;
        }
        for l in 1..of.len() {
            of[l] += of[l - 1];
        }
        let mut by_level = vec![0u32; spans.len()];
        let mut next = of.clone();
        for (f, x) in spans.iter().enumerate() {
            let l = span::level(x[axis]);
            by_level[next[l]] = f as u32;
            next[l] += 1;
        }
        drop(next);
        let levels = res_of
            .par_iter()
            .enumerate()
            .map(|(l, &res)| {
                let mine = &by_level[of[l]..of[l + 1]];
                let mut start = vec![0u32; res * res + 1];
                for &f in mine {
                    let s = span::cells(spans[f as usize][axis]);
                    for iu in s[0]..=s[1] {
                        for iw in s[2]..=s[3] {
                            start[iu * res + iw + 1] += 1;
                        }
                    }
                }
                for i in 1..start.len() {
                    start[i] += start[i - 1];
                }
                let mut fill = start.clone();
                let mut faces = vec![0u32; start.last().copied().unwrap_or(0) as usize];
                for &f in mine {
                    let s = span::cells(spans[f as usize][axis]);
                    for iu in s[0]..=s[1] {
                        for iw in s[2]..=s[3] {
                            let c = iu * res + iw;
                            faces[fill[c] as usize] = f;
                            fill[c] += 1;
                        }
                    }
                }
                Level { res, start, faces }
            })
            .collect();
        Columns {
            axis,
            origin,
            ext,
            levels,
        }
    }

    /// The shells (other than `own`) that the ray from `p` along `+axis` crosses an odd
    /// number of times, sorted.
    fn odd_shells(
        &self,
        v: &[[f32; 3]],
        t: &[[u32; 3]],
        shell_of: &[u32],
        want: &dyn Fn(u32) -> bool,
        p: [f64; 3],
        nudge: [f64; 2],
    ) -> Vec<u32> {
        let axis = self.axis;
        let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
        let (pu, pw) = (p[u] + nudge[0], p[w] + nudge[1]);
        let mut hits: Vec<u32> = Vec::new();
        for lv in &self.levels {
            // Faces are filed clamped to the grid, and `crosses` checks the real extent: a
            // ray on the grid's edge (or outside it) looks at the nearest column.
            let cell = |x: f64, k: usize| {
                ((x - self.origin[k]) / self.ext[k] * lv.res as f64)
                    .floor()
                    .clamp(0.0, (lv.res - 1) as f64) as usize
            };
            let c = cell(pu, 0) * lv.res + cell(pw, 1);
            hits.extend(
                lv.faces[lv.start[c] as usize..lv.start[c + 1] as usize]
                    .iter()
                    .filter(|&&f| want(shell_of[f as usize]))
                    .filter(|&&f| crosses(v, t[f as usize], axis, p, pu, pw))
                    .map(|&f| shell_of[f as usize]),
            );
        }
        hits.sort_unstable();
        let mut odd = Vec::new();
        let mut i = 0;
        while i < hits.len() {
            let mut j = i + 1;
            while j < hits.len() && hits[j] == hits[i] {
                j += 1;
            }
            if (j - i) % 2 == 1 {
                odd.push(hits[i]);
            }
            i = j;
        }
        odd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_cube() {
        let g = crate::generate::sphere([0.0; 3], 1.0, 500);
        let faces: Vec<u32> = (0..g.triangles.len() as u32).collect();
        assert!(inside(
            &g.vertices,
            &g.triangles,
            &faces,
            [0.1, 0.2, 0.3],
            g.bbox()
        ));
        assert!(!inside(
            &g.vertices,
            &g.triangles,
            &faces,
            [1.1, 0.2, 0.3],
            g.bbox()
        ));
        assert!(g.signed_volume() > 4.0 && g.signed_volume() < 4.2);
    }
}
