//! Where the time went: the phases of one boot on one timeline (host
//! milliseconds since qemu started). Guest records carry CLOCK_BOOTTIME,
//! whose zero is where the guest's clock starts: on x86 the kernel starts
//! CLOCK_BOOTTIME at the TSC's count, and the TSC starts with the vCPUs (so
//! zero is about when qemu has finished setting up), unless the kernel
//! cannot use the TSC early (then zero is the kernel's timekeeping init).
//! The offset between the two clocks is the smallest (arrival - guest time)
//! over all records, i.e. the record that was delayed least.

use crate::bootlog::BootLog;
use kestrel_proto::{GuestKind, GuestRecord};
use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Phase {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// Module loads: the loader thread.
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
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Analysis {
    /// Host ns minus guest ns; None without guest records.
    pub clock_offset_ms: Option<f64>,
    /// The boot's instants in boot order (only those reached).
    pub milestones: Vec<Milestone>,
    pub phases: Vec<Phase>,
    pub modules: Vec<Phase>,
    /// Slowest initcalls first (needs `initcall_debug` on the command line).
    pub initcalls: Vec<Initcall>,
    pub total_ms: f64,
}

/// The milestones of a complete run-mode boot, in boot order.
pub const MILESTONES: [&str; 10] = [
    "qemu_start",
    "guest_clock_zero",
    "init_start",
    "modules_start",
    "modules_end",
    "ready",
    "payload_start",
    "payload_exit",
    "poweroff",
    "qemu_exit",
];

/// How many initcalls the analysis keeps.
const TOP_INITCALLS: usize = 10;

/// `initcall virtio_init+0x0/0x20 returned 0 after 12 usecs`
fn parse_initcall(msg: &str) -> Option<Initcall> {
    let rest = msg.strip_prefix("initcall ")?;
    let (name, rest) = rest.split_once(' ')?;
    let usecs = rest.split_once(" after ")?.1.strip_suffix(" usecs")?;
    let name = name.split('+').next().unwrap_or(name).to_owned();
    Some(Initcall {
        name,
        duration_ms: usecs.trim().parse::<f64>().ok()? / 1e3,
    })
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
    fn host_ms(&self, t_ns: u64) -> f64 {
        self.offset_ns
            .map_or(f64::NAN, |o| (i128::from(t_ns) + o) as f64 / 1e6)
    }
}

/// The boot's instants on the host timeline (those reached), in the
/// order of [`MILESTONES`].
struct Instants {
    clock_zero: Option<f64>,
    first_console: Option<f64>,
    init_start: Option<f64>,
    modules_start: Option<f64>,
    modules_end: Option<f64>,
    ready: Option<f64>,
    payload_start: Option<f64>,
    payload_exit: Option<f64>,
    poweroff: Option<f64>,
    qemu_exit: Option<f64>,
}

impl Instants {
    fn of(log: &BootLog, clock: &Clock, modules: &[Phase]) -> Instants {
        let first = |k: GuestKind| log.first(k).map(|e| clock.host_ms(e.t_ns));
        let last = |k: GuestKind| log.last(k).map(|e| clock.host_ms(e.t_ns));
        Instants {
            clock_zero: clock.offset_ns.map(|o| o.max(0) as f64 / 1e6),
            first_console: log.console.first().map(|s| ms(s.host_ns)),
            init_start: first(GuestKind::InitStart),
            modules_start: modules.iter().map(|m| m.start_ms).reduce(f64::min),
            modules_end: modules.iter().map(|m| m.end_ms).reduce(f64::max),
            ready: first(GuestKind::Ready),
            payload_start: first(GuestKind::PayloadStart),
            payload_exit: last(GuestKind::PayloadExit),
            poweroff: last(GuestKind::Poweroff),
            qemu_exit: log.qemu_exit_ns.map(ms),
        }
    }

    fn milestones(&self) -> Vec<Milestone> {
        MILESTONES
            .into_iter()
            .zip([
                Some(0.0),
                self.clock_zero,
                self.init_start,
                self.modules_start,
                self.modules_end,
                self.ready,
                self.payload_start,
                self.payload_exit,
                self.poweroff,
                self.qemu_exit,
            ])
            .filter_map(|(name, at)| Some(Milestone { name, at_ms: at? }))
            .collect()
    }

    /// The spans of the phase table (those whose ends were reached).
    fn phases(&self) -> Vec<Phase> {
        let i = self;
        [
            (
                "qemu start → guest clock 0 (qemu setup, firmware)",
                Some(0.0),
                i.clock_zero,
            ),
            (
                "qemu start → first console output",
                Some(0.0),
                i.first_console,
            ),
            (
                "guest clock 0 → /init (kernel, initcalls)",
                i.clock_zero,
                i.init_start,
            ),
            (
                "/init → modules start (mounts, index, coldplug)",
                i.init_start,
                i.modules_start,
            ),
            (
                "modules (first start → last end)",
                i.modules_start,
                i.modules_end,
            ),
            (
                "/init → ready (devices, events port)",
                i.init_start,
                i.ready,
            ),
            ("ready → payload start", i.ready, i.payload_start),
            ("payload", i.payload_start, i.payload_exit),
            (
                "payload exit → power off",
                i.payload_exit.or(i.ready),
                i.poweroff,
            ),
            ("power off → qemu exit", i.poweroff, i.qemu_exit),
            ("total: qemu start → qemu exit", Some(0.0), i.qemu_exit),
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
                let start_ms = clock.host_ms(*start_ns);
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

/// The slowest initcalls of the kernel's log (`initcall_debug`).
fn slowest_initcalls(log: &BootLog) -> Vec<Initcall> {
    let mut initcalls: Vec<Initcall> = log
        .records()
        .filter_map(|e| match &e.rec {
            GuestRecord::Kmsg { msg, .. } => parse_initcall(msg),
            _ => None,
        })
        .collect();
    initcalls.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    initcalls.truncate(TOP_INITCALLS);
    initcalls
}

pub fn analyze(log: &BootLog) -> Analysis {
    let clock = Clock::of(log);
    let modules = module_loads(log, &clock);
    let instants = Instants::of(log, &clock, &modules);
    Analysis {
        clock_offset_ms: clock.offset_ns.map(|o| o as f64 / 1e6),
        milestones: instants.milestones(),
        initcalls: slowest_initcalls(log),
        phases: instants.phases(),
        modules,
        total_ms: instants.qemu_exit.unwrap_or(0.0),
    }
}

/// The phase table as text.
pub fn render_table(a: &Analysis) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<52} {:>10} {:>10} {:>10}",
        "phase", "start ms", "end ms", "took ms"
    );
    for p in &a.phases {
        let _ = writeln!(
            s,
            "{:<52} {:>10.1} {:>10.1} {:>10.1}",
            p.name,
            p.start_ms,
            p.end_ms,
            p.duration_ms()
        );
    }
    if !a.initcalls.is_empty() {
        let _ = writeln!(s, "slowest initcalls:");
        for c in &a.initcalls {
            let _ = writeln!(s, "  {:<50} {:>32.1}", c.name, c.duration_ms);
        }
    }
    if !a.modules.is_empty() {
        let _ = writeln!(s, "modules ({}), slowest first:", a.modules.len());
        let mut by_time: Vec<&Phase> = a.modules.iter().collect();
        by_time.sort_by(|x, y| y.duration_ms().total_cmp(&x.duration_ms()));
        for m in by_time.iter().take(8) {
            let _ = writeln!(
                s,
                "  {:<50} {:>10.1} {:>10.1} {:>10.1}  thread {}",
                m.name,
                m.start_ms,
                m.end_ms,
                m.duration_ms(),
                m.thread.map_or("?".into(), |t| t.to_string())
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initcall_debug_lines() {
        let c = parse_initcall(
            "initcall virtio_pci_driver_init+0x0/0x1000 [virtio_pci] returned 0 after 1234 usecs",
        )
        .unwrap();
        assert_eq!(c.name, "virtio_pci_driver_init");
        assert!((c.duration_ms - 1.234).abs() < 1e-9);
        assert_eq!(parse_initcall("calling  foo+0x0/0x10 @ 1"), None);
    }

    /// A log captured from a real boot (q35, TCG, Debian 6.1): every phase
    /// is there and the phases are in order.
    #[test]
    fn analyzes_a_captured_boot() {
        let text = include_str!("../tests/fixtures/boot-q35.log");
        let log = BootLog::read_log(text).unwrap();
        let a = analyze(&log);
        let names: Vec<&str> = a.phases.iter().map(|p| p.name.as_str()).collect();
        for want in [
            "guest clock 0 → /init",
            "modules (first",
            "payload",
            "power off → qemu exit",
            "total",
        ] {
            assert!(
                names.iter().any(|n| n.starts_with(want)),
                "{want} missing from {names:?}"
            );
        }
        for p in &a.phases {
            assert!(p.start_ms <= p.end_ms + 0.001, "{p:?}");
        }
        let names: Vec<&str> = a.milestones.iter().map(|m| m.name).collect();
        assert_eq!(names, MILESTONES);
        assert!(
            a.milestones.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
            "{:?}",
            a.milestones
        );
        assert!(!a.modules.is_empty());
        assert!(a.modules.iter().any(|m| m.name == "virtio_pci"));
        assert!(render_table(&a).contains("modules (11)"));
    }
}
