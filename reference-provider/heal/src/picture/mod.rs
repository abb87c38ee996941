//! The repair picture: the model before and after the repair from three fixed views (front,
//! top, iso), shaded, with what the repair changed marked in colour, a legend and the
//! report's counts; as PNG, or as one self-contained HTML file.
//!
//! Drawn in-process by a small software rasteriser (z-buffer, flat shading); the marks come
//! from the healer's [`Provenance`](crate::Provenance), so they are exact. Memory is
//! fixed (six panels of [`PANEL`]² pixels) whatever the model's size; time is linear in its
//! facets, which [`PictureOptions::max_facets`] bounds.
//!
//! ```
//! use fixmyprint_heal::{self as heal, RepairOptions};
//! use fixmyprint_heal::picture::{Picture, PictureOptions};
//!
//! // A tetrahedron with a facet missing (kept, although under 4 facets): hole filling adds it
//! // back, drawn in the hole colour.
//! let stl = "solid t
//! facet normal 0 0 0 outer loop vertex 0 0 0 vertex 0 1 0 vertex 1 0 0 endloop endfacet
//! facet normal 0 0 0 outer loop vertex 0 0 0 vertex 0 0 1 vertex 0 1 0 endloop endfacet
//! facet normal 0 0 0 outer loop vertex 0 0 0 vertex 1 0 0 vertex 0 0 1 endloop endfacet
//! endsolid t
//! ";
//! let options = RepairOptions { remove_tiny_shells: false, ..RepairOptions::default() };
//! let soup = heal::stl::parse(stl.as_bytes(), &options)?;
//! let mut picture = Picture::new(&soup.positions, &PictureOptions::default())?;
//! picture.draw_before(&soup.positions);
//! let repaired = heal::repair_soup(soup, &options, &|_| {})?;
//! let image = picture.finish(&repaired);
//! let png: Vec<u8> = image.to_png();
//! assert_eq!(&png[1..4], b"PNG");
//! let html: String = image.to_html("t.stl", &repaired.report);
//! assert!(html.contains("data:image/png;base64,"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod raster;

use base64::Engine as _;
use rayon::prelude::*;

use crate::provenance::mark;
use crate::{Bbox, Repaired, Report};
use raster::{Camera, Panel, Rgb, VIEWS, shaded};

/// Side of one view's square panel, in pixels.
pub const PANEL: usize = 400;
/// Height of the title strip.
const HEADER: usize = 36;
/// Height of the legend.
const LEGEND: usize = 6 * LINE + 12;
/// Height of a legend line (text is the 8×8 font drawn at scale 2).
const LINE: usize = 24;
/// Empty pixels between the model and a panel's edge.
const MARGIN: f32 = 24.0;

/// The picture's colours.
pub mod colour {
    use super::Rgb;
    /// Background.
    pub const BACKGROUND: Rgb = [250, 250, 250];
    /// A facet the repair did not touch (before shading).
    pub const MODEL: Rgb = [176, 184, 196];
    /// Facets added to fill holes.
    pub const FILLED: Rgb = [235, 40, 30];
    /// Facets whose winding was flipped.
    pub const WINDING: Rgb = [40, 100, 240];
    /// Facets of shells turned outward.
    pub const OUTWARD: Rgb = [30, 170, 70];
    /// Facets at non-manifold edges that were split.
    pub const NON_MANIFOLD: Rgb = [200, 40, 200];
    /// Shells removed as noise (ghosted in the "before" views, and ringed).
    pub const REMOVED: Rgb = [255, 150, 0];
    /// Text and panel borders.
    pub const INK: Rgb = [30, 30, 30];
}

/// Limits of the picture.
#[derive(Debug, Clone)]
pub struct PictureOptions {
    /// Refuse models with more facets than this (the picture's time budget: about 0.5 s per
    /// million facets on two cores).
    pub max_facets: u64,
}

impl Default for PictureOptions {
    fn default() -> Self {
        PictureOptions {
            max_facets: 20_000_000,
        }
    }
}

/// Why a picture cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    /// The model has more facets than [`PictureOptions::max_facets`].
    #[error("the model has {facets} facets, more than the picture's budget of {max}")]
    TooLarge {
        /// Facets in the model.
        facets: u64,
        /// The budget.
        max: u64,
    },
    /// No finite point to frame.
    #[error("the model has no facets to draw")]
    Empty,
}

/// A picture being drawn: [`Picture::draw_before`] with the input's facets, then
/// [`Picture::finish`] with the repair.
pub struct Picture {
    cameras: [Camera; 3],
    before: Vec<Panel>,
    tolerance: f32,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("before_drawn", &!self.before.is_empty())
            .finish_non_exhaustive()
    }
}

/// A finished RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB pixels.
    pub rgb: Vec<u8>,
}

impl Picture {
    /// Frame the three views on the input's corner positions (`3 ×` facets, as in
    /// [`Soup::positions`](crate::Soup::positions)).
    ///
    /// # Errors
    /// [`PictureError::TooLarge`] over the facet budget, [`PictureError::Empty`] without
    /// facets.
    pub fn new(positions: &[[f32; 3]], options: &PictureOptions) -> Result<Picture, PictureError> {
        let facets = (positions.len() / 3) as u64;
        if facets > options.max_facets {
            return Err(PictureError::TooLarge {
                facets,
                max: options.max_facets,
            });
        }
        let bbox = positions
            .par_chunks(1 << 16)
            .filter_map(|c| {
                let mut it = c.iter();
                let first = *it.next()?;
                let mut b = Bbox {
                    min: first,
                    max: first,
                };
                it.for_each(|p| b.grow(*p));
                Some(b)
            })
            .reduce_with(|mut a, b| {
                a.grow(b.min);
                a.grow(b.max);
                a
            })
            .ok_or(PictureError::Empty)?;
        Ok(Picture {
            cameras: VIEWS.map(|v| Camera::fit(v, bbox, PANEL, MARGIN)),
            before: Vec::new(),
            tolerance: (bbox.diagonal() * 1e-4) as f32,
        })
    }

    /// Where the point `p` appears in the finished image, in view `col` (0 front, 1 top,
    /// 2 iso) of row `row` (0 before, 1 after): pixel x and y.
    pub fn image_position(&self, col: usize, row: usize, p: [f32; 3]) -> (f32, f32) {
        let s = self.cameras[col.min(2)].project(p);
        let (x, y, _) = Image::panel_rect(col.min(2), row.min(1));
        (x as f32 + s[0], y as f32 + s[1])
    }

    /// Draw the "before" views: the input's facets, all in the model colour.
    pub fn draw_before(&mut self, positions: &[[f32; 3]]) {
        let n = positions.len() / 3;
        self.before = self
            .cameras
            .par_iter()
            .map(|cam| {
                render(cam, n, |f| {
                    let p = &positions[3 * f..3 * f + 3];
                    ([p[0], p[1], p[2]], colour::MODEL)
                })
            })
            .collect();
    }

    /// Draw the "after" views, ghost the removed noise shells into the "before" views, and
    /// lay out the image with its legend.
    pub fn finish(mut self, repaired: &Repaired) -> Image {
        let mesh = &repaired.mesh;
        let marks = &repaired.provenance.facets;
        let removed = &repaired.provenance.removed;
        let tolerance = self.tolerance;
        let after: Vec<Panel> = self
            .cameras
            .par_iter()
            .map(|cam| {
                let facet = |f: usize| {
                    let p = mesh.triangles[f].map(|v| mesh.vertices[v as usize]);
                    (p, colour_of(marks.get(f).copied().unwrap_or(0)))
                };
                let mut panel = render(cam, mesh.triangles.len(), facet);
                let mut rings = Rings::new(PANEL);
                for (f, m) in marks.iter().enumerate() {
                    if m & mark::FILLED != 0 {
                        rings.add(&facet(f).0.map(|q| cam.project(q)));
                    }
                }
                rings.draw(&mut panel, colour::FILLED);
                panel
            })
            .collect();
        if self.before.len() != 3 {
            // `draw_before` was not called: the "before" views stay empty.
            self.before = self
                .cameras
                .iter()
                .map(|_| Panel::new(PANEL, colour::BACKGROUND))
                .collect();
        }
        self.before
            .par_iter_mut()
            .zip(self.cameras.par_iter())
            .for_each(|(panel, cam)| {
                let mut rings = Rings::new(PANEL);
                for f in removed {
                    let s = f.map(|q| cam.project(q));
                    panel.fill(s, || colour::REMOVED, Some(tolerance));
                    rings.add(&s);
                }
                rings.draw(panel, colour::REMOVED);
            });
        layout(&self.before, &after, repaired)
    }
}

/// Draw `n` facets (`facet(i)` gives corners and colour) in one view: the facets are split
/// into a few runs drawn in parallel, each on its own panel, merged by depth.
fn render<F>(cam: &Camera, n: usize, facet: F) -> Panel
where
    F: Fn(usize) -> ([[f32; 3]; 3], Rgb) + Sync,
{
    let runs = (rayon::current_num_threads() * 2).max(1);
    let len = n.div_ceil(runs).max(1 << 15);
    (0..n)
        .into_par_iter()
        .with_min_len(len)
        .fold(
            || Panel::new(PANEL, colour::BACKGROUND),
            |mut panel, f| {
                let (p, c) = facet(f);
                panel.fill(p.map(|q| cam.project(q)), || shaded(c, cam.shade(p)), None);
                panel
            },
        )
        .reduce_with(Panel::merge)
        .unwrap_or_else(|| Panel::new(PANEL, colour::BACKGROUND))
}

/// The colour of a facet with these marks: hole fill first, then non-manifold split, winding
/// flip, shell turned outward.
fn colour_of(m: u8) -> Rgb {
    if m & mark::FILLED != 0 {
        colour::FILLED
    } else if m & mark::NON_MANIFOLD != 0 {
        colour::NON_MANIFOLD
    } else if m & mark::WINDING != 0 {
        colour::WINDING
    } else if m & mark::OUTWARD != 0 {
        colour::OUTWARD
    } else {
        colour::MODEL
    }
}

/// Ring markers around small changed places, one per 16-pixel cell (at most 400 per panel),
/// so a filled hole or a removed speck a few pixels wide is still seen.
struct Rings {
    cells: Vec<bool>,
    centres: Vec<[f32; 2]>,
    side: usize,
}

impl Rings {
    const CELL: usize = 16;
    const MAX: usize = 400;

    fn new(size: usize) -> Rings {
        let side = size.div_ceil(Self::CELL);
        Rings {
            cells: vec![false; side * side],
            centres: Vec::new(),
            side,
        }
    }

    fn add(&mut self, s: &[[f32; 3]; 3]) {
        let c = [
            (s[0][0] + s[1][0] + s[2][0]) / 3.0,
            (s[0][1] + s[1][1] + s[2][1]) / 3.0,
        ];
        if !(c[0] >= 0.0 && c[1] >= 0.0) || self.centres.len() >= Self::MAX {
            return;
        }
        let (x, y) = (c[0] as usize / Self::CELL, c[1] as usize / Self::CELL);
        if x >= self.side || y >= self.side || self.cells[y * self.side + x] {
            return;
        }
        self.cells[y * self.side + x] = true;
        self.centres.push(c);
    }

    fn draw(&self, panel: &mut Panel, colour: Rgb) {
        for c in &self.centres {
            panel.ring(c[0], c[1], 12.0, colour);
        }
    }
}

/// Title, two rows of three panels (before, after) and the legend.
fn layout(before: &[Panel], after: &[Panel], repaired: &Repaired) -> Image {
    let report = &repaired.report;
    let width = 3 * PANEL;
    let height = HEADER + 2 * PANEL + LEGEND;
    let mut img = Image {
        width,
        height,
        rgb: vec![0; width * height * 3],
    };
    img.rect(0, 0, width, height, colour::BACKGROUND);
    let title = format!(
        "FixMyPrint repair: {} -> {} facets, {}",
        report.input_facets,
        report.output_facets,
        if report.watertight {
            "watertight"
        } else {
            "NOT watertight"
        }
    );
    img.text(8, 10, &title, colour::INK);
    for (row, (panels, name)) in [(before, "before"), (after, "after")].iter().enumerate() {
        for (col, panel) in panels.iter().enumerate() {
            let (x, y) = (col * PANEL, HEADER + row * PANEL);
            img.blit(x, y, panel);
            img.frame(x, y, PANEL, PANEL, [200, 200, 200]);
            img.text(
                x + 8,
                y + 6,
                &format!("{name}: {}", VIEWS[col].name),
                colour::INK,
            );
        }
    }
    let s = &report.stages;
    let p = &repaired.provenance;
    let lines: [(Rgb, String); 5] = [
        (
            colour::FILLED,
            format!(
                "holes filled: {} ({} facets added)",
                report.holes_filled, s.holes.facets_added
            ),
        ),
        (
            colour::WINDING,
            format!("winding flipped: {} facets", s.winding.facets_flipped),
        ),
        (
            colour::OUTWARD,
            format!(
                "shells turned outward: {} ({} facets)",
                s.orient.shells_flipped,
                p.count(mark::OUTWARD)
            ),
        ),
        (
            colour::REMOVED,
            format!(
                "noise shells removed: {} ({} facets), ghosted before",
                s.shells.tiny_removed, s.shells.facets_removed
            ),
        ),
        (
            colour::NON_MANIFOLD,
            format!(
                "non-manifold edges split: {} ({} facets)",
                s.topology.non_manifold_edges,
                p.count(mark::NON_MANIFOLD)
            ),
        ),
    ];
    let top = HEADER + 2 * PANEL + 8;
    for (i, (c, text)) in lines.iter().enumerate() {
        let y = top + i * LINE;
        img.rect(8, y, 16, 16, *c);
        img.text(32, y, text, colour::INK);
    }
    let summary = format!(
        "{} shell(s), volume {:.6}, {} pass(es)",
        report.shells, report.volume, report.passes
    );
    img.text(8, top + 5 * LINE, &summary, colour::INK);
    img
}

impl Image {
    fn put(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for xx in x..x + w {
            self.put(xx, y, c);
            self.put(xx, y + h - 1, c);
        }
        for yy in y..y + h {
            self.put(x, yy, c);
            self.put(x + w - 1, yy, c);
        }
    }

    fn blit(&mut self, x: usize, y: usize, panel: &Panel) {
        for py in 0..panel.size {
            for px in 0..panel.size {
                self.put(x + px, y + py, panel.rgb[py * panel.size + px]);
            }
        }
    }

    /// Text in the 8×8 font at scale 2 (ASCII; anything else as `?`).
    fn text(&mut self, x: usize, y: usize, text: &str, c: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.rect(x + 16 * i + 2 * col, y + 2 * row, 2, 2, c);
                    }
                }
            }
        }
    }

    /// The pixel at (`x`, `y`).
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = 3 * (y * self.width + x);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The region of panel `col` (0 front, 1 top, 2 iso) in row `row` (0 before, 1 after):
    /// (x, y, side).
    pub fn panel_rect(col: usize, row: usize) -> (usize, usize, usize) {
        (col * PANEL, HEADER + row * PANEL, PANEL)
    }

    /// Encode as PNG (8-bit RGB).
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        // Writing into a Vec fails only on a size mismatch, which the type rules out.
        if let Ok(mut w) = enc.write_header() {
            let _ = w.write_image_data(&self.rgb);
        }
        out
    }

    /// One self-contained HTML page: the image as a data URI, the counts as a table and the
    /// full JSON report. `name` is the model's name (escaped).
    pub fn to_html(&self, name: &str, report: &Report) -> String {
        let png = base64::engine::general_purpose::STANDARD.encode(self.to_png());
        let s = &report.stages;
        let rows = [
            ("input facets", report.input_facets.to_string()),
            ("output facets", report.output_facets.to_string()),
            ("watertight", report.watertight.to_string()),
            (
                "holes filled",
                format!("{} ({} facets)", report.holes_filled, s.holes.facets_added),
            ),
            (
                "facets flipped (winding)",
                s.winding.facets_flipped.to_string(),
            ),
            ("shells turned outward", s.orient.shells_flipped.to_string()),
            (
                "noise shells removed",
                format!(
                    "{} ({} facets)",
                    s.shells.tiny_removed, s.shells.facets_removed
                ),
            ),
            (
                "non-manifold edges split",
                s.topology.non_manifold_edges.to_string(),
            ),
            ("volume", format!("{:.6}", report.volume)),
        ];
        let table: String = rows
            .iter()
            .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v)))
            .collect();
        let json = serde_json::to_string_pretty(report).unwrap_or_default();
        let name = escape(name);
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Repair of {name}</title><style>body{{font-family:sans-serif;margin:16px;\
             background:#fafafa;color:#1e1e1e}}th{{text-align:left;padding:2px 12px 2px 0}}\
             img{{display:block;max-width:100%}}</style></head><body>\n\
             <h1>Repair of {name}</h1>\n\
             <img id=\"picture\" width=\"{w}\" height=\"{h}\" alt=\"{name} before and after the repair\" \
             src=\"data:image/png;base64,{png}\">\n<table>{table}</table>\n\
             <details><summary>Full report</summary><pre>{json}</pre></details>\n</body></html>\n",
            w = self.width,
            h = self.height,
            json = escape(&json),
        )
    }
}

/// Escape text for HTML content and quoted attributes.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_quoted_attribute(s)
}
