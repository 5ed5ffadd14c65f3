//! Where the time went: one boot on one timeline (host milliseconds since
//! qemu was started), cut into consecutive parts that add up to the whole,
//! so nothing is left unexplained:
//!
//! - before the kernel, qemu's own trace events (see `qemu_trace`): its
//!   process start and machine creation, device setup and reset, the
//!   kernel copied into guest RAM, the vCPU's start, the firmware;
//! - from the kernel's entry to the power off, the guest's records, placed
//!   with the offset between the two clocks: the smallest (arrival − guest
//!   CLOCK_BOOTTIME) over all records, i.e. the record delayed least. (The
//!   guest's clock cannot place anything before /init: under TCG it starts
//!   late in setup_arch and loses ticks until the TSC takes over, so its
//!   zero is no instant of the boot.)

use crate::bootlog::BootLog;
use crate::qemu_trace::Marker;
use kestrel_proto::{GuestKind, GuestRecord};
use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Phase {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// Module loads: the loader worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
}

impl Phase {
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

/// An instant of the boot on the host timeline.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Milestone {
    pub name: &'static str,
    pub at_ms: f64,
}

/// One initcall from `initcall_debug` output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Initcall {
    pub name: String,
    pub duration_ms: f64,
    /// When it ended on the host timeline, when the kernel log says where
    /// its clock stands (the `sched_clock: Marking stable` line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<f64>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Analysis {
    /// Host ns minus guest ns; None without guest records.
    pub clock_offset_ms: Option<f64>,
    /// The boot's instants in boot order (only those reached).
    pub milestones: Vec<Milestone>,
    /// The boot cut into consecutive parts, qemu start to qemu exit.
    pub phases: Vec<Phase>,
    /// Spans inside the parts (the modules' first start to last end...).
    pub details: Vec<Phase>,
    pub modules: Vec<Phase>,
    /// Slowest initcalls first (needs `initcall_debug` on the command line).
    pub initcalls: Vec<Initcall>,
    pub total_ms: f64,
    /// What no part covers: time between instants that are not next to
    /// each other in the boot (one that should lie between was not seen).
    pub unexplained_ms: f64,
}

/// The milestones of a complete run-mode boot, in boot order.
pub const MILESTONES: [&str; 12] = [
    "qemu_start",
    "machine_init",
    "system_reset",
    "roms_loaded",
    "firmware_start",
    "kernel_entry",
    "init_start",
    "ready",
    "payload_start",
    "payload_exit",
    "poweroff",
    "qemu_exit",
];

/// Each instant of a boot with the name of the part that ends there.
const PARTS: &[(&str, &str)] = &[
    ("qemu_start", ""),
    (
        "machine_init",
        "qemu: process start, options, machine creation",
    ),
    ("system_reset", "qemu: devices set up, machine reset"),
    (
        "roms_loaded",
        "qemu: kernel and firmware copied into guest RAM",
    ),
    ("firmware_start", "vCPU start"),
    ("kernel_entry", "firmware"),
    ("init_start", "kernel: setup, initcalls, to /init"),
    (
        "ready",
        "/init → ready (mounts, devices, modules, events port)",
    ),
    ("payload_start", "ready → payload start"),
    ("payload_exit", "payload"),
    ("switch_root", "ready → switch_root"),
    ("poweroff", "to power off (leftovers, sync, unmount)"),
    ("qemu_exit", "power off → qemu exit"),
];

/// How many initcalls the analysis keeps.
const TOP_INITCALLS: usize = 10;

/// `initcall virtio_init+0x0/0x20 returned 0 after 12 usecs`
fn parse_initcall(msg: &str) -> Option<(String, f64)> {
    let rest = msg.strip_prefix("initcall ")?;
    let (name, rest) = rest.split_once(' ')?;
    let usecs = rest.split_once(" after ")?.1.strip_suffix(" usecs")?;
    let name = name.split('+').next().unwrap_or(name).to_owned();
    Some((name, usecs.trim().parse::<f64>().ok()? / 1e3))
}

/// `sched_clock: Marking stable (A, B)->(C, D)`: at that instant
/// CLOCK_MONOTONIC was A and sched_clock (the kernel log's clock) C, so
/// log time − C + A is CLOCK_MONOTONIC, i.e. CLOCK_BOOTTIME in a boot.
fn log_clock_shift_ns(msg: &str) -> Option<i128> {
    let rest = msg.strip_prefix("sched_clock: Marking stable (")?;
    let (before, after) = rest.split_once(")->(")?;
    let a: i128 = before.split(',').next()?.trim().parse().ok()?;
    let c: i128 = after.split(',').next()?.trim().parse().ok()?;
    Some(c - a)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The guest clock on the host timeline: host ns minus guest ns of the
/// record that was delayed least (None without guest records).
struct Clock {
    offset_ns: Option<i128>,
}

impl Clock {
    fn of(log: &BootLog) -> Clock {
        let offset_ns = log
            .events
            .iter()
            .map(|s| i128::from(s.host_ns) - i128::from(s.item.t_ns))
            .min();
        Clock { offset_ns }
    }

    /// Guest CLOCK_BOOTTIME as host ms.
    fn host_ms(&self, t_ns: i128) -> f64 {
        self.offset_ns.map_or(f64::NAN, |o| (t_ns + o) as f64 / 1e6)
    }
}

/// Every instant reached, by name, on the host timeline.
fn instants(log: &BootLog, clock: &Clock) -> Vec<(&'static str, f64)> {
    let first = |k: GuestKind| log.first(k).map(|e| clock.host_ms(i128::from(e.t_ns)));
    let last = |k: GuestKind| log.last(k).map(|e| clock.host_ms(i128::from(e.t_ns)));
    let marker = |m: Marker| {
        log.qemu_markers
            .iter()
            .find(|(x, _)| *x == m)
            .map(|(_, t)| ms(*t))
    };
    let at = |name: &str| -> Option<f64> {
        match name {
            "qemu_start" => Some(0.0),
            "machine_init" => marker(Marker::MachineInit),
            "system_reset" => marker(Marker::SystemReset),
            "roms_loaded" => marker(Marker::RomsLoaded),
            "firmware_start" => marker(Marker::FirmwareStart),
            "kernel_entry" => marker(Marker::KernelEntry),
            "init_start" => first(GuestKind::InitStart),
            "ready" => first(GuestKind::Ready),
            "payload_start" => first(GuestKind::PayloadStart),
            "payload_exit" => last(GuestKind::PayloadExit),
            "switch_root" => first(GuestKind::SwitchRoot),
            "poweroff" => last(GuestKind::Poweroff),
            "qemu_exit" => log.qemu_exit_ns.map(ms),
            _ => None,
        }
    };
    PARTS
        .iter()
        .filter_map(|(name, _)| Some((*name, at(name)?)))
        .collect()
}

/// The parts between consecutive instants reached; a part whose start is
/// not the instant just before it in the boot spans something unseen.
fn parts(reached: &[(&'static str, f64)]) -> (Vec<Phase>, f64) {
    let place = |name: &str| PARTS.iter().position(|(n, _)| *n == name).unwrap_or(0);
    let mut phases = Vec::new();
    let mut unexplained = 0.0;
    for pair in reached.windows(2) {
        let [(from, start), (to, end)] = pair else {
            continue;
        };
        let (a, b) = (place(from), place(to));
        let between = PARTS.get(a + 1..b).unwrap_or_default();
        // switch_root and the payload's instants exclude each other.
        let exclusive = |n: &str| matches!(n, "payload_start" | "payload_exit" | "switch_root");
        // Without its marker (microvm) the ROM copy is part of the next part.
        let merged = |n: &str| n == "roms_loaded";
        let name = if between.iter().any(|(n, _)| !exclusive(n) && !merged(n)) {
            unexplained += end - start;
            format!("{from} → {to} (instants between were not seen)")
        } else {
            between
                .iter()
                .filter(|(n, _)| merged(n))
                .chain(PARTS.get(b))
                .map(|(_, part)| *part)
                .collect::<Vec<_>>()
                .join("; ")
        };
        phases.push(Phase {
            name,
            start_ms: *start,
            end_ms: *end,
            thread: None,
        });
    }
    (phases, unexplained)
}

/// Each module load, by start time.
fn module_loads(log: &BootLog, clock: &Clock) -> Vec<Phase> {
    let mut modules: Vec<Phase> = log
        .records()
        .filter_map(|e| match &e.rec {
            GuestRecord::Module {
                name,
                start_ns,
                dur_us,
                thread,
                ..
            } => {
                let start_ms = clock.host_ms(i128::from(*start_ns));
                Some(Phase {
                    name: name.clone(),
                    start_ms,
                    end_ms: start_ms + *dur_us as f64 / 1e3,
                    thread: Some(u64::from(*thread)),
                })
            }
            _ => None,
        })
        .collect();
    modules.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    modules
}

/// The slowest initcalls of the kernel's log (`initcall_debug`), placed on
/// the timeline when the log says where its clock stands.
fn slowest_initcalls(log: &BootLog, clock: &Clock) -> Vec<Initcall> {
    let msgs = || {
        log.records().filter_map(|e| match &e.rec {
            GuestRecord::Kmsg { msg, ts_us, .. } => Some((msg.as_str(), *ts_us)),
            _ => None,
        })
    };
    let shift = msgs().find_map(|(m, _)| log_clock_shift_ns(m));
    let mut initcalls: Vec<Initcall> = msgs()
        .filter_map(|(m, ts_us)| {
            let (name, duration_ms) = parse_initcall(m)?;
            let end_ms = shift.map(|s| clock.host_ms(i128::from(ts_us) * 1000 - s));
            Some(Initcall {
                name,
                duration_ms,
                end_ms,
            })
        })
        .collect();
    initcalls.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    initcalls.truncate(TOP_INITCALLS);
    initcalls
}

/// Spans inside the parts: where /init's time went.
fn details(reached: &[(&'static str, f64)], modules: &[Phase]) -> Vec<Phase> {
    let at = |name: &str| reached.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let first_module = modules.iter().map(|m| m.start_ms).reduce(f64::min);
    let last_module = modules.iter().map(|m| m.end_ms).reduce(f64::max);
    [
        (
            "/init → first module (mounts, index, first driver found)",
            at("init_start"),
            first_module,
        ),
        (
            "modules (first start → last end)",
            first_module,
            last_module,
        ),
    ]
    .into_iter()
    .filter_map(|(name, start, end)| {
        Some(Phase {
            name: name.to_owned(),
            start_ms: start?,
            end_ms: end?,
            thread: None,
        })
    })
    .collect()
}

pub fn analyze(log: &BootLog) -> Analysis {
    let clock = Clock::of(log);
    let modules = module_loads(log, &clock);
    let reached = instants(log, &clock);
    let (phases, unexplained_ms) = parts(&reached);
    let total_ms = log.qemu_exit_ns.map_or(0.0, ms);
    // What no part reaches: from the last instant seen to the exit.
    let covered = reached.last().map_or(0.0, |(_, t)| *t);
    Analysis {
        clock_offset_ms: clock.offset_ns.map(|o| o as f64 / 1e6),
        milestones: reached
            .iter()
            .map(|(name, at_ms)| Milestone {
                name,
                at_ms: *at_ms,
            })
            .collect(),
        details: details(&reached, &modules),
        initcalls: slowest_initcalls(log, &clock),
        phases,
        modules,
        unexplained_ms: unexplained_ms + (total_ms - covered).max(0.0),
        total_ms,
    }
}

/// The phase table as text: the parts (they add up to the total), the
/// spans inside them, the slowest initcalls and modules.
pub fn render_table(a: &Analysis) -> String {
    let mut s = String::new();
    // The name column fits the longest part (a merged one is long).
    let w = a
        .phases
        .iter()
        .chain(&a.details)
        .map(|p| p.name.chars().count() + 2)
        .max()
        .unwrap_or(0)
        .max(56);
    let row = |s: &mut String, name: &str, p: &Phase| {
        let _ = writeln!(
            s,
            "{:<w$} {:>9.1} {:>9.1} {:>9.1}",
            name,
            p.start_ms,
            p.end_ms,
            p.duration_ms()
        );
    };
    let _ = writeln!(
        s,
        "{:<w$} {:>9} {:>9} {:>9}",
        "part of the boot", "start ms", "end ms", "took ms"
    );
    for p in &a.phases {
        row(&mut s, &p.name, p);
    }
    let share = if a.total_ms > 0.0 {
        100.0 * a.unexplained_ms / a.total_ms
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "{:<w$} {:>9} {:>9.1} {:>9.1}\n{:<w$} {:>29.1}  ({share:.1} %)",
        "total: qemu start → qemu exit",
        "",
        a.total_ms,
        a.total_ms,
        "unexplained",
        a.unexplained_ms
    );
    if !a.details.is_empty() {
        let _ = writeln!(s, "inside:");
        for p in &a.details {
            row(&mut s, &format!("  {}", p.name), p);
        }
    }
    if !a.initcalls.is_empty() {
        let _ = writeln!(s, "slowest initcalls:");
        for c in &a.initcalls {
            let _ = writeln!(s, "  {:<w2$} {:>29.1}", c.name, c.duration_ms, w2 = w - 2);
        }
    }
    if !a.modules.is_empty() {
        let _ = writeln!(s, "modules ({}), slowest first:", a.modules.len());
        let mut by_time: Vec<&Phase> = a.modules.iter().collect();
        by_time.sort_by(|x, y| y.duration_ms().total_cmp(&x.duration_ms()));
        for m in by_time.iter().take(8) {
            let worker = m.thread.map_or("?".into(), |t| t.to_string());
            row(&mut s, &format!("  {} (worker {worker})", m.name), m);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initcall_debug_and_the_log_clock() {
        let (name, ms) = parse_initcall(
            "initcall virtio_pci_driver_init+0x0/0x1000 [virtio_pci] returned 0 after 1234 usecs",
        )
        .unwrap();
        assert_eq!(name, "virtio_pci_driver_init");
        assert!((ms - 1.234).abs() < 1e-9);
        assert_eq!(parse_initcall("calling  foo+0x0/0x10 @ 1"), None);
        assert_eq!(
            log_clock_shift_ns(
                "sched_clock: Marking stable (2143958232, 0)->(2617965453, -474007221)"
            ),
            Some(2617965453 - 2143958232)
        );
    }

    /// A log captured from a real boot (q35, TCG, Debian 6.1, with
    /// `initcall_debug`; tools/tests/fixtures/boot-q35.log, `kestrel run
    /// --machine q35 --append initcall_debug --log`): every part from qemu's
    /// start to its exit, in order, adding up to the whole with nothing
    /// unexplained; the initcalls placed inside the kernel's part.
    #[test]
    fn analyzes_a_captured_boot() {
        let text = include_str!("../tests/fixtures/boot-q35.log");
        let log = BootLog::read_log(text).unwrap();
        let a = analyze(&log);
        let names: Vec<&str> = a.milestones.iter().map(|m| m.name).collect();
        assert_eq!(names, MILESTONES);
        assert!(
            a.milestones.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
            "{:?}",
            a.milestones
        );
        assert_eq!(a.phases.len(), MILESTONES.len() - 1);
        let sum: f64 = a.phases.iter().map(Phase::duration_ms).sum();
        assert!((sum - a.total_ms).abs() < 1e-6, "{sum} vs {}", a.total_ms);
        assert!(a.unexplained_ms < 0.02 * a.total_ms, "{}", a.unexplained_ms);
        for p in &a.phases {
            assert!(p.start_ms <= p.end_ms, "{p:?}");
        }
        assert!(a.modules.iter().any(|m| m.name == "virtio_pci"));
        let kernel = a
            .phases
            .iter()
            .find(|p| p.name.starts_with("kernel"))
            .unwrap();
        let slowest = &a.initcalls[0];
        let end = slowest.end_ms.expect("placed by the sched_clock line");
        assert!(
            end > kernel.start_ms && end < kernel.end_ms,
            "{slowest:?} outside {kernel:?}"
        );
        let table = render_table(&a);
        assert!(
            table.contains("firmware") && table.contains("(0.0 %)"),
            "{table}"
        );
    }

    /// microvm has no ROM marker: the copy joins the vCPU's start, and
    /// nothing goes unexplained.
    #[test]
    fn a_boot_without_the_rom_marker_merges_its_part() {
        let text = include_str!("../tests/fixtures/boot-q35.log");
        let mut log = BootLog::read_log(text).unwrap();
        log.qemu_markers.retain(|(m, _)| *m != Marker::RomsLoaded);
        let a = analyze(&log);
        assert_eq!(a.phases.len(), MILESTONES.len() - 2);
        assert_eq!(a.unexplained_ms, 0.0);
        assert!(a
            .phases
            .iter()
            .any(|p| p.name == "qemu: kernel and firmware copied into guest RAM; vCPU start"));
    }
}
