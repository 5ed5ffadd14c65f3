//! Kestrel's host tool as a library: the initrd build, the qemu launcher,
//! one boot's event collection, and the analysis of where the time went.
//! The `kestrel` binary is a thin CLI over it, and the VM tests use it
//! directly. Host only: never linked into the guest.
//!
//! Flows run one way: the commands (`run`, `bench`, `analyze`, and
//! `build` as the CLI uses it; the CLI also reads `project`, the
//! kestrel.toml defaults) use the pipeline (`build`, `share`, `qemu`,
//! `vm`), which uses the bottom (`kernel`, `machine`, `virtiofsd`,
//! `cache`, `bootlog`, `signals`, kestrel-initrd, kestrel-proto); nothing
//! points back up.

pub mod analyze;
pub mod bench;
pub mod bootlog;
pub mod build;
pub mod cache;
pub mod drivers;
pub mod kernel;
pub mod machine;
pub mod project;
pub mod qemu;
pub mod qemu_trace;
pub mod run;
pub mod share;
pub mod signals;
pub mod svg;
mod sys;
pub mod virtiofsd;
pub mod vm;
pub mod yardstick;
