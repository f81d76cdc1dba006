//! ASCII-only compact JSON output.
//!
//! The Java daemon reads the child's stdout with the JVM's default charset, which is
//! US-ASCII under a POSIX locale on JDKs before 18: a raw `é` in a partition key would turn
//! into `?`. Escaping every non-ASCII character as `\uXXXX` (a surrogate pair above the
//! BMP) makes the bytes we write mean the same thing whatever charset reads them. The same
//! writer is used for the item JSON that handlers see, so that files and pipes are plain
//! ASCII too.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

/// A compact formatter that escapes every non-ASCII character (the trait's defaults are
/// the compact layout: no spaces, no newlines).
#[derive(Clone, Copy, Debug, Default)]
pub struct AsciiFormatter;

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        if bytes.is_ascii() {
            // The common case (base64, digits, ids), checked many bytes at a time.
            return writer.write_all(bytes);
        }
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            writer.write_all(&bytes[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }
}

/// Serializes `value` as compact ASCII-only JSON into `writer` (no trailing newline).
pub fn write_ascii<W: io::Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut ser = Serializer::with_formatter(writer, AsciiFormatter);
    value.serialize(&mut ser)
}

/// Serializes `value` as compact ASCII-only JSON into a new buffer.
pub fn to_ascii_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write_ascii(&mut out, value)?;
    Ok(out)
}

/// Serializes `value` as compact ASCII-only JSON into a `String`.
pub fn to_ascii_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let bytes = to_ascii_vec(value)?;
    // The formatter writes only ASCII, which is valid UTF-8: the error is never returned.
    String::from_utf8(bytes).map_err(serde::ser::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_bmp_and_astral_characters() {
        let s = to_ascii_string(&serde_json::json!({"k": "é\u{1F600}\"\n"})).unwrap();
        assert_eq!(s, r#"{"k":"\u00e9\ud83d\ude00\"\n"}"#);
    }

    proptest! {
        #[test]
        fn round_trips_any_string(s in any::<String>()) {
            let out = to_ascii_string(&s).unwrap();
            prop_assert!(out.is_ascii());
            let back: String = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
