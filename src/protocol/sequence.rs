//! Kinesis sequence numbers, kept as the decimal strings the daemon sends.
//!
//! Real sequence numbers have 56 digits and more: they do not fit in a `u128`, and parsing
//! them into a float or a truncated integer is the classic way to checkpoint the wrong
//! record. [`SequenceNumber`] stores the string as received and orders values the way the
//! Java KCL's `ExtendedSequenceNumber` does: as big integers, with the sentinels
//! `AT_TIMESTAMP` (-3) < `TRIM_HORIZON` (-2) < `LATEST` (-1) below every real number and
//! `SHARD_END` above everything. Comparing two digit strings needs no arithmetic: strip
//! leading zeros, the longer one is larger, equal lengths compare lexicographically.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Kinesis sequence number: a decimal digit string or one of the KCL sentinels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceNumber(Repr);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Repr {
    Sentinel(Sentinel),
    /// Decimal digits, exactly as received (leading zeros kept for the round trip);
    /// shared, because every item of a record (and every user record of an aggregate)
    /// carries the same number.
    Digits(Arc<str>),
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
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSequenceNumber(s.to_owned()));
        }
        Ok(SequenceNumber(Repr::Digits(s.into())))
    }

    /// Parses like [`SequenceNumber::parse`], sharing the digits of `previous` when they
    /// are the same (consecutive user records of one aggregate) instead of allocating.
    pub fn parse_reusing(
        s: &str,
        previous: Option<&SequenceNumber>,
    ) -> Result<Self, InvalidSequenceNumber> {
        if let Some(prev @ SequenceNumber(Repr::Digits(d))) = previous {
            if **d == *s {
                return Ok(prev.clone());
            }
        }
        Self::parse(s)
    }

    /// The digits as a shared string (allocates only for sentinels).
    pub fn shared_str(&self) -> Arc<str> {
        match &self.0 {
            Repr::Digits(d) => d.clone(),
            Repr::Sentinel(s) => Arc::from(s.as_str()),
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
            Repr::Digits(_) => None,
        }
    }

    /// The wire string, exactly as received.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Sentinel(s) => s.as_str(),
            Repr::Digits(d) => d,
        }
    }

    /// The rank used for ordering: sentinels below, digits, then SHARD_END.
    fn rank(&self) -> i8 {
        match &self.0 {
            Repr::Sentinel(Sentinel::AtTimestamp) => -3,
            Repr::Sentinel(Sentinel::TrimHorizon) => -2,
            Repr::Sentinel(Sentinel::Latest) => -1,
            Repr::Digits(_) => 0,
            Repr::Sentinel(Sentinel::ShardEnd) => 1,
        }
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // Consecutive user records of an aggregate share their digits.
            (Repr::Digits(a), Repr::Digits(b)) if Arc::ptr_eq(a, b) => Ordering::Equal,
            (Repr::Digits(a), Repr::Digits(b)) => {
                let a = a.trim_start_matches('0');
                let b = b.trim_start_matches('0');
                a.len().cmp(&b.len()).then_with(|| a.cmp(b))
            }
            _ => self.rank().cmp(&other.rank()),
        }
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

    proptest! {
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
