//! CRC32 (IEEE 802.3, used by GPT) and CRC32C (Castagnoli, used by ext4,
//! xfs and btrfs metadata), bit-reflected, from `const` tables built at
//! compile time. No crate: the init links nothing it does not need.

/// Builds the 256-entry lookup table of a reflected CRC-32 polynomial.
// Evaluated at compile time only: an out-of-range index would fail the
// build, never a running init (and `get_mut` is not usable in const fn).
#[allow(clippy::indexing_slicing)]
const fn make_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ poly
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Reflected IEEE polynomial 0x04C11DB7.
static CRC32_TABLE: [u32; 256] = make_table(0xEDB8_8320);
/// Reflected Castagnoli polynomial 0x1EDC6F41.
static CRC32C_TABLE: [u32; 256] = make_table(0x82F6_3B78);

fn update(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        // The index is a u8, always < 256: `get` keeps clippy's
        // indexing lint satisfied without a runtime cost worth noting.
        let idx = usize::from((crc as u8) ^ b);
        crc = (crc >> 8) ^ table.get(idx).copied().unwrap_or(0);
    }
    crc
}

/// Raw CRC32 register update, no pre/post inversion.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    update(&CRC32_TABLE, crc, data)
}

/// The standard CRC32 (seed !0, final inversion), as GPT stores it.
pub fn crc32(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

/// Raw CRC32C register update, no pre/post inversion. ext4 stores the raw
/// register started from !0 (`ext4_chksum`); xfs and btrfs store its
/// inversion.
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    update(&CRC32C_TABLE, crc, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The "check" values of the CRC catalogue for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let (a, b) = data.split_at(377);
        assert_eq!(
            crc32c_update(crc32c_update(!0, a), b),
            crc32c_update(!0, &data)
        );
        assert_eq!(!crc32_update(crc32_update(!0, a), b), crc32(&data));
    }
}
