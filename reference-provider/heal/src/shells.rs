//! Shell selection: drop tiny disconnected shells, apply the winding flips, compact the facet
//! list (order kept) and collect the boundary half-edges of the shells that remain.

use rayon::prelude::*;

use crate::orient::Winding;
use crate::topology::NONE;
use crate::{Bbox, RepairOptions};

pub(crate) struct Kept {
    /// Per old shell: new shell number, or `u32::MAX` when removed.
    pub new_id: Vec<u32>,
    pub kept_shells: u32,
    pub removed_shells: u64,
    pub removed_facets: u64,
    /// Shells under the size bound kept because they touch, cross or are a void in another.
    pub kept_touching: u64,
    /// The contact test ran out of its budget: every shell under the size bound was kept.
    pub touch_limited: bool,
    /// The share of the surface area in the shells that would be removed as small.
    pub tiny_area_share: f64,
    /// Small shells kept because together they held more than the allowed share of the area.
    pub kept_as_parts: u64,
}

pub(crate) fn select(v: &[[f32; 3]], t: &[[u32; 3]], w: &Winding, options: &RepairOptions) -> Kept {
    let n = w.shell_count as usize;
    // Facet count and bounding box per shell: in parallel over facet blocks when the per-block
    // tables stay small (few shells), else in one pass.
    let tally = |t: &[[u32; 3]], shell_of: &[u32], offset: usize| {
        let mut count = vec![0u32; n];
        let mut bb: Vec<Option<Bbox>> = vec![None; n];
        let mut first = vec![u32::MAX; n];
        for (i, (f, &s)) in t.iter().zip(shell_of).enumerate() {
            let s = s as usize;
            if count[s] == 0 {
                first[s] = (offset + i) as u32;
            }
            count[s] += 1;
            for &i in f {
                let p = v[i as usize];
                let b = bb[s].get_or_insert(Bbox { min: p, max: p });
                b.grow(p);
            }
        }
        (count, bb, first)
    };
    let parts = rayon::current_num_threads().max(1) * 4;
    let (count, bb, first) = if n <= 1 << 12 && t.len() >= 1 << 16 {
        let block = t.len().div_ceil(parts);
        t.par_chunks(block)
            .zip(w.shell_of.par_chunks(block))
            .enumerate()
            .map(|(i, (t, s))| tally(t, s, i * block))
            .reduce(
                || (vec![0u32; n], vec![None; n], vec![u32::MAX; n]),
                |(mut ca, mut ba, mut fa), (cb, bb, fb)| {
                    for s in 0..n {
                        ca[s] += cb[s];
                        fa[s] = fa[s].min(fb[s]);
                        ba[s] = match (ba[s], bb[s]) {
                            (Some(x), Some(y)) => {
                                crate::bbox_of([x.min, x.max, y.min, y.max].into_iter())
                            }
                            (x, None) => x,
                            (None, y) => y,
                        };
                    }
                    (ca, ba, fa)
                },
            )
    } else {
        tally(t, &w.shell_of, 0)
    };
    // Shells that share a vertex with another shell: pieces of one surface, never noise.
    // In parallel: every vertex records the first shell to claim it, and a shell that finds
    // a vertex claimed by another marks both (the same set whichever claims first).
    let mut touches = vec![false; n];
    if options.remove_tiny_shells && n > 1 {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
        let first: Vec<AtomicU32> = (0..v.len())
            .into_par_iter()
            .map(|_| AtomicU32::new(u32::MAX))
            .collect();
        let marked: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
        t.par_iter().zip(&w.shell_of).for_each(|(f, &s)| {
            for &i in f {
                let x = match first[i as usize].compare_exchange(u32::MAX, s, Relaxed, Relaxed) {
                    Ok(_) => continue,
                    Err(x) => x,
                };
                if x != s {
                    marked[s as usize].store(true, Relaxed);
                    marked[x as usize].store(true, Relaxed);
                }
            }
        });
        touches = marked.into_iter().map(AtomicBool::into_inner).collect();
    }
    let model = crate::bbox_of(bb.iter().flatten().flat_map(|b| [b.min, b.max]));
    // The model's size, not its bounding box's diagonal: a stray facet far away must not make
    // a real small part tiny (`pipeline::extent`).
    let limit = if model.is_some() {
        crate::pipeline::model_size(v, t) * f64::from(options.tiny_shell_ratio)
    } else {
        0.0
    };
    // Under four facets: always noise. Small and sharing no vertex: noise unless it touches,
    // crosses or is a void in another shell (`contact.rs`).
    let few = |s: usize| options.remove_tiny_shells && count[s] < 4;
    let small = |s: usize| {
        options.remove_tiny_shells
            && !few(s)
            && !touches[s]
            && count[s] <= options.tiny_shell_max_facets
            && bb[s].map_or(0.0, |b| b.diagonal()) < limit
    };
    let candidates: Vec<u32> = (0..n).filter(|&s| small(s)).map(|s| s as u32).collect();
    let counts: Vec<bool> = (0..n).map(|s| !few(s) && !small(s)).collect();
    let mut in_contact = vec![false; n];
    let mut touch_limited = false;
    if let Some(model) = model
        && !candidates.is_empty()
        && counts.iter().any(|&c| c)
    {
        let c = crate::contact::in_contact(v, t, w, &candidates, &counts, &bb, &first, &model);
        for (&s, keep) in candidates.iter().zip(c.keep) {
            in_contact[s as usize] = keep;
        }
        touch_limited = c.limited;
    }
    // Noise is a small part of the model: the small shells that would go are weighed by their
    // surface area against the whole input's (every facet's, those of shells under 4 facets
    // too: a surface left in single facets is still the model's). When they hold more than
    // the allowed share, they are parts; of them, only those far smaller than a typical one
    // (under a tenth of the area-weighted median: debris among the parts) still go.
    let mut going: Vec<bool> = (0..n).map(|s| small(s) && !in_contact[s]).collect();
    let mut tiny_area_share = 0.0;
    let mut kept_as_parts = 0;
    if going.iter().any(|&g| g) {
        let (areas, total) = shell_areas(v, t, &w.shell_of, &going);
        let part: f64 = areas.iter().map(|&(_, a)| a).sum();
        tiny_area_share = if total > 0.0 { part / total } else { 0.0 };
        if tiny_area_share > f64::from(options.tiny_shell_max_area_share) {
            let mut by_area: Vec<f64> = areas.iter().map(|&(_, a)| a).collect();
            by_area.sort_unstable_by(f64::total_cmp);
            let mut below = 0.0;
            let typical = by_area
                .iter()
                .find(|&&a| {
                    below += a;
                    below >= part / 2.0
                })
                .copied()
                .unwrap_or(0.0);
            for &(s, a) in &areas {
                if a >= typical / 10.0 {
                    going[s as usize] = false;
                    kept_as_parts += 1;
                }
            }
        }
    }
    let mut new_id = vec![u32::MAX; n];
    let (mut kept, mut removed, mut removed_facets) = (0u32, 0u64, 0u64);
    for s in 0..n {
        let tiny = few(s) || going[s];
        if tiny {
            removed += 1;
            removed_facets += u64::from(count[s]);
        } else {
            new_id[s] = kept;
            kept += 1;
        }
    }
    let kept_touching = in_contact.iter().filter(|&&c| c).count() as u64;
    Kept {
        new_id,
        kept_shells: kept,
        removed_shells: removed,
        removed_facets,
        kept_touching,
        touch_limited,
        tiny_area_share,
        kept_as_parts,
    }
}

/// The surface area of every shell marked in `marked` (shell, area; in shell order) and of
/// all facets. Each sum is taken in facet order, so the result does not depend on the
/// threads: the total from per-block sums added in block order, the marked shells' from their
/// facets sorted by shell and facet.
fn shell_areas(
    v: &[[f32; 3]],
    t: &[[u32; 3]],
    shell_of: &[u32],
    marked: &[bool],
) -> (Vec<(u32, f64)>, f64) {
    use crate::holes::{cross, norm, sub};
    let area = |f: &[u32; 3]| {
        let p = f.map(|i| v[i as usize].map(f64::from));
        norm(cross(sub(p[1], p[0]), sub(p[2], p[0]))) / 2.0
    };
    let sums: Vec<f64> = t
        .par_chunks(1 << 14)
        .map(|t| t.iter().map(area).sum::<f64>())
        .collect();
    let total = sums.iter().sum::<f64>();
    let mut facets: Vec<u64> = crate::keys::par_blocks(shell_of.len(), |r, out| {
        out.extend(
            r.filter(|&f| marked[shell_of[f] as usize])
                .map(|f| crate::keys::pack(shell_of[f], f as u32)),
        );
    });
    facets.par_sort_unstable();
    let mut areas: Vec<(u32, f64)> = Vec::new();
    for &k in &facets {
        let (s, f) = (crate::keys::hi(k), crate::keys::lo(k));
        let a = area(&t[f as usize]);
        match areas.last_mut() {
            Some((last, sum)) if *last == s => *sum += a,
            _ => areas.push((s, a)),
        }
    }
    (areas, total)
}

pub(crate) struct Compact {
    pub triangles: Vec<[u32; 3]>,
    pub shell_of: Vec<u32>,
    /// Boundary half-edges of kept facets, in surface direction (after flips): (from, to, shell).
    pub boundary: Vec<(u32, u32, u32)>,
}

pub(crate) fn compact(t: &[[u32; 3]], twin: &[u32], w: &Winding, kept: &Kept) -> Compact {
    let keep = |f: usize| kept.new_id[w.shell_of[f] as usize] != u32::MAX;
    let oriented = |f: usize| {
        let mut x = t[f];
        if w.flip[f] {
            x.swap(1, 2);
        }
        x
    };
    // A parallel compaction: kept facets counted per block, then every block writes its own
    // slice of outputs sized in advance (a filtered parallel collect would append the pieces
    // on one thread).
    const BLOCK: usize = 1 << 15;
    let counts: Vec<usize> = (0..t.len().div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            (b * BLOCK..((b + 1) * BLOCK).min(t.len()))
                .filter(|&f| keep(f))
                .count()
        })
        .collect();
    let total: usize = counts.iter().sum();
    let mut triangles: Vec<[u32; 3]> = (0..total).into_par_iter().map(|_| [0; 3]).collect();
    let mut shell_of: Vec<u32> = (0..total).into_par_iter().map(|_| 0).collect();
    let mut slices = Vec::with_capacity(counts.len());
    let (mut rest_t, mut rest_s): (&mut [[u32; 3]], &mut [u32]) = (&mut triangles, &mut shell_of);
    for &c in &counts {
        let (a, ra) = std::mem::take(&mut rest_t).split_at_mut(c);
        let (b, rb) = std::mem::take(&mut rest_s).split_at_mut(c);
        slices.push((a, b));
        rest_t = ra;
        rest_s = rb;
    }
    slices
        .into_par_iter()
        .enumerate()
        .for_each(|(b, (out_t, out_s))| {
            let kept_facets = (b * BLOCK..((b + 1) * BLOCK).min(t.len())).filter(|&f| keep(f));
            for ((f, ot), os) in kept_facets.zip(out_t.iter_mut()).zip(out_s.iter_mut()) {
                *ot = oriented(f);
                *os = kept.new_id[w.shell_of[f] as usize];
            }
        });
    let boundary: Vec<(u32, u32, u32)> = crate::keys::par_blocks(t.len(), |r, out| {
        for f in r.filter(|&f| twin[3 * f..3 * f + 3].contains(&NONE) && keep(f)) {
            let s = kept.new_id[w.shell_of[f] as usize];
            out.extend((0..3).filter(|&k| twin[3 * f + k] == NONE).map(|k| {
                let (a, b) = (t[f][k], t[f][(k + 1) % 3]);
                if w.flip[f] { (b, a, s) } else { (a, b, s) }
            }));
        }
    });
    Compact {
        triangles,
        shell_of,
        boundary,
    }
}
