//! The loader: inserts a [`Plan`] with `finit_module(2)` on a small pool of
//! threads. A module starts the moment all its dependencies are live;
//! EEXIST counts as loaded; a failure is reported with its errno and the
//! modules that need it are skipped; everything else goes on. Every load is
//! timed with CLOCK_BOOTTIME.
//!
//! The syscalls go through the [`Inserter`] trait: [`KernelInserter`] is the
//! real one, tests use a recording fake. No `unsafe`: rustix wraps
//! finit_module and clock_gettime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::compression::{Compression, SYS_MODULE_COMPRESSION};
use crate::plan::{Plan, PlanEntry};

/// finit_module flag: the file is compressed, the kernel decompresses it.
pub const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// Upper bound on loader threads (named bound; the useful number is small).
pub const MAX_LOADER_THREADS: usize = 64;

/// One finished (or skipped) module.
#[derive(Debug)]
pub struct LoadEvent {
    /// The plan entry.
    pub entry: PlanEntry,
    /// CLOCK_BOOTTIME when the load started.
    pub start: Duration,
    /// How long finit_module (with open) took; zero when skipped.
    pub duration: Duration,
    /// Which worker thread (0-based) handled it.
    pub thread: usize,
    /// What happened.
    pub outcome: Result<Loaded, LoadError>,
}

/// A successful load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The kernel inserted it.
    Inserted,
    /// It was already there (EEXIST).
    AlreadyLoaded,
}

/// Why one module did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module file could not be opened (e.g. missing .ko).
    #[error("failed to open module {module} at {path}: {source}")]
    Open {
        /// Module name.
        module: String,
        /// Its file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// finit_module failed; the errno is in `source`.
    #[error("failed to insert module {module} from {path}: {source}")]
    Insert {
        /// Module name.
        module: String,
        /// Its file.
        path: PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// The file is compressed in a format the running kernel cannot
    /// decompress (see `decompress_needed`; the initrd builder decompresses
    /// such modules at build time).
    #[error(
        "failed to insert module {module} from {path}: it is {compression}-compressed and the kernel {}",
        match kernel { Some(k) => format!("only decompresses {k}"), None => "cannot decompress modules".to_owned() }
    )]
    CompressionUnsupported {
        /// Module name.
        module: String,
        /// Its file.
        path: PathBuf,
        /// The file's format.
        compression: Compression,
        /// What the kernel supports.
        kernel: Option<Compression>,
    },
    /// The options contain a NUL byte.
    #[error("failed to insert module {module}: its options contain a NUL byte")]
    BadOptions {
        /// Module name.
        module: String,
    },
    /// The file is not a module in the format its name says (checked by
    /// [`CheckOnlyInserter`]; the real loader leaves this to the kernel).
    #[error("failed to check module {module} at {path}: {reason}")]
    BadFile {
        /// Module name.
        module: String,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Skipped because a module it needs failed.
    #[error("skipped module {module}: its dependency {dependency} failed to load")]
    DependencyFailed {
        /// Module name.
        module: String,
        /// The dependency that failed (the root cause).
        dependency: String,
    },
    /// The plan is malformed for this entry (dependency index out of range
    /// or a cycle): never attempted.
    #[error("skipped module {module}: the plan gives it an impossible dependency")]
    InvalidPlan {
        /// Module name.
        module: String,
    },
}

impl LoadError {
    /// The module this error is about.
    pub fn module(&self) -> &str {
        match self {
            LoadError::Open { module, .. }
            | LoadError::Insert { module, .. }
            | LoadError::CompressionUnsupported { module, .. }
            | LoadError::BadOptions { module }
            | LoadError::BadFile { module, .. }
            | LoadError::DependencyFailed { module, .. }
            | LoadError::InvalidPlan { module } => module,
        }
    }

    /// The errno of a failed open or finit_module.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            LoadError::Open { source, .. } | LoadError::Insert { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// Totals of one [`load_plan`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Inserted by this run.
    pub loaded: usize,
    /// Already in the kernel (EEXIST).
    pub already: usize,
    /// Failed (open, finit_module, compression, options).
    pub failed: usize,
    /// Not attempted because a dependency failed (or the plan was invalid).
    pub skipped: usize,
    /// CLOCK_BOOTTIME from the first load's start to the last load's end.
    pub wall: Duration,
}

/// The side effect: insert one module. Implemented by [`KernelInserter`]
/// and by test fakes.
pub trait Inserter: Sync {
    /// Loads `entry` (its path with its options).
    fn insert(&self, entry: &PlanEntry) -> Result<Loaded, LoadError>;
}

/// The real inserter: open + finit_module.
#[derive(Debug, Clone, Copy)]
pub struct KernelInserter {
    /// The compression the running kernel decompresses itself.
    pub kernel_compression: Option<Compression>,
}

impl KernelInserter {
    /// Reads /sys/module/compression once.
    pub fn new() -> Self {
        Self::with_sys_file(Path::new(SYS_MODULE_COMPRESSION))
    }

    /// Reads the compression support from another file (tests, dry runs).
    pub fn with_sys_file(sys_file: &Path) -> Self {
        KernelInserter {
            kernel_compression: Compression::kernel_support(sys_file),
        }
    }
}

impl Default for KernelInserter {
    fn default() -> Self {
        Self::new()
    }
}

impl Inserter for KernelInserter {
    fn insert(&self, entry: &PlanEntry) -> Result<Loaded, LoadError> {
        let mut flags = 0;
        if let Some(c) = Compression::from_path(&entry.path) {
            if self.kernel_compression != Some(c) {
                return Err(LoadError::CompressionUnsupported {
                    module: entry.name.clone(),
                    path: entry.path.clone(),
                    compression: c,
                    kernel: self.kernel_compression,
                });
            }
            flags |= MODULE_INIT_COMPRESSED_FILE;
        }
        let options =
            CString::new(entry.options.as_bytes()).map_err(|_| LoadError::BadOptions {
                module: entry.name.clone(),
            })?;
        let fd = rustix::fs::open(
            &entry.path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| LoadError::Open {
            module: entry.name.clone(),
            path: entry.path.clone(),
            source: e.into(),
        })?;
        match rustix::system::finit_module(&fd, &options, flags) {
            Ok(()) => Ok(Loaded::Inserted),
            Err(rustix::io::Errno::EXIST) => Ok(Loaded::AlreadyLoaded),
            Err(e) => Err(LoadError::Insert {
                module: entry.name.clone(),
                path: entry.path.clone(),
                source: e.into(),
            }),
        }
    }
}

/// A dry run: opens each file and checks its magic number (ELF, or the
/// compression its name says) without calling the kernel. For `--dry-run`
/// boots, the initrd builder's self-check and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOnlyInserter;

/// Leading bytes of each format.
const ELF_MAGIC: &[u8] = b"\x7fELF";
const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
const ZSTD_MAGIC: &[u8] = b"\x28\xb5\x2f\xfd";
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

impl Inserter for CheckOnlyInserter {
    fn insert(&self, entry: &PlanEntry) -> Result<Loaded, LoadError> {
        use std::io::Read;
        let open_err = |e: std::io::Error| LoadError::Open {
            module: entry.name.clone(),
            path: entry.path.clone(),
            source: e,
        };
        let mut head = [0u8; 6];
        let mut file = std::fs::File::open(&entry.path).map_err(open_err)?;
        let mut got = 0;
        while got < head.len() {
            match file.read(head.get_mut(got..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(open_err(e)),
            }
        }
        let head = head.get(..got).unwrap_or_default();
        let (magic, what) = match Compression::from_path(&entry.path) {
            None => (ELF_MAGIC, "an ELF object"),
            Some(Compression::Xz) => (XZ_MAGIC, "xz data"),
            Some(Compression::Zstd) => (ZSTD_MAGIC, "zstd data"),
            Some(Compression::Gzip) => (GZIP_MAGIC, "gzip data"),
        };
        if head.starts_with(magic) {
            Ok(Loaded::Inserted)
        } else {
            Err(LoadError::BadFile {
                module: entry.name.clone(),
                path: entry.path.clone(),
                reason: format!("it is not {what} (starts with {head:02x?})"),
            })
        }
    }
}

/// CLOCK_BOOTTIME now.
pub fn boottime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Loads the plan with up to `threads` worker threads (1 = sequential in
/// plan order); a module starts as soon as all its deps are live; failures
/// are reported and their dependents skipped; the rest goes on. Calls
/// `on_event` once per module (from any thread).
pub fn load_plan(
    plan: &Plan,
    threads: usize,
    on_event: &(dyn Fn(&LoadEvent) + Sync),
) -> LoadReport {
    load_plan_with(plan, threads, &KernelInserter::new(), on_event)
}

/// [`load_plan`] with a chosen [`Inserter`]: the plan submitted to one
/// [`Queue`], worked off by scoped threads until nothing is left.
pub fn load_plan_with(
    plan: &Plan,
    threads: usize,
    inserter: &dyn Inserter,
    on_event: &(dyn Fn(&LoadEvent) + Sync),
) -> LoadReport {
    let shared = Shared::new();
    shared.lock().submit(plan);
    let report_events = |shared: &Shared| {
        for ev in shared.lock().take_finished() {
            on_event(&ev);
        }
    };
    report_events(&shared);
    let threads = threads
        .clamp(1, MAX_LOADER_THREADS)
        .min(plan.modules.len().max(1));
    std::thread::scope(|scope| {
        for t in 0..threads {
            let shared = &shared;
            scope.spawn(move || shared.work(t, inserter, &|| report_events(shared)));
        }
        shared.wait_idle();
        shared.close();
    });
    report_events(&shared);
    let report = shared.lock().report();
    report
}

/// A module's state in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Live,
    Failed,
    Skipped,
}

/// One module the queue knows, by its place in submission order.
struct Slot {
    entry: PlanEntry,
    status: Status,
    /// Dependencies (hard and soft) not yet finished.
    waiting: usize,
    /// Modules that need this one to be live (hard) or only after it (soft).
    hard_users: Vec<usize>,
    soft_users: Vec<usize>,
    /// Lower runs first (see [`Queue::submit_at`]).
    priority: u8,
}

/// The loader's state: every module ever submitted, each loaded at most
/// once. Submitting a module again (by name) adds nothing, so a failure is
/// recorded once and never retried. Pure bookkeeping, no syscalls.
#[derive(Default)]
pub struct Queue {
    slots: Vec<Slot>,
    by_name: std::collections::BTreeMap<String, usize>,
    /// Ready to run: the most urgent first, then the earliest submitted.
    ready: BinaryHeap<Reverse<(u8, usize)>>,
    running: usize,
    finished: Vec<LoadEvent>,
    report: LoadReport,
    first_start: Option<Duration>,
    last_end: Duration,
    closed: bool,
}

impl Queue {
    /// Adds the plan's modules not known yet; returns how many were new.
    /// Dependencies are the plan's indices; they may name modules known
    /// from earlier plans (live, running, failed...).
    pub fn submit(&mut self, plan: &Plan) -> usize {
        self.submit_at(plan, 0)
    }

    /// [`Queue::submit`] with a priority: among ready modules, a lower
    /// priority starts first (PID 1 loads what devices ask for before what
    /// it loads ahead of need, like the root filesystem's modules), then
    /// the earlier submitted.
    pub fn submit_at(&mut self, plan: &Plan, priority: u8) -> usize {
        let base = self.slots.len();
        let mut place: Vec<usize> = Vec::with_capacity(plan.modules.len());
        let mut new = Vec::new();
        for entry in &plan.modules {
            match self.by_name.get(&entry.name) {
                Some(&known) => {
                    self.raise(known, priority);
                    place.push(known);
                }
                None => {
                    let k = self.slots.len();
                    self.by_name.insert(entry.name.clone(), k);
                    self.slots.push(Slot {
                        entry: entry.clone(),
                        status: Status::Waiting,
                        waiting: 0,
                        hard_users: Vec::new(),
                        soft_users: Vec::new(),
                        priority,
                    });
                    place.push(k);
                    new.push(k);
                }
            }
        }
        for &k in &new {
            self.link(k, &place);
        }
        for &k in &new {
            let waiting = self
                .slots
                .get(k)
                .is_some_and(|s| s.status == Status::Waiting && s.waiting == 0);
            if waiting {
                self.ready.push(Reverse((priority, k)));
            }
        }
        self.break_cycles();
        self.slots.len() - base
    }

    /// A module queued ahead of need that is now asked for sooner (a
    /// device wants the root filesystem's driver, a frozen plan names it)
    /// takes the sooner priority; when it is ready it is queued again (the
    /// stale entry is skipped, as a released twice one is).
    fn raise(&mut self, k: usize, priority: u8) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        if slot.status == Status::Waiting && priority < slot.priority {
            slot.priority = priority;
            if slot.waiting == 0 {
                self.ready.push(Reverse((priority, k)));
            }
        }
    }

    /// Counts what `k` waits on and registers it with its dependencies; an
    /// impossible dependency (out of the plan, itself) or a failed one
    /// skips it at once.
    fn link(&mut self, k: usize, place: &[usize]) {
        let Some(slot) = self.slots.get(k) else {
            return;
        };
        let (deps, soft) = (slot.entry.deps.clone(), slot.entry.soft_deps.clone());
        let mut hard: Vec<usize> = Vec::new();
        let mut softs: Vec<usize> = Vec::new();
        for d in deps {
            match place.get(d) {
                Some(&dk) if dk != k => {
                    if soft.contains(&d) {
                        softs.push(dk);
                    } else {
                        hard.push(dk);
                    }
                }
                _ => return self.skip(k, None),
            }
        }
        hard.sort_unstable();
        hard.dedup();
        softs.sort_unstable();
        softs.dedup();
        softs.retain(|s| !hard.contains(s));
        for dk in hard {
            match self.slots.get(dk).map(|s| s.status) {
                Some(Status::Live) => {}
                Some(Status::Failed | Status::Skipped) => {
                    let cause = self.name(dk);
                    return self.skip(k, Some(cause));
                }
                _ => {
                    self.add_user(dk, k, false);
                }
            }
        }
        for dk in softs {
            if matches!(
                self.slots.get(dk).map(|s| s.status),
                Some(Status::Waiting | Status::Running)
            ) {
                self.add_user(dk, k, true);
            }
        }
    }

    fn add_user(&mut self, dep: usize, user: usize, soft: bool) {
        if let Some(d) = self.slots.get_mut(dep) {
            if soft {
                d.soft_users.push(user);
            } else {
                d.hard_users.push(user);
            }
        }
        if let Some(u) = self.slots.get_mut(user) {
            u.waiting += 1;
        }
    }

    fn name(&self, k: usize) -> String {
        self.slots
            .get(k)
            .map(|s| s.entry.name.clone())
            .unwrap_or_default()
    }

    /// `k` will not be loaded: an impossible plan entry (no cause) or a
    /// dependency that failed (the root cause). Its users follow.
    fn skip(&mut self, k: usize, cause: Option<String>) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        if slot.status != Status::Waiting {
            return;
        }
        slot.status = Status::Skipped;
        let module = slot.entry.name.clone();
        let outcome = Err(match &cause {
            Some(dependency) => LoadError::DependencyFailed {
                module,
                dependency: dependency.clone(),
            },
            None => LoadError::InvalidPlan { module },
        });
        self.report.skipped += 1;
        self.finished.push(LoadEvent {
            entry: slot.entry.clone(),
            start: boottime(),
            duration: Duration::ZERO,
            thread: 0,
            outcome,
        });
        let root = cause.unwrap_or_else(|| self.name(k));
        self.failed(k, &root);
    }

    /// `k` is not live: hard users are skipped (with the root cause),
    /// soft users only stop waiting for it.
    fn failed(&mut self, k: usize, root: &str) {
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        let hard = std::mem::take(&mut slot.hard_users);
        let soft = std::mem::take(&mut slot.soft_users);
        for u in soft {
            self.release(u);
        }
        for u in hard {
            self.skip(u, Some(root.to_owned()));
        }
    }

    /// One dependency of `u` finished: ready when none is left.
    fn release(&mut self, u: usize) {
        if let Some(slot) = self.slots.get_mut(u) {
            slot.waiting = slot.waiting.saturating_sub(1);
            if slot.waiting == 0 && slot.status == Status::Waiting {
                self.ready.push(Reverse((slot.priority, u)));
            }
        }
    }

    /// Nothing runs and nothing is ready, yet modules wait: they wait on a
    /// cycle. Report it instead of hanging: the earliest stuck module is
    /// skipped (its soft users still run), until something can go on.
    fn break_cycles(&mut self) {
        while self.ready.is_empty() && self.running == 0 {
            let stuck = self.slots.iter().position(|s| s.status == Status::Waiting);
            match stuck {
                Some(k) => self.skip(k, None),
                None => return,
            }
        }
    }

    /// The next module to load, marked running: its place in the queue
    /// and its entry (to hand to whatever loads it).
    pub fn start_next(&mut self) -> Option<(usize, PlanEntry)> {
        while let Some(Reverse((_, k))) = self.ready.pop() {
            // A module can be released twice (a soft and a hard edge) or
            // skipped after it was queued: only a waiting one runs.
            let Some(slot) = self.slots.get_mut(k) else {
                continue;
            };
            if slot.status != Status::Waiting {
                continue;
            }
            slot.status = Status::Running;
            self.running += 1;
            return Some((k, slot.entry.clone()));
        }
        None
    }

    /// Records the outcome of a load and releases or skips its users.
    pub fn complete(
        &mut self,
        k: usize,
        start: Duration,
        end: Duration,
        thread: usize,
        outcome: Result<Loaded, LoadError>,
    ) {
        self.running = self.running.saturating_sub(1);
        self.first_start = Some(self.first_start.map_or(start, |s| s.min(start)));
        self.last_end = self.last_end.max(end);
        match &outcome {
            Ok(Loaded::Inserted) => self.report.loaded += 1,
            Ok(Loaded::AlreadyLoaded) => self.report.already += 1,
            Err(_) => self.report.failed += 1,
        }
        let live = outcome.is_ok();
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        slot.status = if live { Status::Live } else { Status::Failed };
        let entry = slot.entry.clone();
        self.finished.push(LoadEvent {
            entry,
            start,
            duration: end.saturating_sub(start),
            thread,
            outcome,
        });
        if live {
            let Some(slot) = self.slots.get_mut(k) else {
                return;
            };
            let users: Vec<usize> = slot
                .hard_users
                .drain(..)
                .chain(slot.soft_users.drain(..))
                .collect();
            for u in users {
                self.release(u);
            }
        } else {
            let name = self.name(k);
            self.failed(k, &name);
        }
        self.break_cycles();
    }

    /// Events of modules finished (or skipped) since the last call.
    pub fn take_finished(&mut self) -> Vec<LoadEvent> {
        std::mem::take(&mut self.finished)
    }

    /// Nothing is running or waiting to run.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.running == 0
    }

    /// Whether `name` is live (inserted or already there).
    pub fn is_live(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .and_then(|&k| self.slots.get(k))
            .is_some_and(|s| s.status == Status::Live)
    }

    /// Totals so far.
    pub fn report(&self) -> LoadReport {
        let mut report = self.report;
        report.wall = self
            .first_start
            .map(|s| self.last_end.saturating_sub(s))
            .unwrap_or_default();
        report
    }
}

/// The queue with its workers' wake-ups.
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn new() -> Self {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A poisoned lock means a worker panicked mid-update; the state is
        // still consistent enough to go on (PID 1 must not stop here).
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Blocks until nothing runs or waits to run.
    fn wait_idle(&self) {
        let mut q = self.lock();
        while !q.is_idle() {
            q = self
                .wake
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// A worker: take the earliest ready module, load it, record it.
    fn work(&self, thread: usize, inserter: &dyn Inserter, after_each: &dyn Fn()) {
        loop {
            let (k, entry) = {
                let mut q = self.lock();
                loop {
                    if q.closed {
                        return;
                    }
                    if let Some(next) = q.start_next() {
                        break next;
                    }
                    q = self
                        .wake
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let start = boottime();
            let outcome = inserter.insert(&entry);
            let end = boottime();
            self.lock().complete(k, start, end, thread, outcome);
            self.wake.notify_all();
            after_each();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn entry(name: &str, deps: &[usize]) -> PlanEntry {
        PlanEntry {
            name: name.to_owned(),
            path: PathBuf::from(format!("/m/{name}.ko")),
            deps: deps.to_vec(),
            soft_deps: Vec::new(),
            options: String::new(),
            reason: "test".to_owned(),
        }
    }

    /// Records calls; fails the modules named in `fail` with the given errno.
    struct Fake {
        fail: HashMap<String, i32>,
        exists: Vec<String>,
        calls: Mutex<Vec<String>>,
        live: Mutex<Vec<String>>,
        concurrent: AtomicUsize,
        max_concurrent: AtomicUsize,
        plan: Plan,
        delay: Duration,
    }

    impl Fake {
        fn new(plan: &Plan) -> Self {
            Fake {
                fail: HashMap::new(),
                exists: Vec::new(),
                calls: Mutex::new(Vec::new()),
                live: Mutex::new(Vec::new()),
                concurrent: AtomicUsize::new(0),
                max_concurrent: AtomicUsize::new(0),
                plan: plan.clone(),
                delay: Duration::from_millis(5),
            }
        }
    }

    impl Inserter for Fake {
        fn insert(&self, entry: &PlanEntry) -> Result<Loaded, LoadError> {
            // Every dependency must be live before we are called.
            {
                let live = self.live.lock().unwrap();
                for &d in entry.deps.iter().filter(|d| !entry.soft_deps.contains(d)) {
                    let dep = &self.plan.modules[d].name;
                    assert!(
                        live.contains(dep),
                        "{} started before its dependency {dep}",
                        entry.name
                    );
                }
            }
            let now = self.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_concurrent.fetch_max(now, Ordering::SeqCst);
            self.calls.lock().unwrap().push(entry.name.clone());
            std::thread::sleep(self.delay);
            self.concurrent.fetch_sub(1, Ordering::SeqCst);
            if let Some(&errno) = self.fail.get(&entry.name) {
                return Err(LoadError::Insert {
                    module: entry.name.clone(),
                    path: entry.path.clone(),
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            self.live.lock().unwrap().push(entry.name.clone());
            if self.exists.contains(&entry.name) {
                Ok(Loaded::AlreadyLoaded)
            } else {
                Ok(Loaded::Inserted)
            }
        }
    }

    fn plan() -> Plan {
        // a, b independent; c needs a; d needs c and b; e independent.
        Plan {
            modules: vec![
                entry("a", &[]),
                entry("b", &[]),
                entry("c", &[0]),
                entry("d", &[1, 2]),
                entry("e", &[]),
            ],
            notes: Vec::new(),
        }
    }

    /// (module, outcome with the error as text, thread) per event.
    type Events = Vec<(String, Result<Loaded, String>, usize)>;

    fn run(plan: &Plan, fake: &Fake, threads: usize) -> (LoadReport, Events) {
        let events = Mutex::new(Vec::new());
        let report = load_plan_with(plan, threads, fake, &|ev: &LoadEvent| {
            events.lock().unwrap().push((
                ev.entry.name.clone(),
                ev.outcome.as_ref().map(|l| *l).map_err(|e| e.to_string()),
                ev.thread,
            ));
        });
        (report, events.into_inner().unwrap())
    }

    #[test]
    fn sequential_is_plan_order() {
        let p = plan();
        let fake = Fake::new(&p);
        let (report, events) = run(&p, &fake, 1);
        assert_eq!(*fake.calls.lock().unwrap(), vec!["a", "b", "c", "d", "e"]);
        assert_eq!(report.loaded, 5);
        assert_eq!(events.len(), 5);
        assert_eq!(fake.max_concurrent.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn parallel_respects_dependencies_and_runs_concurrently() {
        let p = plan();
        let fake = Fake::new(&p);
        let (report, events) = run(&p, &fake, 3);
        assert_eq!(
            report,
            LoadReport {
                loaded: 5,
                wall: report.wall,
                ..Default::default()
            }
        );
        assert_eq!(events.len(), 5);
        assert!(fake.max_concurrent.load(Ordering::SeqCst) >= 2);
        assert!(report.wall >= Duration::from_millis(10));
    }

    #[test]
    fn failure_skips_dependents_and_the_rest_goes_on() {
        let p = plan();
        let mut fake = Fake::new(&p);
        fake.fail.insert("a".to_owned(), 22);
        fake.exists.push("e".to_owned());
        for threads in [1, 4] {
            fake.calls.lock().unwrap().clear();
            fake.live.lock().unwrap().clear();
            let (report, events) = run(&p, &fake, threads);
            assert_eq!(report.failed, 1);
            assert_eq!(report.skipped, 2, "c and d");
            assert_eq!(report.loaded, 1, "b");
            assert_eq!(report.already, 1, "e");
            assert_eq!(events.len(), 5, "one event per module");
            let calls = fake.calls.lock().unwrap().clone();
            assert!(!calls.contains(&"c".to_owned()) && !calls.contains(&"d".to_owned()));
            let a = events.iter().find(|e| e.0 == "a").unwrap();
            let msg = a.1.as_ref().unwrap_err();
            assert!(
                msg.contains("failed to insert module a") && msg.contains("os error 22"),
                "{msg}"
            );
            let d = events.iter().find(|e| e.0 == "d").unwrap();
            assert_eq!(
                d.1.as_ref().unwrap_err(),
                "skipped module d: its dependency a failed to load"
            );
        }
    }

    /// ext4's case: a failed softdep (crc32c_intel, ENODEV without SSE4.2)
    /// does not stop the module; a failed hard dependency does.
    #[test]
    fn a_failed_softdep_does_not_skip_its_user() {
        let mut x = entry("x", &[0, 1]);
        x.soft_deps = vec![0];
        let p = Plan {
            modules: vec![entry("soft", &[]), entry("hard", &[]), x, entry("y", &[0])],
            notes: vec![],
        };
        let mut fake = Fake::new(&p);
        fake.fail.insert("soft".to_owned(), 19);
        for threads in [1, 3] {
            fake.calls.lock().unwrap().clear();
            fake.live.lock().unwrap().clear();
            let (report, events) = run(&p, &fake, threads);
            assert_eq!(
                (report.failed, report.loaded, report.skipped),
                (1, 2, 1),
                "{events:?}"
            );
            assert!(events.iter().find(|e| e.0 == "x").unwrap().1.is_ok());
            let y = events.iter().find(|e| e.0 == "y").unwrap();
            assert_eq!(
                y.1.as_ref().unwrap_err(),
                "skipped module y: its dependency soft failed to load"
            );
        }
    }

    /// A soft user of an impossible entry is released at start-up and
    /// also found ready by the scan: it must load once, and the rest of
    /// the plan must still load (found in review).
    #[test]
    fn a_module_released_twice_loads_once_and_nothing_is_lost() {
        let mut u = entry("u", &[0]);
        u.soft_deps = vec![0];
        let p = Plan {
            modules: vec![
                entry("x", &[99]),
                u,
                entry("a", &[]),
                entry("b", &[]),
                entry("c", &[2]),
            ],
            notes: vec![],
        };
        let fake = Fake::new(&p);
        for threads in [1, 4] {
            fake.calls.lock().unwrap().clear();
            fake.live.lock().unwrap().clear();
            let (report, events) = run(&p, &fake, threads);
            let mut calls = fake.calls.lock().unwrap().clone();
            calls.sort();
            assert_eq!(calls, ["a", "b", "c", "u"], "{events:?}");
            assert_eq!((report.loaded, report.skipped), (4, 1));
            assert_eq!(events.len(), 5, "one event per module");
        }
    }

    #[test]
    fn invalid_plan_does_not_hang() {
        let p = Plan {
            modules: vec![
                entry("x", &[1]),
                entry("y", &[0]),
                entry("z", &[7]),
                entry("w", &[]),
            ],
            notes: vec![],
        };
        let fake = Fake::new(&p);
        let (report, events) = run(&p, &fake, 2);
        assert_eq!(report.loaded, 1);
        assert_eq!(report.skipped, 3);
        assert_eq!(events.len(), 4);
        // Two invalid entries, the second a user of the first: one event each.
        let p = Plan {
            modules: vec![entry("a", &[9]), entry("b", &[0, 9]), entry("c", &[])],
            notes: vec![],
        };
        let fake = Fake::new(&p);
        let (report, events) = run(&p, &fake, 1);
        assert_eq!((report.loaded, report.skipped), (1, 2));
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn empty_plan() {
        let p = Plan::default();
        let fake = Fake::new(&p);
        let (report, events) = run(&p, &fake, 4);
        assert_eq!(report, LoadReport::default());
        assert!(events.is_empty());
    }

    #[test]
    fn kernel_inserter_reports_missing_file_and_unsupported_compression() {
        let k = KernelInserter {
            kernel_compression: None,
        };
        let err = k.insert(&entry("nope_kestrel_missing", &[])).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(2), "{err}");
        assert!(
            err.to_string().contains("/m/nope_kestrel_missing.ko"),
            "{err}"
        );
        let mut e = entry("xzmod", &[]);
        e.path = PathBuf::from("/m/xzmod.ko.xz");
        let err = k.insert(&e).unwrap_err().to_string();
        assert_eq!(err, "failed to insert module xzmod from /m/xzmod.ko.xz: it is xz-compressed and the kernel cannot decompress modules");
        let k = KernelInserter {
            kernel_compression: Some(Compression::Zstd),
        };
        let err = k.insert(&e).unwrap_err().to_string();
        assert!(err.ends_with("the kernel only decompresses zstd"), "{err}");
        let mut e = entry("nul", &[]);
        e.options = "a=\0".to_owned();
        assert!(matches!(k.insert(&e), Err(LoadError::BadOptions { .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Random DAGs and random failures: one event per module, every
        /// module starts after its dependencies are live (checked by the
        /// fake), and exactly the transitive users of failures are skipped.
        #[test]
        fn random_plans_load_correctly(
            deps in proptest::collection::vec(proptest::collection::vec(0usize..100, 0..3), 1..25),
            failing in proptest::collection::vec(0usize..25, 0..4),
            threads in 1usize..5,
        ) {
            let n = deps.len();
            let modules: Vec<PlanEntry> = deps
                .iter()
                .enumerate()
                .map(|(k, ds)| {
                    let ds: Vec<usize> = if k == 0 { vec![] } else { ds.iter().map(|d| d % k).collect() };
                    entry(&format!("m{k}"), &ds)
                })
                .collect();
            let p = Plan { modules, notes: vec![] };
            let mut fake = Fake::new(&p);
            fake.delay = Duration::ZERO;
            for f in &failing {
                fake.fail.insert(format!("m{}", f % n), 5);
            }
            let (report, events) = run(&p, &fake, threads);
            proptest::prop_assert_eq!(events.len(), n);
            let mut bad = vec![false; n];
            let mut expect_skipped = 0;
            for k in 0..n {
                let name = format!("m{k}");
                let dep_bad = p.modules[k].deps.iter().any(|&d| bad[d]);
                if dep_bad {
                    expect_skipped += 1;
                    bad[k] = true;
                } else if fake.fail.contains_key(&name) {
                    bad[k] = true;
                }
            }
            proptest::prop_assert_eq!(report.skipped, expect_skipped);
            proptest::prop_assert_eq!(report.loaded + report.failed + report.skipped, n);
        }
    }

    #[test]
    fn check_only_inserter_checks_magic_without_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let mut e = entry(name.split('.').next().unwrap(), &[]);
            e.path = dir.path().join(name);
            std::fs::write(&e.path, bytes).unwrap();
            e
        };
        let good = write("good.ko", b"\x7fELF\x02\x01\x01rest");
        let bad = write("bad.ko", b"garbage!");
        let short = write("short.ko", b"\x7f");
        let xz = write("x.ko.xz", b"\xfd7zXZ\x00...");
        let fake_zst = write("z.ko.zst", b"\x7fELF\x02\x01");
        let c = CheckOnlyInserter;
        assert_eq!(c.insert(&good).unwrap(), Loaded::Inserted);
        assert_eq!(c.insert(&xz).unwrap(), Loaded::Inserted);
        let err = c.insert(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("failed to check module bad at ")
                && err.contains("it is not an ELF object"),
            "{err}"
        );
        assert!(matches!(c.insert(&short), Err(LoadError::BadFile { .. })));
        assert!(c
            .insert(&fake_zst)
            .unwrap_err()
            .to_string()
            .contains("it is not zstd data"));
        let missing = entry("missing_kestrel", &[]);
        assert_eq!(c.insert(&missing).unwrap_err().raw_os_error(), Some(2));
    }

    /// Works the queue off on this thread, as PID 1's workers would.
    fn drain(q: &mut Queue, fail: &[&str], calls: &mut Vec<String>) -> Vec<LoadEvent> {
        while let Some((k, entry)) = q.start_next() {
            calls.push(entry.name.clone());
            let outcome = if fail.contains(&entry.name.as_str()) {
                Err(LoadError::Insert {
                    module: entry.name.clone(),
                    path: entry.path.clone(),
                    source: std::io::Error::from_raw_os_error(19),
                })
            } else {
                Ok(Loaded::Inserted)
            };
            q.complete(k, boottime(), boottime(), 0, outcome);
        }
        assert!(q.is_idle());
        q.take_finished()
    }

    /// Plans arrive one after another (as devices appear): a module known
    /// from an earlier plan is not loaded again, a failure is never
    /// retried, and a user of a failed module is skipped at once.
    #[test]
    fn the_queue_dedupes_across_plans_and_never_retries() {
        let mut q = Queue::default();
        let mut calls = Vec::new();
        let first = Plan {
            modules: vec![entry("core", &[]), entry("bad", &[]), entry("drv", &[0])],
            notes: vec![],
        };
        assert_eq!(q.submit(&first), 3);
        assert_eq!(drain(&mut q, &["bad"], &mut calls).len(), 3);
        assert!(q.is_live("core") && q.is_live("drv") && !q.is_live("bad"));
        // A second device asks for core again, bad again, and a user of bad.
        let second = Plan {
            modules: vec![
                entry("core", &[]),
                entry("bad", &[]),
                entry("user", &[0, 1]),
                entry("other", &[0]),
            ],
            notes: vec![],
        };
        assert_eq!(q.submit(&second), 2, "only user and other are new");
        let events = drain(&mut q, &["bad"], &mut calls);
        let mut names: Vec<(String, bool)> = events
            .iter()
            .map(|e| (e.entry.name.clone(), e.outcome.is_ok()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![("other".to_owned(), true), ("user".to_owned(), false)]
        );
        let user = events.iter().find(|e| e.entry.name == "user").unwrap();
        assert_eq!(
            user.outcome.as_ref().unwrap_err().to_string(),
            "skipped module user: its dependency bad failed to load"
        );
        calls.sort();
        assert_eq!(
            calls,
            ["bad", "core", "drv", "other"],
            "bad tried once, core loaded once"
        );
        let report = q.report();
        assert_eq!((report.loaded, report.failed, report.skipped), (3, 1, 1));
    }

    /// What devices ask for starts before what was queued ahead of need.
    #[test]
    fn urgent_modules_start_first() {
        let mut q = Queue::default();
        q.submit_at(
            &Plan {
                modules: vec![entry("early1", &[]), entry("early2", &[])],
                notes: vec![],
            },
            1,
        );
        q.submit(&Plan {
            modules: vec![entry("dev", &[]), entry("drv", &[0])],
            notes: vec![],
        });
        let mut order = Vec::new();
        while let Some((k, e)) = q.start_next() {
            order.push(e.name.clone());
            q.complete(k, boottime(), boottime(), 0, Ok(Loaded::Inserted));
        }
        assert_eq!(order, ["dev", "drv", "early1", "early2"]);
    }

    /// A module queued ahead of need and then asked for (with its
    /// dependency) starts with what is needed (among those, the earlier
    /// queued first), before the rest queued ahead of need; it loads once.
    #[test]
    fn a_module_asked_for_again_sooner_is_raised() {
        let mut q = Queue::default();
        q.submit_at(
            &Plan {
                modules: vec![entry("other", &[]), entry("jbd2", &[]), entry("ext4", &[1])],
                notes: vec![],
            },
            1,
        );
        q.submit(&Plan {
            modules: vec![entry("dev", &[])],
            notes: vec![],
        });
        q.submit(&Plan {
            modules: vec![entry("jbd2", &[]), entry("ext4", &[0])],
            notes: vec![],
        });
        let mut order = Vec::new();
        while let Some((k, e)) = q.start_next() {
            order.push(e.name.clone());
            q.complete(k, boottime(), boottime(), 0, Ok(Loaded::Inserted));
        }
        assert_eq!(order, ["jbd2", "ext4", "dev", "other"]);
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime();
        let b = boottime();
        assert!(b >= a && a > Duration::ZERO);
    }
}
