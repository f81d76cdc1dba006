//! `rsmld attach`: the daemon's child when one `rsmld serve` holds the host's leases.
//!
//! Attach connects to the server's socket, sends a hello (the application and stream from the
//! daemon's properties file, `applicationName` and `streamName`, when `--properties` names it) with its
//! stdin and stdout attached, closes its own copies of them, and waits: the server reads
//! and writes the daemon's pipes directly, and when the lease ends sends its exit status,
//! which attach exits with. The socket closing without a status means the server died:
//! attach exits 1 at once, so the daemon restarts the lease as it does for a dead child.
//!
//! A server that is not there yet (no socket, or nothing listening) is retried every
//! 100 ms for `--retry-for` (10 s by default); then one error line and exit 2.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::app::{EXIT_FAILURE, EXIT_USAGE};
use crate::serve::fd;
use crate::serve::hello::Hello;

pub use crate::cli::attach::{AttachArgs, DEFAULT_RETRY_FOR};

/// Runs attach with `args` (the arguments after `attach`); the exit code.
pub fn main(args: &[String]) -> ExitCode {
    let argv = std::iter::once("rsmld attach".to_owned()).chain(args.iter().cloned());
    let args = match AttachArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(&args) {
        Ok(status) => ExitCode::from(status),
        Err((code, message)) => {
            eprintln!("rsmld[attach] ERROR {message}");
            ExitCode::from(code)
        }
    }
}

/// The lease's status from the server, or an exit code and the line saying why not.
fn run(args: &AttachArgs) -> Result<u8, (u8, String)> {
    let (application, stream) = match &args.properties {
        Some(path) => names_of(path).map_err(|e| (EXIT_USAGE, e))?,
        None => Default::default(),
    };
    let conn = connect(&args.socket, args.retry_for).map_err(|e| {
        (
            EXIT_USAGE,
            format!(
                "no rsmld serve answers on {} (tried for {:?}): {e}",
                args.socket.display(),
                args.retry_for
            ),
        )
    })?;
    let hello = Hello::new(&application, &stream).encode();
    fd::send_with_fds(
        &conn,
        &hello,
        &[io::stdin().as_raw_fd(), libc::STDOUT_FILENO],
    )
    .map_err(|e| {
        (
            EXIT_FAILURE,
            format!("cannot hand the lease to the server: {e}"),
        )
    })?;
    release_stdio();
    let mut status = [0u8; 1];
    match (&conn).read(&mut status) {
        Ok(1) => Ok(status[0]),
        Ok(_) => Err((
            EXIT_FAILURE,
            "the server closed the lease without a status (did it die?)".into(),
        )),
        Err(e) => Err((EXIT_FAILURE, format!("lost the server: {e}"))),
    }
}

/// `applicationName` and `streamName` of the properties file at `path` (empty when
/// missing).
fn names_of(path: &Path) -> Result<(String, String), String> {
    let props = crate::cli::properties::Properties::read(path).map_err(|e| e.to_string())?;
    let get = |key| props.get(key).map(|e| e.value.clone()).unwrap_or_default();
    Ok((get("applicationName"), get("streamName")))
}

/// Connects, retrying while nothing answers (no socket file, or a stale one) until
/// `retry_for` has passed.
fn connect(path: &Path, retry_for: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + retry_for;
    loop {
        match UnixStream::connect(path) {
            Ok(c) => return Ok(c),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Points this process's stdin and stdout at /dev/null: the server holds the daemon's
/// pipes now, and only it should (when it dies, the pipes close with it).
fn release_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    for target in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: dup2 of a valid descriptor onto 0 or 1, which this process owns; nothing
        // in attach reads stdin or writes stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), target);
        }
    }
}
