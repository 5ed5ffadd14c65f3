//! Kestrel's init (PID 1) — the library half: the event wire format, the
//! kernel command line and the baked configuration, i.e. everything the
//! host tools must agree on with the guest. Pure logic: no syscalls here,
//! never panics on any input.

pub mod cmdline;
pub mod config;
pub mod devname;
pub mod event;
pub mod probe;
