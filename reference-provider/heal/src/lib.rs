//! FixMyPrint's STL healing core: parse → weld → clean → topology → winding → shells → holes →
//! orientation → normals → write.
//!
//! Everything here is synchronous and works on flat arrays (`Vec<[f32; 3]>` vertices,
//! `Vec<[u32; 3]>` triangles); rayon parallelises the stages whose data allows it. No HTTP, no
//! database, no async: the provider service (`fixmyprint::service`) calls it from a blocking
//! task, the `fixmyprint repair` command calls it directly.
//!
//! ```
//! use fixmyprint_heal::{self as heal, RepairOptions};
//!
//! // A tetrahedron whose last facet is wound the wrong way.
//! let stl = "solid t
//! facet normal 0 0 0 outer loop vertex 0 0 0 vertex 0 1 0 vertex 1 0 0 endloop endfacet
//! facet normal 0 0 0 outer loop vertex 0 0 0 vertex 0 0 1 vertex 0 1 0 endloop endfacet
//! facet normal 0 0 0 outer loop vertex 0 0 0 vertex 1 0 0 vertex 0 0 1 endloop endfacet
//! facet normal 0 0 0 outer loop vertex 1 0 0 vertex 0 0 1 vertex 0 1 0 endloop endfacet
//! endsolid t
//! ";
//! let repaired = heal::repair(stl.as_bytes(), &RepairOptions::default())?;
//! assert!(repaired.report.watertight);
//! assert_eq!(repaired.report.stages.winding.facets_flipped, 1);
//! assert!(repaired.report.volume > 0.0);
//! let bytes: Vec<u8> = repaired.to_stl_bytes();
//! assert_eq!(bytes.len(), 84 + 50 * repaired.mesh.triangles.len());
//! # Ok::<(), heal::HealError>(())
//! ```
//!
//! Module map (one module per concern; docs/ARCHITECTURE.md and docs/HEALING.md say more):
//!
//! - `types`: [`Mesh`], [`Bbox`]; `options`: [`RepairOptions`]; `error`: [`HealError`];
//!   `report`: [`Stage`], one report struct per stage, [`Report`], [`Repaired`].
//! - `pipeline`: [`repair`], [`repair_file`], [`repair_soup`], the stages run in order, each
//!   returning its own report, timed by one helper.
//! - One module per stage: [`stl`] (parse and write), `weld`, `clean`, `topology` (and
//!   `stitch` and `zip`, run with it), `orient`
//!   (winding and outward orientation), `shells`, `holes`; `keys` holds the shared hashing and
//!   parallel sort.
//! - [`stages`]: single stages on flat arrays, for the benches.
//! - [`generate`] (feature `generate`): the deterministic test-model generator.
//! - `provenance`: [`Provenance`], what the repair did to each output facet.
//! - `picture` (feature `picture`): the repair picture, before and after, as PNG or HTML.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

mod clean;
mod contact;
mod error;
#[cfg(any(test, feature = "generate"))]
pub mod generate;
mod holes;
mod islands;
mod keys;
mod options;
mod orient;
#[cfg(feature = "picture")]
pub mod picture;
mod pipeline;
pub mod provenance;
mod report;
mod shells;
pub mod stages;
mod stitch;
pub mod stl;
mod strips;
mod topology;
mod touching;
mod types;
mod weld;
mod zip;

pub use error::HealError;
pub use options::RepairOptions;
pub use pipeline::{repair, repair_file, repair_soup, repair_with_progress};
pub use provenance::Provenance;
pub use report::{
    CleanReport, HolesReport, OrientReport, ParseReport, Repaired, Report, ShellsReport, Stage,
    Stages, TopologyReport, WeldReport, WindingReport, WriteReport,
};
pub use stl::{Format, Soup};
pub(crate) use types::bbox_of;
pub use types::{Bbox, Mesh};
