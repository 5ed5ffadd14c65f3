//! Forwards the kernel log from /dev/kmsg over the events port, from its
//! first record, so the host has the whole boot log without the UART.
//! Only with a port: the console already has the kernel's own output.
//! Each read() of /dev/kmsg returns one record:
//! `PRIO,SEQ,TS_USEC,FLAGS[,...];MESSAGE\n` then optional ` KEY=VALUE` lines.

use crate::log;
use kestrel_proto::GuestRecord;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The kernel's record size limit (PRINTK_MESSAGE_MAX is 2048 + headers).
const RECORD_MAX: usize = 8192;
/// Records forwarded per pass of the event loop: a chatty kernel cannot
/// starve the other sources.
pub const KMSG_BUDGET: usize = 64;

pub struct Kmsg {
    file: File,
}

impl Kmsg {
    pub fn open(dev: &Path) -> Option<Kmsg> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(dev.join("kmsg"))
            .ok()
            .map(|file| Kmsg { file })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Forwards up to `budget` records available now; returns how many.
    pub fn forward(&mut self, budget: usize) -> usize {
        let mut buf = [0u8; RECORD_MAX];
        for n in 0..budget {
            match self.file.read(&mut buf) {
                Ok(0) => return n,
                Ok(len) => {
                    if let Some(rec) = parse_record(buf.get(..len).unwrap_or_default()) {
                        log::emit(rec);
                    }
                }
                // EPIPE: records were overwritten before we read them; the
                // next read continues with the oldest one still there.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    log::warn("kernel log records were lost before forwarding")
                }
                Err(_) => return n,
            }
        }
        budget
    }
}

/// One /dev/kmsg record as a `kmsg` record; None when it has no `;`.
pub fn parse_record(record: &[u8]) -> Option<GuestRecord> {
    let semi = record.iter().position(|&b| b == b';')?;
    let (header, rest) = record.split_at(semi);
    let msg = rest.get(1..).unwrap_or_default();
    let msg = msg.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = header.split(|&b| b == b',');
    let mut number = || {
        let field = parts.next().unwrap_or_default();
        std::str::from_utf8(field)
            .ok()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The facility is in the high bits; the level in the low three.
    let level = (number() & 7) as u8;
    let (seq, ts_us) = (number(), number());
    Some(GuestRecord::Kmsg {
        level,
        seq,
        ts_us,
        msg: String::from_utf8_lossy(msg).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kmsg_records() {
        let rec = parse_record(b"14,1234,5678,-;Linux version 6.1.0\n SUBSYSTEM=x\n").unwrap();
        assert_eq!(
            rec,
            GuestRecord::Kmsg {
                level: 6,
                seq: 1234,
                ts_us: 5678,
                msg: "Linux version 6.1.0".into()
            }
        );
        assert_eq!(parse_record(b"no separator"), None);
        assert!(matches!(
            parse_record(b"x,y;\xff"),
            Some(GuestRecord::Kmsg {
                level: 0,
                seq: 0,
                ..
            })
        ));
    }
}
