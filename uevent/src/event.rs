//! The uevent model and its two pure parsers (no syscalls, never panics).
//!
//! A [`Uevent`] owns one [`Bytes`] buffer and describes its parts by offsets
//! into it, so parsing a datagram allocates nothing: the socket hands over the
//! received bytes and the event borrows from them for as long as it lives.

use bytes::{Bytes, BytesMut};

use crate::UeventError;

/// The largest uevent this crate accepts, in bytes: a netlink datagram, or a
/// devpath plus the content of its sysfs `uevent` file.
///
/// The kernel builds a uevent's environment in a 2048-byte buffer
/// (`UEVENT_BUFFER_SIZE`) plus the `ACTION@DEVPATH` header, and a sysfs
/// attribute is at most one page, so 8 KiB bounds both with room to spare.
pub const UEVENT_MAX: usize = 8192;

/// The first bytes of a datagram in udev's own multicast format
/// (`struct monitor_netlink_header`, group 2), which this crate refuses.
pub const LIBUDEV_MAGIC_PREFIX: &[u8] = b"libudev\0";

/// What happened to the device (the kernel's `kobject_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `add`
    Add,
    /// `remove`
    Remove,
    /// `change`
    Change,
    /// `move`
    Move,
    /// `online`
    Online,
    /// `offline`
    Offline,
    /// `bind`
    Bind,
    /// `unbind`
    Unbind,
}

impl Action {
    /// Every action, in the kernel's order (`kobject_actions[]`).
    pub const ALL: [Action; 8] = [
        Action::Add,
        Action::Remove,
        Action::Change,
        Action::Move,
        Action::Online,
        Action::Offline,
        Action::Bind,
        Action::Unbind,
    ];

    /// The action as the kernel spells it.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Action::Add => b"add",
            Action::Remove => b"remove",
            Action::Change => b"change",
            Action::Move => b"move",
            Action::Online => b"online",
            Action::Offline => b"offline",
            Action::Bind => b"bind",
            Action::Unbind => b"unbind",
        }
    }

    /// The action named by `bytes`, exactly as the kernel spells it.
    pub fn from_bytes(bytes: &[u8]) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_bytes() == bytes)
    }
}

/// A byte range of the event's buffer. `u16` suffices because every buffer is
/// at most [`UEVENT_MAX`] bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u16,
    len: u16,
}

impl Span {
    fn new(start: usize, len: usize) -> Span {
        // Callers have checked the buffer against UEVENT_MAX (< u16::MAX), so
        // the conversions cannot fail; saturate rather than panic regardless.
        Span {
            start: u16::try_from(start).unwrap_or(u16::MAX),
            len: u16::try_from(len).unwrap_or(0),
        }
    }

    fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let start = usize::from(self.start);
        buf.get(start..start + usize::from(self.len)).unwrap_or(&[])
    }
}

/// Where the event came from, which decides the record separator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `ACTION@DEVPATH\0KEY=VALUE\0...`
    Netlink,
    /// devpath bytes followed by `KEY=VALUE\n...`
    Sysfs,
}

impl Format {
    const fn separator(self) -> u8 {
        match self {
            Format::Netlink => 0,
            Format::Sysfs => b'\n',
        }
    }
}

/// One kernel uevent: its action, devpath and every `KEY=VALUE` property, as
/// raw bytes (values are not assumed to be UTF-8).
///
/// Cloning is cheap (a reference count and a few offsets).
#[derive(Clone)]
pub struct Uevent {
    buf: Bytes,
    format: Format,
    action: Action,
    devpath: Span,
    /// Start of the first `KEY=VALUE` record.
    body: u16,
    subsystem: Option<Span>,
    devtype: Option<Span>,
    devname: Option<Span>,
    driver: Option<Span>,
    modalias: Option<Span>,
    seqnum: Option<u64>,
    major: Option<u32>,
    minor: Option<u32>,
}

impl Uevent {
    /// What happened (always [`Action::Add`] for the coldplug walk).
    pub fn action(&self) -> Action {
        self.action
    }

    /// The action as the kernel spells it (`add`, `remove`, ...).
    pub fn action_bytes(&self) -> &'static [u8] {
        self.action.as_bytes()
    }

    /// The device's path below /sys, e.g. `/devices/pci0000:00/0000:00:02.0`.
    pub fn devpath(&self) -> &[u8] {
        self.devpath.of(&self.buf)
    }

    /// The value of the first record named `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// `SUBSYSTEM`: the bus or class name (`pci`, `block`, `net`, ...).
    pub fn subsystem(&self) -> Option<&[u8]> {
        self.subsystem.map(|s| s.of(&self.buf))
    }

    /// `DEVTYPE` (`disk`, `partition`, `usb_device`, ...).
    pub fn devtype(&self) -> Option<&[u8]> {
        self.devtype.map(|s| s.of(&self.buf))
    }

    /// `DEVNAME`: the node's name below /dev (`vda`, `input/event0`, ...).
    pub fn devname(&self) -> Option<&[u8]> {
        self.devname.map(|s| s.of(&self.buf))
    }

    /// `DRIVER`: the bound driver's name.
    pub fn driver(&self) -> Option<&[u8]> {
        self.driver.map(|s| s.of(&self.buf))
    }

    /// `MODALIAS`: the string matched against modules.alias.
    pub fn modalias(&self) -> Option<&[u8]> {
        self.modalias.map(|s| s.of(&self.buf))
    }

    /// `SEQNUM`: the kernel's global uevent sequence number (netlink only).
    pub fn seqnum(&self) -> Option<u64> {
        self.seqnum
    }

    /// `MAJOR` and `MINOR`, when both are present.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        Some((self.major?, self.minor?))
    }

    /// `DEVMODE`: the node's permission bits (octal in the event, e.g. `0666`),
    /// set by drivers that want other than 0600. `None` when absent or not
    /// octal.
    pub fn devmode(&self) -> Option<u32> {
        let v = self.get(b"DEVMODE")?;
        if v.is_empty() || v.len() > 7 {
            return None;
        }
        v.iter().try_fold(0u32, |acc, &b| match b {
            b'0'..=b'7' => Some(acc * 8 + u32::from(b - b'0')),
            _ => None,
        })
    }

    /// `DEVUID`: the node's owner, when the driver sets one.
    pub fn devuid(&self) -> Option<u32> {
        parse_decimal(self.get(b"DEVUID")?, "DEVUID").ok()
    }

    /// `DEVGID`: the node's group, when the driver sets one.
    pub fn devgid(&self) -> Option<u32> {
        parse_decimal(self.get(b"DEVGID")?, "DEVGID").ok()
    }

    /// `SYNTH_UUID`: the UUID written to a `uevent` file to trigger this event.
    pub fn synth_uuid(&self) -> Option<&[u8]> {
        self.get(b"SYNTH_UUID")
    }

    /// Every `KEY=VALUE` record in order, including `ACTION`, `DEVPATH`,
    /// `SUBSYSTEM` and `SEQNUM` when the source had them.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let body = self.buf.get(usize::from(self.body)..).unwrap_or(&[]);
        Records::new(body, self.format.separator()).filter_map(|(_, rec)| split_record(rec))
    }

    /// The whole buffer the event was parsed from (for a netlink event, the
    /// datagram exactly as received).
    pub fn raw(&self) -> &Bytes {
        &self.buf
    }

    /// True when the devpath is below `/devices/`: a device. The kernel also
    /// announces modules (`/module/...`), buses, drivers and classes
    /// (`/bus/...`, `/class/...`), which are not devices.
    pub fn is_device(&self) -> bool {
        self.devpath().starts_with(b"/devices/")
    }

    /// True when the event came from a netlink datagram, false for sysfs.
    pub fn is_from_netlink(&self) -> bool {
        self.format == Format::Netlink
    }
}

impl std::fmt::Debug for Uevent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Lossy<'a>(&'a [u8]);
        impl std::fmt::Debug for Lossy<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", String::from_utf8_lossy(self.0))
            }
        }
        let mut map = f.debug_map();
        map.entry(&"action", &self.action);
        map.entry(&"devpath", &Lossy(self.devpath()));
        for (k, v) in self.fields() {
            map.entry(&Lossy(k), &Lossy(v));
        }
        map.finish()
    }
}

/// Records of a body separated by `sep`, with each record's offset in the
/// body. A trailing separator does not yield an empty final record.
struct Records<'a> {
    body: &'a [u8],
    pos: usize,
    sep: u8,
}

impl<'a> Records<'a> {
    fn new(body: &'a [u8], sep: u8) -> Self {
        Records { body, pos: 0, sep }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.body.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let start = self.pos;
        match memchr::memchr(self.sep, rest) {
            Some(i) => {
                self.pos += i + 1;
                Some((start, rest.get(..i)?))
            }
            None => {
                self.pos = self.body.len();
                Some((start, rest))
            }
        }
    }
}

fn split_record(rec: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = memchr::memchr(b'=', rec)?;
    Some((rec.get(..eq)?, rec.get(eq + 1..)?))
}

fn lossy(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    String::from_utf8_lossy(bytes.get(..SHOWN).unwrap_or(bytes)).into_owned()
}

fn parse_decimal<T: TryFrom<u64>>(value: &[u8], key: &'static str) -> Result<T, UeventError> {
    let err = || UeventError::InvalidNumber { key };
    if value.is_empty() || value.len() > 20 {
        return Err(err());
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(err());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(err)?;
    }
    T::try_from(n).map_err(|_| err())
}

fn validate_devpath(devpath: &[u8]) -> Result<(), UeventError> {
    if devpath.first() != Some(&b'/') || memchr::memchr(0, devpath).is_some() {
        return Err(UeventError::InvalidDevpath(lossy(devpath)));
    }
    Ok(())
}

/// Scans the records of `buf[body..]`, validates them and builds the event.
fn scan(
    buf: Bytes,
    format: Format,
    action: Action,
    devpath: Span,
    body: usize,
) -> Result<Uevent, UeventError> {
    let mut ev = Uevent {
        format,
        action,
        devpath,
        body: u16::try_from(body).map_err(|_| UeventError::TooLarge {
            len: body,
            max: UEVENT_MAX,
        })?,
        subsystem: None,
        devtype: None,
        devname: None,
        driver: None,
        modalias: None,
        seqnum: None,
        major: None,
        minor: None,
        buf: Bytes::new(),
    };
    let bytes: &[u8] = &buf;
    let rest = bytes.get(body..).unwrap_or(&[]);
    for (off, rec) in Records::new(rest, format.separator()) {
        let offset = body + off;
        if rec.is_empty() {
            // The kernel writes empty lines into some sysfs files: x86's
            // cpu MODALIAS ends in '\n' and `uevent_show` adds another.
            if format == Format::Sysfs {
                continue;
            }
            return Err(UeventError::EmptyRecord { offset });
        }
        let (key, value) = split_record(rec).ok_or(UeventError::MissingEquals { offset })?;
        if key.is_empty() {
            return Err(UeventError::EmptyKey { offset });
        }
        let span = Span::new(offset + key.len() + 1, value.len());
        // The first record of a name wins, as in `get`.
        let first = |slot: &mut Option<Span>| {
            if slot.is_none() {
                *slot = Some(span);
            }
        };
        match key {
            b"SUBSYSTEM" => first(&mut ev.subsystem),
            b"DEVTYPE" => first(&mut ev.devtype),
            b"DEVNAME" => first(&mut ev.devname),
            b"DRIVER" => first(&mut ev.driver),
            b"MODALIAS" => first(&mut ev.modalias),
            b"SEQNUM" if ev.seqnum.is_none() => {
                ev.seqnum = Some(parse_decimal(value, "SEQNUM")?);
            }
            b"MAJOR" if ev.major.is_none() => ev.major = Some(parse_decimal(value, "MAJOR")?),
            b"MINOR" if ev.minor.is_none() => ev.minor = Some(parse_decimal(value, "MINOR")?),
            b"ACTION" if format == Format::Netlink && value != action.as_bytes() => {
                return Err(UeventError::Inconsistent { key: "ACTION" });
            }
            b"DEVPATH" if format == Format::Netlink && value != devpath.of(bytes) => {
                return Err(UeventError::Inconsistent { key: "DEVPATH" });
            }
            _ => {}
        }
    }
    ev.buf = buf;
    Ok(ev)
}

/// Parses a datagram as the kernel multicasts it on NETLINK_KOBJECT_UEVENT:
/// `ACTION@DEVPATH\0KEY=VALUE\0...`, NUL-terminated.
///
/// udev's `libudev` format is rejected with [`UeventError::LibudevFormat`].
/// `ACTION=` and `DEVPATH=` records, when present, must agree with the header.
pub fn parse_netlink(datagram: Bytes) -> Result<Uevent, UeventError> {
    let d: &[u8] = &datagram;
    if d.is_empty() {
        return Err(UeventError::Empty);
    }
    if d.len() > UEVENT_MAX {
        return Err(UeventError::TooLarge {
            len: d.len(),
            max: UEVENT_MAX,
        });
    }
    if d.starts_with(LIBUDEV_MAGIC_PREFIX) {
        return Err(UeventError::LibudevFormat);
    }
    if d.last() != Some(&0) {
        return Err(UeventError::Unterminated);
    }
    let header_end = memchr::memchr(0, d).ok_or(UeventError::Unterminated)?;
    let header = d.get(..header_end).ok_or(UeventError::MissingHeader)?;
    let at = memchr::memchr(b'@', header).ok_or(UeventError::MissingHeader)?;
    let action_bytes = header.get(..at).ok_or(UeventError::MissingHeader)?;
    let action = Action::from_bytes(action_bytes)
        .ok_or_else(|| UeventError::UnknownAction(lossy(action_bytes)))?;
    let devpath = header.get(at + 1..).ok_or(UeventError::MissingHeader)?;
    validate_devpath(devpath)?;
    let devpath = Span::new(at + 1, devpath.len());
    scan(datagram, Format::Netlink, action, devpath, header_end + 1)
}

/// Parses the content of `/sys/<devpath>/uevent` (`KEY=VALUE\n...`) for the
/// device at `devpath` (below /sys, starting with `/`). The action is
/// [`Action::Add`], as for the kernel's coldplug events.
///
/// The devpath and the content are copied into one buffer (one allocation of
/// at most [`UEVENT_MAX`] bytes); the walk builds that buffer directly.
pub fn parse_sysfs(devpath: &[u8], content: Bytes) -> Result<Uevent, UeventError> {
    let len = devpath.len() + content.len();
    if len > UEVENT_MAX {
        return Err(UeventError::TooLarge {
            len,
            max: UEVENT_MAX,
        });
    }
    let mut buf = BytesMut::with_capacity(len);
    buf.extend_from_slice(devpath);
    buf.extend_from_slice(&content);
    parse_sysfs_joined(buf.freeze(), devpath.len())
}

/// Parses `buf` = devpath bytes (the first `devpath_len`) followed by the
/// content of that device's `uevent` file.
pub(crate) fn parse_sysfs_joined(buf: Bytes, devpath_len: usize) -> Result<Uevent, UeventError> {
    if buf.len() > UEVENT_MAX {
        return Err(UeventError::TooLarge {
            len: buf.len(),
            max: UEVENT_MAX,
        });
    }
    let devpath = buf.get(..devpath_len).unwrap_or(&[]);
    validate_devpath(devpath)?;
    scan(
        buf,
        Format::Sysfs,
        Action::Add,
        Span::new(0, devpath_len),
        devpath_len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRTIO_NET: &[u8] = b"add@/devices/pci0000:00/0000:00:03.0/virtio0\0ACTION=add\0\
DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio0\0SUBSYSTEM=virtio\0\
MODALIAS=virtio:d00000001v00001AF4\0SEQNUM=1234\0";

    fn nl(bytes: &[u8]) -> Result<Uevent, UeventError> {
        parse_netlink(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn parses_kernel_datagram() {
        let ev = nl(VIRTIO_NET).unwrap();
        assert_eq!(ev.action(), Action::Add);
        assert_eq!(ev.devpath(), b"/devices/pci0000:00/0000:00:03.0/virtio0");
        assert_eq!(ev.subsystem(), Some(&b"virtio"[..]));
        assert_eq!(ev.modalias(), Some(&b"virtio:d00000001v00001AF4"[..]));
        assert_eq!(ev.seqnum(), Some(1234));
        assert_eq!(ev.devname(), None);
        assert_eq!(ev.major_minor(), None);
        assert_eq!(ev.get(b"ACTION"), Some(&b"add"[..]));
        assert_eq!(ev.fields().count(), 5);
        assert!(ev.is_from_netlink());
        assert!(ev.is_device());
        let module = nl(b"add@/module/virtio_blk\0ACTION=add\0SUBSYSTEM=module\0").unwrap();
        assert!(!module.is_device());
    }

    #[test]
    fn parses_block_device_with_numbers() {
        let ev = nl(b"change@/devices/virtual/block/loop0\0ACTION=change\0\
DEVPATH=/devices/virtual/block/loop0\0SUBSYSTEM=block\0MAJOR=7\0MINOR=0\0\
DEVNAME=loop0\0DEVTYPE=disk\0DISKSEQ=9\0SEQNUM=4242\0")
        .unwrap();
        assert_eq!(ev.action(), Action::Change);
        assert_eq!(ev.major_minor(), Some((7, 0)));
        assert_eq!(ev.devname(), Some(&b"loop0"[..]));
        assert_eq!(ev.devtype(), Some(&b"disk"[..]));
        assert_eq!(ev.get(b"DISKSEQ"), Some(&b"9"[..]));
        assert_eq!(ev.get(b"NOPE"), None);
    }

    #[test]
    fn node_ownership_and_mode() {
        let ev = nl(b"add@/devices/virtual/mem/null\0DEVNAME=null\0DEVMODE=0666\0").unwrap();
        assert_eq!(ev.devmode(), Some(0o666));
        assert_eq!((ev.devuid(), ev.devgid()), (None, None));
        let ev = nl(b"add@/devices/x\0DEVMODE=0689\0DEVUID=0\0DEVGID=5\0").unwrap();
        assert_eq!(ev.devmode(), None);
        assert_eq!((ev.devuid(), ev.devgid()), (Some(0), Some(5)));
    }

    #[test]
    fn values_are_raw_bytes() {
        let ev = nl(b"add@/devices/x\0NAME=\xff\xfe=x\0EMPTY=\0").unwrap();
        let fields: Vec<_> = ev.fields().collect();
        assert_eq!(
            fields,
            vec![
                (&b"NAME"[..], &b"\xff\xfe=x"[..]),
                (&b"EMPTY"[..], &b""[..])
            ]
        );
    }

    #[test]
    fn every_action_round_trips() {
        for a in Action::ALL {
            let mut d = a.as_bytes().to_vec();
            d.extend_from_slice(b"@/devices/a\0");
            assert_eq!(nl(&d).unwrap().action(), a);
            assert_eq!(Action::from_bytes(a.as_bytes()), Some(a));
        }
    }

    #[test]
    fn rejects_malformed_datagrams() {
        assert!(matches!(nl(b""), Err(UeventError::Empty)));
        assert!(matches!(
            nl(b"add@/devices/a"),
            Err(UeventError::Unterminated)
        ));
        assert!(matches!(
            nl(b"add/devices/a\0"),
            Err(UeventError::MissingHeader)
        ));
        assert!(matches!(
            nl(b"plug@/devices/a\0"),
            Err(UeventError::UnknownAction(_))
        ));
        assert!(matches!(
            nl(b"ADD@/devices/a\0"),
            Err(UeventError::UnknownAction(_))
        ));
        assert!(matches!(
            nl(b"add@devices/a\0"),
            Err(UeventError::InvalidDevpath(_))
        ));
        assert!(matches!(nl(b"add@\0"), Err(UeventError::InvalidDevpath(_))));
        assert!(matches!(
            nl(b"add@/a\0\0"),
            Err(UeventError::EmptyRecord { offset: 7 })
        ));
        assert!(matches!(
            nl(b"add@/a\0A=1\0\0"),
            Err(UeventError::EmptyRecord { offset: 11 })
        ));
        assert!(matches!(
            nl(b"add@/a\0NOEQ\0"),
            Err(UeventError::MissingEquals { offset: 7 })
        ));
        assert!(matches!(
            nl(b"add@/a\0=v\0"),
            Err(UeventError::EmptyKey { .. })
        ));
        assert!(matches!(
            nl(b"add@/a\0SEQNUM=12x\0"),
            Err(UeventError::InvalidNumber { key: "SEQNUM" })
        ));
        assert!(matches!(
            nl(b"add@/a\0MAJOR=4294967296\0"),
            Err(UeventError::InvalidNumber { key: "MAJOR" })
        ));
        assert!(matches!(
            nl(b"add@/a\0SEQNUM=99999999999999999999\0"),
            Err(UeventError::InvalidNumber { key: "SEQNUM" })
        ));
        assert!(matches!(
            nl(b"add@/a\0ACTION=remove\0"),
            Err(UeventError::Inconsistent { key: "ACTION" })
        ));
        assert!(matches!(
            nl(b"add@/a\0DEVPATH=/b\0"),
            Err(UeventError::Inconsistent { key: "DEVPATH" })
        ));
        let big = vec![b'a'; UEVENT_MAX + 1];
        assert!(matches!(nl(&big), Err(UeventError::TooLarge { .. })));
    }

    #[test]
    fn rejects_libudev_format() {
        let mut d = b"libudev\0\xfe\xed\xca\xfe".to_vec();
        d.extend_from_slice(&[0; 28]);
        d.extend_from_slice(b"ACTION=add\0DEVPATH=/devices/a\0");
        assert!(matches!(nl(&d), Err(UeventError::LibudevFormat)));
    }

    #[test]
    fn largest_datagram_is_accepted() {
        let mut d = b"add@/devices/a\0K=".to_vec();
        d.resize(UEVENT_MAX - 1, b'v');
        d.push(0);
        let ev = nl(&d).unwrap();
        assert_eq!(ev.get(b"K").unwrap().len(), UEVENT_MAX - 18);
    }

    #[test]
    fn parses_sysfs_file() {
        let content =
            Bytes::from_static(b"MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n");
        let ev = parse_sysfs(
            b"/devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
            content,
        )
        .unwrap();
        assert_eq!(ev.action(), Action::Add);
        assert_eq!(
            ev.devpath(),
            b"/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"
        );
        assert_eq!(ev.major_minor(), Some((253, 0)));
        assert_eq!(ev.devname(), Some(&b"vda"[..]));
        assert_eq!(ev.seqnum(), None);
        assert_eq!(ev.fields().count(), 5);
        assert!(!ev.is_from_netlink());
    }

    #[test]
    fn sysfs_edge_cases() {
        let empty = parse_sysfs(b"/devices/system/memory", Bytes::new()).unwrap();
        assert_eq!(empty.fields().count(), 0);
        let unterminated = parse_sysfs(b"/devices/a", Bytes::from_static(b"A=1\nB=2")).unwrap();
        assert_eq!(unterminated.get(b"B"), Some(&b"2"[..]));
        let blank = parse_sysfs(b"/devices/a", Bytes::from_static(b"A=1\n\nB=2\n\n")).unwrap();
        assert_eq!(blank.fields().count(), 2);
        assert!(matches!(
            parse_sysfs(b"devices/a", Bytes::new()),
            Err(UeventError::InvalidDevpath(_))
        ));
        assert!(matches!(
            parse_sysfs(b"/devices/a", Bytes::from_static(b"JUNK\n")),
            Err(UeventError::MissingEquals { .. })
        ));
        // ACTION/DEVPATH in a sysfs file are just properties.
        let ev = parse_sysfs(b"/devices/a", Bytes::from_static(b"DEVPATH=/x\n")).unwrap();
        assert_eq!(ev.devpath(), b"/devices/a");
    }

    #[test]
    fn debug_is_readable() {
        let ev = nl(VIRTIO_NET).unwrap();
        let s = format!("{ev:?}");
        assert!(s.contains("\"SUBSYSTEM\": \"virtio\""), "{s}");
    }
}
