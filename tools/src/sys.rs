//! The host tool's only unsafe code: the pre_exec hooks, the signal
//! handlers, and reading the TSC.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child gets SIGKILL when the thread that started it dies, so a
/// killed `kestrel` never leaves a qemu behind.
pub fn prepare_child(cmd: &mut Command) {
    // SAFETY: the hook only calls prctl(PR_SET_PDEATHSIG), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// Gives the child a mount namespace of its own in which `dir` is seen,
/// read-only, at `at`: bound there with its submounts, and every mount of
/// that bind made read-only (mount_setattr). Nothing propagates back to
/// ours, and the namespace ends with the child. Needs root.
pub fn read_only_view(cmd: &mut Command, dir: &Path, at: &Path) -> std::io::Result<()> {
    let dir = CString::new(dir.as_os_str().as_bytes())?;
    let at = CString::new(at.as_os_str().as_bytes())?;
    // SAFETY: the hook only makes system calls (unshare, mount,
    // mount_setattr) with the strings made before the fork and a struct
    // on its own stack; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_long| match rc {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            };
            let null = std::ptr::null::<libc::c_char>();
            check(libc::unshare(libc::CLONE_NEWNS).into())?;
            check(
                libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
                .into(),
            )?;
            check(
                libc::mount(
                    dir.as_ptr(),
                    at.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
                .into(),
            )?;
            let attr = libc::mount_attr {
                attr_set: libc::MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                at.as_ptr(),
                libc::AT_RECURSIVE as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            ))
        });
    }
    Ok(())
}

/// The first caught signal (see [`catch_signal`]); 0 while none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// Async-signal-safe: one atomic compare-and-swap.
extern "C" fn on_signal(sig: libc::c_int) {
    let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// The first signal caught since the process started, if any.
pub fn caught_signal() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

fn set_action(sig: i32, handler: libc::sighandler_t) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags);
    // the handler is either SIG_DFL or `on_signal`, which only stores to
    // an atomic (async-signal-safe). SA_RESTART keeps the other threads'
    // blocking calls from failing with EINTR.
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `sig` is recorded (see [`caught_signal`]) instead of acted on.
pub fn catch_signal(sig: i32) -> std::io::Result<()> {
    set_action(
        sig,
        on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
    )
}

/// `sig` gets its default action back.
pub fn default_signal(sig: i32) -> std::io::Result<()> {
    set_action(sig, libc::SIG_DFL)
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
