//! The protocol writer: processor messages onto the protocol stream.
//!
//! One message is one compact ASCII JSON line, written with one `write` and flushed at
//! once: the daemon reads line by line and waits for each answer, so nothing may sit in a
//! buffer, and one write per line keeps a message whole even if something else wrote to
//! the same pipe.

use std::io::{self, Write};

use crate::protocol::message::ProcessorMessage;

/// Writes protocol messages: compact ASCII JSON, one line, one write and one flush each.
pub struct ProtocolWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> ProtocolWriter<W> {
    /// Wraps the protocol output (stdout, or the private duplicate of it).
    pub fn new(out: W) -> Self {
        ProtocolWriter {
            out,
            buf: Vec::with_capacity(256),
        }
    }

    /// Writes and flushes one message.
    pub fn send(&mut self, msg: &ProcessorMessage) -> io::Result<()> {
        self.buf.clear();
        crate::json::write_ascii(&mut self.buf, msg).map_err(io::Error::other)?;
        self.buf.push(b'\n');
        log::trace!("-> {}", String::from_utf8_lossy(&self.buf).trim_end());
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}
