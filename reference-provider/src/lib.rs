//! FixMyPrint: a fast STL healing core ([`heal`]) and a 3DIAX provider service built on
//! `diax-sdk`.
//!
//! - [`heal`]: synchronous, rayon-parallel mesh repair (no async, no HTTP, no database).
//! - [`repair_cli`]: the `fixmyprint repair IN OUT` command.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod heal;
pub mod repair_cli;
pub mod service;
