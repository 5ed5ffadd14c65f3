//! Firmware that included modules declare (`MODULE_FIRMWARE`, the `firmware=`
//! entries of a module's `.modinfo` section), found under /lib/firmware with
//! the kernel's own search order.

use crate::archive::normalize;
use crate::{Archive, Compression, InitrdError};
use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};

/// Where firmware lives on the host and in the guest.
pub const FIRMWARE_DIR: &str = "/lib/firmware";
/// Refuse firmware files beyond this (the largest linux-firmware blobs are tens of MiB).
pub const MAX_FIRMWARE_SIZE: u64 = 128 << 20;

/// The `key=value` records of a `.modinfo` section (NUL separated, padding
/// NULs skipped). Records without '=' are ignored.
pub fn parse_modinfo(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let r = String::from_utf8_lossy(r);
            r.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The `firmware=` entries of a module (the decompressed ELF, see `read_module`).
pub fn modinfo_firmware(module_elf: &[u8]) -> Result<Vec<String>, InitrdError> {
    let err = |reason: String| InitrdError::Elf {
        path: PathBuf::from("<module>"),
        reason,
    };
    let file = object::File::parse(module_elf).map_err(|e| err(e.to_string()))?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data().map_err(|e| err(e.to_string()))?;
    Ok(parse_modinfo(data)
        .into_iter()
        .filter(|(k, _)| k == "firmware")
        .map(|(_, v)| v)
        .collect())
}

/// One firmware file found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareFile {
    /// The name the driver requests ("iwlwifi-7265D-29.ucode").
    pub name: String,
    /// The host file (possibly compressed).
    pub host_path: PathBuf,
    /// How the host file is compressed (firmware loaders accept .xz/.zst names).
    pub compression: Compression,
    /// Where the uncompressed content goes in the archive ("lib/firmware/NAME").
    pub archive_path: String,
}

/// Find firmware `name` under `fw_root` (normally /lib/firmware) in the
/// kernel's order (`drivers/base/firmware_loader/main.c` fw_path):
/// updates/<kver>, updates, <kver>, then the root; in each, the plain file,
/// then `.zst`, then `.xz`. `Ok(None)` when it is not there (optional
/// firmware is common). A name with `..` is refused, and so is a file whose
/// real path leaves `fw_root` through a symlink.
pub fn find_firmware(
    fw_root: &Path,
    kernel_version: &str,
    name: &str,
) -> Result<Option<FirmwareFile>, InitrdError> {
    let comps = normalize(name)?;
    let clean = comps.join("/");
    let root_real = match std::fs::canonicalize(fw_root) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InitrdError::io("resolve", fw_root, e)),
    };
    let dirs = [
        fw_root.join("updates").join(kernel_version),
        fw_root.join("updates"),
        fw_root.join(kernel_version),
        fw_root.to_path_buf(),
    ];
    for dir in &dirs {
        for c in [Compression::None, Compression::Zstd, Compression::Xz] {
            let p = dir.join(format!("{clean}{}", c.extension()));
            let Ok(real) = std::fs::canonicalize(&p) else {
                continue;
            };
            if !real.starts_with(&root_real) {
                return Err(InitrdError::PathEscape {
                    path: p.display().to_string(),
                    reason: format!(
                        "resolves to {} outside {}",
                        real.display(),
                        fw_root.display()
                    ),
                });
            }
            if real.is_file() {
                return Ok(Some(FirmwareFile {
                    name: clean.clone(),
                    host_path: p,
                    compression: c,
                    archive_path: format!("lib/firmware/{clean}"),
                }));
            }
        }
    }
    Ok(None)
}

impl Archive {
    /// Add a firmware file found by [`find_firmware`], decompressed: the
    /// initramfs is compressed as a whole, and the guest kernel then needs no
    /// CONFIG_FW_LOADER_COMPRESS_*.
    pub fn add_firmware(&mut self, fw: &FirmwareFile, reason: &str) -> Result<(), InitrdError> {
        let raw =
            std::fs::read(&fw.host_path).map_err(|e| InitrdError::io("read", &fw.host_path, e))?;
        let data = crate::compress::decompress_limited(&raw, fw.compression, MAX_FIRMWARE_SIZE)?;
        self.add_file(&fw.archive_path, 0o644, data)?;
        self.set_reason(&fw.archive_path, reason);
        Ok(())
    }
}

/// What [`Archive::add_module_firmware`] did for one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirmwareReport {
    /// Firmware names added (archive paths under lib/firmware).
    pub added: Vec<String>,
    /// Declared but not on the host (many drivers list optional firmware).
    pub missing: Vec<String>,
}

impl Archive {
    /// Every firmware file the module `module_name` declares in its
    /// `.modinfo` (`module_elf` is the decompressed module) that exists
    /// under `fw_root`, added with the reason "firmware declared by NAME".
    pub fn add_module_firmware(
        &mut self,
        module_name: &str,
        module_elf: &[u8],
        fw_root: &Path,
        kernel_version: &str,
    ) -> Result<FirmwareReport, InitrdError> {
        let mut report = FirmwareReport::default();
        for name in modinfo_firmware(module_elf)? {
            match find_firmware(fw_root, kernel_version, &name)? {
                Some(fw) => {
                    self.add_firmware(&fw, &format!("firmware declared by {module_name}"))?;
                    report.added.push(fw.archive_path);
                }
                None => report.missing.push(name),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A relocatable ELF with just a .modinfo section, built with the real
    /// toolchain's assembler.
    fn fake_module(firmware: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut asm = String::from(".section .modinfo,\"a\"\n");
        for f in firmware {
            asm.push_str(&format!(".asciz \"firmware={f}\"\n"));
        }
        asm.push_str(".asciz \"license=GPL\"\n");
        let src = dir.path().join("m.s");
        let obj = dir.path().join("m.o");
        std::fs::write(&src, asm).unwrap();
        let ok = std::process::Command::new("as")
            .arg("-o")
            .arg(&obj)
            .arg(&src)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "the assembler (binutils) is needed for this test");
        std::fs::read(obj).unwrap()
    }

    #[test]
    fn modinfo_records() {
        let sec = b"license=GPL\0firmware=a.bin\0\0\0firmware=dir/b.fw\0junk\0alias=pci:v*\0";
        let r = parse_modinfo(sec);
        assert_eq!(r.len(), 4);
        assert_eq!(r[1], ("firmware".into(), "a.bin".into()));
    }

    /// r8169 (it declares `rtl_nic/` firmware) from the installed module
    /// trees, one file per way of storing it (plain `.ko` in Debian's 6.1
    /// trees, `.ko.xz` in 6.12's), so both read paths are exercised.
    fn installed_r8169() -> Vec<PathBuf> {
        const REL: &str = "kernel/drivers/net/ethernet/realtek/r8169.ko";
        let mut trees: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        trees.sort();
        let mut found: Vec<PathBuf> = Vec::new();
        for ext in ["", ".xz", ".zst"] {
            if let Some(p) = trees
                .iter()
                .map(|t| t.join(format!("{REL}{ext}")))
                .find(|p| p.is_file())
            {
                found.push(p);
            }
        }
        found
    }

    #[test]
    fn firmware_of_a_real_module() {
        let modules = installed_r8169();
        if modules.is_empty() {
            eprintln!(
                "SKIP: firmware_of_a_real_module: no module tree with r8169 under /lib/modules"
            );
        }
        for p in modules {
            eprintln!("firmware_of_a_real_module: {}", p.display());
            let elf = crate::read_module(&p).unwrap();
            let fw = modinfo_firmware(&elf).unwrap();
            assert!(
                fw.iter().any(|f| f.starts_with("rtl_nic/")),
                "{}: {fw:?}",
                p.display()
            );
        }
    }

    #[test]
    fn lookup_order_compression_and_escapes() {
        let root = tempfile::tempdir().unwrap();
        let fw = root.path().join("firmware");
        std::fs::create_dir_all(fw.join("updates/6.1")).unwrap();
        std::fs::create_dir_all(fw.join("vendor")).unwrap();
        std::fs::write(fw.join("vendor/a.bin"), b"base").unwrap();
        std::fs::write(
            fw.join("vendor/c.bin.xz"),
            crate::compress(b"xz!", Compression::Xz).unwrap(),
        )
        .unwrap();
        std::fs::write(fw.join("updates/6.1/b.bin"), b"new").unwrap();
        std::fs::write(fw.join("b.bin"), b"old").unwrap();
        std::fs::write(root.path().join("secret"), b"host secret").unwrap();
        symlink("../secret", fw.join("evil.bin")).unwrap();
        symlink("vendor/a.bin", fw.join("alias.bin")).unwrap();

        let a = find_firmware(&fw, "6.1", "vendor/a.bin").unwrap().unwrap();
        assert_eq!(a.archive_path, "lib/firmware/vendor/a.bin");
        let b = find_firmware(&fw, "6.1", "b.bin").unwrap().unwrap();
        assert_eq!(b.host_path, fw.join("updates/6.1/b.bin"));
        let c = find_firmware(&fw, "6.1", "vendor/c.bin").unwrap().unwrap();
        assert_eq!(c.compression, Compression::Xz);
        assert!(find_firmware(&fw, "6.1", "missing.bin").unwrap().is_none());
        assert!(find_firmware(&fw, "6.1", "alias.bin").unwrap().is_some());
        assert!(matches!(
            find_firmware(&fw, "6.1", "evil.bin"),
            Err(InitrdError::PathEscape { .. })
        ));
        assert!(matches!(
            find_firmware(&fw, "6.1", "../secret"),
            Err(InitrdError::PathEscape { .. })
        ));

        // A module declaring two of them and one that is absent.
        let module = fake_module(&["vendor/a.bin", "missing.bin", "b.bin"]);
        let mut ar = Archive::new();
        let report = ar.add_module_firmware("m", &module, &fw, "6.1").unwrap();
        assert_eq!(
            report.added,
            ["lib/firmware/vendor/a.bin", "lib/firmware/b.bin"]
        );
        assert_eq!(report.missing, ["missing.bin"]);
        let m = ar.manifest();
        let b_entry = m.iter().find(|e| e.path == "lib/firmware/b.bin").unwrap();
        assert_eq!(
            (b_entry.size, b_entry.reason.as_str()),
            (3, "firmware declared by m")
        );

        let mut ar = Archive::new();
        ar.add_firmware(&c, "declared by m").unwrap();
        ar.add_firmware(&b, "declared by m").unwrap();
        let m = ar.manifest();
        let c_entry = m
            .iter()
            .find(|e| e.path == "lib/firmware/vendor/c.bin")
            .unwrap();
        assert_eq!(
            (c_entry.size, c_entry.reason.as_str()),
            (3, "declared by m")
        );
    }
}
