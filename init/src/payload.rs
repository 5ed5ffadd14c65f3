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
use std::ffi::CString;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    fn forward_one(&mut self, buf: &mut [u8]) -> bool {
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
    pub(crate) fn new(fd: OwnedFd) -> StdinFeeder {
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

/// What to exec: the program the host resolved, else argv[0] looked up
/// on the payload's PATH (the default one when it has none), inside the
/// payload's root.
fn resolve_program(spec: &Payload, env: &[&[u8]], root: &Path) -> Vec<u8> {
    let Some(arg0) = spec.argv.first() else {
        return Vec::new();
    };
    let program = spec.exe.clone().unwrap_or_else(|| arg0.clone());
    if program.contains(&b'/') {
        return program;
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix(b"PATH="))
        .unwrap_or_default();
    path.split(|&b| b == b':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| [dir, b"/", &program].concat())
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(
                root.join(
                    Path::new(OsStr::from_bytes(candidate))
                        .strip_prefix("/")
                        .unwrap_or(Path::new(OsStr::from_bytes(candidate))),
                ),
            )
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or(program)
}

fn c_string(bytes: &[u8], program: &str) -> Result<CString, PayloadError> {
    CString::new(bytes).map_err(|_| PayloadError::Spawn {
        program: program.to_owned(),
        source: std::io::Error::from(ErrorKind::InvalidInput),
    })
}

/// Starts the payload. `port`: the events port is there (pipes and
/// records); else it gets the console (or /dev/null for stdin). `root`:
/// its own root (the host's, under an overlay), else the initramfs.
pub fn start(spec: &Payload, port: bool, root: Option<&Path>) -> Result<Running, PayloadError> {
    if spec.argv.is_empty() {
        return Err(PayloadError::EmptyArgv);
    }
    let env: Vec<&[u8]> = if spec.env.is_empty() {
        DEFAULT_ENV.iter().map(|e| e.as_bytes()).collect()
    } else {
        spec.env.iter().map(Vec::as_slice).collect()
    };
    let program = resolve_program(spec, &env, root.unwrap_or(Path::new("/")));
    let chroot = root
        .map(|r| c_string(r.as_os_str().as_bytes(), "the payload's root"))
        .transpose()?;
    let name = String::from_utf8_lossy(&program).into_owned();
    let spawn_err = |source: std::io::Error| PayloadError::Spawn {
        program: name.clone(),
        source,
    };
    let argv = spec
        .argv
        .iter()
        .map(|a| c_string(a, &name))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| c_string(e, &name))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = spec
        .cwd
        .as_deref()
        .map(|c| c_string(c, &name))
        .transpose()?;
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| spawn_err(e.into()))
    };
    // Without a port the payload has the console; with one, pipes whose
    // bytes become records. stdin comes from the host only when asked.
    let (out, err) = if port && !spec.console {
        (Some(pipe()?), Some(pipe()?))
    } else {
        (None, None)
    };
    let stdin_pipe = if port && spec.stdin && !spec.console {
        Some(pipe()?)
    } else {
        None
    };
    let null = if spec.console || stdin_pipe.is_some() {
        None
    } else {
        Some(std::fs::File::open("/dev/null").map_err(spawn_err)?)
    };
    let stdin_fd = stdin_pipe
        .as_ref()
        .map(|(r, _)| r.as_fd())
        .or(null.as_ref().map(|f| f.as_fd()));
    let pid = sys::spawn(&sys::Spawn {
        program: &c_string(&program, &name)?,
        argv: &argv,
        envp: &envp,
        root: chroot.as_deref(),
        cwd: cwd.as_deref(),
        user: spec.user.as_ref().map(|u| sys::Credentials {
            uid: u.uid,
            gid: u.gid,
            groups: &u.groups,
        }),
        stdio: [
            stdin_fd,
            out.as_ref().map(|(_, w)| w.as_fd()),
            err.as_ref().map(|(_, w)| w.as_fd()),
        ],
        session: if spec.console {
            sys::Session::Console
        } else {
            sys::Session::Group
        },
    })
    .map_err(spawn_err)?;
    log::emit(GuestRecord::PayloadStart {
        pid: pid.as_raw_nonzero().get().unsigned_abs(),
        program: name,
    });
    // The child's ends close here: EOF on a pipe means the payload (and
    // every child it gave the pipe to) closed it.
    let pipes = [
        out.map(|(r, _)| OutPipe::new(r, OutputFd::Stdout)),
        err.map(|(r, _)| OutPipe::new(r, OutputFd::Stderr)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let stdin = stdin_pipe.map(|(_, w)| StdinFeeder::new(w));
    Ok(Running {
        pid,
        pipes,
        stdin,
        status: None,
        drained: 0,
        quiet: false,
    })
}
