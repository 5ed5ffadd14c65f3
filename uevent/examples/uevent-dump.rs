//! Prints every device of a sysfs tree (default /sys) as the walk sees it,
//! then, with `--listen SECONDS`, every uevent the kernel multicasts in that
//! time; with `--save DIR`, each received datagram is also written raw to
//! `DIR/NNNN.bin` (the netlink fixtures are captured this way).
//!
//! uevent-dump [--sys DIR] [--listen SECONDS] [--save DIR]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kestrel_uevent::socket::UeventSocket;
use kestrel_uevent::{walk, Uevent, UeventError};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

fn print(ev: &Uevent) {
    print!(
        "{} {}",
        String::from_utf8_lossy(ev.action_bytes()),
        String::from_utf8_lossy(ev.devpath())
    );
    for (k, v) in ev.fields() {
        print!(
            " {}={}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        );
    }
    println!();
}

fn main() -> anyhow::Result<()> {
    let mut sys = PathBuf::from("/sys");
    let mut listen = None;
    let mut save = None;
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
            other => bail!("unknown argument {other:?}"),
        }
    }
    // Subscribe before walking, so nothing appearing in between is missed.
    let mut sock = listen.map(|_| UeventSocket::open()).transpose()?;
    let w = walk::walk_devices(&sys)?;
    for ev in &w.devices {
        print(ev);
    }
    eprintln!("walk: {} devices, {} skipped", w.devices.len(), w.skipped);
    let (Some(sock), Some(listen)) = (sock.as_mut(), listen) else {
        return Ok(());
    };
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
                    print(&ev);
                    if let Some(dir) = &save {
                        let path = dir.join(format!("{n:04}.bin"));
                        std::fs::write(&path, ev.raw())
                            .with_context(|| format!("failed to write {}", path.display()))?;
                    }
                    n += 1;
                }
                Ok(None) => break,
                Err(UeventError::Overflow) => eprintln!("overflow: events lost"),
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    eprintln!("listen: {n} events, {} dropped", sock.dropped());
    Ok(())
}
