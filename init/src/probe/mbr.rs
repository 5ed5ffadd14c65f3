//! MBR ("dos") partition tables: four primary slots, logical partitions
//! from 5 along the chain of extended boot records, as libblkid's
//! `partitions/dos.c` and the kernel's `block/partitions/msdos.c`.
//! A FAT boot sector, an AIX disk, a bad boot indicator or a protective
//! 0xEE entry (that disk is GPT) is not an MBR.

use super::{le32, u8_at, vfat, Dev, Partition, PartitionTable, ProbeError};

/// Sectors are 512 bytes (offsets in the table count them).
pub(crate) const SECTOR: usize = 512;
const SECTOR_BYTES: u64 = SECTOR as u64;
const DISK_ID_OFF: usize = 440;
const TABLE_OFF: usize = 446;
const ENTRY_SIZE: usize = 16;
const SLOTS: usize = 4;
const TYPE_GPT_PROTECTIVE: u8 = 0xEE;
const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0F, 0x85];
const AIX_MAGIC: [u8; 4] = [0xC9, 0xC2, 0xD4, 0xC1];
/// Extended boot records followed at most (the kernel stops at 100 too):
/// a chain that loops ends here.
pub const MAX_EBR_CHAIN: usize = 100;
/// Logical partitions start at this number, whatever the primaries are.
const FIRST_LOGICAL: u32 = 5;
/// The kernel's largest partition number (DISK_MAX_PARTS - 1): an EBR
/// may hold up to four data entries, so 100 EBRs could name 400.
pub const MAX_PARTITION_NUMBER: u32 = 255;

/// One 16-byte slot of a partition table.
#[derive(Clone, Copy)]
struct Entry {
    boot: u8,
    kind: u8,
    start: u64,
    size: u64,
}

impl Entry {
    fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.kind)
    }
}

fn entries(sector: &[u8]) -> [Entry; SLOTS] {
    let at = |i: usize| {
        let off = TABLE_OFF + i * ENTRY_SIZE;
        Entry {
            boot: u8_at(sector, off),
            kind: u8_at(sector, off + 4),
            start: u64::from(le32(sector, off + 8)),
            size: u64::from(le32(sector, off + 12)),
        }
    };
    [at(0), at(1), at(2), at(3)]
}

fn has_signature(sector: &[u8]) -> bool {
    u8_at(sector, 510) == 0x55 && u8_at(sector, 511) == 0xAA
}

/// Sector 0 holds a valid MBR signature and a 0xEE (GPT protective) entry.
pub(crate) fn has_protective_entry(sector0: &[u8]) -> bool {
    has_signature(sector0)
        && entries(sector0)
            .iter()
            .any(|e| e.kind == TYPE_GPT_PROTECTIVE)
}

fn partuuid(disk_id: u32, number: u32) -> Option<String> {
    (disk_id != 0).then(|| format!("{disk_id:08x}-{number:02x}"))
}

pub(super) fn probe(dev: &Dev, sector0: &[u8]) -> Result<Option<PartitionTable>, ProbeError> {
    if !has_signature(sector0)
        || sector0.get(..4) == Some(&AIX_MAGIC[..])
        || vfat::is_fat_boot_sector(sector0)
    {
        return Ok(None);
    }
    let primaries = entries(sector0);
    if primaries.iter().any(|e| e.boot != 0 && e.boot != 0x80) {
        return Ok(None);
    }
    if primaries.iter().any(|e| e.kind == TYPE_GPT_PROTECTIVE) {
        return Ok(None);
    }
    let disk_id = le32(sector0, DISK_ID_OFF);
    let mut parts = Vec::new();
    for (number, e) in (1u32..).zip(primaries.iter()) {
        if e.size == 0 {
            continue;
        }
        parts.push(Partition {
            number,
            start_bytes: e.start * SECTOR_BYTES,
            size_bytes: e.size * SECTOR_BYTES,
            partuuid: partuuid(disk_id, number),
            partlabel: None,
        });
    }
    let mut next_number = FIRST_LOGICAL;
    for e in primaries.iter().filter(|e| e.size != 0 && e.is_extended()) {
        logical(dev, e.start, e.size, disk_id, &mut next_number, &mut parts)?;
    }
    Ok(Some(PartitionTable::Mbr {
        disk_id: format!("{disk_id:08x}"),
        partitions: parts,
    }))
}

/// Walks the EBR chain of the extended partition at `ex_start` (sectors).
/// Data partitions are relative to their EBR, the next EBR is relative
/// to the extended partition; entries 3 and 4 must stay inside it.
fn logical(
    dev: &Dev,
    ex_start: u64,
    ex_size: u64,
    disk_id: u32,
    next_number: &mut u32,
    parts: &mut Vec<Partition>,
) -> Result<(), ProbeError> {
    let (mut cur_start, mut cur_size) = (ex_start, ex_size);
    for _ in 0..MAX_EBR_CHAIN {
        let Some(ebr) = dev.read_array::<SECTOR>(cur_start * SECTOR_BYTES)? else {
            return Ok(());
        };
        if !has_signature(&ebr) {
            return Ok(());
        }
        let slots = entries(&ebr);
        for (i, e) in slots.iter().enumerate() {
            if e.size == 0 || e.is_extended() {
                continue;
            }
            let abs_start = cur_start + e.start;
            if i >= 2
                && (e.start + e.size > cur_size
                    || abs_start < ex_start
                    || abs_start + e.size > ex_start + ex_size)
            {
                continue;
            }
            let number = *next_number;
            if number > MAX_PARTITION_NUMBER {
                return Ok(());
            }
            *next_number += 1;
            parts.push(Partition {
                number,
                start_bytes: abs_start * SECTOR_BYTES,
                size_bytes: e.size * SECTOR_BYTES,
                partuuid: partuuid(disk_id, number),
                partlabel: None,
            });
        }
        let Some(link) = slots.iter().find(|e| e.size != 0 && e.is_extended()) else {
            return Ok(());
        };
        cur_start = ex_start + link.start;
        cur_size = link.size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(sector: &mut [u8], slot: usize, boot: u8, kind: u8, start: u32, size: u32) {
        let off = TABLE_OFF + slot * ENTRY_SIZE;
        sector[off] = boot;
        sector[off + 4] = kind;
        sector[off + 8..off + 12].copy_from_slice(&start.to_le_bytes());
        sector[off + 12..off + 16].copy_from_slice(&size.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xAA;
    }

    #[test]
    fn looping_ebr_chain_is_bounded() {
        // An extended partition at sector 2048 whose EBR links to itself.
        let mut disk = vec![0u8; 4096 * 512];
        put(&mut disk[..512], 0, 0, 0x05, 2048, 2048);
        disk[DISK_ID_OFF..DISK_ID_OFF + 4].copy_from_slice(&0xdeadbeefu32.to_le_bytes());
        let ebr = 2048 * 512;
        put(&mut disk[ebr..ebr + 512], 0, 0, 0x83, 1, 10);
        put(&mut disk[ebr..ebr + 512], 1, 0, 0x05, 0, 2048);
        let dev = Dev::new(&disk, disk.len() as u64);
        let Some(PartitionTable::Mbr {
            disk_id,
            partitions,
        }) = probe(&dev, &disk[..512]).unwrap()
        else {
            panic!("no table")
        };
        assert_eq!(disk_id, "deadbeef");
        assert_eq!(partitions.len(), 1 + MAX_EBR_CHAIN);
        assert_eq!(partitions[1].number, 5);
        assert_eq!(partitions[1].partuuid.as_deref(), Some("deadbeef-05"));
        assert_eq!(partitions[1].start_bytes, 2049 * 512);
    }

    #[test]
    fn bad_boot_indicator_and_protective_entry_are_not_mbr() {
        let mut s = vec![0u8; 512];
        put(&mut s, 0, 0x12, 0x83, 2048, 100);
        let dev = Dev::new(&s, 512);
        assert!(probe(&dev, &s).unwrap().is_none());
        let mut s2 = s.clone();
        put(&mut s2, 0, 0, 0xEE, 1, 100);
        assert!(has_protective_entry(&s2));
        assert!(probe(&dev, &s2).unwrap().is_none());
    }
}
