//! End-to-end story tests and the demo for the FixMyPrint kit.
//!
//! [`stack::Stack`] starts the broker mock and FixMyPrint in this process over HTTPS with a
//! generated CA; [`story`] plays the seed story against them step by step. The tests in
//! `tests/` assert on every step; the `demo` binary narrates it.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod browser;
pub mod child;
pub mod inbox;
pub mod moto;
pub mod pg;
pub mod pki;
pub mod s3;
pub mod stack;
pub mod standin;
pub mod story;
