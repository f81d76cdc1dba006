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

use std::borrow::Cow;
use std::ops::Range;

use super::bytes::{printable_ascii, quote_or_backslash};
use super::decode::top_level_field;
use super::parser::{fast_record_from, fast_record_spans, is_base64, RecordSpans};
use super::record::RecordText;

/// Where the parts of a `processRecords` line are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecordsLayout<'a> {
    /// The byte range of each element of `records`, in order.
    pub records: Vec<Range<usize>>,
    /// Each element parsed, when it has the common record shape (see
    /// [`ProcessRecordsLayout::record`]).
    pub(crate) parsed: Vec<Parsed<'a>>,
    /// `millisBehindLatest`, if present and not null.
    pub millis_behind_latest: Option<i64>,
}

/// What the scan learned about one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// Nothing: parse its range.
    No,
    /// Parsed by a scan of the whole line.
    Text(RecordText<'a>),
    /// Parsed while the line arrived; its payload is still to be checked.
    At(RecordSpans),
}

impl<'a> ProcessRecordsLayout<'a> {
    /// Record `k` of `line` (the line this layout was made from) as the scan parsed it,
    /// finishing the checks a parse during the transfer left; `None`: parse its range
    /// (which also reports errors).
    pub fn record(&self, line: &'a [u8], k: usize) -> Option<RecordText<'a>> {
        match self.parsed.get(k)? {
            Parsed::No => None,
            Parsed::Text(text) => Some(text.clone()),
            Parsed::At(at) => text_at(line, at),
        }
    }
}

/// Scans `line`; `None` means "use the full decoder".
pub fn scan_process_records(line: &[u8]) -> Option<ProcessRecordsLayout<'_>> {
    scan(line, true)
}

/// The start of every `processRecords` line the Java daemon writes.
const PREFIX: &[u8] = br#"{"action":"processRecords","records":["#;

/// The records of a `processRecords` line found while the line is still arriving.
///
/// The stdin reader feeds it each time more of the line is in ([`Prescan::advance`]), so
/// the structural scan happens during the transfer rather than after it (the daemon
/// waits for `status`, so whatever runs between the line's last byte and `status` is on
/// the critical path). It only handles lines that start exactly as the Java daemon
/// writes them (`{"action":"processRecords","records":[`), and only commits an element once the `,` or `]` after it
/// has arrived. [`scan_resumed`] finishes the scan on the complete line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prescan {
    started: bool,
    ended: bool,
    /// Where the next element (or, once ended, the rest of the object) starts.
    pos: usize,
    ranges: Vec<Range<usize>>,
    /// Each element parsed, where it has the common record shape (as offsets: the
    /// buffer may move while the line grows): only `Parsed::No` and `Parsed::At`.
    parsed: Vec<Parsed<'static>>,
    /// The next attempt at an incomplete element waits until the line is this long.
    retry_at: usize,
    /// Attempts at elements that were not complete yet.
    incomplete: usize,
}

/// The text in `line` of a record parsed while the line arrived (as offsets, its payload
/// not yet checked to be base64), checking what the prescan left unchecked; `None` (parse
/// it again, which also reports errors) if a field is not as the fast parser requires.
fn text_at<'a>(line: &'a [u8], at: &RecordSpans) -> Option<RecordText<'a>> {
    let checked = |r: &Range<usize>, check: fn(&[u8]) -> bool| {
        let bytes = line.get(r.clone())?;
        if !check(bytes) {
            return None;
        }
        // SAFETY: checked just above: printable ASCII (base64 is a subset) is UTF-8.
        Some(Cow::Borrowed(unsafe {
            std::str::from_utf8_unchecked(bytes)
        }))
    };
    let text = |r: &Range<usize>| checked(r, printable_ascii);
    let data = match &at.data {
        Some(r) => Some(checked(r, is_base64)?),
        None => None,
    };
    Some(RecordText {
        data,
        partition_key: match &at.partition_key {
            Some(r) => Some(text(r)?),
            None => None,
        },
        sequence_number: text(&at.sequence_number)?,
        sub_sequence_number: at.sub_sequence_number,
        approximate_arrival_timestamp: at.approximate_arrival_timestamp,
    })
}

impl Prescan {
    /// Scans the elements that are complete in `b` (the line so far, no newline).
    pub fn advance(&mut self, b: &[u8]) {
        if self.ended {
            return;
        }
        if !self.started {
            if b.len() < PREFIX.len() || !b.starts_with(PREFIX) {
                return;
            }
            self.started = true;
            self.pos = PREFIX.len();
        }
        // An element that was incomplete is scanned again from its start, so a retry waits
        // until the bytes after its start have doubled: a record of many MiB arriving in
        // 64 KiB reads costs a few scans of it, not one per read. (What is left at the end
        // is finished by `scan_resumed`.)
        if b.len() < self.retry_at {
            return;
        }
        loop {
            let mut s = Scanner {
                b,
                i: self.pos,
                parallel: false,
            };
            s.ws();
            let start = s.i;
            // A record of the common shape is parsed here, once, during the transfer.
            // A failure may just mean "not all here yet": try again with more bytes.
            // Only small records are parsed here: the reader must keep pace with the pipe,
            // and for large records per-record work is a small share (their payload
            // search costs the same either way), while for small ones it is most of it.
            let small = self.ranges.last().is_none_or(|r| r.len() < 512);
            let parsed = match small.then(|| fast_record_spans(b, start, false)).flatten() {
                Some((spans, end)) => {
                    s.i = end;
                    Parsed::At(spans)
                }
                None => {
                    if s.skip_value().is_none() {
                        self.incomplete_at(start, b.len());
                        return;
                    }
                    Parsed::No
                }
            };
            let end = s.i;
            s.ws();
            let last = match s.next() {
                Some(b',') => false,
                Some(b']') => true,
                _ => {
                    self.incomplete_at(start, b.len());
                    return;
                }
            };
            self.ranges.push(start..end);
            self.parsed.push(parsed);
            self.pos = s.i;
            if last {
                self.ended = true;
                return;
            }
        }
    }

    fn incomplete_at(&mut self, start: usize, len: usize) {
        self.incomplete += 1;
        self.retry_at = len + (len - start).max(4096);
    }

    /// Elements found so far.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when no element was found.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Finishes a scan that `prescan` began on the same line (now complete); the result is
/// exactly [`scan_process_records`]'s.
pub fn scan_resumed(line: &[u8], prescan: Prescan) -> Option<ProcessRecordsLayout<'_>> {
    if !prescan.started || prescan.pos > line.len() {
        return scan(line, true);
    }
    let mut s = Scanner {
        b: line,
        i: prescan.pos,
        parallel: true,
    };
    let mut elements: Elements<'_> = (prescan.ranges, prescan.parsed);
    if !prescan.ended {
        s.ws();
        if elements.0.is_empty() && s.peek() == Some(b']') {
            // An empty array, right after `[`.
            s.i += 1;
            return top_level(
                s,
                Some(Resume {
                    seen: vec![&b"action"[..], &b"records"[..]],
                    records: elements,
                }),
            );
        }
        let mut rest = s.rest_of_array()?;
        elements.0.append(&mut rest.0);
        elements.1.append(&mut rest.1);
    }
    let resume = Resume {
        seen: vec![&b"action"[..], &b"records"[..]],
        records: elements,
    };
    top_level(s, Some(resume))
}

/// The state of a scan resumed after the `records` array.
struct Resume<'a> {
    seen: Vec<&'a [u8]>,
    records: Elements<'a>,
}

fn scan(line: &[u8], parallel: bool) -> Option<ProcessRecordsLayout<'_>> {
    let mut s = Scanner {
        b: line,
        i: 0,
        parallel,
    };
    s.ws();
    s.expect(b'{')?;
    top_level(s, None)
}

/// The top-level object from after its `{` (or, resumed, after the `records` value).
fn top_level<'a>(
    mut s: Scanner<'a>,
    resume: Option<Resume<'a>>,
) -> Option<ProcessRecordsLayout<'a>> {
    let line = s.b;
    let resumed = resume.is_some();
    let mut action_ok = resumed;
    let (mut seen, mut records) = match resume {
        Some(r) => (r.seen, Some(r.records)),
        None => (Vec::new(), None),
    };
    let mut millis = None;
    let mut first = !resumed;
    loop {
        if !first {
            s.ws();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        first = false;
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
                // full decoder would reject: each is decoded as the decoder's field of the
                // same name (the one field table, `RawDaemonMessage`).
                let field = top_level_field(other, value)?;
                if other == b"millisBehindLatest" {
                    millis = field.millis_behind_latest;
                }
            }
        }
    }
    s.ws();
    if s.i != line.len() || !action_ok {
        return None;
    }
    let (records, parsed) = records?;
    Some(ProcessRecordsLayout {
        records,
        parsed,
        millis_behind_latest: millis,
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Whether long arrays may be scanned in parts at once.
    parallel: bool,
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
            let at = self.i + quote_or_backslash(&self.b[self.i..])?;
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

    /// The element ranges of an array, each parsed where it has the common record shape.
    /// A long array is scanned in parallel: see [`Scanner::elements_in_parallel`].
    fn array_elements(&mut self) -> Option<Elements<'a>> {
        self.expect(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(Elements::default());
        }
        self.rest_of_array()
    }

    /// The elements from an element start to the array's end (`]`, consumed).
    fn rest_of_array(&mut self) -> Option<Elements<'a>> {
        if let Some(out) = self.parallel.then(|| self.elements_in_parallel()).flatten() {
            return Some(out);
        }
        let mut out = Elements::default();
        match self.elements_until(usize::MAX, &mut out)? {
            Stop::ArrayEnd => Some(out),
            Stop::At => None,
        }
    }

    /// Scans elements from an element start (after `[` or `,`) until the array's end
    /// (`]`, consumed) or until the next element would start exactly at `stop`.
    fn elements_until(&mut self, stop: usize, out: &mut Elements<'a>) -> Option<Stop> {
        loop {
            self.ws();
            if self.i == stop {
                return Some(Stop::At);
            }
            if self.i > stop {
                return None;
            }
            let start = self.i;
            // A record of the common shape is parsed while it is found (it ends where
            // skipping it would end: such a record holds no nested values).
            match fast_record_from(self.b, start) {
                Some((text, end)) => {
                    self.i = end;
                    out.1.push(Parsed::Text(text));
                }
                None => {
                    self.skip_value()?;
                    out.1.push(Parsed::No);
                }
            }
            out.0.push(start..self.i);
            self.ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(Stop::ArrayEnd),
                _ => return None,
            }
        }
    }

    /// The scan is serial and runs before `status` (so on the critical path): on a
    /// long line it is split into parts that are scanned at once. A part starts where
    /// the text `},{"` is first found after an even share of the line — very likely
    /// between two records, but only a guess: each part must end exactly where the next
    /// one starts, as an element start after a comma. Part 0 starts at the true first
    /// element, so by induction every part is then scanned exactly as one serial scan
    /// would; any mismatch (or failure) returns `None` and the caller scans serially.
    fn elements_in_parallel(&mut self) -> Option<Elements<'a>> {
        const MIN_PART: usize = 256 * 1024;
        let parts = rayon::current_num_threads().min((self.b.len() - self.i) / MIN_PART);
        if parts < 2 {
            return None;
        }
        let mut starts = vec![self.i];
        let share = (self.b.len() - self.i) / parts;
        for k in 1..parts {
            let from = (self.i + k * share).max(starts[k - 1] + 1);
            let at = from + memchr::memmem::find(self.b.get(from..)?, b"},{\"")? + 2;
            starts.push(at);
        }
        use rayon::prelude::*;
        // Per part: its elements, where it stopped, and the index after it.
        type Part<'a> = (Elements<'a>, Stop, usize);
        let scanned: Vec<Option<Part>> = (0..parts)
            .into_par_iter()
            .map(|k| {
                let mut part = Scanner {
                    b: self.b,
                    i: starts[k],
                    parallel: false,
                };
                let stop = starts.get(k + 1).copied().unwrap_or(usize::MAX);
                let mut out = Elements::default();
                let end = part.elements_until(stop, &mut out)?;
                Some((out, end, part.i))
            })
            .collect();
        let mut out = Elements::default();
        for (k, part) in scanned.into_iter().enumerate() {
            let (mut elements, end, i) = part?;
            let last = k + 1 == parts;
            match (end, last) {
                (Stop::At, false) | (Stop::ArrayEnd, true) => {
                    out.0.append(&mut elements.0);
                    out.1.append(&mut elements.1);
                }
                _ => return None,
            }
            if last {
                self.i = i;
            }
        }
        Some(out)
    }
}

/// Element ranges and, where they have the common record shape, the parsed records.
type Elements<'a> = (Vec<Range<usize>>, Vec<Parsed<'a>>);

/// Where [`Scanner::elements_until`] stopped.
enum Stop {
    /// At the array's closing bracket (consumed).
    ArrayEnd,
    /// At the requested element start.
    At,
}

/// The index of the first byte of `b` that is a quote, a backslash, or not printable
/// ASCII (`b.len()` if none).
#[cfg(test)]
fn first_special(b: &[u8]) -> usize {
    let end = quote_or_backslash(b).unwrap_or(b.len());
    b[..end]
        .iter()
        .position(|c| !printable_ascii(std::slice::from_ref(c)))
        .unwrap_or(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long lines are scanned in parts; the parts must give exactly the serial result,
    /// also when the text that marks a part's start occurs inside strings.
    #[test]
    fn parallel_scan_equals_serial_scan() {
        let record = |i: usize, key: &str| {
            format!(
                r#"{{"data":"{}","partitionKey":"{key}","sequenceNumber":"{}","subSequenceNumber":0}}"#,
                "QUJD".repeat(50),
                1000 + i
            )
        };
        // Keys that contain the part marker `},{"` (escaped, and at a string's end).
        let keys = [r#"plain"#, r#"a},{\"b"#, r#"ends},{"#, r#"x\\"#, r#"[{"#];
        for tricky_every in [1, 7, 1000, 100_000] {
            let records: Vec<String> = (0..6000)
                .map(|i| {
                    record(
                        i,
                        if i % tricky_every == 0 {
                            keys[i % keys.len()]
                        } else {
                            "k"
                        },
                    )
                })
                .collect();
            let line = format!(
                r#"{{"action":"processRecords","records":[{}],"millisBehindLatest":3}}"#,
                records.join(",")
            );
            assert!(line.len() > 1 << 20);
            let serial = scan(line.as_bytes(), false).expect("serial scan");
            let parallel = scan(line.as_bytes(), true).expect("parallel scan");
            assert_eq!(serial.records.len(), 6000);
            assert_eq!(parallel, serial, "tricky every {tricky_every}");
            // The clean line really is scanned in parts.
            if tricky_every == 100_000 && rayon::current_num_threads() > 1 {
                let start = line.find('[').unwrap() + 1;
                let mut s = Scanner {
                    b: line.as_bytes(),
                    i: start,
                    parallel: true,
                };
                assert_eq!(
                    s.elements_in_parallel(),
                    Some((serial.records.clone(), serial.parsed.clone()))
                );
                assert!(
                    serial.parsed.iter().all(|p| matches!(p, Parsed::Text(_))),
                    "all records parsed"
                );
            }
        }
        // A marker beyond the array (in a later value) only makes it fall back.
        let records: Vec<String> = (0..6000).map(|i| record(i, "k")).collect();
        let line = format!(
            r#"{{"action":"processRecords","records":[{}],"x":[{{}},{{"a":1}}]}}"#,
            records.join(",")
        );
        assert_eq!(scan(line.as_bytes(), true), scan(line.as_bytes(), false));
    }

    /// Fed the line in pieces (as the stdin reader does), the prescan and the resumed scan
    /// give exactly the result of one scan of the whole line, whatever the cut points.
    #[test]
    fn prescan_in_pieces_equals_one_scan() {
        let big: String = (0..3000)
            .map(|i| {
                format!(
                    r#"{{"data":"QUJD","partitionKey":"k{i}","sequenceNumber":"{}"}}"#,
                    10 + i
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let lines: Vec<String> = vec![
            format!(r#"{{"action":"processRecords","records":[{big}],"millisBehindLatest":5}}"#),
            r#"{"action":"processRecords","records":[{"data":"a"],{","sequenceNumber":"1"} , 12345 ,[1,{"x":"]"}],"s,]"],"millisBehindLatest":null}"#.to_owned(),
            r#"{"action":"processRecords","records":[1,2],"records":[]}"#.to_owned(),
            r#"{"action":"processRecords","records":[{"sequenceNumber":"1"}],"action":"x"}"#.to_owned(),
            r#"{"action":"processRecords","records":[{"sequenceNumber":"1"}]"#.to_owned(),
            r#"{"action":"processRecords","records":[{"sequenceNumber":"1"},]}"#.to_owned(),
            r#"{"action":"processRecords","records":[]}"#.to_owned(),
            r#"{"action":"processRecords","records":[  {"sequenceNumber":"1"}  ]  ,"reason":0}"#.to_owned(),
            r#" {"action":"processRecords","records":[{"sequenceNumber":"1"}]}"#.to_owned(),
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for line in &lines {
            let b = line.as_bytes();
            let whole = scan(b, true);
            for _ in 0..50 {
                let mut prescan = Prescan::default();
                let mut at = 0;
                while at < b.len() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    at = (at + 1 + (rng % 300) as usize).min(b.len());
                    prescan.advance(&b[..at]);
                }
                let resumed = scan_resumed(b, prescan);
                let key = |l: &Option<ProcessRecordsLayout>| {
                    l.as_ref()
                        .map(|l| (l.records.clone(), l.millis_behind_latest))
                };
                assert!(
                    key(&resumed) == key(&whole),
                    "{}",
                    &line[..line.len().min(120)]
                );
                // Records parsed during a resumed scan are parsed as in a whole one.
                if let (Some(r), Some(w)) = (&resumed, &whole) {
                    for k in 0..r.records.len() {
                        let a = r.record(b, k);
                        assert!(a.is_none() || a == w.record(b, k));
                    }
                }
            }
        }
        // The big line is found entirely while it arrives.
        let mut prescan = Prescan::default();
        prescan.advance(lines[0].as_bytes());
        assert_eq!(prescan.len(), 3000);
        // One 8 MiB record arriving in 4 KiB reads is attempted a few times, not per read.
        let huge = format!(
            r#"{{"action":"processRecords","records":[{{"data":"{}","sequenceNumber":"1"}},{{"sequenceNumber":"2"}}]}}"#,
            "QUJD".repeat(2 << 20)
        );
        let mut prescan = Prescan::default();
        let mut at = 0;
        while at < huge.len() {
            at = (at + 4096).min(huge.len());
            prescan.advance(&huge.as_bytes()[..at]);
        }
        assert!(prescan.incomplete <= 24, "{} attempts", prescan.incomplete);
        let whole = scan(huge.as_bytes(), true).unwrap();
        assert_eq!(
            scan_resumed(huge.as_bytes(), prescan).unwrap().records,
            whole.records
        );
    }

    #[test]
    fn word_searches_agree_with_byte_searches() {
        let slow_special = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c))
                .unwrap_or(b.len())
        };
        let mut rng = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 200) as usize;
            let mut b: Vec<u8> = (0..len)
                .map(|i| b"aZ09+/="[(rng >> (i % 60)) as usize % 7])
                .collect();
            // Plant a few specials (and bytes next to the thresholds) at random places.
            for k in 0..(rng >> 40) % 3 {
                if len > 0 {
                    let at = (rng >> (8 * k + 3)) as usize % len;
                    b[at] = [b'"', b'\\', 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff, 0]
                        [(rng >> (5 * k)) as usize % 9];
                }
            }
            assert_eq!(first_special(&b), slow_special(&b), "{b:?}");
            assert_eq!(
                quote_or_backslash(&b),
                b.iter().position(|&c| c == b'"' || c == b'\\'),
                "{b:?}"
            );
        }
    }

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
        let lines: [&[u8]; 14] = [
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
            // Found by fuzzing: fields the full decoder types must be checked as typed.
            br#"{"action":"processRecords","records":[],"reason":0}"#,
            br#"{"action":"processRecords","records":[],"shardId":[]}"#,
            br#"{"action":"processRecords","records":[],"subSequenceNumber":"1"}"#,
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
