//! The healer's integration tests, one binary with a module per area.

mod bounds;
mod fans;
mod foreign;
mod input;
mod props;
mod provenance;
mod quality;
mod shapes;
mod shells;
mod support;
mod trimesh;
mod weld;
