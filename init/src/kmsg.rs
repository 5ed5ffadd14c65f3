//! Forwards the kernel log from /dev/kmsg over the events port, from its
//! first record, so the host has the whole boot log without the UART.
//! Each read() of /dev/kmsg returns one record:
//! `PRIO,SEQ,TS_USEC,FLAGS[,...];MESSAGE\n` then optional ` KEY=VALUE` lines.

use crate::log;
use kestrel_proto::GuestRecord;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

/// The kernel's record size limit (PRINTK_MESSAGE_MAX is 2048 + headers).
const RECORD_MAX: usize = 8192;

pub struct Kmsg {
    file: File,
}

impl Kmsg {
    pub fn open() -> Option<Kmsg> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()
            .map(|file| Kmsg { file })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Forwards every record available now.
    pub fn forward(&mut self) {
        let mut buf = [0u8; RECORD_MAX];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => forward_record(buf.get(..n).unwrap_or_default()),
                // EPIPE: records were overwritten before we read them; the
                // next read continues with the oldest one still there.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    log::warn("kernel log records were lost before forwarding")
                }
                Err(_) => return,
            }
        }
    }
}

fn forward_record(record: &[u8]) {
    let Some(semi) = record.iter().position(|&b| b == b';') else {
        return;
    };
    let (header, rest) = record.split_at(semi);
    let msg = rest.get(1..).unwrap_or_default();
    let msg = msg.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = header.split(|&b| b == b',');
    let prio = parts.next().unwrap_or_default();
    let seq = parts.next().unwrap_or_default();
    let ts = parts.next().unwrap_or_default();
    // The facility is in the high bits; the level in the low three.
    let number = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|p| p.parse::<u64>().ok())
    };
    log::emit(GuestRecord::Kmsg {
        level: number(prio).map_or(0, |p| (p & 7) as u8),
        seq: number(seq).unwrap_or(0),
        ts_us: number(ts).unwrap_or(0),
        msg: String::from_utf8_lossy(msg).into_owned(),
    });
}
