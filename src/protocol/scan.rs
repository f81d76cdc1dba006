//! A structural scan of `processRecords` lines, so their records can be parsed in
//! parallel.
//!
//! The daemon does not pipeline: while rsmld parses a batch, nothing else moves. Parsing
//! one multi-MiB line on one thread therefore bounds throughput, however many workers wait.
//! This scan finds where each record of the `records` array starts and ends without
//! parsing them — strings, which are mostly base64 payload, are skipped with `memchr2` —
//! so that the records can be handed to several threads and parsed there by serde.
//!
//! It is deliberately narrow and conservative: it answers only for a well-formed object
//! whose `action` is `"processRecords"`, whose top-level keys contain no escapes and appear
//! once, and it checks every top-level value it does not use with serde. Anything else
//! returns `None`, and the caller uses the ordinary decoder (which also produces the error
//! message for malformed input). Each record range is parsed by serde, strictly.

use std::ops::Range;

/// Where the parts of a `processRecords` line are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecordsLayout {
    /// The byte range of each element of `records`, in order.
    pub records: Vec<Range<usize>>,
    /// `millisBehindLatest`, if present and not null.
    pub millis_behind_latest: Option<i64>,
}

/// Scans `line`; `None` means "use the full decoder".
pub fn scan_process_records(line: &[u8]) -> Option<ProcessRecordsLayout> {
    let mut s = Scanner { b: line, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut action_ok = false;
    let mut records = None;
    let mut millis = None;
    let mut seen: Vec<&[u8]> = Vec::new();
    loop {
        s.ws();
        if s.peek()? == b'}' && seen.is_empty() {
            s.i += 1;
            break;
        }
        let key = s.plain_string()?;
        if seen.contains(&key) {
            return None;
        }
        seen.push(key);
        s.ws();
        s.expect(b':')?;
        s.ws();
        match key {
            b"records" => records = Some(s.array_elements()?),
            b"action" => {
                let start = s.i;
                s.skip_value()?;
                action_ok = &line[start..s.i] == b"\"processRecords\"";
            }
            other => {
                let start = s.i;
                s.skip_value()?;
                let value = &line[start..s.i];
                // Unused values are still validated, so the scan accepts no line that the
                // full decoder would reject.
                if other == b"millisBehindLatest" {
                    millis = serde_json::from_slice::<Option<i64>>(value).ok()?;
                } else {
                    serde_json::from_slice::<serde::de::IgnoredAny>(value).ok()?;
                }
            }
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != line.len() || !action_ok {
        return None;
    }
    Some(ProcessRecordsLayout {
        records: records?,
        millis_behind_latest: millis,
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string without escapes; returns its contents.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        let end = start + memchr::memchr2(b'"', b'\\', &self.b[start..])?;
        let key = &self.b[start..end];
        // Valid JSON string contents only: no control characters, valid UTF-8.
        if self.b[end] != b'"' || key.iter().any(|&c| c < 0x20) || std::str::from_utf8(key).is_err()
        {
            return None;
        }
        self.i = end + 1;
        Some(key)
    }

    /// Skips a string (escapes allowed), starting at its opening quote.
    fn skip_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some(());
            }
            // A backslash escapes the next byte (\uXXXX's digits are plain bytes).
            if at + 2 > self.b.len() {
                return None;
            }
            self.i = at + 2;
        }
    }

    /// Skips any value; structure is checked by serde later for the parts we use.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => self.skip_string()?,
                        b'{' | b'[' => {
                            depth += 1;
                            self.i += 1;
                        }
                        b'}' | b']' => {
                            depth -= 1;
                            self.i += 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => self.i += 1,
                    }
                }
            }
            _ => {
                let start = self.i;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// The element ranges of an array.
    fn array_elements(&mut self) -> Option<Vec<Range<usize>>> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(out);
        }
        loop {
            self.ws();
            let start = self.i;
            self.skip_value()?;
            out.push(start..self.i);
            self.ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(out),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_records_and_millis() {
        let line = br#" {"action":"processRecords","records":[{"data":"a\"b","k":[1,{"x":"]"}]} , {"data":"c"}],"millisBehindLatest":12,"extra":{"y":[true]}} "#;
        let layout = scan_process_records(line).unwrap();
        assert_eq!(layout.millis_behind_latest, Some(12));
        let parts: Vec<&str> = layout
            .records
            .iter()
            .map(|r| std::str::from_utf8(&line[r.clone()]).unwrap())
            .collect();
        assert_eq!(
            parts,
            [r#"{"data":"a\"b","k":[1,{"x":"]"}]}"#, r#"{"data":"c"}"#]
        );
        let empty = scan_process_records(
            br#"{"records":[],"action":"processRecords","millisBehindLatest":null}"#,
        )
        .unwrap();
        assert!(empty.records.is_empty());
        assert_eq!(empty.millis_behind_latest, None);
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let lines: [&[u8]; 11] = [
            b"{\"action\":\"processRecords\",\"records\":[{}],\"x\x01\":0}",
            b"{\"action\":\"processRecords\",\"records\":[{}],\"\xff\":0}",
            br#"{"action":"leaseLost"}"#,
            br#"{"action":"processRecords"}"#,
            br#"{"action":"processRecords","records":[{}],"action":"processRecords"}"#,
            br#"{"act\u0069on":"processRecords","records":[]}"#,
            br#"{"action":"processRecords","records":[{}]} x"#,
            br#"{"action":"processRecords","records":[{}],"bad":tru}"#,
            br#"{"action":"processRecords","records":[{},]}"#,
            br#"{"action":"processRecords","records":[{}"#,
            br#"{"action":"processRecords","records":[{}],"millisBehindLatest":"x"}"#,
        ];
        for line in lines {
            assert_eq!(
                scan_process_records(line),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
