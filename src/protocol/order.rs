//! Delivery order: which record positions are new, which are re-deliveries, and which are
//! protocol errors.
//!
//! The daemon delivers the records of a lease in increasing (sequence number,
//! sub-sequence number) order, and before every batch it drops the records at or below the
//! lease's checkpoint (`filterAndGetMaxExtendedSequenceNumber` in the KCL, 1.x to 3.x).
//! So a record that is not above the last delivered one is either an exact re-delivery of
//! a position delivered earlier in this lease — a *duplicate*, which `--on-duplicate`
//! handles — or a protocol error. Telling them apart needs the delivered positions: a
//! [`DeliveryOrder`] keeps them in order, as runs (the user records of one aggregate share
//! a sequence number and count once), the newest [`REMEMBERED_RUNS`] of them. A record is:
//!
//! - not a position at all when its sequence number is a sentinel (`SHARD_END`, `LATEST`,
//!   `TRIM_HORIZON`, `AT_TIMESTAMP`: lease positions, never a record's) or its
//!   sub-sequence number is negative — a protocol error;
//! - at or below the lease's starting checkpoint (from `initialize`): never delivered in
//!   this lease, and filtered out by the daemon — a protocol error;
//! - above the last delivered record: new;
//! - among the remembered positions: a duplicate (also when a checkpoint covers it: it was
//!   processed, so skipping it loses nothing);
//! - not among them, and no position at or above it was forgotten: it goes backwards
//!   without ever having been delivered — a protocol error (records 5, 3, 4 in a batch);
//! - older than the remembered positions: it cannot be told apart from one that goes
//!   backwards, so it is refused too. Refusing is safe — rsmld exits non-zero and the
//!   daemon restarts from the checkpoint — while skipping a record that was never
//!   delivered would lose it. (A real re-delivery — the KCL restarting its record
//!   publisher — replays the last batch or so, well inside the bound.)
//!
//! What is remembered: the positions of the newest [`REMEMBERED_BATCHES`] batches (the one
//! being delivered and the three before it), and of those at most [`REMEMBERED_RUNS`] runs.
//! Bounding by batches keeps the history as large as a re-delivery can reach and no larger:
//! a lease of 1 000-record batches remembers about 4 000 runs (32 bytes each, plus the
//! digits of their sequence numbers, which the records' items share while they live), not
//! the 32 768 that 10 000-record batches need. That matters on a host server, where every lease keeps its own history.
//!
//! Memory: one run per plain record or aggregate (the sequence number, shared with the
//! record's items while they live, and two sub-sequence numbers: about 120 bytes), at most
//! [`REMEMBERED_RUNS`] — about 4 MiB.

use std::collections::VecDeque;

use crate::protocol::sequence::{Esn, SequenceNumber};

/// Most runs of delivered positions remembered (about 120 bytes each with the digits of a
/// real sequence number): three full polling batches (10 000 records each) of plain
/// records, far more aggregated user records.
pub const REMEMBERED_RUNS: usize = 32_768;

/// Batches whose positions are remembered: the one being delivered and the three before it
/// (a re-delivery replays the last batch or so).
pub const REMEMBERED_BATCHES: usize = 4;

/// How a delivered position relates to the lease's earlier deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Above the last delivered position: a new record.
    New,
    /// Exactly a position delivered earlier in this lease.
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
    /// At or below the lease's starting checkpoint, which the daemon filters out.
    #[error("record {esn} is at or below the lease's checkpoint {checkpoint} (from initialize); the daemon never delivers those")]
    AtOrBelowCheckpoint {
        /// The record.
        esn: Esn,
        /// The lease's checkpoint from `initialize`.
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
    #[error("record {esn} is below the last delivered record {last} and older than the positions rsmld remembers (those of the newest {REMEMBERED_BATCHES} batches, at most {REMEMBERED_RUNS} runs): it cannot be told apart from a record that goes backwards")]
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

/// The positions delivered in this lease; see the module docs.
#[derive(Debug, Default)]
pub struct DeliveryOrder {
    /// The lease's starting checkpoint: nothing at or below it is delivered.
    floor: Option<Esn>,
    /// The last delivered position.
    last: Option<Esn>,
    /// The newest delivered positions, increasing.
    runs: VecDeque<Run>,
    /// The highest position forgotten because of the bounds.
    forgotten: Option<Esn>,
    /// Runs ever forgotten: the index, counted over the lease, of `runs[0]`.
    dropped: u64,
    /// Where each remembered batch's runs start (indexes counted over the lease), oldest
    /// first; the last is the batch being delivered.
    batch_starts: VecDeque<u64>,
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

    /// The lease starts at `checkpoint` (from `initialize`): nothing at or below it is
    /// delivered in this lease.
    pub fn start_at(&mut self, checkpoint: Esn) {
        self.floor = Some(checkpoint);
    }

    /// A new batch begins: its positions are remembered with those of the
    /// [`REMEMBERED_BATCHES`]` - 1` batches before it; older ones are forgotten.
    pub fn begin_batch(&mut self) {
        self.batch_starts.push_back(self.end());
        if self.batch_starts.len() > REMEMBERED_BATCHES {
            self.batch_starts.pop_front();
            // The oldest batch remembered now starts here: forget every run before it.
            let keep_from = self.batch_starts.front().copied().unwrap_or(self.dropped);
            while self.dropped < keep_from && !self.runs.is_empty() {
                self.forget_oldest();
            }
        }
        // A lease whose batches shrink gives the memory of its large ones back.
        if self.runs.capacity() > 1024 && self.runs.capacity() > 4 * self.runs.len() {
            self.runs.shrink_to(2 * self.runs.len());
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
        // A run never spans two batches, so forgetting a batch forgets exactly its runs:
        // only a run of the batch being delivered grows.
        let current = self
            .batch_starts
            .back()
            .is_none_or(|&start| self.end() > start);
        if let Some(run) = self.runs.back_mut().filter(|_| current) {
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
            self.forget_oldest();
        }
    }

    /// The index, counted over the lease, that the next run will have.
    fn end(&self) -> u64 {
        self.dropped + self.runs.len() as u64
    }

    /// Forgets the oldest remembered run (there is one: callers checked).
    fn forget_oldest(&mut self) {
        if let Some(run) = self.runs.pop_front() {
            self.dropped += 1;
            self.forgotten = Some(Esn::new(run.seq, run.last));
        }
    }

    /// Whether `esn` is a remembered position (the runs are increasing and disjoint).
    fn contains(&self, esn: &Esn) -> bool {
        // The first run that starts after `esn`; the one before it may hold it.
        let after = self
            .runs
            .partition_point(|run| run.seq.cmp(&esn.seq).then(run.first.cmp(&esn.sub)).is_le());
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
        o.start_at(Esn::new(SequenceNumber::sentinel(Sentinel::TrimHorizon), 0));
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
            assert!(
                matches!(o.place(&e), Ok(Placement::Duplicate { .. })),
                "{e}"
            );
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
    fn nothing_at_or_below_the_lease_start_was_delivered() {
        let mut o = DeliveryOrder::new();
        o.start_at(esn(5, 2));
        assert!(matches!(
            o.place(&esn(5, 2)),
            Err(OrderError::AtOrBelowCheckpoint { .. })
        ));
        assert!(matches!(
            o.place(&esn(4, 9)),
            Err(OrderError::AtOrBelowCheckpoint { .. })
        ));
        assert_eq!(o.place(&esn(5, 3)), Ok(Placement::New));
        assert!(matches!(
            o.place(&esn(5, 3)),
            Ok(Placement::Duplicate { .. })
        ));
        // A sentinel start: every real position is above it; SHARD_END: none is.
        let mut o = DeliveryOrder::new();
        o.start_at(Esn::new(SequenceNumber::sentinel(Sentinel::TrimHorizon), 0));
        assert_eq!(o.place(&esn(0, 0)), Ok(Placement::New));
        let mut o = DeliveryOrder::new();
        o.start_at(Esn::new(SequenceNumber::sentinel(Sentinel::ShardEnd), 0));
        assert!(o.place(&esn(1, 0)).is_err());
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
        // Within the remembered runs, a gap is still told apart.
        assert!(matches!(
            o.place(&esn(n + 1, 0)),
            Err(OrderError::Backwards { .. })
        ));
    }

    /// Delivers `batches` batches of `per_batch` plain records each, numbered from 1.
    fn deliver_batches(o: &mut DeliveryOrder, batches: u64, per_batch: u64) {
        for b in 0..batches {
            o.begin_batch();
            for i in 1..=per_batch {
                o.place(&esn(b * per_batch + i, 0)).unwrap();
            }
        }
    }

    #[test]
    fn only_the_newest_batches_are_remembered() {
        let mut o = DeliveryOrder::new();
        deliver_batches(&mut o, 10, 1000);
        assert_eq!(o.remembered_runs(), REMEMBERED_BATCHES * 1000);
        // Batch 6 (records 6001..=7000) is forgotten, batch 7 remembered.
        let oldest_kept = (10 - REMEMBERED_BATCHES as u64) * 1000 + 1;
        assert!(matches!(
            o.place(&esn(oldest_kept - 1, 0)),
            Err(OrderError::Forgotten { .. })
        ));
        assert!(matches!(
            o.place(&esn(oldest_kept, 0)),
            Ok(Placement::Duplicate { .. })
        ));
        assert!(matches!(
            o.place(&esn(1, 0)),
            Err(OrderError::Forgotten { .. })
        ));
    }

    #[test]
    fn a_batch_larger_than_the_run_bound_keeps_the_newest_runs() {
        let mut o = DeliveryOrder::new();
        deliver_batches(&mut o, 1, REMEMBERED_RUNS as u64 + 5);
        assert_eq!(o.remembered_runs(), REMEMBERED_RUNS);
        assert!(matches!(
            o.place(&esn(5, 0)),
            Err(OrderError::Forgotten { .. })
        ));
        assert!(matches!(
            o.place(&esn(6, 0)),
            Ok(Placement::Duplicate { .. })
        ));
        // Batches after it forget it as a whole, without tripping over the runs the run
        // bound already dropped.
        for b in 0..REMEMBERED_BATCHES as u64 {
            o.begin_batch();
            o.place(&esn(1_000_000 + b, 0)).unwrap();
        }
        assert_eq!(o.remembered_runs(), REMEMBERED_BATCHES);
    }

    #[test]
    fn a_run_of_sub_records_never_spans_two_batches() {
        let mut o = DeliveryOrder::new();
        o.begin_batch();
        o.place(&esn(5, 0)).unwrap();
        o.place(&esn(5, 1)).unwrap();
        o.begin_batch();
        o.place(&esn(5, 2)).unwrap();
        assert_eq!(o.remembered_runs(), 2);
        for _ in 1..REMEMBERED_BATCHES {
            o.begin_batch();
        }
        // The first batch is forgotten, the second (5/2) is not.
        assert!(matches!(
            o.place(&esn(5, 1)),
            Err(OrderError::Forgotten { .. })
        ));
        assert!(matches!(
            o.place(&esn(5, 2)),
            Ok(Placement::Duplicate { .. })
        ));
    }

    #[test]
    fn the_history_gives_back_the_memory_of_large_batches() {
        let mut o = DeliveryOrder::new();
        deliver_batches(&mut o, REMEMBERED_BATCHES as u64, 8000);
        let large = o.runs.capacity();
        assert!(large >= REMEMBERED_BATCHES * 8000);
        for b in 0..2 * REMEMBERED_BATCHES as u64 {
            o.begin_batch();
            o.place(&esn(1_000_000 + b, 0)).unwrap();
        }
        assert!(o.runs.capacity() < large / 4, "{}", o.runs.capacity());
    }

    proptest! {
        /// Against a naive model that keeps each batch's positions: new exactly when above
        /// all delivered ones, a duplicate exactly when delivered in one of the newest
        /// batches, forgotten when below a position of an older batch, else backwards.
        #[test]
        fn matches_a_naive_model_of_batches(
            events in prop::collection::vec(prop::option::of((0u64..16, 0i64..4)), 1..120),
        ) {
            let mut o = DeliveryOrder::new();
            let mut batches: Vec<std::collections::BTreeSet<Esn>> = vec![Default::default()];
            o.begin_batch();
            for event in events {
                let Some((n, sub)) = event else {
                    o.begin_batch();
                    batches.push(Default::default());
                    continue;
                };
                let e = esn(n, sub);
                let got = o.place(&e);
                let kept = batches.len().saturating_sub(REMEMBERED_BATCHES);
                let last = batches.iter().flatten().max().cloned();
                let newest_forgotten = batches[..kept].iter().flatten().max().cloned();
                if last.as_ref().is_none_or(|l| e > *l) {
                    prop_assert_eq!(got, Ok(Placement::New));
                    batches.last_mut().unwrap().insert(e);
                } else if batches[kept..].iter().any(|b| b.contains(&e)) {
                    prop_assert!(matches!(got, Ok(Placement::Duplicate { .. })), "{e}: {got:?}");
                } else if newest_forgotten.as_ref().is_some_and(|f| e <= *f) {
                    prop_assert!(matches!(got, Err(OrderError::Forgotten { .. })), "{e}: {got:?}");
                } else {
                    prop_assert!(matches!(got, Err(OrderError::Backwards { .. })), "{e}: {got:?}");
                }
            }
        }
    }

    proptest! {
        /// Against a naive model (every position ever delivered, in a set): a new
        /// position is accepted exactly when it is above all others and the lease start,
        /// a duplicate exactly when it was delivered, anything else is an error.
        #[test]
        fn matches_a_naive_model(
            start in prop::option::of((0u64..4, 0i64..2)),
            events in prop::collection::vec((0u64..12, 0i64..4), 1..80),
        ) {
            let mut o = DeliveryOrder::new();
            let start = start.map(|(n, sub)| esn(n, sub));
            if let Some(s) = &start {
                o.start_at(s.clone());
            }
            let mut seen: std::collections::BTreeSet<Esn> = Default::default();
            for (n, sub) in events {
                let e = esn(n, sub);
                let got = o.place(&e);
                let above_all = seen.iter().next_back().is_none_or(|l| e > *l);
                if start.as_ref().is_some_and(|s| e <= *s) {
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
