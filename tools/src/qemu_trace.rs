//! The time before the kernel, from qemu's own trace events. qemu prints
//! them on stderr with the host's CLOCK_REALTIME and the thread that hit
//! them (`-msg timestamp=on`, the `log` trace backend):
//!
//! ```text
//! 23510@1796054590.261884:fw_cfg_add_bytes key 0x0000 'signature', 4 bytes
//! ```
//!
//! Three events, cheap (a few dozen lines a boot on microvm, a few hundred
//! under SeaBIOS; no measurable cost), split
//! "qemu start → kernel" into exact parts: qemu's process start and
//! machine creation, device setup, the kernel copied into guest RAM, the
//! vCPU's start, the firmware, the jump to the kernel. (The guest's clock
//! cannot tell: under TCG CLOCK_BOOTTIME starts late in setup_arch and
//! loses ticks until the TSC takes over.)

use crate::machine::Profile;

/// The trace events Kestrel asks qemu for.
pub const TRACE_EVENTS: &[&str] = &["fw_cfg_add_bytes", "fw_cfg_select", "loader_write_rom"];

/// qemu's arguments for them. microvm goes without `loader_write_rom`:
/// with it and timestamps on, qemu 7.2 starts qboot on a PVH kernel whose
/// image is not in guest RAM (the vCPU runs zeros; checked on 6.1 and
/// 6.12), so there the ROM copy is part of "vCPU start".
pub fn args(profile: Profile) -> Vec<String> {
    let mut a = vec!["-msg".to_owned(), "timestamp=on".to_owned()];
    for e in TRACE_EVENTS {
        if !(profile == Profile::Microvm && *e == "loader_write_rom") {
            a.extend(["-trace".to_owned(), (*e).to_owned()]);
        }
    }
    a
}

/// One instant before the kernel, in boot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    /// The machine exists (its firmware config's first entry): process
    /// start, dynamic linking, options, accelerator and RAM are done.
    MachineInit,
    /// Devices are set up; the machine is reset (the main thread's first
    /// firmware-config access).
    SystemReset,
    /// The kernel and firmware are copied into guest RAM (the last ROM).
    RomsLoaded,
    /// The vCPU runs the firmware (its first firmware-config access).
    FirmwareStart,
    /// The firmware jumps to the kernel (its last firmware-config access).
    KernelEntry,
}

impl Marker {
    pub fn name(self) -> &'static str {
        match self {
            Marker::MachineInit => "machine_init",
            Marker::SystemReset => "system_reset",
            Marker::RomsLoaded => "roms_loaded",
            Marker::FirmwareStart => "firmware_start",
            Marker::KernelEntry => "kernel_entry",
        }
    }

    pub fn from_name(name: &str) -> Option<Marker> {
        [
            Marker::MachineInit,
            Marker::SystemReset,
            Marker::RomsLoaded,
            Marker::FirmwareStart,
            Marker::KernelEntry,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// One trace line of qemu's `-trace` output.
struct TraceLine<'a> {
    thread: u32,
    /// CLOCK_REALTIME, ns.
    ns: u64,
    event: &'a str,
}

fn parse(line: &str) -> Option<TraceLine<'_>> {
    let (tid, rest) = line.split_once('@')?;
    let (time, rest) = rest.split_once(':')?;
    let (secs, usecs) = time.split_once('.')?;
    let ns = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(usecs.parse::<u64>().ok()? * 1000)?;
    let event = rest.split_once(' ').map_or(rest, |(event, _)| event);
    Some(TraceLine {
        thread: tid.parse().ok()?,
        ns,
        event,
    })
}

/// The markers, folded from qemu's stderr line by line in constant
/// memory (a firmware that reads its config often prints thousands of
/// lines; qemu's own complaints must not be pushed out by them).
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    /// The main thread: the first line's. Any other thread is the vCPU.
    main: Option<u32>,
    machine_init: Option<u64>,
    system_reset: Option<u64>,
    roms_loaded: Option<u64>,
    firmware_start: Option<u64>,
    kernel_entry: Option<u64>,
}

impl Tracker {
    /// Takes one stderr line; false when it is not a trace line (qemu
    /// said something the user should see).
    pub fn feed(&mut self, line: &str) -> bool {
        let Some(l) = parse(line).filter(|l| TRACE_EVENTS.contains(&l.event)) else {
            return false;
        };
        let main = *self.main.get_or_insert(l.thread);
        let at = Some(l.ns);
        match l.event {
            "fw_cfg_add_bytes" => {
                self.machine_init = self.machine_init.or(at);
            }
            "loader_write_rom" => self.roms_loaded = at,
            _ if l.thread == main => self.system_reset = self.system_reset.or(at),
            _ => {
                self.firmware_start = self.firmware_start.or(at);
                self.kernel_entry = at;
            }
        }
        true
    }

    /// The markers seen, as ns since `spawn_realtime_ns` (the host's
    /// CLOCK_REALTIME just before qemu was started).
    pub fn markers(&self, spawn_realtime_ns: u64) -> Vec<(Marker, u64)> {
        [
            (Marker::MachineInit, self.machine_init),
            (Marker::SystemReset, self.system_reset),
            (Marker::RomsLoaded, self.roms_loaded),
            (Marker::FirmwareStart, self.firmware_start),
            (Marker::KernelEntry, self.kernel_entry),
        ]
        .into_iter()
        .filter_map(|(m, t)| Some((m, t?.saturating_sub(spawn_realtime_ns))))
        .collect()
    }
}

/// The host's CLOCK_REALTIME, ns (the clock of qemu's trace lines).
pub fn realtime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of a real boot (microvm, PVH vmlinux, qemu 7.2).
    const CAPTURED: &str = "\
27868@1796060923.000100:fw_cfg_add_bytes key 0x0000 'signature', 4 bytes
27868@1796060923.000200:fw_cfg_add_bytes key 0x0001 'id', 4 bytes
qemu-system-x86_64: warning: something unrelated
27868@1796060923.010000:fw_cfg_select 0x55bb1164a0c0 key 0x0000 'signature', ret: 1
27868@1796060923.020000:loader_write_rom /cache/vmlinux ELF program header segment 0: @0x1000000 size=0x1b1c000 ROM=0
27868@1796060923.026000:loader_write_rom etc/acpi/rsdp: @0xffffffffffffffff size=0x24 ROM=0
27870@1796060923.027000:fw_cfg_select 0x55bb1164a0c0 key 0x0001 'id', ret: 1
27870@1796060923.028000:fw_cfg_select 0x55bb1164a0c0 key 0x0012 'initrd_data', ret: 1
27870@1796060923.029000:fw_cfg_select 0x55bb1164a0c0 key 0x0010 'kernel_entry', ret: 1
";

    #[test]
    fn reads_the_markers_of_a_boot_in_order() {
        let spawn = 1_796_060_923_000_000_000;
        let mut t = Tracker::default();
        let said: Vec<&str> = CAPTURED.lines().filter(|l| !t.feed(l)).collect();
        assert_eq!(said, ["qemu-system-x86_64: warning: something unrelated"]);
        let m = t.markers(spawn);
        assert_eq!(
            m,
            vec![
                (Marker::MachineInit, 100_000),
                (Marker::SystemReset, 10_000_000),
                (Marker::RomsLoaded, 26_000_000),
                (Marker::FirmwareStart, 27_000_000),
                (Marker::KernelEntry, 29_000_000),
            ]
        );
        assert!(m.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        for m in m.iter().map(|(m, _)| *m) {
            assert_eq!(Marker::from_name(m.name()), Some(m));
        }
    }

    #[test]
    fn without_trace_lines_there_are_no_markers() {
        let mut t = Tracker::default();
        assert!(!t.feed("no trace here"));
        assert!(!t.feed("1@2.3:some_other_event x"));
        assert!(t.markers(0).is_empty());
    }
}
