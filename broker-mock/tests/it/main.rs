//! The broker mock's integration tests, in one binary (one link instead of one per file):
//! real HTTP servers on OS-assigned loopback ports, real SQLite files, real TLS, and a fake
//! provider that speaks the protocol. One module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

// Shared with the end-to-end suite (which depends on this crate, so cannot be depended on).
#[path = "../../../tests/src/child.rs"]
mod child;
mod common;

mod architecture;
mod bucket;
mod cancel;
mod events;
mod hostile;
mod input_delivery;
mod messages;
mod models;
#[path = "../../../tests/src/moto.rs"]
mod moto;
mod notifications;
mod openapi;
mod pictures;
mod problems;
mod providers;
mod server;
mod shutdown;
mod story;
mod users;
