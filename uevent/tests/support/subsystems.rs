//! `walk_subsystems`: the alternative to `kestrel_uevent::walk::walk_devices`
//! that was measured and not taken (uevent/README.md has the figures). It
//! finds devices through the links in `<sys>/bus/*/devices/` and
//! `<sys>/class/*/`: every device that has a bus or a class, which are
//! exactly the devices the kernel sends events for (`dev_uevent_filter`).
//! Devices with neither (their `uevent` file is empty and they have no
//! `subsystem` link) are not returned. Same events, same order (parents
//! before children, by path components), fewer directories listed.
//!
//! Not part of kestrel-uevent: the benchmark, the fixture capture
//! (`examples/guest-capture.rs`) and the fixture test include this file with
//! `#[path]`, to keep comparing it with the walk the init uses; its own
//! tests are in tests/fixtures.rs.

// Each includer uses its own part of this file.
#![allow(dead_code)]

use std::ffi::CString;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kestrel_uevent::walk::{read_up_to, Walk, UEVENT_FILE, WALK_MAX_DEVICES};
use kestrel_uevent::{parse_sysfs, Uevent, UeventError, UEVENT_MAX};
use rustix::fd::OwnedFd;
use rustix::fs::{openat, readlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

/// Directory below the sysfs root with one directory per bus.
const SYSFS_BUS_DIR: &str = "bus";
/// Directory below the sysfs root with one directory per class.
const SYSFS_CLASS_DIR: &str = "class";
/// How every devpath starts.
const DEVPATH_PREFIX: &[u8] = b"/devices";

/// The `uevent` file itself is never a link in sysfs: refuse one.
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Every device with a bus or a class, found through their links; links
/// whose text does not point into `devices/`, and unreadable entries, are
/// skipped and counted. An unreadable `<sys>`, `<sys>/bus` or `<sys>/class`
/// is an error.
pub fn walk_subsystems(sys: &Path) -> Result<Walk, UeventError> {
    let io_err = |op, path: PathBuf, e: Errno| UeventError::Io {
        op,
        path,
        source: e.into(),
    };
    let sysfd = openat(CWD, sys, DIR_FLAGS, Mode::empty())
        .map_err(|e| io_err("open directory", sys.to_path_buf(), e))?;
    let mut walk = Walk::default();
    // (devpath, subsystem name); `ups` is how many `../` lead from a link
    // back to the sysfs root.
    let mut found: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (top, inner, ups) in [
        (SYSFS_BUS_DIR, Some("devices"), 3),
        (SYSFS_CLASS_DIR, None, 2),
    ] {
        let topfd = openat(&sysfd, top, DIR_FLAGS, Mode::empty())
            .map_err(|e| io_err("open directory", sys.join(top), e))?;
        let names = list(&topfd, FileType::Directory)
            .map_err(|e| io_err("read directory", sys.join(top), e))?;
        for name in names {
            let links =
                openat(&topfd, name.as_c_str(), DIR_FLAGS, Mode::empty()).and_then(
                    |fd| match inner {
                        Some(inner) => openat(&fd, inner, DIR_FLAGS, Mode::empty()),
                        None => Ok(fd),
                    },
                );
            let Ok(links) = links else {
                walk.skipped += 1;
                continue;
            };
            let Ok(entries) = list(&links, FileType::Symlink) else {
                walk.skipped += 1;
                continue;
            };
            for entry in entries {
                let target = readlinkat(&links, entry.as_c_str(), Vec::new());
                match target.ok().and_then(|t| devpath_of_link(t.as_bytes(), ups)) {
                    Some(devpath) => found.push((devpath, name.as_bytes().to_vec())),
                    None => walk.skipped += 1,
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.split(|&c| c == b'/').cmp(b.0.split(|&c| c == b'/')));
    found.dedup_by(|a, b| a.0 == b.0);
    if found.len() > WALK_MAX_DEVICES {
        return Err(UeventError::TooManyDevices {
            path: sys.to_path_buf(),
            max: WALK_MAX_DEVICES,
        });
    }
    for (devpath, subsystem) in found {
        match read_device(&sysfd, &devpath, &subsystem) {
            Ok(ev) => walk.devices.push(ev),
            Err(_) => walk.skipped += 1,
        }
    }
    Ok(walk)
}

/// The event of the device at `devpath`, with `SUBSYSTEM=<subsystem>` added
/// when its `uevent` file does not say it (the kernel adds it to events
/// only).
fn read_device(sysfd: &OwnedFd, devpath: &[u8], subsystem: &[u8]) -> Result<Uevent, Errno> {
    let mut path = devpath.get(1..).unwrap_or(&[]).to_vec();
    path.push(b'/');
    path.extend_from_slice(UEVENT_FILE.as_bytes());
    let file = openat(sysfd, path.as_slice(), FILE_FLAGS, Mode::empty())?;
    // One byte more than fits, so that "too big" is an error, not a cut.
    let mut content = vec![0; (UEVENT_MAX + 1).saturating_sub(devpath.len())];
    let len = read_up_to(&file, &mut content)?;
    content.truncate(len);
    let mut buf = BytesMut::from(content.as_slice());
    if !has_key(&content, b"SUBSYSTEM") {
        if content.last().is_some_and(|&b| b != b'\n') {
            buf.extend_from_slice(b"\n");
        }
        buf.extend_from_slice(b"SUBSYSTEM=");
        buf.extend_from_slice(subsystem);
        buf.extend_from_slice(b"\n");
    }
    parse_sysfs(devpath, Bytes::from(buf)).map_err(|_| Errno::INVAL)
}

/// The names of the entries of type `kind` in `dirfd`, sorted (asked for
/// with lstat when getdents does not say).
fn list(dirfd: &OwnedFd, kind: FileType) -> Result<Vec<CString>, Errno> {
    let mut dir = Dir::read_from(dirfd)?;
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let t = match entry.file_type() {
            FileType::Unknown => rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode))
                .unwrap_or(FileType::Unknown),
            known => known,
        };
        if t == kind {
            out.push(name.to_owned());
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `../../../devices/pci0000:00/0000:00:01.0` with `ups` = 3 gives
/// `/devices/pci0000:00/0000:00:01.0`; anything else gives `None`.
pub fn devpath_of_link(target: &[u8], ups: usize) -> Option<Vec<u8>> {
    let mut rest = target;
    for _ in 0..ups {
        rest = rest.strip_prefix(b"../")?;
    }
    let below = rest.strip_prefix(b"devices/")?;
    if below.is_empty()
        || below
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return None;
    }
    let mut devpath = DEVPATH_PREFIX.to_vec();
    devpath.push(b'/');
    devpath.extend_from_slice(below);
    Some(devpath)
}

fn has_key(content: &[u8], key: &[u8]) -> bool {
    content.split(|&b| b == b'\n').any(|line| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.first() == Some(&b'='))
    })
}
