//! Handlers: what a worker does with its items — the Rust API for processors.
//!
//! The seam is deliberately small. A [`HandlerFactory`] makes one [`Handler`] per worker
//! (so a handler needs no locking and may keep per-worker state: an open file, a child
//! process, a connection). A worker may serve many leases (one pool per host), so the
//! [`WorkerContext`] names no shard: each batch says which lease its items belong to, a
//! batch never mixes leases, and a handler keeps per-lease state (a file per shard) keyed
//! by the [`LeaseId`], dropped at [`Handler::end_lease`]. A worker hands its handler
//! *batches* of items, in the order the items were routed to it (same lease and partition
//! key → same worker → same order), and reports items complete only after
//! [`Handler::process`] returned: returning `Ok` means "durably done" — a checkpoint may
//! cover these items from now on. A [`BatchError`] says which
//! items failed (or that the whole batch did); the failure policy (`--on-error`) then
//! decides between stopping, retrying and dead-lettering. A panic is a failure of the
//! whole batch.
//!
//! Handlers that pipeline (an HTTP sink, a database with asynchronous commits) implement
//! [`Handler::submit`] as well: it takes the batch with a must-complete [`Ack`] and may
//! return before the items are done; the ack, resolved later from any thread, says how
//! the batch ended, and dropping it unresolved fails the batch ([`mod@ack`]).
//!
//! Hooks: [`Handler::flush`] runs when the worker is idle (no item for the batch
//! interval) and before the worker reports a drain complete, for handlers that keep
//! time-based state (rotation, buffers that `process` already made durable);
//! [`Handler::close`] runs once at the end; [`Handler::interrupter`] lets the watchdog
//! abort a `process` call that hangs (the exec handler kills its child), and the pool end
//! calls whose work was abandoned when rsmld shuts down ([`Interrupt`]).
//!
//! Built-ins, all on this same trait: [`discard`] (counts), [`mod@file`] (JSON lines per
//! shard and worker), and the testing wrapper [`delay`].

pub mod ack;
pub mod delay;
pub mod discard;
pub(crate) mod durable;
pub mod exec;
pub mod file;

use std::sync::Arc;

use crate::pipeline::item::Item;
use crate::telemetry::{LeaseId, NullSink, Sink};

pub use ack::Ack;

/// Where a handler runs: the worker's index among the pool's workers, and where its
/// telemetry goes. No shard: a worker serves every lease attached to its pool.
/// Non-exhaustive: build one with [`WorkerContext::new`] (in a handler's tests).
#[derive(Clone)]
#[non_exhaustive]
pub struct WorkerContext {
    /// This worker's index, `0..workers`.
    pub worker: usize,
    /// The number of workers.
    pub workers: usize,
    /// Where the handler's events go ([`crate::telemetry::Event`]).
    pub telemetry: Arc<dyn Sink>,
    /// The one lease the pool serves, when it serves exactly one (child mode); `None` on
    /// a shared pool. Only for what a handler sets up once per worker (the exec handler's
    /// `RSMLD_SHARD_ID`): the lease of a batch is always the one [`Handler::process`] is
    /// given.
    pub sole_lease: Option<LeaseId>,
}

impl WorkerContext {
    /// Worker `worker` of `workers`, on a shared pool, with no telemetry.
    pub fn new(worker: usize, workers: usize) -> Self {
        WorkerContext {
            worker,
            workers,
            telemetry: Arc::new(NullSink),
            sole_lease: None,
        }
    }

    /// The same, with its events going to `telemetry` (a handler's test that looks at
    /// them).
    pub fn with_telemetry(mut self, telemetry: Arc<dyn Sink>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The same, for a pool that serves `lease` only.
    pub fn for_lease(mut self, lease: LeaseId) -> Self {
        self.sole_lease = Some(lease);
        self
    }
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("worker", &self.worker)
            .field("workers", &self.workers)
            .field("sole_lease", &self.sole_lease)
            .finish_non_exhaustive()
    }
}

/// A handler failure, readable: its message, and the error that caused it when there is
/// one.
///
/// [`Display`](std::fmt::Display) prints the message once, and the message already holds
/// the cause's text ([`HandlerError::with_source`] writes `message: cause`), so a report
/// that also walks [`source()`](std::error::Error::source) would repeat it: rsmld prints
/// the message only. The source is there for code that inspects the cause
/// (`downcast_ref::<std::io::Error>()`).
///
/// ```
/// use std::error::Error as _;
/// use rsmld::HandlerError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such table");
/// let e = HandlerError::with_source("cannot open the sink", io);
/// assert_eq!(e.to_string(), "cannot open the sink: no such table");
/// assert!(e.source().unwrap().downcast_ref::<std::io::Error>().is_some());
///
/// let e: HandlerError = std::io::Error::other("disk full").into();
/// assert_eq!(e.to_string(), "disk full");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandlerError {
    /// What went wrong (with the cause's text, when there is a cause).
    pub message: String,
    /// The error that caused it, if any.
    cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The cause itself, not the Arc around it, so that it downcasts to its own type.
        self.cause.as_deref().map(|c| c as _)
    }
}

impl HandlerError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            cause: None,
        }
    }

    /// A failure of the whole batch (same as [`HandlerError::new`], reads better).
    pub fn batch(message: impl Into<String>) -> Self {
        Self::new(message)
    }

    /// A failure caused by `source`: the message is `context: <source>`, and
    /// [`source()`](std::error::Error::source) returns `source`.
    pub fn with_source(
        context: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        HandlerError {
            message: format!("{context}: {source}"),
            cause: Some(Arc::new(source)),
        }
    }

    /// A failure that is `source` itself: its text is the message, and
    /// [`source()`](std::error::Error::source) returns it (what the `From` conversions do).
    pub fn from_error(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        HandlerError {
            message: source.to_string(),
            cause: Some(Arc::new(source)),
        }
    }
}

/// Two failures are equal when their messages are (the sources are not comparable).
impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for HandlerError {}

impl From<std::io::Error> for HandlerError {
    fn from(e: std::io::Error) -> Self {
        HandlerError::from_error(e)
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError::from_error(e)
    }
}

impl From<base64::DecodeError> for HandlerError {
    fn from(e: base64::DecodeError) -> Self {
        HandlerError::from_error(e)
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::new(message)
    }
}

/// What failed in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// Nothing in the batch is done.
    Batch(HandlerError),
    /// These items (index in the batch, ascending, each once) failed; every other item of
    /// the batch is done.
    Items(Vec<(usize, HandlerError)>),
}

impl From<std::io::Error> for BatchError {
    fn from(e: std::io::Error) -> Self {
        BatchError::Batch(e.into())
    }
}

impl From<serde_json::Error> for BatchError {
    fn from(e: serde_json::Error) -> Self {
        BatchError::Batch(e.into())
    }
}

impl From<base64::DecodeError> for BatchError {
    fn from(e: base64::DecodeError) -> Self {
        BatchError::Batch(e.into())
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::Batch(e) => e.cause.as_deref().map(|c| c as _),
            _ => None,
        }
    }
}

impl From<HandlerError> for BatchError {
    fn from(e: HandlerError) -> Self {
        BatchError::Batch(e)
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Batch(e) => write!(f, "{e}"),
            BatchError::Items(items) => match items.first() {
                Some((i, e)) => write!(f, "{} item(s) failed, first at {i}: {e}", items.len()),
                None => f.write_str("no item failed"),
            },
        }
    }
}

/// Why the pool interrupts a handler from another thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interrupt {
    /// The running [`Handler::process`] call is past the item timeout: abort it now (the
    /// exec handler kills its child). Ignored between calls.
    Timeout,
    /// rsmld is exiting and the queued work is abandoned: end the running call (if any)
    /// soon and fail every later one, so that `close` can run within its time bound.
    Shutdown,
}

/// A way to abort a hanging [`Handler::process`] from another thread (the watchdog, and
/// the pool at shutdown).
pub type Interrupter = Arc<dyn Fn(Interrupt) + Send + Sync>;

/// Processes the items routed to one worker.
pub trait Handler: Send {
    /// Processes a batch (never empty) of items of `lease`. `Ok` means every item is
    /// done — written, acknowledged, durable as far as this handler promises — and may be
    /// checkpointed.
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError>;

    /// The pipelining form: takes a batch and its [`Ack`], and may return before the
    /// items are done, resolving the ack later from any thread ([`mod@ack`]). The worker
    /// hands over its next batches meanwhile; the items stay in flight (and uncounted)
    /// until the ack says `done`; an ack dropped unresolved fails them. Items are views
    /// into the worker's buffers: copy what is needed before returning. The default
    /// calls [`Handler::process`] and resolves the ack with its result.
    fn submit(&mut self, lease: &LeaseId, items: &[Item], ack: Ack) {
        ack.resolve(self.process(lease, items));
    }

    /// Called once `lease` has ended on this worker's pool and none of its batches is
    /// still in this handler: per-lease state (an open file) can go. A lease that is
    /// attached again later starts afresh.
    fn end_lease(&mut self, lease: &LeaseId) -> Result<(), HandlerError> {
        let _ = lease;
        Ok(())
    }

    /// Called when the worker is idle and before a drain completes.
    fn flush(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Called once when the worker stops (end of input or shutdown).
    fn close(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// How the watchdog can abort a `process` call that takes too long; `None` (the
    /// default) makes a timeout fatal, because the call cannot be taken back.
    fn interrupter(&self) -> Option<Interrupter> {
        None
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The message once, with its cause's text once; the source is the cause itself.
    #[test]
    fn a_handler_error_keeps_its_source_and_prints_it_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only table");
        let e = HandlerError::with_source("cannot store the batch", io);
        assert_eq!(e.to_string(), "cannot store the batch: read-only table");
        let source = e.source().unwrap();
        assert_eq!(source.to_string(), "read-only table");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().unwrap().kind(),
            std::io::ErrorKind::PermissionDenied
        );

        let e = HandlerError::from(std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "disk full");
        assert!(e
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .is_some());
        let e: HandlerError = serde_json::from_str::<u8>("x").unwrap_err().into();
        assert_eq!(e.to_string(), "expected value at line 1 column 1");
        assert!(e.source().is_some());
        assert!(HandlerError::new("plain").source().is_none());
        assert_eq!(HandlerError::from("plain"), HandlerError::new("plain"));
    }

    /// A batch error from an I/O error prints it once, and so does the pool's report of a
    /// failed batch (`{e}`, never followed by the chain).
    #[test]
    fn a_batch_error_from_io_prints_the_message_once() {
        let e = BatchError::from(std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(e.source().unwrap().to_string(), "disk full");
        let e = BatchError::Items(vec![(
            2,
            HandlerError::with_source("bad item", std::io::Error::other("torn")),
        )]);
        assert_eq!(
            e.to_string(),
            "1 item(s) failed, first at 2: bad item: torn"
        );
    }
}
