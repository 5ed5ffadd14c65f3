//! The payload's world: the folders the host shares (virtio-fs, or 9p when
//! the host has no virtiofsd) and, with `--root host`, the host's own root
//! as the payload's root: read-only, under a tmpfs overlay that takes every
//! write, so any host program runs unchanged and the host is never
//! modified. PID 1 itself stays on the initramfs; only the payload is
//! started inside that root (chroot in the child).

use crate::roots::Roots;
use crate::sys::Sys;
use kestrel_proto::config::{Config, Share, ShareFs};
use rustix::mount::MountFlags;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// 9p's transfer size: virtio-9p's default (8 KiB) makes every read a
/// round trip; 512 KiB is what virtme-ng uses.
const P9_MSIZE: u32 = 512 * 1024;
/// Where the host-root overlay is assembled (on the init's /run).
const OVERLAY_DIR: &str = "kestrel";

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("failed to mount {what} on {target}: {source}{hint}")]
    Mount {
        what: String,
        target: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("the host root names share {0:?}, which the config does not have")]
    NoRootShare(String),
}

/// The filesystem types the config needs, for their modules (`fs-TYPE`).
pub fn filesystems(cfg: &Config) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = cfg.shares.iter().map(|s| s.fs.name()).collect();
    if cfg.host_root.is_some() {
        types.push("overlay");
    }
    types.sort_unstable();
    types.dedup();
    types
}

fn mount(
    sys: &dyn Sys,
    what: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), ShareError> {
    let _ = sys.mkdir_all(target);
    let data = CString::new(data).unwrap_or_default();
    sys.mount(what, target, fstype, flags, &data)
        .map_err(|source| {
            let hint = if source.raw_os_error() == Some(libc::ENODEV) {
                " (the kernel lacks this filesystem: its module is not in the initrd or not built)"
            } else if source.raw_os_error() == Some(libc::ENOENT) {
                " (no device has this tag: is the share attached?)"
            } else {
                ""
            };
            ShareError::Mount {
                what: format!("{what} ({fstype})"),
                target: target.display().to_string(),
                source,
                hint,
            }
        })
}

fn mount_share(sys: &dyn Sys, share: &Share, target: &Path) -> Result<(), ShareError> {
    let flags = if share.writable {
        MountFlags::empty()
    } else {
        MountFlags::RDONLY
    };
    let data = match share.fs {
        // cache=loose for a read-only tree (the host root: many lookups),
        // mmap for a writable one (mmap works, writes go through).
        ShareFs::P9 => {
            let cache = if share.writable { "mmap" } else { "loose" };
            format!("trans=virtio,version=9p2000.L,msize={P9_MSIZE},cache={cache}")
        }
        ShareFs::Virtiofs => String::new(),
    };
    mount(sys, &share.tag, target, share.fs.name(), flags, &data)
}

/// A path of the payload's root, as seen from PID 1.
fn inside(root: &Path, path: &[u8]) -> PathBuf {
    let rel = Path::new(std::ffi::OsStr::from_bytes(path));
    root.join(rel.strip_prefix("/").unwrap_or(rel))
}

/// The host root: the share read-only as the lower layer, a tmpfs for the
/// writes, the overlay of both, and in it the payload's own /proc, /sys,
/// /dev (the init's, bound), /run and /tmp.
fn host_root(sys: &dyn Sys, roots: &Roots, share: &Share) -> Result<PathBuf, ShareError> {
    let base = roots.run.join(OVERLAY_DIR);
    let (lower, rw, merged) = (base.join("lower"), base.join("rw"), base.join("root"));
    let read_only = Share {
        writable: false,
        ..share.clone()
    };
    mount_share(sys, &read_only, &lower)?;
    mount(sys, "tmpfs", &rw, "tmpfs", MountFlags::empty(), "mode=0755")?;
    let (upper, work) = (rw.join("upper"), rw.join("work"));
    let _ = sys.mkdir_all(&upper);
    let _ = sys.mkdir_all(&work);
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        sys,
        "overlay",
        &merged,
        "overlay",
        MountFlags::empty(),
        &data,
    )?;
    let nosuid = MountFlags::NOSUID | MountFlags::NODEV;
    mount(
        sys,
        "proc",
        &merged.join("proc"),
        "proc",
        nosuid | MountFlags::NOEXEC,
        "",
    )?;
    mount(
        sys,
        "sysfs",
        &merged.join("sys"),
        "sysfs",
        nosuid | MountFlags::NOEXEC,
        "",
    )?;
    // /dev is the init's own, bound, so nodes made later appear in both.
    mount(
        sys,
        &roots.dev.to_string_lossy(),
        &merged.join("dev"),
        "",
        MountFlags::BIND | MountFlags::REC,
        "",
    )?;
    mount(
        sys,
        "tmpfs",
        &merged.join("run"),
        "tmpfs",
        nosuid,
        "mode=0755",
    )?;
    mount(
        sys,
        "tmpfs",
        &merged.join("tmp"),
        "tmpfs",
        nosuid,
        "mode=1777",
    )?;
    Ok(merged)
}

/// Mounts the shares; returns the payload's root when it is not the
/// initramfs (the host root).
pub fn prepare(sys: &dyn Sys, roots: &Roots, cfg: &Config) -> Result<Option<PathBuf>, ShareError> {
    let payload_root = match &cfg.host_root {
        Some(tag) => {
            let share = cfg
                .shares
                .iter()
                .find(|s| &s.tag == tag)
                .ok_or_else(|| ShareError::NoRootShare(tag.clone()))?;
            Some(host_root(sys, roots, share)?)
        }
        None => None,
    };
    let base = payload_root.clone().unwrap_or_else(|| roots.top.clone());
    for share in cfg
        .shares
        .iter()
        .filter(|s| Some(&s.tag) != cfg.host_root.as_ref())
    {
        mount_share(sys, share, &inside(&base, &share.path))?;
    }
    Ok(payload_root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    fn share(fs: ShareFs, tag: &str, path: &str, writable: bool) -> Share {
        Share {
            fs,
            tag: tag.into(),
            path: path.as_bytes().to_vec(),
            writable,
        }
    }

    /// `--root host --share ./work,rw`: the host root under an overlay with
    /// the payload's own mounts, then the writable share inside it.
    #[test]
    fn the_host_root_is_an_overlay_and_shares_go_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let cfg = Config {
            shares: vec![
                share(ShareFs::P9, "root", "/", true),
                share(ShareFs::Virtiofs, "s1", "/home/me/work", true),
            ],
            host_root: Some("root".into()),
            ..Config::default()
        };
        assert_eq!(filesystems(&cfg), ["9p", "overlay", "virtiofs"]);
        let sys = Recorder::default();
        let root = prepare(&sys, &roots, &cfg).unwrap().unwrap();
        let base = roots.run.join("kestrel");
        assert_eq!(root, base.join("root"));
        let mounts: Vec<(String, PathBuf, bool, String)> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount {
                    fstype,
                    target,
                    read_only,
                    data,
                    ..
                } => Some((fstype, target, read_only, data)),
                _ => None,
            })
            .collect();
        let lower = base.join("lower");
        let want_overlay = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            base.join("rw/upper").display(),
            base.join("rw/work").display()
        );
        assert_eq!(
            mounts[0],
            (
                "9p".into(),
                lower,
                true,
                format!("trans=virtio,version=9p2000.L,msize={P9_MSIZE},cache=loose")
            )
        );
        assert_eq!(mounts[1].0, "tmpfs");
        assert_eq!(
            mounts[2],
            ("overlay".into(), root.clone(), false, want_overlay)
        );
        let targets: Vec<&Path> = mounts.iter().map(|m| m.1.as_path()).collect();
        for sub in ["proc", "sys", "dev", "run", "tmp"] {
            assert!(
                targets.contains(&root.join(sub).as_path()),
                "{sub}: {targets:?}"
            );
        }
        assert_eq!(
            mounts.last().unwrap(),
            &(
                "virtiofs".into(),
                root.join("home/me/work"),
                false,
                String::new()
            )
        );
    }

    #[test]
    fn a_missing_filesystem_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let cfg = Config {
            shares: vec![share(ShareFs::P9, "s0", "/mnt", false)],
            ..Config::default()
        };
        let sys = Recorder {
            missing_fs: vec!["9p"],
            ..Recorder::default()
        };
        let e = prepare(&sys, &roots, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("s0 (9p)") && e.contains("lacks this filesystem"),
            "{e}"
        );
        let cfg = Config {
            host_root: Some("gone".into()),
            ..Config::default()
        };
        assert!(matches!(
            prepare(&sys, &roots, &cfg),
            Err(ShareError::NoRootShare(_))
        ));
    }
}
