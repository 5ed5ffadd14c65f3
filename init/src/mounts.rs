//! Phase 1: the early mounts, as a table. A required mount that fails
//! stops the boot; an optional one is reported and the boot goes on.

use crate::log;
use kestrel_proto::GuestRecord;
use rustix::mount::MountFlags;
use std::ffi::CStr;

pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: &'static CStr,
    pub required: bool,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// In order: /dev needs nothing, /dev/pts needs /dev.
pub const EARLY_MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: true,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: true,
    },
    // Not required: without devtmpfs /dev becomes a tmpfs and the init
    // makes the nodes itself from MAJOR/MINOR (see devices.rs).
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
        required: false,
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
        required: false,
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"gid=5,mode=0620,ptmxmode=0666",
        required: false,
    },
];

/// Links udev would make in /dev; failures are harmless.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// Failed to mount a required filesystem.
#[derive(Debug, thiserror::Error)]
#[error("failed to mount {fstype} on {target}: {source}")]
pub struct MountError {
    pub fstype: &'static str,
    pub target: &'static str,
    pub source: std::io::Error,
}

/// Mounts the table; returns the targets mounted (for shutdown) and
/// whether the init must make device nodes itself (no devtmpfs: /dev is
/// then a tmpfs, mounted right away so /dev/pts and the links land on it).
pub fn mount_early() -> Result<(Vec<&'static str>, bool), MountError> {
    let mut mounted = Vec::new();
    let mut make_nodes = false;
    for m in EARLY_MOUNTS {
        let _ = std::fs::create_dir_all(m.target);
        let result = rustix::mount::mount(m.source, m.target, m.fstype, m.flags, m.data)
            .map_err(std::io::Error::from);
        match result {
            Ok(()) => {
                mounted.push(m.target);
                log::emit(GuestRecord::Mount {
                    target: m.target.to_owned(),
                    fstype: m.fstype.to_owned(),
                });
            }
            // Already mounted (e.g. the kernel mounted devtmpfs itself).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => mounted.push(m.target),
            Err(_) if m.target == DEV_TMPFS.target => {
                let d = &DEV_TMPFS;
                rustix::mount::mount(d.source, d.target, d.fstype, d.flags, d.data).map_err(
                    |e| MountError {
                        fstype: d.fstype,
                        target: d.target,
                        source: e.into(),
                    },
                )?;
                mounted.push(d.target);
                make_nodes = true;
                log::warn("no devtmpfs: /dev is a tmpfs and the init makes the device nodes");
                for (node, major, minor) in STATIC_NODES {
                    let _ = rustix::fs::mknodat(
                        rustix::fs::CWD,
                        *node,
                        rustix::fs::FileType::CharacterDevice,
                        rustix::fs::Mode::from_raw_mode(0o666),
                        rustix::fs::makedev(*major, *minor),
                    );
                }
            }
            Err(source) if m.required => {
                return Err(MountError {
                    fstype: m.fstype,
                    target: m.target,
                    source,
                });
            }
            Err(e) => log::warn(&format!(
                "failed to mount {} on {}: {e}",
                m.fstype, m.target
            )),
        }
    }
    for (link, target) in DEV_LINKS {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    Ok((mounted, make_nodes))
}

/// The fallback /dev when the kernel has no devtmpfs.
const DEV_TMPFS: Mount = Mount {
    source: "tmpfs",
    target: "/dev",
    fstype: "tmpfs",
    flags: MountFlags::NOSUID,
    data: c"mode=0755",
    required: true,
};

/// Nodes every userspace expects, made only without devtmpfs (which has them).
const STATIC_NODES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
    ("/dev/ptmx", 5, 2),
];

/// Unmounts in reverse order; a busy mount is detached lazily.
pub fn unmount_all(mounted: &[&str]) {
    for target in mounted.iter().rev() {
        if rustix::mount::unmount(*target, rustix::mount::UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(*target, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
