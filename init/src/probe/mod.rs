//! Superblock and partition-table probe: what udev's `blkid` builtin tells
//! the init, so it can make /dev/disk/by-uuid, by-label, by-partuuid and
//! by-partlabel links and resolve `root=UUID=…` itself.
//!
//! Pure logic: bytes come in through [`ReadAt`], values go out. It runs in
//! PID 1 on disks nobody vouched for, so it never panics, every read has a
//! fixed size or a named maximum, every loop on on-disk links is bounded,
//! and a structure whose checksum is wrong is not trusted (ext4
//! `metadata_csum`, xfs v5, btrfs crc32c, GPT header and entry array).
//!
//! The answers are libblkid's (util-linux 2.38, `blkid -p`): the same
//! types, the same probe order (vfat, swap, xfs, ext4/3/2, iso9660, btrfs),
//! the same UUID and LABEL formatting, and the same refusal to answer when
//! two filesystems claim one device (blkid's "ambivalent result"; on
//! floppy-sized devices the first signature wins, as in blkid).
//! Sectors are 512 bytes (virtio-blk's logical block size).
//!
//! Where it knowingly differs from blkid 2.38:
//! - superblock checksums are verified (ext4 `metadata_csum`, xfs v5,
//!   btrfs crc32c), as util-linux 2.39 and the kernel do: 2.38 still names
//!   such a filesystem, the kernel refuses to mount it. btrfs volumes with
//!   xxhash/sha256/blake2b checksums are accepted unverified;
//! - ext2 vs ext4 does not depend on the host's /proc/filesystems, "jbd"
//!   (external journals), "ext4dev", "swsuspend" are not reported;
//! - bounds blkid lacks: a GPT entry array over
//!   [`MAX_GPT_ENTRY_ARRAY_BYTES`] is an error, an EBR chain ends after
//!   [`MAX_EBR_CHAIN`] records or at partition [`MAX_PARTITION_NUMBER`], a
//!   FAT root directory scan reads at most [`MAX_FAT_LABEL_SCAN_BYTES`];
//! - labels that are not UTF-8 (FAT code pages) are decoded lossily, and
//!   lone UTF-16 surrogates become U+FFFD.
//!
//! For links, escape both labels and UUIDs with [`encode_link_name`]
//! (udev uses `ID_FS_LABEL_ENC` and `ID_FS_UUID_ENC`; an iso9660 "UUID" is
//! a date read from the disc and may hold anything).

mod btrfs;
mod crc;
mod ext;
mod gpt;
mod iso9660;
mod mbr;
mod swap;
mod vfat;
mod xfs;

use std::io;

pub use crc::{crc32, crc32c_update};
pub use gpt::MAX_ENTRY_ARRAY as MAX_GPT_ENTRY_ARRAY_BYTES;
pub use mbr::{MAX_EBR_CHAIN, MAX_PARTITION_NUMBER};
pub use vfat::MAX_LABEL_SCAN_BYTES as MAX_FAT_LABEL_SCAN_BYTES;

/// Random-access reads of a block device or image (a File implements it via FileExt::read_at).
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means end of data.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let src = self.get(start..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }
}

impl<const N: usize> ReadAt for [u8; N] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// So a `&[u8]` (which is sized, unlike `[u8]`) can be passed as
/// `&dyn ReadAt`: `probe_filesystem(&bytes, len)` with `bytes: &[u8]`.
impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// A filesystem found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// "ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "swap" or "iso9660".
    pub fstype: &'static str,
    /// Formatted exactly as blkid prints `UUID=` (vfat: `ABCD-1234`,
    /// iso9660: the volume date `2026-11-25-16-49-07-00`).
    pub uuid: Option<String>,
    /// As blkid prints `LABEL=`: trailing whitespace removed, never empty.
    /// Bytes that are not UTF-8 (old FAT code pages) become U+FFFD.
    pub label: Option<String>,
}

/// One partition of a partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The kernel's partition number (GPT: entry index + 1; MBR: slot 1-4,
    /// logical partitions from 5 in chain order).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// As blkid `PARTUUID=`: GPT lowercase GUID; MBR `xxxxxxxx-NN` (none
    /// when the disk signature is zero).
    pub partuuid: Option<String>,
    /// GPT partition name, UTF-16LE decoded, trailing whitespace removed.
    pub partlabel: Option<String>,
}

/// A partition table found on a whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionTable {
    /// `disk_guid` as blkid `PTUUID=` (lowercase GUID).
    Gpt {
        disk_guid: String,
        partitions: Vec<Partition>,
    },
    /// `disk_id` as blkid `PTUUID=` (`%08x` of the disk signature).
    Mbr {
        disk_id: String,
        partitions: Vec<Partition>,
    },
}

/// Why a probe gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("failed to read {len} bytes at offset {offset}: {source}")]
    Read {
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    /// Two filesystems claim the device: blkid refuses to choose too
    /// ("ambivalent result"), so no link is made for either.
    #[error("failed to probe: ambivalent result, signatures of {} found (wipefs(8) shows them)", .0.join(" and "))]
    Ambivalent(Vec<&'static str>),
    /// An on-disk count asks for more than the probe will ever read.
    #[error("failed to probe {what}: {value} bytes exceed the limit of {max}")]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
}

/// Devices of at most this size are "tiny" to blkid (floppies): the first
/// filesystem found wins, and GPT is not looked for.
const TINY_DEVICE_BYTES: u64 = 1440 * 1024;
/// blkid ignores devices of 1 KiB or less (e.g. extended partitions).
const MIN_PROBE_BYTES: u64 = 1024;

/// The device and its size, with bounded, checked reads.
pub(crate) struct Dev<'a> {
    dev: &'a dyn ReadAt,
    size: u64,
}

impl<'a> Dev<'a> {
    pub(crate) fn new(dev: &'a dyn ReadAt, size: u64) -> Self {
        Dev { dev, size }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` from `offset`. `Ok(false)` when the range is not
    /// entirely inside the device (a short device is not an error: the
    /// structure simply is not there).
    pub(crate) fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<bool, ProbeError> {
        let len = buf.len();
        let Some(end) = offset.checked_add(len as u64) else {
            return Ok(false);
        };
        if end > self.size {
            return Ok(false);
        }
        let mut done = 0usize;
        while done < len {
            let Some(rest) = buf.get_mut(done..) else {
                return Ok(false);
            };
            match self.dev.read_at(rest, offset + done as u64) {
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ProbeError::Read {
                        offset,
                        len,
                        source,
                    })
                }
            }
        }
        Ok(true)
    }

    /// Reads a fixed-size block.
    pub(crate) fn read_array<const N: usize>(
        &self,
        offset: u64,
    ) -> Result<Option<[u8; N]>, ProbeError> {
        let mut buf = [0u8; N];
        Ok(self.read_into(&mut buf, offset)?.then_some(buf))
    }

    /// Reads `len` bytes; `len` must already be checked against a named
    /// maximum by the caller, `max` repeats it as a last guard.
    pub(crate) fn read_vec(
        &self,
        offset: u64,
        len: usize,
        max: usize,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>, ProbeError> {
        if len > max {
            return Err(ProbeError::TooLarge {
                what,
                value: len as u64,
                max: max as u64,
            });
        }
        let mut buf = vec![0u8; len];
        Ok(self.read_into(&mut buf, offset)?.then_some(buf))
    }
}

// Little helpers over byte slices that never panic: an out-of-range field
// reads as zeros (callers only ask for fields inside fixed-size buffers).

pub(crate) fn field(b: &[u8], off: usize, len: usize) -> &[u8] {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .unwrap_or(&[])
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    field(b, off, N).try_into().unwrap_or([0; N])
}

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(b, off))
}
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(arr(b, off))
}
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(arr(b, off))
}
pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(arr(b, off))
}

/// A 16-byte big-endian UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`;
/// none when all zero (blkid's `blkid_uuid_is_empty`).
pub(crate) fn format_uuid(b: &[u8]) -> Option<String> {
    let u: [u8; 16] = arr(b, 0);
    if u == [0; 16] {
        return None;
    }
    Some(uuid_string(&u))
}

fn uuid_string(u: &[u8; 16]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(36);
    for (i, byte) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// A GUID as stored by EFI (first three fields little-endian), printed
/// like a UUID.
pub(crate) fn format_guid(b: &[u8]) -> String {
    let g: [u8; 16] = arr(b, 0);
    let mut u = g;
    u[..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    uuid_string(&u)
}

/// C `isspace` in the C locale.
pub(crate) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A label as blkid's `blkid_probe_set_label`: up to the first NUL,
/// trailing whitespace removed, none if nothing is left.
pub(crate) fn label_from_bytes(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = raw.get(..end).unwrap_or(&[]);
    let trimmed_len = s.iter().rposition(|&b| !is_c_space(b)).map_or(0, |p| p + 1);
    let s = s.get(..trimmed_len).unwrap_or(&[]);
    if s.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(s).into_owned())
}

/// The text encodings on-disk labels use besides bytes.
#[derive(Clone, Copy)]
pub(crate) enum Utf16 {
    Le,
    Be,
}

/// UTF-16 to a string as util-linux `ul_encode_to_utf8`: stops at a NUL
/// code unit, pairs surrogates, and (where it would emit an invalid
/// sequence for a lone surrogate) gives U+FFFD.
pub(crate) fn decode_utf16(raw: &[u8], enc: Utf16) -> String {
    let units = raw.chunks_exact(2).map(|c| {
        let pair = [u8_at(c, 0), u8_at(c, 1)];
        match enc {
            Utf16::Le => u16::from_le_bytes(pair),
            Utf16::Be => u16::from_be_bytes(pair),
        }
    });
    let units = units.take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// A label decoded from UTF-16 as blkid's `blkid_probe_set_utf8label`.
pub(crate) fn label_from_utf16(raw: &[u8], enc: Utf16) -> Option<String> {
    let s = decode_utf16(raw, enc);
    let t = s.trim_end_matches(|c: char| u8::try_from(c).is_ok_and(is_c_space));
    (!t.is_empty()).then(|| t.to_owned())
}

/// One filesystem prober: `Ok(None)` when its signature is absent or
/// fails its checks.
type Prober = fn(&Dev) -> Result<Option<Filesystem>, ProbeError>;

/// blkid's order (superblocks.c `idinfos`), restricted to what the init
/// supports, with blkid's `BLKID_IDINFO_TOLERANT` flag (a tolerant type may
/// coexist with another one without the result being ambivalent).
const PROBERS: &[(Prober, bool)] = &[
    (vfat::probe, false),
    (swap::probe, false),
    (xfs::probe, false),
    (ext::probe, false),
    (iso9660::probe, true),
    (btrfs::probe, false),
];

/// Which filesystem is on `dev` (`size` bytes), as `blkid -p` says.
pub fn probe_filesystem(dev: &dyn ReadAt, size: u64) -> Result<Option<Filesystem>, ProbeError> {
    let dev = Dev::new(dev, size);
    if size <= MIN_PROBE_BYTES {
        return Ok(None);
    }
    let mut found: Option<Filesystem> = None;
    let mut types = Vec::new();
    let mut intolerant = 0usize;
    for &(probe, tolerant) in PROBERS {
        let Some(fs) = probe(&dev)? else { continue };
        if size <= TINY_DEVICE_BYTES && found.is_none() {
            // blkid returns the first result on floppy-sized devices.
            return Ok(Some(fs));
        }
        types.push(fs.fstype);
        if !tolerant {
            intolerant += 1;
        }
        if found.is_none() {
            found = Some(fs);
        }
    }
    if types.len() > 1 && intolerant > 0 {
        return Err(ProbeError::Ambivalent(types));
    }
    Ok(found)
}

/// Which partition table is on the whole disk `dev` (`size` bytes), as
/// `blkid -p` says: GPT when the protective MBR and a header with good
/// checksums (primary, else backup) are there; else an MBR that is not a
/// FAT boot sector.
pub fn probe_partitions(dev: &dyn ReadAt, size: u64) -> Result<Option<PartitionTable>, ProbeError> {
    let dev = Dev::new(dev, size);
    if let Some(sector0) = dev.read_array::<{ mbr::SECTOR }>(0)? {
        if mbr::has_protective_entry(&sector0) {
            return gpt::probe(&dev, &sector0);
        }
        return mbr::probe(&dev, &sector0);
    }
    Ok(None)
}

/// udev's escaping of a label for /dev/disk/by-label (blkid_encode_string: '/' and whitespace -> \x2f / \x20, non-UTF-8 bytes escaped); the result never contains '/' and is never "." or "..".
///
/// ASCII letters, digits and `#+-.:=@_` stay; every other ASCII byte
/// (including `\`) becomes `\xNN`; multi-byte UTF-8 stays, except the
/// code points blkid treats as invalid (U+FDD0..U+FDEF, U+xFFFF), whose
/// bytes are escaped. An empty string stays empty: make no link for it.
pub fn encode_link_name(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let cp = u32::from(c);
        let whitelisted = c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c);
        if whitelisted {
            out.push(c);
        } else if c.is_ascii() || (0xFDD0..=0xFDEF).contains(&cp) || cp & 0xFFFF == 0xFFFF {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            out.push(c);
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "\\x2e");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_like_blkid() {
        assert_eq!(encode_link_name("root"), "root");
        assert_eq!(encode_link_name("my disk/1"), "my\\x20disk\\x2f1");
        assert_eq!(encode_link_name("a\\b"), "a\\x5cb");
        assert_eq!(encode_link_name("tab\there"), "tab\\x09here");
        assert_eq!(encode_link_name("ünï"), "ünï");
        assert_eq!(encode_link_name("x#+-.:=@_y"), "x#+-.:=@_y");
        assert_eq!(encode_link_name("$HOME*"), "\\x24HOME\\x2a");
        assert_eq!(encode_link_name("\u{FDD0}"), "\\xef\\xb7\\x90");
        assert_eq!(encode_link_name("."), "\\x2e");
        assert_eq!(encode_link_name(".."), "\\x2e\\x2e");
        assert_eq!(encode_link_name("..."), "...");
        assert_eq!(encode_link_name(""), "");
    }

    #[test]
    fn uuid_and_guid_formatting() {
        let b: Vec<u8> = (1..=16).collect();
        assert_eq!(
            format_uuid(&b).unwrap(),
            "01020304-0506-0708-090a-0b0c0d0e0f10"
        );
        assert_eq!(format_guid(&b), "04030201-0605-0807-090a-0b0c0d0e0f10");
        assert_eq!(format_uuid(&[0; 16]), None);
    }

    #[test]
    fn labels_trimmed_and_cut_at_nul() {
        assert_eq!(label_from_bytes(b"DATA       ").as_deref(), Some("DATA"));
        assert_eq!(label_from_bytes(b"a b\0junk").as_deref(), Some("a b"));
        assert_eq!(label_from_bytes(b"   \0"), None);
        assert_eq!(label_from_bytes(b""), None);
        let utf16: Vec<u8> = "héllo  "
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            label_from_utf16(&utf16, Utf16::Le).as_deref(),
            Some("héllo")
        );
    }

    #[test]
    fn slice_reads_are_bounded() {
        let data = [1u8, 2, 3];
        let mut buf = [0u8; 4];
        assert_eq!(data[..].read_at(&mut buf, 1).unwrap(), 2);
        assert_eq!(data[..].read_at(&mut buf, 10).unwrap(), 0);
        assert_eq!(data[..].read_at(&mut buf, u64::MAX).unwrap(), 0);
        let dev = Dev::new(&data, 3);
        assert_eq!(dev.read_array::<2>(2).unwrap(), None);
        assert_eq!(dev.read_array::<2>(u64::MAX).unwrap(), None);
        assert_eq!(dev.read_array::<2>(1).unwrap(), Some([2, 3]));
        // A size larger than the data: the short read is "not there".
        let dev = Dev::new(&data, 100);
        assert_eq!(dev.read_array::<8>(0).unwrap(), None);
    }

    #[test]
    fn tiny_and_empty_devices() {
        let empty: &[u8] = &[];
        assert!(probe_filesystem(&empty, 0).unwrap().is_none());
        assert!(probe_partitions(&empty, 0).unwrap().is_none());
        assert!(probe_filesystem(&[0u8; 1024], 1024).unwrap().is_none());
        assert!(probe_filesystem(&vec![0u8; 4096], 4096).unwrap().is_none());
    }
}
