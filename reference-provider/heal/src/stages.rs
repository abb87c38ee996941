//! The individual stages on flat arrays, for benchmarks and tools that want one step alone.
//! [`repair_soup`](crate::repair_soup) runs them all in order with the right glue.

use crate::{Mesh, RepairOptions, clean, orient, pipeline, topology};

/// Weld corner positions (three per facet) within `tolerance` (0 = exact only).
pub fn weld(positions: Vec<[f32; 3]>, tolerance: f32) -> Mesh {
    let w = crate::weld::weld(positions, tolerance);
    Mesh {
        vertices: w.vertices,
        triangles: w.triangles,
    }
}

/// The tolerance [`repair_soup`](crate::repair_soup) would use for these positions.
pub fn weld_tolerance(positions: &[[f32; 3]], options: &RepairOptions) -> f32 {
    pipeline::soup_weld_tolerance(positions, options)
}

/// Drop degenerate and duplicate facets; returns (degenerate, duplicate) counts.
pub fn clean(mesh: &mut Mesh) -> (u64, u64) {
    let c = clean::clean(&mesh.vertices, &mut mesh.triangles, true, true, 0.0);
    (c.degenerate, c.duplicate)
}

/// Pair half-edges; returns the twin of every half-edge (`u32::MAX` on the boundary, bit 31
/// set when both run the same way).
pub fn pair_edges(triangles: &[[u32; 3]]) -> Vec<u32> {
    topology::pair_edges(triangles).twin
}

/// Make the winding consistent; returns (facets flipped, shells).
pub fn winding(twin: &[u32], facets: usize) -> (u64, u32) {
    let w = orient::make_consistent(twin, facets, true);
    (w.flipped_count, w.shell_count)
}
