//! Transcript tests: every transcript under tests/transcripts/ is played against the
//! session in-process (virtual time) and against the built binary (real pipes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

mod common;

use common::{load, play_binary, play_session, transcripts_dir};

fn all() -> Vec<(String, Vec<common::Entry>)> {
    let mut out: Vec<_> = std::fs::read_dir(transcripts_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                load(&p),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 15, "transcripts missing: found {}", out.len());
    out
}

#[test]
fn transcripts_in_process() {
    let mut failures = Vec::new();
    for (name, entries) in all() {
        if let Err(e) = play_session(&entries) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn transcripts_against_the_binary() {
    let mut failures = Vec::new();
    for (name, entries) in all() {
        if let Err(e) = play_binary(&entries) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
