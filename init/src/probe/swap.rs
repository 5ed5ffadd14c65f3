//! Linux swap: the signature in the last 10 bytes of the first page (any
//! page size from 4 to 64 KiB), the v1 header at 1 KiB with its UUID and
//! label, as libblkid's `superblocks/swap.c`.

use super::{field, format_uuid, label_from_bytes, le32, u8_at};
use super::{Dev, Filesystem, ProbeError};

/// blkid's `minsz`: ten 4 KiB pages.
const MIN_DEVICE: u64 = 10 * 4096;
const PAGE_SIZES: [u64; 5] = [0x1000, 0x2000, 0x4000, 0x8000, 0x10000];
const SIG_LEN: usize = 10;
const SIG_V0: &[u8; SIG_LEN] = b"SWAP-SPACE";
const SIG_V1: &[u8; SIG_LEN] = b"SWAPSPACE2";
/// TuxOnIce keeps a valid swap signature but is not swap.
const TOI_MAGIC: &[u8; 8] = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c";
/// `struct swap_header_v1_2`, at 1 KiB: version, last_page, nr_badpages,
/// uuid[16], volume_name[16], padding[117], badpages[1].
const HDR_OFFSET: u64 = 1024;
const HDR_SIZE: usize = 516;
const UUID_OFF: usize = 12;
const LABEL_OFF: usize = 28;
const LABEL_LEN: usize = 16;
/// `padding[32]` and `padding[33]`: blkid trusts UUID and label only if
/// both are zero.
const PADDING_32_OFF: usize = 44 + 32 * 4;

pub(super) fn probe(dev: &Dev) -> Result<Option<Filesystem>, ProbeError> {
    if dev.size() < MIN_DEVICE {
        return Ok(None);
    }
    let mut version1 = None;
    for page in PAGE_SIZES {
        let Some(sig) = dev.read_array::<SIG_LEN>(page - SIG_LEN as u64)? else {
            break;
        };
        if &sig == SIG_V0 {
            version1 = Some(false);
            break;
        }
        if &sig == SIG_V1 {
            version1 = Some(true);
            break;
        }
    }
    let Some(version1) = version1 else {
        return Ok(None);
    };
    match dev.read_array::<8>(0)? {
        Some(head) if &head == TOI_MAGIC => return Ok(None),
        Some(_) => {}
        None => return Ok(None),
    }
    let none = Filesystem {
        fstype: "swap",
        uuid: None,
        label: None,
    };
    if !version1 {
        return Ok(Some(none));
    }
    let Some(hdr) = dev.read_array::<HDR_SIZE>(HDR_OFFSET)? else {
        return Ok(None);
    };
    let version = le32(&hdr, 0);
    if version != 1 && version.swap_bytes() != 1 {
        return Ok(None);
    }
    if le32(&hdr, 4) == 0 {
        return Ok(None);
    }
    if le32(&hdr, PADDING_32_OFF) != 0 || le32(&hdr, PADDING_32_OFF + 4) != 0 {
        return Ok(Some(none));
    }
    let label = if u8_at(&hdr, LABEL_OFF) != 0 {
        label_from_bytes(field(&hdr, LABEL_OFF, LABEL_LEN))
    } else {
        None
    };
    Ok(Some(Filesystem {
        fstype: "swap",
        uuid: format_uuid(field(&hdr, UUID_OFF, 16)),
        label,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap(page: usize, sig: &[u8; SIG_LEN]) -> Vec<u8> {
        let mut d = vec![0u8; 64 * 1024 + 4096];
        d[page - SIG_LEN..page].copy_from_slice(sig);
        d[1024..1028].copy_from_slice(&1u32.to_le_bytes());
        d[1028..1032].copy_from_slice(&100u32.to_le_bytes());
        d[1024 + UUID_OFF] = 0x42;
        d[1024 + LABEL_OFF..][..4].copy_from_slice(b"swp ");
        d
    }

    fn run(d: &[u8]) -> Option<Filesystem> {
        probe(&Dev::new(&d, d.len() as u64)).unwrap()
    }

    #[test]
    fn every_page_size_and_both_versions() {
        for page in PAGE_SIZES {
            let fs = run(&swap(page as usize, SIG_V1)).unwrap();
            assert_eq!(fs.label.as_deref(), Some("swp"));
            assert!(fs.uuid.unwrap().starts_with("42"));
        }
        // v0 has neither UUID nor label.
        let fs = run(&swap(4096, SIG_V0)).unwrap();
        assert_eq!((fs.uuid, fs.label), (None, None));
    }

    #[test]
    fn rejects_tuxonice_bad_version_and_zero_last_page() {
        let mut d = swap(4096, SIG_V1);
        d[..8].copy_from_slice(TOI_MAGIC);
        assert!(run(&d).is_none());
        let mut d = swap(4096, SIG_V1);
        d[1024..1028].copy_from_slice(&2u32.to_le_bytes());
        assert!(run(&d).is_none());
        let mut d = swap(4096, SIG_V1);
        d[1024..1028].copy_from_slice(&1u32.to_be_bytes());
        assert!(run(&d).is_some(), "a big-endian version 1 is fine");
        d[1028..1032].fill(0);
        assert!(run(&d).is_none());
        // Garbage in the padding: swap, but UUID and label untrusted.
        let mut d = swap(4096, SIG_V1);
        d[1024 + PADDING_32_OFF] = 1;
        let fs = run(&d).unwrap();
        assert_eq!((fs.uuid, fs.label), (None, None));
    }
}
