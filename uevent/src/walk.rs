//! The coldplug walk: every device already in /sys, as the same [`Uevent`]
//! model the socket delivers.
//!
//! The kernel's layout rules this relies on: every device is a directory below
//! `/sys/devices` holding a `uevent` attribute; children are subdirectories of
//! their parent; `subsystem`, `driver`, `device`, `firmware_node`, ... are
//! symlinks, which are never followed (they are how sysfs makes loops).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bytes::BytesMut;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{openat, readlinkat, statat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::event::parse_sysfs_joined;
use crate::{Uevent, UeventError, UEVENT_MAX};

/// Directory below the sysfs root that holds every device.
pub const SYSFS_DEVICES_DIR: &str = "devices";
/// The name of the power-management attribute group of every device
/// (`power_group_name` in drivers/base/power/sysfs.c).
const PM_GROUP_DIR: &[u8] = b"power";
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
// 64 Ki devices of up to 8 KiB each is a 512 MiB ceiling, the memory of
// a whole default guest; real machines have hundreds to a few thousand.
pub const WALK_MAX_DEVICES: usize = 1 << 16;

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
///
/// Each directory is opened relative to its parent (`openat` with
/// `O_NOFOLLOW`) and listed once; the entry types from `getdents` say which
/// names are subdirectories, the `uevent` file and the `subsystem` link, so
/// no path is resolved twice and nothing is `stat`ed (sysfs fills `d_type`).
pub fn walk_devices(sys: &Path) -> Result<Walk, UeventError> {
    let mut devices = Vec::new();
    let skipped = walk_devices_with(sys, &mut |ev| devices.push(ev))?;
    Ok(Walk { devices, skipped })
}

/// [`walk_devices`] handing each device to `each` as soon as it is read
/// (PID 1 starts loading a driver while the walk goes on); returns how
/// many were skipped.
pub fn walk_devices_with(sys: &Path, each: &mut dyn FnMut(Uevent)) -> Result<usize, UeventError> {
    let root = sys.join(SYSFS_DEVICES_DIR);
    let io_err = |op, e: Errno| UeventError::Io {
        op,
        path: root.clone(),
        source: e.into(),
    };
    let fd =
        openat(CWD, &root, DIR_FLAGS, Mode::empty()).map_err(|e| io_err("open directory", e))?;
    let mut walker = Walker {
        each,
        found: 0,
        skipped: 0,
        devpath: DEVPATH_PREFIX.to_vec(),
        scratch: vec![0; UEVENT_MAX + 1],
        too_many: false,
    };
    walker
        .visit(fd, 0)
        .map_err(|e| io_err("read directory", e))?;
    if walker.too_many {
        return Err(UeventError::TooManyDevices {
            path: sys.to_path_buf(),
            max: WALK_MAX_DEVICES,
        });
    }
    Ok(walker.skipped)
}

/// The one device at `devpath` (`/devices/…`) under `sys`, read as the
/// walk reads it: its `uevent` file plus `SUBSYSTEM=` from its
/// `subsystem` link. For devices found another way than the walk (a
/// class directory's links).
pub fn read_device(sys: &Path, devpath: &[u8]) -> Result<Uevent, UeventError> {
    let inside =
        devpath.starts_with(b"/devices/") && !devpath.split(|&b| b == b'/').any(|c| c == b"..");
    if !inside {
        return Err(UeventError::InvalidDevpath(
            String::from_utf8_lossy(devpath).into_owned(),
        ));
    }
    let rel = devpath.strip_prefix(b"/").unwrap_or(devpath);
    let dir = sys.join(std::ffi::OsStr::from_bytes(rel));
    let io_err = |op, e: Errno| UeventError::Io {
        op,
        path: dir.clone(),
        source: e.into(),
    };
    let fd =
        openat(CWD, &dir, DIR_FLAGS, Mode::empty()).map_err(|e| io_err("open directory", e))?;
    let mut ignore = |_| {};
    let mut walker = Walker {
        each: &mut ignore,
        found: 0,
        skipped: 0,
        devpath: devpath.to_vec(),
        scratch: vec![0; UEVENT_MAX + 1],
        too_many: false,
    };
    walker.read_device(fd.as_fd(), true)
}

/// Every entry of `dir` but `.` and `..`, with its type (asked for with
/// lstat when getdents does not say).
fn entries(dir: &mut Dir) -> Result<Vec<(CString, FileType)>, Errno> {
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => file_type_at(dir.fd()?, name),
            known => known,
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// The `uevent` file itself is never a link in sysfs: refuse one.
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

struct Walker<'a> {
    each: &'a mut dyn FnMut(Uevent),
    found: usize,
    skipped: usize,
    /// The devpath of the directory being visited.
    devpath: Vec<u8>,
    /// Read buffer for one `uevent` file (one byte more than allowed, to tell
    /// "exactly full" from "too big").
    scratch: Vec<u8>,
    too_many: bool,
}

impl Walker<'_> {
    /// Visits the directory `fd` (at `self.devpath`): the device it is, if
    /// any, then its subdirectories in name order.
    fn visit(&mut self, fd: OwnedFd, depth: usize) -> Result<(), Errno> {
        let mut dir = Dir::new(fd)?;
        let mut subdirs: Vec<CString> = Vec::new();
        let mut has_uevent = false;
        let mut has_subsystem = false;
        for (name, kind) in entries(&mut dir)? {
            match (kind, name.to_bytes()) {
                (FileType::Directory, _) => subdirs.push(name),
                (FileType::RegularFile, b"uevent") => has_uevent = true,
                (FileType::Symlink, b"subsystem") => has_subsystem = true,
                _ => {}
            }
        }
        let dirfd = dir.fd()?;
        if has_uevent {
            match self.read_device(dirfd, has_subsystem) {
                Ok(ev) if self.found < WALK_MAX_DEVICES => {
                    self.found += 1;
                    (self.each)(ev);
                }
                Ok(_) => {
                    self.too_many = true;
                    return Ok(());
                }
                Err(_) => self.skipped += 1,
            }
        }
        subdirs.sort_unstable();
        for name in subdirs {
            if self.too_many {
                return Ok(());
            }
            if depth + 1 > WALK_MAX_DEPTH {
                self.skipped += 1;
                continue;
            }
            if has_uevent && name.to_bytes() == PM_GROUP_DIR && !has_uevent_at(dirfd, &name) {
                // A device's power-management attribute group: flat, never
                // a device. Costs one `statat` instead of a directory listing
                // (about 40% of the directories of a real /sys).
                continue;
            }
            let len = self.devpath.len();
            self.devpath.push(b'/');
            self.devpath.extend_from_slice(name.to_bytes());
            let visited = openat(dirfd, name.as_c_str(), DIR_FLAGS, Mode::empty())
                .and_then(|fd| self.visit(fd, depth + 1));
            if visited.is_err() {
                self.skipped += 1;
            }
            self.devpath.truncate(len);
        }
        Ok(())
    }

    /// Reads the `uevent` file (and `subsystem` link) of the directory `dirfd`.
    fn read_device(
        &mut self,
        dirfd: BorrowedFd<'_>,
        has_subsystem: bool,
    ) -> Result<Uevent, UeventError> {
        let file = openat(dirfd, UEVENT_FILE, FILE_FLAGS, Mode::empty())
            .map_err(|e| self.io_err("open", e))?;
        let len = self.read_file(file)?;
        let content = self.scratch.get(..len).unwrap_or(&[]);
        let link = if has_subsystem && !has_key(content, b"SUBSYSTEM") {
            readlinkat(dirfd, SUBSYSTEM_LINK, Vec::new()).ok()
        } else {
            None
        };
        self.build(len, link.as_deref().map(basename))
    }

    /// Reads a `uevent` file into `scratch`, up to what fits in one event
    /// with the current devpath; returns the length read.
    fn read_file(&mut self, file: OwnedFd) -> Result<usize, UeventError> {
        let limit = (UEVENT_MAX + 1).saturating_sub(self.devpath.len());
        let room = self.scratch.get_mut(..limit).unwrap_or(&mut []);
        read_up_to(&file, room).map_err(|e| self.io_err("read", e))
    }

    /// The event of `self.devpath` from the first `len` bytes of `scratch`,
    /// with `SUBSYSTEM=<subsystem>` added when given and not already there.
    fn build(&self, len: usize, subsystem: Option<&[u8]>) -> Result<Uevent, UeventError> {
        let content = self.scratch.get(..len).unwrap_or(&[]);
        let subsystem = subsystem.filter(|_| !has_key(content, b"SUBSYSTEM"));
        let extra = subsystem.map_or(0, |s| s.len() + b"\nSUBSYSTEM=\n".len());
        let mut buf = BytesMut::with_capacity(self.devpath.len() + len + extra);
        buf.extend_from_slice(&self.devpath);
        buf.extend_from_slice(content);
        if let Some(name) = subsystem {
            if content.last().is_some_and(|&b| b != b'\n') {
                buf.extend_from_slice(b"\n");
            }
            buf.extend_from_slice(b"SUBSYSTEM=");
            buf.extend_from_slice(name);
            buf.extend_from_slice(b"\n");
        }
        parse_sysfs_joined(buf.freeze(), self.devpath.len())
    }

    fn io_err(&self, op: &'static str, e: Errno) -> UeventError {
        let mut path = String::from_utf8_lossy(&self.devpath).into_owned();
        path.push('/');
        path.push_str(UEVENT_FILE);
        UeventError::Io {
            op,
            path: path.into(),
            source: e.into(),
        }
    }
}

/// The type of `name` in `dirfd` without following it, for file systems
/// that do not fill `d_type`.
fn file_type_at(dirfd: BorrowedFd<'_>, name: &CStr) -> FileType {
    statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode))
        .unwrap_or(FileType::Unknown)
}

/// True when `<dirfd>/<name>/uevent` exists.
fn has_uevent_at(dirfd: BorrowedFd<'_>, name: &CStr) -> bool {
    let mut path = name.to_bytes().to_vec();
    path.push(b'/');
    path.extend_from_slice(UEVENT_FILE.as_bytes());
    statat(dirfd, path.as_slice(), AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// The last component of a symlink target: `../../bus/pci` gives `pci`.
fn basename(target: &CStr) -> &[u8] {
    let bytes = target.to_bytes();
    match memchr::memrchr(b'/', bytes) {
        Some(i) => bytes.get(i + 1..).unwrap_or(&[]),
        None => bytes,
    }
}

fn has_key(content: &[u8], key: &[u8]) -> bool {
    content.split(|&b| b == b'\n').any(|line| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.first() == Some(&b'='))
    })
}

/// Reads a sysfs attribute into `buf` until it is full or the file ends;
/// returns the length read.
pub fn read_up_to(file: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut len = 0;
    loop {
        let room = buf.get_mut(len..).unwrap_or(&mut []);
        if room.is_empty() {
            return Ok(len);
        }
        let room_len = room.len();
        match rustix::io::read(file.as_fd(), room) {
            Ok(0) => return Ok(len),
            // A sysfs attribute comes whole in the first read (at most a
            // page); a short read is the end, which saves a syscall.
            Ok(n) if n < room_len => return Ok(len + n),
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
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

    /// One device read alone is the event the walk gives for it,
    /// SUBSYSTEM included; a path out of /devices is refused.
    #[test]
    fn one_device_reads_as_the_walk_reads_it() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        let port = sys.join("devices/pci0000:00/0000:00:03.0/virtio1/virtio-ports/vport1p1");
        write(
            &port.join("uevent"),
            "MAJOR=250\nMINOR=1\nDEVNAME=vport1p1\n",
        );
        fs::create_dir_all(sys.join("class/virtio-ports")).unwrap();
        symlink(
            "../../../../../../class/virtio-ports",
            port.join("subsystem"),
        )
        .unwrap();
        let devpath = b"/devices/pci0000:00/0000:00:03.0/virtio1/virtio-ports/vport1p1";
        let one = read_device(sys, devpath).unwrap();
        assert_eq!(one.subsystem(), Some(&b"virtio-ports"[..]));
        assert_eq!(one.devname(), Some(&b"vport1p1"[..]));
        let walked = walk_devices(sys).unwrap();
        assert_eq!(walked.devices.last().map(Uevent::raw), Some(one.raw()));
        for bad in [&b"/devices/../etc"[..], b"/sys/x", b"devices/x"] {
            assert!(read_device(sys, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn power_groups_are_not_listed_but_a_device_named_power_is_found() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("devices");
        write(&d.join("platform/uevent"), "");
        write(&d.join("platform/power/control"), "auto\n");
        write(&d.join("platform/power/runtime_status"), "unsupported\n");
        write(&d.join("platform/x/uevent"), "DRIVER=x\n");
        // A device named "power" (possible when its parent has no PM group).
        write(
            &d.join("platform/x/power/uevent"),
            "MODALIAS=platform:power\n",
        );
        write(&d.join("platform/x/power/child/uevent"), "A=1\n");
        // Not below a device: listed as any other directory.
        write(&d.join("glue/power/dev/uevent"), "B=2\n");
        let w = walk_devices(t.path()).unwrap();
        let paths: Vec<_> = w
            .devices
            .iter()
            .map(|e| String::from_utf8_lossy(e.devpath()).into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/devices/glue/power/dev",
                "/devices/platform",
                "/devices/platform/x",
                "/devices/platform/x/power",
                "/devices/platform/x/power/child",
            ]
        );
        assert_eq!(w.skipped, 0);
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
        assert!(msg.starts_with("failed to open directory "), "{msg}");
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
