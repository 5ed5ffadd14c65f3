//! Where records go. One bounded buffer in memory, filled from PID 1's
//! first instruction and drained to the events port by the event loop
//! with non-blocking writes: PID 1 never blocks on the host.
//!
//! - With a port (the host said `kestrel.events`): records wait in the
//!   buffer until the port opens, then go out as the port takes them. The
//!   payload's output is read only while the buffer has room for it
//!   ([`output_room`]), so a slow host slows the payload down instead of
//!   losing bytes. Other records past [`PENDING_MAX`] are dropped and
//!   counted; the count goes out with `poweroff` and fails the run.
//! - Without a port (plain qemu, another VMM, hardware): nothing waits;
//!   records go to the console only with `kestrel.trace`. The kernel log
//!   is never copied to the console (the kernel already prints it there).
//!
//! Errors and warnings are also written to the console as plain lines, so
//! they are seen whatever happens to the port.

use kestrel_proto::wire::{CHUNK, MAX_HEADER};
use kestrel_proto::GuestRecord;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::BorrowedFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bound of the buffer for records other than the payload's output.
pub const PENDING_MAX: usize = 4 << 20;
/// The payload's output is read only while the buffer holds less than
/// this: enough for the port to stay busy, small enough to bound memory.
pub const OUTPUT_HIGH_WATER: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The host attached a port: buffer until it opens, then send.
    Port,
    /// No port: which records reach the console.
    Console(Lines),
}

/// Records on the console, as lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// None (a plain boot: the console is the user's).
    Off,
    /// The milestones (`kestrel.trace`).
    Milestones,
    /// Every record but the payload's output: the port the host attached
    /// never opened, and the console is the only way left to it.
    All,
}

impl Lines {
    fn wants(self, rec: &GuestRecord) -> bool {
        match self {
            Lines::Off => false,
            Lines::Milestones => traced(rec),
            Lines::All => !matches!(rec, GuestRecord::Output { .. }),
        }
    }
}

struct Sink {
    mode: Mode,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    sent: usize,
    port: Option<File>,
    dropped: u64,
    verbose: bool,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    mode: Mode::Port,
    pending: Vec::new(),
    sent: 0,
    port: None,
    dropped: 0,
    verbose: false,
});

fn sink() -> MutexGuard<'static, Sink> {
    // A poisoned lock only means another thread panicked mid-write; the
    // buffer is still usable and PID 1 must go on.
    SINK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Guest CLOCK_BOOTTIME in nanoseconds: the clock of every record.
fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// What `kestrel.trace` puts on the console: the boot's milestones only
/// (the console is slow, and the kernel already logs its own messages
/// there; errors and warnings go there as text anyway).
fn traced(rec: &GuestRecord) -> bool {
    matches!(
        rec,
        GuestRecord::InitStart { .. }
            | GuestRecord::Ready
            | GuestRecord::Root { .. }
            | GuestRecord::SwitchRoot { .. }
            | GuestRecord::PayloadStart { .. }
            | GuestRecord::PayloadExit { .. }
            | GuestRecord::Poweroff { .. }
    )
}

impl Sink {
    fn unsent(&self) -> usize {
        self.pending.len().saturating_sub(self.sent)
    }

    fn push(&mut self, t_ns: u64, rec: &GuestRecord) {
        match self.mode {
            Mode::Console(lines) => {
                if lines.wants(rec) {
                    console_record(t_ns, rec);
                }
            }
            Mode::Port => {
                // Output is admitted by the event loop (see output_room);
                // everything else has its own bound.
                let output = matches!(rec, GuestRecord::Output { .. });
                if !output && self.unsent() + MAX_HEADER > PENDING_MAX {
                    self.dropped += 1;
                    return;
                }
                if self.sent > 0 && self.sent == self.pending.len() {
                    self.pending.clear();
                    self.sent = 0;
                }
                rec.encode(t_ns, &mut self.pending);
            }
        }
    }

    /// Writes what the port takes now. An error other than "full" ends
    /// the port: what was not sent is counted as dropped.
    fn flush(&mut self) {
        let Some(port) = self.port.as_mut() else {
            return;
        };
        while self.sent < self.pending.len() {
            match port.write(self.pending.get(self.sent..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.port = None;
                    self.dropped += 1;
                    self.pending.clear();
                    self.sent = 0;
                    console(
                        "error",
                        &format!("the events port failed: {e}; records are lost"),
                    );
                    return;
                }
            }
        }
        if self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        } else if self.sent > self.pending.len() / 2 {
            self.pending.drain(..self.sent);
            self.sent = 0;
        }
    }
}

/// Chooses where records go; called once the command line is read
/// (records made before it are buffered as for a port).
pub fn set_mode(mode: Mode) {
    let mut s = sink();
    s.mode = mode;
    if let Mode::Console(lines) = mode {
        // The records buffered so far, re-rendered as lines (they were framed).
        let pending = std::mem::take(&mut s.pending);
        let mut decoder = kestrel_proto::Decoder::new();
        decoder.feed(pending.get(s.sent..).unwrap_or_default());
        s.sent = 0;
        while let Some(Ok(frame)) = decoder.next_frame() {
            if let Some(t) = GuestRecord::decode(frame)
                .ok()
                .filter(|t| lines.wants(&t.rec))
            {
                console_record(t.t_ns, &t.rec);
            }
        }
    }
}

fn console_record(t_ns: u64, rec: &GuestRecord) {
    let mut line = rec.to_line(t_ns).into_bytes();
    line.push(b'\n');
    write_fd(rustix::stdio::stdout(), &line);
}

/// Writes one record stamped now.
#[inline(never)]
pub fn emit(rec: GuestRecord) {
    emit_at(now_ns(), rec);
}

/// Writes one record with a given timestamp. Never inlined: records are
/// made in many places, the encoder is one (the init's size is a target).
#[inline(never)]
pub fn emit_at(t_ns: u64, rec: GuestRecord) {
    sink().push(t_ns, &rec);
}

/// Turns on debug records (`kestrel.debug`).
pub fn set_verbose(on: bool) {
    sink().verbose = on;
}

/// A debug record, only written with `kestrel.debug`.
pub fn debug(msg: impl FnOnce() -> String) {
    let mut s = sink();
    if s.verbose {
        let rec = GuestRecord::Debug { msg: msg() };
        s.push(now_ns(), &rec);
    }
}

/// Writes all of `data` to a console fd, straight (no std stdio: PID 1
/// has no use for its buffers and locks, and the init's size counts). A
/// failed console write has nowhere else to go.
fn write_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) | Err(_) => return,
            Ok(n) => data = data.get(n..).unwrap_or_default(),
        }
    }
}

/// A line on the console (fd 2, set up by stdio::ensure).
pub fn console_line(line: &str) {
    write_fd(rustix::stdio::stderr(), format!("{line}\n").as_bytes());
}

fn console(level: &str, msg: &str) {
    console_line(&format!("kestrel: {level}: {msg}"));
}

/// A failure, on the events port and the console.
pub fn error(msg: &str, fatal: bool) {
    emit(GuestRecord::Error {
        msg: msg.to_owned(),
        fatal,
    });
    console("error", msg);
}

/// A problem the boot survives.
pub fn warn(msg: &str) {
    emit(GuestRecord::Warn {
        msg: msg.to_owned(),
    });
    console("warning", msg);
}

/// The port opened (non-blocking): what is buffered goes out first.
pub fn attach_port(port: File) {
    let mut s = sink();
    s.port = Some(port);
    s.flush();
}

/// Sends what the port takes now (the event loop calls this when the port
/// is writable).
pub fn flush() {
    sink().flush();
}

/// Bytes waiting for the port.
pub fn unsent() -> usize {
    sink().unsent()
}

/// Whether one more chunk of the payload's output fits.
pub fn output_room() -> bool {
    let s = sink();
    match s.mode {
        Mode::Port => s.unsent() + CHUNK + MAX_HEADER <= OUTPUT_HIGH_WATER,
        Mode::Console(_) => true,
    }
}

/// Records lost so far.
pub fn dropped() -> u64 {
    sink().dropped
}

/// Sends everything buffered, waiting for room at most until `deadline`
/// (the last records before power off). Whatever is left is dropped.
pub fn flush_until(deadline: Instant) {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut s = sink();
        s.flush();
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(port) = s.port.as_ref().filter(|_| s.unsent() > 0) else {
            return;
        };
        if left.is_zero() {
            s.dropped += 1;
            return;
        }
        let timeout = rustix::time::Timespec::try_from(left.min(Duration::from_millis(100)))
            .unwrap_or(rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            });
        let _ = poll(&mut [PollFd::new(port, PollFlags::OUT)], Some(&timeout));
    }
}
