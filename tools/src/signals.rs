//! SIGINT, SIGTERM and SIGHUP end a run and leave nothing behind. While a
//! VM is up (a [`SignalGuard`] lives), the signal is only recorded; the
//! boot's supervisor sees it within a tick, kills qemu, and the run
//! removes its temporary directory and socket and reports 128+N. With no
//! VM up the signals keep their default action: there is nothing to
//! clean up, and a long build step is not waited for.

use std::sync::Mutex;

/// The signals that end a run.
const HANDLED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Live guards.
static ARMED: Mutex<usize> = Mutex::new(0);

/// The signal that asked this process to stop (the first of [`HANDLED`]
/// that arrived while a guard was armed), if one did.
pub fn pending() -> Option<i32> {
    crate::sys::caught_signal()
}

/// The name of a handled signal, for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// While it lives, [`HANDLED`] signals are recorded instead of ending
/// the process. Guards nest (parallel boots of one process).
pub struct SignalGuard(());

impl SignalGuard {
    pub fn arm() -> std::io::Result<SignalGuard> {
        let mut armed = ARMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *armed == 0 {
            for sig in HANDLED {
                crate::sys::catch_signal(sig)?;
            }
        }
        *armed += 1;
        Ok(SignalGuard(()))
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut armed = ARMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *armed = armed.saturating_sub(1);
        if *armed == 0 {
            for sig in HANDLED {
                let _ = crate::sys::default_signal(sig);
            }
        }
    }
}
