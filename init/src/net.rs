//! The network, set by the init itself, without a DHCP client: loopback
//! is always up; with `--net` the host bakes the address qemu's user
//! network gives (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3), and the
//! first ethernet interface gets it, a default route and a resolv.conf in
//! the payload's root.

use crate::log;
use crate::roots::Roots;
use crate::sys;
use kestrel_proto::config::Net;
use std::path::Path;

const LOOPBACK: &str = "lo";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface in {0} (did the network driver load? see the module records)")]
    NoInterface(String),
    #[error("failed to {what} {iface}: {source}")]
    Configure {
        what: &'static str,
        iface: String,
        source: std::io::Error,
    },
    #[error("failed to write {path}: {source}")]
    Resolv {
        path: String,
        source: std::io::Error,
    },
}

/// Loopback up: programs expect 127.0.0.1 to work.
pub fn loopback_up() {
    if let Err(e) = sys::link_up(LOOPBACK) {
        log::warn(&format!("failed to bring {LOOPBACK} up: {e}"));
    }
}

/// The netmask of a prefix length (24 → 255.255.255.0).
pub fn netmask(prefix: u8) -> [u8; 4] {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    bits.to_be_bytes()
}

/// The first interface that is not loopback, by name.
fn first_interface(roots: &Roots) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(roots.sys.join("class/net"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != LOOPBACK)
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Address, route and DNS for the first interface; resolv.conf goes in
/// `payload_root`'s /etc (a link there, e.g. to systemd's stub, is
/// replaced: in an overlay root the host's file is never touched).
pub fn configure(roots: &Roots, net: &Net, payload_root: &Path) -> Result<String, NetError> {
    let iface = first_interface(roots)
        .ok_or_else(|| NetError::NoInterface(roots.sys.join("class/net").display().to_string()))?;
    let step = |what, done: std::io::Result<()>| {
        done.map_err(|source| NetError::Configure {
            what,
            iface: iface.clone(),
            source,
        })
    };
    step(
        "set the address of",
        sys::set_address(&iface, net.addr, netmask(net.prefix)),
    )?;
    step("bring up", sys::link_up(&iface))?;
    step(
        "add the default route through",
        sys::add_default_route(net.gateway),
    )?;
    write_resolv_conf(payload_root, net.dns)?;
    Ok(iface)
}

fn write_resolv_conf(payload_root: &Path, dns: [u8; 4]) -> Result<(), NetError> {
    let etc = payload_root.join("etc");
    let path = etc.join("resolv.conf");
    let fail = |source| NetError::Resolv {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&etc).map_err(fail)?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let [a, b, c, d] = dns;
    std::fs::write(&path, format!("nameserver {a}.{b}.{c}.{d}\n")).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), [255, 255, 255, 0]);
        assert_eq!(netmask(32), [255; 4]);
        assert_eq!(netmask(0), [0; 4]);
        assert_eq!(netmask(20), [255, 255, 240, 0]);
    }

    #[test]
    fn picks_the_first_interface_and_writes_resolv_conf_over_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots::under(dir.path());
        for n in ["lo", "eth1", "eth0"] {
            std::fs::create_dir_all(roots.sys.join("class/net").join(n)).unwrap();
        }
        assert_eq!(first_interface(&roots).as_deref(), Some("eth0"));
        let root = dir.path().join("payload");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            root.join("etc/resolv.conf"),
        )
        .unwrap();
        write_resolv_conf(&root, [10, 0, 2, 3]).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        assert!(!root
            .join("etc/resolv.conf")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
    }
}
