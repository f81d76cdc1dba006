//! The built binary under a daemon model: checkpoints never pass unwritten items,
//! backpressure, prompt exit, failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{
    args, init_line, line, process_records, record, run_action, seq, shutdown_requested,
    start_checkpointing, start_file_handler, written, written_so_far, CheckpointModel, Proc,
};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::protocol::sequence::{Esn, SequenceNumber};

/// 3 workers, random per-item delays, completions out of order: every checkpoint the
/// binary sends covers only records the file handler had already written; at the end
/// every record is written once, per-key order holds in each file, and the final
/// checkpoints are the last record and SHARD_END.
#[test]
fn checkpoints_cover_only_written_items() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, mut model) = start_file_handler(
        &out,
        &[
            "--workers",
            "3",
            "--max-in-flight",
            "150",
            "--checkpoint-interval",
            "0",
            "--debug-delay-ms",
            "3",
        ],
        &[],
    );

    let keys: Vec<String> = (0..11).map(|k| format!("key-{k}")).collect();
    let mut delivered: Vec<(u64, String)> = Vec::new();
    let mut checkpoints = 0;
    let mut n = 0u64;
    for batch in 0..25 {
        let records: Vec<Record> = (0..40)
            .map(|j| {
                n += 1;
                let key = &keys[((n * 7 + j) % keys.len() as u64) as usize];
                delivered.push((n, key.clone()));
                record(n, key)
            })
            .collect();
        model.deliver_all(&records);
        p.send(&line(&DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: Some(0),
        }));
        loop {
            let got = p.recv(Duration::from_secs(20)).unwrap();
            match ProcessorMessage::decode(got.as_bytes()).unwrap() {
                ProcessorMessage::Status { response_for } => {
                    assert_eq!(response_for, Action::ProcessRecords);
                    break;
                }
                req @ ProcessorMessage::Checkpoint { .. } => {
                    let ProcessorMessage::Checkpoint {
                        sequence_number: Some(s),
                        sub_sequence_number: Some(0),
                    } = &req
                    else {
                        panic!("batch {batch}: checkpoint without a position: {got}");
                    };
                    // The workers may be appending later items right now.
                    let on_disk: HashSet<String> = written_so_far(&out)
                        .into_iter()
                        .map(|(_, v)| v["sequenceNumber"].as_str().unwrap().to_owned())
                        .collect();
                    let at = Esn::new(s.clone(), 0);
                    for (i, _) in &delivered {
                        let esn = Esn::new(SequenceNumber::parse(&seq(*i)).unwrap(), 0);
                        if esn <= at {
                            assert!(
                                on_disk.contains(&seq(*i)),
                                "checkpoint {at} covers record {i}, which is not on disk"
                            );
                        }
                    }
                    checkpoints += 1;
                    let (reply, error) = model.answer(&req);
                    assert_eq!(error, None, "{got}");
                    p.send(&reply);
                }
            }
        }
    }
    assert!(
        checkpoints >= 5,
        "only {checkpoints} checkpoints in 25 batches"
    );

    let reqs = shutdown_requested(&mut p, &mut model).unwrap();
    assert_eq!(
        reqs.last(),
        Some(&ProcessorMessage::Checkpoint {
            sequence_number: Some(SequenceNumber::parse(&seq(n)).unwrap()),
            sub_sequence_number: Some(0),
        })
    );
    model.shard_ended = true;
    let reqs = run_action(
        &mut p,
        &mut model,
        r#"{"action":"shardEnded"}"#,
        Action::ShardEnded,
    )
    .unwrap();
    assert_eq!(reqs, vec![ProcessorMessage::checkpoint_null()]);
    assert_eq!(model.stored.last().unwrap().seq.as_str(), "SHARD_END");
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);

    // Everything written exactly once; per key, one file and delivery order.
    let lines = written(&out);
    assert_eq!(lines.len(), delivered.len());
    let mut per_key: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (file, v) in &lines {
        let s = v["sequenceNumber"].as_str().unwrap();
        let i: u64 = s[s.len() - 27..].parse().unwrap();
        per_key
            .entry(v["partitionKey"].as_str().unwrap().to_owned())
            .or_default()
            .push((file.clone(), i));
        assert_eq!(v["shardId"], "shardId-000000000007");
        assert_eq!(v["userTotal"], 1);
    }
    for (key, seen) in per_key {
        let files: HashSet<_> = seen.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(files.len(), 1, "{key} spread over {files:?}");
        let order: Vec<u64> = seen.iter().map(|(_, i)| *i).collect();
        let expected: Vec<u64> = delivered
            .iter()
            .filter(|(_, k)| *k == key)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(order, expected, "{key} out of order");
    }
}

/// What a reader sees of a file while a line is being appended: the whole lines, not the
/// visible part of the unfinished one (which `written` would fail to parse); a whole line
/// that is not JSON still fails.
#[test]
fn written_so_far_leaves_out_only_the_unfinished_tail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w0"),
        "{\"sequenceNumber\":\"1\"}\n{\"sequenceNumber\":\"2\"}\n{\"sequenceNum",
    )
    .unwrap();
    let got: Vec<String> = written_so_far(dir.path())
        .into_iter()
        .map(|(_, v)| v["sequenceNumber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["1", "2"]);
    std::fs::write(dir.path().join("w1"), "{\"sequenceNum\n").unwrap();
    let torn = std::panic::catch_unwind(|| written_so_far(dir.path()));
    assert!(torn.is_err(), "a torn whole line must not pass");
}

/// With --max-in-flight 5, processRecords answers only when at most 5 items are
/// unfinished: at least 45 of 50 slow items are on disk when status arrives.
#[test]
fn backpressure_holds_status_until_in_flight_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, mut model) = start_file_handler(
        &out,
        &[
            "--workers",
            "2",
            "--max-in-flight",
            "5",
            "--checkpoint-interval",
            "3600",
            "--debug-delay-ms",
            "10",
        ],
        &[],
    );
    let records: Vec<Record> = (1..=50)
        .map(|i| record(i, &format!("k{}", i % 4)))
        .collect();
    let l = line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: None,
    });
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    let on_disk = written_so_far(&out).len(); // the last items may be being written
    assert!(
        on_disk >= 45,
        "status answered with {} items unfinished",
        50 - on_disk
    );
}

/// Stdin EOF with slow work queued: exit 0 at once, queued items dropped (never
/// checkpointed), no thread keeps the process alive.
#[test]
fn exits_promptly_on_eof_with_work_queued() {
    let mut p = Proc::spawn(&args(&[
        "--handler",
        "discard",
        "--workers",
        "2",
        "--debug-delay-ms",
        "200",
    ]));
    let mut model = CheckpointModel::default();
    run_action(&mut p, &mut model, &init_line(), Action::Initialize).unwrap();
    let records: Vec<Record> = (1..=400).map(|i| record(i, &format!("k{i}"))).collect();
    let l = line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: None,
    });
    let reqs = run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert!(reqs.is_empty());
    p.close_stdin();
    // 400 items x ~100 ms / 2 workers would be ~20 s; exiting must not wait for them.
    assert_eq!(p.wait(Duration::from_secs(3)).unwrap(), 0);
}

// A handler that fails to write mid-stream: see tests/it/file_archive.rs
// (a_failing_write_is_a_worker_failure, using RLIMIT_FSIZE).

/// A handler that cannot start (the output directory cannot be created) stops rsmld with a
/// clear message and no status (since the start-up prerequisites: before it reads stdin;
/// see tests/it/prerequisites.rs).
#[test]
fn handler_start_failure_is_reported_at_initialize() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = blocker.join("out");
    let mut p = Proc::spawn(&args(&[
        "--handler",
        "file",
        "--output",
        out.to_str().unwrap(),
    ]));
    p.send(&init_line());
    assert_eq!(
        p.wait(Duration::from_secs(5)).unwrap(),
        2,
        "a prerequisite is a configuration error"
    );
    assert!(
        p.recv(Duration::from_millis(200)).is_err(),
        "status sent despite the failure"
    );
    assert!(
        p.stderr()
            .contains("does not exist and cannot be created: ")
            && p.stderr().contains("/file is not a directory"),
        "{}",
        p.stderr()
    );
}

/// A 66 MiB processRecords line goes through the binary and its record reaches the file.
#[test]
fn huge_lines_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, mut model) = start_file_handler(&out, &["--max-in-flight", "0"], &[]);
    let mut r = record(1, "k");
    r.data = Some("QUFB".repeat((66 << 20) / 4).into());
    let l = line(&DaemonMessage::ProcessRecords {
        records: vec![r],
        millis_behind_latest: None,
    });
    assert!(l.len() > 64 << 20);
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    let lines = written(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1["data"].as_str().unwrap().len(), 66 << 20);
}

// ------------------------------------------------ record order, echoes, base64 (issue 10)

fn records_line(records: Vec<Record>) -> String {
    line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: Some(0),
    })
}

/// Every protocol line rsmld writes until its stdout closes.
fn remaining_lines(p: &mut Proc) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(l) = p.recv(Duration::from_secs(2)) {
        out.push(l);
    }
    out
}

fn items_on_disk(out: &std::path::Path) -> usize {
    if out.exists() {
        written(out).len()
    } else {
        0
    }
}

/// Sends `l` as line 2 of a fresh rsmld (`extra` flags): it must exit non-zero without
/// any protocol output (no checkpoint, no status) and without writing anything, naming
/// line 2 and each of `texts` on stderr.
fn assert_rejected(extra: &[&str], l: &str, texts: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, _) = start_checkpointing(&out, extra);
    p.send(l);
    let rc = p.wait(Duration::from_secs(10)).unwrap();
    assert_ne!(rc, 0, "rsmld accepted {}", &l[..l.len().min(300)]);
    let rest = remaining_lines(&mut p);
    assert!(rest.is_empty(), "protocol output: {rest:?}");
    let stderr = p.stderr();
    assert!(stderr.contains("daemon line 2"), "{stderr}");
    for text in texts {
        assert!(stderr.contains(text), "no {text:?} in:\n{stderr}");
    }
    assert_eq!(items_on_disk(&out), 0, "{extra:?}: items were processed");
}

/// Records 5, 3, 4 in one batch: 3 and 4 were never delivered, so the batch is a
/// protocol error — nothing is processed or checkpointed (today's main skipped 3 and 4
/// as duplicates and checkpointed 5).
#[test]
fn records_that_go_backwards_are_a_protocol_error() {
    let l = records_line(vec![record(5, "a"), record(3, "b"), record(4, "c")]);
    assert_rejected(&[], &l, &["goes backwards", &format!("{}/0", seq(3))]);
}

/// A sentinel as a record's sequence number, or a negative sub-sequence number: a
/// protocol error (today's main took a SHARD_END record as the position, asked for a
/// SHARD_END checkpoint inside processRecords and skipped every later record).
#[test]
fn sentinels_and_negative_subs_are_not_record_positions() {
    for sentinel in ["SHARD_END", "LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"] {
        let mut bad = record(2, "b");
        bad.sequence_number = SequenceNumber::parse(sentinel).unwrap();
        let l = records_line(vec![record(1, "a"), bad, record(3, "c")]);
        assert_rejected(&[], &l, &["sentinel", sentinel]);
    }
    let mut bad = record(1, "a");
    bad.sub_sequence_number = Some(-1);
    let l = records_line(vec![bad, record(2, "b")]);
    assert_rejected(&[], &l, &["negative sub-sequence number"]);
}

/// `data` that is not base64 is a protocol error in every --split mode, also in those
/// that never decode a plain payload (none, kpl) or would deliver it whole (the others).
#[test]
fn invalid_base64_is_a_protocol_error_whatever_the_split_mode() {
    for split in ["none", "kpl", "lines", "json-array", "cloudwatch-logs"] {
        for data in ["cGF5bG9hZA", "not base64!", "84maw!!!", "aGk=aGk="] {
            let mut bad = record(2, "b");
            bad.data = Some(data.into());
            let l = records_line(vec![record(1, "a"), bad, record(3, "c")]);
            assert_rejected(
                &["--split", split],
                &l,
                &["not valid base64", &format!("{}/0", seq(2))],
            );
        }
    }
}

/// An exact re-delivery (the same sequence and sub-sequence numbers, also of a record a
/// checkpoint already covers) is skipped: every record is written once and the
/// checkpoint moves on to the new record. Under --on-duplicate fail it stops rsmld before
/// anything of the batch is processed.
#[test]
fn an_exact_redelivery_is_skipped_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, mut model) = start_checkpointing(&out, &[]);
    let first = vec![record(1, "a"), record(2, "b")];
    process_records(&mut p, &mut model, first).unwrap();
    let again = vec![record(1, "a"), record(2, "b"), record(3, "c")];
    process_records(&mut p, &mut model, again).unwrap();
    assert_eq!(
        model.stored.last().map(|e| e.seq.as_str().to_owned()),
        Some(seq(3))
    );
    let mut on_disk: Vec<String> = written(&out)
        .into_iter()
        .map(|(_, v)| v["sequenceNumber"].as_str().unwrap().to_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, vec![seq(1), seq(2), seq(3)]);
    assert_eq!(
        p.stderr().matches("delivered again").count(),
        2,
        "{}",
        p.stderr()
    );
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, mut model) = start_checkpointing(&out, &["--on-duplicate", "fail"]);
    let first = vec![record(1, "a"), record(2, "b")];
    process_records(&mut p, &mut model, first).unwrap();
    p.send(&records_line(vec![record(2, "b"), record(3, "c")]));
    assert_ne!(p.wait(Duration::from_secs(10)).unwrap(), 0);
    assert!(remaining_lines(&mut p).is_empty());
    let stderr = p.stderr();
    assert!(stderr.contains("daemon line 4"), "{stderr}"); // line 3: the checkpoint reply
    assert!(stderr.contains("--on-duplicate is fail"), "{stderr}");
    assert_eq!(items_on_disk(&out), 2, "record 3 was processed");
}

/// A checkpoint reply that does not echo the request — another sequence number, another
/// sub-sequence number, a success or an error — stops rsmld: no status, no further
/// checkpoint (today's main logged a warning and counted the checkpoint as stored).
#[test]
fn a_checkpoint_reply_that_does_not_echo_stops_rsmld() {
    for (reply_seq, reply_sub, error) in [
        (Some(seq(1)), Some(0), None),
        (Some(seq(2)), Some(1), None),
        (None, None, None),
        (Some(seq(1)), Some(0), Some("ThrottlingException")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (mut p, _) = start_checkpointing(&out, &[]);
        p.send(&records_line(vec![record(1, "a"), record(2, "b")]));
        let got = p.recv(Duration::from_secs(10)).unwrap();
        assert_eq!(
            ProcessorMessage::decode(got.as_bytes()).unwrap(),
            ProcessorMessage::Checkpoint {
                sequence_number: Some(SequenceNumber::parse(&seq(2)).unwrap()),
                sub_sequence_number: Some(0),
            }
        );
        p.send(
            &serde_json::json!({
                "action": "checkpoint",
                "sequenceNumber": reply_seq,
                "subSequenceNumber": reply_sub,
                "error": error,
            })
            .to_string(),
        );
        assert_ne!(p.wait(Duration::from_secs(10)).unwrap(), 0);
        let rest = remaining_lines(&mut p);
        assert!(rest.is_empty(), "{reply_seq:?}/{reply_sub:?}: {rest:?}");
        let stderr = p.stderr();
        assert!(stderr.contains("daemon line 3"), "{stderr}");
        assert!(stderr.contains("does not echo the request"), "{stderr}");
    }
}
