//! Host folders for the guest (`--share HOST[:GUEST][,rw]`, `--root host`):
//! the specs parsed, the transport chosen (virtio-fs when a usable
//! virtiofsd exists, else virtio-9p, which qemu has built in), tags given,
//! the mount order fixed, and the payload's working directory mapped into
//! them. What the guest does with them is `init/src/shares.rs`.

use crate::machine::SharedDir;
use crate::virtiofsd::Daemon;
use anyhow::{bail, Context, Result};
use kestrel_proto::config::{self, ShareFs};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The mount tag of the host's root (`--root host`).
pub const ROOT_TAG: &str = "kestrel-root";
/// Tags of the other shares: this and their index.
const TAG_PREFIX: &str = "kestrel-share";
/// Paths of the payload's root that are its own, not the host's: the init
/// mounts them (proc, sysfs, its /dev, tmpfs on /run and /tmp) over
/// whatever the shared root has there. A share cannot go on them, and a
/// working directory inside them is shared on its own (see [`plan`]).
const GUEST_OWN: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp"];

/// `--share` as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareSpec {
    pub host: PathBuf,
    /// Default: the host path (made absolute).
    pub guest: Option<PathBuf>,
    pub writable: bool,
}

impl std::str::FromStr for ShareSpec {
    type Err = String;

    /// `HOST[:GUEST][,rw|,ro]`. GUEST is absolute: only a colon followed
    /// by `/` separates it, any other colon is part of HOST; only a
    /// trailing `,rw` or `,ro` is an option.
    fn from_str(s: &str) -> Result<ShareSpec, String> {
        let (rest, writable) = match (s.strip_suffix(",rw"), s.strip_suffix(",ro")) {
            (Some(r), _) => (r, true),
            (_, Some(r)) => (r, false),
            _ => (s, false),
        };
        let (host, guest) = match rest.rfind(":/") {
            Some(at) => (
                rest.get(..at).unwrap_or_default(),
                rest.get(at + 1..).map(PathBuf::from),
            ),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("--share {s:?}: no host folder"));
        }
        Ok(ShareSpec {
            host: host.into(),
            guest,
            writable,
        })
    }
}

/// `--share-fs`: how folders are shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FsChoice {
    /// virtio-fs when a usable virtiofsd is installed, else 9p.
    #[default]
    Auto,
    Virtiofs,
    #[value(name = "9p")]
    P9,
}

/// The transport chosen for a run's shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    pub fs: ShareFs,
    /// The daemon, with virtio-fs.
    pub daemon: Option<Daemon>,
    /// The line that says which and why.
    pub why: String,
}

/// The modules a guest kernel needs for virtio-fs.
pub const VIRTIOFS_MODULES: &[&str] = &["virtiofs"];

/// virtio-fs when asked for or (auto) when `found` can serve us (`root`:
/// we run as root), the guest kernel has its driver (`kernel_lacks`: what
/// it lacks of [`VIRTIOFS_MODULES`]) and, when a share is `read_only`
/// (the host's root always is), it stays read-only on the host
/// ([`Daemon::enforces_readonly`]); else 9p, whose `readonly=on` qemu
/// enforces. A read-only mount in the guest alone is no protection: the
/// guest's root can remount it read-write, and the daemon writes as its
/// host user. Forcing virtio-fs without a usable daemon is an error (a
/// kernel without the driver is named later, with the other devices'
/// drivers); forcing it for a read-only share the daemon cannot protect
/// is said.
pub fn choose_transport(
    choice: FsChoice,
    found: Option<Daemon>,
    root: bool,
    read_only: bool,
    kernel_lacks: &[String],
) -> Result<Transport> {
    let unusable = match &found {
        None => Some(format!(
            "no virtiofsd on PATH or in {}",
            crate::virtiofsd::LIBEXEC_PATHS.join(", ")
        )),
        Some(d) => d.unusable_reason(root),
    };
    let unguarded = read_only && found.as_ref().is_some_and(|d| !d.enforces_readonly(root));
    let unusable = match (unusable, choice) {
        (None, FsChoice::Auto) if !kernel_lacks.is_empty() => {
            Some(format!("the kernel lacks {}", kernel_lacks.join(", ")))
        }
        (None, FsChoice::Auto) if unguarded => Some(format!(
            "{} cannot refuse writes to a read-only share; qemu's 9p can",
            found
                .as_ref()
                .map_or_else(Default::default, |d| d.path.display().to_string())
        )),
        (u, _) => u,
    };
    let p9 = |why: String| Transport {
        fs: ShareFs::P9,
        daemon: None,
        why: format!("kestrel: sharing folders with 9p ({why})"),
    };
    match (choice, unusable, found) {
        (FsChoice::P9, _, _) => Ok(p9("--share-fs 9p".into())),
        (FsChoice::Virtiofs, Some(why), _) => {
            bail!("--share-fs virtiofs: {why} (install virtiofsd, or use 9p)")
        }
        (FsChoice::Auto, Some(why), _) => Ok(p9(why)),
        (_, None, Some(d)) => Ok(Transport {
            fs: ShareFs::Virtiofs,
            why: format!(
                "kestrel: sharing folders with virtio-fs ({}){}",
                d.path.display(),
                if unguarded {
                    "; read-only shares are read-only in the guest only: its root can remount them"
                } else {
                    ""
                }
            ),
            daemon: Some(d),
        }),
        (_, None, None) => Ok(p9("no virtiofsd".into())),
    }
}

/// A lexically normal absolute path: no `.`, `..` or repeated slashes.
fn normal_absolute(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a share cannot go at `p`: one of the guest's own paths, or
/// inside its kernel filesystems (a folder inside /tmp or /run is fine).
fn is_guest_own(p: &Path) -> bool {
    GUEST_OWN.iter().any(|own| p == Path::new(own))
        || ["/proc", "/sys", "/dev"]
            .iter()
            .any(|own| p.starts_with(own))
}

/// The shares of a run, in mount order: the host root first (with
/// `host_root`), then each `--share` (a share inside another after it).
/// Host folders must exist and are taken canonical (symlinks resolved);
/// the working directory `cwd`, when the host root hides it (under the
/// guest's own /tmp or /run), is shared read-only on its own so it is
/// kept.
pub fn plan(
    specs: &[ShareSpec],
    host_root: bool,
    fs: ShareFs,
    cwd: &Path,
) -> Result<Vec<SharedDir>> {
    let mut shares = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let host = std::fs::canonicalize(&spec.host)
            .with_context(|| format!("--share: cannot use {}", spec.host.display()))?;
        if !host.is_dir() {
            bail!("--share: {} is not a folder", host.display());
        }
        let guest = match &spec.guest {
            Some(g) => normal_absolute(g).with_context(|| {
                format!(
                    "--share: the guest path {} is not absolute (or has ..)",
                    g.display()
                )
            })?,
            None => host.clone(),
        };
        if guest == Path::new("/") {
            bail!("--share {}: / in the guest is the initramfs; to run on the host's root, use --root host", spec.host.display());
        }
        if is_guest_own(&guest) {
            bail!(
                "--share {}: {} is the guest's own (one of {}); choose another guest path (HOST:GUEST)",
                spec.host.display(),
                guest.display(),
                GUEST_OWN.join(" ")
            );
        }
        if shares.iter().any(|s: &SharedDir| s.guest == guest) {
            bail!("--share: two folders at {} in the guest", guest.display());
        }
        shares.push(SharedDir {
            fs,
            tag: format!("{TAG_PREFIX}{i}"),
            host,
            guest,
            writable: spec.writable,
            root: false,
        });
    }
    if host_root {
        let hidden = ["/tmp", "/run"].iter().any(|h| cwd.starts_with(h));
        let covered = shares
            .iter()
            .any(|s| cwd.starts_with(&s.host) && s.guest == s.host);
        if hidden && !covered && cwd.is_dir() {
            shares.push(SharedDir {
                fs,
                tag: format!("{TAG_PREFIX}{}", shares.len()),
                host: cwd.to_owned(),
                guest: cwd.to_owned(),
                writable: false,
                root: false,
            });
        }
        shares.insert(
            0,
            SharedDir {
                fs,
                tag: ROOT_TAG.into(),
                host: "/".into(),
                guest: "/".into(),
                writable: false,
                root: true,
            },
        );
    }
    // A share inside another is mounted after it (stable: the order given
    // otherwise).
    shares.sort_by_key(|s| s.guest.components().count());
    Ok(shares)
}

/// The payload's working directory in the guest for the host's `cwd`:
/// inside the deepest share that holds it (the host root holds all).
pub fn guest_cwd(shares: &[SharedDir], cwd: &Path) -> Option<PathBuf> {
    shares
        .iter()
        .filter_map(|s| Some((s, cwd.strip_prefix(&s.host).ok()?)))
        .max_by_key(|(s, _)| s.host.components().count())
        .map(|(s, rel)| {
            if rel.as_os_str().is_empty() {
                s.guest.clone()
            } else {
                s.guest.join(rel)
            }
        })
}

/// What the init is told: each share (the host root's included) and the
/// host root's tag.
pub fn baked(shares: &[SharedDir]) -> (Vec<config::Share>, Option<String>) {
    let list = shares
        .iter()
        .map(|s| config::Share {
            fs: s.fs,
            tag: s.tag.clone(),
            path: s.guest.as_os_str().as_bytes().to_vec(),
            writable: s.writable,
        })
        .collect();
    let root = shares.iter().find(|s| s.root).map(|s| s.tag.clone());
    (list, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtiofsd::Flavour;

    fn spec(s: &str) -> ShareSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_host_guest_and_mode() {
        assert_eq!(
            spec("."),
            ShareSpec {
                host: ".".into(),
                guest: None,
                writable: false
            }
        );
        assert_eq!(
            spec("/a:b/c:/mnt/x,rw"),
            ShareSpec {
                host: "/a:b/c".into(),
                guest: Some("/mnt/x".into()),
                writable: true
            }
        );
        assert!(!spec("x,ro").writable);
        assert_eq!(spec("x,y").host, PathBuf::from("x,y"));
        assert!(",rw".parse::<ShareSpec>().is_err());
    }

    #[test]
    fn virtiofs_when_usable_else_9p_with_the_reason() {
        let qemu = Daemon {
            path: "/usr/lib/qemu/virtiofsd".into(),
            flavour: Flavour::Qemu,
        };
        let t = choose_transport(FsChoice::Auto, Some(qemu.clone()), true, false, &[]).unwrap();
        assert_eq!(t.fs, ShareFs::Virtiofs);
        assert!(
            t.why.contains("virtio-fs (/usr/lib/qemu/virtiofsd)"),
            "{}",
            t.why
        );
        // A daemon that cannot keep a share read-only (an older Rust one,
        // without root for a namespace): a read-only share goes over 9p,
        // unless virtio-fs is forced, which is said.
        let rust = |readonly| Daemon {
            path: "/usr/libexec/virtiofsd".into(),
            flavour: Flavour::Rust {
                readonly,
                submounts: true,
            },
        };
        let old_rust = rust(false);
        let t = choose_transport(FsChoice::Auto, Some(old_rust.clone()), false, true, &[]).unwrap();
        assert_eq!(t.fs, ShareFs::P9);
        assert!(
            t.why.contains("cannot refuse writes to a read-only share"),
            "{}",
            t.why
        );
        let t = choose_transport(FsChoice::Virtiofs, Some(old_rust), false, true, &[]).unwrap();
        assert_eq!(t.fs, ShareFs::Virtiofs);
        assert!(t.why.contains("read-only in the guest only"), "{}", t.why);
        let t = choose_transport(FsChoice::Auto, Some(rust(true)), false, true, &[]).unwrap();
        assert_eq!(t.fs, ShareFs::Virtiofs, "{}", t.why);
        // qemu's daemon, as root, serves a read-only view where the kernel
        // can make one.
        let t = choose_transport(FsChoice::Auto, Some(qemu.clone()), true, true, &[]).unwrap();
        let viewable = qemu.enforces_readonly(true);
        assert_eq!(t.fs == ShareFs::Virtiofs, viewable, "{}", t.why);
        let t = choose_transport(FsChoice::Auto, Some(qemu.clone()), false, false, &[]).unwrap();
        assert_eq!(t.fs, ShareFs::P9);
        assert!(t.why.contains("needs root"), "{}", t.why);
        let t = choose_transport(FsChoice::Auto, None, true, false, &[]).unwrap();
        assert!(t.why.contains("9p (no virtiofsd on PATH"), "{}", t.why);
        assert_eq!(
            choose_transport(FsChoice::P9, Some(qemu.clone()), true, false, &[])
                .unwrap()
                .fs,
            ShareFs::P9
        );
        let e = choose_transport(FsChoice::Virtiofs, None, true, false, &[]).unwrap_err();
        assert!(e.to_string().contains("install virtiofsd"), "{e}");
        // A guest kernel without the driver (a small tree): 9p, saying why.
        let lacks = ["virtiofs (CONFIG_VIRTIO_FS is not set: enable it)".to_owned()];
        let t = choose_transport(FsChoice::Auto, Some(qemu.clone()), true, false, &lacks).unwrap();
        assert_eq!(t.fs, ShareFs::P9);
        assert!(
            t.why
                .contains("the kernel lacks virtiofs (CONFIG_VIRTIO_FS"),
            "{}",
            t.why
        );
        let t = choose_transport(FsChoice::Virtiofs, Some(qemu), true, false, &lacks).unwrap();
        assert_eq!(t.fs, ShareFs::Virtiofs);
    }

    #[test]
    fn plans_tags_order_and_the_working_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        let specs = [
            spec(&format!("{}:/mnt/ab,rw", top.join("a/b").display())),
            spec(&format!("{}:/mnt", top.join("a").display())),
        ];
        let shares = plan(&specs, false, ShareFs::P9, Path::new("/")).unwrap();
        let order: Vec<(&str, &Path, bool)> = shares
            .iter()
            .map(|s| (s.tag.as_str(), s.guest.as_path(), s.writable))
            .collect();
        assert_eq!(
            order,
            [
                ("kestrel-share1", Path::new("/mnt"), false),
                ("kestrel-share0", Path::new("/mnt/ab"), true)
            ]
        );
        assert_eq!(
            guest_cwd(&shares, &top.join("a/b/c")),
            Some(PathBuf::from("/mnt/ab/c"))
        );
        assert_eq!(
            guest_cwd(&shares, &top.join("a")),
            Some(PathBuf::from("/mnt"))
        );
        assert_eq!(guest_cwd(&shares, Path::new("/etc")), None);
        let (list, root) = baked(&shares);
        assert_eq!(root, None);
        assert_eq!(list[1].path, b"/mnt/ab");

        // The host root: first, read-only; the cwd in the guest's own /tmp
        // is shared on its own, so it is kept.
        let shares = plan(&[], true, ShareFs::Virtiofs, &top).unwrap();
        assert!(shares[0].root && shares[0].tag == ROOT_TAG && !shares[0].writable);
        assert_eq!(shares.len(), 2, "{shares:?}");
        assert_eq!(shares[1].guest, top);
        assert_eq!(guest_cwd(&shares, &top), Some(top.clone()));
        assert_eq!(guest_cwd(&shares, Path::new("/etc")), Some("/etc".into()));
        let shares = plan(&[], true, ShareFs::P9, Path::new("/usr")).unwrap();
        assert_eq!(shares.len(), 1);
        assert_eq!(baked(&shares).1.as_deref(), Some(ROOT_TAG));
    }

    #[test]
    fn refuses_what_cannot_be_mounted() {
        let e = plan(&[spec("/no/such/dir")], false, ShareFs::P9, Path::new("/"));
        assert!(e.unwrap_err().to_string().contains("/no/such/dir"));
        for bad in [
            "/usr:/",
            "/usr:/proc",
            "/usr:/dev/x",
            "/usr:/run",
            "/usr:rel",
        ] {
            assert!(
                plan(&[spec(bad)], false, ShareFs::P9, Path::new("/")).is_err(),
                "{bad}"
            );
        }
        assert!(plan(&[spec("/usr:/tmp/usr")], false, ShareFs::P9, Path::new("/")).is_ok());
        let e = plan(
            &[spec("/usr:/x"), spec("/etc:/x")],
            false,
            ShareFs::P9,
            Path::new("/"),
        );
        assert!(e.unwrap_err().to_string().contains("two folders"));
    }
}
