//! The line-oriented KPL helpers: `decode_lines` and `encode_lines`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rsmld::kpl::cli::{decode_lines, encode_lines, KplCliError};
use serde_json::{json, Value};

fn decode(input: &str) -> Result<String, KplCliError> {
    let mut out = Vec::new();
    decode_lines(input.as_bytes(), &mut out)?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

fn encode(input: &str, max_bytes: usize) -> Result<String, KplCliError> {
    let mut out = Vec::new();
    encode_lines(input.as_bytes(), &mut out, max_bytes)?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

fn fixture_base64(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/kpl/{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    STANDARD.encode(std::fs::read(path).expect("fixture"))
}

#[test]
fn decodes_an_aggregate_to_the_documented_json() {
    let out = decode(&format!("{}\n", fixture_base64("lib_mixed_ehk"))).unwrap();
    assert_eq!(
        out,
        concat!(
            r#"{"aggregated":true,"records":["#,
            r#"{"partitionKey":"a","explicitHashKey":null,"subSequenceNumber":0,"data":"MQ=="},"#,
            r#"{"partitionKey":"b","explicitHashKey":"12345","subSequenceNumber":1,"data":"Mg=="},"#,
            r#"{"partitionKey":"c","explicitHashKey":null,"subSequenceNumber":2,"data":"Mw=="},"#,
            r#"{"partitionKey":"d","explicitHashKey":"67890","subSequenceNumber":3,"data":"NA=="},"#,
            r#"{"partitionKey":"a","explicitHashKey":"12345","subSequenceNumber":4,"data":"NQ=="}"#,
            "]}\n"
        )
    );
}

#[test]
fn plain_records_and_partial_aggregates() {
    let input = format!(
        "aGVsbG8=\n\n{}\r\n{}\n",
        fixture_base64("bad_checksum"),
        fixture_base64("pk_index_out_of_range")
    );
    let out = decode(&input).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "one output line per input line");
    assert_eq!(
        lines[0],
        json!({"aggregated": false, "records": [
            {"partitionKey": null, "explicitHashKey": null, "subSequenceNumber": 0, "data": "aGVsbG8="}
        ]})
    );
    // An empty line is an empty record.
    assert_eq!(lines[1]["records"][0]["data"], "");
    // A corrupt aggregate passes through unchanged.
    assert_eq!(lines[2]["aggregated"], false);
    assert_eq!(
        lines[2]["records"][0]["data"],
        fixture_base64("bad_checksum")
    );
    // Partial: the records before the bad index, and the reason.
    assert_eq!(lines[3]["aggregated"], true);
    assert_eq!(lines[3]["records"].as_array().unwrap().len(), 2);
    let reason = lines[3]["partialError"].as_str().unwrap();
    assert!(
        reason.contains("partition key index 2 is out of range"),
        "{reason}"
    );
    assert!(lines[0].get("partialError").is_none());
}

#[test]
fn output_is_ascii_with_escapes() {
    let out = decode(&format!("{}\n", fixture_base64("lib_unicode_keys"))).unwrap();
    assert!(out.is_ascii(), "{out}");
    assert!(out.contains(r#""partitionKey":"cl\u00e9""#), "{out}");
    assert!(
        out.contains(r#""partitionKey":"\ud83d\ude00 grin""#),
        "{out}"
    );
    let value: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(value["records"][2]["partitionKey"], "\u{1F600} grin");
}

#[test]
fn encode_then_decode_round_trips() {
    let input = concat!(
        r#"{"partitionKey":"k\u00e9y","data":"AAEC"}"#,
        "\n",
        r#"{"partitionKey":"\u65e5","explicitHashKey":"340282366920938463463374607431768211455","data":""}"#,
        "\n",
        r#"{"partitionKey":"k\u00e9y","explicitHashKey":null,"data":"aGk"}"#,
        "\n",
    );
    let aggregates = encode(input, 1_048_576).unwrap();
    assert_eq!(aggregates.lines().count(), 1);
    let decoded: Value = serde_json::from_str(decode(&aggregates).unwrap().trim_end()).unwrap();
    assert_eq!(
        decoded,
        json!({"aggregated": true, "records": [
            {"partitionKey": "k\u{e9}y", "explicitHashKey": null, "subSequenceNumber": 0, "data": "AAEC"},
            {"partitionKey": "\u{65e5}", "explicitHashKey": "340282366920938463463374607431768211455",
             "subSequenceNumber": 1, "data": ""},
            {"partitionKey": "k\u{e9}y", "explicitHashKey": null, "subSequenceNumber": 2, "data": "aGk="}
        ]})
    );
}

#[test]
fn encode_splits_at_the_limit() {
    let line = format!(
        "{}\n",
        json!({"partitionKey": "p", "data": STANDARD.encode([7u8; 100])})
    );
    let input = line.repeat(50);
    let out = encode(&input, 1000).unwrap();
    let aggregates: Vec<Vec<u8>> = out.lines().map(|l| STANDARD.decode(l).unwrap()).collect();
    assert!(aggregates.len() >= 5, "{} aggregates", aggregates.len());
    assert!(aggregates.iter().all(|a| a.len() <= 1000));
    let total: usize = out
        .lines()
        .map(|l| {
            let decoded: Value =
                serde_json::from_str(decode(&format!("{l}\n")).unwrap().trim_end()).unwrap();
            decoded["records"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(total, 50);
    assert_eq!(encode("", 1000).unwrap(), "", "no input, no output");
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let cases: Vec<(String, &str)> = vec![
        (
            decode("aGk=\naGk=\nnot base64!\n").unwrap_err().to_string(),
            "input line 3: invalid base64",
        ),
        (
            encode("{\"partitionKey\":\"k\",\"data\":\"\"}\n{oops\n", 100)
                .unwrap_err()
                .to_string(),
            "input line 2: invalid user record JSON",
        ),
        (
            encode("{\"partitionKey\":\"k\",\"data\":\"\",\"extra\":1}\n", 100)
                .unwrap_err()
                .to_string(),
            "input line 1: invalid user record JSON: unknown field `extra`",
        ),
        (
            encode("{\"data\":\"\"}\n", 100).unwrap_err().to_string(),
            "input line 1: invalid user record JSON: missing field `partitionKey`",
        ),
        (
            encode("{\"partitionKey\":\"k\",\"data\":\"***\"}\n", 100)
                .unwrap_err()
                .to_string(),
            "input line 1: \"data\" is not valid base64",
        ),
        (
            encode(
                "{\"partitionKey\":\"k\",\"explicitHashKey\":\"-1\",\"data\":\"\"}\n",
                100,
            )
            .unwrap_err()
            .to_string(),
            "input line 1: \"explicitHashKey\" \"-1\" is not a decimal number in [0, 2^128-1]",
        ),
        (
            encode("\n", 100).unwrap_err().to_string(),
            "input line 1: invalid user record JSON",
        ),
    ];
    for (message, expected_start) in cases {
        assert!(
            message.starts_with(expected_start),
            "{message:?} should start with {expected_start:?}"
        );
    }
}

#[test]
fn write_errors_are_reported() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let error = decode_lines("aGk=\n".as_bytes(), Broken).unwrap_err();
    match error {
        KplCliError::Write(e) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected a write error, got {other}"),
    }
}

/// Through the binary: an error is printed once, as one line, its cause inside it and not
/// repeated after it (the error chain is not printed a second time), and the exit code is 1.
#[test]
fn the_binary_prints_each_error_once() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsmld"))
        .args(["kpl", "decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not base64!\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("input line 1: invalid base64: "), "{err}");
    assert_eq!(
        lines[0].matches("Invalid").count(),
        1,
        "cause repeated: {err}"
    );
}
