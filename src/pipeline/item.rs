//! Items: the unit of work a handler sees.
//!
//! A daemon record becomes one or more items (the record splitter decides how many; see
//! [`crate::pipeline::split`]). Each item remembers which delivered record it came from
//! ([`RecordId`]), so that its completion can be credited to the checkpoint tracker, and
//! carries its place in the record as `user_sub` / `user_total`.
//!
//! Payloads stay base64 until someone needs bytes: the file handler writes the daemon's
//! base64 straight through, so a record that is not split is never decoded at all.
//!
//! Items are *borrowed*: an [`Item`] is a view whose text lives in an [`ItemBlock`], the
//! unit that travels to a worker. A block holds one reference to the daemon line its
//! items point into, plus its own bytes for text that is not in the line (de-aggregated
//! payloads, unescaped keys). This is for speed: with one reference-counted handle per
//! item, threads fought over the same counters (the parse threads incrementing, the
//! workers decrementing), and that cost more than parsing; with blocks there is one
//! per block, no allocation per item, and a slot is a few words to move.
//!
//! The item JSON ([`Item::write_json`]) is a contract shared by the file handler's output
//! and the exec handler's input:
//! `{"shardId":"…","sequenceNumber":"…","subSequenceNumber":N,"userSub":N,"userTotal":N,
//! "partitionKey":"…","explicitHashKey":null,"approximateArrivalTimestamp":N,"data":"<base64>"}`.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use base64::Engine;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::codec::LineBuf;
use crate::protocol::tracker::RecordId;

/// The standard base64 engine (alphabet `+/`, padded), as the daemon's Jackson uses.
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An item's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Base64 text exactly as the daemon sent it (not yet decoded, maybe never), usually
    /// a range of the daemon's line itself.
    Base64(&'a str),
    /// Decoded bytes (after splitting, de-aggregation or decompression).
    Bytes(&'a [u8]),
}

impl<'a> Payload<'a> {
    /// The payload as bytes, decoding base64 if needed.
    pub fn bytes(&self) -> Result<Cow<'a, [u8]>, base64::DecodeError> {
        match *self {
            Payload::Base64(s) => BASE64.decode(s).map(Cow::Owned),
            Payload::Bytes(b) => Ok(Cow::Borrowed(b)),
        }
    }

    /// The payload as base64 text, encoding if needed.
    pub fn base64(&self) -> Cow<'a, str> {
        match *self {
            Payload::Base64(s) => Cow::Borrowed(s),
            Payload::Bytes(b) => Cow::Owned(BASE64.encode(b)),
        }
    }
}

/// One unit of work: a whole record, or one piece of it (a view into an [`ItemBlock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    /// The delivered record this item belongs to.
    pub record: RecordId,
    /// The record's sequence number (shared by every item of the record).
    pub sequence_number: &'a str,
    /// The record's sub-sequence number as the daemon delivered it.
    pub sub_sequence_number: i64,
    /// The index of this item among the items of its record.
    pub user_sub: u32,
    /// How many items the record produced.
    pub user_total: u32,
    /// The partition key: routes the item to a worker (same key, same worker, same order).
    pub partition_key: &'a str,
    /// The explicit hash key, where a KPL sub-record has one.
    pub explicit_hash_key: Option<&'a str>,
    /// When Kinesis accepted the record, epoch milliseconds.
    pub approximate_arrival_timestamp: Option<i64>,
    /// The payload.
    pub data: Payload<'a>,
}

impl<'a> Item<'a> {
    /// A whole record as one item (the first and only item of its record), with no
    /// explicit hash key and no arrival time: for a handler's tests. Items the handler is
    /// given in production come from rsmld.
    pub fn new(sequence_number: &'a str, partition_key: &'a str, data: Payload<'a>) -> Self {
        Item {
            record: RecordId(0),
            sequence_number,
            sub_sequence_number: 0,
            user_sub: 0,
            user_total: 1,
            partition_key,
            explicit_hash_key: None,
            approximate_arrival_timestamp: None,
            data,
        }
    }
}

/// A writer that drops the first byte written through it (the `{` of an item JSON that
/// [`Item::write_json_in`] has opened already).
struct SkipFirst<W> {
    inner: W,
    skipped: bool,
}

impl<W: io::Write> io::Write for SkipFirst<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.skipped && !buf.is_empty() {
            self.skipped = true;
            return Ok(1 + self.inner.write(&buf[1..])?);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Item<'_> {
    /// [`Item::write_json`] for an item of a lease of `application`: when the application
    /// is known (a lease of `rsmld serve`), the JSON starts with `"application":"…"`;
    /// otherwise (child mode) it is exactly [`Item::write_json`]'s.
    pub fn write_json_in<W: io::Write>(
        &self,
        application: &str,
        shard_id: &str,
        mut out: W,
    ) -> io::Result<()> {
        if application.is_empty() {
            return self.write_json(shard_id, out);
        }
        out.write_all(b"{\"application\":")?;
        crate::json::write_ascii(&mut out, application).map_err(io::Error::other)?;
        out.write_all(b",")?;
        self.write_json(
            shard_id,
            SkipFirst {
                inner: out,
                skipped: false,
            },
        )
    }

    /// Appends the item JSON of an item of shard `shard_id` (ASCII-only, one line, no
    /// newline) to `out`.
    pub fn write_json<W: io::Write>(&self, shard_id: &str, mut out: W) -> io::Result<()> {
        let data = self.data.base64();
        let texts = [shard_id, self.sequence_number, self.partition_key, &data];
        if texts
            .iter()
            .chain(self.explicit_hash_key.iter())
            .all(|t| plain(t))
        {
            // What the serializer below writes for strings that need no escape (the usual
            // case: ids, digits, base64), without its per-byte escape scan.
            let mut num = [0u8; 20];
            let mut parts = [
                &b"{\"shardId\":\""[..],
                shard_id.as_bytes(),
                b"\",\"sequenceNumber\":\"",
                self.sequence_number.as_bytes(),
                b"\",\"subSequenceNumber\":",
            ];
            for part in parts {
                out.write_all(part)?;
            }
            if self.sub_sequence_number < 0 {
                out.write_all(b"-")?;
            }
            out.write_all(decimal(self.sub_sequence_number.unsigned_abs(), &mut num))?;
            out.write_all(b",\"userSub\":")?;
            out.write_all(decimal(self.user_sub.into(), &mut num))?;
            out.write_all(b",\"userTotal\":")?;
            out.write_all(decimal(self.user_total.into(), &mut num))?;
            parts = [
                b",\"partitionKey\":\"",
                self.partition_key.as_bytes(),
                b"\",\"explicitHashKey\":",
                b"",
                b"",
            ];
            if let Some(k) = self.explicit_hash_key {
                parts[3] = b"\"";
                parts[4] = k.as_bytes();
            }
            for part in parts {
                out.write_all(part)?;
            }
            out.write_all(match self.explicit_hash_key {
                Some(_) => b"\",\"approximateArrivalTimestamp\":",
                None => b"null,\"approximateArrivalTimestamp\":",
            })?;
            match self.approximate_arrival_timestamp {
                Some(t) => {
                    if t < 0 {
                        out.write_all(b"-")?;
                    }
                    out.write_all(decimal(t.unsigned_abs(), &mut num))?;
                }
                None => out.write_all(b"null")?,
            }
            out.write_all(b",\"data\":\"")?;
            out.write_all(data.as_bytes())?;
            return out.write_all(b"\"}");
        }
        let json = ItemJson {
            shard_id,
            item: self,
        };
        crate::json::write_ascii(out, &json).map_err(io::Error::other)
    }
}

/// The decimal digits of `v`, written into the end of `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// True when `s` is printable ASCII without `"` or `\`: JSON needs no escape in it.
/// Eight bytes at a time; a word that looks bad (the tests below can report a false
/// alarm after a byte >= 0x80, never miss one) sends the caller to the serializer.
fn plain(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let bad = |w: u64| {
        let control = w.wrapping_sub(0x20 * ONES) & !w & HIGH != 0; // a byte < 0x20
        let high = (w.wrapping_add(ONES) | w) & HIGH != 0; // a byte >= 0x7f
        control || high || has_zero(w ^ (b'"' as u64 * ONES)) || has_zero(w ^ (b'\\' as u64 * ONES))
    };
    let bytes = s.as_bytes();
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if bad(u64::from_le_bytes(w)) {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

struct ItemJson<'s, 'i, 'a> {
    shard_id: &'s str,
    item: &'i Item<'a>,
}

impl Serialize for ItemJson<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let item = self.item;
        let mut st = s.serialize_struct("item", 9)?;
        st.serialize_field("shardId", self.shard_id)?;
        st.serialize_field("sequenceNumber", item.sequence_number)?;
        st.serialize_field("subSequenceNumber", &item.sub_sequence_number)?;
        st.serialize_field("userSub", &item.user_sub)?;
        st.serialize_field("userTotal", &item.user_total)?;
        st.serialize_field("partitionKey", item.partition_key)?;
        st.serialize_field("explicitHashKey", &item.explicit_hash_key)?;
        st.serialize_field(
            "approximateArrivalTimestamp",
            &item.approximate_arrival_timestamp,
        )?;
        st.serialize_field("data", &*item.data.base64())?;
        st.end()
    }
}

/// Where a piece of an item's text lives: in the block's line, or in its own bytes.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    len: usize,
    own: bool,
}

/// An item inside a block: numbers, and spans for its text.
#[derive(Clone, Copy, Debug)]
struct Slot {
    record: RecordId,
    sub_sequence_number: i64,
    approximate_arrival_timestamp: Option<i64>,
    user_sub: u32,
    user_total: u32,
    base64: bool,
    sequence_number: Span,
    partition_key: Span,
    explicit_hash_key: Option<Span>,
    data: Span,
}

/// Items in transit to a worker, in order; see the module docs.
///
/// [`ItemBlock::push`] stores text that lies inside the block's line as a range of it,
/// and copies anything else into the block.
#[derive(Default)]
pub struct ItemBlock {
    line: Option<Arc<LineBuf>>,
    own: Vec<u8>,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for ItemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl ItemBlock {
    /// An empty block whose items may point into `line`.
    pub fn new(line: Option<Arc<LineBuf>>) -> Self {
        ItemBlock {
            line,
            own: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// An empty block with room for `items` items.
    pub fn with_capacity(line: Option<Arc<LineBuf>>, items: usize) -> Self {
        ItemBlock {
            line,
            own: Vec::new(),
            slots: Vec::with_capacity(items),
        }
    }

    /// A block holding copies of `items`.
    pub fn from_items<'a>(items: impl IntoIterator<Item = Item<'a>>) -> Self {
        let mut block = ItemBlock::new(None);
        for item in items {
            block.push(&item);
        }
        block
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the block has no items.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Heap bytes this block holds of its own (item slots and copied text; not the line):
    /// what its items cost in memory beyond the daemon's line.
    pub fn heap_bytes(&self) -> usize {
        self.own.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// The line this block's items may point into.
    pub fn line(&self) -> Option<&Arc<LineBuf>> {
        self.line.as_ref()
    }

    /// Appends an item (its text is referenced when it lies in the line, else copied).
    pub fn push(&mut self, item: &Item<'_>) {
        let (data, base64) = match item.data {
            Payload::Base64(s) => (self.span(s.as_bytes()), true),
            Payload::Bytes(b) => (self.span(b), false),
        };
        let slot = Slot {
            record: item.record,
            sub_sequence_number: item.sub_sequence_number,
            approximate_arrival_timestamp: item.approximate_arrival_timestamp,
            user_sub: item.user_sub,
            user_total: item.user_total,
            base64,
            sequence_number: self.span(item.sequence_number.as_bytes()),
            partition_key: self.span(item.partition_key.as_bytes()),
            explicit_hash_key: item.explicit_hash_key.map(|k| self.span(k.as_bytes())),
            data,
        };
        self.slots.push(slot);
    }

    /// The item at `index`, if any.
    pub fn get(&self, index: usize) -> Option<Item<'_>> {
        self.slots.get(index).map(|slot| self.view(slot))
    }

    /// The items, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Item<'_>> + '_ {
        self.slots.iter().map(|slot| self.view(slot))
    }

    /// The items from `start` on, in order.
    pub fn iter_from(&self, start: usize) -> impl ExactSizeIterator<Item = Item<'_>> + '_ {
        self.slots[start.min(self.slots.len())..]
            .iter()
            .map(|slot| self.view(slot))
    }

    /// Keeps only the items whose record `keep` accepts.
    pub fn retain_records(&mut self, mut keep: impl FnMut(RecordId) -> bool) {
        self.slots.retain(|slot| keep(slot.record));
    }

    /// Splits the block by `route` (an item's worker, below `n`), keeping order within
    /// each part; the parts share the line.
    pub fn split_by(&self, n: usize, route: impl Fn(&Item<'_>) -> usize) -> Vec<ItemBlock> {
        let mut parts: Vec<ItemBlock> = (0..n)
            .map(|_| ItemBlock::with_capacity(self.line.clone(), self.len() / n.max(1) + 8))
            .collect();
        for item in self.iter() {
            parts[route(&item).min(n.saturating_sub(1))].push(&item);
        }
        parts
    }

    fn span(&mut self, text: &[u8]) -> Span {
        if let Some(line) = &self.line {
            let base = line.as_ptr() as usize;
            let at = text.as_ptr() as usize;
            if at >= base && at + text.len() <= base + line.len() {
                return Span {
                    start: at - base,
                    len: text.len(),
                    own: false,
                };
            }
        }
        let start = self.own.len();
        self.own.extend_from_slice(text);
        Span {
            start,
            len: text.len(),
            own: true,
        }
    }

    fn bytes(&self, span: Span) -> &[u8] {
        let range = span.start..span.start + span.len;
        match (&self.line, span.own) {
            (Some(line), false) => &line[range],
            _ => &self.own[range],
        }
    }

    fn text(&self, span: Span) -> &str {
        let bytes = self.bytes(span);
        // SAFETY: every text span was made by `push` from a `&str` (sequence number,
        // partition key, explicit hash key, base64 payload) and refers to exactly those
        // bytes: the line is immutable while the block holds it, and `own` only grows.
        // Validating again would cost as much as parsing did (payloads are most bytes).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn view(&self, slot: &Slot) -> Item<'_> {
        Item {
            record: slot.record,
            sequence_number: self.text(slot.sequence_number),
            sub_sequence_number: slot.sub_sequence_number,
            user_sub: slot.user_sub,
            user_total: slot.user_total,
            partition_key: self.text(slot.partition_key),
            explicit_hash_key: slot.explicit_hash_key.map(|k| self.text(k)),
            approximate_arrival_timestamp: slot.approximate_arrival_timestamp,
            data: if slot.base64 {
                Payload::Base64(self.text(slot.data))
            } else {
                Payload::Bytes(self.bytes(slot.data))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_json_of(item: &Item, shard_id: &str) -> String {
        let json = ItemJson { shard_id, item };
        crate::json::to_ascii_string(&json).unwrap()
    }

    fn fast_json_of(item: &Item, shard_id: &str) -> String {
        let mut v = Vec::new();
        item.write_json(shard_id, &mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn plain_is_exactly_printable_ascii_without_quote_or_backslash() {
        for b in 0u8..=255 {
            let want = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            let mut text = vec![b'a'; 17];
            for at in [0, 7, 8, 15, 16] {
                text.iter_mut().for_each(|c| *c = b'a');
                text[at] = b;
                if let Ok(s) = std::str::from_utf8(&text) {
                    assert_eq!(plain(s), want, "byte {b:#x} at {at}");
                }
            }
        }
        assert!(plain(""));
        assert!(!plain("abcdefgh\u{e9}"));
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    proptest! {
        /// The direct writer and the serializer agree on every item, whatever its text
        /// (escapes, control characters, non-ASCII fall back to the serializer).
        #[test]
        fn item_json_fast_path_matches_the_serializer(
            shard in "[ -~]{0,12}|\\PC{0,6}",
            seq in "[0-9]{1,60}|[ -~\u{0}-\u{1f}é]{0,8}",
            key in "[ -~]{0,20}|\\PC{0,8}",
            hash in proptest::option::of("[0-9]{1,39}|[ -~\n]{0,5}"),
            sub in any::<i64>(),
            user_sub in any::<u32>(),
            user_total in any::<u32>(),
            ts in proptest::option::of(any::<i64>()),
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            raw in "[A-Za-z0-9+/=]{0,20}|[ -~]{0,6}",
            decoded in any::<bool>(),
        ) {
            let data = if decoded { Payload::Bytes(&bytes) } else { Payload::Base64(&raw) };
            let it = Item {
                record: RecordId(0),
                sequence_number: &seq,
                sub_sequence_number: sub,
                user_sub,
                user_total,
                partition_key: &key,
                explicit_hash_key: hash.as_deref(),
                approximate_arrival_timestamp: ts,
                data,
            };
            prop_assert_eq!(fast_json_of(&it, &shard), serde_json_of(&it, &shard));
        }
    }

    fn item<'a>(key: &'a str, data: Payload<'a>) -> Item<'a> {
        Item {
            record: RecordId(0),
            sequence_number: "49680445498841953494698307936256227907416662446197178370",
            sub_sequence_number: 3,
            user_sub: 1,
            user_total: 2,
            partition_key: key,
            explicit_hash_key: None,
            approximate_arrival_timestamp: Some(1795310498058),
            data,
        }
    }

    #[test]
    fn a_slot_fits_the_readme_memory_bound() {
        // README, "Memory": an item slot counts as 256 bytes in the bound.
        assert!(
            std::mem::size_of::<Slot>() <= 256,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn item_json_is_the_contract() {
        let mut out = Vec::new();
        item("k\u{e9}", Payload::Bytes(b"hi"))
            .write_json("shardId-000000000001", &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"shardId":"shardId-000000000001","sequenceNumber":"49680445498841953494698307936256227907416662446197178370","subSequenceNumber":3,"userSub":1,"userTotal":2,"partitionKey":"k\u00e9","explicitHashKey":null,"approximateArrivalTimestamp":1795310498058,"data":"aGk="}"#
        );
    }

    /// A lease of a named application: the same JSON with `application` first (escaped,
    /// ASCII); without one, exactly the child-mode JSON. Both on the fast path (plain
    /// texts) and the serializer's (a key that needs an escape).
    #[test]
    fn item_json_of_a_named_application_says_it_first() {
        for key in ["plain-key", "k\u{e9}"] {
            let it = item(key, Payload::Bytes(b"hi"));
            let (mut plain, mut none, mut named) = (Vec::new(), Vec::new(), Vec::new());
            it.write_json("shardId-1", &mut plain).unwrap();
            it.write_json_in("", "shardId-1", &mut none).unwrap();
            assert_eq!(none, plain);
            it.write_json_in("ord\"ers\u{e9}", "shardId-1", &mut named)
                .unwrap();
            let named = String::from_utf8(named).unwrap();
            assert!(named.is_ascii(), "{named}");
            let rest = std::str::from_utf8(&plain[1..]).unwrap();
            assert_eq!(
                named,
                format!("{{\"application\":\"ord\\\"ers\\u00e9\",{rest}")
            );
            let v: serde_json::Value = serde_json::from_str(&named).unwrap();
            assert_eq!(v["application"], "ord\"ers\u{e9}");
            assert_eq!(v["partitionKey"], key);
        }
    }

    #[test]
    fn blocks_reference_the_line_and_copy_the_rest() {
        let text = br#"{"k":"key-1","d":"aGk="}"#.to_vec();
        let line = Arc::new(LineBuf::new(text, None));
        let key = std::str::from_utf8(&line[6..11]).unwrap();
        let data = std::str::from_utf8(&line[18..22]).unwrap();
        let mut block = ItemBlock::new(Some(line.clone()));
        block.push(&item(key, Payload::Base64(data)));
        let owned_key = String::from("elsewhere");
        block.push(&Item {
            explicit_hash_key: Some("123"),
            ..item(&owned_key, Payload::Bytes(&[0, 255]))
        });
        // Only the sequence numbers, the second key, hash key and payload were copied.
        assert_eq!(block.own.len(), 2 * 56 + 9 + 3 + 2);
        assert_eq!(block.get(0).unwrap().partition_key, "key-1");
        assert_eq!(block.get(0).unwrap().data, Payload::Base64("aGk="));
        assert_eq!(block.get(1).unwrap().partition_key, "elsewhere");
        assert_eq!(block.get(1).unwrap().explicit_hash_key, Some("123"));
        assert_eq!(block.get(1).unwrap().data, Payload::Bytes(&[0, 255]));
        assert!(block.get(2).is_none());

        let parts = block.split_by(2, |i| usize::from(i.partition_key == "elsewhere"));
        assert_eq!(
            parts[0].iter().map(|i| i.partition_key).collect::<Vec<_>>(),
            ["key-1"]
        );
        assert_eq!(
            parts[1].iter().map(|i| i.partition_key).collect::<Vec<_>>(),
            ["elsewhere"]
        );
        assert_eq!(parts[1].get(0).unwrap(), block.get(1).unwrap());

        block.retain_records(|r| r != RecordId(0));
        assert!(block.is_empty());
        drop(block);
        drop(parts);
        assert_eq!(
            Arc::strong_count(&line),
            1,
            "blocks hold the line, items do not"
        );
    }
}
