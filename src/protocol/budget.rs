//! The in-flight budget: how much memory unfinished work may keep alive.
//!
//! Two kinds of memory outlive a `processRecords` line's status: the line itself (record
//! payloads point into it, so one unfinished item keeps the whole line) and the items'
//! own heap (the blocks a line's records were split into). Both are bounded by
//! `--max-in-flight-bytes`, counted as *pins*: (the id after the last record of the
//! line or part, bytes); a pin is released once every record before that id is done.
//! The bound is an upper one: a pin counts until its last record is done, even when most
//! of its items are.
//!
//! Pure counting (ids and byte counts, no buffers), so the session and the lease can both
//! ask it, and it is tested by feeding it numbers.

use std::collections::VecDeque;

use super::tracker::RecordId;

/// A line's items are split and delivered in parts of at least this many items (or
/// `--max-in-flight`, if larger), see [`PartBudget`].
pub const MIN_PART_ITEMS: usize = 10_000;

/// ... and of at least this many bytes of item memory (or `--max-in-flight-bytes`).
pub const MIN_PART_BYTES: usize = 1 << 20;

/// How much one part of a line may hold before it is delivered: the mapper ends a part
/// after the record at which it reaches either bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartBudget {
    /// Items of one part.
    pub items: usize,
    /// Heap bytes of one part's items.
    pub bytes: usize,
}

impl PartBudget {
    /// The budget for the in-flight bounds `max_in_flight` items and
    /// `max_in_flight_bytes` bytes.
    pub fn of(max_in_flight: usize, max_in_flight_bytes: usize) -> Self {
        PartBudget {
            items: max_in_flight.max(MIN_PART_ITEMS),
            bytes: max_in_flight_bytes.max(MIN_PART_BYTES),
        }
    }
}

/// Bytes pinned by unfinished records, in delivery order.
#[derive(Debug, Default)]
pub struct Pins {
    pins: VecDeque<(RecordId, usize)>,
}

impl Pins {
    /// Pins `bytes` until every record before `end` is done.
    pub fn push(&mut self, end: RecordId, bytes: usize) {
        self.pins.push_back((end, bytes));
    }

    /// Releases the pins whose records are all done (`oldest`: the oldest unfinished).
    pub fn release(&mut self, oldest: RecordId) {
        while self.pins.front().is_some_and(|(end, _)| *end <= oldest) {
            self.pins.pop_front();
        }
    }

    /// Bytes still pinned (given the oldest unfinished record), except the pin ending at
    /// `except`, if any.
    pub fn bytes_excluding(&self, oldest: RecordId, except: Option<RecordId>) -> usize {
        self.pins
            .iter()
            .filter(|(end, _)| *end > oldest && Some(*end) != except)
            .map(|(_, b)| b)
            .sum()
    }

    /// Drops every pin (the lease is lost: nothing of it will complete).
    pub fn clear(&mut self) {
        self.pins.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_release_in_order_and_exclude_one() {
        let mut p = Pins::default();
        p.push(RecordId(2), 10);
        p.push(RecordId(5), 20);
        assert_eq!(p.bytes_excluding(RecordId(0), None), 30);
        assert_eq!(p.bytes_excluding(RecordId(0), Some(RecordId(5))), 10);
        assert_eq!(p.bytes_excluding(RecordId(2), None), 20);
        p.release(RecordId(2));
        assert_eq!(p.bytes_excluding(RecordId(0), None), 20);
        p.clear();
        assert_eq!(p.bytes_excluding(RecordId(0), None), 0);
    }

    #[test]
    fn parts_are_never_smaller_than_the_minimum() {
        assert_eq!(
            PartBudget::of(0, 0),
            PartBudget {
                items: MIN_PART_ITEMS,
                bytes: MIN_PART_BYTES
            }
        );
        assert_eq!(PartBudget::of(50_000, 8 << 20).items, 50_000);
    }
}
