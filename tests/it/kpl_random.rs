//! Randomized de-aggregation on stable Rust: the same invariants as the fuzz
//! target (`fuzz/src/invariants.rs`) over
//!
//! * arbitrary bytes (proptest), as a record and as a body with a valid MD5;
//! * structure-aware random records (`fuzz/src/generator.rs`): valid-looking
//!   aggregates with the format's rules bent at random.
//!
//! The structure-aware run does `RSMLD_KPL_RANDOM_CASES` cases (default 20000);
//! set it to millions for a long run:
//!
//! ```text
//! RSMLD_KPL_RANDOM_CASES=3000000 cargo test --release --test it kpl_random -- --nocapture
//! ```

use crate::{generator, invariants};

use generator::{key_focused_record, random_record, Rng};
use proptest::prelude::*;
use rsmld::kpl::{self, Deaggregated};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_keep_the_invariants(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        invariants::check_deaggregate(&bytes);
        invariants::check_deaggregate(&invariants::with_valid_digest(&bytes));
    }
}

#[test]
fn structure_aware_random_aggregates_keep_the_invariants() {
    let cases: u64 = std::env::var("RSMLD_KPL_RANDOM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("RSMLD_KPL_RANDOM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_CAFE);
    let mut stats = Stats::default();
    for case in 0..cases {
        let mut rng = Rng::new(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let record = if case % 8 == 7 {
            key_focused_record(&mut rng)
        } else {
            random_record(&mut rng)
        };
        let outcome = std::panic::catch_unwind(|| invariants::check_deaggregate(&record));
        if outcome.is_err() {
            panic!(
                "invariant failed for case {case} (seed {seed}); record (hex): {}",
                record
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
        }
        stats.count(&record);
    }
    eprintln!("{cases} structure-aware cases without a failure: {stats:?}");
    // The generator must reach every outcome, or it tests little.
    if cases >= 10_000 {
        assert!(stats.complete > cases / 10, "{stats:?}");
        assert!(stats.partial > cases / 100, "{stats:?}");
        assert!(stats.plain > cases / 100, "{stats:?}");
    }
}

#[derive(Debug, Default)]
struct Stats {
    plain: u64,
    complete: u64,
    partial: u64,
    sub_records: u64,
}

impl Stats {
    fn count(&mut self, record: &[u8]) {
        match kpl::deaggregate(record) {
            Deaggregated::Plain => self.plain += 1,
            Deaggregated::Aggregated { records, partial } => {
                self.sub_records += records.len() as u64;
                if partial.is_some() {
                    self.partial += 1;
                } else {
                    self.complete += 1;
                }
            }
        }
    }
}
