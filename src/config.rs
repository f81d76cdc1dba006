//! Command line → validated configuration.
//!
//! The daemon starts rsmld with `executableName` split on spaces (no shell, no quoting),
//! so every setting is a plain `--flag value` pair. Validation happens here, before the
//! protocol starts, so that a bad setting is one clear error at start-up rather than a
//! surprise in the middle of a lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::driver::DriverConfig;
use crate::handler::discard::DiscardFactory;
use crate::handler::exec::{
    ExecFactory, ExecOptions, CLOSE_BOUND, DEFAULT_ANSWER_TIMEOUT, DEFAULT_STALL_WARNING,
};
use crate::handler::file::{FileFactory, FileOptions};
use crate::handler::{delay::DelayFactory, HandlerFactory};
use crate::pool::{OnError, PoolConfig};
use crate::protocol::session::{OnDuplicate, SessionConfig};
use crate::split::{SplitMode, Splitter, DEFAULT_MAX_INFLATED};

/// rsmld: a record processor for the Amazon KCL MultiLangDaemon.
#[derive(Debug, Parser)]
#[command(name = "rsmld", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// A tool instead of the record processor.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Record processor settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// KPL aggregate tools.
    Kpl {
        /// decode or encode.
        #[command(subcommand)]
        command: KplCommand,
    },
}

/// KPL tools.
#[derive(Debug, Subcommand)]
pub enum KplCommand {
    /// Reads one base64 record per line; writes one JSON line of its user records.
    Decode,
    /// Reads JSON user records; writes base64 aggregates, one per line.
    Encode {
        /// Largest aggregate in bytes (magic and checksum included).
        #[arg(long, default_value_t = 1024 * 1024)]
        max_bytes: usize,
    },
}

/// Which handler processes items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HandlerKind {
    /// Count items and drop them.
    Discard,
    /// Append one JSON line per item under --output (a durable, rotated archive).
    File,
    /// Pipe items to a long-lived child per worker: `--handler exec -- COMMAND [ARGS...]`.
    Exec,
}

/// Record processor flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Read `rsmld.*` settings from this properties file (the daemon's own file works);
    /// flags on the command line override it.
    #[arg(long)]
    pub properties: Option<PathBuf>,
    /// Worker threads (default: available cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Unfinished items allowed when a batch is acknowledged; 0 finishes every batch first.
    /// A large batch acknowledged before it is decoded counts one item per record.
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: usize,
    /// Bytes of earlier daemon lines that unfinished items may keep in memory when a batch
    /// is acknowledged (payloads point into their line); more → processRecords waits.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_in_flight_bytes: usize,
    /// Least time between periodic checkpoints, in seconds (fractions allowed).
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub checkpoint_interval: Duration,
    /// Retries of a checkpoint that failed with ThrottlingException or
    /// KinesisClientLibDependencyException (exponential backoff with jitter).
    #[arg(long, default_value_t = 5)]
    pub checkpoint_retries: u32,
    /// What to do with items.
    #[arg(long, value_enum)]
    pub handler: Option<HandlerKind>,
    /// How records become items.
    #[arg(long, value_enum, default_value_t = SplitMode::Kpl)]
    pub split: SplitMode,
    /// Largest inflated size of a gzip payload (lines, json-array, cloudwatch-logs);
    /// a larger one is delivered whole, with a warning.
    #[arg(long, default_value_t = DEFAULT_MAX_INFLATED)]
    pub max_inflated_bytes: usize,
    /// Output directory of the file handler.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// File handler: start a new file at this size in bytes (0: never).
    #[arg(long, default_value_t = 256 << 20)]
    pub rotate_bytes: u64,
    /// File handler: start a new file after this many seconds (0: never).
    #[arg(long, default_value = "3600", value_parser = parse_seconds)]
    pub rotate_secs: Duration,
    /// Most items handed to a handler at once.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// How long a worker waits to fill a batch after its first item, in seconds (0: hand
    /// over what is queued at once). Batches are also cut at drains and backpressure.
    #[arg(long, default_value = "0", value_parser = parse_seconds)]
    pub batch_interval: Duration,
    /// What a failed item does: fail (stop; nothing past it is checkpointed; exit 1),
    /// retry (--retries, --retry-backoff, then fail), skip (dead-letter it and go on).
    #[arg(long, value_enum, default_value_t = OnErrorKind::Fail)]
    pub on_error: OnErrorKind,
    /// Retries of failed items under --on-error retry.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// First retry delay in seconds; doubles per retry.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    pub retry_backoff: Duration,
    /// Dead-letter directory for --on-error skip.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Exec: longest a child may hold items without answering for any, in seconds; then
    /// it is killed and its unanswered items fail under --on-error (default 20). Other
    /// handlers: longest one handler call may take (default: no watchdog). 0: off.
    #[arg(long, value_parser = parse_seconds)]
    pub item_timeout: Option<Duration>,
    /// A record delivered twice in one lease: skip it (with a warning) or fail.
    #[arg(long, value_enum, default_value_t = OnDuplicate::Skip)]
    pub on_duplicate: OnDuplicate,
    /// Exec handler: the command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Testing aid: each item waits a pseudo-random 0..=N ms in its worker before the
    /// handler sees it (shakes completion order).
    #[arg(long, hide = true)]
    pub debug_delay_ms: Option<u64>,
}

/// The failure policy, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnErrorKind {
    /// Stop checkpointing and exit non-zero.
    Fail,
    /// Retry, then fail.
    Retry,
    /// Dead-letter the item and count it done.
    Skip,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No handler chosen.
    #[error("no handler: pass --handler discard or --handler file --output DIR")]
    NoHandler,
    /// File handler without a directory.
    #[error("--handler file needs --output DIR")]
    NoOutput,
    /// Skip policy without a directory.
    #[error("--on-error skip needs --dead-letter DIR")]
    NoDeadLetter,
    /// Exec handler without a command.
    #[error("--handler exec needs a command after --, e.g. --handler exec -- /opt/app/handle.py")]
    NoCommand,
    /// A nonsensical number.
    #[error("{0}")]
    Invalid(String),
}

impl Cli {
    /// Parses the command line, merging `rsmld.*` settings from `--properties FILE`
    /// (command-line flags win; a command after `--` on the command line replaces
    /// `rsmld.exec.command`).
    pub fn parse_with_properties(argv: Vec<String>) -> Result<Cli, anyhow::Error> {
        let first = Cli::try_parse_from(&argv)?;
        let Some(path) = first.run.properties.clone() else {
            return Ok(first);
        };
        let valid: Vec<String> = <Cli as clap::CommandFactory>::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .filter(|l| l != "help" && l != "version")
            .collect();
        let file_args = crate::properties::rsmld_args(&path, &valid)?;
        let split = |v: &[String]| -> (Vec<String>, Option<Vec<String>>) {
            match v.iter().position(|a| a == "--") {
                Some(i) => (v[..i].to_vec(), Some(v[i + 1..].to_vec())),
                None => (v.to_vec(), None),
            }
        };
        let (file_flags, file_cmd) = split(&file_args);
        let (cli_flags, cli_cmd) = split(argv.get(1..).unwrap_or(&[]));
        let mut merged: Vec<String> = argv.first().cloned().into_iter().collect();
        merged.extend(file_flags);
        merged.extend(cli_flags);
        if let Some(cmd) = cli_cmd.or(file_cmd) {
            merged.push("--".into());
            merged.extend(cmd);
        }
        Ok(Cli::try_parse_from(merged)?)
    }
}

/// Parses seconds, fractions allowed (`0.25`, `60`).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("{s:?} is not a non-negative number of seconds"))
}

impl RunArgs {
    /// Validates the flags into the driver's configuration.
    pub fn into_driver_config(mut self) -> Result<DriverConfig, ConfigError> {
        let workers = match self.workers {
            Some(0) => return Err(ConfigError::Invalid("--workers must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let mut handlers: Arc<dyn HandlerFactory> =
            match self.handler.ok_or(ConfigError::NoHandler)? {
                HandlerKind::Discard => Arc::new(DiscardFactory::new()),
                HandlerKind::File => Arc::new(FileFactory::new(FileOptions {
                    dir: self.output.ok_or(ConfigError::NoOutput)?,
                    rotate_bytes: self.rotate_bytes,
                    rotate_after: self.rotate_secs,
                })),
                HandlerKind::Exec => {
                    if self.command.is_empty() {
                        return Err(ConfigError::NoCommand);
                    }
                    // The exec handler times out silence itself (see its module docs).
                    let timeout = self.item_timeout.take().unwrap_or(DEFAULT_ANSWER_TIMEOUT);
                    Arc::new(ExecFactory::new(ExecOptions {
                        command: self.command,
                        max_pipelined: self.max_in_flight.max(1),
                        restart_backoff: Duration::from_millis(100),
                        restart_backoff_max: Duration::from_secs(5),
                        stall_warning: DEFAULT_STALL_WARNING,
                        answer_timeout: (!timeout.is_zero()).then_some(timeout),
                    }))
                }
            };
        if let Some(ms) = self.debug_delay_ms {
            handlers = Arc::new(DelayFactory::new(handlers, Duration::from_millis(ms)));
        }
        let on_error = match self.on_error {
            OnErrorKind::Fail => OnError::Fail,
            OnErrorKind::Retry => OnError::Retry {
                retries: self.retries,
                backoff: self.retry_backoff,
            },
            OnErrorKind::Skip => OnError::Skip {
                dead_letter: self.dead_letter.clone().ok_or(ConfigError::NoDeadLetter)?,
            },
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(DriverConfig {
            session: SessionConfig {
                checkpoint_interval: self.checkpoint_interval,
                max_in_flight: self.max_in_flight,
                max_in_flight_bytes: self.max_in_flight_bytes,
                checkpoint_retries: self.checkpoint_retries,
                jitter_seed: seed,
                on_duplicate: self.on_duplicate,
                ..SessionConfig::default()
            },
            pool: PoolConfig {
                workers,
                channel_capacity: 64,
                max_batch: self.batch_size.max(1),
                batch_interval: self.batch_interval,
                on_error,
                item_timeout: self.item_timeout.filter(|t| !t.is_zero()),
            },
            splitter: Splitter::new(self.split).with_max_inflated(self.max_inflated_bytes),
            handlers,
            // Room for the exec handler's bounded close; then the binary's sweep kills.
            shutdown_timeout: match self.handler {
                Some(HandlerKind::Exec) => CLOSE_BOUND + Duration::from_secs(1),
                _ => Duration::from_secs(1),
            },
            on_shard: None,
        })
    }
}
