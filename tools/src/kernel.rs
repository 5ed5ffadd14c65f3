//! The guest kernel: which one (the host's own by default), its version
//! (read from the bzImage header, so modules come from the right tree),
//! and the uncompressed vmlinux inside it. Under emulation the bzImage's
//! self-decompression is most of the time before the kernel starts, so
//! when the vmlinux has the PVH entry note qemu boots it directly; it is
//! extracted once and cached by the bzImage's hash.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

pub const BOOT_DIR: &str = "/boot";
pub const MODULES_ROOT: &str = "/lib/modules";

/// The default kernel: /boot/vmlinuz-$(uname -r), else the newest in /boot.
pub fn default_kernel() -> Result<PathBuf> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let own = Path::new(BOOT_DIR).join(format!("vmlinuz-{release}"));
    if own.exists() {
        return Ok(own);
    }
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(BOOT_DIR)
        .with_context(|| format!("failed to read {BOOT_DIR}"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((version_key(&version), e.path()))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no kernel in {BOOT_DIR} (looked for vmlinuz-{release} and vmlinuz-*); install one (make setup) or pass --kernel"
        ),
    }
}

/// Numbers of a version string, for sorting "6.1.0-56" after "6.1.0-9".
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn le16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn le64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// The kernel release ("6.1.0-56-amd64") from the bzImage setup header
/// (Documentation/arch/x86/boot.rst: `kernel_version` at 0x20E).
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return None;
    }
    let at = usize::from(le16(image, 0x20E)?) + 0x200;
    let s = image.get(at..)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    Some(String::from_utf8_lossy(s.get(..end)?).into_owned())
}

/// A kernel as the launcher uses it.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The image given (bzImage or vmlinux).
    pub path: PathBuf,
    /// What qemu boots: the cached PVH vmlinux when there is one.
    pub boot_image: PathBuf,
    pub release: String,
    /// /lib/modules/RELEASE, when present.
    pub modules_dir: Option<PathBuf>,
}

pub fn read_kernel(path: &Path, cache: &Path, use_pvh: bool) -> Result<Kernel> {
    let image =
        std::fs::read(path).with_context(|| format!("failed to read kernel {}", path.display()))?;
    let release = bzimage_release(&image)
        .with_context(|| format!("{} is not a bzImage (no HdrS setup header)", path.display()))?;
    let modules_dir = Path::new(MODULES_ROOT).join(&release);
    let modules_dir = modules_dir
        .join("modules.dep")
        .exists()
        .then_some(modules_dir);
    let boot_image = if use_pvh {
        cached_pvh_vmlinux(&image, cache)?.unwrap_or_else(|| path.to_owned())
    } else {
        path.to_owned()
    };
    Ok(Kernel {
        path: path.to_owned(),
        boot_image,
        release,
        modules_dir,
    })
}

/// The uncompressed vmlinux from a bzImage, cached; None when the payload
/// format is one we do not decode or the ELF has no PVH entry.
fn cached_pvh_vmlinux(image: &[u8], cache: &Path) -> Result<Option<PathBuf>> {
    let hash = hex(&Sha256::digest(image));
    let out = cache.join(format!("vmlinux-{}", &hash[..16]));
    let none_marker = cache.join(format!("vmlinux-{}.none", &hash[..16]));
    if out.exists() {
        return Ok(Some(out));
    }
    if none_marker.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("failed to create {}", cache.display()))?;
    let vmlinux = match extract_vmlinux(image)? {
        Some(v) if has_pvh_note(&v) => v,
        _ => {
            std::fs::write(&none_marker, b"")?;
            return Ok(None);
        }
    };
    crate::run::write_atomically(&out, &vmlinux)?;
    Ok(Some(out))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decompresses the payload of a bzImage (boot.rst: `payload_offset` at
/// 0x248 and `payload_length` at 0x24C, from the protected-mode code,
/// which starts after (setup_sects + 1) sectors).
pub fn extract_vmlinux(image: &[u8]) -> Result<Option<Vec<u8>>> {
    let setup_sects = match image.get(0x1F1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return Ok(None),
    };
    let (Some(off), Some(len)) = (le32(image, 0x248), le32(image, 0x24C)) else {
        return Ok(None);
    };
    let start = (setup_sects + 1) * 512 + off as usize;
    let Some(payload) = image.get(start..start + len as usize) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    if payload.starts_with(b"\xfd7zXZ\x00") {
        out = xz_single_stream(payload).context("failed to decompress the kernel (xz)")?;
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .context("failed to decompress the kernel (gzip)")?;
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut dec = zstd::stream::read::Decoder::new(payload)?.single_frame();
        dec.read_to_end(&mut out)
            .context("failed to decompress the kernel (zstd)")?;
    } else {
        return Ok(None);
    }
    Ok(out.starts_with(b"\x7fELF").then_some(out))
}

/// Decodes one xz stream and stops at its end: the kernel appends the
/// decompressed size after the stream, which a decoder that goes on reading
/// takes for a corrupt next stream.
fn xz_single_stream(mut input: &[u8]) -> Result<Vec<u8>> {
    use xz2::stream::{Action, Status, Stream};
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0)?;
    let mut out = Vec::with_capacity(input.len() * 4);
    loop {
        if out.capacity() - out.len() < (1 << 20) {
            out.reserve(16 << 20);
        }
        let (in_before, out_before) = (stream.total_in(), out.len());
        let status = stream.process_vec(input, &mut out, Action::Run)?;
        let used = usize::try_from(stream.total_in() - in_before)?;
        input = input.get(used..).unwrap_or_default();
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if used == 0 && out.len() == out_before {
            bail!("truncated xz stream");
        }
    }
}

/// Whether an ELF64 vmlinux has XEN_ELFNOTE_PHYS32_ENTRY (type 18, name
/// "Xen"), the PVH entry point qemu's `-kernel` uses.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (le64(elf, 0x20), le16(elf, 0x36), le16(elf, 0x38))
    else {
        return false;
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        if le32(elf, ph) != Some(PT_NOTE) {
            continue;
        }
        let (Some(offset), Some(size)) = (le64(elf, ph + 8), le64(elf, ph + 32)) else {
            continue;
        };
        let (mut at, end) = (offset as usize, (offset + size) as usize);
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(ty)) =
                (le32(elf, at), le32(elf, at + 4), le32(elf, at + 8))
            else {
                break;
            };
            let name = elf
                .get(at + 12..at + 12 + namesz as usize)
                .unwrap_or_default();
            if ty == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
                return true;
            }
            at +=
                12 + (namesz as usize).next_multiple_of(4) + (descsz as usize).next_multiple_of(4);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_versions_numerically() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
    }

    #[test]
    fn refuses_a_non_bzimage() {
        assert_eq!(bzimage_release(b"not a kernel"), None);
        assert!(extract_vmlinux(b"short").unwrap().is_none());
        assert!(!has_pvh_note(b"\x7fELF"));
    }

    /// The installed Debian kernel, when present: release from the header,
    /// and the PVH note in its vmlinux.
    #[test]
    fn reads_the_installed_kernel() {
        let Ok(path) = default_kernel() else {
            eprintln!("SKIP: no kernel in /boot");
            return;
        };
        let image = std::fs::read(&path).unwrap();
        let release = bzimage_release(&image).unwrap();
        assert!(
            path.to_string_lossy().ends_with(&release),
            "{release} vs {}",
            path.display()
        );
        let vmlinux = extract_vmlinux(&image).unwrap().expect("decodable payload");
        assert!(has_pvh_note(&vmlinux));
    }
}
