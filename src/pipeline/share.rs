//! How the leases of one runtime share the mapper threads (the global rayon pool).
//!
//! A large line is split in parallel on the mapper threads only for a lease that has them
//! to itself: no other lease is mapping a line now, and no other lease began one within
//! [`BUSY_WINDOW`]. Otherwise the lease maps the line on its own thread, in the same chunks
//! (the result is identical).
//!
//! Why: one busy lease gets every core for its lines (child mode, or a host where one
//! shard is hot). On a host where several leases are busy, the leases themselves keep the
//! cores busy, and sending their lines to the shared threads only adds hand-offs (a line
//! goes to the pool and the lease's thread sleeps until its last chunk is back) and queues
//! one lease's line behind another's while its own thread waits. Measured on 2 cores with
//! 1 000-record lines (the many-leases benchmark, paired runs): at 16 leases 13% less CPU
//! per item than child mode, which maps every line in parallel; at 4 leases, letting one
//! lease at a time map in parallel cost 6–7% against never doing so, hence the window.
//!
//! The state is a few atomics, read and written without a lock: two leases that begin at
//! the same instant may both take the parallel path for one line, which costs a little
//! speed and nothing else.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long after another lease began mapping a line a lease still maps its own on its
/// thread: about the time between two lines of a busy lease, so that busy leases see
/// each other and a lease that maps only now and then does not count.
pub const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// The mapper threads of one runtime, as its leases share them (module docs).
#[derive(Debug)]
pub struct MapperShare {
    /// Leases mapping a line now.
    mapping: AtomicUsize,
    /// The token of the lease that began mapping a line last (0: none yet; tokens start
    /// at 1), and when, in milliseconds since `epoch`.
    last_token: AtomicU64,
    last_at: AtomicU64,
    /// Tokens handed out.
    tokens: AtomicU64,
    epoch: Instant,
}

impl Default for MapperShare {
    fn default() -> Self {
        MapperShare {
            mapping: AtomicUsize::new(0),
            last_token: AtomicU64::new(0),
            last_at: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// One lease's turn at mapping a line ([`MapperShare::enter`]); ends when dropped.
pub(crate) struct Turn<'a> {
    share: &'a MapperShare,
    parallel: bool,
}

impl Turn<'_> {
    /// Whether this line may be mapped on the mapper threads.
    pub(crate) fn is_parallel(&self) -> bool {
        self.parallel
    }
}

impl MapperShare {
    /// A token for one lease, different from every other lease's of this share.
    pub fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Begins the mapping of one line by the lease that holds `token`, now.
    pub(crate) fn enter(&self, token: u64) -> Turn<'_> {
        self.enter_at(token, Instant::now())
    }

    /// [`MapperShare::enter`] at `now` (tests give the time).
    fn enter_at(&self, token: u64, now: Instant) -> Turn<'_> {
        let others = self.mapping.fetch_add(1, Ordering::AcqRel);
        let at = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let last_token = self.last_token.swap(token, Ordering::AcqRel);
        let last_at = self.last_at.swap(at, Ordering::AcqRel);
        let window = BUSY_WINDOW.as_millis() as u64;
        // A racing lease may have stored a later time than ours: that is recent too.
        let other_recently =
            last_token != 0 && last_token != token && at.saturating_sub(last_at) < window;
        Turn {
            share: self,
            parallel: others == 0 && !other_recently,
        }
    }

    /// Leases mapping a line now.
    pub fn mapping(&self) -> usize {
        self.mapping.load(Ordering::Acquire)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.share.mapping.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_alone_maps_in_parallel_line_after_line() {
        let share = MapperShare::default();
        let a = share.token();
        let t0 = Instant::now();
        for k in 0..5 {
            let turn = share.enter_at(a, t0 + Duration::from_millis(k));
            assert!(turn.is_parallel(), "line {k} of the only busy lease");
        }
        assert_eq!(share.mapping(), 0);
    }

    #[test]
    fn not_while_another_lease_maps() {
        let share = MapperShare::default();
        let (a, b) = (share.token(), share.token());
        let t0 = Instant::now();
        let first = share.enter_at(a, t0);
        assert!(first.is_parallel());
        let second = share.enter_at(b, t0);
        assert!(
            !second.is_parallel(),
            "two leases mapped in parallel at once"
        );
        assert_eq!(share.mapping(), 2);
        drop((first, second));
        assert_eq!(share.mapping(), 0);
    }

    #[test]
    fn not_within_the_window_after_another_lease_began_one() {
        let share = MapperShare::default();
        let (a, b) = (share.token(), share.token());
        let t0 = Instant::now();
        drop(share.enter_at(a, t0));
        let soon = t0 + BUSY_WINDOW / 2;
        assert!(
            !share.enter_at(b, soon).is_parallel(),
            "B within A's window"
        );
        assert!(
            !share.enter_at(a, soon).is_parallel(),
            "A within B's window"
        );
        // B alone again, after the window: parallel.
        let later = soon + BUSY_WINDOW * 2;
        assert!(share.enter_at(b, later).is_parallel());
        assert!(share.enter_at(b, later + BUSY_WINDOW / 2).is_parallel());
    }

    #[test]
    fn tokens_differ() {
        let share = MapperShare::default();
        let tokens: std::collections::HashSet<u64> = (0..100).map(|_| share.token()).collect();
        assert_eq!(tokens.len(), 100);
    }
}
