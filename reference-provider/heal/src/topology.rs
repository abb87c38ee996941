//! Edge topology: pair the half-edges of every undirected edge.
//!
//! Half-edge `3f + k` runs from corner `k` to corner `k + 1` of facet `f`. Keys
//! `min(from, to) << 32 | half-edge` are sorted in parallel (a radix pass on the vertex ids, which
//! are numbered by first use, so neighbouring keys come from neighbouring facets); each run of
//! equal low vertices holds the half-edges of the few edges around that vertex, grouped there
//! by their other vertex. No hashing, so no collisions to tell apart.
//! An edge with two half-edges is paired; one with one is a boundary edge; one with more is
//! non-manifold and is made manifold: opposite half-edges are paired greedily in facet order,
//! then remaining ones pairwise, and any last one is cut loose (it becomes a boundary edge of
//! its facet).

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use crate::keys::{self, hi, lo, pack};

/// No twin: a boundary half-edge.
pub(crate) const NONE: u32 = u32::MAX;
/// Set on a twin entry when both half-edges run the same direction (inconsistent winding).
pub(crate) const SAME: u32 = 1 << 31;

#[derive(Default)]
pub(crate) struct Topology {
    /// Per half-edge: twin half-edge (with [`SAME`] set when same direction) or [`NONE`].
    pub twin: Vec<u32>,
    pub edges: u64,
    pub boundary_edges: u64,
    pub non_manifold_edges: u64,
    /// Facets with a half-edge on a non-manifold edge (made manifold here), for provenance.
    pub non_manifold_facets: Vec<u32>,
    /// The half-edges cut loose from a non-manifold edge (no twin, but not a boundary edge of
    /// their own), ascending.
    pub loose: Vec<u32>,
}

#[inline]
pub(crate) fn half_edge(t: &[[u32; 3]], h: u32) -> (u32, u32) {
    let f = (h / 3) as usize;
    let k = (h % 3) as usize;
    (t[f][k], t[f][(k + 1) % 3])
}

/// The boundary half-edges of a pairing: those with no twin that are not loose (`loose` is
/// sorted), ascending, scanned in blocks ([`keys::par_blocks`]).
pub(crate) fn boundary_half_edges(twin: &[u32], loose: &[u32]) -> Vec<u32> {
    keys::par_blocks(twin.len(), |r, out| {
        out.extend(
            r.filter(|&h| twin[h] == NONE)
                .map(|h| h as u32)
                .filter(|h| loose.binary_search(h).is_err()),
        );
    })
}

#[derive(Default)]
struct Counts {
    edges: u64,
    boundary: u64,
    non_manifold: u64,
    non_manifold_facets: Vec<u32>,
    loose: Vec<u32>,
}

pub(crate) fn pair_edges(triangles: &[[u32; 3]]) -> Topology {
    let nh = triangles.len() * 3;
    // `smaller end << 32 | half-edge`, sorted.
    let ends: Vec<u32> = (0..nh as u32)
        .into_par_iter()
        .map(|h| {
            let (a, b) = half_edge(triangles, h);
            a.min(b)
        })
        .collect();
    let ks = keys::sort_hashes(&ends);
    drop(ends);
    let twin: Vec<AtomicU32> = (0..nh)
        .into_par_iter()
        .map(|_| AtomicU32::new(NONE))
        .collect();
    let chunks = keys::run_chunks(&ks, keys::parts_for(nh));
    let counts = chunks
        .par_iter()
        .map(|r| {
            let mut c = Counts::default();
            pair_runs(triangles, &ks[r.clone()], &mut c, &mut |a, b| {
                link(&twin, a, b)
            });
            c
        })
        .reduce(Counts::default, |mut a, b| {
            a.non_manifold_facets.extend(b.non_manifold_facets);
            a.loose.extend(b.loose);
            Counts {
                edges: a.edges + b.edges,
                boundary: a.boundary + b.boundary,
                non_manifold: a.non_manifold + b.non_manifold,
                non_manifold_facets: a.non_manifold_facets,
                loose: a.loose,
            }
        });
    drop(ks);
    // Same size and alignment: the standard library collects this in place (no second
    // buffer of every half-edge).
    let twin: Vec<u32> = twin.into_iter().map(AtomicU32::into_inner).collect();
    Topology {
        twin,
        edges: counts.edges,
        boundary_edges: counts.boundary,
        non_manifold_edges: counts.non_manifold,
        non_manifold_facets: counts.non_manifold_facets,
        loose: {
            let mut l = counts.loose;
            l.sort_unstable();
            l
        },
    }
}

/// One half-edge of a run round its low vertex: (other vertex, half-edge, runs from the low
/// vertex).
type Around = (u32, u32, bool);

/// Pair the half-edges of `ks` (keys `low vertex << 32 | half-edge`, sorted, whole runs of
/// equal low vertex): `link` is called for every twin pair, `c` counts the edges.
fn pair_runs(
    triangles: &[[u32; 3]],
    ks: &[u64],
    c: &mut Counts,
    link: &mut impl FnMut(Around, Around),
) {
    let mut around: Vec<Around> = Vec::new();
    let mut i = 0;
    while i < ks.len() {
        let low = hi(ks[i]);
        let mut j = i + 1;
        while j < ks.len() && hi(ks[j]) == low {
            j += 1;
        }
        around.clear();
        around.extend(ks[i..j].iter().map(|&k| {
            let (a, b) = half_edge(triangles, lo(k));
            if a == low {
                (b, lo(k), true)
            } else {
                (a, lo(k), false)
            }
        }));
        around.sort_unstable();
        let mut g = 0;
        while g < around.len() {
            let mut e = g + 1;
            while e < around.len() && around[e].0 == around[g].0 {
                e += 1;
            }
            c.edges += 1;
            match e - g {
                1 => c.boundary += 1,
                2 => link(around[g], around[g + 1]),
                _ => {
                    c.non_manifold += 1;
                    c.non_manifold_facets
                        .extend(around[g..e].iter().map(|h| h.1 / 3));
                    c.loose.extend(make_manifold(&around[g..e], link));
                }
            }
            g = e;
        }
        i = j;
    }
}

/// Pair again, in place, the half-edges of every edge with an endpoint in `hot`; every other
/// half-edge keeps its twin. After a change confined to the `hot` vertices (facets whose
/// vertices were merged into them, facets removed that used them), this gives the twins
/// [`pair_edges`] would give, at the cost of the half-edges near those vertices (plus one
/// parallel scan): an edge's half-edges are all re-paired or all kept, and an edge with no
/// endpoint in `hot` has the same half-edges as before. `loose` (the cut-loose half-edges,
/// ascending) is kept up to date the same way. Returns the number of boundary edges.
pub(crate) fn pair_near(
    triangles: &[[u32; 3]],
    twin: &mut [u32],
    loose: &mut Vec<u32>,
    hot: &[bool],
) -> u64 {
    let nh = triangles.len() * 3;
    debug_assert_eq!(twin.len(), nh);
    let mut ks: Vec<u64> = keys::par_blocks(nh, |r, out| {
        out.extend(r.filter_map(|h| {
            let (a, b) = half_edge(triangles, h as u32);
            (hot[a as usize] || hot[b as usize]).then(|| pack(a.min(b), h as u32))
        }));
    });
    keys::sort(&mut ks);
    for &k in &ks {
        twin[lo(k) as usize] = NONE;
    }
    // The runs in parallel chunks (a stitch that merged much of a crafted pile re-pairs most
    // edges), each collecting its twin pairs; then the pairs are written.
    let chunks = keys::run_chunks(&ks, keys::parts_for(ks.len()));
    let found: Vec<(Counts, Vec<(u32, u32)>)> = chunks
        .par_iter()
        .map(|r| {
            let mut c = Counts::default();
            let mut pairs = Vec::new();
            pair_runs(triangles, &ks[r.clone()], &mut c, &mut |a, b| {
                let same = if a.2 == b.2 { SAME } else { 0 };
                pairs.push((a.1, b.1 | same));
            });
            (c, pairs)
        })
        .collect();
    let mut c = Counts::default();
    for (part, pairs) in found {
        for (a, b) in pairs {
            twin[a as usize] = b;
            twin[(b & !SAME) as usize] = a | (b & SAME);
        }
        c.loose.extend(part.loose);
    }
    loose.retain(|&h| {
        let (a, b) = half_edge(triangles, h);
        !(hot[a as usize] || hot[b as usize])
    });
    loose.extend(c.loose);
    loose.sort_unstable();
    let untwinned = twin.par_iter().filter(|&&t| t == NONE).count();
    (untwinned - loose.len()) as u64
}

/// Twin two half-edges `(other vertex, half-edge, forward)` of one edge.
fn link(twin: &[AtomicU32], a: Around, b: Around) {
    let same = if a.2 == b.2 { SAME } else { 0 };
    twin[a.1 as usize].store(b.1 | same, Ordering::Relaxed);
    twin[b.1 as usize].store(a.1 | same, Ordering::Relaxed);
}

/// The half-edges of one non-manifold edge (sorted by half-edge): pair opposite directions
/// first (the i-th running one way with the i-th running the other, in facet order), then
/// whatever is left pairwise; a last odd one stays a boundary edge. Linear in the group, so a
/// crafted edge shared by thousands of facets costs no more than they do.
fn make_manifold(group: &[Around], link: &mut impl FnMut(Around, Around)) -> Option<u32> {
    let fwd: Vec<Around> = group.iter().copied().filter(|h| h.2).collect();
    let bwd: Vec<Around> = group.iter().copied().filter(|h| !h.2).collect();
    let pairs = fwd.len().min(bwd.len());
    for (&a, &b) in fwd.iter().zip(&bwd) {
        link(a, b);
    }
    let rest = if fwd.len() > pairs {
        &fwd[pairs..]
    } else {
        &bwd[pairs..]
    };
    for p in rest.chunks_exact(2) {
        link(p[0], p[1]);
    }
    (rest.len() % 2 == 1).then(|| rest[rest.len() - 1].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_twins_boundaries_and_non_manifold_edges() {
        // Two facets sharing edge 0-1 in opposite directions, one more on the same edge running
        // the same way as the first (non-manifold: the odd one is cut loose), and one facet
        // whose edge 1-2 runs the same way as facet 0's (inconsistent winding).
        let t = [[0, 1, 2], [1, 0, 3], [0, 1, 4], [1, 2, 5]];
        let topo = pair_edges(&t);
        // Half-edges 0 (0→1) and 3 (1→0) are twins, opposite directions.
        assert_eq!(topo.twin[0], 3);
        assert_eq!(topo.twin[3], 0);
        // Half-edge 6 (0→1 of facet 2) is the odd one: cut loose.
        assert_eq!(topo.twin[6], NONE);
        // Half-edge 1 (1→2) and 9 (1→2 of facet 3) run the same way.
        assert_eq!(topo.twin[1], 9 | SAME);
        assert_eq!(topo.twin[9], 1 | SAME);
        assert_eq!(topo.non_manifold_edges, 1);
        // Edges: 0-1, 1-2, 2-0, 0-3, 3-1, 1-4, 4-0, 2-5, 5-1.
        assert_eq!(topo.edges, 9);
        // Boundary: 2-0, 0-3, 3-1, 1-4, 4-0, 2-5, 5-1 (the cut-loose one is not an edge of its own).
        assert_eq!(topo.boundary_edges, 7);
    }
}
