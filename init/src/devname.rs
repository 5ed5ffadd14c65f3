//! Device node paths from the kernel's DEVNAME. The kernel only ever
//! sends relative names like `vda1` or `input/event0`, but the init
//! checks rather than trusts: a name that is absolute, empty, has `.` or
//! `..` components, NULs, or is absurdly long never becomes a path, so no
//! uevent can make a node outside /dev.

use std::path::PathBuf;

/// Longest DEVNAME accepted (PATH_MAX is the kernel's own bound).
pub const DEVNAME_MAX: usize = 4096;
pub const DEV: &str = "/dev";

/// `/dev/DEVNAME`, or None for a name that would escape /dev.
pub fn dev_path(devname: &[u8]) -> Option<PathBuf> {
    if devname.is_empty()
        || devname.len() > DEVNAME_MAX
        || devname.contains(&0)
        || devname.starts_with(b"/")
    {
        return None;
    }
    let name = std::str::from_utf8(devname).ok()?;
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    Some(PathBuf::from(DEV).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_kernel_names_and_refuses_escapes() {
        assert_eq!(dev_path(b"vda1"), Some(PathBuf::from("/dev/vda1")));
        assert_eq!(
            dev_path(b"input/event0"),
            Some(PathBuf::from("/dev/input/event0"))
        );
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"../etc/passwd",
            b"a/../../x",
            b"a//b",
            b"./x",
            b"x/.",
            b"a\0b",
            b"bus/",
        ] {
            assert_eq!(dev_path(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn never_leaves_dev(name in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(p) = dev_path(&name) {
                prop_assert!(p.starts_with("/dev/"));
                prop_assert!(p.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_))));
            }
        }
    }
}
