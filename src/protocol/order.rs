//! Delivery order: which record positions are new, which are re-deliveries, and which are
//! protocol errors.
//!
//! The daemon delivers the records of a lease in increasing (sequence number,
//! sub-sequence number) order, and before every batch it drops the records at or below the
//! lease's last checkpoint (`filterAndGetMaxExtendedSequenceNumber` in the KCL, 1.x to
//! 3.x). So a record that is not above the last delivered one is either an exact
//! re-delivery of a position delivered earlier in this lease — a *duplicate*, which
//! `--on-duplicate` handles — or a protocol error. Telling them apart needs the delivered
//! positions, and only these can be re-delivered: the ones above the last checkpoint. A
//! [`DeliveryOrder`] keeps exactly those, in order, as runs (the user records of one
//! aggregate share a sequence number and count once), at most [`REMEMBERED_RUNS`] of
//! them: a checkpoint forgets everything at or below it. A record below the last
//! delivered one is then classified:
//!
//! - at or below the checkpoint (or the lease's starting position): never re-delivered by
//!   the daemon, so a protocol error;
//! - among the remembered positions: a duplicate;
//! - not among them, and no position at or above it was forgotten: it goes backwards
//!   without ever having been delivered — a protocol error (records 5, 3, 4 in a batch);
//! - older than the remembered runs (more than [`REMEMBERED_RUNS`] since the last
//!   checkpoint): it cannot be told apart from one that goes backwards, so it is refused
//!   too. Refusing is safe — rsmld exits non-zero and the daemon restarts from the
//!   checkpoint — while skipping a record that was never delivered would lose it.
//!
//! Memory: one run per plain record or aggregate since the last checkpoint (a shared
//! sequence number and two sub-sequence numbers), bounded by [`REMEMBERED_RUNS`].

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::protocol::sequence::{Esn, SequenceNumber};

/// Most runs of positions remembered since the last checkpoint (about 64 bytes each plus
/// the sequence number's digits): ten full polling batches of plain records.
pub const REMEMBERED_RUNS: usize = 100_000;

/// How a delivered position relates to the lease's earlier deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Above the last delivered position: a new record.
    New,
    /// Exactly a position delivered earlier in this lease (and not yet checkpointed).
    Duplicate {
        /// The last delivered position.
        last: Esn,
    },
}

/// A record position the daemon cannot have sent: a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A sentinel (`SHARD_END`, `LATEST`, …) as a record's sequence number.
    #[error("record {0} has a sentinel as its sequence number (a record's position is always decimal digits)")]
    Sentinel(Esn),
    /// A negative sub-sequence number.
    #[error("record {0} has a negative sub-sequence number")]
    NegativeSub(Esn),
    /// At or below the lease's checkpoint, which the daemon filters out.
    #[error("record {esn} is at or below the checkpoint {checkpoint}; the daemon never delivers those")]
    AtOrBelowCheckpoint {
        /// The record.
        esn: Esn,
        /// The lease's checkpoint (from initialize, or the last one stored).
        checkpoint: Esn,
    },
    /// Below the last delivered record, and never delivered in this lease.
    #[error("record {esn} goes backwards: it is below the last delivered record {last} and was never delivered in this lease (the daemon delivers in order)")]
    Backwards {
        /// The record.
        esn: Esn,
        /// The last delivered record.
        last: Esn,
    },
    /// Below the last delivered record and older than the remembered positions.
    #[error("record {esn} is below the last delivered record {last} and older than the {REMEMBERED_RUNS} positions remembered since the last checkpoint: it cannot be told apart from a record that goes backwards")]
    Forgotten {
        /// The record.
        esn: Esn,
        /// The last delivered record.
        last: Esn,
    },
}

/// A run of positions: one sequence number, sub-sequence numbers `first..=last`.
#[derive(Debug, Clone)]
struct Run {
    seq: SequenceNumber,
    first: i64,
    last: i64,
}

/// The positions delivered in this lease above its checkpoint; see the module docs.
#[derive(Debug, Default)]
pub struct DeliveryOrder {
    /// The lease's checkpoint: nothing at or below it is ever delivered.
    floor: Option<Esn>,
    /// The last delivered position.
    last: Option<Esn>,
    /// Delivered positions above `floor`, increasing.
    runs: VecDeque<Run>,
    /// The highest position forgotten because of the bound (above `floor`).
    forgotten: Option<Esn>,
}

impl DeliveryOrder {
    /// An empty history (no checkpoint known yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The last delivered position.
    pub fn last(&self) -> Option<&Esn> {
        self.last.as_ref()
    }

    /// The lease's checkpoint moved to `checkpoint` (initialize, or a stored checkpoint):
    /// positions at or below it are forgotten — the daemon never delivers them again.
    pub fn checkpointed(&mut self, checkpoint: Esn) {
        while let Some(front) = self.runs.front_mut() {
            match front.seq.cmp(&checkpoint.seq) {
                Ordering::Less => {}
                Ordering::Equal if front.last <= checkpoint.sub => {}
                Ordering::Equal => {
                    front.first = front.first.max(checkpoint.sub + 1);
                    break;
                }
                Ordering::Greater => break,
            }
            self.runs.pop_front();
        }
        if self.forgotten.as_ref().is_some_and(|f| *f <= checkpoint) {
            self.forgotten = None;
        }
        if self.floor.as_ref().is_none_or(|f| checkpoint > *f) {
            self.floor = Some(checkpoint);
        }
    }

    /// Where `esn` stands; a new position is remembered as delivered.
    pub fn place(&mut self, esn: &Esn) -> Result<Placement, OrderError> {
        if esn.seq.as_sentinel().is_some() {
            return Err(OrderError::Sentinel(esn.clone()));
        }
        if esn.sub < 0 {
            return Err(OrderError::NegativeSub(esn.clone()));
        }
        if let Some(floor) = self.floor.as_ref().filter(|f| esn <= *f) {
            return Err(OrderError::AtOrBelowCheckpoint {
                esn: esn.clone(),
                checkpoint: floor.clone(),
            });
        }
        match &self.last {
            Some(last) if esn <= last => {
                let last = last.clone();
                if self.contains(esn) {
                    Ok(Placement::Duplicate { last })
                } else if self.forgotten.as_ref().is_some_and(|f| esn <= f) {
                    Err(OrderError::Forgotten {
                        esn: esn.clone(),
                        last,
                    })
                } else {
                    Err(OrderError::Backwards {
                        esn: esn.clone(),
                        last,
                    })
                }
            }
            _ => {
                self.remember(esn);
                Ok(Placement::New)
            }
        }
    }

    /// Appends a position above every remembered one.
    fn remember(&mut self, esn: &Esn) {
        self.last = Some(esn.clone());
        if let Some(run) = self.runs.back_mut() {
            if run.seq.cmp(&esn.seq).is_eq() && run.last.checked_add(1) == Some(esn.sub) {
                run.last = esn.sub;
                return;
            }
        }
        self.runs.push_back(Run {
            seq: esn.seq.clone(),
            first: esn.sub,
            last: esn.sub,
        });
        if self.runs.len() > REMEMBERED_RUNS {
            if let Some(run) = self.runs.pop_front() {
                self.forgotten = Some(Esn::new(run.seq, run.last));
            }
        }
    }

    /// Whether `esn` is a remembered position (the runs are increasing and disjoint).
    fn contains(&self, esn: &Esn) -> bool {
        // The first run that starts after `esn`; the one before it may hold it.
        let after = self.runs.partition_point(|run| {
            run.seq
                .cmp(&esn.seq)
                .then(run.first.cmp(&esn.sub))
                .is_le()
        });
        after > 0 && {
            let run = &self.runs[after - 1];
            run.seq.cmp(&esn.seq).is_eq() && esn.sub <= run.last
        }
    }

    /// Runs remembered (for tests and logs).
    pub fn remembered_runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sequence::Sentinel;
    use proptest::prelude::*;

    fn esn(n: u64, sub: i64) -> Esn {
        Esn::new(SequenceNumber::parse(&n.to_string()).unwrap(), sub)
    }

    #[test]
    fn five_three_four_goes_backwards() {
        let mut o = DeliveryOrder::new();
        o.checkpointed(Esn::new(SequenceNumber::sentinel(Sentinel::TrimHorizon), 0));
        assert_eq!(o.place(&esn(5, 0)), Ok(Placement::New));
        assert!(matches!(
            o.place(&esn(3, 0)),
            Err(OrderError::Backwards { .. })
        ));
        assert!(matches!(
            o.place(&esn(4, 0)),
            Err(OrderError::Backwards { .. })
        ));
    }

    #[test]
    fn exact_redeliveries_are_duplicates() {
        let mut o = DeliveryOrder::new();
        for e in [esn(3, 0), esn(5, 0), esn(5, 1), esn(5, 2), esn(9, 4)] {
            assert_eq!(o.place(&e), Ok(Placement::New));
        }
        assert_eq!(o.remembered_runs(), 3);
        for e in [esn(3, 0), esn(5, 0), esn(5, 1), esn(5, 2), esn(9, 4)] {
            assert!(matches!(o.place(&e), Ok(Placement::Duplicate { .. })), "{e}");
        }
        for e in [esn(4, 0), esn(5, 3), esn(9, 3), esn(1, 0)] {
            assert!(
                matches!(o.place(&e), Err(OrderError::Backwards { .. })),
                "{e}"
            );
        }
        assert_eq!(o.place(&esn(9, 5)), Ok(Placement::New));
    }

    #[test]
    fn a_checkpoint_forgets_what_it_covers() {
        let mut o = DeliveryOrder::new();
        for sub in 0..5 {
            o.place(&esn(5, sub)).unwrap();
        }
        o.place(&esn(6, 0)).unwrap();
        o.checkpointed(esn(5, 2));
        assert_eq!(o.remembered_runs(), 2);
        assert!(matches!(
            o.place(&esn(5, 2)),
            Err(OrderError::AtOrBelowCheckpoint { .. })
        ));
        assert!(matches!(
            o.place(&esn(5, 3)),
            Ok(Placement::Duplicate { .. })
        ));
        o.checkpointed(esn(6, 0));
        assert_eq!(o.remembered_runs(), 0);
        assert!(matches!(
            o.place(&esn(6, 0)),
            Err(OrderError::AtOrBelowCheckpoint { .. })
        ));
    }

    #[test]
    fn sentinels_and_negative_subs_are_not_positions() {
        let mut o = DeliveryOrder::new();
        for s in [
            Sentinel::ShardEnd,
            Sentinel::Latest,
            Sentinel::TrimHorizon,
            Sentinel::AtTimestamp,
        ] {
            let e = Esn::new(SequenceNumber::sentinel(s), 0);
            assert_eq!(o.place(&e), Err(OrderError::Sentinel(e.clone())));
        }
        assert_eq!(
            o.place(&esn(1, -1)),
            Err(OrderError::NegativeSub(esn(1, -1)))
        );
        assert_eq!(o.last(), None);
    }

    #[test]
    fn beyond_the_bound_old_positions_are_refused_not_skipped() {
        let mut o = DeliveryOrder::new();
        let n = REMEMBERED_RUNS as u64 + 10;
        for i in 1..=n {
            o.place(&esn(i * 2, 0)).unwrap();
        }
        assert_eq!(o.remembered_runs(), REMEMBERED_RUNS);
        // Forgotten: neither a duplicate nor provably backwards.
        assert!(matches!(
            o.place(&esn(2, 0)),
            Err(OrderError::Forgotten { .. })
        ));
        assert!(matches!(
            o.place(&esn(3, 0)),
            Err(OrderError::Forgotten { .. })
        ));
        // Still remembered.
        assert!(matches!(
            o.place(&esn(n * 2, 0)),
            Ok(Placement::Duplicate { .. })
        ));
        assert!(matches!(
            o.place(&esn(n * 2 - 1, 0)),
            Err(OrderError::Backwards { .. })
        ));
        // A checkpoint above the forgotten part makes the bound irrelevant again.
        o.checkpointed(esn(n, 0));
        assert!(matches!(
            o.place(&esn(n + 1, 0)),
            Err(OrderError::Backwards { .. })
        ));
    }

    proptest! {
        /// Against a naive model (every position ever delivered, in a set): a new
        /// position is accepted exactly when it is above all others, a duplicate exactly
        /// when it was delivered, anything else is an error.
        #[test]
        fn matches_a_naive_model(events in prop::collection::vec((0u64..12, 0i64..4, any::<bool>()), 1..80)) {
            let mut o = DeliveryOrder::new();
            let mut seen: std::collections::BTreeSet<Esn> = Default::default();
            let mut checkpoint: Option<Esn> = None;
            for (n, sub, cp) in events {
                let e = esn(n, sub);
                if cp {
                    // A checkpoint at or below the last delivered position.
                    if let Some(c) = seen.iter().filter(|s| **s <= e).next_back().cloned() {
                        if checkpoint.as_ref().is_none_or(|k| c > *k) {
                            o.checkpointed(c.clone());
                            checkpoint = Some(c);
                        }
                    }
                    continue;
                }
                let got = o.place(&e);
                let above_all = seen.iter().next_back().is_none_or(|l| e > *l);
                let below_cp = checkpoint.as_ref().is_some_and(|c| e <= *c);
                if below_cp {
                    prop_assert!(matches!(got, Err(OrderError::AtOrBelowCheckpoint { .. })), "{e}: {got:?}");
                } else if above_all {
                    prop_assert_eq!(got, Ok(Placement::New));
                    seen.insert(e);
                } else if seen.contains(&e) {
                    prop_assert!(matches!(got, Ok(Placement::Duplicate { .. })), "{e}: {got:?}");
                } else {
                    prop_assert!(matches!(got, Err(OrderError::Backwards { .. })), "{e}: {got:?}");
                }
            }
        }
    }
}
