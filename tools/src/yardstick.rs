//! The yardsticks `kestrel bench` measures Kestrel against, each booted
//! the way its user would boot it:
//!
//! - the floor: the same kernel on the same machine as a run, with a no-op
//!   init (bench/stopwatch.c) that powers off at once: whatever a run
//!   takes beyond it is Kestrel's cost;
//! - the reference machine: a plain qemu command line (q35, 2 vCPUs,
//!   1 GiB; a virtio console port, an ext4 root on virtio-blk, virtio-net,
//!   virtio-rng; no events port; `root=/dev/vda ro init=/sbin/init`),
//!   booted with Kestrel's initrd (discovering devices, or with a frozen
//!   plan) or with bench/fixed-loader.c's, which only loads a fixed module
//!   list on N threads and mounts the root. Ready is the root's init
//!   started: its /sbin/init (bench/stopwatch.c) prints one record with
//!   its start time on the console, as both inits print theirs.

use crate::build::{self, BuildOptions};
use crate::cache::open_cache;
use crate::kernel::Kernel;
use crate::machine::{Device, Profile, Target};
use crate::qemu::{self, Accel};
use anyhow::{bail, Context, Result};
use kestrel_initrd::Archive;
use kestrel_modules::{ModuleIndex, Request};
use kestrel_proto::{GuestKind, GuestRecord};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `make` puts the yardsticks, relative to a cargo target dir.
const BENCH_IN_TARGET: &str = "bench";
/// Environment variable naming the directory of the yardstick programs.
pub const BENCH_DIR_ENV: &str = "KESTREL_BENCH_DIR";
/// How long one reference boot may take.
const REFERENCE_TIMEOUT: Duration = Duration::from_secs(120);

/// A yardstick program (`stopwatch`, `fixed-loader`): $KESTREL_BENCH_DIR,
/// else target/bench above this executable (`make bench-programs`), else
/// ../lib/kestrel beside it (an installed kestrel).
pub fn find_program(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BENCH_DIR_ENV) {
        return Ok(PathBuf::from(dir).join(name));
    }
    let exe = std::env::current_exe().context("failed to find the kestrel executable")?;
    let in_target = exe.ancestors().map(|d| d.join(BENCH_IN_TARGET).join(name));
    let installed = exe.parent().map(|d| d.join("../lib/kestrel").join(name));
    in_target
        .chain(installed)
        .find(|p| p.is_file())
        .with_context(|| {
            format!("no {name} found (run `make bench-programs`, or set {BENCH_DIR_ENV})")
        })
}

/// The floor's initrd: /dev/console and the no-op init, nothing else.
pub fn floor_initrd(out: &Path) -> Result<()> {
    let mut a = Archive::new();
    a.add_dir("dev", 0o755)?;
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.add_file_from("init", &find_program("stopwatch")?)?;
    std::fs::write(out, a.to_newc(0)?).with_context(|| format!("failed to write {}", out.display()))
}

/// The initrds of the reference machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    /// Kestrel, discovering devices.
    Discovery,
    /// Kestrel with a frozen plan.
    Frozen,
    /// bench/fixed-loader.c with the same modules.
    Fixed,
}

impl Loader {
    pub const ALL: [Loader; 3] = [Loader::Discovery, Loader::Frozen, Loader::Fixed];

    pub fn name(self) -> &'static str {
        match self {
            Loader::Discovery => "kestrel (discovery)",
            Loader::Frozen => "kestrel (frozen plan)",
            Loader::Fixed => "fixed-list loader",
        }
    }
}

/// The reference machine's devices: what the initrds carry drivers for.
fn reference_target() -> Target {
    Target {
        profile: Profile::Q35,
        devices: vec![Device::Disk, Device::Net, Device::Rng],
    }
}

/// Everything the reference boots need, made once: three initrds and the
/// root disk, in a temporary directory.
pub struct Reference {
    dir: tempfile::TempDir,
    kernel: Kernel,
    accel: Accel,
    disk: PathBuf,
}

/// One reference boot, from the console.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReferenceBoot {
    pub loader: Loader,
    /// The init's start, guest CLOCK_BOOTTIME ms.
    pub init_start_ms: f64,
    /// The root's init started, guest ms.
    pub root_init_ms: f64,
    /// Host wall time of the whole qemu run.
    pub wall_ms: f64,
    /// Warnings the init printed (a healthy boot has none).
    pub warnings: Vec<String>,
}

impl ReferenceBoot {
    /// Ready − /init: from the init's start to the root's init started.
    pub fn ready_ms(&self) -> f64 {
        self.root_init_ms - self.init_start_ms
    }
}

impl Reference {
    /// Builds the initrds (the Kestrel ones through the normal build, so
    /// cached) and an ext4 root whose /sbin/init is the stopwatch.
    pub fn prepare(kernel: Kernel) -> Result<Reference> {
        let dir = tempfile::Builder::new()
            .prefix("kestrel-reference-")
            .tempdir()?;
        let cache = open_cache()?;
        let target = reference_target();
        for (loader, frozen_plan) in [(Loader::Discovery, false), (Loader::Frozen, true)] {
            let opts = BuildOptions {
                frozen_plan,
                ..BuildOptions::default()
            };
            let initrd = build::build(&opts, &target, &kernel, None, &cache)?;
            initrd.write(&dir.path().join(initrd_name(loader)))?;
        }
        fixed_loader_initrd(
            &kernel,
            &target,
            &dir.path().join(initrd_name(Loader::Fixed)),
        )?;
        let disk = root_disk(dir.path())?;
        let accel = qemu::pick_accel(Accel::Auto);
        Ok(Reference {
            dir,
            kernel,
            accel,
            disk,
        })
    }

    /// The plain qemu command line of the reference machine.
    fn qemu_args(&self, loader: Loader) -> Vec<String> {
        let mut append = "console=ttyS0 quiet panic=-1 root=/dev/vda ro init=/sbin/init".to_owned();
        if loader != Loader::Fixed {
            // The milestones on the console (there is no events port).
            append.push_str(" kestrel.trace");
        }
        let accel = if self.accel == Accel::Kvm {
            "kvm"
        } else {
            "tcg"
        };
        let cpu = if self.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        };
        let initrd = self.dir.path().join(initrd_name(loader));
        [
            "-M",
            "q35",
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-smp",
            "2",
            "-m",
            "1024",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
            "-device",
            "virtio-serial-pci",
            "-chardev",
            "null,id=port0",
            "-device",
            "virtserialport,chardev=port0,name=org.example.port",
            "-blockdev",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!(
                "driver=file,node-name=root,filename={},read-only=on",
                self.disk.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=root".into(),
            "-netdev".into(),
            "user,id=net0,restrict=on".into(),
            "-device".into(),
            "virtio-net-pci,netdev=net0".into(),
            "-object".into(),
            "rng-random,id=rng0,filename=/dev/urandom".into(),
            "-device".into(),
            "virtio-rng-pci,rng=rng0".into(),
            "-kernel".into(),
            self.kernel.path.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            append,
        ])
        .collect()
    }

    /// Boots once and reads the milestones off the console.
    pub fn boot(&self, loader: Loader) -> Result<ReferenceBoot> {
        let qemu = qemu::find_qemu()?;
        let t0 = Instant::now();
        let out = run_bounded(&qemu, &self.qemu_args(loader), REFERENCE_TIMEOUT)?;
        let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
        let console = String::from_utf8_lossy(&out);
        let mut init_start = None;
        let mut root_init = None;
        let mut warnings = Vec::new();
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with("kestrel: warning") || line.starts_with("kestrel: error") {
                warnings.push(line.to_owned());
            }
            let Ok(t) = GuestRecord::parse_line(line.as_bytes()) else {
                continue;
            };
            let ms = t.t_ns as f64 / 1e6;
            match t.rec.kind() {
                GuestKind::InitStart => init_start = init_start.or(Some(ms)),
                GuestKind::Fact => root_init = root_init.or(Some(ms)),
                _ => {}
            }
        }
        let (Some(init_start_ms), Some(root_init_ms)) = (init_start, root_init) else {
            let tail: Vec<&str> = console.lines().rev().take(20).collect();
            bail!(
                "{} did not reach the root's init; last console lines:\n{}",
                loader.name(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        };
        Ok(ReferenceBoot {
            loader,
            init_start_ms,
            root_init_ms,
            wall_ms,
            warnings,
        })
    }
}

fn initrd_name(loader: Loader) -> &'static str {
    match loader {
        Loader::Discovery => "discovery.img",
        Loader::Frozen => "frozen.img",
        Loader::Fixed => "fixed.img",
    }
}

/// qemu with its console on our pipe, killed at the deadline.
fn run_bounded(qemu: &Path, args: &[String], timeout: Duration) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to start qemu")?;
    let mut stdout = child.stdout.take().context("no qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the reference boot did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the console reader failed"))
}

/// The fixed-list loader's initrd: the same modules Kestrel's initrd
/// carries for this machine (its devices' and ext4's, with their
/// dependencies), listed in dependency order with each one's
/// dependencies as line numbers (see bench/fixed-loader.c).
fn fixed_loader_initrd(kernel: &Kernel, target: &Target, out: &Path) -> Result<()> {
    let dir = kernel
        .modules_dir
        .as_ref()
        .context("the kernel has no module tree")?;
    let index = ModuleIndex::load(dir)?;
    let requests: Vec<Request> = target
        .device_modules()
        .into_iter()
        .map(|m| Request::Name(m.to_owned()))
        .chain([Request::Alias(format!("fs-{}", build::DEFAULT_ROOT_FS))])
        .collect();
    let plan = index.plan(&requests)?;
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "sysroot", "fixed"] {
        a.add_dir(d, 0o755)?;
    }
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.add_file_from("init", &find_program("fixed-loader")?)?;
    let mut list = String::new();
    for entry in &plan.modules {
        let rel = index
            .module_relpath(&entry.name)
            .context("a module without a path")?;
        let path = format!(
            "lib/modules/{}/{}",
            kernel.release,
            build::stored_relpath(rel)
        );
        a.add_file(&path, 0o644, kestrel_initrd::read_module(&entry.path)?)?;
        let deps: Vec<String> = entry.deps.iter().map(usize::to_string).collect();
        list.push_str(&format!("/{path} {}\n", deps.join(",")));
    }
    a.add_file("fixed/list", 0o644, list.into_bytes())?;
    std::fs::write(out, a.to_newc(0)?).with_context(|| format!("failed to write {}", out.display()))
}

/// A small ext4 image whose /sbin/init is the stopwatch (mkfs.ext4 -d: no
/// root, no loop device).
fn root_disk(dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("root");
    for d in ["sbin", "dev", "proc", "sys", "run"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    std::fs::copy(find_program("stopwatch")?, tree.join("sbin/init"))?;
    let image = dir.join("root.ext4");
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("32M")
        .stdout(std::process::Stdio::null())
        .status()
        .context("failed to run mkfs.ext4 (make setup installs e2fsprogs)")?;
    if !status.success() {
        bail!("mkfs.ext4 failed ({status})");
    }
    Ok(image)
}
