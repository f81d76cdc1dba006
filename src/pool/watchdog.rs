//! The watchdog (`--item-timeout`): one thread watching every worker's handler call.
//!
//! A worker marks the start of each handler call (and its lease) in its [`Watch`]; the
//! watchdog looks every quarter of the timeout. A call past the timeout is interrupted
//! once through the handler's interrupter (the exec handler kills its child; the call
//! then fails and the failure policy decides). A handler without an interrupter cannot be
//! taken back: the timeout fails the lease of the call, and the worker is *lost* — its
//! thread is stuck, so every block queued on it or held by it (of any lease) would wait
//! forever. The watchdog therefore drains a lost worker's channel on every tick, failing
//! the lease of each block it finds (naming its items), then fails every other live lease
//! of the pool (the stuck thread's own queues are out of reach), and dispatch refuses to
//! send to a lost worker. With one lease
//! (child mode) that is what it always was: the lease fails and rsmld exits non-zero.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{LeaseState, Msg, PoolError};
use crate::handler::{Interrupt, Interrupter};

/// The watchdog's view of one worker.
pub(crate) struct Watch {
    /// Milliseconds since the epoch + 1 when the current handler call started; 0 = idle.
    busy_since: AtomicU64,
    /// The lease of the current call.
    lease: Mutex<Option<Arc<LeaseState>>>,
    /// The worker is stuck in a call that cannot be interrupted.
    lost: AtomicBool,
    interrupter: Option<Interrupter>,
}

impl Watch {
    pub(crate) fn new(interrupter: Option<Interrupter>) -> Watch {
        Watch {
            busy_since: AtomicU64::new(0),
            lease: Mutex::new(None),
            lost: AtomicBool::new(false),
            interrupter,
        }
    }

    /// A handler call for `lease` starts now (`start`: ms since the epoch + 1).
    ///
    /// `busy_since` changes only under the `lease` lock, so the watchdog, which acts under
    /// the same lock after checking the value again, always acts on the call it timed: a
    /// call that ended meanwhile, or the next one (of another lease, perhaps), is never
    /// interrupted or failed for it.
    pub(crate) fn begin(&self, start: u64, lease: &Arc<LeaseState>) {
        let mut current = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        *current = Some(lease.clone());
        self.busy_since.store(start, Ordering::SeqCst);
    }

    /// The call ended.
    pub(crate) fn end(&self) {
        let mut current = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        self.busy_since.store(0, Ordering::SeqCst);
        current.take();
    }

    /// The worker cannot take work any more (stuck, or its thread died).
    pub(crate) fn set_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// The worker cannot take work any more.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub(crate) fn interrupter(&self) -> Option<&Interrupter> {
        self.interrupter.as_ref()
    }
}

/// Starts the watchdog thread.
pub(crate) fn spawn(
    timeout: Duration,
    watches: Vec<Arc<Watch>>,
    channels: Vec<Receiver<Msg>>,
    leases: Arc<Mutex<Vec<Weak<LeaseState>>>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, PoolError> {
    let tick = (timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    std::thread::Builder::new()
        .name("rsmld-watchdog".into())
        .spawn(move || {
            // The busy_since value each worker was last acted upon for, so one hung call
            // is interrupted once.
            let mut fired = vec![0u64; watches.len()];
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                let now = epoch.elapsed().as_millis() as u64 + 1;
                for (worker, watch) in watches.iter().enumerate() {
                    if watch.is_lost() {
                        drain_lost(worker, &channels[worker]);
                        strand_all(worker, &leases);
                        continue;
                    }
                    let since = watch.busy_since.load(Ordering::SeqCst);
                    if since == 0
                        || fired[worker] == since
                        || now - since < timeout.as_millis() as u64
                    {
                        continue;
                    }
                    fired[worker] = since;
                    act(worker, watch, since, timeout);
                }
            }
        })
        .map_err(|e| PoolError::Threads(e.to_string()))
}

/// A call of `worker` (the one that began at `since`) is past the timeout: interrupt it,
/// or give the worker up; nothing if that call has ended meanwhile.
fn act(worker: usize, watch: &Watch, since: u64, timeout: Duration) {
    let current = watch.lease.lock().unwrap_or_else(PoisonError::into_inner);
    if watch.busy_since.load(Ordering::SeqCst) != since {
        return;
    }
    match &watch.interrupter {
        Some(interrupt) => {
            log::error!(
                "worker {worker}: handler busy for more than {:.3} s (item timeout); interrupting it",
                timeout.as_secs_f64()
            );
            interrupt(Interrupt::Timeout);
        }
        None => {
            watch.set_lost();
            if let Some(lease) = current.as_ref() {
                lease.fail(
                    worker,
                    Vec::new(),
                    format!(
                        "handler did not finish within the item timeout of {:.3} s and cannot be interrupted",
                        timeout.as_secs_f64()
                    ),
                );
            }
        }
    }
}

/// Fails the lease of every block queued on a lost worker.
fn drain_lost(worker: usize, channel: &Receiver<Msg>) {
    while let Ok(msg) = channel.try_recv() {
        if let Msg::Items(lease, block) = msg {
            if lease.live() {
                let records = block.iter().map(|i| i.record).collect();
                lease.fail(
                    worker,
                    records,
                    format!("worker {worker} is stuck in a handler call that cannot be interrupted (item timeout)"),
                );
            }
        }
    }
}

/// Fails every live lease attached to the pool once `worker` is lost: the worker's stuck
/// thread may hold blocks of any of them (taken from its channel, retries waiting, acks
/// pending) where nobody else can reach them, and any lease with work on the worker
/// would wait for them forever; a lease with none yet would fail at its next item for
/// that worker (dispatch refuses a lost worker) — a lost worker is lost for every key
/// that maps to it, so all fail now and their daemons restart them.
fn strand_all(worker: usize, leases: &Mutex<Vec<Weak<LeaseState>>>) {
    let leases: Vec<Arc<LeaseState>> = leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for lease in leases.iter().filter(|l| l.live()) {
        lease.fail(
            worker,
            Vec::new(),
            format!("worker {worker} is lost: stuck in a handler call that cannot be interrupted (item timeout)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::telemetry::LeaseId;

    fn lease() -> Arc<LeaseState> {
        let (events, _) = crossbeam_channel::unbounded();
        Arc::new(LeaseState {
            id: LeaseId::new("", "shardId-0"),
            abandoned: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            events,
            dead_lettered: AtomicU64::new(0),
        })
    }

    #[test]
    fn a_timeout_acts_on_the_call_it_timed_never_on_the_next_one() {
        let interrupts = Arc::new(AtomicUsize::new(0));
        let counter = interrupts.clone();
        let watch = Watch::new(Some(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })));
        let timeout = Duration::from_millis(10);
        // The watchdog saw the call that began at 5 run too long; it ended, and the next
        // call (another lease's) began at 9 before the watchdog acted.
        watch.begin(5, &lease());
        watch.end();
        watch.begin(9, &lease());
        act(0, &watch, 5, timeout);
        assert_eq!(
            interrupts.load(Ordering::SeqCst),
            0,
            "the next call was interrupted"
        );
        act(0, &watch, 9, timeout);
        assert_eq!(interrupts.load(Ordering::SeqCst), 1);
        watch.end();
        act(0, &watch, 9, timeout);
        assert_eq!(
            interrupts.load(Ordering::SeqCst),
            1,
            "an ended call was interrupted"
        );
    }
}
