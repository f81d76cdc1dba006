//! `rsmld check --properties FILE [--kcl 2|3]`: the daemon's properties file, validated
//! before the daemon runs it.
//!
//! The MultiLangDaemon ignores keys it does not know and reads an unparseable number as 0,
//! so a typo (`shutdownGraceMilis`) or a unit (`shutdownGraceMillis = 30s`) survives into
//! production as a default nobody chose; an SDK v1 credentials provider name under KCL 3.x
//! stops the daemon a second after start-up, on the production host. `check` reports every
//! such problem at once, each as `FILE:LINE: error|warning: message`, and exits non-zero if
//! there is an error.
//!
//! The `rsmld.*` keys go through exactly the code start-up uses
//! ([`crate::cli::config::file_settings`], [`crate::cli::config::merge_file_settings`],
//! [`crate::cli::config::RunArgs::validate`]): check and start-up cannot disagree. The daemon's
//! own keys are checked against the table in [`kcl`], built from the daemon's sources.
//!
//! Paths (the output directory, the exec program, `executableName`) are resolved as the
//! daemon and rsmld would resolve them when started from the current directory with the
//! current `PATH`: run `check` where the daemon runs. The handler prerequisites are
//! [`prereq::prerequisites`], the very function start-up runs before it reads stdin; a
//! directory is tested by creating and removing a probe file in it.

pub mod prereq;
pub mod wrappers;

use std::path::Path;

use crate::cli::config::{OnErrorKind, RunArgs};
use crate::cli::kcl::{self, Kcl, Ty};
use crate::cli::program::Program;
use crate::cli::properties::{
    Diagnostic, Entry, Properties, PropertiesError, RsmldSettings, Severity,
};

/// The findings about one file, sorted by line.
#[derive(Debug)]
pub struct Report {
    /// Every finding.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Checks the properties file at `path` for the daemon `kcl`.
pub fn check_file(path: &Path, kcl: Kcl) -> Result<Report, PropertiesError> {
    check_file_for(&Program::rsmld(), path, kcl)
}

/// Checks the properties file at `path` for the daemon `kcl` and the processor `program`
/// (its handlers' `rsmld.*` keys are known; `executableName` may name it).
pub fn check_file_for(program: &Program, path: &Path, kcl: Kcl) -> Result<Report, PropertiesError> {
    let props = Properties::read(path)?;
    Ok(check_for(program, &props, kcl))
}

/// Checks parsed properties for the daemon `kcl`.
pub fn check(props: &Properties, kcl: Kcl) -> Report {
    check_for(&Program::rsmld(), props, kcl)
}

/// Checks parsed properties for the daemon `kcl` and the processor `program`.
pub fn check_for(program: &Program, props: &Properties, kcl: Kcl) -> Report {
    let mut c = Checker {
        program,
        props,
        kcl,
        out: Vec::new(),
    };
    c.duplicates();
    c.encoding();
    c.daemon_keys();
    c.same_property();
    c.required();
    c.credentials();
    c.credentials_set_twice();
    c.risky_daemon_settings();
    let run = c.rsmld();
    c.timeouts(run.as_ref());
    let mut diagnostics = c.out;
    diagnostics.sort_by_key(|d| d.line.unwrap_or(0));
    Report { diagnostics }
}

struct Checker<'a> {
    program: &'a Program,
    props: &'a Properties,
    kcl: Kcl,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.out
            .push(Diagnostic::error(&self.props.path, line, message));
    }

    fn warning(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.out
            .push(Diagnostic::warning(&self.props.path, line, message));
    }

    /// The winning entry of a daemon key, matched as `kcl` matches keys.
    fn get(&self, key: &str) -> Option<&Entry> {
        self.props
            .entries
            .iter()
            .rev()
            .find(|e| kcl::normalize(self.kcl, &e.key) == key)
    }

    /// Bytes outside ASCII: the daemon reads the file as ISO-8859-1 (and so does rsmld, to
    /// see what the daemon sees), so UTF-8 text reads garbled; `\uXXXX` is the portable way.
    fn encoding(&mut self) {
        let entries = self.props.entries.clone();
        for e in entries.iter().filter(|e| e.malformed_escape) {
            self.error(
                Some(e.line),
                format!("{}: a \\u escape that is not four hex digits: the daemon fails at start-up (IllegalArgumentException: Malformed \\uxxxx encoding.); an escape is \\u and four hex digits (\\u00e9)", e.key),
            );
        }
        for e in entries.iter().filter(|e| e.non_ascii) {
            let read = format!("{} = {:?}", e.key, e.daemon_value);
            // The value's bytes as written, if they are UTF-8: what the user most likely meant.
            let utf8 = e
                .daemon_value
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<Vec<u8>>>()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|t| !t.is_ascii());
            let hint = match utf8 {
                Some(text) => {
                    let escaped: String = text
                        .chars()
                        .map(|c| match c.is_ascii() {
                            true => c.to_string(),
                            // Java escapes UTF-16 units: a surrogate pair beyond U+FFFF.
                            false => c
                                .encode_utf16(&mut [0; 2])
                                .iter()
                                .map(|u| format!("\\u{u:04x}"))
                                .collect(),
                        })
                        .collect();
                    format!(
                        " (the file's bytes are the UTF-8 {text:?}: write {} = {escaped})",
                        e.key
                    )
                }
                None => " (write non-ASCII characters as \\uXXXX escapes)".to_owned(),
            };
            self.warning(
                Some(e.line),
                format!("{} has bytes outside ASCII: the daemon reads the file as ISO-8859-1 (as rsmld does), so it reads {read}{hint}", e.key),
            );
        }
    }

    fn duplicates(&mut self) {
        let entries = self.props.entries.clone();
        for (i, e) in entries.iter().enumerate() {
            if let Some(later) = entries[i + 1..].iter().find(|l| l.key == e.key) {
                self.warning(
                    Some(e.line),
                    format!(
                        "{} is set again at line {}, which wins: this line has no effect",
                        e.key, later.line
                    ),
                );
            }
        }
    }

    /// Two keys that set one property: the daemon applies the file's keys in hash-table
    /// order (`java.util.Properties`), so which one wins is not defined.
    fn same_property(&mut self) {
        let mut groups: Vec<Vec<String>> = vec![
            vec!["workerId".into(), "workerIdentifier".into()],
            vec![
                "initialPositionInStream".into(),
                "initialPositionInStreamExtended".into(),
            ],
        ];
        for key in kcl::all_keys(self.kcl) {
            if let Some((_, flat)) = key.split_once('.') {
                if kcl::lookup(self.kcl, flat).is_some() {
                    groups.push(vec![flat.to_owned(), key.to_owned()]);
                }
            }
        }
        for group in groups {
            let mut set: Vec<Entry> = group.iter().filter_map(|k| self.get(k).cloned()).collect();
            set.sort_by_key(|e| e.line);
            if let [first, second, ..] = set.as_slice() {
                self.warning(
                    Some(second.line),
                    format!(
                        "{} and {} (line {}) set the same thing; the daemon applies keys in no defined order, so either may win: keep one",
                        second.key, first.key, first.line
                    ),
                );
            }
        }
    }

    fn daemon_keys(&mut self) {
        let entries = self.props.entries.clone();
        for e in entries.iter().filter(|e| !e.key.starts_with("rsmld.")) {
            let key = kcl::normalize(self.kcl, &e.key);
            if kcl::BUILDER_PREFIXES.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            match kcl::lookup(self.kcl, &key) {
                Some(ty) => self.value(e, ty),
                None => self.unknown_key(e, &key),
            }
        }
    }

    fn unknown_key(&mut self, e: &Entry, key: &str) {
        let label = self.kcl.label();
        if kcl::known_elsewhere(self.kcl, key) {
            let other = match self.kcl {
                Kcl::V2 => "KCL 3.x",
                Kcl::V3 => "KCL 2.x",
            };
            let hint = match kcl::credentials_keys(self.kcl)
                .iter()
                .find(|k| k.eq_ignore_ascii_case(key))
            {
                Some(k) => format!(": write {k}"),
                None => String::new(),
            };
            self.error(
                Some(e.line),
                format!(
                    "{} is a {other} key: the {label} daemon ignores it silently{hint}",
                    e.key
                ),
            );
            return;
        }
        match suggest_key(self.kcl, key) {
            Some(s) => self.error(
                Some(e.line),
                format!(
                    "unknown key {}: the {label} daemon ignores it silently (keys are case-sensitive); did you mean {s}?",
                    e.key
                ),
            ),
            None => self.warning(
                Some(e.line),
                format!("unknown key {}: the {label} daemon ignores it", e.key),
            ),
        }
    }

    fn value(&mut self, e: &Entry, ty: Ty) {
        let v = e.value.trim();
        let key = &e.key;
        let problem = match ty {
            Ty::Int if v.parse::<i32>().is_err() => Some("not a whole number (32-bit)".into()),
            Ty::Long if v.parse::<i64>().is_err() => Some("not a whole number".into()),
            Ty::Double if v.parse::<f64>().map_or(true, |f| !f.is_finite()) => {
                Some("not a number".into())
            }
            Ty::Bool if parse_java_bool(v).is_none() => {
                Some("not a boolean (true or false); the daemon silently reads false".into())
            }
            Ty::EpochSeconds if v.parse::<i64>().is_err() => {
                Some("not a time in epoch seconds; the daemon fails at start-up".into())
            }
            Ty::Duration if !looks_like_iso_duration(v) => {
                Some("not an ISO-8601 duration such as PT12H; the daemon fails at start-up".into())
            }
            Ty::Tags if v.split(',').any(|kv| !kv.contains('=')) => {
                Some("not a tag list such as k=v,k2=v2".into())
            }
            _ if !ty.choices().is_empty()
                && !ty
                    .choices()
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&e.value)) =>
            {
                Some(format!(
                    "must be one of {} (the daemon fails at start-up)",
                    ty.choices().join(", ")
                ))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            let silently_zero =
                matches!(ty, Ty::Int | Ty::Long | Ty::Double) && key != "maxActiveThreads";
            let tail = if key == "timeoutInSeconds" {
                "; the daemon silently reads 0, and with 0 it halts the JVM at its first wait for an answer (every shard stops)"
            } else if silently_zero {
                "; the daemon silently reads 0"
            } else if key == "maxActiveThreads" {
                "; the daemon fails at start-up"
            } else {
                ""
            };
            self.error(
                Some(e.line),
                format!("{key} = {:?}: {problem}{tail}", e.value),
            );
            return;
        }
        if e.trailing_blanks {
            if let Some(consequence) = trailing_blank_consequence(self.kcl, key, ty, v) {
                let (blank, them) = if e.daemon_value.len() - e.value.len() == 1 {
                    ("a blank", "it")
                } else {
                    ("blanks", "them")
                };
                self.error(
                    Some(e.line),
                    format!(
                        "{key} = {:?} ends in {blank}, which the daemon keeps: {consequence}; remove {them}",
                        e.daemon_value
                    ),
                );
            }
        }
        if key == "shardPrioritization" {
            self.error(
                Some(e.line),
                "shardPrioritization cannot be set from the properties file: the daemon has no converter for it and fails at start-up (ConversionException); remove it",
            );
        }
        if (key == "maxRecords" || key == "pollingConfig.maxRecords")
            && v.parse::<i32>().is_ok_and(|n| n > 10_000)
        {
            self.error(
                Some(e.line),
                format!("{key} = {v}: more than 10000; the daemon fails at start-up"),
            );
        }
        if key == "maxActiveThreads" && v.parse::<i32>().is_ok_and(|n| n > 0) {
            self.warning(
                Some(e.line),
                "maxActiveThreads > 0 is a fixed pool that must hold 1 + 2 threads per lease plus the I/O of every child; too small a pool deadlocks. Leave it unset (0: unbounded)",
            );
        }
    }

    fn required(&mut self) {
        if self.get("executableName").is_none() {
            self.error(
                None,
                "executableName is missing: the daemon does not start (it names the record processor, e.g. /usr/local/bin/rsmld --properties /etc/rsmld/app.properties)",
            );
        }
        if self
            .get("applicationName")
            .is_none_or(|e| e.value.is_empty())
        {
            self.error(
                None,
                "applicationName is missing: the daemon does not start (it names the lease table)",
            );
        }
        let stream = self.get("streamName").or_else(|| self.get("streamArn"));
        if stream.is_none_or(|e| e.value.is_empty()) {
            self.error(
                None,
                "streamName (or streamArn) is missing: the daemon does not start",
            );
        }
        let [main, ..] = kcl::credentials_keys(self.kcl);
        let by_builder = self
            .props
            .entries
            .iter()
            .any(|e| e.key.starts_with("kinesisCredentialsProvider."));
        if self.get(main).is_none() && !by_builder {
            let example = match self.kcl {
                Kcl::V2 => "AWSCredentialsProvider = DefaultAWSCredentialsProviderChain",
                Kcl::V3 => "AwsCredentialsProvider = DefaultCredentialsProvider",
            };
            self.error(
                None,
                format!(
                    "no credentials provider: the {} daemon does not start; e.g. {example}",
                    self.kcl.label()
                ),
            );
        }
    }

    fn credentials(&mut self) {
        for key in kcl::credentials_keys(self.kcl) {
            let Some(e) = self.get(key).cloned() else {
                continue;
            };
            self.provider_chain(&e);
        }
    }

    /// One credentials provider set by two keys. 3.x reads `awscredentialsprovider` in any
    /// case, so `AWSCredentialsProvider` and `AwsCredentialsProvider` both reach one setter;
    /// and `kinesisCredentialsProvider.<p>` (both versions) configures the same provider
    /// property by property. The provider is resolved at the first key applied, and any
    /// later one fails start-up: `IllegalStateException: When a property handler is resolved
    /// further properties may not be set.` (observed with the 3.1.3 and 2.5.8 jars).
    fn credentials_set_twice(&mut self) {
        const FAILS: &str = "IllegalStateException: When a property handler is resolved further properties may not be set.";
        let builders = [
            "kinesisCredentialsProvider.",
            "dynamoDBCredentialsProvider.",
            "cloudWatchCredentialsProvider.",
        ];
        let entries = self.props.entries.clone();
        for (key, builder) in kcl::credentials_keys(self.kcl).into_iter().zip(builders) {
            // The winning entry of each spelling, in file order.
            let mut spellings: Vec<&Entry> = Vec::new();
            for e in entries.iter().rev() {
                if kcl::normalize(self.kcl, &e.key) == key
                    && !spellings.iter().any(|s| s.key == e.key)
                {
                    spellings.push(e);
                }
            }
            spellings.sort_by_key(|e| e.line);
            if let [first, second, ..] = spellings.as_slice() {
                self.error(
                    Some(second.line),
                    format!(
                        "{} and {} (line {}) both set {key}: the {} daemon reads the key in any case and fails at start-up ({FAILS}); keep one",
                        second.key,
                        first.key,
                        first.line,
                        self.kcl.label()
                    ),
                );
            }
            let Some(named) = spellings.first() else {
                continue;
            };
            if let Some(b) = entries.iter().find(|e| e.key.starts_with(builder)) {
                let (a, z) = if b.line < named.line {
                    (b, *named)
                } else {
                    (*named, b)
                };
                self.error(
                    Some(z.line),
                    format!(
                        "{} and {} (line {}) both set the same credentials provider: the daemon fails at start-up ({FAILS}) unless it happens to apply {} first (keys are applied in no defined order); keep one",
                        z.key, a.key, a.line, b.key
                    ),
                );
            }
        }
    }

    /// A `,`-separated chain of `Name|arg|...`: each name is tried under the version's
    /// packages, then as given; the daemon keeps those it can build and fails at start-up
    /// when none is left.
    fn provider_chain(&mut self, e: &Entry) {
        let label = self.kcl.label();
        let mut failures = Vec::new();
        let mut resolved = 0;
        for element in e.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut parts = element.split('|');
            let name = parts.next().unwrap_or_default();
            let args: Vec<&str> = parts.collect();
            match resolve_provider(self.kcl, name) {
                Resolution::Builds(min) if args.len() >= min => resolved += 1,
                Resolution::Builds(min) => failures.push(format!(
                    "{name} needs {min} arguments ({name}|roleArn|roleSessionName)"
                )),
                Resolution::Custom => {
                    resolved += 1;
                    self.warning(
                        Some(e.line),
                        format!(
                            "{}: {name:?} is not a provider the {label} daemon ships; it must be on the daemon's classpath",
                            e.key
                        ),
                    );
                }
                Resolution::Unknown => {
                    let fix = working_name(self.kcl, name)
                        .map(|w| {
                            let args = args.iter().map(|a| format!("|{a}")).collect::<String>();
                            format!(": use {w}{args}")
                        })
                        .unwrap_or_default();
                    let generation = match self.kcl {
                        Kcl::V2 => "KCL 2.x takes AWS SDK v1 providers",
                        Kcl::V3 => "KCL 3.x takes AWS SDK v2 providers",
                    };
                    failures.push(format!(
                        "the {label} daemon cannot resolve {name:?} ({generation}){fix}"
                    ));
                }
            }
        }
        for f in failures {
            let message = format!("{}: {f}", e.key);
            if resolved == 0 {
                self.error(
                    Some(e.line),
                    format!("{message}; with no provider left the daemon exits at start-up"),
                );
            } else {
                self.warning(
                    Some(e.line),
                    format!("{message}; the daemon drops it from the chain"),
                );
            }
        }
    }

    fn risky_daemon_settings(&mut self) {
        // Both versions' shutdown hook: `startGracefulShutdown()`, then wait that long.
        const NO_GRACE: &str = "on SIGTERM the daemon starts a graceful shutdown but waits 0 ms for it, so the JVM exits before rsmld can drain and checkpoint; set it (e.g. 30000)";
        match self.get("shutdownGraceMillis").cloned() {
            None => self.warning(
                None,
                format!("shutdownGraceMillis is not set (0): {NO_GRACE}"),
            ),
            Some(e) => match e.value.trim().parse::<i64>() {
                Ok(0) => self.warning(Some(e.line), format!("shutdownGraceMillis = 0: {NO_GRACE}")),
                Ok(n) if n < 0 => self.error(
                    Some(e.line),
                    format!(
                        "shutdownGraceMillis = {n}: negative; the daemon gives no grace at all"
                    ),
                ),
                _ => {}
            },
        }
        let empty = self
            .get("callProcessRecordsEvenForEmptyRecordList")
            .cloned();
        let why = "an idle shard then gets no processRecords, so items that finish after the last batch are not checkpointed until records arrive; set it to true";
        match empty {
            None => self.warning(
                None,
                format!("callProcessRecordsEvenForEmptyRecordList is not set (false): {why}"),
            ),
            Some(e) if parse_java_bool(e.value.trim()) == Some(false) => self.warning(
                Some(e.line),
                format!(
                    "callProcessRecordsEvenForEmptyRecordList = {}: {why}",
                    e.value
                ),
            ),
            Some(_) => {}
        }
        if self.get("workerId").is_none() && self.get("workerIdentifier").is_none() {
            self.warning(
                None,
                "workerId is not set: each start gets a random id, so after a restart the old leases wait failoverTimeMillis to expire; set one that is fixed per host and unique per daemon process",
            );
        }
        if let Some(e) = self.get("timeoutInSeconds").cloned() {
            if e.value.trim().parse::<i32>().is_ok_and(|n| n <= 0) {
                self.error(
                    Some(e.line),
                    format!(
                        "timeoutInSeconds = {}: the daemon waits that long for each answer, so it halts the JVM at its first wait (every shard stops); unset it or give a number of seconds",
                        e.value
                    ),
                );
            }
        }
    }

    /// `executableName`, and when it runs rsmld, rsmld's settings as rsmld will see them.
    fn rsmld(&mut self) -> Option<RunArgs> {
        let exe = self.get("executableName")?.clone();
        // The daemon splits on runs of spaces only, with no shell and no quoting.
        let argv: Vec<String> = exe
            .value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if exe.value.contains('\t') {
            self.warning(
                Some(exe.line),
                "executableName contains a tab: the daemon splits on spaces only",
            );
        }
        // The rsmld.* keys are checked whatever runs them.
        let (mut settings, problems) = crate::cli::config::file_settings(self.program, self.props);
        self.out.extend(problems);
        let argv = match wrappers::peel(&argv) {
            wrappers::Peeled::Command {
                wrappers,
                notes,
                command,
            } => {
                self.programs_exist(&wrappers, exe.line);
                for note in notes {
                    self.warning(Some(exe.line), format!("executableName: {note}"));
                }
                command
            }
            wrappers::Peeled::Opaque { wrappers, why } => {
                self.programs_exist(&wrappers, exe.line);
                let last = wrappers.last().cloned().unwrap_or_default();
                self.warning(
                    Some(exe.line),
                    format!("executableName: {last} {why}: the command it runs and its arguments are not checked"),
                );
                return None;
            }
        };
        let program = argv.first()?.clone();
        if let Err(why) = prereq::executable(&program) {
            self.error(Some(exe.line), format!("executableName: {program}: {why}"));
        }
        let takes_properties = argv
            .iter()
            .any(|a| a == "--properties" || a.starts_with("--properties="));
        let is_rsmld = Path::new(&program)
            .file_name()
            .is_some_and(|n| n == "rsmld" || n == self.program.name());
        if is_rsmld && argv.get(1).is_some_and(|a| a == "attach") {
            self.attach(
                &argv,
                exe.line,
                !settings.args.is_empty() || settings.command.is_some(),
            );
            return None;
        }
        if !takes_properties {
            if !settings.args.is_empty() || settings.command.is_some() {
                self.warning(
                    Some(exe.line),
                    "the rsmld.* keys take effect only when executableName passes --properties with this file",
                );
            }
            if !is_rsmld {
                self.not_rsmld(&program, exe.line);
                return None;
            }
            // rsmld started without --properties reads none of this file.
            settings = RsmldSettings::default();
        } else {
            self.same_file(&argv, exe.line);
        }
        let cli = match crate::cli::config::merge_file_settings(
            self.program,
            &argv,
            &self.props.path,
            &settings,
        ) {
            Ok(cli) => cli,
            // A program that is not rsmld but takes --properties may be a processor built
            // on rsmld (a compiled-in handler, which takes rsmld's flags); one that rejects
            // them is something else.
            Err(_) if !is_rsmld => {
                self.not_rsmld(&program, exe.line);
                return None;
            }
            Err(e) => {
                let first = e.render().to_string();
                let first = first
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_owned();
                self.error(
                    Some(exe.line),
                    format!("executableName: rsmld rejects its arguments: {first}"),
                );
                return None;
            }
        };
        if cli.command.is_some() {
            return None;
        }
        let run = cli.run;
        match run.validate() {
            Ok(()) => {}
            Err(crate::cli::config::ConfigError::InFile { line, message, .. }) => {
                self.error(Some(line), message)
            }
            Err(crate::cli::config::ConfigError::NoHandler) if !is_rsmld => {}
            Err(e) => self.error(Some(exe.line), format!("executableName: {e}")),
        }
        self.handler_prerequisites(&run, exe.line);
        Some(run)
    }

    /// `executableName = rsmld attach ...`: what attach needs (its flags, the socket, the
    /// application it names the lease by). The handler, pool and policy options are the
    /// server's (`rsmld serve`), so they are not checked here, and said so.
    fn attach(&mut self, argv: &[String], line: usize, has_rsmld_keys: bool) {
        let parsed = <crate::cli::attach::AttachArgs as clap::Parser>::try_parse_from(
            std::iter::once("rsmld attach".to_owned()).chain(argv[2..].iter().cloned()),
        );
        let args = match parsed {
            Ok(a) => a,
            Err(e) => {
                // clap's message up to its usage part, on one line.
                let rendered = e.render().to_string();
                let message: Vec<&str> = rendered
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                self.error(
                    Some(line),
                    format!(
                        "executableName: rsmld attach rejects its arguments: {}",
                        message.join(" ").trim_start_matches("error: ")
                    ),
                );
                return;
            }
        };
        let socket = &args.socket;
        if socket.is_relative() {
            self.warning(
                Some(line),
                format!("executableName: --socket {} is relative: it resolves from the daemon's working directory; use the absolute path rsmld serve listens on", socket.display()),
            );
        } else if socket.parent().is_some_and(|d| !d.is_dir()) {
            self.warning(
                Some(line),
                format!("executableName: --socket {}: its directory does not exist (yet): rsmld serve creates the socket there (a systemd unit's RuntimeDirectory makes /run/rsmld)", socket.display()),
            );
        }
        match &args.properties {
            None => self.warning(
                Some(line),
                "executableName: rsmld attach without --properties: its leases have no application or stream name on the server, so two applications with the same shard ids share file names and log names",
            ),
            Some(_) => {
                self.same_file(argv, line);
                if self.get("applicationName").is_none() {
                    self.warning(
                        Some(line),
                        "rsmld attach names its leases by applicationName, which this file lacks",
                    );
                }
            }
        }
        if has_rsmld_keys {
            self.warning(
                Some(line),
                "rsmld attach reads no rsmld.* keys: the handler, pool and policy options are rsmld serve's",
            );
        }
        self.warning(
            Some(line),
            format!("executableName: rsmld attach hands each lease to the rsmld serve on {}: the handler, pool and policy options are the server's and are not checked here (check the server's command line with rsmld serve --help)", socket.display()),
        );
    }

    /// Whether `executableName` runs the `rsmld` binary itself (not a compiled-in processor),
    /// directly or through wrappers.
    fn runs_plain_rsmld(&self) -> bool {
        let Some(e) = self.get("executableName") else {
            return false;
        };
        let argv: Vec<String> = e
            .value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        match wrappers::peel(&argv) {
            wrappers::Peeled::Command { command, .. } => command
                .first()
                .is_some_and(|p| Path::new(p).file_name().is_some_and(|n| n == "rsmld")),
            wrappers::Peeled::Opaque { .. } => false,
        }
    }

    /// Each wrapper program must exist and be executable, as the processor itself.
    fn programs_exist(&mut self, programs: &[String], line: usize) {
        for p in programs {
            if let Err(why) = prereq::executable(p) {
                self.error(Some(line), format!("executableName: {p}: {why}"));
            }
        }
    }

    /// A processor that is neither rsmld nor a wrapper of it: only its existence is checked.
    fn not_rsmld(&mut self, program: &str, line: usize) {
        if prereq::executable(program).is_err() {
            return; // reported as an error already
        }
        self.warning(
            Some(line),
            format!("executableName runs {program}, which is not rsmld: rsmld check checks that it exists and can be run, not its arguments"),
        );
    }

    /// Warns when `executableName` makes rsmld read another file than the one checked.
    fn same_file(&mut self, argv: &[String], line: usize) {
        let named = argv.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix("--properties=")
                .map(str::to_owned)
                .or_else(|| {
                    (a == "--properties")
                        .then(|| argv.get(i + 1).cloned())
                        .flatten()
                })
        });
        let Some(named) = named else { return };
        let (Ok(a), Ok(b)) = (
            std::fs::canonicalize(&named),
            std::fs::canonicalize(&self.props.path),
        ) else {
            self.warning(
                Some(line),
                format!("executableName passes --properties {named}, which does not exist from here; rsmld would not start"),
            );
            return;
        };
        if a != b {
            self.warning(
                Some(line),
                format!("executableName makes rsmld read {named}, not this file: its rsmld.* keys were checked here as if they applied"),
            );
        }
    }

    /// Start-up's own prerequisites ([`prereq::prerequisites`]), at the line of the key
    /// that set them (else at `executableName`).
    fn handler_prerequisites(&mut self, run: &RunArgs, exe_line: usize) {
        for unmet in prereq::prerequisites(run) {
            let line = unmet.origin(run).map_or(exe_line, |o| o.entry.line);
            let message = unmet.message(&unmet.key(run));
            match unmet.severity {
                Severity::Error => self.error(Some(line), message),
                Severity::Warning => self.warning(Some(line), message),
            }
        }
    }

    /// `timeoutInSeconds` (and in 3.x `gracefulLeaseHandoffTimeoutMillis`) against the
    /// longest rsmld may hold one answer: see [`drain_estimate`].
    fn timeouts(&mut self, run: Option<&RunArgs>) {
        let Some(run) = run else { return };
        // The discard handler finishes every item at once: nothing to drain. (A compiled-in
        // handler also parses as `--handler discard`, hence the program name test.)
        if run.handler.as_deref() == Some("discard") && self.runs_plain_rsmld() {
            return;
        }
        // Either spelling sets PollingConfig.maxRecords; with both (warned about above)
        // either may win, so the larger is the bound.
        let max_records = ["maxRecords", "pollingConfig.maxRecords"]
            .iter()
            .filter_map(|k| self.get(k))
            .filter_map(|e| e.value.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
            .max()
            .unwrap_or(10_000);
        let estimate = drain_estimate(run, max_records);
        if let Some(e) = self.get("timeoutInSeconds").cloned() {
            let Ok(limit) = e.value.trim().parse::<i32>() else {
                return;
            };
            if limit <= 0 {
                return;
            }
            let limit = f64::from(limit);
            match &estimate {
                None => self.warning(
                    Some(e.line),
                    format!(
                        "timeoutInSeconds = {}: rsmld has no item timeout, so nothing bounds how long it holds an answer while it drains (a stuck handler), and on timeout the daemon halts the JVM and every shard; set rsmld.item_timeout so that the drain fits",
                        e.value.trim()
                    ),
                ),
                Some(d) if d.seconds > limit => self.warning(
                    Some(e.line),
                    format!(
                        "timeoutInSeconds = {}: draining rsmld's in-flight bound can take up to {:.0} s ({}); on timeout the daemon halts the JVM and every shard",
                        e.value.trim(),
                        d.seconds,
                        d.explain
                    ),
                ),
                Some(_) => {}
            }
        }
        if self.kcl == Kcl::V3 {
            if let Some(d) = &estimate {
                self.handoff_timeout(d);
            }
        }
    }

    /// KCL 3.x hands a lease over gracefully (`shutdownRequested`, then the new owner takes
    /// it) and waits `gracefulLeaseHandoffTimeoutMillis` (flat or under
    /// `gracefulLeaseHandoffConfigBean.`; default 30000 in `LeaseManagementConfig`) for the
    /// final checkpoint, unless `isGracefulLeaseHandoffEnabled` is false.
    fn handoff_timeout(&mut self, d: &DrainEstimate) {
        const NESTED: &str = "gracefulLeaseHandoffConfigBean.";
        let switches: Vec<&Entry> = [
            "isGracefulLeaseHandoffEnabled",
            "gracefulLeaseHandoffConfigBean.isGracefulLeaseHandoffEnabled",
        ]
        .iter()
        .filter_map(|k| self.get(k))
        .collect();
        // BeanUtils' Boolean: an unrecognised word (or one with a trailing blank) is false;
        // with both keys set either may win.
        let enabled = switches.is_empty()
            || switches
                .iter()
                .any(|e| parse_java_bool(&e.daemon_value) == Some(true));
        if !enabled {
            return;
        }
        let flat = "gracefulLeaseHandoffTimeoutMillis";
        let set: Vec<Entry> = [flat.to_owned(), format!("{NESTED}{flat}")]
            .iter()
            .filter_map(|k| self.get(k).cloned())
            .collect();
        let consequence = format!(
            "draining rsmld's in-flight bound can take up to {:.0} s ({}); a handoff that times out moves the lease before the final checkpoint (records since the last checkpoint are processed again)",
            d.seconds, d.explain
        );
        if set.is_empty() {
            if d.seconds * 1000.0 > 30_000.0 {
                self.warning(
                    None,
                    format!("gracefulLeaseHandoffTimeoutMillis is not set (30000, the KCL 3.x default): {consequence}"),
                );
            }
            return;
        }
        for e in set {
            // An unparseable value is reported above (the daemon reads 0).
            let ms = e.value.trim().parse::<u64>().unwrap_or(0);
            if d.seconds * 1000.0 > ms as f64 {
                self.warning(Some(e.line), format!("{} = {ms}: {consequence}", e.key));
            }
        }
    }
}

/// How long rsmld may take, at worst, to answer one action while it drains.
#[derive(Debug)]
pub struct DrainEstimate {
    /// Seconds.
    pub seconds: f64,
    /// The arithmetic, for the message.
    pub explain: String,
}

/// The worst-case drain, or `None` when nothing bounds it (no item timeout).
///
/// At `shutdownRequested`/`shardEnded` rsmld answers only when every item in flight is done,
/// and a `processRecords` waits until the in-flight count is back under `--max-in-flight`;
/// either way up to `--max-in-flight` + one batch (`maxRecords` records) items are ahead of
/// the answer. They are worked off `--workers` at a time in batches of `--batch-size`, each
/// call bounded by `--item-timeout` per attempt (`--on-error retry` adds its retries and
/// backoff). So: ceil(items / (workers × batch size)) rounds × (timeout × attempts +
/// backoff). It is an upper bound for a stuck or slow handler, not a forecast; a KPL or
/// `--split` record can hold more items than one, which this does not count.
pub fn drain_estimate(run: &RunArgs, max_records: u64) -> Option<DrainEstimate> {
    let timeout = run.effective_item_timeout()?;
    let workers = run
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1) as u64;
    let items = run.max_in_flight as u64 + max_records;
    let per_round = workers * run.batch_size.max(1) as u64;
    let rounds = items.div_ceil(per_round);
    let (attempts, backoff) = match run.on_error {
        OnErrorKind::Retry => {
            let backoff: f64 = (0..run.retries)
                .map(|i| (run.retry_backoff.as_secs_f64() * f64::from(1u32 << i.min(16))).min(30.0))
                .sum();
            (1 + u64::from(run.retries), backoff)
        }
        _ => (1, 0.0),
    };
    let per_batch = timeout.as_secs_f64() * attempts as f64 + backoff;
    Some(DrainEstimate {
        seconds: rounds as f64 * per_batch,
        explain: format!(
            "{items} items = max-in-flight {} + maxRecords {max_records}, in {rounds} rounds of {workers} workers x batch size {}, each up to {per_batch:.1} s = item timeout {} s x {attempts} attempts{}",
            run.max_in_flight,
            run.batch_size,
            timeout.as_secs_f64(),
            if backoff > 0.0 { format!(" + {backoff:.1} s backoff") } else { String::new() }
        ),
    })
}

enum Resolution {
    /// A provider the daemon can build, needing this many `|` arguments.
    Builds(usize),
    /// A class outside the SDK's and the KCL's packages: the user's own.
    Custom,
    /// Nothing the daemon can build.
    Unknown,
}

fn resolve_provider(kcl: Kcl, name: &str) -> Resolution {
    let name = if kcl == Kcl::V3 && kcl::V3_STS_ALIASES.contains(&name) {
        "software.amazon.kinesis.multilang.auth.KclStsAssumeRoleCredentialsProvider"
    } else {
        name
    };
    let candidates: Vec<String> = kcl::provider_prefixes(kcl)
        .iter()
        .map(|p| format!("{p}{name}"))
        .chain(std::iter::once(name.to_owned()))
        .collect();
    if let Some((_, min)) = kcl::providers(kcl)
        .iter()
        .find(|(fq, _)| candidates.iter().any(|c| c == fq))
    {
        return Resolution::Builds(*min);
    }
    let ours = ["com.amazonaws.", "software.amazon."];
    if name.contains('.')
        && !ours.iter().any(|p| name.starts_with(p))
        && !name.starts_with("profile.")
    {
        return Resolution::Custom;
    }
    Resolution::Unknown
}

/// The name that works under `kcl` for a provider name it cannot resolve: the other SDK
/// generation's equivalent, or the nearest name it knows.
fn working_name(kcl: Kcl, name: &str) -> Option<String> {
    let short = name
        .strip_prefix("com.amazonaws.auth.")
        .or_else(|| name.strip_prefix("software.amazon.awssdk.auth.credentials."))
        .or_else(|| name.strip_prefix("software.amazon.kinesis.multilang.auth."))
        .or_else(|| name.strip_prefix("software.amazon.awssdk.services.sts.auth."))
        .unwrap_or(name);
    let found = kcl::PROVIDER_EQUIVALENTS
        .iter()
        .find_map(|(v1, v2)| match kcl {
            Kcl::V3 if *v1 == short => Some(*v2),
            Kcl::V2 if *v2 == short => Some(*v1),
            _ => None,
        });
    if let Some(f) = found {
        return Some(f.to_owned());
    }
    let names: Vec<String> = kcl::providers(kcl)
        .iter()
        .map(|(fq, _)| {
            let short = fq.rsplit('.').next().unwrap_or(fq);
            if fq.starts_with("com.amazonaws.auth.profile.") {
                format!("profile.{short}")
            } else {
                short.to_owned()
            }
        })
        .collect();
    if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(short)) {
        return Some(n.clone());
    }
    crate::cli::properties::nearest(short, &names).map(str::to_owned)
}

/// The nearest key `kcl` knows: the same key in another case, a nested key ending in it
/// (`consumerName` → `fanoutConfig.consumerName`), or a close spelling.
fn suggest_key(kcl: Kcl, key: &str) -> Option<String> {
    let keys = kcl::all_keys(kcl);
    if let Some(k) = keys.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some((*k).to_owned());
    }
    if let Some(k) = keys.iter().find(|k| k.ends_with(&format!(".{key}"))) {
        return Some((*k).to_owned());
    }
    let lowered = key.to_ascii_lowercase();
    keys.iter()
        .map(|k| {
            (
                crate::cli::properties::levenshtein(&lowered, &k.to_ascii_lowercase()),
                *k,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 1 + key.len() / 6)
        .map(|(_, k)| k.to_owned())
}

/// BeanUtils' boolean words.
fn parse_java_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// What a value's trailing blanks do in the daemon, which keeps them (`Properties`), or
/// `None` where the daemon trims them. Verified on the 2.5.8 and 3.1.3 jars: BeanUtils'
/// number converters and the duration, tag, list and credentials converters trim; the
/// boolean converter does not (`true ` is not a boolean word: false); the enum converters
/// upper-case, then look the name up with the blank (`LATEST `: no such constant); the
/// epoch-seconds converter is `Long.parseLong`, `maxActiveThreads` is `Integer.parseInt`
/// (`NumberFormatException`); an endpoint becomes a URI (illegal character); a name
/// (`applicationName`, `streamName`, `workerId`, ...) is used with the blank.
fn trailing_blank_consequence(kcl: Kcl, key: &str, ty: Ty, trimmed: &str) -> Option<String> {
    let fails = |why: &str| Some(format!("it fails at start-up ({why})"));
    match key {
        "executableName" | "processingLanguage" => return None,
        "maxActiveThreads" => return fails("NumberFormatException"),
        "kinesisEndpoint" | "dynamoDBEndpoint" => {
            return fails("the endpoint URI has an illegal character")
        }
        _ if kcl::credentials_keys(kcl).contains(&kcl::normalize(kcl, key).as_str()) => {
            return None
        }
        _ => {}
    }
    match ty {
        Ty::Int | Ty::Long | Ty::Double | Ty::Duration | Ty::Tags | Ty::StrList => None,
        Ty::Bool => (parse_java_bool(trimmed) == Some(true))
            .then(|| format!("it does not read {trimmed:?} as a boolean and silently reads false")),
        Ty::EpochSeconds => fails("NumberFormatException"),
        Ty::ClientVersion
        | Ty::BillingMode
        | Ty::InitialPosition
        | Ty::MetricsLevel
        | Ty::RetrievalMode => fails("no such value"),
        Ty::Str | Ty::Region | Ty::Class => {
            Some("it uses the value blank included (another name than the one you see)".into())
        }
    }
}

fn looks_like_iso_duration(v: &str) -> bool {
    let v = v.strip_prefix(['+']).unwrap_or(v);
    let upper = v.to_ascii_uppercase();
    upper.starts_with('P')
        && upper.len() > 1
        && upper[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || "DTHMS.,".contains(c))
        && upper[1..].chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run(args: &[&str]) -> RunArgs {
        let argv = ["rsmld", "--handler", "discard"].iter().chain(args);
        crate::cli::config::Cli::try_parse_from(argv).unwrap().run
    }

    #[test]
    fn drain_estimate_counts_rounds_attempts_and_backoff() {
        assert!(drain_estimate(&run(&["--workers", "4"]), 10_000).is_none());
        // 1000 + 500 items / (2 workers x 100) = 8 rounds; each batch 3 attempts of 2 s
        // plus 1 + 2 s of backoff = 9 s; 72 s in all.
        let r = run(&[
            "--workers",
            "2",
            "--batch-size",
            "100",
            "--max-in-flight",
            "1000",
            "--item-timeout",
            "2",
            "--on-error",
            "retry",
            "--retries",
            "2",
            "--retry-backoff",
            "1",
        ]);
        let d = drain_estimate(&r, 500).unwrap();
        assert_eq!(d.seconds, 72.0, "{}", d.explain);
    }

    #[test]
    fn java_values() {
        assert_eq!(parse_java_bool("Yes"), Some(true));
        assert_eq!(parse_java_bool("off"), Some(false));
        assert_eq!(parse_java_bool("ture"), None);
        assert!(looks_like_iso_duration("PT12H"));
        assert!(looks_like_iso_duration("P1DT0.5S"));
        assert!(!looks_like_iso_duration("12h"));
        assert!(!looks_like_iso_duration("P"));
    }

    #[test]
    fn provider_names_resolve_as_each_daemon_resolves_them() {
        assert!(matches!(
            resolve_provider(Kcl::V3, "DefaultCredentialsProvider"),
            Resolution::Builds(0)
        ));
        assert!(matches!(
            resolve_provider(Kcl::V3, "StsAssumeRoleCredentialsProvider"),
            Resolution::Builds(2)
        ));
        assert!(matches!(
            resolve_provider(Kcl::V3, "DefaultAWSCredentialsProviderChain"),
            Resolution::Unknown
        ));
        assert!(matches!(
            resolve_provider(Kcl::V2, "profile.ProfileCredentialsProvider"),
            Resolution::Builds(0)
        ));
        assert!(matches!(
            resolve_provider(Kcl::V2, "ProfileCredentialsProvider"),
            Resolution::Unknown
        ));
        assert!(matches!(
            resolve_provider(Kcl::V3, "com.example.MyProvider"),
            Resolution::Custom
        ));
        assert_eq!(
            working_name(Kcl::V2, "ProfileCredentialsProvider").as_deref(),
            Some("profile.ProfileCredentialsProvider")
        );
        assert_eq!(
            working_name(
                Kcl::V3,
                "com.amazonaws.auth.SystemPropertiesCredentialsProvider"
            )
            .as_deref(),
            Some("SystemPropertyCredentialsProvider")
        );
    }
}
