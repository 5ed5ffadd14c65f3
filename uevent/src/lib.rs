//! Kernel uevents for Kestrel, the udev replacement's eyes: the model, the
//! parsers for netlink datagrams and sysfs `uevent` files, the netlink socket
//! and the coldplug walk of /sys.
//!
//! The parsers ([`parse_netlink`], [`parse_sysfs`]) are pure and total: any
//! input gives a [`Uevent`] or a typed [`UeventError`], without syscalls and
//! without panicking. Syscalls live only in [`socket`] and [`walk`] (and the
//! one `recvmsg` in the private `sys` module). This crate is linked into the
//! static PID 1, so it must never panic, never block, never trust a sender
//! other than the kernel, and never pull in a heavy dependency.

mod error;
mod event;
pub mod socket;
mod sys;
pub mod walk;

pub use error::UeventError;
pub use event::{parse_netlink, parse_sysfs, Action, Uevent, LIBUDEV_MAGIC_PREFIX, UEVENT_MAX};
