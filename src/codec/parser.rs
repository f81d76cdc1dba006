//! The fast record parser: one `processRecords` record element into its fields, without
//! serde for the shape the Java daemon writes, and with serde (strictly) for anything
//! else; and the payload check every decode path makes (standard padded base64).
//!
//! Why a layer of its own: serde's generic field matching, UTF-8 validation and `Cow`
//! handling were a quarter of rsmld's CPU time on batches of small records. The fast
//! parser accepts a subset of what serde accepts and decodes it identically (the
//! `daemon_line` fuzz target checks both).

use std::borrow::Cow;
use std::sync::Arc;

pub use super::bytes::is_base64;
use super::bytes::{printable_ascii, quote_or_backslash};
use super::payload::LineBuf;
use super::record::{check_data, convert_record, DecodeError, RecordText};
use super::Record;
use crate::protocol::sequence::SequenceNumber;

/// Decodes the record element at `range` of a shared line (see [`super::scan`]); its
/// payload points into the line. `previous` lets equal sequence numbers share storage.
pub fn decode_record_at(
    line: &Arc<LineBuf>,
    range: std::ops::Range<usize>,
    previous: Option<&SequenceNumber>,
) -> Result<Record, DecodeError> {
    let text = parse_record_at(line, range)?;
    convert_record(text, Some(line), previous)
}

/// Parses the record element at `range` of `line` (see [`super::scan`]) without copying
/// anything that has no escapes.
pub fn parse_record_at(
    line: &[u8],
    range: std::ops::Range<usize>,
) -> Result<RecordText<'_>, DecodeError> {
    if let Some(text) = fast_record(line, range.clone()) {
        return Ok(text);
    }
    let text: RecordText<'_> = serde_json::from_slice(&line[range]).map_err(DecodeError::Json)?;
    check_data(
        text.data.as_deref(),
        &text.sequence_number,
        text.sub_sequence_number,
    )?;
    Ok(text)
}

/// The record shape the daemon writes, parsed without serde: an object of the five known
/// keys, each at most once (and any number of `action` keys, ignored), strings without
/// escapes and printable ASCII only, a payload that is valid base64 ([`is_base64`]),
/// integers of at most 18 digits. `None` for anything else, which serde then decodes (or
/// rejects; [`parse_record_at`] then checks the payload) — so this accepts a subset of
/// what serde accepts and decodes it identically (the `daemon_line` fuzz target checks
/// both).
///
/// Why: serde's generic field matching, UTF-8 validation and `Cow` handling were a
/// quarter of rsmld's CPU time on batches of small records.
fn fast_record(b: &[u8], range: std::ops::Range<usize>) -> Option<RecordText<'_>> {
    fast_record_from(&b[..range.end], range.start)
        .filter(|(_, end)| *end == range.end)
        .map(|(text, _)| text)
}

/// Like [`fast_record`], for the record that starts at `start` (its `{`): the record and
/// the index after its closing `}`. The structural scan uses this, so a record of the
/// common shape is parsed once, while it is found.
pub(crate) fn fast_record_from(b: &[u8], start: usize) -> Option<(RecordText<'_>, usize)> {
    let (spans, end) = fast_record_spans(b, start, true)?;
    // SAFETY: with `check_data`, every span is printable ASCII (`fast_string`; the payload
    // is base64, a subset of it), so UTF-8.
    let text =
        |r: std::ops::Range<usize>| Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(&b[r]) });
    let text = RecordText {
        data: spans.data.map(text),
        partition_key: spans.partition_key.map(text),
        sequence_number: text(spans.sequence_number),
        sub_sequence_number: spans.sub_sequence_number,
        approximate_arrival_timestamp: spans.approximate_arrival_timestamp,
    };
    Some((text, end))
}

/// Where the fields of a record of the common shape are in its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordSpans {
    pub data: Option<std::ops::Range<usize>>,
    pub partition_key: Option<std::ops::Range<usize>>,
    pub sequence_number: std::ops::Range<usize>,
    pub sub_sequence_number: Option<i64>,
    pub approximate_arrival_timestamp: Option<i64>,
}

/// The parser of [`fast_record_from`], returning where the fields are. With `check_data`
/// false the payload's bytes are not checked to be base64: the stdin reader leaves that
/// pass (most of a line's bytes) to the parallel decoder, which must make it (`text_at` in
/// the scan checks every field it turns into text).
pub(crate) fn fast_record_spans(
    b: &[u8],
    start: usize,
    check_data: bool,
) -> Option<(RecordSpans, usize)> {
    const DATA: u8 = 1;
    const KEY: u8 = 2;
    const SEQ: u8 = 4;
    const SUB: u8 = 8;
    const ARRIVAL: u8 = 16;
    let mut i = start;
    let mut seen = 0u8;
    let (mut data, mut key, mut seq) = (None, None, None);
    let (mut sub, mut arrival) = (None, None);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    // The keys in the order the Java daemon writes them, quotes and colon included: the
    // expected next key is compared in place, any other order takes the general path.
    const ORDER: [(&[u8], u8); 6] = [
        (b"\"data\":", DATA),
        (b"\"partitionKey\":", KEY),
        (b"\"sequenceNumber\":", SEQ),
        (b"\"approximateArrivalTimestamp\":", ARRIVAL),
        (b"\"subSequenceNumber\":", SUB),
        (b"\"action\":", 0),
    ];
    let mut expected = 0;
    loop {
        i = skip_ws(b, i);
        let (field, name_end) = match ORDER.get(expected) {
            Some(&(key, field)) if b[i..].starts_with(key) => {
                expected += 1;
                // The index of the key's closing quote.
                (field, i + key.len() - 2)
            }
            _ => {
                let (name_start, name_end) = fast_string(b, i)?;
                let field = match &b[name_start..name_end] {
                    b"data" => DATA,
                    b"partitionKey" => KEY,
                    b"sequenceNumber" => SEQ,
                    b"subSequenceNumber" => SUB,
                    b"approximateArrivalTimestamp" => ARRIVAL,
                    // The Java daemon writes `"action":"record"` into every record; serde
                    // ignores it (any number of times), and so does this.
                    b"action" => 0,
                    _ => return None,
                };
                (field, name_end)
            }
        };
        if seen & field != 0 {
            return None;
        }
        seen |= field;
        i = skip_ws(b, name_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let null = b[i..].starts_with(b"null");
        match field {
            0 => i = fast_string(b, i)?.1 + 1,
            DATA | KEY | SEQ => {
                if null {
                    if field == SEQ {
                        return None;
                    }
                    i += 4;
                } else {
                    // A payload must be base64 (which is printable ASCII), any other
                    // string printable ASCII.
                    let check: Option<fn(&[u8]) -> bool> = match field {
                        DATA if !check_data => None,
                        DATA => Some(is_base64),
                        _ => Some(printable_ascii),
                    };
                    let (start, end) = fast_string_checked(b, i, check)?;
                    match field {
                        DATA => data = Some(start..end),
                        KEY => key = Some(start..end),
                        _ => seq = Some(start..end),
                    }
                    i = end + 1;
                }
            }
            _ => {
                let value = if null {
                    i += 4;
                    None
                } else {
                    let (n, end) = fast_integer(b, i)?;
                    i = end;
                    Some(n)
                };
                if field == SUB {
                    sub = value;
                } else {
                    arrival = value;
                }
            }
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    let spans = RecordSpans {
        data,
        partition_key: key,
        sequence_number: seq?,
        sub_sequence_number: sub,
        approximate_arrival_timestamp: arrival,
    };
    Some((spans, i + 1))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string at `i` (its opening quote) of printable ASCII without escapes: the range of
/// its contents (the closing quote is at the end of the range).
fn fast_string(b: &[u8], i: usize) -> Option<(usize, usize)> {
    fast_string_checked(b, i, Some(printable_ascii))
}

/// [`fast_string`] whose contents pass `check` (if any) instead of the printable check.
fn fast_string_checked(
    b: &[u8],
    i: usize,
    check: Option<fn(&[u8]) -> bool>,
) -> Option<(usize, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let end = start + quote_or_backslash(&b[start..])?;
    let ok = b[end] == b'"' && check.is_none_or(|check| check(&b[start..end]));
    ok.then_some((start, end))
}

/// A non-negative integer of at most 18 digits (always fits an i64), without a leading
/// zero, at `i`; the value and the index after it.
fn fast_integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 18 || (digits > 1 && b[i] == b'0') {
        return None;
    }
    // Serde would read "1.5" or "1e3" as a float (a type error for an integer field).
    if matches!(b.get(i + digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let n = b[i..i + digits]
        .iter()
        .fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
    Some((n, i + digits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    #[test]
    fn base64_as_the_daemon_writes_it() {
        for good in [
            "", "aGk=", "aGVsbG8=", "QUJD", "+/+/", "AA==", "AAA=", "84mawgo=",
        ] {
            assert!(is_base64(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a",
            "aGk",
            "aGk==",
            "a===",
            "====",
            "aG=k",
            "aGk=aGk=",
            "aG k",
            "aGk\n",
            "aGk_",
            "aGk-",
            "AB==",
            "AAB=",
            "not base64!",
            "é===",
        ] {
            assert!(!is_base64(bad.as_bytes()), "{bad:?}");
        }
    }

    proptest! {
        /// Exactly what the workers' decoder accepts.
        #[test]
        fn agrees_with_the_decoder(s in "[A-Za-z0-9+/=_ -]{0,24}") {
            let decodes = crate::pipeline::item::BASE64.decode(s.as_bytes()).is_ok();
            prop_assert_eq!(is_base64(s.as_bytes()), decodes, "{:?}", s);
        }

        /// An encoding with one character replaced: trailing bits, padding in the wrong
        /// place, a wrong character.
        #[test]
        fn agrees_on_near_misses(
            bytes in prop::collection::vec(any::<u8>(), 1..16),
            at in any::<prop::sample::Index>(),
            c in prop::sample::select(b"AQgwBCDE+/=a0-".to_vec()),
        ) {
            let mut text = crate::pipeline::item::BASE64.encode(&bytes).into_bytes();
            let i = at.index(text.len());
            text[i] = c;
            let decodes = crate::pipeline::item::BASE64.decode(&text).is_ok();
            prop_assert_eq!(is_base64(&text), decodes, "{:?}", String::from_utf8_lossy(&text));
        }

        #[test]
        fn accepts_every_encoding(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let text = crate::pipeline::item::BASE64.encode(&bytes);
            prop_assert!(is_base64(text.as_bytes()));
        }
    }
}
