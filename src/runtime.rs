//! The runtime: what the leases of one process share.
//!
//! A lease ([`crate::lease`]) is one protocol session on one pair of streams; everything
//! that costs threads or state beyond one lease lives here, once: the worker pool (and
//! with it the handlers), the mapper threads (the global rayon pool, which the parallel
//! mapper uses), and the telemetry sink. Child mode is a runtime with one lease on
//! stdin/stdout ([`crate::app`]); a host server is a runtime with a listener, each
//! connection a lease.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::handler::HandlerFactory;
use crate::lease::{Host, Lease, LeaseError, Overlap};
use crate::pipeline::share::MapperShare;
use crate::pipeline::split::Splitter;
use crate::pool::{Pool, PoolConfig, PoolError, PoolLease};
use crate::protocol::session::{SessionConfig, Stats};
use crate::telemetry::{LeaseId, Sink};

/// Everything a runtime needs: the settings of its leases and of its pool.
pub struct RuntimeConfig {
    /// Session (checkpoint policy) settings of every lease.
    pub session: SessionConfig,
    /// Worker pool settings.
    pub pool: PoolConfig,
    /// How records become items.
    pub splitter: Splitter,
    /// Makes the per-worker handlers.
    pub handlers: Arc<dyn HandlerFactory>,
    /// How long to wait for workers to stop at exit.
    pub shutdown_timeout: Duration,
    /// Longest daemon line read (`--max-line-bytes`): a longer one is a protocol error as
    /// soon as this many bytes have arrived without a newline, so no input can make the
    /// reader hold more.
    pub max_line_bytes: usize,
}

impl Host for Runtime {
    fn session_config(&self) -> &SessionConfig {
        &self.config.session
    }

    fn splitter(&self) -> &Splitter {
        &self.config.splitter
    }

    fn max_line_bytes(&self) -> usize {
        self.config.max_line_bytes
    }

    fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    fn attach(&self, lease: &LeaseId) -> Result<PoolLease, PoolError> {
        Runtime::attach(self, lease)
    }

    fn overlap(&self) -> Option<&Overlap> {
        self.overlap.as_ref()
    }

    fn mapper_share(&self) -> &MapperShare {
        &self.mapper_share
    }
}

/// Starts the mapper threads (the global rayon pool) named `rsmld-map-N`, for a host:
/// otherwise they start with the first line mapped in parallel and take the name of the
/// lease thread that mapped it, so `top -H` shows them as leases. Does nothing if the pool
/// already runs.
pub fn start_mapper_threads() {
    let named = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("rsmld-map-{i}"))
        .build_global();
    if let Err(e) = named {
        log::debug!("mapper threads already started: {e}");
    }
}

/// What leases share; see the module docs.
pub struct Runtime {
    config: RuntimeConfig,
    sink: Arc<dyn Sink>,
    /// The worker pool: started by [`Runtime::start`], or (child mode) by the first lease
    /// that attaches, for that lease.
    pool: Mutex<Option<Pool>>,
    /// A host's overlap slots, [`OVERLAP_PER_WORKER`] per worker ([`Runtime::start`]);
    /// none in child mode, whose one lease always overlaps.
    overlap: Option<Overlap>,
    /// How the leases share the mapper threads.
    mapper_share: MapperShare,
}

/// Leases of a host that may overlap a batch with the next, per worker ([`Overlap`]). One
/// per worker keeps the workers fed only while every overlapping lease has its next line
/// mapped; a lease is busy reading and mapping its next line for about as long as the
/// workers take with its last one, so a second lease per worker covers that time. Measured
/// on 2 cores with 4 leases of 1 000-record lines, in one run of 20 repetitions: 3% more
/// items/s than one per worker, 9% together with [`MapperShare`] (later runs put the
/// 4-lease gain within the machine's noise; at 16 leases the two together hold in every
/// run). The cost is one more line held per extra slot.
pub const OVERLAP_PER_WORKER: usize = 2;

impl Runtime {
    /// A runtime whose pool starts when its first lease is initialized, for that lease (the
    /// handlers know it as their only lease, e.g. the exec handler's `RSMLD_SHARD_ID`):
    /// child mode, where the shard is only known from `initialize`.
    pub fn new(config: RuntimeConfig, sink: Arc<dyn Sink>) -> Self {
        Runtime {
            config,
            sink,
            pool: Mutex::new(None),
            overlap: None,
            mapper_share: MapperShare::default(),
        }
    }

    /// A runtime whose pool starts now, serving every lease that attaches (a host of many
    /// leases).
    pub fn start(config: RuntimeConfig, sink: Arc<dyn Sink>) -> Result<Self, PoolError> {
        let pool = Pool::start(&config.pool, config.handlers.as_ref(), sink.clone())?;
        Ok(Runtime {
            overlap: Some(Overlap::new(OVERLAP_PER_WORKER * pool.workers())),
            mapper_share: MapperShare::default(),
            config,
            sink,
            pool: Mutex::new(Some(pool)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The telemetry sink.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// Attaches `lease` to the pool (starting it for this lease if it has not started).
    pub fn attach(&self, lease: &LeaseId) -> Result<PoolLease, PoolError> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.is_none() {
            *pool = Some(Pool::start_for_lease(
                &self.config.pool,
                self.config.handlers.as_ref(),
                self.sink.clone(),
                lease,
            )?);
        }
        match pool.as_ref() {
            Some(pool) => Ok(pool.attach(lease.clone())),
            // Invariant: set just above.
            None => unreachable!("the pool was started above"),
        }
    }

    /// Runs one lease over `input`/`output` until its input ends; its counters. On a
    /// runtime made by [`Runtime::start`] leases may run at once, each on its own thread; one
    /// made by [`Runtime::new`] serves a single lease (its handlers know that lease as
    /// their only one, e.g. the exec handler's `RSMLD_SHARD_ID`).
    pub fn run_lease<R, W>(&self, input: R, output: W) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        Lease::run(self, input, output)
    }

    /// [`Runtime::run_lease`] for a lease of `application` (a host server's leases: two
    /// applications with the same shard ids stay apart in routing, outputs and logs).
    pub fn run_lease_for<R, W>(
        &self,
        application: &str,
        input: R,
        output: W,
    ) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        Lease::run_for(self, application, input, output)
    }

    /// [`Runtime::run_lease_for`] as attachment `serial` (a host server numbers its
    /// attaches, so a shard attached twice at once is two leases; see `LeaseId::serial`).
    pub fn run_lease_attached<R, W>(
        &self,
        application: &str,
        serial: u64,
        input: R,
        output: W,
    ) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        Lease::run_attached(self, application, serial, input, output)
    }

    /// How many of the pool's workers are lost ([`Pool::lost_workers`]; 0 before it starts).
    pub fn lost_workers(&self) -> usize {
        let pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.as_ref().map_or(0, Pool::lost_workers)
    }

    /// Stops the workers, waiting at most the configured shutdown timeout (the handler's
    /// bound on closing, see `HandlerDescriptor::with_shutdown_timeout`): whatever is still queued
    /// is dropped (no lease checkpointed it).
    pub fn shutdown(self) -> Result<(), PoolError> {
        let pool = self
            .pool
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        match pool {
            Some(pool) => pool.shutdown(self.config.shutdown_timeout),
            None => Ok(()),
        }
    }

    /// Child mode: one lease on these streams, then the workers stop.
    pub fn run_child<R, W>(self, input: R, output: W) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        let result = self.run_lease(input, output);
        if let Err(e) = self.shutdown() {
            log::error!("{e}");
        }
        result
    }
}
