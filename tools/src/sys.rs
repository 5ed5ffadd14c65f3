//! The host tool's only unsafe code: a pre_exec hook and reading the TSC.
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

/// The host's TSC rate in kHz, measured against CLOCK_MONOTONIC over
/// `window`. Under TCG the guest's RDTSC is the host's TSC, so this is the
/// rate a guest must be told (`tsc_early_khz=`) when it cannot calibrate.
pub fn measure_tsc_khz(window: std::time::Duration) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let t0 = std::time::Instant::now();
        // SAFETY: RDTSC has no memory effects; every x86_64 CPU has it.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(window);
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ns = t0.elapsed().as_nanos();
        let khz = u128::from(c1.checked_sub(c0)?) * 1_000_000 / ns.max(1);
        u64::try_from(khz).ok().filter(|&k| k > 100_000)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = window;
        None
    }
}
