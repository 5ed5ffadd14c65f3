//! Phase 1: the early mounts, as a table. A required mount that fails
//! stops the boot; an optional one is reported and the boot goes on.

use crate::log;
use crate::roots::Roots;
use crate::sys::{NodeKind, Sys};
use kestrel_proto::GuestRecord;
use rustix::mount::MountFlags;
use std::ffi::CStr;
use std::path::{Path, PathBuf};

/// Which root a mount goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Under {
    Proc,
    Sys,
    Dev,
    DevPts,
    Run,
}

impl Under {
    fn path(self, roots: &Roots) -> PathBuf {
        match self {
            Under::Proc => roots.proc.clone(),
            Under::Sys => roots.sys.clone(),
            Under::Dev => roots.dev.clone(),
            Under::DevPts => roots.dev.join("pts"),
            Under::Run => roots.run.clone(),
        }
    }
}

pub struct Mount {
    pub source: &'static str,
    pub target: Under,
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
        target: Under::Proc,
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: true,
    },
    Mount {
        source: "sysfs",
        target: Under::Sys,
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
        required: true,
    },
    // Not required: without devtmpfs /dev becomes a tmpfs and the init
    // makes the nodes itself from MAJOR/MINOR (see devices.rs).
    Mount {
        source: "devtmpfs",
        target: Under::Dev,
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
        required: false,
    },
    Mount {
        source: "tmpfs",
        target: Under::Run,
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
        required: false,
    },
    Mount {
        source: "devpts",
        target: Under::DevPts,
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"gid=5,mode=0620,ptmxmode=0666",
        required: false,
    },
];

/// The fallback /dev when the kernel has no devtmpfs.
const DEV_TMPFS: Mount = Mount {
    source: "tmpfs",
    target: Under::Dev,
    fstype: "tmpfs",
    flags: MountFlags::NOSUID,
    data: c"mode=0755",
    required: true,
};

/// Nodes every userspace expects, made only without devtmpfs (which has them).
const STATIC_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    ("ptmx", 5, 2),
];

/// Links udev would make in /dev; failures are harmless.
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Failed to mount a required filesystem.
#[derive(Debug, thiserror::Error)]
#[error("failed to mount {fstype} on {}: {source}", target.display())]
pub struct MountError {
    pub fstype: &'static str,
    pub target: PathBuf,
    pub source: std::io::Error,
}

/// What the early mounts left: the mounted targets (for shutdown) and
/// whether the init makes device nodes itself (no devtmpfs).
#[derive(Debug)]
pub struct Mounted {
    pub targets: Vec<PathBuf>,
    pub make_nodes: bool,
}

fn mount_one(sys: &dyn Sys, roots: &Roots, m: &Mount) -> std::io::Result<PathBuf> {
    let target = m.target.path(roots);
    let _ = sys.mkdir_all(&target);
    sys.mount(m.source, &target, m.fstype, m.flags, m.data)
        .map(|()| target)
}

/// Mounts the table. Without devtmpfs /dev is a tmpfs, mounted right away
/// so /dev/pts and the links land on it.
pub fn mount_early(sys: &dyn Sys, roots: &Roots) -> Result<Mounted, MountError> {
    let mut mounted = Mounted {
        targets: Vec::new(),
        make_nodes: false,
    };
    for m in EARLY_MOUNTS {
        match mount_one(sys, roots, m) {
            Ok(target) => {
                log::emit(GuestRecord::Mount {
                    target: target.display().to_string(),
                    fstype: m.fstype.to_owned(),
                });
                mounted.targets.push(target);
            }
            // Already mounted (e.g. the kernel mounted devtmpfs itself).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                mounted.targets.push(m.target.path(roots))
            }
            Err(_) if m.target == Under::Dev => {
                let target = mount_one(sys, roots, &DEV_TMPFS).map_err(|source| MountError {
                    fstype: DEV_TMPFS.fstype,
                    target: roots.dev.clone(),
                    source,
                })?;
                mounted.targets.push(target);
                mounted.make_nodes = true;
                log::warn("no devtmpfs: /dev is a tmpfs and the init makes the device nodes");
                make_static_nodes(sys, &roots.dev);
            }
            Err(source) if m.required => {
                return Err(MountError {
                    fstype: m.fstype,
                    target: m.target.path(roots),
                    source,
                });
            }
            Err(e) => log::warn(&format!(
                "failed to mount {} on {}: {e}",
                m.fstype,
                m.target.path(roots).display()
            )),
        }
    }
    for (link, target) in DEV_LINKS {
        let _ = sys.symlink(Path::new(target), &roots.dev.join(link));
    }
    Ok(mounted)
}

fn make_static_nodes(sys: &dyn Sys, dev: &Path) {
    for (node, major, minor) in STATIC_NODES {
        let _ = sys.mknod(&dev.join(node), NodeKind::Char, 0o666, *major, *minor);
    }
}

/// Unmounts in reverse order, lazily: a busy or hung filesystem must not
/// hold the power off (the data was synced before).
pub fn unmount_all(sys: &dyn Sys, mounted: &[PathBuf]) {
    for target in mounted.iter().rev() {
        let _ = sys.unmount(target, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    #[test]
    fn mounts_the_table_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let sys = Recorder::default();
        let m = mount_early(&sys, &roots).unwrap();
        assert!(!m.make_nodes);
        let mounts: Vec<(String, PathBuf)> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { fstype, target, .. } => Some((fstype, target)),
                _ => None,
            })
            .collect();
        let want: Vec<(String, PathBuf)> = [
            ("proc", "proc"),
            ("sysfs", "sys"),
            ("devtmpfs", "dev"),
            ("tmpfs", "run"),
            ("devpts", "dev/pts"),
        ]
        .iter()
        .map(|(t, p)| (t.to_string(), dir.path().join(p)))
        .collect();
        assert_eq!(mounts, want);
        assert_eq!(m.targets.len(), 5);
        assert!(dir.path().join("dev/stdin").symlink_metadata().is_ok());
    }

    /// A kernel without devtmpfs: /dev is a tmpfs with the static nodes,
    /// and the boot goes on making nodes itself.
    #[test]
    fn without_devtmpfs_dev_is_a_tmpfs_with_static_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let sys = Recorder {
            missing_fs: vec!["devtmpfs"],
            ..Recorder::default()
        };
        let m = mount_early(&sys, &roots).unwrap();
        assert!(m.make_nodes);
        let calls = sys.calls();
        assert!(calls.contains(&Call::Mount {
            source: "tmpfs".into(),
            target: roots.dev.clone(),
            fstype: "tmpfs".into(),
            read_only: false,
            data: "mode=0755".into()
        }));
        assert!(calls.contains(&Call::Mknod {
            path: roots.dev.join("null"),
            kind: NodeKind::Char,
            mode: 0o666,
            major: 1,
            minor: 3
        }));
    }

    #[test]
    fn a_required_mount_that_fails_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let sys = Recorder {
            fail_mounts: vec![roots.sys.clone()],
            ..Recorder::default()
        };
        let e = mount_early(&sys, &roots).unwrap_err();
        assert!(
            e.to_string().starts_with("failed to mount sysfs on "),
            "{e}"
        );
    }
}
