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
//!
//! Typical use by `kestrel build`:
//!
//! ```no_run
//! # fn main() -> Result<(), kestrel_initrd::InitrdError> {
//! use kestrel_initrd::{Archive, Cache, Compression, KeyHasher};
//! use std::io::Write;
//! use std::path::Path;
//! let mut base = Archive::new();
//! base.mirror_root_symlinks(Path::new("/"))?; // lib -> usr/lib etc., as on the host
//! base.add_char_dev("dev/console", 0o600, 5, 1)?;
//! base.add_file_from("init", Path::new("target/release/kestrel-init"))?;
//! base.set_reason("init", "PID 1");
//! // modules: read_module() each file of the kestrel-modules plan, add_file() it;
//! // firmware: modinfo_firmware() + find_firmware() + add_firmware().
//! let mtime = kestrel_initrd::mtime_from_source_date_epoch(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
//! let mut key = KeyHasher::new();
//! key.add_file("init", Path::new("target/release/kestrel-init"))?.add_str("compression", "zstd");
//! let cached = Cache::new("/var/cache/kestrel").get_or_build(&key.finish(), ".cpio.zst", |w| {
//!     w.write_all(&base.to_compressed(mtime, Compression::Zstd)?).map_err(kestrel_initrd::InitrdError::Write)
//! })?;
//! // The per-run part, appended uncompressed; resolved against the base's tree.
//! let mut run = Archive::overlay(&base);
//! run.add_program(Path::new("/bin/sh"))?;
//! let mut initrd = Vec::new();
//! let base_bytes = std::fs::read(&cached.path).map_err(|e| kestrel_initrd::InitrdError::Write(e))?;
//! kestrel_initrd::concat_archives(&mut initrd, &[&base_bytes, &run.to_newc(mtime)?])?;
//! # Ok(()) }
//! ```

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
pub use compress::{
    compress, compress_level, decompress, decompress_limited, decompress_one, read_module,
    Compression,
};
pub use elf::{parse_elf, parse_shebang, ElfInfo};
pub use error::InitrdError;
pub use firmware::{
    find_firmware, modinfo_firmware, parse_modinfo, FirmwareFile, FirmwareReport, FIRMWARE_DIR,
};
pub use host::{ProgramFile, PROGRAM_SEARCH_PATH};
pub use kconfig::{
    check_compression, kernel_config_path, option_state as kconfig_option, RdSupport,
};
pub use ldconf::{ld_so_conf_dirs, parse_ld_so_conf, LdConfLine};
pub use newc::{
    concat_archives, mtime_from_source_date_epoch, parse_initramfs, parse_newc, NewcEntry,
    NEWC_MAGIC, TRAILER_NAME,
};
