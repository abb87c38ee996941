//! The STL healing core: parse → weld → clean → topology → winding → shells → holes →
//! orientation → normals → write.
//!
//! Everything here is synchronous and works on flat arrays (`Vec<[f32; 3]>` vertices,
//! `Vec<[u32; 3]>` triangles); rayon parallelises the stages whose data allows it. The service
//! calls it from a blocking task; the CLI ([`crate::repair_cli`]) calls it directly.
//!
//! ```
//! use fixmyprint::heal::{self, RepairOptions};
//!
//! // A deterministic broken model: soup with float noise, flipped facets, holes, duplicates…
//! let broken = heal::generate::broken_model(7, 20_000);
//! let repaired = heal::repair(&broken, &RepairOptions::default())?;
//! assert!(repaired.report.watertight);
//! let stl: Vec<u8> = repaired.to_stl_bytes();
//! assert_eq!(stl.len(), 84 + 50 * repaired.mesh.triangles.len());
//! # Ok::<(), heal::HealError>(())
//! ```
//!
//! The stages, their options and the report are described in `docs/HEALING.md`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

mod clean;
pub mod generate;
mod holes;
mod keys;
mod orient;
mod shells;
pub mod stl;
mod topology;
mod weld;

pub use stl::{Format, Soup};

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

pub(crate) fn bbox_of(points: impl Iterator<Item = [f32; 3]>) -> Option<Bbox> {
    let mut b: Option<Bbox> = None;
    for p in points {
        b.get_or_insert(Bbox { min: p, max: p }).grow(p);
    }
    b
}

/// Which stages run and with which parameters. `Default` gives the recommended settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepairOptions {
    /// Refuse inputs larger than this many bytes (checked before anything is allocated).
    pub max_file_bytes: u64,
    /// Refuse inputs with more facets than this.
    pub max_facets: u64,
    /// Weld vertices within a tolerance after the exact weld (exact welding always runs).
    pub weld: bool,
    /// Absolute weld tolerance in model units; `None` derives it from
    /// [`RepairOptions::weld_relative_tolerance`].
    pub weld_tolerance: Option<f32>,
    /// Weld tolerance as a fraction of the bounding-box diagonal (used when
    /// [`RepairOptions::weld_tolerance`] is `None`); never below 16 ulp of the largest coordinate.
    pub weld_relative_tolerance: f32,
    /// Drop facets with a repeated vertex or zero area.
    pub remove_degenerate: bool,
    /// Drop facets using the same three vertices as an earlier facet (either winding).
    pub remove_duplicates: bool,
    /// Make the winding consistent within every shell.
    pub fix_winding: bool,
    /// Flip shells that face inward (cavities nested in another shell stay inward).
    pub fix_orientation: bool,
    /// Remove tiny disconnected shells.
    pub remove_tiny_shells: bool,
    /// A shell is tiny when its bounding-box diagonal is below this fraction of the model's
    /// diagonal and it has at most [`RepairOptions::tiny_shell_max_facets`] facets. Shells of
    /// fewer than 4 facets (which cannot enclose a volume) are always tiny.
    pub tiny_shell_ratio: f32,
    /// See [`RepairOptions::tiny_shell_ratio`].
    pub tiny_shell_max_facets: u32,
    /// Fill holes (closed boundary loops).
    pub fill_holes: bool,
    /// Leave holes with more boundary edges than this open.
    pub max_hole_edges: u32,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            max_file_bytes: 4 << 30,
            max_facets: 80_000_000,
            weld: true,
            weld_tolerance: None,
            weld_relative_tolerance: 1e-6,
            remove_degenerate: true,
            remove_duplicates: true,
            fix_winding: true,
            fix_orientation: true,
            remove_tiny_shells: true,
            tiny_shell_ratio: 0.01,
            tiny_shell_max_facets: 64,
            fill_holes: true,
            max_hole_edges: 5_000,
        }
    }
}

/// Why an input could not be repaired. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    /// The input has no bytes at all.
    #[error("empty file: an STL file needs at least an 84-byte header")]
    Empty,
    /// The input is larger than [`RepairOptions::max_file_bytes`].
    #[error("file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// More facets than [`RepairOptions::max_facets`].
    #[error("file holds {facets} facets, over the limit of {limit}")]
    TooManyFacets {
        /// Facets in the input.
        facets: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Binary STL shorter than its 84-byte header.
    #[error("binary STL truncated inside the header: {len} bytes, the header alone needs 84")]
    TruncatedHeader {
        /// Size of the input.
        len: u64,
    },
    /// A binary header that declares zero facets.
    #[error("binary STL declares 0 facets (header only): nothing to repair")]
    NoFacets,
    /// The header declares more facets than the data holds.
    #[error(
        "binary STL truncated: header declares {declared} facets ({expected} bytes) but the file \
         has {actual} bytes; facet {facet} is cut off at byte offset {offset}"
    )]
    Truncated {
        /// Facet count from the header.
        declared: u64,
        /// File size the header implies.
        expected: u64,
        /// Actual file size.
        actual: u64,
        /// Index of the first incomplete facet.
        facet: u64,
        /// Byte offset where that facet starts.
        offset: u64,
    },
    /// The header declares fewer facets than the data holds.
    #[error(
        "binary STL facet count mismatch: header declares {declared} facets ({expected} bytes) but \
         the file has {actual} bytes; {extra} unexpected bytes start at byte offset {offset}"
    )]
    TrailingData {
        /// Facet count from the header.
        declared: u64,
        /// File size the header implies.
        expected: u64,
        /// Actual file size.
        actual: u64,
        /// Bytes beyond what the header declares.
        extra: u64,
        /// Byte offset of the first unexpected byte.
        offset: u64,
    },
    /// A NaN or infinite coordinate.
    #[error("facet {facet} (byte offset {offset}) has a non-finite coordinate (NaN or infinity)")]
    NonFinite {
        /// Index of the facet.
        facet: u64,
        /// Byte offset of the facet (binary) or of its `facet` keyword (ASCII).
        offset: u64,
    },
    /// A syntax error in an ASCII STL file.
    #[error("ASCII STL, line {line} (byte offset {offset}): {problem}")]
    Ascii {
        /// 1-based line number.
        line: u64,
        /// Byte offset of the offending token.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A stage of the pipeline, reported to a progress callback as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Decoding the STL.
    Parse,
    /// Merging vertices.
    Weld,
    /// Dropping degenerate and duplicate facets.
    Clean,
    /// Pairing edges.
    Topology,
    /// Making the winding consistent and finding shells.
    Winding,
    /// Removing tiny shells.
    Shells,
    /// Filling holes.
    Holes,
    /// Orienting every shell outward (cavities inward).
    Orient,
    /// Writing the output (run by the caller, e.g. the CLI).
    Write,
}

impl Stage {
    /// All stages in pipeline order.
    pub const ALL: [Stage; 9] = [
        Stage::Parse,
        Stage::Weld,
        Stage::Clean,
        Stage::Topology,
        Stage::Winding,
        Stage::Shells,
        Stage::Holes,
        Stage::Orient,
        Stage::Write,
    ];

    /// Short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Weld => "weld",
            Stage::Clean => "clean",
            Stage::Topology => "topology",
            Stage::Winding => "winding",
            Stage::Shells => "shells",
            Stage::Holes => "holes",
            Stage::Orient => "orient",
            Stage::Write => "write",
        }
    }
}

/// Parse stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParseReport {
    /// `"binary"` or `"ascii"`.
    pub format: String,
    /// Input size.
    pub bytes: u64,
    /// Facets read.
    pub facets: u64,
    /// Stored normals that were zero, non-finite or disagreed with the vertex order.
    pub wrong_normals: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Weld stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeldReport {
    /// Vertex slots in the input (3 per facet).
    pub input_vertices: u64,
    /// Slots merged with a bit-identical vertex.
    pub exact_merged: u64,
    /// Slots merged with a vertex within the tolerance but not bit-identical.
    pub tolerance_merged: u64,
    /// Distinct vertices after welding.
    pub output_vertices: u64,
    /// Tolerance used (model units; 0 for exact only).
    pub tolerance: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Clean stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CleanReport {
    /// Facets with a repeated vertex or zero area, removed.
    pub degenerate_removed: u64,
    /// Facets repeating an earlier facet's vertices (either winding), removed.
    pub duplicate_removed: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Edge-topology stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyReport {
    /// Distinct undirected edges.
    pub edges: u64,
    /// Edges with one facet.
    pub boundary_edges: u64,
    /// Edges with more than two facets; their facets are re-paired so that every edge keeps at
    /// most two, the rest are cut loose along that edge.
    pub non_manifold_edges: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Winding stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindingReport {
    /// Facets flipped to agree with their neighbours.
    pub facets_flipped: u64,
    /// Edges whose two facets cannot agree (non-orientable surfaces).
    pub conflicts: u64,
    /// Connected shells found.
    pub shells: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Shell stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShellsReport {
    /// Tiny shells removed.
    pub tiny_removed: u64,
    /// Facets in them.
    pub facets_removed: u64,
    /// Shells kept.
    pub kept: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Hole stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HolesReport {
    /// Boundary loops found.
    pub found: u64,
    /// Loops filled.
    pub filled: u64,
    /// Loops left open (too large, or not closed).
    pub left_open: u64,
    /// Facets added.
    pub facets_added: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Orientation stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrientReport {
    /// Whole shells flipped.
    pub shells_flipped: u64,
    /// Shells nested inside an odd number of others (kept facing inward).
    pub cavities: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Write stage figures (filled in by whoever writes the output).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteReport {
    /// Bytes written.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Per-stage figures, in pipeline order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// See [`ParseReport`].
    pub parse: ParseReport,
    /// See [`WeldReport`].
    pub weld: WeldReport,
    /// See [`CleanReport`].
    pub clean: CleanReport,
    /// See [`TopologyReport`].
    pub topology: TopologyReport,
    /// See [`WindingReport`].
    pub winding: WindingReport,
    /// See [`ShellsReport`].
    pub shells: ShellsReport,
    /// See [`HolesReport`].
    pub holes: HolesReport,
    /// See [`OrientReport`].
    pub orient: OrientReport,
    /// See [`WriteReport`].
    pub write: WriteReport,
}

/// What the repair did and what came out. Serialises to the JSON report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Facets in the input.
    pub input_facets: u64,
    /// Facets in the output.
    pub output_facets: u64,
    /// Vertices in the output.
    pub output_vertices: u64,
    /// Shells in the output.
    pub shells: u64,
    /// Holes filled.
    pub holes_filled: u64,
    /// Every edge has exactly two facets, traversed in opposite directions.
    pub watertight: bool,
    /// The winding agrees across every edge.
    pub winding_consistent: bool,
    /// Enclosed volume (cavities subtract), model units cubed.
    pub volume: f64,
    /// Bounding box of the output, `None` when empty.
    pub bbox: Option<Bbox>,
    /// Per-stage counts and times.
    pub stages: Stages,
    /// Seconds for all stages run so far.
    pub total_seconds: f64,
}

/// The outcome of a repair: the mesh and the report.
#[derive(Debug, Clone)]
pub struct Repaired {
    /// The repaired mesh.
    pub mesh: Mesh,
    /// What was done.
    pub report: Report,
}

impl Repaired {
    /// Encode the mesh as binary STL with freshly computed normals.
    pub fn to_stl_bytes(&self) -> Vec<u8> {
        stl::encode_binary(&self.mesh)
    }

    /// Write the mesh as binary STL and record the write stage in the report.
    pub fn write_stl<W: Write + Send>(&mut self, out: W) -> std::io::Result<()> {
        let t = Instant::now();
        let bytes = stl::write_binary(&self.mesh, out)?;
        self.report.stages.write = WriteReport {
            bytes,
            seconds: t.elapsed().as_secs_f64(),
        };
        self.report.total_seconds += self.report.stages.write.seconds;
        Ok(())
    }
}

/// Repair an STL file held in memory (binary or ASCII, auto-detected).
pub fn repair(bytes: &[u8], options: &RepairOptions) -> Result<Repaired, HealError> {
    repair_with_progress(bytes, options, &|_| {})
}

/// Like [`repair`], calling `progress` as each stage starts.
pub fn repair_with_progress(
    bytes: &[u8],
    options: &RepairOptions,
    progress: &(dyn Fn(Stage) + Sync),
) -> Result<Repaired, HealError> {
    progress(Stage::Parse);
    let soup = stl::parse(bytes, options)?;
    Ok(repair_soup(soup, options, progress))
}

/// Read and repair a file, checking the size cap before reading it.
pub fn repair_file(
    path: &Path,
    options: &RepairOptions,
    progress: &(dyn Fn(Stage) + Sync),
) -> Result<Repaired, HealError> {
    progress(Stage::Parse);
    let soup = stl::parse_file(path, options)?;
    Ok(repair_soup(soup, options, progress))
}

/// Run every stage after parsing on a parsed [`Soup`] (which is consumed so its memory is
/// released as early as possible).
pub fn repair_soup(
    soup: Soup,
    options: &RepairOptions,
    progress: &(dyn Fn(Stage) + Sync),
) -> Repaired {
    let mut report = Report {
        input_facets: soup.facets(),
        ..Report::default()
    };
    report.stages.parse = ParseReport {
        format: soup.format.name().to_string(),
        bytes: soup.bytes,
        facets: soup.facets(),
        wrong_normals: soup.wrong_normals,
        seconds: soup.seconds,
    };

    // Weld.
    progress(Stage::Weld);
    let t = Instant::now();
    let bbox = keys::par_bbox(&soup.positions);
    let tolerance = if options.weld {
        tolerance_for(bbox, options)
    } else {
        0.0
    };
    let welded = weld::weld_in(soup.positions, tolerance, bbox);
    report.stages.weld = WeldReport {
        input_vertices: welded.input_vertices,
        exact_merged: welded.exact_merged,
        tolerance_merged: welded.tolerance_merged,
        output_vertices: welded.vertices.len() as u64,
        tolerance: f64::from(tolerance),
        seconds: t.elapsed().as_secs_f64(),
    };
    let vertices = welded.vertices;
    let mut triangles = welded.triangles;

    // Clean.
    progress(Stage::Clean);
    let t = Instant::now();
    let (degenerate, duplicate) = clean::clean(
        &vertices,
        &mut triangles,
        options.remove_degenerate,
        options.remove_duplicates,
    );
    report.stages.clean = CleanReport {
        degenerate_removed: degenerate,
        duplicate_removed: duplicate,
        seconds: t.elapsed().as_secs_f64(),
    };

    // Topology.
    progress(Stage::Topology);
    let t = Instant::now();
    let topo = topology::pair_edges(&triangles);
    report.stages.topology = TopologyReport {
        edges: topo.edges,
        boundary_edges: topo.boundary_edges,
        non_manifold_edges: topo.non_manifold_edges,
        seconds: t.elapsed().as_secs_f64(),
    };

    // Winding and shells.
    progress(Stage::Winding);
    let t = Instant::now();
    let winding = orient::make_consistent(&topo.twin, triangles.len(), options.fix_winding);
    report.stages.winding = WindingReport {
        facets_flipped: winding.flipped_count,
        conflicts: winding.conflicts,
        shells: u64::from(winding.shell_count),
        seconds: t.elapsed().as_secs_f64(),
    };

    // Tiny shells; apply flips, compact, collect boundary edges.
    progress(Stage::Shells);
    let t = Instant::now();
    let kept = shells::select(&vertices, &triangles, &winding, options);
    let compact = shells::compact(&triangles, &topo.twin, &winding, &kept);
    drop(topo);
    report.stages.shells = ShellsReport {
        tiny_removed: kept.removed_shells,
        facets_removed: kept.removed_facets,
        kept: u64::from(kept.kept_shells),
        seconds: t.elapsed().as_secs_f64(),
    };
    let mut triangles = compact.triangles;
    let mut shell_of = compact.shell_of;
    let shell_count = kept.kept_shells;

    // Holes.
    progress(Stage::Holes);
    let t = Instant::now();
    let holes = if options.fill_holes {
        holes::fill(
            &vertices,
            &mut triangles,
            &mut shell_of,
            &compact.boundary,
            options.max_hole_edges,
        )
    } else {
        holes::HoleStats::open(&compact.boundary)
    };
    report.stages.holes = HolesReport {
        found: holes.found,
        filled: holes.filled,
        left_open: holes.left_open,
        facets_added: holes.facets_added,
        seconds: t.elapsed().as_secs_f64(),
    };

    // Outward orientation.
    progress(Stage::Orient);
    let t = Instant::now();
    let oriented = orient::orient_outward(
        &vertices,
        &mut triangles,
        &shell_of,
        shell_count,
        options.fix_orientation,
    );
    report.stages.orient = OrientReport {
        shells_flipped: oriented.flipped,
        cavities: oriented.cavities,
        seconds: t.elapsed().as_secs_f64(),
    };

    // Check the fills on the final facets (only where a fill may have touched them).
    let fills_closed =
        holes.filled == 0 || holes::closed_around(vertices.len(), &triangles, &compact.boundary);
    let mesh = compact_vertices(&vertices, triangles);
    report.output_facets = mesh.triangles.len() as u64;
    report.output_vertices = mesh.vertices.len() as u64;
    report.shells = u64::from(shell_count);
    report.holes_filled = holes.filled;
    report.winding_consistent = report.stages.winding.conflicts == 0 && options.fix_winding;
    report.watertight = !mesh.triangles.is_empty()
        && holes.left_open == 0
        && !holes.unsafe_fill
        && fills_closed
        && report.stages.topology.non_manifold_edges == 0
        && report.winding_consistent;
    report.volume = oriented.volume;
    report.bbox = mesh.bbox();
    let s = &report.stages;
    report.total_seconds = s.parse.seconds
        + s.weld.seconds
        + s.clean.seconds
        + s.topology.seconds
        + s.winding.seconds
        + s.shells.seconds
        + s.holes.seconds
        + s.orient.seconds;
    Repaired { mesh, report }
}

/// The weld tolerance the options give for these positions.
fn weld_tolerance(positions: &[[f32; 3]], options: &RepairOptions) -> f32 {
    tolerance_for(keys::par_bbox(positions), options)
}

/// The weld tolerance for points whose bounding box is `bbox`.
fn tolerance_for(bbox: Option<Bbox>, options: &RepairOptions) -> f32 {
    if let Some(t) = options.weld_tolerance {
        return if t.is_finite() && t > 0.0 { t } else { 0.0 };
    }
    let Some(b) = bbox else {
        return 0.0;
    };
    let max_abs = (0..3)
        .map(|a| b.min[a].abs().max(b.max[a].abs()))
        .fold(0.0f32, f32::max);
    let rel = options.weld_relative_tolerance.max(0.0);
    let t = (b.diagonal() * f64::from(rel)) as f32;
    let ulps = max_abs * (16.0 * f32::EPSILON);
    if rel == 0.0 { 0.0 } else { t.max(ulps) }
}

/// Keep only referenced vertices, numbered in order of first use.
fn compact_vertices(vertices: &[[f32; 3]], mut triangles: Vec<[u32; 3]>) -> Mesh {
    const UNSET: u32 = u32::MAX;
    let mut map = vec![UNSET; vertices.len()];
    let mut out = Vec::new();
    for t in triangles.iter_mut() {
        for v in t.iter_mut() {
            let m = &mut map[*v as usize];
            if *m == UNSET {
                *m = out.len() as u32;
                out.push(vertices[*v as usize]);
            }
            *v = *m;
        }
    }
    Mesh {
        vertices: out,
        triangles,
    }
}

/// The individual stages on flat arrays, for benchmarks and tools that want one step alone.
/// [`repair_soup`] runs them all in order with the right glue.
pub mod stages {
    use super::{Mesh, RepairOptions, orient, topology};

    /// Weld corner positions (three per facet) within `tolerance` (0 = exact only).
    pub fn weld(positions: Vec<[f32; 3]>, tolerance: f32) -> Mesh {
        let w = super::weld::weld(positions, tolerance);
        Mesh {
            vertices: w.vertices,
            triangles: w.triangles,
        }
    }

    /// The tolerance [`repair_soup`](super::repair_soup) would use for these positions.
    pub fn weld_tolerance(positions: &[[f32; 3]], options: &RepairOptions) -> f32 {
        super::weld_tolerance(positions, options)
    }

    /// Drop degenerate and duplicate facets; returns (degenerate, duplicate) counts.
    pub fn clean(mesh: &mut Mesh) -> (u64, u64) {
        super::clean::clean(&mesh.vertices, &mut mesh.triangles, true, true)
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
}
