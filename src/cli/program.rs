//! A program built on rsmld: its name and version, and the handlers it adds to rsmld's.
//!
//! The `rsmld` binary and a library user's binary are the same program: the same flags,
//! `--properties`, `check`, the stdout guard and the protocol loop. What differs is told
//! here, in one value that every reader of the command line takes: the name and version
//! `--help` and `--version` show, and the extra handlers ([`HandlerDescriptor`]s), each
//! with its flag group under its own heading and its `rsmld.*` keys (a flag `--echo-to`
//! of a handler `echo` is read from `rsmld.echo.to`, or `rsmld.echo_to`). Parsing the
//! command line ([`Program::try_parse_from`]), reading `--properties` and validating a
//! properties file (`check`) all go through [`Program::command`], so the three agree on
//! which flags and keys exist.
//!
//! The entry point that runs a program is [`crate::run`].

use std::ffi::OsString;

use clap::builder::PossibleValuesParser;
use clap::{CommandFactory as _, FromArgMatches as _};

use super::config::Cli;
use super::registry::{HandlerDescriptor, Registry};

/// A binary built on rsmld: its name, version, and extra handlers.
///
/// ```
/// use std::sync::Arc;
/// use rsmld::{HandlerDescriptor, Program};
/// # let factory: Arc<dyn rsmld::HandlerFactory> = Arc::new(rsmld::handler::discard::DiscardFactory::new());
///
/// let program = Program::new("my_processor", "1.2.3")
///     .about("Stores orders in the order database.")
///     .default_handler(HandlerDescriptor::fixed("orders", "Store orders", factory));
/// assert_eq!(program.command().render_version(), "my_processor 1.2.3\n");
/// let matches = program.command().try_get_matches_from(["my_processor", "--workers", "2"]).unwrap();
/// assert_eq!(matches.get_one::<String>("handler").map(String::as_str), Some("orders"));
/// ```
#[derive(Debug)]
pub struct Program {
    name: &'static str,
    version: &'static str,
    about: Option<&'static str>,
    extras: Registry,
    default_handler: Option<&'static str>,
}

impl Program {
    /// The `rsmld` binary itself: the built-in handlers, `--handler` required.
    pub fn rsmld() -> Program {
        Program {
            name: "rsmld",
            version: env!("CARGO_PKG_VERSION"),
            about: None,
            extras: Registry::new(),
            default_handler: None,
        }
    }

    /// A binary called `name` (shown in `--version`, and in the messages and scripts
    /// that name the program), at `version` (usually `env!("CARGO_PKG_VERSION")`), with
    /// rsmld's built-in handlers and no others yet.
    pub fn new(name: &'static str, version: &'static str) -> Program {
        Program {
            name,
            version,
            ..Program::rsmld()
        }
    }

    /// The description at the top of `--help` (else a line saying it is built on rsmld).
    pub fn about(mut self, about: &'static str) -> Program {
        self.about = Some(about);
        self
    }

    /// Adds a handler `--handler` can choose, after the built-in ones; its flags are
    /// shown under its heading ([`HandlerDescriptor::with_heading`]). Its name and its
    /// long flags must differ from the built-in ones (clap refuses a flag defined twice).
    pub fn handler(mut self, handler: HandlerDescriptor) -> Program {
        // A binary's own mistake, found at its first start: a second handler of one name
        // would be shadowed without a word.
        assert!(
            self.registry().get(handler.name()).is_none(),
            "a handler called {:?} is already on the command line",
            handler.name()
        );
        self.extras = std::mem::take(&mut self.extras).with(handler);
        self
    }

    /// Adds a handler and makes it the default: without `--handler` (or
    /// `rsmld.handler`), items go to it.
    pub fn default_handler(mut self, handler: HandlerDescriptor) -> Program {
        self.default_handler = Some(handler.name());
        self.handler(handler)
    }

    /// The program's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The program's version.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Every handler `--handler` can choose: the built-in ones, then the program's.
    pub fn registry(&self) -> Registry {
        Registry::new()
            .with_all(Registry::builtin())
            .with_all(&self.extras)
    }

    /// The program's command line: rsmld's, under its name and version, with its
    /// handlers' flags.
    pub fn command(&self) -> clap::Command {
        let cmd = Cli::command();
        let about = match self.about {
            Some(about) => clap::builder::StyledStr::from(about),
            None if self.name == "rsmld" => cmd.get_about().cloned().unwrap_or_default(),
            None => "A record processor for the Amazon KCL MultiLangDaemon, built on rsmld.".into(),
        };
        let mut cmd = cmd;
        if !self.extras.is_empty() {
            let values = PossibleValuesParser::new(self.registry().possible_values());
            let default = self.default_handler;
            cmd = self
                .extras
                .augment(cmd)
                .mut_arg("handler", |a| match default {
                    Some(name) => a.value_parser(values).default_value(name),
                    None => a.value_parser(values),
                });
        }
        // After the groups: a group's doc comment would be taken as the program's.
        cmd.name(self.name)
            .version(self.version)
            .about(about)
            .long_about(None::<&str>)
    }

    /// Parses `argv` (program name first) as this program's command line, without
    /// `--properties` (that is [`Program::parse_with_properties`]). Hidden: the parsed
    /// command line is rsmld's internal type.
    #[doc(hidden)]
    pub fn try_parse_from<I, T>(&self, argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        self.try_parse_in(self.command(), argv).map(|(cli, _)| cli)
    }

    /// [`Program::try_parse_from`] with `cmd`, this program's command line with flags of
    /// its own (`rsmld serve`'s): the parsed child-mode options and every match, for the
    /// caller's own flags.
    pub(crate) fn try_parse_in<I, T>(
        &self,
        cmd: clap::Command,
        argv: I,
    ) -> Result<(Cli, clap::ArgMatches), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = cmd.try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if !self.extras.is_empty() {
            cli.run.handler_args = self.registry().parse(&matches)?;
        }
        Ok((cli, matches))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cli::error::ConfigError;
    use crate::cli::registry::{General, HandlerGroup};
    use crate::handler::discard::DiscardFactory;
    use crate::handler::HandlerFactory;

    #[derive(Clone, Debug, clap::Args)]
    struct EchoArgs {
        /// Where to echo.
        #[arg(long)]
        echo_to: Option<String>,
    }

    impl HandlerGroup for EchoArgs {
        fn check(&self, _: &General<'_>) -> Result<(), ConfigError> {
            match self.echo_to.as_deref() {
                Some("") => Err(ConfigError::flag("echo-to", "needs a place")),
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

    fn echo() -> Program {
        Program::new("echo-processor", "9.9.9").default_handler(
            HandlerDescriptor::new::<EchoArgs>("echo", "Echo items").with_heading("Echo handler"),
        )
    }

    #[test]
    fn rsmlds_own_program_is_the_derived_command_line() {
        let ours = Program::rsmld().command();
        ours.clone().debug_assert();
        assert_eq!(
            ours.clone().render_long_help().to_string(),
            Cli::command().render_long_help().to_string()
        );
        assert_eq!(ours.render_version(), Cli::command().render_version());
    }

    #[test]
    fn a_program_names_itself_and_adds_its_handler() {
        let cmd = echo().command();
        cmd.clone().debug_assert();
        assert_eq!(cmd.clone().render_version(), "echo-processor 9.9.9\n");
        let help = cmd.clone().render_long_help().to_string();
        assert!(
            help.starts_with(
                "A record processor for the Amazon KCL MultiLangDaemon, built on rsmld.\n"
            ),
            "{help}"
        );
        assert!(
            help.contains("\nEcho handler:\n      --echo-to <ECHO_TO>"),
            "{help}"
        );
        assert!(help.contains("[default: echo]"), "{help}");

        let cli = echo()
            .try_parse_from(["echo-processor", "--echo-to", "x", "--workers", "3"])
            .unwrap();
        assert_eq!(cli.run.handler.as_deref(), Some("echo"));
        assert_eq!(
            cli.run
                .handler_group::<EchoArgs>()
                .unwrap()
                .echo_to
                .as_deref(),
            Some("x")
        );
        assert_eq!(cli.run.into_runtime_config().unwrap().pool.workers, 3);
        // The built-ins stay choosable, and the default handler's check runs.
        let cli = echo()
            .try_parse_from(["echo-processor", "--handler", "file"])
            .unwrap();
        assert_eq!(cli.run.handler.as_deref(), Some("file"));
        let cli = echo().try_parse_from(["echo-processor"]).unwrap();
        assert_eq!(
            cli.run.validate().unwrap_err().to_string(),
            "--handler echo needs --echo-to"
        );
    }

    /// `rsmld.echo.to` in a properties file is the custom flag `--echo-to`, at start-up
    /// and in `check`; rsmld itself does not know it.
    #[test]
    fn a_programs_keys_are_read_from_properties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.properties");
        std::fs::write(
            &path,
            format!(
                "executableName = echo-processor --properties {}\nrsmld.echo.to = there\n",
                path.display()
            ),
        )
        .unwrap();
        let argv = vec![
            "echo-processor".to_owned(),
            "--properties".to_owned(),
            path.display().to_string(),
        ];
        let cli = echo().parse_with_properties(argv.clone()).unwrap();
        assert_eq!(
            cli.run
                .handler_group::<EchoArgs>()
                .unwrap()
                .echo_to
                .as_deref(),
            Some("there")
        );
        let err = Program::rsmld().parse_with_properties(argv).unwrap_err();
        assert!(err.to_string().contains("rsmld.echo.to"), "{err}");

        let props = crate::cli::properties::Properties::read(&path).unwrap();
        let (_, problems) = crate::cli::config::file_settings(&echo(), &props);
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = crate::cli::config::file_settings(&Program::rsmld(), &props);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    /// A group's error about one of its flags names the flag, or the key, file and line
    /// when the value came from `--properties`.
    #[test]
    fn a_groups_flag_error_names_the_key_it_came_from() {
        let cli = echo()
            .try_parse_from(["echo-processor", "--echo-to="])
            .unwrap();
        assert_eq!(
            cli.run.validate().unwrap_err().to_string(),
            "--echo-to needs a place"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.properties");
        std::fs::write(&path, "applicationName = a\nrsmld.echo.to =\n").unwrap();
        let path = path.display().to_string();
        let argv = ["echo-processor", "--properties", &path].map(String::from);
        let cli = echo().parse_with_properties(argv.to_vec()).unwrap();
        assert_eq!(
            cli.run.validate().unwrap_err().to_string(),
            format!("{path}:2: rsmld.echo.to needs a place")
        );
    }
}
