//! What must hold for `rsmld::kpl::deaggregate` on any input.
//!
//! Shared by the libFuzzer target (`fuzz_targets/deaggregate.rs`) and the
//! stable-Rust tests that replay the corpus and run randomized inputs
//! (`tests/it/kpl_fuzz_corpus.rs`, `tests/it/kpl_random.rs`, which include this file
//! by path). Panics, with a description, when a property fails.

use prost::Message as _;
use rsmld::kpl::{self, proto, Aggregator, DeaggregateError, Deaggregated, UserRecord};

/// Runs `deaggregate` on `input` and checks every invariant; returns whether
/// the input was an aggregate (for statistics).
pub fn check_deaggregate(input: &[u8]) -> bool {
    let result = kpl::deaggregate(input);
    let reason = kpl::plain_reason(input);
    assert_eq!(
        result.is_aggregated(),
        reason.is_none(),
        "deaggregate and plain_reason disagree ({reason:?})"
    );
    let Deaggregated::Aggregated { records, partial } = &result else {
        return false;
    };

    // Candidate conditions of the Java KCL.
    assert!(input.len() > kpl::MAGIC.len() + kpl::DIGEST_LEN);
    assert_eq!(input[..4], kpl::MAGIC);

    // Zero-copy and bounded: every data slice lies inside the input, and each
    // sub-record took at least 6 bytes of it (tag, length, two fields).
    let range = input.as_ptr_range();
    for record in records {
        let data = record.data.as_ptr_range();
        assert!(
            data.start >= range.start && data.end <= range.end,
            "sub-record data outside the input"
        );
    }
    assert!(
        records.len() <= input.len() / 6,
        "more records than bytes allow"
    );

    match partial {
        None => {}
        Some(DeaggregateError::ExplicitHashKeyOutOfRange { .. }) => {
            assert!(
                records.is_empty(),
                "an out-of-range hash key drops the aggregate"
            );
        }
        Some(error) => assert_eq!(
            error.sub_record(),
            records.len(),
            "a partial result keeps exactly the sub-records before the failing one"
        ),
    }
    for record in records {
        if let Some(key) = &record.explicit_hash_key {
            assert!(
                !key.is_empty(),
                "an empty explicit hash key is not a number and cannot be delivered"
            );
        }
    }

    compare_with_prost(input, records);
    check_round_trip(records);
    true
}

/// Where prost also parses the body, it must see the same records (prost and
/// protobuf-java differ on required fields, invalid UTF-8 and wire types, so
/// only inputs that both accept are compared).
fn compare_with_prost(input: &[u8], records: &[UserRecord<'_>]) {
    let body = &input[kpl::MAGIC.len()..input.len() - kpl::DIGEST_LEN];
    let Ok(message) = proto::AggregatedRecord::decode(body) else {
        return;
    };
    for (index, record) in records.iter().enumerate() {
        let Some(theirs) = message.records.get(index) else {
            panic!(
                "prost sees {} records, we deliver {index}+",
                message.records.len()
            );
        };
        assert_eq!(record.data, theirs.data.as_slice(), "record {index}: data");
        let key =
            java_index(theirs.partition_key_index).and_then(|i| message.partition_key_table.get(i));
        assert_eq!(Some(record.partition_key.as_str()), key.map(String::as_str));
        let ehk = theirs.explicit_hash_key_index.map(|index| {
            java_index(index)
                .and_then(|i| message.explicit_hash_key_table.get(i))
                .map(String::as_str)
        });
        match (&record.explicit_hash_key, ehk) {
            (None, None) => {}
            (Some(ours), Some(Some(theirs))) => assert_eq!(ours.as_str(), theirs),
            (ours, theirs) => panic!("record {index}: explicit hash key {ours:?} vs {theirs:?}"),
        }
    }
}

/// A table index as the Java KCL uses it: `(int) index`.
fn java_index(index: u64) -> Option<usize> {
    usize::try_from(index as u32 as i32).ok()
}

/// Encoding the delivered records again gives aggregates that decode to the
/// same records, completely.
fn check_round_trip(records: &[UserRecord<'_>]) {
    if records.is_empty() {
        return;
    }
    let mut aggregator = Aggregator::new(usize::MAX);
    for record in records {
        let finished = aggregator.push(
            &record.partition_key,
            record.explicit_hash_key.as_deref(),
            record.data,
        );
        assert!(finished.is_none(), "no limit, one aggregate");
    }
    let Some(encoded) = aggregator.finish() else {
        panic!("records were pushed");
    };
    match kpl::deaggregate(&encoded) {
        Deaggregated::Aggregated {
            records: again,
            partial: None,
        } => assert_eq!(again.as_slice(), records, "round trip changed the records"),
        other => panic!("re-encoded records decode as {other:?}"),
    }
}

/// `body` wrapped as a KPL record: magic, body, MD5 of the body.
pub fn with_valid_digest(body: &[u8]) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut record = Vec::with_capacity(body.len() + 20);
    record.extend_from_slice(&kpl::MAGIC);
    record.extend_from_slice(body);
    record.extend_from_slice(&Md5::digest(body));
    record
}
