//! Root mode: find the root device named by `root=`, mount it, move the
//! early mounts onto it, free the initramfs, and exec the real init in it
//! (what switch_root does, without crossing into the new root while
//! deleting).

use crate::devices::Devices;
use crate::disks::{self, BlockDev};
use crate::log;
use kestrel_proto::cmdline::{RootOptions, RootSpec};
use kestrel_proto::GuestRecord;
use rustix::mount::MountFlags;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

pub const NEW_ROOT: &str = "/sysroot";
pub const DEFAULT_INIT: &str = "/sbin/init";
/// Mounts that move into the new root, in order.
const MOVED_MOUNTS: &[&str] = &["/dev", "/proc", "/sys", "/run"];

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("root device {spec} did not appear within {waited:?}; block devices seen: [{seen}] (check root= and that the disk is attached; rootwait waits forever)")]
    NotFound {
        spec: RootSpec,
        waited: Duration,
        seen: String,
    },
    #[error("failed to mount {dev} ({fstype}) on {NEW_ROOT}: {source}{hint}")]
    Mount {
        dev: String,
        fstype: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("root device {dev} has no filesystem the init recognises; give rootfstype=")]
    UnknownFs { dev: String },
    #[error("the root filesystem has no {init} (give init=)")]
    NoInit { init: String },
    #[error("failed to switch to the new root: {what}: {source}")]
    Switch {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("failed to start the real init {init}: {source}")]
    Exec {
        init: String,
        source: std::io::Error,
    },
}

/// Waits for the root device (handling uevents meanwhile) and mounts it.
pub fn mount_root(
    opts: &RootOptions,
    spec: &RootSpec,
    devices: &mut Devices,
    timeout: Duration,
) -> Result<BlockDev, RootError> {
    if let Some(delay) = opts.delay {
        std::thread::sleep(delay);
    }
    let start = Instant::now();
    let dev = loop {
        let devs = disks::scan(Path::new(disks::SYS_CLASS_BLOCK));
        disks::make_links(&devs);
        if let Some(dev) = devs.iter().find(|d| d.matches(spec)) {
            break dev.clone();
        }
        let waited = start.elapsed();
        if waited >= timeout && !opts.wait_forever {
            let seen: Vec<String> = devs.iter().map(BlockDev::describe).collect();
            return Err(RootError::NotFound {
                spec: spec.clone(),
                waited,
                seen: seen.join("; "),
            });
        }
        devices.wait_and_handle(Duration::from_millis(50));
    };
    let fstype = match (&opts.fstype, &dev.fs) {
        (Some(t), _) => t.clone(),
        (None, Some(fs)) => fs.fstype.to_owned(),
        (None, None) => {
            return Err(RootError::UnknownFs {
                dev: dev.node().display().to_string(),
            })
        }
    };
    // The filesystem driver is often a module: modules.alias maps fs-NAME.
    devices.request_aliases(&[format!("fs-{fstype}")]);
    let _ = std::fs::create_dir_all(NEW_ROOT);
    let mut flags = MountFlags::empty();
    if !opts.read_write {
        flags |= MountFlags::RDONLY;
    }
    let data = CString::new(opts.flags.clone().unwrap_or_default()).unwrap_or_default();
    let node = dev.node();
    rustix::mount::mount(&node, NEW_ROOT, fstype.as_str(), flags, data.as_c_str()).map_err(
        |e| {
            let source = std::io::Error::from(e);
            let hint = if source.raw_os_error() == Some(libc::ENODEV) {
                " (the kernel does not know this filesystem type and no module provides it)"
            } else {
                ""
            };
            RootError::Mount {
                dev: node.display().to_string(),
                fstype: fstype.clone(),
                source,
                hint,
            }
        },
    )?;
    log::emit(GuestRecord::Root {
        dev: node.display().to_string(),
        fstype: fstype.clone(),
        read_write: opts.read_write,
        spec: spec.to_string(),
    });
    Ok(dev)
}

/// Deletes everything on the initramfs (the filesystem of `dir`), not
/// descending into other filesystems (the new root, moved mounts).
fn free_initramfs(dir: &Path, root_dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != root_dev {
            continue;
        }
        if meta.is_dir() {
            free_initramfs(&path, root_dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Moves the mounts, frees the initramfs, enters the new root and execs
/// the real init. Returns only on failure.
pub fn switch_root(opts: &RootOptions, args: &[std::ffi::OsString]) -> RootError {
    let init = opts.init.clone().unwrap_or_else(|| DEFAULT_INIT.to_owned());
    let in_new_root = Path::new(NEW_ROOT).join(init.trim_start_matches('/'));
    // A dangling link may still resolve inside the new root after chroot.
    if std::fs::symlink_metadata(&in_new_root).is_err() {
        return RootError::NoInit { init };
    }
    for m in MOVED_MOUNTS {
        let target = Path::new(NEW_ROOT).join(m.trim_start_matches('/'));
        if target.is_dir() {
            if let Err(e) = rustix::mount::mount_move(*m, &target) {
                log::warn(&format!("failed to move {m} to {}: {e}", target.display()));
            }
        } else {
            log::warn(&format!("the new root has no {m}; unmounting it"));
            let _ = rustix::mount::unmount(*m, rustix::mount::UnmountFlags::DETACH);
        }
    }
    log::emit(GuestRecord::SwitchRoot { init: init.clone() });
    if let Ok(meta) = std::fs::metadata("/") {
        free_initramfs(Path::new("/"), meta.dev());
    }
    let step = |what: &'static str, r: rustix::io::Result<()>| {
        r.map_err(|e| RootError::Switch {
            what,
            source: e.into(),
        })
    };
    if let Err(e) = step("chdir", rustix::process::chdir(NEW_ROOT))
        .and_then(|()| {
            step(
                "move the new root onto /",
                rustix::mount::mount_move(".", "/"),
            )
        })
        .and_then(|()| step("chroot", rustix::process::chroot(".")))
        .and_then(|()| step("chdir /", rustix::process::chdir("/")))
    {
        return e;
    }
    // The real init starts with the signal mask a fresh PID 1 has.
    let _ = crate::sys::unblock_signals();
    let source = std::process::Command::new(&init).args(args).exec();
    RootError::Exec { init, source }
}
