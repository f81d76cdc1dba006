//! Kinesis sequence numbers, kept as the decimal strings the daemon sends.
//!
//! Real sequence numbers have 56 digits and more: they do not fit in a `u128`, and parsing
//! them into a float or a truncated integer is the classic way to checkpoint the wrong
//! record. [`SequenceNumber`] stores the string as received and orders values the way the
//! Java KCL's `ExtendedSequenceNumber` does: as big integers, with the sentinels
//! `AT_TIMESTAMP` (-3) < `TRIM_HORIZON` (-2) < `LATEST` (-1) below every real number and
//! `SHARD_END` above everything. Comparing two digit strings needs no arithmetic: strip
//! leading zeros, the longer one is larger, equal lengths compare lexicographically.
//!
//! # Storage
//!
//! The digits live in a shared string, and a sequence number is a view of it. One parsed
//! alone owns a string of its own; the records of a large line are parsed on the mapper
//! threads into one [`DigitsSlab`] per chunk of records, so a thousand records cost one
//! allocation, not a thousand. That matters beyond the allocation itself: the numbers are
//! made on one thread and dropped on another (the lease's, once its history forgets them),
//! and a free on a thread other than the allocating one takes the allocator's arena lock,
//! which the host server's threads share (`sys::cap_allocator_arenas`). A slab is freed
//! with the last number that points into it; the history keeps a few batches of numbers
//! (`protocol::order`), so it keeps their slabs, which hold nothing else.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Kinesis sequence number: a decimal digit string or one of the KCL sentinels.
/// Equality is of the strings (`007` is not `7`, though they order as equal).
#[derive(Clone, Debug)]
pub struct SequenceNumber(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Sentinel(Sentinel),
    /// Decimal digits, exactly as received (leading zeros kept for the round trip):
    /// `text[at..at + len]`. Shared, because every item of a record (and every user record
    /// of an aggregate) carries the same number, and the numbers of a chunk of records
    /// share one [`DigitsSlab`].
    Digits {
        text: Arc<str>,
        at: u32,
        len: u32,
    },
}

/// The sentinel checkpoint values the daemon understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sentinel {
    /// A lease positioned at a timestamp given in the daemon's configuration.
    AtTimestamp,
    /// A lease positioned at the oldest record in the shard.
    TrimHorizon,
    /// A lease positioned at the tip of the shard.
    Latest,
    /// A shard that was fully processed; sorts above every sequence number.
    ShardEnd,
}

impl Sentinel {
    /// The wire spelling of the sentinel.
    pub fn as_str(self) -> &'static str {
        match self {
            Sentinel::AtTimestamp => "AT_TIMESTAMP",
            Sentinel::TrimHorizon => "TRIM_HORIZON",
            Sentinel::Latest => "LATEST",
            Sentinel::ShardEnd => "SHARD_END",
        }
    }
}

/// A string that is neither a decimal sequence number nor a known sentinel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence number {0:?}: expected decimal digits or one of TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END")]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    /// Parses a sequence number or sentinel; anything else is an error.
    pub fn parse(s: &str) -> Result<Self, InvalidSequenceNumber> {
        let sentinel = match s {
            "AT_TIMESTAMP" => Some(Sentinel::AtTimestamp),
            "TRIM_HORIZON" => Some(Sentinel::TrimHorizon),
            "LATEST" => Some(Sentinel::Latest),
            "SHARD_END" => Some(Sentinel::ShardEnd),
            _ => None,
        };
        if let Some(sentinel) = sentinel {
            return Ok(SequenceNumber(Repr::Sentinel(sentinel)));
        }
        match u32::try_from(s.len()) {
            Ok(len) if is_digits(s) => Ok(SequenceNumber(Repr::Digits {
                text: s.into(),
                at: 0,
                len,
            })),
            // Not digits, or more than 4 Gi of them (Kinesis numbers have at most 129).
            _ => Err(InvalidSequenceNumber(s.to_owned())),
        }
    }

    /// Parses like [`SequenceNumber::parse`], sharing the digits of `previous` when they
    /// are the same (consecutive user records of one aggregate) instead of allocating.
    pub fn parse_reusing(
        s: &str,
        previous: Option<&SequenceNumber>,
    ) -> Result<Self, InvalidSequenceNumber> {
        match previous {
            Some(prev) if prev.as_sentinel().is_none() && prev.as_str() == s => Ok(prev.clone()),
            _ => Self::parse(s),
        }
    }

    /// The sentinel value, as a sequence number.
    pub fn sentinel(sentinel: Sentinel) -> Self {
        SequenceNumber(Repr::Sentinel(sentinel))
    }

    /// The sentinel this is, if any.
    pub fn as_sentinel(&self) -> Option<Sentinel> {
        match &self.0 {
            Repr::Sentinel(s) => Some(*s),
            Repr::Digits { .. } => None,
        }
    }

    /// The wire string, exactly as received.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Sentinel(s) => s.as_str(),
            // The view was checked to lie in `text` when it was made.
            Repr::Digits { text, at, len } => &text[*at as usize..(*at + *len) as usize],
        }
    }

    /// The rank used for ordering: sentinels below, digits, then SHARD_END.
    fn rank(&self) -> i8 {
        match &self.0 {
            Repr::Sentinel(Sentinel::AtTimestamp) => -3,
            Repr::Sentinel(Sentinel::TrimHorizon) => -2,
            Repr::Sentinel(Sentinel::Latest) => -1,
            Repr::Digits { .. } => 0,
            Repr::Sentinel(Sentinel::ShardEnd) => 1,
        }
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Digits { .. }, Repr::Digits { .. }) => {
                if self.same_view(other) {
                    // Consecutive user records of an aggregate share their digits.
                    return Ordering::Equal;
                }
                let a = self.as_str().trim_start_matches('0');
                let b = other.as_str().trim_start_matches('0');
                a.len().cmp(&b.len()).then_with(|| a.cmp(b))
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl SequenceNumber {
    /// Whether both keep their digits in the same allocation (tests of the slabs).
    #[cfg(test)]
    pub(crate) fn shares_storage_with(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Digits { text: a, .. }, Repr::Digits { text: b, .. }) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Whether both are the same digits of the same shared string.
    fn same_view(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (
                Repr::Digits {
                    text: a,
                    at: i,
                    len: m,
                },
                Repr::Digits {
                    text: b,
                    at: j,
                    len: n,
                },
            ) => Arc::ptr_eq(a, b) && i == j && m == n,
            _ => false,
        }
    }
}

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Sentinel(a), Repr::Sentinel(b)) => a == b,
            (Repr::Digits { .. }, Repr::Digits { .. }) => {
                self.same_view(other) || self.as_str() == other.as_str()
            }
            _ => false,
        }
    }
}

impl Eq for SequenceNumber {}

impl Hash for SequenceNumber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A digit string never spells a sentinel, so the strings alone tell them apart.
        self.as_str().hash(state);
    }
}

/// Whether `s` is a non-empty string of ASCII digits.
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Where one sequence number's digits are in a [`DigitsSlab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabSpan {
    at: u32,
    len: u32,
}

/// The digits of many sequence numbers in one string, so that they cost one allocation
/// (module docs, "Storage"): [`DigitsSlab::push`] each number's digits, then
/// [`DigitsSlab::finish`] and [`SharedDigits::get`] each number.
#[derive(Debug, Default)]
pub struct DigitsSlab {
    text: String,
}

impl DigitsSlab {
    /// An empty slab with room for `bytes` digits.
    pub fn with_capacity(bytes: usize) -> Self {
        DigitsSlab {
            text: String::with_capacity(bytes),
        }
    }

    /// Appends `s` if it is a decimal sequence number and the slab stays under 4 GiB;
    /// `None` otherwise (a sentinel, not a number, or too much): parse that one alone,
    /// with [`SequenceNumber::parse`], which also says what is wrong with it.
    pub fn push(&mut self, s: &str) -> Option<SlabSpan> {
        let at = u32::try_from(self.text.len()).ok()?;
        let len = u32::try_from(s.len()).ok()?;
        at.checked_add(len)?;
        if !is_digits(s) {
            return None;
        }
        self.text.push_str(s);
        Some(SlabSpan { at, len })
    }

    /// Like [`DigitsSlab::push`], but when `s` is the number at `last` (consecutive user
    /// records of an aggregate), that span again instead of a copy.
    pub fn push_reusing(&mut self, s: &str, last: Option<SlabSpan>) -> Option<SlabSpan> {
        match last {
            Some(span)
                if self
                    .text
                    .get(span.at as usize..(span.at + span.len) as usize)
                    == Some(s) =>
            {
                Some(span)
            }
            _ => self.push(s),
        }
    }

    /// The digits pushed, shared by the numbers made from them.
    pub fn finish(self) -> SharedDigits {
        SharedDigits(Arc::from(self.text))
    }
}

/// A finished [`DigitsSlab`].
#[derive(Debug, Clone)]
pub struct SharedDigits(Arc<str>);

impl SharedDigits {
    /// The sequence number at `span`, which [`DigitsSlab::push`] returned for this slab
    /// (the slab holds digits only, so any span within it is a number).
    ///
    /// # Panics
    /// If `span` lies beyond this slab (a span of another, larger one: a bug).
    pub fn get(&self, span: SlabSpan) -> SequenceNumber {
        let end = (span.at + span.len) as usize;
        assert!(
            end <= self.0.len(),
            "a sequence number's span outside its slab"
        );
        SequenceNumber(Repr::Digits {
            text: self.0.clone(),
            at: span.at,
            len: span.len,
        })
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SequenceNumber::parse(s)
    }
}

impl Serialize for SequenceNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SequenceNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SequenceNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An extended sequence number: the record's sequence number and its sub-sequence number
/// (the index of a user record inside a KPL aggregate; 0 for plain records). Ordered by
/// sequence number, then sub-sequence number, like the KCL's `ExtendedSequenceNumber`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Esn {
    /// The Kinesis sequence number.
    pub seq: SequenceNumber,
    /// The sub-sequence number (a null on the wire counts as 0, as in the KCL).
    pub sub: i64,
}

impl Esn {
    /// Builds an extended sequence number.
    pub fn new(seq: SequenceNumber, sub: i64) -> Self {
        Esn { seq, sub }
    }
}

impl fmt::Display for Esn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.seq, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sn(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    #[test]
    fn orders_like_big_integers_beyond_u128() {
        let a = "49680445498841953494698307936256227907416662446197178370";
        let b = "49680445498841953494698307936257436833236277075371884546";
        assert!(sn(a) < sn(b));
        assert!(sn("9") < sn("10"));
        assert_eq!(sn("007").cmp(&sn("7")), Ordering::Equal);
        assert!(sn("0") < sn("1"));
    }

    #[test]
    fn sentinels_sort_like_the_kcl() {
        let order = [
            "AT_TIMESTAMP",
            "TRIM_HORIZON",
            "LATEST",
            "0",
            "123456789012345678901234567890123456789012",
            "SHARD_END",
        ];
        for w in order.windows(2) {
            assert!(sn(w[0]) < sn(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "12a", "-1", " 1", "shard_end", "1.0"] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn esn_breaks_ties_on_sub() {
        assert!(Esn::new(sn("5"), 1) < Esn::new(sn("5"), 2));
        assert!(Esn::new(sn("5"), 99) < Esn::new(sn("6"), 0));
    }

    fn hash_of(s: &SequenceNumber) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    }

    #[test]
    fn a_number_in_a_slab_is_the_number_parsed_alone() {
        let (a, b) = ("4968044549884195349469830793625622790741666", "7");
        let mut slab = DigitsSlab::with_capacity(8);
        let (sa, sb) = (slab.push(a).unwrap(), slab.push(b).unwrap());
        let shared = slab.finish();
        let (ga, gb) = (shared.get(sa), shared.get(sb));
        assert_eq!((ga.as_str(), gb.as_str()), (a, b));
        assert_eq!(ga, sn(a));
        assert_eq!(hash_of(&ga), hash_of(&sn(a)));
        assert_ne!(ga, gb);
        assert!(gb < ga && ga < sn("SHARD_END") && sn("LATEST") < gb);
        assert_eq!(ga.as_sentinel(), None);
    }

    #[test]
    fn a_slab_takes_digits_only_and_shares_a_repeated_number() {
        let mut slab = DigitsSlab::default();
        for bad in ["", "SHARD_END", "12a", "-1"] {
            assert_eq!(slab.push(bad), None, "{bad:?}");
        }
        let first = slab.push_reusing("123", None).unwrap();
        assert_eq!(slab.push_reusing("123", Some(first)), Some(first));
        let other = slab.push_reusing("124", Some(first)).unwrap();
        assert_ne!(other, first);
        let shared = slab.finish();
        assert_eq!(shared.get(first).as_str(), "123");
        assert_eq!(shared.get(other).as_str(), "124");
    }

    #[test]
    fn a_sequence_number_is_three_words() {
        assert!(std::mem::size_of::<SequenceNumber>() <= 24);
    }

    proptest! {
        #[test]
        fn slab_and_alone_agree(a in "[0-9]{1,60}", b in "[0-9]{1,60}") {
            let mut slab = DigitsSlab::default();
            let (sa, sb) = (slab.push(&a).unwrap(), slab.push(&b).unwrap());
            let shared = slab.finish();
            let (ga, gb) = (shared.get(sa), shared.get(sb));
            prop_assert_eq!(ga.cmp(&gb), sn(&a).cmp(&sn(&b)));
            prop_assert_eq!(ga == gb, a == b);
            prop_assert_eq!(&ga, &sn(&a));
        }

        #[test]
        fn agrees_with_u128_where_it_fits(a: u128, b: u128) {
            prop_assert_eq!(sn(&a.to_string()).cmp(&sn(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn keeps_the_string(s in "[0-9]{1,80}") {
            let parsed = sn(&s);
            prop_assert_eq!(parsed.as_str(), s.as_str());
        }
    }
}
