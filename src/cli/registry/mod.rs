//! The handlers `--handler NAME` can choose, each with its own flag group.
//!
//! A handler is a [`HandlerDescriptor`]: its name, a one-line help, its flags (a
//! `#[derive(clap::Args)]` struct that implements [`HandlerGroup`], shown under its own
//! heading in `--help`), the `rsmld.*` keys those flags are read from (each long flag
//! `--<name>` is `rsmld.<name>`, see [`crate::cli::properties`]), and what the group means:
//! the settings that cannot work, what the handler needs from the machine, and the
//! [`HandlerFactory`] it builds. The [`Registry`] is the list of descriptors; the command
//! line's definition, `--properties`, `rsmld check` and the start-up prerequisites all read
//! it, so adding a handler is one new file here and one line in [`Registry::builtin`], not
//! an edit of each of them.
//!
//! Nothing here is special to the built-ins: a library user's handler is a descriptor of
//! the same kind (its flags and `rsmld.<name>.*` keys come with its group), added to a
//! custom binary's command line by [`Program::handler`](crate::Program::handler); the
//! built-in command line is [`Registry::builtin`].
//!
//! The parsed groups travel in [`HandlerArgs`] (a field of the record processor's flags),
//! each with its descriptor, so a parsed command line knows how to check and build its
//! handler without a registry at hand.

pub mod discard;
pub mod exec;
pub mod file;

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{ArgMatches, FromArgMatches};

use super::error::ConfigError;
use crate::handler::HandlerFactory;

/// The general settings a handler's group may read besides its own flags.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct General<'a> {
    /// The command after `--` (or from `rsmld.exec.command`); empty when none was given.
    pub command: &'a [String],
    /// `--max-in-flight`: unfinished items allowed when a batch is acknowledged.
    pub max_in_flight: usize,
    /// The item timeout in force: `--item-timeout`, else the handler's
    /// [`HandlerDescriptor::default_item_timeout`]; `None`: off.
    pub item_timeout: Option<Duration>,
}

/// Something a handler needs from the machine, checked before the first record (by
/// start-up and by `rsmld check`, see `check::prereq`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// A directory the handler writes into: it must take a file (or be creatable).
    WritableDir {
        /// The setting that names it: a long flag without dashes (`output`).
        flag: &'static str,
        /// The directory, as given.
        path: PathBuf,
    },
    /// A program the handler starts: it must resolve as `execvp` resolves it.
    Program {
        /// The setting that names it: a long flag without dashes, or `command` for the
        /// command after `--`.
        flag: &'static str,
        /// The program, as given.
        program: String,
    },
}

/// A handler's flag group: its clap flags, and what they mean for the handler.
pub trait HandlerGroup: clap::Args + fmt::Debug + Send + Sync + 'static {
    /// The settings that cannot work (before anything is built; `rsmld check` reports
    /// them too). The default: none.
    fn check(&self, general: &General<'_>) -> Result<(), ConfigError> {
        let _ = general;
        Ok(())
    }

    /// What the handler needs from the machine. The default: nothing.
    fn needs(&self, general: &General<'_>) -> Vec<Need> {
        let _ = general;
        Vec::new()
    }

    /// The factory of this handler's per-worker handlers.
    fn build(&self, general: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError>;
}

/// One handler `--handler` can choose.
pub struct HandlerDescriptor {
    name: &'static str,
    help: &'static str,
    heading: Option<&'static str>,
    extra_keys: Vec<&'static str>,
    default_item_timeout: Option<Duration>,
    enforces_item_timeout: bool,
    shutdown_timeout: Duration,
    group: Box<dyn ErasedGroup>,
}

impl HandlerDescriptor {
    /// The handler `name` (its `--handler` value), with its one-line `help` (shown in the
    /// list of `--handler` values) and its flag group `A`. No heading, no default item
    /// timeout, a shutdown allowance of 1 s: see the setters.
    pub fn new<A: HandlerGroup>(name: &'static str, help: &'static str) -> Self {
        HandlerDescriptor {
            name,
            help,
            heading: None,
            extra_keys: Vec::new(),
            default_item_timeout: None,
            enforces_item_timeout: false,
            shutdown_timeout: Duration::from_secs(1),
            group: Box::new(Typed::<A>(PhantomData)),
        }
    }

    /// The handler `name` without flags of its own: every worker's handler comes from
    /// `factory`. (A handler with flags is [`HandlerDescriptor::new`] with its group.)
    pub fn fixed(name: &'static str, help: &'static str, factory: Arc<dyn HandlerFactory>) -> Self {
        HandlerDescriptor {
            group: Box::new(Fixed(factory)),
            ..HandlerDescriptor::new::<NoFlags>(name, help)
        }
    }

    /// The heading its flags are shown under in `--help` (`File handler`).
    pub fn with_heading(mut self, heading: &'static str) -> Self {
        self.heading = Some(heading);
        self
    }

    /// An `rsmld.*` key it reads that is not one of its group's flags
    /// (`rsmld.exec.command`, the command after `--`).
    pub fn with_key(mut self, key: &'static str) -> Self {
        self.extra_keys.push(key);
        self
    }

    /// The item timeout when `--item-timeout` is not given (else none).
    pub fn with_default_item_timeout(mut self, timeout: Duration) -> Self {
        self.default_item_timeout = Some(timeout);
        self
    }

    /// The handler enforces the item timeout itself (it gets it in
    /// [`General::item_timeout`]); the pool's watchdog stays off.
    pub fn enforcing_item_timeout(mut self) -> Self {
        self.enforces_item_timeout = true;
        self
    }

    /// How long the runtime waits for this handler's handlers to close at shutdown.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The `--handler` value.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The one-line help.
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// The `--help` heading of its flags, if it has one.
    pub fn heading(&self) -> Option<&'static str> {
        self.heading
    }

    /// See [`HandlerDescriptor::with_default_item_timeout`].
    pub fn default_item_timeout(&self) -> Option<Duration> {
        self.default_item_timeout
    }

    /// See [`HandlerDescriptor::enforcing_item_timeout`].
    pub fn enforces_item_timeout(&self) -> bool {
        self.enforces_item_timeout
    }

    /// See [`HandlerDescriptor::with_shutdown_timeout`].
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// The long flags of its group (without dashes), in definition order.
    pub fn flags(&self) -> Vec<String> {
        self.augment(clap::Command::new("flags"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    }

    /// Its `rsmld.*` keys: one per long flag (`rsmld.rotate_bytes`), then the others
    /// ([`HandlerDescriptor::with_key`]).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .flags()
            .iter()
            .map(|f| format!("rsmld.{}", f.replace('-', "_")))
            .collect();
        keys.extend(self.extra_keys.iter().map(|k| (*k).to_owned()));
        keys
    }

    /// Adds its flags to `cmd`, under its heading; flags added after them have no
    /// heading (the general ones are under clap's `Options`).
    pub fn augment(&self, cmd: clap::Command) -> clap::Command {
        self.group
            .augment(cmd.next_help_heading(self.heading))
            .next_help_heading(None::<&'static str>)
    }
}

impl fmt::Debug for HandlerDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerDescriptor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A parsed flag group, of the type its descriptor knows.
trait ParsedGroup: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + fmt::Debug + Send + Sync> ParsedGroup for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A descriptor's group with its type erased, so that descriptors of different groups
/// make one list.
trait ErasedGroup: Send + Sync {
    fn augment(&self, cmd: clap::Command) -> clap::Command;
    fn parse(&self, matches: &ArgMatches) -> Result<Arc<dyn ParsedGroup>, clap::Error>;
    fn check(&self, group: &dyn ParsedGroup, general: &General<'_>) -> Result<(), ConfigError>;
    fn needs(&self, group: &dyn ParsedGroup, general: &General<'_>) -> Vec<Need>;
    fn build(
        &self,
        group: &dyn ParsedGroup,
        general: &General<'_>,
    ) -> Result<Arc<dyn HandlerFactory>, ConfigError>;
}

struct Typed<A>(PhantomData<fn() -> A>);

impl<A: HandlerGroup> Typed<A> {
    fn group<'g>(&self, group: &'g dyn ParsedGroup) -> Result<&'g A, ConfigError> {
        // A group is only ever parsed by its own descriptor (`HandlerArgs` pairs them).
        group.as_any().downcast_ref::<A>().ok_or_else(|| {
            ConfigError::Invalid(format!(
                "internal error: a handler's flag group is not a {}",
                std::any::type_name::<A>()
            ))
        })
    }
}

impl<A: HandlerGroup> ErasedGroup for Typed<A> {
    fn augment(&self, cmd: clap::Command) -> clap::Command {
        A::augment_args(cmd)
    }
    fn parse(&self, matches: &ArgMatches) -> Result<Arc<dyn ParsedGroup>, clap::Error> {
        Ok(Arc::new(A::from_arg_matches(matches)?))
    }
    fn check(&self, group: &dyn ParsedGroup, general: &General<'_>) -> Result<(), ConfigError> {
        self.group(group)?.check(general)
    }
    fn needs(&self, group: &dyn ParsedGroup, general: &General<'_>) -> Vec<Need> {
        self.group(group)
            .map(|g| g.needs(general))
            .unwrap_or_default()
    }
    fn build(
        &self,
        group: &dyn ParsedGroup,
        general: &General<'_>,
    ) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        self.group(group)?.build(general)
    }
}

/// The flag group of a [`HandlerDescriptor::fixed`] handler: none.
#[derive(Clone, Debug, clap::Args)]
struct NoFlags;

impl HandlerGroup for NoFlags {
    fn build(&self, _: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        Err(ConfigError::Invalid(
            "internal error: a fixed handler is built from its factory".into(),
        ))
    }
}

/// The group of a [`HandlerDescriptor::fixed`] handler: no flags, a factory.
struct Fixed(Arc<dyn HandlerFactory>);

impl ErasedGroup for Fixed {
    fn augment(&self, cmd: clap::Command) -> clap::Command {
        cmd
    }
    fn parse(&self, _: &ArgMatches) -> Result<Arc<dyn ParsedGroup>, clap::Error> {
        Ok(Arc::new(NoFlags))
    }
    fn check(&self, _: &dyn ParsedGroup, _: &General<'_>) -> Result<(), ConfigError> {
        Ok(())
    }
    fn needs(&self, _: &dyn ParsedGroup, _: &General<'_>) -> Vec<Need> {
        Vec::new()
    }
    fn build(
        &self,
        _: &dyn ParsedGroup,
        _: &General<'_>,
    ) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        Ok(Arc::clone(&self.0))
    }
}

/// The handlers a command line knows, in `--help` order.
#[derive(Debug, Default)]
pub struct Registry {
    handlers: Vec<Arc<HandlerDescriptor>>,
}

impl Registry {
    /// A registry without handlers.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The built-in handlers: discard, file, exec. (The test aid `--debug-delay-ms` is a
    /// wrapper around whichever handler runs, not a handler, so it is a general flag.)
    pub fn builtin() -> &'static Registry {
        static BUILTIN: OnceLock<Registry> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            Registry::new()
                .with(discard::descriptor())
                .with(file::descriptor())
                .with(exec::descriptor())
        })
    }

    /// This registry with `handler` added after the others.
    pub fn with(mut self, handler: HandlerDescriptor) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// This registry with every handler of `other` added after its own (shared, not
    /// copied).
    pub fn with_all(mut self, other: &Registry) -> Self {
        self.handlers.extend(other.handlers.iter().cloned());
        self
    }

    /// Whether it has no handler.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// The handler called `name`.
    pub fn get(&self, name: &str) -> Option<&HandlerDescriptor> {
        self.handlers.iter().find(|d| d.name == name).map(|d| &**d)
    }

    /// Every handler, in order.
    pub fn iter(&self) -> impl Iterator<Item = &HandlerDescriptor> {
        self.handlers.iter().map(|d| &**d)
    }

    /// The `--handler` values, each with its help.
    pub fn possible_values(&self) -> Vec<PossibleValue> {
        self.iter()
            .map(|d| PossibleValue::new(d.name).help(d.help))
            .collect()
    }

    /// Adds every handler's flags to `cmd`, each group under its heading.
    pub fn augment(&self, cmd: clap::Command) -> clap::Command {
        self.iter().fold(cmd, |cmd, d| d.augment(cmd))
    }

    /// Every handler's flag group, parsed from `matches`.
    pub fn parse(&self, matches: &ArgMatches) -> Result<HandlerArgs, clap::Error> {
        let parsed = self
            .handlers
            .iter()
            .map(|d| {
                Ok(Parsed {
                    descriptor: Arc::clone(d),
                    group: d.group.parse(matches)?,
                })
            })
            .collect::<Result<_, clap::Error>>()?;
        Ok(HandlerArgs { parsed })
    }
}

/// The parsed flag groups of a registry's handlers, each with its descriptor: a field of
/// the record processor's flags (as a clap group, the built-in registry's).
#[derive(Clone, Default)]
pub struct HandlerArgs {
    parsed: Vec<Parsed>,
}

#[derive(Clone)]
struct Parsed {
    descriptor: Arc<HandlerDescriptor>,
    group: Arc<dyn ParsedGroup>,
}

/// A chosen handler with its parsed flags.
#[derive(Clone, Copy)]
pub struct Chosen<'a> {
    descriptor: &'a HandlerDescriptor,
    group: &'a dyn ParsedGroup,
}

impl<'a> Chosen<'a> {
    /// Its descriptor.
    pub fn descriptor(&self) -> &'a HandlerDescriptor {
        self.descriptor
    }

    /// [`HandlerGroup::check`] of its flags.
    pub fn check(&self, general: &General<'_>) -> Result<(), ConfigError> {
        self.descriptor.group.check(self.group, general)
    }

    /// [`HandlerGroup::needs`] of its flags.
    pub fn needs(&self, general: &General<'_>) -> Vec<Need> {
        self.descriptor.group.needs(self.group, general)
    }

    /// [`HandlerGroup::build`] of its flags.
    pub fn build(&self, general: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        self.descriptor.group.build(self.group, general)
    }
}

impl HandlerArgs {
    /// The handler called `name`, with its parsed flags.
    pub fn get(&self, name: &str) -> Option<Chosen<'_>> {
        self.parsed
            .iter()
            .find(|p| p.descriptor.name == name)
            .map(|p| Chosen {
                descriptor: &p.descriptor,
                group: &*p.group,
            })
    }

    /// The parsed flag group of type `A`, if one of the handlers has it.
    pub fn group<A: HandlerGroup>(&self) -> Option<&A> {
        self.parsed
            .iter()
            .find_map(|p| (*p.group).as_any().downcast_ref::<A>())
    }

    /// The names of the handlers parsed, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.parsed.iter().map(|p| p.descriptor.name).collect()
    }
}

impl fmt::Debug for HandlerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.parsed.iter().map(|p| (p.descriptor.name, &p.group)))
            .finish()
    }
}

impl FromArgMatches for HandlerArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Registry::builtin().parse(matches)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Registry::builtin().parse(matches)?;
        Ok(())
    }
}

impl clap::Args for HandlerArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Registry::builtin().augment(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Registry::builtin().augment(cmd)
    }
}

/// The `--handler` values of the built-in registry, for the flag's value parser.
pub fn builtin_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Registry::builtin().possible_values())
}

#[cfg(test)]
mod tests {
    use clap::builder::PossibleValuesParser;
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::config::Cli;
    use crate::handler::discard::DiscardFactory;

    /// A handler of a library user's kind: its own flag, its own key.
    #[derive(Clone, Debug, clap::Args)]
    struct EchoArgs {
        /// Echo handler: where to echo.
        #[arg(long)]
        echo_to: Option<String>,
    }

    impl HandlerGroup for EchoArgs {
        fn check(&self, _: &General<'_>) -> Result<(), ConfigError> {
            match self.echo_to {
                Some(_) => Ok(()),
                None => Err(ConfigError::Invalid(
                    "--handler echo needs --echo-to".into(),
                )),
            }
        }
        fn build(&self, _: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
            Ok(Arc::new(DiscardFactory::new()))
        }
    }

    fn general() -> General<'static> {
        General {
            command: &[],
            max_in_flight: 1,
            item_timeout: None,
        }
    }

    #[test]
    fn builtins_have_their_names_headings_and_keys() {
        let got: Vec<(&str, Option<&str>, Vec<String>)> = Registry::builtin()
            .iter()
            .map(|d| (d.name(), d.heading(), d.keys()))
            .collect();
        let want: [(&str, Option<&str>, &[&str]); 3] = [
            ("discard", None, &[]),
            (
                "file",
                Some("File handler"),
                &["rsmld.output", "rsmld.rotate_bytes", "rsmld.rotate_secs"],
            ),
            (
                "exec",
                Some("Exec handler"),
                &["rsmld.exec_framing", "rsmld.exec.command"],
            ),
        ];
        let want: Vec<(&str, Option<&str>, Vec<String>)> = want
            .iter()
            .map(|(n, h, k)| (*n, *h, k.iter().map(|k| (*k).to_owned()).collect()))
            .collect();
        assert_eq!(got, want);
        let exec = Registry::builtin().get("exec").unwrap();
        assert!(exec.enforces_item_timeout());
        assert_eq!(
            exec.default_item_timeout(),
            Some(crate::handler::exec::DEFAULT_ANSWER_TIMEOUT)
        );
        assert!(Registry::builtin().get("nope").is_none());
    }

    /// Each handler's flags are in its own section of `--help`, after the general ones.
    #[test]
    fn each_group_is_shown_under_its_heading() {
        let help = Cli::command().render_long_help().to_string();
        let at = |s: &str| {
            help.find(s)
                .unwrap_or_else(|| panic!("{s:?} not in --help:\n{help}"))
        };
        let (options, file, exec) = (
            at("\nOptions:\n"),
            at("\nFile handler:\n"),
            at("\nExec handler:\n"),
        );
        assert!(options < at("--handler <HANDLER>") && at("--item-timeout") < file);
        for flag in ["--output <OUTPUT>", "--rotate-bytes", "--rotate-secs"] {
            assert!(
                (file..exec).contains(&at(flag)),
                "{flag} not under File handler"
            );
        }
        assert!(
            exec < at("--exec-framing"),
            "--exec-framing not under Exec handler"
        );
        Cli::command().debug_assert();
    }

    /// The seam a library user's handler will use: a registry with a handler of its own,
    /// whose flags, keys, values and build come with it.
    #[test]
    fn a_registry_takes_a_handler_with_its_own_flags() {
        let registry = Registry::new().with(discard::descriptor()).with(
            HandlerDescriptor::new::<EchoArgs>("echo", "Echo items").with_heading("Echo handler"),
        );
        let handler = clap::Arg::new("handler")
            .long("handler")
            .value_parser(PossibleValuesParser::new(registry.possible_values()));
        let cmd = registry.augment(clap::Command::new("custom").arg(handler));
        assert_eq!(registry.get("echo").unwrap().keys(), ["rsmld.echo_to"]);
        // `rsmld.echo.to` and `rsmld.echo_to` both name --echo-to.
        assert_eq!(crate::cli::properties::flag_of("echo.to"), "echo-to");

        let m = cmd
            .clone()
            .try_get_matches_from(["custom", "--handler", "echo", "--echo-to", "there"])
            .unwrap();
        let args = registry.parse(&m).unwrap();
        assert_eq!(args.names(), ["discard", "echo"]);
        let echo = args.group::<EchoArgs>().unwrap();
        assert_eq!(echo.echo_to.as_deref(), Some("there"));
        let chosen = args.get("echo").unwrap();
        assert_eq!(chosen.descriptor().name(), "echo");
        chosen.check(&general()).unwrap();
        chosen.build(&general()).unwrap();

        let m = cmd
            .clone()
            .try_get_matches_from(["custom", "--handler", "echo"])
            .unwrap();
        let err = registry
            .parse(&m)
            .unwrap()
            .get("echo")
            .unwrap()
            .check(&general());
        assert_eq!(
            err.unwrap_err().to_string(),
            "--handler echo needs --echo-to"
        );

        let err = cmd
            .try_get_matches_from(["custom", "--handler", "ech"])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("tip: a similar value exists: 'echo'"),
            "{err}"
        );
    }

    /// Issue 15's custom binary, sketched on today's types: rsmld's command line under its
    /// own name, with one more handler, its flags under its heading, parsed into the same
    /// `RunArgs` and built into the runtime's configuration.
    #[test]
    fn rsmlds_command_line_takes_one_more_handler() {
        let registry = Registry::new()
            .with(discard::descriptor())
            .with(file::descriptor())
            .with(exec::descriptor())
            .with(
                HandlerDescriptor::new::<EchoArgs>("echo", "Echo items")
                    .with_heading("Echo handler"),
            );
        let extra =
            HandlerDescriptor::new::<EchoArgs>("echo", "Echo items").with_heading("Echo handler");
        let cmd = extra
            .augment(Cli::command())
            .name("echo-processor")
            .version("9.9.9")
            .mut_arg("handler", |a| {
                a.value_parser(PossibleValuesParser::new(registry.possible_values()))
            });
        let help = cmd.clone().render_long_help().to_string();
        assert!(
            help.contains("\nEcho handler:\n      --echo-to <ECHO_TO>"),
            "{help}"
        );
        assert!(help.contains("- echo:    Echo items"), "{help}");
        assert_eq!(cmd.clone().render_version(), "echo-processor 9.9.9\n");

        let argv = [
            "echo-processor",
            "--handler",
            "echo",
            "--echo-to",
            "x",
            "--workers",
            "3",
        ];
        let m = cmd.try_get_matches_from(argv).unwrap();
        let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&m).unwrap();
        cli.run.handler_args = registry.parse(&m).unwrap();
        assert_eq!(cli.run.handler.as_deref(), Some("echo"));
        let config = cli.run.into_runtime_config().unwrap();
        assert_eq!(config.pool.workers, 3);
    }
}
