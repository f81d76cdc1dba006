//! Command line → validated configuration.
//!
//! The daemon starts rsmld with `executableName` split on spaces (no shell, no quoting),
//! so every setting is a plain `--flag value` pair. Validation happens here, before the
//! protocol starts, so that a bad setting is one clear error at start-up rather than a
//! surprise in the middle of a lease.
//!
//! Durations and sizes take human units (`2s`, `500ms`, `8MiB`; see [`units`](super::units)); a
//! plain number keeps its old meaning (seconds, bytes). Every number has bounds, enforced by
//! the value parsers here, which `--properties` and `rsmld check` use too.
//!
//! The general flags are [`RunArgs`]; each handler's own flags are its group in the
//! [`registry`] (flattened into [`RunArgs::handler_args`]), and `--handler NAME` is
//! resolved through it: no handler is built, checked or named here (the error texts that
//! name one are in [`ConfigError`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use super::error::{ConfigError, Origin};
pub use super::program::Program;
#[cfg(doc)]
use super::registry::HandlerDescriptor;
use super::registry::{self, Chosen, General, HandlerArgs, HandlerGroup};
use super::units::{bytes_usize, count_usize};
pub use super::units::{parse_bytes_in, parse_count_in, parse_duration_in, parse_seconds_in};
use crate::cli::properties::{self, Diagnostic, Properties, PropertiesError, RsmldSettings};
use crate::handler::delay::DelayFactory;
use crate::pipeline::split::{SplitMode, Splitter, DEFAULT_MAX_ITEMS_PER_RECORD};
use crate::pool::{OnError, PoolConfig};
use crate::protocol::session::{OnDuplicate, SessionConfig};
use crate::runtime::RuntimeConfig;

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
    /// Validates the daemon's properties file before the daemon runs it.
    ///
    /// Reports every problem on stderr as `FILE:LINE: error|warning: message` (or one `ok`
    /// line) and exits 1 if there is an error. Paths resolve as the daemon would resolve
    /// them, started from the current directory with this PATH.
    Check(CheckArgs),
    /// Writes a shell completion script or the man page to stdout, generated from this
    /// command line's definition (for packagers; hidden from `--help`).
    #[command(hide = true)]
    Generate {
        /// completions or man.
        #[command(subcommand)]
        what: GenerateCommand,
    },
}

/// `rsmld generate` outputs.
#[derive(Debug, Clone, Subcommand)]
pub enum GenerateCommand {
    /// A completion script for SHELL (bash, elvish, fish, powershell, zsh).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page, rsmld(1), in roff.
    Man,
}

/// `rsmld check` arguments.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The daemon's properties file.
    #[arg(long)]
    pub properties: PathBuf,
    /// The daemon's major version: 2 (AWS SDK v1 credentials) or 3 (SDK v2).
    #[arg(long, value_enum, default_value = "3")]
    pub kcl: KclArg,
}

/// The `--kcl` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KclArg {
    /// KCL 2.x (checked against 2.5.8).
    #[value(name = "2")]
    V2,
    /// KCL 3.x (checked against 3.1.3).
    #[value(name = "3")]
    V3,
}

impl From<KclArg> for crate::cli::kcl::Kcl {
    fn from(k: KclArg) -> Self {
        match k {
            KclArg::V2 => crate::cli::kcl::Kcl::V2,
            KclArg::V3 => crate::cli::kcl::Kcl::V3,
        }
    }
}

/// KPL tools.
#[derive(Debug, Subcommand)]
pub enum KplCommand {
    /// Reads one base64 record per line; writes one JSON line of its user records.
    Decode,
    /// Reads JSON user records; writes base64 aggregates, one per line.
    Encode {
        /// Largest aggregate (magic and checksum included; a size: 1048576, 64KiB, 1MiB;
        /// 64B..=1MiB).
        #[arg(long, default_value = "1MiB", value_name = "SIZE", value_parser = parse_kpl_max_bytes)]
        max_bytes: usize,
    },
}

/// Record processor flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Read `rsmld.*` settings from this properties file (the daemon's own file works);
    /// flags on the command line override it.
    #[arg(long)]
    pub properties: Option<PathBuf>,
    /// Worker threads (default: available cores; 1..=1024).
    #[arg(long, value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Unfinished items allowed when a batch is acknowledged; 0 finishes every batch first.
    /// A large batch acknowledged before it is decoded counts one item per record
    /// (0..=1000000).
    #[arg(long, default_value_t = 20_000, value_parser = parse_max_in_flight)]
    pub max_in_flight: usize,
    /// Memory of earlier daemon lines that unfinished items may keep when a batch is
    /// acknowledged (payloads point into their line); more → processRecords waits (a size:
    /// 8MiB, 64MiB; plain bytes; 2MiB..=16GiB: at least one daemon line holding a 1 MiB
    /// record).
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_max_in_flight_bytes)]
    pub max_in_flight_bytes: usize,
    /// Longest daemon line rsmld reads; a longer one is a protocol error, refused once this
    /// much of it has arrived (a size; 2MiB..=16GiB). A daemon batch of plain records is at
    /// most about 14 MiB (10 MiB per GetRecords call, base64, JSON per record); KPL user records
    /// of a few bytes each cost about 200 bytes of JSON apiece and can make it much longer.
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = parse_max_line_bytes)]
    pub max_line_bytes: usize,
    /// Least time between periodic checkpoints (a duration: 60s, 500ms, 1m30s; a plain
    /// number is seconds, fractions allowed; 0s..=1d).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_checkpoint_interval)]
    pub checkpoint_interval: Duration,
    /// Retries of a checkpoint that failed with ThrottlingException or
    /// KinesisClientLibDependencyException (exponential backoff with jitter; 0..=100).
    #[arg(long, default_value_t = 5, value_parser = parse_checkpoint_retries)]
    pub checkpoint_retries: u32,
    /// What to do with items.
    #[arg(long, value_parser = registry::builtin_names())]
    pub handler: Option<String>,
    /// How records become items.
    #[arg(long, value_enum, default_value_t = SplitMode::Kpl)]
    pub split: SplitMode,
    /// Largest inflated size of a gzip payload (lines, json-array, cloudwatch-logs);
    /// a larger one is delivered whole, with a warning (a size; 1KiB..=4GiB).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_max_inflated_bytes)]
    pub max_inflated_bytes: usize,
    /// Most items one record may become (lines, json-array, cloudwatch-logs, kpl); a record
    /// with more is delivered whole, with a warning (1..=10000000).
    #[arg(long, default_value_t = DEFAULT_MAX_ITEMS_PER_RECORD as u32, value_parser = parse_max_items_per_record)]
    pub max_items_per_record: u32,
    /// Most items handed to a handler at once (1..=100000).
    #[arg(long, default_value_t = 500, value_parser = parse_batch_size)]
    pub batch_size: usize,
    /// How long a worker waits to fill a batch after its first item (a duration: 5ms,
    /// 0.5s; a plain number is seconds; 0s: hand over what is queued at once; at most 60s).
    /// Batches are also cut at drains and backpressure.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = parse_batch_interval)]
    pub batch_interval: Duration,
    /// What a failed item does: fail (stop; nothing past it is checkpointed; exit 1),
    /// retry (--retries, --retry-backoff, then fail), skip (dead-letter it and go on).
    #[arg(long, value_enum, default_value_t = OnErrorKind::Fail)]
    pub on_error: OnErrorKind,
    /// Retries of failed items under --on-error retry (0..=100).
    #[arg(long, default_value_t = 3, value_parser = parse_retries)]
    pub retries: u32,
    /// First retry delay (a duration: 1s, 250ms; a plain number is seconds); doubles per
    /// retry, at most 30s (0s..=1h).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_retry_backoff)]
    pub retry_backoff: Duration,
    /// Dead-letter directory for --on-error skip.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Exec: longest a child may hold items without answering for any (a duration: 30s,
    /// 2m; a plain number is seconds); then it is killed and its unanswered items fail
    /// under --on-error (default 20s). Other handlers: longest one handler call may take
    /// (default: no watchdog). 0s: off; else 10ms..=1d.
    #[arg(long, value_name = "DURATION", value_parser = parse_item_timeout)]
    pub item_timeout: Option<Duration>,
    /// A record delivered twice in one lease: skip it (with a warning) or fail.
    #[arg(long, value_enum, default_value_t = OnDuplicate::Skip)]
    pub on_duplicate: OnDuplicate,
    /// Write this lease's Prometheus metrics to `DIR/rsmld-<shard>.prom` every
    /// --metrics-interval, for node_exporter's textfile collector (replaced atomically,
    /// removed when the lease ends); DIR must be a writable directory.
    #[arg(long, value_name = "DIR")]
    pub metrics_dir: Option<PathBuf>,
    /// How often --metrics-dir's file is written (a duration: 5s, 500ms; 100ms..=1h).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_metrics_interval)]
    pub metrics_interval: Duration,
    /// Least severe log level written: error, warn, info (lease lifecycle, problems and
    /// one progress line per lease per --progress-interval), debug, trace. RUST_LOG, when
    /// set, wins (it also takes per-module filters).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Log lines as text (`rsmld[shard] LEVEL message`) or json (one object per line:
    /// ts, level, shard, message, and an event's fields; for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How often each lease logs its progress line at info (a duration: 60s, 5m;
    /// 100ms..=1d).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_progress_interval)]
    pub progress_interval: Duration,
    /// Exec handler: the command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Testing aid: each item waits a pseudo-random 0..=N ms in its worker before the
    /// handler sees it (shakes completion order; a plain number is milliseconds, or a
    /// duration: 50ms; 0ms..=10s).
    #[arg(long, hide = true, value_parser = parse_debug_delay_ms)]
    pub debug_delay_ms: Option<u64>,
    /// Each handler's own flags (see [`registry`]), shown under the handler's heading.
    #[command(flatten)]
    pub handler_args: HandlerArgs,
    /// The settings that came from `--properties` (for messages that name their key).
    #[arg(skip)]
    pub origins: Vec<Origin>,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Lease lifecycle, problems, progress lines.
    Info,
    /// Per batch and per checkpoint.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter of this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `rsmld[shard] LEVEL message`.
    Text,
    /// One JSON object per line.
    Json,
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

impl Cli {
    /// Parses the command line, merging `rsmld.*` settings from `--properties FILE`
    /// (command-line flags win; a command after `--` on the command line replaces
    /// `rsmld.exec.command`). Every bad `rsmld.*` entry is reported at once, each with
    /// the file, its line and its key as written ([`PropertiesError::Invalid`]).
    /// The command line is rsmld's; a custom binary's is [`Program::parse_with_properties`].
    pub fn parse_with_properties(argv: Vec<String>) -> Result<Cli, anyhow::Error> {
        Program::rsmld().parse_with_properties(argv)
    }
}

impl Program {
    /// [`Cli::parse_with_properties`] on this program's command line: its own flags are
    /// parsed, and its handlers' `rsmld.*` keys read, with the built-in ones. Hidden: [`Cli`]
    /// is internal.
    #[doc(hidden)]
    pub fn parse_with_properties(&self, argv: Vec<String>) -> Result<Cli, anyhow::Error> {
        self.parse_with_properties_in(&self.command(), argv)
            .map(|(cli, _)| cli)
    }

    /// [`Program::parse_with_properties`] with `cmd`, this program's command line with
    /// flags of its own (`rsmld serve`'s, which are read from the command line only): the
    /// options and every match.
    pub(crate) fn parse_with_properties_in(
        &self,
        cmd: &clap::Command,
        argv: Vec<String>,
    ) -> Result<(Cli, clap::ArgMatches), anyhow::Error> {
        let first = self.try_parse_in(cmd.clone(), &argv)?;
        let Some(path) = first.0.run.properties.clone() else {
            return Ok(first);
        };
        let props = Properties::read(&path)?;
        let (settings, problems) = file_settings(self, &props);
        if !problems.is_empty() {
            return Err(PropertiesError::Invalid(problems).into());
        }
        Ok(merge_file_settings_in(
            self,
            cmd,
            &argv,
            &props.path,
            &settings,
        )?)
    }
}

/// The long flags `program` reads from `rsmld.*` keys (without dashes).
fn settable_flags(program: &Program) -> Vec<String> {
    program
        .command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|l| l != "help" && l != "version")
        .collect()
}

/// Reads the `rsmld.*` keys of `props` with the command line's own value parsers: the one
/// validation path of `--properties` at start-up and of `rsmld check`. The keys are
/// `program`'s: rsmld's, and a custom binary's handlers' own.
pub fn file_settings(program: &Program, props: &Properties) -> (RsmldSettings, Vec<Diagnostic>) {
    let validate = |flag: &str, value: &str| -> Result<(), String> {
        // The real parser, on this one flag: `--flag=value` so that a value starting with
        // `-` stays a value.
        program
            .command()
            .try_get_matches_from([program.name().to_owned(), format!("--{flag}={value}")])
            .map(|_| ())
            .map_err(|e| value_error_reason(&e))
    };
    properties::rsmld_settings(props, &settable_flags(program), &validate)
}

/// The reason inside a clap value error, without clap's framing (which names a flag the
/// user of a properties file never typed).
fn value_error_reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("must be one of {}", valid.join(", "));
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_owned()
}

/// Builds the command line rsmld runs with: `argv` (program first) with the file's
/// settings in front of its own flags, so that flags on the command line win; parsed as
/// `program`'s command line.
pub fn merge_file_settings(
    program: &Program,
    argv: &[String],
    path: &str,
    settings: &RsmldSettings,
) -> Result<Cli, clap::Error> {
    merge_file_settings_in(program, &program.command(), argv, path, settings).map(|(cli, _)| cli)
}

/// [`merge_file_settings`] parsed with `cmd` (`program`'s command line with flags of its
/// own); the options and every match.
fn merge_file_settings_in(
    program: &Program,
    cmd: &clap::Command,
    argv: &[String],
    path: &str,
    settings: &RsmldSettings,
) -> Result<(Cli, clap::ArgMatches), clap::Error> {
    let split = |v: &[String]| -> (Vec<String>, Option<Vec<String>>) {
        match v.iter().position(|a| a == "--") {
            Some(i) => (v[..i].to_vec(), Some(v[i + 1..].to_vec())),
            None => (v.to_vec(), None),
        }
    };
    let (cli_flags, cli_cmd) = split(argv.get(1..).unwrap_or(&[]));
    let mut merged: Vec<String> = argv.first().cloned().into_iter().collect();
    merged.extend(settings.args.iter().cloned());
    merged.extend(cli_flags.iter().cloned());
    let from_file_cmd = cli_cmd.is_none() && settings.command.is_some();
    if let Some(cmd) = cli_cmd.or_else(|| settings.command.clone()) {
        merged.push("--".into());
        merged.extend(cmd);
    }
    let (mut cli, matches) = program.try_parse_in(cmd.clone(), merged)?;
    let on_command_line = |flag: &str| {
        cli_flags.iter().any(|a| {
            a.strip_prefix("--")
                .is_some_and(|rest| rest == flag || rest.starts_with(&format!("{flag}=")))
        })
    };
    let mut origins: Vec<Origin> = settings
        .origins
        .iter()
        .filter(|(flag, _)| !on_command_line(flag))
        .map(|(flag, entry)| Origin {
            flag: flag.clone(),
            path: path.to_owned(),
            entry: entry.clone(),
        })
        .collect();
    if let (true, Some(entry)) = (from_file_cmd, &settings.command_origin) {
        origins.push(Origin {
            flag: "command".into(),
            path: path.to_owned(),
            entry: entry.clone(),
        });
    }
    cli.run.origins = origins;
    Ok((cli, matches))
}

/// Most worker threads: far above any core count, far below what makes thread set-up fail.
pub const MAX_WORKERS: u64 = 1024;
/// Least `--max-in-flight-bytes`: one daemon line holding a 1 MiB record (base64 and JSON).
pub const MIN_IN_FLIGHT_BYTES: u64 = 2 << 20;

fn parse_workers(s: &str) -> Result<usize, String> {
    count_usize(s, 1, MAX_WORKERS, false)
}
fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    count_usize(s, 0, 1_000_000, true)
}
fn parse_max_in_flight_bytes(s: &str) -> Result<usize, String> {
    bytes_usize(s, MIN_IN_FLIGHT_BYTES, 16 << 30, false)
}
fn parse_max_line_bytes(s: &str) -> Result<usize, String> {
    bytes_usize(s, 2 << 20, 16 << 30, false)
}
fn parse_checkpoint_interval(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 0.0, 86_400.0, true)
}
fn parse_checkpoint_retries(s: &str) -> Result<u32, String> {
    parse_count_in(s, 0, 100, true).map(|v| v as u32)
}
fn parse_max_inflated_bytes(s: &str) -> Result<usize, String> {
    bytes_usize(s, 1 << 10, 4 << 30, false)
}
fn parse_max_items_per_record(s: &str) -> Result<u32, String> {
    // An item slot costs about 256 bytes: ten million of them are 2.5 GiB (README, Memory).
    parse_count_in(s, 1, 10_000_000, false).map(|v| v as u32)
}
fn parse_batch_size(s: &str) -> Result<usize, String> {
    count_usize(s, 1, 100_000, false)
}
fn parse_batch_interval(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 0.0, 60.0, true)
}
fn parse_retries(s: &str) -> Result<u32, String> {
    parse_count_in(s, 0, 100, true).map(|v| v as u32)
}
fn parse_retry_backoff(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 0.0, 3_600.0, true)
}
fn parse_item_timeout(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 0.01, 86_400.0, true)
}
fn parse_metrics_interval(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 0.1, 3_600.0, false)
}
fn parse_progress_interval(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 0.1, 86_400.0, false)
}
fn parse_debug_delay_ms(s: &str) -> Result<u64, String> {
    let ms = Duration::from_millis(1);
    let d = parse_duration_in(s, Duration::ZERO, Duration::from_secs(10), true, ms)?;
    // At most 10 s: the milliseconds fit.
    Ok(d.as_millis() as u64)
}
fn parse_kpl_max_bytes(s: &str) -> Result<usize, String> {
    bytes_usize(s, 64, 1 << 20, false)
}

impl RunArgs {
    /// The item timeout in force: `--item-timeout` when given (0: none), else the chosen
    /// handler's default ([`HandlerDescriptor::default_item_timeout`]: 20s for exec, the
    /// silence between a child's answers; none for the others, the length of one handler
    /// call).
    pub fn effective_item_timeout(&self) -> Option<Duration> {
        match self.item_timeout {
            Some(t) => (!t.is_zero()).then_some(t),
            None => self
                .chosen_handler()
                .and_then(|h| h.descriptor().default_item_timeout()),
        }
    }

    /// The handler `--handler` chose, with its flags; `None` without `--handler` (or with
    /// a name the registry does not have).
    pub fn chosen_handler(&self) -> Option<Chosen<'_>> {
        self.handler_args.get(self.handler.as_deref()?)
    }

    /// The parsed flag group `A` of a handler (`run.handler_group::<FileArgs>()`).
    pub fn handler_group<A: HandlerGroup>(&self) -> Option<&A> {
        self.handler_args.group::<A>()
    }

    /// The general settings a handler's flag group sees.
    pub fn general(&self) -> General<'_> {
        General {
            command: &self.command,
            max_in_flight: self.max_in_flight,
            item_timeout: self.effective_item_timeout(),
        }
    }

    /// The chosen handler: [`ConfigError::NoHandler`] without `--handler`,
    /// [`ConfigError::UnknownHandler`] for a name the registry does not have.
    fn handler(&self) -> Result<Chosen<'_>, ConfigError> {
        let name = self.handler.as_deref().ok_or(ConfigError::NoHandler)?;
        self.handler_args.get(name).ok_or_else(|| {
            let names: Vec<String> = self
                .handler_args
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect();
            ConfigError::UnknownHandler {
                name: name.to_owned(),
                suggestion: properties::nearest(name, &names).map(str::to_owned),
                valid: names.join(", "),
            }
        })
    }

    /// The settings' consistency: what [`RunArgs::into_runtime_config`] checks before it
    /// builds anything (and `rsmld check` reports), with properties-file errors named by
    /// their key and line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_consistency()
            .map_err(|e| e.in_terms_of(&self.origins))
    }

    fn check_consistency(&self) -> Result<(), ConfigError> {
        if self.workers == Some(0) {
            return Err(ConfigError::Invalid("--workers must be at least 1".into()));
        }
        self.handler()?.check(&self.general())?;
        if self.on_error == OnErrorKind::Skip && self.dead_letter.is_none() {
            return Err(ConfigError::NoDeadLetter);
        }
        Ok(())
    }

    /// Validates the flags into the runtime's configuration.
    pub fn into_runtime_config(self) -> Result<RuntimeConfig, ConfigError> {
        self.validate()?;
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let chosen = self.handler()?;
        let mut handlers = chosen.build(&self.general())?;
        let handler = chosen.descriptor();
        let item_timeout = match handler.enforces_item_timeout() {
            // The handler times out items itself (it got the timeout in `general`).
            true => None,
            false => self.item_timeout.filter(|t| !t.is_zero()),
        };
        let shutdown_timeout = handler.shutdown_timeout();
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
        Ok(RuntimeConfig {
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
                max_batch: self.batch_size,
                batch_interval: self.batch_interval,
                on_error,
                item_timeout,
            },
            splitter: Splitter::new(self.split)
                .with_max_inflated(self.max_inflated_bytes)
                .with_max_items_per_record(self.max_items_per_record as usize),
            handlers,
            shutdown_timeout,
            max_line_bytes: self.max_line_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(r: &RunArgs) -> &crate::cli::registry::file::FileArgs {
        r.handler_group().unwrap()
    }

    fn run(args: &[&str]) -> Result<RunArgs, String> {
        let argv = ["rsmld", "--handler", "discard"].iter().chain(args);
        Cli::try_parse_from(argv)
            .map(|c| c.run)
            .map_err(|e| value_error_reason(&e))
    }

    /// `--handler NAME` is resolved through the registry; an unknown name is clap's own
    /// error with its suggestion, exactly as when the names were an enum.
    #[test]
    fn unknown_handler_names_the_nearest_one() {
        let err = Cli::try_parse_from(["rsmld", "--handler", "fil"]).unwrap_err();
        assert_eq!(
            err.render().to_string(),
            "error: invalid value 'fil' for '--handler <HANDLER>'\n  [possible values: discard, file, exec]\n\n  tip: a similar value exists: 'file'\n\nFor more information, try '--help'.\n"
        );
        // A name that bypassed the parser (a registry without it) is a configuration error
        // with the same suggestion, told in terms of the properties file when it came from
        // there.
        let mut r = run(&[]).unwrap();
        r.handler = Some("fil".into());
        let err = r.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown handler \"fil\", did you mean \"file\"? (known: discard, file, exec)"
        );
        let origin = Origin {
            flag: "handler".into(),
            path: "app.properties".into(),
            entry: crate::cli::properties::parse("rsmld.handler = fil").remove(0),
        };
        assert_eq!(
            err.in_terms_of(&[origin]).to_string(),
            "app.properties:1: rsmld.handler = \"fil\": must be one of discard, file, exec"
        );
    }

    /// The handler's own settings decide what the runtime gets: exec times out silence
    /// itself (the pool's watchdog stays off) and gets longer to close.
    #[test]
    fn the_chosen_descriptor_sets_timeouts() {
        let cfg = |args: &[&str]| {
            let argv = ["rsmld"].iter().chain(args);
            Cli::try_parse_from(argv)
                .unwrap()
                .run
                .into_runtime_config()
                .unwrap()
        };
        let exec = cfg(&[
            "--handler",
            "exec",
            "--item-timeout",
            "3s",
            "--",
            "/bin/cat",
        ]);
        assert_eq!(exec.pool.item_timeout, None);
        assert_eq!(
            exec.shutdown_timeout,
            crate::handler::exec::CLOSE_BOUND + Duration::from_secs(1)
        );
        let file = cfg(&[
            "--handler",
            "file",
            "--output",
            "/nonexistent",
            "--item-timeout",
            "3s",
        ]);
        assert_eq!(file.pool.item_timeout, Some(Duration::from_secs(3)));
        assert_eq!(file.shutdown_timeout, Duration::from_secs(1));
        let run = |args: &[&str]| {
            let argv = ["rsmld"].iter().chain(args);
            Cli::try_parse_from(argv).unwrap().run
        };
        assert_eq!(
            run(&["--handler", "exec"]).effective_item_timeout(),
            Some(crate::handler::exec::DEFAULT_ANSWER_TIMEOUT)
        );
        assert_eq!(run(&["--handler", "file"]).effective_item_timeout(), None);
        assert_eq!(
            run(&["--handler", "exec", "--item-timeout", "0"]).effective_item_timeout(),
            None
        );
    }

    #[test]
    fn defaults_shown_in_units_are_the_old_defaults() {
        let r = run(&[]).unwrap();
        assert_eq!(r.max_in_flight_bytes, 8 << 20);
        assert_eq!(
            r.max_inflated_bytes,
            crate::pipeline::split::DEFAULT_MAX_INFLATED
        );
        assert_eq!(file(&r).rotate_bytes, 256 << 20);
        assert_eq!(r.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(file(&r).rotate_secs, Duration::from_secs(3600));
        assert_eq!(r.retry_backoff, Duration::from_secs(1));
        assert_eq!(r.batch_interval, Duration::ZERO);
        assert_eq!(r.item_timeout, None);
        let help = <Cli as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        for shown in [
            "[default: 8MiB]",
            "[default: 64MiB]",
            "[default: 256MiB]",
            "[default: 60s]",
            "[default: 1h]",
            "[default: 1s]",
        ] {
            assert!(help.contains(shown), "{shown} not in --help:\n{help}");
        }
    }

    #[test]
    fn flags_take_units_and_plain_numbers_keep_their_meaning() {
        let r = run(&[
            "--checkpoint-interval=2s",
            "--max-in-flight-bytes=16MiB",
            "--rotate-bytes=1GB",
            "--rotate-secs=1m30s",
            "--batch-interval=5ms",
            "--retry-backoff=0.5",
            "--item-timeout=1.5s",
            "--max-inflated-bytes=8 MiB",
            "--debug-delay-ms=7",
        ])
        .unwrap();
        assert_eq!(r.checkpoint_interval, Duration::from_secs(2));
        assert_eq!(r.max_in_flight_bytes, 16 << 20);
        assert_eq!(file(&r).rotate_bytes, 1_000_000_000);
        assert_eq!(file(&r).rotate_secs, Duration::from_secs(90));
        assert_eq!(r.batch_interval, Duration::from_millis(5));
        assert_eq!(r.retry_backoff, Duration::from_millis(500));
        assert_eq!(r.item_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(r.max_inflated_bytes, 8 << 20);
        assert_eq!(r.debug_delay_ms, Some(7));
        let r = run(&["--checkpoint-interval=90", "--max-in-flight-bytes=4194304"]).unwrap();
        assert_eq!(r.checkpoint_interval, Duration::from_secs(90));
        assert_eq!(r.max_in_flight_bytes, 4 << 20);
        assert_eq!(
            run(&["--debug-delay-ms=2s"]).unwrap().debug_delay_ms,
            Some(2000)
        );
    }

    #[test]
    fn bounds_hold_in_every_unit() {
        let cases = [
            ("--checkpoint-interval=0s", None),
            ("--checkpoint-interval=1d", None),
            (
                "--checkpoint-interval=1d1ns",
                Some("86400000000001ns is out of range: must be 0s..=1d"),
            ),
            ("--checkpoint-interval=-1s", Some("\"-1s\" is negative")),
            (
                "--checkpoint-interval=1e300",
                Some("\"1e300\" is too large: must be 0s..=1d"),
            ),
            (
                "--item-timeout=5ms",
                Some("5ms is out of range: must be 0 or 10ms..=1d"),
            ),
            ("--item-timeout=0", None),
            ("--item-timeout=0.01", None),
            (
                "--batch-interval=61s",
                Some("61s is out of range: must be 0s..=60s"),
            ),
            (
                "--rotate-secs=500ms",
                Some("500ms is out of range: must be 0 or 1s..=7d"),
            ),
            ("--max-in-flight-bytes=2MiB", None),
            ("--max-in-flight-bytes=16GiB", None),
            (
                "--max-in-flight-bytes=2MB",
                Some("2000000B is out of range: must be 2MiB..=16GiB"),
            ),
            (
                "--max-in-flight-bytes=17GiB",
                Some("17GiB is out of range: must be 2MiB..=16GiB"),
            ),
            (
                "--max-in-flight-bytes=8M",
                Some("\"8M\" is ambiguous: write 8MiB (powers of 1024) or 8MB (powers of 1000)"),
            ),
            (
                "--rotate-bytes=99999999999TiB",
                Some("\"99999999999TiB\" is too large: must be 0 or 1KiB..=1TiB"),
            ),
            ("--rotate-bytes=0", None),
            ("--rotate-bytes=0B", None),
            (
                "--debug-delay-ms=11s",
                Some("11s is out of range: must be 0s..=10s"),
            ),
        ];
        for (arg, want) in cases {
            let got = run(&[arg]).err();
            assert_eq!(got.as_deref(), want, "{arg}");
        }
    }
}
