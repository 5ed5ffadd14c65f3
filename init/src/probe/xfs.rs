//! XFS: the superblock at offset 0 (big-endian), its sanity checks as
//! libblkid's `xfs_verify_sb`, and for v5 filesystems the superblock
//! crc32c over one sector.

use super::crc::crc32c_update;
use super::{be16, be32, be64, field, format_uuid, label_from_bytes, le32, u8_at};
use super::{Dev, Filesystem, ProbeError};

const MAGIC: &[u8; 4] = b"XFSB";
/// The fields the checks need all lie in the first 512 bytes.
const SB_HEAD: usize = 512;
const MIN_SECTORSIZE_LOG: u8 = 9;
const MAX_SECTORSIZE_LOG: u8 = 15;
/// Largest sector (32 KiB): the bound of the crc read.
const MAX_SECTORSIZE: usize = 1 << MAX_SECTORSIZE_LOG;
const MIN_BLOCKSIZE_LOG: u8 = 9;
const MAX_BLOCKSIZE_LOG: u8 = 16;
const DINODE_MIN_LOG: u8 = 8;
const DINODE_MAX_LOG: u8 = 11;
const MAX_RTEXTSIZE: u32 = 1024 * 1024 * 1024;
const MIN_RTEXTSIZE: u32 = 4 * 1024;
const MIN_AG_BLOCKS: u64 = 64;
const VERSION_5: u16 = 5;
const VERSION_NUMBITS: u16 = 0x000f;
/// `sb_crc`, little-endian, inverted crc32c.
const CRC_OFF: usize = 224;

const UUID_OFF: usize = 32;
const FNAME_OFF: usize = 108;
const FNAME_LEN: usize = 12;

/// libblkid's `xfs_verify_sb`: refuse a superblock by magic alone. The
/// arithmetic is u32 like the C code (a wrapped product fails the same way).
fn sane(sb: &[u8]) -> bool {
    let blocksize = be32(sb, 4);
    let dblocks = be64(sb, 8);
    let rextsize = be32(sb, 80);
    let agblocks = be32(sb, 84);
    let agcount = be32(sb, 88);
    let sectsize = be16(sb, 102);
    let inodesize = be16(sb, 104);
    let blocklog = u8_at(sb, 120);
    let sectlog = u8_at(sb, 121);
    let inodelog = u8_at(sb, 122);
    let inopblog = u8_at(sb, 123);
    let imax_pct = u8_at(sb, 127);
    let rext_bytes = rextsize.wrapping_mul(blocksize);
    let pow = |log: u8| 1u64.checked_shl(u32::from(log)).unwrap_or(0);
    agcount != 0
        && (MIN_SECTORSIZE_LOG..=MAX_SECTORSIZE_LOG).contains(&sectlog)
        && u64::from(sectsize) == pow(sectlog)
        && (MIN_BLOCKSIZE_LOG..=MAX_BLOCKSIZE_LOG).contains(&blocklog)
        && u64::from(blocksize) == pow(blocklog)
        && (DINODE_MIN_LOG..=DINODE_MAX_LOG).contains(&inodelog)
        && u64::from(inodesize) == pow(inodelog)
        && i32::from(blocklog) - i32::from(inodelog) == i32::from(inopblog)
        && (MIN_RTEXTSIZE..=MAX_RTEXTSIZE).contains(&rext_bytes)
        && imax_pct <= 100
        && dblocks != 0
        && dblocks <= u64::from(agcount) * u64::from(agblocks)
        && dblocks >= u64::from(agcount - 1) * u64::from(agblocks) + MIN_AG_BLOCKS
}

/// The v5 superblock crc: crc32c over the sector with `sb_crc` as zeros.
pub(crate) fn superblock_crc(sector: &[u8]) -> u32 {
    let crc = crc32c_update(!0, field(sector, 0, CRC_OFF));
    let crc = crc32c_update(crc, &[0; 4]);
    !crc32c_update(crc, sector.get(CRC_OFF + 4..).unwrap_or(&[]))
}

pub(super) fn probe(dev: &Dev) -> Result<Option<Filesystem>, ProbeError> {
    let Some(head) = dev.read_array::<SB_HEAD>(0)? else {
        return Ok(None);
    };
    if field(&head, 0, 4) != MAGIC || !sane(&head) {
        return Ok(None);
    }
    if be16(&head, 100) & VERSION_NUMBITS == VERSION_5 {
        let sectsize = usize::from(be16(&head, 102));
        let Some(sector) = dev.read_vec(0, sectsize, MAX_SECTORSIZE, "xfs superblock")? else {
            return Ok(None);
        };
        if superblock_crc(&sector) != le32(&sector, CRC_OFF) {
            return Ok(None);
        }
    }
    Ok(Some(Filesystem {
        fstype: "xfs",
        uuid: format_uuid(field(&head, UUID_OFF, 16)),
        label: label_from_bytes(field(&head, FNAME_OFF, FNAME_LEN)),
    }))
}
