//! Drop degenerate facets (a repeated vertex, or zero area) and duplicate facets (the same three
//! vertices as an earlier facet, in either winding). Order of the kept facets is preserved.

use rayon::prelude::*;

use crate::keys::{self, hi, lo, pack};

/// A facet is degenerate when its doubled area is at most this fraction of its longest edge
/// squared (i.e. its height is below ~1e-10 of its longest edge: zero up to rounding).
const ZERO_AREA: f64 = 1e-10;

/// Is the triangle `a b c` degenerate (repeated index or zero area)?
pub(crate) fn degenerate(v: &[[f32; 3]], t: [u32; 3]) -> bool {
    if t[0] == t[1] || t[1] == t[2] || t[0] == t[2] {
        return true;
    }
    degenerate_at(t.map(|i| v[i as usize]))
}

/// Is the triangle with these corners of zero area (relative to its longest edge)?
pub(crate) fn degenerate_at(p: [[f32; 3]; 3]) -> bool {
    let p = p.map(|x| x.map(f64::from));
    let sub = |a: [f64; 3], b: [f64; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let (e0, e1, e2) = (sub(p[1], p[0]), sub(p[2], p[0]), sub(p[2], p[1]));
    let cr = [
        e0[1] * e1[2] - e0[2] * e1[1],
        e0[2] * e1[0] - e0[0] * e1[2],
        e0[0] * e1[1] - e0[1] * e1[0],
    ];
    let longest = dot(e0, e0).max(dot(e1, e1)).max(dot(e2, e2));
    dot(cr, cr).sqrt() <= ZERO_AREA * longest
}

/// Returns (degenerate removed, duplicates removed, the vertices of the removed facets).
pub(crate) fn clean(
    vertices: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    remove_degenerate: bool,
    remove_duplicates: bool,
) -> (u64, u64, Vec<u32>) {
    let n = triangles.len();
    let mut keep: Vec<bool> = if remove_degenerate {
        triangles
            .par_iter()
            .map(|&t| !degenerate(vertices, t))
            .collect()
    } else {
        // Repeated indices are always dropped: they break every later stage.
        triangles
            .par_iter()
            .map(|t| t[0] != t[1] && t[1] != t[2] && t[0] != t[2])
            .collect()
    };
    let degenerate_removed = keep.iter().filter(|k| !**k).count() as u64;
    let mut duplicate_removed = 0;
    if remove_duplicates {
        let sorted_triple = |t: [u32; 3]| {
            let mut s = t;
            s.sort_unstable();
            s
        };
        let mut ks: Vec<u64> = triangles
            .par_iter()
            .enumerate()
            .filter(|(i, _)| keep[*i])
            .map(|(i, &t)| {
                let s = sorted_triple(t);
                pack(keys::hash3(s[0], s[1], s[2]), i as u32)
            })
            .collect();
        keys::sort(&mut ks);
        let chunks = keys::run_chunks(&ks, keys::parts_for(ks.len()));
        let dups: Vec<u32> = chunks
            .par_iter()
            .flat_map_iter(|r| {
                let ks = &ks[r.clone()];
                let tris = &*triangles;
                let mut out = Vec::new();
                let mut i = 0;
                while i < ks.len() {
                    let mut j = i + 1;
                    while j < ks.len() && hi(ks[j]) == hi(ks[i]) {
                        j += 1;
                    }
                    if j - i > 1 {
                        // Indices ascend within a run: keep the first of each equal triple.
                        let mut run: Vec<([u32; 3], u32)> = ks[i..j]
                            .iter()
                            .map(|&k| (sorted_triple(tris[lo(k) as usize]), lo(k)))
                            .collect();
                        run.sort_unstable();
                        for w in run.windows(2) {
                            if w[0].0 == w[1].0 {
                                out.push(w[1].1);
                            }
                        }
                    }
                    i = j;
                }
                out.into_iter()
            })
            .collect();
        duplicate_removed = dups.len() as u64;
        for d in dups {
            keep[d as usize] = false;
        }
    }
    let mut removed_vertices = Vec::new();
    if degenerate_removed + duplicate_removed > 0 {
        removed_vertices = triangles
            .par_iter()
            .zip(keep.par_iter())
            .filter(|(_, k)| !**k)
            .flat_map_iter(|(t, _)| *t)
            .collect();
        let kept: Vec<[u32; 3]> = triangles
            .par_iter()
            .zip(keep.par_iter())
            .filter(|(_, k)| **k)
            .map(|(t, _)| *t)
            .collect();
        *triangles = kept;
    }
    debug_assert!(triangles.len() <= n);
    (degenerate_removed, duplicate_removed, removed_vertices)
}

/// [`clean`] after a change confined to the facets that use a `hot` vertex (the others were
/// clean and are unchanged, so only those facets can have become degenerate, and every group
/// of duplicates holds one of them — a duplicate has the same vertices): only the facets
/// using a hot vertex are checked, with the same rules and the same choice of survivor (the
/// first of equal facets). Returns the facets to remove (ascending), and how many of them
/// were degenerate and how many duplicates.
pub(crate) fn removals_near(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    hot: &[bool],
    remove_degenerate: bool,
    remove_duplicates: bool,
) -> (Vec<u32>, u64, u64) {
    let near: Vec<u32> = (0..triangles.len() as u32)
        .into_par_iter()
        .filter(|&f| triangles[f as usize].iter().any(|&v| hot[v as usize]))
        .collect();
    let bad = |t: [u32; 3]| {
        if remove_degenerate {
            degenerate(vertices, t)
        } else {
            t[0] == t[1] || t[1] == t[2] || t[0] == t[2]
        }
    };
    let (mut gone, live): (Vec<u32>, Vec<u32>) =
        near.par_iter().partition(|&&f| bad(triangles[f as usize]));
    let degenerate_removed = gone.len() as u64;
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
