//! The worker pool: per-key order through real threads, panics become failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use rsmld::handler::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use rsmld::pipeline::item::{Item, ItemBlock, Payload};
use rsmld::pool::{Pool, PoolConfig, WorkerEvent};
use rsmld::protocol::tracker::RecordId;
use rsmld::telemetry::{LeaseId, NullSink};

fn item(n: u64, key: &str) -> ItemBlock {
    ItemBlock::from_items([Item {
        record: RecordId(n),
        sequence_number: &n.to_string(),
        sub_sequence_number: 0,
        user_sub: 0,
        user_total: 1,
        partition_key: key,
        explicit_hash_key: None,
        approximate_arrival_timestamp: None,
        data: Payload::Bytes(&[]),
    }])
}

/// Records (worker, key, n) in processing order, sleeping a little per item.
struct Recorder {
    seen: Arc<Mutex<Vec<(usize, String, u64)>>>,
    worker: usize,
    delay_us: u64,
}

impl Handler for Recorder {
    fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        for it in items {
            std::thread::sleep(Duration::from_micros(self.delay_us * (it.record.0 % 3)));
            self.seen
                .lock()
                .unwrap()
                .push((self.worker, it.partition_key.to_owned(), it.record.0));
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Items with the same key are processed by one worker, in dispatch order; every item
    /// is completed exactly once.
    #[test]
    fn per_key_order_is_kept(keys in prop::collection::vec(0u8..12, 1..300), workers in 1usize..5) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let factory = move |ctx: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> {
            Ok(Box::new(Recorder { seen: s2.clone(), worker: ctx.worker, delay_us: 50 }))
        };
        let pool = Pool::start(&PoolConfig { workers, channel_capacity: 8, max_batch: 4, ..PoolConfig::default() }, &factory, Arc::new(NullSink)).unwrap();
        let lease = pool.attach(LeaseId::new("", "s"));
        for (n, k) in keys.iter().enumerate() {
            lease.dispatch_block(item(n as u64, &format!("key-{k}"))).unwrap();
        }
        let mut completed = Vec::new();
        while completed.len() < keys.len() {
            match lease.events().recv_timeout(Duration::from_secs(10)).unwrap() {
                WorkerEvent::Completed(ids) => completed.extend(ids.into_iter().map(|r| r.0)),
                WorkerEvent::Failed { error, .. } => panic!("{error}"),
            }
        }
        pool.shutdown(Duration::from_secs(5)).unwrap();
        completed.sort_unstable();
        prop_assert_eq!(completed, (0..keys.len() as u64).collect::<Vec<_>>());
        let seen = seen.lock().unwrap();
        for k in 0u8..12 {
            let key = format!("key-{k}");
            let mine: Vec<_> = seen.iter().filter(|(_, kk, _)| *kk == key).collect();
            let workers_used: std::collections::HashSet<_> = mine.iter().map(|(w, _, _)| *w).collect();
            prop_assert!(workers_used.len() <= 1);
            let order: Vec<u64> = mine.iter().map(|(_, _, n)| *n).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(order, sorted);
        }
    }
}

struct Panics;
impl Handler for Panics {
    fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        if items.iter().any(|i| i.partition_key == "boom") {
            panic!("handler exploded on purpose");
        }
        Ok(())
    }
}

/// A panic in a handler is reported as a failure of its batch, with the message; the
/// lease takes no more items; shutdown still joins cleanly.
#[test]
fn a_handler_panic_is_a_failure() {
    let factory =
        |_: &WorkerContext| -> Result<Box<dyn Handler>, HandlerError> { Ok(Box::new(Panics)) };
    let factory: &dyn HandlerFactory = &factory;
    let pool = Pool::start(
        &PoolConfig {
            workers: 1,
            channel_capacity: 4,
            max_batch: 1,
            ..PoolConfig::default()
        },
        factory,
        Arc::new(NullSink),
    )
    .unwrap();
    let lease = pool.attach(LeaseId::new("", "s"));
    lease.dispatch_block(item(0, "fine")).unwrap();
    lease.dispatch_block(item(1, "boom")).unwrap();
    let mut failed = None;
    for _ in 0..2 {
        match lease.events().recv_timeout(Duration::from_secs(5)).unwrap() {
            WorkerEvent::Completed(ids) => assert_eq!(ids, vec![RecordId(0)]),
            WorkerEvent::Failed {
                worker,
                records,
                error,
            } => failed = Some((worker, records, error)),
        }
    }
    let (worker, records, error) = failed.expect("no failure reported");
    assert_eq!((worker, records), (0, vec![RecordId(1)]));
    assert!(error.contains("handler exploded on purpose"), "{error}");
    // The lease has failed: further items of it cannot be dispatched.
    assert!(lease.dispatch_block(item(2, "x")).is_err());
    pool.shutdown(Duration::from_secs(5)).unwrap();
}
