//! The stdin reader: bytes into daemon lines, on a thread of its own, with recycled
//! buffers and a structural prescan while the bytes arrive.
//!
//! Why a thread and why this shape: a `processRecords` line can be tens of MiB, and the
//! daemon sends the next line only after the status of the previous one, so whatever
//! happens between a line's last byte and its status bounds throughput. The reader reads
//! straight into the line's buffer (no intermediate copy), scans the records as they arrive
//! ([`Prescan`]) so the lease can finish the scan at once, and takes buffers back
//! ([`super::payload::LineBuf`] returns them when the last record pointing into a line is
//! gone) so a large line costs no allocation and no page faults. Any line length is read,
//! up to the bound, past which it is refused without holding more.

use std::io::{self, Read};

use crossbeam_channel::{bounded, Receiver};

use super::scan::Prescan;

/// What the reader gives the lease.
pub enum ReadEvent {
    /// A line: the first `len` bytes of the buffer (the rest is initialized spare room),
    /// and its records as far as they were found while it arrived.
    Line(Vec<u8>, usize, Prescan),
    /// End of input.
    Eof,
    /// Reading failed.
    Error(io::Error),
    /// A line went past the bound without a newline: its first bytes.
    TooLong(Vec<u8>),
}

/// Starts the stdin reader. It reads straight into line buffers (no intermediate
/// buffer), taking them back from `recycled` when the records that pointed into them are
/// gone; bytes after a newline (the daemon never pipelines, so rarely any) start the next
/// line. A buffer keeps its length (all of it initialized) when it is recycled, and the
/// line is only its first bytes: so a recycled buffer is never zeroed again before a read.
pub fn spawn_reader<R: Read + Send + 'static>(
    mut input: R,
    recycled: Receiver<Vec<u8>>,
    max_line: usize,
) -> Receiver<ReadEvent> {
    // One line of look-ahead at most: the daemon never pipelines anyway.
    let (tx, rx) = bounded(1);
    let spawned = std::thread::Builder::new()
        .name("rsmld-stdin".into())
        .spawn(move || {
            let mut carry: Vec<u8> = Vec::new();
            let mut last_len = 0usize;
            loop {
                let mut line = recycled.try_recv().unwrap_or_default();
                // Headroom over the last line so that a similar line never has to grow
                // (growing a multi-MiB buffer doubles it).
                line.reserve((last_len + last_len / 8 + 64 * 1024).saturating_sub(line.len()));
                if line.len() < carry.len() {
                    line.resize(carry.len(), 0);
                }
                line[..carry.len()].copy_from_slice(&carry);
                let mut filled = carry.len();
                carry.clear();
                let mut prescan = Prescan::default();
                let read = read_line(
                    &mut input,
                    &mut line,
                    &mut filled,
                    &mut carry,
                    &mut prescan,
                    max_line,
                );
                let ev = match read {
                    Ok(true) if filled > max_line => {
                        ReadEvent::TooLong(line[..filled.min(256)].to_vec())
                    }
                    Ok(true) => {
                        last_len = filled;
                        ReadEvent::Line(line, filled, prescan)
                    }
                    Ok(false) if filled == 0 => ReadEvent::Eof,
                    Ok(false) if filled > max_line => {
                        ReadEvent::TooLong(line[..filled.min(256)].to_vec())
                    }
                    // A last line without a newline is still a line.
                    Ok(false) => ReadEvent::Line(line, filled, prescan),
                    Err(e) => ReadEvent::Error(e),
                };
                let stop = !matches!(ev, ReadEvent::Line(..));
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        let (tx, rx) = bounded(1);
        let _ = tx.send(ReadEvent::Error(e));
        return rx;
    }
    rx
}

/// Reads into `line` after its first `filled` bytes (which may hold carried-over bytes)
/// until they hold a newline; `filled` then ends the line and the bytes after the newline
/// move to `carry`. Bytes of `line` after `filled` are spare room (initialized, so reads
/// need no zeroing). `prescan` scans the line's records as they arrive. Ok(false) at EOF.
/// Past `max_line` bytes without a newline it stops reading and returns Ok(true) with
/// `filled` over the bound (the caller refuses the line): memory stays bounded.
fn read_line<R: Read>(
    input: &mut R,
    line: &mut Vec<u8>,
    filled: &mut usize,
    carry: &mut Vec<u8>,
    prescan: &mut Prescan,
    max_line: usize,
) -> io::Result<bool> {
    let mut scanned = 0;
    loop {
        if *filled > max_line && memchr::memchr(b'\n', &line[scanned..*filled]).is_none() {
            return Ok(true);
        }
        if let Some(pos) = memchr::memchr(b'\n', &line[scanned..*filled]) {
            let end = scanned + pos + 1;
            prescan.advance(&line[..end - 1]);
            carry.extend_from_slice(&line[end..*filled]);
            *filled = end;
            return Ok(true);
        }
        prescan.advance(&line[..*filled]);
        scanned = *filled;
        if line.len() - *filled < 64 * 1024 {
            // Zero only what the next reads can fill (a pipe hands over its size at most),
            // within the capacity while it lasts (a buffer over 4 MiB is not recycled).
            let spare = line.capacity() - line.len();
            let grow = if spare >= 64 * 1024 {
                spare.min(1 << 20)
            } else {
                line.len().clamp(64 * 1024, 1 << 20)
            };
            line.resize(line.len() + grow, 0);
        }
        match input.read(&mut line[*filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The line without its terminator (`\n`, `\r\n`).
pub fn trim_line(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && (bytes[end - 1] == b'\n' || bytes[end - 1] == b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

/// The first bytes of a line, printable and escaped, for error messages.
pub fn prefix_of(line: &[u8]) -> String {
    const MAX: usize = 120;
    let head = &line[..line.len().min(MAX)];
    let mut s: String = head.escape_ascii().to_string();
    if line.len() > MAX {
        s.push_str(&format!("... ({} bytes)", line.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_and_printable() {
        assert_eq!(prefix_of(b"{\"a\":\x01}"), "{\\\"a\\\":\\x01}");
        let long = vec![b'x'; 500];
        let p = prefix_of(&long);
        assert!(p.starts_with("xxxx") && p.ends_with("... (500 bytes)"));
    }

    #[test]
    fn trims_cr_lf() {
        assert_eq!(trim_line(b"{}\r\n"), b"{}");
        assert_eq!(trim_line(b"{}"), b"{}");
    }
}
