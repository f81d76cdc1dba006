//! Replays the daemon side of recordings made with the real KCL 2.5.8 daemon against the built
//! binary: tests/transcripts/kcl258/ (copies of the shared kcl258_*.jsonl; small processors) and
//! tests/transcripts/recorded/*.jsonl (rsmld itself under the daemon, recorded by
//! scripts/e2e.sh: one file per end-to-end case). Every action the real daemon sent, in order,
//! per child process; checkpoint requests are answered by a model of the daemon's range checks.
//! rsmld must answer each action with the right status, never checkpoint outside the allowed
//! range, store SHARD_END at shard end and the last record at shutdownRequested.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{run_action, CheckpointModel, Proc};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage};

#[test]
fn real_daemon_sessions_replay_against_the_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts/kcl258");
    let mut sessions = 0;
    for path in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        sessions += replay_file(&path);
    }
    assert!(sessions >= 6, "only {sessions} recorded sessions found");
}

/// The recordings committed from the end-to-end cases (scripts/e2e.sh): rsmld under the real
/// daemon through plain and aggregated records, a shard split, SIGTERM, a SIGKILL and restart,
/// and a lease stolen by a second worker.
#[test]
fn committed_e2e_recordings_replay_against_the_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts/recorded");
    let mut files = Vec::new();
    for path in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        if path.extension().is_some_and(|e| e == "jsonl") {
            files.push(path);
        }
    }
    files.sort();
    for case in ["records", "split", "sigterm", "kill", "steal"] {
        assert!(
            files.iter().any(|p| p.file_stem().unwrap() == case),
            "no recording {case}.jsonl in {}",
            dir.display()
        );
    }
    let mut sessions = 0;
    for path in &files {
        let n = replay_file(path);
        assert!(n >= 1, "{}: no session", path.display());
        sessions += n;
    }
    assert!(sessions >= 12, "only {sessions} recorded sessions found");
}

/// Replays every child process of one recording; returns how many there were.
fn replay_file(path: &Path) -> usize {
    let mut sessions = 0;
    // One child process per (daemon worker pid, shard).
    let mut per_child: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["dir"] != "d2p" {
            continue;
        }
        let text = v["line"].as_str().unwrap().to_owned();
        if text.contains(r#""action":"checkpoint""#) {
            continue; // replies: our model answers our own requests
        }
        let key = (
            v["wpid"].as_i64().unwrap(),
            v["shard"].as_str().unwrap().to_owned(),
        );
        per_child.entry(key).or_default().push(text);
    }
    for ((_, shard), lines) in per_child {
        sessions += 1;
        let ctx = format!("{} {shard}", path.file_name().unwrap().to_string_lossy());
        let mut p = Proc::spawn(
            &[
                "--handler",
                "discard",
                "--workers",
                "2",
                "--max-in-flight",
                "0",
                "--checkpoint-interval",
                "0",
            ]
            .map(String::from),
        );
        let mut model = CheckpointModel::default();
        let mut last_delivered = None;
        for line in &lines {
            let msg = DaemonMessage::decode(line.as_bytes()).unwrap();
            match &msg {
                DaemonMessage::Initialize {
                    sequence_number,
                    sub_sequence_number,
                    ..
                } => model.initialize(
                    sequence_number.as_ref().map(|s| s.as_str()),
                    *sub_sequence_number,
                ),
                DaemonMessage::ProcessRecords { records, .. } => {
                    for r in records {
                        model.deliver(r.esn());
                        last_delivered = Some(r.esn());
                    }
                }
                DaemonMessage::ShardEnded => model.shard_ended = true,
                _ => {}
            }
            let reqs = run_action(&mut p, &mut model, line, msg.action())
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            match msg.action() {
                Action::ShardEnded => {
                    assert_eq!(reqs, vec![ProcessorMessage::checkpoint_null()], "{ctx}");
                    assert_eq!(
                        model.last.as_ref().unwrap().seq.as_str(),
                        "SHARD_END",
                        "{ctx}"
                    );
                }
                Action::ShutdownRequested | Action::ProcessRecords if last_delivered.is_some() => {
                    assert_eq!(
                        model.last, last_delivered,
                        "{ctx}: not checkpointed up to the last record"
                    );
                }
                _ => {}
            }
        }
        p.close_stdin();
        assert_eq!(
            p.wait(std::time::Duration::from_secs(5)).unwrap(),
            0,
            "{ctx}"
        );
    }
    sessions
}
