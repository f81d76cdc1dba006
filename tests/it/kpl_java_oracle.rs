//! Differential test against the real Java runtime: protobuf-java parses and
//! the JDK decodes strings and `BigInteger`s in `fuzz/java-oracle/Oracle.java`,
//! which applies the Java KCL's de-aggregation rules; rsmld must decide the same
//! for every input (fixtures, the fuzz corpus, structure-aware random records,
//! key-focused records).
//!
//! Ignored by default: it needs a JDK, protoc and protobuf-java. Run it with
//!
//! ```text
//! export RSMLD_JAVA_ORACLE_CP="$(fuzz/java-oracle/build.sh)"
//! cargo test --release --test it kpl_java_oracle -- --ignored --nocapture
//! ```
//!
//! `RSMLD_KPL_ORACLE_CASES` sets the number of random cases (default 200000).

use crate::{generator, invariants};

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use generator::{key_focused_record, random_record, Rng};
use rsmld::kpl::{self, DeaggregateError, Deaggregated};

/// rsmld's decision in the oracle's output format.
fn our_line(record: &[u8]) -> String {
    match kpl::deaggregate(record) {
        Deaggregated::Plain => "P".to_owned(),
        Deaggregated::Aggregated { records, partial } => {
            let status = match partial {
                None => "ok",
                Some(DeaggregateError::ExplicitHashKeyOutOfRange { .. }) => "dropped",
                Some(_) => "partial",
            };
            let mut line = format!("A {status} {}", records.len());
            for record in &records {
                let ehk = record
                    .explicit_hash_key
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |k| STANDARD.encode(k.as_bytes()));
                line.push_str(&format!(
                    " {},{ehk},{}",
                    STANDARD.encode(record.partition_key.as_bytes()),
                    STANDARD.encode(record.data)
                ));
            }
            line
        }
    }
}

#[test]
#[ignore = "needs a JDK and protobuf-java: see fuzz/java-oracle/README.md"]
fn rsmld_decides_like_protobuf_java_and_the_jdk() {
    let classpath = std::env::var("RSMLD_JAVA_ORACLE_CP")
        .expect("set RSMLD_JAVA_ORACLE_CP to the output of fuzz/java-oracle/build.sh");
    let cases: u64 = std::env::var("RSMLD_KPL_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);

    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kpl");
    for entry in std::fs::read_dir(fixtures).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("bin") {
            inputs.push(std::fs::read(path).expect("fixture"));
        }
    }
    // The fuzz corpus, as the fuzz target sees it: as records and as bodies.
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/deaggregate");
    for entry in std::fs::read_dir(corpus).expect("fuzz corpus") {
        let input = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        inputs.push(invariants::with_valid_digest(&input));
        inputs.push(input);
    }
    let mut rng = Rng::new(0x0A_C1E5);
    for case in 0..cases {
        inputs.push(if case % 4 == 3 {
            key_focused_record(&mut rng)
        } else {
            random_record(&mut rng)
        });
    }

    let mut java = Command::new("java")
        .args(["-cp", &classpath, "Oracle"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start java");
    let mut stdin = java.stdin.take().expect("stdin");
    let feed = inputs.clone();
    let writer = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(&mut stdin);
        for record in feed {
            writeln!(out, "{}", STANDARD.encode(record)).expect("write to java");
        }
    });
    let reader = BufReader::new(java.stdout.take().expect("stdout"));
    let mut mismatches = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    let mut answered = 0;
    for (record, java_line) in inputs.iter().zip(reader.lines()) {
        let java_line = java_line.expect("read from java");
        let ours = our_line(record);
        let kind = java_line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        *outcomes.entry(kind).or_default() += 1;
        if ours != java_line && mismatches.len() < 10 {
            mismatches.push(format!(
                "input {}\n  java: {java_line}\n  ours: {ours}",
                STANDARD.encode(record)
            ));
        }
        answered += 1;
    }
    writer.join().expect("writer thread");
    assert!(java.wait().expect("java exits").success(), "java failed");
    assert_eq!(answered, inputs.len(), "java answered every input");
    eprintln!("{answered} inputs, same decision as protobuf-java + JDK; outcomes: {outcomes:?}");
    assert!(
        mismatches.is_empty(),
        "differences from Java:\n{}",
        mismatches.join("\n")
    );
}
