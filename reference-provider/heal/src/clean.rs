//! Drop degenerate facets (a repeated vertex, zero area up to rounding, or flat within the
//! distance the weld moved corners by) and duplicate facets (the same three vertices as an
//! earlier facet, in either winding). Order of the kept facets is preserved.

use rayon::prelude::*;

use crate::holes::{cross, dot, sub};
use crate::keys::{self, hi, lo};

/// A facet is degenerate when its doubled area is at most this fraction of its longest edge
/// squared (i.e. its height is below ~1e-10 of its longest edge: zero up to rounding).
const ZERO_AREA: f64 = 1e-10;

/// A facet is also degenerate when its height is within this many units in the last place
/// of its coordinates (each axis at its own magnitude: see [`flat_at`]): a corner that lies
/// on the opposite edge, written as `f32`, is off it by up to about one unit (a T-junction's
/// sliver in a CAD export), which is far above [`ZERO_AREA`] when the coordinates are large
/// against the facet.
const ROUNDING_ULPS: f64 = 4.0;

/// Is the triangle `a b c` degenerate (repeated index, or zero area up to rounding)?
pub(crate) fn degenerate(v: &[[f32; 3]], t: [u32; 3]) -> bool {
    flat(v, t, 0.0)
}

/// Does the triangle use one vertex twice (a line or a point, not a facet)?
pub(crate) fn repeats_a_vertex(t: [u32; 3]) -> bool {
    t[0] == t[1] || t[1] == t[2] || t[0] == t[2]
}

/// Is the triangle `a b c` degenerate or flat within `snap` (see [`flat_at`])?
pub(crate) fn flat(v: &[[f32; 3]], t: [u32; 3], snap: f64) -> bool {
    if repeats_a_vertex(t) {
        return true;
    }
    flat_at(t.map(|i| v[i as usize]), snap)
}

/// Is the triangle with these corners of zero area (relative to its longest edge, or up to
/// the rounding of its coordinates)?
pub(crate) fn degenerate_at(p: [[f32; 3]; 3]) -> bool {
    flat_at(p, 0.0)
}

/// Is the triangle with these corners flat: its height over its longest edge zero up to
/// rounding (of each coordinate at its own magnitude, weighed along the height's direction:
/// [`rounding_across`]), or at most `snap` (the distance the weld moved corners by) where
/// that is below a quarter of its shortest edge? The second rule finds the slivers of
/// T-junctions whose corners the weld moved, and never a needle: a needle's height is about
/// its short edge.
pub(crate) fn flat_at(p: [[f32; 3]; 3], snap: f64) -> bool {
    let q = widen(p);
    let [e0, e1, e2] = edges(&q);
    let lengths = [dot(e0, e0), dot(e1, e1), dot(e2, e2)];
    let longest = lengths[0].max(lengths[1]).max(lengths[2]);
    // Nearly every facet is far from flat, which squared quantities show without a root or a
    // division: the doubled area's square against each bound of [`flat_exact`] squared,
    // times the longest edge's square, with a margin far above their rounding (the rounding
    // across the height is at most the largest axis's). A facet near a bound, or with a NaN
    // or an infinity, takes the exact test.
    let cr = cross(e0, e1);
    let far = q.iter().flatten().fold(0.0f64, |m, &x| m.max(x.abs()));
    let shortest2 = lengths[0].min(lengths[1]).min(lengths[2]);
    let bound2 = (ZERO_AREA * ZERO_AREA * longest)
        .max(rounding(far).powi(2))
        .max((snap * snap).min(shortest2 / 16.0));
    if dot(cr, cr) > 1.0001 * bound2 * longest {
        return false;
    }
    flat_exact(p, snap)
}

/// [`flat_at`] without its screen: the rule as stated there, with roots and divisions.
fn flat_exact(p: [[f32; 3]; 3], snap: f64) -> bool {
    let p = widen(p);
    let [e0, e1, e2] = edges(&p);
    let cr = cross(e0, e1);
    let lengths = [dot(e0, e0), dot(e1, e1), dot(e2, e2)];
    let longest = lengths[0].max(lengths[1]).max(lengths[2]);
    let area2 = dot(cr, cr).sqrt();
    if area2 <= ZERO_AREA * longest {
        return true;
    }
    let height = area2 / longest.sqrt();
    let shortest = lengths[0].min(lengths[1]).min(lengths[2]).sqrt();
    let base = if longest == lengths[0] {
        e0
    } else if longest == lengths[1] {
        e1
    } else {
        e2
    };
    height <= rounding_across(&p, cr, base) || height <= snap.min(shortest / 4.0)
}

/// The corners in `f64`, written out: `array::map` here is left as a call whose result
/// goes through the stack (with it, [`flat_at`] took 6.8 % of a 4M repair's samples; 4.8 %
/// without).
#[inline]
fn widen(p: [[f32; 3]; 3]) -> [[f64; 3]; 3] {
    let w = |a: [f32; 3]| [f64::from(a[0]), f64::from(a[1]), f64::from(a[2])];
    [w(p[0]), w(p[1]), w(p[2])]
}

/// The edges `p1 − p0`, `p2 − p0` and `p2 − p1` of a facet.
fn edges(p: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    [sub(p[1], p[0]), sub(p[2], p[0]), sub(p[2], p[1])]
}

/// The rounding of the corners `p` along a facet's height over its edge `d` (`n` is the
/// facet's normal): each coordinate is rounded at its own magnitude ([`rounding`] of the
/// largest along that axis), and the height's direction, `n × d`, weighs the axes. A facet far
/// out along one axis is rounded coarsely along that axis only: a thin facet standing across
/// another axis is not flat for it.
fn rounding_across(p: &[[f64; 3]; 3], n: [f64; 3], d: [f64; 3]) -> f64 {
    let u = cross(n, d);
    let len = dot(u, u).sqrt();
    let r = [0, 1, 2].map(|a| rounding(p[0][a].abs().max(p[1][a].abs()).max(p[2][a].abs())));
    if !(len > 0.0 && len.is_finite()) {
        return r[0].max(r[1]).max(r[2]);
    }
    let w = [0, 1, 2].map(|a| u[a] / len * r[a]);
    (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt()
}

/// How far apart two `f32` numbers of magnitude up to `largest` can be and still be the
/// same value up to rounding: [`ROUNDING_ULPS`] units in the last place.
pub(crate) fn rounding(largest: f64) -> f64 {
    ROUNDING_ULPS * largest * f64::from(f32::EPSILON)
}

/// What [`clean`] removed.
pub(crate) struct Cleaned {
    pub degenerate: u64,
    /// Of `degenerate`, the facets with a repeated vertex (always removed).
    pub repeated: u64,
    pub duplicate: u64,
    /// The vertices of the removed facets.
    pub removed_vertices: Vec<u32>,
    /// The kept facets (as kept) of which a copy was removed: a copy of a facet, or one of
    /// the two sides of a face that two solids share ([`internal_faces`] tells them apart once
    /// the edges are paired).
    pub copied: Vec<[u32; 3]>,
}

/// `snap` is the largest distance the weld moved a corner by (see [`flat_at`]).
pub(crate) fn clean(
    vertices: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    remove_degenerate: bool,
    remove_duplicates: bool,
    snap: f64,
) -> Cleaned {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let n = triangles.len();
    // Counted where found: such facets are few, so the counter is rarely touched.
    let repeated = AtomicU64::new(0);
    let kept = |t: [u32; 3]| {
        if repeats_a_vertex(t) {
            // Repeated indices are always dropped: they break every later stage.
            repeated.fetch_add(1, Relaxed);
            false
        } else {
            !(remove_degenerate && flat(vertices, t, snap))
        }
    };
    let sorted_triple = |t: [u32; 3]| {
        let mut s = t;
        s.sort_unstable();
        s
    };
    // One pass over the facets gives both whether each is kept and its duplicate key (hash of
    // the sorted triple). Every facet gets a key, so the keys are written straight into place;
    // degenerate facets are skipped inside the runs instead (the same survivors: the first
    // kept facet of each equal triple).
    let (mut keep, hashes): (Vec<bool>, Vec<u32>) = if remove_duplicates {
        triangles
            .par_iter()
            .map(|&t| {
                let s = sorted_triple(t);
                (kept(t), keys::hash3(s[0], s[1], s[2]))
            })
            .unzip()
    } else {
        (triangles.par_iter().map(|&t| kept(t)).collect(), Vec::new())
    };
    let degenerate_removed = keep.iter().filter(|k| !**k).count() as u64;
    let mut duplicate_removed = 0;
    let mut copied = Vec::new();
    if remove_duplicates {
        // `hash << 32 | facet`, sorted.
        let ks = keys::sort_hashes(&hashes);
        drop(hashes);
        let chunks = keys::run_chunks(&ks, keys::parts_for(ks.len()));
        // Per chunk: the duplicates, and the kept facets of which they are copies.
        let found: Vec<(Vec<u32>, Vec<[u32; 3]>)> = chunks
            .par_iter()
            .map(|r| {
                let ks = &ks[r.clone()];
                let tris = &*triangles;
                let mut out = Vec::new();
                let mut opp = Vec::new();
                let mut i = 0;
                while i < ks.len() {
                    let mut j = i + 1;
                    while j < ks.len() && hi(ks[j]) == hi(ks[i]) {
                        j += 1;
                    }
                    if j - i > 1 {
                        // Indices ascend within a run: keep the first of each equal triple
                        // among the facets not removed as degenerate.
                        let mut run: Vec<([u32; 3], u32)> = ks[i..j]
                            .iter()
                            .filter(|&&k| keep[lo(k) as usize])
                            .map(|&k| (sorted_triple(tris[lo(k) as usize]), lo(k)))
                            .collect();
                        run.sort_unstable();
                        let mut first = 0;
                        for x in 1..=run.len() {
                            if x < run.len() && run[x].0 == run[first].0 {
                                out.push(run[x].1);
                                continue;
                            }
                            if x > first + 1 {
                                opp.push(tris[run[first].1 as usize]);
                            }
                            first = x;
                        }
                    }
                    i = j;
                }
                (out, opp)
            })
            .collect();
        for (dups, opp) in found {
            duplicate_removed += dups.len() as u64;
            for d in dups {
                keep[d as usize] = false;
            }
            copied.extend(opp);
        }
    }
    let mut removed_vertices = Vec::new();
    if degenerate_removed + duplicate_removed > 0 {
        removed_vertices = keys::par_blocks(triangles.len(), |r, out| {
            for f in r.filter(|&f| !keep[f]) {
                out.extend_from_slice(&triangles[f]);
            }
        });
        // In place, in order: one pass over the facets, no second buffer (a filtered parallel
        // collect gathers pieces in fresh buffers and then copies them into a third).
        let mut keeps = keep.iter();
        triangles.retain(|_| keeps.next().is_some_and(|&k| k));
    }
    debug_assert!(triangles.len() <= n);
    Cleaned {
        degenerate: degenerate_removed,
        repeated: repeated.into_inner(),
        duplicate: duplicate_removed,
        removed_vertices,
        copied,
    }
}

/// The facets to remove where two solids share a face: of the `copied` facets (kept, a copy
/// removed as a duplicate), those with an edge that had at least four facets with the removed
/// copies counted. A copy of a surface facet (either way round) leaves two facets on each
/// edge, three with the copy; the two sides of a shared face leave, on the face's rim, the two
/// solids' side facets as well, and inside the face each other's copies. Both sides go (the
/// removed copy already has), which joins the two solids into one; a surface facet caught by
/// mistake (a copied facet beside an edge of four) leaves a hole of its own shape, which the
/// holes stage fills with it again. Ascending facet indices.
pub(crate) fn internal_faces(triangles: &[[u32; 3]], copied: &[[u32; 3]]) -> Vec<u32> {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    let edge = |a: u32, b: u32| (a.min(b), a.max(b));
    let edges_of = |t: [u32; 3]| [edge(t[0], t[1]), edge(t[1], t[2]), edge(t[2], t[0])];
    let mut slot: HashMap<(u32, u32), usize> = HashMap::new();
    for &t in copied {
        for e in edges_of(t) {
            let n = slot.len();
            slot.entry(e).or_insert(n);
        }
    }
    // Each copied facet's removed copy counts once on each of its edges.
    let count: Vec<AtomicU32> = (0..slot.len()).map(|_| AtomicU32::new(0)).collect();
    for &t in copied {
        for e in edges_of(t) {
            count[slot[&e]].fetch_add(1, Relaxed);
        }
    }
    let sorted = |t: [u32; 3]| {
        let mut s = t;
        s.sort_unstable();
        s
    };
    let wanted: std::collections::HashSet<[u32; 3]> = copied.iter().map(|&t| sorted(t)).collect();
    let candidates: Vec<u32> = triangles
        .par_iter()
        .enumerate()
        .filter_map(|(f, &t)| {
            for e in edges_of(t) {
                if let Some(&i) = slot.get(&e) {
                    count[i].fetch_add(1, Relaxed);
                }
            }
            wanted.contains(&sorted(t)).then_some(f as u32)
        })
        .collect();
    candidates
        .into_iter()
        .filter(|&f| {
            edges_of(triangles[f as usize])
                .iter()
                .any(|e| count[slot[e]].load(Relaxed) >= 4)
        })
        .collect()
}

/// [`clean`] after a change confined to the facets that use a `hot` vertex (the others were
/// clean and are unchanged, so only those facets can have become degenerate, and every group
/// of duplicates holds one of them — a duplicate has the same vertices): only the facets
/// using a hot vertex are checked, with the same rules and the same choice of survivor (the
/// first of equal facets). Returns the facets to remove (ascending), and how many of them
/// were degenerate (of which how many repeat a vertex) and how many duplicates.
pub(crate) fn removals_near(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    hot: &[bool],
    remove_degenerate: bool,
    remove_duplicates: bool,
) -> (Vec<u32>, [u64; 2], u64) {
    let near: Vec<u32> = keys::par_blocks(triangles.len(), |r, out| {
        out.extend(
            r.filter(|&f| triangles[f].iter().any(|&v| hot[v as usize]))
                .map(|f| f as u32),
        );
    });
    let bad = |t: [u32; 3]| repeats_a_vertex(t) || (remove_degenerate && degenerate(vertices, t));
    let (mut gone, live): (Vec<u32>, Vec<u32>) =
        near.par_iter().partition(|&&f| bad(triangles[f as usize]));
    let repeated = gone
        .iter()
        .filter(|&&f| repeats_a_vertex(triangles[f as usize]))
        .count() as u64;
    let degenerate_removed = [gone.len() as u64, repeated];
    let mut duplicate_removed = 0;
    if remove_duplicates {
        let mut live: Vec<([u32; 3], u32)> = live
            .into_par_iter()
            .map(|f| {
                let mut s = triangles[f as usize];
                s.sort_unstable();
                (s, f)
            })
            .collect();
        live.par_sort_unstable();
        for w in live.windows(2) {
            if w[0].0 == w[1].0 {
                gone.push(w[1].1);
                duplicate_removed += 1;
            }
        }
    }
    gone.par_sort_unstable();
    (gone, degenerate_removed, duplicate_removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slivers_are_flat_up_to_rounding_or_the_weld_distance_and_needles_never() {
        // A corner halfway along the opposite edge, far from the origin: one unit in the last
        // place off the line after rounding to f32, far above 1e-10 of the edge.
        let a = [1000.0f32, 1000.0, 1000.0];
        let b = [1000.1f32, 1000.3, 1000.7];
        let m = [0, 1, 2].map(|k| ((f64::from(a[k]) + f64::from(b[k])) / 2.0) as f32);
        assert!(degenerate_at([a, m, b]));
        // A real thin facet there is not.
        let c = [m[0], m[1] + 0.01, m[2]];
        assert!(!degenerate_at([a, c, b]));
        // A sliver 1e-4 off its edge is flat when the weld merged over 1e-3 ...
        let s = [[0.0f32, 0.0, 0.0], [0.5, 1e-4, 0.0], [1.0, 0.0, 0.0]];
        assert!(!flat_at(s, 0.0));
        assert!(flat_at(s, 1e-3));
        // ... but a needle whose short edge is near the weld distance never is.
        let needle = [[0.0f32, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 2e-3, 0.0]];
        assert!(!flat_at(needle, 1e-3));
        assert!(!flat_at(needle, 1.0));
    }

    #[test]
    fn the_screen_never_calls_flat_what_the_exact_rule_does_not() {
        // Facets built round each bound of the rule: a corner over a point of an edge at a
        // height a factor round the zero-area bound, the rounding of the largest coordinate,
        // or the weld distance (with short edges, a quarter of the shortest), at magnitudes
        // from 1e-3 to 1e6 and along every axis. `flat_at` (with its screen) and
        // `flat_exact` must agree on every one.
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut flat, mut kept) = (0, 0);
        for k in 0..300_000 {
            let scale = 10f64.powf(next() * 9.0 - 3.0);
            let origin: [f64; 3] = std::array::from_fn(|_| (next() - 0.5) * scale * 4.0);
            let len = scale * 10f64.powf(-next() * 6.0);
            let dir = {
                let d: [f64; 3] = std::array::from_fn(|_| next() - 0.5);
                let n = dot(d, d).sqrt();
                d.map(|x| x / n)
            };
            let up = {
                let r: [f64; 3] = std::array::from_fn(|_| next() - 0.5);
                let u = cross(dir, r);
                let n = dot(u, u).sqrt();
                u.map(|x| x / n)
            };
            let far = origin.iter().fold(0.0f64, |m, x| m.max(x.abs())) + len;
            let snap = [0.0, len * 1e-3, len][k % 3];
            let bound = match k % 4 {
                0 => ZERO_AREA * len,
                1 => rounding(far),
                2 => snap,
                _ => snap.min(len / 8.0),
            };
            let height = bound * (0.9 + 0.2 * next());
            let t = next();
            let a = origin;
            let b: [f64; 3] = std::array::from_fn(|i| origin[i] + dir[i] * len);
            let m: [f64; 3] =
                std::array::from_fn(|i| origin[i] + dir[i] * len * t + up[i] * height);
            let p = [a, m, b].map(|c| c.map(|x| x as f32));
            let exact = flat_exact(p, snap);
            assert_eq!(flat_at(p, snap), exact, "{p:?} snap {snap}");
            if exact {
                flat += 1;
            } else {
                kept += 1;
            }
        }
        // Both sides of the bounds were met often.
        assert!(flat > 30_000 && kept > 30_000, "{flat} flat, {kept} not");
    }
}
