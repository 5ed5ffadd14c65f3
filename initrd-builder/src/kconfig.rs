//! Which initramfs compressions a kernel can unpack, from its build config
//! (`/boot/config-<version>`): CONFIG_RD_GZIP, CONFIG_RD_ZSTD, CONFIG_RD_XZ.
//! The decompressors run before any module loads, so only `=y` counts.

use crate::{Compression, InitrdError};
use std::path::{Path, PathBuf};

/// The config file of kernel `version` under `boot_dir` (usually "/boot").
pub fn kernel_config_path(boot_dir: &Path, version: &str) -> PathBuf {
    boot_dir.join(format!("config-{version}"))
}

/// The state of a tristate option in the text of a kernel .config: its
/// value ("y", "m", a string), "n" when `# … is not set`, else "absent".
pub fn option_state<'a>(config: &'a str, option: &str) -> &'a str {
    for line in config.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix(option).and_then(|r| r.strip_prefix('=')) {
            return v;
        }
        if line.strip_prefix("# ").and_then(|r| r.strip_prefix(option)) == Some(" is not set") {
            return "n";
        }
    }
    "absent"
}

/// The RD_* (and BLK_DEV_INITRD) settings of one kernel config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdSupport {
    config: String,
}

impl RdSupport {
    /// Parse the text of a kernel .config.
    pub fn parse(config: &[u8]) -> Self {
        Self {
            config: String::from_utf8_lossy(config).into_owned(),
        }
    }

    /// Read `/boot/config-<version>`; `Ok(None)` when the file does not exist
    /// (the check is then skipped by the caller, with a note).
    pub fn from_file(path: &Path) -> Result<Option<Self>, InitrdError> {
        match std::fs::read(path) {
            Ok(data) => Ok(Some(Self::parse(&data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InitrdError::io("read", path, e)),
        }
    }

    /// The config option that gates `c`.
    pub fn option(c: Compression) -> &'static str {
        match c {
            Compression::None => "CONFIG_BLK_DEV_INITRD",
            Compression::Gzip => "CONFIG_RD_GZIP",
            Compression::Zstd => "CONFIG_RD_ZSTD",
            Compression::Xz => "CONFIG_RD_XZ",
        }
    }

    /// The option's value ("y", "m", "n", or "absent").
    pub fn state(&self, c: Compression) -> &str {
        option_state(&self.config, Self::option(c))
    }

    /// Whether the kernel unpacks an initramfs compressed with `c`.
    pub fn supports(&self, c: Compression) -> bool {
        option_state(&self.config, "CONFIG_BLK_DEV_INITRD") == "y" && self.state(c) == "y"
    }

    /// The compressions this kernel unpacks.
    pub fn supported(&self) -> Vec<Compression> {
        Compression::ALL
            .into_iter()
            .filter(|c| self.supports(*c))
            .collect()
    }
}

/// Refuse `c` when the kernel config at `config` says it cannot be unpacked.
/// A missing config file is not an error (nothing to check against).
pub fn check_compression(config: &Path, c: Compression) -> Result<(), InitrdError> {
    let Some(rd) = RdSupport::from_file(config)? else {
        return Ok(());
    };
    for (option, state) in [
        (
            "CONFIG_BLK_DEV_INITRD",
            option_state(&rd.config, "CONFIG_BLK_DEV_INITRD"),
        ),
        (RdSupport::option(c), rd.state(c)),
    ] {
        if state != "y" {
            return Err(InitrdError::CompressionUnsupported {
                compression: c.name(),
                option,
                state: if state == "absent" {
                    "absent".into()
                } else {
                    format!("={state}")
                },
                config: config.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &[u8] = b"CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\nCONFIG_RD_XZ=m\nCONFIG_RD_GZIP_EXTRA=n\n";

    #[test]
    fn parse_states() {
        let rd = RdSupport::parse(CONFIG);
        assert_eq!(rd.state(Compression::Gzip), "y");
        assert_eq!(rd.state(Compression::Zstd), "n");
        assert_eq!(rd.state(Compression::Xz), "m");
        assert_eq!(rd.supported(), [Compression::None, Compression::Gzip]);
        let none = RdSupport::parse(b"CONFIG_RD_GZIP=y\n");
        assert!(none.supported().is_empty());
    }

    #[test]
    fn check_against_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = kernel_config_path(dir.path(), "1.2.3");
        assert!(
            check_compression(&p, Compression::Zstd).is_ok(),
            "missing config is not checked"
        );
        std::fs::write(&p, CONFIG).unwrap();
        assert!(check_compression(&p, Compression::Gzip).is_ok());
        let e = check_compression(&p, Compression::Zstd).unwrap_err();
        assert!(e.to_string().contains("CONFIG_RD_ZSTD =n"), "{e}");
        assert!(check_compression(&p, Compression::Xz).is_err());
    }

    /// Every installed Debian kernel (`/boot/config-*-amd64`, the flavour
    /// naming of Debian's packages) unpacks every compression.
    #[test]
    fn installed_debian_kernels() {
        let mut configs: Vec<std::path::PathBuf> = std::fs::read_dir("/boot")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("config-") && n.ends_with("-amd64"))
            })
            .collect();
        configs.sort();
        if configs.is_empty() {
            eprintln!("SKIP: installed_debian_kernels: no /boot/config-*-amd64");
        }
        for p in configs {
            eprintln!("installed_debian_kernels: {}", p.display());
            let rd = RdSupport::from_file(&p).unwrap().unwrap();
            assert_eq!(rd.supported(), Compression::ALL, "{}", p.display());
        }
    }
}
