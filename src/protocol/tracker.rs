//! The checkpoint tracker: which position is safe to checkpoint.
//!
//! A checkpoint at (S, k) tells the KCL "every user record up to and including (S, k) is
//! done": after a fail-over it restarts right after it. Workers finish items in any order,
//! so the only safe position is the end of the longest *prefix* of delivered records whose
//! items have all completed — the erlmld idea, with sub-sequence numbers kept.
//!
//! The tracker is pure bookkeeping: records are appended in delivery order with the number
//! of items each produced; completions arrive by [`RecordId`] from any worker; completed
//! records at the front are popped and become the position. A record that produced no items
//! is complete at once. A failed item pins its record forever: nothing after it can be
//! checkpointed until the failure policy acts (the default exits and lets the daemon restart
//! from the last checkpoint). The position never moves backwards.
//!
//! Cost: O(1) amortised per delivery and completion; memory is one small slot per record
//! between the oldest unfinished record and the newest delivered one.

use std::collections::VecDeque;

use crate::protocol::sequence::Esn;

/// The delivery index of a record within one lease (one process), assigned by the tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub u64);

/// Bookkeeping errors: each one means a bug somewhere upstream, never bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// A completion for a record that was never delivered.
    #[error("completion for record #{0} which was never delivered")]
    Unknown(u64),
    /// More completions than the record had items.
    #[error("record #{0} completed more items than it produced")]
    OverCompleted(u64),
}

#[derive(Debug)]
struct Slot {
    esn: Esn,
    remaining: u32,
    failed: bool,
}

/// Tracks delivered records and their outstanding items; see the module docs.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Id of `slots[0]`; every id below it is finished (or abandoned).
    first: u64,
    /// Ids below this were abandoned (lease lost): late completions for them are ignored.
    abandoned_below: u64,
    slots: VecDeque<Slot>,
    /// End of the completed prefix: the highest ESN that is safe to checkpoint.
    position: Option<Esn>,
    in_flight: usize,
    failed: usize,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a delivered record that produced `items` items (its `user_total`).
    pub fn deliver(&mut self, esn: Esn, items: u32) -> RecordId {
        let id = RecordId(self.first + self.slots.len() as u64);
        self.slots.push_back(Slot {
            esn,
            remaining: items,
            failed: false,
        });
        self.in_flight += items as usize;
        self.advance();
        id
    }

    /// One item of record `id` finished successfully.
    pub fn complete(&mut self, id: RecordId) -> Result<(), TrackerError> {
        if self.take_item(id)?.is_some() {
            self.advance();
        }
        Ok(())
    }

    /// One item of record `id` failed: the record (and everything after it) can never be
    /// checkpointed by this tracker.
    pub fn fail(&mut self, id: RecordId) -> Result<(), TrackerError> {
        if let Some(slot) = self.take_item(id)? {
            if !slot.failed {
                slot.failed = true;
                self.failed += 1;
            }
        }
        Ok(())
    }

    /// Takes one outstanding item off record `id`; `None` for an abandoned record.
    fn take_item(&mut self, id: RecordId) -> Result<Option<&mut Slot>, TrackerError> {
        if id.0 < self.abandoned_below {
            return Ok(None);
        }
        if id.0 < self.first {
            return Err(TrackerError::OverCompleted(id.0));
        }
        let index = (id.0 - self.first) as usize;
        let slot = self
            .slots
            .get_mut(index)
            .ok_or(TrackerError::Unknown(id.0))?;
        if slot.remaining == 0 {
            return Err(TrackerError::OverCompleted(id.0));
        }
        slot.remaining -= 1;
        self.in_flight -= 1;
        Ok(Some(slot))
    }

    /// Forgets every unfinished record (lease lost): late completions are ignored.
    pub fn abandon(&mut self) {
        self.first += self.slots.len() as u64;
        self.abandoned_below = self.first;
        self.slots.clear();
        self.in_flight = 0;
        self.failed = 0;
    }

    /// The highest extended sequence number whose record and all before it are complete.
    pub fn position(&self) -> Option<&Esn> {
        self.position.as_ref()
    }

    /// The id the next delivered record will get.
    pub fn next_id(&self) -> RecordId {
        RecordId(self.first + self.slots.len() as u64)
    }

    /// The oldest record not yet complete (or [`Tracker::next_id`] when all are).
    pub fn oldest_unfinished(&self) -> RecordId {
        RecordId(self.first)
    }

    /// Items delivered but not yet completed or failed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records with at least one failed item.
    pub fn failed_records(&self) -> usize {
        self.failed
    }

    /// True when every delivered record is complete (nothing in flight, nothing failed).
    pub fn all_complete(&self) -> bool {
        self.slots.is_empty()
    }

    fn advance(&mut self) {
        while let Some(front) = self.slots.front() {
            if front.remaining > 0 || front.failed {
                break;
            }
            // The loop condition just saw a front element, so this never breaks.
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.first += 1;
            // Never backwards: a re-delivered (duplicate) record leaves the position alone.
            // (Which records are new is the session's to decide: see protocol::order.)
            if self.position.as_ref().is_none_or(|p| slot.esn > *p) {
                self.position = Some(slot.esn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sequence::SequenceNumber;
    use proptest::prelude::*;

    fn esn(n: u64, sub: i64) -> Esn {
        Esn::new(SequenceNumber::parse(&n.to_string()).unwrap(), sub)
    }

    #[test]
    fn waits_for_the_prefix() {
        let mut t = Tracker::new();
        let a = t.deliver(esn(10, 0), 1);
        let b = t.deliver(esn(20, 0), 2);
        let c = t.deliver(esn(30, 0), 1);
        t.complete(c).unwrap();
        t.complete(b).unwrap();
        assert_eq!(t.position(), None);
        t.complete(a).unwrap();
        assert_eq!(t.position(), Some(&esn(10, 0)), "b still has an item");
        t.complete(b).unwrap();
        assert_eq!(t.position(), Some(&esn(30, 0)));
        assert!(t.all_complete());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn zero_item_records_complete_at_once() {
        let mut t = Tracker::new();
        t.deliver(esn(1, 0), 0);
        assert_eq!(t.position(), Some(&esn(1, 0)));
        let a = t.deliver(esn(2, 0), 1);
        t.deliver(esn(3, 0), 0);
        assert_eq!(t.position(), Some(&esn(1, 0)));
        t.complete(a).unwrap();
        assert_eq!(t.position(), Some(&esn(3, 0)));
    }

    #[test]
    fn a_failure_pins_the_position() {
        let mut t = Tracker::new();
        let a = t.deliver(esn(1, 0), 1);
        let b = t.deliver(esn(2, 0), 1);
        t.fail(a).unwrap();
        t.complete(b).unwrap();
        assert_eq!(t.position(), None);
        assert_eq!(t.failed_records(), 1);
        assert_eq!(t.in_flight(), 0);
        assert!(!t.all_complete());
    }

    #[test]
    fn rejects_bookkeeping_bugs() {
        let mut t = Tracker::new();
        let a = t.deliver(esn(1, 0), 1);
        t.complete(a).unwrap();
        assert_eq!(t.complete(a), Err(TrackerError::OverCompleted(0)));
        assert_eq!(t.complete(RecordId(7)), Err(TrackerError::Unknown(7)));
    }

    #[test]
    fn abandoned_records_ignore_late_completions() {
        let mut t = Tracker::new();
        let a = t.deliver(esn(1, 0), 1);
        t.abandon();
        assert_eq!(t.complete(a), Ok(()));
        assert_eq!(t.position(), None);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn never_moves_backwards_on_a_duplicate() {
        let mut t = Tracker::new();
        t.deliver(esn(5, 1), 0);
        t.deliver(esn(5, 0), 0);
        assert_eq!(t.position(), Some(&esn(5, 1)));
    }

    /// (items per record, a permutation key per item, which items fail)
    fn scenario() -> impl Strategy<Value = (Vec<u32>, Vec<u64>, Vec<bool>)> {
        prop::collection::vec(0u32..4, 1..40).prop_flat_map(|items| {
            let n: usize = items.iter().map(|&i| i as usize).sum();
            (
                Just(items),
                prop::collection::vec(any::<u64>(), n),
                prop::collection::vec(prop::bool::weighted(0.05), n),
            )
        })
    }

    proptest! {
        /// The tracker against a naive model: after every event, the position is exactly
        /// the last record of the longest prefix whose items all succeeded.
        #[test]
        fn matches_a_naive_model((items, order, fails) in scenario()) {
            let mut t = Tracker::new();
            let mut all = Vec::new(); // (record index, item) in random completion order
            let mut ids = Vec::new();
            for (r, &n) in items.iter().enumerate() {
                ids.push(t.deliver(esn(r as u64 + 1, 0), n));
                for _ in 0..n {
                    all.push(r);
                }
            }
            let mut keyed: Vec<(u64, usize, bool)> = all
                .iter()
                .zip(&order)
                .zip(&fails)
                .map(|((&r, &k), &f)| (k, r, f))
                .collect();
            keyed.sort();
            let mut done = vec![0u32; items.len()];
            let mut bad = vec![false; items.len()];
            for (_, r, f) in keyed {
                if f {
                    t.fail(ids[r]).unwrap();
                    bad[r] = true;
                } else {
                    t.complete(ids[r]).unwrap();
                }
                done[r] += 1;
                let prefix = (0..items.len())
                    .take_while(|&i| done[i] == items[i] && !bad[i])
                    .last();
                let expected = prefix.map(|i| esn(i as u64 + 1, 0));
                prop_assert_eq!(t.position(), expected.as_ref());
                // Never passes an unfinished or failed item.
                if let Some(p) = t.position() {
                    for i in 0..items.len() {
                        if esn(i as u64 + 1, 0) <= *p {
                            prop_assert!(done[i] == items[i] && !bad[i]);
                        }
                    }
                }
            }
            if !bad.iter().any(|&b| b) {
                prop_assert_eq!(t.position(), Some(&esn(items.len() as u64, 0)));
                prop_assert!(t.all_complete());
            }
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
