//! Block devices and the links udev would make for them:
//! /dev/disk/by-uuid, by-label, by-partuuid, by-partlabel, by-id, from the
//! init's own probe of superblocks and partition tables. Devices come from
//! their uevents (`SUBSYSTEM=block`); each is probed once when it appears
//! or changes, not on every look. Link names go through
//! `encode_link_name`, so a hostile label cannot leave its directory.

use crate::log;
use crate::roots::Roots;
use crate::sys::Sys;
use kestrel_init::probe::{self, encode_link_name, Filesystem, PartitionTable};
use kestrel_proto::cmdline::RootSpec;
use kestrel_uevent::{Action, Uevent};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const DISK_DIR: &str = "disk";

/// One block device as the init sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name (`vda1`), never with '/' (DEVNAME of a block device).
    pub name: String,
    /// Its directory under /sys.
    pub devpath: PathBuf,
    pub size: u64,
    /// Partition number, for partitions.
    pub partition: Option<u32>,
    /// The whole disk, for partitions.
    pub parent: Option<String>,
    /// virtio-blk serial (`serial=` on qemu's device).
    pub serial: Option<String>,
    pub fs: Option<Filesystem>,
    pub table: Option<PartitionTable>,
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
}

impl BlockDev {
    pub fn node(&self, roots: &Roots) -> PathBuf {
        roots.dev.join(&self.name)
    }

    pub fn matches(&self, spec: &RootSpec, roots: &Roots) -> bool {
        let fs = self.fs.as_ref();
        match spec {
            // root=/dev/vda or a link to it (/dev/disk/by-id/...): the
            // same file, whichever name reaches it.
            RootSpec::Path(p) => {
                use std::os::unix::fs::MetadataExt;
                let id = |m: std::fs::Metadata| (m.dev(), m.ino());
                let wanted = std::fs::metadata(roots.in_top(p)).map(id);
                wanted.is_ok() && wanted.ok() == std::fs::metadata(self.node(roots)).map(id).ok()
            }
            RootSpec::Uuid(u) => fs
                .and_then(|f| f.uuid.as_deref())
                .is_some_and(|x| x.eq_ignore_ascii_case(u)),
            RootSpec::Label(l) => fs.and_then(|f| f.label.as_deref()) == Some(l.as_str()),
            RootSpec::PartUuid(u) => self
                .partuuid
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(u)),
            RootSpec::PartLabel(l) => self.partlabel.as_deref() == Some(l.as_str()),
        }
    }

    /// One line for error messages: `vdb (ext4, UUID=..., LABEL=...)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(fs) = &self.fs {
            parts.push(fs.fstype.to_owned());
            if let Some(u) = &fs.uuid {
                parts.push(format!("UUID={u}"));
            }
            if let Some(l) = &fs.label {
                parts.push(format!("LABEL={l}"));
            }
        }
        if let Some(u) = &self.partuuid {
            parts.push(format!("PARTUUID={u}"));
        }
        if parts.is_empty() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, parts.join(", "))
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The block devices seen so far, probed once each.
#[derive(Debug, Default)]
pub struct Disks {
    devs: BTreeMap<String, BlockDev>,
    /// Seen or changed since the last probe.
    stale: BTreeSet<String>,
}

impl Disks {
    /// Tracks a block device from its uevent; other devices are ignored.
    pub fn seen(&mut self, ev: &Uevent) {
        if ev.subsystem() != Some(b"block") {
            return;
        }
        let Some(name) = ev.devname().and_then(|d| std::str::from_utf8(d).ok()) else {
            return;
        };
        if name.contains('/') {
            return;
        }
        if ev.action() == Action::Remove {
            self.devs.remove(name);
            self.stale.remove(name);
            return;
        }
        let devpath = PathBuf::from(String::from_utf8_lossy(ev.devpath()).trim_start_matches('/'));
        let partition = ev
            .get(b"PARTN")
            .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
        // A partition's devpath is its disk's devpath plus one component.
        let parent =
            partition.and_then(|_| devpath.parent()?.file_name()?.to_str().map(str::to_owned));
        self.devs.insert(
            name.to_owned(),
            BlockDev {
                name: name.to_owned(),
                devpath,
                partition,
                parent,
                ..BlockDev::default()
            },
        );
        self.stale.insert(name.to_owned());
    }

    /// Probes what appeared or changed: size and serial from /sys, the
    /// filesystem and partition table from the device itself.
    pub fn refresh(&mut self, roots: &Roots) {
        let stale = std::mem::take(&mut self.stale);
        for name in &stale {
            if let Some(dev) = self.devs.get_mut(name) {
                probe_one(dev, roots);
            }
        }
        // Partitions take their PARTUUID/PARTLABEL from their disk's table.
        let tables: Vec<(String, PartitionTable)> = self
            .devs
            .values()
            .filter_map(|d| Some((d.name.clone(), d.table.clone()?)))
            .collect();
        for dev in self.devs.values_mut() {
            let (Some(parent), Some(number)) = (dev.parent.as_ref(), dev.partition) else {
                continue;
            };
            let Some((_, table)) = tables.iter().find(|(disk, _)| disk == parent) else {
                continue;
            };
            let (PartitionTable::Gpt { partitions, .. } | PartitionTable::Mbr { partitions, .. }) =
                table;
            if let Some(p) = partitions.iter().find(|p| p.number == number) {
                dev.partuuid = p.partuuid.clone();
                dev.partlabel = p.partlabel.clone();
            }
        }
    }

    /// The device `root=` names, if it is there (probed).
    pub fn find(&self, spec: &RootSpec, roots: &Roots) -> Option<&BlockDev> {
        self.devs
            .values()
            .find(|d| d.size > 0 && d.matches(spec, roots))
    }

    /// What is there, for an error message.
    pub fn describe(&self) -> String {
        let seen: Vec<String> = self
            .devs
            .values()
            .filter(|d| d.size > 0)
            .map(BlockDev::describe)
            .collect();
        seen.join("; ")
    }

    /// Makes the by-* links for every device.
    pub fn make_links(&self, sys: &dyn Sys, roots: &Roots) {
        for dev in self.devs.values() {
            let link = |dir: &str, name: &str| {
                let dir = roots.dev.join(DISK_DIR).join(dir);
                let _ = sys.mkdir_all(&dir);
                let _ = sys.symlink(
                    &Path::new("../..").join(&dev.name),
                    &dir.join(encode_link_name(name)),
                );
            };
            if let Some(fs) = &dev.fs {
                if let Some(u) = &fs.uuid {
                    link("by-uuid", u);
                }
                if let Some(l) = &fs.label {
                    link("by-label", l);
                }
            }
            if let Some(u) = &dev.partuuid {
                link("by-partuuid", u);
            }
            if let Some(l) = &dev.partlabel {
                link("by-partlabel", l);
            }
            let serial = dev
                .serial
                .as_ref()
                .or_else(|| self.devs.get(dev.parent.as_ref()?)?.serial.as_ref());
            if let Some(serial) = serial {
                match dev.partition {
                    Some(n) => link("by-id", &format!("virtio-{serial}-part{n}")),
                    None => link("by-id", &format!("virtio-{serial}")),
                }
            }
        }
    }
}

fn probe_one(dev: &mut BlockDev, roots: &Roots) {
    let attrs = roots.sys.join(&dev.devpath);
    // `size` is in 512-byte sectors whatever the logical block size.
    dev.size = read_trimmed(&attrs.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 512;
    dev.serial =
        read_trimmed(&attrs.join("serial")).or_else(|| read_trimmed(&attrs.join("device/serial")));
    (dev.fs, dev.table) = (None, None);
    if dev.size == 0 {
        return;
    }
    let file = match std::fs::File::open(dev.node(roots)) {
        Ok(f) => f,
        Err(e) => return log::debug(|| format!("cannot open {}: {e}", dev.name)),
    };
    match probe::probe_filesystem(&file, dev.size) {
        Ok(fs) => dev.fs = fs,
        Err(e) => log::debug(|| format!("probe of {}: {e}", dev.name)),
    }
    if dev.partition.is_none() {
        dev.table = probe::probe_partitions(&file, dev.size).ok().flatten();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};
    use bytes::Bytes;

    fn block_event(action: &str, name: &str, devpath: &str, partn: Option<u32>) -> Uevent {
        let mut text = format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=block\0DEVNAME={name}\0SEQNUM=1\0");
        if let Some(n) = partn {
            text.push_str(&format!("DEVTYPE=partition\0PARTN={n}\0"));
        }
        kestrel_uevent::parse_netlink(Bytes::from(text.into_bytes())).unwrap()
    }

    /// A disk image made by mkfs.ext4, as /dev/vdb of a fixture tree.
    fn ext4_disk(roots: &Roots, name: &str, label: &str) -> String {
        let devpath = format!("/devices/platform/virtio-mmio.1/virtio1/block/{name}");
        let attrs = roots.sys.join(devpath.trim_start_matches('/'));
        std::fs::create_dir_all(&attrs).unwrap();
        std::fs::create_dir_all(&roots.dev).unwrap();
        let image = roots.dev.join(name);
        let st = std::process::Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                label,
                "-U",
                "6b1c3c4e-2f4a-4d35-9c51-0a7f2b8e5d11",
            ])
            .arg(&image)
            .arg("4M")
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(attrs.join("size"), format!("{}\n", 4 * 1024 * 2)).unwrap();
        std::fs::write(attrs.join("serial"), "disk0\n").unwrap();
        devpath
    }

    #[test]
    fn finds_the_root_by_uuid_label_and_path_and_links_it() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let devpath = ext4_disk(&roots, "vdb", "kestrel-root");
        let mut disks = Disks::default();
        disks.seen(&block_event("add", "vdb", &devpath, None));
        disks.refresh(&roots);
        let uuid = RootSpec::parse("UUID=6B1C3C4E-2F4A-4D35-9C51-0A7F2B8E5D11").unwrap();
        assert_eq!(
            disks.find(&uuid, &roots).map(|d| d.name.as_str()),
            Some("vdb")
        );
        let label = RootSpec::parse("LABEL=kestrel-root").unwrap();
        assert!(disks.find(&label, &roots).is_some());
        assert!(disks
            .find(&RootSpec::parse("/dev/vdb").unwrap(), &roots)
            .is_some());
        assert!(disks
            .find(&RootSpec::parse("LABEL=other").unwrap(), &roots)
            .is_none());
        assert_eq!(
            disks.describe(),
            "vdb (ext4, UUID=6b1c3c4e-2f4a-4d35-9c51-0a7f2b8e5d11, LABEL=kestrel-root)"
        );
        let sys = Recorder::default();
        disks.make_links(&sys, &roots);
        let links: Vec<PathBuf> = sys
            .calls()
            .into_iter()
            .map(|c| match c {
                Call::Symlink { target, link } => {
                    assert_eq!(target, Path::new("../../vdb"));
                    link.strip_prefix(&roots.dev).unwrap().to_owned()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<PathBuf> = [
            "disk/by-uuid/6b1c3c4e-2f4a-4d35-9c51-0a7f2b8e5d11",
            "disk/by-label/kestrel-root",
            "disk/by-id/virtio-disk0",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(links, want);
        // The link to it names it too: root=/dev/disk/by-id/... resolves.
        assert!(disks
            .find(
                &RootSpec::parse("/dev/disk/by-id/virtio-disk0").unwrap(),
                &roots
            )
            .is_some());
        // Gone again: not found, not described.
        disks.seen(&block_event("remove", "vdb", &devpath, None));
        assert!(disks.find(&uuid, &roots).is_none());
        assert_eq!(disks.describe(), "");
    }

    #[test]
    fn a_device_is_probed_once_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let devpath = ext4_disk(&roots, "vda", "first");
        let mut disks = Disks::default();
        disks.seen(&block_event("add", "vda", &devpath, None));
        disks.refresh(&roots);
        // The content changes behind the init's back: no new probe...
        std::fs::write(roots.dev.join("vda"), vec![0u8; 4 << 20]).unwrap();
        disks.refresh(&roots);
        assert!(disks
            .find(&RootSpec::parse("LABEL=first").unwrap(), &roots)
            .is_some());
        // ...until the kernel says it changed.
        disks.seen(&block_event("change", "vda", &devpath, None));
        disks.refresh(&roots);
        assert!(disks
            .find(&RootSpec::parse("LABEL=first").unwrap(), &roots)
            .is_none());
        assert_eq!(disks.describe(), "vda");
    }
}
