//! Where the host tool keeps what it builds once (the PVH vmlinux of a
//! kernel, compressed base archives): one kestrel-initrd [`Cache`], which
//! writes each entry to a temporary file of its own writer, fsyncs it and
//! renames it into place, so concurrent runs never see a partial entry.

use anyhow::{Context, Result};
use kestrel_initrd::Cache;
use std::path::PathBuf;

/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "KESTREL_CACHE";

/// The cache: $KESTREL_CACHE, else `kestrel` in the user's cache directory
/// ($XDG_CACHE_HOME, ~/.cache). Without HOME, a per-user directory in /tmp
/// that must be ours and private: a booted kernel or initrd is never taken
/// from a place another user could have written.
pub fn open_cache() -> Result<Cache> {
    Ok(Cache::new(cache_dir()?))
}

fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_ENV) {
        return Ok(d.into());
    }
    if let Some(base) = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
    {
        return Ok(base.join("kestrel"));
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("kestrel-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is not a private directory of ours; set {CACHE_ENV} or HOME",
            dir.display()
        );
    }
    Ok(dir)
}
