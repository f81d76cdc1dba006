//! A testing wrapper: delays every item by a pseudo-random time before the real handler
//! sees it, so that workers finish out of order. Hidden behind `--debug-delay-ms`.

use std::sync::Arc;
use std::time::Duration;

use super::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use crate::pipeline::item::Item;
use crate::telemetry::LeaseId;

/// Wraps another factory's handlers with random per-item delays.
pub struct DelayFactory {
    inner: Arc<dyn HandlerFactory>,
    max: Duration,
}

impl DelayFactory {
    /// Delays each item by 0..=max.
    pub fn new(inner: Arc<dyn HandlerFactory>, max: Duration) -> Self {
        DelayFactory { inner, max }
    }
}

impl HandlerFactory for DelayFactory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Delay {
            inner: self.inner.create(ctx)?,
            max_ms: self.max.as_millis() as u64,
            state: 0x9e37_79b9 ^ (ctx.worker as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
        }))
    }
}

struct Delay {
    inner: Box<dyn Handler>,
    max_ms: u64,
    state: u64,
}

impl Handler for Delay {
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        // Hand items over one at a time so each one gets its own delay.
        for (i, item) in items.iter().enumerate() {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            std::thread::sleep(Duration::from_millis(self.state % (self.max_ms + 1)));
            // On a failure, this item and every later one are not done.
            let error = match self.inner.process(lease, std::slice::from_ref(item)) {
                Ok(()) => continue,
                Err(BatchError::Batch(e)) => e,
                Err(BatchError::Items(mut v)) => match v.pop() {
                    Some((_, e)) => e,
                    None => continue,
                },
            };
            return Err(BatchError::Items(
                (i..items.len()).map(|j| (j, error.clone())).collect(),
            ));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), HandlerError> {
        self.inner.flush()
    }

    fn close(&mut self) -> Result<(), HandlerError> {
        self.inner.close()
    }

    fn end_lease(&mut self, lease: &LeaseId) -> Result<(), HandlerError> {
        self.inner.end_lease(lease)
    }
}
