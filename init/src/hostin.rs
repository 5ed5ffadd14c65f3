//! What the host sends down the events port: records (payload stdin as
//! `in`/`in_eof`) and the `ack` line after `poweroff`. The port is
//! non-blocking (shared with the writer in `log`); reads happen after poll
//! says it is readable.

use kestrel_init::event::{self, Event};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

/// Kinds the host sends.
pub const IN: &str = "in";
pub const IN_EOF: &str = "in_eof";

pub struct HostInput {
    port: File,
    buf: Vec<u8>,
    pub eof: bool,
}

/// One thing the host said.
pub enum HostLine {
    Ack,
    Record(Event),
}

impl HostInput {
    pub fn open() -> Option<HostInput> {
        crate::log::port_reader().map(|port| HostInput {
            port,
            buf: Vec::new(),
            eof: false,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.port.as_fd()
    }

    /// Call when poll said readable: reads once, returns complete lines.
    /// A line longer than the record limit is dropped, not buffered forever.
    pub fn read_lines(&mut self) -> Vec<HostLine> {
        let mut chunk = [0u8; 16 * 1024];
        match self.port.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self
                .buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default()),
            // The port is non-blocking: a wake-up without data is no EOF.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.eof = true,
        }
        let mut lines = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            if line == event::ACK.strip_suffix(b"\n").unwrap_or(event::ACK) {
                lines.push(HostLine::Ack);
            } else if let Ok(ev) = event::parse_line(line) {
                lines.push(HostLine::Record(ev));
            } else {
                crate::log::warn(&format!(
                    "ignored a malformed line from the host ({} bytes)",
                    line.len()
                ));
            }
        }
        if self.buf.len() > event::MAX_LINE {
            crate::log::warn("dropped an over-long line from the host");
            self.buf.clear();
        }
        lines
    }
}
