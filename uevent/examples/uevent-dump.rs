//! Prints every device of a sysfs tree (default /sys) as the walk sees it;
//! or, with `--listen SECONDS`, every uevent the kernel multicasts in that
//! time. With `--save DIR`, each received datagram is also written raw to
//! `DIR/NNNN.bin` (the netlink fixtures are captured this way). With
//! `--trigger`, after the walk it writes `add UUID` to every device's
//! `uevent` file and reports when every triggered event has come back.
//!
//! uevent-dump [--sys DIR] [--listen SECONDS [--save DIR] [--trigger]]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kestrel_uevent::socket::UeventSocket;
use kestrel_uevent::{walk, Uevent, UeventError};

#[path = "../tests/support/coldplug.rs"]
mod coldplug;
use coldplug::{SysfsWriter, Trigger};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// One line per event; bytes outside printable ASCII are escaped (`\n`,
/// `\xff`), so a value with a newline (x86's cpu MODALIAS) stays on its line.
fn print(ev: &Uevent) {
    print!(
        "{} {}",
        ev.action_bytes().escape_ascii(),
        ev.devpath().escape_ascii()
    );
    for (k, v) in ev.fields() {
        print!(" {}={}", k.escape_ascii(), v.escape_ascii());
    }
    println!();
}

fn main() -> anyhow::Result<()> {
    let mut sys = PathBuf::from("/sys");
    let mut listen = None;
    let mut save = None;
    let mut trigger = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sys" => sys = args.next().context("--sys needs a directory")?.into(),
            "--listen" => {
                listen = Some(Duration::from_secs_f64(
                    args.next().context("--listen needs seconds")?.parse()?,
                ))
            }
            "--save" => {
                save = Some(PathBuf::from(
                    args.next().context("--save needs a directory")?,
                ))
            }
            "--trigger" => trigger = true,
            other => bail!("unknown argument {other:?}"),
        }
    }
    // Subscribe before walking, so nothing appearing in between is missed.
    let mut sock = listen.map(|_| UeventSocket::open()).transpose()?;
    let w = walk::walk_devices(&sys)?;
    eprintln!("walk: {} devices, {} skipped", w.devices.len(), w.skipped);
    let (Some(sock), Some(listen)) = (sock.as_mut(), listen) else {
        for ev in &w.devices {
            print(ev);
        }
        return Ok(());
    };
    let mut trig = Trigger::with_unique_batch();
    if trigger {
        let n = trig.trigger_all(&mut SysfsWriter, &sys, &w.devices)?;
        eprintln!("trigger: {n} written, {} failed", trig.failed().len());
    }
    if let Some(dir) = &save {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let deadline = Instant::now() + listen;
    let mut n = 0usize;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let mut fds = [PollFd::new(&*sock, PollFlags::IN)];
        let ts = Timespec::try_from(left)?;
        poll(&mut fds, Some(&ts))?;
        loop {
            match sock.recv() {
                Ok(Some(ev)) => {
                    trig.observe(&ev);
                    print(&ev);
                    if let Some(dir) = &save {
                        let path = dir.join(format!("{n:04}.bin"));
                        std::fs::write(&path, ev.raw())
                            .with_context(|| format!("failed to write {}", path.display()))?;
                    }
                    n += 1;
                }
                Ok(None) => {
                    if trigger && !trig.is_complete() {
                        // Writes are synchronous: drained means all came.
                        let silent = trig.finish_after_drain();
                        eprintln!(
                            "trigger: complete, {} came back, {} silent (filtered by the kernel)",
                            trig.returned(),
                            silent.len()
                        );
                    }
                    break;
                }
                Err(UeventError::Overflow) => eprintln!("overflow: events lost"),
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    eprintln!("listen: {n} events, {} dropped", sock.dropped());
    Ok(())
}
