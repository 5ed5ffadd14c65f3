//! Block devices and the links udev would make for them:
//! /dev/disk/by-uuid, by-label, by-partuuid, by-partlabel, by-id, from the
//! init's own probe of superblocks and partition tables. Names come from
//! /sys/class/block (kernel names, never with '/'); link names go through
//! `encode_link_name`, so a hostile label cannot leave its directory.

use crate::log;
use kestrel_init::probe::{self, encode_link_name, Filesystem, PartitionTable};
use kestrel_proto::cmdline::RootSpec;
use std::path::{Path, PathBuf};

pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";
pub const DISK_DIR: &str = "/dev/disk";

/// One block device as the init sees it.
#[derive(Debug, Clone, Default)]
pub struct BlockDev {
    pub name: String,
    pub size: u64,
    /// Partition number, for partitions.
    pub partition: Option<u32>,
    /// The whole disk, for partitions.
    pub parent: Option<String>,
    /// virtio-blk serial (`serial=` on qemu's device).
    pub serial: Option<String>,
    pub fs: Option<Filesystem>,
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
}

impl BlockDev {
    pub fn node(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    pub fn matches(&self, spec: &RootSpec) -> bool {
        let fs = self.fs.as_ref();
        match spec {
            RootSpec::Path(p) => Path::new(p) == self.node() || resolves_to(p, &self.node()),
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

/// A /dev path that is a link (e.g. /dev/disk/by-id/...) to `node`.
fn resolves_to(path: &str, node: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p == node)
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Every block device with a size, probed. Devices that cannot be opened
/// or read are listed without a filesystem (and reported in debug mode).
pub fn scan(class_dir: &Path) -> Vec<BlockDev> {
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return Vec::new();
    };
    let mut devs: Vec<BlockDev> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let dir = e.path();
            // `size` is in 512-byte sectors whatever the logical block size.
            let size = read_trimmed(&dir.join("size"))?.parse::<u64>().ok()? * 512;
            if size == 0 {
                return None;
            }
            let partition = read_trimmed(&dir.join("partition")).and_then(|p| p.parse().ok());
            let parent = partition.and(
                std::fs::canonicalize(&dir)
                    .ok()
                    .and_then(|p| p.parent()?.file_name()?.to_str().map(str::to_owned)),
            );
            let serial = read_trimmed(&dir.join("serial"))
                .or_else(|| read_trimmed(&dir.join("device/serial")));
            Some(BlockDev {
                name,
                size,
                partition,
                parent,
                serial,
                ..BlockDev::default()
            })
        })
        .collect();
    devs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tables: Vec<(String, PartitionTable)> = Vec::new();
    for dev in devs.iter_mut() {
        let Ok(file) = std::fs::File::open(dev.node()) else {
            continue;
        };
        match probe::probe_filesystem(&file, dev.size) {
            Ok(fs) => dev.fs = fs,
            Err(e) => log::debug(&format!("probe of {}: {e}", dev.name)),
        }
        if dev.partition.is_none() {
            if let Ok(Some(table)) = probe::probe_partitions(&file, dev.size) {
                tables.push((dev.name.clone(), table));
            }
        }
    }
    for dev in devs.iter_mut() {
        let (Some(parent), Some(number)) = (dev.parent.as_ref(), dev.partition) else {
            continue;
        };
        let Some((_, table)) = tables.iter().find(|(n, _)| n == parent) else {
            continue;
        };
        let parts = match table {
            PartitionTable::Gpt { partitions, .. } | PartitionTable::Mbr { partitions, .. } => {
                partitions
            }
        };
        if let Some(p) = parts.iter().find(|p| p.number == number) {
            dev.partuuid = p.partuuid.clone();
            dev.partlabel = p.partlabel.clone();
        }
    }
    devs
}

fn link(dir: &str, name: &str, dev: &BlockDev) {
    let dir = Path::new(DISK_DIR).join(dir);
    let _ = std::fs::create_dir_all(&dir);
    let link = dir.join(encode_link_name(name));
    let _ = std::fs::remove_file(&link);
    let _ = std::os::unix::fs::symlink(Path::new("../..").join(&dev.name), link);
}

/// Makes the by-* links for every device.
pub fn make_links(devs: &[BlockDev]) {
    for dev in devs {
        if let Some(fs) = &dev.fs {
            if let Some(u) = &fs.uuid {
                link("by-uuid", u, dev);
            }
            if let Some(l) = &fs.label {
                link("by-label", l, dev);
            }
        }
        if let Some(u) = &dev.partuuid {
            link("by-partuuid", u, dev);
        }
        if let Some(l) = &dev.partlabel {
            link("by-partlabel", l, dev);
        }
        let serial = dev.serial.as_ref().or_else(|| {
            let parent = dev.parent.as_ref()?;
            devs.iter().find(|d| &d.name == parent)?.serial.as_ref()
        });
        if let Some(serial) = serial {
            let id = match dev.partition {
                Some(n) => format!("virtio-{serial}-part{n}"),
                None => format!("virtio-{serial}"),
            };
            link("by-id", &id, dev);
        }
    }
}
