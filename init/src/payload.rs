//! Phase 7, run mode: the payload runs as a child of PID 1 with the argv,
//! environment and working directory baked into the initrd. Its stdout
//! and stderr are pipes that the init forwards as `out` records, so output
//! and events share one ordered, timestamped stream to the host. While it
//! runs, PID 1 reaps every zombie (orphans are re-parented to it) and
//! forwards SIGTERM/SIGINT to it.

use crate::devices::Devices;
use crate::hostin::HostInput;
use crate::kmsg::Kmsg;
use crate::{log, sys};
use kestrel_proto::config::Payload;
use kestrel_proto::wire::CHUNK;
use kestrel_proto::{GuestRecord, HostRecord, OutputFd};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{wait, Pid, WaitOptions, WaitStatus};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// After the payload exits, how long output still held open by its
/// leftover children is waited for.
const OUTPUT_LINGER: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the baked payload has no argv")]
    EmptyArgv,
    #[error("failed to start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

impl PayloadError {
    /// The exit status the host reports, following the shell: 127 for a
    /// program not found, 126 for one that cannot run.
    pub fn status(&self) -> i32 {
        match self {
            PayloadError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                127
            }
            PayloadError::Spawn { .. } => 126,
            PayloadError::EmptyArgv => 1,
        }
    }
}

/// Default environment when the host passes none.
const DEFAULT_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/",
    "TERM=linux",
];

struct Pipe {
    file: File,
    fd: OutputFd,
    open: bool,
}

impl Pipe {
    fn new(file: OwnedFd, fd: OutputFd) -> Pipe {
        let _ = rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::NONBLOCK);
        Pipe {
            file: File::from(file),
            fd,
            open: true,
        }
    }

    /// Forwards what is readable now; marks the pipe closed at EOF.
    fn forward(&mut self) {
        let mut buf = vec![0u8; CHUNK];
        while self.open {
            match self.file.read(&mut buf) {
                Ok(0) => self.open = false,
                Ok(n) => log::emit(GuestRecord::Output {
                    fd: self.fd,
                    data: buf.get(..n).unwrap_or_default().to_vec(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.open = false,
            }
        }
    }
}

/// Bound of stdin bytes held for a payload that is not reading.
const STDIN_PENDING_MAX: usize = 1 << 20;

/// The payload's stdin pipe, fed from the host without ever blocking PID 1.
struct StdinFeeder {
    pipe: File,
    pending: Vec<u8>,
    eof: bool,
}

impl StdinFeeder {
    fn new(fd: OwnedFd) -> StdinFeeder {
        let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK);
        StdinFeeder {
            pipe: File::from(fd),
            pending: Vec::new(),
            eof: false,
        }
    }

    /// Writes what the pipe takes; true when done (EOF reached and all
    /// written, or the payload closed its stdin).
    fn flush(&mut self) -> bool {
        use std::io::Write;
        while !self.pending.is_empty() {
            match self.pipe.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EPIPE: the payload closed stdin; drop the rest.
                Err(_) => return true,
            }
        }
        self.eof
    }
}

fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
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

/// The status the host reports for a wait status: the exit code, or
/// 128+N for a payload killed by signal N.
pub fn exit_code(status: WaitStatus) -> (i32, Option<i32>) {
    if let Some(code) = status.exit_status() {
        (code, None)
    } else if let Some(sig) = status.terminating_signal() {
        (128 + sig, Some(sig))
    } else {
        (1, None)
    }
}

/// Starts the payload and serves it until it exits; returns its status.
pub fn run(
    spec: &Payload,
    signals: &OwnedFd,
    kmsg: &mut Option<Kmsg>,
    devices: &mut Devices,
) -> Result<i32, PayloadError> {
    let (arg0, args) = spec.argv.split_first().ok_or(PayloadError::EmptyArgv)?;
    let program = spec.exe.as_deref().unwrap_or(arg0);
    let mut cmd = Command::new(OsStr::from_bytes(program));
    cmd.arg0(OsStr::from_bytes(arg0))
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear();
    if spec.console {
        sys::console_session(&mut cmd);
    } else {
        // Its own process group, so signals to the group spare PID 1.
        let stdin = if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        sys::unblock_in_child(&mut cmd);
    }
    let env: Vec<&[u8]> = if spec.env.is_empty() {
        DEFAULT_ENV.iter().map(|e| e.as_bytes()).collect()
    } else {
        spec.env.iter().map(Vec::as_slice).collect()
    };
    for kv in env {
        let mut parts = kv.splitn(2, |&b| b == b'=');
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        cmd.env(OsStr::from_bytes(key), OsStr::from_bytes(value));
    }
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(OsStr::from_bytes(cwd));
    }
    let mut child = cmd.spawn().map_err(|source| PayloadError::Spawn {
        program: String::from_utf8_lossy(program).into_owned(),
        source,
    })?;
    let pid = child.id();
    log::emit(GuestRecord::PayloadStart {
        pid,
        program: String::from_utf8_lossy(program).into_owned(),
    });

    let mut pipes: Vec<Pipe> = Vec::new();
    if let Some(out) = child.stdout.take() {
        pipes.push(Pipe::new(out.into(), OutputFd::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        pipes.push(Pipe::new(err.into(), OutputFd::Stderr));
    }
    let mut feeder = child
        .stdin
        .take()
        .map(|s| StdinFeeder::new(OwnedFd::from(s)));
    let mut host = if feeder.is_some() {
        HostInput::open()
    } else {
        None
    };
    if host.is_none() {
        // No events port to read stdin from: the payload gets EOF at once.
        feeder = None;
    }
    let payload = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let mut status: Option<WaitStatus> = None;
    let mut exited_at: Option<Instant> = None;

    loop {
        let linger_left = exited_at.map(|t| OUTPUT_LINGER.saturating_sub(t.elapsed()));
        if pipes.iter().all(|p| !p.open) && status.is_some() || linger_left == Some(Duration::ZERO)
        {
            break;
        }
        {
            let mut fds: Vec<PollFd> = pipes
                .iter()
                .filter(|p| p.open)
                .map(|p| PollFd::new(&p.file, PollFlags::IN))
                .collect();
            fds.push(PollFd::new(signals, PollFlags::IN));
            if let Some(k) = kmsg.as_ref() {
                fds.push(PollFd::from_borrowed_fd(k.fd(), PollFlags::IN));
            }
            if let Some(fd) = devices.socket_fd() {
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
            // Backpressure: read more stdin from the host only when the
            // pending bytes fit; wait for the pipe to drain otherwise.
            if let (Some(h), Some(f)) = (host.as_ref(), feeder.as_ref()) {
                if f.pending.len() < STDIN_PENDING_MAX && !h.eof {
                    fds.push(PollFd::from_borrowed_fd(h.fd(), PollFlags::IN));
                }
                if !f.pending.is_empty() {
                    fds.push(PollFd::new(&f.pipe, PollFlags::OUT));
                }
            }
            let timeout = linger_left.and_then(|d| rustix::time::Timespec::try_from(d).ok());
            let _ = poll(&mut fds, timeout.as_ref());
        }
        for pipe in pipes.iter_mut() {
            pipe.forward();
        }
        if let (Some(h), Some(f)) = (host.as_mut(), feeder.as_mut()) {
            if f.pending.len() < STDIN_PENDING_MAX && !h.eof && readable(h.fd()) {
                for rec in h.read_records() {
                    match rec {
                        HostRecord::Input { data } => f.pending.extend_from_slice(&data),
                        HostRecord::InputEof => f.eof = true,
                        HostRecord::Ack => {}
                    }
                }
            }
            if h.eof {
                f.eof = true;
            }
        }
        if let Some(f) = feeder.as_mut() {
            if f.flush() {
                // All of stdin delivered (or the payload closed it): EOF.
                feeder = None;
            }
        }
        while let Some(sig) = sys::read_signal(signals) {
            if sig == libc::SIGTERM || sig == libc::SIGINT {
                if let (Some(pgid), Some(sig)) =
                    (payload, rustix::process::Signal::from_named_raw(sig))
                {
                    let _ = rustix::process::kill_process_group(pgid, sig);
                }
            }
        }
        // Reap everything: the payload and any orphan re-parented to PID 1.
        while let Ok(Some((reaped, st))) = wait(WaitOptions::NOHANG) {
            if Some(reaped) == payload {
                status = Some(st);
                exited_at = Some(Instant::now());
            }
        }
        if let Some(k) = kmsg.as_mut() {
            k.forward();
        }
        devices.handle_events();
    }
    drop(child);
    let (code, signal) = status.map_or((1, None), exit_code);
    log::emit(GuestRecord::PayloadExit {
        status: code,
        signal,
    });
    Ok(code)
}
