//! One boot: qemu started, the events port and the serial console read on
//! their own threads, every record stamped with host monotonic time on
//! arrival, the host's ack written after `poweroff`, a hard timeout.

use crate::qemu::{Vm, VmConfig};
use anyhow::{Context, Result};
use kestrel_proto::wire::{Decoder, CHUNK};
use kestrel_proto::{GuestKind, GuestRecord, HostRecord, RecordError, Timed};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Something that arrived from the guest, with host time since qemu start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped<T> {
    pub host_ns: u64,
    pub item: T,
}

/// Everything a boot produced.
#[derive(Debug, Default)]
pub struct BootLog {
    pub events: Vec<Stamped<Timed<GuestRecord>>>,
    pub console: Vec<Stamped<String>>,
    /// Lines on the events port that were not records.
    pub bad_lines: Vec<String>,
    pub qemu_stderr: String,
    pub qemu_exit_ns: Option<u64>,
    pub qemu_status: Option<std::process::ExitStatus>,
    pub timed_out: bool,
}

impl BootLog {
    /// The records, without the host's arrival times.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Timed<GuestRecord>> {
        self.events.iter().map(|s| &s.item)
    }

    /// The first record of a kind.
    pub fn first(&self, kind: GuestKind) -> Option<&Timed<GuestRecord>> {
        self.records().find(|e| e.rec.kind() == kind)
    }

    /// The last record of a kind.
    pub fn last(&self, kind: GuestKind) -> Option<&Timed<GuestRecord>> {
        self.records().rev().find(|e| e.rec.kind() == kind)
    }

    /// The last boot phase the guest reported reaching.
    pub fn last_phase(&self) -> Option<&Timed<GuestRecord>> {
        self.records().rev().find(|e| e.rec.kind().is_phase())
    }

    /// Writes the log in the text form `kestrel analyze` reads: one line per
    /// arrival, `E <host_ns> <record>` or `C <host_ns> <console line>`. The
    /// payload's output is left out (it is the run's output, not its timing).
    pub fn write_log(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut lines: Vec<(u64, String)> = self
            .events
            .iter()
            .filter(|s| s.item.rec.kind() != GuestKind::Output)
            .map(|s| {
                (
                    s.host_ns,
                    format!("E {} {}", s.host_ns, s.item.rec.to_line(s.item.t_ns)),
                )
            })
            .chain(
                self.console
                    .iter()
                    .map(|s| (s.host_ns, format!("C {} {}", s.host_ns, s.item))),
            )
            .collect();
        if let Some(t) = self.qemu_exit_ns {
            lines.push((t, format!("Q {t} qemu_exit")));
        }
        lines.sort_by_key(|(t, _)| *t);
        for (_, l) in lines {
            writeln!(out, "{l}")?;
        }
        Ok(())
    }

    /// Reads a log written by [`BootLog::write_log`].
    pub fn read_log(text: &str) -> Result<BootLog> {
        let mut log = BootLog::default();
        for (n, line) in text.lines().enumerate() {
            let mut parts = line.splitn(3, ' ');
            let (tag, t, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let host_ns: u64 = t
                .parse()
                .with_context(|| format!("line {}: bad host time {t:?}", n + 1))?;
            match tag {
                "E" => {
                    let item = GuestRecord::parse_line(rest.as_bytes())
                        .with_context(|| format!("line {}: {rest:?}", n + 1))?;
                    log.events.push(Stamped { host_ns, item });
                }
                "C" => log.console.push(Stamped {
                    host_ns,
                    item: rest.to_owned(),
                }),
                "Q" => log.qemu_exit_ns = Some(host_ns),
                _ => anyhow::bail!("line {}: unknown tag {tag:?}", n + 1),
            }
        }
        Ok(log)
    }
}

enum Msg {
    /// A line of the serial console.
    Line(u64, Vec<u8>),
    Record(u64, Result<Timed<GuestRecord>, RecordError>),
    EventsConnected(UnixStream),
    Stderr(String),
}

fn since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn read_lines(stream: impl Read, t0: Instant, tx: mpsc::Sender<Msg>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(Msg::Line(since(t0), line.clone())).is_err() {
                    return;
                }
            }
        }
    }
}

/// Where the payload's stdin comes from.
#[derive(Clone, Debug)]
pub enum StdinSource {
    Data(Vec<u8>),
    /// This process's own stdin, streamed as it arrives.
    Inherit,
}

fn send_record(writer: &Mutex<UnixStream>, rec: &HostRecord) -> std::io::Result<()> {
    let mut frame = Vec::new();
    rec.encode(&mut frame);
    writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .write_all(&frame)
}

/// Reads the events port, decoding frames as they complete.
fn read_records(mut stream: impl Read, t0: Instant, tx: mpsc::Sender<Msg>) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.feed(buf.get(..n).unwrap_or_default());
        while let Some(frame) = decoder.next_frame() {
            let rec = frame
                .map_err(RecordError::from)
                .and_then(GuestRecord::decode);
            if tx.send(Msg::Record(since(t0), rec)).is_err() {
                return;
            }
        }
    }
    if let Some(e) = decoder.finish() {
        let _ = tx.send(Msg::Record(since(t0), Err(e.into())));
    }
}

/// Streams stdin to the guest as `in` records, then `in_eof`.
fn feed_stdin(source: StdinSource, writer: Arc<Mutex<UnixStream>>) {
    let mut reader: Box<dyn Read> = match source {
        StdinSource::Data(d) => Box::new(std::io::Cursor::new(d)),
        StdinSource::Inherit => Box::new(std::io::stdin()),
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                if send_record(&writer, &HostRecord::Input { data }).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = send_record(&writer, &HostRecord::InputEof);
}

/// Boots `config` and collects what arrives until qemu exits or `timeout`
/// passes (then qemu is killed). `on_event` sees each record as it
/// arrives (for streaming output); it runs on this thread.
pub fn boot(
    config: &VmConfig,
    timeout: Duration,
    stdin: Option<StdinSource>,
    on_event: &mut dyn FnMut(&Stamped<Timed<GuestRecord>>),
) -> Result<BootLog> {
    let _ = std::fs::remove_file(&config.events_socket);
    let listener = UnixListener::bind(&config.events_socket)
        .with_context(|| format!("failed to listen on {}", config.events_socket.display()))?;
    listener.set_nonblocking(true)?;
    let t0 = Instant::now();
    let mut vm = Vm::spawn(config)?;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));

    let mut threads = Vec::new();
    if let Some(stdout) = vm.child.stdout.take() {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || read_lines(stdout, t0, tx)));
    }
    if let Some(mut stderr) = vm.child.stderr.take() {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            let _ = tx.send(Msg::Stderr(s));
        }));
    }
    {
        let tx = tx.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    if let Ok(writer) = stream.try_clone() {
                        let _ = tx.send(Msg::EventsConnected(writer));
                    }
                    read_records(stream, t0, tx);
                    return;
                }
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }));
    }
    drop(tx);

    let mut log = BootLog::default();
    let mut events_writer: Option<Arc<Mutex<UnixStream>>> = None;
    let mut stdin = stdin;
    let deadline = t0 + timeout;
    let mut exited = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Msg::Record(host_ns, Ok(item))) => {
                let stamped = Stamped { host_ns, item };
                if stamped.item.rec.kind() == GuestKind::Poweroff {
                    if let Some(w) = events_writer.as_ref() {
                        let _ = send_record(w, &HostRecord::Ack);
                    }
                }
                on_event(&stamped);
                log.events.push(stamped);
            }
            Ok(Msg::Record(_, Err(e))) => log.bad_lines.push(e.to_string()),
            Ok(Msg::Line(host_ns, line)) => {
                // The init's records reach the console when there is no
                // events port: parse them there too.
                match GuestRecord::parse_line(&line) {
                    Ok(item) => {
                        let stamped = Stamped { host_ns, item };
                        on_event(&stamped);
                        log.events.push(stamped);
                    }
                    Err(_) => log.console.push(Stamped {
                        host_ns,
                        item: String::from_utf8_lossy(&line)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned(),
                    }),
                }
            }
            Ok(Msg::EventsConnected(w)) => {
                let w = Arc::new(Mutex::new(w));
                if let Some(source) = stdin.take() {
                    let w = w.clone();
                    // Detached: a blocked read of our stdin must not hold up the end of the boot.
                    std::thread::spawn(move || feed_stdin(source, w));
                }
                events_writer = Some(w);
            }
            Ok(Msg::Stderr(s)) => log.qemu_stderr = s,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !exited {
            if let Ok(Some(status)) = vm.child.try_wait() {
                exited = true;
                log.qemu_exit_ns = Some(since(t0));
                log.qemu_status = Some(status);
                stop.store(true, Ordering::Relaxed);
            } else if Instant::now() >= deadline {
                log.timed_out = true;
                vm.kill();
                exited = true;
                log.qemu_exit_ns = Some(since(t0));
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    if !exited {
        // Every stream ended first: qemu is exiting; reap it.
        log.qemu_status = vm.child.wait().ok();
        log.qemu_exit_ns = Some(since(t0));
        stop.store(true, Ordering::Relaxed);
    }
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&config.events_socket);
    Ok(log)
}
