//! The events writer. Records (see `kestrel_proto::record`) are buffered in
//! memory from the first instruction and flushed to the events port once it
//! exists. The buffer is bounded: past [`PENDING_MAX`] records are dropped
//! and counted (the count goes out with `poweroff`). Errors and warnings
//! also go to the console as plain lines, so they are seen even when the
//! port never appears.

use kestrel_proto::{GuestRecord, OutputFd};
use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bound of the in-memory buffer used until the port opens.
pub const PENDING_MAX: usize = 4 << 20;

struct Sink {
    pending: Vec<u8>,
    port: Option<File>,
    /// No port will come: records go to the console as they are made.
    console: bool,
    dropped: u64,
    verbose: bool,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    pending: Vec::new(),
    port: None,
    console: false,
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
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// How long one record may wait for room on the port. The host reads
/// continuously, so only a host that stopped reading gets here; the port is
/// then dropped for good and records go to the console.
const PORT_STALL_MAX: Duration = Duration::from_secs(10);

/// Writes all of `data` to the non-blocking port, waiting for room at most
/// [`PORT_STALL_MAX`]: output is not dropped while the host keeps up, and a
/// stalled host cannot hang PID 1.
fn write_port(port: &mut File, data: &[u8]) -> std::io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    use std::io::ErrorKind;
    let deadline = Instant::now() + PORT_STALL_MAX;
    let mut rest = data;
    while !rest.is_empty() {
        match port.write(rest) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = rustix::time::Timespec::try_from(left)
                    .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))?;
                if left.is_zero()
                    || poll(&mut [PollFd::new(&*port, PollFlags::OUT)], Some(&timeout))? == 0
                {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Sink {
    fn write(&mut self, line: &[u8]) {
        if let Some(port) = self.port.as_mut() {
            if write_port(port, line).is_ok() {
                return;
            }
            // Not through warn(): that would take this lock again.
            self.port = None;
            self.console = true;
            self.dropped += 1;
            let _ = writeln!(
                std::io::stderr(),
                "kestrel: warning: the events port stopped taking records; using the console"
            );
        }
        if self.console {
            let _ = std::io::stdout().write_all(line);
            return;
        }
        if self.pending.len() + line.len() <= PENDING_MAX {
            self.pending.extend_from_slice(line);
        } else {
            self.dropped += 1;
        }
    }
}

/// Writes one record stamped now.
pub fn emit(rec: GuestRecord) {
    emit_at(now_ns(), rec);
}

/// Writes one record with a given timestamp.
pub fn emit_at(t_ns: u64, rec: GuestRecord) {
    let mut s = sink();
    if s.console {
        // On the console the payload's output is plain text, and records
        // are lines (no payload follows a header there).
        if let GuestRecord::Output { fd, data } = &rec {
            let _ = match fd {
                OutputFd::Stdout => std::io::stdout().write_all(data),
                OutputFd::Stderr => std::io::stderr().write_all(data),
            };
            return;
        }
    }
    let mut line = Vec::with_capacity(96);
    rec.encode(t_ns, &mut line);
    s.write(&line);
}

/// Turns on debug records (`kestrel.debug`).
pub fn set_verbose(on: bool) {
    sink().verbose = on;
}

/// A debug record, only written with `kestrel.debug`.
pub fn debug(msg: &str) {
    if sink().verbose {
        emit(GuestRecord::Debug {
            msg: msg.to_owned(),
        });
    }
}

fn console(level: &str, msg: &str) {
    // The console is fds 1/2 (set up by stdio::ensure); a failed console
    // write has nowhere else to go.
    let _ = writeln!(std::io::stderr(), "kestrel: {level}: {msg}");
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

/// Starts writing to the events port (opened non-blocking): everything
/// buffered goes first.
pub fn attach_port(mut port: File) {
    let mut s = sink();
    let pending = std::mem::take(&mut s.pending);
    if write_port(&mut port, &pending).is_ok() {
        s.port = Some(port);
    } else {
        s.pending = pending;
    }
}

/// A second handle on the port, to read the host's answers from.
pub fn port_reader() -> Option<File> {
    sink().port.as_ref().and_then(|p| p.try_clone().ok())
}

/// Records lost to a full buffer.
pub fn dropped() -> u64 {
    sink().dropped
}

/// No port will come: what is buffered and every later record goes to the
/// console (slower, but streamed, and the host parses records there too).
pub fn use_console() {
    let mut s = sink();
    if s.port.is_none() {
        s.console = true;
        let pending = std::mem::take(&mut s.pending);
        let _ = std::io::stdout().write_all(&pending);
        let _ = std::io::stdout().flush();
    }
}
