//! One worker pool shared by several leases: per-lease abandon, failure isolation,
//! interleaving with per-key order within each lease, batches that never mix leases.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsmld::handler::{BatchError, Handler, HandlerError, WorkerContext};
use rsmld::pipeline::item::{Item, ItemBlock, Payload};
use rsmld::pipeline::partition::partition;
use rsmld::pool::{OnError, Pool, PoolConfig, PoolLease, WorkerEvent};
use rsmld::protocol::tracker::RecordId;
use rsmld::telemetry::{LeaseId, NullSink};

/// One item of lease `lease` (its sequence number says whose it is: `lease:n`).
fn item(lease: &str, n: u64, key: &str) -> ItemBlock {
    ItemBlock::from_items([Item {
        record: RecordId(n),
        sequence_number: &format!("{lease}:{n}"),
        sub_sequence_number: 0,
        user_sub: 0,
        user_total: 1,
        partition_key: key,
        explicit_hash_key: None,
        approximate_arrival_timestamp: None,
        data: Payload::Bytes(&[]),
    }])
}

/// What a recording handler saw: per item (worker, lease, key, n), in processing order.
type Seen = Arc<Mutex<Vec<(usize, String, String, u64)>>>;

/// Records every item; waits while `gate` is closed; fails items keyed `boom`; notes a
/// batch that mixes leases (an item whose `lease:` prefix is not the batch's lease).
struct Recorder {
    worker: usize,
    seen: Seen,
    gate: Arc<AtomicBool>,
    mixed: Arc<AtomicBool>,
}

impl Handler for Recorder {
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        while !self.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let lease_of = |it: &Item| it.sequence_number.split(':').next().unwrap().to_owned();
        if items.iter().any(|it| lease_of(it) != *lease.shard) {
            self.mixed.store(true, Ordering::SeqCst);
        }
        let mut failed = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let n: u64 = it
                .sequence_number
                .split(':')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            self.seen.lock().unwrap().push((
                self.worker,
                lease_of(it),
                it.partition_key.to_owned(),
                n,
            ));
            if it.partition_key == "boom" {
                failed.push((i, HandlerError::new("boom on purpose")));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BatchError::Items(failed))
        }
    }
}

struct Fixture {
    pool: Pool,
    seen: Seen,
    gate: Arc<AtomicBool>,
    mixed: Arc<AtomicBool>,
}

fn start(workers: usize, max_batch: usize, on_error: OnError, open: bool) -> Fixture {
    let seen: Seen = Arc::default();
    let gate = Arc::new(AtomicBool::new(open));
    let mixed = Arc::new(AtomicBool::new(false));
    let (s, g, m) = (seen.clone(), gate.clone(), mixed.clone());
    let factory = move |ctx: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Recorder {
            worker: ctx.worker,
            seen: s.clone(),
            gate: g.clone(),
            mixed: m.clone(),
        }))
    };
    let config = PoolConfig {
        workers,
        channel_capacity: 1024,
        max_batch,
        on_error,
        ..PoolConfig::default()
    };
    let pool = Pool::start(&config, &factory, Arc::new(NullSink)).unwrap();
    Fixture {
        pool,
        seen,
        gate,
        mixed,
    }
}

/// Collects the lease's events until `want` items completed (or a failure, or 30 s).
fn collect(lease: &PoolLease, want: usize) -> (Vec<u64>, Option<(Vec<RecordId>, String)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = Vec::new();
    while done.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match lease.events().recv_timeout(left) {
            Ok(WorkerEvent::Completed(ids)) => done.extend(ids.iter().map(|r| r.0)),
            Ok(WorkerEvent::Failed { records, error, .. }) => {
                return (done, Some((records, error)));
            }
            Err(_) => break,
        }
    }
    (done, None)
}

/// Two leases with queued work on the same workers; one is abandoned: the other's items
/// all complete, and the abandoned one's late completions never arrive (its queued items
/// are dropped: at most the batch each worker was already running is processed).
#[test]
fn abandoning_one_lease_leaves_the_other_untouched() {
    let (workers, max_batch, per_lease) = (2, 4, 400u64);
    let f = start(workers, max_batch, OnError::Fail, false);
    let a = f.pool.attach(LeaseId::new("app", "a"));
    let b = f.pool.attach(LeaseId::new("app", "b"));
    for n in 0..per_lease {
        let key = format!("k{}", n % 7);
        a.dispatch_block(item("a", n, &key)).unwrap();
        b.dispatch_block(item("b", n, &key)).unwrap();
    }
    // Each worker is (most likely) inside its first handler call, the rest is queued;
    // what is asserted below holds whatever the timing.
    std::thread::sleep(Duration::from_millis(50));
    a.abandon();
    f.gate.store(true, Ordering::SeqCst);
    let (done_b, failed_b) = collect(&b, per_lease as usize);
    assert!(failed_b.is_none(), "{failed_b:?}");
    let mut done_b = done_b;
    done_b.sort_unstable();
    assert_eq!(done_b, (0..per_lease).collect::<Vec<_>>());
    // Lease a: nothing is reported after the abandon, not even the batches that were
    // running when it came.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        a.events().try_recv().is_err(),
        "an abandoned lease got an event"
    );
    let seen = f.seen.lock().unwrap();
    let processed_a = seen.iter().filter(|(_, l, _, _)| l == "a").count();
    assert!(
        processed_a <= workers * max_batch,
        "{processed_a} items of the abandoned lease were processed after the abandon"
    );
    assert!(!f.mixed.load(Ordering::SeqCst), "a batch mixed two leases");
    drop(seen);
    f.pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Under `--on-error fail`, a failed item fails its lease only: the lease gets the
/// failure and nothing of it after that, while the other lease, whose items go to the
/// same (single) worker, completes. Before, the worker stopped, and every lease on it
/// would have waited forever.
#[test]
fn a_failure_fails_its_lease_and_the_worker_serves_the_others() {
    let f = start(1, 2, OnError::Fail, false);
    let a = f.pool.attach(LeaseId::new("app", "a"));
    let b = f.pool.attach(LeaseId::new("app", "b"));
    for n in 0..50u64 {
        let key = if n == 10 { "boom" } else { "fine" };
        a.dispatch_block(item("a", n, key)).unwrap();
    }
    for n in 0..50u64 {
        b.dispatch_block(item("b", n, "fine")).unwrap();
    }
    f.gate.store(true, Ordering::SeqCst);
    let (done_a, failed_a) = collect(&a, 50);
    let (records, error) = failed_a.expect("lease a did not fail");
    assert_eq!(records, vec![RecordId(10)]);
    assert!(
        error.contains("boom on purpose") && error.contains("a:10"),
        "{error}"
    );
    // Batches of 2 (the worker waits at the gate with its first two items, and each
    // batch after it is the next two): item 11 shared the failed batch and is done;
    // nothing later is.
    let mut done_a = done_a;
    done_a.sort_unstable();
    assert_eq!(done_a, (0..10).chain([11]).collect::<Vec<_>>());
    let (mut done_b, failed_b) = collect(&b, 50);
    assert!(failed_b.is_none(), "{failed_b:?}");
    done_b.sort_unstable();
    assert_eq!(done_b, (0..50).collect::<Vec<_>>());
    // The failed lease is not processed any further and takes no more items.
    std::thread::sleep(Duration::from_millis(100));
    assert!(a.events().try_recv().is_err());
    let seen = f.seen.lock().unwrap();
    let last_a = seen
        .iter()
        .filter(|(_, l, _, _)| l == "a")
        .map(|s| s.3)
        .max();
    assert_eq!(
        last_a,
        Some(11),
        "lease a was processed past its failed batch"
    );
    drop(seen);
    assert!(a.dispatch_block(item("a", 99, "fine")).is_err());
    // A lease attached later is served by the same worker.
    let c = f.pool.attach(LeaseId::new("app", "c"));
    c.dispatch_block(item("c", 0, "fine")).unwrap();
    assert_eq!(collect(&c, 1).0, vec![0]);
    f.pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Three leases dispatching at once, interleaved on the same workers: each lease's items
/// of one key are processed by the worker FNV-1a(key) % N names (the same for every
/// lease) and in dispatch order; every item completes exactly once on its own lease's
/// channel; no batch mixes leases.
#[test]
fn leases_interleave_on_the_workers_keeping_per_key_order_within_each() {
    let (workers, per_lease) = (3, 600u64);
    let f = start(workers, 8, OnError::Fail, true);
    let names = ["a", "b", "c"];
    let leases: Vec<PoolLease> = names
        .iter()
        .map(|n| f.pool.attach(LeaseId::new("app", n)))
        .collect();
    std::thread::scope(|scope| {
        for (name, lease) in names.iter().zip(&leases) {
            scope.spawn(move || {
                for n in 0..per_lease {
                    let key = format!("key-{}", (n * 7 + name.len() as u64) % 11);
                    lease.dispatch_block(item(name, n, &key)).unwrap();
                }
            });
        }
    });
    for lease in &leases {
        let (mut done, failed) = collect(lease, per_lease as usize);
        assert!(failed.is_none(), "{failed:?}");
        done.sort_unstable();
        assert_eq!(done, (0..per_lease).collect::<Vec<_>>(), "{}", lease.id());
    }
    let seen = f.seen.lock().unwrap();
    let mut per_key: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut leases_per_worker: BTreeMap<usize, HashSet<String>> = BTreeMap::new();
    for (worker, lease, key, n) in seen.iter() {
        assert_eq!(*worker, partition(key.as_bytes(), workers), "{key}");
        per_key
            .entry((lease.clone(), key.clone()))
            .or_default()
            .push(*n);
        leases_per_worker
            .entry(*worker)
            .or_default()
            .insert(lease.clone());
    }
    for ((lease, key), order) in &per_key {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, &sorted, "lease {lease}, key {key}: out of order");
    }
    assert!(
        leases_per_worker.values().any(|l| l.len() == names.len()),
        "no worker served every lease: {leases_per_worker:?}"
    );
    assert!(!f.mixed.load(Ordering::SeqCst), "a batch mixed two leases");
    drop(seen);
    f.pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Ending a lease (dropping its handle) drops what it still had queued; shutdown with a
/// lease still attached abandons it and returns within its bound.
#[test]
fn ending_a_lease_drops_its_queue_and_shutdown_abandons_the_rest() {
    let f = start(1, 1, OnError::Fail, false);
    let a = f.pool.attach(LeaseId::new("app", "a"));
    let b = f.pool.attach(LeaseId::new("app", "b"));
    for n in 0..20u64 {
        a.dispatch_block(item("a", n, "k")).unwrap();
        b.dispatch_block(item("b", n, "k")).unwrap();
    }
    drop(a);
    f.gate.store(true, Ordering::SeqCst);
    let (mut done_b, _) = collect(&b, 20);
    done_b.sort_unstable();
    assert_eq!(done_b, (0..20).collect::<Vec<_>>());
    let processed_a = f.seen.lock().unwrap().iter().filter(|s| s.1 == "a").count();
    assert!(processed_a <= 1, "{processed_a} items of an ended lease");
    // Work queued behind a closed gate, then shutdown: it is abandoned, not waited for.
    f.gate.store(false, Ordering::SeqCst);
    for n in 20..40u64 {
        b.dispatch_block(item("b", n, "k")).unwrap();
    }
    let opener = {
        let gate = f.gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            gate.store(true, Ordering::SeqCst);
        })
    };
    f.pool.shutdown(Duration::from_secs(10)).unwrap();
    opener.join().unwrap();
    let processed_late = f
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.1 == "b" && s.3 >= 20)
        .count();
    assert!(processed_late <= 1, "{processed_late} items after shutdown");
    assert!(
        std::iter::from_fn(|| b.events().try_recv().ok()).all(|e| !matches!(
            e,
            WorkerEvent::Completed(ids) if ids.iter().any(|r| r.0 >= 20)
        )),
        "completions after shutdown"
    );
}

/// A handler call that outlives the item timeout and cannot be interrupted fails the
/// lease of the call; the worker is lost, so a lease with items queued behind it fails
/// too (instead of waiting forever), and dispatching to the lost worker is refused.
#[test]
fn a_hung_uninterruptible_call_fails_the_leases_waiting_on_its_worker() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let factory = move |ctx: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Recorder {
            worker: ctx.worker,
            seen: Seen::default(),
            gate: g.clone(),
            mixed: Arc::default(),
        }))
    };
    let config = PoolConfig {
        workers: 1,
        max_batch: 1,
        item_timeout: Some(Duration::from_millis(100)),
        ..PoolConfig::default()
    };
    let pool = Pool::start(&config, &factory, Arc::new(NullSink)).unwrap();
    let a = pool.attach(LeaseId::new("app", "a"));
    let b = pool.attach(LeaseId::new("app", "b"));
    a.dispatch_block(item("a", 0, "k")).unwrap();
    b.dispatch_block(item("b", 0, "k")).unwrap();
    let (done_a, failed_a) = collect(&a, 1);
    assert!(done_a.is_empty());
    let (_, error) = failed_a.expect("lease a did not fail");
    assert!(error.contains("item timeout"), "{error}");
    let (done_b, failed_b) = collect(&b, 1);
    assert!(done_b.is_empty());
    let (records, error) = failed_b.expect("lease b waited on a lost worker");
    assert_eq!(records, vec![RecordId(0)]);
    assert!(error.contains("stuck"), "{error}");
    let c = pool.attach(LeaseId::new("app", "c"));
    assert!(c.dispatch_block(item("c", 0, "k")).is_err());
    gate.store(true, Ordering::SeqCst);
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Waits until `f` holds (polling), at most 30 s.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The archive files of `dir`: (name, lines parsed).
fn archive(dir: &std::path::Path) -> Vec<(String, Vec<serde_json::Value>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            let lines = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (name, lines)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// Files of this process open under `dir`.
fn open_files_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(dir))
        .map(|t| t.display().to_string())
        .collect()
}

/// The file handler on a shared pool: each lease writes its own files per worker, named
/// by its shard as in child mode, every line naming the lease's shard; a lease's files
/// are closed when it ends, and a lease attached again starts a new file.
#[test]
fn file_handler_keeps_one_file_per_lease_and_worker() {
    use rsmld::handler::file::{FileFactory, FileOptions};
    let out = tempfile::tempdir().unwrap();
    let factory = FileFactory::new(FileOptions::new(out.path()));
    let config = PoolConfig {
        workers: 2,
        max_batch: 16,
        ..PoolConfig::default()
    };
    let pool = Pool::start(&config, &factory, Arc::new(NullSink)).unwrap();
    let a = pool.attach(LeaseId::new("app", "shardId-A"));
    let b = pool.attach(LeaseId::new("app", "shardId-B"));
    for n in 0..200u64 {
        let key = format!("k{}", n % 5);
        a.dispatch_block(item("a", n, &key)).unwrap();
        b.dispatch_block(item("b", n, &key)).unwrap();
    }
    assert_eq!(collect(&a, 200).0.len(), 200);
    assert_eq!(collect(&b, 200).0.len(), 200);
    drop(a);
    eventually("lease A's files to be closed", || {
        open_files_under(out.path())
            .iter()
            .all(|f| !f.contains("shardId-A."))
    });
    let files = archive(out.path());
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, lines) in &files {
        let shard = name.split('.').next().unwrap();
        assert!(shard == "shardId-A" || shard == "shardId-B", "{name}");
        assert!(
            name.ends_with(".w0.jsonl") || name.ends_with(".w1.jsonl"),
            "{name}"
        );
        for line in lines {
            assert_eq!(line["shardId"], shard, "{name}: {line}");
            seen.entry(shard.to_owned())
                .or_default()
                .push(line["sequenceNumber"].as_str().unwrap().to_owned());
        }
    }
    for (shard, prefix) in [("shardId-A", "a"), ("shardId-B", "b")] {
        let mut got = seen.remove(shard).unwrap_or_default();
        got.sort();
        let mut want: Vec<String> = (0..200).map(|n| format!("{prefix}:{n}")).collect();
        want.sort();
        assert_eq!(got, want, "{shard}");
    }
    // Attached again: a new file for the lease, next to the closed one.
    let before = files.len();
    let a = pool.attach(LeaseId::new("app", "shardId-A"));
    a.dispatch_block(item("a", 500, "k0")).unwrap();
    assert_eq!(collect(&a, 1).0, vec![500]);
    let files = archive(out.path());
    assert_eq!(files.len(), before + 1, "{files:?}");
    drop(a);
    drop(b);
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// The exec handler on a shared pool: one child per worker serves both leases, each item
/// line names its own lease's shard, and `RSMLD_SHARD_ID` is unset (a child serves many
/// shards); with a pool started for one lease it is that lease's shard, as in child mode.
#[test]
fn exec_children_serve_every_lease_and_name_each_items_shard() {
    use rsmld::handler::exec::{ExecFactory, ExecFraming, ExecOptions};
    let out = tempfile::tempdir().unwrap();
    let script = r#"echo "env ${RSMLD_SHARD_ID-unset}" >> "$0.$RSMLD_WORKER"
n=0
while IFS= read -r line; do
  n=$((n+1))
  printf '%s\n' "$line" >> "$0.$RSMLD_WORKER"
  echo "ok $n"
done"#;
    for sole in [false, true] {
        let base = out.path().join(format!("sole-{sole}"));
        let factory = ExecFactory::new(ExecOptions {
            command: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                base.display().to_string(),
            ],
            framing: ExecFraming::Item,
            max_pipelined: 8,
            restart_backoff: Duration::from_millis(10),
            restart_backoff_max: Duration::from_millis(40),
            stall_warning: Duration::from_secs(5),
            answer_timeout: None,
        });
        let config = PoolConfig {
            workers: 2,
            max_batch: 4,
            ..PoolConfig::default()
        };
        let a_id = LeaseId::new("app", "shardId-A");
        let pool = if sole {
            Pool::start_for_lease(&config, &factory, Arc::new(NullSink), &a_id).unwrap()
        } else {
            Pool::start(&config, &factory, Arc::new(NullSink)).unwrap()
        };
        let a = pool.attach(a_id);
        let b = (!sole).then(|| pool.attach(LeaseId::new("app", "shardId-B")));
        for n in 0..40u64 {
            let key = format!("k{}", n % 6);
            a.dispatch_block(item("a", n, &key)).unwrap();
            if let Some(b) = &b {
                b.dispatch_block(item("b", n, &key)).unwrap();
            }
        }
        assert_eq!(collect(&a, 40).0.len(), 40);
        if let Some(b) = &b {
            assert_eq!(collect(b, 40).0.len(), 40);
        }
        drop((a, b));
        pool.shutdown(Duration::from_secs(10)).unwrap();
        let mut items = 0;
        for w in 0..2 {
            let text = std::fs::read_to_string(format!("{}.{w}", base.display())).unwrap();
            let mut lines = text.lines();
            let env = lines.next().unwrap();
            let want = if sole { "env shardId-A" } else { "env unset" };
            assert_eq!(env, want, "worker {w}");
            for line in lines {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let seq = v["sequenceNumber"].as_str().unwrap();
                let shard = if seq.starts_with("a:") {
                    "shardId-A"
                } else {
                    "shardId-B"
                };
                assert_eq!(v["shardId"], shard, "{line}");
                items += 1;
            }
        }
        assert_eq!(items, if sole { 40 } else { 80 });
    }
}
