//! The `exec` handler: one long-lived child process per worker (being built).

use std::time::Duration;

use super::{Handler, HandlerError, HandlerFactory, WorkerContext};

/// Settings of the exec handler.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// The command and its arguments (no shell).
    pub command: Vec<String>,
    /// Most items written to the child before their acks are read.
    pub max_pipelined: usize,
    /// First restart delay after the child failed; doubles up to `restart_backoff_max`.
    pub restart_backoff: Duration,
    /// Largest restart delay.
    pub restart_backoff_max: Duration,
}

/// Makes one child process per worker.
#[derive(Clone, Debug)]
pub struct ExecFactory {
    options: ExecOptions,
}

impl ExecFactory {
    /// A factory running `options.command`.
    pub fn new(options: ExecOptions) -> Self {
        ExecFactory { options }
    }
}

impl HandlerFactory for ExecFactory {
    fn create(&self, _ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Err(HandlerError::new(format!(
            "exec handler not built yet ({:?})",
            self.options.command
        )))
    }
}
