//! De-aggregation of the fixtures in `tests/fixtures/kpl/`, made by an
//! independent implementation (the Python `aws-kinesis-agg` aggregator) and by
//! hand for malformed shapes; see `scripts/gen_kpl_fixtures.py`. Each fixture's
//! expected result follows the Java KCL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::{Digest, Md5};
use rsmld::kpl::{self, Aggregator, DeaggregateError, Deaggregated, PlainReason};
use serde::Deserialize;

/// One shape per malformed or unusual case the fixtures must cover; deleting a
/// fixture fails [`every_required_shape_has_a_fixture`].
const REQUIRED_SHAPES: &[&str] = &[
    "bad_checksum",
    "truncated_body",
    "truncated_record",
    "magic_only",
    "magic_md5_of_empty",
    "wrong_md5",
    "md5_over_garbage",
    "missing_data",
    "missing_pk_index",
    "missing_tag_key",
    "pk_index_out_of_range",
    "ehk_index_out_of_range",
    "invalid_utf8_keys",
    "unknown_fields_and_tags",
    "wrong_wire_types",
    "lib_mixed_ehk",
    "over_1mib",
    "zero_records",
    "ehk_not_a_number",
    "ehk_out_of_range",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    name: String,
    description: String,
    expected: Expected,
    encoder_matches: bool,
    python_library: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expected {
    kind: String,
    plain_reason: Option<String>,
    records: Vec<ExpectedRecord>,
    partial: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpectedRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Option<String>,
    data_len: Option<usize>,
    data_md5: Option<String>,
}

impl ExpectedRecord {
    /// Whether `data` is what this record expects.
    fn data_matches(&self, data: &[u8]) -> bool {
        match (&self.data, self.data_len, &self.data_md5) {
            (Some(b64), _, _) => STANDARD.decode(b64).expect("fixture base64") == data,
            (None, Some(len), Some(md5)) => data.len() == len && hex(&Md5::digest(data)) == *md5,
            _ => panic!("fixture record without data"),
        }
    }

    fn data_bytes(&self) -> Vec<u8> {
        STANDARD
            .decode(self.data.as_ref().expect("small fixture record"))
            .expect("fixture base64")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kpl")
}

/// Every fixture with its record bytes, sorted by name.
fn fixtures() -> Vec<(Fixture, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).expect("tests/fixtures/kpl exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let fixture: Fixture = serde_json::from_slice(&std::fs::read(&path).expect("read json"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes = std::fs::read(path.with_extension("bin")).expect("matching .bin file");
        out.push((fixture, bytes));
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    assert!(
        out.len() >= 40,
        "expected the committed fixtures, found {}",
        out.len()
    );
    out
}

fn partial_name(error: &DeaggregateError) -> &'static str {
    match error {
        DeaggregateError::PartitionKeyIndexOutOfRange { .. } => "PartitionKeyIndexOutOfRange",
        DeaggregateError::ExplicitHashKeyIndexOutOfRange { .. } => "ExplicitHashKeyIndexOutOfRange",
        DeaggregateError::ExplicitHashKeyNotANumber { .. } => "ExplicitHashKeyNotANumber",
        DeaggregateError::ExplicitHashKeyOutOfRange { .. } => "ExplicitHashKeyOutOfRange",
    }
}

fn plain_reason_name(reason: PlainReason) -> &'static str {
    match reason {
        PlainReason::NoMagic => "no_magic",
        PlainReason::NoBody => "no_body",
        PlainReason::ChecksumMismatch => "checksum",
        PlainReason::Protobuf(_) => "protobuf",
    }
}

/// Problems with one fixture, empty if it decodes as expected.
fn check(fixture: &Fixture, bytes: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = &fixture.expected;
    match (expected.kind.as_str(), kpl::deaggregate(bytes)) {
        ("plain", Deaggregated::Plain) => {
            let reason = kpl::plain_reason(bytes).map(plain_reason_name);
            if reason != expected.plain_reason.as_deref() {
                problems.push(format!(
                    "plain for the wrong reason: {:?} ({:?}), expected {:?}",
                    reason,
                    kpl::plain_reason(bytes),
                    expected.plain_reason
                ));
            }
        }
        ("aggregated", Deaggregated::Aggregated { records, partial }) => {
            let got_partial = partial.as_ref().map(partial_name);
            if got_partial != expected.partial.as_deref() {
                problems.push(format!(
                    "partial: got {partial:?}, expected {:?}",
                    expected.partial
                ));
            }
            if records.len() != expected.records.len() {
                problems.push(format!(
                    "{} records, expected {}",
                    records.len(),
                    expected.records.len()
                ));
            }
            let input = bytes.as_ptr_range();
            for (index, (got, want)) in records.iter().zip(&expected.records).enumerate() {
                if got.partition_key != want.partition_key.as_str() {
                    problems.push(format!(
                        "record {index}: partition key {:?}, expected {:?}",
                        got.partition_key.as_str(),
                        want.partition_key
                    ));
                }
                if got.explicit_hash_key.as_deref() != want.explicit_hash_key.as_deref() {
                    problems.push(format!(
                        "record {index}: explicit hash key {:?}, expected {:?}",
                        got.explicit_hash_key.as_deref(),
                        want.explicit_hash_key
                    ));
                }
                if !want.data_matches(got.data) {
                    problems.push(format!("record {index}: data differs"));
                }
                let slice = got.data.as_ptr_range();
                if slice.start < input.start || slice.end > input.end {
                    problems.push(format!("record {index}: data is not a slice of the input"));
                }
            }
        }
        (kind, got) => problems.push(format!(
            "expected {kind}, got {}",
            if got.is_aggregated() {
                "aggregated"
            } else {
                "plain"
            }
        )),
    }
    problems
}

#[test]
fn fixtures_decode_as_the_java_kcl_does() {
    let mut failures = Vec::new();
    for (fixture, bytes) in fixtures() {
        for problem in check(&fixture, &bytes) {
            failures.push(format!(
                "{} ({}): {problem}",
                fixture.name, fixture.description
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_required_shape_has_a_fixture() {
    let names: Vec<String> = fixtures().into_iter().map(|(f, _)| f.name).collect();
    let missing: Vec<&&str> = REQUIRED_SHAPES
        .iter()
        .filter(|shape| !names.iter().any(|n| n == *shape))
        .collect();
    assert!(missing.is_empty(), "missing fixtures: {missing:?}");
}

#[test]
fn python_library_differences_are_explained() {
    for (fixture, _) in fixtures() {
        if let Some(difference) = &fixture.python_library {
            assert!(
                difference.get("why").and_then(|w| w.as_str()).is_some(),
                "{}: the Python library differs without an explanation",
                fixture.name
            );
        }
    }
}

#[test]
fn encoder_reproduces_the_python_aggregates_byte_for_byte() {
    let mut checked = 0;
    for (fixture, bytes) in fixtures() {
        if !fixture.encoder_matches {
            continue;
        }
        let mut aggregator = Aggregator::new(usize::MAX);
        for record in &fixture.expected.records {
            let data = record.data_bytes();
            assert_eq!(
                aggregator.push(
                    &record.partition_key,
                    record.explicit_hash_key.as_deref(),
                    &data
                ),
                None
            );
        }
        let encoded = aggregator.finish().expect("fixture has records");
        assert!(
            encoded == bytes,
            "{}: our encoding differs from the Python aggregator's\n ours: {}\n      theirs: {}",
            fixture.name,
            hex(&encoded),
            hex(&bytes)
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} encoder fixtures");
}
