//! What the handlers need from the machine, checked before the first record: the output and
//! dead-letter directories can take a file, the exec program can be started.
//!
//! Without these checks a read-only output directory is found at the first `processRecords`
//! (the lease is taken, the batch fails, the daemon restarts rsmld, over and over) and a
//! missing exec program at `initialize`, after the daemon has handed out the lease. Start-up
//! ([`startup`]) and `rsmld check` run the same [`prerequisites`], so they cannot disagree.
//!
//! Writability is tested by creating and removing a probe file (`.rsmld-probe-<pid>`), not by
//! permission bits: as root every permission check passes, while a read-only mount, a full
//! inode table or an immutable directory still refuse the write that matters. A program is
//! resolved as the exec handler's `execvp` resolves it: a name with a `/` against the current
//! directory, a bare name through `PATH` (`/bin:/usr/bin` when `PATH` is unset).

use std::io;
use std::path::{Path, PathBuf};

use crate::cli::config::{OnErrorKind, Origin, RunArgs};
use crate::cli::properties::Severity;
use crate::cli::registry::Need;

/// A prerequisite that does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    /// The setting it is about: a long flag without dashes (`output`, `dead-letter`) or
    /// `command` for the exec command.
    pub flag: &'static str,
    /// An error stops start-up; a warning (a directory rsmld will create) does not.
    pub severity: Severity,
    /// The directory or program, as given.
    pub subject: String,
    /// What is wrong with it.
    pub why: String,
}

impl Unmet {
    /// The message, naming the setting as `key` (`--output`, `rsmld.output`).
    pub fn message(&self, key: &str) -> String {
        match self.flag {
            "command" => format!("{key}: {}: {}", self.subject, self.why),
            _ => format!("{key} {}: {}", self.subject, self.why),
        }
    }

    /// The message with the setting named as the user wrote it: `FILE:LINE: rsmld.output …`
    /// when it came from the properties file, else by its flag.
    pub fn message_for(&self, run: &RunArgs) -> String {
        match self.origin(run) {
            Some(o) => format!(
                "{}:{}: {}",
                o.path,
                o.entry.line,
                self.message(&self.key(run))
            ),
            None => self.message(&self.key(run)),
        }
    }

    /// Where the setting came from, if from the properties file.
    pub fn origin<'a>(&self, run: &'a RunArgs) -> Option<&'a Origin> {
        run.origins.iter().find(|o| o.flag == self.flag)
    }

    /// The setting as the user wrote it: the key (`rsmld.output`) or the flag (`--output`).
    pub fn key(&self, run: &RunArgs) -> String {
        match self.origin(run) {
            Some(o) => o.entry.key.clone(),
            None if self.flag == "command" => "the exec command".to_owned(),
            None => format!("--{}", self.flag),
        }
    }
}

/// Every prerequisite of `run`'s handler ([`Need`]s of its flag group) and failure policy
/// that does not hold: directories first (the handler's, then the dead-letter one), then
/// programs.
pub fn prerequisites(run: &RunArgs) -> Vec<Unmet> {
    let needs = run
        .chosen_handler()
        .map(|h| h.needs(&run.general()))
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut dir = |flag: &'static str, path: &Path| {
        if let Err((severity, why)) = writable_dir(path) {
            out.push(Unmet {
                flag,
                severity,
                subject: path.display().to_string(),
                why,
            });
        }
    };
    for need in &needs {
        if let Need::WritableDir { flag, path } = need {
            dir(flag, path);
        }
    }
    if run.on_error == OnErrorKind::Skip {
        if let Some(path) = &run.dead_letter {
            dir("dead-letter", path);
        }
    }
    if let Some(path) = &run.metrics_dir {
        // The textfile collector's directory: it must exist (rsmld does not create it).
        if let Err((severity, why)) = writable_dir(path) {
            let why = match severity {
                Severity::Warning => "does not exist (rsmld does not create it)".to_owned(),
                _ => why,
            };
            out.push(Unmet {
                flag: "metrics-dir",
                severity: Severity::Error,
                subject: path.display().to_string(),
                why,
            });
        }
    }
    for need in &needs {
        if let Need::Program { flag, program } = need {
            if let Err(why) = executable(program) {
                out.push(Unmet {
                    flag,
                    severity: Severity::Error,
                    subject: program.clone(),
                    why,
                });
            }
        }
    }
    out
}

/// Start-up's check: every unmet prerequisite that is an error, one line each, named as the
/// user wrote the setting. Warnings are not errors here: a missing directory whose parent
/// takes files is created when the handler starts.
pub fn startup(run: &RunArgs) -> Result<(), PrerequisitesError> {
    let errors: Vec<String> = prerequisites(run)
        .iter()
        .filter(|u| u.severity == Severity::Error)
        .map(|u| u.message_for(run))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PrerequisitesError(errors))
    }
}

/// Prerequisites that do not hold at start-up: one message per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct PrerequisitesError(pub Vec<String>);

/// Resolves a program as `execvp` would from here: a path with a `/` against the current
/// directory, a bare name through `PATH`; it must be a file we may execute.
pub fn executable(program: &str) -> Result<PathBuf, String> {
    let mut seen_non_exec = None;
    for c in &candidates(program) {
        match std::fs::metadata(c) {
            Ok(m) if m.is_file() && access(c, libc::X_OK) => {
                // Found through PATH: say where.
                let found = if program.contains('/') {
                    String::new()
                } else {
                    format!("{}: ", c.display())
                };
                return interpreter_problem(c).map_or(Ok(c.clone()), |why| Err(found + &why));
            }
            Ok(m) if m.is_file() => seen_non_exec = Some(c.clone()),
            Ok(_) if program.contains('/') => return Err("is not a regular file".into()),
            _ => {}
        }
    }
    match seen_non_exec {
        Some(p) => Err(format!("{} is not executable (chmod +x)", p.display())),
        None if program.contains('/') => Err("does not exist".into()),
        None => Err("not found in PATH".into()),
    }
}

/// Where `execvp` looks for `program`: the path itself when it has a `/`, else each `PATH`
/// entry (glibc's default path when PATH is unset).
fn candidates(program: &str) -> Vec<PathBuf> {
    if program.contains('/') {
        return vec![PathBuf::from(program)];
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .collect()
}

/// What keeps a script's `#!` line from running, if anything: `execve` reports a missing
/// interpreter as ENOENT, "No such file or directory" for a file that is plainly there, and
/// a script saved with Windows line endings asks for `/bin/sh\r`. `#!/usr/bin/env NAME`
/// is followed to NAME through `PATH`. A file that cannot be read is not judged.
fn interpreter_problem(script: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    if line.ends_with('\r') {
        return Some(
            "its #! line ends in a carriage return (Windows line endings): the kernel looks for an interpreter whose name ends in \\r; convert it (dos2unix)".into(),
        );
    }
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let interpreter = words.next()?;
    let ok = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file()) && access(p, libc::X_OK);
    if !ok(Path::new(interpreter)) {
        return Some(format!(
            "its interpreter {interpreter} (its #! line) does not exist or is not executable"
        ));
    }
    let is_env = Path::new(interpreter)
        .file_name()
        .is_some_and(|n| n == "env");
    match words.next() {
        Some(name) if is_env && !name.starts_with('-') && !name.contains('=') => {
            let found = candidates(name).iter().any(|c| ok(c));
            (!found)
                .then(|| format!("its #! line runs {name} through env, which is not found in PATH"))
        }
        _ => None,
    }
}

/// A directory rsmld must write into: it exists and takes a file (or it does not exist yet
/// and its nearest existing ancestor takes one, so the handler can create it: a warning).
pub fn writable_dir(dir: &Path) -> Result<(), (Severity, String)> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err((Severity::Error, "is not a directory".into())),
        Ok(_) => {
            probe(dir).map_err(|e| (Severity::Error, format!("is not writable ({})", reason(&e))))
        }
        // A missing directory, or a file where one of its parents should be: look for the
        // nearest ancestor that exists.
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Err((
                Severity::Error,
                format!("cannot be reached ({})", reason(&e)),
            ))
        }
        Err(_) => {
            let mut ancestor = dir.parent();
            while let Some(a) = ancestor {
                let a = if a.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    a
                };
                match std::fs::metadata(a) {
                    Ok(m) if m.is_dir() => {
                        return Err(match probe(a) {
                            Ok(()) => (
                                Severity::Warning,
                                format!("does not exist; rsmld creates it at start-up under {} (is that the volume you meant?)", a.display()),
                            ),
                            Err(e) => (
                                Severity::Error,
                                format!("does not exist and cannot be created: {} is not writable ({})", a.display(), reason(&e)),
                            ),
                        });
                    }
                    Ok(_) => {
                        return Err((
                            Severity::Error,
                            format!(
                                "does not exist and cannot be created: {} is not a directory",
                                a.display()
                            ),
                        ))
                    }
                    Err(_) => ancestor = a.parent(),
                }
            }
            Err((Severity::Error, "does not exist".into()))
        }
    }
}

/// Creates and removes `.rsmld-probe-<pid>` in `dir`: the write the handler will need.
fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".rsmld-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    std::fs::remove_file(&path)
}

/// The OS's reason without the `(os error N)` suffix: `Read-only file system`.
fn reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable_dir(dir.path()), Ok(()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = dir.path().join("a/b");
        let (severity, why) = writable_dir(&missing).unwrap_err();
        assert_eq!(severity, Severity::Warning, "{why}");
        assert!(!dir.path().join("a").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn scripts_need_an_interpreter_that_runs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p.display().to_string()
        };
        let good = script("good.sh", "#!/bin/sh\necho ok\n");
        assert_eq!(executable(&good), Ok(PathBuf::from(&good)));
        let env = script("env.sh", "#!/usr/bin/env sh\n");
        assert_eq!(executable(&env), Ok(PathBuf::from(&env)));
        let env_flags = script("flags.sh", "#!/usr/bin/env -S sh -e\n");
        assert!(executable(&env_flags).is_ok());
        let binary = script("bin", "\x7fELF");
        assert!(executable(&binary).is_ok());
        let missing = script("missing.py", "#!/usr/bin/no-such-python\n");
        assert_eq!(
            executable(&missing),
            Err("its interpreter /usr/bin/no-such-python (its #! line) does not exist or is not executable".to_owned())
        );
        let via_env = script("via_env.py", "#!/usr/bin/env no-such-python3 -u\n");
        assert_eq!(
            executable(&via_env),
            Err(
                "its #! line runs no-such-python3 through env, which is not found in PATH"
                    .to_owned()
            )
        );
        let crlf = script("crlf.sh", "#!/bin/sh\r\necho ok\r\n");
        assert!(
            executable(&crlf)
                .unwrap_err()
                .ends_with("its #! line ends in a carriage return (Windows line endings): the kernel looks for an interpreter whose name ends in \\r; convert it (dos2unix)")
        );
    }

    #[test]
    fn programs_resolve_like_execvp() {
        assert!(executable("sh").is_ok());
        assert_eq!(
            executable("no-such-program-anywhere"),
            Err("not found in PATH".into())
        );
        assert_eq!(executable("./no/such"), Err("does not exist".into()));
        assert_eq!(executable("/"), Err("is not a regular file".into()));
        assert_eq!(
            reason(&io::Error::from_raw_os_error(libc::EROFS)),
            "Read-only file system"
        );
    }
}
