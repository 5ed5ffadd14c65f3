//! Properties over generated inputs: whatever sequence of additions an
//! archive receives, what it accepts serialises to exactly its manifest,
//! never names a path outside the root, and is deterministic; the readers
//! and parsers return a value or an error for any bytes, never a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kestrel_initrd::{
    parse_elf, parse_initramfs, parse_ld_so_conf, parse_modinfo, parse_newc, parse_shebang,
    Archive, EntryKind,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
enum Op {
    Dir(String, u32),
    File(String, u32, Vec<u8>),
    Symlink(String, String),
    Char(String, u32, u32),
    HardLink(String, String),
}

/// Paths from a tiny alphabet so that collisions, `..`, `.` and slashes are common.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just(".."),
            Just("."),
            Just(""),
            Just("c.d")
        ],
        1..5,
    )
    .prop_map(|c| c.join("/"))
    .prop_flat_map(|p| prop_oneof![Just(p.clone()), Just(format!("/{p}"))])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), 0u32..0o10000).prop_map(|(p, m)| Op::Dir(p, m)),
        (
            path(),
            0u32..0o10000,
            prop::collection::vec(any::<u8>(), 0..9)
        )
            .prop_map(|(p, m, d)| Op::File(p, m, d)),
        (path(), path()).prop_map(|(p, t)| Op::Symlink(p, t)),
        (path(), any::<u32>(), any::<u32>()).prop_map(|(p, a, b)| Op::Char(p, a, b)),
        (path(), path()).prop_map(|(p, t)| Op::HardLink(p, t)),
    ]
}

fn apply(ops: &[Op]) -> Archive {
    let mut a = Archive::new();
    for op in ops {
        let _ = match op {
            Op::Dir(p, m) => a.add_dir(p, *m),
            Op::File(p, m, d) => a.add_file(p, *m, d.clone()),
            Op::Symlink(p, t) => a.add_symlink(p, t),
            Op::Char(p, x, y) => a.add_char_dev(p, 0o600, *x % 4096, *y % 1_048_576),
            Op::HardLink(p, t) => a.add_hardlink(p, t),
        };
    }
    a
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn accepted_entries_round_trip_through_newc(ops in prop::collection::vec(op(), 0..24)) {
        let a = apply(&ops);
        let bytes = a.to_newc(7).unwrap();
        prop_assert_eq!(&bytes, &apply(&ops).to_newc(7).unwrap());
        prop_assert_eq!(bytes.len() % 4, 0);
        let (entries, used) = parse_newc(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        let manifest = a.manifest();
        prop_assert_eq!(entries.len(), manifest.len());
        let by_path: BTreeMap<_, _> = manifest.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut data_of_ino: BTreeMap<u32, usize> = BTreeMap::new();
        for (e, m) in entries.iter().zip(&manifest) {
            prop_assert_eq!(&e.name, &m.path);
            prop_assert!(!e.name.split('/').any(|c| c == ".." || c == "." || c.is_empty()), "bad name {}", e.name);
            if let Some((parent, _)) = e.name.rsplit_once('/') {
                prop_assert_eq!(by_path.get(parent).map(|p| p.kind), Some(EntryKind::Dir), "parent of {}", e.name);
            }
            prop_assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 7));
            let kind_bits = e.mode & 0o170_000;
            match m.kind {
                EntryKind::Dir => prop_assert_eq!(kind_bits, 0o040_000),
                EntryKind::File | EntryKind::HardLink => {
                    prop_assert_eq!(kind_bits, 0o100_000);
                    *data_of_ino.entry(e.ino).or_default() += e.data.len();
                }
                EntryKind::Symlink => {
                    prop_assert_eq!(kind_bits, 0o120_000);
                    let target = String::from_utf8(e.data.clone()).unwrap();
                    prop_assert_eq!(Some(&target), m.target.as_ref());
                    if !target.starts_with('/') {
                        // Lexically, a relative target never climbs above the root.
                        let mut depth = e.name.matches('/').count() as i64;
                        for c in target.split('/') {
                            match c { "" | "." => {}, ".." => depth -= 1, _ => depth += 1 }
                            prop_assert!(depth >= 0, "{} -> {} escapes", e.name, target);
                        }
                    }
                }
                EntryKind::CharDev => prop_assert_eq!(kind_bits, 0o020_000),
                EntryKind::BlockDev => prop_assert_eq!(kind_bits, 0o060_000),
            }
        }
        // Hard-linked data is written once: per inode, the bytes equal the file's size.
        for (e, m) in entries.iter().zip(&manifest) {
            if matches!(m.kind, EntryKind::File | EntryKind::HardLink) {
                prop_assert_eq!(data_of_ino[&e.ino] as u64, m.size, "{}", e.name);
            }
        }
    }

    #[test]
    fn readers_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_newc(&data);
        let _ = parse_initramfs(&data, 1 << 20);
        let _ = parse_modinfo(&data);
        let _ = parse_ld_so_conf(&data);
        let _ = parse_shebang(&data);
        let _ = parse_elf(Path::new("x"), &data);
    }

    #[test]
    fn newc_reader_survives_corrupted_archives(flips in prop::collection::vec((0usize..2000, any::<u8>()), 1..8)) {
        let mut a = Archive::new();
        a.add_file("etc/x", 0o644, b"hello".to_vec()).unwrap();
        a.add_symlink("l", "etc/x").unwrap();
        let mut bytes = a.to_newc(0).unwrap();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        let _ = parse_newc(&bytes);
        let _ = parse_initramfs(&bytes, 1 << 20);
    }

    #[test]
    fn elf_parser_survives_corrupted_binaries(flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..16)) {
        let mut data = std::fs::read("/bin/sh").unwrap();
        for (at, b) in flips {
            data[at] = b;
        }
        let _ = parse_elf(Path::new("x"), &data);
    }
}
