//! Bookkeeping over a stream of events (pure, no syscalls): SEQNUM gaps, and
//! de-duplication of the walk against the socket.
//!
//! Not part of kestrel-uevent (the init does not use it yet): the fixture
//! and live-kernel tests include this file with `#[path]`, to show the
//! captured streams have no gap and de-duplicate exactly.

// Each includer uses its own part of this file.
#![allow(dead_code)]

use std::collections::HashSet;

use kestrel_uevent::{Action, Uevent};

/// What one SEQNUM says about the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqnumCheck {
    /// The first SEQNUM seen.
    First,
    /// Exactly one more than the previous one.
    Next,
    /// `missed` SEQNUMs between the previous one and this one never arrived.
    Gap {
        /// How many numbers were skipped.
        missed: u64,
    },
    /// Not larger than the previous one: a replay or a second source.
    Stale,
}

/// Watches the kernel's SEQNUM for gaps, which reveal lost events.
///
/// The kernel numbers every uevent from one global counter and sends them in
/// order. A gap is a strong hint, not proof, of loss: the counter also
/// advances for events broadcast only into another network namespace (a
/// container's network devices), which this namespace's socket never gets.
#[derive(Clone, Debug, Default)]
pub struct SeqnumTracker {
    last: Option<u64>,
    missed: u64,
    gaps: u64,
}

impl SeqnumTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `seqnum` and says how it follows the previous one.
    pub fn observe(&mut self, seqnum: u64) -> SeqnumCheck {
        let check = match self.last {
            None => SeqnumCheck::First,
            Some(last) if seqnum <= last => return SeqnumCheck::Stale,
            Some(last) if seqnum == last + 1 => SeqnumCheck::Next,
            Some(last) => SeqnumCheck::Gap {
                missed: seqnum - last - 1,
            },
        };
        if let SeqnumCheck::Gap { missed } = check {
            self.missed = self.missed.saturating_add(missed);
            self.gaps += 1;
        }
        self.last = Some(seqnum);
        check
    }

    /// Records the event's SEQNUM, if it has one (walk events do not).
    pub fn observe_event(&mut self, ev: &Uevent) -> Option<SeqnumCheck> {
        ev.seqnum().map(|s| self.observe(s))
    }

    /// The last SEQNUM seen.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Total SEQNUMs skipped so far.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// How many gaps were seen.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }
}

/// De-duplicates the coldplug walk against the socket by DEVPATH and SEQNUM.
///
/// The socket is opened before the walk, so a device that appears during the
/// walk is both in the walk and in an `add` on the socket; feed the walk's
/// events first, then the socket's, and process only those admitted:
/// - an event whose SEQNUM is not above the last admitted one is a replay;
/// - an `add` for a DEVPATH already present is a duplicate (this includes
///   synthetic `add`s triggered for devices the walk already returned);
/// - `remove` forgets the DEVPATH, `move` renames it (`DEVPATH_OLD`);
/// - every other action is admitted and marks the DEVPATH present.
#[derive(Clone, Debug, Default)]
pub struct Dedup {
    present: HashSet<Box<[u8]>>,
    last_seqnum: Option<u64>,
    duplicates: u64,
}

impl Dedup {
    /// An empty de-duplicator.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when `ev` is new and should be processed.
    pub fn admit(&mut self, ev: &Uevent) -> bool {
        if let Some(seqnum) = ev.seqnum() {
            if self.last_seqnum.is_some_and(|last| seqnum <= last) {
                self.duplicates += 1;
                return false;
            }
            self.last_seqnum = Some(seqnum);
        }
        let devpath = ev.devpath();
        match ev.action() {
            Action::Add => {
                if self.present.contains(devpath) {
                    self.duplicates += 1;
                    return false;
                }
                self.present.insert(devpath.into());
            }
            Action::Remove => {
                self.present.remove(devpath);
            }
            Action::Move => {
                if let Some(old) = ev.get(b"DEVPATH_OLD") {
                    self.present.remove(old);
                }
                self.present.insert(devpath.into());
            }
            Action::Change | Action::Online | Action::Offline | Action::Bind | Action::Unbind => {
                if !self.present.contains(devpath) {
                    self.present.insert(devpath.into());
                }
            }
        }
        true
    }

    /// True when a device at `devpath` is present.
    pub fn is_present(&self, devpath: &[u8]) -> bool {
        self.present.contains(devpath)
    }

    /// How many devices are present.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// True when no device is present.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// How many events were refused as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kestrel_uevent::{parse_netlink, parse_sysfs};

    fn nl(s: &str) -> Uevent {
        parse_netlink(Bytes::from(s.replace('|', "\0"))).unwrap()
    }

    #[test]
    fn seqnum_gaps_are_found() {
        let mut t = SeqnumTracker::new();
        assert_eq!(t.observe(10), SeqnumCheck::First);
        assert_eq!(t.observe(11), SeqnumCheck::Next);
        assert_eq!(t.observe(15), SeqnumCheck::Gap { missed: 3 });
        assert_eq!(t.observe(15), SeqnumCheck::Stale);
        assert_eq!(t.observe(3), SeqnumCheck::Stale);
        assert_eq!(t.observe(16), SeqnumCheck::Next);
        assert_eq!(
            t.observe(u64::MAX),
            SeqnumCheck::Gap {
                missed: u64::MAX - 17
            }
        );
        assert_eq!(
            (t.last(), t.missed(), t.gaps()),
            (Some(u64::MAX), u64::MAX - 14, 2)
        );
        let walk = parse_sysfs(b"/devices/a", Bytes::new()).unwrap();
        assert_eq!(t.observe_event(&walk), None);
    }

    #[test]
    fn walk_then_socket_is_deduplicated() {
        let mut d = Dedup::new();
        let walked = parse_sysfs(b"/devices/a", Bytes::from_static(b"X=1\n")).unwrap();
        assert!(d.admit(&walked));
        // The same device's add, queued while the walk ran: a duplicate.
        assert!(!d.admit(&nl("add@/devices/a|SEQNUM=5|")));
        // A device the walk missed gets through.
        assert!(d.admit(&nl("add@/devices/b|SEQNUM=6|")));
        // Replays by SEQNUM are refused whatever their action.
        assert!(!d.admit(&nl("change@/devices/b|SEQNUM=6|")));
        assert!(d.admit(&nl("change@/devices/b|SEQNUM=7|")));
        // Remove then add again is a new device.
        assert!(d.admit(&nl("remove@/devices/a|SEQNUM=8|")));
        assert!(!d.is_present(b"/devices/a"));
        assert!(d.admit(&nl("add@/devices/a|SEQNUM=9|")));
        // Move renames.
        assert!(d.admit(&nl("move@/devices/c|DEVPATH_OLD=/devices/b|SEQNUM=10|")));
        assert!(!d.is_present(b"/devices/b"));
        assert!(d.is_present(b"/devices/c"));
        assert_eq!(d.len(), 2);
        assert_eq!(d.duplicates(), 2);
    }
}
