//! kestrel-proto: the contract between Kestrel's two halves, defined once.
//!
//! - [`record`]: every record the guest sends ([`GuestRecord`]) and every
//!   record the host sends back ([`HostRecord`]), typed, with their encoding;
//! - [`wire`]: the framing under them (grep-able header lines, exact binary
//!   payloads) and a bounded streaming [`wire::Decoder`];
//! - [`config`]: what the host bakes into the initrd for the init (the
//!   payload's argv, environment, working directory; a frozen plan);
//! - [`cmdline`]: the kernel command line as the init reads it, and the
//!   `kestrel.*` options the host writes there.
//!
//! A field added to a record is a compile error in the encoder and the
//! decoder until both handle it, so the two halves cannot drift apart.
//! Pure logic: no syscalls, no I/O, and no panic on any input.

pub mod cmdline;
pub mod config;
pub mod record;
pub mod wire;

pub use record::{
    GuestKind, GuestRecord, HostKind, HostRecord, ModuleOutcome, OutputFd, RecordError, Timed,
};
pub use wire::{Decoder, WireError, EVENTS_PORT};
