//! rsmld settings inside the daemon's properties file.
//!
//! The daemon starts rsmld with `executableName` split on spaces, with no quoting: a
//! handler command with arguments cannot be passed through it reliably, and keeping two
//! configuration files in step is a chore. So rsmld reads its settings from the *same*
//! properties file, under keys prefixed `rsmld.` (the daemon ignores keys it does not
//! know), and `executableName` stays `rsmld --properties app.properties`.
//!
//! Each `rsmld.<name>` key is the long flag `--<name>` (underscores or dashes, as you
//! like: `rsmld.max_in_flight = 500` is `--max-in-flight 500`); `rsmld.exec.command` is the
//! exec handler's command line (split on whitespace). Flags given on the command line
//! override the file. An unknown `rsmld.*` key is an error that suggests the nearest
//! valid key, because the daemon's own habit of silently ignoring typos is exactly what
//! makes misconfigurations survive into production. Values go through the command line's
//! own parsers (see `config::file_settings`), units included (`rsmld.checkpoint_interval =
//! 2s`, `rsmld.max_in_flight_bytes = 16MiB`), and every bad entry is reported, each as a
//! [`Diagnostic`] with the file, the line and the key as written: the same path serves
//! start-up and `rsmld check`, so the two cannot disagree.
//!
//! The file format is Java's `.properties`: `key = value`, `key: value` or `key value`;
//! `#` and `!` comments; a trailing backslash continues a line; `\t`, `\n`, `\\`, `\uXXXX`
//! escapes. The file is read as the daemon reads it (`java.util.Properties.load(InputStream)`):
//! every byte is one ISO-8859-1 character, lines end in `\n`, `\r\n` or a lone `\r`, and
//! only space, tab and form feed are blanks. So rsmld and the daemon see the same keys and
//! values, a Latin-1 byte in a comment stops neither, and a UTF-8 `é` is `Ã©` to both (which
//! `rsmld check` warns about: write `\u00e9`).

use std::fmt;
use std::path::Path;

/// A properties file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    /// The file could not be read.
    #[error("cannot read properties file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// One or more `rsmld.*` entries are wrong; each diagnostic names its line and key.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn join_lines(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| match d.line {
            Some(line) => format!("{}:{line}: {}", d.path, d.message),
            None => format!("{}: {}", d.path, d.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How bad a finding is: an error stops rsmld (and fails `rsmld check`), a warning does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The setting cannot work, or does not do what it says.
    Error,
    /// The setting works but is risky.
    Warning,
}

/// One finding about a properties file: `FILE:LINE: error: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub path: String,
    /// 1-based line of the entry; `None` for the file as a whole (a missing key).
    pub line: Option<usize>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl Diagnostic {
    /// An error at `line` (or about the whole file).
    pub fn error(path: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_owned(),
            line,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `line` (or about the whole file).
    pub fn warning(path: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, line, message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(line) => write!(f, "{}:{line}: {severity}: {}", self.path, self.message),
            None => write!(f, "{}: {severity}: {}", self.path, self.message),
        }
    }
}

/// One `key = value` entry with its line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line where the entry starts.
    pub line: usize,
    /// The key, unescaped.
    pub key: String,
    /// The value, unescaped, without trailing blanks.
    pub value: String,
    /// The value ended in blanks: Java's `Properties` keeps them (so the daemon sees
    /// `LATEST ` and may refuse it); rsmld trims them.
    pub trailing_blanks: bool,
    /// The value exactly as the daemon holds it, trailing blanks included.
    pub daemon_value: String,
    /// The key or value has a `\u` escape that is not four hex digits: the daemon's
    /// `Properties.load` throws (`Malformed \uxxxx encoding.`) and the daemon does not start.
    pub malformed_escape: bool,
    /// The key or value was written with bytes outside ASCII (not `\uXXXX` escapes): read
    /// as ISO-8859-1, as the daemon reads them, which garbles UTF-8 text.
    pub non_ascii: bool,
}

/// A parsed properties file and the name it was given by.
#[derive(Clone, Debug)]
pub struct Properties {
    /// The path as the user wrote it (used in every diagnostic).
    pub path: String,
    /// Every entry, in file order (duplicates kept: the last one wins, as in Java).
    pub entries: Vec<Entry>,
}

impl Properties {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Properties, PropertiesError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| PropertiesError::Read {
            path: display.clone(),
            error,
        })?;
        Ok(Properties {
            path: display,
            entries: parse(&latin1(&bytes)),
        })
    }

    /// The entry that wins for `key` (the last one), as Java's `Properties` keeps it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// Bytes as ISO-8859-1: each byte is the character of the same number, as
/// `Properties.load(InputStream)` reads them.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The blanks of a properties file: space, tab, form feed (not Unicode's wider set).
const BLANKS: [char; 3] = [' ', '\t', '\x0c'];

/// Lines as `Properties` splits them: at `\n`, `\r\n` or a lone `\r`.
fn java_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            Some(i) => {
                out.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.push(rest);
                rest = "";
            }
        }
    }
    out
}

/// Parses Java properties text.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut lines = java_lines(text).into_iter().enumerate();
    while let Some((n, raw)) = lines.next() {
        let mut logical = raw.trim_start_matches(BLANKS).to_owned();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches(BLANKS)),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        let (key, bad_key) = unescape(key);
        let (value, bad_value) = unescape(value);
        let trimmed = value.trim_end_matches(|c: char| c.is_ascii_whitespace());
        out.push(Entry {
            line: n + 1,
            key,
            malformed_escape: bad_key || bad_value,
            trailing_blanks: trimmed.len() != value.len(),
            non_ascii: !logical.is_ascii(),
            value: trimmed.to_owned(),
            daemon_value: value,
        });
    }
    out
}

/// The key that holds the exec handler's command line.
pub const EXEC_COMMAND_KEY: &str = "rsmld.exec.command";

/// What the `rsmld.*` keys of a file say, as command-line arguments, with where each came
/// from.
#[derive(Clone, Debug, Default)]
pub struct RsmldSettings {
    /// `--flag value` pairs in file order.
    pub args: Vec<String>,
    /// `rsmld.exec.command`, split on whitespace.
    pub command: Option<Vec<String>>,
    /// For each flag the file sets (long name without dashes), the winning entry.
    pub origins: Vec<(String, Entry)>,
    /// The entry of `rsmld.exec.command`, if any.
    pub command_origin: Option<Entry>,
}

impl RsmldSettings {
    /// The entry that set `flag` (long name without dashes), if the file set it.
    pub fn origin(&self, flag: &str) -> Option<&Entry> {
        self.origins
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, e)| e)
    }
}

/// The flag a `rsmld.<name>` key stands for: `max_in_flight` and `max.in.flight` are
/// `max-in-flight`.
pub fn flag_of(name: &str) -> String {
    name.replace(['_', '.'], "-")
}

/// Turns the `rsmld.*` keys of `props` into command-line arguments, checking each key
/// against `valid` (long flag names without dashes) and each value with `validate(flag,
/// value)` (the command line's own parser, so the file and the flags can never disagree).
/// Every bad entry is reported, with its line and its key as written.
pub fn rsmld_settings(
    props: &Properties,
    valid: &[String],
    validate: &dyn Fn(&str, &str) -> Result<(), String>,
) -> (RsmldSettings, Vec<Diagnostic>) {
    let mut out = RsmldSettings::default();
    let mut problems = Vec::new();
    for entry in &props.entries {
        let Some(name) = entry.key.strip_prefix("rsmld.") else {
            continue;
        };
        if entry.key == EXEC_COMMAND_KEY {
            let command: Vec<String> = entry.value.split_whitespace().map(str::to_owned).collect();
            if command.is_empty() {
                problems.push(Diagnostic::error(
                    &props.path,
                    Some(entry.line),
                    format!(
                        "{} is empty: give the handler's program and its arguments",
                        entry.key
                    ),
                ));
            }
            out.command = Some(command);
            out.command_origin = Some(entry.clone());
            continue;
        }
        let flag = flag_of(name);
        if flag == "properties" || !valid.contains(&flag) {
            let mut candidates: Vec<String> = valid
                .iter()
                .filter(|v| v.as_str() != "properties")
                .map(|v| format!("rsmld.{}", v.replace('-', "_")))
                .collect();
            candidates.push(EXEC_COMMAND_KEY.into());
            let suggestion = nearest(&entry.key, &candidates)
                .map(|s| format!(", did you mean {s:?}?"))
                .unwrap_or_default();
            problems.push(Diagnostic::error(
                &props.path,
                Some(entry.line),
                format!("unknown key {:?}{suggestion}", entry.key),
            ));
            continue;
        }
        if let Err(why) = validate(&flag, &entry.value) {
            problems.push(Diagnostic::error(
                &props.path,
                Some(entry.line),
                format!("{} = {:?}: {why}", entry.key, entry.value),
            ));
            continue;
        }
        out.args.push(format!("--{flag}"));
        out.args.push(entry.value.clone());
        out.origins.push((flag, entry.clone()));
    }
    (out, problems)
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let i = i.min(bytes.len());
    let key = &line[..i];
    let mut rest = line[i..].trim_start_matches(BLANKS);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches(BLANKS);
    }
    (key, rest)
}

/// Java's unescaping, and whether a `\u` escape was malformed (not four hex digits), which
/// makes `Properties.load` throw: the daemon does not start. UTF-16 surrogate pairs
/// (`\ud83d\ude00`) make one character; a lone surrogate, which Rust cannot hold, is U+FFFD.
fn unescape(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len());
    let mut malformed = false;
    // A high surrogate waiting for its low half.
    let mut high: Option<u16> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let next = if c == '\\' { chars.next() } else { None };
        let escaped = match next {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u16::from_str_radix(&hex, 16) {
                    Ok(unit) if hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        push_utf16(&mut out, &mut high, unit);
                    }
                    _ => {
                        malformed = true;
                        out.push_str(&hex);
                    }
                }
                continue;
            }
            Some('t') => '\t',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('f') => '\x0c',
            Some(other) => other,
            None if c == '\\' => continue, // a lone backslash at the end: dropped, as Java does
            None => c,
        };
        if high.take().is_some() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
        out.push(escaped);
    }
    if high.is_some() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
    (out, malformed)
}

/// Appends one UTF-16 unit of a `\u` escape: a surrogate pair makes one character.
fn push_utf16(out: &mut String, high: &mut Option<u16>, unit: u16) {
    if let Some(h) = high.take() {
        if let Some(Ok(ch)) = char::decode_utf16([h, unit]).next() {
            out.push(ch);
            return;
        }
        out.push(char::REPLACEMENT_CHARACTER);
    }
    if (0xD800..0xDC00).contains(&unit) {
        *high = Some(unit);
    } else {
        out.push(char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
}

/// The candidate closest to `word` by edit distance, if reasonably close.
pub fn nearest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), c))
        .min()
        .filter(|(d, _)| *d <= word.len().max(4) / 2)
        .map(|(_, c)| c.as_str())
}

/// The edit distance between `a` and `b` (insertions, deletions, substitutions of chars):
/// `strsim`'s, the crate clap's own "did you mean" uses.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Vec<String> {
        [
            "workers",
            "max-in-flight",
            "handler",
            "output",
            "checkpoint-interval",
            "properties",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn edit_distance_counts_chars() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("workers", "workers"), 0);
        assert_eq!(levenshtein("worker", "workers"), 1);
        assert_eq!(levenshtein("wrokers", "workers"), 2);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("é", "e"), 1, "a char, not its two bytes");
        assert_eq!(nearest("max-in-fligt", &valid()), Some("max-in-flight"));
        assert_eq!(nearest("zzzzzzzz", &valid()), None);
    }

    #[test]
    fn parses_java_properties() {
        let text = "# comment\n! also\n  a = 1\nb:2\nc 3\nd = x \\\n    y\ne = caf\\u00e9\\tz\nf\n";
        let got: Vec<(String, String)> =
            parse(text).into_iter().map(|e| (e.key, e.value)).collect();
        let want = [
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("d", "x y"),
            ("e", "caf\u{e9}\tz"),
            ("f", ""),
        ];
        assert_eq!(got, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }

    #[test]
    fn reads_like_java_properties_load() {
        // Latin-1 bytes, a lone CR as a line end, NBSP (0xA0) is not a blank, trailing
        // blanks kept for the daemon, a \u escape is not "outside ASCII".
        let text = latin1(
            b"# caf\xe9 \\u12\ra = 1 \rb = \xa0x\r\nc = caf\\u00e9\nd = \\ud83d\\ude00\\ud83d\ne = \\u00zz\n",
        );
        let got: Vec<(String, String, String, bool, bool)> = parse(&text)
            .into_iter()
            .map(|e| {
                let flags = (e.non_ascii, e.malformed_escape);
                (e.key, e.value, e.daemon_value, flags.0, flags.1)
            })
            .collect();
        let want = [
            ("a", "1", "1 ", false, false),
            ("b", "\u{a0}x", "\u{a0}x", true, false),
            ("c", "caf\u{e9}", "caf\u{e9}", false, false),
            ("d", "\u{1f600}\u{fffd}", "\u{1f600}\u{fffd}", false, false),
            ("e", "00zz", "00zz", false, true),
        ];
        assert_eq!(
            got,
            want.map(|(k, v, d, n, m)| (k.to_owned(), v.to_owned(), d.to_owned(), n, m))
        );
    }

    fn settings(text: &str) -> (RsmldSettings, Vec<Diagnostic>) {
        let props = Properties {
            path: "app.properties".into(),
            entries: parse(text),
        };
        let validate = |flag: &str, value: &str| {
            if flag == "workers" && value.parse::<u32>().is_err() {
                return Err("not a number".to_owned());
            }
            Ok(())
        };
        rsmld_settings(&props, &valid(), &validate)
    }

    #[test]
    fn maps_rsmld_keys_to_flags_and_ignores_the_rest() {
        let (s, problems) = settings(
            "executableName = rsmld --properties app.properties\nrsmld.workers = 8\nrsmld.max_in_flight=100\nrsmld.handler = exec\nrsmld.exec.command = /opt/app/handle.py --fast\nstreamName = s\n",
        );
        assert_eq!(problems, []);
        assert_eq!(
            s.args,
            [
                "--workers",
                "8",
                "--max-in-flight",
                "100",
                "--handler",
                "exec"
            ]
        );
        assert_eq!(
            s.command,
            Some(vec!["/opt/app/handle.py".to_owned(), "--fast".to_owned()])
        );
        assert_eq!(s.origin("max-in-flight").map(|e| e.line), Some(3));
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_line_and_key() {
        let (_, problems) = settings(
            "rsmld.workers = 2\nrsmld.max_inflight = 5\nrsmld.zzzzzzzzzzzz = 1\nrsmld.workers = many\n",
        );
        let got: Vec<String> = problems.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            [
                "app.properties:2: error: unknown key \"rsmld.max_inflight\", did you mean \"rsmld.max_in_flight\"?",
                "app.properties:3: error: unknown key \"rsmld.zzzzzzzzzzzz\"",
                "app.properties:4: error: rsmld.workers = \"many\": not a number",
            ]
        );
    }
}
