//! The pipeline's [`Stage`]s and what each reports: one struct per stage, gathered in
//! [`Stages`] and summarised by [`Report`]; [`Repaired`] pairs the report with the mesh.

use std::io::Write;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Bbox, Mesh, provenance::Provenance, stl};

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
    /// Stored normals that were zero, non-finite, missing or disagreed with the vertex order.
    pub wrong_normals: u64,
    /// The facet count a binary header declared when it was below the whole records the file
    /// holds (all of which were read, as admesh does); absent when the count was right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_facets: Option<u64>,
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
    /// Tolerance used (model units; 0 for exact only): the largest distance two corners may
    /// be apart and still merge.
    pub tolerance: f64,
    /// How the tolerance was chosen (`exact`, `absolute` or `auto` and its rule).
    #[serde(default)]
    pub rule: String,
    /// Corners whose limit was cut below the tolerance because their facet is small (auto).
    #[serde(default)]
    pub limited_corners: u64,
    /// Vertices the exact weld closes (their bit-identical copies' facets have a facet on
    /// each side of every edge at them): they show no noise, and take no tolerance merge
    /// (auto).
    #[serde(default)]
    pub closed_vertices: u64,
    /// Largest distance actually bridged by a merge: the noise found in the input.
    #[serde(default)]
    pub largest_merge: f64,
    /// Facets whose corners were apart in the input but merged into one vertex (auto; 0
    /// means no real edge was collapsed).
    #[serde(default)]
    pub collapsed_facets: u64,
    /// Corners merged because they are one point up to the rounding of the coordinates (4
    /// units in the last place of the model's largest coordinate on each axis) although their
    /// limits, or a vertex the exact weld closed, kept them apart (auto): two vertices a
    /// boolean or an export computed apart and wrote as one point, the facets on the edge
    /// between them slivers (those count in the clean stage's `repeated_vertex_removed`, not
    /// in `collapsed_facets`).
    #[serde(default)]
    pub rounding_merged: u64,
    /// The model's size the automatic bounds (the weld's, the stitch's, the tiny shells') are
    /// fractions of: the diagonal of the box of its facets less stray ones (all but 1 % of
    /// their area at each end of each axis), at most the bounding box's diagonal.
    #[serde(default)]
    pub model_size: f64,
    /// The noise measured between copies of a vertex (auto): the median, over up to 512
    /// cells of the weld's grid, of the distance from a cell's first corner to the nearest
    /// other corner in it; 0 when copies are bit-identical. No corner's limit is below 4
    /// times it (an edge shorter than that cannot be told from the noise, and is merged).
    #[serde(default)]
    pub noise: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Clean stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CleanReport {
    /// Facets with a repeated vertex or zero area, removed.
    pub degenerate_removed: u64,
    /// Of `degenerate_removed`, the facets with a repeated vertex (as read, or once the weld
    /// or a stitch merged two of their corners): lines or points, removed whatever the
    /// options.
    #[serde(default)]
    pub repeated_vertex_removed: u64,
    /// Facets repeating an earlier facet's vertices (either winding), removed.
    pub duplicate_removed: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Edge-topology stage figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyReport {
    /// Facets removed where two solids share a face (each solid written whole, so the face
    /// comes twice): the kept side of each such pair of copies, found on edges that had four
    /// facets with both sides counted (the duplicate count holds the other side of each),
    /// and both sides of a face meshed differently on each side (two regions of one plane on
    /// the same rim). Removing both sides joins the solids.
    #[serde(default)]
    pub shared_faces_removed: u64,
    /// Distinct undirected edges.
    pub edges: u64,
    /// Edges with one facet.
    pub boundary_edges: u64,
    /// Edges with more than two facets; their facets are re-paired so that every edge keeps at
    /// most two, the rest are cut loose along that edge.
    pub non_manifold_edges: u64,
    /// Pairs of boundary edges stitched together (an open seam sewn; see
    /// [`RepairOptions::stitch`](crate::RepairOptions::stitch)). `edges`, `boundary_edges` and
    /// `non_manifold_edges` are counted after stitching.
    pub stitched_edges: u64,
    /// Vertices merged by stitching.
    pub stitched_vertices: u64,
    /// Largest gap a stitch bridged (model units).
    pub stitch_largest: f64,
    /// Stitch rounds: those of the neighbourhood stitch that ran (each after the last one sewed
    /// something; at most 3), then those of the stitch of copies that sewed something (run on
    /// the edges still open; at most 3).
    #[serde(default)]
    pub stitch_rounds: u64,
    /// Boundary edges split at the boundary vertices that lie on them (T-junctions: a seam
    /// between patches meshed with different subdivisions), so that the seam's two sides pair
    /// up. Counted before `edges` and `boundary_edges`.
    #[serde(default)]
    pub zipped_edges: u64,
    /// Points inserted into those edges.
    #[serde(default)]
    pub zipped_points: u64,
    /// Grid cells too crowded to search for T-junctions (a crafted pile of boundary; see
    /// docs/HEALING.md); 0 on real models.
    #[serde(default)]
    pub zip_cells_skipped: u64,
    /// Pairs of boundary chains that ran alongside each other (a curved seam between patches
    /// meshed apart, off each other by the chords' sagitta) joined by a strip of slivers.
    #[serde(default)]
    pub strips: u64,
    /// Facets those strips added (marked as filled in the provenance).
    #[serde(default)]
    pub strip_facets: u64,
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
    /// Shells under the tiny-shell size bound, sharing no vertex with another shell, kept
    /// because they touch or cross another shell (letters on a plate, a pin through a part)
    /// or lie in its material wound inward (a void).
    #[serde(default)]
    pub kept_touching: u64,
    /// The contact test behind [`ShellsReport::kept_touching`] ran out of its work budget
    /// (proportional to the facets) and kept every shell under the size bound.
    #[serde(default)]
    pub touch_limited: bool,
    /// The share of the surface area held by the shells the tiny-shell rule would remove
    /// (0 when there are none).
    #[serde(default)]
    pub tiny_area_share: f64,
    /// Shells the rule would have removed, kept because together they held more than
    /// [`RepairOptions::tiny_shell_max_area_share`](crate::RepairOptions::tiny_shell_max_area_share)
    /// of the surface area: parts of the model, not noise (those under a tenth of a typical
    /// one's area are still removed).
    #[serde(default)]
    pub kept_as_parts: u64,
    /// A removed shell touched a vertex whose weld limit its facets had cut (the repair then
    /// checks that welding its result again merges nothing).
    #[serde(default)]
    pub removed_limited: bool,
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
    /// Vertices added (the centre of every loop filled by a fan).
    #[serde(default)]
    pub vertices_added: u64,
    /// Of those, corners given back: the point where the planes of the surface round a hole
    /// meet, when the hole is that corner with its facets missing (a box's corner vertex
    /// and every facet round it), and the fan round it lies in those planes.
    #[serde(default)]
    pub corners_restored: u64,
    /// Boundary edges split at vertices of their own loop that lie on them (T-junctions:
    /// a crack between a facet's edge and a chain of edges along it), before filling.
    #[serde(default)]
    pub edges_split: u64,
    /// Candidate checks the triangulations made: a measure of the stage's cost, at most a
    /// constant times the boundary edges whatever the holes' shapes.
    #[serde(default)]
    pub work: u64,
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
    /// Closed shells that enclose no volume: a flat open piece whose rim was filled onto
    /// itself, the fill lying on the piece (not printable; `watertight` is false).
    #[serde(default)]
    pub flat_shells: u64,
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

impl Stages {
    /// Every stage's name and wall-clock seconds, in the order they run (writing last).
    ///
    /// ```
    /// let s = fixmyprint_heal::Stages::default();
    /// let names: Vec<&str> = s.seconds().iter().map(|&(name, _)| name).collect();
    /// assert_eq!(names.first(), Some(&"parse"));
    /// assert_eq!(names.last(), Some(&"write"));
    /// ```
    pub fn seconds(&self) -> [(&'static str, f64); 9] {
        [
            ("parse", self.parse.seconds),
            ("weld", self.weld.seconds),
            ("clean", self.clean.seconds),
            ("topology", self.topology.seconds),
            ("winding", self.winding.seconds),
            ("shells", self.shells.seconds),
            ("holes", self.holes.seconds),
            ("orient", self.orient.seconds),
            ("write", self.write.seconds),
        ]
    }
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
    /// Why the output is not watertight: one line per cause, with its count (empty, and left
    /// out of the JSON, when it is watertight).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_watertight: Vec<String>,
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
    /// Times the stages ran: more than 1 when welding the result again would have merged
    /// vertices (see `repair_soup`); `stages` describes the first pass, the summary the last.
    #[serde(default)]
    pub passes: u32,
}

/// The outcome of a repair: the mesh and the report.
#[derive(Debug, Clone)]
pub struct Repaired {
    /// The repaired mesh.
    pub mesh: Mesh,
    /// What was done.
    pub report: Report,
    /// What was done to each output facet, and the facets removed as noise.
    pub provenance: Provenance,
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
