//! Transcript tests: every transcript under tests/transcripts/ is played against the
//! production loop in-process (`rsmld::testkit::in_process`: the reader, the structural
//! scan, acknowledge-ahead and a real pool, over in-memory pipes) and against the built
//! binary (real pipes).

use crate::common;

use common::{load, play_binary, play_in_process, transcripts_dir};

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
        if let Err(e) = play_in_process(&entries) {
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
