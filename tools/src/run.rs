//! `kestrel run`: build (or reuse) the initrd, boot, stream the payload's
//! output, and turn the boot into an exit status.

use crate::initrd::{self, BuildSpec, Payload};
use crate::kernel::{self, Kernel};
use crate::qemu::{self, Accel, Profile, VmConfig};
use crate::vm::{self, BootLog};
use anyhow::{Context, Result};
use kestrel_initrd::Compression;
use kestrel_proto::{GuestKind, GuestRecord, OutputFd};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Exit status when the guest did not finish in time (as timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status when Kestrel itself failed (as `docker run`).
pub const EXIT_HARNESS: i32 = 125;
/// Exit status when the record stream from the guest was damaged
/// (malformed frames, records the guest had to drop): the payload's
/// output cannot be trusted whole, so its own status is not reported.
pub const EXIT_STREAM: i32 = 123;

/// Why the stream from the guest cannot be trusted, if it cannot.
fn stream_damage(log: &BootLog) -> Option<String> {
    let dropped = match log.last(GuestKind::Poweroff).map(|e| &e.rec) {
        Some(GuestRecord::Poweroff { dropped, .. }) => *dropped,
        _ => 0,
    };
    if log.bad_lines.is_empty() && dropped == 0 {
        return None;
    }
    let mut why = format!(
        "the record stream from the guest was damaged: {} malformed, {dropped} dropped by the guest",
        log.bad_lines.len()
    );
    if let Some(first) = log.bad_lines.first() {
        why.push_str(&format!(" (first: {first})"));
    }
    Some(why)
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub kernel: Option<PathBuf>,
    pub accel: Accel,
    pub profile: Profile,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// vCPUs; 0 = the measured default for the accelerator (see [`default_cpus`]).
    pub cpus: u32,
    pub append: String,
    pub quiet: bool,
    pub pvh: bool,
    pub compression: Compression,
    pub modules: Vec<String>,
    pub disks: Vec<(PathBuf, bool)>,
    pub qemu_args: Vec<OsString>,
    pub env: Vec<OsString>,
    pub cwd: Option<OsString>,
    /// Write the payload's output to our stdout/stderr as it arrives.
    pub stream_output: bool,
    /// The payload gets the serial console, wired to our terminal.
    pub interactive: bool,
    /// Bake the module plan into the initrd: the init loads it in order
    /// and skips device discovery.
    pub frozen_plan: bool,
    /// The payload's stdin (default /dev/null).
    pub stdin: Option<vm::StdinSource>,
    /// More host programs (with their libraries) or files for the guest.
    pub include: Vec<PathBuf>,
    /// Take modules from this tree instead of /lib/modules/RELEASE.
    pub modules_dir: Option<PathBuf>,
    /// Also include the modules this host's own devices use.
    pub host_modules: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            kernel: None,
            accel: Accel::Auto,
            // The fastest profile that passes the tests, by measurement:
            // microvm boots to exit in ~0.65x the time of pc (see README).
            profile: Profile::Microvm,
            timeout: Duration::from_secs(120),
            memory_mb: 512,
            cpus: 0,
            append: String::new(),
            quiet: true,
            pvh: true,
            compression: Compression::None,
            modules: Vec::new(),
            disks: Vec::new(),
            qemu_args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stream_output: true,
            interactive: false,
            frozen_plan: false,
            stdin: None,
            include: Vec::new(),
            modules_dir: None,
            host_modules: false,
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    pub exit_code: i32,
    /// Why the run failed, when it did not end with the payload's status.
    pub failure: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub log: BootLog,
    pub kernel: Kernel,
}

/// Where cached kernels and initrds live: $KESTREL_CACHE, else the user's
/// cache directory. Without HOME, a per-user directory in /tmp that must be
/// ours and private: a booted kernel or initrd is never taken from a place
/// another user could have written.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KESTREL_CACHE") {
        return Ok(d.into());
    }
    if let Some(base) = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
    {
        return Ok(base.join("kestrel"));
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("kestrel-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is not a private directory of ours; set KESTREL_CACHE or HOME",
            dir.display()
        );
    }
    Ok(dir)
}

/// Writes a cache file so that concurrent writers (parallel boots, tests)
/// never see a partial file: a unique temporary file, then rename.
pub fn write_atomically(path: &std::path::Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache file without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("failed to create a file in {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("failed to write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("failed to rename into {}", path.display()))?;
    Ok(())
}

/// Under TCG one vCPU boots faster than two (measured: 0.67x total time
/// on microvm): a second CPU must be brought up, and module loading's
/// cross-CPU TLB flushes are expensive IPIs in emulation, which outweighs
/// loading modules in parallel. Under KVM, two.
pub fn default_cpus(accel: Accel) -> u32 {
    if accel == Accel::Kvm {
        2
    } else {
        1
    }
}

/// Says once per process why TCG is used when `auto` was asked for.
pub fn pick_accel(accel: Accel) -> Accel {
    static SAID: std::sync::Once = std::sync::Once::new();
    let (accel, why) = qemu::resolve_accel(accel);
    if let Some(why) = why {
        SAID.call_once(|| eprintln!("kestrel: using TCG (software emulation): {why}"));
    }
    accel
}

pub fn load_kernel(opts: &RunOptions) -> Result<Kernel> {
    let path = match &opts.kernel {
        Some(k) => k.clone(),
        None => kernel::default_kernel()?,
    };
    let mut kernel = kernel::read_kernel(&path, &cache_dir()?, opts.pvh)?;
    if let Some(dir) = &opts.modules_dir {
        kernel.modules_dir = Some(dir.clone());
    }
    Ok(kernel)
}

/// Boots and runs `argv`; with an empty argv, boots in root mode (the
/// kernel command line must then say `root=`).
pub fn run(argv: &[OsString], opts: &RunOptions) -> Result<RunOutcome> {
    // Everything that can fail on the host fails before qemu starts.
    let payload: Option<Payload> = if argv.is_empty() {
        None
    } else {
        Some(initrd::resolve_payload(
            argv,
            opts.env.clone(),
            opts.cwd.clone(),
        )?)
    };
    let kernel = load_kernel(opts)?;
    let init = initrd::find_init()?;
    let accel = pick_accel(opts.accel);
    let mut modules: Vec<String> = opts
        .profile
        .spec()
        .modules
        .iter()
        .map(|s| s.to_string())
        .collect();
    modules.extend(opts.modules.iter().cloned());
    let aliases = if opts.host_modules {
        initrd::host_modaliases()?
    } else {
        Vec::new()
    };
    let spec = BuildSpec {
        init: &init,
        kernel: &kernel,
        modules,
        aliases,
        compression: opts.compression,
        frozen_plan: opts.frozen_plan,
    };
    let cache = cache_dir()?;
    let base = initrd::cached_base(&initrd::base_archive(&spec)?, opts.compression, &cache)?;
    let run_archive = payload
        .as_ref()
        .map(|p| initrd::run_archive(p, &opts.include, opts.interactive, opts.stdin.is_some()))
        .transpose()?;
    let work = tempfile::Builder::new()
        .prefix("kestrel-run-")
        .tempdir()
        .context("failed to make a temporary directory")?;
    let initrd_path = work.path().join("initrd");
    initrd::write_initrd(&base, run_archive.as_ref(), &initrd_path)?;

    let config = VmConfig {
        kernel: kernel.boot_image.clone(),
        initrd: initrd_path,
        append: qemu::kernel_append(opts.profile, opts.quiet, &opts.append),
        accel,
        profile: opts.profile,
        memory_mb: opts.memory_mb,
        cpus: if opts.cpus == 0 {
            default_cpus(accel)
        } else {
            opts.cpus
        },
        events_socket: work.path().join("events.sock"),
        disks: opts.disks.clone(),
        extra_args: opts.qemu_args.clone(),
        interactive: opts.interactive,
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let stream = opts.stream_output;
    let log = vm::boot(&config, opts.timeout, opts.stdin.clone(), &mut |ev| {
        let GuestRecord::Output { fd, data } = &ev.item.rec else {
            return;
        };
        if *fd == OutputFd::Stderr {
            stderr.extend_from_slice(data);
            if stream {
                let _ = std::io::stderr().write_all(data);
            }
        } else {
            stdout.extend_from_slice(data);
            if stream {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(data);
                let _ = out.flush();
            }
        }
    })?;
    let (exit_code, failure) = judge(&log, opts.timeout);
    Ok(RunOutcome {
        exit_code,
        failure,
        stdout,
        stderr,
        log,
        kernel,
    })
}

/// The exit status of a boot: the payload's, else the init's failure
/// status, else a harness failure naming the last thing seen.
pub fn judge(log: &BootLog, timeout: Duration) -> (i32, Option<String>) {
    let last = log.last_phase().map_or_else(
        || "no event from the guest".to_owned(),
        |e| {
            format!(
                "last phase reached: {} at {:.3} s guest time ({})",
                e.rec.kind().name(),
                e.t_ns as f64 / 1e9,
                e.rec.to_line(e.t_ns)
            )
        },
    );
    if let Some(why) = stream_damage(log) {
        return (EXIT_STREAM, Some(why));
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
                "the guest did not finish within {timeout:?}; {last}"
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
    let mut why = format!("the guest stopped without powering off ({last})");
    if !errors.is_empty() {
        why.push_str(&format!("; errors: {}", errors.join("; ")));
    }
    if !tail.is_empty() {
        why.push_str(&format!("\nlast console lines:\n{}", tail.join("\n")));
    }
    if !log.qemu_stderr.trim().is_empty() {
        why.push_str(&format!("\nqemu said: {}", log.qemu_stderr.trim()));
    }
    (EXIT_HARNESS, Some(why))
}
