//! Phase 8: stop everything that is left, sync, unmount, tell the host,
//! power off. PID 1 must never exit (the kernel would panic), so this
//! never returns.

use crate::hostin::HostInput;
use crate::{log, mounts, sys};
use kestrel_proto::GuestRecord;
use kestrel_proto::HostRecord;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{wait, WaitOptions};
use std::time::{Duration, Instant};

/// Time leftover processes get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_millis(500);
/// How long the host gets to acknowledge the last record.
const ACK_DEADLINE: Duration = Duration::from_secs(5);

/// Reaps children until none is left or the deadline passes; true when none is left.
fn reap_until(deadline: Instant) -> bool {
    loop {
        match wait(WaitOptions::NOHANG) {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            // ECHILD: no children at all.
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the host has read everything up to `poweroff` (it answers
/// with the ACK line), so no output is lost in flight.
fn wait_for_ack() {
    let Some(mut input) = HostInput::open() else {
        log::use_console();
        return;
    };
    let deadline = Instant::now() + ACK_DEADLINE;
    while !input.eof {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(timeout) = rustix::time::Timespec::try_from(left) else {
            return;
        };
        if left.is_zero()
            || poll(
                &mut [PollFd::from_borrowed_fd(input.fd(), PollFlags::IN)],
                Some(&timeout),
            )
            .unwrap_or(0)
                == 0
        {
            return;
        }
        if input.read_records().iter().any(|r| *r == HostRecord::Ack) {
            return;
        }
    }
}

pub fn power_off(status: i32, mounted: &[&str]) -> ! {
    let _ = sys::kill_all(libc::SIGTERM);
    if !reap_until(Instant::now() + GRACE) {
        let _ = sys::kill_all(libc::SIGKILL);
        reap_until(Instant::now() + GRACE);
    }
    rustix::fs::sync();
    mounts::unmount_all(mounted);
    log::emit(GuestRecord::Poweroff {
        status,
        dropped: log::dropped(),
    });
    wait_for_ack();
    loop {
        let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
        // reboot(2) only returns on error (e.g. not PID 1): never exit.
        std::thread::sleep(Duration::from_secs(1));
    }
}
