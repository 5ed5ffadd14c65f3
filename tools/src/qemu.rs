//! The qemu launcher: acceleration, machine profiles (as data), and a VM
//! process that is always reaped: it runs in its own process group, is
//! killed with the group on drop, and dies with us (PR_SET_PDEATHSIG) if
//! this process is killed first.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
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

/// Picks the accelerator; for `auto`, the reason TCG was chosen.
pub fn resolve_accel(accel: Accel) -> (Accel, Option<String>) {
    match accel {
        Accel::Auto => match kvm_unusable_reason(Path::new("/proc/cpuinfo"), Path::new("/dev/kvm"))
        {
            None => (Accel::Kvm, None),
            Some(why) => (Accel::Tcg, Some(why)),
        },
        other => (other, None),
    }
}

/// Why KVM cannot run a stock kernel here, or None when it can. A nested,
/// paravirtual /dev/kvm without vmx/svm exists but hangs a stock kernel.
pub fn kvm_unusable_reason(cpuinfo: &Path, kvm: &Path) -> Option<String> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// i440fx, SeaBIOS, virtio-pci.
    Pc,
    /// q35, SeaBIOS, virtio-pci (PCIe).
    Q35,
    /// microvm: qboot, virtio-mmio, no PCI probing.
    Microvm,
}

/// A machine profile: the flags that make it fast and its device set.
pub struct ProfileSpec {
    pub machine: &'static str,
    /// Device model suffix: virtio-serial-pci vs virtio-serial-device.
    pub virtio_suffix: &'static str,
    /// Extra kernel parameters this machine needs.
    pub append: &'static str,
    /// Modules the guest needs for this machine's devices.
    pub modules: &'static [&'static str],
}

pub const PCI_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "ext4",
];
pub const MMIO_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "ext4",
];

impl Profile {
    pub fn spec(self) -> ProfileSpec {
        match self {
            Profile::Pc => ProfileSpec {
                machine: "pc",
                virtio_suffix: "pci",
                append: "",
                modules: PCI_MODULES,
            },
            Profile::Q35 => ProfileSpec {
                machine: "q35",
                virtio_suffix: "pci",
                append: "",
                modules: PCI_MODULES,
            },
            // Under TCG the microvm kernel often hangs calibrating the TSC
            // against a PIT it does not have; `kernel_append` tells it the
            // frequency (see `tsc_hint`).
            Profile::Microvm => ProfileSpec {
                machine: "microvm,acpi=on",
                virtio_suffix: "device",
                append: "",
                modules: MMIO_MODULES,
            },
        }
    }
}

/// Everything qemu needs for one boot.
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub accel: Accel,
    pub profile: Profile,
    pub memory_mb: u32,
    pub cpus: u32,
    pub events_socket: PathBuf,
    pub disks: Vec<(PathBuf, bool)>,
    pub extra_args: Vec<OsString>,
    /// qemu's stdin/stdout (the serial console) stay on our terminal.
    pub interactive: bool,
}

impl VmConfig {
    /// The qemu argv (without the program).
    pub fn args(&self) -> Vec<OsString> {
        let spec = self.profile.spec();
        let dev = |model: &str| format!("{model}-{}", spec.virtio_suffix);
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        for s in [
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
        ] {
            push(s);
        }
        push("-accel");
        push(match self.accel {
            Accel::Kvm => "kvm",
            _ => "tcg",
        });
        push("-M");
        push(spec.machine);
        // TCG's default CPU (qemu64) lacks SSE4.2 and more, so drivers such
        // as crc32c_intel fail with ENODEV where real hardware has them.
        push("-cpu");
        push(if self.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        });
        push("-m");
        push(&self.memory_mb.to_string());
        push("-smp");
        push(&self.cpus.to_string());
        // Serial console on qemu's stdout, read by the host tool.
        push("-chardev");
        push("stdio,id=console,signal=off");
        push("-serial");
        push("chardev:console");
        // virtio-serial with the events port, a unix socket we listen on.
        push("-device");
        push(&format!("{},id=vserial", dev("virtio-serial")));
        push("-chardev");
        push(&format!(
            "socket,id=events,path={}",
            qemu_escape(&self.events_socket)
        ));
        push("-device");
        push(&format!(
            "virtserialport,bus=vserial.0,chardev=events,name={}",
            kestrel_proto::EVENTS_PORT
        ));
        // A scratch disk that costs no file: reads give zeroes.
        push("-blockdev");
        push("driver=null-co,node-name=scratch,size=1048576,read-zeroes=on");
        push("-device");
        push(&format!(
            "{},drive=scratch,serial=kestrel-scratch",
            dev("virtio-blk")
        ));
        for (i, (path, ro)) in self.disks.iter().enumerate() {
            push("-drive");
            push(&format!(
                "if=none,id=disk{i},format=raw,file={}{}",
                qemu_escape(path),
                if *ro { ",readonly=on" } else { "" }
            ));
            push("-device");
            push(&format!(
                "{},drive=disk{i},serial=disk{i}",
                dev("virtio-blk")
            ));
        }
        push("-netdev");
        push("user,id=net0");
        push("-device");
        push(&format!("{},netdev=net0", dev("virtio-net")));
        push("-object");
        push("rng-random,id=rng0,filename=/dev/urandom");
        push("-device");
        push(&format!("{},rng=rng0", dev("virtio-rng")));
        push("-kernel");
        a.push(self.kernel.clone().into());
        a.push("-initrd".into());
        a.push(self.initrd.clone().into());
        a.push("-append".into());
        a.push(self.append.clone().into());
        a.extend(self.extra_args.iter().cloned());
        a
    }
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

/// The kernel command line for a Kestrel boot.
pub fn kernel_append(profile: Profile, quiet: bool, extra: &str) -> String {
    let mut parts: Vec<String> = [
        "console=ttyS0",
        "panic=-1",
        "printk.devkmsg=on",
        "rdinit=/init",
        // The init waits for the events port only when told it is attached.
        kestrel_proto::cmdline::opt::EVENTS,
    ]
    .map(String::from)
    .to_vec();
    if quiet {
        parts.push("quiet".into());
    }
    let spec = profile.spec();
    if !spec.append.is_empty() {
        parts.push(spec.append.into());
    }
    if profile == Profile::Microvm {
        parts.push(tsc_hint());
    }
    if !extra.is_empty() {
        parts.push(extra.into());
    }
    parts.join(" ")
}

/// A running qemu; killed with its process group when dropped.
pub struct Vm {
    pub child: Child,
}

pub fn find_qemu() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(QEMU))
        .find(|p| p.is_file())
        .with_context(|| format!("{QEMU} not found on PATH; install it (make setup, or apt-get install qemu-system-x86)"))
}

impl Vm {
    pub fn spawn(config: &VmConfig) -> Result<Vm> {
        let qemu = find_qemu()?;
        if !config.kernel.is_file() {
            bail!("kernel {} does not exist", config.kernel.display());
        }
        let mut cmd = Command::new(qemu);
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
        crate::sys::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {QEMU}"))?;
        Ok(Vm { child })
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
    }
}

use std::os::unix::process::CommandExt;

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
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

    #[test]
    fn microvm_uses_mmio_devices_and_tsc_hint() {
        let cfg = VmConfig {
            kernel: "k".into(),
            initrd: "i".into(),
            append: kernel_append(Profile::Microvm, true, ""),
            accel: Accel::Tcg,
            profile: Profile::Microvm,
            memory_mb: 256,
            cpus: 1,
            events_socket: "/tmp/ev".into(),
            disks: vec![],
            extra_args: vec![],
            interactive: false,
        };
        let args: Vec<String> = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().any(|a| a.starts_with("virtio-serial-device")));
        assert!(!args.iter().any(|a| a.contains("-pci")));
        assert!(cfg.append.contains("tsc_early_khz="));
    }
}
