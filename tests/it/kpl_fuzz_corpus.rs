//! Replays the fuzz corpus of the `deaggregate` target on stable Rust, with the
//! target's own invariants (`fuzz/src/invariants.rs`), so that every seed and
//! every input the fuzzer saved stays a regression test without nightly.

use crate::invariants;

use std::path::Path;

#[test]
fn deaggregate_corpus_keeps_its_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/deaggregate");
    let mut files = 0;
    let mut aggregated = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/deaggregate exists") {
        let path = entry.expect("directory entry").path();
        let input = std::fs::read(&path).expect("corpus file");
        // The target's two forms: the input as a record, and as a body.
        for record in [input.clone(), invariants::with_valid_digest(&input)] {
            let result = std::panic::catch_unwind(|| invariants::check_deaggregate(&record));
            match result {
                Ok(true) => aggregated += 1,
                Ok(false) => {}
                Err(_) => panic!("invariant failed for {}", path.display()),
            }
        }
        files += 1;
    }
    assert!(
        files >= 70,
        "only {files} corpus files in {}",
        dir.display()
    );
    assert!(
        aggregated >= files / 2,
        "only {aggregated} of {files} inputs decoded as aggregates"
    );
}
