//! A lease's input that also watches its attach and the server's stop.
//!
//! The daemon's stdin pipe alone does not tell the server that an attach died: a daemon
//! that kills its child (SIGKILL) may keep its ends of the pipes open, so the lease would
//! run on for nobody. Hence each read of the pipe waits (`poll`) on three descriptors at
//! once: the pipe, the attach's connection (the attach never writes after its hello, so
//! anything there, readable EOF or hang-up, means it is gone) and the server's stop pipe
//! (readable once the grace period is over). Either of the last two makes the read fail:
//! the lease stops with that error, its queued items are dropped and nothing past its
//! processed work is checkpointed (the same path as any failed lease), and its thread ends.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The server's stop: once [`Stop::fire`]d, every [`WatchedInput`] fails its reads and the
/// accept loop ends.
pub struct Stop {
    read: OwnedFd,
    write: File,
}

impl Stop {
    /// A stop not fired yet.
    pub fn new() -> io::Result<Stop> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fresh descriptors owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        Ok(Stop { read, write })
    }

    /// Fires the stop: the pipe stays readable (its byte is never read).
    pub fn fire(&self) {
        let _ = io::Write::write_all(&mut &self.write, &[1]);
    }

    /// The descriptor that becomes readable when fired.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Whether it was fired.
    pub fn fired(&self) -> bool {
        wait_readable(&[self.fd()], 0).is_ok_and(|r| r[0])
    }
}

/// Polls `fds` for input (or hang-up) for at most `timeout_ms` (-1: no limit); which are
/// ready.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `polls` is a live array of `polls.len()` pollfd values.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            return Ok(polls.iter().map(|p| p.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The daemon's stdin as a lease's input, failing once the attach is gone or the server
/// stops (module docs).
pub struct WatchedInput {
    pipe: File,
    conn: UnixStream,
    stop: RawFd,
}

impl WatchedInput {
    /// Reads `pipe`, watching `conn` (the attach's connection, a clone of it) and `stop`
    /// (the [`Stop::fd`] of a stop that outlives this input).
    pub fn new(pipe: File, conn: UnixStream, stop: RawFd) -> WatchedInput {
        WatchedInput { pipe, conn, stop }
    }
}

/// Why a [`WatchedInput`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Watched {
    /// The attach's connection closed (it was killed, or exited).
    #[error("the attach went away (its connection closed); the lease is abandoned")]
    AttachGone,
    /// The grace period after SIGTERM ended.
    #[error("the server is stopping (grace period over); the lease is abandoned")]
    Stopping,
}

impl Read for WatchedInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ready = wait_readable(
            &[self.pipe.as_raw_fd(), self.conn.as_raw_fd(), self.stop],
            -1,
        )?;
        // The attach and the stop first: a daemon still writing must not keep a lease
        // alive that nobody waits for.
        if ready[2] {
            return Err(io::Error::other(Watched::Stopping));
        }
        if ready[1] {
            return Err(io::Error::other(Watched::AttachGone));
        }
        self.pipe.read(buf)
    }
}
