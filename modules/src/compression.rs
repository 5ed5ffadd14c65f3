//! Compressed module files (.ko.gz, .ko.xz, .ko.zst).
//!
//! The kernel can decompress modules itself when built with
//! CONFIG_MODULE_DECOMPRESS, for the one algorithm it was configured with;
//! it then lists that algorithm in /sys/module/compression and accepts
//! MODULE_INIT_COMPRESSED_FILE. Kestrel never decompresses at boot: the
//! initrd builder decompresses at build time whatever
//! [`decompress_needed`] says the target kernel cannot handle.

use std::path::Path;

/// Where the kernel says which compression finit_module understands.
pub const SYS_MODULE_COMPRESSION: &str = "/sys/module/compression";

/// A module compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `.gz`
    Gzip,
    /// `.xz`
    Xz,
    /// `.zst`
    Zstd,
}

impl Compression {
    /// The format a module file is in, from its name (`None`: plain `.ko`).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Some(Compression::Gzip),
            Some("xz") => Some(Compression::Xz),
            Some("zst") => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Parses the contents of /sys/module/compression ("gzip", "xz", "zstd").
    pub fn from_sysfs(contents: &[u8]) -> Option<Self> {
        match contents.trim_ascii() {
            b"gzip" => Some(Compression::Gzip),
            b"xz" => Some(Compression::Xz),
            b"zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The name the kernel uses in /sys/module/compression.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// Reads what the running kernel supports from `sys_file` (normally
    /// [`SYS_MODULE_COMPRESSION`]); absent or unreadable means none.
    pub fn kernel_support(sys_file: &Path) -> Option<Self> {
        std::fs::read(sys_file)
            .ok()
            .and_then(|c| Compression::from_sysfs(&c))
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kernel_name())
    }
}

/// The compression that must be undone in userspace before `path` can be
/// loaded by a kernel supporting `kernel_support`; `None` when the file is
/// not compressed or the kernel can take it as it is.
pub fn decompress_needed(path: &Path, kernel_support: Option<Compression>) -> Option<Compression> {
    match Compression::from_path(path) {
        Some(c) if Some(c) != kernel_support => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(
            Compression::from_path(Path::new("a/ext4.ko.xz")),
            Some(Compression::Xz)
        );
        assert_eq!(
            Compression::from_path(Path::new("a/ext4.ko.zst")),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_path(Path::new("a/ext4.ko.gz")),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_path(Path::new("a/ext4.ko")), None);
    }

    #[test]
    fn sysfs_contents() {
        assert_eq!(Compression::from_sysfs(b"zstd\n"), Some(Compression::Zstd));
        assert_eq!(Compression::from_sysfs(b"xz\n"), Some(Compression::Xz));
        assert_eq!(Compression::from_sysfs(b"gzip\n"), Some(Compression::Gzip));
        assert_eq!(Compression::from_sysfs(b"lz4\n"), None);
        assert_eq!(
            Compression::kernel_support(Path::new("/nonexistent/kestrel/compression")),
            None
        );
    }

    #[test]
    fn decompression_decision() {
        let xz = Path::new("m.ko.xz");
        assert_eq!(decompress_needed(xz, Some(Compression::Xz)), None);
        assert_eq!(
            decompress_needed(xz, Some(Compression::Zstd)),
            Some(Compression::Xz)
        );
        assert_eq!(decompress_needed(xz, None), Some(Compression::Xz));
        assert_eq!(decompress_needed(Path::new("m.ko"), None), None);
    }
}
