//! Shared checks for the heal integration tests: an independent (HashMap-based, sequential)
//! verifier of repaired binary STL output.
#![allow(dead_code, clippy::needless_range_loop)]

use std::collections::HashMap;

/// What the verifier found in an output file.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub facets: usize,
    pub vertices: usize,
    pub watertight: bool,
    pub consistent: bool,
    pub degenerate: usize,
    pub duplicates: usize,
    /// Per shell: (facets, signed volume, bbox min, bbox max).
    pub shells: Vec<(usize, f64, [f64; 3], [f64; 3])>,
    pub volume: f64,
    /// Every shell nested in an odd number of others (by bbox) faces inward, all others outward.
    pub outward: bool,
    pub stored_normals_ok: bool,
}

/// Decode a binary STL strictly (size must match the header).
pub fn decode(bytes: &[u8]) -> Vec<[[f32; 3]; 3]> {
    assert!(bytes.len() >= 84, "output shorter than a header");
    let n = u32::from_le_bytes(bytes[80..84].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        84 + 50 * n,
        "output size does not match its facet count"
    );
    (0..n)
        .map(|f| {
            let r = &bytes[84 + 50 * f..84 + 50 * f + 50];
            let g = |i: usize| f32::from_le_bytes(r[i..i + 4].try_into().unwrap());
            [
                [g(12), g(16), g(20)],
                [g(24), g(28), g(32)],
                [g(36), g(40), g(44)],
            ]
        })
        .collect()
}

pub fn verify(bytes: &[u8]) -> Verdict {
    let facets = decode(bytes);
    let n = bytes.len().saturating_sub(84) / 50;
    let mut stored_normals_ok = true;
    let mut ids: HashMap<[u32; 3], u32> = HashMap::new();
    let mut pos: Vec<[f64; 3]> = Vec::new();
    let tris: Vec<[u32; 3]> = facets
        .iter()
        .map(|f| {
            f.map(|p| {
                let key = p.map(f32::to_bits);
                *ids.entry(key).or_insert_with(|| {
                    pos.push(p.map(f64::from));
                    (pos.len() - 1) as u32
                })
            })
        })
        .collect();
    for (i, f) in facets.iter().enumerate() {
        let r = &bytes[84 + 50 * i..84 + 50 * i + 12];
        let nrm: Vec<f64> = (0..3)
            .map(|k| f64::from(f32::from_le_bytes(r[4 * k..4 * k + 4].try_into().unwrap())))
            .collect();
        let a = f[0].map(f64::from);
        let b = f[1].map(f64::from);
        let c = f[2].map(f64::from);
        let cr = cross(sub(b, a), sub(c, a));
        let l = dot(cr, cr).sqrt();
        if l > 0.0 && (nrm[0] * cr[0] + nrm[1] * cr[1] + nrm[2] * cr[2]) / l < 0.99 {
            stored_normals_ok = false;
        }
    }
    let mut v = Verdict {
        facets: n,
        vertices: pos.len(),
        stored_normals_ok,
        ..Verdict::default()
    };
    // Degenerates and duplicates.
    let mut seen = HashMap::new();
    for t in &tris {
        let p = t.map(|i| pos[i as usize]);
        let cr = cross(sub(p[1], p[0]), sub(p[2], p[0]));
        if t[0] == t[1] || t[1] == t[2] || t[0] == t[2] || dot(cr, cr) == 0.0 {
            v.degenerate += 1;
        }
        let mut s = *t;
        s.sort_unstable();
        *seen.entry(s).or_insert(0usize) += 1;
    }
    v.duplicates = seen.values().map(|c| c - 1).sum();
    // Edges.
    let mut edges: HashMap<(u32, u32), Vec<(u32, bool)>> = HashMap::new();
    for (f, t) in tris.iter().enumerate() {
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            edges
                .entry((a.min(b), a.max(b)))
                .or_default()
                .push((f as u32, a < b));
        }
    }
    v.watertight = !tris.is_empty() && edges.values().all(|e| e.len() == 2);
    v.consistent = edges.values().all(|e| e.len() != 2 || e[0].1 != e[1].1);
    // Shells by union-find over shared edges.
    let mut parent: Vec<usize> = (0..tris.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for e in edges.values() {
        for w in e.windows(2) {
            let (a, b) = (
                find(&mut parent, w[0].0 as usize),
                find(&mut parent, w[1].0 as usize),
            );
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut shell_ix: HashMap<usize, usize> = HashMap::new();
    for f in 0..tris.len() {
        let r = find(&mut parent, f);
        let next = shell_ix.len();
        let s = *shell_ix.entry(r).or_insert(next);
        if s == v.shells.len() {
            v.shells.push((0, 0.0, [f64::MAX; 3], [f64::MIN; 3]));
        }
        let p = tris[f].map(|i| pos[i as usize]);
        let sh = &mut v.shells[s];
        sh.0 += 1;
        sh.1 += dot(p[0], cross(p[1], p[2])) / 6.0;
        for q in p {
            for a in 0..3 {
                sh.2[a] = sh.2[a].min(q[a]);
                sh.3[a] = sh.3[a].max(q[a]);
            }
        }
    }
    v.volume = v.shells.iter().map(|s| s.1).sum();
    v.outward = v.shells.iter().enumerate().all(|(i, s)| {
        let depth = v
            .shells
            .iter()
            .enumerate()
            .filter(|(j, o)| *j != i && (0..3).all(|a| o.2[a] < s.2[a] && o.3[a] > s.3[a]))
            .count();
        if depth % 2 == 1 { s.1 < 0.0 } else { s.1 > 0.0 }
    });
    v
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Assert the full quality bar against the clean model.
pub fn assert_quality(name: &str, out: &[u8], clean: &fixmyprint_heal::generate::Model) {
    let v = verify(out);
    assert!(v.watertight, "{name}: not watertight");
    assert!(v.consistent, "{name}: winding not consistent");
    assert_eq!(v.degenerate, 0, "{name}: degenerate facets left");
    assert_eq!(v.duplicates, 0, "{name}: duplicate facets left");
    assert_eq!(
        v.shells.len(),
        clean.shells.len(),
        "{name}: shell count {:?}",
        v.shells
    );
    assert!(
        v.outward,
        "{name}: a shell faces the wrong way: {:?}",
        v.shells
    );
    assert!(
        v.stored_normals_ok,
        "{name}: stored normals disagree with the winding"
    );
    let rel = (v.volume - clean.volume).abs() / clean.volume.abs();
    assert!(
        rel < 0.005,
        "{name}: volume {} vs clean {} ({:.4}%)",
        v.volume,
        clean.volume,
        rel * 100.0
    );
}
