//! The coldplug walk: every device already in /sys, as the same [`Uevent`]
//! model the socket delivers.
//!
//! The kernel's layout rules this relies on: every device is a directory below
//! `/sys/devices` holding a `uevent` attribute; children are subdirectories of
//! their parent; `subsystem`, `driver`, `device`, `firmware_node`, ... are
//! symlinks, which are never followed (they are how sysfs makes loops).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use crate::event::parse_sysfs_joined;
use crate::{Uevent, UeventError, UEVENT_MAX};

/// Directory below the sysfs root that holds every device.
pub const SYSFS_DEVICES_DIR: &str = "devices";
/// How every devpath starts: the devices directory, relative to the sysfs root.
const DEVPATH_PREFIX: &[u8] = b"/devices";
/// The per-device attribute whose content is the device's environment.
pub const UEVENT_FILE: &str = "uevent";
/// The per-device symlink to its bus or class, whose name is `SUBSYSTEM`.
pub const SUBSYSTEM_LINK: &str = "subsystem";
/// How deep below `<sys>/devices` the walk descends. Real trees are about 20
/// levels deep (USB hubs behind PCI bridges); anything deeper is skipped and
/// counted.
pub const WALK_MAX_DEPTH: usize = 64;
/// The most devices one walk returns before failing.
pub const WALK_MAX_DEVICES: usize = 1 << 20;

/// The result of a walk.
#[derive(Debug, Default)]
pub struct Walk {
    /// Every device found, parents before children.
    pub devices: Vec<Uevent>,
    /// Directories and `uevent` files that could not be read or parsed, and
    /// directories deeper than [`WALK_MAX_DEPTH`].
    pub skipped: usize,
}

/// Every device under `<sys>/devices` that has a `uevent` file, as a
/// [`Uevent`] whose devpath is relative to `sys` (starting with `/devices/`),
/// in a deterministic order: depth first, entries sorted by name, parents
/// before children. Symlinks are not followed.
///
/// The event carries the file's records, plus `SUBSYSTEM=<name>` taken from
/// the device's `subsystem` symlink (the kernel adds SUBSYSTEM to netlink
/// events but not to the file), so both paths give the same fields.
///
/// Unreadable directories and files are skipped and counted; only an
/// unreadable `<sys>/devices` is an error.
pub fn walk_devices(sys: &Path) -> Result<Walk, UeventError> {
    let root = sys.join(SYSFS_DEVICES_DIR);
    let mut walk = Walk::default();
    let mut stack: Vec<(PathBuf, usize)> = Vec::new();
    let top = sorted_subdirs(&root).map_err(|source| UeventError::Io {
        op: "read directory",
        path: root.clone(),
        source,
    })?;
    // A stack of (dir, depth), children pushed in reverse so they pop sorted.
    stack.extend(top.into_iter().rev().map(|d| (d, 1)));
    let root_len = root.as_os_str().len();
    while let Some((dir, depth)) = stack.pop() {
        match read_device(&dir, root_len) {
            Ok(Some(ev)) => {
                if walk.devices.len() >= WALK_MAX_DEVICES {
                    return Err(UeventError::TooManyDevices {
                        path: sys.to_path_buf(),
                        max: WALK_MAX_DEVICES,
                    });
                }
                walk.devices.push(ev);
            }
            Ok(None) => {}
            Err(_) => walk.skipped += 1,
        }
        if depth >= WALK_MAX_DEPTH {
            walk.skipped += 1;
            continue;
        }
        match sorted_subdirs(&dir) {
            Ok(children) => stack.extend(children.into_iter().rev().map(|d| (d, depth + 1))),
            Err(_) => walk.skipped += 1,
        }
    }
    Ok(walk)
}

/// The real (non-symlink) subdirectories of `dir`, sorted by name.
fn sorted_subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // `DirEntry::file_type` does not follow symlinks.
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort_unstable_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(out)
}

/// Reads the device at `dir`, if it is one (has a regular `uevent` file).
/// `root_len` is the length of `<sys>/devices`, which `dir` starts with.
fn read_device(dir: &Path, root_len: usize) -> Result<Option<Uevent>, UeventError> {
    let path = dir.join(UEVENT_FILE);
    let io = |op, source| UeventError::Io {
        op,
        path: path.clone(),
        source,
    };
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("stat", e)),
    }
    let below_root = dir.as_os_str().as_bytes().get(root_len..).unwrap_or(&[]);
    let devpath_len = DEVPATH_PREFIX.len() + below_root.len();
    let mut buf = BytesMut::with_capacity(devpath_len + 1024);
    buf.extend_from_slice(DEVPATH_PREFIX);
    buf.extend_from_slice(below_root);
    // Read one byte more than allowed to tell "exactly full" from "too big".
    let limit = u64::try_from(UEVENT_MAX + 1 - devpath_len.min(UEVENT_MAX)).unwrap_or(0);
    let mut content = Vec::with_capacity(1024);
    File::open(&path)
        .map_err(|e| io("open", e))?
        .take(limit)
        .read_to_end(&mut content)
        .map_err(|e| io("read", e))?;
    buf.extend_from_slice(&content);
    if let Some(subsystem) = subsystem_name(dir) {
        if !has_key(&content, b"SUBSYSTEM") {
            if buf.last().is_some_and(|&b| b != b'\n') && buf.len() > devpath_len {
                buf.extend_from_slice(b"\n");
            }
            buf.extend_from_slice(b"SUBSYSTEM=");
            buf.extend_from_slice(subsystem.as_bytes());
            buf.extend_from_slice(b"\n");
        }
    }
    parse_sysfs_joined(buf.freeze(), devpath_len).map(Some)
}

/// The name of the bus or class the device's `subsystem` symlink points to.
fn subsystem_name(dir: &Path) -> Option<std::ffi::OsString> {
    let target = fs::read_link(dir.join(SUBSYSTEM_LINK)).ok()?;
    target.file_name().map(OsStr::to_os_string)
}

fn has_key(content: &[u8], key: &[u8]) -> bool {
    content.split(|&b| b == b'\n').any(|line| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.first() == Some(&b'='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(p: &Path, content: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn walks_a_small_tree_in_order_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        let d = sys.join("devices");
        write(&d.join("pci0000:00/uevent"), "");
        write(&d.join("pci0000:00/0000:00:02.0/uevent"), "DRIVER=virtio-pci\nPCI_CLASS=10000\nMODALIAS=pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n");
        write(
            &d.join("pci0000:00/0000:00:01.0/uevent"),
            "PCI_ID=8086:7000\n",
        );
        write(&d.join("pci0000:00/0000:00:02.0/power/control"), "auto\n");
        write(
            &d.join("pci0000:00/0000:00:02.0/virtio0/block/vda/uevent"),
            "MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk",
        );
        fs::create_dir_all(sys.join("bus/pci")).unwrap();
        symlink(
            "../../../bus/pci",
            d.join("pci0000:00/0000:00:02.0/subsystem"),
        )
        .unwrap();
        // A loop through a symlink must not be followed.
        symlink("../..", d.join("pci0000:00/0000:00:02.0/virtio0/loop")).unwrap();
        // A `uevent` that is a symlink is not a device.
        symlink(
            "../pci0000:00/uevent",
            d.join("pci0000:00/0000:00:01.0/uevent-link"),
        )
        .unwrap();

        let w = walk_devices(sys).unwrap();
        let paths: Vec<_> = w
            .devices
            .iter()
            .map(|e| String::from_utf8_lossy(e.devpath()).into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/devices/pci0000:00",
                "/devices/pci0000:00/0000:00:01.0",
                "/devices/pci0000:00/0000:00:02.0",
                "/devices/pci0000:00/0000:00:02.0/virtio0/block/vda",
            ]
        );
        assert_eq!(w.skipped, 0);
        let pci = &w.devices[2];
        assert_eq!(pci.action(), crate::Action::Add);
        assert_eq!(pci.subsystem(), Some(&b"pci"[..]));
        assert_eq!(pci.driver(), Some(&b"virtio-pci"[..]));
        assert!(pci.modalias().unwrap().starts_with(b"pci:v00001AF4"));
        let vda = &w.devices[3];
        assert_eq!(vda.major_minor(), Some((253, 0)));
        assert_eq!(vda.devtype(), Some(&b"disk"[..]));
        assert_eq!(vda.subsystem(), None);
    }

    #[test]
    fn unparsable_files_are_skipped_and_counted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("devices");
        write(&d.join("a/uevent"), "GOOD=1\n");
        write(&d.join("b/uevent"), "garbage without equals\n");
        write(&d.join("c/uevent"), &"X=".repeat(UEVENT_MAX));
        let w = walk_devices(t.path()).unwrap();
        assert_eq!(w.devices.len(), 1);
        assert_eq!(w.skipped, 2);
    }

    #[test]
    fn missing_devices_dir_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let err = walk_devices(t.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("failed to read directory "), "{msg}");
        assert!(msg.contains("devices"), "{msg}");
    }

    #[test]
    fn depth_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().join("devices");
        for _ in 0..WALK_MAX_DEPTH + 3 {
            p.push("d");
        }
        write(&p.join("uevent"), "A=1\n");
        let w = walk_devices(t.path()).unwrap();
        assert_eq!(w.devices.len(), 0);
        assert_eq!(w.skipped, 1);
    }
}
