//! The exec handler: ordering and acks, pipelining, `err` acks, crashes and restarts with
//! backoff, garbage output, a hung child killed by the interrupter, close and drop, and
//! the built binary running a shell handler under the daemon model.
//!
//! Handlers live in tests/fixtures/exec/: `handler.sh` (the README's), `handler.py`
//! (sequence numbers to a file), `behave.sh` (acts on each item's partition key and logs
//! `<pid> <worker>/<workers> <item>`), `window.py` (measures the pipelining window).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{init_line, line, record, run_action, seq, CheckpointModel, Proc};
use rsmld::checkpoint::RecordId;
use rsmld::handler::exec::{ExecFactory, ExecOptions};
use rsmld::handler::{BatchError, Handler, HandlerFactory, WorkerContext};
use rsmld::item::{Item, Payload};
use rsmld::protocol::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::protocol::sequence::SequenceNumber;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exec")
        .join(name);
    p.to_str().unwrap().to_owned()
}

fn item(n: u64, key: &str) -> Item<'static> {
    Item {
        record: RecordId(n),
        sequence_number: common::leak(seq(n)),
        sub_sequence_number: 0,
        user_sub: 0,
        user_total: 1,
        partition_key: common::leak(key),
        explicit_hash_key: None,
        approximate_arrival_timestamp: Some(1_700_000_000_000 + n as i64),
        data: Payload::Bytes(common::leak_bytes(format!("payload-{n}").into_bytes())),
    }
}

/// Items numbered from `first`, one per key.
fn items(first: u64, keys: &[&str]) -> Vec<Item<'static>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| item(first + i as u64, k))
        .collect()
}

fn options(command: &[&str], max_pipelined: usize) -> ExecOptions {
    ExecOptions {
        command: command.iter().map(|s| s.to_string()).collect(),
        max_pipelined,
        restart_backoff: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(40),
    }
}

fn ctx(worker: usize, workers: usize) -> WorkerContext {
    WorkerContext {
        shard_id: "shardId-000000000042".into(),
        worker,
        workers,
    }
}

fn start(options: ExecOptions) -> Box<dyn Handler> {
    ExecFactory::new(options)
        .create(&ctx(1, 3))
        .unwrap_or_else(|e| panic!("create: {e}"))
}

/// A `behave.sh` handler logging to `log`.
fn behave(log: &Path) -> Box<dyn Handler> {
    start(options(&[&fixture("behave.sh"), log.to_str().unwrap()], 8))
}

/// `behave.sh`'s log: (pid, "worker/workers", item JSON) per item seen.
fn seen(log: &Path) -> Vec<(i32, String, serde_json::Value)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let pid = parts.next()?.parse().ok()?;
            let who = parts.next()?.to_owned();
            if who == "signals" {
                return None;
            }
            Some((pid, who, serde_json::from_str(parts.next()?).unwrap()))
        })
        .collect()
}

/// The pid that handled the item with this partition key (the last time).
fn pid_of(log: &Path, key: &str) -> i32 {
    seen(log)
        .iter()
        .rev()
        .find(|(_, _, v)| v["partitionKey"] == key)
        .unwrap_or_else(|| panic!("no item {key} in the log: {:?}", seen(log)))
        .0
}

/// The failed indexes and messages of a batch error.
fn failures(result: Result<(), BatchError>) -> Vec<(usize, String)> {
    match result {
        Ok(()) => panic!("the batch succeeded"),
        Err(BatchError::Batch(e)) => panic!("whole-batch error: {e}"),
        Err(BatchError::Items(v)) => v.into_iter().map(|(i, e)| (i, e.message)).collect(),
    }
}

fn indexes(f: &[(usize, String)]) -> Vec<usize> {
    f.iter().map(|(i, _)| *i).collect()
}

/// No process with this pid, nor in its process group, exists any more (polls briefly).
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) == 0 || libc::kill(-pid, 0) == 0 };
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- unit-style

/// A Python handler records each item's sequence number: across batches of different
/// sizes every item is seen exactly once, in order, and every batch is Ok.
#[test]
fn python_handler_sees_every_item_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seen.txt");
    let mut h = start(options(&[&fixture("handler.py"), out.to_str().unwrap()], 8));
    let mut expected = Vec::new();
    let mut n = 0;
    for size in [40, 1, 17, 3] {
        let batch: Vec<Item> = (0..size)
            .map(|j| {
                n += 1;
                let mut it = item(n, &format!("k{}", j % 5));
                it.user_sub = (j % 3) as u32;
                it
            })
            .collect();
        expected.extend(
            batch
                .iter()
                .map(|it| format!("{}/{}", it.sequence_number, it.user_sub)),
        );
        h.process(&batch).unwrap();
    }
    h.close().unwrap();
    let got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, expected);
}

/// The README's five-line shell handler: writes each item JSON exactly as rsmld sends it
/// to `$1/$RSMLD_SHARD_ID.$RSMLD_WORKER.jsonl`.
#[test]
fn shell_handler_from_the_readme_writes_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(options(
        &[&fixture("handler.sh"), dir.path().to_str().unwrap()],
        16,
    ));
    let batches = [items(1, &["a"; 50]), items(51, &["b", "c", "a"])];
    let mut expected = Vec::new();
    for batch in &batches {
        h.process(batch).unwrap();
        for it in batch {
            let mut line = Vec::new();
            it.write_json("shardId-000000000042", &mut line).unwrap();
            expected.push(String::from_utf8(line).unwrap());
        }
    }
    h.close().unwrap();
    let file = dir.path().join("shardId-000000000042.1.jsonl");
    let got: Vec<String> = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, expected);
}

/// A batch larger than max_pipelined: the child reads all it can get and acks slowly;
/// the most items it ever holds unacknowledged is exactly the window (more would break
/// the bound, fewer would mean no pipelining).
#[test]
fn pipelining_fills_the_window_and_never_exceeds_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("most");
    let mut h = start(options(&[&fixture("window.py"), out.to_str().unwrap()], 4));
    let keys = vec!["k"; 20];
    h.process(&items(1, &keys)).unwrap();
    h.close().unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "4");
}

/// A child that writes each ack before reading more input (`sed -u`), with a window far
/// beyond the pipe buffers both ways: it finishes, because acks are read on another
/// thread while rsmld writes.
#[test]
fn eager_acks_with_a_huge_window_do_not_deadlock() {
    let n = 30_000;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut h = start(options(&["sed", "-u", "s/.*/ok/"], n));
        let keys = vec!["k"; n];
        let batch = items(1, &keys);
        let r = h.process(&batch);
        let _ = tx.send((r, h.close()));
    });
    let (r, closed) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("deadlock: process did not return");
    assert_eq!(r, Ok(()));
    assert_eq!(closed, Ok(()));
}

/// `err` acks fail exactly those items; the others are done; the child keeps running
/// (no restart) and sees its worker index and count in the environment.
#[test]
fn err_acks_fail_only_those_items() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    let f = failures(h.process(&items(1, &["a", "err", "b", "err", "c"])));
    assert_eq!(indexes(&f), [1, 3]);
    for (_, m) in &f {
        assert!(m.contains("rejected by the test handler"), "{m}");
    }
    h.process(&items(6, &["d"])).unwrap();
    let log_entries = seen(&log);
    assert_eq!(log_entries.len(), 6);
    let pids: HashSet<i32> = log_entries.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(pids.len(), 1, "restarted after err acks: {pids:?}");
    assert!(log_entries.iter().all(|(_, w, _)| w == "1/3"));
    h.close().unwrap();
}

/// A child that crashes mid-batch: its unacknowledged items fail with the exit status,
/// the acknowledged ones are done; the next batch runs in a new child.
#[test]
fn crash_fails_unacknowledged_items_and_the_next_batch_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    let f = failures(h.process(&items(1, &["a", "b", "crash", "c", "d"])));
    assert_eq!(indexes(&f), [2, 3, 4]);
    for (_, m) in &f {
        assert!(m.contains("exited (exit status: 3)"), "{m}");
        assert!(m.contains("behave.sh"), "{m}");
    }
    let first = pid_of(&log, "crash");
    assert!(gone(first), "crashed child {first} not reaped");
    h.process(&items(6, &["e", "f"])).unwrap();
    let second = pid_of(&log, "f");
    assert_ne!(first, second);
    assert_eq!(pid_of(&log, "a"), first);
    h.close().unwrap();
    assert!(gone(second));
}

/// Restarts wait restart_backoff, doubling to restart_backoff_max, and a healthy batch
/// resets it.
#[test]
fn restart_backoff_doubles_caps_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut o = options(&[&fixture("behave.sh"), log.to_str().unwrap()], 8);
    o.restart_backoff = Duration::from_millis(150);
    o.restart_backoff_max = Duration::from_millis(600);
    let mut h = start(o);
    let mut n = 0;
    let mut timed = |h: &mut Box<dyn Handler>, key: &str| {
        n += 1;
        let t = Instant::now();
        let r = h.process(&items(n, &[key]));
        (r.is_ok(), t.elapsed())
    };
    let ms = Duration::from_millis;
    let (ok, _) = timed(&mut h, "crash"); // the first child: no wait
    assert!(!ok);
    for want in [150, 300, 600] {
        let (ok, took) = timed(&mut h, "crash");
        assert!(!ok);
        assert!(
            took >= ms(want),
            "restart waited {took:?}, expected {want} ms"
        );
    }
    let (ok, took) = timed(&mut h, "crash");
    assert!(!ok);
    assert!(took >= ms(600) && took < ms(1100), "not capped: {took:?}");
    let (ok, took) = timed(&mut h, "a"); // healthy: resets the backoff
    assert!(ok && took >= ms(600));
    let (ok, took) = timed(&mut h, "crash"); // the child was alive: no wait
    assert!(!ok && took < ms(500), "{took:?}");
    let (ok, took) = timed(&mut h, "b");
    assert!(ok);
    assert!(
        took >= ms(150) && took < ms(500),
        "backoff not reset: {took:?}"
    );
    h.close().unwrap();
}

/// A line that is neither `ok` nor `err …` fails the rest of the batch (quoting the
/// line) and the child is replaced.
#[test]
fn garbage_output_fails_the_rest_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    let f = failures(h.process(&items(1, &["a", "garbage", "b"])));
    assert_eq!(indexes(&f), [1, 2]);
    for (_, m) in &f {
        assert!(
            m.contains("not an ack") && m.contains("this is not an ack"),
            "{m}"
        );
    }
    let first = pid_of(&log, "garbage");
    assert!(gone(first));
    // An extra line after a real ack is garbage too (it would be taken as the next ack).
    let f = failures(h.process(&items(4, &["print", "c"])));
    assert_eq!(indexes(&f), [0, 1]);
    assert!(f[0].1.contains("hello from the handler"), "{}", f[0].1);
    h.process(&items(6, &["d"])).unwrap();
    assert_ne!(pid_of(&log, "d"), first);
    h.close().unwrap();
}

/// A hung child: the interrupter (called from another thread, as the watchdog does) kills
/// it and its grandchildren; process returns the unacknowledged items as failed; the
/// next batch works. The interrupter does nothing between batches.
#[test]
fn hung_child_is_killed_by_the_interrupter() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    let interrupt = h.interrupter().expect("exec handlers are interruptible");
    h.process(&items(1, &["a"])).unwrap();
    interrupt(); // idle: must not kill
    h.process(&items(2, &["b"])).unwrap();
    assert_eq!(pid_of(&log, "a"), pid_of(&log, "b"));

    let killer = {
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            interrupt();
        })
    };
    let t = Instant::now();
    let f = failures(h.process(&items(3, &["c", "hang", "d"])));
    assert!(t.elapsed() < Duration::from_secs(10));
    killer.join().unwrap();
    assert_eq!(indexes(&f), [1, 2]);
    for (_, m) in &f {
        assert!(m.contains("killed after timeout"), "{m}");
    }
    let hung = pid_of(&log, "hang");
    assert!(gone(hung), "hung child {hung} or its sleep still alive");
    h.process(&items(6, &["e"])).unwrap();
    assert_ne!(pid_of(&log, "e"), hung);
    h.close().unwrap();
}

/// A child that exits cleanly between batches is replaced before the next batch, which
/// then succeeds.
#[test]
fn child_gone_between_batches_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    h.process(&items(1, &["bye"])).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    h.process(&items(2, &["a", "b"])).unwrap();
    assert_ne!(pid_of(&log, "bye"), pid_of(&log, "a"));
    h.close().unwrap();
}

/// A command that cannot be spawned is a clear start-up error naming it.
#[test]
fn unspawnable_command_is_a_clear_error() {
    let e = ExecFactory::new(options(&["/nonexistent/rsmld-handler", "x"], 8))
        .create(&ctx(0, 1))
        .err()
        .expect("create succeeded");
    assert!(
        e.message.contains("/nonexistent/rsmld-handler") && e.message.contains("cannot start"),
        "{e}"
    );
}

/// close: a child that exits on stdin EOF closes cleanly; one that ignores it is killed
/// after the grace period and close reports it. Drop kills too.
#[test]
fn close_and_drop_leave_no_child_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    h.process(&items(1, &["a"])).unwrap();
    let pid = pid_of(&log, "a");
    h.close().unwrap();
    assert!(gone(pid));

    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 600", pidfile.display());
    let mut h = start(options(&["sh", "-c", &script], 8));
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    };
    let t = Instant::now();
    let e = h.close().expect_err("a child ignoring EOF closed cleanly");
    assert!(e.message.contains("did not exit"), "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(gone(pid));

    let mut h = behave(&log);
    h.process(&items(2, &["dropped"])).unwrap();
    let pid = pid_of(&log, "dropped");
    drop(h);
    assert!(gone(pid));
}

// ---------------------------------------------------------------- through the binary

fn process_line(records: Vec<Record>) -> String {
    line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: Some(0),
    })
}

fn spawn_rsmld(exec: &[&str], extra: &[&str]) -> Proc {
    let mut args: Vec<String> = ["--handler", "exec", "--checkpoint-interval", "0"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.push("--".into());
    args.extend(exec.iter().map(|s| s.to_string()));
    Proc::spawn(&args)
}

/// `rsmld --handler exec -- /abs/handler.sh DIR` under the daemon model: every record
/// reaches its worker's file once and in per-key order, shutdownRequested checkpoints
/// the last record, and EOF exits 0.
#[test]
fn binary_runs_the_shell_handler_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let handler = fixture("handler.sh");
    let mut p = spawn_rsmld(
        &[&handler, dir.path().to_str().unwrap()],
        &["--workers", "2"],
    );
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(&mut p, &mut model, &init_line(), Action::Initialize).unwrap();
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let records: Vec<Record> = (1..=30).map(|i| record(i, keys[i as usize % 5])).collect();
    model.deliver_all(&records);
    run_action(
        &mut p,
        &mut model,
        &process_line(records),
        Action::ProcessRecords,
    )
    .unwrap();
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
            sequence_number: Some(SequenceNumber::parse(&seq(30)).unwrap()),
            sub_sequence_number: Some(0),
        }),
        "stderr:\n{}",
        p.stderr()
    );
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(10)).unwrap(),
        0,
        "{}",
        p.stderr()
    );

    let mut per_key: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut total = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name == "shardId-000000000007.0.jsonl" || name == "shardId-000000000007.1.jsonl",
            "{name}"
        );
        for l in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = v["sequenceNumber"].as_str().unwrap();
            per_key
                .entry(v["partitionKey"].as_str().unwrap().to_owned())
                .or_default()
                .push((name.clone(), s[s.len() - 27..].parse().unwrap()));
            total += 1;
        }
    }
    assert_eq!(total, 30);
    for (key, got) in per_key {
        let files: HashSet<_> = got.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(files.len(), 1, "{key} in {files:?}");
        let order: Vec<u64> = got.iter().map(|(_, i)| *i).collect();
        let expected: Vec<u64> = (1..=30u64)
            .filter(|i| keys[*i as usize % 5] == key)
            .collect();
        assert_eq!(order, expected, "{key}");
    }
}

/// Through the binary: the child's stderr reaches rsmld's log, prefixed with the worker;
/// the child does not inherit rsmld's ignored SIGINT/SIGTERM/SIGPIPE; no child is left
/// after exit.
#[test]
fn binary_forwards_child_stderr_and_resets_signals() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut p = spawn_rsmld(
        &[&fixture("behave.sh"), log.to_str().unwrap()],
        &["--workers", "1"],
    );
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(&mut p, &mut model, &init_line(), Action::Initialize).unwrap();
    let records = vec![record(1, "stderr"), record(2, "signals"), record(3, "a")];
    model.deliver_all(&records);
    run_action(
        &mut p,
        &mut model,
        &process_line(records),
        Action::ProcessRecords,
    )
    .unwrap();
    let reqs = run_action(
        &mut p,
        &mut model,
        r#"{"action":"shutdownRequested"}"#,
        Action::ShutdownRequested,
    )
    .unwrap();
    assert!(
        reqs.contains(&ProcessorMessage::Checkpoint {
            sequence_number: Some(SequenceNumber::parse(&seq(3)).unwrap()),
            sub_sequence_number: Some(0),
        }),
        "{reqs:?}\n{}",
        p.stderr()
    );
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(10)).unwrap(),
        0,
        "{}",
        p.stderr()
    );

    let pid = pid_of(&log, "stderr");
    let err = p.stderr();
    assert!(
        err.contains(&format!(
            "worker 0 child {pid}: note from the child on stderr"
        )),
        "{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let sig_line = text
        .lines()
        .find(|l| l.contains(" signals "))
        .unwrap_or_else(|| panic!("no signals line in {text}"));
    let mask = u64::from_str_radix(sig_line.rsplit(['\t', ' ']).next().unwrap(), 16).unwrap();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
        assert_eq!(
            mask & (1 << (sig - 1)),
            0,
            "signal {sig} ignored in the child: {sig_line}"
        );
    }
    assert!(gone(pid), "child {pid} outlived rsmld");
}

/// Through the binary: a handler that prints extra lines to ITS stdout is a protocol
/// violation of the exec handler (garbage), never protocol output to the daemon: the
/// batch fails, rsmld exits non-zero, nothing is checkpointed and the line shows up
/// only in the error on stderr.
#[test]
fn binary_treats_extra_child_stdout_as_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut p = spawn_rsmld(
        &[&fixture("behave.sh"), log.to_str().unwrap()],
        &["--workers", "1"],
    );
    let mut model = CheckpointModel::default();
    run_action(&mut p, &mut model, &init_line(), Action::Initialize).unwrap();
    p.send(&process_line(vec![record(1, "print"), record(2, "a")]));
    std::thread::sleep(Duration::from_millis(300));
    p.send(&process_line(vec![record(3, "a")]));
    assert_eq!(
        p.wait(Duration::from_secs(10)).unwrap(),
        1,
        "{}",
        p.stderr()
    );
    while let Ok(l) = p.recv(Duration::from_millis(200)) {
        assert!(!l.contains("hello"), "child stdout reached the daemon: {l}");
        match ProcessorMessage::decode(l.as_bytes()) {
            Ok(ProcessorMessage::Status { .. }) => {}
            other => panic!("{l}: {other:?} after a failed batch"),
        }
    }
    let err = p.stderr();
    assert!(
        err.contains("not an ack") && err.contains("hello from the handler"),
        "{err}"
    );
    assert!(gone(pid_of(&log, "print")));
}
