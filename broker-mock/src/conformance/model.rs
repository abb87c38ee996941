//! The test model: a closed, outward-wound 10 mm cube written as binary STL by hand, so the
//! runner depends on no healing code.

/// Corners of the cube, millimetres.
const CORNERS: [[f32; 3]; 8] = [
    [0.0, 0.0, 0.0],
    [10.0, 0.0, 0.0],
    [10.0, 10.0, 0.0],
    [0.0, 10.0, 0.0],
    [0.0, 0.0, 10.0],
    [10.0, 0.0, 10.0],
    [10.0, 10.0, 10.0],
    [0.0, 10.0, 10.0],
];

/// Triangles as corner indices, counter-clockwise seen from outside.
const FACES: [[usize; 3]; 12] = [
    [0, 2, 1],
    [0, 3, 2],
    [4, 5, 6],
    [4, 6, 7],
    [0, 1, 5],
    [0, 5, 4],
    [3, 7, 6],
    [3, 6, 2],
    [0, 4, 7],
    [0, 7, 3],
    [1, 2, 6],
    [1, 6, 5],
];

fn normal(a: [f32; 3], b: [f32; 3], c: [f32; 3]) -> [f32; 3] {
    let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
    let n = [
        u[1] * v[2] - u[2] * v[1],
        u[2] * v[0] - u[0] * v[2],
        u[0] * v[1] - u[1] * v[0],
    ];
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if len > 0.0 {
        [n[0] / len, n[1] / len, n[2] / len]
    } else {
        [0.0; 3]
    }
}

/// The test model the runner offers: a valid, watertight, outward binary STL of a 10 mm
/// cube (12 facets, 684 bytes).
#[must_use]
pub fn test_model() -> Vec<u8> {
    let mut out = Vec::with_capacity(84 + FACES.len() * 50);
    let mut header = [b' '; 80];
    let title = b"diax conformance test model: closed 10 mm cube";
    header[..title.len()].copy_from_slice(title);
    out.extend_from_slice(&header);
    out.extend_from_slice(&u32::try_from(FACES.len()).unwrap_or(0).to_le_bytes());
    for [i, j, k] in FACES {
        let (a, b, c) = (CORNERS[i], CORNERS[j], CORNERS[k]);
        for v in [normal(a, b, c), a, b, c] {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_cube_is_closed_and_consistently_wound() {
        let mut edges: HashMap<(usize, usize), u32> = HashMap::new();
        for [a, b, c] in FACES {
            for e in [(a, b), (b, c), (c, a)] {
                *edges.entry(e).or_default() += 1;
            }
        }
        for (&(a, b), &n) in &edges {
            assert_eq!(n, 1, "directed edge {a}->{b} used {n} times");
            assert_eq!(edges.get(&(b, a)), Some(&1), "edge {a}-{b} has no twin");
        }
        // Outward: each normal points away from the centre.
        for [a, b, c] in FACES {
            let n = normal(CORNERS[a], CORNERS[b], CORNERS[c]);
            let centroid: Vec<f32> = (0..3)
                .map(|d| (CORNERS[a][d] + CORNERS[b][d] + CORNERS[c][d]) / 3.0 - 5.0)
                .collect();
            let dot: f32 = (0..3).map(|d| n[d] * centroid[d]).sum();
            assert!(dot > 0.0);
        }
    }

    #[test]
    fn binary_layout() {
        let stl = test_model();
        assert_eq!(stl.len(), 684);
        assert!(!stl.starts_with(b"solid"));
        assert_eq!(&stl[80..84], &12u32.to_le_bytes());
    }
}
