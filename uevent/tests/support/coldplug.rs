//! Triggered coldplug: ask the kernel to re-announce devices with synthetic
//! events (`echo "add UUID" > /sys/<devpath>/uevent`), and know when every
//! one of them came back, without a sleep or a settle timeout.
//!
//! Since Linux 4.13 the kernel tags a synthetic event with `SYNTH_UUID=UUID`.
//! The write is synchronous: `kobject_synth_uevent` builds the event and
//! `netlink_broadcast` queues it on every listening socket before `write`
//! returns. So once the last write returned, every event the writes produced
//! is already in the socket's queue, and draining the socket until it is empty
//! (`recv` gives `Ok(None)`) shows them all. A device whose kset filters
//! events (no bus and no class; its `uevent` file reads empty) accepts the
//! write and sends nothing: [`Trigger::finish_after_drain`] names those.
//!
//! Not part of kestrel-uevent: the init does not trigger (it walks /sys
//! after subscribing, see `walk` and the de-duplication in `track.rs`). The
//! fixture capture (`examples/guest-capture.rs`), `examples/uevent-dump.rs`
//! and the live-kernel test include this file with `#[path]`.

// Each includer uses its own part of this file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kestrel_uevent::walk::{UEVENT_FILE, WALK_MAX_DEVICES};
use kestrel_uevent::{Action, Uevent};

/// The most synthetic events one [`Trigger`] tracks at once.
pub const TRIGGER_MAX_PENDING: usize = WALK_MAX_DEVICES;

/// Length of a UUID in the kernel's text form (`uuid_is_valid`).
const UUID_LEN: usize = 36;

/// A UUID for `SYNTH_UUID`, in the text form the kernel accepts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SynthUuid([u8; UUID_LEN]);

impl SynthUuid {
    /// The UUID made of a 64-bit batch id and a 64-bit index:
    /// `bbbbbbbb-bbbb-bbbb-iiii-iiiiiiiiiiii`. The kernel only checks the
    /// form (hex digits and dashes), not a version.
    pub fn new(batch: u64, index: u64) -> SynthUuid {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = (u128::from(batch) << 64) | u128::from(index);
        let mut out = [b'-'; UUID_LEN];
        let mut nibble = 0;
        for (i, slot) in out.iter_mut().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            let shift = 124 - 4 * nibble;
            let digit = usize::try_from((bits >> shift) & 0xf).unwrap_or(0);
            *slot = HEX.get(digit).copied().unwrap_or(b'0');
            nibble += 1;
        }
        SynthUuid(out)
    }

    /// The UUID as text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the text form (as found in `SYNTH_UUID`), lowercase only, as
    /// [`SynthUuid::new`] writes it.
    pub fn from_bytes(bytes: &[u8]) -> Option<SynthUuid> {
        let arr: [u8; UUID_LEN] = bytes.try_into().ok()?;
        let ok = arr.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
        ok.then_some(SynthUuid(arr))
    }
}

impl std::fmt::Debug for SynthUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

/// Where triggers are written: the real sysfs, or a fake in tests.
pub trait UeventWriter {
    /// Writes `content` to the file at `path` in one `write`.
    fn write_uevent(&mut self, path: &Path, content: &[u8]) -> io::Result<()>;
}

/// Writes to the real `uevent` files.
#[derive(Clone, Copy, Debug, Default)]
pub struct SysfsWriter;

impl UeventWriter for SysfsWriter {
    fn write_uevent(&mut self, path: &Path, content: &[u8]) -> io::Result<()> {
        // One write: sysfs passes each write to `uevent_store` as a whole.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(content)
    }
}

/// Writes synthetic events and tracks which have come back.
#[derive(Debug)]
pub struct Trigger {
    batch: u64,
    next: u64,
    pending: HashMap<SynthUuid, Box<[u8]>>,
    returned: u64,
    failed: Vec<(PathBuf, io::Error)>,
}

impl Trigger {
    /// A trigger whose UUIDs start with `batch`. Pick a batch unlikely to be
    /// used by anyone else triggering at the same time (see
    /// [`Trigger::with_unique_batch`]).
    pub fn new(batch: u64) -> Trigger {
        Trigger {
            batch,
            next: 0,
            pending: HashMap::new(),
            returned: 0,
            failed: Vec::new(),
        }
    }

    /// A trigger with a batch id from the wall clock, the boot clock and
    /// the process id (a VM's wall clock may start at the epoch; its boot
    /// clock then still differs from run to run by nanoseconds).
    pub fn with_unique_batch() -> Trigger {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let boot = (boot.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(boot.tv_nsec as u64);
        let pid = u64::from(std::process::id());
        Trigger::new(wall ^ boot.rotate_left(32) ^ (pid << 40))
    }

    /// Writes `ACTION UUID` to `<sys><devpath>/uevent`, and remembers the
    /// UUID. A failed write is recorded in [`Trigger::failed`] (the device
    /// may have gone away) and not waited for.
    pub fn trigger(
        &mut self,
        writer: &mut dyn UeventWriter,
        sys: &Path,
        devpath: &[u8],
        action: Action,
    ) -> anyhow::Result<Option<SynthUuid>> {
        if self.pending.len() >= TRIGGER_MAX_PENDING {
            anyhow::bail!("more than {TRIGGER_MAX_PENDING} synthetic events pending");
        }
        let uuid = SynthUuid::new(self.batch, self.next);
        self.next += 1;
        let mut path = sys.as_os_str().to_owned();
        path.push(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(devpath));
        let path = PathBuf::from(path).join(UEVENT_FILE);
        let mut content = Vec::with_capacity(16 + UUID_LEN);
        content.extend_from_slice(action.as_bytes());
        content.push(b' ');
        content.extend_from_slice(uuid.as_bytes());
        match writer.write_uevent(&path, &content) {
            Ok(()) => {
                self.pending.insert(uuid, devpath.into());
                Ok(Some(uuid))
            }
            Err(e) => {
                self.failed.push((path, e));
                Ok(None)
            }
        }
    }

    /// Triggers `add` for every device, typically a walk's.
    pub fn trigger_all<'a>(
        &mut self,
        writer: &mut dyn UeventWriter,
        sys: &Path,
        devices: impl IntoIterator<Item = &'a Uevent>,
    ) -> anyhow::Result<usize> {
        let mut written = 0;
        for ev in devices {
            if self
                .trigger(writer, sys, ev.devpath(), Action::Add)?
                .is_some()
            {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Feeds a received event; true when it answered one of our writes.
    pub fn observe(&mut self, ev: &Uevent) -> bool {
        let Some(uuid) = ev.synth_uuid().and_then(SynthUuid::from_bytes) else {
            return false;
        };
        if self.pending.remove(&uuid).is_some() {
            self.returned += 1;
            true
        } else {
            false
        }
    }

    /// True when every successful write's event has come back.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// Devpaths still waited for.
    pub fn pending(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.values().map(|d| &d[..])
    }

    /// How many events came back.
    pub fn returned(&self) -> u64 {
        self.returned
    }

    /// Writes that failed, with the path and the cause.
    pub fn failed(&self) -> &[(PathBuf, io::Error)] {
        &self.failed
    }

    /// Call once the socket was drained to empty after the last write (and
    /// without an overflow): the kernel delivers synchronously, so what is
    /// still pending will never come (filtered devices). Returns their
    /// devpaths, sorted, and completes the trigger.
    pub fn finish_after_drain(&mut self) -> Vec<Box<[u8]>> {
        let mut silent: Vec<_> = self.pending.drain().map(|(_, d)| d).collect();
        silent.sort_unstable();
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kestrel_uevent::parse_netlink;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(PathBuf, Vec<u8>)>,
        refuse: Option<PathBuf>,
    }

    impl UeventWriter for Recorder {
        fn write_uevent(&mut self, path: &Path, content: &[u8]) -> io::Result<()> {
            if self.refuse.as_deref() == Some(path) {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            self.writes.push((path.to_path_buf(), content.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn uuid_has_the_kernel_form() {
        let u = SynthUuid::new(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(u.as_bytes(), b"01234567-89ab-cdef-fedc-ba9876543210");
        assert_eq!(SynthUuid::from_bytes(u.as_bytes()), Some(u));
        assert_eq!(
            SynthUuid::new(0, 1).as_bytes(),
            b"00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(SynthUuid::from_bytes(b"0"), None);
        assert_eq!(
            SynthUuid::from_bytes(b"01234567-89ab-cdef-fedc-ba987654321G"),
            None
        );
        assert_eq!(
            SynthUuid::from_bytes(b"01234567089ab-cdef-fedc-ba9876543210"),
            None
        );
    }

    #[test]
    fn writes_add_uuid_and_completes_when_all_came_back() {
        let mut w = Recorder {
            refuse: Some(PathBuf::from("/sys/devices/gone/uevent")),
            ..Recorder::default()
        };
        let mut t = Trigger::new(7);
        let sys = Path::new("/sys");
        let a = t
            .trigger(&mut w, sys, b"/devices/a", Action::Add)
            .unwrap()
            .unwrap();
        let b = t
            .trigger(&mut w, sys, b"/devices/b", Action::Add)
            .unwrap()
            .unwrap();
        assert_eq!(
            t.trigger(&mut w, sys, b"/devices/gone", Action::Add)
                .unwrap(),
            None
        );
        assert_eq!(
            w.writes,
            [
                (
                    PathBuf::from("/sys/devices/a/uevent"),
                    b"add 00000000-0000-0007-0000-000000000000".to_vec()
                ),
                (
                    PathBuf::from("/sys/devices/b/uevent"),
                    b"add 00000000-0000-0007-0000-000000000001".to_vec()
                ),
            ]
        );
        assert_eq!(t.failed().len(), 1);
        assert!(!t.is_complete());
        let event = |devpath: &str, uuid: &[u8]| {
            let mut d = format!("add@{devpath}\0SYNTH_UUID=").into_bytes();
            d.extend_from_slice(uuid);
            d.push(0);
            parse_netlink(Bytes::from(d)).unwrap()
        };
        // Someone else's trigger, and an untagged event, are not ours.
        assert!(!t.observe(&event("/devices/a", SynthUuid::new(8, 0).as_bytes())));
        assert!(!t.observe(&event("/devices/a", b"0")));
        assert!(t.observe(&event("/devices/a", a.as_bytes())));
        assert!(!t.observe(&event("/devices/a", a.as_bytes())));
        assert_eq!(t.pending().collect::<Vec<_>>(), [&b"/devices/b"[..]]);
        assert!(t.observe(&event("/devices/b", b.as_bytes())));
        assert!(t.is_complete());
        assert_eq!(t.returned(), 2);
    }

    #[test]
    fn finish_after_drain_names_silent_devices() {
        let mut w = Recorder::default();
        let mut t = Trigger::new(1);
        let sys = Path::new("/s");
        t.trigger(&mut w, sys, b"/devices/z", Action::Add).unwrap();
        t.trigger(&mut w, sys, b"/devices/y", Action::Change)
            .unwrap();
        assert_eq!(
            w.writes[1].1.split(|&b| b == b' ').next().unwrap(),
            b"change"
        );
        let silent = t.finish_after_drain();
        assert_eq!(
            silent,
            [
                b"/devices/y".to_vec().into_boxed_slice(),
                b"/devices/z".to_vec().into_boxed_slice()
            ]
        );
        assert!(t.is_complete());
    }
}
