//! Host-side initramfs builder for Kestrel.
//!
//! Its role: turn a description of the guest's early root (the init, modules,
//! firmware, extra files and programs with their shared libraries) into a
//! deterministic newc cpio archive, optionally compressed, and cache the result
//! by the hash of its inputs. Byte-identical output for identical inputs is a
//! requirement, not a goal: entries are sorted, inode numbers are assigned in
//! order, owners are root and every mtime is the one given.
//!
//! What it must never do: let an archive path escape the archive root (`..`
//! components and relative symlink targets climbing above the root are refused),
//! follow host symlinks out of a tree it was asked to copy, or depend on the
//! host's clock, user, umask or directory iteration order. It never needs root
//! and never touches the live system beyond reading the files it is given.
//! Module resolution (which modules to include) belongs to `kestrel-modules`.

mod archive;
mod cache;
mod compress;
mod elf;
mod error;
mod firmware;
mod host;
mod kconfig;
mod ldconf;
mod newc;

pub use archive::{Archive, EntryKind, ManifestEntry, MAX_SYMLINK_HOPS};
pub use cache::{Cache, CacheKey, CacheOutcome, KeyHasher};
pub use compress::{compress, decompress, decompress_limited, decompress_one, read_module, Compression};
pub use elf::{parse_elf, parse_shebang, ElfInfo};
pub use host::{ProgramFile, PROGRAM_SEARCH_PATH};
pub use error::InitrdError;
pub use firmware::{find_firmware, modinfo_firmware, parse_modinfo, FirmwareFile, FIRMWARE_DIR};
pub use kconfig::{check_compression, kernel_config_path, RdSupport};
pub use ldconf::{ld_so_conf_dirs, parse_ld_so_conf, LdConfLine};
pub use newc::{concat_archives, mtime_from_source_date_epoch, parse_initramfs, parse_newc, NewcEntry, NEWC_MAGIC, TRAILER_NAME};
