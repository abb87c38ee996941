//! Hole filling.
//!
//! Boundary half-edges (surface direction `u → v`) give hole edges `v → u`; following them
//! vertex to vertex traces the hole loops (a loop that passes a vertex twice is split there).
//! Loops that bound one face with holes (one inside another, in one plane, wound against it)
//! are filled together first ([`islands`]). Each other loop up to the size limit is filled by
//! the first of these that succeeds, so the cost
//! of a loop is at most a constant times its length and the stage is linear in the boundary:
//!
//! 1. loops of up to [`EAR_MAX_EDGES`] edges: ear clipping on the projection onto the loop's
//!    best-fit plane (Newell normal): at every step the valid ear of best shape (area over the
//!    sum of squared edge lengths) is cut, so the result avoids slivers and fans. An ear is
//!    valid when it is convex, holds no other loop vertex, is not degenerate and its new edge
//!    does not already exist in the mesh. A loop of up to [`SMOOTH_MAX_EDGES`] edges whose
//!    ear-clipped fill bends (against itself or the facets round the hole) is filled again by
//!    [`least_bend`], the fill whose sharpest fold is the gentlest (as in Liepa, "Filling
//!    holes in meshes", 2003), and the gentler of the two is kept: a hole that crosses a sharp
//!    edge of the model (a patch missing from a gear tooth's flank and top) gets that edge
//!    back instead of a chord cut across the corner. Ear clipping alone stays the rule where
//!    the fill is flat (a hole in a plane face), as every fill of a flat loop has the same
//!    area and the ears' shapes are the better choice there. A fill that bends and does not
//!    lie in the planes of the facets round the hole ([`Planes`]) gives way to the gentlest
//!    fill that does, when there is one (an edge of the model given back where the gentlest
//!    fill of all bevels it), else to [`corner_fan`] when the hole is a corner lost with its
//!    facets (the planes meet at one point and a fan round it lies in them);
//! 2. when no valid ear is left and the loop has up to [`MIN_AREA_MAX_EDGES`] edges: the
//!    fill of least area ([`min_area`]), which needs no projection (a loop wrapping round a
//!    thin tube);
//! 3. otherwise a fan from a new vertex ([`fan`]): every new edge ends at the new vertex, so it
//!    can repeat no edge of the mesh and the fill is always manifold. The vertex is the
//!    corner the planes round the hole meet at where [`corner_fan`] finds one, else the
//!    loop's centroid.
//!
//! The loop order makes the new facets wind like the surface.

// foldhash rather than SipHash: the sets and maps of the edges round the holes hold millions
// of entries on a sheet with tens of thousands of holes, where SipHash's hashing and the map
// inserts were a tenth of the samples.
use foldhash::{HashMap, HashSet};

use rayon::prelude::*;

use crate::clean::{degenerate, degenerate_at, flat};
use crate::islands;
use crate::types::bbox_of;
use crate::zip::lies_on;

#[derive(Debug, Default)]
pub(crate) struct HoleStats {
    pub found: u64,
    pub filled: u64,
    pub left_open: u64,
    pub facets_added: u64,
    /// Some loop could only be closed with a forced (non-valid) ear or a flat facet.
    pub unsafe_fill: bool,
    /// Shells joined to another by the fill of a face with holes ([`islands`]): a shell id
    /// that no facet holds any more.
    pub shells_joined: u64,
    /// Vertices added (one per loop filled by a fan).
    pub vertices_added: u64,
    /// Of those, corners given back ([`corner_fan`]).
    pub corners_restored: u64,
    /// Candidate checks made by the triangulations (see [`Work`]).
    pub work: u64,
    /// The deadline passed: the remaining loops were left open.
    pub out_of_time: bool,
    /// Boundary edges split at T-junctions ([`split_t_junctions`]).
    pub edges_split: u64,
    /// The corners opposite the edges split: the splits' new edges end there, so the final
    /// check ([`closed_around`]) looks at their edges as well as the boundary's.
    pub split_corners: Vec<u32>,
}

/// How a loop was filled: facets (a fan's centre is [`CENTRE`]), whether an ear was forced or
/// a facet is flat, the fan's centre, and the work it took.
struct LoopFill {
    tris: Vec<[u32; 3]>,
    forced: bool,
    centre: Option<[f32; 3]>,
    /// The centre is the corner the surface round the hole points to ([`corner_fan`]).
    corner: bool,
    work: u64,
}

/// Stands for a fan's new centre vertex until it gets its index.
const CENTRE: u32 = u32::MAX;

/// Loops of up to this many edges are ear-clipped (`O(n²)` each, so at most this many times
/// `n`); longer ones go to [`min_area`] or [`fan`].
pub(crate) const EAR_MAX_EDGES: usize = 128;

/// Loops of up to this many edges that ear clipping cannot close are filled by [`min_area`]
/// (`O(n³)`, at most this many squared times `n`); longer ones by [`fan`].
pub(crate) const MIN_AREA_MAX_EDGES: usize = 48;

/// Loops of up to this many edges whose ear-clipped fill bends are filled again by
/// [`least_bend`] (`O(n³)`, at most this many squared times `n`).
pub(crate) const SMOOTH_MAX_EDGES: usize = 24;

/// A fill whose facets fold against each other by at most this (one minus the cosine between
/// the normals of two facets that share an edge: about 0.08°) is flat: ear clipping's fill
/// is kept. Another fill replaces it only when it is gentler by more than this.
const FLAT_BEND: f64 = 1e-6;

/// The facets round the hole loops: for every surface half-edge `(a, b)` between two loop
/// vertices, the third corner of its facet (`a b c` in winding order).
pub(crate) type Across = HashMap<(u32, u32), u32>;

/// Work counter: one unit per candidate vertex, ear or split a triangulation looks at.
#[derive(Default)]
struct Work(std::cell::Cell<u64>);

impl Work {
    fn add(&self, n: usize) {
        self.0.set(self.0.get() + n as u64);
    }
}

impl HoleStats {
    /// Figures when filling is disabled.
    pub(crate) fn open(boundary: &[(u32, u32, u32)]) -> HoleStats {
        let (loops, open) = trace(boundary);
        let found = loops.len() as u64 + open;
        HoleStats {
            found,
            left_open: found,
            ..HoleStats::default()
        }
    }
}

/// Loops (vertex lists in hole order, with their shell) and the number of open chains.
///
/// A loop only follows boundary edges of its own shell. Two shells can touch at a vertex
/// (sharing no edge), and a loop chained through such a vertex into the other shell would be
/// filled as part of one shell while the facets around it belong to two: the fill would join
/// two surfaces that orientation later flips one at a time, leaving edges wound the same way.
fn trace(boundary: &[(u32, u32, u32)]) -> (Vec<(Vec<u32>, u32)>, u64) {
    // Hole edges v → u, sorted by start vertex.
    let mut edges: Vec<(u32, u32, u32)> = boundary.iter().map(|&(a, b, s)| (b, a, s)).collect();
    edges.sort_unstable();
    let mut used = vec![false; edges.len()];
    let next_from = |x: u32, shell: u32, used: &[bool]| -> Option<usize> {
        let start = edges.partition_point(|e| e.0 < x);
        (start..edges.len())
            .take_while(|&i| edges[i].0 == x)
            .find(|&i| !used[i] && edges[i].2 == shell)
    };
    let mut loops = Vec::new();
    let mut open = 0u64;
    for first in 0..edges.len() {
        if used[first] {
            continue;
        }
        used[first] = true;
        let shell = edges[first].2;
        let mut path = vec![edges[first].0];
        let mut at: HashMap<u32, usize> = HashMap::from_iter([(edges[first].0, 0)]);
        let mut x = edges[first].1;
        loop {
            if let Some(&j) = at.get(&x) {
                let l: Vec<u32> = path[j..].to_vec();
                for r in &path[j + 1..] {
                    at.remove(r);
                }
                path.truncate(j + 1);
                loops.push((l, shell));
                if path.len() == 1 && j == 0 {
                    break;
                }
            } else {
                at.insert(x, path.len());
                path.push(x);
            }
            let cur = *path.last().unwrap_or(&x);
            match next_from(cur, shell, &used) {
                Some(i) => {
                    used[i] = true;
                    x = edges[i].1;
                }
                None => {
                    if path.len() > 1 {
                        open += 1;
                    }
                    break;
                }
            }
        }
    }
    (loops, open)
}

/// Fills the hole loops that `boundary` (surface half-edges `u → v` with their shell)
/// traces, after splitting the edges of T-junctions ([`split_t_junctions`]; `snap` is the
/// distance the weld merged over).
pub(crate) fn fill(
    v: &mut Vec<[f32; 3]>,
    triangles: &mut Vec<[u32; 3]>,
    shell_of: &mut Vec<u32>,
    boundary: &[(u32, u32, u32)],
    snap: f64,
    max_edges: u32,
    deadline: Option<std::time::Instant>,
) -> HoleStats {
    let (mut loops, mut open) = trace(boundary);
    let split = split_t_junctions(v, triangles, shell_of, boundary, &loops, snap);
    if let Some(s) = &split {
        (loops, open) = trace(&s.rest);
    }
    let (edges_split, split_corners) = split.map_or((0, Vec::new()), |s| (s.edges, s.corners));
    let mut stats = HoleStats {
        found: loops.len() as u64 + open,
        left_open: open,
        edges_split,
        split_corners,
        ..HoleStats::default()
    };
    if loops.is_empty() {
        return stats;
    }
    // Existing edges between loop vertices: a fill must not create them a second time. And
    // the facets round the loops, whose normals [`least_bend`] weighs a fill against.
    let (existing, across): (HashSet<(u32, u32)>, Across) =
        if loops.iter().any(|(l, _)| l.len() > 3) {
            let on_loop = vertex_set(v.len(), loops.iter().flat_map(|(l, _)| l.iter().copied()));
            let within = corners_within(triangles, &on_loop);
            let existing = within
                .iter()
                .map(|&(a, b, _)| (a.min(b), a.max(b)))
                .collect();
            let across = within.into_iter().map(|(a, b, c)| ((a, b), c)).collect();
            (existing, across)
        } else {
            (HashSet::default(), HashMap::default())
        };
    let late = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
    let vs: &[[f32; 3]] = v;
    // Loops that bound one face with holes, filled together (`islands`); they need the
    // mesh's edges between loop vertices, found above when some loop has more than 3 edges.
    let islands = if existing.is_empty() || late() {
        Vec::new()
    } else {
        islands::faces_with_holes(vs, &loops, &existing, &across, snap)
    };
    let mut in_island = vec![false; loops.len()];
    for i in islands.iter().flat_map(|isl| &isl.loops) {
        in_island[*i] = true;
    }
    let results: Vec<Option<(LoopFill, u32)>> = loops
        .par_iter()
        .zip(&in_island)
        .map(|((l, s), &done)| {
            if done || l.len() < 3 || l.len() > max_edges as usize || late() {
                return None;
            }
            Some((fill_loop(vs, l, &existing, &across), *s))
        })
        .collect();
    stats.out_of_time = late();
    let mut taken = existing;
    // The islands first (their chords checked against the mesh's edges and each other's):
    // each loop counts as filled, the fill takes the outer loop's shell, and the shells of its
    // inner loops join that shell (the fill joins them: a pin standing on a plate). Joins are
    // unions (an island may join shells that an earlier one joined the other way round).
    let mut parent: HashMap<u32, u32> = HashMap::default();
    let find = |parent: &HashMap<u32, u32>, mut s: u32| {
        while let Some(&t) = parent.get(&s) {
            s = t;
        }
        s
    };
    for isl in islands {
        let s = loops[isl.loops[0]].1;
        for &i in &isl.loops[1..] {
            let (a, b) = (find(&parent, loops[i].1), find(&parent, s));
            if a != b {
                parent.insert(a, b);
            }
        }
        taken.extend(isl.tris.iter().flat_map(|t| {
            (0..3).map(move |k| (t[k].min(t[(k + 1) % 3]), t[k].max(t[(k + 1) % 3])))
        }));
        stats.filled += isl.loops.len() as u64;
        stats.facets_added += isl.tris.len() as u64;
        shell_of.extend(std::iter::repeat_n(s, isl.tris.len()));
        triangles.extend(isl.tris);
    }
    if !parent.is_empty() {
        let map: HashMap<u32, u32> = parent.keys().map(|&k| (k, find(&parent, k))).collect();
        stats.shells_joined = map.len() as u64;
        shell_of.par_iter_mut().for_each(|s| {
            if let Some(&t) = map.get(s) {
                *s = t;
            }
        });
    }
    // Loops are filled independently, so two loops that share vertices can each add the same
    // chord between them: an edge with four half-edges. Chords are claimed in loop order, and
    // a fill whose chord is already taken (by the mesh or an earlier fill) becomes a fan,
    // whose new edges all end at its own new vertex.
    for ((r, (l, _)), &done) in results.into_iter().zip(&loops).zip(&in_island) {
        if done {
            continue;
        }
        let r = r.map(|(fill, s)| {
            if fill.centre.is_some() {
                return (fill, s);
            }
            // Not a fan, so the loop has at most `EAR_MAX_EDGES` edges.
            let n = l.len();
            let key = |a: u32, b: u32| (a.min(b), a.max(b));
            let own: HashSet<(u32, u32)> = (0..n).map(|i| key(l[i], l[(i + 1) % n])).collect();
            let chords: Vec<(u32, u32)> = fill
                .tris
                .iter()
                .flat_map(|t| (0..3).map(move |k| key(t[k], t[(k + 1) % 3])))
                .filter(|c| !own.contains(c))
                .collect();
            if chords.iter().any(|c| taken.contains(c)) {
                let (tris, centre, forced) = fan(v, l);
                let work = fill.work + n as u64;
                (
                    LoopFill {
                        tris,
                        forced,
                        centre: Some(centre),
                        corner: false,
                        work,
                    },
                    s,
                )
            } else {
                taken.extend(chords);
                (fill, s)
            }
        });
        match r {
            None => stats.left_open += 1,
            Some((mut fill, s)) => {
                stats.filled += 1;
                stats.unsafe_fill |= fill.forced;
                stats.work += fill.work;
                if let Some(c) = fill.centre {
                    let id = v.len() as u32;
                    v.push(c);
                    stats.vertices_added += 1;
                    stats.corners_restored += u64::from(fill.corner);
                    for x in fill.tris.iter_mut().flatten() {
                        if *x == CENTRE {
                            *x = id;
                        }
                    }
                }
                stats.facets_added += fill.tris.len() as u64;
                shell_of.extend(std::iter::repeat_n(s, fill.tris.len()));
                triangles.extend(fill.tris);
            }
        }
    }
    stats
}

/// A boundary half-edge: surface direction `u → v`, and its shell.
type BoundaryEdge = (u32, u32, u32);

/// What [`split_t_junctions`] did.
struct Split {
    /// The boundary left: split edges and the edges now paired removed, new ones added.
    rest: Vec<BoundaryEdge>,
    /// Boundary edges split.
    edges: u64,
    /// The corner opposite every edge split (its facet's fan centre).
    corners: Vec<u32>,
}

/// Splits the boundary edges that a vertex of their own hole loop lies on: T-junctions,
/// where one side of a crack is a facet's edge `a → b` and the other a chain of edges through
/// vertices on that segment (CAD exports write them where two patches meet with different
/// subdivisions; so does a sliver facet once removed as flat). The facet `(a, b, c)` becomes
/// a fan from `c` through those vertices, whose new edges are the twins of the chain's: the
/// crack closes exactly, with no facet added on the crack itself (a filled crack would be a
/// flat facet).
///
/// A vertex `w` lies on `a → b` when it is within [`rounding`] of the segment (plus `snap`,
/// where that is below a quarter of its distance to either end) and farther than that from
/// both ends. Only loops of up to [`EAR_MAX_EDGES`] edges are searched (`O(n²)` each), and a
/// facet is split along one edge at most, and a split whose new edges the mesh has already is
/// not made. Returns the boundary left and what was split, or `None` when nothing was.
fn split_t_junctions(
    v: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    shell_of: &mut Vec<u32>,
    boundary: &[(u32, u32, u32)],
    loops: &[(Vec<u32>, u32)],
    snap: f64,
) -> Option<Split> {
    let p = |i: u32| v[i as usize].map(f64::from);
    // For every loop edge (hole direction a → b: the surface half-edge b → a), the vertices
    // of the loop that lie on it, ordered from b to a.
    let splits: Vec<((u32, u32), Vec<u32>)> = loops
        .par_iter()
        .filter(|(l, _)| l.len() <= EAR_MAX_EDGES)
        .flat_map_iter(|(l, _)| {
            let n = l.len();
            (0..n).filter_map(move |i| {
                let (a, b) = (l[i], l[(i + 1) % n]);
                let (pb, pa) = (p(b), p(a));
                let mut on: Vec<(f64, u32)> = l
                    .iter()
                    .filter(|&&w| w != a && w != b)
                    .filter_map(|&w| lies_on(pb, pa, p(w), snap).map(|along| (along, w)))
                    .collect();
                on.sort_by(|x, y| x.0.total_cmp(&y.0));
                (!on.is_empty()).then(|| ((b, a), on.into_iter().map(|(_, w)| w).collect()))
            })
        })
        .collect();
    if splits.is_empty() {
        return None;
    }
    // The facet of every surface half-edge to split (a boundary half-edge has one).
    let wanted: HashSet<(u32, u32)> = splits.iter().map(|(e, _)| *e).collect();
    let ends = vertex_set(v.len(), wanted.iter().flat_map(|&(a, b)| [a, b]));
    let has = |x: u32| ends[x as usize / 64] & (1 << (x % 64)) != 0;
    let owner: HashMap<(u32, u32), (usize, usize)> = triangles
        .par_iter()
        .enumerate()
        .filter(|(_, t)| has(t[0]) || has(t[1]))
        .flat_map_iter(|(f, t)| {
            let wanted = &wanted;
            (0..3).filter_map(move |k| {
                let e = (t[k], t[(k + 1) % 3]);
                (has(e.0) && has(e.1) && wanted.contains(&e)).then_some((e, (f, k)))
            })
        })
        .collect();
    // The splits that have a facet: its index, its corner opposite the edge, and the points.
    type Plan<'a> = ((u32, u32), usize, u32, &'a [u32]);
    let plans: Vec<Plan<'_>> = splits
        .iter()
        .filter_map(|((b, a), on)| {
            let &(f, k) = owner.get(&(*b, *a))?;
            Some(((*b, *a), f, triangles[f][(k + 2) % 3], on.as_slice()))
        })
        .collect();
    // A split adds an edge from the facet's opposite corner to every point. Where the mesh
    // has that edge already (a sliver's neighbour reaches the point), the split would give it
    // a third facet, so the edges between those corners and points are looked up first.
    let key = |a: u32, b: u32| (a.min(b), a.max(b));
    let near = vertex_set(
        v.len(),
        plans
            .iter()
            .flat_map(|(_, _, c, on)| std::iter::once(*c).chain(on.iter().copied())),
    );
    let mut edges: HashSet<(u32, u32)> = half_edges_within(triangles, &near)
        .into_iter()
        .map(|(a, b)| key(a, b))
        .collect();
    let mut gone: HashSet<(u32, u32)> = HashSet::default();
    let mut added: Vec<BoundaryEdge> = Vec::new();
    let mut split_facets: HashSet<usize> = HashSet::default();
    let mut corners = Vec::new();
    for ((b, a), f, c, on) in plans {
        let shell = shell_of[f];
        let chain: Vec<u32> = std::iter::once(b)
            .chain(on.iter().copied())
            .chain(std::iter::once(a))
            .collect();
        // A piece the clean stage would remove as flat (a corner on a line with an edge up
        // to rounding), or an edge the mesh (or an earlier split) has already, leaves the
        // crack to the filling instead.
        if chain.windows(2).any(|w| flat(v, [w[0], w[1], c], snap))
            || on.iter().any(|&w| edges.contains(&key(c, w)))
            || split_facets.contains(&f)
        {
            continue;
        }
        split_facets.insert(f);
        edges.extend(on.iter().map(|&w| key(c, w)));
        for (j, w) in chain.windows(2).enumerate() {
            let t = [w[0], w[1], c];
            if j == 0 {
                triangles[f] = t;
            } else {
                triangles.push(t);
                shell_of.push(shell);
            }
            added.push((w[0], w[1], shell));
        }
        gone.insert((b, a));
        corners.push(c);
    }
    if gone.is_empty() {
        return None;
    }
    // The new half-edges pair with the chain's boundary half-edges running the other way.
    let mut left: HashMap<BoundaryEdge, u32> = HashMap::default();
    for e in boundary
        .iter()
        .filter(|e| !gone.contains(&(e.0, e.1)))
        .chain(&added)
    {
        let twin = (e.1, e.0, e.2);
        match left.get_mut(&twin) {
            Some(count) if *count > 0 => *count -= 1,
            _ => *left.entry(*e).or_default() += 1,
        }
    }
    let rest: Vec<BoundaryEdge> = boundary
        .iter()
        .chain(&added)
        .filter(|e| {
            left.get_mut(e).is_some_and(|count| {
                let keep = *count > 0;
                *count = count.saturating_sub(1);
                keep
            })
        })
        .copied()
        .collect();
    Some(Split {
        rest,
        edges: gone.len() as u64,
        corners,
    })
}

/// Fill one loop: ear clipping for short loops (or the fill of gentlest folds, where that is
/// gentler than the ears' and the loop is short), the least-area fill when ear clipping
/// fails, a fan from the centroid otherwise. At most a constant times `l.len()` work.
fn fill_loop(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
    across: &Across,
) -> LoopFill {
    let work = Work::default();
    // The corner fan, if one fits: `O(n)`, tried on every loop first, since it fits almost
    // none, and only then is a fill of the loop alone weighed against it.
    let corner = || {
        work.add(l.len());
        corner_fan(v, l, across).map(|(tris, c)| LoopFill {
            tris,
            forced: false,
            centre: Some(c),
            corner: true,
            work: 0,
        })
    };
    let done = |mut fill: LoopFill| {
        fill.work = work.0.get();
        fill
    };
    if l.len() <= EAR_MAX_EDGES {
        let (mut tris, forced) = triangulate_counted(v, l, existing, &work);
        if !forced {
            let corner = if l.len() >= 4 { corner() } else { None };
            if corner.is_some() || (4..=SMOOTH_MAX_EDGES).contains(&l.len()) {
                // A flat fill (the loop is planar) is where every fill of the loop has the
                // same facets' normals, so no other can fold more gently.
                let (inside, ears) = sharpest_fold(v, &tris, across);
                work.add(tris.len() * tris.len());
                if inside > FLAT_BEND {
                    if let Some((smooth, fold)) = least_bend_counted(v, l, existing, across, &work)
                        && fold < ears - FLAT_BEND
                    {
                        tris = smooth;
                    }
                    // A fill that lies in the planes round the hole is the surface that was
                    // there: the gentlest fill if it does, else the gentlest of those that
                    // do (the gentlest fill of all may bevel an edge of the model, folding
                    // twice at 45° where the model folds once at 90°); with none, the
                    // surface's corner is what is missing.
                    // (Past `Planes::MAX` planes, no fill is taken to lie in them.)
                    let planes = Planes::round(v, l, across);
                    work.add(tris.len() * Planes::MAX);
                    if !planes.as_ref().is_some_and(|p| p.hold_all(v, &tris)) {
                        let flat = planes
                            .filter(|_| l.len() <= SMOOTH_MAX_EDGES)
                            .and_then(|p| {
                                polygon_dp(v, l, existing, Some(across), Some(&p), &work)
                            });
                        match (flat, corner) {
                            (Some((in_planes, _)), _) => tris = in_planes,
                            (None, Some(fill)) => return done(fill),
                            (None, None) => {}
                        }
                    }
                }
            }
            return done(LoopFill {
                tris,
                forced,
                centre: None,
                corner: false,
                work: 0,
            });
        }
        if let Some(fill) = corner() {
            return done(fill);
        }
        if let Some(tris) = min_area_counted(v, l, existing, &work) {
            return LoopFill {
                tris,
                forced: false,
                centre: None,
                corner: false,
                work: work.0.get(),
            };
        }
        if l.len() <= 3 {
            return LoopFill {
                tris,
                forced,
                centre: None,
                corner: false,
                work: work.0.get(),
            };
        }
    } else if let Some(fill) = corner() {
        return done(fill);
    }
    let (tris, centre, forced) = fan(v, l);
    work.add(l.len());
    LoopFill {
        tris,
        forced,
        centre: Some(centre),
        corner: false,
        work: work.0.get(),
    }
}

/// A facet lies in a plane of the surface round the hole when its normal is within this of
/// the normal of a facet across a loop edge (one minus the cosine: about 0.26°), and a corner
/// fan's facet must lie so in the plane of the facet across its own loop edge. Far above the
/// rounding of `f32` coordinates on facets of any size a model has, far below a real fold.
const IN_PLANE: f64 = 1e-5;

/// The planes of the surface facets across a loop's edges, each once (normals within
/// [`IN_PLANE`], offsets within `IN_PLANE` × the loop's size).
struct Planes {
    planes: Vec<(V3, f64)>,
    slack: f64,
}

impl Planes {
    /// At most this many planes are kept: a loop round more is on a curved surface, where
    /// no fill lies in the planes round it.
    const MAX: usize = 8;

    /// `None` when an edge has no facet across, or there are more than [`Planes::MAX`].
    fn round(v: &[[f32; 3]], l: &[u32], across: &Across) -> Option<Planes> {
        let n = l.len();
        let p = |x: u32| v[x as usize].map(f64::from);
        let size = bbox_of(l.iter().map(|&x| v[x as usize]))?.diagonal();
        let slack = IN_PLANE * size;
        let mut planes: Vec<(V3, f64)> = Vec::new();
        for i in 0..n {
            let m = normal_across(v, across, l[i], l[(i + 1) % n])?;
            let d = dot(m, p(l[i]));
            if !planes
                .iter()
                .any(|&(q, e)| 1.0 - dot(m, q) <= IN_PLANE && (d - e).abs() <= slack)
            {
                if planes.len() == Self::MAX {
                    return None;
                }
                planes.push((m, d));
            }
        }
        Some(Planes { planes, slack })
    }

    /// Does the facet with this unit normal through `at` lie in one of the planes?
    fn hold(&self, normal: Option<V3>, at: V3) -> bool {
        normal.is_some_and(|u| {
            self.planes
                .iter()
                .any(|&(m, d)| 1.0 - dot(u, m) <= IN_PLANE && (dot(m, at) - d).abs() <= self.slack)
        })
    }

    /// Does every facet of `tris` lie in one of the planes?
    fn hold_all(&self, v: &[[f32; 3]], tris: &[[u32; 3]]) -> bool {
        let p = |x: u32| v[x as usize].map(f64::from);
        tris.iter()
            .all(|t| self.hold(unit_normal(p(t[0]), p(t[1]), p(t[2])), p(t[0])))
    }
}

/// The fan that gives a hole back the corner it lost: round the one point where the planes of
/// the facets across the loop's edges meet, when every facet `(l[i], l[i+1], corner)` then
/// lies in the plane of the facet across its edge ([`IN_PLANE`]), faces the same way and is
/// not flat. Where a box's corner vertex and every facet round it are missing, the loop runs
/// along three faces, and no triangulation of the loop alone lies in them: it cuts the corner
/// off. The point is where three of the planes meet (the three most independent normals),
/// or, where the normals span only two directions (a vertex missing from an edge of the
/// model), the point of the two planes' line nearest the loop's centroid; it must lie within
/// the loop's bounding box grown by its diagonal. `O(n)`. Returns the facets (the corner as
/// [`CENTRE`]) and the corner, or `None`.
fn corner_fan(v: &[[f32; 3]], l: &[u32], across: &Across) -> Option<(Vec<[u32; 3]>, [f32; 3])> {
    /// Below this sine (about 0.57°), two planes are taken as one direction.
    const INDEPENDENT: f64 = 1e-2;
    let n = l.len();
    let p = |x: u32| v[x as usize].map(f64::from);
    let planes: Vec<(V3, f64)> = (0..n)
        .map(|i| {
            let m = normal_across(v, across, l[i], l[(i + 1) % n])?;
            Some((m, dot(m, p(l[i]))))
        })
        .collect::<Option<_>>()?;
    let (first, offset) = planes[0];
    let (second, s) = planes
        .iter()
        .map(|&(m, d)| ((m, d), norm(cross(first, m))))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if s < INDEPENDENT {
        return None;
    }
    let line = cross(first, second.0);
    let (third, det) = planes
        .iter()
        .map(|&(m, d)| ((m, d), dot(line, m)))
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
    let bbox = bbox_of(l.iter().map(|&x| v[x as usize]))?;
    // The third plane: the most independent one, or (two directions only) the plane through
    // the loop's centroid across the two planes' line.
    let third = if det.abs() >= INDEPENDENT * s {
        third
    } else {
        let c = l
            .iter()
            .fold([0.0; 3], |a, &x| {
                let q = p(x);
                [a[0] + q[0], a[1] + q[1], a[2] + q[2]]
            })
            .map(|x| x / n as f64);
        let u = line.map(|x| x / s);
        (u, dot(u, c))
    };
    let [a, b, c] = [(first, offset), second, third];
    let det = dot(a.0, cross(b.0, c.0));
    let num = [cross(b.0, c.0), cross(c.0, a.0), cross(a.0, b.0)];
    let x: V3 =
        std::array::from_fn(|k| (a.1 * num[0][k] + b.1 * num[1][k] + c.1 * num[2][k]) / det);
    let grow = bbox.diagonal();
    let (lo, hi) = (bbox.min.map(f64::from), bbox.max.map(f64::from));
    if (0..3).any(|k| !(x[k] >= lo[k] - grow && x[k] <= hi[k] + grow)) {
        return None;
    }
    // (`+ 0.0` turns `-0.0` into `0.0`, as the parser does.)
    let corner = x.map(|t| t as f32 + 0.0);
    let at = corner.map(f64::from);
    let tris: Vec<[u32; 3]> = (0..n).map(|i| [l[i], l[(i + 1) % n], CENTRE]).collect();
    let fits = tris.iter().zip(&planes).all(|(t, &(m, _))| {
        !degenerate_at([v[t[0] as usize], v[t[1] as usize], corner])
            && unit_normal(p(t[0]), p(t[1]), at).is_some_and(|u| 1.0 - dot(u, m) <= IN_PLANE)
    });
    fits.then_some((tris, corner))
}

/// A fan of facets `(l[i], l[i+1], centre)` round a new vertex at the centroid of the loop:
/// `O(n)`, and manifold whatever the loop's shape, as every new edge ends at the new vertex
/// (loop vertices are distinct). Returns the facets (the centre as [`CENTRE`]), the centre,
/// and whether a facet is flat.
pub(crate) fn fan(v: &[[f32; 3]], l: &[u32]) -> (Vec<[u32; 3]>, [f32; 3], bool) {
    let n = l.len();
    let sum = l.iter().fold([0.0f64; 3], |s, &i| {
        let p = v[i as usize];
        [
            s[0] + f64::from(p[0]),
            s[1] + f64::from(p[1]),
            s[2] + f64::from(p[2]),
        ]
    });
    let centre = sum.map(|x| (x / n as f64) as f32);
    let tris: Vec<[u32; 3]> = (0..n).map(|i| [l[i], l[(i + 1) % n], CENTRE]).collect();
    let flat = tris.iter().any(|t| {
        let p = t.map(|i| if i == CENTRE { centre } else { v[i as usize] });
        degenerate_at(p)
    });
    (tris, centre, flat)
}

/// Did filling close every hole properly? Every edge between two vertices of the boundary or
/// `corners` (the only edges a fill or a T-junction split touches) must now have exactly two
/// half-edges, one each way — a fill
/// that repeats an edge of the mesh or of another fill, or winds against its surface, shows
/// up here. Called on the final, oriented facets, so the report's `watertight` rests on the
/// mesh that is written, not only on the stages' counters. One parallel pass over the facets
/// plus a sort of the few half-edges found.
pub(crate) fn closed_around(
    vertices: usize,
    triangles: &[[u32; 3]],
    boundary: &[(u32, u32, u32)],
    corners: &[u32],
) -> bool {
    if boundary.is_empty() {
        return true;
    }
    let on = vertex_set(
        vertices,
        boundary
            .iter()
            .flat_map(|&(a, b, _)| [a, b])
            .chain(corners.iter().copied()),
    );
    let mut halves = half_edges_within(triangles, &on);
    halves.par_sort_unstable_by_key(|&(a, b)| (a.min(b), a.max(b), a));
    let mut i = 0;
    while i < halves.len() {
        let (a, b) = halves[i];
        let key = (a.min(b), a.max(b));
        let mut j = i + 1;
        while j < halves.len()
            && (halves[j].0.min(halves[j].1), halves[j].0.max(halves[j].1)) == key
        {
            j += 1;
        }
        // Sorted by direction inside the edge: one (low → high) then one (high → low).
        if j - i != 2 || halves[i].0 != key.0 || halves[i + 1].0 != key.1 {
            return false;
        }
        i = j;
    }
    true
}

/// A set of vertex ids below `n`, as a bitset.
pub(crate) fn vertex_set(n: usize, members: impl Iterator<Item = u32>) -> Vec<u64> {
    let mut bits = vec![0u64; n.div_ceil(64)];
    for x in members {
        bits[x as usize / 64] |= 1 << (x % 64);
    }
    bits
}

/// The half-edges `(from, to)` of `triangles` whose two ends are both in `set`, in facet
/// order (found in parallel).
pub(crate) fn half_edges_within(triangles: &[[u32; 3]], set: &[u64]) -> Vec<(u32, u32)> {
    corners_within(triangles, set)
        .into_iter()
        .map(|(a, b, _)| (a, b))
        .collect()
}

/// The half-edges `(from, to)` of `triangles` whose two ends are both in `set`, each with the
/// third corner of its facet, in facet order (found in parallel).
fn corners_within(triangles: &[[u32; 3]], set: &[u64]) -> Vec<(u32, u32, u32)> {
    let has = |x: u32| set[x as usize / 64] & (1 << (x % 64)) != 0;
    crate::keys::par_blocks(triangles.len(), |r, out| {
        for t in &triangles[r] {
            out.extend((0..3).filter_map(|k| {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                (has(a) && has(b)).then_some((a, b, t[(k + 2) % 3]))
            }));
        }
    })
}

/// The centroid of the closed polygon `p` and its Newell normal taken round it (the sum of
/// the cross products of consecutive corners: twice the enclosed area, along the normal).
pub(crate) fn newell(p: &[V3]) -> (V3, V3) {
    let n = p.len();
    let c = p
        .iter()
        .fold([0.0; 3], |s, q| [s[0] + q[0], s[1] + q[1], s[2] + q[2]])
        .map(|x| x / n as f64);
    let mut sum = [0.0; 3];
    for i in 0..n {
        let x = cross(sub(p[i], c), sub(p[(i + 1) % n], c));
        sum = [sum[0] + x[0], sum[1] + x[1], sum[2] + x[2]];
    }
    (c, sum)
}

/// A point or vector in `f64` (the geometry helpers below serve the other stages too).
pub(crate) type V3 = [f64; 3];

pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// Ear-clip one loop. Returns the triangles and whether an ear had to be forced (or the last
/// facet is degenerate).
#[cfg(test)]
pub(crate) fn triangulate(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
) -> (Vec<[u32; 3]>, bool) {
    triangulate_counted(v, l, existing, &Work::default())
}

fn triangulate_counted(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
    work: &Work,
) -> (Vec<[u32; 3]>, bool) {
    let n = l.len();
    if n == 3 {
        let t = [l[0], l[1], l[2]];
        return (vec![t], degenerate(v, t));
    }
    let p: Vec<V3> = l.iter().map(|&i| v[i as usize].map(f64::from)).collect();
    // Newell normal around the centroid, and a plane basis (u, w) with u × w = normal.
    let (c, nn) = newell(&p);
    let len = norm(nn);
    let nn = if len > 0.0 {
        nn.map(|x| x / len)
    } else {
        [0.0, 0.0, 1.0]
    };
    let helper = if nn[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let u = cross(helper, nn);
    let u = u.map(|x| x / norm(u));
    let w = cross(nn, u);
    let q: Vec<[f64; 2]> = p
        .iter()
        .map(|x| [dot(sub(*x, c), u), dot(sub(*x, c), w)])
        .collect();

    let mut prev: Vec<usize> = (0..n).map(|i| (i + n - 1) % n).collect();
    let mut next: Vec<usize> = (0..n).map(|i| (i + 1) % n).collect();
    let mut alive = vec![true; n];
    let mut out = Vec::with_capacity(n - 2);
    let mut forced = false;
    let mut made: HashSet<(u32, u32)> = HashSet::default();

    let cross2 = |a: [f64; 2], b: [f64; 2], c: [f64; 2]| {
        (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    };
    let quality = |a: usize, b: usize, c: usize| {
        let area = norm(cross(sub(p[b], p[a]), sub(p[c], p[a])));
        let s = dot(sub(p[b], p[a]), sub(p[b], p[a]))
            + dot(sub(p[c], p[b]), sub(p[c], p[b]))
            + dot(sub(p[a], p[c]), sub(p[a], p[c]));
        if s > 0.0 { area / s } else { 0.0 }
    };
    // Ear score, or None when the ear is not valid.
    let ear = |i: usize,
               prev: &[usize],
               next: &[usize],
               alive: &[bool],
               made: &HashSet<(u32, u32)>|
     -> Option<f64> {
        let (a, b, cc) = (prev[i], i, next[i]);
        if cross2(q[a], q[b], q[cc]) <= 0.0 {
            return None;
        }
        let (va, vc) = (l[a], l[cc]);
        let key = (va.min(vc), va.max(vc));
        if va == vc || existing.contains(&key) || made.contains(&key) {
            return None;
        }
        if degenerate(v, [l[a], l[b], l[cc]]) {
            return None;
        }
        let mut j = next[cc];
        while j != a {
            work.add(1);
            if alive[j] && l[j] != va && l[j] != vc && l[j] != l[b] {
                let x = q[j];
                if cross2(q[a], q[b], x) >= 0.0
                    && cross2(q[b], q[cc], x) >= 0.0
                    && cross2(q[cc], q[a], x) >= 0.0
                {
                    return None;
                }
            }
            j = next[j];
        }
        Some(quality(a, b, cc))
    };
    let mut score: Vec<Option<f64>> = (0..n)
        .map(|i| ear(i, &prev, &next, &alive, &made))
        .collect();
    let mut remaining = n;
    let mut start = 0usize;
    while remaining > 3 {
        // Best valid ear; if none, the most convex one (forced).
        let mut best: Option<(usize, f64)> = None;
        let mut i = start;
        work.add(remaining);
        for _ in 0..remaining {
            if let Some(s) = score[i]
                && best.is_none_or(|(_, bs)| s > bs)
            {
                best = Some((i, s));
            }
            i = next[i];
        }
        let b = match best {
            Some((b, _)) => b,
            None => {
                forced = true;
                let mut bi = start;
                let mut bv = f64::NEG_INFINITY;
                let mut i = start;
                for _ in 0..remaining {
                    let cv = cross2(q[prev[i]], q[i], q[next[i]]);
                    let ok = l[prev[i]] != l[next[i]];
                    if ok && cv > bv {
                        bv = cv;
                        bi = i;
                    }
                    i = next[i];
                }
                bi
            }
        };
        let (a, cc) = (prev[b], next[b]);
        out.push([l[a], l[b], l[cc]]);
        made.insert((l[a].min(l[cc]), l[a].max(l[cc])));
        alive[b] = false;
        next[a] = cc;
        prev[cc] = a;
        remaining -= 1;
        start = a;
        score[a] = ear(a, &prev, &next, &alive, &made);
        score[cc] = ear(cc, &prev, &next, &alive, &made);
    }
    // The last three vertices make the last facet, whatever its shape: its edges are loop edges
    // or chords already made, but it can be flat (then a second repair would remove it).
    let a = start;
    let last = [l[a], l[next[a]], l[next[next[a]]]];
    forced |= degenerate(v, last);
    out.push(last);
    (out, forced)
}

/// The fill of least total area among those that add no edge the mesh already has and no
/// degenerate facet, by dynamic programming over the loop's sub-chains (as in Liepa, "Filling
/// holes in meshes", 2003): `O(n³)` time, `O(n²)` memory, so only for loops of up to
/// [`MIN_AREA_MAX_EDGES`] edges (a bounded cost per loop). It needs no projection, so it closes the strongly non-planar
/// loops (a hole wrapping most of the way round a thin tube) whose projection onto any plane
/// overlaps itself and leaves ear clipping without a valid ear. Every chord of a polygon
/// triangulation is used by exactly two of its facets, so the fill is manifold. Facets keep the
/// loop order, as in [`triangulate`]. `None` when no such fill exists (or the loop is too long).
#[cfg(test)]
pub(crate) fn min_area(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
) -> Option<Vec<[u32; 3]>> {
    min_area_counted(v, l, existing, &Work::default())
}

fn min_area_counted(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
    work: &Work,
) -> Option<Vec<[u32; 3]>> {
    if l.len() > MIN_AREA_MAX_EDGES {
        return None;
    }
    polygon_dp(v, l, existing, None, None, work).map(|(tris, _)| tris)
}

/// The fill whose sharpest fold is the gentlest, and of those the one whose folds add up to
/// the least (on a box, two fills can share a sharpest fold of 90°: one folds once along the
/// box's edge, the other twice to cut the corner off), then the least area (Liepa's weight,
/// as in CGAL's hole filling, with the sum of folds between): a fold is one minus the cosine
/// between the normals of two facets that share an edge, the fill's own chords and the
/// loop's edges with the facet across each (`across`). Same rules and cost as [`min_area`], for loops of up to
/// [`SMOOTH_MAX_EDGES`] edges. Returns the facets and the sharpest fold.
#[cfg(test)]
pub(crate) fn least_bend(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
    across: &Across,
) -> Option<(Vec<[u32; 3]>, f64)> {
    least_bend_counted(v, l, existing, across, &Work::default())
}

fn least_bend_counted(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
    across: &Across,
    work: &Work,
) -> Option<(Vec<[u32; 3]>, f64)> {
    if l.len() > SMOOTH_MAX_EDGES {
        return None;
    }
    polygon_dp(v, l, existing, Some(across), None, work)
}

/// The unit normal of the facet with corners `a b c` (in winding order), or `None` when it has
/// no area.
pub(crate) fn unit_normal(a: V3, b: V3, c: V3) -> Option<V3> {
    let n = cross(sub(b, a), sub(c, a));
    let len = norm(n);
    (len > 0.0).then(|| n.map(|x| x / len))
}

/// The fold between two facets with these unit normals (`0` where either has none).
fn fold(a: Option<V3>, b: Option<V3>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => 1.0 - dot(a, b),
        _ => 0.0,
    }
}

/// The normal of the facet across the hole edge `a → b` (its surface half-edge is `b → a`).
pub(crate) fn normal_across(v: &[[f32; 3]], across: &Across, a: u32, b: u32) -> Option<V3> {
    let c = *across.get(&(b, a))?;
    let p = |x: u32| v[x as usize].map(f64::from);
    unit_normal(p(b), p(a), p(c))
}

/// The sharpest fold of a fill among its own facets (between two that share a chord), and
/// overall (also between a facet and the surface facet across a loop edge).
fn sharpest_fold(v: &[[f32; 3]], tris: &[[u32; 3]], across: &Across) -> (f64, f64) {
    let p = |x: u32| v[x as usize].map(f64::from);
    let normals: Vec<Option<V3>> = tris
        .iter()
        .map(|t| unit_normal(p(t[0]), p(t[1]), p(t[2])))
        .collect();
    let (mut inside, mut overall) = (0.0f64, 0.0f64);
    for (t, &n) in tris.iter().zip(&normals) {
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            // The fill's own neighbour across `a → b`, or else the surface's.
            match tris
                .iter()
                .position(|u| (0..3).any(|j| u[j] == b && u[(j + 1) % 3] == a))
            {
                Some(i) => inside = inside.max(fold(n, normals[i])),
                None => overall = overall.max(fold(n, normal_across(v, across, a, b))),
            }
        }
    }
    (inside, overall.max(inside))
}

/// Dynamic programming over the loop's sub-chains: the triangulation that adds no edge the
/// mesh already has and no degenerate facet, and of those the one whose sharpest fold
/// (with `across`) is the gentlest, then whose folds add up to the least, then the least
/// area; without `across`, only the least area. `O(n³)` time, `O(n²)` memory. Returns the
/// facets and their sharpest fold.
fn polygon_dp(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
    across: Option<&Across>,
    only: Option<&Planes>,
    work: &Work,
) -> Option<(Vec<[u32; 3]>, f64)> {
    let n = l.len();
    if n < 3 {
        return None;
    }
    let p: Vec<V3> = l.iter().map(|&i| v[i as usize].map(f64::from)).collect();
    // The normal of the facet across each loop edge `l[i] → l[i + 1]`.
    let rim: Vec<Option<V3>> = match across {
        Some(across) => (0..n)
            .map(|i| normal_across(v, across, l[i], l[(i + 1) % n]))
            .collect(),
        None => vec![None; n],
    };
    let at = |i: usize, k: usize| i * n + k;
    // Cost (sharpest fold, sum of folds, area) of the best fill of the chain i..=k closed by
    // the chord (i, k); infinite when the chord already exists in the mesh or the chain
    // cannot be filled. `top` is the normal of that fill's facet on the chord.
    let mut cost = vec![(f64::INFINITY, f64::INFINITY, f64::INFINITY); n * n];
    let mut top: Vec<Option<V3>> = vec![None; n * n];
    let mut split = vec![0u32; n * n];
    for i in 0..n - 1 {
        cost[at(i, i + 1)] = (0.0, 0.0, 0.0);
        top[at(i, i + 1)] = rim[i];
    }
    for span in 2..n {
        for i in 0..n - span {
            let k = i + span;
            let closing = i == 0 && k == n - 1;
            let (a, b) = (l[i], l[k]);
            if a == b || (!closing && existing.contains(&(a.min(b), a.max(b)))) {
                continue;
            }
            let mut best = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
            let mut best_normal = None;
            work.add(k - i - 1);
            for m in i + 1..k {
                let (c1, c2) = (cost[at(i, m)], cost[at(m, k)]);
                let inner = (c1.0.max(c2.0), c1.1 + c2.1, c1.2 + c2.2);
                if inner >= best {
                    continue;
                }
                let c = cross(sub(p[m], p[i]), sub(p[k], p[i]));
                let twice_area = norm(c);
                let normal = (twice_area > 0.0).then(|| c.map(|x| x / twice_area));
                let (mut sharpest, mut folds) = (inner.0, inner.1);
                if across.is_some() {
                    let mut folds_at = [top[at(i, m)], top[at(m, k)], None];
                    if closing {
                        folds_at[2] = rim[n - 1];
                    }
                    for f in folds_at.map(|x| fold(normal, x)) {
                        sharpest = sharpest.max(f);
                        folds += f;
                    }
                }
                let total = (sharpest, folds, inner.2 + 0.5 * twice_area);
                if total < best
                    && !degenerate(v, [l[i], l[m], l[k]])
                    && only.is_none_or(|planes| planes.hold(normal, p[i]))
                {
                    best = total;
                    best_normal = normal;
                    split[at(i, k)] = m as u32;
                }
            }
            cost[at(i, k)] = best;
            top[at(i, k)] = best_normal;
        }
    }
    let (bend, _, area) = cost[at(0, n - 1)];
    if !area.is_finite() {
        return None;
    }
    let mut out = Vec::with_capacity(n - 2);
    let mut todo = vec![(0, n - 1)];
    while let Some((i, k)) = todo.pop() {
        let m = split[at(i, k)] as usize;
        out.push([l[i], l[m], l[k]]);
        if m > i + 1 {
            todo.push((i, m));
        }
        if k > m + 1 {
            todo.push((m, k));
        }
    }
    Some((out, bend))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sheet: above the x axis two facets meet at M = (1, 0), below it one facet runs from
    /// A = (0, 0) to B = (2, 0) whole (facets `[0, 2, 3], [2, 1, 3], [0, 4, 1]`). A, M, B form
    /// a crack of zero area.
    fn cracked_sheet() -> Vec<[f32; 3]> {
        vec![
            [0.0, 0.0, 0.0],  // A 0
            [2.0, 0.0, 0.0],  // B 1
            [1.0, 0.0, 0.0],  // M 2
            [1.0, 1.0, 0.0],  // C 3
            [1.0, -1.0, 0.0], // D 4
        ]
    }

    #[test]
    fn a_t_junction_is_closed_by_splitting_the_edge_not_by_a_flat_fill() {
        let v = cracked_sheet();
        let mut tris = vec![[0, 2, 3], [2, 1, 3], [0, 4, 1]];
        let mut shell_of = vec![0; 3];
        let boundary: Vec<(u32, u32, u32)> =
            [(0, 2), (2, 1), (1, 3), (3, 0), (0, 4), (4, 1), (1, 0)]
                .iter()
                .map(|&(a, b)| (a, b, 0))
                .collect();
        let (loops, _) = trace(&boundary);
        let Split {
            rest,
            edges,
            corners,
        } = split_t_junctions(&v, &mut tris, &mut shell_of, &boundary, &loops, 0.0).unwrap();
        assert_eq!((edges, corners), (1, vec![4]));
        // The lower facet is now two, through M; the crack's edges are all paired.
        assert_eq!(tris.len(), 4);
        assert_eq!(shell_of, vec![0; 4]);
        assert!(tris.iter().all(|&t| !degenerate(&v, t)));
        let mut rest: Vec<(u32, u32)> = rest.iter().map(|e| (e.0, e.1)).collect();
        rest.sort_unstable();
        assert_eq!(rest, vec![(0, 4), (1, 3), (3, 0), (4, 1)]);

        // M off the segment by more than rounding (and no weld distance to explain it): no
        // junction, the crack stays a hole for the filler.
        let mut v2 = v.clone();
        v2[2][1] = 1e-3;
        let mut tris2 = vec![[0, 2, 3], [2, 1, 3], [0, 4, 1]];
        let mut shells2 = vec![0; 3];
        let (loops2, _) = trace(&boundary);
        assert!(
            split_t_junctions(&v2, &mut tris2, &mut shells2, &boundary, &loops2, 0.0).is_none()
        );
        // ... unless the weld merged over more than that, and the offset is small against
        // the distance to both ends.
        let split =
            split_t_junctions(&v2, &mut tris2, &mut shells2, &boundary, &loops2, 2e-3).unwrap();
        assert_eq!(split.edges, 1);
    }

    /// The fan through a T-junction's point adds an edge from the facet's opposite corner to
    /// the point; where the mesh has that edge already, the split would give it a third facet,
    /// so it is not made and the crack is left to the filling.
    #[test]
    fn a_t_junction_split_never_repeats_an_edge_of_the_mesh() {
        // The cracked sheet plus a facet D-M-E off it: the edge D-M exists before the split.
        let mut v = cracked_sheet();
        v.push([1.0, -0.5, 1.0]); // E 5
        let tris = vec![[0, 2, 3], [2, 1, 3], [0, 4, 1], [4, 2, 5]];
        let boundary: Vec<(u32, u32, u32)> = [
            (0, 2),
            (2, 1),
            (1, 3),
            (3, 0),
            (0, 4),
            (4, 1),
            (1, 0),
            (4, 2),
            (2, 5),
            (5, 4),
        ]
        .iter()
        .map(|&(a, b)| (a, b, 0))
        .collect();
        let (loops, _) = trace(&boundary);
        let mut split = tris.clone();
        let mut shell_of = vec![0; 4];
        assert!(split_t_junctions(&v, &mut split, &mut shell_of, &boundary, &loops, 0.0).is_none());
        assert_eq!(split, tris);
    }

    #[test]
    fn square_hole_two_triangles_same_winding() {
        let v = vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
        ];
        let (t, forced) = triangulate(&v, &[0, 1, 2, 3], &HashSet::default());
        assert!(!forced);
        assert_eq!(t.len(), 2);
        for f in t {
            let n = crate::stl::facet_normal(v[f[0] as usize], v[f[1] as usize], v[f[2] as usize]);
            assert!(n[2] > 0.99);
        }
    }

    #[test]
    fn concave_loop_is_not_fanned() {
        // An L-shaped loop: a fan from vertex 0 would cover the notch.
        let pts = [[0., 0.], [2., 0.], [2., 1.], [1., 1.], [1., 2.], [0., 2.]];
        let v: Vec<[f32; 3]> = pts.iter().map(|p| [p[0], p[1], 0.0]).collect();
        let l: Vec<u32> = (0..6).collect();
        let (t, forced) = triangulate(&v, &l, &HashSet::default());
        assert!(!forced);
        assert_eq!(t.len(), 4);
        let area: f64 = t
            .iter()
            .map(|f| {
                let p = f.map(|i| v[i as usize].map(f64::from));
                cross(sub(p[1], p[0]), sub(p[2], p[0]))[2] / 2.0
            })
            .sum();
        assert!((area - 3.0).abs() < 1e-9, "{area}");
    }

    /// Every edge of `loop_ + fill` is used exactly twice, in opposite directions.
    fn closes_manifold(l: &[u32], fill: &[[u32; 3]]) -> bool {
        let mut e: HashMap<(u32, u32), u32> = HashMap::default();
        let n = l.len();
        // The surface around the hole runs against the loop.
        for i in 0..n {
            *e.entry((l[(i + 1) % n], l[i])).or_default() += 1;
        }
        for f in fill {
            for k in 0..3 {
                *e.entry((f[k], f[(k + 1) % 3])).or_default() += 1;
            }
        }
        e.iter()
            .all(|(&(a, b), &c)| c == 1 && e.get(&(b, a)) == Some(&1))
    }

    #[test]
    fn loop_wrapped_round_a_tube_is_closed_without_forcing() {
        // The rim of a band cut out of a tube, wrapping 300° round it: its projection onto any
        // plane overlaps itself, so ear clipping finds no valid ear; the minimal-area fill
        // closes it with a manifold surface.
        let k = 10;
        let mut v: Vec<[f32; 3]> = Vec::new();
        for (z, dir) in [(0.0f32, 1.0f32), (1.0, -1.0)] {
            for i in 0..=k {
                let t = (i as f32 / k as f32 - 0.5 * (1.0 - dir)) * dir * 300f32.to_radians();
                v.push([t.cos(), t.sin(), z]);
            }
        }
        let l: Vec<u32> = (0..v.len() as u32).collect();
        let (_, forced) = triangulate(&v, &l, &HashSet::default());
        assert!(forced);
        let fill = min_area(&v, &l, &HashSet::default()).expect("a fill");
        assert_eq!(fill.len(), l.len() - 2);
        assert!(closes_manifold(&l, &fill));
        assert!(fill.iter().all(|&f| !degenerate(&v, f)));
    }

    #[test]
    fn a_hole_across_a_sharp_edge_gets_the_edge_back() {
        // A hole in a box over the edge where the top (z = 1, normal +z) meets the front
        // (y = 0, normal -y), reaching 3 along the top and 3 down the front: A B C D on the
        // top, D C E F on the front, the ridge D-C inside the loop. The fill must fold along
        // D-C, as the box does, not cut across the corner.
        let v: Vec<[f32; 3]> = vec![
            [0.0, 3.0, 1.0],  // 0 A
            [0.0, 0.0, 1.0],  // 1 D
            [0.0, 0.0, -2.0], // 2 E
            [2.0, 0.0, -2.0], // 3 F
            [2.0, 0.0, 1.0],  // 4 C
            [2.0, 3.0, 1.0],  // 5 B
            [-1.0, 1.5, 1.0], // the third corners of the facets round the hole
            [-1.0, 0.0, -0.5],
            [1.0, 0.0, -3.0],
            [3.0, 0.0, -0.5],
            [3.0, 1.5, 1.0],
            [1.0, 4.0, 1.0],
        ];
        let l = [0, 1, 2, 3, 4, 5];
        let across: Across = [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (0, 5)]
            .into_iter()
            .zip(6..)
            .collect();
        let fill = fill_loop(&v, &l, &HashSet::default(), &across);
        assert!(fill.centre.is_none() && !fill.forced);
        assert!(closes_manifold(&l, &fill.tris));
        let ridge = |t: &[u32; 3]| t.contains(&1) && t.contains(&4);
        // Ear clipping alone, on the loop's best-fit plane, cuts across.
        let ears = triangulate(&v, &l, &HashSet::default()).0;
        assert_eq!(ears.iter().filter(|t| ridge(t)).count(), 0, "{ears:?}");
        assert_eq!(
            fill.tris.iter().filter(|t| ridge(t)).count(),
            2,
            "{:?}",
            fill.tris
        );
        // Its sharpest fold is the box's own, 90° (one minus the cosine: 1), on the ridge.
        assert!((sharpest_fold(&v, &fill.tris, &across).1 - 1.0).abs() < 1e-9);
        // The gentlest fill, asked directly, is the same.
        let (smooth, fold) = least_bend(&v, &l, &HashSet::default(), &across).expect("a fill");
        assert!((fold - 1.0).abs() < 1e-9);
        assert_eq!(smooth.iter().filter(|t| ridge(t)).count(), 2, "{smooth:?}");
        // On a flat loop (a hole in one plane face) the ears are kept: the same fill as
        // ear clipping alone.
        let flat: Vec<[f32; 3]> = v.iter().map(|p| [p[0], p[1] + p[2] - 1.0, 0.0]).collect();
        let ears = triangulate(&flat, &l, &HashSet::default()).0;
        assert_eq!(
            fill_loop(&flat, &l, &HashSet::default(), &across).tris,
            ears
        );
    }

    #[test]
    fn a_hole_over_an_edge_keeps_the_edge_and_a_lost_corner_is_given_back() {
        // Round a vertex M = (0, 0, 0) on the box edge along x where the top (z = 0, normal
        // +z) meets the front (y = 0, normal -y): five facets, all missing, M with them.
        let v: Vec<[f32; 3]> = vec![
            [-0.5, 1.0, 0.0], // 0 T1 (top)
            [-1.0, 0.0, 0.0], // 1 P (on the edge)
            [0.2, 0.0, -1.0], // 2 F (front)
            [1.0, 0.0, 0.0],  // 3 Q (on the edge)
            [0.6, 1.0, 0.0],  // 4 T2 (top)
            [-1.0, 2.0, 0.0], // the third corners of the facets round the hole
            [0.0, 2.0, 0.0],
            [2.0, 1.0, 0.0],
            [1.0, 0.0, -2.0],
            [-1.0, 0.0, -2.0],
        ];
        let l = [0, 1, 2, 3, 4];
        let across: Across = [(1, 0), (2, 1), (3, 2), (4, 3), (0, 4)]
            .into_iter()
            .zip([5, 9, 8, 7, 6])
            .collect();
        // Every surface facet across a loop edge faces the way its plane does.
        for i in 0..5 {
            let n = normal_across(&v, &across, l[i], l[(i + 1) % 5]).expect("a facet across");
            let want = if i == 1 || i == 2 {
                [0.0, -1.0, 0.0]
            } else {
                [0.0, 0.0, 1.0]
            };
            assert!(dot(n, want) > 0.999_999, "edge {i}: {n:?}");
        }
        // The planes' line is the edge: the corner fan's centre is on it, and each of its
        // facets lies in the plane across its loop edge.
        let (tris, c) = corner_fan(&v, &l, &across).expect("a corner");
        assert_eq!(tris.len(), 5);
        assert!(
            c[1] == 0.0 && c[2] == 0.0 && c[0] > -1.0 && c[0] < 1.0,
            "{c:?}"
        );
        // The gentlest fill of the loop alone spreads the edge's 90° over two chords at
        // about 45° (a bevel: the box loses volume). A fill of the loop alone lies in the
        // two planes (P and Q are on the edge, so M is not needed): the gentlest of those is
        // kept, with no vertex added.
        let planes = Planes::round(&v, &l, &across).expect("two planes");
        assert_eq!(planes.planes.len(), 2);
        let (smooth, _) = least_bend(&v, &l, &HashSet::default(), &across).expect("a fill");
        assert!(!planes.hold_all(&v, &smooth), "{smooth:?}");
        let fill = fill_loop(&v, &l, &HashSet::default(), &across);
        assert!(fill.centre.is_none() && !fill.corner, "{:?}", fill.tris);
        assert!(planes.hold_all(&v, &fill.tris), "{:?}", fill.tris);
        assert!(closes_manifold(&l, &fill.tris));
        // The corner of a box: three faces round the origin, each a fan round a point inside
        // it, without the six facets at the corner. No fill of the loop lies in the faces;
        // the corner fan gives the corner back.
        let v: Vec<[f32; 3]> = vec![
            [4.0, 0.0, 0.0], // 0 on the x edge
            [2.2, 0.8, 0.0], // 1 inside the bottom (z = 0)
            [0.0, 3.0, 0.0], // 2 on the y edge
            [0.0, 1.4, 0.6], // 3 inside the side x = 0
            [0.0, 0.0, 2.0], // 4 on the z edge
            [1.2, 0.0, 0.9], // 5 inside the front (y = 0)
            [4.0, 3.0, 0.0], // third corners: the bottom's, the side's, the front's
            [0.0, 3.0, 2.0],
            [4.0, 0.0, 2.0],
        ];
        // Hole order 0 1 2 3 4 5 (the missing facets' own winding, seen from outside).
        let l = [0, 1, 2, 3, 4, 5];
        let across: Across = [
            ((1, 0), 6),
            ((2, 1), 6),
            ((3, 2), 7),
            ((4, 3), 7),
            ((5, 4), 8),
            ((0, 5), 8),
        ]
        .into_iter()
        .collect();
        let fill = fill_loop(&v, &l, &HashSet::default(), &across);
        assert!(fill.corner, "{:?}", fill.tris);
        assert_eq!(fill.centre, Some([0.0; 3]));
        assert!(closes_manifold(&l, &fill.tris));
        // The two facets across the bottom's edges tilted (their third corner lifted): they
        // meet the side and the front at no one point, and the fill is the loop's own.
        let mut tilted = v.clone();
        tilted[6][2] = 0.5;
        assert!(corner_fan(&tilted, &l, &across).is_none());
        let fill = fill_loop(&tilted, &l, &HashSet::default(), &across);
        assert!(fill.centre.is_none() && closes_manifold(&l, &fill.tris));
    }

    #[test]
    fn min_area_never_repeats_an_existing_edge() {
        // A square whose diagonal 0-2 already exists: the fill must use 1-3.
        let v = vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
        ];
        let existing = HashSet::from_iter([(0, 2)]);
        let fill = min_area(&v, &[0, 1, 2, 3], &existing).expect("a fill");
        assert_eq!(fill.len(), 2);
        assert!(fill.iter().all(|f| f.contains(&1) && f.contains(&3)));
        assert!(closes_manifold(&[0, 1, 2, 3], &fill));
        // Both diagonals taken: no fill.
        let both = HashSet::from_iter([(0, 2), (1, 3)]);
        assert!(min_area(&v, &[0, 1, 2, 3], &both).is_none());
    }

    #[test]
    fn loops_stay_within_their_shell() {
        // Two open facets of different shells touching at a vertex: each loop is one facet's
        // rim with that facet's shell, never chained through the shared vertex.
        // Facets (0, 4, 2) of shell 0 and (2, 1, 3) of shell 1 touch at vertex 2.
        let boundary = [
            (0, 4, 0),
            (4, 2, 0),
            (2, 0, 0),
            (2, 1, 1),
            (1, 3, 1),
            (3, 2, 1),
        ];
        let (loops, open) = trace(&boundary);
        assert_eq!(open, 0);
        assert_eq!(loops.len(), 2);
        for (l, s) in loops {
            let want: &[u32] = if s == 0 { &[0, 2, 4] } else { &[1, 2, 3] };
            let mut got = l.clone();
            got.sort_unstable();
            assert_eq!(got, want, "shell {s}: {l:?}");
        }
    }

    #[test]
    fn a_flat_last_facet_counts_as_forced() {
        // Three collinear loop vertices can only close as a degenerate facet.
        let v = vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]];
        let (_, forced) = triangulate(&v, &[0, 1, 2], &HashSet::default());
        assert!(forced);
        assert!(min_area(&v, &[0, 1, 2], &HashSet::default()).is_none());
    }

    /// The final check sees a properly closed hole, an edge repeated by a fill, a fill wound
    /// against its surface, and a hole left open.
    #[test]
    fn closed_around_checks_the_edges_fills_touch() {
        // A tetrahedron whose facet 0-2-1 was the hole: boundary half-edges in surface
        // direction are the reverse of that facet's edges.
        let surface = vec![[0, 1, 3], [1, 2, 3], [2, 0, 3]];
        let boundary = [(1, 0, 0), (2, 1, 0), (0, 2, 0)];
        let mut closed = surface.clone();
        closed.push([0, 2, 1]);
        assert!(closed_around(4, &closed, &boundary, &[]));
        let mut wrong_way = surface.clone();
        wrong_way.push([0, 1, 2]);
        assert!(!closed_around(4, &wrong_way, &boundary, &[]));
        let mut twice = closed.clone();
        twice.push([0, 2, 1]);
        assert!(!closed_around(4, &twice, &boundary, &[]));
        assert!(!closed_around(4, &surface, &boundary, &[]));
        assert!(closed_around(4, &surface, &[], &[]));
        // An edge from the boundary to a split's corner (3) used a third time is seen only
        // when the corner is named.
        let mut corner = closed.clone();
        corner.push([3, 0, 4]);
        assert!(closed_around(5, &corner, &boundary, &[]));
        assert!(!closed_around(5, &corner, &boundary, &[3]));
    }
}
