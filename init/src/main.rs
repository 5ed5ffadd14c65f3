//! kestrel-init: PID 1 of a Kestrel initramfs. `main` is the boot plan,
//! one call per phase; the phases live in their own modules, and every
//! wait is the one event loop (eventloop.rs) with a condition and a
//! deadline. It never panics on purpose and never exits: every error is
//! reported on the events port and the console, then the machine powers
//! off with a failure status (or starts a shell when asked to).

mod devices;
mod disks;
mod eventloop;
mod kmsg;
mod log;
mod mounts;
mod net;

mod payload;
mod ports;
mod root;
mod roots;
mod shares;

mod shutdown;
mod stdio;
mod sys;
mod workers;

use devices::{DeviceOptions, Devices};
use eventloop::Init;
use kestrel_proto::cmdline::{self, opt, BootOptions};
use kestrel_proto::config::{self, Config};
use kestrel_proto::{GuestRecord, EVENTS_PORT};
use roots::Roots;
use std::path::Path;
use std::time::{Duration, Instant};

/// The status for a boot that failed before or outside the payload.
const STATUS_BOOT_FAILED: i32 = 1;
const EMERGENCY_SHELL: &str = "/bin/sh";

#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("bad kernel command line: {0}")]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error("bad baked config {path}: {source}")]
    BadConfig {
        path: &'static str,
        source: config::ConfigError,
    },
    #[error("the events port {EVENTS_PORT} did not appear within {waited:?} (ports seen: [{seen}]; modules loaded: {loaded}, failed: {failed}); the host attached it ({})", opt::EVENTS)]
    NoPort {
        waited: Duration,
        seen: String,
        loaded: usize,
        failed: usize,
    },
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    #[error(transparent)]
    Root(#[from] root::RootError),
    #[error(transparent)]
    Share(#[from] shares::ShareError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("nothing to do: the initrd has no payload and no root= was given")]
    NothingToDo,
}

impl InitError {
    fn status(&self) -> i32 {
        match self {
            InitError::Payload(p) => p.status(),
            _ => STATUS_BOOT_FAILED,
        }
    }
}

fn main() {
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        log::console_line("kestrel-init must run as PID 1 (it is the init of a Kestrel initramfs)");
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        log::error(&format!("init panicked: {info}"), true);
        shutdown::emergency_power_off(STATUS_BOOT_FAILED);
    }));
    log::emit(GuestRecord::InitStart {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    let sys = sys::Kernel;
    let roots = Roots::live();
    stdio::ensure();
    let mounted = match mounts::mount_early(&sys, &roots) {
        Ok(m) => m,
        Err(e) => {
            log::error(&e.to_string(), true);
            shutdown::emergency_power_off(STATUS_BOOT_FAILED);
        }
    };
    stdio::ensure();
    // Ctrl-Alt-Del becomes SIGINT to PID 1 (forwarded to the payload)
    // instead of an immediate reboot.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
    let (opts, bad_cmdline) = read_boot_options(&roots);
    let mut init = start(&sys, roots, opts, mounted.make_nodes);
    let result = match bad_cmdline {
        Some(e) => Err(e),
        None => boot(&mut init),
    };
    let status = result.unwrap_or_else(|e| fail(&mut init, &e));
    shutdown::finish(&mut init, status, &mounted.targets);
}

/// Phases 2-3: where records go, signals, the device pipeline.
fn start<'a>(sys: &'a sys::Kernel, roots: Roots, opts: BootOptions, make_nodes: bool) -> Init<'a> {
    log::set_mode(if opts.events {
        log::Mode::Port
    } else {
        log::Mode::Console(if opts.trace {
            log::Lines::Milestones
        } else {
            log::Lines::Off
        })
    });
    log::set_verbose(opts.debug);
    // Before any thread starts, so every thread inherits the blocked mask.
    let signals = sys::signalfd()
        .map_err(|e| log::error(&format!("failed to set up signal handling: {e}"), false))
        .ok();
    let params: Vec<String> = opts.params.iter().map(ToString::to_string).collect();
    let devices = Devices::start(
        &roots,
        DeviceOptions {
            threads: opts.threads,
            make_nodes,
            params,
            uevent_buffer: opts.uevent_buffer,
        },
    );
    // The kernel log goes over the port only: the console already has it.
    let kmsg = if opts.events {
        kmsg::Kmsg::open(&roots.dev)
    } else {
        None
    };
    let mut init = Init::new(sys, roots, opts, devices);
    init.signals = signals;
    init.kmsg = kmsg;
    init
}

/// Phases 3-7; returns the status the host reports.
fn boot(init: &mut Init) -> Result<i32, InitError> {
    let baked = read_config(&init.roots)?;
    hang_if_asked(init, "modules");
    discover(init, &baked);
    match (&baked.payload, init.opts.root.device.clone()) {
        (Some(payload), _) => {
            wait_until_ready(init)?;
            hang_if_asked(init, "payload");
            run_payload(init, payload, &baked)
        }
        (None, Some(spec)) => Err(hand_over_to_root(init, &spec)),
        (None, None) => Err(InitError::NothingToDo),
    }
}

/// Phases 3-4: the root filesystem's modules first (they are the longest
/// chain), then what devices ask for, or the frozen plan.
fn discover(init: &mut Init, baked: &Config) {
    if init.opts.root.device.is_some() && baked.payload.is_none() {
        match init.opts.root.fstype.clone() {
            Some(fstype) => init.devices.request_alias(&format!("fs-{fstype}")),
            None => init.devices.request_early(&baked.early),
        }
    }
    match (
        init.opts.plan.clone().or_else(|| baked.plan.clone()),
        &baked.known_devices,
    ) {
        (Some(plan), _) => {
            init.devices.freeze(&plan);
            init.devices.scan_classes(init.sys, &init.roots);
        }
        // The host made this machine: its devices' drivers load at once,
        // and no walk of /sys looks for what is known (on one vCPU under
        // TCG the walk cost as much as the loads). Later devices are
        // discovered from their uevents.
        (None, Some(devices)) => {
            init.devices.request_names(devices);
            init.devices.scan_classes(init.sys, &init.roots);
        }
        (None, None) => init.devices.walk(init.sys, &init.roots),
    }
    // The shares' filesystems (and the overlay of a host root), early.
    for fs in shares::filesystems(baked) {
        init.devices.request_alias(&format!("fs-{fs}"));
    }
    let extra = init.opts.modules.clone();
    if !extra.is_empty() {
        init.devices.request_names(&extra);
    }
}

/// Waits for what the hand-over needs: the events port when the host
/// attached one, and devices settled (every module asked for has loaded).
fn wait_until_ready(init: &mut Init) -> Result<(), InitError> {
    let start = Instant::now();
    let deadline = start + init.opts.timeout;
    let expect_port = init.opts.events;
    let ready = init.run_until(Some(deadline), |i| {
        (!expect_port || i.open_port()) && i.settled()
    });
    init.devices.report_unmatched(&init.roots);
    if expect_port && init.port.is_none() {
        let seen: Vec<String> = init
            .devices
            .ports
            .named(&init.roots)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        return Err(InitError::NoPort {
            waited: start.elapsed(),
            seen: seen.join(", "),
            loaded: init.devices.loaded,
            failed: init.devices.failed,
        });
    }
    if !ready {
        log::warn(&format!(
            "devices did not settle within {:?}: modules are still loading",
            init.opts.timeout
        ));
    }
    init.devices.disks.refresh(&init.roots);
    init.devices.disks.make_links(init.sys, &init.roots);
    // The hand-over should not see loader workers; a later module forks one.
    init.devices.stop_idle_loaders();
    log::emit(GuestRecord::Ready);
    Ok(())
}

/// Run mode: the payload's world (loopback, shares, its root, the
/// network), then the payload, served by the event loop until it has
/// exited and its output is out.
fn run_payload(init: &mut Init, spec: &config::Payload, baked: &Config) -> Result<i32, InitError> {
    net::loopback_up();
    let root = shares::prepare(init.sys, &init.roots, baked)?;
    if let Some(config) = &baked.net {
        let iface = net::configure(
            &init.roots,
            config,
            root.as_deref().unwrap_or(&init.roots.top),
        )?;
        log::debug(|| format!("{iface} configured"));
    }
    init.payload = Some(payload::start(spec, init.port.is_some(), root.as_deref())?);
    init.run_until(None, |i| {
        i.payload.as_ref().is_some_and(payload::Running::finished)
    });
    let status = init.payload.as_ref().and_then(|p| p.status);
    let (code, signal) = status.map_or((STATUS_BOOT_FAILED, None), payload::exit_code);
    log::emit(GuestRecord::PayloadExit {
        status: code,
        signal,
    });
    Ok(code)
}

/// Root mode: mount the root and exec its init; returns only on failure.
fn hand_over_to_root(init: &mut Init, spec: &cmdline::RootSpec) -> InitError {
    if let Err(e) = root::mount_root(init, spec) {
        return e.into();
    }
    let wanted = init
        .opts
        .root
        .init
        .clone()
        .unwrap_or_else(|| root::DEFAULT_INIT.to_owned());
    let real_init = match root::find_init(&init.roots.new_root, &wanted) {
        Ok(path) => path,
        Err(e) => return e.into(),
    };
    if let Err(e) = wait_until_ready(init) {
        return e;
    }
    hang_if_asked(init, "payload");
    // Records must be out before the exec ends this process's buffers.
    log::flush_until(Instant::now() + Duration::from_secs(2));
    if let Err(e) = root::enter_new_root(init.sys, &init.roots, &real_init) {
        return e.into();
    }
    log::flush_until(Instant::now() + Duration::from_secs(2));
    // The kernel hands init the words after `--`; they are the real init's.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    root::exec_init(&real_init, &args).into()
}

/// Reports a failure; with `kestrel.shell`, a shell before power off. The
/// events port gets a bounded chance to open so the host hears of it.
fn fail(init: &mut Init, e: &InitError) -> i32 {
    if init.opts.events && !matches!(e, InitError::NoPort { .. }) {
        // The port's driver may be a module no one asked for yet (the
        // failure came before discovery).
        if !init.devices.walked() {
            init.devices.walk(init.sys, &init.roots);
        }
        let deadline = Instant::now() + init.opts.timeout;
        init.run_until(Some(deadline), Init::open_port);
    }
    if init.opts.events && init.port.is_none() {
        // The port never came: every record, this error and the power
        // off's included, goes to the console, where the host reads too.
        log::set_mode(log::Mode::Console(log::Lines::All));
    }
    log::error(&e.to_string(), true);
    if init.opts.shell_on_failure {
        emergency_shell();
    }
    e.status()
}

/// The command line; a bad option is reported once the records can reach
/// the host (whether the port is attached is still read from it).
fn read_boot_options(roots: &Roots) -> (BootOptions, Option<InitError>) {
    let path = roots.proc.join("cmdline");
    let line = match std::fs::read(&path) {
        Ok(line) => line,
        Err(source) => {
            return (
                BootOptions::default(),
                Some(InitError::Read {
                    path: path.display().to_string(),
                    source,
                }),
            )
        }
    };
    match cmdline::parse_boot_options(&line) {
        Ok(opts) => (opts, None),
        Err(e) => {
            let events = cmdline::tokenize(&line)
                .iter()
                .any(|p| p.key == opt::EVENTS);
            (
                BootOptions {
                    events,
                    ..BootOptions::default()
                },
                Some(e.into()),
            )
        }
    }
}

/// The baked config: the base archive's part and the run archive's part,
/// merged. A missing file is an empty part.
fn read_config(roots: &Roots) -> Result<Config, InitError> {
    use std::io::Read;
    let mut cfg = Config::default();
    for path in [config::BASE_CONFIG, config::RUN_CONFIG] {
        let file = match std::fs::File::open(roots.in_top(path)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(InitError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mut text = Vec::new();
        file.take(config::MAX_CONFIG as u64)
            .read_to_end(&mut text)
            .map_err(|source| InitError::Read {
                path: path.to_owned(),
                source,
            })?;
        cfg.merge(&text)
            .map_err(|source| InitError::BadConfig { path, source })?;
    }
    Ok(cfg)
}

/// `kestrel.hang=PHASE`: stop before PHASE forever, still serving the
/// event loop. A test hook, so the host's timeout handling is tested
/// against a really hung guest.
fn hang_if_asked(init: &mut Init, phase: &str) {
    if init.opts.hang.as_deref() == Some(phase) {
        log::warn(&format!("kestrel.hang={phase}: stopping here as asked"));
        if init.opts.events {
            let deadline = Instant::now() + init.opts.timeout;
            init.run_until(Some(deadline), Init::open_port);
        }
        init.run_until(None, |_| false);
    }
}

/// `kestrel.shell`: an interactive shell on the console before power off.
fn emergency_shell() {
    if !Path::new(EMERGENCY_SHELL).exists() {
        log::warn(&format!("kestrel.shell: no {EMERGENCY_SHELL} here"));
        return;
    }
    log::console_line(&format!(
        "kestrel: starting {EMERGENCY_SHELL}; exit it to power off"
    ));
    let shell = c"/bin/sh";
    let env = [
        c"HOME=/".to_owned(),
        c"TERM=linux".to_owned(),
        c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    ];
    let started = sys::spawn(&sys::Spawn {
        program: shell,
        argv: &[shell.to_owned()],
        envp: &env,
        root: None,
        cwd: None,
        user: None,
        stdio: [None, None, None],
        session: sys::Session::Console,
    });
    match started {
        Ok(pid) => {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
        Err(e) => log::warn(&format!("failed to start {EMERGENCY_SHELL}: {e}")),
    }
}
