//! The `discard` handler: counts items and does nothing else. Measures rsmld's own cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use crate::pipeline::item::Item;
use crate::telemetry::LeaseId;

/// Makes discard handlers that share one counter.
#[derive(Clone, Debug, Default)]
pub struct DiscardFactory {
    count: Arc<AtomicU64>,
}

impl DiscardFactory {
    /// A factory with a fresh counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items discarded so far, over all workers.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl HandlerFactory for DiscardFactory {
    fn create(&self, _ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Discard {
            count: self.count.clone(),
        }))
    }
}

struct Discard {
    count: Arc<AtomicU64>,
}

impl Handler for Discard {
    fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        self.count.fetch_add(items.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
