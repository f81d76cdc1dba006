//! No handler process outlives rsmld: child-subreaper set-up, reaping of orphans, and the
//! final sweep of every remaining descendant.
//!
//! The exec handler kills each child's process group when it ends it, and children get a
//! parent-death signal. That leaves the descendants that
//! leave the group: a grandchild that calls `setsid()` or double-forks into a new group.
//! Normally such a process re-parents to init and lives on. So the binary (only the
//! binary: a library user's process is not ours to change) makes rsmld a *child
//! subreaper* at start-up ([`become_subreaper`]): orphaned descendants re-parent to rsmld
//! instead, which keeps them visible as rsmld's children in `/proc`.
//!
//! When the exec handler ends a child it also kills the descendants that carry the
//! child's tag in their environment ([`kill_tagged`], [`super::tag`]), so a replaced child's escaped
//! helpers do not pile up while rsmld runs.
//!
//! Two consequences:
//! - Orphans that die become rsmld's zombies. [`reap_orphans`] (called after an exec
//!   child is reaped, and at most once a second before a batch) waits for every zombie
//!   child that is not an exec child still owned by its handler (those are in the
//!   registry kept by [`spawn_managed`] / [`release`], so that their `Child::wait`
//!   still sees their status).
//! - Before exit, [`sweep`] SIGKILLs every descendant left (walking `/proc` for the
//!   processes whose parent chain reaches rsmld), reaps them, and repeats until none is
//!   left (killing a process re-parents its children to us), within a bound.
//!
//! What rsmld cannot do itself: after a SIGKILL of rsmld nothing of rsmld runs, and the
//! kernel signals only its direct children (by their parent-death signal), not their
//! descendants. That is the exec guard's job (the module above this one): under the binary each
//! exec child runs below a guard process, itself a subreaper of the child's descendants
//! with a catchable parent-death signal, which kills and reaps its whole subtree
//! ([`kill_descendants`], run in the guard) when rsmld dies, when rsmld ends the child
//! and when the child has exited, then exits.

use std::collections::{HashMap, HashSet};
use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Whether [`become_subreaper`] succeeded (orphans only re-parent to us then).
static SUBREAPER: AtomicBool = AtomicBool::new(false);
/// Milliseconds since the Unix epoch of the last [`reap_orphans_now_and_then`] scan.
static LAST_SCAN_MS: AtomicU64 = AtomicU64::new(0);
/// Exec children whose handler will reap them (pids).
static MANAGED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// How long [`sweep`] keeps killing and reaping before it gives up.
pub const SWEEP_BOUND: Duration = Duration::from_secs(2);

fn managed() -> MutexGuard<'static, Option<HashSet<u32>>> {
    // Plain data: a panic while holding the lock cannot leave it inconsistent.
    MANAGED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper (Linux; elsewhere a no-op returning false).
pub fn become_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only changes this process's attributes.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        let ok = rc == 0;
        SUBREAPER.store(ok, Ordering::SeqCst);
        ok
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Spawns `cmd` and registers the child as managed (its handler reaps it), under the
/// registry lock, so [`reap_orphans`] can never take its exit status first.
pub fn spawn_managed(cmd: &mut Command) -> io::Result<Child> {
    let mut set = managed();
    let child = cmd.spawn()?;
    set.get_or_insert_with(HashSet::new).insert(child.id());
    Ok(child)
}

/// Forgets a managed child once its handler has reaped it.
pub fn release(pid: u32) {
    if let Some(set) = managed().as_mut() {
        set.remove(&pid);
    }
}

/// One process of the `/proc` table: (pid, parent pid, state letter).
fn processes() -> Vec<(u32, u32, u8)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let pid: u32 = name.to_str()?.parse().ok()?;
        let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) S ppid …`; comm may hold spaces and parentheses: cut at the last ')'.
        let close = stat.iter().rposition(|&b| b == b')')?;
        let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.bytes().next()?;
        let ppid: u32 = fields.next()?.parse().ok()?;
        Some((pid, ppid, state))
    })
    .collect()
}

/// Waits for every zombie child of ours that no handler owns. Does nothing unless this
/// process is a subreaper (without it, orphans are init's).
pub fn reap_orphans() {
    if !SUBREAPER.load(Ordering::SeqCst) {
        return;
    }
    let me = std::process::id();
    let set = managed();
    for (pid, ppid, state) in processes() {
        let owned = set.as_ref().is_some_and(|s| s.contains(&pid));
        if ppid == me && state == b'Z' && !owned {
            // SAFETY: waitpid on a zombie child of ours that no Child handle owns.
            unsafe {
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

/// [`reap_orphans`], at most once a second (a `/proc` scan is not free).
pub fn reap_orphans_now_and_then() {
    if !SUBREAPER.load(Ordering::SeqCst) {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_SCAN_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 1000
        && LAST_SCAN_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        reap_orphans();
    }
}

/// Every live descendant of this process (zombies excluded: they are only reaped).
fn descendants() -> Vec<u32> {
    let me = std::process::id();
    let table = processes();
    let mut children: HashMap<u32, Vec<(u32, u8)>> = HashMap::new();
    for (pid, ppid, state) in table {
        children.entry(ppid).or_default().push((pid, state));
    }
    let mut found = Vec::new();
    let mut stack = vec![me];
    while let Some(p) = stack.pop() {
        for &(c, state) in children.get(&p).into_iter().flatten() {
            if c != me {
                if state != b'Z' {
                    found.push(c);
                }
                stack.push(c);
            }
        }
    }
    found
}

/// SIGKILLs every live descendant of this process whose environment holds `key=value`
/// (the exec handler tags each child with [`super::tag`], and so all its descendants that keep their
/// environment, to end those that left its process group when it ends the child; with
/// the subreaper they are still our descendants). Returns how many it signalled.
pub fn kill_tagged(key: &str, value: &str) -> usize {
    let needle = format!("{key}={value}");
    let mut killed = 0;
    for pid in descendants() {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            // SAFETY: kill(2) has no memory effects; `pid` is a live descendant seen just
            // now (see `sweep` on why its id is not reused meanwhile).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

/// SIGKILLs every live descendant of this process once (no reaping: see [`sweep`]);
/// returns how many it signalled.
pub fn kill_descendants() -> usize {
    let left = descendants();
    for &pid in &left {
        // SAFETY: as in `sweep`: `pid` is a descendant seen just now.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    left.len()
}

/// Kills and reaps every descendant still running, until none is left or
/// [`SWEEP_BOUND`] passes; returns how many processes it killed. Call it last, when no
/// handler uses its children any more: it also reaps managed children.
pub fn sweep() -> usize {
    let deadline = Instant::now() + SWEEP_BOUND;
    let mut killed = HashSet::new();
    loop {
        let left = descendants();
        for &pid in &left {
            // SAFETY: kill(2) has no memory effects; `pid` is a descendant seen just now.
            // (A descendant is either our child, so its pid cannot be reused before we
            // reap it, or a deeper one whose parent is alive or was ours.)
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            killed.insert(pid);
        }
        reap_all();
        if left.is_empty() || Instant::now() >= deadline {
            if !left.is_empty() {
                log::error!(
                    "{} descendant process(es) still alive after {} ms of SIGKILL: {left:?}",
                    left.len(),
                    SWEEP_BOUND.as_millis()
                );
            }
            return killed.len();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reaps every child that has exited, without blocking.
fn reap_all() {
    loop {
        // SAFETY: waitpid with WNOHANG; the status pointer may be null.
        let rc = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if rc <= 0 {
            break;
        }
        release(rc as u32);
    }
}
