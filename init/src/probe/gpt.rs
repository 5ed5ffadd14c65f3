//! GPT: the header at LBA 1 (else the backup at the last LBA) trusted only
//! with a good header CRC32, its own LBA, sane usable range and a good
//! entry-array CRC32, as libblkid's `partitions/gpt.c`. Requires the
//! protective MBR (the caller saw its 0xEE entry).

use super::crc::crc32;
use super::{field, format_guid, label_from_utf16, le32, le64, Dev, Partition, PartitionTable};
use super::{ProbeError, Utf16, TINY_DEVICE_BYTES};

const SECTOR: usize = 512;
const SECTOR_BYTES: u64 = SECTOR as u64;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The defined header is 92 bytes; up to a sector may be covered by its CRC.
const MIN_HEADER: usize = 92;
const HEADER_CRC_OFF: usize = 16;
const MY_LBA_OFF: usize = 24;
const FIRST_USABLE_OFF: usize = 40;
const LAST_USABLE_OFF: usize = 48;
const DISK_GUID_OFF: usize = 56;
const ENTRIES_LBA_OFF: usize = 72;
const NUM_ENTRIES_OFF: usize = 80;
const ENTRY_SIZE_OFF: usize = 84;
const ENTRIES_CRC_OFF: usize = 88;
/// blkid accepts only entries of exactly this size.
const ENTRY_SIZE: usize = 128;
/// The entry array read at most: 8192 entries (disks have 128).
pub const MAX_ENTRY_ARRAY: usize = 1024 * 1024;
const NAME_OFF: usize = 56;
const NAME_LEN: usize = 72;

/// A header that passed every check, and its entry array.
struct Header {
    sector: [u8; SECTOR],
    entries: Vec<u8>,
}

/// The header's CRC32 over `header_size` bytes with its CRC field zeroed.
pub(crate) fn header_crc(sector: &[u8], header_size: usize) -> u32 {
    let mut h = field(sector, 0, header_size).to_vec();
    if let Some(f) = h.get_mut(HEADER_CRC_OFF..HEADER_CRC_OFF + 4) {
        f.fill(0);
    }
    crc32(&h)
}

fn read_header(dev: &Dev, lba: u64, last_lba: u64) -> Result<Option<Header>, ProbeError> {
    let Some(sector) = dev.read_array::<SECTOR>(lba * SECTOR_BYTES)? else {
        return Ok(None);
    };
    if field(&sector, 0, 8) != SIGNATURE {
        return Ok(None);
    }
    let hsz = le32(&sector, 12) as usize;
    if !(MIN_HEADER..=SECTOR).contains(&hsz)
        || header_crc(&sector, hsz) != le32(&sector, HEADER_CRC_OFF)
    {
        return Ok(None);
    }
    if le64(&sector, MY_LBA_OFF) != lba {
        return Ok(None);
    }
    let fu = le64(&sector, FIRST_USABLE_OFF);
    let lu = le64(&sector, LAST_USABLE_OFF);
    if lu < fu || fu > last_lba || lu > last_lba || (fu < lba && lba < lu) {
        return Ok(None);
    }
    let esz = u64::from(le32(&sector, NUM_ENTRIES_OFF)) * u64::from(le32(&sector, ENTRY_SIZE_OFF));
    if esz == 0
        || esz >= u64::from(u32::MAX)
        || le32(&sector, ENTRY_SIZE_OFF) as usize != ENTRY_SIZE
    {
        return Ok(None);
    }
    if esz > MAX_ENTRY_ARRAY as u64 {
        return Err(ProbeError::TooLarge {
            what: "GPT partition entry array",
            value: esz,
            max: MAX_ENTRY_ARRAY as u64,
        });
    }
    let Some(offset) = le64(&sector, ENTRIES_LBA_OFF).checked_mul(SECTOR_BYTES) else {
        return Ok(None);
    };
    let Some(entries) = dev.read_vec(
        offset,
        esz as usize,
        MAX_ENTRY_ARRAY,
        "GPT partition entry array",
    )?
    else {
        return Ok(None);
    };
    if crc32(&entries) != le32(&sector, ENTRIES_CRC_OFF) {
        return Ok(None);
    }
    Ok(Some(Header { sector, entries }))
}

pub(super) fn probe(dev: &Dev, _sector0: &[u8]) -> Result<Option<PartitionTable>, ProbeError> {
    // blkid's `minsz` for GPT: floppies are not looked at.
    if dev.size() <= TINY_DEVICE_BYTES {
        return Ok(None);
    }
    let last_lba = dev.size() / SECTOR_BYTES - 1;
    let header = match read_header(dev, 1, last_lba)? {
        Some(h) => h,
        None => match read_header(dev, last_lba, last_lba)? {
            Some(h) => h,
            // A protective MBR with no valid GPT: blkid's "PMBR", no table.
            None => return Ok(None),
        },
    };
    let fu = le64(&header.sector, FIRST_USABLE_OFF);
    let lu = le64(&header.sector, LAST_USABLE_OFF);
    let mut partitions = Vec::new();
    for (number, e) in (1u32..).zip(header.entries.chunks_exact(ENTRY_SIZE)) {
        let type_guid = field(e, 0, 16);
        if type_guid.iter().all(|&b| b == 0) {
            continue;
        }
        let start = le64(e, 32);
        let end = le64(e, 40);
        if end < start || start < fu || end > lu {
            continue;
        }
        partitions.push(Partition {
            number,
            start_bytes: start * SECTOR_BYTES,
            size_bytes: (end - start + 1) * SECTOR_BYTES,
            partuuid: Some(format_guid(field(e, 16, 16))),
            partlabel: label_from_utf16(field(e, NAME_OFF, NAME_LEN), Utf16::Le),
        });
    }
    Ok(Some(PartitionTable::Gpt {
        disk_guid: format_guid(field(&header.sector, DISK_GUID_OFF, 16)),
        partitions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::mbr;

    const DISK: usize = 4 * 1024 * 1024;

    /// A disk with a protective MBR and a primary GPT of `n` entries (the
    /// first one used, named "boot") at LBA 2.
    fn disk(n: u32) -> Vec<u8> {
        let mut d = vec![0u8; DISK];
        d[446 + 4] = 0xEE;
        d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xAA;
        let last = (DISK / SECTOR) as u64 - 1;
        let e = 1024;
        d[e] = 0x0f; // type GUID, non-zero
        d[e + 16] = 0xaa; // unique GUID
        d[e + 32..e + 40].copy_from_slice(&34u64.to_le_bytes());
        d[e + 40..e + 48].copy_from_slice(&100u64.to_le_bytes());
        for (i, u) in "boot".encode_utf16().enumerate() {
            d[e + NAME_OFF + 2 * i..][..2].copy_from_slice(&u.to_le_bytes());
        }
        let esz = n as usize * ENTRY_SIZE;
        let array_crc = crc32(d.get(e..e + esz).unwrap_or(&[]));
        let h = SECTOR;
        d[h..h + 8].copy_from_slice(SIGNATURE);
        d[h + 12..h + 16].copy_from_slice(&92u32.to_le_bytes());
        d[h + MY_LBA_OFF..][..8].copy_from_slice(&1u64.to_le_bytes());
        d[h + FIRST_USABLE_OFF..][..8].copy_from_slice(&34u64.to_le_bytes());
        d[h + LAST_USABLE_OFF..][..8].copy_from_slice(&(last - 33).to_le_bytes());
        d[h + DISK_GUID_OFF] = 0x11;
        d[h + ENTRIES_LBA_OFF..][..8].copy_from_slice(&2u64.to_le_bytes());
        d[h + NUM_ENTRIES_OFF..][..4].copy_from_slice(&n.to_le_bytes());
        d[h + ENTRY_SIZE_OFF..][..4].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        d[h + ENTRIES_CRC_OFF..][..4].copy_from_slice(&array_crc.to_le_bytes());
        let c = header_crc(&d[h..h + SECTOR], 92);
        d[h + HEADER_CRC_OFF..][..4].copy_from_slice(&c.to_le_bytes());
        d
    }

    fn run(d: &[u8]) -> Result<Option<PartitionTable>, ProbeError> {
        let dev = Dev::new(&d, d.len() as u64);
        assert!(mbr::has_protective_entry(&d[..512]));
        probe(&dev, &d[..512])
    }

    #[test]
    fn parses_a_valid_table() {
        let Some(PartitionTable::Gpt {
            disk_guid,
            partitions,
        }) = run(&disk(128)).unwrap()
        else {
            panic!("no table")
        };
        assert_eq!(disk_guid, "00000011-0000-0000-0000-000000000000");
        assert_eq!(partitions.len(), 1);
        let p = &partitions[0];
        assert_eq!(
            (p.number, p.start_bytes, p.size_bytes),
            (1, 34 * 512, 67 * 512)
        );
        assert_eq!(p.partlabel.as_deref(), Some("boot"));
        assert_eq!(
            p.partuuid.as_deref(),
            Some("000000aa-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn bad_crcs_are_not_trusted() {
        let mut d = disk(128);
        d[SECTOR + DISK_GUID_OFF] ^= 1; // header changed, CRC not
        assert!(run(&d).unwrap().is_none());
        let mut d = disk(128);
        d[1024 + NAME_OFF] ^= 1; // entry changed, array CRC not
        assert!(run(&d).unwrap().is_none());
    }

    #[test]
    fn huge_entry_arrays_are_refused_before_reading() {
        // 16384 entries of 128 bytes: 2 MiB > the 1 MiB bound.
        let d = disk(16384);
        assert!(matches!(
            run(&d),
            Err(ProbeError::TooLarge { value, .. }) if value == 2 * 1024 * 1024
        ));
    }
}
