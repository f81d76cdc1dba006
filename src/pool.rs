//! The worker pool: hash-partitioned channels, one handler per worker, completions back.
//!
//! One shard's records are processed by N workers at once while items with the same
//! partition key keep their order: an item goes to worker `partition(key, N)` and every
//! worker handles its own bounded FIFO channel in order. The hash is FNV-1a (64-bit) of
//! the key's UTF-8 bytes, modulo N — fixed and documented, never a per-process random
//! hasher, so the same key lands on the same worker in every run (file names and
//! downstream ordering stay predictable across restarts).
//!
//! The workers run as long-lived jobs on a dedicated rayon thread pool of exactly N
//! threads. A worker takes what is queued (up to a batch limit) and hands it to its handler
//! as one batch, then sends the batch's record ids back on an unbounded completion channel
//! (unbounded so that a worker never blocks on the protocol thread; the in-flight bound
//! keeps it small). A handler error or panic is reported as [`WorkerEvent::Failed`] and
//! stops that worker: its channel closes and further dispatches to it fail.
//!
//! Shutdown drops the senders; each worker drains or (after [`Pool::abandon`]) drops what
//! is queued, closes its handler and returns; the pool joins them all.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::checkpoint::RecordId;
use crate::handler::{Handler, HandlerFactory, WorkerContext};
use crate::item::Item;

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Number of workers (and threads).
    pub workers: usize,
    /// Capacity of each worker's channel, in items.
    pub channel_capacity: usize,
    /// Most items handed to a handler at once.
    pub max_batch: usize,
}

/// What workers report.
#[derive(Debug)]
pub enum WorkerEvent {
    /// These items finished (one record id per item).
    Completed(Vec<RecordId>),
    /// A worker failed on a batch; these items (one record id per item) are not done.
    Failed {
        /// The worker index.
        worker: usize,
        /// The items of the failed batch.
        records: Vec<RecordId>,
        /// The handler's error or panic message.
        error: String,
    },
}

/// Pool errors.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Creating a handler failed.
    #[error("cannot start worker {worker}: {error}")]
    Start {
        /// The worker index.
        worker: usize,
        /// Why.
        error: String,
    },
    /// The thread pool could not be built.
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
    /// A worker has stopped (after a failure) and cannot take items.
    #[error("worker {0} has stopped")]
    WorkerGone(usize),
    /// A worker thread panicked outside its handler.
    #[error("a worker thread panicked: {0}")]
    Panicked(String),
}

/// The stable partition function: FNV-1a 64 of `key`, modulo `workers`.
pub fn partition(key: &[u8], workers: usize) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    (h % workers.max(1) as u64) as usize
}

/// A running pool of workers.
pub struct Pool {
    senders: Vec<Sender<Item>>,
    events: Receiver<WorkerEvent>,
    abandon: Arc<AtomicBool>,
    runner: Option<JoinHandle<Result<(), PoolError>>>,
}

impl Pool {
    /// Creates one handler per worker (all before any thread starts, so a bad
    /// configuration fails cleanly) and starts the workers.
    pub fn start(
        config: &PoolConfig,
        shard_id: &str,
        factory: &dyn HandlerFactory,
    ) -> Result<Pool, PoolError> {
        let n = config.workers.max(1);
        let mut handlers = Vec::with_capacity(n);
        for worker in 0..n {
            let ctx = WorkerContext {
                shard_id: shard_id.to_owned(),
                worker,
                workers: n,
            };
            let handler = factory.create(&ctx).map_err(|e| PoolError::Start {
                worker,
                error: e.to_string(),
            })?;
            handlers.push(handler);
        }
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("rsmld-worker-{i}"))
            .build()
            .map_err(|e| PoolError::Threads(e.to_string()))?;
        let (event_tx, events) = unbounded();
        let abandon = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::with_capacity(n);
        let mut jobs = Vec::with_capacity(n);
        for (worker, handler) in handlers.into_iter().enumerate() {
            let (tx, rx) = bounded(config.channel_capacity.max(1));
            senders.push(tx);
            jobs.push(Worker {
                id: worker,
                rx,
                events: event_tx.clone(),
                handler,
                abandon: abandon.clone(),
                max_batch: config.max_batch.max(1),
            });
        }
        drop(event_tx);
        let runner = std::thread::Builder::new()
            .name("rsmld-pool".into())
            .spawn(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    threads.scope(|scope| {
                        for job in jobs {
                            scope.spawn(move |_| job.run());
                        }
                    })
                }));
                result.map_err(|p| PoolError::Panicked(panic_message(&*p)))
            })
            .map_err(|e| PoolError::Threads(e.to_string()))?;
        Ok(Pool {
            senders,
            events,
            abandon,
            runner: Some(runner),
        })
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Routes an item to its worker; blocks while that worker's channel is full.
    pub fn dispatch(&self, item: Item) -> Result<(), PoolError> {
        let worker = partition(item.partition_key.as_bytes(), self.senders.len());
        self.senders[worker]
            .send(item)
            .map_err(|_| PoolError::WorkerGone(worker))
    }

    /// The completion channel.
    pub fn events(&self) -> &Receiver<WorkerEvent> {
        &self.events
    }

    /// Drops queued items from now on (batches already in a handler finish).
    pub fn abandon(&self) {
        self.abandon.store(true, Ordering::SeqCst);
    }

    /// Closes the channels and joins every worker, waiting at most `timeout` (a handler
    /// that hangs must not keep the process alive; its thread dies with the process).
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), PoolError> {
        self.senders.clear();
        let Some(runner) = self.runner.take() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + timeout;
        while !runner.is_finished() {
            if std::time::Instant::now() >= deadline {
                log::warn!(
                    "workers did not stop within {} ms; exiting anyway",
                    timeout.as_millis()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match runner.join() {
            Ok(result) => result,
            Err(p) => Err(PoolError::Panicked(panic_message(&*p))),
        }
    }
}

struct Worker {
    id: usize,
    rx: Receiver<Item>,
    events: Sender<WorkerEvent>,
    handler: Box<dyn Handler>,
    abandon: Arc<AtomicBool>,
    max_batch: usize,
}

impl Worker {
    fn run(mut self) {
        let mut batch: Vec<Item> = Vec::with_capacity(self.max_batch);
        while let Ok(first) = self.rx.recv() {
            batch.clear();
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            if self.abandon.load(Ordering::SeqCst) {
                continue;
            }
            let records: Vec<RecordId> = batch.iter().map(|i| i.record).collect();
            let handler = &mut self.handler;
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.process(&batch)));
            let error = match outcome {
                Ok(Ok(())) => {
                    if self.events.send(WorkerEvent::Completed(records)).is_err() {
                        break;
                    }
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(p) => format!("handler panicked: {}", panic_message(&*p)),
            };
            let _ = self.events.send(WorkerEvent::Failed {
                worker: self.id,
                records,
                error,
            });
            break;
        }
        if let Err(e) = self.handler.close() {
            log::error!("worker {}: closing the handler failed: {e}", self.id);
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_documented() {
        // FNV-1a 64 test vectors: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
        assert_eq!(
            partition(b"", usize::MAX),
            (0xcbf2_9ce4_8422_2325u64 % usize::MAX as u64) as usize
        );
        assert_eq!(
            partition(b"a", 1000),
            (0xaf63_dc4c_8601_ec8cu64 % 1000) as usize
        );
        assert_eq!(partition(b"anything", 1), 0);
    }
}
