//! One worker pool shared by several leases: per-lease abandon, failure isolation,
//! interleaving with per-key order within each lease, batches that never mix leases.

use crate::common;

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

/// Items `ns` of lease `lease`, all keyed `key`, in one block (so that a worker gets them
/// at once and cuts its batches exactly by the batch size, whatever the timing).
fn block(lease: &str, ns: std::ops::Range<u64>, key: &str) -> ItemBlock {
    let seqs: Vec<String> = ns.clone().map(|n| format!("{lease}:{n}")).collect();
    ItemBlock::from_items(ns.zip(&seqs).map(|(n, seq)| Item {
        record: RecordId(n),
        sequence_number: seq,
        sub_sequence_number: 0,
        user_sub: 0,
        user_total: 1,
        partition_key: key,
        explicit_hash_key: None,
        approximate_arrival_timestamp: None,
        data: Payload::Bytes(&[]),
    }))
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
    let f = start(1, 1, OnError::Fail, false);
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
    // Batches of one item: everything before the failed item is done, nothing after.
    let mut done_a = done_a;
    done_a.sort_unstable();
    assert_eq!(done_a, (0..10).collect::<Vec<_>>());
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
        Some(10),
        "lease a was processed past its failed item"
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
    // b's block was still in the channel (named), or the worker had taken it (unnamed:
    // only the stuck thread knows it).
    assert!(
        records.is_empty() || records == vec![RecordId(0)],
        "{records:?}"
    );
    assert!(error.contains("stuck"), "{error}");
    let c = pool.attach(LeaseId::new("app", "c"));
    assert!(c.dispatch_block(item("c", 0, "k")).is_err());
    gate.store(true, Ordering::SeqCst);
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Fair sharing: a hot lease with hundreds of batches queued on a worker does not make
/// another lease's item wait behind them; round robin by batch serves it within one turn
/// (counted in items handled before it, never in time). On the old FIFO channel it came
/// after all 200.
#[test]
fn a_hot_lease_cannot_starve_another_on_its_worker() {
    let f = start(1, 1, OnError::Fail, false);
    let hot = f.pool.attach(LeaseId::new("app", "hot"));
    let cold = f.pool.attach(LeaseId::new("app", "cold"));
    for n in 0..200u64 {
        hot.dispatch_block(item("hot", n, "k")).unwrap();
    }
    cold.dispatch_block(item("cold", 0, "k")).unwrap();
    f.gate.store(true, Ordering::SeqCst);
    let (done, failed) = collect(&cold, 1);
    assert_eq!((done, failed), (vec![0], None));
    let (done, failed) = collect(&hot, 200);
    assert!(failed.is_none());
    assert_eq!(done.len(), 200);
    let seen = f.seen.lock().unwrap().clone();
    let before = seen.iter().position(|s| s.1 == "cold").unwrap();
    assert!(
        before <= 2,
        "{before} items of the hot lease were handled before the other lease's one"
    );
    // The hot lease's own order is kept.
    let hot_order: Vec<u64> = seen.iter().filter(|s| s.1 == "hot").map(|s| s.3).collect();
    assert_eq!(hot_order, (0..200).collect::<Vec<_>>());
    f.pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Holds the acks of lease `a` (never resolved, never dropped: `held` keeps them); takes
/// 2 ms per batch of any other lease and resolves it at once; notes every `end_lease`.
struct HoldsA {
    held: Arc<Mutex<Vec<rsmld::handler::Ack>>>,
    ended: Arc<Mutex<Vec<String>>>,
}

impl Handler for HoldsA {
    fn process(&mut self, _lease: &LeaseId, _items: &[Item]) -> Result<(), BatchError> {
        Err(HandlerError::new("the pool calls submit").into())
    }

    fn submit(&mut self, lease: &LeaseId, _items: &[Item], ack: rsmld::handler::Ack) {
        if &*lease.shard == "a" {
            self.held.lock().unwrap().push(ack);
        } else {
            std::thread::sleep(Duration::from_millis(2));
            ack.done();
        }
    }

    fn end_lease(&mut self, lease: &LeaseId) -> Result<(), HandlerError> {
        self.ended.lock().unwrap().push(lease.shard.to_string());
        Ok(())
    }
}

/// A worker that never runs out of work (lease `hot` keeps 32 items outstanding on it, so
/// its queue is never empty) still does its housekeeping: a lease that ended is told to the
/// handler (`end_lease`), and an ack of another lease left pending past the item timeout
/// fails its batch. On the old code both waited for the worker to go idle, i.e. for as
/// long as the hot lease kept it busy (here: forever).
#[test]
fn a_worker_kept_busy_by_a_hot_lease_still_ends_leases_and_expires_acks() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(Mutex::new(Vec::new()));
    let (h, e) = (held.clone(), ended.clone());
    let factory = move |_: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(HoldsA {
            held: h.clone(),
            ended: e.clone(),
        }))
    };
    let config = PoolConfig {
        workers: 1,
        max_batch: 1,
        item_timeout: Some(Duration::from_millis(200)),
        ..PoolConfig::default()
    };
    let pool = Pool::start(&config, &factory, Arc::new(NullSink)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hot = pool.attach(LeaseId::new("app", "hot"));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut next, mut outstanding) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                while outstanding < 32 {
                    hot.dispatch_block(item("hot", next, "k")).unwrap();
                    next += 1;
                    outstanding += 1;
                }
                match hot.events().recv_timeout(Duration::from_secs(30)) {
                    Ok(WorkerEvent::Completed(ids)) => outstanding -= ids.len(),
                    other => panic!("the hot lease: {other:?}"),
                }
            }
            next
        })
    };
    let c = pool.attach(LeaseId::new("app", "c"));
    c.dispatch_block(item("c", 0, "k")).unwrap();
    let (done, failed) = collect(&c, 1);
    assert_eq!((done, failed), (vec![0], None));
    c.end();
    eventually("the handler told of lease c's end", || {
        ended.lock().unwrap().iter().any(|s| s == "c")
    });
    let a = pool.attach(LeaseId::new("app", "a"));
    a.dispatch_block(item("a", 0, "k")).unwrap();
    let (done, failed) = collect(&a, 1);
    assert!(done.is_empty(), "{done:?}");
    let (records, error) = failed.expect("the held ack never failed its batch");
    assert_eq!(records, vec![RecordId(0)]);
    assert!(
        error.contains("no acknowledgement within the item timeout"),
        "{error}"
    );
    stop.store(true, Ordering::SeqCst);
    assert!(feeder.join().unwrap() > 32);
    held.lock().unwrap().clear();
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// A retry backoff of lease a (30 s) is a deferred batch of a, not a sleep of the worker:
/// lease b's items on the same worker are handled while a's retry waits (by order of
/// events: a's failed item was seen once when b completes). Shutdown then cuts the
/// waiting retry short (it never runs). On the old code the worker slept out the backoff
/// and retried before b's items.
#[test]
fn a_retry_backoff_of_one_lease_does_not_hold_the_worker_for_another() {
    let f = start(
        1,
        8,
        OnError::Retry {
            retries: 3,
            // Long, so that a loaded machine never reaches it during the test.
            backoff: Duration::from_secs(30),
        },
        true,
    );
    let a = f.pool.attach(LeaseId::new("app", "a"));
    let b = f.pool.attach(LeaseId::new("app", "b"));
    a.dispatch_block(item("a", 0, "boom")).unwrap();
    let seen = |all: &Seen, lease: &str| {
        let seen = all.lock().unwrap();
        seen.iter().filter(|s| s.1 == lease).count()
    };
    eventually("a's first attempt", || seen(&f.seen, "a") == 1);
    b.dispatch_block(block("b", 0..3, "k")).unwrap();
    let (mut done, failed) = collect(&b, 3);
    done.sort_unstable();
    assert_eq!((done, failed), (vec![0, 1, 2], None));
    assert_eq!(
        seen(&f.seen, "a"),
        1,
        "a's retry ran before b's items (the backoff held the worker)"
    );
    assert!(a.events().try_recv().is_err(), "a reported something");
    let all = f.seen.clone();
    f.pool.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(seen(&all, "a"), 1, "a retry ran after shutdown");
}

/// Handles lease `a`'s items only once `gate` opens (and cannot be interrupted); other
/// leases' at once.
struct HangsA {
    gate: Arc<AtomicBool>,
}

impl Handler for HangsA {
    fn process(&mut self, lease: &LeaseId, _items: &[Item]) -> Result<(), BatchError> {
        while &*lease.shard == "a" && !self.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// A lease whose block the worker had already taken (collected in one batch interval
/// with the hung call's) fails promptly when the worker is lost, instead of waiting for
/// a call that may never return; so does every other live lease of the pool. On the old
/// code lease b waited until the hung call returned.
#[test]
fn a_lost_worker_fails_the_leases_whose_blocks_it_had_taken() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let factory = move |_: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(HangsA { gate: g.clone() }))
    };
    let config = PoolConfig {
        workers: 1,
        max_batch: 10,
        batch_interval: Duration::from_millis(500),
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
    assert!(failed_a
        .expect("lease a did not fail")
        .1
        .contains("item timeout"));
    // collect waits 30 s at most; the gate stays closed all that time.
    let (done_b, failed_b) = collect(&b, 1);
    assert!(
        done_b.is_empty(),
        "b's item was handled: the test did not strand it"
    );
    let (_, error) = failed_b.expect("lease b waited on a lost worker");
    assert!(error.contains("lost") || error.contains("stuck"), "{error}");
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
        // A lease of a named application: `<application>.<shardId>.…`.
        let shard = name
            .strip_prefix("app.")
            .unwrap()
            .split('.')
            .next()
            .unwrap();
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

// ------------------------------------------------------------ the pipelining form

/// A batch a pipelining handler took: its lease, record ids, and the ack to resolve.
struct Submitted {
    lease: String,
    records: Vec<u64>,
    ack: rsmld::handler::Ack,
}

/// A pipelining handler: `submit` hands each batch (with its ack) to the test and returns
/// at once; the test resolves the acks later, from its own thread, in any order.
struct Pipelined {
    to: crossbeam_channel::Sender<Submitted>,
}

impl Handler for Pipelined {
    fn process(&mut self, _lease: &LeaseId, _items: &[Item]) -> Result<(), BatchError> {
        Err(HandlerError::new("the pool calls submit").into())
    }

    fn submit(&mut self, lease: &LeaseId, items: &[Item], ack: rsmld::handler::Ack) {
        let records = items.iter().map(|i| i.record.0).collect();
        let lease = lease.shard.to_string();
        self.to
            .send(Submitted {
                lease,
                records,
                ack,
            })
            .unwrap();
    }
}

fn start_pipelined(
    workers: usize,
    max_batch: usize,
    on_error: OnError,
) -> (Pool, crossbeam_channel::Receiver<Submitted>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let factory = move |_: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Pipelined { to: tx.clone() }))
    };
    let config = PoolConfig {
        workers,
        max_batch,
        on_error,
        ..PoolConfig::default()
    };
    (
        Pool::start(&config, &factory, Arc::new(NullSink)).unwrap(),
        rx,
    )
}

/// Takes `n` submissions (30 s at most).
fn take(rx: &crossbeam_channel::Receiver<Submitted>, n: usize) -> Vec<Submitted> {
    (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("no submission")
        })
        .collect()
}

/// The end of the longest prefix 0..k of record ids that are all complete: what a
/// checkpoint may cover.
fn prefix(done: &HashSet<u64>) -> u64 {
    (0..).find(|n| !done.contains(n)).unwrap()
}

/// Receives the lease's completions for up to `wait`, into `done`; returns a failure.
fn drain(
    lease: &PoolLease,
    done: &mut HashSet<u64>,
    wait: Duration,
) -> Option<(Vec<RecordId>, String)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lease.events().recv_timeout(left) {
            Ok(WorkerEvent::Completed(ids)) => done.extend(ids.iter().map(|r| r.0)),
            Ok(WorkerEvent::Failed { records, error, .. }) => return Some((records, error)),
            Err(_) => return None,
        }
    }
}

/// Drains the lease's completions into `done` until `f` holds (30 s at most, and no
/// failure meanwhile).
fn drain_until(lease: &PoolLease, done: &mut HashSet<u64>, f: impl Fn(&HashSet<u64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f(done) {
        assert!(Instant::now() < deadline, "timed out; completed: {done:?}");
        let failure = drain(lease, done, Duration::from_millis(20));
        assert!(failure.is_none(), "{failure:?}");
    }
}

/// Acks resolved later, from another thread: the worker hands out every batch without
/// waiting for the acks, nothing counts before its ack says done, and the checkpointable
/// prefix follows the resolutions batch by batch.
#[test]
fn acks_resolved_later_from_another_thread_complete_their_items() {
    let (pool, submitted) = start_pipelined(1, 4, OnError::Fail);
    let lease = pool.attach(LeaseId::new("app", "a"));
    lease.dispatch_block(block("a", 0..40, "k")).unwrap();
    // All ten batches reach the handler while no ack is resolved.
    let batches = take(&submitted, 10);
    let mut done = HashSet::new();
    assert!(drain(&lease, &mut done, Duration::from_millis(100)).is_none());
    assert!(done.is_empty(), "completed before any ack: {done:?}");
    // The resolver thread resolves one batch per go signal and says which.
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
    let (resolved_tx, resolved_rx) = crossbeam_channel::unbounded();
    let resolver = std::thread::spawn(move || {
        for b in batches {
            go_rx.recv().unwrap();
            let last = *b.records.last().unwrap();
            b.ack.done();
            resolved_tx.send(last).unwrap();
        }
    });
    for _ in 0..10 {
        go_tx.send(()).unwrap();
        let last = resolved_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        drain_until(&lease, &mut done, |d| prefix(d) > last);
        // Exactly what has been acknowledged, and nothing more arrives until the next.
        assert!(drain(&lease, &mut done, Duration::from_millis(30)).is_none());
        assert_eq!(prefix(&done), last + 1);
        assert_eq!(done.len() as u64, last + 1);
    }
    resolver.join().unwrap();
    assert_eq!(prefix(&done), 40);
    assert_eq!(done.len(), 40);
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// Acks resolved out of order: each batch's items complete when its own ack is
/// resolved, and the checkpointable prefix moves only when the oldest batch is done.
#[test]
fn acks_resolved_out_of_order_move_the_prefix_only_when_the_oldest_is_done() {
    let (pool, submitted) = start_pipelined(1, 5, OnError::Fail);
    let lease = pool.attach(LeaseId::new("app", "a"));
    lease.dispatch_block(block("a", 0..20, "k")).unwrap();
    let mut batches = take(&submitted, 4);
    let mut done = HashSet::new();
    // Resolve the last three (newest first): their items complete, the prefix stays 0.
    for b in batches.drain(1..).rev() {
        let records = b.records.clone();
        b.ack.done();
        drain_until(&lease, &mut done, |d| records.iter().all(|r| d.contains(r)));
        assert_eq!(prefix(&done), 0);
    }
    assert_eq!(done.len(), 15);
    let oldest = batches.pop().unwrap();
    assert_eq!(oldest.records, vec![0, 1, 2, 3, 4]);
    std::thread::spawn(move || oldest.ack.done())
        .join()
        .unwrap();
    drain_until(&lease, &mut done, |d| d.len() == 20);
    assert_eq!(prefix(&done), 20);
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// An ack dropped unresolved fails its items, never counts them: under `--on-error
/// fail` the lease fails with them (naming the dropped ack), the acks resolved after it
/// do not count, so nothing past them is checkpointable; another lease on the same
/// worker goes on.
#[test]
fn a_dropped_ack_fails_its_items_and_under_fail_stops_the_lease() {
    let (pool, submitted) = start_pipelined(1, 4, OnError::Fail);
    let a = pool.attach(LeaseId::new("app", "a"));
    let b = pool.attach(LeaseId::new("app", "b"));
    a.dispatch_block(block("a", 0..16, "k")).unwrap();
    let mut batches = take(&submitted, 4);
    let mut done = HashSet::new();
    let rest = batches.split_off(2);
    let [first, second] = <[Submitted; 2]>::try_from(batches).ok().unwrap();
    first.ack.done();
    second.ack.done();
    let mut rest = rest.into_iter();
    let dropped = rest.next().unwrap();
    assert_eq!(dropped.records, vec![8, 9, 10, 11]);
    std::thread::spawn(move || drop(dropped)).join().unwrap();
    for later in rest {
        later.ack.done();
    }
    let (records, error) =
        drain(&a, &mut done, Duration::from_secs(30)).expect("lease a did not fail");
    assert_eq!(records, (8..12).map(RecordId).collect::<Vec<_>>());
    assert!(error.contains(rsmld::handler::ack::DROPPED), "{error}");
    assert!(error.contains("a:8"), "{error}");
    assert!(drain(&a, &mut done, Duration::from_millis(200)).is_none());
    assert_eq!(prefix(&done), 8, "{done:?}");
    assert!(
        done.iter().all(|&n| n < 8),
        "completions past the failed ack: {done:?}"
    );
    assert!(a.dispatch_block(item("a", 99, "k")).is_err());
    // The worker serves the other lease.
    b.dispatch_block(item("b", 0, "k")).unwrap();
    let s = take(&submitted, 1).pop().unwrap();
    assert_eq!((s.lease.as_str(), s.records.as_slice()), ("b", &[0][..]));
    s.ack.done();
    let mut done_b = HashSet::new();
    drain_until(&b, &mut done_b, |d| !d.is_empty());
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

/// A dropped ack goes through the failure policy like any failure: under `retry` the
/// same items are submitted again, and their second ack completes them.
#[test]
fn a_dropped_ack_is_retried_under_retry() {
    let policy = OnError::Retry {
        retries: 2,
        backoff: Duration::from_millis(10),
    };
    let (pool, submitted) = start_pipelined(1, 3, policy);
    let lease = pool.attach(LeaseId::new("app", "a"));
    lease.dispatch_block(block("a", 0..3, "k")).unwrap();
    let first = take(&submitted, 1).pop().unwrap();
    assert_eq!(first.records, vec![0, 1, 2]);
    drop(first);
    let again = take(&submitted, 1).pop().unwrap();
    assert_eq!(again.records, vec![0, 1, 2]);
    let mut done = HashSet::new();
    assert!(drain(&lease, &mut done, Duration::from_millis(50)).is_none());
    assert!(done.is_empty());
    again.ack.done();
    drain_until(&lease, &mut done, |d| d.len() == 3);
    pool.shutdown(Duration::from_secs(10)).unwrap();
}

// ------------------------------------- the pipelining form through the real driver

/// What the pipelining handlers of one run share: the records whose ack said done, the
/// items submitted and not yet resolved (and the most ever), and which record's batch to
/// drop unresolved.
#[derive(Default)]
struct Sink {
    done: Mutex<HashSet<u64>>,
    outstanding: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    drop_batch_of: Option<u64>,
}

/// A pipelining handler: `submit` hands the batch to a committer thread, which resolves
/// the acks it holds after a short delay, newest first (out of order), and drops the ack
/// of the batch holding `drop_batch_of` unresolved.
struct Committer {
    sink: Arc<Sink>,
    to: Option<crossbeam_channel::Sender<(Vec<u64>, rsmld::handler::Ack)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn new(sink: Arc<Sink>) -> Committer {
        let (to, from) = crossbeam_channel::unbounded::<(Vec<u64>, rsmld::handler::Ack)>();
        let committer_sink = sink.clone();
        let thread = std::thread::spawn(move || {
            let sink = committer_sink;
            let mut held = Vec::new();
            loop {
                match from.recv_timeout(Duration::from_millis(2)) {
                    Ok(batch) => {
                        held.push(batch);
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) if held.is_empty() => {
                        return
                    }
                    Err(_) => {}
                }
                // Nothing new for 2 ms: commit what is held, newest first.
                while let Some((records, ack)) = held.pop() {
                    sink.outstanding.fetch_sub(records.len(), Ordering::SeqCst);
                    if sink.drop_batch_of.is_some_and(|r| records.contains(&r)) {
                        drop(ack);
                        continue;
                    }
                    sink.done.lock().unwrap().extend(&records);
                    ack.done();
                }
            }
        });
        Committer {
            sink,
            to: Some(to),
            thread: Some(thread),
        }
    }
}

impl Handler for Committer {
    fn process(&mut self, _lease: &LeaseId, _items: &[Item]) -> Result<(), BatchError> {
        Err(HandlerError::new("the pool calls submit").into())
    }

    fn submit(&mut self, _lease: &LeaseId, items: &[Item], ack: rsmld::handler::Ack) {
        let records: Vec<u64> = items
            .iter()
            .map(|i| {
                i.sequence_number[i.sequence_number.len() - 27..]
                    .parse()
                    .unwrap()
            })
            .collect();
        let now = self
            .sink
            .outstanding
            .fetch_add(records.len(), Ordering::SeqCst)
            + records.len();
        self.sink.most.fetch_max(now, Ordering::SeqCst);
        if let Some(to) = &self.to {
            let _ = to.send((records, ack));
        }
    }

    fn close(&mut self) -> Result<(), HandlerError> {
        self.to.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

/// The daemon's side of an in-process run: lines to rsmld, lines from it.
struct Daemon {
    to: std::os::unix::net::UnixStream,
    from: crossbeam_channel::Receiver<String>,
    model: common::CheckpointModel,
}

impl Daemon {
    fn send(&mut self, line: &str) {
        use std::io::Write;
        // rsmld may have stopped reading (it failed): the reply just goes nowhere.
        let _ = writeln!(self.to, "{line}");
    }

    /// Sends `line` and answers checkpoints (asserting that each covers only records
    /// whose acks said done) until the status, or `None` if rsmld stopped.
    fn action(&mut self, line: &str, sink: &Sink) -> Option<Vec<u64>> {
        use rsmld::codec::message::ProcessorMessage;
        self.send(line);
        let mut stored = Vec::new();
        loop {
            let got = self.from.recv_timeout(Duration::from_secs(30)).ok()?;
            let msg = ProcessorMessage::decode(got.as_bytes()).unwrap();
            match &msg {
                ProcessorMessage::Status { .. } => return Some(stored),
                ProcessorMessage::Checkpoint {
                    sequence_number: Some(s),
                    ..
                } => {
                    let upto: u64 = s.as_str()[s.as_str().len() - 27..].parse().unwrap();
                    let done = sink.done.lock().unwrap();
                    let missing: Vec<u64> = (0..=upto).filter(|r| !done.contains(r)).collect();
                    assert!(
                        missing.is_empty(),
                        "checkpoint at {upto} covers unacknowledged {missing:?}"
                    );
                    drop(done);
                    stored.push(upto);
                    let (reply, error) = self.model.answer(&msg);
                    assert_eq!(error, None, "{got}");
                    self.send(&reply);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// Runs rsmld's driver in-process with `args` and pipelining handlers sharing `sink`;
/// returns the daemon side and the driver's thread.
fn run_driver(
    args: &[&str],
    sink: &Arc<Sink>,
) -> (Daemon, std::thread::JoinHandle<Result<(), String>>) {
    use clap::Parser;
    let cli = rsmld::cli::config::Cli::try_parse_from(
        ["rsmld", "--handler", "discard"].iter().chain(args),
    )
    .unwrap();
    let mut config = cli.run.into_runtime_config().unwrap();
    let s = sink.clone();
    config.handlers = Arc::new(
        move |_: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
            Ok(Box::new(Committer::new(s.clone())))
        },
    );
    // Socket pairs stand in for the daemon's pipes (both ends are plain byte streams).
    let (stdin_w, stdin_r) = std::os::unix::net::UnixStream::pair().unwrap();
    let (stdout_r, stdout_w) = std::os::unix::net::UnixStream::pair().unwrap();
    let driver = std::thread::spawn(move || {
        rsmld::runtime::Runtime::new(config, Arc::new(rsmld::telemetry::LogSink))
            .run_child(stdin_r, stdout_w)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let (tx, from) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout_r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let daemon = Daemon {
        to: stdin_w,
        from,
        model: common::CheckpointModel::default(),
    };
    (daemon, driver)
}

/// Sends `batches` of `per_batch` records through `daemon` (answering checkpoints), then
/// `shutdownRequested`; returns every checkpoint stored, and whether rsmld answered
/// every action.
fn feed(daemon: &mut Daemon, sink: &Sink, batches: u64, per_batch: u64) -> (Vec<u64>, bool) {
    let mut stored = Vec::new();
    let init = common::init_line_at("shardId-000000000001", "TRIM_HORIZON");
    assert!(daemon.action(&init, sink).is_some());
    for b in 0..batches {
        let records = (b * per_batch..(b + 1) * per_batch)
            .map(|i| common::record(i, &format!("k{}", i % 5)))
            .collect();
        let line = common::batch(&mut daemon.model, records);
        match daemon.action(&line, sink) {
            Some(mut s) => stored.append(&mut s),
            None => return (stored, false),
        }
    }
    match daemon.action(common::SHUTDOWN_REQUESTED, sink) {
        Some(mut s) => stored.append(&mut s),
        None => return (stored, false),
    }
    (stored, true)
}

/// Acks resolved later and out of order by another thread, through the real driver and
/// session: every checkpoint covers only records whose acks said done, the last one is
/// the last record, and the items submitted and not yet resolved never exceed
/// `--max-in-flight` plus one daemon batch (the session's bound holds for pending acks).
#[test]
fn through_the_driver_checkpoints_follow_acks_and_max_in_flight_bounds_them() {
    let sink = Arc::new(Sink::default());
    let (mut daemon, driver) = run_driver(
        &[
            "--workers",
            "2",
            "--batch-size",
            "3",
            "--max-in-flight",
            "12",
            "--checkpoint-interval",
            "0s",
        ],
        &sink,
    );
    let (stored, answered) = feed(&mut daemon, &sink, 30, 10);
    assert!(answered, "rsmld stopped: {:?}", driver.join());
    drop(daemon);
    driver.join().unwrap().unwrap();
    assert_eq!(stored.last(), Some(&299), "{stored:?}");
    // At least one checkpoint mid-stream besides the final one.
    assert!(stored.len() >= 2, "{stored:?}");
    let most = sink.most.load(Ordering::SeqCst);
    assert!(most <= 12 + 10, "{most} items outstanding at once");
}

/// An ack dropped unresolved, through the real driver under `--on-error fail`: rsmld
/// stops with the dropped ack's error, and no checkpoint ever covers its items.
#[test]
fn through_the_driver_a_dropped_ack_stops_the_lease_before_its_items() {
    let sink = Arc::new(Sink {
        drop_batch_of: Some(57),
        ..Sink::default()
    });
    let (mut daemon, driver) = run_driver(
        &[
            "--workers",
            "2",
            "--batch-size",
            "3",
            "--max-in-flight",
            "12",
            "--checkpoint-interval",
            "0s",
        ],
        &sink,
    );
    let (stored, answered) = feed(&mut daemon, &sink, 30, 10);
    assert!(!answered, "rsmld went on past a dropped ack");
    drop(daemon);
    let error = driver.join().unwrap().unwrap_err();
    assert!(error.contains(rsmld::handler::ack::DROPPED), "{error}");
    assert!(stored.iter().all(|&s| s < 57), "{stored:?}");
    assert!(!sink.done.lock().unwrap().contains(&57));
}

/// With `--item-timeout`, an ack neither resolved nor dropped fails its batch once the
/// timeout passes (the lease is not held forever), and resolving it afterwards counts
/// nothing; under `retry` the items are submitted again with a new ack.
#[test]
fn an_ack_left_pending_past_the_item_timeout_fails() {
    let (tx, submitted) = crossbeam_channel::unbounded();
    let factory = move |_: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Pipelined { to: tx.clone() }))
    };
    let config = PoolConfig {
        workers: 1,
        max_batch: 2,
        item_timeout: Some(Duration::from_millis(100)),
        on_error: OnError::Retry {
            retries: 1,
            backoff: Duration::from_millis(1),
        },
        ..PoolConfig::default()
    };
    let pool = Pool::start(&config, &factory, Arc::new(NullSink)).unwrap();
    let lease = pool.attach(LeaseId::new("app", "a"));
    lease.dispatch_block(item("a", 0, "k")).unwrap();
    let first = take(&submitted, 1).pop().unwrap();
    // Held past the timeout: the batch is failed and retried with a new ack.
    let again = take(&submitted, 1).pop().unwrap();
    assert_eq!(again.records, vec![0]);
    first.ack.done();
    let mut done = HashSet::new();
    assert!(drain(&lease, &mut done, Duration::from_millis(50)).is_none());
    assert!(done.is_empty(), "a stale ack counted: {done:?}");
    // The retry is held too: the lease fails.
    let (records, error) =
        drain(&lease, &mut done, Duration::from_secs(30)).expect("the lease did not fail");
    assert_eq!(records, vec![RecordId(0)]);
    assert!(
        error.contains("no acknowledgement within the item timeout"),
        "{error}"
    );
    again.ack.done();
    assert!(drain(&lease, &mut done, Duration::from_millis(50)).is_none());
    assert!(done.is_empty());
    pool.shutdown(Duration::from_secs(10)).unwrap();
}
