//! One worker pool shared by several leases: per-lease abandon, failure isolation,
//! interleaving with per-key order within each lease, batches that never mix leases.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsmld::checkpoint::RecordId;
use rsmld::handler::{BatchError, Handler, HandlerError, WorkerContext};
use rsmld::item::{Item, ItemBlock, Payload};
use rsmld::pool::{partition, OnError, Pool, PoolConfig, PoolLease, WorkerEvent};
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

/// Records every item; waits while `gate` is closed; fails items keyed `boom`; asserts
/// that a batch never mixes leases.
struct Recorder {
    worker: usize,
    seen: Seen,
    gate: Arc<AtomicBool>,
    mixed: Arc<AtomicBool>,
}

impl Handler for Recorder {
    fn process(&mut self, items: &[Item]) -> Result<(), BatchError> {
        while !self.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let lease_of = |it: &Item| it.sequence_number.split(':').next().unwrap().to_owned();
        let first = lease_of(&items[0]);
        if items.iter().any(|it| lease_of(it) != first) {
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
    let a = f.pool.attach(LeaseId::new("app", "shard-a"));
    let b = f.pool.attach(LeaseId::new("app", "shard-b"));
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
    let a = f.pool.attach(LeaseId::new("app", "shard-a"));
    let b = f.pool.attach(LeaseId::new("app", "shard-b"));
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
    let c = f.pool.attach(LeaseId::new("app", "shard-c"));
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
