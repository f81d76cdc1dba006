//! Replays the fuzz corpus of the `daemon_line` target on stable Rust with the target's
//! own invariants (`fuzz/src/daemon_line.rs`): the copying and the shared-buffer
//! decoders agree, nothing panics, re-encoding round-trips.

#[path = "../../fuzz/src/daemon_line.rs"]
mod daemon_line;

#[test]
fn daemon_line_corpus_keeps_its_invariants() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/daemon_line");
    let (mut files, mut decoded) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/daemon_line exists") {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| daemon_line::check_daemon_line(&input))
            .unwrap_or_else(|_| panic!("invariant failed for {}", path.display()))
        {
            decoded += 1;
        }
        files += 1;
    }
    assert!(files >= 50, "only {files} corpus files");
    // The fuzzer keeps malformed inputs too; the protocol-shaped seeds must decode.
    assert!(decoded >= 50, "only {decoded} of {files} inputs decoded");
}
