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
//!
//! **The wait costs almost no memory.** Waiting as this binary holds 4 MiB resident for the
//! whole lease (the pages of the 6 MB binary and libc that start-up and the attach path
//! touched), so once the hello is sent attach replaces itself with a 2 KB waiter
//! (`src/attach/wait.rs`, built by `src/attach/build.rs`, embedded here and executed from a
//! memfd; its `comm` is `rsmld-attach`, its command line stays attach's), which waits for
//! the status byte on descriptor 3 at 12-20 KiB and exits with it, or
//! writes the same error line as below and exits 1. Nothing else attach holds must outlive
//! the hello: its stdin and stdout are /dev/null by then, the socket is the one descriptor
//! the waiter needs, stderr stays for its error line. Where the waiter cannot run (no
//! memfd, executing one forbidden, `vm.memfd_noexec = 2`, seccomp; a target without a
//! waiter) attach waits in-process as before, silently: the same status, 4 MiB. Setting
//! `RSMLD_ATTACH_NO_EXEC=1` forces that in-process wait (a debugging switch).

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

/// The environment variable that, set (to anything but empty or `0`), keeps attach waiting
/// in-process instead of executing the waiter: a debugging switch, and how the tests reach
/// the fallback.
pub const NO_EXEC: &str = "RSMLD_ATTACH_NO_EXEC";

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
    if std::env::var_os(NO_EXEC).is_none_or(|v| v.is_empty() || v == "0") {
        // Returns only when the waiter could not be executed; then wait here.
        let _ = waiter::exec(&conn);
    }
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

/// The waiter (`src/attach/wait.rs`): executing it from a memfd once the lease is handed
/// over.
#[cfg(rsmld_waiter)]
mod waiter {
    use std::ffi::CStr;
    use std::io::{self, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixStream;

    /// The waiter's ELF image, which src/attach/build.rs compiled.
    const IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rsmld-attach"));

    /// The descriptor the waiter reads the status from (its `SOCKET_FD`).
    const SOCKET_FD: RawFd = 3;

    /// Its name: the memfd's (`/proc/PID/exe` is `/memfd:rsmld-attach (deleted)`); the
    /// waiter also names its thread so (`comm`, what `ps -o comm` and `top` show).
    const NAME: &CStr = c"rsmld-attach";

    /// Executes the waiter with `conn` as its descriptor 3; returns only if that failed,
    /// with why (the process is unchanged but for a copy of `conn` on descriptor 3).
    pub fn exec(conn: &UnixStream) -> io::Error {
        match try_exec(conn) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn try_exec(conn: &UnixStream) -> io::Result<std::convert::Infallible> {
        // The socket on 3 first, so that the memfd cannot take that number; a descriptor
        // the daemon may have left on 3 is not attach's to keep.
        if conn.as_raw_fd() == SOCKET_FD {
            // SAFETY: F_SETFD on a descriptor this process owns; clears close-on-exec.
            if unsafe { libc::fcntl(SOCKET_FD, libc::F_SETFD, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        } else {
            // SAFETY: dup2 of the live socket onto 3 (the copy is not close-on-exec).
            if unsafe { libc::dup2(conn.as_raw_fd(), SOCKET_FD) } != SOCKET_FD {
                return Err(io::Error::last_os_error());
            }
        }
        let memfd = memfd()?;
        std::fs::File::from(memfd.try_clone()?).write_all(IMAGE)?;
        // The command line stays attach's own (`ps` and `pgrep -f` find the attach of a
        // daemon by its socket and properties file as before); the waiter ignores it.
        let args: Vec<std::ffi::CString> = std::env::args_os()
            .filter_map(|a| std::ffi::CString::new(a.into_encoded_bytes()).ok())
            .collect();
        let argv: Vec<*const libc::c_char> = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp = [std::ptr::null()];
        // SAFETY: argv and envp are null-terminated arrays of NUL-terminated strings that
        // live until the call returns, which it does only on failure.
        unsafe {
            libc::fexecve(memfd.as_raw_fd(), argv.as_ptr(), envp.as_ptr());
        }
        Err(io::Error::last_os_error())
    }

    /// A close-on-exec memfd for the image, executable where the kernel asks memfds to say
    /// so (MFD_EXEC, Linux 6.3; older kernels reject the flag and need none).
    fn memfd() -> io::Result<OwnedFd> {
        let mut flags = libc::MFD_CLOEXEC | libc::MFD_EXEC;
        loop {
            // SAFETY: NAME is NUL-terminated; memfd_create takes no other pointer.
            let fd = unsafe { libc::memfd_create(NAME.as_ptr(), flags) };
            if fd >= 0 {
                // SAFETY: a new descriptor that nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) && flags & libc::MFD_EXEC != 0 {
                flags &= !libc::MFD_EXEC;
                continue;
            }
            return Err(e);
        }
    }
}

/// No waiter on this target (or src/attach/build.rs could not build it): attach always waits
/// in-process.
#[cfg(not(rsmld_waiter))]
mod waiter {
    use std::io;
    use std::os::unix::net::UnixStream;

    /// Never executes anything.
    pub fn exec(_conn: &UnixStream) -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "no waiter in this build")
    }
}
