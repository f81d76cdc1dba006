//! The exec handler: ordering and numbered answers, pipelining, `err` answers, wrong
//! answers (twice, stale, ahead, unnumbered, out of order then a crash), crashes and
//! restarts with backoff, garbage output, a hung child killed by the interrupter, stalls
//! (warning and item timeout), the bounded close, and the built binary under the daemon
//! model: checkpoints never cover an item the child did not validly answer for, and no
//! handler process outlives rsmld (EOF, signals ignored, setsid grandchildren, SIGKILL).
//!
//! The README's examples live in examples/exec/ (`handler.py`, `handler.js`, `handler.sh`,
//! `batch.py`) and run here through the binary with PYTHONUNBUFFERED unset. Test handlers
//! live in tests/fixtures/exec/: `handler.py` (sequence numbers to a file), `batch.py`
//! (batch framing, acting on the batch's partition keys), `behave.sh` (acts on each item's partition key and logs
//! `<pid> <worker>/<workers> <item>`), `window.py` (measures the pipelining window),
//! `answers.sh` (answers wrongly in a chosen way, logging what it really handled).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{init_line, line, marker, record, run_action, seq, CheckpointModel, Proc};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::handler::exec::{ExecFactory, ExecFraming, ExecOptions, CLOSE_BOUND, CLOSE_EOF_GRACE};
use rsmld::handler::{BatchError, Handler, HandlerFactory, Interrupt, WorkerContext};
use rsmld::pipeline::item::{Item, Payload};
use rsmld::protocol::sequence::SequenceNumber;
use rsmld::protocol::tracker::RecordId;
use rsmld::telemetry::LeaseId;

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
        framing: ExecFraming::Item,
        max_pipelined,
        restart_backoff: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(40),
        stall_warning: Duration::from_secs(5),
        answer_timeout: None,
    }
}

fn ctx(worker: usize, workers: usize) -> WorkerContext {
    WorkerContext::new(worker, workers).for_lease(lease())
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
        Err(other) => panic!("unexpected batch error: {other}"),
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
        h.process(&lease(), &batch).unwrap();
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
        &[&example("handler.sh"), dir.path().to_str().unwrap()],
        16,
    ));
    let batches = [items(1, &["a"; 50]), items(51, &["b", "c", "a"])];
    let mut expected = Vec::new();
    for batch in &batches {
        h.process(&lease(), batch).unwrap();
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
    h.process(&lease(), &items(1, &keys)).unwrap();
    h.close().unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "4");
}

/// A child that writes each answer before reading more input (perl, unbuffered), with a window far
/// beyond the pipe buffers both ways: it finishes, because acks are read on another
/// thread while rsmld writes.
#[test]
fn eager_acks_with_a_huge_window_do_not_deadlock() {
    let n = 30_000;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut h = start(options(&["perl", "-ne", "$| = 1; print \"ok $.\\n\""], n));
        let keys = vec!["k"; n];
        let batch = items(1, &keys);
        let r = h.process(&lease(), &batch);
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
    let f = failures(h.process(&lease(), &items(1, &["a", "err", "b", "err", "c"])));
    assert_eq!(indexes(&f), [1, 3]);
    for (_, m) in &f {
        assert!(m.contains("rejected by the test handler"), "{m}");
    }
    h.process(&lease(), &items(6, &["d"])).unwrap();
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
    let f = failures(h.process(&lease(), &items(1, &["a", "b", "crash", "c", "d"])));
    assert_eq!(indexes(&f), [2, 3, 4]);
    for (_, m) in &f {
        assert!(m.contains("exited (exit status: 3)"), "{m}");
        assert!(m.contains("behave.sh"), "{m}");
    }
    let first = pid_of(&log, "crash");
    assert!(gone(first), "crashed child {first} not reaped");
    h.process(&lease(), &items(6, &["e", "f"])).unwrap();
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
        let r = h.process(&lease(), &items(n, &[key]));
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
    let f = failures(h.process(&lease(), &items(1, &["a", "garbage", "b"])));
    assert_eq!(indexes(&f), [1, 2]);
    for (_, m) in &f {
        assert!(
            m.contains("not an answer") && m.contains("this is not an answer"),
            "{m}"
        );
    }
    let first = pid_of(&log, "garbage");
    assert!(gone(first));
    // An extra line after a real answer is garbage too.
    let f = failures(h.process(&lease(), &items(4, &["print", "c"])));
    assert_eq!(indexes(&f), [0, 1]);
    assert!(f[0].1.contains("hello from the handler"), "{}", f[0].1);
    h.process(&lease(), &items(6, &["d"])).unwrap();
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
    h.process(&lease(), &items(1, &["a"])).unwrap();
    interrupt(Interrupt::Timeout); // idle: must not kill
    h.process(&lease(), &items(2, &["b"])).unwrap();
    assert_eq!(pid_of(&log, "a"), pid_of(&log, "b"));

    let killer = {
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            interrupt(Interrupt::Timeout);
        })
    };
    let t = Instant::now();
    let f = failures(h.process(&lease(), &items(3, &["c", "hang", "d"])));
    assert!(t.elapsed() < Duration::from_secs(10));
    killer.join().unwrap();
    assert_eq!(indexes(&f), [1, 2]);
    for (_, m) in &f {
        assert!(m.contains("killed after timeout"), "{m}");
    }
    let hung = pid_of(&log, "hang");
    assert!(gone(hung), "hung child {hung} or its sleep still alive");
    h.process(&lease(), &items(6, &["e"])).unwrap();
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
    h.process(&lease(), &items(1, &["bye"])).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    h.process(&lease(), &items(2, &["a", "b"])).unwrap();
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

/// close: a child that exits on stdin EOF closes cleanly; one that ignores it gets
/// SIGTERM after the EOF grace and close reports it. Drop kills too.
#[test]
fn close_and_drop_leave_no_child_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    h.process(&lease(), &items(1, &["a"])).unwrap();
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
    assert!(
        e.message.contains("did not exit") && e.message.contains("exited on SIGTERM"),
        "{e}"
    );
    assert!(t.elapsed() >= CLOSE_EOF_GRACE, "{:?}", t.elapsed());
    assert!(gone(pid));

    let mut h = behave(&log);
    h.process(&lease(), &items(2, &["dropped"])).unwrap();
    let pid = pid_of(&log, "dropped");
    drop(h);
    assert!(gone(pid));
}

// ---------------------------------------------------------------- through the binary

/// The checkpoint request for the record numbered `i` (see [`record`]).
fn checkpoint_at(i: u64) -> ProcessorMessage {
    ProcessorMessage::Checkpoint {
        sequence_number: Some(SequenceNumber::parse(&seq(i)).unwrap()),
        sub_sequence_number: Some(0),
    }
}

/// Closes rsmld's stdin (the daemon's EOF) and asserts that it exits 0 within `timeout`.
#[track_caller]
fn close_and_expect_exit_0(p: &mut Proc, timeout: Duration) {
    p.close_stdin();
    assert_eq!(p.wait(timeout).unwrap(), 0, "{}", p.stderr());
}

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
    let handler = example("handler.sh");
    let mut p = spawn_rsmld(
        &[&handler, dir.path().to_str().unwrap()],
        &["--workers", "2"],
    );
    let mut model = common::initialize(&mut p);
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let records: Vec<Record> = (1..=30).map(|i| record(i, keys[i as usize % 5])).collect();
    common::process_records(&mut p, &mut model, records).unwrap();
    let reqs = common::shutdown_requested(&mut p, &mut model).unwrap();
    assert_eq!(
        reqs.last(),
        Some(&checkpoint_at(30)),
        "stderr:\n{}",
        p.stderr()
    );
    close_and_expect_exit_0(&mut p, Duration::from_secs(10));

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
    let mut model = common::initialize(&mut p);
    let records = vec![record(1, "stderr"), record(2, "signals"), record(3, "a")];
    common::process_records(&mut p, &mut model, records).unwrap();
    let reqs = common::shutdown_requested(&mut p, &mut model).unwrap();
    assert!(reqs.contains(&checkpoint_at(3)), "{reqs:?}\n{}", p.stderr());
    close_and_expect_exit_0(&mut p, Duration::from_secs(10));

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
    // Every signal rsmld ignores itself, SIGHUP and SIGXFSZ too: a child that inherited
    // an ignored SIGXFSZ would see its writes fail quietly past RLIMIT_FSIZE.
    for sig in rsmld::sys::IGNORED_SIGNALS {
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
        err.contains("not an answer") && err.contains("hello from the handler"),
        "{err}"
    );
    assert!(gone(pid_of(&log, "print")));
}

// ---------------------------------------------------------------- numbered answers

/// What `answers.sh` really handled: "<unit> <sequenceNumber>" lines.
fn handled(log: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (unit, seq) = l.split_once(' ').unwrap();
            (unit.parse().unwrap(), seq.to_owned())
        })
        .collect()
}

/// Runs one batch through `answers.sh MODE`; checks that every item reported done was
/// really handled by the child; returns the failures.
fn one_batch(h: &mut Box<dyn Handler>, log: &Path, batch: &[Item]) -> Vec<(usize, String)> {
    let failed = match h.process(&lease(), batch) {
        Ok(()) => Vec::new(),
        r => failures(r),
    };
    let seqs: HashSet<String> = handled(log).into_iter().map(|(_, s)| s).collect();
    for (i, it) in batch.iter().enumerate() {
        if !failed.iter().any(|(f, _)| *f == i) {
            assert!(
                seqs.contains(it.sequence_number),
                "item {i} counted as done but never handled; failures {failed:?}"
            );
        }
    }
    failed
}

fn answers(mode: &str, log: &Path) -> Box<dyn Handler> {
    start(options(
        &[&fixture("answers.sh"), mode, log.to_str().unwrap()],
        8,
    ))
}

/// A child that answers each unit twice: the second answer is a wrong answer, it never
/// counts for the next item in the pipe; that item and all later ones fail; the child
/// is replaced and the next batch works.
#[test]
fn an_answer_given_twice_breaks_the_child_and_counts_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = answers("twice", &log);
    let f = one_batch(&mut h, &log, &items(1, &["k"; 6]));
    assert_eq!(indexes(&f), [1, 2, 3, 4, 5]);
    assert!(
        f[0].1.contains("wrong answer") && f[0].1.contains("`ok 1`: unit 1 was answered twice"),
        "{}",
        f[0].1
    );
    assert!(one_batch(&mut h, &log, &items(7, &["k"; 3])).is_empty());
    h.close().unwrap();
}

/// Answering for a unit of an earlier batch (already answered) or for one not yet
/// written, or with 0 or no number at all: every item of the batch fails.
#[test]
fn stale_ahead_zero_and_unnumbered_answers_break_the_child() {
    for (mode, why) in [
        ("stale", "unit 1 was answered before"),
        ("ahead", "unit 1001 was not written yet"),
        ("zero", "not an answer"),
        ("bare-twice", "not an answer"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut h = answers(mode, &log);
        let first = one_batch(&mut h, &log, &items(1, &["k"]));
        let second = one_batch(&mut h, &log, &items(2, &["k"; 3]));
        let f = if mode == "stale" { second } else { first };
        assert!(!f.is_empty(), "{mode}: no failure");
        assert!(f.iter().all(|(_, m)| m.contains(why)), "{mode}: {f:?}");
        if mode == "stale" {
            assert_eq!(indexes(&f), [0, 1, 2], "{mode}");
        }
        h.close().ok();
    }
}

/// Out of order is allowed: a child answering each pair of units in reverse finishes
/// every batch.
#[test]
fn answers_in_any_order_within_the_window_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = answers("reverse", &log);
    assert!(one_batch(&mut h, &log, &items(1, &["k"; 6])).is_empty());
    assert!(one_batch(&mut h, &log, &items(7, &["k"; 20])).is_empty());
    assert_eq!(handled(&log).len(), 26);
    h.close().unwrap();
}

/// An answer out of order, then a crash: the answered unit is done, the one before it
/// (never handled) fails with the exit status.
#[test]
fn an_out_of_order_answer_then_a_crash_fails_the_unanswered_unit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = answers("reorder-crash", &log);
    let f = one_batch(&mut h, &log, &items(1, &["k", "k"]));
    assert_eq!(indexes(&f), [0]);
    assert!(f[0].1.contains("exited (exit status: 3)"), "{}", f[0].1);
    let mut h2 = answers("bare-reorder-crash", &dir.path().join("log2"));
    let f = one_batch(&mut h2, &dir.path().join("log2"), &items(1, &["k", "k"]));
    assert_eq!(indexes(&f), [0, 1], "an unnumbered answer counted");
    h.close().unwrap();
}

/// Through the binary and the daemon model: for each way of answering wrongly, every
/// checkpoint rsmld asks for covers only records the child really handled (it logs them
/// before answering). Returns the exit code and the checkpoints.
fn checkpoints_cover_only_handled(
    mode: &str,
    records: u64,
    per_batch: u64,
    extra: &[&str],
) -> (i32, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut p = spawn_rsmld(
        &[&fixture("answers.sh"), mode, log.to_str().unwrap()],
        &[&["--workers", "1"], extra].concat(),
    );
    let mut model = common::initialize(&mut p);
    let mut next = 1;
    while next <= records {
        let batch: Vec<Record> = (next..(next + per_batch).min(records + 1))
            .map(|i| record(i, "k"))
            .collect();
        next += per_batch;
        if common::process_records(&mut p, &mut model, batch).is_err() {
            break;
        }
    }
    let _ = common::shutdown_requested(&mut p, &mut model);
    p.close_stdin();
    let code = p.wait(Duration::from_secs(30)).unwrap();
    let seqs: HashSet<String> = handled(&log).into_iter().map(|(_, s)| s).collect();
    let stored: Vec<String> = model
        .stored
        .iter()
        .map(|e| e.seq.as_str().to_owned())
        .collect();
    for c in &stored {
        let unhandled: Vec<u64> = (1..=records)
            .filter(|i| seq(*i).as_str() <= c.as_str() && !seqs.contains(&seq(*i)))
            .collect();
        assert!(
            unhandled.is_empty(),
            "{mode}: checkpoint {c} covers {} record(s) the child never handled: {unhandled:?}",
            unhandled.len()
        );
    }
    (code, stored, p.stderr())
}

/// The faults that made old main checkpoint unhandled items: a child that answers twice
/// per item (284 of 800 unhandled items checkpointed), and one that answers for its
/// second unit first and crashes (its first unit checkpointed after the retry) — as the
/// old, unnumbered contract had it, and numbered. rsmld stops with exit 1 and no
/// checkpoint covers an unhandled item.
#[test]
fn binary_never_checkpoints_for_surplus_or_early_answers() {
    let retry = ["--on-error", "retry", "--retry-backoff", "0.05"];
    for (mode, records, extra) in [
        ("bare-twice", 800, &[][..]),
        ("twice", 800, &[]),
        ("bare-reorder-crash", 40, &retry),
    ] {
        let (code, _, err) =
            checkpoints_cover_only_handled(mode, records, 10.max(records / 8), extra);
        assert_eq!(code, 1, "{mode}: {err}");
        assert!(
            err.contains("not an answer") || err.contains("answered twice"),
            "{mode}: {err}"
        );
    }
}

/// Each wrong answer, then recovery under --on-error retry: the broken child's unanswered
/// items are retried in a new child, and in the end every record is handled and
/// checkpointed — never a checkpoint ahead of what was handled.
#[test]
fn binary_retries_after_wrong_answers_and_checkpoints_only_handled_records() {
    let retry = ["--on-error", "retry", "--retry-backoff", "0.05"];
    for mode in ["reorder-crash", "twice", "stale", "ahead", "zero"] {
        let (code, stored, err) = checkpoints_cover_only_handled(mode, 40, 10, &retry);
        assert_eq!(code, 0, "{mode}: {err}");
        assert_eq!(stored.last(), Some(&seq(40)), "{mode}: {err}");
    }
}

// ---------------------------------------------------------------- no process outlives rsmld

/// Live processes (zombies excluded) whose environment holds `RSMLD_TEST_MARKER=marker`.
fn marked(marker: &str) -> Vec<i32> {
    let needle = format!("RSMLD_TEST_MARKER={marker}");
    let mut found = Vec::new();
    for pid in common::pids() {
        if !common::alive(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Waits (up to 10 s) until no marked process is left; returns those still alive.
fn outliving(marker: &str) -> Vec<i32> {
    common::poll_until_empty(|| marked(marker))
}

/// Waits (up to 20 s) for `path` to exist; returns its contents.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// rsmld with an exec child given as `sh -c SCRIPT`, marked in its environment, initialized.
fn marked_rsmld(script: &str, marker: &str, extra: &[&str]) -> (Proc, CheckpointModel) {
    let mut args: Vec<String> = ["--handler", "exec", "--workers", "1"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.extend(["--", "sh", "-c", script].map(String::from));
    let mut p = Proc::spawn_env(&args, &[("RSMLD_TEST_MARKER", marker)]);
    let model = common::initialize(&mut p);
    (p, model)
}

/// A child stuck in an item that ignores stdin EOF and every signal it can: stdin EOF
/// makes rsmld abandon the batch, close the child (EOF, SIGTERM, SIGKILL) within the
/// documented bound, wait for it and exit; nothing of the handler is left. Prints the
/// time from EOF to exit.
#[test]
fn binary_eof_ends_a_stuck_child_that_ignores_every_signal() {
    let dir = tempfile::tempdir().unwrap();
    let stuck = dir.path().join("stuck");
    let script = format!(
        "trap '' HUP INT QUIT TERM PIPE ALRM USR1 USR2; n=0; while IFS= read -r item; do n=$((n+1)); \
         case \"$item\" in *'\"partitionKey\":\"hang\"'*) echo $$ > {0}; while :; do sleep 1; done;; esac; \
         echo \"ok $n\"; done; while :; do sleep 1; done",
        stuck.display()
    );
    let m = marker("ignores-every-signal");
    let (mut p, mut model) = marked_rsmld(&script, &m, &[]);
    let records = vec![record(1, "a"), record(2, "hang"), record(3, "b")];
    common::process_records(&mut p, &mut model, records).unwrap();
    wait_for_file(&stuck);
    assert!(!marked(&m).is_empty());
    let t = Instant::now();
    p.close_stdin();
    let code = p.wait(Duration::from_secs(30)).unwrap();
    let took = t.elapsed();
    eprintln!("rsmld exited {took:?} after stdin EOF with a child ignoring every signal");
    assert_eq!(code, 0, "{}", p.stderr());
    assert_eq!(outliving(&m), Vec::<i32>::new(), "{}", p.stderr());
    let err = p.stderr();
    assert!(err.contains("after SIGTERM; killed"), "{err}");
    // A bound, not a speed: without one rsmld would wait for the child forever.
    assert!(took < CLOSE_BOUND * 5, "{took:?}");
}

/// A grandchild that calls setsid() escapes the child's process group; rsmld, a child
/// subreaper, still finds it and kills it before exiting.
#[test]
fn binary_kills_a_grandchild_that_left_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let gpid = dir.path().join("gpid");
    let script = format!(
        "setsid sh -c 'echo $$ > {0}; exec sleep 120' </dev/null >/dev/null 2>&1 & \
         n=0; while IFS= read -r item; do n=$((n+1)); echo \"ok $n\"; done",
        gpid.display()
    );
    let m = marker("setsid-grandchild");
    let (mut p, _model) = marked_rsmld(&script, &m, &[]);
    let grandchild: i32 = wait_for_file(&gpid).trim().parse().unwrap();
    let session = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()
    };
    let child_session = marked(&m)
        .into_iter()
        .filter(|&pid| pid != grandchild && pid != p.child.id() as i32)
        .find_map(session);
    assert_ne!(session(grandchild), None);
    assert_ne!(session(grandchild), child_session, "setsid did not take");
    close_and_expect_exit_0(&mut p, Duration::from_secs(30));
    assert_eq!(outliving(&m), Vec::<i32>::new(), "{}", p.stderr());
}

/// A child that started a helper in its own session (setsid) and then crashed: the
/// helper is killed when rsmld replaces the child, not only when rsmld exits.
#[test]
fn binary_kills_the_escaped_helper_of_a_replaced_child() {
    let dir = tempfile::tempdir().unwrap();
    let gpid = dir.path().join("gpid");
    let script = format!(
        "n=0; while IFS= read -r item; do n=$((n+1)); case \"$item\" in \
         *'\"partitionKey\":\"spawn\"'*) setsid sh -c 'echo $$ > {0}; exec sleep 120' </dev/null >/dev/null 2>&1 & ;; \
         *'\"partitionKey\":\"crash\"'*) exit 3 ;; esac; echo \"ok $n\"; done",
        gpid.display()
    );
    let m = marker("escaped-helper");
    let dlq = dir.path().join("dlq");
    let extra = ["--on-error", "skip", "--dead-letter", dlq.to_str().unwrap()];
    let (mut p, mut model) = marked_rsmld(&script, &m, &extra);
    let records = vec![record(1, "spawn")];
    common::process_records(&mut p, &mut model, records).unwrap();
    let helper: i32 = wait_for_file(&gpid).trim().parse().unwrap();
    assert!(marked(&m).contains(&helper));
    let records = vec![record(2, "crash")];
    common::process_records(&mut p, &mut model, records).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while marked(&m).contains(&helper) {
        assert!(
            Instant::now() < deadline,
            "helper {helper} outlived its child"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "rsmld exited: {}",
        p.stderr()
    );
    close_and_expect_exit_0(&mut p, Duration::from_secs(30));
    assert_eq!(outliving(&m), Vec::<i32>::new());
}

/// rsmld SIGKILLed while its child is stuck in an item: the child's parent-death signal
/// kills it (nothing of rsmld runs after a SIGKILL).
#[test]
fn binary_sigkilled_takes_its_stuck_child_along() {
    let dir = tempfile::tempdir().unwrap();
    let stuck = dir.path().join("stuck");
    let script = format!(
        "IFS= read -r item; echo $$ > {0}; exec sleep 120",
        stuck.display()
    );
    let m = marker("sigkilled");
    let (mut p, mut model) = marked_rsmld(&script, &m, &[]);
    let records = vec![record(1, "a")];
    common::process_records(&mut p, &mut model, records).unwrap();
    let child: i32 = wait_for_file(&stuck).trim().parse().unwrap();
    assert!(marked(&m).contains(&child));
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    assert_eq!(outliving(&m), Vec::<i32>::new());
}

/// The bounded close in-process: a child stuck in an item when the pool's shutdown
/// interrupt comes stops being waited for at once (its items fail as abandoned), later
/// batches fail without reaching a child, and close ends it (SIGTERM) within the bound.
#[test]
fn shutdown_interrupt_ends_a_running_batch_and_close_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = behave(&log);
    let interrupt = h.interrupter().unwrap();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        interrupt(Interrupt::Shutdown);
    });
    let f = failures(h.process(&lease(), &items(1, &["a", "hang", "b"])));
    stopper.join().unwrap();
    assert_eq!(indexes(&f), [1, 2]);
    assert!(f[0].1.contains("shutting down"), "{}", f[0].1);
    let pid = pid_of(&log, "hang");
    match h.process(&lease(), &items(4, &["c"])) {
        Err(BatchError::Batch(e)) => assert!(e.message.contains("shutting down"), "{e}"),
        other => panic!("{other:?}"),
    }
    let t = Instant::now();
    let e = h.close().expect_err("a stuck child closed cleanly");
    assert!(e.message.contains("exited on SIGTERM"), "{e}");
    assert!(t.elapsed() < CLOSE_BOUND * 5, "{:?}", t.elapsed());
    assert!(gone(pid));
}

// ---------------------------------------------------------------- stalls

/// A child that reads its items and never answers, and one that writes `ok 1` without
/// the newline and hangs: both are killed at the answer timeout, every unit they held
/// fails (the unterminated `ok 1` never counts, not even after the kill), and the child
/// is gone.
#[test]
fn silent_and_half_answering_children_are_killed_at_the_answer_timeout() {
    for (script, n) in [
        ("while IFS= read -r l; do :; done", 3),
        ("IFS= read -r l; printf 'ok 1'; exec sleep 120", 1),
    ] {
        let mut o = options(&["sh", "-c", script], 8);
        o.stall_warning = Duration::from_millis(200);
        o.answer_timeout = Some(Duration::from_secs(1));
        let mut h = start(o);
        let t = Instant::now();
        let f = failures(h.process(&lease(), &items(1, &vec!["k"; n])));
        assert!(t.elapsed() >= Duration::from_secs(1), "{script}");
        assert_eq!(indexes(&f), (0..n).collect::<Vec<_>>(), "{script}");
        assert!(
            f[0].1.contains(&format!(
                "answered nothing for 1s while holding {n} unit(s)"
            )),
            "{script}: {}",
            f[0].1
        );
        let pid: i32 = f[0]
            .1
            .split("(pid ")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(gone(pid), "{script}");
    }
}

/// The answer timeout counts silence between answers, not the length of a batch: a
/// child that answers every 300 ms finishes a batch of 8 (2.4 s) under a 1.5 s timeout.
#[test]
fn a_slow_but_answering_child_is_not_timed_out() {
    let script = "n=0; while IFS= read -r l; do n=$((n+1)); sleep 0.3; echo \"ok $n\"; done";
    let mut o = options(&["sh", "-c", script], 8);
    o.stall_warning = Duration::from_millis(100);
    o.answer_timeout = Some(Duration::from_millis(1500));
    let mut h = start(o);
    let t = Instant::now();
    h.process(&lease(), &items(1, &["k"; 8])).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(2400));
    h.close().unwrap();
}

/// Through the binary with default settings: a silent child and a child that wrote `ok 1`
/// without its newline are each named in one warning after a few seconds (pid, units
/// held), then killed at the default item timeout; the item fails under --on-error fail
/// (exit 1, no checkpoint).
#[test]
fn binary_default_settings_bound_a_stall() {
    let children = [
        ("silent", "echo $$ > {0}; while IFS= read -r l; do :; done"),
        (
            "partial",
            "echo $$ > {0}; IFS= read -r l; printf 'ok 1'; exec sleep 120",
        ),
    ];
    let runs: Vec<_> = children
        .iter()
        .map(|(name, script)| {
            let (name, script) = (name.to_string(), script.to_string());
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let pidfile = dir.path().join("pid");
                let script = script.replace("{0}", pidfile.to_str().unwrap());
                let m = marker(&name);
                let (mut p, mut model) = marked_rsmld(&script, &m, &["--checkpoint-interval", "0"]);
                let records = vec![record(1, "k")];
                common::process_records(&mut p, &mut model, records).unwrap();
                let pid = wait_for_file(&pidfile).trim().to_owned();
                let t = Instant::now();
                let code = p.wait(Duration::from_secs(120)).unwrap();
                let err = p.stderr();
                assert_eq!(code, 1, "{name}: {err}");
                assert!(
                    t.elapsed() >= Duration::from_secs(15),
                    "{name}: {:?}",
                    t.elapsed()
                );
                let warning = format!("exec handler child {pid} has answered nothing for");
                assert_eq!(err.matches(&warning).count(), 1, "{name}: {err}");
                assert!(err.contains("it holds 1 unit(s)"), "{name}: {err}");
                assert!(
                    err.contains("answered nothing for 20s while holding 1 unit(s)"),
                    "{name}: {err}"
                );
                assert!(model.stored.is_empty(), "{name}: {:?}", model.stored);
                assert_eq!(outliving(&m), Vec::<i32>::new(), "{name}");
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

// ---------------------------------------------------------------- naive children (README examples)

fn example(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/exec")
        .join(name);
    p.to_str().unwrap().to_owned()
}

/// rsmld (the binary) with `args`, PYTHONUNBUFFERED removed from its environment (as on a
/// machine that never set it) or set to `unbuffered`.
fn rsmld_env(args: &[String], unbuffered: Option<&str>) -> Proc {
    let mut cmd = std::process::Command::new(common::rsmld_bin());
    cmd.args(args);
    match unbuffered {
        None => cmd.env_remove("PYTHONUNBUFFERED"),
        Some(v) => cmd.env("PYTHONUNBUFFERED", v),
    };
    Proc::from_command(cmd)
}

/// Through the binary, PYTHONUNBUFFERED unset: `records` records (payload `payload-<i>`,
/// five keys) in batches of `per_batch`, then shutdownRequested. Every batch must finish
/// (the child answers before EOF) and the last checkpoint covers the last record; returns
/// rsmld's stderr after a clean exit.
fn run_naive(exec: &[&str], extra: &[&str], records: u64, per_batch: u64) -> String {
    let mut args: Vec<String> = ["--handler", "exec", "--checkpoint-interval", "0"]
        .iter()
        .chain(["--item-timeout", "10s"].iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.push("--".into());
    args.extend(exec.iter().map(|s| s.to_string()));
    let mut p = rsmld_env(&args, None);
    let mut model = common::initialize(&mut p);
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let mut next = 1;
    while next <= records {
        let batch: Vec<Record> = (next..(next + per_batch).min(records + 1))
            .map(|i| record(i, keys[i as usize % 5]))
            .collect();
        next += per_batch;
        common::process_records(&mut p, &mut model, batch)
            .unwrap_or_else(|e| panic!("{exec:?}: {e}\n{}", p.stderr()));
    }
    let reqs = common::shutdown_requested(&mut p, &mut model)
        .unwrap_or_else(|e| panic!("{exec:?}: {e}\n{}", p.stderr()));
    assert_eq!(
        reqs.last(),
        Some(&checkpoint_at(records)),
        "{exec:?}: stderr:\n{}",
        p.stderr()
    );
    p.close_stdin();
    let code = p.wait(Duration::from_secs(20)).unwrap();
    let err = p.stderr();
    assert_eq!(code, 0, "{exec:?}: {err}");
    err
}

/// The lines of `path`, sorted (two workers append to it in any order).
fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn payloads(records: u64) -> Vec<String> {
    let mut v: Vec<String> = (1..=records).map(|i| format!("payload-{i}")).collect();
    v.sort();
    v
}

/// The README's Python (plain `print`, no flush), Node and shell examples, through the
/// binary with PYTHONUNBUFFERED unset in rsmld's environment: every record is handled
/// exactly once and checkpointed, in small batches that each wait for their answers.
/// Without rsmld's PYTHONUNBUFFERED default, the Python child's answers stay in its
/// buffer and the first batch times out.
#[test]
fn binary_runs_the_naive_python_node_and_shell_examples_with_pythonunbuffered_unset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("py.txt");
    let (py, js) = (example("handler.py"), example("handler.js"));
    run_naive(&[&py, out.to_str().unwrap()], &["--workers", "2"], 40, 7);
    assert_eq!(sorted_lines(&out), payloads(40));

    let out = dir.path().join("js.txt");
    run_naive(&[&js, out.to_str().unwrap()], &["--workers", "2"], 40, 7);
    assert_eq!(sorted_lines(&out), payloads(40));

    let sh_dir = dir.path().join("sh");
    std::fs::create_dir(&sh_dir).unwrap();
    run_naive(
        &[&example("handler.sh"), sh_dir.to_str().unwrap()],
        &["--workers", "1"],
        20,
        6,
    );
    let lines = sorted_lines(&sh_dir.join("shardId-000000000007.0.jsonl"));
    assert_eq!(lines.len(), 20);
    use base64::Engine;
    let mut got: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap())
                .unwrap();
            String::from_utf8(data).unwrap()
        })
        .collect();
    got.sort();
    assert_eq!(got, payloads(20));
}

/// The batch-framing Python example (plain `print`), through the binary with
/// PYTHONUNBUFFERED unset: every record once, checkpointed.
#[test]
fn binary_runs_the_naive_batch_example_with_pythonunbuffered_unset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batch.txt");
    run_naive(
        &[&example("batch.py"), out.to_str().unwrap()],
        &["--workers", "2", "--exec-framing", "batch"],
        60,
        9,
    );
    assert_eq!(sorted_lines(&out), payloads(60));
}

/// PYTHONUNBUFFERED in the children: `1` when rsmld's environment does not have it; the
/// user's value, kept as it is, when it has one (an empty value counts as set).
#[test]
fn binary_sets_pythonunbuffered_only_when_the_user_did_not() {
    for (given, want) in [(None, "1"), (Some(""), ""), (Some("0"), "0")] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        let script = format!(
            "printf '%s\\n' \"${{PYTHONUNBUFFERED-unset}}\" > {}.tmp && mv {0}.tmp {0}; \
             n=0; while IFS= read -r l; do n=$((n+1)); echo \"ok $n\"; done",
            file.display()
        );
        let args: Vec<String> = [
            "--handler",
            "exec",
            "--workers",
            "1",
            "--",
            "sh",
            "-c",
            &script,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = rsmld_env(&args, given);
        let mut model = CheckpointModel::default();
        run_action(&mut p, &mut model, &init_line(), Action::Initialize).unwrap();
        let seen = wait_for_file(&file);
        assert_eq!(seen, format!("{want}\n"), "PYTHONUNBUFFERED={given:?}");
        close_and_expect_exit_0(&mut p, Duration::from_secs(20));
    }
}

// ---------------------------------------------------------------- batch framing

fn batch_handler(log: &Path) -> Box<dyn Handler> {
    let mut o = options(&[&fixture("batch.py"), log.to_str().unwrap()], 8);
    o.framing = ExecFraming::Batch;
    start(o)
}

/// `batch.py`'s log: (pid, batch number, sequence number) per item handled.
fn batch_log(log: &Path) -> Vec<(i32, u64, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.split(' ');
            let pid = f.next().unwrap().parse().unwrap();
            let n = f.next().unwrap().parse().unwrap();
            (pid, n, f.next().unwrap().to_owned())
        })
        .collect()
}

/// Batch framing: one line per batch, numbered by its position in the child's input
/// across batches; `ok N` makes every item done, in one child.
#[test]
fn batch_framing_writes_one_numbered_line_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = batch_handler(&log);
    h.process(&lease(), &items(1, &["a", "b", "c"])).unwrap();
    h.process(&lease(), &items(4, &["d"])).unwrap();
    h.process(&lease(), &items(5, &["e"; 40])).unwrap();
    h.close().unwrap();
    let got = batch_log(&log);
    let batches: Vec<u64> = got.iter().map(|(_, n, _)| *n).collect();
    let expected: Vec<u64> = [1, 1, 1, 2].into_iter().chain([3; 40]).collect();
    assert_eq!(batches, expected);
    let seqs: Vec<String> = got.iter().map(|(_, _, s)| s.clone()).collect();
    assert_eq!(seqs, (1..=44).map(seq).collect::<Vec<_>>());
    assert_eq!(
        got.iter().map(|(p, _, _)| *p).collect::<HashSet<_>>().len(),
        1
    );
}

/// The exact line a batch child reads: `{"batch":N,"items":[<item JSON>,...]}`.
#[test]
fn batch_framing_line_is_the_items_json_array() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lines");
    let script = format!("cat > {}", out.display());
    let mut o = options(&["sh", "-c", &script], 8);
    o.framing = ExecFraming::Batch;
    o.answer_timeout = Some(Duration::from_millis(300));
    let mut h = start(o);
    let batch = items(1, &["a", "b"]);
    let _ = h.process(&lease(), &batch); // never answered: it only records its input
    drop(h);
    let mut expected = b"{\"batch\":1,\"items\":[".to_vec();
    batch[0]
        .write_json("shardId-000000000042", &mut expected)
        .unwrap();
    expected.push(b',');
    batch[1]
        .write_json("shardId-000000000042", &mut expected)
        .unwrap();
    expected.extend_from_slice(b"]}\n");
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

/// `err N <message>` fails every item of the batch with the message; the child lives on.
#[test]
fn batch_err_fails_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = batch_handler(&log);
    let f = failures(h.process(&lease(), &items(1, &["a", "err-batch", "b"])));
    assert_eq!(indexes(&f), [0, 1, 2]);
    for (_, m) in &f {
        assert_eq!(
            m,
            "exec handler child rejected the batch: rejected by the test handler"
        );
    }
    h.process(&lease(), &items(4, &["c"])).unwrap();
    let got = batch_log(&log);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 2, "the next batch is batch 2 of the same child");
    h.close().unwrap();
}

/// `err N.I <message>` lines, then `ok N`: exactly those items fail, each with its
/// message; the rest are done.
#[test]
fn batch_item_errors_fail_only_those_items() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = batch_handler(&log);
    let f = failures(h.process(&lease(), &items(1, &["a", "fail", "b", "fail", "c"])));
    assert_eq!(indexes(&f), [1, 3]);
    assert_eq!(
        f[0].1,
        "exec handler child rejected the item (item 2 of batch 1): failed by the test handler"
    );
    assert!(f[1].1.contains("(item 4 of batch 1)"), "{}", f[1].1);
    let handled: Vec<String> = batch_log(&log).into_iter().map(|(_, _, s)| s).collect();
    assert_eq!(handled, [seq(1), seq(3), seq(5)]);
    h.process(&lease(), &items(6, &["d"])).unwrap();
    h.close().unwrap();
}

/// A wrong batch number — one not written yet, one answered before, the same batch twice,
/// an item the batch does not have — breaks the child: the batch fails (nothing of it
/// counts as done), the child is replaced, and the next batch works.
#[test]
fn batch_wrong_numbers_break_the_child() {
    for (key, why) in [
        (
            "wrong",
            "`ok 3`: unit 3 was not written yet (units up to 2 were)",
        ),
        (
            "stale",
            "`ok 1`: unit 1 was answered before (this batch started at unit 2)",
        ),
        ("ahead", "`err 2.3`: batch 2 has 2 item(s), not 3"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut h = batch_handler(&log);
        h.process(&lease(), &items(1, &["a"])).unwrap();
        let first = batch_log(&log)[0].0;
        let f = failures(h.process(&lease(), &items(2, &["b", key])));
        assert_eq!(indexes(&f), [0, 1], "{key}");
        for (_, m) in &f {
            assert!(
                m.contains("wrote a wrong answer") && m.contains(why),
                "{key}: {m}"
            );
        }
        assert!(gone(first), "{key}: child {first} not replaced");
        h.process(&lease(), &items(4, &["c"])).unwrap();
        let last = batch_log(&log).last().cloned().unwrap();
        assert_ne!(last.0, first, "{key}");
        assert_eq!(last.1, 1, "{key}: a new child counts from 1");
        h.close().unwrap();
    }
    // `ok N` twice: the batch is done; the surplus answer breaks the child before the
    // next batch, which runs in a new child.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = batch_handler(&log);
    h.process(&lease(), &items(1, &["twice"])).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    h.process(&lease(), &items(2, &["a"])).unwrap();
    let got = batch_log(&log);
    assert_ne!(got[0].0, got[1].0, "the child that answered twice was kept");
    h.close().unwrap();
}

/// A crash mid-batch: every item of the batch fails — the one named by `err N.I` with its
/// own message, the others with the exit status — even those the child handled (it never
/// answered `ok N`); the next batch restarts the child.
#[test]
fn batch_crash_mid_batch_fails_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut h = batch_handler(&log);
    let f = failures(h.process(&lease(), &items(1, &["a", "b", "crash", "c"])));
    assert_eq!(indexes(&f), [0, 1, 2, 3]);
    assert!(f[0].1.contains("about to crash"), "{}", f[0].1);
    for (_, m) in &f[1..] {
        assert!(
            m.contains("exited (exit status: 3)") && m.contains("batch.py"),
            "{m}"
        );
    }
    assert_eq!(
        batch_log(&log).len(),
        2,
        "a and b were handled before the crash"
    );
    let first = batch_log(&log)[0].0;
    assert!(gone(first));
    h.process(&lease(), &items(5, &["d"])).unwrap();
    assert_ne!(batch_log(&log).last().unwrap().0, first);
    h.close().unwrap();
}

/// The item timeout and the stall warning apply per batch: a batch child that does not
/// answer is killed at the timeout and the whole batch fails, naming the batch.
#[test]
fn batch_timeout_applies_to_the_batch() {
    let mut o = options(&["sh", "-c", "while IFS= read -r l; do :; done"], 8);
    o.framing = ExecFraming::Batch;
    o.stall_warning = Duration::from_millis(200);
    o.answer_timeout = Some(Duration::from_secs(1));
    let mut h = start(o);
    let t = Instant::now();
    let f = failures(h.process(&lease(), &items(1, &["k"; 5])));
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(indexes(&f), [0, 1, 2, 3, 4]);
    assert!(
        f[0].1
            .contains("answered nothing for 1s while holding 1 unit(s)"),
        "{}",
        f[0].1
    );
}

/// Through the binary: `--exec-framing batch` (and `rsmld.exec_framing = batch` in a
/// properties file) with per-item failures under --on-error skip: exactly the failed
/// items are dead-lettered, everything is checkpointed, and rsmld exits 0.
#[test]
fn binary_batch_framing_dead_letters_exactly_the_failed_items() {
    for via_properties in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let dlq = dir.path().join("dlq");
        let mut extra: Vec<String> = vec![
            "--workers".into(),
            "1".into(),
            "--on-error".into(),
            "skip".into(),
            "--dead-letter".into(),
            dlq.to_str().unwrap().into(),
        ];
        if via_properties {
            let props = dir.path().join("app.properties");
            std::fs::write(&props, "rsmld.exec_framing = batch\n").unwrap();
            extra.extend(["--properties".into(), props.to_str().unwrap().into()]);
        } else {
            extra.extend(["--exec-framing".into(), "batch".into()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut p = spawn_rsmld(&[&fixture("batch.py"), log.to_str().unwrap()], &extra);
        let mut model = common::initialize(&mut p);
        let records: Vec<Record> = (1..=6)
            .map(|i| record(i, if i == 2 || i == 5 { "fail" } else { "k" }))
            .collect();
        common::process_records(&mut p, &mut model, records).unwrap();
        let reqs = common::shutdown_requested(&mut p, &mut model).unwrap();
        assert_eq!(reqs.last(), Some(&checkpoint_at(6)), "{}", p.stderr());
        close_and_expect_exit_0(&mut p, Duration::from_secs(20));
        let mut dead = Vec::new();
        for entry in std::fs::read_dir(&dlq).unwrap() {
            for l in std::fs::read_to_string(entry.unwrap().path())
                .unwrap()
                .lines()
            {
                dead.push(l.to_owned());
            }
        }
        assert_eq!(dead.len(), 2, "{dead:?}");
        for (d, i) in dead.iter().zip([2, 5]) {
            assert!(
                d.contains(&seq(i)) && d.contains("failed by the test handler"),
                "{d}"
            );
        }
        let handled: Vec<String> = batch_log(&log).into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(handled, [seq(1), seq(3), seq(4), seq(6)]);
    }
}

/// Through the binary, batch framing: a child that holds a batch without answering is
/// named in one warning after the default 5 s (its pid, the batch and its item count),
/// then killed at --item-timeout; the batch fails (exit 1, no checkpoint).
#[test]
fn binary_batch_stall_warning_names_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!(
        "echo $$ > {}; while IFS= read -r l; do :; done",
        pidfile.display()
    );
    let m = marker("batch-stall");
    let extra = ["--exec-framing", "batch", "--item-timeout", "7s"];
    let (mut p, mut model) = marked_rsmld(&script, &m, &extra);
    let records = vec![record(1, "a"), record(2, "b"), record(3, "c")];
    common::process_records(&mut p, &mut model, records).unwrap();
    let pid = wait_for_file(&pidfile).trim().to_owned();
    let code = p.wait(Duration::from_secs(60)).unwrap();
    let err = p.stderr();
    assert_eq!(code, 1, "{err}");
    let warning = format!("exec handler child {pid} has answered nothing for");
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
    assert!(
        err.contains("it holds 1 unit(s) (batch 1, 3 item(s))"),
        "{err}"
    );
    assert!(
        err.contains("answered nothing for 7s while holding 1 unit(s)"),
        "{err}"
    );
    assert!(model.stored.is_empty(), "{:?}", model.stored);
    assert_eq!(outliving(&m), Vec::<i32>::new());
}

/// The lease every batch of these tests belongs to (the one the context names).
fn lease() -> LeaseId {
    LeaseId::new("", "shardId-000000000042")
}
