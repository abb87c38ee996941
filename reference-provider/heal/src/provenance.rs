//! Provenance: what the repair did to every output facet, recorded by the stages themselves
//! (not guessed afterwards), so a picture of the repair can mark exactly what changed.
//!
//! One byte per output facet, in the order of [`Mesh::triangles`](crate::Mesh::triangles),
//! holding an OR of the [`mark`] bits, plus the facets of the shells removed as noise (as
//! corner positions, since they are not part of the output) so a "before" view can ghost
//! them.

use rayon::prelude::*;

/// The bits of a facet's provenance byte.
pub mod mark {
    /// Added by hole filling, or by a strip joining a seam's two sides.
    pub const FILLED: u8 = 1;
    /// Its winding was flipped to agree with its neighbours.
    pub const WINDING: u8 = 2;
    /// Its shell was turned outward (or, for a cavity, inward) as a whole.
    pub const OUTWARD: u8 = 4;
    /// It had an edge shared by more than two facets, which was split to make it manifold.
    pub const NON_MANIFOLD: u8 = 8;
}

/// What the repair did to each output facet, and what it removed as noise.
///
/// ```
/// use fixmyprint_heal::{self as heal, RepairOptions, provenance::mark};
///
/// // A tetrahedron with one facet missing (kept, although under 4 facets): hole filling adds
/// // it back.
/// let stl = "solid t
/// facet normal 0 0 0 outer loop vertex 0 0 0 vertex 0 1 0 vertex 1 0 0 endloop endfacet
/// facet normal 0 0 0 outer loop vertex 0 0 0 vertex 0 0 1 vertex 0 1 0 endloop endfacet
/// facet normal 0 0 0 outer loop vertex 0 0 0 vertex 1 0 0 vertex 0 0 1 endloop endfacet
/// endsolid t
/// ";
/// let options = RepairOptions { remove_tiny_shells: false, ..RepairOptions::default() };
/// let repaired = heal::repair(stl.as_bytes(), &options)?;
/// let p = &repaired.provenance;
/// assert_eq!(p.facets.len(), repaired.mesh.triangles.len());
/// let s = &repaired.report.stages;
/// assert_eq!(p.count(mark::FILLED), s.holes.facets_added + s.topology.strip_facets);
/// # Ok::<(), heal::HealError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// One byte per output facet: an OR of the [`mark`] bits (0 = untouched).
    pub facets: Vec<u8>,
    /// The facets of the shells removed as noise, as corner positions (after welding).
    pub removed: Vec<[[f32; 3]; 3]>,
}

impl Provenance {
    /// How many output facets carry `bit`.
    pub fn count(&self, bit: u8) -> u64 {
        self.facets.par_iter().filter(|&&m| m & bit != 0).count() as u64
    }

    /// Whether no output facet carries a mark and nothing was removed as noise.
    pub fn is_untouched(&self) -> bool {
        self.removed.is_empty() && self.facets.par_iter().all(|&m| m == 0)
    }
}

/// Carry per-facet `tags` across a stage that removed facets but kept the others in order
/// (`after` is a subsequence of `before`; of equal facets the first is the one kept).
pub(crate) fn carry(before: &[[u32; 3]], after: &[[u32; 3]], tags: &[u8]) -> Vec<u8> {
    debug_assert_eq!(before.len(), tags.len());
    let mut out = Vec::with_capacity(after.len());
    let mut j = 0;
    for t in after {
        while j < before.len() && before[j] != *t {
            j += 1;
        }
        out.push(tags.get(j).copied().unwrap_or(0));
        j += 1;
    }
    out
}

/// Mark `facets` (indices into a list of `n`) with `bit` in `tags`, creating `tags` (all
/// zero) when it does not exist yet.
pub(crate) fn mark_facets(tags: &mut Option<Vec<u8>>, n: usize, facets: &[u32], bit: u8) {
    if facets.is_empty() {
        return;
    }
    let t = tags.get_or_insert_with(|| vec![0; n]);
    for &f in facets {
        t[f as usize] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carry_follows_the_kept_facets_in_order() {
        let before = [[0, 1, 2], [1, 2, 3], [0, 1, 2], [2, 3, 4]];
        let tags = [1, 2, 4, 8];
        // The duplicate (third) and the second were removed.
        assert_eq!(carry(&before, &[[0, 1, 2], [2, 3, 4]], &tags), vec![1, 8]);
        assert_eq!(carry(&before, &before, &tags), tags.to_vec());
        assert!(carry(&before, &[], &tags).is_empty());
    }
}
