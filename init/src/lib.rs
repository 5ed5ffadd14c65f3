//! Kestrel's init (PID 1) — the library half: pure pieces the binary uses
//! and fuzz targets and tests reach: the superblock and partition-table
//! probe, and the check that keeps device names inside /dev. No syscalls
//! here, never panics on any input.

pub mod devname;
pub mod probe;
