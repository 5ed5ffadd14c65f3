//! The `kestrel` command line: a thin layer over the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kestrel::initrd::{self, BuildSpec};
use kestrel::qemu::{Accel, Profile};
use kestrel::run::{self, RunOptions, EXIT_HARNESS};
use kestrel::{analyze, bench, vm};
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

#[derive(Args, Clone)]
struct MachineArgs {
    /// Kernel image (default: /boot/vmlinuz-$(uname -r), else the newest in /boot).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Machine profile.
    #[arg(long, value_enum, default_value = "microvm")]
    machine: Profile,
    /// Extra modules to include (besides the machine's own).
    #[arg(long = "module")]
    modules: Vec<String>,
    /// Initrd compression of the cached base archive.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Bake the module plan: the init loads it in order, no discovery.
    #[arg(long)]
    frozen_plan: bool,
    /// Another host program (with its libraries) or file for the guest (repeatable).
    #[arg(long)]
    include: Vec<PathBuf>,
    /// Module tree to take modules from (default /lib/modules/RELEASE).
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// Also include the modules this host's own devices use (their MODALIAS).
    #[arg(long)]
    host_modules: bool,
}

/// How to boot: shared by run, boot and bench.
#[derive(Args, Clone)]
struct VmArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// auto uses KVM only where the CPU has vmx/svm and /dev/kvm opens.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Seconds before a hung guest is killed.
    #[arg(long, default_value = "120", value_parser = parse_seconds)]
    timeout: Duration,
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// vCPUs (0: 1 under TCG, where it is faster, 2 under KVM).
    #[arg(long, default_value_t = 0)]
    cpus: u32,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Show the kernel's console messages (drops `quiet`).
    #[arg(long)]
    verbose_console: bool,
    /// Boot the bzImage even when a PVH vmlinux could be used.
    #[arg(long)]
    no_pvh: bool,
    /// Extra disk image, FILE or FILE,ro (repeatable).
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// Environment of the payload, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    env: Vec<OsString>,
    /// Working directory of the payload in the guest.
    #[arg(long)]
    cwd: Option<OsString>,
    /// Extra qemu arguments (repeatable).
    #[arg(long = "qemu-arg", allow_hyphen_values = true)]
    qemu_args: Vec<OsString>,
}

impl VmArgs {
    fn options(self) -> RunOptions {
        RunOptions {
            kernel: self.machine.kernel,
            accel: self.accel,
            profile: self.machine.machine,
            timeout: self.timeout,
            memory_mb: self.memory,
            cpus: self.cpus,
            append: self.append,
            quiet: !self.verbose_console,
            pvh: !self.no_pvh,
            compression: self.machine.compression,
            frozen_plan: self.machine.frozen_plan,
            include: self.machine.include,
            modules_dir: self.machine.modules_dir,
            host_modules: self.machine.host_modules,
            modules: self.machine.modules,
            disks: self.disks.iter().map(|d| parse_disk(d)).collect(),
            qemu_args: self.qemu_args,
            env: self.env,
            cwd: self.cwd,
            ..RunOptions::default()
        }
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
        /// Forward this process's stdin to the payload (default: /dev/null).
        #[arg(short = 'i', long)]
        stdin: bool,
        /// The command and its arguments, passed unchanged. Without one,
        /// the guest boots in root mode (give --append root=...).
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// Boot a VM with CMD (default /bin/sh) on an interactive serial console.
    Boot {
        #[command(flatten)]
        vm: VmArgs,
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
        /// KEY=VALUE overrides of A (machine=, append=, quiet=, pvh=, compression=, frozen_plan=, cpus=, memory=).
        #[arg(long)]
        versus: Vec<String>,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// Write an initrd (base archive: init and modules; plus CMD when given).
    Build {
        #[command(flatten)]
        machine: MachineArgs,
        /// Output file.
        #[arg(short, long, default_value = "initrd.img")]
        output: PathBuf,
        /// Print the manifest: every entry, its size and why it is there.
        #[arg(long)]
        list: bool,
        #[arg(last = true)]
        cmd: Vec<OsString>,
    },
    /// The phase table of a saved boot log (`kestrel run --log`), or of a
    /// boot made now (`--boot`, running /bin/true with the default machine).
    Analyze {
        #[arg(required_unless_present = "boot")]
        log: Option<PathBuf>,
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

fn parse_disk(s: &str) -> (PathBuf, bool) {
    match s.strip_suffix(",ro") {
        Some(p) => (p.into(), true),
        None => (s.into(), false),
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run {
            vm,
            report,
            log,
            stdin,
            cmd,
        } => {
            let verbose_console = vm.verbose_console;
            let opts = RunOptions {
                stdin: stdin.then_some(kestrel::vm::StdinSource::Inherit),
                ..vm.options()
            };
            let outcome = run::run(&cmd, &opts)?;
            if verbose_console {
                for line in &outcome.log.console {
                    eprintln!("console: {}", line.item);
                }
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
        Command::Boot { vm, cmd } => {
            let cmd = if cmd.is_empty() {
                vec![OsString::from("/bin/sh")]
            } else {
                cmd
            };
            let opts = RunOptions {
                interactive: true,
                timeout: Duration::from_secs(365 * 24 * 3600),
                ..vm.options()
            };
            Ok(run::run(&cmd, &opts)?.exit_code)
        }
        Command::Bench {
            vm,
            n,
            j,
            versus,
            json,
            cmd,
        } => {
            let cmd = if cmd.is_empty() {
                vec![OsString::from("/bin/true")]
            } else {
                cmd
            };
            let a = RunOptions {
                stream_output: false,
                ..vm.options()
            };
            let json_text = if versus.is_empty() {
                let r = bench::bench(&cmd, &a, n, j);
                print!("{}", bench::render(&r));
                serde_json::to_string_pretty(&r)?
            } else {
                let mut b = a.clone();
                for o in &versus {
                    bench::apply_override(&mut b, o)?;
                }
                let c = bench::compare(&cmd, &a, &b, n, j);
                println!("A: the options given; B: A with {}", versus.join(" "));
                print!("{}", bench::render_comparison(&c));
                serde_json::to_string_pretty(&c)?
            };
            if let Some(path) = json {
                std::fs::write(&path, json_text)
                    .with_context(|| format!("failed to write {}", path.display()))?;
            }
            Ok(0)
        }
        Command::Build {
            machine,
            output,
            list,
            cmd,
        } => {
            let opts = RunOptions {
                kernel: machine.kernel.clone(),
                modules_dir: machine.modules_dir.clone(),
                ..RunOptions::default()
            };
            let kernel = run::load_kernel(&RunOptions { pvh: false, ..opts })?;
            let init = initrd::find_init()?;
            let mut modules: Vec<String> = machine
                .machine
                .spec()
                .modules
                .iter()
                .map(|s| s.to_string())
                .collect();
            modules.extend(machine.modules);
            let aliases = if machine.host_modules {
                initrd::host_modaliases()?
            } else {
                Vec::new()
            };
            let spec = BuildSpec {
                init: &init,
                kernel: &kernel,
                modules,
                aliases,
                compression: machine.compression,
                frozen_plan: machine.frozen_plan,
            };
            let base = initrd::base_archive(&spec)?;
            let run_archive = if cmd.is_empty() {
                None
            } else {
                Some(initrd::run_archive(
                    &initrd::resolve_payload(&cmd, vec![], None)?,
                    &machine.include,
                    false,
                    false,
                )?)
            };
            if list {
                for archive in std::iter::once(&base).chain(run_archive.as_ref()) {
                    for e in archive.manifest() {
                        println!("{:>10}  {:<60} {}", e.size, e.path, e.reason);
                    }
                }
            }
            let cached = initrd::cached_base(&base, machine.compression, &run::cache_dir()?)?;
            initrd::write_initrd(&cached, run_archive.as_ref(), &output)?;
            eprintln!(
                "kestrel: wrote {} for kernel {}",
                output.display(),
                kernel.release
            );
            Ok(0)
        }
        Command::Analyze {
            log,
            boot,
            json,
            svg,
        } => {
            let boot_log = match log {
                Some(log) => {
                    let text = std::fs::read_to_string(&log)
                        .with_context(|| format!("failed to read {}", log.display()))?;
                    vm::BootLog::read_log(&text)?
                }
                None => {
                    debug_assert!(boot);
                    let opts = RunOptions {
                        stream_output: false,
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
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                print!("{}", analyze::render_table(&a));
            }
            Ok(0)
        }
    }
}
