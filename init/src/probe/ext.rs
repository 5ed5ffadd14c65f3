//! ext2, ext3 and ext4 (one superblock at 1 KiB), told apart by their
//! feature flags exactly as libblkid's `superblocks/ext.c` does. With the
//! `metadata_csum` feature the superblock's crc32c must match.

use super::crc::crc32c_update;
use super::{field, format_uuid, label_from_bytes, le16, le32, Dev, Filesystem, ProbeError};

const SB_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;
const MAGIC_OFF: usize = 0x38;
const MAGIC: u16 = 0xEF53;
const FEATURE_COMPAT_OFF: usize = 0x5C;
const FEATURE_INCOMPAT_OFF: usize = 0x60;
const FEATURE_RO_COMPAT_OFF: usize = 0x64;
const UUID_OFF: usize = 0x68;
const VOLUME_NAME_OFF: usize = 0x78;
const VOLUME_NAME_LEN: usize = 16;
/// `s_checksum`, the last field; the crc covers everything before it.
const CHECKSUM_OFF: usize = 0x3FC;

const COMPAT_HAS_JOURNAL: u32 = 0x0004;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const RO_COMPAT_BTREE_DIR: u32 = 0x0004;
const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_RECOVER: u32 = 0x0004;
const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
const INCOMPAT_META_BG: u32 = 0x0010;

/// What ext2 and ext3 understand; anything else makes it ext4.
const EXT2_RO_COMPAT_SUPP: u32 =
    RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;
const EXT2_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
const EXT3_RO_COMPAT_SUPP: u32 = EXT2_RO_COMPAT_SUPP;
const EXT3_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;

/// ext4's `ext4_superblock_csum`: crc32c seeded with !0, not inverted.
pub(crate) fn superblock_csum(sb: &[u8]) -> u32 {
    crc32c_update(!0, field(sb, 0, CHECKSUM_OFF))
}

pub(super) fn probe(dev: &Dev) -> Result<Option<Filesystem>, ProbeError> {
    let Some(sb) = dev.read_array::<SB_SIZE>(SB_OFFSET)? else {
        return Ok(None);
    };
    Ok(parse(&sb))
}

fn parse(sb: &[u8]) -> Option<Filesystem> {
    if le16(sb, MAGIC_OFF) != MAGIC {
        return None;
    }
    let compat = le32(sb, FEATURE_COMPAT_OFF);
    let incompat = le32(sb, FEATURE_INCOMPAT_OFF);
    let ro_compat = le32(sb, FEATURE_RO_COMPAT_OFF);
    if ro_compat & RO_COMPAT_METADATA_CSUM != 0 && superblock_csum(sb) != le32(sb, CHECKSUM_OFF) {
        return None;
    }
    // An external journal device is "jbd", not a filesystem to mount.
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return None;
    }
    let journal = compat & COMPAT_HAS_JOURNAL != 0;
    // blkid tries ext4, then ext3, then ext2.
    let fstype = if ro_compat & !EXT3_RO_COMPAT_SUPP != 0 || incompat & !EXT3_INCOMPAT_SUPP != 0 {
        "ext4"
    } else if journal {
        "ext3"
    } else if ro_compat & !EXT2_RO_COMPAT_SUPP == 0 && incompat & !EXT2_INCOMPAT_SUPP == 0 {
        "ext2"
    } else {
        return None;
    };
    Some(Filesystem {
        fstype,
        uuid: format_uuid(field(sb, UUID_OFF, 16)),
        label: label_from_bytes(field(sb, VOLUME_NAME_OFF, VOLUME_NAME_LEN)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(compat: u32, incompat: u32, ro: u32) -> Vec<u8> {
        let mut b = vec![0u8; SB_SIZE];
        b[MAGIC_OFF..MAGIC_OFF + 2].copy_from_slice(&MAGIC.to_le_bytes());
        b[FEATURE_COMPAT_OFF..][..4].copy_from_slice(&compat.to_le_bytes());
        b[FEATURE_INCOMPAT_OFF..][..4].copy_from_slice(&incompat.to_le_bytes());
        b[FEATURE_RO_COMPAT_OFF..][..4].copy_from_slice(&ro.to_le_bytes());
        b[UUID_OFF] = 0xab;
        b[VOLUME_NAME_OFF..][..4].copy_from_slice(b"root");
        b
    }

    #[test]
    fn feature_flags_choose_the_type() {
        assert_eq!(parse(&sb(0, INCOMPAT_FILETYPE, 1)).unwrap().fstype, "ext2");
        assert_eq!(
            parse(&sb(COMPAT_HAS_JOURNAL, INCOMPAT_FILETYPE, 1))
                .unwrap()
                .fstype,
            "ext3"
        );
        assert_eq!(
            parse(&sb(COMPAT_HAS_JOURNAL, 0x40 | 0x2, 1))
                .unwrap()
                .fstype,
            "ext4"
        );
        assert_eq!(parse(&sb(0, 0x40, 0)).unwrap().fstype, "ext4");
        // RECOVER without a journal: neither ext2 nor ext3 nor ext4.
        assert!(parse(&sb(0, INCOMPAT_RECOVER, 0)).is_none());
        assert!(parse(&sb(COMPAT_HAS_JOURNAL, INCOMPAT_JOURNAL_DEV, 0)).is_none());
        let fs = parse(&sb(0, 0, 0)).unwrap();
        assert_eq!(fs.label.as_deref(), Some("root"));
        assert_eq!(
            fs.uuid.as_deref(),
            Some("ab000000-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn metadata_csum_is_checked() {
        let mut b = sb(COMPAT_HAS_JOURNAL, 0x40, RO_COMPAT_METADATA_CSUM);
        assert!(parse(&b).is_none());
        let c = superblock_csum(&b);
        b[CHECKSUM_OFF..].copy_from_slice(&c.to_le_bytes());
        assert_eq!(parse(&b).unwrap().fstype, "ext4");
        b[VOLUME_NAME_OFF] ^= 1;
        assert!(parse(&b).is_none());
    }
}
