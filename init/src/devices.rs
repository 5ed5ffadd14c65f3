//! Phases 3 and 4: discovery and modules, streaming. The uevent socket is
//! opened first, /sys is walked once for what already exists, then each
//! uevent is handled as it arrives: its node (without devtmpfs), its
//! place among the block devices and virtio ports, and its MODALIAS,
//! resolved at once against the module index into one dependency-aware
//! loader queue. No rounds: a module starts as soon as its dependencies
//! are live, while the next device is looked at. An overflow of the
//! socket (ENOBUFS: events lost) re-walks /sys.

use crate::disks::Disks;
use crate::log;
use crate::ports::Ports;
use crate::roots::Roots;
use crate::sys::{NodeKind, Sys};
use crate::workers::Workers;
use kestrel_modules::loader::{KernelInserter, LoadError, LoadEvent, Loaded};
use kestrel_modules::{Config, ModuleIndex, Plan, PlanNote, Request};
use kestrel_proto::{GuestRecord, ModuleOutcome};
use kestrel_uevent::socket::{UeventSocket, RECV_BUFFER_BYTES};
use kestrel_uevent::{walk, Action, Uevent, UeventError};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

/// Datagrams read from the socket per pass of the event loop, so a storm
/// of uevents cannot starve the other sources.
pub const UEVENT_BUDGET: usize = 64;
/// Loader priorities: what a device or the user asks for, before what is
/// loaded ahead of need.
const URGENT: u8 = 0;
const AHEAD_OF_NEED: u8 = 1;
/// Devices handled between two looks at the loader during the walk, so a
/// worker that finished gets its next module while the walk goes on.
const WALK_DISPATCH_EVERY: usize = 8;
/// Most datagrams read to empty the socket after an overflow: what its
/// largest receive buffer (128 MiB) holds of the smallest uevents.
const OVERFLOW_DRAIN_MAX: usize = 1 << 18;
/// Where the running kernel says which compression it decompresses.
const SYS_MODULE_COMPRESSION: &str = "module/compression";

/// How the device pipeline was set up.
pub struct DeviceOptions {
    /// Loader workers (0: one per CPU).
    pub threads: usize,
    /// No devtmpfs: make and remove nodes from uevents.
    pub make_nodes: bool,
    /// The kernel's `key=value` parameters (`modprobe.blacklist=`,
    /// `module_blacklist=`, `NAME.param=`).
    pub params: Vec<String>,
    /// The uevent socket's receive buffer (`kestrel.uevent_buffer`, a
    /// test hook); None: the socket's default.
    pub uevent_buffer: Option<usize>,
}

pub struct Devices {
    socket: Option<UeventSocket>,
    index: Option<ModuleIndex>,
    loader: Option<Workers>,
    seen_aliases: BTreeSet<Vec<u8>>,
    make_nodes: bool,
    /// Nodes this init made (without devtmpfs), to remove stale ones.
    nodes: BTreeSet<PathBuf>,
    /// A frozen plan is in force: uevents make nodes but load nothing.
    frozen: bool,
    /// /sys was walked (or its classes scanned) at least once.
    walked: bool,
    /// Devices no module matched, with their MODALIAS: reported once
    /// devices settle, if no driver has bound to them by then.
    unmatched: Vec<(String, String)>,
    pub disks: Disks,
    pub ports: Ports,
    pub loaded: usize,
    pub failed: usize,
}

impl Devices {
    /// Opens the uevent socket before anything else (so nothing that
    /// appears during the walk is missed), loads the module index and
    /// starts the loader. None of these is fatal: a kernel with everything
    /// built in needs no index, and without the socket the walk still runs.
    pub fn start(roots: &Roots, opts: DeviceOptions) -> Devices {
        let buffer = opts.uevent_buffer.unwrap_or(RECV_BUFFER_BYTES);
        let socket = UeventSocket::open_with_buffer(buffer)
            .map_err(|e| log::warn(&format!("no uevent socket, walking /sys only: {e}")))
            .ok();
        let index = load_index(roots, &opts.params);
        let threads = match opts.threads {
            // One per CPU this process may run on (what available_parallelism
            // reads, without its cgroup parsing: an initramfs has no cgroups).
            0 => {
                rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count().max(1) as usize)
            }
            n => n,
        };
        let loader = index.as_ref().map(|_| {
            Workers::new(
                threads,
                KernelInserter::with_sys_file(&roots.sys.join(SYS_MODULE_COMPRESSION)),
            )
        });
        Devices::new(socket, index, loader, opts.make_nodes)
    }

    pub fn new(
        socket: Option<UeventSocket>,
        index: Option<ModuleIndex>,
        loader: Option<Workers>,
        make_nodes: bool,
    ) -> Devices {
        Devices {
            socket,
            index,
            loader,
            seen_aliases: BTreeSet::new(),
            make_nodes,
            nodes: BTreeSet::new(),
            frozen: false,
            walked: false,
            unmatched: Vec::new(),
            disks: Disks::default(),
            ports: Ports::default(),
            loaded: 0,
            failed: 0,
        }
    }

    pub fn socket_fd(&self) -> Option<BorrowedFd<'_>> {
        self.socket.as_ref().map(AsFd::as_fd)
    }

    /// The loader workers' answer pipes, to poll.
    pub fn loader_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.loader
            .as_ref()
            .map(|l| l.fds().collect())
            .unwrap_or_default()
    }

    /// Ends idle loader workers (a payload should not see them); a later
    /// module starts new ones.
    pub fn stop_idle_loaders(&mut self) {
        if let Some(l) = self.loader.as_mut() {
            l.stop_idle();
        }
    }

    pub fn has_socket(&self) -> bool {
        self.socket.is_some()
    }

    /// Loads modules by name (`kestrel.modules=`, a frozen plan).
    pub fn request_names(&mut self, names: &[String]) {
        let requests: Vec<Request> = names.iter().cloned().map(Request::Name).collect();
        self.submit(&requests, None, URGENT);
    }

    /// Loads modules ahead of need (the root filesystem's at t=0): they
    /// run while the workers are free, after anything a device asks for.
    pub fn request_early(&mut self, names: &[String]) {
        let requests: Vec<Request> = names.iter().cloned().map(Request::Name).collect();
        self.submit(&requests, None, AHEAD_OF_NEED);
    }

    /// Loads the modules for an alias not seen before (`fs-ext4`).
    pub fn request_alias(&mut self, alias: &str) {
        if self.seen_aliases.insert(alias.as_bytes().to_vec()) {
            self.submit(&[Request::Alias(alias.to_owned())], None, URGENT);
        }
    }

    /// A frozen plan: exactly these modules (with their dependencies), on
    /// the same parallel loader, and no module for what devices ask.
    pub fn freeze(&mut self, names: &[String]) {
        self.frozen = true;
        self.request_names(names);
    }

    pub fn walked(&self) -> bool {
        self.walked
    }

    /// Walks /sys and handles every device found (the coldplug).
    pub fn walk(&mut self, sys: &dyn Sys, roots: &Roots) {
        self.walked = true;
        let before = self.seen_aliases.len();
        let mut present = BTreeSet::new();
        let mut devices = 0usize;
        // Each device is handled as the walk reads it, and the loader is
        // looked at every few devices: drivers load while the walk goes on.
        let walked = walk::walk_devices_with(&roots.sys, &mut |dev| {
            self.handle(&dev, sys, roots);
            if let Some(node) = self.node_of(&dev, roots) {
                present.insert(node);
            }
            devices += 1;
            if devices.is_multiple_of(WALK_DISPATCH_EVERY) {
                self.collect_loads();
            }
        });
        if let Err(e) = walked {
            return log::error(
                &format!("failed to walk {}: {e}", roots.sys.display()),
                false,
            );
        }
        if self.make_nodes {
            // After an overflow, devices removed meanwhile left nodes.
            for stale in self.nodes.difference(&present).cloned().collect::<Vec<_>>() {
                let _ = sys.remove_file(&stale);
                self.nodes.remove(&stale);
            }
        }
        log::emit(GuestRecord::Coldplug {
            devices: devices as u64,
            modaliases: (self.seen_aliases.len() - before) as u64,
        });
    }

    /// Learns the block devices and virtio ports that exist without
    /// walking all of /sys (a frozen plan skips discovery, but the root
    /// device and the events port must still be found).
    pub fn scan_classes(&mut self, sys: &dyn Sys, roots: &Roots) {
        self.walked = true;
        for class in ["block", "virtio-ports"] {
            let Ok(entries) = std::fs::read_dir(roots.sys.join("class").join(class)) else {
                continue;
            };
            for entry in entries.flatten() {
                // Class entries link to ../../devices/...: the devpath is
                // the link's target from `devices` on.
                let Ok(target) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                let target = target.to_string_lossy();
                let Some(at) = target.find("devices/") else {
                    continue;
                };
                let devpath = format!("/{}", target.get(at..).unwrap_or_default());
                // With SUBSYSTEM, as the walk reads it: the ports are known
                // by it (a built-in console's port is there before /init,
                // and no uevent will announce it again).
                if let Ok(ev) = walk::read_device(&roots.sys, devpath.as_bytes()) {
                    self.handle(&ev, sys, roots);
                }
            }
        }
    }

    /// Reads up to [`UEVENT_BUDGET`] uevents and handles them; an overflow
    /// re-walks /sys. Returns how many were read.
    pub fn receive(&mut self, sys: &dyn Sys, roots: &Roots) -> usize {
        let mut n = 0;
        let mut overflow = false;
        while n < UEVENT_BUDGET {
            let Some(socket) = self.socket.as_mut() else {
                break;
            };
            match socket.recv() {
                Ok(Some(ev)) => {
                    n += 1;
                    self.handle(&ev, sys, roots);
                }
                Ok(None) => break,
                Err(UeventError::Overflow) => {
                    overflow = true;
                    break;
                }
                // A broken socket is reported once per pass, never spun on.
                Err(e @ (UeventError::Socket { .. } | UeventError::Io { .. })) => {
                    log::warn(&format!("uevent socket: {e}"));
                    break;
                }
                // One bad datagram is dropped and the next read goes on.
                Err(e) => log::warn(&format!("bad uevent dropped: {e}")),
            }
        }
        if overflow {
            log::warn("the uevent socket overflowed (events were lost); walking /sys again");
            // After an overflow the kernel delivers nothing more to this
            // socket, and reports no further loss, until a read finds its
            // queue empty (netlink's congested state): a device added while
            // /sys is walked would never be announced. Empty it first.
            self.drain(sys, roots);
            self.walk(sys, roots);
        }
        n
    }

    /// Reads the socket until it is empty, handling what it holds. A
    /// congested socket does not refill, so this ends; the bound is for a
    /// storm that refills it as fast as it is read (a new overflow then
    /// re-walks again later).
    fn drain(&mut self, sys: &dyn Sys, roots: &Roots) {
        for _ in 0..OVERFLOW_DRAIN_MAX {
            let Some(socket) = self.socket.as_mut() else {
                return;
            };
            match socket.recv() {
                Ok(Some(ev)) => self.handle(&ev, sys, roots),
                Ok(None) | Err(UeventError::Socket { .. } | UeventError::Io { .. }) => return,
                // A bad datagram is dropped; the walk follows anyway.
                Err(_) => {}
            }
        }
    }

    /// One device: node, tracking, modules.
    pub fn handle(&mut self, dev: &Uevent, sys: &dyn Sys, roots: &Roots) {
        if self.make_nodes {
            self.sync_node(dev, sys, roots);
        }
        self.disks.seen(dev);
        self.ports.seen(dev);
        if dev.action() == Action::Remove || self.frozen {
            return;
        }
        // The kernel ends some netlink MODALIAS values (x86 cpu) with a
        // newline the sysfs walk does not have.
        let Some(alias) = dev
            .modalias()
            .map(<[u8]>::trim_ascii_end)
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        if !self.seen_aliases.insert(alias.to_vec()) {
            return;
        }
        let alias = String::from_utf8_lossy(alias).into_owned();
        log::debug(|| {
            format!(
                "modalias {alias} of {}",
                String::from_utf8_lossy(dev.devpath())
            )
        });
        let devpath = String::from_utf8_lossy(dev.devpath()).into_owned();
        self.submit(&[Request::Alias(alias)], Some(&devpath), URGENT);
    }

    /// Plans the requests and queues what is new. An alias no module of
    /// the initrd matches is reported for the host to explain.
    fn submit(&mut self, requests: &[Request], devpath: Option<&str>, priority: u8) {
        let Some(index) = self.index.as_ref() else {
            return;
        };
        // Lenient: one unknown name or a cycle must not cost every other
        // module of the request; what was left out is reported.
        let plan = index.plan_lenient(requests);
        for alias in report_notes(&plan) {
            match devpath {
                Some(devpath) => self.unmatched.push((alias, devpath.to_owned())),
                // What the boot asked for (a filesystem): no device to wait for.
                None => emit_unmatched(&alias, ""),
            }
        }
        if let Some(loader) = self.loader.as_mut() {
            loader.submit(&plan, priority);
        }
        // Modules loaded in PID 1 itself (no worker) are done already.
        self.collect_loads();
    }

    /// Records the loads that finished since the last call.
    pub fn collect_loads(&mut self) {
        let Some(loader) = self.loader.as_mut() else {
            return;
        };
        for ev in loader.collect() {
            if ev.outcome.is_ok() {
                self.loaded += 1;
            } else {
                self.failed += 1;
            }
            emit_load_event(&ev);
        }
    }

    /// Reports the devices no module matched that still have no driver
    /// (a built-in driver binds after the uevent that announced its
    /// device, and modules.builtin.modinfo lacks the aliases of some:
    /// the virtio console's on Debian 6.12). Called whenever no module is
    /// loading, when devices have settled, and before power off.
    pub fn report_unmatched(&mut self, roots: &Roots) {
        for (alias, devpath) in std::mem::take(&mut self.unmatched) {
            if driven(&roots.sys, &devpath) {
                log::debug(|| format!("{devpath} ({alias}): no module matches, a driver is bound"));
            } else {
                emit_unmatched(&alias, &devpath);
            }
        }
    }

    /// Nothing is loading or waiting to load.
    pub fn loads_idle(&self) -> bool {
        self.loader.as_ref().is_none_or(Workers::is_idle)
    }

    /// The device node of a uevent, inside /dev or nowhere.
    fn node_of(&self, dev: &Uevent, roots: &Roots) -> Option<PathBuf> {
        let rel = kestrel_init::devname::dev_path(dev.devname()?)?;
        Some(
            roots
                .dev
                .join(rel.strip_prefix(kestrel_init::devname::DEV).ok()?),
        )
    }

    /// Without devtmpfs: the node for an added device, removed on
    /// `remove`. Disks and everything else get 0600 unless the kernel says
    /// DEVMODE. A DEVNAME that would leave /dev is refused.
    fn sync_node(&mut self, dev: &Uevent, sys: &dyn Sys, roots: &Roots) {
        let Some(name) = dev.devname() else { return };
        let Some(path) = self.node_of(dev, roots) else {
            return log::warn(&format!(
                "refused device name {:?}: it would leave /dev",
                String::from_utf8_lossy(name)
            ));
        };
        if dev.action() == Action::Remove {
            let _ = sys.remove_file(&path);
            self.nodes.remove(&path);
            return;
        }
        let Some((major, minor)) = dev.major_minor() else {
            return;
        };
        let kind = if dev.subsystem() == Some(b"block") {
            NodeKind::Block
        } else {
            NodeKind::Char
        };
        let mode = dev.devmode().unwrap_or(0o600) & 0o777;
        if let Some(parent) = path.parent() {
            let _ = sys.mkdir_all(parent);
        }
        if self.nodes.insert(path.clone()) || !path.exists() {
            let _ = sys.remove_file(&path);
            let _ = sys.mknod(&path, kind, mode, major, minor);
        }
    }
}

fn load_index(roots: &Roots, params: &[String]) -> Option<ModuleIndex> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = roots.modules.join(&release);
    let mut config = Config::load_paths(&roots.modprobe_dirs).unwrap_or_else(|e| {
        log::warn(&format!("modprobe.d ignored: {e}"));
        Config::default()
    });
    config.apply_kernel_cmdline(params);
    match ModuleIndex::load(&dir) {
        // modules.alias is optional to kmod, but without it no device finds
        // its driver: say so, or a boot that loads nothing is unexplained.
        Ok(index) if index.alias_count() == 0 && index.module_count() > 0 => {
            log::warn(&format!(
                "{} has no aliases (missing or empty): no device will find its driver",
                dir.join("modules.alias").display()
            ));
            Some(index.with_config(config))
        }
        Ok(index) => Some(index.with_config(config)),
        // No tree at all: a kernel with its drivers built in.
        Err(e) if !dir.exists() => {
            log::debug(|| format!("no module index, relying on built-in drivers: {e}"));
            None
        }
        Err(e) => {
            log::warn(&format!(
                "the module index is unusable, no module will load: {e}"
            ));
            None
        }
    }
}

/// Whether a driver is bound to the device at `devpath` (its `driver`
/// link in /sys).
fn driven(sys: &std::path::Path, devpath: &str) -> bool {
    sys.join(devpath.trim_start_matches('/'))
        .join("driver")
        .exists()
}

/// What the planner left out: unknown names and broken cycles are
/// warnings; the aliases nothing matches are returned, for the host.
fn report_notes(plan: &Plan) -> Vec<String> {
    let mut no_match = Vec::new();
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
            PlanNote::NoMatch { alias } => no_match.push(alias.clone()),
            PlanNote::Builtin { module, .. } => log::debug(|| format!("{module} is built in")),
            PlanNote::Blacklisted { module, request }
            | PlanNote::KernelBlacklisted { module, request } => {
                log::debug(|| format!("{module} ({request}) is blacklisted"))
            }
        }
    }
    no_match
}

fn emit_unmatched(modalias: &str, devpath: &str) {
    log::emit(GuestRecord::Unmatched {
        modalias: modalias.to_owned(),
        devpath: devpath.to_owned(),
    });
}

/// ENODEV from a module means it found nothing to drive (a CPU without
/// the feature, like crc32c_intel without SSE4.2): normal, and silent, as
/// with modprobe. Every other failure is a warning.
fn is_quiet_failure(e: &LoadError) -> bool {
    e.raw_os_error() == Some(libc::ENODEV)
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
    if let Err(e) = &ev.outcome {
        if !is_quiet_failure(e) {
            log::warn(&e.to_string());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};
    use kestrel_modules::loader::Inserter;
    use kestrel_modules::PlanEntry;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// The real guest captured by uevent/tests/fixtures/capture.sh: q35's
    /// sibling `pc` with a virtio disk, console port and rng.
    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../uevent/tests/fixtures/guest-pc")
    }

    /// The installed Debian 6.1 module tree, the one the fixture's guest ran.
    fn debian_61_index() -> Option<ModuleIndex> {
        let mut trees: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                n.starts_with("6.1.") && n.ends_with("-amd64") && !n.contains("cloud")
            })
            .collect();
        trees.sort();
        ModuleIndex::load(&trees.pop()?).ok()
    }

    /// Records what it is asked to load; every load succeeds.
    struct Loads(Arc<Mutex<Vec<String>>>);

    impl Inserter for Loads {
        fn insert(&self, entry: &PlanEntry) -> Result<Loaded, LoadError> {
            self.0.lock().unwrap().push(entry.name.clone());
            Ok(Loaded::Inserted)
        }
    }

    /// The captured guest's /sys with a Debian 6.1 index and a loader
    /// that only records names.
    struct Captured {
        d: Devices,
        loads: Arc<Mutex<Vec<String>>>,
        roots: Roots,
        sys: Recorder,
    }

    fn captured() -> Option<Captured> {
        let index = debian_61_index()?;
        let loads = Arc::new(Mutex::new(Vec::new()));
        let loader = Workers::inline(Loads(loads.clone()));
        Some(Captured {
            d: Devices::new(None, Some(index), Some(loader), false),
            loads,
            roots: Roots {
                sys: fixture().join("sys"),
                ..Roots::under(Path::new("/nonexistent"))
            },
            sys: Recorder::default(),
        })
    }

    fn settle(d: &mut Devices) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.loads_idle() {
            assert!(Instant::now() < deadline, "loads never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        d.collect_loads();
    }

    fn hotplug(d: &mut Devices, sys: &dyn Sys, roots: &Roots) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixture().join("modules"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let ev = kestrel_uevent::parse_netlink(std::fs::read(f).unwrap().into()).unwrap();
            d.handle(&ev, sys, roots);
        }
    }

    /// The coldplug of a real guest asks for virtio_pci (its virtio PCI
    /// functions); the hotplug stream of loading it (captured) asks for
    /// the drivers of the devices it made, and the disk and the port are
    /// tracked. Nothing is loaded twice.
    #[test]
    fn a_captured_guest_asks_for_its_drivers_as_devices_appear() {
        let Some(Captured {
            mut d,
            loads,
            roots,
            sys,
        }) = captured()
        else {
            return eprintln!("SKIP: no Debian 6.1 module tree in /lib/modules");
        };
        d.walk(&sys, &roots);
        settle(&mut d);
        assert!(
            loads.lock().unwrap().contains(&"virtio_pci".to_owned()),
            "{:?}",
            loads.lock().unwrap()
        );
        hotplug(&mut d, &sys, &roots);
        settle(&mut d);
        let loads = loads.lock().unwrap().clone();
        for m in ["virtio_pci", "virtio_blk", "virtio_console", "virtio_rng"] {
            assert!(loads.iter().any(|l| l == m), "{m} not loaded: {loads:?}");
        }
        let mut unique = loads.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            loads.len(),
            "a module loaded twice: {loads:?}"
        );
        assert_eq!(d.failed, 0);
        assert!(
            sys.calls().is_empty(),
            "devtmpfs makes the nodes: {:?}",
            sys.calls()
        );
    }

    /// A device is driven when /sys links it to a driver (a built-in
    /// one, whose aliases the index may lack).
    #[test]
    fn a_bound_driver_makes_a_device_driven() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = sys.join("devices/platform/LNRO0005:00/virtio0");
        let drv = sys.join("bus/virtio/drivers/virtio_console");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&drv).unwrap();
        std::os::unix::fs::symlink(
            "../../../../bus/virtio/drivers/virtio_console",
            dev.join("driver"),
        )
        .unwrap();
        assert!(driven(&sys, "/devices/platform/LNRO0005:00/virtio0"));
        assert!(!driven(&sys, "/devices/platform/LNRO0005:00"));
        // A link to a driver that is gone (unbound meanwhile) drives nothing.
        std::fs::remove_dir(&drv).unwrap();
        assert!(!driven(&sys, "/devices/platform/LNRO0005:00/virtio0"));
    }

    /// Without devtmpfs the init makes the nodes itself, inside /dev only,
    /// and removes them when the device goes.
    #[test]
    fn without_devtmpfs_nodes_follow_the_uevents() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            sys: fixture().join("sys"),
            ..Roots::under(dir.path())
        };
        std::fs::create_dir_all(&roots.dev).unwrap();
        let mut d = Devices::new(None, None, None, true);
        let sys = Recorder::default();
        hotplug(&mut d, &sys, &roots);
        let vda = roots.dev.join("vda");
        assert!(sys.calls().contains(&Call::Mknod {
            path: vda.clone(),
            kind: NodeKind::Block,
            mode: 0o600,
            major: 254,
            minor: 0
        }));
        assert!(sys.calls().iter().any(|c| matches!(c, Call::Mknod { path, kind: NodeKind::Char, .. } if path.ends_with("vport1p1"))));
        let evil = "add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=misc\0DEVNAME=../etc/passwd\0MAJOR=1\0MINOR=3\0SEQNUM=9\0";
        d.handle(
            &kestrel_uevent::parse_netlink(evil.as_bytes().to_vec().into()).unwrap(),
            &sys,
            &roots,
        );
        assert!(!sys
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Mknod { path, .. } if !path.starts_with(&roots.dev))));
        let gone = "remove@/devices/pci0000:00/0000:00:02.0/virtio0/block/vda\0ACTION=remove\0DEVPATH=/devices/pci0000:00/0000:00:02.0/virtio0/block/vda\0SUBSYSTEM=block\0DEVNAME=vda\0MAJOR=254\0MINOR=0\0SEQNUM=99\0";
        d.handle(
            &kestrel_uevent::parse_netlink(gone.as_bytes().to_vec().into()).unwrap(),
            &sys,
            &roots,
        );
        assert!(!vda.exists());
        assert_eq!(sys.calls().last(), Some(&Call::RemoveFile(vda)));
    }

    /// A frozen plan loads what it names and nothing devices ask for.
    #[test]
    fn a_frozen_plan_loads_nothing_for_devices() {
        let Some(Captured {
            mut d,
            loads,
            roots,
            sys,
        }) = captured()
        else {
            return eprintln!("SKIP: no Debian 6.1 module tree in /lib/modules");
        };
        d.freeze(&["virtio_blk".to_owned()]);
        d.walk(&sys, &roots);
        hotplug(&mut d, &sys, &roots);
        settle(&mut d);
        let mut loads = loads.lock().unwrap().clone();
        loads.sort();
        assert_eq!(
            loads,
            ["virtio", "virtio_blk", "virtio_ring"],
            "virtio_blk and its dependencies only"
        );
    }
}
