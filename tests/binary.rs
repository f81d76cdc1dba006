//! The built binary under a daemon model: checkpoints never pass unwritten items,
//! backpressure, prompt exit, failures.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{
    args, init_line, line, record, run_action, seq, start_file_handler, written, CheckpointModel,
    Proc,
};
use rsmld::protocol::message::{Action, DaemonMessage, ProcessorMessage, Record};
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
                    let on_disk: HashSet<String> = written(&out)
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

    let reqs = run_action(
        &mut p,
        &mut model,
        r#"{"action":"shutdownRequested"}"#,
        Action::ShutdownRequested,
    )
    .unwrap();
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
    let on_disk = written(&out).len();
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

// A handler that fails to write mid-stream: see tests/file_archive.rs
// (a_failing_write_is_a_worker_failure, using RLIMIT_FSIZE).

/// A handler that cannot start (the output directory cannot be created) stops rsmld with a
/// clear message and no status (since the start-up prerequisites: before it reads stdin;
/// see tests/prerequisites.rs).
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
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 1);
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
