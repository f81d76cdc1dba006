//! A bounded, zero-copy protobuf reader for the `AggregatedRecord` body that
//! accepts and rejects exactly what protobuf-java's generated parser does.
//!
//! What protobuf-java does, and so what this reader does:
//! * A tag is a varint of at most 10 bytes truncated to 32 bits; a tag whose field
//!   number is 0 is an error. End of input ends a message.
//! * A known field is recognised by its whole tag (field number *and* wire type).
//!   A known field number with another wire type is an unknown field and is
//!   skipped like any other unknown field.
//! * Unknown fields: varint (at most 10 bytes), fixed64, length-delimited,
//!   groups (skipped recursively up to the matching end-group tag) and fixed32
//!   are skipped; wire types 6 and 7 are errors; an end-group tag outside a group
//!   ends the message, which is then an error ("invalid end tag").
//! * Lengths are varints truncated to 32 bits and read as a signed `int`:
//!   negative is an error, longer than what is left is an error.
//! * `uint64` values keep the low 64 bits of a varint of at most 10 bytes.
//! * Nesting (embedded messages and groups) is limited to 100 levels.
//! * A repeated field collects every occurrence; for a singular field the last
//!   occurrence wins; presence (`has`) is set by any occurrence.
//! * After parsing, proto2 `required` fields must be present everywhere:
//!   `Record.partition_key_index`, `Record.data` and `Tag.key`.
//!
//! Every slice returned borrows from the input, and every `Vec` grows only by
//! what was actually read, so memory is bounded by the input, whatever lengths
//! the input claims.

/// protobuf-java's default recursion limit (`CodedInputStream.DEFAULT_RECURSION_LIMIT`).
const RECURSION_LIMIT: u32 = 100;

/// The longest varint protobuf-java reads before declaring it malformed.
const MAX_VARINT_BYTES: usize = 10;

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;
const START_GROUP: u32 = 3;
const END_GROUP: u32 = 4;
const FIXED32: u32 = 5;

/// Makes a tag from a field number and a wire type, as on the wire.
const fn make_tag(field: u32, wire_type: u32) -> u32 {
    (field << 3) | wire_type
}

/// Why protobuf-java would throw `InvalidProtocolBufferException` for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    /// A field, length or varint runs past the end of its message.
    #[error("truncated message")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("malformed varint (more than 10 bytes)")]
    MalformedVarint,
    /// A tag whose field number is 0.
    #[error("invalid tag (field number 0)")]
    InvalidTag,
    /// Wire type 6 or 7.
    #[error("invalid wire type")]
    InvalidWireType,
    /// A length that is negative as a 32-bit signed integer.
    #[error("negative length")]
    NegativeSize,
    /// An end-group tag that does not close the open group (or no group is open).
    #[error("end-group tag does not match any open group")]
    InvalidEndTag,
    /// More than 100 nested messages and groups.
    #[error("nesting deeper than 100 levels")]
    RecursionLimit,
    /// A proto2 `required` field is missing.
    #[error("required field {0} is missing")]
    MissingRequired(&'static str),
}

/// The parsed body: tables and records as raw bytes and numbers, unchecked.
#[derive(Debug, Default)]
pub(crate) struct RawAggregate<'a> {
    /// `partition_key_table`, in order, undecoded.
    pub partition_keys: Vec<&'a [u8]>,
    /// `explicit_hash_key_table`, in order, undecoded.
    pub explicit_hash_keys: Vec<&'a [u8]>,
    /// `records`, in order.
    pub records: Vec<RawRecord<'a>>,
    /// Entries (table keys or records) past the limit given to
    /// [`parse_aggregated_record_limited`]: validated and counted, not collected.
    pub skipped: usize,
    /// How many records the body holds, collected or not.
    pub declared_records: usize,
}

/// One `Record`, with its tags validated and dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    /// `partition_key_index` (required).
    pub partition_key_index: u64,
    /// `explicit_hash_key_index`, when present.
    pub explicit_hash_key_index: Option<u64>,
    /// `data` (required).
    pub data: &'a [u8],
}

/// Parses an `AggregatedRecord` body (the bytes between the magic and the MD5).
#[cfg(test)]
pub(crate) fn parse_aggregated_record(body: &[u8]) -> Result<RawAggregate<'_>, ProtobufError> {
    parse_aggregated_record_limited(body, usize::MAX)
}

/// [`parse_aggregated_record`] that collects at most `limit` entries in each of the three
/// lists: the rest is validated exactly the same (so plain versus aggregate is decided as
/// protobuf-java does) and counted in `skipped`, so memory stays bounded by `limit` for
/// any body.
pub(crate) fn parse_aggregated_record_limited(
    body: &[u8],
    limit: usize,
) -> Result<RawAggregate<'_>, ProtobufError> {
    const PARTITION_KEY_TABLE: u32 = make_tag(1, LENGTH_DELIMITED);
    const EXPLICIT_HASH_KEY_TABLE: u32 = make_tag(2, LENGTH_DELIMITED);
    const RECORDS: u32 = make_tag(3, LENGTH_DELIMITED);

    let depth = 0;
    let mut reader = Reader::new(body);
    let mut aggregate = RawAggregate::default();
    let mut skipped = 0;
    let mut keep = |list_len: usize| {
        let room = list_len < limit;
        if !room {
            skipped += 1;
        }
        room
    };
    while let Some(tag) = reader.read_tag()? {
        match tag {
            PARTITION_KEY_TABLE => {
                let key = reader.read_length_delimited()?;
                if keep(aggregate.partition_keys.len()) {
                    aggregate.partition_keys.push(key);
                }
            }
            EXPLICIT_HASH_KEY_TABLE => {
                let key = reader.read_length_delimited()?;
                if keep(aggregate.explicit_hash_keys.len()) {
                    aggregate.explicit_hash_keys.push(key);
                }
            }
            RECORDS => {
                let message = reader.read_length_delimited()?;
                let record = parse_record(message, enter(depth)?)?;
                aggregate.declared_records += 1;
                if keep(aggregate.records.len()) {
                    aggregate.records.push(record);
                }
            }
            _ => reader.skip_field_in_message(tag, depth)?,
        }
    }
    aggregate.skipped = skipped;
    Ok(aggregate)
}

/// Parses one `Record` message at nesting `depth`.
fn parse_record(message: &[u8], depth: u32) -> Result<RawRecord<'_>, ProtobufError> {
    const PARTITION_KEY_INDEX: u32 = make_tag(1, VARINT);
    const EXPLICIT_HASH_KEY_INDEX: u32 = make_tag(2, VARINT);
    const DATA: u32 = make_tag(3, LENGTH_DELIMITED);
    const TAGS: u32 = make_tag(4, LENGTH_DELIMITED);

    let mut reader = Reader::new(message);
    let mut partition_key_index = None;
    let mut explicit_hash_key_index = None;
    let mut data = None;
    while let Some(tag) = reader.read_tag()? {
        match tag {
            PARTITION_KEY_INDEX => partition_key_index = Some(reader.read_varint64()?),
            EXPLICIT_HASH_KEY_INDEX => explicit_hash_key_index = Some(reader.read_varint64()?),
            DATA => data = Some(reader.read_length_delimited()?),
            TAGS => {
                let message = reader.read_length_delimited()?;
                parse_tag(message, enter(depth)?)?;
            }
            _ => reader.skip_field_in_message(tag, depth)?,
        }
    }
    Ok(RawRecord {
        partition_key_index: partition_key_index
            .ok_or(ProtobufError::MissingRequired("Record.partition_key_index"))?,
        explicit_hash_key_index,
        data: data.ok_or(ProtobufError::MissingRequired("Record.data"))?,
    })
}

/// Parses (and discards) one `Tag` message at nesting `depth`; only its
/// required `key` matters.
fn parse_tag(message: &[u8], depth: u32) -> Result<(), ProtobufError> {
    const KEY: u32 = make_tag(1, LENGTH_DELIMITED);
    const VALUE: u32 = make_tag(2, LENGTH_DELIMITED);

    let mut reader = Reader::new(message);
    let mut has_key = false;
    while let Some(tag) = reader.read_tag()? {
        match tag {
            KEY => {
                reader.read_length_delimited()?;
                has_key = true;
            }
            VALUE => {
                reader.read_length_delimited()?;
            }
            _ => reader.skip_field_in_message(tag, depth)?,
        }
    }
    if has_key {
        Ok(())
    } else {
        Err(ProtobufError::MissingRequired("Tag.key"))
    }
}

/// One more level of nesting, or the recursion-limit error protobuf-java raises
/// when the current depth has already reached the limit.
fn enter(depth: u32) -> Result<u32, ProtobufError> {
    if depth >= RECURSION_LIMIT {
        Err(ProtobufError::RecursionLimit)
    } else {
        Ok(depth + 1)
    }
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The next tag, or `None` at the end of the message.
    fn read_tag(&mut self) -> Result<Option<u32>, ProtobufError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let tag = self.read_varint32()?;
        if tag >> 3 == 0 {
            return Err(ProtobufError::InvalidTag);
        }
        Ok(Some(tag))
    }

    /// A varint of at most 10 bytes; bits beyond the 64th are dropped, as
    /// protobuf-java does.
    fn read_varint64(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for index in 0..MAX_VARINT_BYTES {
            let byte = *self.buf.get(self.pos).ok_or(ProtobufError::Truncated)?;
            self.pos += 1;
            // At index 9 the shift is 63: only the byte's lowest bit survives.
            value |= u64::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::MalformedVarint)
    }

    /// `readRawVarint32`: a varint of at most 10 bytes, truncated to 32 bits.
    fn read_varint32(&mut self) -> Result<u32, ProtobufError> {
        // Truncation is the point: protobuf-java keeps the low 32 bits.
        self.read_varint64().map(|value| value as u32)
    }

    /// A length-delimited field's bytes.
    fn read_length_delimited(&mut self) -> Result<&'a [u8], ProtobufError> {
        // protobuf-java reads the length as a signed 32-bit int.
        let length = self.read_varint32()? as i32;
        let length = usize::try_from(length).map_err(|_| ProtobufError::NegativeSize)?;
        self.take(length)
    }

    /// The next `count` bytes, or `Truncated` without moving if there are fewer.
    fn take(&mut self, count: usize) -> Result<&'a [u8], ProtobufError> {
        let rest = &self.buf[self.pos..];
        if count > rest.len() {
            return Err(ProtobufError::Truncated);
        }
        self.pos += count;
        Ok(&rest[..count])
    }

    /// Skips an unknown field of a message; an end-group tag here ends the
    /// message in protobuf-java, which then fails with "invalid end tag".
    fn skip_field_in_message(&mut self, tag: u32, depth: u32) -> Result<(), ProtobufError> {
        match self.skip_field(tag, depth)? {
            Skipped::Field => Ok(()),
            Skipped::EndGroup => Err(ProtobufError::InvalidEndTag),
        }
    }

    /// Skips one unknown field (`UnknownFieldSet.Builder.mergeFieldFrom`).
    fn skip_field(&mut self, tag: u32, depth: u32) -> Result<Skipped, ProtobufError> {
        match tag & 7 {
            VARINT => {
                self.read_varint64()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            LENGTH_DELIMITED => {
                self.read_length_delimited()?;
            }
            START_GROUP => self.skip_group(tag >> 3, enter(depth)?)?,
            END_GROUP => return Ok(Skipped::EndGroup),
            FIXED32 => {
                self.take(4)?;
            }
            _ => return Err(ProtobufError::InvalidWireType),
        }
        Ok(Skipped::Field)
    }

    /// Skips a group's fields up to its end-group tag (`readGroup`), whose
    /// field number must be the group's.
    fn skip_group(&mut self, field: u32, depth: u32) -> Result<(), ProtobufError> {
        while let Some(tag) = self.read_tag()? {
            if let Skipped::EndGroup = self.skip_field(tag, depth)? {
                return if tag == make_tag(field, END_GROUP) {
                    Ok(())
                } else {
                    Err(ProtobufError::InvalidEndTag)
                };
            }
        }
        // The message ended inside the group.
        Err(ProtobufError::InvalidEndTag)
    }
}

/// What [`Reader::skip_field`] met.
enum Skipped {
    /// A whole field was skipped.
    Field,
    /// An end-group tag: the enclosing group (or message) ends here.
    EndGroup,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<usize, ProtobufError> {
        parse_aggregated_record(bytes).map(|a| a.records.len())
    }

    #[test]
    fn minimal_record() {
        // records { partition_key_index: 0, data: "" }
        let agg = parse_aggregated_record(&[0x0A, 0x01, b'k', 0x1A, 0x04, 0x08, 0x00, 0x1A, 0x00])
            .unwrap();
        assert_eq!(agg.partition_keys, vec![b"k".as_slice()]);
        assert_eq!(agg.records.len(), 1);
        assert_eq!(agg.records[0].partition_key_index, 0);
        assert_eq!(agg.records[0].data, b"");
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            parse(&[0x1A, 0x02, 0x1A, 0x00]),
            Err(ProtobufError::MissingRequired("Record.partition_key_index"))
        );
        assert_eq!(
            parse(&[0x1A, 0x02, 0x08, 0x00]),
            Err(ProtobufError::MissingRequired("Record.data"))
        );
        // A tag without key.
        assert_eq!(
            parse(&[0x1A, 0x08, 0x08, 0x00, 0x1A, 0x00, 0x22, 0x02, 0x12, 0x00]),
            Err(ProtobufError::MissingRequired("Tag.key"))
        );
        // Field 1 as length-delimited is unknown, so the index is still missing.
        assert_eq!(
            parse(&[0x1A, 0x04, 0x0A, 0x00, 0x1A, 0x00]),
            Err(ProtobufError::MissingRequired("Record.partition_key_index"))
        );
    }

    #[test]
    fn unknown_fields_and_wire_types() {
        // Top level: field 1 as varint, field 9 fixed32, fixed64, group.
        let body = [
            0x08, 0x05, 0x4D, 1, 2, 3, 4, 0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x4B, 0x08, 0x01, 0x4C,
        ];
        assert_eq!(parse(&body), Ok(0));
        assert_eq!(parse(&[0x4E]), Err(ProtobufError::InvalidWireType));
        assert_eq!(parse(&[0x4F]), Err(ProtobufError::InvalidWireType));
        assert_eq!(parse(&[0x4C]), Err(ProtobufError::InvalidEndTag));
        assert_eq!(parse(&[0x4B, 0x54]), Err(ProtobufError::InvalidEndTag));
        assert_eq!(parse(&[0x4B]), Err(ProtobufError::InvalidEndTag));
        assert_eq!(parse(&[0x00]), Err(ProtobufError::InvalidTag));
        assert_eq!(parse(&[0x07]), Err(ProtobufError::InvalidTag));
        assert_eq!(parse(&[0x49, 1, 2]), Err(ProtobufError::Truncated));
    }

    #[test]
    fn lengths_and_varints() {
        assert_eq!(parse(&[0x0A, 0x05, b'a']), Err(ProtobufError::Truncated));
        // Length 0xFFFFFFFF as int is -1.
        assert_eq!(
            parse(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            Err(ProtobufError::NegativeSize)
        );
        // Length 2^32 + 1 truncates to 1.
        assert_eq!(parse(&[0x0A, 0x81, 0x80, 0x80, 0x80, 0x10, b'a']), Ok(0));
        // Tag 10 written in two bytes is still field 1.
        let agg = parse_aggregated_record(&[0x8A, 0x00, 0x01, b'a']).unwrap();
        assert_eq!(agg.partition_keys, vec![b"a".as_slice()]);
        // 11-byte varint.
        assert_eq!(
            parse(&[0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(ProtobufError::MalformedVarint)
        );
        // 10-byte varint: fine, the 10th byte's high bits are dropped.
        let mut body = vec![0x1A, 0x0D, 0x08];
        body.extend([0xFF; 9]);
        body.push(0x7F);
        body.extend([0x1A, 0x00]);
        let agg = parse_aggregated_record(&body).unwrap();
        assert_eq!(agg.records[0].partition_key_index, u64::MAX);
    }

    #[test]
    fn nesting_limit() {
        // Groups nested `levels` deep at the top level (depth 0).
        fn groups(levels: usize) -> Vec<u8> {
            let mut body = vec![0x4B; levels];
            body.extend(vec![0x4C; levels]);
            body
        }
        assert_eq!(parse(&groups(100)), Ok(0));
        assert_eq!(parse(&groups(101)), Err(ProtobufError::RecursionLimit));
    }

    #[test]
    fn last_singular_value_wins() {
        // records { pk_index: 1, data: "x", pk_index: 2, data: "" }
        let body = [
            0x1A, 0x09, 0x08, 0x01, 0x1A, 0x01, b'x', 0x08, 0x02, 0x1A, 0x00,
        ];
        let agg = parse_aggregated_record(&body).unwrap();
        assert_eq!(agg.records[0].partition_key_index, 2);
        assert_eq!(agg.records[0].data, b"");
    }
}
