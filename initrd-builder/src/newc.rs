//! The newc ("070701") cpio record format, as the kernel's `init/initramfs.c`
//! reads it and `usr/gen_init_cpio.c` writes it: a 110-byte ASCII header of
//! thirteen 8-digit hex fields, the NUL-terminated name, padding to 4 bytes,
//! the data, padding to 4 bytes. No syscalls; writers take `&mut dyn Write`.

use crate::InitrdError;
use std::io::Write;

/// The magic of a newc record without checksums.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the record that ends an archive.
pub const TRAILER_NAME: &str = "TRAILER!!!";
/// Size of the fixed part of a newc header.
pub const HEADER_LEN: usize = 110;
/// The kernel's PATH_MAX: longer names are refused by `init/initramfs.c`.
pub const MAX_NAME_LEN: usize = 4095;
/// newc sizes are 32-bit.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// File type bits of `st_mode` (from `<sys/stat.h>`; constants, not a syscall).
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFCHR: u32 = 0o020_000;
pub const S_IFBLK: u32 = 0o060_000;
/// Permission bits, including setuid/setgid/sticky.
pub const PERM_MASK: u32 = 0o7777;

/// The fields of one newc header that vary; the rest are fixed by the writer
/// (uid/gid 0, device of the archive 0:0, check 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// Bytes of zero padding that bring `len` to a multiple of 4.
pub fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

const ZEROS: [u8; 4] = [0; 4];

/// Write one record: header, name, padding, data, padding. `data.len()` must
/// equal `h.filesize` (the writer checks it).
pub fn write_record(
    out: &mut dyn Write,
    h: &Header,
    name: &str,
    data: &[u8],
) -> Result<(), InitrdError> {
    if u64::try_from(data.len()).ok() != Some(u64::from(h.filesize)) {
        return Err(InitrdError::TooLarge {
            path: name.to_owned(),
            size: data.len() as u64,
            limit: u64::from(h.filesize),
        });
    }
    let namesize = name.len() + 1;
    let header = format!(
        "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        h.ino,
        h.mode,
        0,
        0,
        h.nlink,
        h.mtime,
        h.filesize,
        0,
        0,
        h.rdev_major,
        h.rdev_minor,
        namesize,
        0
    );
    debug_assert_eq!(header.len(), HEADER_LEN);
    out.write_all(header.as_bytes())
        .map_err(InitrdError::Write)?;
    out.write_all(name.as_bytes()).map_err(InitrdError::Write)?;
    out.write_all(&[0]).map_err(InitrdError::Write)?;
    write_pad(out, HEADER_LEN + namesize)?;
    out.write_all(data).map_err(InitrdError::Write)?;
    write_pad(out, data.len())
}

fn write_pad(out: &mut dyn Write, len: usize) -> Result<(), InitrdError> {
    out.write_all(ZEROS.get(..pad4(len)).unwrap_or_default())
        .map_err(InitrdError::Write)
}

/// Write the `TRAILER!!!` record (ino 0, nlink 1, like gen_init_cpio).
pub fn write_trailer(out: &mut dyn Write) -> Result<(), InitrdError> {
    let h = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev_major: 0,
        rdev_minor: 0,
    };
    write_record(out, &h, TRAILER_NAME, &[])
}

/// Concatenate archives (each compressed or not) the way the kernel unpacks
/// them: it reads archive after archive, skipping zero bytes between them, but
/// an uncompressed cpio must start on a 4-byte boundary of the whole buffer
/// (`init/initramfs.c`, "broken padding"). So every part is padded with zeros
/// to a multiple of 4. A later archive overrides files of an earlier one
/// (the kernel truncates and rewrites them); directories merge.
pub fn concat_archives(out: &mut dyn Write, parts: &[&[u8]]) -> Result<(), InitrdError> {
    for part in parts {
        out.write_all(part).map_err(InitrdError::Write)?;
        write_pad(out, part.len())?;
    }
    Ok(())
}

/// The archive mtime from the value of `SOURCE_DATE_EPOCH` (reproducible-builds.org):
/// unset or empty gives 0, otherwise decimal seconds that fit newc's 32 bits.
pub fn mtime_from_source_date_epoch(value: Option<&str>) -> Result<u32, InitrdError> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| InitrdError::BadSourceDateEpoch(v.to_owned())),
    }
}

/// Bound on the entries read back from one archive.
pub const MAX_ENTRIES: usize = 1 << 20;

/// One record read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewcEntry {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub data: Vec<u8>,
}

fn malformed(offset: usize, reason: impl Into<String>) -> InitrdError {
    InitrdError::Malformed {
        offset,
        reason: reason.into(),
    }
}

/// Read one uncompressed newc archive from the start of `data`, up to and
/// including its trailer. Returns the entries (without the trailer) and the
/// number of bytes consumed (trailer padding included).
pub fn parse_newc(data: &[u8]) -> Result<(Vec<NewcEntry>, usize), InitrdError> {
    let mut pos = 0usize;
    let mut out = Vec::new();
    loop {
        if out.len() > MAX_ENTRIES {
            return Err(malformed(pos, format!("more than {MAX_ENTRIES} entries")));
        }
        let header = data
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| malformed(pos, "truncated header"))?;
        if !header.starts_with(NEWC_MAGIC) {
            return Err(malformed(pos, "bad magic (expected 070701)"));
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let hex = header
                .get(6 + i * 8..14 + i * 8)
                .ok_or_else(|| malformed(pos, "truncated header"))?;
            let hex = std::str::from_utf8(hex).map_err(|_| malformed(pos, "non-ASCII header"))?;
            *f = u32::from_str_radix(hex, 16)
                .map_err(|_| malformed(pos, format!("bad hex field {hex:?}")))?;
        }
        let [ino, mode, uid, gid, nlink, mtime, filesize, _, _, rdev_major, rdev_minor, namesize, _] =
            fields;
        let namesize = namesize as usize;
        let name_start = pos + HEADER_LEN;
        let name = data
            .get(name_start..name_start + namesize)
            .ok_or_else(|| malformed(pos, "truncated name"))?;
        let name = name
            .strip_suffix(&[0])
            .ok_or_else(|| malformed(pos, "name not NUL-terminated"))?;
        let name =
            String::from_utf8(name.to_vec()).map_err(|_| malformed(pos, "name is not UTF-8"))?;
        let data_start = name_start + namesize + pad4(HEADER_LEN + namesize);
        let size = filesize as usize;
        let body = data
            .get(data_start..data_start + size)
            .ok_or_else(|| malformed(pos, "truncated data"))?;
        pos = data_start + size + pad4(size);
        if name == TRAILER_NAME {
            return Ok((out, pos.min(data.len())));
        }
        out.push(NewcEntry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev_major,
            rdev_minor,
            data: body.to_vec(),
        });
    }
}

/// Read an initramfs the way the kernel unpacks it: archives one after the
/// other, each compressed (gzip, zstd, xz) or not, zero bytes between them
/// skipped. Returns each archive's entries. `limit` bounds decompressed bytes.
pub fn parse_initramfs(data: &[u8], limit: u64) -> Result<Vec<Vec<NewcEntry>>, InitrdError> {
    let mut archives = Vec::new();
    let mut pos = 0usize;
    while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
        if rest.first() == Some(&0) {
            pos += 1;
            continue;
        }
        if rest.starts_with(NEWC_MAGIC) {
            if pos % 4 != 0 {
                return Err(malformed(
                    pos,
                    "uncompressed archive not 4-byte aligned (the kernel says broken padding)",
                ));
            }
            let (entries, used) = parse_newc(rest)?;
            archives.push(entries);
            pos += used;
            continue;
        }
        let c = crate::Compression::detect(rest)
            .ok_or_else(|| malformed(pos, "neither newc nor a known compression"))?;
        // One compressed stream covers the rest unless the format says where it ends;
        // our writer emits exactly one stream per part, so decode the stream and
        // find its end with a counting reader.
        let (plain, used) = crate::compress::decompress_one(rest, c, limit)?;
        let mut inner = 0usize;
        while let Some(r) = plain.get(inner..).filter(|r| !r.is_empty()) {
            if r.first() == Some(&0) {
                inner += 1;
                continue;
            }
            let (entries, n) = parse_newc(r)?;
            archives.push(entries);
            inner += n;
        }
        pos += used;
    }
    Ok(archives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_is_padded() {
        let mut out = Vec::new();
        let h = Header {
            ino: 1,
            mode: S_IFREG | 0o644,
            nlink: 1,
            mtime: 7,
            filesize: 3,
            rdev_major: 0,
            rdev_minor: 0,
        };
        write_record(&mut out, &h, "ab", b"xyz").unwrap();
        // 110 + "ab\0" = 113 -> 116; data 3 -> 4.
        assert_eq!(out.len(), 116 + 4);
        assert_eq!(&out[..6], NEWC_MAGIC);
        assert_eq!(&out[6..14], b"00000001");
        assert_eq!(&out[14..22], b"000081A4");
        assert_eq!(&out[110..113], b"ab\0");
        assert_eq!(&out[116..119], b"xyz");
        assert_eq!(out[119], 0);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let h = Header {
            ino: 1,
            mode: S_IFREG,
            nlink: 1,
            mtime: 0,
            filesize: 4,
            rdev_major: 0,
            rdev_minor: 0,
        };
        assert!(write_record(&mut Vec::new(), &h, "a", b"abc").is_err());
    }

    #[test]
    fn concat_pads_each_part() {
        let mut out = Vec::new();
        concat_archives(&mut out, &[b"12345", b"ab"]).unwrap();
        assert_eq!(out, b"12345\0\0\0ab\0\0");
    }

    #[test]
    fn source_date_epoch() {
        assert_eq!(mtime_from_source_date_epoch(None).unwrap(), 0);
        assert_eq!(mtime_from_source_date_epoch(Some("")).unwrap(), 0);
        assert_eq!(
            mtime_from_source_date_epoch(Some("1700000000")).unwrap(),
            1_700_000_000
        );
        assert!(mtime_from_source_date_epoch(Some("-1")).is_err());
        assert!(mtime_from_source_date_epoch(Some("99999999999")).is_err());
        assert!(mtime_from_source_date_epoch(Some("12abc")).is_err());
    }
}
