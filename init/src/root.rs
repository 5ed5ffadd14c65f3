//! Root mode: find the root device named by `root=`, mount it, make sure
//! its init is there, and only then move the early mounts onto it, free
//! the initramfs, and exec the real init in it (what switch_root does,
//! without crossing into the new root while deleting). A failure before
//! the initramfs is freed leaves it whole, so `kestrel.shell` still works.

use crate::disks::BlockDev;
use crate::eventloop::Init;
use crate::log;
use crate::roots::Roots;
use crate::sys::Sys;
use kestrel_proto::cmdline::RootSpec;
use kestrel_proto::GuestRecord;
use rustix::mount::MountFlags;
use std::ffi::{CString, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_INIT: &str = "/sbin/init";
/// Mounts that move into the new root, in order.
const MOVED_MOUNTS: &[&str] = &["dev", "proc", "sys", "run"];
/// Symlinks followed when resolving the init inside the new root (the
/// kernel's own limit is 40).
const MAX_LINK_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("root device {spec} did not appear within {waited:?}; block devices seen: [{seen}] (check root= and that the disk is attached; rootwait waits forever)")]
    NotFound {
        spec: RootSpec,
        waited: Duration,
        seen: String,
    },
    #[error("failed to mount {dev} ({fstype}) on {new_root}: {source}{hint}")]
    Mount {
        dev: String,
        fstype: String,
        new_root: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("root device {dev} has no filesystem the init recognises; give rootfstype=")]
    UnknownFs { dev: String },
    #[error("the root filesystem has no usable {init}: {why} (give init=)")]
    NoInit { init: String, why: String },
    #[error("failed to switch to the new root: {0}")]
    Switch(std::io::Error),
    #[error("failed to start the real init {init}: {source}")]
    Exec {
        init: String,
        source: std::io::Error,
    },
}

/// Waits for the root device (serving the event loop meanwhile), loads its
/// filesystem's module and mounts it.
pub fn mount_root(init: &mut Init, spec: &RootSpec) -> Result<BlockDev, RootError> {
    let opts = init.opts.root.clone();
    if let Some(delay) = opts.delay {
        let until = Instant::now() + delay;
        init.run_until(Some(until), |_| false);
    }
    let start = Instant::now();
    let deadline = (!opts.wait_forever).then(|| start + init.opts.timeout);
    let found = init.run_until(deadline, |i| {
        i.devices.disks.refresh(&i.roots);
        i.devices.disks.find(spec, &i.roots).is_some()
    });
    let dev = match init.devices.disks.find(spec, &init.roots) {
        Some(dev) if found => dev.clone(),
        _ => {
            return Err(RootError::NotFound {
                spec: spec.clone(),
                waited: start.elapsed(),
                seen: init.devices.disks.describe(),
            })
        }
    };
    init.devices.disks.make_links(init.sys, &init.roots);
    let fstype = match (&opts.fstype, &dev.fs) {
        (Some(t), _) => t.clone(),
        (None, Some(fs)) => fs.fstype.to_owned(),
        (None, None) => {
            return Err(RootError::UnknownFs {
                dev: dev.node(&init.roots).display().to_string(),
            })
        }
    };
    // The filesystem driver is often a module: modules.alias maps fs-NAME.
    // Wait until the kernel knows the type, or nothing more is loading.
    init.devices.request_alias(&format!("fs-{fstype}"));
    let proc = init.roots.proc.clone();
    let deadline = Instant::now() + init.opts.timeout;
    init.run_until(Some(deadline), |i| {
        filesystem_known(&proc, &fstype) || i.settled()
    });
    let mut flags = MountFlags::empty();
    if !opts.read_write {
        flags |= MountFlags::RDONLY;
    }
    let data = CString::new(opts.flags.clone().unwrap_or_default()).unwrap_or_default();
    let node = dev.node(&init.roots);
    let new_root = init.roots.new_root.clone();
    let _ = init.sys.mkdir_all(&new_root);
    let source = node.to_string_lossy();
    init.sys
        .mount(&source, &new_root, &fstype, flags, &data)
        .map_err(|source| {
            let hint = if source.raw_os_error() == Some(libc::ENODEV) {
                " (the kernel does not know this filesystem type and no module provides it)"
            } else {
                ""
            };
            RootError::Mount {
                dev: node.display().to_string(),
                fstype: fstype.clone(),
                new_root: new_root.display().to_string(),
                source,
                hint,
            }
        })?;
    log::emit(GuestRecord::Root {
        dev: node.display().to_string(),
        fstype,
        read_write: opts.read_write,
        spec: spec.to_string(),
    });
    Ok(dev)
}

/// Whether /proc/filesystems lists `fstype`.
fn filesystem_known(proc: &Path, fstype: &str) -> bool {
    std::fs::read_to_string(proc.join("filesystems")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(fstype))
    })
}

/// The real init, resolved inside the new root the way the kernel will
/// see it after the chroot (absolute link targets are the new root's),
/// and checked to be an executable file.
pub fn find_init(new_root: &Path, init: &str) -> Result<PathBuf, RootError> {
    let fail = |why: String| RootError::NoInit {
        init: init.to_owned(),
        why,
    };
    let mut path = PathBuf::from("/");
    let mut todo: Vec<OsString> = Path::new(init)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            path.pop();
            continue;
        }
        let candidate = path.join(&part);
        let inside = new_root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        let meta = std::fs::symlink_metadata(&inside)
            .map_err(|e| fail(format!("{}: {e}", candidate.display())))?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(fail("too many levels of symbolic links".into()));
            }
            let target = std::fs::read_link(&inside).map_err(|e| fail(e.to_string()))?;
            if target.is_absolute() {
                path = PathBuf::from("/");
            }
            todo.extend(target.components().rev().filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            }));
        } else {
            path = candidate;
        }
    }
    let inside = new_root.join(path.strip_prefix("/").unwrap_or(&path));
    let meta = std::fs::metadata(&inside).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(fail(format!(
            "{} is not an executable file",
            path.display()
        )));
    }
    Ok(path)
}

/// Deletes everything on the initramfs (the filesystem of `dir`), not
/// descending into other filesystems (the new root, moved mounts).
fn free_initramfs(sys: &dyn Sys, dir: &Path, root_dev: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != root_dev || path == keep {
            continue;
        }
        if meta.is_dir() {
            free_initramfs(sys, &path, root_dev, keep);
            let _ = sys.remove_dir(&path);
        } else {
            let _ = sys.remove_file(&path);
        }
    }
}

/// Moves the mounts, frees the initramfs, enters the new root. The init
/// was checked with [`find_init`] first: from here on there is no way back.
pub fn enter_new_root(sys: &dyn Sys, roots: &Roots, init: &Path) -> Result<(), RootError> {
    for m in MOVED_MOUNTS {
        let from = roots.top.join(m);
        let to = roots.new_root.join(m);
        if to.is_dir() {
            if let Err(e) = sys.move_mount(&from, &to) {
                log::warn(&format!(
                    "failed to move {} to {}: {e}",
                    from.display(),
                    to.display()
                ));
            }
        } else {
            // A minimal root may have no /run: nothing to keep there.
            log::debug(|| format!("the new root has no /{m}; unmounting it"));
            let _ = sys.unmount(&from, true);
        }
    }
    log::emit(GuestRecord::SwitchRoot {
        init: init.display().to_string(),
    });
    if let Ok(meta) = std::fs::metadata(&roots.top) {
        free_initramfs(sys, &roots.top, meta.dev(), &roots.new_root);
    }
    sys.enter_root(&roots.new_root).map_err(RootError::Switch)
}

/// Execs the real init with the kernel's arguments for it (the words
/// after `--`); returns only on failure.
pub fn exec_init(init: &Path, args: &[OsString]) -> RootError {
    use std::os::unix::ffi::OsStrExt;
    let fail = |source| RootError::Exec {
        init: init.display().to_string(),
        source,
    };
    let c = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes())
            .map_err(|_| fail(std::io::Error::from(std::io::ErrorKind::InvalidInput)))
    };
    let argv: Result<Vec<CString>, RootError> = std::iter::once(init.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(c)
        .collect();
    let (program, argv) = match (c(init.as_os_str()), argv) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    // The real init starts with the signal mask a fresh PID 1 has.
    let _ = crate::sys::unblock_signals();
    fail(crate::sys::exec(&program, &argv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    fn executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Debian's /sbin/init is an absolute link into /lib: it must resolve
    /// inside the new root, not on the initramfs.
    #[test]
    fn finds_the_init_through_links_inside_the_new_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        executable(&root.join("lib/systemd/systemd"));
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/systemd", root.join("sbin/init")).unwrap();
        std::os::unix::fs::symlink("../sbin/init", root.join("sbin/rel")).unwrap();
        assert_eq!(
            find_init(root, "/sbin/init").unwrap(),
            Path::new("/lib/systemd/systemd")
        );
        assert_eq!(
            find_init(root, "/sbin/rel").unwrap(),
            Path::new("/lib/systemd/systemd")
        );
        // A link that dangles inside the new root, a directory, a loop, a
        // file that cannot run: each named, nothing trusted.
        std::os::unix::fs::symlink("/nowhere", root.join("sbin/dangling")).unwrap();
        std::os::unix::fs::symlink("/sbin/loop", root.join("sbin/loop")).unwrap();
        std::fs::write(root.join("sbin/data"), "x").unwrap();
        for (init, why) in [
            ("/sbin/dangling", "/nowhere"),
            ("/sbin", "not an executable file"),
            ("/sbin/loop", "too many levels"),
            ("/sbin/data", "not an executable file"),
            ("/bin/missing", "/bin"),
        ] {
            let e = find_init(root, init).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(init), "{init}: {e}");
        }
    }

    /// The hand-over moves the mounts, frees the initramfs without
    /// touching the new root, and enters it.
    #[test]
    fn the_hand_over_moves_mounts_and_frees_only_the_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        for d in ["dev", "proc", "sys"] {
            std::fs::create_dir_all(roots.top.join(d)).unwrap();
            std::fs::create_dir_all(roots.new_root.join(d)).unwrap();
        }
        executable(&roots.new_root.join("sbin/init"));
        std::fs::write(roots.top.join("init"), "kestrel-init").unwrap();
        std::fs::create_dir_all(roots.top.join("kestrel")).unwrap();
        std::fs::write(roots.top.join("kestrel/run"), "arg=x\n").unwrap();
        let sys = Recorder::default();
        enter_new_root(&sys, &roots, Path::new("/sbin/init")).unwrap();
        let calls = sys.calls();
        for m in ["dev", "proc", "sys"] {
            assert!(
                calls.contains(&Call::MoveMount {
                    from: roots.top.join(m),
                    to: roots.new_root.join(m)
                }),
                "{m}"
            );
        }
        // The new root has no /run: the initramfs's is unmounted.
        assert!(calls.contains(&Call::Unmount {
            target: roots.top.join("run"),
            detach: true
        }));
        assert_eq!(calls.last(), Some(&Call::EnterRoot(roots.new_root.clone())));
        assert!(!roots.top.join("init").exists() && !roots.top.join("kestrel").exists());
        assert!(
            roots.new_root.join("sbin/init").exists(),
            "the new root was not touched"
        );
    }

    #[test]
    fn knows_filesystems_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("filesystems"),
            "nodev\tsysfs\n\text4\nnodev\ttmpfs\n",
        )
        .unwrap();
        assert!(filesystem_known(dir.path(), "ext4"));
        assert!(filesystem_known(dir.path(), "tmpfs"));
        assert!(!filesystem_known(dir.path(), "xfs"));
    }
}
