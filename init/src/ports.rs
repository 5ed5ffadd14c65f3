//! virtio-console ports by name: /sys/class/virtio-ports/vportNpM/name
//! holds the name the host gave the port; the node is /dev/vportNpM. Like
//! udev, the init adds /dev/virtio-ports/NAME links.

use std::path::{Path, PathBuf};

pub const VIRTIO_PORTS_CLASS: &str = "/sys/class/virtio-ports";
pub const VIRTIO_PORTS_DIR: &str = "/dev/virtio-ports";

/// Every named port now present: (name, device node).
pub fn list_ports(class_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return Vec::new();
    };
    let mut ports: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            let name = name.trim_end_matches('\n');
            // A name becomes a path component: refuse anything that could
            // leave /dev/virtio-ports.
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return None;
            }
            Some((name.to_owned(), Path::new("/dev").join(e.file_name())))
        })
        .collect();
    ports.sort();
    ports
}

/// Adds /dev/virtio-ports/NAME -> ../vportNpM for each port.
pub fn link_ports(ports: &[(String, PathBuf)]) {
    let _ = std::fs::create_dir_all(VIRTIO_PORTS_DIR);
    for (name, dev) in ports {
        let Some(node) = dev.file_name() else {
            continue;
        };
        let link = Path::new(VIRTIO_PORTS_DIR).join(name);
        let _ = std::os::unix::fs::symlink(Path::new("..").join(node), link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_named_ports_and_refuses_escaping_names() {
        let dir = std::env::temp_dir().join(format!("kestrel-ports-{}", std::process::id()));
        for (port, name) in [
            ("vport0p1", "org.kestrel.events\n"),
            ("vport0p2", "../../etc\n"),
            ("vport0p3", ""),
        ] {
            std::fs::create_dir_all(dir.join(port)).unwrap();
            std::fs::write(dir.join(port).join("name"), name).unwrap();
        }
        assert_eq!(
            list_ports(&dir),
            vec![(
                "org.kestrel.events".to_owned(),
                PathBuf::from("/dev/vport0p1")
            )]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
