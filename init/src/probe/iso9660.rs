//! ISO 9660 (and High Sierra): volume descriptors from 32 KiB, the label
//! from the Joliet descriptor when there is one (merged with the primary
//! one as libblkid's `merge_utf16be_ascii` does), the UUID made of the
//! modification (else creation) date, as libblkid's `iso9660.c`.

use super::{field, label_from_bytes, label_from_utf16, u8_at, Dev, Filesystem, ProbeError, Utf16};

const SECTOR: u64 = 2048;
const FIRST_VD: u64 = 16 * SECTOR;
/// blkid reads at most this many volume descriptors.
const MAX_VD: u64 = 16;
/// `struct iso_volume_descriptor` up to the end of the modification date.
const VD_SIZE: usize = 847;
const VD_BOOT_RECORD: u8 = 0;
const VD_PRIMARY: u8 = 1;
const VD_SUPPLEMENTARY: u8 = 2;
const VD_END: u8 = 0xff;
const VOLUME_ID_OFF: usize = 40;
const VOLUME_ID_LEN: usize = 32;
const ESCAPE_OFF: usize = 88;
const CREATED_OFF: usize = 813;
const MODIFIED_OFF: usize = 830;
/// Joliet's UCS-2 levels 1-3.
const JOLIET_ESCAPES: [&[u8; 3]; 3] = [b"%/@", b"%/C", b"%/E"];
/// High Sierra: "CDROM" at 32 KiB + 9, label at + 48.
const HSFS_MAGIC_OFF: usize = 9;
const HSFS_VOLUME_ID_OFF: usize = 48;

/// blkid's UUID from an ISO date: `YYYY-MM-DD-hh-mm-ss-cc`; none when the
/// date is unset (all '0' digits and a zero offset).
fn date_uuid(vd: &[u8], off: usize) -> Option<String> {
    let d = field(vd, off, 17);
    let digits = field(d, 0, 16);
    if digits.iter().all(|&c| c == b'0') && u8_at(d, 16) == 0 {
        return None;
    }
    let mut s = Vec::with_capacity(22);
    for (i, &c) in digits.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10 | 12 | 14) {
            s.push(b'-');
        }
        s.push(c);
    }
    // Digits on any real disc; whatever bytes a hostile one holds are kept
    // where they are UTF-8 (links escape them with `encode_link_name`).
    Some(String::from_utf8_lossy(&s).into_owned())
}

/// libblkid's `merge_utf16be_ascii`: if the Joliet name is the primary
/// name with the characters ISO 9660 could not hold replaced by '_' (and
/// case folded), rebuild the full name from both, in UTF-16BE.
fn merge_utf16be_ascii(utf16: &[u8], ascii: &[u8]) -> Option<Vec<u8>> {
    let len = ascii.len().min(utf16.len());
    let u16b = |i: usize| u8_at(utf16, i);
    let mut out = Vec::with_capacity(2 * len + 4);
    let (mut a, mut u) = (0usize, 0usize);
    while u + 1 < len && a < len {
        if (0xD8..=0xDB).contains(&u16b(u)) && u + 3 < len && (0xDC..=0xDF).contains(&u16b(u + 2)) {
            out.push(u16b(u));
            out.push(u16b(u + 1));
            u += 2;
        }
        let ac = u8_at(ascii, a);
        let (hi, lo) = (u16b(u), u16b(u + 1));
        if ac == b'_' {
            out.extend([hi, lo]);
        } else if hi == 0 && lo == b'_' {
            out.extend([0, ac]);
        } else if hi == 0 && ac.eq_ignore_ascii_case(&lo) {
            out.extend([0, if ac.is_ascii_uppercase() { lo } else { ac }]);
        } else {
            return None;
        }
        a += 1;
        u += 2;
    }
    while a < len {
        out.extend([0, u8_at(ascii, a)]);
        a += 1;
    }
    Some(out)
}

pub(super) fn probe(dev: &Dev) -> Result<Option<Filesystem>, ProbeError> {
    let Some(first) = dev.read_array::<16>(FIRST_VD)? else {
        return Ok(None);
    };
    if field(&first, 1, 5) != b"CD001" {
        if field(&first, HSFS_MAGIC_OFF, 5) == b"CDROM" {
            let Some(vd) = dev.read_array::<VD_SIZE>(FIRST_VD)? else {
                return Ok(None);
            };
            return Ok(Some(Filesystem {
                fstype: "iso9660",
                uuid: None,
                label: label_from_bytes(field(&vd, HSFS_VOLUME_ID_OFF, VOLUME_ID_LEN)),
            }));
        }
        return Ok(None);
    }
    let (mut boot, mut pvd, mut joliet) = (false, None, None);
    for i in 0..MAX_VD {
        if boot && pvd.is_some() && joliet.is_some() {
            break;
        }
        let Some(vd) = dev.read_array::<VD_SIZE>(FIRST_VD + i * SECTOR)? else {
            break;
        };
        match u8_at(&vd, 0) {
            VD_END => break,
            VD_BOOT_RECORD if !boot => boot = true,
            VD_PRIMARY if pvd.is_none() => pvd = Some(vd),
            VD_SUPPLEMENTARY if joliet.is_none() => {
                let esc = field(&vd, ESCAPE_OFF, 3);
                if JOLIET_ESCAPES.iter().any(|e| esc == *e) {
                    joliet = Some(vd);
                }
            }
            _ => {}
        }
    }
    let Some(pvd) = pvd else {
        return Ok(None);
    };
    let uuid = date_uuid(&pvd, MODIFIED_OFF).or_else(|| date_uuid(&pvd, CREATED_OFF));
    let ascii = field(&pvd, VOLUME_ID_OFF, VOLUME_ID_LEN);
    let label = match &joliet {
        Some(j) => {
            let utf16 = field(j, VOLUME_ID_OFF, VOLUME_ID_LEN);
            match merge_utf16be_ascii(utf16, ascii) {
                Some(merged) if !merged.is_empty() => label_from_utf16(&merged, Utf16::Be),
                _ => label_from_utf16(utf16, Utf16::Be),
            }
        }
        None => label_from_bytes(ascii),
    };
    Ok(Some(Filesystem {
        fstype: "iso9660",
        uuid,
        label,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    #[test]
    fn joliet_prefix_is_completed_from_ascii() {
        // Joliet holds 16 characters, the PVD 32.
        let ascii = b"A_LONG_VOLUME_NAME_OF_32_CHARS_X";
        let joliet = be("A long volume na");
        let merged = merge_utf16be_ascii(&joliet, ascii).unwrap();
        assert_eq!(
            label_from_utf16(&merged, Utf16::Be).as_deref(),
            Some("A long volume naME_OF_32_CHARS_X")
        );
        assert!(merge_utf16be_ascii(&be("different name  "), b"OTHER           ").is_none());
    }

    #[test]
    fn unset_date_gives_no_uuid() {
        let mut vd = vec![0u8; VD_SIZE];
        vd[MODIFIED_OFF..MODIFIED_OFF + 16].copy_from_slice(b"0000000000000000");
        assert_eq!(date_uuid(&vd, MODIFIED_OFF), None);
        vd[CREATED_OFF..CREATED_OFF + 16].copy_from_slice(b"2026112516490700");
        assert_eq!(
            date_uuid(&vd, CREATED_OFF).as_deref(),
            Some("2026-11-25-16-49-07-00")
        );
    }
}
