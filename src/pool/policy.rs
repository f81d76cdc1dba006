//! The failure policy as a pure decision table: what happens to items a handler failed.
//!
//! The worker asks [`decide`] once per failure of a batch (or of the retried rest of one)
//! and does what it says; nothing here sleeps, writes or reports. Keeping the table pure
//! lets a unit test walk every combination of policy, attempt and lease state, which is
//! where at-least-once is decided: a failed item is retried, dead-lettered (and then
//! counts as done), fails its lease (nothing past it is ever checkpointed) or, when its
//! lease is abandoned, is dropped (never retried, never dead-lettered: abandoned work is
//! never checkpointed, so spending time on it only delays the next owner).

use std::time::Duration;

use super::OnError;

/// The longest retry delay, whatever the backoff doubled to.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to do with the items of a batch that just failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then hand the failed items to the handler again.
    Retry {
        /// The delay before the retry.
        after: Duration,
        /// Which retry this is (1-based).
        number: u32,
        /// How many retries the policy allows in all.
        of: u32,
    },
    /// Write the items with their error to the dead-letter sink; once durable there they
    /// count as done (if writing fails, they fail their lease).
    DeadLetter,
    /// The items fail their lease: reported as failed, never done.
    Fail,
    /// The lease is abandoned: forget the items (they are not done and nobody waits).
    Drop,
}

/// What the policy says about items that failed on `attempt` (0 for the first call, 1
/// for the first retry, ...), when their lease is `abandoned` or not.
pub fn decide(policy: &OnError, attempt: u32, abandoned: bool) -> Decision {
    if abandoned {
        return Decision::Drop;
    }
    match policy {
        OnError::Fail => Decision::Fail,
        OnError::Retry { retries, backoff } if attempt < *retries => Decision::Retry {
            after: backoff
                .saturating_mul(1 << attempt.min(16))
                .min(MAX_BACKOFF),
            number: attempt + 1,
            of: *retries,
        },
        OnError::Retry { .. } => Decision::Fail,
        OnError::Skip { .. } => Decision::DeadLetter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_policy_attempt_and_lease_state() {
        let skip = OnError::Skip {
            dead_letter: PathBuf::from("/dl"),
        };
        let retry = |retries, backoff| OnError::Retry { retries, backoff };
        let r = |after, number, of| Decision::Retry { after, number, of };
        #[rustfmt::skip]
        let table: Vec<(OnError, u32, bool, Decision)> = vec![
            // Abandoned work is dropped under every policy and at every attempt.
            (OnError::Fail, 0, true, Decision::Drop),
            (OnError::Fail, 7, true, Decision::Drop),
            (retry(3, ms(100)), 0, true, Decision::Drop),
            (retry(3, ms(100)), 3, true, Decision::Drop),
            (skip.clone(), 0, true, Decision::Drop),
            (skip.clone(), 2, true, Decision::Drop),
            // Fail: at once, whatever the attempt.
            (OnError::Fail, 0, false, Decision::Fail),
            (OnError::Fail, 1, false, Decision::Fail),
            // Retry: doubling from the backoff, numbered 1..=retries, then fail.
            (retry(3, ms(100)), 0, false, r(ms(100), 1, 3)),
            (retry(3, ms(100)), 1, false, r(ms(200), 2, 3)),
            (retry(3, ms(100)), 2, false, r(ms(400), 3, 3)),
            (retry(3, ms(100)), 3, false, Decision::Fail),
            (retry(3, ms(100)), 4, false, Decision::Fail),
            (retry(0, ms(100)), 0, false, Decision::Fail),
            // The delay is capped, also where the doubling would overflow.
            (retry(40, ms(100)), 9, false, r(ms(30_000), 10, 40)),
            (retry(40, ms(100)), 30, false, r(ms(30_000), 31, 40)),
            (retry(2, Duration::MAX), 1, false, r(MAX_BACKOFF, 2, 2)),
            (retry(2, Duration::ZERO), 1, false, r(Duration::ZERO, 2, 2)),
            // Skip: dead-letter on the first failure (no retries under skip).
            (skip.clone(), 0, false, Decision::DeadLetter),
            (skip, 5, false, Decision::DeadLetter),
        ];
        for (policy, attempt, abandoned, want) in table {
            assert_eq!(
                decide(&policy, attempt, abandoned),
                want,
                "{policy:?}, attempt {attempt}, abandoned {abandoned}"
            );
        }
    }

    /// Exhaustively over small attempts and retry counts: a retry happens exactly while
    /// attempts remain, its number is the attempt plus one, and its delay never shrinks
    /// from one attempt to the next nor exceeds the cap.
    #[test]
    fn retries_are_bounded_numbered_and_monotonic() {
        for retries in 0..20u32 {
            for backoff in [0, 1, 7, 250, 10_000] {
                let policy = OnError::Retry {
                    retries,
                    backoff: ms(backoff),
                };
                let mut last = Duration::ZERO;
                for attempt in 0..25u32 {
                    match decide(&policy, attempt, false) {
                        Decision::Retry { after, number, of } => {
                            assert!(attempt < retries);
                            assert_eq!((number, of), (attempt + 1, retries));
                            assert!(after >= last && after <= MAX_BACKOFF);
                            last = after;
                        }
                        Decision::Fail => assert!(attempt >= retries),
                        other => panic!("{other:?} under {policy:?}"),
                    }
                    assert_eq!(decide(&policy, attempt, true), Decision::Drop);
                }
            }
        }
    }
}
