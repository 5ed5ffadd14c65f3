//! The guest half of `tests/fixtures/capture.sh guest`: run as /init of a
//! throw-away initramfs (built statically), it captures what a real guest's
//! PID 1 sees and writes it as text lines to the second serial port
//! (/dev/ttyS1; the host decodes them):
//!
//! - `F <path> <hex>`: a `uevent` or `modalias` file below /sys/devices;
//! - `L <path> <target>`: a device's `subsystem` symlink;
//! - `C <hex>`: a datagram of the triggered coldplug (`add UUID` to every
//!   device, drained until every UUID came back or was filtered);
//! - `M <hex>`: a datagram received while loading the modules listed in
//!   /modules.order (finit_module, in that order), until the socket has been
//!   quiet for `QUIET`;
//! - `# ...` comments, and `END` last. Then it powers the machine off.
//!
//! It is a capture tool, not the init: a quiet period is fine here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use kestrel_uevent::socket::UeventSocket;
use kestrel_uevent::walk::walk_devices;

#[path = "../tests/support/coldplug.rs"]
mod coldplug;
#[path = "../tests/support/subsystems.rs"]
mod subsystems;
use coldplug::{SysfsWriter, Trigger};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::mount::{mount, MountFlags};
use rustix::system::{finit_module, reboot, RebootCommand};
use subsystems::walk_subsystems;

/// How long the socket must stay silent after the last module before the
/// capture ends.
const QUIET: Duration = Duration::from_millis(1500);
/// The longest the module phase may take.
const MODULE_PHASE_MAX: Duration = Duration::from_secs(60);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn emit_tree(out: &mut impl Write, dir: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let has_uevent = dir.join("uevent").is_file();
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix("/sys")?.display().to_string();
        let ft = e.file_type()?;
        let name = e.file_name();
        if ft.is_dir() {
            emit_tree(out, &path)?;
        } else if ft.is_file() && (name == "uevent" || name == "modalias") {
            // Some attributes refuse reads; leave them out like capture.sh.
            if let Ok(content) = fs::read(&path) {
                writeln!(out, "F {rel} {}", hex(&content))?;
            }
        } else if ft.is_symlink() && name == "subsystem" && has_uevent {
            writeln!(out, "L {rel} {}", fs::read_link(&path)?.display())?;
        }
    }
    Ok(())
}

/// Receives until `quiet` passes without a datagram (or `max` overall),
/// writing each as `<tag> <hex>`; returns how many.
fn drain(
    sock: &mut UeventSocket,
    out: &mut impl Write,
    tag: &str,
    quiet: Duration,
    max: Duration,
) -> anyhow::Result<usize> {
    let start = Instant::now();
    let mut n = 0;
    let mut last = Instant::now();
    loop {
        while let Some(ev) = sock.recv()? {
            writeln!(out, "{tag} {}", hex(ev.raw()))?;
            n += 1;
            last = Instant::now();
        }
        let waited = last.elapsed();
        if waited >= quiet || start.elapsed() >= max {
            return Ok(n);
        }
        let mut fds = [PollFd::new(&*sock, PollFlags::IN)];
        poll(&mut fds, Some(&Timespec::try_from(quiet - waited)?))?;
    }
}

fn run() -> anyhow::Result<()> {
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        fs::create_dir_all(target)?;
        mount(src, target, fstype, MountFlags::empty(), None)
            .with_context(|| format!("failed to mount {target}"))?;
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .open("/dev/ttyS1")
        .context("failed to open /dev/ttyS1")?;
    writeln!(
        out,
        "# kestrel-uevent guest capture, kernel {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    )?;
    writeln!(
        out,
        "# cmdline {}",
        fs::read_to_string("/proc/cmdline")?.trim()
    )?;
    let mut sock = UeventSocket::open()?;
    emit_tree(&mut out, Path::new("/sys/devices"))?;

    // Triggered coldplug: every event is queued by the time the last write
    // returns, so draining once is complete (no quiet period needed).
    // Timed: the walk as the init will do it, in a real guest's sysfs
    // (the first walk also pays for sysfs building its inodes).
    let started = Instant::now();
    let walk = walk_devices(Path::new("/sys"))?;
    let first = started.elapsed();
    let started = Instant::now();
    let again = walk_devices(Path::new("/sys"))?;
    let second = started.elapsed();
    let started = Instant::now();
    let by_links = walk_subsystems(Path::new("/sys"))?;
    let links = started.elapsed();
    let with_subsystem = again
        .devices
        .iter()
        .filter(|d| d.subsystem().is_some())
        .count();
    let same = by_links.devices.len() == with_subsystem
        && by_links
            .devices
            .iter()
            .zip(again.devices.iter().filter(|d| d.subsystem().is_some()))
            .all(|(a, b)| a.devpath() == b.devpath() && a.fields().eq(b.fields()));
    writeln!(
        out,
        "# walk_devices: first {} us, second {} us ({} devices); walk_subsystems: {} us ({} devices, {} skipped, same as walk_devices with a subsystem: {same})",
        first.as_micros(),
        second.as_micros(),
        again.devices.len(),
        links.as_micros(),
        by_links.devices.len(),
        by_links.skipped,
    )?;
    let mut trigger = Trigger::with_unique_batch();
    let written = trigger.trigger_all(&mut SysfsWriter, Path::new("/sys"), &walk.devices)?;
    let mut coldplug = 0;
    while let Some(ev) = sock.recv()? {
        trigger.observe(&ev);
        writeln!(out, "C {}", hex(ev.raw()))?;
        coldplug += 1;
    }
    let silent = trigger.finish_after_drain();
    writeln!(
        out,
        "# walk {} devices ({} skipped); triggered {written}; {coldplug} events; {} silent; {} writes failed",
        walk.devices.len(),
        walk.skipped,
        silent.len(),
        trigger.failed().len()
    )?;

    // Modules, in the given order: the hotplug stream of a real boot.
    let order = fs::read_to_string("/modules.order").unwrap_or_default();
    for module in order.lines().filter(|l| !l.is_empty()) {
        let file = fs::File::open(module).with_context(|| format!("failed to open {module}"))?;
        let result = finit_module(&file, &CString::default(), 0);
        writeln!(out, "# finit_module {module}: {result:?}")?;
    }
    let n = drain(&mut sock, &mut out, "M", QUIET, MODULE_PHASE_MAX)?;
    writeln!(
        out,
        "# modules: {n} events, {} dropped, {} overflows",
        sock.dropped(),
        sock.overflows()
    )?;
    writeln!(out, "END")?;
    out.flush()?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("guest-capture: {e:#}");
    }
    rustix::fs::sync();
    // PID 1 must not exit; power off (the host runs qemu with -no-reboot).
    let _ = reboot(RebootCommand::PowerOff);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
