//! Line-oriented helpers around [`deaggregate`] and [`Aggregator`], for the
//! binary's KPL subcommands and for scripts.
//!
//! * [`decode_lines`]: one base64 Kinesis record per input line, one JSON object
//!   per output line:
//!   `{"aggregated":true,"records":[{"partitionKey":"k","explicitHashKey":null,"subSequenceNumber":0,"data":"<base64>"}]}`.
//!   A plain record gives `"aggregated":false` and one record holding the input
//!   bytes, with a null partition key (the outer Kinesis record's key is not part
//!   of the input). A partly de-aggregated record adds `"partialError":"<why>"`
//!   after `records` (the key is absent otherwise).
//! * [`encode_lines`]: one JSON user record per input line,
//!   `{"partitionKey":"k","explicitHashKey":"123","data":"<base64>"}`
//!   (`explicitHashKey` optional), and one base64 aggregate per output line.
//!
//! Input base64 may be padded or not; output base64 is standard and padded.
//! Output JSON is ASCII-only ([`crate::json`]). Errors name the 1-based input
//! line. Only the reader and writer given by the caller are touched.

use std::io::{self, BufRead, Write};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::java_compat::{classify_hash_key, HashKeyCheck};
use super::{deaggregate, Aggregator, Deaggregated};

/// Errors of [`decode_lines`] and [`encode_lines`].
#[derive(Debug, thiserror::Error)]
pub enum KplCliError {
    /// An input line is not valid base64 ([`decode_lines`]).
    #[error("input line {line}: invalid base64: {source}")]
    Base64 {
        /// 1-based input line number.
        line: usize,
        /// What the decoder found.
        source: base64::DecodeError,
    },
    /// An input line is not the expected JSON object ([`encode_lines`]).
    #[error("input line {line}: invalid user record JSON: {source}")]
    Json {
        /// 1-based input line number.
        line: usize,
        /// What the parser found.
        source: serde_json::Error,
    },
    /// The `data` field is not valid base64 ([`encode_lines`]).
    #[error("input line {line}: \"data\" is not valid base64: {source}")]
    DataBase64 {
        /// 1-based input line number.
        line: usize,
        /// What the decoder found.
        source: base64::DecodeError,
    },
    /// The explicit hash key is not a decimal number in `[0, 2^128 - 1]`
    /// ([`encode_lines`]); the KCL would not deliver such a record.
    #[error(
        "input line {line}: \"explicitHashKey\" {key:?} is not a decimal number in [0, 2^128-1]"
    )]
    InvalidExplicitHashKey {
        /// 1-based input line number.
        line: usize,
        /// The key as given.
        key: String,
    },
    /// Reading the input failed.
    #[error("reading input line {line}: {source}")]
    Read {
        /// 1-based number of the line being read.
        line: usize,
        /// The IO error.
        source: io::Error,
    },
    /// Writing the output failed (a broken pipe shows up here).
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
}

/// Decodes one base64 Kinesis record per input line into one JSON line each
/// (format in the module documentation).
///
/// Empty lines are empty records. Surrounding ASCII whitespace (including a
/// `\r` before the newline) is ignored.
pub fn decode_lines(input: impl BufRead, mut output: impl Write) -> Result<(), KplCliError> {
    for_each_line(input, |line_number, line| {
        let record =
            BASE64_INPUT
                .decode(line.trim_ascii())
                .map_err(|source| KplCliError::Base64 {
                    line: line_number,
                    source,
                })?;
        let deaggregated = deaggregate(&record);
        let decoded = match &deaggregated {
            Deaggregated::Plain => DecodedLine {
                aggregated: false,
                records: vec![DecodedRecord {
                    partition_key: None,
                    explicit_hash_key: None,
                    sub_sequence_number: 0,
                    data: STANDARD.encode(&record),
                }],
                partial_error: None,
            },
            Deaggregated::Aggregated { records, partial } => DecodedLine {
                aggregated: true,
                records: records
                    .iter()
                    .zip(0u64..)
                    .map(|(user, sub_sequence_number)| DecodedRecord {
                        partition_key: Some(user.partition_key.as_str()),
                        explicit_hash_key: user.explicit_hash_key.as_deref(),
                        sub_sequence_number,
                        data: STANDARD.encode(user.data),
                    })
                    .collect(),
                partial_error: partial.as_ref().map(ToString::to_string),
            },
        };
        crate::json::write_ascii(&mut output, &decoded)
            .map_err(io::Error::from)
            .and_then(|()| output.write_all(b"\n"))
            .map_err(KplCliError::Write)
    })?;
    output.flush().map_err(KplCliError::Write)
}

/// Encodes one JSON user record per input line into base64 aggregates of at
/// most `max_bytes` each (see [`Aggregator`]), one per output line.
///
/// Every line must be a JSON object with `partitionKey` (string), `data`
/// (base64) and optionally `explicitHashKey` (a decimal string in
/// `[0, 2^128 - 1]`, or null); other keys are errors. No input, no output.
pub fn encode_lines(
    input: impl BufRead,
    mut output: impl Write,
    max_bytes: usize,
) -> Result<(), KplCliError> {
    let mut aggregator = Aggregator::new(max_bytes);
    let mut write_aggregate = |aggregate: Vec<u8>| -> Result<(), KplCliError> {
        let mut line = STANDARD.encode(aggregate);
        line.push('\n');
        output
            .write_all(line.as_bytes())
            .map_err(KplCliError::Write)
    };
    for_each_line(input, |line_number, line| {
        let user: EncodeInput =
            serde_json::from_slice(line).map_err(|source| KplCliError::Json {
                line: line_number,
                source,
            })?;
        let data = BASE64_INPUT
            .decode(user.data.trim_ascii())
            .map_err(|source| KplCliError::DataBase64 {
                line: line_number,
                source,
            })?;
        if let Some(key) = &user.explicit_hash_key {
            if !is_kinesis_hash_key(key) {
                return Err(KplCliError::InvalidExplicitHashKey {
                    line: line_number,
                    key: key.clone(),
                });
            }
        }
        match aggregator.push(
            &user.partition_key,
            user.explicit_hash_key.as_deref(),
            &data,
        ) {
            Some(aggregate) => write_aggregate(aggregate),
            None => Ok(()),
        }
    })?;
    if let Some(aggregate) = aggregator.finish() {
        write_aggregate(aggregate)?;
    }
    output.flush().map_err(KplCliError::Write)
}

/// Base64 for input: the standard alphabet, padding optional.
const BASE64_INPUT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One output line of [`decode_lines`].
#[derive(Serialize)]
struct DecodedLine<'a> {
    aggregated: bool,
    records: Vec<DecodedRecord<'a>>,
    #[serde(rename = "partialError", skip_serializing_if = "Option::is_none")]
    partial_error: Option<String>,
}

/// One record in a [`DecodedLine`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DecodedRecord<'a> {
    partition_key: Option<&'a str>,
    explicit_hash_key: Option<&'a str>,
    sub_sequence_number: u64,
    data: String,
}

/// One input line of [`encode_lines`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EncodeInput {
    partition_key: String,
    #[serde(default)]
    explicit_hash_key: Option<String>,
    data: String,
}

/// Calls `handle` with each line (1-based number, bytes without the line end).
fn for_each_line(
    mut input: impl BufRead,
    mut handle: impl FnMut(usize, &[u8]) -> Result<(), KplCliError>,
) -> Result<(), KplCliError> {
    let mut buffer = Vec::new();
    for line_number in 1.. {
        buffer.clear();
        let read = input
            .read_until(b'\n', &mut buffer)
            .map_err(|source| KplCliError::Read {
                line: line_number,
                source,
            })?;
        if read == 0 {
            break;
        }
        let line = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        handle(line_number, line)?;
    }
    Ok(())
}

/// A hash key Kinesis accepts: `0|[1-9][0-9]{0,38}`, at most `2^128 - 1`.
fn is_kinesis_hash_key(key: &str) -> bool {
    let canonical = key == "0"
        || (!key.starts_with('0')
            && !key.is_empty()
            && key.len() <= 39
            && key.bytes().all(|b| b.is_ascii_digit()));
    canonical && classify_hash_key(key) == HashKeyCheck::InRange
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ascii_json(value: &serde_json::Value) -> String {
        crate::json::to_ascii_string(value).unwrap()
    }

    #[test]
    fn ascii_formatter_escapes_non_ascii() {
        let value = serde_json::json!({"k\u{e9}y": "a\u{e9}\u{20ac}\u{1F600}\"\n\u{1}z"});
        let text = ascii_json(&value);
        assert_eq!(
            text,
            r#"{"k\u00e9y":"a\u00e9\u20ac\ud83d\ude00\"\n\u0001z"}"#
        );
        assert!(text.is_ascii());
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn hash_key_validation() {
        assert!(is_kinesis_hash_key("0"));
        assert!(is_kinesis_hash_key(
            "340282366920938463463374607431768211455"
        ));
        assert!(!is_kinesis_hash_key(
            "340282366920938463463374607431768211456"
        ));
        assert!(!is_kinesis_hash_key("01"));
        assert!(!is_kinesis_hash_key(""));
        assert!(!is_kinesis_hash_key("+1"));
        assert!(!is_kinesis_hash_key("\u{0661}"));
    }

    #[test]
    fn lines_are_numbered_from_one() {
        let err = decode_lines(&b"AAAA\n!!!\n"[..], Vec::new()).unwrap_err();
        assert!(matches!(err, KplCliError::Base64 { line: 2, .. }), "{err}");
        assert!(
            err.to_string().starts_with("input line 2: invalid base64"),
            "{err}"
        );
    }
}
