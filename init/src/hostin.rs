//! What the host sends down the events port: the payload's stdin (`in`,
//! `in_eof`) and the `ack` after `poweroff`. The port is non-blocking
//! (shared with the writer in `log`); reads happen after poll says it is
//! readable.

use kestrel_proto::wire::{Decoder, CHUNK};
use kestrel_proto::HostRecord;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

pub struct HostInput {
    port: File,
    decoder: Decoder,
    pub eof: bool,
}

impl HostInput {
    pub fn open() -> Option<HostInput> {
        crate::log::port_reader().map(|port| HostInput {
            port,
            decoder: Decoder::new(),
            eof: false,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.port.as_fd()
    }

    /// Call when poll said readable: reads once, returns complete records.
    /// A bad frame is reported and skipped (the decoder's memory is bounded).
    pub fn read_records(&mut self) -> Vec<HostRecord> {
        let mut chunk = vec![0u8; CHUNK];
        match self.port.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self.decoder.feed(chunk.get(..n).unwrap_or_default()),
            // The port is non-blocking: a wake-up without data is no EOF.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.eof = true,
        }
        let mut records = Vec::new();
        while let Some(frame) = self.decoder.next_frame() {
            match frame.map_err(Into::into).and_then(HostRecord::decode) {
                Ok(rec) => records.push(rec),
                Err(e) => crate::log::warn(&format!("ignored a bad record from the host: {e}")),
            }
        }
        records
    }
}
