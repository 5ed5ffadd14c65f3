//! virtio-console ports by name. The kernel announces each port as a
//! `virtio-ports` device (`vport0p1`); the name the host gave it is the
//! device's `name` attribute, set when the host side connects (the kernel
//! then sends a `change`). Like udev, the init links
//! /dev/virtio-ports/NAME → ../vportNpM.

use crate::roots::Roots;
use crate::sys::Sys;
use kestrel_uevent::{Action, Uevent};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SUBSYSTEM: &[u8] = b"virtio-ports";
pub const PORTS_DIR: &str = "virtio-ports";

/// The virtio-console ports seen so far: device name → devpath.
#[derive(Debug, Default)]
pub struct Ports {
    by_dev: BTreeMap<String, PathBuf>,
}

impl Ports {
    /// Tracks a port device from its uevent; other devices are ignored.
    pub fn seen(&mut self, ev: &Uevent) {
        if ev.subsystem() != Some(SUBSYSTEM) {
            return;
        }
        let Some(dev) = ev.devname().and_then(|d| std::str::from_utf8(d).ok()) else {
            return;
        };
        if ev.action() == Action::Remove {
            self.by_dev.remove(dev);
        } else {
            let devpath = String::from_utf8_lossy(ev.devpath()).into_owned();
            self.by_dev.insert(
                dev.to_owned(),
                PathBuf::from(devpath.trim_start_matches('/')),
            );
        }
    }

    /// Every named port: (name, device node). A name becomes a path
    /// component, so anything that could leave /dev/virtio-ports is refused.
    pub fn named(&self, roots: &Roots) -> Vec<(String, PathBuf)> {
        let out: Vec<(String, PathBuf)> = self
            .by_dev
            .iter()
            .filter_map(|(dev, devpath)| {
                let name = std::fs::read_to_string(roots.sys.join(devpath).join("name")).ok()?;
                let name = name.trim_end_matches('\n');
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return None;
                }
                Some((name.to_owned(), roots.dev.join(dev)))
            })
            .collect();
        // In device order (vport0p1, vport0p2...), as the map holds them.
        out
    }

    /// The node of the port called `name`, once it has its name.
    pub fn find(&self, roots: &Roots, name: &str) -> Option<PathBuf> {
        self.named(roots)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, node)| node)
    }

    /// Adds /dev/virtio-ports/NAME → ../vportNpM for each named port.
    pub fn make_links(&self, sys: &dyn Sys, roots: &Roots) {
        let dir = roots.dev.join(PORTS_DIR);
        let _ = sys.mkdir_all(&dir);
        for (name, node) in self.named(roots) {
            let Some(file) = node.file_name() else {
                continue;
            };
            let _ = sys.symlink(&Path::new("..").join(file), &dir.join(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};
    use bytes::Bytes;

    fn port_event(dev: &str, devpath: &str) -> Uevent {
        let text = format!("add@{devpath}\0ACTION=add\0DEVPATH={devpath}\0SUBSYSTEM=virtio-ports\0DEVNAME={dev}\0SEQNUM=1\0");
        kestrel_uevent::parse_netlink(Bytes::from(text.into_bytes())).unwrap()
    }

    #[test]
    fn names_ports_and_refuses_escaping_names() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        let mut ports = Ports::default();
        for (dev, name) in [
            ("vport0p1", "org.kestrel.events\n"),
            ("vport0p2", "../../etc\n"),
            ("vport0p3", ""),
        ] {
            let devpath = format!("/devices/virtio0/virtio-ports/{dev}");
            let attr = roots.sys.join(devpath.trim_start_matches('/'));
            std::fs::create_dir_all(&attr).unwrap();
            std::fs::write(attr.join("name"), name).unwrap();
            ports.seen(&port_event(dev, &devpath));
        }
        assert_eq!(
            ports.named(&roots),
            vec![("org.kestrel.events".to_owned(), roots.dev.join("vport0p1"))]
        );
        assert_eq!(
            ports.find(&roots, "org.kestrel.events"),
            Some(roots.dev.join("vport0p1"))
        );
        assert_eq!(ports.find(&roots, "other"), None);
        let sys = Recorder::default();
        ports.make_links(&sys, &roots);
        assert_eq!(
            sys.calls(),
            vec![Call::Symlink {
                target: PathBuf::from("../vport0p1"),
                link: roots.dev.join("virtio-ports/org.kestrel.events")
            }]
        );
    }
}
