//! A structure-aware generator of KPL records for randomized tests: valid-looking
//! aggregates with every rule of the format bent at random (unknown fields of all
//! wire types, nested groups, tags, wrong wire types, missing required fields,
//! indexes out of range, invalid UTF-8, odd explicit hash keys, non-minimal
//! varints), then byte mutations, wrapped with a valid MD5 most of the time.
//!
//! Used by `tests/it/kpl_random.rs` and `tests/it/kpl_java_oracle.rs` (included by
//! path, next to `invariants.rs`); it has no dependency beyond `invariants`.

use super::invariants;

/// splitmix64: small, fast, good enough to drive a generator.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Up to `max_len` random bytes.
    pub fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A varint, sometimes written with redundant continuation bytes (protobuf-java
/// reads up to 10 bytes).
fn loose_varint(rng: &mut Rng, out: &mut Vec<u8>, value: u64) {
    if rng.chance(95) {
        return varint(out, value);
    }
    let mut bytes = Vec::new();
    varint(&mut bytes, value);
    while bytes.len() < 10 && rng.chance(60) {
        let last = bytes.len() - 1;
        bytes[last] |= 0x80;
        bytes.push(0);
    }
    out.extend(bytes);
}

fn key(rng: &mut Rng, out: &mut Vec<u8>, field: u64, wire_type: u64) {
    loose_varint(rng, out, (field << 3) | wire_type);
}

fn length_delimited(rng: &mut Rng, out: &mut Vec<u8>, field: u64, payload: &[u8]) {
    key(rng, out, field, 2);
    loose_varint(rng, out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Key text from interesting pieces, sometimes with invalid UTF-8.
pub fn random_text(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "a",
        "k",
        "key",
        "\u{e9}",
        "\u{65e5}",
        "\u{1F600}",
        " ",
        "0",
        "7",
        "-",
        "+",
        "\u{0661}",
    ];
    let mut text = Vec::new();
    for _ in 0..rng.below(6) {
        text.extend_from_slice(PIECES[rng.below(PIECES.len() as u64) as usize].as_bytes());
    }
    if rng.chance(10) {
        // Invalid UTF-8 of the interesting kinds.
        const BROKEN: &[&[u8]] = &[
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xe2\x82",
            b"\xf0\x9f\x98",
            b"\x80",
        ];
        let at = rng.below(text.len() as u64 + 1) as usize;
        let broken = BROKEN[rng.below(BROKEN.len() as u64) as usize];
        text.splice(at..at, broken.iter().copied());
    }
    text
}

/// An explicit hash key: mostly numbers, some out of range or not numbers.
pub fn random_hash_key(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=4 => u128::from(rng.next_u64())
            .wrapping_mul(u128::from(rng.next_u64()))
            .to_string()
            .into_bytes(),
        5 => b"340282366920938463463374607431768211455".to_vec(),
        6 => b"340282366920938463463374607431768211456".to_vec(),
        7 => format!("-{}", rng.below(3)).into_bytes(),
        8 => "\u{0661}\u{FF12}".as_bytes().to_vec(),
        _ => random_text(rng),
    }
}

/// Unknown fields (and sometimes broken ones), at nesting `depth`.
fn unknown_field(rng: &mut Rng, out: &mut Vec<u8>, depth: u32) {
    let field = 5 + rng.below(40);
    match rng.below(40) {
        0..=9 => {
            key(rng, out, field, 0);
            let value = rng.next_u64() >> rng.below(64);
            loose_varint(rng, out, value);
        }
        10..=13 => {
            key(rng, out, field, 1);
            out.extend(rng.next_u64().to_le_bytes());
        }
        14..=17 => {
            key(rng, out, field, 5);
            out.extend((rng.next_u64() as u32).to_le_bytes());
        }
        18..=29 => {
            let payload = rng.bytes(12);
            length_delimited(rng, out, field, &payload);
        }
        30..=37 if depth < 105 => {
            key(rng, out, field, 3);
            for _ in 0..rng.below(3) {
                unknown_field(rng, out, depth + 1);
            }
            // Usually the matching end tag, sometimes another one.
            let end = if rng.chance(95) { field } else { field + 1 };
            key(rng, out, end, 4);
        }
        38 => {
            let invalid_wire_type = 6 + rng.below(2);
            key(rng, out, field, invalid_wire_type);
        }
        _ => key(rng, out, field, 4),
    }
}

fn random_tag(rng: &mut Rng) -> Vec<u8> {
    let mut tag = Vec::new();
    if rng.chance(95) {
        let text = random_text(rng);
        length_delimited(rng, &mut tag, 1, &text);
    }
    if rng.chance(50) {
        let text = random_text(rng);
        length_delimited(rng, &mut tag, 2, &text);
    }
    if rng.chance(10) {
        unknown_field(rng, &mut tag, 2);
    }
    tag
}

fn random_record_message(rng: &mut Rng, pk_len: u64, ehk_len: u64) -> Vec<u8> {
    let mut record = Vec::new();
    let index = |rng: &mut Rng, len: u64| match rng.below(50) {
        0 => len + rng.below(3),
        1 => (1 << 32) + rng.below(2),
        3 => 1 << 31,
        2 => u64::MAX,
        _ => rng.below(len.max(1)),
    };
    let mut fields: Vec<u8> = Vec::new();
    if rng.chance(99) {
        fields.push(1);
    }
    if rng.chance(40) {
        fields.push(2);
    }
    if rng.chance(99) {
        fields.push(3);
    }
    for _ in 0..rng.below(3) {
        fields.push(if rng.chance(50) { 4 } else { 9 });
    }
    if rng.chance(5) {
        // A duplicate singular field or a known number with the wrong wire type.
        fields.push(if rng.chance(50) { 1 } else { 5 });
    }
    if !fields.is_empty() && rng.chance(20) {
        let i = rng.below(fields.len() as u64) as usize;
        let j = rng.below(fields.len() as u64) as usize;
        fields.swap(i, j);
    }
    for field in fields {
        match field {
            1 => {
                let value = index(rng, pk_len);
                key(rng, &mut record, 1, 0);
                loose_varint(rng, &mut record, value);
            }
            2 => {
                let value = index(rng, ehk_len);
                key(rng, &mut record, 2, 0);
                loose_varint(rng, &mut record, value);
            }
            3 => {
                let data = rng.bytes(40);
                length_delimited(rng, &mut record, 3, &data);
            }
            4 => {
                let tag = random_tag(rng);
                length_delimited(rng, &mut record, 4, &tag);
            }
            5 => {
                // explicit_hash_key_index as length-delimited: unknown to Java.
                length_delimited(rng, &mut record, 2, b"\x01");
            }
            _ => unknown_field(rng, &mut record, 1),
        }
    }
    record
}

fn random_body(rng: &mut Rng) -> Vec<u8> {
    let pk_len = rng.below(5);
    let ehk_len = if rng.chance(50) { rng.below(4) } else { 0 };
    let mut body = Vec::new();
    for _ in 0..pk_len {
        let text = random_text(rng);
        length_delimited(rng, &mut body, 1, &text);
    }
    for _ in 0..ehk_len {
        let text = random_hash_key(rng);
        length_delimited(rng, &mut body, 2, &text);
    }
    for _ in 0..rng.below(8) {
        let record = random_record_message(rng, pk_len, ehk_len);
        length_delimited(rng, &mut body, 3, &record);
        if rng.chance(5) {
            unknown_field(rng, &mut body, 0);
        }
    }
    if rng.chance(5) {
        // A table field as a varint: skipped by Java.
        let field = 1 + rng.below(3);
        key(rng, &mut body, field, 0);
        varint(&mut body, rng.below(300));
    }
    body
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            bytes.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next_u64() as u8,
            2 => bytes.insert(at, rng.next_u64() as u8),
            3 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
}

/// One random Kinesis record, usually an (often bent) aggregate.
pub fn random_record(rng: &mut Rng) -> Vec<u8> {
    let mut body = random_body(rng);
    if rng.chance(15) {
        mutate(rng, &mut body);
    }
    let mut record = invariants::with_valid_digest(&body);
    if rng.chance(3) {
        mutate(rng, &mut record);
    }
    record
}

/// A valid aggregate whose keys are the point: partition keys of random bytes
/// (mostly non-ASCII, so mostly invalid UTF-8) and explicit hash keys built
/// from digits, signs, Unicode digits and other characters. Exercises the JDK
/// string decoding and `BigInteger` rules.
pub fn key_focused_record(rng: &mut Rng) -> Vec<u8> {
    const HASH_KEY_PIECES: &[&str] = &[
        "0",
        "1",
        "9",
        "5",
        "-",
        "+",
        " ",
        "a",
        "\u{0660}",
        "\u{0669}",
        "\u{FF10}",
        "\u{FF19}",
        "\u{1D7CE}",
        "\u{00B2}",
        "\u{0966}",
        "\u{FFFD}",
    ];
    let pk_count = 1 + rng.below(4);
    let ehk_count = rng.below(4);
    let mut body = Vec::new();
    for _ in 0..pk_count {
        let len = rng.below(9);
        let key: Vec<u8> = (0..len)
            .map(|_| match rng.below(4) {
                0 => b'a' + rng.below(26) as u8,
                _ => 0x80 + rng.below(0x80) as u8,
            })
            .collect();
        length_delimited(rng, &mut body, 1, &key);
    }
    for _ in 0..ehk_count {
        let mut key = String::new();
        if rng.chance(50) {
            key.push_str(&u128::from(rng.next_u64()).to_string());
        }
        for _ in 0..rng.below(4) {
            key.push_str(HASH_KEY_PIECES[rng.below(HASH_KEY_PIECES.len() as u64) as usize]);
        }
        let mut bytes = key.into_bytes();
        if rng.chance(10) {
            bytes.push(0xC3);
        }
        length_delimited(rng, &mut body, 2, &bytes);
    }
    for _ in 0..1 + rng.below(6) {
        let mut record = Vec::new();
        key(rng, &mut record, 1, 0);
        varint(&mut record, rng.below(pk_count));
        if ehk_count > 0 && rng.chance(50) {
            key(rng, &mut record, 2, 0);
            varint(&mut record, rng.below(ehk_count));
        }
        length_delimited(rng, &mut record, 3, b"d");
        length_delimited(rng, &mut body, 3, &record);
    }
    invariants::with_valid_digest(&body)
}
