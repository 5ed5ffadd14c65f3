//! The host tool's only unsafe code: a pre_exec hook.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The child gets SIGKILL when the thread that started it dies, so a
/// killed `kestrel` never leaves a qemu behind.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the hook only calls prctl(PR_SET_PDEATHSIG), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}
