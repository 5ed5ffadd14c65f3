//! Phase 8: stop everything that is left, sync, unmount, tell the host,
//! power off. PID 1 must never exit (the kernel would panic), so this
//! never returns; every step has a deadline, so nothing can hold it.

use crate::eventloop::Init;
use crate::{log, mounts, sys};
use kestrel_proto::GuestRecord;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Time leftover processes get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_millis(500);
/// Longest wait for sync(2): a hung disk must not hold the power off.
const SYNC_DEADLINE: Duration = Duration::from_secs(10);
/// How long the host gets to read the last records and acknowledge them.
const ACK_DEADLINE: Duration = Duration::from_secs(5);

/// Stops what is left, syncs, unmounts, reports `status`, waits for the
/// host to have read everything (its ack), powers off.
pub fn finish(init: &mut Init, status: i32, mounted: &[PathBuf]) -> ! {
    // What a failed boot may be missing: the driver of a device it waited for.
    init.devices.report_unmatched(&init.roots);
    stop_processes(init);
    sync_with_deadline();
    mounts::unmount_all(init.sys, mounted);
    log::emit(GuestRecord::Poweroff {
        status,
        dropped: log::dropped(),
    });
    if init.port.is_some() {
        init.await_ack(Instant::now() + ACK_DEADLINE);
    }
    power_off_now()
}

/// SIGTERM to everything, reaping while it ends; SIGKILL after the grace.
fn stop_processes(init: &mut Init) {
    for (sig, grace) in [(libc::SIGTERM, GRACE), (libc::SIGKILL, GRACE)] {
        if no_children(init) {
            return;
        }
        let _ = sys::kill_all(sig);
        let deadline = Instant::now() + grace;
        if init.run_until(Some(deadline), no_children) {
            return;
        }
    }
}

fn no_children(init: &mut Init) -> bool {
    init.reap();
    matches!(
        rustix::process::wait(rustix::process::WaitOptions::NOHANG),
        Err(rustix::io::Errno::CHILD)
    )
}

/// sync(2) in a child of its own, waited for at most [`SYNC_DEADLINE`]
/// (PID 1 has no threads; a child that hangs in D state is left behind).
fn sync_with_deadline() {
    use rustix::process::{waitpid, WaitOptions};
    let child = match sys::fork() {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            rustix::fs::sync();
            sys::exit_now(0)
        }
        Err(_) => return rustix::fs::sync(),
    };
    let deadline = Instant::now() + SYNC_DEADLINE;
    // Done when reaped here, or already reaped by the loop (ECHILD).
    while let Ok(None) = waitpid(Some(child), WaitOptions::NOHANG) {
        if Instant::now() >= deadline {
            return log::warn(&format!(
                "sync did not finish within {SYNC_DEADLINE:?}; powering off anyway"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// reboot(2) only returns on error (e.g. not PID 1): never exit.
fn power_off_now() -> ! {
    loop {
        let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The last resort (a panic, a failure before the event loop exists):
/// the records that are buffered get a moment to leave, then power off.
pub fn emergency_power_off(status: i32) -> ! {
    log::emit(GuestRecord::Poweroff {
        status,
        dropped: log::dropped(),
    });
    log::flush_until(Instant::now() + ACK_DEADLINE);
    power_off_now()
}
