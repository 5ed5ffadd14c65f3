//! Where the time went: the phases of one boot on one timeline (host
//! milliseconds since qemu started). Guest records carry CLOCK_BOOTTIME,
//! which starts with the kernel; the offset between the two clocks is the
//! smallest (arrival - guest time) over all records, i.e. the record that
//! was delayed least, and that offset is also when the kernel started.

use crate::vm::BootLog;
use kestrel_init::event::kind;
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

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Analysis {
    /// Host ns minus guest ns; None without guest records.
    pub clock_offset_ms: Option<f64>,
    pub phases: Vec<Phase>,
    pub modules: Vec<Phase>,
    pub total_ms: f64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub fn analyze(log: &BootLog) -> Analysis {
    let offset_ns: Option<i128> = log
        .events
        .iter()
        .map(|s| i128::from(s.host_ns) - i128::from(s.item.t_ns))
        .min();
    let guest = |t_ns: u64| -> f64 { offset_ns.map_or(f64::NAN, |o| (i128::from(t_ns) + o) as f64 / 1e6) };
    let first = |k: &str| log.events.iter().find(|s| s.item.kind == k).map(|s| guest(s.item.t_ns));
    let last = |k: &str| log.events.iter().rev().find(|s| s.item.kind == k).map(|s| guest(s.item.t_ns));
    let mut phases = Vec::new();
    let mut push = |name: &str, start: Option<f64>, end: Option<f64>| {
        if let (Some(start_ms), Some(end_ms)) = (start, end) {
            phases.push(Phase { name: name.to_owned(), start_ms, end_ms, thread: None });
        }
    };
    let kernel_start = offset_ns.map(|o| o.max(0) as f64 / 1e6);
    let first_console = log.console.first().map(|s| ms(s.host_ns));
    let init_start = first(kind::INIT_START);
    let mut modules: Vec<Phase> = log
        .events
        .iter()
        .filter(|s| s.item.kind == kind::MODULE)
        .filter_map(|s| {
            let start = guest(s.item.get_u64("start_ns")?);
            let dur = s.item.get_u64("dur_us")? as f64 / 1e3;
            Some(Phase { name: s.item.get_str("name")?, start_ms: start, end_ms: start + dur, thread: s.item.get_u64("thread") })
        })
        .collect();
    modules.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    let modules_start = modules.iter().map(|m| m.start_ms).reduce(f64::min);
    let modules_end = modules.iter().map(|m| m.end_ms).reduce(f64::max);
    let ready = first(kind::READY);
    let payload_start = first(kind::PAYLOAD_START);
    let payload_exit = last(kind::PAYLOAD_EXIT);
    let poweroff = last(kind::POWEROFF);
    let qemu_exit = log.qemu_exit_ns.map(ms);

    push("qemu start → kernel start (firmware, kernel load)", Some(0.0), kernel_start);
    push("qemu start → first console output", Some(0.0), first_console);
    push("kernel start → /init (kernel init, initcalls)", kernel_start, init_start);
    push("/init → modules start (mounts, index, coldplug)", init_start, modules_start);
    push("modules (first start → last end)", modules_start, modules_end);
    push("/init → ready (devices, events port)", init_start, ready);
    push("ready → payload start", ready, payload_start);
    push("payload", payload_start, payload_exit);
    push("payload exit → power off", payload_exit.or(ready), poweroff);
    push("power off → qemu exit", poweroff, qemu_exit);
    push("total: qemu start → qemu exit", Some(0.0), qemu_exit);
    Analysis {
        clock_offset_ms: offset_ns.map(|o| o as f64 / 1e6),
        phases,
        modules,
        total_ms: qemu_exit.unwrap_or(0.0),
    }
}

/// The phase table as text.
pub fn render_table(a: &Analysis) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<52} {:>10} {:>10} {:>10}", "phase", "start ms", "end ms", "took ms");
    for p in &a.phases {
        let _ = writeln!(s, "{:<52} {:>10.1} {:>10.1} {:>10.1}", p.name, p.start_ms, p.end_ms, p.duration_ms());
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

    /// A log captured from a real boot (q35, TCG, Debian 6.1): every phase
    /// is there and the phases are in order.
    #[test]
    fn analyzes_a_captured_boot() {
        let text = include_str!("../tests/fixtures/boot-q35.log");
        let log = BootLog::read_log(text).unwrap();
        let a = analyze(&log);
        let names: Vec<&str> = a.phases.iter().map(|p| p.name.as_str()).collect();
        for want in ["kernel start → /init", "modules (first", "payload", "power off → qemu exit", "total"] {
            assert!(names.iter().any(|n| n.starts_with(want)), "{want} missing from {names:?}");
        }
        for p in &a.phases {
            assert!(p.start_ms <= p.end_ms + 0.001, "{p:?}");
        }
        assert!(!a.modules.is_empty());
        assert!(a.modules.iter().any(|m| m.name == "virtio_pci"));
        assert!(render_table(&a).contains("modules (11)"));
    }
}
