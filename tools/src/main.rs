//! The `kestrel` command line: a thin layer over the library, one
//! function per command.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kestrel::bench::{self, Override};
use kestrel::bootlog::BootLog;
use kestrel::build::{self, BuildOptions};
use kestrel::cache::open_cache;
use kestrel::machine::{Device, Disk, Machine, Profile, Target};
use kestrel::project::{self, Project};
use kestrel::qemu::Accel;
use kestrel::run::{
    self, IoOptions, OutputMode, RunOptions, ShareOptions, VmOptions, EXIT_HARNESS,
};
use kestrel::share::{FsChoice, ShareSpec};
use kestrel::vm::StdinSource;
use kestrel::{analyze, kernel, signals};
use kestrel_initrd::Compression;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kestrel",
    version,
    about = "Boot a Linux VM to ready, fast, and show where every millisecond went."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What goes into the initrd: shared by every command that builds one.
#[derive(Args, Clone)]
struct BuildArgs {
    /// Kernel: a bzImage, a vmlinux with the PVH note, or a built kernel
    /// source tree (its arch/x86/boot/bzImage, its vmlinux for PVH, its
    /// modules_install output in INSTALL_MOD_PATH, mods/ or .virtme_mods/,
    /// or --modules-dir). Default: /boot/vmlinuz-$(uname -r) when
    /// installed, else the newest /boot/vmlinuz-* by version; the choice is
    /// said on stderr.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Machine profile.
    #[arg(long, value_enum, default_value = "microvm")]
    machine: Profile,
    /// Another module to include, with its dependencies (repeatable).
    #[arg(long = "module")]
    modules: Vec<String>,
    /// The root filesystem's type, whose modules a root-mode boot (no
    /// command) carries [default: ext4 in root mode].
    #[arg(long, value_name = "TYPE")]
    root_fs: Option<String>,
    /// Initrd compression of the cached base archive.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Bake the module plan: the init loads it in order, no discovery.
    #[arg(long)]
    frozen_plan: bool,
    /// Another host program (with its libraries) or file for the guest (repeatable).
    #[arg(long)]
    include: Vec<PathBuf>,
    /// Module tree to take modules from: the tree (…/lib/modules/RELEASE)
    /// or an INSTALL_MOD_PATH holding lib/modules/RELEASE (default
    /// /lib/modules/RELEASE, or a source tree's own).
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// Also include the modules this host's own devices use (their MODALIAS).
    #[arg(long)]
    host_modules: bool,
}

impl BuildArgs {
    fn options(&self) -> BuildOptions {
        BuildOptions {
            compression: self.compression,
            frozen_plan: self.frozen_plan,
            // `kestrel build` makes initrds for VMs made elsewhere;
            // `kestrel run` says when it made the VM itself.
            known_machine: false,
            modules: self.modules.clone(),
            host_modules: self.host_modules,
            root_fs: self.root_fs.clone(),
            include: self.include.clone(),
            modules_dir: self.modules_dir.clone(),
        }
    }
}

/// The VM's devices beyond the console and the events port.
#[derive(Args, Clone)]
struct DeviceArgs {
    /// A virtio-blk disk: FILE or FILE,ro (repeatable); any other comma
    /// or colon is part of the file name.
    #[arg(long = "disk", value_name = "FILE[,ro]")]
    disks: Vec<String>,
    /// virtio-net with qemu user networking; the init gives it
    /// 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3. The guest can then
    /// reach the host's own local services: 10.0.2.2 is the host's 127.0.0.1.
    #[arg(long)]
    net: bool,
    /// Another qemu user-network option (repeatable; implies --net), e.g.
    /// restrict=on (nothing leaves the host) or
    /// guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080.
    #[arg(long = "net-opt", value_name = "OPTION")]
    net_opts: Vec<String>,
    /// virtio-rng, fed from the host's /dev/urandom.
    #[arg(long)]
    rng: bool,
    /// Share a host folder (repeatable): GUEST defaults to HOST's absolute
    /// path, read-only unless `,rw`. virtio-fs when a usable virtiofsd is
    /// installed, else 9p (said on stderr). With a share the payload runs
    /// as our uid, gid and groups, in the shared folder that holds our
    /// current directory.
    #[arg(long = "share", value_name = "HOST[:GUEST][,rw]")]
    shares: Vec<ShareSpec>,
    /// `--root host`: the payload runs on the host's root filesystem,
    /// shared read-only under a tmpfs overlay that takes its writes (the
    /// host is never changed), with its own /proc, /sys, /dev, /run and
    /// /tmp; any host program runs unchanged, in our current directory.
    #[arg(long = "root", value_enum, value_name = "host")]
    root: Option<RootChoice>,
    /// How folders are shared.
    #[arg(long, value_enum, default_value = "auto")]
    share_fs: FsChoice,
}

/// What `--user` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum UserChoice {
    Host,
    Root,
}

/// What `--root` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RootChoice {
    Host,
}

/// How to boot: shared by run, boot and bench.
#[derive(Args, Clone)]
struct VmArgs {
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    devices: DeviceArgs,
    /// auto uses KVM only where the CPU has vmx/svm and /dev/kvm opens.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Seconds before the run is ended (the guest killed), whatever the
    /// guest or our terminal do [default: 120].
    #[arg(long, value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// Guest memory in MiB [default: 512].
    #[arg(long)]
    memory: Option<u32>,
    /// vCPUs (0: 1 under TCG, where it is faster, 2 under KVM) [default: 0].
    #[arg(long)]
    cpus: Option<u32>,
    /// Extra kernel command line (any bytes).
    #[arg(long, default_value = "")]
    append: OsString,
    /// Show the kernel's console messages (drops `quiet`).
    #[arg(long)]
    verbose_console: bool,
    /// Boot the bzImage even when a PVH vmlinux could be used.
    #[arg(long)]
    no_pvh: bool,
    /// Boot without Kestrel's kernel speed options (cryptomgr.notests:
    /// the kernel's crypto self-tests run; noreplace-smp; tsc=reliable).
    #[arg(long)]
    no_kernel_speedups: bool,
    /// Environment of the payload, KEY=VALUE (repeatable), over the
    /// default (a standard PATH, HOME=/, TERM=linux; with --root host our
    /// PATH, HOME, USER, LOGNAME, LANG, LC_ALL, TERM).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<OsString>,
    /// Pass our value of KEY to the payload (repeatable; skipped when unset).
    #[arg(long = "env-pass", value_name = "KEY")]
    env_pass: Vec<String>,
    /// Whom the payload runs as when folders are shared: `host`, our uid,
    /// gid and groups (what it writes is ours), or `root` in the VM.
    /// Without shares it is root.
    #[arg(long, value_enum, default_value = "host")]
    user: UserChoice,
    /// Working directory of the payload in the guest.
    #[arg(long)]
    cwd: Option<OsString>,
    /// Extra qemu arguments (repeatable).
    #[arg(long = "qemu-arg", allow_hyphen_values = true)]
    qemu_args: Vec<OsString>,
}

impl VmArgs {
    /// The run's options: these flags over the project file's defaults
    /// (`kestrel.toml` here or above), over the built-in ones.
    fn options(&self, io: IoOptions) -> Result<RunOptions> {
        let project = project::current()?.unwrap_or_default();
        self.options_over(io, &project)
    }

    fn options_over(&self, io: IoOptions, project: &Project) -> Result<RunOptions> {
        if !project.file.as_os_str().is_empty() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("kestrel: defaults from {}", project.file.display()));
        }
        let defaults = VmOptions::default();
        let mut env: Vec<OsString> = self
            .env_pass
            .iter()
            .filter_map(|k| {
                let v = std::env::var_os(k)?;
                let mut e = OsString::from(format!("{k}="));
                e.push(v);
                Some(e)
            })
            .collect();
        env.extend(self.env.iter().cloned());
        env.extend(io.env.iter().cloned());
        // A --share at the same guest path as the project's replaces it.
        let mut specs = project.shares.clone();
        for s in &self.devices.shares {
            specs.retain(|p| p.guest.is_none() || p.guest != s.guest);
            specs.push(s.clone());
        }
        let build = self.build.options();
        Ok(RunOptions {
            machine: Machine {
                profile: self.build.machine,
                disks: self.devices.disks.iter().map(|d| Disk::parse(d)).collect(),
                net: self.devices.net || !self.devices.net_opts.is_empty(),
                net_options: self.devices.net_opts.clone(),
                rng: self.devices.rng,
                shares: Vec::new(),
            },
            build,
            vm: VmOptions {
                kernel: self.build.kernel.clone().or(project.kernel.clone()),
                pvh: !self.no_pvh,
                accel: self.accel,
                memory_mb: self.memory.or(project.memory).unwrap_or(defaults.memory_mb),
                cpus: self.cpus.or(project.cpus).unwrap_or(defaults.cpus),
                append: self.append.clone(),
                quiet: !self.verbose_console,
                speedups: !self.no_kernel_speedups,
                timeout: self.timeout.or(project.timeout).unwrap_or(defaults.timeout),
                qemu_args: self.qemu_args.clone(),
            },
            io: IoOptions {
                env,
                cwd: self.cwd.clone(),
                user: match self.user {
                    UserChoice::Host => io.user.clone(),
                    UserChoice::Root => Some(kestrel_proto::config::User::default()),
                },
                ..io
            },
            shares: ShareOptions {
                specs,
                host_root: self.devices.root == Some(RootChoice::Host) || project.host_root,
                fs: self.devices.share_fs,
            },
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM, run CMD in it, stream its output, exit with its status.
    Run {
        #[command(flatten)]
        vm: VmArgs,
        /// Print the phase table on stderr after the run.
        #[arg(long)]
        report: bool,
        /// Save the boot log (for `kestrel analyze`).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Forward our stdin to the payload even when it is a terminal
        /// (it is forwarded whenever it is not; a terminal gives /dev/null).
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Give the payload a terminal when we have one: the serial
        /// console, wired to ours (as `kestrel boot`).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, passed unchanged. Without one,
        /// the guest boots in root mode (give --disk and --append root=...).
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// Run a test binary in a VM, as cargo's runner:
    /// CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="kestrel test". The
    /// current folder (cargo's: the crate's) is shared read-write and kept
    /// as the working directory, our CARGO_* and RUST_* variables are
    /// passed, and the exit status is the binary's.
    Test {
        #[command(flatten)]
        vm: VmArgs,
        /// The test binary (cargo gives its path) and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<OsString>,
    },
    /// Boot a VM with CMD (default /bin/sh) on an interactive serial console.
    Boot {
        #[command(flatten)]
        vm: VmArgs,
        /// The command on the console (default /bin/sh).
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// N boots of CMD (default /bin/true): each phase's median, min, max, spread.
    Bench {
        #[command(flatten)]
        vm: VmArgs,
        /// Boots (per configuration).
        #[arg(short, default_value_t = 5)]
        n: usize,
        /// Boots at a time.
        #[arg(short, default_value_t = 1)]
        j: usize,
        /// Compare with a second configuration, interleaved A B A B:
        /// KEY=VALUE overrides of A (machine=, append=, quiet=, speedups=, pvh=,
        /// compression=, frozen_plan=, cpus=, memory=, net=, rng=).
        #[arg(long)]
        versus: Vec<Override>,
        /// The reference machine instead: a plain qemu command line (q35,
        /// 2 vCPUs, 1 GiB, virtio console, blk with an ext4 root, net, rng;
        /// no events port), booted with Kestrel discovering devices, with a
        /// frozen plan, and with the fixed-list loader
        /// (bench/fixed-loader.c), interleaved; ready = the root's init
        /// started.
        #[arg(long, conflicts_with_all = ["versus", "floor"])]
        reference: bool,
        /// Against the floor instead: the same kernel and machine with a
        /// no-op init that powers off at once (bench/stopwatch.c),
        /// interleaved; Kestrel's cost as the ratio of host wall times.
        #[arg(long, conflicts_with = "versus")]
        floor: bool,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// The command each boot runs (default /bin/true).
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// Write an initrd (base archive: init and the modules of the machine's
    /// devices; plus CMD when given) for a machine booted by anything.
    Build {
        #[command(flatten)]
        build: BuildArgs,
        /// The machine will have virtio-blk disks.
        #[arg(long)]
        blk: bool,
        /// The machine will have virtio-net.
        #[arg(long)]
        net: bool,
        /// The machine will have virtio-rng.
        #[arg(long)]
        rng: bool,
        /// Output file.
        #[arg(short, long, default_value = "initrd.img")]
        output: PathBuf,
        /// Print the manifest: every entry, its size and why it is there.
        #[arg(long)]
        list: bool,
        /// The payload the initrd runs, with its arguments; without one,
        /// an initrd for root mode.
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// The phase table of a saved boot log (`kestrel run --log`), or of a
    /// boot made now (`--boot`, running /bin/true with the default machine).
    Analyze {
        /// A boot log written by `kestrel run --log FILE` (or give --boot).
        #[arg(required_unless_present = "boot")]
        log: Option<PathBuf>,
        /// Boot now (/bin/true on the default machine) and analyze that.
        #[arg(long, conflicts_with = "log")]
        boot: bool,
        /// JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write the SVG timeline.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

fn main() {
    let code = match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kestrel: error: {e:#}");
            EXIT_HARNESS
        }
    };
    // A signal that ended a run ends the command the same way.
    let code = signals::pending().map_or(code, |sig| 128 + sig);
    #[allow(clippy::exit)]
    std::process::exit(code);
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|e| format!("{s:?} is not a usable number of seconds: {e}"))
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run {
            vm,
            report,
            log,
            stdin,
            tty,
            cmd,
        } => cmd_run(&vm, report, log, stdin, tty, &cmd),
        Command::Test { vm, cmd } => cmd_test(&vm, &cmd),
        Command::Boot { vm, cmd } => cmd_boot(&vm, cmd),
        Command::Bench {
            vm,
            n,
            j,
            versus,
            reference,
            floor,
            json,
            cmd,
        } => match (reference, floor) {
            (true, _) => cmd_reference(&vm, n, json),
            (false, true) => cmd_floor(&vm, n, json, cmd),
            (false, false) => cmd_bench(&vm, n, j, &versus, json, cmd),
        },
        Command::Build {
            build,
            blk,
            net,
            rng,
            output,
            list,
            cmd,
        } => {
            let devices = [(blk, Device::Disk), (net, Device::Net), (rng, Device::Rng)]
                .into_iter()
                .filter_map(|(on, d)| on.then_some(d))
                .collect();
            cmd_build(&build, devices, &output, list, &cmd)
        }
        Command::Analyze {
            log,
            boot: _,
            json,
            svg,
        } => cmd_analyze(log, json, svg),
    }
}

fn cmd_run(
    vm: &VmArgs,
    report: bool,
    log: Option<PathBuf>,
    stdin: bool,
    tty: bool,
    cmd: &[OsString],
) -> Result<i32> {
    let stdin_tty = rustix::termios::isatty(std::io::stdin());
    let interactive = tty && stdin_tty && rustix::termios::isatty(std::io::stdout());
    let forward = !interactive && (stdin || !stdin_tty);
    let opts = vm.options(IoOptions {
        stdin: forward.then_some(StdinSource::Inherit),
        interactive,
        ..IoOptions::default()
    })?;
    let outcome = run::run(cmd, &opts)?;
    if vm.verbose_console {
        for line in &outcome.log.console {
            eprintln!("console: {}", line.item);
        }
    }
    for missing in &outcome.missing_drivers {
        eprintln!("kestrel: {missing}");
    }
    if let Some(path) = log {
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        outcome.log.write_log(&mut f)?;
    }
    if report {
        eprint!("{}", analyze::render_table(&analyze::analyze(&outcome.log)));
    }
    if let Some(why) = &outcome.failure {
        eprintln!("kestrel: {why}");
    }
    Ok(outcome.exit_code)
}

/// Writes a report's JSON to `--json PATH`, when given.
fn write_json(path: Option<PathBuf>, text: String) -> Result<()> {
    match path {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display())),
        None => Ok(()),
    }
}

/// Writes `text` on stdout. A reader that went away (`| head`) is no
/// error: the rest is not wanted, and the command's work goes on (the
/// initrd of `build --list` is still written).
fn out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Which of our variables `kestrel test` passes: cargo's and the test
/// harness's (RUST_TEST_THREADS, RUST_BACKTRACE, RUST_LOG…).
const TEST_ENV_PREFIXES: &[&str] = &["CARGO", "RUST_"];

fn cmd_test(vm: &VmArgs, cmd: &[OsString]) -> Result<i32> {
    let env = std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| TEST_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
        })
        .map(|(k, v)| {
            let mut e = k;
            e.push("=");
            e.push(v);
            e
        })
        .collect();
    let mut opts = vm.options(IoOptions {
        env,
        ..IoOptions::default()
    })?;
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    let shared = |s: &ShareSpec| std::fs::canonicalize(&s.host).is_ok_and(|h| cwd.starts_with(h));
    if !opts.shares.host_root && !opts.shares.specs.iter().any(shared) {
        opts.shares.specs.push(ShareSpec {
            host: cwd,
            guest: None,
            writable: true,
        });
    }
    let outcome = run::run(cmd, &opts)?;
    for missing in &outcome.missing_drivers {
        eprintln!("kestrel: {missing}");
    }
    if let Some(why) = &outcome.failure {
        eprintln!("kestrel: {why}");
    }
    Ok(outcome.exit_code)
}

fn cmd_boot(vm: &VmArgs, cmd: Vec<OsString>) -> Result<i32> {
    let cmd = if cmd.is_empty() {
        vec![OsString::from("/bin/sh")]
    } else {
        cmd
    };
    let mut opts = vm.options(IoOptions {
        interactive: true,
        ..IoOptions::default()
    })?;
    opts.vm.timeout = Duration::from_secs(365 * 24 * 3600);
    Ok(run::run(&cmd, &opts)?.exit_code)
}

fn cmd_bench(
    vm: &VmArgs,
    n: usize,
    j: usize,
    versus: &[Override],
    json: Option<PathBuf>,
    cmd: Vec<OsString>,
) -> Result<i32> {
    let cmd = if cmd.is_empty() {
        vec![OsString::from("/bin/true")]
    } else {
        cmd
    };
    let a = vm.options(IoOptions {
        output: OutputMode::Discard,
        ..IoOptions::default()
    })?;
    let json_text = if versus.is_empty() {
        let r = bench::bench(&cmd, &a, n, j);
        out(&bench::render(&r))?;
        serde_json::to_string_pretty(&r)?
    } else {
        let mut b = a.clone();
        for o in versus {
            o.apply(&mut b);
        }
        let c = bench::compare(&cmd, &a, &b, n, j);
        let with: Vec<String> = versus.iter().map(Override::to_string).collect();
        out(&format!(
            "A: the options given; B: A with {}\n{}",
            with.join(" "),
            bench::render_comparison(&c)
        ))?;
        serde_json::to_string_pretty(&c)?
    };
    write_json(json, json_text)?;
    Ok(0)
}

fn cmd_floor(vm: &VmArgs, n: usize, json: Option<PathBuf>, cmd: Vec<OsString>) -> Result<i32> {
    let cmd = if cmd.is_empty() {
        vec![OsString::from("/bin/true")]
    } else {
        cmd
    };
    let opts = vm.options(IoOptions {
        output: OutputMode::Discard,
        ..IoOptions::default()
    })?;
    let report = bench::floor(&cmd, &opts, n)?;
    out(&bench::render_floor(&report))?;
    write_json(json, serde_json::to_string_pretty(&report)?)?;
    Ok(0)
}

fn cmd_reference(vm: &VmArgs, n: usize, json: Option<PathBuf>) -> Result<i32> {
    let opts = vm.options(IoOptions::default())?;
    let kernel = kestrel::run::load_kernel(&opts)?;
    let report = bench::reference(kernel, n)?;
    out(&bench::render_reference(&report))?;
    write_json(json, serde_json::to_string_pretty(&report)?)?;
    Ok(0)
}

fn cmd_build(
    args: &BuildArgs,
    devices: Vec<Device>,
    output: &std::path::Path,
    list: bool,
    cmd: &[OsString],
) -> Result<i32> {
    let cache = open_cache()?;
    let kernel = kernel::load_kernel(args.kernel.as_deref(), &cache, false)?;
    kernel.report_once();
    let payload = if cmd.is_empty() {
        None
    } else {
        Some(build::resolve_payload(cmd)?)
    };
    let target = Target {
        profile: args.machine,
        devices,
    };
    let initrd = build::build(&args.options(), &target, &kernel, payload.as_ref(), &cache)?;
    if list {
        let lines: String = initrd
            .manifest
            .iter()
            .map(|e| format!("{:>10}  {:<60} {}\n", e.size, e.path, e.reason))
            .collect();
        out(&lines)?;
    }
    initrd.write(output)?;
    eprintln!(
        "kestrel: wrote {} for kernel {}",
        output.display(),
        kernel.release
    );
    Ok(0)
}

fn cmd_analyze(log: Option<PathBuf>, json: bool, svg: Option<PathBuf>) -> Result<i32> {
    let boot_log = match log {
        Some(log) => {
            let text = std::fs::read_to_string(&log)
                .with_context(|| format!("failed to read {}", log.display()))?;
            BootLog::read_log(&text).with_context(|| {
                format!(
                    "{} is not a boot log as `kestrel run --log` writes",
                    log.display()
                )
            })?
        }
        None => {
            let opts = RunOptions {
                io: IoOptions {
                    output: OutputMode::Discard,
                    ..IoOptions::default()
                },
                ..RunOptions::default()
            };
            let outcome = run::run(&[OsString::from("/bin/true")], &opts)?;
            if let Some(why) = outcome.failure {
                anyhow::bail!("the boot failed: {why}");
            }
            outcome.log
        }
    };
    let a = analyze::analyze(&boot_log);
    if let Some(path) = svg {
        std::fs::write(&path, kestrel::svg::render_svg(&a))
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    if json {
        out(&format!("{}\n", serde_json::to_string_pretty(&a)?))?;
    } else {
        out(&analyze::render_table(&a))?;
    }
    Ok(0)
}
