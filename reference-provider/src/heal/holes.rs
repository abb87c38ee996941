//! Hole filling.
//!
//! Boundary half-edges (surface direction `u → v`) give hole edges `v → u`; following them
//! vertex to vertex traces the hole loops (a loop that passes a vertex twice is split there).
//! Each loop up to the size limit is triangulated by ear clipping on its projection onto the
//! loop's best-fit plane (Newell normal): at every step the valid ear of best shape (area over
//! the sum of squared edge lengths) is cut, so the result avoids slivers and fans. An ear is
//! valid when it is convex, holds no other loop vertex, is not degenerate and its new edge does
//! not already exist in the mesh. The loop order makes the new facets wind like the surface.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::clean::degenerate;

#[derive(Debug, Default)]
pub(crate) struct HoleStats {
    pub found: u64,
    pub filled: u64,
    pub left_open: u64,
    pub facets_added: u64,
    /// Some loop could only be closed with a forced (non-valid) ear.
    pub unsafe_fill: bool,
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
fn trace(boundary: &[(u32, u32, u32)]) -> (Vec<(Vec<u32>, u32)>, u64) {
    // Hole edges v → u, sorted by start vertex.
    let mut edges: Vec<(u32, u32, u32)> = boundary.iter().map(|&(a, b, s)| (b, a, s)).collect();
    edges.sort_unstable();
    let mut used = vec![false; edges.len()];
    let next_from = |x: u32, used: &[bool]| -> Option<usize> {
        let start = edges.partition_point(|e| e.0 < x);
        (start..edges.len())
            .take_while(|&i| edges[i].0 == x)
            .find(|&i| !used[i])
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
        let mut at: HashMap<u32, usize> = HashMap::from([(edges[first].0, 0)]);
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
            match next_from(cur, &used) {
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

pub(crate) fn fill(
    v: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    shell_of: &mut Vec<u32>,
    boundary: &[(u32, u32, u32)],
    max_edges: u32,
) -> HoleStats {
    let (loops, open) = trace(boundary);
    let mut stats = HoleStats {
        found: loops.len() as u64 + open,
        left_open: open,
        ..HoleStats::default()
    };
    if loops.is_empty() {
        return stats;
    }
    // Existing edges between loop vertices: a fill must not create them a second time.
    let mut on_loop = vec![0u64; v.len().div_ceil(64)];
    for (l, _) in &loops {
        for &x in l {
            on_loop[x as usize / 64] |= 1 << (x % 64);
        }
    }
    let bit = |x: u32| on_loop[x as usize / 64] & (1 << (x % 64)) != 0;
    let existing: HashSet<(u32, u32)> = if loops.iter().any(|(l, _)| l.len() > 3) {
        triangles
            .par_iter()
            .flat_map_iter(|t| {
                (0..3).filter_map(move |k| {
                    let (a, b) = (t[k], t[(k + 1) % 3]);
                    (bit(a) && bit(b)).then_some((a.min(b), a.max(b)))
                })
            })
            .collect()
    } else {
        HashSet::new()
    };
    type Fill = Option<(Vec<[u32; 3]>, bool, u32)>;
    let results: Vec<Fill> = loops
        .par_iter()
        .map(|(l, s)| {
            if l.len() < 3 || l.len() > max_edges as usize {
                return None;
            }
            let (tris, forced) = triangulate(v, l, &existing);
            Some((tris, forced, *s))
        })
        .collect();
    for r in results {
        match r {
            None => stats.left_open += 1,
            Some((tris, forced, s)) => {
                stats.filled += 1;
                stats.unsafe_fill |= forced;
                stats.facets_added += tris.len() as u64;
                shell_of.extend(std::iter::repeat_n(s, tris.len()));
                triangles.extend(tris);
            }
        }
    }
    stats
}

type V3 = [f64; 3];

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// Ear-clip one loop. Returns the triangles and whether an ear had to be forced.
pub(crate) fn triangulate(
    v: &[[f32; 3]],
    l: &[u32],
    existing: &HashSet<(u32, u32)>,
) -> (Vec<[u32; 3]>, bool) {
    let n = l.len();
    if n == 3 {
        return (vec![[l[0], l[1], l[2]]], false);
    }
    let p: Vec<V3> = l.iter().map(|&i| v[i as usize].map(f64::from)).collect();
    // Newell normal around the centroid, and a plane basis (u, w) with u × w = normal.
    let c = p
        .iter()
        .fold([0.0; 3], |s, q| [s[0] + q[0], s[1] + q[1], s[2] + q[2]])
        .map(|x| x / n as f64);
    let mut nn = [0.0; 3];
    for i in 0..n {
        let x = cross(sub(p[i], c), sub(p[(i + 1) % n], c));
        nn = [nn[0] + x[0], nn[1] + x[1], nn[2] + x[2]];
    }
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
    let mut made: HashSet<(u32, u32)> = HashSet::new();

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
    let a = start;
    out.push([l[a], l[next[a]], l[next[next[a]]]]);
    (out, forced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_hole_two_triangles_same_winding() {
        let v = vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
        ];
        let (t, forced) = triangulate(&v, &[0, 1, 2, 3], &HashSet::new());
        assert!(!forced);
        assert_eq!(t.len(), 2);
        for f in t {
            let n = crate::heal::stl::facet_normal(
                v[f[0] as usize],
                v[f[1] as usize],
                v[f[2] as usize],
            );
            assert!(n[2] > 0.99);
        }
    }

    #[test]
    fn concave_loop_is_not_fanned() {
        // An L-shaped loop: a fan from vertex 0 would cover the notch.
        let pts = [[0., 0.], [2., 0.], [2., 1.], [1., 1.], [1., 2.], [0., 2.]];
        let v: Vec<[f32; 3]> = pts.iter().map(|p| [p[0], p[1], 0.0]).collect();
        let l: Vec<u32> = (0..6).collect();
        let (t, forced) = triangulate(&v, &l, &HashSet::new());
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
}
