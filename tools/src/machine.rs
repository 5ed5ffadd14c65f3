//! The guest machine as data: the profiles (qemu machine type, virtio
//! transport), the devices a VM gets on demand, and which modules each of
//! them needs in the initrd. The qemu launcher turns it into flags; the
//! initrd build turns it into a module list. Pure: no I/O.

use kestrel_proto::config::ShareFs;
use std::path::PathBuf;

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

/// A machine profile: the flags that make it fast and its virtio transport.
pub struct ProfileSpec {
    pub machine: &'static str,
    /// Device model suffix: virtio-serial-pci vs virtio-serial-device.
    pub virtio_suffix: &'static str,
    /// The module that finds this machine's virtio devices.
    pub transport: &'static str,
    /// Drivers of the devices the board itself brings (chipset, legacy PC
    /// devices, ACPI buttons, firmware config) that a Kestrel VM does not
    /// use: left out of the initrd on purpose, so not reported missing.
    pub board_modules: &'static [&'static str],
}

// The board devices: on every profile the ACPI power button, fw_cfg
// and the PC speaker (and CPU frequency drivers on pc and q35); on pc and
// q35 the i8042 keyboard controller's devices and the chipset's.
const PC: ProfileSpec = ProfileSpec {
    machine: "pc",
    virtio_suffix: "pci",
    transport: "virtio_pci",
    board_modules: &[
        "button",
        "acpi_cpufreq",
        "pcc_cpufreq",
        "qemu_fw_cfg",
        "pcspkr",
        "serio_raw",
        "psmouse",
        "evdev",
        "floppy",
        "ata_piix",
        "ata_generic",
        "i2c_piix4",
    ],
};
const Q35: ProfileSpec = ProfileSpec {
    machine: "q35",
    virtio_suffix: "pci",
    transport: "virtio_pci",
    board_modules: &[
        "button",
        "acpi_cpufreq",
        "pcc_cpufreq",
        "qemu_fw_cfg",
        "pcspkr",
        "serio_raw",
        "psmouse",
        "evdev",
        "lpc_ich",
        "ahci",
        "i2c_i801",
    ],
};
/// Under TCG the microvm kernel often hangs calibrating the TSC against a
/// PIT it does not have; the kernel command line tells it the frequency
/// (see `qemu::tsc_hint`).
const MICROVM: ProfileSpec = ProfileSpec {
    machine: "microvm,acpi=on",
    virtio_suffix: "device",
    transport: "virtio_mmio",
    board_modules: &["button", "qemu_fw_cfg", "pcspkr"],
};

impl Profile {
    pub fn spec(self) -> &'static ProfileSpec {
        match self {
            Profile::Pc => &PC,
            Profile::Q35 => &Q35,
            Profile::Microvm => &MICROVM,
        }
    }
}

/// The kinds of device a VM can have. Every VM has the serial console
/// (the 8250 driver is built into every distribution kernel) and the
/// events port; the rest come only when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    /// virtio-serial with the `org.kestrel.events` port: always there.
    EventsPort,
    /// A virtio-blk disk (`--disk`).
    Disk,
    /// virtio-net with qemu user networking (`--net`).
    Net,
    /// virtio-rng fed from the host's /dev/urandom (`--rng`).
    Rng,
    /// A host folder over virtio-9p (`--share` without virtiofsd).
    Share9p,
    /// A host folder over virtio-fs (`--share` with virtiofsd).
    Virtiofs,
    /// The host's root under a tmpfs overlay (`--root host`): not a
    /// device, but a filesystem the init needs for it.
    HostRoot,
}

/// Which modules each device needs, besides the machine's transport
/// (drivers built into the kernel are skipped by the module plan).
const DEVICE_MODULES: &[(Device, &[&str])] = &[
    (Device::EventsPort, &["virtio_console"]),
    (Device::Disk, &["virtio_blk"]),
    (Device::Net, &["virtio_net"]),
    (Device::Rng, &["virtio_rng"]),
    // The transport is the driver of the device (it binds by MODALIAS);
    // the filesystem is what `mount -t 9p` asks for (fs-9p).
    (Device::Share9p, &["9pnet_virtio", "9p"]),
    (Device::Virtiofs, &["virtiofs"]),
    (Device::HostRoot, &["overlay"]),
];

/// The kernel option behind each module a device needs, to name it when
/// the kernel has neither the module nor the driver built in.
pub const MODULE_OPTIONS: &[(&str, &str)] = &[
    ("virtio_mmio", "CONFIG_VIRTIO_MMIO"),
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("virtio_console", "CONFIG_VIRTIO_CONSOLE"),
    ("virtio_blk", "CONFIG_VIRTIO_BLK"),
    ("virtio_net", "CONFIG_VIRTIO_NET"),
    ("virtio_rng", "CONFIG_HW_RANDOM_VIRTIO"),
    ("9pnet_virtio", "CONFIG_NET_9P_VIRTIO"),
    ("9p", "CONFIG_9P_FS"),
    ("virtiofs", "CONFIG_VIRTIO_FS"),
    ("overlay", "CONFIG_OVERLAY_FS"),
];

/// The kernel option that provides `module`, when the table knows it.
pub fn module_option(module: &str) -> Option<&'static str> {
    MODULE_OPTIONS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, o)| *o)
}

/// What an initrd is built for: the machine profile and the devices it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub profile: Profile,
    /// Devices besides the events port, each once.
    pub devices: Vec<Device>,
}

impl Target {
    /// The modules the devices need: the transport first, then each
    /// device's, in table order.
    pub fn device_modules(&self) -> Vec<&'static str> {
        let mut out = vec![self.profile.spec().transport];
        for (device, modules) in DEVICE_MODULES {
            if *device == Device::EventsPort || self.devices.contains(device) {
                for m in *modules {
                    if !out.contains(m) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }
}

/// Where a disk's blocks come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskSource {
    /// A raw image file on the host.
    File(PathBuf),
    /// A disk of this many bytes that reads as zeroes and costs no file
    /// (qemu's null-co driver).
    Zeroes(u64),
}

/// A virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub source: DiskSource,
    pub read_only: bool,
}

impl Disk {
    pub fn file(path: impl Into<PathBuf>) -> Disk {
        Disk {
            source: DiskSource::File(path.into()),
            read_only: false,
        }
    }

    pub fn zeroes(bytes: u64) -> Disk {
        Disk {
            source: DiskSource::Zeroes(bytes),
            read_only: false,
        }
    }

    /// `FILE` or `FILE,ro` (the `--disk` flag). Only a trailing `,ro` is
    /// an option: any other comma or colon is part of the file name.
    pub fn parse(s: &str) -> Disk {
        match s.strip_suffix(",ro") {
            Some(p) => Disk {
                source: DiskSource::File(p.into()),
                read_only: true,
            },
            None => Disk::file(s),
        }
    }
}

/// The machine one VM runs on: its profile and the devices it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub profile: Profile,
    pub disks: Vec<Disk>,
    /// qemu user networking: the guest reaches the host's own local
    /// services through 10.0.2.2 (qemu maps it to the host's 127.0.0.1).
    pub net: bool,
    /// More `-netdev user` options (`restrict=on`, `guestfwd=...`), with `net`.
    pub net_options: Vec<String>,
    pub rng: bool,
    /// Host folders shared with the guest, in mount order.
    pub shares: Vec<SharedDir>,
}

/// A host folder as the VM sees it: a virtio-9p or virtio-fs device with
/// a mount tag, and where the init mounts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedDir {
    pub fs: ShareFs,
    /// The device's mount tag (short: 9p allows 31 bytes, virtio-fs 36).
    pub tag: String,
    /// The folder on the host (absolute).
    pub host: PathBuf,
    /// Where it is mounted in the payload's root (absolute); `/` for the
    /// host root.
    pub guest: PathBuf,
    pub writable: bool,
    /// The payload's root (`--root host`): mounted read-only under a tmpfs
    /// overlay.
    pub root: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            // The fastest profile that passes the tests, by measurement:
            // microvm boots to exit in ~0.65x the time of pc (see README).
            profile: Profile::Microvm,
            disks: Vec::new(),
            net: false,
            net_options: Vec::new(),
            rng: false,
            shares: Vec::new(),
        }
    }
}

impl Machine {
    /// What the initrd for this machine must serve.
    pub fn target(&self) -> Target {
        let mut devices = Vec::new();
        if !self.disks.is_empty() {
            devices.push(Device::Disk);
        }
        if self.net {
            devices.push(Device::Net);
        }
        if self.rng {
            devices.push(Device::Rng);
        }
        for (fs, device) in [
            (ShareFs::P9, Device::Share9p),
            (ShareFs::Virtiofs, Device::Virtiofs),
        ] {
            if self.shares.iter().any(|s| s.fs == fs) {
                devices.push(device);
            }
        }
        if self.shares.iter().any(|s| s.root) {
            devices.push(Device::HostRoot);
        }
        Target {
            profile: self.profile,
            devices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_machine_needs_its_transport_and_the_console_port() {
        let t = Machine::default().target();
        assert_eq!(t.device_modules(), ["virtio_mmio", "virtio_console"]);
        let t = Machine {
            profile: Profile::Q35,
            ..Machine::default()
        }
        .target();
        assert_eq!(t.device_modules(), ["virtio_pci", "virtio_console"]);
    }

    #[test]
    fn each_device_brings_its_driver() {
        let m = Machine {
            disks: vec![Disk::zeroes(1 << 20), Disk::parse("a.img,ro")],
            net: true,
            rng: true,
            ..Machine::default()
        };
        assert_eq!(
            m.target().device_modules(),
            [
                "virtio_mmio",
                "virtio_console",
                "virtio_blk",
                "virtio_net",
                "virtio_rng"
            ]
        );
    }

    /// Each transport brings its modules, the host root the overlay; a
    /// machine without shares carries none of them.
    #[test]
    fn shares_bring_their_transport_and_the_host_root_the_overlay() {
        let share = |fs, root| SharedDir {
            fs,
            tag: "t".into(),
            host: "/".into(),
            guest: "/".into(),
            writable: false,
            root,
        };
        let m = Machine {
            shares: vec![share(ShareFs::P9, true)],
            ..Machine::default()
        };
        assert_eq!(
            m.target().device_modules(),
            [
                "virtio_mmio",
                "virtio_console",
                "9pnet_virtio",
                "9p",
                "overlay"
            ]
        );
        let m = Machine {
            shares: vec![share(ShareFs::Virtiofs, false)],
            ..Machine::default()
        };
        assert_eq!(
            m.target().device_modules(),
            ["virtio_mmio", "virtio_console", "virtiofs"]
        );
        for (_, modules) in DEVICE_MODULES {
            for m in *modules {
                assert!(module_option(m).is_some(), "{m} has no kernel option");
            }
        }
    }

    #[test]
    fn only_a_trailing_ro_is_an_option_of_a_disk() {
        assert_eq!(
            Disk::parse("a:b,c.img,ro"),
            Disk {
                source: DiskSource::File("a:b,c.img".into()),
                read_only: true
            }
        );
        assert_eq!(Disk::parse("x,rw"), Disk::file("x,rw"));
    }
}
