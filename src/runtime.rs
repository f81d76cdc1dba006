//! The runtime: what the leases of one process share.
//!
//! A lease ([`crate::lease`]) is one protocol session on one pair of streams; everything
//! that costs threads or state beyond one lease lives here, once: the worker pool (and
//! with it the handlers), the mapper threads (the global rayon pool, which the parallel
//! mapper uses), and the telemetry sink. Child mode is a runtime with one lease on
//! stdin/stdout ([`crate::app`]); a host server is a runtime with a listener, each
//! connection a lease.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::handler::HandlerFactory;
use crate::lease::{Lease, LeaseError};
use crate::pipeline::split::Splitter;
use crate::pool::PoolConfig;
use crate::protocol::session::{SessionConfig, Stats};
use crate::telemetry::Sink;

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

/// What leases share; see the module docs.
pub struct Runtime {
    config: RuntimeConfig,
    sink: Arc<dyn Sink>,
}

impl Runtime {
    /// A runtime with these settings, whose leases tell `sink` what happens.
    pub fn new(config: RuntimeConfig, sink: Arc<dyn Sink>) -> Self {
        Runtime { config, sink }
    }

    /// The settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The telemetry sink.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// Runs one lease over `input`/`output` until its input ends; its counters.
    pub fn run_lease<R, W>(&self, input: R, output: W) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        Lease::run(self, input, output)
    }
}
