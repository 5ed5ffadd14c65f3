//! btrfs: the primary superblock at 64 KiB (backups are ignored, as blkid
//! does by default), with its checksum verified when it is crc32c.

use super::crc::crc32c_update;
use super::{field, format_uuid, label_from_bytes, le16, le32, Dev, Filesystem, ProbeError};

const SB_OFFSET: u64 = 64 * 1024;
const SB_SIZE: usize = 4096;
/// blkid's `minsz` for btrfs.
const MIN_DEVICE: u64 = 1024 * 1024;
const MAGIC_OFF: usize = 0x40;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// The checksum (32 bytes) covers everything after it.
const CSUM_LEN: usize = 32;
const FSID_OFF: usize = 0x20;
const CSUM_TYPE_OFF: usize = 0xC4;
const LABEL_OFF: usize = 0x12B;
const LABEL_LEN: usize = 256;

const CSUM_CRC32C: u16 = 0;
/// xxhash64, sha256, blake2b: accepted without verification (the init
/// carries no implementation of them); larger values are unknown.
const CSUM_LAST_KNOWN: u16 = 3;

/// btrfs's superblock crc32c: seeded with !0, inverted, little-endian in
/// the first 4 bytes of the checksum field.
pub(crate) fn superblock_crc(sb: &[u8]) -> u32 {
    !crc32c_update(!0, sb.get(CSUM_LEN..).unwrap_or(&[]))
}

pub(super) fn probe(dev: &Dev) -> Result<Option<Filesystem>, ProbeError> {
    if dev.size() < MIN_DEVICE {
        return Ok(None);
    }
    let Some(sb) = dev.read_array::<SB_SIZE>(SB_OFFSET)? else {
        return Ok(None);
    };
    if field(&sb, MAGIC_OFF, MAGIC.len()) != MAGIC {
        return Ok(None);
    }
    match le16(&sb, CSUM_TYPE_OFF) {
        CSUM_CRC32C => {
            if superblock_crc(&sb) != le32(&sb, 0) {
                return Ok(None);
            }
        }
        t if t <= CSUM_LAST_KNOWN => {}
        _ => return Ok(None),
    }
    Ok(Some(Filesystem {
        fstype: "btrfs",
        uuid: format_uuid(field(&sb, FSID_OFF, 16)),
        label: label_from_bytes(field(&sb, LABEL_OFF, LABEL_LEN)),
    }))
}
