//! `probe_filesystem` and `probe_partitions` on a sparse device built from
//! the input: never panic, never error except on the named limits, and
//! what they return is well-formed (labels trimmed and non-empty, link
//! names safe, GPT partitions inside the device, MBR PARTUUIDs
//! `xxxxxxxx-NN`).
//!
//! Input: 5 bytes of device size (little-endian, bytes), then records of
//! [4-byte byte offset (little-endian), 1-byte length, that many bytes],
//! written over zeros (later records win where they overlap). Superblocks live far apart (1 KiB, 32 KiB, 64 KiB,
//! the last LBA), so a flat buffer would waste the fuzzer's length budget.
#![no_main]

use kestrel_init::probe::{
    encode_link_name, probe_filesystem, probe_partitions, PartitionTable, ProbeError, ReadAt,
};
use libfuzzer_sys::fuzz_target;

struct Sparse {
    chunks: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Sparse {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        for (at, data) in &self.chunks {
            let (at, dend) = (*at, *at + data.len() as u64);
            if dend <= offset || at >= end {
                continue;
            }
            let from = at.max(offset);
            let to = dend.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
        }
        Ok(buf.len())
    }
}

fn check_label(l: &Option<String>) {
    if let Some(l) = l {
        assert!(!l.is_empty());
        assert!(!l.ends_with(|c: char| c.is_ascii_whitespace()));
        let link = encode_link_name(l);
        assert!(!link.contains('/') && link != "." && link != "..");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let mut sz = [0u8; 8];
    sz[..5].copy_from_slice(&data[..5]);
    let size = u64::from_le_bytes(sz);
    let mut chunks = Vec::new();
    let mut rest = &data[5..];
    while rest.len() >= 5 {
        let at = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
        let len = usize::from(rest[4]).min(rest.len() - 5);
        chunks.push((at, rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    let dev = Sparse { chunks };
    match probe_filesystem(&dev, size) {
        Ok(Some(fs)) => {
            check_label(&fs.label);
            if let Some(u) = &fs.uuid {
                // Hostile iso9660 "dates" give any text: the link escapes it.
                assert!(!u.is_empty());
                assert!(!encode_link_name(u).contains('/'));
            }
        }
        Ok(None) | Err(ProbeError::Ambivalent(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
    match probe_partitions(&dev, size) {
        Ok(Some(PartitionTable::Gpt { partitions, .. })) => {
            for p in &partitions {
                assert!(p.number >= 1);
                assert!(p.start_bytes + p.size_bytes <= size);
                check_label(&p.partlabel);
            }
        }
        Ok(Some(PartitionTable::Mbr {
            disk_id,
            partitions,
        })) => {
            assert_eq!(disk_id.len(), 8);
            for p in &partitions {
                if let Some(u) = &p.partuuid {
                    assert_eq!(u.len(), 11);
                    assert!(u.starts_with(&disk_id));
                }
                assert!((1..=255).contains(&p.number));
            }
        }
        Ok(None) | Err(ProbeError::TooLarge { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
});
