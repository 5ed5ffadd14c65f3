//! The guest kernel: which one (by a documented rule, reported once), its
//! release (read from the bzImage header, so modules come from the right
//! tree), and the uncompressed vmlinux inside it. Under emulation the
//! bzImage's self-decompression is most of the time before the kernel
//! starts, so when the vmlinux has the PVH entry note qemu boots it
//! directly; it is extracted once (kestrel-initrd's decompression) and
//! kept in the cache under the bzImage's hash.
//!
//! The rule: `--kernel PATH` when given; else the running kernel's own
//! image, /boot/vmlinuz-$(uname -r), when it is installed; else the newest
//! /boot/vmlinuz-* by version number (the numbers in the release compared
//! in order: 6.12.113 > 6.1.0-57), and among equal versions the generic
//! flavour (the shortest name: 6.1.0-57-amd64 before 6.1.0-57-cloud-amd64).

use anyhow::{bail, Context, Result};
use kestrel_initrd::{Cache, Compression, KeyHasher};
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const BOOT_DIR: &str = "/boot";
pub const MODULES_ROOT: &str = "/lib/modules";
/// The file name prefix of kernel images in /boot.
const IMAGE_PREFIX: &str = "vmlinuz-";
/// Bound on a decompressed vmlinux (a distribution kernel is ~60 MiB).
const MAX_VMLINUX: u64 = 1 << 30;

/// Why this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelReason {
    /// `--kernel PATH`, or the project file's `kernel`.
    Given,
    /// /boot/vmlinuz-$(uname -r).
    Running,
    /// The newest of this many images in /boot.
    Newest { of: usize },
}

impl std::fmt::Display for KernelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelReason::Given => f.write_str("given with --kernel or in kestrel.toml"),
            KernelReason::Running => f.write_str("the running kernel; --kernel to choose"),
            KernelReason::Newest { of: 1 } => {
                write!(f, "the only one in {BOOT_DIR}; --kernel to choose")
            }
            KernelReason::Newest { of } => {
                write!(f, "the newest of {of} in {BOOT_DIR}; --kernel to choose")
            }
        }
    }
}

/// A kernel image installed in a boot directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The release, from the file name (`vmlinuz-RELEASE`).
    pub release: String,
    pub path: PathBuf,
}

/// Numbers of a release, for sorting "6.1.0-56" after "6.1.0-9" and
/// "6.12.113" after "6.1.0-57".
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The kernel images in `boot_dir`, oldest first by the rule above (the
/// last is the one chosen when there is no better reason).
pub fn installed_kernels(boot_dir: &Path) -> Result<Vec<Installed>> {
    let mut found: Vec<Installed> = std::fs::read_dir(boot_dir)
        .with_context(|| format!("failed to read {}", boot_dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix(IMAGE_PREFIX)?.to_owned();
            Some(Installed {
                release,
                path: e.path(),
            })
        })
        .collect();
    found.sort_by_key(|k| {
        (
            version_key(&k.release),
            Reverse(k.release.len()),
            Reverse(k.release.clone()),
        )
    });
    Ok(found)
}

/// Picks the kernel image: `given`, else the running release's image in
/// `boot_dir`, else the newest there.
pub fn choose_kernel(
    given: Option<&Path>,
    boot_dir: &Path,
    running_release: &str,
) -> Result<(PathBuf, KernelReason)> {
    if let Some(path) = given {
        return Ok((path.to_owned(), KernelReason::Given));
    }
    let own = boot_dir.join(format!("{IMAGE_PREFIX}{running_release}"));
    if own.is_file() {
        return Ok((own, KernelReason::Running));
    }
    let mut all = installed_kernels(boot_dir)?;
    let of = all.len();
    match all.pop() {
        Some(k) => Ok((k.path, KernelReason::Newest { of })),
        None => bail!(
            "no kernel in {} (looked for {IMAGE_PREFIX}{running_release} and {IMAGE_PREFIX}*); install one (make setup) or pass --kernel",
            boot_dir.display()
        ),
    }
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
fn bzimage_release(image: &[u8]) -> Option<String> {
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
    /// /lib/modules/RELEASE, when present (a source tree: its
    /// `modules_install` output).
    pub modules_dir: Option<PathBuf>,
    /// The kernel's build config (/boot/config-RELEASE, a tree's .config);
    /// it may not exist.
    pub config: PathBuf,
    /// Why this one.
    pub reason: KernelReason,
}

impl Kernel {
    /// The line that says which kernel and why.
    pub fn describe(&self) -> String {
        format!(
            "kestrel: kernel {} ({}, {})",
            self.release,
            self.path.display(),
            self.reason
        )
    }

    /// Says [`Kernel::describe`] on stderr once per process and image, so
    /// a bench of many boots says it once.
    pub fn report_once(&self) {
        static SAID: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
        let first = SAID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.path.clone());
        if first {
            eprintln!("{}", self.describe());
        }
    }
}

/// Chooses (see [`choose_kernel`]) and reads the kernel; `pvh` boots the
/// extracted vmlinux when the image has one.
pub fn load_kernel(given: Option<&Path>, cache: &Cache, pvh: bool) -> Result<Kernel> {
    let running = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let (path, reason) = choose_kernel(given, Path::new(BOOT_DIR), &running)?;
    read_kernel(&path, reason, cache, pvh)
}

/// Reads the kernel at `path`: a bzImage, a vmlinux with the PVH note,
/// or a built source tree (see [`read_tree`]).
pub fn read_kernel(path: &Path, reason: KernelReason, cache: &Cache, pvh: bool) -> Result<Kernel> {
    if path.is_dir() {
        return read_tree(path, reason, cache, pvh);
    }
    let image =
        std::fs::read(path).with_context(|| format!("failed to read kernel {}", path.display()))?;
    if image.starts_with(b"\x7fELF") {
        return read_vmlinux(path, &image, reason);
    }
    let release = bzimage_release(&image).with_context(|| {
        format!(
            "{} is not a bzImage (no HdrS setup header), a vmlinux or a kernel source tree",
            path.display()
        )
    })?;
    let boot_image = if pvh {
        cached_pvh_vmlinux(&image, cache)?.unwrap_or_else(|| path.to_owned())
    } else {
        path.to_owned()
    };
    Ok(Kernel {
        path: path.to_owned(),
        boot_image,
        modules_dir: module_tree(&Path::new(MODULES_ROOT).join(&release)),
        config: kestrel_initrd::kernel_config_path(Path::new(BOOT_DIR), &release),
        release,
        reason,
    })
}

/// `dir` when it holds a module index.
fn module_tree(dir: &Path) -> Option<PathBuf> {
    dir.join("modules.dep").is_file().then(|| dir.to_owned())
}

/// A module tree for `release` given as the tree itself
/// (`…/lib/modules/RELEASE`) or as an INSTALL_MOD_PATH (`…`, holding
/// `lib/modules/RELEASE`); None when it is neither.
pub fn find_module_tree(given: &Path, release: &str) -> Option<PathBuf> {
    module_tree(given).or_else(|| module_tree(&given.join("lib/modules").join(release)))
}

/// Where a source tree's `make modules_install INSTALL_MOD_PATH=…` output
/// is looked for, relative to the tree (INSTALL_MOD_PATH itself first, as
/// the kernel's make reads it; `.virtme_mods` is virtme-ng's).
pub const TREE_MODULE_DIRS: &[&str] = &["mods", ".virtme_mods", "."];
/// A source tree's image and its config, relative to the tree.
const TREE_BZIMAGE: &str = "arch/x86/boot/bzImage";
const TREE_VMLINUX: &str = "vmlinux";
const TREE_CONFIG: &str = ".config";

/// A built kernel source tree: its bzImage (the release from its header),
/// booted through the tree's own vmlinux when that has the PVH note (no
/// extraction); modules from its `modules_install` output (see
/// [`TREE_MODULE_DIRS`]; `--modules-dir` names another); its `.config`.
fn read_tree(dir: &Path, reason: KernelReason, cache: &Cache, pvh: bool) -> Result<Kernel> {
    let bz = dir.join(TREE_BZIMAGE);
    let image = std::fs::read(&bz).with_context(|| {
        format!(
            "{} is a folder but has no {TREE_BZIMAGE}: build the kernel first (make bzImage)",
            dir.display()
        )
    })?;
    let release = bzimage_release(&image)
        .with_context(|| format!("{} has no HdrS setup header", bz.display()))?;
    let vmlinux = dir.join(TREE_VMLINUX);
    let boot_image = if pvh && file_has_pvh_note(&vmlinux) {
        vmlinux
    } else if pvh {
        cached_pvh_vmlinux(&image, cache)?.unwrap_or_else(|| bz.clone())
    } else {
        bz.clone()
    };
    Ok(Kernel {
        path: dir.to_owned(),
        boot_image,
        modules_dir: tree_modules(dir, &release),
        config: dir.join(TREE_CONFIG),
        release,
        reason,
    })
}

/// A source tree's `modules_install` output (see [`TREE_MODULE_DIRS`]).
fn tree_modules(dir: &Path, release: &str) -> Option<PathBuf> {
    let install_mod_path = std::env::var_os("INSTALL_MOD_PATH").map(|p| dir.join(p));
    install_mod_path
        .into_iter()
        .chain(TREE_MODULE_DIRS.iter().map(|d| dir.join(d)))
        .find_map(|d| find_module_tree(&d, release))
}

/// A vmlinux given as the kernel: booted directly when it has the PVH
/// note; its release from the `Linux version …` banner in it. One at the
/// top of a built source tree takes the tree's .config and modules.
fn read_vmlinux(path: &Path, image: &[u8], reason: KernelReason) -> Result<Kernel> {
    if !has_pvh_note(image) {
        bail!(
            "{} is an ELF vmlinux without the PVH entry note (CONFIG_PVH): boot its bzImage",
            path.display()
        );
    }
    let release = banner_release(image)
        .with_context(|| format!("no \"Linux version\" banner in {}", path.display()))?;
    let tree = path
        .parent()
        .filter(|d| d.join(TREE_CONFIG).is_file() && d.join(TREE_BZIMAGE).is_file());
    let (modules_dir, config) = match tree {
        Some(dir) => (tree_modules(dir, &release), dir.join(TREE_CONFIG)),
        None => (
            module_tree(&Path::new(MODULES_ROOT).join(&release)),
            kestrel_initrd::kernel_config_path(Path::new(BOOT_DIR), &release),
        ),
    };
    Ok(Kernel {
        path: path.to_owned(),
        boot_image: path.to_owned(),
        modules_dir,
        config,
        release,
        reason,
    })
}

/// The release in a kernel's `linux_banner` ("Linux version 6.1.0 (…").
fn banner_release(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = memchr::memmem::find_iter(image, BANNER)
        .map(|at| at + BANNER.len())
        // The format string "Linux version %s" is in the image too.
        .find(|&at| image.get(at).is_some_and(|b| b.is_ascii_digit()))?;
    let rest = image.get(at..)?;
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    Some(String::from_utf8_lossy(rest.get(..end)?).into_owned())
}

/// [`has_pvh_note`] of a file, reading only its headers and notes (a
/// tree's vmlinux with debug info is hundreds of MB).
fn file_has_pvh_note(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const PT_NOTE: u32 = 4;
    const MAX_NOTES: u64 = 1 << 20;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 64];
    if f.read_exact(&mut head).is_err() || !head.starts_with(b"\x7fELF") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (le64(&head, 0x20), le16(&head, 0x36), le16(&head, 0x38))
    else {
        return false;
    };
    let mut phdrs = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    if f.seek(SeekFrom::Start(phoff)).is_err() || f.read_exact(&mut phdrs).is_err() {
        return false;
    }
    phdrs.chunks(usize::from(phentsize).max(1)).any(|ph| {
        let (Some(PT_NOTE), Some(offset), Some(size)) = (le32(ph, 0), le64(ph, 8), le64(ph, 32))
        else {
            return false;
        };
        let mut notes = vec![0u8; size.min(MAX_NOTES) as usize];
        f.seek(SeekFrom::Start(offset)).is_ok()
            && f.read_exact(&mut notes).is_ok()
            && notes_have_pvh(&notes)
    })
}

/// Cache entry suffixes: the vmlinux, and the mark of an image that has none.
const VMLINUX_SUFFIX: &str = ".vmlinux";
const NO_PVH_SUFFIX: &str = ".no-pvh";

/// The uncompressed vmlinux from a bzImage, cached; None when the payload
/// format is one we do not decode or the ELF has no PVH entry (remembered
/// too, so the image is not decompressed again).
fn cached_pvh_vmlinux(image: &[u8], cache: &Cache) -> Result<Option<PathBuf>> {
    let key = KeyHasher::new()
        .add_str("artifact", "pvh vmlinux")
        .add_bytes("bzImage", image)
        .finish();
    if let Some(path) = cache.get(&key, VMLINUX_SUFFIX) {
        return Ok(Some(path));
    }
    if cache.get(&key, NO_PVH_SUFFIX).is_some() {
        return Ok(None);
    }
    match extract_vmlinux(image)? {
        Some(vmlinux) if has_pvh_note(&vmlinux) => {
            let entry = cache.get_or_build(&key, VMLINUX_SUFFIX, |w| {
                std::io::Write::write_all(w, &vmlinux).map_err(kestrel_initrd::InitrdError::Write)
            })?;
            Ok(Some(entry.path))
        }
        _ => {
            cache.get_or_build(&key, NO_PVH_SUFFIX, |_| Ok(()))?;
            Ok(None)
        }
    }
}

/// Decompresses the payload of a bzImage (boot.rst: `payload_offset` at
/// 0x248 and `payload_length` at 0x24C, from the protected-mode code,
/// which starts after (setup_sects + 1) sectors). The kernel appends the
/// decompressed size after the stream, so exactly one stream is decoded.
fn extract_vmlinux(image: &[u8]) -> Result<Option<Vec<u8>>> {
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
    let Some(compression) = Compression::detect(payload) else {
        return Ok(None);
    };
    let (out, _) = kestrel_initrd::decompress_one(payload, compression, MAX_VMLINUX)
        .with_context(|| format!("failed to decompress the kernel ({compression})"))?;
    Ok(out.starts_with(b"\x7fELF").then_some(out))
}

/// Whether an ELF64 vmlinux has XEN_ELFNOTE_PHYS32_ENTRY (type 18, name
/// "Xen"), the PVH entry point qemu's `-kernel` uses.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    const PT_NOTE: u32 = 4;
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
        let notes = elf
            .get(offset as usize..offset.saturating_add(size) as usize)
            .unwrap_or_default();
        if notes_have_pvh(notes) {
            return true;
        }
    }
    false
}

/// Whether a note segment holds XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen").
fn notes_have_pvh(notes: &[u8]) -> bool {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (Some(namesz), Some(descsz), Some(ty)) =
            (le32(notes, at), le32(notes, at + 4), le32(notes, at + 8))
        else {
            break;
        };
        let name = notes
            .get(at + 12..at + 12 + namesz as usize)
            .unwrap_or_default();
        if ty == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
            return true;
        }
        at += 12 + (namesz as usize).next_multiple_of(4) + (descsz as usize).next_multiple_of(4);
    }
    false
}

/// The Debian 6.1 kernel the tests that name modules are written for
/// (plain .ko modules, virtio drivers as modules): the newest
/// /boot/vmlinuz-6.1.*-amd64 that is not the cloud flavour.
#[cfg(test)]
pub(crate) fn debian_61() -> Option<Installed> {
    installed_kernels(Path::new(BOOT_DIR))
        .ok()?
        .into_iter()
        .rfind(|k| {
            k.release.starts_with("6.1.")
                && k.release.ends_with("-amd64")
                && !k.release.contains("cloud")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_versions_numerically() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.12.113+deb12-amd64") > version_key("6.1.0-57-amd64"));
    }

    fn boot_dir(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        dir
    }

    /// This machine's case: three kernels, none of them the running one.
    #[test]
    fn the_newest_kernel_is_chosen_and_the_generic_flavour_wins_a_tie() {
        let dir = boot_dir(&[
            "vmlinuz-6.1.0-57-amd64",
            "vmlinuz-6.1.0-57-cloud-amd64",
            "vmlinuz-6.12.113+deb12-amd64",
            "config-6.12.113+deb12-amd64",
        ]);
        let (path, why) = choose_kernel(None, dir.path(), "6.18.44-fc").unwrap();
        assert_eq!(path, dir.path().join("vmlinuz-6.12.113+deb12-amd64"));
        assert_eq!(why, KernelReason::Newest { of: 3 });
        assert!(why.to_string().contains("newest of 3"), "{why}");
        let dir = boot_dir(&["vmlinuz-6.1.0-57-cloud-amd64", "vmlinuz-6.1.0-57-amd64"]);
        let (path, _) = choose_kernel(None, dir.path(), "x").unwrap();
        assert_eq!(path, dir.path().join("vmlinuz-6.1.0-57-amd64"));
    }

    #[test]
    fn the_running_kernel_then_the_given_one_take_precedence() {
        let dir = boot_dir(&["vmlinuz-6.1.0-57-amd64", "vmlinuz-6.12.113+deb12-amd64"]);
        let (path, why) = choose_kernel(None, dir.path(), "6.1.0-57-amd64").unwrap();
        assert_eq!(path, dir.path().join("vmlinuz-6.1.0-57-amd64"));
        assert_eq!(why, KernelReason::Running);
        let (path, why) =
            choose_kernel(Some(Path::new("/k/bzImage")), dir.path(), "6.1.0-57-amd64").unwrap();
        assert_eq!(
            (path, why),
            (PathBuf::from("/k/bzImage"), KernelReason::Given)
        );
        let empty = boot_dir(&[]);
        let e = choose_kernel(None, empty.path(), "r").unwrap_err();
        assert!(e.to_string().contains("--kernel"), "{e}");
    }

    #[test]
    fn reads_the_release_from_the_banner() {
        let image = b"..Linux version %s (%s)..Linux version 6.1.192 (me@host) #1 SMP\0";
        assert_eq!(banner_release(image).as_deref(), Some("6.1.192"));
        assert_eq!(banner_release(b"no banner"), None);
    }

    /// A built tree: the release from its bzImage's header, its .config,
    /// its modules_install output found in mods/ (or INSTALL_MOD_PATH,
    /// or given with --modules-dir as either form); no bzImage is an
    /// error that says to build it.
    #[test]
    fn reads_a_kernel_source_tree() {
        let Some(k61) = debian_61() else {
            eprintln!("SKIP: no Debian 6.1 kernel in /boot (make setup)");
            return;
        };
        let tree = tempfile::tempdir().unwrap();
        let cache = Cache::new(tree.path().join("cache"));
        let e = read_kernel(tree.path(), KernelReason::Given, &cache, false).unwrap_err();
        assert!(e.to_string().contains("make bzImage"), "{e}");
        std::fs::create_dir_all(tree.path().join("arch/x86/boot")).unwrap();
        std::fs::copy(&k61.path, tree.path().join(TREE_BZIMAGE)).unwrap();
        let mods = tree.path().join("mods/lib/modules").join(&k61.release);
        std::fs::create_dir_all(&mods).unwrap();
        std::fs::write(mods.join("modules.dep"), "").unwrap();
        let k = read_kernel(tree.path(), KernelReason::Given, &cache, false).unwrap();
        assert_eq!(k.release, k61.release);
        assert_eq!(k.boot_image, tree.path().join(TREE_BZIMAGE));
        assert_eq!(k.modules_dir, Some(mods.clone()));
        assert_eq!(k.config, tree.path().join(".config"));
        assert_eq!(
            find_module_tree(&tree.path().join("mods"), &k.release),
            Some(mods.clone())
        );
        assert_eq!(find_module_tree(&mods, &k.release), Some(mods.clone()));
        assert_eq!(find_module_tree(tree.path(), &k.release), None);
    }

    #[test]
    fn refuses_a_non_bzimage() {
        assert_eq!(bzimage_release(b"not a kernel"), None);
        assert!(extract_vmlinux(b"short").unwrap().is_none());
        assert!(!has_pvh_note(b"\x7fELF"));
    }

    /// Every installed kernel: release from the header matches the file
    /// name, and the vmlinux (xz on Debian's) is decoded by kestrel-initrd
    /// and has the PVH note (but the lz4 cloud flavour's); the description
    /// names release, path and reason.
    #[test]
    fn reads_every_installed_kernel() {
        let kernels = installed_kernels(Path::new(BOOT_DIR)).unwrap_or_default();
        if debian_61().is_none() {
            eprintln!("SKIP: no Debian 6.1 kernel in /boot (make setup)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        for k in kernels {
            let image = std::fs::read(&k.path).unwrap();
            assert_eq!(bzimage_release(&image).as_deref(), Some(k.release.as_str()));
            let kernel = read_kernel(&k.path, KernelReason::Given, &cache, true).unwrap();
            // Debian's cloud flavour is lz4-compressed, which kestrel-initrd
            // does not decode: its bzImage is booted.
            if !k.release.contains("cloud") {
                assert_ne!(kernel.boot_image, k.path, "{}: no PVH vmlinux", k.release);
                let vmlinux = std::fs::read(&kernel.boot_image).unwrap();
                assert!(has_pvh_note(&vmlinux), "{}", k.release);
            }
            assert_eq!(
                kernel.describe(),
                format!(
                    "kestrel: kernel {} ({}, given with --kernel or in kestrel.toml)",
                    k.release,
                    k.path.display()
                )
            );
        }
    }
}
