//! FixMyPrint: a fast STL healing core ([`heal`], the `fixmyprint-heal` crate) and a 3DIAX
//! provider service built on `diax-sdk`.
//!
//! - [`heal`]: synchronous, rayon-parallel mesh repair (no async, no HTTP, no database); a
//!   re-export of `fixmyprint_heal`, so `fixmyprint::heal::repair` and
//!   `fixmyprint_heal::repair` are the same function.
//! - [`repair_cli`]: the `fixmyprint repair IN OUT` command.
//! - [`heal::picture`]: the repair picture (before and after, what changed marked), PNG or HTML.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub use fixmyprint_heal as heal;
pub mod repair_cli;
pub mod service;
