//! The mesh and bounding-box types every stage shares.

use serde::{Deserialize, Serialize};

use crate::orient;

/// An indexed triangle mesh as flat arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    /// Vertex positions.
    pub vertices: Vec<[f32; 3]>,
    /// Triangles as indices into [`Mesh::vertices`], counter-clockwise seen from outside.
    pub triangles: Vec<[u32; 3]>,
}

impl Mesh {
    /// Signed volume (positive when the closed surfaces face outward), computed in `f64`.
    pub fn signed_volume(&self) -> f64 {
        orient::signed_volume(&self.vertices, &self.triangles)
    }

    /// Axis-aligned bounding box of the referenced vertices, `None` for an empty mesh.
    pub fn bbox(&self) -> Option<Bbox> {
        bbox_of(
            self.triangles
                .iter()
                .flatten()
                .map(|&v| self.vertices[v as usize]),
        )
    }
}

/// An axis-aligned bounding box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bbox {
    /// Smallest x, y, z.
    pub min: [f32; 3],
    /// Largest x, y, z.
    pub max: [f32; 3],
}

impl Bbox {
    /// Extend the box to contain `p`.
    pub fn grow(&mut self, p: [f32; 3]) {
        for ((lo, hi), x) in self.min.iter_mut().zip(self.max.iter_mut()).zip(p) {
            *lo = lo.min(x);
            *hi = hi.max(x);
        }
    }

    /// Length of the diagonal.
    pub fn diagonal(&self) -> f64 {
        (0..3)
            .map(|a| {
                let d = f64::from(self.max[a]) - f64::from(self.min[a]);
                d * d
            })
            .sum::<f64>()
            .sqrt()
    }
}

/// The bounding box of `points`, `None` when there are none.
pub(crate) fn bbox_of(points: impl Iterator<Item = [f32; 3]>) -> Option<Bbox> {
    let mut b: Option<Bbox> = None;
    for p in points {
        b.get_or_insert(Bbox { min: p, max: p }).grow(p);
    }
    b
}
