//! SIGTERM and SIGINT for `rsmld serve`: a handler that only writes one byte to a pipe
//! (async-signal-safe), read by an ordinary thread that runs the graceful stop.
//!
//! A handler, not a blocked signal mask: a handled disposition goes back to the default at
//! `exec`, so handler children (and the exec guard) start exactly as in child mode.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler (-1 before [`install`]).
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one live byte. A full pipe
        // (signals faster than they are read) loses nothing: one byte is enough.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Wakes the stop as a signal would (the server's own reasons to stop, such as a lost
/// worker); nothing before [`install`].
pub fn raise() {
    on_signal(0);
}

/// Installs the handler for SIGTERM and SIGINT; the pipe end that becomes readable (one
/// byte per signal) when one arrives.
pub fn install() -> io::Result<File> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    WAKE.store(fds[1], Ordering::Relaxed);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: an all-zero sigaction is a valid empty value; the handler only calls
        // write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: fds[0] is a fresh descriptor owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fds[0]) })
}
