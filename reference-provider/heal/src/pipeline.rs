//! The pipeline: [`repair_soup`] runs the stages in order, each returning its output and its
//! own report, timed by one helper; [`repair`] and [`repair_file`] parse first.

use std::path::Path;
use std::time::Instant;

use crate::report::{
    CleanReport, HolesReport, OrientReport, ParseReport, Repaired, Report, ShellsReport, Stage,
    Stages, TopologyReport, WeldReport, WindingReport, WriteReport,
};
use rayon::prelude::*;

use crate::provenance::{self, Provenance, mark};
use crate::stl::{self, Soup};
use crate::{
    Bbox, HealError, Mesh, RepairOptions, clean, holes, keys, orient, shells, stitch, strips,
    topology, touching, weld, zip,
};

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
    repair_soup(soup, options, progress)
}

/// Read and repair a file, checking the size cap before reading it.
pub fn repair_file(
    path: &Path,
    options: &RepairOptions,
    progress: &(dyn Fn(Stage) + Sync),
) -> Result<Repaired, HealError> {
    progress(Stage::Parse);
    let soup = stl::parse_file(path, options)?;
    repair_soup(soup, options, progress)
}

/// The first corner of `positions` with a NaN or infinite coordinate. Blocks are tested
/// whole (a branch-free fold the compiler vectorises) and only a block that holds one is
/// searched corner by corner: `position_first` per corner took 50 ms at 1M facets.
fn first_non_finite(positions: &[[f32; 3]]) -> Option<usize> {
    const BLOCK: usize = 1 << 14;
    let bad = |p: &[f32; 3]| !p.iter().all(|x| x.is_finite());
    let block = positions.par_chunks(BLOCK).position_first(|b| {
        b.iter()
            .flatten()
            .fold(false, |any, x| any | !x.is_finite())
    })?;
    let at = block * BLOCK;
    positions[at..].iter().position(bad).map(|i| at + i)
}

/// Run every stage after parsing on a parsed [`Soup`] (which is consumed so its memory is
/// released as early as possible).
///
/// # Errors
/// [`HealError::NothingPrintable`] when no facet would remain (the error says which option
/// keeps what was removed): an empty file is never a successful repair;
/// [`HealError::DeadlineExceeded`] when [`RepairOptions::deadline`] passes;
/// [`HealError::NonFiniteSoup`] when a soup built by the caller holds a NaN or infinite
/// coordinate (the parser never gives one).
///
/// Each stage is a function below that returns its output and its own report; one helper
/// (`Clock::run`) announces it to `progress`, measures it and enforces
/// [`RepairOptions::deadline`]. A new stage goes into this sequence, with a
/// [`Stage`] variant, a report struct in [`Stages`] and a line in `docs/HEALING.md`.
pub fn repair_soup(
    soup: Soup,
    options: &RepairOptions,
    progress: &(dyn Fn(Stage) + Sync),
) -> Result<Repaired, HealError> {
    if let Some(c) = first_non_finite(&soup.positions) {
        return Err(HealError::NonFiniteSoup {
            facet: (c / 3) as u64,
        });
    }
    let format = soup.format;
    let (mut repaired, mut touched) = heal_once(soup, options, progress, None)?;
    // A weld whose limits were cut by small facets may leave two vertices apart because of a
    // facet that a later stage removed (a sliver in a tiny shell, a degenerate or duplicate
    // copy): welding the output again would merge them. Only the vertices of removed facets
    // (and the vertices hole filling added) can be affected, so only they are checked against
    // their neighbourhood (`weld::touched_may_merge`, no sort); when one of them could merge,
    // the output is welded again, and if that merges anything the stages run once more on it
    // (at most two more passes), so that repairing a repaired model changes nothing.
    for _ in 0..2 {
        let s = &repaired.report.stages;
        let removed =
            s.shells.removed_limited || s.clean.degenerate_removed + s.clean.duplicate_removed > 0;
        if !(s.weld.collapsed_facets > 0
            || s.topology.stitched_vertices > 0
            || (s.weld.limited_corners > 0 && removed))
        {
            break;
        }
        let cap = weld_tolerance(&repaired.mesh, options);
        if !weld::touched_may_merge(
            &repaired.mesh.vertices,
            &repaired.mesh.triangles,
            &touched,
            cap,
        ) {
            break;
        }
        // The output's corners, gathered again for the next pass rather than cloned before
        // this check: at 4M facets a copy is 144 MB more at the peak.
        let corners = |mesh: &Mesh| -> Vec<[f32; 3]> {
            (0..3 * mesh.triangles.len())
                .into_par_iter()
                .map(|c| mesh.vertices[mesh.triangles[c / 3][c % 3] as usize])
                .collect()
        };
        let ((welded, _), _) = weld_stage(corners(&repaired.mesh), options);
        if welded.vertices.len() == repaired.mesh.vertices.len() {
            break;
        }
        drop(welded);
        let positions = corners(&repaired.mesh);
        let soup = Soup {
            positions,
            format,
            bytes: 0,
            wrong_normals: 0,
            header_facets: None,
            seconds: 0.0,
        };
        // Should the next pass find nothing printable, so is the input: say so with its
        // figures (the first pass's removals plus the next one's).
        // What the first pass did to each facet is carried through the next one.
        let carried = std::mem::take(&mut repaired.provenance.facets);
        let again = match heal_once(soup, options, progress, Some(carried)) {
            Ok((again, t)) => {
                touched = t;
                again
            }
            Err(HealError::NothingPrintable {
                degenerate,
                repeated_vertex,
                collapsed,
                duplicates,
                shared_faces,
                tiny_shells,
                tiny_shell_facets,
                ..
            }) => {
                let s = &repaired.report.stages;
                return Err(HealError::NothingPrintable {
                    input_facets: repaired.report.input_facets,
                    degenerate: s.clean.degenerate_removed + degenerate,
                    repeated_vertex: s.clean.repeated_vertex_removed + repeated_vertex,
                    collapsed: s.weld.collapsed_facets + collapsed,
                    duplicates: s.clean.duplicate_removed + duplicates,
                    shared_faces: s.topology.shared_faces_removed + shared_faces,
                    tiny_shells: s.shells.tiny_removed + tiny_shells,
                    tiny_shell_facets: s.shells.facets_removed + tiny_shell_facets,
                });
            }
            Err(e) => return Err(e),
        };
        let first = repaired.report;
        let mut removed = repaired.provenance.removed;
        removed.extend_from_slice(&again.provenance.removed);
        repaired = Repaired {
            mesh: again.mesh,
            provenance: Provenance {
                facets: again.provenance.facets,
                removed,
            },
            report: Report {
                input_facets: first.input_facets,
                holes_filled: first.holes_filled + again.report.holes_filled,
                stages: first.stages,
                total_seconds: first.total_seconds + again.report.total_seconds,
                passes: first.passes + 1,
                ..again.report
            },
        };
    }
    Ok(repaired)
}

/// One pass of every stage after parsing. Also returns the output vertices that a removed
/// facet used or that hole filling added (the only ones a second weld could merge).
/// `carried` is the provenance of the soup's facets from an earlier pass (one byte each).
fn heal_once(
    soup: Soup,
    options: &RepairOptions,
    progress: &(dyn Fn(Stage) + Sync),
    carried: Option<Vec<u8>>,
) -> Result<(Repaired, Vec<u32>), HealError> {
    let input_facets = soup.facets();
    let parse = ParseReport {
        format: soup.format.name().to_string(),
        bytes: soup.bytes,
        facets: soup.facets(),
        wrong_normals: soup.wrong_normals,
        header_facets: soup.header_facets,
        seconds: soup.seconds,
    };
    let mut clock = Clock {
        progress,
        deadline: options.deadline,
        spent: soup.seconds,
    };
    let ((welded, limited_vertex), weld) =
        clock.run(Stage::Weld, || weld_stage(soup.positions, options))?;
    let mut vertices = welded.vertices;
    let mut triangles = welded.triangles;
    // Provenance per facet of `triangles` (the weld keeps one facet per input facet, in order);
    // `None` while nothing is marked, so a first pass pays nothing before the winding stage.
    let mut tags = carried.filter(|t| t.len() == triangles.len());
    let before_clean = tags.as_ref().map(|_| triangles.clone());
    // The farthest the weld merged corners: a facet flat within it is a sliver (a corner
    // that lay on the opposite edge before the weld moved them), and a boundary vertex that
    // close to a boundary edge of its own loop lies on it (a T-junction).
    let snap = weld.largest_merge;
    let ((mut touched, copied), clean) = clock.run(Stage::Clean, || {
        clean_stage(&vertices, &mut triangles, snap, options)
    })?;
    if let (Some(t), Some(before)) = (&mut tags, before_clean) {
        *t = provenance::carry(&before, &triangles, t);
    }
    // Facets that stitching made degenerate or duplicate (removed there).
    let mut clean_extra = CleanReport::default();
    let (topo, topology) = clock.run(Stage::Topology, || {
        topology_stage(
            &vertices,
            &mut triangles,
            &copied,
            &mut touched,
            &mut clean_extra,
            &mut tags,
            options,
            weld.largest_merge,
            weld.model_size,
        )
    })?;
    drop(copied);
    let mut topo = topo;
    let non_manifold = std::mem::take(&mut topo.non_manifold_facets);
    provenance::mark_facets(
        &mut tags,
        triangles.len(),
        &non_manifold,
        mark::NON_MANIFOLD,
    );
    let non_manifold = non_manifold_edges(&triangles, &non_manifold);
    let clean = CleanReport {
        degenerate_removed: clean.degenerate_removed + clean_extra.degenerate_removed,
        repeated_vertex_removed: clean.repeated_vertex_removed
            + clean_extra.repeated_vertex_removed,
        duplicate_removed: clean.duplicate_removed + clean_extra.duplicate_removed,
        ..clean
    };
    let (winding_of, winding) = clock.run(Stage::Winding, || {
        winding_stage(&topo, triangles.len(), options)
    })?;
    let (kept, shells) = clock.run(Stage::Shells, || {
        shells_stage(
            &vertices,
            &triangles,
            topo,
            &winding_of,
            &limited_vertex,
            tags.as_deref(),
            options,
        )
    })?;
    drop(tags);
    // A vertex whose weld limit a short edge cut may merge with a neighbour once the weld has
    // moved the corners round it to their clusters' positions (the edge that cut it is then
    // longer or gone): the check after the pass looks at it too.
    touched.extend(
        limited_vertex
            .iter()
            .enumerate()
            .filter(|(_, l)| **l)
            .map(|(v, _)| v as u32),
    );
    drop(limited_vertex);
    touched.extend_from_slice(&kept.removed_vertices);
    let shell_count = kept.shells;
    let boundary = kept.compact.boundary;
    let mut triangles = kept.compact.triangles;
    let mut shell_of = kept.compact.shell_of;
    let mut tags = kept.tags;
    let removed = kept.removed;
    let before_holes = vertices.len() as u32;
    let (filled, holes) = clock.run(Stage::Holes, || {
        holes_stage(
            &mut vertices,
            &mut triangles,
            &mut shell_of,
            &boundary,
            snap,
            options,
        )
    })?;
    tags.resize(triangles.len(), mark::FILLED);
    let (oriented, orient) = clock.run(Stage::Orient, || {
        orient_stage(&vertices, &mut triangles, &shell_of, shell_count, options)
    })?;
    if oriented.flipped > 0 {
        let flip = &oriented.flip_shell;
        tags.par_iter_mut()
            .zip(shell_of.par_iter())
            .filter(|(_, s)| flip[**s as usize])
            .for_each(|(t, _)| *t |= mark::OUTWARD);
    }

    // Check the fills on the final facets (only where a fill may have touched them).
    let fills_closed = (filled.filled == 0 && filled.edges_split == 0)
        || holes::closed_around(vertices.len(), &triangles, &boundary, &filled.split_corners);
    // The edges of more than two facets were re-paired, and later stages may have removed
    // the extra facets (a sliver or a copy in a tiny shell): only those still so are left.
    let non_manifold_left = crowded_edges(vertices.len(), &triangles, &non_manifold);
    drop(non_manifold);
    touched.extend(before_holes..vertices.len() as u32);
    let (mesh, touched) = compact_vertices(&vertices, triangles, touched);
    if mesh.triangles.is_empty() {
        return Err(HealError::NothingPrintable {
            input_facets,
            degenerate: clean.degenerate_removed,
            repeated_vertex: clean.repeated_vertex_removed,
            collapsed: weld.collapsed_facets,
            duplicates: clean.duplicate_removed,
            shared_faces: topology.shared_faces_removed,
            tiny_shells: shells.tiny_removed,
            tiny_shell_facets: shells.facets_removed,
        });
    }
    let stages = Stages {
        parse,
        weld,
        clean,
        topology,
        winding,
        shells,
        holes,
        orient,
        write: WriteReport::default(),
    };
    let winding_consistent = stages.winding.conflicts == 0 && options.fix_winding;
    let mut not_watertight = Vec::new();
    if filled.left_open > 0 {
        not_watertight.push(format!(
            "{} of {} hole loops left open ({})",
            filled.left_open,
            filled.found,
            if options.fill_holes {
                format!(
                    "longer than max_hole_edges = {} or not closed",
                    options.max_hole_edges
                )
            } else {
                "hole filling is off".to_owned()
            }
        ));
    }
    if filled.unsafe_fill {
        not_watertight.push("a hole could only be closed by a flat fan facet".to_owned());
    }
    if !fills_closed {
        not_watertight.push(
            "a hole fill repeats an edge of the mesh or of another fill, or winds against its \
             shell"
                .to_owned(),
        );
    }
    let flat = stages.orient.flat_shells;
    if flat > 0 {
        not_watertight.push(format!(
            "{flat} shells enclose no volume: a flat open piece whose rim was filled onto \
             itself (such as a face of a CAD export not joined to its neighbours)"
        ));
    }
    let nm = non_manifold_left;
    if nm > 0 {
        not_watertight.push(format!(
            "{nm} edges are shared by more than two facets (split apart): overlapping \
             surfaces, such as copies of one surface that are neither welded nor apart"
        ));
    }
    if !options.fix_winding {
        not_watertight.push("winding was not fixed (fix_winding is off)".to_owned());
    } else if stages.winding.conflicts > 0 {
        not_watertight.push(format!(
            "{} edges where the winding cannot agree (a non-orientable surface)",
            stages.winding.conflicts
        ));
    }
    let watertight = not_watertight.is_empty();
    // Every stage but writing, which comes after.
    let total_seconds = stages.seconds()[..8].iter().map(|&(_, s)| s).sum();
    let report = Report {
        input_facets,
        output_facets: mesh.triangles.len() as u64,
        output_vertices: mesh.vertices.len() as u64,
        shells: u64::from(shell_count) - filled.shells_joined,
        holes_filled: filled.filled,
        watertight,
        not_watertight,
        winding_consistent,
        volume: oriented.volume,
        // Every vertex is used after `compact_vertices`: the box of the vertex list is the
        // mesh's (in parallel, without a gather per corner).
        bbox: keys::par_bbox(&mesh.vertices),
        stages,
        total_seconds,
        passes: 1,
    };
    let provenance = Provenance {
        facets: tags,
        removed,
    };
    Ok((
        Repaired {
            mesh,
            report,
            provenance,
        },
        touched,
    ))
}

/// A stage report that records how long its stage took.
trait Timed {
    fn set_seconds(&mut self, seconds: f64);
}

macro_rules! timed_reports {
    ($($r:ty),*) => {$(
        impl Timed for $r {
            fn set_seconds(&mut self, seconds: f64) {
                self.seconds = seconds;
            }
        }
    )*};
}
timed_reports!(
    WeldReport,
    CleanReport,
    TopologyReport,
    WindingReport,
    ShellsReport,
    HolesReport,
    OrientReport
);

/// Runs the stages: announces each to `progress`, times it, and enforces the deadline.
struct Clock<'a> {
    progress: &'a (dyn Fn(Stage) + Sync),
    deadline: Option<Instant>,
    /// Seconds spent so far, parsing included.
    spent: f64,
}

impl Clock<'_> {
    /// Run one stage: check the deadline, announce the stage, run it, put its wall-clock time
    /// in its report, and check the deadline again (a stage that saw it pass inside a long
    /// loop stops early; its partial output is never used).
    fn run<T, R: Timed>(
        &mut self,
        stage: Stage,
        run: impl FnOnce() -> (T, R),
    ) -> Result<(T, R), HealError> {
        self.check(stage)?;
        (self.progress)(stage);
        let started = Instant::now();
        let (out, mut report) = run();
        let seconds = started.elapsed().as_secs_f64();
        self.spent += seconds;
        report.set_seconds(seconds);
        self.check(stage)?;
        Ok((out, report))
    }

    fn check(&self, stage: Stage) -> Result<(), HealError> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(HealError::DeadlineExceeded {
                stage,
                seconds: self.spent,
            }),
            _ => Ok(()),
        }
    }
}

/// Weld: merge bit-identical corners, then corners within the tolerance the options give.
/// Also returns, per vertex, whether a corner's limit was cut (empty when none was).
fn weld_stage(
    positions: Vec<[f32; 3]>,
    options: &RepairOptions,
) -> ((weld::Welded, Vec<bool>), WeldReport) {
    let bbox = keys::par_bbox(&positions);
    let size = extent(bbox, positions.len() / 3, |f, k| positions[3 * f + k]);
    let (tolerance, axis) = if options.weld {
        weld_bound(bbox, size, options)
    } else {
        (0.0, [0.0; 3])
    };
    // Without an absolute tolerance from the caller, every corner's limit is also cut to a
    // fraction of its own facet's shortest edge (see `weld::local_limits`).
    let auto = options.weld && options.weld_tolerance.is_none() && tolerance > 0.0;
    // (Corners one point up to rounding are not apart: an edge between them was never real.)
    let round = weld::rounding_box(bbox);
    let apart = |p: [f32; 3], q: [f32; 3]| {
        (0..3).any(|a| (f64::from(p[a]) - f64::from(q[a])).abs() > round[a])
    };
    let distinct: Vec<bool> = if auto {
        positions
            .par_chunks_exact(3)
            .map(|p| apart(p[0], p[1]) && apart(p[1], p[2]) && apart(p[0], p[2]))
            .collect()
    } else {
        Vec::new()
    };
    let mut welded = weld::weld_in(positions, tolerance, axis, bbox, auto);
    let (limits, limited) = (std::mem::take(&mut welded.limits), welded.limited);
    // Facets whose corners were apart in the input but share a vertex now.
    let collapsed = if auto {
        welded
            .triangles
            .par_iter()
            .zip(distinct.par_iter())
            .filter(|(t, d)| **d && (t[0] == t[1] || t[1] == t[2] || t[0] == t[2]))
            .count() as u64
    } else {
        0
    };
    let mut limited_vertex = Vec::new();
    if limited > 0 {
        limited_vertex = vec![false; welded.vertices.len()];
        let ids: Vec<u32> = keys::par_blocks(limits.len(), |r, out| {
            for f in r.filter(|&f| limits[f] < tolerance) {
                out.extend_from_slice(&welded.triangles[f]);
            }
        });
        for v in ids {
            limited_vertex[v as usize] = true;
        }
    }
    let rule = if !options.weld || tolerance == 0.0 {
        "exact: bit-identical corners only".to_string()
    } else if options.weld_tolerance.is_some() {
        "absolute: the weld_tolerance given".to_string()
    } else {
        format!(
            "auto: {} of the model's size (the diagonal of the box of its facets, less stray \
             ones), cut for every corner to {} of the shortest edge of its facets, but not \
             below {} times the noise between a vertex's copies",
            options.weld_relative_tolerance,
            weld::LOCAL_FRACTION,
            weld::NOISE_FLOOR
        )
    };
    let report = WeldReport {
        input_vertices: welded.input_vertices,
        exact_merged: welded.exact_merged,
        tolerance_merged: welded.tolerance_merged,
        output_vertices: welded.vertices.len() as u64,
        tolerance: f64::from(tolerance),
        rule,
        limited_corners: limited,
        closed_vertices: welded.closed,
        largest_merge: welded.largest_merge,
        collapsed_facets: collapsed,
        rounding_merged: welded.rounded,
        model_size: size,
        noise: welded.noise,
        seconds: 0.0,
    };
    ((welded, limited_vertex), report)
}

/// Clean: drop degenerate and duplicate facets in place; returns the removed facets' vertices
/// and the kept facets of which a copy was removed.
fn clean_stage(
    vertices: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    snap: f64,
    options: &RepairOptions,
) -> ((Vec<u32>, Vec<[u32; 3]>), CleanReport) {
    let c = clean::clean(
        vertices,
        triangles,
        options.remove_degenerate,
        options.remove_duplicates,
        snap,
    );
    let report = CleanReport {
        degenerate_removed: c.degenerate,
        repeated_vertex_removed: c.repeated,
        duplicate_removed: c.duplicate,
        seconds: 0.0,
    };
    ((c.removed_vertices, c.copied), report)
}

/// Topology: pair every half-edge with its twin; then, when edges are left open, stitch
/// the boundary edges that lie along other boundary edges (`stitch.rs`), clean the facets the
/// merges made degenerate or duplicate (their counts go to `removed`, their vertices to
/// `touched`) and pair the edges again.
///
/// A stitch round changes only the facets round the vertices it merged, so the clean and
/// the pairing after it look only there (`clean::removals_near`, `topology::pair_near`): the
/// edges are sorted once in full before the rounds and once after (for the counts), not
/// once per round, whatever the number of rounds.
#[allow(clippy::too_many_arguments)]
fn topology_stage(
    vertices: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    copied: &[[u32; 3]],
    touched: &mut Vec<u32>,
    removed: &mut CleanReport,
    tags: &mut Option<Vec<u8>>,
    options: &RepairOptions,
    weld_largest: f64,
    model_size: f64,
) -> (topology::Topology, TopologyReport) {
    let mut topo = topology::pair_edges(triangles);
    // Two solids that share a face (each written whole): both sides of the face go, joining
    // the solids. The facets removed, counted, and the edges paired again.
    let mut internal = 0;
    let mut remove = |gone: Vec<u32>, triangles: &mut Vec<[u32; 3]>| {
        internal += gone.len() as u64;
        for &f in &gone {
            touched.extend(triangles[f as usize]);
        }
        let mut drop = vec![false; triangles.len()];
        for &f in &gone {
            drop[f as usize] = true;
        }
        let mut it = drop.iter();
        triangles.retain(|_| it.next().is_some_and(|&d| !d));
        if let Some(t) = tags.as_mut() {
            let mut it = drop.iter();
            t.retain(|_| it.next().is_some_and(|&d| !d));
        }
        topology::pair_edges(triangles)
    };
    // The two sides meshed differently (no copies): two regions of one plane bounded by the
    // same edges of four facets (`touching`). First, because a copied facet of such a face
    // beside its rim (an edge of four facets, five with the copy) would be taken by the rule
    // below, leaving the face with a hole, no longer whole.
    if topo.non_manifold_edges > 0 {
        let gone = touching::faces(vertices, triangles, &topo, weld_largest);
        if !gone.is_empty() {
            topo = remove(gone, triangles);
        }
    }
    // The face written once each way round: the clean kept one side, which leaves the face's
    // rim with three facets. Only then (edges with more than two facets, and facets of which
    // a copy was removed) are the copied facets looked at.
    if topo.non_manifold_edges > 0 && !copied.is_empty() {
        let gone = clean::internal_faces(triangles, copied);
        if !gone.is_empty() {
            topo = remove(gone, triangles);
        }
    }
    let mut st = stitch::Stitched::default();
    // An explicit weld tolerance (or exact welding only) wins: no stitch beyond it.
    let auto = options.weld && options.weld_tolerance.is_none();
    let cap = model_size * f64::from(options.stitch_relative.max(0.0));
    // Once a round has sewn its pairs, edges whose match was barred (two pieces that now
    // share a vertex) may match: a few rounds, each only while the last one sewed something.
    // Every round keeps the scales of the rounds before (see `stitch::stitch`), so limits never
    // grow as the boundary shrinks.
    // A later round looks only round the vertices the one before merged (`stitch::Focus`).
    let mut scale = Vec::new();
    let mut rounds = 0;
    let mut open = topo.boundary_edges;
    let mut changed = false;
    let mut focus = None;
    // The boundary's lonely vertices, as the first round (over the whole boundary) found them.
    let mut alone = None;
    while rounds < STITCH_ROUNDS && options.stitch && auto && open > 1 {
        rounds += 1;
        let mut round = stitch::stitch(
            vertices,
            triangles,
            &topo.twin,
            cap,
            &mut scale,
            focus.as_ref(),
            weld_largest,
        );
        st.edges += round.edges;
        st.vertices += round.vertices;
        st.largest = st.largest.max(round.largest);
        if let Some(a) = round.alone.take() {
            alone = Some(a);
        }
        if round.edges == 0 {
            break;
        }
        changed = true;
        open = sew(
            vertices, triangles, &mut topo, touched, removed, tags, options, &round,
        );
        if rounds < STITCH_ROUNDS {
            focus = stitch::Focus::around(vertices, &merged(&round), cap, open as usize);
        }
    }
    // Edges still open: copies of edges whose rim is shorter than the noise (see
    // `stitch::stitch_copies`), within the spread of the copies merged so far.
    let spread = (COPY_SPREAD * weld_largest.max(st.largest)).min(cap);
    let mut copy_rounds = 0;
    let mut focus = None;
    while copy_rounds < STITCH_ROUNDS && options.stitch && auto && open > 1 {
        copy_rounds += 1;
        let round = stitch::stitch_copies(
            vertices,
            triangles,
            &topo.twin,
            spread,
            focus.as_ref(),
            alone.as_ref(),
        );
        st.edges += round.edges;
        st.vertices += round.vertices;
        st.largest = st.largest.max(round.largest);
        if round.edges == 0 {
            break;
        }
        rounds += 1;
        changed = true;
        open = sew(
            vertices, triangles, &mut topo, touched, removed, tags, options, &round,
        );
        if copy_rounds < STITCH_ROUNDS {
            focus = stitch::Focus::around(vertices, &merged(&round), spread, open as usize);
        }
    }
    // Boundary edges that boundary vertices lie on (T-junctions, also between two patches
    // that are not yet one shell): split there, so both sides of the seam pair.
    let mut zipped = zip::Zipped::default();
    if options.stitch
        && auto
        && open > 1
        && let Some(z) = zip::zip(vertices, triangles, &topo.twin, &topo.loose, weld_largest)
    {
        if let Some(t) = tags.as_mut() {
            let more: Vec<u8> = z.origin.iter().map(|&f| t[f as usize]).collect();
            t.extend(more);
        }
        zipped = z;
    }
    if zipped.facets_split > 0 {
        // The zip's splits paired (the strips below need the boundary as it is now).
        topo = topology::pair_edges(triangles);
        changed = false;
    }
    // Boundary chains that run alongside each other (a curved seam between patches meshed
    // apart): joined by a strip of slivers.
    let mut stripped = strips::Strips::default();
    let before = triangles.len();
    if options.stitch
        && auto
        && topo.boundary_edges > 3
        && let Some(s) = strips::strips(vertices, triangles, &topo.twin, &topo.loose, weld_largest)
    {
        // The strips' facets are new surface, marked as a fill's are.
        tags.get_or_insert_with(|| vec![0; before])
            .resize(triangles.len(), mark::FILLED);
        stripped = s;
    }
    if changed || stripped.strips > 0 {
        // The counts (and the non-manifold facets) of the final facets; the twins are those
        // the rounds kept up to date (the strips are paired here).
        let kept = std::mem::take(&mut topo);
        topo = topology::pair_edges(triangles);
        debug_assert!(stripped.strips > 0 || (kept.twin == topo.twin && kept.loose == topo.loose));
    }
    let report = TopologyReport {
        shared_faces_removed: internal,
        edges: topo.edges,
        boundary_edges: topo.boundary_edges,
        non_manifold_edges: topo.non_manifold_edges,
        stitched_edges: st.edges,
        stitched_vertices: st.vertices,
        stitch_largest: st.largest,
        stitch_rounds: rounds as u64,
        zipped_edges: zipped.edges_split,
        zipped_points: zipped.points,
        zip_cells_skipped: zipped.cells_skipped,
        strips: stripped.strips,
        strip_facets: stripped.facets,
        seconds: 0.0,
    };
    (topo, report)
}

/// The vertices a stitch round merged, and those they were merged into.
fn merged(round: &stitch::Stitched) -> Vec<u32> {
    round
        .merge_into
        .iter()
        .enumerate()
        .filter(|&(v, &to)| v as u32 != to)
        .flat_map(|(v, &to)| [v as u32, to])
        .collect()
}

/// Apply a stitch round: merge its vertices, remove the facets that made degenerate or
/// duplicate (counted in `removed`, their vertices added to `touched`) and pair the edges
/// round the merged vertices again. Returns the number of boundary edges left.
#[allow(clippy::too_many_arguments)]
fn sew(
    vertices: &[[f32; 3]],
    triangles: &mut Vec<[u32; 3]>,
    topo: &mut topology::Topology,
    touched: &mut Vec<u32>,
    removed: &mut CleanReport,
    tags: &mut Option<Vec<u8>>,
    options: &RepairOptions,
    round: &stitch::Stitched,
) -> u64 {
    let into = &round.merge_into;
    // The vertices others were merged into: every facet that changed uses one.
    let mut hot = vec![false; vertices.len()];
    for (v, &r) in into.iter().enumerate() {
        if r != v as u32 {
            hot[r as usize] = true;
            touched.extend([v as u32, r]);
        }
    }
    triangles
        .par_iter_mut()
        .for_each(|t| *t = t.map(|v| into[v as usize]));
    let (gone, [degenerate, repeated], duplicate) = clean::removals_near(
        vertices,
        triangles,
        &hot,
        options.remove_degenerate,
        options.remove_duplicates,
    );
    removed.degenerate_removed += degenerate;
    removed.repeated_vertex_removed += repeated;
    removed.duplicate_removed += duplicate;
    if !gone.is_empty() {
        // The removed facets' other edges lose a half-edge: pair them again too.
        for &f in &gone {
            for v in triangles[f as usize] {
                hot[v as usize] = true;
                touched.push(v);
            }
        }
        remove_facets(triangles, &mut topo.twin, &mut topo.loose, tags, &gone);
    }
    topology::pair_near(triangles, &mut topo.twin, &mut topo.loose, &hot)
}

/// The copies' stitch reaches this many times the largest gap the weld and the stitch
/// bridged (the noise found in the input; its largest value is seldom sampled exactly).
const COPY_SPREAD: f64 = 1.5;

/// Remove the facets `gone` (ascending) from `triangles` and their provenance `tags`,
/// keeping the others in order, and renumber `twin` (per half-edge) and `loose` (half-edges)
/// to match: a half-edge whose twin was removed has none.
fn remove_facets(
    triangles: &mut Vec<[u32; 3]>,
    twin: &mut Vec<u32>,
    loose: &mut Vec<u32>,
    tags: &mut Option<Vec<u8>>,
    gone: &[u32],
) {
    use topology::{NONE, SAME};
    let n = triangles.len();
    let mut keep = vec![true; n];
    for &f in gone {
        keep[f as usize] = false;
    }
    // New index of every kept facet (`u32::MAX` for the removed).
    let mut new_of = vec![u32::MAX; n];
    let mut next = 0u32;
    for f in 0..n {
        if keep[f] {
            new_of[f] = next;
            next += 1;
        }
    }
    let renumber = |tw: u32| {
        if tw == NONE {
            return NONE;
        }
        let h = tw & !SAME;
        let g = new_of[(h / 3) as usize];
        if g == u32::MAX {
            NONE
        } else {
            (3 * g + h % 3) | (tw & SAME)
        }
    };
    *loose = loose
        .iter()
        .filter(|&&h| new_of[(h / 3) as usize] != u32::MAX)
        .map(|&h| 3 * new_of[(h / 3) as usize] + h % 3)
        .collect();
    *twin = keys::par_blocks(n, |r, out| {
        for f in r.filter(|&f| keep[f]) {
            out.extend((3 * f..3 * f + 3).map(|h| renumber(twin[h])));
        }
    });
    *triangles = keys::par_blocks(n, |r, out| {
        out.extend(r.filter(|&f| keep[f]).map(|f| triangles[f]));
    });
    if let Some(t) = tags.as_mut() {
        *t = keys::par_blocks(n, |r, out| {
            out.extend(r.filter(|&f| keep[f]).map(|f| t[f]));
        });
    }
}

/// At most this many stitch rounds (each re-pairs the edges).
const STITCH_ROUNDS: usize = 3;

/// Winding: make the winding consistent across every edge and number the shells.
fn winding_stage(
    topo: &topology::Topology,
    facets: usize,
    options: &RepairOptions,
) -> (orient::Winding, WindingReport) {
    let winding = orient::make_consistent(&topo.twin, facets, options.fix_winding);
    let report = WindingReport {
        facets_flipped: winding.flipped_count,
        conflicts: winding.conflicts,
        shells: u64::from(winding.shell_count),
        seconds: 0.0,
    };
    (winding, report)
}

/// What the shells stage keeps: the compacted facets and the number of shells, and the
/// vertices of the removed facets; for provenance, the kept facets' marks (winding flips
/// added) and the removed facets' corners.
struct KeptShells {
    compact: shells::Compact,
    shells: u32,
    removed_vertices: Vec<u32>,
    tags: Vec<u8>,
    removed: Vec<[[f32; 3]; 3]>,
}

/// Shells: remove tiny shells, apply the winding flips, compact the facets and collect the
/// boundary edges. The edge pairing is released here, as nothing after needs it.
fn shells_stage(
    vertices: &[[f32; 3]],
    triangles: &[[u32; 3]],
    topo: topology::Topology,
    winding: &orient::Winding,
    limited_vertex: &[bool],
    tags: Option<&[u8]>,
    options: &RepairOptions,
) -> (KeptShells, ShellsReport) {
    let kept = shells::select(vertices, triangles, winding, options);
    let compact = shells::compact(triangles, &topo.twin, winding, &kept);
    // Did a removed facet cut the limit of a vertex that a kept facet still uses?
    let removed_limited = !limited_vertex.is_empty() && kept.removed_facets > 0 && {
        let mut in_kept = vec![false; vertices.len()];
        for t in &compact.triangles {
            for &v in t {
                in_kept[v as usize] = true;
            }
        }
        triangles
            .par_iter()
            .zip(winding.shell_of.par_iter())
            .any(|(t, &s)| {
                kept.new_id[s as usize] == u32::MAX
                    && t.iter()
                        .any(|&v| limited_vertex[v as usize] && in_kept[v as usize])
            })
    };
    drop(topo);
    let removed_vertices: Vec<u32> = if kept.removed_facets > 0 {
        keys::par_blocks(triangles.len(), |r, out| {
            for f in r {
                if kept.new_id[winding.shell_of[f] as usize] == u32::MAX {
                    out.extend_from_slice(&triangles[f]);
                }
            }
        })
    } else {
        Vec::new()
    };
    let keep = |f: usize| kept.new_id[winding.shell_of[f] as usize] != u32::MAX;
    let tag = |f: usize| {
        let prior = tags.map_or(0, |t| t[f]);
        if winding.flip[f] {
            prior | mark::WINDING
        } else {
            prior
        }
    };
    let kept_tags: Vec<u8> = if kept.removed_facets == 0 {
        (0..triangles.len()).into_par_iter().map(tag).collect()
    } else {
        keys::par_blocks(triangles.len(), |r, out| {
            out.extend(r.filter(|&f| keep(f)).map(tag));
        })
    };
    let removed: Vec<[[f32; 3]; 3]> = if kept.removed_facets > 0 {
        keys::par_blocks(triangles.len(), |r, out| {
            out.extend(
                r.filter(|&f| !keep(f))
                    .map(|f| triangles[f].map(|v| vertices[v as usize])),
            );
        })
    } else {
        Vec::new()
    };
    let report = ShellsReport {
        tiny_removed: kept.removed_shells,
        facets_removed: kept.removed_facets,
        kept: u64::from(kept.kept_shells),
        kept_touching: kept.kept_touching,
        touch_limited: kept.touch_limited,
        tiny_area_share: kept.tiny_area_share,
        kept_as_parts: kept.kept_as_parts,
        removed_limited,
        seconds: 0.0,
    };
    let out = KeptShells {
        compact,
        shells: kept.kept_shells,
        removed_vertices,
        tags: kept_tags,
        removed,
    };
    (out, report)
}

/// Holes: fill the closed boundary loops (or only count them when filling is off).
fn holes_stage(
    vertices: &mut Vec<[f32; 3]>,
    triangles: &mut Vec<[u32; 3]>,
    shell_of: &mut Vec<u32>,
    boundary: &[(u32, u32, u32)],
    snap: f64,
    options: &RepairOptions,
) -> (holes::HoleStats, HolesReport) {
    let stats = if options.fill_holes {
        holes::fill(
            vertices,
            triangles,
            shell_of,
            boundary,
            snap,
            options.max_hole_edges,
            options.deadline,
        )
    } else {
        holes::HoleStats::open(boundary)
    };
    let report = HolesReport {
        found: stats.found,
        filled: stats.filled,
        left_open: stats.left_open,
        facets_added: stats.facets_added,
        vertices_added: stats.vertices_added,
        corners_restored: stats.corners_restored,
        edges_split: stats.edges_split,
        work: stats.work,
        seconds: 0.0,
    };
    (stats, report)
}

/// Orient: turn every shell outward (cavities inward) and measure the volume.
fn orient_stage(
    vertices: &[[f32; 3]],
    triangles: &mut [[u32; 3]],
    shell_of: &[u32],
    shell_count: u32,
    options: &RepairOptions,
) -> (orient::Oriented, OrientReport) {
    let oriented = orient::orient_outward(
        vertices,
        triangles,
        shell_of,
        shell_count,
        options.fix_orientation,
    );
    let report = OrientReport {
        shells_flipped: oriented.flipped,
        cavities: oriented.cavities,
        flat_shells: oriented.flat,
        seconds: 0.0,
    };
    (oriented, report)
}

/// The edges (vertex pairs, low first, sorted) with more than two facets among `facets`,
/// the facets the topology stage found on such edges (all of every such edge's facets; a
/// facet on two such edges is listed twice).
fn non_manifold_edges(triangles: &[[u32; 3]], facets: &[u32]) -> Vec<[u32; 2]> {
    let mut facets = facets.to_vec();
    facets.sort_unstable();
    facets.dedup();
    let mut edges: Vec<[u32; 2]> = facets
        .iter()
        .flat_map(|&f| {
            let t = triangles[f as usize];
            (0..3).map(move |k| {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                [a.min(b), a.max(b)]
            })
        })
        .collect();
    edges.sort_unstable();
    let mut out: Vec<[u32; 2]> = edges
        .chunk_by(|a, b| a == b)
        .filter(|r| r.len() > 2)
        .map(|r| r[0])
        .collect();
    out.dedup();
    out
}

/// How many of `edges` (sorted vertex pairs, low first) have more than two facets in
/// `triangles`. Only facets with both ends of an edge among the pairs' vertices are looked up.
fn crowded_edges(vertex_count: usize, triangles: &[[u32; 3]], edges: &[[u32; 2]]) -> u64 {
    if edges.is_empty() {
        return 0;
    }
    let mut on = vec![false; vertex_count];
    for e in edges {
        for &v in e {
            if let Some(o) = on.get_mut(v as usize) {
                *o = true;
            }
        }
    }
    let found: Vec<u32> = keys::par_blocks(triangles.len(), |r, out| {
        for t in &triangles[r] {
            for k in 0..3 {
                let (a, b) = (t[k], t[(k + 1) % 3]);
                if on[a as usize]
                    && on[b as usize]
                    && let Ok(i) = edges.binary_search(&[a.min(b), a.max(b)])
                {
                    out.push(i as u32);
                }
            }
        }
    });
    let mut count = vec![0u32; edges.len()];
    for i in found {
        count[i as usize] += 1;
    }
    count.iter().filter(|&&c| c > 2).count() as u64
}

/// The weld tolerance the options give for the facets of `mesh`.
pub(crate) fn weld_tolerance(mesh: &Mesh, options: &RepairOptions) -> f32 {
    let bbox = keys::par_bbox(&mesh.vertices);
    tolerance_for(bbox, model_size(&mesh.vertices, &mesh.triangles), options)
}

/// The size of the model made of facets `t` over vertices `v` ([`extent`]).
pub(crate) fn model_size(v: &[[f32; 3]], t: &[[u32; 3]]) -> f64 {
    extent(keys::par_bbox(v), t.len(), |f, k| v[t[f][k] as usize])
}

/// The weld tolerance the options give for a soup's `positions` (three per facet).
pub(crate) fn soup_weld_tolerance(positions: &[[f32; 3]], options: &RepairOptions) -> f32 {
    let bbox = keys::par_bbox(positions);
    let size = extent(bbox, positions.len() / 3, |f, k| positions[3 * f + k]);
    tolerance_for(bbox, size, options)
}

/// Facets sampled for a model's [`extent`], at most.
const EXTENT_SAMPLES: usize = 1 << 16;

/// Share of the facets' area left out at each end of each axis by [`extent`].
const EXTENT_TRIM: f64 = 1e-2;

/// The size of the model the automatic bounds (the weld's, the stitch's) are fractions of:
/// the diagonal of the box that holds the facets but for [`EXTENT_TRIM`] of their area at
/// each end of each axis (from an even sample of at most [`EXTENT_SAMPLES`] facets), and at
/// most the diagonal of `bbox`, the box of every vertex. A stray facet or a speck of debris
/// far from the model (a point left at the origin by an export) makes the bounding box many
/// times larger, but not the model: the bounds must not grow with it, or the weld merges
/// features a clearance apart; nor the tiny-shell rule's limit, or it removes a real small
/// part. Leaving out a little real surface at the ends only makes the size a few per cent
/// smaller, which makes all three more careful. `corner(f, k)` is corner `k` of facet `f` of
/// `facets`. Falls back to the bounding box's diagonal when the facets have no area.
fn extent(
    bbox: Option<Bbox>,
    facets: usize,
    corner: impl Fn(usize, usize) -> [f32; 3] + Sync,
) -> f64 {
    let Some(b) = bbox else {
        return 0.0;
    };
    let whole = b.diagonal();
    let step = facets.div_ceil(EXTENT_SAMPLES).max(1);
    // Per sampled facet: its area and its box.
    let sample: Vec<(f64, [f32; 3], [f32; 3])> = (0..facets)
        .into_par_iter()
        .step_by(step)
        .map(|f| {
            let p = [0, 1, 2].map(|k| corner(f, k));
            let q = p.map(|c| c.map(f64::from));
            let u = [0, 1, 2].map(|i| q[1][i] - q[0][i]);
            let v = [0, 1, 2].map(|i| q[2][i] - q[0][i]);
            let n = [
                u[1] * v[2] - u[2] * v[1],
                u[2] * v[0] - u[0] * v[2],
                u[0] * v[1] - u[1] * v[0],
            ];
            let area = 0.5 * (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            let lo = [0, 1, 2].map(|i| p[0][i].min(p[1][i]).min(p[2][i]));
            let hi = [0, 1, 2].map(|i| p[0][i].max(p[1][i]).max(p[2][i]));
            (if area.is_finite() { area } else { 0.0 }, lo, hi)
        })
        .collect();
    let total: f64 = sample.iter().map(|s| s.0).sum();
    if !(total.is_finite() && total > 0.0) {
        return whole;
    }
    let trim = EXTENT_TRIM * total;
    // The coordinate at which the facets' area, taken from one end, first passes `trim`.
    // Usually a few of the lowest hold that much: those are selected (linear) and only they
    // are sorted; when they do not, all are. Among facets at one coordinate the order does
    // not matter (the sum passes `trim` at that coordinate whichever comes first), so both
    // ways give the same coordinate.
    let cut = |mut ends: Vec<(f32, f64)>| -> f32 {
        let by_x = |x: &(f32, f64), y: &(f32, f64)| x.0.total_cmp(&y.0);
        let first = |ends: &[(f32, f64)]| {
            let mut sum = 0.0;
            ends.iter().find_map(|&(x, a)| {
                sum += a;
                (sum > trim).then_some(x)
            })
        };
        let few = ends.len() / 16;
        if few > 0 {
            ends.select_nth_unstable_by(few, by_x);
            let low = &mut ends[..few];
            if low.iter().map(|e| e.1).sum::<f64>() > trim {
                low.sort_unstable_by(by_x);
                if let Some(x) = first(low) {
                    return x;
                }
            }
        }
        ends.sort_unstable_by(by_x);
        first(&ends).unwrap_or_else(|| ends.last().map_or(0.0, |e| e.0))
    };
    let mut d2 = 0.0;
    for axis in 0..3 {
        let lo = cut(sample.iter().map(|s| (s.1[axis], s.0)).collect());
        let hi = -cut(sample.iter().map(|s| (-s.2[axis], s.0)).collect());
        let d = f64::from(hi) - f64::from(lo);
        d2 += d.max(0.0).powi(2);
    }
    let size = d2.sqrt();
    if size.is_finite() && size > 0.0 {
        size.min(whole)
    } else {
        whole
    }
}

/// The weld tolerance for points whose bounding box is `bbox`, of a model of size `size`
/// ([`extent`]).
fn tolerance_for(bbox: Option<Bbox>, size: f64, options: &RepairOptions) -> f32 {
    weld_bound(bbox, size, options).0
}

/// Units in the last place (of a coordinate's magnitude, per axis) that the automatic weld
/// bound never goes under: two copies of a vertex computed apart (each transformed in `f32`)
/// differ by a few ulp of their coordinates, more than the relative bound far from the origin.
const ROUNDING_FLOOR: f32 = 16.0 * f32::EPSILON;

/// The weld's bound the options give (the tolerance), and per axis the most two corners may
/// differ by along it. Automatic: `weld_relative_tolerance` × `size`, never under
/// [`ROUNDING_FLOOR`] of the largest coordinate, taken per axis: a part far out along one
/// axis is rounded coarsely along that axis only, and a floor taken from it for every axis
/// merged the two sides of a thin wall across another axis, a thousand times finer there.
fn weld_bound(bbox: Option<Bbox>, size: f64, options: &RepairOptions) -> (f32, [f32; 3]) {
    if let Some(t) = options.weld_tolerance {
        let t = if t.is_finite() && t > 0.0 { t } else { 0.0 };
        return (t, [t; 3]);
    }
    let Some(b) = bbox else {
        return (0.0, [0.0; 3]);
    };
    let rel = options.weld_relative_tolerance.max(0.0);
    if rel == 0.0 {
        return (0.0, [0.0; 3]);
    }
    let t = (size * f64::from(rel)) as f32;
    let axis = [0, 1, 2].map(|a| t.max(b.min[a].abs().max(b.max[a].abs()) * ROUNDING_FLOOR));
    (axis.into_iter().fold(t, f32::max), axis)
}

/// Keep only referenced vertices, numbered in order of first use; `touched` is renumbered the
/// same way (vertices no longer used are left out, each vertex once).
fn compact_vertices(
    vertices: &[[f32; 3]],
    mut triangles: Vec<[u32; 3]>,
    touched: Vec<u32>,
) -> (Mesh, Vec<u32>) {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    const UNSET: u32 = u32::MAX;
    // In parallel: every vertex's first corner; the corners that come first for their vertex,
    // counted per block of facets, give every block the range of numbers it hands out (in
    // corner order, so the numbering is that of a sequential first-use pass).
    let first: Vec<AtomicU32> = (0..vertices.len())
        .into_par_iter()
        .map(|_| AtomicU32::new(UNSET))
        .collect();
    triangles.par_iter().enumerate().for_each(|(f, t)| {
        for (k, &v) in t.iter().enumerate() {
            // A plain load first: nearly every corner after a vertex's first finds a smaller
            // number there already, and a read costs far less than an atomic write.
            let (slot, c) = (&first[v as usize], (3 * f + k) as u32);
            if c < slot.load(Relaxed) {
                slot.fetch_min(c, Relaxed);
            }
        }
    });
    const BLOCK: usize = 1 << 14;
    let (first_ref, tris_all) = (&first, &triangles);
    let firsts_in = move |b: usize| {
        let first = first_ref;
        let range = b * BLOCK..((b + 1) * BLOCK).min(tris_all.len());
        let tris = &tris_all[range.clone()];
        range.zip(tris).flat_map(move |(f, t)| {
            (0..3).filter_map(move |k| {
                let v = t[k];
                (first[v as usize].load(Relaxed) == (3 * f + k) as u32).then_some(v)
            })
        })
    };
    let counts: Vec<usize> = (0..triangles.len().div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| firsts_in(b).count())
        .collect();
    let total: usize = counts.iter().sum();
    let mut out: Vec<[f32; 3]> = (0..total).into_par_iter().map(|_| [0.0; 3]).collect();
    let map: Vec<AtomicU32> = (0..vertices.len())
        .into_par_iter()
        .map(|_| AtomicU32::new(UNSET))
        .collect();
    let mut slices = Vec::with_capacity(counts.len());
    let mut rest: &mut [[f32; 3]] = &mut out;
    let mut at = 0u32;
    for &c in &counts {
        let (a, r) = std::mem::take(&mut rest).split_at_mut(c);
        slices.push((at, a));
        at += c as u32;
        rest = r;
    }
    slices
        .into_par_iter()
        .enumerate()
        .for_each(|(b, (start, slice))| {
            for ((v, o), id) in firsts_in(b).zip(slice.iter_mut()).zip(start..) {
                *o = vertices[v as usize];
                map[v as usize].store(id, Relaxed);
            }
        });
    drop(first);
    let map: Vec<u32> = map.into_iter().map(AtomicU32::into_inner).collect();
    triangles
        .par_iter_mut()
        .for_each(|t| *t = t.map(|v| map[v as usize]));
    let mut touched: Vec<u32> = touched
        .into_iter()
        .map(|v| map[v as usize])
        .filter(|&m| m != UNSET)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let mesh = Mesh {
        vertices: out,
        triangles,
    };
    (mesh, touched)
}

#[cfg(all(test, feature = "generate"))]
mod tests {
    use super::*;
    use crate::generate;

    /// A soup whose noise is near the spacing of the poles' fan rims falls into fragments that
    /// take several stitch rounds; with every 16th facet written twice (each copy with its own
    /// noise), stitching also makes facets duplicate. The twins kept up to date round by round
    /// (`pair_near` after `removals_near`) are exactly those a full pairing of the final facets
    /// gives.
    #[test]
    fn stitch_rounds_keep_the_twins_a_full_pairing_gives() {
        let mut exercised = 0;
        for noise in [2e-4, 4e-4, 6e-4] {
            let g = generate::soup(&generate::clean_model(7, 20_000), 9, noise, 0.1, Some(1));
            let options = RepairOptions::default();
            let mut soup = stl::parse(&g.stl, &options).expect("the soup parses");
            let diag = keys::par_bbox(&soup.positions).map_or(1.0, |b| b.diagonal());
            let mut rng = generate::Rng::new(3);
            let copies: Vec<[f32; 3]> = soup
                .positions
                .chunks_exact(3)
                .step_by(16)
                .flatten()
                .map(|p| p.map(|x| x + ((rng.f64() - 0.5) * 2.0 * noise * diag) as f32))
                .collect();
            soup.positions.extend(copies);
            let ((welded, _), weld) = weld_stage(soup.positions, &options);
            let mut triangles = welded.triangles;
            let ((mut touched, copied), _) = clean_stage(
                &welded.vertices,
                &mut triangles,
                weld.largest_merge,
                &options,
            );
            let mut removed = CleanReport::default();
            let mut tags = None;
            let (topo, report) = topology_stage(
                &welded.vertices,
                &mut triangles,
                &copied,
                &mut touched,
                &mut removed,
                &mut tags,
                &options,
                weld.largest_merge,
                weld.model_size,
            );
            let full = topology::pair_edges(&triangles);
            assert!(topo.twin == full.twin, "noise {noise}: {report:?}");
            assert_eq!(topo.loose, full.loose, "noise {noise}");
            assert_eq!(topo.boundary_edges, full.boundary_edges, "noise {noise}");
            exercised += usize::from(report.stitch_rounds >= 2 && removed.duplicate_removed > 0);
        }
        assert!(
            exercised > 0,
            "no case took several rounds and removed duplicates"
        );
    }

    /// `extent` sorts only the lowest sixteenth of the sampled facets along an axis when they
    /// hold the trimmed area: it gives the size that sorting all of them gives, on facets of
    /// even areas (the selection path), of wildly uneven ones (a few huge facets in the
    /// middle: the fallback), on tied coordinates and on samples too small to select from.
    #[test]
    fn extent_gives_the_size_a_full_sort_gives() {
        // The size by sorting every sampled facet along every axis (the rule, spelled out).
        let reference = |corners: &[[f32; 3]]| -> f64 {
            let facets = corners.len() / 3;
            let step = facets.div_ceil(EXTENT_SAMPLES).max(1);
            let sample: Vec<(f64, [[f32; 3]; 3])> = (0..facets)
                .step_by(step)
                .map(|f| {
                    let p = [corners[3 * f], corners[3 * f + 1], corners[3 * f + 2]];
                    let q = p.map(|c| c.map(f64::from));
                    let n = holes::cross(holes::sub(q[1], q[0]), holes::sub(q[2], q[0]));
                    (0.5 * holes::norm(n), p)
                })
                .collect();
            let total: f64 = sample.iter().map(|s| s.0).sum();
            let trim = EXTENT_TRIM * total;
            let cut = |mut ends: Vec<(f32, f64)>| {
                ends.sort_by(|x, y| x.0.total_cmp(&y.0));
                let mut sum = 0.0;
                for &(x, a) in &ends {
                    sum += a;
                    if sum > trim {
                        return x;
                    }
                }
                ends.last().map_or(0.0, |e| e.0)
            };
            let mut d2 = 0.0;
            for a in 0..3 {
                let lo = cut(sample
                    .iter()
                    .map(|s| {
                        (
                            s.1.map(|c| c[a]).into_iter().fold(f32::INFINITY, f32::min),
                            s.0,
                        )
                    })
                    .collect());
                let hi = -cut(sample
                    .iter()
                    .map(|s| {
                        (
                            -s.1.map(|c| c[a])
                                .into_iter()
                                .fold(f32::NEG_INFINITY, f32::max),
                            s.0,
                        )
                    })
                    .collect());
                d2 += (f64::from(hi) - f64::from(lo)).max(0.0).powi(2);
            }
            let whole = keys::par_bbox(corners).map_or(0.0, |b| b.diagonal());
            d2.sqrt().min(whole)
        };
        let mut next = keys::test_uniform(0x9e37_79b9_7f4a_7c15);
        for case in 0..24 {
            let facets = [10, 40, 1_000, 70_000, 200_000][case % 5];
            let mut corners = Vec::with_capacity(3 * facets);
            for f in 0..facets {
                // Even small facets; in every third case a few huge ones in the middle, which
                // hold nearly all the area, so the lowest sixteenth at either end holds less
                // than the trim (the fallback); in every fourth, coordinates on a coarse
                // lattice (many ties).
                let huge = case % 3 == 1 && f % 997 == 0;
                let size = if huge { 50.0 } else { 0.1 };
                let c: [f64; 3] = std::array::from_fn(|_| if huge { 50.0 } else { next() * 100.0 });
                for _ in 0..3 {
                    let p = c.map(|x| {
                        let x = x + (next() - 0.5) * size;
                        if case % 4 == 2 {
                            (x * 4.0).round() / 4.0
                        } else {
                            x
                        }
                    });
                    corners.push(p.map(|x| x as f32));
                }
            }
            let bbox = keys::par_bbox(&corners);
            let got = extent(bbox, facets, |f, k| corners[3 * f + k]);
            assert_eq!(got, reference(&corners), "case {case}: {facets} facets");
        }
    }

    #[test]
    fn the_first_non_finite_corner_is_found_across_blocks() {
        let mut p = vec![[1.0f32, -2.0, 3.0]; 100_003];
        assert_eq!(first_non_finite(&p), None);
        p[100_002][1] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite(&p), Some(100_002));
        p[70_000][0] = f32::INFINITY;
        p[40_000][2] = f32::NAN;
        assert_eq!(first_non_finite(&p), Some(40_000));
        p[16_383][2] = f32::NAN;
        assert_eq!(first_non_finite(&p), Some(16_383));
        assert_eq!(first_non_finite(&[]), None);
    }
}
