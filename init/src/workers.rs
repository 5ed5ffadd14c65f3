//! Module loads run in worker processes forked from PID 1: each takes a
//! module from the queue, calls finit_module, and reports back through a
//! pipe the event loop polls. Processes, not threads: PID 1 stays single
//! threaded (no locks, a fork for the payload is plain), and it carries
//! no thread runtime (pthread_create drags ~40 KB of resolver code into a
//! static glibc binary; the init's size is a target). Workers are forked
//! when modules wait and there is a free slot; they end when the pool is
//! stopped (their request pipe closes), so a running payload does not see
//! them.
//!
//! The queue (which module may start, who is skipped when one fails) is
//! kestrel-modules' pure [`Queue`]; this file only moves its work to the
//! workers and their answers back.

use crate::sys;
use kestrel_modules::loader::{
    boottime, Inserter, KernelInserter, LoadError, LoadEvent, Loaded, Queue,
};
use kestrel_modules::{Compression, Plan, PlanEntry};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// The answer of a worker: kind, errno, start and end (CLOCK_BOOTTIME ns).
const ANSWER_LEN: usize = 1 + 4 + 8 + 8;

/// What a load came to, as one byte on the pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Answer {
    Inserted = 0,
    AlreadyLoaded = 1,
    OpenFailed = 2,
    InsertFailed = 3,
    Compressed = 4,
    BadOptions = 5,
}

struct Worker {
    requests: File,
    answers: File,
    /// The module it is loading: its place in the queue and its entry.
    job: Option<(usize, PlanEntry)>,
}

/// The loader of PID 1: the queue and its workers.
pub struct Workers {
    queue: Queue,
    pool: Vec<Worker>,
    max: usize,
    /// What loads a module (in a worker's copy of this process).
    inserter: Box<dyn Inserter>,
    /// What the kernel decompresses (to name a refused module's format).
    kernel_compression: Option<Compression>,
    /// Workers are processes; off, modules load in PID 1 itself (tests,
    /// and the fallback when fork fails).
    forking: bool,
}

impl Workers {
    pub fn new(max: usize, inserter: KernelInserter) -> Workers {
        Workers {
            queue: Queue::default(),
            pool: Vec::new(),
            max: max.max(1),
            kernel_compression: inserter.kernel_compression,
            inserter: Box::new(inserter),
            forking: true,
        }
    }

    /// Loads in this process with `inserter`: the queue's logic without
    /// worker processes (unit tests of what devices ask for).
    #[cfg(test)]
    pub fn inline(inserter: impl Inserter + 'static) -> Workers {
        Workers {
            queue: Queue::default(),
            pool: Vec::new(),
            max: 1,
            kernel_compression: None,
            inserter: Box::new(inserter),
            forking: false,
        }
    }

    /// Queues a plan's modules (those not known yet) and starts what can
    /// start; a lower `priority` starts first (see `Queue::submit_at`).
    pub fn submit(&mut self, plan: &Plan, priority: u8) {
        self.queue.submit_at(plan, priority);
        self.dispatch();
    }

    /// Hands ready modules to idle workers, forking new ones up to `max`.
    fn dispatch(&mut self) {
        loop {
            let idle = self.pool.iter().position(|w| w.job.is_none());
            if idle.is_none() && self.pool.len() >= self.max {
                return;
            }
            let Some((slot, entry)) = self.queue.start_next() else {
                return;
            };
            let forked = match idle {
                Some(i) => Some(i),
                None if self.forking => spawn_worker(&*self.inserter).ok().map(|w| {
                    self.pool.push(w);
                    self.pool.len() - 1
                }),
                None => None,
            };
            // No process to spare: load it here, blocking (it works, only
            // without parallelism).
            let Some(worker) = forked else {
                let start = boottime();
                let outcome = self.inserter.insert(&entry);
                self.queue.complete(slot, start, boottime(), 0, outcome);
                continue;
            };
            let Some(w) = self.pool.get_mut(worker) else {
                return;
            };
            if w.requests.write_all(&encode_request(&entry)).is_ok() {
                w.job = Some((slot, entry));
            } else {
                // The worker is gone: retire it, the module waits for another.
                let now = boottime();
                let err = LoadError::Insert {
                    module: entry.name.clone(),
                    path: entry.path.clone(),
                    source: std::io::Error::from(ErrorKind::BrokenPipe),
                };
                self.queue.complete(slot, now, now, worker, Err(err));
                self.pool.remove(worker);
            }
        }
    }

    /// The pipes to poll: busy workers' answers.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.pool
            .iter()
            .filter(|w| w.job.is_some())
            .map(|w| w.answers.as_fd())
    }

    /// Takes the answers that arrived, starts what they release, and
    /// returns every finished (or skipped) module since the last call.
    pub fn collect(&mut self) -> Vec<LoadEvent> {
        for (thread, w) in self.pool.iter_mut().enumerate() {
            let Some((slot, entry)) = w.job.as_ref() else {
                continue;
            };
            let mut answer = [0u8; ANSWER_LEN];
            match w.answers.read(&mut answer) {
                Ok(ANSWER_LEN) => {
                    let (start, end, outcome) =
                        decode_answer(&answer, entry, self.kernel_compression);
                    self.queue.complete(*slot, start, end, thread, outcome);
                    w.job = None;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // EOF or a short answer: the worker died mid-load.
                _ => {
                    let now = boottime();
                    let err = LoadError::Insert {
                        module: entry.name.clone(),
                        path: entry.path.clone(),
                        source: std::io::Error::other("the loader process died"),
                    };
                    self.queue.complete(*slot, now, now, thread, Err(err));
                    w.job = None;
                }
            }
        }
        self.dispatch();
        self.queue.take_finished()
    }

    /// Nothing runs or waits to run.
    pub fn is_idle(&self) -> bool {
        self.queue.is_idle()
    }

    /// Ends the idle workers (their request pipe closes, they exit); a
    /// later module forks new ones.
    pub fn stop_idle(&mut self) {
        self.pool.retain(|w| w.job.is_some());
    }

    /// Workers alive.
    #[cfg(test)]
    pub fn workers(&self) -> usize {
        self.pool.len()
    }
}

fn encode_request(entry: &PlanEntry) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for field in [
        entry.name.as_bytes(),
        entry.path.as_os_str().as_bytes(),
        entry.options.as_bytes(),
    ] {
        out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn decode_answer(
    a: &[u8; ANSWER_LEN],
    entry: &PlanEntry,
    kernel_compression: Option<Compression>,
) -> (Duration, Duration, Result<Loaded, LoadError>) {
    let [kind, e0, e1, e2, e3, rest @ ..] = *a;
    let errno = i32::from_le_bytes([e0, e1, e2, e3]);
    let (start, end) = rest.split_at(8);
    let ns = |b: &[u8]| Duration::from_nanos(u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let (module, path) = (entry.name.clone(), entry.path.clone());
    let os = || std::io::Error::from_raw_os_error(errno);
    let outcome = match kind {
        k if k == Answer::Inserted as u8 => Ok(Loaded::Inserted),
        k if k == Answer::AlreadyLoaded as u8 => Ok(Loaded::AlreadyLoaded),
        k if k == Answer::OpenFailed as u8 => Err(LoadError::Open {
            module,
            path,
            source: os(),
        }),
        k if k == Answer::Compressed as u8 => Err(LoadError::CompressionUnsupported {
            compression: Compression::from_path(&path).unwrap_or(Compression::Xz),
            module,
            path,
            kernel: kernel_compression,
        }),
        k if k == Answer::BadOptions as u8 => Err(LoadError::BadOptions { module }),
        _ => Err(LoadError::Insert {
            module,
            path,
            source: os(),
        }),
    };
    (ns(start), ns(end), outcome)
}

/// Forks a worker: it reads requests until its pipe closes, loads each
/// module and answers. It never returns into PID 1's code.
fn spawn_worker(inserter: &dyn Inserter) -> std::io::Result<Worker> {
    use rustix::pipe::{pipe_with, PipeFlags};
    let (req_read, req_write) = pipe_with(PipeFlags::CLOEXEC)?;
    let (ans_read, ans_write) = pipe_with(PipeFlags::CLOEXEC)?;
    match sys::fork()? {
        None => {
            drop((req_write, ans_read));
            serve(req_read, ans_write, inserter);
            sys::exit_now(0)
        }
        // The worker is reaped with every other child by PID 1's loop.
        Some(_) => {
            drop((req_read, ans_write));
            let _ = rustix::fs::fcntl_setfl(&ans_read, rustix::fs::OFlags::NONBLOCK);
            Ok(Worker {
                requests: File::from(req_write),
                answers: File::from(ans_read),
                job: None,
            })
        }
    }
}

/// The worker's loop (in the child).
fn serve(requests: OwnedFd, answers: OwnedFd, inserter: &dyn Inserter) {
    let _ = sys::unblock_signals();
    let (mut requests, mut answers) = (File::from(requests), File::from(answers));
    while let Some(entry) = read_request(&mut requests) {
        let start = boottime();
        let outcome = inserter.insert(&entry);
        let end = boottime();
        let (kind, errno) = match &outcome {
            Ok(Loaded::Inserted) => (Answer::Inserted, 0),
            Ok(Loaded::AlreadyLoaded) => (Answer::AlreadyLoaded, 0),
            Err(e @ LoadError::Open { .. }) => (Answer::OpenFailed, e.raw_os_error().unwrap_or(0)),
            Err(LoadError::CompressionUnsupported { .. }) => (Answer::Compressed, 0),
            Err(LoadError::BadOptions { .. }) => (Answer::BadOptions, 0),
            Err(e) => (Answer::InsertFailed, e.raw_os_error().unwrap_or(libc::EIO)),
        };
        let mut answer = Vec::with_capacity(ANSWER_LEN);
        answer.push(kind as u8);
        answer.extend_from_slice(&errno.to_le_bytes());
        for t in [start, end] {
            answer.extend_from_slice(
                &u64::try_from(t.as_nanos())
                    .unwrap_or(u64::MAX)
                    .to_le_bytes(),
            );
        }
        if answers.write_all(&answer).is_err() {
            return;
        }
    }
}

fn read_request(r: &mut File) -> Option<PlanEntry> {
    let mut field = || -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).ok()?;
        let mut data = vec![0u8; usize::try_from(u32::from_le_bytes(len)).ok()?];
        r.read_exact(&mut data).ok()?;
        Some(data)
    };
    use std::os::unix::ffi::OsStringExt;
    let name = String::from_utf8(field()?).ok()?;
    let path = PathBuf::from(std::ffi::OsString::from_vec(field()?));
    let options = String::from_utf8(field()?).ok()?;
    Some(PlanEntry {
        name,
        path,
        deps: Vec::new(),
        soft_deps: Vec::new(),
        options,
        reason: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let entry = PlanEntry {
            name: "virtio_blk".into(),
            path: PathBuf::from("/lib/modules/x/virtio_blk.ko"),
            deps: vec![],
            soft_deps: vec![],
            options: "queue_depth=4".into(),
            reason: String::new(),
        };
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(&encode_request(&entry)).unwrap();
        drop(w);
        let mut r = File::from(OwnedFd::from(r));
        let got = read_request(&mut r).unwrap();
        assert_eq!(
            (got.name, got.path, got.options),
            (
                entry.name.clone(),
                entry.path.clone(),
                entry.options.clone()
            )
        );
        assert!(read_request(&mut r).is_none(), "EOF ends the worker");
        let mut a = [0u8; ANSWER_LEN];
        a[0] = Answer::InsertFailed as u8;
        a[1..5].copy_from_slice(&libc::ENOEXEC.to_le_bytes());
        a[5..13].copy_from_slice(&5u64.to_le_bytes());
        a[13..21].copy_from_slice(&9u64.to_le_bytes());
        let (start, end, outcome) = decode_answer(&a, &entry, None);
        assert_eq!(
            (start, end),
            (Duration::from_nanos(5), Duration::from_nanos(9))
        );
        let e = outcome.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOEXEC));
        assert!(
            e.to_string()
                .starts_with("failed to insert module virtio_blk"),
            "{e}"
        );
    }

    /// Real worker processes against a module that does not exist: the
    /// open fails in the worker, the error comes back, the queue moves on
    /// and the user of the failed module is skipped.
    #[test]
    fn workers_report_back_through_their_pipes() {
        let entry = |name: &str, deps: &[usize]| PlanEntry {
            name: name.into(),
            path: PathBuf::from(format!("/nonexistent/{name}.ko")),
            deps: deps.to_vec(),
            soft_deps: vec![],
            options: String::new(),
            reason: String::new(),
        };
        let mut w = Workers::new(
            2,
            KernelInserter {
                kernel_compression: None,
            },
        );
        w.submit(
            &Plan {
                modules: vec![entry("a", &[]), entry("b", &[0]), entry("c", &[])],
                notes: vec![],
            },
            0,
        );
        let mut events = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !w.is_idle() || events.len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "workers never answered"
            );
            std::thread::sleep(Duration::from_millis(5));
            events.extend(w.collect());
        }
        let mut got: Vec<(String, Option<i32>)> = events
            .iter()
            .map(|e| {
                (
                    e.entry.name.clone(),
                    e.outcome.as_ref().err().and_then(LoadError::raw_os_error),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".into(), Some(libc::ENOENT)),
                ("b".into(), None),
                ("c".into(), Some(libc::ENOENT))
            ]
        );
        assert!(w.workers() <= 2);
        w.stop_idle();
        assert_eq!(w.workers(), 0);
    }
}
