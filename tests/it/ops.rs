//! What an operator sees of a running child: the metrics file of `--metrics-dir` (parsed
//! by the Prometheus Python client, not by rsmld's code) and the log lines at the default
//! level, `--log-level`, `--log-format json` and the progress line — all from the built
//! binary under the daemon model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    args, lease_lost, line, record, run_action, shutdown_requested, CheckpointModel, Proc, SHARD7,
};
use rsmld::codec::message::{Action, DaemonMessage, Record};
use rsmld::testkit::encode::process_records;

use rsmld::testkit::tools::metrics_python;

/// `(sample name, labels other than application/shard) -> value` of a metrics file, as
/// scripts/prom_parse.py (prometheus_client's parser) reads it; every sample must carry
/// this lease's labels.
fn parse(python: &Path, text: &str) -> Vec<(String, serde_json::Value, f64)> {
    let families = rsmld::testkit::tools::prom_parse(python, text);
    let mut samples = Vec::new();
    for f in &families {
        for s in f["samples"].as_array().unwrap() {
            let labels = s["labels"].clone();
            assert_eq!(labels["shard"], SHARD7, "{s}");
            assert_eq!(labels["application"], "", "{s}");
            samples.push((
                s["name"].as_str().unwrap().to_owned(),
                labels,
                s["value"].as_f64().unwrap(),
            ));
        }
    }
    samples
}

fn value(samples: &[(String, serde_json::Value, f64)], name: &str, extra: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, labels, _)| n == name && extra.iter().all(|(k, v)| labels[*k] == *v))
        .unwrap_or_else(|| panic!("no {name} {extra:?} in {samples:?}"))
        .2
}

fn prom_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn records(from: u64, n: u64) -> Vec<Record> {
    (from..from + n)
        .map(|i| record(i, &format!("k{}", i % 3)))
        .collect()
}

/// `--metrics-dir`: while the lease runs its file holds the counts of what was sent
/// (records, items completed, the daemon's lag, nothing in flight once all completed,
/// checkpoints stored, time waited under backpressure); once the lease ended the file is
/// gone, and no temporary file is left.
#[test]
fn the_metrics_file_counts_the_lease_and_goes_with_it() {
    let Some(python) = metrics_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("textfile");
    std::fs::create_dir(&metrics).unwrap();
    let mut p = Proc::spawn(&args(&[
        "--handler",
        "discard",
        "--workers",
        "2",
        "--max-in-flight",
        "5",
        "--debug-delay-ms",
        "5",
        "--checkpoint-interval",
        "0s",
        "--metrics-dir",
        metrics.to_str().unwrap(),
        "--metrics-interval",
        "100ms",
    ]));
    let mut model = rsmld::testkit::transcript::initialize(&mut p).unwrap();
    let (batches, per_batch) = (4u64, 20u64);
    for b in 0..batches {
        let recs = records(1 + b * per_batch, per_batch);
        model.deliver_all(&recs);
        let l = line(&process_records(recs, Some(1234 + b as i64)));
        run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    }
    let file = metrics.join(format!("rsmld-{SHARD7}.prom"));
    let sent = (batches * per_batch) as f64;
    // The writer rewrites the file every 100 ms: wait for the one that has every completion.
    let deadline = Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.is_empty() {
            let samples = parse(&python, &text);
            if value(&samples, "rsmld_items_total", &[]) == sent
                && value(&samples, "rsmld_in_flight_items", &[]) == 0.0
            {
                break samples;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the file never showed {sent} items: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(value(&samples, "rsmld_records_total", &[]), sent);
    assert_eq!(value(&samples, "rsmld_items_received_total", &[]), sent);
    assert_eq!(
        value(&samples, "rsmld_millis_behind_latest", &[]),
        1234.0 + (batches - 1) as f64
    );
    assert_eq!(value(&samples, "rsmld_in_flight_bytes", &[]), 0.0);
    let stored = value(
        &samples,
        "rsmld_checkpoints_total",
        &[("outcome", "stored")],
    );
    assert!(
        stored >= 1.0 && stored <= model.stored.len() as f64,
        "{stored}"
    );
    assert_eq!(value(&samples, "rsmld_item_failures_total", &[]), 0.0);
    // 20 items a batch, at most 5 in flight when status goes out, 5 ms each: it waited.
    assert!(value(&samples, "rsmld_backpressure_wait_seconds_total", &[]) > 0.0);
    assert!(value(&samples, "rsmld_handler_batch_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(prom_files(&metrics), [format!("rsmld-{SHARD7}.prom")]);

    shutdown_requested(&mut p, &mut model).unwrap();
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(20)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
    assert!(
        prom_files(&metrics).is_empty(),
        "{:?}",
        prom_files(&metrics)
    );
}

/// `--metrics-dir` must name a writable directory that exists: checked before stdin is
/// read (exit 2, one line naming the setting), like the handlers' directories.
#[test]
fn a_metrics_dir_that_cannot_take_the_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let missing = dir.path().join("missing");
    for (path, why) in [
        (&file, "is not a directory"),
        (&missing, "does not exist (rsmld does not create it)"),
    ] {
        let out = Command::new(common::rsmld_bin())
            .args(["--handler", "discard", "--metrics-dir"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("rsmld[-] ERROR --metrics-dir {}: {why}", path.display())
        );
    }
}

/// A short run: `initialize`, `n` batches of 10 records (every batch checkpointed),
/// `shutdownRequested` and `leaseLost` (as the daemon ends a lease it gives up); stdin
/// closed, exit 0. Synchronous (`--max-in-flight 0`), so that
/// nothing is in flight at the drain. The model and the whole stderr.
fn short_run(extra: &[&str], env: &[(&str, Option<&str>)], n: u64) -> (CheckpointModel, String) {
    let mut list = args(&[
        "--handler",
        "discard",
        "--workers",
        "2",
        "--max-in-flight",
        "0",
        "--checkpoint-interval",
        "0s",
    ]);
    list.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(common::rsmld_bin());
    cmd.args(&list);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut p = Proc::from_command(cmd);
    let mut model = rsmld::testkit::transcript::initialize(&mut p).unwrap();
    for b in 0..n {
        let recs = records(1 + b * 10, 10);
        model.deliver_all(&recs);
        let l = line(&DaemonMessage::ProcessRecords {
            records: recs,
            millis_behind_latest: Some(7),
        });
        run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    }
    shutdown_requested(&mut p, &mut model).unwrap();
    lease_lost(&mut p, &mut model).unwrap();
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(20)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
    let stderr = p.stderr();
    (model, stderr)
}

/// At the default level (no RUST_LOG, no --log-level): the lease's lifecycle only, every
/// line naming the shard; no line per batch or per checkpoint (five batches, six
/// checkpoints), the last checkpoint on the `lease ended` line.
#[test]
fn the_default_level_logs_the_lifecycle_not_each_checkpoint() {
    let (model, stderr) = short_run(&[], &[("RUST_LOG", None)], 5);
    let last = model.stored.last().unwrap().to_string();
    let checkpoints = model.stored.len();
    assert!(checkpoints >= 5, "{checkpoints}");
    let p = format!("rsmld[{SHARD7}] INFO");
    let expected = [
        format!("{p} initialize: shard {SHARD7} from checkpoint TRIM_HORIZON/0"),
        format!("{p} started 2 workers (max in flight 0, checkpoint interval 0.000 s)"),
        format!("{p} shutdownRequested: draining 0 in-flight items"),
        format!("{p} leaseLost (lease lost): abandoning 0 in-flight items, no checkpoint"),
        format!("{p} lease ended (LeaseLost); last checkpoint {last}"),
        format!("{p} exiting: 50 records, 50 items dispatched, 50 completed, {checkpoints} checkpoints, 0 duplicates skipped"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

/// `--log-level`: warn shows none of those lines; debug adds the per-checkpoint lines;
/// RUST_LOG, when set, wins over it.
#[test]
fn log_level_sets_the_level_and_rust_log_wins() {
    let (_, stderr) = short_run(&["--log-level", "warn"], &[("RUST_LOG", None)], 2);
    assert_eq!(stderr, "", "{stderr}");
    let (model, stderr) = short_run(&["--log-level", "debug"], &[("RUST_LOG", None)], 2);
    for esn in &model.stored {
        let l = format!("rsmld[{SHARD7}] DEBUG checkpointed {esn}");
        assert!(stderr.lines().any(|x| x == l), "no {l:?} in:\n{stderr}");
    }
    let (_, stderr) = short_run(&["--log-level", "error"], &[("RUST_LOG", Some("debug"))], 2);
    assert!(stderr.contains(" DEBUG checkpointed "), "{stderr}");
    // Through the properties file as well.
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("app.properties");
    std::fs::write(&props, "rsmld.log_level = warn\n").unwrap();
    let (_, stderr) = short_run(
        &["--properties", props.to_str().unwrap()],
        &[("RUST_LOG", None)],
        1,
    );
    assert_eq!(stderr, "", "{stderr}");
}

/// `--log-format json`: every line is one JSON object with ts, level, the shard and the
/// message; an event's line has its name and fields.
#[test]
fn json_lines_parse_and_carry_the_shard() {
    let (model, stderr) = short_run(&["--log-format", "json"], &[("RUST_LOG", None)], 3);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    for l in &lines {
        assert_eq!(l["shard"], SHARD7, "{l}");
        assert_eq!(l["lease"], SHARD7, "{l}");
        assert_eq!(l["level"], "INFO", "{l}");
        assert!(l["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert!(l["message"].as_str().is_some(), "{l}");
    }
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(
        events,
        [
            "LeaseStarted",
            "WorkersStarted",
            "Draining",
            "Abandoned",
            "LeaseEnded"
        ]
    );
    assert_eq!(lines[0]["checkpoint"], "TRIM_HORIZON/0");
    assert_eq!(lines[1]["workers"], 2);
    assert_eq!(lines[1]["checkpoint_interval"], 0.0);
    assert_eq!(lines[3]["action"], "leaseLost");
    assert_eq!(lines[4]["end"], "LeaseLost");
    let last = model.stored.last().unwrap().to_string();
    assert_eq!(
        lines[4]["message"],
        format!("lease ended (LeaseLost); last checkpoint {last}")
    );
    assert!(lines[5]["message"]
        .as_str()
        .unwrap()
        .starts_with("exiting: 30 records"));
}

/// A daemon that leaves after an answered `shutdownRequested` (stdin closes before any
/// `leaseLost`): the lease ended gracefully, so its `LeaseEnded` (and with it the metrics'
/// `rsmld_lease_ends_total{end}` and the status page) says `ShutdownRequested`, not `Eof`.
#[test]
fn an_answered_shutdown_requested_then_eof_ends_as_shutdown_requested() {
    let mut cmd = Command::new(common::rsmld_bin());
    cmd.args(args(&[
        "--handler",
        "discard",
        "--checkpoint-interval",
        "0s",
        "--log-format",
        "json",
    ]));
    let mut p = Proc::from_command(cmd);
    let mut model = rsmld::testkit::transcript::initialize(&mut p).unwrap();
    let recs = records(1, 10);
    model.deliver_all(&recs);
    let l = line(&DaemonMessage::ProcessRecords {
        records: recs,
        millis_behind_latest: Some(0),
    });
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    shutdown_requested(&mut p, &mut model).unwrap();
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(20)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
    let stderr = p.stderr();
    let ends: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["event"] == "LeaseEnded")
        .map(|l| l["end"].clone())
        .collect();
    assert_eq!(ends, ["ShutdownRequested"], "{stderr}");
}

/// Waits for a stderr line containing each of `texts`; the line.
fn wait_line(p: &mut Proc, texts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stderr = p.stderr();
        if let Some(l) = stderr.lines().find(|l| texts.iter().all(|t| l.contains(t))) {
            return l.to_owned();
        }
        assert!(Instant::now() < deadline, "no {texts:?} in:\n{stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The progress line (every --progress-interval): items, rate, in flight, lag and the last
/// checkpoint; with items in flight and none completed in an interval, a stall warning.
#[test]
fn progress_lines_report_items_lag_and_the_last_checkpoint_or_a_stall() {
    let mut cmd = Command::new(common::rsmld_bin());
    cmd.args([
        "--handler",
        "discard",
        "--workers",
        "1",
        "--max-in-flight",
        "0",
        "--checkpoint-interval",
        "0s",
        "--progress-interval",
        "300ms",
    ])
    .env_remove("RUST_LOG");
    let mut p = Proc::from_command(cmd);
    let mut model = rsmld::testkit::transcript::initialize(&mut p).unwrap();
    let recs = records(1, 31);
    model.deliver_all(&recs);
    let l = line(&process_records(recs, Some(4321)));
    // Synchronous: status after every item completed and the checkpoint stored.
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    assert_eq!(model.stored.len(), 1);
    // A line from after the checkpoint (an earlier one may have come before it).
    let progress = wait_line(&mut p, &["progress: 31 items", "last checkpoint"]);
    let prefix = format!("rsmld[{SHARD7}] INFO progress: 31 items (");
    let rest = progress
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{progress}"));
    let (rate, rest) = rest.split_once("/s), ").unwrap();
    assert!(rate.parse::<f64>().unwrap() >= 0.0, "{progress}");
    let at = model.stored.last().unwrap().to_string();
    let rest = rest
        .strip_prefix(&format!(
            "0 in flight, 4321 ms behind, last checkpoint {at} "
        ))
        .unwrap_or_else(|| panic!("{progress} (last stored {at})"));
    let (age, tail) = rest.split_once(' ').unwrap();
    assert!(age.parse::<u64>().is_ok(), "{progress}");
    assert_eq!(tail, "s ago", "{progress}");
    let stderr = p.stderr();
    assert!(!stderr.contains("checkpointed"), "{stderr}");
    shutdown_requested(&mut p, &mut model).unwrap();
    lease_lost(&mut p, &mut model).unwrap();
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(20)).unwrap(), 0);

    // A stall: one item that takes 3 s, intervals of 300 ms.
    let mut cmd = Command::new(common::rsmld_bin());
    cmd.args([
        "--handler",
        "discard",
        "--workers",
        "1",
        "--debug-delay-ms",
        "3000",
        "--progress-interval",
        "300ms",
    ])
    .env_remove("RUST_LOG");
    let mut p = Proc::from_command(cmd);
    let mut model = rsmld::testkit::transcript::initialize(&mut p).unwrap();
    // --debug-delay-ms waits 0..=3000 ms pseudo-randomly per item: a few items make a long
    // wait near certain; the status comes at once (under --max-in-flight).
    let recs = records(1, 8);
    model.deliver_all(&recs);
    let l = line(&process_records(recs, None));
    run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
    let stall = wait_line(&mut p, &["stalled"]);
    let prefix = format!("rsmld[{SHARD7}] WARN stalled: no item completed in ");
    assert!(stall.starts_with(&prefix), "{stall}");
    assert!(stall.contains(" items in flight ("), "{stall}");
    assert!(
        stall.ends_with(", lag unknown, no checkpoint stored yet)"),
        "{stall}"
    );
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(20)).unwrap(), 0);
}
