//! The qemu launcher: acceleration, the argv for a machine and its devices
//! (only those asked for), and a VM process that is always reaped: it runs
//! in its own process group, is killed with the group on drop, and dies
//! with us (PR_SET_PDEATHSIG) if this process is killed first.

use crate::machine::{Disk, DiskSource, Machine, Profile, SharedDir};
use crate::virtiofsd::{self, Daemon};
use anyhow::{bail, Context, Result};
use kestrel_proto::config::ShareFs;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// Picks the accelerator and what to say about it: for `auto`, why TCG
/// was chosen; for `kvm` asked for where it cannot work, that warning.
fn resolve_accel(accel: Accel) -> (Accel, Option<String>) {
    let unusable = || kvm_unusable_reason(Path::new("/proc/cpuinfo"), Path::new("/dev/kvm"));
    match accel {
        Accel::Auto => match unusable() {
            None => (Accel::Kvm, None),
            Some(why) => (
                Accel::Tcg,
                Some(format!("using TCG (software emulation): {why}")),
            ),
        },
        Accel::Kvm => (
            Accel::Kvm,
            unusable().map(|why| format!("--accel kvm asked for, but {why}; --accel tcg works")),
        ),
        Accel::Tcg => (Accel::Tcg, None),
    }
}

/// [`resolve_accel`], saying once per process what it found.
pub fn pick_accel(accel: Accel) -> Accel {
    static SAID: std::sync::Once = std::sync::Once::new();
    let (accel, said) = resolve_accel(accel);
    if let Some(said) = said {
        SAID.call_once(|| eprintln!("kestrel: {said}"));
    }
    accel
}

/// Why KVM cannot run a stock kernel here, or None when it can. A nested,
/// paravirtual /dev/kvm without vmx/svm exists but hangs a stock kernel.
fn kvm_unusable_reason(cpuinfo: &Path, kvm: &Path) -> Option<String> {
    let info = std::fs::read_to_string(cpuinfo).unwrap_or_default();
    let has_virt = info
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_virt {
        return Some(format!(
            "no vmx/svm flag in {} (a /dev/kvm without them cannot run a stock kernel)",
            cpuinfo.display()
        ));
    }
    match std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open {}: {e}", kvm.display())),
    }
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

/// Everything qemu needs for one boot.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The qemu binary (see [`find_qemu`]).
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel command line: any bytes, as the kernel takes them.
    pub append: OsString,
    /// Kvm or Tcg (resolved).
    pub accel: Accel,
    pub machine: Machine,
    pub memory_mb: u32,
    pub cpus: u32,
    pub events_socket: PathBuf,
    pub extra_args: Vec<OsString>,
    /// qemu's stdin/stdout (the serial console) stay on our terminal.
    pub interactive: bool,
    /// The virtio-fs daemon, when a share uses virtio-fs.
    pub virtiofsd: Option<Daemon>,
    /// The run's private folder: the daemons' sockets and logs.
    pub run_dir: PathBuf,
    /// Console lines that are not the init's records go to stdout as they
    /// come (root mode: the booted system's own init speaks there).
    pub echo_console: bool,
}

/// The virtio device model `model` on this profile's transport.
fn virtio(profile: Profile, model: &str) -> String {
    format!("{model}-{}", profile.spec().virtio_suffix)
}

impl VmConfig {
    /// The qemu argv (without the program).
    pub fn args(&self) -> Vec<OsString> {
        let profile = self.machine.profile;
        let mut a: Vec<OsString> = Vec::new();
        a.extend(self.machine_args().into_iter().map(OsString::from));
        // The instants before the kernel, for the analysis.
        a.extend(
            crate::qemu_trace::args(profile)
                .into_iter()
                .map(OsString::from),
        );
        a.extend(console_args().into_iter().map(OsString::from));
        a.extend(
            events_port_args(profile, &self.events_socket)
                .into_iter()
                .map(OsString::from),
        );
        for (i, disk) in self.machine.disks.iter().enumerate() {
            a.extend(disk_args(profile, i, disk).into_iter().map(OsString::from));
        }
        if self.machine.net {
            a.extend(
                net_args(profile, &self.machine.net_options)
                    .into_iter()
                    .map(OsString::from),
            );
        }
        if self.machine.rng {
            a.extend(rng_args(profile).into_iter().map(OsString::from));
        }
        for share in &self.machine.shares {
            let socket = self.socket(share);
            a.extend(
                share_args(profile, share, &socket)
                    .into_iter()
                    .map(OsString::from),
            );
        }
        a.extend(["-kernel".into(), self.kernel.clone().into()]);
        a.extend(["-initrd".into(), self.initrd.clone().into()]);
        a.extend(["-append".into(), self.append.clone()]);
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// The vhost-user socket of a virtio-fs share.
    pub fn socket(&self, share: &SharedDir) -> PathBuf {
        self.run_dir.join(format!("{}.sock", share.tag))
    }

    /// The machine, accelerator, CPU and memory. virtio-fs needs the
    /// guest's memory shared with the daemon: a memfd backend.
    fn machine_args(&self) -> Vec<String> {
        let kvm = self.accel == Accel::Kvm;
        let shared_memory = self
            .machine
            .shares
            .iter()
            .any(|s| s.fs == ShareFs::Virtiofs);
        let machine = if shared_memory {
            format!("{},memory-backend=mem", self.machine.profile.spec().machine)
        } else {
            self.machine.profile.spec().machine.to_owned()
        };
        let mut a: Vec<String> = [
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-accel",
            if kvm { "kvm" } else { "tcg" },
            "-M",
            &machine,
            // TCG's default CPU (qemu64) lacks SSE4.2 and more, so drivers
            // such as crc32c_intel fail with ENODEV where real hardware has them.
            "-cpu",
            if kvm { "host" } else { "max" },
            "-m",
            &self.memory_mb.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ]
        .map(String::from)
        .to_vec();
        if shared_memory {
            a.extend([
                "-object".into(),
                format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    self.memory_mb
                ),
            ]);
            // microvm's virtio-mmio devices are legacy (version 1) unless
            // told otherwise, and vhost-user daemons refuse legacy devices
            // ("virtio legacy devices aren't supported by libvhost-user").
            if self.machine.profile == Profile::Microvm {
                a.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
            }
        }
        a
    }
}

/// A shared folder: virtio-9p served by qemu itself (`security_model=none`:
/// files are the host user's, nothing needs root; `multidevs=remap`: a
/// tree that spans mounts, such as /, gets unique inode numbers; read-only
/// enforced by qemu), or a virtio-fs device on the daemon's socket.
fn share_args(profile: Profile, share: &SharedDir, socket: &Path) -> Vec<String> {
    let tag = &share.tag;
    match share.fs {
        ShareFs::P9 => {
            let mut fsdev = format!(
                "local,id={tag},path={},security_model=none,multidevs=remap",
                qemu_escape(&share.host)
            );
            if !share.writable {
                fsdev.push_str(",readonly=on");
            }
            vec![
                "-fsdev".into(),
                fsdev,
                "-device".into(),
                format!(
                    "{},fsdev={tag},mount_tag={tag}",
                    virtio(profile, "virtio-9p")
                ),
            ]
        }
        ShareFs::Virtiofs => vec![
            "-chardev".into(),
            format!("socket,id={tag},path={}", qemu_escape(socket)),
            "-device".into(),
            format!(
                "{},chardev={tag},tag={tag}",
                virtio(profile, "vhost-user-fs")
            ),
        ],
    }
}

/// The serial console on qemu's stdout, read by the host tool.
fn console_args() -> Vec<String> {
    [
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]
    .map(String::from)
    .to_vec()
}

/// virtio-serial with the events port, a unix socket we listen on.
fn events_port_args(profile: Profile, socket: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        format!("{},id=vserial", virtio(profile, "virtio-serial")),
        "-chardev".into(),
        format!("socket,id=events,path={}", qemu_escape(socket)),
        "-device".into(),
        format!(
            "virtserialport,bus=vserial.0,chardev=events,name={}",
            kestrel_proto::EVENTS_PORT
        ),
    ]
}

/// A disk as a `-blockdev` node and a virtio-blk device. `-drive file=`
/// would take `a:b.img` for protocol `a`; the file driver's `filename`
/// is a plain path (commas doubled, as every qemu option value).
fn disk_args(profile: Profile, i: usize, disk: &Disk) -> Vec<String> {
    let node = format!("disk{i}");
    let mut blockdev = match &disk.source {
        DiskSource::File(path) => {
            format!(
                "driver=file,node-name={node},filename={}",
                qemu_escape(path)
            )
        }
        DiskSource::Zeroes(size) => {
            format!("driver=null-co,node-name={node},size={size},read-zeroes=on")
        }
    };
    if disk.read_only {
        blockdev.push_str(",read-only=on");
    }
    vec![
        "-blockdev".into(),
        blockdev,
        "-device".into(),
        format!(
            "{},drive={node},serial={node}",
            virtio(profile, "virtio-blk")
        ),
    ]
}

/// qemu user networking (slirp): the guest reaches the host's own
/// 127.0.0.1 as 10.0.2.2.
fn net_args(profile: Profile, options: &[String]) -> Vec<String> {
    let mut netdev = "user,id=net0".to_owned();
    for o in options {
        netdev.push(',');
        netdev.push_str(o);
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("{},netdev=net0", virtio(profile, "virtio-net")),
    ]
}

fn rng_args(profile: Profile) -> Vec<String> {
    vec![
        "-object".into(),
        "rng-random,id=rng0,filename=/dev/urandom".into(),
        "-device".into(),
        format!("{},rng=rng0", virtio(profile, "virtio-rng")),
    ]
}

/// Fallback TSC rate when it cannot be measured.
const TSC_KHZ_FALLBACK: u64 = 2_000_000;

/// `tsc_early_khz=` for machines without a timer to calibrate against
/// (microvm). It must be the real rate: under TCG the guest's TSC is the
/// host's, and a wrong hint makes every guest timestamp run fast or slow
/// (2 GHz on a 2.6 GHz host made guest clocks run 1.3x fast).
pub fn tsc_hint() -> String {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let khz = KHZ.get_or_init(|| {
        crate::sys::measure_tsc_khz(std::time::Duration::from_millis(20))
            .unwrap_or(TSC_KHZ_FALLBACK)
    });
    format!("tsc_early_khz={khz}")
}

/// A path inside a qemu `key=value,...` option: commas are doubled, or
/// they would end the value (and could inject options).
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Kernel options that cut the kernel's time to /init without changing
/// what a payload sees, each kept for its measured gain (BENCHMARKS.md):
/// the crypto self-tests skipped (the algorithms are the same; about 300
/// ms on 6.1, 450 on 6.12 under TCG), SMP alternatives not patched back
/// (under TCG patching code is costly), and the TSC trusted, so the
/// clocksource watchdog does not demote it to jiffies mid-run (it did in
/// a quarter of boots: 4 ms clock resolution for the payload).
pub const FAST_KERNEL_OPTIONS: &[&str] = &["cryptomgr.notests", "noreplace-smp", "tsc=reliable"];

/// The kernel command line for a Kestrel boot; `speedups` adds
/// [`FAST_KERNEL_OPTIONS`]. `extra` is the user's, any bytes (the init
/// reads a command line that is not UTF-8).
pub fn kernel_append(profile: Profile, quiet: bool, speedups: bool, extra: &OsStr) -> OsString {
    let mut parts: Vec<String> = [
        "console=ttyS0",
        "panic=-1",
        "printk.devkmsg=on",
        "rdinit=/init",
        // The init waits for the events port only when told it is attached.
        kestrel_proto::cmdline::opt::EVENTS,
    ]
    .into_iter()
    .chain(FAST_KERNEL_OPTIONS.iter().copied().filter(|_| speedups))
    .map(String::from)
    .collect();
    if quiet {
        parts.push("quiet".into());
    }
    if profile == Profile::Microvm {
        parts.push(tsc_hint());
    }
    let mut line = OsString::from(parts.join(" "));
    if !extra.is_empty() {
        line.push(" ");
        line.push(extra);
    }
    line
}

pub fn find_qemu() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(QEMU))
        .find(|p| p.is_file())
        .with_context(|| format!("{QEMU} not found on PATH; install it (make setup, or apt-get install qemu-system-x86)"))
}

/// A running qemu and the virtio-fs daemons it uses; killed with their
/// process groups when dropped.
pub struct Vm {
    pub child: Child,
    daemons: Vec<virtiofsd::Running>,
}

impl Vm {
    pub fn spawn(config: &VmConfig) -> Result<Vm> {
        if !config.kernel.is_file() {
            bail!("kernel {} does not exist", config.kernel.display());
        }
        let daemons = start_daemons(config)?;
        let mut cmd = Command::new(&config.qemu);
        cmd.args(config.args()).stderr(Stdio::piped());
        if config.interactive {
            // qemu must stay in our (foreground) process group to use the
            // terminal, or it is stopped with SIGTTOU/SIGTTIN.
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        } else {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .process_group(0);
        }
        crate::sys::prepare_child(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", config.qemu.display()))?;
        Ok(Vm { child, daemons })
    }

    pub fn kill(&mut self) {
        // A qemu that leads its own group (not interactive) is killed with
        // whatever it started.
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            if rustix::process::getpgid(Some(pid)).ok() == Some(pid) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.daemons.clear();
    }

    /// A virtio-fs daemon that exited while the VM runs, and why: the
    /// guest waits on its share forever without it.
    pub fn dead_daemon(&mut self) -> Option<String> {
        self.daemons.iter_mut().find_map(virtiofsd::Running::exited)
    }
}

/// One virtio-fs daemon per virtio-fs share, each with its socket made
/// (qemu connects at start).
fn start_daemons(config: &VmConfig) -> Result<Vec<virtiofsd::Running>> {
    let mut daemons = Vec::new();
    for share in config
        .machine
        .shares
        .iter()
        .filter(|s| s.fs == ShareFs::Virtiofs)
    {
        let Some(daemon) = &config.virtiofsd else {
            bail!(
                "share {} uses virtio-fs but no virtiofsd was found",
                share.tag
            );
        };
        let log = config.run_dir.join(format!("{}.log", share.tag));
        daemons.push(virtiofsd::Running::start(
            daemon,
            &config.socket(share),
            &share.host,
            share.writable,
            &log,
        )?);
    }
    Ok(daemons)
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        // The daemons go with the VM, whether it ended or was killed.
        self.daemons.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_without_vmx_or_svm() {
        let dir = tempfile::tempdir().unwrap();
        let cpuinfo = dir.path().join("cpuinfo");
        std::fs::write(&cpuinfo, "processor: 0\nflags\t\t: fpu sse2 hypervisor\n").unwrap();
        let why = kvm_unusable_reason(&cpuinfo, Path::new("/dev/kvm")).unwrap();
        assert!(why.contains("no vmx/svm"), "{why}");
        std::fs::write(&cpuinfo, "flags\t\t: fpu vmx\n").unwrap();
        let why = kvm_unusable_reason(&cpuinfo, &dir.path().join("no-kvm")).unwrap();
        assert!(why.contains("cannot open"), "{why}");
    }

    fn config(machine: Machine) -> VmConfig {
        VmConfig {
            qemu: QEMU.into(),
            kernel: "k".into(),
            initrd: "i".into(),
            append: kernel_append(machine.profile, true, true, OsStr::new("")),
            accel: Accel::Tcg,
            machine,
            memory_mb: 256,
            cpus: 1,
            events_socket: "/tmp/ev".into(),
            extra_args: vec![],
            interactive: false,
            virtiofsd: None,
            run_dir: "/run/k".into(),
            echo_console: false,
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn microvm_uses_mmio_devices_and_tsc_hint() {
        let cfg = config(Machine::default());
        let args = strings(&cfg.args());
        assert!(args.iter().any(|a| a.starts_with("virtio-serial-device")));
        assert!(!args.iter().any(|a| a.contains("-pci")));
        let append = cfg.append.to_string_lossy();
        assert!(append.contains("tsc_early_khz="));
        assert!(append.contains("kestrel.events"), "{append}");
    }

    /// By default a VM has the serial console and the events port and
    /// nothing else: no disk, no network, no rng.
    #[test]
    fn devices_come_only_when_asked_for() {
        let bare = strings(&config(Machine::default()).args());
        for absent in ["-blockdev", "-drive", "-netdev", "-object"] {
            assert!(!bare.iter().any(|a| a == absent), "{absent} in {bare:?}");
        }
        assert!(
            !bare.iter().any(|a| a.contains("virtio-blk")
                || a.contains("virtio-net")
                || a.contains("virtio-rng")),
            "{bare:?}"
        );
        let full = strings(
            &config(Machine {
                profile: Profile::Q35,
                disks: vec![Disk::parse("/d/a.img,ro"), Disk::zeroes(4096)],
                net: true,
                rng: true,
                ..Machine::default()
            })
            .args(),
        );
        let has = |s: &str| full.iter().any(|a| a == s);
        assert!(
            has("driver=file,node-name=disk0,filename=/d/a.img,read-only=on"),
            "{full:?}"
        );
        assert!(has("virtio-blk-pci,drive=disk0,serial=disk0"), "{full:?}");
        assert!(
            has("driver=null-co,node-name=disk1,size=4096,read-zeroes=on"),
            "{full:?}"
        );
        assert!(
            has("virtio-net-pci,netdev=net0") && has("user,id=net0"),
            "{full:?}"
        );
        assert!(has("virtio-rng-pci,rng=rng0"), "{full:?}");
    }

    fn shared(fs: ShareFs, tag: &str, host: &str, writable: bool) -> SharedDir {
        SharedDir {
            fs,
            tag: tag.into(),
            host: host.into(),
            guest: "/mnt".into(),
            writable,
            root: false,
        }
    }

    /// 9p: an fsdev qemu serves itself (no root needed, unique inodes
    /// across mounts, read-only enforced by qemu) and its device; no
    /// shared memory. virtio-fs: the daemon's socket, the device, the
    /// guest's memory in a shared memfd, modern virtio-mmio on microvm.
    #[test]
    fn shares_become_9p_or_virtio_fs_devices() {
        let cfg = config(Machine {
            shares: vec![
                shared(ShareFs::P9, "kestrel-root", "/", false),
                shared(ShareFs::P9, "kestrel-share0", "/a,b", true),
            ],
            ..Machine::default()
        });
        let args = strings(&cfg.args());
        let has = |s: &str| args.iter().any(|a| a == s);
        assert!(
            has("local,id=kestrel-root,path=/,security_model=none,multidevs=remap,readonly=on"),
            "{args:?}"
        );
        assert!(has(
            "local,id=kestrel-share0,path=/a,,b,security_model=none,multidevs=remap"
        ));
        assert!(has(
            "virtio-9p-device,fsdev=kestrel-root,mount_tag=kestrel-root"
        ));
        assert!(has("microvm,acpi=on"), "{args:?}");
        assert!(!args.iter().any(|a| a.contains("memory-backend")));

        let mut cfg = config(Machine {
            profile: Profile::Microvm,
            shares: vec![shared(ShareFs::Virtiofs, "kestrel-share0", "/d", true)],
            ..Machine::default()
        });
        cfg.memory_mb = 300;
        let args = strings(&cfg.args());
        let has = |s: &str| args.iter().any(|a| a == s);
        assert!(has("microvm,acpi=on,memory-backend=mem"), "{args:?}");
        assert!(has("memory-backend-memfd,id=mem,size=300M,share=on"));
        assert!(has("virtio-mmio.force-legacy=false"));
        assert!(has(
            "socket,id=kestrel-share0,path=/run/k/kestrel-share0.sock"
        ));
        assert!(has(
            "vhost-user-fs-device,chardev=kestrel-share0,tag=kestrel-share0"
        ));
        let q35 = strings(
            &config(Machine {
                profile: Profile::Q35,
                shares: vec![shared(ShareFs::Virtiofs, "t", "/d", false)],
                ..Machine::default()
            })
            .args(),
        );
        assert!(q35.iter().any(|a| a == "vhost-user-fs-pci,chardev=t,tag=t"));
        assert!(q35.iter().any(|a| a == "q35,memory-backend=mem"));
        assert!(!q35.iter().any(|a| a.contains("force-legacy")));
    }

    /// `--net-opt` values join the user network's options.
    #[test]
    fn net_options_extend_the_user_network() {
        let args = strings(
            &config(Machine {
                net: true,
                net_options: vec![
                    "restrict=on".into(),
                    "guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080".into(),
                ],
                ..Machine::default()
            })
            .args(),
        );
        assert!(
            args.iter()
                .any(|a| a
                    == "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080")
        );
    }

    /// A real qemu opens a disk whose relative path has a colon and a
    /// comma as that file (`-drive file=x:y.img` says "Unknown protocol
    /// 'x'"), read-only when asked.
    #[test]
    fn qemu_opens_a_disk_path_with_colon_and_comma_as_a_plain_file() {
        let Ok(qemu) = find_qemu() else {
            eprintln!("SKIP: no {QEMU} (make setup)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let name = "x:y,z.img";
        std::fs::write(dir.path().join(name), vec![0u8; 1 << 20]).unwrap();
        let disk = Disk::parse(&format!("{name},ro"));
        let mut cmd = Command::new(qemu);
        cmd.current_dir(dir.path())
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-accel",
                "tcg",
                "-M",
                "microvm",
                "-S",
            ])
            .args(disk_args(Profile::Microvm, 0, &disk))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let want = dir.path().join(name);
        let fd_dir = format!("/proc/{}/fd", child.id());
        let t0 = std::time::Instant::now();
        let opened = loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("qemu exited ({status}): {err}");
            }
            let open = std::fs::read_dir(&fd_dir)
                .map(|d| {
                    d.flatten()
                        .any(|e| std::fs::read_link(e.path()).ok() == Some(want.clone()))
                })
                .unwrap_or(false);
            if open || t0.elapsed() > std::time::Duration::from_secs(20) {
                break open;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(opened, "qemu did not open {}", want.display());
    }
}
