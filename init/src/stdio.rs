//! fds 0/1/2: the kernel opens /dev/console for PID 1 only when the node
//! exists in the initramfs. Whatever is closed is pointed at the console,
//! else /dev/null, so no later open() lands on 0-2 by accident.

use crate::sys;
use std::os::fd::{AsRawFd, OwnedFd};

pub fn ensure() {
    for fd in 0..=2 {
        if sys::fd_is_open(fd) {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(fd == 0)
            .write(fd != 0)
            .open("/dev/console")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
            });
        let Ok(file) = file else { continue };
        let owned = OwnedFd::from(file);
        if owned.as_raw_fd() == fd {
            // open() took the lowest free fd, which is this one: keep it,
            // inheritable (std opens with O_CLOEXEC).
            let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::empty());
            std::mem::forget(owned);
        } else {
            // dup2 makes an inheritable copy; the original closes on drop.
            let _ = sys::dup_onto(&owned, fd);
        }
    }
}
