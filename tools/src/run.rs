//! `kestrel run`: everything that can fail on the host checked first, the
//! initrd built (or its base reused), one boot, and the boot turned into
//! an exit status.

use crate::bootlog::BootLog;
use crate::build::{self, BuildOptions, Initrd, Payload};
use crate::cache::open_cache;
use crate::drivers::{missing_drivers, MissingDriver};
use crate::kernel::{self, Kernel};
use crate::machine::Machine;
use crate::qemu::{self, Accel, VmConfig};
use crate::share::{self, FsChoice, ShareSpec};
use crate::signals::{self, SignalGuard};
use crate::virtiofsd::{self, Daemon};
use crate::vm::{self, Boot, Sink, StdinSource};
use anyhow::{Context, Result};
use kestrel_modules::ModuleIndex;
use kestrel_proto::config::{Net, User};
use kestrel_proto::{GuestKind, GuestRecord};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit status when the guest did not finish in time (as timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status when Kestrel itself failed (as `docker run`).
pub const EXIT_HARNESS: i32 = 125;
/// Exit status when the record stream from the guest was damaged
/// (malformed frames, records the guest had to drop): the payload's
/// output cannot be trusted whole, so its own status is not reported.
pub const EXIT_STREAM: i32 = 123;

/// How qemu runs the machine.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// The kernel image (see `kernel::choose_kernel` for the default).
    pub kernel: Option<PathBuf>,
    /// Boot the extracted PVH vmlinux when the kernel has one.
    pub pvh: bool,
    pub accel: Accel,
    pub memory_mb: u32,
    /// vCPUs; 0 = the measured default for the accelerator (see
    /// [`qemu::default_cpus`]).
    pub cpus: u32,
    /// Extra kernel command line: any bytes.
    pub append: OsString,
    pub quiet: bool,
    /// Kestrel's kernel speed options ([`qemu::FAST_KERNEL_OPTIONS`]).
    pub speedups: bool,
    /// The run is killed when it takes longer.
    pub timeout: Duration,
    pub qemu_args: Vec<OsString>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            kernel: None,
            pvh: true,
            accel: Accel::Auto,
            memory_mb: 512,
            cpus: 0,
            append: OsString::new(),
            quiet: true,
            speedups: true,
            timeout: Duration::from_secs(120),
            qemu_args: Vec::new(),
        }
    }
}

/// Where the payload's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// To our stdout and stderr as it arrives.
    #[default]
    Stream,
    /// Kept and returned in [`RunOutcome`].
    Capture,
    /// Counted only.
    Discard,
}

/// The payload's environment and its I/O.
#[derive(Debug, Clone, Default)]
pub struct IoOptions {
    /// `KEY=VALUE` entries over the default environment (see
    /// [`payload_env`]).
    pub env: Vec<OsString>,
    pub cwd: Option<OsString>,
    /// The payload's stdin (default /dev/null).
    pub stdin: Option<StdinSource>,
    pub output: OutputMode,
    /// The payload gets the serial console, wired to our terminal.
    pub interactive: bool,
    /// Run the payload as this user; None: the invoking user's ids when
    /// the VM shares folders (files it writes are ours), else root.
    pub user: Option<User>,
}

/// Host folders for the guest.
#[derive(Debug, Clone, Default)]
pub struct ShareOptions {
    /// `--share HOST[:GUEST][,rw]`.
    pub specs: Vec<ShareSpec>,
    /// `--root host`: the host's root, read-only under a tmpfs overlay,
    /// is the payload's root.
    pub host_root: bool,
    /// virtio-fs or 9p (`--share-fs`).
    pub fs: FsChoice,
}

/// The address qemu's user network gives a guest, its gateway (which is
/// also the host's 127.0.0.1) and its DNS server.
pub const USER_NET: Net = Net {
    addr: [10, 0, 2, 15],
    prefix: 24,
    gateway: [10, 0, 2, 2],
    dns: [10, 0, 2, 3],
};

/// The payload's PATH when the host gives none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What a payload on the host's root takes from our environment by
/// default: enough for the host's programs (and shims such as pyenv's) to
/// find their way.
const HOST_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM"];

/// Everything about one run, by concern.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The machine and its devices: what qemu emulates and what the
    /// initrd carries drivers for.
    pub machine: Machine,
    pub build: BuildOptions,
    pub vm: VmOptions,
    pub io: IoOptions,
    pub shares: ShareOptions,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    pub exit_code: i32,
    /// Why the run failed, when it did not end with the payload's status.
    pub failure: Option<String>,
    /// The payload's output, with [`OutputMode::Capture`] only.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub log: BootLog,
    pub kernel: Kernel,
    /// Devices whose driver the initrd lacks (see [`crate::drivers`]).
    pub missing_drivers: Vec<MissingDriver>,
}

/// The kernel of a run (chosen, read, its PVH vmlinux cached).
pub fn load_kernel(opts: &RunOptions) -> Result<Kernel> {
    kernel::load_kernel(opts.vm.kernel.as_deref(), &open_cache()?, opts.vm.pvh)
}

/// What a run needs from the host, found before anything is built.
struct Host {
    payload: Option<Payload>,
    kernel: Kernel,
    qemu: PathBuf,
    accel: Accel,
    /// The machine with its shares planned.
    machine: Machine,
    virtiofsd: Option<Daemon>,
}

/// Everything that can fail on the host fails here, before qemu starts.
fn check_host(argv: &[OsString], opts: &RunOptions) -> Result<Host> {
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    // A missing program is the first thing said.
    let program = if argv.is_empty() {
        None
    } else {
        Some(build::resolve_payload(argv)?)
    };
    let kernel = load_kernel(opts)?;
    kernel.report_once();
    let (machine, virtiofsd) = plan_shares(opts, &cwd, &kernel)?;
    let payload = program
        .map(|p| plan_payload(p, opts, &machine, &cwd))
        .transpose()?;
    let qemu = qemu::find_qemu()?;
    let accel = qemu::pick_accel(opts.vm.accel);
    Ok(Host {
        payload,
        kernel,
        qemu,
        accel,
        machine,
        virtiofsd,
    })
}

/// The machine with the run's shares, their transport chosen for the
/// host and the kernel (said once per process on stderr).
fn plan_shares(
    opts: &RunOptions,
    cwd: &Path,
    kernel: &Kernel,
) -> Result<(Machine, Option<Daemon>)> {
    let mut machine = opts.machine.clone();
    let asked = &opts.shares;
    if asked.specs.is_empty() && !asked.host_root {
        return Ok((machine, None));
    }
    let root = rustix::process::geteuid().is_root();
    let daemon = virtiofsd::find();
    let lacks = match (&daemon, asked.fs) {
        (Some(_), FsChoice::Auto) => {
            build::kernel_lacks(&opts.build, kernel, share::VIRTIOFS_MODULES)?
        }
        _ => Vec::new(),
    };
    let read_only = asked.host_root || asked.specs.iter().any(|s| !s.writable);
    let transport = share::choose_transport(asked.fs, daemon, root, read_only, &lacks)?;
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("{}", transport.why));
    machine.shares.extend(share::plan(
        &asked.specs,
        asked.host_root,
        transport.fs,
        cwd,
    )?);
    Ok((machine, transport.daemon))
}

/// The payload resolved on the host, with its world: environment,
/// working directory (kept when it is inside a share), user, shares,
/// network.
fn plan_payload(
    resolved: Payload,
    opts: &RunOptions,
    machine: &Machine,
    cwd: &Path,
) -> Result<Payload> {
    let (shares, host_root) = share::baked(&machine.shares);
    let guest_cwd = opts
        .io
        .cwd
        .clone()
        .or_else(|| share::guest_cwd(&machine.shares, cwd).map(PathBuf::into_os_string));
    let user = match &opts.io.user {
        Some(u) => Some(u.clone()),
        None if !machine.shares.is_empty() => Some(invoking_user()?),
        None => None,
    };
    Ok(Payload {
        env: payload_env(&opts.io.env, host_root.is_some(), |k| std::env::var_os(k)),
        cwd: guest_cwd,
        console: opts.io.interactive,
        stdin: opts.io.stdin.is_some(),
        user,
        shares,
        host_root,
        net: machine.net.then_some(USER_NET),
        ..resolved
    })
}

/// Our real uid, gid and supplementary groups.
pub fn invoking_user() -> Result<User> {
    let groups = rustix::process::getgroups().context("failed to read our groups")?;
    Ok(User {
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
    })
}

/// The payload's environment: `given` (`KEY=VALUE`) over a base. On the
/// host's root the base is ours for [`HOST_ENV`] (PATH always); else,
/// when nothing is given, empty (the init's default: a standard PATH,
/// HOME=/, TERM=linux), and when something is, that default spelt out.
fn payload_env(
    given: &[OsString],
    host_world: bool,
    host_var: impl Fn(&str) -> Option<OsString>,
) -> Vec<OsString> {
    if given.is_empty() && !host_world {
        return Vec::new();
    }
    let mut env: Vec<OsString> = if host_world {
        HOST_ENV
            .iter()
            .filter_map(|k| {
                let v = host_var(k)?;
                let mut e = OsString::from(format!("{k}="));
                e.push(v);
                Some(e)
            })
            .collect()
    } else {
        vec!["HOME=/".into(), "TERM=linux".into()]
    };
    if !env
        .iter()
        .any(|e| e.as_encoded_bytes().starts_with(b"PATH="))
    {
        env.insert(0, DEFAULT_PATH.into());
    }
    for entry in given {
        let bytes = entry.as_encoded_bytes();
        let key = match bytes.iter().position(|&b| b == b'=') {
            Some(n) => bytes.get(..=n).unwrap_or(bytes),
            None => bytes,
        };
        env.retain(|e| !e.as_encoded_bytes().starts_with(key));
        env.push(entry.clone());
    }
    env
}

/// Boots and runs `argv`; with an empty argv, boots in root mode (the
/// kernel command line must then say `root=`).
pub fn run(argv: &[OsString], opts: &RunOptions) -> Result<RunOutcome> {
    let host = check_host(argv, opts)?;
    let cache = open_cache()?;
    // With no raw qemu argument the VM is exactly the target.
    let build_opts = build::BuildOptions {
        known_machine: opts.vm.qemu_args.is_empty(),
        ..opts.build.clone()
    };
    let initrd = build::build(
        &build_opts,
        &host.machine.target(),
        &host.kernel,
        host.payload.as_ref(),
        &cache,
    )?;
    // In root mode the booted system's own init speaks on the console.
    let boot = boot_initrd(opts, &host, &initrd, argv.is_empty())?;
    let (exit_code, failure) = judge(&boot.log, opts.vm.timeout);
    let missing_drivers = find_missing_drivers(&boot.log, &host.kernel, &host.machine);
    Ok(RunOutcome {
        exit_code,
        failure,
        stdout: boot.stdout,
        stderr: boot.stderr,
        log: boot.log,
        kernel: host.kernel,
        missing_drivers,
    })
}

/// The boot itself, in a private temporary directory (the initrd and the
/// events socket) that is gone when it returns, whatever happened: the
/// signals that end a run are caught meanwhile and end it in order.
fn boot_initrd(opts: &RunOptions, host: &Host, initrd: &Initrd, root_mode: bool) -> Result<Boot> {
    let (_signals, work) = private_run()?;
    let initrd_path = work.path().join("initrd");
    initrd.write(&initrd_path)?;
    if let Some(sig) = signals::pending() {
        let log = BootLog {
            interrupted: Some(sig),
            ..BootLog::default()
        };
        return Ok(Boot {
            log,
            ..Boot::default()
        });
    }
    let config = VmConfig {
        echo_console: root_mode,
        ..vm_config(opts, host, initrd_path, work.path())
    };
    let sink = match opts.io.output {
        OutputMode::Stream => Sink::terminal(),
        OutputMode::Capture => Sink::Capture,
        OutputMode::Discard => Sink::Discard,
    };
    vm::boot(&config, opts.vm.timeout, opts.io.stdin.clone(), sink)
}

/// The floor of a run (`kestrel bench --floor`): the same kernel on the
/// same machine, qemu started the same way, with a no-op init that powers
/// off at once instead of Kestrel's. Its log holds no records: only the
/// host's clock of qemu's start and exit.
pub fn floor(opts: &RunOptions) -> Result<BootLog> {
    let host = check_host(&[], opts)?;
    let (_signals, work) = private_run()?;
    let initrd = work.path().join("initrd");
    crate::yardstick::floor_initrd(&initrd)?;
    let config = vm_config(opts, &host, initrd, work.path());
    Ok(vm::boot(&config, opts.vm.timeout, None, Sink::Discard)?.log)
}

/// A boot's private folder (the initrd, the events socket, the daemons'
/// sockets and logs), gone when dropped, and the guard that catches the
/// signals that end a run meanwhile (dropped after the folder).
fn private_run() -> Result<(SignalGuard, tempfile::TempDir)> {
    let signals = SignalGuard::arm().context("failed to catch SIGINT/SIGTERM/SIGHUP")?;
    let work = tempfile::Builder::new()
        .prefix("kestrel-run-")
        .tempdir()
        .context("failed to make a temporary directory")?;
    Ok((signals, work))
}

fn vm_config(opts: &RunOptions, host: &Host, initrd: PathBuf, work: &Path) -> VmConfig {
    VmConfig {
        qemu: host.qemu.clone(),
        kernel: host.kernel.boot_image.clone(),
        initrd,
        append: qemu::kernel_append(
            opts.machine.profile,
            opts.vm.quiet,
            opts.vm.speedups,
            &opts.vm.append,
        ),
        accel: host.accel,
        machine: host.machine.clone(),
        memory_mb: opts.vm.memory_mb,
        cpus: match opts.vm.cpus {
            0 => qemu::default_cpus(host.accel),
            n => n,
        },
        events_socket: work.join("events.sock"),
        extra_args: opts.vm.qemu_args.clone(),
        interactive: opts.io.interactive,
        virtiofsd: host.virtiofsd.clone(),
        run_dir: work.to_owned(),
        echo_console: false,
    }
}

/// The devices the guest found no driver for that the kernel's full
/// module tree has one for.
fn find_missing_drivers(log: &BootLog, kernel: &Kernel, machine: &Machine) -> Vec<MissingDriver> {
    let unmatched: Vec<(&str, &str)> = log
        .records()
        .filter_map(|e| match &e.rec {
            GuestRecord::Unmatched { modalias, devpath } => {
                Some((modalias.as_str(), devpath.as_str()))
            }
            _ => None,
        })
        .collect();
    if unmatched.is_empty() {
        return Vec::new();
    }
    let dir = kernel
        .modules_dir
        .clone()
        .unwrap_or_else(|| Path::new(kernel::MODULES_ROOT).join(&kernel.release));
    match ModuleIndex::load(&dir) {
        Ok(index) => missing_drivers(&index, unmatched, machine.profile.spec().board_modules),
        Err(_) => Vec::new(),
    }
}

/// Why the stream from the guest cannot be trusted, if it cannot.
fn stream_damage(log: &BootLog) -> Option<String> {
    let dropped = match log.last(GuestKind::Poweroff).map(|e| &e.rec) {
        Some(GuestRecord::Poweroff { dropped, .. }) => *dropped,
        _ => 0,
    };
    if log.bad_frames == 0 && dropped == 0 {
        return None;
    }
    let mut why = format!(
        "the record stream from the guest was damaged: {} malformed, {dropped} dropped by the guest",
        log.bad_frames
    );
    if let Some(first) = log.bad_lines.first() {
        why.push_str(&format!(" (first: {first})"));
    }
    Some(why)
}

/// The last phase the guest reported, for messages.
fn last_phase(log: &BootLog) -> String {
    log.last_phase().map_or_else(
        || "no event from the guest".to_owned(),
        |e| {
            format!(
                "last phase reached: {} at {:.3} s guest time ({})",
                e.rec.kind().name(),
                e.t_ns as f64 / 1e9,
                e.rec.to_line(e.t_ns)
            )
        },
    )
}

/// The exit status of a boot: 128+N when a signal ended it; the stream's
/// damage; the payload's status; the init's failure status; else a
/// harness failure naming the last thing seen.
pub fn judge(log: &BootLog, timeout: Duration) -> (i32, Option<String>) {
    if let Some(sig) = log.interrupted {
        return (
            128 + sig,
            Some(format!("interrupted by {}", signals::name(sig))),
        );
    }
    if let Some(why) = stream_damage(log) {
        return (EXIT_STREAM, Some(why));
    }
    if log.output_stalled {
        return (
            EXIT_TIMEOUT,
            Some(format!(
                "the payload's output was not taken by our stdout within {timeout:?} (a paused terminal?); {}",
                last_phase(log)
            )),
        );
    }
    if let Some(GuestRecord::PayloadExit { status, .. }) =
        log.last(GuestKind::PayloadExit).map(|e| &e.rec)
    {
        return (*status, None);
    }
    if log.last(GuestKind::SwitchRoot).is_some() && !log.timed_out {
        // Root mode: the real init ran; what it does next is its own business.
        return (0, None);
    }
    if log.timed_out {
        return (
            EXIT_TIMEOUT,
            Some(format!(
                "the guest did not finish within {timeout:?}; {}",
                last_phase(log)
            )),
        );
    }
    let errors: Vec<&str> = log
        .records()
        .filter_map(|e| match &e.rec {
            GuestRecord::Error { msg, .. } => Some(msg.as_str()),
            _ => None,
        })
        .collect();
    if let Some(GuestRecord::Poweroff { status, .. }) =
        log.last(GuestKind::Poweroff).map(|e| &e.rec)
    {
        let why = if errors.is_empty() {
            "the guest powered off without running the payload".to_owned()
        } else {
            errors.join("; ")
        };
        return (*status, Some(why));
    }
    (EXIT_HARNESS, Some(stopped_without_poweroff(log, &errors)))
}

/// How a guest that sent no `poweroff` went away, from the kernel's
/// last words on the console.
fn how_it_stopped(log: &BootLog) -> String {
    let said = |what: &str| {
        log.console
            .iter()
            .rev()
            .find(|l| l.item.contains(what))
            .map(|l| l.item.trim().to_owned())
    };
    if let Some(panic) = said("Kernel panic") {
        format!("the guest kernel panicked: {panic}")
    } else if said("reboot: Power down").is_some() {
        "the guest powered off without the init's word (the payload, or something \
         else than the init, called reboot(2))"
            .to_owned()
    } else if said("reboot: Restarting system").is_some() {
        "the guest rebooted without the init's word (something else than the init \
         called reboot(2))"
            .to_owned()
    } else {
        "the guest stopped without powering off".to_owned()
    }
}

/// The guest went away without a word: what it said last.
fn stopped_without_poweroff(log: &BootLog, errors: &[&str]) -> String {
    let tail: Vec<&str> = log
        .console
        .iter()
        .rev()
        .take(15)
        .map(|s| s.item.as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut why = format!("{} ({})", how_it_stopped(log), last_phase(log));
    if !errors.is_empty() {
        why.push_str(&format!("; errors: {}", errors.join("; ")));
    }
    if !tail.is_empty() {
        why.push_str(&format!("\nlast console lines:\n{}", tail.join("\n")));
    }
    if !log.qemu_stderr.trim().is_empty() {
        why.push_str(&format!("\nqemu said: {}", log.qemu_stderr.trim()));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootlog::Stamped;
    use kestrel_proto::Timed;

    fn log_of(records: Vec<GuestRecord>) -> BootLog {
        let mut log = BootLog::default();
        for (i, rec) in records.into_iter().enumerate() {
            log.push_event(Stamped {
                host_ns: i as u64,
                item: Timed {
                    t_ns: i as u64,
                    rec,
                },
            });
        }
        log
    }

    fn exit(status: i32) -> GuestRecord {
        GuestRecord::PayloadExit {
            status,
            signal: None,
        }
    }

    fn poweroff(status: i32, dropped: u64) -> GuestRecord {
        GuestRecord::Poweroff { status, dropped }
    }

    const T: Duration = Duration::from_secs(9);

    /// Nothing given: the init's default. Given: over the default, a key
    /// given twice keeps the last. On the host's root: our PATH, HOME...
    #[test]
    fn the_environment_is_given_entries_over_a_default() {
        let none = |_: &str| None;
        assert!(payload_env(&[], false, none).is_empty());
        let env = payload_env(&["A=1".into(), "HOME=/h".into(), "A=2".into()], false, none);
        assert_eq!(env, [DEFAULT_PATH, "TERM=linux", "HOME=/h", "A=2"]);
        let host = |k: &str| match k {
            "PATH" => Some("/opt/bin:/usr/bin".into()),
            "HOME" => Some("/home/me".into()),
            _ => None,
        };
        assert_eq!(
            payload_env(&["PATH=/x".into()], true, host),
            ["HOME=/home/me", "PATH=/x"]
        );
        assert_eq!(payload_env(&[], true, none), [DEFAULT_PATH]);
    }

    #[test]
    fn the_payload_status_is_the_run_status() {
        assert_eq!(judge(&log_of(vec![exit(7), poweroff(7, 0)]), T), (7, None));
    }

    /// Records the guest dropped, or a malformed frame, fail the run with
    /// its own status even when the payload said 0.
    #[test]
    fn a_damaged_stream_fails_the_run_loudly() {
        let (code, why) = judge(&log_of(vec![exit(0), poweroff(0, 3)]), T);
        assert_eq!(code, EXIT_STREAM);
        assert!(why.unwrap().contains("3 dropped by the guest"));
        let mut log = log_of(vec![exit(0), poweroff(0, 0)]);
        log.push_bad("not a record: \"garbage\"".into());
        let (code, why) = judge(&log, T);
        assert_eq!(code, EXIT_STREAM);
        let why = why.unwrap();
        assert!(
            why.contains("1 malformed") && why.contains("garbage"),
            "{why}"
        );
    }

    #[test]
    fn a_timeout_names_the_last_phase() {
        let mut log = log_of(vec![GuestRecord::Ready]);
        log.timed_out = true;
        let (code, why) = judge(&log, T);
        assert_eq!(code, EXIT_TIMEOUT);
        assert!(why.unwrap().contains("last phase reached: ready"));
    }

    #[test]
    fn a_signal_ends_the_run_with_128_plus_n() {
        let mut log = log_of(vec![exit(0)]);
        log.interrupted = Some(libc::SIGTERM);
        assert_eq!(
            judge(&log, T),
            (143, Some("interrupted by SIGTERM".to_owned()))
        );
    }

    #[test]
    fn a_stalled_terminal_is_named() {
        let mut log = log_of(vec![exit(0), poweroff(0, 0)]);
        (log.timed_out, log.output_stalled) = (true, true);
        let (code, why) = judge(&log, T);
        assert_eq!(code, EXIT_TIMEOUT);
        assert!(why.unwrap().contains("not taken by our stdout"));
    }

    #[test]
    fn a_failed_boot_reports_the_init_status_and_errors() {
        let log = log_of(vec![
            GuestRecord::Error {
                msg: "root did not appear".into(),
                fatal: true,
            },
            poweroff(1, 0),
        ]);
        assert_eq!(judge(&log, T), (1, Some("root did not appear".to_owned())));
        let mut log = log_of(vec![GuestRecord::Ready]);
        log.qemu_stderr = "qemu: boom".into();
        let (code, why) = judge(&log, T);
        assert_eq!(code, EXIT_HARNESS);
        assert!(why.unwrap().contains("qemu said: qemu: boom"));
    }

    /// No word from the init: the kernel's last console lines say how
    /// the guest went (a payload's own `poweroff -f`, a panic).
    #[test]
    fn a_guest_gone_without_the_init_says_how() {
        let with_console = |line: &str| {
            let mut log = log_of(vec![GuestRecord::PayloadStart {
                pid: 9,
                program: "/bin/sh".into(),
            }]);
            log.push_console(Stamped {
                host_ns: 1,
                item: line.to_owned(),
            });
            judge(&log, T)
        };
        let (code, why) = with_console("[    2.5] reboot: Power down");
        assert_eq!(code, EXIT_HARNESS);
        let why = why.unwrap();
        assert!(
            why.contains("powered off without the init's word") && why.contains("payload_start"),
            "{why}"
        );
        let (_, why) = with_console("Kernel panic - not syncing: Attempted to kill init!");
        assert!(why
            .unwrap()
            .contains("kernel panicked: Kernel panic - not syncing: Attempted to kill init!"));
    }
}
