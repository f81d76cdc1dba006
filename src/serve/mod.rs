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
//! and their daemons restart them from their last checkpoint). A worker lost to a handler
//! call that outlives `--item-timeout` and cannot be interrupted fails every attached
//! lease at once (see `pool`) and stops the server the same way, exit 1, so that its
//! supervisor restarts it with a full pool instead of failing every new lease routed there.

pub mod fd;
pub mod hello;
pub mod signal;
pub mod watch;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Where to serve `/metrics`, the status page `/` and `/status.json`
    /// (`--metrics-listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `--grace` when not given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// serve's own flags, on top of every child-mode option ([`command`]). Read from the
/// command line only, not from `--properties` (the daemon's file is per application; the
/// server serves several).
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServeArgs {
    /// The Unix socket attaches connect to (created owner-only, 0600; a stale one is
    /// replaced, a live one refused).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// A user besides the server's own that may attach (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// How long attached leases may take to end under their daemons' control after
    /// SIGTERM; then they are abandoned and the server exits (a duration: 30s, 2m;
    /// 0s..=1d).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_grace)]
    pub grace: Duration,
    /// Serves /metrics, the status page / and /status.json on this address (host:port).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    crate::cli::units::parse_seconds_in(s, 0.0, 86_400.0, true)
}

impl From<ServeArgs> for ServeOptions {
    fn from(a: ServeArgs) -> Self {
        ServeOptions {
            socket: a.socket,
            allow_uids: a.allow_uid,
            grace: a.grace,
            metrics_listen: a.metrics_listen,
        }
    }
}

/// `rsmld serve`'s command line: `program`'s child-mode options (its tools hidden and
/// refused) with [`ServeArgs`].
pub fn command(program: &crate::cli::program::Program) -> clap::Command {
    let cmd = program.command();
    let tools: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let mut cmd = <ServeArgs as clap::Args>::augment_args(cmd);
    for tool in tools {
        cmd = cmd.mut_subcommand(tool, |c| c.hide(true));
    }
    let name = program.name();
    cmd.name("serve")
        .bin_name(format!("{name} serve"))
        .disable_help_subcommand(true)
        .about("Serves every lease of this host: one worker pool and one handler per worker for every `rsmld attach`.")
}

/// Parses `argv` (program name first, `serve` removed) as `rsmld serve`'s command line,
/// `--properties` included: child mode's options and serve's own.
pub fn parse(
    program: &crate::cli::program::Program,
    argv: Vec<String>,
) -> anyhow::Result<(crate::cli::config::Cli, ServeOptions)> {
    let (cli, matches) = program.parse_with_properties_in(&command(program), argv)?;
    let args = <ServeArgs as clap::FromArgMatches>::from_arg_matches(&matches)?;
    Ok((cli, args.into()))
}

/// A socket serve cannot listen on.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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

/// Told each attach's hello before its lease runs (`Some`), and `None` once it ended: the
/// server's log names the lease's stream in its start line.
pub type AttachHook = Arc<dyn Fn(u64, Option<&Hello>) + Send + Sync>;

/// How long lease threads get to end once abandoned after the grace period.
const ABANDON_WAIT: Duration = Duration::from_secs(10);

/// How a server stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Every lease ended within the grace period.
    pub drained: bool,
    /// Workers lost to handler calls that could not be interrupted (the server stopped
    /// itself, as on SIGTERM: it cannot serve the keys routed to them again).
    pub workers_lost: usize,
}

/// How often the server checks its pool for lost workers.
const HEALTH_EVERY: Duration = Duration::from_millis(200);

/// Accepts attaches, each lease on its own thread, until SIGTERM or SIGINT or a lost
/// worker (see the module docs), then stops the runtime ([`Runtime::shutdown`]: handlers
/// closed, workers joined within their bound).
pub fn serve(
    listener: UnixListener,
    runtime: Runtime,
    options: &ServeOptions,
    hook: AttachHook,
) -> io::Result<Stopped> {
    let wake = signal::install()?;
    let state = Arc::new(State {
        stopping: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        stop: watch::Stop::new()?,
        attaches: AtomicU64::new(0),
    });
    let runtime = Arc::new(runtime);
    let allowed: Arc<[u32]> = options.allow_uids.clone().into();
    let accept = {
        let (runtime, state) = (runtime.clone(), state.clone());
        std::thread::Builder::new()
            .name("rsmld-accept".into())
            .spawn(move || accept_loop(listener, runtime, allowed, state, hook))?
    };
    let health = {
        let (runtime, state) = (runtime.clone(), state.clone());
        std::thread::Builder::new()
            .name("rsmld-health".into())
            .spawn(move || watch_health(&runtime, &state))?
    };
    let drained = stop_on_signal(wake, &state, &options.socket, options.grace);
    state.stopping.store(true, Ordering::SeqCst);
    // A worker lost during the grace period (the health thread stops with the stop) counts
    // too: the exit is then 1, whatever the leases did.
    let workers_lost = health.join().unwrap_or(0).max(runtime.lost_workers());
    // Ends the accept loop, and every lease still attached (their attaches exit 1, their
    // daemons restart them from their last checkpoint).
    state.stop.fire();
    let _ = accept.join();
    if !wait_for(ABANDON_WAIT, || state.active.load(Ordering::SeqCst) == 0) {
        log::warn!("lease threads still running {ABANDON_WAIT:?} after they were abandoned");
    }
    // The lease threads drop their handles as they end: wait for the last, then stop the
    // workers within their bound.
    let mut runtime = runtime;
    let deadline = Instant::now() + ABANDON_WAIT;
    loop {
        match Arc::try_unwrap(runtime) {
            Ok(rt) => {
                if let Err(e) = rt.shutdown() {
                    log::error!("{e}");
                }
                break;
            }
            Err(shared) if Instant::now() < deadline => {
                runtime = shared;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                log::warn!("a lease still holds the runtime: exiting without its shutdown");
                break;
            }
        }
    }
    Ok(Stopped {
        drained,
        workers_lost,
    })
}

/// Until the server stops: a lost worker stops it as SIGTERM does (its leases have
/// failed, and any lease routed to that worker would fail again), so that its supervisor
/// restarts it with a full pool. How many workers were lost.
fn watch_health(runtime: &Runtime, state: &State) -> usize {
    while !state.stopping.load(Ordering::SeqCst) {
        let lost = runtime.lost_workers();
        if lost > 0 {
            log::error!(
                "{lost} worker(s) lost to a handler call that outlived --item-timeout and \
                 could not be interrupted: stopping the server, so that its supervisor \
                 restarts it with a full pool"
            );
            signal::raise();
            return lost;
        }
        std::thread::sleep(HEALTH_EVERY);
    }
    0
}

/// Polls `done` every 20 ms until it holds or `limit` passed; whether it held.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the accept loop, the leases and the stop share.
struct State {
    /// SIGTERM came: no new lease.
    stopping: AtomicBool,
    /// Leases attached now.
    active: AtomicUsize,
    /// Fired once the grace period is over: the accept loop and every lease end.
    stop: watch::Stop,
    /// Attaches so far: each lease's serial (`LeaseId::serial`).
    attaches: AtomicU64,
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
    hook: AttachHook,
) {
    use std::os::fd::AsRawFd;
    loop {
        match watch::wait_readable(&[listener.as_raw_fd(), state.stop.fd()], -1) {
            Ok(ready) if ready[1] => return,
            Ok(_) => {}
            Err(e) => {
                log::error!("waiting for attaches: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut conn = match listener.accept() {
            Ok((c, _)) => c,
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
        let hook = hook.clone();
        let spawned = std::thread::Builder::new()
            .name("rsmld-lease".into())
            .spawn(move || {
                // Dropped in reverse order: the runtime before the count, so that no
                // lease holds it once none is counted.
                let _attached = attached;
                let runtime = runtime;
                let serial = _attached.0.attaches.fetch_add(1, Ordering::SeqCst) + 1;
                serve_one(
                    conn,
                    &runtime,
                    &allowed,
                    _attached.0.stop.fd(),
                    serial,
                    &hook,
                );
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
    log::info!(
        "stopping: no new attaches; waiting up to {grace:?} for {} attached lease(s)",
        state.active.load(Ordering::SeqCst)
    );
    if wait_for(grace, || state.active.load(Ordering::SeqCst) == 0) {
        log::info!("stopped: every lease ended");
        return true;
    }
    let left = state.active.load(Ordering::SeqCst);
    log::warn!("stopping with {left} lease(s) still attached after {grace:?}: abandoning them");
    false
}

/// How long an attach has to send its hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Exit status: the lease ended well.
const STATUS_OK: u8 = 0;

/// One attach: credentials, hello, the lease, its status.
fn serve_one(
    mut conn: UnixStream,
    runtime: &Runtime,
    allowed: &[u32],
    stop: RawFd,
    serial: u64,
    hook: &AttachHook,
) {
    // A peer that connects and says nothing holds no thread for long. Nothing else is
    // read from the socket after the hello: the lease's input watches it for the
    // attach's end ([`watch`]).
    let _ = conn.set_read_timeout(Some(HELLO_TIMEOUT));
    let status = match accept_lease(&conn, allowed) {
        Err(e) => {
            log::error!("refused an attach: {e}");
            crate::app::EXIT_USAGE
        }
        Ok((hello, input, output)) => {
            // As child mode does with its stdin: a multi-MiB line crosses in a few writes.
            if let Some(size) = crate::sys::enlarge_pipe(input.as_fd(), 4 << 20) {
                log::debug!("lease input pipe enlarged to {size} bytes");
            }
            match conn.try_clone() {
                Err(e) => {
                    log::error!("refused an attach: {e}");
                    crate::app::EXIT_FAILURE
                }
                Ok(watched) => {
                    log::info!(
                        "attach {serial}: application {:?}, stream {:?}",
                        hello.application,
                        hello.stream
                    );
                    let input = watch::WatchedInput::new(input, watched, stop);
                    hook(serial, Some(&hello));
                    let result =
                        runtime.run_lease_attached(&hello.application, serial, input, output);
                    hook(serial, None);
                    lease_status(&hello.application, &result)
                }
            }
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
