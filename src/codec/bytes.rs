//! Byte searches of the hot decode paths, 8 bytes at a time: the scan and the record
//! parser both look for the end of a JSON string and check printable ASCII on every
//! field, so these are their shared leaf; with the payload check ([`is_base64`]) every
//! decode path makes.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Flags (high bit) the bytes of `w` that are zero; the lowest flag is exact (higher
/// ones may be false positives, which the callers never look at).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGH
}

/// Flags the bytes of `w` equal to `c` (lowest flag exact).
#[inline]
fn bytes_equal(w: u64, c: u8) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(c)))
}

/// The index of the first byte of `b` that `special` flags (in 8-byte words, `special`
/// marking bytes by their high bit, lowest flag exact), checking the tail with `slow`.
#[inline]
fn find_first(b: &[u8], special: impl Fn(u64) -> u64, slow: impl Fn(u8) -> bool) -> usize {
    let mut at = 0;
    while let Some(word) = b.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*word);
        let m = special(w);
        if m != 0 {
            return at + (m.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + b[at..]
        .iter()
        .position(|&c| slow(c))
        .unwrap_or(b.len() - at)
}

/// The index of the first `"` or `\\` in `b`, if any. Most strings here are short
/// (keys, partition keys, sequence numbers), where a `memchr2` call costs more than the
/// search: the first 64 bytes are searched 8 at a time with bit tricks, and only a
/// longer string (a payload) is handed to `memchr2`, which is faster on long ones.
pub fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    let head = b.len().min(64);
    let at = find_first(
        &b[..head],
        |w| bytes_equal(w, b'"') | bytes_equal(w, b'\\'),
        |c| c == b'"' || c == b'\\',
    );
    if at < head {
        return Some(at);
    }
    memchr::memchr2(b'"', b'\\', &b[head..]).map(|p| head + p)
}

/// True when every byte of `b` is printable ASCII (0x20..=0x7e). No early exit, so the
/// compiler can compare many bytes at a time.
pub fn printable_ascii(b: &[u8]) -> bool {
    b.iter()
        .fold(0u8, |acc, &c| acc | u8::from(c.wrapping_sub(0x20) >= 0x5f))
        == 0
}

/// True when `b` is base64 exactly as [`crate::pipeline::item::BASE64`] decodes it and the daemon's
/// Jackson writes it: the standard alphabet (`+/`), a multiple of four characters, at most
/// two `=` and only at the end, and zero bits after the last encoded byte. The daemon never
/// sends anything else, so anything else is a protocol error — whatever `--split` does
/// with the payload later (some modes never decode it).
///
/// No early exit in the alphabet check, so the compiler can test many bytes at a time:
/// payloads are most of a `processRecords` line.
pub fn is_base64(b: &[u8]) -> bool {
    if b.len() % 4 != 0 {
        return false;
    }
    let Some(last) = b.len().checked_sub(4) else {
        return true; // empty: zero bytes
    };
    let (body, quad) = b.split_at(last);
    if !base64_alphabet_only(body) {
        return false;
    }
    match *quad {
        [a, b, b'=', b'='] => sextet(a).is_some() && sextet(b).is_some_and(|v| v & 0x0f == 0),
        [a, b, c, b'='] => {
            sextet(a).is_some() && sextet(b).is_some() && sextet(c).is_some_and(|v| v & 0x03 == 0)
        }
        _ => base64_alphabet_only(quad),
    }
}

/// True when every byte of `b` is in the standard base64 alphabet (no padding).
fn base64_alphabet_only(b: &[u8]) -> bool {
    let outside = |chunk: &[u8]| {
        chunk
            .iter()
            .fold(0u8, |acc, &c| acc | u8::from(!in_base64_alphabet(c)))
    };
    let chunks = b.chunks_exact(32);
    let tail = outside(chunks.remainder());
    chunks.fold(tail, |acc, chunk| acc | outside(chunk)) == 0
}

#[inline]
fn in_base64_alphabet(c: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z; nothing else lands in a-z. Non-short-circuit `|`, so
    // that the loop vectorizes.
    let letter = (c | 0x20).wrapping_sub(b'a') < 26;
    let digit = c.wrapping_sub(b'0') < 10;
    letter | digit | (c == b'+') | (c == b'/')
}

/// The 6-bit value of a base64 character.
fn sextet(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}
