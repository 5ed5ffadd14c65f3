//! The one event loop of PID 1. Every source (uevents, finished module
//! loads, the kernel log, signals, the events port both ways, the
//! payload's pipes) is polled together, and each ready source gets a
//! bounded share per pass, so none can starve the others: a payload that
//! floods its stdout still gets reaped, a uevent storm still lets output
//! through. Every wait of the boot (the events port, devices settling,
//! the root device, the payload, the host's ack) is [`Init::run_until`]
//! with its own condition and deadline.

use crate::devices::Devices;
use crate::kmsg::{Kmsg, KMSG_BUDGET};
use crate::log;
use crate::payload::{Running, StdinFeeder};
use crate::roots::Roots;
use crate::sys::{self, Sys};
use kestrel_proto::cmdline::BootOptions;
use kestrel_proto::wire::{Decoder, CHUNK};
use kestrel_proto::{GuestRecord, HostRecord, EVENTS_PORT};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{wait, WaitOptions};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// How often the init looks again when a condition has no event to wake
/// it (no uevent socket: /sys is walked again).
const TICK: Duration = Duration::from_millis(20);

/// The state of PID 1 between its phases.
pub struct Init<'a> {
    pub sys: &'a dyn Sys,
    pub roots: Roots,
    pub opts: BootOptions,
    pub devices: Devices,
    pub kmsg: Option<Kmsg>,
    pub signals: Option<OwnedFd>,
    /// The events port, once open (writes go through `log`; this handle
    /// reads the host's records and tells when the port has room).
    pub port: Option<File>,
    host: Decoder,
    /// The host closed its side of the port.
    host_eof: bool,
    /// The host acknowledged `poweroff`.
    pub acked: bool,
    /// `poweroff` is said: the host's ack is the record read now.
    awaiting_ack: bool,
    pub payload: Option<Running>,
}

/// What a pass found ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Uevents,
    Loads,
    Kmsg,
    Signals,
    PortIn,
    PortOut,
    Output,
    Stdin,
}

impl<'a> Init<'a> {
    pub fn new(sys: &'a dyn Sys, roots: Roots, opts: BootOptions, devices: Devices) -> Self {
        Init {
            sys,
            roots,
            opts,
            devices,
            kmsg: None,
            signals: None,
            port: None,
            host: Decoder::new(),
            host_eof: false,
            acked: false,
            awaiting_ack: false,
            payload: None,
        }
    }

    /// Serves sources until `done` holds (true) or the deadline passes
    /// (false). `done` is checked before every pass.
    pub fn run_until(
        &mut self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return false;
            }
            self.pump(left);
        }
    }

    /// One pass: waits until a source is ready (at most `timeout`), then
    /// serves each ready source its share.
    fn pump(&mut self, timeout: Option<Duration>) {
        let ready = self.wait_ready(timeout);
        for source in ready {
            match source {
                Source::Uevents => {
                    self.devices.receive(self.sys, &self.roots);
                }
                Source::Loads => self.devices.collect_loads(),
                Source::Kmsg => {
                    if let Some(k) = self.kmsg.as_mut() {
                        k.forward(KMSG_BUDGET);
                    }
                }
                Source::Signals => self.handle_signals(),
                Source::PortIn => self.read_host(),
                Source::PortOut => log::flush(),
                Source::Output => {
                    if let Some(p) = self.payload.as_mut() {
                        p.forward_output();
                    }
                }
                Source::Stdin => self.feed_stdin(),
            }
        }
        // A reaped payload's pipes are read until empty, readable or not.
        if let Some(p) = self.payload.as_mut().filter(|p| p.status.is_some()) {
            p.forward_output();
        }
        if !self.devices.has_socket() {
            self.devices.walk(self.sys, &self.roots);
        }
        // Once no module is loading, a built-in driver has bound to what it
        // drives: the devices still without one are reported now, whatever
        // the boot waits for (a root disk whose driver is missing).
        if self.devices.loads_idle() {
            self.devices.report_unmatched(&self.roots);
        }
        // The events port opens as soon as it appears, whatever the boot
        // waits for: a host whose own deadline ends a long wait (rootwait)
        // still hears what happened.
        if self.opts.events {
            self.open_port();
        }
        log::flush();
    }

    fn wait_ready(&mut self, timeout: Option<Duration>) -> Vec<Source> {
        let mut entries: Vec<(PollFd<'_>, Source)> = Vec::new();
        let readable = |fd| PollFd::from_borrowed_fd(fd, PollFlags::IN);
        if let Some(fd) = self.devices.socket_fd() {
            entries.push((readable(fd), Source::Uevents));
        }
        for fd in self.devices.loader_fds() {
            entries.push((readable(fd), Source::Loads));
        }
        if let Some(k) = self.kmsg.as_ref() {
            entries.push((readable(k.fd()), Source::Kmsg));
        }
        if let Some(s) = self.signals.as_ref() {
            entries.push((readable(s.as_fd()), Source::Signals));
        }
        if let Some(port) = self.port.as_ref() {
            if self.wants_host_input() {
                entries.push((readable(port.as_fd()), Source::PortIn));
            }
            if log::unsent() > 0 {
                entries.push((PollFd::new(port, PollFlags::OUT), Source::PortOut));
            }
        }
        if let Some(p) = self.payload.as_ref() {
            if log::output_room() {
                for pipe in p.pipes.iter().filter(|p| p.open) {
                    entries.push((readable(pipe.as_fd()), Source::Output));
                }
            }
            if let Some(f) = p.stdin.as_ref().filter(|f| !f.pending.is_empty()) {
                entries.push((
                    PollFd::from_borrowed_fd(f.as_fd(), PollFlags::OUT),
                    Source::Stdin,
                ));
            }
        }
        let (mut fds, tags): (Vec<PollFd<'_>>, Vec<Source>) = entries.into_iter().unzip();
        // Without a uevent socket nothing announces devices: look again
        // every tick.
        let timeout = if self.devices.has_socket() {
            timeout
        } else {
            Some(timeout.map_or(TICK, |t| t.min(TICK)))
        };
        let timeout = timeout.and_then(|t| rustix::time::Timespec::try_from(t).ok());
        if poll(&mut fds, timeout.as_ref()).is_err() {
            return Vec::new();
        }
        let mut ready: Vec<Source> = fds
            .iter()
            .zip(tags)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, tag)| tag)
            .collect();
        ready.dedup();
        ready
    }

    /// The host's records are read while someone can use them: the
    /// payload's stdin (while it has room), the ack. Before the payload
    /// exists its input stays in the port, where the host's flow control
    /// holds it (read then, it would be lost: a `cat` payload waited
    /// forever for its piped stdin); the host sends nothing else before
    /// `poweroff`.
    fn wants_host_input(&self) -> bool {
        if self.host_eof {
            return false;
        }
        match self.payload.as_ref() {
            // Input for a stdin already closed is read and dropped.
            Some(p) => p.stdin.as_ref().is_none_or(StdinFeeder::has_room),
            None => self.awaiting_ack,
        }
    }

    /// After `poweroff`: serves the sources until the host has read every
    /// record and acknowledged them, or the deadline passes.
    pub fn await_ack(&mut self, deadline: Instant) -> bool {
        self.awaiting_ack = true;
        // A stdin nobody will read again must not keep the ack unread.
        if let Some(p) = self.payload.as_mut() {
            p.stdin = None;
        }
        self.run_until(Some(deadline), |i| log::unsent() == 0 && i.acked)
    }

    /// Reads one chunk from the port and hands on the host's records.
    fn read_host(&mut self) {
        let Some(port) = self.port.as_mut() else {
            return;
        };
        let mut chunk = vec![0u8; CHUNK];
        match port.read(&mut chunk) {
            Ok(0) => self.host_eof = true,
            Ok(n) => self.host.feed(chunk.get(..n).unwrap_or_default()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.host_eof = true,
        }
        while let Some(frame) = self.host.next_frame() {
            let rec = match frame.map_err(Into::into).and_then(HostRecord::decode) {
                Ok(rec) => rec,
                Err(e) => {
                    log::warn(&format!("ignored a bad record from the host: {e}"));
                    continue;
                }
            };
            let stdin = self.payload.as_mut().and_then(|p| p.stdin.as_mut());
            match (rec, stdin) {
                (HostRecord::Ack, _) => self.acked = true,
                (HostRecord::Input { data }, Some(f)) => f.pending.extend_from_slice(&data),
                (HostRecord::InputEof, Some(f)) => f.eof = true,
                // Input nobody reads (no payload, or stdin already closed).
                (HostRecord::Input { .. } | HostRecord::InputEof, None) => {}
            }
        }
        if self.host_eof {
            if let Some(f) = self.payload.as_mut().and_then(|p| p.stdin.as_mut()) {
                f.eof = true;
            }
        }
        self.feed_stdin();
    }

    fn feed_stdin(&mut self) {
        let Some(p) = self.payload.as_mut() else {
            return;
        };
        if p.stdin.as_mut().is_some_and(|f| f.flush()) {
            // All of stdin delivered (or the payload closed it): EOF.
            p.stdin = None;
        }
    }

    /// SIGCHLD reaps everything (the payload and orphans re-parented to
    /// PID 1); SIGTERM and SIGINT go to the payload's process group.
    fn handle_signals(&mut self) {
        let Some(fd) = self.signals.as_ref() else {
            return;
        };
        let mut forward = Vec::new();
        while let Some(sig) = sys::read_signal(fd) {
            if sig == libc::SIGTERM || sig == libc::SIGINT {
                forward.push(sig);
            }
        }
        if let Some(p) = self.payload.as_ref().filter(|p| p.status.is_none()) {
            for sig in forward {
                if let Some(sig) = rustix::process::Signal::from_named_raw(sig) {
                    let _ = rustix::process::kill_process_group(p.pid, sig);
                }
            }
        }
        self.reap();
    }

    /// Reaps every child that has exited; records the payload's status.
    pub fn reap(&mut self) {
        while let Ok(Some((pid, status))) = wait(WaitOptions::NOHANG) {
            if let Some(p) = self.payload.as_mut().filter(|p| p.pid == pid) {
                p.status = Some(status);
                // Its last bytes may still be in the pipes: read them first.
                p.quiet = false;
            }
        }
    }

    /// Opens the events port once it has appeared; true when it is open.
    pub fn open_port(&mut self) -> bool {
        if self.port.is_some() {
            return true;
        }
        let Some(dev) = self.devices.ports.find(&self.roots, EVENTS_PORT) else {
            return false;
        };
        self.devices.ports.make_links(self.sys, &self.roots);
        // Non-blocking: a host that stops reading must not hang PID 1.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&dev)
            .and_then(|port| Ok((port.try_clone()?, port)));
        match opened {
            Ok((writer, reader)) => {
                log::emit(GuestRecord::PortOpen {
                    name: EVENTS_PORT.to_owned(),
                    dev: dev.display().to_string(),
                });
                log::attach_port(writer);
                self.port = Some(reader);
                true
            }
            Err(e) => {
                log::error(&format!("failed to open {}: {e}", dev.display()), true);
                false
            }
        }
    }

    /// Devices are settled: every module asked for has finished and no
    /// uevent waits to be read.
    pub fn settled(&mut self) -> bool {
        if !self.devices.loads_idle() {
            return false;
        }
        // Waiting uevents are read first (they may ask for modules). When
        // that read leaves none behind, the check goes on at once: saying
        // "not yet" would send the loop to wait on sources that may never
        // speak again (it slept to the deadline, 20 s, in 1 of 30 boots).
        if self.uevents_pending() {
            self.devices.receive(self.sys, &self.roots);
            if self.uevents_pending() {
                return false;
            }
        }
        // Loads that finished after the last pass are recorded now.
        self.devices.collect_loads();
        self.devices.loads_idle()
    }

    /// A uevent waits on the socket.
    fn uevents_pending(&self) -> bool {
        let Some(fd) = self.devices.socket_fd() else {
            return false;
        };
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(
            &mut [PollFd::from_borrowed_fd(fd, PollFlags::IN)],
            Some(&zero),
        )
        .unwrap_or(0)
            > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};

    fn frames(records: &[HostRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.encode(&mut out);
        }
        out
    }

    /// An init whose events port is one end of a socket pair; the host
    /// writes at the other.
    fn with_port<'a>(sys: &'a Recorder, top: &std::path::Path) -> (Init<'a>, UnixStream) {
        let (guest, host) = UnixStream::pair().unwrap();
        guest.set_nonblocking(true).unwrap();
        let devices = Devices::new(None, None, None, false);
        let mut init = Init::new(sys, Roots::under(top), BootOptions::default(), devices);
        init.port = Some(File::from(OwnedFd::from(guest)));
        (init, host)
    }

    #[test]
    fn stdin_sent_before_the_payload_starts_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Recorder::default();
        let (mut init, mut host) = with_port(&sys, dir.path());
        let input = frames(&[
            HostRecord::Input {
                data: b"piped in\n".to_vec(),
            },
            HostRecord::InputEof,
        ]);
        host.write_all(&input).unwrap();
        // The boot goes on with the input waiting: nobody reads it yet.
        for _ in 0..3 {
            init.pump(Some(Duration::from_millis(5)));
        }
        let mut peek = vec![0u8; input.len() + 1];
        let port = init.port.as_ref().unwrap();
        let (waiting, _) =
            rustix::net::recv(port, &mut peek, rustix::net::RecvFlags::PEEK).unwrap();
        assert_eq!(waiting, input.len());
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(cat.id() as i32).unwrap();
        let stdin = OwnedFd::from(cat.stdin.take().unwrap());
        init.payload = Some(Running {
            pid,
            pipes: Vec::new(),
            stdin: Some(StdinFeeder::new(stdin)),
            status: None,
            drained: 0,
            quiet: false,
        });
        let fed = init.run_until(Some(Instant::now() + Duration::from_secs(10)), |i| {
            i.payload.as_ref().is_some_and(|p| p.stdin.is_none())
        });
        assert!(fed);
        assert_eq!(cat.wait_with_output().unwrap().stdout, b"piped in\n");
    }

    #[test]
    fn after_poweroff_the_ack_is_read_past_unread_input() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Recorder::default();
        let (mut init, mut host) = with_port(&sys, dir.path());
        let records = [
            HostRecord::Input {
                data: b"never read".to_vec(),
            },
            HostRecord::Ack,
        ];
        host.write_all(&frames(&records)).unwrap();
        // The record log is this test process's one (no port: what others
        // logged stays unsent), so only the ack is checked, not the return.
        init.await_ack(Instant::now() + Duration::from_millis(300));
        assert!(init.acked);
    }
}
