//! kestrel-init: PID 1 of a Kestrel initramfs. `main` is the boot plan, one
//! call per phase; the phases live in their own modules. It never panics
//! on purpose and never exits: every error is reported on the events port
//! and the console, then the machine powers off with a failure status.

mod devices;
mod disks;
mod hostin;
mod kmsg;
mod log;
mod mounts;
mod payload;
mod ports;
mod root;
mod shutdown;
mod stdio;
mod sys;

use kestrel_proto::cmdline::{self, BootOptions};
use kestrel_proto::config::{self, Config};
use kestrel_proto::{GuestRecord, EVENTS_PORT};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The status for a boot that failed before or outside the payload.
const STATUS_BOOT_FAILED: i32 = 1;
const KERNEL_CMDLINE: &str = "/proc/cmdline";
const EMERGENCY_SHELL: &str = "/bin/sh";

#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("failed to read {KERNEL_CMDLINE}: {0}")]
    ReadCmdline(std::io::Error),
    #[error("bad kernel command line: {0}")]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error("failed to set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    #[error(transparent)]
    Root(#[from] root::RootError),
    #[error("failed to read {path}: {source}")]
    ReadConfig {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("bad baked config {path}: {source}")]
    BadConfig {
        path: &'static str,
        source: config::ConfigError,
    },
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
        eprintln!("kestrel-init must run as PID 1 (it is the init of a Kestrel initramfs)");
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        log::error(&format!("init panicked: {info}"), true);
        shutdown::power_off(STATUS_BOOT_FAILED, &[]);
    }));
    let mut mounted = Vec::new();
    let status = boot(&mut mounted).unwrap_or_else(|e| {
        log::error(&e.to_string(), true);
        e.status()
    });
    shutdown::power_off(status, &mounted);
}

/// Phases 1-7; returns the status the host reports.
fn boot(mounted: &mut Vec<&'static str>) -> Result<i32, InitError> {
    log::emit(GuestRecord::InitStart {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    stdio::ensure();
    let (early, make_nodes) = mounts::mount_early()?;
    *mounted = early;
    stdio::ensure();
    // Ctrl-Alt-Del becomes SIGINT to PID 1 (forwarded to the payload)
    // instead of an immediate reboot.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
    let mut kmsg = kmsg::Kmsg::open();
    forward_kmsg(&mut kmsg);
    let opts = read_boot_options()?;
    log::set_verbose(opts.debug);
    let baked = read_config()?;
    // Before any thread starts, so every thread inherits the blocked mask.
    let signals = sys::signalfd().map_err(InitError::Signals)?;

    hang_if_asked(&opts, "modules");
    let params: Vec<String> = opts.params.iter().map(ToString::to_string).collect();
    let mut devices = devices::Devices::start(opts.threads, make_nodes, &params);
    match opts.plan.as_ref().or(baked.plan.as_ref()) {
        Some(plan) => devices.load_frozen(plan),
        None => devices.coldplug(),
    }
    if !opts.modules.is_empty() {
        devices.request_modules(&opts.modules);
    }
    wait_for_events_port(&opts, &mut devices, &mut kmsg);
    forward_kmsg(&mut kmsg);
    log::emit(GuestRecord::Ready);

    hang_if_asked(&opts, "payload");
    let result = match (&baked.payload, &opts.root.device) {
        (Some(spec), _) => {
            payload::run(spec, &signals, &mut kmsg, &mut devices).map_err(InitError::from)
        }
        (None, Some(spec)) => Err(hand_over_to_root(&opts, spec, &mut devices, &mut kmsg)),
        (None, None) => Err(InitError::NothingToDo),
    };
    forward_kmsg(&mut kmsg);
    match result {
        Err(e) if opts.shell_on_failure => {
            log::error(&e.to_string(), true);
            emergency_shell();
            Ok(e.status())
        }
        other => other,
    }
}

/// Root mode: mount the root and exec its init; returns only on failure.
fn hand_over_to_root(
    opts: &BootOptions,
    spec: &cmdline::RootSpec,
    devices: &mut devices::Devices,
    kmsg: &mut Option<kmsg::Kmsg>,
) -> InitError {
    if let Err(e) = root::mount_root(&opts.root, spec, devices, opts.timeout) {
        return e.into();
    }
    forward_kmsg(kmsg);
    // The kernel hands init the words after `--`; they are the real init's.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    root::switch_root(&opts.root, &args).into()
}

/// The baked config: the base archive's part and the run archive's part,
/// merged. A missing file is an empty part.
fn read_config() -> Result<Config, InitError> {
    use std::io::Read;
    let mut cfg = Config::default();
    for path in [config::BASE_CONFIG, config::RUN_CONFIG] {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(InitError::ReadConfig { path, source }),
        };
        let mut text = Vec::new();
        file.take(config::MAX_CONFIG as u64)
            .read_to_end(&mut text)
            .map_err(|source| InitError::ReadConfig { path, source })?;
        cfg.merge(&text)
            .map_err(|source| InitError::BadConfig { path, source })?;
    }
    Ok(cfg)
}

fn read_boot_options() -> Result<BootOptions, InitError> {
    let line = std::fs::read(KERNEL_CMDLINE).map_err(InitError::ReadCmdline)?;
    Ok(cmdline::parse_boot_options(&line)?)
}

fn forward_kmsg(kmsg: &mut Option<kmsg::Kmsg>) {
    if let Some(k) = kmsg.as_mut() {
        k.forward();
    }
}

/// Waits for the events port, handling uevents (and so module loads) while
/// it waits. A missing port is not fatal: the records then go out over the
/// console, which is slower but loses nothing.
fn wait_for_events_port(
    opts: &BootOptions,
    devices: &mut devices::Devices,
    kmsg: &mut Option<kmsg::Kmsg>,
) {
    let deadline = Instant::now() + opts.timeout;
    loop {
        let found = ports::list_ports(Path::new(ports::VIRTIO_PORTS_CLASS));
        if let Some((_, dev)) = found.iter().find(|(name, _)| name == EVENTS_PORT) {
            ports::link_ports(&found);
            // Non-blocking: a host that stops reading must not hang PID 1
            // (see log::write_port).
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(dev)
            {
                Ok(port) => {
                    log::attach_port(port);
                    log::emit(GuestRecord::PortOpen {
                        name: EVENTS_PORT.to_owned(),
                        dev: dev.display().to_string(),
                    });
                }
                Err(e) => log::warn(&format!("failed to open {}: {e}", dev.display())),
            }
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let seen: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
            log::warn(&format!(
                "the events port {EVENTS_PORT} did not appear within {:?} (ports seen: [{}]; modules loaded: {}, failed: {}); events go to the console",
                opts.timeout,
                seen.join(", "),
                devices.loaded,
                devices.failed
            ));
            log::use_console();
            return;
        }
        // Sleep until a uevent (the port's name arrives as a `change`) or a
        // short tick, for kernels that send none.
        devices.wait_and_handle(left.min(Duration::from_millis(20)));
        forward_kmsg(kmsg);
    }
}

/// `kestrel.hang=PHASE`: stop before PHASE forever. A test hook, so the
/// host's timeout handling is tested against a really hung guest.
fn hang_if_asked(opts: &BootOptions, phase: &str) {
    if opts.hang.as_deref() == Some(phase) {
        log::warn(&format!("kestrel.hang={phase}: stopping here as asked"));
        log::use_console();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// `kestrel.shell`: an interactive shell on the console before power off.
fn emergency_shell() {
    if !Path::new(EMERGENCY_SHELL).exists() {
        log::warn(&format!(
            "kestrel.shell: no {EMERGENCY_SHELL} in the initrd"
        ));
        return;
    }
    eprintln!("kestrel: starting {EMERGENCY_SHELL}; exit it to power off");
    let mut shell = std::process::Command::new(EMERGENCY_SHELL);
    sys::console_session(&mut shell);
    match shell.status() {
        Ok(_) => {}
        Err(e) => log::warn(&format!("failed to start {EMERGENCY_SHELL}: {e}")),
    }
}
