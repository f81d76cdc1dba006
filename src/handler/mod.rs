//! Handlers: what a worker does with its items.
//!
//! The seam is deliberately small. A [`HandlerFactory`] makes one [`Handler`] per worker
//! (so a handler needs no locking and may keep per-worker state: an open file, a child
//! process, a connection). A worker hands its handler *batches* of items, in the order the
//! items were routed to it, and reports them complete only after `process` returned `Ok`:
//! returning means "durably done" — a checkpoint may cover these items from now on.
//! An `Err` (or a panic) is a failure: nothing from that item on is ever checkpointed.
//!
//! Built-ins: [`discard`] (counts) and [`mod@file`] (one JSON line per item, per shard and
//! worker). The exec handler, durable rotation and user processors plug into the same
//! trait.

pub mod delay;
pub mod discard;
pub mod file;

use crate::item::Item;

/// Where a handler runs: the lease's shard and the worker's index.
#[derive(Clone, Debug)]
pub struct WorkerContext {
    /// The shard id of this lease.
    pub shard_id: String,
    /// This worker's index, `0..workers`.
    pub worker: usize,
    /// The number of workers.
    pub workers: usize,
}

/// A handler failure. `item` is the index in the batch of the first item that failed,
/// when the handler knows it (items before it succeeded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong, readable.
    pub message: String,
    /// The first failed item's index in the batch, if known.
    pub item: Option<usize>,
}

impl HandlerError {
    /// A failure of the whole batch.
    pub fn batch(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            item: None,
        }
    }
}

/// Processes the items routed to one worker.
pub trait Handler: Send {
    /// Processes a batch. `Ok` means every item is done (written, acknowledged, durable as
    /// far as this handler promises) and may be checkpointed.
    fn process(&mut self, items: &[Item]) -> Result<(), HandlerError>;

    /// Called once when the worker stops (end of input or shutdown).
    fn close(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Makes one handler per worker.
pub trait HandlerFactory: Send + Sync {
    /// Creates the handler for one worker; an error stops start-up with a clear message.
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError>;
}

impl<F> HandlerFactory for F
where
    F: Fn(&WorkerContext) -> Result<Box<dyn Handler>, HandlerError> + Send + Sync,
{
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        self(ctx)
    }
}
