//! Failure policies and the Rust API, through the compiled-in example processor
//! (examples/json_validator.rs: items must be JSON; it prints valid ones to stdout).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::{
    batch, example_bin, limit_file_size, process_records, run_action, shutdown_requested,
    CheckpointModel, Proc,
};
use rsmld::codec::message::{Action, ProcessorMessage, Record};
use rsmld::pipeline::item::BASE64;
use rsmld::protocol::sequence::SequenceNumber;

const SHARD: &str = "shardId-000000000009";

fn seq(i: u64) -> String {
    format!("4968044549884195349469830793{:028}", i)
}

fn record(i: u64, data: &str) -> Record {
    Record {
        data: Some(BASE64.encode(data).into()),
        partition_key: format!("k{i}"),
        sequence_number: SequenceNumber::parse(&seq(i)).unwrap(),
        sub_sequence_number: Some(0),
        approximate_arrival_timestamp: None,
    }
}

fn start(extra: &[&str]) -> (Proc, CheckpointModel) {
    let mut args = common::args(&common::CHECKPOINT_EVERY_BATCH);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc::spawn_bin(&example_bin("json_validator"), &args, &[]);
    let mut model = CheckpointModel::default();
    let init = format!(
        r#"{{"action":"initialize","shardId":"{SHARD}","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}}"#
    );
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(&mut p, &mut model, &init, Action::Initialize).unwrap();
    (p, model)
}

/// The example works end to end, and its println! output never reaches the protocol:
/// every stdout line is a valid protocol message (checked strictly by run_action), and
/// the printed documents show up on stderr instead.
#[test]
fn rust_api_example_and_stdout_guard() {
    let (mut p, mut model) = start(&[]);
    let l = batch(
        &mut model,
        vec![record(1, r#"{"a":1}"#), record(2, "[true]")],
    );
    let reqs = run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), seq(2));
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);
    assert!(
        p.recv(Duration::from_millis(100)).is_err(),
        "extra stdout output"
    );
    let err = p.stderr();
    assert!(
        err.contains(&format!("valid {}/0: {{\"a\":1}}", seq(1))),
        "{err}"
    );
    assert!(
        err.contains(&format!("valid {}/0: [true]", seq(2))),
        "{err}"
    );
}

/// fail (the default): the batch with a bad item is never acknowledged or checkpointed;
/// exit 1 with a message naming the shard, the sequence number and the error.
#[test]
fn on_error_fail_stops_before_the_bad_item() {
    let (mut p, mut model) = start(&[]);
    let l = batch(&mut model, vec![record(1, "{}")]);
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    let stored_before = model.stored.clone();
    let l = batch(
        &mut model,
        vec![record(2, "{}"), record(3, "not json"), record(4, "{}")],
    );
    p.send(&l);
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 1);
    if let Ok(line) = p.recv(Duration::from_millis(100)) {
        panic!("wrote {line} after the failure");
    }
    assert_eq!(
        model.stored, stored_before,
        "nothing checkpointed after the failure"
    );
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), seq(1));
    let err = p.stderr();
    assert!(
        err.contains(SHARD) && err.contains(&seq(3)) && err.contains("not JSON"),
        "{err}"
    );
}

/// retry: the bad item is retried --retries times with backoff, then it fails as above.
#[test]
fn on_error_retry_then_fail() {
    let (mut p, mut model) = start(&[
        "--on-error",
        "retry",
        "--retries",
        "2",
        "--retry-backoff",
        "0.01",
    ]);
    let l = batch(&mut model, vec![record(1, "{}"), record(2, "nope")]);
    p.send(&l);
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 1);
    assert!(
        p.recv(Duration::from_millis(100)).is_err(),
        "acknowledged a batch that failed"
    );
    assert!(model.stored.is_empty());
    let err = p.stderr();
    assert!(
        err.contains("retry 1 of 2") && err.contains("retry 2 of 2"),
        "{err}"
    );
    assert!(err.contains(&seq(2)) && err.contains("not JSON"), "{err}");
}

/// skip: the bad item lands in the dead-letter directory with its error; the batch is
/// checkpointed through its last record; the count is logged.
#[test]
fn on_error_skip_dead_letters_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq");
    let (mut p, mut model) = start(&["--on-error", "skip", "--dead-letter", dlq.to_str().unwrap()]);
    let l = batch(
        &mut model,
        vec![
            record(1, "{}"),
            record(2, "bad one"),
            record(3, "{}"),
            record(4, "bad two"),
        ],
    );
    let reqs = run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert_eq!(
        reqs,
        vec![ProcessorMessage::Checkpoint {
            sequence_number: Some(SequenceNumber::parse(&seq(4)).unwrap()),
            sub_sequence_number: Some(0)
        }]
    );
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);
    let mut dead = Vec::new();
    for f in std::fs::read_dir(&dlq).unwrap() {
        let f = f.unwrap().path();
        assert!(
            f.file_name().unwrap().to_string_lossy().starts_with(SHARD),
            "{}",
            f.display()
        );
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let data = BASE64.decode(v["item"]["data"].as_str().unwrap()).unwrap();
            assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");
            assert_eq!(v["attempts"], 1);
            dead.push((
                v["item"]["sequenceNumber"].as_str().unwrap().to_owned(),
                String::from_utf8(data).unwrap(),
            ));
        }
    }
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (seq(2), "bad one".to_owned()),
            (seq(4), "bad two".to_owned())
        ]
    );
    assert!(p.stderr().contains("dead-lettered"), "{}", p.stderr());
}

/// A record delivered twice in one lease is skipped (default) or fatal (--on-duplicate fail).
#[test]
fn duplicates_skip_or_fail() {
    let (mut p, mut model) = start(&[]);
    let l = batch(&mut model, vec![record(1, "{}"), record(2, "{}")]);
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    let l = batch(&mut model, vec![record(2, "{}"), record(3, "{}")]);
    let reqs = run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), seq(3));
    assert_eq!(reqs.len(), 1);
    assert!(p.stderr_contains("delivered again"));
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);
    assert_eq!(
        p.stderr().matches(&format!("valid {}/0", seq(2))).count(),
        1,
        "duplicate processed twice"
    );

    let (mut p, mut model) = start(&["--on-duplicate", "fail"]);
    let l = batch(&mut model, vec![record(1, "{}")]);
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    p.send(&batch(&mut model, vec![record(1, "{}")]));
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 1);
    assert!(
        p.stderr().contains("--on-duplicate is fail"),
        "{}",
        p.stderr()
    );
}

/// A handler that cannot be interrupted and hangs past --item-timeout is fatal.
#[test]
fn watchdog_makes_an_uninterruptible_hang_fatal() {
    let mut p = Proc::spawn(
        &[
            "--handler",
            "discard",
            "--workers",
            "1",
            "--item-timeout",
            "0.2",
            "--debug-delay-ms",
            "5000",
            "--max-in-flight",
            "0",
        ]
        .map(String::from),
    );
    let mut model = CheckpointModel::default();
    let init = format!(
        r#"{{"action":"initialize","shardId":"{SHARD}","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}}"#
    );
    run_action(&mut p, &mut model, &init, Action::Initialize).unwrap();
    // The delay wrapper sleeps up to 5 s per item; with 20 items one surely exceeds 0.2 s.
    let l = batch(&mut model, (1..=20).map(|i| record(i, "{}")).collect());
    p.send(&l);
    assert_eq!(p.wait(Duration::from_secs(10)).unwrap(), 1);
    assert!(p.stderr().contains("item timeout"), "{}", p.stderr());
}

/// The production properties template configures rsmld: every rsmld.* key in it is
/// valid, and its settings arrive (flags on the command line still win).
#[test]
fn production_properties_template_configures_rsmld() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("properties/rsmld.properties.template");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "rsmld".to_owned(),
            "--properties".to_owned(),
            path.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        rsmld::cli::config::Cli::parse_with_properties(v).unwrap()
    };
    let cli = args(&[]);
    assert_eq!(cli.run.handler.as_deref(), Some("file"));
    let file = cli
        .run
        .handler_group::<rsmld::cli::registry::file::FileArgs>();
    assert_eq!(
        file.unwrap().output.as_deref(),
        Some(std::path::Path::new("/var/lib/rsmld/out"))
    );
    assert_eq!(cli.run.max_in_flight, 20000);
    assert_eq!(file.unwrap().rotate_bytes, 268435456);
    let cli = args(&[
        "--max-in-flight",
        "7",
        "--handler",
        "exec",
        "--",
        "/bin/cat",
    ]);
    assert_eq!(cli.run.max_in_flight, 7);
    assert_eq!(cli.run.handler.as_deref(), Some("exec"));
    assert_eq!(cli.run.command, vec!["/bin/cat".to_owned()]);
}

/// The KCL 2.x production template configures rsmld exactly as the KCL 3.x one does: the two
/// differ only in daemon keys (credentials provider name, the 3.x-only keys).
#[test]
fn kcl2_properties_template_configures_rsmld_like_the_kcl3_one() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("properties");
    let run = |name: &str| {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let cli = rsmld::cli::config::Cli::parse_with_properties(vec![
            "rsmld".to_owned(),
            "--properties".to_owned(),
            path.display().to_string(),
        ])
        .unwrap();
        // Everything but the file's own path and where in it each setting was.
        let mut run = cli.run;
        run.properties = None;
        run.origins.clear();
        (text, format!("{run:?}"))
    };
    let (v3, run3) = run("rsmld.properties.template");
    let (v2, run2) = run("rsmld-kcl2.properties.template");
    assert_eq!(run2, run3);
    let provider = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("AWSCredentialsProvider ="))
            .map(str::to_owned)
    };
    assert_eq!(
        provider(&v3).as_deref(),
        Some("AWSCredentialsProvider = DefaultCredentialsProvider")
    );
    assert_eq!(
        provider(&v2).as_deref(),
        Some("AWSCredentialsProvider = DefaultAWSCredentialsProviderChain")
    );
}

/// exec + watchdog + skip: a child that hangs on one item is killed after
/// --item-timeout; the items it had not acknowledged are dead-lettered, the child is
/// restarted, and processing and checkpointing go on.
#[test]
fn exec_watchdog_kills_a_hung_child_and_the_policy_applies() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq");
    let script = dir.path().join("handler.sh");
    std::fs::write(&script, "#!/bin/sh\nn=0\nwhile IFS= read -r item; do\n  n=$((n+1))\n  case \"$item\" in *aGFuZw==*) sleep 30;; esac\n  echo \"ok $n\"\ndone\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut p = Proc::spawn(
        &[
            "--handler",
            "exec",
            "--workers",
            "1",
            "--item-timeout",
            "0.5",
            "--on-error",
            "skip",
            "--dead-letter",
            dlq.to_str().unwrap(),
            "--checkpoint-interval",
            "0",
            "--max-in-flight",
            "0",
            "--",
            script.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let mut model = CheckpointModel::default();
    let init = format!(
        r#"{{"action":"initialize","shardId":"{SHARD}","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}}"#
    );
    run_action(&mut p, &mut model, &init, Action::Initialize).unwrap();
    // "hang" is aGFuZw== in base64.
    let l = batch(
        &mut model,
        vec![record(1, "ok"), record(2, "hang"), record(3, "ok")],
    );
    let reqs = run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), seq(3));
    let l = batch(&mut model, vec![record(4, "ok")]);
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert_eq!(
        model.last.as_ref().unwrap().seq.as_str(),
        seq(4),
        "a restarted child processes the next batch"
    );
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);
    let dead: Vec<serde_json::Value> = std::fs::read_dir(&dlq)
        .unwrap()
        .flat_map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let dead_seqs: Vec<&str> = dead
        .iter()
        .map(|v| v["item"]["sequenceNumber"].as_str().unwrap())
        .collect();
    assert!(dead_seqs.contains(&seq(2).as_str()), "{dead:?}");
    assert!(
        !dead_seqs.contains(&seq(1).as_str()),
        "an acknowledged item was dead-lettered: {dead:?}"
    );
    assert!(
        dead.iter().all(|v| v["error"]
            .as_str()
            .unwrap()
            .contains("killed after timeout")),
        "{dead:?}"
    );
    assert!(p.stderr().contains("item timeout"), "{}", p.stderr());
}

// ---------------------------------------------------------------- dead letters on disk

/// An exec child that answers `err N boom` for every item: everything is dead-lettered.
const FAIL_SH: &str = r#"n=0; while IFS= read -r item; do n=$((n+1)); echo "err $n boom"; done"#;

/// rsmld with the `handler` flags under `--on-error skip --dead-letter DL`: one worker,
/// synchronous (`--max-in-flight 0`), a checkpoint per batch.
fn dead_letter_rsmld(handler: &[&str], dl: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(common::rsmld_bin());
    cmd.args(handler).args([
        "--workers",
        "1",
        "--on-error",
        "skip",
        "--dead-letter",
        dl.to_str().unwrap(),
        "--max-in-flight",
        "0",
        "--checkpoint-interval",
        "0",
    ]);
    cmd
}

/// [`dead_letter_rsmld`] with `--handler exec` running [`FAIL_SH`].
fn dead_letter_command(dl: &std::path::Path) -> std::process::Command {
    let mut cmd = dead_letter_rsmld(&["--handler", "exec"], dl);
    cmd.args(["--", "sh", "-c", FAIL_SH]);
    cmd
}

/// The record index of a sequence number made by `common::seq`.
fn index_of(seq: &str) -> u64 {
    seq[seq.len() - 27..].parse().unwrap()
}

/// The item indexes in the dead-letter files directly under `dir` (none if it is gone).
/// Every complete line must be a dead letter; a torn last line (no newline) is ignored.
fn dead_letter_indexes(dir: &std::path::Path) -> std::collections::BTreeSet<u64> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let complete = &bytes[..bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
        for l in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "{}: not a dead letter ({e}): {:?}",
                    path.display(),
                    String::from_utf8_lossy(l)
                )
            });
            assert!(v["error"].as_str().unwrap().ends_with("boom"), "{v}");
            out.insert(index_of(v["item"]["sequenceNumber"].as_str().unwrap()));
        }
    }
    out
}

/// How a dead-letter run ended.
struct DeadLetterRun {
    exit: i32,
    stderr: String,
    /// The highest record index an accepted checkpoint covers (0: none).
    checkpointed: u64,
    /// Dead letters under the directory just before the fault.
    kept: std::collections::BTreeSet<u64>,
}

/// Feeds `batches` batches of 10 records (indexes from `first`) to `cmd` initialized for
/// `shard`, calling `fault` after batch `fault_after`; then shutdownRequested and EOF.
fn run_dead_letters(
    cmd: std::process::Command,
    shard: &str,
    first: u64,
    batches: u64,
    fault_after: u64,
    fault: &mut dyn FnMut() -> std::collections::BTreeSet<u64>,
) -> DeadLetterRun {
    let mut p = Proc::from_command(cmd);
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(
        &mut p,
        &mut model,
        &common::init_line_at(shard, "TRIM_HORIZON"),
        Action::Initialize,
    )
    .unwrap();
    let mut kept = std::collections::BTreeSet::new();
    for b in 0..batches {
        let records: Vec<Record> = (first + b * 10..first + (b + 1) * 10)
            .map(|i| common::record_with_text(i, "k", &format!("item {i}")))
            .collect();
        if process_records(&mut p, &mut model, records).is_err() {
            break;
        }
        if b + 1 == fault_after {
            kept = fault();
        }
    }
    let _ = shutdown_requested(&mut p, &mut model);
    p.close_stdin();
    let exit = p.wait(Duration::from_secs(30)).unwrap();
    DeadLetterRun {
        exit,
        stderr: p.stderr(),
        checkpointed: model.stored.last().map_or(0, |e| index_of(e.seq.as_str())),
        kept,
    }
}

/// A dead-lettered item counts as done, so the dead letter must be on disk at the path:
/// `rm -rf DL` (or of its parent) after batch 5 of 20 fails the next batch even under
/// `--on-error skip` — a dead-letter failure never counts an item — so rsmld exits 1
/// with a clear error, the checkpoint stays at item 50, and every checkpointed item was
/// in a dead-letter file when the directory was removed. Before, rsmld exited 0 with a
/// checkpoint at 200: 150 checkpointed items in no file.
#[test]
fn a_removed_dead_letter_directory_fails_the_batch_under_skip() {
    for parent in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let dl = if parent {
            root.path().join("d/dl")
        } else {
            root.path().join("dl")
        };
        let doomed = if parent {
            root.path().join("d")
        } else {
            dl.clone()
        };
        let mut fault = || {
            let kept = dead_letter_indexes(&dl);
            std::fs::remove_dir_all(&doomed).unwrap();
            kept
        };
        let o = run_dead_letters(dead_letter_command(&dl), SHARD, 1, 20, 5, &mut fault);
        let ctx = format!("parent removed: {parent}\n{}", o.stderr);
        let lost: Vec<u64> = (1..=o.checkpointed)
            .filter(|i| !o.kept.contains(i))
            .collect();
        assert!(lost.is_empty(), "checkpointed, in no file: {lost:?}; {ctx}");
        assert_eq!(o.exit, 1, "{ctx}");
        assert_eq!(o.checkpointed, 50, "{ctx}");
        assert_eq!(o.kept, (1..=50).collect(), "{ctx}");
        let error = o
            .stderr
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("dead-letter"))
            .unwrap_or_else(|| panic!("no error line: {ctx}"));
        assert!(
            error.contains(&format!(
                "dead-letter directory {} was removed",
                dl.display()
            )),
            "{ctx}"
        );
        assert!(!dl.exists(), "the dead-letter directory was recreated");
    }
}

/// A dead-letter file with a torn last line (a write cut short by SIGKILL) is never
/// continued: the next run writes fresh files, so every complete line is one whole dead
/// letter. Before, the next run appended to the same file and glued its first dead
/// letter to the torn line.
#[test]
fn a_torn_dead_letter_tail_is_never_continued() {
    let root = tempfile::tempdir().unwrap();
    let dl = root.path().join("dl");
    let o = run_dead_letters(dead_letter_command(&dl), SHARD, 1, 2, 0, &mut no_fault);
    assert_eq!((o.exit, o.checkpointed), (0, 20), "{}", o.stderr);
    let files: Vec<_> = std::fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&files[0])
        .unwrap();
    std::io::Write::write_all(&mut torn, br#"{"item":{"shardId":"shardId-0"#).unwrap();
    drop(torn);
    let o = run_dead_letters(dead_letter_command(&dl), SHARD, 21, 2, 0, &mut no_fault);
    assert_eq!((o.exit, o.checkpointed), (0, 40), "{}", o.stderr);
    assert_eq!(dead_letter_indexes(&dl), (1..=40).collect(), "{}", o.stderr);
    for f in std::fs::read_dir(&dl).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        assert!(
            name.starts_with(&format!("{SHARD}.")) && name.ends_with(".w0.deadletter.jsonl"),
            "{name}"
        );
    }
}

/// A hostile `initialize` whose shardId is an absolute path (or climbs with `..`) cannot
/// put dead letters outside the dead-letter directory: the shard id is made safe for a
/// file name exactly as the archive does it. Before, the dead letters went to
/// `<shardId>.worker-0.deadletter.jsonl` wherever that path pointed.
#[test]
fn a_hostile_shard_id_keeps_dead_letters_in_their_directory() {
    let root = tempfile::tempdir().unwrap();
    let dl = root.path().join("dl");
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for shard in [
        format!("{}/evil", outside.display()),
        "../outside/evil".to_owned(),
    ] {
        let o = run_dead_letters(dead_letter_command(&dl), &shard, 1, 1, 0, &mut no_fault);
        assert_eq!((o.exit, o.checkpointed), (0, 10), "{shard}: {}", o.stderr);
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{shard}: dead letters written outside {}",
            dl.display()
        );
        assert!(!root
            .path()
            .join("outside/evil.worker-0.deadletter.jsonl")
            .exists());
    }
    let names: Vec<String> = std::fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with('_') && !n.contains('/')),
        "{names:?}"
    );
    assert_eq!(dead_letter_indexes(&dl), (1..=10).collect());
}

/// Under a file size limit (RLIMIT_FSIZE, SIGXFSZ at its default) the dead-letter write
/// that crosses it fails the batch: exit 1, one error line naming the file and the limit
/// (once), nothing checkpointed that is not in a file. A restart starts a new file, so it
/// makes progress instead of failing at once on the full file every time. Before, the
/// restart reopened the full file and failed at its first dead letter.
#[test]
fn a_dead_letter_file_at_the_size_limit_fails_the_batch_and_a_restart_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let dl = root.path().join("dl");
    let limited = || {
        let mut cmd = dead_letter_command(&dl);
        limit_file_size(&mut cmd, 16 << 10);
        cmd
    };
    let mut last = 0;
    for run in 0..2u64 {
        let first = 1 + run * 1000;
        let o = run_dead_letters(limited(), SHARD, first, 40, 0, &mut no_fault);
        let ctx = format!("run {run}:\n{}", o.stderr);
        assert_eq!(o.exit, 1, "{ctx}");
        assert!(
            o.checkpointed >= first + 9 && o.checkpointed < first + 399,
            "no progress: checkpointed {} ({ctx})",
            o.checkpointed
        );
        let present = dead_letter_indexes(&dl);
        let missing: Vec<u64> = (first..=o.checkpointed)
            .filter(|i| !present.contains(i))
            .collect();
        assert!(missing.is_empty(), "{missing:?} {ctx}");
        // The failed write was cut back: no file ends in a torn line.
        for f in std::fs::read_dir(&dl).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(
                bytes.is_empty() || bytes.ends_with(b"\n"),
                "torn tail ({ctx})"
            );
        }
        let error = o
            .stderr
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("File too large"))
            .unwrap_or_else(|| panic!("no error line ({ctx})"));
        assert_eq!(error.matches("File too large").count(), 1, "{error}");
        assert!(
            error.contains("RLIMIT_FSIZE")
                && error.contains("16384 bytes")
                && error.contains(".deadletter.jsonl"),
            "{error}"
        );
        last = o.checkpointed;
    }
    assert!(last > 1000);
}

/// No fault: the dead letters are left alone.
fn no_fault() -> std::collections::BTreeSet<u64> {
    std::collections::BTreeSet::new()
}

/// The same fault with the file handler and the dead letters inside its output directory
/// (`--output D --dead-letter D/dl`, then `rm -rf D`): the archive write fails, so under
/// skip the items are dead-lettered — into a removed directory, which fails the batch.
/// rsmld exits 1 and nothing after the fault is checkpointed. Before, the dead letters
/// went into the removed directory and rsmld checkpointed everything.
#[test]
fn skip_cannot_count_items_whose_archive_and_dead_letters_were_removed() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("d");
    let dl = out.join("dl");
    let cmd = dead_letter_rsmld(
        &["--handler", "file", "--output", out.to_str().unwrap()],
        &dl,
    );
    let mut fault = || {
        std::fs::remove_dir_all(&out).unwrap();
        no_fault()
    };
    let o = run_dead_letters(cmd, SHARD, 1, 20, 5, &mut fault);
    assert_eq!((o.exit, o.checkpointed), (1, 50), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "dead-letter directory {} was removed",
            dl.display()
        )),
        "{}",
        o.stderr
    );
}

/// Runs the example with `args` (stdin closed) and returns (exit code, stdout, stderr).
fn run_example(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(example_bin("json_validator"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The custom binary names itself: its own description and flag group in `--help`, its
/// own name and version in `--version`, not rsmld's.
#[test]
fn custom_binary_names_itself_in_help_and_version() {
    let (code, version, _) = run_example(&["--version"]);
    assert_eq!(
        (code, version.as_str()),
        (
            0,
            format!("json_validator {}\n", env!("CARGO_PKG_VERSION")).as_str()
        )
    );
    let (code, help, err) = run_example(&["--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        help.starts_with(
            "json_validator: a KCL record processor that checks every item is a JSON document.\n"
        ),
        "{help}"
    );
    assert!(!help.contains("rsmld: a record processor"), "{help}");
    assert!(
        help.contains("\nJSON validator:\n      --json-require <FIELD>\n"),
        "{help}"
    );
    assert!(
        help.contains("- json:    Every item must be a JSON document"),
        "{help}"
    );
    assert!(help.contains("[default: json]"), "{help}");
}

/// Sends one batch of `{"id":1}` then `{"a":1}` to a started example: the first record
/// is checkpointed, the second fails the lease (exit 1) for its missing field.
fn second_record_lacks_the_field(mut p: Proc, mut model: CheckpointModel) {
    let l = batch(&mut model, vec![record(1, r#"{"id":1}"#)]);
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    let l = batch(&mut model, vec![record(2, r#"{"a":1}"#)]);
    p.send(&l);
    assert_eq!(p.wait(Duration::from_secs(10)).unwrap(), 1);
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), seq(1));
    let err = p.stderr();
    assert!(err.contains(r#"no field "id""#), "{err}");
}

/// The custom binary's own flag reaches its handler.
#[test]
fn custom_binary_flag_reaches_its_handler() {
    let (p, model) = start(&["--json-require", "id"]);
    second_record_lacks_the_field(p, model);
}

/// The custom binary's `rsmld.json.*` key is read from `--properties`, and its `check`
/// accepts the file (rsmld's own `check` does not know the key).
#[test]
fn custom_binary_reads_its_key_from_properties() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.properties");
    let exe = example_bin("json_validator");
    let lines = [
        format!(
            "executableName = {} --properties {}",
            exe.display(),
            path.display()
        ),
        "applicationName = app".into(),
        "streamName = s".into(),
        "AwsCredentialsProvider = DefaultCredentialsProvider".into(),
        "workerId = host-1".into(),
        "shutdownGraceMillis = 30000".into(),
        "callProcessRecordsEvenForEmptyRecordList = true".into(),
        "rsmld.json.require = id".into(),
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let path_s = path.display().to_string();

    let (code, _, err) = run_example(&["check", "--properties", &path_s]);
    assert_eq!(
        (code, err.as_str()),
        (0, format!("{path_s}: ok for KCL 3.x\n").as_str())
    );
    let rsmld = std::process::Command::new(common::rsmld_bin())
        .args(["check", "--properties", &path_s])
        .output()
        .unwrap();
    let rsmld_err = String::from_utf8_lossy(&rsmld.stderr);
    assert_eq!(rsmld.status.code(), Some(1), "{rsmld_err}");
    assert!(rsmld_err.contains("rsmld.json.require"), "{rsmld_err}");

    let (p, model) = start(&["--properties", &path_s]);
    second_record_lacks_the_field(p, model);

    // A value its handler refuses is named by its key, file and line, once.
    let bad = lines[..7].join("\n") + "\nrsmld.json.require =\n";
    std::fs::write(&path, bad).unwrap();
    let (code, _, err) = run_example(&["--properties", &path_s]);
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            format!("rsmld[-] ERROR {path_s}:8: rsmld.json.require needs a field name\n").as_str()
        )
    );
}
