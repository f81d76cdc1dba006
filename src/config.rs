//! Command line → validated configuration.
//!
//! The daemon starts rsmld with `executableName` split on spaces (no shell, no quoting),
//! so every setting is a plain `--flag value` pair. Validation happens here, before the
//! protocol starts, so that a bad setting is one clear error at start-up rather than a
//! surprise in the middle of a lease.
//!
//! Durations and sizes take human units (`2s`, `500ms`, `8MiB`; see [`units`]); a plain
//! number keeps its old meaning (seconds, bytes). Every number has bounds, enforced by the
//! value parsers here, which `--properties` and `rsmld check` use too.

pub mod units;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::handler::discard::DiscardFactory;
use crate::handler::exec::{
    ExecFactory, ExecFraming, ExecOptions, CLOSE_BOUND, DEFAULT_ANSWER_TIMEOUT,
    DEFAULT_STALL_WARNING,
};
use crate::handler::file::{FileFactory, FileOptions};
use crate::handler::{delay::DelayFactory, HandlerFactory};
use crate::pipeline::split::{SplitMode, Splitter, DEFAULT_MAX_ITEMS_PER_RECORD};
use crate::pool::{OnError, PoolConfig};
use crate::properties::{self, Diagnostic, Entry, Properties, PropertiesError, RsmldSettings};
use crate::protocol::session::{OnDuplicate, SessionConfig};
use crate::runtime::RuntimeConfig as DriverConfig;

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

impl From<KclArg> for crate::check::kcl::Kcl {
    fn from(k: KclArg) -> Self {
        match k {
            KclArg::V2 => crate::check::kcl::Kcl::V2,
            KclArg::V3 => crate::check::kcl::Kcl::V3,
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
    #[arg(long, value_enum)]
    pub handler: Option<HandlerKind>,
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
    /// Output directory of the file handler.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// File handler: start a new file at this size (a size: 256MiB, 1GiB; plain bytes;
    /// 0: never; else 1KiB..=1TiB).
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = parse_rotate_bytes)]
    pub rotate_bytes: u64,
    /// File handler: start a new file after this long (a duration: 1h, 15m; a plain number
    /// is seconds; 0: never; else 1s..=7d).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_rotate_secs)]
    pub rotate_secs: Duration,
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
    /// Exec handler: one item per line, or one line per batch (`{"batch":N,"items":[…]}`,
    /// one answer per batch).
    #[arg(long, value_enum, default_value_t = ExecFraming::Item)]
    pub exec_framing: ExecFraming,
    /// Exec handler: the command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Testing aid: each item waits a pseudo-random 0..=N ms in its worker before the
    /// handler sees it (shakes completion order; a plain number is milliseconds, or a
    /// duration: 50ms; 0ms..=10s).
    #[arg(long, hide = true, value_parser = parse_debug_delay_ms)]
    pub debug_delay_ms: Option<u64>,
    /// The settings that came from `--properties` (for messages that name their key).
    #[arg(skip)]
    pub origins: Vec<Origin>,
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
    /// A setting from the properties file that cannot work, named as the user wrote it.
    #[error("{path}:{line}: {message}")]
    InFile {
        /// The properties file.
        path: String,
        /// The line of the key.
        line: usize,
        /// The message, with `rsmld.*` keys in place of flags.
        message: String,
    },
}

impl ConfigError {
    /// The flags (long names without dashes) the error is about, most specific first.
    pub fn flags(&self) -> &'static [&'static str] {
        match self {
            ConfigError::NoHandler => &["handler"],
            ConfigError::NoOutput => &["handler", "output"],
            ConfigError::NoDeadLetter => &["on-error", "dead-letter"],
            ConfigError::NoCommand => &["handler", "command"],
            ConfigError::Invalid(_) | ConfigError::InFile { .. } => &[],
        }
    }

    /// The same error told in terms of the properties file when one of its flags came from
    /// there: the file, the line and the key as written (`rsmld.handler`), not a flag the
    /// user never typed.
    pub fn in_terms_of(self, origins: &[Origin]) -> ConfigError {
        let Some(origin) = self
            .flags()
            .iter()
            .find_map(|f| origins.iter().find(|o| o.flag == *f))
        else {
            return self;
        };
        let key = |flag: &str| match origins.iter().find(|o| o.flag == flag) {
            Some(o) if flag != "command" => o.entry.key.clone(),
            _ if flag == "command" => properties::EXEC_COMMAND_KEY.to_owned(),
            _ => format!("rsmld.{}", flag.replace('-', "_")),
        };
        let message = match &self {
            ConfigError::NoHandler => {
                format!("no handler: set {} = discard, file or exec", key("handler"))
            }
            ConfigError::NoOutput => format!(
                "{} = file needs {} (the output directory)",
                key("handler"),
                key("output")
            ),
            ConfigError::NoDeadLetter => format!(
                "{} = skip needs {} (the dead-letter directory)",
                key("on-error"),
                key("dead-letter")
            ),
            ConfigError::NoCommand => format!(
                "{} = exec needs {} (or a command after -- in executableName)",
                key("handler"),
                key("command")
            ),
            ConfigError::Invalid(m) => m.clone(),
            ConfigError::InFile { message, .. } => message.clone(),
        };
        ConfigError::InFile {
            path: origin.path.clone(),
            line: origin.entry.line,
            message,
        }
    }
}

impl Cli {
    /// Parses the command line, merging `rsmld.*` settings from `--properties FILE`
    /// (command-line flags win; a command after `--` on the command line replaces
    /// `rsmld.exec.command`). Every bad `rsmld.*` entry is reported at once, each with
    /// the file, its line and its key as written ([`PropertiesError::Invalid`]).
    pub fn parse_with_properties(argv: Vec<String>) -> Result<Cli, anyhow::Error> {
        let first = Cli::try_parse_from(&argv)?;
        let Some(path) = first.run.properties.clone() else {
            return Ok(first);
        };
        let props = Properties::read(&path)?;
        let (settings, problems) = file_settings(&props);
        if !problems.is_empty() {
            return Err(PropertiesError::Invalid(problems).into());
        }
        Ok(merge_file_settings(&argv, &props.path, &settings)?)
    }
}

/// One setting that came from the properties file (and was not overridden on the command
/// line): where it is, for messages that name the key the user wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Long flag name without dashes (`output`).
    pub flag: String,
    /// The properties file.
    pub path: String,
    /// The entry: its line and its key as written (`rsmld.output`).
    pub entry: Entry,
}

/// The long flags rsmld reads from `rsmld.*` keys (without dashes).
fn settable_flags() -> Vec<String> {
    <Cli as clap::CommandFactory>::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|l| l != "help" && l != "version")
        .collect()
}

/// Reads the `rsmld.*` keys of `props` with the command line's own value parsers: the one
/// validation path of `--properties` at start-up and of `rsmld check`.
pub fn file_settings(props: &Properties) -> (RsmldSettings, Vec<Diagnostic>) {
    let validate = |flag: &str, value: &str| -> Result<(), String> {
        // The real parser, on this one flag: `--flag=value` so that a value starting with
        // `-` stays a value.
        <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(["rsmld".to_owned(), format!("--{flag}={value}")])
            .map(|_| ())
            .map_err(|e| value_error_reason(&e))
    };
    properties::rsmld_settings(props, &settable_flags(), &validate)
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
/// settings in front of its own flags, so that flags on the command line win.
pub fn merge_file_settings(
    argv: &[String],
    path: &str,
    settings: &RsmldSettings,
) -> Result<Cli, clap::Error> {
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
    let mut cli = Cli::try_parse_from(merged)?;
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
    Ok(cli)
}

/// Parses a duration (`2s`, `500ms`, `1m30s`; a plain number is seconds, fractions allowed:
/// `0.25`, `60`) within `min..=max` seconds; `0` is also accepted when `zero_ok` (it means
/// "off" or "at once" for those settings).
///
/// Rejects what `f64` parsing would let through but no setting can mean: NaN, infinities,
/// negative and absurdly large values (a `Duration` that overflows `Instant` arithmetic
/// later would panic in the middle of a lease).
///
/// `min` and `max` are the flag's constant bounds: finite and not negative
/// (`Duration::from_secs_f64` panics otherwise).
pub fn parse_seconds_in(s: &str, min: f64, max: f64, zero_ok: bool) -> Result<Duration, String> {
    parse_duration_in(
        s,
        Duration::from_secs_f64(min),
        Duration::from_secs_f64(max),
        zero_ok,
        Duration::from_secs(1),
    )
}

/// Parses a duration within `min..=max` (or zero when `zero_ok`); a plain number counts in
/// `plain_unit`. The error names the range in human units (`must be 0 or 10ms..=1d`).
pub fn parse_duration_in(
    s: &str,
    min: Duration,
    max: Duration,
    zero_ok: bool,
    plain_unit: Duration,
) -> Result<Duration, String> {
    let range = || {
        let zero = if zero_ok && !min.is_zero() {
            "0 or "
        } else {
            ""
        };
        let (min, max) = (units::format_duration(min), units::format_duration(max));
        format!("must be {zero}{min}..={max}")
    };
    let v = match units::parse_duration(s, plain_unit) {
        Ok(v) => v,
        Err(e @ units::UnitError::TooLarge(_)) => return Err(format!("{e}: {}", range())),
        Err(e) => return Err(e.to_string()),
    };
    if (min..=max).contains(&v) || (zero_ok && v.is_zero()) {
        return Ok(v);
    }
    Err(format!(
        "{} is out of range: {}",
        units::format_duration(v),
        range()
    ))
}

/// Parses a size (`8MiB`, `64KiB`, `1GB`; a plain number is bytes) within `min..=max`;
/// `0` is also accepted when `zero_ok`. The error names the range in IEC units.
pub fn parse_bytes_in(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<u64, String> {
    let range = || {
        let zero = if zero_ok && min > 0 { "0 or " } else { "" };
        let (min, max) = (units::format_size(min), units::format_size(max));
        format!("must be {zero}{min}..={max}")
    };
    let v = match units::parse_size(s) {
        Ok(v) => v,
        Err(e @ units::UnitError::TooLarge(_)) => return Err(format!("{e}: {}", range())),
        Err(e) => return Err(e.to_string()),
    };
    if (min..=max).contains(&v) || (zero_ok && v == 0) {
        return Ok(v);
    }
    Err(format!(
        "{} is out of range: {}",
        units::format_size(v),
        range()
    ))
}

fn bytes_usize(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<usize, String> {
    let v = parse_bytes_in(s, min, max, zero_ok)?;
    usize::try_from(v).map_err(|_| format!("{v} does not fit this machine's address size"))
}

/// Parses a whole number within `min..=max`; `0` is also accepted when `zero_ok`.
pub fn parse_count_in(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if (min..=max).contains(&v) || (zero_ok && v == 0) {
        return Ok(v);
    }
    let zero = if zero_ok && min > 0 { "0 or " } else { "" };
    Err(format!("{v} is out of range: must be {zero}{min}..={max}"))
}

fn count_usize(s: &str, min: u64, max: u64, zero_ok: bool) -> Result<usize, String> {
    let v = parse_count_in(s, min, max, zero_ok)?;
    usize::try_from(v).map_err(|_| format!("{v} does not fit this machine's address size"))
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
fn parse_rotate_bytes(s: &str) -> Result<u64, String> {
    parse_bytes_in(s, 1 << 10, 1 << 40, true)
}
fn parse_rotate_secs(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 1.0, 604_800.0, true)
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
    /// The item timeout in force: `--item-timeout` when given (0: none), else
    /// [`DEFAULT_ANSWER_TIMEOUT`] for exec (the silence between a child's answers) and
    /// none for the other handlers (the length of one handler call).
    pub fn effective_item_timeout(&self) -> Option<Duration> {
        match (self.item_timeout, self.handler) {
            (Some(t), _) => (!t.is_zero()).then_some(t),
            (None, Some(HandlerKind::Exec)) => Some(DEFAULT_ANSWER_TIMEOUT),
            (None, _) => None,
        }
    }

    /// The settings' consistency: what [`RunArgs::into_driver_config`] checks before it
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
        match self.handler.ok_or(ConfigError::NoHandler)? {
            HandlerKind::Discard => {}
            HandlerKind::File if self.output.is_none() => return Err(ConfigError::NoOutput),
            HandlerKind::File => {}
            HandlerKind::Exec if self.command.is_empty() => return Err(ConfigError::NoCommand),
            HandlerKind::Exec => {}
        }
        if self.on_error == OnErrorKind::Skip && self.dead_letter.is_none() {
            return Err(ConfigError::NoDeadLetter);
        }
        Ok(())
    }

    /// Validates the flags into the driver's configuration.
    pub fn into_driver_config(mut self) -> Result<DriverConfig, ConfigError> {
        self.validate()?;
        let workers = match self.workers {
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
                    let answer_timeout = self.effective_item_timeout();
                    self.item_timeout = None;
                    Arc::new(ExecFactory::new(ExecOptions {
                        command: self.command,
                        framing: self.exec_framing,
                        max_pipelined: self.max_in_flight.max(1),
                        restart_backoff: Duration::from_millis(100),
                        restart_backoff_max: Duration::from_secs(5),
                        stall_warning: DEFAULT_STALL_WARNING,
                        answer_timeout,
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
                max_batch: self.batch_size,
                batch_interval: self.batch_interval,
                on_error,
                item_timeout: self.item_timeout.filter(|t| !t.is_zero()),
            },
            splitter: Splitter::new(self.split)
                .with_max_inflated(self.max_inflated_bytes)
                .with_max_items_per_record(self.max_items_per_record as usize),
            handlers,
            // Room for the exec handler's bounded close; then the binary's sweep kills.
            shutdown_timeout: match self.handler {
                Some(HandlerKind::Exec) => CLOSE_BOUND + Duration::from_secs(1),
                _ => Duration::from_secs(1),
            },
            max_line_bytes: self.max_line_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, String> {
        let argv = ["rsmld", "--handler", "discard"].iter().chain(args);
        Cli::try_parse_from(argv)
            .map(|c| c.run)
            .map_err(|e| value_error_reason(&e))
    }

    #[test]
    fn defaults_shown_in_units_are_the_old_defaults() {
        let r = run(&[]).unwrap();
        assert_eq!(r.max_in_flight_bytes, 8 << 20);
        assert_eq!(
            r.max_inflated_bytes,
            crate::pipeline::split::DEFAULT_MAX_INFLATED
        );
        assert_eq!(r.rotate_bytes, 256 << 20);
        assert_eq!(r.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(r.rotate_secs, Duration::from_secs(3600));
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
        assert_eq!(r.rotate_bytes, 1_000_000_000);
        assert_eq!(r.rotate_secs, Duration::from_secs(90));
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
