//! Edge topology: pair the half-edges of every undirected edge.
//!
//! Half-edge `3f + k` runs from corner `k` to corner `k + 1` of facet `f`. Keys
//! `hash(min, max) << 32 | half-edge` are sorted in parallel; each run of equal hashes holds the
//! half-edges of one edge (or, rarely, of colliding edges, told apart by sorting the run).
//! An edge with two half-edges is paired; one with one is a boundary edge; one with more is
//! non-manifold and is made manifold: opposite half-edges are paired greedily in facet order,
//! then remaining ones pairwise, and any last one is cut loose (it becomes a boundary edge of
//! its facet).

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use super::keys::{self, hi, lo, pack};

/// No twin: a boundary half-edge.
pub(crate) const NONE: u32 = u32::MAX;
/// Set on a twin entry when both half-edges run the same direction (inconsistent winding).
pub(crate) const SAME: u32 = 1 << 31;

pub(crate) struct Topology {
    /// Per half-edge: twin half-edge (with [`SAME`] set when same direction) or [`NONE`].
    pub twin: Vec<u32>,
    pub edges: u64,
    pub boundary_edges: u64,
    pub non_manifold_edges: u64,
}

#[inline]
pub(crate) fn half_edge(t: &[[u32; 3]], h: u32) -> (u32, u32) {
    let f = (h / 3) as usize;
    let k = (h % 3) as usize;
    (t[f][k], t[f][(k + 1) % 3])
}

#[derive(Default)]
struct Counts {
    edges: u64,
    boundary: u64,
    non_manifold: u64,
}

pub(crate) fn pair_edges(triangles: &[[u32; 3]]) -> Topology {
    let nh = triangles.len() * 3;
    let mut ks: Vec<u64> = (0..nh as u32)
        .into_par_iter()
        .map(|h| {
            let (a, b) = half_edge(triangles, h);
            let (lo_v, hi_v) = if a < b { (a, b) } else { (b, a) };
            pack(keys::hash3(lo_v, hi_v, 0x5bd1_e995), h)
        })
        .collect();
    keys::sort(&mut ks);
    let twin: Vec<AtomicU32> = (0..nh)
        .into_par_iter()
        .map(|_| AtomicU32::new(NONE))
        .collect();
    let chunks = keys::run_chunks(&ks, keys::parts_for(nh));
    let counts = chunks
        .par_iter()
        .map(|r| {
            let ks = &ks[r.clone()];
            let mut c = Counts::default();
            let mut i = 0;
            while i < ks.len() {
                let mut j = i + 1;
                while j < ks.len() && hi(ks[j]) == hi(ks[i]) {
                    j += 1;
                }
                if j - i == 2
                    && undirected(triangles, lo(ks[i])) == undirected(triangles, lo(ks[i + 1]))
                {
                    link(triangles, &twin, lo(ks[i]), lo(ks[i + 1]));
                    c.edges += 1;
                } else if j - i == 1 {
                    c.edges += 1;
                    c.boundary += 1;
                } else {
                    group_run(triangles, &twin, &ks[i..j], &mut c);
                }
                i = j;
            }
            c
        })
        .reduce(Counts::default, |a, b| Counts {
            edges: a.edges + b.edges,
            boundary: a.boundary + b.boundary,
            non_manifold: a.non_manifold + b.non_manifold,
        });
    drop(ks);
    let twin: Vec<u32> = twin.into_par_iter().map(AtomicU32::into_inner).collect();
    Topology {
        twin,
        edges: counts.edges,
        boundary_edges: counts.boundary,
        non_manifold_edges: counts.non_manifold,
    }
}

#[inline]
fn undirected(t: &[[u32; 3]], h: u32) -> (u32, u32) {
    let (a, b) = half_edge(t, h);
    if a < b { (a, b) } else { (b, a) }
}

fn link(t: &[[u32; 3]], twin: &[AtomicU32], a: u32, b: u32) {
    let same = if half_edge(t, a) == half_edge(t, b) {
        SAME
    } else {
        0
    };
    twin[a as usize].store(b | same, Ordering::Relaxed);
    twin[b as usize].store(a | same, Ordering::Relaxed);
}

/// A run with hash collisions and/or non-manifold edges.
fn group_run(t: &[[u32; 3]], twin: &[AtomicU32], run: &[u64], c: &mut Counts) {
    let mut hs: Vec<((u32, u32), u32)> =
        run.iter().map(|&k| (undirected(t, lo(k)), lo(k))).collect();
    hs.sort_unstable();
    let mut i = 0;
    while i < hs.len() {
        let mut j = i + 1;
        while j < hs.len() && hs[j].0 == hs[i].0 {
            j += 1;
        }
        c.edges += 1;
        match j - i {
            1 => c.boundary += 1,
            2 => link(t, twin, hs[i].1, hs[i + 1].1),
            _ => {
                c.non_manifold += 1;
                // Pair opposite directions first, then whatever is left, in facet order.
                let group: Vec<u32> = hs[i..j].iter().map(|x| x.1).collect();
                let mut used = vec![false; group.len()];
                for a in 0..group.len() {
                    if used[a] {
                        continue;
                    }
                    let da = half_edge(t, group[a]);
                    if let Some(b) = (a + 1..group.len())
                        .find(|&b| !used[b] && half_edge(t, group[b]) == (da.1, da.0))
                    {
                        used[a] = true;
                        used[b] = true;
                        link(t, twin, group[a], group[b]);
                    }
                }
                let rest: Vec<u32> = (0..group.len())
                    .filter(|&a| !used[a])
                    .map(|a| group[a])
                    .collect();
                for p in rest.chunks_exact(2) {
                    link(t, twin, p[0], p[1]);
                }
            }
        }
        i = j;
    }
}
