//! [`RepairOptions`]: which stages run and with which parameters.

use std::time::Instant;

use serde::{Deserialize, Serialize};

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
    /// Absolute weld tolerance in model units, the same for every corner; `None` (the
    /// default) chooses it from the data: see [`RepairOptions::weld_relative_tolerance`].
    pub weld_tolerance: Option<f32>,
    /// The automatic weld's upper bound, as a fraction of the model's size (the diagonal of the
    /// box of its facets but for 1 % of their area at each end of each axis, so that a stray
    /// facet far away does not widen it; `model_size` in the weld's report; used when
    /// [`RepairOptions::weld_tolerance`] is `None`; along each axis, never below 16 ulp of
    /// the largest coordinate on that axis). Every corner's own limit is further cut to a
    /// quarter of the shortest edge of the facets it belongs to, so noise is welded up to the
    /// bound while the two ends of a real edge, however short, never merge; a vertex the
    /// exact weld already closes is not welded further. The default 5e-5 welds copies that
    /// differ by up to 1e-5 of the diagonal per coordinate with room to spare.
    pub weld_relative_tolerance: f32,
    /// Stitch open seams: boundary edges that lie along another boundary edge (both ends
    /// within half the shortest edge at any boundary vertex near them, and within
    /// [`RepairOptions::stitch_relative`] of the model's size) are joined, so an open piece of
    /// surface beside another is sewn on rather than dropped as a tiny shell. Only with the
    /// automatic weld: an explicit [`RepairOptions::weld_tolerance`], or `weld: false`, wins.
    pub stitch: bool,
    /// The largest gap a stitch bridges, as a fraction of the model's size (as for
    /// [`RepairOptions::weld_relative_tolerance`]; default 1e-3).
    pub stitch_relative: f32,
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
    /// A shell is tiny (noise, removed) when it shares no vertex with another shell, touches
    /// or crosses no other shell's facets, is not a void (wound inward in another shell's
    /// material), and its bounding-box diagonal is below this fraction of the model's size
    /// (as for [`RepairOptions::weld_relative_tolerance`]; default 2 %), whatever its facet
    /// count (up to [`RepairOptions::tiny_shell_max_facets`]). Shells of fewer than 4 facets
    /// (which cannot enclose a volume) are always tiny.
    pub tiny_shell_ratio: f32,
    /// See [`RepairOptions::tiny_shell_ratio`] (default: no limit).
    pub tiny_shell_max_facets: u32,
    /// Noise is a small part of a model: when the shells that the tiny-shell rule would
    /// remove hold together more than this fraction of the surface area of all facets
    /// (default 10 %), they are parts of the model (a model made only of small separate
    /// pieces, such as a grid of pins, or many small parts laid out beside a larger one) and
    /// are kept, but for those under a tenth of the area of a typical one (the area-weighted
    /// median): debris among the parts. 1 or more turns the check off.
    pub tiny_shell_max_area_share: f32,
    /// Fill holes (closed boundary loops).
    pub fill_holes: bool,
    /// Leave holes with more boundary edges than this open.
    pub max_hole_edges: u32,
    /// Give up with [`HealError::DeadlineExceeded`](crate::HealError::DeadlineExceeded) once
    /// this instant has passed (checked between stages and inside the long loops). Not part of
    /// the serialised options.
    #[serde(skip)]
    pub deadline: Option<Instant>,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            max_file_bytes: 4 << 30,
            max_facets: 80_000_000,
            weld: true,
            weld_tolerance: None,
            weld_relative_tolerance: 5e-5,
            stitch: true,
            stitch_relative: 1e-3,
            remove_degenerate: true,
            remove_duplicates: true,
            fix_winding: true,
            fix_orientation: true,
            remove_tiny_shells: true,
            tiny_shell_ratio: 0.02,
            tiny_shell_max_facets: u32::MAX,
            tiny_shell_max_area_share: 0.1,
            fill_holes: true,
            max_hole_edges: 5_000,
            deadline: None,
        }
    }
}
