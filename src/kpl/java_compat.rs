//! The two places where the Java KCL's answer depends on the Java runtime rather
//! than on the aggregate format: turning key bytes into a string, and reading an
//! explicit hash key as a number.
//!
//! * Keys are proto2 `string` fields, which protobuf-java does not validate: it
//!   decodes them with `new String(bytes, UTF_8)`, replacing malformed input with
//!   U+FFFD. The JDK's replacement rule is the Unicode "maximal subpart" rule
//!   (the one `String::from_utf8_lossy` uses) except for one case: an encoded
//!   UTF-16 surrogate (`ED A0..BF xx`) is one U+FFFD for the whole sequence in
//!   the JDK and one per byte in Rust. [`decode_utf8_like_jdk`] follows the JDK
//!   decoder (`String.decodeUTF8_UTF16`, unchanged from JDK 8 to 21) step by step.
//! * `AggregatorUtil` computes `new BigInteger(explicitHashKey)` and compares it
//!   with the hash key range `[0, 2^128 - 1]`. `BigInteger` accepts one leading
//!   `+` or `-` and then any Basic Multilingual Plane character whose Unicode
//!   general category is `Nd` (e.g. Arabic-Indic or full-width digits), and
//!   throws `NumberFormatException` for anything else. [`classify_hash_key`]
//!   reproduces that without building a big integer.

use std::sync::Arc;

use super::KeyStr;

/// The replacement character the JDK writes for malformed UTF-8.
const REPLACEMENT: char = '\u{FFFD}';

/// Decodes key bytes exactly like the JDK's `new String(bytes, UTF_8)`.
///
/// Valid UTF-8 is borrowed; anything else is decoded once into a shared string,
/// so that many sub-records pointing at one broken key cost one allocation.
pub(crate) fn decode_utf8_like_jdk(bytes: &[u8]) -> KeyStr<'_> {
    match std::str::from_utf8(bytes) {
        Ok(text) => KeyStr::Borrowed(text),
        Err(_) => KeyStr::Shared(Arc::from(decode_malformed(bytes))),
    }
}

/// The JDK's replacing UTF-8 decoder (`String.decodeUTF8_UTF16` with
/// `doReplace`), over bytes that are known to be malformed somewhere.
fn decode_malformed(src: &[u8]) -> String {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    // Each malformed sequence becomes one U+FFFD (3 bytes in UTF-8), so the
    // output is at most 3 bytes per input byte; reserve for the common case.
    let mut out = String::with_capacity(src.len() + src.len() / 2);
    let len = src.len();
    let mut sp = 0;
    while sp < len {
        let b1 = src[sp];
        sp += 1;
        match b1 {
            0x00..=0x7F => out.push(char::from(b1)),
            // Two-byte leads; C0 and C1 (overlong) fall through to the default.
            0xC2..=0xDF => {
                if sp < len {
                    let b2 = src[sp];
                    if is_continuation(b2) {
                        sp += 1;
                        out.push(char_or_replacement(
                            (u32::from(b1 & 0x1F) << 6) | u32::from(b2 & 0x3F),
                        ));
                    } else {
                        out.push(REPLACEMENT);
                    }
                    continue;
                }
                out.push(REPLACEMENT);
                break;
            }
            0xE0..=0xEF => {
                if sp + 1 < len {
                    let (b2, b3) = (src[sp], src[sp + 1]);
                    let overlong = b1 == 0xE0 && b2 & 0xE0 == 0x80;
                    if overlong || !is_continuation(b2) || !is_continuation(b3) {
                        out.push(REPLACEMENT);
                        // The JDK's `malformed3`: skip the lead alone, or the
                        // lead and a continuation byte, never the third byte.
                        if !overlong && is_continuation(b2) {
                            sp += 1;
                        }
                    } else {
                        sp += 2;
                        // A surrogate code point is replaced as one unit.
                        out.push(char_or_replacement(
                            (u32::from(b1 & 0x0F) << 12)
                                | (u32::from(b2 & 0x3F) << 6)
                                | u32::from(b3 & 0x3F),
                        ));
                    }
                    continue;
                }
                if sp < len {
                    let b2 = src[sp];
                    if (b1 == 0xE0 && b2 & 0xE0 == 0x80) || !is_continuation(b2) {
                        out.push(REPLACEMENT);
                        continue;
                    }
                }
                // A truncated sequence at the end: one U+FFFD for what is left.
                out.push(REPLACEMENT);
                break;
            }
            0xF0..=0xF7 => {
                if sp + 2 < len {
                    let (b2, b3, b4) = (src[sp], src[sp + 1], src[sp + 2]);
                    let code = (u32::from(b1 & 0x07) << 18)
                        | (u32::from(b2 & 0x3F) << 12)
                        | (u32::from(b3 & 0x3F) << 6)
                        | u32::from(b4 & 0x3F);
                    let structurally_ok =
                        is_continuation(b2) && is_continuation(b3) && is_continuation(b4);
                    if structurally_ok && (0x1_0000..=0x10_FFFF).contains(&code) {
                        sp += 3;
                        out.push(char_or_replacement(code));
                    } else {
                        out.push(REPLACEMENT);
                        // The JDK's `malformed4`.
                        let bad_second = b1 > 0xF4
                            || (b1 == 0xF0 && !(0x90..=0xBF).contains(&b2))
                            || (b1 == 0xF4 && b2 & 0xF0 != 0x80)
                            || !is_continuation(b2);
                        if !bad_second {
                            sp += if is_continuation(b3) { 2 } else { 1 };
                        }
                    }
                    continue;
                }
                if b1 > 0xF4 || (sp < len && bad_four_byte_second(b1, src[sp])) {
                    out.push(REPLACEMENT);
                    continue;
                }
                // Truncated at the end: the JDK skips the second byte, then goes
                // on only if the third one cannot continue the sequence.
                sp += 1;
                out.push(REPLACEMENT);
                if sp < len && !is_continuation(src[sp]) {
                    continue;
                }
                break;
            }
            // Continuation bytes, C0, C1 and F8..FF.
            _ => out.push(REPLACEMENT),
        }
    }
    out
}

/// `isMalformed4_2` of the JDK: the second byte cannot follow a four-byte lead.
fn bad_four_byte_second(b1: u8, b2: u8) -> bool {
    (b1 == 0xF0 && !(0x90..=0xBF).contains(&b2))
        || (b1 == 0xF4 && b2 & 0xF0 != 0x80)
        || b2 & 0xC0 != 0x80
}

/// A decoded code point, or U+FFFD where the JDK would produce a lone surrogate
/// replacement (surrogates are not `char`s in Rust either).
fn char_or_replacement(code: u32) -> char {
    char::from_u32(code).unwrap_or(REPLACEMENT)
}

/// What `new BigInteger(key)` followed by the range check makes of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashKeyCheck {
    /// A number in `[0, 2^128 - 1]`: the sub-record is kept.
    InRange,
    /// `BigInteger` throws `NumberFormatException`: caught by `AggregatorUtil`'s
    /// loop, so earlier sub-records stay and the rest are lost.
    NotANumber,
    /// A number below 0 or above `2^128 - 1`: `AggregatorUtil` drops every
    /// sub-record of the aggregate.
    OutOfRange,
}

/// The first code point of each run of ten `Nd` digits in the Basic
/// Multilingual Plane (Unicode 14; identical to what `Character.digit(c, 10)`
/// accepts in JDK 17, checked with the Java oracle under `fuzz/java-oracle/`).
const BMP_ZERO_DIGITS: [u32; 37] = [
    0x0030, 0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
    0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80,
    0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0xFF10,
];

/// `Character.digit(c, 10)` for a `char` (a supplementary character is two UTF-16
/// units in Java, neither of which is a digit).
fn java_decimal_digit(c: char) -> Option<u32> {
    let code = u32::from(c);
    if c.is_ascii_digit() {
        return Some(code - 0x30);
    }
    let index = BMP_ZERO_DIGITS.partition_point(|&zero| zero <= code);
    let zero = *BMP_ZERO_DIGITS.get(index.checked_sub(1)?)?;
    (code - zero < 10).then_some(code - zero)
}

/// Classifies an explicit hash key the way `new BigInteger(key)` and the range
/// check `[0, 2^128 - 1]` in `AggregatorUtil` do.
pub(crate) fn classify_hash_key(key: &str) -> HashKeyCheck {
    let (negative, digits) = match key.as_bytes().first() {
        Some(b'-') => (true, &key[1..]),
        Some(b'+') => (false, &key[1..]),
        _ => (false, key),
    };
    // "" and a lone sign are "Zero length BigInteger"; a sign anywhere else is
    // "Illegal embedded sign character"; both are NumberFormatException, and so
    // is any character that is not a decimal digit.
    if digits.is_empty() {
        return HashKeyCheck::NotANumber;
    }
    let mut value: u128 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let Some(digit) = java_decimal_digit(c) else {
            return HashKeyCheck::NotANumber;
        };
        if !overflow {
            match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit)))
            {
                Some(next) => value = next,
                // Keep scanning: a later non-digit still makes it NotANumber.
                None => overflow = true,
            }
        }
    }
    if overflow || (negative && value != 0) {
        HashKeyCheck::OutOfRange
    } else {
        HashKeyCheck::InRange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jdk(bytes: &[u8]) -> String {
        decode_utf8_like_jdk(bytes).to_string()
    }

    #[test]
    fn valid_utf8_is_borrowed() {
        assert!(matches!(
            decode_utf8_like_jdk("añ€😀".as_bytes()),
            KeyStr::Borrowed("añ€😀")
        ));
    }

    #[test]
    fn jdk_replacement_rules() {
        // Same as maximal subparts.
        assert_eq!(jdk(b"a\x80b"), "a\u{FFFD}b");
        assert_eq!(jdk(b"\xC0\x80"), "\u{FFFD}\u{FFFD}");
        assert_eq!(jdk(b"\xE0\x80\x80"), "\u{FFFD}\u{FFFD}\u{FFFD}");
        assert_eq!(jdk(b"\xE2\x82A"), "\u{FFFD}A");
        assert_eq!(jdk(b"\xE2\x82"), "\u{FFFD}");
        assert_eq!(jdk(b"\xF0\x90\x80"), "\u{FFFD}");
        assert_eq!(jdk(b"\xF0\x90\x80A"), "\u{FFFD}A");
        assert_eq!(jdk(b"\xF0\x90A"), "\u{FFFD}A");
        assert_eq!(jdk(b"\xF4\x90\x80\x80"), "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}");
        assert_eq!(jdk(b"\xF8\x88"), "\u{FFFD}\u{FFFD}");
        // Where the JDK differs from from_utf8_lossy: encoded surrogates.
        assert_eq!(jdk(b"\xED\xA0\x80"), "\u{FFFD}");
        assert_eq!(
            String::from_utf8_lossy(b"\xED\xA0\x80"),
            "\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(jdk(b"\xED\xA0A"), "\u{FFFD}A");
        assert_eq!(jdk(b"\xED\xA0"), "\u{FFFD}");
        assert_eq!(jdk(b"x\xED\xBF\xBFy"), "x\u{FFFD}y");
    }

    #[test]
    fn hash_keys_like_big_integer() {
        use HashKeyCheck::*;
        for (key, expected) in [
            ("0", InRange),
            ("-0", InRange),
            ("+12", InRange),
            ("000340282366920938463463374607431768211455", InRange),
            ("340282366920938463463374607431768211456", OutOfRange),
            ("99999999999999999999999999999999999999999999", OutOfRange),
            ("-1", OutOfRange),
            ("", NotANumber),
            ("-", NotANumber),
            ("+-1", NotANumber),
            ("1-", NotANumber),
            ("1 ", NotANumber),
            ("12a", NotANumber),
            ("99999999999999999999999999999999999999999x", NotANumber),
            ("\u{0661}\u{0662}", InRange),
            ("\u{FF11}", InRange),
            ("\u{1D7CF}", NotANumber),
            ("\u{00B2}", NotANumber),
        ] {
            assert_eq!(classify_hash_key(key), expected, "{key:?}");
        }
    }

    #[test]
    fn digit_table_edges() {
        assert_eq!(java_decimal_digit('/'), None);
        assert_eq!(java_decimal_digit(':'), None);
        assert_eq!(java_decimal_digit('\u{065F}'), None);
        assert_eq!(java_decimal_digit('\u{0669}'), Some(9));
        assert_eq!(java_decimal_digit('\u{066A}'), None);
        assert_eq!(java_decimal_digit('\u{FF19}'), Some(9));
        assert_eq!(java_decimal_digit('\u{FF1A}'), None);
    }
}
