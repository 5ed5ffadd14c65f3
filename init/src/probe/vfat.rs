//! FAT12/16/32 ("vfat"): the boot sector's geometry checks, the volume
//! label from the root directory (the boot sector's copy is blkid's
//! LABEL_FATBOOT, which udev does not link), the volume serial as
//! `ABCD-1234`, as libblkid's `superblocks/vfat.c` (util-linux 2.38). The same geometry
//! check tells the MBR prober that sector 0 is a FAT boot sector, not a
//! partition table. The arithmetic is u32 and wraps like the C code, so a
//! hostile boot sector is judged as blkid judges it.

use super::TINY_DEVICE_BYTES;
use super::{field, label_from_bytes, le16, le32, u8_at, Dev, Filesystem, ProbeError};

const SECTOR: usize = 512;
const FAT12_MAX: u32 = 0xFF4;
const FAT16_MAX: u32 = 0xFFF4;
const FAT32_MAX: u32 = 0x0FFF_FFF6;
const DIR_ENTRY: usize = 32;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
const ATTR_MASK: u8 = 0x3f;
const ENTRY_FREE: u8 = 0xe5;
/// blkid's bound on the FAT32 root directory cluster chain.
const MAX_ROOT_CLUSTERS: u32 = 100;
/// Root directory bytes read in one go while looking for the label.
const DIR_CHUNK: usize = 4096;
/// All root-directory bytes one probe may scan for the label (a FAT32
/// chain of 99 clusters of 512 KiB would otherwise be 50 MiB of reads).
pub const MAX_LABEL_SCAN_BYTES: u64 = 4 * 1024 * 1024;
/// FAT32 FSInfo sector: lead and struct signatures (or all zeros).
const FSINFO_SIG1: [&[u8; 4]; 3] = [b"RRaA", b"RRdA", &[0; 4]];
const FSINFO_SIG2: [&[u8; 4]; 2] = [b"rrAa", &[0; 4]];
const FSINFO_SIG2_OFF: usize = 484;

// Boot sector fields (offsets as in blkid's msdos/vfat_super_block).
const SECTOR_SIZE_OFF: usize = 0x0b;
const CLUSTER_SIZE_OFF: usize = 0x0d;
const RESERVED_OFF: usize = 0x0e;
const FATS_OFF: usize = 0x10;
const DIR_ENTRIES_OFF: usize = 0x11;
const SECTORS_OFF: usize = 0x13;
const MEDIA_OFF: usize = 0x15;
const FAT_LENGTH_OFF: usize = 0x16;
const TOTAL_SECT_OFF: usize = 0x20;
const FAT32_LENGTH_OFF: usize = 0x24;
const ROOT_CLUSTER_OFF: usize = 0x2c;
const FSINFO_SECTOR_OFF: usize = 0x30;
const MS_EXT_BOOT_SIGN_OFF: usize = 0x26;
const MS_SERNO_OFF: usize = 0x27;
const MS_MAGIC_OFF: usize = 0x36;
const VS_SERNO_OFF: usize = 0x43;
const VS_MAGIC_OFF: usize = 0x52;
/// BitLocker volumes carry a FAT-like boot sector: jump, then this OEM id.
const BITLOCKER_JUMPS: [[u8; 3]; 2] = [[0xEB, 0x52, 0x90], [0xEB, 0x58, 0x90]];
const BITLOCKER_OEM: &[u8; 8] = b"-FVE-FS-";

/// The first of blkid's vfat magics present, as its length (a length of
/// at most 2 means "no FAT string", which asks for extra checks).
fn magic_len(b: &[u8]) -> Option<usize> {
    const STRINGS: [(&[u8], usize); 6] = [
        (b"MSWIN", VS_MAGIC_OFF),
        (b"FAT32   ", VS_MAGIC_OFF),
        (b"MSDOS", MS_MAGIC_OFF),
        (b"FAT16   ", MS_MAGIC_OFF),
        (b"FAT12   ", MS_MAGIC_OFF),
        (b"FAT     ", MS_MAGIC_OFF),
    ];
    for (m, off) in STRINGS {
        if field(b, off, m.len()) == m {
            return Some(m.len());
        }
    }
    if matches!(u8_at(b, 0), 0xEB | 0xE9) {
        return Some(1);
    }
    has_mbr_signature(b).then_some(2)
}

fn has_mbr_signature(b: &[u8]) -> bool {
    field(b, 510, 2) == [0x55, 0xAA]
}

/// The geometry that passed blkid's `fat_valid_superblock`.
struct Geometry {
    fat_size: u32,
    sector_size: u32,
    reserved: u32,
    cluster_size: u32,
}

fn valid_superblock(b: &[u8]) -> Option<Geometry> {
    let maglen = magic_len(b)?;
    if maglen <= 2 {
        // Old floppies have the MBR signature; OS/2 puts a FAT-like
        // header on JFS and HPFS.
        if !has_mbr_signature(b) {
            return None;
        }
        let m = field(b, MS_MAGIC_OFF, 8);
        if m == b"JFS     " || m == b"HPFS    " {
            return None;
        }
    }
    let fats = u32::from(u8_at(b, FATS_OFF));
    let reserved = u32::from(le16(b, RESERVED_OFF));
    let media = u8_at(b, MEDIA_OFF);
    let cluster_size = u32::from(u8_at(b, CLUSTER_SIZE_OFF));
    let sector_size = u32::from(le16(b, SECTOR_SIZE_OFF));
    if fats == 0
        || reserved == 0
        || !(media >= 0xf8 || media == 0xf0)
        || !cluster_size.is_power_of_two()
        || !sector_size.is_power_of_two()
        || !(512..=4096).contains(&sector_size)
    {
        return None;
    }
    let dir_entries = u32::from(le16(b, DIR_ENTRIES_OFF));
    let mut sect_count = u32::from(le16(b, SECTORS_OFF));
    if sect_count == 0 {
        sect_count = le32(b, TOTAL_SECT_OFF);
    }
    let fat16_length = u32::from(le16(b, FAT_LENGTH_OFF));
    let fat32_length = le32(b, FAT32_LENGTH_OFF);
    let fat_length = if fat16_length == 0 {
        fat32_length
    } else {
        fat16_length
    };
    let fat_size = fat_length.wrapping_mul(fats);
    let dir_size = (dir_entries * DIR_ENTRY as u32).div_ceil(sector_size);
    let cluster_count = sect_count
        .wrapping_sub(reserved.wrapping_add(fat_size).wrapping_add(dir_size))
        / cluster_size;
    let max_count = if fat16_length == 0 && fat32_length != 0 {
        FAT32_MAX
    } else if cluster_count > FAT12_MAX {
        FAT16_MAX
    } else {
        FAT12_MAX
    };
    if cluster_count > max_count {
        return None;
    }
    if BITLOCKER_JUMPS.iter().any(|j| field(b, 0, 3) == j) && field(b, 3, 8) == BITLOCKER_OEM {
        return None;
    }
    Some(Geometry {
        fat_size,
        sector_size,
        reserved,
        cluster_size,
    })
}

/// blkid's `blkid_probe_is_vfat`: sector 0 is a FAT boot sector (so its
/// 0x55AA does not make it a partition table).
pub(crate) fn is_fat_boot_sector(sector0: &[u8]) -> bool {
    valid_superblock(sector0).is_some()
}

/// Looks for the volume-label entry in `entries` directory entries at
/// `offset`, with a budget of bytes shared by the whole probe.
fn search_label(
    dev: &Dev,
    offset: u64,
    entries: u32,
    budget: &mut u64,
) -> Result<Option<[u8; 11]>, ProbeError> {
    let total = u64::from(entries) * DIR_ENTRY as u64;
    let tiny = dev.size() <= TINY_DEVICE_BYTES;
    // blkid reads a large disk's root directory in one piece: if it is
    // not all on the device, there is no label from it.
    if !tiny && !matches!(offset.checked_add(total), Some(end) if end <= dev.size()) {
        return Ok(None);
    }
    let mut done = 0u64;
    let mut chunk = [0u8; DIR_CHUNK];
    while done < total {
        let len = (total - done).min(DIR_CHUNK as u64);
        if len > *budget {
            return Ok(None);
        }
        *budget -= len;
        let Some(buf) = chunk.get_mut(..len as usize) else {
            return Ok(None);
        };
        if !dev.read_into(buf, offset + done)? {
            return Ok(None);
        }
        for ent in buf.chunks_exact(DIR_ENTRY) {
            let first = u8_at(ent, 0);
            if first == 0 {
                return Ok(None);
            }
            let attr = u8_at(ent, 11);
            if first == ENTRY_FREE
                || le16(ent, 20) != 0
                || le16(ent, 26) != 0
                || attr & ATTR_MASK == ATTR_LONG_NAME
            {
                continue;
            }
            if attr & (ATTR_VOLUME_ID | ATTR_DIR) == ATTR_VOLUME_ID {
                let mut name: [u8; 11] = field(ent, 0, 11).try_into().unwrap_or([0; 11]);
                // 0x05 stands for a leading 0xE5 (which marks free entries).
                if name[0] == 0x05 {
                    name[0] = 0xE5;
                }
                return Ok(Some(name));
            }
        }
        done += len;
    }
    Ok(None)
}

fn fsinfo_ok(dev: &Dev, b: &[u8], sector_size: u32) -> Result<bool, ProbeError> {
    let sect = u64::from(le16(b, FSINFO_SECTOR_OFF));
    if sect == 0 {
        return Ok(true);
    }
    let Some(info) = dev.read_array::<SECTOR>(sect * u64::from(sector_size))? else {
        return Ok(false);
    };
    let sig1 = field(&info, 0, 4);
    let sig2 = field(&info, FSINFO_SIG2_OFF, 4);
    Ok(FSINFO_SIG1.iter().any(|s| sig1 == *s) && FSINFO_SIG2.iter().any(|s| sig2 == *s))
}

pub(super) fn probe(dev: &Dev) -> Result<Option<Filesystem>, ProbeError> {
    let Some(b) = dev.read_array::<SECTOR>(0)? else {
        return Ok(None);
    };
    let Some(g) = valid_superblock(&b) else {
        return Ok(None);
    };
    let mut budget = MAX_LABEL_SCAN_BYTES;
    // LABEL comes from the root directory only; the boot sector's copy is
    // blkid's LABEL_FATBOOT, which udev does not link.
    let (label, serno) = if le16(&b, FAT_LENGTH_OFF) != 0 {
        let root_start = g
            .reserved
            .wrapping_add(g.fat_size)
            .wrapping_mul(g.sector_size);
        let entries = u32::from(le16(&b, DIR_ENTRIES_OFF));
        let label = search_label(dev, u64::from(root_start), entries, &mut budget)?;
        let serno = matches!(u8_at(&b, MS_EXT_BOOT_SIGN_OFF), 0x28 | 0x29)
            .then(|| field(&b, MS_SERNO_OFF, 4));
        (label, serno)
    } else if le32(&b, FAT32_LENGTH_OFF) != 0 {
        let buf_size = g.cluster_size * g.sector_size;
        let start_data_sect = g.reserved.wrapping_add(g.fat_size);
        // u64 product, truncated to u32 as in blkid.
        let entries = (u64::from(le32(&b, FAT32_LENGTH_OFF)) * u64::from(g.sector_size) / 4) as u32;
        let mut next = le32(&b, ROOT_CLUSTER_OFF);
        let mut label = None;
        let mut loops = MAX_ROOT_CLUSTERS;
        while next != 0 && next < entries {
            loops -= 1;
            if loops == 0 {
                break;
            }
            let sect_off = next.wrapping_sub(2).wrapping_mul(g.cluster_size);
            let off = u64::from(start_data_sect.wrapping_add(sect_off)) * u64::from(g.sector_size);
            label = search_label(dev, off, buf_size / DIR_ENTRY as u32, &mut budget)?;
            if label.is_some() {
                break;
            }
            let fat_entry_off =
                u64::from(g.reserved) * u64::from(g.sector_size) + u64::from(next) * 4;
            // blkid reads a cluster's worth here; the entry is its start.
            if fat_entry_off + u64::from(buf_size) > dev.size() {
                break;
            }
            let Some(e) = dev.read_array::<4>(fat_entry_off)? else {
                break;
            };
            next = u32::from_le_bytes(e) & 0x0fff_ffff;
        }
        if !fsinfo_ok(dev, &b, g.sector_size)? {
            return Ok(None);
        }
        (label, Some(field(&b, VS_SERNO_OFF, 4)))
    } else {
        // Valid geometry but no FAT length at all: blkid says vfat and
        // nothing more.
        (None, None)
    };
    let uuid = serno.filter(|s| *s != [0; 4]).map(|s| {
        format!(
            "{:02X}{:02X}-{:02X}{:02X}",
            u8_at(s, 3),
            u8_at(s, 2),
            u8_at(s, 1),
            u8_at(s, 0)
        )
    });
    Ok(Some(Filesystem {
        fstype: "vfat",
        uuid,
        label: label.and_then(|l| label_from_bytes(&l)),
    }))
}
