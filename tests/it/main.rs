//! The integration tests, one binary (linking one binary per file cost more than running
//! them): each file is a module, named as the file was, so `cargo test --test it exec::`
//! runs what `cargo test --test exec` ran. The shared helpers are `tests/common`.
//!
//! One test file stays a binary of its own: `tests/exec_guard.rs` switches the exec guard
//! for its whole process (`rsmld::process::guard::enable`), which would change how every in-process
//! exec handler here starts its children.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

#[path = "../common/mod.rs"]
mod common;

// The fuzz targets' invariants and input generator, shared by the KPL modules (each file
// once in the crate).
#[path = "../../fuzz/src/generator.rs"]
mod generator;
#[path = "../../fuzz/src/invariants.rs"]
#[allow(dead_code)]
mod invariants;

mod ahead;
mod binary;
mod check;
mod daemon_line_corpus;
mod exec;
mod file_archive;
mod file_faults;
mod generate;
mod http;
mod kpl_cli;
mod kpl_fixtures;
mod kpl_fuzz_corpus;
mod kpl_java_oracle;
mod kpl_proto_codegen;
mod kpl_random;
mod kpl_roundtrip;
mod leases;
mod memory;
mod ops;
mod players;
mod policies;
mod pool;
mod prerequisites;
mod record_parser;
mod recordings;
mod serve;
mod shared_pool;
mod signals;
mod simulated;
mod split;
mod transcripts;
mod wire_golden;
