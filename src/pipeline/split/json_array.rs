//! `--split json-array`: one item per element of a top-level JSON array, as its exact
//! JSON text. The array is parsed element by element and refused at the first element past
//! the item bound, so a huge array of tiny elements is never collected whole.

use std::cell::Cell;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::SplitError;

/// The elements of a top-level JSON array, as slices of `bytes`; stops parsing at the
/// first element past `max_items`.
pub(super) fn elements(bytes: &[u8], max_items: usize) -> Result<Vec<&[u8]>, SplitError> {
    let overflow = Cell::new(false);
    let seed = BoundedArray {
        max: max_items,
        overflow: &overflow,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(elements) => Ok(elements),
        Err(_) if overflow.get() => Err(SplitError::TooManyItems(max_items)),
        Err(error) => Err(SplitError::Json {
            expected: "a JSON array",
            error,
        }),
    }
}

/// Deserializes a JSON array into its elements' text, failing (with `overflow` set) at the
/// element after `max`, so that a huge array of tiny elements is never collected whole.
struct BoundedArray<'c> {
    max: usize,
    overflow: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BoundedArray<'_> {
    type Value = Vec<&'de [u8]>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedArray<'_> {
    type Value = Vec<&'de [u8]>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(e) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.max {
                self.overflow.set(true);
                return Err(serde::de::Error::custom("too many elements"));
            }
            out.push(e.get().as_bytes());
        }
        Ok(out)
    }
}
