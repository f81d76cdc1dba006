//! The exec guard: a tiny process between rsmld and each exec handler child, so that no
//! handler process outlives rsmld, not even a SIGKILLed one.
//!
//! After a SIGKILL nothing of rsmld runs: its direct children get their parent-death
//! signal, but their descendants (the `sleep` of a shell handler, a helper that called
//! `setsid()`) are not signalled by the kernel and live on, re-parented to init. So the
//! binary does not start a handler command itself: it starts the same binary again as
//! `rsmld __exec-guard PARENT REPORT_FD -- COMMAND [ARGS...]` (a hidden subcommand that
//! the binary's entry point, `app::main`, answers with [`main`] before it parses the
//! command line, so a compiled-in processor built on `app::main` has it too), and the
//! guard starts the command.
//!
//! The guard:
//! - is a **child subreaper**, so every orphaned descendant of the handler re-parents to
//!   it, and has a **catchable parent-death signal** ([`DEATH_SIGNAL`], checked against
//!   `getppid()` so a lost race or the exit of the rsmld thread that spawned it is told
//!   apart from rsmld's death);
//! - starts the command with the guard's own stdin, stdout and stderr (inherited: nothing
//!   is copied), in the guard's process group (the guard leads it, so rsmld's group
//!   signals reach both), with the signal mask and dispositions rsmld gave the guard, and
//!   a parent-death signal of SIGKILL tied to the guard; then closes its own stdin and
//!   stdout, so rsmld sees the child's end of those pipes exactly as without a guard;
//! - reports the command's pid (or why it could not be started: the OS error) on the
//!   report pipe, so rsmld names the real child's pid in its logs and keeps its start-up
//!   error messages;
//! - then only waits for signals: SIGCHLD (reap; when the command has exited, kill what
//!   is left of its descendants and exit **with the command's status**: its exit code,
//!   or the same signal raised on itself, so rsmld's status handling and messages are
//!   unchanged), [`SWEEP_SIGNAL`] from rsmld (rsmld ends the command: SIGKILL it and
//!   every descendant, reap, exit like the command; rsmld SIGKILLs the group after
//!   [`SWEEP_GRACE`] anyway), any other signal sent by rsmld (ignored: rsmld signals the
//!   whole group, so the command got its own copy), a signal sent by a process outside
//!   the group (forwarded to the command; one from inside, such as a shell's `kill 0`,
//!   reached the command already), and rsmld's death (SIGKILL every descendant, reap, exit).
//!   So a descendant that left the group and cleared its environment (out of reach of
//!   rsmld's group kill and `RSMLD_EXEC_CHILD` tag) still dies with its command.
//!
//! It allocates little, logs nothing but one stderr line when it cannot work, and has no
//! threads. Its cost is one more `exec` per child start (see the README for numbers).
//! Ending a child takes the guard's sweep longer (milliseconds: a `/proc` walk or two),
//! at most [`SWEEP_GRACE`] before rsmld SIGKILLs the group itself.
//!
//! The parent-death signal is tied to the rsmld *thread* that spawned the guard; when
//! that thread exits the signal comes too, but `getppid()` still names rsmld, so the
//! guard carries on (a direct child with a SIGKILL parent-death signal would have died).
//!
//! Only the binary runs children under a guard ([`enable`] is called by `app::main`
//! with `/proc/self/exe`, which also works when the binary on disk was replaced). A
//! library user of the exec handler without `app::main` gets the
//! direct spawn of before (the child still has a parent-death signal; its descendants
//! do not) unless it points [`enable`] at an rsmld binary.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::reaper;

/// The hidden subcommand that runs a guard (`rsmld __exec-guard …`).
pub const SUBCOMMAND: &str = "__exec-guard";

/// The guard's parent-death signal: catchable, so the guard can clean up.
pub const DEATH_SIGNAL: libc::c_int = libc::SIGTERM;

/// rsmld's request to a guard: kill the command and every descendant, then exit.
pub const SWEEP_SIGNAL: libc::c_int = libc::SIGUSR1;

/// How long rsmld waits for a guard to carry out [`SWEEP_SIGNAL`] (it takes a `/proc`
/// walk or two, milliseconds) before it SIGKILLs the group itself.
pub const SWEEP_GRACE: Duration = Duration::from_millis(200);

/// How long rsmld waits for a guard's report (it comes after one fork and exec).
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the guard checks its parent even without a signal (a backstop only).
const PARENT_CHECK: Duration = Duration::from_secs(1);

/// The signals the guard blocks and waits for.
const HANDLED: [libc::c_int; 9] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGPIPE,
];

/// The guard program exec handlers run under, if any.
static PROGRAM: RwLock<Option<PathBuf>> = RwLock::new(None);

/// The pids of the running guards rsmld spawned and has not reaped.
static GUARDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn guards() -> MutexGuard<'static, Vec<u32>> {
    // Plain data: a panic while holding the lock cannot leave it inconsistent.
    GUARDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs every exec handler child started from now on under a guard: `program` must be
/// an rsmld binary (any program whose `main` is `app::main`); `None` goes back
/// to starting children directly. Linux only (elsewhere a no-op).
pub fn enable(program: Option<PathBuf>) {
    if cfg!(target_os = "linux") {
        *PROGRAM.write().unwrap_or_else(|e| e.into_inner()) = program;
    }
}

/// [`enable`] with this very binary (`/proc/self/exe`), if `/proc` shows it; returns
/// whether the guard is on.
pub fn enable_self() -> bool {
    let exe = Path::new("/proc/self/exe");
    let on = cfg!(target_os = "linux") && exe.exists();
    if on {
        enable(Some(exe.to_path_buf()));
    }
    on
}

/// The guard program, if children run under one.
pub fn program() -> Option<PathBuf> {
    PROGRAM.read().unwrap_or_else(|e| e.into_inner()).clone()
}

// ------------------------------------------------------------------ rsmld's side

/// Notes that `pid` is a guard (started, not yet reaped).
pub(crate) fn register(pid: u32) {
    guards().push(pid);
}

/// Forgets the guard `pid` once it is reaped.
pub(crate) fn forget(pid: u32) {
    guards().retain(|&p| p != pid);
}

/// If `pid` is a guard: sends it [`SWEEP_SIGNAL`] and returns true. The caller
/// guarantees that `pid`, a child of ours, is not reaped yet.
pub(crate) fn request_sweep(pid: u32) -> bool {
    let list = guards();
    if !list.contains(&pid) {
        return false;
    }
    // SAFETY: kill(2) has no memory effects; a registered guard is not reaped (it is
    // forgotten only after it was), so its pid is not reused.
    unsafe {
        libc::kill(pid as libc::pid_t, SWEEP_SIGNAL);
    }
    true
}

/// A guard about to be started: the report pipe.
pub(crate) struct Launch {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

/// A close-on-exec pipe: (read end, write end).
#[cfg(target_os = "linux")]
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Launch {
    /// If a guard is enabled: the command that runs `program args` under it, and the
    /// launch to finish with [`Launch::started`] once it is spawned.
    pub(crate) fn command(program: &str, args: &[String]) -> io::Result<Option<(Command, Launch)>> {
        let Some(guard) = self::program() else {
            return Ok(None);
        };
        let (read, write) = pipe()?;
        let fd = write.as_raw_fd();
        let mut cmd = Command::new(guard);
        cmd.arg0("rsmld")
            .arg(SUBCOMMAND)
            .arg(std::process::id().to_string())
            .arg(fd.to_string())
            .arg("--")
            .arg(program)
            .args(args);
        // SAFETY: fcntl is async-signal-safe; the closure allocates nothing. The write end
        // is close-on-exec in rsmld (no other child inherits it); only the guard keeps it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Some((
            cmd,
            Launch {
                read,
                write: Some(write),
            },
        )))
    }

    /// After the guard was spawned: waits for its report. The command's pid, or why it
    /// could not be started (the OS error, as a direct spawn would have reported it).
    pub(crate) fn started(mut self) -> io::Result<u32> {
        self.write.take();
        let mut buf = [0u8; 8];
        let mut got = 0;
        let deadline = Instant::now() + REPORT_TIMEOUT;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if ready == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("its exec guard did not report within {REPORT_TIMEOUT:?}"),
                ));
            }
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // SAFETY: read into the unfilled tail of `buf`, from a descriptor we own.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                )
            };
            match n {
                0 => return Err(io::Error::other("its exec guard ended before starting it")),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => got += n as usize,
            }
        }
        let (pid, errno) = decode_report(buf);
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(pid as u32)
    }
}

/// Elsewhere there is no guard ([`enable`] is a no-op).
#[cfg(not(target_os = "linux"))]
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The report: the command's pid and 0, or 0 and the errno of the failed start.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn encode_report(pid: i32, errno: i32) -> [u8; 8] {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&pid.to_le_bytes());
    buf[4..].copy_from_slice(&errno.to_le_bytes());
    buf
}

fn decode_report(buf: [u8; 8]) -> (i32, i32) {
    let [a, b, c, d, e, f, g, h] = buf;
    (
        i32::from_le_bytes([a, b, c, d]),
        i32::from_le_bytes([e, f, g, h]),
    )
}

// ------------------------------------------------------------------ the guard itself

/// The guard's arguments: `PARENT REPORT_FD -- COMMAND [ARGS...]`.
struct Args {
    parent: libc::pid_t,
    report: RawFd,
    command: Vec<OsString>,
}

fn parse(args: &[OsString]) -> Option<Args> {
    let num = |s: &OsStr| s.to_str()?.parse().ok();
    match args {
        [parent, report, dashes, command @ ..] if dashes == "--" && !command.is_empty() => {
            Some(Args {
                parent: num(parent)?,
                report: num(report)?,
                command: command.to_vec(),
            })
        }
        _ => None,
    }
}

/// `rsmld __exec-guard PARENT REPORT_FD -- COMMAND [ARGS...]` (the arguments after the
/// subcommand). Exits with the command's status.
pub fn main(args: &[OsString]) -> ExitCode {
    let Some(args) = parse(args) else {
        eprintln!("rsmld {SUBCOMMAND}: internal subcommand of the exec handler; usage: rsmld {SUBCOMMAND} PARENT_PID REPORT_FD -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    #[cfg(target_os = "linux")]
    {
        guard(args)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        eprintln!("rsmld {SUBCOMMAND}: only supported on Linux");
        ExitCode::from(2)
    }
}

#[cfg(target_os = "linux")]
/// A signal set holding `signals`.
fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it, sigaddset only adds
    // valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

#[cfg(target_os = "linux")]
fn guard(args: Args) -> ExitCode {
    // SAFETY (whole function): the guard is single-threaded; every libc call below has
    // integer or locally owned pointer arguments.
    let handled = sigset(&HANDLED);
    // SAFETY: as above: single-threaded; integer or locally owned pointer arguments.
    unsafe {
        // Blocked first: the parent-death signal must be waited for, never act by default.
        libc::sigprocmask(libc::SIG_BLOCK, &handled, std::ptr::null_mut());
        libc::fcntl(args.report, libc::F_SETFD, libc::FD_CLOEXEC);
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            DEATH_SIGNAL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
            || libc::getppid() != args.parent
        {
            // rsmld is gone already (or no death signal could be set): start nothing.
            return ExitCode::from(1);
        }
    }
    reaper::become_subreaper();
    let me = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    // SAFETY: runs in the forked child before exec; sigprocmask, signal, prctl and getppid
    // are async-signal-safe, and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // What the guard changed for itself: its mask, and the Rust runtime's ignored
            // SIGPIPE. Everything else is what rsmld set up for the command.
            let empty = sigset(&[]);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0
                || libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR
                || libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != me {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            report(args.report, 0, e.raw_os_error().unwrap_or(libc::EIO));
            return ExitCode::from(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    // Reaped below with waitpid; the handle is only a pid.
    drop(child);
    // Before the report: once rsmld knows the pid, the command's pipe ends are the only ones.
    release_stdio();
    report(args.report, pid, 0);
    watch(args.parent, pid)
}

#[cfg(target_os = "linux")]
/// Writes the report and closes the pipe (errors ignored: rsmld may be gone).
fn report(fd: RawFd, pid: i32, errno: i32) {
    let buf = encode_report(pid, errno);
    // SAFETY: write from a local buffer to the report fd, which the guard owns, then
    // close it.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
        libc::close(fd);
    }
}

#[cfg(target_os = "linux")]
/// Points the guard's stdin and stdout at /dev/null, so the command's end of those pipes
/// is the only one (rsmld sees EOF and EPIPE when the command closes them). stderr stays
/// for the guard's one line of trouble.
fn release_stdio() {
    // SAFETY: open/dup2/close on descriptors the guard owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
            if null < 0 || libc::dup2(null, fd) < 0 {
                libc::close(fd);
            }
        }
        if null > libc::STDERR_FILENO {
            libc::close(null);
        }
    }
}

/// The guard's loop: until the command has exited (then exit like it) or rsmld died
/// (then kill everything and exit).
#[cfg(target_os = "linux")]
fn watch(parent: libc::pid_t, child: libc::pid_t) -> ExitCode {
    let handled = sigset(&HANDLED);
    let timeout = libc::timespec {
        tv_sec: PARENT_CHECK.as_secs() as libc::time_t,
        tv_nsec: 0,
    };
    let mut status = None;
    loop {
        // SAFETY: siginfo_t is plain data; sigtimedwait writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for one of the blocked signals, with a timeout.
        let sig = unsafe { libc::sigtimedwait(&handled, &mut info, &timeout) };
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            // rsmld died (the death signal, or this check's backstop): nothing may remain.
            kill_everything(child, &mut status);
            return ExitCode::from(1);
        }
        if sig > 0 && sig != libc::SIGCHLD && sig != libc::SIGPIPE && status.is_none() {
            // SAFETY: si_pid is valid for signals sent by kill(2) (SI_USER), which is
            // every signal here but SIGCHLD; a kernel-sent one reads 0.
            let sender = unsafe { info.si_pid() };
            if sender == parent && sig == SWEEP_SIGNAL {
                // rsmld ends the command: everything goes, then exit like the command.
                kill_everything(child, &mut status);
                return exit_like(status.unwrap_or(libc::SIGKILL));
            }
            if forwarded(sender, parent) {
                // SAFETY: the command is not reaped yet (status is None), so its pid is
                // still ours.
                unsafe {
                    libc::kill(child, sig);
                }
            }
        }
        status = status.or_else(|| reap(child));
        if let Some(status) = status {
            // What the command left behind dies with it (rsmld would kill its group and
            // its tagged descendants anyway; this also takes those that cleared both).
            let mut status = Some(status);
            kill_everything(child, &mut status);
            return exit_like(status.unwrap_or(libc::SIGKILL));
        }
    }
}

#[cfg(target_os = "linux")]
/// Whether a signal from `sender` is meant for the command and only reached the guard:
/// not from rsmld, which signals the whole group; not from the kernel (pid 0) or a member
/// of the group, whose signals to the group reached the command already.
fn forwarded(sender: libc::pid_t, parent: libc::pid_t) -> bool {
    // SAFETY: getpgid and getpgrp only read process attributes (a sender that is gone
    // reads -1, and is forwarded to: best effort).
    sender > 0 && sender != parent && unsafe { libc::getpgid(sender) != libc::getpgrp() }
}

#[cfg(target_os = "linux")]
/// Reaps every exited child; the wait status of `child` if it was among them.
fn reap(child: libc::pid_t) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG into a local.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            return found;
        }
        if rc == child {
            found = Some(status);
        }
    }
}

#[cfg(target_os = "linux")]
/// SIGKILLs and reaps every descendant until none is left (within the reaper's
/// [`reaper::SWEEP_BOUND`]); notes the command's status if it is reaped meanwhile.
/// One stderr line if some survive.
fn kill_everything(child: libc::pid_t, status: &mut Option<libc::c_int>) {
    let deadline = Instant::now() + reaper::SWEEP_BOUND;
    loop {
        let left = reaper::kill_descendants();
        *status = status.or_else(|| reap(child));
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("rsmld {SUBCOMMAND}: {left} process(es) below the exec handler child survived SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(target_os = "linux")]
/// Exits with `status`: the same exit code, or death by the same signal (without a core
/// dump of the guard; the command dumped its own if it was to).
fn exit_like(status: libc::c_int) -> ExitCode {
    if libc::WIFEXITED(status) {
        return ExitCode::from(libc::WEXITSTATUS(status) as u8);
    }
    let sig = libc::WTERMSIG(status);
    // SAFETY: resets one disposition, unblocks that signal and sends it to ourselves;
    // single-threaded, so it is delivered before kill returns.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::signal(sig, libc::SIG_DFL);
        let set = sigset(&[sig]);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
    }
    ExitCode::from(128u8.wrapping_add(sig as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        assert_eq!(decode_report(encode_report(4242, 0)), (4242, 0));
        assert_eq!(
            decode_report(encode_report(0, libc::ENOENT)),
            (0, libc::ENOENT)
        );
    }

    #[test]
    fn arguments_parse() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let got = parse(&a(&["12", "5", "--", "sh", "-c", "x"])).unwrap();
        assert_eq!((got.parent, got.report), (12, 5));
        assert_eq!(got.command, a(&["sh", "-c", "x"]));
        for bad in [
            &["12", "5", "--"][..],
            &["12", "5", "sh"],
            &["x", "5", "--", "sh"],
            &["12"],
            &[],
        ] {
            assert!(parse(&a(bad)).is_none(), "{bad:?}");
        }
    }
}
