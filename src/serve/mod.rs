//! `rsmld serve`: one process per host, one runtime (one worker pool, one handler per
//! worker) shared by every lease whose `rsmld attach` connects.
//!
//! The server listens on a Unix socket created owner-only (0600). Each connection is one
//! lease on its own thread: the server checks the peer's user (SO_PEERCRED: the server's
//! own user, or one of `--allow-uid`), reads the hello with the daemon's stdin and stdout
//! attached ([`hello`], [`fd`]), runs the lease on those pipes
//! ([`Runtime::run_lease_for`], named by application and shard), and answers one byte: the
//! lease's exit status. A lease that fails ends only that lease; the others keep going.
//!
//! Start-up refuses a socket path where a server already answers, removes a stale socket
//! (nothing answers), and refuses a path that is not a socket. The server runs in the
//! foreground until SIGTERM (or SIGINT): then it removes its socket (no new attach can
//! connect; one that does in the race is refused), lets the attached leases end under
//! their daemons' control for `--grace` (30 s by default), and exits: 0 when every lease
//! ended, 1 when some were still attached (their attaches exit 1 as the socket closes,
//! and their daemons restart them from their last checkpoint).

pub mod fd;
pub mod hello;
pub mod signal;

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lease::LeaseError;
use crate::runtime::Runtime;
use hello::{Hello, HelloError, MAX_HELLO};

/// What `rsmld serve` takes besides child mode's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// The socket path (`--socket`).
    pub socket: PathBuf,
    /// Users besides the server's own that may attach (`--allow-uid`, repeatable).
    pub allow_uids: Vec<u32>,
    /// How long attached leases may take to end after SIGTERM (`--grace`).
    pub grace: Duration,
    /// Where to serve metrics and the status page (`--metrics-listen ADDR`).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `--grace` when not given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A serve command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `--socket` missing, or a flag of serve without its value.
    #[error("{0}")]
    Usage(String),
    /// A server already answers on the path.
    #[error("a server already answers on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    /// Creating the socket failed.
    #[error("cannot listen on {path}: {error}")]
    Listen {
        /// The path.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

/// Splits serve's own flags (`--socket PATH`, `--allow-uid UID`, `--grace DURATION`, also
/// as `--flag=value`)
/// out of `args` (the arguments after `serve`); the rest are child mode's options.
pub fn split_args(args: &[String]) -> Result<(ServeOptions, Vec<String>), ServeError> {
    let mut socket = None;
    let mut allow_uids = Vec::new();
    let mut grace = DEFAULT_GRACE;
    let mut metrics_listen = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a.clone());
            rest.extend(it.by_ref().cloned());
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        if !["--socket", "--allow-uid", "--grace", "--metrics-listen"].contains(&flag) {
            rest.push(a.clone());
            continue;
        }
        let value = match inline.or_else(|| it.next().cloned()) {
            Some(v) => v,
            None => return Err(ServeError::Usage(format!("{flag} needs a value"))),
        };
        if flag == "--socket" {
            socket = Some(PathBuf::from(value));
        } else if flag == "--metrics-listen" {
            metrics_listen = Some(value.parse().map_err(|_| {
                ServeError::Usage(format!("--metrics-listen {value:?}: not HOST:PORT"))
            })?);
        } else if flag == "--grace" {
            grace = crate::cli::units::parse_seconds_in(&value, 0.0, 86_400.0, true)
                .map_err(|e| ServeError::Usage(format!("--grace {value:?}: {e}")))?;
        } else {
            let uid = value
                .parse()
                .map_err(|_| ServeError::Usage(format!("--allow-uid {value:?}: not a user id")))?;
            allow_uids.push(uid);
        }
    }
    let socket = socket.ok_or_else(|| ServeError::Usage("serve needs --socket PATH".into()))?;
    Ok((
        ServeOptions {
            socket,
            allow_uids,
            grace,
            metrics_listen,
        },
        rest,
    ))
}

/// Creates the listening socket at `path`, owner-only (see the module docs for what an
/// existing path does).
pub fn listen(path: &Path) -> Result<UnixListener, ServeError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket(path.to_owned()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        log::info!("removing stale socket {}", path.display());
        let _ = std::fs::remove_file(path);
    }
    let listen_error = |error| ServeError::Listen {
        path: path.to_owned(),
        error,
    };
    // Owner-only from the start: the umask covers the window between bind and chmod.
    // SAFETY: umask only swaps the process's creation mask; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(listen_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_error)?;
    Ok(listener)
}

/// Accepts attaches, each lease on its own thread, until SIGTERM or SIGINT (see the
/// module docs); returns whether every lease ended within the grace period.
pub fn serve(
    listener: UnixListener,
    runtime: Arc<Runtime>,
    options: &ServeOptions,
) -> io::Result<bool> {
    let wake = signal::install()?;
    let state = Arc::new(State::default());
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    {
        let state = state.clone();
        let (socket, grace) = (options.socket.clone(), options.grace);
        std::thread::Builder::new()
            .name("rsmld-stop".into())
            .spawn(move || {
                let _ = done_tx.send(stop_on_signal(wake, &state, &socket, grace));
            })?;
    }
    let allowed: Arc<[u32]> = options.allow_uids.clone().into();
    std::thread::Builder::new()
        .name("rsmld-accept".into())
        .spawn(move || accept_loop(listener, runtime, allowed, state))?;
    // Invariant: the stop thread sends exactly once; a closed channel (it panicked) counts
    // as leases left behind.
    Ok(done_rx.recv().unwrap_or(false))
}

/// What the accept loop and the stop share.
#[derive(Default)]
struct State {
    /// SIGTERM came: no new lease.
    stopping: AtomicBool,
    /// Leases attached now.
    active: AtomicUsize,
}

/// Counts one lease as attached while it lives.
struct Attached(Arc<State>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: UnixListener,
    runtime: Arc<Runtime>,
    allowed: Arc<[u32]>,
    state: Arc<State>,
) {
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors, say: this one is lost, the next may work.
                log::error!("accepting an attach: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        state.active.fetch_add(1, Ordering::SeqCst);
        let attached = Attached(state.clone());
        if state.stopping.load(Ordering::SeqCst) {
            log::warn!("refused an attach: the server is stopping");
            let _ = conn.write_all(&[crate::app::EXIT_FAILURE]);
            continue;
        }
        let runtime = runtime.clone();
        let allowed = allowed.clone();
        let spawned = std::thread::Builder::new()
            .name("rsmld-lease".into())
            .spawn(move || {
                let _attached = attached;
                serve_one(conn, &runtime, &allowed)
            });
        if let Err(e) = spawned {
            log::error!("cannot start a lease thread: {e}");
        }
    }
}

/// Waits for a signal, then for the attached leases (at most `grace`); whether all ended.
fn stop_on_signal(mut wake: File, state: &State, socket: &Path, grace: Duration) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match io::Read::read(&mut wake, &mut byte) {
            Ok(1) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The pipe cannot close while this process holds its write end.
            _ => return false,
        }
    }
    state.stopping.store(true, Ordering::SeqCst);
    let _ = std::fs::remove_file(socket);
    let deadline = Instant::now() + grace;
    log::info!(
        "stopping: no new attaches; waiting up to {grace:?} for {} attached lease(s)",
        state.active.load(Ordering::SeqCst)
    );
    loop {
        let left = state.active.load(Ordering::SeqCst);
        if left == 0 {
            log::info!("stopped: every lease ended");
            return true;
        }
        if Instant::now() >= deadline {
            log::warn!("stopping with {left} lease(s) still attached after {grace:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long an attach has to send its hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Exit status: the lease ended well.
const STATUS_OK: u8 = 0;

/// One attach: credentials, hello, the lease, its status.
fn serve_one(mut conn: UnixStream, runtime: &Runtime, allowed: &[u32]) {
    // A peer that connects and says nothing holds no thread for long. Nothing else is
    // read from the socket after the hello.
    let _ = conn.set_read_timeout(Some(HELLO_TIMEOUT));
    let status = match accept_lease(&conn, allowed) {
        Err(e) => {
            log::error!("refused an attach: {e}");
            crate::app::EXIT_USAGE
        }
        Ok((hello, input, output)) => {
            let result = runtime.run_lease_for(&hello.application, input, output);
            lease_status(&hello.application, &result)
        }
    };
    // The attach may be gone (the daemon killed it): nothing more to tell.
    let _ = conn.write_all(&[status]);
}

/// The exit status of a lease's result (README, *Exit codes*), logged when not 0.
fn lease_status(
    application: &str,
    result: &Result<crate::protocol::session::Stats, LeaseError>,
) -> u8 {
    match result {
        Ok(stats) => {
            log::info!(
                "lease of {application:?} ended: {} records, {} items, {} checkpoints",
                stats.records,
                stats.items,
                stats.checkpoints
            );
            STATUS_OK
        }
        Err(e) => {
            log::error!("lease of {application:?} failed: {e}");
            if e.is_protocol_violation() {
                crate::app::EXIT_PROTOCOL
            } else {
                crate::app::EXIT_FAILURE
            }
        }
    }
}

/// Why an attach was refused.
#[derive(Debug, thiserror::Error)]
enum AttachRefused {
    #[error("peer uid {0} is not this server's user (--allow-uid to admit it)")]
    Uid(u32),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Hello(#[from] HelloError),
    #[error("the hello came with {0} descriptors, not stdin and stdout")]
    Fds(usize),
    #[error("the attach closed before its hello")]
    Closed,
}

/// Checks the peer and reads its hello and its two descriptors.
fn accept_lease(conn: &UnixStream, allowed: &[u32]) -> Result<(Hello, File, File), AttachRefused> {
    let uid = fd::peer_uid(conn)?;
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 512];
    while !line.contains(&b'\n') {
        let (n, got) = fd::recv_with_fds(conn, &mut buf)?;
        if n == 0 {
            return Err(AttachRefused::Closed);
        }
        fds.extend(got);
        line.extend_from_slice(&buf[..n]);
        if line.len() > MAX_HELLO {
            return Err(HelloError::TooLong.into());
        }
    }
    // Refused after its hello (bounded, and its descriptors closed unused): the attach has
    // finished sending, so it reads the refusal instead of a broken pipe.
    if uid != fd::own_uid() && !allowed.contains(&uid) {
        return Err(AttachRefused::Uid(uid));
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let hello = Hello::decode(&line[..end])?;
    if fds.len() != 2 {
        return Err(AttachRefused::Fds(fds.len()));
    }
    let output = File::from(fds.remove(1));
    let input = File::from(fds.remove(0));
    Ok((hello, input, output))
}
