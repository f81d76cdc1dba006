//! The per-record decoder of the parallel path (`decode_record_at`, whose serde-free
//! `fast_record` handles the daemon's usual record shape and declines anything else)
//! decodes every record exactly like the full decoder (`DaemonMessage::decode`), or both
//! fail. Each record text is put into a whole `processRecords` line between two ordinary
//! records, the line goes through the structural scan, and every record range is decoded
//! on its own (as the fuzz target does) and chained with its predecessor's sequence
//! number (as the driver does).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use std::sync::Arc;

use proptest::prelude::*;
use rsmld::codec::message::{decode_record_at, DaemonMessage, LineBuf, Record};
use rsmld::codec::scan::scan_process_records;
use rsmld::protocol::sequence::SequenceNumber;

/// A real 56-digit sequence number.
const SEQ: &str = "49680445498841953494698307936256227907416662446197178370";

/// The record before the one under test.
const BEFORE: &str = r#"{"data":"YmVmb3Jl","partitionKey":"before","sequenceNumber":"49680445498841953494698307936256227907416662446197178369","subSequenceNumber":0,"approximateArrivalTimestamp":1795310498057,"action":"record"}"#;

/// The record after the one under test (same sequence number as [`SEQ`], sub 1: the
/// chained decode may share storage with its predecessor).
const AFTER: &str = r#"{"data":"YWZ0ZXI=","partitionKey":"after","sequenceNumber":"49680445498841953494698307936256227907416662446197178370","subSequenceNumber":1,"approximateArrivalTimestamp":1795310498059,"action":"record"}"#;

/// A whole `processRecords` line with `record` as its middle record.
fn line_around(record: &str) -> String {
    format!(
        r#"{{"action":"processRecords","records":[{BEFORE},{record},{AFTER}],"millisBehindLatest":12}}"#
    )
}

/// Decodes `line` with the full decoder and with scan + `decode_record_at`, asserts that
/// they agree, and returns the common result.
fn both_paths(line: &str) -> Result<Vec<Record>, String> {
    let bytes = line.as_bytes();
    let full = DaemonMessage::decode(bytes);

    let layout = scan_process_records(bytes)
        .unwrap_or_else(|| panic!("the structural scan declined {line:?}"));
    // The driver's buffers hold the line terminator too; ranges stop before it.
    let mut padded = bytes.to_vec();
    padded.extend_from_slice(b"\n");
    let buf = Arc::new(LineBuf::new(padded, None));
    let shared = DaemonMessage::decode_shared(&buf, bytes.len());

    let independent: Result<Vec<Record>, _> = layout
        .records
        .iter()
        .map(|r| decode_record_at(&buf, r.clone(), None))
        .collect();
    let mut previous: Option<SequenceNumber> = None;
    let chained: Result<Vec<Record>, _> = layout
        .records
        .iter()
        .map(|r| {
            let record = decode_record_at(&buf, r.clone(), previous.as_ref())?;
            previous = Some(record.sequence_number.clone());
            Ok::<_, rsmld::codec::message::DecodeError>(record)
        })
        .collect();

    match (&full, &shared) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "decode and decode_shared disagree on {line:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "decode and decode_shared disagree on {line:?}: {:?} vs {:?}",
            full.as_ref().err().map(ToString::to_string),
            shared.as_ref().err().map(ToString::to_string)
        ),
    }
    match (full, independent, chained) {
        (
            Ok(DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            }),
            Ok(independent),
            Ok(chained),
        ) => {
            assert_eq!(
                records, independent,
                "the per-record decoder disagrees with the full decoder on {line:?}"
            );
            assert_eq!(
                records, chained,
                "the chained per-record decoder disagrees with the full decoder on {line:?}"
            );
            assert_eq!(millis_behind_latest, layout.millis_behind_latest);
            Ok(records)
        }
        (Ok(other), Ok(_), Ok(_)) => panic!("scan accepted a line that decodes as {other:?}"),
        (Err(e), Err(_), Err(_)) => Err(e.to_string()),
        (full, independent, chained) => panic!(
            "the paths disagree on {line:?}:\n  full decoder: {:?}\n  per record: {:?}\n  chained: {:?}",
            full.map(|_| ()).map_err(|e| e.to_string()),
            independent.map(|_| ()).map_err(|e| e.to_string()),
            chained.map(|_| ()).map_err(|e| e.to_string()),
        ),
    }
}

/// `record` (the text of one record) decodes, identically on both paths; returns it.
#[track_caller]
fn accepts(record: &str) -> Record {
    match both_paths(&line_around(record)) {
        Ok(mut records) => {
            assert_eq!(records.len(), 3, "{record}");
            records.swap_remove(1)
        }
        Err(e) => panic!("{record}\n was rejected by both paths: {e}"),
    }
}

/// `record` is rejected by both paths; returns the full decoder's message.
#[track_caller]
fn rejects(record: &str) -> String {
    match both_paths(&line_around(record)) {
        Ok(records) => panic!("{record}\n was accepted by both paths: {:?}", records[1]),
        Err(e) => e,
    }
}

/// The expected record.
fn rec(data: Option<&str>, key: &str, seq: &str, sub: Option<i64>, arrival: Option<i64>) -> Record {
    Record {
        data: data.map(Into::into),
        partition_key: key.to_owned(),
        sequence_number: SequenceNumber::parse(seq).unwrap(),
        sub_sequence_number: sub,
        approximate_arrival_timestamp: arrival,
    }
}

/// A record with `fields` (already-rendered `"key":value` pairs) in this order.
fn object(fields: &[&str]) -> String {
    format!("{{{}}}", fields.join(","))
}

fn seq_field() -> String {
    format!(r#""sequenceNumber":"{SEQ}""#)
}

#[test]
fn a_typical_daemon_record_decodes_to_its_fields() {
    let text = format!(
        r#"{{"data":"aGk=","partitionKey":"pk","sequenceNumber":"{SEQ}","subSequenceNumber":0,"approximateArrivalTimestamp":1795310498058,"action":"record"}}"#
    );
    let r = accepts(&text);
    assert_eq!(r.data.as_ref().map(|d| d.as_str()), Some("aGk="));
    assert_eq!(r.partition_key, "pk");
    assert_eq!(r.sequence_number.as_str(), SEQ);
    assert_eq!(r.sub_sequence_number, Some(0));
    assert_eq!(r.approximate_arrival_timestamp, Some(1795310498058));
    assert_eq!(
        r,
        rec(Some("aGk="), "pk", SEQ, Some(0), Some(1795310498058))
    );

    // The neighbours decode too (ranges are right, the chained decode shares nothing
    // it should not).
    let records = both_paths(&line_around(&text)).unwrap();
    assert_eq!(records[0].partition_key, "before");
    assert_eq!(
        records[0].sequence_number.as_str(),
        "49680445498841953494698307936256227907416662446197178369"
    );
    assert_eq!(records[2].partition_key, "after");
    assert_eq!(records[2].sequence_number.as_str(), SEQ);
    assert_eq!(records[2].sub_sequence_number, Some(1));
    assert_eq!(records[2].data.as_ref().unwrap().as_str(), "YWZ0ZXI=");
}

#[test]
fn keys_in_any_order() {
    let fields = [
        r#""data":"aGk=""#.to_owned(),
        r#""partitionKey":"pk""#.to_owned(),
        seq_field(),
        r#""subSequenceNumber":3"#.to_owned(),
        r#""approximateArrivalTimestamp":1795310498058"#.to_owned(),
        r#""action":"record""#.to_owned(),
    ];
    let expected = rec(Some("aGk="), "pk", SEQ, Some(3), Some(1795310498058));
    // Every rotation, and every rotation reversed.
    for shift in 0..fields.len() {
        let mut order: Vec<&str> = fields.iter().map(String::as_str).collect();
        order.rotate_left(shift);
        assert_eq!(accepts(&object(&order)), expected, "{order:?}");
        order.reverse();
        assert_eq!(accepts(&object(&order)), expected, "{order:?}");
    }
}

#[test]
fn the_action_key_is_ignored_absent_present_or_repeated() {
    let expected = rec(Some("aGk="), "pk", SEQ, Some(0), Some(5));
    let s = seq_field();
    for action in [
        vec![],
        vec![r#""action":"record""#],
        vec![r#""action":"record""#, r#""action":"record""#],
        vec![r#""action":"record""#, r#""action":"other""#],
        vec![r#""action":"rec\u006frd""#],
        vec![r#""action":null"#],
        vec![r#""action":1"#],
        vec![r#""action":{"nested":["record"]}"#],
        vec![r#""action":"""#],
    ] {
        // At the start, in the middle and at the end.
        for at in [0, 2, 5] {
            let mut fields = vec![
                r#""data":"aGk=""#,
                r#""partitionKey":"pk""#,
                s.as_str(),
                r#""subSequenceNumber":0"#,
                r#""approximateArrivalTimestamp":5"#,
            ];
            for (n, a) in action.iter().enumerate() {
                fields.insert((at + n).min(fields.len()), a);
            }
            assert_eq!(accepts(&object(&fields)), expected, "{fields:?}");
        }
    }
    // An action value that is not JSON is an error like any other.
    for bad in [
        "tru",
        "nul",
        "[1,]",
        r#""x" "y""#,
        "01",
        "'record'",
        "record",
        r#""a\x""#,
    ] {
        rejects(&format!(r#"{{"action":{bad},{s}}}"#));
        rejects(&format!(r#"{{{s},"action":{bad}}}"#));
    }
    // Only action keys: no sequence number.
    rejects(r#"{"action":"record"}"#);
    rejects(r#"{"action":"record","action":"record"}"#);
}

#[test]
fn nulls() {
    let s = seq_field();
    let full = |data: &str, key: &str, sub: &str, arrival: &str| {
        format!(
            r#"{{"data":{data},"partitionKey":{key},{s},"subSequenceNumber":{sub},"approximateArrivalTimestamp":{arrival},"action":"record"}}"#
        )
    };
    assert_eq!(
        accepts(&full("null", r#""pk""#, "1", "2")),
        rec(None, "pk", SEQ, Some(1), Some(2))
    );
    assert_eq!(
        accepts(&full(r#""aGk=""#, "null", "1", "2")),
        rec(Some("aGk="), "", SEQ, Some(1), Some(2))
    );
    assert_eq!(
        accepts(&full(r#""aGk=""#, r#""pk""#, "null", "2")),
        rec(Some("aGk="), "pk", SEQ, None, Some(2))
    );
    assert_eq!(
        accepts(&full(r#""aGk=""#, r#""pk""#, "1", "null")),
        rec(Some("aGk="), "pk", SEQ, Some(1), None)
    );
    assert_eq!(
        accepts(&full("null", "null", "null", "null")),
        rec(None, "", SEQ, None, None)
    );
    // Null with whitespace around it, and at the end of the object.
    assert_eq!(
        accepts(&format!(r#"{{{s},"data": null ,"partitionKey":null}}"#)),
        rec(None, "", SEQ, None, None)
    );
    // A null sequence number, and things that only start like null.
    rejects(r#"{"data":"aGk=","sequenceNumber":null}"#);
    rejects(&format!(r#"{{"data":nul,{s}}}"#));
    rejects(&format!(r#"{{"data":nullx,{s}}}"#));
    rejects(&format!(r#"{{"data":null null,{s}}}"#));
    rejects(&format!(r#"{{"subSequenceNumber":nulll,{s}}}"#));
    rejects(&format!(r#"{{"subSequenceNumber":Null,{s}}}"#));
    rejects(&format!(r#"{{{s},"partitionKey":NULL}}"#));
    // Four bytes that start like null but are not.
    for almost in ["nulx", "nul ", "nul\t", "nul,"] {
        rejects(&format!(r#"{{"data":{almost},{s}}}"#));
        rejects(&format!(r#"{{{s},"partitionKey":{almost}}}"#));
        rejects(&format!(r#"{{"subSequenceNumber":{almost},{s}}}"#));
        rejects(&format!(
            r#"{{{s},"approximateArrivalTimestamp":{almost}}}"#
        ));
    }
}

#[test]
fn missing_optional_keys() {
    let s = seq_field();
    assert_eq!(accepts(&format!("{{{s}}}")), rec(None, "", SEQ, None, None));
    assert_eq!(
        accepts(&format!(
            r#"{{"partitionKey":"pk",{s},"subSequenceNumber":2,"approximateArrivalTimestamp":3}}"#
        )),
        rec(None, "pk", SEQ, Some(2), Some(3))
    );
    assert_eq!(
        accepts(&format!(
            r#"{{"data":"aGk=",{s},"subSequenceNumber":2,"approximateArrivalTimestamp":3}}"#
        )),
        rec(Some("aGk="), "", SEQ, Some(2), Some(3))
    );
    assert_eq!(
        accepts(&format!(
            r#"{{"data":"aGk=","partitionKey":"pk",{s},"approximateArrivalTimestamp":3}}"#
        )),
        rec(Some("aGk="), "pk", SEQ, None, Some(3))
    );
    assert_eq!(
        accepts(&format!(
            r#"{{"data":"aGk=","partitionKey":"pk",{s},"subSequenceNumber":2}}"#
        )),
        rec(Some("aGk="), "pk", SEQ, Some(2), None)
    );
    // The sequence number is required.
    let e = rejects(
        r#"{"data":"aGk=","partitionKey":"pk","subSequenceNumber":0,"approximateArrivalTimestamp":1,"action":"record"}"#,
    );
    assert!(e.contains("sequenceNumber"), "{e}");
    rejects("{}");
    rejects("{ }");
}

#[test]
fn escaped_strings() {
    let s = seq_field();
    let cases: [(String, Record); 9] = [
        (
            format!(r#"{{"data":"\u0041QID",{s}}}"#),
            rec(Some("AQID"), "", SEQ, None, None),
        ),
        (
            format!(r#"{{"data":"a\/b+cw==",{s}}}"#),
            rec(Some("a/b+cw=="), "", SEQ, None, None),
        ),
        (
            format!(r#"{{"partitionKey":"p\u0041k",{s}}}"#),
            rec(None, "pAk", SEQ, None, None),
        ),
        (
            format!(r#"{{"partitionKey":"q\"uo\\te\/\b\f\n\r\t",{s}}}"#),
            rec(None, "q\"uo\\te/\u{8}\u{c}\n\r\t", SEQ, None, None),
        ),
        (
            format!(r#"{{"partitionKey":"\ud83d\udd11 \u00e9\u00E9",{s}}}"#),
            rec(None, "\u{1f511} \u{e9}\u{e9}", SEQ, None, None),
        ),
        (
            format!(r#"{{"partitionKey":"\u0000",{s}}}"#),
            rec(None, "\0", SEQ, None, None),
        ),
        (
            r#"{"sequenceNumber":"4968\u00304454988419534946983079362562279074166624461971783\u0037\u0030"}"#.to_owned(),
            rec(None, "", SEQ, None, None),
        ),
        (
            r#"{"sequenceNumber":"\u0054RIM_HORIZON"}"#.to_owned(),
            rec(None, "", "TRIM_HORIZON", None, None),
        ),
        (
            // An escaped key name is still that key.
            format!(r#"{{"d\u0061ta":"aGk=","partition\u004bey":"pk",{s}}}"#),
            rec(Some("aGk="), "pk", SEQ, None, None),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(accepts(&text), expected, "{text}");
    }
    // Escapes that are not JSON, and an escaped sequence number that is not digits.
    rejects(&format!(r#"{{"partitionKey":"\x41",{s}}}"#));
    rejects(&format!(r#"{{"partitionKey":"\u004",{s}}}"#));
    rejects(&format!(r#"{{"data":"\'",{s}}}"#));
    rejects(r#"{"sequenceNumber":"12\u0078"}"#);
    // An escaped key that duplicates a plain one.
    rejects(&format!(r#"{{"data":"aGk=","d\u0061ta":"aGk=",{s}}}"#));
    // A payload is checked as it decodes: escapes that make it invalid base64.
    let e = rejects(&format!(r#"{{"data":"a\/b=",{s}}}"#));
    assert!(e.contains("not valid base64"), "{e}");
    let e = rejects(&format!(r#"{{"data":"aGk\u002d",{s}}}"#));
    assert!(e.contains("not valid base64"), "{e}");
}

#[test]
fn non_ascii_utf8() {
    let s = seq_field();
    for key in [
        "cl\u{e9}",
        "\u{43a}\u{43b}\u{44e}\u{447}",
        "\u{1f511}",
        "a\u{7f}b",
        "\u{a0}",
    ] {
        assert_eq!(
            accepts(&format!(r#"{{"partitionKey":"{key}",{s}}}"#)),
            rec(None, key, SEQ, None, None),
            "{key:?}"
        );
    }
    // A payload is base64, so never non-ASCII.
    let text = "\u{e9}t\u{e9}";
    let e = rejects(&format!(r#"{{"data":"{text}",{s}}}"#));
    assert!(e.contains("not valid base64"), "{e}");
    // A non-ASCII sequence number is invalid either way.
    rejects(r#"{"sequenceNumber":"１２"}"#);
}

#[test]
fn raw_control_characters_inside_strings_are_errors() {
    let s = seq_field();
    for c in ['\u{0}', '\u{1}', '\t', '\n', '\r', '\u{1f}'] {
        rejects(&format!(r#"{{"partitionKey":"a{c}b",{s}}}"#));
        rejects(&format!(r#"{{"data":"aGk{c}=",{s}}}"#));
        rejects(&format!(r#"{{"sequenceNumber":"4968{c}0"}}"#));
        // Deep inside a long payload (past the 32-byte blocks of the fast string scan).
        let long = "A".repeat(70);
        rejects(&format!(r#"{{"data":"{long}{c}{long}",{s}}}"#));
    }
}

#[test]
fn long_strings_across_block_boundaries() {
    let s = seq_field();
    for n in [0, 1, 31, 32, 33, 63, 64, 65, 100, 1000] {
        // A payload is base64, so a multiple of four long; a key is any text.
        let data = "QUJD".repeat(n / 4 + 1)[..n / 4 * 4].to_owned();
        let key = "k".repeat(n);
        assert_eq!(
            accepts(&format!(
                r#"{{"data":"{data}",{s},"partitionKey":"{key}"}}"#
            )),
            rec(Some(&data), &key, SEQ, None, None),
            "{n}"
        );
        // An escape right after n plain bytes of a payload, decoding to base64.
        let text = format!(r#"{{"data":"{data}\/AAA{data}",{s}}}"#);
        assert_eq!(
            accepts(&text),
            rec(Some(&format!("{data}/AAA{data}")), "", SEQ, None, None),
            "{text}"
        );
        // A non-ASCII character, a DEL, a character outside the alphabet, padding in
        // the middle, a missing character, there: not base64.
        for bad in ["\u{e9}AA", "\u{7f}AAA", "-AAA", "AA==", "AAA"] {
            let e = rejects(&format!(r#"{{"data":"{data}{bad}{data}AAAA",{s}}}"#));
            assert!(e.contains("not valid base64"), "{n} {bad:?}: {e}");
        }
        // An escape, a non-ASCII character and a DEL right after n plain bytes of a key.
        for (raw, decoded) in [(r"\/", "/"), ("\u{e9}", "\u{e9}"), ("\u{7f}", "\u{7f}")] {
            let text = format!(r#"{{"partitionKey":"{key}{raw}{key}",{s}}}"#);
            let expected = format!("{key}{decoded}{key}");
            assert_eq!(
                accepts(&text),
                rec(None, &expected, SEQ, None, None),
                "{text}"
            );
        }
        // Structural characters inside strings.
        let text = format!(r#"{{"data":"{data}","partitionKey":"{key}}}],{{[:,",{s}}}"#);
        assert_eq!(
            accepts(&text),
            rec(Some(&data), &format!("{key}}}],{{[:,"), SEQ, None, None)
        );
    }
}

#[test]
fn integers() {
    let s = seq_field();
    let ok: [(&str, i64); 11] = [
        ("0", 0),
        ("7", 7),
        ("-1", -1),
        ("10", 10),
        ("999999999999999999", 999_999_999_999_999_999),
        ("100000000000000000", 100_000_000_000_000_000),
        ("1000000000000000000", 1_000_000_000_000_000_000),
        ("9223372036854775807", i64::MAX),
        ("-9223372036854775808", i64::MIN),
        ("1795310498058", 1_795_310_498_058),
        ("-999999999999999999", -999_999_999_999_999_999),
    ];
    for (text, n) in ok {
        for ws in ["", " ", "\n\t "] {
            let sub = format!(r#"{{{s},"subSequenceNumber":{ws}{text}{ws}}}"#);
            assert_eq!(accepts(&sub), rec(None, "", SEQ, Some(n), None), "{sub}");
            let arrival = format!(r#"{{"approximateArrivalTimestamp":{ws}{text}{ws},{s}}}"#);
            assert_eq!(
                accepts(&arrival),
                rec(None, "", SEQ, None, Some(n)),
                "{arrival}"
            );
        }
    }
    let bad = [
        "01",
        "00",
        "-0",
        "-01",
        "1.5",
        "1.0",
        "0.0",
        "1e3",
        "1E3",
        "1e+3",
        "7.",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "\"7\"",
        "true",
        "[]",
        "{}",
        "+1",
        "7x",
        "7 7",
        "0x1",
        "--1",
        "-",
        "NaN",
    ];
    for text in bad {
        rejects(&format!(r#"{{{s},"subSequenceNumber":{text}}}"#));
        rejects(&format!(r#"{{"approximateArrivalTimestamp":{text},{s}}}"#));
    }
}

#[test]
fn duplicate_known_keys_are_errors() {
    let s = seq_field();
    let fields = [
        r#""data":"aGk=""#,
        r#""data":null"#,
        r#""partitionKey":"pk""#,
        r#""partitionKey":null"#,
        r#""subSequenceNumber":0"#,
        r#""subSequenceNumber":null"#,
        r#""approximateArrivalTimestamp":1"#,
        r#""approximateArrivalTimestamp":null"#,
    ];
    for a in fields {
        for b in fields {
            if a.split(':').next() == b.split(':').next() {
                let e = rejects(&format!("{{{a},{s},{b}}}"));
                assert!(e.contains("duplicate"), "{a} {b}: {e}");
            }
        }
    }
    let e = rejects(&format!("{{{s},{s}}}"));
    assert!(e.contains("duplicate"), "{e}");
    rejects(&format!(r#"{{{s},"sequenceNumber":"1"}}"#));
}

#[test]
fn unknown_keys_are_ignored_whatever_their_value() {
    let s = seq_field();
    let expected = rec(Some("aGk="), "pk", SEQ, Some(0), Some(9));
    for extra in [
        r#""explicitHashKey":"1234""#,
        r#""explicitHashKey":null"#,
        r#""extra":{"a":[1,{"b":"}]\""}],"c":null,"d":-1.5e3,"e":true}"#,
        r#""x":[]"#,
        r#""y":{}"#,
        r#""z":[[[["]"]]]]"#,
        r#""n":18446744073709551616"#,
        r#""f":1.5"#,
        r#""":0"#,
        r#""d\u0061ta2":"x""#,
        r#""Data":"not the data""#,
        r#""data ":"not the data""#,
        r#""clé":"ключ""#,
        r#""dup":1,"dup":2"#,
    ] {
        for at in [0, 3, 6] {
            let mut fields = vec![
                r#""data":"aGk=""#,
                r#""partitionKey":"pk""#,
                s.as_str(),
                r#""subSequenceNumber":0"#,
                r#""approximateArrivalTimestamp":9"#,
                r#""action":"record""#,
            ];
            fields.insert(at, extra);
            assert_eq!(accepts(&object(&fields)), expected, "{fields:?}");
        }
    }
    // An unknown key whose value is not JSON is still an error.
    rejects(&format!(r#"{{{s},"x":tru}}"#));
    rejects(&format!(r#"{{{s},"x":[1,]}}"#));
    rejects(&format!(r#"{{{s},"x":01}}"#));
}

#[test]
fn whitespace_between_all_tokens() {
    let expected = rec(Some("aGk="), "pk", SEQ, Some(4), Some(1795310498058));
    for ws in [" ", "\t", "\n", "\r\n", " \t\r\n "] {
        let text = [
            "{",
            r#""data""#,
            ":",
            r#""aGk=""#,
            ",",
            r#""partitionKey""#,
            ":",
            r#""pk""#,
            ",",
            r#""action""#,
            ":",
            r#""record""#,
            ",",
            r#""sequenceNumber""#,
            ":",
            &format!(r#""{SEQ}""#),
            ",",
            r#""subSequenceNumber""#,
            ":",
            "4",
            ",",
            r#""approximateArrivalTimestamp""#,
            ":",
            "1795310498058",
            "}",
        ]
        .join(ws);
        assert_eq!(accepts(&text), expected, "{text:?}");
        // Whitespace around the record inside the array, too.
        let line = format!(
            r#"{{"action":"processRecords","records":[{ws}{BEFORE}{ws},{ws}{text}{ws}]{ws},"millisBehindLatest":null}}"#
        );
        let records = both_paths(&line).unwrap();
        assert_eq!(records[1], expected);
    }
    // Not JSON whitespace: a form feed, a vertical tab, a non-breaking space.
    for ws in ["\u{c}", "\u{b}", "\u{a0}"] {
        rejects(&format!(r#"{{{ws}"sequenceNumber":"{SEQ}"}}"#));
        rejects(&format!(r#"{{"sequenceNumber":{ws}"{SEQ}"}}"#));
    }
}

#[test]
fn sequence_numbers() {
    for ok in [
        "TRIM_HORIZON",
        "LATEST",
        "AT_TIMESTAMP",
        "SHARD_END",
        "0",
        "00",
        "1",
        SEQ,
        "000049680445498841953494698307936256227907416662446197178370",
    ] {
        let r = accepts(&format!(r#"{{"sequenceNumber":"{ok}","action":"record"}}"#));
        assert_eq!(r.sequence_number, SequenceNumber::parse(ok).unwrap());
        assert_eq!(r.sequence_number.as_str(), ok);
    }
    for bad in [
        "12x",
        "",
        " 12",
        "12 ",
        "-1",
        "+1",
        "1.5",
        "trim_horizon",
        "TRIM_HORIZON ",
        "SHARD_END\\u0000",
    ] {
        let e = rejects(&format!(
            r#"{{"sequenceNumber":"{bad}","action":"record"}}"#
        ));
        assert!(e.contains("sequence number"), "{bad:?}: {e}");
    }
    // Not a string.
    rejects(r#"{"sequenceNumber":12}"#);
    rejects(r#"{"sequenceNumber":["12"]}"#);
    rejects(r#"{"sequenceNumber":true}"#);
}

#[test]
fn malformed_record_objects() {
    let s = seq_field();
    for text in [
        format!(r#"{{"data" "aGk=",{s}}}"#),
        format!(r#"{{"data"::"aGk=",{s}}}"#),
        format!(r#"{{"data":"aGk=",,{s}}}"#),
        format!(r#"{{"data":"aGk=",{s},}}"#),
        format!(r#"{{"data":"aGk=" "x",{s}}}"#),
        format!(r#"{{"data":aGk,{s}}}"#),
        format!(r#"{{data:"aGk=",{s}}}"#),
        format!(r#"{{'data':"aGk=",{s}}}"#),
        format!(r#"{{"data":"aGk=";{s}}}"#),
        format!(r#"{{"data":["aGk="],{s}}}"#),
        format!(r#"{{"data":1,{s}}}"#),
        format!(r#"{{"partitionKey":{{}},{s}}}"#),
        format!(r#"{{"partitionKey":7,{s}}}"#),
        format!(r#"{{"data":true,{s}}}"#),
        format!(r#"{{{s}:1}}"#),
        "1".to_owned(),
        "null".to_owned(),
        "\"record\"".to_owned(),
        "[]".to_owned(),
        "[{}]".to_owned(),
    ] {
        rejects(&text);
    }
}

#[test]
fn a_record_written_as_an_array_agrees_on_both_paths() {
    // serde lets a struct be written as a sequence of its fields; whatever the full
    // decoder makes of it, the per-record path must make the same.
    let text = format!(r#"["aGk=","pk","{SEQ}",1,2]"#);
    let _ = both_paths(&line_around(&text));
    let text = format!(r#"[null,null,"{SEQ}"]"#);
    let _ = both_paths(&line_around(&text));
    let text = r#"["aGk=","pk","12x",1,2]"#;
    assert!(both_paths(&line_around(text)).is_err());
}

/// A line of several MiB (long enough for the structural scan to work on parts of it)
/// whose records contain, inside strings and inside nested values, the text that
/// separates records (`},{"`): every record range is still right, and a bad record
/// anywhere is still an error on both paths.
#[test]
fn long_lines_with_separator_lookalikes_decode_alike() {
    let payload = "QUJD".repeat(60);
    let tricky = |i: usize| -> String {
        let s = format!("4968044549884195349469830793625622790741666244{i:010}");
        match i % 8 {
            0 => format!(
                r#"{{"data":"{payload}","partitionKey":"{payload}}},{{\"x a}},{{\"b","sequenceNumber":"{s}"}}"#
            ),
            1 => format!(
                r#"{{"partitionKey":"ends}},{{","sequenceNumber":"{s}","data":"{payload}"}}"#
            ),
            2 => format!(r#"{{"partitionKey":"x\\","sequenceNumber":"{s}"}}"#),
            3 => {
                format!(r#"{{"nested":[{{"a":1}},{{"b":"}},{{\""}},{{}}],"sequenceNumber":"{s}"}}"#)
            }
            4 => format!(r#"{{ "sequenceNumber" : "{s}" , "data" : "{payload}" }}"#),
            5 => format!(
                r#"{{"extra":{{"r":[{{"s":"}}]"}},{{"sequenceNumber":"1"}}]}},"sequenceNumber":"{s}"}}"#
            ),
            6 => format!(r#"{{"partitionKey":"\u007d,{{\"","sequenceNumber":"{s}"}}"#),
            _ => format!(
                r#"{{"partitionKey":"[{{","sequenceNumber":"{s}","subSequenceNumber":{i}}}"#
            ),
        }
    };
    // Every record ends its payload with the separator text, so that a part of the line
    // that starts at the first separator after some offset most likely starts inside a
    // string.
    let lookalike = |i: usize| -> String {
        format!(
            r#"{{"data":"{payload}","partitionKey":"{payload}}},{{","sequenceNumber":"4968044549884195349469830793625622790741666244{i:010}"}}"#
        )
    };
    let plain = |i: usize| -> String {
        format!(
            r#"{{"data":"{payload}","partitionKey":"k{i}","sequenceNumber":"4968044549884195349469830793625622790741666244{i:010}","subSequenceNumber":0,"approximateArrivalTimestamp":1795310498058,"action":"record"}}"#
        )
    };
    let n = 12_000;
    // 0: every record a lookalike; usize::MAX: no tricky record at all.
    for tricky_every in [0, 1, 7, 997, usize::MAX] {
        let records: Vec<String> = (0..n)
            .map(|i| match tricky_every {
                0 => lookalike(i),
                usize::MAX => plain(i),
                every if i % every == 0 => tricky(i),
                _ => plain(i),
            })
            .collect();
        let line = format!(
            r#"{{"action":"processRecords","records":[{}],"millisBehindLatest":3}}"#,
            records.join(",")
        );
        assert!(line.len() > 2 << 20, "{}", line.len());
        let decoded = both_paths(&line).unwrap();
        assert_eq!(decoded.len(), n, "tricky every {tricky_every}");
        for (i, r) in decoded.iter().enumerate() {
            assert!(
                r.sequence_number.as_str().ends_with(&format!("{i:010}")),
                "record {i} is {:?} (tricky every {tricky_every})",
                r.sequence_number
            );
        }
        // One bad sequence number far into the line.
        let bad = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if i == n - 1000 {
                    r.replacen("\"sequenceNumber\":\"4968", "\"sequenceNumber\":\"x4968", 1)
                } else {
                    r.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let line = format!(r#"{{"action":"processRecords","records":[{bad}]}}"#);
        assert!(both_paths(&line).is_err(), "tricky every {tricky_every}");
    }
}

// ---------------------------------------------------------------- generated records

/// How a string's characters are written.
fn render_string(chars: &[(char, u8)]) -> String {
    let mut out = String::from("\"");
    for &(c, how) in chars {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            '\r' => Some("\\r"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        // `how`: 0..6 raw (never for '"' and '\\'; control characters only at 0, which
        // makes the string invalid), 6..8 \uXXXX, 8..10 the short escape if there is one.
        let must_escape = c == '"' || c == '\\';
        let control = (c as u32) < 0x20;
        let raw = if control {
            how == 0
        } else {
            how < 6 && !must_escape
        };
        if raw {
            out.push(c);
        } else if let (Some(s), true) = (short, how >= 8) {
            out.push_str(s);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                if how % 2 == 0 {
                    out.push_str(&format!("\\u{u:04x}"));
                } else {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn a_char() -> impl Strategy<Value = char> {
    prop_oneof![
        12 => prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=".chars().collect::<Vec<_>>()
        ),
        3 => prop::sample::select(vec![
            '"', '\\', '/', '}', ']', '{', '[', ',', ':', ' ', '\u{e9}', '\u{43a}', '\u{1f511}',
            '\u{7f}', '\u{a0}', '\u{ffff}',
        ]),
        1 => prop::sample::select(vec!['\u{0}', '\u{1}', '\n', '\t', '\r', '\u{8}', '\u{c}', '\u{1f}']),
    ]
}

/// A string literal of printable ASCII without escapes (what the daemon writes).
fn a_plain_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= -_.:{}[],~"
                .chars()
                .collect::<Vec<_>>(),
        ),
        0..max,
    )
    .prop_map(|v| format!("\"{}\"", v.into_iter().collect::<String>()))
}

/// A string literal of up to `max` characters, each raw or escaped at random.
fn a_wild_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec((a_char(), 0u8..10), 0..max).prop_map(|v| render_string(&v))
}

/// A sequence number text, valid most of the time.
fn a_sequence_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[0-9]{1,60}",
        2 => prop::sample::select(vec!["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END"])
            .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["12x", "", "-1", " 1", "1 ", "~"]).prop_map(str::to_owned),
    ]
}

/// A sequence number literal with about one character in five escaped.
fn a_wild_sequence_number() -> impl Strategy<Value = String> {
    (a_sequence_text(), prop::collection::vec(0u8..10, 64)).prop_map(|(t, how)| {
        let chars: Vec<(char, u8)> = t
            .chars()
            .enumerate()
            .map(|(i, c)| (c, if how[i % 64] < 8 { 0 } else { how[i % 64] }))
            .collect();
        render_string(&chars)
    })
}

/// Integers as the daemon writes them (up to 18 digits, the fast parser's range).
fn a_plain_integer() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (0i64..1_000_000_000_000_000_000).prop_map(|n| n.to_string()),
        2 => (0i64..100).prop_map(|n| n.to_string()),
        1 => (1_000_000_000_000i64..10_000_000_000_000).prop_map(|n| n.to_string()),
    ]
}

/// Any integer text, and some that are not integers.
fn a_wild_integer() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (i64::MIN..=i64::MAX).prop_map(|n| n.to_string()),
        2 => prop::sample::select(vec![
            "0", "7", "-1", "-0", "999999999999999999", "1000000000000000000",
            "9223372036854775807", "-9223372036854775808",
        ]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "01", "1.5", "1e3", "9223372036854775808", "\"7\"", "true", "[]",
        ]).prop_map(str::to_owned),
    ]
}

/// A field's value: absent (None), null, or a value.
fn optional(value: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some("null".to_owned())),
        5 => value.prop_map(Some),
    ]
}

fn an_extra() -> impl Strategy<Value = (String, String)> {
    prop::sample::select(vec![
        (r#""explicitHashKey""#, r#""12345""#),
        (r#""extra""#, r#"{"a":[1,{"b":"}]"}],"c":null,"d":-1.5e3}"#),
        (r#""x""#, "[]"),
        (r#""action""#, "1"),
        (r#""d\u0061ta2""#, r#""x""#),
    ])
    .prop_map(|(k, v)| (k.to_owned(), v.to_owned()))
}

fn a_whitespace() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", "", " ", "\n", "\t", "\r\n ", "  "])
}

/// A generated record: its `"key":value` pairs, a sort key per pair (random order), and
/// the whitespace to put around its tokens (cycled).
#[derive(Debug, Clone)]
struct GenRecord {
    fields: Vec<(String, String)>,
    order: Vec<u32>,
    whitespace: Vec<&'static str>,
}

impl GenRecord {
    fn render(&self) -> String {
        let mut fields: Vec<(u32, &(String, String))> =
            self.order.iter().copied().zip(self.fields.iter()).collect();
        fields.sort_by_key(|(k, _)| *k);
        let mut ws = self.whitespace.iter().cycle();
        let mut out = String::from("{");
        for (i, (_, (k, v))) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(ws.next().unwrap());
            out.push_str(k);
            out.push_str(ws.next().unwrap());
            out.push(':');
            out.push_str(ws.next().unwrap());
            out.push_str(v);
            out.push_str(ws.next().unwrap());
        }
        out.push('}');
        out
    }
}

/// The values of one record's fields.
type Values = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Daemon-like values (the fast parser's territory): plain strings, integers of at most
/// 18 digits; optional fields absent or null at random.
fn tame_values() -> impl Strategy<Value = Values> {
    (
        optional(a_plain_string(80)),
        optional(a_plain_string(12)),
        prop_oneof![20 => a_sequence_text().prop_map(|t| Some(format!("\"{t}\""))), 1 => Just(None)],
        optional(a_plain_integer()),
        optional(a_plain_integer()),
    )
}

/// Anything goes: escapes, non-ASCII, control characters, odd numbers, null sequence
/// numbers.
fn wild_values() -> impl Strategy<Value = Values> {
    (
        optional(prop_oneof![a_plain_string(80), a_wild_string(80)]),
        optional(prop_oneof![a_plain_string(12), a_wild_string(12)]),
        prop_oneof![
            10 => a_sequence_text().prop_map(|t| Some(format!("\"{t}\""))),
            10 => a_wild_sequence_number().prop_map(Some),
            1 => Just(None),
            1 => Just(Some("null".to_owned())),
        ],
        optional(prop_oneof![a_plain_integer(), a_wild_integer()]),
        optional(prop_oneof![a_plain_integer(), a_wild_integer()]),
    )
}

/// Key names: plain, or (wild) sometimes with an escaped character.
fn names(wild: bool) -> impl Strategy<Value = [String; 5]> {
    let plain = [
        "\"data\"",
        "\"partitionKey\"",
        "\"sequenceNumber\"",
        "\"subSequenceNumber\"",
        "\"approximateArrivalTimestamp\"",
    ];
    let escaped = [
        r#""d\u0061ta""#,
        r#""p\u0061rtitionKey""#,
        r#""sequenceNumbe\u0072""#,
        r#""\u0073ubSequenceNumber""#,
        r#""approximateArrivalTimestam\u0070""#,
    ];
    prop::collection::vec(0u8..10, 5).prop_map(move |how| {
        std::array::from_fn(|i| {
            if wild && how[i] == 0 {
                escaped[i].to_owned()
            } else {
                plain[i].to_owned()
            }
        })
    })
}

fn a_record_of(wild: bool) -> impl Strategy<Value = GenRecord> {
    let values = if wild {
        wild_values().boxed()
    } else {
        tame_values().boxed()
    };
    let action_value = if wild {
        prop_oneof![3 => Just("\"record\"".to_owned()), 1 => a_wild_string(8)].boxed()
    } else {
        prop_oneof![3 => Just("\"record\"".to_owned()), 1 => a_plain_string(8)].boxed()
    };
    (
        names(wild),
        values,
        (0usize..=2, action_value),
        prop::option::weighted(0.2, an_extra()),
        prop::option::weighted(0.1, (0usize..5, a_plain_integer())),
        prop::collection::vec(any::<u32>(), 16),
        prop::collection::vec(a_whitespace(), 1..16),
    )
        .prop_map(
            move |(
                names,
                (data, key, seq, sub, arrival),
                (actions, action),
                extra,
                duplicate,
                order,
                whitespace,
            )| {
                let mut fields = Vec::new();
                for (name, value) in names.iter().zip([data, key, seq, sub, arrival]) {
                    if let Some(v) = value {
                        fields.push((name.clone(), v));
                    }
                }
                for _ in 0..actions {
                    fields.push(("\"action\"".to_owned(), action.clone()));
                }
                // Extra and duplicate keys only in wild records.
                fields.extend(extra.filter(|_| wild));
                if let Some((which, value)) = duplicate.filter(|_| wild) {
                    fields.push((names[which].clone(), value));
                }
                GenRecord {
                    fields,
                    order,
                    whitespace,
                }
            },
        )
}

fn a_record() -> impl Strategy<Value = GenRecord> {
    prop_oneof![a_record_of(false), a_record_of(true)]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_records_decode_alike_on_both_paths(
        records in prop::collection::vec(a_record(), 1..4),
    ) {
        let texts: Vec<String> = records.iter().map(GenRecord::render).collect();
        let line = format!(
            r#"{{"action":"processRecords","records":[{}],"millisBehindLatest":3}}"#,
            texts.join(",")
        );
        // Panics (with both outcomes) when the paths disagree.
        if let Ok(decoded) = both_paths(&line) {
            prop_assert_eq!(decoded.len(), texts.len());
        }
        // Each record alone, too, between ordinary neighbours.
        for text in &texts {
            let _ = both_paths(&line_around(text));
        }
    }
}
