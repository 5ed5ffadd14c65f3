//! Phases 3 and 4: discovery and modules. The uevent socket is opened
//! first, then /sys is walked (coldplug); every new MODALIAS is resolved
//! against the module index and the plan is loaded on worker threads.
//! Loading a module creates devices (virtio_pci makes the virtio devices
//! whose drivers are virtio_blk, virtio_console...), which the next pass
//! or the socket picks up, until nothing new appears.

use crate::log;
use kestrel_modules::loader::{self, LoadError, LoadEvent, Loaded};
use kestrel_modules::{Config, ModuleIndex, Plan, PlanNote, Request};
use kestrel_proto::{GuestRecord, ModuleOutcome};
use kestrel_uevent::socket::UeventSocket;
use kestrel_uevent::{walk, Uevent, UeventError};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub const SYS: &str = "/sys";
pub const MODULES_ROOT: &str = "/lib/modules";
/// modprobe.d directories, in kmod's order of precedence.
pub const MODPROBE_DIRS: &[&str] = &["/etc/modprobe.d", "/run/modprobe.d", "/lib/modprobe.d"];
/// Coldplug passes before giving up on reaching a fixed point (each pass
/// only follows devices created by the previous pass's modules).
const MAX_PASSES: usize = 8;
/// How often sysfs is re-checked when there is no uevent socket.
const NO_SOCKET_TICK: Duration = Duration::from_millis(5);

pub struct Devices {
    index: Option<ModuleIndex>,
    socket: Option<UeventSocket>,
    seen_aliases: BTreeSet<Vec<u8>>,
    live: BTreeSet<String>,
    threads: usize,
    pub loaded: usize,
    pub failed: usize,
    /// No devtmpfs: make and remove nodes from uevents.
    make_nodes: bool,
    /// A frozen plan is in force: uevents make nodes but load no modules.
    frozen: bool,
}

impl Devices {
    /// Opens the uevent socket before anything else (so nothing that appears
    /// during the walk is missed) and loads the module index. Neither is
    /// fatal: a kernel with everything built in needs no index.
    /// `params` are the kernel's `key=value` parameters (for
    /// `modprobe.blacklist=`, `module_blacklist=` and `NAME.param=`).
    pub fn start(threads: usize, make_nodes: bool, params: &[String]) -> Devices {
        let socket = UeventSocket::open()
            .map_err(|e| log::warn(&format!("no uevent socket, coldplug only: {e}")))
            .ok();
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let dir = Path::new(MODULES_ROOT).join(&release);
        let mut config = Config::load_paths(MODPROBE_DIRS).unwrap_or_else(|e| {
            log::warn(&format!("modprobe.d ignored: {e}"));
            Config::default()
        });
        config.apply_kernel_cmdline(params);
        let index = match ModuleIndex::load(&dir) {
            Ok(index) => Some(index.with_config(config)),
            Err(e) => {
                log::warn(&format!(
                    "no module index, relying on built-in drivers: {e}"
                ));
                None
            }
        };
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            threads
        };
        Devices {
            index,
            socket,
            seen_aliases: BTreeSet::new(),
            live: BTreeSet::new(),
            threads,
            loaded: 0,
            failed: 0,
            make_nodes,
            frozen: false,
        }
    }

    pub fn socket_fd(&self) -> Option<BorrowedFd<'_>> {
        self.socket.as_ref().map(|s| s.as_fd())
    }

    /// Sleeps until a uevent arrives or `max` passes, then handles what
    /// came. Without a socket (no netlink), a plain short sleep: callers
    /// re-check sysfs after each call.
    pub fn wait_and_handle(&mut self, max: Duration) {
        match self.socket_fd() {
            Some(fd) => {
                let timeout = rustix::time::Timespec::try_from(max).ok();
                let _ = rustix::event::poll(
                    &mut [rustix::event::PollFd::from_borrowed_fd(
                        fd,
                        rustix::event::PollFlags::IN,
                    )],
                    timeout.as_ref(),
                );
            }
            None => std::thread::sleep(max.min(NO_SOCKET_TICK)),
        }
        self.handle_events();
    }

    /// Walks /sys and loads modules for every new MODALIAS, repeating
    /// while modules bring new devices.
    pub fn coldplug(&mut self) {
        for _ in 0..MAX_PASSES {
            let walked = match walk::walk_devices(Path::new(SYS)) {
                Ok(w) => w,
                Err(e) => {
                    log::error(&format!("failed to walk {SYS}: {e}"), false);
                    return;
                }
            };
            let aliases = self.new_aliases(walked.devices.iter());
            log::emit(GuestRecord::Coldplug {
                devices: walked.devices.len() as u64,
                modaliases: aliases.len() as u64,
            });
            if aliases.is_empty() {
                return;
            }
            self.load_aliases(&aliases);
            // What the socket saw meanwhile (even an overflow) is in the
            // next walk anyway.
            let _ = self.drain_socket();
        }
        log::warn("coldplug did not settle: modules kept creating devices");
    }

    /// Handles every uevent waiting on the socket; returns how many were read.
    /// An overflow (ENOBUFS: events were lost) re-walks /sys.
    pub fn handle_events(&mut self) -> usize {
        let (events, overflow) = self.drain_socket();
        let aliases = self.new_aliases(events.iter());
        if !aliases.is_empty() && !self.frozen {
            self.load_aliases(&aliases);
        }
        if overflow && !self.frozen {
            log::warn("uevent socket overflowed; walking /sys again");
            self.coldplug();
        }
        events.len()
    }

    /// Reads every pending uevent; true when the socket overflowed.
    fn drain_socket(&mut self) -> (Vec<Uevent>, bool) {
        let mut events = Vec::new();
        let Some(socket) = self.socket.as_mut() else {
            return (events, false);
        };
        loop {
            match socket.recv() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => return (events, false),
                Err(UeventError::Overflow) => return (events, true),
                // One bad datagram is dropped and the next read goes on;
                // anything else is reported once per drain, never spun on.
                Err(e @ (UeventError::Socket { .. } | UeventError::Io { .. })) => {
                    log::warn(&format!("uevent socket: {e}"));
                    return (events, false);
                }
                Err(e) => log::warn(&format!("bad uevent dropped: {e}")),
            }
        }
    }

    fn new_aliases<'a>(&mut self, devices: impl Iterator<Item = &'a Uevent>) -> Vec<String> {
        let mut out = Vec::new();
        for dev in devices {
            if self.make_nodes {
                sync_node(dev);
            }
            // The kernel ends some netlink MODALIAS values (x86 cpu) with a
            // newline the sysfs walk does not have.
            if let Some(alias) = dev
                .modalias()
                .map(|a| a.trim_ascii_end())
                .filter(|a| !a.is_empty())
            {
                if self.seen_aliases.insert(alias.to_vec()) {
                    let alias = String::from_utf8_lossy(alias).into_owned();
                    log::debug(&format!(
                        "modalias {alias} of {}",
                        String::from_utf8_lossy(dev.devpath())
                    ));
                    out.push(alias);
                }
            }
        }
        out
    }

    fn load_aliases(&mut self, aliases: &[String]) {
        let requests: Vec<Request> = aliases.iter().cloned().map(Request::Alias).collect();
        self.load_requests(&requests, self.threads);
    }

    /// Loads the modules for aliases not seen before (e.g. `fs-ext4`).
    pub fn request_aliases(&mut self, aliases: &[String]) {
        let new: Vec<String> = aliases
            .iter()
            .filter(|a| self.seen_aliases.insert(a.as_bytes().to_vec()))
            .cloned()
            .collect();
        if !new.is_empty() {
            self.load_aliases(&new);
        }
    }

    /// Loads modules by name (`kestrel.modules=`).
    pub fn request_modules(&mut self, names: &[String]) {
        let requests: Vec<Request> = names.iter().cloned().map(Request::Name).collect();
        self.load_requests(&requests, self.threads);
    }

    /// A frozen plan: exactly these modules (with their dependencies),
    /// one at a time in the order given, and no discovery.
    pub fn load_frozen(&mut self, names: &[String]) {
        self.frozen = true;
        let requests: Vec<Request> = names.iter().cloned().map(Request::Name).collect();
        self.load_requests(&requests, 1);
    }

    fn load_requests(&mut self, requests: &[Request], threads: usize) {
        let Some(index) = self.index.as_ref() else {
            return;
        };
        // Lenient: one unknown name or a cycle must not cost every other
        // module of the request; what was left out is reported.
        let plan = index.plan_lenient(requests);
        for note in &plan.notes {
            match note {
                PlanNote::NotFound { name } => {
                    log::warn(&format!("module {name} not found in the module index"))
                }
                PlanNote::Unknown { module, reason } => log::warn(&format!(
                    "module {module} ({reason}) has no file and is not built in"
                )),
                PlanNote::CycleBroken { cycle } => log::warn(&format!(
                    "module dependency cycle broken: {}",
                    cycle.join(" -> ")
                )),
                other => log::debug(&format!("{other:?}")),
            }
        }
        let plan = without_live(plan, &self.live);
        if plan.modules.is_empty() {
            return;
        }
        let live = Mutex::new(Vec::new());
        let report = loader::load_plan(&plan, threads, &|ev: &LoadEvent| {
            emit_load_event(ev);
            if ev.outcome.is_ok() {
                live.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(ev.entry.name.clone());
            }
        });
        self.live.extend(
            live.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.loaded += report.loaded + report.already;
        self.failed += report.failed + report.skipped;
    }
}

/// Without devtmpfs: the node for an added device, removed on `remove`.
/// Disks and everything else get 0600 unless the kernel says DEVMODE.
fn sync_node(dev: &Uevent) {
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    let Some(name) = dev.devname() else { return };
    let Some(path) = kestrel_init::devname::dev_path(name) else {
        log::warn(&format!(
            "refused device name {:?}: it would leave /dev",
            String::from_utf8_lossy(name)
        ));
        return;
    };
    if dev.action() == kestrel_uevent::Action::Remove {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let Some((major, minor)) = dev.major_minor() else {
        return;
    };
    let kind = if dev.subsystem() == Some(b"block") {
        FileType::BlockDevice
    } else {
        FileType::CharacterDevice
    };
    let mode = dev
        .get(b"DEVMODE")
        .and_then(|m| u32::from_str_radix(std::str::from_utf8(m).ok()?, 8).ok())
        .unwrap_or(0o600)
        & 0o777;
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = mknodat(
        CWD,
        &path,
        kind,
        Mode::from_raw_mode(mode),
        makedev(major, minor),
    );
}

fn emit_load_event(ev: &LoadEvent) {
    let start_ns = u64::try_from(ev.start.as_nanos()).unwrap_or(u64::MAX);
    let end_ns = start_ns.saturating_add(u64::try_from(ev.duration.as_nanos()).unwrap_or(0));
    let outcome = match &ev.outcome {
        Ok(Loaded::Inserted) => ModuleOutcome::Inserted,
        Ok(Loaded::AlreadyLoaded) => ModuleOutcome::AlreadyLoaded,
        Err(e @ LoadError::DependencyFailed { .. }) => ModuleOutcome::Skipped {
            cause: e.to_string(),
        },
        Err(e) => ModuleOutcome::Failed {
            error: e.to_string(),
        },
    };
    if let ModuleOutcome::Failed { error } | ModuleOutcome::Skipped { cause: error } = &outcome {
        log::warn(&format!("module {}: {error}", ev.entry.name));
    }
    log::emit_at(
        end_ns,
        GuestRecord::Module {
            name: ev.entry.name.clone(),
            start_ns,
            dur_us: u64::try_from(ev.duration.as_micros()).unwrap_or(u64::MAX),
            thread: u32::try_from(ev.thread).unwrap_or(u32::MAX),
            outcome,
        },
    );
}

/// The plan without modules already live, indices remapped; a dependency
/// that is already live is satisfied and simply dropped.
fn without_live(plan: Plan, live: &BTreeSet<String>) -> Plan {
    let keep: Vec<Option<usize>> = {
        let mut next = 0;
        plan.modules
            .iter()
            .map(|m| {
                (!live.contains(&m.name)).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let Plan { modules, notes } = plan;
    let modules = modules
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| k.is_some())
        .map(|(mut m, _)| {
            let remap = |ds: &[usize]| -> Vec<usize> {
                ds.iter()
                    .filter_map(|&d| keep.get(d).copied().flatten())
                    .collect()
            };
            m.deps = remap(&m.deps);
            m.soft_deps = remap(&m.soft_deps);
            m
        })
        .collect();
    Plan { modules, notes }
}
