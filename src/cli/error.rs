//! The errors of a configuration that cannot work, and where a setting came from.
//!
//! Below both the command line's definition (`config`) and the handler registry
//! (`registry`): a handler's flag group reports its own missing settings with these, and
//! they are told in terms of the properties file when a setting came from there.

use super::properties::{self, Entry};

/// A setting that cannot work. A handler's flag group reports its own with
/// [`ConfigError::Invalid`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A handler name the registry does not have (the parser's own list normally stops it
    /// first, with the same suggestion).
    #[error("unknown handler {name:?}{} (known: {valid})", suggestion.as_ref().map(|s| format!(", did you mean {s:?}?")).unwrap_or_default())]
    UnknownHandler {
        /// The name given.
        name: String,
        /// The nearest known name, if one is close.
        suggestion: Option<String>,
        /// The known names, comma-separated.
        valid: String,
    },
    /// A nonsensical number.
    #[error("{0}")]
    Invalid(String),
    /// One flag's value cannot work ([`ConfigError::flag`]): `--<flag> <message>`, or the
    /// key as written when the value came from the properties file.
    #[error("--{flag} {message}")]
    Flag {
        /// The long flag without dashes (`json-require`).
        flag: &'static str,
        /// What is wrong, to follow the flag (`needs a field name`).
        message: String,
    },
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
    /// `--<flag> <message>`: what a handler's flag group reports about one of its flags
    /// (`ConfigError::flag("json-require", "needs a field name")`); told in terms of the
    /// properties file (`app.properties:8: rsmld.json.require needs a field name`) when
    /// the value came from there.
    pub fn flag(flag: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Flag {
            flag,
            message: message.into(),
        }
    }

    /// The flags (long names without dashes) the error is about, most specific first.
    pub fn flags(&self) -> &[&'static str] {
        match self {
            ConfigError::NoHandler => &["handler"],
            ConfigError::NoOutput => &["handler", "output"],
            ConfigError::NoDeadLetter => &["on-error", "dead-letter"],
            ConfigError::NoCommand => &["handler", "command"],
            ConfigError::UnknownHandler { .. } => &["handler"],
            ConfigError::Flag { flag, .. } => std::slice::from_ref(flag),
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
            ConfigError::UnknownHandler { name, valid, .. } => {
                format!("{} = {name:?}: must be one of {valid}", key("handler"))
            }
            ConfigError::Flag { flag, message } => format!("{} {message}", key(flag)),
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
