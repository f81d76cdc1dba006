//! Shared code of rsmld's fuzz targets: each target is a thin
//! `fuzz_target!` around a checker here, and the stable-Rust tests in the main
//! crate include the same checker files by path to replay the corpus.

pub mod daemon_line;
pub mod generator;
pub mod invariants;
