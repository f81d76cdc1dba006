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
//! makes misconfigurations survive into production.
//!
//! The file format is Java's `.properties`: `key = value`, `key: value` or `key value`;
//! `#` and `!` comments; a trailing backslash continues a line; `\t`, `\n`, `\\`, `\uXXXX`
//! escapes.

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
    /// A `rsmld.*` key that is not a setting.
    #[error("{path}:{line}: unknown key {key:?}{suggestion}")]
    UnknownKey {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The key.
        key: String,
        /// ", did you mean …?" or empty.
        suggestion: String,
    },
}

/// One `key = value` entry with its line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line where the entry starts.
    pub line: usize,
    /// The key, unescaped.
    pub key: String,
    /// The value, unescaped.
    pub value: String,
}

/// Parses Java properties text.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let mut logical = raw.trim_start().to_owned();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        out.push(Entry {
            line: n + 1,
            key: unescape(key),
            value: unescape(value),
        });
    }
    out
}

/// Reads `path` and turns its `rsmld.*` keys into command-line arguments, checking each
/// key against `valid` (long flag names without dashes).
pub fn rsmld_args(path: &Path, valid: &[String]) -> Result<Vec<String>, PropertiesError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| PropertiesError::Read {
        path: display.clone(),
        error,
    })?;
    let mut args = Vec::new();
    let mut command = None;
    for entry in parse(&text) {
        let Some(name) = entry.key.strip_prefix("rsmld.") else {
            continue;
        };
        if name == "exec.command" {
            command = Some(
                entry
                    .value
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            );
            continue;
        }
        let flag = name.replace(['_', '.'], "-");
        if flag == "properties" || !valid.contains(&flag) {
            let mut candidates: Vec<String> = valid
                .iter()
                .filter(|v| v.as_str() != "properties")
                .map(|v| format!("rsmld.{}", v.replace('-', "_")))
                .collect();
            candidates.push("rsmld.exec.command".into());
            let suggestion = nearest(&entry.key, &candidates)
                .map(|s| format!(", did you mean {s:?}?"))
                .unwrap_or_default();
            return Err(PropertiesError::UnknownKey {
                path: display,
                line: entry.line,
                key: entry.key,
                suggestion,
            });
        }
        args.push(format!("--{flag}"));
        args.push(entry.value);
    }
    if let Some(command) = command {
        args.push("--".into());
        args.extend(command);
    }
    Ok(args)
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
    let mut rest = line[i..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.trim_end().to_owned()
}

/// The candidate closest to `word` by edit distance, if reasonably close.
fn nearest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), c))
        .min()
        .filter(|(d, _)| *d <= word.len().max(4) / 2)
        .map(|(_, c)| c.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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
    fn maps_rsmld_keys_to_flags_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.properties");
        std::fs::write(
            &path,
            "executableName = rsmld --properties app.properties\nrsmld.workers = 8\nrsmld.max_in_flight=100\nrsmld.handler = exec\nrsmld.exec.command = /opt/app/handle.py --fast\nstreamName = s\n",
        )
        .unwrap();
        let args = rsmld_args(&path, &valid()).unwrap();
        assert_eq!(
            args,
            [
                "--workers",
                "8",
                "--max-in-flight",
                "100",
                "--handler",
                "exec",
                "--",
                "/opt/app/handle.py",
                "--fast"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.properties");
        std::fs::write(&path, "rsmld.workers = 2\nrsmld.max_inflight = 5\n").unwrap();
        let err = rsmld_args(&path, &valid()).unwrap_err().to_string();
        assert!(
            err.contains(
                ":2: unknown key \"rsmld.max_inflight\", did you mean \"rsmld.max_in_flight\"?"
            ),
            "{err}"
        );
        std::fs::write(&path, "rsmld.zzzzzzzzzzzz = 1\n").unwrap();
        let err = rsmld_args(&path, &valid()).unwrap_err().to_string();
        assert!(!err.contains("did you mean"), "{err}");
    }
}
