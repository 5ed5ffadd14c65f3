//! Kestrel's host tool as a library: the initrd build, the qemu launcher,
//! one boot's event collection, and the analysis of where the time went.
//! The `kestrel` binary is a thin CLI over it, and the VM tests use it
//! directly. Host only: never linked into the guest.

pub mod analyze;
pub mod bench;
pub mod initrd;
pub mod kernel;
pub mod qemu;
pub mod run;
pub mod svg;
mod sys;
pub mod vm;
