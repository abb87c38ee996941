//! Features shorter than the noise: the fans of needles round a sphere's poles, whose rim
//! edges are shorter than the spread of a vertex's copies in a noisy soup. The copies are sewn
//! together whole (watertight, every shell kept, the clean model's volume), and no two distinct
//! vertices of the model are merged: every output facet that hole filling did not add is a
//! facet of the clean model, read through the model vertex each output vertex is a copy of.
use std::collections::{HashMap, HashSet};

use crate::support::{assert_quality, decode};
use fixmyprint_heal::generate::{self, Generated};
use fixmyprint_heal::provenance::mark;
use fixmyprint_heal::{self as heal, RepairOptions, Repaired};

/// How a repair kept the model's vertices apart.
#[derive(Debug)]
pub struct Merges {
    /// Output facets (not added by hole filling) whose corners are copies of three model
    /// vertices that form no facet of the model: two distinct vertices were merged, or a facet
    /// was joined from pieces of different ones.
    pub foreign: usize,
    /// Output facets checked (every facet not added by hole filling whose corners are all
    /// copies of model vertices).
    pub checked: usize,
}

/// Checks `r`, the repair of the soup `g` whose corners are copies of the model vertices
/// `sources` (from [`generate::soup_traced`]). Every output vertex sits exactly on one input
/// corner (welds and stitches keep a representative's position), which names its vertex.
pub fn merges(g: &Generated, sources: &[u32], r: &Repaired) -> Merges {
    let key = |p: [f32; 3]| p.map(|x| (x + 0.0).to_bits());
    let mut source_of: HashMap<[u32; 3], u32> = HashMap::new();
    for (corner, &s) in decode(&g.stl).iter().flatten().zip(sources) {
        let e = source_of.entry(key(*corner)).or_insert(s);
        if *e != s {
            *e = u32::MAX; // two vertices' copies on one point: not evidence either way
        }
    }
    let sorted = |mut t: [u32; 3]| {
        t.sort_unstable();
        t
    };
    let model: HashSet<[u32; 3]> = g.clean.mesh.triangles.iter().map(|&t| sorted(t)).collect();
    let vertex_source: Vec<Option<u32>> = r
        .mesh
        .vertices
        .iter()
        .map(|&p| source_of.get(&key(p)).copied().filter(|&s| s != u32::MAX))
        .collect();
    let mut m = Merges {
        foreign: 0,
        checked: 0,
    };
    for (t, &tag) in r.mesh.triangles.iter().zip(&r.provenance.facets) {
        if tag & mark::FILLED != 0 {
            continue;
        }
        let s = t.map(|v| vertex_source[v as usize]);
        let [Some(a), Some(b), Some(c)] = s else {
            continue;
        };
        m.checked += 1;
        if !model.contains(&sorted([a, b, c])) {
            m.foreign += 1;
        }
    }
    m
}

/// Soups whose small sphere's pole rings are shorter than the copies' spread (the weld keeps
/// the apex copies apart, the neighbourhood stitch cannot reach them; without the stitch of
/// copies both came out with 6 shells, pieces of the poles left apart, and ~150 holes filled):
/// `(name, soup, sources)`.
pub fn cases() -> Vec<(String, Generated, Vec<u32>)> {
    [(3, 250_000, 1e-5), (7, 300_000, 8e-6)]
        .into_iter()
        .map(|(seed, facets, noise)| {
            let (g, sources) =
                generate::soup_traced(&generate::clean_model(seed, facets), 9, noise, 0.1, Some(1));
            (
                format!("clean_model({seed}, {facets}), noise {noise}"),
                g,
                sources,
            )
        })
        .collect()
}

#[test]
fn heal_fans_finer_than_the_noise_sewn_without_merging_distinct_vertices() {
    for (name, g, sources) in cases() {
        let r = heal::repair(&g.stl, &RepairOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let rep = &r.report;
        assert!(rep.watertight, "{name}: {rep:#?}");
        assert_eq!(rep.shells, 4, "{name}: {rep:#?}");
        assert_eq!(rep.stages.shells.tiny_removed, 0, "{name}: {rep:#?}");
        let m = merges(&g, &sources, &r);
        assert_eq!(m.foreign, 0, "{name}: {m:?}");
        assert!(
            m.checked as f64 > 0.99 * g.clean.mesh.triangles.len() as f64,
            "{name}: {m:?}"
        );
        assert_quality(&name, &r.to_stl_bytes(), &g.clean);
    }
}

/// The check above can fail: a tolerance wider than the pole rings merges their vertices.
#[test]
fn heal_merge_check_sees_distinct_vertices_merged_by_a_wide_tolerance() {
    let (g, sources) =
        generate::soup_traced(&generate::clean_model(7, 60_000), 9, 1e-6, 0.1, Some(1));
    let wide = RepairOptions {
        weld_tolerance: Some(0.05),
        ..RepairOptions::default()
    };
    let m = merges(&g, &sources, &heal::repair(&g.stl, &wide).unwrap());
    assert!(m.foreign > 0, "{m:?}");
    let m = merges(
        &g,
        &sources,
        &heal::repair(&g.stl, &RepairOptions::default()).unwrap(),
    );
    assert_eq!(m.foreign, 0, "{m:?}");
}
