//! A small software rasteriser: fixed orthographic views, a z-buffer, flat two-sided shading.
//! No per-facet memory: corners are projected as the facets are drawn.

use crate::Bbox;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// One of the fixed views: an orthographic camera given by its screen axes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub name: &'static str,
    right: [f32; 3],
    up: [f32; 3],
    /// Unit vector from the model towards the viewer.
    back: [f32; 3],
}

fn normalize(v: [f32; 3]) -> [f32; 3] {
    let l = dot(v, v).sqrt();
    if l > 0.0 { v.map(|x| x / l) } else { v }
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// Front (from −y, z up), top (from +z, y up) and an isometric view from (+x, −y, +z).
pub(crate) const VIEWS: [View; 3] = [
    View {
        name: "front",
        right: [1.0, 0.0, 0.0],
        up: [0.0, 0.0, 1.0],
        back: [0.0, -1.0, 0.0],
    },
    View {
        name: "top",
        right: [1.0, 0.0, 0.0],
        up: [0.0, 1.0, 0.0],
        back: [0.0, 0.0, 1.0],
    },
    View {
        name: "iso",
        right: [
            std::f32::consts::FRAC_1_SQRT_2,
            std::f32::consts::FRAC_1_SQRT_2,
            0.0,
        ],
        // (−1, 1, 2) / √6 and (1, −1, 1) / √3.
        up: [-0.408_248_3, 0.408_248_3, 0.816_496_6],
        back: [0.577_350_26, -0.577_350_26, 0.577_350_26],
    },
];

/// A view fitted to a bounding box in a square panel of `size` pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Camera {
    view: View,
    scale: f32,
    /// Screen-space centre of the box.
    mid: [f32; 2],
    half: f32,
    light: [f32; 3],
}

impl Camera {
    pub fn fit(view: View, bbox: Bbox, size: usize, margin: f32) -> Camera {
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for c in 0..8 {
            let p = [0, 1, 2].map(|a| {
                if c >> a & 1 == 0 {
                    bbox.min[a]
                } else {
                    bbox.max[a]
                }
            });
            let s = [dot(p, view.right), dot(p, view.up)];
            for k in 0..2 {
                lo[k] = lo[k].min(s[k]);
                hi[k] = hi[k].max(s[k]);
            }
        }
        let extent = (hi[0] - lo[0]).max(hi[1] - lo[1]);
        let avail = (size as f32 - 2.0 * margin).max(1.0);
        let scale = if extent > 0.0 && extent.is_finite() {
            avail / extent
        } else {
            1.0
        };
        // Light from the viewer's upper left.
        let light = normalize(
            [0, 1, 2].map(|a| 0.8 * view.back[a] + 0.45 * view.up[a] - 0.35 * view.right[a]),
        );
        Camera {
            view,
            scale,
            mid: [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0],
            half: size as f32 / 2.0,
            light,
        }
    }

    /// Pixel x, pixel y (down) and depth (smaller is nearer).
    #[inline]
    pub fn project(&self, p: [f32; 3]) -> [f32; 3] {
        let v = &self.view;
        [
            self.half + (dot(p, v.right) - self.mid[0]) * self.scale,
            self.half - (dot(p, v.up) - self.mid[1]) * self.scale,
            -dot(p, v.back),
        ]
    }

    /// Flat two-sided shading of a facet: 0.4 (edge-on) to 1.0 (facing the light).
    #[inline]
    pub fn shade(&self, f: [[f32; 3]; 3]) -> f32 {
        let n = normalize(cross(sub(f[1], f[0]), sub(f[2], f[0])));
        0.4 + 0.6 * dot(n, self.light).abs()
    }
}

/// One square panel: colour and depth per pixel.
pub(crate) struct Panel {
    pub size: usize,
    pub rgb: Vec<Rgb>,
    pub depth: Vec<f32>,
}

impl Panel {
    pub fn new(size: usize, background: Rgb) -> Panel {
        Panel {
            size,
            rgb: vec![background; size * size],
            depth: vec![f32::INFINITY; size * size],
        }
    }

    /// Draw a facet (already projected) in `colour` (asked only when the facet covers a pixel
    /// centre, since most facets of a large model cover none): written where it is nearer
    /// than what is there, or, with `blend` (a depth tolerance), mixed half and half into the
    /// pixels it lies on or in front of.
    #[inline]
    pub fn fill(&mut self, s: [[f32; 3]; 3], colour: impl FnOnce() -> Rgb, blend: Option<f32>) {
        let n = self.size as f32;
        let min_x = s[0][0].min(s[1][0]).min(s[2][0]).max(0.0);
        let max_x = s[0][0].max(s[1][0]).max(s[2][0]).min(n - 1.0);
        let min_y = s[0][1].min(s[1][1]).min(s[2][1]).max(0.0);
        let max_y = s[0][1].max(s[1][1]).max(s[2][1]).min(n - 1.0);
        // Pixel centres at i + 0.5 inside the box.
        let (x0, x1) = ((min_x - 0.5).ceil(), (max_x - 0.5).floor());
        let (y0, y1) = ((min_y - 0.5).ceil(), (max_y - 0.5).floor());
        if !(x0 <= x1 && y0 <= y1) {
            return;
        }
        let edge = |a: [f32; 3], b: [f32; 3], x: f32, y: f32| {
            (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])
        };
        let area = edge(s[0], s[1], s[2][0], s[2][1]);
        if area == 0.0 || !area.is_finite() {
            return;
        }
        let inv = 1.0 / area;
        let colour = colour();
        let size = self.size;
        for py in y0 as usize..=y1 as usize {
            let y = py as f32 + 0.5;
            for px in x0 as usize..=x1 as usize {
                let x = px as f32 + 0.5;
                let w0 = edge(s[1], s[2], x, y) * inv;
                let w1 = edge(s[2], s[0], x, y) * inv;
                let w2 = edge(s[0], s[1], x, y) * inv;
                if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                    continue;
                }
                let z = w0 * s[0][2] + w1 * s[1][2] + w2 * s[2][2];
                let i = py * size + px;
                match blend {
                    None if z < self.depth[i] => {
                        self.depth[i] = z;
                        self.rgb[i] = colour;
                    }
                    Some(tol) if z <= self.depth[i] + tol => {
                        let o = self.rgb[i];
                        self.rgb[i] =
                            [0, 1, 2].map(|k| ((u16::from(o[k]) + u16::from(colour[k])) / 2) as u8);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Keep, per pixel, the nearer of this panel and `other` (drawn from other facets).
    pub fn merge(mut self, other: Panel) -> Panel {
        for ((d, c), (od, oc)) in self
            .depth
            .iter_mut()
            .zip(self.rgb.iter_mut())
            .zip(other.depth.into_iter().zip(other.rgb))
        {
            if od < *d {
                *d = od;
                *c = oc;
            }
        }
        self
    }

    /// A ring of radius `r` and thickness 2 around pixel (`cx`, `cy`), drawn over everything.
    pub fn ring(&mut self, cx: f32, cy: f32, r: f32, colour: Rgb) {
        let n = self.size as i64;
        let (lo_x, hi_x) = ((cx - r - 2.0).floor() as i64, (cx + r + 2.0).ceil() as i64);
        let (lo_y, hi_y) = ((cy - r - 2.0).floor() as i64, (cy + r + 2.0).ceil() as i64);
        for py in lo_y.max(0)..hi_y.min(n) {
            for px in lo_x.max(0)..hi_x.min(n) {
                let (dx, dy) = (px as f32 + 0.5 - cx, py as f32 + 0.5 - cy);
                let d = (dx * dx + dy * dy).sqrt();
                if (d - r).abs() <= 1.0 {
                    self.rgb[(py * n + px) as usize] = colour;
                }
            }
        }
    }
}

/// `colour` darkened by a shading factor.
#[inline]
pub(crate) fn shaded(colour: Rgb, light: f32) -> Rgb {
    colour.map(|c| (f32::from(c) * light).round().clamp(0.0, 255.0) as u8)
}
