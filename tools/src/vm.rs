//! One boot: qemu started, and a host that cannot be held. The thread that
//! calls [`boot`] only supervises: it takes the records, answers
//! `poweroff` with `ack`, and enforces the deadline and the signals; it
//! never reads or writes a file descriptor itself. Around it, each stream
//! has a thread and every queue between them a bound:
//!
//! - the serial console and the events port are read by their own threads,
//!   lines and frames bounded; every record is stamped with host time;
//! - the payload's output goes to its own writer thread through a bounded
//!   queue: when our stdout blocks (a paused `| less`), the queue fills,
//!   the events reader stops reading, and the guest feels it through the
//!   socket, instead of host memory growing;
//! - what goes to the guest (stdin records, the ack) is written by one
//!   writer thread from a bounded outbox; the ack never waits behind a
//!   full queue, and a guest that does not read holds only that thread.

use crate::bootlog::{BootLog, Stamped};
use crate::qemu::{Vm, VmConfig};
use crate::qemu_trace::{self, Marker, Tracker};
use crate::signals;
use anyhow::{Context, Result};
use kestrel_proto::wire::{Decoder, CHUNK, MAX_HEADER};
use kestrel_proto::{GuestRecord, HostRecord, OutputFd, RecordError, Timed};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the supervisor looks at qemu, the clock and the signals.
const TICK: Duration = Duration::from_millis(20);
/// Messages from the readers to the supervisor waiting to be taken.
const MAIN_QUEUE: usize = 1024;
/// Output chunks (each at most [`CHUNK`]) waiting for our stdout: with
/// the frame being decoded and the socket's buffers, what a blocked
/// terminal can make the host hold.
const OUTPUT_QUEUE: usize = 16;
/// Frames (stdin chunks) waiting to be written to the guest.
const OUTBOX_FRAMES: usize = 16;
/// Longest console line kept whole (a record on the console fits);
/// longer lines are cut here and the rest up to the newline dropped.
const MAX_CONSOLE_LINE: usize = MAX_HEADER;
/// What is kept of qemu's own stderr.
const MAX_QEMU_STDERR: usize = 64 * 1024;
/// After the deadline or a signal: how long what is left may still flush.
const GRACE: Duration = Duration::from_millis(200);

/// Where the payload's stdin comes from.
#[derive(Clone, Debug)]
pub enum StdinSource {
    Data(Vec<u8>),
    /// This process's own stdin, streamed as it arrives.
    Inherit,
}

/// Where the payload's output goes.
pub enum Sink {
    /// Written to these as it arrives (see [`Sink::terminal`]).
    Write {
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
    },
    /// Kept and returned in [`Boot`] (tests, callers that want the bytes).
    Capture,
    /// Counted only (benchmarks).
    Discard,
}

impl Sink {
    /// Our own stdout and stderr.
    pub fn terminal() -> Sink {
        Sink::Write {
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
        }
    }
}

/// A boot's log and, with [`Sink::Capture`], the payload's output.
#[derive(Debug, Default)]
pub struct Boot {
    pub log: BootLog,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Boots `config` and collects what arrives until qemu exits, `timeout`
/// passes or a signal asks us to stop (then qemu is killed).
pub fn boot(
    config: &VmConfig,
    timeout: Duration,
    stdin: Option<StdinSource>,
    sink: Sink,
) -> Result<Boot> {
    let listener = listen(&config.events_socket)?;
    // qemu's trace lines carry the host's CLOCK_REALTIME.
    let spawn_realtime = qemu_trace::realtime_ns();
    let t0 = Instant::now();
    let deadline = deadline_after(t0, timeout);
    let mut vm = Vm::spawn(config)?;
    let streams = Streams::start(
        &mut vm,
        listener,
        (t0, spawn_realtime),
        (stdin, sink),
        config.echo_console,
    );
    let mut log = BootLog::default();
    let end = supervise(&mut vm, &streams, &mut log, t0, deadline);
    let captured = end_boot(&mut vm, streams, &mut log, t0, end, deadline);
    let _ = std::fs::remove_file(&config.events_socket);
    log.output_bytes = captured.bytes;
    Ok(Boot {
        log,
        stdout: captured.stdout,
        stderr: captured.stderr,
    })
}

/// A timeout too large for the clock (`--timeout 1e19`) means no deadline
/// in practice: a century.
fn deadline_after(t0: Instant, timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t0.checked_add(timeout.min(CENTURY)).unwrap_or(t0)
}

fn listen(socket: &std::path::Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("failed to listen on {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What the readers hand the supervisor.
enum Msg {
    Record(u64, Timed<GuestRecord>),
    Bad(String),
    /// A console line that is not a record; true when it was cut.
    Console(u64, String, bool),
    /// What qemu said on stderr, and its trace markers.
    Stderr(String, Vec<(Marker, u64)>),
}

/// One chunk of the payload's output.
type Chunk = (OutputFd, Vec<u8>);

/// Sends what a reader found where it goes: output to the output thread
/// (blocking when its queue is full: that is the backpressure), the rest
/// to the supervisor.
#[derive(Clone)]
struct Router {
    main: SyncSender<Msg>,
    output: SyncSender<Chunk>,
    t0: Instant,
    /// Console lines are also output (see `VmConfig::echo_console`).
    echo_console: bool,
}

impl Router {
    /// False when nobody listens any more.
    fn record(&self, rec: Result<Timed<GuestRecord>, RecordError>) -> bool {
        match rec {
            Ok(Timed {
                rec: GuestRecord::Output { fd, data },
                ..
            }) => self.output.send((fd, data)).is_ok(),
            Ok(item) => self.main.send(Msg::Record(since(self.t0), item)).is_ok(),
            Err(e) => self.main.send(Msg::Bad(e.to_string())).is_ok(),
        }
    }

    /// The init's records reach the console when there is no events port:
    /// they are parsed there too.
    fn console_line(&self, line: &[u8], truncated: bool) -> bool {
        if !truncated {
            if let Ok(item) = GuestRecord::parse_line(line) {
                return self.record(Ok(item));
            }
        }
        if self.echo_console {
            let mut out = line.strip_suffix(b"\n").unwrap_or(line).to_vec();
            // The serial console ends its lines with CR LF.
            if out.last() == Some(&b'\r') {
                out.pop();
            }
            out.push(b'\n');
            if self.output.send((OutputFd::Stdout, out)).is_err() {
                return false;
            }
        }
        let text = String::from_utf8_lossy(line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        self.main
            .send(Msg::Console(since(self.t0), text, truncated))
            .is_ok()
    }
}

/// Frames for the guest, written by one thread. Stdin chunks wait in a
/// bounded queue; the ack goes first and never waits.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutboxState {
    frames: VecDeque<Vec<u8>>,
    ack: bool,
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame, waiting while the queue is full; false once closed.
    fn push(&self, frame: Vec<u8>) -> bool {
        let mut s = self.lock();
        while s.frames.len() >= OUTBOX_FRAMES && !s.closed {
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if s.closed {
            return false;
        }
        s.frames.push_back(frame);
        self.changed.notify_all();
        true
    }

    /// Asks for an ack to be written next. Never blocks.
    fn push_ack(&self) {
        self.lock().ack = true;
        self.changed.notify_all();
    }

    /// The next frame to write; None once closed.
    fn pop(&self) -> Option<Vec<u8>> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if std::mem::take(&mut s.ack) {
                let mut frame = Vec::new();
                HostRecord::Ack.encode(&mut frame);
                return Some(frame);
            }
            if let Some(f) = s.frames.pop_front() {
                self.changed.notify_all();
                return Some(f);
            }
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// The payload's output as it was passed on.
#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    bytes: [u64; 2],
}

/// The threads around the supervisor.
struct Streams {
    rx: Receiver<Msg>,
    outbox: Arc<Outbox>,
    /// Tells the accept loop that qemu is gone.
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    output: JoinHandle<Captured>,
}

impl Streams {
    fn start(
        vm: &mut Vm,
        listener: UnixListener,
        (t0, spawn_realtime): (Instant, u64),
        (stdin, sink): (Option<StdinSource>, Sink),
        echo_console: bool,
    ) -> Streams {
        let (main, rx) = mpsc::sync_channel(MAIN_QUEUE);
        let (output, output_rx) = mpsc::sync_channel(OUTPUT_QUEUE);
        let router = Router {
            main,
            output,
            t0,
            echo_console,
        };
        let outbox = Arc::new(Outbox::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        if let Some(stdout) = vm.child.stdout.take() {
            let router = router.clone();
            readers.push(std::thread::spawn(move || {
                split_lines(stdout, MAX_CONSOLE_LINE, |line, cut| {
                    router.console_line(line, cut)
                })
            }));
        }
        if let Some(stderr) = vm.child.stderr.take() {
            let main = router.main.clone();
            readers.push(std::thread::spawn(move || {
                let _ = main.send(read_stderr(stderr, spawn_realtime));
            }));
        }
        {
            let (outbox, stop) = (outbox.clone(), stop.clone());
            readers.push(std::thread::spawn(move || {
                serve_events_port(listener, router, outbox, stop)
            }));
        }
        if let Some(source) = stdin {
            let outbox = outbox.clone();
            // Detached: a blocked read of our stdin must not hold up the end of the boot.
            std::thread::spawn(move || feed_stdin(source, &outbox));
        }
        let output = std::thread::spawn(move || write_output(output_rx, sink));
        Streams {
            rx,
            outbox,
            stop,
            readers,
            output,
        }
    }
}

/// Calls `each` with every line of `r` (newline included); a line longer
/// than `max` is passed cut at `max` (flagged) and the rest of it, up to
/// its newline, is dropped. Stops at the end or when `each` says false.
fn split_lines(mut r: impl Read, max: usize, mut each: impl FnMut(&[u8], bool) -> bool) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut skipping = false;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for chunk in buf
            .get(..n)
            .unwrap_or_default()
            .split_inclusive(|&b| b == b'\n')
        {
            let ends = chunk.last() == Some(&b'\n');
            if !skipping {
                let room = max.saturating_sub(line.len());
                line.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if ends && chunk.len() <= room {
                    if !each(&line, false) {
                        return;
                    }
                    line.clear();
                    continue;
                }
                if line.len() >= max {
                    if !each(&line, true) {
                        return;
                    }
                    line.clear();
                    skipping = !ends;
                }
            } else if ends {
                skipping = false;
            }
        }
    }
    if !line.is_empty() {
        each(&line, false);
    }
}

/// Up to `max` bytes of `r`, the rest read and dropped.
/// Reads qemu's stderr: what it said (bounded) and the markers of its
/// trace lines, as ns since `spawn_realtime_ns`.
fn read_stderr(r: impl Read, spawn_realtime_ns: u64) -> Msg {
    let mut said = String::new();
    let mut tracker = Tracker::default();
    split_lines(r, MAX_CONSOLE_LINE, |line, _| {
        let line = String::from_utf8_lossy(line);
        if !tracker.feed(line.trim_end()) && said.len() + line.len() <= MAX_QEMU_STDERR {
            said.push_str(&line);
        }
        true
    });
    Msg::Stderr(said, tracker.markers(spawn_realtime_ns))
}

/// Waits for qemu to connect to the events port (until `stop`), then
/// starts the writer and reads the port.
fn serve_events_port(
    listener: UnixListener,
    router: Router,
    outbox: Arc<Outbox>,
    stop: Arc<AtomicBool>,
) {
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    drop(listener);
    let _ = stream.set_nonblocking(false);
    if let Ok(writer) = stream.try_clone() {
        let outbox = outbox.clone();
        std::thread::spawn(move || write_frames(writer, &outbox));
    }
    read_records(stream, &router);
}

/// Reads the events port, decoding frames as they complete.
fn read_records(mut stream: impl Read, router: &Router) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        decoder.feed(buf.get(..n).unwrap_or_default());
        while let Some(frame) = decoder.next_frame() {
            let rec = frame
                .map_err(RecordError::from)
                .and_then(GuestRecord::decode);
            if !router.record(rec) {
                return;
            }
        }
    }
    if let Some(e) = decoder.finish() {
        router.record(Err(e.into()));
    }
}

/// Writes the outbox's frames to the guest until it closes or the guest
/// goes away.
fn write_frames(mut stream: UnixStream, outbox: &Outbox) {
    while let Some(frame) = outbox.pop() {
        if stream.write_all(&frame).is_err() {
            break;
        }
    }
    outbox.close();
}

/// Streams stdin to the guest as `in` records, then `in_eof`.
fn feed_stdin(source: StdinSource, outbox: &Outbox) {
    let mut reader: Box<dyn Read> = match source {
        StdinSource::Data(d) => Box::new(std::io::Cursor::new(d)),
        StdinSource::Inherit => Box::new(std::io::stdin()),
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut frame = Vec::new();
                let data = buf.get(..n).unwrap_or_default().to_vec();
                HostRecord::Input { data }.encode(&mut frame);
                if !outbox.push(frame) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let mut frame = Vec::new();
    HostRecord::InputEof.encode(&mut frame);
    outbox.push(frame);
}

/// The payload's output, passed on as it comes. A writer that fails (a
/// closed pipe) is dropped; the rest is still drained, so the guest is
/// never held by it.
fn write_output(rx: Receiver<Chunk>, sink: Sink) -> Captured {
    let mut c = Captured::default();
    let (mut out, mut err, capture) = match sink {
        Sink::Write { stdout, stderr } => (Some(stdout), Some(stderr), false),
        Sink::Capture => (None, None, true),
        Sink::Discard => (None, None, false),
    };
    for (fd, data) in rx {
        let (slot, writer) = match fd {
            OutputFd::Stdout => (0, &mut out),
            OutputFd::Stderr => (1, &mut err),
        };
        if let Some(c) = c.bytes.get_mut(slot) {
            *c += data.len() as u64;
        }
        if capture {
            match fd {
                OutputFd::Stdout => c.stdout.extend_from_slice(&data),
                OutputFd::Stderr => c.stderr.extend_from_slice(&data),
            }
        }
        if let Some(w) = writer {
            if w.write_all(&data).and_then(|()| w.flush()).is_err() {
                *writer = None;
            }
        }
    }
    c
}

/// How the supervision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// qemu exited and every stream ended.
    Exited,
    Deadline,
    Signal(i32),
}

/// Takes what the readers send until qemu has exited and the streams have
/// ended, the deadline passes, or a signal comes. Never blocks on I/O.
fn supervise(
    vm: &mut Vm,
    streams: &Streams,
    log: &mut BootLog,
    t0: Instant,
    deadline: Instant,
) -> End {
    let mut exited = false;
    let mut streams_ended = false;
    loop {
        if streams_ended {
            std::thread::sleep(TICK);
        } else {
            match streams.rx.recv_timeout(TICK) {
                Ok(msg) => take(msg, log, &streams.outbox),
                Err(RecvTimeoutError::Disconnected) => streams_ended = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        if !exited {
            if let Ok(Some(status)) = vm.child.try_wait() {
                exited = true;
                log.qemu_exit_ns = Some(since(t0));
                log.qemu_status = Some(status);
                streams.stop.store(true, Ordering::Relaxed);
            }
        }
        if !exited {
            // A dead virtio-fs daemon leaves the guest waiting on its
            // share: the run ends now, saying why.
            if let Some(why) = vm.dead_daemon() {
                log.qemu_stderr.push_str(&format!("{why}\n"));
                vm.kill();
            }
        }
        if exited && streams_ended {
            return End::Exited;
        }
        if let Some(sig) = signals::pending() {
            return End::Signal(sig);
        }
        if Instant::now() >= deadline {
            return End::Deadline;
        }
    }
}

/// One message into the log; `poweroff` is answered with the ack.
fn take(msg: Msg, log: &mut BootLog, outbox: &Outbox) {
    match msg {
        Msg::Record(host_ns, item) => {
            if matches!(item.rec, GuestRecord::Poweroff { .. }) {
                outbox.push_ack();
            }
            log.push_event(Stamped { host_ns, item });
        }
        Msg::Bad(why) => log.push_bad(why),
        Msg::Console(host_ns, item, cut) => {
            log.console_truncated += u64::from(cut);
            log.push_console(Stamped { host_ns, item });
        }
        Msg::Stderr(said, markers) => {
            log.qemu_stderr.push_str(&said);
            log.qemu_markers = markers;
        }
    }
}

/// Stops qemu when it is still running, lets the output flush (until the
/// deadline after a normal end, briefly otherwise) and joins what ended.
/// A thread still blocked (on a paused terminal) is left behind, never
/// waited for.
fn end_boot(
    vm: &mut Vm,
    streams: Streams,
    log: &mut BootLog,
    t0: Instant,
    end: End,
    deadline: Instant,
) -> Captured {
    let flush_until = match end {
        End::Exited => deadline,
        End::Deadline => {
            log.timed_out = true;
            Instant::now() + GRACE
        }
        End::Signal(sig) => {
            log.interrupted = Some(sig);
            Instant::now() + GRACE
        }
    };
    if end != End::Exited {
        vm.kill();
        log.qemu_exit_ns = Some(since(t0));
        log.qemu_status = vm.child.try_wait().ok().flatten();
    }
    streams.stop.store(true, Ordering::Relaxed);
    streams.outbox.close();
    drop(streams.rx);
    let captured = join_until(streams.output, flush_until);
    if captured.is_none() {
        log.output_stalled = true;
        log.timed_out |= end == End::Exited;
    }
    let grace = Instant::now() + GRACE;
    for reader in streams.readers {
        join_until(reader, grace);
    }
    captured.unwrap_or_default()
}

/// The thread's result when it ends by `until`; else it is left running.
fn join_until<T>(handle: JoinHandle<T>, until: Instant) -> Option<T> {
    while !handle.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if handle.is_finished() {
        handle.join().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::qemu::Accel;
    use std::path::Path;

    /// A "qemu" that only sleeps: the guest is played by a test thread on
    /// the events socket.
    fn fake_vm(dir: &Path, qemu_lives: &str) -> VmConfig {
        let qemu = dir.join("fake-qemu");
        std::fs::write(&qemu, format!("#!/bin/sh\nexec sleep {qemu_lives}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, b"").unwrap();
        VmConfig {
            qemu,
            kernel,
            initrd: dir.join("initrd"),
            append: std::ffi::OsString::new(),
            accel: Accel::Tcg,
            machine: Machine::default(),
            memory_mb: 64,
            cpus: 1,
            events_socket: dir.join("events.sock"),
            extra_args: vec![],
            interactive: false,
            virtiofsd: None,
            run_dir: dir.to_owned(),
            echo_console: false,
        }
    }

    /// The guest's end of the events port; its writes give up after a
    /// while (the fake qemu's death does not close it, a real one's does).
    fn connect(socket: &Path) -> UnixStream {
        for _ in 0..500 {
            if let Ok(s) = UnixStream::connect(socket) {
                s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no events socket at {}", socket.display());
    }

    fn frame(rec: GuestRecord) -> Vec<u8> {
        let mut out = Vec::new();
        rec.encode(1_000, &mut out);
        out
    }

    /// Runs boot on its own thread; None when it did not return by `limit`.
    fn boot_within(
        config: VmConfig,
        timeout: Duration,
        stdin: Option<StdinSource>,
        sink: Sink,
        limit: Duration,
    ) -> Option<Boot> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(boot(&config, timeout, stdin, sink).unwrap());
        });
        rx.recv_timeout(limit).ok()
    }

    /// A guest that floods the port and never reads, while the host has
    /// stdin and then the ack to write: the writes block, the deadline
    /// does not (before: the ack was written by the thread that enforces
    /// the deadline, behind the blocked stdin writer).
    #[test]
    fn a_guest_that_floods_and_never_reads_cannot_hold_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let config = fake_vm(dir.path(), "600");
        let socket = config.events_socket.clone();
        let guest = std::thread::spawn(move || {
            let mut s = connect(&socket);
            let _ = s.write_all(&frame(GuestRecord::Poweroff {
                status: 0,
                dropped: 0,
            }));
            let flood = frame(GuestRecord::Warn {
                msg: "flood".into(),
            });
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(8) && s.write_all(&flood).is_ok() {}
        });
        let stdin = StdinSource::Data(vec![b'x'; 32 << 20]);
        let t0 = Instant::now();
        let out = boot_within(
            config,
            Duration::from_secs(2),
            Some(stdin),
            Sink::Discard,
            Duration::from_secs(6),
        )
        .expect("the host was held past its deadline");
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        assert!(out.log.timed_out);
        assert!(out.log.events.len() > 1, "the flood was read meanwhile");
        let _ = guest.join();
    }

    /// Our stdout blocks (a paused `| less`): the deadline holds, and the
    /// host stops reading the guest instead of buffering its output (the
    /// guest's writes block after a bounded amount).
    #[test]
    fn a_blocked_terminal_cannot_hold_the_deadline_and_pushes_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = fake_vm(dir.path(), "600");
        let socket = config.events_socket.clone();
        let (pipe_r, pipe_w) = rustix::pipe::pipe().unwrap();
        let sink = Sink::Write {
            stdout: Box::new(std::fs::File::from(pipe_w)),
            stderr: Box::new(std::io::sink()),
        };
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let guest_written = written.clone();
        let guest = std::thread::spawn(move || {
            let mut s = connect(&socket);
            let chunk = frame(GuestRecord::Output {
                fd: OutputFd::Stdout,
                data: vec![b'y'; CHUNK],
            });
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(8) && s.write_all(&chunk).is_ok() {
                guest_written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        let t0 = Instant::now();
        let out = boot_within(
            config,
            Duration::from_secs(2),
            None,
            sink,
            Duration::from_secs(6),
        )
        .expect("a blocked terminal held the host past its deadline");
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        assert!(out.log.timed_out && out.log.output_stalled);
        let held = written.load(Ordering::Relaxed);
        assert!(
            held < 16 << 20,
            "the host took {held} bytes while its stdout was blocked"
        );
        drop(pipe_r);
        let _ = guest.join();
    }

    /// With capture, output comes back whole and once: the log keeps no
    /// output record; the guest gets its ack.
    #[test]
    fn captured_output_is_kept_once_and_poweroff_is_acked() {
        let dir = tempfile::tempdir().unwrap();
        let config = fake_vm(dir.path(), "1");
        let socket = config.events_socket.clone();
        let guest = std::thread::spawn(move || {
            let mut s = connect(&socket);
            for rec in [
                GuestRecord::Output {
                    fd: OutputFd::Stdout,
                    data: b"hello\xff".to_vec(),
                },
                GuestRecord::Output {
                    fd: OutputFd::Stderr,
                    data: b"err".to_vec(),
                },
                GuestRecord::PayloadExit {
                    status: 0,
                    signal: None,
                },
                GuestRecord::Poweroff {
                    status: 0,
                    dropped: 0,
                },
            ] {
                s.write_all(&frame(rec)).unwrap();
            }
            let mut decoder = Decoder::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "no ack");
                decoder.feed(&buf[..n]);
                if let Some(f) = decoder.next_frame() {
                    return HostRecord::decode(f.unwrap()).unwrap();
                }
            }
        });
        let out = boot_within(
            config,
            Duration::from_secs(20),
            None,
            Sink::Capture,
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(guest.join().unwrap(), HostRecord::Ack);
        assert!(!out.log.timed_out);
        assert_eq!(out.stdout, b"hello\xff");
        assert_eq!(out.stderr, b"err");
        assert_eq!(out.log.output_bytes, [6, 3]);
        assert!(
            !out.log
                .records()
                .any(|e| matches!(e.rec, GuestRecord::Output { .. })),
            "output kept twice"
        );
        assert!(!dir.path().join("events.sock").exists());
    }

    #[test]
    fn a_huge_timeout_is_a_century_not_a_panic() {
        let t0 = Instant::now();
        let d = deadline_after(t0, Duration::from_secs_f64(1e19));
        assert!(d > t0 + Duration::from_secs(50 * 365 * 24 * 3600));
        assert_eq!(
            deadline_after(t0, Duration::from_secs(3)),
            t0 + Duration::from_secs(3)
        );
    }

    /// A console that never writes a newline gives lines of at most
    /// MAX_CONSOLE_LINE, flagged as cut; the host's buffer stays bounded.
    #[test]
    fn console_lines_are_bounded() {
        let mut input = b"first\r\n".to_vec();
        input.extend(vec![b'a'; 10 << 20]);
        input.extend(b"\nlast\n");
        let mut lines: Vec<(usize, bool)> = Vec::new();
        let mut first = Vec::new();
        split_lines(&input[..], MAX_CONSOLE_LINE, |l, cut| {
            if first.is_empty() {
                first = l.to_vec();
            }
            lines.push((l.len(), cut));
            true
        });
        assert_eq!(first, b"first\r\n");
        assert_eq!(lines, [(7, false), (MAX_CONSOLE_LINE, true), (5, false)]);
        // A line of exactly the bound, with its newline beyond it.
        let mut exact = vec![b'b'; 10];
        exact.push(b'\n');
        let mut got = Vec::new();
        split_lines(&exact[..], 10, |l, cut| {
            got.push((l.len(), cut));
            true
        });
        assert_eq!(got, [(10, true)]);
    }
}
