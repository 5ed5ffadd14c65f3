//! Phase 7, run mode: the payload runs as a child of PID 1 with the argv,
//! environment and working directory baked into the initrd.
//!
//! With the events port, its stdout and stderr are pipes whose bytes go
//! out as `out` records, exact, in one ordered stream with everything
//! else; its stdin is fed from the host's `in` records. The pipes are read
//! only while the record buffer has room, so a slow host slows the
//! payload instead of losing output. Without a port (plain qemu), the
//! payload simply has the console. The event loop (eventloop.rs) serves
//! the pipes; this file starts the child and holds its plumbing.

use crate::{log, sys};
use kestrel_proto::config::Payload;
use kestrel_proto::wire::CHUNK;
use kestrel_proto::{GuestRecord, OutputFd};
use rustix::process::{Pid, WaitStatus};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Default environment when the host passes none.
const DEFAULT_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/",
    "TERM=linux",
];
/// Bound of stdin bytes held for a payload that is not reading: the host's
/// records are not read while this much waits (backpressure to the host).
pub const STDIN_PENDING_MAX: usize = 1 << 20;
/// Chunks read from the pipes after the payload was reaped: what it wrote
/// before exiting is in the pipe (at most its capacity), and a background
/// writer that outlives it must not delay the exit report.
pub const DRAIN_AFTER_EXIT: usize = 16;

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
            PayloadError::Spawn { source, .. } if source.kind() == ErrorKind::NotFound => 127,
            PayloadError::Spawn { .. } => 126,
            PayloadError::EmptyArgv => 1,
        }
    }
}

/// One of the payload's output pipes.
pub struct OutPipe {
    file: File,
    pub fd: OutputFd,
    pub open: bool,
}

impl OutPipe {
    fn new(file: OwnedFd, fd: OutputFd) -> OutPipe {
        let _ = rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::NONBLOCK);
        OutPipe {
            file: File::from(file),
            fd,
            open: true,
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Forwards one chunk if one is there; false when nothing was (empty
    /// now, or closed).
    pub fn forward_one(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match self.file.read(buf) {
                Ok(0) => {
                    self.open = false;
                    return false;
                }
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default().to_vec();
                    log::emit(GuestRecord::Output { fd: self.fd, data });
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.open = false;
                    return false;
                }
            }
        }
    }
}

/// The payload's stdin pipe, fed from the host without ever blocking PID 1.
pub struct StdinFeeder {
    pipe: File,
    pub pending: Vec<u8>,
    pub eof: bool,
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

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    pub fn has_room(&self) -> bool {
        self.pending.len() < STDIN_PENDING_MAX
    }

    /// Writes what the pipe takes; true when done (EOF reached and all
    /// written, or the payload closed its stdin).
    pub fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match self.pipe.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EPIPE: the payload closed stdin; drop the rest.
                Err(_) => return true,
            }
        }
        self.eof
    }
}

/// The payload while it runs.
pub struct Running {
    pub pid: Pid,
    pub pipes: Vec<OutPipe>,
    pub stdin: Option<StdinFeeder>,
    pub status: Option<WaitStatus>,
    /// Chunks read since the payload was reaped.
    pub drained: usize,
    /// The last pass found every pipe empty or closed.
    pub quiet: bool,
}

impl Running {
    /// Reaped, and what it wrote before exiting is forwarded.
    pub fn finished(&self) -> bool {
        self.status.is_some() && (self.quiet || self.drained >= DRAIN_AFTER_EXIT)
    }

    /// One chunk from each pipe that has one, if the record buffer has
    /// room (the loop calls this when a pipe is readable).
    pub fn forward_output(&mut self) {
        let mut buf = vec![0u8; CHUNK];
        let mut any = false;
        for pipe in self.pipes.iter_mut().filter(|p| p.open) {
            if !log::output_room() {
                return;
            }
            any |= pipe.forward_one(&mut buf);
        }
        self.quiet = !any;
        if any && self.status.is_some() {
            self.drained += 1;
        }
    }
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

/// Starts the payload. `port`: the events port is there (pipes and
/// records); else it gets the console (or /dev/null for stdin).
pub fn start(spec: &Payload, port: bool) -> Result<Running, PayloadError> {
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
        cmd.process_group(0);
        sys::unblock_in_child(&mut cmd);
        let stdin = if spec.stdin && port {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(stdin);
        if port {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
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
    let program = String::from_utf8_lossy(program).into_owned();
    let mut child = cmd.spawn().map_err(|source| PayloadError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    log::emit(GuestRecord::PayloadStart { pid, program });
    let mut pipes = Vec::new();
    if let Some(out) = child.stdout.take() {
        pipes.push(OutPipe::new(out.into(), OutputFd::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        pipes.push(OutPipe::new(err.into(), OutputFd::Stderr));
    }
    let stdin = child
        .stdin
        .take()
        .map(|s| StdinFeeder::new(OwnedFd::from(s)));
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or(Pid::INIT);
    // The child is reaped by the event loop (PID 1 reaps everything):
    // std's handle must not wait for it.
    drop(child);
    Ok(Running {
        pid,
        pipes,
        stdin,
        status: None,
        drained: 0,
        quiet: false,
    })
}
