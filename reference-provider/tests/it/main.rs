//! FixMyPrint's integration tests, in one binary (one link instead of one per file): the
//! service over real HTTP on OS-assigned loopback ports, real SQLite files and fresh
//! PostgreSQL databases, a fake broker that speaks the protocol, and the `fixmyprint repair`
//! command. One module per area; `support` holds the shared helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// First, so that its `both_backends!` macro is in scope for the modules below.
#[macro_use]
mod support;

// Shared with the end-to-end suite (which depends on this crate, so cannot be depended on).
#[path = "../../../tests/src/child.rs"]
mod child;

mod accounts;
mod cancel;
mod faults;
mod heal_cli;
mod intake;
mod jobs;
mod openapi;
mod picture;
mod scale;
mod shutdown;
