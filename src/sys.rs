//! Process-level set-up that only the binary does: the stdout guard and signal policy.
//!
//! **Stdout guard.** The daemon reads our stdout as the protocol; a stray `print` from a
//! handler, a library or a child process that inherits fd 1 would be read as (or glued
//! onto) a protocol line. At start-up rsmld moves the protocol to a private duplicate of
//! fd 1 (close-on-exec, so children never inherit it) and points fd 1 at stderr. From then
//! on only the protocol writer can reach the daemon's pipe.
//!
//! **Signals.** Ctrl-C, a closing terminal or a service manager signals the whole process
//! group, the daemon's children included. Shutdown is the daemon's job
//! (`shutdownRequested`, `leaseLost`, then stdin EOF): a child killed by the same
//! SIGINT/SIGTERM/SIGHUP makes the daemon see EOF mid-protocol and exit 1. So rsmld
//! ignores SIGINT, SIGTERM and SIGHUP and exits on stdin EOF; SIGKILL still works.
//! SIGPIPE and SIGXFSZ are ignored so that the faults they report become errors of the
//! call that caused them, with a message: a vanished daemon is a write error on the
//! protocol, and a write past the file size limit (RLIMIT_FSIZE, `ulimit -f`) fails with
//! EFBIG and fails its batch, instead of killing rsmld without a word.
//!
//! Ignored dispositions survive `exec`: whoever spawns a child process must reset
//! [`IGNORED_SIGNALS`] to their defaults in the child.
//!
//! Plain `libc::signal(SIG_IGN)` rather than `signal-hook`: rsmld handles no signal, it only
//! ignores them, and SIG_IGN is what makes the kernel drop them (and turn SIGPIPE and SIGXFSZ
//! into EPIPE and EFBIG). `signal-hook` registers handlers, which would run code (or a
//! thread and a pipe) for signals rsmld throws away; the reset in a child runs between
//! `fork` and `exec`, where only raw async-signal-safe calls belong; and `libc` stays a
//! dependency for the file-system calls anyway.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Duplicates fd 1 into a private close-on-exec fd for the protocol, then points fd 1 at
/// fd 2. Returns the protocol output.
pub fn guard_stdout() -> io::Result<File> {
    #[expect(clippy::disallowed_methods, reason = "the protocol's own descriptor")]
    let private: OwnedFd = io::stdout().as_fd().try_clone_to_owned()?;
    // SAFETY: dup2 on two valid descriptors; fd 1 is replaced atomically by a copy of fd 2.
    let rc = unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(private))
}

/// Enlarges the pipe on stdin (best effort): a `processRecords` line of several MiB then
/// crosses it in a few large writes instead of dozens of 64 KiB hand-offs between the
/// daemon's writer and our reader, each a context switch. Returns the new size, if any.
pub fn enlarge_stdin_pipe(bytes: usize) -> Option<usize> {
    // SAFETY: fd 0 stays open for the whole process; the borrow ends in this call.
    enlarge_pipe(unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) }, bytes)
}

/// [`enlarge_stdin_pipe`] for any pipe (a server's lease input, received from its attach).
pub fn enlarge_pipe(fd: BorrowedFd<'_>, bytes: usize) -> Option<usize> {
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    let want = bytes.min(max) as libc::c_int;
    // SAFETY: fcntl on a borrowed open descriptor with an integer argument; fails
    // harmlessly on non-pipes.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    (rc > 0).then_some(rc as usize)
}

/// Fixes glibc's mmap threshold at 4 MiB. By default glibc raises the threshold to the
/// size of the largest block freed, so multi-MiB daemon lines end up on the heap, where
/// lines of slightly different sizes fragment it and resident memory grows with every
/// batch. With a fixed threshold a line above 4 MiB is mapped and unmapped on its own;
/// smaller line buffers are recycled by the reader instead.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with a documented parameter, before other threads allocate much.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Caps glibc's malloc arenas at one per CPU, for a host server. glibc gives each thread
/// that allocates under contention an arena of its own, up to eight per CPU; a server runs
/// two threads per lease (its loop and its reader), so with many leases each arena keeps
/// its own free memory and the server's resident set grows with the lease count rather
/// than with what is in use (about 6 MiB of 47 at 16 leases). One arena per CPU keeps the
/// contention that arenas exist for low: no more threads than CPUs allocate at once.
pub fn cap_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let arenas = libc::c_int::try_from(cpus).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt with a documented parameter, before other threads allocate much.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// The signals rsmld ignores (see the module docs).
pub const IGNORED_SIGNALS: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGXFSZ,
];

/// Ignores [`IGNORED_SIGNALS`]: SIGINT, SIGTERM and SIGHUP (shutdown is the daemon's),
/// SIGPIPE and SIGXFSZ (their faults become write errors; see the module docs).
pub fn ignore_termination_signals() {
    for sig in IGNORED_SIGNALS {
        // SAFETY: installing SIG_IGN has no handler code to run and is async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}
