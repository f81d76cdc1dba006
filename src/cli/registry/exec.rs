//! `--handler exec -- COMMAND [ARGS...]`: items piped to a long-lived child per worker.
//!
//! The command itself is the command line's trailing `-- COMMAND` (or
//! `rsmld.exec.command`), a general setting ([`General::command`]), since `--` ends the
//! flags of every group.

use std::sync::Arc;
use std::time::Duration;

use super::{General, HandlerDescriptor, HandlerGroup, Need};
use crate::cli::error::ConfigError;
use crate::cli::properties::EXEC_COMMAND_KEY;
use crate::handler::exec::{
    ExecFactory, ExecFraming, ExecOptions, CLOSE_BOUND, DEFAULT_ANSWER_TIMEOUT,
    DEFAULT_STALL_WARNING,
};
use crate::handler::HandlerFactory;

/// The exec handler's flags.
#[derive(Clone, Debug, clap::Args)]
pub struct ExecArgs {
    /// Exec handler: one item per line, or one line per batch (`{"batch":N,"items":[…]}`,
    /// one answer per batch).
    #[arg(long, value_enum, default_value_t = ExecFraming::Item)]
    pub exec_framing: ExecFraming,
}

impl HandlerGroup for ExecArgs {
    fn check(&self, general: &General<'_>) -> Result<(), ConfigError> {
        match general.command {
            [] => Err(ConfigError::NoCommand),
            _ => Ok(()),
        }
    }

    fn needs(&self, general: &General<'_>) -> Vec<Need> {
        general
            .command
            .first()
            .map(|program| Need::Program {
                flag: "command",
                program: program.clone(),
            })
            .into_iter()
            .collect()
    }

    fn build(&self, general: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        self.check(general)?;
        Ok(Arc::new(ExecFactory::new(ExecOptions {
            command: general.command.to_vec(),
            framing: self.exec_framing,
            max_pipelined: general.max_in_flight.max(1),
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(5),
            stall_warning: DEFAULT_STALL_WARNING,
            // The exec handler times out silence itself (see its module docs).
            answer_timeout: general.item_timeout,
        })))
    }
}

/// The exec handler.
pub fn descriptor() -> HandlerDescriptor {
    HandlerDescriptor::new::<ExecArgs>(
        "exec",
        "Pipe items to a long-lived child per worker: `--handler exec -- COMMAND [ARGS...]`",
    )
    .with_heading("Exec handler")
    .with_key(EXEC_COMMAND_KEY)
    .with_default_item_timeout(DEFAULT_ANSWER_TIMEOUT)
    .enforcing_item_timeout()
    // Room for the exec handler's bounded close; then the binary's sweep kills.
    .with_shutdown_timeout(CLOSE_BOUND + Duration::from_secs(1))
}
