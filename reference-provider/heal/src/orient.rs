//! Winding and orientation.
//!
//! * [`make_consistent`]: a breadth-first walk over paired edges gives every facet of a shell
//!   the same winding as its neighbours (a facet whose shared edge runs the same direction as
//!   its neighbour's is flipped). The walk also numbers the shells. Within each shell the
//!   majority winding wins, so a 10 % sprinkle of flipped facets costs 10 % of flips.
//! * [`orient_outward`]: on the closed shells (after hole filling) the signed volume says which
//!   way a shell faces. A shell nested inside an odd number of other shells (found by ray
//!   parity along three axes, majority vote, at every one of a few sample vertices, the
//!   shell's extremes among them) is a cavity and must face inward (negative volume); every
//!   other shell must face outward. Shells facing the wrong way are flipped as a whole.

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
    let odd = ray_parities(v, t, faces, p, bb);
    odd.iter().filter(|&&o| o).count() >= 2
}

/// Whether the rays of [`inside`] from `p` along +x, +y and +z cross `faces` an odd number of
/// times. The three rays are cast in one pass over the facets (each facet's corners read
/// once, not once per ray), in parallel over blocks of a large shell: the crossings are
/// counted, so the result is the same in any order.
fn ray_parities(
    v: &[[f32; 3]],
    t: &[[u32; 3]],
    faces: &[u32],
    p: [f32; 3],
    bb: Option<Bbox>,
) -> [bool; 3] {
    let scale = bb.map_or(1.0, |b| b.diagonal()).max(f64::MIN_POSITIVE);
    let p = p.map(f64::from);
    let nudge = [scale * 1.234_567_9e-7, scale * 7.654_321e-8];
    let starts = [0, 1, 2].map(|axis| {
        let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
        (p[u] + nudge[0], p[w] + nudge[1])
    });
    let count = |faces: &[u32]| {
        let mut n = [0usize; 3];
        for &f in faces {
            for (axis, &(pu, pw)) in starts.iter().enumerate() {
                n[axis] += usize::from(crosses(v, t[f as usize], axis, p, pu, pw));
            }
        }
        n
    };
    const BLOCK: usize = 1 << 14;
    let n = if faces.len() <= BLOCK {
        count(faces)
    } else {
        faces
            .par_chunks(BLOCK)
            .map(count)
            .reduce(|| [0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]])
    };
    n.map(|c| c % 2 == 1)
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
    // A shell's sample vertices: two of its facets' (the first and the middle one), and its
    // extreme vertex at each end of each axis. A shell that overlaps another without lying
    // inside it (a letter sunk into a plate, sticking out; parts of an assembly exported
    // overlapping) has some vertex outside it, most likely an extreme one: with only the two
    // facets' vertices, both inside the plate, a turned plate's letters were taken for
    // cavities and turned inward.
    let samples = |s: usize| -> Vec<[f32; 3]> {
        let fs = shell_faces(s);
        let mut out: Vec<[f32; 3]> = [0, fs.len() / 2]
            .iter()
            .filter_map(|&i| fs.get(i))
            .map(|&f| v[t[f as usize][0] as usize])
            .collect();
        let Some(&first) = out.first() else {
            return out;
        };
        let mut ext = [first; 6];
        for &f in fs {
            for &i in &t[f as usize] {
                let p = v[i as usize];
                for a in 0..3 {
                    if p[a] < ext[2 * a][a] {
                        ext[2 * a] = p;
                    }
                    if p[a] > ext[2 * a + 1][a] {
                        ext[2 * a + 1] = p;
                    }
                }
            }
        }
        for p in ext {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
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
                // The samples only for a shell that some box holds (a model's outer shell,
                // nearly all of its facets, needs none).
                let mut ps = None;
                (0..shells)
                    .filter(|&o| nested(s, o))
                    .filter(|&o| {
                        ps.get_or_insert_with(|| samples(s))
                            .iter()
                            .all(|&p| inside(v, t, shell_faces(o), p, info[o].1))
                    })
                    .count() as u32
            })
            .collect();
    }
    // Only a shell whose box strictly contains another shell's box can contain a shell: only
    // those shells' facets are filed, in shell order (so each cell lists its facets shell by
    // shell), and a shell casts rays only when some of them hold its box. Shells side by
    // side, or boxes that overlap without nesting (a build plate of parts in rows, a fan of
    // slivers on one axis), then cost nothing here; and a ray looks only at the facets of the
    // shells that hold its own shell's box, not at every facet in its column (the hollow
    // parts of a row, each with a cavity).
    let (container, holders) = nest_candidates(info);
    let filed: Vec<u32> = (0..shells)
        .filter(|&o| container[o])
        .flat_map(|o| shell_faces(o).iter().copied())
        .collect();
    let Some(model) = bbox_of(
        info.iter()
            .zip(&container)
            .filter(|(_, c)| **c)
            .filter_map(|(i, _)| i.1)
            .flat_map(|b| [b.min, b.max]),
    ) else {
        return vec![0; shells];
    };
    let scale = model.diagonal().max(f64::MIN_POSITIVE);
    let nudge = [scale * 1.234_567_9e-7, scale * 7.654_321e-8];
    let cols = Columns::build(v, t, &filed, &model);
    (0..shells)
        .into_par_iter()
        .map(|s| {
            let Some(bs) = info[s].1 else {
                return 0;
            };
            // The shells whose box strictly contains this one's (`None`: too many to list, or
            // not found within the query's bound; then every facet in the column is checked
            // against the boxes); at the second sample, the shells the first one was inside.
            let mut among: Option<Vec<u32>> = holders.above(nest_key(&bs).map(|x| -x), false);
            let mut inside_all = Vec::new();
            for p in samples(s) {
                if among.as_ref().is_some_and(Vec::is_empty) {
                    break;
                }
                let p = p.map(f64::from);
                let nested_s = |o: u32| nested(s, o as usize);
                let these = match &among {
                    Some(list) => Among::Shells(list),
                    None => Among::Nested(&nested_s),
                };
                // Inside by majority: odd along at least two of the three axes. The ray along
                // z is cast only for the shells that x and y disagree on.
                let ox = cols[0].odd_shells(v, t, shell_of, these, p, nudge);
                let oy = cols[1].odd_shells(v, t, shell_of, these, p, nudge);
                let (mut maj, split) = agree(&ox, &oy);
                if !split.is_empty() {
                    let these = Among::Shells(&split);
                    maj.extend(cols[2].odd_shells(v, t, shell_of, these, p, nudge));
                    maj.sort_unstable();
                }
                inside_all = maj.clone();
                among = Some(maj);
            }
            inside_all
                .into_iter()
                .filter(|&o| nested(s, o as usize))
                .count() as u32
        })
        .collect()
}

/// Which shells a ray counts crossings for.
#[derive(Clone, Copy)]
enum Among<'a> {
    /// These (sorted).
    Shells(&'a [u32]),
    /// Those the test accepts.
    Nested(&'a dyn Fn(u32) -> bool),
}

/// A box's key for [`Dominance`]: `[min, -max]`. A box strictly contains another when the
/// other's key is above its own in all six coordinates.
fn nest_key(b: &Bbox) -> [f32; 6] {
    [
        b.min[0], b.min[1], b.min[2], -b.max[0], -b.max[1], -b.max[2],
    ]
}

/// Per shell: may its box strictly contain another shell's box (the only shells that can
/// contain one)? And those shells as a [`Dominance`] tree on their negated keys, which lists
/// the ones that hold a given box. Both are dominance queries on [`nest_key`]s. A query that
/// visits more than [`DOMINANCE_VISITS`] nodes stops and answers "maybe", which costs only
/// time (the rays then decide), never a wrong depth.
fn nest_candidates(info: &[(f64, Option<Bbox>)]) -> (Vec<bool>, Dominance) {
    let keyed = |sign: f32, of: &dyn Fn(usize) -> bool| {
        info.iter()
            .enumerate()
            .filter(|&(s, _)| of(s))
            .filter_map(|(s, i)| i.1.map(|b| (nest_key(&b).map(|x| sign * x), s as u32)))
            .collect::<Vec<_>>()
    };
    let above = Dominance::new(keyed(1.0, &|_| true));
    let container: Vec<bool> = info
        .par_iter()
        .map(|i| {
            i.1.is_some_and(|b| {
                above
                    .above(nest_key(&b), true)
                    .is_none_or(|found| !found.is_empty())
            })
        })
        .collect();
    let holders = Dominance::new(keyed(-1.0, &|s| container[s]));
    (container, holders)
}

/// Most nodes one [`Dominance::above`] query visits before it gives up.
const DOMINANCE_VISITS: usize = 1024;

/// Most points one [`Dominance::above`] query lists before it gives up.
const DOMINANCE_LIST: usize = 64;

/// Points in six coordinates as an implicit k-d tree: every subtree is a slice of `pts`, split
/// at its middle element on coordinate `depth % 6`, and `up` holds, at that middle index, the
/// largest value of each coordinate over the subtree.
struct Dominance {
    pts: Vec<([f32; 6], u32)>,
    up: Vec<[f32; 6]>,
}

impl Dominance {
    fn new(mut pts: Vec<([f32; 6], u32)>) -> Dominance {
        fn build(pts: &mut [([f32; 6], u32)], up: &mut [[f32; 6]], depth: usize) -> [f32; 6] {
            if pts.is_empty() {
                return [f32::NEG_INFINITY; 6];
            }
            let mid = pts.len() / 2;
            let d = depth % 6;
            pts.select_nth_unstable_by(mid, |a, b| a.0[d].total_cmp(&b.0[d]));
            let (left, rest) = pts.split_at_mut(mid);
            let (up_left, up_rest) = up.split_at_mut(mid);
            let a = build(left, up_left, depth + 1);
            let b = build(&mut rest[1..], &mut up_rest[1..], depth + 1);
            let mut m = rest[0].0;
            for k in 0..6 {
                m[k] = m[k].max(a[k]).max(b[k]);
            }
            up_rest[0] = m;
            m
        }
        let mut up = vec![[f32::NEG_INFINITY; 6]; pts.len()];
        build(&mut pts, &mut up, 0);
        Dominance { pts, up }
    }

    /// The points above `q` in all six coordinates, sorted (with `first`: only the first one
    /// found). `None` when that was not settled within [`DOMINANCE_VISITS`] nodes or there
    /// are more than [`DOMINANCE_LIST`].
    fn above(&self, q: [f32; 6], first: bool) -> Option<Vec<u32>> {
        let mut found = Vec::new();
        let mut stack = vec![(0, self.pts.len())];
        let mut visits = 0;
        while let Some((lo, hi)) = stack.pop() {
            if lo >= hi {
                continue;
            }
            let mid = lo + (hi - lo) / 2;
            if (0..6).any(|k| self.up[mid][k] <= q[k]) {
                continue;
            }
            visits += 1;
            if visits > DOMINANCE_VISITS {
                return None;
            }
            if (0..6).all(|k| self.pts[mid].0[k] > q[k]) {
                found.push(self.pts[mid].1);
                if first {
                    return Some(found);
                }
                if found.len() > DOMINANCE_LIST {
                    return None;
                }
            }
            stack.push((lo, mid));
            stack.push((mid + 1, hi));
        }
        found.sort_unstable();
        Some(found)
    }
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
    fn build(v: &[[f32; 3]], t: &[[u32; 3]], filed: &[u32], bb: &Bbox) -> Vec<Columns> {
        let finest = ((filed.len() / 2).max(1) as f64).sqrt().ceil().min(2048.0) as usize;
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
        let spans: Vec<[u64; 3]> = filed
            .par_iter()
            .map(|&f| {
                let q = t[f as usize].map(|i| v[i as usize]);
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
                Columns::new(axis, origin, ext, &res_of, filed, &spans)
            })
            .collect()
    }

    /// The grid along `axis` from the span words of the faces `filed` (`spans[i]` is
    /// `filed[i]`'s).
    fn new(
        axis: usize,
        origin: [f64; 2],
        ext: [f64; 2],
        res_of: &[usize],
        filed: &[u32],
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
                            faces[fill[c] as usize] = filed[f as usize];
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
        among: Among<'_>,
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
            let faces = &lv.faces[lv.start[c] as usize..lv.start[c + 1] as usize];
            let shell = |f: &u32| shell_of[*f as usize];
            let mut count = |fs: &mut dyn Iterator<Item = &u32>| {
                hits.extend(
                    fs.filter(|&&f| crosses(v, t[f as usize], axis, p, pu, pw))
                        .map(shell),
                );
            };
            match among {
                // A few shells among many facets: each shell's run of the cell (which lists
                // its facets shell by shell) by binary search.
                Among::Shells(list)
                    if list.len() * 2 * ((faces.len() | 1).ilog2() as usize + 1) < faces.len() =>
                {
                    for &o in list {
                        let lo = faces.partition_point(|f| shell(f) < o);
                        let hi = lo + faces[lo..].partition_point(|f| shell(f) == o);
                        count(&mut faces[lo..hi].iter());
                    }
                }
                Among::Shells(list) => count(
                    &mut faces
                        .iter()
                        .filter(|f| list.binary_search(&shell(f)).is_ok()),
                ),
                Among::Nested(want) => count(&mut faces.iter().filter(|f| want(shell(f)))),
            }
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
    fn nest_candidates_match_every_pair() {
        // Boxes on a coarse lattice of coordinates (many ties, which must not count as strict
        // containment), some nested, some side by side, some the same box twice.
        let mut next = crate::keys::test_uniform(0x9e37_79b9_7f4a_7c15u64);
        for (n, grid) in [(50, 8.0), (400, 12.0), (3000, 40.0)] {
            let mut info: Vec<(f64, Option<Bbox>)> = Vec::new();
            for k in 0..n {
                if k % 97 == 5 {
                    info.push((0.0, None));
                    continue;
                }
                let mut b = Bbox {
                    min: [0.0; 3],
                    max: [0.0; 3],
                };
                // Half of them inside an earlier box, each side moved in by 1 or 2, or by 0
                // (a tie) one time in ten.
                let within = (k > 0 && next() < 0.5)
                    .then(|| info[(next() * k as f64) as usize].1)
                    .flatten();
                let inset = |next: &mut dyn FnMut() -> f64| {
                    if next() < 0.1 {
                        0.0
                    } else {
                        1.0 + (next() * 2.0).floor() as f32
                    }
                };
                for a in 0..3 {
                    let (x, y) = match within {
                        Some(o) => (o.min[a] + inset(&mut next), o.max[a] - inset(&mut next)),
                        None => {
                            let x = (next() * grid).floor() as f32;
                            (x, x + 2.0 + (next() * grid).floor() as f32)
                        }
                    };
                    (b.min[a], b.max[a]) = (x.min(y), x.max(y));
                }
                info.push((0.0, Some(b)));
            }
            let (container, holders) = nest_candidates(&info);
            let nested = |s: usize, o: usize| matches!((info[s].1, info[o].1), (Some(bs), Some(bo)) if strictly_inside(&bs, &bo));
            let mut pairs = 0;
            for s in 0..n {
                let inside_of: Vec<u32> =
                    (0..n as u32).filter(|&o| nested(s, o as usize)).collect();
                let holds = (0..n).filter(|&o| nested(o, s)).count();
                pairs += inside_of.len();
                // A yes may be a guess (a query over its bound); a no never is.
                assert!(container[s] || holds == 0, "{n}: shell {s} holds {holds}");
                let listed = info[s]
                    .1
                    .and_then(|b| holders.above(nest_key(&b).map(|x| -x), false));
                if n <= 400 {
                    assert_eq!(container[s], holds > 0, "{n}: shell {s}");
                    let listable = info[s].1.is_some() && inside_of.len() <= DOMINANCE_LIST;
                    assert_eq!(listed.is_some(), listable, "{n}: shell {s}");
                }
                if let Some(listed) = listed {
                    assert_eq!(listed, inside_of, "{n}: shell {s}");
                }
            }
            assert!(pairs > n / 4, "{n}: only {pairs} nested pairs");
        }
    }

    /// A shell of more than one block of facets takes the parallel single pass: every ray's
    /// parity is that of a count over all facets one ray at a time, for points inside,
    /// outside and near the surface, and the majority says inside or outside.
    #[test]
    fn a_large_shell_gives_each_ray_the_parity_of_a_count_over_every_facet() {
        let g = crate::generate::sphere([0.5; 3], 1.0, 60_000);
        assert!(g.triangles.len() > 2 << 14, "{}", g.triangles.len());
        let faces: Vec<u32> = (0..g.triangles.len() as u32).collect();
        let bb = g.bbox();
        let one_ray_at_a_time = |p: [f32; 3]| {
            let scale = bb.map_or(1.0, |b| b.diagonal());
            let p = p.map(f64::from);
            let nudge = [scale * 1.234_567_9e-7, scale * 7.654_321e-8];
            [0, 1, 2].map(|axis| {
                let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
                let (pu, pw) = (p[u] + nudge[0], p[w] + nudge[1]);
                let crossed = |f: &&[u32; 3]| crosses(&g.vertices, **f, axis, p, pu, pw);
                g.triangles.iter().filter(crossed).count() % 2 == 1
            })
        };
        let mut next = crate::keys::test_uniform(7);
        let (mut ins, mut outs) = (0, 0);
        for _ in 0..300 {
            let p = [0, 1, 2].map(|_| (0.5 + 2.4 * (next() - 0.5)) as f32);
            let r = p.iter().map(|x| (x - 0.5).powi(2)).sum::<f32>().sqrt();
            let odd = ray_parities(&g.vertices, &g.triangles, &faces, p, bb);
            assert_eq!(odd, one_ray_at_a_time(p), "{p:?}");
            let got = inside(&g.vertices, &g.triangles, &faces, p, bb);
            if r < 0.99 {
                assert!(got, "{p:?} at {r}");
                ins += 1;
            } else if r > 1.01 {
                assert!(!got, "{p:?} at {r}");
                outs += 1;
            }
        }
        assert!(ins > 50 && outs > 50, "{ins} {outs}");
    }

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
