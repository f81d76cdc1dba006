//! Fail before the first record: an output or dead-letter directory that takes no file and
//! an exec program that cannot run stop rsmld at start-up — before it reads stdin, so before
//! `initialize` is answered — with one message on stderr and exit 1. Through the real binary,
//! on a real read-only mount (tmpfs mounted `ro`; skipped with a printed reason where
//! mounting is not allowed).
//!
//! stdin is a regular file that the test keeps open: the child shares its file offset, so an
//! offset still at 0 after the exit proves rsmld never read a byte of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use std::io::{Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RSMLD: &str = env!("CARGO_BIN_EXE_rsmld");

const INIT: &str = r#"{"action":"initialize","shardId":"shardId-000000000001","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}"#;

/// What one run of rsmld did.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    /// Bytes of stdin rsmld consumed.
    stdin_read: u64,
}

/// Runs rsmld in `dir` with `args`; stdin an `initialize` line in a file. Fails the test
/// instead of hanging if rsmld does not exit within a generous minute.
fn run_in(dir: &Path, args: &[&str]) -> Outcome {
    let mut input = tempfile::tempfile().unwrap();
    writeln!(input, "{INIT}").unwrap();
    input.rewind().unwrap();
    let child = Command::new(RSMLD)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::from(input.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let output = loop {
        if let Ok(out) = rx.try_recv() {
            break out.unwrap();
        }
        if Instant::now() > deadline {
            // SAFETY: plain kill(2) of the child we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("rsmld {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        stdin_read: input.stream_position().unwrap(),
    }
}

/// rsmld stopped at start-up with exactly `stderr`: exit 2 (a configuration error), nothing
/// on stdout (no `initialize` status), not a byte of stdin read.
fn assert_refused(out: &Outcome, stderr: &str) {
    assert_eq!(out.stderr, stderr);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout, "", "rsmld answered on stdout");
    assert_eq!(out.stdin_read, 0, "rsmld read stdin before failing");
}

/// A read-only tmpfs at `<tempdir>/ro`, unmounted on drop.
struct ReadOnlyMount {
    dir: tempfile::TempDir,
}

impl ReadOnlyMount {
    /// The mount, or `None` (with the reason printed) where mounting is not allowed.
    fn new() -> Option<ReadOnlyMount> {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(&ro)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(ReadOnlyMount { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a read-only tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// The directory the mount is in (writable; the tests' working directory).
    fn base(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("ro"))
            .status();
    }
}

#[test]
fn a_read_only_output_directory_stops_start_up_before_stdin_is_read() {
    let Some(m) = ReadOnlyMount::new() else {
        return;
    };
    let out = run_in(m.base(), &["--handler", "file", "--output", "ro"]);
    assert_refused(
        &out,
        "rsmld[-] ERROR --output ro: is not writable (Read-only file system)\n",
    );
    // Missing, under a read-only parent: it could not be created.
    let out = run_in(m.base(), &["--handler", "file", "--output", "ro/out"]);
    assert_refused(
        &out,
        "rsmld[-] ERROR --output ro/out: does not exist and cannot be created: ro is not writable (Read-only file system)\n",
    );
}

#[test]
fn a_read_only_dead_letter_directory_stops_start_up() {
    let Some(m) = ReadOnlyMount::new() else {
        return;
    };
    let out = run_in(
        m.base(),
        &[
            "--handler",
            "discard",
            "--on-error",
            "skip",
            "--dead-letter",
            "ro",
        ],
    );
    assert_refused(
        &out,
        "rsmld[-] ERROR --dead-letter ro: is not writable (Read-only file system)\n",
    );
}

#[test]
fn every_unmet_prerequisite_is_one_line_named_by_the_key_that_set_it() {
    let Some(m) = ReadOnlyMount::new() else {
        return;
    };
    std::fs::write(
        m.base().join("app.properties"),
        "executableName = rsmld --properties app.properties\n\
         rsmld.handler = file\n\
         rsmld.output = ro\n\
         rsmld.on_error = skip\n\
         rsmld.dead_letter = ro/dead\n",
    )
    .unwrap();
    let out = run_in(m.base(), &["--properties", "app.properties"]);
    assert_refused(
        &out,
        "rsmld[-] ERROR app.properties:3: rsmld.output ro: is not writable (Read-only file system)\n\
         rsmld[-] ERROR app.properties:5: rsmld.dead_letter ro/dead: does not exist and cannot be created: ro is not writable (Read-only file system)\n",
    );
    // `rsmld check` reports the same findings from the same function.
    let out = run_in(m.base(), &["check", "--properties", "app.properties"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "app.properties:3: error: rsmld.output ro: is not writable (Read-only file system)\n"
        ) && out.stderr.contains(
            "app.properties:5: error: rsmld.dead_letter ro/dead: does not exist and cannot be created: ro is not writable (Read-only file system)\n"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn an_exec_program_that_cannot_run_stops_start_up_before_stdin_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("handler.sh");
    std::fs::write(&script, "#!/bin/sh\nwhile read -r l; do echo ok; done\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Executable, but its interpreter is missing: execve would say "No such file or
    // directory" about a file that is there.
    let python = dir.path().join("handler.py");
    std::fs::write(&python, "#!/usr/bin/no-such-python\nprint('ok')\n").unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cases = [
        (
            "./handler.py",
            "rsmld[-] ERROR the exec command: ./handler.py: its interpreter /usr/bin/no-such-python (its #! line) does not exist or is not executable\n",
        ),
        (
            "no-such-program-anywhere",
            "rsmld[-] ERROR the exec command: no-such-program-anywhere: not found in PATH\n",
        ),
        (
            "./missing.sh",
            "rsmld[-] ERROR the exec command: ./missing.sh: does not exist\n",
        ),
        (
            "./handler.sh",
            "rsmld[-] ERROR the exec command: ./handler.sh: ./handler.sh is not executable (chmod +x)\n",
        ),
    ];
    for (program, stderr) in cases {
        let out = run_in(dir.path(), &["--handler", "exec", "--", program, "arg"]);
        assert_refused(&out, stderr);
    }
    // From the properties file: named by its key and line.
    std::fs::write(
        dir.path().join("app.properties"),
        "rsmld.handler = exec\nrsmld.exec.command = ./handler.sh --fast\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["--properties", "app.properties"]);
    assert_refused(
        &out,
        "rsmld[-] ERROR app.properties:2: rsmld.exec.command: ./handler.sh: ./handler.sh is not executable (chmod +x)\n",
    );
}

/// The checks pass where they should: a writable directory (left without a probe file),
/// a directory to be created, a bare program name found in PATH.
#[test]
fn met_prerequisites_let_rsmld_answer_initialize() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let status = r#"{"action":"status","responseFor":"initialize"}"#;
    let answered = |args: &[&str]| {
        let out = run_in(dir.path(), args);
        assert!(
            out.stdout.starts_with(status),
            "{args:?}: stdout {:?}, stderr {}",
            out.stdout,
            out.stderr
        );
        assert!(out.stdin_read > 0);
    };
    answered(&["--handler", "file", "--output", "out"]);
    answered(&["--handler", "file", "--output", "new/out"]);
    answered(&[
        "--handler",
        "discard",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead",
    ]);
    answered(&["--handler", "exec", "--", "cat"]);
    let leftovers: Vec<PathBuf> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".rsmld-probe"))
        .collect();
    assert_eq!(leftovers, Vec::<PathBuf>::new());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
