//! Failure policies and the Rust API, through the compiled-in example processor
//! (examples/json_validator.rs: items must be JSON; it prints valid ones to stdout).

mod common;

use std::time::Duration;

use base64::Engine;
use common::{example_bin, run_action, CheckpointModel, Proc};
use rsmld::item::BASE64;
use rsmld::protocol::message::{Action, DaemonMessage, ProcessorMessage, Record};
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
    let mut args: Vec<String> = [
        "--workers",
        "2",
        "--checkpoint-interval",
        "0",
        "--max-in-flight",
        "0",
    ]
    .map(String::from)
    .to_vec();
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

fn batch(model: &mut CheckpointModel, records: Vec<Record>) -> String {
    model.deliver_all(&records);
    serde_json::to_string(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: None,
    })
    .unwrap()
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
        rsmld::config::Cli::parse_with_properties(v).unwrap()
    };
    let cli = args(&[]);
    assert_eq!(cli.run.handler, Some(rsmld::config::HandlerKind::File));
    assert_eq!(
        cli.run.output.as_deref(),
        Some(std::path::Path::new("/var/lib/rsmld/out"))
    );
    assert_eq!(cli.run.max_in_flight, 20000);
    assert_eq!(cli.run.rotate_bytes, 268435456);
    let cli = args(&[
        "--max-in-flight",
        "7",
        "--handler",
        "exec",
        "--",
        "/bin/cat",
    ]);
    assert_eq!(cli.run.max_in_flight, 7);
    assert_eq!(cli.run.handler, Some(rsmld::config::HandlerKind::Exec));
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
        let cli = rsmld::config::Cli::parse_with_properties(vec![
            "rsmld".to_owned(),
            "--properties".to_owned(),
            path.display().to_string(),
        ])
        .unwrap();
        // Everything but the file's own path.
        let mut run = cli.run;
        run.properties = None;
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
